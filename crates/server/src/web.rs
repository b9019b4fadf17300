//! The HTTP front of the signaling port: it admits each TCP connection by
//! client address (per-address limits, with a reserve for light users),
//! runs the TLS handshake when the port speaks TLS, reads the head of each
//! request, answers `GET /` with the browser page itself and hands
//! WebSocket upgrades to the signaling server.
//!
//! An upgrade goes to a `p2p_signaling::Acceptor` on the same stream, with
//! the bytes the front already read replayed first: no second socket, no
//! copying. Routing is the pure function [`route`], tested without a
//! network. Every state has a deadline: the TLS handshake and the request
//! head share `head_timeout`, the WebSocket handshake has its own, and an
//! open WebSocket is bounded by the signaling server's idle and write
//! timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The browser page: plain HTML and JavaScript, no build step.
pub(crate) const PAGE: &str = include_str!("web/index.html");

/// The longest request head read, in bytes; longer ones get 431.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// What to do with a request, decided from its head alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A WebSocket upgrade: hand the connection to the signaling server.
    Upgrade,
    /// Answer with this response and close.
    Respond(Response),
}

/// A canned response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status line's code.
    pub(crate) status: u16,
    /// The body (left out for HEAD).
    pub(crate) body: &'static str,
    /// The body's media type.
    pub(crate) content_type: &'static str,
    /// Whether the request was HEAD.
    pub(crate) head_only: bool,
}

impl Response {
    fn text(status: u16, body: &'static str) -> Response {
        Response {
            status,
            body,
            content_type: "text/plain; charset=utf-8",
            head_only: false,
        }
    }

    /// The bytes to write: status line, headers, body.
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\n\
             Content-Type: {}\r\n\
             Content-Length: {}\r\n\
             Cache-Control: no-store\r\n\
             X-Content-Type-Options: nosniff\r\n\
             Referrer-Policy: no-referrer\r\n\
             Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        match self.status {
            405 => out.push_str("Allow: GET, HEAD\r\n"),
            426 => out.push_str("Upgrade: websocket\r\n"),
            503 => out.push_str("Retry-After: 10\r\n"),
            _ => {}
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// Where the head of `buf` ends (the index after `\r\n\r\n`), if it does.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Decide what to do with a request whose head (through the blank line) is
/// `head`. `page` is whether the page is served.
pub(crate) fn route(head: &[u8], page: bool) -> Route {
    let bad = Route::Respond(Response::text(400, "bad request\n"));
    let Ok(text) = std::str::from_utf8(head) else {
        return bad;
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return bad;
    }
    let mut upgrade = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return bad;
        };
        if name.trim().eq_ignore_ascii_case("upgrade")
            && value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("websocket"))
        {
            upgrade = true;
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if upgrade && method == "GET" {
        return Route::Upgrade;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::Respond(Response::text(405, "method not allowed\n")),
    };
    let response = match path {
        "/" | "/index.html" if page => Response {
            status: 200,
            body: PAGE,
            content_type: "text/html; charset=utf-8",
            head_only: false,
        },
        "/ws" => Response::text(
            426,
            "this is the signaling WebSocket: connect with a WebSocket client\n",
        ),
        _ => Response::text(404, "not found\n"),
    };
    Route::Respond(Response {
        head_only,
        ..response
    })
}

/// Settings of the front.
#[derive(Clone)]
pub(crate) struct Front {
    /// Where WebSocket upgrades go, and who admits connections.
    pub(crate) acceptor: p2p_signaling::Acceptor,
    /// Serve the page at `/`.
    pub(crate) page: bool,
    /// Speak TLS (`https://`, `wss://`).
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Time allowed for the TLS handshake and the request head together.
    pub(crate) head_timeout: Duration,
}

/// The answer to a connection refused by the per-address limits, written
/// only if the socket takes it at once.
fn refused(reason: p2p_signaling::Refusal) -> Vec<u8> {
    let body: &'static str = match reason {
        p2p_signaling::Refusal::PerAddress => "too many connections from your address\n",
        p2p_signaling::Refusal::Reserved => {
            "the server is busy; its last slots are kept for other addresses\n"
        }
        _ => "the server is full; try again later\n",
    };
    Response::text(503, body).to_bytes()
}

/// Accept on `listener` until `stop` turns true, then wait up to `grace` for
/// the open connections (the signaling server closes its WebSockets on the
/// same signal) and drop the rest.
pub(crate) async fn run(
    listener: TcpListener,
    front: Front,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let front = Arc::new(front);
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let admitted = match front.acceptor.admit(addr.ip()) {
                        Ok(a) => a,
                        Err(reason) => {
                            tracing::debug!(%addr, %reason, "signaling: connection refused");
                            // Never wait on a refused client.
                            let _ = stream.try_write(&refused(reason));
                            continue;
                        }
                    };
                    let front = front.clone();
                    tasks.spawn(async move {
                        connection(stream, addr, &front).await;
                        drop(admitted);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "signaling: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tasks.shutdown().await;
    }
}

async fn connection(stream: TcpStream, addr: SocketAddr, front: &Front) {
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + front.head_timeout;
    match &front.tls {
        None => serve(stream, addr, front, deadline).await,
        // Boxed: the TLS states are large, and a plain connection's task
        // should not carry their room.
        Some(tls) => {
            Box::pin(async move {
                match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve(stream, addr, front, deadline).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "signaling: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%addr, "signaling: TLS handshake timed out"),
                }
            })
            .await
        }
    }
}

async fn serve<S>(mut stream: S, addr: SocketAddr, front: &Front, deadline: tokio::time::Instant)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout_at(deadline, read_head(&mut stream, &mut buf)).await;
    let route = match read {
        Ok(Ok(Some(end))) => route(&buf[..end], front.page),
        Ok(Ok(None)) => Route::Respond(Response::text(431, "request head too large\n")),
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "signaling: reading the request failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "signaling: request head timed out");
            return;
        }
    };
    match route {
        Route::Respond(response) => {
            tracing::debug!(%addr, status = response.status, "signaling: http");
            // A client that does not read its answer is not waited for long.
            let write = async {
                stream.write_all(&response.to_bytes()).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(front.head_timeout, write).await;
        }
        Route::Upgrade => {
            // Everything read so far, head and any early frame, goes to the
            // WebSocket handshake first.
            front.acceptor.serve_after(buf, stream, addr).await;
        }
    }
}

/// Read until the end of the head. `Ok(None)`: no end within [`MAX_HEAD`].
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    loop {
        // Straight into the buffer's spare room (no chunk on the task's
        // stack), growing it at most to a little over MAX_HEAD.
        if buf.capacity() == buf.len() {
            buf.reserve(1024);
        }
        let from = buf.len().saturating_sub(3);
        let n = stream.read_buf(buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // Search again only where the new bytes can complete a terminator.
        if let Some(end) = head_end(&buf[from..]) {
            return Ok(Some(from + end));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Route) -> u16 {
        match r {
            Route::Respond(resp) => resp.status,
            Route::Upgrade => 101,
        }
    }

    #[test]
    fn routes_by_method_path_and_upgrade() {
        let ws = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let cases: &[(&str, bool, u16)] = &[
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true, 200),
            (
                "GET /?room=a&relay=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                true,
                200,
            ),
            ("GET /index.html HTTP/1.0\r\n\r\n", true, 200),
            ("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", true, 200),
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, 404),
            ("GET /favicon.ico HTTP/1.1\r\n\r\n", true, 404),
            ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", true, 426),
            (ws, true, 101),
            (ws, false, 101),
            // Any path upgrades, as p2p-signaling accepts any path.
            (
                "GET /room/a HTTP/1.1\r\nupgrade: WebSocket\r\n\r\n",
                true,
                101,
            ),
            (
                "GET / HTTP/1.1\r\nUpgrade: h2c, websocket\r\n\r\n",
                true,
                101,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", true, 405),
            ("POST /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", true, 405),
            ("GET / HTTP/2\r\n\r\n", true, 400),
            ("GET http://x/ HTTP/1.1\r\n\r\n", true, 400),
            ("GET /\r\n\r\n", true, 400),
            ("GET / HTTP/1.1 extra\r\n\r\n", true, 400),
            ("GET / HTTP/1.1\r\nno colon here\r\n\r\n", true, 400),
            ("\r\n\r\n", true, 400),
        ];
        for (head, page, want) in cases {
            assert_eq!(status(route(head.as_bytes(), *page)), *want, "{head:?}");
        }
        assert_eq!(status(route(b"GET /\xff HTTP/1.1\r\n\r\n", true)), 400);
    }

    #[test]
    fn head_request_has_no_body_but_the_length() {
        let Route::Respond(r) = route(b"HEAD / HTTP/1.1\r\n\r\n", true) else {
            panic!("HEAD is answered");
        };
        let bytes = r.to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert!(text.contains(&format!("Content-Length: {}\r\n", PAGE.len())));
    }

    #[test]
    fn page_response_is_html_with_length_and_close() {
        let Route::Respond(r) = route(b"GET / HTTP/1.1\r\n\r\n", true) else {
            panic!("GET / is answered");
        };
        let text = String::from_utf8(r.to_bytes()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Type: text/html; charset=utf-8"));
        assert!(head.contains("Connection: close"));
        assert_eq!(body, PAGE);
        assert!(PAGE.contains("RTCPeerConnection"));
        assert!(PAGE.contains("window.p2pTest"));
    }

    /// Every idle connection's task carries its future: the TLS states are
    /// boxed and the head is read straight into its buffer, so a plain
    /// connection's front task stays small (it was 16.8 KB with the TLS
    /// states and a 2 KiB read chunk inline).
    #[tokio::test]
    async fn a_plain_connections_front_task_stays_small() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = l.local_addr().expect("addr");
        let s = TcpStream::connect(a).await.expect("connect");
        let server = p2p_signaling::Server::start(p2p_signaling::ServerConfig::default());
        let front = Front {
            acceptor: server.acceptor(),
            page: true,
            tls: None,
            head_timeout: Duration::from_secs(1),
        };
        let f = connection(s, a, &front);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 6 * 1024, "the front's future is {size} bytes");
    }

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b""), None);
    }
}
