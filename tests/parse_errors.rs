//! Every `tests/bad/syntax_*.lam` fails to parse; its rendered diagnostics are
//! snapshotted (re-bless with `INSTA_UPDATE=always cargo test --test parse_errors`).

use lamina::diag::render;
use lamina::syntax::parse_bytes;

#[test]
fn syntax_errors() {
    insta::glob!("bad/syntax_*.lam", |path| {
        let bytes = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let diags = match parse_bytes(&bytes) {
            Ok(_) => panic!("{name} parsed without errors"),
            Err(d) => d,
        };
        let src = String::from_utf8_lossy(&bytes);
        let text = render(&diags, &name, &src, false);
        assert!(
            text.starts_with(&format!("{name}:")),
            "first line must carry the location:\n{text}"
        );
        insta::assert_snapshot!(text);
    });
}
