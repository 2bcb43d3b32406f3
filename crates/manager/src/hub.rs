//! The daemons connected to this manager, and the commands in flight to them.
//!
//! Each daemon session registers its outgoing channel here; a job sends a command to a host
//! and waits for the `CommandResult` with the same id that the session hands back. A host
//! not connected yet (the manager just restarted, say) is waited for, up to a grace period.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pollen_proto::manager::{command, manager_message, Command, CommandResult, ManagerMessage};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

type Outgoing = mpsc::Sender<Result<ManagerMessage, Status>>;

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    daemons: HashMap<String, (u64, Outgoing)>,
    pending: HashMap<u64, (String, oneshot::Sender<CommandResult>)>,
    next_id: u64,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Session `session` of `host_id` takes commands on `tx`.
    pub fn attach(&self, host_id: &str, session: u64, tx: Outgoing) {
        self.lock()
            .daemons
            .insert(host_id.to_string(), (session, tx));
    }

    /// Session `session` of `host_id` ended (a newer one stays attached).
    pub fn detach(&self, host_id: &str, session: u64) {
        let mut inner = self.lock();
        if inner
            .daemons
            .get(host_id)
            .is_some_and(|(s, _)| *s == session)
        {
            inner.daemons.remove(host_id);
            // Its commands will never be answered: their waiters learn it now.
            inner.pending.retain(|_, (h, _)| h != host_id);
        }
    }

    /// Whether `host_id` has a session open now.
    pub fn connected(&self, host_id: &str) -> bool {
        self.lock().daemons.contains_key(host_id)
    }

    /// A daemon's answer.
    pub fn complete(&self, result: CommandResult) {
        if let Some((_, tx)) = self.lock().pending.remove(&result.id) {
            let _ = tx.send(result);
        }
    }

    /// Runs `cmd` on `host_id`: waits up to `grace` for the host to be connected and up to
    /// `timeout` for its answer, which is returned when it says ok. Err carries a reason fit
    /// for a job's result.
    pub async fn run(
        &self,
        host_id: &str,
        cmd: command::Command,
        grace: Duration,
        timeout: Duration,
    ) -> Result<CommandResult, String> {
        let deadline = tokio::time::Instant::now() + grace;
        let (id, tx, rx) = loop {
            let found = {
                let mut inner = self.lock();
                match inner.daemons.get(host_id).map(|(_, tx)| tx.clone()) {
                    Some(tx) => {
                        inner.next_id += 1;
                        let id = inner.next_id;
                        let (done, rx) = oneshot::channel();
                        inner.pending.insert(id, (host_id.to_string(), done));
                        Some((id, tx, rx))
                    }
                    None => None,
                }
            };
            if let Some(f) = found {
                break f;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("{host_id} is not connected to the manager"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let msg = ManagerMessage {
            message: Some(manager_message::Message::Command(Command {
                id,
                command: Some(cmd),
            })),
        };
        if tx.send(Ok(msg)).await.is_err() {
            // Gone between finding its session and asking it: the same as going away while
            // asked, and said the same way.
            self.lock().pending.remove(&id);
            return Err(format!("{host_id} disconnected before answering"));
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        self.lock().pending.remove(&id);
        match answer {
            Ok(Ok(r)) if r.ok => Ok(r),
            Ok(Ok(r)) => Err(r.error),
            Ok(Err(_)) => Err(format!("{host_id} disconnected before answering")),
            Err(_) => Err(format!("{host_id} did not finish within {timeout:?}")),
        }
    }
}
