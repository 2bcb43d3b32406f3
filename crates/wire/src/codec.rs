//! Frame codec: encoding and bounded decoding of data-plane messages.
//!
//! Layout of each frame: `tag: u8 | length: u32 BE | value`. A piece response frame's value is
//! a 44-byte header followed by the piece bytes; the codec decodes only the header and leaves
//! the bytes for the caller to stream to disk, so a piece is never buffered whole.
//!
//! Invariants: no length read from the wire is used to allocate before it is checked against
//! [`MAX_CONTROL_FRAME`] or [`MAX_PIECE_PAYLOAD`]; unknown tags are errors, not skipped.

use pollen_core::{PieceDigest, TaskId};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest value of any frame but a piece: 1 MiB (a bitfield for 8 Mi pieces).
pub const MAX_CONTROL_FRAME: u32 = 1 << 20;
/// Largest piece payload: the largest piece length.
pub const MAX_PIECE_PAYLOAD: u32 = pollen_core::piece::MAX_PIECE_LENGTH as u32;
/// Size of the frame header (tag + length).
pub const FRAME_HEADER: usize = 5;
/// Size of a piece response's own header inside its frame.
pub const PIECE_HEADER: usize = 4 + 8 + 32;

const TAG_BITFIELD_REQUEST: u8 = 0x01;
const TAG_BITFIELD: u8 = 0x02;
const TAG_PIECE_REQUEST: u8 = 0x03;
const TAG_PIECE: u8 = 0x04;
const TAG_PIECE_MISSING: u8 = 0x05;
const TAG_ERROR: u8 = 0x7f;

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The peer sent a tag this version does not know.
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    /// The declared length is larger than that frame type may be.
    #[error("frame length {len} exceeds the limit {max} for tag {tag:#04x}")]
    TooLong {
        /// Frame tag.
        tag: u8,
        /// Declared length.
        len: u32,
        /// Allowed maximum.
        max: u32,
    },
    /// The value does not have the shape its tag requires.
    #[error("malformed frame (tag {tag:#04x}): {reason}")]
    Malformed {
        /// Frame tag.
        tag: u8,
        /// What was wrong.
        reason: &'static str,
    },
    /// The connection closed in the middle of a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// Socket or file I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Header of a piece response; `length` payload bytes follow it on the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceHeader {
    /// Piece number.
    pub number: u32,
    /// Byte offset of the piece in the content.
    pub offset: u64,
    /// Payload length.
    pub length: u32,
    /// The sender's digest of the piece (informational: receivers check the scheduler's).
    pub digest: PieceDigest,
}

/// One data-plane message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// "Which pieces of this task do you have?"
    BitfieldRequest {
        /// The task.
        task: TaskId,
    },
    /// The answer: piece count and bits (zero pieces when the task is unknown).
    Bitfield {
        /// The task.
        task: TaskId,
        /// Number of pieces the bits describe.
        piece_count: u32,
        /// Bitfield bytes, most significant bit first.
        bits: Vec<u8>,
    },
    /// "Send me this piece."
    PieceRequest {
        /// The task.
        task: TaskId,
        /// Piece number.
        number: u32,
    },
    /// A piece follows (payload not included in this value).
    Piece(PieceHeader),
    /// The sender does not (or no longer) have the piece.
    PieceMissing {
        /// The task.
        task: TaskId,
        /// Piece number.
        number: u32,
    },
    /// The sender refuses the connection's last request; the connection closes after this.
    Error {
        /// Human-readable reason.
        message: String,
    },
}

impl Message {
    /// Appends the encoded frame to `out`. For [`Message::Piece`] only the frame and piece
    /// headers are written; the caller sends `length` payload bytes next.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (tag, value_len) = match self {
            Message::BitfieldRequest { .. } => (TAG_BITFIELD_REQUEST, 32),
            Message::Bitfield { bits, .. } => (TAG_BITFIELD, 36 + bits.len()),
            Message::PieceRequest { .. } => (TAG_PIECE_REQUEST, 36),
            Message::Piece(h) => (TAG_PIECE, PIECE_HEADER + h.length as usize),
            Message::PieceMissing { .. } => (TAG_PIECE_MISSING, 36),
            Message::Error { message } => (TAG_ERROR, message.len().min(4096)),
        };
        out.push(tag);
        out.extend_from_slice(&(value_len as u32).to_be_bytes());
        match self {
            Message::BitfieldRequest { task } => out.extend_from_slice(&task.0),
            Message::Bitfield {
                task,
                piece_count,
                bits,
            } => {
                out.extend_from_slice(&task.0);
                out.extend_from_slice(&piece_count.to_be_bytes());
                out.extend_from_slice(bits);
            }
            Message::PieceRequest { task, number } | Message::PieceMissing { task, number } => {
                out.extend_from_slice(&task.0);
                out.extend_from_slice(&number.to_be_bytes());
            }
            Message::Piece(h) => {
                out.extend_from_slice(&h.number.to_be_bytes());
                out.extend_from_slice(&h.offset.to_be_bytes());
                out.extend_from_slice(&h.digest.0);
            }
            Message::Error { message } => {
                let mut end = message.len().min(4096);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                out.truncate(out.len() - 4);
                out.extend_from_slice(&(end as u32).to_be_bytes());
                out.extend_from_slice(&message.as_bytes()[..end]);
            }
        }
    }
}

/// Checks a frame header and returns how many value bytes to read before decoding (for a
/// piece: only its header; the payload length is returned separately).
pub fn check_header(tag: u8, len: u32) -> Result<(usize, u32), WireError> {
    let max = match tag {
        TAG_PIECE => MAX_PIECE_PAYLOAD + PIECE_HEADER as u32,
        TAG_BITFIELD_REQUEST | TAG_BITFIELD | TAG_PIECE_REQUEST | TAG_PIECE_MISSING | TAG_ERROR => {
            MAX_CONTROL_FRAME
        }
        other => return Err(WireError::UnknownTag(other)),
    };
    if len > max {
        return Err(WireError::TooLong { tag, len, max });
    }
    if tag == TAG_PIECE {
        let payload = len
            .checked_sub(PIECE_HEADER as u32)
            .ok_or(WireError::Malformed {
                tag,
                reason: "piece frame shorter than its header",
            })?;
        return Ok((PIECE_HEADER, payload));
    }
    Ok((len as usize, 0))
}

fn task_at(v: &[u8]) -> TaskId {
    let mut t = [0u8; 32];
    t.copy_from_slice(&v[..32]);
    TaskId(t)
}

fn u32_at(v: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([v[at], v[at + 1], v[at + 2], v[at + 3]])
}

/// Decodes a value whose header was accepted by [`check_header`]. `payload` is the piece
/// payload length (zero for other frames).
pub fn decode_value(tag: u8, value: &[u8], payload: u32) -> Result<Message, WireError> {
    let malformed = |reason| WireError::Malformed { tag, reason };
    match tag {
        TAG_BITFIELD_REQUEST => {
            if value.len() != 32 {
                return Err(malformed("bitfield request must be 32 bytes"));
            }
            Ok(Message::BitfieldRequest {
                task: task_at(value),
            })
        }
        TAG_BITFIELD => {
            if value.len() < 36 {
                return Err(malformed("bitfield shorter than 36 bytes"));
            }
            let piece_count = u32_at(value, 32);
            let bits = value[36..].to_vec();
            if bits.len() != (piece_count as usize).div_ceil(8) {
                return Err(malformed("bitfield length does not match piece count"));
            }
            Ok(Message::Bitfield {
                task: task_at(value),
                piece_count,
                bits,
            })
        }
        TAG_PIECE_REQUEST | TAG_PIECE_MISSING => {
            if value.len() != 36 {
                return Err(malformed("piece request must be 36 bytes"));
            }
            let (task, number) = (task_at(value), u32_at(value, 32));
            Ok(if tag == TAG_PIECE_REQUEST {
                Message::PieceRequest { task, number }
            } else {
                Message::PieceMissing { task, number }
            })
        }
        TAG_PIECE => {
            if value.len() != PIECE_HEADER {
                return Err(malformed("piece header must be 44 bytes"));
            }
            let mut offset = [0u8; 8];
            offset.copy_from_slice(&value[4..12]);
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&value[12..44]);
            Ok(Message::Piece(PieceHeader {
                number: u32_at(value, 0),
                offset: u64::from_be_bytes(offset),
                length: payload,
                digest: PieceDigest(digest),
            }))
        }
        TAG_ERROR => Ok(Message::Error {
            message: String::from_utf8_lossy(value).into_owned(),
        }),
        other => Err(WireError::UnknownTag(other)),
    }
}

/// Decodes one frame from the start of `buf`: the message and the number of bytes consumed
/// (a piece frame consumes only its headers). `Ok(None)` means more bytes are needed.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    if buf.len() < FRAME_HEADER {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32_at(buf, 1);
    let (value_len, payload) = check_header(tag, len)?;
    let Some(value) = buf.get(FRAME_HEADER..FRAME_HEADER + value_len) else {
        return Ok(None);
    };
    Ok(Some((
        decode_value(tag, value, payload)?,
        FRAME_HEADER + value_len,
    )))
}

/// Reads one message from `r`. `Ok(None)` is a clean close between frames. For a piece, the
/// payload is left unread on `r`.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    scratch: &mut Vec<u8>,
) -> Result<Option<Message>, WireError> {
    let mut header = [0u8; FRAME_HEADER];
    let first = r.read(&mut header[..1]).await?;
    if first == 0 {
        return Ok(None);
    }
    r.read_exact(&mut header[1..])
        .await
        .map_err(eof_as_truncated)?;
    let tag = header[0];
    let len = u32_at(&header, 1);
    let (value_len, payload) = check_header(tag, len)?;
    scratch.clear();
    scratch.resize(value_len, 0);
    r.read_exact(scratch).await.map_err(eof_as_truncated)?;
    decode_value(tag, scratch, payload).map(Some)
}

fn eof_as_truncated(e: std::io::Error) -> WireError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        WireError::Truncated
    } else {
        WireError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_task() -> impl Strategy<Value = TaskId> {
        any::<[u8; 32]>().prop_map(TaskId)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            arb_task().prop_map(|task| Message::BitfieldRequest { task }),
            (arb_task(), 0u32..5000).prop_flat_map(|(task, n)| {
                proptest::collection::vec(any::<u8>(), (n as usize).div_ceil(8)).prop_map(
                    move |bits| Message::Bitfield {
                        task,
                        piece_count: n,
                        bits,
                    },
                )
            }),
            (arb_task(), any::<u32>())
                .prop_map(|(task, number)| Message::PieceRequest { task, number }),
            (arb_task(), any::<u32>())
                .prop_map(|(task, number)| Message::PieceMissing { task, number }),
            (
                any::<u32>(),
                any::<u64>(),
                0..=MAX_PIECE_PAYLOAD,
                any::<[u8; 32]>()
            )
                .prop_map(|(number, offset, length, d)| Message::Piece(PieceHeader {
                    number,
                    offset,
                    length,
                    digest: PieceDigest(d),
                })),
            "[a-z ]{0,64}".prop_map(|message| Message::Error { message }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in arb_message()) {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            let (back, used) = decode_frame(&buf).expect("decodes").expect("complete");
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(back, m);
        }

        #[test]
        fn a_prefix_asks_for_more_and_never_errors(m in arb_message(), cut in 0usize..64) {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            let cut = cut.min(buf.len().saturating_sub(1));
            prop_assert!(decode_frame(&buf[..cut]).expect("prefix is not an error").is_none());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_frame(&bytes);
        }
    }

    #[test]
    fn absurd_lengths_are_refused_before_allocation() {
        let frame = [TAG_BITFIELD, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_frame(&frame),
            Err(WireError::TooLong { .. })
        ));
        let frame = [TAG_PIECE, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_frame(&frame),
            Err(WireError::TooLong { .. })
        ));
        let frame = [TAG_PIECE, 0, 0, 0, 3];
        assert!(matches!(
            decode_frame(&frame),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            decode_frame(&[0x42, 0, 0, 0, 0]),
            Err(WireError::UnknownTag(0x42))
        ));
    }

    #[tokio::test]
    async fn read_message_reports_truncation_and_clean_close() {
        let mut buf = Vec::new();
        Message::PieceRequest {
            task: TaskId([7; 32]),
            number: 3,
        }
        .encode(&mut buf);
        let mut scratch = Vec::new();
        let mut short = &buf[..10];
        assert!(matches!(
            read_message(&mut short, &mut scratch).await,
            Err(WireError::Truncated)
        ));
        let mut empty: &[u8] = &[];
        assert!(read_message(&mut empty, &mut scratch)
            .await
            .expect("clean")
            .is_none());
    }
}
