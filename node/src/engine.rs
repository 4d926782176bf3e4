//! Glue between FCP requests and the client layer: the node's block
//! source/sink (the private client cache and the store; the network when
//! the node has peers) and the put/get/site operations the FCP server runs.
//!
//! Local inserts and fetches touch only [`Space::Client`] when writing:
//! nothing this node's user inserted or fetched lands in the shared store
//! or cache (DESIGN.md §5), so a neighbour probing this node's store learns
//! nothing about its user.

use crate::node::Node;
use crate::requests::Progress;
use lichen_client::{BlockSink, BlockSource, SinkError, SourceError};
use lichen_crypto::uri::KeyUri;
use lichen_crypto::{BlockKind, FreenetUri, RoutingKey};
use lichen_fcp::{FetchErrorCode, InsertErrorCode};
use lichen_routing::{InsertOutcome, Key, KeyKind, RequestOutcome};
use lichen_store::{Origin, PutOutcome, Space};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Blocks as this node's own user sees them: the private client cache,
/// then the store and cache. Writes go to the client cache only.
#[derive(Debug, Clone)]
pub struct LocalBlocks {
    node: Arc<Node>,
    /// Don't read the local client cache and stores (FCP `IgnoreDS`).
    ignore_ds: bool,
    /// Only the local client cache and stores, not the network (FCP
    /// `DSOnly`).
    ds_only: bool,
    /// Keep blocks fetched from the network in the client cache (FCP
    /// `WriteToClientCache`).
    keep: bool,
    /// Blocks of this insert that are only in the client cache (no peers,
    /// or the network refused them): pushed later (`crate::push`).
    deferred: Option<Arc<Deferred>>,
}

/// The blocks of one insert that did not reach the network.
#[derive(Debug)]
pub struct Deferred {
    node: Arc<Node>,
    inner: std::sync::Mutex<DeferredInner>,
}

#[derive(Debug, Default)]
struct DeferredInner {
    blocks: Vec<(BlockKind, RoutingKey)>,
    seen: std::collections::HashSet<[u8; 32]>,
    bytes: u64,
    overflow: bool,
}

impl Deferred {
    fn new(node: Arc<Node>) -> Self {
        Deferred {
            node,
            inner: std::sync::Mutex::default(),
        }
    }

    /// Add a block; `false` if the blocks waiting to be pushed (earlier
    /// inserts', running inserts', this one's) no longer fit the client
    /// cache: they would evict each other before being pushed.
    fn add(&self, kind: BlockKind, key: RoutingKey) -> bool {
        let Ok(mut d) = self.inner.lock() else {
            return false;
        };
        if !d.seen.insert(key.0) {
            return true;
        }
        let len = kind.block_len() as u64;
        d.bytes += len;
        d.blocks.push((kind, key));
        let pushes = &self.node.pushes;
        let in_flight = pushes.in_flight.fetch_add(len, Ordering::Relaxed) + len;
        if pushes.pending_bytes() + in_flight > self.node.config.store.client_cache_bytes {
            d.overflow = true;
        }
        !d.overflow
    }

    fn overflowed(&self) -> bool {
        self.inner.lock().map(|d| d.overflow).unwrap_or(false)
    }

    fn take(&self) -> Vec<(BlockKind, RoutingKey)> {
        self.inner
            .lock()
            .map(|mut d| std::mem::take(&mut d.blocks))
            .unwrap_or_default()
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let bytes = self.inner.lock().map(|d| d.bytes).unwrap_or(0);
        self.node
            .pushes
            .in_flight
            .fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl LocalBlocks {
    /// Blocks of `node`.
    #[must_use]
    pub fn new(node: Arc<Node>) -> Self {
        LocalBlocks {
            node,
            ignore_ds: false,
            ds_only: false,
            keep: true,
            deferred: None,
        }
    }

    /// The same blocks, recording in `deferred` what an insert leaves only
    /// in the client cache.
    fn tracking(node: Arc<Node>, deferred: Arc<Deferred>) -> Self {
        LocalBlocks {
            deferred: Some(deferred),
            ..LocalBlocks::new(node)
        }
    }

    /// Keep a block that did not reach the network for the push task.
    fn defer(&self, kind: BlockKind, key: RoutingKey) -> Result<(), SinkError> {
        match &self.deferred {
            Some(d) if !d.add(kind, key) => Err(SinkError::Other(
                "the insert does not fit in the client cache".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl BlockSource for LocalBlocks {
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        if !self.ignore_ds {
            match self.node.store.get(Origin::Local, kind, &key) {
                Ok(Some(found)) => return Ok(found.block),
                Ok(None) => {}
                Err(e) => return Err(SourceError::Other(e.to_string())),
            }
        }
        if self.ds_only {
            return Err(SourceError::NotFound);
        }
        let Some(net) = self.node.network() else {
            // Without peers the network cannot be asked: with IgnoreDS
            // nothing was looked at, so "not found" would claim too much.
            return Err(if self.ignore_ds {
                SourceError::RouteNotFound
            } else {
                SourceError::NotFound
            });
        };
        // The peer manager puts a found block in the private client cache
        // only: nothing fetched for this node's user enters the shared
        // store or cache.
        let opts = crate::net::FetchOpts {
            local_first: !self.ignore_ds,
            keep: self.keep,
        };
        let outcome = net.fetch_with(Key(key.0), key_kind(kind), opts).await;
        match outcome {
            Ok(RequestOutcome::Found(block)) => Ok(block),
            Ok(RequestOutcome::NotFound | RequestOutcome::TimedOut) => Err(SourceError::NotFound),
            Ok(RequestOutcome::RouteNotFound) => Err(SourceError::RouteNotFound),
            Ok(RequestOutcome::RecentlyFailed) => Err(SourceError::RecentlyFailed),
            Ok(RequestOutcome::Overloaded) => Err(SourceError::Overload),
            Err(_) => Err(SourceError::NotFound),
        }
    }

    /// The store verifies every block it reads.
    fn has_local(&self, kind: BlockKind, key: &RoutingKey) -> bool {
        !self.ignore_ds && self.node.store.contains(Origin::Local, kind, key)
    }

    fn fetch_local(&self, kind: BlockKind, key: &RoutingKey) -> Option<Vec<u8>> {
        if self.ignore_ds {
            return None;
        }
        // An error is reported by the `fetch` the client falls back to.
        // CHKs are not re-hashed: the client opens them with their AEAD
        // key (see `BlockSource::fetch_local`), and a block that does not
        // open sends it to `fetch`, which verifies (and deletes a bad one).
        let found = match kind {
            BlockKind::Chk => self.node.store.read(Origin::Local, kind, key),
            BlockKind::Ssk => self.node.store.get(Origin::Local, kind, key),
        };
        Some(found.ok()??.block)
    }
}

fn key_kind(kind: BlockKind) -> KeyKind {
    match kind {
        BlockKind::Chk => KeyKind::Chk,
        BlockKind::Ssk => KeyKind::Ssk,
    }
}

/// Tries of a network insert the routing node refused as overloaded.
const INSERT_TRIES: u32 = 4;

impl LocalBlocks {
    /// Keep a block the client library has just encoded in the private
    /// client cache (trusted: its routing key was computed from it).
    fn store_local(
        &self,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Result<(), SinkError> {
        match self.node.store.put_trusted(Space::Client, kind, key, block) {
            Ok(PutOutcome::Collision) => Err(SinkError::Collision),
            Ok(PutOutcome::NoRoom) => Err(SinkError::Other(
                "the client cache is smaller than one block".into(),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(SinkError::Other(e.to_string())),
        }
    }
}

impl BlockSink for LocalBlocks {
    /// With no peers, the local copy is the whole put.
    fn put_local(
        &self,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Option<Result<(), SinkError>> {
        if self.node.network().is_some() {
            return None;
        }
        // Kept locally and recorded for the push task, exactly as `put`
        // does without peers (the record is what makes it reach the
        // network later).
        Some(
            self.store_local(kind, key, block)
                .and_then(|()| self.defer(kind, *key)),
        )
    }

    /// With no peers, a segment is one store batch.
    fn put_local_batch(
        &self,
        kind: BlockKind,
        blocks: &[(RoutingKey, Vec<u8>)],
    ) -> Option<Result<(), SinkError>> {
        if kind != BlockKind::Chk || self.node.network().is_some() {
            return None;
        }
        let r = match self.node.store.put_trusted_chk_batch(Space::Client, blocks) {
            Ok(outcomes) if outcomes.contains(&PutOutcome::NoRoom) => Err(SinkError::Other(
                "the client cache is smaller than one block".into(),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(SinkError::Other(e.to_string())),
        };
        // Recorded for the push task, as every block stored without peers.
        Some(r.and_then(|()| {
            blocks
                .iter()
                .try_for_each(|(key, _)| self.defer(kind, *key))
        }))
    }

    async fn put(&self, kind: BlockKind, key: RoutingKey, block: Vec<u8>) -> Result<(), SinkError> {
        // The local copy first: a failed network insert never loses it.
        self.store_local(kind, &key, &block)?;
        let Some(net) = self.node.network() else {
            return self.defer(kind, key);
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = net.insert(Key(key.0), key_kind(kind), block.clone()).await;
            return match outcome {
                // An insert that ran out of peers is stored on every node it
                // reached: in a small network that is the normal end.
                Ok(InsertOutcome::Success | InsertOutcome::RouteNotFound { .. }) => Ok(()),
                Ok(InsertOutcome::Collision(_)) => Err(SinkError::Collision),
                Ok(InsertOutcome::Overloaded) if tries < INSERT_TRIES => {
                    tokio::time::sleep(std::time::Duration::from_millis(100 << tries)).await;
                    continue;
                }
                // The local copy stays; when the insert is tracked, the
                // push task sends it later.
                Ok(InsertOutcome::Overloaded) if self.deferred.is_some() => self.defer(kind, key),
                Ok(InsertOutcome::Overloaded) => Err(SinkError::Overload),
                Ok(InsertOutcome::TimedOut) if self.deferred.is_some() => self.defer(kind, key),
                Ok(InsertOutcome::TimedOut) => {
                    Err(SinkError::Other("the network insert timed out".into()))
                }
                Ok(InsertOutcome::InvalidBlock) => {
                    Err(SinkError::Other("the block does not verify".into()))
                }
                // The manager stopped (shutdown): the local copy stays.
                Err(_) => self.defer(kind, key),
            };
        }
    }
}

/// Where a put's data comes from.
#[derive(Debug, Clone)]
pub enum PutData {
    /// `len` bytes of a file from `offset`.
    File {
        /// The file.
        path: PathBuf,
        /// Start offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// No data (an empty file).
    Empty,
    /// A redirect to another URI.
    Redirect(String),
    /// A direct upload still arriving on its FCP connection: the insert
    /// reads it as it comes (no spool file).
    Stream(UploadStream),
}

/// The receiving end of a direct upload: `len` bytes in chunks, in order.
/// Taken once (the insert reads it); clones share it.
#[derive(Debug, Clone)]
pub struct UploadStream {
    rx: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<tokio_util::bytes::Bytes>>>>,
    /// Bytes announced (`DataLength`).
    pub len: u64,
}

impl UploadStream {
    /// A stream of `len` bytes fed through `rx`.
    #[must_use]
    pub fn new(rx: tokio::sync::mpsc::Receiver<tokio_util::bytes::Bytes>, len: u64) -> Self {
        UploadStream {
            rx: Arc::new(std::sync::Mutex::new(Some(rx))),
            len,
        }
    }

    /// A blocking reader of the bytes (`None` if already taken). It reads
    /// an error if the stream ends short (the connection went away).
    fn reader(&self) -> Option<UploadReader> {
        let rx = self.rx.lock().ok()?.take()?;
        Some(UploadReader {
            rx,
            chunk: tokio_util::bytes::Bytes::new(),
            pos: 0,
            left: self.len,
        })
    }
}

/// [`UploadStream`] as a `Read` (for a blocking thread: it waits for the
/// next chunk).
struct UploadReader {
    rx: tokio::sync::mpsc::Receiver<tokio_util::bytes::Bytes>,
    chunk: tokio_util::bytes::Bytes,
    pos: usize,
    left: u64,
}

impl std::io::Read for UploadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.left == 0 {
                return Ok(0);
            }
            // `unconstrained`: this thread is inside the runtime's `block_on`,
            // whose cooperative budget would never be refilled here, so a
            // budgeted channel would report Pending forever (a busy loop).
            match futures::executor::block_on(tokio::task::unconstrained(self.rx.recv())) {
                Some(c) if c.len() as u64 <= self.left => {
                    self.left -= c.len() as u64;
                    self.chunk = c;
                    self.pos = 0;
                }
                Some(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the upload is longer than its DataLength",
                    ))
                }
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upload ended before its DataLength (connection closed?)",
                    ))
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An FCP ClientPut, as the engine needs it.
#[derive(Debug, Clone)]
pub struct PutSpec {
    /// Target URI (CHK@, SSK@…, KSK@…, USK@…).
    pub uri: String,
    /// The data.
    pub data: PutData,
    /// MIME type.
    pub mime: Option<String>,
    /// Don't compress.
    pub dont_compress: bool,
    /// Only compute the URI.
    pub chk_only: bool,
    /// File name appended to a CHK URI.
    pub target_filename: Option<String>,
}

/// One file of a site insert.
#[derive(Debug, Clone)]
pub struct SiteFile {
    /// Path inside the site.
    pub name: String,
    /// Content.
    pub data: PutData,
    /// MIME type (guessed from the name when absent).
    pub mime: Option<String>,
}

/// An FCP ClientGet, as the engine needs it.
#[derive(Debug, Clone)]
pub struct GetSpec {
    /// URI to fetch.
    pub uri: String,
    /// Largest document accepted.
    pub max_size: Option<u64>,
    /// Where to write the data (`None`: discard).
    pub out: Option<PathBuf>,
    /// Write `out` sealed under this key (a temporary file: see
    /// [`crate::sealed`]).
    pub seal: Option<crate::sealed::SealKey>,
    /// Only the local store.
    pub ds_only: bool,
    /// Skip the local store.
    pub ignore_ds: bool,
    /// FCP MaxRetries (-1 forever).
    pub retries: i32,
    /// Keep the blocks fetched from the network in the client cache (FCP
    /// `WriteToClientCache`): a later fetch of the same document, or a
    /// retry of a failed one, finds them there.
    pub write_client_cache: bool,
}

/// A completed fetch.
#[derive(Debug, Clone)]
pub struct GetDone {
    /// MIME type.
    pub mime: String,
    /// Bytes written.
    pub len: u64,
    /// The data went to the [`StreamOpen`] writer, not to `GetSpec::out`.
    pub streamed: bool,
}

/// Offered the document's size and MIME type once it is found, and whether
/// every block still needed is local: returns a writer to stream the data
/// to while it is decoded (`None`: write to `GetSpec::out` as usual). A
/// fetch that fails after this has written part of the document to it.
pub type StreamOpen = Box<dyn FnOnce(u64, &str, bool) -> Option<Box<dyn Write + Send>> + Send>;

/// A failed request, in FCP terms.
#[derive(Debug, Clone)]
pub struct Failure<C> {
    /// Freenet's code.
    pub code: C,
    /// Detail for the client.
    pub extra: Option<String>,
    /// For a permanent redirect: the new URI.
    pub redirect: Option<String>,
}

impl<C> Failure<C> {
    fn new(code: C, extra: impl Into<String>) -> Self {
        Failure {
            code,
            extra: Some(extra.into()),
            redirect: None,
        }
    }
}

/// Progress callback type.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);
/// URI callback type.
pub type UriFn<'a> = &'a (dyn Fn(String) + Send + Sync);

/// Walk a directory for ClientPutDiskDir: [`lichen_client::folder::scan`],
/// the scan `lichen putsite` uses too (regular files, hidden ones only if
/// asked, no symbolic links), each file labelled by its guessed MIME type.
///
/// # Errors
/// A message naming the unreadable path.
pub async fn scan_dir(dir: &Path, include_hidden: bool) -> Result<Vec<SiteFile>, String> {
    let dir = dir.to_path_buf();
    let files =
        tokio::task::spawn_blocking(move || lichen_client::folder::scan(&dir, include_hidden))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    Ok(files
        .into_iter()
        .map(|f| SiteFile {
            name: f.name,
            data: PutData::File {
                path: f.path,
                offset: 0,
                len: f.len,
            },
            mime: f.mime.map(str::to_owned),
        })
        .collect())
}

/// USK editions probed past the one asked for.
const USK_PROBES: u32 = 12;

fn runtime() -> tokio::runtime::Handle {
    tokio::runtime::Handle::current()
}

fn open_range(path: &Path, offset: u64, len: u64) -> std::io::Result<impl std::io::Read + Send> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, f.take(len)))
}

fn insert_failure(e: &lichen_client::InsertError) -> Failure<InsertErrorCode> {
    let code = InsertErrorCode::from_code(u32::from(e.fcp_code()))
        .unwrap_or(InsertErrorCode::InternalError);
    Failure::new(code, e.to_string())
}

fn fetch_failure(e: lichen_client::FetchError) -> Failure<FetchErrorCode> {
    let code =
        FetchErrorCode::from_code(u32::from(e.fcp_code())).unwrap_or(FetchErrorCode::InternalError);
    let redirect = match &e {
        lichen_client::FetchError::PermanentRedirect { new_uri } => Some(new_uri.to_string()),
        _ => None,
    };
    Failure {
        code,
        extra: Some(e.to_string()),
        redirect,
    }
}

/// For a USK insert target: the edition to insert (the one asked for, or
/// the one after the newest already there).
async fn usk_target(source: &LocalBlocks, uri: FreenetUri) -> FreenetUri {
    if let KeyUri::Usk { .. } = uri.key {
        if let Ok(next) = lichen_client::usk::next_edition(source, &uri, USK_PROBES).await {
            return uri.with_edition(i64::try_from(next).unwrap_or(i64::MAX));
        }
    }
    uri
}

/// Make the store durable before an insert is acknowledged.
async fn flush_store(node: &Arc<Node>) -> Result<(), Failure<InsertErrorCode>> {
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || store.flush())
        .await
        .map_err(|e| Failure::new(InsertErrorCode::InternalError, e.to_string()))?
        .map_err(|e| {
            Failure::new(
                InsertErrorCode::BucketError,
                format!("the store could not be flushed: {e}"),
            )
        })
}

/// A finished insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutDone {
    /// The request URI.
    pub uri: String,
    /// Every block reached the network. `false`: some are only in the
    /// client cache and the push task sends them once the node has peers.
    pub in_network: bool,
}

/// Blocks an insert of `len` bytes makes at most: data blocks, as many FEC
/// check blocks, and the metadata listing them (before compression, so an
/// upper bound).
#[must_use]
pub fn estimate_blocks(len: u64) -> u64 {
    let data = len.div_ceil(32 * 1024).max(1);
    if data == 1 {
        2
    } else {
        2 * data + (2 * data).div_ceil(256) + 4
    }
}

/// Client cache bytes an insert may leave unpushed: the budget less what
/// earlier inserts waiting to be pushed hold.
fn push_room(node: &Node) -> u64 {
    node.config
        .store
        .client_cache_bytes
        .saturating_sub(node.pushes.pending_bytes() + node.pushes.in_flight.load(Ordering::Relaxed))
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / f64::from(1u32 << 20))
}

/// The PutFailed of an insert that cannot be kept in the client cache
/// until it is pushed.
fn too_big_for_cache(node: &Node, need: u64) -> Failure<InsertErrorCode> {
    let budget = node.config.store.client_cache_bytes;
    let pending = node.pushes.pending_bytes();
    let held = if pending > 0 {
        format!(
            " ({} of it hold earlier inserts waiting to be pushed)",
            mib(pending)
        )
    } else {
        String::new()
    };
    Failure::new(
        InsertErrorCode::TooBig,
        format!(
            "this node has no peers, so an insert is kept only in its client cache until it can be pushed into the network, \
             and this one does not fit: it needs about {} (data and redundancy blocks), the client cache is {}{held}. \
             Raise client_cache_bytes in the [store] section of the node's config file (e.g. client_cache_bytes = \"8GiB\"), \
             or insert it once the node has peers",
            mib(need),
            mib(budget)
        ),
    )
}

/// Without peers every block of an insert must fit the client cache until
/// it is pushed: refuse one that cannot, before doing the work.
fn check_room(node: &Node, len: u64, extra_blocks: u64) -> Result<(), Failure<InsertErrorCode>> {
    if node.network().is_some() {
        return Ok(());
    }
    let need = (estimate_blocks(len) + extra_blocks) * BlockKind::Chk.block_len() as u64;
    if need > push_room(node) {
        return Err(too_big_for_cache(node, need));
    }
    Ok(())
}

/// After an insert: make it durable and record what must still be pushed.
/// Returns whether everything reached the network.
async fn finish_insert(
    node: &Arc<Node>,
    deferred: &Deferred,
    request: Option<crate::push::RequestRef>,
) -> Result<bool, Failure<InsertErrorCode>> {
    flush_store(node).await?;
    let blocks = deferred.take();
    if blocks.is_empty() {
        return Ok(true);
    }
    tracing::info!(
        "insert stored in the local client cache; not yet in the network ({} block(s) to push once the node has peers)",
        blocks.len()
    );
    node.pushes.add(request, blocks).map_err(|e| {
        Failure::new(
            InsertErrorCode::BucketError,
            format!("cannot record the insert for pushing into the network: {e}"),
        )
    })?;
    Ok(false)
}

/// Run a ClientPut. Returns the request URI.
///
/// # Errors
/// A [`Failure`] with Freenet's InsertException code.
pub async fn put(
    node: &Arc<Node>,
    spec: PutSpec,
    uri_generated: UriFn<'_>,
    progress: ProgressFn<'_>,
) -> Result<String, Failure<InsertErrorCode>> {
    put_with(node, spec, None, uri_generated, progress)
        .await
        .map(|d| d.uri)
}

/// Run a ClientPut for `request`. An insert that did not fully reach the
/// network is recorded for the push task (which marks `request` in the
/// network when done).
///
/// # Errors
/// A [`Failure`] with Freenet's InsertException code; code 14 (too big)
/// when the node has no peers and the insert does not fit its client
/// cache.
pub async fn put_with(
    node: &Arc<Node>,
    spec: PutSpec,
    request: Option<crate::push::RequestRef>,
    uri_generated: UriFn<'_>,
    progress: ProgressFn<'_>,
) -> Result<PutDone, Failure<InsertErrorCode>> {
    let target = FreenetUri::parse(&spec.uri)
        .map_err(|e| Failure::new(InsertErrorCode::InvalidUri, e.to_string()))?;
    if !spec.chk_only {
        if let PutData::File { len, .. } | PutData::Stream(UploadStream { len, .. }) = &spec.data {
            check_room(node, *len, 0)?;
        }
    }
    let deferred = Arc::new(Deferred::new(node.clone()));
    let blocks = LocalBlocks::tracking(node.clone(), deferred.clone());
    let target = {
        let blocks = blocks.clone();
        let handle = runtime();
        tokio::task::spawn_blocking(move || handle.block_on(usk_target(&blocks, target)))
            .await
            .map_err(|e| Failure::new(InsertErrorCode::InternalError, e.to_string()))?
    };
    let filename = spec
        .target_filename
        .clone()
        .filter(|f| !f.is_empty())
        .or_else(|| target.meta.first().cloned());
    let mut target = target;
    if matches!(target.key, KeyUri::ChkInsert) {
        target.meta.clear();
    }
    let opts = lichen_client::InsertOptions {
        target,
        mime: spec.mime.clone(),
        compress: !spec.dont_compress,
        filename: if matches!(spec.data, PutData::Redirect(_)) {
            None
        } else {
            filename
        },
        ..lichen_client::InsertOptions::default()
    };
    let size = match &spec.data {
        PutData::File { len, .. } | PutData::Stream(UploadStream { len, .. }) => *len,
        _ => 0,
    };
    let blocks_total = size.div_ceil(32 * 1024).max(1) * 2;
    progress(Progress {
        total: blocks_total,
        required: blocks_total,
        succeeded: 0,
        failed: 0,
        finalized: false,
    });
    let chk_only = spec.chk_only;
    let data = spec.data.clone();
    let handle = runtime();
    let result = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            match data {
                PutData::File { path, offset, len } => {
                    let reader = open_range(&path, offset, len).map_err(|e| {
                        Failure::new(
                            InsertErrorCode::BucketError,
                            format!("cannot read the upload: {e}"),
                        )
                    })?;
                    run_insert(&blocks, chk_only, reader, &opts).await
                }
                PutData::Stream(s) => {
                    let reader = s.reader().ok_or_else(|| {
                        Failure::new(InsertErrorCode::BucketError, "the upload was already read")
                    })?;
                    run_insert(&blocks, chk_only, reader, &opts).await
                }
                PutData::Empty => run_insert(&blocks, chk_only, std::io::empty(), &opts).await,
                PutData::Redirect(target) => {
                    FreenetUri::parse(&target).map_err(|e| {
                        Failure::new(InsertErrorCode::InvalidUri, format!("TargetURI: {e}"))
                    })?;
                    let meta =
                        lichen_client::Metadata::Redirect(lichen_client::metadata::Redirect {
                            target,
                            mime: opts.mime.clone(),
                            size: None,
                            sha256: None,
                        });
                    insert_metadata(&blocks, chk_only, &meta.to_bytes(), &opts.target)
                        .await
                        .map(|uri| lichen_client::InsertResult {
                            uri,
                            insert_uri: None,
                            size: 0,
                            compressed_size: 0,
                            codec: lichen_crypto::Codec::None,
                            sha256: [0; 32],
                            mime: opts.mime.clone(),
                            blocks: 1,
                        })
                }
            }
        })
    })
    .await
    .map_err(|e| Failure::new(InsertErrorCode::InternalError, e.to_string()))?;
    let result = match result {
        Err(_) if deferred.overflowed() => {
            return Err(too_big_for_cache(
                node,
                deferred.inner.lock().map(|d| d.bytes).unwrap_or(0),
            ))
        }
        r => r?,
    };
    let uri = result.uri.to_string();
    uri_generated(uri.clone());
    let in_network = if chk_only {
        false
    } else {
        finish_insert(node, &deferred, request).await?
    };
    progress(Progress {
        total: result.blocks,
        required: result.blocks,
        succeeded: result.blocks,
        failed: 0,
        finalized: true,
    });
    Ok(PutDone { uri, in_network })
}

/// Insert a small metadata document (a redirect) as the single block of
/// `target`.
async fn insert_metadata(
    blocks: &LocalBlocks,
    chk_only: bool,
    bytes: &[u8],
    target: &FreenetUri,
) -> Result<FreenetUri, Failure<InsertErrorCode>> {
    use lichen_crypto::{chk, DataFlags};
    let flags = DataFlags {
        metadata: true,
        codec: lichen_crypto::Codec::None,
    };
    let too_big =
        |e: lichen_crypto::BlockError| Failure::new(InsertErrorCode::InternalError, e.to_string());
    let (kind, key, block, uri) = if let Some((private, docname)) = target.key.ssk_insert_target() {
        let (rk, block) = private.encode(&docname, bytes, flags).map_err(too_big)?;
        (BlockKind::Ssk, rk, block, target.to_request())
    } else if matches!(target.key, KeyUri::ChkInsert) {
        let (k, block) = chk::encode(bytes, flags).map_err(too_big)?;
        (BlockKind::Chk, k.routing_key, block, FreenetUri::from(&k))
    } else {
        return Err(Failure::new(
            InsertErrorCode::InvalidUri,
            "a redirect can be inserted under CHK@, an SSK/USK insert URI or a KSK",
        ));
    };
    if !chk_only {
        blocks.put(kind, key, block).await.map_err(|e| match e {
            SinkError::Collision => Failure::new(
                InsertErrorCode::Collision,
                "a different document already exists under this key",
            ),
            other => Failure::new(InsertErrorCode::InternalError, other.to_string()),
        })?;
    }
    Ok(uri)
}

async fn run_insert<R: std::io::Read + Send>(
    blocks: &LocalBlocks,
    chk_only: bool,
    reader: R,
    opts: &lichen_client::InsertOptions,
) -> Result<lichen_client::InsertResult, Failure<InsertErrorCode>> {
    let r = if chk_only {
        lichen_client::insert(&lichen_client::NullSink, reader, opts).await
    } else {
        lichen_client::insert(blocks, reader, opts).await
    };
    r.map_err(|e| insert_failure(&e))
}

/// Run a ClientGet.
///
/// # Errors
/// A [`Failure`] with Freenet's FetchException code (27 with the new URI
/// when a newer USK edition is known).
pub async fn get(
    node: &Arc<Node>,
    spec: GetSpec,
    progress: ProgressFn<'_>,
) -> Result<GetDone, Failure<FetchErrorCode>> {
    get_streaming(node, spec, None, progress).await
}

/// [`get`], streaming the data to the writer `stream` gives (see
/// [`StreamOpen`]).
///
/// # Errors
/// As [`get`].
pub async fn get_streaming(
    node: &Arc<Node>,
    spec: GetSpec,
    stream: Option<StreamOpen>,
    progress: ProgressFn<'_>,
) -> Result<GetDone, Failure<FetchErrorCode>> {
    let uri = FreenetUri::parse(&spec.uri)
        .map_err(|e| Failure::new(FetchErrorCode::InvalidUri, e.to_string()))?;
    let mut blocks = LocalBlocks::new(node.clone());
    blocks.ignore_ds = spec.ignore_ds;
    blocks.ds_only = spec.ds_only && !spec.ignore_ds;
    blocks.keep = spec.write_client_cache;
    // A CHK written by other software (e.g. a Freenet CHK) has a routing key
    // like any other: look for it, and only if a block is there say that
    // Lichen cannot decode it.
    if let KeyUri::Chk { routing_key, .. } = &uri.key {
        if let Err(e) = uri.key.chk_key() {
            return Err(match blocks.fetch(BlockKind::Chk, *routing_key).await {
                Ok(_) => Failure::new(
                    FetchErrorCode::InvalidUri,
                    format!("a block exists under this key, but {e}"),
                ),
                Err(_) => Failure::new(FetchErrorCode::DataNotFound, "Data not found"),
            });
        }
    }
    let opts = lichen_client::FetchOptions {
        max_size: spec.max_size.unwrap_or(u64::MAX),
        usk_probes: if matches!(uri.key, KeyUri::Usk { .. }) {
            USK_PROBES
        } else {
            0
        },
        ..lichen_client::FetchOptions::default()
    };
    let out = spec.out.clone();
    let part = out.as_ref().map(|p| {
        let mut s = p.clone().into_os_string();
        s.push(".part");
        PathBuf::from(s)
    });
    let handle = runtime();
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<lichen_client::Progress>();
    let part2 = part.clone();
    let seal = spec.seal.clone();
    let streamed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streamed2 = streamed.clone();
    let job = tokio::task::spawn_blocking(move || {
        let progress_cb = move |p: lichen_client::Progress| {
            let _ = ptx.send(p);
        };
        // The output: the caller's stream if it takes this document, else
        // the `.part` file (renamed at the end), else nowhere.
        let open = move |found: &lichen_client::Found| -> std::io::Result<Box<dyn Write + Send>> {
            let mime = found.mime.as_deref().unwrap_or("application/octet-stream");
            if let Some(w) = stream.and_then(|s| s(found.size, mime, found.local)) {
                streamed2.store(true, Ordering::Relaxed);
                return Ok(w);
            }
            match &part2 {
                Some(p) => {
                    let f = std::fs::File::create(p).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("cannot create the output file: {e}"))
                    })?;
                    let f = std::io::BufWriter::with_capacity(1 << 20, f);
                    Ok(match &seal {
                        Some(k) => Box::new(crate::sealed::SealedWriter::new(f, k)),
                        None => Box::new(f),
                    })
                }
                None => Ok(Box::new(std::io::sink())),
            }
        };
        handle.block_on(async {
            lichen_client::fetch_to(&blocks, &uri, open, &opts, progress_cb)
                .await
                .map_err(fetch_failure)
        })
    });
    while let Some(p) = prx.recv().await {
        progress(Progress {
            total: p.total,
            required: p.needed,
            succeeded: p.done,
            failed: 0,
            finalized: true,
        });
    }
    let res = job
        .await
        .unwrap_or_else(|e| Err(Failure::new(FetchErrorCode::InternalError, e.to_string())));
    let streamed = streamed.load(Ordering::Relaxed);
    let r = match res {
        Ok(r) => r,
        Err(f) => {
            if let Some(p) = part {
                let _ = std::fs::remove_file(p);
            }
            return Err(f);
        }
    };
    // A streamed document never touched the `.part` file.
    if let (false, Some(part), Some(out)) = (streamed, part, out) {
        std::fs::rename(&part, &out).map_err(|e| {
            Failure::new(
                FetchErrorCode::BucketError,
                format!("cannot write the output file: {e}"),
            )
        })?;
    }
    Ok(GetDone {
        mime: r.mime.unwrap_or_else(|| "application/octet-stream".into()),
        len: r.size,
        streamed,
    })
}

/// Insert a site (ClientPutComplexDir / ClientPutDiskDir). Under a USK the
/// next edition is inserted and unchanged files of the previous edition
/// are reused.
///
/// # Errors
/// A [`Failure`] with Freenet's InsertException code.
pub async fn put_site(
    node: &Arc<Node>,
    uri: &str,
    files: Vec<SiteFile>,
    default_name: Option<String>,
    uri_generated: UriFn<'_>,
    progress: ProgressFn<'_>,
) -> Result<String, Failure<InsertErrorCode>> {
    put_site_with(
        node,
        uri,
        files,
        default_name,
        None,
        uri_generated,
        progress,
    )
    .await
    .map(|d| d.uri)
}

/// [`put_site`] for `request`, recording what did not reach the network
/// for the push task (as [`put_with`]).
///
/// # Errors
/// A [`Failure`] with Freenet's InsertException code.
pub async fn put_site_with(
    node: &Arc<Node>,
    uri: &str,
    files: Vec<SiteFile>,
    default_name: Option<String>,
    request: Option<crate::push::RequestRef>,
    uri_generated: UriFn<'_>,
    progress: ProgressFn<'_>,
) -> Result<PutDone, Failure<InsertErrorCode>> {
    let target = FreenetUri::parse(uri)
        .map_err(|e| Failure::new(InsertErrorCode::InvalidUri, e.to_string()))?;
    let total: u64 = files
        .iter()
        .map(|f| match &f.data {
            PutData::File { len, .. } => *len,
            _ => 0,
        })
        .sum();
    check_room(node, total, 2 * files.len() as u64)?;
    let deferred = Arc::new(Deferred::new(node.clone()));
    let blocks = LocalBlocks::tracking(node.clone(), deferred.clone());
    let (target, previous) = {
        let blocks = blocks.clone();
        let handle = runtime();
        tokio::task::spawn_blocking(move || {
            handle.block_on(async move {
                let target = usk_target(&blocks, target).await;
                let previous = match &target.key {
                    KeyUri::Usk { edition, .. } if *edition > 0 => {
                        let prev = target.to_request().with_edition(edition - 1);
                        match lichen_client::fetch_metadata(
                            &blocks,
                            &prev,
                            &lichen_client::FetchOptions::default(),
                        )
                        .await
                        {
                            Ok(Some(lichen_client::Metadata::Manifest(m))) => Some(m),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                (target, previous)
            })
        })
        .await
        .map_err(|e| Failure::new(InsertErrorCode::InternalError, e.to_string()))?
    };
    let mut site_files = Vec::with_capacity(files.len());
    for f in files {
        let data = match f.data {
            PutData::File { path, offset, len } => lichen_client::SiteData::Reader {
                reader: Box::new(open_range(&path, offset, len).map_err(|e| {
                    Failure::new(
                        InsertErrorCode::BucketError,
                        format!("cannot read {}: {e}", f.name),
                    )
                })?),
                sha256: None,
            },
            PutData::Stream(s) => lichen_client::SiteData::Reader {
                reader: Box::new(s.reader().ok_or_else(|| {
                    Failure::new(
                        InsertErrorCode::BucketError,
                        format!("the upload of {} was already read", f.name),
                    )
                })?),
                sha256: None,
            },
            PutData::Empty => lichen_client::SiteData::Bytes(Vec::new()),
            PutData::Redirect(t) => {
                lichen_client::SiteData::Redirect(Box::new(FreenetUri::parse(&t).map_err(|e| {
                    Failure::new(InsertErrorCode::InvalidUri, format!("{}: {e}", f.name))
                })?))
            }
        };
        site_files.push(lichen_client::SiteFile {
            path: f.name,
            mime: f.mime,
            data,
        });
    }
    let n = u64::try_from(site_files.len()).unwrap_or(u64::MAX);
    progress(Progress {
        total: n,
        required: n,
        succeeded: 0,
        failed: 0,
        finalized: true,
    });
    let opts = lichen_client::SiteOptions {
        target,
        default_name,
        previous,
        ..lichen_client::SiteOptions::default()
    };
    let handle = runtime();
    let r = tokio::task::spawn_blocking(move || {
        handle.block_on(async move { lichen_client::insert_site(&blocks, site_files, &opts).await })
    })
    .await
    .map_err(|e| Failure::new(InsertErrorCode::InternalError, e.to_string()))?;
    let r = match r {
        Err(_) if deferred.overflowed() => {
            return Err(too_big_for_cache(
                node,
                deferred.inner.lock().map(|d| d.bytes).unwrap_or(0),
            ))
        }
        r => r.map_err(|e| insert_failure(&e))?,
    };
    let in_network = finish_insert(node, &deferred, request).await?;
    let uri = r.uri.to_string();
    uri_generated(uri.clone());
    progress(Progress {
        total: n,
        required: n,
        succeeded: n,
        failed: 0,
        finalized: true,
    });
    Ok(PutDone { uri, in_network })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::net::{self, peers::PeerManager};
    use std::io::Read;
    use std::time::Duration;

    #[test]
    fn an_upload_stream_reads_whole_and_refuses_short_or_long_ones() {
        use tokio_util::bytes::Bytes;
        let read_all = |chunks: Vec<&'static [u8]>, len: u64| {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            for c in chunks {
                tx.try_send(Bytes::from_static(c)).unwrap();
            }
            drop(tx);
            let s = UploadStream::new(rx, len);
            let mut out = Vec::new();
            let r = s.reader().unwrap().read_to_end(&mut out).map(|_| out);
            assert!(s.reader().is_none(), "read once only");
            r
        };
        assert_eq!(read_all(vec![b"abc", b"", b"defg"], 7).unwrap(), b"abcdefg");
        assert_eq!(read_all(vec![], 0).unwrap(), b"");
        // The connection went away half-way.
        let e = read_all(vec![b"abc"], 7).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        // More than DataLength.
        let e = read_all(vec![b"abc", b"defgh"], 7).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    /// A node opened in `dir` and, when `with_peer`, a bare peer (empty
    /// memory store) linked to it.
    async fn node_with_peer(dir: &Path) -> (Arc<Node>, tokio_util::sync::CancellationToken) {
        let config = crate::config::Config {
            data_dir: Some(dir.to_path_buf()),
            ..crate::config::Config::default()
        };
        let node = Node::open(config).unwrap();
        let stop = node.shutdown.clone();
        let routing = lichen_routing::Config {
            opennet: false,
            swapping: false,
            ..lichen_routing::Config::default()
        };
        let setup =
            |keys: net::NodeKeys, location: u64, store: Arc<dyn lichen_store::BlockStore>| {
                net::peers::PeerSetup {
                    noderef: None,
                    keys,
                    location: lichen_routing::Location(location),
                    store,
                    link: net::LinkConfig::default(),
                    bandwidth: Arc::new(net::Bandwidth::unlimited()),
                    routing: routing.clone(),
                    opennet: false,
                    peer_dir: None,
                    max_remembered: 0,
                }
            };
        // The bare peer.
        let pkeys = net::NodeKeys::from_static_secret([7; 32]);
        let pl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pref = net::NodeRef::new(&pkeys, vec![pl.local_addr().unwrap()], Some(1 << 63));
        let pstore: Arc<dyn lichen_store::BlockStore> = Arc::new(lichen_store::MemoryStore::new(
            &lichen_store::StoreConfig::new(
                lichen_store::Budgets {
                    store: 1 << 24,
                    cache: 1 << 24,
                    client: 1 << 24,
                },
                1 << 63,
                lichen_store::StoreSecret::from_bytes([7; 32]),
            ),
        ));
        let pbytes = pref.to_bytes(&pkeys);
        let peer = PeerManager::start(setup(pkeys, 1 << 63, pstore), pl, stop.clone());
        // The node's own manager.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let keys = net::NodeKeys::from_identity(&node.identity);
        let mref = net::NodeRef::new(&keys, vec![l.local_addr().unwrap()], Some(1 << 62));
        let mbytes = mref.to_bytes(&keys);
        let m = PeerManager::start(
            setup(keys, node.identity.location, node.store.clone()),
            l,
            stop.clone(),
        );
        // Darknet: friends only, both ways.
        peer.add_friend(mref, mbytes).await.unwrap();
        m.add_friend(pref, pbytes).await.unwrap();
        node.peers.set(m).unwrap();
        for _ in 0..250 {
            if node.network().is_some() {
                return (node, stop);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the peer did not connect");
    }

    #[tokio::test]
    async fn ignore_ds_skips_the_local_copy_and_asks_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let (node, stop) = node_with_peer(dir.path()).await;
        // A block only this node has (in its client cache).
        let (chk, block) =
            lichen_crypto::chk::encode(b"only here", lichen_crypto::DataFlags::default()).unwrap();
        let key = chk.routing_key;
        node.store
            .put(Space::Client, BlockKind::Chk, &key, &block)
            .unwrap();
        let local = LocalBlocks::new(node.clone());
        assert_eq!(local.fetch(BlockKind::Chk, key).await.unwrap(), block);
        let mut ignore = LocalBlocks::new(node.clone());
        ignore.ignore_ds = true;
        let r = tokio::time::timeout(Duration::from_secs(30), ignore.fetch(BlockKind::Chk, key))
            .await
            .unwrap();
        assert!(r.is_err(), "IgnoreDS answered from the local store");
        let mut ds_only = LocalBlocks::new(node.clone());
        ds_only.ds_only = true;
        assert!(ds_only.fetch(BlockKind::Chk, key).await.is_ok());
        stop.cancel();
    }

    #[tokio::test]
    async fn without_peers_ignore_ds_is_route_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: Some(dir.path().to_path_buf()),
            ..crate::config::Config::default()
        };
        let node = Node::open(config).unwrap();
        let mut ignore = LocalBlocks::new(node.clone());
        ignore.ignore_ds = true;
        assert!(matches!(
            ignore.fetch(BlockKind::Chk, RoutingKey([1; 32])).await,
            Err(SourceError::RouteNotFound)
        ));
        assert!(matches!(
            LocalBlocks::new(node)
                .fetch(BlockKind::Chk, RoutingKey([1; 32]))
                .await,
            Err(SourceError::NotFound)
        ));
    }

    #[test]
    fn estimate_covers_data_and_check_blocks() {
        assert_eq!(estimate_blocks(0), 2);
        assert_eq!(estimate_blocks(100), 2);
        // 1 MiB: 32 data + 32 check + metadata.
        let e = estimate_blocks(1 << 20);
        assert!((64..80).contains(&e), "{e}");
    }
}
