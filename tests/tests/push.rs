//! Inserts made without peers are pushed into the network once peers come
//! (README, "With no peers…"), and inserts that could not be kept until
//! then are refused up front.
//!
//! 1. Node A alone (its seed is not up yet) inserts a few MB:
//!    `Lichen.InNetwork=false`. A is killed (SIGKILL) and restarted with the
//!    push still pending. Then a small network comes up around A's seed;
//!    A pushes the blocks, and its persistent request turns
//!    `Lichen.InNetwork=true`. A late node with an empty store then fetches
//!    the CHK (with `IgnoreDS=true`) over the network: the bytes are equal.
//! 2. A lone node with a 4 MiB client cache keeps a 1 MiB insert (fully
//!    fetchable afterwards) and refuses a 3 MiB one with PutFailed code 14
//!    naming the cache size and the setting to raise; `IgnoreDS` without
//!    peers fails with "route not found".
#![allow(clippy::unwrap_used)]

use lichen_fcp::codec::Message;
use lichen_tests::network::{random_bytes, wait_connected, TEST_NETWORK};
use lichen_tests::{free_port, Fcp, NodeProc};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest wait for a node's first peer.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lichen-it"))
}

fn put(c: &mut Fcp, id: &str, body: &[u8], persistent: bool) -> Message {
    let extra: &[(&str, &str)] = if persistent {
        &[("Persistence", "forever"), ("Global", "true")]
    } else {
        &[]
    };
    c.put_direct("CHK@", id, body, extra).0
}

/// The terminal message A lists for the global request `id`.
fn listed_put(fcp: SocketAddr, id: &str) -> Option<Message> {
    let mut c = Fcp::connect(fcp, "push-list");
    c.send(&Message::new("WatchGlobal").field("Enabled", "true"));
    c.send(&Message::new("ListPersistentRequests"));
    let (_, listed) = c.until(&["EndListPersistentRequests"]);
    listed
        .into_iter()
        .find(|m| m.name == "PutSuccessful" && m.get("Identifier") == Some(id))
}

fn push_records(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("push"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "push"))
                .count()
        })
        .unwrap_or(0)
}

/// The seed's noderef file and a config listing it as the only seed.
fn seed_setup(dir: &Path, seed_dir: &Path, seed_peer: u16) -> PathBuf {
    let out = std::process::Command::new(bin())
        .arg("noderef")
        .arg("--data-dir")
        .arg(seed_dir)
        .args(["--listen", &format!("127.0.0.1:{seed_peer}")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let seed_file = dir.join("seed.noderef");
    std::fs::write(&seed_file, &out.stdout).unwrap();
    // Six nodes: a test network, whose inserts never get below the
    // caching level (see lichen_tests::network::TEST_NETWORK).
    std::fs::write(
        dir.join("seed.toml"),
        format!(
            "[network]\n{TEST_NETWORK}{}",
            lichen_tests::network::NO_TUNNELS
        ),
    )
    .unwrap();
    let config = dir.join("seeded.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\n{TEST_NETWORK}seeds = [{:?}]\n{}",
            seed_file.to_str().unwrap(),
            lichen_tests::network::NO_TUNNELS
        ),
    )
    .unwrap();
    config
}

fn get(fcp: SocketAddr, uri: &str, id: &str, ignore_ds: bool) -> Message {
    let mut c = Fcp::connect(fcp, "push-get");
    c.send(
        &Message::new("ClientGet")
            .field("URI", uri)
            .field("Identifier", id)
            .field("ReturnType", "direct")
            .field("IgnoreDS", if ignore_ds { "true" } else { "false" }),
    );
    c.until(&["AllData", "GetFailed"]).0
}

#[test]
fn an_insert_made_alone_is_pushed_once_peers_come_and_fetched_elsewhere() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed");
    let seed_peer = free_port();
    let config = seed_setup(dir.path(), &seed_dir, seed_peer);

    // A, alone: its seed is not up.
    let a_dir = dir.path().join("a");
    let (a_fcp, a_peer) = (free_port(), free_port());
    let mut a = NodeProc::start_with_config(bin(), &a_dir, a_fcp, a_peer, Some(&config));
    // LICHEN_PUSH_MIB=20 for a measurement with a larger document.
    let mib: usize = std::env::var("LICHEN_PUSH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let body = random_bytes(mib << 20, 0x5eed_0fa1);
    let mut c = Fcp::connect(a.fcp, "push-put");
    let done = put(&mut c, "pushed", &body, true);
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    assert_eq!(done.get("Lichen.InNetwork"), Some("false"), "{done:?}");
    let uri = done.get("URI").unwrap().to_string();
    drop(c);
    assert_eq!(push_records(&a_dir), 1, "the pending push is recorded");

    // Killed while the push is pending, restarted: still pending.
    a.kill9();
    let a = NodeProc::start_with_config(bin(), &a_dir, a_fcp, a_peer, Some(&config));
    assert_eq!(push_records(&a_dir), 1);
    let listed = listed_put(a.fcp, "pushed").expect("the put is listed after restart");
    assert_eq!(listed.get("Lichen.InNetwork"), Some("false"), "{listed:?}");

    // The network comes up around A's seed; A finds it (seeds are retried
    // every 5 s) and pushes.
    let seed_config = dir.path().join("seed.toml");
    let mut nodes = vec![NodeProc::start_with_config(
        bin(),
        &seed_dir,
        free_port(),
        seed_peer,
        Some(&seed_config),
    )];
    for i in 1..5 {
        nodes.push(NodeProc::start_with_config(
            bin(),
            &dir.path().join(format!("n{i}")),
            free_port(),
            free_port(),
            Some(&config),
        ));
    }
    let t_net = Instant::now();
    let deadline = Duration::from_secs(150);
    let pushed = loop {
        if let Some(m) = listed_put(a.fcp, "pushed") {
            if m.get("Lichen.InNetwork") == Some("true") {
                break m;
            }
        }
        assert!(
            t_net.elapsed() < deadline,
            "A did not report the insert in the network; log:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let push_s = t_net.elapsed().as_secs_f64();
    assert_eq!(pushed.get("URI"), Some(uri.as_str()));
    assert!(pushed.get("Lichen.PushFailed").is_none(), "{pushed:?}");
    assert_eq!(push_records(&a_dir), 0, "the record is removed when done");

    // A late node with an empty store fetches it over the network.
    let late = NodeProc::start_with_config(
        bin(),
        &dir.path().join("late"),
        free_port(),
        free_port(),
        Some(&config),
    );
    wait_connected(&late, 1, CONNECT_WAIT);
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    // Retries, as in testnet.rs: a fetch right after a node's first link
    // came up can end in RouteNotFound (and, on a machine loaded well past
    // its cores, once in about ten runs both of two tries failed).
    let mut got = None;
    let mut failures = Vec::new();
    for attempt in 0..3 {
        let m = get(late.fcp, &uri, &format!("get-{attempt}"), true);
        if m.name == "AllData" {
            got = Some(m);
            break;
        }
        eprintln!("fetch attempt {attempt} failed: {m:?}");
        failures.push(m);
        std::thread::sleep(Duration::from_secs(5));
    }
    let got = got.unwrap_or_else(|| {
        panic!(
            "the late node could not fetch the pushed insert: {failures:?}; its log:\n{}",
            late.log_text()
        )
    });
    assert!(got.data.as_deref() == Some(&body[..]), "the bytes differ");
    eprintln!(
        "{mib} MiB pushed {push_s:.1} s after the network started; fetched on the late node in {:.1} s; test {:.1} s",
        t.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    for l in a.log_text().lines().filter(|l| l.contains("push")) {
        eprintln!("A: {l}");
    }
    drop(late);
    for n in &mut nodes {
        n.terminate();
    }
}

#[test]
fn an_insert_too_big_for_the_client_cache_is_refused_without_peers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(&config, "[store]\nclient_cache_bytes = \"4MiB\"\n").unwrap();
    let node = NodeProc::start_with_config(
        bin(),
        &dir.path().join("node"),
        free_port(),
        free_port(),
        Some(&config),
    );
    let mut c = Fcp::connect(node.fcp, "push-small");

    // Kept: and then fully fetchable.
    let small = random_bytes(1 << 20, 7);
    let done = put(&mut c, "small", &small, false);
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    assert_eq!(done.get("Lichen.InNetwork"), Some("false"));
    let uri = done.get("URI").unwrap().to_string();

    // Too big for what is left of the cache: refused, clearly.
    let big = random_bytes(3 << 20, 8);
    let t = Instant::now();
    let failed = put(&mut c, "big", &big, false);
    assert_eq!(failed.name, "PutFailed", "{failed:?}");
    assert_eq!(failed.get("Code"), Some("14"), "{failed:?}");
    let extra = failed.get("ExtraDescription").unwrap_or("");
    assert!(
        extra.contains("client cache is 4 MiB") && extra.contains("client_cache_bytes"),
        "{failed:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refused before the work"
    );

    // The kept insert lost nothing.
    let got = get(node.fcp, &uri, "get-small", false);
    assert_eq!(got.name, "AllData", "{got:?}");
    assert!(got.data.as_deref() == Some(&small[..]));

    // IgnoreDS without peers: nothing can be asked, "route not found".
    let m = get(node.fcp, &uri, "get-ignore-ds", true);
    assert_eq!(m.name, "GetFailed", "{m:?}");
    assert_eq!(m.get("Code"), Some("14"), "{m:?}");
}
