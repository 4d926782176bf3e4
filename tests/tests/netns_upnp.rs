//! Port mapping end to end (issue 18): a node behind a home router that
//! runs Debian's `miniupnpd-nftables` (UPnP-IGD, NAT-PMP, PCP) maps its
//! peer port, its noderef names the mapped address, a public node dials
//! it back through the mapping, the mapping is renewed, and it is gone
//! from the router once the node has stopped.
//!
//! Three network namespaces per test, named with the test process id:
//!
//! ```text
//!   public  eth0 11.77.0.2/24 ── wan 11.77.0.1/24  router  lan 10.77.0.1/24 ── eth0 10.77.0.2/24  home
//!   (node P, listens there)      nftables masquerade + miniupnpd           (node N, 0.0.0.0, default via router)
//! ```
//!
//! miniupnpd refuses to forward ports when its external address is in a
//! reserved range (private, shared, the documentation and benchmark
//! ranges): the "public" side uses 11.77.0.0/24, an unrouted block, only
//! inside the namespaces; nothing is created in the test's own namespace.
//! The router's rule set is the one miniupnpd's `nft_init.sh` builds
//! (a forward chain with policy drop jumping to miniupnpd's chain, NAT
//! chains jumping to its prerouting and postrouting chains), in a table
//! of the test's own name.
//!
//! Everything (processes, namespaces, the temporary directory) is removed
//! on drop, also when a test panics. Where namespaces cannot be made
//! (not root) or miniupnpd is missing, the test says "SKIPPED" loudly and
//! returns (under CI, a missing miniupnpd fails it: `.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MINIUPNPD: &str = "/usr/sbin/miniupnpd";
/// The router's external (WAN) address: where peers reach the home node.
const WAN: &str = "11.77.0.1";
const PUBLIC: &str = "11.77.0.2";
const HOME: &str = "10.77.0.2";
const PEER_PORT: u16 = 9489;
const FCP_PORT: u16 = 9481;
/// One `ip`, `nft` or CLI command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// The lease the home node asks for (renewed at half).
const LEASE_SECS: u64 = 6;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lichen-it"))
}

/// Run `cmd` with a deadline (the bed's [`netns::run_bounded`]): whether
/// it succeeded, and its stdout then stderr.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<(bool, String), String> {
    lichen_tests::netns::run_bounded(cmd, timeout).map(|(ok, out, err)| (ok, out + &err))
}

/// Run `cmd`; `Err` with its output when it fails.
fn run(cmd: &mut Command) -> Result<String, String> {
    let what = format!("{cmd:?}");
    match run_bounded(cmd, COMMAND_TIMEOUT)? {
        (true, out) => Ok(out),
        (false, out) => Err(format!("{what} failed: {out}")),
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

/// `ip netns exec NS program`.
fn in_ns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Poll `f` every 200 ms until it gives `Some`, for at most `timeout`.
fn poll<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    lichen_tests::netns::poll(timeout, Duration::from_millis(200), f)
}

/// The three namespaces, miniupnpd, the nodes and a temporary directory;
/// all removed on drop.
struct Bed {
    public: String,
    router: String,
    home: String,
    dir: tempfile::TempDir,
    /// Processes to stop on drop (miniupnpd, nodes), newest last.
    children: Vec<Child>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.home, &self.router, &self.public] {
            // Whatever still runs there (by pid, only in our namespaces).
            if let Ok((_, pids)) = run_bounded(
                Command::new("ip").args(["netns", "pids", ns]),
                COMMAND_TIMEOUT,
            ) {
                for pid in pids.split_whitespace() {
                    let _ = run_bounded(Command::new("kill").args(["-9", pid]), COMMAND_TIMEOUT);
                }
            }
            let _ = run_bounded(
                Command::new("ip").args(["netns", "del", ns]),
                COMMAND_TIMEOUT,
            );
        }
    }
}

/// The router's nftables rule set: masquerade out of `wan`, nothing in
/// unless established or mapped by miniupnpd (its chains, empty until it
/// adds a mapping).
const RULES: &str = "table inet lichen_upnp {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname \"lan\" oifname \"wan\" accept
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname \"wan\" masquerade
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
";

/// miniupnpd's configuration (`man miniupnpd`; 2.3.1 has one switch,
/// `enable_natpmp`, for NAT-PMP and PCP).
fn miniupnpd_conf(natpmp: bool) -> String {
    let natpmp = if natpmp { "yes" } else { "no" };
    format!(
        "ext_ifname=wan\n\
         listening_ip=lan\n\
         http_port=5000\n\
         enable_upnp=yes\n\
         enable_natpmp={natpmp}\n\
         secure_mode=yes\n\
         system_uptime=yes\n\
         min_lifetime=4\n\
         uuid=3a1f2e8c-1b7d-4c55-9a31-5d2b8c7e6f01\n\
         upnp_table_name=lichen_upnp\n\
         upnp_nat_table_name=lichen_upnp\n\
         upnp_forward_chain=miniupnpd\n\
         upnp_nat_chain=prerouting_miniupnpd\n\
         upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
         allow 1024-65535 10.77.0.0/24 1024-65535\n\
         deny 0-65535 0.0.0.0/0 0-65535\n"
    )
}

/// Why the bed cannot be built here.
struct Skip(String);

impl Bed {
    /// Make the namespaces, the links, the router's rules and start
    /// miniupnpd (NAT-PMP and PCP on or off).
    fn new(tag: &str, natpmp: bool) -> Result<Bed, Skip> {
        if !Path::new(MINIUPNPD).exists() {
            return Err(Skip(format!(
                "{MINIUPNPD} is missing (apt-get install miniupnpd-nftables)"
            )));
        }
        if run(Command::new("nft").arg("--version")).is_err() {
            return Err(Skip("nft is missing (apt-get install nftables)".into()));
        }
        let id = format!("lup{}{tag}", std::process::id());
        let dir = tempfile::tempdir().map_err(|e| Skip(format!("no temporary directory: {e}")))?;
        // The first namespace tells whether we may make them at all.
        let public = format!("{id}p");
        ip(&["netns", "add", &public]).map_err(Skip)?;
        let mut bed = Bed {
            public,
            router: format!("{id}r"),
            home: format!("{id}h"),
            dir,
            children: Vec::new(),
        };
        bed.build(natpmp)
            .unwrap_or_else(|e| panic!("the test bed could not be built: {e}"));
        Ok(bed)
    }

    fn build(&mut self, natpmp: bool) -> Result<(), String> {
        let (p, r, h) = (self.public.clone(), self.router.clone(), self.home.clone());
        ip(&["netns", "add", &r])?;
        ip(&["netns", "add", &h])?;
        ip(&[
            "-n", &p, "link", "add", "eth0", "type", "veth", "peer", "name", "wan", "netns", &r,
        ])?;
        ip(&[
            "-n", &r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", &h,
        ])?;
        ip(&[
            "-n",
            &p,
            "addr",
            "add",
            &format!("{PUBLIC}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &r, "addr", "add", &format!("{WAN}/24"), "dev", "wan"])?;
        ip(&["-n", &r, "addr", "add", "10.77.0.1/24", "dev", "lan"])?;
        ip(&[
            "-n",
            &h,
            "addr",
            "add",
            &format!("{HOME}/24"),
            "dev",
            "eth0",
        ])?;
        for (ns, dev) in [(&p, "eth0"), (&r, "wan"), (&r, "lan"), (&h, "eth0")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        for ns in [&p, &r, &h] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &h, "route", "add", "default", "via", "10.77.0.1"])?;
        run(in_ns(&r, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
        let rules = self.dir.path().join("router.nft");
        std::fs::write(&rules, RULES).map_err(|e| e.to_string())?;
        run(in_ns(&r, "nft").arg("-f").arg(&rules))?;
        let conf = self.dir.path().join("miniupnpd.conf");
        std::fs::write(&conf, miniupnpd_conf(natpmp)).map_err(|e| e.to_string())?;
        let log = self.dir.path().join("miniupnpd.log");
        let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = in_ns(&r, MINIUPNPD)
            .arg("-f")
            .arg(&conf)
            .arg("-P")
            .arg(self.dir.path().join("miniupnpd.pid"))
            .arg("-d")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(|e| e.to_string())?)
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("cannot start miniupnpd: {e}"))?;
        self.children.push(child);
        poll(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("HTTP listening on port").then_some(())
        })
        .ok_or_else(|| {
            format!(
                "miniupnpd did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    fn miniupnpd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("miniupnpd.log")).unwrap_or_default()
    }

    /// The DNAT rules miniupnpd keeps for the home node's peer port.
    fn mapped_rules(&self) -> Vec<String> {
        let out = run(in_ns(&self.router, "nft").args([
            "list",
            "chain",
            "inet",
            "lichen_upnp",
            "prerouting_miniupnpd",
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        out.lines()
            .filter(|l| l.contains("dnat") && l.contains(&PEER_PORT.to_string()))
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// `lichen noderef` for a node (made if new) listening on `listen`.
    fn noderef(&self, name: &str, listen: &str) -> PathBuf {
        let data = self.dir.path().join(name);
        let out = run(Command::new(bin())
            .arg("noderef")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", listen]))
        .unwrap_or_else(|e| panic!("{e}"));
        let file = self.dir.path().join(format!("{name}.noderef"));
        std::fs::write(&file, out.trim()).unwrap_or_else(|e| panic!("{e}"));
        file
    }

    /// Start node `name` in `ns`, listening on `listen`, with `network`
    /// lines in its `[network]` section; its index in `children`.
    fn start_node(&mut self, name: &str, ns: &str, listen: &str, network: &str) -> usize {
        let data = self.dir.path().join(name);
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[network]\ntest_network = true\n{network}\n\
                 [gateway]\nenabled = false\n[anonymity]\ntunnel_hops = 0\n"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let log = self.dir.path().join(format!("{name}.log"));
        let logf = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = in_ns(ns, bin())
            .args(["node", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .args(["--fcp-port", &FCP_PORT.to_string()])
            .args(["--listen", listen])
            .env("RUST_LOG", "info,lichen_node::peers::portmap=debug")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a node: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    fn node_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Run the program's `args` against the node in `ns`.
    fn cli(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        run(in_ns(ns, bin())
            .args(args)
            .args(["--fcp", &format!("127.0.0.1:{FCP_PORT}")]))
    }

    /// The `Reachability:` line of `lichen status` in `ns`.
    fn reachability(&self, ns: &str) -> Option<String> {
        let out = self.cli(ns, &["status"]).ok()?;
        out.lines()
            .find(|l| l.starts_with("Reachability:"))
            .map(str::to_string)
    }
}

/// Whether a TCP connection from the public side to the router's WAN
/// address on the peer port is answered (bash's `/dev/tcp`, 3 s).
fn wan_port_answers(bed: &Bed) -> bool {
    let script = format!("exec 3<>/dev/tcp/{WAN}/{PEER_PORT}");
    matches!(
        run_bounded(
            in_ns(&bed.public, "timeout").args(["3", "bash", "-c", &script]),
            COMMAND_TIMEOUT
        ),
        Ok((true, _))
    )
}

/// Build the bed, or say loudly why not.
fn bed_or_skip(test: &str, tag: &str, natpmp: bool) -> Option<Bed> {
    match Bed::new(tag, natpmp) {
        Ok(b) => Some(b),
        Err(Skip(why)) => {
            assert!(
                !(std::env::var_os("CI").is_some() && why.contains("is missing")),
                "{test}: {why}; CI must install it"
            );
            eprintln!(
                "\n*** SKIPPED: {test}: the network-namespace test bed cannot be built \
                 here ({why}); run as root with iproute2, nftables and miniupnpd-nftables ***\n"
            );
            None
        }
    }
}

/// The whole story for one router: `expect` is the protocol the node
/// should end up with (`PCP` when miniupnpd offers NAT-PMP/PCP, `UPnP`
/// when it offers only UPnP-IGD).
#[allow(clippy::too_many_lines)]
fn mapped_dialed_renewed_removed(test: &str, tag: &str, natpmp: bool, expect: &str) {
    let Some(mut bed) = bed_or_skip(test, tag, natpmp) else {
        return;
    };
    let (public, home) = (bed.public.clone(), bed.home.clone());
    let public_listen = format!("{PUBLIC}:{PEER_PORT}");
    let seed = bed.noderef("public", &public_listen);
    // The home node first: it maps its port before its seed is up, so
    // the seed's dial-back (asked at the hello) goes through the mapping.
    let started = Instant::now();
    let home_node = bed.start_node(
        "home",
        &home,
        &format!("0.0.0.0:{PEER_PORT}"),
        &format!("seeds = [{seed:?}]\nport_mapping_lease = {LEASE_SECS}"),
    );
    let want = format!("port mapped by {expect}");
    let line = poll(Duration::from_secs(30), || {
        bed.reachability(&home).filter(|l| l.contains(&want))
    })
    .unwrap_or_else(|| {
        panic!(
            "{test}: no port mapping: {:?}\nnode log:\n{}\nminiupnpd:\n{}",
            bed.reachability(&home),
            bed.node_log("home"),
            bed.miniupnpd_log()
        )
    });
    let to_map = started.elapsed();
    assert!(
        line.contains(&format!("public address {WAN}:{PEER_PORT}")),
        "{test}: {line}"
    );
    assert!(
        !bed.mapped_rules().is_empty(),
        "{test}: no rule on the router"
    );
    assert!(
        wan_port_answers(&bed),
        "{test}: the mapped port does not answer"
    );

    // A public node dials the home node back through the mapping.
    let _public_node = bed.start_node("public", &public, &public_listen, "port_mapping = false");
    let reached = poll(Duration::from_secs(40), || {
        bed.reachability(&home).filter(|l| {
            l.starts_with("Reachability: reachable (behind NAT") && !l.contains("no peer")
        })
    });
    assert!(
        reached.is_some(),
        "{test}: not dialed back: {:?}\nhome log:\n{}\npublic log:\n{}",
        bed.reachability(&home),
        bed.node_log("home"),
        bed.node_log("public")
    );
    // The public node knows the home node by its mapped address (the
    // noderef it sent after dialing).
    let peers = bed
        .cli(&public, &["peers", "--addresses"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        peers.contains(&format!("{WAN}:{PEER_PORT}")),
        "{test}: the public node does not know the mapped address:\n{peers}"
    );

    // Renewed at half the lease.
    let renewed = poll(Duration::from_secs(4 * LEASE_SECS), || {
        let n = bed.node_log("home").matches("port mapping renewed").count();
        (n >= 2).then_some(n)
    });
    assert!(
        renewed.is_some(),
        "{test}: not renewed:\n{}",
        bed.node_log("home")
    );
    assert!(!bed.mapped_rules().is_empty(), "{test}: the rule is gone");

    // A graceful stop removes the mapping.
    let pid = bed.children[home_node].id().to_string();
    let stop = Instant::now();
    run(Command::new("kill").args(["-TERM", &pid])).unwrap_or_else(|e| panic!("{e}"));
    let exited = poll(Duration::from_secs(15), || {
        bed.children[home_node].try_wait().ok().flatten()
    });
    assert!(exited.is_some(), "{test}: the home node did not stop");
    let removed = poll(Duration::from_secs(5), || {
        bed.mapped_rules().is_empty().then_some(())
    });
    let to_remove = stop.elapsed();
    let log = bed.node_log("home");
    assert!(
        removed.is_some(),
        "{test}: the mapping outlived the node: {:?}\nlog:\n{log}",
        bed.mapped_rules()
    );
    assert!(
        log.contains("port mapping removed from the router"),
        "{log}"
    );
    assert!(!wan_port_answers(&bed), "{test}: the port still answers");

    // Addresses only at debug level.
    for l in log.lines().filter(|l| !l.contains("DEBUG")) {
        assert!(
            !l.contains(WAN) && !l.contains(HOME) && !l.contains(PUBLIC),
            "{test}: an address above debug: {l}"
        );
    }
    eprintln!(
        "{test}: {expect} mapping seen in the status {:.1} s after start; \
         renewed every {} s; node stopped and mapping gone in {:.1} s",
        to_map.as_secs_f64(),
        LEASE_SECS / 2,
        to_remove.as_secs_f64()
    );
    for l in log.lines().filter(|l| l.contains("port mapped")) {
        eprintln!("{test}: {l}");
    }
}

#[test]
fn a_node_behind_a_pcp_router_maps_its_port_and_unmaps_it_at_shutdown() {
    mapped_dialed_renewed_removed("pcp", "a", true, "PCP");
}

#[test]
fn a_node_behind_a_upnp_only_router_maps_its_port_and_unmaps_it_at_shutdown() {
    mapped_dialed_renewed_removed("upnp", "b", false, "UPnP");
}
