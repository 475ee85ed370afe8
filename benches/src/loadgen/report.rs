//! The load generator's results: one [`Report`] per run, printed as a table
//! for people and as one JSON line for scripts; `--compare` reads such JSON
//! lines back and prints targets side by side with ratios.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::wire::Target;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) p50_us: u64,
    pub(crate) p90_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    pub(crate) mean_us: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Server {
    pub(crate) pid: u32,
    /// CPU seconds (user + system) over the steady window.
    pub(crate) cpu_s: f64,
    pub(crate) rss_kib: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Idle {
    pub(crate) connections: u64,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    pub(crate) kib_per_connection: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) label: String,
    pub(crate) target: Target,
    pub(crate) nodes: usize,
    pub(crate) connections: u64,
    pub(crate) rooms: u64,
    pub(crate) subscribers_per_room: u64,
    pub(crate) publishers: u64,
    pub(crate) payload_bytes: u64,
    /// Hubbub: the connections asked for batched frames (`hello.batch`).
    #[serde(default)]
    pub(crate) batched_frames: bool,
    /// Offered publishes/s (0: open loop with `window` in flight per publisher).
    pub(crate) offered_rate: u64,
    pub(crate) window: u64,
    pub(crate) setup_s: f64,
    /// Length of the steady (publishing) window.
    pub(crate) duration_s: f64,
    pub(crate) published: u64,
    pub(crate) publishes_per_s: f64,
    /// Hubbub acks; NATS has none (0).
    pub(crate) acked: u64,
    pub(crate) echoes: u64,
    pub(crate) expected: u64,
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) out_of_order: u64,
    pub(crate) foreign: u64,
    /// Subscriber deliveries during the steady window, per second.
    pub(crate) deliveries_per_s: f64,
    pub(crate) latency: Latency,
    /// Publish → answer: Hubbub's `ack`, NATS's echo to the publisher.
    #[serde(default)]
    pub(crate) answer_latency: Latency,
    pub(crate) max_send_lag_us: u64,
    pub(crate) servers: Vec<Server>,
    pub(crate) server_cpu_s: f64,
    /// Server CPU (all nodes) per subscriber delivery in the steady window.
    pub(crate) server_cpu_us_per_delivery: f64,
    pub(crate) loadgen_cpu_s: f64,
    pub(crate) events: BTreeMap<String, u64>,
    pub(crate) idle: Option<Idle>,
}

impl Report {
    pub(crate) fn print_table(&self) {
        let t = format!("{:?}", self.target).to_lowercase();
        println!("== {} ({t}, {} nodes) ==", self.label, self.nodes);
        if let Some(idle) = &self.idle {
            println!("idle connections        {}", idle.connections);
            println!("server RSS before/after {} / {} KiB", idle.rss_before_kib, idle.rss_after_kib);
            println!("KiB per idle connection {:.1}", idle.kib_per_connection);
            return;
        }
        let mode = if self.offered_rate > 0 {
            format!("{} publishes/s offered", self.offered_rate)
        } else {
            format!("open loop, window {} per publisher", self.window)
        };
        let frames = if self.batched_frames { ", batched frames" } else { "" };
        println!(
            "connections {} ({} rooms x {} subscribers + {} publishers), {} B bodies, {mode}{frames}",
            self.connections, self.rooms, self.subscribers_per_room, self.publishers, self.payload_bytes
        );
        println!("setup {:.1} s, steady window {:.1} s", self.setup_s, self.duration_s);
        println!(
            "published   {:>10}  ({:.0}/s), acked {}, echoes {}",
            self.published, self.publishes_per_s, self.acked, self.echoes
        );
        println!("deliveries  {:>10}  ({:.0}/s in the window)", self.received, self.deliveries_per_s);
        println!(
            "expected {} lost {} duplicated {} out-of-order {} foreign {}",
            self.expected, self.lost, self.duplicated, self.out_of_order, self.foreign
        );
        let l = &self.latency;
        println!(
            "latency µs  p50 {} p90 {} p99 {} p99.9 {} max {} (mean {:.0}, n {}); max send lag {} µs",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us, l.count, self.max_send_lag_us
        );
        let a = &self.answer_latency;
        println!(
            "answer µs   p50 {} p90 {} p99 {} max {} (n {}; Hubbub: ack, NATS: echo)",
            a.p50_us, a.p90_us, a.p99_us, a.max_us, a.count
        );
        for s in &self.servers {
            println!("server pid {:>7}: {:.2} CPU s, RSS {} KiB", s.pid, s.cpu_s, s.rss_kib);
        }
        println!(
            "server CPU {:.2} s = {:.2} µs per delivery; load generator CPU {:.2} s",
            self.server_cpu_s, self.server_cpu_us_per_delivery, self.loadgen_cpu_s
        );
        if !self.events.is_empty() {
            println!("server errors and closes: {:?}", self.events);
        }
    }
}

/// Reads reports (JSON lines) and prints each label's targets side by side.
pub(crate) fn compare(files: &[PathBuf]) -> Result<(), String> {
    let mut by_label: BTreeMap<String, Vec<Report>> = BTreeMap::new();
    let mut order = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
            let r: Report = serde_json::from_str(line).map_err(|e| format!("{}: {e}", f.display()))?;
            if !by_label.contains_key(&r.label) {
                order.push(r.label.clone());
            }
            by_label.entry(r.label.clone()).or_default().push(r);
        }
    }
    for label in order {
        let reports = &by_label[&label];
        let get = |t: Target| reports.iter().rev().find(|r| r.target == t);
        let (Some(h), Some(n)) = (get(Target::Hubbub), get(Target::Nats)) else {
            println!("## {label}: only one target measured");
            continue;
        };
        println!("## {label}");
        println!("| metric | Hubbub | NATS | Hubbub / NATS |");
        println!("|---|---:|---:|---:|");
        let row = |name: &str, a: f64, b: f64, digits: usize| {
            let ratio = if b != 0.0 { format!("{:.2}", a / b) } else { "–".into() };
            println!("| {name} | {a:.digits$} | {b:.digits$} | {ratio} |");
        };
        if let (Some(hi), Some(ni)) = (&h.idle, &n.idle) {
            row("idle connections", hi.connections as f64, ni.connections as f64, 0);
            row("server RSS after, KiB", hi.rss_after_kib as f64, ni.rss_after_kib as f64, 0);
            row("KiB per idle connection", hi.kib_per_connection, ni.kib_per_connection, 1);
            println!();
            continue;
        }
        row("connections", h.connections as f64, n.connections as f64, 0);
        row("publishes/s achieved", h.publishes_per_s, n.publishes_per_s, 0);
        row("deliveries/s", h.deliveries_per_s, n.deliveries_per_s, 0);
        row("latency p50, µs", h.latency.p50_us as f64, n.latency.p50_us as f64, 0);
        row("latency p90, µs", h.latency.p90_us as f64, n.latency.p90_us as f64, 0);
        row("latency p99, µs", h.latency.p99_us as f64, n.latency.p99_us as f64, 0);
        row("latency p99.9, µs", h.latency.p999_us as f64, n.latency.p999_us as f64, 0);
        row("latency max, µs", h.latency.max_us as f64, n.latency.max_us as f64, 0);
        row("answer p50, µs (ack / echo)", h.answer_latency.p50_us as f64, n.answer_latency.p50_us as f64, 0);
        row("answer p99, µs (ack / echo)", h.answer_latency.p99_us as f64, n.answer_latency.p99_us as f64, 0);
        row("server CPU s (all nodes)", h.server_cpu_s, n.server_cpu_s, 2);
        row("server CPU µs per delivery", h.server_cpu_us_per_delivery, n.server_cpu_us_per_delivery, 2);
        let rss = |r: &Report| r.servers.iter().map(|s| s.rss_kib).sum::<u64>() as f64 / 1024.0;
        row("server RSS, MiB (all nodes)", rss(h), rss(n), 1);
        row("load generator CPU s", h.loadgen_cpu_s, n.loadgen_cpu_s, 2);
        row("expected deliveries", h.expected as f64, n.expected as f64, 0);
        row("lost", h.lost as f64, n.lost as f64, 0);
        row("duplicated", h.duplicated as f64, n.duplicated as f64, 0);
        row("out of order", h.out_of_order as f64, n.out_of_order as f64, 0);
        let events = |r: &Report| if r.events.is_empty() { "none".to_owned() } else { format!("{:?}", r.events) };
        println!("| errors/closes | {} | {} | |", events(h), events(n));
        println!();
    }
    Ok(())
}
