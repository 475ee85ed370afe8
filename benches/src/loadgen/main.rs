//! `hubbub-loadgen`: a load generator for Hubbub and, for comparison, NATS
//! (over its WebSocket listener). See BENCHMARKS.md for the workloads.
//!
//! R rooms × S subscribers (each subscriber in one room) and P publishers,
//! spread round-robin over the given URLs. Publisher p publishes only to
//! rooms it joined itself (Hubbub lets a connection send only to rooms it
//! joined; on NATS the publisher subscribes likewise, so both targets echo
//! each message to its publisher): rooms r with r mod P = p (room p mod R
//! when P > R), round-robin. Either at a fixed total rate, or open loop
//! with at most W unanswered publishes per publisher (answer: Hubbub's
//! `ack`, NATS's echo).
//!
//! Every body carries (room, publisher, seq, send time) so each delivery is
//! matched ([`stats`]). Server CPU and RSS come from `/proc` over the steady
//! window. Everything is bounded: connection count, duration, connect
//! timeouts, drain time, and the number of messages per publisher.

mod report;
mod stats;
mod wire;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::report::{Idle, Latency, Report, Server};
use crate::stats::{ProcSample, Stats, TICKS_PER_SEC};
use crate::wire::{Decoder, Endpoint, Event, Stamp, Target};

/// Most connections one run may open.
const MAX_CONNECTIONS: u64 = 100_000;
/// Longest steady window.
const MAX_DURATION_S: f64 = 600.0;
/// Most messages all publishers together may send in one run (the match
/// table holds one 16-bit counter per message).
const MAX_MESSAGES: u64 = 20_000_000;
/// Connections per source address before the next 127.0.0.x is used. Each
/// address has ~28k ephemeral ports, and a previous run's connections hold
/// theirs for a minute in TIME_WAIT.
const PER_SOURCE_IP: u64 = 10_000;

#[derive(Parser, Debug)]
#[command(name = "hubbub-loadgen", about = "Load generator for Hubbub and NATS (WebSocket), see BENCHMARKS.md")]
struct Args {
    /// Protocol of the servers.
    #[arg(long, value_enum, default_value = "hubbub")]
    target: Target,
    /// Comma-separated WebSocket URLs (loopback only), used round-robin.
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    urls: String,
    #[arg(long, default_value_t = 100)]
    rooms: u64,
    /// Subscribers per room.
    #[arg(long, default_value_t = 10)]
    subscribers: u64,
    #[arg(long, default_value_t = 10)]
    publishers: u64,
    /// Total publishes per second; 0 = open loop with --window per publisher.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Unanswered publishes per publisher in open-loop mode.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Seconds of steady load (after set-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Print only the JSON line on stdout (no table).
    #[arg(long)]
    json: bool,
    /// Comma-separated server PIDs whose CPU and RSS are reported.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Connect R×S subscribers (no publishers), report server RSS per
    /// connection, exit.
    #[arg(long)]
    idle_only: bool,
    /// A name for this run in reports (`--compare` pairs runs by it).
    #[arg(long, default_value = "run")]
    label: String,
    /// Prefix of room names (Hubbub) and subjects (NATS).
    #[arg(long, default_value = "bench")]
    room_prefix: String,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Timeout of each connect, upgrade and set-up step, seconds.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
    /// Source addresses to spread connections over (0: one per 10,000
    /// connections). With one, the kernel picks the source; with more,
    /// connection i binds 127.0.0.(first + i mod n).
    #[arg(long, default_value_t = 0)]
    source_ips: u64,
    /// Last octet of the first source address when there are several.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=250))]
    first_source_ip: u8,
    /// Seconds to wait after publishing stops for deliveries still in flight.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Seconds between set-up and the steady window (subscriptions settle).
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Hubbub: one message per frame (`hello` without `batch`), as a client
    /// that does not read batched frames gets them.
    #[arg(long)]
    single_frames: bool,
    /// Print the reports in these JSON files side by side, then exit.
    #[arg(long, num_args = 1.., value_name = "JSON")]
    compare: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.compare.is_empty() {
        return match report::compare(&args.compare) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hubbub-loadgen: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubbub-loadgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(args));
    // Connections are dropped with the runtime; do not wait for their tasks.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubbub-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the connection tasks share.
struct Run {
    target: Target,
    stats: Stats,
    rooms: Vec<String>,
    stop: watch::Receiver<bool>,
    timeout: Duration,
    connect_gate: Semaphore,
    ready: AtomicUsize,
    failed: AtomicUsize,
    first_error: std::sync::Mutex<Option<String>>,
    /// First source address's last octet, and how many there are.
    sources: (u8, u64),
    /// Hubbub: ask for batched frames (`hello.batch`).
    batch: bool,
    /// Set when the steady window ends: publishers stop, readers go on.
    publishing_stopped: std::sync::atomic::AtomicBool,
}

impl Run {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().expect("error lock");
        if first.is_none() {
            *first = Some(what);
        }
    }

    /// The source address of connection `i`; `None`: the kernel's choice
    /// (a port unique per destination, so a previous run's TIME_WAIT sockets
    /// towards other ports do not get in the way).
    fn source(&self, i: u64) -> Option<IpAddr> {
        let (first, ips) = self.sources;
        (ips > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, first.saturating_add((i % ips) as u8))))
    }

    /// Opens and sets up one connection under the connect gate.
    async fn connect(
        &self,
        ep: &Endpoint,
        src: Option<IpAddr>,
        user: &str,
        rooms: &[String],
    ) -> Result<(wire::Ws, Decoder), String> {
        let _permit = self.connect_gate.acquire().await.map_err(|_| "closed".to_owned())?;
        let mut ws = wire::open(ep, src, self.timeout).await?;
        let mut dec = Decoder::new(self.target);
        wire::setup(&mut ws, &mut dec, self.target, user, rooms, self.batch, self.timeout).await?;
        Ok((ws, dec))
    }

    /// Counts a server error or close event.
    fn server_event(&self, ev: &Event<'_>) {
        if let Event::Error(code, _) = ev {
            self.stats.event(format!("error:{code}"));
        }
    }
}

fn close_kind(msg: &Message) -> Option<String> {
    match msg {
        Message::Close(Some(c)) => Some(format!("close:{}", u16::from(c.code))),
        Message::Close(None) => Some("close:none".into()),
        _ => None,
    }
}

/// A subscriber: reads until stopped, matching every delivery.
async fn subscriber(run: Arc<Run>, conn: usize, room: usize, publishers: usize, ep: Endpoint, src: Option<IpAddr>) {
    let user = format!("s{conn}");
    let rooms = [run.rooms[room].clone()];
    let (mut ws, mut dec) = match run.connect(&ep, src, &user, &rooms).await {
        Ok(c) => c,
        Err(e) => return run.fail(format!("subscriber {conn} at {}: {e}", ep.url)),
    };
    run.ready.fetch_add(1, Relaxed);
    let mut last = vec![None::<u64>; publishers];
    let mut stop = run.stop.clone();
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            m = ws.next() => m,
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => return run.stats.event(format!("read_error:{e}")),
            None => return run.stats.event("ended".into()),
        };
        if let Some(kind) = close_kind(&msg) {
            return run.stats.event(kind);
        }
        let data = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => &b[..],
            _ => continue,
        };
        let mut pings = 0;
        let now_ns = run.stats.now_ns();
        dec.feed(data, &mut |ev| match ev {
            Event::Delivery(body) => match wire::read_body(body) {
                Some(s)
                    if s.room as usize == room
                        && run.stats.delivered(conn, s.publisher as usize, s.seq, s.sent_ns, now_ns) =>
                {
                    let l = &mut last[s.publisher as usize];
                    if l.is_some_and(|l| s.seq < l) {
                        run.stats.out_of_order.fetch_add(1, Relaxed);
                    }
                    *l = Some(l.map_or(s.seq, |l| l.max(s.seq)));
                }
                _ => {
                    run.stats.foreign.fetch_add(1, Relaxed);
                }
            },
            Event::Ping => pings += 1,
            ev => run.server_event(&ev),
        });
        for _ in 0..pings {
            if ws.send(wire::pong()).await.is_err() {
                return;
            }
        }
    }
}

/// How a publisher paces itself.
#[derive(Clone, Copy)]
enum Pace {
    /// Publishes per second, for this publisher.
    Rate(f64),
    /// Unanswered publishes allowed.
    Window(usize),
}

/// A publisher: joins its rooms, then publishes until stopped.
#[allow(clippy::too_many_arguments)]
async fn publisher(
    run: Arc<Run>,
    p: usize,
    my_rooms: Vec<usize>,
    pace: Pace,
    payload: usize,
    ep: Endpoint,
    src: Option<IpAddr>,
    go: watch::Receiver<bool>,
    sent_out: Arc<Vec<std::sync::atomic::AtomicU64>>,
) {
    let names: Vec<String> = my_rooms.iter().map(|r| run.rooms[*r].clone()).collect();
    let (ws, dec) = match run.connect(&ep, src, &format!("p{p}"), &names).await {
        Ok(c) => c,
        Err(e) => return run.fail(format!("publisher {p} at {}: {e}", ep.url)),
    };
    run.ready.fetch_add(1, Relaxed);
    let (sink, stream) = ws.split();
    let sink = Arc::new(Mutex::new(sink));
    let window = Arc::new(Semaphore::new(match pace {
        Pace::Window(w) => w,
        Pace::Rate(_) => Semaphore::MAX_PERMITS,
    }));
    tokio::spawn(publisher_reader(run.clone(), stream, dec, sink.clone(), window.clone()));

    let mut go = go;
    if go.wait_for(|g| *g).await.is_err() {
        return;
    }
    let begun = tokio::time::Instant::now();
    let cap = run.stats.cap() as u64;
    let mut seq: u64 = 0;
    let mut body = String::with_capacity(payload + 32);
    while !run.publishing_stopped.load(Relaxed) && seq < cap {
        // How many to send now.
        let batch = match pace {
            Pace::Rate(rate) => {
                let due = (begun.elapsed().as_secs_f64() * rate) as u64;
                if due <= seq {
                    let next = begun + Duration::from_secs_f64((seq + 1) as f64 / rate);
                    tokio::time::sleep_until(next).await;
                    continue;
                }
                let lag = begun.elapsed().as_secs_f64() - seq as f64 / rate;
                run.stats.max_send_lag_us.fetch_max((lag * 1e6) as u64, Relaxed);
                (due - seq).min(64)
            }
            Pace::Window(_) => {
                match tokio::time::timeout(Duration::from_millis(100), window.acquire()).await {
                    Ok(Ok(p)) => p.forget(),
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
                let mut n = 1;
                while n < 64 {
                    match window.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                n
            }
        };
        let batch = batch.min(cap - seq);
        let mut sink = sink.lock().await;
        for _ in 0..batch {
            let room = my_rooms[(seq % my_rooms.len() as u64) as usize];
            let stamp = Stamp { room: room as u32, publisher: p as u32, seq, sent_ns: run.stats.now_ns() };
            wire::write_body(&mut body, stamp, payload);
            if sink.feed(wire::publish(run.target, &run.rooms[room], &body, stamp)).await.is_err() {
                run.stats.event("publisher_write_error".into());
                return;
            }
            seq += 1;
            sent_out[p].store(seq, Relaxed);
            run.stats.published.fetch_add(1, Relaxed);
        }
        if sink.flush().await.is_err() {
            run.stats.event("publisher_write_error".into());
            return;
        }
    }
}

type Sink = futures_util::stream::SplitSink<wire::Ws, Message>;

/// A publisher's read side: acks (Hubbub), echoes (both), pings (NATS).
async fn publisher_reader(
    run: Arc<Run>,
    mut stream: futures_util::stream::SplitStream<wire::Ws>,
    mut dec: Decoder,
    sink: Arc<Mutex<Sink>>,
    window: Arc<Semaphore>,
) {
    let mut stop = run.stop.clone();
    let nats = run.target == Target::Nats;
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            m = stream.next() => m,
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => return run.stats.event(format!("publisher_read_error:{e}")),
            None => return run.stats.event("publisher_ended".into()),
        };
        if let Some(kind) = close_kind(&msg) {
            return run.stats.event(format!("publisher_{kind}"));
        }
        let data = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => &b[..],
            _ => continue,
        };
        let (mut answered, mut pings) = (0, 0);
        dec.feed(data, &mut |ev| match ev {
            Event::Ack(sent_ns) => {
                run.stats.acked.fetch_add(1, Relaxed);
                answered += 1;
                if let Some(t) = sent_ns {
                    run.stats.answered(t);
                }
            }
            Event::Delivery(body) => {
                run.stats.echoes.fetch_add(1, Relaxed);
                if nats {
                    answered += 1;
                    if let Some(s) = wire::read_body(body) {
                        run.stats.answered(s.sent_ns);
                    }
                }
            }
            Event::Ping => pings += 1,
            Event::Error(code, has_id) => {
                run.stats.event(format!("error:{code}"));
                if has_id {
                    answered += 1;
                }
            }
            _ => {}
        });
        window.add_permits(answered.min(Semaphore::MAX_PERMITS - window.available_permits()));
        for _ in 0..pings {
            if sink.lock().await.send(wire::pong()).await.is_err() {
                return;
            }
        }
    }
}

fn cpu_s(before: &[ProcSample], after: &[ProcSample]) -> Vec<f64> {
    before.iter().zip(after).map(|(b, a)| a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / TICKS_PER_SEC).collect()
}

async fn run(args: Args) -> Result<(), String> {
    if args.rooms == 0 || args.subscribers == 0 {
        return Err("--rooms and --subscribers must be at least 1".into());
    }
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION_S) {
        return Err(format!("--duration must be in (0, {MAX_DURATION_S}] seconds"));
    }
    let publishers = if args.idle_only { 0 } else { args.publishers.max(1) };
    let subs = args.rooms * args.subscribers;
    let total = subs + publishers;
    if total > MAX_CONNECTIONS {
        return Err(format!("{total} connections is over the cap of {MAX_CONNECTIONS}"));
    }
    if args.rate == 0 && args.window == 0 {
        return Err("open loop (--rate 0) needs --window of at least 1".into());
    }
    let eps = wire::resolve(&args.urls).await?;
    let ips = if args.source_ips > 0 { args.source_ips } else { total.div_ceil(PER_SOURCE_IP).max(1) }
        .min(255 - u64::from(args.first_source_ip));
    let per_publisher_cap = if publishers == 0 {
        0
    } else if args.rate > 0 {
        // Twice the schedule, so a late clock never runs out of table.
        ((args.rate as f64 * args.duration * 2.0) as u64 / publishers + 1_000).min(MAX_MESSAGES / publishers)
    } else {
        MAX_MESSAGES / publishers
    } as usize;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(false);
    let run = Arc::new(Run {
        target: args.target,
        stats: Stats::new(publishers as usize, per_publisher_cap),
        rooms: (0..args.rooms as usize).map(|i| wire::room_name(args.target, &args.room_prefix, i)).collect(),
        stop: stop_rx,
        timeout: Duration::from_secs(args.connect_timeout.max(1)),
        connect_gate: Semaphore::new(args.connect_concurrency.max(1)),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: std::sync::Mutex::new(None),
        publishing_stopped: std::sync::atomic::AtomicBool::new(false),
        sources: (args.first_source_ip, ips),
        batch: !args.single_frames,
    });

    let idle_before = sample_servers(&args.server_pids)?;
    let setup_began = std::time::Instant::now();
    for i in 0..subs {
        let ep = eps[(i % eps.len() as u64) as usize].clone();
        let room = (i % args.rooms) as usize;
        let src = run.source(i);
        tokio::spawn(subscriber(run.clone(), i as usize, room, publishers as usize, ep, src));
    }
    let sent = Arc::new((0..publishers).map(|_| std::sync::atomic::AtomicU64::new(0)).collect::<Vec<_>>());
    let pace = if args.rate > 0 {
        Pace::Rate(args.rate as f64 / publishers.max(1) as f64)
    } else {
        Pace::Window(args.window as usize)
    };
    for p in 0..publishers {
        let mine: Vec<usize> = if publishers <= args.rooms {
            (0..args.rooms).filter(|r| r % publishers == p).map(|r| r as usize).collect()
        } else {
            vec![(p % args.rooms) as usize]
        };
        let ep = eps[(p % eps.len() as u64) as usize].clone();
        let src = run.source(subs + p);
        let task = publisher(run.clone(), p as usize, mine, pace, args.payload, ep, src, go_rx.clone(), sent.clone());
        tokio::spawn(task);
    }

    // Set-up: every connection ready, or a failure, or the deadline.
    let setup_deadline = Duration::from_secs(60) + Duration::from_millis(total * 5);
    let total = total as usize;
    let mut last_print = std::time::Instant::now();
    loop {
        let (ready, failed) = (run.ready.load(Relaxed), run.failed.load(Relaxed));
        if ready + failed >= total || setup_began.elapsed() > setup_deadline {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "[setup {:>5.1}s] connections ready {ready}/{total}, failed {failed}",
                setup_began.elapsed().as_secs_f64()
            );
            last_print = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_s = setup_began.elapsed().as_secs_f64();
    let (ready, failed) = (run.ready.load(Relaxed), run.failed.load(Relaxed));
    if ready < total {
        let first = run.first_error.lock().expect("error lock").clone().unwrap_or_else(|| "set-up timed out".into());
        let _ = stop_tx.send(true);
        return Err(format!(
            "only {ready} of {total} connections were set up ({failed} failed); first failure: {first}"
        ));
    }
    eprintln!("[setup {setup_s:>5.1}s] {total} connections ready");

    let mut report = Report {
        label: args.label.clone(),
        target: args.target,
        nodes: eps.len(),
        connections: total as u64,
        rooms: args.rooms,
        subscribers_per_room: args.subscribers,
        publishers,
        payload_bytes: args.payload as u64,
        batched_frames: args.target == Target::Hubbub && !args.single_frames,
        offered_rate: args.rate,
        window: if args.rate == 0 { args.window } else { 0 },
        setup_s,
        duration_s: 0.0,
        published: 0,
        publishes_per_s: 0.0,
        acked: 0,
        echoes: 0,
        expected: 0,
        received: 0,
        lost: 0,
        duplicated: 0,
        out_of_order: 0,
        foreign: 0,
        deliveries_per_s: 0.0,
        latency: Latency::default(),
        answer_latency: Latency::default(),
        max_send_lag_us: 0,
        servers: Vec::new(),
        server_cpu_s: 0.0,
        server_cpu_us_per_delivery: 0.0,
        loadgen_cpu_s: 0.0,
        events: Default::default(),
        idle: None,
    };

    if args.idle_only {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = sample_servers(&args.server_pids)?;
        let before_kib: u64 = idle_before.iter().map(|s| s.rss_kib).sum();
        let after_kib: u64 = after.iter().map(|s| s.rss_kib).sum();
        report.idle = Some(Idle {
            connections: total as u64,
            rss_before_kib: before_kib,
            rss_after_kib: after_kib,
            kib_per_connection: after_kib.saturating_sub(before_kib) as f64 / total as f64,
        });
        report.servers = args
            .server_pids
            .iter()
            .zip(&after)
            .map(|(pid, s)| Server { pid: *pid, cpu_s: 0.0, rss_kib: s.rss_kib })
            .collect();
        report.events = run.stats.events.lock().expect("events lock").clone();
        let _ = stop_tx.send(true);
        return emit(&report, args.json);
    }

    tokio::time::sleep(Duration::from_secs_f64(args.settle.clamp(0.0, 30.0))).await;
    let servers_before = sample_servers(&args.server_pids)?;
    let me_before = stats::sample("self")?;
    let deliveries_before = run.stats.deliveries.load(Relaxed);
    let began = std::time::Instant::now();
    let _ = go_tx.send(true);
    let window = Duration::from_secs_f64(args.duration);
    let mut prev = (0u64, 0u64, std::time::Instant::now());
    while began.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1).min(window.saturating_sub(began.elapsed()))).await;
        let now = std::time::Instant::now();
        let (p, d) = (run.stats.published.load(Relaxed), run.stats.deliveries.load(Relaxed));
        let dt = now.duration_since(prev.2).as_secs_f64().max(1e-6);
        eprintln!(
            "[{:>5.1}s] published {p} ({:.0}/s), acked {}, deliveries {d} ({:.0}/s), events {}",
            began.elapsed().as_secs_f64(),
            (p - prev.0) as f64 / dt,
            run.stats.acked.load(Relaxed),
            (d - prev.1) as f64 / dt,
            run.stats.events.lock().expect("events lock").values().sum::<u64>(),
        );
        prev = (p, d, now);
    }
    // The steady window ends: publishers stop, subscribers keep reading
    // while the last deliveries drain.
    run.publishing_stopped.store(true, Relaxed);
    let duration_s = began.elapsed().as_secs_f64();
    let deliveries_in_window = run.stats.deliveries.load(Relaxed) - deliveries_before;
    let servers_after = sample_servers(&args.server_pids)?;
    let me_after = stats::sample("self")?;
    let sent_now = || sent.iter().map(|s| s.load(Relaxed)).collect::<Vec<u64>>();
    let fanout = args.subscribers;
    let drain_began = std::time::Instant::now();
    let drain = Duration::from_secs_f64(args.drain.clamp(0.0, 60.0));
    loop {
        let (expected, received, ..) = run.stats.matching(&sent_now(), fanout);
        let published = run.stats.published.load(Relaxed);
        let answered = match args.target {
            Target::Hubbub => run.stats.acked.load(Relaxed),
            Target::Nats => published,
        };
        if (received >= expected && answered >= published) || drain_began.elapsed() >= drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let sent = sent_now();
    let (expected, received, lost, duplicated) = run.stats.matching(&sent, fanout);
    let published: u64 = sent.iter().sum();
    let h = run.stats.latency();
    let cpu = cpu_s(&servers_before, &servers_after);
    let server_cpu_s: f64 = cpu.iter().sum();
    report.duration_s = duration_s;
    report.published = published;
    report.publishes_per_s = published as f64 / duration_s;
    report.acked = run.stats.acked.load(Relaxed);
    report.echoes = run.stats.echoes.load(Relaxed);
    report.expected = expected;
    report.received = received;
    report.lost = lost;
    report.duplicated = duplicated;
    report.out_of_order = run.stats.out_of_order.load(Relaxed);
    report.foreign = run.stats.foreign.load(Relaxed);
    report.deliveries_per_s = deliveries_in_window as f64 / duration_s;
    report.latency = latency_of(&h);
    report.answer_latency = latency_of(&run.stats.answer_latency());
    report.max_send_lag_us = run.stats.max_send_lag_us.load(Relaxed);
    report.servers = args
        .server_pids
        .iter()
        .zip(cpu.iter().zip(&servers_after))
        .map(|(pid, (cpu_s, s))| Server { pid: *pid, cpu_s: *cpu_s, rss_kib: s.rss_kib })
        .collect();
    report.server_cpu_s = server_cpu_s;
    report.server_cpu_us_per_delivery =
        if deliveries_in_window > 0 { server_cpu_s * 1e6 / deliveries_in_window as f64 } else { 0.0 };
    report.loadgen_cpu_s = me_after.cpu_ticks.saturating_sub(me_before.cpu_ticks) as f64 / TICKS_PER_SEC;
    report.events = run.stats.events.lock().expect("events lock").clone();
    emit(&report, args.json)
}

fn latency_of(h: &hdrhistogram::Histogram<u64>) -> Latency {
    Latency {
        count: h.len(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        mean_us: h.mean(),
    }
}

fn sample_servers(pids: &[u32]) -> Result<Vec<ProcSample>, String> {
    stats::sample_all(pids)
}

fn emit(report: &Report, json_only: bool) -> Result<(), String> {
    if !json_only {
        report.print_table();
    }
    println!("{}", serde_json::to_string(report).map_err(|e| e.to_string())?);
    Ok(())
}
