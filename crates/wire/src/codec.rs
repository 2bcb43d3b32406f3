//! Frame codec: encoding and bounded decoding of data-plane messages.
//!
//! Layout of each frame: `tag: u8 | length: u32 BE | value`. The unit of transfer is the
//! slice (see `pollen_core::slice`): bitfields count slices, and a request asks for one. A
//! slice response is a frame of the piece's slice hashes, then a slice frame whose value is a
//! 12-byte header followed by the slice bytes; the codec decodes only the header and leaves
//! the bytes for the caller to stream to disk, so a slice is never buffered whole.
//!
//! Invariants: no length read from the wire is used to allocate before it is checked against
//! [`MAX_CONTROL_FRAME`] or [`MAX_PIECE_PAYLOAD`]; unknown tags are errors, not skipped.

use pollen_core::slice::{SliceHash, MAX_SLICES_PER_PIECE, SLICE_LENGTH};
use pollen_core::TaskId;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest value of any frame but a slice: 4 MiB (a bitfield for 32 Mi slices, a task of
/// 8 TiB).
pub const MAX_CONTROL_FRAME: u32 = 4 << 20;
/// Largest slice payload: the slice length.
pub const MAX_SLICE_PAYLOAD: u32 = SLICE_LENGTH as u32;
/// Size of the frame header (tag + length).
pub const FRAME_HEADER: usize = 5;
/// Size of a slice response's own header inside its frame.
pub const SLICE_HEADER: usize = 4 + 8;

const TAG_BITFIELD_REQUEST: u8 = 0x01;
const TAG_BITFIELD: u8 = 0x02;
const TAG_SLICE_REQUEST: u8 = 0x03;
const TAG_SLICE: u8 = 0x04;
const TAG_SLICE_MISSING: u8 = 0x05;
const TAG_SLICE_HASHES: u8 = 0x06;
const TAG_GRANT: u8 = 0x07;
/// Size of a grant frame's value: task, expiry, signature.
const GRANT_LEN: usize = 32 + 8 + 64;
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

/// Header of a slice response; `length` payload bytes follow it on the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceHeader {
    /// Slice number, counted across the task.
    pub slice: u32,
    /// Byte offset of the slice in the content.
    pub offset: u64,
    /// Payload length.
    pub length: u32,
}

/// One data-plane message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// "Which slices of this task do you have?"
    BitfieldRequest {
        /// The task.
        task: TaskId,
    },
    /// The answer: slice count and bits (zero slices when the task is unknown).
    Bitfield {
        /// The task.
        task: TaskId,
        /// Number of slices the bits describe.
        count: u32,
        /// Bitfield bytes, most significant bit first.
        bits: Vec<u8>,
    },
    /// "Send me this slice."
    SliceRequest {
        /// The task.
        task: TaskId,
        /// Slice number, counted across the task.
        slice: u32,
    },
    /// The hashes of every slice of a piece, sent just before a slice of it.
    SliceHashes {
        /// Piece number.
        piece: u32,
        /// One hash per slice of the piece, in order.
        hashes: Vec<SliceHash>,
    },
    /// A slice follows (payload not included in this value).
    Slice(SliceHeader),
    /// The sender does not (or no longer, or not now) have the slice.
    SliceMissing {
        /// The task.
        task: TaskId,
        /// Slice number.
        slice: u32,
    },
    /// "I may fetch this private task": the scheduler's grant (see `pollen_core::grant`),
    /// shown before asking for the task on this connection.
    Grant {
        /// The task.
        task: TaskId,
        /// The grant.
        grant: pollen_core::grant::Grant,
    },
    /// The sender refuses the connection's last request; the connection closes after this.
    Error {
        /// Human-readable reason.
        message: String,
    },
}

impl Message {
    /// Appends the encoded frame to `out`. For [`Message::Slice`] only the frame and slice
    /// headers are written; the caller sends `length` payload bytes next.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (tag, value_len) = match self {
            Message::BitfieldRequest { .. } => (TAG_BITFIELD_REQUEST, 32),
            Message::Bitfield { bits, .. } => (TAG_BITFIELD, 36 + bits.len()),
            Message::SliceRequest { .. } => (TAG_SLICE_REQUEST, 36),
            Message::SliceHashes { hashes, .. } => (TAG_SLICE_HASHES, 4 + 32 * hashes.len()),
            Message::Slice(h) => (TAG_SLICE, SLICE_HEADER + h.length as usize),
            Message::SliceMissing { .. } => (TAG_SLICE_MISSING, 36),
            Message::Grant { .. } => (TAG_GRANT, GRANT_LEN),
            Message::Error { message } => (TAG_ERROR, message.len().min(4096)),
        };
        out.push(tag);
        out.extend_from_slice(&(value_len as u32).to_be_bytes());
        match self {
            Message::BitfieldRequest { task } => out.extend_from_slice(&task.0),
            Message::Bitfield { task, count, bits } => {
                out.extend_from_slice(&task.0);
                out.extend_from_slice(&count.to_be_bytes());
                out.extend_from_slice(bits);
            }
            Message::SliceRequest { task, slice } | Message::SliceMissing { task, slice } => {
                out.extend_from_slice(&task.0);
                out.extend_from_slice(&slice.to_be_bytes());
            }
            Message::SliceHashes { piece, hashes } => {
                out.extend_from_slice(&piece.to_be_bytes());
                for h in hashes {
                    out.extend_from_slice(h);
                }
            }
            Message::Slice(h) => {
                out.extend_from_slice(&h.slice.to_be_bytes());
                out.extend_from_slice(&h.offset.to_be_bytes());
            }
            Message::Grant { task, grant } => {
                out.extend_from_slice(&task.0);
                out.extend_from_slice(&grant.expires.to_be_bytes());
                out.extend_from_slice(&grant.signature);
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
/// slice: only its header; the payload length is returned separately).
pub fn check_header(tag: u8, len: u32) -> Result<(usize, u32), WireError> {
    let max = match tag {
        TAG_SLICE => MAX_SLICE_PAYLOAD + SLICE_HEADER as u32,
        TAG_SLICE_HASHES => 4 + 32 * MAX_SLICES_PER_PIECE,
        TAG_BITFIELD_REQUEST | TAG_BITFIELD | TAG_SLICE_REQUEST | TAG_SLICE_MISSING | TAG_ERROR => {
            MAX_CONTROL_FRAME
        }
        TAG_GRANT => GRANT_LEN as u32,
        other => return Err(WireError::UnknownTag(other)),
    };
    if len > max {
        return Err(WireError::TooLong { tag, len, max });
    }
    if tag == TAG_SLICE {
        let payload = len
            .checked_sub(SLICE_HEADER as u32)
            .ok_or(WireError::Malformed {
                tag,
                reason: "slice frame shorter than its header",
            })?;
        return Ok((SLICE_HEADER, payload));
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

/// Decodes a value whose header was accepted by [`check_header`]. `payload` is the slice
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
            let count = u32_at(value, 32);
            let bits = value[36..].to_vec();
            if bits.len() != (count as usize).div_ceil(8) {
                return Err(malformed("bitfield length does not match slice count"));
            }
            Ok(Message::Bitfield {
                task: task_at(value),
                count,
                bits,
            })
        }
        TAG_SLICE_REQUEST | TAG_SLICE_MISSING => {
            if value.len() != 36 {
                return Err(malformed("slice request must be 36 bytes"));
            }
            let (task, slice) = (task_at(value), u32_at(value, 32));
            Ok(if tag == TAG_SLICE_REQUEST {
                Message::SliceRequest { task, slice }
            } else {
                Message::SliceMissing { task, slice }
            })
        }
        TAG_SLICE_HASHES => {
            if value.len() < 4 + 32 || !(value.len() - 4).is_multiple_of(32) {
                return Err(malformed(
                    "slice hashes must be a piece number and 32-byte hashes",
                ));
            }
            let hashes = value[4..]
                .chunks_exact(32)
                .map(|c| {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(c);
                    h
                })
                .collect();
            Ok(Message::SliceHashes {
                piece: u32_at(value, 0),
                hashes,
            })
        }
        TAG_SLICE => {
            if value.len() != SLICE_HEADER {
                return Err(malformed("slice header must be 12 bytes"));
            }
            let mut offset = [0u8; 8];
            offset.copy_from_slice(&value[4..12]);
            Ok(Message::Slice(SliceHeader {
                slice: u32_at(value, 0),
                offset: u64::from_be_bytes(offset),
                length: payload,
            }))
        }
        TAG_GRANT => {
            if value.len() != GRANT_LEN {
                return Err(malformed("grant must be 104 bytes"));
            }
            let mut expires = [0u8; 8];
            expires.copy_from_slice(&value[32..40]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&value[40..]);
            Ok(Message::Grant {
                task: task_at(value),
                grant: pollen_core::grant::Grant {
                    expires: u64::from_be_bytes(expires),
                    signature,
                },
            })
        }
        TAG_ERROR => Ok(Message::Error {
            message: String::from_utf8_lossy(value).into_owned(),
        }),
        other => Err(WireError::UnknownTag(other)),
    }
}

/// Decodes one frame from the start of `buf`: the message and the number of bytes consumed
/// (a slice frame consumes only its headers). `Ok(None)` means more bytes are needed.
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

/// Reads one message from `r`. `Ok(None)` is a clean close between frames. For a slice, the
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
                        count: n,
                        bits,
                    },
                )
            }),
            (arb_task(), any::<u32>())
                .prop_map(|(task, slice)| Message::SliceRequest { task, slice }),
            (arb_task(), any::<u32>())
                .prop_map(|(task, slice)| Message::SliceMissing { task, slice }),
            (
                any::<u32>(),
                proptest::collection::vec(any::<[u8; 32]>(), 1..=MAX_SLICES_PER_PIECE as usize)
            )
                .prop_map(|(piece, hashes)| Message::SliceHashes { piece, hashes }),
            (any::<u32>(), any::<u64>(), 0..=MAX_SLICE_PAYLOAD).prop_map(
                |(slice, offset, length)| Message::Slice(SliceHeader {
                    slice,
                    offset,
                    length,
                })
            ),
            "[a-z ]{0,64}".prop_map(|message| Message::Error { message }),
            (
                arb_task(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 64)
            )
                .prop_map(|(task, expires, sig)| {
                    let mut signature = [0u8; 64];
                    signature.copy_from_slice(&sig);
                    Message::Grant {
                        task,
                        grant: pollen_core::grant::Grant { expires, signature },
                    }
                }),
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
        fn frames_encoded_one_after_another_decode_in_order(a in arb_message(), b in arb_message()) {
            // Connections encode several frames into one buffer before sending it.
            let mut buf = Vec::new();
            a.encode(&mut buf);
            b.encode(&mut buf);
            let (first, used) = decode_frame(&buf).expect("decodes").expect("complete");
            prop_assert_eq!(first, a);
            let (second, rest) = decode_frame(&buf[used..]).expect("decodes").expect("complete");
            prop_assert_eq!(used + rest, buf.len());
            prop_assert_eq!(second, b);
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
        let frame = [TAG_SLICE, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_frame(&frame),
            Err(WireError::TooLong { .. })
        ));
        let mut frame = vec![TAG_SLICE_HASHES];
        frame.extend_from_slice(&(4 + 32 * MAX_SLICES_PER_PIECE + 1).to_be_bytes());
        assert!(matches!(
            decode_frame(&frame),
            Err(WireError::TooLong { .. })
        ));
        let frame = [TAG_SLICE_HASHES, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            decode_frame(&frame),
            Err(WireError::Malformed { .. })
        ));
        let frame = [TAG_SLICE, 0, 0, 0, 3];
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
        Message::SliceRequest {
            task: TaskId([7; 32]),
            slice: 3,
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

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary_within_the_limit() {
        // 3000 two-byte characters: 6000 bytes, cut to the 4096-byte limit, which falls
        // inside no character (4096 is even), then one more with an odd start.
        for prefix in ["", "x"] {
            let message = format!("{prefix}{}", "é".repeat(3000));
            let mut out = Vec::new();
            Message::Error {
                message: message.clone(),
            }
            .encode(&mut out);
            let (decoded, used) = decode_frame(&out).expect("decodes").expect("whole");
            assert_eq!(used, out.len());
            let Message::Error { message: got } = decoded else {
                panic!("{decoded:?}");
            };
            assert!(got.len() <= 4096 && got.len() >= 4094, "{}", got.len());
            assert!(message.starts_with(&got), "not a prefix of the original");
            assert!(!got.contains('\u{fffd}'), "a character was split");
        }
    }
}
