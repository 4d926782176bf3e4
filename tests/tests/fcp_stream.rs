//! Direct gets and puts that stream: a connection `ClientPut` is inserted
//! while its upload arrives, and a direct `ClientGet` of a document the node
//! holds gets `DataFound` then `AllData` while it is decoded. Checked: the
//! bytes, the order of messages, that no `SimpleProgress` follows the
//! `DataFound`, and that a persistent get (spooled, not streamed) agrees.
//! A `ReturnType=chunked` get gets its data in `DataChunk`s, then
//! `DataFound`, with no temporary file on the node.
#![allow(clippy::unwrap_used)]

use lichen_fcp::codec::Message;
use lichen_tests::network::{get_chunked, random_bytes};
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

#[test]
fn chunked_get_sends_pieces_in_order_then_data_found() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(bin(), &dir.path().join("n"));
    let data = random_bytes(5 << 20, 78);
    let mut c = Fcp::connect(node.fcp, "chunked");
    let (done, _) = c.put_direct(
        "CHK@",
        "p",
        &data,
        &[("Metadata.ContentType", "text/x-test")],
    );
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    let uri = done.get("URI").unwrap().to_string();

    c.send(
        &Message::new("ClientGet")
            .field("URI", &uri)
            .field("Identifier", "c")
            .field("ReturnType", "chunked")
            .field("Verbosity", "1"),
    );
    let (found, before) = c.until(&["DataFound", "GetFailed"]);
    assert_eq!(found.name, "DataFound", "{found:?}");
    let pieces: Vec<&Message> = before.iter().filter(|m| m.name == "DataChunk").collect();
    assert!(pieces.len() >= 5, "{} pieces for 5 MiB", pieces.len());
    let first = pieces[0];
    assert_eq!(first.get("TotalLength"), Some("5242880"));
    assert_eq!(first.get("Metadata.ContentType"), Some("text/x-test"));
    let mut got = Vec::new();
    for p in &pieces {
        assert_eq!(p.get("Identifier"), Some("c"));
        assert_eq!(p.get("Offset"), Some(got.len().to_string().as_str()));
        let d = p.data.as_deref().unwrap();
        assert!(
            !d.is_empty() && d.len() <= 1 << 20,
            "a piece of {} bytes",
            d.len()
        );
        got.extend_from_slice(d);
    }
    assert!(got == data, "the pieces are not the document");
    assert_eq!(found.get("DataLength"), Some("5242880"));
    assert!(
        before.iter().all(|m| m.name != "AllData"),
        "AllData for a chunked get"
    );
    // Nothing was spooled for it.
    let tmp = dir.path().join("n").join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "files left in {}: {left:?}", tmp.display());

    // A missing document: GetFailed and no piece; the connection goes on.
    let missing = get_chunked(node.fcp, "KSK@chunked-nobody-inserted-this", &[]).unwrap_err();
    assert_eq!(missing.name, "GetFailed", "{missing:?}");
    // Persistent requests cannot be chunked.
    c.send(
        &Message::new("ClientGet")
            .field("URI", &uri)
            .field("Identifier", "c2")
            .field("ReturnType", "chunked")
            .field("Persistence", "reboot"),
    );
    let (e, _) = c.until(&["ProtocolError", "DataChunk", "DataFound"]);
    assert_eq!(e.name, "ProtocolError", "{e:?}");
    assert_eq!(e.get("Identifier"), Some("c2"));
    assert_eq!(get_chunked(node.fcp, &uri, &[]).unwrap(), data);

    // A client that goes away in the middle: the node goes on serving.
    for i in 0..3 {
        let mut gone = Fcp::connect(node.fcp, "leaves");
        gone.send(
            &Message::new("ClientGet")
                .field("URI", &uri)
                .field("Identifier", format!("gone-{i}"))
                .field("ReturnType", "chunked"),
        );
        let (first, _) = gone.until(&["DataChunk", "GetFailed"]);
        assert_eq!(first.name, "DataChunk", "{first:?}");
    }
    assert_eq!(get_chunked(node.fcp, &uri, &[]).unwrap(), data);

    // A compressed document comes out decompressed, its length as announced.
    let text = b"lichen grows slowly on stone. ".repeat(100_000);
    let (done, _) = c.put_direct("CHK@", "text", &text, &[]);
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    let text_uri = done.get("URI").unwrap().to_string();
    assert!(get_chunked(node.fcp, &text_uri, &[]).unwrap() == text);

    // An empty document: no piece, DataFound with DataLength=0.
    let (done, _) = c.put_direct("CHK@", "empty", b"", &[]);
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    let empty = done.get("URI").unwrap().to_string();
    assert_eq!(get_chunked(node.fcp, &empty, &[]).unwrap(), b"");
}
