//! FCP SubscribeUSK: the subscription is acknowledged and reports the
//! newest edition it finds; a fetch of an older edition answers code 27
//! with the newer URI.
#![allow(clippy::unwrap_used)]

use lichen_fcp::codec::Message;
use lichen_tests::{Fcp, NodeProc};

fn put_usk(c: &mut Fcp, uri: &str, id: &str, body: &[u8]) -> String {
    let (m, _) = c.put_direct(uri, id, body, &[]);
    assert_eq!(m.name, "PutSuccessful", "{m:?}");
    m.get("URI").unwrap().to_string()
}

#[test]
fn subscribe_usk_reports_the_newest_edition() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_lichen-it"));
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(bin, &dir.path().join("n"));
    let mut c = Fcp::connect(node.fcp, "usk-test");
    c.send(&Message::new("GenerateSSK").field("Identifier", "k"));
    let (keys, _) = c.until(&["SSKKeypair"]);
    let insert = keys.get("InsertURI").unwrap().replacen("SSK@", "USK@", 1) + "blog/0";
    let request = keys.get("RequestURI").unwrap().replacen("SSK@", "USK@", 1) + "blog/0";

    let first = put_usk(&mut c, &insert, "p0", b"edition zero");
    assert!(first.ends_with("/blog/0"), "{first}");
    // Inserting the same USK again goes to the next edition.
    let second = put_usk(&mut c, &insert, "p1", b"edition one");
    assert!(second.ends_with("/blog/1"), "{second}");

    c.send(
        &Message::new("SubscribeUSK")
            .field("URI", &request)
            .field("Identifier", "sub"),
    );
    let (ack, _) = c.until(&["SubscribedUSK"]);
    assert_eq!(ack.get("Identifier"), Some("sub"));
    let (update, _) = c.until(&["SubscribedUSKUpdate"]);
    assert_eq!(update.get("Edition"), Some("1"), "{update:?}");
    assert!(update.get("URI").unwrap().ends_with("/blog/1"));

    // The old edition redirects to the new one.
    c.send(
        &Message::new("ClientGet")
            .field("URI", &request)
            .field("Identifier", "g0")
            .field("MaxRetries", "0"),
    );
    let (failed, _) = c.until(&["GetFailed", "DataFound"]);
    assert_eq!(failed.get("Code"), Some("27"), "{failed:?}");
    assert!(failed.get("RedirectURI").unwrap().ends_with("/blog/1"));
}
