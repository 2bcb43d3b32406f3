//! API scenarios, each independent of the others on a shared manager, so the same set runs
//! on SQLite, on PostgreSQL, and all together for the route-coverage check.

// Some test binaries use none of the scenarios.
#![allow(unused_imports)]

use super::TestManager;

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

mod accounts;
mod clusters;
mod jobs;
mod tokens;

pub use accounts::*;
pub use clusters::*;
pub use jobs::*;
pub use tokens::*;
