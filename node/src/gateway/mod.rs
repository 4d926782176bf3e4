//! The HTTP gateway ("fproxy"): freesites in an ordinary browser.
//!
//! `GET /CHK@…/file`, `/SSK@…/site-3/page.html`, `/USK@…/site/3/…`,
//! `/KSK@name` fetch a document through the client layer (manifests,
//! default documents, USK editions) into a temporary file, then serve it
//! through the content filter ([`lichen_filter`]); types sent unfiltered
//! (images, plain text, downloads) are sent while the fetch writes them. A
//! fetch that takes longer than a moment gets a self-refreshing progress
//! page while it goes on in the background. `/` is the home page (status,
//! open a key, upload a file, request queue); `/settings` the node's
//! settings, changed by a form.
//!
//! Every connection is checked against the loopback/allow-list; every
//! request against the `Host` header (an IP literal or `localhost`, which
//! defeats DNS rebinding); key requests and uploads from another web site
//! (`Sec-Fetch-Site`, `Origin`, `Referer`) are refused before anything is
//! fetched or looked up; every response carries a strict
//! `Content-Security-Policy`. See `docs/gateway.md`.
//!
//! Modules, users above helpers (imports only go down):
//!
//! | module | what |
//! | --- | --- |
//! | this one | start, the router, the accept loop and its connection slots |
//! | `home`, `upload`, `settings`, `peers`, `keys` | the handlers: home page and outside-link warning, the upload form, the settings and first-run forms, the peers page and its forms, documents by key |
//! | `guard` | the `Host` check, path limit and security headers on every response |
//! | `origin` | whether a request comes from another site (key requests and uploads refuse those) |
//! | `state` | the shared [`Gateway`] state and its [`Options`] |
//! | `jobs` | the fetches, one per key, bounded, kept a while after they end |
//! | `editions` | newest USK editions seen, and the background look-ahead |
//! | `send` | a fetched document's response: filtered, checked or as it is, with ranges |
//! | `doc` | a fetched document's sealed file, read while it is written, and its job's state |
//! | `respond` | response builders and request-parsing helpers |
//! | [`pages`] | the gateway's own pages |

mod doc;
mod editions;
mod guard;
mod home;
mod jobs;
mod keys;
mod origin;
pub mod pages;
mod peers;
mod respond;
mod send;
mod settings;
mod state;
mod upload;

pub use guard::CSP;
pub use state::{Gateway, Options};

use crate::config::client_allowed;
use crate::node::Node;
use crate::util::admission::{self, Gate, Limits, Ticket};
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::net::TcpListener;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Connections from one source range (IPv4 /24, IPv6 /64) waiting for
/// their request header at once; the range's oldest makes room for its
/// newest.
pub const MAX_WAITING_PER_RANGE: usize = 64;

/// Bind and start the gateway if `node.config.gateway.enabled`. Returns
/// the address it listens on.
///
/// # Errors
/// The listen address cannot be bound.
pub async fn start(node: &Arc<Node>) -> anyhow::Result<Option<SocketAddr>> {
    start_with(node, Options::default()).await
}

/// [`start`] with tunables.
///
/// # Errors
/// The listen address cannot be bound.
pub async fn start_with(node: &Arc<Node>, opts: Options) -> anyhow::Result<Option<SocketAddr>> {
    use anyhow::Context as _;
    if !node.config.gateway.enabled {
        return Ok(None);
    }
    let addr = node.config.gateway.listen;
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for the HTTP gateway on {addr} (is another node running?)")
    })?;
    let local = listener.local_addr()?;
    tracing::info!("HTTP gateway on http://{local}/");
    let gw = Gateway::new(node.clone(), opts);
    tokio::spawn(serve(gw, listener));
    Ok(Some(local))
}

/// The router (routes, security headers, Host check).
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", get(home::home))
        .route(
            "/upload",
            post(upload::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/settings", get(settings::show).post(settings::change))
        .route("/peers", get(peers::show))
        .route("/peers/add", post(peers::add))
        .route("/peers/invite", post(peers::invite))
        .route("/peers/remove", post(peers::remove))
        .route(
            "/first-run",
            get(settings::first_run).post(settings::first_run_done),
        )
        .route("/external-link", get(home::external_link))
        .fallback(keys::key_request)
        .layer(middleware::from_fn(guard::guard))
        .with_state(gw)
}

/// Accept connections until the node shuts down, within the connection
/// slots ([`crate::util::admission`]): when they are full, the oldest
/// connection that has not sent a complete request header (or is idle
/// between requests) is closed to make room; such connections get
/// [`Options::header_timeout`], [`Options::pressed_header_timeout`] while
/// more than half the slots are taken.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener) {
    let app = router(gw.clone());
    let gate = Gate::new(Limits {
        slots: MAX_CONNECTIONS,
        per_range: MAX_WAITING_PER_RANGE,
        deadline: gw.opts.header_timeout,
        pressed_deadline: gw.opts.pressed_header_timeout,
        loopback_sources: gw.opts.loopback_sources,
    });
    let allowed = gw.node.config.gateway.allowed_hosts.clone();
    let shutdown = gw.node.shutdown.clone();
    let mut sweep_at = None;
    let mut refused: u64 = 0;
    loop {
        // Idle kept-alive connections start waiting without an accept:
        // look again within a second while any connection is held.
        let at = sweep_at.or_else(|| (!gate.is_empty()).then(|| Instant::now() + SWEEP));
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            () = admission::sleep_until(at) => {
                sweep_at = gate.sweep(Instant::now());
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("gateway accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !client_allowed(peer.ip(), &allowed) {
            tracing::debug!("gateway: refused a connection from a host not in allowed_hosts");
            continue;
        }
        let Some(ticket) = gate.enter(Instant::now(), peer.ip()) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::info!(
                    refused,
                    "gateway: every connection slot busy; connection closed"
                );
            }
            continue;
        };
        sweep_at = gate.sweep(Instant::now());
        let opts = (gw.opts.header_timeout, shutdown.clone());
        tokio::spawn(connection(app.clone(), stream, ticket, opts));
    }
}

/// Sweep the slots at least this often while any connection is held.
const SWEEP: Duration = Duration::from_secs(1);

/// Marks its connection waiting again when dropped: held by a response
/// body until it is sent (or dropped).
struct Idle(Arc<Ticket>);

impl Drop for Idle {
    fn drop(&mut self) {
        self.0.wait(Instant::now());
    }
}

/// Serve one connection until it ends, the node shuts down or the slots
/// policy closes it (only while it waits for a request).
async fn connection(
    app: Router,
    stream: tokio::net::TcpStream,
    ticket: Ticket,
    (header_timeout, shutdown): (Duration, tokio_util::sync::CancellationToken),
) {
    use http_body_util::BodyExt as _;
    use hyper_util::rt::{TokioIo, TokioTimer};
    let ticket = Arc::new(ticket);
    let inner = hyper_util::service::TowerToHyperService::new(app);
    let t = ticket.clone();
    let svc = hyper::service::service_fn(move |req| {
        // A complete request header: busy until its response is sent.
        t.busy();
        let idle = Idle(t.clone());
        let call = hyper::service::Service::call(&inner, req);
        async move {
            let resp = call.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                axum::body::Body::new(b.map_frame(move |f| {
                    let _ = &idle;
                    f
                }))
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .max_headers(64)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("gateway connection: {e}");
            }
        }
        () = shutdown.cancelled() => {}
        () = ticket.closed() => tracing::debug!("gateway: a waiting connection closed (slots)"),
    }
}
