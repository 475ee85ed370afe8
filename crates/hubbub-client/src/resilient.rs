//! A client that survives node deaths and moves: [`ResilientClient`].
//!
//! It keeps what it needs to resume somewhere else: the session id of the
//! first `welcome`, the latest `nodes` list, the last delivered seq of every
//! joined room, and the requests the cluster has not answered yet. When its
//! connection ends for any reason but [`ResilientClient::close`], it
//! reconnects (at once after a drain or a `reconnect` frame, else with
//! jittered exponential backoff), says `hello` with the same session, joins
//! every room again with `since` = the last delivered seq, and re-sends the
//! unanswered requests with their original ids. Room owners de-duplicate
//! sends by (user, id), and this client drops room messages at or below the
//! last delivered seq and direct or broadcast messages whose (from, id) it
//! saw recently, so the caller sees every message once, in order.
//!
//! [`Core`] is the bookkeeping without I/O (fed frames, answers with frames
//! to send and events); [`ResilientClient`] drives it over a [`Connection`]
//! from its own methods, so there is no background task: nothing happens
//! while the caller does not call [`ResilientClient::next_event`] (a node then
//! closes a connection that stops reading with 4008, and the client resumes
//! when it is called again).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use hubbub_proto::client::valid_room;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use crate::{Audience, ClientError, ClientMsg, Connection, ErrorCode, Event, ServerMsg};

/// Settings of a [`ResilientClient`]. `Default` gives the documented values.
#[derive(Clone, Debug)]
pub struct ResilientOpts {
    /// Delay before the first reconnect attempt, before jitter (100 ms).
    pub backoff_start: Duration,
    /// Largest delay between two attempts, jitter included (5 s).
    pub backoff_cap: Duration,
    /// After being disconnected this long, give up: [`ResilientEvent::Closed`].
    /// `None` (the default): never.
    pub give_up_after: Option<Duration>,
    /// Bound on opening a WebSocket and getting its `welcome` (5 s).
    pub connect_timeout: Duration,
    /// Without any frame for this long the client sends `ping` (5 s).
    pub idle_ping: Duration,
    /// Without any frame for this long after a `ping`, the connection is
    /// taken as dead (5 s): a frozen node or a cut network.
    pub pong_timeout: Duration,
    /// Every room must be joined again within this long after a reconnect,
    /// else the client tries another node (10 s).
    pub resume_timeout: Duration,
    /// How long [`ResilientClient::join`] waits for its answer (10 s).
    pub request_timeout: Duration,
    /// Requests the cluster has not answered yet; `send`, `direct` and
    /// `broadcast` wait while this many are open (256; the node's default
    /// limit is 1024).
    pub max_in_flight: usize,
    /// How often one request may be refused with a transient error
    /// (`unavailable`, `not_joined` for a room the client is in) and be
    /// retried on another connection before it is reported refused (3).
    pub max_retries: u32,
    /// Direct and broadcast (from, id) pairs remembered to drop repeats (4096).
    pub dedupe_window: usize,
    /// Seed for jitter, URL order and the id prefix; `None`: random.
    pub seed: Option<u64>,
}

impl Default for ResilientOpts {
    fn default() -> Self {
        ResilientOpts {
            backoff_start: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            give_up_after: None,
            connect_timeout: Duration::from_secs(5),
            idle_ping: Duration::from_secs(5),
            pong_timeout: Duration::from_secs(5),
            resume_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 256,
            max_retries: 3,
            dedupe_window: 4096,
            seed: None,
        }
    }
}

/// What a [`ResilientClient`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResilientEvent {
    /// A delivered `message` frame, never one seen before.
    Message(ServerMsg),
    /// The cluster accepted request `id`; `room` and `seq` for room sends.
    Acked { id: String, room: Option<String>, seq: Option<u64> },
    /// Request `id` was refused for good (or could not be sent: `not_joined`
    /// for a room the client is not in, `unavailable` after giving up).
    Refused { id: String, code: ErrorCode, message: String },
    /// The client is connected again, to `url`, `after` the old connection
    /// ended, at the `attempts`-th try.
    Reconnected { url: String, after: Duration, attempts: u32 },
    /// Messages of `room` between the last delivered one and `from_seq` are
    /// lost (the node's history did not reach back that far, or the room's
    /// numbering started over); delivery goes on at `from_seq`, whose message
    /// follows this event when it exists. Reported when that first message
    /// arrives, because `joined` does not say where the kept history begins.
    Truncated { room: String, from_seq: u64 },
    /// The client gave up reconnecting (only with `give_up_after`) or was
    /// closed. Returned again on every later call.
    Closed,
}

/// A request the client keeps until the cluster answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Send { room: String, body: String },
    Direct { to: String, body: String },
    Broadcast { body: String },
}

impl Request {
    fn to_msg(&self, id: &str) -> ClientMsg {
        let id = id.to_owned();
        match self {
            Request::Send { room, body } => ClientMsg::Send { room: room.clone(), body: body.clone(), id },
            Request::Direct { to, body } => ClientMsg::Direct { to: to.clone(), body: body.clone(), id },
            Request::Broadcast { body } => ClientMsg::Broadcast { body: body.clone(), id },
        }
    }
}

/// Delay before reconnect attempt `attempt` (0-based): `start · 2^attempt`,
/// at most `cap`, times a jitter factor in [0.5, 1.5) taken from `unit` in
/// [0, 1), and again at most `cap`.
pub fn backoff_delay(start: Duration, cap: Duration, attempt: u32, unit: f64) -> Duration {
    let base = start.saturating_mul(1u32 << attempt.min(20)).min(cap);
    base.mul_f64(0.5 + unit.clamp(0.0, 1.0)).min(cap)
}

/// The order in which to try URLs: every distinct URL of `nodes` and
/// `seeds`, shuffled, with `failed` (the one that just failed) last.
pub fn url_order(nodes: &[String], seeds: &[String], failed: Option<&str>, rng: &mut impl rand::Rng) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for url in nodes.iter().chain(seeds) {
        if !urls.contains(url) {
            urls.push(url.clone());
        }
    }
    urls.shuffle(rng);
    if let Some(pos) = failed.and_then(|f| urls.iter().position(|u| u == f)) {
        let url = urls.remove(pos);
        urls.push(url);
    }
    urls
}

/// A bounded set of recently seen (from, id) pairs; the oldest is forgotten
/// first.
#[derive(Debug)]
pub struct RecentIds {
    cap: usize,
    set: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl RecentIds {
    pub fn new(cap: usize) -> RecentIds {
        RecentIds { cap: cap.max(1), set: HashSet::new(), order: VecDeque::new() }
    }

    /// Remembers (from, id); `false` when it was already remembered.
    pub fn insert(&mut self, from: &str, id: &str) -> bool {
        let key = (from.to_owned(), id.to_owned());
        if self.set.contains(&key) {
            return false;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(key.clone());
        self.order.push_back(key);
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A room the client wants to be in.
#[derive(Clone, Debug, Default)]
struct Room {
    /// The last delivered seq (or the `joined` seq of the first join).
    last_seq: Option<u64>,
    /// `joined` arrived on the current connection.
    joined: bool,
}

#[derive(Clone, Debug)]
struct Outstanding {
    id: String,
    req: Request,
    /// Transient refusals so far.
    retries: u32,
}

/// Why the connection should be replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Move {
    /// The node asked us to go to this URL (`reconnect` frame).
    To(String),
    /// The node cannot serve us right now (`unavailable`, a lost room).
    Elsewhere,
}

/// What [`Core`] wants done after a frame.
#[derive(Debug, Default)]
pub struct Reaction {
    /// Frames to send on the current connection, in order.
    pub send: Vec<ClientMsg>,
    /// Events for the caller, in order.
    pub events: Vec<ResilientEvent>,
    /// Replace the connection.
    pub moving: Option<Move>,
}

/// The resumable state, without I/O: fed the frames of the current
/// connection, it answers with frames to send and events to report.
#[derive(Debug)]
pub struct Core {
    user: String,
    session: Option<String>,
    nodes: Vec<String>,
    rooms: BTreeMap<String, Room>,
    /// Unanswered requests, oldest first.
    pending: VecDeque<Outstanding>,
    recent: RecentIds,
    id_prefix: String,
    next_id: u64,
    max_retries: u32,
    /// After a `welcome`: some room's `joined` is still missing, so the
    /// pending requests wait (a `send` needs its room joined).
    resuming: bool,
    /// The room [`ResilientClient::join`] waits for, and its refusal.
    awaiting_join: Option<String>,
    join_error: Option<(ErrorCode, String)>,
    /// Requests sent again on a new connection, in total.
    resent: u64,
}

impl Core {
    pub fn new(user: &str, id_prefix: &str, max_retries: u32, dedupe_window: usize) -> Core {
        Core {
            user: user.to_owned(),
            session: None,
            nodes: Vec::new(),
            rooms: BTreeMap::new(),
            pending: VecDeque::new(),
            recent: RecentIds::new(dedupe_window),
            id_prefix: id_prefix.to_owned(),
            next_id: 0,
            max_retries,
            resuming: false,
            awaiting_join: None,
            join_error: None,
            resent: 0,
        }
    }

    /// The `hello` for a new connection: with the session once there is one,
    /// and asking for batched frames (the connection reads them).
    pub fn hello(&self) -> ClientMsg {
        ClientMsg::Hello { user: self.user.clone(), token: None, session: self.session.clone(), batch: true }
    }

    /// A connection said `welcome`: keeps the first session and the latest
    /// nodes, and returns what to send: a `join` (with `since` when a seq is
    /// known) for every room, or, with no rooms, the pending requests.
    pub fn on_welcome(&mut self, session: &str, nodes: &[String]) -> Vec<ClientMsg> {
        if self.session.is_none() {
            self.session = Some(session.to_owned());
        }
        self.nodes = nodes.to_vec();
        for room in self.rooms.values_mut() {
            room.joined = false;
        }
        self.resuming = !self.rooms.is_empty();
        if self.resuming {
            self.rooms.iter().map(|(name, r)| ClientMsg::Join { room: name.clone(), since: r.last_seq }).collect()
        } else {
            self.resend()
        }
    }

    /// Every pending request as a frame, oldest first, with its own id.
    fn resend(&mut self) -> Vec<ClientMsg> {
        self.resent += self.pending.len() as u64;
        self.pending.iter().map(|p| p.req.to_msg(&p.id)).collect()
    }

    /// Requests sent again on a new connection, in total.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// Whether requests may go out now (all rooms joined on this connection).
    pub fn live(&self) -> bool {
        !self.resuming
    }

    /// Adds `room` to the wanted rooms; returns its `join` frame.
    pub fn want_room(&mut self, room: &str) -> ClientMsg {
        let r = self.rooms.entry(room.to_owned()).or_default();
        r.joined = false;
        ClientMsg::Join { room: room.to_owned(), since: r.last_seq }
    }

    /// Forgets `room`; returns its `leave` frame, then the pending requests
    /// when it was the last room a resume waited for.
    pub fn drop_room(&mut self, room: &str) -> Vec<ClientMsg> {
        self.rooms.remove(room);
        let mut out = vec![ClientMsg::Leave { room: room.to_owned() }];
        out.extend(self.finish_resume_check());
        out
    }

    /// Whether `room` is one of the rooms the client wants to be in.
    pub fn wants(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Records a new request; returns its id and the frame to send.
    pub fn request(&mut self, req: Request) -> (String, ClientMsg) {
        self.next_id += 1;
        let id = format!("{}-{}", self.id_prefix, self.next_id);
        let msg = req.to_msg(&id);
        self.pending.push_back(Outstanding { id: id.clone(), req, retries: 0 });
        (id, msg)
    }

    /// A fresh id for a request refused before it was sent.
    pub fn unsent_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.id_prefix, self.next_id)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The last delivered seq of `room`, if it is joined.
    pub fn last_seq(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).and_then(|r| r.last_seq)
    }

    fn finish_resume_check(&mut self) -> Vec<ClientMsg> {
        if self.resuming && self.rooms.values().all(|r| r.joined) {
            self.resuming = false;
            return self.resend();
        }
        Vec::new()
    }

    /// One frame of the current connection.
    pub fn on_msg(&mut self, msg: ServerMsg) -> Reaction {
        let mut out = Reaction::default();
        match msg {
            ServerMsg::Joined { room, seq, truncated } => self.on_joined(&room, seq, truncated, &mut out),
            ServerMsg::Message { kind: Audience::Room, room: Some(ref room), seq: Some(seq), .. } => {
                let Some(r) = self.rooms.get_mut(room) else { return out }; // left meanwhile
                match r.last_seq {
                    Some(last) if seq <= last => return out,
                    Some(last) if seq > last + 1 => {
                        out.events.push(ResilientEvent::Truncated { room: room.clone(), from_seq: seq });
                    }
                    _ => {}
                }
                r.last_seq = Some(seq);
                out.events.push(ResilientEvent::Message(msg));
            }
            ServerMsg::Message { ref from, ref id, .. } => {
                if self.recent.insert(from, id) {
                    out.events.push(ResilientEvent::Message(msg));
                }
            }
            ServerMsg::Ack { id, room, seq } => {
                if let Some(pos) = self.pending.iter().position(|p| p.id == id) {
                    self.pending.remove(pos);
                    out.events.push(ResilientEvent::Acked { id, room, seq });
                }
            }
            ServerMsg::Error { code, message, id: Some(id) } => self.on_refused(id, code, message, &mut out),
            ServerMsg::Error { code, message, id: None } => {
                if self.resuming {
                    // A join of the resume failed; which one the frame does not say.
                    out.moving = Some(Move::Elsewhere);
                } else if let Some(room) = self.awaiting_join.take() {
                    self.rooms.remove(&room);
                    self.join_error = Some((code, message));
                } else if code == ErrorCode::Unavailable {
                    // The node dropped a room of ours (its owner did not answer).
                    out.moving = Some(Move::Elsewhere);
                }
            }
            ServerMsg::Reconnect { url, .. } => out.moving = Some(Move::To(url)),
            ServerMsg::Welcome { .. } | ServerMsg::Left { .. } | ServerMsg::Pong { .. } => {}
        }
        out
    }

    fn on_joined(&mut self, room: &str, seq: u64, truncated: bool, out: &mut Reaction) {
        let Some(r) = self.rooms.get_mut(room) else { return }; // left while joining
        r.joined = true;
        match r.last_seq {
            None => r.last_seq = Some(seq),
            // Seqs never restart; a node behind the one we came from answers
            // a lower seq, and what we already have is dropped as it comes.
            Some(last) if truncated => {
                out.events.push(ResilientEvent::Truncated { room: room.to_owned(), from_seq: last + 1 });
            }
            Some(_) => {}
        }
        if self.awaiting_join.as_deref() == Some(room) {
            self.awaiting_join = None;
        }
        out.send.extend(self.finish_resume_check());
    }

    fn on_refused(&mut self, id: String, code: ErrorCode, message: String, out: &mut Reaction) {
        let Some(pos) = self.pending.iter().position(|p| p.id == id) else { return };
        let p = &mut self.pending[pos];
        let transient = code == ErrorCode::Unavailable
            || (code == ErrorCode::NotJoined
                && matches!(&p.req, Request::Send { room, .. } if self.rooms.contains_key(room)));
        if transient && p.retries < self.max_retries {
            p.retries += 1;
            out.moving = Some(Move::Elsewhere);
        } else {
            self.pending.remove(pos);
            out.events.push(ResilientEvent::Refused { id, code, message });
        }
    }
}

/// The current connection.
struct Link {
    conn: Connection,
    url: String,
    opened: Instant,
    last_rx: Instant,
    ping_sent: Option<Instant>,
}

/// Time without a connection.
struct Outage {
    started: Instant,
    /// Attempts in this outage.
    attempts: u32,
    /// Try the first attempt at once (drain, `reconnect` frame).
    immediate: bool,
    /// The URL to try first (a `reconnect` frame's).
    target: Option<String>,
    /// URLs left to try, in order.
    queue: VecDeque<String>,
    failed: Option<String>,
    /// When the next attempt is due, once planned (kept across calls that
    /// return early, so short waits do not restart the backoff).
    next_at: Option<Instant>,
}

impl Outage {
    fn new(immediate: bool, target: Option<String>, failed: Option<String>) -> Outage {
        Outage {
            started: Instant::now(),
            attempts: 0,
            immediate,
            target,
            queue: VecDeque::new(),
            failed,
            next_at: None,
        }
    }
}

/// A chat client that reconnects, resumes its rooms without gaps or
/// repeats, and retries unanswered requests with their original ids.
pub struct ResilientClient {
    core: Core,
    opts: ResilientOpts,
    seeds: Vec<String>,
    rng: StdRng,
    link: Option<Link>,
    outage: Option<Outage>,
    /// Failed attempts since the last connection that lived long enough
    /// (`backoff_cap`); sets where the next outage's backoff starts.
    streak: u32,
    events: VecDeque<ResilientEvent>,
    closed: bool,
}

impl ResilientClient {
    /// Connects to the first of `urls` that answers `hello` as `user`.
    /// `urls` also serve as fallbacks when no announced node answers.
    pub async fn connect(urls: Vec<String>, user: &str, opts: ResilientOpts) -> Result<ResilientClient, ClientError> {
        let mut rng = match opts.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        let prefix: String = (0..8).map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)])).collect();
        let core = Core::new(user, &prefix, opts.max_retries, opts.dedupe_window);
        let mut client = ResilientClient {
            core,
            opts,
            seeds: urls,
            rng,
            link: None,
            outage: None,
            streak: 0,
            events: VecDeque::new(),
            closed: false,
        };
        let mut last = ClientError::BadFrame("no URL to connect to".to_owned());
        for url in client.seeds.clone() {
            match client.open(&url).await {
                Ok(()) => return Ok(client),
                Err(e @ ClientError::Refused { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The session id of the first `welcome`.
    pub fn session(&self) -> Option<&str> {
        self.core.session()
    }

    /// The URL of the current connection.
    pub fn url(&self) -> Option<&str> {
        self.link.as_ref().map(|l| l.url.as_str())
    }

    /// The latest `nodes` list.
    pub fn nodes(&self) -> &[String] {
        self.core.nodes()
    }

    /// Requests not answered yet.
    pub fn pending(&self) -> usize {
        self.core.pending_len()
    }

    /// Requests sent again after a reconnect, in total.
    pub fn resent(&self) -> u64 {
        self.core.resent()
    }

    /// The last delivered seq of a joined room.
    pub fn last_seq(&self, room: &str) -> Option<u64> {
        self.core.last_seq(room)
    }

    /// Joins `room` and waits for `joined` (across reconnects, up to
    /// `request_timeout`); returns the room's seq then. Frames that arrive
    /// meanwhile are kept for [`ResilientClient::next_event`].
    pub async fn join(&mut self, room: &str) -> Result<u64, ClientError> {
        if !valid_room(room) {
            let message = "room names are 1-64 bytes of A-Z a-z 0-9 - _ . :".to_owned();
            return Err(ClientError::Refused { code: ErrorCode::BadRoom, message });
        }
        let join = self.core.want_room(room);
        self.core.awaiting_join = Some(room.to_owned());
        self.core.join_error = None;
        self.transmit(vec![join]).await;
        let deadline = Instant::now() + self.opts.request_timeout;
        loop {
            if let Some((code, message)) = self.core.join_error.take() {
                return Err(ClientError::Refused { code, message });
            }
            if self.core.awaiting_join.is_none() {
                return Ok(self.core.last_seq(room).unwrap_or(0));
            }
            if self.closed {
                self.core.awaiting_join = None;
                return Err(ClientError::Closed { code: 1006, reason: "the client gave up".to_owned() });
            }
            if Instant::now() >= deadline {
                self.core.awaiting_join = None;
                return Err(ClientError::Timeout(self.opts.request_timeout));
            }
            self.step(Some(deadline)).await;
        }
    }

    /// Leaves `room` (no wait for `left`); its later messages are dropped.
    pub async fn leave(&mut self, room: &str) {
        let frames = self.core.drop_room(room);
        self.transmit(frames).await;
    }

    /// Sends `body` to `room`; returns the message's id. The answer comes
    /// as [`ResilientEvent::Acked`] or [`ResilientEvent::Refused`].
    pub async fn send(&mut self, room: &str, body: &str) -> String {
        if !self.core.wants(room) {
            let id = self.core.unsent_id();
            let message = format!("join room {room} before sending to it");
            self.events.push_back(ResilientEvent::Refused { id: id.clone(), code: ErrorCode::NotJoined, message });
            return id;
        }
        self.request(Request::Send { room: room.to_owned(), body: body.to_owned() }).await
    }

    /// Sends `body` to every connection of user `to`; returns the id.
    pub async fn direct(&mut self, to: &str, body: &str) -> String {
        self.request(Request::Direct { to: to.to_owned(), body: body.to_owned() }).await
    }

    /// Sends `body` to every connection of the cluster; returns the id.
    pub async fn broadcast(&mut self, body: &str) -> String {
        self.request(Request::Broadcast { body: body.to_owned() }).await
    }

    /// Closes the connection for good; later calls return `Closed`.
    pub async fn close(&mut self) {
        self.closed = true;
        if let Some(link) = self.link.take() {
            let (mut tx, _rx) = link.conn.split();
            let _ = tokio::time::timeout(self.opts.connect_timeout, tx.close()).await;
        }
    }

    /// Drops the current connection without waiting for anything and
    /// resumes at once on `url`, or on another node when `None` (an
    /// application moving its clients; tests losing answers on purpose).
    pub fn reconnect_now(&mut self, url: Option<String>) {
        self.lost(true, url);
    }

    /// The next event. Reconnects as needed; returns
    /// [`ResilientEvent::Closed`] only after giving up or [`Self::close`].
    pub async fn next_event(&mut self) -> ResilientEvent {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            if self.closed {
                return ResilientEvent::Closed;
            }
            self.step(None).await;
        }
    }

    /// [`Self::next_event`] with a deadline; `None` when nothing came.
    pub async fn next_event_within(&mut self, within: Duration) -> Option<ResilientEvent> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            if self.closed {
                return Some(ResilientEvent::Closed);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.step(Some(deadline)).await;
        }
    }

    async fn request(&mut self, req: Request) -> String {
        if self.closed {
            let id = self.core.unsent_id();
            let message = "the client is closed".to_owned();
            self.events.push_back(ResilientEvent::Refused { id: id.clone(), code: ErrorCode::Unavailable, message });
            return id;
        }
        // Backpressure: at most `max_in_flight` unanswered requests.
        while self.core.pending_len() >= self.opts.max_in_flight.max(1) && !self.closed {
            self.step(None).await;
        }
        let (id, msg) = self.core.request(req);
        if self.core.live() {
            self.transmit(vec![msg]).await;
        }
        id
    }

    /// Sends frames on the current connection, if any; a failed write ends it.
    async fn transmit(&mut self, msgs: Vec<ClientMsg>) {
        let Some(link) = self.link.as_mut() else { return };
        for msg in &msgs {
            if link.conn.send(msg).await.is_err() {
                self.lost(false, None);
                return;
            }
        }
    }

    /// Makes progress: reads one frame (or pings), or makes one reconnect
    /// attempt. Returns early, having done nothing, at `until`.
    async fn step(&mut self, until: Option<Instant>) {
        if self.closed {
            return;
        }
        if self.link.is_some() {
            self.read_once(until).await;
        } else {
            self.attempt(until).await;
        }
    }

    async fn read_once(&mut self, until: Option<Instant>) {
        let (idle_ping, pong_timeout, resume_timeout) =
            (self.opts.idle_ping, self.opts.pong_timeout, self.opts.resume_timeout);
        let resuming = !self.core.live();
        let link = self.link.as_mut().expect("read_once has a link");
        let mut due = match link.ping_sent {
            Some(sent) => sent + pong_timeout,
            None => link.last_rx + idle_ping,
        };
        if resuming {
            due = due.min(link.opened + resume_timeout);
        }
        let wake = until.map_or(due, |u| u.min(due));
        let read = tokio::time::timeout_at(wake.into(), link.conn.next_event()).await;
        let now = Instant::now();
        match read {
            Err(_) if now < due => {} // `until` came first
            Err(_) if resuming && now >= link.opened + resume_timeout => self.lost(false, None),
            Err(_) if link.ping_sent.is_some() => self.lost(false, None),
            Err(_) => {
                link.ping_sent = Some(now);
                self.transmit(vec![ClientMsg::Ping { id: None }]).await;
            }
            Ok(Ok(Event::Msg(msg))) => {
                link.last_rx = now;
                link.ping_sent = None;
                let reaction = self.core.on_msg(msg);
                self.events.extend(reaction.events);
                self.transmit(reaction.send).await;
                match reaction.moving {
                    Some(Move::To(url)) => self.lost(true, Some(url)),
                    Some(Move::Elsewhere) => self.lost(false, None),
                    None => {}
                }
            }
            Ok(Ok(Event::Closed { code, .. })) => self.lost(code == 1001, None),
            // A frame this build does not know (a newer node): skip it.
            Ok(Err(ClientError::BadFrame(_))) => link.last_rx = now,
            Ok(Err(_)) => self.lost(false, None),
        }
    }

    /// Ends the current connection and starts an outage.
    fn lost(&mut self, immediate: bool, target: Option<String>) {
        let Some(link) = self.link.take() else { return };
        let now = Instant::now();
        if now.duration_since(link.opened) >= self.opts.backoff_cap {
            self.streak = 0;
        }
        self.outage = Some(Outage::new(immediate, target, Some(link.url)));
    }

    /// One reconnect attempt, after its backoff.
    async fn attempt(&mut self, until: Option<Instant>) {
        let now = Instant::now();
        let outage = self.outage.get_or_insert_with(|| Outage::new(false, None, None));
        let give_up_at = self.opts.give_up_after.map(|g| outage.started + g);
        if give_up_at.is_some_and(|at| now >= at) {
            self.closed = true;
            self.events.push_back(ResilientEvent::Closed);
            return;
        }
        let at = *outage.next_at.get_or_insert_with(|| {
            let delay = if outage.immediate && outage.attempts == 0 {
                Duration::ZERO
            } else {
                backoff_delay(self.opts.backoff_start, self.opts.backoff_cap, self.streak, self.rng.random())
            };
            now + delay
        });
        let mut at = at;
        if let Some(g) = give_up_at {
            at = at.min(g);
        }
        if let Some(u) = until
            && u < at
        {
            tokio::time::sleep_until(u.into()).await;
            return;
        }
        tokio::time::sleep_until(at.into()).await;
        if give_up_at.is_some_and(|g| Instant::now() >= g) {
            return; // the next step gives up
        }
        let outage = self.outage.as_mut().expect("still in the outage");
        outage.next_at = None;
        let url = match outage.target.take() {
            Some(url) => url,
            None => {
                if outage.queue.is_empty() {
                    let order = url_order(self.core.nodes(), &self.seeds, outage.failed.as_deref(), &mut self.rng);
                    outage.queue = order.into();
                }
                match outage.queue.pop_front() {
                    Some(url) => url,
                    None => return,
                }
            }
        };
        outage.attempts += 1;
        self.streak = self.streak.saturating_add(1);
        let started = outage.started;
        let attempts = outage.attempts;
        match self.open(&url).await {
            Ok(()) => {
                self.outage = None;
                self.events.push_back(ResilientEvent::Reconnected { url, after: started.elapsed(), attempts });
            }
            Err(_) => {
                if let Some(o) = self.outage.as_mut() {
                    o.failed = Some(url);
                }
            }
        }
    }

    /// Opens `url`, says hello and starts resuming on it.
    async fn open(&mut self, url: &str) -> Result<(), ClientError> {
        let timeout = self.opts.connect_timeout;
        let hello = self.core.hello();
        let opening = async {
            let mut conn = Connection::connect(url).await?;
            conn.set_timeout(timeout);
            conn.send(&hello).await?;
            let welcome = conn
                .wait_for(|m| match m {
                    ServerMsg::Welcome { session, nodes, .. } => Some(Ok((session.clone(), nodes.clone()))),
                    ServerMsg::Error { code, message, .. } => {
                        Some(Err(ClientError::Refused { code: *code, message: message.clone() }))
                    }
                    _ => None,
                })
                .await??;
            Ok::<_, ClientError>((conn, welcome))
        };
        let (conn, (session, nodes)) =
            tokio::time::timeout(timeout, opening).await.map_err(|_| ClientError::Timeout(timeout))??;
        let now = Instant::now();
        self.link = Some(Link { conn, url: url.to_owned(), opened: now, last_rx: now, ping_sent: None });
        let first = self.core.on_welcome(&session, &nodes);
        self.transmit(first).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> Core {
        Core::new("ann", "p", 3, 4)
    }

    fn room_msg(room: &str, seq: u64, id: &str) -> ServerMsg {
        ServerMsg::Message {
            kind: Audience::Room,
            room: Some(room.into()),
            seq: Some(seq),
            to: None,
            from: "bob".into(),
            body: "hi".into(),
            id: id.into(),
            ts: 0,
        }
    }

    fn direct_msg(from: &str, id: &str) -> ServerMsg {
        ServerMsg::Message {
            kind: Audience::Direct,
            room: None,
            seq: None,
            to: Some("ann".into()),
            from: from.into(),
            body: "psst".into(),
            id: id.into(),
            ts: 0,
        }
    }

    fn joined(room: &str, seq: u64) -> ServerMsg {
        serde_json::from_str(&format!(r#"{{"type":"joined","room":"{room}","seq":{seq}}}"#)).unwrap()
    }

    fn delivered_seqs(events: &[ResilientEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                ResilientEvent::Message(ServerMsg::Message { seq, .. }) => *seq,
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_from_100ms_to_a_5s_cap_with_half_jitter() {
        let (start, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        let mid: Vec<u128> = (0..8).map(|a| backoff_delay(start, cap, a, 0.5).as_millis()).collect();
        assert_eq!(mid, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff_delay(start, cap, 0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff_delay(start, cap, 2, 1.0), Duration::from_millis(600));
        // Jitter never goes past the cap, and huge attempt numbers do not overflow.
        assert_eq!(backoff_delay(start, cap, 5, 1.0), Duration::from_millis(4800));
        assert_eq!(backoff_delay(start, cap, 6, 1.0), cap);
        assert_eq!(backoff_delay(start, cap, u32::MAX, 0.0), Duration::from_millis(2500));
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..40 {
            let d = backoff_delay(start, cap, attempt, rng.random());
            let base = start.saturating_mul(1 << attempt.min(20)).min(cap);
            assert!(d >= base / 2 && d <= base.mul_f64(1.5).min(cap), "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn url_order_tries_the_failed_url_last_and_lists_each_once() {
        let nodes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let seeds: Vec<String> = ["c", "d"].map(String::from).to_vec();
        let mut rng = StdRng::seed_from_u64(1);
        let mut firsts = HashSet::new();
        for _ in 0..50 {
            let order = url_order(&nodes, &seeds, Some("b"), &mut rng);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, ["a", "b", "c", "d"]);
            assert_eq!(order.last().map(String::as_str), Some("b"));
            firsts.insert(order[0].clone());
        }
        assert_eq!(firsts.len(), 3, "the others are shuffled: {firsts:?}");
        assert_eq!(url_order(&[], &["s".to_owned()], Some("s"), &mut rng), ["s"]);
    }

    #[test]
    fn recent_ids_are_bounded_and_forget_the_oldest() {
        let mut recent = RecentIds::new(2);
        assert!(recent.insert("bob", "1"));
        assert!(!recent.insert("bob", "1"));
        assert!(recent.insert("eve", "1"), "the sender is part of the key");
        assert!(recent.insert("bob", "2"));
        assert_eq!(recent.len(), 2);
        assert!(recent.insert("bob", "1"), "the oldest was forgotten");
    }

    #[test]
    fn room_messages_are_delivered_once_in_seq_order() {
        let mut c = core();
        c.want_room("r");
        assert!(c.on_welcome("s1", &[]).is_empty() || !c.live());
        c.on_msg(joined("r", 3));
        let mut events = Vec::new();
        for seq in [4, 5, 5, 3, 6, 4] {
            events.extend(c.on_msg(room_msg("r", seq, "x")).events);
        }
        assert_eq!(delivered_seqs(&events), [4, 5, 6]);
        assert_eq!(c.last_seq("r"), Some(6));
        assert!(c.on_msg(room_msg("other", 1, "x")).events.is_empty(), "rooms we are not in are dropped");
    }

    #[test]
    fn a_gap_is_reported_before_the_message_after_it() {
        let mut c = core();
        c.want_room("r");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 2));
        let events = c.on_msg(room_msg("r", 7, "x")).events;
        assert_eq!(events[0], ResilientEvent::Truncated { room: "r".into(), from_seq: 7 });
        assert_eq!(delivered_seqs(&events), [7]);
    }

    #[test]
    fn direct_messages_are_deduplicated_by_sender_and_id() {
        let mut c = core();
        c.on_welcome("s1", &[]);
        let mut n = 0;
        for (from, id) in [("bob", "1"), ("bob", "1"), ("eve", "1"), ("bob", "2"), ("eve", "1")] {
            n += c.on_msg(direct_msg(from, id)).events.len();
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn resume_keeps_the_session_rejoins_since_the_last_seq_then_resends_with_the_same_ids() {
        let mut c = core();
        assert_eq!(c.hello(), ClientMsg::Hello { user: "ann".into(), token: None, session: None, batch: true });
        c.on_welcome("s1", &["ws://a".into()]);
        c.want_room("r");
        c.want_room("q");
        c.on_msg(joined("r", 0));
        c.on_msg(joined("q", 10));
        c.on_msg(room_msg("r", 1, "x"));
        let (id1, _) = c.request(Request::Send { room: "r".into(), body: "one".into() });
        let (id2, _) = c.request(Request::Broadcast { body: "two".into() });
        assert_ne!(id1, id2);
        let acked = c.on_msg(ServerMsg::Ack { id: id1.clone(), room: Some("r".into()), seq: Some(2) }).events;
        assert_eq!(acked, [ResilientEvent::Acked { id: id1, room: Some("r".into()), seq: Some(2) }]);

        // A new connection: the same session, joins with `since`, and the
        // unacked broadcast only once every room is joined.
        assert_eq!(
            c.hello(),
            ClientMsg::Hello { user: "ann".into(), token: None, session: Some("s1".into()), batch: true }
        );
        let joins = c.on_welcome("s2", &["ws://b".into()]);
        assert_eq!(c.session(), Some("s1"));
        assert_eq!(c.nodes(), ["ws://b"]);
        assert_eq!(
            joins,
            [
                ClientMsg::Join { room: "q".into(), since: Some(10) },
                ClientMsg::Join { room: "r".into(), since: Some(1) },
            ]
        );
        assert!(!c.live());
        assert!(c.on_msg(joined("q", 10)).send.is_empty());
        let resent = c.on_msg(joined("r", 2)).send;
        assert_eq!(resent, [ClientMsg::Broadcast { body: "two".into(), id: id2.clone() }]);
        assert_eq!(c.resent(), 1);
        assert!(c.live());
        // The replay and a repeat of an ack.
        let events: Vec<_> =
            [room_msg("r", 1, "x"), room_msg("r", 2, "y")].into_iter().flat_map(|m| c.on_msg(m).events).collect();
        assert_eq!(delivered_seqs(&events), [2]);
        assert_eq!(c.on_msg(ServerMsg::Ack { id: id2.clone(), room: None, seq: None }).events.len(), 1);
        assert!(c.on_msg(ServerMsg::Ack { id: id2, room: None, seq: None }).events.is_empty());
        assert_eq!(c.pending_len(), 0);
    }

    #[test]
    fn a_node_behind_answers_a_lower_seq_and_nothing_is_repeated() {
        let mut c = core();
        c.want_room("r");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 0));
        c.on_msg(room_msg("r", 1, "a"));
        c.on_msg(room_msg("r", 2, "b"));
        c.on_welcome("s1", &[]);
        assert!(c.on_msg(joined("r", 1)).events.is_empty());
        assert!(delivered_seqs(&c.on_msg(room_msg("r", 2, "b")).events).is_empty());
        assert_eq!(delivered_seqs(&c.on_msg(room_msg("r", 3, "c")).events), [3]);
    }

    #[test]
    fn a_truncated_replay_is_reported() {
        let mut c = core();
        c.want_room("r");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 0));
        c.on_msg(room_msg("r", 1, "a"));
        c.on_welcome("s1", &[]);
        let events = c.on_msg(ServerMsg::Joined { room: "r".into(), seq: 90, truncated: true }).events;
        assert_eq!(events, [ResilientEvent::Truncated { room: "r".into(), from_seq: 2 }]);
    }

    #[test]
    fn transient_refusals_move_the_client_a_bounded_number_of_times() {
        let mut c = core();
        c.want_room("r");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 0));
        let (id, _) = c.request(Request::Send { room: "r".into(), body: "x".into() });
        let refusal = |id: &str| ServerMsg::Error {
            code: ErrorCode::Unavailable,
            message: "owner did not answer".into(),
            id: Some(id.into()),
        };
        for _ in 0..3 {
            let r = c.on_msg(refusal(&id));
            assert_eq!(r.moving, Some(Move::Elsewhere));
            assert!(r.events.is_empty());
            assert_eq!(c.pending_len(), 1);
        }
        let r = c.on_msg(refusal(&id));
        assert_eq!(r.moving, None);
        assert!(matches!(&r.events[..], [ResilientEvent::Refused { code: ErrorCode::Unavailable, .. }]));
        assert_eq!(c.pending_len(), 0);
        // A plain refusal is final at once.
        let (id, _) = c.request(Request::Direct { to: "bob".into(), body: "x".into() });
        let r = c.on_msg(ServerMsg::Error { code: ErrorCode::UserOffline, message: "m".into(), id: Some(id) });
        assert!(matches!(&r.events[..], [ResilientEvent::Refused { code: ErrorCode::UserOffline, .. }]));
    }

    #[test]
    fn a_reconnect_frame_names_where_to_go() {
        let mut c = core();
        c.on_welcome("s1", &[]);
        let msg: ServerMsg =
            serde_json::from_str(r#"{"type":"reconnect","url":"ws://b/ws","reason":"rebalancing"}"#).unwrap();
        assert_eq!(c.on_msg(msg).moving, Some(Move::To("ws://b/ws".into())));
    }

    /// A fake node: accepts one WebSocket, answers `hello` with a welcome
    /// naming only itself, then vanishes (listener and connection).
    async fn one_shot_node() -> (String, tokio::task::JoinHandle<ClientMsg>) {
        use futures_util::{SinkExt, StreamExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let me = url.clone();
        let node = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            drop(listener);
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(hello))) = ws.next().await else {
                panic!("no hello")
            };
            let welcome = ServerMsg::Welcome {
                session: "s1".into(),
                user: "ann".into(),
                node: "n1".into(),
                nodes: vec![me],
                protocol: 1,
                max_body: 1024,
                batch: false,
            };
            ws.send(tokio_tungstenite::tungstenite::Message::text(serde_json::to_string(&welcome).unwrap()))
                .await
                .unwrap();
            serde_json::from_str(&hello).unwrap()
        });
        (url, node)
    }

    #[tokio::test]
    async fn gives_up_after_the_configured_outage_and_stays_closed() {
        let (url, node) = one_shot_node().await;
        let opts =
            ResilientOpts { give_up_after: Some(Duration::from_millis(300)), seed: Some(3), ..Default::default() };
        let mut client = ResilientClient::connect(vec![url.clone()], "ann", opts).await.unwrap();
        assert_eq!(
            node.await.unwrap(),
            ClientMsg::Hello { user: "ann".into(), token: None, session: None, batch: true }
        );
        assert_eq!(client.session(), Some("s1"));
        assert_eq!(client.url(), Some(url.as_str()));
        // The node is gone: attempts fail until the give-up deadline.
        let started = Instant::now();
        let id = client.broadcast("kept while away").await;
        assert_eq!(client.next_event_within(Duration::from_secs(10)).await, Some(ResilientEvent::Closed));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "gave up after {waited:?}");
        assert_eq!(client.next_event().await, ResilientEvent::Closed);
        assert_eq!(client.pending(), 1, "{id} was never answered");
        let refused = client.send("r", "x").await;
        assert!(matches!(client.next_event().await, ResilientEvent::Refused { id, .. } if id == refused));
    }

    #[test]
    fn leaving_during_a_resume_does_not_hold_requests_back() {
        let mut c = core();
        c.want_room("r");
        c.want_room("q");
        c.on_welcome("s1", &[]);
        c.on_msg(joined("r", 0));
        c.request(Request::Broadcast { body: "x".into() });
        assert!(!c.live());
        let frames = c.drop_room("q");
        assert!(c.live());
        assert_eq!(frames.len(), 2, "the leave, then the held-back broadcast: {frames:?}");
    }
}
