//! Fuzzes what daemons send the scheduler: announce events decoded from untrusted bytes and
//! applied to a live scheduler core (registers, task facts, pieces, parents, failures).
//! Nothing may panic; see `pollen_scheduler::fuzz_announce_events` for the input's shape.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pollen_scheduler::fuzz_announce_events(data);
});
