//! Tests of the public API: pinned outputs, ordering properties, balance and
//! movement on membership changes. One binary with modules for a fast link.

mod distribution;
mod golden;
mod properties;

use hubbub_ring::{NodeId, Ring};

/// `NodeId::from_name("node-0")` .. `NodeId::from_name("node-{n-1}")`.
fn named_nodes(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| NodeId::from_name(&format!("node-{i}"))).collect()
}

/// The keys `room:0` .. `room:{count-1}`.
fn room_keys(count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|i| hubbub_ring::room_key(&i.to_string())).collect()
}

fn owners(ring: &Ring, keys: &[Vec<u8>]) -> Vec<NodeId> {
    keys.iter().map(|key| ring.owner(key).expect("ring is not empty")).collect()
}
