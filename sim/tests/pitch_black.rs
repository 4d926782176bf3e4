//! The `pitch-black` attack on a small darknet: without the defence the
//! liars crowd the honest nodes into their arcs and requests fail; with
//! it, success stays within five points of an unattacked darknet.
#![allow(clippy::unwrap_used)]

use lichen_sim::{run, Adversary, Attack, PitchBlackReport, SimConfig, Topology};

fn pitch(adversary: f64, defence: bool) -> PitchBlackReport {
    let cfg = SimConfig {
        nodes: 300,
        degree: 12,
        topology: Topology::Darknet,
        inserts: 200,
        requests: 400,
        seed: 3,
        adversary,
        adversary_kind: Adversary::LieSwap,
        attack: Some(Attack::PitchBlack),
        pitch_defence: defence,
        days: 3,
        ..SimConfig::default()
    };
    let r = run(&cfg);
    r.attack.unwrap().pitch_black.unwrap()
}

#[test]
fn liars_crowd_honest_nodes_and_the_defence_keeps_success() {
    let calm = pitch(0.0, true);
    let open = pitch(0.02, false);
    let held = pitch(0.02, true);
    let last = |p: &PitchBlackReport| p.days.last().cloned().unwrap();
    let text = format!("unattacked {calm:#?}\nno defence {open:#?}\ndefence {held:#?}");
    // Day 0 is before the attack: the three networks look alike (the one
    // without the stretch limit, sorted by the same swaps, found 84 of
    // 100 on this seed once per-hop ids and the eclipse rules were in).
    for p in [&calm, &open, &held] {
        assert!(p.days[0].success_rate >= 0.8, "{text}");
        assert!(p.days[0].captured <= 0.1, "{text}");
    }
    assert_eq!(open.attack_points, 6, "{text}");
    // Without the defence: nearly every honest node sits in a liar's arc
    // (0.6 % of the circle), half of them in a few hundredths of it, and
    // requests for yesterday's data fail far more often.
    assert!(last(&open).captured >= 0.9, "{text}");
    assert!(
        last(&open).half_arc <= open.days[0].half_arc / 4.0,
        "{text}"
    );
    assert!(
        open.mean_success_attacked <= calm.mean_success_attacked - 0.10,
        "{text}"
    );
    // With it: success within five points of the unattacked darknet, and
    // far fewer nodes captured.
    assert!(
        held.mean_success_attacked >= calm.mean_success_attacked - 0.05,
        "{text}"
    );
    assert!(last(&held).captured <= last(&open).captured / 2.0, "{text}");
}
