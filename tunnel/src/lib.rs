#![doc = include_str!("../README.md")]

pub mod cell;
pub mod circuit;
pub mod exit;
pub mod guards;
pub mod handshake;
pub mod learned;
pub mod onion;

pub use cell::{Command, Dir, TunnelMsg, WIRE_LEN};
pub use circuit::{
    CircuitId, CloseReason, Event, ExitId, Limits, Links, Tunnels, DEFAULT_MIN_PEER_LIST,
    HOP_SAMPLES, MIN_HOP_SAMPLES, MIN_HOP_TIMEOUT_MS,
};
pub use learned::{LearnedTimeout, Rule};
pub use onion::{CELL, MAX_HOPS};

/// What can go wrong with a tunnel; every variant is a refusal of input
/// or of a request, never a panic.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TunnelError {
    /// A hop's handshake answer does not prove it holds its static key.
    #[error("tunnel handshake failed to authenticate the hop")]
    HandshakeAuth,
    /// A cell that does not open or does not fit the protocol.
    #[error("bad tunnel cell: {0}")]
    BadCell(&'static str),
    /// Bytes that are not a tunnel message or command.
    #[error("bad tunnel message: {0}")]
    Decode(&'static str),
    /// A message for a circuit this node does not have.
    #[error("unknown tunnel circuit")]
    UnknownCircuit,
    /// A request the node will not serve.
    #[error("tunnel refused: {0}")]
    Refused(&'static str),
    /// A message larger than tunnels carry.
    #[error("tunnel message too large")]
    TooLarge,
    /// The tunnel is not built (yet) or gone.
    #[error("tunnel not open")]
    NotOpen,
    /// A layer's counter ran out (2^64 cells).
    #[error("tunnel layer exhausted")]
    Exhausted,
}
