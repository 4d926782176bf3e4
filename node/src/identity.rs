//! The node's long-lived identity: link static key, location on the
//! routing circle, and the secret that salts the store's index.
//!
//! Created on first start and written atomically (temporary file, fsync,
//! rename, fsync of the directory) with mode 0600. A damaged identity file
//! is never replaced silently: the node refuses to start and says why,
//! because losing it loses the node's place in the network and makes its
//! store unreadable.

use lichen_crypto::b64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name inside the data directory.
pub const FILE_NAME: &str = "identity.toml";

/// What a node is.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// X25519 static private key for the Noise link handshake.
    pub static_secret: [u8; 32],
    /// Location on the routing circle (fraction of 2^64).
    pub location: u64,
    /// Secret salting the datastore's index keys.
    pub store_secret: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity([scrubbed])")
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    static_secret: String,
    location: u64,
    store_secret: String,
}

/// Why the identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// I/O error on the identity file.
    #[error("identity file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file exists but is damaged.
    #[error("identity file {path} is damaged ({why}); refusing to replace it — restore it from a backup or move it away to start as a new node")]
    Damaged {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl Identity {
    /// A new random identity.
    pub fn generate<R: RngCore>(rng: &mut R) -> Self {
        let mut static_secret = [0u8; 32];
        let mut store_secret = [0u8; 32];
        rng.fill_bytes(&mut static_secret);
        rng.fill_bytes(&mut store_secret);
        Identity {
            static_secret,
            location: rng.next_u64(),
            store_secret,
        }
    }

    /// Load the identity from `dir`, creating it on first start. Returns
    /// whether it was created.
    ///
    /// # Errors
    /// [`IdentityError`]; a damaged file is reported, never replaced.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), IdentityError> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Self::parse(&text, &path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity::generate(&mut rand::rngs::OsRng);
                id.save(dir)?;
                Ok((id, true))
            }
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    fn parse(text: &str, path: &Path) -> Result<Self, IdentityError> {
        let damaged = |why: String| IdentityError::Damaged {
            path: path.to_owned(),
            why,
        };
        let d: OnDisk = toml::from_str(text).map_err(|e| damaged(e.to_string()))?;
        if d.version != 1 {
            return Err(damaged(format!("unknown version {}", d.version)));
        }
        let key = |s: &str, name: &str| -> Result<[u8; 32], IdentityError> {
            b64::decode(s)
                .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
                .ok_or_else(|| damaged(format!("{name} is not 32 bytes of base64")))
        };
        Ok(Identity {
            static_secret: key(&d.static_secret, "static_secret")?,
            location: d.location,
            store_secret: key(&d.store_secret, "store_secret")?,
        })
    }

    /// Write atomically into `dir`.
    ///
    /// # Errors
    /// [`IdentityError::Io`].
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let text = toml::to_string(&OnDisk {
            version: 1,
            static_secret: b64::encode(&self.static_secret),
            location: self.location,
            store_secret: b64::encode(&self.store_secret),
        })
        .unwrap_or_default();
        write_atomic(&dir.join(FILE_NAME), text.as_bytes(), true)
    }
}

/// Write `data` to `path` atomically: a crash leaves either the old or the
/// new file, never a torn one. `private` sets mode 0600 on Unix.
///
/// # Errors
/// [`IdentityError::Io`] naming the file.
pub fn write_atomic(path: &Path, data: &[u8], private: bool) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (b, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn damaged_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "version = 1\ngarbage").unwrap();
        let e = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, IdentityError::Damaged { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "version = 1\ngarbage"
        );
    }
}
