//! Peering across restarts and darknet friends, with real `lichen`
//! processes on loopback.
//!
//! - A node that joined through a seed is restarted (SIGKILL, then
//!   SIGTERM) with no seeds in its configuration: it reconnects to the
//!   peers it remembered. A damaged peer file does not stop it.
//! - Two darknet nodes that know only each other connect once each has
//!   the other's noderef (`lichen peers add` on one, FCP `AddPeer File=` on
//!   the other); a document inserted on one is fetched on the other; a
//!   third node that is not their friend is refused; after a restart the
//!   friend is reconnected.
//! - Two darknet nodes become friends by one pasted invitation (`lichen
//!   invite` on one, `lichen peers add INVITATION` on the other); the
//!   invitation works once.
#![allow(clippy::unwrap_used)]

use lichen_fcp::codec::Message;
use lichen_tests::network::{self, connected, random_bytes};
use lichen_tests::{free_port, Fcp, NodeProc};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CONNECT_WAIT: Duration = Duration::from_secs(40);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lichen-it"))
}

fn wait_connected(n: &NodeProc, want: u64, what: &str) {
    let start = Instant::now();
    network::wait_connected(n, want, CONNECT_WAIT);
    eprintln!(
        "{what}: connected after {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// `lichen noderef` for a data directory and peer port, written to a file.
fn noderef_file(dir: &Path, data: &Path, port: u16, name: &str) -> PathBuf {
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let f = dir.join(name);
    std::fs::write(&f, network::noderef_text(bin(), data, listen)).unwrap();
    f
}

fn lichen(args: &[&str], fcp: SocketAddr) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .args(["--fcp", &fcp.to_string()])
        .output()
        .unwrap()
}

#[test]
fn a_restarted_node_reconnects_to_remembered_peers_without_seeds() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed");
    let seed_peer = free_port();
    let seed_file = noderef_file(dir.path(), &seed_dir, seed_peer, "seed.noderef");
    let config = dir.path().join("seeded.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nseeds = [{:?}]\n{}",
            seed_file.to_str().unwrap(),
            network::NO_TUNNELS
        ),
    )
    .unwrap();
    let seed = NodeProc::start_with_config(bin(), &seed_dir, free_port(), seed_peer, None);

    // B joins through the seed and remembers it while running: the peer
    // file is there before any shutdown.
    let b_dir = dir.path().join("b");
    let peer_file = b_dir.join("peers.sealed");
    let mut b = NodeProc::start_with_config(bin(), &b_dir, free_port(), free_port(), Some(&config));
    wait_connected(&b, 1, "B through the seed");
    let start = Instant::now();
    while !peer_file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no peer file while running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGKILL, then restart with no seeds at all.
    b.kill9();
    let mut b = NodeProc::start_with_config(bin(), &b_dir, free_port(), free_port(), None);
    wait_connected(&b, 1, "B after SIGKILL, no seeds");
    wait_connected(&seed, 1, "the seed sees B again");

    // SIGTERM (clean shutdown), restart with no seeds.
    assert!(b.terminate(), "B did not stop on SIGTERM");
    let mut b = NodeProc::start_with_config(bin(), &b_dir, free_port(), free_port(), None);
    wait_connected(&b, 1, "B after SIGTERM, no seeds");

    // ListPeers shows the remembered seed as an opennet peer, connected.
    let mut c = Fcp::connect(b.fcp, "peers-list");
    c.send(
        &Message::new("ListPeers")
            .field("Identifier", "lp")
            .field("WithVolatile", "true"),
    );
    let (_, listed) = c.until(&["EndListPeers"]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "Peer");
    assert_eq!(listed[0].get("opennet"), Some("true"));
    assert_eq!(listed[0].get("volatile.status"), Some("CONNECTED"));
    assert_eq!(
        listed[0].get("physical.tcp"),
        Some(format!("127.0.0.1:{seed_peer}").as_str())
    );
    drop(c);

    // Nothing identifying in the log at info level.
    let log = b.log_text();
    assert!(
        !log.contains(&format!(":{seed_peer}")),
        "address logged:\n{log}"
    );
    assert!(
        !log.contains("lichen-noderef-v1:"),
        "noderef logged:\n{log}"
    );

    // A damaged peer file: a warning, the node still starts (alone).
    assert!(b.terminate());
    std::fs::write(&peer_file, "version = 1\n[[peer]]\nkind = 3\n").unwrap();
    let b = NodeProc::start_with_config(bin(), &b_dir, free_port(), free_port(), None);
    assert_eq!(connected(b.fcp), 0);
    assert!(b.log_text().contains("damaged"), "{}", b.log_text());
    assert!(b_dir.join("peers.sealed.damaged").exists());
    eprintln!("wall time {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
#[allow(clippy::too_many_lines)]
fn darknet_friends_connect_share_a_document_and_refuse_strangers() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let refs = dir.path().join("refs");
    std::fs::create_dir_all(&refs).unwrap();
    let outside = tempfile::tempdir().unwrap();
    // Darknet; noderef files readable over FCP from `refs` only. Default
    // caching: the insert's route ends at d2 with a high HTL, and d2 (the
    // forwarder, never the inserter) keeps it.
    let config = dir.path().join("dark.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nopennet = false\n{}{}[fcp]\nallowed_dirs = [{:?}]\n",
            network::TEST_NETWORK,
            network::NO_TUNNELS,
            refs.to_str().unwrap()
        ),
    )
    .unwrap();
    let (d1_dir, d2_dir, t_dir) = (
        dir.path().join("d1"),
        dir.path().join("d2"),
        dir.path().join("t"),
    );
    let (p1, p2, pt) = (free_port(), free_port(), free_port());
    let r1 = noderef_file(&refs, &d1_dir, p1, "d1.noderef");
    let r2 = noderef_file(&refs, &d2_dir, p2, "d2.noderef");
    let _rt = noderef_file(&refs, &t_dir, pt, "t.noderef");
    let f1 = free_port();
    let mut d1 = NodeProc::start_with_config(bin(), &d1_dir, f1, p1, Some(&config));
    let d2 = NodeProc::start_with_config(bin(), &d2_dir, free_port(), p2, Some(&config));
    let t = NodeProc::start_with_config(bin(), &t_dir, free_port(), pt, Some(&config));
    assert_eq!(connected(d1.fcp), 0);

    // d1 adds d2 with the CLI.
    let out = lichen(&["peers", "add", r2.to_str().unwrap()], d1.fcp);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("added friend"));
    // A file that is not a noderef: a clear error, no panic.
    let junk = outside.path().join("junk.noderef");
    std::fs::write(&junk, "hello\n").unwrap();
    let out = lichen(&["peers", "add", junk.to_str().unwrap()], d1.fcp);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a usable noderef"), "{err}");

    // d2 adds d1 over FCP with File=; bad inputs first.
    let mut c = Fcp::connect(d2.fcp, "addpeer");
    let mut expect_error = |m: Message, code: &str| {
        c.send(&m.field("Identifier", code));
        let (e, _) = c.until(&["ProtocolError", "Peer"]);
        assert_eq!(e.name, "ProtocolError", "{e:?}");
        assert_eq!(e.get("Code"), Some(code), "{e:?}");
        assert_eq!(e.get("Identifier"), Some(code), "{e:?}");
        assert!(e.get("CodeDescription").is_some_and(|d| !d.is_empty()));
        eprintln!("AddPeer refused: {:?}", e.get("ExtraDescription"));
    };
    // No noderef at all: missing field.
    expect_error(Message::new("AddPeer"), "5");
    // Garbage text: reference parse error.
    expect_error(
        Message::new("AddPeer").field("Lichen.NodeRef", "lichen-noderef-v1:AAAA"),
        "21",
    );
    // A file outside the allowed directories: disk access denied.
    let copy = outside.path().join("d1.noderef");
    std::fs::copy(&r1, &copy).unwrap();
    expect_error(
        Message::new("AddPeer").field("File", copy.to_str().unwrap()),
        "25",
    );
    // Its own noderef.
    expect_error(
        Message::new("AddPeer").field("File", r2.to_str().unwrap()),
        "28",
    );
    c.send(
        &Message::new("AddPeer")
            .field("Identifier", "add-d1")
            .field("Trust", "NORMAL")
            .field("Visibility", "NO")
            .field("File", r1.to_str().unwrap()),
    );
    let (peer, _) = c.until(&["Peer", "ProtocolError"]);
    assert_eq!(peer.name, "Peer", "{peer:?}");
    assert_eq!(peer.get("opennet"), Some("false"));
    assert_eq!(peer.get("Identifier"), Some("add-d1"));
    // Twice: duplicate.
    c.send(
        &Message::new("AddPeer")
            .field("Identifier", "again")
            .field("File", r1.to_str().unwrap()),
    );
    let (dup, _) = c.until(&["Peer", "ProtocolError"]);
    assert_eq!(dup.get("Code"), Some("29"), "{dup:?}");
    drop(c);

    wait_connected(&d1, 1, "d1 to its friend");
    wait_connected(&d2, 1, "d2 to its friend");

    // A document inserted on d1 is fetched on d2.
    let body = random_bytes(300 * 1024, 0x5eed);
    // PutSuccessful with Lichen.InNetwork=true (asserted by `network::put`).
    let uri = network::put(d1.fcp, "CHK@", &body, &[]);
    let mut c = Fcp::connect(d2.fcp, "dark-get");
    c.send(
        &Message::new("ClientGet")
            .field("URI", &uri)
            .field("Identifier", "get")
            .field("ReturnType", "direct"),
    );
    let (got, _) = c.until(&["AllData", "GetFailed"]);
    assert_eq!(got.name, "AllData", "{got:?}");
    assert!(got.data.as_deref() == Some(&body[..]), "the bytes differ");
    drop(c);

    // t knows d1, d1 does not know t: t's links are closed.
    let out = lichen(&["peers", "add", r1.to_str().unwrap()], t.fcp);
    assert!(out.status.success(), "{out:?}");
    // t dials at once and again after its retry delay (5 s).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(7) {
        assert_eq!(connected(d1.fcp), 1, "d1 accepted a stranger");
        assert_eq!(connected(t.fcp), 0, "the stranger got a peer");
        std::thread::sleep(Duration::from_millis(300));
    }

    // `lichen peers` lists the friend; addresses only when asked.
    let out = lichen(&["peers"], d1.fcp);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("friend") && text.contains("connected"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains(&format!(":{p2}")), "{text}");
    let out = lichen(&["peers", "--addresses"], d1.fcp);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("127.0.0.1:{p2}")), "{text}");

    // The friend is remembered: d1 restarted reconnects to d2.
    assert!(d1.terminate());
    let d1 = NodeProc::start_with_config(bin(), &d1_dir, f1, p1, Some(&config));
    wait_connected(&d1, 1, "d1 after restart");
    wait_connected(&d2, 1, "d2 after d1's restart");

    // Removing the friend closes the link.
    let identity = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let out = lichen(&["peers", "remove", &identity], d1.fcp);
    assert!(out.status.success(), "{out:?}");
    let start = Instant::now();
    while connected(d1.fcp) != 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "link not closed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = lichen(&["peers", "remove", &identity], d1.fcp);
    assert!(!out.status.success());
    eprintln!("wall time {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn one_pasted_invitation_makes_two_darknet_nodes_friends_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dark.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nopennet = false\n{}{}",
            network::TEST_NETWORK,
            network::NO_TUNNELS
        ),
    )
    .unwrap();
    let start = |name: &str| {
        NodeProc::start_with_config(
            bin(),
            &dir.path().join(name),
            free_port(),
            free_port(),
            Some(&config),
        )
    };
    let (a, b, c) = (start("a"), start("b"), start("c"));
    let out = lichen(&["invite", "--hours", "2"], a.fcp);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let invitation = text.lines().next().unwrap().to_string();
    assert!(invitation.starts_with("lichen-invite:"), "{text}");
    assert!(invitation.len() < 100, "short: {invitation}");
    assert!(text.contains("works once"), "{text}");

    let out = lichen(&["peers", "add", &invitation], b.fcp);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("added friend"), "{said}");
    wait_connected(&a, 1, "a, invited");
    wait_connected(&b, 1, "b, by invitation");
    let listed = lichen(&["peers"], a.fcp);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("friend"));

    // Used: the next node is refused, and a damaged one is caught by the
    // command itself.
    let out = lichen(&["peers", "add", &invitation], c.fcp);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the invitation"), "{err}");
    assert_eq!(connected(c.fcp), 0);
    let out = lichen(
        &["peers", "add", &invitation[..invitation.len() - 5]],
        c.fcp,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a usable invitation"),
        "{out:?}"
    );
}
