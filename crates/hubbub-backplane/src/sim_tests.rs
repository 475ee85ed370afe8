//! Simulated clusters of [`Core`]s: frames travel on per-link FIFO queues
//! delivered in a seeded random interleaving, views change at different
//! moments on different nodes, and a node joins and drains under traffic.
//! Checks what the backplane promises: every acked message reaches every
//! subscriber once, in seq order, gapless; no seq is given twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hubbub_proto::client::{CloseCode, ServerMsg};
use hubbub_proto::link::{self, LinkFrame};
use hubbub_ring::{NodeId, Ring};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::core::{ConnSink, Core, CoreLimits, PeerSink, Text};

type Wire = Arc<Mutex<Vec<(NodeId, NodeId, Bytes)>>>;

struct SimPeers {
    me: NodeId,
    wire: Wire,
}

impl PeerSink for SimPeers {
    fn send(&self, peer: NodeId, frame: Bytes) {
        self.wire.lock().unwrap().push((self.me, peer, frame));
    }
}

#[derive(Default)]
struct Recorder {
    frames: Mutex<Vec<ServerMsg>>,
}

impl ConnSink for Recorder {
    fn push(&self, text: Text) -> bool {
        self.frames.lock().unwrap().push(serde_json::from_str(&text).unwrap());
        true
    }
    fn close(&self, code: CloseCode) {
        panic!("unexpected close {code:?}");
    }
}

struct Sim {
    rng: StdRng,
    now: u64,
    wire: Wire,
    links: BTreeMap<(NodeId, NodeId), VecDeque<Bytes>>,
    nodes: BTreeMap<NodeId, Core>,
    conns: Vec<(NodeId, u64, Arc<Recorder>)>,
    sent: u64,
    /// Crashed nodes: their connections' acks count, their deliveries don't.
    crashed: Vec<NodeId>,
    /// A node cut off from the others: frames between it and them vanish.
    cut: Option<NodeId>,
}

const ROOMS: [&str; 4] = ["r0", "r1", "r2", "r3"];

impl Sim {
    fn new(seed: u64, names: &[&str]) -> Sim {
        Sim::with_rings(seed, names, |ids, _| Ring::new(ids.iter().copied()))
    }

    /// Nodes whose first ring is `first(ids, node)`.
    fn with_rings(seed: u64, names: &[&str], first: impl Fn(&[NodeId], NodeId) -> Ring) -> Sim {
        let wire: Wire = Default::default();
        let ids: Vec<NodeId> = names.iter().map(|n| NodeId::from_name(n)).collect();
        let mut nodes = BTreeMap::new();
        for id in &ids {
            let mut core = Core::new(*id, CoreLimits::default(), Box::new(SimPeers { me: *id, wire: wire.clone() }));
            core.on_view(first(&ids, *id), [], 0);
            nodes.insert(*id, core);
        }
        Sim {
            rng: StdRng::seed_from_u64(seed),
            now: 1_000,
            wire,
            links: BTreeMap::new(),
            nodes,
            conns: Vec::new(),
            sent: 0,
            crashed: Vec::new(),
            cut: None,
        }
    }

    fn collect(&mut self) {
        for (from, to, frame) in self.wire.lock().unwrap().drain(..) {
            self.links.entry((from, to)).or_default().push_back(frame);
        }
    }

    /// Delivers one frame from a random non-empty link, or (a third of the
    /// time) a batch of up to 8 frames to one node, as the driver does with
    /// what waits in its inbox; false when none is left.
    fn step(&mut self) -> bool {
        self.collect();
        let busy: Vec<(NodeId, NodeId)> = self.links.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| *k).collect();
        if busy.is_empty() {
            return false;
        }
        let (from, to) = busy[self.rng.random_range(0..busy.len())];
        let batch = if self.rng.random_bool(1.0 / 3.0) { 8 } else { 1 };
        self.now += 1;
        for i in 0..batch {
            let inbound: Vec<NodeId> =
                self.links.iter().filter(|((_, t), q)| *t == to && !q.is_empty()).map(|((f, _), _)| *f).collect();
            let from = if i == 0 {
                from
            } else if inbound.is_empty() {
                break;
            } else {
                inbound[self.rng.random_range(0..inbound.len())]
            };
            let frame = self.links.get_mut(&(from, to)).unwrap().pop_front().unwrap();
            if self.cut.is_some_and(|c| (from == c) != (to == c)) {
                continue;
            }
            if let Some(core) = self.nodes.get_mut(&to) {
                let LinkFrame::Chat(frame) = link::decode(&frame).unwrap() else { panic!("not a chat frame") };
                core.on_frame_in_batch(from, frame, self.now);
            }
        }
        if let Some(core) = self.nodes.get_mut(&to) {
            core.end_batch(self.now);
        }
        true
    }

    /// Delivers every frame; when none is left, lets a second pass on every
    /// node (retries) until nothing more is sent.
    fn settle(&mut self) {
        let mut n = 0;
        let mut quiet_rounds = 0;
        for _ in 0..30 {
            while self.step() {
                n += 1;
                assert!(n < 1_000_000, "frames never settle");
            }
            let waiting = self.nodes.values().any(|c| !c.claiming.is_empty() || !c.parked.is_empty());
            // Two quiet rounds past the refresh interval let anti-entropy
            // (subscription refresh, gap re-requests) do its part, as the
            // nodes' ticker does.
            if !waiting {
                quiet_rounds += 1;
                if quiet_rounds > 2 {
                    return;
                }
            }
            self.now += 1_000 + if waiting { 0 } else { crate::core::REFRESH_MS };
            let now = self.now;
            for core in self.nodes.values_mut() {
                core.tick(now);
            }
        }
        panic!("claims or parked frames never settle");
    }

    fn connect_all(&mut self) {
        self.connect_all_unsettled();
        self.settle();
    }

    fn connect_all_unsettled(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for (i, id) in ids.iter().enumerate() {
            let conn = 100 + i as u64;
            let rec = Arc::new(Recorder::default());
            let core = self.nodes.get_mut(id).unwrap();
            core.connect(conn, &format!("u{i}"), rec.clone(), self.now);
            for room in ROOMS {
                core.join(conn, room, None, self.now);
            }
            self.conns.push((*id, conn, rec));
        }
    }

    /// kill -9: the node and every frame to or from it in flight vanish.
    fn crash(&mut self, node: NodeId) {
        self.collect();
        self.nodes.remove(&node);
        self.links.retain(|(from, to), _| *from != node && *to != node);
        self.crashed.push(node);
    }

    /// A new process of `node` (crashed before), empty, knowing every node;
    /// the others see a new incarnation of a member (their rings keep it).
    fn restart(&mut self, node: NodeId) {
        let mut fresh =
            Core::new(node, CoreLimits::default(), Box::new(SimPeers { me: node, wire: self.wire.clone() }));
        let ring = Ring::new(self.nodes.keys().copied().chain([node]));
        fresh.on_view(ring, [], self.now);
        self.nodes.insert(node, fresh);
        let now = self.now;
        for (id, core) in self.nodes.iter_mut() {
            if *id != node {
                core.member_restarted(node, now);
            }
        }
    }

    /// The (first) node holding `room`, other than `except`.
    fn holder_of(&self, room: &str, except: Option<NodeId>) -> NodeId {
        *self.nodes.iter().find(|(id, c)| Some(**id) != except && c.held.contains_key(room)).map(|(id, _)| id).unwrap()
    }

    fn publish(&mut self) {
        let live: Vec<_> = self.conns.iter().filter(|(n, _, _)| !self.crashed.contains(n)).cloned().collect();
        let (node, conn, _) = live[self.rng.random_range(0..live.len())].clone();
        let room = ROOMS[self.rng.random_range(0..ROOMS.len())];
        self.publish_from(node, conn, room);
    }

    fn publish_from(&mut self, node: NodeId, conn: u64, room: &str) {
        self.sent += 1;
        let id = format!("m{}", self.sent);
        self.nodes.get_mut(&node).unwrap().send(conn, room, format!("body {id}"), &id, self.now);
    }

    /// Gives every node `ring`, in random order, interleaved with traffic.
    fn change_view(&mut self, ring: &Ring, leaving: &[NodeId]) {
        let mut ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        while !ids.is_empty() {
            let id = ids.swap_remove(self.rng.random_range(0..ids.len()));
            let now = self.now;
            if let Some(core) = self.nodes.get_mut(&id) {
                core.on_view(ring.clone(), leaving.iter().copied(), now);
            }
            for _ in 0..self.rng.random_range(0..6) {
                self.publish();
                self.step();
            }
        }
    }

    /// Gives every node `ring` with frames moving in between, no publishing.
    fn quiet_view(&mut self, ring: &Ring) {
        let mut ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        while !ids.is_empty() {
            let id = ids.swap_remove(self.rng.random_range(0..ids.len()));
            let now = self.now;
            if let Some(core) = self.nodes.get_mut(&id) {
                core.on_view(ring.clone(), [], now);
            }
            for _ in 0..self.rng.random_range(0..6) {
                self.step();
            }
        }
    }

    fn traffic(&mut self, rounds: usize) {
        for _ in 0..rounds {
            if self.rng.random_bool(0.6) {
                self.publish();
            }
            self.step();
        }
    }
}

/// Every acked message reached every subscriber exactly once, in order,
/// and each (room, seq) names one message.
fn check(sim: &Sim, seed: u64) {
    let mut acked: HashMap<(String, u64), String> = HashMap::new();
    for (_, _, rec) in &sim.conns {
        for frame in rec.frames.lock().unwrap().iter() {
            if let ServerMsg::Ack { id, room: Some(room), seq: Some(seq) } = frame
                && let Some(other) = acked.insert((room.clone(), *seq), id.clone())
            {
                panic!("seed {seed}: {room} seq {seq} acked for {other} and {id}");
            }
        }
    }
    for (node, conn, rec) in sim.conns.iter().filter(|(n, _, _)| !sim.crashed.contains(n)) {
        let mut seen: HashMap<String, Vec<(u64, String)>> = HashMap::new();
        let mut joined_at: HashMap<String, u64> = HashMap::new();
        for frame in rec.frames.lock().unwrap().iter() {
            match frame {
                ServerMsg::Message { room: Some(room), seq: Some(seq), id, .. } => {
                    seen.entry(room.clone()).or_default().push((*seq, id.clone()));
                }
                ServerMsg::Joined { room, seq, .. } => {
                    joined_at.entry(room.clone()).or_insert(*seq);
                }
                _ => {}
            }
        }
        for room in ROOMS {
            let Some(&joined) = joined_at.get(room) else {
                panic!("seed {seed}: conn {conn} on {node} never joined {room}");
            };
            let got = seen.remove(room).unwrap_or_default();
            let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
            let expected: Vec<u64> = (joined + 1..=joined + seqs.len() as u64).collect();
            assert_eq!(seqs, expected, "seed {seed}: conn {conn} on {node} in {room}: gap, repeat or reorder");
            for (seq, id) in &got {
                if let Some(acked_id) = acked.get(&(room.to_owned(), *seq)) {
                    assert_eq!(acked_id, id, "seed {seed}: {room} seq {seq} delivered as another message");
                }
            }
            let acked_after_join = acked.keys().filter(|(r, s)| r == room && *s > joined).count();
            assert!(
                seqs.len() >= acked_after_join,
                "seed {seed}: conn {conn} in {room} got {} messages after seq {joined}, {acked_after_join} were acked",
                seqs.len()
            );
        }
    }
}

/// Every room with traffic is held by exactly one node.
fn assert_single_holders(sim: &Sim, seed: u64) {
    for room in ROOMS {
        let holders = sim.nodes.values().filter(|c| c.held.contains_key(room)).count();
        assert_eq!(holders, 1, "seed {seed}: {room} has {holders} holders");
    }
}

#[test]
fn steady_traffic_is_ordered_and_complete() {
    for seed in 0..50 {
        let mut sim = Sim::new(seed, &["a", "b", "c"]);
        sim.connect_all();
        sim.traffic(400);
        sim.settle();
        check(&sim, seed);
        assert!(sim.sent > 100);
    }
}

#[test]
fn a_node_joins_then_drains_under_traffic() {
    for seed in 0..200 {
        let mut sim = Sim::new(seed, &["a", "b", "c"]);
        sim.connect_all();
        sim.traffic(100);

        // d joins: every node, d included, learns the new ring at its own
        // moment, so d may hear from peers before it knows them.
        let d = NodeId::from_name("d");
        let core = Core::new(d, CoreLimits::default(), Box::new(SimPeers { me: d, wire: sim.wire.clone() }));
        let grown = Ring::new(sim.nodes.keys().copied().chain([d]));
        sim.nodes.insert(d, core);
        sim.change_view(&grown, &[]);
        sim.traffic(200);

        // d drains: hands its rooms off, then leaves the ring.
        let now = sim.now;
        sim.nodes.get_mut(&d).unwrap().drain(now);
        sim.traffic(50);
        sim.settle();
        assert_eq!(sim.nodes[&d].unacked_handoffs(), 0, "seed {seed}: handoffs unacknowledged");
        assert!(sim.nodes[&d].held.is_empty(), "seed {seed}: a draining node still holds rooms");
        let shrunk = Ring::new(sim.nodes.keys().copied().filter(|n| *n != d));
        sim.change_view(&shrunk, &[]);
        sim.nodes.remove(&d);
        sim.traffic(200);
        sim.settle();
        check(&sim, seed);

        // Every room with traffic is held by exactly one node.
        assert_single_holders(&sim, seed);
    }
}

#[test]
fn rings_that_converge_at_different_moments_agree_on_one_holder() {
    for seed in 0..200 {
        // Nodes join through a seed: the seed knows everyone first, each
        // other node starts knowing itself and the seed; the full ring
        // reaches them one by one, while clients already publish.
        let seed_node = NodeId::from_name(["a", "b", "c", "d"][seed as usize % 4]);
        let mut sim = Sim::with_rings(seed, &["a", "b", "c", "d"], |ids, me| {
            if me == seed_node { Ring::new(ids.iter().copied()) } else { Ring::new([me, seed_node]) }
        });
        sim.connect_all_unsettled();
        sim.traffic(100);
        let full = Ring::new(sim.nodes.keys().copied());
        sim.change_view(&full, &[]);
        sim.traffic(300);
        sim.settle();
        check(&sim, seed);
        assert_single_holders(&sim, seed);
    }
}

#[test]
fn a_crashed_holder_loses_nothing_acked() {
    for seed in 0..200 {
        let mut sim = Sim::new(seed, &["a", "b", "c", "d"]);
        sim.connect_all();
        sim.traffic(200);
        // Crash the holder of r0 mid-traffic: frames in flight are lost.
        let victim = sim.holder_of("r0", None);
        sim.crash(victim);
        sim.traffic(20);
        let shrunk = Ring::new(sim.nodes.keys().copied());
        sim.change_view(&shrunk, &[]);
        sim.traffic(200);
        sim.settle();
        check(&sim, seed);
        assert_single_holders(&sim, seed);
    }
}

#[test]
fn two_crashes_one_after_the_other_lose_nothing_acked() {
    for seed in 0..100 {
        let mut sim = Sim::new(seed, &["a", "b", "c", "d", "e"]);
        sim.connect_all();
        sim.traffic(200);
        sim.settle();
        // The holder of r0 dies; no message follows, so only the ring change
        // can make its replica take the room over (and copy it again).
        for _ in 0..2 {
            let victim = sim.holder_of("r0", None);
            sim.crash(victim);
            let shrunk = Ring::new(sim.nodes.keys().copied());
            sim.quiet_view(&shrunk);
            sim.settle();
        }
        sim.traffic(200);
        sim.settle();
        check(&sim, seed);
    }
}

#[test]
fn a_holder_restarted_before_anyone_noticed_gets_its_rooms_back() {
    for seed in 0..100 {
        let mut sim = Sim::new(seed, &["a", "b", "c", "d", "e"]);
        sim.connect_all();
        sim.traffic(200);
        sim.settle();
        // The holder of r0 dies and comes back empty with the same id before
        // the others' rings drop it: they only see a new incarnation.
        let victim = sim.holder_of("r0", None);
        sim.crash(victim);
        sim.crashed.retain(|n| *n != victim);
        sim.conns.retain(|(n, _, _)| *n != victim);
        sim.restart(victim);
        sim.traffic(300);
        sim.settle();
        check(&sim, seed);
        assert_single_holders(&sim, seed);
    }
}

#[test]
fn a_holder_cut_off_in_a_minority_never_publishes_its_unacked_seqs() {
    for seed in 0..200 {
        let mut sim = Sim::new(seed, &["a", "b", "c", "d", "e"]);
        sim.connect_all();
        sim.traffic(100);
        sim.settle();
        // The holder of r0 is cut off. Before it notices, its own clients
        // publish to r0: sequenced, never replicated, never acked.
        let victim = sim.holder_of("r0", None);
        let (_, conn, _) = sim.conns.iter().find(|(n, _, _)| *n == victim).cloned().unwrap();
        sim.cut = Some(victim);
        for _ in 0..5 {
            sim.publish_from(victim, conn, "r0");
        }
        sim.traffic(50);
        // Each side learns of the cut: the majority drops the victim and
        // fails r0 over from its replica (a newer term, reusing the seqs the
        // victim gave); the victim loses its majority.
        let now = sim.now;
        let alone = Ring::new([victim]);
        let core = sim.nodes.get_mut(&victim).unwrap();
        core.set_quorum(false);
        core.on_view(alone, [], now);
        core.quorum_lost(now);
        let majority = Ring::new(sim.nodes.keys().copied().filter(|n| *n != victim));
        let others: Vec<NodeId> = sim.nodes.keys().copied().filter(|n| *n != victim).collect();
        for id in &others {
            sim.nodes.get_mut(id).unwrap().on_view(majority.clone(), [], now);
        }
        sim.traffic(200);
        sim.settle();
        // The heal. The victim regains its majority before it sees every
        // member again: the new holder of r0 is still missing from its ring.
        sim.cut = None;
        let holder = sim.holder_of("r0", Some(victim));
        let partial = Ring::new(sim.nodes.keys().copied().filter(|n| *n != holder));
        let now = sim.now;
        let core = sim.nodes.get_mut(&victim).unwrap();
        core.set_quorum(true);
        core.on_view(partial, [], now);
        core.quorum_regained(now);
        sim.traffic(20);
        // Then every node sees all five, in its own order.
        let full = Ring::new(sim.nodes.keys().copied());
        sim.change_view(&full, &[]);
        sim.traffic(200);
        sim.settle();
        check(&sim, seed);
        assert_single_holders(&sim, seed);
    }
}

#[test]
fn a_stale_replica_copy_never_replaces_the_real_replica() {
    use hubbub_ring::room_key;
    for seed in 0..200 {
        let mut sim = Sim::new(seed, &["a", "b", "c", "d", "e"]);
        sim.connect_all();
        sim.traffic(100);
        sim.settle();
        let order = Ring::new(sim.nodes.keys().copied()).preference_order(&room_key("r0"));
        let (holder, replica) = (order[0], order[1]);
        // The replica dies: the holder copies r0 to the next node instead.
        sim.crash(replica);
        let without = Ring::new(sim.nodes.keys().copied());
        sim.change_view(&without, &[]);
        sim.traffic(100);
        // It comes back empty; nodes learn it at different moments, so the
        // stand-in may be sent the log again after it dropped its copy.
        sim.restart(replica);
        let full = Ring::new(sim.nodes.keys().copied());
        sim.change_view(&full, &[]);
        sim.traffic(200);
        // The holder dies: the replica, next in line, takes r0 over.
        sim.crash(holder);
        let shrunk = Ring::new(sim.nodes.keys().copied());
        sim.change_view(&shrunk, &[]);
        sim.traffic(200);
        sim.settle();
        check(&sim, seed);
        assert_single_holders(&sim, seed);
    }
}

/// A claimer whose own replica copy is longer than the takeover state
/// another node made from an older copy continues from its own: the seqs
/// only its copy has may have been acknowledged.
#[test]
fn a_takeover_from_a_shorter_copy_yields_to_the_claimers_longer_one() {
    use hubbub_proto::chat::{ChatFrame, ClaimAnswer, Entry, RoomState};
    use hubbub_ring::room_key;
    let ids: Vec<NodeId> = ["a", "b", "c"].iter().map(|n| NodeId::from_name(n)).collect();
    let ring = Ring::new(ids.iter().copied());
    let order = ring.preference_order(&room_key("r0"));
    let (me, old_holder, stand_in) = (order[0], order[1], order[2]);
    let wire: Wire = Default::default();
    let mut core = Core::new(me, CoreLimits::default(), Box::new(SimPeers { me, wire }));
    core.on_view(ring, [], 0);
    let entry = |seq: u64| Entry::new(seq, "u", &format!("m{seq}"), "b", 1);
    let entries = |upto: u64| (1..=upto).map(entry).collect::<Vec<_>>();
    // This node replicated r0 for its holder, up to seq 35 of term 1.
    core.on_frame(old_holder, ChatFrame::Replicate { room: "r0".into(), term: 1, entries: entries(35), full: true }, 1);
    // Another node hands over a takeover of its older copy (up to 32).
    let state = RoomState { next_seq: 33, nodes: vec![], history: entries(32), released: 32, pending: vec![], term: 2 };
    core.on_frame(stand_in, ChatFrame::ClaimReply { room: "r0".into(), answer: ClaimAnswer::State(state) }, 2);
    let held = &core.held["r0"];
    assert_eq!((held.term, held.next_seq), (2, 36), "the longer copy wins");
}

/// An entry sequenced in a batch under one term never reaches a replica
/// under another: a newer term installed later in the same batch replaces
/// the room, and the batch's replication leaves the old entry out.
#[test]
fn a_batch_never_replicates_an_entry_under_a_newer_term() {
    use hubbub_proto::chat::{ChatFrame, RoomState};
    use hubbub_ring::room_key;
    let ids: Vec<NodeId> = ["a", "b", "c"].iter().map(|n| NodeId::from_name(n)).collect();
    let ring = Ring::new(ids.iter().copied());
    let order = ring.preference_order(&room_key("r0"));
    let (me, peer) = (order[0], order[1]);
    let wire: Wire = Default::default();
    let mut core = Core::new(me, CoreLimits::default(), Box::new(SimPeers { me, wire: wire.clone() }));
    core.on_view(ring, [], 0);
    let state = |next_seq: u64, term: u64| RoomState {
        next_seq,
        nodes: vec![],
        history: vec![],
        released: next_seq - 1,
        pending: vec![],
        term,
    };
    core.on_frame(peer, ChatFrame::Handoff { room: "r0".into(), state: state(5, 1) }, 1);
    wire.lock().unwrap().clear();
    let publish = ChatFrame::Publish {
        req: 1,
        origin: peer,
        room: "r0".into(),
        from: "u".into(),
        id: "stale".into(),
        body: "b".into(),
        hops: 0,
    };
    core.on_frame_in_batch(peer, publish, 2);
    core.on_frame_in_batch(peer, ChatFrame::Handoff { room: "r0".into(), state: state(9, 2) }, 2);
    core.end_batch(2);
    assert_eq!(core.held["r0"].term, 2);
    for (_, _, bytes) in wire.lock().unwrap().iter() {
        let LinkFrame::Chat(frame) = link::decode(bytes).unwrap() else { continue };
        if let ChatFrame::Replicate { term, entries, .. } = frame {
            assert!(
                entries.iter().all(|e| e.id() != "stale") || term == 1,
                "the term-1 entry went out under term {term}"
            );
        }
    }
}

/// The chat frames sent so far, with their destination, taken off the wire.
fn take_chat_frames(wire: &Wire) -> Vec<(NodeId, hubbub_proto::chat::ChatFrame)> {
    wire.lock()
        .unwrap()
        .drain(..)
        .filter_map(|(_, to, bytes)| match link::decode(&bytes).unwrap() {
            LinkFrame::Chat(frame) => Some((to, frame)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_release_is_one_delivery_per_node_and_one_answer_per_origin() {
    use hubbub_proto::chat::{ChatFrame, RoomState};
    use hubbub_ring::room_key;
    let ids: Vec<NodeId> = ["a", "b", "c"].iter().map(|n| NodeId::from_name(n)).collect();
    let ring = Ring::new(ids.iter().copied());
    let order = ring.preference_order(&room_key("r0"));
    let (me, others) = (order[0], [order[1], order[2]]);
    let wire: Wire = Default::default();
    let mut core = Core::new(me, CoreLimits::default(), Box::new(SimPeers { me, wire: wire.clone() }));
    core.on_view(ring, [], 0);
    let state =
        RoomState { next_seq: 5, nodes: others.to_vec(), history: vec![], released: 4, pending: vec![], term: 1 };
    core.on_frame(others[0], ChatFrame::Handoff { room: "r0".into(), state }, 1);
    // Eight publishes in one batch, alternating between the two origins.
    for req in 0..8u64 {
        let origin = others[(req % 2) as usize];
        let body = format!("m{req}");
        let publish =
            ChatFrame::Publish { req, origin, room: "r0".into(), from: "u".into(), id: body.clone(), body, hops: 0 };
        core.on_frame_in_batch(origin, publish, 2);
    }
    core.end_batch(2);
    let replica = take_chat_frames(&wire)
        .into_iter()
        .find_map(|(to, f)| matches!(f, ChatFrame::Replicate { .. }).then_some(to))
        .expect("the batch went to a replica");
    core.on_frame(replica, ChatFrame::Replicated { room: "r0".into(), term: 1, seq: 12, need_full: false }, 3);
    let sent = take_chat_frames(&wire);
    for node in others {
        let delivers: Vec<&ChatFrame> = sent
            .iter()
            .filter(|(to, f)| *to == node && matches!(f, ChatFrame::Deliver { .. }))
            .map(|(_, f)| f)
            .collect();
        let [ChatFrame::Deliver { first, texts, .. }] = delivers.as_slice() else {
            panic!("{node}: one delivery frame expected, got {delivers:?}")
        };
        assert_eq!((*first, texts.len()), (5, 8));
        let answers: Vec<&ChatFrame> = sent
            .iter()
            .filter(|(to, f)| *to == node && matches!(f, ChatFrame::Published { .. }))
            .map(|(_, f)| f)
            .collect();
        let [ChatFrame::Published { acks, .. }] = answers.as_slice() else {
            panic!("{node}: one answer frame expected, got {answers:?}")
        };
        let parity = if node == others[0] { 0 } else { 1 };
        let expected: Vec<(u64, u64)> = (0..8u64).filter(|r| r % 2 == parity).map(|r| (r, 5 + r)).collect();
        assert_eq!(acks, &expected, "each request answered with its seq, in order");
    }
}

#[test]
fn a_connections_requests_in_one_batch_go_to_the_replica_together() {
    use hubbub_proto::chat::{ChatFrame, RoomState};
    use hubbub_ring::room_key;
    let ids: Vec<NodeId> = ["a", "b", "c"].iter().map(|n| NodeId::from_name(n)).collect();
    let ring = Ring::new(ids.iter().copied());
    let order = ring.preference_order(&room_key("r0"));
    let me = order[0];
    let wire: Wire = Default::default();
    let mut core = Core::new(me, CoreLimits::default(), Box::new(SimPeers { me, wire: wire.clone() }));
    core.on_view(ring, [], 0);
    let state = RoomState { next_seq: 1, nodes: vec![], history: vec![], released: 0, pending: vec![], term: 1 };
    core.on_frame(order[1], ChatFrame::Handoff { room: "r0".into(), state }, 1);
    let sink = Arc::new(Recorder::default());
    core.connect(1, "ann", sink.clone(), 1);
    core.join(1, "r0", None, 1);
    let replicates = |wire: &Wire| -> Vec<usize> {
        take_chat_frames(wire)
            .into_iter()
            .filter_map(|(_, frame)| match frame {
                ChatFrame::Replicate { entries, .. } => Some(entries.len()),
                _ => None,
            })
            .collect()
    };
    replicates(&wire);
    // One at a time: a Replicate each.
    for i in 0..3 {
        core.send(1, "r0", format!("one {i}"), &format!("a{i}"), 2);
    }
    assert_eq!(replicates(&wire), vec![1, 1, 1]);
    // In one batch: one Replicate with all five.
    core.begin_batch();
    for i in 0..5 {
        core.send(1, "r0", format!("batch {i}"), &format!("b{i}"), 3);
    }
    assert!(replicates(&wire).is_empty(), "nothing goes to the replica before the batch ends");
    core.end_batch(3);
    assert_eq!(replicates(&wire), vec![5]);
}
