//! The identity a node gossips through SWIM.
//!
//! foca treats the identity as the member's metadata and compares it whole, so
//! it holds only what never changes while a process lives: the stable node id,
//! the name it comes from, the three addresses peers need, and a `bump` that
//! orders incarnations of the same node. Everything that changes (load,
//! connection count, draining) lives in chitchat instead.
//!
//! foca's `Addr` is the [`NodeId`]: two identities with the same id are the same
//! node, and the one with the larger `bump` wins. So a restarted process (new
//! bump: its start time in milliseconds) replaces its old incarnation at once,
//! and a node wrongly declared down renews itself (`bump + 1`) and rejoins.
//! The ring is keyed by the `NodeId`, so neither moves a room.

use std::fmt;
use std::net::SocketAddr;

use hubbub_ring::NodeId;
use serde::{Deserialize, Serialize};

/// Longest node name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A member of the SWIM cluster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Stable id, `NodeId::from_name(name)`.
    pub id: NodeId,
    /// Unique node name (`--name`).
    pub name: String,
    /// Advertised SWIM (foca) UDP address.
    pub gossip: SocketAddr,
    /// Advertised node-state (chitchat) UDP address.
    pub state: SocketAddr,
    /// Advertised HTTP/WebSocket address, used for node links.
    pub http: SocketAddr,
    /// Orders incarnations of the same node: start time in ms, +1 per renewal.
    pub bump: u64,
    /// The process's start time in ms: the same across renewals, new on a
    /// restart. It is the generation of the node's chitchat state.
    pub generation: u64,
}

impl NodeIdentity {
    /// A fresh identity for a process starting now.
    pub fn new(name: &str, gossip: SocketAddr, state: SocketAddr, http: SocketAddr) -> Self {
        let bump = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        NodeIdentity { id: NodeId::from_name(name), name: name.to_owned(), gossip, state, http, bump, generation: bump }
    }

    /// Whether the name is acceptable: 1–64 bytes of `[A-Za-z0-9._-]`.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}@{}", self.name, self.bump, self.gossip)
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity { bump: self.bump.wrapping_add(1), ..self.clone() })
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id(name: &str) -> NodeIdentity {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        NodeIdentity::new(name, a, a, a)
    }

    #[test]
    fn renewal_wins_and_keeps_the_node_id() {
        let old = id("n1");
        let new = old.renew().unwrap();
        assert_eq!(old.addr(), new.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn names_are_checked() {
        assert!(NodeIdentity::valid_name("node-1.eu_west"));
        assert!(!NodeIdentity::valid_name(""));
        assert!(!NodeIdentity::valid_name("bad name"));
        assert!(!NodeIdentity::valid_name(&"x".repeat(65)));
    }

    #[test]
    fn identity_is_compact() {
        let bytes = postcard::to_allocvec(&id("a-node-with-a-longish-name-01")).unwrap();
        assert!(bytes.len() < 100, "identity is {} bytes", bytes.len());
    }
}
