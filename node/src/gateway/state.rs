//! The gateway's shared state and its tunables.

use super::editions::UskEditions;
use super::jobs::Jobs;
use crate::node::Node;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tunables (tests shorten the progress wait).
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a page request waits for a fetch before answering with
    /// the progress page.
    pub progress_after: Duration,
    /// How long a sub-resource request (image, stylesheet) waits.
    pub resource_wait: Duration,
    /// Time allowed to send the request headers (and between requests
    /// on a kept-alive connection).
    pub header_timeout: Duration,
    /// The same while more than half the connection slots are taken.
    pub pressed_header_timeout: Duration,
    /// Loopback clients count as many sources, one per address, for the
    /// per-range limit (tests); off, loopback has no per-range limit.
    pub loopback_sources: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            progress_after: Duration::from_secs(2),
            resource_wait: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            pressed_header_timeout: Duration::from_secs(2),
            loopback_sources: false,
        }
    }
}

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    pub(super) node: Arc<Node>,
    pub(super) opts: Options,
    csrf: String,
    /// The fetches held.
    pub(super) jobs: Jobs,
    /// USK editions seen and probed.
    pub(super) usk: Arc<UskEditions>,
    /// (file name, URI) of uploads made through the form.
    pub(super) uploads: Mutex<VecDeque<(String, String)>>,
    /// Key requests from other sites refused (`origin`).
    pub(super) cross_site_refused: AtomicU64,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Gateway {
    /// Gateway state for `node`.
    #[must_use]
    pub fn new(node: Arc<Node>, opts: Options) -> Arc<Self> {
        let secret: [u8; 32] = rand::random();
        Arc::new(Gateway {
            node,
            opts,
            csrf: hex(&secret),
            jobs: Jobs::new(),
            usk: Arc::new(UskEditions::default()),
            uploads: Mutex::new(VecDeque::new()),
            cross_site_refused: AtomicU64::new(0),
        })
    }

    /// The token a form named `form` carries (see `docs/gateway.md`).
    pub(super) fn csrf_for(&self, form: &str) -> String {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(format!("{}:{form}", self.csrf)))
    }
}
