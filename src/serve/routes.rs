//! Every route of the explorer, as a function from a request to a reply.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /api/files` | the model files under the root (JSON list) |
//! | `GET /api/file?path=P` | a model file's text |
//! | `PUT /api/file?path=P` | save an existing model file (written whole or not at all) |
//! | `POST /api/check?name=N` | diagnostics of the source in the body (JSON) |
//! | `POST /api/stage?stage=S&name=N` | a stage's text and the source line of each line (JSON) |
//! | `POST /api/graph?name=N` | the diagram (SVG) |
//! | `POST /api/params?name=N` | the parameter table (text) |
//! | `GET /api/runs` | the runs under `runs/` with a log (JSON list) |
//! | `GET /api/curve?run=R` | a run's loss curves (SVG) |

use super::paths::Root;
use super::source_map::source_lines;
use crate::diag::line_col;
use crate::driver::{Compiled, Stage};
use crate::front::{compile_source, CompileError};
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    Get,
    Post,
    Put,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// The request target as sent: path and query, percent-encoded.
    pub url: String,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

const JSON: &str = "application/json";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";
const PAGE: &str = include_str!("page.html");

impl Reply {
    fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
        }
    }
    fn json(v: serde_json::Value) -> Reply {
        Reply::ok(JSON, v.to_string())
    }
    /// A refusal: the status and a JSON `{"error": ...}` that says why.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply {
            status,
            content_type: JSON,
            body: json!({ "error": message }).to_string().into(),
        }
    }
}

/// The answer to one request.
pub fn handle(root: &Root, req: &Request) -> Reply {
    let (path, query) = match split(&req.url) {
        Ok(pq) => pq,
        Err(msg) => return Reply::error(400, &msg),
    };
    let arg = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let result = match (req.method, path.as_str()) {
        (Method::Get, "/" | "/index.html") => Ok(Reply::ok("text/html; charset=utf-8", PAGE)),
        (Method::Get, "/api/files") => Ok(Reply::json(json!(root.models()))),
        (Method::Get, "/api/file") => read_file(root, arg("path")),
        (Method::Put, "/api/file") => save_file(root, arg("path"), &req.body),
        (Method::Post, "/api/check") => source(req).map(|s| check(&s, name(arg("name")))),
        (Method::Post, "/api/stage") => {
            source(req).and_then(|s| stage(&s, name(arg("name")), arg("stage")))
        }
        (Method::Post, "/api/graph") => source(req).and_then(|s| {
            let c = compiled(&s, name(arg("name")))?;
            let o = c.outline().map_err(|e| unprocessable(&e))?;
            Ok(Reply::ok(SVG, crate::diagram::svg(&o, &c.forward)))
        }),
        (Method::Post, "/api/params") => source(req).and_then(|s| {
            let c = compiled(&s, name(arg("name")))?;
            Ok(Reply::ok(TEXT, crate::analysis::params_table(&c.forward)))
        }),
        (Method::Get, "/api/runs") => Ok(Reply::json(json!(root.runs()))),
        (Method::Get, "/api/curve") => curve(root, arg("run")),
        (_, "/" | "/index.html" | "/api/files" | "/api/file" | "/api/check" | "/api/stage")
        | (_, "/api/graph" | "/api/params" | "/api/runs" | "/api/curve") => Err(Reply::error(
            405,
            &format!("{path} does not answer this method"),
        )),
        _ => Err(Reply::error(404, &format!("no page or API route {path}"))),
    };
    result.unwrap_or_else(|r| r)
}

/// The decoded path and query pairs of a request target; `..` anywhere is refused.
fn split(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = decode(path)?;
    if path.split('/').any(|seg| seg == "..") {
        return Err("paths may not contain `..`".to_string());
    }
    let mut pairs = vec![];
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        pairs.push((decode(k)?, decode(v)?));
    }
    Ok((path, pairs))
}

/// Percent-decoding (and `+` as a space) into UTF-8.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or("a truncated %-escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "a bad %-escape")?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the request target is not UTF-8".to_string())
}

/// The file name diagnostics show: the file being edited, or a stand-in.
fn name(n: Option<&str>) -> &str {
    n.filter(|n| !n.is_empty()).unwrap_or("model.lam")
}

fn source(req: &Request) -> Result<String, Reply> {
    String::from_utf8(req.body.clone()).map_err(|_| Reply::error(400, "the body is not UTF-8"))
}

fn unprocessable(e: &CompileError) -> Reply {
    Reply {
        status: 422,
        content_type: JSON,
        body: json!({ "error": e.render(false) }).to_string().into(),
    }
}

fn compiled(source: &str, name: &str) -> Result<Compiled, Reply> {
    compile_source(source, name, &[]).map_err(|e| unprocessable(&e))
}

fn read_file(root: &Root, path: Option<&str>) -> Result<Reply, Reply> {
    let rel = path.ok_or_else(|| Reply::error(400, "give the file as ?path=..."))?;
    let file = root
        .file(rel, "lam")
        .map_err(|(s, m)| Reply::error(s, &m))?;
    let limit = crate::syntax::MAX_INPUT_BYTES as u64;
    let bytes =
        crate::io::read_file(&file, Some(limit)).map_err(|e| Reply::error(422, &e.to_string()))?;
    Ok(Reply::ok(TEXT, bytes))
}

fn save_file(root: &Root, path: Option<&str>, body: &[u8]) -> Result<Reply, Reply> {
    let rel = path.ok_or_else(|| Reply::error(400, "give the file as ?path=..."))?;
    let file = root
        .file(rel, "lam")
        .map_err(|(s, m)| Reply::error(s, &m))?;
    if std::str::from_utf8(body).is_err() {
        return Err(Reply::error(400, "the body is not UTF-8"));
    }
    crate::io::write_atomic(&file, body).map_err(|e| Reply::error(500, &e.to_string()))?;
    Ok(Reply::json(json!({ "saved": rel })))
}

/// `check`: the diagnostics, each with its 1-based line and column range.
fn check(source: &str, name: &str) -> Reply {
    match compile_source(source, name, &[]) {
        Ok(c) => Reply::json(json!({
            "ok": true,
            "params": c.forward.param_count(),
            "model": c.forward.name,
        })),
        Err(e) => {
            let diagnostics: Vec<_> = e
                .diagnostics
                .iter()
                .map(|d| {
                    let (line, col) = match d.span.is_none() {
                        true => (0, 0),
                        false => line_col(source, d.span.start),
                    };
                    let (end_line, end_col) = match d.span.is_none() {
                        true => (0, 0),
                        false => line_col(source, d.span.end),
                    };
                    json!({
                        "line": line, "col": col, "end_line": end_line, "end_col": end_col,
                        "message": d.message, "label": d.label, "hint": d.hint,
                    })
                })
                .collect();
            Reply::json(json!({
                "ok": false,
                "diagnostics": diagnostics,
                "rendered": e.render(false),
            }))
        }
    }
}

fn stage(source: &str, name: &str, stage: Option<&str>) -> Result<Reply, Reply> {
    let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
    let stage: Stage = stage
        .unwrap_or("ir")
        .parse()
        .map_err(|_| Reply::error(400, &format!("the stages are {}", names.join(", "))))?;
    let c = compiled(source, name)?;
    let text = c
        .stage_text(stage)
        .map_err(|e| Reply::error(422, &e.to_string()))?;
    let o = c.outline().map_err(|e| unprocessable(&e))?;
    let lines = source_lines(&text, &c, &o);
    Ok(Reply::json(json!({ "text": text, "lines": lines })))
}

fn curve(root: &Root, run: Option<&str>) -> Result<Reply, Reply> {
    let rel = run.ok_or_else(|| Reply::error(400, "give the run as ?run=runs/NAME"))?;
    let dir = root.inside(rel).map_err(|(s, m)| Reply::error(s, &m))?;
    let log = dir.join("log.jsonl");
    if !log.is_file() {
        return Err(Reply::error(404, &format!("no log.jsonl in `{rel}`")));
    }
    Ok(Reply::ok(SVG, crate::train::loss_svg(&log, rel)))
}
