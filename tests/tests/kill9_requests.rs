//! Kill -9 at the client protocol (issue 20): the node is killed at a
//! random moment while persistent puts, gets and site inserts arrive and
//! run, then started again — 50 rounds, bounded in time. After each
//! restart:
//! - every request the node acknowledged before the kill (any message
//!   naming it reached the client) is listed;
//! - nothing is half-listed: every listed request is one the client sent,
//!   described whole (its `Persistent*` message with its URI), and runs to
//!   success;
//! - once every request is removed, no upload, result or temporary file
//!   is left in the data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lichen_fcp::Message;
use lichen_tests::{free_port, random_bytes, Fcp, NodeProc};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lichen-it"))
}

const ROUNDS: u64 = 50;
/// The whole test gives up (fails) after this long.
const BUDGET: Duration = Duration::from_secs(300);

/// The requests of round `r`: a put, a get of `uri`, and every third
/// round a two-file site.
fn send_round(c: &mut Fcp, r: u64, uri: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let put = format!("r{r}-put");
    let data = random_bytes(64 * 1024 + (r as usize % 7) * 40_000, 1000 + r);
    let mut m = Message::new("ClientPut")
        .field("URI", "CHK@")
        .field("Identifier", &put)
        .field("UploadFrom", "direct")
        .field("Persistence", "forever")
        .field("Global", "true")
        .field("Verbosity", "1")
        .field("DataLength", data.len().to_string());
    m.data = Some(data);
    c.send(&m);
    ids.insert(put);
    let get = format!("r{r}-get");
    c.send(
        &Message::new("ClientGet")
            .field("URI", uri)
            .field("Identifier", &get)
            .field("Persistence", "forever")
            .field("Global", "true")
            .field("ReturnType", "direct")
            .field("Verbosity", "1"),
    );
    ids.insert(get);
    if r % 3 == 0 {
        let site = format!("r{r}-site");
        let index = format!("<html><body>round {r}</body></html>").into_bytes();
        let page = random_bytes(30_000, 2000 + r);
        let mut m = Message::new("ClientPutComplexDir")
            .field("URI", "CHK@")
            .field("Identifier", &site)
            .field("Persistence", "forever")
            .field("Global", "true")
            .field("DefaultName", "index.html")
            .field("Files.0.Name", "index.html")
            .field("Files.0.UploadFrom", "direct")
            .field("Files.0.DataLength", index.len().to_string())
            .field("Files.1.Name", "page.bin")
            .field("Files.1.UploadFrom", "direct")
            .field("Files.1.DataLength", page.len().to_string());
        let mut payload = index;
        payload.extend_from_slice(&page);
        m.data = Some(payload);
        c.send(&m);
        ids.insert(site);
    }
    ids
}

/// Whether `name` ends a request.
fn terminal(name: &str) -> bool {
    matches!(
        name,
        "PutSuccessful" | "PutFailed" | "DataFound" | "GetFailed" | "AllData"
    )
}

/// After a restart: list, check, wait for every request to succeed,
/// remove them all; returns what was listed.
fn settle(node: &NodeProc, sent: &BTreeSet<String>, acked: &BTreeSet<String>) -> usize {
    let mut c = Fcp::connect(node.fcp, "kill9");
    c.send(&Message::new("WatchGlobal").field("Enabled", "true"));
    c.send(&Message::new("ListPersistentRequests"));
    let (_, listed) = c.until(&["EndListPersistentRequests"]);
    let mut state: BTreeMap<String, Option<String>> = BTreeMap::new();
    for m in &listed {
        let Some(id) = m.get("Identifier") else {
            continue;
        };
        assert!(sent.contains(id), "listed {id}, which was never sent");
        if m.name.starts_with("Persistent") {
            assert!(m.get("URI").is_some(), "half-listed: {m:?}");
            state.entry(id.to_string()).or_insert(None);
        } else if terminal(&m.name) {
            assert!(
                state.contains_key(id),
                "{} for {id} before its Persistent* message",
                m.name
            );
            state.insert(id.to_string(), Some(m.name.clone()));
        }
    }
    for id in acked {
        assert!(
            state.contains_key(id),
            "{id} was acknowledged but is not listed"
        );
    }
    // Unfinished ones run again: wait for every one to end.
    let start = Instant::now();
    while state.values().any(Option::is_none) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not done: {state:?}"
        );
        let Some(m) = c.recv() else {
            panic!("connection closed; not done: {state:?}")
        };
        if let (Some(id), true) = (m.get("Identifier"), terminal(&m.name)) {
            if let Some(s) = state.get_mut(id) {
                *s = Some(m.name.clone());
            }
        }
    }
    for (id, end) in &state {
        let end = end.as_deref().unwrap_or("");
        assert!(
            matches!(end, "PutSuccessful" | "DataFound" | "AllData"),
            "{id} ended with {end}"
        );
        c.send(
            &Message::new("RemovePersistentRequest")
                .field("Identifier", id)
                .field("Global", "true"),
        );
        let (m, _) = c.until(&["PersistentRequestRemoved", "ProtocolError"]);
        assert_eq!(m.name, "PersistentRequestRemoved", "{m:?}");
    }
    state.len()
}

fn leftovers(data: &Path) -> Vec<String> {
    ["requests", "tmp", "push"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(data.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path().display().to_string())
        .filter(|p| !p.contains("/push/"))
        .collect()
}

#[test]
fn requests_acknowledged_before_a_kill_are_listed_and_complete_after_restart() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = free_port();
    let mut node = NodeProc::start_on(bin(), &data, port);
    // A document for the gets (in the client cache: no peers).
    let mut c = Fcp::connect(node.fcp, "kill9-setup");
    let (done, _) = c.put_direct("CHK@", "setup", &random_bytes(200_000, 7), &[]);
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    let uri = done.get("URI").unwrap().to_string();
    drop(c);

    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut acked_total, mut listed_total) = (0, 0);
    for r in 0..ROUNDS {
        assert!(t0.elapsed() < BUDGET, "out of time after {r} rounds");
        let mut c = Fcp::connect(node.fcp, "kill9");
        c.send(&Message::new("WatchGlobal").field("Enabled", "true"));
        let sent = send_round(&mut c, r, &uri);
        // Everything the node says until it dies.
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Some(m) = c.recv() {
                seen.push(m);
            }
            seen
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 400));
        node.kill9();
        let seen = reader.join().expect("the reader thread");
        let acked: BTreeSet<String> = seen
            .iter()
            .filter(|m| m.name != "ProtocolError")
            .filter_map(|m| m.get("Identifier"))
            .filter(|id| sent.contains(*id))
            .map(str::to_string)
            .collect();
        acked_total += acked.len();

        node = NodeProc::start_on(bin(), &data, port);
        listed_total += settle(&node, &sent, &acked);
        let left = leftovers(&data);
        assert!(left.is_empty(), "round {r}: left behind {left:?}");
    }
    eprintln!(
        "{ROUNDS} kills: {acked_total} requests acknowledged before a kill, {listed_total} listed after restart (all completed), {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(acked_total > 0, "no kill came after an acknowledgement");
}
