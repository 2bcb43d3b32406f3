//! Fuzzes what the registry mirror parses from a client's request: the path and query (`ns`,
//! the `pollen-registry/` prefix, the repository name and digest), the `X-Pollen-Registry`
//! header and the `Range` header. Nothing may panic, and what parses must be well-formed.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let path = parts.next().unwrap_or("");
    let header = parts.next().unwrap_or("");
    let range = parts.next().unwrap_or("");
    let len = parts
        .next()
        .and_then(|l| l.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    pollen_daemon::fuzz_mirror_request(path, header, range, len);
});
