//! Fuzzes the data-plane codec with arbitrary bytes, as a hostile peer would send them:
//! decoding must never panic or allocate from an unchecked length, and whatever decodes must
//! encode back to the same frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pollen_core::Bitfield;
use pollen_wire::codec::{decode_frame, Message};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode_frame(rest) {
        let mut again = Vec::new();
        msg.encode(&mut again);
        if !matches!(msg, Message::Error { .. }) {
            assert_eq!(&again[..used], &rest[..used], "re-encoding differs");
        }
        if let Message::Bitfield { count, bits, .. } = &msg {
            let _ = Bitfield::from_bytes(*count, bits);
        }
        rest = &rest[used..];
        if let Message::Slice(h) = msg {
            // The payload follows the headers; skip it as a receiver would read it.
            rest = rest.get(h.length as usize..).unwrap_or(&[]);
        }
    }
});
