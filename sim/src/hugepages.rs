//! Large runs in huge pages: the simulator's state is gigabytes of small
//! allocations touched at random, and with 4 KiB pages most of its time
//! went to TLB misses (10,000 nodes: 179 s with 4 KiB pages, 145 s when
//! glibc's allocator asks for transparent huge pages, same memory).
//! glibc takes the request only from the environment, read before `main`:
//! so the simulator runs itself again with it set.

use std::process::Command;

/// The environment variable glibc reads its allocator settings from.
const TUNABLES: &str = "GLIBC_TUNABLES";

/// The setting that has glibc's `malloc` ask the kernel for transparent
/// huge pages (`madvise`), as this kernel's default mode wants.
const HUGE: &str = "glibc.malloc.hugetlb=1";

/// Run this program again with glibc's allocator in huge pages, and give
/// back its exit code; `None` when that is not needed or not possible
/// (not glibc on Linux, `GLIBC_TUNABLES` already set by the user or by
/// an earlier round, transparent huge pages off, the program not found):
/// then the caller goes on in this process. Only for runs large enough
/// to gain (`nodes` at least 5,000).
#[must_use]
pub fn rerun_in_huge_pages(nodes: usize) -> Option<i32> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || nodes < 5_000 {
        return None;
    }
    if std::env::var_os(TUNABLES).is_some() {
        return None;
    }
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    if thp.contains("[never]") {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let status = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(TUNABLES, HUGE)
        .status()
        .ok()?;
    // Killed by a signal: the shell's convention, 128 + 9 or so; 1 will do.
    Some(status.code().unwrap_or(1))
}
