//! The files and directories a request reads or writes on disk (FCP
//! direct disk access), opened when its access is checked and used by
//! handle afterwards (see [`crate::util::dirfd`]): a file or directory
//! swapped for a symbolic link between the check and the use is never
//! followed.
//!
//! - `ClientPut UploadFrom=disk`: the file is opened at the check; the
//!   insert reads that open file.
//! - `ClientGet ReturnType=disk`: the target's directory is opened at the
//!   check; `<name>.part` is created in it exclusively and renamed to
//!   `<name>` without replacing anything.
//! - `ClientPutDiskDir`: the folder is opened at the check, scanned through
//!   the handle, and each file opened through it again when read (no link,
//!   still a regular file of the scanned length).
//! - `ClientPutComplexDir` with `UploadFrom=disk` files: each file is
//!   opened through its directory's handle when read, as above.

use crate::util::dirfd::{DirHandle, DiskFile, DiskOut};
use lichen_fcp::client::{ClientGet, ClientMessage, ClientPut, ReturnType, UploadFrom};
use lichen_fcp::ProtocolErrorCode;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// What a request reads or writes on disk, opened at its check.
#[derive(Debug, Clone, Default)]
pub(crate) struct DiskAccess {
    /// `ClientPut UploadFrom=disk`: the file.
    pub(crate) put: Option<DiskFile>,
    /// The put's file is outside every approved directory (opened by its
    /// own directory): its `FileHash` must be checked on the open file.
    pub(crate) put_needs_hash: bool,
    /// `ClientGet ReturnType=disk`: where the data goes.
    pub(crate) get: Option<DiskOut>,
    /// `ClientPutDiskDir`: the folder.
    pub(crate) folder: Option<Arc<DirHandle>>,
    /// `ClientPutComplexDir`: each `UploadFrom=disk` file, by index.
    pub(crate) files: Vec<Option<DiskFile>>,
}

/// A refused disk access: the `ProtocolError` code and its text.
pub(crate) type Denied = (ProtocolErrorCode, String);

/// A path a client named: the canonical form of its directory (links in
/// what the client named are resolved once, here) and its last name,
/// which is never followed.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    /// The directory, canonical.
    pub(crate) dir: PathBuf,
    /// The last name.
    pub(crate) name: OsString,
}

impl Named {
    /// Splits and canonicalises `path`.
    ///
    /// # Errors
    /// No last name (`/`, `..`), or the directory does not exist.
    pub(crate) fn of(path: &str) -> io::Result<Named> {
        let p = Path::new(path);
        let Some(Component::Normal(name)) = p.components().next_back() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name"));
        };
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Ok(Named {
            dir: std::fs::canonicalize(parent)?,
            name: name.to_os_string(),
        })
    }
}

/// The handle of `dir` reached from `root`, whose path contains it.
///
/// # Errors
/// `dir` is not under `root`, or a component is a link or missing.
pub(crate) fn dir_under(root: &Arc<DirHandle>, dir: &Path) -> io::Result<Arc<DirHandle>> {
    let rel = dir.strip_prefix(root.path()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "outside the approved directory",
        )
    })?;
    if rel.as_os_str().is_empty() {
        Ok(root.clone())
    } else {
        Ok(Arc::new(root.open_dir(rel)?))
    }
}

/// Opens a canonical directory for a request: `Ok(None)` when this client
/// may not read (`write == false`) or write in it.
pub(crate) type Lookup<'a> = &'a dyn Fn(&Path, bool) -> io::Result<Option<Arc<DirHandle>>>;

/// The refusal for a file or folder that cannot be opened.
pub(crate) fn open_denied(e: &io::Error) -> Denied {
    match e.kind() {
        io::ErrorKind::NotFound => (
            ProtocolErrorCode::FileNotFound,
            "File not found, not a file or not readable".into(),
        ),
        io::ErrorKind::InvalidInput | io::ErrorKind::NotADirectory => (
            ProtocolErrorCode::NotAFileError,
            format!("Filepath is not a file: {e}"),
        ),
        _ => (
            ProtocolErrorCode::DirectDiskAccessDenied,
            format!("Direct Disk Access operation denied: {e}"),
        ),
    }
}

/// fred's hint after a refused disk access.
const DENIED_HINT: &str = "did you send a FileHash field ? Did you use TestDDA?";

/// The refusal of a disk access no approved directory allows (`what`: a
/// precision such as `" for a file of the site"`).
pub(crate) fn denied(what: &str) -> Denied {
    (
        ProtocolErrorCode::DirectDiskAccessDenied,
        format!("Direct Disk Access operation denied{what}: {DENIED_HINT}"),
    )
}

/// Opens what `msg` reads or writes on disk, each directory through
/// `lookup`. A put from disk in a directory `lookup` refuses is opened
/// through `put_unchecked` instead (for a `FileHash` check, which the
/// caller makes on the open file: `put_needs_hash`); `put_unchecked`
/// returning `None` refuses it too.
///
/// # Errors
/// The `ProtocolError` to answer.
pub(crate) fn prepare(
    msg: &ClientMessage,
    lookup: Lookup<'_>,
    put_unchecked: Lookup<'_>,
) -> Result<DiskAccess, Denied> {
    let mut access = DiskAccess::default();
    match msg {
        ClientMessage::ClientPut(ClientPut {
            upload_from: UploadFrom::Disk { filename, .. },
            ..
        }) => {
            let named = Named::of(filename).map_err(|e| open_denied(&e))?;
            let dir = match lookup(&named.dir, false).map_err(|e| open_denied(&e))? {
                Some(d) => d,
                None => {
                    access.put_needs_hash = true;
                    put_unchecked(&named.dir, false)
                        .map_err(|e| open_denied(&e))?
                        .ok_or_else(|| denied(""))?
                }
            };
            let (f, len) = dir
                .open_file(Path::new(&named.name))
                .map_err(|e| open_denied(&e))?;
            access.put = Some(DiskFile::Open(Arc::new(f), len));
        }
        ClientMessage::ClientGet(ClientGet {
            return_type: ReturnType::Disk,
            filename,
            ..
        }) => {
            let Some(f) = filename else {
                return Err((
                    ProtocolErrorCode::MissingField,
                    "Missing field Filename".into(),
                ));
            };
            let cannot_create = |e: io::Error| match e.kind() {
                io::ErrorKind::PermissionDenied => open_denied(&e),
                _ => (
                    ProtocolErrorCode::CouldNotCreateFile,
                    format!("Could not create file: {e}"),
                ),
            };
            let named = Named::of(f).map_err(cannot_create)?;
            let dir = lookup(&named.dir, true)
                .map_err(cannot_create)?
                .ok_or_else(|| denied(""))?;
            if dir.exists(&named.name).map_err(cannot_create)? {
                return Err((
                    ProtocolErrorCode::DiskTargetExists,
                    "Disk target exists, refusing to overwrite for security reasons".into(),
                ));
            }
            access.get = Some(DiskOut {
                dir,
                name: named.name,
            });
        }
        ClientMessage::ClientPutDiskDir(d) => {
            let dir = std::fs::canonicalize(&d.filename).map_err(|e| open_denied(&e))?;
            let folder = lookup(&dir, false)
                .map_err(|e| open_denied(&e))?
                .ok_or_else(|| denied(""))?;
            access.folder = Some(folder);
        }
        ClientMessage::ClientPutComplexDir(d) => {
            for f in &d.files {
                access.files.push(match &f.upload_from {
                    UploadFrom::Disk { filename, .. } => Some(complex_file(filename, lookup)?),
                    _ => None,
                });
            }
        }
        _ => {}
    }
    Ok(access)
}

/// A disk file of a `ClientPutComplexDir`: checked now, opened through its
/// directory's handle when read.
fn complex_file(filename: &str, lookup: Lookup<'_>) -> Result<DiskFile, Denied> {
    let refuse = |_| denied(" for a file of the site");
    let named = Named::of(filename).map_err(refuse)?;
    let dir = lookup(&named.dir, false)
        .map_err(refuse)?
        .ok_or_else(|| denied(" for a file of the site"))?;
    let Some(len) = dir.file_len(&named.name).map_err(refuse)? else {
        return Err(denied(" for a file of the site"));
    };
    Ok(DiskFile::Beneath {
        dir,
        rel: PathBuf::from(&named.name),
        len,
    })
}

/// The lookup of a request resumed after a restart (its access was checked
/// when it started): the named directory, opened with no link anywhere.
pub(crate) fn reopen(dir: &Path, _write: bool) -> io::Result<Option<Arc<DirHandle>>> {
    DirHandle::open_canonical(dir).map(|d| Some(Arc::new(d)))
}
