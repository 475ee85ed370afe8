//! kill -9 under load: three different nodes of five in turn (restarted in
//! between), and the owner of the busiest room while it is published to.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hubbub_testkit::chaos::Event;
use hubbub_testkit::{Cluster, NodeApi, wait_until};

use crate::load::{Load, POLL, Spec, replayed, runtime, wait_detected, ws_url};
use crate::verdict::{assert_clean, report};

/// Reaching the initial converged state is not what these tests measure.
const SETUP: Duration = Duration::from_secs(30);
/// Generous bound on kill → last client resumed (the goal is 5 s; a debug
/// build on a busy 2-core machine needs slack).
const RESUME_BOUND: Duration = Duration::from_secs(15);
/// Bound on kill → every survivor sees the node down.
const DETECTION_BOUND: Duration = Duration::from_secs(15);

fn start_cluster(n: usize) -> Cluster {
    let mut cluster = Cluster::start(n);
    cluster.wait_converged(SETUP).expect("the nodes converge");
    for node in cluster.nodes() {
        wait_until(Instant::now() + SETUP, POLL, || match node.api().ready()? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{}: /healthz/ready {status}: {body}", node.name())),
        })
        .expect("the node gets ready");
    }
    cluster
}

fn urls(cluster: &Cluster) -> Vec<String> {
    cluster.nodes().iter().map(ws_url).collect()
}

/// Waits until every client in `clients` has reconnected after `since`;
/// returns the time from `since` to the last one.
fn wait_resumed(load: &Load, clients: &[usize], since: Instant, within: Duration) -> Result<Duration, String> {
    let wanted: BTreeSet<usize> = clients.iter().copied().collect();
    wait_until(since + within, POLL, || {
        load.check_errors();
        let moves = load.moves_since(since);
        let mut last = BTreeMap::new();
        for m in moves.iter().filter(|m| wanted.contains(&m.client)) {
            last.entry(m.client).or_insert(m.at);
        }
        if last.len() == wanted.len() {
            Ok(last.values().max().map_or(Duration::ZERO, |at| at.duration_since(since)))
        } else {
            Err(format!("{} of {} clients of the killed node resumed", last.len(), wanted.len()))
        }
    })
}

#[test]
fn kill_nine_three_times() {
    let run = "kill_nine_three_times";
    let mut cluster = start_cluster(5);
    let rt = runtime();
    let rooms: Vec<String> = (0..50).map(|i| format!("k9-{i}")).collect();
    let spec =
        Spec { urls: urls(&cluster), clients: 500, rooms, second_room_every: 2, rate: 200.0, prefix: "k".to_owned() };
    let load = Load::start(&rt, spec);
    load.wait_acks(400, Duration::from_secs(30), "before the first kill");

    let mut faults = Vec::new();
    let mut detections = Vec::new();
    let mut resumes = Vec::new();
    for victim in ["n2", "n4", "n1"] {
        let url = ws_url(cluster.node(victim));
        let victims = load.clients_on(&url);
        let survivors: Vec<NodeApi> =
            cluster.nodes().iter().filter(|n| n.name() != victim).map(|n| n.api().clone()).collect();
        let killed_at = Instant::now();
        cluster.node_mut(victim).kill9();
        faults.push((killed_at, format!("kill -9 {victim}")));
        let detection = wait_detected(&survivors, victim, killed_at, DETECTION_BOUND);
        let resumed = wait_resumed(&load, &victims, killed_at, RESUME_BOUND);
        let flowed = load.wait_acks(200, Duration::from_secs(20), &format!("after killing {victim}"));
        let resumed = resumed.unwrap_or_else(|e| {
            panic!("{run}: the clients of {victim} did not all resume within {RESUME_BOUND:?}: {e}")
        });
        println!(
            "{run}: kill -9 {victim}: {} clients on it; detection {} ms; last client resumed {} ms after the kill; \
             200 acks {} ms after that check",
            victims.len(),
            detection.as_millis(),
            resumed.as_millis(),
            flowed.as_millis()
        );
        detections.push(detection);
        resumes.push(resumed);
        let moves = load.moves_since(killed_at);
        let moved: BTreeSet<usize> = moves.iter().filter(|m| m.to != url).map(|m| m.client).collect();
        let still_there: Vec<usize> = load.clients_on(&url);
        assert!(still_there.is_empty(), "{run}: clients {still_there:?} still count as on the killed {victim}");
        assert!(victims.iter().all(|c| moved.contains(c)), "{run}: not every client of {victim} moved");
        // They spread over the survivors, not onto one: each client's first
        // move after the kill, counted by where it went.
        let mut first_moves: BTreeMap<usize, &str> = BTreeMap::new();
        for m in moves.iter().filter(|m| victims.contains(&m.client)) {
            first_moves.entry(m.client).or_insert(&m.to);
        }
        let mut spread: BTreeMap<&str, usize> = BTreeMap::new();
        for to in first_moves.values() {
            *spread.entry(to).or_default() += 1;
        }
        let most = spread.values().copied().max().unwrap_or(0);
        println!("{run}: the clients of {victim} went to {:?}", spread.values().collect::<Vec<_>>());
        assert!(
            most * 10 <= victims.len() * 6,
            "{run}: {most} of the {} clients of {victim} went to one node: {spread:?}",
            victims.len()
        );

        cluster.restart(victim);
        cluster.wait_converged(SETUP).unwrap_or_else(|e| panic!("{run}: {victim} rejoins: {e}"));
        load.wait_acks(200, Duration::from_secs(20), &format!("after restarting {victim}"));
    }

    let mut history = load.finish(&rt);
    for (at, what) in &faults {
        history.fault(*at, what);
    }
    let detection_ms = detections.iter().max().map(|d| d.as_millis() as u64);
    let verdict = report(run, &history, detection_ms);
    println!(
        "{run}: detection ms {:?}; kill -> last client resumed ms {:?}; replayed messages {}",
        detections.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        resumes.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        replayed(&history)
    );
    assert_clean(run, &verdict, detection_ms);
}

#[test]
fn kill_owner_of_busiest_room() {
    let run = "kill_owner_of_busiest_room";
    let mut cluster = start_cluster(5);
    let rt = runtime();
    let busy = "busiest".to_owned();
    let spec = Spec {
        urls: urls(&cluster),
        clients: 50,
        rooms: vec![busy.clone()],
        second_room_every: 0,
        rate: 100.0,
        prefix: "b".to_owned(),
    };
    let load = Load::start(&rt, spec);
    load.wait_acks(300, Duration::from_secs(30), "before the kill");

    let apis: Vec<(String, NodeApi)> = cluster.nodes().iter().map(|n| (n.name().to_owned(), n.api().clone())).collect();
    let holder = holder_of(&apis, &busy).unwrap_or_else(|e| panic!("{run}: {e}"));
    let victims = load.clients_on(&ws_url(cluster.node(&holder)));
    let survivors: Vec<(String, NodeApi)> = apis.iter().filter(|(n, _)| *n != holder).cloned().collect();
    let killed_at = Instant::now();
    cluster.node_mut(&holder).kill9();
    let new_holder = wait_until(killed_at + Duration::from_secs(20), POLL, || holder_of(&survivors, &busy))
        .unwrap_or_else(|e| panic!("{run}: no survivor took {busy} over: {e}"));
    let failover = killed_at.elapsed();
    let detection = wait_detected(
        &survivors.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>(),
        &holder,
        killed_at,
        DETECTION_BOUND,
    );
    load.wait_acks(300, Duration::from_secs(30), "after the kill");
    let resumed = wait_resumed(&load, &victims, killed_at, RESUME_BOUND)
        .unwrap_or_else(|e| panic!("{run}: the clients of {holder} did not all resume: {e}"));

    let mut history = load.finish(&rt);
    history.fault(killed_at, &format!("kill -9 {holder}"));
    // The seq goes on across the kill (no reset): acks after it reach
    // above every seq acked before it; the checker proves no gap.
    let (mut before, mut after) = (0, 0);
    for r in &history.records {
        if let Event::Acked { seq, .. } = &r.event {
            if r.at < killed_at {
                before = before.max(*seq);
            } else {
                after = after.max(*seq);
            }
        }
    }
    println!(
        "{run}: {holder} held {busy} and was killed; {new_holder} held it {} ms later; detection {} ms; \
         its {} clients resumed within {} ms; last seq acked before the kill {before}, last after it {after}; \
         replayed messages {}",
        failover.as_millis(),
        detection.as_millis(),
        victims.len(),
        resumed.as_millis(),
        replayed(&history)
    );
    let detection_ms = Some(detection.as_millis() as u64);
    let verdict = report(run, &history, detection_ms);
    assert!(after > before, "{run}: the seq did not continue: {before} before, {after} after");
    assert_clean(run, &verdict, detection_ms);
}

/// The one node of `apis` that holds `room`.
fn holder_of(apis: &[(String, NodeApi)], room: &str) -> Result<String, String> {
    let mut holders = Vec::new();
    for (name, api) in apis {
        if api.held_rooms()?.iter().any(|r| r == room) {
            holders.push(name.clone());
        }
    }
    match holders.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("{room} must be held by exactly one node; held by {holders:?}")),
    }
}
