//! The back end's errors are values that say what they concern (an output, a parameter, an
//! input element), with the same text as they always had.

use lamina::driver::compile_source;
use lamina::io::{init_params, random_batch};
use lamina::kernels::{build_program, BuildOptions, KernelError};
use lamina::runtime::{stage_text, Executable, RuntimeError};
use lamina::tensor::Tensor;

const TINY: &str = "
model tiny
d = 8
layers = 1
vocab = 5
length = 4
batch = 2
input tokens(batch = batch, length = length, vocab = vocab)
embed(dim = d)
block layer {
    ffn = ffn(hidden = d)
}
stack layer * layers
";

fn joint() -> lamina::ir::Graph {
    compile_source(TINY, "tiny.lam", &[])
        .unwrap_or_else(|e| panic!("{}", e.render(false)))
        .joint()
        .unwrap()
}

#[test]
fn an_unknown_output_is_named() {
    let opts = BuildOptions {
        outputs: Some(vec!["loss".into(), "nope".into()]),
        ..Default::default()
    };
    let e = build_program(&joint(), &opts).unwrap_err();
    assert_eq!(e, KernelError::NoOutput("nope".into()));
    assert_eq!(e.to_string(), "no output nope");
}

#[test]
fn bad_parameters_and_inputs_are_named() {
    let g = joint();
    let mut exe = Executable::new(&g, &BuildOptions::default()).unwrap();
    let params = init_params(&g, 0).unwrap();
    let e = exe.set_params(&g, &params[1..]).unwrap_err();
    assert_eq!(
        e,
        RuntimeError::ParamCount {
            expected: params.len(),
            got: params.len() - 1
        }
    );
    exe.set_params(&g, &params).unwrap();
    let e = exe.set_param(params.len(), &params[0]).unwrap_err();
    assert_eq!(e.to_string(), format!("no parameter #{}", params.len()));

    let mut batch = random_batch(&g, 0).unwrap();
    let e = exe.set_inputs(&g, &batch[..1]).unwrap_err();
    assert_eq!(e.to_string(), "tiny takes 2 input(s), got 1");
    // A token id beyond the vocabulary.
    let tokens = &mut batch[0];
    tokens.data[3] = 5.0;
    let e = exe.set_inputs(&g, &batch).unwrap_err();
    match &e {
        RuntimeError::IndexOutOfRange {
            name,
            element,
            bound,
            ..
        } => assert_eq!((name.as_str(), *element, *bound), ("tokens", 3, 5)),
        e => panic!("{e:?}"),
    }
    assert_eq!(e.to_string(), "input tokens: element 3 is 5, outside 0..5");
    batch[0].data[3] = 0.5;
    let e = exe.set_inputs(&g, &batch).unwrap_err();
    assert_eq!(e.to_string(), "input tokens is i32 but element 3 is 0.5");
    let wrong = Tensor::f32(vec![3], vec![0.0; 3]);
    let e = exe.set_inputs(&g, &[wrong, batch[1].clone()]).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::InputType { name, .. } if name == "tokens"),
        "{e:?}"
    );
}

#[test]
fn an_unknown_stage_is_named() {
    let e = stage_text(&joint(), "asm", &Default::default()).unwrap_err();
    assert_eq!(e, RuntimeError::UnknownStage("asm".into()));
    assert_eq!(
        e.to_string(),
        "unknown back-end stage asm (kernels, plan, clif)"
    );
    // Callers that report text keep using `?` into `String`.
    let text: Result<String, String> = (|| Ok(stage_text(&joint(), "asm", &Default::default())?))();
    assert_eq!(
        text.unwrap_err(),
        "unknown back-end stage asm (kernels, plan, clif)"
    );
}
