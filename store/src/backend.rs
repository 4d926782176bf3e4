//! Storage backends: an ordered key-value map with atomic batches.
//!
//! The engine keeps every invariant; a backend only has to apply a batch
//! atomically (all or nothing, also across a crash) and in order.

use crate::StoreError;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// After this many bytes written to a slot file, its writeback is started
/// in the background (an `fdatasync` on a helper thread), so the flush at
/// the end of a large insert waits for the last few megabytes, not for
/// everything at once.
const WRITEBACK_EVERY: u64 = 16 << 20;

/// One write: `Some(value)` inserts, `None` removes.
pub(crate) type Op = (Vec<u8>, Option<Vec<u8>>);

/// What the engine needs from the disk (or memory).
pub(crate) trait Backend: Send + Sync + 'static {
    /// A value read back; sled hands out a reference-counted buffer.
    type Value: AsRef<[u8]>;

    /// Read one key of the block tree.
    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, StoreError>;
    /// Apply writes to the block tree atomically.
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// Visit every entry of the block tree whose key starts with `prefix`.
    fn scan_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8]))
        -> Result<(), StoreError>;
    /// Read one key of the metadata tree.
    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Write (`Some`) or remove (`None`) one key of the metadata tree;
    /// answers whether the key existed.
    fn meta_set(&self, key: &[u8], value: Option<&[u8]>) -> Result<bool, StoreError>;
    /// Make everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Bytes the backend occupies on disk, if it has a disk.
    fn disk_bytes(&self) -> Option<u64>;
}

/// In-memory backend: two ordered maps behind a lock.
#[derive(Debug, Default)]
pub(crate) struct MemBackend {
    blocks: RwLock<BTreeMap<Vec<u8>, Arc<[u8]>>>,
    meta: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Backend for MemBackend {
    type Value = Arc<[u8]>;

    fn get(&self, key: &[u8]) -> Result<Option<Arc<[u8]>>, StoreError> {
        Ok(self.blocks.read().get(key).cloned())
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut map = self.blocks.write();
        for (k, v) in ops {
            match v {
                Some(v) => {
                    map.insert(k, Arc::from(v));
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        let map = self.blocks.read();
        for (k, v) in map.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            f(k, v);
        }
        Ok(())
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.read().get(key).cloned())
    }

    fn meta_set(&self, key: &[u8], value: Option<&[u8]>) -> Result<bool, StoreError> {
        let mut m = self.meta.write();
        Ok(match value {
            Some(v) => m.insert(key.to_vec(), v.to_vec()).is_some(),
            None => m.remove(key).is_some(),
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn disk_bytes(&self) -> Option<u64> {
        None
    }
}

/// One slot file: fixed-size slots, each `len: u32 BE || value || zero
/// padding`. Which slots are in use is known from the pointer records in
/// sled (rebuilt at open); the lowest free slot is reused first and the
/// file is cut back whenever its last slots are free, so the file is
/// bounded by the blocks held (plus the few freed slots waiting for a
/// flush), not by the most ever held.
#[derive(Debug)]
struct SlotFile {
    file: std::fs::File,
    slot_size: u64,
    state: Mutex<SlotState>,
    /// Bytes written since writeback was last started.
    unsynced: AtomicU64,
    /// A background writeback is running.
    syncing: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Slots ever allocated (the file holds this many).
    next: u64,
    /// Reusable slots, lowest first.
    free: BTreeSet<u64>,
    /// Slots whose record removal is not durable yet: reused only after the
    /// next flush, so that a crash can never leave an old record pointing
    /// at a slot that now holds another block.
    pending: Vec<u64>,
    /// Which data key owns each slot in use: a stale pointer (after a crash)
    /// can never free a slot that another record now uses.
    owner: HashMap<u64, Vec<u8>>,
}

impl SlotFile {
    fn open(path: &Path, slot_size: u64) -> Result<Self, StoreError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| StoreError::Io {
                context: "open a slot file",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(SlotFile {
            file,
            slot_size,
            state: Mutex::new(SlotState::default()),
            unsynced: AtomicU64::new(0),
            syncing: Arc::new(AtomicBool::new(false)),
        })
    }

    fn io(&self, context: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
        move |source| StoreError::Io {
            context,
            path: PathBuf::from("slots"),
            source,
        }
    }

    fn alloc(&self, key: &[u8]) -> u64 {
        let mut st = self.state.lock();
        let slot = st.free.pop_first().unwrap_or_else(|| {
            st.next += 1;
            st.next - 1
        });
        st.owner.insert(slot, key.to_vec());
        slot
    }

    fn release(&self, slot: u64, key: &[u8]) {
        let mut st = self.state.lock();
        if st.owner.get(&slot).is_some_and(|k| k.as_slice() == key) {
            st.owner.remove(&slot);
            st.pending.push(slot);
        }
    }

    /// The removals are durable: their slots may be reused, and free
    /// slots at the end of the file are given back to the file system.
    fn settle(&self) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        let pending = std::mem::take(&mut st.pending);
        st.free.extend(pending);
        self.shrink(&mut st)
    }

    /// Cut the file after its last slot in use.
    fn shrink(&self, st: &mut SlotState) -> Result<(), StoreError> {
        let before = st.next;
        while st.next > 0 && st.free.remove(&(st.next - 1)) {
            st.next -= 1;
        }
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if st.next < before || len > st.next * self.slot_size {
            self.file
                .set_len(st.next * self.slot_size)
                .map_err(self.io("shrink a slot file"))?;
        }
        Ok(())
    }

    fn write(&self, slot: u64, value: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        let mut buf = Vec::with_capacity(4 + value.len());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(value);
        self.file
            .write_all_at(&buf, slot * self.slot_size)
            .map_err(self.io("write a block to its slot"))?;
        let unsynced = self.unsynced.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if unsynced + buf.len() as u64 >= WRITEBACK_EVERY {
            self.start_writeback();
        }
        Ok(())
    }

    /// Start writing dirty pages back on a helper thread (at most one at a
    /// time). Durability still comes from [`Backend::flush`]; this only
    /// spreads the disk work over the insert.
    fn start_writeback(&self) {
        if self.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.unsynced.store(0, Ordering::Relaxed);
        let syncing = self.syncing.clone();
        let started = self.file.try_clone().is_ok_and(|f| {
            let flag = syncing.clone();
            std::thread::Builder::new()
                .name("slot-writeback".into())
                .spawn(move || {
                    let _ = f.sync_data();
                    flag.store(false, Ordering::Release);
                })
                .is_ok()
        });
        if !started {
            syncing.store(false, Ordering::Release);
        }
    }

    fn read(&self, slot: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut len = [0u8; 4];
        match self.file.read_exact_at(&mut len, slot * self.slot_size) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(self.io("read a block from its slot")(e)),
        }
        let len = u64::from(u32::from_be_bytes(len));
        if len + 4 > self.slot_size {
            // Torn or foreign slot: the engine treats it as a bad block.
            return Ok(Some(Vec::new()));
        }
        let mut v = vec![0u8; usize::try_from(len).unwrap_or(0)];
        match self.file.read_exact_at(&mut v, slot * self.slot_size + 4) {
            Ok(()) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(self.io("read a block from its slot")(e)),
        }
    }
}

/// Slot size classes, by the class number pointer records name (stable):
/// 0 and 1 are format 2's (2048 and 33 KiB: rounded up, 73 % and 3 % larger
/// than the SSK and CHK blocks they held), read and freed but no longer
/// written; 2 and 3 are exact: a sealed CHK or SSK block (block, 12-byte
/// nonce) and its 4-byte length. A value goes to the smallest class it
/// fits.
const SLOT_SIZES: [u64; 4] = [2048, 33 * 1024, 32_786 + 12 + 4, 1184 + 12 + 4];
/// Most freed slots waiting for a flush before the backend flushes by
/// itself (1024 CHK slots = 33 MiB of file growth at most); smaller stores
/// flush sooner ([`max_pending_for`]).
const MAX_PENDING_SLOTS: usize = 1024;

/// Freed slots allowed to wait for a flush in a store of `budget` bytes:
/// 1/64 of its blocks (the file may exceed the budget by that much), at
/// least 8, at most [`MAX_PENDING_SLOTS`].
pub(crate) fn max_pending_for(budget: u64) -> usize {
    let blocks = budget / 32_786;
    usize::try_from(blocks / 64)
        .unwrap_or(MAX_PENDING_SLOTS)
        .clamp(8, MAX_PENDING_SLOTS)
}
/// A data record in sled: `P` class slot(u64) — the body is in a slot file.
const PTR_TAG: u8 = b'P';
/// A data record in sled: `I` value — too big for any slot class, inline.
const INLINE_TAG: u8 = b'I';

/// sled backend: tree `blocks` (index records and, for every data record, a
/// pointer into a slot file), tree `meta`, and the slot files
/// `slots-2048.dat` / `slots-33792.dat` holding the block bodies.
///
/// sled keeps only small records: with 32 KiB values in sled its memory
/// and write amplification grow with everything written (see
/// docs/benchmarks.md); in slot files a block costs one `pwrite`.
#[derive(Debug)]
pub(crate) struct SledBackend {
    pub(crate) db: sled::Db,
    blocks: sled::Tree,
    meta: sled::Tree,
    slots: [SlotFile; SLOT_SIZES.len()],
    /// Freed slots (of one file) that make the backend flush by itself.
    max_pending: usize,
}

fn is_data(key: &[u8]) -> bool {
    key.first() == Some(&crate::engine::DATA_TAG)
}

fn parse_ptr(v: &[u8]) -> Option<(usize, u64)> {
    if v.len() == 10 && v[0] == PTR_TAG && usize::from(v[1]) < SLOT_SIZES.len() {
        let mut s = [0u8; 8];
        s.copy_from_slice(&v[2..]);
        Some((usize::from(v[1]), u64::from_be_bytes(s)))
    } else {
        None
    }
}

impl SledBackend {
    pub(crate) fn new(db: sled::Db, dir: &Path, max_pending: usize) -> Result<Self, StoreError> {
        let blocks = db
            .open_tree("blocks")
            .map_err(StoreError::sled("open the store trees"))?;
        let meta = db
            .open_tree("meta")
            .map_err(StoreError::sled("open the store trees"))?;
        let open = |size: u64| SlotFile::open(&dir.join(format!("slots-{size}.dat")), size);
        let slots = [
            open(SLOT_SIZES[0])?,
            open(SLOT_SIZES[1])?,
            open(SLOT_SIZES[2])?,
            open(SLOT_SIZES[3])?,
        ];
        // Rebuild slot ownership from the pointer records. A pointer past
        // the end of its file (damage) owns nothing: reading it finds no
        // block and the engine drops the record.
        let capacity: Vec<u64> = slots
            .iter()
            .map(|s| {
                let len = s.file.metadata().map(|m| m.len()).unwrap_or(0);
                len.div_ceil(s.slot_size)
            })
            .collect();
        for kv in blocks.scan_prefix([crate::engine::DATA_TAG]) {
            let (k, v) = kv.map_err(StoreError::sled("scan the data records"))?;
            if let Some((class, slot)) = parse_ptr(&v) {
                if slot >= capacity[class] {
                    continue;
                }
                let mut st = slots[class].state.lock();
                st.next = st.next.max(slot + 1);
                st.owner.entry(slot).or_insert_with(|| k.to_vec());
            }
        }
        for sf in &slots {
            let mut st = sf.state.lock();
            let used: HashSet<u64> = st.owner.keys().copied().collect();
            st.free = (0..st.next).filter(|s| !used.contains(s)).collect();
            sf.shrink(&mut st)?;
        }
        Ok(SledBackend {
            db,
            blocks,
            meta,
            slots,
            max_pending: max_pending.clamp(1, MAX_PENDING_SLOTS),
        })
    }

    fn resolve(&self, v: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((class, slot)) = parse_ptr(v) {
            return self.slots[class].read(slot);
        }
        match v.split_first() {
            Some((&INLINE_TAG, rest)) => Ok(Some(rest.to_vec())),
            _ => Ok(Some(Vec::new())),
        }
    }
}

impl Backend for SledBackend {
    type Value = Vec<u8>;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let v = self
            .blocks
            .get(key)
            .map_err(StoreError::sled("read a block"))?;
        match v {
            None => Ok(None),
            Some(v) if is_data(key) => self.resolve(&v),
            Some(v) => Ok(Some(v.to_vec())),
        }
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut released: Vec<(usize, u64, Vec<u8>)> = Vec::new();
        for (k, v) in ops {
            if !is_data(&k) {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
                continue;
            }
            if let Some(old) = self
                .blocks
                .get(&k)
                .map_err(StoreError::sled("read a data record"))?
            {
                if let Some((class, slot)) = parse_ptr(&old) {
                    released.push((class, slot, k.clone()));
                }
            }
            match v {
                Some(v) => {
                    let need = v.len() as u64 + 4;
                    let fits = SLOT_SIZES
                        .iter()
                        .enumerate()
                        .filter(|(_, &s)| need <= s)
                        .min_by_key(|(_, &s)| s)
                        .map(|(class, _)| class);
                    match fits {
                        Some(class) => {
                            let slot = self.slots[class].alloc(&k);
                            self.slots[class].write(slot, &v)?;
                            let mut rec = Vec::with_capacity(10);
                            rec.push(PTR_TAG);
                            rec.push(u8::try_from(class).unwrap_or(0));
                            rec.extend_from_slice(&slot.to_be_bytes());
                            batch.insert(k, rec);
                        }
                        None => {
                            let mut rec = Vec::with_capacity(1 + v.len());
                            rec.push(INLINE_TAG);
                            rec.extend_from_slice(&v);
                            batch.insert(k, rec);
                        }
                    }
                }
                None => batch.remove(k),
            }
        }
        self.blocks
            .apply_batch(batch)
            .map_err(StoreError::sled("write a batch"))?;
        for (class, slot, key) in released {
            self.slots[class].release(slot, &key);
        }
        // Freed slots wait for a flush before reuse; don't let the files
        // grow far past the budget while nobody flushes.
        if self
            .slots
            .iter()
            .any(|s| s.state.lock().pending.len() >= self.max_pending)
        {
            self.flush()?;
        }
        Ok(())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        for kv in self.blocks.scan_prefix(prefix) {
            let (k, v) = kv.map_err(StoreError::sled("scan the index"))?;
            if is_data(&k) {
                let body = self.resolve(&v)?.unwrap_or_default();
                f(&k, &body);
            } else {
                f(&k, &v);
            }
        }
        Ok(())
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(key)
            .map_err(StoreError::sled("read metadata"))?
            .map(|v| v.to_vec()))
    }

    fn meta_set(&self, key: &[u8], value: Option<&[u8]>) -> Result<bool, StoreError> {
        let old = match value {
            Some(v) => self.meta.insert(key, v),
            None => self.meta.remove(key),
        };
        Ok(old.map_err(StoreError::sled("write metadata"))?.is_some())
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Bodies first, then the records that point at them.
        for sf in &self.slots {
            sf.file
                .sync_data()
                .map_err(sf.io("flush a slot file to disk"))?;
        }
        self.db.flush().map_err(StoreError::sled("flush to disk"))?;
        for sf in &self.slots {
            sf.settle()?;
        }
        Ok(())
    }

    fn disk_bytes(&self) -> Option<u64> {
        let slots: u64 = self
            .slots
            .iter()
            .map(|s| s.file.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        Some(self.db.size_on_disk().ok()? + slots)
    }
}
