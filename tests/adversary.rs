//! The adversary suite: each test plays one attack against real daemons and shows it refused or
//! harmless (docs/SECURITY.md lists them with the rule each one checks).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::registry_kit::tools_present;

/// A network namespace with only loopback up, removed on drop: nothing started in it can
/// reach any address outside this machine, even if the guard under test fails.
struct SealedNetns {
    name: String,
}

impl SealedNetns {
    fn new(tag: &str) -> Self {
        let name = format!("pollen-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let ok = std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?} failed");
        };
        // A namespace left by a killed run whose pid this one reuses would fail the add.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// Files under `/etc/netns/NAME/` replace those of `/etc` for `ip netns exec`.
    fn etc(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }

    /// A listener on loopback inside the namespace (bound from a thread that entered it).
    fn listen(&self) -> TcpListener {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("netns handle");
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                TcpListener::bind("127.0.0.1:0").expect("bind in netns")
            })
            .join()
            .expect("thread")
        })
    }
}

impl Drop for SealedNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(self.etc());
    }
}

/// An origin that counts the connections it accepts and answers each with a redirect to the
/// metadata address.
fn counting_redirector(listener: TcpListener) -> Arc<AtomicUsize> {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    seen
}

async fn refused(d: &DaemonProc, url: &str, out: &std::path::Path) -> String {
    match download_within(d, url, out).await {
        Ok(()) => panic!("{}: {url} was downloaded; the guard let it through", d.name),
        Err(s) => s.message().to_string(),
    }
}

fn assert_guard(msg: &str, rule: &str) {
    assert!(
        msg.contains("origin guard refused") && msg.contains(rule),
        "expected the origin guard's refusal naming {rule:?}, got: {msg}"
    );
}

/// (d) Downloads aimed at cloud metadata, link-local and (for a seed) loopback addresses are
/// refused by the guard before any connection is tried: by IP literal, by a name that
/// resolves there, and through a redirect. Everything runs in a namespace with only
/// loopback, so a failing guard still reaches nothing; the errors must be the guard's, not
/// "network unreachable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_aimed_at_metadata_link_local_or_loopback_are_refused_before_connecting() {
    if !tools_present(&["ip"]) {
        return;
    }
    let ns = SealedNetns::new("guard");
    std::fs::create_dir_all(ns.etc()).expect("etc dir");
    std::fs::write(
        ns.etc().join("hosts"),
        "127.0.0.1 localhost\n169.254.169.254 metadata.test\n",
    )
    .expect("hosts");
    let listener = ns.listen();
    let port = listener.local_addr().expect("addr").port();
    let connections = counting_redirector(listener);

    let cluster = Cluster::start(ClusterSpec::standalone(bin(), 0))
        .await
        .expect("cluster");
    let out = cluster.dir.path().join("out");
    let mut peer = cluster.stranger("peer", vec![]).in_netns(&ns.name);
    peer.start().await.expect("peer starts");

    let msg = refused(&peer, "http://169.254.169.254/latest/meta-data/iam/", &out).await;
    assert_guard(&msg, "cloud metadata");
    let msg = refused(&peer, "http://[::ffff:169.254.169.254]/", &out).await;
    assert_guard(&msg, "cloud metadata");
    let msg = refused(&peer, "http://metadata.test/computeMetadata/v1/", &out).await;
    assert_guard(&msg, "cloud metadata");
    let msg = refused(&peer, "http://[fe80::1]:8080/x", &out).await;
    assert_guard(&msg, "link-local");
    assert_eq!(connections.load(Ordering::SeqCst), 0);

    // A plain peer may read a loopback origin for its local user, but not be redirected on.
    let msg = refused(&peer, &format!("http://127.0.0.1:{port}/r"), &out).await;
    assert_guard(&msg, "cloud metadata");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the loopback origin was asked once, the redirect target never"
    );

    // A seed refuses loopback and its own addresses, by literal and by name.
    let mut seed = cluster
        .stranger("seed", vec!["--seed".into()])
        .in_netns(&ns.name);
    seed.start().await.expect("seed starts");
    for url in [
        format!("http://127.0.0.1:{port}/x"),
        format!("http://localhost:{port}/x"),
        format!("http://[::1]:{port}/x"),
        format!("http://0.0.0.0:{port}/x"),
    ] {
        let msg = refused(&seed, &url, &out).await;
        assert!(
            msg.contains("origin guard refused")
                && (msg.contains("loopback") || msg.contains("unspecified")),
            "{url}: {msg}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the seed connected nowhere"
    );

    // What an allow-list names is let through: the same request now reaches the origin.
    let mut allowed = cluster
        .stranger(
            "allowed-seed",
            vec!["--seed".into(), "--origin-allow".into(), "127.0.0.1".into()],
        )
        .in_netns(&ns.name);
    allowed.start().await.expect("seed starts");
    let msg = refused(&allowed, &format!("http://127.0.0.1:{port}/x"), &out).await;
    assert_guard(&msg, "cloud metadata");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert!(!out.exists(), "no output was written");
}

/// Runs `pollen get URL -O OUT` as `uid:gid` with no supplementary groups (`setpriv`), with the
/// binary copied where that user may run it.
async fn get_as(
    user: (u32, u32),
    bin: &std::path::Path,
    socket: &std::path::Path,
    url: &str,
    out: &std::path::Path,
) -> std::process::Output {
    pollen_as(
        user,
        bin,
        socket,
        &["get".as_ref(), url.as_ref(), "-O".as_ref(), out.as_ref()],
    )
    .await
}

/// Runs `pollen ARGS` against `socket` as `uid:gid` with no supplementary groups.
async fn pollen_as(
    user: (u32, u32),
    bin: &std::path::Path,
    socket: &std::path::Path,
    args: &[&std::ffi::OsStr],
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.arg(format!("--reuid={}", user.0))
        .arg(format!("--regid={}", user.1))
        .arg("--clear-groups")
        .arg(bin)
        .args(args)
        .arg("--api-socket")
        .arg(socket);
    tokio::time::timeout(HANG, cmd.output())
        .await
        .expect("not hung")
        .expect("setpriv runs")
}

/// A local user reaches the daemon only through the socket's group, and the daemon writes an
/// output (or reads a file to import) only where that user could: with the caller's rights
/// (SO_PEERCRED), not the daemon's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_cannot_reach_a_socket_it_may_not_use_nor_write_where_it_cannot() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !tools_present(&["setpriv"]) {
        return;
    }
    const MEMBER: (u32, u32) = (65534, 65534); // nobody:nogroup, the socket's group
    const OUTSIDER: (u32, u32) = (65533, 65533); // in no group of the daemon's
    let origin = origin(3 * MIB).await;
    let url = origin.url("/blob");
    let cluster = Cluster::start(ClusterSpec::standalone(bin(), 0))
        .await
        .expect("cluster");
    // A world-traversable base, as /run is: the daemon makes run/ 0750 in the socket's group.
    let base = tempfile::Builder::new()
        .prefix("pollen-local-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let chmod = |p: &std::path::Path, m| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    chmod(base.path(), 0o755);
    let cli = base.path().join("pollen");
    std::fs::copy(bin(), &cli).expect("copy the binary");
    chmod(&cli, 0o755);
    let socket = base.path().join("run").join("daemon.sock");
    let mut d = cluster.stranger(
        "local",
        vec![
            "--api-socket".into(),
            socket.to_string_lossy().into_owned(),
            "--api-group".into(),
            MEMBER.1.to_string(),
        ],
    );
    d.start().await.expect("daemon starts");
    let m = std::fs::metadata(base.path().join("run")).expect("run dir");
    assert_eq!((m.mode() & 0o777, m.gid()), (0o750, MEMBER.1));
    let m = std::fs::metadata(&socket).expect("socket");
    assert_eq!((m.mode() & 0o777, m.gid()), (0o660, MEMBER.1));

    let roots = base.path().join("roots");
    std::fs::create_dir(&roots).expect("mkdir");
    chmod(&roots, 0o755);
    let own = base.path().join("own");
    std::fs::create_dir(&own).expect("mkdir");
    nix::unistd::chown(&own, Some(MEMBER.0.into()), Some(MEMBER.1.into())).expect("chown");

    // Outside the group: the socket is out of reach, and says so.
    let o = get_as(OUTSIDER, &cli, &socket, &url, &own.join("outsider")).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("permission denied"),
        "{err}"
    );
    assert!(!own.join("outsider").exists());

    // In the group, asking for a file in root's directory: refused with the caller's rights,
    // before any byte is fetched.
    let served_before = origin.bytes_served();
    let o = get_as(MEMBER, &cli, &socket, &url, &roots.join("planted")).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("Permission denied"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&roots).expect("ls").next().is_none(),
        "nothing was created in root's directory"
    );
    assert_eq!(
        origin.bytes_served(),
        served_before,
        "refused before fetching"
    );

    // In the group, into its own directory: the download works and the file is the caller's.
    let o = get_as(MEMBER, &cli, &socket, &url, &own.join("mine")).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = std::fs::metadata(own.join("mine")).expect("written");
    assert_eq!((m.uid(), m.gid()), MEMBER);
    assert_eq!(sha256_file(&own.join("mine")), origin.digest());

    // Importing a file only root may read: refused with the caller's rights, nothing cached.
    let secret = roots.join("secret");
    std::fs::write(&secret, b"root's own").expect("write");
    chmod(&secret, 0o600);
    let cached = || async {
        let o = pollen_as(
            (0, 0),
            &cli,
            &socket,
            &["cache".as_ref(), "ls".as_ref(), "--json".as_ref()],
        )
        .await;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)
            .expect("json")
            .len()
    };
    let tasks = cached().await;
    let o = pollen_as(
        MEMBER,
        &cli,
        &socket,
        &["cache".as_ref(), "import".as_ref(), secret.as_ref()],
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("Permission denied"),
        "{err}"
    );
    assert_eq!(cached().await, tasks);
    // Exporting into root's directory: refused the same way.
    let o = pollen_as(
        MEMBER,
        &cli,
        &socket,
        &[
            "cache".as_ref(),
            "export".as_ref(),
            url.as_ref(),
            "-O".as_ref(),
            roots.join("exported").as_ref(),
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("Permission denied"),
        "{err}"
    );
    assert!(!roots.join("exported").exists());
    drop(d);
}

/// (g) A peer that asks a seed for slices and never reads them cannot hold the seed's upload
/// slot: once it has taken no bytes for the write timeout it is cut off, and an honest peer
/// then gets the content from the seed (not from the origin, where it would go if the slot
/// stayed taken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_cannot_hold_an_upload_slot() {
    let origin = origin(32 * MIB).await;
    let url = origin.url("/blob");
    let mut spec = ClusterSpec::new(bin(), 1);
    spec.daemon_args = [
        "--max-upload-connections",
        "1",
        "--upload-write-timeout",
        "1s",
    ]
    .map(String::from)
    .to_vec();
    let cluster = Cluster::start(spec).await.expect("cluster");
    let seed = cluster.seed.as_ref().expect("seed");
    let dir = cluster.dir.path();
    download_within(seed, &url, &dir.join("seed.out"))
        .await
        .expect("the seed reads the origin");

    // The attacker takes the seed's only upload slot and asks for every slice.
    let task = common::hostile_peer::task_of(&url);
    let mut attacker = pollen_wire::PieceClient::connect(
        seed.upload_addr().await.expect("upload addr"),
        Duration::from_secs(5),
    )
    .await
    .expect("connect");
    for n in 0..128 {
        attacker.request_slice(task, n).await.expect("request");
    }

    let peer = &cluster.peers[0];
    let out = dir.join("peer.out");
    download_within(peer, &url, &out).await.expect("download");
    assert_eq!(sha256_file(&out), origin.digest());
    let got = peer.stat().await.expect("stat");
    assert!(
        got.p2p_download_bytes > 0 && got.origin_bytes == 0,
        "the peer was served by the seed (p2p {} bytes, origin {} bytes)",
        got.p2p_download_bytes,
        got.origin_bytes
    );
    assert!(seed.stat().await.expect("stat").upload_timed_out >= 1);
    drop(attacker);
}

/// (c) Under mutual TLS a host holding the cluster's ordinary peer certificate gets in, but
/// cannot claim more: its seed claim is refused by the manager and by a scheduler, and its
/// scheduler registration by the manager. The same claims with role-bearing certificates
/// are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_claim_or_a_scheduler_registration_without_its_role_is_refused() {
    use common::manager::*;
    use pollen_testkit::cluster::tls_flags;
    let mut spec = ClusterSpec::standalone(bin(), 0);
    spec.tls = true;
    let cluster = Cluster::start(spec).await.expect("cluster");
    let certs = cluster.certs.clone().expect("certificates");
    let m = cluster
        .start_manager(ADMIN_PASSWORD, "keepalive_timeout = \"3s\"\n")
        .await
        .expect("manager");
    let admin = Admin::sign_in(&m).await;
    let flags = |pair| tls_flags(&certs.ca_cert, pair);

    // A scheduler presenting a peer's certificate is refused; one with its own is taken.
    let mut rogue_args = scheduler_args(&m, 0);
    rogue_args.extend(flags(&certs.daemon));
    let _rogue = cluster
        .start_scheduler("rogue-sched", "127.0.0.1:0", &rogue_args)
        .await
        .expect("starts");
    wait_for_log(
        &cluster.dir.path().join("rogue-sched.log"),
        "needs a certificate carrying the scheduler role",
    )
    .await;
    let mut args = scheduler_args(&m, 0);
    args.extend(flags(&certs.scheduler));
    let sched = cluster
        .start_scheduler("sched", "127.0.0.1:0", &args)
        .await
        .expect("scheduler");
    admin
        .wait_for("/api/v1/schedulers?active=true", "the scheduler", |v| {
            v.as_array().map(Vec::len) == Some(1)
        })
        .await;

    // A peer's certificate claiming --seed, to the manager: refused.
    let mut peer_flags = flags(&certs.daemon);
    peer_flags.push("--seed".into());
    let fake: Vec<&str> = peer_flags.iter().map(String::as_str).collect();
    let mut fake_seed = daemon(&cluster, &m, "fake-seed", "127.0.1.9", &fake);
    fake_seed.start().await.expect("starts");
    wait_for_log(&fake_seed.log, "carrying the seed role").await;
    // ... and straight to the scheduler: refused too.
    let mut direct = cluster.stranger(
        "direct-fake-seed",
        [
            vec![
                "--scheduler".to_string(),
                sched.url.replacen("http://", "https://", 1),
            ],
            peer_flags.clone(),
        ]
        .concat(),
    );
    direct.start().await.expect("starts");
    wait_for_log(&direct.log, "carrying the seed role").await;
    assert!(!direct.stat().await.expect("stat").scheduler_connected);

    // A seed's certificate: taken, and it is the only seed the manager knows.
    let mut seed_flags = flags(&certs.seed);
    seed_flags.push("--seed".into());
    let real: Vec<&str> = seed_flags.iter().map(String::as_str).collect();
    let mut seed = daemon(&cluster, &m, "real-seed", "127.0.1.10", &real);
    seed.start().await.expect("starts");
    seed.wait_connected()
        .await
        .expect("the seed is placed and connected");
    admin.wait_for_seeds(1).await;
    let peers = admin.get("/api/v1/peers").await;
    let names: Vec<&str> = peers
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["hostname"].as_str())
        .collect();
    assert!(
        names.contains(&"real-seed") && !names.contains(&"fake-seed"),
        "{names:?}"
    );
    let schedulers = admin.get("/api/v1/schedulers").await;
    assert_eq!(schedulers.as_array().map(Vec::len), Some(1), "{schedulers}");
}

/// (c) Without mutual TLS, a seed claim and a scheduler registration need a join token the
/// manager issued. With none, or one nobody issued, the manager refuses the scheduler and
/// the seed, and a scheduler refuses the seed; with the manager's token they are taken, and
/// once an admin revokes a token the manager refuses it at once and the scheduler within a
/// keepalive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_a_seed_claim_or_a_scheduler_registration_needs_a_join_token() {
    use common::manager::*;
    use pollen_proto::scheduler::scheduler_client::SchedulerClient;
    use pollen_proto::scheduler::HostInfo;
    let cluster = empty_cluster().await;
    let m = cluster
        .start_manager(ADMIN_PASSWORD, "keepalive_timeout = \"3s\"\n")
        .await
        .expect("manager");
    let admin = Admin::sign_in(&m).await;
    // A daemon claiming --seed through the manager, showing the token in `token`, if any.
    let seed_via_manager = |name: &str, token: Option<&std::path::Path>| {
        let mut args: Vec<String> = ["--manager", &m.grpc, "--hostname", name, "--seed"]
            .map(String::from)
            .to_vec();
        args.extend(["--origin-allow".into(), "127.0.0.0/8".into()]);
        if let Some(t) = token {
            args.extend(["--join-token-file".into(), t.to_string_lossy().into_owned()]);
        }
        cluster.stranger(name, args)
    };
    let bogus = cluster.dir.path().join("bogus-token");
    std::fs::write(&bogus, "pjt_a_token_that_nobody_ever_issued\n").expect("write");

    // Schedulers with no token, and with one nobody issued: refused.
    let bare = vec![
        "--manager".to_string(),
        m.grpc.clone(),
        "--keepalive-interval".into(),
        "500ms".into(),
    ];
    let _rogue = cluster
        .start_scheduler("rogue-sched", "127.0.0.1:0", &bare)
        .await
        .expect("starts");
    wait_for_log(
        &cluster.dir.path().join("rogue-sched.log"),
        "showed no join token",
    )
    .await;
    let mut with_bogus = bare.clone();
    with_bogus.extend([
        "--join-token-file".into(),
        bogus.to_string_lossy().into_owned(),
    ]);
    let _rogue2 = cluster
        .start_scheduler("rogue-sched-2", "127.0.0.1:0", &with_bogus)
        .await
        .expect("starts");
    wait_for_log(
        &cluster.dir.path().join("rogue-sched-2.log"),
        "unknown, revoked, expired",
    )
    .await;
    // With the manager's first token: taken, and the only scheduler it knows. Its metrics
    // listener counts what it refuses.
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut args = scheduler_args(&m, 0);
    args.extend(["--metrics-listen".into(), metrics_addr.to_string()]);
    let sched = cluster
        .start_scheduler("sched", "127.0.0.1:0", &args)
        .await
        .expect("scheduler");
    admin
        .wait_for("/api/v1/schedulers", "the scheduler", |v| {
            v.as_array().map(Vec::len) == Some(1)
        })
        .await;

    // A seed with no token, through the manager and straight to the scheduler: refused.
    let mut fake_seed = seed_via_manager("fake-seed", None);
    fake_seed.start().await.expect("starts");
    wait_for_log(&fake_seed.log, "showed no join token").await;
    let mut direct = cluster.stranger(
        "direct-fake-seed",
        [
            "--scheduler",
            &sched.url,
            "--seed",
            "--join-token-file",
            &bogus.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec(),
    );
    direct.start().await.expect("starts");
    wait_for_log(&direct.log, "unknown, revoked, expired").await;
    assert!(!direct.stat().await.expect("stat").scheduler_connected);

    // An admin issues a seed token: a seed showing it is taken by both.
    let made = admin
        .post(
            "/api/v1/join-tokens",
            serde_json::json!({"name": "seeds", "roles": ["seed"]}),
        )
        .await;
    let secret = made["secret"].as_str().expect("secret").to_string();
    let listed = admin.get("/api/v1/join-tokens").await.to_string();
    assert!(
        !listed.contains(&secret),
        "the secret is shown once: {listed}"
    );
    let token_file = cluster.dir.path().join("seed-token");
    std::fs::write(&token_file, format!("{secret}\n")).expect("write");
    let mut seed = seed_via_manager("real-seed", Some(&token_file));
    seed.start().await.expect("starts");
    seed.wait_connected()
        .await
        .expect("the seed is placed and connected");
    admin.wait_for_seeds(1).await;
    let seed_session = |token: Option<String>| {
        let url = sched.url.clone();
        async move {
            let mut c = SchedulerClient::connect(url).await.expect("connect");
            let token = token.map(|t| pollen_core::join::JoinToken::parse(&t).expect("token"));
            let info = HostInfo {
                host_id: "probe-seed".into(),
                ip: "127.0.0.1".into(),
                upload_port: 4100,
                seed: true,
                ..Default::default()
            };
            c.host_session(pollen_tls::with_join_token(info, token.as_ref()))
                .await
                .map(|_| ())
        }
    };
    let e = seed_session(None).await.expect_err("no token");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pollen_scheduler_refusals_total{reason=\"seed_claim\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        refused >= 2,
        "the direct fake seed and the probe were refused and counted: {metrics}"
    );
    seed_session(Some(secret.clone()))
        .await
        .expect("the scheduler takes the manager's seed token");

    // Revoked: the manager refuses it at once, the scheduler after its next keepalive.
    let id = made["token"]["id"].as_i64().expect("id");
    let r = admin
        .http
        .delete(format!("{}/api/v1/join-tokens/{id}", admin.base))
        .header("cookie", &admin.cookie)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 204);
    let mut late = seed_via_manager("late-seed", Some(&token_file));
    late.start().await.expect("starts");
    wait_for_log(&late.log, "unknown, revoked, expired").await;
    let deadline = std::time::Instant::now() + HANG;
    while seed_session(Some(secret.clone())).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler still takes a revoked token"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peers = admin.get("/api/v1/peers?seed=true").await.to_string();
    assert!(
        !peers.contains("fake-seed") && !peers.contains("late-seed"),
        "{peers}"
    );
}

/// Under mutual TLS a daemon whose certificate names its host (`pollen certs issue
/// --host-id`) takes that host id, and from then on no other connection may speak for it: a
/// host holding the cluster's shared peer certificate is refused a session and load reports
/// under that id, and the bound certificate cannot speak for another host. The real daemon
/// keeps its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_id_bound_to_a_certificate_cannot_be_spoken_for_by_another_host() {
    use pollen_proto::scheduler::scheduler_client::SchedulerClient;
    use pollen_proto::scheduler::{HostInfo, HostLoad};
    use pollen_testkit::cluster::tls_flags;
    let mut spec = ClusterSpec::new(bin(), 0);
    spec.tls = true;
    let cluster = Cluster::start(spec).await.expect("cluster");
    let certs = cluster.certs.clone().expect("certificates");
    let out = cluster.dir.path().join("node-a");
    let node_a = pollen_tls::issue_host_cert(
        &certs.ca_cert,
        &certs.ca_key,
        &pollen_tls::HostCert {
            host_id: "node-a",
            roles: &[pollen_tls::Role::Peer],
            names: &["127.0.0.1".to_string(), "127.0.0.254".to_string()],
        },
        &out,
    )
    .expect("issued");
    let mut real = cluster.stranger("node-a", tls_flags(&certs.ca_cert, &node_a));
    real.start().await.expect("starts");
    real.wait_connected().await.expect("connected");
    assert!(
        real.log_text().contains("host id from the certificate"),
        "{}",
        real.log_text()
    );

    let client = |pair: &(std::path::PathBuf, std::path::PathBuf)| {
        let cfg = pollen_tls::TlsConfig::new(certs.ca_cert.clone(), pair.0.clone(), pair.1.clone());
        let tls = pollen_tls::Material::load(&cfg)
            .expect("certs")
            .tonic_client();
        let endpoint =
            pollen_tls::grpc_endpoint("scheduler", &cluster.scheduler_url, Some(tls)).expect("url");
        SchedulerClient::new(endpoint.connect_lazy())
    };
    let session = |host: &str| HostInfo {
        host_id: host.into(),
        hostname: host.into(),
        ip: "127.0.0.1".into(),
        upload_port: 4100,
        max_upload_connections: 8,
        ..Default::default()
    };
    let mut shared = client(&certs.daemon);
    let e = shared
        .host_session(session("node-a"))
        .await
        .expect_err("the shared certificate speaking for node-a");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("proved its id"), "{}", e.message());
    let e = shared
        .report_load(HostLoad {
            host_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .expect_err("a load report for node-a");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let mut bound = client(&node_a);
    let e = bound
        .host_session(session("node-b"))
        .await
        .expect_err("node-a's certificate speaking for node-b");
    assert!(
        e.message().contains("issued to host node-a"),
        "{}",
        e.message()
    );
    shared
        .host_session(session("node-b"))
        .await
        .expect("a host never bound may still use the shared certificate");
    assert!(real.stat().await.expect("stat").scheduler_connected);
}

/// (a) A host claims every piece with the published digests and sends each slice with its
/// true slice hash but forged bytes, the attack that wrote over verified slices before
/// verify-before-write. Honest peers ask it for slices (it is counted), refuse every forged
/// one, and their outputs equal the origin's, with no `--digest` given. (The exact endgame
/// order, a forged duplicate arriving after an honest parent delivered the same slice, is
/// played deterministically in `crates/storage/src/slice_write.rs`'s tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_slices_from_a_hostile_parent_never_reach_an_output() {
    use common::hostile_peer::{HostilePeer, Lie};
    let origin = origin(16 * MIB).await;
    let url = origin.url("/blob");
    let mut spec = ClusterSpec::new(bin(), 3);
    // A slow seed makes the hostile host, idle and holding everything, the parent to ask.
    spec.seed_upload_limit = Some(4 * MIB);
    let cluster = Cluster::start(spec).await.expect("cluster");
    let liar = HostilePeer::join(
        &cluster.scheduler_url,
        "liar",
        &url,
        Lie::ForgedBytes {
            content: origin.data().to_vec(),
        },
    )
    .await;

    let peers: Vec<&DaemonProc> = cluster.peers.iter().collect();
    let results = get_all(&peers, &url, cluster.dir.path()).await;
    assert_all_verified(&results, origin.digest());
    assert!(
        liar.asked.load(Ordering::Relaxed) > 0,
        "no peer asked the hostile host: the attack was never tried"
    );
    let mut rejected = 0;
    for p in &peers {
        rejected += p.stat().await.expect("stat").pieces_rejected;
    }
    assert!(rejected >= 1, "no forged slice was refused");
}

/// (b) Before anyone read the origin, a host reports an 8 TiB length and bogus digests for
/// the task. Nothing it said reaches the honest peers: they allocate nothing for it, their
/// outputs equal the origin's with no `--digest` given, and it is offered to nobody (its
/// upload port is never asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_and_digests_reported_first_by_a_hostile_host_change_nothing() {
    use common::hostile_peer::{HostilePeer, Lie};
    let origin = origin(16 * MIB).await;
    let url = origin.url("/blob");
    let cluster = Cluster::start(ClusterSpec::new(bin(), 2))
        .await
        .expect("cluster");
    let liar = HostilePeer::join(
        &cluster.scheduler_url,
        "liar",
        &url,
        Lie::Facts {
            length: 8 << 40,
            piece_length: 64 * MIB,
        },
    )
    .await;

    let peers: Vec<&DaemonProc> = cluster.peers.iter().collect();
    let results = get_all(&peers, &url, cluster.dir.path()).await;
    assert_all_verified(&results, origin.digest());
    assert_eq!(
        liar.asked.load(Ordering::Relaxed),
        0,
        "the liar was offered"
    );
    for p in &peers {
        let got = p.stat().await.expect("stat");
        let task = got
            .tasks
            .iter()
            .find(|t| t.task_id == common::hostile_peer::task_of(&url).hex())
            .expect("the task is listed");
        assert_eq!(task.content_length, origin.data().len() as u64);
    }
}

/// Asks `addr`'s upload port, with no grant, for `task`'s bitfield and first slice: whether
/// either was given.
async fn ask_without_grant(addr: std::net::SocketAddr, task: pollen_core::TaskId) -> bool {
    use pollen_wire::{PieceClient, PieceResponse};
    let mut c = PieceClient::connect(addr, Duration::from_secs(5))
        .await
        .expect("connect");
    c.request_bitfield(task).await.expect("request");
    let bits = match c.next_response().await.expect("answer") {
        PieceResponse::Bitfield(b) => b.count() > 0,
        other => panic!("expected a bitfield, got {other:?}"),
    };
    c.request_slice(task, 0).await.expect("request");
    let slice = matches!(
        c.next_response().await.expect("answer"),
        PieceResponse::Slice { .. }
    );
    bits || slice
}

/// (f) A task fetched with credentials is private: the seed that holds it (fetched with the
/// credentials of a request it served itself; the scheduler never relays them) serves it to
/// the peer the scheduler granted it to (the peer's bytes come from the seed, none from the
/// origin), but its upload port gives a host that shows no grant neither the bitfield nor a
/// slice, while the same host is served a public task by the same seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_task_is_served_only_with_the_schedulers_grant() {
    use pollen_proto::daemon::{DownloadRequest, Header};
    use pollen_testkit::origin::PRIVATE_TOKEN;
    let origin = origin(8 * MIB).await;
    let cluster = Cluster::start(ClusterSpec::new(bin(), 1))
        .await
        .expect("cluster");
    let seed = cluster.seed.as_ref().expect("seed");
    let peer = &cluster.peers[0];
    let dir = cluster.dir.path();
    let private_url = origin.url("/private");
    let out = dir.join("private.out");
    let request = DownloadRequest {
        url: private_url.clone(),
        output_path: out.display().to_string(),
        digest: origin.digest().to_string(),
        headers: vec![Header {
            name: "Authorization".into(),
            value: format!("Bearer {PRIVATE_TOKEN}"),
        }],
        ..Default::default()
    };
    let on_seed = DownloadRequest {
        output_path: dir.join("private.seed.out").display().to_string(),
        ..request.clone()
    };
    tokio::time::timeout(HANG, seed.download_request(on_seed))
        .await
        .expect("hung")
        .expect("the seed's own download");
    tokio::time::timeout(HANG, peer.download_request(request))
        .await
        .expect("hung")
        .expect("the owner's download");
    assert_eq!(sha256_file(&out), origin.digest());
    let got = peer.stat().await.expect("stat");
    assert!(
        got.p2p_download_bytes > 0 && got.origin_bytes == 0,
        "the granted peer was served by the seed (p2p {} bytes, origin {} bytes)",
        got.p2p_download_bytes,
        got.origin_bytes
    );

    let private = pollen_core::TaskKey {
        url: private_url,
        digest: Some(origin.digest()),
        private: true,
        ..Default::default()
    }
    .task_id()
    .expect("task id");
    let upload = seed.upload_addr().await.expect("upload addr");
    assert!(
        seed.stat()
            .await
            .expect("stat")
            .tasks
            .iter()
            .any(|t| t.task_id == private.hex() && t.complete),
        "the seed holds the private task"
    );
    assert!(
        !ask_without_grant(upload, private).await,
        "the seed served a private task without a grant"
    );

    // The control: a public task on the same seed is served to the same stranger.
    let public_url = origin.url("/blob");
    download_within(peer, &public_url, &dir.join("public.out"))
        .await
        .expect("public download");
    let public = common::hostile_peer::task_of(&public_url);
    assert!(ask_without_grant(upload, public).await);
}
