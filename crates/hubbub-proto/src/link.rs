//! Node-to-node link frames.
//!
//! A frame on the wire is `MAGIC (2 bytes) | VERSION (1 byte) | postcard(LinkFrame)`,
//! sent as one binary WebSocket message. The magic number lets a node refuse
//! something that is not a Hubbub link at all (a stray HTTP client, another
//! protocol) with a precise log line; the version byte lets a newer node refuse
//! an older or newer peer explicitly instead of misreading its frames.
//!
//! A link starts with a mutual challenge–response handshake keyed by the
//! cluster key (see `hubbub-cluster`'s `links` module):
//! `Challenge` (acceptor → dialer), `Auth` (dialer → acceptor), `AuthOk`
//! (acceptor → dialer). Only then are other frames accepted.

use hubbub_ring::NodeId;

use crate::chat::ChatFrame;
use serde::{Deserialize, Serialize};

/// First two bytes of every link frame: ASCII "HB".
pub const MAGIC: [u8; 2] = *b"HB";
/// The link protocol version this build speaks.
/// 2: `Deliver` carries the rendered client frame instead of its fields.
/// 3: `Deliver` carries a run of consecutive messages, `Published` the
/// answers of several requests.
pub const VERSION: u8 = 3;
/// Bytes before the postcard body.
pub const HEADER_LEN: usize = MAGIC.len() + 1;
/// Largest frame a node accepts on a link. Handshake and heartbeat frames are
/// tiny; this bound protects a node from a peer that sends a huge frame.
/// Every frame a node sends must fit, so the settings that size frames are
/// bounded by it: [`MAX_BODY_SETTING`] and [`MAX_HISTORY_BYTES_SETTING`].
pub const MAX_FRAME_LEN: usize = 4 << 20;
/// The largest `max_body` a node accepts. A message travels rendered as
/// JSON in a `Deliver`; escaped, a body is no longer than the client frame
/// that carried it, which is at most 4 × `max_body` (2 MiB here), so one
/// message always fits a frame with room to spare.
pub const MAX_BODY_SETTING: usize = MAX_FRAME_LEN / 8;
/// The largest `history_bytes` a node accepts. A room's whole history
/// travels in one frame (a full `Replicate`, a `HistoryReply`, a handoff
/// with the room's pending answers); half the frame limit leaves the other
/// half for the entries' fields and the pending answers.
pub const MAX_HISTORY_BYTES_SETTING: usize = MAX_FRAME_LEN / 2;

/// Length of the random nonces used by the link handshake.
pub const NONCE_LEN: usize = 16;
/// Length of a handshake MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;

/// One frame on a node-to-node link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkFrame {
    /// Acceptor → dialer, first frame: who the acceptor is and the nonce the
    /// dialer must prove knowledge of the cluster key over.
    Challenge { node: NodeId, name: String, nonce: [u8; NONCE_LEN] },
    /// Dialer → acceptor: who the dialer is, its proof over the acceptor's nonce,
    /// and a nonce of its own for the acceptor to answer.
    Auth { node: NodeId, name: String, nonce: [u8; NONCE_LEN], mac: [u8; MAC_LEN] },
    /// Acceptor → dialer: the acceptor's proof over the dialer's nonce.
    AuthOk { mac: [u8; MAC_LEN] },
    /// Heartbeat; the peer answers with `Pong` carrying the same value.
    Ping { at_ms: u64 },
    /// Answer to `Ping`.
    Pong { at_ms: u64 },
    /// Chat routing between nodes (see [`crate::chat`]).
    Chat(ChatFrame),
}

/// Why a received link frame could not be decoded. No state changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLong(usize),
    #[error("bad magic number {0:02x?}: not a Hubbub link frame")]
    BadMagic([u8; 2]),
    #[error("unsupported link protocol version {got} (this node speaks {VERSION})")]
    UnsupportedVersion { got: u8 },
    #[error("malformed frame body: {0}")]
    Malformed(String),
}

/// Encodes `frame` with its header.
pub fn encode(frame: &LinkFrame) -> Vec<u8> {
    encode_body(frame)
}

/// Encodes `LinkFrame::Chat(frame)` without taking or copying `frame`: the
/// same bytes as [`encode`] (a newtype variant is its index, then its value).
pub fn encode_chat(frame: &ChatFrame) -> Vec<u8> {
    struct ChatRef<'a>(&'a ChatFrame);
    impl Serialize for ChatRef<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_newtype_variant("LinkFrame", CHAT_VARIANT, "Chat", self.0)
        }
    }
    encode_body(&ChatRef(frame))
}

/// `LinkFrame::Chat`'s variant index (its place in the enum, from 0).
const CHAT_VARIANT: u32 = 5;

fn encode_body(body: &impl Serialize) -> Vec<u8> {
    // Sized first (a pass that writes nothing), so the frame is allocated
    // once instead of doubling from a guess.
    let size = postcard::experimental::serialized_size(body).unwrap_or(64);
    let mut out = Vec::with_capacity(HEADER_LEN + size);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    // Serializing into a Vec cannot fail for these types (no maps with
    // non-string keys, no unsized sequences without length).
    postcard::to_io(body, &mut out).expect("postcard encoding into a Vec is infallible");
    out
}

/// Decodes one frame, checking magic, version and length first.
pub fn decode(bytes: &[u8]) -> Result<LinkFrame, FrameError> {
    if bytes.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(bytes.len()));
    }
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::TooShort(bytes.len()));
    }
    let magic = [bytes[0], bytes[1]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if bytes[2] != VERSION {
        return Err(FrameError::UnsupportedVersion { got: bytes[2] });
    }
    postcard::from_bytes(&bytes[HEADER_LEN..]).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_strategy() -> impl Strategy<Value = LinkFrame> {
        prop_oneof![
            (any::<u64>(), "[a-z0-9-]{0,64}", any::<[u8; NONCE_LEN]>())
                .prop_map(|(id, name, nonce)| LinkFrame::Challenge { node: NodeId(id), name, nonce }),
            (any::<u64>(), "[a-z0-9-]{0,64}", any::<[u8; NONCE_LEN]>(), any::<[u8; MAC_LEN]>())
                .prop_map(|(id, name, nonce, mac)| LinkFrame::Auth { node: NodeId(id), name, nonce, mac }),
            any::<[u8; MAC_LEN]>().prop_map(|mac| LinkFrame::AuthOk { mac }),
            any::<u64>().prop_map(|at_ms| LinkFrame::Ping { at_ms }),
            any::<u64>().prop_map(|at_ms| LinkFrame::Pong { at_ms }),
            (any::<u64>(), any::<u64>(), "[a-z0-9]{1,64}", ".{0,64}", ".{0,300}").prop_map(
                |(req, origin, room, id, body)| LinkFrame::Chat(ChatFrame::Publish {
                    req,
                    origin: NodeId(origin),
                    room,
                    from: "ann".into(),
                    id,
                    body,
                    hops: 1
                })
            ),
            (any::<u64>(), proptest::collection::vec(any::<u64>(), 0..8)).prop_map(|(next_seq, nodes)| {
                LinkFrame::Chat(ChatFrame::Handoff {
                    room: "r".into(),
                    state: crate::chat::RoomState {
                        next_seq,
                        nodes: nodes.into_iter().map(NodeId).collect(),
                        history: vec![crate::chat::Entry::new(next_seq.saturating_sub(1), "ann", "m1", "hi", 7)],
                        released: next_seq.saturating_sub(1),
                        pending: Vec::new(),
                        term: 3,
                    },
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(frame in frame_strategy()) {
            let bytes = encode(&frame);
            prop_assert_eq!(&bytes[..2], &MAGIC);
            prop_assert_eq!(bytes[2], VERSION);
            prop_assert_eq!(decode(&bytes), Ok(frame));
        }

        #[test]
        fn a_chat_frame_encodes_the_same_borrowed(frame in frame_strategy()) {
            if let LinkFrame::Chat(chat) = &frame {
                prop_assert_eq!(encode_chat(chat), encode(&frame));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn truncated_frames_are_errors(frame in frame_strategy(), cut in 1usize..8) {
            let bytes = encode(&frame);
            let cut = cut.min(bytes.len() - HEADER_LEN);
            if cut > 0 {
                prop_assert!(decode(&bytes[..bytes.len() - cut]).is_err());
            }
        }
    }

    /// The largest frames the bounded settings allow still fit: one message
    /// with the most escaping a client frame can carry, and a room's whole
    /// history of the largest bodies with many pending answers.
    #[test]
    fn the_largest_frames_the_settings_allow_fit() {
        use crate::chat::{Entry, PendingPublish, RoomState};
        // A body of control characters: 6 bytes each escaped, in a client
        // frame of at most 4 × max_body.
        let body = "\u{1}".repeat(4 * MAX_BODY_SETTING / 6);
        let text = crate::client::room_message_json(
            &"r".repeat(64),
            u64::MAX,
            &"u".repeat(32),
            &body,
            &"i".repeat(64),
            u64::MAX,
        );
        let deliver = ChatFrame::Deliver { room: "r".repeat(64), first: u64::MAX, texts: vec![text] };
        assert!(encode_chat(&deliver).len() <= MAX_FRAME_LEN);
        // History is counted as body + id + from + 32 bytes per entry.
        let entry =
            |seq: u64| Entry::new(seq, &"u".repeat(32), &"i".repeat(64), &"b".repeat(MAX_BODY_SETTING - 128), u64::MAX);
        let per_entry = MAX_BODY_SETTING - 128 + 64 + 32 + 32;
        let history: Vec<Entry> =
            (0..(MAX_HISTORY_BYTES_SETTING / per_entry) as u64).map(|s| entry(u64::MAX - s)).collect();
        let replicate =
            ChatFrame::Replicate { room: "r".repeat(64), term: u64::MAX, entries: history.clone(), full: true };
        assert!(encode_chat(&replicate).len() <= MAX_FRAME_LEN);
        let pending =
            (0..20_000).map(|_| PendingPublish { seq: u64::MAX, req: u64::MAX, origin: NodeId(u64::MAX) }).collect();
        let state = RoomState {
            next_seq: u64::MAX,
            nodes: vec![NodeId(u64::MAX); 64],
            history,
            released: u64::MAX,
            pending,
            term: u64::MAX,
        };
        assert!(encode_chat(&ChatFrame::Handoff { room: "r".repeat(64), state }).len() <= MAX_FRAME_LEN);
    }

    #[test]
    fn rejects_other_versions_and_magic() {
        let mut bytes = encode(&LinkFrame::Ping { at_ms: 7 });
        for other in [VERSION - 1, VERSION + 1] {
            bytes[2] = other;
            assert_eq!(decode(&bytes), Err(FrameError::UnsupportedVersion { got: other }));
        }
        bytes[0] = b'G';
        assert!(matches!(decode(&bytes), Err(FrameError::BadMagic(_))));
        assert_eq!(decode(b"HB"), Err(FrameError::TooShort(2)));
    }
}
