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
//! [`Core`] (`state.rs`) is the bookkeeping without I/O (fed frames,
//! answers with frames to send and events); [`ResilientClient`] (here)
//! drives it over a [`Connection`] from its own methods, so there is no
//! background task: nothing happens while the caller does not call
//! [`ResilientClient::next_event`] (a node then closes a connection that
//! stops reading with 4008, and the client resumes when it is called again).

mod state;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hubbub_proto::client::valid_room;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

pub use state::{Core, Move, Reaction, RecentIds, Request, backoff_delay, url_order};

use crate::{ClientError, ClientMsg, Connection, ErrorCode, Event, ServerMsg};

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
}
