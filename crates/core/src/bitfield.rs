//! A fixed-length set of piece numbers: which pieces a peer holds.
//!
//! Stored as bytes, most significant bit first (piece 0 is the high bit of byte 0), the same
//! layout on the wire, in the metadata store and in the scheduler.

/// Which of `len` pieces are present.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
}

impl Bitfield {
    /// An empty bitfield for `len` pieces.
    pub fn new(len: u32) -> Self {
        Self {
            bits: vec![0; (len as usize).div_ceil(8)],
            len,
        }
    }

    /// Rebuilds a bitfield from its byte form; `None` if the byte count does not match `len`
    /// or a bit past `len` is set.
    pub fn from_bytes(len: u32, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let field = Self {
            bits: bytes.to_vec(),
            len,
        };
        let tail_ok = (len..(bytes.len() as u32 * 8)).all(|i| field.raw_get(i) == 0);
        tail_ok.then_some(field)
    }

    /// The byte form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of pieces the field describes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the field describes no pieces at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn raw_get(&self, i: u32) -> u8 {
        (self.bits[(i / 8) as usize] >> (7 - (i % 8))) & 1
    }

    /// Whether piece `i` is present; out-of-range pieces are absent.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.raw_get(i) == 1
    }

    /// Marks piece `i` present. Out-of-range numbers are ignored.
    pub fn set(&mut self, i: u32) {
        if i < self.len {
            self.bits[(i / 8) as usize] |= 1 << (7 - (i % 8));
        }
    }

    /// Marks piece `i` absent. Out-of-range numbers are ignored.
    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            self.bits[(i / 8) as usize] &= !(1 << (7 - (i % 8)));
        }
    }

    /// Number of pieces present.
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// True when every piece is present.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// Piece numbers present, ascending.
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// Piece numbers absent, ascending.
    pub fn iter_missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| !self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_last_piece_is_in_range_and_the_one_after_is_not() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.len(), 10);
        assert!(!b.is_empty() && Bitfield::new(0).is_empty());
        assert!(!b.is_full());
        (0..10).for_each(|i| b.set(i));
        assert!(b.is_full());
        // Piece 10 does not exist: never present, never cleared into a neighbour.
        b.set(10);
        assert!(!b.get(10));
        b.clear(10);
        assert!(b.get(9) && b.is_full());
        b.clear(9);
        assert!(!b.get(9) && !b.is_full());
        // The bits past the end of the last byte stay zero, so the byte form round-trips.
        assert_eq!(b.as_bytes(), &[0xff, 0x80]);
        // A length that fills its last byte: one past the end is outside the bytes too.
        let mut whole = Bitfield::new(16);
        assert!(!whole.get(16));
        whole.set(16);
        whole.clear(16);
        assert_eq!(whole.count(), 0);
        assert_eq!(Bitfield::from_bytes(10, b.as_bytes()), Some(b.clone()));
    }

    #[test]
    fn bits_past_the_length_are_rejected() {
        assert!(Bitfield::from_bytes(3, &[0b1110_0000]).is_some());
        assert!(Bitfield::from_bytes(3, &[0b1111_0000]).is_none());
        assert!(Bitfield::from_bytes(9, &[0]).is_none());
    }

    proptest! {
        #[test]
        fn set_pieces_round_trip_through_bytes(len in 0u32..2000, picks in proptest::collection::vec(0u32..2000, 0..64)) {
            let mut f = Bitfield::new(len);
            for p in &picks { f.set(*p); }
            let back = Bitfield::from_bytes(len, f.as_bytes()).expect("valid bytes");
            prop_assert_eq!(&back, &f);
            let expected: std::collections::BTreeSet<u32> = picks.iter().copied().filter(|p| *p < len).collect();
            prop_assert_eq!(f.iter_set().collect::<Vec<_>>(), expected.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(f.count() as usize, expected.len());
            prop_assert_eq!(f.iter_missing().count() as u32 + f.count(), len);
            for p in &picks { f.clear(*p); }
            prop_assert_eq!(f.count(), 0);
        }
    }
}
