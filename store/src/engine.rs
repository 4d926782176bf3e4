//! The store logic shared by [`crate::MemoryStore`] and [`crate::SledStore`].
//!
//! # Invariants
//! 1. Every block is two records in the block tree, written and removed in
//!    the same atomic batch: `D|space|seq` (the sealed block, under the
//!    sequence number of its put) and `M|space|ik` (its index record, which
//!    holds `seq`). So after any crash, index and data agree.
//! 2. The in-memory index (`State`) mirrors the `M` records exactly, except
//!    for LRU access counters, which are written lazily (`dirty`).
//! 3. Per space, logical bytes (the sum of block lengths in the index) never
//!    exceed the budget: a put's evictions are in the put's own batch.
//! 4. Only holders of `write` change the block tree or the index's
//!    membership; readers take `state` briefly and never hold it over I/O.

use crate::backend::{Backend, Op};
use crate::keys::{circular_distance, IndexKey, Keys};
use crate::{
    Budgets, CheckReport, PutOutcome, Space, SpaceStats, StoreConfig, StoreError, StoreStats,
};
use lichen_crypto::{verify_block, BlockKind, RoutingKey};
use parking_lot::{Mutex, MutexGuard};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use tracing::warn;

/// Version byte of the format; stored in the metadata tree.
/// 2: block bodies live in slot files beside sled (see `backend.rs`).
/// 3: no record key says which space its block is in (index records
/// named by a keyed hash, their values encrypted; data records by
/// sequence number alone). A format-2 store is migrated at open.
const FORMAT_VERSION: u8 = 3;
const FORMAT_V2: u8 = 2;
const META_FORMAT: &[u8] = b"\0lichen-store/format";
const META_CHECK: &[u8] = b"\0lichen-store/check";
const USER_PREFIX: &[u8] = b"u/";
/// Largest bookkeeping value accepted by `meta_put`.
const MAX_META_VALUE: usize = 64 * 1024;
/// LRU touches are written with the next put once this many are pending
/// (and always at flush): a read never writes to disk itself.
const TOUCH_BATCH: usize = 1024;

pub(crate) const DATA_TAG: u8 = b'D';
const INDEX_TAG: u8 = b'M';
/// Index record payload: space ‖ kind ‖ routing key ‖ counter ‖ seq.
const INDEX_PAYLOAD_LEN: usize = 1 + 1 + 32 + 8 + 8;
/// Index record value: version ‖ nonce ‖ encrypted payload.
const INDEX_VALUE_LEN: usize = 1 + 12 + INDEX_PAYLOAD_LEN;
const INDEX_KEY_LEN: usize = 33;
const DATA_KEY_LEN: usize = 9;

fn index_key_of(keys: &Keys, space: Space, ik: &IndexKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(INDEX_KEY_LEN);
    k.push(INDEX_TAG);
    k.extend_from_slice(&keys.record_id(space.tag(), ik));
    k
}

/// Data records are keyed by put sequence number (unique across spaces:
/// one counter), not by index key: sled then appends to its rightmost
/// leaf instead of rewriting random leaves full of 32 KiB values (several
/// times less write amplification).
fn data_key(seq: u64) -> [u8; DATA_KEY_LEN] {
    let mut k = [0u8; DATA_KEY_LEN];
    k[0] = DATA_TAG;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    kind: BlockKind,
    key: RoutingKey,
    /// Eviction rank: lowest goes first.
    rank: u64,
    /// Last access counter (persisted in the index record).
    counter: u64,
    /// Sequence number of the put: names the data record.
    seq: u64,
}

#[derive(Debug, Default)]
struct SpaceIdx {
    map: HashMap<IndexKey, Entry>,
    order: BTreeSet<(u64, IndexKey)>,
    bytes: u64,
    evicted: u64,
}

impl SpaceIdx {
    fn insert(&mut self, ik: IndexKey, e: Entry) {
        if let Some(old) = self.map.insert(ik, e) {
            self.order.remove(&(old.rank, ik));
            self.bytes -= old.kind.block_len() as u64;
        }
        self.order.insert((e.rank, ik));
        self.bytes += e.kind.block_len() as u64;
    }

    fn remove(&mut self, ik: &IndexKey) -> Option<Entry> {
        let e = self.map.remove(ik)?;
        self.order.remove(&(e.rank, *ik));
        self.bytes -= e.kind.block_len() as u64;
        Some(e)
    }
}

#[derive(Debug)]
struct State {
    spaces: [SpaceIdx; 3],
    counter: u64,
    location: u64,
    dirty: HashSet<(Space, IndexKey)>,
    corrupt_deleted: u64,
}

impl State {
    fn rank(&self, space: Space, key: &RoutingKey, counter: u64) -> u64 {
        if space.is_lru() {
            counter
        } else {
            u64::MAX - circular_distance(self.location, key.location())
        }
    }

    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn touch(&mut self, space: Space, ik: &IndexKey) {
        if !space.is_lru() {
            return;
        }
        let c = self.next_counter();
        let idx = &mut self.spaces[space.index()];
        if let Some(e) = idx.map.get_mut(ik) {
            idx.order.remove(&(e.rank, *ik));
            e.rank = c;
            e.counter = c;
            idx.order.insert((c, *ik));
            self.dirty.insert((space, *ik));
        }
    }

    fn entry(&self, space: Space, ik: &IndexKey) -> Option<Entry> {
        self.spaces[space.index()].map.get(ik).copied()
    }
}

/// What the engine learned while loading the index.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LoadReport {
    /// The store had no format record: it was created now.
    pub(crate) fresh: bool,
    /// Unparseable index records deleted.
    pub(crate) dropped: u64,
    /// Blocks evicted because a budget shrank.
    pub(crate) evicted: u64,
    /// Blocks moved from format 2 to format 3 at this open.
    pub(crate) migrated: u64,
}

/// The store engine over a backend.
pub(crate) struct Engine<B: Backend> {
    pub(crate) backend: B,
    keys: Keys,
    budgets: Budgets,
    path: PathBuf,
    write: Mutex<()>,
    state: Mutex<State>,
}

impl<B: Backend> std::fmt::Debug for Engine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .field("budgets", &self.budgets)
            .finish_non_exhaustive()
    }
}

enum Loaded {
    Good(Vec<u8>),
    /// The data record is missing.
    Missing,
    /// The data record does not decrypt to a verifying block.
    Bad,
}

impl<B: Backend> Engine<B> {
    /// Load (or initialise) the store held by `backend`.
    pub(crate) fn open(
        backend: B,
        config: &StoreConfig,
        path: PathBuf,
    ) -> Result<(Self, LoadReport), StoreError> {
        let keys = Keys::new(&config.secret);
        let mut report = LoadReport::default();
        let check = keys.check_value();
        match backend.meta_get(META_FORMAT)? {
            None => {
                report.fresh = true;
                backend.meta_set(META_FORMAT, Some(&[FORMAT_VERSION]))?;
                backend.meta_set(META_CHECK, Some(&check))?;
                backend.flush()?;
            }
            Some(v) if v == [FORMAT_VERSION] || v == [FORMAT_V2] => {
                if backend.meta_get(META_CHECK)?.as_deref() != Some(&check[..]) {
                    return Err(StoreError::WrongSecret { path });
                }
                if v == [FORMAT_V2] {
                    report.migrated = migrate_v2(&backend, &keys)?;
                    backend.meta_set(META_FORMAT, Some(&[FORMAT_VERSION]))?;
                    backend.flush()?;
                }
            }
            Some(v) => return Err(StoreError::UnsupportedFormat { found: v }),
        }

        let mut state = State {
            spaces: Default::default(),
            counter: 0,
            location: config.location,
            dirty: HashSet::new(),
            corrupt_deleted: 0,
        };
        let mut bad: Vec<(Vec<u8>, Option<u64>)> = Vec::new();
        let mut loaded: Vec<(Space, IndexKey, Entry)> = Vec::new();
        backend.scan_prefix(&[INDEX_TAG], &mut |k, v| match parse_index(&keys, k, v) {
            Some(x) => loaded.push(x),
            None => bad.push((k.to_vec(), parse_seq(&keys, v))),
        })?;
        for (space, ik, mut e) in loaded {
            state.counter = state.counter.max(e.counter);
            e.rank = state.rank(space, &e.key, e.counter);
            state.spaces[space.index()].insert(ik, e);
        }
        if !bad.is_empty() {
            report.dropped = bad.len() as u64;
            warn!(
                count = bad.len(),
                "block store: dropping unreadable index records"
            );
            let mut ops: Vec<Op> = Vec::new();
            for (k, seq) in bad {
                if let Some(seq) = seq {
                    ops.push((data_key(seq).to_vec(), None));
                }
                ops.push((k, None));
            }
            backend.apply(ops)?;
        }

        let engine = Engine {
            backend,
            keys,
            budgets: config.budgets,
            path,
            write: Mutex::new(()),
            state: Mutex::new(state),
        };
        // A budget may have shrunk since the last run.
        for space in Space::ALL {
            let w = engine.write.lock();
            report.evicted += engine.shrink_to_budget(&w, space)?;
        }
        Ok((engine, report))
    }

    fn shrink_to_budget(&self, _w: &MutexGuard<'_, ()>, space: Space) -> Result<u64, StoreError> {
        let budget = self.budgets.of(space);
        let victims: Vec<(IndexKey, u64)> = {
            let st = self.state.lock();
            let idx = &st.spaces[space.index()];
            let mut bytes = idx.bytes;
            let mut v = Vec::new();
            for (_, ik) in &idx.order {
                if bytes <= budget {
                    break;
                }
                if let Some(e) = idx.map.get(ik) {
                    bytes -= e.kind.block_len() as u64;
                    v.push((*ik, e.seq));
                }
            }
            v
        };
        if victims.is_empty() {
            return Ok(0);
        }
        let mut ops = Vec::with_capacity(victims.len() * 2);
        for (ik, seq) in &victims {
            ops.push((data_key(*seq).to_vec(), None));
            ops.push((index_key_of(&self.keys, space, ik), None));
        }
        self.backend.apply(ops)?;
        let mut st = self.state.lock();
        for (ik, _) in &victims {
            st.spaces[space.index()].remove(ik);
            st.dirty.remove(&(space, *ik));
        }
        st.spaces[space.index()].evicted += victims.len() as u64;
        Ok(victims.len() as u64)
    }

    fn index_value(&self, space: Space, e: &Entry) -> Vec<u8> {
        index_value(&self.keys, space, e)
    }

    /// Index records of pending LRU touches, and forget them.
    fn take_touches(&self, st: &mut State) -> Vec<Op> {
        let mut ops = Vec::with_capacity(st.dirty.len());
        for (space, ik) in st.dirty.drain() {
            if let Some(e) = st.spaces[space.index()].map.get(&ik) {
                ops.push((
                    index_key_of(&self.keys, space, &ik),
                    Some(self.index_value(space, e)),
                ));
            }
        }
        ops
    }

    pub(crate) fn put(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Result<PutOutcome, StoreError> {
        verify_block(kind, key, block)?;
        self.put_verified(space, kind, key, block)
    }

    /// [`crate::unchecked::UncheckedStore::put_trusted`]: a CHK block this process has just
    /// encoded (its routing key was computed from these very bytes) is
    /// stored without hashing it again. SSK blocks are always verified (a
    /// signature check, cheap next to a 1 KiB block's I/O).
    pub(crate) fn put_trusted(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Result<PutOutcome, StoreError> {
        if kind == BlockKind::Chk {
            check_trusted_chk(key, block)?;
        } else {
            verify_block(kind, key, block)?;
        }
        self.put_verified(space, kind, key, block)
    }

    /// [`crate::unchecked::UncheckedStore::put_trusted_chk_batch`]: many trusted CHK
    /// blocks in as few backend batches as the budget allows (one, unless
    /// the batch itself must evict its own first blocks). A sled batch
    /// costs two log writes whatever its size, so this is much cheaper than
    /// one `put` per block. Same outcomes, evictions and atomicity per
    /// block as [`Engine::put_trusted`]; a failed backend write fails the
    /// blocks of that batch (earlier batches stay).
    pub(crate) fn put_trusted_chk_batch(
        &self,
        space: Space,
        blocks: &[(RoutingKey, Vec<u8>)],
    ) -> Result<Vec<PutOutcome>, StoreError> {
        let kind = BlockKind::Chk;
        let len = kind.block_len() as u64;
        let budget = self.budgets.of(space);
        for (key, block) in blocks {
            check_trusted_chk(key, block)?;
        }
        let mut out = vec![PutOutcome::AlreadyPresent; blocks.len()];
        if len > budget {
            out.fill(PutOutcome::NoRoom);
            return Ok(out);
        }
        // Index keys, and the blocks not yet here (first copy only).
        let iks: Vec<IndexKey> = blocks
            .iter()
            .map(|(k, _)| self.keys.index_key(kind, k))
            .collect();
        let todo = self.batch_todo(space, &iks);
        // Seal outside the write lock, on the rayon pool (every core).
        let mut sealed: Vec<Option<Vec<u8>>> = todo
            .par_iter()
            .map(|&i| Some(self.keys.seal(&iks[i], &blocks[i].1)))
            .collect();

        let w = self.write.lock();
        // One plan = the blocks of one backend batch.
        let mut plan: Vec<(usize, IndexKey, Entry)> = Vec::new();
        let mut victims: Vec<(IndexKey, u64)> = Vec::new();
        let mut chosen: HashSet<IndexKey> = HashSet::new();
        let mut planned_bytes = 0u64;
        let mut ops: Vec<Op> = Vec::new();
        let mut t = 0;
        while t < todo.len() {
            let i = todo[t];
            let ik = iks[i];
            let key = &blocks[i].0;
            let mut st = self.state.lock();
            if st.entry(space, &ik).is_some() {
                // Stored meanwhile by another put.
                t += 1;
                continue;
            }
            let counter = st.next_counter();
            let rank = st.rank(space, key, counter);
            let idx = &st.spaces[space.index()];
            let used = idx.bytes + planned_bytes
                - victims
                    .iter()
                    .filter_map(|(v, _)| idx.map.get(v))
                    .map(|e| e.kind.block_len() as u64)
                    .sum::<u64>();
            let free = budget.saturating_sub(used);
            let Some((mine, free)) = batch_victims(space, idx, free, len, rank, &chosen) else {
                out[i] = PutOutcome::NoRoom;
                t += 1;
                continue;
            };
            if free < len {
                // Only this batch's own blocks could make room: write what
                // is planned, then plan this block again.
                drop(st);
                if plan.is_empty() {
                    return Err(StoreError::InvalidMetadata("batch accounting"));
                }
                self.commit_plan(space, &mut plan, &mut victims, &mut ops, &mut out)?;
                chosen.clear();
                planned_bytes = 0;
                continue;
            }
            if ops.is_empty() && st.dirty.len() >= TOUCH_BATCH {
                ops = self.take_touches(&mut st);
            }
            drop(st);
            for (vik, vseq) in &mine {
                chosen.insert(*vik);
                ops.push((data_key(*vseq).to_vec(), None));
                ops.push((index_key_of(&self.keys, space, vik), None));
            }
            victims.extend(mine);
            let entry = Entry {
                kind,
                key: *key,
                rank,
                counter,
                seq: counter,
            };
            let body = sealed[t]
                .take()
                .unwrap_or_else(|| self.keys.seal(&ik, &blocks[i].1));
            ops.push((data_key(entry.seq).to_vec(), Some(body)));
            ops.push((
                index_key_of(&self.keys, space, &ik),
                Some(self.index_value(space, &entry)),
            ));
            plan.push((i, ik, entry));
            planned_bytes += len;
            t += 1;
        }
        if !plan.is_empty() {
            self.commit_plan(space, &mut plan, &mut victims, &mut ops, &mut out)?;
        }
        drop(w);
        Ok(out)
    }

    /// The indices of `iks` to write: not stored yet (the stored ones are
    /// touched), first copy only.
    fn batch_todo(&self, space: Space, iks: &[IndexKey]) -> Vec<usize> {
        let mut todo: Vec<usize> = Vec::with_capacity(iks.len());
        let mut seen = HashSet::with_capacity(iks.len());
        let mut st = self.state.lock();
        for (i, ik) in iks.iter().enumerate() {
            if st.entry(space, ik).is_some() {
                st.touch(space, ik);
            } else if seen.insert(*ik) {
                todo.push(i);
            }
        }
        todo
    }

    /// Apply a planned batch, then mirror it in the index (caller holds
    /// `write`).
    fn commit_plan(
        &self,
        space: Space,
        plan: &mut Vec<(usize, IndexKey, Entry)>,
        victims: &mut Vec<(IndexKey, u64)>,
        ops: &mut Vec<Op>,
        out: &mut [PutOutcome],
    ) -> Result<(), StoreError> {
        self.backend.apply(std::mem::take(ops))?;
        let mut st = self.state.lock();
        let idx = &mut st.spaces[space.index()];
        for (vik, _) in victims.iter() {
            idx.remove(vik);
        }
        idx.evicted += victims.len() as u64;
        for (i, ik, entry) in plan.drain(..) {
            idx.insert(ik, entry);
            out[i] = PutOutcome::Stored;
        }
        for (vik, _) in victims.drain(..) {
            st.dirty.remove(&(space, vik));
        }
        Ok(())
    }

    fn put_verified(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Result<PutOutcome, StoreError> {
        let len = block.len() as u64;
        let budget = self.budgets.of(space);
        if len > budget {
            return Ok(PutOutcome::NoRoom);
        }
        let ik = self.keys.index_key(kind, key);
        if kind == BlockKind::Chk && self.state.lock().entry(space, &ik).is_some() {
            // Same key, same content (a CHK's key is its hash).
            self.state.lock().touch(space, &ik);
            return Ok(PutOutcome::AlreadyPresent);
        }
        // Encrypt before taking the write lock: puts can seal in parallel.
        let sealed = self.keys.seal(&ik, block);

        let w = self.write.lock();
        if kind == BlockKind::Ssk {
            // First writer wins, among the spaces this put may see.
            let visible = if space == Space::Client {
                crate::Origin::Local.spaces()
            } else {
                crate::Origin::Remote.spaces()
            };
            let mut here = false;
            for &s in visible {
                let Some(e) = self.state.lock().entry(s, &ik) else {
                    continue;
                };
                match self.load(e.seq, (kind, key, true), &ik)? {
                    Loaded::Good(existing) if existing == block => here |= s == space,
                    Loaded::Good(_) => return Ok(PutOutcome::Collision),
                    Loaded::Missing => self.delete_locked(&w, s, &ik, e.seq, false)?,
                    Loaded::Bad => {
                        self.report_bad();
                        self.delete_locked(&w, s, &ik, e.seq, true)?;
                    }
                }
            }
            if here {
                self.state.lock().touch(space, &ik);
                return Ok(PutOutcome::AlreadyPresent);
            }
        } else if self.state.lock().entry(space, &ik).is_some() {
            return Ok(PutOutcome::AlreadyPresent);
        }

        let mut ops: Vec<Op> = Vec::new();
        let (entry, victims) = {
            let mut st = self.state.lock();
            let counter = st.next_counter();
            let rank = st.rank(space, key, counter);
            let entry = Entry {
                kind,
                key: *key,
                rank,
                counter,
                seq: counter,
            };
            let idx = &st.spaces[space.index()];
            let mut free = budget.saturating_sub(idx.bytes);
            let mut victims = Vec::new();
            let mut order = idx.order.iter();
            while free < len {
                let Some(&(vrank, vik)) = order.next() else {
                    break;
                };
                if !space.is_lru() && vrank >= rank {
                    // Everything left is at least as close as the new key.
                    return Ok(PutOutcome::NoRoom);
                }
                if let Some(v) = idx.map.get(&vik) {
                    free += v.kind.block_len() as u64;
                    victims.push((vik, v.seq));
                }
            }
            if st.dirty.len() >= TOUCH_BATCH {
                ops = self.take_touches(&mut st);
            }
            (entry, victims)
        };
        for (vik, vseq) in &victims {
            ops.push((data_key(*vseq).to_vec(), None));
            ops.push((index_key_of(&self.keys, space, vik), None));
        }
        ops.push((data_key(entry.seq).to_vec(), Some(sealed)));
        ops.push((
            index_key_of(&self.keys, space, &ik),
            Some(self.index_value(space, &entry)),
        ));
        self.backend.apply(ops)?;

        let mut st = self.state.lock();
        let idx = &mut st.spaces[space.index()];
        for (vik, _) in &victims {
            idx.remove(vik);
        }
        idx.evicted += victims.len() as u64;
        idx.insert(ik, entry);
        for (vik, _) in &victims {
            st.dirty.remove(&(space, *vik));
        }
        drop(w);
        Ok(PutOutcome::Stored)
    }

    /// Read and (with `verify`) verify without touching the LRU order or
    /// deleting anything.
    fn load(
        &self,
        seq: u64,
        (kind, key, verify): (BlockKind, &RoutingKey, bool),
        ik: &IndexKey,
    ) -> Result<Loaded, StoreError> {
        let Some(stored) = self.backend.get(&data_key(seq))? else {
            return Ok(Loaded::Missing);
        };
        match self.keys.open(ik, stored.as_ref()) {
            Some(block) if !verify || verify_block(kind, key, &block).is_ok() => {
                Ok(Loaded::Good(block))
            }
            _ => Ok(Loaded::Bad),
        }
    }

    fn report_bad(&self) {
        // Never name the key: this line may reach a shared log.
        warn!("block store: a stored block failed verification on read; deleted it");
    }

    /// Delete a block (caller holds `write`), if the index still points at
    /// data record `seq` (it was not removed and stored again meanwhile).
    fn delete_locked(
        &self,
        _w: &MutexGuard<'_, ()>,
        space: Space,
        ik: &IndexKey,
        seq: u64,
        corrupt: bool,
    ) -> Result<(), StoreError> {
        if self.state.lock().entry(space, ik).map(|e| e.seq) != Some(seq) {
            return Ok(());
        }
        self.backend.apply(vec![
            (data_key(seq).to_vec(), None),
            (index_key_of(&self.keys, space, ik), None),
        ])?;
        let mut st = self.state.lock();
        st.spaces[space.index()].remove(ik);
        st.dirty.remove(&(space, *ik));
        if corrupt {
            st.corrupt_deleted += 1;
        }
        Ok(())
    }

    /// Read a block; with `verify`, one that fails verification is
    /// deleted and reported as missing; with `touch`, the read counts as
    /// a use in an LRU space.
    pub(crate) fn get_in(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
        (verify, touch): (bool, bool),
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let ik = self.keys.index_key(kind, key);
        let seq = {
            let mut st = self.state.lock();
            let Some(e) = st.entry(space, &ik) else {
                return Ok(None);
            };
            if touch {
                st.touch(space, &ik);
            }
            e.seq
        };
        match self.load(seq, (kind, key, verify), &ik)? {
            Loaded::Good(b) => Ok(Some(b)),
            Loaded::Missing => {
                // Either a put evicted it meanwhile (then the index entry is
                // gone by the time we hold `write`) or index and data
                // disagree, which invariant 1 rules out; repair anyway.
                let w = self.write.lock();
                if self.backend.get(&data_key(seq))?.is_none()
                    && self.state.lock().entry(space, &ik).map(|e| e.seq) == Some(seq)
                {
                    warn!("block store: an index record had no data; removed it");
                    self.delete_locked(&w, space, &ik, seq, false)?;
                }
                Ok(None)
            }
            Loaded::Bad => {
                self.report_bad();
                let w = self.write.lock();
                self.delete_locked(&w, space, &ik, seq, true)?;
                Ok(None)
            }
        }
    }

    pub(crate) fn contains_in(&self, space: Space, kind: BlockKind, key: &RoutingKey) -> bool {
        let ik = self.keys.index_key(kind, key);
        self.state.lock().entry(space, &ik).is_some()
    }

    pub(crate) fn remove(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
    ) -> Result<bool, StoreError> {
        let ik = self.keys.index_key(kind, key);
        let w = self.write.lock();
        let Some(e) = self.state.lock().entry(space, &ik) else {
            return Ok(false);
        };
        self.delete_locked(&w, space, &ik, e.seq, false)?;
        Ok(true)
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        let _w = self.write.lock();
        let ops = self.take_touches(&mut self.state.lock());
        if !ops.is_empty() {
            self.backend.apply(ops)?;
        }
        self.backend.flush()
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let st = self.state.lock();
        let mut out = StoreStats {
            corrupt_deleted: st.corrupt_deleted,
            disk_bytes: None,
            ..StoreStats::default()
        };
        for space in Space::ALL {
            let idx = &st.spaces[space.index()];
            out.spaces[space.index()] = SpaceStats {
                bytes: idx.bytes,
                blocks: idx.map.len() as u64,
                budget: self.budgets.of(space),
                evicted: idx.evicted,
            };
        }
        drop(st);
        out.disk_bytes = self.backend.disk_bytes();
        out
    }

    pub(crate) fn set_location(&self, location: u64) {
        let mut st = self.state.lock();
        st.location = location;
        let idx = &mut st.spaces[Space::Store.index()];
        idx.order.clear();
        for (ik, e) in &mut idx.map {
            e.rank = u64::MAX - circular_distance(location, e.key.location());
            idx.order.insert((e.rank, *ik));
        }
    }

    pub(crate) fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let all: Vec<(Space, IndexKey, Entry)> = {
            let st = self.state.lock();
            Space::ALL
                .iter()
                .flat_map(|&s| {
                    st.spaces[s.index()]
                        .map
                        .iter()
                        .map(move |(ik, e)| (s, *ik, *e))
                })
                .collect()
        };
        for (space, ik, e) in all {
            match self.load(e.seq, (e.kind, &e.key, true), &ik)? {
                Loaded::Good(_) => report.checked += 1,
                Loaded::Missing => {
                    let w = self.write.lock();
                    if self.state.lock().entry(space, &ik).map(|x| x.seq) == Some(e.seq)
                        && self.backend.get(&data_key(e.seq))?.is_none()
                    {
                        self.delete_locked(&w, space, &ik, e.seq, false)?;
                        report.deleted += 1;
                    }
                }
                Loaded::Bad => {
                    self.report_bad();
                    let w = self.write.lock();
                    self.delete_locked(&w, space, &ik, e.seq, true)?;
                    report.deleted += 1;
                }
            }
        }
        Ok(report)
    }

    fn user_key(name: &str) -> Result<Vec<u8>, StoreError> {
        if name.is_empty() {
            return Err(StoreError::InvalidMetadata("empty name"));
        }
        let mut k = USER_PREFIX.to_vec();
        k.extend_from_slice(name.as_bytes());
        Ok(k)
    }

    pub(crate) fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.meta_get(&Self::user_key(name)?)
    }

    pub(crate) fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if value.len() > MAX_META_VALUE {
            return Err(StoreError::InvalidMetadata("value larger than 64 KiB"));
        }
        self.backend
            .meta_set(&Self::user_key(name)?, Some(value))
            .map(|_| ())
    }

    pub(crate) fn meta_remove(&self, name: &str) -> Result<bool, StoreError> {
        self.backend.meta_set(&Self::user_key(name)?, None)
    }

    /// Test hook: every raw key of the block tree.
    #[cfg(test)]
    pub(crate) fn raw_keys(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let _ = self
            .backend
            .scan_prefix(&[], &mut |k, _| out.push(k.to_vec()));
        out
    }

    /// Test hook: flip one byte of every stored block in `space`.
    #[cfg(test)]
    pub(crate) fn corrupt_all(&self, space: Space) -> Result<(), StoreError> {
        let mut ops = Vec::new();
        let seqs: HashSet<u64> = self.state.lock().spaces[space.index()]
            .map
            .values()
            .map(|e| e.seq)
            .collect();
        self.backend.scan_prefix(&[DATA_TAG], &mut |k, v| {
            let seq = k.get(1..).and_then(|b| <[u8; 8]>::try_from(b).ok());
            if !seq.is_some_and(|b| seqs.contains(&u64::from_be_bytes(b))) {
                return;
            }
            let mut v = v.to_vec();
            if let Some(b) = v.last_mut() {
                *b ^= 0x5a;
            }
            ops.push((k.to_vec(), Some(v)));
        })?;
        self.backend.apply(ops)
    }
}

/// An index record's value (format 3): version ‖ nonce ‖ encrypted
/// (space ‖ kind ‖ routing key ‖ counter ‖ seq).
fn index_value(keys: &Keys, space: Space, e: &Entry) -> Vec<u8> {
    let mut payload = Vec::with_capacity(INDEX_PAYLOAD_LEN);
    payload.push(space.tag());
    payload.push(e.kind.tag());
    payload.extend_from_slice(&e.key.0);
    payload.extend_from_slice(&e.counter.to_be_bytes());
    payload.extend_from_slice(&e.seq.to_be_bytes());
    let nonce: [u8; 12] = rand::random();
    keys.index_cipher(&nonce, &mut payload);
    let mut v = Vec::with_capacity(INDEX_VALUE_LEN);
    v.push(FORMAT_VERSION);
    v.extend_from_slice(&nonce);
    v.extend_from_slice(&payload);
    v
}

/// The decrypted payload of a format-3 index record value.
fn index_payload(keys: &Keys, v: &[u8]) -> Option<[u8; INDEX_PAYLOAD_LEN]> {
    if v.len() != INDEX_VALUE_LEN || v[0] != FORMAT_VERSION {
        return None;
    }
    let nonce: [u8; 12] = v[1..13].try_into().ok()?;
    let mut p: [u8; INDEX_PAYLOAD_LEN] = v[13..].try_into().ok()?;
    keys.index_cipher(&nonce, &mut p);
    Some(p)
}

/// A format-3 index record, checked: its key must be the record id of
/// the space and routing key its value holds.
fn parse_index(keys: &Keys, k: &[u8], v: &[u8]) -> Option<(Space, IndexKey, Entry)> {
    if k.len() != INDEX_KEY_LEN {
        return None;
    }
    let p = index_payload(keys, v)?;
    let space = Space::ALL.into_iter().find(|s| s.tag() == p[0])?;
    let kind = BlockKind::from_tag(p[1])?;
    let key = RoutingKey(p[2..34].try_into().ok()?);
    let ik = keys.index_key(kind, &key);
    if k[1..] != keys.record_id(space.tag(), &ik) {
        return None;
    }
    let counter = u64::from_be_bytes(p[34..42].try_into().ok()?);
    let seq = u64::from_be_bytes(p[42..50].try_into().ok()?);
    Some((
        space,
        ik,
        Entry {
            kind,
            key,
            rank: 0,
            counter,
            seq,
        },
    ))
}

/// The data record an unreadable index record points at, if that much
/// decrypts.
fn parse_seq(keys: &Keys, v: &[u8]) -> Option<u64> {
    let p = index_payload(keys, v)?;
    Some(u64::from_be_bytes(p[42..50].try_into().ok()?))
}

/// A format-2 index record (`M ‖ space ‖ ik` → version 2 ‖ kind ‖ masked
/// routing key ‖ counter ‖ seq), read once to migrate it.
fn parse_index_v2(keys: &Keys, k: &[u8], v: &[u8]) -> Option<(Space, Entry)> {
    if k.len() != 34 || v.len() != 50 || v[0] != FORMAT_V2 {
        return None;
    }
    let space = Space::ALL.into_iter().find(|s| s.tag() == k[1])?;
    let kind = BlockKind::from_tag(v[1])?;
    let ik: IndexKey = k[2..].try_into().ok()?;
    let masked: [u8; 32] = v[2..34].try_into().ok()?;
    let key = RoutingKey(keys.mask_rk(&ik, &masked));
    if keys.index_key(kind, &key) != ik {
        return None;
    }
    Some((
        space,
        Entry {
            kind,
            key,
            rank: 0,
            counter: u64::from_be_bytes(v[34..42].try_into().ok()?),
            seq: u64::from_be_bytes(v[42..50].try_into().ok()?),
        },
    ))
}

/// Rewrite a format-2 store's records under format-3 keys, in batches (a
/// crash part-way leaves both kinds, told apart by key length, and the
/// next open carries on). Unreadable format-2 records are dropped. Returns
/// the blocks migrated.
fn migrate_v2<B: Backend>(backend: &B, keys: &Keys) -> Result<u64, StoreError> {
    const BATCH: usize = 256;
    /// A format-2 index record's key, and what it holds if readable.
    type OldRecord = (Vec<u8>, Option<(Space, Entry)>);
    let mut old: Vec<OldRecord> = Vec::new();
    backend.scan_prefix(&[INDEX_TAG], &mut |k, v| {
        if k.len() == 34 {
            old.push((k.to_vec(), parse_index_v2(keys, k, v)));
        }
    })?;
    let mut migrated = 0;
    for chunk in old.chunks(BATCH) {
        let mut ops: Vec<Op> = Vec::with_capacity(chunk.len() * 4);
        for (k, parsed) in chunk {
            ops.push((k.clone(), None));
            let Some((space, e)) = parsed else { continue };
            let mut old_data = vec![DATA_TAG, space.tag()];
            old_data.extend_from_slice(&e.seq.to_be_bytes());
            let body = backend.get(&old_data)?;
            ops.push((old_data, None));
            if let Some(body) = body {
                let ik = keys.index_key(e.kind, &e.key);
                ops.push((data_key(e.seq).to_vec(), Some(body.as_ref().to_vec())));
                ops.push((
                    index_key_of(keys, *space, &ik),
                    Some(index_value(keys, *space, e)),
                ));
                migrated += 1;
            }
        }
        backend.apply(ops)?;
    }
    // Data records no format-2 index record pointed at.
    let mut orphans: Vec<Op> = Vec::new();
    backend.scan_prefix(&[DATA_TAG], &mut |k, _| {
        if k.len() == 10 {
            orphans.push((k.to_vec(), None));
        }
    })?;
    if !orphans.is_empty() {
        backend.apply(orphans)?;
    }
    Ok(migrated)
}

/// Implement [`crate::BlockStore`] and [`crate::unchecked::UncheckedStore`]
/// for a wrapper with an `engine` field.
macro_rules! delegate_block_store {
    ($t:ty) => {
        impl $crate::BlockStore for $t {
            fn put(
                &self,
                space: $crate::Space,
                kind: lichen_crypto::BlockKind,
                key: &lichen_crypto::RoutingKey,
                block: &[u8],
            ) -> Result<$crate::PutOutcome, $crate::StoreError> {
                self.engine.put(space, kind, key, block)
            }
            fn get_in(
                &self,
                space: $crate::Space,
                kind: lichen_crypto::BlockKind,
                key: &lichen_crypto::RoutingKey,
            ) -> Result<Option<Vec<u8>>, $crate::StoreError> {
                self.engine.get_in(space, kind, key, (true, true))
            }
            fn peek_in(
                &self,
                space: $crate::Space,
                kind: lichen_crypto::BlockKind,
                key: &lichen_crypto::RoutingKey,
            ) -> Result<Option<Vec<u8>>, $crate::StoreError> {
                self.engine.get_in(space, kind, key, (true, false))
            }
            fn contains_in(
                &self,
                space: $crate::Space,
                kind: lichen_crypto::BlockKind,
                key: &lichen_crypto::RoutingKey,
            ) -> bool {
                self.engine.contains_in(space, kind, key)
            }
            fn remove(
                &self,
                space: $crate::Space,
                kind: lichen_crypto::BlockKind,
                key: &lichen_crypto::RoutingKey,
            ) -> Result<bool, $crate::StoreError> {
                self.engine.remove(space, kind, key)
            }
            fn flush(&self) -> Result<(), $crate::StoreError> {
                self.engine.flush()
            }
            fn stats(&self) -> $crate::StoreStats {
                self.engine.stats()
            }
            fn set_location(&self, location: u64) {
                self.engine.set_location(location)
            }
            fn check(&self) -> Result<$crate::CheckReport, $crate::StoreError> {
                self.engine.check()
            }
            fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, $crate::StoreError> {
                self.engine.meta_get(name)
            }
            fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), $crate::StoreError> {
                self.engine.meta_put(name, value)
            }
            fn meta_remove(&self, name: &str) -> Result<bool, $crate::StoreError> {
                self.engine.meta_remove(name)
            }
            fn unchecked(&self) -> &dyn $crate::unchecked::UncheckedStore {
                self
            }
        }

        impl $crate::unchecked::UncheckedStore for $t {
            fn put_trusted_chk_batch(
                &self,
                space: $crate::Space,
                blocks: &[(lichen_crypto::RoutingKey, Vec<u8>)],
            ) -> Result<Vec<$crate::PutOutcome>, $crate::StoreError> {
                self.engine.put_trusted_chk_batch(space, blocks)
            }
            fn put_trusted(
                &self,
                space: $crate::Space,
                kind: lichen_crypto::BlockKind,
                key: &lichen_crypto::RoutingKey,
                block: &[u8],
            ) -> Result<$crate::PutOutcome, $crate::StoreError> {
                self.engine.put_trusted(space, kind, key, block)
            }
            fn read_in(
                &self,
                space: $crate::Space,
                kind: lichen_crypto::BlockKind,
                key: &lichen_crypto::RoutingKey,
            ) -> Result<Option<Vec<u8>>, $crate::StoreError> {
                self.engine.get_in(space, kind, key, (false, true))
            }
            fn peek_read_in(
                &self,
                space: $crate::Space,
                kind: lichen_crypto::BlockKind,
                key: &lichen_crypto::RoutingKey,
            ) -> Result<Option<Vec<u8>>, $crate::StoreError> {
                self.engine.get_in(space, kind, key, (false, false))
            }
        }
    };
}
pub(crate) use delegate_block_store;

/// The checks a trusted CHK block (made by the client in this process)
/// still gets: the length, so a wrong-sized block is never stored; the full
/// hash only in debug builds.
fn check_trusted_chk(key: &RoutingKey, block: &[u8]) -> Result<(), StoreError> {
    let kind = BlockKind::Chk;
    if block.len() != kind.block_len() {
        return Err(StoreError::InvalidBlock(
            lichen_crypto::BlockError::WrongLength {
                kind: "CHK",
                got: block.len(),
                want: kind.block_len(),
            },
        ));
    }
    debug_assert!(verify_block(kind, key, block).is_ok());
    Ok(())
}

/// For [`Engine::put_trusted_chk_batch`]: the blocks to evict from `idx`
/// (lowest rank first, skipping those already `chosen`) so that `free`
/// bytes grow to at least `len`, with the space then free. `None` when a
/// block ranked at or above `rank` would have to go in a space that keeps
/// the best-ranked (not LRU). May return less than `len` free when `idx`
/// runs out: only the batch's own planned blocks could make room then.
fn batch_victims(
    space: Space,
    idx: &SpaceIdx,
    mut free: u64,
    len: u64,
    rank: u64,
    chosen: &HashSet<IndexKey>,
) -> Option<(Vec<(IndexKey, u64)>, u64)> {
    let mut mine = Vec::new();
    for &(vrank, vik) in &idx.order {
        if free >= len {
            break;
        }
        if chosen.contains(&vik) {
            continue;
        }
        if !space.is_lru() && vrank >= rank {
            return None;
        }
        if let Some(v) = idx.map.get(&vik) {
            free += v.kind.block_len() as u64;
            mine.push((vik, v.seq));
        }
    }
    Some((mine, free))
}
