//! Nodes in their own network namespaces, so that a test can cut one off
//! from the others for real (Linux, root).
//!
//! [`NetCluster::start`] creates a bridge and, per node, a namespace joined
//! to the bridge by a veth pair. Node `k` (1-based) gets `10.X.Y.k/24` and
//! listens there on fixed ports (each namespace has its own port space); the
//! host gets `10.X.Y.254` on the bridge, so the test process reaches every
//! node. `X.Y` and the interface names come from the test's PID and a
//! counter, so concurrent runs do not clash.
//!
//! [`NetCluster::partition`] cuts node `k` off from the other nodes with
//! iptables DROP rules inside its namespace (everything from or to
//! `10.X.Y.0/24` except the host address): gossip and node links stop, while
//! the node's own clients, which connect from the host, stay connected and
//! see what a minority node tells them. [`NetCluster::heal`] removes the
//! rules.
//!
//! Docker sets the host's iptables FORWARD policy to DROP, and with
//! `br_netfilter` bridged frames pass through it, so the cluster inserts
//! `FORWARD -i <bridge> -o <bridge> -j ACCEPT`. Everything created (nodes,
//! namespaces, veths, bridge, the FORWARD rule) is removed when the
//! [`NetCluster`] drops, also while a test panics.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::random_key;
use crate::node::{Node, NodeOpts};
use crate::wait::wait_until;

/// Ports every node listens on inside its namespace.
const HTTP_PORT: u16 = 8000;
const GOSSIP_PORT: u16 = 7946;
const STATE_PORT: u16 = 7947;
/// The host's address on the bridge (last octet).
const HOST_OCTET: u8 = 254;

/// Runs a command to its end; Err with its stderr when it fails.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs a command that must succeed; panics otherwise (the caller's guard
/// cleans up what was made so far).
fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("netns setup: {e}");
    }
}

/// What has been created, removed in reverse on drop.
struct Plumbing {
    bridge: Option<String>,
    forward_rule: bool,
    namespaces: Vec<String>,
    host_veths: Vec<String>,
}

impl Drop for Plumbing {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let _ = run(&["ip", "netns", "del", &ns]);
        }
        // Deleting a namespace deletes the veth pair with it; this is for a
        // pair whose peer never made it into its namespace.
        for veth in self.host_veths.drain(..).rev() {
            let _ = run(&["ip", "link", "del", &veth]);
        }
        if let Some(bridge) = self.bridge.take() {
            if self.forward_rule {
                let _ = run(&["iptables", "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"]);
            }
            let _ = run(&["ip", "link", "del", &bridge]);
        }
    }
}

/// One node slot: its namespace and address, and the running node if any.
struct Slot {
    name: String,
    ns: String,
    ip: Ipv4Addr,
    node: Option<Node>,
    cut: bool,
}

/// `n` nodes `n1..nN`, each in its own network namespace on one bridge.
/// Dropping it kills the nodes, then removes the namespaces, veths, bridge
/// and FORWARD rule.
pub struct NetCluster {
    // Field order is drop order: the nodes die before their namespaces go.
    slots: Vec<Slot>,
    key: String,
    subnet: [u8; 3],
    args: Vec<String>,
    plumbing: Plumbing,
}

impl NetCluster {
    /// Creates the network and starts `n` nodes (n1 is everyone's seed),
    /// each with `args` appended.
    pub fn start(n: usize, args: &[&str]) -> NetCluster {
        assert!((1..HOST_OCTET as usize).contains(&n), "1..253 nodes");
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let id = (std::process::id() % 100_000) * 4 + COUNTER.fetch_add(1, Ordering::Relaxed) % 4;
        let subnet = [10, 100 + ((id >> 8) % 100) as u8, (id & 0xff) as u8];
        let tag = format!("hb{id}");
        let mut plumbing =
            Plumbing { bridge: None, forward_rule: false, namespaces: Vec::new(), host_veths: Vec::new() };

        let bridge = format!("{tag}b");
        must(&["ip", "link", "add", &bridge, "type", "bridge"]);
        plumbing.bridge = Some(bridge.clone());
        let host_ip = format!("{}.{}.{}.{HOST_OCTET}/24", subnet[0], subnet[1], subnet[2]);
        must(&["ip", "addr", "add", &host_ip, "dev", &bridge]);
        must(&["ip", "link", "set", &bridge, "up"]);
        must(&["iptables", "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"]);
        plumbing.forward_rule = true;

        let mut slots = Vec::with_capacity(n);
        for k in 1..=n {
            let ns = format!("{tag}n{k}");
            let host_veth = format!("{tag}h{k}");
            let peer = format!("{tag}p{k}");
            must(&["ip", "netns", "add", &ns]);
            plumbing.namespaces.push(ns.clone());
            must(&["ip", "link", "add", &host_veth, "type", "veth", "peer", "name", &peer]);
            plumbing.host_veths.push(host_veth.clone());
            must(&["ip", "link", "set", &peer, "netns", &ns]);
            must(&["ip", "link", "set", &host_veth, "master", &bridge]);
            must(&["ip", "link", "set", &host_veth, "up"]);
            let ip = Ipv4Addr::new(subnet[0], subnet[1], subnet[2], k as u8);
            let cidr = format!("{ip}/24");
            must(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", &peer]);
            must(&["ip", "-n", &ns, "link", "set", &peer, "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            slots.push(Slot { name: format!("n{k}"), ns, ip, node: None, cut: false });
        }

        let mut cluster = NetCluster {
            slots,
            key: random_key(),
            subnet,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            plumbing,
        };
        for k in 1..=n {
            cluster.spawn(k);
        }
        cluster
    }

    /// The nodes' subnet as `10.X.Y`.
    pub fn subnet(&self) -> String {
        format!("{}.{}.{}", self.subnet[0], self.subnet[1], self.subnet[2])
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        self.plumbing.bridge.as_deref().unwrap_or_default()
    }

    /// The cluster key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Number of node slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no node slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot(&self, k: usize) -> &Slot {
        assert!((1..=self.slots.len()).contains(&k), "no node {k}");
        &self.slots[k - 1]
    }

    /// Node `k` (1-based); panics if it is not running.
    pub fn node(&self, k: usize) -> &Node {
        self.slot(k).node.as_ref().unwrap_or_else(|| panic!("node {k} is not running"))
    }

    /// Node `k`, mutably.
    pub fn node_mut(&mut self, k: usize) -> &mut Node {
        self.slots[k - 1].node.as_mut().unwrap_or_else(|| panic!("node {k} is not running"))
    }

    /// Node `k`'s name (`nk`).
    pub fn name(&self, k: usize) -> &str {
        &self.slot(k).name
    }

    /// Node `k`'s namespace.
    pub fn namespace(&self, k: usize) -> &str {
        &self.slot(k).ns
    }

    /// Node `k`'s address.
    pub fn ip(&self, k: usize) -> Ipv4Addr {
        self.slot(k).ip
    }

    /// Node `k`'s client WebSocket URL.
    pub fn ws_url(&self, k: usize) -> String {
        format!("ws://{}:{HTTP_PORT}/ws", self.ip(k))
    }

    /// The SWIM address of node `k`.
    pub fn gossip_addr(&self, k: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip(k), GOSSIP_PORT))
    }

    /// Starts node `k` in its namespace (killing a running one first),
    /// seeded to every other node's gossip address.
    pub fn spawn(&mut self, k: usize) -> &Node {
        if let Some(mut old) = self.slots[k - 1].node.take() {
            old.kill9();
        }
        let slot = self.slot(k);
        let mut opts = NodeOpts::new(&slot.name, &self.key);
        opts.listen = Some(format!("{}:{HTTP_PORT}", slot.ip));
        opts.gossip = Some(format!("{}:{GOSSIP_PORT}", slot.ip));
        opts.state_gossip = Some(format!("{}:{STATE_PORT}", slot.ip));
        opts.seeds = (1..=self.slots.len()).filter(|j| *j != k).map(|j| self.gossip_addr(j)).collect();
        opts.args = self.args.clone();
        let prefix: Vec<String> = ["ip", "netns", "exec", &slot.ns].map(str::to_owned).to_vec();
        let node = Node::spawn_with_prefix(opts, &prefix);
        self.slots[k - 1].node = Some(node);
        self.node(k)
    }

    /// Cuts node `k` off from every other node (its clients on the host
    /// still reach it).
    pub fn partition(&mut self, k: usize) {
        let subnet = format!("{}.0/24", self.subnet());
        let host = format!("{}.{HOST_OCTET}", self.subnet());
        let ns = self.slot(k).ns.clone();
        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            must(&["ip", "netns", "exec", &ns, "iptables", "-A", chain, dir, &host, "-j", "ACCEPT"]);
            must(&["ip", "netns", "exec", &ns, "iptables", "-A", chain, dir, &subnet, "-j", "DROP"]);
        }
        self.slots[k - 1].cut = true;
        if let Some(node) = &self.slots[k - 1].node {
            node.process().note("partitioned from the other nodes");
        }
    }

    /// Undoes [`partition`](Self::partition).
    pub fn heal(&mut self, k: usize) {
        let ns = self.slot(k).ns.clone();
        for chain in ["INPUT", "OUTPUT"] {
            must(&["ip", "netns", "exec", &ns, "iptables", "-F", chain]);
        }
        self.slots[k - 1].cut = false;
        if let Some(node) = &self.slots[k - 1].node {
            node.process().note("partition healed");
        }
    }

    /// Whether node `k` is cut off.
    pub fn is_partitioned(&self, k: usize) -> bool {
        self.slot(k).cut
    }

    /// Waits until every node in `ks` has exactly the nodes `ks` in its
    /// ring, all with one fingerprint; returns how long it took.
    pub fn wait_rings(&self, ks: &[usize], timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let mut names: Vec<String> = ks.iter().map(|k| self.name(*k).to_owned()).collect();
        names.sort();
        wait_until(start + timeout, Duration::from_millis(50), || {
            let mut fingerprints = Vec::new();
            for k in ks {
                let ring = self.node(*k).api().ring()?;
                if ring.names() != names {
                    return Err(format!("{}'s ring has {:?}; expected {names:?}", self.name(*k), ring.names()));
                }
                fingerprints.push(ring.fingerprint);
            }
            if fingerprints.iter().any(|f| *f != fingerprints[0]) {
                return Err(format!("ring fingerprints differ: {fingerprints:?}"));
            }
            Ok(())
        })?;
        Ok(start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plumbing_drop_tolerates_what_was_never_made() {
        // Nothing was created: dropping must not panic or touch anything.
        drop(Plumbing { bridge: None, forward_rule: false, namespaces: Vec::new(), host_veths: Vec::new() });
    }
}
