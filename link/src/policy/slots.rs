//! Admission before the hello: bounded slots for inbound connections
//! from their accept until their hello, so a flood of half-open
//! connections, or of links that finish the handshake and then say
//! nothing, cannot grow without bound; and the deadline for the hello.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Inbound connections between their accept and their hello (the
/// handshake, then the wait for the peer's first message). Each holds a
/// socket and a task, and costs Diffie-Hellman work; beyond this, new
/// connections are closed at once, so a flood of half-open connections or
/// of silent links cannot grow without bound (legitimate peers dial
/// again). The driver holds a [`HandshakeSlot`] until
/// [`super::PeerPolicy::greeted`] says the hello came, or the link ends.
pub const MAX_INBOUND_HANDSHAKES: usize = 64;

/// A link whose peer has not said hello this long after it came up is
/// closed ([`super::PeerPolicy::tick`]); one we dialed counts as a failed
/// dial.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// Inbound connections before their hello from one address, so one host
/// cannot take every slot. Loopback is exempt: a testnet's nodes all dial
/// from 127.0.0.1.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 8;

/// The slots for inbound connections until their hello:
/// [`MAX_INBOUND_HANDSHAKES`] in all, [`MAX_HANDSHAKES_PER_ADDRESS`] per
/// address.
#[derive(Debug, Default)]
pub struct HandshakeSlots {
    by_address: Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// One inbound connection's slot, given back when dropped.
#[derive(Debug)]
pub struct HandshakeSlot {
    slots: Arc<HandshakeSlots>,
    ip: std::net::IpAddr,
}

impl HandshakeSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, usize>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a handshake from `ip`, if one is free.
    #[must_use]
    pub fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<HandshakeSlot> {
        let mut m = self.lock();
        let total: usize = m.values().sum();
        let here = m.get(&ip).copied().unwrap_or(0);
        let per_address_full = !ip.is_loopback() && here >= MAX_HANDSHAKES_PER_ADDRESS;
        if total >= MAX_INBOUND_HANDSHAKES || per_address_full {
            return None;
        }
        m.insert(ip, here + 1);
        Some(HandshakeSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl HandshakeSlot {
    /// The address the inbound connection came from (for the policy's
    /// per-network limits, [`super::PeerPolicy::link_up`]).
    #[must_use]
    pub fn ip(&self) -> std::net::IpAddr {
        self.ip
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut m = self.slots.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn handshake_slots_are_bounded_per_address_and_in_all() {
        let slots = Arc::new(HandshakeSlots::default());
        let ip = |a: u8, b: u8| std::net::IpAddr::from([10, 0, a, b]);
        // One address gets its share, no more.
        let mine: Vec<_> = (0..MAX_HANDSHAKES_PER_ADDRESS)
            .map(|_| slots.take(ip(0, 1)).unwrap())
            .collect();
        assert!(slots.take(ip(0, 1)).is_none());
        // Others still get in, up to the total.
        let mut others = Vec::new();
        for i in 0..(MAX_INBOUND_HANDSHAKES - MAX_HANDSHAKES_PER_ADDRESS) {
            let i = u8::try_from(i).unwrap();
            others.push(slots.take(ip(1, i)).unwrap());
        }
        assert!(slots.take(ip(2, 1)).is_none(), "over the total");
        // A finished handshake gives its slot back.
        drop(mine);
        assert!(slots.take(ip(0, 1)).is_some());
        drop(others);
        // Loopback has no per-address share (testnets), only the total.
        let lo = std::net::IpAddr::from([127, 0, 0, 1]);
        let held: Vec<_> = (0..MAX_INBOUND_HANDSHAKES)
            .map(|_| slots.take(lo).unwrap())
            .collect();
        assert!(slots.take(lo).is_none());
        drop(held);
        assert!(slots.lock().is_empty());
    }
}
