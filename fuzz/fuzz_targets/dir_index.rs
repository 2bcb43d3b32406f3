//! Fuzzes the reader of HTTP directory index pages (`pollen get --recursive http://…/dir/`),
//! which come from the origin: nothing may panic, and every link it returns is a piece of the
//! page, never longer than it.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let html = String::from_utf8_lossy(data);
    for link in pollen_source::index_links(&html) {
        assert!(link.len() <= html.len());
    }
});
