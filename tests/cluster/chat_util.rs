//! Shared pieces of the chat tests: a tokio runtime for the async client,
//! WebSocket URLs, room placement, and the `/debug/rooms` and `chat`
//! counter views of the debug API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hubbub_client::{ClientMsg, Connection, Event, ServerMsg, Welcome};
use hubbub_ring::{NodeId, Ring, room_key};
use hubbub_testkit::{Node, NodeApi, NodeOpts, random_key, wait_until};

/// Reaching the initial converged state is not what the chat tests measure.
pub(crate) const SETUP_CONVERGENCE: Duration = Duration::from_secs(15);
/// How long one expected frame may take to arrive (a debug build on a busy
/// 2-core machine).
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Debug API polling interval.
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// A small multi-threaded runtime for the async client; the test's own
/// thread stays synchronous and drives the blocking testkit.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

/// The client WebSocket URL of `node`.
pub(crate) fn ws_url(node: &Node) -> String {
    format!("ws://{}/ws", node.http_addr())
}

/// Connects to `url` and says hello as `user`; panics with the cause.
pub(crate) async fn open(url: &str, user: &str) -> (Connection, Welcome) {
    match tokio::time::timeout(FRAME_TIMEOUT, Connection::open(url, user)).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => panic!("{user}: cannot open {url}: {e}"),
        Err(_) => panic!("{user}: opening {url} took longer than {FRAME_TIMEOUT:?}"),
    }
}

/// Connects to `url` without saying hello.
pub(crate) async fn connect(url: &str) -> Connection {
    match tokio::time::timeout(FRAME_TIMEOUT, Connection::connect(url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("cannot connect to {url}: {e}"),
        Err(_) => panic!("connecting to {url} took longer than {FRAME_TIMEOUT:?}"),
    }
}

/// The next frame on `conn`; panics (naming `who`) on a close, a client
/// error or no frame within [`FRAME_TIMEOUT`].
pub(crate) async fn next_msg(conn: &mut Connection, who: &str) -> ServerMsg {
    match conn.next_event_within(FRAME_TIMEOUT).await {
        Ok(Event::Msg(msg)) => msg,
        Ok(Event::Closed { code, reason }) => panic!("{who}: connection closed ({code} {reason:?})"),
        Err(e) => panic!("{who}: no frame: {e}"),
    }
}

/// Sends `ping` with `id` and reads until its `pong`; returns every other
/// frame read meanwhile (none on a quiet connection). Proves the connection
/// still works and flushes what the node queued before the pong.
pub(crate) async fn ping_pong(conn: &mut Connection, who: &str, id: &str) -> Vec<ServerMsg> {
    conn.send(&ClientMsg::Ping { id: Some(id.to_owned()) })
        .await
        .unwrap_or_else(|e| panic!("{who}: sending ping {id}: {e}"));
    let mut others = Vec::new();
    // Bounded: a quiet connection has a handful of frames before the pong.
    for _ in 0..1000 {
        match next_msg(conn, &format!("{who} waiting for pong {id}")).await {
            ServerMsg::Pong { id: Some(got) } if got == id => return others,
            other => others.push(other),
        }
    }
    panic!("{who}: no pong {id} among 1000 frames: first ones {:?}", &others[..others.len().min(5)]);
}

/// Reads until the close frame (ignoring other frames, up to `within`) and
/// returns its code and reason.
pub(crate) async fn wait_close(conn: &mut Connection, who: &str, within: Duration) -> (u16, String) {
    conn.set_timeout(within);
    match conn.wait_close().await {
        Ok(close) => close,
        Err(e) => panic!("{who}: no close within {within:?}: {e}"),
    }
}

/// Waits until `node` answers ready: before that it refuses WebSockets (503).
pub(crate) fn wait_ready(node: &Node) {
    wait_until(Instant::now() + SETUP_CONVERGENCE, POLL, || match node.api().ready()? {
        (200, _) => Ok(()),
        (status, body) => Err(format!("{}: /healthz/ready {status}: {body}", node.name())),
    })
    .expect("the node gets ready");
}

/// Starts `n` nodes `n1..nN` with one fresh key and extra `args` each (n1
/// is the seed of the others), and waits until their rings agree.
pub(crate) fn start_nodes(n: usize, args: &[&str]) -> Vec<Node> {
    let key = random_key();
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for i in 1..=n {
        let mut opts = NodeOpts::new(&format!("n{i}"), &key);
        opts.args = args.iter().map(|a| (*a).to_owned()).collect();
        if let Some(seed) = nodes.first() {
            opts.seeds = vec![seed.gossip_addr()];
        }
        nodes.push(Node::spawn(opts));
    }
    wait_rings_agree(&nodes.iter().collect::<Vec<_>>(), Instant::now() + SETUP_CONVERGENCE)
        .expect("the nodes converge");
    nodes.iter().for_each(wait_ready);
    nodes
}

/// Waits until every node in `nodes` has exactly these nodes in its ring,
/// with one fingerprint.
pub(crate) fn wait_rings_agree(nodes: &[&Node], deadline: Instant) -> Result<(), String> {
    let mut names: Vec<String> = nodes.iter().map(|n| n.name().to_owned()).collect();
    names.sort();
    wait_until(deadline, POLL, || {
        let mut fingerprints = Vec::new();
        for node in nodes {
            let ring = node.api().ring()?;
            if ring.names() != names {
                return Err(format!("{}'s ring has {:?}; expected {names:?}", node.name(), ring.names()));
            }
            fingerprints.push(ring.fingerprint);
        }
        if fingerprints.iter().any(|f| *f != fingerprints[0]) {
            return Err(format!("ring fingerprints differ: {fingerprints:?}"));
        }
        Ok(())
    })
}

/// The owner of `room` in a ring of the nodes named `names` (node ids are
/// pinned hashes of the names, so this is what every node computes).
pub(crate) fn owner_of(names: &[&str], room: &str) -> String {
    let ring = Ring::new(names.iter().map(|n| NodeId::from_name(n)));
    let owner = ring.owner(&room_key(room)).expect("a non-empty ring");
    names.iter().find(|n| NodeId::from_name(n) == owner).expect("the owner is a member").to_string()
}

/// The first `count` names `{prefix}{i}` whose owner among `names` is `owner`.
pub(crate) fn rooms_owned_by(names: &[&str], owner: &str, prefix: &str, count: usize) -> Vec<String> {
    let rooms: Vec<String> =
        (0..10_000).map(|i| format!("{prefix}{i}")).filter(|r| owner_of(names, r) == owner).take(count).collect();
    assert_eq!(rooms.len(), count, "fewer than {count} of 10000 room names are owned by {owner} among {names:?}");
    rooms
}

/// Which of `nodes` hold each room of `rooms`: Ok when every room is held by
/// exactly one node, else an error listing every room's holders.
pub(crate) fn check_single_holders(
    nodes: &[(String, NodeApi)],
    rooms: &[String],
) -> Result<BTreeMap<String, String>, String> {
    let mut holders: BTreeMap<String, Vec<String>> = rooms.iter().map(|r| (r.clone(), Vec::new())).collect();
    for (name, api) in nodes {
        for room in api.held_rooms()? {
            if let Some(h) = holders.get_mut(&room) {
                h.push(name.clone());
            }
        }
    }
    if holders.values().all(|h| h.len() == 1) {
        Ok(holders.into_iter().map(|(room, mut h)| (room, h.remove(0))).collect())
    } else {
        Err(format!("every room must be held by exactly one node; holders: {holders:?}"))
    }
}

/// A counter of the `chat` object of `GET /debug/node`.
pub(crate) fn chat_counter(api: &NodeApi, name: &str) -> Result<u64, String> {
    let node: serde_json::Value = api.get_json("/debug/node")?;
    node["chat"][name].as_u64().ok_or_else(|| format!("/debug/node has no integer chat.{name}: {}", node["chat"]))
}

/// One delivered room message.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) seq: u64,
    pub(crate) from: String,
    pub(crate) id: String,
    pub(crate) body: String,
}

/// Ok when `seqs` is exactly `first..=last`; else the first place it
/// differs, with a few neighbours.
pub(crate) fn check_consecutive(seqs: &[u64], first: u64, last: u64) -> Result<(), String> {
    let expected: Vec<u64> = (first..=last).collect();
    if seqs == expected.as_slice() {
        return Ok(());
    }
    let at = seqs.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(seqs.len().min(expected.len()));
    let window = |s: &[u64]| s[at.saturating_sub(3)..(at + 4).min(s.len())].to_vec();
    Err(format!(
        "expected seqs {first}..={last} ({} of them), got {} seqs; first difference at index {at}: got {:?}, expected {:?}",
        expected.len(),
        seqs.len(),
        window(seqs),
        window(&expected)
    ))
}
