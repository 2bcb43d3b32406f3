//! Fuzzes configuration parsing: the daemon's and the scheduler's TOML files and the human
//! sizes and durations their flags take. Nothing may panic; bad input is an error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pollen_core::duration::parse_duration;
use pollen_core::parse_size;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = toml::from_str::<pollen_daemon::DaemonConfig>(&text);
    let _ = toml::from_str::<pollen_scheduler::SchedulerConfig>(&text);
    for line in text.lines().take(16) {
        let _ = parse_size(line);
        let _ = parse_duration(line);
    }
});
