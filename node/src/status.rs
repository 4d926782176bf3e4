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

/// How the home router maps the peer port (the peer manager's
/// `portmap` task asked it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapProtocol {
    /// UPnP-IGD (`AddPortMapping`).
    Upnp,
    /// NAT-PMP (RFC 6886).
    NatPmp,
    /// PCP (RFC 6887).
    Pcp,
}

impl MapProtocol {
    /// Its `GetNode` field value (`volatile.lichen.portMapping`).
    #[must_use]
    pub(crate) fn field(self) -> &'static str {
        match self {
            MapProtocol::Upnp => "upnp",
            MapProtocol::NatPmp => "natpmp",
            MapProtocol::Pcp => "pcp",
        }
    }
}

/// A port mapping the home router granted: peers reach the peer port at
/// `external`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortMapping {
    /// Which protocol the router answered.
    pub(crate) protocol: MapProtocol,
    /// The router's external address and the port it forwards.
    pub(crate) external: std::net::SocketAddr,
}

/// `GetNode`'s `volatile.lichen.portMapping`: `upnp`, `natpmp`, `pcp`, or
/// `none` (no mapping: off, no router answered, or not behind NAT).
#[must_use]
pub(crate) fn port_mapping_field(m: Option<&PortMapping>) -> &'static str {
    m.map_or("none", |m| m.protocol.field())
}

/// The `Reachability:` line of `lichen status` for a `GetNode` field
/// value (and the public address, if peers named one, or the mapped
/// one); `mapping` is `volatile.lichen.portMapping` (`None` or `none`:
/// no port mapping).
#[must_use]
pub(crate) fn reachability_text(
    field: &str,
    public: Option<&str>,
    mapping: Option<&str>,
    keeps_ports: Option<&str>,
) -> String {
    let by = match mapping {
        Some("upnp") => Some("UPnP"),
        Some("natpmp") => Some("NAT-PMP"),
        Some("pcp") => Some("PCP"),
        _ => None,
    };
    let state = match (field, by) {
        ("reachable", None) => "reachable".to_string(),
        ("reachable", Some(by)) => format!("reachable (behind NAT, port mapped by {by})"),
        ("behind-nat", None) => {
            "behind NAT (not reachable): peers cannot dial this node; it dials out".to_string()
        }
        ("behind-nat", Some(by)) => format!(
            "behind NAT (not reachable): peers cannot dial this node although the router \
             mapped its port ({by}); it dials out"
        ),
        ("unknown", None) => "unknown (no peer has dialed back yet)".to_string(),
        ("unknown", Some(by)) => {
            format!("reachable (behind NAT, port mapped by {by}; no peer has dialed back yet)")
        }
        (other, _) => other.to_string(),
    };
    // Behind a NAT that gives each destination its own port, hole
    // punching cannot work (`volatile.lichen.natKeepsPorts`).
    let state = if field == "behind-nat" && keeps_ports == Some("false") {
        format!("{state}; its NAT changes ports (symmetric): hole punching cannot work")
    } else {
        state
    };
    match public {
        Some(ip) => format!("{state}; public address {ip}"),
        None => state,
    }
}

/// `volatile.lichen.natKeepsPorts`: whether the node's NAT kept the
/// source port of the links it dialed, as the peers' dial-backs saw them
/// (None: not known).
pub(crate) fn keeps_ports_field(kept: Option<bool>) -> Option<&'static str> {
    kept.map(|k| if k { "true" } else { "false" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_with_a_port_mapping() {
        assert_eq!(
            reachability_text("reachable", Some("198.51.100.7"), None, None),
            "reachable; public address 198.51.100.7"
        );
        assert_eq!(
            reachability_text("reachable", Some("198.51.100.7:9489"), Some("upnp"), None),
            "reachable (behind NAT, port mapped by UPnP); public address 198.51.100.7:9489"
        );
        assert_eq!(
            reachability_text("unknown", None, Some("pcp"), None),
            "reachable (behind NAT, port mapped by PCP; no peer has dialed back yet)"
        );
        assert!(reachability_text("behind-nat", None, Some("natpmp"), None)
            .starts_with("behind NAT (not reachable): peers cannot dial this node"));
        assert_eq!(
            reachability_text("unknown", None, Some("none"), None),
            "unknown (no peer has dialed back yet)"
        );
        let m = PortMapping {
            protocol: MapProtocol::NatPmp,
            external: "198.51.100.7:9489".parse().expect("address"),
        };
        assert_eq!(port_mapping_field(Some(&m)), "natpmp");
        assert_eq!(port_mapping_field(None), "none");
    }

    #[test]
    fn behind_a_symmetric_nat_the_status_says_punching_cannot_work() {
        let kept = keeps_ports_field(Some(true));
        let changed = keeps_ports_field(Some(false));
        assert_eq!(keeps_ports_field(None), None);
        assert_eq!(
            reachability_text("behind-nat", Some("198.51.100.7"), None, changed),
            "behind NAT (not reachable): peers cannot dial this node; it dials out; \
             its NAT changes ports (symmetric): hole punching cannot work; public address \
             198.51.100.7"
        );
        assert!(!reachability_text("behind-nat", None, None, kept).contains("symmetric"));
        assert!(!reachability_text("reachable", None, None, changed).contains("symmetric"));
    }

    #[test]
    fn fraction_range() {
        assert!(location_fraction(0).abs() < f64::EPSILON);
        assert!(location_fraction(u64::MAX) < 1.0 + f64::EPSILON);
        assert!((location_fraction(1 << 63) - 0.5).abs() < 1e-12);
    }
}
