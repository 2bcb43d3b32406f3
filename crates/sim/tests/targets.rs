//! The simulation is deterministic, so its figures can be asserted without any clock: a
//! 100-peer swarm with mixed bandwidths and late joiners must meet the scheduler's targets
//! (median <= 1.2 x T_min, last <= 1.5 x T_min, origin <= 1.05 x S).

use pollen_sim::{PeerClass, SimSpec, Swarm};

#[test]
fn a_hundred_mixed_peers_finish_near_the_bound_and_the_origin_sends_one_copy() {
    let out = Swarm::new(SimSpec::standard(100)).run(10.0);
    assert_eq!(out.unfinished, 0);
    assert!(out.median() <= 1.2, "median {:.3} x T_min", out.median());
    assert!(out.last() <= 1.5, "last {:.3} x T_min", out.last());
    assert!(
        out.origin_bytes_over_size <= 1.05,
        "origin sent {:.3} x S",
        out.origin_bytes_over_size
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = Swarm::new(SimSpec::standard(30)).run(10.0);
    let b = Swarm::new(SimSpec::standard(30)).run(10.0);
    assert_eq!(a.ratios, b.ratios);
}

#[test]
fn a_capped_parent_never_uploads_more_pieces_at_once_and_the_swarm_still_finishes() {
    let uncapped = Swarm::new(SimSpec::standard(30)).run(10.0);
    assert!(uncapped.peak_uploads_per_parent > 2, "{uncapped:?}");
    let mut spec = SimSpec::standard(30);
    spec.upload_cap = 2;
    let capped = Swarm::new(spec).run(10.0);
    assert_eq!(capped.unfinished, 0, "{capped:?}");
    assert!(capped.peak_uploads_per_parent <= 2, "{capped:?}");
    assert!(
        (capped.origin_bytes_over_size - 1.0).abs() < 0.05,
        "{capped:?}"
    );
}

/// Every node at the same rate, the origin too: the seed's upload is the swarm's bottleneck,
/// and a piece it sends twice delays everyone (virtual time, so the comparison is exact).
#[test]
fn a_seed_that_spreads_its_upload_finishes_a_uniform_swarm_sooner() {
    let uniform = |spread: bool| {
        let mut spec = SimSpec::standard(16);
        let rate = 100e6 / 8.0;
        spec.pieces = 64;
        spec.origin = rate;
        spec.late_fraction = 0.0;
        spec.classes = vec![PeerClass {
            upload: rate,
            download: rate,
            share: 1.0,
        }];
        spec.seed_spread = spread;
        Swarm::new(spec).run(10.0)
    };
    let (spread, plain) = (uniform(true), uniform(false));
    assert_eq!(spread.unfinished + plain.unfinished, 0);
    assert!(spread.last() < plain.last(), "{spread:?} vs {plain:?}");
}
