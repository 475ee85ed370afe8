//! The client protocol: JSON text frames over WebSocket at `GET /ws`.
//!
//! Every frame is one JSON object whose `type` field names the message
//! ([`ClientMsg`] from clients, [`ServerMsg`] from nodes), except that a
//! client that says `hello` with `batch: true` may receive several server
//! messages in one frame, one per line ([`BATCH_SEPARATOR`], [`split_batch`]). docs/protocol.md is
//! the user-facing description; this module is its source of truth: names,
//! limits ([`Limits`]), error codes ([`ErrorCode`]) and close codes
//! ([`CloseCode`]).
//!
//! Parsing ([`parse`]) never panics and classifies every failure into an
//! [`ErrorCode`] with a message, so a node can answer bad input precisely and
//! keep the connection.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks, sent in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Separates the messages of one frame for a client that asked for batches
/// (`hello.batch`). Compact JSON never contains a raw newline (strings escape
/// it), so a line is always exactly one message.
pub const BATCH_SEPARATOR: char = '\n';
/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest user name, in bytes.
pub const MAX_USER_LEN: usize = 32;
/// Longest client message id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// A frame from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// First frame of every connection.
    Hello {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        /// The client reads frames that carry several messages, one per
        /// line: a node under load then writes one frame per batch instead of
        /// one per message.
        #[serde(default, skip_serializing_if = "is_false")]
        batch: bool,
    },
    /// Subscribe to a room.
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// Unsubscribe from a room.
    Leave { room: String },
    /// Publish to a joined room.
    Send { room: String, body: String, id: String },
    /// Send to every connection of user `to`.
    Direct { to: String, body: String, id: String },
    /// Send to every connected client of the cluster.
    Broadcast { body: String, id: String },
    /// Liveness check; answered with `pong`.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// The type names [`ClientMsg`] accepts, for error messages.
pub const CLIENT_TYPES: [&str; 7] = ["hello", "join", "leave", "send", "direct", "broadcast", "ping"];

/// Who a delivered message was addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Room,
    Direct,
    Broadcast,
}

/// A frame from a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to `hello`.
    Welcome {
        session: String,
        user: String,
        /// Name of the node this connection is on.
        node: String,
        /// WebSocket URLs of the alive nodes (this one included).
        nodes: Vec<String>,
        protocol: u32,
        /// Largest accepted `body`, in bytes.
        max_body: usize,
        /// Frames to this connection may carry several messages (the client
        /// asked with `hello.batch`).
        #[serde(default, skip_serializing_if = "is_false")]
        batch: bool,
    },
    /// Answer to `join`: messages after `seq` will follow. With `since`,
    /// the kept messages in `(since, seq]` follow first; `truncated` says
    /// the room's history no longer reaches back to `since + 1`.
    Joined {
        room: String,
        seq: u64,
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
    },
    /// Answer to `leave`.
    Left { room: String },
    /// A delivered message.
    Message {
        kind: Audience,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// For direct messages: the addressed user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        from: String,
        body: String,
        id: String,
        /// Milliseconds since the Unix epoch when the message was sequenced
        /// (rooms) or accepted (direct, broadcast).
        ts: u64,
    },
    /// The cluster accepted a `send`, `direct` or `broadcast`.
    Ack {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// A request failed; the connection stays usable.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Move to another node: reconnect to `url` and resume (rebalancing,
    /// or this node is draining).
    Reconnect { url: String, reason: String },
    /// Answer to `ping`.
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Codes of `error` frames. The connection stays open after each of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    BadJson,
    /// `type` is missing or names no message.
    UnknownType,
    /// A field is missing, has the wrong JSON type, or is not part of the message.
    BadField,
    /// `body` is empty or only whitespace.
    EmptyBody,
    /// `body` is longer than the node's `max_body`.
    BodyTooLarge,
    /// A room name breaks the naming rule.
    BadRoom,
    /// A user name breaks the naming rule.
    BadUser,
    /// A message id is empty or too long.
    BadId,
    /// A binary frame; the protocol is JSON text.
    BinaryFrame,
    /// Another frame came before `hello`.
    HelloRequired,
    /// A second `hello` on the same connection.
    AlreadyHello,
    /// `send` or `leave` for a room this connection has not joined.
    NotJoined,
    /// The connection already joined `max_rooms` rooms.
    TooManyRooms,
    /// `direct` to a user with no connection anywhere in the cluster.
    UserOffline,
    /// The cluster could not complete the request in time (an owner is
    /// unreachable, or this node is not part of a cluster yet).
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadField => "bad_field",
            ErrorCode::EmptyBody => "empty_body",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::BadUser => "bad_user",
            ErrorCode::BadId => "bad_id",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::AlreadyHello => "already_hello",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::UserOffline => "user_offline",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// WebSocket close codes a node uses, with the reason text it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the node is shutting down (drain); reconnect to another node.
    GoingAway,
    /// 1009: a frame exceeded the hard frame limit.
    FrameTooLarge,
    /// 1011: the node hit an internal error.
    InternalError,
    /// 4001: no `hello` within the hello timeout.
    HelloTimeout,
    /// 4008: the client did not read fast enough; its send queue overflowed.
    SlowConsumer,
    /// 4009: the client kept more sends unanswered than allowed.
    Flood,
}

impl CloseCode {
    /// The numeric close code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::FrameTooLarge => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::HelloTimeout => 4001,
            CloseCode::SlowConsumer => 4008,
            CloseCode::Flood => 4009,
        }
    }

    /// The reason text sent with the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::GoingAway => "node draining",
            CloseCode::FrameTooLarge => "frame too large",
            CloseCode::InternalError => "internal error",
            CloseCode::HelloTimeout => "hello timeout",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::Flood => "too many sends in flight",
        }
    }

    /// Every close code, for docs and tests.
    pub const ALL: [CloseCode; 6] = [
        CloseCode::GoingAway,
        CloseCode::FrameTooLarge,
        CloseCode::InternalError,
        CloseCode::HelloTimeout,
        CloseCode::SlowConsumer,
        CloseCode::Flood,
    ];
}

/// Per-node limits that validation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest `body` in bytes (default 64 KiB).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body: 64 * 1024 }
    }
}

/// Why a client frame was refused. The connection stays usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// The `id` of the refused frame, when it had a readable one.
    pub id: Option<String>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into(), id: None }
    }

    fn with_id(mut self, id: Option<String>) -> Refusal {
        self.id = id;
        self
    }

    /// The `error` frame for this refusal.
    pub fn to_msg(&self) -> ServerMsg {
        ServerMsg::Error { code: self.code, message: self.message.clone(), id: self.id.clone() }
    }
}

/// Room names: 1–64 bytes of ASCII letters, digits, `-`, `_`, `.`, `:`.
pub fn valid_room(room: &str) -> bool {
    valid_name(room, MAX_ROOM_LEN)
}

/// User names: 1–32 bytes of ASCII letters, digits, `-`, `_`, `.`, `:`.
pub fn valid_user(user: &str) -> bool {
    valid_name(user, MAX_USER_LEN)
}

fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn check_room(room: &str) -> Result<(), Refusal> {
    if valid_room(room) {
        Ok(())
    } else {
        Err(Refusal::new(ErrorCode::BadRoom, format!("room names are 1-{MAX_ROOM_LEN} bytes of A-Z a-z 0-9 - _ . :")))
    }
}

fn check_user(user: &str) -> Result<(), Refusal> {
    if valid_user(user) {
        Ok(())
    } else {
        Err(Refusal::new(ErrorCode::BadUser, format!("user names are 1-{MAX_USER_LEN} bytes of A-Z a-z 0-9 - _ . :")))
    }
}

fn check_id(id: &str) -> Result<(), Refusal> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        Err(Refusal::new(ErrorCode::BadId, format!("message ids are 1-{MAX_ID_LEN} bytes")))
    } else {
        Ok(())
    }
}

fn check_body(body: &str, limits: &Limits) -> Result<(), Refusal> {
    if body.trim().is_empty() {
        Err(Refusal::new(ErrorCode::EmptyBody, "body is empty"))
    } else if body.len() > limits.max_body {
        Err(Refusal::new(
            ErrorCode::BodyTooLarge,
            format!("body is {} bytes; the limit is {}", body.len(), limits.max_body),
        ))
    } else {
        Ok(())
    }
}

/// Checks field values (names, ids, bodies) of a well-formed message.
pub fn validate(msg: &ClientMsg, limits: &Limits) -> Result<(), Refusal> {
    let id = msg_id(msg).map(str::to_owned);
    let result = match msg {
        ClientMsg::Hello { user, .. } => check_user(user),
        ClientMsg::Join { room, .. } | ClientMsg::Leave { room } => check_room(room),
        ClientMsg::Send { room, body, id } => check_id(id).and(check_room(room)).and(check_body(body, limits)),
        ClientMsg::Direct { to, body, id } => check_id(id).and(check_user(to)).and(check_body(body, limits)),
        ClientMsg::Broadcast { body, id } => check_id(id).and(check_body(body, limits)),
        ClientMsg::Ping { .. } => Ok(()),
    };
    result.map_err(|r| r.with_id(id.filter(|i| !i.is_empty() && i.len() <= MAX_ID_LEN)))
}

fn msg_id(msg: &ClientMsg) -> Option<&str> {
    match msg {
        ClientMsg::Send { id, .. } | ClientMsg::Direct { id, .. } | ClientMsg::Broadcast { id, .. } => Some(id),
        ClientMsg::Ping { id } => id.as_deref(),
        _ => None,
    }
}

/// A room message as [`ServerMsg::Message`] serializes it, from borrowed
/// fields: a room's owner renders each message once, without copying its
/// strings, and every subscribing node passes the text on as it is.
#[derive(Serialize)]
struct RoomMessage<'a> {
    #[serde(rename = "type")]
    kind_tag: &'static str,
    kind: Audience,
    room: &'a str,
    seq: u64,
    from: &'a str,
    body: &'a str,
    id: &'a str,
    ts: u64,
}

/// The `message` frame of room message `seq` (the JSON of
/// [`ServerMsg::Message`] with `kind: room`).
pub fn room_message_json(room: &str, seq: u64, from: &str, body: &str, id: &str, ts: u64) -> String {
    let msg = RoomMessage { kind_tag: "message", kind: Audience::Room, room, seq, from, body, id, ts };
    serde_json::to_string(&msg).expect("a room message always serializes")
}

/// The messages of one server frame: the frame itself, or its lines when
/// the connection asked for batches. Empty lines are skipped.
pub fn split_batch(frame: &str) -> impl Iterator<Item = &str> {
    frame.split(BATCH_SEPARATOR).filter(|line| !line.is_empty())
}

/// A `send` frame read straight into its fields. serde reads an internally
/// tagged enum such as [`ClientMsg`] by buffering the whole object and then
/// reading the buffer, so every publish was parsed twice. The fields are
/// exactly those of [`ClientMsg::Send`], and a frame this does not read
/// goes through [`ClientMsg`]'s own deserializer: both accept the same
/// frames with the same values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    room: String,
    body: String,
    id: String,
}

fn parse_send(text: &str) -> Option<ClientMsg> {
    let frame = serde_json::from_str::<SendFrame<'_>>(text).ok()?;
    (frame.kind == "send").then_some(ClientMsg::Send { room: frame.room, body: frame.body, id: frame.id })
}

/// Parses and validates one text frame.
pub fn parse(text: &str, limits: &Limits) -> Result<ClientMsg, Refusal> {
    let parsed = match parse_send(text) {
        Some(msg) => Ok(msg),
        None => serde_json::from_str::<ClientMsg>(text),
    };
    match parsed {
        Ok(msg) => {
            validate(&msg, limits)?;
            Ok(msg)
        }
        Err(e) => Err(classify(text, &e)),
    }
}

/// Explains why `text` is not a [`ClientMsg`] (the slow path: bad input only).
fn classify(text: &str, typed: &serde_json::Error) -> Refusal {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Refusal::new(ErrorCode::BadJson, format!("not valid JSON: {e}")),
    };
    let Some(object) = value.as_object() else {
        return Refusal::new(ErrorCode::BadJson, "a frame must be a JSON object");
    };
    let id =
        object.get("id").and_then(|v| v.as_str()).filter(|i| !i.is_empty() && i.len() <= MAX_ID_LEN).map(str::to_owned);
    let refusal = match object.get("type") {
        None => Refusal::new(ErrorCode::UnknownType, "missing field `type`"),
        Some(serde_json::Value::String(t)) if !CLIENT_TYPES.contains(&t.as_str()) => Refusal::new(
            ErrorCode::UnknownType,
            format!("unknown type `{t}`; expected one of {}", CLIENT_TYPES.join(", ")),
        ),
        Some(serde_json::Value::String(_)) => {
            // serde_json appends " at line L column C"; the field name is what matters.
            let message = typed.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
            Refusal::new(ErrorCode::BadField, message)
        }
        Some(_) => Refusal::new(ErrorCode::UnknownType, "`type` must be a string"),
    };
    refusal.with_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse(text, &Limits::default()).unwrap_err().code
    }

    #[test]
    fn a_rendered_room_message_is_the_server_message() {
        let (room, from, body, id) = ("r-1", "ann", "a \"quoted\"\nline ü", "m\\1");
        let msg = ServerMsg::Message {
            kind: Audience::Room,
            room: Some(room.into()),
            seq: Some(42),
            to: None,
            from: from.into(),
            body: body.into(),
            id: id.into(),
            ts: 1_767_225_600_000,
        };
        let text = room_message_json(room, 42, from, body, id, 1_767_225_600_000);
        assert_eq!(text, serde_json::to_string(&msg).unwrap());
        assert_eq!(serde_json::from_str::<ServerMsg>(&text).unwrap(), msg);
    }

    #[test]
    fn a_batch_splits_into_its_messages() {
        let msgs = [
            ServerMsg::Left { room: "a\nb".into() },
            ServerMsg::Pong { id: Some("line\nbreak".into()) },
            ServerMsg::Left { room: "c".into() },
        ];
        let lines: Vec<String> = msgs.iter().map(|m| serde_json::to_string(m).unwrap()).collect();
        assert!(lines.iter().all(|l| !l.contains(BATCH_SEPARATOR)), "compact JSON escapes newlines");
        let frame = lines.join("\n");
        let back: Vec<ServerMsg> = split_batch(&frame).map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(back, msgs);
        assert_eq!(split_batch(&lines[0]).count(), 1);
    }

    #[test]
    fn parses_every_message() {
        let l = Limits::default();
        assert_eq!(
            parse(r#"{"type":"hello","user":"ann"}"#, &l).unwrap(),
            ClientMsg::Hello { user: "ann".into(), token: None, session: None, batch: false }
        );
        assert_eq!(
            parse(r#"{"type":"hello","user":"ann","batch":true}"#, &l).unwrap(),
            ClientMsg::Hello { user: "ann".into(), token: None, session: None, batch: true }
        );
        assert_eq!(
            parse(r#"{"type":"join","room":"r1","since":4}"#, &l).unwrap(),
            ClientMsg::Join { room: "r1".into(), since: Some(4) }
        );
        assert_eq!(
            parse(r#"{"type":"send","room":"r1","body":"hi","id":"1"}"#, &l).unwrap(),
            ClientMsg::Send { room: "r1".into(), body: "hi".into(), id: "1".into() }
        );
        assert_eq!(parse(r#"{"type":"ping"}"#, &l).unwrap(), ClientMsg::Ping { id: None });
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(code("{"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"room":"a"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"join","room":5}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"join","room":"a","color":"red"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"send","room":"a","body":"  ","id":"1"}"#), ErrorCode::EmptyBody);
        assert_eq!(code(r#"{"type":"send","room":"a b","body":"x","id":"1"}"#), ErrorCode::BadRoom);
        assert_eq!(code(r#"{"type":"hello","user":""}"#), ErrorCode::BadUser);
        assert_eq!(code(r#"{"type":"direct","to":"é","body":"x","id":"1"}"#), ErrorCode::BadUser);
        assert_eq!(code(r#"{"type":"broadcast","body":"x","id":""}"#), ErrorCode::BadId);
    }

    #[test]
    fn body_limit_is_the_configured_one() {
        let limits = Limits { max_body: 4 };
        let err = parse(r#"{"type":"broadcast","body":"12345","id":"m1"}"#, &limits).unwrap_err();
        assert_eq!(err.code, ErrorCode::BodyTooLarge);
        assert_eq!(err.id.as_deref(), Some("m1"));
        assert!(parse(r#"{"type":"broadcast","body":"1234","id":"m1"}"#, &limits).is_ok());
    }

    #[test]
    fn refusals_carry_the_id_when_readable() {
        let err = parse(r#"{"type":"send","room":"a","id":"m9"}"#, &Limits::default()).unwrap_err();
        assert_eq!((err.code, err.id.as_deref()), (ErrorCode::BadField, Some("m9")));
        assert!(err.message.contains("body"), "{}", err.message);
    }

    #[test]
    fn server_messages_round_trip() {
        let msg = ServerMsg::Message {
            kind: Audience::Room,
            room: Some("r".into()),
            seq: Some(3),
            to: None,
            from: "ann".into(),
            body: "hi".into(),
            id: "1".into(),
            ts: 5,
        };
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            text,
            r#"{"type":"message","kind":"room","room":"r","seq":3,"from":"ann","body":"hi","id":"1","ts":5}"#
        );
        assert_eq!(serde_json::from_str::<ServerMsg>(&text).unwrap(), msg);
        let err = ServerMsg::Error { code: ErrorCode::NotJoined, message: "m".into(), id: None };
        assert_eq!(serde_json::to_string(&err).unwrap(), r#"{"type":"error","code":"not_joined","message":"m"}"#);
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in [ErrorCode::BadJson, ErrorCode::TooManyRooms, ErrorCode::Unavailable, ErrorCode::UserOffline] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn a_send_reads_the_same_on_both_paths() {
        let sends = [
            r#"{"type":"send","room":"r1","body":"hi","id":"1"}"#,
            r#"{"id":"1","body":"h\u00e9 \"x\"","room":"r1","type":"s\u0065nd"}"#,
        ];
        for text in sends {
            let fast = parse_send(text).expect("read by the fast path");
            assert_eq!(fast, serde_json::from_str::<ClientMsg>(text).unwrap(), "{text}");
        }
        // Not sends, or not valid ones: left to the full deserializer.
        for text in [
            r#"{"type":"join","room":"r1"}"#,
            r#"{"type":"send","room":"r1","body":"hi","id":"1","extra":1}"#,
            r#"{"type":"send","room":"r1","body":"hi","id":"1","id":"2"}"#,
            r#"{"type":"send","room":"r1","body":"hi"}"#,
            r#"{"type":"broadcast","room":"r1","body":"hi","id":"1"}"#,
        ] {
            assert!(parse_send(text).is_none(), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,200}") {
            let _ = parse(&text, &Limits::default());
        }

        /// Whatever the fast path reads, the full deserializer reads alike.
        #[test]
        fn the_send_fast_path_agrees_with_the_full_parse(
            keys in proptest::sample::subsequence(vec!["type", "room", "body", "id", "to"], 0..=5),
            kind in proptest::sample::select(vec!["send", "join", "s\\u0065nd"]),
            value in "[a-z\"\\\\ é]{0,6}",
        ) {
            let fields: Vec<String> = keys
                .iter()
                .map(|k| match *k {
                    "type" => format!(r#""type":"{kind}""#),
                    k => format!(r#""{k}":{}"#, serde_json::to_string(&value).unwrap()),
                })
                .collect();
            let text = format!("{{{}}}", fields.join(","));
            if let Some(fast) = parse_send(&text) {
                proptest::prop_assert_eq!(Some(fast), serde_json::from_str::<ClientMsg>(&text).ok());
            }
        }
    }
}
