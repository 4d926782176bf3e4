//! FCP `SubscribeUSK`: watch a USK for new editions.
//!
//! Each subscription is a task that probes for editions after the newest
//! known one, first at once and then every [`POLL_INTERVAL`], and sends
//! `SubscribedUSKUpdate` to the subscribing connection when it finds one.
//! `DontPoll=true` subscriptions report only what other requests find; with
//! no network yet that is what the first probe finds.

use crate::engine::LocalBlocks;
use crate::fcp_server::Out;
use crate::node::Node;
use lichen_crypto::uri::KeyUri;
use lichen_crypto::FreenetUri;
use lichen_fcp::client::SubscribeUsk;
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::ProtocolErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Time between probes of one subscription.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Most editions probed in one round.
const PROBES: u32 = 16;
/// Most subscriptions per connection.
const MAX_PER_CONNECTION: usize = 256;

type Subs = Mutex<HashMap<(u64, String), CancellationToken>>;

fn subs() -> &'static Subs {
    static S: OnceLock<Subs> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Start a subscription for connection `conn`.
pub fn subscribe(node: Arc<Node>, conn: u64, s: SubscribeUsk) {
    let send = {
        let node = node.clone();
        move |m: lichen_fcp::codec::Message| node.hub.send_to_conn(conn, Out::Msg(m.encode()))
    };
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
            let latest = {
                let (blocks, site, handle) = (
                    blocks.clone(),
                    site.clone(),
                    tokio::runtime::Handle::current(),
                );
                tokio::task::spawn_blocking(move || {
                    handle.block_on(lichen_client::usk::find_latest_edition(
                        &blocks, &public, &site, known, PROBES,
                    ))
                })
                .await
                .unwrap_or(Ok(None))
            };
            if let Ok(Some(latest)) = latest {
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
pub fn unsubscribe(conn: u64, identifier: &str) {
    if let Ok(mut m) = subs().lock() {
        if let Some(t) = m.remove(&(conn, identifier.to_string())) {
            t.cancel();
        }
    }
}

/// Stop every subscription of a closed connection.
pub fn connection_closed(conn: u64) {
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
