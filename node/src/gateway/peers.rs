//! `/peers`: friends and opennet peers with their status and traffic, a
//! drawing of their locations on the circle, and forms to add a friend
//! (an invitation or a noderef, pasted), to invite one, and to remove a
//! peer. The forms do what FCP's `AddPeer`, `CreateInvitation` and
//! `RemovePeer` do (`crate::peers::fcp`), checked for their origin and
//! token as every gateway form is.

use super::pages;
use super::respond::{error_page, html, redirect};
use super::settings::form_fields;
use super::state::Gateway;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use lichen_fcp::codec::Message;
use lichen_fcp::Fields;
use std::sync::Arc;

/// `GET /peers`.
pub(super) async fn show(State(gw): State<Arc<Gateway>>) -> Response {
    let node = &gw.node;
    let peers = match node.peers.get() {
        Some(net) => Some(net.list().await.unwrap_or_default()),
        None => None,
    };
    let me = crate::status::location_fraction(node.identity.location);
    html(
        StatusCode::OK,
        pages::peers(me, peers.as_deref(), &gw.csrf_for("peers")),
    )
}

/// `POST /peers/add`: `text`, an invitation (`lichen-invite:…`) or a
/// noderef.
pub(super) async fn add(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match form_fields(&gw, &headers, &body, "peers") {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let text = field(&fields, "text");
    let mut f = Fields::new();
    let name = if text.trim_start().starts_with("lichen-invite:") {
        crate::peers::fcp::INVITATION_FIELD
    } else {
        crate::peers::fcp::NODEREF_FIELD
    };
    f.push(name, text.trim());
    // No file is read for the gateway (only FCP's `File=` would).
    let open = |_: &str| Ok(None);
    let reply = crate::peers::fcp::add_peer(&gw.node, &f, &open).await;
    done(&reply, "Peer")
}

/// `POST /peers/invite`: an invitation valid 24 hours, shown once.
pub(super) async fn invite(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = form_fields(&gw, &headers, &body, "peers") {
        return *refused;
    }
    let reply = crate::peers::fcp::create_invitation(&gw.node, &Fields::new()).await;
    match reply.get("Invitation") {
        Some(text) if reply.name == "Invitation" => html(StatusCode::OK, pages::invitation(text)),
        _ => refused(&reply),
    }
}

/// `POST /peers/remove`: `identity`, as the list shows it.
pub(super) async fn remove(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match form_fields(&gw, &headers, &body, "peers") {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let mut f = Fields::new();
    f.push("NodeIdentifier", field(&fields, "identity").trim());
    let reply = crate::peers::fcp::remove_peer(&gw.node, &f).await;
    done(&reply, "PeerRemoved")
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Back to the list when the node answered `success`, else the reason.
fn done(reply: &Message, success: &str) -> Response {
    if reply.name == success {
        redirect(StatusCode::SEE_OTHER, "/peers")
    } else {
        refused(reply)
    }
}

fn refused(reply: &Message) -> Response {
    let why = match reply.name.as_str() {
        "UnknownNodeIdentifier" => "no such peer",
        _ => reply
            .get("ExtraDescription")
            .or_else(|| reply.get("CodeDescription"))
            .unwrap_or("the node refused"),
    };
    error_page(StatusCode::BAD_REQUEST, "Not done", why)
}
