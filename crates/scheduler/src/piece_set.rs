//! The set of pieces a peer holds, as the scheduler sees it.
//!
//! A growable bitset of 64-bit words: the evaluator asks "how many pieces does the candidate
//! have that the child lacks" for dozens of candidates per decision, and a word-wise
//! `a & !b` popcount answers that in a few dozen instructions for a 500-piece task.

/// Piece numbers held by a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PieceSet {
    words: Vec<u64>,
    count: u32,
}

/// Most pieces a task may have (the piece math caps tasks near 500 pieces; reports beyond
/// this are ignored rather than allowed to grow the set without bound).
pub const MAX_PIECES: u32 = 1 << 16;

impl PieceSet {
    /// Adds piece `n`; returns false when it was already present or is out of range.
    pub fn insert(&mut self, n: u32) -> bool {
        if n >= MAX_PIECES {
            return false;
        }
        let (w, b) = ((n / 64) as usize, n % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let mask = 1u64 << b;
        if self.words[w] & mask != 0 {
            return false;
        }
        self.words[w] |= mask;
        self.count += 1;
        true
    }

    /// Whether piece `n` is present.
    pub fn contains(&self, n: u32) -> bool {
        self.words
            .get((n / 64) as usize)
            .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
    }

    /// Number of pieces present.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when no piece is present.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many pieces of `self` are missing from `other`.
    pub fn count_missing_from(&self, other: &PieceSet) -> u32 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.words.get(i).copied().unwrap_or(0)).count_ones())
            .sum()
    }

    /// Piece numbers present, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, w)| {
            (0..64u32)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| i as u32 * 64 + b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn matches_a_btreeset(a in proptest::collection::vec(0u32..700, 0..200),
                              b in proptest::collection::vec(0u32..700, 0..200)) {
            let (mut sa, mut sb) = (PieceSet::default(), PieceSet::default());
            let (mut ra, mut rb) = (BTreeSet::new(), BTreeSet::new());
            for n in &a {
                prop_assert_eq!(sa.insert(*n), ra.insert(*n));
            }
            for n in &b {
                sb.insert(*n);
                rb.insert(*n);
            }
            prop_assert_eq!(sa.len() as usize, ra.len());
            prop_assert_eq!(sa.is_empty(), ra.is_empty());
            prop_assert_eq!(sa.iter().collect::<Vec<_>>(), ra.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.count_missing_from(&sb) as usize, ra.difference(&rb).count());
            prop_assert_eq!(sb.count_missing_from(&sa) as usize, rb.difference(&ra).count());
            for n in 0..700 {
                prop_assert_eq!(sa.contains(n), ra.contains(&n));
            }
        }
    }

    #[test]
    fn out_of_range_pieces_are_refused() {
        let mut s = PieceSet::default();
        assert!(!s.insert(MAX_PIECES));
        assert!(s.is_empty());
    }
}
