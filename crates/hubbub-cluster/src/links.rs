//! Node-to-node links: one authenticated WebSocket per pair of nodes.
//!
//! The node with the lower [`NodeId`] dials (`GET /internal/link` on the
//! peer's HTTP address); the other accepts. So each pair has one link, and a
//! second connection for the same pair (a redial after a break) replaces the
//! first. Frames are postcard behind a magic number and a version byte
//! ([`hubbub_proto::link`]); a peer speaking another version is refused with a
//! log line naming both versions.
//!
//! Handshake, keyed by the cluster keyring (mutual, replay-safe because each
//! side proves over the other's fresh nonce):
//!
//! 1. acceptor → dialer `Challenge { node, name, nonce_a }`
//! 2. dialer → acceptor `Auth { node, name, nonce_d, mac_d }`,
//!    `mac_d = HMAC(k, "link-dialer" | nonce_a | dialer id | acceptor id)`
//! 3. acceptor → dialer `AuthOk { mac_a }`,
//!    `mac_a = HMAC(k, "link-acceptor" | nonce_d | acceptor id | dialer id)`
//!
//! A link that breaks is reported to membership as a hint (it gossips sooner);
//! it never declares a node dead: only foca does that. Dialers retry with
//! jittered exponential backoff for as long as foca says the peer is active;
//! a link to a peer that left is not cut but ends when the peer closes it, so
//! the frames it sent while leaving (room handoffs, deliveries) arrive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use hubbub_proto::chat::ChatFrame;
use hubbub_proto::link::{self, LinkFrame, MAX_FRAME_LEN, NONCE_LEN};
use hubbub_ring::NodeId;
use rand::RngExt;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::counters::{Counters, bump};
use crate::membership::Input;
use crate::seal::Keyring;
use crate::view::ClusterView;

/// Path of the link endpoint on every node's HTTP listener.
pub const LINK_PATH: &str = "/internal/link";
/// Heartbeat interval on an idle link.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A link that hears nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pongs owed to the peer's pings, waiting for the writer; beyond, a ping
/// goes unanswered (the peer hears the frames already on their way).
const PONG_BACKLOG: usize = 4;
/// The handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Frames written to a link before one flush. 256 rather than 64: +5–12 %
/// deliveries at saturation (BENCHMARKS.md). tungstenite writes its buffer
/// out as it passes 128 KiB, and waits for the socket before taking more,
/// so a batch of large frames never piles up in memory.
const BATCH: usize = 256;

/// WebSocket limits for links: bounded frames and write buffer (tungstenite's
/// defaults allow 64 MiB messages and an unbounded write buffer), and a
/// 64 KiB read buffer (the 128 KiB default is zero-filled before each read).
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
        .max_write_buffer_size(8 * MAX_FRAME_LEN)
}

/// Which side opened a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outbound,
    Inbound,
}

/// An established link, for operators.
#[derive(Clone, Debug, Serialize)]
pub struct LinkInfo {
    pub node_id: String,
    pub name: String,
    pub direction: Direction,
    pub established_unix_ms: u64,
}

struct Entry {
    info: LinkInfo,
    serial: u64,
    stop: CancellationToken,
}

/// Encoded frames waiting for a peer. It outlives link sessions: a frame
/// queued while the link is down or being replaced goes out on the next one,
/// in order.
///
/// Unbounded because the backplane queues frames while holding its state
/// lock and must not wait; what bounds it is that every frame answers a
/// client request bounded per connection (`max_in_flight`, the send-queue
/// limit), and the queue of a peer that leaves the membership is dropped.
struct PeerQueue {
    tx: mpsc::UnboundedSender<Bytes>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Bytes>>>,
}

/// Chat frames a link's reader hands over at once, at most: those that had
/// already arrived when it read the first.
const READ_BATCH: usize = 256;

/// Where chat frames received on links go (the backplane).
///
/// A link's reader calls it itself with the frames that arrived together,
/// in order, and reads on when it returns: no task stands between a link
/// and the backplane, so a frame costs no extra wake-up and no hop to
/// another thread. It must therefore not wait, only take a short lock.
pub trait ChatHandler: Send + Sync {
    fn handle(&self, from: NodeId, frames: Vec<ChatFrame>);
}

/// The links of this node.
pub struct Links {
    me: NodeId,
    name: String,
    keyring: Arc<Keyring>,
    counters: Arc<Counters>,
    hints: mpsc::Sender<Input>,
    table: Mutex<HashMap<NodeId, Entry>>,
    queues: Mutex<HashMap<NodeId, PeerQueue>>,
    chat: std::sync::OnceLock<Arc<dyn ChatHandler>>,
    serial: std::sync::atomic::AtomicU64,
    shutdown: CancellationToken,
}

impl PeerQueue {
    fn new() -> PeerQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        PeerQueue { tx, rx: Arc::new(tokio::sync::Mutex::new(rx)) }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rng().fill(&mut n);
    n
}

/// Why a link ended or never started.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] link::FrameError),
    #[error("handshake: {0}")]
    Handshake(&'static str),
    #[error("peer closed the link")]
    Closed,
    #[error("no frame for {0:?}")]
    Idle(Duration),
}

impl Links {
    pub(crate) fn new(
        me: NodeId,
        name: String,
        keyring: Arc<Keyring>,
        counters: Arc<Counters>,
        hints: mpsc::Sender<Input>,
        shutdown: CancellationToken,
    ) -> Arc<Links> {
        Arc::new(Links {
            me,
            name,
            keyring,
            counters,
            hints,
            table: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            chat: std::sync::OnceLock::new(),
            serial: Default::default(),
            shutdown,
        })
    }

    /// Sets where received chat frames go (once; later calls are ignored).
    pub fn set_chat_handler(&self, handler: Arc<dyn ChatHandler>) {
        let _ = self.chat.set(handler);
    }

    /// Queues an encoded frame for `peer` without waiting. It is sent when a
    /// link to `peer` is up, in the order queued.
    pub fn send(&self, peer: NodeId, frame: Bytes) {
        let mut queues = self.queues.lock().expect("links mutex poisoned");
        let queue = queues.entry(peer).or_insert_with(PeerQueue::new);
        // The receiver lives in the same entry, so the send cannot fail.
        let _ = queue.tx.send(frame);
    }

    fn queue_rx(&self, peer: NodeId) -> Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Bytes>>> {
        let mut queues = self.queues.lock().expect("links mutex poisoned");
        queues.entry(peer).or_insert_with(PeerQueue::new).rx.clone()
    }

    /// Drops the queues of peers that are neither active members nor linked.
    ///
    /// A peer with a link keeps its queue: the session reads that queue's
    /// receiver, and dropping it would leave the link up with every later
    /// frame going to a new queue nobody reads. A view can lack a linked
    /// peer for a moment (an acceptor that has not heard of the dialer yet,
    /// a member declared down and back). The table lock is taken first and
    /// held: `run_session` registers a link before it takes its queue, so a
    /// link is either seen here or takes its queue after this prune.
    fn prune_queues(&self, active: &std::collections::HashSet<NodeId>) {
        let table = self.table.lock().expect("links mutex poisoned");
        self.queues
            .lock()
            .expect("links mutex poisoned")
            .retain(|peer, _| active.contains(peer) || table.contains_key(peer));
    }

    /// Established links, sorted by peer name.
    pub fn list(&self) -> Vec<LinkInfo> {
        let table = self.table.lock().expect("links mutex poisoned");
        let mut out: Vec<LinkInfo> = table.values().map(|e| e.info.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Serves one inbound link on an upgraded connection.
    pub async fn serve_inbound<S>(self: Arc<Self>, mut ws: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.accept_handshake(&mut ws)).await;
        let (peer, name) = match handshake {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                bump(&self.counters.links_refused);
                warn!(error = %e, "refused an inbound node link");
                let _ = ws.close(None).await;
                return;
            }
            Err(_) => {
                bump(&self.counters.links_refused);
                warn!("refused an inbound node link: handshake timed out");
                return;
            }
        };
        self.run_session(ws, peer, name, Direction::Inbound).await;
    }

    async fn accept_handshake<S>(&self, ws: &mut WebSocketStream<S>) -> Result<(NodeId, String), LinkError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let nonce_a = nonce();
        send(ws, &LinkFrame::Challenge { node: self.me, name: self.name.clone(), nonce: nonce_a }).await?;
        let LinkFrame::Auth { node, name, nonce: nonce_d, mac } = recv(ws).await? else {
            return Err(LinkError::Handshake("expected Auth"));
        };
        let parts: [&[u8]; 4] = [b"link-dialer", &nonce_a, &node.0.to_le_bytes(), &self.me.0.to_le_bytes()];
        if !self.keyring.verify_link_proof(&parts, &mac) {
            return Err(LinkError::Handshake("dialer's proof does not verify (other cluster key?)"));
        }
        if node == self.me || NodeId::from_name(&name) != node {
            return Err(LinkError::Handshake("dialer's node id does not match its name"));
        }
        let mac_a =
            self.keyring.link_proof(&[b"link-acceptor", &nonce_d, &self.me.0.to_le_bytes(), &node.0.to_le_bytes()]);
        send(ws, &LinkFrame::AuthOk { mac: mac_a }).await?;
        Ok((node, name))
    }

    async fn dial_handshake<S>(&self, ws: &mut WebSocketStream<S>, expect: NodeId) -> Result<String, LinkError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let LinkFrame::Challenge { node, name, nonce: nonce_a } = recv(ws).await? else {
            return Err(LinkError::Handshake("expected Challenge"));
        };
        if node != expect {
            return Err(LinkError::Handshake("the peer at that address is another node"));
        }
        let nonce_d = nonce();
        let mac = self.keyring.link_proof(&[b"link-dialer", &nonce_a, &self.me.0.to_le_bytes(), &node.0.to_le_bytes()]);
        send(ws, &LinkFrame::Auth { node: self.me, name: self.name.clone(), nonce: nonce_d, mac }).await?;
        let LinkFrame::AuthOk { mac } = recv(ws).await? else {
            return Err(LinkError::Handshake("expected AuthOk"));
        };
        let parts: [&[u8]; 4] = [b"link-acceptor", &nonce_d, &node.0.to_le_bytes(), &self.me.0.to_le_bytes()];
        if !self.keyring.verify_link_proof(&parts, &mac) {
            return Err(LinkError::Handshake("acceptor's proof does not verify"));
        }
        Ok(name)
    }

    async fn run_session<S>(&self, ws: WebSocketStream<S>, peer: NodeId, name: String, direction: Direction)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let stop = self.shutdown.child_token();
        let serial = self.serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let info = LinkInfo { node_id: peer.to_string(), name: name.clone(), direction, established_unix_ms: now_ms() };
        if let Some(old) =
            self.table.lock().expect("links mutex poisoned").insert(peer, Entry { info, serial, stop: stop.clone() })
        {
            // A newer connection for the same pair replaces the old one.
            old.stop.cancel();
        }
        bump(&self.counters.links_established);
        info!(peer = %name, ?direction, "node link up");

        // The replaced session (if any) releases the queue when it stops.
        let queue = self.queue_rx(peer);
        let mut rx = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            rx = queue.lock_owned() => rx,
        };
        // Reading and writing progress independently. A session that read
        // only between writes deadlocked with its peer once both wrote more
        // than the two sockets buffer: each blocked writing, neither reading,
        // for good (a scale-up does that: room handoffs flow one way, full
        // replica copies the other).
        let (mut sink, mut stream) = ws.split();
        let (pongs, mut pongs_rx) = mpsc::channel::<u64>(PONG_BACKLOG);
        let writer = async {
            let mut queue_open = true;
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            loop {
                let sent = tokio::select! {
                    biased;
                    frame = rx.recv(), if queue_open => match frame {
                        Some(f) => send_batch(&mut sink, f, &mut rx).await,
                        // The peer left the membership and its queue was
                        // dropped: nothing more goes out, but what it still
                        // sends is read until it closes the link or the link
                        // idles out.
                        None => {
                            queue_open = false;
                            Ok(())
                        }
                    },
                    Some(at_ms) = pongs_rx.recv() => send(&mut sink, &LinkFrame::Pong { at_ms }).await,
                    _ = heartbeat.tick() => send(&mut sink, &LinkFrame::Ping { at_ms: now_ms() }).await,
                };
                if let Err(e) = sent {
                    break e;
                }
            }
        };
        let reader = async {
            let mut frames = Vec::new();
            loop {
                // The peer pings every `HEARTBEAT`: silence means it is gone
                // or stuck.
                let Ok(mut msg) = tokio::time::timeout(IDLE_TIMEOUT, stream.next()).await else {
                    break Err(LinkError::Idle(IDLE_TIMEOUT));
                };
                // This message and those that arrived with it (up to
                // READ_BATCH chat frames) go to the backplane together, in
                // one step of its core; an error ends the link only after
                // the frames before it were handed over.
                let ended = loop {
                    match msg {
                        Some(Ok(Message::Binary(bytes))) => match link::decode(&bytes) {
                            // A full backlog means pongs are already on their way.
                            Ok(LinkFrame::Ping { at_ms }) => drop(pongs.try_send(at_ms)),
                            Ok(LinkFrame::Pong { .. }) => {}
                            Ok(LinkFrame::Chat(frame)) => frames.push(frame),
                            Ok(other) => debug!(peer = %name, frame = ?other, "unexpected frame after handshake"),
                            Err(e) => break Some(e.into()),
                        },
                        Some(Ok(Message::Close(_))) | None => break Some(LinkError::Closed),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break Some(e.into()),
                    }
                    if frames.len() >= READ_BATCH {
                        break None;
                    }
                    match stream.next().now_or_never() {
                        Some(next) => msg = next,
                        None => break None,
                    }
                };
                if !frames.is_empty() {
                    match self.chat.get() {
                        Some(handler) => handler.handle(peer, std::mem::take(&mut frames)),
                        None => {
                            debug!(peer = %name, frames = frames.len(), "chat frames before the backplane started");
                            frames.clear();
                        }
                    }
                }
                if let Some(e) = ended {
                    break Err::<(), _>(e);
                }
            }
        };
        let result: Result<(), LinkError> = tokio::select! {
            biased;
            _ = stop.cancelled() => Ok(()),
            read = reader => read,
            error = writer => Err(error),
        };
        {
            let mut table = self.table.lock().expect("links mutex poisoned");
            if table.get(&peer).is_some_and(|e| e.serial == serial) {
                table.remove(&peer);
            }
        }
        // Bounded: a peer that reads nothing must not hold the session.
        let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, sink.close()).await;
        if self.shutdown.is_cancelled() || stop.is_cancelled() {
            debug!(peer = %name, "node link closed");
            return;
        }
        match result {
            Ok(()) => debug!(peer = %name, "node link closed"),
            Err(e) => {
                info!(peer = %name, error = %e, "node link broke; hinting membership");
                let _ = self.hints.try_send(Input::LinkHint(peer));
            }
        }
    }

    /// Keeps an outbound link to every active member with a higher node id.
    pub(crate) async fn dial_loop(self: Arc<Self>, mut view: watch::Receiver<Arc<ClusterView>>) {
        let mut dialers: HashMap<NodeId, (u64, CancellationToken)> = HashMap::new();
        loop {
            let current = view.borrow_and_update().clone();
            self.prune_queues(&current.active().map(|m| m.identity.id).collect());
            let wanted: HashMap<NodeId, _> = current
                .active()
                .filter(|m| !m.is_self && m.identity.id > self.me)
                .map(|m| (m.identity.id, m.identity.clone()))
                .collect();
            // A dialer follows one process of the peer (its generation): a
            // renewed identity (same process, wrongly declared down) keeps its
            // link, so the frames in flight on it are not lost; a restarted
            // peer gets a new dialer.
            dialers.retain(|id, (generation, stop)| {
                let keep = wanted.get(id).is_some_and(|w| w.generation == *generation);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for (id, identity) in wanted {
                if dialers.contains_key(&id) {
                    continue;
                }
                let stop = self.shutdown.child_token();
                dialers.insert(id, (identity.generation, stop.clone()));
                let links = self.clone();
                tokio::spawn(async move {
                    links.dial_peer(id, identity.name.clone(), identity.http, stop).await;
                });
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                changed = view.changed() => if changed.is_err() { return },
            }
        }
    }

    async fn dial_peer(&self, peer: NodeId, name: String, http: std::net::SocketAddr, stop: CancellationToken) {
        let url = format!("ws://{http}{LINK_PATH}");
        let mut backoff = BACKOFF_MIN;
        loop {
            let attempt = async {
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(&url, Some(websocket_config()), true).await?;
                let name = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.dial_handshake(&mut ws, peer))
                    .await
                    .map_err(|_| LinkError::Handshake("timed out"))??;
                Ok::<_, LinkError>((ws, name))
            };
            let connected = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                r = attempt => r,
            };
            match connected {
                Ok((ws, peer_name)) => {
                    backoff = BACKOFF_MIN;
                    // A peer that leaves still flushes what it sent: the session
                    // runs until the peer closes it (or it idles out), and only
                    // redialing stops once membership no longer wants the peer.
                    self.run_session(ws, peer, peer_name, Direction::Outbound).await;
                    if stop.is_cancelled() {
                        return;
                    }
                }
                Err(e) => {
                    if matches!(e, LinkError::Handshake(_) | LinkError::Frame(_)) {
                        bump(&self.counters.links_refused);
                        warn!(peer = %name, error = %e, "node link refused");
                    } else {
                        debug!(peer = %name, error = %e, "node link dial failed");
                    }
                }
            }
            let jitter = rand::rng().random_range(0.5..1.5);
            let wait = backoff.mul_f64(jitter);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

async fn send<W>(ws: &mut W, frame: &LinkFrame) -> Result<(), LinkError>
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    ws.send(Message::Binary(link::encode(frame).into())).await?;
    Ok(())
}

/// Writes `first` and whatever else is queued (up to a batch), then
/// flushes once.
async fn send_batch<W>(ws: &mut W, first: Bytes, rx: &mut mpsc::UnboundedReceiver<Bytes>) -> Result<(), LinkError>
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    ws.feed(Message::Binary(first)).await?;
    for _ in 1..BATCH {
        match rx.try_recv() {
            Ok(f) => ws.feed(Message::Binary(f)).await?,
            Err(_) => break,
        }
    }
    ws.flush().await?;
    Ok(())
}

async fn recv<S>(ws: &mut WebSocketStream<S>) -> Result<LinkFrame, LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                return link::decode(&bytes).map_err(|e| {
                    if let link::FrameError::UnsupportedVersion { got } = e {
                        warn!(got, ours = link::VERSION, "peer speaks another link protocol version");
                    }
                    e.into()
                });
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Err(LinkError::Closed),
            Some(Ok(_)) => return Err(LinkError::Handshake("expected a binary frame")),
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// Passes the frames a link hands over to a test through a channel
    /// (unbounded: a test reads what it sent), each with the number of the
    /// call that brought it.
    struct ToChannel {
        tx: mpsc::UnboundedSender<(NodeId, ChatFrame, usize)>,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl ChatHandler for ToChannel {
        fn handle(&self, from: NodeId, frames: Vec<ChatFrame>) {
            let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for frame in frames {
                let _ = self.tx.send((from, frame, call));
            }
        }
    }

    fn links(name: &str) -> (Arc<Links>, Inbox) {
        let (hints, _) = mpsc::channel(16);
        let keyring = Arc::new(Keyring::insecure("test"));
        let links = Links::new(
            NodeId::from_name(name),
            name.to_owned(),
            keyring,
            Arc::default(),
            hints,
            CancellationToken::new(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        links.set_chat_handler(Arc::new(ToChannel { tx, calls: Default::default() }));
        (links, rx)
    }

    fn claim(room: &str) -> Bytes {
        Bytes::from(link::encode(&LinkFrame::Chat(ChatFrame::Claim { room: room.to_owned() })))
    }

    async fn recv_room(rx: &mut Inbox) -> String {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a frame within 5 s");
        match got {
            Some((_, ChatFrame::Claim { room }, _)) => room,
            other => panic!("unexpected {other:?}"),
        }
    }

    type Inbox = mpsc::UnboundedReceiver<(NodeId, ChatFrame, usize)>;

    /// Nodes "a" (acceptor) and "b" (dialer) linked over an in-memory pipe
    /// that buffers 64 KiB each way, with their inboxes.
    async fn linked_pair() -> (Arc<Links>, Inbox, Arc<Links>, Inbox) {
        let (a, a_inbox) = links("a");
        let (b, b_inbox) = links("b");
        let (sa, sb) = tokio::io::duplex(64 * 1024);
        let ws_a = WebSocketStream::from_raw_socket(sa, Role::Server, Some(websocket_config())).await;
        let mut ws_b = WebSocketStream::from_raw_socket(sb, Role::Client, Some(websocket_config())).await;
        tokio::spawn(a.clone().serve_inbound(ws_a));
        let b2 = b.clone();
        let a_id = a.me;
        tokio::spawn(async move {
            let name = b2.dial_handshake(&mut ws_b, a_id).await.expect("handshake");
            b2.run_session(ws_b, a_id, name, Direction::Outbound).await;
        });
        (a, a_inbox, b, b_inbox)
    }

    /// An acceptor whose view does not list the dialer yet (or lists it as
    /// down for a moment) keeps sending to it over the live link.
    #[tokio::test]
    async fn a_linked_peer_keeps_its_queue_when_the_view_lacks_it() {
        let (a, mut a_inbox, b, mut b_inbox) = linked_pair().await;
        a.send(b.me, claim("before"));
        assert_eq!(recv_room(&mut b_inbox).await, "before");
        // A view without b (a has not heard of it through membership).
        a.prune_queues(&HashSet::from([a.me]));
        a.send(b.me, claim("after"));
        assert_eq!(recv_room(&mut b_inbox).await, "after");
        // And the other direction still flows.
        b.send(a.me, claim("back"));
        assert_eq!(recv_room(&mut a_inbox).await, "back");
    }

    /// Both peers writing far more than the sockets buffer, at once (room
    /// handoffs one way, replica copies the other): each side keeps reading
    /// while it writes, so neither waits on the other for good.
    #[tokio::test]
    async fn peers_writing_bulk_to_each_other_at_once_both_get_everything() {
        const FRAMES: usize = 200;
        let (a, mut a_inbox, b, mut b_inbox) = linked_pair().await;
        let bulk = "x".repeat(64 * 1024);
        for i in 0..FRAMES {
            a.send(b.me, claim(&format!("a{i}-{bulk}")));
            b.send(a.me, claim(&format!("b{i}-{bulk}")));
        }
        async fn count(inbox: &mut Inbox) {
            for _ in 0..FRAMES {
                inbox.recv().await.expect("the link stays up");
            }
        }
        let both = async { tokio::join!(count(&mut a_inbox), count(&mut b_inbox)) };
        tokio::time::timeout(Duration::from_secs(20), both).await.expect("every frame arrives both ways");
    }

    /// Frames that arrive together reach the backplane together, in order:
    /// one step of its core for a burst, not one each.
    #[tokio::test]
    async fn frames_that_arrive_together_are_handed_over_in_one_call() {
        const FRAMES: usize = 100;
        let (a, _a_inbox, b, mut b_inbox) = linked_pair().await;
        for i in 0..FRAMES {
            a.send(b.me, claim(&format!("r{i}")));
        }
        let mut calls = HashSet::new();
        for i in 0..FRAMES {
            let got = tokio::time::timeout(Duration::from_secs(5), b_inbox.recv()).await.expect("a frame within 5 s");
            let Some((from, ChatFrame::Claim { room }, call)) = got else { panic!("unexpected {got:?}") };
            assert_eq!((from, room), (a.me, format!("r{i}")), "in the order sent");
            calls.insert(call);
        }
        assert!(calls.len() <= 4, "{FRAMES} frames queued at once came in {} calls", calls.len());
    }

    /// The queue of a peer that is neither a member nor linked is dropped.
    #[test]
    fn an_unlinked_departed_peer_loses_its_queue() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let _guard = rt.enter();
        let (a, _inbox) = links("a");
        let gone = NodeId::from_name("gone");
        a.send(gone, claim("x"));
        a.prune_queues(&HashSet::from([a.me]));
        assert!(a.queues.lock().expect("lock").is_empty());
    }
}
