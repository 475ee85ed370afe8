//! The backplane's state machine: no sockets, no clock, no tasks.
//!
//! [`Core`] is fed client requests (from this node's WebSocket sessions),
//! chat frames (from peers), ring changes and ticks, each with the current
//! time in milliseconds. It answers clients through their [`ConnSink`] and
//! peers through a [`PeerSink`], both non-blocking, so the driver can call
//! it under one short-held mutex. Frames a node addresses to itself are
//! queued and handled before the entry point returns, in order.
//!
//! Owner side ([`crate::owner`]): rooms this node holds, the user directory
//! for users it owns, claims and handoffs. Local side ([`crate::local`]):
//! connections, local room subscriptions with their reorder buffers, pending
//! acks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use hubbub_proto::chat::{ChatFrame, Entry};
use hubbub_proto::client::{CloseCode, ServerMsg};
use hubbub_proto::link;
use hubbub_ring::{NodeId, Ring};
use serde::Serialize;

pub use tokio_tungstenite::tungstenite::Utf8Bytes as Text;

use crate::history::{Held, HistoryLimits, ReplicaLog};

/// A client connection's id, unique within the node.
pub type ConnId = u64;

/// A map keyed by ids this node allocates itself (connections, requests),
/// hashed with foldhash instead of std's SipHash: several times faster on a
/// `u64`, and every delivery looks its connection up (hashing was ~15 % of
/// a publish's core time, `fanout_send` in BENCHMARKS.md). SipHash's keyed
/// protection matters for client-chosen keys (rooms, users, message ids),
/// which keep it; nobody outside picks these.
pub(crate) type IdMap<V> = HashMap<u64, V, foldhash::fast::RandomState>;

/// Where a connection's outgoing frames go. Implemented by the gateway's
/// session; `push` must not block.
pub trait ConnSink: Send + Sync {
    /// Queues one text frame. `false`: the queue is over its limit; the sink
    /// has started closing the connection as a slow consumer.
    fn push(&self, text: Text) -> bool;
    /// Queues a run of a room's messages in order: what pushing each would
    /// do (it stops at a refusal), in one step. A sink whose client reads
    /// several messages per frame may queue [`Run::lines`] instead.
    fn push_run(&self, run: &Run) -> bool {
        run.texts().iter().all(|text| self.push(text.clone()))
    }
    /// Closes the connection with `code` (after what is already queued).
    fn close(&self, code: CloseCode);
}

/// Consecutive messages of one room, handed to each local subscriber in
/// one step. The messages joined one per line (what a batched client frame
/// holds) are made once, for the first subscriber that wants them, and
/// shared by the rest.
pub struct Run {
    texts: Vec<Text>,
    lines: std::cell::OnceCell<Text>,
}

impl Run {
    pub fn new(texts: Vec<Text>) -> Run {
        Run { texts, lines: std::cell::OnceCell::new() }
    }

    /// The messages, in order.
    pub fn texts(&self) -> &[Text] {
        &self.texts
    }

    /// The messages joined by [`hubbub_proto::client::BATCH_SEPARATOR`].
    pub fn lines(&self) -> &Text {
        self.lines.get_or_init(|| match self.texts.as_slice() {
            [text] => text.clone(),
            texts => {
                let len = texts.iter().map(|text| text.len() + 1).sum::<usize>().saturating_sub(1);
                let mut lines = String::with_capacity(len);
                for (i, text) in texts.iter().enumerate() {
                    if i > 0 {
                        lines.push(hubbub_proto::client::BATCH_SEPARATOR);
                    }
                    lines.push_str(text.as_str());
                }
                Text::from(lines)
            }
        })
    }
}

/// Where frames for peers go: the node links. Must not block; frames to one
/// peer must be sent in the order given.
pub trait PeerSink: Send {
    fn send(&self, peer: NodeId, frame: Bytes);
}

/// Limits the core enforces.
#[derive(Clone, Copy, Debug)]
pub struct CoreLimits {
    /// Copies of each room's log: the holder and `replication_factor - 1`
    /// replicas. A publish is answered once one replica stored it (when
    /// another node is alive).
    pub replication_factor: usize,
    /// Bounds of each room's history.
    pub history: HistoryLimits,
    /// Rooms one connection may join.
    pub max_rooms: usize,
    /// Sends (send, direct, broadcast) one connection may have unanswered.
    pub max_in_flight: usize,
    /// How long a request waits for the owner before failing as unavailable.
    pub request_timeout_ms: u64,
    /// How long a gap in a room's seqs is waited on before skipping it.
    pub gap_timeout_ms: u64,
}

impl Default for CoreLimits {
    fn default() -> Self {
        CoreLimits {
            replication_factor: 2,
            history: HistoryLimits::default(),
            max_rooms: 128,
            max_in_flight: 1_024,
            request_timeout_ms: 5_000,
            gap_timeout_ms: 10_000,
        }
    }
}

/// How long a "moved to" note is kept for forwarding late frames.
pub(crate) const MOVED_TTL_MS: u64 = 60_000;
/// Out-of-order deliveries kept per local room while waiting for a gap.
pub(crate) const REORDER_LIMIT: usize = 10_000;
/// Longest a frame from a peer outside the ring waits for the view.
pub(crate) const PARKED_MS: u64 = 2_000;
/// Frames parked at most; beyond, they are handled at once.
pub(crate) const PARKED_LIMIT: usize = 100_000;
/// How often an active subscription is confirmed with its owner.
pub(crate) const REFRESH_MS: u64 = 3_000;
/// How often a pending subscription or claim is retried.
pub(crate) const RETRY_MS: u64 = 1_000;

/// Counters for operators (`/debug/node` → `chat`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatCounters {
    pub connections: u64,
    pub rooms_held: u64,
    pub rooms_local: u64,
    pub published: u64,
    pub delivered_frames: u64,
    pub replayed_messages: u64,
    pub replicated_entries: u64,
    pub replica_rooms: u64,
    pub failovers: u64,
    pub duplicate_sends: u64,
    pub forwarded: u64,
    pub handoffs_sent: u64,
    pub handoffs_received: u64,
    pub claims_sent: u64,
    pub duplicates_dropped: u64,
    pub gaps_skipped: u64,
    pub requests_timed_out: u64,
    pub slow_consumers_closed: u64,
    pub asked_to_move: u64,
    pub refused_without_quorum: u64,
    pub floods_closed: u64,
    pub peer_frames_refused: u64,
}

pub(crate) struct Conn {
    pub(crate) user: String,
    pub(crate) rooms: HashSet<String>,
    pub(crate) sink: Arc<dyn ConnSink>,
    pub(crate) in_flight: usize,
    /// Closing (slow consumer or flood): receives nothing more.
    pub(crate) closing: bool,
    /// When this connection was last asked to move to another node.
    pub(crate) asked_to_move_ms: Option<u64>,
    /// When it said hello.
    pub(crate) connected_ms: u64,
}

pub(crate) enum SubState {
    /// Subscribe sent; connections waiting for `joined` (with the `since`
    /// they asked for), since when.
    Pending {
        waiters: Vec<(ConnId, Option<u64>)>,
        since_ms: u64,
        retried_ms: u64,
    },
    Active,
}

/// A connection replaying a room's history before it goes live.
pub(crate) struct Catchup {
    pub(crate) conn: ConnId,
    pub(crate) room: String,
    pub(crate) since: u64,
    pub(crate) since_ms: u64,
    pub(crate) retried_ms: u64,
}

pub(crate) struct LocalRoom {
    pub(crate) subscribers: BTreeSet<ConnId>,
    pub(crate) last_seq: u64,
    pub(crate) state: SubState,
    /// Deliveries that arrived ahead of `last_seq + 1`.
    pub(crate) reorder: BTreeMap<u64, Text>,
    pub(crate) gap_since_ms: Option<u64>,
    /// The owner the subscription was last sent to.
    pub(crate) owner: NodeId,
    /// Connections of this room replaying history (not yet subscribers).
    pub(crate) catching_up: usize,
    /// When the subscription was last confirmed with the owner.
    pub(crate) refreshed_ms: u64,
}

pub(crate) struct LocalUser {
    pub(crate) conns: BTreeSet<ConnId>,
    /// The owner `UserOnline` was last sent to.
    pub(crate) owner: NodeId,
}

pub(crate) enum PendingKind {
    Room,
    Direct,
}

pub(crate) struct Pending {
    pub(crate) conn: ConnId,
    pub(crate) id: String,
    pub(crate) kind: PendingKind,
    pub(crate) since_ms: u64,
}

/// Where a room went from this node.
pub(crate) struct Moved {
    pub(crate) to: NodeId,
    /// The room's state was sent to `to` (else `to` only claimed it when
    /// this node knew nothing of it).
    pub(crate) sent: bool,
    pub(crate) at: u64,
}

pub(crate) struct Claiming {
    pub(crate) target: NodeId,
    pub(crate) buffered: Vec<(NodeId, ChatFrame)>,
    pub(crate) since_ms: u64,
    pub(crate) hops: u8,
}

/// Where a room's requests go from this node.
pub(crate) enum Route {
    Held,
    Forward(NodeId),
    Buffer,
    /// This node should own the room but has no majority.
    Unavailable,
}

/// One room this node holds, for `/debug/rooms`.
#[derive(Clone, Debug, Serialize)]
pub struct HeldRoom {
    pub room: String,
    pub next_seq: u64,
    pub nodes: Vec<String>,
}

/// One room with local subscribers, for `/debug/rooms`.
#[derive(Clone, Debug, Serialize)]
pub struct LocalRoomInfo {
    pub room: String,
    pub last_seq: u64,
    pub subscribers: usize,
    pub owner: String,
    pub pending: bool,
}

/// The backplane state machine. See the module docs.
pub struct Core {
    pub(crate) me: NodeId,
    pub(crate) ring: Ring,
    /// Members not chosen as owners: announced or draining (see `on_view`).
    pub(crate) leaving: HashSet<NodeId>,
    /// Members that sent `Leaving` (this incarnation).
    pub(crate) announced_leaving: HashSet<NodeId>,
    /// This node is draining: it owns nothing.
    pub(crate) draining: bool,
    /// This node sees a majority of the last stable membership; without it
    /// nothing is sequenced or acknowledged here.
    pub(crate) quorum: bool,
    pub(crate) limits: CoreLimits,
    pub(crate) peers: Box<dyn PeerSink>,
    pub(crate) next_req: u64,
    pub(crate) conns: IdMap<Conn>,
    pub(crate) local_rooms: HashMap<String, LocalRoom>,
    pub(crate) local_users: HashMap<String, LocalUser>,
    pub(crate) pending: IdMap<Pending>,
    pub(crate) held: HashMap<String, Held>,
    pub(crate) moved: HashMap<String, Moved>,
    pub(crate) claiming: HashMap<String, Claiming>,
    pub(crate) unacked_handoffs: HashMap<String, NodeId>,
    pub(crate) user_dir: HashMap<String, BTreeSet<NodeId>>,
    /// Replica copies of rooms other nodes hold.
    pub(crate) replicas: HashMap<String, ReplicaLog>,
    /// History requests of resuming connections: req → catch-up.
    pub(crate) catchups: IdMap<Catchup>,
    pub(crate) counters: ChatCounters,
    /// Frames this node sent to itself, handled before an entry point returns.
    pub(crate) loopback: VecDeque<ChatFrame>,
    /// Frames from peers this node's ring does not know yet, with arrival time.
    pub(crate) parked: Vec<(NodeId, ChatFrame, u64)>,
    /// Entries sequenced in this step and not yet sent to the replicas, with
    /// the term they were sequenced under: one `Replicate` per room per step
    /// carries them all (see `run_loopback`).
    pub(crate) unreplicated: BTreeMap<String, (u64, Vec<Entry>)>,
    /// Inside [`Core::begin_batch`] … [`Core::end_batch`]: what is
    /// sequenced waits for the batch's end to go to the replicas.
    pub(crate) batching: bool,
}

pub(crate) fn text(msg: &ServerMsg) -> Text {
    Text::from(serde_json::to_string(msg).expect("server frames always serialize"))
}

/// Rendered messages one `Deliver` carries at most, in bytes. A message is
/// never split; one of the largest `max_body` (escaped, no longer than the
/// client frame that carried it: 2 MiB) still fits a link frame
/// (`hubbub_proto::link::MAX_BODY_SETTING`).
pub(crate) const DELIVER_BYTES: usize = 256 * 1024;

/// The deliveries of history entries of `room` (in seq order) to subscriber
/// nodes: one `Deliver` per run of consecutive seqs, of at most
/// [`DELIVER_BYTES`] unless a single message is larger.
pub(crate) fn delivers<'a>(room: &str, entries: impl IntoIterator<Item = &'a Entry>) -> Vec<ChatFrame> {
    let mut frames = Vec::new();
    let mut run: Option<(u64, Vec<String>, usize)> = None;
    for e in entries {
        let text = hubbub_proto::client::room_message_json(room, e.seq, e.from(), e.body(), e.id(), e.ts);
        if let Some((first, texts, bytes)) = &mut run
            && e.seq == *first + texts.len() as u64
            && *bytes + text.len() <= DELIVER_BYTES
        {
            *bytes += text.len();
            texts.push(text);
            continue;
        }
        let len = text.len();
        if let Some((first, texts, _)) = run.replace((e.seq, vec![text], len)) {
            frames.push(ChatFrame::Deliver { room: room.to_owned(), first, texts });
        }
    }
    if let Some((first, texts, _)) = run {
        frames.push(ChatFrame::Deliver { room: room.to_owned(), first, texts });
    }
    frames
}

pub(crate) fn encode(frame: &ChatFrame) -> Bytes {
    Bytes::from(link::encode_chat(frame))
}

impl Core {
    pub fn new(me: NodeId, limits: CoreLimits, peers: Box<dyn PeerSink>) -> Core {
        Core {
            me,
            ring: Ring::new([me]),
            leaving: HashSet::new(),
            announced_leaving: HashSet::new(),
            draining: false,
            quorum: true,
            limits,
            peers,
            next_req: 1,
            conns: IdMap::default(),
            local_rooms: HashMap::new(),
            local_users: HashMap::new(),
            pending: IdMap::default(),
            held: HashMap::new(),
            moved: HashMap::new(),
            claiming: HashMap::new(),
            unacked_handoffs: HashMap::new(),
            user_dir: HashMap::new(),
            replicas: HashMap::new(),
            catchups: IdMap::default(),
            counters: ChatCounters::default(),
            loopback: VecDeque::new(),
            parked: Vec::new(),
            unreplicated: BTreeMap::new(),
            batching: false,
        }
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Counters, with the gauges filled in.
    pub fn counters(&self) -> ChatCounters {
        let mut c = self.counters.clone();
        c.connections = self.conns.len() as u64;
        c.rooms_held = self.held.len() as u64;
        c.rooms_local = self.local_rooms.len() as u64;
        c.replica_rooms = self.replicas.len() as u64;
        c
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Rooms held here and rooms with local subscribers, sorted by name.
    pub fn rooms(&self) -> (Vec<HeldRoom>, Vec<LocalRoomInfo>) {
        let mut held: Vec<HeldRoom> = self
            .held
            .iter()
            .map(|(room, h)| HeldRoom {
                room: room.clone(),
                next_seq: h.next_seq,
                nodes: h.nodes.iter().map(|n| n.to_string()).collect(),
            })
            .collect();
        held.sort_by(|a, b| a.room.cmp(&b.room));
        let mut local: Vec<LocalRoomInfo> = self
            .local_rooms
            .iter()
            .map(|(room, r)| LocalRoomInfo {
                room: room.clone(),
                last_seq: r.last_seq,
                subscribers: r.subscribers.len(),
                owner: r.owner.to_string(),
                pending: matches!(r.state, SubState::Pending { .. }),
            })
            .collect();
        local.sort_by(|a, b| a.room.cmp(&b.room));
        (held, local)
    }

    /// Sets whether this node sees a majority (see [`crate::Backplane`]).
    pub fn set_quorum(&mut self, quorum: bool) {
        self.quorum = quorum;
    }

    /// Whether this node sees a majority.
    pub fn has_quorum(&self) -> bool {
        self.quorum
    }

    /// Asks up to `n` connections to move to `url`, oldest first, skipping
    /// those asked in the last `quiet_ms` and those younger than `min_age_ms`
    /// (a client that just moved here is not moved again); returns how many
    /// were asked.
    pub fn ask_to_move(
        &mut self,
        n: usize,
        url: &str,
        reason: &str,
        quiet_ms: u64,
        min_age_ms: u64,
        now: u64,
    ) -> usize {
        let frame = text(&ServerMsg::Reconnect { url: url.to_owned(), reason: reason.to_owned() });
        let mut candidates: Vec<(u64, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing && c.asked_to_move_ms.is_none_or(|at| now.saturating_sub(at) >= quiet_ms))
            .filter(|(_, c)| now.saturating_sub(c.connected_ms) >= min_age_ms)
            .map(|(id, c)| (c.connected_ms, *id))
            .collect();
        candidates.sort_unstable();
        let picked: Vec<ConnId> = candidates.into_iter().take(n).map(|(_, id)| id).collect();
        for conn in &picked {
            if let Some(c) = self.conns.get_mut(conn) {
                c.asked_to_move_ms = Some(now);
            }
            self.push(*conn, frame.clone());
        }
        self.counters.asked_to_move += picked.len() as u64;
        picked.len()
    }

    /// Handoffs sent and not yet acknowledged (draining waits for zero).
    pub fn unacked_handoffs(&self) -> usize {
        self.unacked_handoffs.len()
    }

    /// The owner of `key`: the first node of its preference order that is
    /// neither leaving nor (when draining) this node.
    pub(crate) fn owner_of(&self, key: &[u8]) -> NodeId {
        let excluded = |n: NodeId| self.leaving.contains(&n) || (self.draining && n == self.me);
        match self.ring.owner(key) {
            Some(n) if !excluded(n) => n,
            _ => self.ring.preference_order(key).into_iter().find(|n| !excluded(*n)).unwrap_or(self.me),
        }
    }

    /// Sends `frame` to `peer`, or queues it for this node.
    pub(crate) fn route(&mut self, peer: NodeId, frame: ChatFrame) {
        if peer == self.me {
            self.loopback.push_back(frame);
        } else {
            self.peers.send(peer, encode(&frame));
        }
    }

    /// Handles frames this node sent to itself, then sends what was
    /// sequenced to the replicas (which may answer this node's clients, and
    /// so queue more frames for itself).
    pub(crate) fn run_loopback(&mut self, now: u64) {
        loop {
            self.drain_loopback(now);
            if self.unreplicated.is_empty() || self.batching {
                return;
            }
            for (room, (term, entries)) in std::mem::take(&mut self.unreplicated) {
                // A room whose state was replaced in this step (a newer term
                // installed, or handed off) no longer owns these entries:
                // they must not reach a replica under another term.
                if self.held.get(&room).is_some_and(|h| h.term == term) {
                    self.replicate(&room, entries, now);
                }
            }
        }
    }

    fn drain_loopback(&mut self, now: u64) {
        while let Some(frame) = self.loopback.pop_front() {
            self.handle_frame(self.me, frame, now);
        }
    }

    /// A chat frame from `from` (a peer, or this node through the loopback).
    ///
    /// A request from a peer that is not in this node's ring yet means this
    /// node's view is behind the sender's (a node that just joined). Routing
    /// it on a partial ring could create a room that exists elsewhere, so
    /// the request waits for the next view, or [`PARKED_MS`] at most.
    /// Answers and deliveries never wait: they do not depend on the ring,
    /// and a node that just left still delivers what it sequenced.
    pub fn on_frame(&mut self, from: NodeId, frame: ChatFrame, now: u64) {
        self.on_frame_in_batch(from, frame, now);
        self.run_loopback(now);
    }

    /// [`Core::on_frame`] for one frame of a batch: what it sequences goes to
    /// the replicas at the batch's [`Core::end_batch`], in one `Replicate`
    /// per room (at saturation, tens of entries instead of one frame each).
    pub fn on_frame_in_batch(&mut self, from: NodeId, frame: ChatFrame, now: u64) {
        let needs_ring = matches!(
            frame,
            ChatFrame::Publish { .. }
                | ChatFrame::Subscribe { .. }
                | ChatFrame::History { .. }
                | ChatFrame::Unsubscribe { .. }
                | ChatFrame::Claim { .. }
                | ChatFrame::Direct { .. }
        );
        if needs_ring && from != self.me && !self.ring.contains(from) && self.parked.len() < PARKED_LIMIT {
            self.parked.push((from, frame, now));
            return;
        }
        self.handle_frame(from, frame, now);
        self.drain_loopback(now);
    }

    /// Starts a batch of client requests (one connection's frames that
    /// arrived together): what they sequence goes to the replicas at
    /// [`Core::end_batch`], in one `Replicate` per room.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// Ends a batch of [`Core::on_frame_in_batch`] calls or of client
    /// requests after [`Core::begin_batch`].
    pub fn end_batch(&mut self, now: u64) {
        self.batching = false;
        self.run_loopback(now);
    }

    /// Handles parked frames whose sender is in the ring now, or that waited
    /// long enough.
    fn unpark(&mut self, now: u64) {
        if self.parked.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        for (from, frame, since) in parked {
            if self.ring.contains(from) || now.saturating_sub(since) >= PARKED_MS {
                self.handle_frame(from, frame, now);
            } else {
                self.parked.push((from, frame, since));
            }
        }
        self.run_loopback(now);
    }

    pub(crate) fn handle_frame(&mut self, from: NodeId, frame: ChatFrame, now: u64) {
        match frame {
            ChatFrame::Publish { .. } => self.on_publish(from, frame, now),
            ChatFrame::Subscribe { .. } | ChatFrame::Unsubscribe { .. } => self.on_subscription(from, frame, now),
            ChatFrame::History { .. } => self.on_subscription(from, frame, now),
            ChatFrame::HistoryReply { req, room, entries, truncated } => {
                self.on_history_reply(req, &room, entries, truncated, now)
            }
            ChatFrame::Replicate { room, term, entries, full } => {
                self.on_replicate(from, room, term, entries, full, now)
            }
            ChatFrame::Replicated { room, term, seq, need_full } => {
                self.on_replicated(from, &room, term, seq, need_full, now)
            }
            ChatFrame::Claim { room } => self.on_claim(from, room, now),
            ChatFrame::ClaimReply { room, answer } => self.on_claim_reply(from, room, answer, now),
            ChatFrame::Handoff { room, state } => self.on_handoff(from, room, state, now),
            ChatFrame::HandoffAck { room } => {
                if self.unacked_handoffs.get(&room) == Some(&from) {
                    self.unacked_handoffs.remove(&room);
                }
            }
            ChatFrame::Leaving { node } => {
                if node == from && node != self.me {
                    self.announced_leaving.insert(node);
                    self.leaving.insert(node);
                    self.rehome(now);
                }
            }
            ChatFrame::UserOnline { user, node } => {
                self.user_dir.entry(user).or_default().insert(node);
            }
            ChatFrame::UserOffline { user, node } => {
                if let Some(nodes) = self.user_dir.get_mut(&user) {
                    nodes.remove(&node);
                    if nodes.is_empty() {
                        self.user_dir.remove(&user);
                    }
                }
            }
            ChatFrame::Direct { .. } => self.on_direct(frame, now),
            ChatFrame::Published { room, acks } => {
                for (req, seq) in acks {
                    self.on_published(req, &room, seq);
                }
            }
            ChatFrame::DirectDone { req, nodes } => self.on_direct_done(req, nodes),
            ChatFrame::Failed { req, reason } => self.on_failed(req, &reason),
            ChatFrame::Subscribed { room, seq } => self.on_subscribed(from, room, seq, now),
            ChatFrame::Deliver { room, first, texts } => self.on_deliver_run(&room, first, texts, now),
            ChatFrame::DeliverDirect { to, from: sender, id, body, ts } => {
                let msg = ServerMsg::Message {
                    kind: hubbub_proto::client::Audience::Direct,
                    room: None,
                    seq: None,
                    to: Some(to.clone()),
                    from: sender,
                    body,
                    id,
                    ts,
                };
                self.deliver_to_user(&to, text(&msg));
            }
            ChatFrame::Broadcast { from: sender, id, body, ts } => {
                let msg = ServerMsg::Message {
                    kind: hubbub_proto::client::Audience::Broadcast,
                    room: None,
                    seq: None,
                    to: None,
                    from: sender,
                    body,
                    id,
                    ts,
                };
                self.deliver_to_all(text(&msg));
            }
        }
    }

    /// A new ring (membership changed) and the members that are draining.
    pub fn on_view(&mut self, ring: Ring, draining: impl IntoIterator<Item = NodeId>, now: u64) {
        let ring_changed = ring.fingerprint() != self.ring.fingerprint();
        let members: HashSet<NodeId> = ring.members().iter().copied().collect();
        // Only members this node saw leave its ring are forgotten below: a
        // node that just (re)joined has a partial ring for a moment, and a
        // room state it receives names subscriber nodes it does not know yet.
        let removed: HashSet<NodeId> = self.ring.members().iter().copied().filter(|n| !members.contains(n)).collect();
        self.ring = ring;
        // Leaving = announced by a `Leaving` frame (this incarnation) or
        // draining in the gossiped state now; recomputed, never accumulated,
        // so a node that restarted is an owner again.
        self.announced_leaving.retain(|n| members.contains(n));
        let mut leaving: HashSet<NodeId> = self.announced_leaving.clone();
        leaving.extend(draining.into_iter().filter(|n| *n != self.me && members.contains(n)));
        let leaving_changed = leaving != self.leaving;
        self.leaving = leaving;
        if !ring_changed && !leaving_changed {
            return;
        }
        // Down nodes subscribe to nothing and host no users.
        for held in self.held.values_mut() {
            held.nodes.retain(|n| !removed.contains(n));
        }
        for nodes in self.user_dir.values_mut() {
            nodes.retain(|n| !removed.contains(n));
        }
        self.user_dir.retain(|_, nodes| !nodes.is_empty());
        self.rehome(now);
        self.unpark(now);
        self.run_loopback(now);
    }

    /// Moves what this node holds or registered to the owners the ring names now.
    pub(crate) fn rehome(&mut self, now: u64) {
        self.hand_off_foreign_rooms(now);
        self.resync_replicas(now);
        self.adopt_orphans(now);
        self.resubscribe_moved_rooms(now);
        self.reannounce_moved_users();
        self.retarget_claims(now);
    }

    /// Starts draining: announces it, and hands every held room to its next owner.
    pub fn drain(&mut self, now: u64) {
        self.draining = true;
        let peers: Vec<NodeId> = self.ring.members().iter().copied().filter(|n| *n != self.me).collect();
        let frame = encode(&ChatFrame::Leaving { node: self.me });
        for peer in peers {
            self.peers.send(peer, frame.clone());
        }
        self.rehome(now);
        self.run_loopback(now);
    }

    /// Timeouts: unanswered requests, pending subscriptions, claims, gaps.
    pub fn tick(&mut self, now: u64) {
        self.expire_requests(now);
        self.retry_subscriptions(now);
        self.retry_claims(now);
        self.skip_stale_gaps(now);
        self.moved.retain(|_, m| now.saturating_sub(m.at) < MOVED_TTL_MS);
        self.unpark(now);
        self.run_loopback(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, body: &str) -> Entry {
        Entry::new(seq, "u", &seq.to_string(), body, 1)
    }

    fn runs(frames: &[ChatFrame]) -> Vec<(u64, usize)> {
        frames
            .iter()
            .map(|f| match f {
                ChatFrame::Deliver { first, texts, .. } => (*first, texts.len()),
                other => panic!("not a delivery: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn deliveries_are_one_frame_per_run_of_consecutive_seqs() {
        let entries: Vec<Entry> = [3, 4, 5, 7, 8, 10].iter().map(|s| entry(*s, "b")).collect();
        let frames = delivers("r", &entries);
        assert_eq!(runs(&frames), vec![(3, 3), (7, 2), (10, 1)]);
        let ChatFrame::Deliver { room, texts, .. } = &frames[0] else { unreachable!() };
        assert_eq!(room, "r");
        let expected = hubbub_proto::client::room_message_json("r", 4, "u", "b", "4", 1);
        assert_eq!(texts[1], expected, "each message rendered as its subscribers get it");
        assert!(delivers("r", &[]).is_empty());
    }

    #[test]
    fn a_delivery_frame_is_bounded_in_bytes_but_never_splits_a_message() {
        let big = "x".repeat(DELIVER_BYTES / 3);
        let entries: Vec<Entry> = (1..=5).map(|s| entry(s, &big)).collect();
        assert_eq!(runs(&delivers("r", &entries)), vec![(1, 2), (3, 2), (5, 1)]);
        let huge = "y".repeat(DELIVER_BYTES + 1);
        assert_eq!(runs(&delivers("r", &[entry(1, &huge), entry(2, "b")])), vec![(1, 1), (2, 1)]);
    }
}
