//! The sled-backed store and its open/recover logic.

use crate::backend::SledBackend;
use crate::engine::{delegate_block_store, Engine};
use crate::{StoreConfig, StoreError};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// A [`crate::BlockStore`] on disk, in a directory of its own.
///
/// The directory must hold nothing but the store: if it fails to open as
/// corrupt it is renamed to `<dir>.corrupt-<unix seconds>` and a fresh,
/// empty store is created in its place (the store is a cache; node identity
/// and persistent requests live elsewhere).
#[derive(Debug)]
pub struct SledStore {
    engine: Engine<SledBackend>,
    path: PathBuf,
}

/// What [`SledStore::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenOutcome {
    /// No store existed; an empty one was created.
    Created,
    /// The existing store was opened.
    Opened,
    /// The existing store could not be opened; it was moved aside and an
    /// empty one created.
    Recreated {
        /// Where the old directory now is.
        moved_to: PathBuf,
        /// Why it could not be opened.
        reason: String,
    },
}

/// Report of [`SledStore::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// Created, opened or recreated.
    pub outcome: OpenOutcome,
    /// Unreadable index records dropped while loading.
    pub dropped_records: u64,
    /// Blocks evicted at open because a budget is now smaller.
    pub evicted_over_budget: u64,
    /// Blocks moved from an earlier format at this open.
    pub migrated_blocks: u64,
}

impl SledStore {
    /// Open (or create) the store in `dir`.
    ///
    /// # Errors
    /// [`StoreError::WrongSecret`] if the store was made with another secret
    /// (nothing is moved); [`StoreError::Io`] / [`StoreError::Sled`] for
    /// errors that are not corruption (permissions, another process holding
    /// the store), which are returned rather than destroying the store.
    pub fn open(dir: &Path, config: &StoreConfig) -> Result<(Self, OpenReport), StoreError> {
        let existed = dir.exists();
        match try_open(dir, config) {
            Ok((engine, load)) => {
                let outcome = if !existed || load.fresh {
                    OpenOutcome::Created
                } else {
                    OpenOutcome::Opened
                };
                let store = SledStore {
                    engine,
                    path: dir.to_path_buf(),
                };
                info!(
                    blocks = store
                        .engine
                        .stats()
                        .spaces
                        .iter()
                        .map(|s| s.blocks)
                        .sum::<u64>(),
                    "block store opened"
                );
                Ok((
                    store,
                    OpenReport {
                        outcome,
                        dropped_records: load.dropped,
                        evicted_over_budget: load.evicted,
                        migrated_blocks: load.migrated,
                    },
                ))
            }
            Err(e) if is_corruption(&e) => {
                let reason = e.to_string();
                let moved_to = move_aside(dir)?;
                warn!(
                    store = %dir.display(),
                    moved_to = %moved_to.display(),
                    %reason,
                    "block store failed to open as corrupt: moved it aside and created an empty store"
                );
                let (engine, load) = try_open(dir, config)?;
                Ok((
                    SledStore {
                        engine,
                        path: dir.to_path_buf(),
                    },
                    OpenReport {
                        outcome: OpenOutcome::Recreated { moved_to, reason },
                        dropped_records: load.dropped,
                        evicted_over_budget: load.evicted,
                        migrated_blocks: load.migrated,
                    },
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// The store's directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Engine<SledBackend> {
        &self.engine
    }
}

delegate_block_store!(SledStore);

fn try_open(
    dir: &Path,
    config: &StoreConfig,
) -> Result<(Engine<SledBackend>, crate::engine::LoadReport), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        context: "create the store directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let open = || -> Result<_, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(config.sled_cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(StoreError::sled("open the store"))?;
        let budgets = &config.budgets;
        let total = budgets.store + budgets.cache + budgets.client;
        let backend = SledBackend::new(db, dir, crate::backend::max_pending_for(total))?;
        Engine::open(backend, config, dir.to_path_buf())
    };
    // sled can panic on some kinds of damage instead of returning an error;
    // everything built here is discarded if it does.
    let attempt = || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)) {
        Ok(r) => r,
        Err(_) => Err(StoreError::Sled {
            context: "open the store (sled panicked)",
            source: sled::Error::ReportableBug("panic while opening".into()),
        }),
    };
    // A store just closed in this process can keep its lock for a moment:
    // sled's background threads drop their handles after the `Db` is gone.
    // Wait for it, briefly; another process holding the store still gets
    // the error.
    let give_up = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match attempt() {
            Err(e) if is_lock_held(&e) && std::time::Instant::now() < give_up => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// How long [`try_open`] waits for a store lock to be released.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// sled's "could not acquire lock" (another handle holds the store).
fn is_lock_held(e: &StoreError) -> bool {
    matches!(e, StoreError::Sled { source: sled::Error::Io(io), .. }
        if io.kind() == std::io::ErrorKind::Other
            && io.to_string().starts_with("could not acquire lock"))
}

/// Errors that mean "the files are damaged", as opposed to "cannot access
/// them right now" (which must not destroy anything).
fn is_corruption(e: &StoreError) -> bool {
    match e {
        StoreError::UnsupportedFormat { .. } => true,
        StoreError::Sled { source, .. } => match source {
            sled::Error::Corruption { .. }
            | sled::Error::ReportableBug(_)
            | sled::Error::Unsupported(_) => true,
            sled::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        },
        _ => false,
    }
}

fn move_aside(dir: &Path) -> Result<PathBuf, StoreError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{}.corrupt-{secs}", dir.display());
    let mut target = PathBuf::from(&base);
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(dir, &target).map_err(|source| StoreError::Io {
        context: "move a corrupt store aside",
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(target)
}
