//! Rooms under a changing ring: a fourth node joins and later leaves
//! (SIGTERM) while clients publish continuously. No acknowledged message may
//! be lost, every room's seqs go on by one with no repeat and no reset, and
//! every room ends up held by exactly one node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hubbub_client::{Audience, ClientMsg, Connection, ErrorCode, Event, ServerMsg};
use hubbub_testkit::{Cluster, Node, NodeOpts, wait_until};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chat_util::{
    Delivery, FRAME_TIMEOUT, POLL, SETUP_CONVERGENCE, check_consecutive, check_single_holders, open, owner_of,
    ping_pong, rooms_owned_by, runtime, wait_ready, wait_rings_agree, ws_url,
};

/// Acks the publishers must collect in each phase (before the join, while
/// the fourth node is up, after it left).
const PHASE_ACKS: u64 = 150;
/// How long one phase's traffic, a join or a leave may take.
const PHASE_BOUND: Duration = Duration::from_secs(20);
/// Publishers on n1..n3 that stay connected throughout.
const STAYERS: usize = 6;
/// Publishers on the fourth node, closed when it drains.
const VISITORS: usize = 2;

/// The end seq of every room, sent once publishing has stopped.
type EndSeqs = Option<BTreeMap<String, u64>>;

/// Shared between the test thread and a group of publishers.
#[derive(Default)]
struct Traffic {
    stop: AtomicBool,
    acked: AtomicU64,
    stopped: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Traffic {
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Panics with the publishers' errors, if any: no use waiting for
    /// traffic that already failed.
    fn check_errors(&self) {
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert!(errors.is_empty(), "publishers failed:\n{}", errors.join("\n"));
    }
}

#[derive(Debug)]
struct Acked {
    room: String,
    id: String,
    seq: u64,
    body: String,
    at: Instant,
}

/// What one publisher did and saw.
#[derive(Debug, Default)]
struct Report {
    who: String,
    user: String,
    joined: BTreeMap<String, u64>,
    received: BTreeMap<String, Vec<Delivery>>,
    acked: Vec<Acked>,
    failed: Vec<(String, ErrorCode)>,
    closed: Option<(u16, String)>,
    /// `reconnect` frames received (a draining node asks its clients to move).
    asked_to_move: Vec<String>,
    error: Option<String>,
}

fn body_of(id: &str, room: &str) -> String {
    format!("{id} in {room}")
}

/// Waits until `traffic` has at least `target` acks.
fn wait_acked(traffic: &Traffic, target: u64, what: &str) -> u64 {
    wait_until(Instant::now() + PHASE_BOUND, POLL, || {
        traffic.check_errors();
        let acked = traffic.acked();
        if acked >= target { Ok(acked) } else { Err(format!("{acked} acks, waiting for {target} ({what})")) }
    })
    .unwrap_or_else(|e| panic!("traffic {what}: {e}"))
}

#[test]
fn join_and_leave_under_traffic() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3);
    cluster.wait_converged(SETUP_CONVERGENCE).expect("3 nodes converge");
    cluster.nodes().iter().for_each(wait_ready);
    let four = ["n1", "n2", "n3", "n4"];
    let three = ["n1", "n2", "n3"];
    // Two rooms for each owner of the 4-node ring: n4 takes two rooms when
    // it joins and hands them back when it leaves.
    let rooms: Vec<String> = four.iter().flat_map(|owner| rooms_owned_by(&four, owner, "ring-", 2)).collect();
    let n4_rooms: Vec<String> = rooms.iter().filter(|r| owner_of(&four, r) == "n4").cloned().collect();
    let rooms = Arc::new(rooms);
    let rt = runtime();

    let stayers = Arc::new(Traffic::default());
    let visitors = Arc::new(Traffic::default());
    let (end_tx, end_rx) = watch::channel::<EndSeqs>(None);
    let stayer_tasks: Vec<JoinHandle<Report>> = (0..STAYERS)
        .map(|i| {
            let url = ws_url(&cluster.nodes()[i % 3]);
            let task = publisher(url, format!("s{i}"), Arc::clone(&rooms), Arc::clone(&stayers), end_rx.clone());
            rt.spawn(task)
        })
        .collect();

    // Phase 1: three nodes.
    let before_join = wait_acked(&stayers, PHASE_ACKS, "on 3 nodes");

    // Phase 2: n4 joins during traffic and takes its rooms.
    let mut opts = NodeOpts::new("n4", cluster.key());
    opts.seeds = cluster.nodes().iter().map(Node::gossip_addr).collect();
    let join_started = Instant::now();
    let mut n4 = Node::spawn(opts);
    let all: Vec<&Node> = cluster.nodes().iter().chain([&n4]).collect();
    wait_rings_agree(&all, Instant::now() + PHASE_BOUND).expect("n4 joins the ring of every node");
    wait_ready(&n4);
    let apis4: Vec<(String, hubbub_testkit::NodeApi)> =
        all.iter().map(|n| (n.name().to_owned(), n.api().clone())).collect();
    let holders = wait_until(Instant::now() + PHASE_BOUND, POLL, || {
        stayers.check_errors();
        let holders = check_single_holders(&apis4, &rooms)?;
        let misplaced: Vec<_> = holders.iter().filter(|(room, node)| owner_of(&four, room) != **node).collect();
        if misplaced.is_empty() { Ok(holders) } else { Err(format!("rooms held off their ring owner: {misplaced:?}")) }
    })
    .expect("with n4 in the ring, every room is held by its owner alone");
    let joined_after = join_started.elapsed();
    println!(
        "join_and_leave_under_traffic: n4 started, joined and took {n4_rooms:?} in {:.2}s; holders {holders:?}",
        joined_after.as_secs_f64()
    );

    // Clients on n4 publish too.
    let n4_url = ws_url(&n4);
    let visitor_tasks: Vec<JoinHandle<Report>> = (0..VISITORS)
        .map(|i| {
            let task =
                publisher(n4_url.clone(), format!("v{i}"), Arc::clone(&rooms), Arc::clone(&visitors), end_rx.clone());
            rt.spawn(task)
        })
        .collect();
    let with_n4 = wait_acked(&stayers, stayers.acked() + PHASE_ACKS, "with n4");
    wait_acked(&visitors, PHASE_ACKS / 3, "of the clients on n4");

    // Phase 3: n4 drains during traffic.
    let termed_at = Instant::now();
    n4.sigterm();
    let status = n4.wait_exit(PHASE_BOUND);
    let exit_after = termed_at.elapsed();
    assert_eq!(status.code(), Some(0), "n4 must exit 0 after SIGTERM, got {status}");
    let visitor_reports: Vec<Report> = visitor_tasks.into_iter().map(|t| finish(&rt, t)).collect();
    for report in &visitor_reports {
        assert!(report.error.is_none(), "{}: {}", report.who, report.error.as_deref().unwrap_or_default());
        // These clients do not follow `reconnect`: they are asked to move
        // during the drain window, then closed.
        assert_eq!(
            report.asked_to_move,
            vec!["draining".to_owned()],
            "{}: a draining node asks each client once to move",
            report.who
        );
        assert_eq!(
            report.closed,
            Some((1001, "node draining".to_owned())),
            "{}: clients of a draining node must be closed with 1001",
            report.who
        );
    }
    cluster.wait_converged(PHASE_BOUND).expect("n1..n3 converge after n4 left");
    let after_leave = wait_acked(&stayers, stayers.acked() + PHASE_ACKS, "after n4 left");

    // Stop publishing, then mark each room's end.
    stayers.stop.store(true, Ordering::Relaxed);
    wait_until(Instant::now() + PHASE_BOUND, POLL, || {
        let stopped = stayers.stopped.load(Ordering::Relaxed);
        if stopped == STAYERS { Ok(()) } else { Err(format!("{stopped} of {STAYERS} publishers stopped")) }
    })
    .unwrap_or_else(|e| {
        stayers.check_errors();
        panic!("publishers did not stop: {e}")
    });
    let n1_url = ws_url(cluster.node("n1"));
    let end_seqs: BTreeMap<String, u64> = rt.block_on(async {
        let (mut closer, _) = open(&n1_url, "closer").await;
        let mut end = BTreeMap::new();
        for room in rooms.iter() {
            closer.join(room).await.unwrap_or_else(|e| panic!("closer: join {room}: {e}"));
            let seq = closer
                .send_and_ack(room, "end", &format!("end-{room}"))
                .await
                .unwrap_or_else(|e| panic!("closer: end mark of {room}: {e}"));
            end.insert(room.clone(), seq);
        }
        end
    });
    end_tx.send_replace(Some(end_seqs.clone()));
    let stayer_reports: Vec<Report> = stayer_tasks.into_iter().map(|t| finish(&rt, t)).collect();
    for report in &stayer_reports {
        assert!(report.error.is_none(), "{}: {}", report.who, report.error.as_deref().unwrap_or_default());
        assert!(report.closed.is_none(), "{}: closed {:?} though its node ran on", report.who, report.closed);
    }

    // Every ack, by room and seq: no seq acked for two messages.
    let mut acked: BTreeMap<&str, BTreeMap<u64, (&str, &str, &str)>> = BTreeMap::new();
    for report in stayer_reports.iter().chain(&visitor_reports) {
        for a in &report.acked {
            let entry = acked.entry(a.room.as_str()).or_default();
            if let Some((other, ..)) = entry.insert(a.seq, (&a.id, &report.user, &a.body)) {
                panic!("{}: seq {} acked for two messages, {other:?} and {:?} (repeat or reset)", a.room, a.seq, a.id);
            }
        }
    }
    let acked_at: BTreeMap<(&str, u64), Instant> = stayer_reports
        .iter()
        .chain(&visitor_reports)
        .flat_map(|r| r.acked.iter().map(|a| ((a.room.as_str(), a.seq), a.at)))
        .collect();
    for (room, seqs) in &acked {
        let last = seqs.keys().next_back().copied().unwrap_or(0);
        assert!(
            end_seqs[*room] > last,
            "{room}: end mark got seq {} though seq {last} was acked before",
            end_seqs[*room]
        );
    }

    // Stayers got everything from their join to the end mark.
    let mut checked = 0;
    let mut losses = Vec::new();
    for report in &stayer_reports {
        for room in rooms.iter() {
            let first = report.joined[room] + 1;
            let delivered = check_deliveries(report, room, &acked, first)
                .unwrap_or_else(|e| panic!("{} in {room} (joined at seq {}): {e}", report.who, first - 1));
            let seqs: Vec<u64> = delivered.iter().map(|d| d.seq).collect();
            if let Err(e) = check_consecutive(&seqs, first, end_seqs[room]) {
                let all = stayer_reports.iter().chain(&visitor_reports);
                let missing = explain_missing(&seqs, first, end_seqs[room], room, all, &acked_at, termed_at);
                let owners = format!("owner {} with n4, {} without", owner_of(&four, room), owner_of(&three, room));
                losses.push(format!("{} in {room} ({owners}): {e}\n    missing: {missing}", report.who));
            }
            checked += seqs.len();
        }
    }
    assert!(
        losses.is_empty(),
        "lost or repeated room messages across the ring changes (n4 joined {:.2}s and got SIGTERM {:.2}s \
         after the start):\n{}",
        (join_started - started).as_secs_f64(),
        (termed_at - started).as_secs_f64(),
        losses.join("\n")
    );
    // Visitors got a gapless run from their join until they were closed.
    for report in &visitor_reports {
        assert!(!report.acked.is_empty(), "{}: no send of the clients on n4 was acked", report.who);
        for room in rooms.iter() {
            let first = report.joined[room] + 1;
            let delivered = check_deliveries(report, room, &acked, first)
                .unwrap_or_else(|e| panic!("{} in {room} (joined at seq {}): {e}", report.who, first - 1));
            let seqs: Vec<u64> = delivered.iter().map(|d| d.seq).collect();
            let last = seqs.last().copied().unwrap_or(first - 1);
            check_consecutive(&seqs, first, last)
                .unwrap_or_else(|e| panic!("{} in {room}: gap before it was closed: {e}", report.who));
        }
    }

    // At the end every room is held once, by its owner in the 3-node ring.
    let apis3: Vec<(String, hubbub_testkit::NodeApi)> =
        cluster.nodes().iter().map(|n| (n.name().to_owned(), n.api().clone())).collect();
    wait_until(Instant::now() + PHASE_BOUND, POLL, || {
        let holders = check_single_holders(&apis3, &rooms)?;
        let misplaced: Vec<_> = holders.iter().filter(|(room, node)| owner_of(&three, room) != **node).collect();
        if misplaced.is_empty() { Ok(()) } else { Err(format!("rooms held off their ring owner: {misplaced:?}")) }
    })
    .expect("after n4 left, every room is held by its owner alone");

    let failed: Vec<&(String, ErrorCode)> =
        stayer_reports.iter().chain(&visitor_reports).flat_map(|r| r.failed.iter()).collect();
    let mut failed_by_code: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, code) in &failed {
        *failed_by_code.entry(code.as_str()).or_default() += 1;
    }
    let total_acked: usize = acked.values().map(BTreeMap::len).sum();
    println!(
        "join_and_leave_under_traffic: {total_acked} sends acked ({before_join} before n4, {} with n4 incl. {} from \
         clients on n4, {} after), {} refused {failed_by_code:?}; {checked} deliveries checked on {STAYERS} \
         subscribers; n4 exited {:.2}s after SIGTERM; {:.1}s in all",
        with_n4 - before_join + visitors.acked(),
        visitors.acked(),
        after_leave - with_n4,
        failed.len(),
        exit_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // Refusals are allowed while a room moves, not as the rule.
    assert!(
        failed.len() * 10 <= total_acked,
        "{} sends refused against {total_acked} acked: {failed_by_code:?}; first ones {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
}

/// `report`'s deliveries in `room`: from `first` on, each acked seq must
/// carry the acked message, and no id may arrive twice.
fn check_deliveries<'a>(
    report: &'a Report,
    room: &str,
    acked: &BTreeMap<&str, BTreeMap<u64, (&str, &str, &str)>>,
    first: u64,
) -> Result<&'a [Delivery], String> {
    let delivered = report.received.get(room).map(Vec::as_slice).unwrap_or_default();
    let mut ids = BTreeSet::new();
    for d in delivered {
        if d.seq < first {
            return Err(format!("seq {} arrived though the join answered seq {}", d.seq, first - 1));
        }
        if !ids.insert(d.id.as_str()) {
            return Err(format!("{:?} arrived twice (again as seq {})", d.id, d.seq));
        }
        if let Some(&(id, from, body)) = acked.get(room).and_then(|s| s.get(&d.seq))
            && (d.id.as_str(), d.from.as_str(), d.body.as_str()) != (id, from, body)
        {
            return Err(format!(
                "seq {} carries {:?} from {:?} ({:?}); it was acked for {id:?} from {from:?} ({body:?})",
                d.seq, d.id, d.from, d.body
            ));
        }
    }
    Ok(delivered)
}

/// For each seq of `first..=last` missing from `seqs`: whether and when
/// (relative to SIGTERM) it was acked, and who received it.
fn explain_missing<'a>(
    seqs: &[u64],
    first: u64,
    last: u64,
    room: &str,
    reports: impl Iterator<Item = &'a Report> + Clone,
    acked_at: &BTreeMap<(&str, u64), Instant>,
    termed_at: Instant,
) -> String {
    let got: BTreeSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<String> = (first..=last)
        .filter(|s| !got.contains(s))
        .take(10)
        .map(|seq| {
            let acked = match acked_at.get(&(room, seq)) {
                Some(at) if *at >= termed_at => format!("acked SIGTERM+{}ms", (*at - termed_at).as_millis()),
                Some(at) => format!("acked SIGTERM-{}ms", (termed_at - *at).as_millis()),
                None => "not acked".to_owned(),
            };
            let receivers: Vec<&str> = reports
                .clone()
                .filter(|r| r.received.get(room).is_some_and(|d| d.iter().any(|d| d.seq == seq)))
                .map(|r| r.who.as_str())
                .collect();
            format!("seq {seq} ({acked}, received by {receivers:?})")
        })
        .collect();
    missing.join("; ")
}

/// Waits for a publisher task and returns its report.
fn finish(rt: &tokio::runtime::Runtime, task: JoinHandle<Report>) -> Report {
    rt.block_on(async { tokio::time::timeout(PHASE_BOUND, task).await })
        .unwrap_or_else(|_| panic!("a publisher did not finish within {PHASE_BOUND:?}"))
        .unwrap_or_else(|e| panic!("a publisher task failed: {e}"))
}

/// A client of `url` that joins every room, publishes round-robin to them
/// one message at a time (waiting for each ack) until `traffic.stop`, and
/// then reads until every room's end seq has arrived. Closes and errors end
/// it early; they are in the report.
async fn publisher(
    url: String,
    user: String,
    rooms: Arc<Vec<String>>,
    traffic: Arc<Traffic>,
    end: watch::Receiver<EndSeqs>,
) -> Report {
    let (mut conn, welcome) = open(&url, &user).await;
    let mut report = Report { who: format!("{user}@{}", welcome.node), user, ..Report::default() };
    if let Err(e) = publish(&mut report, &mut conn, &rooms, &traffic, end).await {
        traffic.errors.lock().unwrap_or_else(PoisonError::into_inner).push(format!("{}: {e}", report.who));
        report.error = Some(e);
    }
    report
}

/// The body of [`publisher`]; `Ok` also when the node closed the connection.
async fn publish(
    report: &mut Report,
    conn: &mut Connection,
    rooms: &[String],
    traffic: &Traffic,
    mut end: watch::Receiver<EndSeqs>,
) -> Result<(), String> {
    for room in rooms {
        let seq = conn.join(room).await.map_err(|e| format!("join {room}: {e}"))?;
        report.joined.insert(room.clone(), seq);
    }
    let mut k = 0;
    while !traffic.stop.load(Ordering::Relaxed) {
        let room = &rooms[k % rooms.len()];
        let id = format!("{}-{k}", report.user);
        let body = body_of(&id, room);
        if let Err(e) = conn.send(&ClientMsg::Send { room: room.clone(), body: body.clone(), id: id.clone() }).await {
            // The node may have closed us: the close frame says why.
            report.closed = Some(read_close(conn).await.map_err(|c| format!("send {id}: {e}; then {c}"))?);
            return Ok(());
        }
        loop {
            let event = tokio::time::timeout(FRAME_TIMEOUT, conn.next_event())
                .await
                .map_err(|_| format!("no answer to {id} within {FRAME_TIMEOUT:?}"))?
                .map_err(|e| format!("waiting for the ack of {id}: {e}"))?;
            match event {
                Event::Msg(ServerMsg::Ack { id: i, room: Some(r), seq: Some(seq) }) if i == id && r == *room => {
                    report.acked.push(Acked { room: r, id, seq, body, at: Instant::now() });
                    traffic.acked.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Event::Msg(ServerMsg::Error { id: Some(i), code, .. }) if i == id => {
                    report.failed.push((id, code));
                    break;
                }
                Event::Closed { code, reason } => {
                    report.closed = Some((code, reason));
                    return Ok(());
                }
                Event::Msg(msg) => record(report, msg)?,
            }
        }
        k += 1;
    }
    traffic.stopped.fetch_add(1, Ordering::Relaxed);

    // Keep reading until the test has marked every room's end.
    let end_seqs = tokio::time::timeout(PHASE_BOUND, async {
        loop {
            if let Some(end_seqs) = end.borrow_and_update().clone() {
                return Ok(end_seqs);
            }
            tokio::select! {
                changed = end.changed() => changed.map_err(|_| "the test dropped the end marks".to_owned())?,
                event = conn.next_event() => match event.map_err(|e| e.to_string())? {
                    Event::Msg(msg) => record(report, msg)?,
                    Event::Closed { code, reason } => return Err(format!("closed ({code} {reason:?}) after stopping")),
                },
            }
        }
    })
    .await
    .map_err(|_| format!("no end marks within {PHASE_BOUND:?}"))??;
    let behind = |report: &Report| {
        rooms
            .iter()
            .filter(|r| report.received.get(*r).and_then(|d| d.last()).map_or(0, |d| d.seq) < end_seqs[*r])
            .count()
    };
    while behind(report) > 0 {
        let event = tokio::time::timeout(FRAME_TIMEOUT, conn.next_event())
            .await
            .map_err(|_| format!("{} rooms short of their end mark {end_seqs:?}", behind(report)))?
            .map_err(|e| e.to_string())?;
        match event {
            Event::Msg(msg) => record(report, msg)?,
            Event::Closed { code, reason } => return Err(format!("closed ({code} {reason:?}) before the end marks")),
        }
    }
    // Every room is complete: anything more is a duplicate.
    let extra = ping_pong(conn, &report.who, "final").await;
    if extra.is_empty() { Ok(()) } else { Err(format!("frames after the end marks: {extra:?}")) }
}

/// Keeps a room message in the report; any other frame is an error.
fn record(report: &mut Report, msg: ServerMsg) -> Result<(), String> {
    match msg {
        ServerMsg::Message { kind: Audience::Room, room: Some(room), seq: Some(seq), from, body, id, .. } => {
            report.received.entry(room).or_default().push(Delivery { seq, from, id, body });
            Ok(())
        }
        ServerMsg::Reconnect { reason, .. } => {
            report.asked_to_move.push(reason);
            Ok(())
        }
        other => Err(format!("unexpected frame {other:?}")),
    }
}

/// Reads up to the close frame, keeping room messages.
async fn read_close(conn: &mut Connection) -> Result<(u16, String), String> {
    for _ in 0..100_000 {
        match tokio::time::timeout(FRAME_TIMEOUT, conn.next_event()).await {
            Ok(Ok(Event::Closed { code, reason })) => return Ok((code, reason)),
            Ok(Ok(Event::Msg(_))) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no close within {FRAME_TIMEOUT:?}")),
        }
    }
    Err("no close among 100000 frames".to_owned())
}
