//! The node's shared context: configuration, identity, store, request
//! queue, the table of inserts waiting to be pushed, the network and the
//! clock.
//! The front ends (FCP server, gateway, peer driver), the jobs and the
//! operations all take it; it owns none of their parts (the FCP server
//! owns its connections' hub).
//!
//! The network is known here only through two traits: [`Network`] (fetch
//! and insert one block: what operations and jobs use) and [`Peers`] (the
//! peer commands of the FCP front end and the runtime). The peer driver
//! (`peers`, a front end) implements both; the runtime puts it in
//! [`Node::peers`]. This layer never names it.

use crate::config::Config;
use crate::identity::Identity;
use crate::pushes::Pushes;
use crate::requests::Requests;
use crate::util::clock::{Clock, SystemClock};
use lichen_link::policy::PeerInfo;
use lichen_link::NodeRef;
use lichen_routing::{InsertOutcome, Key, KeyKind, RequestOutcome};
use lichen_store::{BlockStore, Budgets, OpenOutcome, SledStore, StoreConfig, StoreSecret};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

pub(crate) use crate::util::clock::now_ms;

/// A network call's future (boxed: [`Network`] and [`Peers`] are used as
/// trait objects).
pub(crate) type NetFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A fetch's outcome.
pub(crate) type Fetched<'a> = NetFuture<'a, Result<RequestOutcome, Stopped>>;

/// An insert's outcome.
pub(crate) type Inserted<'a> = NetFuture<'a, Result<InsertOutcome, Stopped>>;

/// The network has stopped (shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the network is not running")]
pub struct Stopped;

/// Why a friend could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddFriendError {
    /// The peer policy refused it (this node's own noderef, already a
    /// friend, the list is full).
    #[error(transparent)]
    Refused(#[from] lichen_link::policy::AddFriendError),
    /// The network has stopped.
    #[error("the network is not running")]
    Stopped,
    /// The inviting node did not take the invitation: it could not be
    /// reached in time, or refused it.
    #[error("the inviting node could not be reached, or refused the invitation (already used, expired, or made before that node restarted)")]
    InvitationRefused,
}

/// The network as operations and jobs use it: fetch and insert one block.
/// The peer driver implements it.
pub(crate) trait Network: Send + Sync {
    /// Fetch a block for this node's user: `local_first` looks in the
    /// stores first (false: FCP `IgnoreDS`), `keep` keeps a block found in
    /// the network in the private client cache.
    fn fetch(&self, key: Key, kind: KeyKind, local_first: bool, keep: bool) -> Fetched<'_>;

    /// Insert a block into the network.
    fn insert(&self, key: Key, kind: KeyKind, block: Vec<u8>) -> Inserted<'_>;
}

/// The peer commands the FCP front end (`AddPeer`, `RemovePeer`,
/// `ListPeers`, `GetNode`) and the runtime (shutdown) need. The peer
/// driver implements it.
pub(crate) trait Peers: Network + std::fmt::Debug {
    /// This, as the network operations use.
    fn network(&self) -> &dyn Network;

    /// Peers connected after the driver's last step (no round trip).
    fn connected(&self) -> usize;

    /// The routing core's counters after the driver's last step.
    fn stats(&self) -> lichen_routing::Stats;

    /// Whether peers can open links to this node (their dial-backs).
    fn reachability(&self) -> lichen_link::policy::Reachability;

    /// The port mapping the home router granted, if any.
    fn port_mapping(&self) -> Option<crate::status::PortMapping>;

    /// The address the node's noderef names now (it follows the public
    /// or mapped address of a node listening on every interface).
    fn advertised(&self) -> Option<std::net::SocketAddr>;

    /// Add a friend: remembered, dialed, accepted on a darknet node.
    fn add_friend(
        &self,
        noderef: NodeRef,
        bytes: lichen_routing::NoderefBytes,
    ) -> NetFuture<'_, Result<PeerInfo, AddFriendError>>;

    /// Make an invitation valid for `valid`.
    fn invite(
        &self,
        valid: std::time::Duration,
    ) -> NetFuture<
        '_,
        Result<Result<lichen_link::Invitation, lichen_link::policy::InviteError>, Stopped>,
    >;

    /// Use an invitation: both nodes become friends.
    fn redeem(
        &self,
        inv: lichen_link::Invitation,
    ) -> NetFuture<'_, Result<PeerInfo, AddFriendError>>;

    /// Forget a peer (by identity, or by an address of its noderef) and
    /// close its link. `None`: no such peer.
    fn remove<'a>(&'a self, which: &'a str) -> NetFuture<'a, Result<Option<PeerInfo>, Stopped>>;

    /// Remembered and connected peers: friends first.
    fn list(&self) -> NetFuture<'_, Result<Vec<PeerInfo>, Stopped>>;

    /// Done once the driver has stopped and the peer file is written.
    fn stopped(&self) -> NetFuture<'_, ()>;
}

/// The network as [`Node::network`] hands it out: fetch and insert only.
#[derive(Clone, Copy)]
pub(crate) struct NetworkRef<'a>(&'a dyn Network);

impl Network for NetworkRef<'_> {
    fn fetch(&self, key: Key, kind: KeyKind, local_first: bool, keep: bool) -> Fetched<'_> {
        self.0.fetch(key, kind, local_first, keep)
    }

    fn insert(&self, key: Key, kind: KeyKind, block: Vec<u8>) -> Inserted<'_> {
        self.0.insert(key, kind, block)
    }
}

/// The running network, set once (by the runtime, or a test).
#[derive(Debug, Default)]
pub(crate) struct PeersSlot(OnceLock<Box<dyn Peers>>);

impl PeersSlot {
    /// Set the network.
    ///
    /// # Errors
    /// The network given, when one was set already.
    pub(crate) fn set(&self, peers: impl Peers + 'static) -> Result<(), Box<dyn Peers>> {
        self.0.set(Box::new(peers))
    }

    /// The network, once set.
    pub(crate) fn get(&self) -> Option<&dyn Peers> {
        self.0.get().map(AsRef::as_ref)
    }
}

/// Everything the node's services share.
#[derive(Debug)]
pub struct Node {
    /// Effective configuration.
    pub(crate) config: Config,
    /// Data directory.
    pub(crate) data_dir: PathBuf,
    /// Node identity.
    pub(crate) identity: Identity,
    /// What everything at rest is sealed under.
    pub(crate) vault: crate::vault::Vault,
    /// The datastore.
    pub(crate) store: Arc<dyn BlockStore>,
    /// FCP requests (connection, reboot and forever persistence).
    pub(crate) requests: Requests,
    /// Inserts made without peers, waiting to be pushed into the network.
    pub(crate) pushes: Pushes,
    /// The node's wall clock.
    pub(crate) clock: Arc<dyn Clock>,
    /// When the node started (ms since epoch).
    pub(crate) started_ms: u64,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// The network, once it is started (`run`); unset for a node without
    /// a network (tests that open a node directly).
    pub(crate) peers: PeersSlot,
    /// The settings as changed since the start (`ModifyConfig`): what the
    /// config file says now. `config` stays what the node started with.
    settings: std::sync::Mutex<Config>,
    /// Where changed settings are written.
    pub(crate) config_file: PathBuf,
    /// The bandwidth limits every link shares; changed at once.
    pub(crate) bandwidth: Arc<lichen_link::Bandwidth>,
    /// The links' traffic over the last hour (`sample_traffic`).
    traffic: std::sync::Mutex<crate::status::TrafficHistory>,
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
    /// The highest HTL, as received, at which this node's routing core
    /// stores an insert (15; a test network's every HTL): an insert of
    /// ours that ends `RouteNotFound` with more left was stored nowhere.
    pub(crate) fn insert_store_htl(&self) -> u8 {
        let mut c = lichen_routing::Config::default();
        self.config.network.set_htl_margins(&mut c);
        c.insert_store_htl()
    }

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
        // First, before anything in the data directory changes: a node
        // sealed under a passphrase that was not given (or was wrong)
        // stops here and touches nothing.
        let (identity, created) = Identity::load_or_create(&data_dir, config.passphrase.as_ref())?;
        let vault = identity.vault();
        // Only the node's user may look inside (the files are sealed, but
        // their names, sizes and times are not).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) =
                std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            {
                tracing::warn!("cannot make the data directory private (mode 0700): {e}");
            }
        }
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
        let requests =
            Requests::open(&data_dir, vault.clone()).map_err(|source| StartError::Io {
                what: "cannot open the persistent request queue".into(),
                source,
            })?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let pushes =
            Pushes::open_with(&data_dir, vault.clone(), clock.clone()).map_err(|source| {
                StartError::Io {
                    what: "cannot open the list of inserts waiting to be pushed".into(),
                    source,
                }
            })?;
        let config_file = config
            .file
            .clone()
            .unwrap_or_else(|| data_dir.join(crate::settings::FILE_NAME));
        let bandwidth = Arc::new(lichen_link::Bandwidth::new(
            config.network.upload_limit,
            config.network.download_limit,
        ));
        Ok(Arc::new(Node {
            settings: std::sync::Mutex::new(config.clone()),
            config_file,
            bandwidth,
            traffic: std::sync::Mutex::default(),
            config,
            data_dir,
            identity,
            vault,
            store,
            requests,
            pushes,
            started_ms: clock.now_ms(),
            clock,
            shutdown: CancellationToken::new(),
            peers: PeersSlot::default(),
        }))
    }

    /// The bandwidth limits in effect: the token buckets every link
    /// shares.
    #[must_use]
    pub fn bandwidth(&self) -> &lichen_link::Bandwidth {
        &self.bandwidth
    }

    /// Note the links' byte totals now in the traffic history.
    pub(crate) fn sample_traffic(&self) {
        let (sent, received) = (
            self.bandwidth.upload.total(),
            self.bandwidth.download.total(),
        );
        self.traffic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(self.clock.now_ms(), sent, received);
    }

    /// The traffic of the last hour: each minute's (seconds before the
    /// last sample, bytes a second sent, received), oldest first.
    #[must_use]
    pub(crate) fn traffic_rates(&self) -> Vec<(u64, u64, u64)> {
        self.traffic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .rates()
    }

    /// The settings now: as started, with the changes made since.
    #[must_use]
    pub(crate) fn settings(&self) -> Config {
        self.settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Change settings (name, value; `settings::modify`): all or none,
    /// written into the config file, and the bandwidth limits applied at
    /// once. Returns the settings now.
    ///
    /// # Errors
    /// What was wrong (nothing changed).
    pub(crate) async fn modify_settings(
        self: &Arc<Self>,
        changes: Vec<(String, String)>,
    ) -> Result<Config, crate::settings::SettingsError> {
        let node = self.clone();
        let changed = tokio::task::spawn_blocking(move || {
            // Held across the file's rewrite: one change at a time.
            let mut now = node
                .settings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let new = crate::settings::modify(&now, &node.config_file, &changes)?;
            node.bandwidth.upload.set_rate(new.network.upload_limit);
            node.bandwidth.download.set_rate(new.network.download_limit);
            *now = new.clone();
            Ok(new)
        })
        .await;
        changed.unwrap_or_else(|e| {
            Err(crate::settings::SettingsError::File {
                path: self.config_file.clone(),
                why: format!("the change stopped: {e}"),
            })
        })
    }

    /// Peers connected now (0 without a network).
    #[must_use]
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.get().map_or(0, Peers::connected)
    }

    /// The network, when it is started and has peers.
    #[must_use]
    pub(crate) fn network(&self) -> Option<NetworkRef<'_>> {
        self.peers
            .get()
            .filter(|p| p.connected() > 0)
            .map(|p| NetworkRef(p.network()))
    }

    /// Directory for temporary spool files (emptied at start).
    #[must_use]
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// A fresh temporary file path.
    #[must_use]
    pub(crate) fn tmp_path(&self, prefix: &str) -> PathBuf {
        let n: u64 = rand::random();
        self.tmp_dir().join(format!("{prefix}-{n:016x}"))
    }
}

/// What [`wipe`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WipeReport {
    /// Blocks removed from the client cache.
    pub client_blocks: u64,
    /// Persistent request records removed.
    pub requests: u64,
    /// Push records removed.
    pub pushes: u64,
    /// Other files removed (uploads, results, temporary files).
    pub files: u64,
}

/// Wipe what the user of the (stopped) node in `config`'s data directory
/// did: the client cache is emptied (the store opened with a client
/// budget of 0 evicts every client block), and every persistent request
/// record with its upload and result, every push record and every
/// temporary file is removed. The shared store and cache are kept (they
/// hold what other nodes sent, and nothing of the user's).
///
/// # Errors
/// [`StartError`]: the identity does not open (passphrase), or the store
/// is in use (the node is running) or cannot be opened.
pub fn wipe(config: &Config) -> Result<WipeReport, StartError> {
    let data_dir = config.data_dir()?;
    let (identity, _) = Identity::load_or_create(&data_dir, config.passphrase.as_ref())?;
    let mut report = WipeReport::default();
    {
        let (store, open) = store_with(&data_dir, config, &identity, 0)?;
        report.client_blocks = open.evicted_over_budget;
        store.flush()?;
    }
    let remove_all = |dir: &Path, records: &[&str]| -> (u64, u64) {
        let (mut recs, mut files) = (0, 0);
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            if std::fs::remove_file(&path).is_ok() {
                let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
                if records.contains(&ext) {
                    recs += 1;
                } else {
                    files += 1;
                }
            }
        }
        (recs, files)
    };
    let (r, f1) = remove_all(&data_dir.join("requests"), &["rec", "json"]);
    let (p, f2) = remove_all(&data_dir.join("push"), &["push"]);
    let (_, f3) = remove_all(&data_dir.join("tmp"), &[]);
    report.requests = r;
    report.pushes = p;
    report.files = f1 + f2 + f3;
    Ok(report)
}

/// Bytes of the files under `dir` (what `du` would count, roughly).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The store's budgets must fit on the disk: the free space of the data
/// directory's file system plus what the store already takes.
///
/// # Errors
/// [`StartError::Io`] saying how much is asked and how much there is.
fn check_disk_room(data_dir: &Path, config: &Config) -> Result<(), StartError> {
    let s = &config.store;
    let budget = s
        .store_bytes
        .saturating_add(s.cache_bytes)
        .saturating_add(s.client_cache_bytes);
    let Ok(fs) = rustix::fs::statvfs(data_dir) else {
        // Not knowable here (an unusual file system): nothing to check.
        return Ok(());
    };
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    let used = bytes_under(&data_dir.join("store"));
    if budget > free.saturating_add(used) {
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        return Err(StartError::Io {
            what: format!(
                "the store budgets ([store] store_bytes + cache_bytes + client_cache_bytes = {:.2} GiB) are larger than the free disk space ({:.2} GiB) plus what the store already holds ({:.2} GiB); lower them or free some space",
                gib(budget),
                gib(free),
                gib(used)
            ),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        });
    }
    Ok(())
}

fn open_store(
    data_dir: &Path,
    config: &Config,
    identity: &Identity,
) -> Result<Arc<dyn BlockStore>, StartError> {
    check_disk_room(data_dir, config)?;
    let (store, report) = store_with(data_dir, config, identity, config.store.client_cache_bytes)?;
    if report.migrated_blocks > 0 {
        tracing::info!(
            blocks = report.migrated_blocks,
            "the datastore was rewritten in format 3 (no record says which space it is in)"
        );
    }
    if let OpenOutcome::Recreated { .. } = report.outcome {
        tracing::warn!("the datastore was corrupt: moved it aside and started an empty one (it is a cache; identity and requests are kept)");
    }
    Ok(Arc::new(store))
}

/// Open the store with the configured budgets, the client cache's given.
fn store_with(
    data_dir: &Path,
    config: &Config,
    identity: &Identity,
    client_bytes: u64,
) -> Result<(SledStore, lichen_store::OpenReport), StartError> {
    let budgets = Budgets {
        store: config.store.store_bytes,
        cache: config.store.cache_bytes,
        client: client_bytes,
    };
    let mut sc = StoreConfig::new(
        budgets,
        identity.location,
        StoreSecret::from_bytes(identity.store_secret),
    );
    // Blocks are read once per request and verified anyway; the OS page
    // cache serves repeats. A small sled cache keeps the node's RSS low.
    sc.sled_cache_bytes = 16 << 20;
    Ok(SledStore::open(&data_dir.join("store"), &sc)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod settings_tests {
    use super::*;

    /// A changed bandwidth limit is the one the links' buckets use at
    /// once; a change that needs a restart is in the settings and the file
    /// but not in what the node started with; a refused change moves
    /// nothing.
    #[tokio::test]
    async fn bandwidth_limits_change_at_once_and_the_rest_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(Config {
            data_dir: Some(dir.path().to_path_buf()),
            ..Config::default()
        })
        .unwrap();
        assert!(node.bandwidth.upload.is_unlimited());
        let change = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
                .collect::<Vec<_>>()
        };
        let now = node
            .modify_settings(change(&[
                ("node.outputBandwidthLimit", "100KiB"),
                ("node.inputBandwidthLimit", "1MiB"),
                ("node.storeSize", "2GiB"),
            ]))
            .await
            .unwrap();
        assert_eq!(node.bandwidth.upload.rate(), 100 << 10);
        assert_eq!(node.bandwidth.download.rate(), 1 << 20);
        assert_eq!(now.store.store_bytes, 2 << 30);
        assert_eq!(node.settings(), now);
        assert_eq!(node.config.store.store_bytes, 1 << 30);
        let file = dir.path().join(crate::settings::FILE_NAME);
        assert_eq!(Config::load(&file).unwrap().store.store_bytes, 2 << 30);

        let bad = node
            .modify_settings(change(&[
                ("node.outputBandwidthLimit", "0"),
                ("node.clientCacheSize", "0"),
            ]))
            .await;
        assert!(bad.is_err());
        assert_eq!(node.bandwidth.upload.rate(), 100 << 10);
        assert_eq!(node.settings(), now);
    }
}
