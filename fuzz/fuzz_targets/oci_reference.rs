//! Fuzzes image reference parsing (references come from users and, for preheat jobs, from the
//! API): nothing may panic, and a parsed reference printed and parsed again is the same
//! reference, so one image can never be named two ways.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pollen_oci::{is_repository_name, ImageReference};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(r) = ImageReference::parse(&text) {
        assert!(is_repository_name(&r.repository));
        let again = ImageReference::parse(&r.to_string()).expect("a normalised reference parses");
        assert_eq!(r, again, "normalising is not idempotent");
    }
});
