//! kill -9 harness (after sled's `test_crash_recovery.rs`): the test re-runs
//! its own binary as a child that writes, flushes, reads and removes blocks
//! in a loop; the parent kills it (SIGKILL) at a random moment, reopens the
//! store and checks its invariants. Repeated `ROUNDS` times on the same
//! directory, so every round also reopens the history of all earlier crashes.
//!
//! Checked after every kill:
//! - the store opens (never "moved aside as corrupt");
//! - every block the index lists reads back and verifies (`check` deletes
//!   nothing);
//! - per space, logical bytes equal the sum of stored block lengths and stay
//!   within the budget;
//! - every block the child acknowledged (flushed, then recorded) in the
//!   never-evicting long-term store is there.
//!
//! Note: killing a process leaves the OS page cache intact, so this tests
//! process crashes, not power loss.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lichen_crypto::{BlockKind, RoutingKey};
use lichen_store::{BlockStore, Budgets, OpenOutcome, SledStore, Space, StoreConfig, StoreSecret};
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "LICHEN_STORE_CRASH_CHILD";
const ROUNDS: u64 = 24;
const CHK: u64 = BlockKind::Chk.block_len() as u64;

fn config() -> StoreConfig {
    StoreConfig::new(
        Budgets {
            store: 4096 * CHK, // never reached: acknowledged blocks must stay
            cache: 48 * CHK,   // heavy eviction
            client: 16 * CHK,
        },
        0x0123_4567_89ab_cdef,
        StoreSecret::from_bytes([9; 32]),
    )
}

/// Block number `seq` of round `round`: deterministic, so the parent can
/// regenerate what the child wrote.
fn block(round: u64, seq: u64) -> (RoutingKey, Vec<u8>) {
    let mut r = rand::rngs::StdRng::seed_from_u64(round.wrapping_mul(1_000_003) ^ seq);
    let mut b = vec![0u8; CHK as usize];
    r.fill_bytes(&mut b);
    (RoutingKey(Sha256::digest(&b).into()), b)
}

fn acked_path(dir: &Path) -> PathBuf {
    dir.with_extension("acked")
}

/// Child mode: does nothing unless the parent set `CHILD_ENV`.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (round, dir) = spec.split_once(':').unwrap();
    let round: u64 = round.parse().unwrap();
    let dir = PathBuf::from(dir);
    let (store, _) = SledStore::open(&dir, &config()).unwrap();
    let mut r = rand::rngs::StdRng::seed_from_u64(round);
    let start = Instant::now();
    let mut seq = 0u64;
    // Bounded in case the parent dies: it kills us long before this.
    while start.elapsed() < Duration::from_secs(20) {
        let (k, b) = block(round, seq);
        // Every 4th block goes to the long-term store (acknowledged after
        // flush); all go to the cache or the client cache.
        if seq % 4 == 0 {
            store.put(Space::Store, BlockKind::Chk, &k, &b).unwrap();
        }
        let space = if r.gen_bool(0.8) {
            Space::Cache
        } else {
            Space::Client
        };
        store.put(space, BlockKind::Chk, &k, &b).unwrap();
        if seq > 0 && r.gen_bool(0.3) {
            let (old, _) = block(round, r.gen_range(0..seq));
            let _ = store.get_in(Space::Cache, BlockKind::Chk, &old).unwrap();
        }
        if seq > 0 && r.gen_bool(0.05) {
            let (old, _) = block(round, r.gen_range(0..seq));
            store.remove(Space::Client, BlockKind::Chk, &old).unwrap();
        }
        seq += 1;
        if seq % 8 == 0 {
            store.flush().unwrap();
            // Record the acknowledgement atomically (write + rename).
            let tmp = acked_path(&dir).with_extension("tmp");
            std::fs::write(&tmp, seq.to_be_bytes()).unwrap();
            std::fs::rename(&tmp, acked_path(&dir)).unwrap();
        }
    }
}

#[test]
fn kill_9_at_random_moments() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("LICHEN_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed),
    );
    let mut total_acked = 0;
    let mut total_blocks = 0;
    for round in 0..ROUNDS {
        let _ = std::fs::remove_file(acked_path(&dir));
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{round}:{}", dir.display()))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.gen_range(50..400);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: child finished before the kill"
        );

        let (store, report) = SledStore::open(&dir, &config()).unwrap();
        assert!(
            !matches!(report.outcome, OpenOutcome::Recreated { .. }),
            "round {round}: store was corrupt after kill: {report:?}"
        );
        assert_eq!(report.dropped_records, 0, "round {round}");
        let check = store.check().unwrap();
        assert_eq!(check.deleted, 0, "round {round}: bad blocks after kill");
        let stats = store.stats();
        for sp in &stats.spaces {
            assert!(sp.bytes <= sp.budget, "round {round}: over budget {sp:?}");
            assert_eq!(
                sp.bytes,
                sp.blocks * CHK,
                "round {round}: accounting {sp:?}"
            );
        }
        assert_eq!(
            check.checked,
            stats.spaces.iter().map(|s| s.blocks).sum::<u64>()
        );

        let acked = std::fs::read(acked_path(&dir))
            .ok()
            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
        for seq in (0..acked).step_by(4) {
            let (k, b) = block(round, seq);
            let got = store.get_in(Space::Store, BlockKind::Chk, &k).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(&b[..]),
                "round {round}: acked block {seq} lost"
            );
            // Keep the long-term store small across rounds.
            store.remove(Space::Store, BlockKind::Chk, &k).unwrap();
        }
        total_acked += acked;
        total_blocks += check.checked;
        store.flush().unwrap();
        eprintln!(
            "round {round}: killed after {delay} ms, {acked} acked puts, {} blocks verified",
            check.checked
        );
    }
    // The harness must actually have exercised something.
    assert!(total_acked > 0 && total_blocks > 0);
}
