//! A set of nodes started together: `n1` is the seed of the others.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::MemberState;
use crate::node::{Node, NodeOpts};
use crate::wait::wait_until;

/// How often convergence is polled.
const CONVERGENCE_POLL: Duration = Duration::from_millis(50);

/// Nodes `n1..nN` sharing one cluster key. Dropping it kills them all.
pub struct Cluster {
    key: String,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `n` nodes with a fresh random key, one after the other: `n1`
    /// without seeds, the others seeded to `n1`'s gossip address.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with_key(n, &random_key())
    }

    /// [`Cluster::start`] with a given cluster key.
    pub fn start_with_key(n: usize, key: &str) -> Cluster {
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for i in 1..=n {
            let mut opts = NodeOpts::new(&format!("n{i}"), key);
            if let Some(seed) = nodes.first() {
                opts.seeds = vec![seed.gossip_addr()];
            }
            nodes.push(Node::spawn(opts));
        }
        Cluster { key: key.to_owned(), nodes }
    }

    /// The cluster key every node was started with.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// All nodes, in start order (stopped and killed ones included).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// All node names, in start order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name().to_owned()).collect()
    }

    /// The node named `name`; panics if there is none.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name() == name).unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// The node named `name`, mutably; panics if there is none.
    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name() == name).unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// Names of the nodes whose process is still running (a SIGSTOPped
    /// node is running).
    pub fn running(&mut self) -> Vec<String> {
        self.nodes.iter_mut().filter_map(|n| n.is_running().then(|| n.name().to_owned())).collect()
    }

    /// Starts a new process for `name` (SIGKILLing the old one if it still
    /// runs), seeded to the gossip addresses of all other running nodes.
    pub fn restart(&mut self, name: &str) -> &Node {
        let index = self.nodes.iter().position(|n| n.name() == name).unwrap_or_else(|| panic!("no node named {name}"));
        self.nodes[index].kill9();
        let mut opts = NodeOpts::new(name, &self.key);
        opts.seeds = self
            .nodes
            .iter_mut()
            .filter(|n| n.name() != name)
            .filter_map(|n| n.is_running().then(|| n.gossip_addr()))
            .collect();
        self.nodes[index] = Node::spawn(opts);
        &self.nodes[index]
    }

    /// Ok with the common ring fingerprint when every node in `names`
    /// reports exactly `names` as alive (none suspect) and has exactly
    /// `names` in its ring, and all those rings have the same fingerprint.
    pub fn check_converged(&self, names: &[String]) -> Result<String, String> {
        let mut expected = names.to_vec();
        expected.sort();
        let mut fingerprints: Vec<(String, String)> = Vec::new();
        for name in &expected {
            let node = self.node(name);
            let members = node.api().members()?;
            let mut alive: Vec<String> =
                members.members.iter().filter(|m| m.state == MemberState::Alive).map(|m| m.name.clone()).collect();
            alive.sort();
            if alive != expected || members.active_names() != expected {
                return Err(format!(
                    "{name} sees alive {alive:?}, alive+suspect {:?}; expected {expected:?}",
                    members.active_names()
                ));
            }
            let ring = node.api().ring()?;
            if ring.names() != expected {
                return Err(format!("{name}'s ring has {:?}; expected {expected:?}", ring.names()));
            }
            fingerprints.push((name.clone(), ring.fingerprint));
        }
        let first = &fingerprints[0].1;
        if fingerprints.iter().any(|(_, f)| f != first) {
            return Err(format!("ring fingerprints differ: {fingerprints:?}"));
        }
        Ok(first.clone())
    }

    /// Waits until the running nodes have converged (see
    /// [`check_converged`](Self::check_converged)) and returns how long it
    /// took.
    pub fn wait_converged(&mut self, timeout: Duration) -> Result<Duration, String> {
        let names = self.running();
        let start = Instant::now();
        wait_until(start + timeout, CONVERGENCE_POLL, || self.check_converged(&names))?;
        Ok(start.elapsed())
    }
}

/// A random 64-hex-digit cluster key.
pub fn random_key() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (0..4u64)
        .map(|i| {
            // RandomState is seeded from the OS; enough for a test key.
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u128(nanos);
            hasher.write_u64(i);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}
