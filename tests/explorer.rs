//! `lamina serve` end to end: raw HTTP against the binary (refusals of bad requests), and
//! the page in headless Chromium through ChromeDriver (load, edit in an error and see the
//! diagnostic, open an IR stage, hover a line, screenshots).
//!
//! The browser test needs `chromium` and `chromedriver` (Debian's packages); without them it
//! is skipped with a notice, unless `LAMINA_BROWSER_TESTS=1` (set by CI) makes it required.
//! Screenshots go to `$LAMINA_ARTEFACTS` (default: the target directory's `tmp`).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "\
# A small model for the explorer test.
model tiny
input tokens(batch = 2, length = 8, vocab = 16)
embed(dim = 16)
block layer {
    attn = attention(heads = 2)
    ffn  = ffn(hidden = 32)
}
stack layer * 2
";

/// A child process killed when dropped.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn served_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-explorer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(dir.join("models/tiny.lam"), MODEL).unwrap();
    dir
}

/// Start `lamina serve DIR --port 0`; returns the guard and `host:port`.
fn serve(dir: &Path) -> (Guard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(["serve", dir.to_str().unwrap(), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("lamina serve starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    (Guard(child), addr)
}

/// One HTTP/1.1 exchange; returns the status and the body. The body is read by its
/// `Content-Length` (ChromeDriver keeps connections open), chunked, or to the end.
fn http(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before reading a refused body.
    let _ = s.write_all(body);
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    let _ = r.read_line(&mut status_line);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    let mut out = vec![];
    if chunked {
        loop {
            let mut size = String::new();
            let _ = r.read_line(&mut size);
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            out.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        out.resize(n, 0);
        r.read_exact(&mut out).unwrap();
    } else {
        let _ = r.read_to_end(&mut out);
    }
    (status, out)
}

#[test]
fn the_server_refuses_bad_requests_over_the_wire() {
    let dir = served_dir("wire");
    let (_server, addr) = serve(&dir);
    let (status, body) = http(&addr, "GET", "/api/files", "", b"");
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "[\"models/tiny.lam\"]");
    assert_eq!(http(&addr, "GET", "/../../etc/passwd", "", b"").0, 400);
    assert_eq!(
        http(
            &addr,
            "GET",
            "/api/file?path=..%2f..%2fetc%2fpasswd",
            "",
            b""
        )
        .0,
        400
    );
    assert_eq!(http(&addr, "GET", "/nothing/here", "", b"").0, 404);
    assert_eq!(http(&addr, "DELETE", "/api/files", "", b"").0, 405);
    let huge = vec![b'#'; lamina::serve::MAX_BODY + 10];
    assert_eq!(http(&addr, "POST", "/api/check", "", &huge).0, 413);
    // Still serving after all that.
    assert_eq!(http(&addr, "GET", "/", "", b"").0, 200);
}

// ------------------------------------------------------------------ the browser

/// A W3C WebDriver session on ChromeDriver.
struct Driver {
    addr: String,
    session: String,
    _chromedriver: Guard,
}

impl Driver {
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        call(&self.addr, method, &path, body)
    }
    fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({ "script": js, "args": [] }))
    }
    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|id| id.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }
    fn text(&self, css: &str) -> String {
        let js = format!("return document.querySelector({css:?})?.textContent ?? ''");
        self.script(&js).as_str().unwrap_or_default().to_string()
    }
    /// Wait until the page has drawn the refresh of the last edit or click.
    fn settle(&self) {
        let start = Instant::now();
        while self.script("return document.body.dataset.busy") != json!("0") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the page never settled"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Move the pointer onto the first element matching `css`.
    fn hover(&self, css: &str) {
        let el = self.element(css);
        let actions = json!({ "actions": [{ "type": "pointer", "id": "mouse", "actions": [
            { "type": "pointerMove", "origin": { "element-6066-11e4-a52e-4f735466cecf": el }, "x": 0, "y": 0 }
        ]}]});
        self.call("POST", "/actions", actions);
    }

    /// Wait until `css`'s text contains `needle`.
    fn wait_for(&self, css: &str, needle: &str) {
        let start = Instant::now();
        loop {
            let t = self.text(css);
            if t.contains(needle) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{css} never showed {needle:?}; it shows {t:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", Value::Null);
        let png = base64(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = std::env::var_os("LAMINA_ARTEFACTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            "",
            b"",
        );
    }
}

fn call(addr: &str, method: &str, path: &str, body: Value) -> Value {
    let data = if body.is_null() {
        vec![]
    } else {
        body.to_string().into_bytes()
    };
    let (status, reply) = http(
        addr,
        method,
        path,
        "Content-Type: application/json\r\n",
        &data,
    );
    let v: Value = serde_json::from_slice(&reply).unwrap_or_else(|_| {
        panic!(
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&reply)
        )
    });
    assert_eq!(status, 200, "{method} {path}: {v}");
    v["value"].clone()
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = vec![];
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (val(*c) as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// ChromeDriver with a headless Chromium session, or `None` when they are not installed.
fn driver() -> Option<Driver> {
    let required = std::env::var("LAMINA_BROWSER_TESTS").is_ok_and(|v| v == "1");
    let (Some(chromedriver), Some(chromium)) = (which("chromedriver"), which("chromium")) else {
        assert!(
            !required,
            "LAMINA_BROWSER_TESTS=1 but chromium or chromedriver is not installed"
        );
        eprintln!("skipped: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let guard = Guard(child);
    let addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,900"]
    }}}});
    let v = call(&addr, "POST", "/session", caps);
    let session = v["sessionId"].as_str().expect("a session id").to_string();
    Some(Driver {
        addr,
        session,
        _chromedriver: guard,
    })
}

#[test]
fn the_page_checks_edits_and_shows_stages_in_chromium() {
    let Some(d) = driver() else { return };
    let dir = served_dir("browser");
    let (_server, addr) = serve(&dir);
    d.call("POST", "/url", json!({ "url": format!("http://{addr}/") }));
    // The page opens the only model and checks it.
    d.wait_for("#current", "models/tiny.lam");
    d.wait_for("#status", "✓ tiny");

    // Type an error at the end of the file: the diagnostic appears, located.
    let editor = d.element("#editor");
    let typed = "\nstack lyer * 2";
    d.call(
        "POST",
        &format!("/element/{editor}/value"),
        json!({ "text": typed }),
    );
    d.wait_for("#status", "✗ 1 error");
    d.wait_for("#diagnostics", "unknown block `lyer`");
    d.wait_for("#diagnostics", "models/tiny.lam:11:7");
    d.screenshot("explorer-error.png");

    // Delete it again, then open the optimized IR once the page has settled (each
    // keystroke schedules a refresh that redraws the output).
    let backspaces: String = std::iter::repeat_n('\u{E003}', typed.chars().count()).collect();
    d.call(
        "POST",
        &format!("/element/{editor}/value"),
        json!({ "text": backspaces }),
    );
    d.wait_for("#status", "✓ tiny");
    d.settle();
    let opt = d.element("#tabs button[data-tab=opt]");
    d.call("POST", &format!("/element/{opt}/click"), json!({}));
    d.wait_for("#output", "graph tiny");
    d.wait_for("#output", "@blocks.1.ffn");
    d.settle();

    // Hover an IR line of blocks.1.ffn: its source line (7) lights up.
    d.hover("#output div[data-src='7']");
    let shown =
        d.script("const h = document.querySelector('#hl'); return [h.style.display, h.style.top]");
    assert_eq!(shown[0], "block", "{shown}");
    // Line 7 of the editor: 6 px padding + 6 lines of 18 px.
    assert_eq!(shown[1], "114px", "{shown}");

    let diagram = d.element("#tabs button[data-tab=diagram]");
    d.call("POST", &format!("/element/{diagram}/click"), json!({}));
    let start = Instant::now();
    while d.script("return document.querySelector('#output img')?.naturalWidth ?? 0") == json!(0) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the diagram never loaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.call("POST", &format!("/element/{opt}/click"), json!({}));
    d.wait_for("#output", "graph tiny");
    d.settle();
    d.hover("#output div[data-src='7']");
    d.screenshot("explorer.png");
}
