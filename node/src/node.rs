//! The running node: configuration, identity, store, request queue and the
//! services (FCP, gateway) that share them.

use crate::config::Config;
use crate::identity::Identity;
use crate::peers::PeerManager;
use crate::requests::Requests;
use lichen_store::{BlockStore, Budgets, OpenOutcome, SledStore, StoreConfig, StoreSecret};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Milliseconds since the Unix epoch (FCP timestamps).
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Everything the node's services share.
#[derive(Debug)]
pub struct Node {
    /// Effective configuration.
    pub config: Config,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Node identity.
    pub identity: Identity,
    /// The datastore.
    pub store: Arc<dyn BlockStore>,
    /// FCP requests (connection, reboot and forever persistence).
    pub requests: Requests,
    /// Inserts made without peers, waiting to be pushed into the network.
    pub pushes: crate::push::Pushes,
    /// Live FCP connections.
    pub hub: crate::fcp_server::Hub,
    /// When the node started (ms since epoch).
    pub started_ms: u64,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// The peer manager, once the network is started (`run`); unset for a
    /// node without a network (tests that open a node directly).
    pub peers: OnceLock<PeerManager>,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Identity problem.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Store problem.
    #[error("datastore: {0}")]
    Store(#[from] lichen_store::StoreError),
    /// Data directory or other I/O problem.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl Node {
    /// Open everything in the data directory: identity (created on first
    /// start), store (moved aside and rebuilt if corrupt), persistent
    /// requests.
    ///
    /// # Errors
    /// [`StartError`] naming what failed.
    pub fn open(config: Config) -> Result<Arc<Node>, StartError> {
        let data_dir = config.data_dir()?;
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::Io {
            what: format!("cannot create data directory {}", data_dir.display()),
            source,
        })?;
        let (identity, created) = Identity::load_or_create(&data_dir)?;
        if created {
            tracing::info!("created a new node identity");
        }
        let store = open_store(&data_dir, &config, &identity)?;
        let tmp = data_dir.join("tmp");
        // Leftover spool files from a previous run belong to nobody.
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|source| StartError::Io {
            what: format!("cannot create {}", tmp.display()),
            source,
        })?;
        let requests = Requests::open(&data_dir).map_err(|source| StartError::Io {
            what: "cannot open the persistent request queue".into(),
            source,
        })?;
        let pushes =
            crate::push::Pushes::open(&data_dir, identity.store_secret).map_err(|source| {
                StartError::Io {
                    what: "cannot open the list of inserts waiting to be pushed".into(),
                    source,
                }
            })?;
        Ok(Arc::new(Node {
            config,
            data_dir,
            identity,
            store,
            requests,
            pushes,
            hub: crate::fcp_server::Hub::default(),
            started_ms: now_ms(),
            shutdown: CancellationToken::new(),
            peers: OnceLock::new(),
        }))
    }

    /// Peers connected now (0 without a network).
    #[must_use]
    pub fn peer_count(&self) -> usize {
        self.peers.get().map_or(0, PeerManager::connected)
    }

    /// The peer manager, when the network is started and has peers.
    #[must_use]
    pub fn network(&self) -> Option<&PeerManager> {
        self.peers.get().filter(|p| p.connected() > 0)
    }

    /// Directory for temporary spool files (emptied at start).
    #[must_use]
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// A fresh temporary file path.
    #[must_use]
    pub fn tmp_path(&self, prefix: &str) -> PathBuf {
        let n: u64 = rand::random();
        self.tmp_dir().join(format!("{prefix}-{n:016x}"))
    }
}

fn open_store(
    data_dir: &Path,
    config: &Config,
    identity: &Identity,
) -> Result<Arc<dyn BlockStore>, StartError> {
    let budgets = Budgets {
        store: config.store.store_bytes,
        cache: config.store.cache_bytes,
        client: config.store.client_cache_bytes,
    };
    let mut sc = StoreConfig::new(
        budgets,
        identity.location,
        StoreSecret::from_bytes(identity.store_secret),
    );
    // Blocks are read once per request and verified anyway; the OS page
    // cache serves repeats. A small sled cache keeps the node's RSS low.
    sc.sled_cache_bytes = 16 << 20;
    let (store, report) = SledStore::open(&data_dir.join("store"), &sc)?;
    if let OpenOutcome::Recreated { .. } = report.outcome {
        tracing::warn!("the datastore was corrupt: moved it aside and started an empty one (it is a cache; identity and requests are kept)");
    }
    Ok(Arc::new(store))
}
