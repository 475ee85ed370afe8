//! `hubbub bot`: a chat bot on one connection, built on `hubbub-client`.
//!
//! It says `hello`, joins its rooms, prints every frame it receives (one line
//! each, or the raw JSON with `--json`) and acts by [`Mode`]:
//!
//! - `echo` answers each room message from another user with `echo: <body>`;
//! - `script` answers with the first rule of a `pattern => reply` file whose
//!   pattern is in the message (case-insensitive);
//! - `rate` sends `msg <n>` at a steady rate, round-robin over its rooms,
//!   until `--count` or `--duration`, then waits for the last acks.
//!
//! Exit codes: 0 when done or stopped by ctrl-c/SIGTERM, 1 when it cannot
//! connect or the node closes the connection, 2 for a refused setting.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use hubbub_client::{ClientError, ClientMsg, Connection, Event, Sender, ServerMsg, Welcome};
use hubbub_proto::client::{Audience, valid_room, valid_user};
use tokio::time::{Instant, MissedTickBehavior};

/// Bound on opening the WebSocket (TCP connect and upgrade).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long rate mode waits for the acks of its last sends. A node answers
/// every send within 5 s (ack, or `unavailable`), so this is enough.
const ACK_GRACE: Duration = Duration::from_secs(5);
/// Rate mode keeps at most this many sends unanswered, half of a node's
/// default `--max-in-flight`, so a slow cluster slows the bot instead of
/// closing it with 4009.
const MAX_PENDING: usize = 512;
/// Shortest pause between two rounds of rate-mode sends; higher rates send
/// several messages per round.
const MIN_TICK: Duration = Duration::from_millis(2);
/// Largest `--rate`.
const MAX_RATE: f64 = 100_000.0;
/// Largest `--count`.
const MAX_COUNT: u64 = 1_000_000_000;
/// Largest `--duration`, in seconds (one day).
const MAX_DURATION_SECS: f64 = 86_400.0;
/// Prefix of echo replies; a message that already has it is not echoed, so
/// two echo bots in one room do not answer each other forever.
const ECHO_PREFIX: &str = "echo: ";

/// `hubbub bot` flags. Each has a `HUBBUB_BOT_*` variable; flags win.
#[derive(Args, Debug)]
pub(crate) struct BotArgs {
    /// WebSocket URL of a node, e.g. ws://127.0.0.1:8000/ws (required).
    #[arg(long, env = "HUBBUB_BOT_URL", value_name = "URL")]
    url: Option<String>,
    /// User name: 1–32 characters of A-Z a-z 0-9 - _ . :
    #[arg(long, env = "HUBBUB_BOT_USER", default_value = "bot")]
    user: String,
    /// Room to join; repeat the flag (or comma-separate) for several.
    #[arg(long = "room", env = "HUBBUB_BOT_ROOMS", value_name = "ROOM", value_delimiter = ',')]
    rooms: Vec<String>,
    /// What the bot does with its rooms.
    #[arg(long, env = "HUBBUB_BOT_MODE", value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Script mode: file of `pattern => reply` lines; `#` starts a comment line.
    #[arg(long, env = "HUBBUB_BOT_SCRIPT", value_name = "FILE")]
    script: Option<PathBuf>,
    /// Rate mode: messages per second, round-robin over the rooms [default: 1].
    #[arg(long, env = "HUBBUB_BOT_RATE", value_name = "N")]
    rate: Option<String>,
    /// Rate mode: stop after this many messages.
    #[arg(long, env = "HUBBUB_BOT_COUNT", value_name = "N")]
    count: Option<String>,
    /// Rate mode: stop sending after this many seconds.
    #[arg(long, env = "HUBBUB_BOT_DURATION", value_name = "SECS")]
    duration: Option<String>,
    /// Print each received frame as its JSON instead of a readable line.
    #[arg(long)]
    json: bool,
}

/// What the bot does.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answer each room message from another user with "echo: <body>".
    Echo,
    /// Answer room messages by the rules of --script.
    Script,
    /// Send "msg <n>" at --rate per second until --count or --duration.
    Rate,
}

/// A refused setting: one line naming it, its flag and its variable.
#[derive(Debug, PartialEq, Eq)]
struct SettingError {
    setting: &'static str,
    message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (flag, env) = match self.setting {
            "room" => ("room", "ROOMS"),
            other => (other, other),
        };
        write!(f, "invalid setting '{}' (--{flag} / HUBBUB_BOT_{}): {}", self.setting, env.to_uppercase(), self.message)
    }
}

fn refuse(setting: &'static str, message: impl Into<String>) -> SettingError {
    // Keep the error on one line whatever the message carries.
    let message = message.into().split_whitespace().collect::<Vec<_>>().join(" ");
    SettingError { setting, message }
}

/// One rule of a script file. `pattern` is kept lowercase.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    pattern: String,
    reply: String,
}

/// Reads a script: one `pattern => reply` rule per line; blank lines and
/// lines starting with `#` are skipped. The pattern is everything before the
/// first `=>`, the reply everything after it, both trimmed and non-empty.
fn parse_script(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((pattern, reply)) = line.split_once("=>") else {
            return Err(format!("line {}: expected `pattern => reply`", n + 1));
        };
        let (pattern, reply) = (pattern.trim(), reply.trim());
        if pattern.is_empty() {
            return Err(format!("line {}: the pattern before `=>` is empty", n + 1));
        }
        if reply.is_empty() {
            return Err(format!("line {}: the reply after `=>` is empty", n + 1));
        }
        rules.push(Rule { pattern: pattern.to_lowercase(), reply: reply.to_owned() });
    }
    if rules.is_empty() {
        return Err("has no `pattern => reply` lines".to_owned());
    }
    Ok(rules)
}

/// The reply of the first rule whose pattern occurs in `body`, ignoring case.
fn script_reply<'a>(rules: &'a [Rule], body: &str) -> Option<&'a str> {
    let body = body.to_lowercase();
    rules.iter().find(|r| body.contains(&r.pattern)).map(|r| r.reply.as_str())
}

/// How rate mode sends.
#[derive(Clone, Copy, Debug, PartialEq)]
struct RatePlan {
    per_sec: f64,
    count: Option<u64>,
    duration: Option<Duration>,
}

/// What the bot does with what it receives, or on its own.
#[derive(Debug, PartialEq)]
enum Behaviour {
    Echo,
    Script(Vec<Rule>),
    Rate(RatePlan),
}

/// Validated settings.
#[derive(Debug)]
struct Bot {
    url: String,
    user: String,
    rooms: Vec<String>,
    behaviour: Behaviour,
    json: bool,
}

fn parse_number(setting: &'static str, value: &str, max: f64) -> Result<f64, SettingError> {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= max => Ok(v),
        _ => Err(refuse(setting, format!("{value:?} is not a number greater than 0 and at most {max}"))),
    }
}

fn only_in(mode: Mode, setting: &'static str, given: bool, wanted: Mode, name: &str) -> Result<(), SettingError> {
    if given && mode != wanted {
        return Err(refuse(setting, format!("is only used with --mode {name}")));
    }
    Ok(())
}

impl Bot {
    fn load(args: BotArgs) -> Result<Bot, SettingError> {
        let url =
            args.url.ok_or_else(|| refuse("url", "required: the node's WebSocket URL, e.g. ws://127.0.0.1:8000/ws"))?;
        let url = url.trim().to_owned();
        if url.starts_with("wss://") {
            return Err(refuse("url", "wss:// needs TLS, which this build does not include; use ws://"));
        }
        if url.strip_prefix("ws://").is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
            return Err(refuse("url", format!("{url:?} is not a ws:// URL (e.g. ws://127.0.0.1:8000/ws)")));
        }
        if !valid_user(&args.user) {
            return Err(refuse("user", format!("{:?} must be 1–32 bytes of A-Z a-z 0-9 - _ . :", args.user)));
        }
        let mut rooms: Vec<String> = Vec::new();
        for room in args.rooms {
            if !valid_room(&room) {
                return Err(refuse("room", format!("{room:?} must be 1–64 bytes of A-Z a-z 0-9 - _ . :")));
            }
            if !rooms.contains(&room) {
                rooms.push(room);
            }
        }
        only_in(args.mode, "script", args.script.is_some(), Mode::Script, "script")?;
        for (setting, given) in
            [("rate", args.rate.is_some()), ("count", args.count.is_some()), ("duration", args.duration.is_some())]
        {
            only_in(args.mode, setting, given, Mode::Rate, "rate")?;
        }
        let behaviour = match args.mode {
            Mode::Echo => Behaviour::Echo,
            Mode::Script => {
                let path = args.script.ok_or_else(|| refuse("script", "required with --mode script"))?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| refuse("script", format!("cannot read {}: {e}", path.display())))?;
                let rules = parse_script(&text).map_err(|e| refuse("script", format!("{}: {e}", path.display())))?;
                Behaviour::Script(rules)
            }
            Mode::Rate => {
                let per_sec = match &args.rate {
                    Some(v) => parse_number("rate", v, MAX_RATE)?,
                    None => 1.0,
                };
                let count = match &args.count {
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if (1..=MAX_COUNT).contains(&n) => Some(n),
                        _ => return Err(refuse("count", format!("{v:?} is not a whole number from 1 to {MAX_COUNT}"))),
                    },
                    None => None,
                };
                let duration = match &args.duration {
                    Some(v) => Some(Duration::from_secs_f64(parse_number("duration", v, MAX_DURATION_SECS)?)),
                    None => None,
                };
                if count.is_none() && duration.is_none() {
                    return Err(refuse("count", "rate mode needs --count N or --duration SECS (or both) to stop"));
                }
                if rooms.is_empty() {
                    return Err(refuse("room", "rate mode sends to rooms: give at least one --room"));
                }
                Behaviour::Rate(RatePlan { per_sec, count, duration })
            }
        };
        Ok(Bot { url, user: args.user, rooms, behaviour, json: args.json })
    }
}

pub(crate) fn main(args: BotArgs) -> ExitCode {
    let bot = match Bot::load(args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("hubbub: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubbub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(bot)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubbub: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes text one line: line breaks and other control characters escaped.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// The readable line for a frame, or `None` for frames only `--json` shows
/// (acks, pongs).
fn render(msg: &ServerMsg) -> Option<String> {
    match msg {
        ServerMsg::Welcome { user, node, protocol, .. } => {
            Some(format!("[welcome] {user} on node {node} (protocol {protocol})"))
        }
        ServerMsg::Joined { room, seq, .. } => Some(format!("[joined {room}] last seq {seq}")),
        ServerMsg::Left { room } => Some(format!("[left {room}]")),
        ServerMsg::Reconnect { url, reason } => Some(format!("[reconnect] {url} ({reason})")),
        ServerMsg::Message { kind, room, seq, from, body, .. } => {
            let body = one_line(body);
            Some(match kind {
                Audience::Room => format!(
                    "[{} #{}] {from}: {body}",
                    room.as_deref().unwrap_or("?"),
                    seq.map_or_else(|| "?".to_owned(), |s| s.to_string())
                ),
                Audience::Direct => format!("[direct] {from}: {body}"),
                Audience::Broadcast => format!("[broadcast] {from}: {body}"),
            })
        }
        ServerMsg::Error { code, message, id } => {
            let id = id.as_ref().map(|i| format!(" (id {i})")).unwrap_or_default();
            Some(format!("error {}: {}{id}", code.as_str(), one_line(message)))
        }
        ServerMsg::Ack { .. } | ServerMsg::Pong { .. } => None,
    }
}

/// The frame to answer `msg` with, if the behaviour answers it. The bot
/// never answers its own user, so it cannot talk to itself.
fn answer(behaviour: &Behaviour, me: &str, msg: &ServerMsg, id: u64) -> Option<ClientMsg> {
    let ServerMsg::Message { kind: Audience::Room, room: Some(room), from, body, .. } = msg else {
        return None;
    };
    if from == me {
        return None;
    }
    let reply = match behaviour {
        Behaviour::Echo if !body.starts_with(ECHO_PREFIX) => format!("{ECHO_PREFIX}{body}"),
        Behaviour::Script(rules) => script_reply(rules, body)?.to_owned(),
        Behaviour::Echo | Behaviour::Rate(_) => return None,
    };
    Some(ClientMsg::Send { room: room.clone(), body: reply, id: format!("r{id}") })
}

/// Why a run ended badly; printed after `hubbub: `.
type RunError = String;

fn closed(code: u16, reason: &str) -> RunError {
    let reason = if reason.is_empty() { "no reason given" } else { reason };
    format!("the node closed the connection: {code} {reason}")
}

/// Prints received frames; a failed write (stdout closed) ends the run.
struct Output {
    json: bool,
}

impl Output {
    fn frame(&self, msg: &ServerMsg) -> Result<(), RunError> {
        let line = if self.json {
            Some(serde_json::to_string(msg).expect("server frames always serialize"))
        } else {
            render(msg)
        };
        match line {
            Some(line) => {
                writeln!(std::io::stdout().lock(), "{line}").map_err(|e| format!("cannot write to stdout: {e}"))
            }
            None => Ok(()),
        }
    }
}

async fn connect(bot: &Bot, out: &Output) -> Result<Connection, RunError> {
    let cannot = |e: ClientError| match e {
        ClientError::Closed { code, reason } => closed(code, &reason),
        ClientError::Refused { code, message } => format!("{} refused hello: {}: {message}", bot.url, code.as_str()),
        e => format!("cannot connect to {}: {e}", bot.url),
    };
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&bot.url))
        .await
        .map_err(|_| format!("cannot connect to {}: no answer within {CONNECT_TIMEOUT:?}", bot.url))?
        .map_err(cannot)?;
    let Welcome { session, user, node, nodes, protocol, max_body } = conn.hello(&bot.user).await.map_err(cannot)?;
    out.frame(&ServerMsg::Welcome { session, user, node, nodes, protocol, max_body, batch: false })?;
    for room in &bot.rooms {
        let seq = conn.join(room).await.map_err(|e| match e {
            ClientError::Closed { code, reason } => closed(code, &reason),
            ClientError::Refused { code, message } => format!("cannot join room {room}: {}: {message}", code.as_str()),
            e => format!("cannot join room {room}: {e}"),
        })?;
        out.frame(&ServerMsg::Joined { room: room.clone(), seq, truncated: false })?;
    }
    Ok(conn)
}

/// Rate mode's progress.
struct RateState {
    plan: RatePlan,
    start: Instant,
    sent: u64,
    pending: HashSet<String>,
    acked: u64,
    refused: u64,
    /// Set once the last message is sent: when the bot stops waiting for acks.
    grace_until: Option<Instant>,
}

impl RateState {
    fn new(plan: RatePlan, start: Instant) -> RateState {
        RateState { plan, start, sent: 0, pending: HashSet::new(), acked: 0, refused: 0, grace_until: None }
    }

    /// How many messages should have been sent by `now`: one at the start,
    /// then one every 1/rate seconds, capped by `--count` and `--duration`.
    fn due(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        let stop = self.plan.duration.map(|d| d.as_secs_f64() * self.plan.per_sec).map(|n| n.ceil() as u64);
        let due = (elapsed.as_secs_f64() * self.plan.per_sec).floor() as u64 + 1;
        [Some(due), self.plan.count, stop].into_iter().flatten().min().unwrap_or(due)
    }

    /// True once every message is sent (count reached or duration over).
    fn finished_sending(&self, now: Instant) -> bool {
        self.plan.count.is_some_and(|c| self.sent >= c)
            || self.plan.duration.is_some_and(|d| now.saturating_duration_since(self.start) >= d)
    }

    /// Counts an ack or refusal of one of our sends.
    fn answered(&mut self, msg: &ServerMsg) {
        match msg {
            ServerMsg::Ack { id, .. } if self.pending.remove(id) => self.acked += 1,
            ServerMsg::Error { id: Some(id), .. } if self.pending.remove(id) => self.refused += 1,
            _ => {}
        }
    }
}

async fn send(tx: &mut Sender, msg: &ClientMsg) -> Result<(), RunError> {
    tx.send(msg).await.map_err(|e| format!("cannot send: {e}"))
}

async fn run(bot: Bot) -> Result<(), RunError> {
    // Listen for signals before connecting, so an early one is not lost.
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &str| signal(kind).map_err(|e| format!("cannot listen for {name}: {e}"));
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
    let out = Output { json: bot.json };
    let conn = tokio::select! {
        conn = connect(&bot, &out) => conn?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    let (mut tx, mut rx) = conn.split();

    let start = Instant::now();
    let mut rate = match &bot.behaviour {
        Behaviour::Rate(plan) => Some(RateState::new(*plan, start)),
        _ => None,
    };
    let period = rate
        .as_ref()
        .map_or(Duration::from_secs(3600), |r| Duration::from_secs_f64(1.0 / r.plan.per_sec).max(MIN_TICK));
    let mut ticker = tokio::time::interval_at(start, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut replies: u64 = 0;

    let result = loop {
        let sending = rate.as_ref().is_some_and(|r| r.grace_until.is_none());
        let grace = rate.as_ref().and_then(|r| r.grace_until);
        tokio::select! {
            biased;
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            event = rx.next_event() => {
                let msg = match event {
                    Ok(Event::Msg(msg)) => msg,
                    Ok(Event::Closed { code, reason }) => break Err(closed(code, &reason)),
                    Err(e) => break Err(format!("connection failed: {e}")),
                };
                if let Err(e) = out.frame(&msg) {
                    break Err(e);
                }
                if let Some(r) = rate.as_mut() {
                    r.answered(&msg);
                    if r.grace_until.is_some() && r.pending.is_empty() {
                        break Ok(());
                    }
                }
                if let Some(reply) = answer(&bot.behaviour, &bot.user, &msg, replies + 1) {
                    replies += 1;
                    if let Err(e) = send(&mut tx, &reply).await {
                        break Err(e);
                    }
                }
            }
            now = ticker.tick(), if sending => {
                let Some(r) = rate.as_mut() else { continue };
                let due = r.due(now);
                let mut failed = None;
                while r.sent < due && r.pending.len() < MAX_PENDING {
                    r.sent += 1;
                    let id = r.sent.to_string();
                    let room = bot.rooms[((r.sent - 1) % bot.rooms.len() as u64) as usize].clone();
                    let msg = ClientMsg::Send { room, body: format!("msg {}", r.sent), id: id.clone() };
                    r.pending.insert(id);
                    if let Err(e) = send(&mut tx, &msg).await {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed {
                    break Err(e);
                }
                if r.finished_sending(Instant::now()) {
                    if r.pending.is_empty() {
                        break Ok(());
                    }
                    r.grace_until = Some(Instant::now() + ACK_GRACE);
                }
            }
            _ = tokio::time::sleep_until(grace.unwrap_or(start)), if grace.is_some() => break Ok(()),
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
    if let Some(r) = rate {
        let secs = start.elapsed().as_secs_f64();
        let missing = r.pending.len();
        eprintln!(
            "hubbub bot: sent {} in {secs:.1} s: {} acked, {} refused, {missing} unanswered",
            r.sent, r.acked, r.refused
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, reply: &str) -> Rule {
        Rule { pattern: pattern.to_owned(), reply: reply.to_owned() }
    }

    #[test]
    fn script_lines_become_rules() {
        let text = "# greetings\n\nHello => hi there\n  price => it is => free  \n#ignored => no\n";
        assert_eq!(parse_script(text).unwrap(), vec![rule("hello", "hi there"), rule("price", "it is => free")]);
    }

    #[test]
    fn script_errors_name_the_line() {
        assert_eq!(parse_script("a => b\nno arrow here").unwrap_err(), "line 2: expected `pattern => reply`");
        assert!(parse_script(" => reply").unwrap_err().starts_with("line 1: the pattern"));
        assert!(parse_script("pattern =>   ").unwrap_err().starts_with("line 1: the reply"));
        assert!(parse_script("# only a comment\n\n").unwrap_err().contains("no `pattern => reply`"));
        assert!(parse_script("").is_err());
    }

    #[test]
    fn script_matches_substrings_ignoring_case_first_rule_wins() {
        let rules = parse_script("hello => hi\nHELP => see the docs\nhel => never first").unwrap();
        assert_eq!(script_reply(&rules, "well, HELLO you"), Some("hi"));
        assert_eq!(script_reply(&rules, "I need Help"), Some("see the docs"));
        assert_eq!(script_reply(&rules, "goodbye"), None);
        assert_eq!(script_reply(&rules, "Helsinki"), Some("never first"));
    }

    fn room_msg(from: &str, body: &str) -> ServerMsg {
        ServerMsg::Message {
            kind: Audience::Room,
            room: Some("lobby".into()),
            seq: Some(7),
            to: None,
            from: from.into(),
            body: body.into(),
            id: "x".into(),
            ts: 1,
        }
    }

    #[test]
    fn echo_answers_others_in_the_same_room_only() {
        let reply = answer(&Behaviour::Echo, "bot", &room_msg("ann", "hi"), 3);
        assert_eq!(reply, Some(ClientMsg::Send { room: "lobby".into(), body: "echo: hi".into(), id: "r3".into() }));
        assert_eq!(answer(&Behaviour::Echo, "bot", &room_msg("bot", "hi"), 1), None);
        assert_eq!(answer(&Behaviour::Echo, "bot", &room_msg("bot2", "echo: hi"), 1), None);
        let direct = ServerMsg::Message {
            kind: Audience::Direct,
            room: None,
            seq: None,
            to: Some("bot".into()),
            from: "ann".into(),
            body: "hi".into(),
            id: "d".into(),
            ts: 1,
        };
        assert_eq!(answer(&Behaviour::Echo, "bot", &direct, 1), None);
    }

    #[test]
    fn frames_render_as_one_line() {
        assert_eq!(render(&room_msg("ann", "a\nb")).unwrap(), "[lobby #7] ann: a\\nb");
        let err = ServerMsg::Error {
            code: hubbub_client::ErrorCode::NotJoined,
            message: "join first".into(),
            id: Some("5".into()),
        };
        assert_eq!(render(&err).unwrap(), "error not_joined: join first (id 5)");
        assert_eq!(render(&ServerMsg::Pong { id: None }), None);
    }

    fn args(mode: Mode) -> BotArgs {
        BotArgs {
            url: Some("ws://127.0.0.1:8000/ws".into()),
            user: "bot".into(),
            rooms: vec!["lobby".into()],
            mode,
            script: None,
            rate: None,
            count: None,
            duration: None,
            json: false,
        }
    }

    fn setting_of(a: BotArgs) -> &'static str {
        Bot::load(a).unwrap_err().setting
    }

    #[test]
    fn each_bad_setting_is_named() {
        assert_eq!(setting_of(BotArgs { url: None, ..args(Mode::Echo) }), "url");
        assert_eq!(setting_of(BotArgs { url: Some("http://x/ws".into()), ..args(Mode::Echo) }), "url");
        assert_eq!(setting_of(BotArgs { url: Some("wss://x/ws".into()), ..args(Mode::Echo) }), "url");
        assert_eq!(setting_of(BotArgs { user: "a b".into(), ..args(Mode::Echo) }), "user");
        assert_eq!(setting_of(BotArgs { rooms: vec!["a/b".into()], ..args(Mode::Echo) }), "room");
        assert_eq!(setting_of(args(Mode::Script)), "script");
        assert_eq!(setting_of(BotArgs { script: Some("/nonexistent".into()), ..args(Mode::Script) }), "script");
        assert_eq!(setting_of(args(Mode::Rate)), "count");
        assert_eq!(setting_of(BotArgs { count: Some("0".into()), ..args(Mode::Rate) }), "count");
        assert_eq!(
            setting_of(BotArgs { rate: Some("-1".into()), count: Some("3".into()), ..args(Mode::Rate) }),
            "rate"
        );
        assert_eq!(setting_of(BotArgs { duration: Some("NaN".into()), ..args(Mode::Rate) }), "duration");
        assert_eq!(setting_of(BotArgs { rooms: vec![], count: Some("3".into()), ..args(Mode::Rate) }), "room");
        assert_eq!(setting_of(BotArgs { rate: Some("5".into()), ..args(Mode::Echo) }), "rate");
        let e = Bot::load(BotArgs { rooms: vec!["a b".into()], ..args(Mode::Echo) }).unwrap_err();
        assert!(e.to_string().starts_with("invalid setting 'room' (--room / HUBBUB_BOT_ROOMS): "), "{e}");
    }

    #[test]
    fn rate_settings_are_accepted() {
        let bot = Bot::load(BotArgs {
            rooms: vec!["a".into(), "b".into(), "a".into()],
            rate: Some("20".into()),
            duration: Some("1.5".into()),
            ..args(Mode::Rate)
        })
        .unwrap();
        assert_eq!(bot.rooms, ["a", "b"]);
        let plan = RatePlan { per_sec: 20.0, count: None, duration: Some(Duration::from_millis(1500)) };
        assert_eq!(bot.behaviour, Behaviour::Rate(plan));
    }

    #[test]
    fn rate_due_counts_are_bounded() {
        let start = Instant::now();
        let plan = RatePlan { per_sec: 10.0, count: Some(25), duration: Some(Duration::from_secs(2)) };
        let state = RateState::new(plan, start);
        assert_eq!(state.due(start), 1);
        assert_eq!(state.due(start + Duration::from_millis(450)), 5);
        assert_eq!(state.due(start + Duration::from_secs(10)), 20, "duration 2 s at 10/s");
        let state = RateState::new(RatePlan { count: Some(3), ..plan }, start);
        assert_eq!(state.due(start + Duration::from_secs(1)), 3);
    }
}
