//! Fuzzes URL normalisation, which every task id without a digest is derived from (URLs come
//! from users, from registries' redirects and from the scheduler): nothing may panic, and
//! normalising is idempotent, so one URL can never name two tasks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pollen_core::task_id::normalise_url;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (url, filtered) = text.split_once('\n').unwrap_or((&text, ""));
    let filtered: Vec<String> = filtered.split('&').map(str::to_string).collect();
    if let Ok(once) = normalise_url(url, &filtered) {
        let twice = normalise_url(once.as_str(), &filtered).expect("a normalised URL parses");
        assert_eq!(once, twice, "normalising is not idempotent");
    }
});
