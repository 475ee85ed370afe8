//! Connections follow the cluster: a fifth node joining a loaded cluster
//! gets its share of the clients, and a rolling restart (SIGTERM, one node
//! at a time) moves each client at most once per restart, losing nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hubbub_testkit::{Cluster, Node, NodeApi, NodeOpts, wait_until};

use crate::load::{Load, POLL, Spec, chat_counter, runtime, ws_url};
use crate::verdict::{assert_clean, report};

const SETUP: Duration = Duration::from_secs(30);
/// The issue's bound: balanced within 30 s of the join.
const BALANCE_BOUND: Duration = Duration::from_secs(30);
/// Allowed distance of each node's connection count from the mean.
const TOLERANCE: f64 = 0.10;

fn ready(node: &Node) {
    wait_until(Instant::now() + SETUP, POLL, || match node.api().ready()? {
        (200, _) => Ok(()),
        (status, body) => Err(format!("{}: /healthz/ready {status}: {body}", node.name())),
    })
    .expect("the node gets ready");
}

fn start_cluster(n: usize) -> Cluster {
    let mut cluster = Cluster::start(n);
    cluster.wait_converged(SETUP).expect("the nodes converge");
    cluster.nodes().iter().for_each(ready);
    cluster
}

/// Each node's `chat.connections`; Ok when all are within the tolerance of
/// their mean.
fn check_balanced(apis: &[(String, NodeApi)]) -> Result<BTreeMap<String, u64>, String> {
    let mut counts = BTreeMap::new();
    for (name, api) in apis {
        counts.insert(name.clone(), chat_counter(api, "connections")?);
    }
    let mean = counts.values().sum::<u64>() as f64 / counts.len() as f64;
    let off: Vec<_> = counts.iter().filter(|(_, c)| (**c as f64 - mean).abs() > TOLERANCE * mean).collect();
    if off.is_empty() { Ok(counts) } else { Err(format!("mean {mean:.1}; outside ±10 %: {off:?}; all {counts:?}")) }
}

#[test]
fn join_rebalances() {
    let run = "join_rebalances";
    let cluster = start_cluster(4);
    let rt = runtime();
    let spec = Spec {
        urls: cluster.nodes().iter().map(ws_url).collect(),
        clients: 400,
        rooms: (0..40).map(|i| format!("rb-{i}")).collect(),
        second_room_every: 2,
        rate: 100.0,
        prefix: "j".to_owned(),
    };
    let load = Load::start(&rt, spec);
    load.wait_acks(300, Duration::from_secs(30), "before the join");

    let mut opts = NodeOpts::new("n5", cluster.key());
    opts.seeds = cluster.nodes().iter().map(Node::gossip_addr).collect();
    let started = Instant::now();
    let n5 = Node::spawn(opts);
    ready(&n5);
    let apis: Vec<(String, NodeApi)> =
        cluster.nodes().iter().chain([&n5]).map(|n| (n.name().to_owned(), n.api().clone())).collect();
    let balanced = wait_until(started + BALANCE_BOUND, Duration::from_millis(200), || check_balanced(&apis));
    let took = started.elapsed();
    let moves = load.moves_since(started);
    let mut per_client: BTreeMap<usize, usize> = BTreeMap::new();
    for m in &moves {
        *per_client.entry(m.client).or_default() += 1;
    }
    let spread = load.spread();
    load.wait_acks(200, Duration::from_secs(30), "after the rebalance");
    let history = load.finish(&rt);
    println!(
        "{run}: n5 started; balanced {} after {} ms: {:?}; {} moves by {} clients (most by one client: {}); \
         clients per URL as they see it: {spread:?}",
        if balanced.is_ok() { "" } else { "NOT" },
        took.as_millis(),
        balanced,
        moves.len(),
        per_client.len(),
        per_client.values().max().copied().unwrap_or(0)
    );
    let verdict = report(run, &history, None);
    balanced.unwrap_or_else(|e| {
        panic!("{run}: connections not within ±10 % of the mean {BALANCE_BOUND:?} after the join: {e}")
    });
    assert_clean(run, &verdict, None);
}

#[test]
fn rolling_restart() {
    let run = "rolling_restart";
    let mut cluster = start_cluster(5);
    let rt = runtime();
    let spec = Spec {
        urls: cluster.nodes().iter().map(ws_url).collect(),
        clients: 300,
        rooms: (0..30).map(|i| format!("rr-{i}")).collect(),
        second_room_every: 2,
        rate: 100.0,
        prefix: "r".to_owned(),
    };
    let load = Load::start(&rt, spec);
    load.wait_acks(300, Duration::from_secs(30), "before the first restart");

    let mut windows: Vec<(String, Instant)> = Vec::new();
    for name in cluster.names() {
        let on_it = load.clients_on(&ws_url(cluster.node(&name))).len();
        let termed = Instant::now();
        windows.push((name.clone(), termed));
        cluster.node(&name).sigterm();
        let status = cluster.node_mut(&name).wait_exit(Duration::from_secs(60));
        let exited = termed.elapsed();
        cluster.restart(&name);
        cluster.wait_converged(SETUP).unwrap_or_else(|e| panic!("{run}: {name} rejoins: {e}"));
        ready(cluster.node(&name));
        load.wait_acks(150, Duration::from_secs(30), &format!("after restarting {name}"));
        println!(
            "{run}: SIGTERM {name} ({on_it} clients on it): exited {status} after {} ms; back and converged after {} ms",
            exited.as_millis(),
            termed.elapsed().as_millis()
        );
        assert_eq!(status.code(), Some(0), "{run}: {name} must exit 0 after SIGTERM");
    }
    let ended = Instant::now();
    let mut worst: Vec<(String, usize, usize)> = Vec::new();
    for (i, (name, from)) in windows.iter().enumerate() {
        let to = windows.get(i + 1).map_or(ended, |w| w.1);
        let mut per_client: BTreeMap<usize, usize> = BTreeMap::new();
        for m in load.moves_since(*from).iter().filter(|m| m.at < to) {
            *per_client.entry(m.client).or_default() += 1;
        }
        let most = per_client.values().max().copied().unwrap_or(0);
        let more_than_once = per_client.values().filter(|n| **n > 1).count();
        println!(
            "{run}: restart of {name}: {} clients moved, most moves by one client {most}, {more_than_once} moved more than once",
            per_client.len()
        );
        worst.push((name.clone(), most, more_than_once));
    }
    let history = load.finish(&rt);
    let verdict = report(run, &history, None);
    assert_clean(run, &verdict, None);
    let over: Vec<_> = worst.iter().filter(|(_, most, _)| *most > 1).collect();
    assert!(over.is_empty(), "{run}: clients moved more than once per restart: (node, most moves, clients) {over:?}");
}
