//! What the scheduler-core tests share: a valid task request, and a host with an open session.

#![allow(dead_code)]

use pollen_proto::scheduler::{HostCommand, HostInfo, TaskRequest};
use pollen_scheduler::core::Core;
use pollen_scheduler::task_facts::expected_task_id;
use tokio::sync::mpsc;

/// The command channel of a host session; keep it alive while the host should stay.
pub type Commands = mpsc::Receiver<Result<HostCommand, tonic::Status>>;

/// A request for `url` carrying the task id the scheduler expects of it.
pub fn request(url: &str) -> TaskRequest {
    let mut req = TaskRequest {
        url: url.into(),
        ..Default::default()
    };
    req.task_id = expected_task_id(&req).expect("id");
    req
}

/// Opens a host session for `id` at `ip` (a seed with `seed`); returns its command channel.
pub fn host(core: &mut Core, id: &str, ip: &str, seed: bool) -> Commands {
    let (tx, rx) = mpsc::channel(64);
    core.open_host(
        HostInfo {
            host_id: id.into(),
            ip: ip.into(),
            upload_port: 4100,
            max_upload_connections: 64,
            seed,
            ..Default::default()
        },
        ip.parse().expect("ip"),
        tx,
    );
    rx
}
