//! The encrypted link layer between peers.
//!
//! Layered like arti's `tor-cell`/`tor-proto`: everything that can be pure
//! is pure, and only [`link`] touches sockets.
//!
//! ```text
//! keys      node keys derived from the identity (X25519 static, Ed25519 signing)
//! noderef   the printable, signed node reference a user pastes   (no I/O)
//! frame     CBOR envelopes, padding to a fixed set of sizes      (no I/O)
//! handshake Noise_XK as a step function                          (no I/O)
//! transport sealing/opening frames, in-band rekeying             (no I/O)
//! bandwidth token buckets for the per-node upload/download limits
//! link      the thin tokio driver: TCP, a reader and a writer task per link
//! peerlist  the remembered peers (`peers.toml`)                  (file I/O)
//! peers     the peer manager: links, friends, the routing core's driver
//! ```
//!
//! # Protocol flow
//!
//! ```text
//! initiator (knows responder's static key from its noderef)      responder
//!   -- [len u16][Noise XK msg 1: e, es] ------------------------->
//!   <- [len u16][Noise XK msg 2: e, ee] --------------------------
//!   -- [len u16][Noise XK msg 3: s, se] ------------------------->
//!   == transport frames, both ways ==============================
//!   [len u16][ChaChaPoly(pad(len u16 || CBOR {v, m}))]
//!   len is always one of the padded sizes + 16 (the AEAD tag)
//! ```
//!
//! The byte layouts are in `docs/wire.md`.

pub mod bandwidth;
pub mod error;
pub mod fcp_peers;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod link;
pub mod noderef;
pub mod peerlist;
pub mod peers;
pub mod transport;

#[cfg(test)]
mod tests;

pub use bandwidth::{Bandwidth, TokenBucket};
pub use error::{LinkError, NoderefError};
pub use frame::LinkMessage;
pub use handshake::{Handshake, HsAction};
pub use keys::NodeKeys;
pub use link::{Link, LinkConfig, LinkEvent, LinkSender};
pub use noderef::NodeRef;
pub use peers::FetchOpts;
pub use transport::{Opened, RekeyPolicy, Transport};

/// Noise protocol name used by every link.
pub const NOISE_PARAMS: &str = "Noise_XK_25519_ChaChaPoly_SHA256";

/// Prologue mixed into the handshake hash: a node speaking another link
/// version fails the handshake instead of misreading frames.
pub const PROLOGUE: &[u8] = b"lichen-link-v1";
