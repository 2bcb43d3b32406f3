//! Slices: the data plane's unit of transfer, 256 KiB pieces of a piece that each can be
//! verified on its own.
//!
//! A piece is the unit of digest, storage and scheduling (4 MiB at least), but a peer that
//! could forward only whole pieces makes every hop of the swarm wait for 4 MiB: at 100 Mbit/s
//! that is a third of a second per hop, and much more when a parent's upload is shared by
//! several children. So pieces travel in slices of [`SLICE_LENGTH`] and a slice is served
//! as soon as it is verified, while the rest of its piece is still arriving.
//!
//! Verification uses BLAKE3's tree: the piece digest is the BLAKE3 hash of the piece, and
//! every slice of a piece with more than one slice is a complete subtree of that hash's tree
//! (BLAKE3 splits an input at the largest power of two below its length, so for anything
//! longer than a slice every split falls on a slice boundary). A slice's *slice hash* is that
//! subtree's chaining value; for a piece of one slice it is the piece digest itself. A
//! sender gives the receiver all slice hashes of the piece; the receiver merges them into a
//! root, checks it against the published piece digest, then checks each slice it receives
//! against its slice hash. A forged list or a forged slice is caught before a byte of it is
//! stored as verified or served.
//!
//! Slices are numbered across the task: slice `g` is slice `g % slices_per_piece` of piece
//! `g / slices_per_piece` (the last piece may have fewer).

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::{PieceDigest, PieceLayout};

/// Length of every slice but possibly the last of a piece: 256 KiB. Each hop of the swarm
/// forwards a slice only once it is whole and verified, so this is what every hop waits
/// for; 1 MiB cost N = 16 shaped swarms about 0.1 x T_min (docs/benchmarks-history.md,
/// "Slices of 256 KiB").
pub const SLICE_LENGTH: u64 = 1 << 18;
/// Most slices a piece of the largest length has.
pub const MAX_SLICES_PER_PIECE: u32 = (crate::piece::MAX_PIECE_LENGTH / SLICE_LENGTH) as u32;

/// The hash of one slice: a chaining value of the piece's BLAKE3 tree, or the piece digest
/// when the piece is a single slice.
pub type SliceHash = [u8; 32];

/// Number of slices in a piece of `piece_length` bytes (one for an empty piece).
pub fn slices_in(piece_length: u64) -> u32 {
    u32::try_from(piece_length.div_ceil(SLICE_LENGTH).max(1)).unwrap_or(u32::MAX)
}

/// How a task's pieces are cut into slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceLayout {
    pieces: PieceLayout,
    per_piece: u32,
}

/// Where one slice lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceSpot {
    /// The piece it belongs to.
    pub piece: u32,
    /// Its place in the piece.
    pub index: u32,
    /// Byte offset in the content.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

impl SliceLayout {
    /// The slices of `pieces`.
    pub fn new(pieces: PieceLayout) -> Self {
        Self {
            pieces,
            per_piece: slices_in(pieces.piece_length()),
        }
    }

    /// The piece layout.
    pub fn pieces(&self) -> PieceLayout {
        self.pieces
    }

    /// Slices in every piece but possibly the last.
    pub fn per_piece(&self) -> u32 {
        self.per_piece
    }

    /// Slices in piece `n` (zero past the end).
    pub fn slices_of(&self, n: u32) -> u32 {
        match self.pieces.length(n) {
            0 => 0,
            len => slices_in(len),
        }
    }

    /// Slices in the task; saturates at `u32::MAX` for layouts no peer could transfer.
    pub fn count(&self) -> u32 {
        let pieces = self.pieces.piece_count();
        if pieces == 0 {
            return 0;
        }
        let full = u64::from(pieces - 1) * u64::from(self.per_piece);
        u32::try_from(full + u64::from(self.slices_of(pieces - 1))).unwrap_or(u32::MAX)
    }

    /// The global number of slice `index` of piece `n`.
    pub fn global(&self, n: u32, index: u32) -> u32 {
        n.saturating_mul(self.per_piece).saturating_add(index)
    }

    /// The global numbers of piece `n`'s slices.
    pub fn range_of(&self, n: u32) -> std::ops::Range<u32> {
        let first = self.global(n, 0);
        first..first.saturating_add(self.slices_of(n))
    }

    /// Where global slice `g` lies; `None` past the end.
    pub fn spot(&self, g: u32) -> Option<SliceSpot> {
        let piece = g / self.per_piece;
        let index = g % self.per_piece;
        let piece_len = self.pieces.length(piece);
        let start = u64::from(index) * SLICE_LENGTH;
        if start >= piece_len {
            return None;
        }
        Some(SliceSpot {
            piece,
            index,
            offset: self.pieces.offset(piece) + start,
            length: (piece_len - start).min(SLICE_LENGTH),
        })
    }
}

/// Hashes bytes of one piece in order from the start of one of its slices, keeping the hash
/// of every slice it covers. Feed it any chunk sizes; slice boundaries are found here.
pub struct SliceHasher {
    piece_length: u64,
    /// Offset in the piece of the slice being hashed.
    slice_start: u64,
    hasher: blake3::Hasher,
    filled: u64,
    done: Vec<SliceHash>,
}

impl SliceHasher {
    /// Starts at slice `index` of a piece of `piece_length` bytes.
    pub fn new(piece_length: u64, index: u32) -> Self {
        let slice_start = u64::from(index) * SLICE_LENGTH;
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(slice_start);
        Self {
            piece_length,
            slice_start,
            hasher,
            filled: 0,
            done: Vec::new(),
        }
    }

    /// Hashes the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.filled == SLICE_LENGTH {
                self.close_slice();
            }
            let take = ((SLICE_LENGTH - self.filled) as usize).min(data.len());
            self.hasher.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
        }
    }

    fn close_slice(&mut self) {
        let hash = if self.piece_length <= SLICE_LENGTH {
            *self.hasher.finalize().as_bytes()
        } else {
            self.hasher.finalize_non_root()
        };
        self.done.push(hash);
        self.slice_start += SLICE_LENGTH;
        self.hasher = blake3::Hasher::new();
        self.hasher.set_input_offset(self.slice_start);
        self.filled = 0;
    }

    /// The hashes of every slice covered, in order (the last may be of a partial slice:
    /// callers feed whole slices).
    pub fn finish(mut self) -> Vec<SliceHash> {
        if self.filled > 0 || self.done.is_empty() {
            self.close_slice();
        }
        self.done
    }
}

/// The slice hashes of a whole piece held in memory.
pub fn slice_hashes(piece: &[u8]) -> Vec<SliceHash> {
    let mut h = SliceHasher::new(piece.len() as u64, 0);
    h.update(piece);
    h.finish()
}

/// The piece digest the slice hashes of a piece of `piece_length` bytes add up to; `None`
/// when their number does not fit the length.
pub fn piece_root(hashes: &[SliceHash], piece_length: u64) -> Option<PieceDigest> {
    if hashes.len() as u64 != u64::from(slices_in(piece_length)) {
        return None;
    }
    if let [only] = hashes {
        return Some(PieceDigest(*only));
    }
    let (left, right) = split(hashes, piece_length);
    Some(PieceDigest(
        *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes(),
    ))
}

/// The chaining values of the two children of the subtree over `hashes` (`len` bytes,
/// more than one slice).
fn split(hashes: &[SliceHash], len: u64) -> (ChainingValue, ChainingValue) {
    // BLAKE3's rule: the left child holds the largest power of two of bytes below `len`.
    let left_len = len.div_ceil(2).next_power_of_two();
    let left_slices = (left_len / SLICE_LENGTH) as usize;
    (
        subtree(&hashes[..left_slices], left_len),
        subtree(&hashes[left_slices..], len - left_len),
    )
}

fn subtree(hashes: &[SliceHash], len: u64) -> ChainingValue {
    match hashes {
        [only] => *only,
        _ => {
            let (left, right) = split(hashes, len);
            merge_subtrees_non_root(&left, &right, Mode::Hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn slice_hashes_add_up_to_the_blake3_hash_of_the_piece() {
        for len in [
            0,
            1,
            1024,
            SLICE_LENGTH as usize,
            SLICE_LENGTH as usize + 1,
            3 * SLICE_LENGTH as usize + 17,
            4 * SLICE_LENGTH as usize,
            5 * SLICE_LENGTH as usize - 1,
        ] {
            let piece = data(len, 3);
            let hashes = slice_hashes(&piece);
            assert_eq!(hashes.len() as u32, slices_in(len as u64), "len {len}");
            assert_eq!(
                piece_root(&hashes, len as u64),
                Some(PieceDigest::of(&piece)),
                "len {len}"
            );
        }
    }

    #[test]
    fn a_changed_slice_or_a_wrong_count_is_caught() {
        let piece = data(4 * SLICE_LENGTH as usize, 9);
        let mut hashes = slice_hashes(&piece);
        let len = piece.len() as u64;
        let mut changed = piece.clone();
        changed[2 * SLICE_LENGTH as usize + 5] ^= 1;
        assert_ne!(slice_hashes(&changed)[2], hashes[2]);
        assert_eq!(slice_hashes(&changed)[1], hashes[1]);
        assert_eq!(piece_root(&hashes[..3], len), None);
        hashes.swap(0, 1);
        assert_ne!(piece_root(&hashes, len), Some(PieceDigest::of(&piece)));
    }

    #[test]
    fn one_slice_hashed_alone_matches_its_hash_in_the_piece() {
        let piece = data(3 * SLICE_LENGTH as usize + 100, 1);
        let all = slice_hashes(&piece);
        for (i, part) in piece.chunks(SLICE_LENGTH as usize).enumerate() {
            let mut h = SliceHasher::new(piece.len() as u64, i as u32);
            for c in part.chunks(70_000) {
                h.update(c);
            }
            assert_eq!(h.finish(), vec![all[i]]);
        }
    }

    #[test]
    fn slices_are_numbered_across_the_task() {
        let pieces =
            PieceLayout::with_piece_length(9 * SLICE_LENGTH + 5, 4 * SLICE_LENGTH).expect("layout");
        let s = SliceLayout::new(pieces);
        assert_eq!(s.per_piece(), 4);
        assert_eq!(s.count(), 4 + 4 + 2);
        assert_eq!(s.range_of(2), 8..10);
        let last = s.spot(9).expect("last slice");
        assert_eq!((last.piece, last.index, last.length), (2, 1, 5));
        assert_eq!(last.offset, 9 * SLICE_LENGTH);
        assert_eq!(s.spot(10), None);
        assert_eq!(s.spot(11), None);
        let empty = SliceLayout::new(PieceLayout::for_content(0));
        assert_eq!(empty.count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_piece_length_roots_to_its_digest(len in 0usize..(5 << 20), seed: u8, cut in 1usize..300_000) {
            let piece = data(len, seed);
            let mut h = SliceHasher::new(len as u64, 0);
            for c in piece.chunks(cut) {
                h.update(c);
            }
            let hashes = h.finish();
            prop_assert_eq!(piece_root(&hashes, len as u64), Some(PieceDigest::of(&piece)));
        }

        #[test]
        fn every_slice_lies_inside_its_piece(len in 0u64..(40 << 20), shift in 0u32..4) {
            let pieces = PieceLayout::with_piece_length(len, (4 * SLICE_LENGTH) << shift).expect("layout");
            let s = SliceLayout::new(pieces);
            let mut next = 0u64;
            for g in 0..s.count() {
                let spot = s.spot(g).expect("in range");
                prop_assert_eq!(spot.offset, next);
                prop_assert!(spot.length > 0 && spot.length <= SLICE_LENGTH);
                prop_assert_eq!(s.global(spot.piece, spot.index), g);
                next += spot.length;
            }
            prop_assert_eq!(next, len);
        }
    }

    #[test]
    fn the_largest_piece_has_its_slice_count_and_whole_slices_add_no_empty_one() {
        assert_eq!(MAX_SLICES_PER_PIECE, 256);
        assert_eq!(
            u64::from(MAX_SLICES_PER_PIECE) * SLICE_LENGTH,
            crate::piece::MAX_PIECE_LENGTH
        );
        // Two whole slices fed: two hashes, not a third for the empty rest.
        let piece = vec![9u8; 2 * SLICE_LENGTH as usize];
        assert_eq!(slice_hashes(&piece).len(), 2);
    }
}
