//! Who may say what a task is: its id, length, piece length and piece digests.
//!
//! Every peer of a task allocates a content file and bitfields for the length the scheduler
//! relays, and rejects every byte that does not match the digests it relays. So these facts
//! are taken only from a peer that read them from the origin *because the scheduler chose it
//! to*: a peer sent back to the origin, or a peer on a seed host (a triggered seed, or one
//! announcing a task it holds). Any other peer's report only shapes scheduling; a report that
//! contradicts the published facts marks its reporter, which is then offered to nobody as a
//! parent, and changes nothing for the fleet. Lengths and piece counts are capped, so even a
//! trusted reporter cannot make every peer allocate more than the operator allows.
//!
//! The task id is recomputed from the request (URL, filters, tag, application, or the content
//! digest), so a peer cannot attach a URL of its choosing to another task's id.
//!
//! Non-goals: deciding which hosts may be seeds (role binding) and checking the origin.

use pollen_core::piece::MAX_PIECE_LENGTH;
use pollen_core::{ContentDigest, PieceLayout, TaskKey};
use pollen_proto::scheduler::{ContentInfo, TaskRequest};

use crate::piece_set::MAX_PIECES;

/// Caps on what one task may make peers allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Longest content accepted, in bytes.
    pub max_content_length: u64,
    /// Most pieces accepted (at most [`MAX_PIECES`]).
    pub max_pieces: u32,
}

/// Why a report of a task's facts was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FactsError {
    /// The task id is not the one its request describes.
    #[error("task id {given} does not match its request (expected {expected})")]
    TaskId {
        /// The id the peer sent.
        given: String,
        /// The id the request yields.
        expected: String,
    },
    /// The request itself is malformed (URL, digest).
    #[error("malformed task request: {0}")]
    Request(String),
    /// Length or piece layout out of bounds.
    #[error("{0}")]
    Layout(String),
}

/// The id a task request describes.
pub fn expected_task_id(req: &TaskRequest) -> Result<String, FactsError> {
    let digest = match req.digest.as_str() {
        "" => None,
        d => Some(
            d.parse::<ContentDigest>()
                .map_err(|e| FactsError::Request(e.to_string()))?,
        ),
    };
    let key = TaskKey {
        url: req.url.clone(),
        digest,
        tag: req.tag.clone(),
        application: req.application.clone(),
        filtered_query: req.filtered_query.clone(),
        private: req.private,
        version: req.version.clone(),
    };
    key.task_id()
        .map(|id| id.hex())
        .map_err(|e| FactsError::Request(e.to_string()))
}

/// Refuses a request whose task id is not the one it describes.
pub fn check_task_id(req: &TaskRequest) -> Result<(), FactsError> {
    let expected = expected_task_id(req)?;
    if req.task_id != expected {
        return Err(FactsError::TaskId {
            given: req.task_id.clone(),
            expected,
        });
    }
    Ok(())
}

/// Checks a reported length and piece length against the caps.
pub fn check_layout(info: &ContentInfo, caps: Caps) -> Result<PieceLayout, FactsError> {
    if info.content_length > caps.max_content_length {
        return Err(FactsError::Layout(format!(
            "content length {} is over the cap of {} bytes (max_content_length)",
            info.content_length, caps.max_content_length
        )));
    }
    if info.piece_length == 0 || info.piece_length > MAX_PIECE_LENGTH {
        return Err(FactsError::Layout(format!(
            "piece length {} is outside 1..={MAX_PIECE_LENGTH}",
            info.piece_length
        )));
    }
    let layout = PieceLayout::with_piece_length(info.content_length, info.piece_length)
        .ok_or_else(|| FactsError::Layout("unusable piece layout".into()))?;
    let cap = caps.max_pieces.min(MAX_PIECES);
    if layout.piece_count() > cap {
        return Err(FactsError::Layout(format!(
            "{} pieces is over the cap of {cap} (max_pieces)",
            layout.piece_count()
        )));
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        max_content_length: 1 << 40,
        max_pieces: MAX_PIECES,
    };

    fn request(url: &str) -> TaskRequest {
        let mut req = TaskRequest {
            url: url.into(),
            tag: "t".into(),
            ..Default::default()
        };
        req.task_id = expected_task_id(&req).expect("id");
        req
    }

    #[test]
    fn a_task_id_must_be_the_one_its_request_describes() {
        let honest = request("http://origin/model.bin");
        assert_eq!(check_task_id(&honest), Ok(()));
        // Another task's id with a URL of the sender's choosing.
        let mut forged = request("http://169.254.169.254/latest/meta-data/");
        forged.task_id = honest.task_id.clone();
        assert!(matches!(
            check_task_id(&forged),
            Err(FactsError::TaskId { .. })
        ));
        // The tag is part of the id.
        let mut retagged = honest.clone();
        retagged.tag = "other".into();
        assert!(check_task_id(&retagged).is_err());
        // A content-addressed id is the digest, whatever host serves it.
        let digest = format!("sha256:{}", "ab".repeat(32));
        let blob = TaskRequest {
            task_id: "ab".repeat(32),
            url: "https://any.registry/v2/x/blobs/sha256:abab".into(),
            digest: digest.clone(),
            ..Default::default()
        };
        assert_eq!(check_task_id(&blob), Ok(()));
        let upper = TaskRequest {
            task_id: "AB".repeat(32),
            ..blob.clone()
        };
        assert!(check_task_id(&upper).is_err(), "one spelling per task");
        let bad = TaskRequest {
            digest: "sha256:zz".into(),
            ..blob
        };
        assert!(matches!(check_task_id(&bad), Err(FactsError::Request(_))));
    }

    #[test]
    fn lengths_and_piece_counts_are_capped() {
        let ok = ContentInfo {
            content_length: 1 << 30,
            piece_length: 4 << 20,
        };
        assert_eq!(check_layout(&ok, CAPS).map(|l| l.piece_count()), Ok(256));
        for bad in [
            ContentInfo {
                content_length: 8 << 40,
                piece_length: 64 << 20,
            },
            ContentInfo {
                content_length: 1 << 30,
                piece_length: 0,
            },
            ContentInfo {
                content_length: 1 << 30,
                piece_length: 128 << 20,
            },
            // Within the length cap but over the piece cap.
            ContentInfo {
                content_length: 1 << 39,
                piece_length: 1 << 20,
            },
        ] {
            assert!(
                matches!(check_layout(&bad, CAPS), Err(FactsError::Layout(_))),
                "{bad:?}"
            );
        }
        let small = Caps {
            max_content_length: 1 << 20,
            max_pieces: 4,
        };
        assert!(check_layout(&ok, small).is_err());
    }
}
