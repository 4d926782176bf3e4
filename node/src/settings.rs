//! The settings a full-access client may read and change while the node
//! runs (FCP `GetConfig` / `ModifyConfig`, under Hyphanet's names where it
//! has the same setting; `node.lichen.*` where it has none).
//!
//! Each setting is a key of the node's TOML config file (`docs/running.md`,
//! "Configuration"). A change is checked as the file is when the node
//! starts ([`Config::validate`]), then written into the file, editing only
//! the keys changed (comments and the rest of the file stay as they were),
//! through a temporary file renamed over it, so it holds at the next start
//! and a crash leaves either the old file or the new. The bandwidth limits
//! take effect at once ([`Setting::live`]); the others at the next start.
//! Nothing is written or applied unless every change given is valid.

use crate::config::{parse_bytes, Config, ConfigError, HostRange};
use std::path::{Path, PathBuf};

/// The config file's name in the data directory, read at start when no
/// `--config` is given, and written by [`modify`].
pub const FILE_NAME: &str = "lichen.toml";

/// What a setting's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bytes (or bytes a second): an integer, or with a unit (`512KiB`).
    Bytes,
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Number,
    /// Text (an address).
    Text,
    /// A comma-separated list of addresses and CIDR ranges.
    Hosts,
}

impl Kind {
    /// Hyphanet's `dataType` for it.
    #[must_use]
    pub fn data_type(self) -> &'static str {
        match self {
            Kind::Bytes | Kind::Number => "number",
            Kind::Bool => "boolean",
            Kind::Text | Kind::Hosts => "string",
        }
    }
}

/// One setting.
pub struct Setting {
    /// Its name over FCP (`node.outputBandwidthLimit`).
    pub name: &'static str,
    /// The table and key it is kept under in the config file.
    pub section: &'static str,
    /// See [`Setting::section`].
    pub key: &'static str,
    /// What its value is.
    pub kind: Kind,
    /// One line.
    pub short: &'static str,
    /// What it does and what it costs.
    pub long: &'static str,
    /// Only for those who know what they do (Hyphanet's `expertFlag`).
    pub expert: bool,
    /// Takes effect at once; otherwise at the next start.
    pub live: bool,
    get: fn(&Config) -> String,
    set: fn(&mut Config, &str) -> Result<(), String>,
    toml: fn(&Config) -> toml_edit::Value,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting").field("name", &self.name).finish()
    }
}

impl Setting {
    /// Its value in `config`, as FCP shows it.
    #[must_use]
    pub fn value(&self, config: &Config) -> String {
        (self.get)(config)
    }
}

/// Every setting, in the order they are listed (`sortOrder`).
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "node.outputBandwidthLimit",
        section: "network",
        key: "upload_limit",
        kind: Kind::Bytes,
        short: "Upload limit (bytes a second; 0: none)",
        long: "What the node sends to all its peers together, at most, in bytes a second \
               (a unit may be given: 512KiB). 0: no limit. Takes effect at once.",
        expert: false,
        live: true,
        get: |c| c.network.upload_limit.to_string(),
        set: |c, v| {
            c.network.upload_limit = bytes(v)?;
            Ok(())
        },
        toml: |c| int(c.network.upload_limit),
    },
    Setting {
        name: "node.inputBandwidthLimit",
        section: "network",
        key: "download_limit",
        kind: Kind::Bytes,
        short: "Download limit (bytes a second; 0: none)",
        long: "What the node reads from all its peers together, at most, in bytes a second. \
               0: no limit. Takes effect at once.",
        expert: false,
        live: true,
        get: |c| c.network.download_limit.to_string(),
        set: |c, v| {
            c.network.download_limit = bytes(v)?;
            Ok(())
        },
        toml: |c| int(c.network.download_limit),
    },
    Setting {
        name: "node.storeSize",
        section: "store",
        key: "store_bytes",
        kind: Kind::Bytes,
        short: "Store size (bytes)",
        long: "Space for the blocks this node keeps for the network (at least 1MiB). \
               Takes effect at the next start.",
        expert: false,
        live: false,
        get: |c| c.store.store_bytes.to_string(),
        set: |c, v| {
            c.store.store_bytes = bytes(v)?;
            Ok(())
        },
        toml: |c| int(c.store.store_bytes),
    },
    Setting {
        name: "node.lichen.cacheSize",
        section: "store",
        key: "cache_bytes",
        kind: Kind::Bytes,
        short: "Cache size (bytes)",
        long: "Space for the shared cache of blocks passing through (at least 1MiB). \
               Takes effect at the next start.",
        expert: false,
        live: false,
        get: |c| c.store.cache_bytes.to_string(),
        set: |c, v| {
            c.store.cache_bytes = bytes(v)?;
            Ok(())
        },
        toml: |c| int(c.store.cache_bytes),
    },
    Setting {
        name: "node.clientCacheSize",
        section: "store",
        key: "client_cache_bytes",
        kind: Kind::Bytes,
        short: "Client cache size (bytes)",
        long: "Space for the private, sealed cache of what this node's own users fetched \
               and inserted (at least 1MiB). Takes effect at the next start.",
        expert: false,
        live: false,
        get: |c| c.store.client_cache_bytes.to_string(),
        set: |c, v| {
            c.store.client_cache_bytes = bytes(v)?;
            Ok(())
        },
        toml: |c| int(c.store.client_cache_bytes),
    },
    Setting {
        name: "node.opennet.enabled",
        section: "network",
        key: "opennet",
        kind: Kind::Bool,
        short: "Connect to strangers (opennet)",
        long: "On: the node finds peers through seed nodes and keeps strangers as peers. \
               Off: friends only (darknet), which hides that you run a node from everyone \
               but your friends. Takes effect at the next start.",
        expert: false,
        live: false,
        get: |c| c.network.opennet.to_string(),
        set: |c, v| {
            c.network.opennet = boolean(v)?;
            Ok(())
        },
        toml: |c| c.network.opennet.into(),
    },
    Setting {
        name: "node.opennet.maxOpennetPeers",
        section: "network",
        key: "max_peers",
        kind: Kind::Number,
        short: "Most opennet peers",
        long: "How many strangers the node keeps as peers at most (1 to 1000). \
               Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| c.network.max_peers.to_string(),
        set: |c, v| {
            c.network.max_peers = number(v, 1, 1000)?;
            Ok(())
        },
        toml: |c| int(c.network.max_peers as u64),
    },
    Setting {
        name: "node.listenPort",
        section: "network",
        key: "listen",
        kind: Kind::Number,
        short: "Peer port",
        long: "The UDP and TCP port peers reach the node on. Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| c.network.listen.port().to_string(),
        set: |c, v| {
            c.network.listen.set_port(port(v)?);
            Ok(())
        },
        toml: |c| c.network.listen.to_string().into(),
    },
    Setting {
        name: "node.bindTo",
        section: "network",
        key: "listen",
        kind: Kind::Text,
        short: "Peer address",
        long: "The address the node listens for peers on (`::` or `0.0.0.0`: every \
               interface). Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| c.network.listen.ip().to_string(),
        set: |c, v| {
            c.network.listen.set_ip(ip(v)?);
            Ok(())
        },
        toml: |c| c.network.listen.to_string().into(),
    },
    Setting {
        name: "fcp.port",
        section: "fcp",
        key: "listen",
        kind: Kind::Number,
        short: "FCP port",
        long: "The port client programs connect to. Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| c.fcp.listen.port().to_string(),
        set: |c, v| {
            c.fcp.listen.set_port(port(v)?);
            Ok(())
        },
        toml: |c| c.fcp.listen.to_string().into(),
    },
    Setting {
        name: "fcp.bindTo",
        section: "fcp",
        key: "listen",
        kind: Kind::Text,
        short: "FCP address",
        long: "The address client programs connect to. Anything but loopback lets other \
               machines in (those `fcp.allowedHosts` names). Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| c.fcp.listen.ip().to_string(),
        set: |c, v| {
            c.fcp.listen.set_ip(ip(v)?);
            Ok(())
        },
        toml: |c| c.fcp.listen.to_string().into(),
    },
    Setting {
        name: "fcp.allowedHosts",
        section: "fcp",
        key: "allowed_hosts",
        kind: Kind::Hosts,
        short: "Hosts allowed to use FCP",
        long: "Addresses and CIDR ranges (comma-separated) of other machines that may \
               connect when FCP listens beyond loopback; loopback always may. \
               Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| hosts_text(&c.fcp.allowed_hosts),
        set: |c, v| {
            c.fcp.allowed_hosts = hosts(v)?;
            Ok(())
        },
        toml: |c| hosts_toml(&c.fcp.allowed_hosts),
    },
    Setting {
        name: "fcp.allowedHostsFullAccess",
        section: "fcp",
        key: "full_access_hosts",
        kind: Kind::Hosts,
        short: "Hosts with full FCP access",
        long: "Addresses and CIDR ranges (comma-separated) whose clients may change \
               settings, peers and the global queue. Exactly these: include loopback \
               (127.0.0.0/8,::1/128) to keep it. Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| match &c.fcp.full_access_hosts {
            Some(h) => hosts_text(h),
            None => "127.0.0.0/8,::1/128".into(),
        },
        set: |c, v| {
            let h = hosts(v)?;
            if h.is_empty() {
                return Err("an empty list would leave no client with full access \
                            (not even this one): name at least one host"
                    .into());
            }
            c.fcp.full_access_hosts = Some(h);
            Ok(())
        },
        toml: |c| match &c.fcp.full_access_hosts {
            Some(h) => hosts_toml(h),
            None => hosts_toml(&[]),
        },
    },
    Setting {
        name: "fproxy.enabled",
        section: "gateway",
        key: "enabled",
        kind: Kind::Bool,
        short: "Run the web gateway",
        long: "The web interface and freesite gateway. Takes effect at the next start.",
        expert: false,
        live: false,
        get: |c| c.gateway.enabled.to_string(),
        set: |c, v| {
            c.gateway.enabled = boolean(v)?;
            Ok(())
        },
        toml: |c| c.gateway.enabled.into(),
    },
    Setting {
        name: "fproxy.port",
        section: "gateway",
        key: "listen",
        kind: Kind::Number,
        short: "Gateway port",
        long: "The port of the web interface. Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| c.gateway.listen.port().to_string(),
        set: |c, v| {
            c.gateway.listen.set_port(port(v)?);
            Ok(())
        },
        toml: |c| c.gateway.listen.to_string().into(),
    },
    Setting {
        name: "fproxy.bindTo",
        section: "gateway",
        key: "listen",
        kind: Kind::Text,
        short: "Gateway address",
        long: "The address of the web interface. Anything but loopback lets other \
               machines in (those `fproxy.allowedHosts` names). Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| c.gateway.listen.ip().to_string(),
        set: |c, v| {
            c.gateway.listen.set_ip(ip(v)?);
            Ok(())
        },
        toml: |c| c.gateway.listen.to_string().into(),
    },
    Setting {
        name: "fproxy.allowedHosts",
        section: "gateway",
        key: "allowed_hosts",
        kind: Kind::Hosts,
        short: "Hosts allowed to use the gateway",
        long: "Addresses and CIDR ranges (comma-separated) of other machines that may use \
               the gateway when it listens beyond loopback. Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| hosts_text(&c.gateway.allowed_hosts),
        set: |c, v| {
            c.gateway.allowed_hosts = hosts(v)?;
            Ok(())
        },
        toml: |c| hosts_toml(&c.gateway.allowed_hosts),
    },
    Setting {
        name: "node.lichen.tunnelHops",
        section: "anonymity",
        key: "tunnel_hops",
        kind: Kind::Number,
        short: "Tunnel hops for your own requests",
        long: "Hops of the tunnels your own fetches and inserts go through before they are \
               routed (1 to 3; 2 by default). 0 turns tunnels off: then a neighbour can tell \
               your downloads from those you pass on (docs/anonymity.md). \
               Takes effect at the next start.",
        expert: false,
        live: false,
        get: |c| c.anonymity.tunnel_hops.to_string(),
        set: |c, v| {
            c.anonymity.tunnel_hops = number(v, 0, 255)?;
            Ok(())
        },
        toml: |c| int(u64::from(c.anonymity.tunnel_hops)),
    },
    Setting {
        name: "node.lichen.portMapping",
        section: "network",
        key: "port_mapping",
        kind: Kind::Bool,
        short: "Ask the router to forward the peer port",
        long: "UPnP-IGD, NAT-PMP or PCP, tried only behind NAT. Takes effect at the next start.",
        expert: true,
        live: false,
        get: |c| c.network.port_mapping.to_string(),
        set: |c, v| {
            c.network.port_mapping = boolean(v)?;
            Ok(())
        },
        toml: |c| c.network.port_mapping.into(),
    },
];

/// The setting named `name` (exactly: FCP names are case-sensitive).
#[must_use]
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Why a change was refused (nothing was written or applied).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// No setting has this name.
    #[error("no setting is named {0:?}")]
    Unknown(String),
    /// The value is not one the setting takes.
    #[error("{name}: {why}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The settings together break a rule of the config file.
    #[error("{0}")]
    Config(String),
    /// The config file could not be read, parsed or written.
    #[error("config file {path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// Apply `changes` (name, value) to `current`, write them into the config
/// file `path` (created if missing) and return the new configuration.
/// Either every change is valid and written, or none is and the file is
/// untouched. Blocking (file I/O).
///
/// # Errors
/// [`SettingsError`] naming the first problem.
pub fn modify(
    current: &Config,
    path: &Path,
    changes: &[(String, String)],
) -> Result<Config, SettingsError> {
    let mut new = current.clone();
    let mut touched: Vec<&'static Setting> = Vec::new();
    for (name, value) in changes {
        let s = find(name).ok_or_else(|| SettingsError::Unknown(shown(name)))?;
        (s.set)(&mut new, value.trim())
            .map_err(|why| SettingsError::Invalid { name: s.name, why })?;
        touched.push(s);
    }
    new.validate().map_err(|e| {
        SettingsError::Config(match e {
            ConfigError::Invalid(m) => m,
            other => other.to_string(),
        })
    })?;
    let file_err = |why: String| SettingsError::File {
        path: path.to_owned(),
        why,
    };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(file_err(format!("cannot read it: {e}"))),
    };
    let mut doc: toml_edit::DocumentMut = old
        .parse()
        .map_err(|e| file_err(format!("not valid TOML, left as it is: {e}")))?;
    for s in &touched {
        let table = doc
            .entry(s.section)
            .or_insert_with(toml_edit::table)
            .as_table_like_mut()
            .ok_or_else(|| file_err(format!("[{}] is not a table", s.section)))?;
        let mut value = (s.toml)(&new);
        // A key already there keeps its place and comments (the key's
        // and the value's own).
        match table.get_mut(s.key) {
            Some(item) => {
                if let Some(old) = item.as_value() {
                    *value.decor_mut() = old.decor().clone();
                }
                *item = toml_edit::Item::Value(value);
            }
            None => {
                table.insert(s.key, toml_edit::Item::Value(value));
            }
        }
    }
    let text = doc.to_string();
    // What is written must load, and load as what was asked.
    let reread = Config::from_toml(&text).map_err(|e| file_err(format!("would not load: {e}")))?;
    if let Some(s) = touched.iter().find(|s| s.value(&reread) != s.value(&new)) {
        return Err(file_err(format!(
            "{} would not read back as written",
            s.name
        )));
    }
    write_replacing(path, text.as_bytes())
        .map_err(|e| file_err(format!("cannot write it: {e}")))?;
    Ok(new)
}

/// Write `bytes` to `path` through a temporary file in the same directory,
/// synced, then renamed over it (and the directory synced).
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(
        || std::ffi::OsString::from(FILE_NAME),
        std::ffi::OsStr::to_os_string,
    );
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".{:016x}.tmp", rand::random::<u64>()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A name as shown in an error: at most 64 characters, no control ones.
fn shown(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn bytes(v: &str) -> Result<u64, String> {
    if v.starts_with('-') {
        return Err(format!("{v:?} is negative (0 means no limit)"));
    }
    parse_bytes(v)
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{:?} is not true or false", shown(v))),
    }
}

fn number<T: TryFrom<u64>>(v: &str, min: u64, max: u64) -> Result<T, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{:?} is not a whole number from {min} to {max}", shown(v)))
}

fn port(v: &str) -> Result<u16, String> {
    number(v, 1, u64::from(u16::MAX))
}

fn ip(v: &str) -> Result<std::net::IpAddr, String> {
    // `[::1]` as in a URL, or bare.
    let bare = v
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(v);
    bare.parse()
        .map_err(|_| format!("{:?} is not an IP address", shown(v)))
}

fn hosts(v: &str) -> Result<Vec<HostRange>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| h.parse::<HostRange>())
        .collect()
}

fn hosts_text(h: &[HostRange]) -> String {
    h.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn hosts_toml(h: &[HostRange]) -> toml_edit::Value {
    toml_edit::Value::Array(h.iter().map(ToString::to_string).collect())
}

fn int(n: u64) -> toml_edit::Value {
    i64::try_from(n).unwrap_or(i64::MAX).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn change(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
            .collect()
    }

    #[test]
    fn names_are_unique_and_every_default_reads_back() {
        let d = Config::default();
        let mut names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
        // Setting each to the value it shows changes no setting's value.
        for s in SETTINGS {
            let mut c = d.clone();
            (s.set)(&mut c, &s.value(&d)).unwrap();
            for t in SETTINGS {
                assert_eq!(t.value(&c), t.value(&d), "{} then {}", s.name, t.name);
            }
        }
    }

    #[test]
    fn a_change_is_written_into_the_file_keeping_its_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            "# my node\n[network]\n# my uplink\nupload_limit = \"1MiB\"\nopennet = true\n",
        )
        .unwrap();
        let current = Config::load(&path).unwrap();
        let new = modify(
            &current,
            &path,
            &change(&[
                ("node.outputBandwidthLimit", "256KiB"),
                ("fcp.port", "9500"),
                ("fcp.allowedHosts", "192.168.1.0/24, 10.0.0.7"),
            ]),
        )
        .unwrap();
        assert_eq!(new.network.upload_limit, 256 << 10);
        assert_eq!(new.fcp.listen.port(), 9500);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# my node") && text.contains("# my uplink"),
            "{text}"
        );
        assert!(text.contains("upload_limit = 262144"), "{text}");
        let reread = Config::load(&path).unwrap();
        assert_eq!(reread, new);
        assert_eq!(
            find("fcp.allowedHosts").unwrap().value(&reread),
            "192.168.1.0/24,10.0.0.7/32"
        );
    }

    #[test]
    fn a_missing_file_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let new = modify(
            &Config::default(),
            &path,
            &change(&[("node.opennet.enabled", "false")]),
        )
        .unwrap();
        assert!(!new.network.opennet);
        assert_eq!(Config::load(&path).unwrap(), new);
    }

    #[test]
    fn bad_changes_name_the_problem_and_touch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let before = "[network]\nupload_limit = 1000\n";
        std::fs::write(&path, before).unwrap();
        let current = Config::load(&path).unwrap();
        for (pairs, says) in [
            (&[("node.nonsense", "1")][..], "no setting is named"),
            (&[("node.outputBandwidthLimit", "-1")], "negative"),
            (&[("node.outputBandwidthLimit", "fast")], "not a byte size"),
            (&[("node.opennet.enabled", "maybe")], "not true or false"),
            (&[("fcp.port", "0")], "from 1 to 65535"),
            (&[("fcp.port", "70000")], "from 1 to 65535"),
            (&[("fcp.bindTo", "localhost")], "not an IP address"),
            (&[("fcp.allowedHosts", "10.0.0.0/99")], "10.0.0.0/99"),
            (
                &[("fcp.allowedHostsFullAccess", " ")],
                "no client with full access",
            ),
            (&[("node.storeSize", "1KiB")], "at least 1MiB"),
            (&[("node.lichen.tunnelHops", "4")], "tunnel_hops"),
            // One bad change among good ones: none is made.
            (
                &[
                    ("node.inputBandwidthLimit", "5MiB"),
                    ("node.storeSize", "x"),
                ],
                "node.storeSize",
            ),
        ] {
            let e = modify(&current, &path, &change(pairs))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{pairs:?}: {e}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        }
    }

    #[test]
    fn a_file_that_is_not_toml_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "[network\nupload_limit = ").unwrap();
        let e = modify(
            &Config::default(),
            &path,
            &change(&[("node.outputBandwidthLimit", "1000")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not valid TOML"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[network\nupload_limit = "
        );
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
