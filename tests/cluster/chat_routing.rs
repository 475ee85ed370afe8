//! Chat routing across node processes: room messages are sequenced by the
//! room's owner and reach every subscriber on every node once, in order;
//! direct messages reach every connection of their user and nobody else;
//! broadcasts reach every connection of the cluster once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hubbub_client::{Audience, ClientError, ClientMsg, Connection, ErrorCode, Event, ServerMsg};
use hubbub_testkit::Cluster;
use tokio::sync::Barrier;

use crate::chat_util::{
    Delivery, FRAME_TIMEOUT, SETUP_CONVERGENCE, check_consecutive, next_msg, open, ping_pong, runtime, wait_ready,
    ws_url,
};

/// What one client of [`room_fanout_in_order`] saw.
#[derive(Debug)]
struct RoomClient {
    user: String,
    node: String,
    room: String,
    joined: u64,
    received: Vec<Delivery>,
    /// Ack seq per message id.
    acks: BTreeMap<String, u64>,
}

fn room_body(id: &str, room: &str) -> String {
    format!("{id} to {room}: the quick brown fox jumps over the lazy dog")
}

#[test]
fn room_fanout_in_order() {
    const NODES: usize = 3;
    const CLIENTS: usize = 30;
    const ROOMS: usize = 5;
    const PER_CLIENT: usize = 100;
    /// Sends a client keeps unacknowledged at once.
    const WINDOW: usize = 8;
    /// Everything (3,000 sends, 18,000 deliveries) must be done this fast.
    const RUN_BOUND: Duration = Duration::from_secs(60);
    let per_room = CLIENTS / ROOMS * PER_CLIENT;

    let mut cluster = Cluster::start(NODES);
    cluster.wait_converged(SETUP_CONVERGENCE).expect("3 nodes converge");
    cluster.nodes().iter().for_each(wait_ready);
    let urls: Vec<String> = cluster.nodes().iter().map(ws_url).collect();
    let rt = runtime();

    let started = Instant::now();
    let results: Vec<Result<RoomClient, String>> = rt.block_on(async {
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                // Client i is on node i % 3 and in room i % 5: every room has
                // two subscribers on each node.
                let (url, user, room) = (urls[i % NODES].clone(), format!("u{i:02}"), format!("room{}", i % ROOMS));
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + RUN_BOUND;
                    room_client(&url, &user, &room, PER_CLIENT, WINDOW, per_room, barrier, deadline).await
                })
            })
            .collect();
        let mut results = Vec::with_capacity(CLIENTS);
        for task in tasks {
            results.push(task.await.unwrap_or_else(|e| Err(format!("client task failed: {e}"))));
        }
        results
    });
    let elapsed = started.elapsed();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{} of {CLIENTS} clients failed:\n{}", failures.len(), join_lines(&failures));
    let clients: Vec<RoomClient> = results.into_iter().map(|r| r.expect("checked above")).collect();

    let mut by_room: BTreeMap<&str, Vec<&RoomClient>> = BTreeMap::new();
    for client in &clients {
        by_room.entry(&client.room).or_default().push(client);
    }
    let mut deliveries = 0;
    for (room, members) in &by_room {
        let nodes: BTreeSet<&str> = members.iter().map(|c| c.node.as_str()).collect();
        assert_eq!(nodes.len(), NODES, "{room}'s subscribers should be spread over every node: {nodes:?}");
        // What the room's senders were told: id -> (sender, seq).
        let mut acked: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
        for client in members {
            for (id, seq) in &client.acks {
                acked.insert(id, (&client.user, *seq));
            }
        }
        let mut ack_seqs: Vec<u64> = acked.values().map(|(_, seq)| *seq).collect();
        ack_seqs.sort_unstable();
        check_consecutive(&ack_seqs, 1, per_room as u64)
            .unwrap_or_else(|e| panic!("{room}: the acks' seqs are not 1..={per_room}, each once: {e}"));
        for client in members {
            let who = format!("{} on {} in {room}", client.user, client.node);
            assert_eq!(
                client.joined, 0,
                "{who}: joined a room nobody had sent to, yet `joined` has seq {}",
                client.joined
            );
            let seqs: Vec<u64> = client.received.iter().map(|d| d.seq).collect();
            check_consecutive(&seqs, 1, per_room as u64)
                .unwrap_or_else(|e| panic!("{who}: room messages not received once each in seq order: {e}"));
            for d in &client.received {
                let Some(&(sender, seq)) = acked.get(d.id.as_str()) else {
                    panic!("{who}: received id {:?} (seq {}) that no client of {room} had acked", d.id, d.seq);
                };
                assert!(
                    d.from == sender && d.seq == seq && d.body == room_body(&d.id, room),
                    "{who}: message {:?} arrived as seq {} from {:?} with body {:?}; \
                     it was sent by {sender:?} and acked with seq {seq}",
                    d.id,
                    d.seq,
                    d.from,
                    d.body
                );
            }
            deliveries += client.received.len();
        }
    }
    let sends = CLIENTS * PER_CLIENT;
    println!(
        "room_fanout_in_order: {sends} sends acked, {deliveries} deliveries checked, {NODES} nodes, \
         {ROOMS} rooms x {} subscribers, in {:.2}s ({:.0} sends/s, {:.0} deliveries/s)",
        CLIENTS / ROOMS,
        elapsed.as_secs_f64(),
        sends as f64 / elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64()
    );
    assert!(elapsed < RUN_BOUND, "took {elapsed:?}, longer than {RUN_BOUND:?}");
}

/// Joins `room`, waits at `barrier` for every other client, then sends
/// `count` messages (at most `window` unacknowledged) while reading every
/// frame, until all its sends are acked and `expected` room messages arrived.
#[allow(clippy::too_many_arguments)]
async fn room_client(
    url: &str,
    user: &str,
    room: &str,
    count: usize,
    window: usize,
    expected: usize,
    barrier: Arc<Barrier>,
    deadline: tokio::time::Instant,
) -> Result<RoomClient, String> {
    let (mut conn, welcome) = open(url, user).await;
    let who = format!("{user} on {} in {room}", welcome.node);
    let joined = conn.join(room).await.map_err(|e| format!("{who}: join: {e}"))?;
    tokio::time::timeout(FRAME_TIMEOUT * 3, barrier.wait())
        .await
        .map_err(|_| format!("{who}: the other clients did not all join in time"))?;

    let mut received: Vec<Delivery> = Vec::with_capacity(expected);
    let mut acks: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sent, mut outstanding) = (0, 0);
    let progress = |sent: usize, acks: usize, received: usize| {
        format!("{sent}/{count} sent, {acks} acked, {received}/{expected} room messages received")
    };
    while acks.len() < count || received.len() < expected {
        while sent < count && outstanding < window {
            let id = format!("{user}-{sent}");
            let msg = ClientMsg::Send { room: room.to_owned(), body: room_body(&id, room), id };
            conn.send(&msg).await.map_err(|e| format!("{who}: send: {e}"))?;
            sent += 1;
            outstanding += 1;
        }
        let event =
            tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + FRAME_TIMEOUT), conn.next_event())
                .await
                .map_err(|_| format!("{who}: stalled: {}", progress(sent, acks.len(), received.len())))?
                .map_err(|e| format!("{who}: {e}"))?;
        match event {
            Event::Msg(ServerMsg::Message {
                kind: Audience::Room,
                room: Some(r),
                seq: Some(seq),
                from,
                body,
                id,
                ..
            }) if r == room => {
                received.push(Delivery { seq, from, id, body });
            }
            Event::Msg(ServerMsg::Ack { id, room: r, seq: Some(seq) }) if r.as_deref() == Some(room) => {
                let ours =
                    id.strip_prefix(user).and_then(|n| n.strip_prefix('-')).and_then(|n| n.parse::<usize>().ok());
                if ours.is_none_or(|n| n >= sent) {
                    return Err(format!("{who}: ack for an id it never sent: {id:?}"));
                }
                if let Some(before) = acks.insert(id.clone(), seq) {
                    return Err(format!("{who}: {id:?} acked twice (seq {before}, then {seq})"));
                }
                outstanding -= 1;
            }
            Event::Msg(other) => return Err(format!("{who}: unexpected frame {other:?}")),
            Event::Closed { code, reason } => {
                return Err(format!(
                    "{who}: closed ({code} {reason:?}) after {}",
                    progress(sent, acks.len(), received.len())
                ));
            }
        }
    }
    // Every message of the room has arrived: anything more is a duplicate.
    let extra = ping_pong(&mut conn, &who, "final").await;
    if !extra.is_empty() {
        return Err(format!("{who}: frames after all {expected} room messages: {extra:?}"));
    }
    Ok(RoomClient { user: user.to_owned(), node: welcome.node, room: room.to_owned(), joined, received, acks })
}

fn join_lines(lines: &[&String]) -> String {
    lines.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
}

/// Reads the next frame of `conn`, which must be the delivery of `id`: a
/// `message` of `kind` from `from` with `body`, for direct ones addressed
/// `to` dora, and a timestamp. Panics naming `who` and what came instead.
async fn expect_delivery(conn: &mut Connection, who: &str, kind: Audience, from: &str, id: &str, body: &str) {
    let to = (kind == Audience::Direct).then_some("dora");
    let got = next_msg(conn, &format!("{who} waiting for {id}")).await;
    let matches = match &got {
        ServerMsg::Message { kind: k, room: None, seq: None, to: t, from: f, body: b, id: i, ts } => {
            *k == kind && t.as_deref() == to && f == from && b == body && i == id && *ts > 0
        }
        _ => false,
    };
    assert!(
        matches,
        "{who}: expected the {kind:?} message {id:?} from {from:?} (to {to:?}, body {body:?}), got {got:?}"
    );
}

/// Sends `msg` and waits for its ack, which must carry no room and no seq.
async fn send_acked(conn: &mut Connection, who: &str, msg: ClientMsg, id: &str) {
    conn.send(&msg).await.unwrap_or_else(|e| panic!("{who}: sending {id}: {e}"));
    match conn.wait_ack(id).await {
        Ok((None, None)) => {}
        Ok(other) => panic!("{who}: ack of {id} should carry no room and seq, got {other:?}"),
        Err(e) => panic!("{who}: no ack for {id}: {e}"),
    }
}

fn direct(to: &str, id: &str, body: &str) -> ClientMsg {
    ClientMsg::Direct { to: to.to_owned(), body: body.to_owned(), id: id.to_owned() }
}

#[test]
fn direct_and_broadcast_reach_exactly_their_connections() {
    /// Attempts at a direct to a user who just disconnected, until the
    /// cluster answers user_offline.
    const OFFLINE_ATTEMPTS: usize = 100;
    const OFFLINE_POLL: Duration = Duration::from_millis(50);

    let mut cluster = Cluster::start(3);
    cluster.wait_converged(SETUP_CONVERGENCE).expect("3 nodes converge");
    cluster.nodes().iter().for_each(wait_ready);
    let url = |name: &str| ws_url(cluster.node(name));
    let all_urls: BTreeSet<String> = ["n1", "n2", "n3"].iter().map(|n| url(n)).collect();
    let rt = runtime();

    rt.block_on(async {
        // dora twice (n1, n3); one other user per node, and one more on n2.
        let placement = [("dora", "n1"), ("dora", "n3"), ("ed", "n1"), ("fay", "n2"), ("gus", "n3"), ("hal", "n2")];
        let mut conns: Vec<(String, Connection)> = Vec::new();
        for (user, node) in placement {
            let (conn, welcome) = open(&url(node), user).await;
            let who = format!("{user}@{node}");
            assert!(
                welcome.user == user && welcome.node == node && welcome.protocol == 1 && !welcome.session.is_empty(),
                "{who}: unexpected welcome {welcome:?}"
            );
            let nodes: BTreeSet<String> = welcome.nodes.iter().cloned().collect();
            assert_eq!(nodes, all_urls, "{who}: welcome should list the WebSocket URLs of the 3 alive nodes");
            conns.push((who, conn));
        }
        let [dora1, dora3, ed, fay, gus, hal] = &mut conns[..] else { unreachable!("six connections") };

        // A direct from n3 reaches dora on n1 and on n3.
        send_acked(&mut gus.1, &gus.0, direct("dora", "d1", "hi dora, gus here"), "d1").await;
        for dora in [&mut *dora1, &mut *dora3] {
            expect_delivery(&mut dora.1, &dora.0, Audience::Direct, "gus", "d1", "hi dora, gus here").await;
        }
        // A direct to oneself reaches the sender too, and the other connection.
        send_acked(&mut dora1.1, &dora1.0, direct("dora", "d2", "note to self"), "d2").await;
        for dora in [&mut *dora1, &mut *dora3] {
            expect_delivery(&mut dora.1, &dora.0, Audience::Direct, "dora", "d2", "note to self").await;
        }
        // Nobody is connected as `nobody`.
        ed.1.send(&direct("nobody", "d3", "anyone?")).await.expect("ed sends d3");
        match ed.1.wait_ack("d3").await {
            Err(ClientError::Refused { code: ErrorCode::UserOffline, .. }) => {}
            other => panic!("{}: a direct to a user with no connection should fail user_offline, got {other:?}", ed.0),
        }

        // Two broadcasts from n2: every connection gets b1 then b2 as its
        // next messages, so no one received a direct meant for dora nor a
        // second copy of b1.
        send_acked(&mut fay.1, &fay.0, ClientMsg::Broadcast { body: "all hands".into(), id: "b1".into() }, "b1").await;
        send_acked(&mut hal.1, &hal.0, ClientMsg::Broadcast { body: "marker".into(), id: "b2".into() }, "b2").await;
        for (who, conn) in conns.iter_mut() {
            expect_delivery(conn, who, Audience::Broadcast, "fay", "b1", "all hands").await;
            expect_delivery(conn, who, Audience::Broadcast, "hal", "b2", "marker").await;
        }
        for (who, conn) in conns.iter_mut() {
            let extra = ping_pong(conn, who, "p1").await;
            assert!(extra.is_empty(), "{who}: frames nobody sent it: {extra:?}");
        }

        // Once hal's only connection is gone, directs to hal fail.
        let (hal_who, hal_conn) = conns.remove(5);
        let (mut hal_tx, _hal_rx) = hal_conn.split();
        hal_tx.close().await.unwrap_or_else(|e| panic!("{hal_who}: close: {e}"));
        let ed = &mut conns[2];
        let mut attempts = Vec::new();
        let mut offline = false;
        for attempt in 0..OFFLINE_ATTEMPTS {
            let id = format!("h{attempt}");
            ed.1.send(&direct("hal", &id, "still there?")).await.expect("ed sends a direct to hal");
            match ed.1.wait_ack(&id).await {
                Err(ClientError::Refused { code: ErrorCode::UserOffline, .. }) => {
                    offline = true;
                    break;
                }
                other => attempts.push(format!("{id}: {other:?}")),
            }
            tokio::time::sleep(OFFLINE_POLL).await;
        }
        assert!(
            offline,
            "a direct to hal kept being accepted after hal's only connection closed: {}",
            attempts.join(", ")
        );
        println!(
            "direct_and_broadcast_reach_exactly_their_connections: user_offline for hal after {} accepted attempts",
            attempts.len()
        );
        for (who, conn) in conns.iter_mut() {
            let extra = ping_pong(conn, who, "p2").await;
            assert!(extra.is_empty(), "{who}: frames nobody sent it: {extra:?}");
        }
    });
}
