//! The HTTP gateway ("fproxy"): freesites in an ordinary browser.
//!
//! `GET /CHK@…/file`, `/SSK@…/site-3/page.html`, `/USK@…/site/3/…`,
//! `/KSK@name` fetch a document through the client layer (manifests,
//! default documents, USK editions) into a temporary file, then serve it
//! through the content filter ([`lichen_filter`]); types sent unfiltered
//! (images, plain text, downloads) are sent while the fetch writes them. A
//! fetch that takes longer than a moment gets a self-refreshing progress
//! page while it goes on in the background. `/` is the home page (status,
//! open a key, upload a file, request queue).
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
//! | this one | start, the router, the accept loop |
//! | `home`, `upload`, `keys` | the handlers: home page and outside-link warning, the upload form, documents by key |
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
mod respond;
mod send;
mod state;
mod upload;

pub use guard::CSP;
pub use state::{Gateway, Options};

use crate::config::client_allowed;
use crate::node::Node;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;

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
        .route("/external-link", get(home::external_link))
        .fallback(keys::key_request)
        .layer(middleware::from_fn(guard::guard))
        .with_state(gw)
}

/// Accept connections until the node shuts down.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = router(gw.clone());
    let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let allowed = gw.node.config.gateway.allowed_hosts.clone();
    let shutdown = gw.node.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
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
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tracing::debug!("gateway: too many connections");
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let header_timeout = gw.opts.header_timeout;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
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
            }
        });
    }
}
