//! Piece cost statistics: how long pieces take to arrive from a parent.
//!
//! Children report, with every piece, how many milliseconds it took from request to verified.
//! The scheduler keeps an exponentially weighted mean per parent and one for the whole task;
//! a parent whose mean is many times the task's is "bad" (overloaded, on a poor link, or
//! failing) and is offered only when nothing better exists.

/// Weight of a new sample in the moving mean.
const ALPHA: f64 = 0.2;
/// Samples needed before a mean is trusted.
const MIN_SAMPLES: u32 = 3;

/// A moving mean of piece times, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct PieceCost {
    mean_ms: f64,
    samples: u32,
}

impl PieceCost {
    /// Adds one sample.
    pub fn record(&mut self, ms: u32) {
        let ms = f64::from(ms.max(1));
        self.mean_ms = if self.samples == 0 {
            ms
        } else {
            self.mean_ms + ALPHA * (ms - self.mean_ms)
        };
        self.samples = self.samples.saturating_add(1);
    }

    /// The mean, once enough samples were seen.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.samples >= MIN_SAMPLES).then_some(self.mean_ms)
    }

    /// How fast this parent is against `typical`, in 0..=1 (1: as fast or faster; unknown
    /// counts as typical).
    pub fn speed_score(&self, typical: &PieceCost) -> f64 {
        match (self.mean_ms(), typical.mean_ms()) {
            (Some(own), Some(t)) => (t / own).min(1.0),
            _ => 1.0,
        }
    }

    /// True when this parent's pieces take more than `factor` times the typical time.
    pub fn is_bad(&self, typical: &PieceCost, factor: f64) -> bool {
        match (self.mean_ms(), typical.mean_ms()) {
            (Some(own), Some(t)) => own > factor * t,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_ten_times_slower_is_bad_and_scores_low() {
        let (mut fast, mut slow, mut all) = (
            PieceCost::default(),
            PieceCost::default(),
            PieceCost::default(),
        );
        // The task's typical time is dominated by the fast parents, which deliver most
        // pieces: nine fast pieces for every slow one.
        for _ in 0..10 {
            fast.record(100);
            slow.record(1000);
            for _ in 0..9 {
                all.record(100);
            }
            all.record(1000);
        }
        assert!(slow.is_bad(&all, 3.0));
        assert!(!fast.is_bad(&all, 3.0));
        assert!(slow.speed_score(&all) < 0.5);
        assert!((fast.speed_score(&all) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let mut one = PieceCost::default();
        one.record(100_000);
        let mut typical = PieceCost::default();
        for _ in 0..5 {
            typical.record(10);
        }
        assert!(!one.is_bad(&typical, 3.0));
        assert_eq!(one.speed_score(&typical), 1.0);
    }
}
