//! `/settings`: the node's settings (`crate::settings`, the same ones FCP
//! `GetConfig` shows) as a form; `POST /settings` changes them, checked
//! for its origin and token as the upload form is, all or none, written
//! into the node's config file. `/first-run`: the three choices that
//! matter on a new node (disk space, upload bandwidth, strangers or
//! friends only), offered on the home page until the node has a config
//! file.

use super::origin::from_other_site;
use super::pages;
use super::respond::{constant_eq, error_page, form_params, html, query_params, redirect};
use super::state::Gateway;
use crate::settings::SETTINGS;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `GET /settings` (`?saved` after a change).
pub(super) async fn show(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let saved = query_params(req.uri().query())
        .iter()
        .any(|(k, _)| k == "saved");
    let notice = saved.then(|| {
        pages::Notice::Done(
            "Saved in the config file. Those marked \u{201c}next start\u{201d} take effect \
             when the node starts again."
                .to_owned(),
        )
    });
    html(
        StatusCode::OK,
        pages::settings(&gw.node.settings(), &gw.csrf_for("settings"), notice),
    )
}

/// `POST /settings`: the form's values; those that differ from the
/// settings now are changed.
pub(super) async fn change(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match form_fields(&gw, &headers, &body, "settings") {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let now = gw.node.settings();
    let changes: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(k, v)| crate::settings::find(k).is_some_and(|s| s.value(&now) != v.trim()))
        .collect();
    if changes.is_empty() {
        return redirect(StatusCode::SEE_OTHER, "/settings");
    }
    match gw.node.modify_settings(changes).await {
        Ok(_) => {
            tracing::info!("settings changed from the gateway");
            redirect(StatusCode::SEE_OTHER, "/settings?saved")
        }
        Err(e) => html(
            StatusCode::BAD_REQUEST,
            pages::settings(
                &now,
                &gw.csrf_for("settings"),
                Some(pages::Notice::Refused(format!("Nothing was changed: {e}"))),
            ),
        ),
    }
}

/// The fields of the form `form` posted with `headers` and `body`, or the
/// refusal (403) when it comes from another site or without the form's
/// token.
pub(super) fn form_fields(
    gw: &Gateway,
    headers: &HeaderMap,
    body: &[u8],
    form: &str,
) -> Result<Vec<(String, String)>, Box<Response>> {
    if from_other_site(headers) {
        gw.cross_site_refused.fetch_add(1, Ordering::Relaxed);
        return Err(Box::new(error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The form was sent from another site.",
        )));
    }
    let text = String::from_utf8_lossy(body);
    let fields = form_params(Some(&text), 4 * SETTINGS.len() + 8);
    let token = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str());
    if !constant_eq(token.as_bytes(), gw.csrf_for(form).as_bytes()) {
        return Err(Box::new(error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The form's token is missing or wrong. Reload the page and try again.",
        )));
    }
    Ok(fields)
}

/// `GET /first-run`.
pub(super) async fn first_run(State(gw): State<Arc<Gateway>>) -> Response {
    html(
        StatusCode::OK,
        pages::first_run(&gw.node.settings(), &gw.csrf_for("first-run")),
    )
}

/// `POST /first-run`: `disk` (GiB), `upload` (KiB/s), `network`
/// (`opennet` or `friends`), each one of the page's choices.
pub(super) async fn first_run_done(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match form_fields(&gw, &headers, &body, "first-run") {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    let disk = get("disk")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|g| pages::DISK_CHOICES_GIB.contains(g));
    let upload = get("upload")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|k| pages::UPLOAD_CHOICES_KIB.contains(k));
    let opennet = match get("network").as_deref() {
        Some("opennet") => Some(true),
        Some("friends") => Some(false),
        _ => None,
    };
    let (Some(disk), Some(upload), Some(opennet)) = (disk, upload, opennet) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Incomplete choice",
            "Choose one of the offered disk sizes, upload limits and networks.",
        );
    };
    let bytes = disk << 30;
    let store = bytes / 3 * 2;
    let changes = vec![
        ("node.storeSize".to_owned(), store.to_string()),
        (
            "node.lichen.cacheSize".to_owned(),
            (bytes - store).to_string(),
        ),
        (
            "node.outputBandwidthLimit".to_owned(),
            (upload << 10).to_string(),
        ),
        ("node.opennet.enabled".to_owned(), opennet.to_string()),
    ];
    match gw.node.modify_settings(changes).await {
        Ok(_) => {
            tracing::info!("first-run settings saved from the gateway");
            redirect(StatusCode::SEE_OTHER, "/settings?saved")
        }
        Err(e) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not saved",
            &format!("Nothing was changed: {e}"),
        ),
    }
}
