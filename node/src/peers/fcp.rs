//! FCP's peer messages: `AddPeer`, `RemovePeer` and `ListPeers`, answered
//! as Fred does (`Peer`, `PeerRemoved`, `UnknownNodeIdentifier`,
//! `EndListPeers`, or a `ProtocolError` with Fred's code). All three need
//! full access: the FCP server refuses them earlier (`fcp::access`) for
//! other clients.
//!
//! `AddPeer` takes the noderef from `File=` (a path the node reads, under
//! the same disk-access rules as uploads: `[fcp] allowed_dirs` or a
//! directory approved through TestDDA) or from `Lichen.NodeRef=` (the text
//! `lichen noderef` prints). Fred's `URL=` is refused. `Trust` and
//! `Visibility` are checked as Fred does when present, not required (a
//! Lichen friend has no trust levels). The peer is always added as a
//! friend.
//!
//! Invitations (Lichen's own): `CreateInvitation` (optional `Hours=`,
//! how long it stays valid: 1 to 720, default 24) answers `Invitation`
//! with `Invitation=` (the text `lichen invite` prints) and `Expires=`
//! (Unix seconds); `AddPeer` with `Lichen.Invitation=` uses one: the
//! node dials the inviting node, presents the token and answers `Peer`
//! once both are friends (or a `ProtocolError`, code 21 when the text is
//! no invitation or expired, 24 when the inviting node could not be
//! reached or refused it).
//!
//! `Peer` fields: `identity`, `opennet` (false for a friend), `location`,
//! `physical.tcp` (addresses, `;`-separated), `Lichen.NodeRef`; with
//! `WithMetadata` `metadata.timeLastConnected`; with `WithVolatile`
//! `volatile.status` (`CONNECTED`, `DISCONNECTED`, `NEVER CONNECTED`)
//! and, while a link is up, `volatile.lichen.bytesSent` /
//! `volatile.lichen.bytesReceived` (its wire bytes since it came up).

use super::{AddFriendError, PeerInfo};
use crate::node::Node;
use lichen_fcp::codec::Message;
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::{Fields, ProtocolErrorCode};
use lichen_link::peerlist::PeerKind;
use lichen_link::policy::AddFriendError as Refusal;
use std::fs::File;

/// Largest noderef file read.
pub const MAX_NODEREF_FILE: u64 = 64 * 1024;

/// The field carrying a noderef's text.
pub const NODEREF_FIELD: &str = "Lichen.NodeRef";

/// The running network, or the error to answer.
fn running<'a>(node: &'a Node, ident: Option<&str>) -> Result<&'a dyn crate::node::Peers, Message> {
    node.peers.get().ok_or_else(|| {
        error(
            ProtocolErrorCode::InternalError,
            "the network is not running",
            ident,
        )
    })
}

/// The field carrying an invitation's text.
pub const INVITATION_FIELD: &str = "Lichen.Invitation";

/// Default validity of an invitation, hours.
pub const DEFAULT_INVITATION_HOURS: u64 = 24;

/// Answer a `CreateInvitation`.
pub async fn create_invitation(node: &Node, fields: &Fields) -> Message {
    let ident = fields.get("Identifier");
    let hours = match fields.get("Hours").map(str::parse::<u64>) {
        None => DEFAULT_INVITATION_HOURS,
        Some(Ok(h)) if (1..=720).contains(&h) => h,
        Some(_) => {
            return error(
                ProtocolErrorCode::InvalidField,
                "Hours must be a whole number from 1 to 720",
                ident,
            )
        }
    };
    let peers = match running(node, ident) {
        Ok(p) => p,
        Err(m) => return m,
    };
    match peers
        .invite(std::time::Duration::from_secs(hours * 3600))
        .await
    {
        Ok(Ok(inv)) => {
            let mut m = Message::new("Invitation")
                .field("Invitation", inv.to_text())
                .field("Expires", inv.expires.to_string());
            if let Some(i) = ident {
                m = m.field("Identifier", i);
            }
            m
        }
        Ok(Err(e)) => error(ProtocolErrorCode::InternalError, e.to_string(), ident),
        Err(e) => error(ProtocolErrorCode::InternalError, e.to_string(), ident),
    }
}

/// `AddPeer` with `Lichen.Invitation=`: use the invitation.
async fn redeem(node: &Node, text: &str, ident: Option<&str>) -> Result<Message, Message> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let inv = lichen_link::Invitation::parse(text, now).map_err(|e| {
        error(
            ProtocolErrorCode::RefParseError,
            format!("Error parsing invitation: {e}"),
            ident,
        )
    })?;
    let peers = running(node, ident)?;
    match peers.redeem(inv).await {
        Ok(info) => Ok(peer_message(&info, true, true, ident.map(str::to_string))),
        Err(e) => Err(error(add_friend_code(&e), e.to_string(), ident)),
    }
}

/// Fred's code for a friend not added.
fn add_friend_code(e: &AddFriendError) -> ProtocolErrorCode {
    match e {
        AddFriendError::Refused(Refusal::Myself) => ProtocolErrorCode::CannotPeerWithSelf,
        AddFriendError::Refused(Refusal::Duplicate) => ProtocolErrorCode::DuplicatePeerRef,
        AddFriendError::InvitationRefused => ProtocolErrorCode::AccessDenied,
        _ => ProtocolErrorCode::InternalError,
    }
}

fn error(code: ProtocolErrorCode, extra: impl Into<String>, ident: Option<&str>) -> Message {
    let mut e = rep::ProtocolError::new(code, Some(extra.into()));
    e.identifier = ident.map(str::to_string);
    e.to_message()
}

/// The `Peer` message for one peer.
#[must_use]
pub fn peer_message(
    p: &PeerInfo,
    with_metadata: bool,
    with_volatile: bool,
    identifier: Option<String>,
) -> Message {
    let mut f = Fields::new();
    f.push("identity", p.identity.clone());
    f.push(
        "opennet",
        lichen_fcp::fields::bool_str(p.kind == PeerKind::Opennet),
    );
    if let Some(l) = p.location {
        f.push(
            "location",
            format!("{:.6}", crate::status::location_fraction(l)),
        );
    }
    if !p.addresses.is_empty() {
        let a: Vec<String> = p.addresses.iter().map(ToString::to_string).collect();
        f.push("physical.tcp", a.join(";"));
    }
    if let Some(r) = &p.noderef {
        f.push(NODEREF_FIELD, r.clone());
    }
    if with_metadata && p.last_seen > 0 {
        f.push("metadata.timeLastConnected", p.last_seen.to_string());
    }
    if with_volatile {
        let status = if p.connected {
            "CONNECTED"
        } else if p.last_seen > 0 {
            "DISCONNECTED"
        } else {
            "NEVER CONNECTED"
        };
        f.push("volatile.status", status);
        if p.link.is_some() {
            // Wire bytes on the link that is up (docs/fcp.md).
            f.push("volatile.lichen.bytesSent", p.traffic.0.to_string());
            f.push("volatile.lichen.bytesReceived", p.traffic.1.to_string());
        }
    }
    rep::Peer {
        fields: f,
        identifier,
    }
    .to_message()
}

/// The refusal of a noderef file outside the approved directories.
const NOT_APPROVED: &str = "Direct Disk Access operation denied: use TestDDA (WantReadDirectory) on the noderef file's directory, list it in [fcp] allowed_dirs, or send the text in Lichen.NodeRef";

/// Opens a file a client named for reading, under its disk-access rules:
/// `Ok(None)` when the connection may not read there.
pub type OpenForClient<'a> = &'a (dyn Fn(&str) -> std::io::Result<Option<File>> + Sync);

/// Read a noderef file's text (comment lines starting with `#` dropped),
/// from the file `open` opened (through an approved directory's handle,
/// no symbolic link followed: see `docs/fcp.md`).
///
/// # Errors
/// A ProtocolError message.
fn read_noderef_file(
    name: &str,
    open: OpenForClient<'_>,
    ident: Option<&str>,
) -> Result<String, Message> {
    let file = match open(name) {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Err(error(
                ProtocolErrorCode::DirectDiskAccessDenied,
                NOT_APPROVED,
                ident,
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(error(
                ProtocolErrorCode::FileNotFound,
                "The noderef file does not exist or cannot be reached",
                ident,
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(error(
                ProtocolErrorCode::DirectDiskAccessDenied,
                format!("Direct Disk Access operation denied: {e}"),
                ident,
            ))
        }
        Err(e) => {
            return Err(error(
                ProtocolErrorCode::NotAFileError,
                format!("The given noderef path is not a file: {e}"),
                ident,
            ))
        }
    };
    let read = || -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut buf = Vec::new();
        file.take(MAX_NODEREF_FILE + 1).read_to_end(&mut buf)?;
        Ok(buf)
    };
    let bytes = read().map_err(|e| {
        error(
            ProtocolErrorCode::CouldNotReadFile,
            format!("Could not read the noderef file: {e}"),
            ident,
        )
    })?;
    if bytes.len() as u64 > MAX_NODEREF_FILE {
        return Err(error(
            ProtocolErrorCode::RefParseError,
            format!("The noderef file is larger than {MAX_NODEREF_FILE} bytes: not a noderef"),
            ident,
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        error(
            ProtocolErrorCode::RefParseError,
            "The noderef file is not text",
            ident,
        )
    })?;
    Ok(strip_comments(&text))
}

/// Drop blank lines and `#` comments (noderef and seed files allow them).
#[must_use]
pub fn strip_comments(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn check_choice(
    f: &Fields,
    key: &str,
    allowed: &[&str],
    ident: Option<&str>,
) -> Result<(), Message> {
    match f.get(key) {
        Some(v) if !allowed.contains(&v) => Err(error(
            ProtocolErrorCode::InvalidField,
            format!(
                "Invalid {key} value on AddPeer (one of {})",
                allowed.join(", ")
            ),
            ident,
        )),
        _ => Ok(()),
    }
}

/// Answer an `AddPeer`. `open` opens a `File=` for this connection.
pub async fn add_peer(node: &Node, fields: &Fields, open: OpenForClient<'_>) -> Message {
    match add_peer_inner(node, fields, open).await {
        Ok(m) | Err(m) => m,
    }
}

async fn add_peer_inner(
    node: &Node,
    fields: &Fields,
    open: OpenForClient<'_>,
) -> Result<Message, Message> {
    let ident = fields.get("Identifier");
    check_choice(fields, "Trust", &["LOW", "NORMAL", "HIGH"], ident)?;
    check_choice(fields, "Visibility", &["NO", "NAME_ONLY", "YES"], ident)?;
    if let Some(t) = fields.get(INVITATION_FIELD) {
        return redeem(node, t, ident).await;
    }
    let text = if let Some(t) = fields.get(NODEREF_FIELD) {
        t.to_string()
    } else if let Some(name) = fields.get("File") {
        read_noderef_file(name, open, ident)?
    } else if fields.get("URL").is_some() {
        return Err(error(
            ProtocolErrorCode::NotSupported,
            "Lichen does not fetch noderefs from a URL: send File= or Lichen.NodeRef=",
            ident,
        ));
    } else {
        return Err(error(
            ProtocolErrorCode::MissingField,
            "AddPeer needs File= (a noderef file) or Lichen.NodeRef= (the text `lichen noderef` prints)",
            ident,
        ));
    };
    let (noderef, bytes) = lichen_link::peerlist::parse_noderef(&text).map_err(|e| {
        let code = if e == lichen_link::NoderefError::BadSignature {
            ProtocolErrorCode::RefSignatureInvalid
        } else {
            ProtocolErrorCode::RefParseError
        };
        error(code, format!("Error parsing ref: {e}"), ident)
    })?;
    let peers = running(node, ident)?;
    match peers.add_friend(noderef, bytes).await {
        Ok(info) => Ok(peer_message(&info, true, true, ident.map(str::to_string))),
        Err(e) => Err(error(add_friend_code(&e), e.to_string(), ident)),
    }
}

/// Answer a `RemovePeer` (`NodeIdentifier`: the identity `ListPeers`
/// shows, or one of the peer's addresses).
pub async fn remove_peer(node: &Node, fields: &Fields) -> Message {
    let ident = fields.get("Identifier");
    let Some(which) = fields.get("NodeIdentifier") else {
        return error(
            ProtocolErrorCode::MissingField,
            "Error: NodeIdentifier field missing",
            ident,
        );
    };
    let unknown = || {
        rep::UnknownNodeIdentifier {
            node_identifier: which.to_string(),
            identifier: ident.map(str::to_string),
        }
        .to_message()
    };
    let Some(peers) = node.peers.get() else {
        return unknown();
    };
    match peers.remove(which).await {
        Ok(Some(info)) => rep::PeerRemoved {
            identity: info.identity,
            node_identifier: which.to_string(),
            identifier: ident.map(str::to_string),
        }
        .to_message(),
        Ok(None) => unknown(),
        Err(_) => error(
            ProtocolErrorCode::ShuttingDown,
            "the network has stopped",
            ident,
        ),
    }
}

/// Answer a `ListPeers`: one `Peer` per peer, then `EndListPeers`.
pub async fn list_peers(
    node: &Node,
    identifier: Option<String>,
    with_metadata: bool,
    with_volatile: bool,
) -> Vec<Message> {
    let peers = match node.peers.get() {
        Some(p) => p.list().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut out: Vec<Message> = peers
        .iter()
        .map(|p| peer_message(p, with_metadata, with_volatile, identifier.clone()))
        .collect();
    out.push(rep::EndListPeers { identifier }.to_message());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peer_fields() {
        let p = PeerInfo {
            identity: "abc".into(),
            kind: PeerKind::Friend,
            connected: true,
            location: Some(1 << 63),
            noderef: Some("lichen-noderef-v1:xyz".into()),
            addresses: vec!["127.0.0.1:5".parse().unwrap(), "[::1]:6".parse().unwrap()],
            last_seen: 42,
            link: Some(lichen_routing::PeerId(3)),
            traffic: (1000, 2000),
        };
        let m = peer_message(&p, true, true, Some("id".into()));
        assert_eq!(m.get("volatile.lichen.bytesSent"), Some("1000"));
        assert_eq!(m.get("volatile.lichen.bytesReceived"), Some("2000"));
        assert_eq!(m.name, "Peer");
        assert_eq!(m.get("identity"), Some("abc"));
        assert_eq!(m.get("opennet"), Some("false"));
        assert_eq!(m.get("location"), Some("0.500000"));
        assert_eq!(m.get("physical.tcp"), Some("127.0.0.1:5;[::1]:6"));
        assert_eq!(m.get("volatile.status"), Some("CONNECTED"));
        assert_eq!(m.get("metadata.timeLastConnected"), Some("42"));
        assert_eq!(m.get("Identifier"), Some("id"));
        let m = peer_message(&p, false, false, None);
        assert!(m.get("volatile.status").is_none() && m.get("Identifier").is_none());
    }

    #[test]
    fn comments_and_line_breaks_are_dropped() {
        assert_eq!(
            strip_comments("# friend Bob\n lichen-noderef-v1:ab\ncd \n\n"),
            "lichen-noderef-v1:abcd"
        );
    }
}
