//! What the load generator counts while it runs, and what it reads from
//! `/proc` about the servers and itself.
//!
//! Every publish is matched: `counts[publisher][seq]` is how many subscribers
//! received it, so losses and duplicates are exact per message, not sampled.
//! Latencies go to HDR histograms (sharded, so connection tasks rarely meet on
//! a lock) and are merged at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Latency histograms are kept in this many shards.
const SHARDS: usize = 32;
/// Highest latency recorded exactly, in microseconds (60 s); above, clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

pub(crate) struct Stats {
    pub(crate) start: Instant,
    pub(crate) published: AtomicU64,
    pub(crate) acked: AtomicU64,
    /// Publishers' own copies of their messages (both targets echo them).
    pub(crate) echoes: AtomicU64,
    /// Deliveries to subscriber connections.
    pub(crate) deliveries: AtomicU64,
    /// A subscriber got a (room, publisher) seq lower than one it already had.
    pub(crate) out_of_order: AtomicU64,
    /// A body that was not one of ours, or arrived in the wrong room.
    pub(crate) foreign: AtomicU64,
    /// Most a rate-driven publisher lagged behind its schedule, in µs.
    pub(crate) max_send_lag_us: AtomicU64,
    /// Per publisher: deliveries of each of its messages, by seq.
    counts: Vec<Vec<AtomicU16>>,
    hist: Vec<Mutex<Histogram<u64>>>,
    /// Publish → answer (Hubbub's ack, NATS's echo), in µs.
    answers: Mutex<Histogram<u64>>,
    /// Server errors and closes, by kind (`error:not_joined`, `close:4008`…).
    pub(crate) events: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub(crate) fn new(publishers: usize, per_publisher_cap: usize) -> Stats {
        let hist = (0..SHARDS)
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")))
            .collect();
        Stats {
            start: Instant::now(),
            published: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            echoes: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            max_send_lag_us: AtomicU64::new(0),
            counts: (0..publishers).map(|_| (0..per_publisher_cap).map(|_| AtomicU16::new(0)).collect()).collect(),
            hist,
            answers: Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")),
            events: Mutex::new(BTreeMap::new()),
        }
    }

    /// Nanoseconds since the load generator started (the one clock of every stamp).
    pub(crate) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Messages each publisher may send (the size of its match table).
    pub(crate) fn cap(&self) -> usize {
        self.counts.first().map_or(0, Vec::len)
    }

    pub(crate) fn event(&self, kind: String) {
        *self.events.lock().expect("events lock").entry(kind).or_default() += 1;
    }

    /// Subscriber `conn` got message `seq` of `publisher`, sent at `sent_ns`,
    /// in a frame read at `now_ns` (one clock read per frame: the messages
    /// of a frame arrive together). Returns false when the message is not
    /// one this run sent.
    pub(crate) fn delivered(&self, conn: usize, publisher: usize, seq: u64, sent_ns: u64, now_ns: u64) -> bool {
        let Some(slot) = self.counts.get(publisher).and_then(|c| c.get(seq as usize)) else { return false };
        slot.fetch_add(1, Relaxed);
        self.deliveries.fetch_add(1, Relaxed);
        let us = (now_ns.saturating_sub(sent_ns) / 1_000).max(1);
        self.hist[conn % SHARDS].lock().expect("histogram lock").saturating_record(us);
        true
    }

    /// A publish sent at `sent_ns` was answered now.
    pub(crate) fn answered(&self, sent_ns: u64) {
        let us = (self.now_ns().saturating_sub(sent_ns) / 1_000).max(1);
        self.answers.lock().expect("histogram lock").saturating_record(us);
    }

    pub(crate) fn answer_latency(&self) -> Histogram<u64> {
        self.answers.lock().expect("histogram lock").clone()
    }

    pub(crate) fn latency(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        for h in &self.hist {
            all.add(&*h.lock().expect("histogram lock")).expect("same bounds");
        }
        all
    }

    /// (expected, received, lost, duplicated) over the messages sent:
    /// `sent[p]` messages of publisher p, each due to `fanout` subscribers.
    pub(crate) fn matching(&self, sent: &[u64], fanout: u64) -> (u64, u64, u64, u64) {
        let (mut expected, mut received, mut lost, mut dup) = (0, 0, 0, 0);
        for (p, counts) in self.counts.iter().enumerate() {
            let n = sent.get(p).copied().unwrap_or(0) as usize;
            for c in &counts[..n.min(counts.len())] {
                let c = u64::from(c.load(Relaxed));
                expected += fanout;
                received += c;
                lost += fanout.saturating_sub(c);
                dup += c.saturating_sub(fanout);
            }
        }
        (expected, received, lost, dup)
    }
}

/// CPU and memory of one process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProcSample {
    /// User + system CPU time, in clock ticks.
    pub(crate) cpu_ticks: u64,
    pub(crate) rss_kib: u64,
}

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux).
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`pid` may be "self").
pub(crate) fn sample(pid: &str) -> Result<ProcSample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("process {pid}: {e}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| format!("process {pid}: odd stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `after` starts at field 3.
    let tick = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("process {pid}: {e}"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(ProcSample { cpu_ticks: tick(14) + tick(15), rss_kib })
}

pub(crate) fn sample_all(pids: &[u32]) -> Result<Vec<ProcSample>, String> {
    pids.iter().map(|p| sample(&p.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_counts_losses_and_duplicates() {
        let s = Stats::new(2, 4);
        assert!(s.delivered(0, 0, 0, 0, 0));
        assert!(s.delivered(1, 0, 0, 0, 0));
        assert!(s.delivered(0, 0, 1, 0, 0));
        assert!(s.delivered(0, 1, 0, 0, 0));
        assert!(s.delivered(1, 1, 0, 0, 0));
        assert!(s.delivered(2, 1, 0, 0, 0));
        assert!(!s.delivered(0, 2, 0, 0, 0));
        assert_eq!(s.matching(&[2, 1], 2), (6, 6, 1, 1));
    }

    #[test]
    fn reads_its_own_process() {
        let me = sample("self").unwrap();
        assert!(me.rss_kib > 0);
    }
}
