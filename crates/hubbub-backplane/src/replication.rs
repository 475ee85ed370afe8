//! Replication of each held room's log to the next `replication_factor - 1`
//! nodes of the room's preference list, and the release rule: a sequenced
//! message is fanned out and acknowledged only once a replica stored it (at
//! once when no other node is alive), so a message a client saw acked
//! survives its holder's crash: the first replica becomes the owner and
//! continues from its copy ([`crate::history::Held::from_replica`]).
//!
//! A replica refuses entries from an owner of an older term than it has
//! seen, so a holder that was failed over cannot get acks any more.

use hubbub_proto::chat::{ChatFrame, Entry};
use hubbub_ring::{NodeId, room_key};
use tracing::warn;

use crate::core::{Core, delivers};
use crate::history::ReplicaLog;

impl Core {
    /// The replicas of `room` as this node sees the ring.
    fn replica_targets(&self, room: &str) -> Vec<NodeId> {
        let wanted = self.limits.replication_factor.saturating_sub(1);
        if wanted == 0 {
            return Vec::new();
        }
        self.ring
            .preference_order(&room_key(room))
            .into_iter()
            .filter(|n| *n != self.me && !self.leaving.contains(n))
            .take(wanted)
            .collect()
    }

    /// Sends `entries` (just appended) to the room's replicas; a replica
    /// that does not have this term's log yet gets all of it. With no
    /// replica, everything sequenced is released at once.
    pub(crate) fn replicate(&mut self, room: &str, mut entries: Vec<Entry>, now: u64) {
        let targets = self.replica_targets(room);
        let Some(held) = self.held.get_mut(room) else { return };
        held.synced.retain(|n| targets.contains(n));
        if targets.is_empty() {
            // Alone in the ring. With quorum that is a one-node cluster; a
            // node whose ring emptied because it is cut off must not treat
            // its unreplicated entries as safe.
            if self.quorum {
                let upto = held.next_seq - 1;
                self.release(room, upto, now);
            }
            return;
        }
        let term = held.term;
        let mut sends = Vec::new();
        let last = targets.len().saturating_sub(1);
        for (i, target) in targets.into_iter().enumerate() {
            if held.synced.insert(target) {
                let all: Vec<Entry> = held.log.entries.iter().cloned().collect();
                sends.push((target, ChatFrame::Replicate { room: room.to_owned(), term, entries: all, full: true }));
            } else if !entries.is_empty() {
                // The last replica takes the entries themselves; only
                // others (replication factor 3 and up) get copies.
                let next = if i == last { std::mem::take(&mut entries) } else { entries.clone() };
                sends.push((target, ChatFrame::Replicate { room: room.to_owned(), term, entries: next, full: false }));
            }
        }
        for (target, frame) in sends {
            self.route(target, frame);
        }
    }

    /// Fans out every sequenced message up to `upto` not fanned out yet, in
    /// order, and answers the publishes waiting for them.
    pub(crate) fn release(&mut self, room: &str, upto: u64, now: u64) {
        if !self.quorum {
            // Keep-majority: nothing is acknowledged without a majority, even
            // what a replica stored (that replica may be cut off with us).
            return;
        }
        let Some(held) = self.held.get_mut(room) else { return };
        let upto = upto.min(held.next_seq - 1);
        let log = &held.log;
        let frames = delivers(room, (held.released + 1..=upto).filter_map(|seq| log.get(seq)));
        held.released = held.released.max(upto);
        let released = held.released;
        // The answers, one frame per origin node.
        let mut answers: Vec<(NodeId, Vec<(u64, u64)>)> = Vec::new();
        held.awaiting.retain(|p| {
            if p.seq > released {
                return true;
            }
            match answers.iter_mut().find(|(origin, _)| *origin == p.origin) {
                Some((_, acks)) => acks.push((p.req, p.seq)),
                None => answers.push((p.origin, vec![(p.req, p.seq)])),
            }
            false
        });
        let nodes: Vec<NodeId> = held.nodes.iter().copied().collect();
        for frame in frames {
            self.fan_out(&nodes, frame, now);
        }
        for (origin, acks) in answers {
            self.route(origin, ChatFrame::Published { room: room.to_owned(), acks });
        }
    }

    pub(crate) fn on_replicate(
        &mut self,
        from: NodeId,
        room: String,
        term: u64,
        entries: Vec<Entry>,
        full: bool,
        now: u64,
    ) {
        if self.held.contains_key(&room) {
            // Another node believes it holds this room; not acknowledged.
            return;
        }
        let count = entries.len() as u64;
        let limits = self.limits.history;
        // Only a full copy starts a replica: an empty copy made for entries
        // that do not follow anything would be taken for the room's state
        // (seqs from 1 again) if its holder died before the full copy came.
        if !full && !self.replicas.contains_key(&room) {
            self.route(from, ChatFrame::Replicated { room, term, seq: 0, need_full: true });
            return;
        }
        let replica = self.replicas.entry(room.clone()).or_default();
        match replica.store(term, entries, full, &limits, now) {
            Ok(complete) => {
                if complete {
                    replica.holder = Some(from);
                    self.counters.replicated_entries += count;
                }
                let seq = replica.released;
                self.route(from, ChatFrame::Replicated { room, term, seq, need_full: !complete });
            }
            Err(()) => self.counters.peer_frames_refused += 1,
        }
    }

    pub(crate) fn on_replicated(&mut self, from: NodeId, room: &str, term: u64, seq: u64, need_full: bool, now: u64) {
        let Some(held) = self.held.get_mut(room) else { return };
        if held.term != term || !held.synced.contains(&from) {
            return;
        }
        if need_full {
            // The replica missed entries: send it the whole log.
            held.synced.remove(&from);
            self.replicate(room, Vec::new(), now);
        } else {
            self.release(room, seq, now);
        }
    }

    /// A member restarted (a new process with the same node id): it has
    /// none of the replica copies it had, and no longer drains.
    pub fn member_restarted(&mut self, node: NodeId, now: u64) {
        self.leaving.remove(&node);
        self.announced_leaving.remove(&node);
        let rooms: Vec<String> =
            self.held.iter_mut().filter_map(|(r, h)| h.synced.remove(&node).then(|| r.clone())).collect();
        for room in rooms {
            self.replicate(&room, Vec::new(), now);
        }
        self.run_loopback(now);
    }

    /// Quorum lost: this node may be cut off while the majority fails its
    /// rooms over under a newer term. It stops holding them: each becomes a
    /// replica copy of what it released (what it sequenced and never
    /// released was never acknowledged, and a newer holder may reuse those
    /// seqs), and the publishes waiting on them fail so their clients retry
    /// elsewhere. With a majority again, the rooms it owns are claimed like
    /// any other ([`Core::quorum_regained`]): a holder of a newer term hands
    /// its state over; only when none exists is the copy taken over, under
    /// the next term. (Releasing the old state's entries on regaining quorum
    /// published seqs the new holder had already given to other messages.)
    pub fn quorum_lost(&mut self, now: u64) {
        let rooms: Vec<String> = self.held.keys().cloned().collect();
        if !rooms.is_empty() {
            warn!(rooms = rooms.len(), "lost the majority: keeping held rooms only as replica copies");
        }
        for room in rooms {
            let held = self.held.remove(&room).expect("listed above");
            for p in &held.awaiting {
                let reason = format!("the owner of room {room} lost the majority of the cluster");
                self.route(p.origin, ChatFrame::Failed { req: p.req, reason });
            }
            self.replicas.insert(room, ReplicaLog::from_held(held));
        }
        self.run_loopback(now);
    }

    /// Quorum regained: every held room is copied to its replicas again,
    /// what they acknowledge is released, and the rooms this node owns and
    /// has copies of are claimed.
    pub fn quorum_regained(&mut self, now: u64) {
        let rooms: Vec<String> = self.held.keys().cloned().collect();
        for room in rooms {
            if let Some(held) = self.held.get_mut(&room) {
                held.synced.clear();
            }
            self.replicate(&room, Vec::new(), now);
        }
        self.adopt_orphans(now);
        self.run_loopback(now);
    }

    /// Rooms this node has a replica copy of and now owns by the ring are
    /// claimed at once rather than on their next message: if their holder
    /// died, the copy becomes the room (and is replicated again) before a
    /// second failure can take the last copy with it.
    pub(crate) fn adopt_orphans(&mut self, now: u64) {
        if !self.quorum {
            return;
        }
        let orphans: Vec<String> = self
            .replicas
            .keys()
            .filter(|room| !self.held.contains_key(*room) && !self.claiming.contains_key(*room))
            .filter(|room| self.owner_of(&room_key(room)) == self.me)
            .cloned()
            .collect();
        for room in orphans {
            let _ = self.room_route(&room, now);
        }
    }

    /// After a ring change: held rooms sync their new replicas; replica
    /// copies of rooms this node no longer replicates are dropped.
    pub(crate) fn resync_replicas(&mut self, now: u64) {
        let rooms: Vec<String> = self.held.keys().cloned().collect();
        for room in rooms {
            self.replicate(&room, Vec::new(), now);
        }
        let factor = self.limits.replication_factor.max(1);
        let me = self.me;
        let ring = &self.ring;
        self.replicas.retain(|room, _| ring.preference_list(&room_key(room), factor).contains(&me));
    }
}
