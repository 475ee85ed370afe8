//! The chaos load: many `ResilientClient`s as tokio tasks in one runtime,
//! each joined to one or two rooms and publishing at a steady rate, each
//! recording its history ([`Recorder`]); the test thread watches shared
//! counters, and [`Load::finish`] stops publishing, lets every client catch
//! up with the last acknowledged seq of its rooms and merges the histories.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hubbub_client::{Audience, ResilientClient, ResilientEvent, ResilientOpts, ServerMsg};
use hubbub_testkit::chaos::{History, Recorder};
use hubbub_testkit::{Node, NodeApi, wait_until};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Debug API polling interval.
pub(crate) const POLL: Duration = Duration::from_millis(25);
/// How long all clients may take to connect and join.
const SETUP: Duration = Duration::from_secs(90);
/// After publishing stops: how long clients may wait for their last answers,
/// then for the last acknowledged seqs of their rooms.
const QUIET: Duration = Duration::from_secs(20);
const CATCH_UP: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A multi-threaded runtime for the clients; the test thread stays
/// synchronous and drives the blocking testkit.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

/// The client WebSocket URL of `node`.
pub(crate) fn ws_url(node: &Node) -> String {
    format!("ws://{}/ws", node.http_addr())
}

/// What load to put on the cluster.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// Client `i` connects first to `urls[i % urls.len()]`, and knows the
    /// others as fallbacks.
    pub(crate) urls: Vec<String>,
    pub(crate) clients: usize,
    pub(crate) rooms: Vec<String>,
    /// Client `i` joins `rooms[i % R]`, and also another room when
    /// `i % second_room_every == 0` (0: never).
    pub(crate) second_room_every: usize,
    /// Publishes per second over all clients.
    pub(crate) rate: f64,
    /// User name prefix.
    pub(crate) prefix: String,
}

impl Spec {
    fn rooms_of(&self, i: usize) -> Vec<String> {
        let n = self.rooms.len();
        let mut rooms = vec![self.rooms[i % n].clone()];
        if self.second_room_every > 0 && i.is_multiple_of(self.second_room_every) && n > 1 {
            let other = (i / self.second_room_every * 7 + n / 2) % n;
            let other = if other == i % n { (other + 1) % n } else { other };
            rooms.push(self.rooms[other].clone());
        }
        rooms
    }
}

/// One reconnect, as the test thread sees it.
#[derive(Clone, Debug)]
pub(crate) struct Move {
    pub(crate) client: usize,
    pub(crate) at: Instant,
    pub(crate) to: String,
}

#[derive(Clone, Debug)]
enum Phase {
    Run,
    /// Stop publishing; wait for the answers of what was sent.
    Stop,
    /// Read until every room reached its seq, then close.
    CatchUp(Arc<BTreeMap<String, u64>>),
}

/// What the client tasks and the test thread share.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) acked: AtomicU64,
    pub(crate) delivered: AtomicU64,
    ready: AtomicUsize,
    quiet: AtomicUsize,
    urls: Mutex<Vec<String>>,
    moves: Mutex<Vec<Move>>,
    max_acked: Mutex<HashMap<String, u64>>,
    errors: Mutex<Vec<String>>,
}

/// The running load.
pub(crate) struct Load {
    pub(crate) spec: Spec,
    pub(crate) shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    tasks: Vec<JoinHandle<Recorder>>,
}

impl Load {
    /// Starts the clients (spread over about two seconds) and waits until
    /// every one has joined its rooms.
    pub(crate) fn start(rt: &tokio::runtime::Runtime, spec: Spec) -> Load {
        let shared = Arc::new(Shared::default());
        *lock(&shared.urls) = vec![String::new(); spec.clients];
        let (phase, phase_rx) = watch::channel(Phase::Run);
        let interval = Duration::from_secs_f64(spec.clients as f64 / spec.rate);
        let tasks = (0..spec.clients)
            .map(|i| {
                let mut urls = spec.urls.clone();
                urls.rotate_left(i % spec.urls.len());
                let task = client(
                    i,
                    format!("{}{i}", spec.prefix),
                    urls,
                    spec.rooms_of(i),
                    interval,
                    Duration::from_millis((i as u64 * 4) % 2000),
                    Arc::clone(&shared),
                    phase_rx.clone(),
                );
                rt.spawn(task)
            })
            .collect();
        let load = Load { spec, shared, phase, tasks };
        let started = Instant::now();
        wait_until(started + SETUP, Duration::from_millis(100), || {
            load.check_errors();
            let ready = load.shared.ready.load(Ordering::Relaxed);
            if ready == load.spec.clients {
                Ok(())
            } else {
                Err(format!("{ready} of {} clients joined", load.spec.clients))
            }
        })
        .unwrap_or_else(|e| panic!("the clients did not all connect and join: {e}"));
        println!("load: {} clients joined their rooms in {:.1}s", load.spec.clients, started.elapsed().as_secs_f64());
        load
    }

    /// Panics with the clients' errors, if any.
    pub(crate) fn check_errors(&self) {
        let errors = lock(&self.shared.errors);
        assert!(
            errors.is_empty(),
            "{} clients failed; first ones:\n{}",
            errors.len(),
            errors[..errors.len().min(10)].join("\n")
        );
    }

    pub(crate) fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` acks beyond the current count arrive within
    /// `within`; returns how long it took.
    pub(crate) fn wait_acks(&self, more: u64, within: Duration, what: &str) -> Duration {
        let start = Instant::now();
        let target = self.acked() + more;
        wait_until(start + within, POLL, || {
            self.check_errors();
            let acked = self.acked();
            if acked >= target { Ok(()) } else { Err(format!("{acked} acks, waiting for {target}")) }
        })
        .unwrap_or_else(|e| panic!("traffic did not flow ({what}): {e}"));
        start.elapsed()
    }

    /// The clients currently connected to `url`.
    pub(crate) fn clients_on(&self, url: &str) -> Vec<usize> {
        lock(&self.shared.urls).iter().enumerate().filter(|(_, u)| *u == url).map(|(i, _)| i).collect()
    }

    /// How many clients are connected to each URL.
    pub(crate) fn spread(&self) -> BTreeMap<String, usize> {
        let mut spread = BTreeMap::new();
        for url in lock(&self.shared.urls).iter() {
            *spread.entry(url.clone()).or_default() += 1;
        }
        spread
    }

    /// Every reconnect at or after `since`.
    pub(crate) fn moves_since(&self, since: Instant) -> Vec<Move> {
        lock(&self.shared.moves).iter().filter(|m| m.at >= since).cloned().collect()
    }

    /// Stops publishing, waits for the answers to what was sent, lets every
    /// client read up to the last acknowledged seq of each of its rooms, and
    /// returns the merged history.
    pub(crate) fn finish(self, rt: &tokio::runtime::Runtime) -> History {
        self.check_errors();
        self.phase.send_replace(Phase::Stop);
        let quiet = wait_until(Instant::now() + QUIET, Duration::from_millis(100), || {
            let quiet = self.shared.quiet.load(Ordering::Relaxed);
            if quiet == self.spec.clients {
                Ok(())
            } else {
                Err(format!("{quiet} of {} clients have no open sends", self.spec.clients))
            }
        });
        if let Err(e) = quiet {
            println!("load: not every send was answered: {e}");
        }
        let targets = lock(&self.shared.max_acked).iter().map(|(r, s)| (r.clone(), *s)).collect();
        self.phase.send_replace(Phase::CatchUp(Arc::new(targets)));
        let recorders: Vec<Recorder> = rt.block_on(async {
            let mut out = Vec::with_capacity(self.tasks.len());
            for task in self.tasks {
                match tokio::time::timeout(CATCH_UP + Duration::from_secs(10), task).await {
                    Ok(Ok(rec)) => out.push(rec),
                    Ok(Err(e)) => panic!("a client task failed: {e}"),
                    Err(_) => panic!("a client task did not end after catching up"),
                }
            }
            out
        });
        let errors = lock(&self.shared.errors);
        assert!(errors.is_empty(), "clients failed:\n{}", errors[..errors.len().min(10)].join("\n"));
        History::merge(recorders)
    }
}

/// One client: connect, join, publish until told to stop, record all.
#[allow(clippy::too_many_arguments)]
async fn client(
    i: usize,
    user: String,
    urls: Vec<String>,
    rooms: Vec<String>,
    interval: Duration,
    offset: Duration,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
) -> Recorder {
    let mut rec = Recorder::new(&user);
    tokio::time::sleep(offset).await;
    let fail = |e: String| lock(&shared.errors).push(format!("{user}: {e}"));
    let opts = ResilientOpts { seed: Some(i as u64 + 1), ..ResilientOpts::default() };
    let mut c = match ResilientClient::connect(urls, &user, opts).await {
        Ok(c) => c,
        Err(e) => {
            fail(format!("cannot connect: {e}"));
            return rec;
        }
    };
    let mut url = c.url().unwrap_or_default().to_owned();
    lock(&shared.urls)[i] = url.clone();
    for room in &rooms {
        match c.join(room).await {
            Ok(seq) => rec.joined(room, seq),
            Err(e) => {
                fail(format!("cannot join {room}: {e}"));
                return rec;
            }
        }
    }
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let mut next_send = Instant::now() + interval.mul_f64((i % 97) as f64 / 97.0);
    let mut sent = 0usize;
    let mut quiet = false;
    let catch_up_deadline = loop {
        let now = Instant::now();
        let current = phase.borrow().clone();
        let wake = match current {
            Phase::Run => {
                if now >= next_send {
                    let room = &rooms[sent % rooms.len()];
                    let id = c.send(room, &format!("{user} says {sent}")).await;
                    rec.sent(room, &id);
                    sent += 1;
                    next_send = (next_send + interval).max(now);
                    continue;
                }
                next_send
            }
            Phase::Stop => {
                if !quiet && c.pending() == 0 {
                    quiet = true;
                    shared.quiet.fetch_add(1, Ordering::Relaxed);
                }
                now + Duration::from_millis(100)
            }
            Phase::CatchUp(_) => break Instant::now() + CATCH_UP,
        };
        // Not raced against the phase (a cancelled read could drop frames
        // half sent): short waits notice a new phase soon enough.
        let wait = wake.saturating_duration_since(now).min(Duration::from_millis(250));
        if let Some(ev) = c.next_event_within(wait).await
            && !handle(ev, i, &mut url, &mut rec, &shared)
        {
            return rec;
        }
    };
    let Phase::CatchUp(targets) = phase.borrow().clone() else { unreachable!("the phase only moves forward") };
    loop {
        let behind: Vec<&String> =
            rooms.iter().filter(|r| c.last_seq(r).unwrap_or(0) < targets.get(*r).copied().unwrap_or(0)).collect();
        if behind.is_empty() {
            break;
        }
        let now = Instant::now();
        if now >= catch_up_deadline {
            // The checker reports what is missing.
            break;
        }
        let wait = (catch_up_deadline - now).min(Duration::from_millis(200));
        if let Some(ev) = c.next_event_within(wait).await
            && !handle(ev, i, &mut url, &mut rec, &shared)
        {
            return rec;
        }
    }
    c.close().await;
    rec
}

/// Records one event; `false` when the client is closed.
fn handle(ev: ResilientEvent, i: usize, url: &mut String, rec: &mut Recorder, shared: &Shared) -> bool {
    match ev {
        ResilientEvent::Message(ServerMsg::Message {
            kind: Audience::Room,
            room: Some(room),
            seq: Some(seq),
            from,
            id,
            ..
        }) => {
            rec.delivered(&room, seq, &id, &from);
            shared.delivered.fetch_add(1, Ordering::Relaxed);
        }
        ResilientEvent::Message(_) => {}
        ResilientEvent::Acked { id, room: Some(room), seq: Some(seq) } => {
            rec.acked(&room, &id, seq, url);
            shared.acked.fetch_add(1, Ordering::Relaxed);
            let mut max = lock(&shared.max_acked);
            let m = max.entry(room).or_default();
            *m = (*m).max(seq);
        }
        ResilientEvent::Acked { .. } => {}
        ResilientEvent::Refused { id, code, .. } => rec.refused(&id, code.as_str()),
        ResilientEvent::Reconnected { url: to, after, .. } => {
            rec.reconnected(url, &to, after);
            lock(&shared.moves).push(Move { client: i, at: Instant::now(), to: to.clone() });
            lock(&shared.urls)[i] = to.clone();
            *url = to;
        }
        ResilientEvent::Truncated { room, from_seq } => rec.truncated(&room, from_seq),
        ResilientEvent::Closed => {
            lock(&shared.errors).push(format!("{}: the client closed (gave up)", rec.client()));
            return false;
        }
    }
    true
}

/// A counter of the `chat` object of `GET /debug/node`.
pub(crate) fn chat_counter(api: &NodeApi, name: &str) -> Result<u64, String> {
    let node: serde_json::Value = api.get_json("/debug/node")?;
    node["chat"][name].as_u64().ok_or_else(|| format!("/debug/node has no integer chat.{name}: {}", node["chat"]))
}

/// Waits until every node of `apis` sees `name` down (or gone); returns how
/// long that took from `since`.
pub(crate) fn wait_detected(apis: &[NodeApi], name: &str, since: Instant, within: Duration) -> Duration {
    wait_until(since + within, POLL, || {
        for api in apis {
            let members = api.members()?;
            if !members.is_gone(name) {
                return Err(format!("{} still sees {name} alive or suspect", members.self_name));
            }
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("the survivors did not declare {name} down: {e}"));
    since.elapsed()
}

/// Deliveries that were replays: a client got (room, seq) after a
/// reconnect although that seq had been delivered to someone or acked
/// before the reconnect.
pub(crate) fn replayed(history: &History) -> u64 {
    use hubbub_testkit::chaos::Event;
    let mut first_seen: HashMap<(&str, u64), Instant> = HashMap::new();
    let mut last_move: HashMap<&str, Instant> = HashMap::new();
    let mut replays = 0;
    for r in &history.records {
        match &r.event {
            Event::Delivered { client, room, seq, .. } => {
                let first = *first_seen.entry((room, *seq)).or_insert(r.at);
                if last_move.get(client.as_str()).is_some_and(|m| first < *m) {
                    replays += 1;
                }
            }
            Event::Acked { room, seq, .. } => {
                first_seen.entry((room, *seq)).or_insert(r.at);
            }
            Event::Reconnected { client, .. } => {
                last_move.insert(client, r.at);
            }
            _ => {}
        }
    }
    replays
}
