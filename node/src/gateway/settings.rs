//! `/settings`: the node's settings (`crate::settings`, the same ones FCP
//! `GetConfig` shows) as a form; `POST /settings` changes them, checked
//! for its origin and token as the upload form is, all or none, written
//! into the node's config file.

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
    if from_other_site(&headers) {
        gw.cross_site_refused.fetch_add(1, Ordering::Relaxed);
        return error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The settings form was sent from another site.",
        );
    }
    let text = String::from_utf8_lossy(&body);
    let fields = form_params(Some(&text), 4 * SETTINGS.len() + 8);
    let token = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str());
    if !constant_eq(token.as_bytes(), gw.csrf_for("settings").as_bytes()) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The form's token is missing or wrong. Reload the settings page and try again.",
        );
    }
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
