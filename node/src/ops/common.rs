//! What the operations take and give: the put and get specs, the
//! outcomes, the failures (a client library error, whose kind says who is
//! at fault, and the text for the requester) and the callbacks.

use crate::requests::Progress;
use crate::util::blocking::UploadStream;
use lichen_client::{ErrorKind, FetchError, HasKind, InsertError};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// `len` bytes from `offset` of an upload the node spooled, sealed
    /// under its vault (`crate::vault`).
    Spooled {
        /// The spool file.
        path: PathBuf,
        /// Start offset (of the data, after the seal's header).
        offset: u64,
        /// Length.
        len: u64,
        /// What the file is sealed under.
        vault: crate::vault::Vault,
    },
    /// A file from disk (FCP direct disk access), opened when its access
    /// was checked or reached through an approved directory's handle.
    Disk(crate::util::dirfd::DiskFile),
    /// No data (an empty file).
    Empty,
    /// A redirect to another URI.
    Redirect(String),
    /// A direct upload still arriving on its FCP connection: the insert
    /// reads it as it comes (no spool file).
    Stream(UploadStream),
}

/// An FCP ClientPut, as the operations take it.
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

/// An FCP ClientGet, as the operations take it.
#[derive(Debug, Clone)]
pub struct GetSpec {
    /// URI to fetch.
    pub uri: String,
    /// Largest document accepted.
    pub max_size: Option<u64>,
    /// Where to write the data (`None`: discard).
    pub out: Option<PathBuf>,
    /// Write `out` sealed ([`crate::sealed::FileSeal`]).
    pub(crate) seal: Option<crate::sealed::FileSeal>,
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

/// A failed operation: what failed (`E` is [`FetchError`] or
/// [`InsertError`]; its [`HasKind::kind`] says who is at fault) and the
/// text for the requester. The FCP code comes from the one mapping in
/// `jobs::codes`, the gateway's HTTP status from the one in
/// `gateway::respond`; neither is decided here.
#[derive(Debug)]
pub struct Failure<E> {
    /// What failed.
    pub error: E,
    /// Detail for the requester, names included (an FCP
    /// `ExtraDescription`, the gateway's page): never for a log.
    pub extra: String,
}

impl<E> Failure<E> {
    /// `error`, told to the requester as `extra`.
    pub(crate) fn new(error: E, extra: impl Into<String>) -> Self {
        Failure {
            error,
            extra: extra.into(),
        }
    }
}

impl<E: HasKind> HasKind for Failure<E> {
    fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl Failure<FetchError> {
    /// For a newer USK edition: the URI to fetch instead.
    #[must_use]
    pub fn redirect(&self) -> Option<String> {
        match &self.error {
            FetchError::PermanentRedirect { new_uri } => Some(new_uri.to_string()),
            _ => None,
        }
    }
}

impl From<FetchError> for Failure<FetchError> {
    fn from(e: FetchError) -> Self {
        Failure {
            extra: e.describe(),
            error: e,
        }
    }
}

impl From<InsertError> for Failure<InsertError> {
    fn from(e: InsertError) -> Self {
        Failure {
            extra: e.describe(),
            error: e,
        }
    }
}

/// Progress callback type.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);
/// URI callback type.
pub type UriFn<'a> = &'a (dyn Fn(String) + Send + Sync);
/// A finished insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PutDone {
    /// The request URI.
    pub uri: String,
    /// Every block reached the network. `false`: some are only in the
    /// client cache and the push task sends them once the node has peers.
    pub in_network: bool,
}

pub(super) fn open_range(
    path: &Path,
    offset: u64,
    len: u64,
) -> std::io::Result<impl std::io::Read + Send> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, f.take(len)))
}

/// [`open_range`] for a sealed spool file.
pub(super) fn open_spooled(
    vault: &crate::vault::Vault,
    path: &Path,
    offset: u64,
    len: u64,
) -> std::io::Result<impl std::io::Read + Send> {
    use std::io::Read;
    let r = vault.read_file_at(path, offset)?;
    Ok(std::io::BufReader::with_capacity(1 << 20, r.take(len)))
}

/// A blocking task of an insert that did not finish (panicked, or the
/// runtime is stopping).
pub(super) fn insert_join_failure(e: &tokio::task::JoinError) -> Failure<InsertError> {
    Failure::new(InsertError::Internal(e.to_string()), e.to_string())
}
