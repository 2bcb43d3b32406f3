//! Unit tests of the evaluator's ranking: each feature alone, the upload-per-child share and
//! its weight, bad parents, K, and the sample.

use super::unit_tests::{cost, info, World, PIECES};
use super::*;
use pollen_proto::scheduler::HostInfo;
use rand::SeedableRng as _;

/// Weights that count only the load and the pieces features.
fn load_and_pieces(load: f64, pieces: f64) -> Weights {
    Weights {
        load,
        pieces,
        success: 0.0,
        speed: 0.0,
        host_type: 0.0,
        idc: 0.0,
        location: 0.0,
        proximity: 0.0,
    }
}

#[test]
fn each_feature_alone_decides_between_two_otherwise_equal_candidates() {
    // (feature, change that makes "b" the better of two identical holders)
    type Change = fn(&mut World);
    let cases: [(&str, Change); 8] = [
        ("free slots", |w| {
            w.host_mut("a-host").load.upload_connections = 10;
        }),
        ("free bandwidth", |w| {
            w.host_mut("a-host").load.upload_bytes_per_sec = 500;
        }),
        ("pieces", |w| {
            w.peer_mut("a").finished = Default::default();
            w.peer_mut("a").finished.insert(3);
        }),
        ("success", |w| w.peer_mut("a").uploads_failed = 1),
        ("speed", |w| {
            w.task.typical_cost = cost(100);
            w.peer_mut("a").upload_cost = cost(300);
        }),
        ("host type", |w| w.host_mut("a-host").info.seed = true),
        ("idc", |w| {
            w.host_mut("child-host").info.idc = "dc1".into();
            w.host_mut("b-host").info.idc = "dc1".into();
        }),
        ("location", |w| {
            w.host_mut("child-host").info.location = "eu|fra".into();
            w.host_mut("b-host").info.location = "eu|fra".into();
        }),
    ];
    for (feature, change) in cases {
        for order in [["a", "b"], ["b", "a"]] {
            let mut w = World::new();
            for id in order {
                w.holder(id, info(1000));
            }
            change(&mut w);
            assert_eq!(w.offered(&[]), ["b", "a"], "{feature}, joined {order:?}");
        }
    }
    // Proximity: hosts on the child's /24 and far away.
    let mut w = World::new();
    w.host("far", "172.16.0.1", info(0));
    w.peer("a", "far", &[0, 1]);
    w.host("near", "10.0.1.77", info(0));
    w.peer("b", "near", &[0, 1]);
    assert_eq!(w.offered(&[]), ["b", "a"], "proximity");
}

#[test]
fn upload_per_child_favours_the_host_that_gives_each_child_most() {
    // Equal in every other feature: the same open connections (above what their children
    // account for) and no bandwidth in use. Each case is tried with "a" joining first and
    // with "b" first, so the ranking, not the sample's order, decides.
    let offered = |a: (u64, usize), b: (u64, usize)| {
        let mut seen = Vec::new();
        for order in [[("a", a), ("b", b)], [("b", b), ("a", a)]] {
            let mut w = World::new();
            for (id, (limit, children)) in order {
                w.holder(id, info(limit));
                let host = w.host_mut(&format!("{id}-host"));
                host.children = children;
                host.load.upload_connections = 19;
            }
            seen.push(w.offered(&[]));
        }
        assert_eq!(seen[0], seen[1], "the order of joining decided");
        seen.remove(0)
    };
    // 200 over ten (9 + the new child) is 20 each; 50 over two is 25 each.
    assert_eq!(offered((200, 9), (50, 1)), ["b", "a"]);
    // 400 over ten is 40 each.
    assert_eq!(offered((400, 9), (50, 1)), ["a", "b"]);
    // A host without a limit counts as the fastest known: 100 to its first child beats
    // 100 shared by two.
    assert_eq!(offered((100, 1), (0, 0)), ["b", "a"]);
    assert_eq!(offered((0, 0), (100, 1)), ["a", "b"]);
    // With no limits known at all the children alone decide.
    assert_eq!(offered((0, 3), (0, 1)), ["b", "a"]);
}

#[test]
fn the_upload_share_is_weighed_against_the_rest_of_the_score_exactly() {
    // Load and pieces only, pieces at weight 1. "a" holds 6 pieces, "b" 4: "a" is ahead by
    // 0.2 before the share. "b" gives its next child 100 (no children yet); the share part
    // is 0.5 x load weight x (a's upload per child over b's). With the load at weight 1, "a"
    // at 50 per child gets 0.25 against 0.5 and loses by 0.05; at 70, 0.35 against 0.5, and
    // wins by 0.05. With the load at weight 2 the share counts twice: "a" loses at 75 per
    // child (0.75 against 1) and wins at 85.
    let offered = |load: f64, a_limit: u64| {
        let mut seen = Vec::new();
        for order in [["a", "b"], ["b", "a"]] {
            let mut w = World::new();
            w.cfg.weights = load_and_pieces(load, 1.0);
            for id in order {
                let (limit, pieces) = if id == "a" { (a_limit, 6) } else { (100, 4) };
                w.host(
                    &format!("{id}-host"),
                    &format!("10.9.1.{}", pieces),
                    info(limit),
                );
                let held: Vec<u32> = (0..pieces).collect();
                w.peer(id, &format!("{id}-host"), &held);
                w.host_mut(&format!("{id}-host")).load.upload_connections = 19;
            }
            w.host_mut("a-host").children = 1;
            seen.push(w.offered(&[]));
        }
        assert_eq!(seen[0], seen[1], "the order of joining decided");
        seen.remove(0)
    };
    assert_eq!(offered(1.0, 100), ["b", "a"], "a gives 50 per child");
    assert_eq!(offered(1.0, 140), ["a", "b"], "a gives 70 per child");
    assert_eq!(offered(2.0, 150), ["b", "a"], "a gives 75 per child");
    assert_eq!(offered(2.0, 170), ["a", "b"], "a gives 85 per child");
}

#[test]
fn the_sample_starts_at_a_random_place_so_decisions_see_different_peers() {
    let mut w = World::new();
    w.cfg.sample_limit = 2;
    for i in 0..10 {
        w.holder(&format!("p{i}"), info(0));
    }
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let offered = select_parents(&w.cfg, &w.task, &w.hosts, "child", &[], None, &mut rng);
        assert!(offered.len() <= 2, "{offered:?}");
        seen.extend(offered);
    }
    assert!(
        seen.len() > 4,
        "20 decisions with a sample of 2 saw only {seen:?}"
    );
}

#[test]
fn the_upload_share_is_half_the_load_weight() {
    // Only the load feature counts. "a" has 18 of 20 slots free and gives its next child
    // half what "b" would; "b" has half its slots free. At the documented split (the share
    // half, free slots and free bandwidth a quarter each) "b" wins: a 0.25 x 0.9 + 0.25 +
    // 0.5 x 0.5 = 0.725 against b 0.25 x 0.5 + 0.25 + 0.5 x 1 = 0.875; a split that gave
    // the other parts more would rank "a" first.
    let mut w = World::new();
    w.cfg.weights = load_and_pieces(1.0, 0.0);
    for id in ["a", "b"] {
        w.holder(id, info(100));
    }
    w.host_mut("a-host").children = 1;
    w.host_mut("a-host").load.upload_connections = 2;
    w.host_mut("b-host").load.upload_connections = 20;
    w.host_mut("b-host").info.max_upload_connections = 40;
    assert_eq!(w.offered(&[]), ["b", "a"]);
}

#[test]
fn bad_parents_come_last_and_at_most_k_are_offered() {
    let mut w = World::new();
    w.task.typical_cost = cost(100);
    w.holder("slow", info(0));
    w.peer_mut("slow").upload_cost = cost(500);
    for i in 0..7 {
        w.holder(&format!("p{i}"), info(0));
    }
    let offered = w.offered(&[]);
    assert_eq!(offered.len(), w.cfg.candidate_limit, "{offered:?}");
    assert!(!offered.contains(&"slow".to_string()), "{offered:?}");
    w.cfg.candidate_limit = 8;
    let offered = w.offered(&[]);
    assert_eq!(
        offered.last().map(String::as_str),
        Some("slow"),
        "{offered:?}"
    );
    // A bad parent with a better score than every good one still comes last: the others
    // lose more on failed uploads than it loses on speed.
    for i in 0..7 {
        w.peer_mut(&format!("p{i}")).uploads_failed = 3;
    }
    let offered = w.offered(&[]);
    assert_eq!(
        offered.last().map(String::as_str),
        Some("slow"),
        "{offered:?}"
    );
}

#[test]
fn parents_the_child_has_are_left_out_and_seeds_are_always_sampled() {
    let mut w = World::new();
    let first = w.holder("p0", info(0));
    for i in 1..5 {
        w.holder(&format!("p{i}"), info(0));
    }
    let offered = w.offered(&[first]);
    assert_eq!(offered.len(), 4, "{offered:?}");
    assert!(!offered.contains(&"p0".to_string()), "{offered:?}");

    // A sample of two ordinary peers, and a seed that joined last: the seed is examined
    // whatever the sample, and no more than the sample otherwise.
    w.cfg.sample_limit = 2;
    w.host(
        "seed-host",
        "10.9.8.1",
        HostInfo {
            seed: true,
            ..info(0)
        },
    );
    let all: Vec<u32> = (0..PIECES).collect();
    let seed = w.peer("seed", "seed-host", &[]);
    w.task.seeds.push(seed);
    for n in all {
        w.peer_mut("seed").finished.insert(n);
    }
    let offered = w.offered(&[]);
    assert!(offered.contains(&"seed".to_string()), "{offered:?}");
    assert!(
        offered.len() <= 3,
        "the sample bounds the rest: {offered:?}"
    );
    w.cfg.sample_limit = 40;
    assert_eq!(w.offered(&[]).len(), 6, "every holder and the seed");
}

#[test]
fn a_child_or_host_the_model_does_not_know_gets_nothing() {
    let mut w = World::new();
    w.holder("p", info(0));
    assert_eq!(w.offered(&[]), ["p"]);
    w.peer_mut("child").host = None;
    assert!(w.offered(&[]).is_empty());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    assert!(select_parents(&w.cfg, &w.task, &w.hosts, "stranger", &[], None, &mut rng).is_empty());
}
