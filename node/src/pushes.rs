//! The table of inserts made without peers that wait to be pushed into
//! the network (the push task is `jobs::push`).
//!
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
//! record = vault record (purpose "push") of body   (crate::vault)
//! body   = header_len u32 LE | header (JSON) | count u32 LE | count × (kind u8, routing key [32])
//! ```
//!
//! Sealed (authenticated encryption) under the node's vault key, so a
//! seized disk does not show which blocks this node's user inserted (the
//! same reason the store's index is salted). A record that does not open
//! is kept aside as `.bad` with a warning; it never stops the node.

use crate::requests::RequestRef;
use crate::util::clock::Clock;
use crate::vault::Vault;
use lichen_crypto::{BlockKind, RoutingKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

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
pub(crate) struct PushRecord {
    /// When the insert finished (ms since epoch).
    pub(crate) created_ms: u64,
    /// The FCP request, if any (gateway uploads have none).
    pub(crate) request: Option<RequestRef>,
    /// Blocks in the insert's push list at the start.
    pub(crate) total: u64,
    /// Blocks already found missing from the client cache.
    pub(crate) missing: u64,
    /// Blocks still to push.
    pub(crate) blocks: Vec<(BlockKind, RoutingKey)>,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// Not a push record, or damaged.
    #[error("damaged push record: {0}")]
    Damaged(&'static str),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The purpose push records are sealed for (`crate::vault`).
const PURPOSE: &str = "push";

impl PushRecord {
    /// Encode, sealed under `vault`.
    #[must_use]
    pub(crate) fn encode(&self, vault: &Vault) -> Vec<u8> {
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
        vault.seal(PURPOSE, &body)
    }

    /// Decode a record written by [`PushRecord::encode`] with `vault`.
    ///
    /// # Errors
    /// [`RecordError::Damaged`] for anything that is not an intact record.
    pub(crate) fn decode(bytes: &[u8], vault: &Vault) -> Result<Self, RecordError> {
        let body = vault
            .open(PURPOSE, bytes)
            .map_err(|_| RecordError::Damaged("not a push record sealed under this node's key"))?;
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
pub(crate) struct Pushes {
    dir: PathBuf,
    vault: Vault,
    records: Mutex<BTreeMap<u64, PushRecord>>,
    pub(crate) wake: tokio::sync::Notify,
    /// Client cache bytes the records' blocks take.
    pending: AtomicU64,
    /// Client cache bytes of running inserts' blocks that will need pushing
    /// (`crate::ops`): counted so that two inserts at once cannot
    /// together overflow the cache.
    pub(crate) in_flight: AtomicU64,
    /// When records are made.
    clock: Arc<dyn Clock>,
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
    #[cfg(test)]
    pub(crate) fn open(data_dir: &Path, vault: Vault) -> std::io::Result<Self> {
        Self::open_with(data_dir, vault, Arc::new(crate::util::clock::SystemClock))
    }

    /// [`Pushes::open`], dating records by `clock`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub(crate) fn open_with(
        data_dir: &Path,
        vault: Vault,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
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
                .and_then(|b| PushRecord::decode(&b, &vault));
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
            vault,
            records: Mutex::new(records),
            wake: tokio::sync::Notify::new(),
            pending: AtomicU64::new(pending),
            in_flight: AtomicU64::new(0),
            clock,
        })
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.push"))
    }

    fn write(&self, id: u64, rec: &PushRecord) -> Result<(), String> {
        crate::files::write_atomic(&self.path(id), &rec.encode(&self.vault), true)
            .map_err(|e| e.to_string())
    }

    /// Record a new insert to push (durably, before it is acknowledged).
    ///
    /// # Errors
    /// The record could not be written.
    pub(crate) fn add(
        &self,
        request: Option<RequestRef>,
        blocks: Vec<(BlockKind, RoutingKey)>,
    ) -> Result<(), String> {
        if blocks.is_empty() {
            return Ok(());
        }
        let rec = PushRecord {
            created_ms: self.clock.now_ms(),
            request,
            total: u64::try_from(blocks.len()).unwrap_or(u64::MAX),
            missing: 0,
            blocks,
        };
        let id = loop {
            // Ordered by creation time, random below the millisecond.
            let id = (self.clock.now_ms() << 16) | u64::from(rand::random::<u16>());
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
    pub(crate) fn pending_blocks(&self) -> u64 {
        self.records
            .lock()
            .map(|m| m.values().map(|r| r.blocks.len() as u64).sum())
            .unwrap_or(0)
    }

    /// Bytes of client cache the waiting blocks occupy.
    #[must_use]
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Records waiting.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.records.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing waits.
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The oldest record.
    pub(crate) fn first(&self) -> Option<(u64, PushRecord)> {
        self.records
            .lock()
            .ok()?
            .iter()
            .next()
            .map(|(id, r)| (*id, r.clone()))
    }

    /// Save a record's progress (the blocks still to push).
    pub(crate) fn update(&self, id: u64, rec: PushRecord) {
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

    /// Forget a record that is done.
    pub(crate) fn remove(&self, id: u64) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::requests::Scope;

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
        let s = Vault::new([9u8; 32]);
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
        let s = Vault::new([9u8; 32]);
        let b = rec(10).encode(&s);
        assert!(
            PushRecord::decode(&b, &Vault::new([8u8; 32])).is_err(),
            "wrong secret"
        );
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

    #[test]
    fn pushes_survive_reopen_and_damaged_files_are_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let s = Vault::new([3u8; 32]);
        let p = Pushes::open(dir.path(), s.clone()).unwrap();
        assert!(p.is_empty());
        let r = rec(5);
        p.add(r.request.clone(), r.blocks.clone()).unwrap();
        p.add(None, Vec::new()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p.pending_blocks(), 5);
        assert_eq!(p.pending_bytes(), bytes_of(&r.blocks));
        drop(p);
        std::fs::write(dir.path().join("push/00000000000000aa.push"), b"junk").unwrap();
        let p = Pushes::open(dir.path(), s.clone()).unwrap();
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
        assert!(Pushes::open(dir.path(), s.clone()).unwrap().is_empty());
    }
}
