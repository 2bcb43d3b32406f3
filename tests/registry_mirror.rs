//! The registry mirror with a real registry and real clients: containerd (`ctr`, configured by
//! `pollen init containerd`) and skopeo (configured by `pollen init podman`) pull one image
//! through two daemons, and the registry serves each blob at most once; a second registry
//! holding the same layers serves none; pulls survive the loss of the scheduler and of every
//! peer's upload port.

mod common;

use std::path::Path;

use common::{bin, HANG};
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::registry_kit::{self as registry, BlockedPorts, Containerd, Registry};

const TOOLS: &[&str] = &["docker-registry", "skopeo", "umoci", "containerd", "ctr"];
const LAYER: usize = 6 << 20;

/// skopeo's registries.conf from `pollen init podman` for `registry`, via `daemon`'s mirror.
async fn podman_conf(root: &Path, registry: &str, daemon: &DaemonProc) -> std::path::PathBuf {
    let mirror = daemon.proxy_addr().await.expect("proxy addr");
    registry::pollen_init(
        &bin(),
        "podman",
        root,
        &format!("http://{registry}"),
        &mirror,
    )
    .await
    .expect("pollen init podman");
    root.join("etc/containers/registries.conf.d/50-pollen.conf")
}

/// A registry that wants alice's basic auth (password s3cret), holding `private/app:v1`
/// with `layers` layers; returns it and the image's layout.
async fn private_registry(dir: &Path, layers: usize) -> (Registry, std::path::PathBuf) {
    let pw = dir.join("htpasswd");
    registry::htpasswd(&pw, "alice", "s3cret")
        .await
        .expect("htpasswd");
    let reg = Registry::start(&dir.join("reg"), Some(&pw))
        .await
        .expect("registry");
    let layout = registry::build_image(&dir.join("img"), layers, LAYER)
        .await
        .expect("image");
    registry::push(&layout, &reg.host, "private/app", Some("alice:s3cret"))
        .await
        .expect("push");
    (reg, layout)
}

/// Every blob in `served` was sent exactly once, whole: the seed's one fetch.
fn exactly_once(served: &std::collections::HashMap<String, u64>, blobs: &[String], layout: &Path) {
    assert!(!blobs.is_empty());
    for b in blobs {
        let size = std::fs::metadata(
            layout
                .join("blobs/sha256")
                .join(b.trim_start_matches("sha256:")),
        )
        .expect("blob in layout")
        .len();
        let got = served.get(b).copied().unwrap_or(0);
        assert_eq!(
            got, size,
            "the registry served {b} {got} bytes, not its {size} once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_and_skopeo_pull_through_two_daemons_and_the_registry_serves_each_blob_once() {
    if !registry::tools_present(TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = Registry::start(&tmp.path().join("reg-a"), None)
        .await
        .expect("registry");
    let layout = registry::build_image(&tmp.path().join("img"), 3, LAYER)
        .await
        .expect("image");
    registry::push(&layout, &reg.host, "test/app", None)
        .await
        .expect("push");
    let blobs = registry::image_blobs(&layout).expect("blobs");
    let pushed = reg.blob_bytes_served();

    // CRI-O and Podman cannot say which registry their `/v2/` check is for: it goes to the
    // daemon's default registry, so that is this one.
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.daemon_args = vec!["--default-registry".into(), format!("http://{}", reg.host)];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let (d1, d2) = (&cluster.peers[0], &cluster.peers[1]);
    let root = tmp.path().join("root");

    // containerd through daemon 1, configured by `pollen init containerd`.
    let mirror1 = d1.proxy_addr().await.expect("proxy");
    let said = registry::pollen_init(
        &bin(),
        "containerd",
        &root,
        &format!("http://{}", reg.host),
        &mirror1,
    )
    .await
    .expect("pollen init containerd");
    assert!(said.contains("hosts.toml"), "{said}");
    let hosts_dir = root.join("etc/containerd/certs.d");
    assert!(hosts_dir.join(&reg.host).join("hosts.toml").exists());
    let ctrd = Containerd::start(tmp.path()).await.expect("containerd");
    let reference = format!("{}/test/app:v1", reg.host);
    tokio::time::timeout(HANG, ctrd.pull(&hosts_dir, &reference))
        .await
        .expect("ctr pull hung")
        .expect("pull failed");
    let in_containerd = ctrd.content_digests().await.expect("ctr content ls");
    for b in &blobs {
        assert!(
            in_containerd.contains(b),
            "containerd lacks {b}: {in_containerd:?}"
        );
    }

    // skopeo through daemon 2, configured by `pollen init podman`.
    let conf = podman_conf(&root, &reg.host, d2).await;
    let out = tmp.path().join("skopeo-out");
    tokio::time::timeout(HANG, registry::skopeo_pull(&conf, &reference, &out, None))
        .await
        .expect("skopeo hung")
        .expect("pull failed");
    let copied = registry::layout_blobs(&out);
    for b in &blobs {
        assert!(copied.contains(b), "skopeo's copy lacks {b}: {copied:?}");
        let bytes = std::fs::read(
            out.join("blobs/sha256")
                .join(b.trim_start_matches("sha256:")),
        )
        .expect("blob");
        assert_eq!(
            &pollen_core::ContentDigest::of(&bytes).to_string(),
            b,
            "skopeo's {b} differs"
        );
    }

    // The registry sent each blob exactly once beyond the push's own reads: to the seed.
    let served = reg.blob_bytes_served();
    let pulled: std::collections::HashMap<String, u64> = served
        .iter()
        .map(|(k, v)| (k.clone(), v - pushed.get(k).copied().unwrap_or(0)))
        .collect();
    exactly_once(&pulled, &blobs, &layout);
    let s1 = d1.stat().await.expect("stat");
    let s2 = d2.stat().await.expect("stat");
    assert!(
        s1.p2p_download_bytes + s2.p2p_download_bytes >= (3 * LAYER) as u64,
        "the daemons got too little from peers: {} + {}",
        s1.p2p_download_bytes,
        s2.p2p_download_bytes
    );
    assert_eq!(
        s1.origin_bytes + s2.origin_bytes,
        0,
        "a daemon went to the registry itself"
    );
    assert_eq!(
        s1.proxy_p2p_served,
        blobs.len() as u64,
        "containerd's blobs did not come through daemon 1"
    );
    assert_eq!(
        s2.proxy_p2p_served,
        blobs.len() as u64,
        "skopeo's blobs did not come through daemon 2"
    );

    // The same layers in a second registry under another name: pulled through daemon 1,
    // neither registry sends a blob byte.
    let reg_b = Registry::start(&tmp.path().join("reg-b"), None)
        .await
        .expect("registry");
    registry::run(tokio::process::Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("docker://{}/other/app:v1", reg_b.host),
    ]))
    .await
    .expect("copy to registry B");
    let a_before = reg.blob_bytes_served();
    let b_before = reg_b.blob_bytes_served();
    let conf_b = podman_conf(&tmp.path().join("root-b"), &reg_b.host, d1).await;
    let out_b = tmp.path().join("skopeo-out-b");
    registry::skopeo_pull(
        &conf_b,
        &format!("{}/other/app:v1", reg_b.host),
        &out_b,
        None,
    )
    .await
    .expect("pull from registry B");
    assert_eq!(registry::layout_blobs(&out_b), copied);
    // The logs these maps come from are live: A's counted the blobs it served above, and
    // B's holds the manifest request this pull made through the mirror.
    assert!(blobs
        .iter()
        .all(|b| a_before.get(b).is_some_and(|n| *n > 0)));
    assert!(
        reg_b.requests_logged("GET", "/manifests/") > 0,
        "registry B logged no manifest request"
    );
    assert_eq!(
        reg.blob_bytes_served(),
        a_before,
        "registry A served blob bytes again"
    );
    assert_eq!(
        reg_b.blob_bytes_served(),
        b_before,
        "registry B served blob bytes"
    );

    ctrd.stop().await;
    reg.stop().await;
    reg_b.stop().await;
}

/// The upload address of every daemon.
async fn upload_addrs(cluster: &Cluster) -> Vec<std::net::SocketAddr> {
    let mut addrs = Vec::new();
    for d in cluster.daemons() {
        addrs.push(d.upload_addr().await.expect("upload addr"));
    }
    addrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_succeed_with_every_upload_port_blocked_and_without_a_scheduler() {
    if !registry::tools_present(&[TOOLS, &["iptables"]].concat()) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = Registry::start(&tmp.path().join("reg"), None)
        .await
        .expect("registry");
    let first = registry::build_image(&tmp.path().join("img1"), 2, LAYER)
        .await
        .expect("image");
    registry::push(&first, &reg.host, "test/one", None)
        .await
        .expect("push");
    let second = registry::build_image(&tmp.path().join("img2"), 2, LAYER)
        .await
        .expect("image");
    registry::push(&second, &reg.host, "test/two", None)
        .await
        .expect("push");
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.daemon_args = vec!["--default-registry".into(), format!("http://{}", reg.host)];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let d1 = &cluster.peers[0];

    // No peer can reach another's upload port: the seed fetches, but nobody can get pieces
    // from it; the pull still completes.
    let blocked = BlockedPorts::block(&upload_addrs(&cluster).await).expect("iptables");
    let conf = podman_conf(&tmp.path().join("root"), &reg.host, d1).await;
    let out = tmp.path().join("out1");
    tokio::time::timeout(
        HANG,
        registry::skopeo_pull(&conf, &format!("{}/test/one:v1", reg.host), &out, None),
    )
    .await
    .expect("pull with upload ports blocked hung")
    .expect("pull failed");
    let blobs = registry::image_blobs(&first).expect("blobs");
    for b in &blobs {
        assert!(registry::layout_blobs(&out).contains(b), "missing {b}");
    }
    let served = d1.stat().await.expect("stat");
    assert_eq!(
        served.proxy_p2p_served + served.proxy_fallbacks,
        blobs.len() as u64,
        "the blobs did not come through the mirror"
    );
    // The block took effect: connections to upload ports were turned away, and no byte
    // reached this daemon from a peer, so the pull's bytes came from the origin.
    let rejected = blocked.rejected_packets().expect("iptables counters");
    assert!(
        rejected > 0,
        "no connection to an upload port was tried and refused"
    );
    assert_eq!(
        served.p2p_download_bytes, 0,
        "a peer's bytes got through the block"
    );
    assert!(served.origin_bytes > 0, "the blobs came from nowhere");
    drop(blocked);

    // No scheduler at all: straight from the registry, and the daemon says why.
    let log_before = d1.log_text().len();
    cluster.kill_scheduler();
    let out = tmp.path().join("out2");
    tokio::time::timeout(
        HANG,
        registry::skopeo_pull(&conf, &format!("{}/test/two:v1", reg.host), &out, None),
    )
    .await
    .expect("pull without a scheduler hung")
    .expect("pull failed");
    let blobs2 = registry::image_blobs(&second).expect("blobs");
    for b in &blobs2 {
        assert!(registry::layout_blobs(&out).contains(b), "missing {b}");
    }
    let after = d1.stat().await.expect("stat");
    assert_eq!(
        after.proxy_p2p_served + after.proxy_fallbacks,
        (blobs.len() + blobs2.len()) as u64,
        "the second image's blobs did not come through the mirror"
    );
    let log = d1.log_text();
    let since_kill = &log[log_before.min(log.len())..];
    assert!(
        since_kill.contains("downloading from the origin"),
        "after the scheduler died the daemon did not say it went to the origin:\n{since_kill}"
    );
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_blob_in_the_cache_is_refused_to_a_client_the_registry_refuses() {
    if !registry::tools_present(&[TOOLS, &["htpasswd"]].concat()) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (reg, layout) = private_registry(tmp.path(), 1).await;
    let mut spec = ClusterSpec::new(bin(), 1);
    spec.daemon_args = vec!["--default-registry".into(), format!("http://{}", reg.host)];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let d1 = &cluster.peers[0];
    let conf = podman_conf(&tmp.path().join("root"), &reg.host, d1).await;

    // With credentials: the pull works (and fills the daemon's cache).
    let out = tmp.path().join("out");
    let reference = format!("{}/private/app:v1", reg.host);
    let mirror = d1.proxy_addr().await.expect("proxy");
    let auth = tmp.path().join("auth.json");
    registry::authfile(&auth, &[&mirror, &reg.host], "alice", "s3cret").expect("auth file");
    tokio::time::timeout(
        HANG,
        registry::skopeo_pull(&conf, &reference, &out, Some(&auth)),
    )
    .await
    .expect("authorised pull hung")
    .expect("pull failed");
    let blobs = registry::image_blobs(&layout).expect("blobs");
    d1.wait_cached(blobs.len(), HANG)
        .await
        .expect("blobs cached");

    // Without: the same daemon answers with the registry's 401 and challenge, not the bytes.
    let client = reqwest::Client::new();
    for b in &blobs {
        let url = format!("http://{mirror}/v2/private/app/blobs/{b}?ns={}", reg.host);
        let resp = client.get(&url).send().await.expect("mirror answers");
        assert_eq!(resp.status(), 401, "anonymous GET of {b}");
        assert!(
            resp.headers().contains_key("www-authenticate"),
            "no challenge passed through"
        );
        let body = resp.bytes().await.expect("body");
        assert!(
            body.len() < 4096,
            "an anonymous client got {} bytes",
            body.len()
        );
        // Wrong credentials fare no better.
        let resp = client
            .get(&url)
            .basic_auth("alice", Some("wrong"))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 401);
    }
    reg.stop().await;
}

/// Runs `pollen preheat` with `args`; its exit status, stdout and stderr.
/// Pulls `reference` with skopeo through `daemon`'s mirror (as alice) and checks that every
/// blob arrived and that the registry sent none of `blobs` beyond what `before` counted.
async fn pull_takes_no_blob_bytes(
    tmp: &Path,
    reg: &Registry,
    daemon: &DaemonProc,
    reference: &str,
    blobs: &[String],
    before: &std::collections::HashMap<String, u64>,
) {
    let conf = podman_conf(&tmp.join("root"), &reg.host, daemon).await;
    let mirror = daemon.proxy_addr().await.expect("proxy");
    let auth = tmp.join("auth.json");
    registry::authfile(&auth, &[&mirror, &reg.host], "alice", "s3cret").expect("auth file");
    let pulled = tmp.join("pulled");
    tokio::time::timeout(
        HANG,
        registry::skopeo_pull(&conf, reference, &pulled, Some(&auth)),
    )
    .await
    .expect("pull hung")
    .expect("pull failed");
    let copied = registry::layout_blobs(&pulled);
    let after = reg.blob_bytes_served();
    for b in blobs {
        assert!(copied.contains(b), "the pull lacks {b}");
        assert!(
            before.get(b).is_some_and(|n| *n > 0),
            "the access log shows no fetch of {b} before the pull (the preheat's)"
        );
        assert_eq!(
            after.get(b),
            before.get(b),
            "the registry served {b} again after the preheat"
        );
    }
}

async fn preheat(args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        HANG,
        tokio::process::Command::new(bin())
            .arg("preheat")
            .args(args)
            .output(),
    )
    .await
    .expect("preheat hung")
    .expect("preheat runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_preheated_on_the_seed_is_pulled_without_blob_bytes_from_the_registry() {
    if !registry::tools_present(&[TOOLS, &["htpasswd"]].concat()) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (reg, layout) = private_registry(tmp.path(), 2).await;
    let blobs = registry::image_blobs(&layout).expect("blobs");
    let mut spec = ClusterSpec::new(bin(), 1);
    spec.daemon_args = vec!["--default-registry".into(), format!("http://{}", reg.host)];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let seed = cluster.seed.as_ref().expect("seed");
    let socket = seed.socket.to_string_lossy().into_owned();
    let reference = format!("{}/private/app:v1", reg.host);

    // Wrong credentials: a clear error, nothing fetched.
    let (ok, _, err) = preheat(&[
        &reference,
        "--api-socket",
        &socket,
        "--username",
        "alice",
        "--password",
        "wrong",
    ])
    .await;
    assert!(!ok, "preheat succeeded with a wrong password");
    assert!(
        err.contains("refused the credentials"),
        "unclear error: {err}"
    );

    // Right ones: every blob of the image lands in the seed's cache.
    let (ok, out, err) = preheat(&[
        &reference,
        "--api-socket",
        &socket,
        "--username",
        "alice",
        "--password",
        "s3cret",
    ])
    .await;
    assert!(ok, "preheat failed: {err}");
    for b in &blobs {
        assert!(out.contains(&format!("{b} ")), "{b} not preheated: {out}");
    }
    let held = seed.stat().await.expect("stat");
    assert_eq!(
        held.tasks.iter().filter(|t| t.complete).count(),
        blobs.len(),
        "{:?}",
        held.tasks
    );
    assert!(!err.contains("s3cret") && !out.contains("s3cret"));
    let before = reg.blob_bytes_served();

    // A pull through the other daemon's mirror now takes no blob bytes from the registry.
    pull_takes_no_blob_bytes(
        tmp.path(),
        &reg,
        &cluster.peers[0],
        &reference,
        &blobs,
        &before,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manager_preheat_job_by_image_reference_leaves_no_blob_for_the_registry_to_send() {
    use common::manager::{control_plane, daemon, empty_cluster};
    if !registry::tools_present(&[TOOLS, &["htpasswd"]].concat()) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (reg, layout) = private_registry(tmp.path(), 2).await;
    let blobs = registry::image_blobs(&layout).expect("blobs");
    let cluster = empty_cluster().await;
    let (m, admin, _s) = control_plane(&cluster, "").await;
    let default_registry = format!("http://{}", reg.host);
    let mut seed = daemon(&cluster, &m, "seed", "127.0.0.10", &["--seed"]);
    let mut node = daemon(
        &cluster,
        &m,
        "node",
        "127.0.0.11",
        &[
            "--proxy-listen",
            "127.0.0.11:0",
            "--default-registry",
            &default_registry,
        ],
    );
    for d in [&mut seed, &mut node] {
        d.start().await.expect("daemon");
        d.wait_connected().await.expect("connected");
    }
    admin.wait_for_seeds(1).await;
    let reference = format!("{}/private/app:v1", reg.host);

    // Wrong credentials: the job fails and says why.
    let job = admin
        .run_job(serde_json::json!({"type": "preheat", "image": reference,
                                    "username": "alice", "password": "wrong"}))
        .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or("")
            .contains("refused the credentials"),
        "{job}"
    );

    // The right ones: the job succeeds with every blob on the seed.
    let job = admin
        .run_job(serde_json::json!({"type": "preheat", "image": reference,
                                    "username": "alice", "password": "s3cret"}))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["results"].as_array().map(Vec::len),
        Some(blobs.len()),
        "{job}"
    );
    assert!(!job.to_string().contains("s3cret"));
    let before = reg.blob_bytes_served();

    // A pull through the node's mirror takes no blob bytes from the registry.
    pull_takes_no_blob_bytes(tmp.path(), &reg, &node, &reference, &blobs, &before).await;
}

/// A registry an attacker runs: it says it holds every blob asked of it (`len` bytes) and
/// serves zeros. Returns its `host:port` and how many GETs it answered.
fn lying_registry(len: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let gets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = gets.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let get = buf[..n].starts_with(b"GET ");
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.write_all(head.as_bytes());
            if get {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = conn.write_all(&vec![0u8; len]);
            }
        }
    });
    (host, gets)
}

/// (e) Alice pulls a private layer through the mirror with her credentials, so the daemon
/// holds it. An attacker who knows the layer's digest asks the same mirror for it, naming a
/// registry it runs that says yes to everything, with and without credentials of its own:
/// it never gets the layer's bytes, because a blob fetched with credentials is a task bound
/// to its registry and repository, not to the bare digest (`pollen_core::task_id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_blob_is_not_served_to_a_client_naming_another_registry() {
    if !registry::tools_present(&[TOOLS, &["htpasswd"]].concat()) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (reg, layout) = private_registry(tmp.path(), 1).await;
    let cluster = Cluster::start(ClusterSpec::new(bin(), 1))
        .await
        .expect("cluster");
    let d = &cluster.peers[0];
    let mirror = d.proxy_addr().await.expect("proxy");
    let blobs = registry::image_blobs(&layout).expect("blobs");
    let layer = blobs
        .iter()
        .map(|b| {
            (
                b,
                std::fs::read(registry::blob_path(&layout, b)).expect("blob"),
            )
        })
        .max_by_key(|(_, bytes)| bytes.len())
        .expect("a layer");
    let (digest, bytes) = layer;
    let client = reqwest::Client::new();

    // Alice, with her credentials: served, and held by the daemon afterwards.
    let url = format!(
        "http://{mirror}/v2/private/app/blobs/{digest}?ns={}",
        reg.host
    );
    let resp = client
        .get(&url)
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .expect("mirror answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.expect("body")[..], &bytes[..]);
    let deadline = std::time::Instant::now() + HANG;
    while !d
        .stat()
        .await
        .expect("stat")
        .tasks
        .iter()
        .any(|t| t.complete)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the layer was not cached"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The attacker names its own registry.
    let (liar, gets) = lying_registry(bytes.len());
    let url = format!("http://{mirror}/v2/private/app/blobs/{digest}?ns={liar}");
    for creds in [None, Some(("mallory", "own-password"))] {
        let mut req = client.get(&url);
        if let Some((user, pw)) = creds {
            req = req.basic_auth(user, Some(pw));
        }
        let resp = req.send().await.expect("mirror answers");
        if let Ok(body) = resp.bytes().await {
            assert_ne!(
                &body[..],
                &bytes[..],
                "the attacker got alice's private layer (credentials: {creds:?})"
            );
        }
    }
    assert!(
        gets.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the attacker's registry was never read: the mirror answered from elsewhere"
    );
    reg.stop().await;
}
