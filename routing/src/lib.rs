#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub)]

pub mod location;
pub mod message;
pub mod node;
pub mod tunnelled;

pub use location::{Key, Location};
pub use message::{Block, KeyKind, Message, NodeRef, NoderefBytes};
pub use node::{
    Action, BlockSource, Config, Disconnect, EmptyStore, InsertOutcome, LocalRequest, Millis, Node,
    PeerId, RequestId, RequestOutcome, Space, Stats, Verifier, MAX_HELD,
};
pub use tunnelled::{
    TunnelConfig, TunnelStats, Tunnelled, MIN_TRY_SAMPLES, MIN_TRY_TIMEOUT_MS, TRY_SAMPLES,
};
