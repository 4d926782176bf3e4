//! FCP `SubscribeUSK`: watch a USK for new editions.
//!
//! Each subscription is a task that searches for editions after the newest
//! known one (the node's one search policy, `ops::usk`), first at once and
//! then every [`POLL_INTERVAL`], and sends
//! `SubscribedUSKUpdate` to the subscribing connection when it finds one.
//! `DontPoll=true` subscriptions report only what other requests find; with
//! no network yet that is what the first probe finds.

use super::common::Out;
use super::hub::Hub;
use crate::node::Node;
use crate::ops::{usk, LocalBlocks};
use lichen_crypto::uri::KeyUri;
use lichen_crypto::FreenetUri;
use lichen_fcp::client::SubscribeUsk;
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::ProtocolErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Time between searches of one subscription.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Most subscriptions per connection.
const MAX_PER_CONNECTION: usize = 256;

type Subs = Mutex<HashMap<(u64, String), CancellationToken>>;

fn subs() -> &'static Subs {
    static S: OnceLock<Subs> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Start a subscription for connection `conn`.
pub(super) fn subscribe(node: Arc<Node>, hub: Arc<Hub>, conn: u64, s: SubscribeUsk) {
    let send = move |m: lichen_fcp::codec::Message| hub.send_to_conn(conn, Out::Msg(m.encode()));
    let uri = match FreenetUri::parse(&s.uri) {
        Ok(u) if matches!(u.key, KeyUri::Usk { .. }) => u.to_request(),
        _ => {
            let mut e = rep::ProtocolError::new(
                ProtocolErrorCode::FreenetUriParseError,
                Some("SubscribeUSK needs a USK@ URI".into()),
            );
            e.identifier = Some(s.identifier.clone());
            send(e.to_message());
            return;
        }
    };
    let token = CancellationToken::new();
    {
        let Ok(mut m) = subs().lock() else { return };
        if m.keys().filter(|(c, _)| *c == conn).count() >= MAX_PER_CONNECTION {
            let mut e = rep::ProtocolError::new(
                ProtocolErrorCode::InvalidMessage,
                Some("too many USK subscriptions on this connection".into()),
            );
            e.identifier = Some(s.identifier.clone());
            send(e.to_message());
            return;
        }
        m.insert((conn, s.identifier.clone()), token.clone());
    }
    send(
        rep::SubscribedUsk {
            identifier: s.identifier.clone(),
            uri: uri.to_string(),
            dont_poll: s.dont_poll,
        }
        .to_message(),
    );
    tokio::spawn(async move {
        let KeyUri::Usk { key, site, edition } = &uri.key else {
            return;
        };
        let public = key.public();
        let mut known = edition.unsigned_abs();
        let mut reported: Option<u64> = None;
        let blocks = LocalBlocks::new(node.clone());
        loop {
            let latest = usk::latest_edition(blocks.clone(), public, site.clone(), known).await;
            if let Some(latest) = latest {
                if reported.is_none_or(|r| latest > r) {
                    reported = Some(latest);
                    known = latest;
                    send(
                        rep::SubscribedUskUpdate {
                            identifier: s.identifier.clone(),
                            edition: latest,
                            uri: uri
                                .with_edition(i64::try_from(latest).unwrap_or(i64::MAX))
                                .to_string(),
                            new_known_good: true,
                            new_slot_too: true,
                        }
                        .to_message(),
                    );
                }
            }
            tokio::select! {
                () = token.cancelled() => break,
                () = node.shutdown.cancelled() => break,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    });
}

/// Stop a subscription.
pub(super) fn unsubscribe(conn: u64, identifier: &str) {
    if let Ok(mut m) = subs().lock() {
        if let Some(t) = m.remove(&(conn, identifier.to_string())) {
            t.cancel();
        }
    }
}

/// Stop every subscription of a closed connection.
pub(super) fn connection_closed(conn: u64) {
    if let Ok(mut m) = subs().lock() {
        m.retain(|(c, _), t| {
            if *c == conn {
                t.cancel();
                false
            } else {
                true
            }
        });
    }
}
