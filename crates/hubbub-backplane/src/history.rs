//! A room's state at its holder ([`Held`]): sequencing, the bounded history
//! log, de-duplication of retried sends, and what waits for a replica; and
//! a replica's copy of a room's log ([`ReplicaLog`]).
//!
//! The log is bounded by count, bytes and age ([`HistoryLimits`]); entries
//! not yet released (sequenced, waiting for a replica) are never evicted.

use std::collections::{BTreeSet, VecDeque};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

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
    e.text_len() + 32
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
        let at = usize::try_from(seq.checked_sub(first)?).ok()?;
        if let Some(e) = self.entries.get(at).filter(|e| e.seq == seq) {
            return Some(e);
        }
        // Seqs are consecutive in a log a holder built; a copy merged from
        // elsewhere may have gaps, so fall back to a search (seqs ascend).
        let at = self.entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
        self.entries.get(at)
    }
}

/// (sender, client id) → seq for the entries in a room's log, so a retried
/// send is answered with its seq instead of being published twice.
///
/// The table holds only seqs and compares against the log's entries, so a
/// publish copies no strings to look up, remember or forget its key. Keys
/// are client-chosen: they are hashed with std's keyed SipHash, not a fast
/// unkeyed hash, so crafted ids cannot make one room's table degenerate
/// (the core is one lock; a slow table would stall every room).
#[derive(Debug, Default)]
pub(crate) struct Dedupe {
    table: HashTable<u64>,
    hasher: RandomState,
}

impl Dedupe {
    fn hash(&self, from: &str, id: &str) -> u64 {
        self.hasher.hash_one((from, id))
    }

    /// The seq of the entry in `log` that `from` sent with `id`.
    pub(crate) fn get(&self, log: &Log, from: &str, id: &str) -> Option<u64> {
        let hash = self.hash(from, id);
        self.table.find(hash, |&seq| log.get(seq).is_some_and(|e| e.from() == from && e.id() == id)).copied()
    }

    /// Remembers `entry`, which must already be in `log` (a key seen before
    /// now names the newer entry).
    fn insert(&mut self, log: &Log, entry: &Entry) {
        let hash = self.hash(entry.from(), entry.id());
        let same = |seq: &u64| log.get(*seq).is_some_and(|e| e.from() == entry.from() && e.id() == entry.id());
        if let Some(seq) = self.table.find_mut(hash, same) {
            *seq = entry.seq;
            return;
        }
        let hasher = &self.hasher;
        // Growing rehashes every seq in the table: all are in `log`.
        let rehash = |seq: &u64| log.get(*seq).map_or(0, |e| hasher.hash_one((e.from(), e.id())));
        self.table.insert_unique(hash, entry.seq, rehash);
    }

    /// Forgets `entry` (dropped from the log) unless its key names another.
    fn remove(&mut self, entry: &Entry) {
        let hash = self.hash(entry.from(), entry.id());
        if let Ok(found) = self.table.find_entry(hash, |&seq| seq == entry.seq) {
            found.remove();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
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
    pub(crate) dedupe: Dedupe,
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
        let log = Log::from_entries(state.history);
        let mut dedupe = Dedupe::default();
        for e in &log.entries {
            dedupe.insert(&log, e);
        }
        Held {
            next_seq: state.next_seq,
            released: state.released,
            nodes: state.nodes.into_iter().collect(),
            log,
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
        self.log.push(entry);
        let entry = self.log.entries.back().expect("just pushed");
        self.dedupe.insert(&self.log, entry);
        for e in self.log.evict(limits, now, self.released + 1) {
            self.dedupe.remove(&e);
        }
    }

    /// The seq of what `from` sent with `id`, if it is still in the log.
    pub(crate) fn sequenced(&self, from: &str, id: &str) -> Option<u64> {
        self.dedupe.get(&self.log, from, id)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, from: &str, id: &str) -> Entry {
        Entry::new(seq, from, id, "b", 0)
    }

    fn limits(messages: usize) -> HistoryLimits {
        HistoryLimits { messages, ..HistoryLimits::default() }
    }

    #[test]
    fn a_retried_send_finds_its_seq_and_only_its_own() {
        let mut held = Held::new_room();
        held.append(entry(1, "ann", "m1"), &limits(100), 0);
        held.append(entry(2, "bob", "m1"), &limits(100), 0);
        assert_eq!(held.sequenced("ann", "m1"), Some(1));
        assert_eq!(held.sequenced("bob", "m1"), Some(2));
        assert_eq!(held.sequenced("ann", "m2"), None);
        // The key is the pair, not the concatenation.
        assert_eq!(held.sequenced("an", "nm1"), None);
    }

    #[test]
    fn the_table_follows_the_log_through_growth_and_eviction() {
        let mut held = Held::new_room();
        for seq in 1..=5_000 {
            held.released = seq - 1;
            held.append(entry(seq, &format!("u{}", seq % 7), &format!("m{seq}")), &limits(1_000), 0);
        }
        assert_eq!(held.log.entries.len(), 1_000);
        assert_eq!(held.dedupe.len(), 1_000);
        assert_eq!(held.sequenced("u0", "m4000"), None, "evicted");
        for seq in 4_001..=5_000 {
            assert_eq!(held.sequenced(&format!("u{}", seq % 7), &format!("m{seq}")), Some(seq));
        }
    }

    #[test]
    fn a_log_with_gaps_still_answers_retries() {
        let state = RoomState {
            next_seq: 10,
            nodes: Vec::new(),
            history: vec![entry(2, "ann", "a"), entry(5, "bob", "b"), entry(9, "cy", "c")],
            released: 9,
            pending: Vec::new(),
            term: 3,
        };
        let held = Held::from_state(state);
        assert_eq!(held.sequenced("ann", "a"), Some(2));
        assert_eq!(held.sequenced("bob", "b"), Some(5));
        assert_eq!(held.sequenced("cy", "c"), Some(9));
    }

    #[test]
    fn a_key_seen_twice_names_the_newer_entry_until_that_one_goes() {
        let state = RoomState {
            next_seq: 3,
            nodes: Vec::new(),
            history: vec![entry(1, "ann", "a"), entry(2, "ann", "a")],
            released: 2,
            pending: Vec::new(),
            term: 1,
        };
        let mut held = Held::from_state(state);
        assert_eq!(held.sequenced("ann", "a"), Some(2));
        assert_eq!(held.dedupe.len(), 1);
        // Evicting seq 1 must not forget the key, which names seq 2.
        held.append(entry(3, "bob", "x"), &limits(2), 0);
        assert_eq!(held.log.entries.front().map(|e| e.seq), Some(2));
        assert_eq!(held.sequenced("ann", "a"), Some(2));
    }
}
