#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub)]

pub mod bandwidth;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod invitation;
pub mod keys;
pub mod link;
pub mod noderef;
pub mod peerlist;
pub mod policy;
pub mod sockets;
pub mod transport;

#[cfg(test)]
mod tests;

pub use bandwidth::{Bandwidth, TokenBucket};
pub use error::{LinkError, NoderefError};
pub use frame::LinkMessage;
pub use handshake::{Handshake, HsAction};
pub use invitation::{Invitation, InvitationError};
pub use keys::NodeKeys;
pub use link::{Link, LinkConfig, LinkEvent, LinkSender};
pub use noderef::NodeRef;
pub use transport::{Opened, RekeyPolicy, Transport};

/// Noise protocol name used by every link.
pub const NOISE_PARAMS: &str = "Noise_XK_25519_ChaChaPoly_SHA256";

/// Prologue mixed into the handshake hash: a node speaking another link
/// version fails the handshake instead of misreading frames.
pub const PROLOGUE: &[u8] = b"lichen-link-v1";
