//! Jobs: work that runs on its own on behalf of a client, above the
//! operations and below the front ends.
//!
//! - `request`: one FCP request, from its message to its outcome, telling
//!   its progress through a trait the FCP front end implements.
//! - `push`: the background task that pushes inserts made without peers
//!   into the network.
//! - `codes`: the one mapping of failures to FCP `GetFailed` and
//!   `PutFailed` codes.

pub(crate) mod codes;
pub(crate) mod disk;
pub(crate) mod push;
pub(crate) mod request;
