//! The `lamina` command line.

use crate::diag::Rendered;
use crate::driver::{self, Compiled, Stage};
use crate::elab::Override;
use crate::interp;
use crate::io;
use crate::tensor::Tensor;
use crate::train::data::TokenDtype;
use crate::train::exec::Backend;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Print to stdout; a closed pipe (`lamina ir ... | head`) ends the program quietly with
/// success instead of panicking, as Unix tools do.
macro_rules! out {
    ($($arg:tt)*) => { emit(&format!($($arg)*)) };
}
macro_rules! outln {
    ($($arg:tt)*) => { emit(&format!("{}\n", format!($($arg)*))) };
}

/// Print to stderr without panicking: a message that cannot be written is dropped.
macro_rules! err {
    ($($arg:tt)*) => { io::to_stderr(&format!($($arg)*)) };
}
macro_rules! errln {
    ($($arg:tt)*) => { io::to_stderr(&format!("{}\n", format!($($arg)*))) };
}

fn emit(text: &str) {
    emit_bytes(text.as_bytes())
}

/// Write raw bytes to stdout (generated text need not be UTF-8).
fn emit_bytes(bytes: &[u8]) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        errln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "lamina",
    version,
    about = "Compile and run declarative Transformer and MLP model files",
    long_about = "lamina compiles model files (.lam) that describe Transformer and MLP variants \
                  (layer orderings, splitting schemes, norm placements, skips, depth programs) \
                  into a tensor IR, derives gradients on it and runs it.\n\n\
                  Language reference: docs/language.md. Examples: examples/.",
    after_help = "Examples:\n  lamina check examples/*.lam\n  lamina ir examples/macaron.lam --set layers=1\n  lamina run examples/transformer.lam"
)]
pub struct Cli {
    /// When to colour diagnostics.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    /// Threads a step runs on (loop kernels split their rows, GEMMs their tiles or batch).
    /// Default: every core this process may use.
    #[arg(long, value_name = "N", global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and NO_COLOR is unset.
    Auto,
    Always,
    Never,
}

/// Constant overrides shared by every command that compiles a model.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Overrides {
    /// Override a constant of the model: `--set d=64 --set layers=2`. Repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    pub set: Vec<Override>,
}

fn parse_override(s: &str) -> Result<Override, String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, e.g. d=64; got `{s}`"))?;
    let name = name.trim();
    let value = value.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{name}` is not a constant name"));
    }
    let digits = value.replace('_', "");
    let integer_syntax = {
        let unsigned = digits.strip_prefix(['-', '+']).unwrap_or(&digits);
        !unsigned.is_empty() && unsigned.chars().all(|c| c.is_ascii_digit())
    };
    if integer_syntax
        && digits
            .parse::<i64>()
            .map_or(true, |i| i.unsigned_abs() >= 1 << 53)
    {
        return Err(format!(
            "`{value}` is too large for an integer constant (in --set {name}={value}): integers \
             must lie strictly within ±2^53 (±9007199254740991), where a double holds them exactly"
        ));
    }
    if let Ok(i) = digits.parse::<i64>() {
        return Ok(Override {
            name: name.to_string(),
            value: i as f64,
            is_int: true,
        });
    }
    match value.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Override {
            name: name.to_string(),
            value: f,
            is_int: false,
        }),
        _ => Err(format!(
            "`{value}` is not a number (in --set {name}={value})"
        )),
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check model files: syntax, names, shapes and constraints.
    #[command(
        after_help = "Example:\n  lamina check examples/*.lam\n\nExits 0 when every file is fine, 1 otherwise."
    )]
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print a stage of the compilation: AST, IR, gradient IR, optimized IR, training step, kernels, buffer plan or Cranelift IR.
    #[command(
        after_help = "Examples:\n  lamina ir examples/peri_ln.lam --stage ir\n  \
        lamina ir model.lam --stage grad --json -o model.grad.json\n  \
        lamina ir model.lam --expect model.ir         # exit 1 with a diff when it changed\n  \
        lamina ir model.lam --expect model.ir --bless # accept the new IR"
    )]
    Ir {
        /// The model file (.lam).
        file: PathBuf,
        /// Which stage to print.
        #[arg(long, value_enum, default_value_t = StageArg(Stage::Ir))]
        stage: StageArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Compare with an expected file instead of printing; exit 1 with a diff on mismatch.
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
        /// With --expect: rewrite the expected file with the current output.
        #[arg(long, requires = "expect")]
        bless: bool,
        /// Write to a file instead of stdout.
        #[arg(short, long, value_name = "FILE", conflicts_with = "expect")]
        output: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// List the parameters: name, shape, element count, role, trainable or frozen; the
    /// total and the forward FLOPs per token.
    #[command(after_help = "Example:\n  lamina params examples/hourglass.lam")]
    Params {
        /// The model file (.lam).
        file: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Measure a trained model over depth on held-out batches: the residual stream's RMS,
    /// variance, each step's contribution and the cosine of consecutive states; per layer
    /// the loss change when it is skipped or repeated, and its gradient norm.
    #[command(
        after_help = "Example:\n  lamina train examples/peri_ln.lam --set layers=4 --data notes.txt --out runs/peri\n  \
        lamina probe examples/peri_ln.lam --set layers=4 --weights runs/peri/final.safetensors --data notes.txt\n\n\
        Writes DIR/probe.json and one SVG per metric (default DIR: runs/probe/<model>), and \
        prints the tables. The held-out batches are those `lamina train` evaluates on (the \
        recipe's task and seed, or --task)."
    )]
    Probe {
        #[command(flatten)]
        model: HeldOutArgs,
        /// Output directory.
        #[arg(short, long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Search layer orders built from skips and loops of a trained model's layers (CoLa),
    /// scored by the held-out loss; print the best and write it as a model file.
    #[command(
        name = "depth-search",
        after_help = "Example:\n  lamina depth-search examples/transformer.lam --set layers=4 --weights runs/t/final.safetensors --data notes.txt\n\n\
        Greedy: from the model's own order, each round tries every skip of one position and \
        every loop (a position running the previous layer again) and keeps the best while the \
        held-out loss falls, so the result is never deeper and never worse than the model on \
        the held-out batches. The written file runs with the same weights: \
        lamina run OUT.lam --weights W. It needs a model with one plain `stack` statement."
    )]
    DepthSearch {
        #[command(flatten)]
        model: HeldOutArgs,
        /// Rounds of the greedy search (each at most 2L orders).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
        rounds: u64,
        /// Where to write the best order as a model file (default: runs/depth-search/<model>.lam).
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Draw the architecture as a block diagram (SVG, or Graphviz DOT with --dot), from the
    /// elaborated model: the stack of executed layers with their weight sets and parameter
    /// counts, and each block's residual steps with norms, coefficients and skips.
    #[command(
        after_help = "Examples:\n  lamina graph examples/macaron.lam -o macaron.svg\n  \
        lamina graph examples/cola.lam --dot | dot -Tpng -o cola.png\n\n\
        Left: input, embedding, one box per executed layer (same colour = same weights; \
        brackets mark loops; dashed boxes are weight sets an `order` skips; red dashed arrows \
        are stop_gradient cuts of a learning rule, with its losses beside), final norm, head \
        and loss. Right: each block once, the residual stream on the left and each step's \
        norm, sublayers (parallel ones in rows into a sum), coefficient and skip. Without -o \
        the diagram goes to standard output."
    )]
    Graph {
        /// The model file (.lam).
        file: PathBuf,
        /// Where to write the diagram (written whole or not at all).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Write Graphviz DOT instead of SVG.
        #[arg(long)]
        dot: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Serve the explorer, a local web page on 127.0.0.1: the model files under DIR, an
    /// editor with live diagnostics, every compiler stage beside the source (hover an IR
    /// line to see its source line), the diagram, the parameter table and the loss curves
    /// of the runs under DIR/runs.
    #[command(
        after_help = "Examples:\n  lamina serve\n  lamina serve examples --port 8080\n\n\
        The page uses no network beyond this address. Files are read and saved only inside \
        DIR; Save writes an existing .lam file whole or not at all. --port 0 picks a free \
        port; the address is printed on the first line. Stop with Ctrl-C."
    )]
    Serve {
        /// The directory to serve.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The port on 127.0.0.1.
        #[arg(long, default_value_t = 7878)]
        port: u16,
    },
    /// Compare two architectures as a reviewer would: parameters, forward FLOPs per token and
    /// the training step's activation memory side by side with the delta, the parameters
    /// added, removed or reshaped by name, and the IR diff grouped by model scope.
    #[command(
        after_help = "Examples:\n  lamina diff examples/transformer.lam examples/peri_ln.lam\n  \
        lamina diff a.lam b.lam --stage opt --set layers=2\n\n\
        Two models are compute-matched when their forward FLOPs per token (matmuls, 2 per \
        multiply-add) agree within 1%. Node numbers are erased in the IR diff, so moving a \
        norm shows as the few lines that moved. --set applies to both models."
    )]
    Diff {
        /// The first model file (A, `-` lines).
        a: PathBuf,
        /// The second model file (B, `+` lines).
        b: PathBuf,
        /// Which graphs to diff: the elaborated forward IR, or the optimized joint IR.
        #[arg(long, value_enum, default_value_t = DiffStage::Ir)]
        stage: DiffStage,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Write freshly initialised weights to a safetensors file.
    #[command(
        after_help = "Example:\n  lamina init examples/transformer.lam -o weights.safetensors --seed 1"
    )]
    Init {
        /// The model file (.lam).
        file: PathBuf,
        /// Where to write the weights (safetensors).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Seed of the random initialisation.
        #[arg(long, default_value_t = 0, value_parser = crate::train::config::parse_seed)]
        seed: u64,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Run one batch: loss, logits and the gradient of every trainable parameter.
    #[command(
        after_help = "Examples:\n  lamina run examples/transformer.lam --set layers=2\n  \
        lamina run model.lam --weights w.safetensors --batch b.safetensors --out out.safetensors\n\n\
        The batch file holds `tokens` and `targets` (i32) for token models, `inputs` (f32) and \
        `targets` for feature models. Without --batch a random batch of the model's shape is used; \
        without --weights, weights initialised with --seed. The output file holds `loss`, `logits` \
        and `grad.<parameter>` for every trainable parameter."
    )]
    Run {
        /// The model file (.lam).
        file: PathBuf,
        /// Weights to run with (safetensors, as written by `lamina init` or `lamina train`).
        #[arg(long, value_name = "FILE")]
        weights: Option<PathBuf>,
        /// The batch (safetensors with `tokens`/`inputs` and `targets`).
        #[arg(long, value_name = "FILE")]
        batch: Option<PathBuf>,
        /// Where to write `loss`, `logits` and the gradients (safetensors).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Seed for the initial weights and the random batch when not given as files.
        #[arg(long, default_value_t = 0, value_parser = crate::train::config::parse_seed)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
        backend: BackendArg,
        /// Skip each routed layer for a sequence whose router gate at its last position is
        /// below this (FiRST's prefill routing), and report the fraction of layers skipped.
        #[arg(long, value_name = "GATE", value_parser = parse_gate)]
        skip_below: Option<f64>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Benchmark the training step `lamina train` runs (forward, backward, the recipe's optimizer update) on generated code.
    #[command(
        after_help = "Examples:\n  lamina bench examples/bench/s_pre_ln.lam\n  \
        lamina bench examples/bench/m_pre_ln.lam --optimizer 'sgd(lr = 0.001)'\n  \
        lamina bench examples/transformer.lam --set d=256 --steps 20\n  lamina bench --peak\n\n\
        Times the step of the file's `train { }` recipe (AdamW when it names none), the same \
        compiled step that `lamina train` runs, on a random batch. Reports the optimizer timed, \
        the compile time (source text to ready-to-run code), the median step time, tokens per \
        second, the achieved matmul GFLOP/s and the peak arena bytes. LAMINA_PROFILE=1 adds \
        per-kernel times."
    )]
    Bench(BenchArgs),
    /// Train a model on a built-in task or your own data, with its `train { }` recipe.
    #[command(after_help = "Examples:\n  lamina train examples/grokking.lam\n  \
        lamina train examples/transformer.lam --data README.md --steps 300 --set layers=1\n  \
        lamina train examples/mlp.lam --data tabular.safetensors\n  \
        lamina train examples/transformer.lam --data train.bin --dtype u16 --set vocab=50304\n  \
        lamina train model.lam --optimizer 'lamb(lr = 0.01)' --schedule 'cosine(warmup = 50)'\n  \
        lamina train model.lam --resume runs/model-seed0/checkpoint.safetensors\n\n\
        Writes DIR/log.jsonl (every step), DIR/loss.svg, DIR/checkpoint.safetensors (every \
        eval, atomic; weights, optimizer state, step) and DIR/final.safetensors. Ctrl-C saves a \
        checkpoint and exits (code 130); a NaN or Inf stops the run with the op and layer where \
        it first appeared (code 1).\n\n\
        --data FILE.safetensors holds whole tensors of examples: `tokens` and `targets` \
        (integer ids) for token models, `inputs` (f32) and `targets` (integer class ids, or \
        f32 for a regression head) for feature models; the first dimension counts the \
        examples and the rest must equal the model's input shape. A 1-D `tokens` tensor, or \
        a flat little-endian file of u16 or u32 ids (--data FILE.bin --dtype u16, as nanoGPT \
        writes them), is a token stream cut into windows of the model's length + 1 at random \
        offsets; it is memory-mapped, so it may be larger than the memory. The last 10% is \
        held out (or the file's `held_out.<name>` tensors). The file is checked before \
        training starts. Recipe and data reference: docs/training.md.")]
    Train(TrainArgs),
    /// Generate text (or token ids) from a trained language model.
    #[command(
        after_help = "Examples:\n  lamina sample examples/tiny_lm.lam --weights runs/tiny_lm-seed0/final.safetensors --prompt 'The '\n  \
        lamina sample gpt2/model.lam --weights gpt2/weights.safetensors --prompt-ids 464,2068 --length 20\n  \
        lamina sample gpt2/model.lam --weights gpt2/weights.safetensors --tokenizer gpt2 --prompt 'The quick'\n\n\
        A byte-level model (vocab 256) reads the prompt as bytes and prints text. With \
        --prompt-ids the prompt is token ids and the output is the ids, prompt first, \
        comma-separated. With --tokenizer DIR (GPT-2's vocab.json and merges.txt, which \
        `lamina import gpt2` copies) the prompt text is encoded with byte-level BPE (an empty \
        prompt starts from <|endoftext|>) and the output is decoded to text. Each token is \
        one forward pass over the model's whole length; a model imported with a short \
        --length samples faster."
    )]
    Sample {
        /// The model file (.lam).
        file: PathBuf,
        /// Trained weights: a run's final.safetensors or checkpoint.safetensors.
        #[arg(long, value_name = "FILE")]
        weights: PathBuf,
        /// Text the generation starts from.
        #[arg(long, default_value = "")]
        prompt: String,
        /// Token ids the generation starts from, comma-separated: `464,2068`.
        #[arg(long, value_name = "IDS", value_delimiter = ',', num_args = 1.., conflicts_with = "prompt")]
        prompt_ids: Option<Vec<u32>>,
        /// A directory with GPT-2's tokenizer files (vocab.json, merges.txt).
        #[arg(long, value_name = "DIR")]
        tokenizer: Option<PathBuf>,
        /// Bytes (or tokens) to generate.
        #[arg(long, default_value_t = 200)]
        length: usize,
        /// Softmax temperature; 0 takes the most likely byte.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Seed of the sampling.
        #[arg(long, default_value_t = 0, value_parser = crate::train::config::parse_seed)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
        backend: BackendArg,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Import a pretrained checkpoint as a model file and its weights.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write the model and its training recipe as plain PyTorch (model.py, train.py).
    #[command(
        after_help = "Examples:\n  lamina export examples/macaron.lam --torch -o out/macaron\n  \
        lamina export examples/grokking.lam --torch -o out/grok --optimizer 'lamb(lr = 0.01)'\n\n\
        Writes DIR/model.py (one nn.Module class per block kind; the state-dict names are lamina's \
        parameter names, so `load_lamina(Model(), \"w.safetensors\")` loads `lamina init` weights \
        or a run's final.safetensors, and forward returns (loss, logits) as `lamina run` does), \
        DIR/train.py (the train { } recipe: the optimizer of each parameter role, schedule, \
        clipping, noise; `python train.py` on one process or `torchrun --nproc-per-node N \
        train.py [--fsdp]`) and DIR/data.safetensors (the built-in task's batches in step order \
        and its held-out set; a char_lm task reads --data FILE in train.py instead).\n\n\
        `python DIR/model.py --weights W --batch B --out O` writes loss, logits and gradients \
        like `lamina run --out`. A construct without a PyTorch counterpart is a located error. \
        See docs/export.md."
    )]
    Export {
        /// The model file (.lam).
        file: PathBuf,
        /// Generate PyTorch (the only target).
        #[arg(long, required = true)]
        torch: bool,
        /// The directory to write (created if missing; its model.py, train.py and
        /// data.safetensors are replaced).
        #[arg(short = 'o', long = "out", value_name = "DIR")]
        out: PathBuf,
        /// At most this many training batches in data.safetensors (default: one per step,
        /// up to 2^26 elements; train.py cycles them).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        batches: Option<u64>,
        #[command(flatten)]
        recipe: RecipeFlags,
    },
    /// Cut a standalone model out of a trained one: N layers of a depth program, or one width of nested FFNs.
    #[command(
        after_help = "Examples:\n  lamina extract examples/variant.lam --weights runs/variant-seed0/final.safetensors --depth 4 -o small\n  \
        lamina extract examples/tleg.lam --weights runs/tleg-seed0/final.safetensors --depth 12 -o deep\n  \
        lamina extract examples/matformer.lam --weights runs/matformer-seed0/final.safetensors --width 1/4 -o small\n\n\
        Writes OUT.lam and OUT.safetensors. `subnets`: --depth is one of the subnet depths, and the \
        model computes that subnet. `expand linear`: layer l of N gets theta_A + (l / N) theta_B. \
        `shared stages S`: layer i of N gets the weights of stage floor(i S / N). The new layers \
        have independent weights, to train further. --width F: every nested ffn keeps its first F H \
        hidden units, and the model computes the nested model at that granularity. See \
        docs/language.md, \"Depth programs\" and \"Nested widths\"."
    )]
    Extract {
        /// The model file (.lam).
        file: PathBuf,
        /// The trained weights (safetensors).
        #[arg(long, value_name = "FILE")]
        weights: PathBuf,
        /// Layers of the extracted model.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024), required_unless_present = "width", conflicts_with = "width")]
        depth: Option<u64>,
        /// The granularity of the nested FFNs to keep, as listed in `nested` (e.g. 1/4).
        #[arg(long, value_name = "F", value_parser = parse_fraction)]
        width: Option<f64>,
        /// Output path without extension: writes OUT.lam and OUT.safetensors.
        #[arg(short = 'o', long = "out", value_name = "OUT")]
        out: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Rewrite a trained model: split its FFNs into experts (FactorLLM) or give its stacks routers (FiRST).
    #[command(
        after_help = "Examples:\n  lamina convert examples/transformer.lam --weights runs/transformer-seed0/final.safetensors --ffn-to-moe 4 -o moe\n  \
        lamina convert gpt2/model.lam --weights gpt2/weights.safetensors --routers -o routed\n\n\
        Writes OUT.lam and OUT.safetensors. --ffn-to-moe E: every ffn(hidden = H) becomes \
        moe(experts = E, top = K, hidden = H / E); expert e is the dense FFN's hidden units \
        e H/E .. (e+1) H/E, so w1 and w2 keep their values, and the router is new. With --top E \
        (the default) and equal gates the converted model computes the dense one; lower --top and \
        fine-tune (`lamina train OUT.lam --init OUT.safetensors`). --routers: every stack gets \
        `routed`, with new routers. See docs/language.md."
    )]
    Convert {
        /// The model file (.lam).
        file: PathBuf,
        /// The trained weights (safetensors).
        #[arg(long, value_name = "FILE")]
        weights: PathBuf,
        /// Split every dense FFN into this many experts.
        #[arg(long, value_name = "E", value_parser = clap::value_parser!(u64).range(2..=1024), conflicts_with = "routers", required_unless_present = "routers")]
        ffn_to_moe: Option<u64>,
        /// Experts each token runs (default: all of them).
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=1024), requires = "ffn_to_moe")]
        top: Option<u64>,
        /// Give every stack a router per layer (`routed`).
        #[arg(long)]
        routers: bool,
        /// Output path without extension: writes OUT.lam and OUT.safetensors.
        #[arg(short = 'o', long = "out", value_name = "OUT")]
        out: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Train several models with the same task, seed and recipe; plot and tabulate them.
    #[command(
        after_help = "Example:\n  lamina compare examples/grokking.lam examples/grokking_macaron.lam --steps 1000\n\n\
        Every model uses the first model's recipe (its train section and these options). Writes \
        DIR/compare.svg (loss against steps), DIR/compare_time.svg (training loss against step \
        time) and one run directory per model under DIR (default runs/compare)."
    )]
    Compare {
        #[arg(required = true, num_args = 2..)]
        files: Vec<PathBuf>,
        /// Train every model with its own train section (optimizer, schedule, steps), on the
        /// first model's task and seed; command-line options still apply to all. Compares
        /// recipes, for example AdamW against Muon on one model.
        #[arg(long)]
        each_recipe: bool,
        #[command(flatten)]
        train: TrainFlags,
    },
}

/// The checkpoint formats `lamina import` reads.
#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// A Hugging Face GPT-2 checkpoint (safetensors): writes DIR/model.lam and
    /// DIR/weights.safetensors.
    #[command(
        after_help = "Example:\n  lamina import gpt2 --weights gpt2/model.safetensors -o gpt2-lam --length 256\n  \
        lamina run gpt2-lam/model.lam --weights gpt2-lam/weights.safetensors\n\n\
        Reads the checkpoint's tensors (names as Hugging Face writes them, with or without \
        the `transformer.` prefix; Conv1D weights [in, out]) and config.json beside it when \
        present. Without config.json the sizes come from the tensors, but the number of heads \
        cannot: give --heads. Every tensor is checked (name, shape, finite values; \
        lm_head.weight, if present, must equal wte.weight) before anything is written; the \
        outputs are written all or nothing. vocab.json and merges.txt beside the checkpoint \
        are copied into DIR for `lamina sample --tokenizer DIR`. Reference: docs/import.md."
    )]
    Gpt2 {
        /// The checkpoint (model.safetensors).
        #[arg(long, value_name = "FILE")]
        weights: PathBuf,
        /// The directory to write model.lam and weights.safetensors into (created if missing).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// Positions of the model (the context length): 1 to the checkpoint's n_positions.
        /// Default: n_positions, at most 1024.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        length: Option<u32>,
        /// The model's batch (a constant of model.lam, so `--set batch=B` changes it later).
        #[arg(long, value_name = "B", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
        /// Attention heads; needed when there is no config.json beside the checkpoint.
        #[arg(long, value_name = "H", value_parser = clap::value_parser!(u32).range(1..))]
        heads: Option<u32>,
    },
}

/// The recipe settings `train`, `compare` and `export` take; each replaces the file's.
#[derive(clap::Args, Debug, Clone)]
pub struct RecipeFlags {
    /// The task, e.g. `modular_addition(p = 23)`, `copy`, `reverse`, `char_lm`.
    #[arg(long)]
    pub task: Option<String>,
    /// Training steps (replaces the recipe's).
    #[arg(long)]
    pub steps: Option<String>,
    /// Peak learning rate (replaces the optimizer's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// `sgd`, `adamw`, `lamb`, `muon`, `drop_muon`, or a call such as `adamw(lr = 1e-3, weight_decay = 1.0)`.
    #[arg(long)]
    pub optimizer: Option<String>,
    /// `constant(warmup = N)` or `cosine(warmup = N, final = 0.0)`.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Clip the global gradient norm (`none` to turn off).
    #[arg(long)]
    pub clip: Option<String>,
    /// `gradient_noise(eta = 0.01, gamma = 0.55)` or `none`.
    #[arg(long)]
    pub noise: Option<String>,
    /// Evaluate on the held-out split every N steps.
    #[arg(long)]
    pub eval_every: Option<String>,
    /// Seed of the initial weights, the batches and the noise.
    #[arg(long)]
    pub seed: Option<String>,
    /// Your own data, which replaces the recipe's task: FILE.safetensors with
    /// `tokens`/`targets` or `inputs`/`targets` (the first dimension counts the examples), a
    /// flat token file with --dtype, or a text file for char_lm. The last 10% is held out.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// The ids of a flat token file given with --data (nanoGPT's train.bin: u16).
    #[arg(long, value_enum, requires = "data")]
    pub dtype: Option<DtypeArg>,
    #[command(flatten)]
    pub overrides: Overrides,
}

impl RecipeFlags {
    fn options(&self) -> crate::train::TrainOptions {
        let mut settings = Vec::new();
        for (k, v) in [
            ("task", &self.task),
            ("steps", &self.steps),
            ("optimizer", &self.optimizer),
            ("schedule", &self.schedule),
            ("clip", &self.clip),
            ("noise", &self.noise),
            ("eval_every", &self.eval_every),
            ("seed", &self.seed),
        ] {
            if let Some(v) = v {
                settings.push((k.to_string(), v.clone()));
            }
        }
        crate::train::TrainOptions {
            overrides: self.overrides.set.clone(),
            settings,
            lr: self.lr,
            data: self.data.clone(),
            dtype: self.dtype.map(Into::into),
            ..Default::default()
        }
    }
}

/// The options of `train` and `compare`: the recipe's settings and how the run goes.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainFlags {
    #[command(flatten)]
    pub recipe: RecipeFlags,
    /// Output directory (default `runs/<model>-seed<N>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the step runs: generated code, or the reference interpreter (slow).
    #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
    pub backend: BackendArg,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Start over in an output directory that already holds a run (its files are replaced).
    #[arg(long)]
    pub force: bool,
    /// Record the residual stream over depth (as `lamina probe` does) every N steps and at
    /// the last, in probe.jsonl; `compare` then overlays the models' last records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub probe_every: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The model file (.lam).
    pub file: PathBuf,
    #[command(flatten)]
    pub flags: TrainFlags,
    /// Continue from a checkpoint (bit-identical to a run never interrupted).
    #[arg(long, value_name = "CKPT")]
    pub resume: Option<PathBuf>,
    /// Start from these weights, with a fresh optimizer (fine-tuning): every parameter of
    /// the model, by name, e.g. from `lamina convert` or `lamina import`.
    #[arg(long, value_name = "WEIGHTS", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
}

impl TrainFlags {
    pub fn options(&self) -> crate::train::TrainOptions {
        crate::train::TrainOptions {
            out: self.out.clone(),
            resume: None,
            backend: Some(self.backend.into()),
            quiet: self.quiet,
            stop_after: None,
            force: self.force,
            probe_every: self.probe_every,
            ..self.recipe.options()
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The model to benchmark (not needed with --peak).
    #[arg(required_unless_present = "peak")]
    pub file: Option<PathBuf>,
    /// Timed training steps after two warm-up steps (at least 10); the median is reported.
    #[arg(long, default_value_t = 10)]
    #[arg(value_parser = clap::value_parser!(u64).range(10..))]
    pub steps: u64,
    /// Measure this machine's single-core FMA peak with 128-bit and 256-bit vectors.
    #[arg(long)]
    pub peak: bool,
    /// The optimizer of the timed step, replacing the recipe's: `sgd`, `adamw`, `lamb`, `muon`, `drop_muon`, or a
    /// call such as `sgd(lr = 0.001)`.
    #[arg(long)]
    pub optimizer: Option<String>,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// A trained model and the held-out batches it is measured on (`probe`, `depth-search`).
#[derive(clap::Args, Debug)]
pub struct HeldOutArgs {
    /// The model file (.lam).
    file: PathBuf,
    /// Trained weights (safetensors), e.g. a run's final.safetensors.
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// The task whose held-out batches are measured (default: the recipe's).
    #[arg(long)]
    task: Option<String>,
    /// The data the model was trained on (--data of `lamina train`): its held-out part is
    /// measured. FILE.safetensors, a flat token file with --dtype, or a text file.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// The ids of a flat token file given with --data: u16 or u32.
    #[arg(long, value_enum, requires = "data")]
    dtype: Option<DtypeArg>,
    #[command(flatten)]
    overrides: Overrides,
}

impl HeldOutArgs {
    /// The recipe's task and seed (or `--task`), and `--data` for char_lm.
    fn options(&self) -> crate::train::TrainOptions {
        crate::train::TrainOptions {
            overrides: self.overrides.set.clone(),
            settings: self
                .task
                .iter()
                .map(|t| ("task".to_string(), t.clone()))
                .collect(),
            data: self.data.clone(),
            dtype: self.dtype.map(Into::into),
            quiet: true,
            ..Default::default()
        }
    }
}

/// The graphs `lamina diff` compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiffStage {
    /// The elaborated forward IR.
    Ir,
    /// The joint forward and backward IR after the optimizing passes.
    Opt,
}

/// `--stage`: the library's stages, named and described once there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageArg(pub Stage);

impl ValueEnum for StageArg {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [StageArg; Stage::ALL.len()] = {
            let mut out = [StageArg(Stage::Ast); Stage::ALL.len()];
            let mut i = 0;
            while i < out.len() {
                out[i] = StageArg(Stage::ALL[i]);
                i += 1;
            }
            out
        };
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.name()).help(self.0.about()))
    }
}

impl std::fmt::Display for StageArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name())
    }
}

/// `--backend`: which executor runs the graph.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BackendArg {
    /// Native code generated with Cranelift (f32).
    Jit,
    /// The reference interpreter (f64): slow, and the oracle the JIT is tested against.
    Interp,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Backend {
        match b {
            BackendArg::Jit => Backend::Jit,
            BackendArg::Interp => Backend::Interp,
        }
    }
}

/// `--dtype`: the width of a flat token file's ids.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DtypeArg {
    /// Little-endian unsigned 16-bit ids (vocabularies up to 65536, e.g. GPT-2's).
    U16,
    /// Little-endian unsigned 32-bit ids.
    U32,
}

impl From<DtypeArg> for TokenDtype {
    fn from(d: DtypeArg) -> TokenDtype {
        match d {
            DtypeArg::U16 => TokenDtype::U16,
            DtypeArg::U32 => TokenDtype::U32,
        }
    }
}

fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    }
}

fn compile(path: &Path, overrides: &Overrides, color: bool) -> Result<Compiled> {
    driver::compile_file(path, &overrides.set).map_err(|e| Rendered(e.render(color)).into())
}

/// Run the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Train(_) | Command::Compare { .. }) {
        crate::train::signals::uninstall();
    }
    let color = use_color(cli.color);
    match run(cli, color) {
        Ok(code) => code,
        Err(e) => {
            if let Some(r) = e.downcast_ref::<Rendered>() {
                err!("{}", r.0);
            } else if let Some(crate::train::TrainError::Diagnostics(text)) =
                e.downcast_ref::<crate::train::TrainError>()
            {
                err!("{text}");
            } else {
                errln!("error: {e:#}");
            }
            1
        }
    }
}

fn run(cli: Cli, color: bool) -> Result<i32> {
    if let Some(n) = cli.threads {
        crate::runtime::set_threads(n as usize)?;
    }
    match cli.command {
        Command::Check { files, overrides } => cmd_check(&files, &overrides, color),
        Command::Ir {
            file,
            stage,
            json,
            expect,
            bless,
            output,
            overrides,
        } => cmd_ir(
            &file,
            stage.0,
            json,
            expect.as_deref(),
            bless,
            output.as_deref(),
            &overrides,
            color,
        ),
        Command::Params { file, overrides } => {
            let compiled = compile(&file, &overrides, color)?;
            out!("{}", crate::analysis::params_table(&compiled.forward));
            let g = &compiled.forward;
            out!(
                "forward: {} FLOPs per token (matmuls, {} tokens per batch)\n",
                group_digits(
                    (crate::analysis::forward_flops(g) as f64
                        / crate::analysis::tokens_per_batch(g) as f64)
                        .round() as usize
                ),
                crate::analysis::tokens_per_batch(g)
            );
            Ok(0)
        }
        Command::Probe { model, out } => {
            let compiled = compile(&model.file, &model.overrides, color)?;
            let report = crate::train::probe::probe(&compiled, &model.weights, &model.options())?;
            let dir = out.unwrap_or_else(|| {
                PathBuf::from("runs")
                    .join("probe")
                    .join(&compiled.forward.name)
            });
            let files = crate::train::probe::write(&report, &dir)?;
            out!("{}", crate::train::probe::table(&report));
            errln!("wrote {}/{{{}}}", dir.display(), files.join(", "));
            Ok(0)
        }
        Command::DepthSearch { model, rounds, out } => {
            let compiled = compile(&model.file, &model.overrides, color)?;
            let opts = model.options();
            cmd_depth_search(&compiled, &model.weights, &opts, rounds as usize, out)
        }
        Command::Graph {
            file,
            output,
            dot,
            overrides,
        } => {
            if let Some(path) = &output {
                check_output_path(path)?;
            }
            let c = compile(&file, &overrides, color)?;
            let outline = c.outline().map_err(|e| Rendered(e.render(color)))?;
            let text = match dot {
                true => crate::diagram::dot(&outline, &c.forward),
                false => crate::diagram::svg(&outline, &c.forward),
            };
            match &output {
                Some(path) => {
                    io::write_atomic(path, text.as_bytes())?;
                    errln!("wrote {}", path.display());
                }
                None => out!("{text}"),
            }
            Ok(0)
        }
        Command::Serve { dir, port } => {
            let root = crate::serve::Root::new(&dir).map_err(|e| anyhow!(e))?;
            let (server, addr) = crate::serve::bind(port).map_err(|e| anyhow!(e))?;
            out!(
                "lamina explorer on http://{addr}/ serving {} (Ctrl-C stops it)\n",
                root.dir().display()
            );
            crate::serve::run(&server, &root);
            Ok(0)
        }
        Command::Diff {
            a,
            b,
            stage,
            overrides,
        } => {
            let (ca, cb) = (
                compile(&a, &overrides, color)?,
                compile(&b, &overrides, color)?,
            );
            let stage = match stage {
                DiffStage::Ir => Stage::Ir,
                DiffStage::Opt => Stage::Opt,
            };
            out!("{}", crate::analysis::diff(&ca, &cb, stage)?);
            Ok(0)
        }
        Command::Init {
            file,
            output,
            seed,
            overrides,
        } => {
            check_output_path(&output)?;
            let compiled = compile(&file, &overrides, color)?;
            let g = &compiled.forward;
            let params = io::init_params(g, seed)?;
            let named: Vec<(String, Tensor)> = g
                .params
                .iter()
                .map(|p| p.name.clone())
                .zip(params)
                .collect();
            io::save_safetensors(&output, &named)?;
            errln!(
                "wrote {} parameters ({} values) to {}",
                named.len(),
                g.param_count(),
                output.display()
            );
            Ok(0)
        }
        Command::Bench(args) => cmd_bench(&args, color),
        Command::Train(args) => cmd_train(&args),
        Command::Compare {
            files,
            each_recipe,
            train,
        } => cmd_compare(&files, each_recipe, &train),
        Command::Sample {
            file,
            weights,
            prompt,
            prompt_ids,
            tokenizer,
            length,
            temperature,
            seed,
            backend,
            overrides,
        } => {
            let compiled = compile(&file, &overrides, color)?;
            let (params, _) = io::load_weights(&compiled.forward, &weights)?;
            let text = SampleText {
                prompt,
                prompt_ids,
                tokenizer,
            };
            cmd_sample(&compiled, &params, text, length, temperature, seed, backend)
        }
        Command::Import(ImportCommand::Gpt2 {
            weights,
            output,
            length,
            batch,
            heads,
        }) => {
            let opts = crate::import::gpt2::Gpt2Options {
                weights,
                length: length.map(|n| n as usize),
                batch: batch as usize,
                heads: heads.map(|h| h as usize),
            };
            let imported = crate::import::gpt2::convert(&opts)?;
            let written = crate::import::gpt2::write(&imported, &output)?;
            for note in &imported.notes {
                errln!("note: {note}");
            }
            errln!("{}", imported.summary);
            for p in written {
                outln!("wrote {}", p.display());
            }
            Ok(0)
        }
        Command::Extract {
            file,
            weights,
            depth,
            width,
            out,
            overrides,
        } => {
            let compiled = compile(&file, &overrides, color)?;
            let named = named_weights(&compiled, &weights)?;
            let cut = match (depth, width) {
                (Some(n), _) => crate::transform::by_depth(&compiled, &named, n as usize)?,
                (None, Some(f)) => crate::transform::by_width(&compiled, &named, f)?,
                (None, None) => bail!("give --depth N or --width F"),
            };
            for p in crate::transform::write(&cut, &out)? {
                outln!("wrote {}", p.display());
            }
            Ok(0)
        }
        Command::Convert {
            file,
            weights,
            ffn_to_moe,
            top,
            routers: _,
            out,
            overrides,
        } => {
            let compiled = compile(&file, &overrides, color)?;
            let named = named_weights(&compiled, &weights)?;
            let converted = match ffn_to_moe {
                Some(e) => crate::transform::ffn_to_moe(
                    &compiled,
                    &named,
                    e as usize,
                    top.unwrap_or(e) as usize,
                )?,
                None => crate::transform::add_routers(&compiled, &named)?,
            };
            for p in crate::transform::write(&converted, &out)? {
                outln!("wrote {}", p.display());
            }
            Ok(0)
        }
        Command::Export {
            file,
            torch: _,
            out,
            batches,
            recipe,
        } => {
            let compiled = compile(&file, &recipe.overrides, color)?;
            let opts = crate::export::ExportOptions {
                out: out.clone(),
                train: crate::train::TrainOptions {
                    quiet: true,
                    ..recipe.options()
                },
                max_batches: batches,
                color,
            };
            let done = crate::export::export(&compiled, &opts).map_err(|e| match e {
                crate::export::ExportError::Diagnostics(text) => {
                    anyhow::Error::from(Rendered(text))
                }
                other => anyhow::Error::from(other),
            })?;
            let data = match done.batches {
                Some(n) => format!(", data.safetensors ({n} training batches)"),
                None => String::new(),
            };
            errln!("wrote {}/{{model.py, train.py{data}}}", out.display());
            if let Some(why) = done.no_data {
                errln!("note: no data.safetensors, as the task does not fit the model ({why}); train.py needs --data FILE");
            }
            Ok(0)
        }
        Command::Run {
            file,
            weights,
            batch,
            out,
            seed,
            backend,
            skip_below,
            overrides,
        } => {
            let mut compiled = compile(&file, &overrides, color)?;
            if let Some(t) = skip_below {
                compiled = compiled
                    .with_skip_below(t)
                    .map_err(|e| Rendered(e.render(color)))?;
            }
            cmd_run(
                &compiled,
                weights.as_deref(),
                batch.as_deref(),
                out.as_deref(),
                seed,
                backend.into(),
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn cmd_ir(
    file: &Path,
    stage: Stage,
    json: bool,
    expect: Option<&Path>,
    bless: bool,
    output: Option<&Path>,
    overrides: &Overrides,
    color: bool,
) -> Result<i32> {
    if json && !stage.has_json() {
        bail!(
            "--json is available for the ast, ir, grad, opt and step stages; `{}` prints as text only",
            stage.name()
        );
    }
    let compiled = compile(file, overrides, color)?;
    let text = if json {
        compiled.stage_json(stage)
    } else {
        compiled.stage_text(stage)
    }
    .map_err(|e| {
        anyhow!(
            "internal error while printing the {} stage: {e}",
            stage.name()
        )
    })?;
    if let Some(expected_path) = expect {
        return expect_text(expected_path, &text, bless);
    }
    match output {
        Some(path) => {
            check_output_path(path)?;
            io::write_atomic(path, text.as_bytes())?
        }
        None => out!("{text}"),
    }
    Ok(0)
}

fn cmd_train(args: &TrainArgs) -> Result<i32> {
    if args.flags.force && args.resume.is_some() {
        bail!("--force starts a run over and --resume continues one: give one of them");
    }
    let mut opts = args.flags.options();
    opts.resume = args.resume.clone();
    opts.init = args.init.clone();
    let s = crate::train::train(&args.file, &opts)?;
    out!("{}", crate::train::summary_table(std::slice::from_ref(&s)));
    outln!(
        "task {}; wrote {}/{{log.jsonl, loss.svg, checkpoint.safetensors{}}}",
        s.task,
        s.out_dir.display(),
        if s.interrupted {
            ""
        } else {
            ", final.safetensors"
        }
    );
    Ok(if s.interrupted {
        crate::train::signals::exit_code(s.signal)
    } else {
        0
    })
}

fn cmd_depth_search(
    c: &Compiled,
    weights: &Path,
    opts: &crate::train::TrainOptions,
    rounds: usize,
    out: Option<PathBuf>,
) -> Result<i32> {
    use crate::train::depth_search;
    let task = crate::train::recipe_task(c, opts)?;
    let batches = task.eval_batches()?;
    let found = depth_search::search(c, weights, &task, &batches, rounds)?;
    let fmt =
        |s: &depth_search::Scored| format!("{:>10.4}  {:>6}  {:?}", s.loss, s.order.len(), s.order);
    out!("{:>10}  {:>6}  order\n", "loss", "layers");
    out!("{}   (the model)\n", fmt(&found.identity));
    out!("best of {} orders tried:\n", found.ranked.len());
    for s in found.ranked.iter().take(5) {
        out!("{}\n", fmt(s));
    }
    if found.best == found.identity {
        out!("no order of skips and loops beats the model's own on the held-out batches\n");
        return Ok(0);
    }
    out!("found: {}\n", fmt(&found.best));
    match depth_search::model_with_order(c, &found.best.order) {
        Ok(text) => {
            let path = out.unwrap_or_else(|| {
                PathBuf::from("runs")
                    .join("depth-search")
                    .join(format!("{}.lam", c.forward.name))
            });
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            io::write_atomic(&path, text.as_bytes())?;
            errln!(
                "wrote {}: run it with the same weights (`lamina run {} --weights {}`)",
                path.display(),
                path.display(),
                weights.display()
            );
        }
        Err(why) => errln!("the order was not written as a model file: {why}"),
    }
    Ok(0)
}

fn cmd_compare(files: &[PathBuf], each_recipe: bool, train: &TrainFlags) -> Result<i32> {
    let (runs, svg) = crate::train::compare(files, &train.options(), each_recipe)?;
    out!("{}", crate::train::summary_table(&runs));
    outln!("wrote {}", svg.display());
    let signal = crate::train::signals::requested();
    if signal.is_some() || runs.last().is_some_and(|r| r.interrupted) {
        errln!(
            "comparison interrupted: {} of {} model(s) trained or started; each run keeps its \
             checkpoint",
            runs.len(),
            files.len()
        );
        return Ok(crate::train::signals::exit_code(
            signal.or_else(|| runs.last().and_then(|r| r.signal)),
        ));
    }
    Ok(0)
}

fn cmd_check(files: &[PathBuf], overrides: &Overrides, color: bool) -> Result<i32> {
    let mut failed = 0;
    for file in files {
        let start = std::time::Instant::now();
        match driver::compile_file(file, &overrides.set) {
            Ok(c) => {
                // The training recipe is part of the file: check it too.
                if c.module.train.is_some() {
                    let opts = crate::train::TrainOptions {
                        overrides: overrides.set.clone(),
                        ..Default::default()
                    };
                    if let Err(e) = crate::train::resolve_config(&c, &c.file_name, &c.source, &opts)
                    {
                        failed += 1;
                        match e {
                            crate::train::TrainError::Diagnostics(text) => err!("{text}"),
                            e => errln!("error: {e}"),
                        }
                        continue;
                    }
                }
                let g = &c.forward;
                outln!(
                    "ok  {}: model `{}`, {} parameters, {} IR nodes ({:.1} ms)",
                    file.display(),
                    g.name,
                    group_digits(g.param_count()),
                    g.nodes.len(),
                    start.elapsed().as_secs_f64() * 1e3
                );
            }
            Err(e) => {
                failed += 1;
                err!("{}", e.render(color));
            }
        }
    }
    if failed > 0 {
        errln!("{failed} of {} file(s) failed to check", files.len());
        return Ok(1);
    }
    Ok(0)
}

fn expect_text(path: &Path, actual: &str, bless: bool) -> Result<i32> {
    let expected = match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if expected.as_deref() == Some(actual) {
        errln!("{} is up to date", path.display());
        return Ok(0);
    }
    if bless {
        io::write_atomic(path, actual.as_bytes())?;
        errln!("blessed {}", path.display());
        return Ok(0);
    }
    match expected {
        None => errln!(
            "{} does not exist; run again with --bless to create it",
            path.display()
        ),
        Some(expected) => {
            let diff = similar::TextDiff::from_lines(expected.as_str(), actual);
            let label = path.display().to_string();
            out!(
                "{}",
                diff.unified_diff()
                    .context_radius(3)
                    .header(&label, "actual")
            );
            errln!(
                "{} differs from the current output; review the diff, then run with --bless to accept it",
                path.display()
            );
        }
    }
    Ok(1)
}

fn group_digits(n: usize) -> String {
    crate::analysis::group_digits(n as u64)
}

/// Load weights by name, checking that every parameter is present with the right shape.
/// The model's weights from `path`, with their names.
fn named_weights(c: &Compiled, path: &Path) -> Result<Vec<(String, Tensor)>> {
    let params = load_weights(&c.forward, path)?;
    Ok(c.forward
        .params
        .iter()
        .map(|p| p.name.clone())
        .zip(params)
        .collect())
}

fn load_weights(g: &crate::ir::Graph, path: &Path) -> Result<Vec<Tensor>> {
    let (params, extra) = io::load_weights(g, path)?;
    if !extra.is_empty() {
        errln!(
            "warning: {} holds {} tensor(s) the model does not use: {}",
            path.display(),
            extra.len(),
            extra.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(params)
}

fn load_batch(g: &crate::ir::Graph, path: &Path) -> Result<Vec<Tensor>> {
    let mut tensors = io::load_safetensors(path)?;
    let mut out = Vec::new();
    for inp in &g.inputs {
        let i = tensors
            .iter()
            .position(|(n, _)| *n == inp.name)
            .ok_or_else(|| {
                anyhow!(
                    "{} has no tensor `{}` ({}); the model reads {}",
                    path.display(),
                    inp.name,
                    inp.ty,
                    g.inputs
                        .iter()
                        .map(|i| format!("`{}` {}", i.name, i.ty))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )
            })?;
        let (_, mut t) = tensors.swap_remove(i);
        // Integer batches may come as floats holding integers and vice versa; only the shape
        // and, for ids, integrality must match.
        if t.shape != inp.ty.shape {
            bail!(
                "{}: `{}` has shape {:?} but the model needs {}",
                path.display(),
                inp.name,
                t.shape,
                inp.ty
            );
        }
        if inp.ty.dtype == crate::ir::DType::I32 {
            let input_index = out.len();
            let bound = io::index_bound(g, input_index);
            for (k, &v) in t.data.iter().enumerate() {
                let in_range = bound.is_none_or(|b| v >= 0.0 && v < b as f64);
                if v.fract() != 0.0 || !in_range {
                    let at = io::unravel(k, &t.shape);
                    let range =
                        bound.map_or(String::new(), |b| format!(" (ids run from 0 to {})", b - 1));
                    bail!(
                        "{}: `{}`{at:?} = {v} is not a valid id{range}",
                        path.display(),
                        inp.name
                    );
                }
            }
        } else if let Some(k) = t.data.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: `{}`{:?} = {} is not a finite number",
                path.display(),
                inp.name,
                io::unravel(k, &t.shape),
                t.data[k]
            );
        }
        t.dtype = inp.ty.dtype;
        out.push(t);
    }
    if !tensors.is_empty() {
        let extra: Vec<_> = tensors.iter().map(|(n, _)| n.as_str()).take(5).collect();
        errln!(
            "warning: {} holds {} tensor(s) the model does not read: {}",
            path.display(),
            tensors.len(),
            extra.join(", ")
        );
    }
    Ok(out)
}

/// `v` with `digits` decimals; a value that rounds to zero prints as `0.000000`, never
/// `-0.000000`.
fn fixed(v: f64, digits: usize) -> String {
    let s = format!("{v:.digits$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// Fail early, before any work, when an output file cannot be created where asked.
/// The prompt and output options of `lamina sample`.
struct SampleText {
    prompt: String,
    prompt_ids: Option<Vec<u32>>,
    tokenizer: Option<PathBuf>,
}

fn cmd_sample(
    compiled: &Compiled,
    params: &[Tensor],
    text: SampleText,
    length: usize,
    temperature: f64,
    seed: u64,
    backend: BackendArg,
) -> Result<i32> {
    use crate::train::sample::Tokens;
    let bpe = match &text.tokenizer {
        Some(dir) => Some(crate::import::load_tokenizer(dir)?),
        None => None,
    };
    // The ids shown with the output, and the ids the generation starts from.
    let (shown, start, tokens) = match (text.prompt_ids, &bpe) {
        (Some(ids), _) => (ids.clone(), ids, Tokens::Ids),
        (None, Some(bpe)) => {
            let ids = bpe
                .encode(&text.prompt)
                .map_err(|e| anyhow!("--prompt: {e}"))?;
            let start = match (ids.is_empty(), bpe.id_of("<|endoftext|>")) {
                (false, _) => ids.clone(),
                (true, Some(eot)) => vec![eot],
                (true, None) => bail!(
                    "--prompt: give a prompt (the vocabulary has no <|endoftext|> to start from)"
                ),
            };
            (ids, start, Tokens::Ids)
        }
        (None, None) => {
            let bytes: Vec<u32> = text.prompt.bytes().map(u32::from).collect();
            (bytes.clone(), bytes, Tokens::Bytes)
        }
    };
    let new = crate::train::sample::sample(
        &compiled.forward,
        params,
        &crate::train::sample::SampleOptions {
            prompt: start,
            count: length,
            tokens,
            temperature,
            seed,
            backend: backend.into(),
        },
    )?;
    let mut all = shown;
    all.extend_from_slice(&new);
    let mut bytes = match (&bpe, tokens) {
        (Some(bpe), Tokens::Ids | Tokens::Bytes) => bpe.decode(&all).map_err(|e| anyhow!("{e}"))?,
        (None, Tokens::Ids) => {
            let ids: Vec<String> = all.iter().map(|i| i.to_string()).collect();
            ids.join(",").into_bytes()
        }
        (None, Tokens::Bytes) => all.iter().map(|&b| b as u8).collect(),
    };
    bytes.push(b'\n');
    emit_bytes(&bytes);
    Ok(0)
}

fn check_output_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a directory; give a file name", path.display());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot write {}: the directory {} does not exist",
            path.display(),
            parent.display()
        );
    }
    // Create and remove a file beside it: a read-only directory fails now, not after the work.
    let probe = parent.join(format!(".lamina-probe.tmp.{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn cmd_run(
    c: &Compiled,
    weights: Option<&Path>,
    batch: Option<&Path>,
    out: Option<&Path>,
    seed: u64,
    backend: Backend,
) -> Result<i32> {
    let g = &c.forward;
    if let Some(out) = out {
        check_output_path(out)?;
    }
    let params = match weights {
        Some(p) => load_weights(g, p)?,
        None => io::init_params(g, seed)?,
    };
    let inputs = match batch {
        Some(p) => load_batch(g, p)?,
        None => io::random_batch(g, seed)?,
    };
    let joint = c
        .joint()
        .map_err(|e| anyhow!("internal error in autodiff: {e}"))?;
    let start = std::time::Instant::now();
    let outputs = match backend {
        Backend::Interp => interp::run(
            &joint,
            &interp::Env {
                inputs: &inputs,
                params: &params,
            },
        )
        .map_err(|e| anyhow!("{e}"))?,
        Backend::Jit => crate::runtime::compile_graph(&joint)
            .and_then(|mut compiled| compiled.run(&inputs, &params))
            .map_err(|e| anyhow!("{e}"))?,
    };
    let elapsed = start.elapsed();
    report_routes(&outputs);
    let loss = outputs
        .iter()
        .find(|(n, _)| n == "loss")
        .map(|(_, t)| t.data[0])
        .ok_or_else(|| anyhow!("internal error: the graph has no loss output"))?;
    outln!("loss = {}", fixed(loss, 6));
    let name = match (backend, crate::jit::baseline_cpu()) {
        (Backend::Jit, true) => "jit (baseline x86-64: SSE2, no FMA)",
        (Backend::Jit | Backend::Interp, _) => backend.name(),
    };
    errln!(
        "{} backend, {:.1} ms, {} gradients{}",
        name,
        elapsed.as_secs_f64() * 1e3,
        outputs
            .iter()
            .filter(|(n, _)| n.starts_with("grad."))
            .count(),
        if batch.is_none() {
            ", random batch"
        } else {
            ""
        }
    );
    if let Some(out) = out {
        // The interpreter computes in f64: keep every bit of it.
        let width = match backend {
            Backend::Interp => io::FloatWidth::F64,
            Backend::Jit => io::FloatWidth::F32,
        };
        io::save_safetensors_as(out, &outputs, width)?;
        errln!("wrote {}", out.display());
    }
    Ok(0)
}

/// With hard routing: the fraction of routed layer runs skipped over the batch.
fn report_routes(outputs: &[(String, crate::tensor::Tensor)]) {
    let keeps: Vec<f64> = outputs
        .iter()
        .filter(|(n, _)| n.starts_with("route."))
        .flat_map(|(_, t)| t.data.iter().copied())
        .collect();
    if keeps.is_empty() {
        return;
    }
    let skipped = keeps.iter().filter(|&&k| k < 0.5).count();
    outln!(
        "layers skipped = {} ({skipped} of {} routed layer runs)",
        fixed(skipped as f64 / keeps.len() as f64, 4),
        keeps.len()
    );
}

/// A fraction in (0, 1], written `1/4` or `0.25`.
fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let (a, b): (f64, f64) = (
                a.trim()
                    .parse()
                    .map_err(|_| format!("`{s}` is not a fraction"))?,
                b.trim()
                    .parse()
                    .map_err(|_| format!("`{s}` is not a fraction"))?,
            );
            a / b
        }
        None => s.parse().map_err(|_| format!("`{s}` is not a number"))?,
    };
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("a width is a fraction in (0, 1], found {v}"))
    }
}

/// A gate threshold in [0, 1].
fn parse_gate(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("a gate is in [0, 1], found {v}"))
    }
}

fn cmd_bench(args: &BenchArgs, color: bool) -> Result<i32> {
    if args.peak {
        let p = crate::bench::peak();
        outln!(
            "single-core FMA peak, 128-bit vectors: {:6.1} GFLOP/s",
            p.fma128
        );
        match p.fma256 {
            Some(v) => outln!("single-core FMA peak, 256-bit vectors: {v:6.1} GFLOP/s"),
            None => outln!("single-core FMA peak, 256-bit vectors: not available (no AVX2+FMA)"),
        }
        if args.file.is_none() {
            return Ok(0);
        }
    }
    let Some(file) = &args.file else {
        bail!("no model file given");
    };
    let start = std::time::Instant::now();
    let compiled = compile(file, &args.overrides, color)?;
    let opts = crate::train::TrainOptions {
        overrides: args.overrides.set.clone(),
        settings: args
            .optimizer
            .iter()
            .map(|o| ("optimizer".to_string(), o.clone()))
            .collect(),
        ..Default::default()
    };
    let cfg =
        crate::train::resolve_config(&compiled, &compiled.file_name, &compiled.source, &opts)?;
    let joint = compiled
        .training_joint()
        .map_err(|e| anyhow!("internal error in autodiff: {e}"))?;
    let front_seconds = start.elapsed().as_secs_f64();
    let profile = std::env::var_os("LAMINA_PROFILE").is_some();
    let report = crate::bench::bench_step(&joint, &cfg.optim, args.steps as usize, profile)
        .map_err(|e| anyhow!("{e}"))?;
    if let Some(p) = &report.profile {
        err!("{p}");
    }
    let g = &compiled.forward;
    outln!(
        "model          {} ({} parameters)",
        g.name,
        group_digits(g.param_count())
    );
    outln!(
        "compile        {:.1} ms (front end {:.1} ms, step, kernels and code {:.1} ms)",
        (front_seconds + report.compile_seconds) * 1e3,
        front_seconds * 1e3,
        report.compile_seconds * 1e3
    );
    outln!(
        "step           {:.2} ms median of {} on {} thread{} (forward, backward, {} update)",
        report.median_step_seconds * 1e3,
        report.steps,
        report.threads,
        if report.threads == 1 { "" } else { "s" },
        report.optimizer
    );
    if let Some(one) = report.one_thread_step_seconds {
        outln!(
            "1 thread       {:.2} ms median ({:.2}x faster on {} threads)",
            one * 1e3,
            one / report.median_step_seconds,
            report.threads
        );
    }
    outln!("tokens/s       {:.0}", report.tokens_per_second);
    match crate::bench::peak256() {
        Some(core) => outln!(
            "matmul         {:.1} GFLOP/s, {:.0}% of the {}-thread 256-bit FMA peak ({:.0} GFLOP/s)",
            report.gflops,
            100.0 * report.gflops / (core * report.threads as f64),
            report.threads,
            core * report.threads as f64
        ),
        None => outln!("matmul         {:.1} GFLOP/s", report.gflops),
    }
    outln!(
        "peak arena     {} bytes ({:.1} MiB), {} kernels",
        group_digits(report.peak_arena_bytes),
        report.peak_arena_bytes as f64 / (1 << 20) as f64,
        report.kernels
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_that_round_to_zero_print_without_a_sign() {
        assert_eq!(fixed(-1e-9, 6), "0.000000");
        assert_eq!(fixed(-0.0, 6), "0.000000");
        assert_eq!(fixed(-0.5, 6), "-0.500000");
        assert_eq!(fixed(1.25, 2), "1.25");
    }

    #[test]
    fn set_integers_lie_within_2_pow_53() {
        assert!(parse_override("d=9007199254740991").is_ok());
        for v in [
            "9007199254740992",
            "9007199254740993",
            "-9007199254740992",
            "1_000_000_000_000_000_000_000",
        ] {
            let e = parse_override(&format!("d={v}")).unwrap_err();
            assert!(e.contains("2^53") && e.contains("--set d="), "{e}");
        }
    }
}
