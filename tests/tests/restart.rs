//! Persistence=forever requests survive a node that is killed (SIGKILL)
//! and restarted: they are listed again with their results.
#![allow(clippy::unwrap_used)]

use lichen_fcp::codec::Message;
use lichen_tests::{Fcp, NodeProc};

#[test]
fn forever_requests_are_listed_after_kill_and_restart() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_lichen-it"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut node = NodeProc::start(bin, &data);
    let port = node.fcp.port();

    let mut c = Fcp::connect(node.fcp, "restart-test");
    c.send(&Message::new("WatchGlobal").field("Enabled", "true"));
    let body = b"persistent data that must outlive a crash\n".repeat(2000);
    let (done, _) = c.put_direct(
        "CHK@",
        "put-forever",
        &body,
        &[("Persistence", "forever"), ("Global", "true")],
    );
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    let uri = done.get("URI").unwrap().to_string();

    c.send(
        &Message::new("ClientGet")
            .field("URI", &uri)
            .field("Identifier", "get-forever")
            .field("Persistence", "forever")
            .field("Global", "true")
            .field("ReturnType", "direct"),
    );
    let (found, _) = c.until(&["DataFound", "GetFailed"]);
    assert_eq!(found.name, "DataFound", "{found:?}");
    drop(c);

    node.kill9();
    let node = NodeProc::start_on(bin, &data, port);
    let mut c = Fcp::connect(node.fcp, "restart-test-2");
    c.send(&Message::new("WatchGlobal").field("Enabled", "true"));
    c.send(&Message::new("ListPersistentRequests"));
    let (_, listed) = c.until(&["EndListPersistentRequests"]);
    let names: Vec<(String, Option<String>)> = listed
        .iter()
        .map(|m| (m.name.clone(), m.get("Identifier").map(str::to_string)))
        .collect();
    let has = |name: &str, id: &str| {
        names
            .iter()
            .any(|(n, i)| n == name && i.as_deref() == Some(id))
    };
    assert!(has("PersistentPut", "put-forever"), "{names:?}");
    assert!(has("PutSuccessful", "put-forever"), "{names:?}");
    assert!(has("PersistentGet", "get-forever"), "{names:?}");
    assert!(has("DataFound", "get-forever"), "{names:?}");
    let put_done = listed.iter().find(|m| m.name == "PutSuccessful").unwrap();
    assert_eq!(put_done.get("URI"), Some(uri.as_str()));

    // The direct get's data is still there.
    c.send(
        &Message::new("GetRequestStatus")
            .field("Identifier", "get-forever")
            .field("Global", "true"),
    );
    let (all, _) = c.until(&["AllData"]);
    assert_eq!(all.data.as_deref(), Some(body.as_slice()));

    // Removing it removes it for good.
    c.send(
        &Message::new("RemovePersistentRequest")
            .field("Identifier", "get-forever")
            .field("Global", "true"),
    );
    let (removed, _) = c.until(&["PersistentRequestRemoved"]);
    assert_eq!(removed.get("Identifier"), Some("get-forever"));
}
