//! Direct disk access without races (issue 17): a local FCP client swaps a
//! file or directory for a symbolic link between the node's check and its
//! use, and must gain nothing. Each swap is made at a point where the node
//! is known to wait: between `TestDDAReply` and `TestDDAResponse`, or at
//! the gate `lichen_node::test_hooks::hold` puts between a disk request's
//! check (its files opened) and the first read or write.
//!
//! A node runs in this process (`lichen_node::run`) with no peers: inserts
//! go to its client cache, fetches are answered from it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lichen_fcp::blocking::Connection;
use lichen_fcp::{Fields, Message};
use lichen_node::config::Config;
use lichen_node::test_hooks::{hold, Gate};
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// A node in this process, stopped by an FCP `Shutdown` when dropped.
struct TestNode {
    fcp: SocketAddr,
    _data: tempfile::TempDir,
}

impl TestNode {
    fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fcp = free.local_addr().unwrap();
        drop(free);
        let mut config = Config {
            data_dir: Some(data.path().to_path_buf()),
            ..Config::default()
        };
        config.fcp.listen = fcp;
        config.gateway.enabled = false;
        config.network.listen = "127.0.0.1:0".parse().unwrap();
        config.store.store_bytes = 64 << 20;
        config.store.cache_bytes = 64 << 20;
        config.store.client_cache_bytes = 64 << 20;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(lichen_node::run(config)).unwrap();
        });
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(fcp).is_err() {
            assert!(Instant::now() < deadline, "the node did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TestNode { fcp, _data: data }
    }

    fn client(&self, name: &str) -> Connection {
        let mut c = Connection::connect(self.fcp, WAIT).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.hello(name).unwrap();
        c
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Ok(mut c) = Connection::connect(self.fcp, WAIT) {
            if c.hello("stop").is_ok() {
                let _ = c.send(&Message::new("Shutdown"));
            }
        }
    }
}

fn until(c: &mut Connection, names: &[&str]) -> Message {
    c.until(names).unwrap().0
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An honest TestDDA of `dir`: reads the node's file, writes the token.
fn test_dda(c: &mut Connection, dir: &Path, read: bool, write: bool) {
    c.send(
        &Message::new("TestDDARequest")
            .field("Directory", s(dir))
            .field("WantReadDirectory", if read { "true" } else { "false" })
            .field("WantWriteDirectory", if write { "true" } else { "false" }),
    )
    .unwrap();
    let reply = until(c, &["TestDDAReply", "ProtocolError"]);
    assert_eq!(reply.name, "TestDDAReply", "{reply:?}");
    let mut resp = Message::new("TestDDAResponse").field("Directory", s(dir));
    if read {
        let content = std::fs::read_to_string(reply.get("ReadFilename").unwrap()).unwrap();
        resp = resp.field("ReadContent", content);
    }
    if write {
        std::fs::write(
            reply.get("WriteFilename").unwrap(),
            reply.get("ContentToWrite").unwrap(),
        )
        .unwrap();
    }
    c.send(&resp).unwrap();
    let done = until(c, &["TestDDAComplete"]);
    if read {
        assert_eq!(done.get("ReadDirectoryAllowed"), Some("true"), "{done:?}");
    }
    if write {
        assert_eq!(done.get("WriteDirectoryAllowed"), Some("true"), "{done:?}");
    }
}

fn put_from_disk(id: &str, file: &Path) -> Message {
    Message::new("ClientPut")
        .field("Identifier", id)
        .field("URI", "CHK@")
        .field("UploadFrom", "disk")
        .field("Filename", s(file))
}

/// Inserts `data` directly: its CHK.
fn insert(c: &mut Connection, id: &str, data: &[u8]) -> String {
    let mut f = Fields::new();
    f.push("Identifier", id);
    f.push("URI", "CHK@");
    f.push("UploadFrom", "direct");
    c.send(&Message::with_data("ClientPut", f, data.to_vec()))
        .unwrap();
    let m = until(c, &["PutSuccessful", "PutFailed", "ProtocolError"]);
    assert_eq!(m.name, "PutSuccessful", "{m:?}");
    m.get("URI").unwrap().to_string()
}

/// Fetches `uri` directly: its data.
fn fetch(c: &mut Connection, id: &str, uri: &str) -> Vec<u8> {
    c.send(
        &Message::new("ClientGet")
            .field("Identifier", id)
            .field("URI", uri)
            .field("ReturnType", "direct"),
    )
    .unwrap();
    loop {
        let m = c.next_message_with_data().unwrap();
        match m.name.as_str() {
            "AllData" => return m.data.unwrap_or_default(),
            "GetFailed" | "ProtocolError" => panic!("{m:?}"),
            _ => {}
        }
    }
}

fn get_to_disk(id: &str, uri: &str, file: &Path) -> Message {
    Message::new("ClientGet")
        .field("Identifier", id)
        .field("URI", uri)
        .field("ReturnType", "disk")
        .field("Filename", s(file))
}

/// Waits until a request reached `gate`.
fn reached(gate: &Gate) {
    let deadline = Instant::now() + WAIT;
    while gate.reached() == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached its gate"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// TestDDA: the directory is swapped for a link to another directory
/// between `TestDDAReply` and `TestDDAResponse`. The node tested (and
/// grants) the directory it opened at the request, never the other one.
#[test]
fn testdda_directory_swapped_before_the_response_grants_nothing_else() {
    let node = TestNode::start();
    let t = tempfile::tempdir().unwrap();
    let t = std::fs::canonicalize(t.path()).unwrap();
    let a = t.join("a");
    let victim = t.join("victim");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("secret.txt"), b"the victim's secret").unwrap();
    let mut c = node.client("dda-swap");
    c.send(
        &Message::new("TestDDARequest")
            .field("Directory", s(&a))
            .field("WantReadDirectory", "true"),
    )
    .unwrap();
    let reply = until(&mut c, &["TestDDAReply"]);
    let content = std::fs::read_to_string(reply.get("ReadFilename").unwrap()).unwrap();
    // The swap: `a` is now a link to the victim's directory.
    std::fs::rename(&a, t.join("a.orig")).unwrap();
    symlink(&victim, &a).unwrap();
    c.send(
        &Message::new("TestDDAResponse")
            .field("Directory", s(&a))
            .field("ReadContent", content),
    )
    .unwrap();
    let done = until(&mut c, &["TestDDAComplete"]);
    assert_eq!(done.get("ReadDirectoryAllowed"), Some("true"), "{done:?}");
    // The test files were removed from the directory that was tested.
    assert_eq!(std::fs::read_dir(t.join("a.orig")).unwrap().count(), 0);
    for (id, file) in [
        ("by-victim-path", victim.join("secret.txt")),
        ("through-the-link", a.join("secret.txt")),
    ] {
        c.send(&put_from_disk(id, &file)).unwrap();
        let m = until(&mut c, &["ProtocolError", "PutSuccessful", "PutFailed"]);
        assert_eq!(m.name, "ProtocolError", "{id}: {m:?}");
        assert_eq!(m.get("Code"), Some("25"), "{id}: {m:?}");
    }
}

/// Disk put: the file is swapped for a link to a file outside after the
/// request was accepted, before it is read. The node reads the file it
/// opened at the check: the inserted data is the original.
#[test]
fn disk_put_file_swapped_for_a_link_reads_the_original() {
    let node = TestNode::start();
    let t = tempfile::tempdir().unwrap();
    let t = std::fs::canonicalize(t.path()).unwrap();
    let d = t.join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("f.txt"), b"inside the approved directory").unwrap();
    std::fs::write(t.join("outside.txt"), b"OUTSIDE: must never be inserted").unwrap();
    let mut c = node.client("put-swap");
    test_dda(&mut c, &d, true, false);
    let gate = hold("put-swap-1");
    c.send(&put_from_disk("put-swap-1", &d.join("f.txt")))
        .unwrap();
    reached(&gate);
    std::fs::remove_file(d.join("f.txt")).unwrap();
    symlink(t.join("outside.txt"), d.join("f.txt")).unwrap();
    gate.open();
    let m = until(&mut c, &["PutSuccessful", "PutFailed", "ProtocolError"]);
    assert_eq!(m.name, "PutSuccessful", "{m:?}");
    let uri = m.get("URI").unwrap().to_string();
    assert_eq!(
        fetch(&mut c, "put-swap-get", &uri),
        b"inside the approved directory"
    );
    // A link named at the request is refused outright.
    c.send(&put_from_disk("put-link", &d.join("f.txt")))
        .unwrap();
    let m = until(&mut c, &["PutSuccessful", "PutFailed", "ProtocolError"]);
    assert_eq!(m.name, "ProtocolError", "{m:?}");
    assert_eq!(m.get("Code"), Some("25"), "{m:?}");
    assert!(
        m.get("ExtraDescription")
            .unwrap_or("")
            .contains("symbolic link"),
        "{m:?}"
    );
}

/// Standard base64 (FileHash).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Disk put with `FileHash` (no TestDDA): the hash is checked on the file
/// opened at the check, and that open file is what is inserted, even if
/// the name is swapped for a link to a file outside afterwards. A link
/// named at the request is refused.
#[test]
fn disk_put_with_file_hash_inserts_the_file_it_hashed() {
    use sha2::Digest;
    let node = TestNode::start();
    let t = tempfile::tempdir().unwrap();
    let t = std::fs::canonicalize(t.path()).unwrap();
    let content = b"content the client proved it can read";
    std::fs::write(t.join("f.txt"), content).unwrap();
    std::fs::write(t.join("outside.txt"), b"OUTSIDE: must never be inserted").unwrap();
    let mut c = Connection::connect(node.fcp, WAIT).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let hello = c.hello("file-hash").unwrap();
    let conn_id = hello.get("ConnectionIdentifier").unwrap().to_string();
    let hash = |id: &str| {
        let mut h = sha2::Sha256::new();
        h.update(format!("{conn_id}-{id}-").as_bytes());
        h.update(content);
        base64(&h.finalize())
    };
    let gate = hold("hash-1");
    c.send(&put_from_disk("hash-1", &t.join("f.txt")).field("FileHash", hash("hash-1")))
        .unwrap();
    reached(&gate);
    std::fs::remove_file(t.join("f.txt")).unwrap();
    symlink(t.join("outside.txt"), t.join("f.txt")).unwrap();
    gate.open();
    let m = until(&mut c, &["PutSuccessful", "PutFailed", "ProtocolError"]);
    assert_eq!(m.name, "PutSuccessful", "{m:?}");
    let uri = m.get("URI").unwrap().to_string();
    assert_eq!(fetch(&mut c, "hash-get", &uri), content);
    // Now a link to a file with the hashed content: refused.
    std::fs::write(t.join("outside.txt"), content).unwrap();
    c.send(&put_from_disk("hash-2", &t.join("f.txt")).field("FileHash", hash("hash-2")))
        .unwrap();
    let m = until(&mut c, &["PutSuccessful", "PutFailed", "ProtocolError"]);
    assert_eq!(m.name, "ProtocolError", "{m:?}");
    assert_eq!(m.get("Code"), Some("25"), "{m:?}");
}

/// Disk get: `<name>.part` made a link to a victim file before the get,
/// or after its check; the final name made a link to the victim after the
/// check. The victim is never written, and nothing is replaced.
#[test]
fn disk_get_part_and_final_name_links_never_write_the_victim() {
    let node = TestNode::start();
    let t = tempfile::tempdir().unwrap();
    let t = std::fs::canonicalize(t.path()).unwrap();
    let d = t.join("d");
    std::fs::create_dir(&d).unwrap();
    let victim = t.join("victim.txt");
    std::fs::write(&victim, b"the victim").unwrap();
    let data = b"data from the network".to_vec();
    let mut c = node.client("get-swap");
    test_dda(&mut c, &d, false, true);
    let uri = insert(&mut c, "get-swap-data", &data);
    let done = ["DataFound", "GetFailed", "ProtocolError"];

    // 1. `.part` is a link to the victim before the request.
    symlink(&victim, d.join("out1.part")).unwrap();
    c.send(&get_to_disk("get-1", &uri, &d.join("out1")))
        .unwrap();
    let m = until(&mut c, &done);
    assert_eq!(m.name, "DataFound", "{m:?}");
    assert_eq!(std::fs::read(d.join("out1")).unwrap(), data);
    assert!(!d.join("out1.part").exists());

    // 2. `.part` becomes a link to the victim after the check.
    let gate = hold("get-2");
    c.send(&get_to_disk("get-2", &uri, &d.join("out2")))
        .unwrap();
    reached(&gate);
    symlink(&victim, d.join("out2.part")).unwrap();
    gate.open();
    let m = until(&mut c, &done);
    assert_eq!(m.name, "DataFound", "{m:?}");
    assert_eq!(std::fs::read(d.join("out2")).unwrap(), data);

    // 3. The final name becomes a link to the victim after the check.
    let gate = hold("get-3");
    c.send(&get_to_disk("get-3", &uri, &d.join("out3")))
        .unwrap();
    reached(&gate);
    symlink(&victim, d.join("out3")).unwrap();
    gate.open();
    let m = until(&mut c, &done);
    assert_eq!(m.name, "GetFailed", "{m:?}");
    assert!(
        m.get("ExtraDescription").unwrap_or("").contains("exists"),
        "{m:?}"
    );
    assert!(d.join("out3").symlink_metadata().unwrap().is_symlink());
    assert!(!d.join("out3.part").exists());

    // 4. A link there at the request: refused at once.
    c.send(&get_to_disk("get-4", &uri, &d.join("out3")))
        .unwrap();
    let m = until(&mut c, &done);
    assert_eq!(m.name, "ProtocolError", "{m:?}");
    assert_eq!(m.get("Code"), Some("10"), "{m:?}");

    assert_eq!(std::fs::read(&victim).unwrap(), b"the victim");
}

/// ClientPutDiskDir: after the scan a file of the folder is replaced by a
/// link to a file outside (of the same length). The node opens each file
/// through the folder's handle, refuses the link, and inserts nothing.
#[test]
fn disk_dir_file_swapped_for_a_link_after_the_scan_is_not_inserted() {
    let node = TestNode::start();
    let t = tempfile::tempdir().unwrap();
    let t = std::fs::canonicalize(t.path()).unwrap();
    let site = t.join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), b"<p>index</p>").unwrap();
    std::fs::write(site.join("page.html"), b"<p>inside</p>").unwrap();
    std::fs::write(t.join("outside.html"), b"<p>SECRET</p>").unwrap();
    let mut c = node.client("dir-swap");
    test_dda(&mut c, &t, true, false);
    let gate = hold("dir-swap-1");
    c.send(
        &Message::new("ClientPutDiskDir")
            .field("Identifier", "dir-swap-1")
            .field("URI", "CHK@")
            .field("Filename", s(&site))
            .field("DefaultName", "index.html"),
    )
    .unwrap();
    reached(&gate);
    std::fs::remove_file(site.join("page.html")).unwrap();
    symlink(t.join("outside.html"), site.join("page.html")).unwrap();
    gate.open();
    let m = until(&mut c, &["PutSuccessful", "PutFailed", "ProtocolError"]);
    assert_eq!(m.name, "PutFailed", "{m:?}");
    assert!(
        m.get("ExtraDescription")
            .unwrap_or("")
            .contains("symbolic link"),
        "{m:?}"
    );
}

/// `AddPeer File=`: the noderef file is opened through the approved
/// directory's handle; a link there, to a file outside or even inside, is
/// refused before anything is read.
#[test]
fn addpeer_noderef_file_is_read_through_the_handle() {
    let node = TestNode::start();
    let t = tempfile::tempdir().unwrap();
    let t = std::fs::canonicalize(t.path()).unwrap();
    let d = t.join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("garbage.noderef"), b"not a noderef\n").unwrap();
    std::fs::write(t.join("outside.noderef"), b"not a noderef either\n").unwrap();
    symlink(t.join("outside.noderef"), d.join("link.noderef")).unwrap();
    symlink(d.join("garbage.noderef"), d.join("link-in.noderef")).unwrap();
    let mut c = node.client("addpeer");
    test_dda(&mut c, &d, true, false);
    for (file, code) in [
        ("garbage.noderef", "21"),
        ("link.noderef", "25"),
        ("link-in.noderef", "25"),
    ] {
        c.send(
            &Message::new("AddPeer")
                .field("Identifier", file)
                .field("File", s(&d.join(file))),
        )
        .unwrap();
        let m = until(&mut c, &["ProtocolError", "Peer"]);
        assert_eq!(m.get("Code"), Some(code), "{file}: {m:?}");
    }
}
