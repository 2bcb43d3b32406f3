//! The manager's web console in a real browser: headless Chromium, driven over WebDriver by
//! chromedriver (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs), against
//! a running swarm of real processes. Screenshots go to `CARGO_TARGET_TMPDIR/console/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::manager::*;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// chromedriver and the Chromium it starts, in their own process group so that nothing
/// outlives the test, even when it fails.
struct Browser {
    client: Client,
    driver: tokio::process::Child,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn on_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

impl Browser {
    async fn start(profile: &Path, shots: PathBuf) -> Self {
        let mut driver = tokio::process::Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let mut out = BufReader::new(driver.stdout.take().expect("stdout")).lines();
        let port = tokio::time::timeout(HANG, async {
            while let Ok(Some(line)) = out.next_line().await {
                if let Some(p) = line.split("started successfully on port ").nth(1) {
                    if let Ok(p) = p.trim_end_matches('.').trim().parse::<u16>() {
                        return p;
                    }
                }
            }
            panic!("chromedriver exited without saying its port");
        })
        .await
        .expect("chromedriver says its port");
        // Keep reading, so chromedriver never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": on_path("chromium"),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        // chromedriver speaks plain HTTP on loopback: no TLS on this leg.
        let plain = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(plain)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session in chromium");
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Self {
            client,
            driver,
            shots,
        }
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(name);
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.wait_for(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.click_on(Locator::Css(css)).await;
    }

    async fn click_link(&self, text: &str) {
        self.click_on(Locator::LinkText(text)).await;
    }

    /// Clicks what `at` finds, finding it again while the page redraws it.
    async fn click_on(&self, at: Locator<'_>) {
        let deadline = Instant::now() + HANG;
        loop {
            let clicked = match self.client.find(at).await {
                Ok(el) => el.click().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("cannot click {at:?}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.wait_until(css, "present", |_| true).await
    }

    /// Waits until the element at `css` exists and its text passes `check`; on a timeout,
    /// saves a screenshot and fails with what the page showed.
    async fn wait_until(
        &self,
        css: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> fantoccini::elements::Element {
        let deadline = Instant::now() + HANG;
        let mut last = String::new();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = el.text().await {
                    if check(&text) {
                        return el;
                    }
                    last = text;
                }
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("failure.png").await;
                let body = match self.client.find(Locator::Css("body")).await {
                    Ok(b) => b.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                panic!(
                    "{css} never became {what} (last text {last:?}); page:\n{body}\nscreenshot: {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_shows_the_swarm_and_runs_a_preheat_job() {
    if !pollen_testkit::registry_kit::tools_present(&["chromium", "chromedriver"]) {
        return;
    }
    let origin = origin(4 * MIB).await;
    let cluster = empty_cluster().await;
    let (m, admin, _s) = control_plane(&cluster, "").await;
    let mut seed = daemon(&cluster, &m, "console-seed", "127.0.0.10", &["--seed"]);
    let mut peer = daemon(&cluster, &m, "console-peer", "127.0.0.11", &[]);
    for d in [&mut seed, &mut peer] {
        d.start().await.expect("daemon");
        d.wait_connected().await.expect("connected");
    }
    admin.wait_for_seeds(1).await;
    // The swarm at work: the peer holds a file the console will list.
    let pulled = origin.url("/blob?pulled-by-the-peer");
    download_within(&peer, &pulled, &cluster.dir.path().join("pulled"))
        .await
        .expect("download");

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    let b = Browser::start(&cluster.dir.path().join("chromium"), shots).await;
    b.client
        .goto(&format!("{}/console/", m.rest))
        .await
        .expect("console");

    // Sign in: a wrong password is refused, the right one lets the admin in.
    b.fill("#signin-name", "admin").await;
    b.fill("#signin-password", "not-the-password").await;
    b.click("#signin-submit").await;
    b.wait_until("#flash", "a refusal", |t| {
        t.contains("wrong user name or password")
    })
    .await;
    b.fill("#signin-password", ADMIN_PASSWORD).await;
    b.click("#signin-submit").await;

    // Clusters: the default cluster with its active scheduler and both peers.
    b.wait_until("#scheduler-clusters", "the default cluster", |t| {
        t.contains("default") && t.contains("1 / 1")
    })
    .await;
    b.fill("#cluster-name", "gpu-fleet").await;
    b.fill("#cluster-hostname-regex", "^gpu-").await;
    b.click("#new-cluster button[type=submit]").await;
    b.wait_until("#scheduler-clusters", "the new cluster", |t| {
        t.contains("gpu-fleet") && t.contains("hostname ~ ^gpu-")
    })
    .await;
    b.screenshot("clusters.png").await;
    b.click("nav a[href='#/schedulers']").await;
    b.wait_until("#schedulers", "the scheduler", |t| t.contains("active"))
        .await;

    // Peers: the seed and the peer, and what the peer's cache holds.
    b.click("nav a[href='#/peers']").await;
    b.wait_until("#peers", "both peers", |t| {
        t.contains("console-seed") && t.contains("console-peer")
    })
    .await;
    b.screenshot("peers.png").await;
    b.click_link("console-peer").await;
    b.wait_until("#peer-tasks", "the pulled file", |t| {
        t.contains("pulled-by-the-peer") && t.contains("complete")
    })
    .await;
    b.screenshot("peer-tasks.png").await;

    // Jobs: a preheat created in the form runs on the seed and is seen to succeed.
    b.click("nav a[href='#/jobs']").await;
    let preheated = origin.url("/blob?preheated-from-the-console");
    b.fill("#preheat-urls", &preheated).await;
    b.click("#preheat-submit").await;
    let state = b
        .wait_until("#job-state", "an ended job", |t| {
            t == "succeeded" || t == "failed"
        })
        .await;
    let shot = b.screenshot("preheat-job.png").await;
    assert_eq!(state.text().await.expect("state"), "succeeded");
    b.wait_until("#job-results", "the seed's result", |t| {
        t.contains("succeeded") && t.contains("preheated-from-the-console")
    })
    .await;
    eprintln!(
        "console screenshots in {}",
        shot.parent().unwrap_or(&shot).display()
    );

    // Users and tokens: a new user, and a token whose secret is shown once.
    b.click("nav a[href='#/users']").await;
    b.fill("#user-name", "console-colleague").await;
    b.fill("#user-password", "a-long-passphrase").await;
    b.click("#new-user button[type=submit]").await;
    b.wait_until("#users", "the new user", |t| {
        t.contains("console-colleague")
    })
    .await;
    b.click("nav a[href='#/tokens']").await;
    b.fill("#token-name", "console-script").await;
    b.click("#new-token button[type=submit]").await;
    let secret = b
        .wait_until("#token-secret", "the new secret", |t| t.starts_with("pln_"))
        .await
        .text()
        .await
        .expect("secret");
    b.wait_until("#tokens", "the token listed", |t| {
        t.contains("console-script")
    })
    .await;
    let listed = admin.get("/api/v1/tokens").await;
    assert!(!listed.to_string().contains(&secret), "{listed}");
    let me = admin
        .http
        .get(format!("{}/api/v1/me", m.rest))
        .bearer_auth(&secret)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200, "the console's token does not work");

    // The API agrees, and the seed holds the file.
    let jobs = admin.get("/api/v1/jobs").await;
    let job = &jobs.as_array().expect("jobs")[0];
    assert_eq!(job["state"], "succeeded", "{jobs}");
    let held = seed.stat().await.expect("stat");
    assert!(held.tasks.iter().any(|t| t.complete), "{held:?}");

    // A peer that goes away: the console says since when and why, and when it was last
    // seen.
    peer.kill().await;
    b.click("nav a[href='#/peers']").await;
    b.wait_until("#peers", "the peers listed", |t| t.contains("console-seed"))
        .await;
    b.click("#peers-active").await; // every peer, not only the active ones
    b.wait_until("#peers", "the peer inactive", |t| {
        t.lines()
            .any(|l| l.contains("console-peer") && l.contains("inactive since"))
    })
    .await;
    b.click_link("console-peer").await;
    b.wait_until("#inactive-reason", "why it is inactive", |t| {
        t.starts_with("Inactive since ") && t.contains("its session ended")
    })
    .await;
    b.wait_until("#last-seen", "when it was last seen", |t| {
        t.starts_with("Last seen ") && !t.contains('—')
    })
    .await;
    b.screenshot("peer-inactive.png").await;
}
