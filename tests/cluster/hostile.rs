//! Hostile and foreign traffic on the gossip ports: garbage, forged
//! envelopes, unsealed but well-formed foca packets, and a node with the
//! wrong cluster key. None of it may change anyone's membership.

use std::net::{SocketAddr, UdpSocket};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foca::{AccumulatingRuntime, Foca, Member, PostcardCodec, State};
use hubbub_cluster::NodeIdentity;
use hubbub_ring::NodeId;
use hubbub_testkit::{Cluster, MemberInfo, MemberState, MembersView, Node, NodeApi, NodeOpts, random_key, wait_until};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::observe::{StopOnDrop, apis};

const SETUP_CONVERGENCE: Duration = Duration::from_secs(15);
/// Name of the stranger the forged foca packets announce.
const INTRUDER: &str = "intruder";

#[test]
fn garbage_and_unsealed_packets() {
    const FLOOD_FOR: Duration = Duration::from_secs(5);
    /// Packets per second, both ports together.
    const RATE: u64 = 1000;
    const BATCH_EVERY: Duration = Duration::from_millis(10);
    /// Loopback UDP may drop a few datagrams under load.
    const MIN_COUNTED: f64 = 0.9;

    let mut cluster = Cluster::start(3);
    cluster.wait_converged(SETUP_CONVERGENCE).expect("3 nodes converge");
    let real: Vec<(String, String)> =
        cluster.nodes().iter().map(|n| (n.name().to_owned(), n.node_id().to_owned())).collect();
    let target = cluster.node("n2");
    let (gossip_port, state_port) = (target.gossip_addr(), target.state_addr());

    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let view = target.api().members().expect("n2's members");
    let identities = |name: &str| identity(&view, name);
    let foca_packets = unsealed_foca_packets(
        &identities("n1"),
        &identities("n2"),
        &identities("n3"),
        socket.local_addr().expect("local addr"),
    );
    println!("garbage_and_unsealed_packets: {} distinct unsealed foca packets", foca_packets.len());

    let before = target.api().node_info().expect("n2's counters");
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    println!("garbage_and_unsealed_packets: rng seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let observers = apis(cluster.nodes());
    let target_api = target.api().clone();
    let stop = AtomicBool::new(false);
    let violations = Mutex::new(Vec::new());
    let started = Instant::now();
    let (sent, suspects) = thread::scope(|scope| {
        let monitor = scope.spawn(|| {
            let mut suspects = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (name, api) in &observers {
                    match membership_intact(api, &real) {
                        Ok(suspect) => suspects.extend(suspect),
                        Err(why) => violations
                            .lock()
                            .unwrap()
                            .push(format!("{:.2}s {name}: {why}", started.elapsed().as_secs_f64())),
                    }
                }
                if let Err(why) = target_api.live() {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("{:.2}s n2 not live: {why}", started.elapsed().as_secs_f64()));
                }
                thread::sleep(Duration::from_millis(100));
            }
            suspects
        });
        let stop_monitor = StopOnDrop(&stop);

        let mut sent = Sent::default();
        let per_batch = RATE * BATCH_EVERY.as_millis() as u64 / 1000;
        let mut next_batch = Instant::now();
        while started.elapsed() < FLOOD_FOR {
            for _ in 0..per_batch {
                // One packet in ten goes to the chitchat port.
                let to_state = sent.total() % 10 == 9;
                let kind = rng.random_range(0..10);
                let packet = match kind {
                    0..4 => garbage(&mut rng),
                    4..7 => forged_envelope(&mut rng),
                    _ if to_state => forged_envelope(&mut rng),
                    _ => foca_packets[rng.random_range(0..foca_packets.len())].clone(),
                };
                let to = if to_state { state_port } else { gossip_port };
                if socket.send_to(&packet, to).is_ok() {
                    sent.count(to_state, kind);
                }
            }
            // Pacing keeps the rate bounded; it does not wait for a condition.
            next_batch += BATCH_EVERY;
            thread::sleep(next_batch.saturating_duration_since(Instant::now()));
        }
        drop(stop_monitor);
        (sent, monitor.join().expect("monitor panicked"))
    });
    println!(
        "garbage_and_unsealed_packets: sent {} to the gossip port ({} garbage, {} forged envelopes, {} foca) and {} to the state port in {:.2}s",
        sent.gossip,
        sent.garbage,
        sent.envelopes,
        sent.foca,
        sent.state,
        started.elapsed().as_secs_f64()
    );
    if !suspects.is_empty() {
        println!("garbage_and_unsealed_packets: note: suspect during the flood: {suspects:?}");
    }
    let violations = violations.into_inner().unwrap();
    assert!(violations.is_empty(), "membership changed under hostile traffic:\n{}", violations.join("\n"));

    // Counting may lag the flood a little.
    let expect_gossip = (sent.gossip as f64 * MIN_COUNTED) as u64;
    let expect_state = (sent.state as f64 * MIN_COUNTED) as u64;
    let counted = wait_until(Instant::now() + Duration::from_secs(10), Duration::from_millis(100), || {
        let now = target_api.node_info()?;
        let gossip = now.counter("gossip_rejected")? - before.counter("gossip_rejected")?;
        let state = now.counter("state_rejected")? - before.counter("state_rejected")?;
        if gossip >= expect_gossip && state >= expect_state {
            Ok((gossip, state, now))
        } else {
            Err(format!(
                "n2 counted {gossip}/{} rejected on the gossip port (need {expect_gossip}), {state}/{} on the state port (need {expect_state})",
                sent.gossip, sent.state
            ))
        }
    });
    let after = target_api.node_info().expect("n2's counters");
    let delta = |name: &str| after.counter(name).unwrap_or(0) as i64 - before.counter(name).unwrap_or(0) as i64;
    println!(
        "garbage_and_unsealed_packets: n2 counters delta: gossip_rejected={} state_rejected={} gossip_malformed={} gossip_packets_received={}",
        delta("gossip_rejected"),
        delta("state_rejected"),
        delta("gossip_malformed"),
        delta("gossip_packets_received")
    );
    counted.expect("n2 counted the hostile packets as rejected");

    cluster.wait_converged(SETUP_CONVERGENCE).expect("all 3 alive after the flood");
    for (name, api) in &observers {
        membership_intact(api, &real).unwrap_or_else(|e| panic!("after the flood, {name}: {e}"));
    }
}

/// Ok (with the names seen as suspect) when `api`'s node lists exactly the
/// `real` (name, node id) pairs, none of them down, and nothing else.
fn membership_intact(api: &NodeApi, real: &[(String, String)]) -> Result<Vec<String>, String> {
    let members = api.members()?;
    let strangers: Vec<&MemberInfo> =
        members.members.iter().filter(|m| !real.iter().any(|(name, id)| *name == m.name && *id == m.node_id)).collect();
    if !strangers.is_empty() {
        return Err(format!("unknown members listed: {strangers:?}"));
    }
    let mut suspect = Vec::new();
    for (name, _) in real {
        let states: Vec<MemberState> = members.named(name).map(|m| m.state).collect();
        match states.as_slice() {
            [MemberState::Alive] => {}
            [MemberState::Suspect] => suspect.push(format!("{}:{name}", members.self_name)),
            _ => return Err(format!("lists {name} as {states:?}")),
        }
    }
    Ok(suspect)
}

/// The SWIM identity of `name` as another node lists it.
fn identity(view: &MembersView, name: &str) -> NodeIdentity {
    let m = view.named(name).next().unwrap_or_else(|| panic!("{name} is not listed: {view:?}"));
    NodeIdentity {
        id: m.node_id.parse::<NodeId>().expect("node_id is 16 hex digits"),
        name: m.name.clone(),
        gossip: m.gossip_addr,
        state: m.state_addr,
        http: m.http_addr,
        bump: m.bump,
        // Equal to the bump until a renewal; these tests renew nothing.
        generation: m.bump,
    }
}

/// Well-formed foca packets (what foca itself sends with `PostcardCodec`),
/// without the envelope: a stranger announcing itself to n2, the stranger
/// gossiping that n3 is down, and a forged n1 gossiping that n3 is down.
fn unsealed_foca_packets(n1: &NodeIdentity, n2: &NodeIdentity, n3: &NodeIdentity, ours: SocketAddr) -> Vec<Vec<u8>> {
    let config = foca::Config::new_lan(NonZeroU32::new(4).expect("non-zero"));
    let intruder = NodeIdentity {
        id: NodeId(0x0bad_0bad_0bad_0bad),
        name: INTRUDER.to_owned(),
        gossip: ours,
        state: ours,
        http: ours,
        bump: 1,
        generation: 1,
    };
    let mut runtime = AccumulatingRuntime::new();

    let mut stranger = Foca::new(intruder, config.clone(), StdRng::seed_from_u64(1), PostcardCodec);
    stranger.announce(n2.clone(), &mut runtime).expect("announce");
    let n3_down = || [Member::alive(n2.clone()), Member::down(n3.clone())].into_iter();
    stranger.apply_many(n3_down(), true, &mut runtime).expect("apply");
    stranger.gossip(&mut runtime).expect("gossip");

    let mut forged_n1 = Foca::new(n1.clone(), config.clone(), StdRng::seed_from_u64(2), PostcardCodec);
    forged_n1.apply_many(n3_down(), true, &mut runtime).expect("apply");
    forged_n1.gossip(&mut runtime).expect("gossip");

    let mut packets = Vec::new();
    while let Some((to, bytes)) = runtime.to_send() {
        assert_eq!(to.name, n2.name, "foca addressed a packet to {to:?}");
        packets.push(bytes.to_vec());
    }
    assert!(packets.len() >= 3, "foca produced only {} packets", packets.len());
    assert_harmful_if_unsealed(&packets, n2, config);
    packets
}

/// Feeds `packets` to a bare foca playing n2, to show they are well formed
/// and would do harm to a node that skipped the envelope: the stranger
/// joins and n3 is declared down.
fn assert_harmful_if_unsealed(packets: &[Vec<u8>], n2: &NodeIdentity, config: foca::Config) {
    let mut victim = Foca::new(n2.clone(), config, StdRng::seed_from_u64(3), PostcardCodec);
    let mut runtime = AccumulatingRuntime::new();
    for packet in packets {
        victim.handle_data(packet, &mut runtime).expect("foca accepts its own packets");
    }
    let state_of = |name: &str| victim.iter_membership_state().find(|m| m.id().name == name).map(|m| m.state());
    assert_eq!(state_of(INTRUDER), Some(State::Alive), "the stranger's announce works unsealed");
    assert_eq!(state_of("n3"), Some(State::Down), "the forged n3-down gossip works unsealed");
}

/// Random bytes, 0 to 1400 of them.
fn garbage(rng: &mut StdRng) -> Vec<u8> {
    let mut packet = vec![0; rng.random_range(0..=1400)];
    rng.fill(&mut packet[..]);
    packet
}

/// `version=1 | key_id(4) | nonce(12) | ciphertext+tag`, all random.
fn forged_envelope(rng: &mut StdRng) -> Vec<u8> {
    let mut packet = vec![0; 1 + 4 + 12 + rng.random_range(16..=1200)];
    rng.fill(&mut packet[..]);
    packet[0] = 1;
    packet
}

#[derive(Default)]
struct Sent {
    gossip: u64,
    state: u64,
    garbage: u64,
    envelopes: u64,
    foca: u64,
}

impl Sent {
    fn total(&self) -> u64 {
        self.gossip + self.state
    }

    fn count(&mut self, to_state: bool, kind: u32) {
        if to_state {
            self.state += 1;
            return;
        }
        self.gossip += 1;
        match kind {
            0..4 => self.garbage += 1,
            4..7 => self.envelopes += 1,
            _ => self.foca += 1,
        }
    }
}

#[test]
fn wrong_cluster_key() {
    const WATCH_FOR: Duration = Duration::from_secs(5);

    let mut cluster = Cluster::start(3);
    cluster.wait_converged(SETUP_CONVERGENCE).expect("3 nodes converge");
    let seed = cluster.node("n1");
    let rejected = || seed.api().node_info().and_then(|info| info.counter("gossip_rejected"));
    let before = rejected().expect("n1's counters");

    let mut opts = NodeOpts::new("n4", &random_key());
    opts.seeds = vec![seed.gossip_addr()];
    let outsider = Node::spawn(opts);
    let refused = wait_until(Instant::now() + SETUP_CONVERGENCE, Duration::from_millis(50), || match rejected()? {
        n if n > before => Ok(n - before),
        _ => Err("n1 has rejected nothing yet".to_owned()),
    })
    .expect("n1 receives and refuses the outsider's packets");
    println!(
        "wrong_cluster_key: n1 rejected {refused} packet(s) {:.2}s after the outsider started",
        outsider.started_at().elapsed().as_secs_f64()
    );

    let insiders = apis(cluster.nodes());
    let watch_until = Instant::now() + WATCH_FOR;
    let mut polls = 0;
    while Instant::now() < watch_until {
        for (name, api) in &insiders {
            let members = api.members().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                !members.members.iter().any(|m| m.name == "n4" || m.node_id == outsider.node_id()),
                "{name} lists the outsider: {members:?}"
            );
            assert_eq!(members.active_names(), ["n1", "n2", "n3"], "{name}'s members changed");
        }
        let own = outsider.api().members().expect("the outsider's members");
        assert!(
            own.members.len() == 1 && own.members[0].is_self && own.members[0].name == "n4",
            "the outsider lists others: {own:?}"
        );
        polls += 1;
        thread::sleep(Duration::from_millis(100));
    }
    println!("wrong_cluster_key: {polls} clean polls over {WATCH_FOR:?}");

    let (status, body) = outsider.api().ready().expect("the outsider's /healthz/ready");
    assert_eq!((status, body["status"].as_str()), (503, Some("not_ready")), "outsider never joined: {body}");
    let (status, body) = seed.api().ready().expect("n1's /healthz/ready");
    assert_eq!(status, 200, "n1 is ready: {body}");
}
