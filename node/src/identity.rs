//! The node's long-lived identity: link static key, location on the
//! routing circle, and the secret that salts the store's index.
//!
//! Created on first start and written atomically (temporary file, fsync,
//! rename, fsync of the directory) with mode 0600. A damaged identity file
//! is never replaced silently: the node refuses to start and says why,
//! because losing it loses the node's place in the network and makes its
//! store unreadable.

use crate::files::write_atomic;
use crate::vault::{Passphrase, Vault};
use lichen_crypto::b64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// File name inside the data directory.
pub(crate) const FILE_NAME: &str = "identity.toml";
/// The key file that seals the identity when there is no passphrase.
pub(crate) const KEY_FILE: &str = "node.key";

/// Argon2id memory (KiB), iterations and lanes for new passphrases:
/// RFC 9106's second recommendation (64 MiB, 3 passes) with one lane,
/// about 0.15 s on one core of the machines the project measures on
/// (`docs/store.md`). The parameters are stored beside the salt, so they can change
/// without breaking existing nodes.
const KDF_MEMORY_KIB: u32 = 64 * 1024;
const KDF_ITERATIONS: u32 = 3;
const KDF_LANES: u32 = 1;
/// Largest parameters accepted from a file (a planted identity file must
/// not make the node allocate without bound).
const KDF_MAX_MEMORY_KIB: u32 = 1 << 20;
const KDF_MAX_ITERATIONS: u32 = 64;
const KDF_MAX_LANES: u32 = 16;

/// How the identity file is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Under the key file `node.key` beside it.
    KeyFile,
    /// Under a passphrase (Argon2id).
    Passphrase,
}

/// What a node is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// X25519 static private key for the Noise link handshake.
    pub(crate) static_secret: [u8; 32],
    /// Location on the routing circle (fraction of 2^64).
    pub(crate) location: u64,
    /// Secret salting the datastore's index keys.
    pub(crate) store_secret: [u8; 32],
    /// The key everything else at rest is sealed under (`crate::vault`).
    pub(crate) vault_key: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "Identity")
    }
}

/// Version 1: everything in the clear (read only, to upgrade it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDiskV1 {
    version: u32,
    static_secret: String,
    location: u64,
    store_secret: String,
}

/// Version 2: the secrets sealed (`crate::vault` record, purpose
/// `"identity"`) under the key file or a passphrase-derived key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    /// `"key-file"` or `"passphrase"`.
    protection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<Kdf>,
    /// Base64 of the sealed secrets.
    sealed: String,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Kdf {
    /// Always `"argon2id"`.
    algorithm: String,
    memory_kib: u32,
    iterations: u32,
    lanes: u32,
    salt: String,
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
    /// The node's secrets are sealed under a passphrase and none was given.
    #[error("this node's secrets are sealed under a passphrase: start it with --passphrase-file FILE, with LICHEN_PASSPHRASE set, or from a terminal to be asked (nothing was changed)")]
    PassphraseNeeded,
    /// The passphrase does not open the identity.
    #[error("wrong passphrase for {path} (or the file is damaged); nothing was changed")]
    WrongPassphrase {
        /// File.
        path: PathBuf,
    },
    /// The key file is missing or does not open the identity.
    #[error("the key file {path} is missing or does not open identity.toml ({why}); restore it from a backup (nothing was changed)")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The identity's four secrets, in the order they are sealed.
const PAYLOAD_LEN: usize = 32 + 8 + 32 + 32;

impl Identity {
    /// The node's link keys (the X25519 static key is `static_secret`;
    /// see [`lichen_link::keys`]).
    #[must_use]
    pub(crate) fn link_keys(&self) -> lichen_link::NodeKeys {
        lichen_link::NodeKeys::from_static_secret(self.static_secret)
    }

    /// The vault everything at rest is sealed under.
    #[must_use]
    pub(crate) fn vault(&self) -> Vault {
        Vault::new(self.vault_key)
    }

    /// A new random identity.
    pub(crate) fn generate<R: RngCore>(rng: &mut R) -> Self {
        let mut static_secret = [0u8; 32];
        let mut store_secret = [0u8; 32];
        let mut vault_key = [0u8; 32];
        rng.fill_bytes(&mut static_secret);
        rng.fill_bytes(&mut store_secret);
        rng.fill_bytes(&mut vault_key);
        Identity {
            static_secret,
            location: rng.next_u64(),
            store_secret,
            vault_key,
        }
    }

    fn payload(&self) -> Zeroizing<Vec<u8>> {
        let mut p = Zeroizing::new(Vec::with_capacity(PAYLOAD_LEN));
        p.extend_from_slice(&self.static_secret);
        p.extend_from_slice(&self.location.to_be_bytes());
        p.extend_from_slice(&self.store_secret);
        p.extend_from_slice(&self.vault_key);
        p
    }

    fn from_payload(p: &[u8]) -> Option<Self> {
        if p.len() != PAYLOAD_LEN {
            return None;
        }
        let key = |r: std::ops::Range<usize>| p.get(r).and_then(|b| <[u8; 32]>::try_from(b).ok());
        Some(Identity {
            static_secret: key(0..32)?,
            location: u64::from_be_bytes(p.get(32..40)?.try_into().ok()?),
            store_secret: key(40..72)?,
            vault_key: key(72..104)?,
        })
    }

    /// Load the identity from `dir`, creating it on first start. Returns
    /// whether it was created. With `passphrase`, a node whose identity
    /// is sealed under the key file (or is of version 1, in the clear) is
    /// sealed under the passphrase from now on and its key file removed.
    ///
    /// Nothing on disk changes when this fails.
    ///
    /// # Errors
    /// [`IdentityError`]; a damaged file is reported, never replaced.
    pub(crate) fn load_or_create(
        dir: &Path,
        passphrase: Option<&Passphrase>,
    ) -> Result<(Self, bool), IdentityError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity::generate(&mut rand::rngs::OsRng);
                id.save(dir, passphrase)?;
                return Ok((id, true));
            }
            Err(source) => return Err(IdentityError::Io { path, source }),
        };
        let damaged = |why: String| IdentityError::Damaged {
            path: path.clone(),
            why,
        };
        let version = toml::from_str::<toml::Table>(&text)
            .map_err(|e| damaged(e.to_string()))?
            .get("version")
            .and_then(toml::Value::as_integer);
        match version {
            Some(1) => {
                // Upgrade: seal what version 1 kept in the clear.
                let id = Self::parse_v1(&text, &path)?;
                id.save(dir, passphrase)?;
                tracing::info!("sealed the node's identity (it was kept in the clear)");
                Ok((id, false))
            }
            Some(2) => {
                let d: OnDisk = toml::from_str(&text).map_err(|e| damaged(e.to_string()))?;
                let id = Self::unseal(dir, &d, passphrase)?;
                if passphrase.is_some() && d.protection == "key-file" {
                    id.save(dir, passphrase)?;
                    tracing::info!(
                        "the node's secrets are now sealed under the passphrase; the key file is removed"
                    );
                }
                Ok((id, false))
            }
            other => Err(damaged(format!("unknown version {other:?}"))),
        }
    }

    fn parse_v1(text: &str, path: &Path) -> Result<Self, IdentityError> {
        let damaged = |why: String| IdentityError::Damaged {
            path: path.to_owned(),
            why,
        };
        let d: OnDiskV1 = toml::from_str(text).map_err(|e| damaged(e.to_string()))?;
        if d.version != 1 {
            return Err(damaged(format!("unknown version {}", d.version)));
        }
        let key = |s: &str, name: &str| -> Result<[u8; 32], IdentityError> {
            b64::decode(s)
                .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
                .ok_or_else(|| damaged(format!("{name} is not 32 bytes of base64")))
        };
        // Version 1 had no vault key: a new one (nothing was sealed yet).
        let mut vault_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut vault_key);
        Ok(Identity {
            static_secret: key(&d.static_secret, "static_secret")?,
            location: d.location,
            store_secret: key(&d.store_secret, "store_secret")?,
            vault_key,
        })
    }

    fn unseal(
        dir: &Path,
        d: &OnDisk,
        passphrase: Option<&Passphrase>,
    ) -> Result<Self, IdentityError> {
        let path = dir.join(FILE_NAME);
        let damaged = |why: &str| IdentityError::Damaged {
            path: path.clone(),
            why: why.to_string(),
        };
        let sealed = b64::decode(&d.sealed).ok_or_else(|| damaged("sealed is not base64"))?;
        match d.protection.as_str() {
            "passphrase" => {
                let kdf = d.kdf.as_ref().ok_or_else(|| damaged("no kdf"))?;
                let pass = passphrase.ok_or(IdentityError::PassphraseNeeded)?;
                let kek = derive(pass, kdf).map_err(|why| damaged(&why))?;
                Vault::new(*kek)
                    .open("identity", &sealed)
                    .ok()
                    .and_then(|p| Self::from_payload(&p))
                    .ok_or(IdentityError::WrongPassphrase { path: path.clone() })
            }
            "key-file" => {
                let kpath = dir.join(KEY_FILE);
                let key_error = |why: String| IdentityError::KeyFile {
                    path: kpath.clone(),
                    why,
                };
                let key = std::fs::read(&kpath).map_err(|e| key_error(e.to_string()))?;
                let key: [u8; 32] = key
                    .try_into()
                    .map_err(|_| key_error("not 32 bytes".into()))?;
                Vault::new(key)
                    .open("identity", &sealed)
                    .ok()
                    .and_then(|p| Self::from_payload(&p))
                    .ok_or_else(|| key_error("it does not open the identity".into()))
            }
            other => Err(damaged(&format!("unknown protection {other:?}"))),
        }
    }

    /// Write atomically into `dir`, sealed under `passphrase` or, without
    /// one, under the key file (created when missing). Sealing under a
    /// passphrase removes the key file afterwards.
    ///
    /// # Errors
    /// [`IdentityError::Io`].
    pub(crate) fn save(
        &self,
        dir: &Path,
        passphrase: Option<&Passphrase>,
    ) -> Result<(), IdentityError> {
        let path = dir.join(FILE_NAME);
        let io = |path: PathBuf| {
            move |e: crate::files::WriteError| IdentityError::Io {
                path,
                source: e.source,
            }
        };
        let kpath = dir.join(KEY_FILE);
        let (protection, kdf, kek) = match passphrase {
            Some(pass) => {
                let kdf = Kdf {
                    algorithm: "argon2id".into(),
                    memory_kib: KDF_MEMORY_KIB,
                    iterations: KDF_ITERATIONS,
                    lanes: KDF_LANES,
                    salt: b64::encode(&rand::random::<[u8; 16]>()),
                };
                let kek = derive(pass, &kdf).map_err(|why| IdentityError::Damaged {
                    path: path.clone(),
                    why,
                })?;
                ("passphrase", Some(kdf), kek)
            }
            None => {
                let key = match std::fs::read(&kpath).ok().map(<[u8; 32]>::try_from) {
                    Some(Ok(k)) => Zeroizing::new(k),
                    _ => {
                        let k = Zeroizing::new(rand::random::<[u8; 32]>());
                        write_atomic(&kpath, &k[..], true).map_err(io(kpath.clone()))?;
                        k
                    }
                };
                ("key-file", None, key)
            }
        };
        let text = toml::to_string(&OnDisk {
            version: 2,
            protection: protection.into(),
            kdf,
            sealed: b64::encode(&Vault::new(*kek).seal("identity", &self.payload())),
        })
        .unwrap_or_default();
        write_atomic(&path, text.as_bytes(), true).map_err(io(path.clone()))?;
        if passphrase.is_some() {
            crate::files::remove_wiped(&kpath);
        }
        Ok(())
    }
}

/// The node's secrets (link static key, store secret, vault key), for the
/// whole-system test that searches a seized disk for them. Reading them
/// needs what the node needs (the key file, or the passphrase); creates
/// nothing.
///
/// # Errors
/// [`IdentityError`]; also when there is no identity yet.
#[doc(hidden)]
pub fn secrets_for_tests(
    dir: &Path,
    passphrase: Option<&Passphrase>,
) -> Result<[[u8; 32]; 3], IdentityError> {
    let id = Identity::unseal(dir, &read_sealed(dir)?, passphrase)?;
    Ok([id.static_secret, id.store_secret, id.vault_key])
}

/// The sealed (version 2) identity file in `dir`, read without opening it.
fn read_sealed(dir: &Path) -> Result<OnDisk, IdentityError> {
    let path = dir.join(FILE_NAME);
    let text = std::fs::read_to_string(&path).map_err(|source| IdentityError::Io {
        path: path.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| IdentityError::Damaged {
        path,
        why: format!("{e} (start the node once to upgrade an identity of version 1)"),
    })
}

impl OnDisk {
    /// How it is sealed; `None` for an unknown protection.
    fn protection(&self) -> Option<Protection> {
        match self.protection.as_str() {
            "passphrase" => Some(Protection::Passphrase),
            "key-file" => Some(Protection::KeyFile),
            _ => None,
        }
    }
}

/// Seal the identity in `dir` under `new` (a passphrase, or a key file
/// when `None`), opening it with `current` (the passphrase it is sealed
/// under now; ignored for a key file). Returns how it was sealed before.
///
/// # Errors
/// [`IdentityError`]: no identity, a wrong current passphrase, I/O.
pub fn change_protection(
    dir: &Path,
    current: Option<&Passphrase>,
    new: Option<&Passphrase>,
) -> Result<Protection, IdentityError> {
    let d = read_sealed(dir)?;
    // An unknown protection fails in `unseal` below.
    let before = d.protection().unwrap_or(Protection::KeyFile);
    let id = Identity::unseal(dir, &d, current)?;
    id.save(dir, new)?;
    Ok(before)
}

/// How the identity in `dir` is sealed; `None` when there is none yet
/// (or it is of version 1, in the clear). Lets the command line ask for
/// a passphrase only when one is needed.
#[must_use]
pub fn protection(dir: &Path) -> Option<Protection> {
    read_sealed(dir).ok()?.protection()
}

/// The key-encryption key: Argon2id(passphrase, salt) with the file's
/// parameters (bounded).
fn derive(pass: &Passphrase, kdf: &Kdf) -> Result<Zeroizing<[u8; 32]>, String> {
    if kdf.algorithm != "argon2id" {
        return Err(format!("unknown key derivation {:?}", kdf.algorithm));
    }
    if kdf.memory_kib > KDF_MAX_MEMORY_KIB
        || kdf.iterations > KDF_MAX_ITERATIONS
        || kdf.lanes > KDF_MAX_LANES
    {
        return Err("key derivation parameters out of range".into());
    }
    let salt = b64::decode(&kdf.salt).ok_or("salt is not base64")?;
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.lanes, Some(32))
        .map_err(|e| format!("key derivation parameters: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass.as_bytes(), &salt, &mut out[..])
        .map_err(|e| format!("key derivation: {e}"))?;
    Ok(out)
}

/// This node's noderef text, for `lichen noderef`: loads (or creates) the
/// identity in the configured data directory. A listen address that is
/// unspecified (`[::]`, `0.0.0.0`) is written as loopback; the second value says
/// so, and the caller should tell the user to set `[network] listen`.
///
/// # Errors
/// The data directory or the identity cannot be read.
pub(crate) fn local_noderef(config: &crate::config::Config) -> anyhow::Result<(String, bool)> {
    let dir = config.data_dir()?;
    let (id, _) = Identity::load_or_create(&dir, config.passphrase.as_ref())?;
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

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.to_string()).unwrap()
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_once_then_reloaded_and_sealed_under_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = Identity::load_or_create(dir.path(), None).unwrap();
        assert!(created);
        let (b, created) = Identity::load_or_create(dir.path(), None).unwrap();
        assert!(!created);
        assert_eq!(a, b);
        assert_eq!(mode(&dir.path().join(FILE_NAME)), 0o600);
        assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
        assert_eq!(protection(dir.path()), Some(Protection::KeyFile));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(!text.contains(&b64::encode(&a.store_secret)));
        assert!(!text.contains(&b64::encode(&a.static_secret)));
        // Without its key file the identity does not open, and stays.
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let e = Identity::load_or_create(dir.path(), None).unwrap_err();
        assert!(matches!(e, IdentityError::KeyFile { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            text
        );
    }

    #[test]
    fn passphrase_mode_refuses_without_or_with_a_wrong_passphrase_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = Identity::load_or_create(dir.path(), Some(&pass("correct horse"))).unwrap();
        assert_eq!(protection(dir.path()), Some(Protection::Passphrase));
        assert!(!dir.path().join(KEY_FILE).exists());
        let before = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let e = Identity::load_or_create(dir.path(), None).unwrap_err();
        assert!(matches!(e, IdentityError::PassphraseNeeded), "{e}");
        let e = Identity::load_or_create(dir.path(), Some(&pass("wrong"))).unwrap_err();
        assert!(matches!(e, IdentityError::WrongPassphrase { .. }), "{e}");
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), before);
        assert!(!dir.path().join(KEY_FILE).exists());
        let (b, _) = Identity::load_or_create(dir.path(), Some(&pass("correct horse\n"))).unwrap();
        assert_eq!(a, b, "a trailing newline (from a file) is not part of it");
    }

    #[test]
    fn a_key_file_node_moves_to_a_passphrase_and_version_1_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = Identity::load_or_create(dir.path(), None).unwrap();
        let (b, _) = Identity::load_or_create(dir.path(), Some(&pass("pw"))).unwrap();
        assert_eq!(a, b);
        assert!(!dir.path().join(KEY_FILE).exists());
        assert_eq!(protection(dir.path()), Some(Protection::Passphrase));

        // Version 1 kept the secrets in the clear.
        let v1 = tempfile::tempdir().unwrap();
        let text = format!(
            "version = 1\nstatic_secret = \"{}\"\nlocation = 42\nstore_secret = \"{}\"\n",
            b64::encode(&[5; 32]),
            b64::encode(&[6; 32])
        );
        std::fs::write(v1.path().join(FILE_NAME), text).unwrap();
        let (c, created) = Identity::load_or_create(v1.path(), None).unwrap();
        assert!(!created);
        assert_eq!(
            (c.static_secret, c.location, c.store_secret),
            ([5; 32], 42, [6; 32])
        );
        let now = std::fs::read_to_string(v1.path().join(FILE_NAME)).unwrap();
        assert!(now.contains("version = 2") && !now.contains(&b64::encode(&[6; 32])));
        assert_eq!(Identity::load_or_create(v1.path(), None).unwrap().0, c);
    }

    #[test]
    fn the_passphrase_is_set_changed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (a, _) = Identity::load_or_create(d, None).unwrap();
        let was = change_protection(d, None, Some(&pass("one"))).unwrap();
        assert_eq!(was, Protection::KeyFile);
        assert!(!d.join(KEY_FILE).exists());
        let e = change_protection(d, Some(&pass("two")), Some(&pass("three"))).unwrap_err();
        assert!(matches!(e, IdentityError::WrongPassphrase { .. }), "{e}");
        change_protection(d, Some(&pass("one")), Some(&pass("two"))).unwrap();
        assert!(Identity::load_or_create(d, Some(&pass("one"))).is_err());
        assert_eq!(
            Identity::load_or_create(d, Some(&pass("two"))).unwrap().0,
            a
        );
        let was = change_protection(d, Some(&pass("two")), None).unwrap();
        assert_eq!(was, Protection::Passphrase);
        assert_eq!(protection(d), Some(Protection::KeyFile));
        assert_eq!(Identity::load_or_create(d, None).unwrap().0, a);
    }

    #[test]
    fn damaged_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "version = 1\ngarbage",
            "version = 2\nprotection = \"key-file\"\nsealed = \"!!\"",
            "version = 2\nprotection = \"passphrase\"\nsealed = \"AAAA\"\n[kdf]\nalgorithm = \"argon2id\"\nmemory_kib = 4294967295\niterations = 3\nlanes = 1\nsalt = \"AAAAAAAAAAAAAAAAAAAAAA\"",
            "version = 9",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            let e = Identity::load_or_create(dir.path(), Some(&pass("p"))).unwrap_err();
            assert!(matches!(e, IdentityError::Damaged { .. }), "{bad}: {e}");
            assert_eq!(
                std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
                bad
            );
        }
    }

    #[test]
    fn empty_passphrases_are_refused() {
        assert!(Passphrase::new(String::new()).is_none());
        assert!(Passphrase::new("\n".into()).is_none());
        assert_eq!(format!("{:?}", pass("secret")), "Passphrase(..)");
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
