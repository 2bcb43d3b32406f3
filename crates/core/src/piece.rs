//! Piece math: how a task's content is cut into pieces.
//!
//! The piece length grows with the content length so a task has at most about
//! [`TARGET_PIECES`] pieces, never below [`MIN_PIECE_LENGTH`] nor above [`MAX_PIECE_LENGTH`],
//! always a power of two. Every role computes the same layout from the same content length.

/// Smallest piece length: 4 MiB.
pub const MIN_PIECE_LENGTH: u64 = 4 << 20;
/// Largest piece length: 64 MiB.
pub const MAX_PIECE_LENGTH: u64 = 64 << 20;
/// The number of pieces a task aims not to exceed.
pub const TARGET_PIECES: u64 = 500;

/// How content of a given length is cut into pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceLayout {
    content_length: u64,
    piece_length: u64,
}

impl PieceLayout {
    /// The layout Pollen uses for content of `content_length` bytes.
    pub fn for_content(content_length: u64) -> Self {
        let wanted = content_length.div_ceil(TARGET_PIECES).max(1);
        let piece_length = wanted
            .checked_next_power_of_two()
            .unwrap_or(MAX_PIECE_LENGTH)
            .clamp(MIN_PIECE_LENGTH, MAX_PIECE_LENGTH);
        Self {
            content_length,
            piece_length,
        }
    }

    /// A layout with an explicit piece length (from metadata or the scheduler); `None` when the
    /// piece length is zero or the piece count would not fit in a `u32`.
    pub fn with_piece_length(content_length: u64, piece_length: u64) -> Option<Self> {
        if piece_length == 0 || content_length.div_ceil(piece_length) > u64::from(u32::MAX) {
            return None;
        }
        Some(Self {
            content_length,
            piece_length,
        })
    }

    /// Total content length in bytes.
    pub fn content_length(&self) -> u64 {
        self.content_length
    }

    /// Length of every piece but possibly the last.
    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// Number of pieces (zero for empty content).
    pub fn piece_count(&self) -> u32 {
        // Fits: checked at construction, and for_content yields at most ~2^38/2^22 pieces.
        u32::try_from(self.content_length.div_ceil(self.piece_length)).unwrap_or(u32::MAX)
    }

    /// Byte offset of piece `n`.
    pub fn offset(&self, n: u32) -> u64 {
        u64::from(n) * self.piece_length
    }

    /// Length of piece `n`; zero when `n` is past the end.
    pub fn length(&self, n: u32) -> u64 {
        let start = self.offset(n);
        if start >= self.content_length {
            return 0;
        }
        (self.content_length - start).min(self.piece_length)
    }

    /// The piece that holds byte `offset`, if any.
    pub fn piece_at(&self, offset: u64) -> Option<u32> {
        (offset < self.content_length).then(|| (offset / self.piece_length) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_content_uses_the_minimum_and_huge_the_maximum() {
        assert_eq!(PieceLayout::for_content(1).piece_length(), MIN_PIECE_LENGTH);
        assert_eq!(PieceLayout::for_content(0).piece_count(), 0);
        assert_eq!(
            PieceLayout::for_content(1 << 40).piece_length(),
            MAX_PIECE_LENGTH
        );
        assert_eq!(PieceLayout::for_content(2 << 30).piece_length(), 8 << 20);
    }

    #[test]
    fn explicit_piece_length_must_be_usable() {
        assert!(PieceLayout::with_piece_length(10, 0).is_none());
        assert!(PieceLayout::with_piece_length(u64::MAX, 1).is_none());
        // Exactly u32::MAX pieces fit; one more does not.
        let max = u64::from(u32::MAX);
        assert_eq!(
            PieceLayout::with_piece_length(max, 1).map(|l| (l.piece_count(), l.content_length())),
            Some((u32::MAX, max))
        );
        assert!(PieceLayout::with_piece_length(max + 1, 1).is_none());
        assert_eq!(
            PieceLayout::with_piece_length(10, 4).map(|l| l.piece_count()),
            Some(3)
        );
    }

    proptest! {
        #[test]
        fn pieces_tile_the_content_exactly(len in 0u64..(1u64 << 44)) {
            let l = PieceLayout::for_content(len);
            prop_assert!(l.piece_length() >= MIN_PIECE_LENGTH && l.piece_length() <= MAX_PIECE_LENGTH);
            prop_assert!(l.piece_length().is_power_of_two());
            let n = l.piece_count();
            // Either under the target count, or the piece length is already at its maximum.
            prop_assert!(u64::from(n) <= TARGET_PIECES || l.piece_length() == MAX_PIECE_LENGTH);
            if n > 0 {
                let last = n - 1;
                prop_assert_eq!(l.offset(last) + l.length(last), len);
                prop_assert!(l.length(last) > 0);
                prop_assert_eq!(l.length(n), 0);
                prop_assert_eq!(l.piece_at(len - 1), Some(last));
            }
            prop_assert_eq!(l.piece_at(len), None);
        }

        #[test]
        fn every_byte_maps_to_the_piece_that_contains_it(len in 1u64..(1u64 << 36), frac in 0.0f64..1.0) {
            let l = PieceLayout::for_content(len);
            let off = ((len - 1) as f64 * frac) as u64;
            let p = l.piece_at(off).expect("inside content");
            prop_assert!(l.offset(p) <= off && off < l.offset(p) + l.length(p));
        }
    }
}
