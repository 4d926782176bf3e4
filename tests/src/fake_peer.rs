//! A fake peer built from the node's own link layer
//! (`lichen_link`: Noise XK handshake, padded CBOR frames) with its
//! own static key and noderef. Real nodes see an ordinary peer; the test
//! decides how it answers and sees every routing message it receives,
//! decoded.
//!
//! It runs on its own small tokio runtime, so tests stay synchronous.

use crate::network::random_bytes;
use lichen_crypto::{BlockKind, RoutingKey};
use lichen_link::{Bandwidth, Link, LinkConfig, LinkEvent, LinkSender, NodeKeys, NodeRef};
use lichen_routing::{Key, KeyKind, Location, Message};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Size of the corrupt blocks sent for CHK requests (a CHK block's size).
pub const CHK_BLOCK_LEN: usize = 32786;
/// Size of the corrupt blocks sent for SSK requests.
pub const SSK_BLOCK_LEN: usize = 1024 + 200;

/// How the fake peer answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Every `Request` gets `Accepted` and a `DataFound` with a corrupt
    /// block (random bytes of a real block's size).
    Corrupt,
    /// An honest peer with no other peers: keeps every valid inserted block
    /// (`InsertReply`), serves them (`DataFound`), answers `RouteNotFound`
    /// for anything else.
    Store,
}

/// One routing message the fake peer received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The sender's authenticated static key.
    pub from: [u8; 32],
    /// When, since the fake peer started.
    pub at: Duration,
    /// The decoded message.
    pub msg: Message,
}

#[derive(Debug, Default)]
struct Shared {
    log: Vec<Received>,
    corrupt_sent: u64,
    links_up: usize,
    links_total: usize,
    closed: Vec<([u8; 32], String)>,
    blocks: HashMap<[u8; 32], Vec<u8>>,
    /// Insert headers accepted, waiting for their `InsertData`.
    insert_headers: HashMap<u64, (Key, KeyKind)>,
    bad_inserts: u64,
    /// Sent as a `FoldOffer` after each block served (`Behaviour::Store`).
    fold_offer: Option<lichen_routing::NodeRef>,
    /// Each link's sending half, by the remote's static key.
    senders: HashMap<[u8; 32], LinkSender>,
}

fn lock(s: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone)]
struct Ctx {
    behaviour: Behaviour,
    location: Location,
    shared: Arc<Mutex<Shared>>,
    started: Instant,
}

/// A fake peer. Dropping it closes its links.
#[derive(Debug)]
pub struct FakePeer {
    rt: tokio::runtime::Runtime,
    keys: NodeKeys,
    /// Its location (sent as the hello).
    pub location: u64,
    /// Where it accepts links.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    behaviour: Behaviour,
    started: Instant,
}

/// Whether `block` is the valid block for `key` (the check real nodes do).
#[must_use]
pub fn block_valid(key: &Key, kind: KeyKind, block: &[u8]) -> bool {
    lichen_crypto::verify_block(BlockKind::from(kind), &RoutingKey(key.0), block).is_ok()
}

fn answer(ctx: &Ctx, s: &mut Shared, msg: &Message) -> Vec<Message> {
    match (ctx.behaviour, msg) {
        (Behaviour::Corrupt, Message::Request { id, key, kind, .. }) => {
            let len = match kind {
                KeyKind::Chk => CHK_BLOCK_LEN,
                KeyKind::Ssk => SSK_BLOCK_LEN,
            };
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&key.0[..8]);
            let block = random_bytes(len, u64::from_le_bytes(seed) ^ *id);
            s.corrupt_sent += 1;
            vec![
                Message::Accepted { id: *id },
                Message::DataFound { id: *id, block },
            ]
        }
        (Behaviour::Store, Message::Request { id, key, htl, .. }) => match s.blocks.get(&key.0) {
            Some(b) => {
                let mut r = vec![
                    Message::Accepted { id: *id },
                    Message::DataFound {
                        id: *id,
                        block: b.clone(),
                    },
                ];
                if let Some(noderef) = s.fold_offer.clone() {
                    r.push(Message::FoldOffer { id: *id, noderef });
                }
                r
            }
            None => vec![
                Message::Accepted { id: *id },
                Message::RouteNotFound {
                    id: *id,
                    htl: htl.saturating_sub(1),
                },
            ],
        },
        (_, Message::Insert { id, key, kind, .. }) => {
            s.insert_headers.insert(*id, (*key, *kind));
            vec![Message::Accepted { id: *id }]
        }
        (_, Message::InsertData { id, block }) => match s.insert_headers.remove(id) {
            Some((key, kind)) => {
                if block_valid(&key, kind, block) {
                    s.blocks.insert(key.0, block.clone());
                } else {
                    s.bad_inserts += 1;
                }
                vec![Message::InsertReply { id: *id }]
            }
            None => {
                s.bad_inserts += 1;
                Vec::new()
            }
        },
        (_, Message::Announce { id, .. }) => {
            vec![
                Message::Accepted { id: *id },
                Message::AnnounceReply { id: *id },
            ]
        }
        (_, Message::SwapRequest { id, .. }) => vec![Message::SwapRejected { id: *id }],
        _ => Vec::new(),
    }
}

async fn serve(link: Link, ctx: Ctx) {
    let remote = link.remote_static();
    let (tx, mut rx) = link.into_parts();
    {
        let mut s = lock(&ctx.shared);
        s.links_up += 1;
        s.links_total += 1;
        s.senders.insert(remote, tx.clone());
    }
    // The hello real nodes wait for.
    let _ = tx
        .send(Message::LocationChanged {
            location: ctx.location,
        })
        .await;
    let mut why = String::from("events ended");
    while let Some(ev) = rx.recv().await {
        match ev {
            LinkEvent::Message(m) => {
                let replies = {
                    let mut s = lock(&ctx.shared);
                    let r = answer(&ctx, &mut s, &m);
                    s.log.push(Received {
                        from: remote,
                        at: ctx.started.elapsed(),
                        msg: m,
                    });
                    r
                };
                for r in replies {
                    if tx.send(r).await.is_err() {
                        break;
                    }
                }
            }
            LinkEvent::Closed(e) => {
                why = e.to_string();
                break;
            }
        }
    }
    let mut s = lock(&ctx.shared);
    s.links_up = s.links_up.saturating_sub(1);
    s.senders.remove(&remote);
    s.closed.push((remote, why));
}

impl FakePeer {
    /// Start a fake peer listening on a free loopback port; its static key
    /// and location derive from `seed`.
    ///
    /// # Panics
    /// If the runtime or the listener cannot be made.
    #[must_use]
    #[allow(clippy::unwrap_used)]
    pub fn start(behaviour: Behaviour, seed: u64) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let secret: [u8; 32] = random_bytes(32, seed).try_into().unwrap();
        let keys = NodeKeys::from_static_secret(secret);
        let location = u64::from_le_bytes(random_bytes(8, seed ^ 0x5eed).try_into().unwrap());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let started = Instant::now();
        let ctx = Ctx {
            behaviour,
            location: Location(location),
            shared: shared.clone(),
            started,
        };
        let k = keys.clone();
        rt.spawn(async move {
            let bw = Arc::new(Bandwidth::unlimited());
            let cfg = LinkConfig::default();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (k, bw, cfg, ctx) = (k.clone(), bw.clone(), cfg.clone(), ctx.clone());
                tokio::spawn(async move {
                    if let Ok(link) = Link::accept(stream, &k, &cfg, bw).await {
                        serve(link, ctx).await;
                    }
                });
            }
        });
        FakePeer {
            rt,
            keys,
            location,
            addr,
            shared,
            behaviour,
            started,
        }
    }

    /// Its noderef.
    #[must_use]
    pub fn noderef(&self) -> NodeRef {
        NodeRef::new(&self.keys, vec![self.addr], Some(self.location))
    }

    /// Its noderef's text form (what `lichen noderef` prints).
    #[must_use]
    pub fn noderef_text(&self) -> String {
        self.noderef().to_text(&self.keys)
    }

    /// Write the noderef text to `path` (for a node's `seeds`).
    ///
    /// # Panics
    /// On a write error.
    #[allow(clippy::unwrap_used)]
    pub fn write_noderef(&self, path: &Path) {
        std::fs::write(path, self.noderef_text()).unwrap();
    }

    /// Its X25519 static public key.
    #[must_use]
    pub fn static_key(&self) -> [u8; 32] {
        self.keys.static_public()
    }

    /// Connect to the node `noderef_text` names (bounded by the link's
    /// handshake timeout).
    ///
    /// # Panics
    /// If the noderef does not parse or the link cannot be made.
    #[allow(clippy::expect_used)]
    pub fn connect(&self, noderef_text: &str) {
        let r = NodeRef::parse(noderef_text).expect("noderef");
        let link = self
            .rt
            .block_on(Link::connect_noderef(
                &r,
                &self.keys,
                &LinkConfig::default(),
                Arc::new(Bandwidth::unlimited()),
            ))
            .expect("fake peer link");
        let ctx = Ctx {
            behaviour: self.behaviour,
            location: Location(self.location),
            shared: self.shared.clone(),
            started: self.started,
        };
        self.rt.spawn(serve(link, ctx));
    }

    /// Every routing message received so far, in order.
    #[must_use]
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared).log.clone()
    }

    /// `DataFound` messages with corrupt blocks sent so far.
    #[must_use]
    pub fn corrupt_sent(&self) -> u64 {
        lock(&self.shared).corrupt_sent
    }

    /// Links up now, and links ever made.
    #[must_use]
    pub fn links(&self) -> (usize, usize) {
        let s = lock(&self.shared);
        (s.links_up, s.links_total)
    }

    /// Links that ended: the remote static key and why.
    #[must_use]
    pub fn closed(&self) -> Vec<([u8; 32], String)> {
        lock(&self.shared).closed.clone()
    }

    /// Keys of the valid blocks inserted into it (`Behaviour::Store`).
    #[must_use]
    pub fn stored_keys(&self) -> Vec<[u8; 32]> {
        lock(&self.shared).blocks.keys().copied().collect()
    }

    /// Inserted blocks that did not verify.
    #[must_use]
    pub fn bad_inserts(&self) -> u64 {
        lock(&self.shared).bad_inserts
    }

    /// Hold `block` under `key` and serve it (`Behaviour::Store`).
    pub fn hold(&self, key: [u8; 32], block: Vec<u8>) {
        lock(&self.shared).blocks.insert(key, block);
    }

    /// Its noderef as routing messages carry it (`FoldOffer`, `Announce`):
    /// its location and the signed binary noderef.
    #[must_use]
    pub fn routing_noderef(&self) -> lichen_routing::NodeRef {
        lichen_routing::NodeRef {
            location: Location(self.location),
            address: self.noderef().to_bytes(&self.keys).into(),
        }
    }

    /// From now on, follow each block served with a `FoldOffer` of
    /// `noderef` (`None`: no more offers).
    pub fn offer_folds(&self, noderef: Option<lichen_routing::NodeRef>) {
        lock(&self.shared).fold_offer = noderef;
    }

    /// Send `msg` on the link to the node whose static key is `to`.
    /// Returns whether such a link was up and took it.
    pub fn send(&self, to: [u8; 32], msg: Message) -> bool {
        let tx = lock(&self.shared).senders.get(&to).cloned();
        match tx {
            Some(tx) => self.rt.block_on(tx.send(msg)).is_ok(),
            None => false,
        }
    }

    /// Static keys of the nodes linked to it now.
    #[must_use]
    pub fn linked(&self) -> Vec<[u8; 32]> {
        lock(&self.shared).senders.keys().copied().collect()
    }
}
