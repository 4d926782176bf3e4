//! A blocking FCP connection over [`std::net::TcpStream`]: the one FCP
//! client of the workspace, used by the `lichen` command line and by the
//! whole-system tests.
//!
//! [`Connection`] frames messages both ways with the crate's codec: it
//! sends a message (with or without payload, or a header whose payload is
//! then streamed from a reader with [`Connection::send_data`]) and reads
//! [`Event`]s, whole messages or messages with their streamed payload
//! gathered. It is symmetric, so a test can also play the node's side of a
//! connection with it. Timeouts are the socket's ([`Connection::set_read_timeout`]);
//! nothing here waits without one unless the caller removes it.
//!
//! ```no_run
//! use lichen_fcp::blocking::Connection;
//! use lichen_fcp::Message;
//! use std::time::Duration;
//!
//! let mut c = Connection::connect("127.0.0.1:9481", Duration::from_secs(10))?;
//! c.set_read_timeout(Some(Duration::from_secs(15)))?;
//! c.hello("demo")?;
//! c.send(&Message::new("GenerateSSK").field("Identifier", "k1"))?;
//! let (keys, _before) = c.until(&["SSKKeypair"])?;
//! println!("{}", keys.get("RequestURI").unwrap_or("?"));
//! # Ok::<(), lichen_fcp::blocking::Error>(())
//! ```

use crate::codec::{DecodeError, Decoder, Event, Limits, Message};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Size of the read and upload buffers.
pub const CHUNK: usize = 256 * 1024;

/// How long [`Connection::refusal_after_write_error`] waits for the
/// `ProtocolError` that explains a failed write.
const REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// Messages read while looking for that `ProtocolError`.
const REFUSAL_SCAN: usize = 64;

/// What went wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the socket failed (a read timeout included).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The other side closed the connection.
    #[error("the connection was closed")]
    Closed,
    /// The other side sent bytes that are not FCP.
    #[error("garbled reply from the node: {0}")]
    Decode(#[from] DecodeError),
    /// The node answered the hello with this `ProtocolError`.
    #[error("the node refused the hello")]
    Refused(Box<Message>),
    /// A message header arrived inside a streamed payload.
    #[error("garbled reply from the node: a message inside a payload")]
    MessageInPayload,
    /// The reader of [`Connection::send_data`] failed.
    #[error("cannot read the data to send: {0}")]
    SourceRead(#[source] io::Error),
    /// The reader of [`Connection::send_data`] ended early.
    #[error("the data to send ended {left} bytes early")]
    SourceEnded {
        /// Bytes announced but not sent.
        left: u64,
    },
}

/// One FCP connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    decoder: Decoder,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

impl Connection {
    /// Connects to the first address of `addr` that answers within
    /// `timeout` each, with the default [`Limits`] (payloads over 1 MiB
    /// are streamed).
    ///
    /// # Errors
    /// `addr` does not resolve, or no address accepts the connection (the
    /// last address's error).
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<Self> {
        let mut last_err = None;
        for target in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&target, timeout) {
                Ok(stream) => return Ok(Self::from_stream(stream)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing")
        }))
    }

    /// Wraps a connected stream (either side of a connection).
    #[must_use]
    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            decoder: Decoder::new(Limits::default()),
            rbuf: vec![0; CHUNK],
            wbuf: Vec::new(),
        }
    }

    /// The same connection decoding with `limits` (e.g. a big
    /// `inline_data_limit` to receive every payload inside its message).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.decoder = Decoder::new(limits);
        self
    }

    /// The socket.
    #[must_use]
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// How long one read may block (`None`: forever).
    ///
    /// # Errors
    /// The socket refuses the option.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Says `ClientHello` with `name` and waits for `NodeHello`, skipping
    /// anything else; returns the `NodeHello`.
    ///
    /// # Errors
    /// As [`Connection::send_hello`] and [`Connection::wait_node_hello`].
    pub fn hello(&mut self, name: &str) -> Result<Message, Error> {
        self.send_hello(name)?;
        self.wait_node_hello()
    }

    /// Sends `ClientHello` with `name`, expecting FCP 2.0.
    ///
    /// # Errors
    /// The write fails.
    pub fn send_hello(&mut self, name: &str) -> io::Result<()> {
        self.send(
            &Message::new("ClientHello")
                .field("Name", name)
                .field("ExpectedVersion", "2.0"),
        )
    }

    /// Reads until `NodeHello`, skipping anything else; returns it.
    ///
    /// # Errors
    /// [`Error::Refused`] when the node answers `ProtocolError`; otherwise
    /// as [`Connection::next_message`].
    pub fn wait_node_hello(&mut self) -> Result<Message, Error> {
        loop {
            let m = self.next_message()?;
            match m.name.as_str() {
                "NodeHello" => return Ok(m),
                "ProtocolError" => return Err(Error::Refused(Box::new(m))),
                _ => {}
            }
        }
    }

    /// Sends a message with its payload, if it has one.
    ///
    /// # Errors
    /// The write fails.
    pub fn send(&mut self, m: &Message) -> io::Result<()> {
        self.stream.write_all(&m.encode())
    }

    /// Sends `m`'s header announcing `len` payload bytes; send exactly
    /// that many next, with [`Connection::send_data`].
    ///
    /// # Errors
    /// The write fails.
    pub fn send_header(&mut self, m: &Message, len: u64) -> io::Result<()> {
        self.stream.write_all(&m.encode_header(Some(len)))
    }

    /// Sends bytes as they are (a test's malformed input, say).
    ///
    /// # Errors
    /// The write fails.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends exactly `len` bytes read from `src`, in chunks of at most
    /// [`CHUNK`] bytes, calling `sent` with the size of each.
    ///
    /// # Errors
    /// [`Error::SourceRead`] or [`Error::SourceEnded`] when `src` fails or
    /// is short; [`Error::Io`] when the socket write fails.
    pub fn send_data(
        &mut self,
        src: &mut dyn Read,
        len: u64,
        sent: &mut dyn FnMut(u64),
    ) -> Result<(), Error> {
        if self.wbuf.is_empty() {
            self.wbuf = vec![0; CHUNK];
        }
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = match src.read(&mut self.wbuf[..want]) {
                Ok(0) => return Err(Error::SourceEnded { left }),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::SourceRead(e)),
            };
            self.stream.write_all(&self.wbuf[..n])?;
            left -= n as u64;
            sent(n as u64);
        }
        Ok(())
    }

    /// The next decoded event, reading from the socket as needed.
    ///
    /// # Errors
    /// [`Error::Closed`] at end of stream, [`Error::Decode`] on bytes that
    /// are not FCP, [`Error::Io`] on a failed read or a timeout.
    pub fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(ev) = self.decoder.next_event()? {
                return Ok(ev);
            }
            let n = loop {
                match self.stream.read(&mut self.rbuf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            };
            if n == 0 {
                return Err(Error::Closed);
            }
            self.decoder.feed(&self.rbuf[..n]);
        }
    }

    /// The next message; a streamed payload is skipped (`data` is `None`).
    ///
    /// # Errors
    /// As [`Connection::next_event`].
    pub fn next_message(&mut self) -> Result<Message, Error> {
        loop {
            match self.next_event()? {
                Event::Message(m) => return Ok(m),
                Event::Header { message, .. } => {
                    self.skip_data()?;
                    return Ok(message);
                }
                Event::Data(_) | Event::DataEnd => {}
            }
        }
    }

    /// The next message with its payload, a streamed one gathered into
    /// `data` (so held in memory whole).
    ///
    /// # Errors
    /// As [`Connection::next_event`]; [`Error::MessageInPayload`].
    pub fn next_message_with_data(&mut self) -> Result<Message, Error> {
        loop {
            match self.next_event()? {
                Event::Message(m) => return Ok(m),
                Event::Header {
                    mut message,
                    data_length,
                } => {
                    let mut data =
                        Vec::with_capacity(usize::try_from(data_length).unwrap_or(0).min(CHUNK));
                    self.read_data(&mut |chunk| data.extend_from_slice(chunk))?;
                    message.data = Some(data);
                    return Ok(message);
                }
                Event::Data(_) | Event::DataEnd => {}
            }
        }
    }

    /// Reads the rest of a streamed payload, handing each chunk to `chunk`.
    ///
    /// # Errors
    /// As [`Connection::next_event`]; [`Error::MessageInPayload`].
    pub fn read_data(&mut self, chunk: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        loop {
            match self.next_event()? {
                Event::Data(c) => chunk(&c),
                Event::DataEnd => return Ok(()),
                Event::Message(_) | Event::Header { .. } => return Err(Error::MessageInPayload),
            }
        }
    }

    /// Skips the rest of a streamed payload.
    ///
    /// # Errors
    /// As [`Connection::read_data`].
    pub fn skip_data(&mut self) -> Result<(), Error> {
        self.read_data(&mut |_| {})
    }

    /// Reads messages until one named in `names` arrives; returns it and
    /// the messages before it.
    ///
    /// # Errors
    /// As [`Connection::next_message`].
    pub fn until(&mut self, names: &[&str]) -> Result<(Message, Vec<Message>), Error> {
        let mut seen = Vec::new();
        loop {
            let m = self.next_message()?;
            if names.contains(&m.name.as_str()) {
                return Ok((m, seen));
            }
            seen.push(m);
        }
    }

    /// After a failed write: the node probably closed the connection after
    /// a fatal `ProtocolError`. Returns that message if it can still be
    /// read within a short wait.
    pub fn refusal_after_write_error(&mut self) -> Option<Message> {
        let _ = self.stream.set_read_timeout(Some(REFUSAL_WAIT));
        for _ in 0..REFUSAL_SCAN {
            match self.next_message() {
                Ok(m) if m.name == "ProtocolError" => return Some(m),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    const WAIT: Duration = Duration::from_secs(10);

    /// A fake peer on 127.0.0.1 running `script` on the one connection it
    /// accepts; returns the address and the script's thread.
    fn fake<T: Send + 'static>(
        script: impl FnOnce(Connection) -> T + Send + 'static,
    ) -> (String, thread::JoinHandle<T>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let h = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            script(Connection::from_stream(s))
        });
        (addr, h)
    }

    fn client(addr: &str) -> Connection {
        let c = Connection::connect(addr, WAIT).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c
    }

    #[test]
    fn hello_skips_other_messages_until_node_hello() {
        let (addr, h) = fake(|mut s| {
            let m = s.next_message().unwrap();
            s.send(&Message::new("Noise")).unwrap();
            s.send(&Message::new("NodeHello").field("FCPVersion", "2.0"))
                .unwrap();
            m
        });
        let mut c = client(&addr);
        let hello = c.hello("me").unwrap();
        assert_eq!(hello.get("FCPVersion"), Some("2.0"));
        let m = h.join().unwrap();
        assert_eq!(m.name, "ClientHello");
        assert_eq!(m.get("Name"), Some("me"));
        assert_eq!(m.get("ExpectedVersion"), Some("2.0"));
    }

    #[test]
    fn hello_answered_by_protocol_error_is_refused() {
        let (addr, h) = fake(|mut s| {
            let _ = s.next_message().unwrap();
            s.send(&Message::new("ProtocolError").field("Code", "1"))
                .unwrap();
        });
        let mut c = client(&addr);
        match c.hello("me") {
            Err(Error::Refused(m)) => assert_eq!(m.get("Code"), Some("1")),
            other => panic!("{other:?}"),
        }
        h.join().unwrap();
    }

    #[test]
    fn streamed_upload_arrives_whole_and_progress_counts_it() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let (addr, h) = fake(move |mut s| {
            let m = s.next_message_with_data().unwrap();
            assert_eq!(m.name, "ClientPut");
            assert!(m.data.as_deref() == Some(&expect[..]));
            let small = s.next_message_with_data().unwrap();
            assert_eq!(small.data.as_deref(), Some(&b"tiny"[..]));
        });
        let mut c = client(&addr);
        let put = Message::new("ClientPut").field("URI", "CHK@");
        c.send_header(&put, data.len() as u64).unwrap();
        let mut sent = 0;
        c.send_data(&mut &data[..], data.len() as u64, &mut |n| sent += n)
            .unwrap();
        assert_eq!(sent, data.len() as u64);
        let mut f = crate::Fields::new();
        f.push("Identifier", "x");
        c.send(&Message::with_data("ClientPut", f, b"tiny".to_vec()))
            .unwrap();
        h.join().unwrap();
    }

    #[test]
    fn short_source_is_an_error() {
        let (addr, h) = fake(|mut s| {
            let _ = s.next_event();
        });
        let mut c = client(&addr);
        c.send_header(&Message::new("ClientPut"), 10).unwrap();
        match c.send_data(&mut &b"abc"[..], 10, &mut |_| {}) {
            Err(Error::SourceEnded { left: 7 }) => {}
            other => panic!("{other:?}"),
        }
        drop(c);
        h.join().unwrap();
    }

    #[test]
    fn big_payloads_stream_and_can_be_skipped() {
        let big = vec![7u8; 2 * 1024 * 1024];
        let (addr, h) = fake(move |mut s| {
            let mut f = crate::Fields::new();
            f.push("Identifier", "a");
            s.send(&Message::with_data("AllData", f.clone(), big.clone()))
                .unwrap();
            s.send(&Message::with_data("AllData", f, big)).unwrap();
            s.send(&Message::new("Done")).unwrap();
        });
        let mut c = client(&addr);
        match c.next_event().unwrap() {
            Event::Header { data_length, .. } => assert_eq!(data_length, 2 * 1024 * 1024),
            other => panic!("{other:?}"),
        }
        let mut got = 0;
        c.read_data(&mut |chunk| got += chunk.len()).unwrap();
        assert_eq!(got, 2 * 1024 * 1024);
        let (done, before) = c.until(&["Done"]).unwrap();
        assert_eq!(done.name, "Done");
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].name, "AllData");
        assert_eq!(before[0].data, None, "a streamed payload is skipped");
        assert!(matches!(c.next_message(), Err(Error::Closed)));
        h.join().unwrap();
    }

    #[test]
    fn inline_limit_keeps_payloads_in_their_message() {
        let (addr, h) = fake(|mut s| {
            s.send(&Message::with_data(
                "AllData",
                crate::Fields::new(),
                vec![1; 3 << 20],
            ))
            .unwrap();
        });
        let mut c = client(&addr).with_limits(Limits {
            inline_data_limit: 1 << 30,
            ..Limits::default()
        });
        match c.next_event().unwrap() {
            Event::Message(m) => assert_eq!(m.data.map(|d| d.len()), Some(3 << 20)),
            other => panic!("{other:?}"),
        }
        h.join().unwrap();
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let (addr, h) = fake(|mut s| {
            s.send_raw(b"Hello\nno end marker here\n").unwrap();
        });
        let mut c = client(&addr);
        assert!(matches!(c.next_message(), Err(Error::Decode(_))));
        h.join().unwrap();
    }

    #[test]
    fn refusal_is_read_after_a_failed_write() {
        let (addr, h) = fake(|mut s| {
            s.send(&Message::new("ProtocolError").field("Code", "9"))
                .unwrap();
        });
        let mut c = client(&addr);
        h.join().unwrap();
        let m = c.refusal_after_write_error().unwrap();
        assert_eq!(m.get("Code"), Some("9"));
        assert!(c.refusal_after_write_error().is_none());
    }

    #[test]
    fn unreachable_address_fails_to_connect() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(Connection::connect(("127.0.0.1", port), WAIT).is_err());
        let none: &[std::net::SocketAddr] = &[];
        let e = Connection::connect(none, WAIT).unwrap_err();
        assert_eq!(e.to_string(), "the address resolves to nothing");
    }
}
