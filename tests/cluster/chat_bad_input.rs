//! Bad and abusive clients: every malformed frame is answered with its
//! error code on a connection that stays usable; a missing hello, an
//! oversized frame, too many unanswered sends and a client that stops
//! reading are closed with their close codes, without delaying anyone else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hubbub_client::{Audience, ClientError, ClientMsg, Connection, ErrorCode, Event, ServerMsg};
use hubbub_testkit::{Node, NodeApi, NodeOpts, random_key, wait_until};
use tokio::sync::oneshot;

use crate::chat_util::{
    FRAME_TIMEOUT, POLL, SETUP_CONVERGENCE, chat_counter, check_single_holders, connect, next_msg, open, ping_pong,
    rooms_owned_by, runtime, start_nodes, wait_close, wait_ready, ws_url,
};

fn send(room: &str, body: &str, id: &str) -> String {
    let msg = ClientMsg::Send { room: room.to_owned(), body: body.to_owned(), id: id.to_owned() };
    serde_json::to_string(&msg).expect("serializes")
}

fn direct(to: &str, body: &str, id: &str) -> String {
    let msg = ClientMsg::Direct { to: to.to_owned(), body: body.to_owned(), id: id.to_owned() };
    serde_json::to_string(&msg).expect("serializes")
}

fn join(room: &str) -> String {
    serde_json::to_string(&ClientMsg::Join { room: room.to_owned(), since: None }).expect("serializes")
}

/// Reads the next frame, which must be an `error` with `code` and `id`.
async fn expect_error(conn: &mut Connection, who: &str, code: ErrorCode, id: Option<&str>) {
    match next_msg(conn, who).await {
        ServerMsg::Error { code: c, message, id: i } if c == code && i.as_deref() == id && !message.is_empty() => {}
        other => panic!("{who}: expected error {} with id {id:?} and a message, got {other:?}", code.as_str()),
    }
}

/// A lone node started with extra `args`.
fn lone_node(args: &[&str]) -> Node {
    let mut opts = NodeOpts::new("n1", &random_key());
    opts.args = args.iter().map(|a| (*a).to_owned()).collect();
    let node = Node::spawn(opts);
    wait_ready(&node);
    node
}

/// Sends to a joined room and expects the ack and the sender's own copy.
async fn send_delivered(conn: &mut Connection, who: &str, room: &str, body: &str, id: &str) {
    let seq = conn.send_and_ack(room, body, id).await.unwrap_or_else(|e| panic!("{who}: {id} not acked: {e}"));
    match next_msg(conn, who).await {
        ServerMsg::Message { kind: Audience::Room, room: Some(r), seq: Some(s), body: b, id: i, .. }
            if r == room && s == seq && b == body && i == id => {}
        other => panic!("{who}: expected its own {id} as seq {seq}, got {other:?}"),
    }
}

#[test]
fn bad_frames_get_their_error_code() {
    let node = lone_node(&[]);
    let url = ws_url(&node);
    runtime().block_on(async {
        let (mut conn, welcome) = open(&url, "ann").await;
        let max = welcome.max_body;
        assert_eq!(max, 65536, "default max_body in {welcome:?}");
        conn.join("lobby").await.expect("join lobby");

        let long = |n: usize, c: &str| c.repeat(n);
        let cases: Vec<(&str, String, ErrorCode, Option<&str>)> = vec![
            ("not JSON", "{not json".into(), ErrorCode::BadJson, None),
            ("an empty frame", String::new(), ErrorCode::BadJson, None),
            ("a JSON array", "[1,2]".into(), ErrorCode::BadJson, None),
            ("a JSON string", r#""hello""#.into(), ErrorCode::BadJson, None),
            ("an unknown type", r#"{"type":"shout","id":"u1"}"#.into(), ErrorCode::UnknownType, Some("u1")),
            ("no type", r#"{"room":"lobby"}"#.into(), ErrorCode::UnknownType, None),
            ("a numeric type", r#"{"type":7}"#.into(), ErrorCode::UnknownType, None),
            ("a missing field", r#"{"type":"join"}"#.into(), ErrorCode::BadField, None),
            ("a mistyped field", r#"{"type":"join","room":7}"#.into(), ErrorCode::BadField, None),
            (
                "an unknown field",
                r#"{"type":"send","room":"lobby","body":"x","id":"f1","colour":"red"}"#.into(),
                ErrorCode::BadField,
                Some("f1"),
            ),
            ("a send without id", r#"{"type":"send","room":"lobby","body":"x"}"#.into(), ErrorCode::BadField, None),
            ("an empty body", send("lobby", "", "e1"), ErrorCode::EmptyBody, Some("e1")),
            ("a whitespace body", send("lobby", " \n\t ", "e2"), ErrorCode::EmptyBody, Some("e2")),
            (
                "a body 1 byte too long",
                send("lobby", &long(max + 1, "x"), "big1"),
                ErrorCode::BodyTooLarge,
                Some("big1"),
            ),
            (
                "a direct body 1 byte too long",
                direct("bob", &long(max + 1, "x"), "big2"),
                ErrorCode::BodyTooLarge,
                Some("big2"),
            ),
            ("a room with a space", join("two words"), ErrorCode::BadRoom, None),
            ("an empty room", join(""), ErrorCode::BadRoom, None),
            ("a 65-byte room", join(&long(65, "r")), ErrorCode::BadRoom, None),
            ("a send to a bad room", send("a/b", "x", "r1"), ErrorCode::BadRoom, Some("r1")),
            ("a direct to a bad user", direct("no body", "x", "u2"), ErrorCode::BadUser, Some("u2")),
            ("a direct to a 33-byte user", direct(&long(33, "u"), "x", "u3"), ErrorCode::BadUser, Some("u3")),
            ("an empty id", send("lobby", "x", ""), ErrorCode::BadId, None),
            ("a 65-byte id", send("lobby", "x", &long(65, "i")), ErrorCode::BadId, None),
            (
                "a broadcast with an empty id",
                serde_json::to_string(&ClientMsg::Broadcast { body: "x".into(), id: String::new() }).expect("json"),
                ErrorCode::BadId,
                None,
            ),
            ("a send to a room not joined", send("elsewhere", "x", "nj1"), ErrorCode::NotJoined, Some("nj1")),
            (
                "a leave of a room not joined",
                serde_json::to_string(&ClientMsg::Leave { room: "elsewhere".into() }).expect("json"),
                ErrorCode::NotJoined,
                None,
            ),
            (
                "a second hello",
                serde_json::to_string(&ClientMsg::Hello {
                    user: "ann".into(),
                    token: None,
                    session: None,
                    batch: false,
                })
                .expect("json"),
                ErrorCode::AlreadyHello,
                None,
            ),
        ];
        for (i, (what, text, code, id)) in cases.into_iter().enumerate() {
            let who = format!("ann after {what}");
            conn.send_text(text).await.unwrap_or_else(|e| panic!("{who}: cannot send: {e}"));
            expect_error(&mut conn, &who, code, id).await;
            let extra = ping_pong(&mut conn, &who, &format!("p{i}")).await;
            assert!(extra.is_empty(), "{who}: more frames than the error: {extra:?}");
        }
        conn.send_binary(vec![0, 1, 2, 3]).await.expect("send a binary frame");
        expect_error(&mut conn, "ann after a binary frame", ErrorCode::BinaryFrame, None).await;
        let extra = ping_pong(&mut conn, "ann after a binary frame", "pb").await;
        assert!(extra.is_empty(), "ann after a binary frame: more frames than the error: {extra:?}");

        // The limits themselves are allowed, on the same connection.
        send_delivered(&mut conn, "ann", "lobby", &long(max, "x"), "max-body").await;
        send_delivered(&mut conn, "ann", "lobby", "max id", &long(64, "i")).await;
        let room64 = long(64, "r");
        conn.join(&room64).await.expect("a 64-byte room name is valid");
        send_delivered(&mut conn, "ann", &room64, "hi", "in-room64").await;
        conn.leave(&room64).await.expect("leave the 64-byte room");
        let (mut long_user, welcome) = open(&url, &long(32, "u")).await;
        assert_eq!(welcome.user, long(32, "u"), "a 32-byte user name is valid");
        ping_pong(&mut long_user, "32-byte user", "p").await;
    });
}

#[test]
fn hello_comes_first_and_once() {
    let node = lone_node(&[]);
    let url = ws_url(&node);
    runtime().block_on(async {
        let mut conn = connect(&url).await;
        let frames = [
            r#"{"type":"ping","id":"p"}"#.to_owned(),
            join("lobby"),
            send("lobby", "x", "s1"),
            r#"{"type":"broadcast","body":"x","id":"b1"}"#.to_owned(),
        ];
        for text in frames {
            conn.send_text(text.clone()).await.expect("send before hello");
            match next_msg(&mut conn, "before hello").await {
                ServerMsg::Error { code: ErrorCode::HelloRequired, .. } => {}
                other => panic!("{text} before hello: expected error hello_required, got {other:?}"),
            }
        }
        match conn.hello("not a name").await {
            Err(ClientError::Refused { code: ErrorCode::BadUser, .. }) => {}
            other => panic!("hello with an invalid user name: expected bad_user, got {other:?}"),
        }
        match conn.hello(&"u".repeat(33)).await {
            Err(ClientError::Refused { code: ErrorCode::BadUser, .. }) => {}
            other => panic!("hello with a 33-byte user name: expected bad_user, got {other:?}"),
        }
        let welcome = conn.hello("ann").await.expect("a valid hello after refused ones is welcome");
        assert_eq!(welcome.user, "ann");
        match conn.hello("bob").await {
            Err(ClientError::Refused { code: ErrorCode::AlreadyHello, .. }) => {}
            other => panic!("a second hello: expected already_hello, got {other:?}"),
        }
        conn.join("lobby").await.expect("join after hello");
        send_delivered(&mut conn, "ann", "lobby", "hello", "h1").await;
        let extra = ping_pong(&mut conn, "ann", "p").await;
        assert!(extra.is_empty(), "ann: unexpected frames {extra:?}");
    });
}

#[test]
fn room_limit_per_connection() {
    let node = lone_node(&["--max-rooms", "4"]);
    let url = ws_url(&node);
    runtime().block_on(async {
        let (mut conn, _) = open(&url, "ann").await;
        for i in 0..4 {
            conn.join(&format!("r{i}")).await.unwrap_or_else(|e| panic!("join r{i} of 4: {e}"));
        }
        match conn.join("r4").await {
            Err(ClientError::Refused { code: ErrorCode::TooManyRooms, .. }) => {}
            other => panic!("a 5th room with --max-rooms 4: expected too_many_rooms, got {other:?}"),
        }
        conn.join("r0").await.expect("joining a joined room again does not count twice");
        conn.leave("r1").await.expect("leave r1");
        conn.join("r4").await.expect("after a leave there is room for r4");
        send_delivered(&mut conn, "ann", "r4", "hi", "s1").await;
        match conn.send_and_ack("r1", "x", "s2").await {
            Err(ClientError::Refused { code: ErrorCode::NotJoined, .. }) => {}
            other => panic!("a send to the room just left: expected not_joined, got {other:?}"),
        }
        let extra = ping_pong(&mut conn, "ann", "p").await;
        assert!(extra.is_empty(), "ann: unexpected frames {extra:?}");
    });
}

#[test]
fn no_hello_in_time_closes_4001() {
    const HELLO_TIMEOUT: Duration = Duration::from_millis(1000);
    let node = lone_node(&["--hello-timeout-ms", "1000"]);
    let url = ws_url(&node);
    runtime().block_on(async {
        let opened_at = Instant::now();
        let mut silent = connect(&url).await;
        let mut chatty = connect(&url).await;
        let (mut greeted, _) = open(&url, "ann").await;
        // Frames other than hello do not stop the clock.
        chatty.send_text(r#"{"type":"ping"}"#).await.expect("ping before hello");
        match next_msg(&mut chatty, "chatty").await {
            ServerMsg::Error { code: ErrorCode::HelloRequired, .. } => {}
            other => panic!("ping before hello: expected hello_required, got {other:?}"),
        }
        for (who, conn) in [("silent", &mut silent), ("chatty", &mut chatty)] {
            let close = wait_close(conn, who, HELLO_TIMEOUT * 5).await;
            let after = opened_at.elapsed();
            assert_eq!(close, (4001, "hello timeout".to_owned()), "{who}: no hello within the timeout");
            assert!(
                after >= HELLO_TIMEOUT - Duration::from_millis(100),
                "{who}: closed after {after:?}, before the {HELLO_TIMEOUT:?} hello timeout"
            );
            println!("no_hello_in_time_closes_4001: {who} closed {:.2}s after connecting", after.as_secs_f64());
        }
        let extra = ping_pong(&mut greeted, "ann", "p").await;
        assert!(extra.is_empty(), "ann: unexpected frames {extra:?}");
        assert!(opened_at.elapsed() > HELLO_TIMEOUT, "the greeted connection outlived the hello timeout");
    });
}

#[test]
fn oversized_frame_closes_1009() {
    let node = lone_node(&["--max-body", "1024"]);
    let url = ws_url(&node);
    runtime().block_on(async {
        let (mut conn, welcome) = open(&url, "ann").await;
        assert_eq!(welcome.max_body, 1024, "--max-body 1024 must show in welcome");
        conn.join("lobby").await.expect("join");
        send_delivered(&mut conn, "ann", "lobby", &"x".repeat(1024), "at-limit").await;
        // Bodies over max_body but frames under the 4 KiB hard limit: refused, kept.
        for (id, len) in [("over-1", 1025), ("over-4000", 3900)] {
            conn.send_text(send("lobby", &"x".repeat(len), id)).await.expect("send");
            expect_error(&mut conn, &format!("ann after a {len}-byte body"), ErrorCode::BodyTooLarge, Some(id)).await;
        }
        let extra = ping_pong(&mut conn, "ann", "p").await;
        assert!(extra.is_empty(), "ann: unexpected frames {extra:?}");

        let text = send("lobby", &"x".repeat(5000), "too-big");
        assert!(text.len() > 4 * 1024, "the frame must exceed the hard limit");
        conn.send_text(text).await.expect("send the oversized frame");
        let close = wait_close(&mut conn, "ann", FRAME_TIMEOUT).await;
        assert_eq!(close, (1009, "frame too large".to_owned()), "a frame over 4 x max_body");

        let (mut other, _) = open(&url, "bob").await;
        let extra = ping_pong(&mut other, "bob", "p").await;
        assert!(extra.is_empty(), "bob: unexpected frames {extra:?}");
    });
}

/// The largest message the largest `--max-body` allows, with the most
/// escaping a client frame can carry, crosses the node link: the node that
/// sequences it is not the one the subscriber is on.
#[test]
fn the_largest_message_crosses_nodes() {
    const MAX_BODY: usize = 512 * 1024;
    let max_body = MAX_BODY.to_string();
    let queue = (4 * MAX_BODY).to_string();
    let nodes =
        start_nodes(2, &["--max-body", &max_body, "--client-queue-bytes", &queue, "--history-bytes", "2097152"]);
    let names: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
    let room = rooms_owned_by(&names, names[1], "big-", 1).remove(0);
    runtime().block_on(async {
        let (mut ann, welcome) = open(&ws_url(&nodes[0]), "ann").await;
        assert_eq!(welcome.max_body, MAX_BODY);
        let (mut bob, _) = open(&ws_url(&nodes[1]), "bob").await;
        ann.join(&room).await.expect("ann joins");
        bob.join(&room).await.expect("bob joins");
        // Control characters travel as \u00XX: six bytes each, as many as
        // a client frame of 4 × max_body holds.
        let escaped = "\u{1}".repeat((4 * MAX_BODY - 200) / 6);
        let plain = "y".repeat(MAX_BODY);
        for (id, body) in [("escaped", &escaped), ("plain", &plain)] {
            send_delivered(&mut ann, "ann", &room, body, id).await;
            match next_msg(&mut bob, "bob").await {
                ServerMsg::Message { body: b, id: i, .. } if i == id && &b == body => {}
                other => panic!("bob: expected {id} ({} bytes), got {:.200}", body.len(), format!("{other:?}")),
            }
        }
    });
}

#[test]
fn too_many_sends_in_flight_closes_4009() {
    const MAX_IN_FLIGHT: usize = 8;
    // n2 is stopped below for as long as the test takes on a loaded machine:
    // a long suspicion keeps it a member (stopped, not dead), so its rooms
    // stay with it and nothing can be acked.
    let config = std::env::temp_dir().join(format!("hubbub-flood-{}.toml", std::process::id()));
    std::fs::write(&config, "[membership]\nsuspect_to_down_ms = 60000\n").expect("write the config file");
    let config_arg = config.to_string_lossy().into_owned();
    let nodes = start_nodes(2, &["--max-in-flight", "8", "--config", &config_arg]);
    let _ = std::fs::remove_file(&config);
    // A room sequenced by n2, for a client of n1: while n2 is stopped no send
    // can be acked, so the number in flight is exactly what was sent.
    let room = rooms_owned_by(&["n1", "n2"], "n2", "flood-", 1).remove(0);
    let url = ws_url(&nodes[0]);
    let rt = runtime();
    let (mut conn, mut bystander) = rt.block_on(async {
        let (mut conn, _) = open(&url, "ann").await;
        conn.join(&room).await.expect("join a room owned by n2");
        send_delivered(&mut conn, "ann", &room, "warm-up", "w0").await;
        (conn, open(&url, "bob").await.0)
    });
    let apis: Vec<(String, NodeApi)> = nodes.iter().map(|n| (n.name().to_owned(), n.api().clone())).collect();
    let rooms = [room.clone()];
    wait_until(Instant::now() + SETUP_CONVERGENCE, POLL, || match check_single_holders(&apis, &rooms)?.get(&room) {
        Some(holder) if holder == "n2" => Ok(()),
        other => Err(format!("{room} is held by {other:?}, not (yet) by its owner n2")),
    })
    .expect("n2 holds the room");

    nodes[1].sigstop();
    let stopped_at = Instant::now();
    let close = rt.block_on(async {
        for i in 0..MAX_IN_FLIGHT {
            conn.send_text(send(&room, "x", &format!("f{i}"))).await.expect("send");
        }
        // At the limit the connection still works.
        let early = ping_pong(&mut conn, "ann with 8 sends in flight", "p").await;
        assert!(early.is_empty(), "ann: frames while n2 was stopped (is n2 the owner of {room}?): {early:?}");
        conn.send_text(send(&room, "x", "one-too-many")).await.expect("send the 9th");
        wait_close(&mut conn, "ann with 9 sends in flight", FRAME_TIMEOUT).await
    });
    let stopped_for = stopped_at.elapsed();
    nodes[1].sigcont();
    println!("too_many_sends_in_flight_closes_4009: n2 was stopped for {:.2}s", stopped_for.as_secs_f64());
    assert_eq!(
        close,
        (4009, "too many sends in flight".to_owned()),
        "9 sends awaiting their ack with --max-in-flight 8"
    );
    rt.block_on(async {
        let extra = ping_pong(&mut bystander, "bob", "p").await;
        assert!(extra.is_empty(), "bob: unexpected frames {extra:?}");
    });
    let floods = chat_counter(nodes[0].api(), "floods_closed").expect("n1's chat counters");
    assert!(floods >= 1, "n1 closed a flood but counts floods_closed = {floods}");
}

/// Reads room messages of `room` (seq by seq from `first`) until the one
/// with body `end`; returns how many arrived.
async fn read_room_until_end(conn: &mut Connection, who: &str, room: &str, first: u64) -> Result<u64, String> {
    let mut next = first;
    loop {
        match conn.next_event_within(FRAME_TIMEOUT).await.map_err(|e| format!("{who}: at seq {next}: {e}"))? {
            Event::Msg(ServerMsg::Message { kind: Audience::Room, room: Some(r), seq: Some(seq), body, .. })
                if r == room =>
            {
                if seq != next {
                    return Err(format!("{who}: expected seq {next}, got {seq}"));
                }
                if body == "end" {
                    return Ok(seq - first + 1);
                }
                next += 1;
            }
            Event::Msg(other) => return Err(format!("{who}: unexpected frame {other:?}")),
            Event::Closed { code, reason } => return Err(format!("{who}: closed ({code} {reason:?}) at seq {next}")),
        }
    }
}

#[test]
fn slow_consumer_closes_4008_without_delaying_others() {
    /// 16 KB bodies, up to ~21 MB: far more than the kernel buffers and the
    /// 64 KiB queue can hold for a client that does not read. A reader's
    /// queue holds bytes not yet flushed to its socket, so bodies near the
    /// queue size would close even readers that keep up, whenever two
    /// deliveries land before one flush.
    const BODY: usize = 16_000;
    const MAX_MESSAGES: u64 = 1_300;
    /// Messages still sent after the slow client was closed.
    const AFTER_CLOSE: u64 = 50;
    /// One send at a time: a reader that keeps up has one delivery queued.
    const WINDOW: u64 = 1;
    const RUN_BOUND: Duration = Duration::from_secs(40);
    let room = "big";

    // Its clients are placed unevenly on purpose: no rebalancing. A 64 KiB
    // queue takes bodies of at most a quarter of it.
    let nodes = start_nodes(2, &["--client-queue-bytes", "65536", "--max-body", "16384", "--rebalance", "false"]);
    let (url1, url2) = (ws_url(&nodes[0]), ws_url(&nodes[1]));
    let rt = runtime();
    let started = Instant::now();
    let (mut slow, mut near, mut far, mut writer) = rt.block_on(async {
        let mut conns = Vec::new();
        for (user, url) in [("slow", &url1), ("near", &url1), ("far", &url2), ("writer", &url2)] {
            let (mut conn, _) = open(url, user).await;
            let seq = conn.join(room).await.unwrap_or_else(|e| panic!("{user}: join: {e}"));
            assert_eq!(seq, 0, "{user}: the room is new");
            conns.push(conn);
        }
        let mut conns = conns.into_iter();
        let mut next = || conns.next().expect("four connections");
        (next(), next(), next(), next())
    });

    // The slow client reads nothing until told to, then reads to its close.
    let (read_now, read_now_rx) = oneshot::channel::<()>();
    let slow_task = rt.spawn(async move {
        read_now_rx.await.map_err(|_| "the test never let the slow client read".to_owned())?;
        let close = wait_close(&mut slow, "slow", FRAME_TIMEOUT).await;
        // What it got before the close is a gapless prefix of the room.
        let mut next = 1;
        while let Ok(Event::Msg(msg)) = slow.next_event_within(Duration::ZERO).await {
            match msg {
                ServerMsg::Message { seq: Some(seq), .. } if seq == next => next += 1,
                other => return Err(format!("slow: unexpected frame before its close: {other:?}")),
            }
            if next > MAX_MESSAGES + 1 {
                break;
            }
        }
        Ok::<_, String>((close, next - 1))
    });
    let near_task = rt.spawn(async move { read_room_until_end(&mut near, "near (n1)", room, 1).await });
    let far_task = rt.spawn(async move { read_room_until_end(&mut far, "far (n2)", room, 1).await });
    let slow_closed = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer_task = {
        let (slow_closed, acked) = (Arc::clone(&slow_closed), Arc::clone(&acked));
        rt.spawn(async move {
            let body = "x".repeat(BODY);
            let (mut sent, mut received, mut stop_at) = (0u64, 0u64, MAX_MESSAGES);
            while acked.load(Ordering::Relaxed) < stop_at || received < stop_at {
                if slow_closed.load(Ordering::Relaxed) {
                    stop_at = stop_at.min(sent + AFTER_CLOSE).max(sent);
                }
                while sent < stop_at && sent - acked.load(Ordering::Relaxed) < WINDOW {
                    writer.send_text(send(room, &body, &format!("m{sent}"))).await.map_err(|e| e.to_string())?;
                    sent += 1;
                }
                match writer.next_event_within(FRAME_TIMEOUT).await.map_err(|e| format!("writer: {e}"))? {
                    Event::Msg(ServerMsg::Ack { .. }) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Msg(ServerMsg::Message { kind: Audience::Room, .. }) => received += 1,
                    other => return Err(format!("writer: unexpected {other:?} after {sent} sent")),
                }
            }
            let end = writer.send_and_ack(room, "end", "end").await.map_err(|e| format!("writer: end: {e}"))?;
            Ok::<_, String>((sent, end))
        })
    };

    let api1 = nodes[0].api().clone();
    let detected = wait_until(started + RUN_BOUND, POLL, || {
        let closed = chat_counter(&api1, "slow_consumers_closed")?;
        let acked = acked.load(Ordering::Relaxed);
        if writer_task.is_finished() {
            return Ok(false);
        }
        if closed >= 1 { Ok(true) } else { Err(format!("slow_consumers_closed = {closed} after {acked} acked sends")) }
    })
    .expect("n1 closes the client that stopped reading");
    let acked_at_detection = acked.load(Ordering::Relaxed);
    slow_closed.store(true, Ordering::Relaxed);
    let _ = read_now.send(());

    let (sent, end_seq) = finish(&rt, writer_task, "the writer", RUN_BOUND);
    assert!(detected, "the writer finished all {sent} sends before n1 closed the slow client");
    let near_got = finish(&rt, near_task, "the reader on n1", RUN_BOUND);
    let far_got = finish(&rt, far_task, "the reader on n2", RUN_BOUND);
    let (close, slow_got) = finish(&rt, slow_task, "the slow client", RUN_BOUND);
    let elapsed = started.elapsed();
    println!(
        "slow_consumer_closes_4008_without_delaying_others: slow client closed after {acked_at_detection} acked \
         sends ({:.1} MB); it had {slow_got} messages waiting; {sent} sent ({:.1} MB), the readers on n1 and n2 \
         got {near_got} and {far_got} with the end mark, in {:.2}s",
        (acked_at_detection * BODY as u64) as f64 / 1e6,
        (sent * BODY as u64) as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    assert_eq!(close, (4008, "slow consumer".to_owned()), "the client that stopped reading");
    assert_eq!(end_seq, sent + 1, "every send was sequenced once");
    assert_eq!((near_got, far_got), (sent + 1, sent + 1), "readers on n1 and n2 get every message");
    let closed = chat_counter(nodes[0].api(), "slow_consumers_closed").expect("n1's chat counters");
    assert_eq!(closed, 1, "only the client that stopped reading is a slow consumer");
}

/// Waits for `task` and returns its value; panics with its error.
fn finish<T>(
    rt: &tokio::runtime::Runtime,
    task: tokio::task::JoinHandle<Result<T, String>>,
    what: &str,
    within: Duration,
) -> T {
    rt.block_on(async { tokio::time::timeout(within, task).await })
        .unwrap_or_else(|_| panic!("{what} did not finish within {within:?}"))
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
        .unwrap_or_else(|e| panic!("{e}"))
}
