//! The metrics endpoint: `GET /metrics` (OpenMetrics text) and `GET /healthz` over HTTP/1.1,
//! on a TCP socket of its own -- bound here (`metrics_listen`), or passed by the service manager
//! as `metrics` (a socket unit with `FileDescriptorName=metrics`, so that the service itself keeps
//! `PrivateNetwork=yes`). Never on the broker's socket.
//!
//! It runs on a thread and an event loop of its own, so nothing a scraper does reaches a
//! decision. It holds at most [`MAX_SCRAPES`] connections, each for at most [`SCRAPE_TIMEOUT`];
//! every connection is accepted at once, and when all places are taken the oldest idle one (no
//! request read, no bytes waiting to be read) is closed for it: connections that send nothing
//! (any local user can open hundreds) cannot keep a scraper out, since a scraper's request is in
//! its socket as it is accepted. It
//! starts before the policy is loaded, so `/healthz` says 503 until one serves (but for a takeover
//! from a serving process, see `daemon::serve`). A socket that cannot be had is an error in the
//! log, never a reason not to serve decisions: Prometheus sees the target down.

use super::metrics::{Exporter, Format, Health};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Connections held at once.
pub const MAX_SCRAPES: usize = 16;
/// How long one HTTP connection may take in all (its request and our answer).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request's header may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection held: whether its request was read, a copy of its socket to see whether bytes
/// wait on it, and how to close it for a newer one.
struct Held {
    requested: Arc<AtomicBool>,
    probe: Option<Arc<std::net::TcpStream>>,
    close: tokio::sync::oneshot::Sender<()>,
}

impl Held {
    /// Sent nothing that is waiting to be read, and no request read: a place held for nothing.
    /// (A scraper's request is in the socket as it is accepted, before its task has read it:
    /// a burst of connections accepted meanwhile must not make it the one to go.)
    fn idle(&self) -> bool {
        if self.requested.load(Ordering::Relaxed) {
            return false;
        }
        let mut byte = [0u8; 1];
        !matches!(self.probe.as_ref().map(|p| p.peek(&mut byte)), Some(Ok(n)) if n > 0)
    }
}

/// A second handle on a connection's socket, to peek at it (non-blocking, as the first).
fn probe_of(stream: &tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    #[cfg(unix)]
    let copy = std::os::fd::AsFd::as_fd(stream).try_clone_to_owned();
    #[cfg(windows)]
    let copy = std::os::windows::io::AsSocket::as_socket(stream).try_clone_to_owned();
    copy.ok().map(std::net::TcpStream::from)
}

/// Makes room for one more connection: forgets the ones that ended, then closes the oldest that
/// is idle. `false` if every place is busy with a request (the new one is closed).
fn make_room(held: &mut VecDeque<Held>) -> bool {
    held.retain(|h| !h.close.is_closed());
    if held.len() < MAX_SCRAPES {
        return true;
    }
    match held.iter().position(Held::idle) {
        Some(oldest) => {
            if let Some(h) = held.remove(oldest) {
                let _ = h.close.send(());
            }
            true
        }
        None => false,
    }
}

/// The socket metrics are served on.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    addr: Option<SocketAddr>,
}

/// The metrics socket: the service manager's `metrics` socket if one was passed, else one bound
/// at `listen`. `None` (after an error in the log) when neither can be had.
pub fn open(
    listen: Option<SocketAddr>,
    passed: Option<Result<TcpListener, String>>,
) -> Option<Endpoint> {
    let passed = match passed {
        Some(Ok(listener)) => Some(listener),
        Some(Err(why)) => {
            tracing::error!(
                "the metrics socket passed by the service manager cannot be used: {why}"
            );
            None
        }
        None => None,
    };
    let listener = match (passed, listen) {
        (Some(listener), listen) => {
            let addr = listener.local_addr().ok();
            // Port 0 asks for any port: the passed socket is one (an upgrade in place passes
            // the one bound at start).
            if let Some(listen) = listen
                && Some(listen) != addr
                && listen.port() != 0
            {
                tracing::warn!(
                    metrics_listen = %listen,
                    "metrics_listen is ignored: the service manager passed a metrics socket, which is served instead"
                );
            }
            listener
        }
        (None, Some(listen)) => match TcpListener::bind(listen) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(
                    "cannot serve metrics on {listen}: {e}; serving decisions without metrics"
                );
                return None;
            }
        },
        (None, None) => return None,
    };
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!("cannot use the metrics socket: {e}; serving decisions without metrics");
        return None;
    }
    let addr = listener.local_addr().ok();
    Some(Endpoint { listener, addr })
}

impl Endpoint {
    /// The address served, as the kernel says.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }
}

/// A copy of the metrics socket for an upgrade in place to hand over, once it is served.
#[cfg(unix)]
static HANDOVER: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// The metrics socket, for an upgrade in place to pass on as `metrics`.
#[cfg(unix)]
pub fn handover_fd() -> Option<std::os::fd::BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    HANDOVER.get().map(AsFd::as_fd)
}

/// Serves `endpoint` on a thread of its own, from now on; counting starts with it.
pub fn start(endpoint: Endpoint, exporter: Arc<Exporter>) {
    #[cfg(unix)]
    if let Ok(copy) = endpoint.listener.try_clone() {
        let _ = HANDOVER.set(copy.into());
    }
    let shown = endpoint
        .addr
        .map_or_else(|| "the passed socket".to_owned(), |a| a.to_string());
    super::metrics::enable();
    let spawned = super::signals::with_handled_blocked(|| {
        std::thread::Builder::new()
            .name("metrics".to_owned())
            .spawn(move || run(endpoint.listener, exporter))
    });
    match spawned {
        Ok(_) => {
            tracing::info!("serving metrics on http://{shown}/metrics and http://{shown}/healthz")
        }
        Err(e) => tracing::error!("cannot start the metrics thread: {e}; serving without metrics"),
    }
}

fn run(listener: TcpListener, exporter: Arc<Exporter>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the metrics endpoint's event loop: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!("cannot serve metrics: {e}");
                return;
            }
        };
        let mut held: VecDeque<Held> = VecDeque::with_capacity(MAX_SCRAPES + 1);
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!("metrics: accept failed: {e}; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if !make_room(&mut held) {
                // Sixteen requests being answered this very moment: a flood; this one goes.
                drop(stream);
                continue;
            }
            let requested = Arc::new(AtomicBool::new(false));
            let (close, closed) = tokio::sync::oneshot::channel();
            let probe = probe_of(&stream).map(Arc::new);
            held.push_back(Held {
                requested: requested.clone(),
                probe: probe.clone(),
                close,
            });
            let exporter = exporter.clone();
            tokio::spawn(async move {
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .max_buf_size(8192);
                let served = http.serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(move |request| {
                        requested.store(true, Ordering::Relaxed);
                        let exporter = exporter.clone();
                        async move { Ok::<_, Infallible>(answer(&request, &exporter)) }
                    }),
                );
                // A peer that takes longer is dropped, and so is one that has sent nothing when
                // a newer connection needs its place.
                tokio::select! {
                    _ = tokio::time::timeout(SCRAPE_TIMEOUT, served) => {}
                    _ = closed => {}
                }
                // Ended: closed for the peer now, although the probe keeps the descriptor until
                // the next accept forgets it.
                if let Some(probe) = probe {
                    let _ = probe.shutdown(std::net::Shutdown::Both);
                }
            });
            // The new connection's task reads what it has sent before the next accept.
            tokio::task::yield_now().await;
        }
    });
}

/// The answer to one request: the two paths, nothing else.
fn answer(request: &Request<Incoming>, exporter: &Arc<Exporter>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let readable = matches!(*request.method(), Method::GET | Method::HEAD);
    match (path, readable) {
        ("/metrics", true) => {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok());
            let format = Format::negotiate(accept);
            respond(
                StatusCode::OK,
                format.content_type(),
                super::metrics::render(exporter, format),
            )
        }
        ("/healthz", true) => match exporter.health() {
            Health::Serving(text) => respond(StatusCode::OK, "text/plain; charset=utf-8", text),
            Health::NotServing(text) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                text.to_owned(),
            ),
        },
        ("/metrics" | "/healthz", false) => {
            let mut response = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "only GET and HEAD\n".to_owned(),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the broker serves /metrics and /healthz\n".to_owned(),
        ),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
