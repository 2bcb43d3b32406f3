//! Fuzzes the local API's requests as they arrive on the daemon's socket: a protobuf
//! `DownloadRequest` through validation (URL, digest, headers, filtered query) and the origin
//! guard's check of its URL. Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pollen_daemon::fuzz_local_api_request(data);
});
