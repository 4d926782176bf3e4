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

/// What the home page's alerts are made from.
#[derive(Debug, Default, Clone)]
pub(crate) struct Facts {
    /// The network is started (a node opened without one has no alerts
    /// about peers).
    pub(crate) network: bool,
    /// Connected peers.
    pub(crate) peers: usize,
    /// Seconds since the node started.
    pub(crate) uptime_s: u64,
    /// What the peers' dial-backs said.
    pub(crate) reachable: Option<lichen_link::policy::Reachable>,
    /// (name, bytes used, budget) per store space.
    pub(crate) spaces: Vec<(&'static str, u64, u64)>,
    /// Persistent requests of the global queue that failed.
    pub(crate) failed_requests: usize,
    /// Inserts made without peers, waiting to be pushed, and their blocks.
    pub(crate) waiting_inserts: usize,
    /// See [`Facts::waiting_inserts`].
    pub(crate) waiting_blocks: u64,
}

/// A node without a peer this long after its start is worth an alert
/// (joining takes seconds on opennet).
pub(crate) const NO_PEERS_AFTER_S: u64 = 120;

/// A store space this full (percent of its budget) is worth an alert.
pub(crate) const NEARLY_FULL_PERCENT: u64 = 90;

/// What the user should act on, most pressing first, as sentences.
#[must_use]
pub(crate) fn alerts(f: &Facts) -> Vec<String> {
    let mut a = Vec::new();
    if f.network && f.peers == 0 && f.uptime_s >= NO_PEERS_AFTER_S {
        a.push(
            "No peers: the node can neither fetch nor insert. On opennet it finds peers \
             through its seed nodes (check the network connection); a friends-only node \
             needs a friend added by invitation."
                .to_owned(),
        );
    }
    if f.network && f.reachable == Some(lichen_link::policy::Reachable::No) {
        a.push(
            "Not reachable: peers cannot dial this node (NAT or a firewall without a port \
             mapping). It still works by dialing out, with fewer peers; forwarding the peer \
             port on the router helps."
                .to_owned(),
        );
    }
    for (name, used, budget) in &f.spaces {
        if *budget > 0 && used.saturating_mul(100) >= budget.saturating_mul(NEARLY_FULL_PERCENT) {
            a.push(format!(
                "The {name} is {}% full: the least useful blocks make room for new ones; \
                 a larger size can be set in Settings.",
                used.saturating_mul(100) / budget
            ));
        }
    }
    if f.failed_requests > 0 {
        a.push(format!(
            "{} persistent request{} failed (see the queue below).",
            f.failed_requests,
            if f.failed_requests == 1 { "" } else { "s" }
        ));
    }
    if f.waiting_inserts > 0 {
        a.push(format!(
            "{} insert{} made without peers {} waiting to be pushed into the network \
             ({} blocks): they are stored here only until the node has peers.",
            f.waiting_inserts,
            if f.waiting_inserts == 1 { "" } else { "s" },
            if f.waiting_inserts == 1 { "is" } else { "are" },
            f.waiting_blocks
        ));
    }
    a
}

/// The node's traffic over the last hour: the links' byte totals
/// sampled every [`TrafficHistory::EVERY_MS`] (the home page's graph).
#[derive(Debug, Default)]
pub(crate) struct TrafficHistory {
    /// (ms since the epoch, bytes sent, bytes received so far), oldest
    /// first, at most [`TrafficHistory::KEEP`].
    samples: std::collections::VecDeque<(u64, u64, u64)>,
}

impl TrafficHistory {
    /// A sample a minute.
    pub(crate) const EVERY_MS: u64 = 60_000;
    /// An hour of intervals.
    pub(crate) const KEEP: usize = 61;

    /// The totals at `now_ms`.
    pub(crate) fn record(&mut self, now_ms: u64, sent: u64, received: u64) {
        if self.samples.back().is_some_and(|&(t, _, _)| t >= now_ms) {
            return;
        }
        self.samples.push_back((now_ms, sent, received));
        while self.samples.len() > Self::KEEP {
            self.samples.pop_front();
        }
    }

    /// Each interval's mean rates, oldest first: (seconds before the last
    /// sample its end is, bytes a second sent, received).
    pub(crate) fn rates(&self) -> Vec<(u64, u64, u64)> {
        let last = self.samples.back().map_or(0, |s| s.0);
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(&(t0, s0, r0), &(t1, s1, r1))| {
                let secs = (t1 - t0).max(1).div_ceil(1000);
                (
                    (last - t1) / 1000,
                    s1.saturating_sub(s0) / secs,
                    r1.saturating_sub(r0) / secs,
                )
            })
            .collect()
    }
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

    #[test]
    fn alerts_name_what_to_act_on_and_nothing_else() {
        use lichen_link::policy::Reachable;
        let healthy = Facts {
            network: true,
            peers: 12,
            uptime_s: 3600,
            reachable: Some(Reachable::Yes),
            spaces: vec![("cache", 50, 100), ("long-term store", 89, 100)],
            ..Facts::default()
        };
        assert!(alerts(&healthy).is_empty());
        // Each fact alone raises its alert.
        let cases: Vec<(Facts, &str)> = vec![
            (
                Facts {
                    peers: 0,
                    ..healthy.clone()
                },
                "No peers",
            ),
            (
                Facts {
                    reachable: Some(Reachable::No),
                    ..healthy.clone()
                },
                "Not reachable",
            ),
            (
                Facts {
                    spaces: vec![("client cache", 95, 100)],
                    ..healthy.clone()
                },
                "client cache is 95% full",
            ),
            (
                Facts {
                    failed_requests: 2,
                    ..healthy.clone()
                },
                "2 persistent requests failed",
            ),
            (
                Facts {
                    waiting_inserts: 1,
                    waiting_blocks: 7,
                    ..healthy.clone()
                },
                "1 insert made without peers is waiting",
            ),
        ];
        for (f, says) in cases {
            let a = alerts(&f);
            assert_eq!(a.len(), 1, "{a:?}");
            assert!(a[0].contains(says), "{a:?}");
        }
        // No peers just after the start, or without a network: no alert.
        let starting = Facts {
            peers: 0,
            uptime_s: 5,
            ..healthy.clone()
        };
        assert!(alerts(&starting).is_empty());
        let offline = Facts {
            network: false,
            peers: 0,
            reachable: Some(Reachable::No),
            ..healthy
        };
        assert!(alerts(&offline).is_empty());
    }

    #[test]
    fn traffic_history_keeps_an_hour_of_rates() {
        let mut h = TrafficHistory::default();
        assert!(h.rates().is_empty());
        // 90 minutes at 1 KiB/s sent, 2 KiB/s received, then a minute idle.
        for m in 0..=90u64 {
            h.record(m * 60_000, m * 60 * 1024, m * 60 * 2048);
        }
        h.record(91 * 60_000, 90 * 60 * 1024, 90 * 60 * 2048);
        // A sample at or before the last is ignored.
        h.record(91 * 60_000, 0, 0);
        let r = h.rates();
        assert_eq!(r.len(), TrafficHistory::KEEP - 1);
        assert_eq!(r[0], (59 * 60, 1024, 2048));
        assert_eq!(r[r.len() - 2], (60, 1024, 2048));
        assert_eq!(r[r.len() - 1], (0, 0, 0));
    }
}
