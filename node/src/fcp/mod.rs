//! The FCP 2.0 server, a front end: one task per connection reading with
//! the `lichen-fcp` decoder, one writer task per connection, requests run
//! as their own tasks (`jobs::request`) and report through the [`Hub`] of
//! live connections, which this server owns.
//!
//! # Protocol flow
//!
//! ```text
//! accept (loopback or allow-listed, at most fcp.max_connections at once;
//!         full access or restricted, by fcp.full_access_hosts: `access`)
//!   reader: bytes -> Decoder -> Session (hello rule, collisions) -> dispatch
//!           big payloads are spooled to <data>/tmp as they arrive
//!   requests: spawned; progress and results go to every connection that
//!           should see them (its own connection, the client's connections
//!           for persistent requests, WatchGlobal connections for global ones)
//!   writer: a bounded queue; a client that stops reading is disconnected
//!           when the queue is full or a write stalls for WRITE_TIMEOUT
//! ```

mod access;
mod common;
mod config;
mod conn;
mod dda;
mod execute;
mod hub;
mod messages;
mod output;
mod run;
mod start;
mod subscribe;

use crate::node::Node;
use common::data_len;
use hub::Hub;
use lichen_fcp::client::{ClientMessage, MessageInvalid};
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::ProtocolErrorCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The FCP front end: the node and the live connections.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    node: Arc<Node>,
    hub: Arc<Hub>,
}

impl Server {
    /// The FCP front end of `node` (no connection yet).
    pub(crate) fn new(node: Arc<Node>) -> Self {
        Server {
            hub: Arc::new(Hub::new(node.clock.clone())),
            node,
        }
    }

    /// Run the FCP server until the node shuts down.
    ///
    /// # Errors
    /// The listener could not be bound.
    pub(crate) async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        serve(self.node, self.hub, listener).await
    }

    /// Restart the forever-persistent requests that had not finished.
    pub(crate) fn resume(&self) {
        for req in self.node.requests.unfinished() {
            let parsed = ClientMessage::parse_header(&req.header, data_len(&req.header));
            match parsed {
                Ok(msg) => {
                    tracing::info!("resuming a persistent request");
                    run::start_request(&self.node, &self.hub, req, msg, None, None);
                }
                Err(e) => unresumable(&e),
            }
        }
    }
}

/// Log a persistent request that cannot run again: its code above debug,
/// the detail (which may quote its URI or file names) at debug only.
fn unresumable(e: &MessageInvalid) {
    tracing::warn!("cannot resume a persistent request: {e}");
    tracing::debug!("cannot resume a persistent request: {}", e.extra);
}

async fn serve(node: Arc<Node>, hub: Arc<Hub>, listener: TcpListener) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(node.config.fcp.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            () = node.shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("FCP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !node.config.fcp.allows(peer.ip()) {
            tracing::debug!("refused FCP client {peer}: not in fcp.allowed_hosts");
            continue;
        }
        let full_access = node.config.fcp.full_access(peer.ip());
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("too many FCP connections; refusing one");
            let mut s = stream;
            let msg = rep::ProtocolError::new(
                ProtocolErrorCode::InternalError,
                Some("too many connections".into()),
            )
            .to_message()
            .encode();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&msg)).await;
            });
            continue;
        };
        let (node, hub) = (node.clone(), hub.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            conn::connection(node, hub, stream, full_access).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs at `level` and above.
    fn logged(level: tracing::Level, f: impl FnOnce()) -> String {
        let sink = Captured::default();
        let w = sink.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        let bytes = sink.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn an_unresumable_request_is_logged_without_its_uri_or_file_names() {
        let header = lichen_fcp::Message::new("ClientPutComplexDir")
            .field("Identifier", "site")
            .field("URI", "CHK@")
            .field("Files.0.Name", "secret-diary.html")
            .field("Files.0.UploadFrom", "direct");
        let e = match ClientMessage::parse_header(&header, Some(0)) {
            Err(e) => e,
            Ok(m) => panic!("parsed: {m:?}"),
        };
        assert!(e.extra.contains("secret-diary.html"), "{}", e.extra);
        let info = logged(tracing::Level::INFO, || unresumable(&e));
        assert!(
            info.contains("cannot resume a persistent request"),
            "{info}"
        );
        assert!(!info.contains("secret-diary"), "{info}");
        // The detail is there for whoever turns debug on.
        let debug = logged(tracing::Level::DEBUG, || unresumable(&e));
        assert!(debug.contains("secret-diary.html"), "{debug}");
    }
}
