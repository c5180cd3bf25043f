//! Users' data sets (`--data`): safetensors files of examples and flat token streams;
//! training on each, the held-out split, resume, validation errors, full-batch steps.

use lamina::front;
use lamina::tensor::Tensor;
use lamina::train::data::TokenDtype;
use lamina::train::{self, TrainOptions};
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lamina-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A one-layer causal LM over 16 tokens, length 8, batch 4.
const LM: &str = "\
input tokens(batch = 4, length = 8, vocab = 16)
embed(dim = 16)
block layer {
    attn = attention(heads = 2)
    ffn  = ffn(hidden = 32)
}
stack layer * 1
train {
    steps      = 40
    optimizer  = adamw(lr = 1e-2)
    eval_every = 10
}
";

/// A residual MLP classifier over 4 features, 3 classes, batch 8.
const CLASSIFIER: &str = "\
input features(batch = 8, width = 4)
embed(dim = 16)
block layer {
    mlp = ffn(hidden = 32, act = relu)
}
stack layer * 1
head classifier(classes = 3)
train {
    steps      = 60
    optimizer  = adamw(lr = 1e-2)
    eval_every = 20
}
";

/// The same with a regression head of 2 outputs.
const REGRESSION: &str = "\
input features(batch = 8, width = 4)
embed(dim = 16)
block layer {
    mlp = ffn(hidden = 32, act = relu)
}
stack layer * 1
head linear(out = 2)
train {
    steps      = 60
    optimizer  = adamw(lr = 1e-2)
    eval_every = 20
}
";

fn write_model(dir: &Path, src: &str) -> PathBuf {
    let p = dir.join("m.lam");
    std::fs::write(&p, src).unwrap();
    p
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
struct Raw(&'static str, Dtype, Vec<usize>, Vec<u8>);

fn u16s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect()
}
fn u32s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect()
}
fn i64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect()
}
fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_tensors(path: &Path, tensors: &[Raw]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|Raw(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

/// A learnable token sequence: each token is the previous plus a step that depends on the
/// row, mod 16.
fn counting(start: u64, len: usize) -> Vec<u64> {
    (0..len as u64).map(|i| (start + i * 3) % 16).collect()
}

/// `n` LM examples: tokens and next-token targets, rows of 8.
fn lm_examples(n: usize) -> (Vec<u64>, Vec<u64>) {
    let (mut x, mut y) = (vec![], vec![]);
    for k in 0..n {
        let w = counting(k as u64, 9);
        x.extend_from_slice(&w[..8]);
        y.extend_from_slice(&w[1..]);
    }
    (x, y)
}

/// `n` feature examples: row `k` starts with `k / 1000` (so a batch shows which examples
/// it holds); the class is the argmax of the other three features.
fn feature_examples(n: usize) -> (Vec<f32>, Vec<u64>) {
    let (mut x, mut y) = (vec![], vec![]);
    for k in 0..n {
        let f = [
            ((k * 7) % 5) as f32 - 2.0,
            ((k * 3) % 7) as f32 - 3.0,
            ((k * 5) % 3) as f32 - 1.0,
        ];
        x.push(k as f32 / 1000.0);
        x.extend_from_slice(&f);
        let mut best = 0;
        for c in 0..3 {
            if f[c] > f[best] {
                best = c;
            }
        }
        y.push(best as u64);
    }
    (x, y)
}

fn classifier_file(path: &Path, n: usize) {
    let (x, y) = feature_examples(n);
    write_tensors(
        path,
        &[
            Raw("inputs", Dtype::F32, vec![n, 4], f32s(&x)),
            Raw("targets", Dtype::I64, vec![n], i64s(&y)),
        ],
    );
}

fn opts(out: &Path, data: &Path) -> TrainOptions {
    TrainOptions {
        out: Some(out.to_path_buf()),
        data: Some(data.to_path_buf()),
        quiet: true,
        ..Default::default()
    }
}

fn bits(s: &train::Summary) -> Vec<u32> {
    s.losses.iter().map(|(_, l)| l.to_bits()).collect()
}

/// A stream of `n` tokens following `counting` in runs of 9.
fn stream_tokens(n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| ((i / 9) as u64 + (i % 9) as u64 * 3) % 16)
        .collect()
}

#[test]
fn lm_trains_on_token_tensors() {
    let d = tmp("lm-tensors");
    let m = write_model(&d, LM);
    let (x, y) = lm_examples(200);
    let f = d.join("lm.safetensors");
    write_tensors(
        &f,
        &[
            Raw("tokens", Dtype::U16, vec![200, 8], u16s(&x)),
            Raw("targets", Dtype::I64, vec![200, 8], i64s(&y)),
        ],
    );
    let s = train::train(&m, &opts(&d.join("run"), &f)).unwrap();
    assert_eq!(s.task, "data");
    assert_eq!(s.steps_done, 40);
    let (first, last) = (s.losses[0].1 as f64, s.final_loss());
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let eval = s.last_eval().unwrap();
    assert!(eval.loss < 0.5 * first, "held-out loss {}", eval.loss);
}

#[test]
fn lm_trains_on_a_flat_token_file_through_the_map() {
    let d = tmp("lm-bin");
    let m = write_model(&d, LM);
    let tokens = stream_tokens(4000);
    for (dtype, bytes, name) in [
        (TokenDtype::U16, u16s(&tokens), "train16.bin"),
        (TokenDtype::U32, u32s(&tokens), "train32.bin"),
    ] {
        let f = d.join(name);
        std::fs::write(&f, bytes).unwrap();
        let mut o = opts(&d.join(name.replace(".bin", "")), &f);
        o.dtype = Some(dtype);
        let s = train::train(&m, &o).unwrap();
        let (first, last) = (s.losses[0].1 as f64, s.final_loss());
        assert!(last < 0.6 * first, "{name}: loss {first} -> {last}");
        assert!(s.last_eval().is_some());
    }
    // The same stream as a 1-D `tokens` tensor trains the same way.
    let f = d.join("stream.safetensors");
    write_tensors(&f, &[Raw("tokens", Dtype::U16, vec![4000], u16s(&tokens))]);
    let s = train::train(&m, &opts(&d.join("tensor-stream"), &f)).unwrap();
    let mut o = opts(&d.join("again"), &d.join("train16.bin"));
    o.dtype = Some(TokenDtype::U16);
    let b = train::train(&m, &o).unwrap();
    assert_eq!(
        bits(&s),
        bits(&b),
        "a 1-D tensor and a .bin file of the same tokens"
    );
}

#[test]
fn a_token_file_larger_than_the_text_limit_is_mapped_not_read() {
    // A sparse file just over the 1 GiB limit for text, never read whole (only the
    // checking pass touches it, through the map). Zeros are token 0.
    let d = tmp("big-bin");
    let m = write_model(&d, LM);
    let f = d.join("big.bin");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len((1 << 30) + (2 << 20)).unwrap();
    drop(file);
    let mut o = opts(&d.join("run"), &f);
    o.dtype = Some(TokenDtype::U16);
    o.settings.push(("steps".into(), "2".into()));
    o.settings.push(("eval_every".into(), "2".into()));
    let s = train::train(&m, &o).unwrap();
    assert_eq!(s.steps_done, 2);
}

#[test]
fn classifier_and_regression_train_on_feature_tensors() {
    let d = tmp("features");
    let m = write_model(&d, CLASSIFIER);
    let f = d.join("cls.safetensors");
    classifier_file(&f, 400);
    let s = train::train(&m, &opts(&d.join("cls"), &f)).unwrap();
    let (first, last) = (s.losses[0].1 as f64, s.final_loss());
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    assert!(s.last_eval().unwrap().accuracy.is_some());

    let m = write_model(&d, REGRESSION);
    let n = 400;
    let (x, _) = feature_examples(n);
    let y: Vec<f32> = x
        .chunks(4)
        .flat_map(|r| [0.5 * r[1] - 0.25 * r[2], 0.3 * r[3]])
        .collect();
    let f = d.join("reg.safetensors");
    write_tensors(
        &f,
        &[
            Raw("inputs", Dtype::F32, vec![n, 4], f32s(&x)),
            Raw("targets", Dtype::F32, vec![n, 2], f32s(&y)),
        ],
    );
    let s = train::train(&m, &opts(&d.join("reg"), &f)).unwrap();
    let (first, last) = (s.losses[0].1 as f64, s.final_loss());
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    assert!(s.last_eval().unwrap().accuracy.is_none());
}

/// The task `lamina train` would build for `model` and `data`.
fn task_for(dir: &Path, model: &str, data: &Path) -> train::tasks::Task {
    let m = write_model(dir, model);
    let c = front::compile_file(&m, &[]).unwrap();
    let o = TrainOptions {
        data: Some(data.to_path_buf()),
        quiet: true,
        ..Default::default()
    };
    train::recipe_task(&c, &o).unwrap()
}

/// The example number (the first feature) of each real row of a features batch.
fn example_ids(b: &train::tasks::Batch) -> Vec<usize> {
    let x: &Tensor = &b.inputs[0];
    (0..b.rows)
        .map(|r| (x.data[r * 4] * 1000.0).round() as usize)
        .collect()
}

#[test]
fn held_out_part_is_the_last_tenth_and_training_visits_the_rest_in_epochs() {
    let d = tmp("split");
    let f = d.join("cls.safetensors");
    // 90 examples: 81 train (0..81), 9 held out (81..90).
    classifier_file(&f, 90);
    let task = task_for(&d, CLASSIFIER, &f);
    let held: Vec<usize> = task
        .eval_batches()
        .unwrap()
        .iter()
        .flat_map(example_ids)
        .collect();
    assert_eq!(held, (81..90).collect::<Vec<_>>());
    // 81 epochs of 8-row batches cover every training example 8 times, no held-out one.
    let mut count = [0usize; 90];
    for t in 0..81 {
        for k in example_ids(&task.batch(t).unwrap()) {
            count[k] += 1;
        }
    }
    assert!(count[..81].iter().all(|&c| c == 8), "{count:?}");
    assert!(count[81..].iter().all(|&c| c == 0), "{count:?}");
    // The order is shuffled, and differs between epochs.
    let first: Vec<usize> = (0..10)
        .flat_map(|t| example_ids(&task.batch(t).unwrap()))
        .collect();
    assert_ne!(first[..10], (0..10).collect::<Vec<_>>()[..]);

    // Held-out examples named in the file: all of `inputs` trains.
    let (x, y) = feature_examples(40);
    let g = d.join("named.safetensors");
    write_tensors(
        &g,
        &[
            Raw("inputs", Dtype::F32, vec![32, 4], f32s(&x[..128])),
            Raw(
                "targets",
                Dtype::U8,
                vec![32],
                y[..32].iter().map(|&v| v as u8).collect(),
            ),
            Raw("held_out.inputs", Dtype::F32, vec![8, 4], f32s(&x[128..])),
            Raw("held_out.targets", Dtype::I32, vec![8], u32s(&y[32..])),
        ],
    );
    let task = task_for(&d, CLASSIFIER, &g);
    let held: Vec<usize> = task
        .eval_batches()
        .unwrap()
        .iter()
        .flat_map(example_ids)
        .collect();
    assert_eq!(held, (32..40).collect::<Vec<_>>());
    let mut seen: Vec<usize> = (0..4)
        .flat_map(|t| example_ids(&task.batch(t).unwrap()))
        .collect();
    seen.sort();
    assert_eq!(seen, (0..32).collect::<Vec<_>>());
}

#[test]
fn one_batch_of_examples_is_every_step_the_same_batch() {
    let d = tmp("full-batch");
    // 17 examples with a batch of 16: the last 10% is one example, and the training part
    // is exactly one batch.
    let model = CLASSIFIER.replace("batch = 8", "batch = 16");
    let f = d.join("full.safetensors");
    classifier_file(&f, 17);
    let (x, y) = feature_examples(17);
    let task = task_for(&d, &model, &f);
    let first = task.batch(0).unwrap();
    assert_eq!(example_ids(&first), (0..16).collect::<Vec<_>>());
    assert_eq!(
        first.inputs[0].data,
        x[..64].iter().map(|&v| v as f64).collect::<Vec<_>>()
    );
    assert_eq!(
        first.inputs[1].data,
        y[..16].iter().map(|&v| v as f64).collect::<Vec<_>>()
    );
    for t in 1..50 {
        assert_eq!(task.batch(t).unwrap().inputs, first.inputs, "step {t}");
    }
    // Whatever the seed.
    let m = write_model(&d, &model);
    let c = front::compile_file(&m, &[]).unwrap();
    let mut o = opts(&d.join("unused"), &f);
    o.settings.push(("seed".into(), "7".into()));
    let other = train::recipe_task(&c, &o).unwrap();
    assert_eq!(other.batch(3).unwrap().inputs, first.inputs);
    // Full-batch training: with plain SGD the loss falls at every step.
    let mut o = opts(&d.join("run"), &f);
    o.settings
        .push(("optimizer".into(), "sgd(lr = 0.05)".into()));
    o.settings.push(("steps".into(), "20".into()));
    let s = train::train(&m, &o).unwrap();
    for w in s.losses.windows(2) {
        assert!(w[1].1 < w[0].1, "{:?}", s.losses);
    }
}

fn resume_check(d: &Path, m: &Path, o: TrainOptions) {
    let mut full = o.clone();
    full.out = Some(d.join("full"));
    let whole = train::train(m, &full).unwrap();
    let mut cut = o.clone();
    cut.out = Some(d.join("cut"));
    cut.stop_after = Some(13);
    let first = train::train(m, &cut).unwrap();
    assert!(first.interrupted);
    let mut rest = o.clone();
    rest.out = None;
    rest.resume = Some(d.join("cut/checkpoint.safetensors"));
    let second = train::train(m, &rest).unwrap();
    let joined: Vec<u32> = bits(&first).into_iter().chain(bits(&second)).collect();
    assert_eq!(joined, bits(&whole));
    let w =
        |dir: &str| lamina::io::load_safetensors(&d.join(dir).join("final.safetensors")).unwrap();
    assert_eq!(w("full"), w("cut"));
    let log = |dir: &str| train::read_log(&d.join(dir).join("log.jsonl")).0;
    assert_eq!(log("full").len(), log("cut").len());
}

#[test]
fn resume_on_user_data_is_bit_identical() {
    let d = tmp("resume-tensors");
    let m = write_model(&d, CLASSIFIER);
    let f = d.join("cls.safetensors");
    classifier_file(&f, 100);
    let mut o = opts(&d.join("x"), &f);
    o.settings.push(("steps".into(), "30".into()));
    o.settings.push(("eval_every".into(), "5".into()));
    resume_check(&d, &m, o);

    let d = tmp("resume-bin");
    let m = write_model(&d, LM);
    let f = d.join("train.bin");
    std::fs::write(&f, u16s(&stream_tokens(2000))).unwrap();
    let mut o = opts(&d.join("x"), &f);
    o.dtype = Some(TokenDtype::U16);
    o.settings.push(("steps".into(), "30".into()));
    o.settings.push(("eval_every".into(), "5".into()));
    resume_check(&d, &m, o.clone());
    // A checkpoint refuses other data.
    let g = d.join("other.bin");
    let mut other = stream_tokens(2000);
    other[1500] = 3;
    std::fs::write(&g, u16s(&other)).unwrap();
    let mut r = o.clone();
    r.data = Some(g);
    r.out = None;
    r.resume = Some(d.join("cut/checkpoint.safetensors"));
    let e = train::train(&m, &r).unwrap_err().to_string();
    assert!(e.contains("different data"), "{e}");
}

/// The error of training `model` on `data` (with `dtype`), with the directory as `DIR`.
fn data_error(d: &Path, model: &str, data: &Path, dtype: Option<TokenDtype>) -> String {
    let m = write_model(d, model);
    let mut o = opts(&d.join("run"), data);
    o.dtype = dtype;
    let e = train::train(&m, &o).unwrap_err().to_string();
    e.replace(&d.display().to_string(), "DIR")
}

#[test]
fn data_files_are_checked_before_training() {
    let d = tmp("errors");
    let mut report = String::new();
    let mut case = |what: &str,
                    model: &str,
                    file: &str,
                    tensors: Option<&[Raw]>,
                    bytes: Option<Vec<u8>>,
                    dtype| {
        let f = d.join(file);
        if let Some(t) = tensors {
            write_tensors(&f, t);
        }
        if let Some(b) = bytes {
            std::fs::write(&f, b).unwrap();
        }
        let e = data_error(&d, model, &f, dtype);
        report += &format!("## {what}\n{e}\n\n");
        e
    };
    let (x, y) = lm_examples(20);
    let mut bad = x.clone();
    bad[13] = 70000;
    let e = case(
        "token outside the vocabulary",
        LM,
        "vocab.safetensors",
        Some(&[
            Raw("tokens", Dtype::U32, vec![20, 8], u32s(&bad)),
            Raw("targets", Dtype::I64, vec![20, 8], i64s(&y)),
        ]),
        None,
        None,
    );
    assert!(
        e.contains(
            "token 70000 at index 13 (example 1, position 5) is outside the vocabulary of 16"
        ),
        "{e}"
    );
    let mut stream = stream_tokens(1000);
    stream[734] = 70000;
    let e = case(
        "token outside the vocabulary, flat file",
        LM,
        "vocab.bin",
        None,
        Some(u32s(&stream)),
        Some(TokenDtype::U32),
    );
    assert!(
        e.contains("token 70000 at index 734 is outside the vocabulary of 16"),
        "{e}"
    );
    let e = case(
        "flat file read with the wrong width",
        LM,
        "wide.bin",
        None,
        Some(u16s(&stream_tokens(1000))),
        Some(TokenDtype::U32),
    );
    assert!(
        e.contains("is outside the vocabulary of 16") && e.contains("--dtype"),
        "{e}"
    );
    let (fx, mut fy) = feature_examples(30);
    fy[29] = 3;
    let e = case(
        "class outside the classifier",
        CLASSIFIER,
        "class.safetensors",
        Some(&[
            Raw("inputs", Dtype::F32, vec![30, 4], f32s(&fx)),
            Raw("targets", Dtype::I64, vec![30], i64s(&fy)),
        ]),
        None,
        None,
    );
    assert!(
        e.contains("target 3 at index 29 (example 29) is outside the 3 classes"),
        "{e}"
    );
    let mut nan = fx.clone();
    nan[6] = f32::NAN;
    let (_, fy) = feature_examples(30);
    let e = case(
        "non-finite input",
        CLASSIFIER,
        "nan.safetensors",
        Some(&[
            Raw("inputs", Dtype::F32, vec![30, 4], f32s(&nan)),
            Raw("targets", Dtype::I64, vec![30], i64s(&fy)),
        ]),
        None,
        None,
    );
    assert!(
        e.contains("value NaN at index 6 (example 1, position 2) is not finite"),
        "{e}"
    );
    let e = case(
        "rows of another length",
        LM,
        "shape.safetensors",
        Some(&[
            Raw("tokens", Dtype::U16, vec![10, 16], u16s(&x[..160])),
            Raw("targets", Dtype::U16, vec![10, 16], u16s(&y[..160])),
        ]),
        None,
        None,
    );
    assert!(
        e.contains("its examples have shape [16], and the model reads examples of shape [8]"),
        "{e}"
    );
    let e = case(
        "float inputs stored as f64",
        CLASSIFIER,
        "f64.safetensors",
        Some(&[
            Raw(
                "inputs",
                Dtype::F64,
                vec![30, 4],
                fx.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
            ),
            Raw("targets", Dtype::I64, vec![30], i64s(&fy)),
        ]),
        None,
        None,
    );
    assert!(
        e.contains("`inputs` is f64[30, 4], and the model reads f32 there"),
        "{e}"
    );
    let e = case(
        "float token ids",
        LM,
        "ftok.safetensors",
        Some(&[
            Raw(
                "tokens",
                Dtype::F32,
                vec![20, 8],
                f32s(&x.iter().map(|&v| v as f32).collect::<Vec<_>>()),
            ),
            Raw("targets", Dtype::I64, vec![20, 8], i64s(&y)),
        ]),
        None,
        None,
    );
    assert!(
        e.contains("`tokens` is f32[20, 8], and the model reads integer ids"),
        "{e}"
    );
    let e = case(
        "missing names",
        LM,
        "names.safetensors",
        Some(&[
            Raw("x", Dtype::U16, vec![20, 8], u16s(&x)),
            Raw("y", Dtype::U16, vec![20, 8], u16s(&y)),
        ]),
        None,
        None,
    );
    assert!(e.contains("holds `x` (u16[20, 8]), `y` (u16[20, 8]); a model reading `tokens` needs `tokens` and `targets`"), "{e}");
    let e = case(
        "an image data set",
        CLASSIFIER,
        "images.safetensors",
        Some(&[
            Raw("images", Dtype::F32, vec![30, 4], f32s(&fx)),
            Raw("labels", Dtype::I64, vec![30], i64s(&fy)),
        ]),
        None,
        None,
    );
    assert!(e.contains("this model has no image input"), "{e}");
    let e = case(
        "examples and targets disagree",
        CLASSIFIER,
        "count.safetensors",
        Some(&[
            Raw("inputs", Dtype::F32, vec![30, 4], f32s(&fx)),
            Raw("targets", Dtype::I64, vec![29], i64s(&fy[..29])),
        ]),
        None,
        None,
    );
    assert!(
        e.contains("`inputs` holds 30 examples and `targets` 29"),
        "{e}"
    );
    let e = case(
        "no held-out part",
        CLASSIFIER,
        "tiny.safetensors",
        Some(&[
            Raw("inputs", Dtype::F32, vec![9, 4], f32s(&fx[..36])),
            Raw("targets", Dtype::I64, vec![9], i64s(&fy[..9])),
        ]),
        None,
        None,
    );
    assert!(e.contains("nothing is held out"), "{e}");
    let e = case(
        "empty named held-out part",
        CLASSIFIER,
        "held0.safetensors",
        Some(&[
            Raw("inputs", Dtype::F32, vec![9, 4], f32s(&fx[..36])),
            Raw("targets", Dtype::I64, vec![9], i64s(&fy[..9])),
            Raw("held_out.inputs", Dtype::F32, vec![0, 4], vec![]),
            Raw("held_out.targets", Dtype::I64, vec![0], vec![]),
        ]),
        None,
        None,
    );
    assert!(e.contains("`held_out.inputs` holds no examples"), "{e}");
    let e = case(
        "fewer training examples than a batch",
        CLASSIFIER,
        "small.safetensors",
        Some(&[
            Raw("inputs", Dtype::F32, vec![5, 4], f32s(&fx[..20])),
            Raw("targets", Dtype::I64, vec![5], i64s(&fy[..5])),
            Raw("held_out.inputs", Dtype::F32, vec![2, 4], f32s(&fx[20..28])),
            Raw("held_out.targets", Dtype::I64, vec![2], i64s(&fy[5..7])),
        ]),
        None,
        None,
    );
    assert!(
        e.contains("holds 5 examples, fewer than one batch of 8"),
        "{e}"
    );
    let e = case(
        "one held-out tensor",
        CLASSIFIER,
        "half.safetensors",
        Some(&[
            Raw("inputs", Dtype::F32, vec![30, 4], f32s(&fx)),
            Raw("targets", Dtype::I64, vec![30], i64s(&fy)),
            Raw("held_out.inputs", Dtype::F32, vec![2, 4], f32s(&fx[..8])),
        ]),
        None,
        None,
    );
    assert!(
        e.contains("only one of `held_out.inputs` and `held_out.targets`"),
        "{e}"
    );
    let e = case(
        "a stream too short for a window",
        LM,
        "short.bin",
        None,
        Some(u16s(&stream_tokens(50))),
        Some(TokenDtype::U16),
    );
    assert!(
        e.contains("short.bin: 50 tokens: too few for windows of 9 tokens")
            && e.contains("at least 90"),
        "{e}"
    );
    let e = case(
        "a stream of odd bytes",
        LM,
        "odd.bin",
        None,
        Some(vec![1, 0, 2]),
        Some(TokenDtype::U16),
    );
    assert!(
        e.contains("odd.bin: 3 bytes, not a whole number of u16 tokens"),
        "{e}"
    );
    let e = case(
        "a stream for a classifier",
        CLASSIFIER,
        "cls.bin",
        None,
        Some(u16s(&stream_tokens(500))),
        Some(TokenDtype::U16),
    );
    assert!(e.contains("a token stream trains a language model"), "{e}");
    let e = case(
        "a stream with targets",
        LM,
        "stream-targets.safetensors",
        Some(&[
            Raw("tokens", Dtype::U16, vec![500], u16s(&stream_tokens(500))),
            Raw("targets", Dtype::U16, vec![500], u16s(&stream_tokens(500))),
        ]),
        None,
        None,
    );
    assert!(e.contains("a 1-D `tokens` tensor is a token stream"), "{e}");
    let e = case(
        "a flat file without --dtype",
        LM,
        "nodtype.bin",
        None,
        Some(u16s(&stream_tokens(500))),
        None,
    );
    assert!(e.contains("pass --dtype u16 or --dtype u32"), "{e}");
    let e = case(
        "--dtype with a safetensors file",
        LM,
        "dtype.safetensors",
        Some(&[Raw(
            "tokens",
            Dtype::U16,
            vec![500],
            u16s(&stream_tokens(500)),
        )]),
        None,
        Some(TokenDtype::U16),
    );
    assert!(e.contains("drop --dtype"), "{e}");
    let e = case(
        "not a safetensors file",
        LM,
        "junk.safetensors",
        None,
        Some(b"hello, world".to_vec()),
        None,
    );
    assert!(
        e.contains("junk.safetensors: not a valid safetensors file"),
        "{e}"
    );
    let e = case(
        "an empty file",
        LM,
        "empty.bin",
        None,
        Some(vec![]),
        Some(TokenDtype::U16),
    );
    assert!(e.contains("is empty"), "{e}");
    insta::assert_snapshot!(report);
}

#[test]
fn a_bad_data_file_exits_with_an_error_and_a_hint() {
    let d = tmp("cli");
    let m = write_model(&d, LM);
    let f = d.join("bad.bin");
    let mut tokens = stream_tokens(1000);
    tokens[99] = 300;
    std::fs::write(&f, u16s(&tokens)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args([
            "train",
            m.to_str().unwrap(),
            "--data",
            f.to_str().unwrap(),
            "--dtype",
            "u16",
            "--quiet",
        ])
        .arg("--out")
        .arg(d.join("run"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("token 300 at index 99 is outside the vocabulary of 16"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!d.join("run/log.jsonl").exists());
}

/// A tiny image classifier trained from an `images`/`labels` file of drawn shapes.
#[test]
fn image_data_sets_train_an_image_model() {
    use lamina::train::tasks::{draw_shape, rng_for};
    let d = tmp("images");
    let m = write_model(
        &d,
        "input image(batch = 16, channels = 1, height = 8, width = 8)
embed(dim = 16, patch = 2)
block layer {
    attn = attention(heads = 2)
    ffn  = ffn(hidden = 32)
}
stack layer * 1
head classifier(classes = 3)
train {
    steps      = 400
    optimizer  = adamw(lr = 3e-3)
    eval_every = 100
}
",
    );
    let n = 400;
    let mut rng = rng_for(1, 99, 0);
    let (mut x, mut y) = (vec![], vec![]);
    for k in 0..n {
        let class = k % 3;
        x.extend(
            draw_shape(&mut rng, class, 1, 8, 8)
                .iter()
                .map(|&v| v as f32),
        );
        y.push(class as u64);
    }
    let data = d.join("shapes.safetensors");
    write_tensors(
        &data,
        &[
            Raw("images", Dtype::F32, vec![n, 1, 8, 8], f32s(&x)),
            Raw("labels", Dtype::I64, vec![n], i64s(&y)),
        ],
    );
    let opts = TrainOptions {
        out: Some(d.join("run")),
        quiet: true,
        data: Some(data),
        ..Default::default()
    };
    let s = train::train(&m, &opts).unwrap();
    assert_eq!(s.task, "data");
    let acc = s.evals.last().unwrap().1.accuracy.unwrap();
    assert!(acc > 0.5, "held-out accuracy {acc} (chance 1/3)");

    // Without `labels`, the message names what an image model reads.
    let bad = d.join("bad.safetensors");
    write_tensors(
        &bad,
        &[Raw("images", Dtype::F32, vec![n, 1, 8, 8], f32s(&x))],
    );
    let opts = TrainOptions {
        out: Some(d.join("run2")),
        quiet: true,
        data: Some(bad),
        ..Default::default()
    };
    let e = train::train(&m, &opts).unwrap_err().to_string();
    assert!(e.contains("an image model needs `images`"), "{e}");
}
