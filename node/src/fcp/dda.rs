//! TestDDA on the node's side, and which directory handle a disk request
//! of this connection may use.
//!
//! The directory of a `TestDDARequest` is opened once, then: its path is
//! canonicalised and opened with no symbolic link anywhere (see
//! [`crate::util::dirfd`]). The read-test file is created through that
//! handle, the write-test file is read and both are removed through it,
//! and what the test proves is granted to that handle, under the
//! canonical path it was opened at. A directory swapped for a link between
//! `TestDDARequest` and `TestDDAResponse` gains nothing: the node never
//! looks at the path again. Disk requests reach files only through the
//! handle of a directory that passed ([`Conn::dda_lookup`]).

use super::common::lock;
use super::conn::Conn;
use crate::jobs::disk::dir_under;
use crate::util::dirfd::DirHandle;
use lichen_fcp::client::TestDdaResponse;
use lichen_fcp::dda::{path_is_within, DdaChallenge};
use lichen_fcp::ProtocolErrorCode;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

/// The write-test file holds a short token: read at most this much.
const MAX_TOKEN_FILE: u64 = 4096;

fn token(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The last name of a test file the node chose (`None`: not one name).
fn test_file_name(path: &str) -> Option<&OsStr> {
    Path::new(path).file_name()
}

impl Conn {
    /// `TestDDARequest`: opens the directory, writes the read-test file in
    /// it and names the files the client must read or write.
    pub(super) async fn test_dda_request(
        &self,
        directory: &str,
        want_read: bool,
        want_write: bool,
    ) {
        let dir = Path::new(directory);
        let fail = |e: &io::Error| {
            self.protocol_error(
                ProtocolErrorCode::CouldNotCreateFile,
                &format!("cannot open the directory for TestDDA: {e}"),
                None,
                false,
            );
        };
        let handle = match DirHandle::open(dir) {
            Ok(h) => Arc::new(h),
            Err(e) => return fail(&e),
        };
        let mut read = None;
        if want_read {
            let name = format!("DDACheck-{}.tmp", token(8));
            let content = token(16);
            let written = handle
                .create_new(OsStr::new(&name))
                .and_then(|mut f| io::Write::write_all(&mut f, content.as_bytes()));
            if let Err(e) = written {
                let _ = handle.remove(OsStr::new(&name));
                return fail(&e);
            }
            read = Some((dir.join(name).to_string_lossy().into_owned(), content));
        }
        let write = want_write.then(|| {
            (
                dir.join(format!("DDACheck-{}.tmp", token(8)))
                    .to_string_lossy()
                    .into_owned(),
                token(16),
            )
        });
        let mut dirs = lock(&self.dda);
        let reply = lock(&self.session).dda_challenge(DdaChallenge {
            directory: directory.to_string(),
            read,
            write,
        });
        dirs.pending.insert(directory.to_string(), handle);
        drop(dirs);
        self.send(&reply);
    }

    /// `TestDDAResponse`: reads the write-test file and removes both test
    /// files through the directory's handle, and grants what was proven
    /// to that handle.
    pub(super) async fn test_dda_response(&self, r: TestDdaResponse) {
        let pending = lock(&self.session).dda_pending(&r.directory).cloned();
        let handle = lock(&self.dda).pending.remove(&r.directory);
        let (Some(pending), Some(handle)) = (pending, handle) else {
            return;
        };
        let written = pending
            .write
            .as_ref()
            .and_then(|(f, _)| test_file_name(f))
            .and_then(|name| {
                let content = read_token(&handle, name);
                let _ = handle.remove(name);
                content
            });
        if let Some(name) = pending.read.as_ref().and_then(|(f, _)| test_file_name(f)) {
            let _ = handle.remove(name);
        }
        let canonical = handle.path().to_path_buf();
        let mut dirs = lock(&self.dda);
        let mut session = lock(&self.session);
        // The same path names another directory than the one that passed
        // before: what that one allowed does not carry over.
        if let Some(i) = dirs.granted.iter().position(|g| g.path() == canonical) {
            if !dirs.granted[i].same_dir(&handle) {
                session.dda_forget(&canonical);
                dirs.granted.swap_remove(i);
            }
        }
        let reply = session.dda_complete(
            &r.directory,
            &canonical,
            r.read_content.as_deref(),
            written.as_deref(),
        );
        let access = session.dda_access(&canonical);
        drop(session);
        if (access.read || access.write) && !dirs.granted.iter().any(|g| g.path() == canonical) {
            dirs.granted.push(handle);
        }
        drop(dirs);
        if let Some(m) = reply {
            self.send(&m);
        }
    }

    /// The handle of the canonical directory `dir` for a disk request of
    /// this connection: under a directory that passed TestDDA for reading
    /// (`write == false`) or writing, or under a directory of `[fcp]
    /// allowed_dirs`; `Ok(None)` if neither. Reached from that directory's
    /// handle, no component a link.
    ///
    /// # Errors
    /// A component under the allowed directory is a link or missing.
    pub(super) fn dda_lookup(&self, dir: &Path, write: bool) -> io::Result<Option<Arc<DirHandle>>> {
        let granted = lock(&self.dda).granted.clone();
        let found = {
            let s = lock(&self.session);
            granted.into_iter().find(|g| {
                let a = s.dda_access(g.path());
                (if write { a.write } else { a.read }) && path_is_within(dir, g.path())
            })
        };
        if let Some(g) = found {
            return dir_under(&g, dir).map(Some);
        }
        for d in &self.node.config.fcp.allowed_dirs {
            if let Ok(c) = std::fs::canonicalize(d) {
                if path_is_within(dir, &c) {
                    let root = Arc::new(DirHandle::open_canonical(&c)?);
                    return dir_under(&root, dir).map(Some);
                }
            }
        }
        Ok(None)
    }
}

/// The write-test file's content, read through the handle (never a link).
fn read_token(dir: &DirHandle, name: &OsStr) -> Option<String> {
    let (f, _) = dir.open_file(Path::new(name)).ok()?;
    let mut s = String::new();
    f.take(MAX_TOKEN_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}
