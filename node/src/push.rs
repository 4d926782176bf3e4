//! Pushing inserts that were made without peers into the network once the
//! node has peers.
//!
//! An insert whose blocks could not all be sent into the network (no
//! peers, or the network refused them) keeps them in the private client
//! cache and leaves a *push record* in `<data dir>/push/`: which blocks
//! (kind and routing key) still have to go out, and which FCP request they
//! belong to. The record is written atomically before the insert is
//! acknowledged, so a crash never loses it; a restart resumes pushing.
//!
//! A background task ([`start`]) waits until the node has peers (a few, or
//! one for 20 s), then reads
//! each block back from the client cache and inserts it through the routing
//! core exactly like a local insert (maximum HTL, never written to the
//! shared store or cache here), a few at a time, backing off when the
//! network is overloaded. When every block is out the record is removed and
//! the request shows `Lichen.InNetwork=true`. A block evicted from the
//! client cache before it was pushed cannot be recovered: the request then
//! shows that the push failed and that the document must be inserted again.
//!
//! # Record format
//!
//! ```text
//! "LPSH" | version u8 = 1 | nonce [16] | body (encrypted) | check [32]
//! body  = header_len u32 LE | header (JSON) | count u32 LE | count × (kind u8, routing key [32])
//! check = SHA-256(secret-derived key | "check" | everything before check)
//! ```
//!
//! The body is encrypted with a SHA-256 counter-mode keystream under a key
//! derived from the node's store secret, so a seized disk does not show
//! which blocks this node's user inserted (the same reason the store's
//! index is salted). A record that fails its check is kept aside as `.bad`
//! with a warning; it never stops the node.

use crate::node::{now_ms, Node};
use crate::requests::Scope;
use lichen_crypto::{BlockKind, RoutingKey};
use lichen_routing::{InsertOutcome, Key, KeyKind};
use lichen_store::Origin;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which FCP request an insert belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRef {
    /// Its scope.
    pub scope: Scope,
    /// Its identifier.
    pub identifier: String,
    /// When it started (tells it from a later request with the same name).
    pub started_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    created_ms: u64,
    request: Option<RequestRef>,
    /// Blocks the insert left to push, in all.
    total: u64,
    /// Blocks found missing from the client cache so far.
    missing: u64,
}

/// One insert waiting to be pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecord {
    /// When the insert finished (ms since epoch).
    pub created_ms: u64,
    /// The FCP request, if any (gateway uploads have none).
    pub request: Option<RequestRef>,
    /// Blocks in the insert's push list at the start.
    pub total: u64,
    /// Blocks already found missing from the client cache.
    pub missing: u64,
    /// Blocks still to push.
    pub blocks: Vec<(BlockKind, RoutingKey)>,
}

const MAGIC: &[u8; 4] = b"LPSH";
const VERSION: u8 = 1;

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not a push record, or damaged.
    #[error("damaged push record: {0}")]
    Damaged(&'static str),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn record_key(secret: &[u8; 32]) -> [u8; 32] {
    lichen_crypto::sha256_parts(&[b"lichen push record v1\0", secret])
}

fn keystream_xor(key: &[u8; 32], nonce: &[u8; 16], data: &mut [u8]) {
    for (i, chunk) in data.chunks_mut(32).enumerate() {
        let ctr = u64::try_from(i).unwrap_or(u64::MAX).to_le_bytes();
        let ks = lichen_crypto::sha256_parts(&[key, nonce, &ctr]);
        for (b, k) in chunk.iter_mut().zip(ks.iter()) {
            *b ^= k;
        }
    }
}

fn check(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    lichen_crypto::sha256_parts(&[key, b"check", data])
}

impl PushRecord {
    /// Encode, encrypted under a key derived from `secret`.
    #[must_use]
    pub fn encode(&self, secret: &[u8; 32]) -> Vec<u8> {
        let header = Header {
            created_ms: self.created_ms,
            request: self.request.clone(),
            total: self.total,
            missing: self.missing,
        };
        let h = serde_json::to_vec(&header).unwrap_or_default();
        let mut body = Vec::with_capacity(8 + h.len() + self.blocks.len() * 33);
        body.extend_from_slice(&u32::try_from(h.len()).unwrap_or(0).to_le_bytes());
        body.extend_from_slice(&h);
        body.extend_from_slice(
            &u32::try_from(self.blocks.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for (kind, key) in &self.blocks {
            body.push(match kind {
                BlockKind::Chk => 0,
                BlockKind::Ssk => 1,
            });
            body.extend_from_slice(&key.0);
        }
        let key = record_key(secret);
        let nonce: [u8; 16] = rand::random();
        keystream_xor(&key, &nonce, &mut body);
        let mut out = Vec::with_capacity(body.len() + 53);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        let c = check(&key, &out);
        out.extend_from_slice(&c);
        out
    }

    /// Decode a record written by [`PushRecord::encode`] with `secret`.
    ///
    /// # Errors
    /// [`RecordError::Damaged`] for anything that is not an intact record.
    pub fn decode(bytes: &[u8], secret: &[u8; 32]) -> Result<Self, RecordError> {
        if bytes.len() < 4 + 1 + 16 + 8 + 32 || &bytes[..4] != MAGIC {
            return Err(RecordError::Damaged("not a push record"));
        }
        if bytes[4] != VERSION {
            return Err(RecordError::Damaged("unknown version"));
        }
        let key = record_key(secret);
        let (signed, c) = bytes.split_at(bytes.len() - 32);
        if check(&key, signed) != c {
            return Err(RecordError::Damaged("checksum mismatch"));
        }
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&signed[5..21]);
        let mut body = signed[21..].to_vec();
        keystream_xor(&key, &nonce, &mut body);
        let mut r = Reader(&body);
        let hlen = r.u32()? as usize;
        let header: Header = serde_json::from_slice(r.take(hlen)?)
            .map_err(|_| RecordError::Damaged("bad header"))?;
        let n = r.u32()? as usize;
        if r.0.len() != n * 33 {
            return Err(RecordError::Damaged("bad block list length"));
        }
        let mut blocks = Vec::with_capacity(n);
        for e in r.0.chunks_exact(33) {
            let kind = match e[0] {
                0 => BlockKind::Chk,
                1 => BlockKind::Ssk,
                _ => return Err(RecordError::Damaged("bad block kind")),
            };
            let mut k = [0u8; 32];
            k.copy_from_slice(&e[1..]);
            blocks.push((kind, RoutingKey(k)));
        }
        Ok(PushRecord {
            created_ms: header.created_ms,
            request: header.request,
            total: header.total,
            missing: header.missing,
            blocks,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Damaged("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The push records of a node: on disk in `<data dir>/push/`, mirrored in
/// memory.
#[derive(Debug)]
pub struct Pushes {
    dir: PathBuf,
    secret: [u8; 32],
    records: Mutex<BTreeMap<u64, PushRecord>>,
    wake: tokio::sync::Notify,
    /// Client cache bytes the records' blocks take.
    pending: AtomicU64,
    /// Client cache bytes of running inserts' blocks that will need pushing
    /// (`crate::engine`): counted so that two inserts at once cannot
    /// together overflow the cache.
    pub in_flight: AtomicU64,
}

fn bytes_of(blocks: &[(BlockKind, RoutingKey)]) -> u64 {
    blocks.iter().map(|(k, _)| k.block_len() as u64).sum()
}

impl Pushes {
    /// Open (creating) `<data_dir>/push` and read every record. Damaged
    /// records are warned about and kept aside as `.bad`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(data_dir: &Path, secret: [u8; 32]) -> std::io::Result<Self> {
        let dir = data_dir.join("push");
        std::fs::create_dir_all(&dir)?;
        let mut records = BTreeMap::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let path = e.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Leftover temporary files of an interrupted atomic write.
            if !std::path::Path::new(name)
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("push"))
            {
                continue;
            }
            let id = name
                .strip_suffix(".push")
                .and_then(|s| u64::from_str_radix(s, 16).ok());
            let rec = std::fs::read(&path)
                .map_err(RecordError::from)
                .and_then(|b| PushRecord::decode(&b, &secret));
            match (id, rec) {
                (Some(id), Ok(r)) => {
                    records.insert(id, r);
                }
                (_, Err(e)) => {
                    tracing::warn!(
                        "an insert waiting to be pushed into the network cannot be read ({e}); kept aside as .bad: insert it again"
                    );
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                }
                (None, Ok(_)) => {
                    tracing::warn!("a push record has a bad file name; kept aside as .bad");
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
        if !records.is_empty() {
            tracing::info!(
                "{} insert(s) wait to be pushed into the network",
                records.len()
            );
        }
        let pending = records.values().map(|r| bytes_of(&r.blocks)).sum();
        Ok(Pushes {
            dir,
            secret,
            records: Mutex::new(records),
            wake: tokio::sync::Notify::new(),
            pending: AtomicU64::new(pending),
            in_flight: AtomicU64::new(0),
        })
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.push"))
    }

    fn write(&self, id: u64, rec: &PushRecord) -> Result<(), String> {
        crate::identity::write_atomic(&self.path(id), &rec.encode(&self.secret), true)
            .map_err(|e| e.to_string())
    }

    /// Record a new insert to push (durably, before it is acknowledged).
    ///
    /// # Errors
    /// The record could not be written.
    pub fn add(
        &self,
        request: Option<RequestRef>,
        blocks: Vec<(BlockKind, RoutingKey)>,
    ) -> Result<(), String> {
        if blocks.is_empty() {
            return Ok(());
        }
        let rec = PushRecord {
            created_ms: now_ms(),
            request,
            total: u64::try_from(blocks.len()).unwrap_or(u64::MAX),
            missing: 0,
            blocks,
        };
        let id = loop {
            // Ordered by creation time, random below the millisecond.
            let id = (now_ms() << 16) | u64::from(rand::random::<u16>());
            let taken = self
                .records
                .lock()
                .map(|m| m.contains_key(&id))
                .unwrap_or(false);
            if !taken && !self.path(id).exists() {
                break id;
            }
        };
        self.write(id, &rec)?;
        self.pending
            .fetch_add(bytes_of(&rec.blocks), Ordering::Relaxed);
        if let Ok(mut m) = self.records.lock() {
            m.insert(id, rec);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Blocks waiting to be pushed, over all records.
    #[must_use]
    pub fn pending_blocks(&self) -> u64 {
        self.records
            .lock()
            .map(|m| m.values().map(|r| r.blocks.len() as u64).sum())
            .unwrap_or(0)
    }

    /// Bytes of client cache the waiting blocks occupy.
    #[must_use]
    pub fn pending_bytes(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Records waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn first(&self) -> Option<(u64, PushRecord)> {
        self.records
            .lock()
            .ok()?
            .iter()
            .next()
            .map(|(id, r)| (*id, r.clone()))
    }

    /// Save a record's progress (the blocks still to push).
    fn update(&self, id: u64, rec: PushRecord) {
        if let Err(e) = self.write(id, &rec) {
            tracing::warn!("cannot save the progress of a push: {e}");
        }
        let new = bytes_of(&rec.blocks);
        if let Ok(mut m) = self.records.lock() {
            if let Some(old) = m.insert(id, rec) {
                self.pending
                    .fetch_sub(bytes_of(&old.blocks).saturating_sub(new), Ordering::Relaxed);
            }
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.records.lock() {
            if let Some(old) = m.remove(&id) {
                self.pending
                    .fetch_sub(bytes_of(&old.blocks), Ordering::Relaxed);
            }
        }
        if let Err(e) = std::fs::remove_file(self.path(id)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove a finished push record: {e}");
            }
        }
    }
}

/// Blocks pushed at once.
pub const CONCURRENCY: usize = 4;
/// Longest wait between tries of one block.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often progress is written to disk while pushing.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Tries of a block whose insert came back "route not found" without
/// having gone anywhere (all peers backed off) before it is taken as done
/// (in a two-node network an insert can come back that way after being
/// stored, when the peer kept the maximum HTL).
const RNF_TRIES: u32 = 3;

/// Start the background push task (needs a tokio runtime). It stops when
/// the node shuts down.
pub fn start(node: &Arc<Node>) {
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
    let mut first_peer: Option<tokio::time::Instant> = None;
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
                first_peer = Some(tokio::time::Instant::now());
            }
            let settled = peers >= MIN_PEERS || first_peer.is_some_and(|t| t.elapsed() >= SETTLE);
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
    let max_htl = lichen_routing::Config::default().max_htl;
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
                if htl < max_htl || rnf >= RNF_TRIES {
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
    use lichen_store::Space;

    fn rec(n: usize) -> PushRecord {
        PushRecord {
            created_ms: 42,
            request: Some(RequestRef {
                scope: Scope::Global,
                identifier: "put-1".into(),
                started_ms: 7,
            }),
            total: n as u64,
            missing: 1,
            blocks: (0..n)
                .map(|i| {
                    let kind = if i % 3 == 0 {
                        BlockKind::Ssk
                    } else {
                        BlockKind::Chk
                    };
                    (kind, RoutingKey(lichen_crypto::sha256(&i.to_le_bytes())))
                })
                .collect(),
        }
    }

    #[test]
    fn record_round_trip() {
        let s = [9u8; 32];
        for n in [0, 1, 1000] {
            let r = rec(n);
            let b = r.encode(&s);
            assert_eq!(PushRecord::decode(&b, &s).unwrap(), r);
            // Encrypted: the keys do not appear in the file.
            if let Some((_, k)) = r.blocks.first() {
                assert!(
                    !b.windows(32).any(|w| w == k.0),
                    "a routing key is in clear"
                );
            }
        }
    }

    #[test]
    fn damaged_record_is_an_error_not_a_panic() {
        let s = [9u8; 32];
        let b = rec(10).encode(&s);
        assert!(PushRecord::decode(&b, &[8u8; 32]).is_err(), "wrong secret");
        for cut in [0, 3, 10, b.len() - 1] {
            assert!(PushRecord::decode(&b[..cut], &s).is_err());
        }
        let mut flipped = b.clone();
        flipped[30] ^= 1;
        assert!(PushRecord::decode(&flipped, &s).is_err());
        assert!(PushRecord::decode(
            b"garbage that is long enough to pass the length check....",
            &s
        )
        .is_err());
    }

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

    #[test]
    fn pushes_survive_reopen_and_damaged_files_are_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let s = [3u8; 32];
        let p = Pushes::open(dir.path(), s).unwrap();
        assert!(p.is_empty());
        let r = rec(5);
        p.add(r.request.clone(), r.blocks.clone()).unwrap();
        p.add(None, Vec::new()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p.pending_blocks(), 5);
        assert_eq!(p.pending_bytes(), bytes_of(&r.blocks));
        drop(p);
        std::fs::write(dir.path().join("push/00000000000000aa.push"), b"junk").unwrap();
        let p = Pushes::open(dir.path(), s).unwrap();
        assert_eq!(p.len(), 1);
        let (id, back) = p.first().unwrap();
        assert_eq!(back.blocks, r.blocks);
        assert_eq!(back.request, r.request);
        assert!(dir.path().join("push/00000000000000aa.bad").exists());
        assert_eq!(p.pending_bytes(), bytes_of(&r.blocks));
        p.update(
            id,
            PushRecord {
                blocks: r.blocks[2..].to_vec(),
                ..back
            },
        );
        assert_eq!(p.pending_bytes(), bytes_of(&r.blocks[2..]));
        p.remove(id);
        assert_eq!(p.pending_bytes(), 0);
        drop(p);
        assert!(Pushes::open(dir.path(), s).unwrap().is_empty());
    }
}
