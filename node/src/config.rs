//! Node configuration: embedded defaults, an optional TOML file, then
//! command-line overrides (in that order of precedence, lowest first).
//!
//! Every field has a default, so `lichen node` works with no file at all.
//! Unknown keys in the file are an error (a typo must not silently fall
//! back to a default).

use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    /// The file this configuration was read from, where changed settings
    /// are written (`settings::modify`); unset: `lichen.toml` in the data
    /// directory.
    #[serde(skip)]
    pub file: Option<PathBuf>,
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
    /// Clients allowed to connect when `listen` is not loopback: addresses
    /// or CIDR ranges (`"192.168.1.0/24"`, `"fd00::/8"`). Loopback clients
    /// are always allowed. They get restricted access unless they are also
    /// in `full_access_hosts`.
    pub allowed_hosts: Vec<HostRange>,
    /// Clients with full access (as Hyphanet's `allowedHostsFullAccess`):
    /// `Shutdown`, peer changes and lists, node and configuration messages,
    /// and the global queue need it. Same syntax as `allowed_hosts`; a host
    /// listed here may connect even when `allowed_hosts` does not list it.
    /// Unset: loopback clients (127.0.0.0/8, ::1) have full access, others
    /// not. Set: exactly the listed hosts (loopback included only if listed).
    pub full_access_hosts: Option<Vec<HostRange>>,
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
            full_access_hosts: None,
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
    /// Clients allowed when `listen` is not loopback: addresses or CIDR
    /// ranges, as `[fcp] allowed_hosts`. Loopback is always allowed.
    pub allowed_hosts: Vec<HostRange>,
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
    /// Loopback addresses (127.0.0.x, ::1) count as many sources, one
    /// per address, for the per-range limit on inbound handshakes (IPv4
    /// /24, IPv6 /64): for flood tests, which connect from several
    /// 127.0.0.x. Off (the default), loopback has no per-range limit, as
    /// a testnet's nodes all dial from 127.0.0.1.
    pub loopback_sources: bool,
    /// Ask the home router to forward the peer port (UPnP-IGD, NAT-PMP,
    /// PCP) when the node listens on an unspecified or private IPv4
    /// address; the noderef then names the mapped address
    /// (`docs/running.md`, "Port mapping"). On by default.
    pub port_mapping: bool,
    /// The lease asked of the router, in seconds (renewed at half of
    /// what it grants).
    pub port_mapping_lease: u64,
}

impl NetworkConfig {
    /// Set the routing core's caching margins: on a test network requests
    /// and inserts are kept at every HTL (`test_network`), elsewhere the
    /// core's defaults stand.
    pub(crate) fn set_htl_margins(&self, c: &mut lichen_routing::Config) {
        if self.test_network {
            c.request_cache_margin = 0;
            c.insert_store_margin = 0;
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            // Both families (IPv4 only where the host has no IPv6:
            // `lichen_link::sockets::listen`).
            listen: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), DEFAULT_PEER_PORT),
            opennet: true,
            seeds: Vec::new(),
            max_peers: 30,
            upload_limit: 0,
            download_limit: 0,
            test_network: false,
            loopback_sources: false,
            port_mapping: true,
            port_mapping_lease: 3600,
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

/// Whether `client` may use a service with the given allow-list:
/// loopback always, others only when in a listed range.
#[must_use]
pub fn client_allowed(client: IpAddr, allowed: &[HostRange]) -> bool {
    let client = client.to_canonical();
    client.is_loopback() || allowed.iter().any(|r| r.contains(client))
}

impl FcpConfig {
    /// Whether `client` may connect to FCP at all.
    #[must_use]
    pub fn allows(&self, client: IpAddr) -> bool {
        client_allowed(client, &self.allowed_hosts) || self.full_access(client)
    }

    /// Whether `client` has full access (see `full_access_hosts`).
    #[must_use]
    pub fn full_access(&self, client: IpAddr) -> bool {
        match &self.full_access_hosts {
            None => client.to_canonical().is_loopback(),
            Some(list) => list.iter().any(|r| r.contains(client)),
        }
    }
}

/// One entry of an allow-list: an address (`"10.1.2.3"`, `"::1"`) or a
/// CIDR range (`"192.168.1.0/24"`, `"fd00::/8"`). Bits of the address
/// beyond the prefix are ignored (`"192.168.1.7/24"` is `192.168.1.0/24`).
/// IPv4-mapped IPv6 clients (`::ffff:10.1.2.3`) match IPv4 ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRange {
    /// The network address (host bits cleared).
    addr: IpAddr,
    /// Prefix length: 0–32 (IPv4) or 0–128 (IPv6).
    prefix: u8,
}

impl HostRange {
    /// The range of `addr`'s first `prefix` bits.
    ///
    /// # Errors
    /// A prefix longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(format!(
                "prefix length /{prefix} is longer than the address ({bits} bits)"
            ));
        }
        // `::ffff:a.b.c.d/n` (n >= 96) is the IPv4 range `a.b.c.d/(n-96)`.
        let (addr, prefix) = match addr {
            IpAddr::V6(a) if prefix >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix)).into()),
        };
        Ok(HostRange { addr, prefix })
    }

    /// Whether `ip` is in the range.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl std::str::FromStr for HostRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: String| format!("{s:?} is not an IP address or CIDR range: {why}");
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => {
                let p = p
                    .parse::<u8>()
                    .map_err(|_| bad(format!("{p:?} is not a prefix length")))?;
                (ip, Some(p))
            }
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| bad(format!("{ip:?} is not an IP address")))?;
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        HostRange::new(addr, prefix).map_err(bad)
    }
}

impl std::fmt::Display for HostRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for HostRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<IpAddr> for HostRange {
    fn from(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        HostRange {
            addr: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
        }
    }
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
    fn port_mapping_is_on_by_default_and_can_be_switched_off() {
        let d = Config::default().network;
        assert!(d.port_mapping);
        assert_eq!(d.port_mapping_lease, 3600);
        let c = Config::from_toml(
            "[network]
port_mapping = false
port_mapping_lease = 600
",
        )
        .unwrap();
        assert!(!c.network.port_mapping);
        assert_eq!(c.network.port_mapping_lease, 600);
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

    fn range(s: &str) -> HostRange {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_always_allowed() {
        assert!(client_allowed(ip("127.0.0.5"), &[]));
        assert!(client_allowed(ip("::1"), &[]));
        assert!(client_allowed(ip("::ffff:127.0.0.1"), &[]));
        assert!(!client_allowed(ip("10.0.0.1"), &[]));
        assert!(client_allowed(ip("10.0.0.1"), &[range("10.0.0.1")]));
        assert!(client_allowed(ip("10.0.0.1"), &[range("10.0.0.0/8")]));
        assert!(!client_allowed(ip("11.0.0.1"), &[range("10.0.0.0/8")]));
    }

    #[test]
    fn ranges_parse_and_match() {
        let r = range("192.168.1.0/24");
        assert!(r.contains(ip("192.168.1.0")) && r.contains(ip("192.168.1.255")));
        assert!(!r.contains(ip("192.168.2.1")));
        assert!(r.contains(ip("::ffff:192.168.1.9")), "IPv4-mapped clients");
        assert!(!r.contains(ip("::1")));
        // Host bits are ignored.
        assert_eq!(range("192.168.1.77/24"), r);
        assert_eq!(r.to_string(), "192.168.1.0/24");
        let v6 = range("fd00::/8");
        assert!(v6.contains(ip("fd12:3456::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(range("::1").contains(ip("::1")) && !range("::1").contains(ip("::2")));
        assert_eq!(range("::ffff:10.1.2.3"), range("10.1.2.3"));
        assert_eq!(range("::ffff:10.1.0.0/112"), range("10.1.0.0/16"));
        let all = range("0.0.0.0/0");
        assert!(all.contains(ip("1.2.3.4")) && all.contains(ip("255.255.255.255")));
        assert!(range("::/0").contains(ip("2001:db8::1")));
        assert!(range(" 10.0.0.1 ").contains(ip("10.0.0.1")));
    }

    #[test]
    fn bad_ranges_are_clear_config_errors() {
        for (bad, says) in [
            ("10.0.0.0/33", "longer than the address"),
            ("::/129", "longer than the address"),
            ("10.0.0.0/x", "not a prefix length"),
            ("10.0.0.0/-1", "not a prefix length"),
            ("10.0.0.256", "not an IP address"),
            ("localhost", "not an IP address"),
            ("", "not an IP address"),
            ("10.0.0.0/", "not a prefix length"),
        ] {
            let e = bad.parse::<HostRange>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = Config::from_toml("[fcp]\nallowed_hosts = [\"10.0.0.1\", \"10.0.0.0/40\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("allowed_hosts") && e.contains("10.0.0.0/40") && e.contains("longer"),
            "{e}"
        );
        let e = Config::from_toml("[gateway]\nallowed_hosts = [\"nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("not an IP address"), "{e}");
        let e = Config::from_toml("[fcp]\nfull_access_hosts = [\"1.2.3\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("full_access_hosts") && e.contains("1.2.3"),
            "{e}"
        );
    }

    #[test]
    fn old_plain_address_lists_still_load() {
        let c = Config::from_toml(
            "[fcp]\nallowed_hosts = [\"10.0.0.7\", \"::1\"]\n[gateway]\nallowed_hosts = [\"192.168.0.2\"]\n",
        )
        .unwrap();
        assert_eq!(c.fcp.allowed_hosts, vec![range("10.0.0.7"), range("::1")]);
        assert!(c.fcp.allows(ip("10.0.0.7")) && !c.fcp.allows(ip("10.0.0.8")));
        assert!(client_allowed(ip("192.168.0.2"), &c.gateway.allowed_hosts));
        assert!(c.fcp.full_access_hosts.is_none());
    }

    #[test]
    fn full_access_defaults_to_loopback() {
        let c = Config::from_toml("[fcp]\nallowed_hosts = [\"10.0.0.0/8\"]\n").unwrap();
        let f = &c.fcp;
        assert!(f.full_access(ip("127.0.0.1")) && f.full_access(ip("127.9.9.9")));
        assert!(f.full_access(ip("::1")) && f.full_access(ip("::ffff:127.0.0.1")));
        // Allowed, but restricted.
        assert!(f.allows(ip("10.1.1.1")) && !f.full_access(ip("10.1.1.1")));
        assert!(!f.allows(ip("192.168.1.1")));
    }

    #[test]
    fn full_access_list_replaces_the_default() {
        let c = Config::from_toml(
            "[fcp]\nallowed_hosts = [\"127.0.0.0/8\"]\nfull_access_hosts = [\"127.0.0.2\", \"192.168.1.0/24\"]\n",
        )
        .unwrap();
        let f = &c.fcp;
        assert!(f.allows(ip("127.0.0.1")) && !f.full_access(ip("127.0.0.1")));
        assert!(f.full_access(ip("127.0.0.2")));
        assert!(!f.full_access(ip("::1")));
        // A full-access host may connect without being in allowed_hosts.
        assert!(f.allows(ip("192.168.1.20")) && f.full_access(ip("192.168.1.20")));
        let none = Config::from_toml("[fcp]\nfull_access_hosts = []\n").unwrap();
        assert!(!none.fcp.full_access(ip("127.0.0.1")) && none.fcp.allows(ip("127.0.0.1")));
    }

    use proptest::prelude::*;

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|v| IpAddr::V4(v.into())),
            any::<u128>().prop_map(|v| IpAddr::V6(v.into())),
        ]
    }

    proptest! {
        /// A range contains exactly the addresses that agree with its
        /// network on the first `prefix` bits, checked bit by bit.
        #[test]
        fn contains_is_prefix_agreement(net in any_ip(), probe in any::<u128>(), prefix in 0u8..=128) {
            let bits: u8 = if net.is_ipv4() { 32 } else { 128 };
            let prefix = prefix % (bits + 1);
            let r = HostRange::new(net, prefix).unwrap();
            let (n, p) = match net {
                IpAddr::V4(a) => (u128::from(u32::from(a)), IpAddr::V4((probe as u32).into())),
                IpAddr::V6(a) => (u128::from(a), IpAddr::V6(probe.into())),
            };
            let probe_bits = match p {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            // Skip probes that canonicalise to another family.
            prop_assume!(p.to_canonical().is_ipv4() == p.is_ipv4());
            prop_assume!(net.to_canonical().is_ipv4() == net.is_ipv4());
            let agree = (0..prefix).all(|i| {
                let bit = u32::from(bits - 1 - i);
                (n >> bit) & 1 == (probe_bits >> bit) & 1
            });
            prop_assert_eq!(r.contains(p), agree);
            // The address the range was made from is always inside.
            prop_assert!(r.contains(net));
        }

        /// Display then parse gives the same range.
        #[test]
        fn display_parses_back(net in any_ip(), prefix in 0u8..=128) {
            let bits: u8 = if net.is_ipv4() { 32 } else { 128 };
            let r = HostRange::new(net, prefix % (bits + 1)).unwrap();
            prop_assert_eq!(r.to_string().parse::<HostRange>().unwrap(), r);
        }

        /// A plain address is a range of one: itself only.
        #[test]
        fn plain_address_is_itself_only(a in any_ip(), b in any_ip()) {
            let r: HostRange = a.to_string().parse().unwrap();
            prop_assert!(r.contains(a));
            prop_assert_eq!(r.contains(b), a.to_canonical() == b.to_canonical());
        }

        /// Any text gives a range or an error naming the text, never a panic.
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,50}") {
            if let Err(e) = s.parse::<HostRange>() {
                prop_assert!(e.contains("is not an IP address or CIDR range"));
            }
        }
    }
}
