//! The live FCP connections, for delivering request messages.

use super::common::{Out, QUEUE};
use crate::requests::{Request, Scope};
use crate::util::clock::Clock;
use lichen_fcp::codec::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct ConnEntry {
    tx: mpsc::Sender<Out>,
    client: Option<String>,
    watch_global: bool,
    close: CancellationToken,
}

/// The live connections, for delivering request messages.
#[derive(Debug)]
pub(crate) struct Hub {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    clock: Arc<dyn Clock>,
}

impl Hub {
    /// No connection yet; messages are dated by `clock`.
    pub(super) fn new(clock: Arc<dyn Clock>) -> Self {
        Hub {
            next: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Now, by the node's clock.
    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(super) fn register(&self, tx: mpsc::Sender<Out>, close: CancellationToken) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut m) = self.conns.lock() {
            m.insert(
                id,
                ConnEntry {
                    tx,
                    client: None,
                    watch_global: false,
                    close,
                },
            );
        }
        id
    }

    pub(super) fn unregister(&self, id: u64) {
        if let Ok(mut m) = self.conns.lock() {
            m.remove(&id);
        }
    }

    pub(super) fn update(&self, id: u64, client: Option<String>, watch_global: bool) {
        if let Ok(mut m) = self.conns.lock() {
            if let Some(c) = m.get_mut(&id) {
                c.client = client;
                c.watch_global = watch_global;
            }
        }
    }

    /// Send to one connection (see [`Hub::send_to`]).
    pub(crate) fn send_to_conn(&self, id: u64, out: Out) {
        self.send_to(id, out);
    }

    /// Send to one connection; false if it is gone. A full queue means
    /// the client stopped reading: it is disconnected rather than buffered
    /// without bound.
    pub(super) fn send_to(&self, id: u64, out: Out) -> bool {
        let Ok(m) = self.conns.lock() else {
            return false;
        };
        let Some(c) = m.get(&id) else { return false };
        if c.tx.try_send(out).is_err() {
            tracing::debug!("FCP connection {id} is not reading its replies; closing it");
            c.close.cancel();
            return false;
        }
        true
    }

    /// Send a progress message: dropped for a connection whose queue is
    /// half full (a slow reader misses progress, never a result).
    pub(crate) fn deliver_progress(&self, req: &Request, msg: &Message) {
        let bytes = msg.encode();
        for id in self.audience(req) {
            let Ok(m) = self.conns.lock() else { return };
            if let Some(c) = m.get(&id) {
                if c.tx.capacity() > QUEUE / 2 {
                    let _ = c.tx.try_send(Out::Msg(bytes.clone()));
                }
            }
        }
    }

    /// The connections that should see a request's messages.
    pub(super) fn audience(&self, req: &Request) -> Vec<u64> {
        let Ok(m) = self.conns.lock() else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = m
            .iter()
            .filter(|(id, c)| match &req.scope {
                Scope::Connection(owner) => *id == owner,
                Scope::Global => c.watch_global || req_origin(req) == Some(**id),
                Scope::Client(name) => c.client.as_deref() == Some(name.as_str()),
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Send a message to everyone who should see `req`'s messages.
    pub(crate) fn deliver(&self, req: &Request, msg: &Message) {
        let bytes = msg.encode();
        for id in self.audience(req) {
            self.send_to(id, Out::Msg(bytes.clone()));
        }
    }
}

fn req_origin(req: &Request) -> Option<u64> {
    req.header
        .get("X-Lichen-Origin")
        .and_then(|s| s.parse().ok())
}
