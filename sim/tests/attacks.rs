//! The attacks of the suite that a node's own behaviour must defeat, each
//! at its base rate in a small network (300 nodes, a tenth of them
//! colluding). The margin is three standard deviations of the attack's
//! precision if it had no more than the base rate to go on (a binomial of
//! its accusations), plus one accusation; the leaks these attacks found
//! each have a routing unit test that fails before the fix (named below).
#![allow(clippy::unwrap_used)]

use lichen_sim::{run, Attack, AttackReport, SimConfig, Topology};

fn small(topology: Topology, attack: Attack) -> SimConfig {
    SimConfig {
        nodes: 300,
        degree: 12,
        topology,
        inserts: 100,
        requests: 600,
        seed: 5,
        adversary: 0.1,
        warmup_requests: Some(3000),
        attack: Some(attack),
        downloaders: 40,
        ..SimConfig::default()
    }
}

/// The attack's right accusations, over the runs `reports` pool, are
/// within the margin of what its base rate gives each run.
fn at_base_rate(reports: &[AttackReport]) {
    let (mut n, mut expected, mut var, mut right) = (0.0, 0.0, 0.0, 0.0);
    for a in reports {
        let (k, p) = (a.accusations as f64, a.base_rate);
        n += k;
        expected += p * k;
        var += k * p * (1.0 - p);
        right += a.precision * k;
    }
    let margin = 3.0 * var.sqrt() + 1.0;
    assert!(n >= 10.0, "too few accusations to judge: {reports:?}");
    assert!(
        right <= expected + margin,
        "above its base rate: {reports:?}"
    );
}

/// `fold`: colluders offer themselves after every block they send and
/// note who dials them next; the requester never does
/// (`routing/tests/peers.rs`: `own_requests_never_fold`). How many dials
/// they see depends on the grown topology (9 to 59 accusations over
/// seeds 5 to 7), so three runs are pooled.
#[test]
fn fold_is_at_its_base_rate() {
    let reports: Vec<AttackReport> = [5, 6, 7]
        .into_iter()
        .map(|seed| {
            let mut c = small(Topology::Opennet, Attack::Fold);
            c.seed = seed;
            let a = run(&c).attack.unwrap();
            assert_eq!(a.name, "fold");
            a
        })
        .collect();
    at_base_rate(&reports);
}

/// `traceback`: colluders ask nodes about the ids they saw and walk back
/// through those that saw it; above the caching level every hop forwards
/// under a fresh id, so the walk never reaches the originator from
/// beyond its first hop (`routing/tests/requests.rs`:
/// `an_id_seen_past_the_first_hop_was_never_seen_by_the_originator`).
#[test]
fn traceback_is_at_its_base_rate_on_opennet_and_darknet() {
    for topology in [Topology::Opennet, Topology::Darknet] {
        let r = run(&small(topology, Attack::Traceback));
        let a = r.attack.unwrap();
        assert_eq!(a.name, "traceback");
        at_base_rate(std::slice::from_ref(&a));
    }
}

/// `probe`: the victim's neighbour asks it for what its user just
/// fetched, inserted or failed to find, against the same done at the same
/// moment by another node's user. What the user inserted is answered like
/// anyone's. What it fetched or missed is not always: the request left a
/// cached block or a failure-table entry at the hops from the third on
/// (where the HTL first reaches the caching level), which a probe through
/// the victim meets sooner than one for another node's key. That is the
/// HTL design's limit, measured in `docs/anonymity.md`; tunnels (issue 16)
/// are its answer. The leak this attack found is closed: the victim's
/// first hop remembered its user's misses and answered them at once, so
/// the miss was picked out 61 times of 70 (0.87); now a miss is
/// remembered by the same HTL rule as a block is cached
/// (`routing/tests/requests.rs`:
/// `failures_of_requests_received_above_the_caching_level_are_not_remembered`).
///
/// The miss share left by the HTL rule depends on the topology (0.61 at
/// seed 5 before the opennet admission rules, 0.66 to 0.82 over seeds 1
/// to 8 after, 0.77 pooled), so one run of about 70 misses cannot tell
/// it from the leak's 0.87 with a fixed bound. The runs of
/// [`PROBE_SEEDS`] are pooled (about 590 misses) and the share must be
/// below the leak's by three standard deviations of a binomial at the
/// leak's rate (0.83). With the leak put back (failures of all forwarded
/// requests remembered) the pooled share is 0.93 (564 of 605).
#[test]
fn probe_learns_nothing_from_inserts_and_misses_are_not_answered_next_to_the_user() {
    let (mut miss_n, mut miss_right) = (0.0, 0.0);
    for seed in PROBE_SEEDS {
        let mut c = small(Topology::Opennet, Attack::Probe);
        c.downloaders = 80;
        c.seed = seed;
        let r = run(&c);
        let a = r.attack.unwrap();
        assert_eq!(a.name, "probe");
        assert!((a.base_rate - 0.5).abs() < 1e-9, "{a:?}");
        let case = |name: &str| {
            let [n, right] = a.cases[name];
            (n as f64, right as f64)
        };
        let (n, right) = case("insert");
        assert!(n >= 60.0, "{a:?}");
        assert!(
            right <= n / 2.0 + 3.0 * (n / 4.0).sqrt() + 1.0,
            "inserts: {a:?}"
        );
        let (n, right) = case("miss");
        miss_n += n;
        miss_right += right;
    }
    let bound = LEAK_MISS_SHARE - 3.0 * (LEAK_MISS_SHARE * (1.0 - LEAK_MISS_SHARE) / miss_n).sqrt();
    assert!(
        miss_right / miss_n <= bound,
        "misses: {miss_right} of {miss_n}, bound {bound}"
    );
}

/// The seeds whose `probe` runs are pooled.
const PROBE_SEEDS: [u64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

/// The share of misses the `probe` picked out while the first hop
/// remembered its user's misses (61 of 70).
const LEAK_MISS_SHARE: f64 = 0.87;

/// The `correlation` attack's small network: 300 nodes, a tenth
/// colluding, 20 downloads of 64-block files through 2-hop tunnels, the
/// node's default peer limit (20): with 12, a third of honest builds meet
/// a guard with fewer than 9 peers and are refused under the minimum list
/// length.
fn correlation(hops: u8, lying: bool, min_peer_list: usize) -> AttackReport {
    let mut c = small(Topology::Opennet, Attack::Correlation);
    c.degree = 20;
    c.tunnel_hops = hops;
    c.lying_lists = lying;
    c.min_peer_list = min_peer_list;
    c.files = 5;
    c.file_blocks = 64;
    c.downloaders = 100;
    let a = run(&c).attack.unwrap();
    assert_eq!(a.name, "correlation");
    a
}

/// `correlation`: a colluding guard and exit link their circuits by cell
/// timing alone and name the user; when the colluders lie in their
/// `Peers` lists (naming only each other) and there is no minimum list
/// length, a colluding guard picks the exit and captures far more
/// tunnels than honest lists allow; the minimum (8, the default) makes
/// it pad with honest peers and takes most of that gain away, at little
/// cost to honest builds; without tunnels there is nothing to correlate.
/// Measured at 2,000 nodes in `docs/anonymity.md` ("End-to-end
/// correlation").
#[test]
fn correlation_links_guard_and_exit_and_lying_lists_raise_capture() {
    let honest = correlation(2, false, 8);
    let lying = correlation(2, true, 0);
    let padded = correlation(2, true, 8);
    let (h, l, p) = (
        honest.correlation.clone().unwrap(),
        lying.correlation.clone().unwrap(),
        padded.correlation.clone().unwrap(),
    );
    assert!(
        h.tunnels >= 200 && l.tunnels >= 200 && p.tunnels >= 200,
        "{h:?} {l:?} {p:?}"
    );
    // Honest lists: the exit is an independent draw from the guard's
    // peers, so few of the colluding guards' tunnels end at a colluder.
    assert!(h.capture_rate <= h.guard_rate / 3.0, "{h:?}");
    // Lying lists, no minimum: most colluding guards have a colluding
    // peer to name.
    assert_eq!(l.short_lists, 0, "{l:?}");
    assert!(
        l.capture_rate >= 3.0 * h.capture_rate.max(0.002),
        "{h:?} {l:?}"
    );
    assert!(l.capture_rate >= l.guard_rate / 3.0, "{l:?}");
    // Lying lists padded to the minimum: the gain mostly gone.
    assert!(p.capture_rate <= l.capture_rate / 2.0, "{l:?} {p:?}");
    // Honest builds refused for a short list: few, not most (none of
    // 706 here since under-connected nodes go on announcing quickly
    // while they gain peers; 296 of 1,604 before, where degrees were
    // lower than at 2,000 nodes: 4 % there, docs/anonymity.md).
    assert!(h.short_lists * 4 <= h.tunnels_opened, "{h:?}");
    // The timing link finds the captured tunnels' requests, and is right.
    assert!(lying.accusations >= 50, "{lying:?}");
    assert!(lying.precision >= 0.9, "{lying:?}");
    assert!(lying.recall >= 0.9, "{lying:?}");
    assert!(lying.precision > 5.0 * lying.base_rate, "{lying:?}");
    assert!(l.downloads_caught >= 1, "{l:?}");
    // Without tunnels there are no circuits to link.
    let none = correlation(0, true, 8);
    let n = none.correlation.clone().unwrap();
    assert_eq!(n.tunnels, 0, "{n:?}");
    assert_eq!(none.accusations, 0, "{none:?}");
    assert_eq!(n.downloads_caught, 0, "{n:?}");
}
