//! Compile time against depth: a narrow residual MLP whose block runs one tiny FFN eight
//! times (`benches/models/deep_ffn.lam`), from 1 layer (8 steps) to 1024 layers (8192 steps,
//! the language's limit). Prints milliseconds per stage and per size; each stage should
//! grow linearly with the number of layers (the plan up to a log factor). The measured
//! table is in docs/reliability.md, "Compile time".
//!
//! `cargo bench --bench compile_time [-- [MIN_LAYERS] MAX_LAYERS]`

use lamina::elab::Override;
use lamina::kernels::{build_program, BuildOptions};
use lamina::runtime::plan;
use std::path::Path;
use std::time::Instant;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (min, max) = match sizes[..] {
        [] => (1, 1024),
        [max] => (1, max),
        [min, max, ..] => (min, max),
    };
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/models/deep_ffn.lam");
    println!(
        "| layers | steps | nodes | kernels | front ms | step graph ms | optimize ms | kernels ms | plan ms | jit ms | total ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut layers = min.max(1);
    while layers <= max {
        let t_all = Instant::now();
        let t = Instant::now();
        let set = [Override {
            name: "layers".into(),
            value: layers as f64,
            is_int: true,
        }];
        let c = match lamina::driver::compile_file(&model, &set) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}", e.render(false));
                std::process::exit(1);
            }
        };
        let front = ms(t);
        let t = Instant::now();
        let step = c.step().expect("step graph");
        let step_ms = ms(t);
        let t = Instant::now();
        let g = lamina::passes::optimize(&step);
        let opt = ms(t);
        let t = Instant::now();
        let program = build_program(&g, &BuildOptions::default()).expect("kernels");
        let build = ms(t);
        let t = Instant::now();
        let p = plan::plan(&program);
        let plan_ms = ms(t);
        let nodes = g.nodes.len();
        let nk = program.kernels.len();
        let t = Instant::now();
        let code = lamina::jit::compile(&program, &p.offsets).expect("jit");
        let jit = ms(t);
        drop(code);
        println!(
            "| {layers} | {} | {nodes} | {nk} | {front:.0} | {step_ms:.0} | {opt:.0} | {build:.0} | {plan_ms:.0} | {jit:.0} | {:.0} |",
            8 * layers,
            ms(t_all)
        );
        layers *= 2;
    }
}
