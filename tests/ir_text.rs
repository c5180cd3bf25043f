//! The IR's text and JSON forms: round trips over graphs that use every op, attribute form,
//! init, phase and name shape; a golden text; parse errors; fuzzing that parse never panics.

use lamina::ir::ops::MaskFill;
use lamina::ir::text::{from_json, parse, print, to_json};
use lamina::ir::{BinaryOp, UnaryOp, ViewOp};
use lamina::ir::{Graph, GraphBuilder, Init, Node, Op, Phase, Type, ValueId};
use lamina::ir::{F64, SINUSOIDAL_BASE};
use proptest::prelude::*;

/// Text and JSON round trips, exact.
fn assert_round_trips(g: &Graph) {
    g.verify().expect("test graph is valid");
    let text = print(g);
    let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, g, "text round trip\n{text}");
    assert_eq!(print(&back), text);
    let json = to_json(g);
    let back = from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert_eq!(&back, g, "JSON round trip\n{json}");
    assert_eq!(to_json(&back), json);
}

/// Every op, every attribute form, every init, frozen params, scopes and both phases.
fn every_op_graph() -> Graph {
    let mut b = GraphBuilder::new("every_op");
    let tokens = b.input("tokens", Type::i32([2, 4]));
    let targets = b.input("targets", Type::i32([2, 4]));
    b.set_scope("embed");
    let embed = b
        .param("embed.weight", vec![8, 6], Init::Normal { std: 0.02 }, true)
        .unwrap();
    let x = b.push(Op::Gather, &[embed, tokens]).unwrap();
    let pos = b
        .push(
            Op::Sinusoidal {
                len: 4,
                dim: 6,
                base: F64(SINUSOIDAL_BASE),
            },
            &[],
        )
        .unwrap();
    let pos = b.broadcast(pos, vec![2, 4, 6]).unwrap();
    let x = b.add(x, pos).unwrap();

    b.set_scope("blocks.0.ffn");
    let bound = 1.0 / 6f64.sqrt();
    let w = b
        .param(
            "blocks.0.ffn.w1.weight",
            vec![6, 6],
            Init::Uniform { bound },
            true,
        )
        .unwrap();
    let lift = b
        .param(
            "lift.weight",
            vec![6, 6],
            Init::Normal { std: 0.044 },
            false,
        )
        .unwrap();
    let gain = b.param("norm.weight", vec![6], Init::Ones, true).unwrap();
    let bias = b.param("norm.bias", vec![6], Init::Zeros, true).unwrap();
    let alpha = b.param("alpha", vec![], Init::Const(0.5), true).unwrap();
    let mut u = x;
    for op in [
        Op::Unary(UnaryOp::Neg),
        Op::Unary(UnaryOp::Exp),
        Op::Unary(UnaryOp::Log),
        Op::Unary(UnaryOp::Sqrt),
        Op::Unary(UnaryOp::Rsqrt),
        Op::Unary(UnaryOp::Recip),
        Op::Unary(UnaryOp::Tanh),
        Op::Unary(UnaryOp::Sigmoid),
        Op::Unary(UnaryOp::Relu),
        Op::Unary(UnaryOp::Gelu),
        Op::Unary(UnaryOp::GeluTanh),
        Op::Unary(UnaryOp::Silu),
        Op::Unary(UnaryOp::StopGradient),
        Op::scale(0.5),
        Op::scale(-0.1 - 0.2),
        Op::add_scalar(1e-5),
        Op::add_scalar(-0.0),
    ] {
        u = b.unary(op, u).unwrap();
    }
    for op in [
        Op::Binary(BinaryOp::Add),
        Op::Binary(BinaryOp::Sub),
        Op::Binary(BinaryOp::Mul),
        Op::Binary(BinaryOp::Div),
        Op::Binary(BinaryOp::ReluGrad),
        Op::Binary(BinaryOp::GeluGrad),
        Op::Binary(BinaryOp::GeluTanhGrad),
        Op::Binary(BinaryOp::SiluGrad),
    ] {
        u = b.push(op, &[x, u]).unwrap();
    }
    let g6 = b.broadcast(gain, vec![2, 4, 6]).unwrap();
    let b6 = b.broadcast(bias, vec![2, 4, 6]).unwrap();
    let a6 = b.broadcast(alpha, vec![2, 4, 6]).unwrap();
    let u = b.mul(u, g6).unwrap();
    let u = b.add(u, b6).unwrap();
    let u = b.mul(u, a6).unwrap();
    let s = b.reduce_sum(u, vec![2], true).unwrap();
    let s = b.broadcast(s, vec![2, 4, 6]).unwrap();
    let u = b.sub(u, s).unwrap();
    let total = b.reduce_sum(u, vec![0, 1], false).unwrap();
    let _ = b.reduce_sum(total, vec![], false).unwrap();

    b.set_scope("blocks.0.attn");
    let m1 = b.matmul(u, w, false, false).unwrap();
    let m2 = b.matmul(m1, lift, false, true).unwrap();
    let m3 = b.matmul(m2, u, true, false).unwrap(); // [2, 6, 6]
    let ut = b.transpose(u, vec![0, 2, 1]).unwrap(); // [2, 6, 4]
    let m4 = b.matmul(u, ut, true, true).unwrap(); // [2, 6, 6]
    let m = b.add(m3, m4).unwrap();
    let m = b
        .push(
            Op::CausalMask {
                fill: MaskFill::NegInf,
            },
            &[m],
        )
        .unwrap();
    let p = b.push(Op::Softmax, &[m]).unwrap();
    let _ = b
        .push(
            Op::CausalMask {
                fill: MaskFill::Zero,
            },
            &[p],
        )
        .unwrap();
    let lo = b
        .push(
            Op::View(ViewOp::Slice {
                axis: 2,
                start: 0,
                end: 3,
            }),
            &[m2],
        )
        .unwrap();
    let hi = b
        .push(
            Op::View(ViewOp::Slice {
                axis: 2,
                start: 3,
                end: 6,
            }),
            &[m2],
        )
        .unwrap();
    let cat = b.push(Op::Concat { axis: 2 }, &[hi, lo]).unwrap();
    let one = b.push(Op::Concat { axis: 0 }, &[cat]).unwrap();
    let flat = b.reshape(one, vec![8, 6]).unwrap();
    let ids = b.reshape(tokens, vec![8]).unwrap();

    b.set_scope("");
    let logits = b.matmul(flat, embed, false, true).unwrap(); // [8, 8]
    let lp = b.push(Op::LogSoftmax, &[logits]).unwrap();
    let tf = b.reshape(targets, vec![8]).unwrap();
    let oh = b.push(Op::OneHot { classes: 8 }, &[tf]).unwrap();
    let top = b.push(Op::TopKMask { k: 3 }, &[logits]).unwrap();
    let oh = b.mul(oh, top).unwrap();
    let nll = b.mul(lp, oh).unwrap();
    let sum = b.reduce_sum(nll, vec![0, 1], false).unwrap();
    let loss = b.scale(sum, -1.0 / 8.0).unwrap();
    b.output("loss", loss);
    b.output("logits", logits);

    b.set_phase(Phase::Backward);
    b.set_scope("blocks.0.attn");
    let seed = b.full(1.0, vec![]).unwrap();
    let dl = b.full(-0.125, vec![8, 8]).unwrap();
    let _ = b.full(f64::MIN_POSITIVE, vec![2, 3]).unwrap();
    let _ = b.full(1e300, vec![1]).unwrap();
    let dflat = b.matmul(dl, embed, false, false).unwrap(); // [8, 6]
    let dembed = b.push(Op::ScatterAdd { rows: 8 }, &[ids, dflat]).unwrap();
    let ds = b.broadcast(seed, vec![8, 6]).unwrap();
    let dembed = b.mul(dembed, ds).unwrap();
    b.output("grad.embed.weight", dembed);
    b.graph.saved = vec![logits, flat, ids];
    b.finish()
}

/// Phases that interleave, names that need quoting, and leaves whose names are not unique.
fn awkward_graph() -> Graph {
    let mut b = GraphBuilder::new("");
    let x = b.input("the input", Type::f32([3]));
    let _ = b.input("the input", Type::f32([2]));
    let y = b.input("0", Type::f32([3]));
    b.set_scope("weird \"scope\"\n\t\u{1}é @x");
    let p = b.param("a-b", vec![3], Init::Const(-2.5), false).unwrap();
    b.set_phase(Phase::Backward);
    let z = b.add(x, p).unwrap();
    b.set_phase(Phase::Forward);
    b.set_scope("blocks.1");
    let z = b.mul(z, y).unwrap();
    b.set_phase(Phase::Backward);
    let z = b.unary(Op::Unary(UnaryOp::Exp), z).unwrap();
    b.output("out put", z);
    b.output("out put", x);
    let mut g = b.finish();
    // A second parameter with the same name (the builder would share the node instead).
    g.params.push(g.params[0].clone());
    g.nodes.push(Node {
        op: Op::Param { index: 1 },
        args: vec![],
        ty: Type::f32([3]),
        scope: String::new(),
        phase: Phase::Forward,
    });
    g.nodes.push(Node {
        op: Op::Input { index: 1 },
        args: vec![],
        ty: Type::f32([2]),
        scope: String::new(),
        phase: Phase::Forward,
    });
    g.saved = vec![ValueId(0), ValueId(0)];
    g
}

/// A small pre-LN-like block, the golden text.
fn small_graph() -> Graph {
    let mut b = GraphBuilder::new("tiny");
    let tokens = b.input("tokens", Type::i32([2, 4]));
    b.set_scope("embed");
    let e = b
        .param(
            "embed.weight",
            vec![16, 8],
            Init::Normal { std: 0.02 },
            true,
        )
        .unwrap();
    let x = b.push(Op::Gather, &[e, tokens]).unwrap();
    b.set_scope("blocks.0.norm");
    let s = b.reduce_sum(x, vec![2], true).unwrap();
    let mean = b.scale(s, 0.125).unwrap();
    let mean = b.broadcast(mean, vec![2, 4, 8]).unwrap();
    let xc = b.sub(x, mean).unwrap();
    b.set_scope("blocks.0.ffn");
    let bound = 1.0 / 8f64.sqrt();
    let w = b.param(
        "blocks.0.ffn.lift.weight",
        vec![8, 8],
        Init::Uniform { bound },
        false,
    );
    let h = b.linear(xc, w.unwrap(), None).unwrap();
    let h = b.unary(Op::Unary(UnaryOp::Gelu), h).unwrap();
    let y = b.add(x, h).unwrap();
    b.set_scope("");
    let t = b.reduce_sum(y, vec![0, 1, 2], false).unwrap();
    b.output("loss", t);
    b.set_phase(Phase::Backward);
    let seed = b.full(1.0, vec![]).unwrap();
    let dy = b.broadcast(seed, vec![2, 4, 8]).unwrap();
    b.set_scope("blocks.0.ffn");
    let dh = b.push(Op::Binary(BinaryOp::GeluGrad), &[h, dy]).unwrap();
    b.output("grad.h", dh);
    b.graph.saved = vec![h];
    b.finish()
}

fn all_ops_used(graphs: &[Graph]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = graphs
        .iter()
        .flat_map(|g| g.nodes.iter().map(|n| n.op.name()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_op_is_covered() {
    let used = all_ops_used(&[every_op_graph(), awkward_graph()]);
    let mut expected: Vec<&str> = Op::every_kind().iter().map(|op| op.name()).collect();
    expected.sort();
    assert_eq!(used, expected);
}

#[test]
fn every_op_graph_round_trips() {
    let g = every_op_graph();
    if std::env::var_os("SHOW_IR").is_some() {
        println!("{}", print(&g));
        println!("{}", print(&awkward_graph()));
    }
    assert_round_trips(&g);
}

#[test]
fn awkward_graph_round_trips() {
    let g = awkward_graph();
    let text = print(&g);
    assert!(
        text.contains("\nbackward:\n") && text.contains("\nforward:\n"),
        "{text}"
    );
    assert!(
        text.contains("param #0") && text.contains("param #1"),
        "{text}"
    );
    assert!(text.contains("graph \"\" {"), "{text}");
    assert_round_trips(&g);
}

#[test]
fn small_graph_golden() {
    let g = small_graph();
    assert_round_trips(&g);
    insta::assert_snapshot!("small_graph", print(&g));
}

#[test]
fn empty_graph_round_trips() {
    assert_round_trips(&Graph::default());
    assert_eq!(print(&Graph::default()), "graph \"\" {\n}\n");
}

/// Infinite and NaN attributes print and parse; JSON carries them as strings.
#[test]
fn non_finite_floats() {
    let mut b = GraphBuilder::new("nf");
    let x = b
        .param("p", vec![2], Init::Normal { std: f64::INFINITY }, true)
        .unwrap();
    let _ = b.param("q", vec![2], Init::Const(f64::NAN), true).unwrap();
    let _ = b
        .param(
            "r",
            vec![2],
            Init::Uniform {
                bound: f64::NEG_INFINITY,
            },
            true,
        )
        .unwrap();
    let _ = b.full(f64::NEG_INFINITY, vec![2, 2]).unwrap();
    let _ = b.full(f64::NAN, vec![2]).unwrap();
    let y = b.scale(x, f64::INFINITY).unwrap();
    let y = b.add_scalar(y, f64::NAN).unwrap();
    b.output("y", y);
    let g = b.finish();

    let text = print(&g);
    assert!(text.contains("full[-inf, shape=[2, 2]]") && text.contains("add_scalar[NaN]"));
    let back = parse(&text).unwrap();
    // NaN != NaN, so compare through the text.
    assert_eq!(print(&back), text);

    let json = to_json(&g);
    assert!(json.contains("\"-inf\"") && json.contains("\"NaN\"") && !json.contains("null"));
    let back = from_json(&json).unwrap();
    assert_eq!(print(&back), text);
    assert_eq!(to_json(&back), json);
}

/// Floats that need all 17 digits round trip exactly through both forms.
#[test]
fn floats_are_exact() {
    let vals = [
        0.1 + 0.2,
        1.0 / 3.0,
        0.044194173824159216,
        5e-324,
        f64::MAX,
        1e-7,
        123456789.0,
    ];
    let mut b = GraphBuilder::new("f");
    let mut x = b.full(0.0, vec![1]).unwrap();
    for &v in &vals {
        x = b.scale(x, v).unwrap();
        let _ = b
            .param(format!("p{}", x.0), vec![1], Init::Normal { std: v }, true)
            .unwrap();
    }
    b.output("x", x);
    assert_round_trips(&b.finish());
}

fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(g) => panic!("parsed:\n{}", print(&g)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_line_and_column() {
    let good = print(&small_graph());
    // An unknown op on the gather line.
    let bad = good.replace("gather", "gathr");
    let line = bad.lines().position(|l| l.contains("gathr")).unwrap() + 1;
    assert_eq!(parse_err(&bad), format!("{line}:8: unknown op `gathr`"));

    let cases: &[(&str, &str)] = &[
        ("", "1:1: expected `graph`, found end of input"),
        (
            "graph g {\n  %1 = neg %0 : f32[]\n}",
            "2:3: expected %0 here: values are numbered in order",
        ),
        (
            "graph g {\n  %0 = full[1.0, shape=[]] : f32[]\n  output y = %1\n}",
            "3:14: %1 is not defined",
        ),
        (
            "graph g {\n  %0 = full[1.0] : f32[]\n}",
            "2:8: full needs `shape=`",
        ),
        (
            "graph g {\n  %0 = full[1.0, shape=[], x] : f32[]\n}",
            "2:28: unexpected attribute for full",
        ),
        (
            "graph g {\n  %0 = full[x, shape=[]] : f32[]\n}",
            "2:13: expected a number, found `x`",
        ),
        (
            "graph g {\n  %0 = input x : f32[]\n}",
            "2:14: unknown input `x`",
        ),
        (
            "graph g {\n  input x: f32[2]\n  %0 = input x : f32[3]\n}",
            "3:3: %0: input derives type f32[2] but the node says f32[3]",
        ),
        (
            "graph g {\n  param w: i32[2] init zeros\n}",
            "2:12: parameters are f32",
        ),
        (
            "graph g {\n  param w: f32[2] init gauss(1)\n}",
            "2:24: unknown init `gauss`",
        ),
        (
            "graph g {\n  %0 = full[0, shape=[2]] : f32[2]\n  %1 = neg %0, %0 : f32[2]\n}",
            "3:3: %1: neg takes 1 argument(s), got 2",
        ),
        (
            "graph g {\n  %0 = full[0, shape=[2]] : f32[2]\n  %1 = neg %1 : f32[2]\n}",
            "3:12: %1 is used before it is defined",
        ),
        (
            "graph g {\n  %0 = full[0, shape=[]] : f32[]\n",
            "3:1: expected a declaration, a node or `}`, found end of input",
        ),
        ("graph g {\n}\nx", "3:1: unexpected `x` after the graph"),
        (
            "graph g {\n  %0 = causal_mask[1] : f32[]\n}",
            "2:20: causal_mask fill must be -inf or 0, found `1`",
        ),
        (
            "graph g {\n  %0 = full[0, shape=[1048576, 1048576, 2]] : f32[]\n}",
            "2:8: shape [1048576, 1048576, 2] has more than 2^40 elements",
        ),
        (
            "graph g {\n  %0 = full[0, shape=[]] : f32[99999999999999999999999]\n}",
            "2:32: expected a dimension, found `99999999999999999999999`",
        ),
        (
            "graph g {\n  %99999999999 = neg : f32[]\n}",
            "2:4: bad value number `99999999999`",
        ),
        ("graph \"g {\n}", "1:7: unterminated string"),
        (
            "graph g {\n  %0 = full[0, shape=[3]] : f32[3]\n  %1 = topk_mask[k=0] %0 : f32[3]\n}",
            "3:3: %1: topk_mask needs 1 <= k <= 3 (the last axis of f32[3]), got k=0",
        ),
        (
            "graph g {\n  %0 = full[0, shape=[2, 3]] : f32[2, 3]\n  %1 = topk_mask[k=4] %0 : f32[2, 3]\n}",
            "3:3: %1: topk_mask needs 1 <= k <= 3 (the last axis of f32[2, 3]), got k=4",
        ),
        (
            "graph g {\n  %0 = full[0, shape=[]] : f32[]\n  %1 = topk_mask[k=1] %0 : f32[]\n}",
            "3:3: %1: topk_mask needs rank >= 1",
        ),
        (
            "graph g {\n  %0 = full[0, shape=[3]] : f32[3]\n  %1 = topk_mask[classes=1] %0 : f32[3]\n}",
            "3:8: topk_mask needs `k=`",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&parse_err(text), want, "{text}");
    }
}

#[test]
fn ambiguous_names_need_an_index() {
    let text = "graph g {\n  input x: f32[1]\n  input x: f32[2]\n  %0 = input x : f32[1]\n}\n";
    assert_eq!(
        parse_err(text),
        "4:14: input name `x` is ambiguous: use #index"
    );
    let text = "graph g {\n  input x: f32[1]\n  %0 = input #1 : f32[1]\n}\n";
    assert_eq!(parse_err(text), "3:14: there is no input #1");
}

#[test]
fn lenient_layout_parses() {
    // Comments, blank lines, declarations after use, attribute order, CRLF.
    let text = "; a comment\r\n\r\ngraph g {   ; trailing\r\n  %0 = param w : f32[3, 3]\r\n\
                param w: f32[3, 3] init ones\r\n  %1 = matmul[tb, ta] %0, %0 : f32[3, 3] @s\r\n\
                output y = %1\r\n}\r\n";
    let g = parse(text).unwrap();
    assert_eq!(g.nodes[1].op, Op::MatMul { ta: true, tb: true });
    assert_eq!(g.nodes[1].scope, "s");
    assert_round_trips(&g);
}

#[test]
fn json_errors() {
    assert!(from_json("{")
        .unwrap_err()
        .to_string()
        .starts_with("invalid JSON"));
    assert!(from_json("{}")
        .unwrap_err()
        .to_string()
        .starts_with("invalid graph JSON"));
    // Valid JSON, invalid graph: an argument defined after use.
    let mut g = small_graph();
    g.nodes[2].args = vec![ValueId(5), ValueId(0)];
    let e = from_json(&to_json(&g)).unwrap_err().to_string();
    assert!(e.starts_with("%2: argument %5"), "{e}");
    // Shapes that would overflow shape arithmetic are rejected, not a panic.
    let mut g = small_graph();
    g.nodes[2].ty.shape = vec![usize::MAX, usize::MAX];
    let e = from_json(&to_json(&g)).unwrap_err().to_string();
    assert!(e.contains("more than 2^40"), "{e}");
    let mut g = small_graph();
    g.nodes[2].op = Op::View(ViewOp::Reshape {
        shape: vec![usize::MAX, 3],
    });
    assert!(from_json(&to_json(&g)).is_err());
}

fn printed_samples() -> Vec<String> {
    vec![
        print(&small_graph()),
        print(&awkward_graph()),
        print(&every_op_graph()),
    ]
}

/// A mutated text either fails cleanly or parses to a graph that prints and parses stably.
fn check_no_panic(text: &str) {
    if let Ok(g) = parse(text) {
        let again = print(&g);
        let g2 = parse(&again).unwrap_or_else(|e| panic!("{e}\n{again}"));
        assert_eq!(print(&g2), again);
    }
}

const TOKENS: &[&str] = &[
    "%",
    "%0",
    "%3",
    "[",
    "]",
    "(",
    ")",
    ",",
    ":",
    "=",
    "@",
    "#",
    "#0",
    "..",
    "\"",
    "\\",
    "\n",
    " ",
    "-inf",
    "NaN",
    "1e400",
    "0",
    "18446744073709551616",
    "f32",
    "i32",
    "[]",
    "input",
    "param",
    "backward:",
    "forward:",
    "saved",
    "output",
    "}",
    "{",
    "concat[axis=0]",
    "é",
    ";",
];

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_no_panic(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_token_soup_never_panics(
        parts in proptest::collection::vec(proptest::sample::select(TOKENS), 0..60)
    ) {
        check_no_panic(&format!("graph g {{\n{}\n}}", parts.concat()));
    }

    #[test]
    fn mutated_texts_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec(
            (any::<proptest::sample::Index>(), 0usize..4, proptest::sample::select(TOKENS)),
            1..4,
        ),
    ) {
        let mut text: Vec<char> = printed_samples()[which].chars().collect();
        for (at, len, tok) in edits {
            let i = at.index(text.len() + 1);
            let end = (i + len).min(text.len());
            text.splice(i..end, tok.chars());
        }
        check_no_panic(&text.into_iter().collect::<String>());
    }

    #[test]
    fn mutated_json_never_panics(
        at in any::<proptest::sample::Index>(),
        len in 0usize..8,
        tok in proptest::sample::select(&["0", "-1", "1e999", "\"NaN\"", "[]", "{}", "null", "18446744073709551615"][..]),
    ) {
        let json = to_json(&small_graph());
        let mut chars: Vec<char> = json.chars().collect();
        let i = at.index(chars.len() + 1);
        let end = (i + len).min(chars.len());
        chars.splice(i..end, tok.chars());
        if let Ok(g) = from_json(&chars.into_iter().collect::<String>()) {
            prop_assert_eq!(from_json(&to_json(&g)).map(|h| print(&h)), Ok(print(&g)));
        }
    }
}
