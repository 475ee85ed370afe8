//! Chat routing frames between nodes, carried as [`crate::link::LinkFrame::Chat`].
//!
//! Rooms and users are owned by the node the ring names for their key. A
//! node forwards a client's request to the owner; the owner answers the
//! origin node and fans deliveries out once per subscribing node. A room's
//! state moves between nodes only as a whole ([`RoomState`] in `Handoff` or
//! `ClaimReply`), so at most one node sequences a room at a time.
//! `hops` counts forwards; a frame that was forwarded [`MAX_HOPS`] times is
//! answered with a failure instead of travelling on.

use hubbub_ring::NodeId;
use serde::{Deserialize, Serialize};

/// Forwards allowed before a request fails as unavailable.
pub const MAX_HOPS: u8 = 4;

/// One sequenced message of a room's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub from: String,
    pub id: String,
    pub body: String,
    pub ts: u64,
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
