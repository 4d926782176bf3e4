//! Hostile FCP clients: each gets the right ProtocolError (or its own
//! connection closed), and the node keeps serving everyone else with
//! bounded memory.
#![allow(clippy::unwrap_used)]

use lichen_fcp::codec::Message;
use lichen_tests::{Fcp, NodeProc};
use std::io::Read;
use std::time::Duration;

fn bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_lichen-it"))
}

fn code(m: &Message) -> Option<u32> {
    m.get("Code").and_then(|c| c.parse().ok())
}

/// The node still answers a well-behaved client.
fn still_serving(node: &NodeProc) {
    let mut c = Fcp::connect(node.fcp, "healthy");
    c.send(&Message::new("GenerateSSK").field("Identifier", "k"));
    let (m, _) = c.until(&["SSKKeypair"]);
    assert!(m.get("InsertURI").unwrap().starts_with("SSK@"));
}

#[test]
#[allow(clippy::too_many_lines)] // One scenario, step by step.
fn hostile_clients_get_errors_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(bin(), &dir.path().join("n"));

    // 1. Anything but ClientHello first: ProtocolError 1, connection closed.
    let mut c = Fcp::connect_raw(node.fcp).unwrap();
    c.send(
        &Message::new("ClientGet")
            .field("URI", "KSK@x")
            .field("Identifier", "a"),
    );
    let m = c.recv().unwrap();
    assert_eq!(
        (m.name.as_str(), code(&m)),
        ("ProtocolError", Some(1)),
        "{m:?}"
    );
    assert!(
        c.recv().is_none(),
        "connection must close after ProtocolError 1"
    );

    // 2. A second ClientHello: ProtocolError 2, connection stays.
    let mut c = Fcp::connect(node.fcp, "twice");
    c.send(
        &Message::new("ClientHello")
            .field("Name", "again")
            .field("ExpectedVersion", "2.0"),
    );
    let m = c.recv().unwrap();
    assert_eq!((m.name.as_str(), code(&m)), ("ProtocolError", Some(2)));
    // 3. Unknown message: ProtocolError 7 (connection stays).
    c.send(&Message::new("MakeCoffee").field("Identifier", "x"));
    let m = c.recv().unwrap();
    assert_eq!(
        (m.name.as_str(), code(&m)),
        ("ProtocolError", Some(7)),
        "{m:?}"
    );
    // 4. Missing field: ProtocolError 5 (a ClientGet without Identifier).
    c.send(&Message::new("ClientGet").field("URI", "KSK@no-identifier"));
    let m = c.recv().unwrap();
    assert_eq!(
        (m.name.as_str(), code(&m)),
        ("ProtocolError", Some(5)),
        "{m:?}"
    );
    // 5. Invalid URI: ProtocolError 4.
    c.send(
        &Message::new("ClientGet")
            .field("URI", "CHK@nonsense")
            .field("Identifier", "bad-uri"),
    );
    let m = c.recv().unwrap();
    assert_eq!(
        (m.name.as_str(), code(&m)),
        ("ProtocolError", Some(4)),
        "{m:?}"
    );
    // 6. Identifier collision on the same connection.
    // (Persistent, so it is still registered however fast it fails.)
    for _ in 0..2 {
        c.send(
            &Message::new("ClientGet")
                .field("URI", "KSK@collide-test")
                .field("Identifier", "dup")
                .field("Persistence", "reboot")
                .field("MaxRetries", "0"),
        );
    }
    let (m, _) = c.until(&["IdentifierCollision"]);
    assert_eq!(m.get("Identifier"), Some("dup"));
    // 7. Disk upload without TestDDA: ProtocolError 25.
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "not yours").unwrap();
    c.send(
        &Message::new("ClientPut")
            .field("URI", "CHK@")
            .field("Identifier", "disk")
            .field("UploadFrom", "disk")
            .field("Filename", secret.to_str().unwrap()),
    );
    let (m, _) = c.until(&["ProtocolError"]);
    assert_eq!(code(&m), Some(25), "{m:?}");
    // 8. ... or with a wrong FileHash.
    c.send(
        &Message::new("ClientPut")
            .field("URI", "CHK@")
            .field("Identifier", "disk2")
            .field("UploadFrom", "disk")
            .field("FileHash", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .field("Filename", secret.to_str().unwrap()),
    );
    let (m, _) = c.until(&["ProtocolError"]);
    assert_eq!(code(&m), Some(25), "{m:?}");
    // 9. A download to a directory nobody approved: ProtocolError 25.
    c.send(
        &Message::new("ClientGet")
            .field("URI", "KSK@whatever")
            .field("Identifier", "disk3")
            .field("ReturnType", "disk")
            .field("Filename", "/etc/lichen-should-not-write-here"),
    );
    let (m, _) = c.until(&["ProtocolError"]);
    assert_eq!(code(&m), Some(25), "{m:?}");

    // 10. Non-numeric DataLength: ProtocolError 6 and the connection closes.
    let mut c = Fcp::connect(node.fcp, "badlen");
    c.send_raw(b"ClientPut\nURI=CHK@\nIdentifier=x\nUploadFrom=direct\nDataLength=lots\nData\nxx")
        .unwrap();
    let m = c.recv().unwrap();
    assert_eq!(
        (m.name.as_str(), code(&m)),
        ("ProtocolError", Some(6)),
        "{m:?}"
    );
    assert!(c.recv().is_none());

    // 11. An enormous DataLength is refused before any byte is read.
    let mut c = Fcp::connect(node.fcp, "hugelen");
    c.send_raw(b"ClientPut\nURI=CHK@\nIdentifier=x\nUploadFrom=direct\nDataLength=999999999999999999999\nData\n").unwrap();
    let m = c.recv().unwrap();
    assert_eq!(m.name, "ProtocolError", "{m:?}");

    // 12. A client that stops mid-message and one that promises a large
    // upload and sends little: others are not blocked.
    let mut stalled = Fcp::connect(node.fcp, "stalled");
    stalled.send_raw(b"ClientPut\nURI=CHK@\nIdentifier=s\nUploadFrom=direct\nDataLength=100000000\nData\nonly a little").unwrap();
    let mut half = Fcp::connect_raw(node.fcp).unwrap();
    half.send_raw(b"ClientHello\nName=half\nExpectedVer")
        .unwrap();
    still_serving(&node);
    // A direct upload is inserted while it arrives: a client that goes
    // away half-way ends that insert, and the node goes on.
    let mut gone = Fcp::connect(node.fcp, "gone");
    gone.send_raw(
        b"ClientPut\nURI=CHK@\nIdentifier=g\nUploadFrom=direct\nDataLength=50000000\nData\n",
    )
    .unwrap();
    gone.send_raw(&vec![7u8; 3 << 20]).unwrap();
    drop(gone);
    still_serving(&node);

    // 13. A client that never reads its replies is cut off, alone.
    let mut deaf = Fcp::connect(node.fcp, "deaf");
    let req = Message::new("GenerateSSK").encode();
    let mut burst = Vec::new();
    for _ in 0..2000 {
        burst.extend_from_slice(&req);
    }
    for _ in 0..20 {
        if deaf.send_raw(&burst).is_err() {
            break;
        }
    }
    still_serving(&node);

    // 14. Binary garbage.
    let mut g = Fcp::connect_raw(node.fcp).unwrap();
    let junk: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = g.send_raw(&junk);
    still_serving(&node);

    drop((stalled, half, deaf, g));
    let rss = node.rss_kib().unwrap();
    assert!(rss < 300 * 1024, "node RSS {rss} KiB after hostile clients");
}

#[test]
fn two_hundred_simultaneous_connections() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(bin(), &dir.path().join("n"));
    let mut conns: Vec<Fcp> = (0..200)
        .map(|i| Fcp::connect(node.fcp, &format!("c{i}")))
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&Message::new("GenerateSSK").field("Identifier", format!("k{i}")));
    }
    for c in &mut conns {
        let (m, _) = c.until(&["SSKKeypair"]);
        assert!(m.get("RequestURI").unwrap().starts_with("SSK@"));
    }
    still_serving(&node);
    let rss = node.rss_kib().unwrap();
    assert!(rss < 300 * 1024, "node RSS {rss} KiB with 200 connections");
    drop(conns);
    // Connections beyond the limit (256 by default) are refused politely,
    // and the node recovers once they close.
    let mut extra: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = std::net::TcpStream::connect(node.fcp) {
            extra.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut last = extra.pop().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 64];
    let n = last.read(&mut b).unwrap_or(0);
    assert!(n == 0 || b.starts_with(b"ProtocolError"), "{:?}", &b[..n]);
    drop(extra);
    drop(last);
    std::thread::sleep(Duration::from_millis(300));
    still_serving(&node);
}
