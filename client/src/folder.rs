//! A site folder on disk: the one scan and the one MIME guess for a folder
//! inserted as a freesite. `lichen putsite` and FCP `ClientPutDiskDir` both
//! use [`scan`], and every insert that guesses a type uses [`guess_mime`],
//! so one folder gives one manifest whichever way it is inserted.
//!
//! The rules of [`scan`] (where the two earlier scans differed, the safer
//! rule was kept):
//! - every regular file under the folder, named by its path relative to
//!   the folder with `/` between components, in byte order of that name;
//! - names starting with `.` (files and folders) are skipped unless
//!   `include_hidden`;
//! - symbolic links are skipped, to files and to folders alike: a link may
//!   lead out of the folder (past a disk-access check made on the folder)
//!   or into a loop; sockets, pipes and devices are skipped too;
//! - a name that is not UTF-8 is an error (a lossy name could collide with
//!   another), and so is a folder or entry that cannot be read (a site
//!   silently missing files is worse than no site);
//! - at most [`MAX_FILES`] files.

use std::io;
use std::path::{Path, PathBuf};

/// Most files in one folder scan.
pub const MAX_FILES: usize = 100_000;

/// One file found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderFile {
    /// Path inside the site, `/`-separated (`index.html`, `img/a.png`).
    pub name: String,
    /// Where the file is on disk.
    pub path: PathBuf,
    /// Its length when scanned.
    pub len: u64,
    /// Its MIME type, from [`guess_mime`] on `name`.
    pub mime: Option<&'static str>,
}

/// Why a folder could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A folder or an entry could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The folder or entry.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file or folder name is not UTF-8.
    #[error("{}: file names must be UTF-8", path.display())]
    NotUtf8 {
        /// The entry.
        path: PathBuf,
    },
    /// More than [`MAX_FILES`] files.
    #[error("too many files in the directory (more than {MAX_FILES})")]
    TooMany,
}

/// The MIME type of a file named `name`, by its extension (`mime_guess`);
/// `None` when the extension is unknown (a manifest then records no type
/// and a fetch guesses from the name again).
#[must_use]
pub fn guess_mime(name: &str) -> Option<&'static str> {
    mime_guess::from_path(name).first_raw()
}

/// The files of the site folder `dir`, by the rules in the module
/// documentation. Blocking: it reads the file system.
///
/// # Errors
/// See [`ScanError`].
pub fn scan(dir: &Path, include_hidden: bool) -> Result<Vec<FolderFile>, ScanError> {
    let mut files = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = stack.pop() {
        scan_folder(&folder, &prefix, include_hidden, &mut files, &mut stack)?;
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// One folder's entries: files into `files`, sub-folders onto `stack`.
fn scan_folder(
    folder: &Path,
    prefix: &str,
    include_hidden: bool,
    files: &mut Vec<FolderFile>,
    stack: &mut Vec<(PathBuf, String)>,
) -> Result<(), ScanError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScanError::Read { path, source }
    };
    for entry in std::fs::read_dir(folder).map_err(read(folder))? {
        let entry = entry.map_err(read(folder))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(ScanError::NotUtf8 { path });
        };
        if !include_hidden && name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        // The entry's own type: a symbolic link is neither a file nor a
        // folder here, so it is skipped.
        let kind = entry.file_type().map_err(read(&path))?;
        if kind.is_dir() {
            stack.push((path, format!("{rel}/")));
        } else if kind.is_file() {
            if files.len() >= MAX_FILES {
                return Err(ScanError::TooMany);
            }
            let len = entry.metadata().map_err(read(&path))?.len();
            files.push(FolderFile {
                mime: guess_mime(&rel),
                name: rel,
                path,
                len,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    fn names(files: &[FolderFile]) -> Vec<&str> {
        files.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn files_in_name_order_hidden_skipped_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("index.html"), b"<h1>hi</h1>").unwrap();
        fs::write(root.join(".hidden"), b"secret").unwrap();
        fs::create_dir_all(root.join(".git")).unwrap();
        fs::write(root.join(".git/config"), b"x").unwrap();
        fs::create_dir_all(root.join("img/deep")).unwrap();
        fs::write(root.join("img/Logo.PNG"), b"png").unwrap();
        fs::write(root.join("img/deep/a.css"), b"").unwrap();
        let files = scan(root, false).unwrap();
        assert_eq!(
            names(&files),
            ["img/Logo.PNG", "img/deep/a.css", "index.html"]
        );
        assert_eq!(files[0].len, 3);
        assert_eq!(files[0].path, root.join("img/Logo.PNG"));
        assert_eq!(files[0].mime, Some("image/png"));
        let all = scan(root, true).unwrap();
        assert_eq!(
            names(&all),
            [
                ".git/config",
                ".hidden",
                "img/Logo.PNG",
                "img/deep/a.css",
                "index.html"
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_are_skipped() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.txt"), b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a.txt"), b"a").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("b.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root, root.join("loop")).unwrap();
        assert_eq!(names(&scan(root, false).unwrap()), ["a.txt"]);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_are_an_error() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.html");
        if fs::write(dir.path().join(bad), b"x").is_err() {
            return; // a file system that refuses such names
        }
        let e = scan(dir.path(), false).unwrap_err();
        assert!(matches!(e, ScanError::NotUtf8 { .. }), "{e}");
    }

    #[test]
    fn a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = scan(&dir.path().join("nope"), false).unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
    }

    #[test]
    fn mime_guesses() {
        assert_eq!(guess_mime("a/b/index.HTML"), Some("text/html"));
        assert_eq!(guess_mime("x.htm"), Some("text/html"));
        assert_eq!(guess_mime("x.jpeg"), Some("image/jpeg"));
        assert_eq!(guess_mime("x.jpg"), Some("image/jpeg"));
        assert_eq!(guess_mime("f.woff2"), Some("font/woff2"));
        assert_eq!(guess_mime("f.svg"), Some("image/svg+xml"));
        assert_eq!(guess_mime("data.bin"), Some("application/octet-stream"));
        assert_eq!(guess_mime("README"), None);
    }
}
