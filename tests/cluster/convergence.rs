//! A fresh cluster agrees on its members and on every key's owners.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use hubbub_testkit::{Cluster, NodeApi, wait_until};

use crate::observe;

/// The requirement: every node sees every other alive this soon after the
/// last node started.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(5);
/// Bounds the 1,000 key queries to one node (a few seconds normally).
const KEY_QUERIES_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--replication-factor`.
const DEFAULT_REPLICATION: u32 = 2;

#[test]
fn convergence_3() {
    convergence(3);
}

#[test]
fn convergence_5() {
    convergence(5);
}

fn convergence(n: usize) {
    let cluster = Cluster::start(n);
    let names = cluster.names();
    let first_started = cluster.nodes()[0].started_at();
    let last_started = cluster.nodes()[n - 1].started_at();

    let fingerprint =
        wait_until(last_started + CONVERGENCE_BOUND, Duration::from_millis(25), || cluster.check_converged(&names))
            .unwrap_or_else(|e| panic!("{n} nodes did not converge within {CONVERGENCE_BOUND:?}: {e}"));
    println!(
        "convergence_{n}: converged {:.2}s after the last start ({:.2}s after the first), fingerprint {fingerprint}",
        last_started.elapsed().as_secs_f64(),
        first_started.elapsed().as_secs_f64()
    );

    // chitchat's node state travels separately from SWIM membership; give
    // it its own, generous, bound.
    let listed: Vec<(String, String)> =
        cluster.nodes().iter().map(|n| (n.name().to_owned(), n.node_id().to_owned())).collect();
    let observers = observe::apis(cluster.nodes());
    wait_until(Instant::now() + Duration::from_secs(10), Duration::from_millis(50), || {
        observers.iter().try_for_each(|(name, api)| node_facts(api, &listed).map_err(|e| format!("{name}: {e}")))
    })
    .unwrap_or_else(|e| panic!("node state, readiness or ring order not as documented: {e}"));
    println!(
        "convergence_{n}: node state everywhere and all ready {:.2}s after the last start",
        last_started.elapsed().as_secs_f64()
    );

    let keys = sample_keys();
    let started = Instant::now();
    // One thread and one keep-alive connection per node.
    let preferences: Vec<(String, Preferences)> = thread::scope(|scope| {
        let workers: Vec<_> = observers
            .iter()
            .map(|(name, api)| {
                let (keys, names) = (&keys, &names);
                (name, scope.spawn(move || preferences_of(api, keys, names)))
            })
            .collect();
        workers
            .into_iter()
            .map(|(name, worker)| {
                let preferences = worker.join().expect("worker panicked");
                (name.clone(), preferences.unwrap_or_else(|e| panic!("asking {name} for preferences: {e}")))
            })
            .collect()
    });
    println!("convergence_{n}: {} keys x {n} nodes answered in {:.2}s", keys.len(), started.elapsed().as_secs_f64());

    // The membership must not have moved while we asked, or a difference
    // would say nothing about the ring.
    let after = cluster.check_converged(&names).expect("still converged after the key queries");
    assert_eq!(after, fingerprint, "ring fingerprint changed during the key queries");

    let (reference_node, reference) = &preferences[0];
    for (node, prefs) in &preferences[1..] {
        let differing: Vec<String> = keys
            .iter()
            .zip(reference.iter().zip(prefs))
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(key, (a, b))| format!("{key}: {reference_node}={a:?} {node}={b:?}"))
            .collect();
        assert!(differing.is_empty(), "nodes disagree on key owners:\n{}", differing.join("\n"));
    }

    let mut owned: BTreeMap<&str, usize> = names.iter().map(|n| (n.as_str(), 0)).collect();
    for preference in reference {
        *owned.get_mut(preference[0].as_str()).expect("owner is a member") += 1;
    }
    println!("convergence_{n}: keys owned per node: {owned:?}");
    // Not a balance test (the ring has its own), only a sign that owners
    // really depend on the key.
    let floor = keys.len() / (4 * n);
    assert!(owned.values().all(|&c| c >= floor), "some node owns fewer than {floor} keys: {owned:?}");
}

/// Ok when the node is ready, its ring lists exactly the `listed` (name,
/// node id) pairs sorted by node id, and it has every member's node state,
/// pointing at that member's own HTTP address.
fn node_facts(api: &NodeApi, listed: &[(String, String)]) -> Result<(), String> {
    let (status, body) = api.ready()?;
    if status != 200 || body["status"] != "ready" {
        return Err(format!("/healthz/ready: {status} {body}"));
    }
    let ring = api.ring()?;
    let in_ring: Vec<(String, String)> = ring.members.iter().map(|m| (m.name.clone(), m.node_id.clone())).collect();
    let mut expected = listed.to_vec();
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    if in_ring != expected {
        return Err(format!("ring members {in_ring:?}, expected {expected:?} (sorted by node id)"));
    }
    for member in api.members()?.members {
        let Some(state) = &member.node_state else {
            return Err(format!("no node state yet for {}", member.name));
        };
        let ws_url = format!("ws://{}/ws", member.http_addr);
        if state["ws_url"] != ws_url.as_str() || !state["draining"].is_boolean() || !state["version"].is_string() {
            return Err(format!("{}'s node state {state} (expected ws_url {ws_url})", member.name));
        }
    }
    Ok(())
}

/// Per key of [`sample_keys`], its preference list.
type Preferences = Vec<Vec<String>>;

/// 800 room keys and 200 user keys.
fn sample_keys() -> Vec<String> {
    (0..800).map(|i| format!("room:r{i}")).chain((0..200).map(|i| format!("user:u{i}"))).collect()
}

/// The preference list of every key, checked to be a permutation of
/// `names`, with the documented replication factor.
fn preferences_of(api: &NodeApi, keys: &[String], names: &[String]) -> Result<Preferences, String> {
    let mut sorted_names = names.to_vec();
    sorted_names.sort();
    let deadline = Instant::now() + KEY_QUERIES_TIMEOUT;
    keys.iter()
        .map(|key| {
            if Instant::now() > deadline {
                return Err(format!("not done after {KEY_QUERIES_TIMEOUT:?}, at {key}"));
            }
            let ring = api.ring_for(key)?;
            if ring.key.as_deref() != Some(key) {
                return Err(format!("asked for {key}, answer is for {:?}", ring.key));
            }
            if ring.replication_factor != DEFAULT_REPLICATION {
                return Err(format!(
                    "replication_factor {} (default is {DEFAULT_REPLICATION})",
                    ring.replication_factor
                ));
            }
            let preference = ring.preference.ok_or_else(|| format!("{key}: no preference"))?;
            let mut members = preference.clone();
            members.sort();
            if members != sorted_names {
                return Err(format!("{key}: preference {preference:?} is not a permutation of {names:?}"));
            }
            Ok(preference)
        })
        .collect()
}
