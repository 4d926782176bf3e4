//! `GET /KEY…`: a document by its key, fetched by a job and served when
//! it is ready (or while it arrives); a progress page meanwhile; redirects
//! to directories' trailing slash and to newer USK editions. A request
//! from another site gets a 403 page with a link to the same address, and
//! nothing is fetched or looked up (`origin`).

use super::doc::{Doc, JobError, JobState};
use super::editions::{look_ahead, usk_id};
use super::origin::from_other_site;
use super::pages;
use super::respond::{error_page, html, query_params, redirect};
use super::send::{sent_unfiltered, serve_document};
use super::state::Gateway;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use lichen_crypto::{FreenetUri, KeyUri};
use lichen_filter as filter;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Whether `u` is an insert (private) key, which must not be opened in a
/// browser (it would end up in its history).
pub(super) fn is_insert_uri(u: &FreenetUri) -> bool {
    match &u.key {
        KeyUri::ChkInsert | KeyUri::SskInsertNew => true,
        KeyUri::Ssk { key, .. } | KeyUri::Usk { key, .. } => key.private().is_some(),
        _ => false,
    }
}

/// The gateway path of a URI; directories (no meta-strings) end in `/`
/// so relative links resolve inside them.
pub(super) fn key_path(u: &FreenetUri) -> String {
    if u.meta.is_empty() {
        format!("/{u}/")
    } else {
        format!("/{u}")
    }
}

/// What a key request asks for.
struct Target {
    uri: FreenetUri,
    /// `?forcedownload`.
    force_download: bool,
    /// `?max-size=N`.
    max_size: Option<u64>,
    /// The query, with its `?`, kept on redirects.
    query: String,
}

/// The handler.
pub(super) async fn key_request(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let target = match parse_target(&req) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let path = req.uri().path();
    // Before anything that depends on what the node holds or has seen
    // (USK editions, held jobs, the store): a page elsewhere must learn
    // nothing from the answer or its timing, and start no fetch.
    if from_other_site(req.headers()) {
        gw.cross_site_refused.fetch_add(1, Ordering::Relaxed);
        return html(
            StatusCode::FORBIDDEN,
            pages::cross_site(&format!("{path}{}", target.query)),
        );
    }
    if let Some(resp) = shortcut(&gw, &target, path) {
        return resp;
    }
    let uri = &target.uri;
    let key = uri.to_string();
    let mut rx = match gw.jobs.job_for(&gw.node, &key, uri) {
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
    match wait_for_document(&mut rx, wait, target.force_download).await {
        JobState::Running { done, needed, .. } => {
            html(StatusCode::OK, pages::progress(path, done, needed))
        }
        JobState::Failed(e) => failed(&gw, &e, &target.query),
        JobState::Done(file) => {
            if let Some((id, ed)) = usk_id(uri) {
                gw.usk.note(id.clone(), ed);
                look_ahead(&gw.usk, &gw.node, uri, id, ed);
            }
            let range = req
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok());
            let head = req.method() == Method::HEAD;
            let doc = Doc { file, job: rx };
            let (force, max) = (target.force_download, target.max_size);
            serve_document(uri, path, doc, force, max, range, head).await
        }
    }
}

/// The request's key and options, or the error page for a request that
/// is not a read of a public key.
fn parse_target(req: &Request) -> Result<Target, Box<Response>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Box::new(error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "Documents can only be read (GET).",
        )));
    }
    let path = req.uri().path();
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
        || lower.contains("%00")
    {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "Bad path",
            "Encoded slashes, backslashes and NUL are not allowed in paths.",
        )));
    }
    let raw = &path[1..];
    if !filter::is_key_path(raw) {
        return Err(Box::new(error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This is not a key. Keys start with CHK@, SSK@, USK@ or KSK@.",
        )));
    }
    let uri = FreenetUri::parse(raw).map_err(|e| {
        Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "Not a valid key",
            &format!("The key cannot be read: {e}."),
        ))
    })?;
    if is_insert_uri(&uri) {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "This is an insert key",
            "Insert (private) keys cannot be opened in the browser.",
        )));
    }
    let params = query_params(req.uri().query());
    let force_download = params.iter().any(|(k, _)| k == "forcedownload");
    let max_size = match params.iter().find(|(k, _)| k == "max-size") {
        Some((_, v)) => Some(v.parse::<u64>().map_err(|_| {
            Box::new(error_page(
                StatusCode::BAD_REQUEST,
                "Bad max-size",
                "max-size must be a number of bytes.",
            ))
        })?),
        None => None,
    };
    let query = req.uri().query().map_or(String::new(), |q| format!("?{q}"));
    Ok(Target {
        uri,
        force_download,
        max_size,
        query,
    })
}

/// A redirect needing no fetch: a directory without its trailing slash
/// (relative links would resolve one level up), or a USK edition older
/// than one already known.
fn shortcut(gw: &Gateway, target: &Target, path: &str) -> Option<Response> {
    let (uri, query) = (&target.uri, &target.query);
    if uri.meta.is_empty() && !path.ends_with('/') {
        return Some(redirect(
            StatusCode::MOVED_PERMANENTLY,
            &format!("{}{query}", key_path(uri)),
        ));
    }
    let (id, ed) = usk_id(uri)?;
    let latest = gw.usk.latest(&id)?;
    if ed >= 0 && latest > ed {
        let new = uri.with_edition(latest);
        return Some(redirect(
            StatusCode::MOVED_PERMANENTLY,
            &format!("{}{query}", key_path(&new)),
        ));
    }
    None
}

/// The job's state once its document is ready (or, for types sent as
/// they arrive, found), or after `wait`.
async fn wait_for_document(
    rx: &mut watch::Receiver<JobState>,
    wait: Duration,
    force_download: bool,
) -> JobState {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        let st = rx.borrow_and_update().clone();
        match &st {
            JobState::Running {
                streamed: Some(s), ..
            } if sent_unfiltered(&s.file.mime, force_download) => {
                // Sent as it arrives: no need to wait for the end.
                return JobState::Done(s.file.clone());
            }
            JobState::Running { .. } => {}
            _ => return st,
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return rx.borrow().clone(); },
            () = &mut deadline => return rx.borrow().clone(),
        }
    }
}

/// The answer for a failed fetch: a redirect to a newer USK edition, or
/// the error page.
fn failed(gw: &Gateway, e: &JobError, query: &str) -> Response {
    if let Some(to) = &e.redirect {
        if let Ok(new) = FreenetUri::parse(to) {
            if let Some((id, ed)) = usk_id(&new) {
                gw.usk.note(id, ed);
            }
            return redirect(
                StatusCode::MOVED_PERMANENTLY,
                &format!("{}{query}", key_path(&new)),
            );
        }
    }
    error_page(e.status, e.title, &e.detail)
}
