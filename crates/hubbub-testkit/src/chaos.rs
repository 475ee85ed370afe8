//! The chaos harness's history: every client records what it sent, what was
//! acknowledged or refused, what it was delivered and when it moved; the
//! merged [`History`] is then checked for the faults a chat cluster must not
//! show under crashes, partitions and restarts.
//!
//! - [`Recorder`] is one client's buffer (no locking: each client task owns
//!   its own and hands it back at the end).
//! - [`History::merge`] puts the buffers and the test's own [`History::fault`]
//!   marks into one timeline.
//! - [`check`] computes a [`Verdict`]: acked-but-lost, unexpected,
//!   duplicated, out of order, gaps, conflicting seqs, truncations, and the
//!   resume figures; [`Verdict::summary`] is the one line a run prints.
//!
//! What counts as what:
//!
//! - **acked-but-lost**: an acknowledged (room, seq) that some client never
//!   received although it was in the room from its first `joined` (at seq
//!   `J`, so every seq after `J`) until the end of the run, resumes included.
//!   Seqs a client was told were truncated are excused (and counted there).
//!   Counted once per message, however many clients missed it.
//! - **unexpected**: a delivered (room, id) that no client sent to that room.
//! - **duplicates**: a client delivered the same (room, seq) twice, or one
//!   (room, id) appears under two seqs anywhere (acks or deliveries).
//! - **order violations**: per client and room, a delivered seq not above
//!   the previous one (and not a repeat, which is a duplicate).
//! - **gaps**: per client and room, a delivered seq more than one above the
//!   previous one (the first delivery compares with the `joined` seq),
//!   unless a truncation was reported just before it.
//! - **conflicts**: one (room, seq) naming two different ids anywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How many violations of each kind [`Verdict::details`] describes.
const DETAILS_PER_KIND: usize = 5;

/// One thing a client did or saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The client's first `joined` for `room`: it receives every seq after
    /// `seq` from now on.
    Joined { client: String, room: String, seq: u64 },
    /// The client sent `id` to `room`.
    Sent { client: String, room: String, id: String },
    /// `id` was acknowledged with `seq`, on the connection to `node`.
    Acked { client: String, room: String, id: String, seq: u64, node: String },
    /// `id` was refused for good with `code`.
    Refused { client: String, id: String, code: String },
    /// The client's application saw (room, seq) carrying `id` from `from`.
    Delivered { client: String, room: String, seq: u64, id: String, from: String },
    /// The client lost its connection to `from_node` and resumed on
    /// `to_node`, `after` the old connection ended.
    Reconnected { client: String, from_node: String, to_node: String, after: Duration },
    /// The client was told that `room`'s messages before `from_seq` (after
    /// what it had) are gone.
    Truncated { client: String, room: String, from_seq: u64 },
}

/// An [`Event`] and when it was recorded.
#[derive(Clone, Debug)]
pub struct Record {
    pub at: Instant,
    pub event: Event,
}

/// One client's history buffer.
#[derive(Debug)]
pub struct Recorder {
    client: String,
    records: Vec<Record>,
}

impl Recorder {
    pub fn new(client: &str) -> Recorder {
        Recorder { client: client.to_owned(), records: Vec::new() }
    }

    pub fn client(&self) -> &str {
        &self.client
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    fn push(&mut self, event: Event) {
        self.records.push(Record { at: Instant::now(), event });
    }

    pub fn joined(&mut self, room: &str, seq: u64) {
        self.push(Event::Joined { client: self.client.clone(), room: room.to_owned(), seq });
    }

    pub fn sent(&mut self, room: &str, id: &str) {
        self.push(Event::Sent { client: self.client.clone(), room: room.to_owned(), id: id.to_owned() });
    }

    pub fn acked(&mut self, room: &str, id: &str, seq: u64, node: &str) {
        let client = self.client.clone();
        self.push(Event::Acked { client, room: room.to_owned(), id: id.to_owned(), seq, node: node.to_owned() });
    }

    pub fn refused(&mut self, id: &str, code: &str) {
        self.push(Event::Refused { client: self.client.clone(), id: id.to_owned(), code: code.to_owned() });
    }

    pub fn delivered(&mut self, room: &str, seq: u64, id: &str, from: &str) {
        let client = self.client.clone();
        self.push(Event::Delivered { client, room: room.to_owned(), seq, id: id.to_owned(), from: from.to_owned() });
    }

    pub fn reconnected(&mut self, from_node: &str, to_node: &str, after: Duration) {
        let client = self.client.clone();
        self.push(Event::Reconnected { client, from_node: from_node.to_owned(), to_node: to_node.to_owned(), after });
    }

    pub fn truncated(&mut self, room: &str, from_seq: u64) {
        self.push(Event::Truncated { client: self.client.clone(), room: room.to_owned(), from_seq });
    }

    /// Adds an already timed record (hand-made histories in tests).
    pub fn push_at(&mut self, at: Instant, event: Event) {
        self.records.push(Record { at, event });
    }
}

/// Every client's records and the test's fault marks, in time order.
#[derive(Debug, Default)]
pub struct History {
    pub records: Vec<Record>,
    /// (when, what): kills, partitions, restarts, for the record.
    pub faults: Vec<(Instant, String)>,
}

impl History {
    /// Merges client buffers (each in its own order) into one timeline.
    /// The sort is stable, so one client's records keep their order.
    pub fn merge(recorders: impl IntoIterator<Item = Recorder>) -> History {
        let mut records: Vec<Record> = recorders.into_iter().flat_map(|r| r.records).collect();
        records.sort_by_key(|r| r.at);
        History { records, faults: Vec::new() }
    }

    /// Marks a fault the test injected at `at`.
    pub fn fault(&mut self, at: Instant, what: &str) {
        self.faults.push((at, what.to_owned()));
        self.faults.sort_by_key(|f| f.0);
    }
}

/// What [`check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub clients: usize,
    pub rooms: usize,
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    pub delivered: u64,
    pub acked_lost: u64,
    pub unexpected: u64,
    pub duplicates: u64,
    pub order_violations: u64,
    pub gaps: u64,
    pub conflicts: u64,
    pub truncated: u64,
    /// Reconnect events.
    pub resumed: u64,
    /// Longest time a client was without a connection before it resumed
    /// (its own `after`), in ms. Tests print the time from a fault to the
    /// last of its clients resuming themselves.
    pub max_resume_ms: u64,
    /// Up to a few descriptions of each kind of violation.
    pub details: Vec<String>,
}

impl Verdict {
    /// No violation of any kind (truncations are not violations by
    /// themselves; tests that expect none assert `truncated == 0`).
    pub fn is_clean(&self) -> bool {
        self.acked_lost == 0
            && self.unexpected == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.gaps == 0
            && self.conflicts == 0
    }

    /// The one line a run prints.
    pub fn summary(&self, run: &str, detection_ms: Option<u64>) -> String {
        let detection = detection_ms.map_or_else(|| "-".to_owned(), |d| d.to_string());
        format!(
            "chaos: run={run} clients={} rooms={} sent={} acked={} refused={} delivered={} acked_lost={} \
             unexpected={} duplicates={} order_violations={} gaps={} conflicts={} truncated={} resumed={} \
             max_resume_ms={} detection_ms={detection}",
            self.clients,
            self.rooms,
            self.sent,
            self.acked,
            self.refused,
            self.delivered,
            self.acked_lost,
            self.unexpected,
            self.duplicates,
            self.order_violations,
            self.gaps,
            self.conflicts,
            self.truncated,
            self.resumed,
            self.max_resume_ms,
        )
    }

    /// The details, one per line, for an assertion message.
    pub fn details_text(&self) -> String {
        self.details.join("\n")
    }
}

/// Per (client, room) delivery state.
#[derive(Default)]
struct Stream {
    joined: Option<u64>,
    last: Option<u64>,
    seen: HashSet<u64>,
    /// Seq ranges `(after, before)` the client was told are gone.
    excused: Vec<(u64, u64)>,
    truncation_pending: bool,
}

#[derive(Default)]
struct Details {
    per_kind: BTreeMap<&'static str, usize>,
    lines: Vec<String>,
}

impl Details {
    fn add(&mut self, kind: &'static str, line: impl FnOnce() -> String) {
        let n = self.per_kind.entry(kind).or_default();
        *n += 1;
        if *n <= DETAILS_PER_KIND {
            self.lines.push(format!("{kind}: {}", line()));
        }
    }
}

/// Checks a history; see the module docs for what each count means.
pub fn check(history: &History) -> Verdict {
    let mut v = Verdict::default();
    let mut details = Details::default();
    let mut clients: BTreeSet<&str> = BTreeSet::new();
    let mut rooms: BTreeSet<&str> = BTreeSet::new();
    let mut sent: HashSet<(&str, &str)> = HashSet::new();
    // (room, seq) -> id, from acks and deliveries alike.
    let mut names: HashMap<(&str, u64), &str> = HashMap::new();
    // (room, id) -> seq.
    let mut seq_of: HashMap<(&str, &str), u64> = HashMap::new();
    let mut conflicting: HashSet<(&str, u64)> = HashSet::new();
    let mut twice_sequenced: HashSet<(&str, &str)> = HashSet::new();
    let mut acked: BTreeMap<(&str, u64), &str> = BTreeMap::new();
    let mut streams: BTreeMap<(&str, &str), Stream> = BTreeMap::new();

    for record in &history.records {
        match &record.event {
            Event::Joined { client, room, seq } => {
                clients.insert(client);
                rooms.insert(room);
                let s = streams.entry((client.as_str(), room.as_str())).or_default();
                if s.joined.is_none() {
                    s.joined = Some(*seq);
                    s.last = Some(*seq);
                }
            }
            Event::Sent { client, room, id } => {
                clients.insert(client);
                rooms.insert(room);
                v.sent += 1;
                sent.insert((room, id));
            }
            Event::Acked { room, id, seq, .. } => {
                v.acked += 1;
                acked.insert((room, *seq), id);
                note_name(
                    room,
                    *seq,
                    id,
                    &mut names,
                    &mut seq_of,
                    &mut conflicting,
                    &mut twice_sequenced,
                    &mut details,
                );
            }
            Event::Refused { .. } => v.refused += 1,
            Event::Delivered { client, room, seq, id, from } => {
                v.delivered += 1;
                clients.insert(client);
                rooms.insert(room);
                // Whether someone sent it is decided below, once all sends
                // are known: the sender records `Sent` just after the send
                // returns, possibly after its own copy arrived.
                note_name(
                    room,
                    *seq,
                    id,
                    &mut names,
                    &mut seq_of,
                    &mut conflicting,
                    &mut twice_sequenced,
                    &mut details,
                );
                let s = streams.entry((client.as_str(), room.as_str())).or_default();
                if !s.seen.insert(*seq) {
                    v.duplicates += 1;
                    details.add("duplicate", || format!("{client} got {room}#{seq} ({id} from {from}) twice"));
                    continue;
                }
                match s.last {
                    Some(last) if *seq <= last => {
                        v.order_violations += 1;
                        details.add("order", || format!("{client} got {room}#{seq} after #{last}"));
                    }
                    Some(last) if *seq > last + 1 => {
                        if s.truncation_pending {
                            s.excused.push((last, *seq));
                        } else {
                            v.gaps += 1;
                            details.add("gap", || format!("{client} got {room}#{seq} right after #{last}"));
                        }
                    }
                    _ => {}
                }
                s.truncation_pending = false;
                s.last = Some(s.last.map_or(*seq, |l| l.max(*seq)));
            }
            Event::Reconnected { after, .. } => {
                v.resumed += 1;
                v.max_resume_ms = v.max_resume_ms.max(after.as_millis() as u64);
            }
            Event::Truncated { client, room, from_seq } => {
                v.truncated += 1;
                details.add("truncated", || format!("{client} was told {room} resumes at #{from_seq}"));
                let s = streams.entry((client.as_str(), room.as_str())).or_default();
                match s.last {
                    // The numbering started over: what follows is new.
                    Some(last) if *from_seq <= last => {
                        s.excused.push((0, u64::MAX));
                        s.last = Some(from_seq.saturating_sub(1));
                        s.seen.clear();
                    }
                    _ => s.truncation_pending = true,
                }
            }
        }
    }

    for ((room, seq), id) in &names {
        if !sent.contains(&(room, id)) {
            // Only deliveries and acks name ids; an ack of an unsent id is
            // as unexpected as a delivery of one.
            v.unexpected += 1;
            details.add("unexpected", || format!("{room}#{seq} carries {id}, which nobody sent there"));
        }
    }
    v.conflicts = conflicting.len() as u64;
    v.duplicates += twice_sequenced.len() as u64;

    let mut lost: BTreeSet<(&str, u64)> = BTreeSet::new();
    let mut missing_clients = 0;
    for ((client, room), s) in &streams {
        let Some(joined) = s.joined else { continue };
        let missed: Vec<u64> = acked
            .range((*room, joined + 1)..=(*room, u64::MAX))
            .map(|(&(_, seq), _)| seq)
            .filter(|seq| !s.seen.contains(seq) && !s.excused.iter().any(|(a, b)| seq > a && seq < b))
            .collect();
        if let (Some(first), Some(last)) = (missed.first(), missed.last()) {
            missing_clients += 1;
            let got = s.last.map_or_else(|| "nothing".to_owned(), |l| format!("up to #{l}"));
            details.add("acked_lost", || {
                format!(
                    "{client} (joined {room} at #{joined}, got {got}) missed {} acked seqs, #{first}..=#{last}",
                    missed.len()
                )
            });
            lost.extend(missed.iter().map(|seq| (*room, *seq)));
        }
    }
    if missing_clients > 0 {
        details.lines.push(format!("acked_lost: {missing_clients} (client, room) pairs missed acked messages"));
    }
    v.acked_lost = lost.len() as u64;
    v.clients = clients.len();
    v.rooms = rooms.len();
    v.details = details.lines;
    v
}

/// Remembers that (room, seq) names `id`, noting conflicts (one seq, two
/// ids) and double sequencing (one id, two seqs).
#[allow(clippy::too_many_arguments)]
fn note_name<'a>(
    room: &'a str,
    seq: u64,
    id: &'a str,
    names: &mut HashMap<(&'a str, u64), &'a str>,
    seq_of: &mut HashMap<(&'a str, &'a str), u64>,
    conflicting: &mut HashSet<(&'a str, u64)>,
    twice: &mut HashSet<(&'a str, &'a str)>,
    details: &mut Details,
) {
    match names.get(&(room, seq)) {
        Some(other) if *other != id => {
            if conflicting.insert((room, seq)) {
                details.add("conflict", || format!("{room}#{seq} names both {other} and {id}"));
            }
        }
        Some(_) => {}
        None => {
            names.insert((room, seq), id);
        }
    }
    match seq_of.get(&(room, id)) {
        Some(other) if *other != seq => {
            if twice.insert((room, id)) {
                details.add("duplicate", || format!("{room}: {id} was sequenced as #{other} and #{seq}"));
            }
        }
        Some(_) => {}
        None => {
            seq_of.insert((room, id), seq);
        }
    }
}

/// Writes a short human account of the verdict's counts per kind, for the
/// failure message of a test (the summary line plus the details).
pub fn explain(run: &str, verdict: &Verdict, detection_ms: Option<u64>) -> String {
    let mut out = verdict.summary(run, detection_ms);
    for line in &verdict.details {
        let _ = write!(out, "\n  {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made history: clients a and b in room r, joined at 0.
    struct Script {
        t0: Instant,
        tick: u64,
        a: Recorder,
        b: Recorder,
        faults: Vec<(Instant, String)>,
    }

    impl Script {
        fn new() -> Script {
            let mut s = Script {
                t0: Instant::now(),
                tick: 0,
                a: Recorder::new("a"),
                b: Recorder::new("b"),
                faults: Vec::new(),
            };
            s.push("a", Event::Joined { client: "a".into(), room: "r".into(), seq: 0 });
            s.push("b", Event::Joined { client: "b".into(), room: "r".into(), seq: 0 });
            s
        }

        fn now(&mut self) -> Instant {
            self.tick += 1;
            self.t0 + Duration::from_millis(self.tick)
        }

        fn push(&mut self, who: &str, event: Event) {
            let at = self.now();
            let rec = if who == "a" { &mut self.a } else { &mut self.b };
            rec.push_at(at, event);
        }

        /// `a` sends `id`, it is sequenced as `seq` and acked.
        fn send(&mut self, id: &str, seq: u64) {
            self.push("a", Event::Sent { client: "a".into(), room: "r".into(), id: id.into() });
            self.push(
                "a",
                Event::Acked { client: "a".into(), room: "r".into(), id: id.into(), seq, node: "n1".into() },
            );
        }

        fn deliver(&mut self, who: &str, seq: u64, id: &str) {
            let event = Event::Delivered { client: who.into(), room: "r".into(), seq, id: id.into(), from: "a".into() };
            self.push(who, event);
        }

        /// Sends and delivers `m1..=mN` as seqs 1..=N to both clients.
        fn clean(n: u64) -> Script {
            let mut s = Script::new();
            for seq in 1..=n {
                let id = format!("m{seq}");
                s.send(&id, seq);
                s.deliver("a", seq, &id);
                s.deliver("b", seq, &id);
            }
            s
        }

        fn check(self) -> Verdict {
            let mut h = History::merge([self.a, self.b]);
            for (at, what) in self.faults {
                h.fault(at, &what);
            }
            check(&h)
        }
    }

    fn only(v: &Verdict, kind: &str, count: u64) {
        let counts = [
            ("acked_lost", v.acked_lost),
            ("unexpected", v.unexpected),
            ("duplicates", v.duplicates),
            ("order_violations", v.order_violations),
            ("gaps", v.gaps),
            ("conflicts", v.conflicts),
        ];
        for (name, n) in counts {
            let want = if name == kind { count } else { 0 };
            assert_eq!(n, want, "{name}: {}", explain("t", v, None));
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let v = Script::clean(5).check();
        assert!(v.is_clean(), "{}", explain("t", &v, None));
        assert_eq!((v.clients, v.rooms, v.sent, v.acked, v.delivered), (2, 1, 5, 5, 10));
        assert_eq!(v.truncated, 0);
        let line = v.summary("clean", Some(1234));
        assert!(line.starts_with("chaos: run=clean clients=2 rooms=1 sent=5 acked=5"), "{line}");
        assert!(line.contains("acked_lost=0 unexpected=0 duplicates=0 order_violations=0 gaps=0"), "{line}");
        assert!(line.ends_with("detection_ms=1234"), "{line}");
    }

    #[test]
    fn an_acked_message_a_subscriber_never_got_is_lost() {
        let mut s = Script::clean(2);
        s.send("m3", 3);
        s.deliver("a", 3, "m3");
        // b never gets #3; #4 makes it a gap too, so leave it at the end.
        only(&s.check(), "acked_lost", 1);
    }

    #[test]
    fn a_client_that_joined_later_owes_nothing_before_its_join() {
        let mut s = Script::clean(2);
        s.push("a", Event::Joined { client: "a".into(), room: "q".into(), seq: 7 });
        s.push("b", Event::Sent { client: "b".into(), room: "q".into(), id: "x".into() });
        s.push("b", Event::Acked { client: "b".into(), room: "q".into(), id: "x".into(), seq: 7, node: "n".into() });
        let v = s.check();
        assert!(v.is_clean(), "{}", explain("t", &v, None));
    }

    #[test]
    fn a_delivery_nobody_sent_is_unexpected() {
        let mut s = Script::clean(2);
        s.deliver("a", 3, "ghost");
        s.deliver("b", 3, "ghost");
        only(&s.check(), "unexpected", 1);
    }

    #[test]
    fn the_same_seq_twice_is_a_duplicate() {
        let mut s = Script::clean(3);
        s.deliver("b", 3, "m3");
        only(&s.check(), "duplicates", 1);
    }

    #[test]
    fn one_id_under_two_seqs_is_a_duplicate() {
        let mut s = Script::clean(2);
        // The owner published a retry again instead of de-duplicating it.
        s.deliver("a", 3, "m2");
        s.deliver("b", 3, "m2");
        only(&s.check(), "duplicates", 1);
    }

    #[test]
    fn going_backwards_is_an_order_violation() {
        let mut s = Script::new();
        s.send("m1", 1);
        s.send("m2", 2);
        for who in ["a", "b"] {
            s.deliver(who, 1, "m1");
            s.deliver(who, 2, "m2");
        }
        s.send("m3", 3);
        s.send("m4", 4);
        s.deliver("a", 3, "m3");
        s.deliver("a", 4, "m4");
        s.deliver("b", 4, "m4");
        s.deliver("b", 3, "m3");
        // b: 4 after 2 is a gap, then 3 after 4 goes backwards.
        let v = s.check();
        assert_eq!(
            (v.order_violations, v.gaps, v.acked_lost, v.duplicates),
            (1, 1, 0, 0),
            "{}",
            explain("t", &v, None)
        );
    }

    #[test]
    fn a_skipped_seq_is_a_gap_even_when_unacked() {
        let mut s = Script::clean(2);
        // #3 was sequenced but its ack never came (the sender died); b
        // skips it, a gets it.
        s.push("a", Event::Sent { client: "a".into(), room: "r".into(), id: "m3".into() });
        s.deliver("a", 3, "m3");
        s.send("m4", 4);
        s.deliver("a", 4, "m4");
        s.deliver("b", 4, "m4");
        only(&s.check(), "gaps", 1);
    }

    #[test]
    fn the_first_delivery_after_the_join_seq_must_follow_it() {
        let mut s = Script::new();
        s.send("m1", 1);
        s.send("m2", 2);
        s.deliver("a", 1, "m1");
        s.deliver("a", 2, "m2");
        s.deliver("b", 2, "m2");
        let v = s.check();
        assert_eq!((v.gaps, v.acked_lost), (1, 1), "{}", explain("t", &v, None));
    }

    #[test]
    fn one_seq_naming_two_ids_is_a_conflict() {
        let mut s = Script::clean(2);
        s.push("b", Event::Sent { client: "b".into(), room: "r".into(), id: "other".into() });
        s.deliver("a", 3, "m3x");
        s.push("a", Event::Sent { client: "a".into(), room: "r".into(), id: "m3x".into() });
        s.deliver("b", 3, "other");
        only(&s.check(), "conflicts", 1);
    }

    #[test]
    fn a_reported_truncation_excuses_its_range_and_is_counted() {
        let mut s = Script::clean(1);
        for seq in 2..=4 {
            s.send(&format!("m{seq}"), seq);
            s.deliver("a", seq, &format!("m{seq}"));
        }
        s.push("b", Event::Truncated { client: "b".into(), room: "r".into(), from_seq: 4 });
        s.deliver("b", 4, "m4");
        let v = s.check();
        assert!(v.is_clean(), "{}", explain("t", &v, None));
        assert_eq!(v.truncated, 1);
    }

    #[test]
    fn resume_time_is_the_longest_outage() {
        let mut s = Script::clean(1);
        let kill = s.now();
        s.faults.push((kill, "kill n1".into()));
        for (client, ms) in [("a", 40), ("b", 5)] {
            let after = Duration::from_millis(ms);
            let event =
                Event::Reconnected { client: client.into(), from_node: "n1".into(), to_node: "n2".into(), after };
            s.push(client, event);
        }
        let v = s.check();
        assert_eq!((v.resumed, v.max_resume_ms), (2, 40));
        assert!(v.is_clean());
    }
}
