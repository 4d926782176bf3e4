//! Node status figures shared by FCP (`GetNode`) and the CLI.

/// A location (fraction of 2^64) as a number in [0, 1).
#[must_use]
pub(crate) fn location_fraction(location: u64) -> f64 {
    // u64 -> f64 loses low bits, which is fine for display.
    #[allow(clippy::cast_precision_loss)]
    let f = location as f64 / 18_446_744_073_709_551_616.0;
    f
}

/// `GetNode`'s `volatile.lichen.reachability`: what peers' dial-backs
/// said ([`lichen_link::policy::Reachability`]).
#[must_use]
pub(crate) fn reachability_field(r: lichen_link::policy::Reachable) -> &'static str {
    use lichen_link::policy::Reachable;
    match r {
        Reachable::Yes => "reachable",
        Reachable::No => "behind-nat",
        Reachable::Unknown => "unknown",
    }
}

/// The `Reachability:` line of `lichen status` for a `GetNode` field
/// value (and the public address, if peers named one).
#[must_use]
pub(crate) fn reachability_text(field: &str, public: Option<&str>) -> String {
    let state = match field {
        "reachable" => "reachable",
        "behind-nat" => "behind NAT (not reachable): peers cannot dial this node; it dials out",
        "unknown" => "unknown (no peer has dialed back yet)",
        other => other,
    };
    match public {
        Some(ip) => format!("{state}; public address {ip}"),
        None => state.to_string(),
    }
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
