//! Admission before the hello: the bounds of the slots for inbound
//! connections from their accept until their hello, so a flood of
//! half-open connections, or of links that finish the handshake and then
//! say nothing, cannot grow without bound nor lock newcomers out; and the
//! deadline for the hello. The node's accept loop keeps the slots (its
//! `util::admission`, sans-IO like this policy).

use std::time::Duration;

/// Inbound connections between their accept and their hello (the
/// handshake, then the wait for the peer's first message). Each holds a
/// socket and a task, and costs Diffie-Hellman work; when they are all
/// taken, the oldest is closed to make room for a new one, so a flood of
/// half-open connections or of silent links cannot grow without bound
/// nor keep a legitimate peer out.
pub const MAX_INBOUND_HANDSHAKES: usize = 64;

/// A link whose peer has not said hello this long after it came up is
/// closed ([`super::PeerPolicy::tick`]); one we dialed counts as a failed
/// dial. An inbound connection has this long from its accept to its
/// hello.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// An inbound connection's time from its accept to its hello while more
/// than half of [`MAX_INBOUND_HANDSHAKES`] are taken.
pub const PRESSED_HELLO_DEADLINE: Duration = Duration::from_secs(2);

/// Inbound connections before their hello from one source range (IPv4
/// /24, IPv6 /64), so one network cannot take every slot: its oldest
/// makes room for its newest. Loopback is exempt unless a test asks
/// otherwise: a testnet's nodes all dial from 127.0.0.1.
pub const MAX_HANDSHAKES_PER_RANGE: usize = 8;
