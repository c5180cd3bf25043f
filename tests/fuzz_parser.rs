//! The parser and the renderer never panic, whatever the input (fixed seeds, so runs are
//! reproducible).

use lamina::diag::{line_col, render, Diagnostic};
use lamina::syntax::ast::Span;
use lamina::syntax::{parse, parse_bytes, print_ast};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

fn config(seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Parses, then prints the AST or renders the diagnostics (with and without colour).
fn check(bytes: &[u8]) {
    let src = String::from_utf8_lossy(bytes);
    match parse_bytes(bytes) {
        Ok(m) => {
            let text = print_ast(&m);
            assert!(text.starts_with("module\n"));
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            let plain = render(&diags, "fuzz.lam", &src, false);
            assert!(plain.starts_with("fuzz.lam:"), "{plain}");
            assert!(
                !plain.contains('\u{1b}'),
                "no colour codes when color is off"
            );
            let _ = render(&diags, "fuzz.lam", &src, true);
        }
    }
}

const TOKENS: &[&str] = &[
    "model",
    "input",
    "embed",
    "norm",
    "skip",
    "block",
    "scheme",
    "stack",
    "shared",
    "order",
    "final_norm",
    "head",
    "loss",
    "true",
    "false",
    "d",
    "ffn",
    "attn",
    "layer",
    "tokens",
    "attention",
    "lie_trotter",
    "strang",
    "pre",
    "rmsnorm",
    "0",
    "1",
    "128",
    "1_000",
    "0.5",
    "1e-5",
    "1e",
    "2.",
    "99999999999999999999999",
    "4d",
    "=",
    "==",
    "*",
    "+",
    "-",
    "/",
    "//",
    "%",
    ",",
    ":",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    " ",
    " ",
    "  ",
    "\t",
    "\n",
    "\n",
    "\r\n",
    "\r",
    "# note\n",
    "#",
    "$",
    "é",
    "\u{2028}",
    "\u{202e}",
    "\u{0}",
    "\u{1b}[31m",
    "\u{feff}",
];

fn token_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..80).prop_map(|t| t.concat())
}

const VALID: &str = "model m\nd = 128\ninput tokens(batch = 2, length = 8, vocab = 16)\n\
embed(dim = d)\nnorm pre layernorm(eps = 1e-5)\nblock layer {\n  attn = attention(heads = 4)\n\
  ffn = ffn(hidden = 4 * d) norm post skip scaled(0.5)\n  scheme [ffn * 0.5, attn, ffn * 1/2]\n}\n\
stack layer * 2 shared order [0, 1]\nfinal_norm layernorm\nhead lm(tied = true)\nloss cross_entropy\n";

proptest! {
    #![proptest_config(config(0x1a3e_a001))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&bytes);
    }
}

proptest! {
    #![proptest_config(config(0x1a3e_a002))]
    #[test]
    fn token_soups_never_panic(src in token_soup()) {
        check(src.as_bytes());
    }
}

proptest! {
    #![proptest_config(config(0x1a3e_a003))]
    #[test]
    fn edited_valid_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, proptest::sample::select(TOKENS)), 1..6)
    ) {
        let mut src = VALID.as_bytes().to_vec();
        for (at, kind, tok) in edits {
            let i = at.index(src.len() + 1);
            match kind {
                0 => { src.splice(i..i, tok.bytes()); }
                1 if i < src.len() => { src.remove(i); }
                _ => { src.truncate(i); }
            }
        }
        check(&src);
    }
}

proptest! {
    #![proptest_config(config(0x1a3e_a004))]
    #[test]
    fn render_accepts_any_span(
        src in token_soup(),
        spans in proptest::collection::vec((0usize..200, 0usize..200), 1..4),
    ) {
        let diags: Vec<Diagnostic> = spans
            .iter()
            .map(|&(a, b)| {
                Diagnostic::new("message\nwith a newline", Span::new(a, b), "label")
                    .with_note(Span::new(b, a), "note")
                    .with_hint("hint")
            })
            .collect();
        let text = render(&diags, "r.lam", &src, false);
        prop_assert!(text.starts_with("r.lam:"));
        for &(a, _) in &spans {
            let (line, col) = line_col(&src, a);
            prop_assert!(line >= 1 && col >= 1);
        }
    }
}

#[test]
fn the_valid_file_parses() {
    assert!(parse(VALID).is_ok());
}

#[test]
fn ten_thousand_nested_brackets_are_an_error_not_a_crash() {
    for (open, close) in [("(", ")"), ("[", "]"), ("{", "}")] {
        for src in [
            open.repeat(10_000),
            format!("d = {}1{}\n", open.repeat(10_000), close.repeat(10_000)),
            format!("block b {}\n", open.repeat(10_000)),
        ] {
            let diags = parse(&src).unwrap_err();
            assert_eq!(diags[0].message, "brackets are nested too deeply");
            assert!(render(&diags, "deep.lam", &src, false).starts_with("deep.lam:1:"));
        }
    }
    let mixed = "([{".repeat(4_000);
    assert!(parse(&mixed).is_err());
}

#[test]
fn nesting_at_the_limit_parses_on_a_small_stack() {
    // Test threads have small stacks; the parser must fit at the deepest nesting allowed.
    let src = format!(
        "d = {}1{}\n",
        "(".repeat(lamina::syntax::MAX_NESTING),
        ")".repeat(lamina::syntax::MAX_NESTING)
    );
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || parse(&src).is_ok())
        .unwrap();
    assert!(handle.join().unwrap());
}
