//! The two protocols the load generator speaks over WebSocket: Hubbub's JSON
//! frames (docs/protocol.md) and NATS's text protocol, which NATS carries over
//! WebSocket as a byte stream (one protocol operation may span frames, and
//! one frame may hold several).
//!
//! Both sides encode a message body the same way ([`write_body`]): room,
//! publisher, publisher sequence number and send time, padded to the
//! requested size, ASCII only so it needs no JSON escaping.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hubbub_proto::client::ClientMsg;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Which server the load generator talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    Hubbub,
    Nats,
}

/// One server URL and the address it resolved to.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
}

pub(crate) async fn resolve(urls: &str) -> Result<Vec<Endpoint>, String> {
    let mut out = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let rest = url.strip_prefix("ws://").ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr = tokio::net::lookup_host(hostport)
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| format!("{url}: no IPv4 address"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{url}: the load generator only targets loopback addresses"));
        }
        out.push(Endpoint { url: url.to_owned(), addr });
    }
    if out.is_empty() {
        return Err("--urls names no URL".into());
    }
    Ok(out)
}

/// The load generator's read buffer per connection. tungstenite's default
/// (128 KiB) is zero-filled on every socket read, which made that memset
/// the load generator's top cost; deliveries are small, so 8 KiB holds many.
const READ_BUFFER: usize = 8 * 1024;

/// Opens a WebSocket from `src` (a local address to bind, for spreading many
/// connections over several source addresses) to `ep`.
pub(crate) async fn open(ep: &Endpoint, src: Option<IpAddr>, timeout: Duration) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(src) = src {
        socket.bind(SocketAddr::new(src, 0)).map_err(|e| format!("bind {src}: {e}"))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(ep.addr))
        .await
        .map_err(|_| format!("connect to {} timed out", ep.addr))?
        .map_err(|e| format!("connect to {}: {e}", ep.addr))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (ws, _) = tokio::time::timeout(
        timeout,
        tokio_tungstenite::client_async_with_config(ep.url.as_str(), stream, Some(config)),
    )
    .await
    .map_err(|_| format!("WebSocket upgrade at {} timed out", ep.url))?
    .map_err(|e| format!("WebSocket upgrade at {}: {e}", ep.url))?;
    Ok(ws)
}

/// Something a server said, as far as the load generator cares.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// A delivered message's body.
    Delivery(&'a [u8]),
    /// Hubbub `ack` (NATS has none), with the send time its id carries.
    Ack(Option<u64>),
    /// Hubbub `error` (code, whether it carried an id) or NATS `-ERR`.
    Error(Cow<'a, str>, bool),
    /// Hubbub `welcome` or NATS `INFO`.
    Ready,
    /// Hubbub `joined` or NATS `PONG`.
    Joined,
    /// NATS `PING`: must be answered with `PONG`.
    Ping,
    Other,
}

/// Turns WebSocket messages into [`Event`]s; keeps NATS's partial operations.
pub(crate) enum Decoder {
    Hubbub,
    Nats(Vec<u8>),
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// Bodies are ASCII without escapes, so they can be borrowed (serde
    /// would not borrow a `Cow` inside an `Option`).
    #[serde(default)]
    body: Option<&'a str>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

impl Decoder {
    pub(crate) fn new(target: Target) -> Decoder {
        match target {
            Target::Hubbub => Decoder::Hubbub,
            Target::Nats => Decoder::Nats(Vec::with_capacity(4096)),
        }
    }

    /// Feeds one data message; calls `f` for every complete event in it.
    pub(crate) fn feed(&mut self, data: &[u8], f: &mut impl FnMut(Event<'_>)) {
        match self {
            // One message per line when the connection asked for batches
            // (`split_batch` on bytes: no UTF-8 check of the whole frame).
            Decoder::Hubbub => {
                let mut start = 0;
                let ends = memchr::memchr_iter(hubbub_proto::client::BATCH_SEPARATOR as u8, data).chain([data.len()]);
                for end in ends {
                    if end > start {
                        f(hubbub_event(&data[start..end]));
                    }
                    start = end + 1;
                }
            }
            Decoder::Nats(buf) => {
                buf.extend_from_slice(data);
                let used = nats_events(buf, f);
                buf.drain(..used);
            }
        }
    }
}

/// How every room message the server renders begins
/// (`hubbub_proto::client::room_message_json` writes `type` first).
const MESSAGE_START: &[u8] = br#"{"type":"message","#;
/// The key before a message's body. JSON escapes every `"` inside a string,
/// so these bytes can only be a key, never part of a value.
const BODY_KEY: &[u8] = br#","body":""#;

/// A room message's body, found without parsing the whole object: that
/// parse was most of the load generator's own CPU per delivery, which on
/// a shared box is CPU the servers under test do not get (NATS's deliveries
/// are a length-prefixed scan). Anything else, or a body with an escape,
/// is `None` and goes through serde_json. The body is then checked as a
/// stamp ([`read_body`]), so a wrong match counts as foreign, not delivered.
fn message_body(data: &[u8]) -> Option<&[u8]> {
    let rest = data.strip_prefix(MESSAGE_START)?;
    if data.last() != Some(&b'}') {
        return None;
    }
    static BODY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(BODY_KEY));
    let body = &rest[BODY.find(rest)? + BODY_KEY.len()..];
    let end = memchr::memchr2(b'"', b'\\', body)?;
    (body[end] == b'"').then_some(&body[..end])
}

fn hubbub_event(data: &[u8]) -> Event<'_> {
    if let Some(body) = message_body(data) {
        return Event::Delivery(body);
    }
    let Ok(msg) = serde_json::from_slice::<Incoming<'_>>(data) else {
        return Event::Error(Cow::Borrowed("unparsable_frame"), false);
    };
    match msg.kind.as_ref() {
        "message" => match msg.body {
            Some(b) => Event::Delivery(b.as_bytes()),
            None => Event::Error(Cow::Borrowed("message_without_body"), false),
        },
        "ack" => Event::Ack(msg.id.as_deref().and_then(|id| id.split_once('.')).and_then(|(_, t)| t.parse().ok())),
        "error" => Event::Error(Cow::Owned(msg.code.unwrap_or_default().into_owned()), msg.id.is_some()),
        "welcome" => Event::Ready,
        "joined" => Event::Joined,
        _ => Event::Other,
    }
}

/// Parses complete NATS operations from `buf`; returns the bytes consumed.
fn nats_events(buf: &[u8], f: &mut impl FnMut(Event<'_>)) -> usize {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { return at };
        let line = &rest[..eol];
        if line.starts_with(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let len = line
                .rsplit(|b| *b == b' ')
                .next()
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok());
            let Some(len) = len else {
                f(Event::Error(Cow::Borrowed("bad_msg_line"), false));
                return buf.len();
            };
            let need = eol + 2 + len + 2;
            if rest.len() < need {
                return at;
            }
            f(Event::Delivery(&rest[eol + 2..eol + 2 + len]));
            at += need;
            continue;
        }
        if line == b"PING" {
            f(Event::Ping);
        } else if line == b"PONG" {
            f(Event::Joined);
        } else if line.starts_with(b"INFO ") {
            f(Event::Ready);
        } else if line.starts_with(b"-ERR") {
            f(Event::Error(String::from_utf8_lossy(line).into_owned().into(), false));
        } else {
            f(Event::Other);
        }
        at += eol + 2;
    }
}

/// Waits (at most `timeout`) for `count` events that `want` picks, answering
/// NATS pings meanwhile. Errors on a server error, a close or the timeout.
pub(crate) async fn wait_for(
    ws: &mut Ws,
    dec: &mut Decoder,
    timeout: Duration,
    mut count: usize,
    want: fn(&Event<'_>) -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    while count > 0 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "timed out waiting for the server".to_owned())?
            .ok_or_else(|| "connection ended".to_owned())?
            .map_err(|e| format!("read: {e}"))?;
        let data = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => &b[..],
            Message::Close(c) => return Err(format!("closed by the server: {c:?}")),
            _ => continue,
        };
        let mut pings = 0;
        let mut error = None;
        dec.feed(data, &mut |ev| match ev {
            Event::Ping => pings += 1,
            Event::Error(code, _) => error = Some(code.into_owned()),
            ev if want(&ev) => count = count.saturating_sub(1),
            _ => {}
        });
        if let Some(code) = error {
            return Err(format!("server error {code}"));
        }
        for _ in 0..pings {
            ws.send(pong()).await.map_err(|e| format!("write: {e}"))?;
        }
    }
    Ok(())
}

pub(crate) fn pong() -> Message {
    Message::binary(&b"PONG\r\n"[..])
}

/// Room name (Hubbub) or subject (NATS) of room `i`.
pub(crate) fn room_name(target: Target, prefix: &str, i: usize) -> String {
    match target {
        Target::Hubbub => format!("{prefix}-{i}"),
        Target::Nats => format!("{prefix}.{i}"),
    }
}

/// Says hello (Hubbub) or CONNECT (NATS) and subscribes to `rooms`, waiting
/// for the server to confirm each step.
pub(crate) async fn setup(
    ws: &mut Ws,
    dec: &mut Decoder,
    target: Target,
    user: &str,
    rooms: &[String],
    batch: bool,
    timeout: Duration,
) -> Result<(), String> {
    let w = |e: tokio_tungstenite::tungstenite::Error| format!("write: {e}");
    match target {
        Target::Hubbub => {
            let hello = ClientMsg::Hello { user: user.to_owned(), token: None, session: None, batch };
            ws.send(json(&hello)).await.map_err(w)?;
            wait_for(ws, dec, timeout, 1, |e| matches!(e, Event::Ready)).await?;
            for room in rooms {
                ws.feed(json(&ClientMsg::Join { room: room.clone(), since: None })).await.map_err(w)?;
            }
            ws.flush().await.map_err(w)?;
            wait_for(ws, dec, timeout, rooms.len(), |e| matches!(e, Event::Joined)).await
        }
        Target::Nats => {
            wait_for(ws, dec, timeout, 1, |e| matches!(e, Event::Ready)).await?;
            let mut out =
                String::from("CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"loadgen\"}\r\n");
            for (i, room) in rooms.iter().enumerate() {
                out.push_str(&format!("SUB {room} {}\r\n", i + 1));
            }
            // The PONG to this PING says every SUB above was processed.
            out.push_str("PING\r\n");
            ws.send(Message::binary(out.into_bytes())).await.map_err(w)?;
            wait_for(ws, dec, timeout, 1, |e| matches!(e, Event::Joined)).await
        }
    }
}

fn json(msg: &ClientMsg) -> Message {
    Message::text(serde_json::to_string(msg).expect("client frames serialize"))
}

/// One publish of `body` to `room` as a WebSocket message. Hubbub's id is
/// `<seq>.<send ns>`, so its `ack` can be timed.
pub(crate) fn publish(target: Target, room: &str, body: &str, s: Stamp) -> Message {
    match target {
        Target::Hubbub => {
            let id = format!("{}.{}", s.seq, s.sent_ns);
            json(&ClientMsg::Send { room: room.to_owned(), body: body.to_owned(), id })
        }
        Target::Nats => Message::binary(format!("PUB {room} {}\r\n{body}\r\n", body.len()).into_bytes()),
    }
}

/// What a body says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) room: u32,
    pub(crate) publisher: u32,
    pub(crate) seq: u64,
    /// Nanoseconds since the load generator started, when it was sent.
    pub(crate) sent_ns: u64,
}

/// Writes `r<room>p<publisher>q<seq>t<ns>.` padded with `x` to `size` bytes
/// (longer when `size` is too small for the stamp).
pub(crate) fn write_body(out: &mut String, s: Stamp, size: usize) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "r{}p{}q{}t{}.", s.room, s.publisher, s.seq, s.sent_ns);
    while out.len() < size {
        out.push('x');
    }
}

pub(crate) fn read_body(body: &[u8]) -> Option<Stamp> {
    let mut at = 0;
    let mut field = |tag: u8| -> Option<u64> {
        if body.get(at) != Some(&tag) {
            return None;
        }
        at += 1;
        let start = at;
        let mut v: u64 = 0;
        while let Some(d) = body.get(at).filter(|b| b.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            at += 1;
        }
        (at > start).then_some(v)
    };
    let room = u32::try_from(field(b'r')?).ok()?;
    let publisher = u32::try_from(field(b'p')?).ok()?;
    let seq = field(b'q')?;
    let sent_ns = field(b't')?;
    Some(Stamp { room, publisher, seq, sent_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let s = Stamp { room: 12, publisher: 3, seq: 99_999, sent_ns: 123_456_789_012 };
        let mut out = String::new();
        write_body(&mut out, s, 64);
        assert_eq!(out.len(), 64);
        assert_eq!(read_body(out.as_bytes()), Some(s));
        assert_eq!(read_body(b"hello"), None);
    }

    #[test]
    fn hubbub_deliveries_borrow_the_body() {
        let frame =
            br#"{"type":"message","kind":"room","room":"b-1","seq":3,"from":"p0","body":"r1p0q2t3.","id":"2","ts":1}"#;
        let mut dec = Decoder::new(Target::Hubbub);
        let mut bodies = Vec::new();
        dec.feed(frame, &mut |ev| {
            if let Event::Delivery(b) = ev {
                bodies.push(b.to_vec());
            }
        });
        assert_eq!(bodies, [b"r1p0q2t3.".to_vec()]);
    }

    #[test]
    fn the_body_scan_finds_the_body_the_server_rendered() {
        // Keys and quotes inside other fields are escaped by the renderer.
        let tricky = r#"p0","body":"evil"#;
        let frame = hubbub_proto::client::room_message_json(tricky, 7, tricky, "r1p0q2t3.xx", tricky, 5);
        assert_eq!(message_body(frame.as_bytes()), Some(&b"r1p0q2t3.xx"[..]));
        // Not a message, cut short, or a body with an escape: left to serde_json.
        assert_eq!(message_body(br#"{"type":"ack","id":"7.1","seq":4}"#), None);
        assert_eq!(message_body(&frame.as_bytes()[..frame.len() - 1]), None);
        let escaped = hubbub_proto::client::room_message_json("b-1", 7, "p0", "a\"b", "1", 5);
        assert_eq!(message_body(escaped.as_bytes()), None);
    }

    #[test]
    fn a_batched_hubbub_frame_is_one_event_per_line() {
        let frame = concat!(
            r#"{"type":"message","kind":"room","room":"b-1","seq":3,"from":"p0","body":"ab","id":"2","ts":1}"#,
            "\n",
            r#"{"type":"ack","id":"7.123","seq":4}"#,
            "\n",
            r#"{"type":"message","kind":"room","room":"b-1","seq":4,"from":"p0","body":"c","id":"3","ts":1}"#,
        );
        let mut dec = Decoder::new(Target::Hubbub);
        let mut seen = Vec::new();
        dec.feed(frame.as_bytes(), &mut |ev| {
            seen.push(match ev {
                Event::Delivery(b) => String::from_utf8_lossy(b).into_owned(),
                Event::Ack(t) => format!("ack {t:?}"),
                _ => "other".into(),
            })
        });
        assert_eq!(seen, ["ab", "ack Some(123)", "c"]);
    }

    #[test]
    fn nats_stream_is_split_anywhere() {
        let stream = b"INFO {}\r\nMSG a.1 1 5\r\nhello\r\nPING\r\nMSG a.2 2 3\r\nabc\r\n";
        for cut in 0..stream.len() {
            let mut dec = Decoder::new(Target::Nats);
            let mut seen = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                dec.feed(part, &mut |ev| {
                    seen.push(match ev {
                        Event::Delivery(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    })
                });
            }
            assert_eq!(seen, ["Ready", "hello", "Ping", "abc"], "cut at {cut}");
        }
    }
}
