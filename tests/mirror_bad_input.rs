//! Hostile and broken input on the mirror and proxy port: malformed paths and digests, a blob
//! whose bytes do not match its digest, an enormous header, a CONNECT tunnel, a client that
//! leaves mid-blob. Each gets a clear HTTP error or a clean tunnel, the daemon keeps serving,
//! and nothing corrupt is cached.

mod common;

use std::time::Duration;

use common::{bin, mount_tmpfs, origin, unmount, MIB};
use pollen_core::ContentDigest;
use pollen_testkit::cluster::{Cluster, ClusterSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn one_daemon() -> (Cluster, String) {
    let cluster = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("daemon starts");
    let proxy = cluster.peers[0].proxy_addr().await.expect("proxy addr");
    (cluster, proxy)
}

/// How a raw exchange ended.
#[derive(Debug, PartialEq)]
enum Ending {
    /// The server closed the connection (or reset it).
    Closed,
    /// The server said nothing more for five seconds, with the connection still open.
    Silent,
}

/// Sends raw bytes, returns what comes back until the server closes or goes quiet.
async fn raw(addr: &str, request: &[u8]) -> String {
    raw_ending(addr, request).await.0
}

/// [`raw`], and how it ended. A write the server cut short counts as closed.
async fn raw_ending(addr: &str, request: &[u8]) -> (String, Ending) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let ending = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Ending::Closed,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break Ending::Silent,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), ending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_paths_digests_and_headers_get_clear_errors() {
    let o = origin(MIB).await;
    let (cluster, proxy) = one_daemon().await;
    let registry = format!("http://{}", o.addr);
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("http://{proxy}{path}"))
            .header("X-Pollen-Registry", &registry)
            .send()
    };
    for (path, status, code) in [
        ("/v2/UPPER/case/blobs/sha256:00", 400, "NAME_INVALID"),
        ("/v2/a/blobs/sha256:zz", 400, "DIGEST_INVALID"),
        ("/v2/a/blobs/not-a-digest", 400, "DIGEST_INVALID"),
        ("/v2/a/blobs/", 404, "UNSUPPORTED"),
        (
            "/v2/pollen-registry/ftp/x/a/blobs/sha256:00",
            400,
            "NAME_INVALID",
        ),
    ] {
        let r = get(path).await.expect("answer");
        assert_eq!(r.status(), status, "{path}");
        let body = r.text().await.expect("body");
        assert!(body.contains(code), "{path}: {body}");
    }
    let r = client
        .get(format!("http://{proxy}/v2/a/blobs/sha256:00"))
        .header("X-Pollen-Registry", "ftp://nowhere")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    // (A client library would normalise the dots away; a raw request keeps them.)
    let answer = raw(
        &proxy,
        b"GET /v2/a/../b/blobs/sha256:00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("NAME_INVALID"),
        "{answer}"
    );
    let r = client
        .post(format!("http://{proxy}/v2/a/blobs/uploads/"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 405, "pushes are refused");

    // A request head far over the limit is refused before it is buffered; the port still works.
    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let (answer, ending) = raw_ending(&proxy, huge.as_bytes()).await;
    // Refused means a 431, or the connection closed before the head was read; not silence.
    assert_eq!(
        ending,
        Ending::Closed,
        "an enormous header was left hanging"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "enormous header answered with {:?}",
        answer.lines().next()
    );
    let r = client
        .get(format!("http://{proxy}/healthz"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(r.status(), 200);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_that_does_not_match_its_digest_is_aborted_and_not_cached() {
    let o = origin(12 * MIB).await;
    let (cluster, proxy) = one_daemon().await;
    let wrong = ContentDigest::of(b"something else");
    let r = reqwest::Client::new()
        .get(format!("http://{proxy}/v2/lying/registry/blobs/{wrong}"))
        .header("X-Pollen-Registry", format!("http://{}", o.addr))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(
        r.status(),
        200,
        "the status line goes out before the bytes are checked"
    );
    let announced = r.content_length().expect("length");
    match r.bytes().await {
        Err(_) => {}
        Ok(b) => panic!(
            "the client received a complete body ({} of {announced} bytes) for a wrong digest",
            b.len()
        ),
    }
    let stat = cluster.peers[0].stat().await.expect("stat");
    assert!(stat.proxy_aborted >= 1, "no abort counted");
    assert!(
        stat.tasks.iter().all(|t| !t.complete),
        "a task with the wrong content is complete in the cache: {:?}",
        stat.tasks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_leaving_mid_blob_leaves_a_good_cache_and_connect_tunnels_cleanly() {
    let o = origin(32 * MIB).await;
    let (cluster, proxy) = one_daemon().await;
    let url = format!("http://{proxy}/v2/test/app/blobs/{}", o.digest());
    let registry = format!("http://{}", o.addr);
    let client = reqwest::Client::new();
    let blob = || client.get(&url).header("X-Pollen-Registry", &registry);

    // Leave after the first chunk.
    let mut r = blob().send().await.expect("answer");
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.expect("a chunk").expect("not empty");
    assert!(!first.is_empty());
    drop(r);

    // The next client gets the whole blob, verified.
    let r = blob().send().await.expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], o.digest().to_string());
    let body = r.bytes().await.expect("whole body");
    assert_eq!(ContentDigest::of(&body), o.digest());
    // The body can be whole before the cache has finished its own whole-content check and
    // marked the task complete; that follows shortly.
    let deadline = std::time::Instant::now() + common::HANG;
    let stat = loop {
        let stat = cluster.peers[0].stat().await.expect("stat");
        if stat.tasks.iter().any(|t| t.complete) {
            break stat;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", stat.tasks);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stat.proxy_aborted, 0);

    // A Range request for held pieces is answered from them.
    let r = blob()
        .header("Range", "bytes=100-199")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.expect("range").as_ref(), &body[100..200]);

    // CONNECT to a host no rule matches: a plain tunnel, bytes untouched.
    let mut s = TcpStream::connect(&proxy).await.expect("connect");
    let target = o.addr.to_string();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(
        format!(
            "GET /blob HTTP/1.1\r\nHost: {target}\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write through the tunnel");
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .expect("read through the tunnel");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 206"), "{text}");
    assert!(out.ends_with(&body[..10]));

    // CONNECT without a port, and to a port nothing listens on.
    let answer = raw(
        &proxy,
        b"CONNECT nowhere HTTP/1.1\r\nHost: nowhere\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let answer = raw(
        &proxy,
        format!("CONNECT {closed} HTTP/1.1\r\nHost: {closed}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_cache_disk_does_not_break_a_pull() {
    // Mounting a small tmpfs needs root.
    if !pollen_testkit::tools::runs(&[pollen_testkit::tools::Need::root()]) {
        return;
    }
    let o = origin(32 * MIB).await;
    let work = tempfile::tempdir().expect("tmp");
    let small = work.path().join("data");
    assert!(mount_tmpfs(&small, "8m"), "cannot mount a tmpfs");
    let mut spec = ClusterSpec::standalone(bin(), 1);
    spec.data_root = Some(small.clone());
    let cluster = Cluster::start(spec).await.expect("daemon");
    let d = &cluster.peers[0];
    let proxy = d.proxy_addr().await.expect("proxy");
    let r = reqwest::Client::new()
        .get(format!("http://{proxy}/v2/big/blob/blobs/{}", o.digest()))
        .header("X-Pollen-Registry", format!("http://{}", o.addr))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let body = r
        .bytes()
        .await
        .expect("the whole blob despite the full disk");
    assert_eq!(ContentDigest::of(&body), o.digest());
    let stat = d.stat().await.expect("stat");
    assert_eq!(
        stat.proxy_fallbacks, 1,
        "the rest did not come from the registry"
    );
    assert!(stat.tasks.iter().all(|t| !t.complete));
    drop(cluster);
    unmount(&small);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_range_request_for_an_unheld_blob_is_relayed_and_prefetches_it() {
    let o = origin(8 * MIB).await;
    let work = tempfile::tempdir().expect("tmp");
    let config = work.path().join("daemon.toml");
    std::fs::write(&config, "[proxy]\nprefetch = true\n").expect("config");
    let mut spec = ClusterSpec::standalone(bin(), 1);
    spec.daemon_args = vec!["--config".into(), config.to_string_lossy().into_owned()];
    let cluster = Cluster::start(spec).await.expect("daemon");
    let d = &cluster.peers[0];
    let proxy = d.proxy_addr().await.expect("proxy");
    let r = reqwest::Client::new()
        .get(format!("http://{proxy}/v2/a/b/blobs/{}", o.digest()))
        .header("X-Pollen-Registry", format!("http://{}", o.addr))
        .header("Range", "bytes=10-19")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.expect("range").len(), 10);
    // The whole blob lands in the cache in the background.
    let deadline = std::time::Instant::now() + common::HANG;
    loop {
        let stat = d.stat().await.expect("stat");
        if stat.tasks.iter().any(|t| t.complete) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "prefetch never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_clients_are_cut_off_without_starving_others() {
    let work = tempfile::tempdir().expect("tmp");
    let config = work.path().join("daemon.toml");
    std::fs::write(
        &config,
        "[proxy]\nmax_connections = 4\nheader_read_timeout = \"1s\"\n",
    )
    .expect("config");
    let mut spec = ClusterSpec::standalone(bin(), 1);
    spec.daemon_args = vec!["--config".into(), config.to_string_lossy().into_owned()];
    let cluster = Cluster::start(spec).await.expect("daemon");
    let proxy = cluster.peers[0].proxy_addr().await.expect("proxy");

    // Every connection slot taken: two idle clients and two sending a header a byte at a
    // time, every 100 ms, for as long as the server lets them. An idle timeout would never cut
    // the drippers off (they are never quiet); only a deadline on the whole head does.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(&proxy).await.expect("connect"));
    }
    let mut drippers = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&proxy).await.expect("connect");
        s.write_all(b"GET /v2/ HTTP/1.1\r\nX-Slow: ")
            .await
            .expect("write");
        drippers.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => {
                        let n = r.unwrap_or(0);
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        return (started.elapsed(), text);
                    }
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if s.write_all(b"a").await.is_err() {
                            return (started.elapsed(), String::new());
                        }
                    }
                }
            }
        }));
    }
    // A well-behaved client still gets its answer once the header deadline frees a slot.
    let answer = async {
        reqwest::Client::new()
            .get(format!("http://{proxy}/healthz"))
            .send()
            .await
            .expect("answered")
            .status()
    };
    let status = tokio::time::timeout(common::HANG, answer).await;
    assert_eq!(status.expect("not starved"), 200);
    // The drippers were cut off while still sending, by the head's deadline.
    for d in drippers {
        let (after, text) = tokio::time::timeout(common::HANG, d)
            .await
            .expect("a client dripping its header was never cut off")
            .expect("dripper");
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
        // Cut at the 1 s deadline, not at once (a lower bound: a slow machine only cuts later).
        assert!(after >= Duration::from_millis(900), "cut after {after:?}");
    }
    // The idle ones were cut off too.
    for mut s in idle {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the server closed the connection")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
}
