//! One node of five cut off from the others for 20 s (network namespaces
//! and iptables, `hubbub_testkit::netns`): while cut off it acks nothing,
//! the majority keeps acking, and after the heal it rejoins and every client
//! ends with one consistent history.

use std::time::{Duration, Instant};

use hubbub_testkit::chaos::Event;
use hubbub_testkit::netns::NetCluster;
use hubbub_testkit::wait_until;

use crate::load::{Load, POLL, Spec, runtime};
use crate::verdict::{assert_clean, report};

/// How long the node stays cut off.
const CUT: Duration = Duration::from_secs(20);
/// Acks that arrive within this long after the cut may have been complete
/// before it (frames in flight, the client task reading late).
const IN_FLIGHT: Duration = Duration::from_millis(250);

#[test]
fn partition_one_of_five() {
    let run = "partition_one_of_five";
    let mut net = NetCluster::start(5, &[]);
    let all = [1, 2, 3, 4, 5];
    let converged = net.wait_rings(&all, Duration::from_secs(30)).expect("the 5 namespaced nodes converge");
    for k in all {
        wait_until(Instant::now() + Duration::from_secs(30), POLL, || match net.node(k).api().ready()? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("n{k}: /healthz/ready {status}: {body}")),
        })
        .expect("every node gets ready");
    }
    println!("{run}: 5 nodes in namespaces on {}.0/24 converged in {} ms", net.subnet(), converged.as_millis());
    let rt = runtime();
    let spec = Spec {
        urls: all.iter().map(|k| net.ws_url(*k)).collect(),
        clients: 200,
        rooms: (0..20).map(|i| format!("part-{i}")).collect(),
        second_room_every: 2,
        rate: 100.0,
        prefix: "p".to_owned(),
    };
    let load = Load::start(&rt, spec);
    load.wait_acks(300, Duration::from_secs(30), "before the partition");

    let cut_k = 5;
    let cut_url = net.ws_url(cut_k);
    let on_cut = load.clients_on(&cut_url).len();
    let cut_at = Instant::now();
    net.partition(cut_k);
    let majority = [1, 2, 3, 4];
    let majority_ring = net.wait_rings(&majority, CUT);
    let acked_at_cut = load.acked();
    // The majority keeps acking while the node is cut off.
    let flowed = load.wait_acks(200, CUT, "on the majority during the partition");
    let left_cut = wait_until(cut_at + CUT, POLL, || {
        let n = load.clients_on(&cut_url).len();
        if n == 0 { Ok(cut_at.elapsed()) } else { Err(format!("{n} clients still on the cut-off node")) }
    });
    if let Some(rest) = (cut_at + CUT).checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    let acked_during = load.acked() - acked_at_cut;
    let healed_at = Instant::now();
    net.heal(cut_k);
    let rejoined = net.wait_rings(&all, Duration::from_secs(60));
    load.wait_acks(200, Duration::from_secs(30), "after the heal");

    let mut history = load.finish(&rt);
    history.fault(cut_at, "partition n5");
    history.fault(healed_at, "heal n5");
    let cut_acks: Vec<String> = history
        .records
        .iter()
        .filter(|r| r.at > cut_at + IN_FLIGHT && r.at < healed_at)
        .filter_map(|r| match &r.event {
            Event::Acked { client, room, seq, node, .. } if *node == cut_url => {
                Some(format!("{client}: {room}#{seq} at +{} ms", r.at.duration_since(cut_at).as_millis()))
            }
            _ => None,
        })
        .collect();
    println!(
        "{run}: {on_cut} clients on n5 at the cut; majority ring without n5 after {:?}; 200 majority acks within {} ms; \
         {acked_during} acks during the cut; n5's clients all elsewhere after {:?}; acks through n5 while cut: {}; \
         ring of 5 again {:?} after the heal",
        majority_ring.as_ref().map(Duration::as_millis),
        flowed.as_millis(),
        left_cut.as_ref().map(Duration::as_millis),
        cut_acks.len(),
        rejoined.as_ref().map(Duration::as_millis),
    );
    let verdict = report(run, &history, None);
    assert!(
        cut_acks.is_empty(),
        "{run}: the cut-off node acked {} sends, e.g. {:?}",
        cut_acks.len(),
        &cut_acks[..cut_acks.len().min(5)]
    );
    majority_ring.unwrap_or_else(|e| panic!("{run}: the majority did not drop n5 from its ring: {e}"));
    rejoined.unwrap_or_else(|e| panic!("{run}: n5 did not rejoin after the heal: {e}"));
    assert_clean(run, &verdict, None);
    left_cut.unwrap_or_else(|e| panic!("{run}: the cut-off node did not send its clients to the majority: {e}"));
}
