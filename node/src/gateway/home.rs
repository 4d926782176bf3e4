//! The home page (`/`: status, open a key, upload form, request queue)
//! and the warning page in front of outside links (`/external-link`).

use super::keys::{is_insert_uri, key_path};
use super::pages;
use super::respond::{error_page, html, query_params, redirect};
use super::state::Gateway;
use crate::node::Node;
use crate::requests::{Outcome, Scope};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use lichen_crypto::FreenetUri;
use lichen_filter as filter;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `/`, or `/?key=URI`.
pub(super) async fn home(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let params = query_params(req.uri().query());
    if let Some((_, key)) = params.iter().find(|(k, _)| k == "key") {
        return open_key(key);
    }
    let queue = queue_rows(&gw.node);
    let failed = queue
        .iter()
        .filter(|r| r.state.starts_with("failed"))
        .count();
    let status = node_status(&gw, failed).await;
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

/// The node's figures for the home page, and its alerts (`failed`:
/// persistent requests of the global queue that failed).
async fn node_status(gw: &Gateway, failed: usize) -> pages::Status {
    let node = &gw.node;
    let stats = {
        let store = node.store.clone();
        tokio::task::spawn_blocking(move || store.stats())
            .await
            .unwrap_or_default()
    };
    let spaces: Vec<_> = lichen_store::Space::ALL
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
    let reachability = node.peers.get().map_or_else(
        || "no network".to_owned(),
        |net| {
            let r = net.reachability();
            let m = net.port_mapping();
            let public = m
                .map(|m| m.external.to_string())
                .or_else(|| r.public.map(|a| a.ip().to_string()));
            crate::status::reachability_text(
                crate::status::reachability_field(r.state),
                public.as_deref(),
                Some(crate::status::port_mapping_field(m.as_ref())),
                crate::status::keeps_ports_field(r.ports_kept),
            )
        },
    );
    let uptime_s = crate::node::now_ms().saturating_sub(node.started_ms) / 1000;
    let facts = crate::status::Facts {
        network: node.peers.get().is_some(),
        peers: node.peer_count(),
        uptime_s,
        reachable: node.peers.get().map(|net| net.reachability().state),
        spaces: spaces
            .iter()
            .map(|&(name, bytes, budget, _)| (name, bytes, budget))
            .collect(),
        failed_requests: failed,
        waiting_inserts: node.pushes.len(),
        waiting_blocks: node.pushes.pending_blocks(),
    };
    pages::Status {
        alerts: crate::status::alerts(&facts),
        traffic: node.traffic_rates(),
        peers: node.peer_count(),
        reachability,
        bandwidth: format!(
            "limits: upload {}, download {}",
            limit(node.bandwidth.upload.rate()),
            limit(node.bandwidth.download.rate())
        ),
        location: crate::status::location_fraction(node.identity.location),
        spaces,
        uptime_s,
        gateway_jobs: gw.jobs.held(),
        gateway_started: gw.jobs.started(),
        cross_site_refused: gw.cross_site_refused.load(Ordering::Relaxed),
        first_run: !tokio::fs::try_exists(&node.config_file)
            .await
            .unwrap_or(true),
    }
}

/// The global queue's requests, as rows.
fn queue_rows(node: &Node) -> Vec<pages::QueueRow> {
    node.requests
        .list(&[Scope::Global])
        .iter()
        .map(|r| {
            let st = r.snapshot();
            let state = match &st.outcome {
                None => "running".to_owned(),
                Some(Outcome::PutOk { .. } | Outcome::GetOk { .. }) => "done".to_owned(),
                Some(Outcome::PutErr { code, .. }) => format!("failed (insert code {code})"),
                Some(Outcome::GetErr { code, .. }) => format!("failed (fetch code {code})"),
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
        .collect()
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
    if let Some(i) = filter::KEY_PREFIXES
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

/// `/external-link?url=…`: the warning before an outside link.
pub(super) async fn external_link(req: Request) -> Response {
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
