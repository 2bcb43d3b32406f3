//! Mirror listeners bound to one registry (`proxy.registry_mirrors`): a daemon with a bad or
//! doubled entry refuses to start and says which; a good one reports each listener's address,
//! and a request on it is answered for its registry alone.

use pollen_daemon::config::RegistryMirror;
use pollen_daemon::{Daemon, DaemonConfig, ProxyConfig};

fn config(dir: &std::path::Path, mirrors: Vec<RegistryMirror>) -> DaemonConfig {
    DaemonConfig {
        data_dir: dir.join("data"),
        api_socket: dir.join("api.sock"),
        api_group: String::new(),
        upload_listen: ([127, 0, 0, 1], 0).into(),
        proxy: ProxyConfig {
            listen: None,
            registry_mirrors: mirrors,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn mirror(registry: &str) -> RegistryMirror {
    RegistryMirror {
        registry: registry.into(),
        listen: ([127, 0, 0, 1], 0).into(),
    }
}

#[tokio::test]
async fn a_bad_or_doubled_registry_mirror_is_refused_at_start_with_its_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    for (mirrors, says) in [
        (vec![mirror("ftp://r")], "http or https"),
        (
            vec![mirror("http://r/some/path")],
            "scheme://host[:port] only",
        ),
        (
            vec![mirror("http://r:5000"), mirror("http://r:5000/")],
            "two mirror listeners",
        ),
    ] {
        let e = match Daemon::start(config(dir.path(), mirrors.clone())).await {
            Ok(_) => panic!("{mirrors:?} was taken"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(says), "{mirrors:?}: {e}");
    }
}

#[tokio::test]
async fn each_listener_is_reported_and_mirrors_its_registry_only() {
    let dir = tempfile::tempdir().expect("tmp");
    // Nothing listens on the registry's port: the mirror answers the /v2/ check itself, and
    // its proxy requests are refused (this port is no HTTP proxy).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let registry = format!("http://{closed}");
    let daemon = Daemon::start(config(dir.path(), vec![mirror(&registry)]))
        .await
        .expect("daemon");
    let [(reg, addr)] = daemon.registry_mirrors.as_slice() else {
        panic!("{:?}", daemon.registry_mirrors);
    };
    assert_eq!(reg, &registry);
    assert_ne!(addr.port(), 0);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let ping = client
        .get(format!("http://{addr}/v2/"))
        .send()
        .await
        .expect("ping");
    assert_eq!(ping.status(), 200);
    let other = client
        .get(format!("http://{addr}/not-a-mirror-path"))
        .send()
        .await
        .expect("answer");
    assert_eq!(other.status(), 404);
    assert!(other
        .text()
        .await
        .expect("body")
        .contains(&format!("mirrors {registry} only")));
    daemon.shutdown().await;
}
