//! The gateway sends a download while the network fetch is still writing it.
//!
//! Three node processes form an opennet; a 6 MiB random document is
//! inserted through FCP on node 1. Node B joins afterwards with an empty
//! store and a download limit of 1 MiB/s, so its fetch takes several
//! seconds. B's gateway is asked for the document with `?forcedownload`.
//!
//! Asserted: the response's headers (200, the full `Content-Length`) come
//! while B's fetch is still writing the document (its sealed temporary
//! file is shorter than the document then), and the body is the document.
//! Before the gateway streamed, the headers came only once the file was
//! complete.

#![allow(clippy::unwrap_used)]

use lichen_tests::network::{put, wait_connected, PEER_TIMEOUT};
use lichen_tests::{random_bytes, Testnet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

const SIZE: usize = 6 << 20;
/// B's download limit (bytes per second).
const B_DOWNLOAD: u64 = 1 << 20;

/// Bytes in the files of `dir` (none: 0).
fn bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

#[test]
fn a_download_is_sent_while_it_is_fetched() {
    let bin = Path::new(env!("CARGO_BIN_EXE_lichen-it"));
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::start(bin, dir.path(), 2);
    net.wait_all_connected();
    let body = random_bytes(SIZE, 0x57_12ea);
    let uri = put(net.nodes[1].fcp, "CHK@", &body, &[]);
    let b = net.add(&format!("download_limit = {B_DOWNLOAD}"), &[]);
    wait_connected(&net.nodes[b], 1, PEER_TIMEOUT);

    let gw = net.nodes[b].gateway;
    let mut s = TcpStream::connect(gw).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /{uri}/?forcedownload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        gw.port()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let head_end = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the headers");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    // The headers are here: the fetch is still writing the document.
    let on_disk = bytes_in(&net.nodes[b].data_dir.join("tmp"));
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {SIZE}")), "{head}");
    assert!(
        on_disk < SIZE as u64,
        "headers only after the whole document was written ({on_disk} bytes)"
    );
    let mut rest = got.split_off(head_end);
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), SIZE);
    assert!(rest == body, "the document came back different");
}
