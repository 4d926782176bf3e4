//! Node configuration: embedded defaults, an optional TOML file, then
//! command-line overrides (in that order of precedence, lowest first).
//!
//! Every field has a default, so `lichen node` works with no file at all.
//! Unknown keys in the file are an error (a typo must not silently fall
//! back to a default).

use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Default FCP port (Freenet's).
pub const DEFAULT_FCP_PORT: u16 = 9481;
/// Default gateway port (Freenet's fproxy).
pub const DEFAULT_GATEWAY_PORT: u16 = 8888;
/// Default peer port.
pub const DEFAULT_PEER_PORT: u16 = 9489;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What the TOML parser said (line, column, key).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole node configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where identity, store and persistent requests live.
    pub data_dir: Option<PathBuf>,
    /// Client protocol.
    pub fcp: FcpConfig,
    /// HTTP gateway.
    pub gateway: GatewayConfig,
    /// Peer-to-peer network.
    pub network: NetworkConfig,
    /// Datastore budgets.
    pub store: StoreConfig,
    /// How the node's own requests are hidden from its neighbours.
    pub anonymity: AnonymityConfig,
    /// The passphrase the node's secrets are sealed under (from the
    /// command line, never from the file).
    #[serde(skip)]
    pub passphrase: Option<crate::vault::Passphrase>,
}

/// Anonymity settings (`docs/tunnels.md`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnonymityConfig {
    /// Hops of the premix tunnels the node's own fetches and inserts go
    /// through before they enter routing at an exit (1–3). 0 turns
    /// tunnels off: own requests then leave straight from this node, and
    /// its neighbours can tell them from forwarded ones by statistics
    /// over a download (the downloader attack of `docs/anonymity.md`).
    /// 1 hides them from every neighbour but the one hop, which then
    /// learns both who and what.
    pub tunnel_hops: u8,
}

impl Default for AnonymityConfig {
    fn default() -> Self {
        AnonymityConfig { tunnel_hops: 2 }
    }
}

/// Most tunnel hops (`[anonymity] tunnel_hops`).
pub const MAX_TUNNEL_HOPS: u8 = 3;

/// FCP server settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FcpConfig {
    /// Listen address. Loopback by default.
    pub listen: SocketAddr,
    /// Client addresses allowed to connect when `listen` is not loopback.
    /// Loopback clients are always allowed.
    pub allowed_hosts: Vec<IpAddr>,
    /// Most simultaneous FCP connections.
    pub max_connections: usize,
    /// Largest direct upload accepted over FCP, in bytes.
    pub max_upload_bytes: u64,
    /// Directories clients may read uploads from / write downloads to
    /// (besides those approved through TestDDA). Empty: TestDDA only.
    pub allowed_dirs: Vec<PathBuf>,
}

impl Default for FcpConfig {
    fn default() -> Self {
        FcpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_FCP_PORT),
            allowed_hosts: Vec::new(),
            max_connections: 256,
            max_upload_bytes: 64 * 1024 * 1024 * 1024,
            allowed_dirs: Vec::new(),
        }
    }
}

/// HTTP gateway settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listen address. Loopback by default.
    pub listen: SocketAddr,
    /// Whether to run the gateway.
    pub enabled: bool,
    /// Client addresses allowed when `listen` is not loopback.
    pub allowed_hosts: Vec<IpAddr>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_GATEWAY_PORT),
            enabled: true,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Peer network settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Address peers connect to.
    pub listen: SocketAddr,
    /// Accept strangers (opennet). Off: friends only (darknet).
    pub opennet: bool,
    /// Files holding seed node references.
    pub seeds: Vec<PathBuf>,
    /// Most opennet peers.
    pub max_peers: usize,
    /// Upload limit in bytes per second (0: unlimited).
    #[serde(deserialize_with = "de_bytes")]
    pub upload_limit: u64,
    /// Download limit in bytes per second (0: unlimited).
    #[serde(deserialize_with = "de_bytes")]
    pub download_limit: u64,
    /// A local test network of a few nodes (`lichen testnet` sets it):
    /// inserts are stored and requests cached at every HTL, so a network
    /// too small for an insert to get below the caching level still keeps
    /// what is inserted. Never on a real network: there it lets the
    /// publisher's and the downloader's neighbours keep, and be seen to
    /// keep, what they pass on at the highest HTLs (docs/routing.md).
    pub test_network: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PEER_PORT),
            opennet: true,
            seeds: Vec::new(),
            max_peers: 30,
            upload_limit: 0,
            download_limit: 0,
            test_network: false,
        }
    }
}

/// Datastore budgets (logical bytes of blocks).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Long-term store: blocks this node is responsible for.
    #[serde(deserialize_with = "de_bytes")]
    pub store_bytes: u64,
    /// Shared cache of blocks passing through.
    #[serde(deserialize_with = "de_bytes")]
    pub cache_bytes: u64,
    /// Private cache of what this node's own clients inserted and fetched.
    #[serde(deserialize_with = "de_bytes")]
    pub client_cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            store_bytes: 1 << 30,
            cache_bytes: 512 << 20,
            client_cache_bytes: 2 << 30,
        }
    }
}

/// Parse a byte size: a plain integer, or a number with a suffix
/// (`k`, `KiB`, `M`, `MiB`, `G`, `GiB`, `T`, `TiB`; all binary).
///
/// # Errors
/// A message naming the bad input.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size (e.g. 512MiB)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        N(u64),
        S(String),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

impl Config {
    /// Load `path` (TOML) over the defaults.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parse TOML text over the defaults.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Check cross-field constraints.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        const MIN: u64 = 1 << 20;
        for (name, v) in [
            ("store.store_bytes", self.store.store_bytes),
            ("store.cache_bytes", self.store.cache_bytes),
            ("store.client_cache_bytes", self.store.client_cache_bytes),
        ] {
            if v < MIN {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at least 1MiB (got {v} bytes)"
                )));
            }
        }
        if self.anonymity.tunnel_hops > MAX_TUNNEL_HOPS {
            return Err(ConfigError::Invalid(format!(
                "anonymity.tunnel_hops must be 0 to {MAX_TUNNEL_HOPS} (got {})",
                self.anonymity.tunnel_hops
            )));
        }
        if self.fcp.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "fcp.max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The data directory: configured, or `$XDG_DATA_HOME/lichen`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when no home directory can be found.
    pub fn data_dir(&self) -> Result<PathBuf, ConfigError> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        dirs::data_dir().map(|d| d.join("lichen")).ok_or_else(|| {
            ConfigError::Invalid("no data directory: set --data-dir or $XDG_DATA_HOME".into())
        })
    }
}

/// Whether `client` may use a service listening on `listen` with the given
/// allow-list: loopback always, others only when listed.
#[must_use]
pub fn client_allowed(client: IpAddr, allowed: &[IpAddr]) -> bool {
    client.is_loopback() || allowed.contains(&client)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        assert_eq!(Config::default().anonymity.tunnel_hops, 2);
        let c = Config::from_toml("[anonymity]\ntunnel_hops = 0\n").unwrap();
        assert_eq!(c.anonymity.tunnel_hops, 0);
    }

    #[test]
    fn sizes_and_overrides() {
        let c = Config::from_toml(
            "[store]\nstore_bytes = \"2GiB\"\ncache_bytes = 4194304\n[fcp]\nlisten = \"127.0.0.1:1234\"\n",
        )
        .unwrap();
        assert_eq!(c.store.store_bytes, 2 << 30);
        assert_eq!(c.store.cache_bytes, 4 << 20);
        assert_eq!(c.fcp.listen.port(), 1234);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = Config::from_toml("[fcp]\nlisen = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = Config::from_toml("[store]\nstore_bytes = \"12XB\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("XB"), "{e}");
        let e = Config::from_toml("[store]\nstore_bytes = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least"), "{e}");
        assert!(Config::from_toml("not toml [").is_err());
        let e = Config::from_toml("[anonymity]\ntunnel_hops = 4\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tunnel_hops must be 0 to 3"), "{e}");
        let e = Config::from_toml("[anonymity]\ntunnel_hops = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tunnel_hops"), "{e}");
    }

    #[test]
    fn parse_bytes_units() {
        assert_eq!(parse_bytes("10").unwrap(), 10);
        assert_eq!(parse_bytes("1k").unwrap(), 1024);
        assert_eq!(parse_bytes("3 MiB").unwrap(), 3 << 20);
        assert!(parse_bytes("99999999999999TiB").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn loopback_always_allowed() {
        assert!(client_allowed("127.0.0.5".parse().unwrap(), &[]));
        assert!(!client_allowed("10.0.0.1".parse().unwrap(), &[]));
        assert!(client_allowed(
            "10.0.0.1".parse().unwrap(),
            &["10.0.0.1".parse().unwrap()]
        ));
    }
}
