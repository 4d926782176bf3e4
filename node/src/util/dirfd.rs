//! Direct disk access through directory handles, never by path.
//!
//! A directory the client may use (FCP `TestDDA`, `[fcp] allowed_dirs`) is
//! opened once as a [`DirHandle`]: its path is canonicalised, then opened
//! from `/` one component at a time with `O_NOFOLLOW`, so a symbolic link
//! swapped in after the canonicalisation makes the open fail instead of
//! leading elsewhere. From then on every file under it is reached through
//! the handle (`openat`), each component again with `O_NOFOLLOW`: no name
//! may be `..`, `.` or a symbolic link, so nothing outside the directory the
//! handle was opened on can be read or written, whatever is renamed or
//! swapped for a link meanwhile.
//!
//! Outputs are created exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`) and
//! renamed into place within the handle without replacing anything
//! (`renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the file
//! system lacks it). Checks (regular file? size?) are made on the opened
//! file (`fstat`), never on a path.

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// An open directory: everything under it is reached through it.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
    /// Its canonical path when it was opened (to match the paths clients
    /// name; never used to open anything).
    path: PathBuf,
}

/// A symbolic link met where none may be.
fn symlink_error(name: &OsStr) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} is a symbolic link (links are not followed in direct disk access)",
            Path::new(name).display()
        ),
    )
}

/// `openat` of one name, not following a symbolic link; ELOOP (and the
/// ENOTDIR a link gives with `O_DIRECTORY`) becomes a clear error.
fn open_one(dir: impl AsFd, name: &OsStr, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(&dir, name, flags, mode) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::LOOP) => Err(symlink_error(name)),
        Err(rustix::io::Errno::NOTDIR) if flags.contains(OFlags::DIRECTORY) => {
            match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    Err(symlink_error(name))
                }
                _ => Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", Path::new(name).display()),
                )),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The names of a relative path, refusing `..`, `.`, roots and prefixes
/// (a name must stay inside the directory it is looked up in).
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a path under a directory may hold no '..', '.' or root",
            )),
        })
        .collect()
}

/// One name (no separator, not `.` or `..`).
fn single_name(name: &OsStr) -> io::Result<()> {
    match names(Path::new(name))?.as_slice() {
        [n] if *n == name => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single file name",
        )),
    }
}

/// A regular file, by `fstat` on the open file.
fn regular(fd: OwnedFd) -> io::Result<(File, u64)> {
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
}

impl DirHandle {
    /// Canonicalises `path` (symbolic links in what the client named are
    /// resolved once, here) and opens the result with no symbolic link
    /// anywhere: a link swapped in after the canonicalisation is refused.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        Self::open_canonical(&std::fs::canonicalize(path)?)
    }

    /// Opens the absolute, canonical `path` from `/`, one component at a
    /// time, none of them a symbolic link.
    pub(crate) fn open_canonical(path: &Path) -> io::Result<Self> {
        let mut comps = path.components();
        if comps.next() != Some(Component::RootDir) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an absolute path",
            ));
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut fd = rustix::fs::open("/", flags, Mode::empty())?;
        for name in names(comps.as_path())? {
            fd = open_one(&fd, name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        }
        Ok(DirHandle {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Its canonical path when opened.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `other` is a handle on the same directory (device and
    /// inode), wherever either path leads now.
    pub(crate) fn same_dir(&self, other: &DirHandle) -> bool {
        match (rustix::fs::fstat(&self.fd), rustix::fs::fstat(&other.fd)) {
            (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
            _ => false,
        }
    }

    /// The sub-directory `rel` (empty: a new handle on this one), no
    /// component a symbolic link.
    pub(crate) fn open_dir(&self, rel: &Path) -> io::Result<DirHandle> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let mut fd = open_one(&self.fd, OsStr::new("."), flags, Mode::empty())?;
        for name in names(rel)? {
            fd = open_one(&fd, name, flags, Mode::empty())?;
        }
        Ok(DirHandle {
            fd,
            path: self.path.join(rel),
        })
    }

    /// Opens the regular file `rel` under this directory for reading, no
    /// component a symbolic link; its length from `fstat`.
    pub(crate) fn open_file(&self, rel: &Path) -> io::Result<(File, u64)> {
        let parts = names(rel)?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name"));
        };
        let mut dir = None::<OwnedFd>;
        for name in dirs {
            let next = match &dir {
                Some(d) => open_one(d, name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()),
                None => open_one(
                    &self.fd,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    Mode::empty(),
                ),
            }?;
            dir = Some(next);
        }
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        let fd = match &dir {
            Some(d) => open_one(d, last, flags, Mode::empty()),
            None => open_one(&self.fd, last, flags, Mode::empty()),
        }?;
        regular(fd)
    }

    /// Creates the file `name` in this directory for writing; fails if
    /// anything (a file, a symbolic link) has that name.
    pub(crate) fn create_new(&self, name: &OsStr) -> io::Result<File> {
        single_name(name)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        let fd = open_one(&self.fd, name, flags, Mode::from_raw_mode(0o666))?;
        Ok(File::from(fd))
    }

    /// Whether anything (a symbolic link included, never followed) is
    /// called `name` here.
    pub(crate) fn exists(&self, name: &OsStr) -> io::Result<bool> {
        single_name(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the name `name` here (a symbolic link itself, never its
    /// target); a missing name is not an error.
    pub(crate) fn remove(&self, name: &OsStr) -> io::Result<()> {
        single_name(name)?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `from` to `to` within this directory, never replacing
    /// anything called `to` (`ErrorKind::AlreadyExists` then).
    pub(crate) fn rename_new(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        single_name(from)?;
        single_name(to)?;
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        match rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(()),
            // The file system or kernel lacks the flag: link + unlink.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
        rustix::fs::linkat(&self.fd, from, &self.fd, to, AtFlags::empty())?;
        rustix::fs::unlinkat(&self.fd, from, AtFlags::empty())?;
        Ok(())
    }

    /// The entries of this directory: name and type as read, with a
    /// type the directory listing leaves unknown asked of the entry itself
    /// (never following a link).
    pub(crate) fn entries(&self) -> io::Result<Vec<(OsString, FileType)>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::Unknown => FileType::from_raw_mode(
                    rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?.st_mode,
                ),
                k => k,
            };
            out.push((name.to_os_string(), kind));
        }
        Ok(out)
    }

    /// The length of the regular file `name` here (`None`: not a regular
    /// file, e.g. a link), without following a link.
    pub(crate) fn file_len(&self, name: &OsStr) -> io::Result<Option<u64>> {
        single_name(name)?;
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(
            (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
                .then(|| u64::try_from(st.st_size).unwrap_or(0)),
        )
    }
}

/// A file a request reads from disk: opened when its access was checked,
/// or opened through a directory handle when it is read.
#[derive(Debug, Clone)]
pub enum DiskFile {
    /// Opened already (and checked to be a regular file of this length).
    Open(Arc<File>, u64),
    /// `rel` under the directory `dir`, expected `len` bytes long.
    Beneath {
        /// The directory.
        dir: Arc<DirHandle>,
        /// The path under it.
        rel: PathBuf,
        /// Its length when checked.
        len: u64,
    },
}

impl DiskFile {
    /// Its length when checked.
    pub(crate) fn len(&self) -> u64 {
        match self {
            DiskFile::Open(_, len) | DiskFile::Beneath { len, .. } => *len,
        }
    }

    /// A reader of exactly [`Self::len`] bytes; a file that is no longer
    /// a regular file of that length (changed since the check) is an
    /// error, at open or when it ends early.
    pub(crate) fn reader(&self) -> io::Result<DiskReader> {
        let (file, len) = match self {
            DiskFile::Open(f, len) => (f.clone(), *len),
            DiskFile::Beneath { dir, rel, len } => {
                let (f, now) = dir.open_file(rel)?;
                if now != *len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the file changed since its access was checked",
                    ));
                }
                (Arc::new(f), *len)
            }
        };
        Ok(DiskReader { file, pos: 0, len })
    }
}

/// Reads a [`DiskFile`] by position (`pread`): readers of one open file
/// never share an offset.
#[derive(Debug)]
pub struct DiskReader {
    file: Arc<File>,
    pos: u64,
    len: u64,
}

impl Read for DiskReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank since its access was checked",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// Where a get to disk writes: `name` in `dir`, through `name.part`.
#[derive(Debug, Clone)]
pub struct DiskOut {
    /// The directory.
    pub(crate) dir: Arc<DirHandle>,
    /// The final name.
    pub(crate) name: OsString,
}

impl DiskOut {
    /// `<name>.part`.
    pub(crate) fn part_name(&self) -> OsString {
        let mut p = self.name.clone();
        p.push(".part");
        p
    }

    /// Creates `<name>.part` exclusively. A leftover `.part` (of a request
    /// interrupted by a restart, or a link someone put there) is removed
    /// first: the name only, never what a link points to.
    pub(crate) fn create_part(&self) -> io::Result<File> {
        let part = self.part_name();
        self.dir.remove(&part)?;
        self.dir.create_new(&part)
    }

    /// Renames `.part` to the final name, replacing nothing.
    pub(crate) fn finish(&self) -> io::Result<()> {
        self.dir.rename_new(&self.part_name(), &self.name)
    }

    /// Removes `.part` (a failed get).
    pub(crate) fn discard(&self) {
        let _ = self.dir.remove(&self.part_name());
    }
}

/// The files of a site folder (FCP `ClientPutDiskDir`) under `dir`, by the
/// rules of [`lichen_client::folder::scan`] (regular files only, links
/// skipped, hidden names only if asked, UTF-8 names, at most
/// [`lichen_client::folder::MAX_FILES`]), walked through the handle: each
/// sub-folder is opened with `O_NOFOLLOW`. Each file's name inside the
/// site (`/`-separated, also its path under `dir`) and length, in byte
/// order of the name. Blocking.
///
/// # Errors
/// A folder or entry that cannot be read, a name that is not UTF-8, too
/// many files.
pub(crate) fn scan(dir: &DirHandle, include_hidden: bool) -> io::Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    let mut stack = vec![(dir.open_dir(Path::new(""))?, String::new())];
    while let Some((folder, prefix)) = stack.pop() {
        for (name, kind) in folder.entries()? {
            let Some(name) = name.to_str() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{prefix}{}: file names must be UTF-8",
                        name.to_string_lossy()
                    ),
                ));
            };
            if !include_hidden && name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            if kind == FileType::Directory {
                stack.push((folder.open_dir(Path::new(name))?, format!("{rel}/")));
            } else if kind == FileType::RegularFile {
                if files.len() >= lichen_client::folder::MAX_FILES {
                    return Err(io::Error::other(format!(
                        "too many files in the directory (more than {})",
                        lichen_client::folder::MAX_FILES
                    )));
                }
                // Replaced since the listing: skipped like any link.
                if let Some(len) = folder.file_len(OsStr::new(name))? {
                    files.push((rel, len));
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    fn read_all(f: &DiskFile) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        f.reader()?.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn open_refuses_a_link_swapped_in_after_canonicalisation() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let canon = std::fs::canonicalize(&real).unwrap();
        // Between canonicalise and open the directory becomes a link.
        std::fs::rename(&real, t.path().join("moved")).unwrap();
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        symlink(&other, &real).unwrap();
        let e = DirHandle::open_canonical(&canon).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A link the client named is resolved once, and then used by handle.
        let h = DirHandle::open(&real).unwrap();
        assert_eq!(h.path(), std::fs::canonicalize(&other).unwrap());
    }

    #[test]
    fn handle_keeps_the_directory_it_opened() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let victim = t.path().join("victim");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(a.join("f"), b"inside").unwrap();
        std::fs::write(victim.join("f"), b"outside").unwrap();
        let h = DirHandle::open(&a).unwrap();
        // The directory is swapped for a link to the victim after the open.
        std::fs::rename(&a, t.path().join("a.orig")).unwrap();
        symlink(&victim, &a).unwrap();
        let (mut f, len) = h.open_file(Path::new("f")).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), len), ("inside", 6));
        let mut out = h.create_new(OsStr::new("new")).unwrap();
        out.write_all(b"x").unwrap();
        assert!(t.path().join("a.orig/new").exists());
        assert!(!victim.join("new").exists());
    }

    #[test]
    fn links_inside_are_refused_at_any_component() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        symlink(outside.join("secret"), d.join("link")).unwrap();
        symlink(&outside, d.join("sub/dirlink")).unwrap();
        let h = DirHandle::open(&d).unwrap();
        for rel in [
            "link",
            "sub/dirlink/secret",
            "../outside/secret",
            "sub/../link",
        ] {
            assert!(h.open_file(Path::new(rel)).is_err(), "{rel}");
        }
        assert!(h.open_dir(Path::new("sub/dirlink")).is_err());
        assert!(h.create_new(OsStr::new("link")).is_err());
        assert!(h.create_new(OsStr::new("sub/x")).is_err());
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    }

    #[test]
    fn file_swapped_for_a_link_after_the_check_is_not_read() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), b"inside").unwrap();
        std::fs::write(t.path().join("secret"), b"secret").unwrap();
        let h = Arc::new(DirHandle::open(&d).unwrap());
        // Opened at the check: the original is read after the swap.
        let (f, len) = h.open_file(Path::new("f")).unwrap();
        let opened = DiskFile::Open(Arc::new(f), len);
        // Opened through the handle at reading time: refused.
        let later = DiskFile::Beneath {
            dir: h.clone(),
            rel: PathBuf::from("f"),
            len,
        };
        std::fs::remove_file(d.join("f")).unwrap();
        symlink(t.path().join("secret"), d.join("f")).unwrap();
        assert_eq!(read_all(&opened).unwrap(), b"inside");
        assert!(read_all(&later)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        // A regular file of another length: refused too.
        std::fs::remove_file(d.join("f")).unwrap();
        std::fs::write(d.join("f"), b"longer content").unwrap();
        assert!(read_all(&later).is_err());
    }

    #[test]
    fn output_is_exclusive_and_never_follows_links() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        let out = DiskOut {
            dir: Arc::new(DirHandle::open(&d).unwrap()),
            name: OsString::from("out.bin"),
        };
        // A `.part` link to the victim: removed, the victim untouched.
        symlink(&victim, d.join("out.bin.part")).unwrap();
        let mut f = out.create_part().unwrap();
        f.write_all(b"data").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        // The final name became a link to the victim: not replaced.
        symlink(&victim, d.join("out.bin")).unwrap();
        let e = out.finish().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        std::fs::remove_file(d.join("out.bin")).unwrap();
        out.finish().unwrap();
        assert_eq!(std::fs::read(d.join("out.bin")).unwrap(), b"data");
        assert!(!d.join("out.bin.part").exists());
    }

    #[test]
    fn scan_walks_the_handle() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("site");
        std::fs::create_dir_all(d.join("img")).unwrap();
        std::fs::create_dir(t.path().join("outside")).unwrap();
        std::fs::write(t.path().join("outside/secret"), b"s").unwrap();
        std::fs::write(d.join("index.html"), b"<p>").unwrap();
        std::fs::write(d.join("img/a.png"), b"png!").unwrap();
        std::fs::write(d.join(".hidden"), b"h").unwrap();
        symlink(t.path().join("outside"), d.join("linked")).unwrap();
        symlink(t.path().join("outside/secret"), d.join("secret")).unwrap();
        let h = DirHandle::open(&d).unwrap();
        // The folder is swapped for a link after the open: still the same.
        std::fs::rename(&d, t.path().join("site.orig")).unwrap();
        symlink(t.path().join("outside"), &d).unwrap();
        let files = scan(&h, false).unwrap();
        assert_eq!(
            files,
            vec![("img/a.png".to_string(), 4), ("index.html".to_string(), 3)]
        );
        assert_eq!(scan(&h, true).unwrap().len(), 3);
    }
}
