//! FCP access levels (`[fcp] full_access_hosts`) against a real `lichen
//! node` process on loopback: for each message that needs full access, a
//! client without it gets ProtocolError 24 (fred's `ACCESS_DENIED`) and
//! nothing happens, and a client with it is served.
//!
//! The node allows all of 127.0.0.0/8 but gives full access to 127.0.0.2
//! only: a client connecting from 127.0.0.1 is restricted, one whose
//! socket is bound to 127.0.0.2 has full access.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lichen_fcp::blocking::Connection;
use lichen_fcp::codec::Message;
use lichen_fcp::{Event, Limits};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lichen"))
}

/// A free loopback port, never one handed out before in this process.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A `lichen node` process, killed when dropped.
struct NodeProc {
    child: Child,
    fcp: SocketAddr,
    log: PathBuf,
}

impl NodeProc {
    /// A darknet node (no gateway) with `fcp_extra` in its `[fcp]` table.
    fn start(dir: &Path, fcp_extra: &str) -> NodeProc {
        for _ in 0..3 {
            if let Some(n) = Self::try_start(dir, fcp_extra) {
                return n;
            }
        }
        panic!("the node could not get its ports in 3 tries");
    }

    fn try_start(dir: &Path, fcp_extra: &str) -> Option<NodeProc> {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("node.toml");
        // A node started again in the same directory keeps its file (and
        // the settings changed in it).
        if !config.exists() {
            std::fs::write(
                &config,
                format!(
                    "[fcp]\n{fcp_extra}\n[gateway]\nenabled = false\n[network]\nopennet = false\n\
                     [anonymity]\ntunnel_hops = 0\n"
                ),
            )
            .unwrap();
        }
        let port = free_port();
        let log = dir.join("node.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .args(["node", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--fcp-port", &port.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start lichen node");
        let mut n = NodeProc {
            child,
            fcp: format!("127.0.0.1:{port}").parse().unwrap(),
            log,
        };
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&n.fcp, Duration::from_millis(200)).is_ok() {
                return Some(n);
            }
            if n.child.try_wait().unwrap().is_some() {
                let log = n.log_text();
                assert!(log.contains("cannot listen"), "node exited:\n{log}");
                return None;
            }
            assert!(
                start.elapsed() < WAIT,
                "node did not open FCP:\n{}",
                n.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (bounded) for the process to end by itself.
    fn exited(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if !self.running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node allowing 127.0.0.0/8, full access for 127.0.0.2 only.
fn restricted_node(dir: &Path) -> NodeProc {
    NodeProc::start(
        dir,
        "allowed_hosts = [\"127.0.0.0/8\"]\nfull_access_hosts = [\"127.0.0.2\"]",
    )
}

struct Client {
    conn: Connection,
}

impl Client {
    /// Connects from `source` (a loopback address) and says hello.
    fn from(source: &str, node: SocketAddr, name: &str) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let stream = rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(format!("{source}:0").parse().unwrap()).unwrap();
            s.connect(node).await.unwrap().into_std().unwrap()
        });
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = Connection::from_stream(stream).with_limits(Limits {
            inline_data_limit: 1 << 30,
            ..Limits::default()
        });
        conn.hello(name).unwrap();
        Client { conn }
    }

    /// A client with full access (from 127.0.0.2).
    fn full(node: &NodeProc) -> Client {
        Client::from("127.0.0.2", node.fcp, "owner")
    }

    /// A client without (from 127.0.0.1).
    fn restricted(node: &NodeProc) -> Client {
        Client::from("127.0.0.1", node.fcp, "stranger")
    }

    fn send(&mut self, m: &Message) {
        self.conn.send(m).unwrap();
    }

    fn recv(&mut self) -> Message {
        match self.conn.next_event().unwrap() {
            Event::Message(m) => m,
            other => panic!("unexpected event {other:?}"),
        }
    }

    /// Messages until one named in `names`; returns it and those before.
    fn until(&mut self, names: &[&str]) -> (Message, Vec<Message>) {
        let mut seen = Vec::new();
        loop {
            let m = self.recv();
            if names.contains(&m.name.as_str()) {
                return (m, seen);
            }
            seen.push(m);
        }
    }

    /// Sends `m` and expects ProtocolError 24 for it.
    fn denied(&mut self, m: &Message) {
        self.send(m);
        let (e, _) = self.until(&["ProtocolError"]);
        assert_eq!(e.get("Code"), Some("24"), "{} → {e:?}", m.name);
        assert_eq!(e.get("Fatal"), Some("false"), "{e:?}");
        let extra = e.get("ExtraDescription").unwrap_or("");
        assert!(extra.contains("requires full access"), "{extra}");
        assert_eq!(e.get("Identifier"), m.get("Identifier"), "{e:?}");
        self.still_served();
    }

    /// The connection still works (a refusal is not fatal).
    fn still_served(&mut self) {
        self.send(&Message::new("GenerateSSK").field("Identifier", "alive"));
        let (k, _) = self.until(&["SSKKeypair"]);
        assert_eq!(k.get("Identifier"), Some("alive"));
    }

    /// The identifiers `ListPersistentRequests` shows this connection.
    fn listed(&mut self) -> Vec<String> {
        self.send(&Message::new("ListPersistentRequests"));
        let (_, seen) = self.until(&["EndListPersistentRequests"]);
        seen.iter()
            .filter(|m| m.name.starts_with("Persistent"))
            .filter_map(|m| m.get("Identifier").map(str::to_string))
            .collect()
    }

    /// `ListPeers`: the identities listed.
    fn peers(&mut self) -> Vec<String> {
        self.send(&Message::new("ListPeers"));
        let (_, seen) = self.until(&["EndListPeers"]);
        seen.iter()
            .filter(|m| m.name == "Peer")
            .map(|m| m.get("identity").unwrap().to_string())
            .collect()
    }
}

fn msg(name: &str, fields: &[(&str, &str)]) -> Message {
    let mut m = Message::new(name);
    for (k, v) in fields {
        m = m.field(*k, *v);
    }
    m
}

/// Another node's noderef text (`lichen noderef`).
fn noderef(dir: &Path) -> String {
    let out = Command::new(bin())
        .arg("noderef")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn shutdown_needs_full_access() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = restricted_node(dir.path());
    let mut r = Client::restricted(&node);
    r.denied(&Message::new("Shutdown"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(node.running(), "the node stopped on a restricted Shutdown");
    // A new connection is still served too.
    Client::restricted(&node).still_served();

    let mut f = Client::full(&node);
    f.send(&Message::new("Shutdown"));
    assert!(node.exited(), "the node did not stop on a full Shutdown");
    assert!(node.child.wait().unwrap().success());
}

#[test]
fn peer_changes_and_lists_need_full_access() {
    let dir = tempfile::tempdir().unwrap();
    let node = restricted_node(&dir.path().join("a"));
    let friend = noderef(&dir.path().join("friend"));
    let mut r = Client::restricted(&node);
    let mut f = Client::full(&node);

    // AddPeer: refused, no peer added.
    let add = msg(
        "AddPeer",
        &[("Identifier", "add"), ("Lichen.NodeRef", friend.as_str())],
    );
    r.denied(&add);
    assert!(f.peers().is_empty(), "a restricted AddPeer added a peer");
    // By file too (the refusal comes before the file is looked at).
    r.denied(&msg("AddPeer", &[("File", "/etc/hostname")]));
    assert!(f.peers().is_empty());

    // The owner adds it.
    f.send(&add);
    let (p, _) = f.until(&["Peer", "ProtocolError"]);
    assert_eq!(p.name, "Peer", "{p:?}");
    let identity = p.get("identity").unwrap().to_string();
    assert_eq!(f.peers(), vec![identity.clone()]);

    // Listing peers (fred: full access only) and changing them.
    r.denied(&Message::new("ListPeers"));
    r.denied(&msg("ListPeer", &[("NodeIdentifier", identity.as_str())]));
    r.denied(&msg(
        "ListPeerNotes",
        &[("NodeIdentifier", identity.as_str())],
    ));
    r.denied(&msg(
        "ModifyPeer",
        &[
            ("NodeIdentifier", identity.as_str()),
            ("IsDisabled", "true"),
        ],
    ));
    r.denied(&msg(
        "ModifyPeerNote",
        &[
            ("NodeIdentifier", identity.as_str()),
            ("PeerNoteType", "1"),
            ("NoteText", "aGk="),
        ],
    ));
    r.denied(&msg(
        "RemovePeer",
        &[("Identifier", "rm"), ("NodeIdentifier", identity.as_str())],
    ));
    assert_eq!(
        f.peers(),
        vec![identity.clone()],
        "a restricted RemovePeer removed it"
    );

    // With full access: ModifyPeer / notes are not supported (7), not denied.
    for name in ["ModifyPeer", "ModifyPeerNote", "ListPeerNotes"] {
        f.send(&msg(name, &[("NodeIdentifier", identity.as_str())]));
        let (e, _) = f.until(&["ProtocolError"]);
        assert_eq!(e.get("Code"), Some("7"), "{name}: {e:?}");
    }
    f.send(&msg(
        "RemovePeer",
        &[("Identifier", "rm"), ("NodeIdentifier", identity.as_str())],
    ));
    let (m, _) = f.until(&["PeerRemoved", "UnknownNodeIdentifier", "ProtocolError"]);
    assert_eq!(m.name, "PeerRemoved", "{m:?}");
    assert!(f.peers().is_empty());
}

#[test]
fn node_data_and_configuration_need_full_access() {
    let dir = tempfile::tempdir().unwrap();
    let node = restricted_node(dir.path());
    let mut r = Client::restricted(&node);
    let mut f = Client::full(&node);
    r.denied(&msg("GetNode", &[("WithVolatile", "true")]));
    r.denied(&msg("GetConfig", &[("WithCurrent", "true")]));
    r.denied(&msg("ModifyConfig", &[("fcp.allowedHosts", "*")]));
    r.denied(&msg("LoadPlugin", &[("PluginURL", "x")]));
    r.denied(&msg("ProbeRequest", &[("Type", "IDENTIFIER")]));
    r.denied(&msg(
        "GetPluginInfo",
        &[("PluginName", "x"), ("Detailed", "true")],
    ));

    f.send(&msg("GetNode", &[("WithVolatile", "true")]));
    let (n, _) = f.until(&["NodeData", "ProtocolError"]);
    assert_eq!(n.name, "NodeData", "{n:?}");
    // A full-access client is served what a restricted one was refused.
    for name in ["GetConfig", "ModifyConfig"] {
        f.send(&Message::new(name));
        let (c, _) = f.until(&["ConfigData", "ProtocolError"]);
        assert_eq!(c.name, "ConfigData", "{name}: {c:?}");
    }
    // And the refused change was not made.
    f.send(&msg("GetConfig", &[("WithCurrent", "true")]));
    let (c, _) = f.until(&["ConfigData"]);
    assert_eq!(c.get("current.fcp.allowedHosts"), Some("127.0.0.0/8"));
}

/// `GetConfig` and `ModifyConfig` (Hyphanet's names, `docs/fcp.md`): the
/// settings with what was asked of them; a change is answered with the
/// settings now, written into the node's config file and kept when the
/// node starts again; a bad change is refused with ProtocolError 8 and
/// changes nothing.
#[test]
fn settings_are_read_changed_and_kept_over_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = restricted_node(dir.path());
    let mut f = Client::full(&node);
    f.send(&msg(
        "GetConfig",
        &[
            ("Identifier", "g1"),
            ("WithCurrent", "true"),
            ("WithDefaults", "true"),
            ("WithShortDescription", "true"),
            ("WithDataTypes", "true"),
        ],
    ));
    let (c, _) = f.until(&["ConfigData", "ProtocolError"]);
    assert_eq!(c.name, "ConfigData", "{c:?}");
    assert_eq!(c.get("Identifier"), Some("g1"));
    assert_eq!(c.get("current.node.outputBandwidthLimit"), Some("0"));
    assert_eq!(c.get("current.node.opennet.enabled"), Some("false"));
    assert_eq!(c.get("default.node.opennet.enabled"), Some("true"));
    assert_eq!(c.get("current.node.lichen.tunnelHops"), Some("0"));
    assert_eq!(
        c.get("current.fcp.allowedHostsFullAccess"),
        Some("127.0.0.2/32")
    );
    assert_eq!(c.get("dataType.node.storeSize"), Some("number"));
    assert!(c.get("shortDescription.node.storeSize").is_some());
    // Only the trees asked for.
    assert!(c
        .fields
        .iter()
        .all(|(k, _)| !k.starts_with("longDescription.")));

    f.send(&msg(
        "ModifyConfig",
        &[
            ("Identifier", "m1"),
            ("node.outputBandwidthLimit", "64KiB"),
            ("node.lichen.tunnelHops", "1"),
        ],
    ));
    let (c, _) = f.until(&["ConfigData", "ProtocolError"]);
    assert_eq!(c.name, "ConfigData", "{c:?}");
    assert_eq!(c.get("Identifier"), Some("m1"));
    assert_eq!(c.get("current.node.outputBandwidthLimit"), Some("65536"));
    assert_eq!(c.get("current.node.lichen.tunnelHops"), Some("1"));

    // One bad value among good ones: refused, nothing changed.
    for (fields, names) in [
        (
            &[("node.inputBandwidthLimit", "1MiB"), ("fcp.port", "0")][..],
            "fcp.port",
        ),
        (&[("node.noSuchSetting", "1")], "node.noSuchSetting"),
        (&[("fcp.allowedHostsFullAccess", "")], "full access"),
    ] {
        f.send(&msg("ModifyConfig", fields));
        let (e, _) = f.until(&["ConfigData", "ProtocolError"]);
        assert_eq!(e.name, "ProtocolError", "{fields:?}: {e:?}");
        assert_eq!(e.get("Code"), Some("8"), "{e:?}");
        assert!(
            e.get("ExtraDescription").unwrap_or("").contains(names),
            "{e:?}"
        );
    }
    f.send(&msg("GetConfig", &[("WithCurrent", "true")]));
    let (c, _) = f.until(&["ConfigData"]);
    assert_eq!(c.get("current.node.inputBandwidthLimit"), Some("0"));
    assert_eq!(c.get("current.node.outputBandwidthLimit"), Some("65536"));

    // In the file, beside what was there; and after a restart.
    let text = std::fs::read_to_string(dir.path().join("node.toml")).unwrap();
    assert!(text.contains("upload_limit = 65536"), "{text}");
    assert!(
        text.contains("full_access_hosts = [\"127.0.0.2\"]"),
        "{text}"
    );
    f.send(&Message::new("Shutdown"));
    assert!(node.exited(), "the node did not stop");
    drop(node);
    let node = restricted_node(dir.path());
    let mut f = Client::full(&node);
    f.send(&msg("GetConfig", &[("WithCurrent", "true")]));
    let (c, _) = f.until(&["ConfigData"]);
    assert_eq!(c.get("current.node.outputBandwidthLimit"), Some("65536"));
    assert_eq!(c.get("current.node.lichen.tunnelHops"), Some("1"));
    assert_eq!(c.get("current.node.opennet.enabled"), Some("false"));
}

/// A direct forever `ClientPut` of `data`, global or not.
fn put(identifier: &str, global: bool, data: Vec<u8>) -> Message {
    let mut fields = lichen_fcp::Fields::new();
    for (k, v) in [
        ("URI", "CHK@"),
        ("Identifier", identifier),
        ("Global", if global { "true" } else { "false" }),
        ("Persistence", "forever"),
        ("UploadFrom", "direct"),
    ] {
        fields.push(k, v);
    }
    Message::with_data("ClientPut", fields, data)
}

#[test]
fn the_global_queue_needs_full_access() {
    let dir = tempfile::tempdir().unwrap();
    let node = restricted_node(dir.path());
    let mut f = Client::full(&node);
    let mut r = Client::restricted(&node);
    f.send(&put("owner-put", true, b"the owner's document".to_vec()));
    f.send(&Message::new("WatchGlobal"));
    let start = Instant::now();
    while !f.listed().contains(&"owner-put".to_string()) {
        assert!(start.elapsed() < WAIT, "the owner's put is not listed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Watching the global queue: refused, and nothing global is listed.
    r.denied(&Message::new("WatchGlobal"));
    r.denied(&msg(
        "WatchGlobal",
        &[("Enabled", "true"), ("VerbosityMask", "1")],
    ));
    assert!(r.listed().is_empty(), "{:?}", r.listed());
    r.denied(&msg("ListPersistentRequests", &[("Global", "true")]));
    // Querying, modifying, removing the owner's request.
    let g = [("Identifier", "owner-put"), ("Global", "true")];
    r.denied(&msg("GetRequestStatus", &g));
    r.denied(&msg(
        "ModifyPersistentRequest",
        &[
            ("Identifier", "owner-put"),
            ("Global", "true"),
            ("PriorityClass", "6"),
        ],
    ));
    r.denied(&msg("RemovePersistentRequest", &g));
    r.denied(&msg("RemoveRequest", &g));
    assert!(
        f.listed().contains(&"owner-put".to_string()),
        "removed by a restricted client"
    );
    // Starting global requests: refused, nothing added to the queue.
    r.denied(&msg(
        "ClientGet",
        &[
            ("URI", "KSK@lichen-access-test"),
            ("Identifier", "r-get"),
            ("Global", "true"),
            ("Persistence", "forever"),
        ],
    ));
    // A put with a small payload (read with its message) and one with a
    // large payload (streamed): both refused, their bytes skipped.
    r.denied(&put("r-put", true, vec![7u8; 100]));
    r.denied(&put("r-put", true, vec![9u8; 3 << 20]));
    let listed = f.listed();
    assert!(
        !listed.contains(&"r-get".to_string()) && !listed.contains(&"r-put".to_string()),
        "{listed:?}"
    );
    // Its own, non-global requests still work.
    r.send(&put("r-put", false, b"mine".to_vec()));
    let start = Instant::now();
    while !r.listed().contains(&"r-put".to_string()) {
        assert!(start.elapsed() < WAIT, "the restricted client's own put");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!r.listed().contains(&"owner-put".to_string()));

    // The owner may do all of it.
    f.send(&msg("GetRequestStatus", &g));
    let (p, _) = f.until(&["PersistentPut"]);
    assert_eq!(p.get("Identifier"), Some("owner-put"));
    f.send(&msg(
        "ModifyPersistentRequest",
        &[
            ("Identifier", "owner-put"),
            ("Global", "true"),
            ("PriorityClass", "6"),
        ],
    ));
    f.until(&["PersistentRequestModified"]);
    f.send(&msg(
        "ClientGet",
        &[
            ("URI", "KSK@lichen-access-test"),
            ("Identifier", "f-get"),
            ("Global", "true"),
            ("Persistence", "forever"),
        ],
    ));
    let start = Instant::now();
    while !f.listed().contains(&"f-get".to_string()) {
        assert!(start.elapsed() < WAIT, "the owner's global get");
        std::thread::sleep(Duration::from_millis(50));
    }
    f.send(&msg("RemovePersistentRequest", &g));
    let (m, _) = f.until(&["PersistentRequestRemoved"]);
    assert_eq!(m.get("Identifier"), Some("owner-put"));
}

#[test]
fn a_restricted_client_giving_the_owners_name_sees_none_of_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let node = restricted_node(dir.path());
    let mut owner = Client::from("127.0.0.2", node.fcp, "tool");
    owner.send(&put("owner-own", false, b"the owner's own".to_vec()));
    let start = Instant::now();
    while !owner.listed().contains(&"owner-own".to_string()) {
        assert!(start.elapsed() < WAIT, "the owner's put is not listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The same Name from a restricted address: another queue.
    let mut r = Client::from("127.0.0.1", node.fcp, "tool");
    assert!(r.listed().is_empty(), "{:?}", r.listed());
    for name in [
        "GetRequestStatus",
        "ModifyPersistentRequest",
        "RemovePersistentRequest",
    ] {
        r.send(&msg(name, &[("Identifier", "owner-own")]));
        let (e, _) = r.until(&["ProtocolError", "PersistentPut", "PersistentRequestRemoved"]);
        assert_eq!(e.get("Code"), Some("15"), "{name}: {e:?}");
    }
    assert!(owner.listed().contains(&"owner-own".to_string()));
    // The restricted client's own persistent requests are kept under its
    // Name for its next connection, and out of the owner's sight.
    r.send(&put("stranger-own", false, b"the stranger's own".to_vec()));
    let start = Instant::now();
    while !r.listed().contains(&"stranger-own".to_string()) {
        assert!(start.elapsed() < WAIT, "the restricted client's put");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(r);
    let mut again = Client::from("127.0.0.1", node.fcp, "tool");
    assert_eq!(again.listed(), vec!["stranger-own".to_string()]);
    assert!(!owner.listed().contains(&"stranger-own".to_string()));
}

#[test]
fn loopback_has_full_access_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(dir.path(), "");
    for source in ["127.0.0.1", "127.0.0.2"] {
        let mut c = Client::from(source, node.fcp, "local");
        c.send(&Message::new("GetNode"));
        let (n, _) = c.until(&["NodeData", "ProtocolError"]);
        assert_eq!(n.name, "NodeData", "from {source}: {n:?}");
        c.send(&Message::new("WatchGlobal"));
        assert!(c.listed().is_empty());
    }
    Client::from("127.0.0.1", node.fcp, "local").send(&Message::new("Shutdown"));
    assert!(node.exited());
}
