//! Small simulations: determinism and success rates.
#![allow(clippy::unwrap_used)]

use lichen_sim::{run, Adversary, Attack, SimConfig, Topology};

fn small(topology: Topology) -> SimConfig {
    SimConfig {
        nodes: 300,
        degree: 12,
        topology,
        inserts: 100,
        requests: 400,
        seed: 11,
        ..SimConfig::default()
    }
}

#[test]
fn same_seed_same_report_byte_for_byte() {
    let mut c = small(Topology::Opennet);
    c.churn = 0.1;
    c.adversary = 0.05;
    c.loss = 0.001;
    let a = serde_json::to_string(&run(&c)).unwrap();
    let b = serde_json::to_string(&run(&c)).unwrap();
    assert_eq!(a, b);
    c.seed += 1;
    assert_ne!(a, serde_json::to_string(&run(&c)).unwrap());
}

#[test]
fn small_world_finds_inserted_keys() {
    let r = run(&small(Topology::SmallWorld));
    assert!(r.success_rate >= 0.99, "{}", r.to_table());
    assert!(r.hops_median <= 6.0, "{}", r.to_table());
    assert!(r.inserts_stored_nowhere == 0);
}

#[test]
fn opennet_grown_by_path_folding_finds_inserted_keys() {
    // Under the real peer policy (full seeds keep newcomers only as seed
    // clients; full nodes replace a peer at most once per fold interval)
    // 300 nodes need 10 x N warm-up requests to fold into shape: with the
    // default 5 x N, success is 94 % (docs/simulation.md). With the
    // eclipse rules (unasked dialers are seed clients, replacement at
    // most once per `replace_interval`) and per-hop ids it folds a little
    // slower: 96.75 % on this seed (at least 97 % before); 2,000 nodes stay at
    // 100 %.
    let mut c = small(Topology::Opennet);
    c.warmup_requests = Some(10 * c.nodes);
    let r = run(&c);
    assert!(r.success_rate >= 0.96, "{}", r.to_table());
    assert!((r.largest_component - 1.0).abs() < 1e-9, "{}", r.to_table());
}

#[test]
fn in_a_small_network_inserts_are_kept_next_to_their_key() {
    // Twenty nodes: an insert meets the key's closest nodes within its
    // first two hops, where nothing may be kept. Forked at the caching
    // level, it comes back to them (before the fork: 0.84 stores per
    // insert, 98.3 % success, hops 1.21 / 1 / 4). Under the real peer
    // policy the twenty keep 6.3 peers of 8 on average, so a few requests
    // take a third hop.
    let r = run(&SimConfig {
        nodes: 20,
        degree: 8,
        topology: Topology::Opennet,
        inserts: 100,
        requests: 300,
        seed: 6,
        ..SimConfig::default()
    });
    // Since issue 15 nothing folds or caches above HTL 16, and a small
    // network pays for it: 99.0 % success, hops mean 1.02 (100 % and
    // 0.82 before those rules, with the real peer policy).
    assert!(r.success_rate >= 0.98, "{}", r.to_table());
    assert!(r.stores_per_insert >= 1.5, "{}", r.to_table());
    assert!(r.hops_p95 <= 3.0 && r.hops_mean < 1.2, "{}", r.to_table());
}

#[test]
fn darknet_swapping_makes_routing_work() {
    let mut c = small(Topology::Darknet);
    c.swap_ms = Some(200_000);
    let r = run(&c);
    assert!(r.swaps > 0);
    assert!(r.success_rate >= 0.9, "{}", r.to_table());
}

#[test]
fn churn_and_bad_nodes_are_survived() {
    let mut c = small(Topology::SmallWorld);
    c.churn = 0.2;
    let r = run(&c);
    assert!(r.success_rate >= 0.9, "churn: {}", r.to_table());
    for kind in [Adversary::Drop, Adversary::Corrupt, Adversary::LieHtl] {
        let mut c = small(Topology::SmallWorld);
        c.adversary = 0.1;
        c.adversary_kind = kind;
        let r = run(&c);
        assert!(r.success_rate >= 0.85, "{kind:?}: {}", r.to_table());
        if kind == Adversary::Corrupt {
            assert!(r.bad_blocks_caught > 0);
        }
    }
}

#[test]
fn anonymity_is_reported_against_baselines() {
    let mut c = small(Topology::SmallWorld);
    c.adversary = 0.1;
    let r = run(&c);
    let a = r.anonymity.clone().unwrap();
    assert!(a.observations > 50);
    assert!(
        a.precision <= a.htl_model_baseline + 0.15,
        "{}",
        r.to_table()
    );
}

fn attack(kind: Attack) -> SimConfig {
    SimConfig {
        nodes: 300,
        degree: 12,
        topology: Topology::SmallWorld,
        inserts: 50,
        requests: 200,
        adversary: 0.1,
        attack: Some(kind),
        files: 4,
        file_blocks: 256,
        downloaders: 8,
        seed: 5,
        ..SimConfig::default()
    }
}

#[test]
fn the_downloader_attack_finds_downloaders_a_hostile_neighbour_sees() {
    // Before tunnels (issue 16) a downloader's own requests reach its
    // neighbours at HTL 18: an adversary neighbour that counts them per
    // file accuses some downloaders rightly. The figures are in
    // docs/anonymity.md; here the report must be complete and consistent.
    let r = run(&attack(Attack::Downloader));
    let a = r.attack.clone().expect("an attack report");
    assert_eq!(a.name, "downloader");
    assert!(a.candidates > 0 && a.reachable > 0, "{}", r.to_table());
    assert!(a.true_candidates <= a.candidates && a.accusations <= a.candidates);
    let base = a.true_candidates as f64 / a.candidates as f64;
    assert!((a.base_rate - base).abs() < 1e-3, "{}", r.to_table());
    assert!(
        a.recall > 0.0,
        "the leak the tunnels close: {}",
        r.to_table()
    );
    // Deterministic like the rest of the report.
    assert_eq!(run(&attack(Attack::Downloader)).attack, Some(a));
}

#[test]
fn the_uploader_attack_judges_each_files_inserter() {
    let r = run(&attack(Attack::Uploader));
    let a = r.attack.clone().expect("an attack report");
    assert_eq!(a.name, "uploader");
    // Four files, four uploaders: at most four true pairs.
    assert!(a.true_candidates <= 4, "{}", r.to_table());
    assert!(a.candidates > 0, "{}", r.to_table());
    assert!((0.0..=1.0).contains(&a.precision) && (0.0..=1.0).contains(&a.false_positive_rate));
}

#[test]
fn through_tunnels_downloads_and_uploads_succeed_as_often_as_direct_ones() {
    // Each uploader inserts a 256-block file at once through its tunnels:
    // more than an exit runs for one tunnel (32). Those refusals used to
    // count as failed tries, so uploads lost blocks and downloads then
    // failed (docs/tunnels.md); and a node whose guards had left could
    // build no tunnel at all.
    let mut c = attack(Attack::Downloader);
    let direct = run(&c);
    c.tunnel_hops = 2;
    let r = run(&c);
    assert!(direct.tunnels.is_none());
    let t = r.tunnels.clone().expect("tunnel counters");
    assert_eq!(t.hops, 2);
    assert!(r.success_rate >= direct.success_rate, "{}", r.to_table());
    let ok = |x: &lichen_sim::Report, k: &str| x.unmeasured.get(k).copied().unwrap_or(0);
    assert!(
        ok(&r, "fetch found") >= ok(&direct, "fetch found"),
        "{}",
        r.to_table()
    );
    assert_eq!(
        ok(&r, "insert ok"),
        ok(&direct, "insert ok"),
        "{}",
        r.to_table()
    );
    let n = |k: &str| t.counters.get(k).copied().unwrap_or(0);
    // Every own request went through a tunnel, and each answer the exits
    // ran came back once.
    assert!(n("own_sent") >= n("requests") && n("requests") > 1000);
    assert_eq!(n("exit_requests"), n("exit_answered") + n("exit_orphaned"));
    assert!(n("built") > 0);
    assert!(t.cells > 0 && t.cells_per_request > 0.0);
    assert_eq!(n("failed_timeout"), 0, "{}", r.to_table());
    assert_eq!(n("answered_busy"), 0, "{}", r.to_table());
    // Latency: the tunnel's hops, not timeouts.
    assert!(
        r.seconds_per_request_mean < direct.seconds_per_request_mean + 1.0,
        "{}",
        r.to_table()
    );
}

/// Behind NAT (`--nat`): nobody can dial a node, so every link it has is
/// one it dialed or punched. Its announcements say so, and the nodes that
/// want it offer to be dialed (`AnnounceOffer`), or, behind NAT
/// themselves, to punch: it gets peers (before: 0.7 of 20 at 3,000
/// nodes, success 1.9 % from behind NAT), links to other nodes behind
/// NAT unless their NATs are symmetric (`--symmetric 1`: none), and the
/// reachable nodes stay within their peer limit.
#[test]
fn nodes_behind_nat_get_peers_by_dialing_the_nodes_that_want_them() {
    let mut c = small(Topology::Opennet);
    assert!(run(&c).nat.is_none(), "no NAT, no NAT report");
    c.nat = 0.5;
    // Success at 300 nodes and 100 inserts varies with the seed (85-100 %
    // with or without punching): the mean over four seeds is asserted.
    let mut success = 0.0;
    for seed in [1, 2, 3, 11] {
        c.seed = seed;
        c.symmetric = 0.0;
        let r = run(&c);
        let n = r.nat.clone().unwrap();
        assert!(n.behind_nat > 100 && n.behind_nat < 200, "{n:?}");
        assert!(n.nat_to_nat_links > n.behind_nat, "{n:?}");
        assert!(n.mean_degree_nat >= 4.0, "{n:?}");
        assert!(n.min_degree_nat >= 1, "{n:?}");
        assert!(n.max_degree_public <= c.degree, "{n:?}");
        success += r.success_rate / 4.0;
        c.symmetric = 1.0;
        let s = run(&c).nat.unwrap();
        assert_eq!(s.nat_to_nat_links, 0, "{s:?}");
        assert!(s.mean_degree_nat < n.mean_degree_nat, "{s:?} {n:?}");
        assert!(s.min_degree_nat >= 1, "{s:?}");
    }
    assert!(success >= 0.95, "{success}");
}
