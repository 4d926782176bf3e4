//! A test bed of Linux network namespaces: real `lichen` node processes
//! on a private "internet", some behind NAT routers, some with bandwidth
//! caps (issue 18, "Real networks").
//!
//! The layout of one [`Bed`]:
//!
//! ```text
//!                 namespace "inet": bridge br0 (198.18.0.0/15, on-link)
//!        ┌──────────────┬────────────┴──────────────┐
//!   public host h    router r (WAN 198.19.h.1)    public host …
//!   eth0 198.18.h.2   │ nftables NAT
//!                     │ LAN 10.h.0.1/24
//!                   NATed host h: eth0 10.h.0.2, default route via the router
//! ```
//!
//! Every host is its own namespace (its own loopback, so every node uses
//! the same ports: FCP 9481, peers 9489), and every public address and
//! every router's WAN address is in its own /24, so the node's limit on
//! waiting inbound connections per source range never mixes two hosts.
//! The veth pairs are created directly inside the bed's namespaces
//! (`ip -n NS link add … peer … netns OTHER`): nothing is created, even
//! for a moment, in the namespace the test runs in, and only the
//! benchmark range 198.18.0.0/15 and 10.0.0.0/8 are used, inside the bed.
//!
//! The routers ([`Router`]) are nftables rule sets; what they really do,
//! measured by the tests, is in `docs/running.md` ("Testing behind NAT").
//!
//! Nodes are started with `ip netns exec NS lichen-it node …`; a node's
//! FCP port is on 127.0.0.1 inside its namespace, so the bed talks to it
//! through the program's own commands run there (`status`, `peers`,
//! `put`, `get`): see [`NetNode`]. Every command is bounded in time.
//!
//! [`Bed`] removes its namespaces on drop (after killing whatever runs in
//! them), also when a test panics; a bed left by a killed test process
//! (its namespaces carry the process id) is removed by the next
//! [`Bed::new`].

use std::fmt::Write as _;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Every namespace of a bed starts with this, then the test process id.
const PREFIX: &str = "lnb";

/// The node's FCP port (on 127.0.0.1 inside its namespace).
pub const FCP_PORT: u16 = 9481;
/// The node's peer port.
pub const PEER_PORT: u16 = 9489;

/// How long one `ip`, `nft`, `tc` or program command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to answer on FCP after its start.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// What stands between a host and the bed's public side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Router {
    /// No router: the host has a public address on the bridge.
    Public,
    /// Endpoint-independent mapping (`masquerade`: Linux keeps the
    /// source port when it is free) and a forward filter letting in only
    /// `ct state established,related`. Conntrack matches a reply on the
    /// whole 5-tuple, so the filtering is in fact address-and-port
    /// dependent: Linux has no full cone without extra modules. Kept
    /// apart from [`Router::PortRestricted`] in the tables so the bed
    /// names the rule set each node sat behind.
    Cone,
    /// The same mapping, filtering by `ct state established` only.
    PortRestricted,
    /// `masquerade random`: a random source port for every connection,
    /// so every destination sees another port (symmetric NAT).
    Symmetric,
}

impl Router {
    /// All kinds, public first.
    pub const ALL: [Router; 4] = [
        Router::Public,
        Router::Cone,
        Router::PortRestricted,
        Router::Symmetric,
    ];

    /// A short name for tables.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Router::Public => "public",
            Router::Cone => "cone",
            Router::PortRestricted => "port-restricted",
            Router::Symmetric => "symmetric",
        }
    }

    /// Whether the host is behind NAT.
    #[must_use]
    pub fn is_nat(self) -> bool {
        self != Router::Public
    }

    /// The router's nftables rule set (one rule a line; nft 1.0.6).
    fn rules(self) -> Option<String> {
        let (masq, forward_state) = match self {
            Router::Public => return None,
            Router::Cone => ("masquerade", "established,related"),
            Router::PortRestricted => ("masquerade", "established"),
            Router::Symmetric => ("masquerade random", "established,related"),
        };
        Some(format!(
            "table ip lichen_router {{\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\toifname \"wan\" {masq}\n\
             \t}}\n\
             \tchain forward_filter {{\n\
             \t\ttype filter hook forward priority filter; policy drop;\n\
             \t\tct state {forward_state} accept\n\
             \t\tiifname \"lan\" oifname \"wan\" accept\n\
             \t}}\n\
             \tchain input_filter {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiifname \"wan\" ct state established,related accept\n\
             \t\tiifname \"wan\" drop\n\
             \t}}\n\
             }}\n"
        ))
    }
}

/// One host of the bed: a namespace where a node runs.
#[derive(Clone, Debug)]
pub struct Host {
    /// Index in the bed (its addresses derive from it).
    pub index: usize,
    /// Its namespace.
    pub ns: String,
    /// What it sits behind.
    pub router: Router,
    /// The router's namespace (NATed hosts).
    pub router_ns: Option<String>,
    /// The host's own address.
    pub addr: Ipv4Addr,
    /// The address others see it from: its own (public) or its router's
    /// WAN address.
    pub public: Ipv4Addr,
    /// The namespace and interface whose egress carries traffic towards
    /// the host (for the download cap): the bridge port or the router's
    /// LAN side.
    pub down_link: (String, String),
}

impl Host {
    /// Where peers reach this host's node (for NATed hosts: the router's
    /// WAN address, where nothing is forwarded).
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.public, PEER_PORT))
    }
}

/// A bed of namespaces; everything is removed on drop.
#[derive(Debug)]
pub struct Bed {
    tag: String,
    /// The public side (bridge br0).
    pub inet: String,
    namespaces: Vec<String>,
    /// The hosts added so far.
    pub hosts: Vec<Host>,
}

/// Why the bed cannot be built here (not root, no `ip`, …).
#[derive(Debug, Clone)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Run `cmd` with a deadline: its exit status, stdout and stderr. A
/// command still running at the deadline is killed (by its own pid).
///
/// # Errors
/// The command cannot start, or it ran out of time.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<(bool, String, String), String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        Some(s) => Ok((s.success(), out, err)),
        None => Err(format!("{what} ran longer than {timeout:?}; stderr: {err}")),
    }
}

/// Run a setup command; panics with its stderr if it fails.
///
/// # Panics
/// If the command fails or runs out of time.
fn must(args: &[&str]) -> String {
    let (ok, out, err) = run_bounded(Command::new(args[0]).args(&args[1..]), COMMAND_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "{args:?} failed: {err}");
    out
}

/// Run a command, feeding it `input` on stdin; panics if it fails.
fn must_with_input(args: &[&str], input: &str) {
    use std::io::Write as _;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(input.as_bytes());
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                assert!(s.success(), "{args:?} failed: {err}\ninput:\n{input}");
                return;
            }
            Ok(None) if start.elapsed() < COMMAND_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} ran out of time");
            }
        }
    }
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether `prog` runs (`prog arg` exits successfully).
fn have(prog: &str, arg: &str) -> bool {
    run_bounded(Command::new(prog).arg(arg), COMMAND_TIMEOUT).is_ok_and(|(ok, _, _)| ok)
}

/// The namespaces named by `ip netns list`.
fn list_namespaces() -> Vec<String> {
    run_bounded(Command::new("ip").args(["netns", "list"]), COMMAND_TIMEOUT)
        .map(|(_, out, _)| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Kill every process in `ns` (by pid: they are the bed's own nodes)
/// and delete the namespace. Best effort, bounded.
fn remove_namespace(ns: &str) {
    for _ in 0..3 {
        let pids = run_bounded(
            Command::new("ip").args(["netns", "pids", ns]),
            COMMAND_TIMEOUT,
        )
        .map(|(_, out, _)| out)
        .unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            break;
        }
        let _ = run_bounded(
            Command::new("kill").arg("-KILL").args(&pids),
            COMMAND_TIMEOUT,
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = run_bounded(
        Command::new("ip").args(["netns", "del", ns]),
        COMMAND_TIMEOUT,
    );
}

/// Remove the namespaces of beds whose test process is gone (killed
/// before its drop could run).
fn remove_stale() {
    for ns in list_namespaces() {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netns: removing {ns}, left by the dead test process {pid}");
            remove_namespace(&ns);
        }
    }
}

impl Bed {
    /// A new bed with its public side (namespace `inet`, bridge `br0`).
    ///
    /// # Errors
    /// [`Skip`] when namespaces cannot be made here: not root, no `ip`,
    /// `nft` or `tc`, or `ip netns add` refused.
    pub fn new() -> Result<Bed, Skip> {
        if !is_root() {
            return Err(Skip(
                "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)".into(),
            ));
        }
        for (prog, arg, package) in [
            ("ip", "-V", "iproute2"),
            ("nft", "--version", "nftables"),
            ("tc", "-V", "iproute2"),
        ] {
            if !have(prog, arg) {
                return Err(Skip(format!(
                    "`{prog}` is missing (apt-get install {package})"
                )));
            }
        }
        remove_stale();
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let inet = format!("{tag}-inet");
        match run_bounded(
            Command::new("ip").args(["netns", "add", &inet]),
            COMMAND_TIMEOUT,
        ) {
            Ok((true, _, _)) => {}
            Ok((false, _, err)) => {
                return Err(Skip(format!("`ip netns add` refused: {}", err.trim())));
            }
            Err(e) => return Err(Skip(e)),
        }
        let bed = Bed {
            tag,
            inet: inet.clone(),
            namespaces: vec![inet.clone()],
            hosts: Vec::new(),
        };
        must(&["ip", "-n", &inet, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &inet, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &inet, "link", "set", "br0", "up"]);
        Ok(bed)
    }

    /// The bed or, when it cannot be built, `None` after a loud notice
    /// on stderr that `test` was skipped (and why).
    #[must_use]
    pub fn or_skip(test: &str) -> Option<Bed> {
        match Bed::new() {
            Ok(b) => Some(b),
            Err(why) => {
                // Straight to the process's stderr, not through
                // `eprintln!`: the test harness captures that for passing
                // tests, and a skip must be seen.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED: {test}: the network-namespace test bed cannot be built \
                     here: {why}. Nothing was tested. Run as root with iproute2 and nftables \
                     (scripts/netbed.sh). ***\n"
                );
                None
            }
        }
    }

    fn new_namespace(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.tag);
        must(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Add a host behind `router`; returns it (also kept in `hosts`).
    ///
    /// # Panics
    /// If a command fails, or beyond 250 hosts.
    pub fn add_host(&mut self, router: Router) -> Host {
        let h = self.hosts.len() + 1;
        assert!(h <= 250, "a bed has at most 250 hosts");
        let ns = self.new_namespace(&format!("h{h}"));
        let port = format!("h{h}");
        let inet = self.inet.clone();
        let host = if let Some(rules) = router.rules() {
            let r = self.new_namespace(&format!("r{h}"));
            let wan = Ipv4Addr::new(198, 19, h as u8, 1);
            let lan = Ipv4Addr::new(10, h as u8, 0, 1);
            let addr = Ipv4Addr::new(10, h as u8, 0, 2);
            must(&[
                "ip", "-n", &inet, "link", "add", &port, "type", "veth", "peer", "name", "wan",
                "netns", &r,
            ]);
            must(&[
                "ip", "-n", &r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&[
                "ip",
                "-n",
                &r,
                "addr",
                "add",
                &format!("{wan}/15"),
                "dev",
                "wan",
            ]);
            must(&[
                "ip",
                "-n",
                &r,
                "addr",
                "add",
                &format!("{lan}/24"),
                "dev",
                "lan",
            ]);
            must(&["ip", "-n", &r, "link", "set", "wan", "up"]);
            must(&["ip", "-n", &r, "link", "set", "lan", "up"]);
            must(&[
                "ip",
                "netns",
                "exec",
                &r,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ]);
            must_with_input(&["ip", "netns", "exec", &r, "nft", "-f", "-"], &rules);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &lan.to_string(),
            ]);
            Host {
                index: h,
                ns,
                router,
                router_ns: Some(r.clone()),
                addr,
                public: wan,
                down_link: (r, "lan".into()),
            }
        } else {
            let addr = Ipv4Addr::new(198, 18, h as u8, 2);
            must(&[
                "ip", "-n", &inet, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/15"),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            Host {
                index: h,
                ns,
                router,
                router_ns: None,
                addr,
                public: addr,
                down_link: (inet.clone(), port.clone()),
            }
        };
        must(&["ip", "-n", &inet, "link", "set", &port, "master", "br0"]);
        must(&["ip", "-n", &inet, "link", "set", &port, "up"]);
        self.hosts.push(host.clone());
        host
    }

    /// Cap `host`'s link with `tbf`: `up` bytes/s leaving the host (on
    /// its `eth0`), `down` bytes/s towards it (on the bridge port or the
    /// router's LAN side).
    ///
    /// # Panics
    /// If `tc` fails.
    pub fn cap(host: &Host, up: u64, down: u64) {
        let tbf = |ns: &str, dev: &str, rate: u64| {
            // A burst of 10 ms at the rate, at least 64 KiB (a GSO
            // packet); at most 200 ms queued.
            let burst = (rate / 100).max(64 << 10);
            must(&[
                "tc",
                "-n",
                ns,
                "qdisc",
                "replace",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                &format!("{rate}bps"),
                "burst",
                &burst.to_string(),
                "latency",
                "200ms",
            ]);
        };
        tbf(&host.ns, "eth0", up);
        tbf(&host.down_link.0, &host.down_link.1, down);
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            remove_namespace(ns);
        }
    }
}

/// `ip netns exec NS bin`.
fn in_ns(ns: &str, bin: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(bin);
    c
}

/// What `lichen status` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// `Peers:`.
    pub peers: u64,
    /// `reachable`, `behind-nat` or `unknown` (the start of the
    /// `Reachability:` line mapped back to `GetNode`'s field).
    pub reachability: String,
    /// The public address peers saw, when named.
    pub public: Option<String>,
    /// The `Reachability:` line as printed.
    pub line: String,
    /// The router mapped the node's port (the line says "port mapped").
    pub mapped: bool,
    /// `Hole punches: T tried, L brought a direct link` (0, 0 when the
    /// line is absent).
    pub punches: (u64, u64),
    /// The `Routing:` line's counts: served from the store, refused as
    /// overload, of them past a peer's answer budget (0 when not printed),
    /// refused as loops, bad blocks from peers.
    pub routing: [u64; 5],
}

impl Status {
    fn parse(text: &str) -> Status {
        let mut s = Status::default();
        for l in text.lines() {
            if let Some(p) = l.strip_prefix("Peers:") {
                s.peers = p.trim().parse().unwrap_or(0);
            }
            if let Some(r) = l.strip_prefix("Reachability:") {
                let r = r.trim();
                s.line = r.to_string();
                s.reachability = if r.starts_with("reachable") {
                    "reachable"
                } else if r.starts_with("behind NAT") {
                    "behind-nat"
                } else if r.starts_with("unknown") {
                    "unknown"
                } else {
                    r
                }
                .to_string();
                s.public = r
                    .split("public address ")
                    .nth(1)
                    .map(|a| a.trim().to_string());
                s.mapped = r.contains("port mapped");
            }
            if let Some(p) = l.strip_prefix("Routing:") {
                let mut n: Vec<u64> = p
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|w| w.parse().ok())
                    .collect();
                if !p.contains("answer budget") {
                    n.insert(2.min(n.len()), 0);
                }
                for (d, v) in s.routing.iter_mut().zip(n) {
                    *d = v;
                }
            }
            if let Some(p) = l.strip_prefix("Hole punches:") {
                let n: Vec<u64> = p
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|w| w.parse().ok())
                    .collect();
                s.punches = (
                    n.first().copied().unwrap_or(0),
                    n.get(1).copied().unwrap_or(0),
                );
            }
        }
        s
    }
}

/// One row of `lichen peers --addresses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRow {
    /// The peer's identity.
    pub identity: String,
    /// `opennet` or `friend`.
    pub kind: String,
    /// A link is up.
    pub connected: bool,
    /// Bytes this node wrote to and read from the peer on the link that
    /// is up (FCP `volatile.lichen.bytesSent` / `bytesReceived`).
    pub traffic: Option<(u64, u64)>,
}

/// A `lichen` node process in a host of the bed.
#[derive(Debug)]
pub struct NetNode {
    child: Option<Child>,
    /// The program.
    pub bin: PathBuf,
    /// Its host.
    pub host: Host,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log file (next to the data directory).
    pub log: PathBuf,
    /// Its identity (as `lichen peers` shows it).
    pub identity: String,
    /// A file with its noderef naming [`Host::peer_addr`].
    pub noderef_file: PathBuf,
    /// When the process was started.
    pub started: Instant,
}

/// The noderef text naming `listen` and the identity, for the node in
/// `data_dir` (made if new).
///
/// # Panics
/// If `lichen noderef` fails or prints no noderef.
#[must_use]
pub fn noderef(bin: &Path, data_dir: &Path, listen: SocketAddr) -> (String, String) {
    let (ok, out, err) = run_bounded(
        Command::new(bin)
            .arg("noderef")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &listen.to_string()]),
        COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "lichen noderef failed: {err}");
    let text = out.trim().to_string();
    let r = lichen_link::NodeRef::parse(&text)
        .unwrap_or_else(|e| panic!("lichen noderef printed no noderef ({e}): {text}"));
    (text, lichen_link::policy::identity_of(&r.static_key))
}

impl NetNode {
    /// Start a node in `host` (not waiting for it): data in
    /// `dir/node-N`, configuration `config` (TOML) written next to it.
    /// Public hosts listen on their address (as a server is set up);
    /// NATed ones on the default address (every interface, `[::]:9489`),
    /// as a node at home does.
    ///
    /// # Panics
    /// If it cannot be started.
    #[must_use]
    pub fn spawn(bin: &Path, dir: &Path, host: &Host, config: &str) -> NetNode {
        let data_dir = dir.join(format!("node-{}", host.index));
        let (text, identity) = noderef(bin, &data_dir, host.peer_addr());
        let noderef_file = dir.join(format!("node-{}.noderef", host.index));
        std::fs::write(&noderef_file, format!("{text}\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", noderef_file.display()));
        let config_file = dir.join(format!("node-{}.toml", host.index));
        std::fs::write(&config_file, config)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_file.display()));
        let log = data_dir.with_extension("log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let mut cmd = in_ns(&host.ns, bin);
        cmd.args(["node", "--data-dir"])
            .arg(&data_dir)
            .arg("--config")
            .arg(&config_file)
            .args(["--fcp-port", &FCP_PORT.to_string()]);
        if !host.router.is_nat() {
            cmd.args(["--listen", &host.peer_addr().to_string()]);
        }
        let child = cmd
            // Info, and hole punching's steps (at debug) for the matrix;
            // `LICHEN_IT_LOG` replaces it.
            .env(
                "RUST_LOG",
                std::env::var("LICHEN_IT_LOG")
                    .unwrap_or_else(|_| "info,lichen_link::policy::punch=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap_or_else(|e| panic!("log file: {e}")))
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the node in {}: {e}", host.ns));
        NetNode {
            child: Some(child),
            bin: bin.to_path_buf(),
            host: host.clone(),
            data_dir,
            log,
            identity,
            noderef_file,
            started: Instant::now(),
        }
    }

    /// Wait (bounded by [`NODE_START_TIMEOUT`]) until FCP answers.
    ///
    /// # Panics
    /// If the node exits or does not answer in time (with its log).
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self.try_cli(&["status"], Duration::from_secs(10)).is_ok() {
                return;
            }
            if let Some(s) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {} exited ({s}); log:\n{}",
                    self.host.ns,
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < NODE_START_TIMEOUT,
                "node {} did not answer on FCP; log:\n{}",
                self.host.ns,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether its log has a line containing `what`.
    #[must_use]
    pub fn log_mentions(&self, what: &str) -> bool {
        self.log_text().contains(what)
    }

    /// The log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run `lichen-it ARGS --fcp 127.0.0.1:9481` inside the node's
    /// namespace: its stdout, or why it failed.
    ///
    /// # Errors
    /// The command failed or ran out of `timeout`.
    pub fn try_cli(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let (ok, out, err) = run_bounded(
            in_ns(&self.host.ns, &self.bin)
                .args(args)
                .args(["--fcp", &format!("127.0.0.1:{FCP_PORT}")]),
            timeout,
        )?;
        if ok {
            Ok(out)
        } else {
            Err(format!("{args:?} failed: {err}{out}"))
        }
    }

    /// As [`NetNode::try_cli`], panicking on failure.
    ///
    /// # Panics
    /// If the command fails.
    #[must_use]
    pub fn cli(&self, args: &[&str], timeout: Duration) -> String {
        self.try_cli(args, timeout)
            .unwrap_or_else(|e| panic!("node {}: {e}", self.host.ns))
    }

    /// `lichen status`.
    ///
    /// # Panics
    /// If the node does not answer.
    #[must_use]
    pub fn status(&self) -> Status {
        Status::parse(&self.cli(&["status"], Duration::from_secs(20)))
    }

    /// `lichen peers --addresses`.
    ///
    /// # Panics
    /// If the node does not answer.
    #[must_use]
    pub fn peers(&self) -> Vec<PeerRow> {
        let out = self.cli(&["peers", "--addresses"], Duration::from_secs(20));
        out.lines()
            .skip(1)
            .filter_map(|l| {
                // IDENTITY KIND STATUS LOCATION SENT RECEIVED ADDRESS
                let t: Vec<&str> = l.split_whitespace().collect();
                let bytes = |i: usize| t.get(i).and_then(|v| v.parse::<u64>().ok());
                (t.len() >= 3).then(|| PeerRow {
                    identity: t[0].to_string(),
                    kind: t[1].to_string(),
                    connected: t[2] == "connected",
                    traffic: bytes(4).zip(bytes(5)),
                })
            })
            .collect()
    }

    /// The identities of the peers it has a link with.
    #[must_use]
    pub fn connected_identities(&self) -> Vec<String> {
        self.peers()
            .into_iter()
            .filter(|p| p.connected)
            .map(|p| p.identity)
            .collect()
    }

    /// `lichen peers add` with `other`'s noderef (naming its public side).
    ///
    /// # Panics
    /// If the command fails.
    pub fn add_friend(&self, other: &NetNode) {
        let file = other.noderef_file.to_string_lossy().into_owned();
        let _ = self.cli(&["peers", "add", &file], Duration::from_secs(20));
    }

    /// `lichen put FILE`: the URI it printed.
    ///
    /// # Panics
    /// If the insert fails, prints no URI, or says it is not in the network.
    #[must_use]
    pub fn put(&self, file: &Path, timeout: Duration) -> String {
        let f = file.to_string_lossy().into_owned();
        let out = self.cli(&["put", &f], timeout);
        assert!(
            !out.contains("not yet in the network"),
            "node {}: the insert stayed local: {out}",
            self.host.ns
        );
        out.split_whitespace()
            .find(|w| w.starts_with("CHK@"))
            .unwrap_or_else(|| panic!("no CHK@ URI in {out:?}"))
            .to_string()
    }

    /// `lichen get URI -o FILE`.
    ///
    /// # Errors
    /// The fetch failed (the command's message).
    pub fn get(&self, uri: &str, file: &Path, timeout: Duration) -> Result<(), String> {
        let f = file.to_string_lossy().into_owned();
        self.try_cli(&["get", uri, "-o", &f], timeout).map(|_| ())
    }

    /// Start `lichen get URI` writing the document to a pipe.
    ///
    /// # Panics
    /// If it cannot be started.
    #[must_use]
    pub fn get_streaming(&self, uri: &str) -> Child {
        in_ns(&self.host.ns, &self.bin)
            .args(["get", uri, "--fcp", &format!("127.0.0.1:{FCP_PORT}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start lichen get: {e}"))
    }

    /// Kill the node (SIGKILL) and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NetNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The configuration of a bed node: a test network (`test_network`),
/// `seeds` (noderef files), no gateway, no tunnels unless `extra` sets
/// them (its lines go into `[network]`).
#[must_use]
pub fn node_config(seeds: &[&Path], network_extra: &str, tunnel_hops: u8) -> String {
    let mut s = String::from("[network]\ntest_network = true\n");
    let seeds: Vec<String> = seeds
        .iter()
        .map(|p| format!("{:?}", p.to_string_lossy()))
        .collect();
    let _ = writeln!(s, "seeds = [{}]", seeds.join(", "));
    s.push_str(network_extra);
    if !network_extra.is_empty() && !network_extra.ends_with('\n') {
        s.push('\n');
    }
    let _ = write!(
        s,
        "[gateway]\nenabled = false\n[anonymity]\ntunnel_hops = {tunnel_hops}\n"
    );
    s
}

/// Poll `f` every `every` until it gives `Some`, for at most `timeout`.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}
