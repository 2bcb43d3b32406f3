//! The daemon's host id: stable across restarts, unique per data directory.

use std::path::Path;

use rand::RngExt as _;

/// Reads `data_dir/host_id`, creating it with a fresh id on first start.
pub(crate) fn host_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("host_id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(s.to_string());
        }
    }
    let id = format!(
        "{}-{:08x}",
        pollen_core::host::hostname(),
        rand::rng().random::<u32>()
    );
    let tmp = data_dir.join("host_id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}
