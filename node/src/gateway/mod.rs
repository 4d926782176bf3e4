//! The HTTP gateway ("fproxy"): freesites in an ordinary browser.
//!
//! `GET /CHK@…/file`, `/SSK@…/site-3/page.html`, `/USK@…/site/3/…`,
//! `/KSK@name` fetch a document through the client layer (manifests,
//! default documents, USK editions) into a temporary file, then serve it
//! through the content filter ([`filter`]); types sent unfiltered (images,
//! plain text, downloads) are sent while the fetch writes them. A fetch
//! that takes longer than
//! a moment gets a self-refreshing progress page while it goes on in the
//! background. `/` is the home page (status, open a key, upload a file,
//! request queue).
//!
//! Every connection is checked against the loopback/allow-list; every
//! request against the `Host` header (an IP literal or `localhost`, which
//! defeats DNS rebinding); every response carries a strict
//! `Content-Security-Policy`. See `docs/gateway.md`.

pub mod filter;
pub mod pages;

use crate::config::client_allowed;
use crate::node::Node;
use crate::ops::{self as engine, GetSpec, PutData, PutSpec};
use crate::requests::Scope;
use crate::sealed::SealKey;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lichen_crypto::{FreenetUri, KeyUri};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// The security headers on every response.
pub const CSP: &str =
    "default-src 'self'; script-src 'none'; object-src 'none'; frame-src 'none'; \
base-uri 'none'; form-action 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
font-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// Largest HTML or CSS document filtered (larger: offered as a download).
const MAX_FILTERED: u64 = 8 << 20;
/// Largest document the gateway fetches.
const MAX_DOCUMENT: u64 = 4 << 30;
/// Largest path (with query) accepted.
const MAX_PATH: usize = 4096;
/// Fetches held (running or finished) at once.
const MAX_JOBS: usize = 128;
/// Fetches running at once.
const MAX_RUNNING: usize = 8;
/// How long a finished fetch is kept for further requests (ranges,
/// reloads) after its last use.
const DONE_TTL: Duration = Duration::from_secs(120);
/// How long a failure is remembered (so a progress page sees it).
const FAILED_TTL: Duration = Duration::from_secs(10);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Largest upload through the form.
const MAX_UPLOAD: u64 = 4 << 30;

/// Tunables (tests shorten the progress wait).
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a page request waits for a fetch before answering with
    /// the progress page.
    pub progress_after: Duration,
    /// How long a sub-resource request (image, stylesheet) waits.
    pub resource_wait: Duration,
    /// Time allowed to send the request headers.
    pub header_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            progress_after: Duration::from_secs(2),
            resource_wait: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// A fetched document in a sealed temporary file, written from its first
/// byte on while the fetch runs, and deleted when the last handle goes
/// (the job's, or that of a response still sending it).
#[derive(Debug)]
struct DocFile {
    /// Sealed under `key` (see [`crate::sealed`]).
    path: PathBuf,
    key: SealKey,
    mime: String,
    size: u64,
}

impl DocFile {
    /// The whole document, decrypted (a finished job's).
    async fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let mut b = tokio::fs::read(&self.path).await?;
        self.key.open_in_place(0, &mut b);
        Ok(b)
    }
}

impl Drop for DocFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The part of a running job's document already on disk.
#[derive(Debug, Clone)]
struct Streamed {
    file: Arc<DocFile>,
    /// Bytes written so far, in order from the first.
    written: u64,
}

/// Seals what the fetch decodes into the job's file and tells the job's
/// watchers how far it has got.
struct PublishingWriter {
    inner: crate::sealed::SealedWriter<std::fs::File>,
    tx: watch::Sender<JobState>,
    written: u64,
}

impl std::io::Write for PublishingWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(b)])
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = self.inner.write_vectored(bufs)?;
        self.written += n as u64;
        let w = self.written;
        self.tx.send_modify(|s| {
            if let JobState::Running {
                streamed: Some(st), ..
            } = s
            {
                st.written = w;
            }
        });
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Debug, Clone)]
struct JobError {
    status: StatusCode,
    title: &'static str,
    detail: String,
    redirect: Option<String>,
}

#[derive(Debug, Clone)]
enum JobState {
    /// Blocks done and needed; once the document is found, its file as it
    /// is written.
    Running {
        done: u64,
        needed: u64,
        streamed: Option<Streamed>,
    },
    Done(Arc<DocFile>),
    Failed(Arc<JobError>),
}

#[derive(Debug)]
struct Job {
    rx: watch::Receiver<JobState>,
    last_used: Instant,
}

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    node: Arc<Node>,
    opts: Options,
    csrf: String,
    jobs: Mutex<HashMap<String, Job>>,
    running: Arc<Semaphore>,
    /// Newest edition seen per USK (`key/site`).
    usk_latest: Mutex<HashMap<String, i64>>,
    /// USKs whose next editions are being probed in the background.
    usk_probing: Mutex<std::collections::HashSet<String>>,
    /// (file name, URI) of uploads made through the form.
    uploads: Mutex<VecDeque<(String, String)>>,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Gateway {
    /// Gateway state for `node`.
    #[must_use]
    pub fn new(node: Arc<Node>, opts: Options) -> Arc<Self> {
        let secret: [u8; 32] = rand::random();
        Arc::new(Gateway {
            node,
            opts,
            csrf: hex(&secret),
            jobs: Mutex::new(HashMap::new()),
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
            usk_latest: Mutex::new(HashMap::new()),
            usk_probing: Mutex::new(std::collections::HashSet::new()),
            uploads: Mutex::new(VecDeque::new()),
        })
    }

    fn csrf_for(&self, form: &str) -> String {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(format!("{}:{form}", self.csrf)))
    }
}

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
        .route("/", get(home))
        .route("/upload", post(upload).layer(DefaultBodyLimit::disable()))
        .route("/external-link", get(external_link))
        .fallback(key_request)
        .layer(middleware::from_fn(guard))
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

// ----------------------------------------------------------------------
// Responses

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    html(status, pages::error(title, detail))
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut r = html(
        status,
        pages::page(
            "Moved",
            &format!("<p><a href=\"{0}\">{0}</a></p>", pages::esc(location)),
        ),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Host header: an IP literal or `localhost` (a DNS name could be
/// rebound to 127.0.0.1 by a web page's server).
fn host_ok(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

async fn guard(req: Request, next: Next) -> Response {
    let mut resp = if host_ok(req.headers()) {
        if req.uri().path().len() + req.uri().query().map_or(0, str::len) > MAX_PATH {
            error_page(
                StatusCode::URI_TOO_LONG,
                "Address too long",
                "The requested address is longer than the gateway accepts.",
            )
        } else {
            next.run(req).await
        }
    } else {
        error_page(
            StatusCode::FORBIDDEN,
            "Host not allowed",
            "The gateway answers only requests addressed to an IP address or to localhost \
             (this protects it from DNS rebinding by web pages).",
        )
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Query parameters, percent-decoded (`+` as space).
fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .take(32)
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

// ----------------------------------------------------------------------
// Home, upload, external links

async fn home(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let params = query_params(req.uri().query());
    if let Some((_, key)) = params.iter().find(|(k, _)| k == "key") {
        return open_key(key);
    }
    let node = &gw.node;
    let stats = {
        let store = node.store.clone();
        tokio::task::spawn_blocking(move || store.stats())
            .await
            .unwrap_or_default()
    };
    let spaces = lichen_store::Space::ALL
        .iter()
        .map(|s| {
            let st = stats.space(*s);
            (space_name(*s), st.bytes, st.budget, st.blocks)
        })
        .collect();
    let limit = |n: u64| {
        if n == 0 {
            "unlimited".to_owned()
        } else {
            format!("{} KiB/s", n / 1024)
        }
    };
    let status = pages::Status {
        peers: node.peer_count(),
        bandwidth: format!(
            "limits: upload {}, download {}",
            limit(node.config.network.upload_limit),
            limit(node.config.network.download_limit)
        ),
        location: crate::status::location_fraction(node.identity.location),
        spaces,
        uptime_s: crate::node::now_ms().saturating_sub(node.started_ms) / 1000,
        gateway_jobs: gw.jobs.lock().map(|j| j.len()).unwrap_or(0),
    };
    let queue: Vec<pages::QueueRow> = node
        .requests
        .list(&[Scope::Global])
        .iter()
        .map(|r| {
            let st = r.snapshot();
            let state = match &st.outcome {
                None => "running".to_owned(),
                Some(
                    crate::requests::Outcome::PutOk { .. } | crate::requests::Outcome::GetOk { .. },
                ) => "done".to_owned(),
                Some(crate::requests::Outcome::PutErr { code, .. }) => {
                    format!("failed (insert code {code})")
                }
                Some(crate::requests::Outcome::GetErr { code, .. }) => {
                    format!("failed (fetch code {code})")
                }
            };
            pages::QueueRow {
                identifier: r.identifier.clone(),
                kind: r.header.name.clone(),
                uri: st
                    .uri
                    .clone()
                    .or_else(|| r.header.get("URI").map(str::to_owned)),
                progress: (st.progress.succeeded, st.progress.total),
                state,
            }
        })
        .collect();
    let uploads: Vec<(String, String)> = gw
        .uploads
        .lock()
        .map(|u| u.iter().cloned().collect())
        .unwrap_or_default();
    html(
        StatusCode::OK,
        pages::home(&status, &gw.csrf_for("upload"), &queue, &uploads),
    )
}

fn space_name(s: lichen_store::Space) -> &'static str {
    match s {
        lichen_store::Space::Store => "long-term store",
        lichen_store::Space::Cache => "cache",
        _ => "client cache",
    }
}

/// `/?key=URI`: redirect to the key's path.
fn open_key(key: &str) -> Response {
    let mut k = key.trim();
    // A pasted gateway address: keep what follows the host.
    if let Some(i) = ["CHK@", "SSK@", "USK@", "KSK@"]
        .iter()
        .filter_map(|p| k.to_ascii_uppercase().find(p))
        .min()
    {
        k = &k[i..];
    }
    match FreenetUri::parse(k) {
        Ok(u) if !is_insert_uri(&u) => redirect(StatusCode::SEE_OTHER, &key_path(&u)),
        Ok(_) => error_page(
            StatusCode::BAD_REQUEST,
            "This is an insert key",
            "Insert (private) keys cannot be opened in the browser: they would end up in its history.",
        ),
        Err(e) => error_page(
            StatusCode::BAD_REQUEST,
            "Not a valid key",
            &format!("The key cannot be read: {e}."),
        ),
    }
}

fn is_insert_uri(u: &FreenetUri) -> bool {
    match &u.key {
        KeyUri::ChkInsert | KeyUri::SskInsertNew => true,
        KeyUri::Ssk { key, .. } | KeyUri::Usk { key, .. } => key.private().is_some(),
        _ => false,
    }
}

/// The gateway path of a URI; directories (no meta-strings) end in `/`
/// so relative links resolve inside them.
fn key_path(u: &FreenetUri) -> String {
    if u.meta.is_empty() {
        format!("/{u}/")
    } else {
        format!("/{u}")
    }
}

async fn external_link(req: Request) -> Response {
    let params = query_params(req.uri().query());
    match params.iter().find(|(k, _)| k == "url") {
        Some((_, url)) => match filter::classify_url(url) {
            filter::UrlKind::External(u) => html(StatusCode::OK, pages::external_link(&u)),
            _ => error_page(
                StatusCode::BAD_REQUEST,
                "Not an outside link",
                "Only http and https links lead outside.",
            ),
        },
        None => error_page(StatusCode::BAD_REQUEST, "No link", "No url= given."),
    }
}

fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if origin != format!("http://{host}") {
            return false;
        }
    }
    true
}

fn safe_file_name(name: &str) -> String {
    let n: String = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    let n = n.trim_start_matches('.').to_owned();
    if n.is_empty() {
        "file".into()
    } else {
        n
    }
}

async fn upload(State(gw): State<Arc<Gateway>>, headers: HeaderMap, mut mp: Multipart) -> Response {
    if !same_origin(&headers) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The upload form was sent from another site.",
        );
    }
    let expected = gw.csrf_for("upload");
    let mut token_ok = false;
    let mut saved: Option<(PathBuf, u64, String, Option<String>)> = None;
    let chunk_timeout = Duration::from_secs(30);
    loop {
        let field = match tokio::time::timeout(chunk_timeout, mp.next_field()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                return error_page(StatusCode::BAD_REQUEST, "Bad upload", &e.body_text());
            }
            Err(_) => {
                return error_page(
                    StatusCode::REQUEST_TIMEOUT,
                    "Upload too slow",
                    "The upload stalled.",
                );
            }
        };
        match field.name() {
            Some("csrf") => {
                let mut field = field;
                let mut v = Vec::new();
                while let Ok(Ok(Some(c))) = tokio::time::timeout(chunk_timeout, field.chunk()).await
                {
                    v.extend_from_slice(&c);
                    if v.len() > 256 {
                        break;
                    }
                }
                token_ok = constant_eq(&v, expected.as_bytes());
            }
            Some("file") if token_ok => {
                let name = safe_file_name(field.file_name().unwrap_or("file"));
                let mime = field
                    .content_type()
                    .map(str::to_owned)
                    .filter(|m| m != "application/octet-stream");
                let path = gw.node.tmp_path("gw-upload");
                let Ok(mut f) = tokio::fs::File::create(&path).await else {
                    return error_page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Cannot store the upload",
                        "No temporary space.",
                    );
                };
                let mut field = field;
                let mut len = 0u64;
                loop {
                    match tokio::time::timeout(chunk_timeout, field.chunk()).await {
                        Ok(Ok(Some(c))) => {
                            len += c.len() as u64;
                            if len > MAX_UPLOAD || f.write_all(&c).await.is_err() {
                                let _ = tokio::fs::remove_file(&path).await;
                                return error_page(StatusCode::PAYLOAD_TOO_LARGE, "Upload too large", "The file is larger than the gateway accepts (or the disk is full).");
                            }
                        }
                        Ok(Ok(None)) => break,
                        Ok(Err(e)) => {
                            let _ = tokio::fs::remove_file(&path).await;
                            return error_page(
                                StatusCode::BAD_REQUEST,
                                "Bad upload",
                                &e.body_text(),
                            );
                        }
                        Err(_) => {
                            let _ = tokio::fs::remove_file(&path).await;
                            return error_page(
                                StatusCode::REQUEST_TIMEOUT,
                                "Upload too slow",
                                "The upload stalled.",
                            );
                        }
                    }
                }
                let _ = f.flush().await;
                saved = Some((path, len, name, mime));
            }
            _ => {}
        }
    }
    if !token_ok {
        if let Some((p, ..)) = saved {
            let _ = tokio::fs::remove_file(p).await;
        }
        return error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The form's token is missing or wrong. Reload the home page and try again.",
        );
    }
    let Some((path, len, name, mime)) = saved else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "No file",
            "Choose a file to insert.",
        );
    };
    let spec = PutSpec {
        uri: "CHK@".into(),
        data: if len == 0 {
            PutData::Empty
        } else {
            PutData::File {
                path: path.clone(),
                offset: 0,
                len,
            }
        },
        mime,
        dont_compress: false,
        chk_only: false,
        target_filename: Some(name.clone()),
    };
    let r = engine::put(&gw.node, spec, &|_| {}, &|_| {}).await;
    let _ = tokio::fs::remove_file(&path).await;
    match r {
        Ok(uri) => {
            if let Ok(mut u) = gw.uploads.lock() {
                u.push_back((name.clone(), uri.clone()));
                while u.len() > 20 {
                    u.pop_front();
                }
            }
            html(
                StatusCode::OK,
                pages::page(
                    "Inserted",
                    &format!(
                        "<p>{} is in the network as</p><p><a href=\"/{u}\"><code>{u}</code></a></p>",
                        pages::esc(&name),
                        u = pages::esc(&uri)
                    ),
                ),
            )
        }
        Err(f) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Insert failed",
            f.extra.as_deref().unwrap_or("unknown error"),
        ),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ----------------------------------------------------------------------
// Keys

/// After serving edition `ed` of a USK, look for newer editions in the
/// background (one probe task per USK at a time); a newer one found makes
/// the next request for an old edition redirect at once.
fn look_ahead(gw: &Arc<Gateway>, uri: &FreenetUri, id: String, ed: i64) {
    let KeyUri::Usk { key, site, .. } = &uri.key else {
        return;
    };
    let Ok(from) = u64::try_from(ed) else { return };
    if !gw
        .usk_probing
        .lock()
        .is_ok_and(|mut p| p.insert(id.clone()))
    {
        return;
    }
    let (gw, public, site) = (gw.clone(), key.public(), site.clone());
    tokio::spawn(async move {
        let blocks = engine::LocalBlocks::new(gw.node.clone());
        let found = engine::usk::latest_edition(blocks, public, site, from + 1).await;
        if let Some(latest) = found {
            if let (Ok(latest), Ok(mut m)) = (i64::try_from(latest), gw.usk_latest.lock()) {
                let v = m.entry(id.clone()).or_insert(latest);
                *v = (*v).max(latest);
            }
        }
        if let Ok(mut p) = gw.usk_probing.lock() {
            p.remove(&id);
        }
    });
}

fn usk_id(u: &FreenetUri) -> Option<(String, i64)> {
    match &u.key {
        KeyUri::Usk { edition, .. } => {
            let base = u.to_request().with_edition(0);
            let mut base = FreenetUri::new(base.key);
            base.meta.clear();
            Some((base.to_string(), *edition))
        }
        _ => None,
    }
}

async fn key_request(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "Documents can only be read (GET).",
        );
    }
    let path = req.uri().path();
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
        || lower.contains("%00")
    {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Bad path",
            "Encoded slashes, backslashes and NUL are not allowed in paths.",
        );
    }
    let raw = &path[1..];
    if !filter::is_key_path(raw) {
        return error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This is not a key. Keys start with CHK@, SSK@, USK@ or KSK@.",
        );
    }
    let uri = match FreenetUri::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Not a valid key",
                &format!("The key cannot be read: {e}."),
            )
        }
    };
    if is_insert_uri(&uri) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This is an insert key",
            "Insert (private) keys cannot be opened in the browser.",
        );
    }
    let params = query_params(req.uri().query());
    let force_download = params.iter().any(|(k, _)| k == "forcedownload");
    let max_size = match params.iter().find(|(k, _)| k == "max-size") {
        Some((_, v)) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "Bad max-size",
                    "max-size must be a number of bytes.",
                )
            }
        },
        None => None,
    };
    let query = req.uri().query().map_or(String::new(), |q| format!("?{q}"));
    // A directory without its trailing slash: relative links would
    // resolve one level up.
    if uri.meta.is_empty() && !path.ends_with('/') {
        return redirect(
            StatusCode::MOVED_PERMANENTLY,
            &format!("{}{query}", key_path(&uri)),
        );
    }
    // A newer USK edition already known: redirect without fetching.
    if let Some((id, ed)) = usk_id(&uri) {
        let latest = gw.usk_latest.lock().ok().and_then(|m| m.get(&id).copied());
        if let Some(l) = latest {
            if ed >= 0 && l > ed {
                let new = uri.with_edition(l);
                return redirect(
                    StatusCode::MOVED_PERMANENTLY,
                    &format!("{}{query}", key_path(&new)),
                );
            }
        }
    }
    let key = uri.to_string();
    let mut rx = match job_for(&gw, &key, &uri) {
        Ok(rx) => rx,
        Err(resp) => return *resp,
    };
    // Only browser navigations get the progress page; sub-resources and
    // non-browser clients (no Sec-Fetch-Dest) wait for the document.
    let is_document = req
        .headers()
        .get("sec-fetch-dest")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|d| d == "document" || d == "iframe");
    let wait = if is_document {
        gw.opts.progress_after
    } else {
        gw.opts.resource_wait
    };
    let state = {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            let st = rx.borrow_and_update().clone();
            match &st {
                JobState::Running {
                    streamed: Some(s), ..
                } if sent_unfiltered(&s.file.mime, force_download) => {
                    // Sent as it arrives: no need to wait for the end.
                    break JobState::Done(s.file.clone());
                }
                JobState::Running { .. } => {}
                _ => break st,
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break rx.borrow().clone(); },
                () = &mut deadline => break rx.borrow().clone(),
            }
        }
    };
    match state {
        JobState::Running { done, needed, .. } => {
            html(StatusCode::OK, pages::progress(path, done, needed))
        }
        JobState::Failed(e) => {
            if let Some(to) = &e.redirect {
                if let Ok(new) = FreenetUri::parse(to) {
                    if let Some((id, ed)) = usk_id(&new) {
                        if let Ok(mut m) = gw.usk_latest.lock() {
                            let v = m.entry(id).or_insert(ed);
                            *v = (*v).max(ed);
                        }
                    }
                    return redirect(
                        StatusCode::MOVED_PERMANENTLY,
                        &format!("{}{query}", key_path(&new)),
                    );
                }
            }
            error_page(e.status, e.title, &e.detail)
        }
        JobState::Done(file) => {
            if let Some((id, ed)) = usk_id(&uri) {
                if let Ok(mut m) = gw.usk_latest.lock() {
                    let v = m.entry(id.clone()).or_insert(ed);
                    *v = (*v).max(ed);
                }
                look_ahead(&gw, &uri, id, ed);
            }
            let range = req
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok());
            let head = req.method() == Method::HEAD;
            let doc = Doc { file, job: rx };
            serve_document(&uri, path, doc, force_download, max_size, range, head).await
        }
    }
}

/// The job for `key`, started if needed.
fn job_for(
    gw: &Arc<Gateway>,
    key: &str,
    uri: &FreenetUri,
) -> Result<watch::Receiver<JobState>, Box<Response>> {
    let mut jobs = gw.jobs.lock().map_err(|_| {
        Box::new(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "lock poisoned",
        ))
    })?;
    let now = Instant::now();
    if let Some(j) = jobs.get_mut(key) {
        j.last_used = now;
        return Ok(j.rx.clone());
    }
    // Forget old results.
    jobs.retain(|_, j| match &*j.rx.borrow() {
        JobState::Running { .. } => true,
        JobState::Done(_) => now.duration_since(j.last_used) < DONE_TTL,
        JobState::Failed(_) => now.duration_since(j.last_used) < FAILED_TTL,
    });
    while jobs.len() >= MAX_JOBS {
        let oldest = jobs
            .iter()
            .filter(|(_, j)| !matches!(&*j.rx.borrow(), JobState::Running { .. }))
            .min_by_key(|(_, j)| j.last_used)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                jobs.remove(&k);
            }
            None => {
                return Err(Box::new(error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many fetches",
                    "The gateway is running as many fetches as it can. Try again in a moment.",
                )))
            }
        }
    }
    let (tx, rx) = watch::channel(JobState::Running {
        done: 0,
        needed: 0,
        streamed: None,
    });
    jobs.insert(
        key.to_owned(),
        Job {
            rx: rx.clone(),
            last_used: now,
        },
    );
    drop(jobs);
    let node = gw.node.clone();
    let running = gw.running.clone();
    let uri_s = uri.to_string();
    tokio::spawn(async move {
        let Ok(_permit) = running.acquire_owned().await else {
            return;
        };
        let out = node.tmp_path("gw");
        let key = SealKey::random();
        let spec = GetSpec {
            uri: uri_s,
            max_size: Some(MAX_DOCUMENT),
            out: Some(out.clone()),
            seal: Some(key.clone()),
            ds_only: false,
            ignore_ds: false,
            retries: 0,
            // A page's files and a reload find what was fetched.
            write_client_cache: true,
        };
        let tx2 = tx.clone();
        let progress = move |p: crate::requests::Progress| {
            tx2.send_modify(|s| {
                if let JobState::Running { done, needed, .. } = s {
                    *done = p.succeeded;
                    *needed = p.required;
                }
            });
        };
        // The document goes to its file as it is decoded, and requests
        // that serve it unfiltered send it from there meanwhile.
        let (tx3, out2, key2) = (tx.clone(), out.clone(), key.clone());
        let open: engine::StreamOpen = Box::new(move |size, mime, _local| {
            let f = std::fs::File::create(&out2).ok()?;
            let file = Arc::new(DocFile {
                path: out2,
                key: key2.clone(),
                mime: mime.to_owned(),
                size,
            });
            tx3.send_modify(|s| {
                if let JobState::Running { streamed, .. } = s {
                    *streamed = Some(Streamed { file, written: 0 });
                }
            });
            Some(Box::new(PublishingWriter {
                inner: crate::sealed::SealedWriter::new(f, &key2),
                tx: tx3,
                written: 0,
            }))
        });
        let result = tokio::select! {
            r = engine::get_streaming(&node, spec, Some(open), &progress) => Some(r),
            () = node.shutdown.cancelled() => None,
        };
        let streamed = match &*tx.borrow() {
            JobState::Running { streamed, .. } => streamed.as_ref().map(|s| s.file.clone()),
            _ => None,
        };
        let state = match result {
            None => JobState::Failed(Arc::new(JobError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                title: "Shutting down",
                detail: "The node is shutting down.".into(),
                redirect: None,
            })),
            Some(Ok(done)) => JobState::Done(match streamed {
                Some(file) if done.streamed => file,
                _ => Arc::new(DocFile {
                    path: out,
                    key,
                    mime: done.mime,
                    size: done.len,
                }),
            }),
            Some(Err(f)) => JobState::Failed(Arc::new(job_error(&f))),
        };
        tx.send_replace(state);
    });
    Ok(rx)
}

fn job_error(f: &engine::Failure<lichen_fcp::FetchErrorCode>) -> JobError {
    let code = f.code.code();
    let detail = f.extra.clone().unwrap_or_default();
    let (status, title) = match code {
        27 => (StatusCode::MOVED_PERMANENTLY, "Newer edition"),
        13 | 28 | 14 | 30 => (StatusCode::NOT_FOUND, "Not found"),
        10 => (StatusCode::NOT_FOUND, "Not in this site"),
        24 => (StatusCode::NOT_FOUND, "No default document"),
        11 | 20 => (StatusCode::BAD_REQUEST, "Bad key or path"),
        21 | 22 => (StatusCode::PAYLOAD_TOO_LARGE, "Too large"),
        4 | 6 | 9 | 34 | 35 => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Damaged or hostile document",
        ),
        15 => (StatusCode::SERVICE_UNAVAILABLE, "Overloaded"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "Fetch failed"),
    };
    let detail = match code {
        13 | 28 => "The document was not found (yet). It may not be in the network, or not reachable right now.".to_owned(),
        _ => detail,
    };
    JobError {
        status,
        title,
        detail,
        redirect: f.redirect.clone(),
    }
}

/// Parse a single `bytes=` range against `size`: `Ok(None)` for no (or
/// an ignored multi-) range, `Err` for unsatisfiable.
fn parse_range(range: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(r) = range else { return Ok(None) };
    let Some(spec) = r.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (s, e)
    };
    if size == 0 || start > end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Whether a document of this type is sent as it is (no filter reads it
/// whole first), so a request may send it while it is fetched.
fn sent_unfiltered(mime: &str, force_download: bool) -> bool {
    let m = base_mime(mime);
    force_download || m == "text/plain" || filter::is_passable_image(&m)
}

/// A media type without its parameters, lower-cased (`Text/HTML;
/// charset=x` → `text/html`): what [`serve_document`] dispatches on.
fn base_mime(mime: &str) -> String {
    let m = mime.to_ascii_lowercase();
    m.split(';').next().unwrap_or("").trim().to_owned()
}

/// A document to serve: its file, finished or still being written, and
/// the job that writes it.
struct Doc {
    file: Arc<DocFile>,
    job: watch::Receiver<JobState>,
}

impl Doc {
    /// Wait until more than `pos` bytes may be read (while the fetch runs,
    /// all but the last byte written: a response never ends before the
    /// fetch has succeeded). Returns how many may be read.
    async fn readable_past(&mut self, pos: u64) -> std::io::Result<u64> {
        loop {
            let n = match &*self.job.borrow_and_update() {
                JobState::Running {
                    streamed: Some(s), ..
                } => s.written.min(self.file.size.saturating_sub(1)),
                JobState::Running { .. } => 0,
                JobState::Done(_) => self.file.size,
                JobState::Failed(e) => {
                    return Err(std::io::Error::other(format!(
                        "the fetch failed: {}",
                        e.title
                    )))
                }
            };
            if n > pos || n == self.file.size {
                return Ok(n);
            }
            if self.job.changed().await.is_err() {
                return Err(std::io::Error::other("the fetch ended"));
            }
        }
    }

    /// Bytes `start..start + len` as a body sent as they become readable.
    fn body(self, start: u64, len: u64) -> Body {
        let end = start + len;
        let state = (self, None::<tokio::fs::File>, start);
        let stream = futures::stream::try_unfold(state, move |(mut doc, f, pos)| async move {
            if pos >= end {
                return Ok(None);
            }
            let upto = doc.readable_past(pos).await?.min(end);
            if upto <= pos {
                return Err(std::io::Error::other(
                    "the document is shorter than announced",
                ));
            }
            let mut f = match f {
                Some(f) => f,
                None => {
                    let mut f = tokio::fs::File::open(&doc.file.path).await?;
                    f.seek(std::io::SeekFrom::Start(pos)).await?;
                    f
                }
            };
            let want = usize::try_from(upto - pos)
                .unwrap_or(usize::MAX)
                .min(256 * 1024);
            let mut buf = vec![0u8; want];
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::other("the document file ended early"));
            }
            buf.truncate(n);
            doc.file.key.open_in_place(pos, &mut buf);
            Ok(Some((
                axum::body::Bytes::from(buf),
                (doc, Some(f), pos + n as u64),
            )))
        });
        Body::from_stream(stream)
    }

    /// The first `n` bytes (fewer if the document is shorter).
    async fn head(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let want = (n as u64).min(self.file.size);
        if want > 0 {
            self.readable_past(want - 1).await?;
        }
        let mut f = tokio::fs::File::open(&self.file.path).await?;
        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(n)];
        f.read_exact(&mut buf).await?;
        self.file.key.open_in_place(0, &mut buf);
        Ok(buf)
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_document(
    uri: &FreenetUri,
    path: &str,
    mut doc: Doc,
    force_download: bool,
    max_size: Option<u64>,
    range: Option<&str>,
    head: bool,
) -> Response {
    let file = doc.file.clone();
    if let Some(max) = max_size {
        if file.size > max && !force_download {
            return html(
                StatusCode::PAYLOAD_TOO_LARGE,
                pages::page(
                    "Larger than asked",
                    &format!(
                        "<p>The document is {} bytes, more than the max-size of {max}.</p><p><a href=\"{}\">Open it anyway</a></p>",
                        file.size,
                        pages::esc(path)
                    ),
                ),
            );
        }
    }
    let mime = base_mime(&file.mime);
    if force_download {
        let name = uri
            .meta
            .last()
            .map_or_else(|| "download".to_owned(), |n| safe_file_name(n));
        return serve_file(
            doc,
            "application/octet-stream",
            Some(&format!("attachment; filename=\"{name}\"")),
            range,
            head,
        )
        .await;
    }
    match mime.as_str() {
        "text/html" | "application/xhtml+xml" | "text/css" => {
            if file.size > MAX_FILTERED {
                return html(
                    StatusCode::OK,
                    pages::download_warning(path, &mime, file.size, "This page is too large for the content filter."),
                );
            }
            let Ok(bytes) = file.read_all().await else {
                return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Read error", "The fetched document could not be read back.");
            };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let is_css = mime == "text/css";
            let out = tokio::task::spawn_blocking(move || {
                if is_css {
                    filter::filter_css(&text)
                } else {
                    filter::filter_html(&text)
                }
            })
            .await
            .unwrap_or_default();
            let ct = if is_css { "text/css; charset=utf-8" } else { "text/html; charset=utf-8" };
            let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, ct)], out).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=600"));
            r
        }
        "text/plain" => serve_file(doc, "text/plain; charset=utf-8", None, range, head).await,
        m if filter::is_passable_image(m) => {
            let headb = doc.head(16).await.unwrap_or_default();
            if filter::image_magic_ok(m, &headb) {
                serve_file(doc, m, None, range, head).await
            } else {
                html(
                    StatusCode::OK,
                    pages::download_warning(path, &mime, file.size, "This file claims to be an image but its content is not of that type."),
                )
            }
        }
        "image/svg+xml" => html(
            StatusCode::OK,
            pages::download_warning(path, &mime, file.size, "SVG images can contain scripts and links to the outside web; the gateway does not show them."),
        ),
        _ => html(
            StatusCode::OK,
            pages::download_warning(path, &mime, file.size, "The gateway cannot check this type of file for content that would reveal you."),
        ),
    }
}

async fn serve_file(
    doc: Doc,
    content_type: &str,
    disposition: Option<&str>,
    range: Option<&str>,
    head: bool,
) -> Response {
    let size = doc.file.size;
    let (status, start, len) = match parse_range(range, size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Err(()) => {
            let mut r = error_page(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Bad range",
                "The requested range is outside the document.",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if head {
        Body::empty()
    } else {
        doc.body(start, len)
    };
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, max-age=600");
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if let Some(d) = disposition {
        b = b.header(header::CONTENT_DISPOSITION, d);
    }
    b.body(body).unwrap_or_else(|_| {
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "response",
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A job whose document is `data` (text/plain), its file created and
    /// nothing written yet; the writer the fetch would use.
    fn running_job(
        dir: &std::path::Path,
        data: &[u8],
    ) -> (Arc<DocFile>, watch::Sender<JobState>, PublishingWriter) {
        let key = SealKey::random();
        let path = dir.join("doc");
        let f = std::fs::File::create(&path).unwrap();
        let file = Arc::new(DocFile {
            path,
            key: key.clone(),
            mime: "text/plain".into(),
            size: data.len() as u64,
        });
        let (tx, _) = watch::channel(JobState::Running {
            done: 0,
            needed: 0,
            streamed: Some(Streamed {
                file: file.clone(),
                written: 0,
            }),
        });
        let w = PublishingWriter {
            inner: crate::sealed::SealedWriter::new(f, &key),
            tx: tx.clone(),
            written: 0,
        };
        (file, tx, w)
    }

    /// Read `body` until it holds at least `n` bytes.
    async fn read_to(
        body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
        got: &mut Vec<u8>,
        n: usize,
    ) {
        use futures::StreamExt;
        while got.len() < n {
            let b = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("data in time")
                .expect("not the end")
                .unwrap();
            got.extend_from_slice(&b);
        }
    }

    #[tokio::test]
    async fn a_document_is_sent_while_its_fetch_writes_it() {
        use futures::StreamExt;
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (file, tx, mut w) = running_job(dir.path(), &data);
        let doc = Doc {
            file: file.clone(),
            job: tx.subscribe(),
        };
        let mut body = doc.body(0, data.len() as u64).into_data_stream();
        w.write_all(&data[..100_000]).unwrap();
        let mut got = Vec::new();
        read_to(&mut body, &mut got, 100_000).await;
        assert_eq!(got, data[..100_000]);
        // Nothing more is sent until more is written.
        let wait = Duration::from_millis(100);
        assert!(tokio::time::timeout(wait, body.next()).await.is_err());
        // A range that starts further on waits for its bytes too.
        let ranged = Doc {
            file: file.clone(),
            job: tx.subscribe(),
        };
        let mut ranged = ranged.body(250_000, 10).into_data_stream();
        assert!(tokio::time::timeout(wait, ranged.next()).await.is_err());
        w.write_all(&data[100_000..]).unwrap();
        let mut r = Vec::new();
        read_to(&mut ranged, &mut r, 10).await;
        assert_eq!(r, data[250_000..250_010]);
        // All but the last byte while the fetch runs: the response cannot
        // end before the fetch has succeeded.
        read_to(&mut body, &mut got, data.len() - 1).await;
        assert_eq!(got.len(), data.len() - 1);
        assert!(tokio::time::timeout(wait, body.next()).await.is_err());
        tx.send_replace(JobState::Done(file));
        read_to(&mut body, &mut got, data.len()).await;
        assert_eq!(got, data);
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn a_fetch_failing_mid_document_breaks_the_response() {
        use futures::StreamExt;
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 50_000];
        let (file, tx, mut w) = running_job(dir.path(), &data);
        let path = file.path.clone();
        let doc = Doc {
            file,
            job: tx.subscribe(),
        };
        let mut body = doc.body(0, data.len() as u64).into_data_stream();
        w.write_all(&data[..20_000]).unwrap();
        let mut got = Vec::new();
        read_to(&mut body, &mut got, 20_000).await;
        tx.send_replace(JobState::Failed(Arc::new(JobError {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            detail: String::new(),
            redirect: None,
        })));
        let end = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap();
        assert!(matches!(end, Some(Err(_))), "{end:?}");
        // The file goes with the last handle on it.
        drop(body);
        assert!(!path.exists());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=0-99"), 10), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=x-"), 10), Err(()));
    }

    #[test]
    fn hosts() {
        let mut h = HeaderMap::new();
        for (host, ok) in [
            ("127.0.0.1:8888", true),
            ("localhost:8888", true),
            ("[::1]:8888", true),
            ("evil.example:8888", false),
            ("127.0.0.1.nip.io", false),
        ] {
            h.insert(header::HOST, HeaderValue::from_static(host));
            assert_eq!(host_ok(&h), ok, "{host}");
        }
        h.remove(header::HOST);
        assert!(!host_ok(&h));
    }

    #[test]
    fn file_names() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("a b\"c.png"), "abc.png");
        assert_eq!(safe_file_name("..."), "file");
    }
}
