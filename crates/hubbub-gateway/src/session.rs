//! `GET /ws`: one client's WebSocket session (docs/protocol.md).
//!
//! One task per connection reads frames, hands requests to the backplane
//! and writes what the connection's queue holds. Everything the client
//! receives goes through that queue ([`ConnQueue`]), in order: answers,
//! errors and deliveries. The queue is bounded in bytes; the backplane never
//! waits on it, so a client that stops reading is closed (4008) instead of
//! slowing a room. The writer takes up to 256 queued items at a time and
//! writes them in one vectored write (`frames.rs`); for a client that asked
//! for batches (`hello.batch`) it also joins small ones into one frame, one
//! message per line, and a room's run of messages is one item.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hubbub_backplane::{ConnId, ConnSink, Run, Text, now_ms};
use hubbub_proto::client::{self, ClientMsg, CloseCode, ErrorCode, PROTOCOL_VERSION, ServerMsg};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::debug;

use crate::frames::FrameWriter;
use crate::upgrade::ServerWs;
use crate::{AppError, Gateway};

/// How long a close frame may take to reach a client that is not reading.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Queued items (messages, or a batched client's runs) written per round.
/// 256 rather than 64: a subscriber of
/// a busy room then gets its backlog in a quarter of the writes (on both
/// ends, a write or a read is a syscall and a wake-up); BENCHMARKS.md.
const WRITE_BATCH: usize = 256;
/// Client frames that arrived together handled in one step of the core.
/// 256 rather than 64: a publisher's burst makes longer runs per room, so
/// fewer `Replicate`s, releases and `Deliver`s (BENCHMARKS.md). A step of
/// 256 sends holds the core's lock for well under a millisecond.
const READ_BATCH: usize = 256;
/// A batched frame takes no more queued items once it holds this many bytes
/// (so it is at most this plus one item: a message, or a room's run of
/// them, at most 256 KiB).
const BATCH_BYTES: usize = 64 * 1024;
/// A queued item this large is a frame of its own, written without a copy
/// (see [`batch_len`]).
const OWN_FRAME_BYTES: usize = 2 * 1024;

/// Client-session settings.
#[derive(Clone, Debug)]
pub struct ChatSettings {
    /// Field limits (largest body).
    pub limits: client::Limits,
    /// A connection must say `hello` within this.
    pub hello_timeout: Duration,
    /// Bytes queued for one connection before it is closed as slow.
    pub client_queue_bytes: usize,
}

impl ChatSettings {
    /// The hard frame limit: a larger frame closes the connection (1009).
    /// Four bodies' worth leaves room for JSON escaping and the other fields,
    /// so a body just over the limit still gets a readable `error`.
    pub fn max_frame(&self) -> usize {
        4 * self.limits.max_body.max(1_024)
    }

    /// tungstenite's buffers, bounded: a 4 KiB read buffer and a 16 KiB
    /// write buffer (its 128 KiB defaults cost memory on every idle
    /// connection, and the read buffer is zero-filled before every read:
    /// profiled at a third of a node's CPU), and a hard cap above the
    /// connection's queue limit, which is what really bounds it.
    fn websocket_config(&self) -> WebSocketConfig {
        const READ_BUFFER: usize = 4 * 1024;
        const WRITE_BUFFER: usize = 16 * 1024;
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(self.max_frame()))
            .max_frame_size(Some(self.max_frame()))
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(WRITE_BUFFER + self.client_queue_bytes.max(self.max_frame()) * 2)
    }
}

/// A connection's outgoing queue, bounded in bytes. The backplane pushes
/// under its lock and must not wait, so the queue never blocks a push;
/// `queued` enforces the bound (a client that stops reading is closed).
///
/// A plain locked deque: a push is a short lock and, when the queue was
/// empty, one wake of the writer, which takes a round's messages under one
/// lock. (A tokio channel cost an atomic slot, a permit and a waker check
/// per message: 12 % of a node at 300 subscribers per room.)
struct ConnQueue {
    texts: Mutex<VecDeque<Text>>,
    /// The session's task, woken when the queue stops being empty.
    writer: AtomicWaker,
    /// Bytes queued and not yet written.
    queued: AtomicUsize,
    limit: usize,
    /// The client reads several messages per frame (`hello.batch`): a run
    /// is queued as one item, its messages already joined one per line.
    batch: bool,
    close: Mutex<Option<CloseCode>>,
    wake: Notify,
}

impl ConnQueue {
    /// An empty queue that closes its connection past `limit` bytes.
    fn new(limit: usize, batch: bool) -> ConnQueue {
        ConnQueue {
            texts: Mutex::new(VecDeque::new()),
            writer: AtomicWaker::new(),
            queued: AtomicUsize::new(0),
            limit,
            batch,
            close: Mutex::new(None),
            wake: Notify::new(),
        }
    }

    /// Waits until something is queued.
    fn ready(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            // Registered before looking, so a push after the look wakes us.
            self.writer.register(cx.waker());
            if self.texts.lock().expect("queue mutex poisoned").is_empty() { Poll::Pending } else { Poll::Ready(()) }
        })
    }

    /// Moves the oldest queued messages, at most [`WRITE_BATCH`], to the
    /// back of `into`. Bounded so that a connection whose queue never
    /// empties (a busy publisher's acks and echoes) still alternates
    /// between writing and reading: taking everything made such writes
    /// long and cost 4–12 % of throughput at saturation.
    fn take(&self, into: &mut VecDeque<Text>) {
        let mut texts = self.texts.lock().expect("queue mutex poisoned");
        let n = texts.len().min(WRITE_BATCH);
        into.extend(texts.drain(..n));
    }
}

impl ConnQueue {
    /// Counts `len` bytes against the limit (closing the connection past
    /// it), then queues with `add` and wakes the writer if the queue was empty.
    fn enqueue(&self, len: usize, add: impl FnOnce(&mut VecDeque<Text>)) -> bool {
        let queued = self.queued.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.limit {
            self.close(CloseCode::SlowConsumer);
            return false;
        }
        let was_empty = {
            let mut texts = self.texts.lock().expect("queue mutex poisoned");
            let was_empty = texts.is_empty();
            add(&mut texts);
            was_empty && !texts.is_empty()
        };
        if was_empty {
            self.writer.wake();
        }
        true
    }
}

impl ConnSink for ConnQueue {
    fn push(&self, text: Text) -> bool {
        self.enqueue(text.len(), |texts| texts.push_back(text))
    }

    fn push_run(&self, run: &Run) -> bool {
        if self.batch {
            let lines = run.lines();
            return self.enqueue(lines.len(), |texts| texts.push_back(lines.clone()));
        }
        let len = run.texts().iter().map(|text| text.len()).sum();
        self.enqueue(len, |texts| texts.extend(run.texts().iter().cloned()))
    }

    fn close(&self, code: CloseCode) {
        let mut close = self.close.lock().expect("close mutex poisoned");
        if close.is_none() {
            *close = Some(code);
            self.wake.notify_one();
        }
    }
}

pub(crate) async fn upgrade(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    if !gw.cluster.view().borrow().ready {
        return AppError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: "this node has not joined a cluster yet; try another node".to_owned(),
        }
        .into_response();
    }
    if !gw.backplane.core().has_quorum() {
        return AppError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "no_quorum",
            message: "this node does not see a majority of the cluster; try another node".to_owned(),
        }
        .into_response();
    }
    let draining =
        gw.cluster.view().borrow().members.iter().any(|m| m.is_self && m.status.as_ref().is_some_and(|s| s.draining));
    if draining || gw.clients_stop.is_cancelled() {
        return AppError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "draining",
            message: "this node is shutting down; try another node".to_owned(),
        }
        .into_response();
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !origin_allowed(&gw, origin.to_str().unwrap_or(""), host) {
            return AppError {
                status: StatusCode::FORBIDDEN,
                code: "origin_forbidden",
                message: "browser connections must come from a page served by a cluster node".to_owned(),
            }
            .into_response();
        }
    }
    let config = gw.chat.websocket_config();
    crate::upgrade::accept(req, config, "client connections", move |ws| run(gw, ws))
}

/// A browser's `Origin` must be this node's host or a member's HTTP address;
/// clients that send no `Origin` (bots, servers) are not browsers and pass.
fn origin_allowed(gw: &Gateway, origin: &str, host: &str) -> bool {
    let Some(authority) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    if authority.eq_ignore_ascii_case(host) {
        return true;
    }
    let view = gw.cluster.view().borrow().clone();
    view.members.iter().any(|m| m.identity.http.to_string() == authority)
}

async fn send_now(ws: &mut ServerWs, msg: &ServerMsg) -> bool {
    ws.send(Message::Text(hubbub_backplane::Text::from(serde_json::to_string(msg).expect("serializable"))))
        .await
        .is_ok()
}

/// Finishes the frames `writer` holds, sends a close frame, then reads (and
/// drops) what the client still sends until its close reply, so the socket
/// is not reset with unread data (a reset can destroy the close frame
/// before the client reads it).
async fn close(ws: &mut ServerWs, writer: &mut FrameWriter, code: CloseCode) {
    let frame = CloseFrame { code: code.code().into(), reason: code.reason().into() };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if writer.write_to(ws.get_mut()).await.is_err() || ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// What a client said in its `hello`.
struct Hello {
    user: String,
    /// A session to resume.
    session: Option<String>,
    /// The client reads several messages per frame.
    batch: bool,
}

/// Reads until a valid `hello`; answers everything else with an error.
/// `None`: the connection ended (closed, or closed by us).
async fn hello(ws: &mut ServerWs, gw: &Gateway) -> Option<Hello> {
    loop {
        let refusal = match ws.next().await? {
            Ok(Message::Text(text)) => match client::parse(&text, &gw.chat.limits) {
                Ok(ClientMsg::Hello { user, session, batch, .. }) => return Some(Hello { user, session, batch }),
                Ok(_) => client::Refusal::new(ErrorCode::HelloRequired, "say hello first"),
                Err(refusal) => refusal,
            },
            Ok(Message::Binary(_)) => client::Refusal::new(ErrorCode::BinaryFrame, "frames are JSON text"),
            Ok(Message::Close(_)) => return None,
            Ok(_) => continue,
            Err(WsError::Capacity(_)) => {
                close(ws, &mut FrameWriter::default(), CloseCode::FrameTooLarge).await;
                return None;
            }
            Err(_) => return None,
        };
        if !send_now(ws, &refusal.to_msg()).await {
            return None;
        }
    }
}

fn session_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a session ended.
enum End {
    /// The client closed or vanished.
    Gone,
    /// We close with this code.
    Close(CloseCode),
}

async fn run(gw: Arc<Gateway>, mut ws: ServerWs) {
    let Hello { user, session: resume, batch } =
        match tokio::time::timeout(gw.chat.hello_timeout, hello(&mut ws, &gw)).await {
            Ok(Some(hello)) => hello,
            Ok(None) => return,
            Err(_) => {
                close(&mut ws, &mut FrameWriter::default(), CloseCode::HelloTimeout).await;
                return;
            }
        };
    let conn: ConnId = gw.next_conn.fetch_add(1, Ordering::Relaxed);
    let queue = Arc::new(ConnQueue::new(gw.chat.client_queue_bytes, batch));
    // A session named in `hello` is resumed: the same id, which the room
    // owners' de-duplication of retried sends is keyed on with the user.
    let session = resume.filter(|s| valid_session(s)).unwrap_or_else(session_id);
    let welcome = welcome(&gw, &user, session, batch);
    queue.push(welcome);
    gw.backplane.core().connect(conn, &user, queue.clone(), now_ms());
    // The node closes its connections through their queues when it stops
    // (`Core::close_all`); one that connected after that closes itself.
    if gw.clients_stop.is_cancelled() {
        queue.close(CloseCode::GoingAway);
    }
    debug!(conn, user, "client connected");

    // Made once and polled in every round: a close request is a permit
    // kept by the `Notify`, so none is missed between rounds.
    let closing = queue.wake.notified();
    tokio::pin!(closing);
    // What the writer took from the queue, how much it took last time, and
    // the frames not written yet (kept across a close request).
    let mut taken = VecDeque::new();
    let mut backlog = 0;
    let mut writer = FrameWriter::default();
    let end = loop {
        // Not biased: a connection with a queue that never empties (a busy
        // publisher's acks and echoes) must still have its frames read.
        tokio::select! {
            _ = &mut closing => break End::Close(closing_code(&queue)),
            () = queue.ready() => {
                // Messages coming faster than one per write: let the tasks
                // that are ready (the core's step, other sessions) run
                // first, so this write carries more of them. A connection
                // that gets one message at a time writes it at once.
                if backlog > 1 {
                    tokio::task::yield_now().await;
                }
                queue.take(&mut taken);
                backlog = taken.len();
                tokio::select! {
                    biased;
                    _ = &mut closing => break End::Close(closing_code(&queue)),
                    written = write_queued(&mut ws, &mut writer, &mut taken, &queue) => if !written { break End::Gone },
                }
            }
            frame = ws.next() => {
                // The frames that arrived together (up to READ_BATCH) are
                // handled in one step of the core, in order: what they
                // sequence goes to the replicas in one `Replicate` per room.
                let mut frame = frame;
                let mut texts = Vec::new();
                let ended = loop {
                    match frame {
                        Some(Ok(Message::Text(text))) => texts.push(text),
                        other => {
                            handle(&gw, conn, &queue, &mut texts);
                            if let Some(end) = non_text(other, &queue) {
                                break Some(end);
                            }
                        }
                    }
                    if texts.len() >= READ_BATCH {
                        break None;
                    }
                    match ws.next().now_or_never() {
                        Some(next) => frame = next,
                        None => break None,
                    }
                };
                handle(&gw, conn, &queue, &mut texts);
                if let Some(end) = ended {
                    break end;
                }
            }
        }
    };
    gw.backplane.core().disconnect(conn, now_ms());
    if let End::Close(code) = end {
        debug!(conn, user, code = code.code(), "closing client connection");
        close(&mut ws, &mut writer, code).await;
    }
}

fn closing_code(queue: &ConnQueue) -> CloseCode {
    queue.close.lock().expect("close mutex poisoned").unwrap_or(CloseCode::InternalError)
}

fn refusal_text(code: ErrorCode, message: &str) -> Text {
    let msg = ServerMsg::Error { code, message: message.to_owned(), id: None };
    Text::from(serde_json::to_string(&msg).expect("serializable"))
}

/// Session ids: 1–64 bytes of ASCII letters, digits, `-` and `_`.
fn valid_session(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn welcome(gw: &Gateway, user: &str, session: String, batch: bool) -> Text {
    let view = gw.cluster.view().borrow().clone();
    // This node first, then the other alive, non-draining nodes.
    let mut nodes: Vec<String> = Vec::new();
    let me = view.members.iter().find(|m| m.is_self);
    // A member whose gossiped state has not arrived yet is listed at the
    // default URL of its advertised HTTP address.
    for m in me.into_iter().chain(view.active().filter(|m| !m.is_self)) {
        match &m.status {
            Some(status) if status.draining => {}
            Some(status) => nodes.push(status.ws_url.clone()),
            None => nodes.push(format!("ws://{}/ws", m.identity.http)),
        }
    }
    let msg = ServerMsg::Welcome {
        session,
        user: user.to_owned(),
        node: view.me.name.clone(),
        nodes,
        protocol: PROTOCOL_VERSION,
        max_body: gw.chat.limits.max_body,
        batch,
    };
    Text::from(serde_json::to_string(&msg).expect("serializable"))
}

/// A frame that is not text: refused, ignored, or the session's end.
fn non_text(frame: Option<Result<Message, WsError>>, queue: &ConnQueue) -> Option<End> {
    match frame {
        Some(Ok(Message::Binary(_))) => {
            queue.push(refusal_text(ErrorCode::BinaryFrame, "frames are JSON text"));
            None
        }
        Some(Ok(Message::Close(_))) | None => Some(End::Gone),
        Some(Err(WsError::Capacity(_))) => Some(End::Close(CloseCode::FrameTooLarge)),
        Some(Err(_)) => Some(End::Gone),
        Some(Ok(_)) => None,
    }
}

/// Handles the text frames a client sent after `hello` (taking them from
/// `texts`), in order, in one step of the core. Never waits.
fn handle(gw: &Gateway, conn: ConnId, queue: &ConnQueue, texts: &mut Vec<Text>) {
    if texts.is_empty() {
        return;
    }
    // Parsed before the core is locked; answered in order under it.
    let msgs: Vec<Result<ClientMsg, client::Refusal>> =
        texts.drain(..).map(|text| client::parse(&text, &gw.chat.limits)).collect();
    let now = now_ms();
    let mut core = gw.backplane.core();
    core.begin_batch();
    for msg in msgs {
        match msg {
            Err(refusal) => {
                queue.push(Text::from(serde_json::to_string(&refusal.to_msg()).expect("serializable")));
            }
            Ok(ClientMsg::Hello { .. }) => {
                queue.push(refusal_text(ErrorCode::AlreadyHello, "this connection already said hello"));
            }
            Ok(ClientMsg::Ping { id }) => {
                queue.push(Text::from(serde_json::to_string(&ServerMsg::Pong { id }).expect("serializable")));
            }
            Ok(ClientMsg::Join { room, since }) => core.join(conn, &room, since, now),
            Ok(ClientMsg::Leave { room }) => core.leave(conn, &room, now),
            Ok(ClientMsg::Send { room, body, id }) => core.send(conn, &room, body, &id, now),
            Ok(ClientMsg::Direct { to, body, id }) => core.direct(conn, &to, body, &id, now),
            Ok(ClientMsg::Broadcast { body, id }) => core.broadcast(conn, body, &id, now),
        }
    }
    core.end_batch(now);
}

/// Writes what was taken from the queue as frames, in one vectored write
/// where the socket takes it (see [`FrameWriter`]): one frame per message,
/// or frames of lines when the client asked for batches (see
/// [`batch_len`]). tungstenite's own buffer (a pong) goes out first.
/// `false`: the connection is gone.
async fn write_queued(
    ws: &mut ServerWs,
    writer: &mut FrameWriter,
    taken: &mut VecDeque<Text>,
    queue: &ConnQueue,
) -> bool {
    if ws.flush().await.is_err() {
        return false;
    }
    let mut sent = 0;
    let texts = taken.make_contiguous();
    let mut at = 0;
    while at < texts.len() {
        let count = if queue.batch { batch_len(&texts[at..]) } else { 1 };
        sent += writer.frame(&texts[at..at + count]);
        at += count;
    }
    taken.clear();
    let ok = writer.write_to(ws.get_mut()).await.is_ok();
    queue.queued.fetch_sub(sent, Ordering::Relaxed);
    ok
}

/// How many queued items from the front of `taken` make one batched frame:
/// up to [`WRITE_BATCH`], stopping once [`BATCH_BYTES`] are taken (so at
/// most that plus one item). An item of [`OWN_FRAME_BYTES`] or more (a
/// room's run, usually) is a frame of its own: it goes out from the bytes
/// every subscriber shares, where joining it would copy it per subscriber.
fn batch_len(taken: &[Text]) -> usize {
    let mut count = 0;
    let mut bytes = 0;
    for text in taken.iter().take(WRITE_BATCH) {
        if text.len() >= OWN_FRAME_BYTES {
            return count.max(1);
        }
        count += 1;
        bytes += text.len();
        if bytes >= BATCH_BYTES {
            break;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(texts: &[&str]) -> VecDeque<Text> {
        texts.iter().map(|t| Text::from(t.to_string())).collect()
    }

    #[test]
    fn a_batch_is_bounded_in_messages_and_bytes() {
        let many: Vec<String> = (0..WRITE_BATCH + 10).map(|i| format!("{{\"i\":{i}}}")).collect();
        let mut taken = queue(&many.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(batch_len(taken.make_contiguous()), WRITE_BATCH, "the rest goes in the next frame");
        assert_eq!(batch_len(&[Text::from("{}")]), 1);

        let kib = "x".repeat(1024);
        let mut taken = queue(&vec![kib.as_str(); 100]);
        assert_eq!(batch_len(taken.make_contiguous()), BATCH_BYTES / 1024, "stops once {BATCH_BYTES} bytes are taken");
    }

    #[test]
    fn a_large_item_is_a_frame_of_its_own() {
        let run = "r".repeat(OWN_FRAME_BYTES);
        let mut taken = queue(&["{}", "{}", &run, "{}"]);
        let taken = taken.make_contiguous();
        assert_eq!(batch_len(taken), 2, "the small ones before it");
        assert_eq!(batch_len(&taken[2..]), 1, "the large one alone");
        assert_eq!(batch_len(&taken[3..]), 1);
    }

    #[tokio::test]
    async fn a_push_to_an_empty_queue_wakes_the_writer_and_one_take_gets_all() {
        let queue = Arc::new(ConnQueue::new(1 << 20, false));
        let writer = tokio::spawn({
            let queue = queue.clone();
            async move {
                queue.ready().await;
                let mut taken = VecDeque::new();
                queue.take(&mut taken);
                taken
            }
        });
        tokio::task::yield_now().await;
        assert!(queue.push(Text::from("{\"a\":1}")));
        let taken = tokio::time::timeout(Duration::from_secs(5), writer).await.expect("woken").expect("joined");
        assert_eq!(taken.len(), 1);
        // A round takes at most WRITE_BATCH messages, oldest first.
        for i in 0..WRITE_BATCH + 6 {
            assert!(queue.push(Text::from(format!("{{\"i\":{i}}}"))));
        }
        let mut taken = VecDeque::new();
        queue.take(&mut taken);
        assert_eq!((taken.len(), taken[0].as_str()), (WRITE_BATCH, "{\"i\":0}"));
        queue.take(&mut taken);
        assert_eq!(taken.len(), WRITE_BATCH + 6);
        // Over the limit: refused and closing.
        let small = ConnQueue::new(4, false);
        assert!(!small.push(Text::from("{\"b\":22}")));
        assert_eq!(closing_code(&small), CloseCode::SlowConsumer);
    }

    #[tokio::test]
    async fn a_run_pushed_at_once_is_queued_in_order_and_counted_whole() {
        let queue = Arc::new(ConnQueue::new(20, false));
        let writer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.ready().await }
        });
        tokio::task::yield_now().await;
        let run = Run::new(vec![Text::from("{\"a\":1}"), Text::from("{\"b\":2}")]);
        assert!(queue.push_run(&run));
        tokio::time::timeout(Duration::from_secs(5), writer).await.expect("woken").expect("joined");
        let mut taken = VecDeque::new();
        queue.take(&mut taken);
        assert_eq!(taken, VecDeque::from(run.texts().to_vec()));
        assert_eq!(queue.queued.load(Ordering::Relaxed), 14);
        // 14 + 14 bytes pass the 20-byte limit: the whole run is refused.
        assert!(!queue.push_run(&run));
        assert_eq!(closing_code(&queue), CloseCode::SlowConsumer);
    }

    #[test]
    fn a_batched_clients_queue_takes_a_run_as_one_item_of_lines_joined_once() {
        let run = Run::new(vec![Text::from("{\"a\":1}"), Text::from("{\"b\":2}")]);
        let (one, two) = (ConnQueue::new(1 << 20, true), ConnQueue::new(1 << 20, true));
        assert!(one.push_run(&run) && two.push_run(&run));
        let (mut a, mut b) = (VecDeque::new(), VecDeque::new());
        one.take(&mut a);
        two.take(&mut b);
        assert_eq!(a, VecDeque::from([Text::from("{\"a\":1}\n{\"b\":2}")]));
        assert_eq!(a[0].as_ptr(), b[0].as_ptr(), "the same bytes for every subscriber");
        assert_eq!(one.queued.load(Ordering::Relaxed), 15, "the separator is counted");
        // A run of one is the message itself.
        let lone = Run::new(vec![Text::from("{}")]);
        assert_eq!(lone.lines().as_ptr(), lone.texts()[0].as_ptr());
    }
}
