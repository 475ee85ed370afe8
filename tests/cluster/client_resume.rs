//! The resilient client (`hubbub_client::ResilientClient`) against real node
//! processes: a subscriber whose node drains (SIGTERM) or dies (kill -9)
//! under steady traffic reconnects elsewhere and resumes its room with no gap
//! and no repeat; a sender whose node dies right after sending re-sends
//! with the same ids and every message is delivered exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hubbub_client::{Audience, ResilientClient, ResilientEvent, ResilientOpts, ServerMsg};
use hubbub_testkit::{Node, wait_until};

use crate::chat_util::{
    FRAME_TIMEOUT, POLL, chat_counter, check_consecutive, next_msg, open, rooms_owned_by, runtime, start_nodes, ws_url,
};

/// Messages the publisher sends in the resume tests.
const MESSAGES: u64 = 200;
/// Acks the publisher collects before the fault.
const BEFORE_FAULT: u64 = 50;
/// The publisher's pace: steady traffic while the subscriber is away.
const PACE: Duration = Duration::from_millis(10);
/// Bound on a whole traffic run, the outage included.
const RUN_BOUND: Duration = Duration::from_secs(60);
/// Bound on a drained node's exit.
const EXIT_BOUND: Duration = Duration::from_secs(20);

const NAMES: [&str; 3] = ["n1", "n2", "n3"];

#[derive(Clone, Copy, Debug)]
enum Fault {
    Sigterm,
    Kill9,
}

/// One room message as the resilient subscriber delivered it.
#[derive(Debug)]
struct Got {
    seq: u64,
    id: String,
    body: String,
}

/// A `Reconnected` event: url, outage as the client measured it, attempts,
/// and when the test saw it.
type Reconnect = (String, Duration, u32, Instant);

/// What the subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    messages: Vec<Got>,
    reconnects: Vec<Reconnect>,
    truncated: Vec<(String, u64)>,
}

async fn connect(url: &str, user: &str) -> ResilientClient {
    match tokio::time::timeout(FRAME_TIMEOUT, ResilientClient::connect(vec![url.to_owned()], user, opts())).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => panic!("{user}: cannot connect to {url}: {e}"),
        Err(_) => panic!("{user}: connecting to {url} took longer than {FRAME_TIMEOUT:?}"),
    }
}

fn opts() -> ResilientOpts {
    // Never giving up is the default; a test bounds its waits itself.
    ResilientOpts::default()
}

async fn join(client: &mut ResilientClient, room: &str, who: &str) -> u64 {
    client.join(room).await.unwrap_or_else(|e| panic!("{who}: joining {room}: {e}"))
}

/// Reads `client`'s events until `count` messages of `room` were delivered
/// or `deadline`; keeps everything it saw.
async fn collect(client: &mut ResilientClient, room: &str, count: usize, deadline: Instant) -> Seen {
    let mut seen = Seen::default();
    while seen.messages.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event_within(left).await {
            None | Some(ResilientEvent::Closed) => break,
            Some(ResilientEvent::Message(ServerMsg::Message {
                kind: Audience::Room,
                room: Some(r),
                seq,
                id,
                body,
                ..
            })) if r == room => {
                seen.messages.push(Got { seq: seq.unwrap_or(0), id, body });
            }
            Some(ResilientEvent::Reconnected { url, after, attempts }) => {
                seen.reconnects.push((url, after, attempts, Instant::now()));
            }
            Some(ResilientEvent::Truncated { room, from_seq }) => seen.truncated.push((room, from_seq)),
            Some(_) => {}
        }
    }
    seen
}

/// Sends `body` to `room` and waits for its ack; returns (id, seq).
async fn send_acked(
    client: &mut ResilientClient,
    room: &str,
    body: &str,
    deadline: Instant,
) -> Result<(String, u64), String> {
    let id = client.send(room, body).await;
    let mut reconnects = Vec::new();
    wait_acks(client, std::slice::from_ref(&id), deadline, &mut reconnects).await.map(|acks| (id.clone(), acks[&id]))
}

/// Reads events until every id of `ids` is acked; returns id → seq and
/// adds the reconnects seen meanwhile to `reconnects`. A refusal or the
/// deadline is an error.
async fn wait_acks(
    client: &mut ResilientClient,
    ids: &[String],
    deadline: Instant,
    reconnects: &mut Vec<Reconnect>,
) -> Result<BTreeMap<String, u64>, String> {
    let mut acks = BTreeMap::new();
    while acks.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event_within(left).await {
            None => return Err(format!("only {} of {} acks before the deadline", acks.len(), ids.len())),
            Some(ResilientEvent::Acked { id, seq, .. }) if ids.contains(&id) => {
                acks.insert(id, seq.unwrap_or(0));
            }
            Some(ResilientEvent::Refused { id, code, message }) => {
                return Err(format!("request {id} refused: {code:?}: {message}"));
            }
            Some(ResilientEvent::Reconnected { url, after, attempts }) => {
                reconnects.push((url, after, attempts, Instant::now()));
            }
            Some(ResilientEvent::Closed) => return Err("the client gave up".to_owned()),
            Some(_) => {}
        }
    }
    Ok(acks)
}

/// A resilient subscriber on n1 and a publisher on n2 in a room owned by n3;
/// `fault` hits n1 after [`BEFORE_FAULT`] acks. The subscriber must end with
/// every message once, in order, having reconnected to another node.
fn resume_through(fault: Fault) {
    let mut nodes = start_nodes(3, &[]);
    let room = rooms_owned_by(&NAMES, "n3", "resume", 1).remove(0);
    let (url1, url2) = (ws_url(&nodes[0]), ws_url(&nodes[1]));
    let rt = runtime();

    let (mut ann, mut bob) = rt.block_on(async {
        let mut ann = connect(&url1, "ann").await;
        let joined = join(&mut ann, &room, "ann").await;
        assert_eq!(joined, 0, "ann joined a fresh room {room}, yet `joined` has seq {joined}");
        let mut bob = connect(&url2, "bob").await;
        join(&mut bob, &room, "bob").await;
        (ann, bob)
    });

    let deadline = Instant::now() + RUN_BOUND;
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (acked, room) = (Arc::clone(&acked), room.clone());
        rt.spawn(async move {
            let mut pace = tokio::time::interval(PACE);
            let mut sent = Vec::new();
            for i in 1..=MESSAGES {
                pace.tick().await;
                let body = format!("message {i} of {MESSAGES}");
                let (id, seq) = send_acked(&mut bob, &room, &body, deadline).await.map_err(|e| format!("bob: {e}"))?;
                sent.push((id, seq, body));
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(sent)
        })
    };
    let subscriber = {
        let room = room.clone();
        rt.spawn(async move { collect(&mut ann, &room, MESSAGES as usize, deadline).await })
    };

    wait_until(deadline, POLL, || match acked.load(Ordering::Relaxed) {
        n if n >= BEFORE_FAULT => Ok(()),
        n => Err(format!("bob has {n} acks")),
    })
    .unwrap_or_else(|e| panic!("traffic before the fault: {e}"));
    let hit = Instant::now();
    println!("client_resume ({fault:?}): hitting n1 after {} acks", acked.load(Ordering::Relaxed));
    match fault {
        Fault::Sigterm => {
            nodes[0].sigterm();
            let status = nodes[0].wait_exit(EXIT_BOUND);
            assert!(status.success(), "n1 should exit cleanly after SIGTERM: {status}");
        }
        Fault::Kill9 => {
            nodes[0].kill9();
        }
    }

    let sent = rt.block_on(publisher).expect("the publisher task").unwrap_or_else(|e| panic!("{e}"));
    let seen = rt.block_on(subscriber).expect("the subscriber task");
    report(fault, hit, &seen);

    let seqs: Vec<u64> = seen.messages.iter().map(|m| m.seq).collect();
    check_consecutive(&seqs, 1, MESSAGES)
        .unwrap_or_else(|e| panic!("ann did not get every message once in order across the {fault:?}: {e}"));
    for (got, (id, seq, body)) in seen.messages.iter().zip(&sent) {
        assert!(
            got.seq == *seq && got.id == *id && got.body == *body,
            "ann's message seq {} is {:?} {:?}; bob's ack said seq {seq} for {id:?} {body:?}",
            got.seq,
            got.id,
            got.body
        );
    }
    assert!(seen.truncated.is_empty(), "history reached back, yet ann was told of lost messages: {:?}", seen.truncated);
    let Some((url, ..)) = seen.reconnects.first() else {
        panic!("ann got every message but no Reconnected event across the {fault:?} of its node");
    };
    assert_ne!(*url, url1, "ann reconnected to the node that was {fault:?}ed");
}

fn report(fault: Fault, hit: Instant, seen: &Seen) {
    for (url, after, attempts, at) in &seen.reconnects {
        println!(
            "client_resume ({fault:?}): reconnected to {url} {:.0} ms after the fault \
             (outage as the client saw it {:.0} ms, attempt {attempts})",
            at.saturating_duration_since(hit).as_secs_f64() * 1e3,
            after.as_secs_f64() * 1e3
        );
    }
    println!("client_resume ({fault:?}): {} messages delivered", seen.messages.len());
}

#[test]
fn resilient_subscriber_resumes_after_sigterm() {
    resume_through(Fault::Sigterm);
}

#[test]
fn resilient_subscriber_resumes_after_kill9() {
    resume_through(Fault::Kill9);
}

/// How a sender's connection is cut right after it sent a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Its node is killed: the burst may or may not have left the node.
    Kill9,
    /// The client drops the connection itself: the node forwards the burst
    /// to the room's owner, and its acks are lost.
    Move,
}

/// A resilient sender on n1 sends a burst to a room owned by n3 and n1 is
/// killed at once: whatever was acked before the kill or is re-sent with
/// the same id after the reconnect, a subscriber on n2 gets each message
/// exactly once, with the seq the sender was told.
#[test]
fn resent_messages_are_delivered_once() {
    burst_then(Cut::Kill9);
}

/// A resilient sender on n1 sends a burst and leaves n1 before reading any
/// answer, so the owner sequences the burst and the acks are lost: every
/// message is re-sent with its id, the owner answers each retry as a
/// duplicate with its first seq, and a subscriber gets each message once.
#[test]
fn retries_of_sequenced_sends_are_deduplicated() {
    burst_then(Cut::Move);
}

fn burst_then(cut: Cut) {
    const BURST: usize = 20;
    let mut nodes: Vec<Node> = start_nodes(3, &[]);
    let room = rooms_owned_by(&NAMES, "n3", "retry", 1).remove(0);
    let (url1, url2) = (ws_url(&nodes[0]), ws_url(&nodes[1]));
    let rt = runtime();

    let (mut sam, mut cat, ids) = rt.block_on(async {
        let (mut cat, _) = open(&url2, "cat").await;
        cat.join(&room).await.unwrap_or_else(|e| panic!("cat: joining {room}: {e}"));
        let mut sam = connect(&url1, "sam").await;
        join(&mut sam, &room, "sam").await;
        let mut ids = Vec::with_capacity(BURST);
        for i in 1..=BURST {
            ids.push(sam.send(&room, &format!("burst {i}")).await);
        }
        (sam, cat, ids)
    });
    // The burst is written to n1's socket; cut before sam reads a thing.
    let killed = Instant::now();
    match cut {
        Cut::Kill9 => {
            nodes[0].kill9();
        }
        Cut::Move => sam.reconnect_now(None),
    }

    let deadline = Instant::now() + RUN_BOUND;
    let (acks, all_acked, marker, reconnected) = rt.block_on(async {
        let mut reconnects = Vec::new();
        let acks = wait_acks(&mut sam, &ids, deadline, &mut reconnects).await.unwrap_or_else(|e| panic!("sam: {e}"));
        let all_acked = killed.elapsed();
        for (url, after, attempts, at) in &reconnects {
            println!(
                "burst ({cut:?}): sam reconnected to {url} {:.0} ms after the cut \
                 (outage {:.0} ms, attempt {attempts})",
                at.saturating_duration_since(killed).as_secs_f64() * 1e3,
                after.as_secs_f64() * 1e3
            );
        }
        let marker = send_acked(&mut sam, &room, "end of burst", deadline).await.unwrap_or_else(|e| panic!("sam: {e}"));
        (acks, all_acked, marker, sam.url().map(str::to_owned))
    });
    let duplicates = chat_counter(nodes[2].api(), "duplicate_sends");
    println!(
        "burst ({cut:?}): {} of {BURST} sends re-sent; all acked {:.0} ms after the cut, sam now on \
         {reconnected:?}; the owner n3 answered {duplicates:?} sends as duplicates",
        sam.resent(),
        all_acked.as_secs_f64() * 1e3,
    );
    if cut == Cut::Move {
        assert_eq!(sam.resent(), BURST as u64, "sam read no ack before moving, so it re-sends the whole burst");
        assert_eq!(
            duplicates,
            Ok(BURST as u64),
            "n1 forwarded the burst before sam left, so every retry should reach the owner as a duplicate"
        );
    }
    assert_ne!(reconnected.as_deref(), Some(url1.as_str()), "sam is still on n1 after the {cut:?}");

    // cat reads until the marker: everything of the burst was sequenced before it.
    let delivered: Vec<(u64, String)> = rt.block_on(async {
        let mut delivered = Vec::new();
        for _ in 0..(BURST * 4) {
            if let ServerMsg::Message { kind: Audience::Room, seq: Some(seq), id, .. } = next_msg(&mut cat, "cat").await
            {
                let end = id == marker.0;
                delivered.push((seq, id));
                if end {
                    return delivered;
                }
            }
        }
        panic!("cat: no marker among {} frames: {delivered:?}", BURST * 4);
    });
    let seqs: Vec<u64> = delivered.iter().map(|(seq, _)| *seq).collect();
    check_consecutive(&seqs, 1, BURST as u64 + 1)
        .unwrap_or_else(|e| panic!("cat should get the burst and the marker once each: {e}; got {delivered:?}"));
    for (seq, id) in &delivered {
        let expected = if *id == marker.0 { Some(&marker.1) } else { acks.get(id) };
        assert_eq!(expected, Some(seq), "cat got {id:?} as seq {seq}; sam's ack said {expected:?}");
    }
}
