//! Direct gets and puts that stream: a connection `ClientPut` is inserted
//! while its upload arrives, and a direct `ClientGet` of a document the node
//! holds gets `DataFound` then `AllData` while it is decoded. Checked: the
//! bytes, the order of messages, that no `SimpleProgress` follows the
//! `DataFound`, and that a persistent get (spooled, not streamed) agrees.
#![allow(clippy::unwrap_used)]

use lichen_fcp::codec::Message;
use lichen_tests::network::random_bytes;
use lichen_tests::{Fcp, NodeProc};
use std::path::Path;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lichen-it"))
}

#[test]
fn streamed_put_and_get_keep_freenets_message_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(bin(), &dir.path().join("n"));
    let data = random_bytes(5 << 20, 77);

    let mut c = Fcp::connect(node.fcp, "stream");
    let (done, _) = c.put_direct("CHK@", "p", &data, &[("Verbosity", "1")]);
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    let uri = done.get("URI").unwrap().to_string();

    c.send(
        &Message::new("ClientGet")
            .field("URI", &uri)
            .field("Identifier", "g")
            .field("ReturnType", "direct")
            .field("Verbosity", "1"),
    );
    let (all, before) = c.until(&["AllData", "GetFailed"]);
    assert_eq!(all.name, "AllData", "{all:?}");
    assert_eq!(all.data.as_deref(), Some(&data[..]));
    assert_eq!(all.get("DataLength"), Some(data.len().to_string().as_str()));
    let names: Vec<&str> = before
        .iter()
        .filter(|m| m.get("Identifier") == Some("g"))
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names.last(), Some(&"DataFound"), "{names:?}");
    let found = before.iter().find(|m| m.name == "DataFound").unwrap();
    assert_eq!(
        found.get("DataLength"),
        Some(data.len().to_string().as_str())
    );

    // Nothing more for "g" (a SimpleProgress after AllData would be a
    // message for a finished request).
    c.send(&Message::new("GenerateSSK").field("Identifier", "marker"));
    let (_, after) = c.until(&["SSKKeypair"]);
    assert!(
        after.iter().all(|m| m.get("Identifier") != Some("g")),
        "{after:?}"
    );

    // A persistent get is spooled and sent whole: the same bytes.
    c.send(
        &Message::new("ClientGet")
            .field("URI", &uri)
            .field("Identifier", "g2")
            .field("ReturnType", "direct")
            .field("Persistence", "reboot"),
    );
    let (all2, _) = c.until(&["AllData", "GetFailed"]);
    assert_eq!(all2.name, "AllData", "{all2:?}");
    assert_eq!(all2.data.as_deref(), Some(&data[..]));
}
