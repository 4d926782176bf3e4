//! The public face of a node: ids, the embedder's traits, actions and
//! outcomes.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::location::{Key, Location};
use crate::message::{Block, KeyKind, Message, NodeRef};

/// The embedder's handle for a connected peer. Opaque to this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub u64);

/// The id of a local request or insert (equal to its wire id; never shown to
/// peers as "ours": the wire format has no way to say so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Time in milliseconds on the embedder's monotonic clock.
pub type Millis = u64;

/// Block verification, supplied by the embedder (the crypto crate checks
/// SHA-256 for CHKs and the signature plus routing hash for SSKs).
pub trait Verifier {
    /// Whether `block` is the valid block for `key`.
    fn verify(&self, key: &Key, kind: KeyKind, block: &[u8]) -> bool;

    /// A block of fresh random content and its key, for the Pitch Black
    /// probe (`Config::pitch_probe_interval`): the node inserts one such
    /// block each period and fetches the previous one. `None` (the
    /// default, and what a plain function gives): the embedder cannot make
    /// blocks here, and the probe stays off.
    fn probe_block(&self, rng: &mut dyn RngCore) -> Option<(Key, KeyKind, Block)> {
        let _ = rng;
        None
    }
}

impl<F: Fn(&Key, KeyKind, &[u8]) -> bool> Verifier for F {
    fn verify(&self, key: &Key, kind: KeyKind, block: &[u8]) -> bool {
        self(key, kind, block)
    }
}

/// Read access to the node's shared store and cache (not the private client
/// cache), consulted when a request or SSK insert arrives.
pub trait BlockSource {
    /// The stored block for `key`, if any.
    fn get(&mut self, key: &Key, kind: KeyKind) -> Option<Block>;
}

/// A source with nothing in it (for tests and for nodes without a store).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyStore;

impl BlockSource for EmptyStore {
    fn get(&mut self, _: &Key, _: KeyKind) -> Option<Block> {
        None
    }
}

/// Where the embedder should put a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Space {
    /// Long-term store (insert sinks).
    Store,
    /// Shared cache (nodes on a path).
    Cache,
}

/// How a local request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The block (verified). The embedder puts it in the private client
    /// cache; this crate never asks to put local data in the shared store.
    Found(Block),
    /// The HTL ran out.
    NotFound,
    /// The request ran out of peers with HTL left.
    RouteNotFound,
    /// The key failed recently (failure table); not sent.
    RecentlyFailed,
    /// Local queue full (AIMD window).
    Overloaded,
    /// No answer in time.
    TimedOut,
}

/// How a local insert ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The insert ran until its HTL was used up.
    Success,
    /// The insert ran out of peers with `htl` hops left (it is stored on
    /// the nodes it reached).
    RouteNotFound {
        /// Hops left when routing gave up.
        htl: u8,
    },
    /// SSK collision: this different block is already stored.
    Collision(Block),
    /// Local queue full.
    Overloaded,
    /// No answer in time.
    TimedOut,
    /// The block does not verify against the key; nothing was sent.
    InvalidBlock,
}

/// Why [`Action::Disconnect`] closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Disconnect {
    /// Opennet, full: dropped to make room (it may come back later).
    LeastUseful,
    /// A seed client whose announcement is done (or whose time is up).
    SeedClientDone,
    /// Over [`Config::misbehaviour_limit`](super::Config::misbehaviour_limit)
    /// offences: keep it out for a while.
    Misbehaving,
}

/// What the embedder should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `msg` to `to`.
    Send {
        /// Recipient.
        to: PeerId,
        /// Message.
        msg: Message,
    },
    /// Put a verified block in the shared store or cache.
    StoreBlock {
        /// Which space.
        space: Space,
        /// Routing key.
        key: Key,
        /// Kind.
        kind: KeyKind,
        /// Block.
        block: Block,
    },
    /// A local request finished.
    RequestDone {
        /// Which request.
        id: RequestId,
        /// Result.
        outcome: RequestOutcome,
    },
    /// A local insert finished.
    InsertDone {
        /// Which insert.
        id: RequestId,
        /// Result.
        outcome: InsertOutcome,
    },
    /// Opennet: open a connection to this node, then call
    /// [`Node::accept_requested_peer`](super::Node::accept_requested_peer) when it is up.
    Connect {
        /// The node to connect to.
        noderef: NodeRef,
    },
    /// Opennet, both nodes behind NAT ([`Node::set_punching`](super::Node::set_punching)):
    /// dial this node from the listening port while it dials us (a hole
    /// punch), then call
    /// [`Node::accept_requested_peer`](super::Node::accept_requested_peer)
    /// (`initiator`) or take its link as an invited one when it is up.
    Punch {
        /// The node to punch toward.
        noderef: NodeRef,
        /// We run the link handshake as initiator (the node that offered
        /// the link); the newcomer answers.
        initiator: bool,
    },
    /// Close the connection to this peer. The node has already forgotten
    /// it.
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// Why: a misbehaving peer should not be let back in soon.
        why: Disconnect,
    },
    /// This node's location changed (darknet swap or reset): persist it.
    LocationChanged {
        /// New location.
        location: Location,
    },
}

/// A request from the local client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalRequest {
    /// Fetch a block (the embedder has already looked in its own stores).
    Fetch {
        /// Routing key.
        key: Key,
        /// Kind.
        kind: KeyKind,
    },
    /// Insert a block.
    Insert {
        /// Routing key.
        key: Key,
        /// Kind.
        kind: KeyKind,
        /// The block.
        block: Block,
    },
    /// Opennet: announce this node (needs [`Node::set_noderef`](super::Node::set_noderef)).
    Announce,
}
