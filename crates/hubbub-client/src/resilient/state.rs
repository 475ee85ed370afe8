//! The bookkeeping of a [`super::ResilientClient`], without I/O: fed the
//! frames that arrive, it answers with the frames to send and the events
//! to report, and keeps what a resume needs (session, nodes, last seq per
//! room, unanswered requests, recently seen ids).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use rand::seq::SliceRandom;

use super::ResilientEvent;
use crate::{Audience, ClientMsg, ErrorCode, ServerMsg};

/// A request the client keeps until the cluster answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Send { room: String, body: String },
    Direct { to: String, body: String },
    Broadcast { body: String },
}

impl Request {
    fn to_msg(&self, id: &str) -> ClientMsg {
        let id = id.to_owned();
        match self {
            Request::Send { room, body } => ClientMsg::Send { room: room.clone(), body: body.clone(), id },
            Request::Direct { to, body } => ClientMsg::Direct { to: to.clone(), body: body.clone(), id },
            Request::Broadcast { body } => ClientMsg::Broadcast { body: body.clone(), id },
        }
    }
}

/// Delay before reconnect attempt `attempt` (0-based): `start · 2^attempt`,
/// at most `cap`, times a jitter factor in [0.5, 1.5) taken from `unit` in
/// [0, 1), and again at most `cap`.
pub fn backoff_delay(start: Duration, cap: Duration, attempt: u32, unit: f64) -> Duration {
    let base = start.saturating_mul(1u32 << attempt.min(20)).min(cap);
    base.mul_f64(0.5 + unit.clamp(0.0, 1.0)).min(cap)
}

/// The order in which to try URLs: every distinct URL of `nodes` and
/// `seeds`, shuffled, with `failed` (the one that just failed) last.
pub fn url_order(nodes: &[String], seeds: &[String], failed: Option<&str>, rng: &mut impl rand::Rng) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for url in nodes.iter().chain(seeds) {
        if !urls.contains(url) {
            urls.push(url.clone());
        }
    }
    urls.shuffle(rng);
    if let Some(pos) = failed.and_then(|f| urls.iter().position(|u| u == f)) {
        let url = urls.remove(pos);
        urls.push(url);
    }
    urls
}

/// A bounded set of recently seen (from, id) pairs; the oldest is forgotten
/// first.
#[derive(Debug)]
pub struct RecentIds {
    cap: usize,
    set: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl RecentIds {
    pub fn new(cap: usize) -> RecentIds {
        RecentIds { cap: cap.max(1), set: HashSet::new(), order: VecDeque::new() }
    }

    /// Remembers (from, id); `false` when it was already remembered.
    pub fn insert(&mut self, from: &str, id: &str) -> bool {
        let key = (from.to_owned(), id.to_owned());
        if self.set.contains(&key) {
            return false;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(key.clone());
        self.order.push_back(key);
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A room the client wants to be in.
#[derive(Clone, Debug, Default)]
struct Room {
    /// The last delivered seq (or the `joined` seq of the first join).
    last_seq: Option<u64>,
    /// `joined` arrived on the current connection.
    joined: bool,
}

#[derive(Clone, Debug)]
struct Outstanding {
    id: String,
    req: Request,
    /// Transient refusals so far.
    retries: u32,
}

/// Why the connection should be replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Move {
    /// The node asked us to go to this URL (`reconnect` frame).
    To(String),
    /// The node cannot serve us right now (`unavailable`, a lost room).
    Elsewhere,
}

/// What [`Core`] wants done after a frame.
#[derive(Debug, Default)]
pub struct Reaction {
    /// Frames to send on the current connection, in order.
    pub send: Vec<ClientMsg>,
    /// Events for the caller, in order.
    pub events: Vec<ResilientEvent>,
    /// Replace the connection.
    pub moving: Option<Move>,
}

/// The resumable state, without I/O: fed the frames of the current
/// connection, it answers with frames to send and events to report.
#[derive(Debug)]
pub struct Core {
    user: String,
    session: Option<String>,
    nodes: Vec<String>,
    rooms: BTreeMap<String, Room>,
    /// Unanswered requests, oldest first.
    pending: VecDeque<Outstanding>,
    recent: RecentIds,
    id_prefix: String,
    next_id: u64,
    max_retries: u32,
    /// After a `welcome`: some room's `joined` is still missing, so the
    /// pending requests wait (a `send` needs its room joined).
    resuming: bool,
    /// The room [`ResilientClient::join`] waits for, and its refusal.
    pub(super) awaiting_join: Option<String>,
    pub(super) join_error: Option<(ErrorCode, String)>,
    /// Requests sent again on a new connection, in total.
    resent: u64,
}

impl Core {
    pub fn new(user: &str, id_prefix: &str, max_retries: u32, dedupe_window: usize) -> Core {
        Core {
            user: user.to_owned(),
            session: None,
            nodes: Vec::new(),
            rooms: BTreeMap::new(),
            pending: VecDeque::new(),
            recent: RecentIds::new(dedupe_window),
            id_prefix: id_prefix.to_owned(),
            next_id: 0,
            max_retries,
            resuming: false,
            awaiting_join: None,
            join_error: None,
            resent: 0,
        }
    }

    /// The `hello` for a new connection: with the session once there is one,
    /// and asking for batched frames (the connection reads them).
    pub fn hello(&self) -> ClientMsg {
        ClientMsg::Hello { user: self.user.clone(), token: None, session: self.session.clone(), batch: true }
    }

    /// A connection said `welcome`: keeps the first session and the latest
    /// nodes, and returns what to send: a `join` (with `since` when a seq is
    /// known) for every room, or, with no rooms, the pending requests.
    pub fn on_welcome(&mut self, session: &str, nodes: &[String]) -> Vec<ClientMsg> {
        if self.session.is_none() {
            self.session = Some(session.to_owned());
        }
        self.nodes = nodes.to_vec();
        for room in self.rooms.values_mut() {
            room.joined = false;
        }
        self.resuming = !self.rooms.is_empty();
        if self.resuming {
            self.rooms.iter().map(|(name, r)| ClientMsg::Join { room: name.clone(), since: r.last_seq }).collect()
        } else {
            self.resend()
        }
    }

    /// Every pending request as a frame, oldest first, with its own id.
    fn resend(&mut self) -> Vec<ClientMsg> {
        self.resent += self.pending.len() as u64;
        self.pending.iter().map(|p| p.req.to_msg(&p.id)).collect()
    }

    /// Requests sent again on a new connection, in total.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// Whether requests may go out now (all rooms joined on this connection).
    pub fn live(&self) -> bool {
        !self.resuming
    }

    /// Adds `room` to the wanted rooms; returns its `join` frame.
    pub fn want_room(&mut self, room: &str) -> ClientMsg {
        let r = self.rooms.entry(room.to_owned()).or_default();
        r.joined = false;
        ClientMsg::Join { room: room.to_owned(), since: r.last_seq }
    }

    /// Forgets `room`; returns its `leave` frame, then the pending requests
    /// when it was the last room a resume waited for.
    pub fn drop_room(&mut self, room: &str) -> Vec<ClientMsg> {
        self.rooms.remove(room);
        let mut out = vec![ClientMsg::Leave { room: room.to_owned() }];
        out.extend(self.finish_resume_check());
        out
    }

    /// Whether `room` is one of the rooms the client wants to be in.
    pub fn wants(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Records a new request; returns its id and the frame to send.
    pub fn request(&mut self, req: Request) -> (String, ClientMsg) {
        self.next_id += 1;
        let id = format!("{}-{}", self.id_prefix, self.next_id);
        let msg = req.to_msg(&id);
        self.pending.push_back(Outstanding { id: id.clone(), req, retries: 0 });
        (id, msg)
    }

    /// A fresh id for a request refused before it was sent.
    pub fn unsent_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.id_prefix, self.next_id)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The last delivered seq of `room`, if it is joined.
    pub fn last_seq(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).and_then(|r| r.last_seq)
    }

    fn finish_resume_check(&mut self) -> Vec<ClientMsg> {
        if self.resuming && self.rooms.values().all(|r| r.joined) {
            self.resuming = false;
            return self.resend();
        }
        Vec::new()
    }

    /// One frame of the current connection.
    pub fn on_msg(&mut self, msg: ServerMsg) -> Reaction {
        let mut out = Reaction::default();
        match msg {
            ServerMsg::Joined { room, seq, truncated } => self.on_joined(&room, seq, truncated, &mut out),
            ServerMsg::Message { kind: Audience::Room, room: Some(ref room), seq: Some(seq), .. } => {
                let Some(r) = self.rooms.get_mut(room) else { return out }; // left meanwhile
                match r.last_seq {
                    Some(last) if seq <= last => return out,
                    Some(last) if seq > last + 1 => {
                        out.events.push(ResilientEvent::Truncated { room: room.clone(), from_seq: seq });
                    }
                    _ => {}
                }
                r.last_seq = Some(seq);
                out.events.push(ResilientEvent::Message(msg));
            }
            ServerMsg::Message { ref from, ref id, .. } => {
                if self.recent.insert(from, id) {
                    out.events.push(ResilientEvent::Message(msg));
                }
            }
            ServerMsg::Ack { id, room, seq } => {
                if let Some(pos) = self.pending.iter().position(|p| p.id == id) {
                    self.pending.remove(pos);
                    out.events.push(ResilientEvent::Acked { id, room, seq });
                }
            }
            ServerMsg::Error { code, message, id: Some(id) } => self.on_refused(id, code, message, &mut out),
            ServerMsg::Error { code, message, id: None } => {
                if self.resuming {
                    // A join of the resume failed; which one the frame does not say.
                    out.moving = Some(Move::Elsewhere);
                } else if let Some(room) = self.awaiting_join.take() {
                    self.rooms.remove(&room);
                    self.join_error = Some((code, message));
                } else if code == ErrorCode::Unavailable {
                    // The node dropped a room of ours (its owner did not answer).
                    out.moving = Some(Move::Elsewhere);
                }
            }
            ServerMsg::Reconnect { url, .. } => out.moving = Some(Move::To(url)),
            ServerMsg::Welcome { .. } | ServerMsg::Left { .. } | ServerMsg::Pong { .. } => {}
        }
        out
    }

    fn on_joined(&mut self, room: &str, seq: u64, truncated: bool, out: &mut Reaction) {
        let Some(r) = self.rooms.get_mut(room) else { return }; // left while joining
        r.joined = true;
        match r.last_seq {
            None => r.last_seq = Some(seq),
            // Seqs never restart; a node behind the one we came from answers
            // a lower seq, and what we already have is dropped as it comes.
            Some(last) if truncated => {
                out.events.push(ResilientEvent::Truncated { room: room.to_owned(), from_seq: last + 1 });
            }
            Some(_) => {}
        }
        if self.awaiting_join.as_deref() == Some(room) {
            self.awaiting_join = None;
        }
        out.send.extend(self.finish_resume_check());
    }

    fn on_refused(&mut self, id: String, code: ErrorCode, message: String, out: &mut Reaction) {
        let Some(pos) = self.pending.iter().position(|p| p.id == id) else { return };
        let p = &mut self.pending[pos];
        let transient = code == ErrorCode::Unavailable
            || (code == ErrorCode::NotJoined
                && matches!(&p.req, Request::Send { room, .. } if self.rooms.contains_key(room)));
        if transient && p.retries < self.max_retries {
            p.retries += 1;
            out.moving = Some(Move::Elsewhere);
        } else {
            self.pending.remove(pos);
            out.events.push(ResilientEvent::Refused { id, code, message });
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    fn core() -> Core {
        Core::new("ann", "p", 3, 4)
    }

    fn room_msg(room: &str, seq: u64, id: &str) -> ServerMsg {
        ServerMsg::Message {
            kind: Audience::Room,
            room: Some(room.into()),
            seq: Some(seq),
            to: None,
            from: "bob".into(),
            body: "hi".into(),
            id: id.into(),
            ts: 0,
        }
    }

    fn direct_msg(from: &str, id: &str) -> ServerMsg {
        ServerMsg::Message {
            kind: Audience::Direct,
            room: None,
            seq: None,
            to: Some("ann".into()),
            from: from.into(),
            body: "psst".into(),
            id: id.into(),
            ts: 0,
        }
    }

    fn joined(room: &str, seq: u64) -> ServerMsg {
        serde_json::from_str(&format!(r#"{{"type":"joined","room":"{room}","seq":{seq}}}"#)).unwrap()
    }

    fn delivered_seqs(events: &[ResilientEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                ResilientEvent::Message(ServerMsg::Message { seq, .. }) => *seq,
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_from_100ms_to_a_5s_cap_with_half_jitter() {
        let (start, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        let mid: Vec<u128> = (0..8).map(|a| backoff_delay(start, cap, a, 0.5).as_millis()).collect();
        assert_eq!(mid, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff_delay(start, cap, 0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff_delay(start, cap, 2, 1.0), Duration::from_millis(600));
        // Jitter never goes past the cap, and huge attempt numbers do not overflow.
        assert_eq!(backoff_delay(start, cap, 5, 1.0), Duration::from_millis(4800));
        assert_eq!(backoff_delay(start, cap, 6, 1.0), cap);
        assert_eq!(backoff_delay(start, cap, u32::MAX, 0.0), Duration::from_millis(2500));
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..40 {
            let d = backoff_delay(start, cap, attempt, rng.random());
            let base = start.saturating_mul(1 << attempt.min(20)).min(cap);
            assert!(d >= base / 2 && d <= base.mul_f64(1.5).min(cap), "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn url_order_tries_the_failed_url_last_and_lists_each_once() {
        let nodes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let seeds: Vec<String> = ["c", "d"].map(String::from).to_vec();
        let mut rng = StdRng::seed_from_u64(1);
        let mut firsts = HashSet::new();
        for _ in 0..50 {
            let order = url_order(&nodes, &seeds, Some("b"), &mut rng);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, ["a", "b", "c", "d"]);
            assert_eq!(order.last().map(String::as_str), Some("b"));
            firsts.insert(order[0].clone());
        }
        assert_eq!(firsts.len(), 3, "the others are shuffled: {firsts:?}");
        assert_eq!(url_order(&[], &["s".to_owned()], Some("s"), &mut rng), ["s"]);
    }

    #[test]
    fn recent_ids_are_bounded_and_forget_the_oldest() {
        let mut recent = RecentIds::new(2);
        assert!(recent.insert("bob", "1"));
        assert!(!recent.insert("bob", "1"));
        assert!(recent.insert("eve", "1"), "the sender is part of the key");
        assert!(recent.insert("bob", "2"));
        assert_eq!(recent.len(), 2);
        assert!(recent.insert("bob", "1"), "the oldest was forgotten");
    }

    #[test]
    fn room_messages_are_delivered_once_in_seq_order() {
        let mut c = core();
        c.want_room("r");
        assert!(c.on_welcome("s1", &[]).is_empty() || !c.live());
        c.on_msg(joined("r", 3));
        let mut events = Vec::new();
        for seq in [4, 5, 5, 3, 6, 4] {
            events.extend(c.on_msg(room_msg("r", seq, "x")).events);
        }
        assert_eq!(delivered_seqs(&events), [4, 5, 6]);
        assert_eq!(c.last_seq("r"), Some(6));
        assert!(c.on_msg(room_msg("other", 1, "x")).events.is_empty(), "rooms we are not in are dropped");
    }

    #[test]
    fn a_gap_is_reported_before_the_message_after_it() {
        let mut c = core();
        c.want_room("r");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 2));
        let events = c.on_msg(room_msg("r", 7, "x")).events;
        assert_eq!(events[0], ResilientEvent::Truncated { room: "r".into(), from_seq: 7 });
        assert_eq!(delivered_seqs(&events), [7]);
    }

    #[test]
    fn direct_messages_are_deduplicated_by_sender_and_id() {
        let mut c = core();
        c.on_welcome("s1", &[]);
        let mut n = 0;
        for (from, id) in [("bob", "1"), ("bob", "1"), ("eve", "1"), ("bob", "2"), ("eve", "1")] {
            n += c.on_msg(direct_msg(from, id)).events.len();
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn resume_keeps_the_session_rejoins_since_the_last_seq_then_resends_with_the_same_ids() {
        let mut c = core();
        assert_eq!(c.hello(), ClientMsg::Hello { user: "ann".into(), token: None, session: None, batch: true });
        c.on_welcome("s1", &["ws://a".into()]);
        c.want_room("r");
        c.want_room("q");
        c.on_msg(joined("r", 0));
        c.on_msg(joined("q", 10));
        c.on_msg(room_msg("r", 1, "x"));
        let (id1, _) = c.request(Request::Send { room: "r".into(), body: "one".into() });
        let (id2, _) = c.request(Request::Broadcast { body: "two".into() });
        assert_ne!(id1, id2);
        let acked = c.on_msg(ServerMsg::Ack { id: id1.clone(), room: Some("r".into()), seq: Some(2) }).events;
        assert_eq!(acked, [ResilientEvent::Acked { id: id1, room: Some("r".into()), seq: Some(2) }]);

        // A new connection: the same session, joins with `since`, and the
        // unacked broadcast only once every room is joined.
        assert_eq!(
            c.hello(),
            ClientMsg::Hello { user: "ann".into(), token: None, session: Some("s1".into()), batch: true }
        );
        let joins = c.on_welcome("s2", &["ws://b".into()]);
        assert_eq!(c.session(), Some("s1"));
        assert_eq!(c.nodes(), ["ws://b"]);
        assert_eq!(
            joins,
            [
                ClientMsg::Join { room: "q".into(), since: Some(10) },
                ClientMsg::Join { room: "r".into(), since: Some(1) },
            ]
        );
        assert!(!c.live());
        assert!(c.on_msg(joined("q", 10)).send.is_empty());
        let resent = c.on_msg(joined("r", 2)).send;
        assert_eq!(resent, [ClientMsg::Broadcast { body: "two".into(), id: id2.clone() }]);
        assert_eq!(c.resent(), 1);
        assert!(c.live());
        // The replay and a repeat of an ack.
        let events: Vec<_> =
            [room_msg("r", 1, "x"), room_msg("r", 2, "y")].into_iter().flat_map(|m| c.on_msg(m).events).collect();
        assert_eq!(delivered_seqs(&events), [2]);
        assert_eq!(c.on_msg(ServerMsg::Ack { id: id2.clone(), room: None, seq: None }).events.len(), 1);
        assert!(c.on_msg(ServerMsg::Ack { id: id2, room: None, seq: None }).events.is_empty());
        assert_eq!(c.pending_len(), 0);
    }

    #[test]
    fn a_node_behind_answers_a_lower_seq_and_nothing_is_repeated() {
        let mut c = core();
        c.want_room("r");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 0));
        c.on_msg(room_msg("r", 1, "a"));
        c.on_msg(room_msg("r", 2, "b"));
        c.on_welcome("s1", &[]);
        assert!(c.on_msg(joined("r", 1)).events.is_empty());
        assert!(delivered_seqs(&c.on_msg(room_msg("r", 2, "b")).events).is_empty());
        assert_eq!(delivered_seqs(&c.on_msg(room_msg("r", 3, "c")).events), [3]);
    }

    #[test]
    fn a_truncated_replay_is_reported() {
        let mut c = core();
        c.want_room("r");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 0));
        c.on_msg(room_msg("r", 1, "a"));
        c.on_welcome("s1", &[]);
        let events = c.on_msg(ServerMsg::Joined { room: "r".into(), seq: 90, truncated: true }).events;
        assert_eq!(events, [ResilientEvent::Truncated { room: "r".into(), from_seq: 2 }]);
    }

    #[test]
    fn transient_refusals_move_the_client_a_bounded_number_of_times() {
        let mut c = core();
        c.want_room("r");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 0));
        let (id, _) = c.request(Request::Send { room: "r".into(), body: "x".into() });
        let refusal = |id: &str| ServerMsg::Error {
            code: ErrorCode::Unavailable,
            message: "owner did not answer".into(),
            id: Some(id.into()),
        };
        for _ in 0..3 {
            let r = c.on_msg(refusal(&id));
            assert_eq!(r.moving, Some(Move::Elsewhere));
            assert!(r.events.is_empty());
            assert_eq!(c.pending_len(), 1);
        }
        let r = c.on_msg(refusal(&id));
        assert_eq!(r.moving, None);
        assert!(matches!(&r.events[..], [ResilientEvent::Refused { code: ErrorCode::Unavailable, .. }]));
        assert_eq!(c.pending_len(), 0);
        // A plain refusal is final at once.
        let (id, _) = c.request(Request::Direct { to: "bob".into(), body: "x".into() });
        let r = c.on_msg(ServerMsg::Error { code: ErrorCode::UserOffline, message: "m".into(), id: Some(id) });
        assert!(matches!(&r.events[..], [ResilientEvent::Refused { code: ErrorCode::UserOffline, .. }]));
    }

    #[test]
    fn a_reconnect_frame_names_where_to_go() {
        let mut c = core();
        c.on_welcome("s1", &[]);
        let msg: ServerMsg =
            serde_json::from_str(r#"{"type":"reconnect","url":"ws://b/ws","reason":"rebalancing"}"#).unwrap();
        assert_eq!(c.on_msg(msg).moving, Some(Move::To("ws://b/ws".into())));
    }

    #[test]
    fn leaving_during_a_resume_does_not_hold_requests_back() {
        let mut c = core();
        c.want_room("r");
        c.want_room("q");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 0));
        c.request(Request::Broadcast { body: "x".into() });
        assert!(!c.live());
        let frames = c.drop_room("q");
        assert!(c.live());
        assert_eq!(frames.len(), 2, "the leave, then the held-back broadcast: {frames:?}");
    }
}
