//! Inserts stream: memory does not grow with the document.
#![allow(clippy::unwrap_used)]

use lichen_client::{insert, InsertOptions, NullSink};
use std::io::Read;

/// An endless-looking document generated on the fly (xorshift bytes).
struct Gen {
    left: u64,
    state: u64,
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_large_insert_runs_in_bounded_memory() {
    const LEN: u64 = 128 << 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let before = peak_rss_kib();
    let r = rt
        .block_on(insert(
            &NullSink,
            Gen {
                left: LEN,
                state: 0x9e37_79b9_7f4a_7c15,
            },
            &InsertOptions::default(),
        ))
        .unwrap();
    assert_eq!(r.size, LEN);
    if let (Some(b), Some(a)) = (before, peak_rss_kib()) {
        let grown_mib = (a.saturating_sub(b)) / 1024;
        println!(
            "peak RSS grew by {grown_mib} MiB for a {} MiB document",
            LEN >> 20
        );
        assert!(grown_mib < 120, "peak RSS grew by {grown_mib} MiB");
    }
}
