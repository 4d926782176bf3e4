//! The connection to the node's FCP port ([`lichen_fcp::blocking`]), with
//! the command line's error messages.

use super::progress::Progress;
use super::reply::protocol_error;
use anyhow::{anyhow, Context, Result};
use lichen_fcp::blocking::{Connection, Error as FcpError};
use lichen_fcp::{Event, Message};
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

/// Where the node's FCP port is.
#[derive(clap::Args, Debug, Clone)]
pub struct FcpOpts {
    /// FCP address of the node
    #[arg(
        long,
        env = "LICHEN_FCP",
        default_value = "127.0.0.1:9481",
        global = true
    )]
    pub fcp: String,
}

/// How long to wait for `NodeHello` before deciding the peer is no node.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a connection attempt to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the node that has said `NodeHello`.
pub(super) struct Node {
    conn: Connection,
    addr: String,
}

impl Node {
    /// Connects and exchanges ClientHello/NodeHello.
    pub(super) fn connect(addr: &str) -> Result<Self> {
        let conn = Connection::connect(addr, CONNECT_TIMEOUT).map_err(|e| {
            anyhow!("cannot reach the Lichen node at {addr} — is `lichen node` running? ({e})")
        })?;
        let mut node = Node {
            conn,
            addr: addr.to_string(),
        };
        node.conn
            .set_read_timeout(Some(HELLO_TIMEOUT))
            .context("cannot set a socket timeout")?;
        let name = format!("lichen-cli-{}", std::process::id());
        if let Err(e) = node.conn.send_hello(&name) {
            return Err(node.write_failed(e));
        }
        match node.conn.wait_node_hello() {
            Ok(_) => {}
            Err(FcpError::Refused(m)) => return Err(protocol_error(&m)),
            Err(e) => {
                return Err(node.read_failed(e).context(format!(
                    "no NodeHello from {addr} — is that the FCP port of a Lichen node?"
                )))
            }
        }
        node.conn
            .set_read_timeout(None)
            .context("cannot set a socket timeout")?;
        Ok(node)
    }

    fn lost(&self) -> String {
        format!("lost the connection to the node at {}", self.addr)
    }

    /// Sends a message without payload.
    pub(super) fn send(&mut self, m: &Message) -> Result<()> {
        self.conn.send(m).map_err(|e| self.write_failed(e))
    }

    /// Sends a header announcing `len` payload bytes; the caller then sends
    /// exactly that many with [`Node::send_file`].
    pub(super) fn send_header(&mut self, m: &Message, len: u64) -> Result<()> {
        self.conn
            .send_header(m, len)
            .map_err(|e| self.write_failed(e))
    }

    /// Sends exactly `len` bytes of `src` (a file being uploaded).
    pub(super) fn send_file(
        &mut self,
        src: &mut dyn Read,
        len: u64,
        what: &Path,
        bar: &Progress,
    ) -> Result<()> {
        match self.conn.send_data(src, len, &mut |n| bar.inc(n)) {
            Ok(()) => Ok(()),
            Err(FcpError::SourceEnded { .. }) => Err(anyhow!(
                "{} became shorter while it was being sent",
                what.display()
            )),
            Err(FcpError::SourceRead(e)) => {
                Err(e).with_context(|| format!("cannot read {}", what.display()))
            }
            Err(FcpError::Io(e)) => Err(self.write_failed(e)),
            Err(e) => Err(self.read_failed(e)),
        }
    }

    /// A write failed: the node probably closed the connection after a
    /// fatal ProtocolError. Report that error if it can still be read.
    fn write_failed(&mut self, e: io::Error) -> anyhow::Error {
        match self.conn.refusal_after_write_error() {
            Some(m) => protocol_error(&m),
            None => anyhow::Error::new(e).context(self.lost()),
        }
    }

    /// The command line's words for a failed read.
    fn read_failed(&self, e: FcpError) -> anyhow::Error {
        match e {
            FcpError::Io(e) => anyhow::Error::new(e).context(self.lost()),
            FcpError::Closed => anyhow!("the node at {} closed the connection", self.addr),
            FcpError::Refused(m) => protocol_error(&m),
            other => anyhow!("{other}"),
        }
    }

    /// The next decoded event, reading from the socket as needed.
    pub(super) fn next_event(&mut self) -> Result<Event> {
        self.conn.next_event().map_err(|e| self.read_failed(e))
    }

    /// The next message; a streamed payload is skipped (`data` is `None`).
    pub(super) fn next_message(&mut self) -> Result<Message> {
        self.conn.next_message().map_err(|e| self.read_failed(e))
    }

    /// Skips the rest of a streamed payload.
    pub(super) fn skip_payload(&mut self) -> Result<()> {
        self.conn.skip_data().map_err(|e| self.read_failed(e))
    }
}
