//! Connection rebalancing: while some node is more than 10 % above or below
//! the mean connection count, each node above the mean asks a bounded share
//! of its clients to move to the least-loaded node (`reconnect {url}`), a
//! little every round, so a node that joins fills up without a reconnect
//! storm.

use hubbub_ring::NodeId;

/// A node as rebalancing sees it (from gossiped node state).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLoad {
    pub id: NodeId,
    pub connections: u64,
    pub ws_url: String,
}

/// Tolerance around the mean before connections move.
pub const TOLERANCE: f64 = 0.10;
/// Largest share of this node's connections asked to move in one round.
pub const MAX_SHARE_PER_ROUND: f64 = 0.05;

/// How many of `me`'s connections to move, and where, this round: `None`
/// when `me` is within the tolerance of the mean (or alone).
pub fn plan(me: NodeId, nodes: &[NodeLoad]) -> Option<(usize, String)> {
    if nodes.len() < 2 {
        return None;
    }
    let mine = nodes.iter().find(|n| n.id == me)?.connections as f64;
    let mean = nodes.iter().map(|n| n.connections as f64).sum::<f64>() / nodes.len() as f64;
    let target = nodes.iter().filter(|n| n.id != me).min_by_key(|n| n.connections)?;
    let target_count = target.connections as f64;
    // Move when this node is too full, or when another is too empty and
    // this one is above the mean.
    let too_full = mine > mean * (1.0 + TOLERANCE);
    let too_empty = target_count < mean * (1.0 - TOLERANCE);
    if !(too_full || too_empty) || mine - mean < 1.0 || target_count >= mean {
        return None;
    }
    // Move at most what brings this node to the mean, what the target can
    // take before reaching it, and a bounded share of this node per round.
    let excess = mine - mean;
    let room = mean - target.connections as f64;
    let cap = (mine * MAX_SHARE_PER_ROUND).max(1.0);
    let n = excess.min(room).min(cap).floor() as usize;
    (n > 0).then(|| (n, target.ws_url.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: u64, connections: u64) -> NodeLoad {
        NodeLoad { id: NodeId(id), connections, ws_url: format!("ws://n{id}/ws") }
    }

    #[test]
    fn balanced_nodes_move_nothing() {
        let nodes = [load(1, 100), load(2, 105), load(3, 96)];
        assert_eq!(plan(NodeId(2), &nodes), None);
    }

    #[test]
    fn a_new_node_is_filled_a_bounded_share_at_a_time() {
        let nodes = [load(1, 1_000), load(2, 1_000), load(3, 1_000), load(4, 0)];
        // Mean 750: node 1 is 33 % above; it moves 5 % of its 1,000 to node 4.
        assert_eq!(plan(NodeId(1), &nodes), Some((50, "ws://n4/ws".to_owned())));
        assert_eq!(plan(NodeId(4), &nodes), None);
    }

    #[test]
    fn the_last_few_connections_still_move() {
        let nodes = [load(1, 13), load(2, 9), load(3, 8)];
        assert_eq!(plan(NodeId(1), &nodes), Some((1, "ws://n3/ws".to_owned())));
    }

    #[test]
    fn rebalancing_converges_within_the_tolerance() {
        let mut counts = [1_000u64, 1_000, 1_000, 1_000, 0];
        for _round in 0..100 {
            let nodes: Vec<NodeLoad> = counts.iter().enumerate().map(|(i, c)| load(i as u64, *c)).collect();
            let mut moves = Vec::new();
            for n in &nodes {
                if let Some((k, url)) = plan(n.id, &nodes) {
                    let to: usize = url.trim_start_matches("ws://n").trim_end_matches("/ws").parse().unwrap();
                    moves.push((n.id.0 as usize, to, k as u64));
                }
            }
            for (from, to, k) in moves {
                counts[from] -= k;
                counts[to] += k;
            }
        }
        let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
        assert!(counts.iter().all(|c| (*c as f64 - mean).abs() <= mean * TOLERANCE), "{counts:?}");
    }
}
