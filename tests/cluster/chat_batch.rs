//! Batched frames (`hello.batch`): a client that asks for them gets several
//! messages per frame, one per line, when deliveries queue up; every message
//! still arrives once and in order. A client that did not ask never gets a
//! frame with more than one message.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hubbub_client::{ClientMsg, Event, ServerMsg};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::chat_util::{FRAME_TIMEOUT, check_consecutive, open, runtime, start_nodes, ws_url};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Messages published; sent in windows that stay under the in-flight limit.
const MESSAGES: u64 = 2_000;
const WINDOW: u64 = 500;
/// Everything must have arrived this fast (a debug build on 2 busy cores).
const RUN_BOUND: Duration = Duration::from_secs(60);

/// What one raw reader saw: frames read, and the room messages' seqs in
/// arrival order.
#[derive(Debug, Default)]
struct Seen {
    frames: u64,
    /// Frames that carried more than one message.
    multi: u64,
    seqs: Vec<u64>,
}

/// Reads text frames until `pick` returns a value, splitting each frame
/// into its lines; every line must be one server message.
async fn read_until<T>(ws: &mut Ws, who: &str, seen: &mut Seen, mut pick: impl FnMut(&ServerMsg) -> Option<T>) -> T {
    loop {
        let frame = match tokio::time::timeout(FRAME_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("{who}: expected a text frame, got {other:?}"),
        };
        seen.frames += 1;
        let lines: Vec<&str> = frame.split('\n').collect();
        if lines.len() > 1 {
            seen.multi += 1;
        }
        let mut found = None;
        for line in lines {
            let msg: ServerMsg = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{who}: a line that is not a message ({e}): {line:?}"));
            if let ServerMsg::Message { seq: Some(seq), .. } = &msg {
                seen.seqs.push(*seq);
            }
            if found.is_none() {
                found = pick(&msg);
            }
        }
        if let Some(found) = found {
            return found;
        }
    }
}

/// Opens a raw WebSocket to `url`, says hello as `user` (asking for batches
/// or not) and joins `room`; returns the socket and the room's last seq.
async fn raw_client(url: &str, user: &str, batch: bool, room: &str, seen: &mut Seen) -> (Ws, u64) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("{user}: {e}"));
    let hello = ClientMsg::Hello { user: user.to_owned(), token: None, session: None, batch };
    ws.send(Message::text(serde_json::to_string(&hello).expect("serializes"))).await.expect("hello sent");
    let echoed = read_until(&mut ws, user, seen, |m| match m {
        ServerMsg::Welcome { batch, .. } => Some(*batch),
        _ => None,
    })
    .await;
    assert_eq!(echoed, batch, "{user}: welcome.batch echoes what hello asked for");
    let join = ClientMsg::Join { room: room.to_owned(), since: None };
    ws.send(Message::text(serde_json::to_string(&join).expect("serializes"))).await.expect("join sent");
    let seq = read_until(&mut ws, user, seen, |m| match m {
        ServerMsg::Joined { room: r, seq, .. } if r == room => Some(*seq),
        _ => None,
    })
    .await;
    (ws, seq)
}

#[test]
fn batched_frames_carry_every_message_once_in_order() {
    let nodes = start_nodes(3, &[]);
    let (sender_url, reader_url) = (ws_url(&nodes[0]), ws_url(&nodes[1]));
    let room = "batched";
    let rt = runtime();
    let started = Instant::now();
    let (batched, plain, first) = rt.block_on(async {
        let (mut batched, mut plain) = (Seen::default(), Seen::default());
        let (bws, first) = raw_client(&reader_url, "bat", true, room, &mut batched).await;
        let (pws, plain_first) = raw_client(&reader_url, "pla", false, room, &mut plain).await;
        assert_eq!(first, plain_first, "nothing was published between the two joins");
        // The sender is on another node: deliveries reach the readers' node
        // in link batches, so they queue up for the readers' sessions.
        let (mut conn, _) = open(&sender_url, "snd").await;
        conn.join(room).await.expect("sender joins");
        let last = first + MESSAGES;
        // Both read at once, so neither falls behind into a slow-consumer close.
        let read_all = |mut ws: Ws, who: &'static str, mut seen: Seen| async move {
            let wait_last =
                |m: &ServerMsg| matches!(m, ServerMsg::Message { seq: Some(s), .. } if *s >= last).then_some(());
            read_until(&mut ws, who, &mut seen, wait_last).await;
            seen
        };
        let readers = async {
            tokio::join!(
                read_all(bws, "bat", std::mem::take(&mut batched)),
                read_all(pws, "pla", std::mem::take(&mut plain))
            )
        };
        let sender = async {
            for window in 0..MESSAGES / WINDOW {
                for i in 0..WINDOW {
                    let id = format!("m{}", window * WINDOW + i);
                    let msg = ClientMsg::Send { room: room.to_owned(), body: format!("body of {id}"), id };
                    conn.send(&msg).await.expect("send");
                }
                let mut acked = 0;
                while acked < WINDOW {
                    match conn.next_event_within(FRAME_TIMEOUT).await {
                        Ok(Event::Msg(ServerMsg::Ack { .. })) => acked += 1,
                        Ok(Event::Msg(ServerMsg::Message { .. })) => {}
                        other => panic!("snd: expected acks, got {other:?}"),
                    }
                }
            }
        };
        let ((batched, plain), ()) = tokio::time::timeout(RUN_BOUND, async { tokio::join!(readers, sender) })
            .await
            .unwrap_or_else(|_| panic!("{MESSAGES} messages did not arrive within {RUN_BOUND:?}"));
        (batched, plain, first)
    });
    println!(
        "batched reader: {} messages in {} frames ({} with several); plain reader: {} in {} frames; {:.1} s",
        batched.seqs.len(),
        batched.frames,
        batched.multi,
        plain.seqs.len(),
        plain.frames,
        started.elapsed().as_secs_f64()
    );
    for (who, seen) in [("bat", &batched), ("pla", &plain)] {
        check_consecutive(&seen.seqs, first + 1, first + MESSAGES).unwrap_or_else(|e| panic!("{who}: {e}"));
    }
    assert_eq!(plain.multi, 0, "a client that did not ask for batches got a frame with several messages");
    assert!(
        batched.multi > 0,
        "{MESSAGES} deliveries arriving in link batches never queued up into one frame: {batched:?}"
    );
}
