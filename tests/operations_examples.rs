//! The `curl` examples of docs/OPERATIONS.md ("Running a manager") run as written against a
//! real manager process, so the documentation cannot drift from the API.

mod common;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec};

/// The shell blocks between the `manager-examples` markers, in order.
fn examples() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md"))
        .expect("docs/OPERATIONS.md");
    let start = doc.find("<!-- manager-examples -->").expect("start marker");
    let end = doc.find("<!-- /manager-examples -->").expect("end marker");
    let mut script = String::new();
    let mut inside = false;
    for line in doc[start..end].lines() {
        match (inside, line.trim_start()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, _) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_managers_curl_examples_run_as_documented() {
    let script = examples();
    assert!(
        script.matches("curl").count() >= 8,
        "examples not found:\n{script}"
    );
    let mut spec = ClusterSpec::standalone(bin(), 0);
    spec.seed = false;
    let cluster = Cluster::start(spec).await.expect("cluster");
    let password = "examples-admin-pw";
    let m = cluster.start_manager(password, "").await.expect("manager");
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env("MANAGER", &m.rest)
        .env("ADMIN_PASSWORD", password)
        .current_dir(cluster.dir.path())
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the documented examples failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"fra\""), "{stdout}");
    assert!(stdout.contains("admin POST /api/v1/users 201"), "{stdout}");
}
