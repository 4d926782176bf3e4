#![doc = include_str!("../README.md")]

//! Helpers for Lichen's whole-system tests: start real `lichen` node
//! processes on free loopback ports, talk FCP to them, stop them.
//!
//! Every wait is bounded; a node that does not come up within
//! [`START_TIMEOUT`] fails the test instead of hanging it.

pub mod fake_peer;
pub mod netns;
pub mod network;
pub mod relay;

pub use network::{random_bytes, Testnet};

use lichen_fcp::blocking::{self, Connection};
use lichen_fcp::codec::Message;
use lichen_fcp::{Event, Limits};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to open its FCP port.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one FCP reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A free loopback TCP port (bound then released), never one this
/// process has handed out before: tests run in parallel threads, and the
/// kernel may give a released port to the next caller before the node
/// that was meant to bind it has done so.
///
/// # Panics
/// If no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        #[allow(clippy::unwrap_used)]
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A `lichen node` process.
#[derive(Debug)]
pub struct NodeProc {
    child: Option<Child>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// FCP address.
    pub fcp: SocketAddr,
    /// HTTP gateway address.
    pub gateway: SocketAddr,
    /// Path of the log file.
    pub log: PathBuf,
}

impl NodeProc {
    /// Start a node with `data_dir` on a free FCP port and wait until FCP
    /// answers.
    ///
    /// # Panics
    /// If the node does not start in time.
    #[must_use]
    pub fn start(bin: &Path, data_dir: &Path) -> Self {
        Self::start_on(bin, data_dir, free_port())
    }

    /// As [`NodeProc::start`] with a chosen FCP port.
    ///
    /// # Panics
    /// If the node does not start in time.
    #[must_use]
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    pub fn start_on(bin: &Path, data_dir: &Path, port: u16) -> Self {
        Self::start_with_config(bin, data_dir, port, free_port(), None)
    }

    /// As [`NodeProc::start_on`] with a chosen peer port (on 127.0.0.1) and
    /// an optional configuration file (`--config`).
    ///
    /// # Panics
    /// If the node does not start in time.
    #[must_use]
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    pub fn start_with_config(
        bin: &Path,
        data_dir: &Path,
        port: u16,
        peer_port: u16,
        config: Option<&Path>,
    ) -> Self {
        Self::start_with_env(bin, data_dir, port, peer_port, config, &[])
    }

    /// As [`NodeProc::start_with_config`] with extra environment variables
    /// for the node process (e.g. `LICHEN_PASSPHRASE`).
    ///
    /// # Panics
    /// If the node does not start in time.
    #[must_use]
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    pub fn start_with_env(
        bin: &Path,
        data_dir: &Path,
        port: u16,
        peer_port: u16,
        config: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Self {
        // The gateway port is ours to choose: if something took it between
        // free_port() and the node's bind, try another.
        for _ in 0..3 {
            match Self::try_start(bin, data_dir, port, peer_port, config, env) {
                Ok(n) => return n,
                Err(log) if log.contains("cannot listen for the HTTP gateway") => {}
                Err(log) => panic!("node exited early; log:\n{log}"),
            }
        }
        panic!("node could not get a gateway port in 3 tries");
    }

    /// One start; `Err(log)` if the node exited before opening FCP.
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    fn try_start(
        bin: &Path,
        data_dir: &Path,
        port: u16,
        peer_port: u16,
        config: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.with_extension("log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let gateway_port = free_port();
        let mut cmd = Command::new(bin);
        if let Some(c) = config {
            cmd.arg("node").arg("--config").arg(c).arg("--data-dir");
        } else {
            cmd.args(["node", "--data-dir"]);
        }
        let child = cmd
            .arg(data_dir)
            .args(["--fcp-port", &port.to_string()])
            .args(["--gateway-port", &gateway_port.to_string()])
            .args(["--listen", &format!("127.0.0.1:{peer_port}")])
            // `LICHEN_IT_LOG=lichen=debug` when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("LICHEN_IT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start lichen node");
        let fcp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut n = NodeProc {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            fcp,
            gateway: format!("127.0.0.1:{gateway_port}").parse().unwrap(),
            log,
        };
        let start = Instant::now();
        loop {
            if let Ok(s) = TcpStream::connect_timeout(&fcp, Duration::from_millis(200)) {
                drop(s);
                return Ok(n);
            }
            if let Some(status) = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                n.child = None;
                return Err(format!("({status})\n{}", n.log_text()));
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "node did not open FCP; log:\n{}",
                n.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kill with SIGKILL and wait.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop with SIGTERM and wait (bounded); returns whether it exited by itself.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Resident memory of the node process in KiB (Linux).
    #[must_use]
    pub fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking FCP client for tests: [`lichen_fcp::blocking::Connection`]
/// with every payload kept inside its message, and panics instead of
/// errors.
#[derive(Debug)]
pub struct Fcp {
    conn: Connection,
}

impl Fcp {
    /// Connect without saying hello.
    ///
    /// # Errors
    /// Connection errors.
    pub fn connect_raw(addr: SocketAddr) -> std::io::Result<Self> {
        let conn = Connection::connect(addr, Duration::from_secs(5))?.with_limits(Limits {
            inline_data_limit: 1 << 30,
            ..Limits::default()
        });
        conn.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Fcp { conn })
    }

    /// Connect and exchange ClientHello/NodeHello.
    ///
    /// # Panics
    /// If the node does not answer NodeHello.
    #[must_use]
    #[allow(clippy::unwrap_used)]
    pub fn connect(addr: SocketAddr, name: &str) -> Self {
        let mut c = Self::connect_raw(addr).unwrap();
        c.conn.send_hello(name).unwrap();
        let m = c.recv().unwrap();
        assert_eq!(m.name, "NodeHello", "{m:?}");
        c
    }

    /// Send a message.
    ///
    /// # Panics
    /// On a write error.
    #[allow(clippy::unwrap_used)]
    pub fn send(&mut self, m: &Message) {
        self.conn.send(m).unwrap();
    }

    /// Send raw bytes.
    ///
    /// # Errors
    /// Write errors.
    pub fn send_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.conn.send_raw(b)
    }

    /// The next message, or `None` when the node closed the connection.
    ///
    /// # Panics
    /// On a decode error or timeout.
    pub fn recv(&mut self) -> Option<Message> {
        match self.conn.next_event() {
            Ok(Event::Message(m)) => Some(m),
            Ok(other) => panic!("unexpected streamed event {other:?}"),
            Err(blocking::Error::Closed) => None,
            Err(blocking::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("FCP read failed: {e}"),
        }
    }

    /// Read messages until one named in `names` arrives (others are
    /// returned in the second element).
    ///
    /// # Panics
    /// If the connection closes first.
    pub fn until(&mut self, names: &[&str]) -> (Message, Vec<Message>) {
        let mut seen = Vec::new();
        loop {
            let m = self
                .recv()
                .unwrap_or_else(|| panic!("connection closed waiting for {names:?}; saw {seen:?}"));
            if names.contains(&m.name.as_str()) {
                return (m, seen);
            }
            seen.push(m);
        }
    }

    /// `ClientPut` of `data` under `uri` with `UploadFrom=direct`, the
    /// identifier `id` and the `extra` fields; returns `PutSuccessful` or
    /// `PutFailed`, and the messages before it.
    ///
    /// # Panics
    /// If the connection closes first.
    pub fn put_direct(
        &mut self,
        uri: &str,
        id: &str,
        data: &[u8],
        extra: &[(&str, &str)],
    ) -> (Message, Vec<Message>) {
        let mut m = Message::new("ClientPut")
            .field("URI", uri)
            .field("Identifier", id)
            .field("UploadFrom", "direct");
        for (k, v) in extra {
            m.fields.set(*k, (*v).to_string());
        }
        m.fields.set("DataLength", data.len().to_string());
        m.data = Some(data.to_vec());
        self.send(&m);
        self.until(&["PutSuccessful", "PutFailed"])
    }
}
