//! A fake node for the command tests: one FCP connection on 127.0.0.1,
//! played with [`lichen_fcp::blocking::Connection`] from the node's side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::conn::FcpOpts;
use super::term::{quiet_pipe, Term};
use anyhow::Result;
use lichen_fcp::blocking::Connection;
use lichen_fcp::Message;
use std::io;
use std::net::TcpListener;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The node side of one fake FCP connection.
pub(super) struct FakeConn {
    conn: Connection,
}

impl FakeConn {
    /// The next message, a streamed payload gathered into `data`.
    pub(super) fn recv(&mut self) -> Message {
        self.conn
            .next_message_with_data()
            .expect("a message from the client")
    }

    pub(super) fn expect(&mut self, name: &str) -> Message {
        let m = self.recv();
        assert_eq!(m.name, name, "{m:?}");
        m
    }

    pub(super) fn send(&mut self, m: &Message) {
        self.try_send(m).expect("write to client");
    }

    /// Sends `m`; the client may have stopped reading.
    pub(super) fn try_send(&mut self, m: &Message) -> io::Result<()> {
        self.conn.send(m)
    }

    /// Waits until the client hangs up.
    pub(super) fn wait_close(&mut self) {
        while self.conn.next_event().is_ok() {}
    }
}

pub(super) const WAIT: Duration = Duration::from_secs(10);

pub(super) fn msg(name: &str, fields: &[(&str, &str)]) -> Message {
    let mut m = Message::new(name);
    for (k, v) in fields {
        m = m.field(*k, *v);
    }
    m
}

/// A fake node on 127.0.0.1:0 serving one connection: it checks the
/// ClientHello, answers NodeHello, then runs `script`.
pub(super) fn fake_node<T: Send + 'static>(
    script: impl FnOnce(&mut FakeConn) -> T + Send + 'static,
) -> (FcpOpts, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + WAIT;
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no client connected");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let mut c = FakeConn {
            conn: Connection::from_stream(stream),
        };
        let hello = c.expect("ClientHello");
        assert!(hello
            .get("Name")
            .unwrap()
            .starts_with(&format!("lichen-cli-{}", std::process::id())));
        assert_eq!(hello.get("ExpectedVersion"), Some("2.0"));
        c.send(&msg(
            "NodeHello",
            &[
                ("FCPVersion", "2.0"),
                ("Node", "Fred"),
                ("ConnectionIdentifier", "c0ffee"),
            ],
        ));
        script(&mut c)
    });
    (FcpOpts { fcp: addr }, handle)
}

pub(super) struct Captured {
    pub(super) result: Result<()>,
    pub(super) out: Vec<u8>,
    pub(super) err: String,
}

pub(super) fn run(out_tty: bool, f: impl FnOnce(&mut Term<'_>) -> Result<()>) -> Captured {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut t = Term {
        out: &mut out,
        err: &mut err,
        out_tty,
        progress: false,
    };
    let result = quiet_pipe(f(&mut t));
    Captured {
        result,
        out,
        err: String::from_utf8(err).unwrap(),
    }
}

pub(super) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `data` as the `DataChunk`s of `piece` bytes a chunked get gets.
pub(super) fn chunks(id: &str, data: &[u8], piece: usize) -> Vec<Message> {
    let mut out = Vec::new();
    for (i, p) in data.chunks(piece).enumerate() {
        let mut f = lichen_fcp::Fields::new();
        f.push("Identifier", id);
        f.push("Offset", (i * piece).to_string());
        if i == 0 {
            f.push("TotalLength", data.len().to_string());
            f.push("Metadata.ContentType", "application/octet-stream");
        }
        out.push(Message::with_data("DataChunk", f, p.to_vec()));
    }
    out
}

pub(super) fn data_found(id: &str, len: usize) -> Message {
    msg(
        "DataFound",
        &[
            ("Identifier", id),
            ("DataLength", &len.to_string()),
            ("Metadata.ContentType", "text/plain"),
        ],
    )
}
