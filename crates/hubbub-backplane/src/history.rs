//! A room's state at its holder ([`Held`]): sequencing, the bounded history
//! log, de-duplication of retried sends, and what waits for a replica; and
//! a replica's copy of a room's log ([`ReplicaLog`]).
//!
//! The log is bounded by count, bytes and age ([`HistoryLimits`]); entries
//! not yet released (sequenced, waiting for a replica) are never evicted.

use std::collections::{BTreeSet, HashMap, VecDeque};

use hubbub_proto::chat::{Entry, PendingPublish, RoomState};
use hubbub_ring::NodeId;

/// Bounds of a room's history log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per room.
    pub messages: usize,
    /// Bytes of bodies kept per room.
    pub bytes: usize,
    /// Age after which a message is dropped, in milliseconds.
    pub age_ms: u64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits { messages: 1_000, bytes: 1 << 20, age_ms: 3_600_000 }
    }
}

fn entry_bytes(e: &Entry) -> usize {
    e.body.len() + e.id.len() + e.from.len() + 32
}

/// A bounded log of entries, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) entries: VecDeque<Entry>,
    bytes: usize,
}

impl Log {
    pub(crate) fn from_entries(entries: Vec<Entry>) -> Log {
        let bytes = entries.iter().map(entry_bytes).sum();
        Log { entries: entries.into(), bytes }
    }

    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.entries.back().map(|e| e.seq)
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        self.bytes += entry_bytes(&entry);
        self.entries.push_back(entry);
    }

    /// Drops the oldest entries beyond the limits, never one above `keep_from`
    /// (the first entry that must stay). Returns what was dropped.
    pub(crate) fn evict(&mut self, limits: &HistoryLimits, now: u64, keep_from: u64) -> Vec<Entry> {
        let mut dropped = Vec::new();
        while let Some(front) = self.entries.front() {
            let over = self.entries.len() > limits.messages
                || self.bytes > limits.bytes
                || now.saturating_sub(front.ts) > limits.age_ms;
            if !over || front.seq >= keep_from {
                break;
            }
            let e = self.entries.pop_front().expect("front exists");
            self.bytes -= entry_bytes(&e);
            dropped.push(e);
        }
        dropped
    }

    /// Entries in `(since, upto]`, and whether entries after `since` were
    /// already dropped.
    pub(crate) fn range(&self, since: u64, upto: u64) -> (Vec<Entry>, bool) {
        let entries: Vec<Entry> = self.entries.iter().filter(|e| e.seq > since && e.seq <= upto).cloned().collect();
        let first_kept = self.entries.front().map(|e| e.seq).unwrap_or(upto + 1);
        let truncated = since < upto && first_kept > since + 1;
        (entries, truncated)
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.bytes -= entry_bytes(&e);
        }
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&Entry> {
        let first = self.entries.front()?.seq;
        let e = self.entries.get(seq.checked_sub(first)? as usize)?;
        (e.seq == seq).then_some(e)
    }
}

/// A room at the node that holds it.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) next_seq: u64,
    /// The last seq fanned out to subscribers (all below it were too).
    pub(crate) released: u64,
    pub(crate) nodes: BTreeSet<NodeId>,
    pub(crate) log: Log,
    /// (sender, client id) → seq, for the entries in the log.
    pub(crate) dedupe: HashMap<(String, String), u64>,
    /// Requests waiting for their seq to be released.
    pub(crate) awaiting: VecDeque<PendingPublish>,
    pub(crate) term: u64,
    /// Replicas that hold this room's log under `term`.
    pub(crate) synced: BTreeSet<NodeId>,
}

impl Held {
    pub(crate) fn new_room() -> Held {
        Held::from_state(RoomState {
            next_seq: 1,
            nodes: Vec::new(),
            history: Vec::new(),
            released: 0,
            pending: Vec::new(),
            term: 1,
        })
    }

    /// A room from a handoff or claim.
    pub(crate) fn from_state(state: RoomState) -> Held {
        let dedupe = state.history.iter().map(|e| ((e.from.clone(), e.id.clone()), e.seq)).collect();
        Held {
            next_seq: state.next_seq,
            released: state.released,
            nodes: state.nodes.into_iter().collect(),
            log: Log::from_entries(state.history),
            dedupe,
            awaiting: state.pending.into(),
            term: state.term,
            synced: BTreeSet::new(),
        }
    }

    /// A room taken over from a replica's log after its holder failed.
    pub(crate) fn from_replica(replica: &ReplicaLog) -> Held {
        Held::from_state(replica.takeover_state())
    }

    pub(crate) fn state(&self) -> RoomState {
        RoomState {
            next_seq: self.next_seq,
            nodes: self.nodes.iter().copied().collect(),
            history: self.log.entries.iter().cloned().collect(),
            released: self.released,
            pending: self.awaiting.iter().cloned().collect(),
            term: self.term,
        }
    }

    /// Appends a new entry and applies the limits.
    pub(crate) fn append(&mut self, entry: Entry, limits: &HistoryLimits, now: u64) {
        self.dedupe.insert((entry.from.clone(), entry.id.clone()), entry.seq);
        self.log.push(entry);
        for e in self.log.evict(limits, now, self.released + 1) {
            if self.dedupe.get(&(e.from.clone(), e.id.clone())) == Some(&e.seq) {
                self.dedupe.remove(&(e.from, e.id));
            }
        }
    }
}

/// A replica's copy of a room's log.
#[derive(Debug, Default)]
pub(crate) struct ReplicaLog {
    pub(crate) term: u64,
    pub(crate) log: Log,
    /// The highest seq stored (kept when the log is evicted empty).
    pub(crate) released: u64,
    /// The holder that sent the latest entries.
    pub(crate) holder: Option<NodeId>,
}

impl ReplicaLog {
    /// What a holder that gives a room up without a successor keeps: its
    /// released entries, under its term, naming no holder.
    pub(crate) fn from_held(held: Held) -> ReplicaLog {
        let mut log = held.log;
        while log.last_seq().is_some_and(|seq| seq > held.released) {
            log.pop_back();
        }
        ReplicaLog { term: held.term, log, released: held.released, holder: None }
    }

    /// The state a new owner starts from when the holder is gone: the next
    /// term, the seq continuing after the copy. Everything the replica
    /// stored may have been acknowledged, so it counts as released and
    /// subscribers re-fetch what they missed.
    pub(crate) fn takeover_state(&self) -> RoomState {
        let last = self.log.last_seq().unwrap_or(0).max(self.released);
        RoomState {
            next_seq: last + 1,
            nodes: Vec::new(),
            history: self.log.entries.iter().cloned().collect(),
            released: last,
            pending: Vec::new(),
            term: self.term + 1,
        }
    }

    /// Stores `entries` from an owner of `term`. `Err(())` when the owner is
    /// stale (a newer term was seen); `Ok(false)` when the entries do not
    /// follow what is stored (a full copy is needed); nothing is stored then.
    pub(crate) fn store(
        &mut self,
        term: u64,
        entries: Vec<Entry>,
        full: bool,
        limits: &HistoryLimits,
        now: u64,
    ) -> Result<bool, ()> {
        if term < self.term {
            return Err(());
        }
        if full {
            self.log = Log::default();
            self.released = 0;
        } else if term > self.term || entries.first().is_some_and(|e| e.seq > self.released + 1) {
            // A new term or a gap: only a full copy is trustworthy.
            return Ok(false);
        }
        self.term = term;
        for e in entries {
            if e.seq > self.released {
                self.released = e.seq;
                self.log.push(e);
            }
        }
        self.log.evict(limits, now, u64::MAX);
        Ok(true)
    }
}
