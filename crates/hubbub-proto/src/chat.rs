//! Chat routing frames between nodes, carried as [`crate::link::LinkFrame::Chat`].
//!
//! Rooms and users are owned by the node the ring names for their key. A
//! node forwards a client's request to the owner; the owner answers the
//! origin node and fans deliveries out once per subscribing node. A room's
//! state moves between nodes only as a whole ([`RoomState`] in `Handoff` or
//! `ClaimReply`), so at most one node sequences a room at a time.
//! `hops` counts forwards; a frame that was forwarded [`MAX_HOPS`] times is
//! answered with a failure instead of travelling on.

use std::borrow::Cow;

use hubbub_ring::NodeId;
use serde::{Deserialize, Serialize};

/// Forwards allowed before a request fails as unavailable.
pub const MAX_HOPS: u8 = 4;

/// One sequenced message of a room's history: `seq`, sender, client id,
/// body and time.
///
/// Sender, id and body live in one allocation. A room keeps up to 1,000
/// entries at its holder and again at each replica, and once a log is full
/// every new entry evicts the oldest, whose memory is by then out of cache:
/// one block to read and free per eviction instead of three (and 48 bytes
/// in the log's deque instead of 88). On the wire it is the five fields
/// `seq, from, id, body, ts` in that order, as a derived struct would be.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub ts: u64,
    /// `from`, then `id`, then `body`.
    text: Box<str>,
    from_end: usize,
    id_end: usize,
}

impl Entry {
    pub fn new(seq: u64, from: &str, id: &str, body: &str, ts: u64) -> Entry {
        let mut text = String::with_capacity(from.len() + id.len() + body.len());
        text.push_str(from);
        text.push_str(id);
        text.push_str(body);
        Entry { seq, ts, text: text.into_boxed_str(), from_end: from.len(), id_end: from.len() + id.len() }
    }

    /// The sender's user name.
    pub fn from(&self) -> &str {
        &self.text[..self.from_end]
    }

    /// The id the sender gave the message.
    pub fn id(&self) -> &str {
        &self.text[self.from_end..self.id_end]
    }

    pub fn body(&self) -> &str {
        &self.text[self.id_end..]
    }

    /// Bytes of sender, id and body together.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("seq", &self.seq)
            .field("from", &self.from())
            .field("id", &self.id())
            .field("body", &self.body())
            .field("ts", &self.ts)
            .finish()
    }
}

/// [`Entry`] as it is written and read: borrowed from the frame where the
/// format allows (postcard does), so reading one allocates once.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Entry")]
struct EntryWire<'a> {
    seq: u64,
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    body: Cow<'a, str>,
    ts: u64,
}

impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = EntryWire {
            seq: self.seq,
            from: Cow::Borrowed(self.from()),
            id: Cow::Borrowed(self.id()),
            body: Cow::Borrowed(self.body()),
            ts: self.ts,
        };
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        let w = EntryWire::deserialize(d)?;
        Ok(Entry::new(w.seq, &w.from, &w.id, &w.body, w.ts))
    }
}

/// A publish the holder sequenced and has not answered yet (waiting for a
/// replica); it moves with the room so the new holder answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPublish {
    pub seq: u64,
    pub req: u64,
    pub origin: NodeId,
}

/// What moves with a room when its owner changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    /// The sequence number the next message will get (1 for a new room).
    pub next_seq: u64,
    /// Nodes with at least one local subscriber.
    pub nodes: Vec<NodeId>,
    /// The kept history, oldest first.
    pub history: Vec<Entry>,
    /// The last seq fanned out to subscribers.
    pub released: u64,
    /// Sequenced publishes not yet answered.
    pub pending: Vec<PendingPublish>,
    /// Ownership term: raised on every failover, so replicas refuse a stale owner.
    pub term: u64,
}

/// What a node answers to a `Claim`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimAnswer {
    /// Here it is; this node no longer holds it.
    State(RoomState),
    /// This node already sent the room to the claimer (it is on its way).
    Sent,
    /// Ask this node instead (it holds the room, or is the likelier holder).
    Redirect(NodeId),
    /// This node is claiming the room itself and wins the race; ask later.
    Busy,
    /// This node knows nothing of the room and no likelier holder: it is new.
    Unknown,
}

/// One chat frame on a node link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatFrame {
    /// Origin → room owner: sequence and fan out this message.
    Publish { req: u64, origin: NodeId, room: String, from: String, id: String, body: String, hops: u8 },
    /// Owner → origin: each `(req, seq)` pair says request `req` got `seq`
    /// in `room` (what one release answers for that origin, in one frame).
    Published { room: String, acks: Vec<(u64, u64)> },
    /// Any node → origin: `req` could not be completed.
    Failed { req: u64, reason: String },
    /// Owner → subscriber node: the sequenced messages `first`, `first + 1`,
    /// …, as the `message` frames its clients get (rendered once by the
    /// owner, passed on as they are). One release of several messages is
    /// one frame instead of one each.
    Deliver { room: String, first: u64, texts: Vec<String> },
    /// Subscriber node → owner: `node` has local subscribers now. `after`:
    /// the last seq the node delivered, when it already had the room (a
    /// re-subscription after an owner change): the owner re-sends what follows.
    Subscribe { room: String, node: NodeId, hops: u8, after: Option<u64> },
    /// Owner → subscriber node: subscribed; the last sequenced message is `seq`.
    Subscribed { room: String, seq: u64 },
    /// Subscriber node → owner: `node` has no local subscribers any more.
    Unsubscribe { room: String, node: NodeId, hops: u8 },
    /// Subscriber node → owner: the kept messages after `since`, for a
    /// connection that resumes.
    History { req: u64, room: String, since: u64, node: NodeId, hops: u8 },
    /// Owner → subscriber node: messages after the request's `since` (all
    /// kept ones up to now); `truncated`: older ones are no longer kept.
    HistoryReply { req: u64, room: String, entries: Vec<Entry>, truncated: bool },
    /// Owner → replica: store these entries of `room` (a full copy of the
    /// log when `full`, else the next ones).
    Replicate { room: String, term: u64, entries: Vec<Entry>, full: bool },
    /// Replica → owner: stored everything of `room` up to `seq`;
    /// `need_full`: entries did not follow what it has (it restarted, or a
    /// frame was lost with a link), so it wants the whole log.
    Replicated { room: String, term: u64, seq: u64, need_full: bool },
    /// New owner → previous owner: hand me this room.
    Claim { room: String },
    /// Claimed node → claimer.
    ClaimReply { room: String, answer: ClaimAnswer },
    /// Old owner → new owner, unasked: take this room (ring change, drain).
    Handoff { room: String, state: RoomState },
    /// A draining node → every node: never choose `node` as an owner again;
    /// its rooms are being handed off.
    Leaving { node: NodeId },
    /// New owner → old owner: the handoff of `room` is installed.
    HandoffAck { room: String },
    /// Node → user owner: `user` has connections on `node`.
    UserOnline { user: String, node: NodeId },
    /// Node → user owner: `user` has no connection left on `node`.
    UserOffline { user: String, node: NodeId },
    /// Origin → user owner: deliver to every connection of `to`.
    Direct { req: u64, origin: NodeId, to: String, from: String, id: String, body: String, ts: u64, hops: u8 },
    /// User owner → origin: `req` reached `nodes` nodes (0: the user is offline).
    DirectDone { req: u64, nodes: u32 },
    /// User owner → a node of the user: deliver to the user's local connections.
    DeliverDirect { to: String, from: String, id: String, body: String, ts: u64 },
    /// Origin → every node: deliver to every local connection.
    Broadcast { from: String, id: String, body: String, ts: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `Entry` was before its strings shared one allocation: the
    /// layout nodes of this link version expect on the wire.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct FiveFields {
        seq: u64,
        from: String,
        id: String,
        body: String,
        ts: u64,
    }

    proptest! {
        #[test]
        fn an_entry_is_written_and_read_as_its_five_fields(
            seq in any::<u64>(), from in ".{0,12}", id in ".{0,12}", body in ".{0,40}", ts in any::<u64>()
        ) {
            let entry = Entry::new(seq, &from, &id, &body, ts);
            prop_assert_eq!((entry.from(), entry.id(), entry.body()), (from.as_str(), id.as_str(), body.as_str()));
            prop_assert_eq!(entry.text_len(), from.len() + id.len() + body.len());
            let fields = FiveFields { seq, from, id, body, ts };
            let bytes = postcard::to_allocvec(&entry).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&fields).unwrap());
            prop_assert_eq!(postcard::from_bytes::<Entry>(&bytes).unwrap(), entry.clone());
            // A format that cannot lend its strings (JSON with escapes) still reads it.
            let json = serde_json::to_string(&entry).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&fields).unwrap());
            prop_assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), entry);
        }
    }
}
