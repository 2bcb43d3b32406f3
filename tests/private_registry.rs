//! Private registries through the mirror, with the registry's own auth and real clients:
//! Debian's `docker-registry` with htpasswd (HTTP Basic) or with token auth (a token service
//! issuing signed JWTs, the distribution token flow); `ctr --user` configured by
//! `pollen init containerd` on one node and `skopeo --src-creds` configured by
//! `pollen init podman` on another pull one multi-layer image at once. Each node's daemon has a
//! mirror listener bound to the registry (`--registry-mirror`), so skopeo's `/v2/` check meets
//! the registry's own challenge. The registry serves each blob once in total, both daemons'
//! caches hold the image, and without credentials, or with wrong ones, no client gets a byte
//! of a private layer from either node.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use common::{bin, HANG};
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::registry_kit::{self as registry, Containerd, Registry};
use pollen_testkit::token_service::TokenService;

const TOOLS: &[&str] = &[
    "docker-registry",
    "skopeo",
    "umoci",
    "containerd",
    "ctr",
    "htpasswd",
];
const LAYER: usize = 4 << 20;
const CREDS: &str = "alice:s3cret";
const REPO: &str = "private/app";

/// How the registry checks who pulls.
#[derive(Clone, Copy, Debug)]
enum Auth {
    /// htpasswd: `Authorization: Basic` on every request.
    Basic,
    /// A token service: the client trades its password for a JWT at the challenge's realm.
    Token,
}

/// A registry that lets only alice pull, holding a three-layer `private/app:v1`.
struct Private {
    reg: Registry,
    layout: PathBuf,
    tokens: Option<TokenService>,
}

async fn private_registry(dir: &Path, auth: Auth) -> Private {
    let (reg, tokens) = match auth {
        Auth::Basic => {
            let pw = dir.join("htpasswd");
            registry::htpasswd(&pw, "alice", "s3cret")
                .await
                .expect("htpasswd");
            let reg = Registry::start(&dir.join("reg"), Some(&pw))
                .await
                .expect("registry");
            (reg, None)
        }
        Auth::Token => {
            let tokens = TokenService::start(&dir.join("tokens"), "alice", "s3cret")
                .await
                .expect("token service");
            let reg = Registry::start_with_auth(&dir.join("reg"), &tokens.registry_auth_config())
                .await
                .expect("registry");
            (reg, Some(tokens))
        }
    };
    let layout = registry::build_image(&dir.join("img"), 3, LAYER)
        .await
        .expect("image");
    registry::push(&layout, &reg.host, REPO, Some(CREDS))
        .await
        .expect("push with credentials");
    Private {
        reg,
        layout,
        tokens,
    }
}

/// Blob bytes the registry served since `before`.
fn served_since(reg: &Registry, before: &HashMap<String, u64>) -> HashMap<String, u64> {
    reg.blob_bytes_served()
        .into_iter()
        .map(|(k, v)| {
            let b = before.get(&k).copied().unwrap_or(0);
            (k, v - b)
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Every file under `dir` holding one of `secrets`, with the secret.
fn files_holding(dir: &Path, secrets: &[String]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for s in secrets {
                if memchr::memmem::find(&bytes, s.as_bytes()).is_some() {
                    found.push((path.clone(), s.clone()));
                }
            }
        }
    }
    found
}

/// Whether a client's error says the registry (or its token service) refused it.
fn refused(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    [
        "401",
        "unauthorized",
        "authentication required",
        "insufficient_scope",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// `pollen init RUNTIME --registry REGISTRY=OWN` under `root` for `daemon`; its output.
async fn init(
    runtime: &str,
    root: &Path,
    registry: &str,
    own: &str,
    daemon: &DaemonProc,
) -> String {
    registry::pollen_init(
        &bin(),
        runtime,
        root,
        &format!("{registry}={own}"),
        &daemon.proxy_addr().await.expect("proxy"),
    )
    .await
    .expect("pollen init")
}

async fn two_nodes_pull_a_private_image_through_the_swarm(auth: Auth) {
    if !registry::tools_present(TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let p = private_registry(tmp.path(), auth).await;
    let blobs = registry::image_blobs(&p.layout).expect("blobs");
    let pushed = p.reg.blob_bytes_served();
    let registry_url = format!("http://{}", p.reg.host);

    let mut spec = ClusterSpec::new(bin(), 2);
    spec.daemon_args = vec![
        "--registry-mirror".into(),
        format!("{registry_url}=127.0.0.1:0"),
    ];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let (d1, d2) = (&cluster.peers[0], &cluster.peers[1]);
    let m1 = d1
        .registry_mirror_addr(&registry_url)
        .await
        .expect("node 1's registry mirror");
    let m2 = d2
        .registry_mirror_addr(&registry_url)
        .await
        .expect("node 2's registry mirror");

    // Node 1: containerd, configured by `pollen init containerd`.
    let root1 = tmp.path().join("node1");
    let said = init("containerd", &root1, &registry_url, &m1, d1).await;
    assert!(
        said.contains(&format!("--registry-mirror {registry_url}={m1}")),
        "init did not say what the daemon must serve: {said}"
    );
    let hosts_dir = root1.join("etc/containerd/certs.d");
    let hosts = std::fs::read_to_string(hosts_dir.join(&p.reg.host).join("hosts.toml"))
        .expect("hosts.toml");
    assert!(hosts.contains(&format!("http://{m1}")), "{hosts}");
    // Node 2: skopeo, configured by `pollen init podman`.
    let root2 = tmp.path().join("node2");
    init("podman", &root2, &registry_url, &m2, d2).await;
    let conf = root2.join("etc/containers/registries.conf.d/50-pollen.conf");
    assert!(
        std::fs::read_to_string(&conf)
            .expect("drop-in")
            .contains(&format!("location = \"{m2}\"")),
        "the drop-in does not send the registry to its own listener"
    );

    // Both nodes pull at once, with alice's credentials: `ctr --user`, and for skopeo the
    // auth file `podman login` writes, holding them for the registry and for its mirror
    // (containers/image sends a registry's credentials to that registry only, never to a
    // mirror: docs/OPERATIONS.md).
    let ctrd = Containerd::start(&tmp.path().join("node1"))
        .await
        .expect("containerd");
    let reference = format!("{}/{REPO}:v1", p.reg.host);
    let out = tmp.path().join("skopeo-out");
    let alice = tmp.path().join("alice.json");
    registry::authfile(&alice, &[&m2, &p.reg.host], "alice", "s3cret").expect("auth file");
    let (ctr_pull, skopeo_pull) = tokio::join!(
        tokio::time::timeout(HANG, ctrd.pull_as(&hosts_dir, &reference, Some(CREDS))),
        tokio::time::timeout(
            HANG,
            registry::skopeo_pull(&conf, &reference, &out, Some(&alice))
        ),
    );
    ctr_pull.expect("ctr hung").expect("ctr pull failed");
    skopeo_pull
        .expect("skopeo hung")
        .expect("skopeo pull failed");

    // The images are whole: containerd checks every digest as it stores the content; the
    // skopeo copy is checked here.
    let in_containerd = ctrd.content_digests().await.expect("ctr content ls");
    let copied = registry::layout_blobs(&out);
    for b in &blobs {
        assert!(in_containerd.contains(b), "containerd lacks {b}");
        assert!(copied.contains(b), "skopeo's copy lacks {b}");
        let bytes = std::fs::read(registry::blob_path(&out, b)).expect("blob");
        assert_eq!(
            &pollen_core::ContentDigest::of(&bytes).to_string(),
            b,
            "skopeo's {b} differs"
        );
    }
    // Through Pollen on both nodes, and the registry sent each blob once in all.
    let s1 = d1.stat().await.expect("stat");
    let s2 = d2.stat().await.expect("stat");
    assert_eq!(
        s1.proxy_p2p_served,
        blobs.len() as u64,
        "containerd's blobs did not all come through node 1's daemon"
    );
    assert_eq!(
        s2.proxy_p2p_served,
        blobs.len() as u64,
        "skopeo's blobs did not all come through node 2's daemon"
    );
    let pulled = served_since(&p.reg, &pushed);
    for b in &blobs {
        let size = std::fs::metadata(registry::blob_path(&p.layout, b))
            .expect("blob in layout")
            .len();
        assert_eq!(
            pulled.get(b).copied().unwrap_or(0),
            size,
            "the registry served {b} other than once in all: {pulled:?}"
        );
    }
    for d in [d1, d2] {
        d.wait_cached(blobs.len(), HANG)
            .await
            .expect("both caches hold the image");
    }
    if let Some(t) = &p.tokens {
        assert!(
            t.granted.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "no token was issued: the Bearer flow was not exercised"
        );
    }

    // The credentials stayed with the requests that carried them: no file any role wrote
    // (caches, metadata, logs of the daemons, the seed and the scheduler) holds the password,
    // the Basic credentials or a token.
    let mut secrets = vec![
        "s3cret".to_string(),
        base64::engine::general_purpose::STANDARD.encode(CREDS),
    ];
    if let Some(t) = &p.tokens {
        secrets.extend(t.tokens.lock().expect("tokens").iter().cloned());
    }
    assert!(
        secrets.len() > 2 || p.tokens.is_none(),
        "no token to look for"
    );
    let leaks: Vec<String> = files_holding(cluster.dir.path(), &secrets)
        .into_iter()
        .map(|(path, secret)| format!("{} holds {}…", path.display(), &secret[..6]))
        .collect();
    assert!(leaks.is_empty(), "secrets written to disk: {leaks:?}");

    // Without credentials, or with wrong ones, neither client gets anything from either node
    // (both now hold every layer), and the registry sends nothing.
    let before = p.reg.blob_bytes_served();
    let hosts_dir2 = tmp.path().join("node2-ctr");
    init("containerd", &hosts_dir2, &registry_url, &m2, d2).await;
    let hosts_dir2 = hosts_dir2.join("etc/containerd/certs.d");
    let wrong = tmp.path().join("wrong.json");
    registry::authfile(&wrong, &[&m2, &p.reg.host], "alice", "wrong").expect("auth file");
    for (who, creds, authfile) in [
        ("anonymous", None, None),
        ("wrong password", Some("alice:wrong"), Some(&wrong)),
    ] {
        let fresh = Containerd::start(&tmp.path().join(format!("ctr-{}", creds.is_some())))
            .await
            .expect("containerd");
        for hd in [&hosts_dir, &hosts_dir2] {
            let r = tokio::time::timeout(HANG, fresh.pull_as(hd, &reference, creds))
                .await
                .expect("ctr hung");
            let e = r.expect_err("ctr pulled the private image").to_string();
            assert!(
                refused(&e),
                "ctr ({who}) failed otherwise than refused: {e}"
            );
        }
        assert!(
            fresh.content_digests().await.expect("ls").is_empty(),
            "a refused containerd ({who}) stored content"
        );
        fresh.stop().await;
        let refused_out = tmp.path().join(format!("refused-{}", creds.is_some()));
        let r = tokio::time::timeout(
            HANG,
            registry::skopeo_pull(
                &conf,
                &reference,
                &refused_out,
                authfile.map(|p| p.as_path()),
            ),
        )
        .await
        .expect("skopeo hung");
        let e = r.expect_err("skopeo pulled the private image").to_string();
        assert!(
            refused(&e),
            "skopeo ({who}) failed otherwise than refused: {e}"
        );
        let got = registry::layout_blobs(&refused_out);
        assert!(
            blobs.iter().all(|b| !got.contains(b)),
            "skopeo ({who}) got a blob: {got:?}"
        );
    }
    // Straight at every mirror door of both nodes, blob by blob.
    let client = reqwest::Client::new();
    let mut doors = vec![format!("http://{m1}"), format!("http://{m2}")];
    for d in [d1, d2] {
        doors.push(format!(
            "http://{}/v2/pollen-registry/http/{}",
            d.proxy_addr().await.expect("proxy"),
            p.reg.host.replace(':', "_")
        ));
    }
    for door in &doors {
        let base = door.strip_suffix('/').unwrap_or(door);
        for b in &blobs {
            let url = if base.contains("/v2/") {
                format!("{base}/{REPO}/blobs/{b}")
            } else {
                format!("{base}/v2/{REPO}/blobs/{b}")
            };
            for wrong in [false, true] {
                let mut req = client.get(&url);
                if wrong {
                    req = req.basic_auth("alice", Some("wrong"));
                }
                let resp = req.send().await.expect("the mirror answers");
                assert_eq!(resp.status(), 401, "{url} (wrong password: {wrong})");
                let body = resp.bytes().await.expect("body");
                assert!(body.len() < 4096, "{url} sent {} bytes", body.len());
            }
        }
    }
    assert_eq!(
        served_since(&p.reg, &before),
        HashMap::new(),
        "the registry served blob bytes to a refused client"
    );
    let after1 = d1.stat().await.expect("stat");
    let after2 = d2.stat().await.expect("stat");
    assert_eq!(
        (after1.proxy_p2p_served, after2.proxy_p2p_served),
        (s1.proxy_p2p_served, s2.proxy_p2p_served),
        "a mirror served a private blob to a refused client"
    );
    if let Some(t) = &p.tokens {
        assert!(
            t.refused.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "the token service never saw the wrong password"
        );
    }
    ctrd.stop().await;
    p.reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_image_behind_basic_auth_is_pulled_through_the_swarm_by_ctr_and_skopeo() {
    two_nodes_pull_a_private_image_through_the_swarm(Auth::Basic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_image_behind_token_auth_is_pulled_through_the_swarm_by_ctr_and_skopeo() {
    two_nodes_pull_a_private_image_through_the_swarm(Auth::Token).await;
}
