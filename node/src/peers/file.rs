//! The remembered peers on disk: `peers.sealed` in the data directory,
//! the peer list's text (format and rules in [`lichen_link::peerlist`],
//! which parses and writes it) sealed under the node's vault as a record
//! of purpose `"peers"` (`crate::vault`): the friend graph is not readable
//! from the disk. A `peers.toml` of an earlier version (in the clear) is
//! read once, then written sealed and removed.
//!
//! Loading never fails the node: an unreadable or damaged file is reported
//! and moved aside (`peers.sealed.damaged`), a bad entry is skipped.

use crate::files::{write_atomic, WriteError};
use crate::vault::Vault;
use lichen_link::peerlist::PeerList;
use std::path::{Path, PathBuf};

/// File name inside the data directory.
pub(crate) const FILE_NAME: &str = "peers.sealed";
/// The clear file of earlier versions.
pub(crate) const LEGACY_NAME: &str = "peers.toml";
/// Where a damaged file is moved.
pub(crate) const DAMAGED_NAME: &str = "peers.sealed.damaged";
/// The purpose the list is sealed for.
const PURPOSE: &str = "peers";
/// Largest peer file read (a friend list of thousands fits easily).
pub(crate) const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why a peer file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PeerFileError {
    /// I/O error.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a peer list.
    #[error("{path} is damaged: {why}")]
    Damaged {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The result of loading: the list, and what to warn about.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The peers (empty if the file was missing or damaged).
    pub(crate) list: PeerList,
    /// Problems to report (no noderef or address in them).
    pub(crate) warnings: Vec<String>,
}

/// Load `dir/peers.sealed` (or an earlier version's `peers.toml`, which
/// is then sealed and removed). A missing file is an empty list; an
/// unreadable or damaged one is reported in `warnings`, moved aside to
/// `peers.sealed.damaged` (so a friend list can be recovered) and
/// replaced by an empty list. Never fails.
#[must_use]
pub(crate) fn load(dir: &Path, max_opennet: usize, vault: &Vault) -> Loaded {
    let legacy = dir.join(LEGACY_NAME);
    if legacy.exists() && !dir.join(FILE_NAME).exists() {
        let loaded = load_text(&legacy, dir, max_opennet, read_limited(&legacy));
        match save(&loaded.list, dir, vault) {
            Ok(()) => crate::files::remove_wiped(&legacy),
            Err(e) => tracing::warn!("cannot seal the peer list: {e}"),
        }
        return loaded;
    }
    let path = dir.join(FILE_NAME);
    let text = read_limited(&path).and_then(|bytes| {
        bytes
            .map(|b| {
                vault.open(PURPOSE, &b).map_err(|e| PeerFileError::Damaged {
                    path: path.clone(),
                    why: e.to_string(),
                })
            })
            .transpose()
    });
    load_text(&path, dir, max_opennet, text)
}

fn load_text(
    path: &Path,
    dir: &Path,
    max_opennet: usize,
    bytes: Result<Option<Vec<u8>>, PeerFileError>,
) -> Loaded {
    let path = path.to_owned();
    let mut warnings = Vec::new();
    let text = bytes.and_then(|b| {
        b.map(|b| {
            String::from_utf8(b).map_err(|_| PeerFileError::Damaged {
                path: path.clone(),
                why: "not UTF-8 text".into(),
            })
        })
        .transpose()
    });
    match text {
        Ok(None) => {}
        Ok(Some(text)) => match PeerList::from_toml(&text, max_opennet) {
            Ok((list, w)) => {
                warnings.extend(w);
                return Loaded { list, warnings };
            }
            Err(why) => {
                let e = PeerFileError::Damaged {
                    path: path.clone(),
                    why,
                };
                warnings.push(format!("{e}; starting without remembered peers"));
                move_aside(dir, &path, &mut warnings);
            }
        },
        Err(e) => {
            warnings.push(format!("{e}; starting without remembered peers"));
            move_aside(dir, &path, &mut warnings);
        }
    }
    Loaded {
        list: PeerList::new(max_opennet),
        warnings,
    }
}

/// Write `dir/peers.sealed` atomically (sealed, mode 0600).
///
/// # Errors
/// I/O errors, naming the file.
pub(crate) fn save(list: &PeerList, dir: &Path, vault: &Vault) -> Result<(), WriteError> {
    let sealed = vault.seal(PURPOSE, list.to_toml().as_bytes());
    write_atomic(&dir.join(FILE_NAME), &sealed, true)
}

fn read_limited(path: &Path) -> Result<Option<Vec<u8>>, PeerFileError> {
    use std::io::Read;
    let io = |source| PeerFileError::Io {
        path: path.to_owned(),
        source,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(PeerFileError::Damaged {
            path: path.to_owned(),
            why: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(Some(buf))
}

fn move_aside(dir: &Path, path: &Path, warnings: &mut Vec<String>) {
    let to = dir.join(DAMAGED_NAME);
    match std::fs::rename(path, &to) {
        Ok(()) => warnings.push(format!("moved the damaged peer file to {}", to.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warnings.push(format!("cannot move {} aside: {e}", path.display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lichen_link::peerlist::{Added, PeerKind};
    use lichen_link::{NodeKeys, NodeRef};

    fn noderef(i: u8) -> (NodeRef, lichen_routing::NoderefBytes) {
        let keys = NodeKeys::from_static_secret([i; 32]);
        let r = NodeRef::new(
            &keys,
            vec![format!("127.0.0.1:{}", 20000 + u16::from(i))
                .parse()
                .unwrap()],
            Some(u64::from(i) << 56),
        );
        let bytes = r.to_bytes(&keys).into();
        (r, bytes)
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = PeerList::new(4);
        let (f, fb) = noderef(1);
        assert_eq!(l.add_friend(f.clone(), fb.clone()).unwrap(), Added::New);
        let (o, ob) = noderef(2);
        assert!(l.seen(
            Some((&std::sync::Arc::new(o.clone()), &ob)),
            &o.static_key,
            1234
        ));
        assert!(!l.failed(&o.static_key, 2000));
        let v = Vault::new([5; 32]);
        save(&l, dir.path(), &v).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let disk = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(!disk.windows(9).any(|w| w == b"127.0.0.1"), "sealed");
        let loaded = load(dir.path(), 4, &v);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.list, l);
        let e = loaded.list.get(&o.static_key).unwrap();
        assert_eq!(
            (e.kind, e.last_seen, e.failures),
            (PeerKind::Opennet, 1234, 1)
        );
        assert_eq!(*e.noderef, o);
        assert!(loaded.list.is_friend(&f.static_key));
        assert!(!loaded.list.is_friend(&o.static_key));
        // A missing file is an empty list, quietly.
        let empty = tempfile::tempdir().unwrap();
        let l2 = load(empty.path(), 4, &v);
        assert!(l2.list.entries().is_empty() && l2.warnings.is_empty());
        // An earlier version's clear file is read, sealed and removed.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join(LEGACY_NAME), l.to_toml()).unwrap();
        assert_eq!(load(old.path(), 4, &v).list, l);
        assert!(!old.path().join(LEGACY_NAME).exists());
        assert_eq!(load(old.path(), 4, &v).list, l);
        // Another node's key does not open it.
        let other = load(old.path(), 4, &Vault::new([6; 32]));
        assert!(other.list.entries().is_empty() && !other.warnings.is_empty());
    }

    #[test]
    fn damaged_file_is_moved_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        for garbage in [
            &b"version = 1\n[[peer]]\nkind = \"friend\"\n"[..],
            b"not toml [",
            b"version = 7\n",
            b"\xff\xfe\x00garbage",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), garbage).unwrap();
            let loaded = load(dir.path(), 4, &Vault::new([5; 32]));
            assert!(loaded.list.entries().is_empty());
            assert!(!loaded.warnings.is_empty());
            assert!(!dir.path().join(FILE_NAME).exists());
            assert_eq!(
                std::fs::read(dir.path().join(DAMAGED_NAME)).unwrap(),
                garbage
            );
        }
        // A file too large is not read into memory.
        let big = vec![b'#'; usize::try_from(MAX_FILE_BYTES).unwrap() + 10];
        std::fs::write(dir.path().join(FILE_NAME), big).unwrap();
        let loaded = load(dir.path(), 4, &Vault::new([5; 32]));
        assert!(loaded.list.entries().is_empty());
        assert!(
            loaded.warnings[0].contains("larger"),
            "{:?}",
            loaded.warnings
        );
    }
}
