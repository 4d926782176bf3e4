//! Locations on the routing circle and routing keys.

use serde::{Deserialize, Serialize};

/// A position on the unit circle, as a 64-bit fixed-point fraction:
/// `Location(x)` stands for `x / 2^64`. Arithmetic wraps, so the circle has
/// no seam and every value is valid (hostile input cannot produce a bad one).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Location(pub u64);

impl Location {
    /// The shortest way round the circle between two locations, in units of
    /// `2^-64` of the circumference. At most `2^63` (half the circle).
    pub fn distance(self, other: Location) -> u64 {
        let d = self.0.wrapping_sub(other.0);
        d.min(d.wrapping_neg())
    }

    /// The link-length class of a link from here to `other`: class k
    /// holds distances in [2^-(k+1), 2^-k) of the circle (1: the longest,
    /// up to half of it; at most 63).
    #[must_use]
    pub fn length_class(self, other: Location) -> usize {
        self.distance(other).leading_zeros().clamp(1, 63) as usize
    }

    /// A routing key whose location is this one (the rest zero): what an
    /// announcement is routed toward.
    #[must_use]
    pub fn as_key(self) -> Key {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&self.0.to_be_bytes());
        Key(k)
    }

    /// The location of a routing key: its first eight bytes, big-endian.
    /// Routing keys are SHA-256 outputs, so key locations are uniform.
    pub fn of_key(key: &Key) -> Location {
        let mut b = [0u8; 8];
        b.copy_from_slice(&key.0[..8]);
        Location(u64::from_be_bytes(b))
    }

    /// A uniformly random location.
    pub fn random(rng: &mut impl rand::RngCore) -> Location {
        Location(rng.next_u64())
    }

    /// The location as a fraction in `[0, 1)`, for display and statistics.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 18_446_744_073_709_551_616.0
    }

    /// A distance (as returned by [`Location::distance`]) as a fraction of
    /// the circumference, in `[0, 0.5]`.
    pub fn distance_f64(d: u64) -> f64 {
        d as f64 / 18_446_744_073_709_551_616.0
    }
}

/// A 32-byte routing key (SHA-256 of a CHK block, or the SSK routing hash).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl Key {
    /// The key's location on the circle.
    pub fn location(&self) -> Location {
        Location::of_key(self)
    }
}

/// Keys are not secret, but they identify content; print only a prefix so
/// debug logs do not carry full keys around.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A routing key names what someone fetches: never in a log.
        lichen_safelog::redacted_debug(f, "Key")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn distance_wraps() {
        assert_eq!(Location(0).distance(Location(u64::MAX)), 1);
        assert_eq!(Location(u64::MAX).distance(Location(0)), 1);
        assert_eq!(Location(0).distance(Location(1 << 63)), 1 << 63);
        assert_eq!(Location(5).distance(Location(5)), 0);
    }

    #[test]
    fn key_location_is_prefix() {
        let mut k = [0u8; 32];
        k[0] = 0x80;
        assert_eq!(Key(k).location(), Location(1 << 63));
        assert!((Key(k).location().as_f64() - 0.5).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn distance_symmetric_bounded(a: u64, b: u64, c: u64) {
            let (a, b, c) = (Location(a), Location(b), Location(c));
            prop_assert_eq!(a.distance(b), b.distance(a));
            prop_assert!(a.distance(b) <= 1 << 63);
            // Triangle inequality (in u128 to avoid overflow).
            prop_assert!(a.distance(c) as u128 <= a.distance(b) as u128 + b.distance(c) as u128);
        }
    }
}
