//! A Rust client for Hubbub's chat protocol (docs/protocol.md).
//!
//! [`Connection`] is one WebSocket to one node, speaking the typed frames of
//! [`hubbub_proto::client`]. Request helpers ([`Connection::hello`],
//! [`Connection::join`], …) wait for their answer and keep every other frame
//! that arrives meanwhile, in order, for [`Connection::next_event`]. For
//! concurrent sending and receiving (bots, load generators) split it with
//! [`Connection::split`]. Frames that carry several messages (a `hello`
//! with `batch: true`, sent with [`Connection::send`]) are read one message
//! at a time like any other.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hubbub_client::ClientError> {
//! use hubbub_client::Connection;
//! let mut conn = Connection::connect("ws://127.0.0.1:7000/ws").await?;
//! let welcome = conn.hello("ann").await?;
//! conn.join("lobby").await?;
//! let seq = conn.send_and_ack("lobby", "hello", "m1").await?;
//! # let _ = (welcome, seq); Ok(()) }
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
pub use hubbub_proto::client::{Audience, ClientMsg, CloseCode, ErrorCode, ServerMsg};
pub use resilient::{ResilientClient, ResilientEvent, ResilientOpts};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod resilient;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long request helpers wait for their answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the node sent a frame that is not protocol JSON: {0}")]
    BadFrame(String),
    #[error("connection closed ({code}: {reason})")]
    Closed { code: u16, reason: String },
    #[error("the node refused the request: {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What arrives from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A protocol frame.
    Msg(ServerMsg),
    /// The node closed the connection (code 1006 when it vanished without a
    /// close frame).
    Closed { code: u16, reason: String },
}

/// The `welcome` frame's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub session: String,
    pub user: String,
    pub node: String,
    pub nodes: Vec<String>,
    pub protocol: u32,
    pub max_body: usize,
}

fn config() -> WebSocketConfig {
    // A small read buffer: tungstenite zero-fills it before every read.
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// One WebSocket connection to a node.
pub struct Connection {
    ws: Ws,
    /// Events read while waiting for another one ([`Connection::wait_for`]).
    backlog: VecDeque<Event>,
    /// The rest of a batched frame, not read yet.
    unread: VecDeque<ServerMsg>,
    closed: Option<(u16, String)>,
    timeout: Duration,
}

impl Connection {
    /// Opens a WebSocket to `url` (`ws://host:port/ws`). Sends nothing yet.
    pub async fn connect(url: &str) -> Result<Connection, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config()), true).await?;
        Ok(Connection { ws, backlog: VecDeque::new(), unread: VecDeque::new(), closed: None, timeout: DEFAULT_TIMEOUT })
    }

    /// Connects and says `hello` as `user`.
    pub async fn open(url: &str, user: &str) -> Result<(Connection, Welcome), ClientError> {
        let mut conn = Connection::connect(url).await?;
        let welcome = conn.hello(user).await?;
        Ok((conn, welcome))
    }

    /// Sets how long request helpers wait (default [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends one typed frame.
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        send_msg(&mut self.ws, msg).await
    }

    /// Sends raw text (for testing how a node handles bad input).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        self.ws.send(Message::text(text.into())).await?;
        Ok(())
    }

    /// Sends a binary frame (which the protocol refuses).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// The next event: kept ones first, then from the socket. After a close,
    /// keeps returning the close.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        if let Some(e) = self.backlog.pop_front() {
            return Ok(e);
        }
        self.read().await
    }

    /// [`Connection::next_event`] with a deadline.
    pub async fn next_event_within(&mut self, within: Duration) -> Result<Event, ClientError> {
        tokio::time::timeout(within, self.next_event()).await.map_err(|_| ClientError::Timeout(within))?
    }

    async fn read(&mut self) -> Result<Event, ClientError> {
        if let Some((code, reason)) = &self.closed {
            return Ok(Event::Closed { code: *code, reason: reason.clone() });
        }
        let event = read_event(&mut self.ws, &mut self.unread).await?;
        if let Event::Closed { code, reason } = &event {
            self.closed = Some((*code, reason.clone()));
        }
        Ok(event)
    }

    /// Reads until `pick` accepts an event, keeping the others for later.
    /// A close ends the wait with [`ClientError::Closed`].
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(&ServerMsg) -> Option<T>) -> Result<T, ClientError> {
        let timeout = self.timeout;
        let wait = async {
            // Kept events are scanned first, in order.
            if let Some(pos) = self.backlog.iter().position(|e| matches!(e, Event::Msg(m) if pick(m).is_some())) {
                let Some(Event::Msg(m)) = self.backlog.remove(pos) else { unreachable!("position matched a Msg") };
                return Ok(pick(&m).expect("matched above"));
            }
            loop {
                match self.read().await? {
                    Event::Msg(m) => match pick(&m) {
                        Some(t) => return Ok(t),
                        None => self.backlog.push_back(Event::Msg(m)),
                    },
                    Event::Closed { code, reason } => return Err(ClientError::Closed { code, reason }),
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Says `hello` and waits for `welcome`.
    pub async fn hello(&mut self, user: &str) -> Result<Welcome, ClientError> {
        self.send(&ClientMsg::Hello { user: user.to_owned(), token: None, session: None, batch: false }).await?;
        self.wait_for(|m| match m {
            ServerMsg::Welcome { session, user, node, nodes, protocol, max_body, .. } => Some(Ok(Welcome {
                session: session.clone(),
                user: user.clone(),
                node: node.clone(),
                nodes: nodes.clone(),
                protocol: *protocol,
                max_body: *max_body,
            })),
            ServerMsg::Error { code, message, .. } => {
                Some(Err(ClientError::Refused { code: *code, message: message.clone() }))
            }
            _ => None,
        })
        .await?
    }

    /// Joins `room`; returns the room's last sequence number.
    pub async fn join(&mut self, room: &str) -> Result<u64, ClientError> {
        self.send(&ClientMsg::Join { room: room.to_owned(), since: None }).await?;
        self.wait_for(|m| match m {
            ServerMsg::Joined { room: r, seq, .. } if r == room => Some(Ok(*seq)),
            ServerMsg::Error { code, message, id: None } => {
                Some(Err(ClientError::Refused { code: *code, message: message.clone() }))
            }
            _ => None,
        })
        .await?
    }

    /// Leaves `room` and waits for `left`.
    pub async fn leave(&mut self, room: &str) -> Result<(), ClientError> {
        self.send(&ClientMsg::Leave { room: room.to_owned() }).await?;
        self.wait_for(|m| match m {
            ServerMsg::Left { room: r } if r == room => Some(Ok(())),
            ServerMsg::Error { code, message, id: None } => {
                Some(Err(ClientError::Refused { code: *code, message: message.clone() }))
            }
            _ => None,
        })
        .await?
    }

    /// Sends to `room` and waits for the `ack` of `id`; returns its seq.
    pub async fn send_and_ack(&mut self, room: &str, body: &str, id: &str) -> Result<u64, ClientError> {
        self.send(&ClientMsg::Send { room: room.to_owned(), body: body.to_owned(), id: id.to_owned() }).await?;
        self.wait_ack(id).await.map(|(_, seq)| seq.unwrap_or(0))
    }

    /// Waits for the `ack` (or `error`) carrying `id`; returns the ack's room and seq.
    pub async fn wait_ack(&mut self, id: &str) -> Result<(Option<String>, Option<u64>), ClientError> {
        self.wait_for(|m| match m {
            ServerMsg::Ack { id: i, room, seq } if i == id => Some(Ok((room.clone(), *seq))),
            ServerMsg::Error { code, message, id: Some(i) } if i == id => {
                Some(Err(ClientError::Refused { code: *code, message: message.clone() }))
            }
            _ => None,
        })
        .await?
    }

    /// Waits for the next `error` frame; returns its code and id.
    pub async fn wait_error(&mut self) -> Result<(ErrorCode, Option<String>), ClientError> {
        self.wait_for(|m| match m {
            ServerMsg::Error { code, id, .. } => Some((*code, id.clone())),
            _ => None,
        })
        .await
    }

    /// Waits for the close frame and returns its code and reason. Frames that
    /// arrive before it are kept.
    pub async fn wait_close(&mut self) -> Result<(u16, String), ClientError> {
        let timeout = self.timeout;
        let wait = async {
            loop {
                match self.read().await? {
                    Event::Closed { code, reason } => return Ok((code, reason)),
                    e => self.backlog.push_back(e),
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Splits into a sender and a receiver that can be used from two tasks.
    /// Kept events are returned first by the receiver.
    pub fn split(self) -> (Sender, Receiver) {
        let (sink, stream) = self.ws.split();
        (Sender { sink }, Receiver { stream, backlog: self.backlog, unread: self.unread, closed: self.closed })
    }
}

/// The sending half of a split [`Connection`].
pub struct Sender {
    sink: SplitSink<Ws, Message>,
}

impl Sender {
    /// Sends one typed frame.
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        let text = serde_json::to_string(msg).expect("client frames always serialize");
        self.sink.send(Message::text(text)).await?;
        Ok(())
    }

    /// Closes the connection normally.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.sink.close().await?;
        Ok(())
    }
}

/// The receiving half of a split [`Connection`].
pub struct Receiver {
    stream: SplitStream<Ws>,
    backlog: VecDeque<Event>,
    unread: VecDeque<ServerMsg>,
    closed: Option<(u16, String)>,
}

impl Receiver {
    /// The next event; after a close, keeps returning the close.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        if let Some(e) = self.backlog.pop_front() {
            return Ok(e);
        }
        if let Some((code, reason)) = &self.closed {
            return Ok(Event::Closed { code: *code, reason: reason.clone() });
        }
        let event = read_event(&mut self.stream, &mut self.unread).await?;
        if let Event::Closed { code, reason } = &event {
            self.closed = Some((*code, reason.clone()));
        }
        Ok(event)
    }
}

async fn send_msg(ws: &mut Ws, msg: &ClientMsg) -> Result<(), ClientError> {
    let text = serde_json::to_string(msg).expect("client frames always serialize");
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// The next message: the rest of the last frame first (`unread`: a frame
/// can carry several messages, one per line, when the connection asked for
/// batches), then from the socket.
async fn read_event<S>(stream: &mut S, unread: &mut VecDeque<ServerMsg>) -> Result<Event, ClientError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    use tokio_tungstenite::tungstenite::Error as WsError;
    if let Some(msg) = unread.pop_front() {
        return Ok(Event::Msg(msg));
    }
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                for line in hubbub_proto::client::split_batch(&text) {
                    let msg = serde_json::from_str::<ServerMsg>(line)
                        .map_err(|e| ClientError::BadFrame(format!("{e}: {line}")))?;
                    unread.push_back(msg);
                }
                match unread.pop_front() {
                    Some(msg) => return Ok(Event::Msg(msg)),
                    None => return Err(ClientError::BadFrame("an empty text frame".to_owned())),
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) =
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                return Ok(Event::Closed { code, reason });
            }
            Some(Ok(Message::Binary(_))) => return Err(ClientError::BadFrame("binary frame".to_owned())),
            Some(Ok(_)) => continue,
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) | None => {
                return Ok(Event::Closed { code: 1006, reason: "connection lost".to_owned() });
            }
            Some(Err(WsError::Io(_) | WsError::Protocol(_))) => {
                return Ok(Event::Closed { code: 1006, reason: "connection lost".to_owned() });
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
}
