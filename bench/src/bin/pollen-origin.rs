//! `pollen-origin`: the counting test origin as a process, for benchmarks that run it in its
//! own network namespace. Serves a file's bytes at `/blob` (with Range), prints its address,
//! and keeps the number of bytes served in a stats file (rewritten every 200 ms) until killed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pollen_testkit::origin::Origin;

/// Serves a file at /blob and counts the bytes it sends.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// File whose bytes are served.
    #[arg(long)]
    file: PathBuf,
    /// File the byte count is written to.
    #[arg(long)]
    stats: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let origin = Origin::start(args.listen, data.into())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("origin listening on {}", origin.url("/blob"));
    loop {
        let tmp = args.stats.with_extension("tmp");
        std::fs::write(&tmp, origin.bytes_served().to_string())?;
        std::fs::rename(&tmp, &args.stats)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
