//! Carrying out hole punches ([`Output::Punch`](lichen_link::policy::Output::Punch);
//! the exchange that times them is the policy's, `lichen_link::policy`
//! and docs/wire.md "Hole punching").
//!
//! A punch dials the other node's address from the port this node
//! listens on ([`lichen_link::sockets::dial_from`]), again and again
//! until a connection comes up or [`PUNCH_WINDOW`] ends. The other
//! node's SYN may instead reach the listener first (a side not behind
//! NAT, or on loopback): the accept loop then hands a connection from the
//! address an initiator's punch waits for to that punch ([`Punches::claim`]),
//! and the handshake runs as the policy said (initiator or responder),
//! whichever socket the connection came up on.

use super::PeerSetup;
use lichen_link::policy::{Dialed, PUNCH_WINDOW};
use lichen_link::sockets::canonical;
use lichen_link::Link;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// One dial of a punch gives up after this (the kernel resends its SYN
/// within it).
const ONE_DIAL: Duration = Duration::from_secs(4);
/// Pause between dials after a refusal.
const REDIAL: Duration = Duration::from_millis(250);

/// How a punch ended (the driver's link channel takes it).
#[derive(Debug)]
pub(super) enum Outcome {
    /// A link, as initiator to this noderef's node.
    Dialed(Link, Dialed),
    /// A link, as responder, from this address.
    Punched(Link, IpAddr),
    /// No link toward this key (as initiator: true).
    Failed([u8; 32], bool),
}

/// The punches this node runs as initiator, by the address dialed, shared
/// with the accept loop; and the port punches dial from.
#[derive(Clone, Debug, Default)]
pub(super) struct Punches {
    /// Where the node listens (None: it does not punch).
    local_port: Option<u16>,
    waits: Arc<Mutex<HashMap<SocketAddr, (Dialed, Instant)>>>,
}

impl Punches {
    /// Punches from `local_port`.
    pub(super) fn new(local_port: Option<u16>) -> Self {
        Punches {
            local_port,
            waits: Arc::default(),
        }
    }

    fn waits(&self) -> MutexGuard<'_, HashMap<SocketAddr, (Dialed, Instant)>> {
        self.waits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An inbound connection from `from`: the noderef to run the
    /// handshake toward as initiator, if a punch of ours waits for it
    /// (taken: the punch stops).
    pub(super) fn claim(&self, from: SocketAddr) -> Option<Dialed> {
        let mut w = self.waits();
        w.retain(|_, (_, until)| Instant::now() < *until);
        w.remove(&canonical(from)).map(|(d, _)| d)
    }

    /// Whether the punch to `addr` still waits (not claimed).
    fn waiting(&self, addr: SocketAddr) -> bool {
        self.waits().contains_key(&addr)
    }

    /// End the punch to `addr`: whether it was still waiting.
    fn take(&self, addr: SocketAddr) -> bool {
        self.waits().remove(&addr).is_some()
    }

    /// Start a punch to `addr` toward the node with static key `key`: as
    /// initiator (to `dialed`'s node) or responder. The outcome comes
    /// back on `links`.
    pub(super) fn start(
        &self,
        setup: &PeerSetup,
        links: &mpsc::Sender<impl From<Outcome> + Send + 'static>,
        key: [u8; 32],
        addr: SocketAddr,
        dialed: Option<Dialed>,
    ) {
        let initiator = dialed.is_some();
        let Some(port) = self.local_port else {
            let links = links.clone();
            tokio::spawn(async move {
                let _ = links.send(Outcome::Failed(key, initiator).into()).await;
            });
            return;
        };
        let until = Instant::now() + PUNCH_WINDOW;
        if let Some(d) = &dialed {
            self.waits().insert(addr, (d.clone(), until));
        }
        let (me, setup, links) = (self.clone(), setup.clone(), links.clone());
        tokio::spawn(async move {
            let link = match me.dial(port, addr, until, initiator).await {
                Some(stream) => handshake(stream, &setup, key, dialed).await,
                None => None,
            };
            let msg = match link {
                Some(l) => l,
                // The accept loop took the connection: it reports.
                None if initiator && !me.take(addr) => return,
                None => Outcome::Failed(key, initiator),
            };
            let _ = links.send(msg.into()).await;
        });
    }

    /// Dial until a connection comes up, the deadline passes, or (as
    /// initiator) the accept loop claimed the punch.
    async fn dial(
        &self,
        port: u16,
        addr: SocketAddr,
        until: Instant,
        initiator: bool,
    ) -> Option<TcpStream> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || (initiator && !self.waiting(addr)) {
                return None;
            }
            match lichen_link::sockets::dial_from(port, addr, left.min(ONE_DIAL)).await {
                // As initiator, the connection is ours unless the accept
                // loop claimed the punch meanwhile.
                Ok(s) if !initiator || self.take(addr) => return Some(s),
                Ok(_) => return None,
                Err(e) => {
                    tracing::trace!(error = %e, "punch dial failed");
                    tokio::time::sleep(REDIAL.min(left)).await;
                }
            }
        }
    }
}

/// The handshake over a punched connection: as initiator toward
/// `dialed`'s node, or as responder expecting `key`.
async fn handshake(
    stream: TcpStream,
    setup: &PeerSetup,
    key: [u8; 32],
    dialed: Option<Dialed>,
) -> Option<Outcome> {
    let initiator = dialed.is_some();
    let ip: Option<IpAddr> = stream.peer_addr().ok().map(|a| canonical(a).ip());
    let r = match &dialed {
        Some(_) => {
            Link::initiate(
                stream,
                &setup.keys,
                &key,
                &setup.link,
                setup.bandwidth.clone(),
            )
            .await
        }
        None => Link::accept(stream, &setup.keys, &setup.link, setup.bandwidth.clone()).await,
    };
    match (r, dialed, ip) {
        (Ok(l), Some(d), _) => Some(Outcome::Dialed(l, d)),
        (Ok(l), None, Some(ip)) if l.remote_static() == key => Some(Outcome::Punched(l, ip)),
        (Ok(l), None, _) => {
            tracing::debug!("a punched connection brought another node: closed");
            l.close();
            Some(Outcome::Failed(key, initiator))
        }
        (Err(e), ..) => {
            tracing::debug!(error = %e, "punched connection's handshake failed");
            Some(Outcome::Failed(key, initiator))
        }
    }
}

/// Run the handshake of a connection the accept loop claimed for a punch
/// (the other node's SYN reached our listener): as initiator.
pub(super) async fn claimed(
    stream: TcpStream,
    setup: &PeerSetup,
    dialed: Dialed,
    links: &mpsc::Sender<impl From<Outcome> + Send + 'static>,
) {
    let key = dialed.noderef.static_key;
    if let Some(l) = handshake(stream, setup, key, Some(dialed)).await {
        let _ = links.send(l.into()).await;
    }
}
