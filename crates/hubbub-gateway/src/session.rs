//! `GET /ws`: one client's WebSocket session (docs/protocol.md).
//!
//! One task per connection reads frames, hands requests to the backplane
//! and writes what the connection's queue holds. Everything the client
//! receives goes through that queue ([`ConnQueue`]), in order: answers,
//! errors and deliveries. The queue is bounded in bytes; the backplane never
//! waits on it, so a client that stops reading is closed (4008) instead of
//! slowing a room. The writer takes what is queued in one go and flushes
//! once; for a client that asked for batches (`hello.batch`) it also joins
//! those messages into one frame, one per line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hubbub_backplane::{ConnId, ConnSink, Text, now_ms};
use hubbub_proto::client::{self, ClientMsg, CloseCode, ErrorCode, PROTOCOL_VERSION, ServerMsg};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::debug;

use crate::upgrade::ServerWs;
use crate::{AppError, Gateway};

/// How long a close frame may take to reach a client that is not reading.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Messages written before one flush.
const WRITE_BATCH: usize = 64;
/// A batched frame takes no more messages once it holds this many bytes
/// (so it is at most this plus one message).
const BATCH_BYTES: usize = 64 * 1024;

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

/// A connection's outgoing queue, bounded in bytes. Unbounded as a channel
/// because the backplane pushes under its lock and must not wait; `queued`
/// enforces the bound.
struct ConnQueue {
    tx: mpsc::UnboundedSender<Text>,
    queued: AtomicUsize,
    limit: usize,
    close: Mutex<Option<CloseCode>>,
    wake: Notify,
}

impl ConnSink for ConnQueue {
    fn push(&self, text: Text) -> bool {
        let len = text.len();
        let queued = self.queued.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.limit {
            self.close(CloseCode::SlowConsumer);
            return false;
        }
        let _ = self.tx.send(text);
        true
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

/// Sends a close frame, then reads (and drops) what the client still sends
/// until its close reply, so the socket is not reset with unread data (a
/// reset can destroy the close frame before the client reads it).
async fn close(ws: &mut ServerWs, code: CloseCode) {
    let frame = CloseFrame { code: code.code().into(), reason: code.reason().into() };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_err() {
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
                close(ws, CloseCode::FrameTooLarge).await;
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
                close(&mut ws, CloseCode::HelloTimeout).await;
                return;
            }
        };
    let conn: ConnId = gw.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let queue = Arc::new(ConnQueue {
        tx,
        queued: AtomicUsize::new(0),
        limit: gw.chat.client_queue_bytes,
        close: Mutex::new(None),
        wake: Notify::new(),
    });
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
    // Messages queued when the last write began.
    let mut backlog = 0;
    let end = loop {
        tokio::select! {
            biased;
            _ = &mut closing => break End::Close(closing_code(&queue)),
            text = rx.recv() => {
                let Some(text) = text else { break End::Gone };
                // Messages coming faster than one per write: let the tasks
                // that are ready (the core's step, other sessions) run
                // first, so this write carries more of them. A connection
                // that gets one message at a time writes it at once.
                if backlog > 1 {
                    tokio::task::yield_now().await;
                }
                backlog = rx.len() + 1;
                tokio::select! {
                    biased;
                    _ = &mut closing => break End::Close(closing_code(&queue)),
                    written = write_batch(&mut ws, text, &mut rx, &queue, batch) => if !written { break End::Gone },
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => handle(&gw, conn, &queue, &text),
                Some(Ok(Message::Binary(_))) => {
                    queue.push(refusal_text(ErrorCode::BinaryFrame, "frames are JSON text"));
                }
                Some(Ok(Message::Close(_))) | None => break End::Gone,
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(_))) => break End::Close(CloseCode::FrameTooLarge),
                Some(Err(_)) => break End::Gone,
            },
        }
    };
    gw.backplane.core().disconnect(conn, now_ms());
    if let End::Close(code) = end {
        debug!(conn, user, code = code.code(), "closing client connection");
        close(&mut ws, code).await;
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

/// Handles one text frame after `hello`. Never waits.
fn handle(gw: &Gateway, conn: ConnId, queue: &ConnQueue, text: &str) {
    let msg = match client::parse(text, &gw.chat.limits) {
        Ok(msg) => msg,
        Err(refusal) => {
            queue.push(Text::from(serde_json::to_string(&refusal.to_msg()).expect("serializable")));
            return;
        }
    };
    let now = now_ms();
    match msg {
        ClientMsg::Hello { .. } => {
            queue.push(refusal_text(ErrorCode::AlreadyHello, "this connection already said hello"));
        }
        ClientMsg::Ping { id } => {
            queue.push(Text::from(serde_json::to_string(&ServerMsg::Pong { id }).expect("serializable")));
        }
        ClientMsg::Join { room, since } => gw.backplane.core().join(conn, &room, since, now),
        ClientMsg::Leave { room } => gw.backplane.core().leave(conn, &room, now),
        ClientMsg::Send { room, body, id } => gw.backplane.core().send(conn, &room, body, &id, now),
        ClientMsg::Direct { to, body, id } => gw.backplane.core().direct(conn, &to, body, &id, now),
        ClientMsg::Broadcast { body, id } => gw.backplane.core().broadcast(conn, body, &id, now),
    }
}

/// Writes `first` and what else is queued, then flushes: one frame per
/// message, or one frame for all of them when the client asked for batches.
/// `false`: the connection is gone.
async fn write_batch(
    ws: &mut ServerWs,
    first: Text,
    rx: &mut mpsc::UnboundedReceiver<Text>,
    queue: &ConnQueue,
    batch: bool,
) -> bool {
    let sent = if batch {
        let (frame, taken) = join_batch(first, rx, queue.queued.load(Ordering::Relaxed));
        if ws.feed(Message::Text(frame)).await.is_err() {
            return false;
        }
        taken
    } else {
        let mut taken = first.len();
        if ws.feed(Message::Text(first)).await.is_err() {
            return false;
        }
        for _ in 1..WRITE_BATCH {
            let Ok(text) = rx.try_recv() else { break };
            taken += text.len();
            if ws.feed(Message::Text(text)).await.is_err() {
                return false;
            }
        }
        taken
    };
    let ok = ws.flush().await.is_ok();
    queue.queued.fetch_sub(sent, Ordering::Relaxed);
    ok
}

/// `first` and what else is queued (up to [`WRITE_BATCH`] messages, and
/// [`BATCH_BYTES`] plus one message) as one frame of lines, and the bytes
/// taken from the queue. A lone message is sent as it is, without a copy.
/// `queued` (the bytes queued, `first` included) sizes the frame, so it is
/// allocated once instead of doubling as it grows.
fn join_batch(first: Text, rx: &mut mpsc::UnboundedReceiver<Text>, queued: usize) -> (Text, usize) {
    let mut taken = first.len();
    let mut joined: Option<String> = None;
    for _ in 1..WRITE_BATCH {
        if taken >= BATCH_BYTES {
            break;
        }
        let Ok(text) = rx.try_recv() else { break };
        taken += text.len();
        let frame = joined.get_or_insert_with(|| {
            let mut frame = String::with_capacity(queued.clamp(first.len(), BATCH_BYTES) + WRITE_BATCH);
            frame.push_str(first.as_str());
            frame
        });
        frame.push(client::BATCH_SEPARATOR);
        frame.push_str(text.as_str());
    }
    (joined.map_or(first, Text::from), taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(texts: &[&str]) -> mpsc::UnboundedReceiver<Text> {
        let (tx, rx) = mpsc::unbounded_channel();
        for t in texts {
            tx.send(Text::from(t.to_string())).unwrap();
        }
        rx
    }

    #[test]
    fn a_batch_joins_what_is_queued_one_message_per_line() {
        let mut rx = queue(&[r#"{"b":2}"#, r#"{"c":3}"#]);
        let (frame, taken) = join_batch(Text::from(r#"{"a":1}"#), &mut rx, 0);
        assert_eq!(frame.as_str(), "{\"a\":1}\n{\"b\":2}\n{\"c\":3}");
        assert_eq!(taken, 21, "bytes of the three messages, without separators");
        assert!(rx.try_recv().is_err());

        let mut empty = queue(&[]);
        let (frame, taken) = join_batch(Text::from("{}"), &mut empty, 2);
        assert_eq!((frame.as_str(), taken), ("{}", 2));
    }

    #[test]
    fn a_batch_is_bounded_in_messages_and_bytes() {
        let many: Vec<String> = (0..WRITE_BATCH + 10).map(|i| format!("{{\"i\":{i}}}")).collect();
        let mut rx = queue(&many.iter().map(String::as_str).collect::<Vec<_>>());
        let (frame, _) = join_batch(Text::from("{}"), &mut rx, 1 << 30);
        assert_eq!(client::split_batch(frame.as_str()).count(), WRITE_BATCH);
        assert_eq!(rx.len(), 10 + 1, "the rest waits for the next frame");

        let big = "x".repeat(BATCH_BYTES / 2);
        let mut rx = queue(&[&big, &big, &big]);
        let (frame, taken) = join_batch(Text::from(big.clone()), &mut rx, 0);
        assert_eq!(client::split_batch(frame.as_str()).count(), 2, "stops once {BATCH_BYTES} bytes are taken");
        assert_eq!(taken, BATCH_BYTES);
        assert_eq!(rx.len(), 2);
    }
}
