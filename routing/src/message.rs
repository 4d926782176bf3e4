//! Messages between peers.
//!
//! # Protocol flow
//!
//! ```text
//! request:  A --Request{id,key,htl}--> B --Request--> C ...
//!           A <--Accepted{id}--------- B            (or RejectedLoop / RejectedOverload)
//!           ... C finds the block ...
//!           A <--DataFound{id,block}-- B <--DataFound-- C   (each hop verifies, may cache)
//!           A <--FoldOffer{id,ref}---- B <--FoldOffer-- C   (opennet path folding)
//!   failure: DataNotFound{id} (HTL ran out: terminal) or RouteNotFound{id,htl}
//!            (no more peers to try: the receiver tries its next peer with that HTL)
//! insert:   A --Insert{id,key,htl}--> B        (a header: loops and overload
//!           A <--Accepted{id}--------- B         are refused before any data)
//!           A --InsertData{id,block}-> B         (B verifies, may cache/store,
//!           ... routed like a request until the HTL runs out ...   then routes on)
//!           InsertReply{id} retraces the path; Collision{id,block} for an SSK
//!           that already holds a different block.
//! opennet:  Announce{id,htl,noderef} routed like an insert toward the
//!           newcomer's location (AnnounceReply at the end); nodes on the way
//!           that want peers connect to it.
//! darknet:  SwapRequest (random walk of swap_htl hops) -> SwapReply / SwapRejected
//!           retracing the walk; LocationChanged to every peer after a swap.
//! ```
//!
//! No message names its origin. Request ids are random 64-bit values; each
//! node only remembers which neighbour gave it a request. The only addresses
//! carried are opennet noderefs (announcements, by design not anonymous, and
//! path-folding offers, which any hop may replace with its own).

use std::sync::Arc;

use crate::location::{Key, Location};
use serde::{Deserialize, Serialize};

/// Signed noderef bytes, shared: a node's noderef is copied into many
/// peer lists, links and messages (thousands of times over in a seed's,
/// and in the simulator's million-node networks); each copy is a
/// reference to one allocation. On the wire they are a CBOR byte string,
/// exactly as `serde_bytes` writes a `Vec<u8>`.
pub type NoderefBytes = Arc<[u8]>;

/// `#[serde(with)]` for [`NoderefBytes`]: a byte string.
mod shared_bytes {
    use super::NoderefBytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &NoderefBytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NoderefBytes, D::Error> {
        Ok(serde_bytes::ByteBuf::deserialize(d)?.into_vec().into())
    }
}

/// A block's bytes. The routing layer treats them as opaque; the embedder's
/// [`Verifier`](crate::Verifier) checks them against the key.
pub type Block = Vec<u8>;

/// Which kind of key a request or insert is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyKind {
    /// Content hash key: immutable, 32 KiB.
    Chk,
    /// Signed subspace key: write-once, 1 KiB, collisions reported.
    Ssk,
}

/// The one conversion between the routing and block (crypto) names of a
/// key's kind.
impl From<KeyKind> for lichen_crypto::BlockKind {
    fn from(k: KeyKind) -> Self {
        match k {
            KeyKind::Chk => lichen_crypto::BlockKind::Chk,
            KeyKind::Ssk => lichen_crypto::BlockKind::Ssk,
        }
    }
}

/// The one conversion between the block (crypto) and routing names of a
/// key's kind.
impl From<lichen_crypto::BlockKind> for KeyKind {
    fn from(k: lichen_crypto::BlockKind) -> Self {
        match k {
            lichen_crypto::BlockKind::Chk => KeyKind::Chk,
            lichen_crypto::BlockKind::Ssk => KeyKind::Ssk,
        }
    }
}

/// An opennet node reference as the routing layer sees it: the node's
/// location plus opaque bytes (address, static key, version) that only the
/// embedder interprets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    /// The node's location.
    pub location: Location,
    /// Opaque reference bytes (the node CBOR-encodes its noderef here).
    #[serde(with = "shared_bytes")]
    pub address: NoderefBytes,
}

/// A message between two peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Fetch the block for `key`.
    Request {
        /// Random request id, also the loop detector.
        id: u64,
        /// Routing key.
        key: Key,
        /// Hops to live.
        htl: u8,
        /// Key kind.
        kind: KeyKind,
    },
    /// Store a block under `key` along the route: the header. The block
    /// follows in [`Message::InsertData`] once the receiver has answered
    /// `Accepted`, so a loop or an overloaded peer costs a few bytes.
    Insert {
        /// Random request id.
        id: u64,
        /// Routing key.
        key: Key,
        /// Hops to live.
        htl: u8,
        /// Key kind.
        kind: KeyKind,
    },
    /// The block of insert `id`, sent after its `Accepted` (verified by
    /// every hop).
    InsertData {
        /// Request id.
        id: u64,
        /// The block.
        #[serde(with = "serde_bytes")]
        block: Block,
    },
    /// The receiver took on the request or insert `id` (stops the
    /// accept timeout; a silent peer is backed off quickly).
    Accepted {
        /// Request id.
        id: u64,
    },
    /// The receiver already handles or recently handled `id`.
    RejectedLoop {
        /// Request id.
        id: u64,
    },
    /// The receiver is too busy; back off from it.
    RejectedOverload {
        /// Request id.
        id: u64,
    },
    /// The block was found.
    DataFound {
        /// Request id.
        id: u64,
        /// The block.
        #[serde(with = "serde_bytes")]
        block: Block,
    },
    /// The HTL ran out without finding the block (terminal).
    DataNotFound {
        /// Request id.
        id: u64,
    },
    /// The receiver ran out of peers; the sender may try others with `htl`.
    RouteNotFound {
        /// Request id.
        id: u64,
        /// Hops to live left.
        htl: u8,
    },
    /// The insert ran its course.
    InsertReply {
        /// Request id.
        id: u64,
    },
    /// An SSK insert hit a different existing block, which is returned.
    Collision {
        /// Request id.
        id: u64,
        /// The block already stored under the key.
        #[serde(with = "serde_bytes")]
        block: Block,
    },
    /// Opennet path folding: after `DataFound`, a connection offer that
    /// travels back along the path (any hop may take it, or replace it with
    /// its own noderef).
    FoldOffer {
        /// Request id.
        id: u64,
        /// The node offering the connection.
        noderef: NodeRef,
    },
    /// Opennet announcement, routed toward `target` or else `noderef.location`.
    Announce {
        /// Random id (loop detection).
        id: u64,
        /// Hops to live.
        htl: u8,
        /// The newcomer.
        noderef: NodeRef,
        /// Where it is routed when not toward `noderef.location`: an
        /// established node looking for peers at one link length (its
        /// link-length refresh, routing/README.md). Absent on the wire
        /// when `None`, so earlier nodes read it as before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<Location>,
        /// The newcomer is behind NAT (its peers' dial-backs failed):
        /// nobody can dial it, so a node on the way that wants it sends
        /// [`Message::AnnounceOffer`] and the newcomer dials. Absent on
        /// the wire when false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unreachable: bool,
        /// How many more nodes on the way may take the newcomer: each
        /// that does (dials it, offers itself, or keeps the newcomer's
        /// seed-client link as a peer) passes on one less, and at 0 no
        /// node does. The newcomer sends as many as it invites (its room
        /// for peers, at least one), so the path no longer opens links it
        /// must refuse. Absent on the wire when `None`: no limit (as from
        /// earlier nodes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<u8>,
    },
    /// Opennet: a node on the path of an announcement from behind NAT
    /// wants the newcomer as a peer: "dial me". Retraces the path (each
    /// hop passes on at most HTL of them per announcement); the newcomer
    /// dials `noderef` if it still wants a peer there.
    AnnounceOffer {
        /// Announcement id.
        id: u64,
        /// The node asking to be dialed.
        noderef: NodeRef,
        /// That node is behind NAT too and already dials the newcomer
        /// from its listening port: the newcomer dials it back the same
        /// way at once (a hole punch, docs/wire.md "Hole punching")
        /// instead of a plain dial. Absent on the wire when false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        punch: bool,
    },
    /// The announcement ran its course (retraces the path).
    AnnounceReply {
        /// Announcement id.
        id: u64,
    },
    /// Darknet location swap, a random walk of a few hops.
    SwapRequest {
        /// Random id.
        id: u64,
        /// Hops left in the random walk.
        htl: u8,
        /// The initiator's location.
        location: Location,
        /// The initiator's peers' locations.
        peer_locations: Vec<Location>,
    },
    /// Answer of the swap partner, retracing the walk.
    SwapReply {
        /// Swap id.
        id: u64,
        /// Whether the partner swapped.
        accepted: bool,
        /// The partner's location (before the swap).
        location: Location,
        /// The partner's peers' locations.
        peer_locations: Vec<Location>,
    },
    /// The swap could not be done (rate limit, implausible, loop).
    SwapRejected {
        /// Swap id.
        id: u64,
    },
    /// The sender's location changed (after a swap or a reset).
    LocationChanged {
        /// New location.
        location: Location,
    },
    /// Link level, opennet: the sender's own signed noderef, sent once by
    /// the node that dialed, right after its hello, so the node it dialed
    /// can remember it and dial it after a restart. Never routed; the
    /// embedder handles it (the routing core ignores it).
    Noderef {
        /// The embedder's signed noderef bytes.
        #[serde(with = "shared_bytes")]
        noderef: NoderefBytes,
    },
    /// Link level: "open a connection to me where you see me from, on
    /// `port` (where I listen), and say whether I answered"
    /// ([`Message::DialBackResult`]). The peer dials only the address it
    /// sees the link come from: nobody can send a peer's connections
    /// anywhere else. Never routed; the embedder handles it.
    DialBack {
        /// The asker's listening port.
        port: u16,
    },
    /// Link level: the answer to [`Message::DialBack`]: the address the
    /// sender sees the link come from, and whether a handshake with the
    /// asker's static key at that address's IP and the port asked for
    /// got the asker's second handshake message (the asker is reachable
    /// there; a NAT without a port mapping drops the connection).
    DialBackResult {
        /// The asker's address as the sender sees it.
        seen: std::net::SocketAddr,
        /// Whether the dial back was answered.
        reachable: bool,
    },
    /// Link level, hole punching (docs/wire.md, "Hole punching"): "I want
    /// a direct link to the node with static key `target`, and it or I
    /// cannot be dialed; if you have a link to it, introduce us". `port`
    /// is where the sender listens (and dials punches from). The peer
    /// answers nothing when it has no link to `target`.
    PunchAsk {
        /// The static key of the node wanted.
        #[serde(with = "serde_bytes")]
        target: [u8; 32],
        /// The asker's listening port.
        port: u16,
    },
    /// Link level: from the node introducing, to the node wanted: the node
    /// with static key `from` asks for a direct link, and is at `addr`
    /// (the IP its link to the introducer comes from, and the port it
    /// listens on). Answered with [`Message::PunchReady`] if the link is
    /// wanted, then the receiver starts dialing `addr`.
    PunchOffer {
        /// The asker's static key.
        #[serde(with = "serde_bytes")]
        from: [u8; 32],
        /// Where to dial it.
        addr: std::net::SocketAddr,
    },
    /// Link level: to the node introducing: "I dial the node with static
    /// key `to` now, from `port`" (the answer to [`Message::PunchOffer`]).
    PunchReady {
        /// The asker's static key.
        #[serde(with = "serde_bytes")]
        to: [u8; 32],
        /// The sender's listening port.
        port: u16,
    },
    /// Link level: from the node introducing, to the asker: the node with
    /// static key `target` is dialing you now from `addr`; dial it there
    /// (both dials cross: a TCP simultaneous open through both NATs).
    PunchGo {
        /// The static key of the node wanted.
        #[serde(with = "serde_bytes")]
        target: [u8; 32],
        /// Where to dial it.
        addr: std::net::SocketAddr,
    },
    /// Link level, before the hello: "I hold your invitation"
    /// (docs/wire.md, "Invitations"): its one-time `token`, and the
    /// sender's own signed noderef, to be remembered as a friend.
    Invited {
        /// The invitation's secret.
        #[serde(with = "serde_bytes")]
        token: [u8; 16],
        /// The sender's signed noderef.
        #[serde(with = "shared_bytes")]
        noderef: NoderefBytes,
    },
    /// Link level, before the hello: the answer to a good
    /// [`Message::Invited`]: the inviting node's signed noderef.
    Welcome {
        /// The sender's signed noderef.
        #[serde(with = "shared_bytes")]
        noderef: NoderefBytes,
    },
    /// A premix tunnel message (`lichen_tunnel::TunnelMsg`, always
    /// `lichen_tunnel::WIRE_LEN` bytes); handled by
    /// [`Tunnelled`](crate::tunnelled::Tunnelled), not by the node.
    Tunnel {
        /// The encoded tunnel message.
        #[serde(with = "serde_bytes")]
        cell: Vec<u8>,
    },
}

impl Message {
    /// The request, insert, announcement or swap id the message belongs to.
    pub fn id(&self) -> Option<u64> {
        use Message::*;
        match self {
            Request { id, .. }
            | Insert { id, .. }
            | InsertData { id, .. }
            | Accepted { id }
            | RejectedLoop { id }
            | RejectedOverload { id }
            | DataFound { id, .. }
            | DataNotFound { id }
            | RouteNotFound { id, .. }
            | InsertReply { id }
            | Collision { id, .. }
            | FoldOffer { id, .. }
            | Announce { id, .. }
            | AnnounceOffer { id, .. }
            | AnnounceReply { id }
            | SwapRequest { id, .. }
            | SwapReply { id, .. }
            | SwapRejected { id } => Some(*id),
            LocationChanged { .. }
            | Noderef { .. }
            | DialBack { .. }
            | DialBackResult { .. }
            | PunchAsk { .. }
            | PunchOffer { .. }
            | PunchReady { .. }
            | PunchGo { .. }
            | Invited { .. }
            | Welcome { .. }
            | Tunnel { .. } => None,
        }
    }

    /// A short name for statistics and logs.
    pub fn name(&self) -> &'static str {
        use Message::*;
        match self {
            Request { .. } => "Request",
            Insert { .. } => "Insert",
            InsertData { .. } => "InsertData",
            Accepted { .. } => "Accepted",
            RejectedLoop { .. } => "RejectedLoop",
            RejectedOverload { .. } => "RejectedOverload",
            DataFound { .. } => "DataFound",
            DataNotFound { .. } => "DataNotFound",
            RouteNotFound { .. } => "RouteNotFound",
            InsertReply { .. } => "InsertReply",
            Collision { .. } => "Collision",
            FoldOffer { .. } => "FoldOffer",
            Announce { .. } => "Announce",
            AnnounceOffer { .. } => "AnnounceOffer",
            AnnounceReply { .. } => "AnnounceReply",
            SwapRequest { .. } => "SwapRequest",
            SwapReply { .. } => "SwapReply",
            SwapRejected { .. } => "SwapRejected",
            LocationChanged { .. } => "LocationChanged",
            Noderef { .. } => "Noderef",
            DialBack { .. } => "DialBack",
            DialBackResult { .. } => "DialBackResult",
            PunchAsk { .. } => "PunchAsk",
            PunchOffer { .. } => "PunchOffer",
            PunchReady { .. } => "PunchReady",
            PunchGo { .. } => "PunchGo",
            Invited { .. } => "Invited",
            Welcome { .. } => "Welcome",
            Tunnel { .. } => "Tunnel",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let m = Message::Insert {
            id: 7,
            key: Key([3; 32]),
            htl: 18,
            kind: KeyKind::Ssk,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Message>(&s).unwrap(), m);
        assert_eq!(m.id(), Some(7));
        assert_eq!(m.name(), "Insert");
    }
}
