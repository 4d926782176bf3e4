//! Guards: the small, long-lived set of peers a node's tunnels start at.
//!
//! Drawing the first hop afresh for every tunnel would let every hostile
//! peer be some tunnel's first hop sooner or later; with guards a node
//! meets a hostile first hop with probability about F once, for months,
//! not once per tunnel (Tor's entry guards, for the same reason). A guard
//! leaves the set only when it has been gone for a day, when it has served
//! its lifetime, or when too many tunnels through it fail (Tor's path-bias
//! check: a guard that kills the tunnels whose exit it does not control
//! would otherwise push its user toward the exits it does).
//!
//! While fewer than [`GUARDS`] of the guards are connected, connected
//! peers are added as backups (at most [`MAX_GUARDS`] guards in all), as
//! Tor falls back to further guards of its sample when its primary ones
//! are unreachable: without them a node whose guards left (on opennet,
//! peers are replaced every few minutes, and a newcomer's first peers are
//! the seeds) could build no tunnel, and every request of its user would
//! wait for one and fail. Tunnels start at the earliest-added connected
//! guards, so the first guards are used again as soon as they are back;
//! a backup becomes a first guard only when an earlier one leaves the set.
//!
//! A guard that is connected but does not do its part of a build (no
//! answer to the `Create`, a refusal, or a peer list with no usable next
//! hop) is passed over for a while ([`Guards::first_hop_failed`]: one
//! minute, doubling with each failure in a row, up to an hour), as Tor
//! marks a guard it cannot reach and moves on to the next one. Only
//! failures at the first hop count: a later hop cannot make its
//! originator's guard look bad. Without this a newcomer whose first guard
//! would not relay sent half its builds into a 30-second timeout, and a
//! request could wait minutes for a tunnel.

use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;

/// How many guards tunnels start at (the earliest-added connected ones).
pub const GUARDS: usize = 2;
/// Most guards kept, backups included.
pub const MAX_GUARDS: usize = 8;
/// A guard gone this long is replaced (ms).
pub const GONE_MS: u64 = 24 * 3_600_000;
/// A guard is replaced after this long even if it behaves (ms).
pub const LIFETIME_MS: u64 = 60 * 24 * 3_600_000;
/// Tunnels tried through a guard before its success rate is judged.
pub const BIAS_MIN_ATTEMPTS: u32 = 20;
/// Below this fraction of built tunnels a guard is dropped.
pub const BIAS_MIN_SUCCESS: f64 = 0.5;
/// A guard that failed a build at the first hop is passed over this long
/// (ms), doubled for each further failure in a row ...
pub const RETRY_MS: u64 = 60_000;
/// ... up to this (ms).
pub const RETRY_MAX_MS: u64 = 3_600_000;

/// One guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// Its static key.
    pub key: [u8; 32],
    /// When it became a guard (ms).
    pub added: u64,
    /// When it was last connected (ms).
    pub seen: u64,
    /// Tunnels started through it since it became a guard.
    pub attempts: u32,
    /// Of those, the ones that were built.
    pub built: u32,
}

/// Why a guard left the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Gone for [`GONE_MS`].
    Gone,
    /// Served [`LIFETIME_MS`].
    Retired,
    /// Too few tunnels through it were built.
    PathBias,
    /// Away, and its place was needed for a connected backup
    /// ([`MAX_GUARDS`]).
    Displaced,
}

/// The guard set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guards {
    guards: Vec<Guard>,
    /// Guards passed over after first-hop failures: failures in a row,
    /// and until when (ms). Not saved: a restart tries them again.
    failing: BTreeMap<[u8; 32], (u32, u64)>,
}

impl Guards {
    /// A set restored from what [`Guards::list`] returned.
    #[must_use]
    pub fn from_list(guards: Vec<Guard>) -> Self {
        Guards {
            guards,
            failing: BTreeMap::new(),
        }
    }

    /// The guards, for saving.
    #[must_use]
    pub fn list(&self) -> &[Guard] {
        &self.guards
    }

    /// Bring the set up to date with the peers connected now (on a
    /// darknet the caller passes friends only): note who is here, drop
    /// guards gone too long, retired or failing, and fill the set from
    /// the connected peers at random until [`GUARDS`] guards are
    /// connected (at most [`MAX_GUARDS`] in all; the one away longest
    /// makes room). Returns who was dropped and why.
    pub fn refresh<R: Rng>(
        &mut self,
        now: u64,
        rng: &mut R,
        connected: &[[u8; 32]],
    ) -> Vec<([u8; 32], Dropped)> {
        let mut dropped = Vec::new();
        self.guards.retain(|g| {
            let why = if !connected.contains(&g.key) && now.saturating_sub(g.seen) > GONE_MS {
                Some(Dropped::Gone)
            } else if now.saturating_sub(g.added) > LIFETIME_MS {
                Some(Dropped::Retired)
            } else if g.attempts >= BIAS_MIN_ATTEMPTS
                && f64::from(g.built) < BIAS_MIN_SUCCESS * f64::from(g.attempts)
            {
                Some(Dropped::PathBias)
            } else {
                None
            };
            if let Some(w) = why {
                dropped.push((g.key, w));
            }
            why.is_none()
        });
        for g in &mut self.guards {
            if connected.contains(&g.key) {
                g.seen = now;
            }
        }
        let mut fresh: Vec<[u8; 32]> = connected
            .iter()
            .filter(|k| {
                !self.guards.iter().any(|g| g.key == **k) && !dropped.iter().any(|(d, _)| d == *k)
            })
            .copied()
            .collect();
        fresh.shuffle(rng);
        self.failing
            .retain(|k, _| self.guards.iter().any(|g| g.key == *k));
        let here = self.primary(now, connected).len();
        for key in fresh.into_iter().take(GUARDS.saturating_sub(here)) {
            if self.guards.len() >= MAX_GUARDS {
                let away = self
                    .guards
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| !connected.contains(&g.key))
                    .min_by_key(|(_, g)| g.seen)
                    .map(|(i, _)| i);
                let Some(i) = away else { break };
                dropped.push((self.guards.remove(i).key, Dropped::Displaced));
            }
            self.guards.push(Guard {
                key,
                added: now,
                seen: now,
                attempts: 0,
                built: 0,
            });
        }
        dropped
    }

    /// For the next tunnel: one of the [`GUARDS`] earliest-added guards
    /// connected now and not passed over, at random; when every connected
    /// guard is passed over, the one whose wait ends first.
    pub fn pick<R: Rng>(&self, now: u64, rng: &mut R, connected: &[[u8; 32]]) -> Option<[u8; 32]> {
        self.primary(now, connected)
            .choose(rng)
            .copied()
            .or_else(|| {
                self.guards
                    .iter()
                    .filter(|g| connected.contains(&g.key))
                    .min_by_key(|g| self.failing.get(&g.key).map_or(0, |f| f.1))
                    .map(|g| g.key)
            })
    }

    /// The guards tunnels start at now: the [`GUARDS`] earliest-added
    /// ones connected and not passed over.
    #[must_use]
    pub fn primary(&self, now: u64, connected: &[[u8; 32]]) -> Vec<[u8; 32]> {
        self.guards
            .iter()
            .filter(|g| connected.contains(&g.key) && self.usable(now, &g.key))
            .map(|g| g.key)
            .take(GUARDS)
            .collect()
    }

    /// Whether `key` is not being passed over at `now`.
    fn usable(&self, now: u64, key: &[u8; 32]) -> bool {
        self.failing.get(key).is_none_or(|&(_, until)| now >= until)
    }

    /// A build through `key` failed at the first hop (it did not answer,
    /// refused, or named no usable next hop): pass it over for
    /// [`RETRY_MS`], doubled for each failure in a row, up to
    /// [`RETRY_MAX_MS`].
    pub fn first_hop_failed(&mut self, now: u64, key: &[u8; 32]) {
        if !self.contains(key) {
            return;
        }
        let f = self.failing.entry(*key).or_insert((0, 0));
        let wait = RETRY_MS.saturating_mul(1 << f.0.min(10)).min(RETRY_MAX_MS);
        f.0 = f.0.saturating_add(1);
        f.1 = now.saturating_add(wait);
    }

    /// A tunnel through `key` was started.
    pub fn attempted(&mut self, key: &[u8; 32]) {
        if let Some(g) = self.guards.iter_mut().find(|g| g.key == *key) {
            g.attempts = g.attempts.saturating_add(1);
        }
    }

    /// A tunnel through `key` was built.
    pub fn built(&mut self, key: &[u8; 32]) {
        if let Some(g) = self.guards.iter_mut().find(|g| g.key == *key) {
            g.built = g.built.saturating_add(1);
        }
        self.failing.remove(key);
    }

    /// Whether `key` is a guard.
    #[must_use]
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.guards.iter().any(|g| g.key == *key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn keys(n: u8) -> Vec<[u8; 32]> {
        (1..=n).map(|i| [i; 32]).collect()
    }

    #[test]
    fn guards_are_kept_while_they_come_and_go_within_a_day() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let peers = keys(20);
        let mut g = Guards::default();
        assert!(g.refresh(0, &mut rng, &peers).is_empty());
        let first: Vec<[u8; 32]> = g.list().iter().map(|x| x.key).collect();
        assert_eq!(first.len(), GUARDS);
        // Hourly for three weeks; one guard is away for 20 hours at a time.
        for h in 1..(21 * 24) {
            let now = h * 3_600_000;
            let away = h % 40 >= 20;
            let here: Vec<[u8; 32]> = peers
                .iter()
                .filter(|k| **k != first[0] || !away)
                .copied()
                .collect();
            assert!(g.refresh(now, &mut rng, &here).is_empty(), "hour {h}");
            // Tunnels start at the first guards whenever they are here.
            for _ in 0..10 {
                let p = g.pick(now, &mut rng, &here).expect("a guard");
                assert!(first.contains(&p) || away, "hour {h}");
            }
        }
        let still: Vec<[u8; 32]> = g.list().iter().map(|x| x.key).collect();
        assert_eq!(still[..GUARDS], first[..]);
        // One backup was added while the first guard was away.
        assert_eq!(still.len(), GUARDS + 1);
    }

    #[test]
    fn when_every_guard_is_away_a_connected_peer_stands_in_until_they_return() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let peers = keys(20);
        let mut g = Guards::default();
        g.refresh(0, &mut rng, &peers[..2]);
        let first: Vec<[u8; 32]> = g.list().iter().map(|x| x.key).collect();
        // An opennet newcomer's first peers (the seeds) are replaced:
        // neither guard is connected any more, though neither has been
        // gone a day. Tunnels still have a connected first hop.
        let later = &peers[2..];
        assert!(g.refresh(60_000, &mut rng, later).is_empty());
        let p = g.pick(60_000, &mut rng, later).expect("a backup guard");
        assert!(later.contains(&p));
        assert_eq!(g.list().len(), 2 * GUARDS);
        // The first guards come back: tunnels start at them again.
        for _ in 0..20 {
            assert!(first.contains(&g.pick(60_000, &mut rng, &peers).expect("a guard")));
        }
        // Peers keep changing: the set stays bounded, the guards away
        // longest make room.
        for round in 0..20u8 {
            let now = 120_000 + u64::from(round) * 60_000;
            let here = [[100 + 2 * round; 32], [101 + 2 * round; 32]];
            g.refresh(now, &mut rng, &here);
            assert!(g.list().len() <= MAX_GUARDS);
            assert!(g.pick(now, &mut rng, &here).is_some(), "round {round}");
        }
    }

    #[test]
    fn a_guard_gone_a_day_is_replaced_from_the_peers_at_random() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let peers = keys(20);
        let mut g = Guards::default();
        g.refresh(0, &mut rng, &peers);
        let gone = g.list()[0].key;
        let rest: Vec<[u8; 32]> = peers.iter().filter(|k| **k != gone).copied().collect();
        assert!(g.refresh(GONE_MS, &mut rng, &rest).is_empty());
        let d = g.refresh(GONE_MS + 1, &mut rng, &rest);
        assert_eq!(d, vec![(gone, Dropped::Gone)]);
        assert_eq!(g.list().len(), GUARDS);
        assert!(!g.contains(&gone));
    }

    #[test]
    fn a_guard_that_kills_tunnels_is_dropped_for_path_bias() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let peers = keys(20);
        let mut g = Guards::default();
        g.refresh(0, &mut rng, &peers);
        let [bad, good] = [g.list()[0].key, g.list()[1].key];
        for i in 0..BIAS_MIN_ATTEMPTS {
            g.attempted(&bad);
            g.attempted(&good);
            g.built(&good);
            // A hostile guard lets through only the tunnels whose exit
            // it controls: here 8 of 20.
            if i % 5 < 2 {
                g.built(&bad);
            }
        }
        let d = g.refresh(1, &mut rng, &peers);
        assert_eq!(d, vec![(bad, Dropped::PathBias)]);
        assert!(g.contains(&good));
        assert_eq!(g.list().len(), GUARDS);
    }

    #[test]
    fn the_first_hop_is_always_a_connected_guard() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let peers = keys(20);
        let mut g = Guards::default();
        g.refresh(0, &mut rng, &peers);
        let only = g.list()[1].key;
        let here: Vec<[u8; 32]> = peers
            .iter()
            .filter(|k| **k != g.list()[0].key)
            .copied()
            .collect();
        for _ in 0..50 {
            assert_eq!(g.pick(0, &mut rng, &here), Some(only));
        }
        assert_eq!(g.pick(0, &mut rng, &[]), None);
    }

    #[test]
    fn a_guard_failing_at_the_first_hop_is_passed_over_for_a_while() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let peers = keys(20);
        let mut g = Guards::default();
        g.refresh(0, &mut rng, &peers);
        let [bad, good] = [g.list()[0].key, g.list()[1].key];
        g.first_hop_failed(0, &bad);
        // Passed over: the other first guard, and a backup in its place.
        g.refresh(1, &mut rng, &peers);
        assert_eq!(g.list().len(), GUARDS + 1);
        let backup = g.list()[2].key;
        for _ in 0..50 {
            let p = g.pick(1, &mut rng, &peers).expect("a guard");
            assert!(p == good || p == backup, "picked the failing guard");
        }
        // After RETRY_MS it is tried again ...
        let again = (0..50)
            .filter(|_| g.pick(RETRY_MS, &mut rng, &peers) == Some(bad))
            .count();
        assert!(again > 0, "never tried again");
        // ... and a second failure in a row waits twice as long.
        g.first_hop_failed(RETRY_MS, &bad);
        for now in [RETRY_MS + 1, 3 * RETRY_MS - 1] {
            assert!((0..50).all(|_| g.pick(now, &mut rng, &peers) != Some(bad)));
        }
        assert!((0..50).any(|_| g.pick(3 * RETRY_MS, &mut rng, &peers) == Some(bad)));
        // A built tunnel clears the record.
        g.first_hop_failed(3 * RETRY_MS, &bad);
        g.built(&bad);
        assert!((0..50).any(|_| g.pick(3 * RETRY_MS, &mut rng, &peers) == Some(bad)));
        // When every connected guard is passed over, one still serves
        // (the one whose wait ends first) rather than none.
        let only = [bad, good];
        g.first_hop_failed(4 * RETRY_MS, &good);
        g.first_hop_failed(4 * RETRY_MS + 10, &bad);
        assert_eq!(g.pick(4 * RETRY_MS + 20, &mut rng, &only), Some(good));
        // Not a guard: nothing recorded.
        g.first_hop_failed(0, &[99; 32]);
        assert!(g.usable(0, &[99; 32]));
    }

    #[test]
    fn guards_retire_after_their_lifetime() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let peers = keys(20);
        let mut g = Guards::default();
        g.refresh(0, &mut rng, &peers);
        let d = g.refresh(LIFETIME_MS + 1, &mut rng, &peers);
        assert_eq!(d.len(), GUARDS);
        assert!(d.iter().all(|(_, w)| *w == Dropped::Retired));
        assert_eq!(g.list().len(), GUARDS);
    }
}
