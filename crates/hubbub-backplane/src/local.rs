//! Local side of [`Core`]: this node's client connections, its room
//! subscriptions (one per room, however many local subscribers), its users'
//! registrations with their owners, and the requests waiting for answers.
//!
//! Deliveries for a room are handed to local subscribers strictly in seq
//! order: a delivery ahead of `last_seq + 1` waits in the room's reorder
//! buffer (deliveries from an old and a new owner travel on different
//! links), a delivery at or below `last_seq` is a duplicate and dropped.

use std::collections::BTreeSet;
use std::sync::Arc;

use hubbub_proto::chat::{ChatFrame, Entry};
use hubbub_proto::client::{CloseCode, ErrorCode, ServerMsg};
use hubbub_ring::{room_key, user_key};
use tracing::{debug, warn};

use crate::core::{
    Catchup, ChatCounters, Conn, ConnId, ConnSink, Core, IdMap, LocalRoom, LocalUser, Pending, PendingKind, REFRESH_MS,
    REORDER_LIMIT, RETRY_MS, Run, SubState, Text, text,
};

fn error(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> Text {
    text(&ServerMsg::Error { code, message: message.into(), id })
}

/// [`Core::push`] on the fields it uses, so a caller can hold a borrow of
/// another field (a room's subscribers) meanwhile.
fn push_to(conns: &mut IdMap<Conn>, counters: &mut ChatCounters, conn: ConnId, frame: Text) {
    push_with(conns, counters, conn, 1, |sink| sink.push(frame));
}

/// [`push_to`] for a run of frames in one step.
fn push_run_to(conns: &mut IdMap<Conn>, counters: &mut ChatCounters, conn: ConnId, run: &Run) {
    push_with(conns, counters, conn, run.texts().len(), |sink| sink.push_run(run));
}

/// Hands `count` frames to `conn`'s sink through `push` unless it is
/// closing; a refusal closes it as a slow consumer.
fn push_with(
    conns: &mut IdMap<Conn>,
    counters: &mut ChatCounters,
    conn: ConnId,
    count: usize,
    push: impl FnOnce(&dyn ConnSink) -> bool,
) {
    let Some(c) = conns.get_mut(&conn) else { return };
    if c.closing {
        return;
    }
    counters.delivered_frames += count as u64;
    if !push(c.sink.as_ref()) {
        c.closing = true;
        counters.slow_consumers_closed += 1;
        debug!(conn, user = %c.user, "closing a slow consumer");
    }
}

impl Core {
    /// Queues `frame` for `conn`; a full queue closes it as a slow consumer.
    pub(crate) fn push(&mut self, conn: ConnId, frame: Text) {
        push_to(&mut self.conns, &mut self.counters, conn, frame);
    }

    /// A connection said `hello` as `user`.
    pub fn connect(&mut self, conn: ConnId, user: &str, sink: Arc<dyn ConnSink>, now: u64) {
        let c = crate::core::Conn {
            user: user.to_owned(),
            rooms: Default::default(),
            sink,
            in_flight: 0,
            closing: false,
            asked_to_move_ms: None,
            connected_ms: now,
        };
        self.conns.insert(conn, c);
        let owner = self.owner_of(&user_key(user));
        let entry =
            self.local_users.entry(user.to_owned()).or_insert_with(|| LocalUser { conns: BTreeSet::new(), owner });
        let first = entry.conns.is_empty();
        entry.conns.insert(conn);
        if first {
            entry.owner = owner;
            self.route(owner, ChatFrame::UserOnline { user: user.to_owned(), node: self.me });
        }
        self.run_loopback(now);
    }

    /// A connection ended: its subscriptions and registration go with it.
    pub fn disconnect(&mut self, conn: ConnId, now: u64) {
        let Some(c) = self.conns.remove(&conn) else { return };
        for room in &c.rooms {
            self.drop_subscriber(room, conn);
        }
        if let Some(u) = self.local_users.get_mut(&c.user) {
            u.conns.remove(&conn);
            if u.conns.is_empty() {
                let owner = u.owner;
                self.local_users.remove(&c.user);
                self.route(owner, ChatFrame::UserOffline { user: c.user.clone(), node: self.me });
            }
        }
        self.pending.retain(|_, p| p.conn != conn);
        self.run_loopback(now);
    }

    /// Closes every connection with `code` (a node stopping); each session
    /// ends and disconnects itself.
    pub fn close_all(&mut self, code: CloseCode) {
        for c in self.conns.values_mut() {
            c.closing = true;
            c.sink.close(code);
        }
    }

    fn drop_subscriber(&mut self, room: &str, conn: ConnId) {
        let Some(local) = self.local_rooms.get_mut(room) else { return };
        local.subscribers.remove(&conn);
        if let SubState::Pending { waiters, .. } = &mut local.state {
            waiters.retain(|(w, _)| *w != conn);
        }
        self.drop_room_if_unused(room);
    }

    /// A room with no subscriber, waiter or catch-up left is unsubscribed.
    fn drop_room_if_unused(&mut self, room: &str) {
        let Some(local) = self.local_rooms.get(room) else { return };
        let waiting = matches!(&local.state, SubState::Pending { waiters, .. } if !waiters.is_empty());
        if local.subscribers.is_empty() && local.catching_up == 0 && !waiting {
            let owner = local.owner;
            self.local_rooms.remove(room);
            self.route(owner, ChatFrame::Unsubscribe { room: room.to_owned(), node: self.me, hops: 0 });
        }
    }

    /// `join {room, since}`.
    pub fn join(&mut self, conn: ConnId, room: &str, since: Option<u64>, now: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !c.rooms.contains(room) && c.rooms.len() >= self.limits.max_rooms {
            let msg = format!("a connection may join at most {} rooms", self.limits.max_rooms);
            self.push(conn, error(ErrorCode::TooManyRooms, msg, None));
            return;
        }
        c.rooms.insert(room.to_owned());
        match self.local_rooms.get_mut(room) {
            Some(local) => match &mut local.state {
                SubState::Active => {
                    let seq = local.last_seq;
                    self.admit_subscriber(conn, room, seq, since, now);
                }
                SubState::Pending { waiters, .. } => {
                    waiters.retain(|(w, _)| *w != conn);
                    waiters.push((conn, since));
                }
            },
            None => {
                let owner = self.owner_of(&room_key(room));
                self.local_rooms.insert(
                    room.to_owned(),
                    LocalRoom {
                        subscribers: BTreeSet::new(),
                        last_seq: 0,
                        state: SubState::Pending { waiters: vec![(conn, since)], since_ms: now, retried_ms: now },
                        reorder: Default::default(),
                        gap_since_ms: None,
                        owner,
                        catching_up: 0,
                        refreshed_ms: now,
                    },
                );
                let frame = ChatFrame::Subscribe { room: room.to_owned(), node: self.me, hops: 0, after: None };
                self.route(owner, frame);
            }
        }
        self.run_loopback(now);
    }

    /// Makes `conn` a live subscriber of an active room whose last seq is
    /// `seq`, after replaying what followed `since` when it asked.
    fn admit_subscriber(&mut self, conn: ConnId, room: &str, seq: u64, since: Option<u64>, now: u64) {
        let Some(local) = self.local_rooms.get_mut(room) else { return };
        match since {
            Some(since) if since < seq => {
                local.catching_up += 1;
                let owner = self.owner_of(&room_key(room));
                let req = self.next_req;
                self.next_req += 1;
                let catchup = Catchup { conn, room: room.to_owned(), since, since_ms: now, retried_ms: now };
                self.catchups.insert(req, catchup);
                self.route(owner, ChatFrame::History { req, room: room.to_owned(), since, node: self.me, hops: 0 });
            }
            _ => {
                local.subscribers.insert(conn);
                self.push(conn, text(&ServerMsg::Joined { room: room.to_owned(), seq, truncated: false }));
            }
        }
    }

    pub(crate) fn on_history_reply(&mut self, req: u64, room: &str, entries: Vec<Entry>, truncated: bool, _now: u64) {
        if let Some(catchup) = self.catchups.remove(&req)
            && catchup.room == room
        {
            self.finish_catchup(catchup, entries, truncated);
        }
    }

    /// Answers a resuming connection: `joined`, the replay, then live.
    fn finish_catchup(&mut self, catchup: Catchup, entries: Vec<Entry>, truncated: bool) {
        let Catchup { conn, room, since, since_ms, .. } = catchup;
        let Some(local) = self.local_rooms.get_mut(&room) else {
            // The room's subscription ended meanwhile: join it again.
            if self.conns.get(&conn).is_some_and(|c| c.rooms.contains(&room)) {
                self.join(conn, &room, Some(since), since_ms);
            }
            return;
        };
        local.catching_up = local.catching_up.saturating_sub(1);
        let still_joined = self.conns.get(&conn).is_some_and(|c| c.rooms.contains(&room));
        if !still_joined {
            self.drop_room_if_unused(&room);
            return;
        }
        let last = local.last_seq;
        local.subscribers.insert(conn);
        let replay: Vec<Entry> = entries.into_iter().filter(|e| e.seq > since && e.seq <= last).collect();
        let truncated = truncated || (since < last && replay.first().is_none_or(|e| e.seq != since + 1));
        self.push(conn, text(&ServerMsg::Joined { room: room.clone(), seq: last, truncated }));
        self.counters.replayed_messages += replay.len() as u64;
        for e in replay {
            let msg = hubbub_proto::client::room_message_json(&room, e.seq, e.from(), e.body(), e.id(), e.ts);
            self.push(conn, Text::from(msg));
        }
    }

    /// `leave {room}`.
    pub fn leave(&mut self, conn: ConnId, room: &str, now: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !c.rooms.remove(room) {
            self.push(conn, error(ErrorCode::NotJoined, format!("not in room {room}"), None));
            return;
        }
        self.drop_subscriber(room, conn);
        self.push(conn, text(&ServerMsg::Left { room: room.to_owned() }));
        self.run_loopback(now);
    }

    /// Counts a new request of `conn`; closes it when it has too many.
    fn admit(&mut self, conn: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        if c.closing {
            return false;
        }
        if c.in_flight >= self.limits.max_in_flight {
            c.closing = true;
            c.sink.close(CloseCode::Flood);
            self.counters.floods_closed += 1;
            return false;
        }
        c.in_flight += 1;
        true
    }

    fn new_request(&mut self, conn: ConnId, id: &str, kind: PendingKind, now: u64) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        self.pending.insert(req, Pending { conn, id: id.to_owned(), kind, since_ms: now });
        req
    }

    fn finish_request(&mut self, req: u64) -> Option<Pending> {
        let p = self.pending.remove(&req)?;
        if let Some(c) = self.conns.get_mut(&p.conn) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        Some(p)
    }

    /// `send {room, body, id}`.
    pub fn send(&mut self, conn: ConnId, room: &str, body: String, id: &str, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        if !c.rooms.contains(room) {
            let msg = format!("join room {room} before sending to it");
            self.push(conn, error(ErrorCode::NotJoined, msg, Some(id.to_owned())));
            return;
        }
        let from = c.user.clone();
        if !self.quorum {
            self.counters.refused_without_quorum += 1;
            let msg = "this node does not see a majority of the cluster; reconnect to another node";
            self.push(conn, error(ErrorCode::Unavailable, msg, Some(id.to_owned())));
            return;
        }
        if !self.admit(conn) {
            return;
        }
        let req = self.new_request(conn, id, PendingKind::Room, now);
        let frame =
            ChatFrame::Publish { req, origin: self.me, room: room.to_owned(), from, id: id.to_owned(), body, hops: 0 };
        self.on_frame(self.me, frame, now);
    }

    /// `direct {to, body, id}`.
    pub fn direct(&mut self, conn: ConnId, to: &str, body: String, id: &str, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        let from = c.user.clone();
        if !self.admit(conn) {
            return;
        }
        let req = self.new_request(conn, id, PendingKind::Direct, now);
        let frame = ChatFrame::Direct {
            req,
            origin: self.me,
            to: to.to_owned(),
            from,
            id: id.to_owned(),
            body,
            ts: now,
            hops: 0,
        };
        self.on_frame(self.me, frame, now);
    }

    /// `broadcast {body, id}`: to every node, each delivering to all its
    /// connections; acknowledged once handed to every link.
    pub fn broadcast(&mut self, conn: ConnId, body: String, id: &str, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        let from = c.user.clone();
        let frame = ChatFrame::Broadcast { from, id: id.to_owned(), body, ts: now };
        let bytes = crate::core::encode(&frame);
        let peers: Vec<_> = self.ring.members().iter().copied().filter(|n| *n != self.me).collect();
        for peer in peers {
            self.peers.send(peer, bytes.clone());
        }
        self.on_frame(self.me, frame, now);
        self.push(conn, text(&ServerMsg::Ack { id: id.to_owned(), room: None, seq: None }));
    }

    pub(crate) fn on_published(&mut self, req: u64, room: &str, seq: u64) {
        let Some(p) = self.finish_request(req) else { return };
        self.push(p.conn, text(&ServerMsg::Ack { id: p.id, room: Some(room.to_owned()), seq: Some(seq) }));
    }

    pub(crate) fn on_direct_done(&mut self, req: u64, nodes: u32) {
        let Some(p) = self.finish_request(req) else { return };
        let frame = if nodes == 0 {
            error(ErrorCode::UserOffline, "the user has no connection", Some(p.id))
        } else {
            text(&ServerMsg::Ack { id: p.id, room: None, seq: None })
        };
        self.push(p.conn, frame);
    }

    pub(crate) fn on_failed(&mut self, req: u64, reason: &str) {
        let Some(p) = self.finish_request(req) else { return };
        self.push(p.conn, error(ErrorCode::Unavailable, reason, Some(p.id)));
    }

    pub(crate) fn on_subscribed(&mut self, from: hubbub_ring::NodeId, room: String, seq: u64, now: u64) {
        let Some(local) = self.local_rooms.get_mut(&room) else { return };
        local.owner = from;
        let SubState::Pending { waiters, .. } = std::mem::replace(&mut local.state, SubState::Active) else {
            return; // a re-subscription: the stream continues as it is
        };
        local.last_seq = seq;
        for (conn, since) in waiters {
            if self.conns.get(&conn).is_some_and(|c| c.rooms.contains(&room)) {
                self.admit_subscriber(conn, &room, seq, since, now);
            }
        }
        self.drain_reorder(&room, now);
        self.drop_room_if_unused(&room);
    }

    /// A run of deliveries, seqs `first`, `first + 1`, …: when it continues
    /// the room's sequence with nothing waiting (the usual case), each
    /// subscriber gets it in one push; otherwise one at a time through
    /// [`Core::on_deliver`].
    pub(crate) fn on_deliver_run(&mut self, room: &str, first: u64, texts: Vec<String>, now: u64) {
        let frames: Vec<Text> = texts.into_iter().map(Text::from).collect();
        let Some(local) = self.local_rooms.get_mut(room) else { return };
        if frames.len() > 1
            && matches!(local.state, SubState::Active)
            && first == local.last_seq + 1
            && local.reorder.is_empty()
        {
            local.last_seq = first + frames.len() as u64 - 1;
            local.gap_since_ms = None;
            let run = Run::new(frames);
            for conn in &local.subscribers {
                push_run_to(&mut self.conns, &mut self.counters, *conn, &run);
            }
            return;
        }
        for (seq, frame) in (first..).zip(frames) {
            self.on_deliver(room, seq, frame, now);
        }
    }

    pub(crate) fn on_deliver(&mut self, room: &str, seq: u64, frame: Text, now: u64) {
        let Some(local) = self.local_rooms.get_mut(room) else { return };
        if matches!(local.state, SubState::Active) && seq == local.last_seq + 1 && local.reorder.is_empty() {
            // The usual case: the next seq, nothing waiting before it.
            local.last_seq = seq;
            local.gap_since_ms = None;
            for conn in &local.subscribers {
                push_to(&mut self.conns, &mut self.counters, *conn, frame.clone());
            }
            return;
        }
        if seq <= local.last_seq && matches!(local.state, SubState::Active) {
            self.counters.duplicates_dropped += 1;
            return;
        }
        if local.reorder.contains_key(&seq) {
            self.counters.duplicates_dropped += 1;
            return;
        }
        if local.reorder.len() >= REORDER_LIMIT {
            warn!(room, "reorder buffer full; skipping the gap");
            local.gap_since_ms = Some(0);
        }
        let had_gap = local.gap_since_ms.is_some();
        local.reorder.insert(seq, frame);
        self.drain_reorder(room, now);
        // A gap just opened: ask the owner once for what follows our last
        // seq (a delivery lost with a link or a dead owner); the periodic
        // refresh asks again while it stays open.
        if let Some(local) = self.local_rooms.get(room)
            && !had_gap
            && local.gap_since_ms.is_some()
            && matches!(local.state, SubState::Active)
        {
            let after = Some(local.last_seq);
            let owner = self.owner_of(&room_key(room));
            self.route(owner, ChatFrame::Subscribe { room: room.to_owned(), node: self.me, hops: 0, after });
        }
    }

    /// Delivers buffered frames that continue the room's sequence.
    fn drain_reorder(&mut self, room: &str, now: u64) {
        let Some(local) = self.local_rooms.get_mut(room) else { return };
        if !matches!(local.state, SubState::Active) {
            return;
        }
        while let Some(entry) = local.reorder.first_entry() {
            let seq = *entry.key();
            if seq <= local.last_seq {
                entry.remove();
                self.counters.duplicates_dropped += 1;
            } else if seq == local.last_seq + 1 {
                let frame = entry.remove();
                local.last_seq = seq;
                for conn in &local.subscribers {
                    push_to(&mut self.conns, &mut self.counters, *conn, frame.clone());
                }
            } else {
                break;
            }
        }
        local.gap_since_ms = if local.reorder.is_empty() { None } else { local.gap_since_ms.or(Some(now)) };
    }

    pub(crate) fn deliver_to_user(&mut self, user: &str, frame: Text) {
        let conns: Vec<ConnId> =
            self.local_users.get(user).map(|u| u.conns.iter().copied().collect()).unwrap_or_default();
        for conn in conns {
            self.push(conn, frame.clone());
        }
    }

    pub(crate) fn deliver_to_all(&mut self, frame: Text) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.push(conn, frame.clone());
        }
    }

    /// Subscriptions whose owner changed are sent to the new owner (a no-op
    /// when the room's state moved with its subscriber list).
    pub(crate) fn resubscribe_moved_rooms(&mut self, _now: u64) {
        let moved: Vec<(String, hubbub_ring::NodeId)> = self
            .local_rooms
            .iter()
            .map(|(room, local)| (room, local.owner, self.owner_of(&room_key(room))))
            .filter(|(_, old, new)| old != new)
            .map(|(room, _, new)| (room.clone(), new))
            .collect();
        for (room, owner) in moved {
            let local = self.local_rooms.get_mut(&room).expect("listed above");
            local.owner = owner;
            // The new owner re-sends what followed our last delivered seq
            // (an owner that failed may not have sent it).
            let after = matches!(local.state, SubState::Active).then_some(local.last_seq);
            self.route(owner, ChatFrame::Subscribe { room, node: self.me, hops: 0, after });
        }
    }

    /// Users whose owner changed are registered with the new owner.
    pub(crate) fn reannounce_moved_users(&mut self) {
        let users: Vec<String> = self.local_users.keys().cloned().collect();
        for user in users {
            let owner = self.owner_of(&user_key(&user));
            let entry = self.local_users.get_mut(&user).expect("listed above");
            if entry.owner != owner {
                entry.owner = owner;
                self.route(owner, ChatFrame::UserOnline { user, node: self.me });
            }
        }
    }

    /// Requests unanswered for `request_timeout_ms` fail as unavailable; a
    /// history replay unanswered goes live without it, marked truncated.
    pub(crate) fn expire_requests(&mut self, now: u64) {
        let timeout = self.limits.request_timeout_ms;
        let stale: Vec<u64> = self
            .catchups
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.since_ms) >= timeout)
            .map(|(req, _)| *req)
            .collect();
        for req in stale {
            let catchup = self.catchups.remove(&req).expect("listed above");
            self.finish_catchup(catchup, Vec::new(), true);
        }
        // Unanswered history requests go again to the room's owner now (the
        // one asked may have died).
        let mut resend = Vec::new();
        for (req, c) in self.catchups.iter_mut() {
            if now.saturating_sub(c.retried_ms) >= RETRY_MS {
                c.retried_ms = now;
                resend.push((*req, c.room.clone(), c.since));
            }
        }
        for (req, room, since) in resend {
            let owner = self.owner_of(&room_key(&room));
            self.route(owner, ChatFrame::History { req, room, since, node: self.me, hops: 0 });
        }
        let expired: Vec<u64> =
            self.pending.iter().filter(|(_, p)| now.saturating_sub(p.since_ms) >= timeout).map(|(r, _)| *r).collect();
        for req in expired {
            let Some(p) = self.finish_request(req) else { continue };
            self.counters.requests_timed_out += 1;
            let what = match p.kind {
                PendingKind::Room => "the room's owner",
                PendingKind::Direct => "the user's owner",
            };
            let msg = format!("{what} did not answer within {timeout} ms");
            self.push(p.conn, error(ErrorCode::Unavailable, msg, Some(p.id)));
        }
    }

    /// Pending subscriptions are re-sent every second and fail after the
    /// request timeout.
    pub(crate) fn retry_subscriptions(&mut self, now: u64) {
        let timeout = self.limits.request_timeout_ms;
        let mut resend = Vec::new();
        let mut failed = Vec::new();
        for (room, local) in self.local_rooms.iter_mut() {
            if let SubState::Pending { since_ms, retried_ms, .. } = &mut local.state {
                if now.saturating_sub(*since_ms) >= timeout {
                    failed.push(room.clone());
                } else if now.saturating_sub(*retried_ms) >= RETRY_MS {
                    *retried_ms = now;
                    resend.push(room.clone());
                }
            }
        }
        for room in resend {
            let owner = self.owner_of(&room_key(&room));
            if let Some(local) = self.local_rooms.get_mut(&room) {
                local.owner = owner;
            }
            self.route(owner, ChatFrame::Subscribe { room, node: self.me, hops: 0, after: None });
        }
        // Anti-entropy: active subscriptions are confirmed with the owner
        // every REFRESH_MS, with the last seq delivered here. It re-registers
        // a node an owner lost (an owner taken over from a replica starts
        // with no subscriber nodes; a stale unsubscribe can overtake a
        // subscribe) and brings what a node missed.
        let mut refresh = Vec::new();
        for (room, local) in self.local_rooms.iter_mut() {
            if matches!(local.state, SubState::Active) && now.saturating_sub(local.refreshed_ms) >= REFRESH_MS {
                local.refreshed_ms = now;
                refresh.push((room.clone(), local.last_seq));
            }
        }
        for (room, last) in refresh {
            let owner = self.owner_of(&room_key(&room));
            self.route(owner, ChatFrame::Subscribe { room, node: self.me, hops: 0, after: Some(last) });
        }
        for room in failed {
            let Some(local) = self.local_rooms.remove(&room) else { continue };
            self.counters.requests_timed_out += 1;
            let msg = format!("the owner of room {room} did not answer within {timeout} ms");
            let SubState::Pending { waiters, .. } = local.state else { continue };
            for (conn, _) in waiters {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.rooms.remove(&room);
                }
                self.push(conn, error(ErrorCode::Unavailable, msg.clone(), None));
            }
        }
    }

    /// A gap that stays open for `gap_timeout_ms` is skipped: what follows
    /// it is delivered. (Until history lands, a skipped seq is lost.)
    pub(crate) fn skip_stale_gaps(&mut self, now: u64) {
        let timeout = self.limits.gap_timeout_ms;
        let stale: Vec<String> = self
            .local_rooms
            .iter()
            .filter(|(_, r)| matches!(r.state, SubState::Active))
            .filter(|(_, r)| r.gap_since_ms.is_some_and(|at| now.saturating_sub(at) >= timeout))
            .map(|(room, _)| room.clone())
            .collect();
        for room in stale {
            let local = self.local_rooms.get_mut(&room).expect("listed above");
            if let Some((&first, _)) = local.reorder.first_key_value() {
                warn!(room, from = local.last_seq + 1, to = first - 1, "skipping a gap in a room's seqs");
                self.counters.gaps_skipped += 1;
                local.last_seq = first - 1;
            }
            local.gap_since_ms = None;
            self.drain_reorder(&room, now);
        }
    }
}
