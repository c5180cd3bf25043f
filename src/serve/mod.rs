//! `lamina serve [DIR]`: the explorer, a local web page served on 127.0.0.1.
//!
//! The page (one file, `page.html`, with its script and style inline: no CDN, no network)
//! lists the model files under DIR, edits one with live `check` diagnostics, shows every
//! compiler stage beside the source with hover from an IR line to the source line it came
//! from, the diagram and the parameter table, and the loss curves of the runs in
//! `DIR/runs`, refreshed while they train.
//!
//! `routes` answers a request as a pure function of the served directory, so every route
//! and every refusal is tested without a socket; this file only binds and loops. Requests
//! are answered one at a time: a compile takes milliseconds within the language's limits.

mod paths;
mod routes;
mod source_map;

pub use paths::Root;
pub use routes::{handle, Method, Reply, Request};

use std::io::Read;
use std::net::SocketAddr;

/// Largest request body (a model file's limit).
pub const MAX_BODY: usize = crate::syntax::MAX_INPUT_BYTES;

/// Bind `127.0.0.1:port` (0 picks a free port) for the model files under `root`.
pub fn bind(port: u16) -> Result<(tiny_http::Server, SocketAddr), String> {
    let server = tiny_http::Server::http(("127.0.0.1", port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("the server has no IP address")?;
    Ok((server, addr))
}

/// Answer requests until the process is stopped.
pub fn run(server: &tiny_http::Server, root: &Root) {
    for mut request in server.incoming_requests() {
        let reply = match read(&mut request) {
            Ok(req) => handle(root, &req),
            Err(reply) => reply,
        };
        let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k, v).ok();
        let mut response =
            tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
        for h in [
            header("Content-Type", reply.content_type),
            header("Cache-Control", "no-store"),
            header("X-Content-Type-Options", "nosniff"),
        ]
        .into_iter()
        .flatten()
        {
            response.add_header(h);
        }
        // A client that went away is not an error of the server.
        let _ = request.respond(response);
    }
}

/// The request as `routes` sees it, or the refusal of a body that is too large.
fn read(r: &mut tiny_http::Request) -> Result<Request, Reply> {
    let method = match r.method() {
        tiny_http::Method::Get => Method::Get,
        tiny_http::Method::Post => Method::Post,
        tiny_http::Method::Put => Method::Put,
        _ => return Err(Reply::error(405, "only GET, POST and PUT are served")),
    };
    if r.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    r.as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Reply::error(400, &format!("cannot read the request body: {e}")))?;
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    Ok(Request {
        method,
        url: r.url().to_string(),
        body,
    })
}

fn too_large() -> Reply {
    Reply::error(
        413,
        &format!("the request body is larger than {MAX_BODY} bytes, the limit of a model file"),
    )
}

#[cfg(test)]
mod tests;
