//! The HTTP/1.1 serving loop every port of ours uses (the admin port of each service, the
//! ingest API, the Salesforce stand-in), with the bounds `axum::serve` leaves out: `axum::serve`
//! sets no timer, so hyper's header-read timeout is off, and accepts connections without limit.
//! Without them a client that opens connections and never finishes a request line holds each
//! one for ever, until the process runs out of file descriptors and `/healthz` stops answering
//! (found by an outside-style check on 2026-12-04: 19,985 such connections, 600 MB resident,
//! liveness probes timing out).

use crate::runtime::shutdown::Shutdown;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection may take to send a request's headers, and to take an answer, and how
/// many connections are served at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// A connection that has not sent a request's headers within this long of opening (or of
    /// its previous answer, when kept alive) is closed. It is also the longest an answer's
    /// write may wait for the client to read ([`StallGuard`]): a client that sends requests
    /// and never reads the answers (they fill the socket's buffers, and the write waits) is
    /// closed then, instead of being held for ever and keeping a stop waiting for it.
    pub header_timeout: Duration,
    /// Connections served at once. The next one is accepted when one closes; until then it
    /// waits in the kernel's listen queue, costing this process nothing.
    pub max_connections: usize,
}

impl Bounds {
    /// The admin port (`/metrics`, `/healthz`, `/readyz`, lead lookup) and the stand-in: a
    /// scrape, a probe or a lookup sends its headers at once, and a few hundred at a time is
    /// far more than a cluster's probes, scrapers and operators make.
    pub const ADMIN: Bounds = Bounds {
        header_timeout: Duration::from_secs(10),
        max_connections: 512,
    };

    /// The ingest API, with its configured header timeout (`ingest.header_timeout`).
    pub fn ingest(header_timeout: Duration) -> Bounds {
        Bounds {
            header_timeout,
            max_connections: 4096,
        }
    }
}

/// `router` with a JSON body on every error answer that has none (axum's 405 for a method a
/// route does not take, a 404 of a route table without its own fallback), naming the status,
/// the method and the path, so that every answer of the admin port and the ingest API a client
/// reads is JSON with an `error` (found by an outside check, 2026-12-04). Answers with a body
/// are left as they are. (A request line or headers too long for the server are answered by
/// hyper before any route, 414 or 431 with no body: docs/operations.md.)
pub fn json_errors(router: Router) -> Router {
    json_errors_in(router, "error")
}

/// [`json_errors`] with the text under `field`: the ingest API answers as Braze does, with a
/// `message` (an outside review found its 404 and 405 in the admin port's shape).
pub fn json_errors_in(router: Router, field: &'static str) -> Router {
    router.layer(axum::middleware::map_response(
        move |method, uri, response| with_json_error(method, uri, response, field),
    ))
}

async fn with_json_error(
    method: axum::http::Method,
    uri: axum::http::Uri,
    response: axum::response::Response,
    field: &'static str,
) -> axum::response::Response {
    use axum::body::HttpBody;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.body().size_hint().exact() != Some(0)
    {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let mut body = serde_json::Map::new();
    body.insert(
        field.to_string(),
        format!(
            "{} {}: {method} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error"),
            cut(uri.path(), 256)
        )
        .into(),
    );
    let body = serde_json::Value::Object(body);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    axum::response::Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// At most `max` bytes of `s`, cut at a character boundary, with `...` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The most a connection buffers of a request's head (request line and headers) before it is
/// answered 431: 4,096 connections at this bound hold 64 MiB at most (hyper's default, about
/// 400 KB each, let unfinished heads take gigabytes).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves `router` on `listener` over HTTP/1.1 within `bounds` until `shutdown`, then waits
/// for the requests in flight to be answered. `what` names the port in logs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    bounds: Bounds,
    shutdown: Shutdown,
    what: &'static str,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let service = TowerToHyperService::new(router);
    let slots = Arc::new(tokio::sync::Semaphore::new(bounds.max_connections.max(1)));
    // Every connection task holds a `done` receiver: once `done_tx.closed()` resolves, every
    // connection has finished.
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    loop {
        // A free slot first, then the connection: at the limit, new connections wait in the
        // listen queue instead of in this process.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => break,
            },
            () = shutdown.wait() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, mostly: a pause lets connections close rather
                    // than spinning on the error.
                    tracing::warn!(error = %e, "{what}: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let stream = StallGuard::new(stream, bounds.header_timeout);
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let (mut stop, done) = (stop_rx.clone(), done_rx.clone());
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "{what}: connection ended");
                        }
                        break;
                    }
                    _ = stop.wait_for(|stop| *stop), if !stopping => {
                        // Finishes the request in flight, then closes.
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(done);
            drop(slot);
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(done_rx);
    done_tx.closed().await;
}

/// A connection whose writes fail with `TimedOut` once one has waited `limit` for the client
/// to read: hyper sets no timer on writing an answer, so a client that pipelines requests and
/// reads nothing held its connection (and a stop waiting for it) for ever (an outside check,
/// 2026-12-07). Reads are untouched: hyper's header timeout bounds them, and a request's body
/// has the route's own timeout.
struct StallGuard {
    stream: tokio::net::TcpStream,
    limit: Duration,
    /// Set when a write found the socket full, cleared when a write goes through.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    fn new(stream: tokio::net::TcpStream, limit: Duration) -> StallGuard {
        StallGuard {
            stream,
            limit,
            stalled: None,
        }
    }

    /// A write's result, with the stall timer: `Pending` starts it (or keeps it), anything
    /// else stops it; a timer run out is an error.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        result: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match std::future::Future::poll(timer.as_mut(), cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read no answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for StallGuard {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for StallGuard {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.stream).poll_shutdown(cx);
        self.watch(cx, result)
    }
}

/// Raw-TCP clients for the tests of the ports served here.
#[cfg(test)]
pub(crate) mod probe {
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A connection to `addr` that has sent `bytes` (a request's start, or nothing).
    pub async fn opened(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.expect("connects");
        s.write_all(bytes).await.expect("writes");
        s
    }

    /// What the server sends before it closes `s`; fails the test unless it closes within
    /// `within`. (The read ends, at the end of the stream or a reset, only when it closes.)
    pub async fn until_closed(mut s: TcpStream, within: Duration) -> Vec<u8> {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(within, s.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection in time");
        rest
    }

    /// Sends a whole `request` on a new connection and reads the answer to its end.
    pub async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(request).await?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).await?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::probe::{exchange, opened, until_closed};
    use super::*;
    use axum::routing::get;

    async fn server(bounds: Bounds) -> (std::net::SocketAddr, Shutdown) {
        serving(
            Router::new().route("/healthz", get(|| async { "ok" })),
            bounds,
        )
        .await
    }

    /// `router` served on a loopback port.
    async fn serving(router: Router, bounds: Bounds) -> (std::net::SocketAddr, Shutdown) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        let shutdown = Shutdown::new();
        tokio::spawn(serve(listener, router, bounds, shutdown.clone(), "test"));
        (addr, shutdown)
    }

    /// Found by an outside check: a 405 (POST on a GET route) and the 404 of a route table
    /// without its own fallback had an empty body, though every answer of the admin port is
    /// JSON with an `error`. Through `json_errors` they are; answers with a body are unchanged.
    #[tokio::test]
    async fn error_answers_without_a_body_get_a_json_one() {
        let (addr, shutdown) = serving(
            json_errors(Router::new().route("/healthz", get(|| async { "ok" }))),
            Bounds::ADMIN,
        )
        .await;
        let ask = |request: &'static str| async move {
            exchange(addr, request.as_bytes()).await.expect("an answer")
        };
        let wrong_method = ask(
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(wrong_method.starts_with("HTTP/1.1 405"), "{wrong_method}");
        assert!(
            wrong_method.contains("content-type: application/json"),
            "{wrong_method}"
        );
        assert!(
            wrong_method.ends_with(r#"{"error":"405 Method Not Allowed: POST /healthz"}"#),
            "{wrong_method}"
        );
        let no_path = ask("GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(no_path.starts_with("HTTP/1.1 404"), "{no_path}");
        assert!(
            no_path.ends_with(r#"{"error":"404 Not Found: GET /nope"}"#),
            "{no_path}"
        );
        // The ingest API's shape: Braze's `message`.
        let (braze, braze_shutdown) = serving(
            json_errors_in(
                Router::new().route("/users/track", axum::routing::post(|| async { "ok" })),
                "message",
            ),
            Bounds::ADMIN,
        )
        .await;
        let get_track = exchange(
            braze,
            b"GET /users/track HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("an answer");
        assert!(
            get_track.ends_with(r#"{"message":"405 Method Not Allowed: GET /users/track"}"#),
            "{get_track}"
        );
        let fine = ask("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(
            fine.starts_with("HTTP/1.1 200") && fine.ends_with("\r\n\r\nok"),
            "{fine}"
        );
        shutdown.trigger();
        braze_shutdown.trigger();
    }

    /// A request's head (request line and headers) is held in at most [`MAX_HEAD_BYTES`]:
    /// a longer one is answered 431 and the connection closed. Before, hyper's default let each
    /// connection buffer about 400 KB of unfinished headers, so 800 connections sending them
    /// slowly, no key needed, took the ingest API to 465 MB (an outside check).
    #[tokio::test]
    async fn a_request_head_over_the_bound_is_refused() {
        let (addr, shutdown) = server(Bounds::ADMIN).await;
        let long = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let answer = exchange(addr, long.as_bytes()).await.unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        // A head within the bound is served.
        let fits = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES / 2)
        );
        let answer = exchange(addr, fits.as_bytes()).await.expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        shutdown.trigger();
    }

    /// A connection that never finishes its headers is closed after the header timeout; before,
    /// the admin port (served by `axum::serve`) held it for ever.
    #[tokio::test]
    async fn a_connection_that_never_finishes_its_headers_is_closed() {
        let (addr, shutdown) = server(Bounds {
            header_timeout: Duration::from_millis(300),
            max_connections: 8,
        })
        .await;
        // One sends half its headers, one sends nothing at all.
        let half = opened(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ").await;
        let silent = opened(addr, b"").await;
        for slow in [half, silent] {
            let rest = until_closed(slow, Duration::from_secs(10)).await;
            let text = String::from_utf8_lossy(&rest);
            assert!(text.is_empty() || text.contains("408"), "{text}");
        }
        shutdown.trigger();
    }

    /// Found by an outside check: a client that pipelined requests and read no answer held its
    /// connection for ever (hyper's write of the answer waited on a full socket), and a stop
    /// waited for it as long. Now the write gives up after the header timeout, and the stop
    /// finishes.
    #[tokio::test]
    async fn a_client_that_reads_no_answer_does_not_hold_a_stop() {
        let big = "x".repeat(1 << 20);
        let router = Router::new().route("/big", get(move || async move { big.clone() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        let shutdown = Shutdown::new();
        let bounds = Bounds {
            header_timeout: Duration::from_millis(300),
            max_connections: 8,
        };
        let serving = tokio::spawn(serve(listener, router, bounds, shutdown.clone(), "test"));
        // 64 answers of 1 MiB: far more than the socket buffers hold.
        let requests = "GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
        let _unread = opened(addr, requests.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("the stop finished while the client still held its connection")
            .expect("the serving task");
    }

    /// At the limit, another connection waits until one closes, and is then answered: the
    /// process holds at most `max_connections`, and a probe still gets through once the slow
    /// ones time out.
    #[tokio::test]
    async fn at_the_connection_limit_the_next_waits_for_a_free_slot() {
        let (addr, shutdown) = server(Bounds {
            header_timeout: Duration::from_millis(500),
            max_connections: 2,
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(opened(addr, b"GET /hea").await);
        }
        // Give the server time to accept both.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            exchange(
                addr,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
        )
        .await
        .expect("answered once a slot frees, within the test's 10 s")
        .expect("a readable answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the probe waited for a slot ({:?}); the limit was not applied",
            started.elapsed()
        );
        drop(held);
        shutdown.trigger();
    }
}
