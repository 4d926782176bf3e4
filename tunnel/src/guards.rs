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

use rand::seq::SliceRandom;
use rand::Rng;

/// How many guards a node keeps.
pub const GUARDS: usize = 2;
/// A guard gone this long is replaced (ms).
pub const GONE_MS: u64 = 24 * 3_600_000;
/// A guard is replaced after this long even if it behaves (ms).
pub const LIFETIME_MS: u64 = 60 * 24 * 3_600_000;
/// Tunnels tried through a guard before its success rate is judged.
pub const BIAS_MIN_ATTEMPTS: u32 = 20;
/// Below this fraction of built tunnels a guard is dropped.
pub const BIAS_MIN_SUCCESS: f64 = 0.5;

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
}

/// The guard set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guards {
    guards: Vec<Guard>,
}

impl Guards {
    /// A set restored from what [`Guards::list`] returned.
    #[must_use]
    pub fn from_list(guards: Vec<Guard>) -> Self {
        Guards { guards }
    }

    /// The guards, for saving.
    #[must_use]
    pub fn list(&self) -> &[Guard] {
        &self.guards
    }

    /// Bring the set up to date with the peers connected now (on a
    /// darknet the caller passes friends only): note who is here, drop
    /// guards gone too long, retired or failing, and fill the set from
    /// the connected peers at random. Returns who was dropped and why.
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
        for key in fresh
            .into_iter()
            .take(GUARDS.saturating_sub(self.guards.len()))
        {
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

    /// A guard connected now, at random, for the next tunnel.
    pub fn pick<R: Rng>(&self, rng: &mut R, connected: &[[u8; 32]]) -> Option<[u8; 32]> {
        let here: Vec<[u8; 32]> = self
            .guards
            .iter()
            .filter(|g| connected.contains(&g.key))
            .map(|g| g.key)
            .collect();
        here.choose(rng).copied()
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
            let here: Vec<[u8; 32]> = peers
                .iter()
                .filter(|k| **k != first[0] || h % 40 < 20)
                .copied()
                .collect();
            assert!(g.refresh(now, &mut rng, &here).is_empty(), "hour {h}");
        }
        let still: Vec<[u8; 32]> = g.list().iter().map(|x| x.key).collect();
        assert_eq!(still, first);
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
            assert_eq!(g.pick(&mut rng, &here), Some(only));
        }
        assert_eq!(g.pick(&mut rng, &[]), None);
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
