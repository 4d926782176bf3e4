//! The node's long-lived identity: link static key, location on the
//! routing circle, and the secret that salts the store's index.
//!
//! Created on first start and written atomically (temporary file, fsync,
//! rename, fsync of the directory) with mode 0600. A damaged identity file
//! is never replaced silently: the node refuses to start and says why,
//! because losing it loses the node's place in the network and makes its
//! store unreadable.

use crate::files::write_atomic;
use lichen_crypto::b64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name inside the data directory.
pub(crate) const FILE_NAME: &str = "identity.toml";

/// What a node is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// X25519 static private key for the Noise link handshake.
    pub(crate) static_secret: [u8; 32],
    /// Location on the routing circle (fraction of 2^64).
    pub(crate) location: u64,
    /// Secret salting the datastore's index keys.
    pub(crate) store_secret: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "Identity")
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
    /// The node's link keys (the X25519 static key is `static_secret`;
    /// see [`lichen_link::keys`]).
    #[must_use]
    pub(crate) fn link_keys(&self) -> lichen_link::NodeKeys {
        lichen_link::NodeKeys::from_static_secret(self.static_secret)
    }

    /// A new random identity.
    pub(crate) fn generate<R: RngCore>(rng: &mut R) -> Self {
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
    pub(crate) fn load_or_create(dir: &Path) -> Result<(Self, bool), IdentityError> {
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
    pub(crate) fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let text = toml::to_string(&OnDisk {
            version: 1,
            static_secret: b64::encode(&self.static_secret),
            location: self.location,
            store_secret: b64::encode(&self.store_secret),
        })
        .unwrap_or_default();
        let path = dir.join(FILE_NAME);
        write_atomic(&path, text.as_bytes(), true).map_err(|e| IdentityError::Io {
            path,
            source: e.source,
        })
    }
}

/// This node's noderef text, for `lichen noderef`: loads (or creates) the
/// identity in the configured data directory. A listen address that is
/// unspecified (`0.0.0.0`) is written as loopback; the second value says
/// so, and the caller should tell the user to set `[network] listen`.
///
/// # Errors
/// The data directory or the identity cannot be read.
pub(crate) fn local_noderef(config: &crate::config::Config) -> anyhow::Result<(String, bool)> {
    let dir = config.data_dir()?;
    let (id, _) = Identity::load_or_create(&dir)?;
    let keys = id.link_keys();
    let mut addr = config.network.listen;
    let unspecified = addr.ip().is_unspecified();
    if unspecified {
        addr.set_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    let r = lichen_link::NodeRef::new(&keys, vec![addr], Some(id.location));
    Ok((r.to_text(&keys), unspecified))
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

    #[test]
    fn local_text_loads_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::config::Config {
            data_dir: Some(dir.path().to_owned()),
            ..crate::config::Config::default()
        };
        let (t1, loopback) = local_noderef(&c).unwrap();
        assert!(loopback);
        let (t2, _) = local_noderef(&c).unwrap();
        assert_eq!(t1, t2, "same identity, same noderef");
        let r = lichen_link::NodeRef::parse(&t1).unwrap();
        assert!(r.addresses[0].ip().is_loopback());
    }
}
