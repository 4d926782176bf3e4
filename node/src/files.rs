//! Files the node writes itself: the one atomic write every record
//! (identity, peer list, persistent requests, pending pushes) goes
//! through.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub(crate) struct WriteError {
    /// The file.
    pub(crate) path: PathBuf,
    /// The cause.
    pub(crate) source: std::io::Error,
}

/// Write `data` to `path` atomically: a crash leaves either the old or the
/// new file, never a torn one (write a sibling `.tmp`, fsync, rename,
/// fsync the directory). `private` sets mode 0600 on Unix.
///
/// # Errors
/// [`WriteError`] naming the file.
pub(crate) fn write_atomic(path: &Path, data: &[u8], private: bool) -> Result<(), WriteError> {
    let io = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(data).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Directory fsync makes the rename durable; not all filesystems
        // support it, and failing it loses nothing already written.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Remove a small secret file, overwriting it with zeros first (on a
/// journalling or copy-on-write filesystem, or an SSD, the old bytes may
/// survive elsewhere; `docs/store.md` says so). Missing files are fine.
pub(crate) fn remove_wiped(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.is_file() {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
                let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0).min(1 << 20)];
                let _ = f.write_all(&zeros).and_then(|()| f.sync_all());
            }
        }
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_names_the_file_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("f.json");
        write_atomic(&p, b"first", true).unwrap();
        write_atomic(&p, b"second", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert!(!p.with_extension("tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A directory where the file should be: the error names the path.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let e = write_atomic(&blocked, b"x", false).unwrap_err();
        assert!(e.to_string().contains("blocked"), "{e}");
    }
}
