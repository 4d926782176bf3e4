//! Unit tests of both stores.

use super::*;
use lichen_crypto::ssk::SskPrivate;
use lichen_crypto::{verify_block, DataFlags};
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

pub(crate) const CHK: usize = BlockKind::Chk.block_len();
pub(crate) const SSK: usize = BlockKind::Ssk.block_len();

/// A valid CHK block as far as verification goes: random bytes and their hash.
pub(crate) fn chk(rng: &mut impl RngCore) -> (RoutingKey, Vec<u8>) {
    let mut b = vec![0u8; CHK];
    rng.fill_bytes(&mut b);
    (RoutingKey(Sha256::digest(&b).into()), b)
}

/// Two different valid SSK blocks under the same routing key.
pub(crate) fn ssk_pair(word: &str) -> (RoutingKey, Vec<u8>, Vec<u8>) {
    let k = SskPrivate::from_keyword(word);
    let (rk, a) = k.encode("doc", b"first", DataFlags::default()).unwrap();
    let (rk2, b) = k.encode("doc", b"second", DataFlags::default()).unwrap();
    assert_eq!(rk, rk2);
    assert_ne!(a, b);
    (rk, a, b)
}

fn config(store: u64, cache: u64, client: u64) -> StoreConfig {
    StoreConfig::new(
        Budgets {
            store,
            cache,
            client,
        },
        0x8000_0000_0000_0000,
        StoreSecret::from_bytes([42; 32]),
    )
}

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(7)
}

fn blocks(n: u64) -> u64 {
    n * CHK as u64
}

/// Run a test against a memory store and a fresh sled store.
fn both(cfg: &StoreConfig, f: impl Fn(&dyn BlockStore)) {
    f(&MemoryStore::new(cfg));
    let dir = tempfile::tempdir().unwrap();
    let (s, report) = SledStore::open(&dir.path().join("store"), cfg).unwrap();
    assert_eq!(report.outcome, OpenOutcome::Created);
    f(&s);
}

#[test]
fn put_get_round_trip_and_stats() {
    both(&config(blocks(4), blocks(4), blocks(4)), |s| {
        let mut r = rng();
        let (k, b) = chk(&mut r);
        assert!(!s.contains(Origin::Local, BlockKind::Chk, &k));
        assert_eq!(
            s.put(Space::Cache, BlockKind::Chk, &k, &b).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.put(Space::Cache, BlockKind::Chk, &k, &b).unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert!(s.contains_in(Space::Cache, BlockKind::Chk, &k));
        assert!(!s.contains_in(Space::Store, BlockKind::Chk, &k));
        assert!(!s.contains_in(Space::Cache, BlockKind::Ssk, &k));
        let found = s.get(Origin::Remote, BlockKind::Chk, &k).unwrap().unwrap();
        assert_eq!(found.space, Space::Cache);
        assert_eq!(found.block, b);
        let st = s.stats();
        assert_eq!(st.space(Space::Cache).bytes, CHK as u64);
        assert_eq!(st.space(Space::Cache).blocks, 1);
        assert_eq!(st.space(Space::Store).bytes, 0);
        assert!(s.remove(Space::Cache, BlockKind::Chk, &k).unwrap());
        assert!(!s.remove(Space::Cache, BlockKind::Chk, &k).unwrap());
        assert_eq!(s.get(Origin::Local, BlockKind::Chk, &k).unwrap(), None);
        assert_eq!(s.stats().total_bytes(), 0);
        s.flush().unwrap();
    });
}

#[test]
fn invalid_block_is_refused() {
    both(&config(blocks(4), blocks(4), blocks(4)), |s| {
        let mut r = rng();
        let (k, mut b) = chk(&mut r);
        b[0] ^= 1;
        assert!(matches!(
            s.put(Space::Store, BlockKind::Chk, &k, &b),
            Err(StoreError::InvalidBlock(_))
        ));
        assert!(s.put(Space::Store, BlockKind::Chk, &k, &b[..100]).is_err());
        assert_eq!(s.stats().total_bytes(), 0);
    });
}

#[test]
fn remote_lookups_never_see_the_client_cache() {
    both(&config(blocks(4), blocks(4), blocks(4)), |s| {
        let (k, b) = chk(&mut rng());
        s.put(Space::Client, BlockKind::Chk, &k, &b).unwrap();
        assert_eq!(s.get(Origin::Remote, BlockKind::Chk, &k).unwrap(), None);
        assert!(!s.contains(Origin::Remote, BlockKind::Chk, &k));
        assert_eq!(
            s.get(Origin::Local, BlockKind::Chk, &k)
                .unwrap()
                .unwrap()
                .space,
            Space::Client
        );
    });
}

#[test]
fn ssk_first_writer_wins() {
    both(&config(blocks(4), blocks(4), blocks(4)), |s| {
        let (k, a, b) = ssk_pair("collide");
        assert_eq!(
            s.put(Space::Store, BlockKind::Ssk, &k, &a).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.put(Space::Store, BlockKind::Ssk, &k, &a).unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert_eq!(
            s.put(Space::Store, BlockKind::Ssk, &k, &b).unwrap(),
            PutOutcome::Collision
        );
        // Also against another visible space.
        assert_eq!(
            s.put(Space::Cache, BlockKind::Ssk, &k, &b).unwrap(),
            PutOutcome::Collision
        );
        assert_eq!(
            s.put(Space::Cache, BlockKind::Ssk, &k, &a).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.get_in(Space::Store, BlockKind::Ssk, &k).unwrap().unwrap(),
            a
        );
        assert_eq!(s.stats().space(Space::Store).bytes, SSK as u64);
    });
}

#[test]
fn ssk_collision_does_not_reveal_the_client_cache() {
    both(&config(blocks(4), blocks(4), blocks(4)), |s| {
        let (k, a, b) = ssk_pair("private");
        s.put(Space::Client, BlockKind::Ssk, &k, &a).unwrap();
        // A remote insert of a different block is not told about the
        // client cache's copy.
        assert_eq!(
            s.put(Space::Cache, BlockKind::Ssk, &k, &b).unwrap(),
            PutOutcome::Stored
        );
        // A local insert sees everything.
        let (k2, c, d) = ssk_pair("shared");
        s.put(Space::Cache, BlockKind::Ssk, &k2, &c).unwrap();
        assert_eq!(
            s.put(Space::Client, BlockKind::Ssk, &k2, &d).unwrap(),
            PutOutcome::Collision
        );
    });
}

#[test]
fn budgets_hold_after_many_inserts() {
    let budget = blocks(5) + 3 * SSK as u64;
    both(&config(budget, budget, budget), |s| {
        let mut r = rng();
        for i in 0..120 {
            let space = Space::ALL[i % 3];
            if i % 7 == 0 {
                let (k, a, _) = ssk_pair(&format!("w{i}"));
                s.put(space, BlockKind::Ssk, &k, &a).unwrap();
            } else {
                let (k, b) = chk(&mut r);
                s.put(space, BlockKind::Chk, &k, &b).unwrap();
            }
            for st in s.stats().spaces {
                assert!(st.bytes <= st.budget, "{st:?}");
            }
        }
        let st = s.stats();
        for sp in st.spaces {
            assert!(sp.evicted > 0);
            assert!(
                sp.bytes + CHK as u64 > sp.budget,
                "space should be nearly full"
            );
        }
        assert_eq!(s.check().unwrap().deleted, 0);
    });
}

#[test]
fn block_larger_than_budget_is_no_room() {
    both(&config(CHK as u64 - 1, 0, blocks(1)), |s| {
        let (k, b) = chk(&mut rng());
        assert_eq!(
            s.put(Space::Store, BlockKind::Chk, &k, &b).unwrap(),
            PutOutcome::NoRoom
        );
        assert_eq!(
            s.put(Space::Cache, BlockKind::Chk, &k, &b).unwrap(),
            PutOutcome::NoRoom
        );
        assert_eq!(
            s.put(Space::Client, BlockKind::Chk, &k, &b).unwrap(),
            PutOutcome::Stored
        );
    });
}

#[test]
fn lru_evicts_least_recently_used() {
    both(&config(0, blocks(3), blocks(3)), |s| {
        let mut r = rng();
        for space in [Space::Cache, Space::Client] {
            let v: Vec<_> = (0..4).map(|_| chk(&mut r)).collect();
            for (k, b) in &v[..3] {
                s.put(space, BlockKind::Chk, k, b).unwrap();
            }
            // Use the oldest: the second becomes least recently used.
            assert!(s.get_in(space, BlockKind::Chk, &v[0].0).unwrap().is_some());
            s.put(space, BlockKind::Chk, &v[3].0, &v[3].1).unwrap();
            let held: Vec<bool> = v
                .iter()
                .map(|(k, _)| s.contains_in(space, BlockKind::Chk, k))
                .collect();
            assert_eq!(held, [true, false, true, true]);
            assert_eq!(s.stats().space(space).evicted, 1);
        }
    });
}

/// The node's own reads (`Origin::Local`, checked or not) leave the shared
/// cache's LRU order alone, so what survives eviction there says nothing
/// about what its user read; a peer's read (`Origin::Remote`) is a use.
/// (Before, every read promoted the block.)
#[test]
fn local_reads_do_not_promote_blocks_in_the_shared_cache() {
    both(&config(0, blocks(3), blocks(3)), |s| {
        let mut r = rng();
        for (origin, unchecked, promoted) in [
            (Origin::Local, false, false),
            (Origin::Local, true, false),
            (Origin::Remote, false, true),
        ] {
            let v: Vec<_> = (0..4).map(|_| chk(&mut r)).collect();
            for (k, b) in &v[..3] {
                s.put(Space::Cache, BlockKind::Chk, k, b).unwrap();
            }
            let found = if unchecked {
                s.unchecked().read(origin, BlockKind::Chk, &v[0].0)
            } else {
                s.get(origin, BlockKind::Chk, &v[0].0)
            };
            assert_eq!(found.unwrap().unwrap().space, Space::Cache);
            s.put(Space::Cache, BlockKind::Chk, &v[3].0, &v[3].1)
                .unwrap();
            let held = s.contains_in(Space::Cache, BlockKind::Chk, &v[0].0);
            assert_eq!(held, promoted, "{origin:?}, unchecked {unchecked}");
            for (k, _) in &v {
                s.remove(Space::Cache, BlockKind::Chk, k).unwrap();
            }
        }
    });
}

#[test]
fn lru_order_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let cfg = config(0, blocks(3), 0);
    let mut r = rng();
    let v: Vec<_> = (0..4).map(|_| chk(&mut r)).collect();
    {
        let (s, _) = SledStore::open(&path, &cfg).unwrap();
        for (k, b) in &v[..3] {
            s.put(Space::Cache, BlockKind::Chk, k, b).unwrap();
        }
        s.get_in(Space::Cache, BlockKind::Chk, &v[0].0)
            .unwrap()
            .unwrap();
        s.flush().unwrap();
    }
    let (s, report) = SledStore::open(&path, &cfg).unwrap();
    assert_eq!(report.outcome, OpenOutcome::Opened);
    assert_eq!(s.stats().space(Space::Cache).blocks, 3);
    s.put(Space::Cache, BlockKind::Chk, &v[3].0, &v[3].1)
        .unwrap();
    assert!(s.contains_in(Space::Cache, BlockKind::Chk, &v[0].0));
    assert!(!s.contains_in(Space::Cache, BlockKind::Chk, &v[1].0));
}

/// The long-term store ends up holding the keys closest to the node.
#[test]
fn store_evicts_farthest_from_location() {
    let cfg = config(blocks(4), 0, 0);
    both(&cfg, |s| {
        let mut r = rng();
        let v: Vec<_> = (0..12).map(|_| chk(&mut r)).collect();
        let mut outcomes = Vec::new();
        for (k, b) in &v {
            outcomes.push(s.put(Space::Store, BlockKind::Chk, k, b).unwrap());
        }
        assert!(outcomes.contains(&PutOutcome::NoRoom));
        let mut by_dist: Vec<_> = v
            .iter()
            .map(|(k, _)| (circular_distance(cfg.location, k.location()), *k))
            .collect();
        by_dist.sort();
        let want: HashSet<_> = by_dist[..4].iter().map(|(_, k)| *k).collect();
        let held: HashSet<_> = v
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| s.contains_in(Space::Store, BlockKind::Chk, k))
            .collect();
        assert_eq!(held, want);

        // Move the node next to the farthest held key: it becomes the
        // closest, and the next put evicts another one.
        let far = by_dist[3].1;
        s.set_location(far.location());
        let (k, b) = loop {
            let (k, b) = chk(&mut r);
            if circular_distance(far.location(), k.location())
                < by_dist[..4]
                    .iter()
                    .map(|(_, h)| circular_distance(far.location(), h.location()))
                    .max()
                    .unwrap()
            {
                break (k, b);
            }
        };
        assert_eq!(
            s.put(Space::Store, BlockKind::Chk, &k, &b).unwrap(),
            PutOutcome::Stored
        );
        assert!(s.contains_in(Space::Store, BlockKind::Chk, &far));
    });
}

#[test]
fn corrupt_block_is_deleted_on_read_memory() {
    let s = MemoryStore::new(&config(blocks(2), blocks(2), 0));
    let (k, b) = chk(&mut rng());
    s.put(Space::Cache, BlockKind::Chk, &k, &b).unwrap();
    s.engine().corrupt_all(Space::Cache).unwrap();
    assert_eq!(s.get(Origin::Local, BlockKind::Chk, &k).unwrap(), None);
    assert!(!s.contains_in(Space::Cache, BlockKind::Chk, &k));
    let st = s.stats();
    assert_eq!(st.corrupt_deleted, 1);
    assert_eq!(st.total_bytes(), 0);
    // It can be stored again.
    assert_eq!(
        s.put(Space::Cache, BlockKind::Chk, &k, &b).unwrap(),
        PutOutcome::Stored
    );
}

/// Corrupt the bytes on disk behind the store's back (through sled itself,
/// with the store closed), then read.
#[test]
fn corrupt_block_is_deleted_on_read_sled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let cfg = config(blocks(4), 0, 0);
    let mut r = rng();
    let (k, b) = chk(&mut r);
    let (k2, b2) = chk(&mut r);
    let (k3, a3, _) = ssk_pair("c");
    {
        let (s, _) = SledStore::open(&path, &cfg).unwrap();
        s.put(Space::Store, BlockKind::Chk, &k, &b).unwrap();
        s.put(Space::Store, BlockKind::Chk, &k2, &b2).unwrap();
        s.put(Space::Store, BlockKind::Ssk, &k3, &a3).unwrap();
        s.flush().unwrap();
    }
    {
        // Block bodies live in the slot files: flip a byte inside each
        // stored body.
        use std::os::unix::fs::FileExt;
        let mut n = 0;
        for (name, size, at) in [
            ("slots-1200.dat", 1200u64, 600u64),
            ("slots-32802.dat", 32802, 16000),
        ] {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path.join(name))
                .unwrap();
            let slots = f.metadata().unwrap().len().div_ceil(size);
            for slot in 0..slots {
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, slot * size + at).unwrap();
                b[0] ^= 0xff;
                f.write_all_at(&b, slot * size + at).unwrap();
                n += 1;
            }
        }
        assert_eq!(n, 3);
    }
    let (s, _) = SledStore::open(&path, &cfg).unwrap();
    assert_eq!(s.get_in(Space::Store, BlockKind::Chk, &k).unwrap(), None);
    assert_eq!(s.get_in(Space::Store, BlockKind::Ssk, &k3).unwrap(), None);
    assert_eq!(s.stats().corrupt_deleted, 2);
    let report = s.check().unwrap();
    assert_eq!(
        report,
        CheckReport {
            checked: 0,
            deleted: 1
        }
    );
    assert_eq!(s.stats().total_bytes(), 0);
}

/// The disk holds neither routing keys nor the blocks' bytes: without the
/// secret it cannot be scanned for known keys.
#[test]
fn index_keys_are_salted_and_blocks_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let cfg = config(blocks(8), blocks(8), blocks(8));
    let mut r = rng();
    let v: Vec<_> = (0..6).map(|_| chk(&mut r)).collect();
    let (sk, sa, _) = ssk_pair("salt");
    {
        let (s, _) = SledStore::open(&path, &cfg).unwrap();
        for (i, (k, b)) in v.iter().enumerate() {
            s.put(Space::ALL[i % 3], BlockKind::Chk, k, b).unwrap();
        }
        s.put(Space::Store, BlockKind::Ssk, &sk, &sa).unwrap();
        s.flush().unwrap();
        assert_eq!(s.engine().raw_keys().len(), 14);
    }
    let db = sled::open(&path).unwrap();
    let mut needles: Vec<Vec<u8>> = v.iter().map(|(k, _)| k.0[..8].to_vec()).collect();
    needles.push(sk.0[..8].to_vec());
    needles.extend(v.iter().map(|(_, b)| b[1000..1016].to_vec()));
    needles.push(sa[200..216].to_vec());
    let mut seen = 0;
    for name in db.tree_names() {
        let t = db.open_tree(&name).unwrap();
        for kv in t.iter() {
            let (key, val) = kv.unwrap();
            seen += 1;
            for n in &needles {
                assert!(!key.windows(n.len()).any(|w| w == &n[..]), "key leaks");
                assert!(!val.windows(n.len()).any(|w| w == &n[..]), "value leaks");
            }
        }
    }
    assert!(seen >= 14);
    // And every block's SHA-256 (a CHK's routing key) is absent too.
    for (k, _) in &v {
        let t = db.open_tree("blocks").unwrap();
        for kv in t.iter() {
            let (_, val) = kv.unwrap();
            assert_ne!(
                <[u8; 32]>::from(Sha256::digest(&val[12.min(val.len())..])),
                k.0
            );
        }
    }
}

#[test]
fn blocks_survive_reopen_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let cfg = config(blocks(8), blocks(8), blocks(8));
    let mut r = rng();
    let v: Vec<_> = (0..6).map(|_| chk(&mut r)).collect();
    {
        let (s, _) = SledStore::open(&path, &cfg).unwrap();
        for (i, (k, b)) in v.iter().enumerate() {
            s.put(Space::ALL[i % 3], BlockKind::Chk, k, b).unwrap();
        }
        s.meta_put("last-scrub", b"yesterday").unwrap();
        s.flush().unwrap();
    }
    let (s, report) = SledStore::open(&path, &cfg).unwrap();
    assert_eq!(report.outcome, OpenOutcome::Opened);
    assert_eq!(s.stats().total_bytes(), blocks(6));
    for (i, (k, b)) in v.iter().enumerate() {
        let got = s
            .get_in(Space::ALL[i % 3], BlockKind::Chk, k)
            .unwrap()
            .unwrap();
        assert_eq!(&got, b);
        verify_block(BlockKind::Chk, k, &got).unwrap();
    }
    assert_eq!(s.meta_get("last-scrub").unwrap().unwrap(), b"yesterday");
    assert_eq!(
        s.check().unwrap(),
        CheckReport {
            checked: 6,
            deleted: 0
        }
    );
}

/// A sled store at `path` holding one flushed CHK block: the store, its
/// config and the block's key.
fn store_with_one_block(path: &std::path::Path) -> (SledStore, StoreConfig, RoutingKey) {
    let cfg = config(blocks(2), 0, 0);
    let (k, b) = chk(&mut rng());
    let (s, _) = SledStore::open(path, &cfg).unwrap();
    s.put(Space::Store, BlockKind::Chk, &k, &b).unwrap();
    s.flush().unwrap();
    (s, cfg, k)
}

#[test]
fn wrong_secret_is_refused_without_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (s, cfg, k) = store_with_one_block(&path);
    drop(s);
    let mut other = cfg.clone();
    other.secret = StoreSecret::from_bytes([1; 32]);
    assert!(matches!(
        SledStore::open(&path, &other),
        Err(StoreError::WrongSecret { .. })
    ));
    let (s, _) = SledStore::open(&path, &cfg).unwrap();
    assert!(s
        .get_in(Space::Store, BlockKind::Chk, &k)
        .unwrap()
        .is_some());
}

#[test]
fn a_store_held_open_is_refused_not_moved_and_reopens_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (s, cfg, k) = store_with_one_block(&path);
    // Held (as by another node on the same directory): an error after the
    // short wait, and nothing is moved aside as if it were corrupt.
    let err = SledStore::open(&path, &cfg).map(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::Sled { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(s
        .get_in(Space::Store, BlockKind::Chk, &k)
        .unwrap()
        .is_some());
    // Closed, it opens again at once, however long sled's threads take to
    // let go of the lock.
    drop(s);
    let (s, _) = SledStore::open(&path, &cfg).unwrap();
    assert!(s
        .get_in(Space::Store, BlockKind::Chk, &k)
        .unwrap()
        .is_some());
}

#[test]
fn shrunk_budget_evicts_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut r = rng();
    {
        let (s, _) = SledStore::open(&path, &config(blocks(6), blocks(6), 0)).unwrap();
        for _ in 0..6 {
            let (k, b) = chk(&mut r);
            s.put(Space::Cache, BlockKind::Chk, &k, &b).unwrap();
            let (k, b) = chk(&mut r);
            s.put(Space::Store, BlockKind::Chk, &k, &b).unwrap();
        }
        s.flush().unwrap();
    }
    let (s, report) = SledStore::open(&path, &config(blocks(2), blocks(3), 0)).unwrap();
    assert_eq!(report.evicted_over_budget, 7);
    assert_eq!(s.stats().space(Space::Store).bytes, blocks(2));
    assert_eq!(s.stats().space(Space::Cache).bytes, blocks(3));
}

#[test]
fn corrupt_store_is_moved_aside_and_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    std::fs::create_dir_all(&path).unwrap();
    // Garbage where sled expects its files.
    std::fs::write(path.join("conf"), b"\xff\xfe not a sled config").unwrap();
    std::fs::write(path.join("db"), vec![0xAB; 4096]).unwrap();
    let cfg = config(blocks(2), 0, 0);
    let (s, report) = SledStore::open(&path, &cfg).unwrap();
    match &report.outcome {
        OpenOutcome::Recreated { moved_to, reason } => {
            assert!(moved_to.exists());
            assert!(moved_to.to_string_lossy().contains("s.corrupt-"));
            assert!(!reason.is_empty());
        }
        other => panic!("expected Recreated, got {other:?}"),
    }
    let (k, b) = chk(&mut rng());
    assert_eq!(
        s.put(Space::Store, BlockKind::Chk, &k, &b).unwrap(),
        PutOutcome::Stored
    );
}

#[test]
fn unknown_format_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    {
        let db = sled::open(&path).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(b"\0lichen-store/format", &[99u8][..])
            .unwrap();
        db.flush().unwrap();
    }
    let (_s, report) = SledStore::open(&path, &config(blocks(2), 0, 0)).unwrap();
    assert!(matches!(report.outcome, OpenOutcome::Recreated { .. }));
}

#[test]
fn metadata_round_trip() {
    both(&config(0, 0, 0), |s| {
        assert_eq!(s.meta_get("a").unwrap(), None);
        s.meta_put("a", b"1").unwrap();
        assert_eq!(s.meta_get("a").unwrap().unwrap(), b"1");
        assert!(s.meta_remove("a").unwrap());
        assert!(!s.meta_remove("a").unwrap());
        assert!(s.meta_put("", b"x").is_err());
        assert!(s.meta_put("big", &vec![0; 70_000]).is_err());
    });
}

#[test]
fn concurrent_puts_and_gets_keep_accounting() {
    let s = std::sync::Arc::new(MemoryStore::new(&config(blocks(5), blocks(5), 0)));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut r = rand::rngs::StdRng::seed_from_u64(t);
                let mut keys = Vec::new();
                for _ in 0..40 {
                    let (k, b) = chk(&mut r);
                    let space = if r.gen() { Space::Store } else { Space::Cache };
                    s.put(space, BlockKind::Chk, &k, &b).unwrap();
                    keys.push(k);
                    let k = keys[r.gen_range(0..keys.len())];
                    if let Some(f) = s.get(Origin::Remote, BlockKind::Chk, &k).unwrap() {
                        verify_block(BlockKind::Chk, &k, &f.block).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let st = s.stats();
    for sp in &st.spaces {
        assert!(sp.bytes <= sp.budget);
        assert_eq!(sp.bytes, sp.blocks * CHK as u64);
    }
    assert_eq!(s.check().unwrap().deleted, 0);
}

mod model {
    //! Random operation sequences against a simple model of one store.
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// 12 CHK blocks and one SSK key with two different blocks.
    type Pool = (Vec<(RoutingKey, Vec<u8>)>, (RoutingKey, Vec<u8>, Vec<u8>));

    fn pool() -> &'static Pool {
        static P: OnceLock<Pool> = OnceLock::new();
        P.get_or_init(|| {
            let mut r = rand::rngs::StdRng::seed_from_u64(99);
            ((0..12).map(|_| chk(&mut r)).collect(), ssk_pair("model"))
        })
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(usize, usize),
        PutSsk(usize, bool),
        Get(usize, usize),
        Remove(usize, usize),
        Flush,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize, 0..12usize).prop_map(|(s, i)| Op::Put(s, i)),
            1 => (0..3usize, any::<bool>()).prop_map(|(s, b)| Op::PutSsk(s, b)),
            3 => (0..3usize, 0..12usize).prop_map(|(s, i)| Op::Get(s, i)),
            1 => (0..3usize, 0..12usize).prop_map(|(s, i)| Op::Remove(s, i)),
            1 => Just(Op::Flush),
        ]
    }

    /// Model of one space: items in eviction order (front goes first).
    /// Item: CHK index 0..12, or 100 + SSK variant.
    #[derive(Default, Clone)]
    struct MSpace {
        items: Vec<usize>,
    }

    fn len_of(item: usize) -> u64 {
        if item >= 100 {
            SSK as u64
        } else {
            CHK as u64
        }
    }

    fn key_of(item: usize) -> RoutingKey {
        if item >= 100 {
            pool().1 .0
        } else {
            pool().0[item].0
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn store_matches_model(
            budgets in proptest::array::uniform3(0u64..5),
            location: u64,
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let b = |n: u64| n * CHK as u64 + 2 * SSK as u64 * u64::from(n > 0);
            let cfg = StoreConfig::new(
                Budgets { store: b(budgets[0]), cache: b(budgets[1]), client: b(budgets[2]) },
                location,
                StoreSecret::from_bytes([1; 32]),
            );
            let s = MemoryStore::new(&cfg);
            let mut m: [MSpace; 3] = Default::default();
            let bytes = |ms: &MSpace| ms.items.iter().map(|&i| len_of(i)).sum::<u64>();
            // Eviction rank for the long-term store: farthest first.
            let dist = |i: usize| circular_distance(location, key_of(i).location());
            for op in ops {
                match op {
                    Op::Put(si, i) => {
                        let space = Space::ALL[si];
                        let (k, blk) = &pool().0[i];
                        let got = s.put(space, BlockKind::Chk, k, blk).unwrap();
                        let want = model_put(&mut m[si], space, i, cfg.budgets.of(space), &dist);
                        prop_assert_eq!(got, want);
                    }
                    Op::PutSsk(si, second) => {
                        let space = Space::ALL[si];
                        let (k, a, bb) = &pool().1;
                        let item = 100 + usize::from(second);
                        let other = 100 + usize::from(!second);
                        let visible: &[Space] = if space == Space::Client {
                            Origin::Local.spaces()
                        } else {
                            Origin::Remote.spaces()
                        };
                        let got = s
                            .put(space, BlockKind::Ssk, k, if second { bb } else { a })
                            .unwrap();
                        let want = if SSK as u64 > cfg.budgets.of(space) {
                            PutOutcome::NoRoom
                        } else if visible.iter().any(|v| m[v.index()].items.contains(&other)) {
                            PutOutcome::Collision
                        } else {
                            model_put(&mut m[si], space, item, cfg.budgets.of(space), &dist)
                        };
                        prop_assert_eq!(got, want);
                    }
                    Op::Get(si, i) => {
                        let space = Space::ALL[si];
                        let (k, blk) = &pool().0[i];
                        let got = s.get_in(space, BlockKind::Chk, k).unwrap();
                        let ms = &mut m[si];
                        if let Some(p) = ms.items.iter().position(|&x| x == i) {
                            prop_assert_eq!(got.as_ref(), Some(blk));
                            if space.is_lru() {
                                let x = ms.items.remove(p);
                                ms.items.push(x);
                            }
                        } else {
                            prop_assert_eq!(got, None);
                        }
                    }
                    Op::Remove(si, i) => {
                        let space = Space::ALL[si];
                        let got = s.remove(space, BlockKind::Chk, &pool().0[i].0).unwrap();
                        let ms = &mut m[si];
                        let had = ms.items.iter().position(|&x| x == i).map(|p| ms.items.remove(p));
                        prop_assert_eq!(got, had.is_some());
                    }
                    Op::Flush => s.flush().unwrap(),
                }
                let st = s.stats();
                for space in Space::ALL {
                    let sp = st.space(space);
                    prop_assert!(sp.bytes <= sp.budget);
                    prop_assert_eq!(sp.bytes, bytes(&m[space.index()]));
                    prop_assert_eq!(sp.blocks, m[space.index()].items.len() as u64);
                }
            }
            prop_assert_eq!(s.check().unwrap().deleted, 0);
        }
    }

    fn model_put(
        ms: &mut MSpace,
        space: Space,
        item: usize,
        budget: u64,
        dist: &dyn Fn(usize) -> u64,
    ) -> PutOutcome {
        let len = len_of(item);
        if len > budget {
            return PutOutcome::NoRoom;
        }
        if let Some(p) = ms.items.iter().position(|&x| x == item) {
            if space.is_lru() {
                let x = ms.items.remove(p);
                ms.items.push(x);
            }
            return PutOutcome::AlreadyPresent;
        }
        let mut used: u64 = ms.items.iter().map(|&i| len_of(i)).sum();
        if space.is_lru() {
            while used + len > budget {
                used -= len_of(ms.items.remove(0));
            }
        } else {
            // Farthest first; refuse if the new key is at least as far as
            // every key that would have to go.
            let mut order = ms.items.clone();
            order.sort_by_key(|&i| std::cmp::Reverse((dist(i), key_of(i))));
            let mut victims = Vec::new();
            let mut u = used;
            for &v in &order {
                if u + len <= budget {
                    break;
                }
                if dist(v) <= dist(item) {
                    return PutOutcome::NoRoom;
                }
                u -= len_of(v);
                victims.push(v);
            }
            ms.items.retain(|x| !victims.contains(x));
        }
        ms.items.push(item);
        PutOutcome::Stored
    }
}

#[test]
fn put_trusted_stores_and_serves_like_put() {
    both(&config(blocks(8), blocks(8), blocks(8)), |s| {
        let mut r = rng();
        let (k, b) = chk(&mut r);
        assert_eq!(
            s.unchecked()
                .put_trusted(Space::Client, BlockKind::Chk, &k, &b)
                .unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.unchecked()
                .put_trusted(Space::Client, BlockKind::Chk, &k, &b)
                .unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert_eq!(
            s.get_in(Space::Client, BlockKind::Chk, &k).unwrap(),
            Some(b.clone())
        );
        assert_eq!(s.stats().space(Space::Client).blocks, 1);
        // Lengths are still checked.
        assert!(matches!(
            s.unchecked()
                .put_trusted(Space::Client, BlockKind::Chk, &k, &b[..100]),
            Err(StoreError::InvalidBlock(_))
        ));
        // SSK blocks are still verified.
        let (rk, a, _) = ssk_pair("trusted");
        let mut bad = a.clone();
        bad[40] ^= 1;
        assert!(matches!(
            s.unchecked()
                .put_trusted(Space::Client, BlockKind::Ssk, &rk, &bad),
            Err(StoreError::InvalidBlock(_))
        ));
        assert_eq!(
            s.unchecked()
                .put_trusted(Space::Client, BlockKind::Ssk, &rk, &a)
                .unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.get_in(Space::Client, BlockKind::Ssk, &rk).unwrap(),
            Some(a)
        );
    });
}

/// A caller that breaks the contract stores a bad block, but it is never
/// served: the read verifies and deletes it. (Debug builds assert instead.)
#[cfg(not(debug_assertions))]
#[test]
fn put_trusted_bad_block_is_never_served() {
    both(&config(blocks(8), blocks(8), blocks(8)), |s| {
        let mut r = rng();
        let (k, mut b) = chk(&mut r);
        b[0] ^= 1;
        s.unchecked()
            .put_trusted(Space::Client, BlockKind::Chk, &k, &b)
            .unwrap();
        assert_eq!(s.get_in(Space::Client, BlockKind::Chk, &k).unwrap(), None);
        assert_eq!(s.stats().space(Space::Client).blocks, 0);
        assert_eq!(s.stats().corrupt_deleted, 1);
    });
}

#[test]
fn put_trusted_chk_batch_matches_one_put_per_block() {
    // Budget of 8 blocks, 5 already there, a batch of 20 (with a
    // duplicate): the batch must evict the old blocks, then its own first
    // blocks, exactly as 20 single puts would.
    both(&config(blocks(8), blocks(8), blocks(8)), |s| {
        let mut r = rng();
        let old: Vec<_> = (0..5).map(|_| chk(&mut r)).collect();
        for (k, b) in &old {
            s.put(Space::Client, BlockKind::Chk, k, b).unwrap();
        }
        let mut batch: Vec<(RoutingKey, Vec<u8>)> = (0..20).map(|_| chk(&mut r)).collect();
        batch.insert(3, batch[1].clone());
        let out = s
            .unchecked()
            .put_trusted_chk_batch(Space::Client, &batch)
            .unwrap();
        assert_eq!(out.len(), 21);
        assert_eq!(out[3], PutOutcome::AlreadyPresent);
        assert_eq!(out.iter().filter(|o| **o == PutOutcome::Stored).count(), 20);
        let st = s.stats();
        let c = st.space(Space::Client);
        assert_eq!(c.blocks, 8);
        assert_eq!(c.bytes, blocks(8));
        assert_eq!(c.evicted, 17);
        // The 8 most recent survive and read back.
        for (k, b) in &batch[13..] {
            assert_eq!(
                s.get_in(Space::Client, BlockKind::Chk, k).unwrap(),
                Some(b.clone())
            );
        }
        for (k, _) in old.iter().chain(&batch[..13]) {
            assert!(!s.contains_in(Space::Client, BlockKind::Chk, k));
        }
        // Again: all present now.
        let again = s
            .unchecked()
            .put_trusted_chk_batch(Space::Client, &batch[13..])
            .unwrap();
        assert!(again.iter().all(|o| *o == PutOutcome::AlreadyPresent));
        s.flush().unwrap();
        assert_eq!(s.check().unwrap().deleted, 0);
    });
}

#[test]
fn put_trusted_chk_batch_big_and_bad_input() {
    both(&config(blocks(100), blocks(100), blocks(100)), |s| {
        let mut r = rng();
        let batch: Vec<(RoutingKey, Vec<u8>)> = (0..64).map(|_| chk(&mut r)).collect();
        let out = s
            .unchecked()
            .put_trusted_chk_batch(Space::Cache, &batch)
            .unwrap();
        assert!(out.iter().all(|o| *o == PutOutcome::Stored));
        for (k, b) in &batch {
            assert_eq!(
                s.get_in(Space::Cache, BlockKind::Chk, k).unwrap(),
                Some(b.clone())
            );
        }
        let mut bad = vec![chk(&mut r)];
        bad.push((RoutingKey([1; 32]), vec![0u8; 10]));
        assert!(matches!(
            s.unchecked().put_trusted_chk_batch(Space::Cache, &bad),
            Err(StoreError::InvalidBlock(_))
        ));
        assert!(!s.contains_in(Space::Cache, BlockKind::Chk, &bad[0].0));
        assert_eq!(s.stats().space(Space::Cache).blocks, 64);
        // Too small a budget for one block: NoRoom for all.
        let none = s
            .unchecked()
            .put_trusted_chk_batch(Space::Store, &batch[..2]);
        assert!(none.is_ok());
    });
    let tiny = config(100, 100, 100);
    both(&tiny, |s| {
        let mut r = rng();
        let out = s
            .unchecked()
            .put_trusted_chk_batch(Space::Client, &[chk(&mut r)])
            .unwrap();
        assert_eq!(out, vec![PutOutcome::NoRoom]);
    });
}

#[test]
fn read_returns_what_get_does_without_reverifying_and_respects_origin() {
    both(&config(blocks(4), blocks(4), blocks(4)), |s| {
        let mut r = rng();
        let (k, b) = chk(&mut r);
        let (k2, b2) = chk(&mut r);
        s.put(Space::Client, BlockKind::Chk, &k, &b).unwrap();
        s.put(Space::Cache, BlockKind::Chk, &k2, &b2).unwrap();
        let found = s
            .unchecked()
            .read(Origin::Local, BlockKind::Chk, &k)
            .unwrap()
            .unwrap();
        assert_eq!((found.space, found.block), (Space::Client, b));
        assert_eq!(
            s.unchecked()
                .read(Origin::Local, BlockKind::Chk, &k2)
                .unwrap()
                .unwrap()
                .block,
            b2
        );
        // A peer never sees the client cache, read or get.
        assert!(s
            .unchecked()
            .read(Origin::Remote, BlockKind::Chk, &k)
            .unwrap()
            .is_none());
        let (missing, _) = chk(&mut r);
        assert!(s
            .unchecked()
            .read(Origin::Local, BlockKind::Chk, &missing)
            .unwrap()
            .is_none());
    });
}

/// Every record of the block tree, raw (key, value), straight from sled.
fn raw_records(path: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = sled::open(path).unwrap();
    let t = db.open_tree("blocks").unwrap();
    t.iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[test]
fn no_record_says_which_space_its_block_is_in() {
    // The same blocks put the same way into the client cache of one store
    // and the shared store of another: the disks look alike.
    let mut r = rng();
    let v: Vec<_> = (0..4).map(|_| chk(&mut r)).collect();
    let (sk, sa, _) = ssk_pair("spaces");
    let cfg = config(blocks(10), blocks(10), blocks(10));
    let dir = tempfile::tempdir().unwrap();
    let mut shapes = Vec::new();
    for space in [Space::Client, Space::Store] {
        let path = dir.path().join(format!("{space:?}"));
        {
            let (s, _) = SledStore::open(&path, &cfg).unwrap();
            for (k, b) in &v {
                s.put(space, BlockKind::Chk, k, b).unwrap();
            }
            s.put(space, BlockKind::Ssk, &sk, &sa).unwrap();
            s.flush().unwrap();
        }
        let recs = raw_records(&path);
        assert_eq!(recs.len(), 10);
        for (k, val) in &recs {
            match k[0] {
                b'D' => assert_eq!(k.len(), 9, "data keys are the sequence number alone"),
                b'M' => {
                    assert_eq!((k.len(), val.len()), (33, 63));
                    // Not the space tag and the clear index key of format 2.
                    let ik = crate::keys::Keys::new(&cfg.secret);
                    assert!(v
                        .iter()
                        .all(|(rk, _)| !k.ends_with(&ik.index_key(BlockKind::Chk, rk))));
                }
                other => panic!("unexpected record tag {other}"),
            }
        }
        let mut shape: Vec<(u8, usize, usize, Option<Vec<u8>>)> = recs
            .iter()
            .map(|(k, val)| (k[0], k.len(), val.len(), (k[0] == b'D').then(|| k.clone())))
            .collect();
        shape.sort();
        shapes.push(shape);
    }
    assert_eq!(
        shapes[0], shapes[1],
        "client cache and store look the same on disk"
    );
}

#[test]
fn a_format_2_store_is_migrated_with_every_block_in_its_space() {
    let mut r = rng();
    let v: Vec<_> = (0..6).map(|_| chk(&mut r)).collect();
    let cfg = config(blocks(10), blocks(10), blocks(10));
    let keys = crate::keys::Keys::new(&cfg.secret);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    drop(SledStore::open(&path, &cfg).unwrap());
    {
        // Write format-2 records through the backend (bodies into slots).
        let db = sled::open(&path).unwrap();
        let backend = crate::backend::SledBackend::new(db.clone(), &path, 8).unwrap();
        let mut ops: Vec<crate::backend::Op> = Vec::new();
        for (i, (rk, b)) in v.iter().enumerate() {
            let space = Space::ALL[i % 3];
            let ik = keys.index_key(BlockKind::Chk, rk);
            let seq = 100 + i as u64;
            let mut dk = vec![b'D', space.tag()];
            dk.extend_from_slice(&seq.to_be_bytes());
            ops.push((dk, Some(keys.seal(&ik, b))));
            let mut mk = vec![b'M', space.tag()];
            mk.extend_from_slice(&ik);
            let mut val = vec![2, BlockKind::Chk.tag()];
            val.extend_from_slice(&keys.mask_rk(&ik, &rk.0));
            val.extend_from_slice(&seq.to_be_bytes());
            val.extend_from_slice(&seq.to_be_bytes());
            ops.push((mk, Some(val)));
        }
        // An orphan data record and a damaged index record.
        ops.push((vec![b'D', 1, 0, 0, 0, 0, 0, 0, 0, 9], Some(vec![1; 40])));
        let mut junk = vec![b'M', 2];
        junk.extend_from_slice(&[7; 32]);
        ops.push((junk, Some(vec![2; 50])));
        crate::backend::Backend::apply(&backend, ops).unwrap();
        crate::backend::Backend::meta_set(&backend, b"\0lichen-store/format", Some(&[2])).unwrap();
        crate::backend::Backend::flush(&backend).unwrap();
    }
    let (s, report) = SledStore::open(&path, &cfg).unwrap();
    assert_eq!(report.outcome, OpenOutcome::Opened);
    assert_eq!(report.migrated_blocks, 6);
    for (i, (rk, b)) in v.iter().enumerate() {
        let space = Space::ALL[i % 3];
        for other in Space::ALL {
            let got = s.get_in(other, BlockKind::Chk, rk).unwrap();
            assert_eq!(
                got.as_ref(),
                (other == space).then_some(b),
                "block {i} in {other:?}"
            );
        }
    }
    drop(s);
    let recs = raw_records(&path);
    assert_eq!(
        recs.len(),
        12,
        "six blocks, two records each; nothing of format 2 left"
    );
    assert!(recs.iter().all(|(k, _)| k.len() == 9 || k.len() == 33));
    // Opening again changes nothing.
    let (_s, again) = SledStore::open(&path, &cfg).unwrap();
    assert_eq!(again.migrated_blocks, 0);
}

#[test]
fn slot_files_reuse_the_lowest_slot_and_shrink_when_their_tail_is_free() {
    let mut r = rng();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let cfg = config(0, 0, blocks(40));
    let file = path.join("slots-32802.dat");
    let len = || std::fs::metadata(&file).unwrap().len();
    let v: Vec<_> = (0..30).map(|_| chk(&mut r)).collect();
    let (s, _) = SledStore::open(&path, &cfg).unwrap();
    for (k, b) in &v {
        s.put(Space::Client, BlockKind::Chk, k, b).unwrap();
    }
    s.flush().unwrap();
    // Exact slots: a block, its nonce and its length, nothing more.
    assert_eq!(len(), 30 * 32_802);
    // Free the last ten: after the flush the file gives them back.
    for (k, _) in &v[20..] {
        s.remove(Space::Client, BlockKind::Chk, k).unwrap();
    }
    s.flush().unwrap();
    assert_eq!(len(), 20 * 32_802);
    // Free five in the middle: the file keeps its length, and new blocks
    // fill the holes before it grows.
    for (k, _) in &v[5..10] {
        s.remove(Space::Client, BlockKind::Chk, k).unwrap();
    }
    s.flush().unwrap();
    assert_eq!(len(), 20 * 32_802);
    let w: Vec<_> = (0..5).map(|_| chk(&mut r)).collect();
    for (k, b) in &w {
        s.put(Space::Client, BlockKind::Chk, k, b).unwrap();
    }
    s.flush().unwrap();
    assert_eq!(len(), 20 * 32_802);
    for (k, b) in v[..5].iter().chain(&v[10..20]).chain(&w) {
        assert_eq!(
            s.get_in(Space::Client, BlockKind::Chk, k).unwrap().as_ref(),
            Some(b)
        );
    }
    drop(s);
    // Reopened after everything is removed from the end: cut at open too.
    let (s, _) = SledStore::open(&path, &cfg).unwrap();
    for (k, _) in v[10..20].iter() {
        s.remove(Space::Client, BlockKind::Chk, k).unwrap();
    }
    drop(s);
    let (_s, _) = SledStore::open(&path, &cfg).unwrap();
    assert!(len() <= 10 * 32_802, "{}", len());
}

#[test]
fn freed_slots_wait_for_a_flush_in_proportion_to_the_budget() {
    use crate::backend::max_pending_for;
    assert_eq!(max_pending_for(0), 8);
    assert_eq!(max_pending_for(64 << 20), 31);
    assert_eq!(max_pending_for(1 << 40), 1024);
}
