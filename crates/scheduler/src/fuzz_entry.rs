//! The fuzz entry for what daemons send the scheduler: a stream of announce events, decoded
//! from untrusted bytes and applied to a live core (`fuzz/fuzz_targets/announce_events.rs`).
//! Kept in the library so that its unit tests run the same path in every test run.
//!
//! Input: repeated `[selector byte][length-delimited PeerEvent]`. A `Register` opens a peer
//! (its task id is recomputed from its request, so registers get past the id check and reach
//! the model); any other event goes to the registered peer the selector picks. Three hosts
//! exist, one of them a seed. Nothing may panic, whatever the order, the lengths or the
//! claims (8 TiB lengths, piece numbers past the end, parents that do not exist).

use std::time::{Duration, Instant};

use pollen_proto::scheduler::{peer_event, HostInfo, PeerEvent};
use prost::Message;
use tokio::sync::mpsc;

use crate::core::Core;
use crate::SchedulerConfig;

/// Applies the events encoded in `data` to a fresh core.
pub fn fuzz_announce_events(data: &[u8]) {
    let mut core = Core::new(SchedulerConfig::default(), 1);
    let mut keep = Vec::new();
    for (i, id) in ["h0", "h1", "seed"].iter().enumerate() {
        let (tx, rx) = mpsc::channel(64);
        keep.push(rx);
        let ip = format!("10.0.0.{}", i + 1);
        core.open_host(
            HostInfo {
                host_id: (*id).into(),
                ip: ip.clone(),
                upload_port: 4100,
                max_upload_connections: 8,
                seed: *id == "seed",
                ..Default::default()
            },
            ip.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            tx,
        );
    }
    let mut peers: Vec<(String, String)> = Vec::new();
    let mut streams = Vec::new();
    let mut buf = data;
    while let Some((&selector, rest)) = buf.split_first() {
        buf = rest;
        let Ok(ev) = PeerEvent::decode_length_delimited(&mut buf) else {
            break;
        };
        let Some(ev) = ev.event else { continue };
        match ev {
            peer_event::Event::Register(mut reg) => {
                if let Some(task) = reg.task.as_mut() {
                    if let Ok(id) = crate::task_facts::expected_task_id(task) {
                        task.task_id = id;
                    }
                }
                let (tx, rx) = mpsc::channel(1024);
                if let Ok(ids) = core.register(reg, tx) {
                    streams.push(rx);
                    peers.push(ids);
                }
            }
            other => {
                if peers.is_empty() {
                    continue;
                }
                let (tid, pid) = &peers[usize::from(selector) % peers.len()];
                core.event(tid, pid, other);
            }
        }
        // Peers may fall behind reading their answers; drain them so channels stay open.
        for rx in &mut streams {
            while rx.try_recv().is_ok() {}
        }
    }
    core.collect_garbage(Instant::now() + Duration::from_secs(7 * 24 * 3600));
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_proto::scheduler::{
        ContentInfo, FinishedPiece, NeedParents, PeerFinished, PiecesFinished, Register,
        TaskRequest,
    };

    fn frame(selector: u8, ev: peer_event::Event) -> Vec<u8> {
        let mut out = vec![selector];
        PeerEvent { event: Some(ev) }
            .encode_length_delimited(&mut out)
            .expect("encode");
        out
    }

    #[test]
    fn the_fuzz_entry_takes_hostile_and_broken_streams() {
        let register = |peer: &str, host: &str| {
            peer_event::Event::Register(Register {
                peer_id: peer.into(),
                host_id: host.into(),
                task: Some(TaskRequest {
                    url: "http://o/x".into(),
                    ..Default::default()
                }),
            })
        };
        let mut data = Vec::new();
        data.extend(frame(0, register("p0", "h0")));
        data.extend(frame(0, register("s0", "seed")));
        data.extend(frame(
            0,
            peer_event::Event::ContentInfo(ContentInfo {
                content_length: 8 << 40,
                piece_length: 1,
            }),
        ));
        data.extend(frame(
            1,
            peer_event::Event::ContentInfo(ContentInfo {
                content_length: 16 << 20,
                piece_length: 4 << 20,
            }),
        ));
        data.extend(frame(
            1,
            peer_event::Event::PiecesFinished(PiecesFinished {
                pieces: vec![
                    FinishedPiece {
                        number: u32::MAX,
                        digest: vec![1; 3],
                        ..Default::default()
                    },
                    FinishedPiece {
                        number: 0,
                        digest: vec![2; 32],
                        parent_peer_id: "nobody".into(),
                        cost_ms: u32::MAX,
                    },
                ],
            }),
        ));
        data.extend(frame(
            0,
            peer_event::Event::NeedParents(NeedParents {
                parents: vec!["s0".into(); 1000],
            }),
        ));
        data.extend(frame(1, peer_event::Event::Finished(PeerFinished {})));
        fuzz_announce_events(&data);
        // Cut anywhere, and garbage: no panic either.
        for cut in 0..data.len() {
            fuzz_announce_events(&data[..cut]);
        }
        fuzz_announce_events(&[0xff; 64]);
        fuzz_announce_events(&[]);
    }
}
