//! The push task: inserts that were made without peers go into the
//! network once the node has peers (the records are in
//! [`crate::pushes`]; see there for the format).
//!
//! The task ([`start`]) waits until the node has peers (a few, or one for
//! 20 s), then reads each block back from the client cache and inserts it
//! through the routing core exactly like a local insert (maximum HTL, never
//! written to the shared store or cache here), a few at a time, backing off
//! when the network is overloaded. When every block is out the record is
//! removed and the request shows `Lichen.InNetwork=true`. A block evicted
//! from the client cache before it was pushed cannot be recovered: the
//! request then shows that the push failed and that the document must be
//! inserted again.

use crate::node::{Network, Node};
use crate::pushes::PushRecord;
use lichen_crypto::{BlockKind, RoutingKey};
use lichen_routing::{InsertOutcome, Key, KeyKind};
use lichen_store::Origin;
use std::sync::Arc;
use std::time::Duration;
/// Blocks pushed at once.
pub(crate) const CONCURRENCY: usize = 4;
/// Longest wait between tries of one block.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often progress is written to disk while pushing.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Tries of a block whose insert came back "route not found" above the
/// level where nodes store inserts (so stored nowhere: all peers backed
/// off, or a network too small to take it that far) before it is taken
/// as done.
const RNF_TRIES: u32 = 3;

/// Start the background push task (needs a tokio runtime). It stops when
/// the node shuts down.
pub(crate) fn start(node: &Arc<Node>) {
    let node = node.clone();
    tokio::spawn(async move { run(node).await });
}

/// Peers enough to start pushing at once.
const MIN_PEERS: usize = 3;
/// With fewer peers, how long after the first one came to start anyway:
/// an opennet node gains peers near its location by announcing itself in
/// the first seconds, and blocks pushed to a lone seed meanwhile would
/// mostly end there.
const SETTLE: Duration = Duration::from_secs(20);

async fn run(node: Arc<Node>) {
    let mut first_peer: Option<std::time::Instant> = None;
    loop {
        // Wait for work and peers.
        loop {
            if node.shutdown.is_cancelled() {
                return;
            }
            let peers = node.peer_count();
            if peers == 0 {
                first_peer = None;
            } else if first_peer.is_none() {
                first_peer = Some(node.clock.now());
            }
            let settled = peers >= MIN_PEERS
                || first_peer
                    .is_some_and(|t| node.clock.now().saturating_duration_since(t) >= SETTLE);
            if !node.pushes.is_empty() && node.network().is_some() && settled {
                break;
            }
            tokio::select! {
                () = node.shutdown.cancelled() => return,
                () = node.pushes.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let Some((id, rec)) = node.pushes.first() else {
            continue;
        };
        if !push_record(&node, id, rec).await {
            return;
        }
    }
}

enum BlockResult {
    Pushed,
    Missing,
    Stopped,
}

/// Push one record. `false` when the node is shutting down.
async fn push_record(node: &Arc<Node>, id: u64, rec: PushRecord) -> bool {
    let n = rec.blocks.len();
    tracing::info!(
        "pushing an insert made without peers into the network: {n} block(s) of {}",
        rec.total
    );
    let started = std::time::Instant::now();
    let mut done = vec![false; n];
    let mut missing = 0u64;
    let mut next = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_save = tokio::time::Instant::now();
    let mut dirty = false;
    let mut stopped = false;
    loop {
        while !stopped && tasks.len() < CONCURRENCY && next < n {
            let (kind, key) = rec.blocks[next];
            let node = node.clone();
            let i = next;
            tasks.spawn(async move { (i, push_block(&node, kind, key).await) });
            next += 1;
        }
        let joined = tokio::select! {
            j = tasks.join_next() => j,
            () = node.shutdown.cancelled() => { stopped = true; None }
        };
        match joined {
            None => break,
            Some(Ok((i, BlockResult::Pushed))) => {
                done[i] = true;
                dirty = true;
            }
            Some(Ok((i, BlockResult::Missing))) => {
                done[i] = true;
                missing += 1;
                dirty = true;
            }
            Some(Ok((_, BlockResult::Stopped))) => stopped = true,
            Some(Err(e)) => {
                tracing::warn!("a push task failed: {e}");
                stopped = true;
            }
        }
        if stopped {
            tasks.abort_all();
            break;
        }
        if dirty && last_save.elapsed() >= SAVE_EVERY {
            node.pushes.update(id, remaining(&rec, &done, missing));
            last_save = tokio::time::Instant::now();
            dirty = false;
        }
    }
    finish(node, id, &rec, &done, missing, stopped, started)
}

/// The record with the done blocks taken out.
fn remaining(rec: &PushRecord, done: &[bool], missing: u64) -> PushRecord {
    PushRecord {
        created_ms: rec.created_ms,
        request: rec.request.clone(),
        total: rec.total,
        missing: rec.missing + missing,
        blocks: rec
            .blocks
            .iter()
            .zip(done)
            .filter(|(_, d)| !**d)
            .map(|(b, _)| *b)
            .collect(),
    }
}

fn finish(
    node: &Arc<Node>,
    id: u64,
    rec: &PushRecord,
    done: &[bool],
    missing: u64,
    stopped: bool,
    started: std::time::Instant,
) -> bool {
    let rest = remaining(rec, done, missing);
    if stopped || !rest.blocks.is_empty() {
        node.pushes.update(id, rest);
        return false;
    }
    node.pushes.remove(id);
    if rest.missing == 0 {
        tracing::info!(
            "an insert made without peers is now in the network ({} block(s) pushed in {:.1} s)",
            rest.total,
            started.elapsed().as_secs_f64()
        );
        if let Some(r) = &rest.request {
            node.requests.pushed(r, None);
        }
    } else {
        let msg = format!(
            "{} of {} block(s) were evicted from the client cache before they reached the network; insert the document again",
            rest.missing, rest.total
        );
        tracing::warn!("pushing an insert made without peers failed: {msg}");
        if let Some(r) = &rest.request {
            node.requests.pushed(r, Some(msg));
        }
    }
    true
}

/// Push one block, retrying with backoff until it is out, missing, or the
/// node stops.
async fn push_block(node: &Arc<Node>, kind: BlockKind, key: RoutingKey) -> BlockResult {
    let store = node.store.clone();
    let read = tokio::task::spawn_blocking(move || store.get(Origin::Local, kind, &key)).await;
    let block = match read {
        Ok(Ok(Some(found))) => found.block,
        Ok(Ok(None)) => {
            tracing::debug!(key = %lichen_crypto::b64::encode(&key.0), "a block to push is no longer in the client cache");
            return BlockResult::Missing;
        }
        Ok(Err(e)) => {
            tracing::warn!("cannot read a block to push: {e}");
            return BlockResult::Missing;
        }
        Err(_) => return BlockResult::Stopped,
    };
    let mut backoff = Duration::from_millis(500);
    let mut rnf = 0u32;
    // Ended with more HTL left than this: stored nowhere (only nodes that
    // received it at this HTL or below keep an insert).
    let store_htl = node.insert_store_htl();
    loop {
        let Some(net) = node.network() else {
            // Peers gone: wait for them.
            tokio::select! {
                () = node.shutdown.cancelled() => return BlockResult::Stopped,
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        let kk = KeyKind::from(kind);
        let outcome = tokio::select! {
            () = node.shutdown.cancelled() => return BlockResult::Stopped,
            o = net.insert(Key(key.0), kk, block.clone()) => o,
        };
        let retry = match outcome {
            Ok(InsertOutcome::Success) => return BlockResult::Pushed,
            Ok(InsertOutcome::RouteNotFound { htl }) => {
                rnf += 1;
                if htl <= store_htl || rnf >= RNF_TRIES {
                    return BlockResult::Pushed;
                }
                true
            }
            // Someone else's block is there (SSK/KSK first writer wins):
            // nothing more this node can do for it.
            Ok(InsertOutcome::Collision(_)) => {
                tracing::info!("a pushed block collided with different data in the network");
                return BlockResult::Pushed;
            }
            Ok(InsertOutcome::Overloaded | InsertOutcome::TimedOut) => true,
            Ok(InsertOutcome::InvalidBlock) => return BlockResult::Missing,
            Err(_) => return BlockResult::Stopped,
        };
        debug_assert!(retry);
        tokio::select! {
            () = node.shutdown.cancelled() => return BlockResult::Stopped,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::requests::{RequestRef, Scope};
    use lichen_store::Space;
    use std::sync::Mutex;

    #[tokio::test]
    async fn a_block_gone_from_the_client_cache_fails_the_push_clearly() {
        use crate::requests::{Outcome, Request, State};
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(crate::config::Config {
            data_dir: Some(dir.path().to_path_buf()),
            ..crate::config::Config::default()
        })
        .unwrap();
        let req = Arc::new(Request {
            scope: Scope::Global,
            identifier: "p".into(),
            header: lichen_fcp::codec::Message::new("ClientPut")
                .field("URI", "CHK@")
                .field("Identifier", "p"),
            persistence: lichen_fcp::client::Persistence::Forever,
            upload: None,
            stream: None,
            started_ms: 3,
            cancel: tokio_util::sync::CancellationToken::new(),
            state: Mutex::new(State::default()),
        });
        assert!(node.requests.insert(req.clone()));
        node.requests.finish(
            &req,
            Outcome::PutOk {
                uri: "CHK@x".into(),
                in_network: false,
                push_error: None,
            },
            4,
        );
        // One block that is there, one that is not.
        let (chk, block) =
            lichen_crypto::chk::encode(b"kept", lichen_crypto::DataFlags::default()).unwrap();
        node.store
            .put(Space::Client, BlockKind::Chk, &chk.routing_key, &block)
            .unwrap();
        let r = RequestRef {
            scope: Scope::Global,
            identifier: "p".into(),
            started_ms: 3,
        };
        node.pushes
            .add(
                Some(r),
                vec![
                    (BlockKind::Chk, RoutingKey([5; 32])),
                    (BlockKind::Chk, chk.routing_key),
                ],
            )
            .unwrap();
        let (id, rec) = node.pushes.first().unwrap();
        // The present block waits for peers; the missing one is found at
        // once. Without peers the push does not end: stop it after a while.
        let n2 = node.clone();
        let task = tokio::spawn(async move { push_record(&n2, id, rec).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        node.shutdown.cancel();
        assert!(!tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap());
        // Stopped: the record keeps the block still to push, and counts the
        // missing one.
        let (_, left) = node.pushes.first().unwrap();
        assert_eq!(left.blocks, vec![(BlockKind::Chk, chk.routing_key)]);
        assert_eq!(left.missing, 1);
        // Finishing with a missing block marks the request.
        finish(
            &node,
            id,
            &left,
            &[true],
            0,
            false,
            std::time::Instant::now(),
        );
        assert!(node.pushes.is_empty());
        assert!(matches!(
            req.snapshot().outcome,
            Some(Outcome::PutOk {
                in_network: false,
                push_error: Some(_),
                ..
            })
        ));
    }
}
