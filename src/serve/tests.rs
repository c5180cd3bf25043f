use super::*;
use std::path::PathBuf;

const MODEL: &str = "input tokens(batch = 2, length = 4, vocab = 8)\nembed(dim = 8)\nblock l {\n  a = attention(heads = 2)\n  f = ffn(hidden = 16)\n}\nstack l * 2\n";

fn root(name: &str) -> (PathBuf, Root) {
    let dir = std::env::temp_dir().join(format!("lamina-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(dir.join("models/tiny.lam"), MODEL).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a model").unwrap();
    let r = Root::new(&dir).unwrap();
    (dir, r)
}

fn get(root: &Root, url: &str) -> Reply {
    handle(
        root,
        &Request {
            method: Method::Get,
            url: url.into(),
            body: vec![],
        },
    )
}

fn post(root: &Root, url: &str, body: &str) -> Reply {
    handle(
        root,
        &Request {
            method: Method::Post,
            url: url.into(),
            body: body.into(),
        },
    )
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn lists_and_reads_model_files() {
    let (_d, r) = root("list");
    let files = get(&r, "/api/files");
    assert_eq!(json(&files), serde_json::json!(["models/tiny.lam"]));
    let file = get(&r, "/api/file?path=models%2Ftiny.lam");
    assert_eq!((file.status, file.body.as_slice()), (200, MODEL.as_bytes()));
    assert_eq!(get(&r, "/").status, 200);
}

#[test]
fn refuses_paths_that_leave_the_directory() {
    let (dir, r) = root("paths");
    for url in [
        "/api/file?path=../etc/passwd",
        "/api/file?path=..%2Fetc%2Fpasswd",
        "/api/file?path=models/../../x.lam",
        "/../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/api/file?path=%2Fetc%2Fpasswd",
        "/api/file?path=notes.txt",
        "/api/file?path=bad%zz",
    ] {
        let reply = get(&r, url);
        assert_eq!(
            reply.status,
            400,
            "{url}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let outside = dir.with_extension("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("x.lam"), MODEL).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
    let reply = get(&r, "/api/file?path=out%2Fx.lam");
    assert_eq!(
        reply.status,
        403,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    std::os::unix::fs::symlink(dir.join("models/tiny.lam"), dir.join("link.lam")).unwrap();
    // A link that stays inside is fine.
    assert_eq!(get(&r, "/api/file?path=link.lam").status, 200);
    assert_eq!(get(&r, "/api/file?path=missing.lam").status, 404);
}

#[test]
fn unknown_routes_and_methods_are_4xx() {
    let (_d, r) = root("routes");
    assert_eq!(get(&r, "/favicon.ico").status, 404);
    assert_eq!(post(&r, "/api/files", "").status, 405);
    assert_eq!(get(&r, "/api/check").status, 405);
    assert_eq!(post(&r, "/api/stage?stage=nope", MODEL).status, 400);
    assert_eq!(get(&r, "/api/curve?run=runs%2Fnone").status, 404);
}

#[test]
fn check_locates_errors() {
    let (_d, r) = root("check");
    let ok = json(&post(&r, "/api/check?name=t.lam", MODEL));
    assert_eq!(ok["ok"], true);
    let bad = MODEL.replace("heads = 2", "heads = 3");
    let reply = json(&post(&r, "/api/check?name=t.lam", &bad));
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["diagnostics"][0]["line"], 4);
    assert!(reply["rendered"].as_str().unwrap().contains("t.lam:4:"));
}

#[test]
fn stages_carry_source_lines_and_errors() {
    let (_d, r) = root("stage");
    let reply = json(&post(&r, "/api/stage?stage=ir", MODEL));
    let text = reply["text"].as_str().unwrap();
    let lines = reply["lines"].as_array().unwrap();
    assert_eq!(text.lines().count(), lines.len());
    assert!(lines.iter().any(|l| l == 5));
    let broken = post(&r, "/api/stage?stage=opt", "block {");
    assert_eq!(broken.status, 422);
    let svg = post(&r, "/api/graph", MODEL);
    assert!(svg.body.starts_with(b"<svg"));
    let params = post(&r, "/api/params", MODEL);
    assert!(String::from_utf8_lossy(&params.body).contains("blocks.1.f.w2.weight"));
}

#[test]
fn saves_only_existing_model_files() {
    let (dir, r) = root("save");
    let put = |url: &str, body: &str| {
        handle(
            &r,
            &Request {
                method: Method::Put,
                url: url.into(),
                body: body.into(),
            },
        )
    };
    let edited = MODEL.replace("stack l * 2", "stack l * 3");
    assert_eq!(put("/api/file?path=models/tiny.lam", &edited).status, 200);
    assert_eq!(
        std::fs::read_to_string(dir.join("models/tiny.lam")).unwrap(),
        edited
    );
    assert_eq!(put("/api/file?path=new.lam", MODEL).status, 404);
    assert_eq!(put("/api/file?path=notes.txt", MODEL).status, 400);
    assert!(!dir.join("new.lam").exists());
}

#[test]
fn runs_and_curves() {
    let (dir, r) = root("runs");
    std::fs::create_dir_all(dir.join("runs/a")).unwrap();
    std::fs::write(
        dir.join("runs/a/log.jsonl"),
        "{\"step\":1,\"loss\":2.0}\n{\"step\":2,\"loss\":1.5,\"eval_loss\":1.7}\n",
    )
    .unwrap();
    assert_eq!(json(&get(&r, "/api/runs")), serde_json::json!(["runs/a"]));
    let curve = get(&r, "/api/curve?run=runs%2Fa");
    assert_eq!(curve.status, 200);
    assert!(curve.body.starts_with(b"<svg"));
}
