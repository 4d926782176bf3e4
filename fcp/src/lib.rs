#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod blocking;
pub mod client;
pub mod codec;
pub mod codes;
pub mod dda;
pub mod fields;
pub mod replies;
pub mod session;

pub use client::{
    ClientMessage, MessageInvalid, Persistence, PriorityClass, ReturnType, UploadFrom, Verbosity,
};
pub use codec::{DecodeError, Decoder, Event, Limits, Message};
pub use codes::{FetchErrorCode, InsertErrorCode, ProtocolErrorCode};
pub use fields::{parse_bool, Fields};
pub use replies::Reply;
pub use session::{Action, IdentifierSet, Session};
