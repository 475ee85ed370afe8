//! Owner side of [`Core`]: sequencing and fan-out of the rooms this node
//! holds, the user directory, and moving rooms between nodes.
//!
//! A room is *held* by at most one node: only the holder sequences it. A
//! room moves only as a whole: the holder removes it and sends its state in
//! one frame (`Handoff`, unasked; or `ClaimReply`, asked), remembering where
//! it went so frames that still arrive are forwarded, never dropped. A node
//! the ring names as owner of a room it does not hold claims it: from where
//! it last sent the room, else from the node that would own it without this
//! node (the previous owner when this node joined), following redirects, and
//! buffers the room's frames until the state arrives. A room is created new
//! only on an explicit `Unknown`: the claimed node never held, sent or
//! claimed it and knows no likelier holder. Exhausted redirects and races
//! wait and retry; they never create a room.

use hubbub_proto::chat::{ChatFrame, ClaimAnswer, Entry, MAX_HOPS, PendingPublish, RoomState};
use hubbub_ring::{NodeId, room_key, user_key};
use tracing::{debug, info, warn};

/// Redirects a claim follows before it waits and starts again.
const CLAIM_HOPS: u8 = 8;

use crate::core::{Claiming, Core, Moved, RETRY_MS, Route, delivers, encode};
use crate::history::Held;

impl Core {
    /// Where requests for `room` go; starts a claim when this node should
    /// hold it and does not yet.
    pub(crate) fn room_route(&mut self, room: &str, now: u64) -> Route {
        if self.held.contains_key(room) {
            return Route::Held;
        }
        if self.claiming.contains_key(room) {
            return Route::Buffer;
        }
        let sent_to = self.sent_to(room);
        let owner = self.owner_of(&room_key(room));
        if owner != self.me {
            // Where this node sent the room is fresher than a ring that may lag.
            return Route::Forward(sent_to.unwrap_or(owner));
        }
        if !self.quorum {
            // A node cut off in a minority neither claims nor creates rooms.
            return Route::Unavailable;
        }
        match sent_to.or_else(|| self.claim_target(room)) {
            Some(target) => {
                self.start_claim(room, target, now, 0);
                Route::Buffer
            }
            // Alone in the ring: nobody else can hold it.
            None => {
                self.create_room(room, now);
                Route::Held
            }
        }
    }

    /// The node this node sent `room`'s state to, if it is still a member.
    fn sent_to(&self, room: &str) -> Option<NodeId> {
        self.moved.get(room).filter(|m| m.sent && m.to != self.me && self.ring.contains(m.to)).map(|m| m.to)
    }

    /// The node that would own `room` if this node did not: the one that
    /// held it before this node joined, or the next in line.
    fn claim_target(&self, room: &str) -> Option<NodeId> {
        self.ring.preference_order(&room_key(room)).into_iter().find(|n| *n != self.me && !self.leaving.contains(n))
    }

    fn start_claim(&mut self, room: &str, target: NodeId, now: u64, hops: u8) {
        debug!(room, target = %target, hops, "claiming room");
        self.counters.claims_sent += 1;
        let buffered = self.claiming.remove(room).map(|c| c.buffered).unwrap_or_default();
        self.claiming.insert(room.to_owned(), Claiming { target, buffered, since_ms: now, hops });
        self.route(target, ChatFrame::Claim { room: room.to_owned() });
    }

    /// Installs `state` for `room`, syncs its replicas and replays what
    /// waited for it.
    fn install(&mut self, room: String, state: RoomState, now: u64) {
        debug!(room, next_seq = state.next_seq, nodes = state.nodes.len(), "installing a room");
        let incoming = Held::from_state(state);
        match self.held.get_mut(&room) {
            // A newer term replaces a stale holder's state (it was failed over
            // while cut off; what it sequenced since was never acknowledged:
            // replicas refuse its term).
            Some(held) if incoming.term > held.term => {
                warn!(room, ours = held.term, theirs = incoming.term, "replacing a stale room state by a newer term");
                *held = incoming;
            }
            Some(held) if incoming.term < held.term => {
                warn!(room, ours = held.term, theirs = incoming.term, "ignoring a stale room state");
            }
            Some(held) => {
                // Two states of one term (rings disagreed when the room was
                // created): keep the larger seq so none repeats.
                warn!(room, ours = held.next_seq, theirs = incoming.next_seq, "merging two states of one room");
                held.next_seq = held.next_seq.max(incoming.next_seq);
                held.released = held.released.max(incoming.released);
                held.nodes.extend(incoming.nodes);
                held.awaiting.extend(incoming.awaiting);
            }
            None => {
                self.held.insert(room.clone(), incoming);
            }
        }
        self.settle_room(room, now);
    }

    /// A room no node could hand over: from this node's replica copy when it
    /// has one (its holder failed), else new.
    fn create_room(&mut self, room: &str, now: u64) {
        let held = match self.replicas.get(room) {
            Some(replica) => {
                self.counters.failovers += 1;
                let held = Held::from_replica(replica);
                info!(room, next_seq = held.next_seq, term = held.term, "taking a room over from its replica");
                held
            }
            None => {
                info!(room, "new room");
                Held::new_room()
            }
        };
        self.held.insert(room.to_owned(), held);
        self.settle_room(room.to_owned(), now);
    }

    /// After a room arrives here: replicas synced, waiting frames replayed.
    fn settle_room(&mut self, room: String, now: u64) {
        self.moved.remove(&room);
        // The holder is not a replica: a copy kept here (from before, or
        // from losing the majority) is superseded by the held state.
        self.replicas.remove(&room);
        self.replicate(&room, Vec::new(), now);
        if let Some(claim) = self.claiming.remove(&room) {
            self.replay(claim.buffered, now);
        }
    }
    fn replay(&mut self, frames: Vec<(NodeId, ChatFrame)>, now: u64) {
        for (from, frame) in frames {
            match frame {
                ChatFrame::Publish { .. } => self.on_publish(from, frame, now),
                _ => self.on_subscription(from, frame, now),
            }
        }
    }

    /// Gives up a held room to `to`.
    pub(crate) fn hand_off(&mut self, room: &str, to: NodeId, now: u64) {
        let Some(held) = self.held.remove(room) else { return };
        debug!(room, to = %to, next_seq = held.next_seq, "handing a room off");
        self.counters.handoffs_sent += 1;
        self.moved.insert(room.to_owned(), Moved { to, sent: true, at: now });
        self.unacked_handoffs.insert(room.to_owned(), to);
        self.route(to, ChatFrame::Handoff { room: room.to_owned(), state: held.state() });
    }

    /// Hands every held room whose owner is now another node to that node.
    pub(crate) fn hand_off_foreign_rooms(&mut self, now: u64) {
        let moves: Vec<(String, NodeId)> = self
            .held
            .keys()
            .map(|room| (room.clone(), self.owner_of(&room_key(room))))
            .filter(|(_, owner)| *owner != self.me)
            .collect();
        if !moves.is_empty() {
            info!(rooms = moves.len(), "handing rooms to their new owners");
        }
        for (room, owner) in moves {
            self.hand_off(&room, owner, now);
        }
    }

    /// Claims for rooms this node no longer owns are abandoned and their
    /// frames forwarded; claims whose target left are restarted.
    pub(crate) fn retarget_claims(&mut self, now: u64) {
        let rooms: Vec<String> = self.claiming.keys().cloned().collect();
        for room in rooms {
            if self.owner_of(&room_key(&room)) != self.me {
                let claim = self.claiming.remove(&room).expect("listed above");
                self.replay(claim.buffered, now);
                continue;
            }
            let target = self.claiming[&room].target;
            if !self.ring.contains(target) || self.leaving.contains(&target) {
                self.restart_claim(&room, now);
            }
        }
    }

    /// Starts a claim's search again from the most likely holder.
    fn restart_claim(&mut self, room: &str, now: u64) {
        match self.sent_to(room).or_else(|| self.claim_target(room)) {
            Some(target) => self.start_claim(room, target, now, 0),
            None => self.create_room(room, now),
        }
    }

    /// Claims unanswered or parked (busy, redirects exhausted) for a while
    /// start again.
    pub(crate) fn retry_claims(&mut self, now: u64) {
        let stale: Vec<String> = self
            .claiming
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.since_ms) >= RETRY_MS)
            .map(|(room, _)| room.clone())
            .collect();
        for room in stale {
            self.restart_claim(&room, now);
        }
    }

    pub(crate) fn on_publish(&mut self, from: NodeId, frame: ChatFrame, now: u64) {
        let ChatFrame::Publish { req, origin, room, from: sender, id, body, hops } = frame else { return };
        match self.room_route(&room, now) {
            Route::Held | Route::Unavailable if !self.quorum => {
                self.counters.refused_without_quorum += 1;
                let reason = format!("the owner of room {room} does not see a majority of the cluster");
                self.route(origin, ChatFrame::Failed { req, reason });
            }
            Route::Unavailable => {}
            Route::Held => {
                let limits = self.limits.history;
                let held = self.held.get_mut(&room).expect("route said held");
                let pending = |seq| PendingPublish { seq, req, origin };
                if let Some(seq) = held.sequenced(&sender, &id) {
                    // A retry of a sequenced message: answered with its seq, never published twice.
                    self.counters.duplicate_sends += 1;
                    if seq <= held.released {
                        self.route(origin, ChatFrame::Published { room, acks: vec![(req, seq)] });
                    } else {
                        held.awaiting.push_back(pending(seq));
                    }
                    return;
                }
                let seq = held.next_seq;
                held.next_seq += 1;
                self.counters.published += 1;
                let entry = Entry::new(seq, &sender, &id, &body, now);
                held.append(entry.clone(), &limits, now);
                held.awaiting.push_back(pending(seq));
                let term = held.term;
                // Sent to the replicas when this step ends (`run_loopback`),
                // with whatever else this step sequences in the room.
                let queued = self.unreplicated.entry(room).or_insert_with(|| (term, Vec::new()));
                if queued.0 != term {
                    *queued = (term, Vec::new());
                }
                queued.1.push(entry);
            }
            Route::Forward(to) => {
                if hops >= MAX_HOPS {
                    let reason = format!("room {room} found no owner after {hops} forwards");
                    self.route(origin, ChatFrame::Failed { req, reason });
                } else {
                    self.counters.forwarded += 1;
                    let hops = hops + 1;
                    self.route(to, ChatFrame::Publish { req, origin, room, from: sender, id, body, hops });
                }
            }
            Route::Buffer => {
                let frame = ChatFrame::Publish { req, origin, room: room.clone(), from: sender, id, body, hops };
                self.claiming.get_mut(&room).expect("route said buffer").buffered.push((from, frame));
            }
        }
    }

    /// Sends one delivery to every node in `nodes`, encoded once.
    pub(crate) fn fan_out(&mut self, nodes: &[NodeId], deliver: ChatFrame, now: u64) {
        let mut remote = nodes.iter().copied().filter(|n| *n != self.me).peekable();
        if remote.peek().is_some() {
            let bytes = encode(&deliver);
            for node in remote {
                self.peers.send(node, bytes.clone());
            }
        }
        if nodes.contains(&self.me) {
            self.handle_frame(self.me, deliver, now);
        }
    }

    pub(crate) fn on_subscription(&mut self, from: NodeId, frame: ChatFrame, now: u64) {
        let (room, hops) = match &frame {
            ChatFrame::Subscribe { room, hops, .. }
            | ChatFrame::Unsubscribe { room, hops, .. }
            | ChatFrame::History { room, hops, .. } => (room.clone(), *hops),
            _ => return,
        };
        match self.room_route(&room, now) {
            Route::Held => match frame {
                ChatFrame::Subscribe { node, after, .. } => {
                    let held = self.held.get_mut(&room).expect("route said held");
                    held.nodes.insert(node);
                    let seq = held.released;
                    // A node that had the room before an owner change gets what it missed.
                    let missed = after.map(|a| held.log.range(a, seq).0).unwrap_or_default();
                    self.route(node, ChatFrame::Subscribed { room: room.clone(), seq });
                    for frame in delivers(&room, &missed) {
                        self.route(node, frame);
                    }
                }
                ChatFrame::Unsubscribe { node, .. } => {
                    self.held.get_mut(&room).expect("route said held").nodes.remove(&node);
                }
                ChatFrame::History { req, since, node, .. } => {
                    let held = self.held.get(&room).expect("route said held");
                    let (entries, truncated) = held.log.range(since, held.released);
                    self.route(node, ChatFrame::HistoryReply { req, room, entries, truncated });
                }
                _ => {}
            },
            Route::Forward(to) => {
                // Past MAX_HOPS the subscriber's retry tries again later.
                if hops < MAX_HOPS {
                    self.counters.forwarded += 1;
                    let frame = match frame {
                        ChatFrame::Subscribe { room, node, after, .. } => {
                            ChatFrame::Subscribe { room, node, after, hops: hops + 1 }
                        }
                        ChatFrame::Unsubscribe { room, node, .. } => {
                            ChatFrame::Unsubscribe { room, node, hops: hops + 1 }
                        }
                        ChatFrame::History { req, room, since, node, .. } => {
                            ChatFrame::History { req, room, since, node, hops: hops + 1 }
                        }
                        other => other,
                    };
                    self.route(to, frame);
                }
            }
            Route::Buffer => self.claiming.get_mut(&room).expect("route said buffer").buffered.push((from, frame)),
            // Retried by the subscriber once this node has a majority again.
            Route::Unavailable => {}
        }
    }

    pub(crate) fn on_claim(&mut self, from: NodeId, room: String, now: u64) {
        let answer = self.answer_claim(from, &room, now);
        self.route(from, ChatFrame::ClaimReply { room, answer });
    }

    fn answer_claim(&mut self, from: NodeId, room: &str, now: u64) -> ClaimAnswer {
        if let Some(held) = self.held.remove(room) {
            self.counters.handoffs_sent += 1;
            self.moved.insert(room.to_owned(), Moved { to: from, sent: true, at: now });
            return ClaimAnswer::State(held.state());
        }
        if self.claiming.contains_key(room) {
            // Both claim (their rings differ): the higher id keeps claiming.
            if self.me > from {
                return ClaimAnswer::Busy;
            }
            let claim = self.claiming.remove(room).expect("checked above");
            self.moved.insert(room.to_owned(), Moved { to: from, sent: false, at: now });
            self.replay(claim.buffered, now);
            return if claim.target == from { ClaimAnswer::Unknown } else { ClaimAnswer::Redirect(claim.target) };
        }
        match self.moved.get(room) {
            Some(m) if m.to == from && m.sent => return ClaimAnswer::Sent,
            Some(m) if m.sent && self.ring.contains(m.to) => return ClaimAnswer::Redirect(m.to),
            _ => {}
        }
        // A replica copy names the holder it came from: ask it; if that
        // holder is gone (or is the claimer, restarted), the copy is the
        // best state there is. Otherwise name the owner by this node's ring
        // without the claimer (the claimer's ring may still miss members).
        let guess = self
            .ring
            .preference_order(&room_key(room))
            .into_iter()
            .find(|n| *n != from && !self.leaving.contains(n))
            .filter(|n| *n != self.me);
        if let Some(replica) = self.replicas.get(room) {
            return match (replica.holder, guess) {
                (Some(h), _) if h != from && h != self.me && self.ring.contains(h) => ClaimAnswer::Redirect(h),
                (_, Some(g)) => ClaimAnswer::Redirect(g),
                // The holder is gone (or is the claimer, restarted) and no
                // other node is likelier: the copy is the best state there is.
                _ => {
                    self.counters.failovers += 1;
                    info!(room, claimer = %from, "handing a replica copy over: its holder is gone");
                    ClaimAnswer::State(replica.takeover_state())
                }
            };
        }
        self.moved.insert(room.to_owned(), Moved { to: from, sent: false, at: now });
        match guess {
            Some(n) => ClaimAnswer::Redirect(n),
            None => ClaimAnswer::Unknown,
        }
    }

    pub(crate) fn on_claim_reply(&mut self, from: NodeId, room: String, answer: ClaimAnswer, now: u64) {
        if let ClaimAnswer::State(state) = answer {
            // Given to us: installed even if the claim was abandoned, so it is never lost.
            self.counters.handoffs_received += 1;
            let state = self.prefer_own_copy(&room, state);
            self.install(room.clone(), state, now);
            let owner = self.owner_of(&room_key(&room));
            if owner != self.me {
                self.hand_off(&room, owner, now);
            }
            return;
        }
        let Some(claim) = self.claiming.get_mut(&room) else { return };
        if claim.target != from {
            return; // an answer to an earlier attempt
        }
        match answer {
            ClaimAnswer::State(_) => unreachable!("handled above"),
            ClaimAnswer::Unknown => self.create_room(&room, now),
            ClaimAnswer::Redirect(next) if next != self.me && claim.hops < CLAIM_HOPS => {
                let hops = claim.hops + 1;
                self.start_claim(&room, next, now, hops);
            }
            // Sent (on its way), Busy, or a redirect chain too long: wait;
            // `retry_claims` starts again if nothing arrives.
            ClaimAnswer::Sent | ClaimAnswer::Busy | ClaimAnswer::Redirect(_) => claim.since_ms = now,
        }
    }

    /// A takeover state another node made from its replica copy (the
    /// holder gone) may be older than this node's own copy. A node can keep
    /// a copy it was sent while it stood in for a dead replica, and the
    /// holder's real replica is usually the claimer itself, next in line.
    /// Of two takeovers of one term, the longer log wins, so no seq that may
    /// have been acknowledged is given to another message.
    fn prefer_own_copy(&mut self, room: &str, state: RoomState) -> RoomState {
        let Some(copy) = self.replicas.get(room) else { return state };
        if copy.term + 1 != state.term {
            return state;
        }
        let mut own = copy.takeover_state();
        if own.next_seq <= state.next_seq {
            return state;
        }
        warn!(room, ours = own.next_seq, theirs = state.next_seq, "taking a room over from this node's longer copy");
        own.nodes = state.nodes;
        own
    }

    pub(crate) fn on_handoff(&mut self, from: NodeId, room: String, state: RoomState, now: u64) {
        self.counters.handoffs_received += 1;
        self.install(room.clone(), state, now);
        self.route(from, ChatFrame::HandoffAck { room: room.clone() });
        let owner = self.owner_of(&room_key(&room));
        if owner != self.me && owner != from {
            self.hand_off(&room, owner, now);
        }
    }

    pub(crate) fn on_direct(&mut self, frame: ChatFrame, now: u64) {
        let ChatFrame::Direct { req, origin, to, from, id, body, ts, hops } = frame else { return };
        let owner = self.owner_of(&user_key(&to));
        if owner != self.me && hops < MAX_HOPS {
            self.counters.forwarded += 1;
            let hops = hops + 1;
            self.route(owner, ChatFrame::Direct { req, origin, to, from, id, body, ts, hops });
            return;
        }
        let nodes: Vec<NodeId> = self.user_dir.get(&to).map(|n| n.iter().copied().collect()).unwrap_or_default();
        let count = nodes.len() as u32;
        self.fan_out(&nodes, ChatFrame::DeliverDirect { to, from, id, body, ts }, now);
        self.route(origin, ChatFrame::DirectDone { req, nodes: count });
    }
}
