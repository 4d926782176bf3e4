//! The `eclipse` attack on a small opennet: what the admission rules of
//! issue 15 guarantee against k attackers that dial one victim, behave
//! well, then turn into black holes.
#![allow(clippy::unwrap_used)]

use lichen_sim::{run, Attack, SimConfig, Topology};

/// The attack lasts 600 s of virtual time (`HORIZON` in
/// `sim/src/attack/eclipse.rs`); the simulator's `replace_interval` is
/// 100 s (a real node's 5 min, scaled like its other timers).
const HORIZON_S: u64 = 600;
const REPLACE_S: u64 = 100;

fn eclipse(attackers: usize) -> SimConfig {
    SimConfig {
        nodes: 300,
        degree: 20,
        topology: Topology::Opennet,
        inserts: 200,
        requests: 50,
        seed: 3,
        attack: Some(Attack::Eclipse),
        attackers: Some(attackers),
        ..SimConfig::default()
    }
}

#[test]
fn more_attackers_than_peer_slots_cannot_eclipse_a_victim_faster_than_replacement_allows() {
    // k = 30 attackers against a peer limit of 20, each dialing the
    // victim every second and announcing toward it every 10 s.
    let r = run(&eclipse(30));
    let a = r.attack.as_ref().unwrap();
    let table = r.to_table();
    assert_eq!(a.name, "eclipse");
    // The victim drops an established peer at most once per
    // replace_interval, however hard the attackers knock.
    let drops = a.replacements.unwrap();
    assert!(drops <= HORIZON_S / REPLACE_S + 1, "{drops} drops\n{table}");
    // Capturing all 20 slots would take 20 replacements (2000 s) unless
    // the victim's honest peers all left it on their own: not within the
    // attack.
    assert_eq!(a.time_to_capture_s, None, "{table}");
    assert!(a.precision < 1.0, "{table}");
    // The victim kept finding data while the attackers behaved.
    assert!(a.success_before_turn.unwrap() > 0.5, "{table}");
}

#[test]
fn fewer_attackers_than_peer_slots_never_capture() {
    let r = run(&eclipse(10));
    let a = r.attack.as_ref().unwrap();
    assert_eq!(a.time_to_capture_s, None, "{}", r.to_table());
    // The eclipse fields are in the JSON.
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"replacements\""), "{json}");
}

/// `eclipse-return`: attackers that leave the victim and dial back later,
/// as nodes it remembers, are held to the same bounds: a remembered node
/// is let back in only while the victim has room (or on an invitation,
/// as any dialer), never by dropping a peer of its own accord.
#[test]
fn attackers_that_leave_and_come_back_are_held_to_the_same_bounds() {
    let cfg = SimConfig {
        attack: Some(Attack::EclipseReturn),
        ..eclipse(30)
    };
    let r = run(&cfg);
    let a = r.attack.as_ref().unwrap();
    let table = r.to_table();
    assert_eq!(a.name, "eclipse-return");
    let drops = a.replacements.unwrap();
    assert!(drops <= HORIZON_S / REPLACE_S + 1, "{drops} drops\n{table}");
    assert_eq!(a.time_to_capture_s, None, "{table}");
    assert!(a.precision < 1.0, "{table}");
    assert!(a.success_before_turn.unwrap() > 0.5, "{table}");
}
