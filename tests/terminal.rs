//! `pollen get` on a terminal, driven through a pseudo-terminal as a person would use it:
//! while nothing can be measured it says what it waits for; then a bar; at the end one line
//! saying where the bytes came from; Ctrl-C typed at the keyboard stops it, and the daemon's
//! download with it.

mod common;

use common::*;
use expectrl::session::OsSession as Session;
use expectrl::{ControlCode, Expect};
use pollen_testkit::cluster::{Cluster, ClusterSpec};

/// `pollen get URL -O OUT` against the daemon at `socket`, in a pseudo-terminal of its own (it is the
/// terminal's foreground process, so a typed Ctrl-C reaches it as a person's would).
fn get_on_a_terminal(socket: &std::path::Path, url: &str, out: &std::path::Path) -> Session {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["get", url, "-O"])
        .arg(out)
        .arg("--api-socket")
        .arg(socket);
    let mut session = Session::spawn(cmd).expect("pollen get in a pseudo-terminal");
    session.set_expect_timeout(Some(HANG));
    session
}

/// What the terminal showed up to and including `text`.
fn expect(session: &mut Session, text: &str) -> String {
    match session.expect(text) {
        Ok(found) => String::from_utf8_lossy(found.before()).into_owned() + text,
        Err(e) => panic!("{text:?} never appeared on the terminal: {e}"),
    }
}

/// How the process ended, as `Exited(pid, code)`.
fn exit_status(session: &Session) -> String {
    format!("{:?}", session.get_process().wait().expect("wait"))
}

/// An origin that accepts connections and never answers.
async fn silent_origin() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}/model.bin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_says_what_it_waits_for_and_ctrl_c_stops_the_daemons_download_too() {
    let url = silent_origin().await;
    let cluster = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("cluster");
    let socket = cluster.peers[0].socket.clone();
    let out = cluster.dir.path().join("out");
    let (shown, status) = tokio::task::spawn_blocking(move || {
        let mut t = get_on_a_terminal(&socket, &url, &out);
        // No length yet: a spinner, the time, and what it waits for.
        let shown = expect(&mut t, "reading the origin…");
        t.send(ControlCode::EndOfText).expect("type Ctrl-C");
        let shown = shown + &expect(&mut t, "interrupted; a rerun resumes");
        (shown, exit_status(&t))
    })
    .await
    .expect("terminal session");
    assert!(
        shown.contains("[00:00:0"),
        "no elapsed time shown: {shown:?}"
    );
    assert!(
        !shown.contains("0 B/0 B"),
        "a bar before the length was known: {shown:?}"
    );
    assert!(status.contains(", 130)"), "exit status {status}");
    // The daemon stopped the download nobody waited for.
    common::manager::wait_for_log(
        &cluster.peers[0].log,
        "nobody waits for the download any more",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bar_while_it_downloads_then_one_line_saying_where_the_bytes_came_from() {
    // About 2 s at the slow route's pace: the bar is drawn several times.
    let origin = origin(12 * MIB).await;
    let url = origin.url("/slow");
    let cluster = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("cluster");
    let socket = cluster.peers[0].socket.clone();
    let out = cluster.dir.path().join("model.bin");
    let shown_out = out.clone();
    let (bar, last, status) = tokio::task::spawn_blocking(move || {
        let mut t = get_on_a_terminal(&socket, &url, &out);
        let bar = expect(&mut t, "/12.00 MiB");
        let last = expect(&mut t, "from the origin");
        (bar, last, exit_status(&t))
    })
    .await
    .expect("terminal session");
    assert!(bar.contains("reading the origin"), "{bar:?}");
    assert!(
        last.contains(&format!("saved {}: 12.00 MiB in ", shown_out.display()))
            && last.contains("0 B from peers, 12.00 MiB from the origin"),
        "{last:?}"
    );
    assert!(status.contains(", 0)"), "exit status {status}");
    assert_eq!(sha256_file(&shown_out), origin.digest());
}
