//! Node status figures shared by FCP (`GetNode`) and the CLI.

/// A location (fraction of 2^64) as a number in [0, 1).
#[must_use]
pub(crate) fn location_fraction(location: u64) -> f64 {
    // u64 -> f64 loses low bits, which is fine for display.
    #[allow(clippy::cast_precision_loss)]
    let f = location as f64 / 18_446_744_073_709_551_616.0;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_range() {
        assert!(location_fraction(0).abs() < f64::EPSILON);
        assert!(location_fraction(u64::MAX) < 1.0 + f64::EPSILON);
        assert!((location_fraction(1 << 63) - 0.5).abs() < 1e-12);
    }
}
