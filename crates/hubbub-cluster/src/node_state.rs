//! Node state through chitchat: each node's advertised WebSocket URL,
//! connection count, load, draining flag and version.
//!
//! chitchat is used for state only. Its own liveness opinion (phi accrual) is
//! ignored: the cluster view reads the states of the members foca says are
//! alive. chitchat learns its peers from foca, too: when foca reports a member,
//! we ask chitchat to gossip with that member's state address.
//!
//! Why chitchat 0.11 and not 0.13: 0.12 and 0.13 made message
//! (de)serialization crate-private (chitchat #207), so a custom `Transport`
//! cannot seal their datagrams; 0.11.0 still exposes `Serializable` and
//! `Deserializable` for `ChitchatMessage`, and [`SealedTransport`] seals every
//! datagram with the cluster keyring exactly like SWIM's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, ChitchatMessage, Deserializable, FailureDetectorConfig, Serializable,
};
use serde::Serialize;
use tokio::net::UdpSocket;
use tracing::debug;

use crate::counters::{Counters, bump};
use crate::seal::Keyring;

/// chitchat keys this node publishes.
pub mod keys {
    pub const WS_URL: &str = "ws_url";
    pub const CONNECTIONS: &str = "connections";
    pub const LOAD: &str = "load";
    pub const DRAINING: &str = "draining";
    pub const VERSION: &str = "version";
}

/// A node's dynamic state, as gossiped.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeStatus {
    /// WebSocket URL clients should use for this node.
    pub ws_url: String,
    /// Open client connections.
    pub connections: u64,
    /// Load figure in [0, 1] (share of the node's capacity in use).
    pub load: f64,
    /// The node is draining: clients should move away, rooms are handed off.
    pub draining: bool,
    /// Build version.
    pub version: String,
}

impl NodeStatus {
    fn from_state(state: &chitchat::NodeState) -> Option<NodeStatus> {
        Some(NodeStatus {
            ws_url: state.get(keys::WS_URL)?.to_owned(),
            connections: state.get(keys::CONNECTIONS).and_then(|v| v.parse().ok()).unwrap_or(0),
            load: state.get(keys::LOAD).and_then(|v| v.parse().ok()).unwrap_or(0.0),
            draining: state.get(keys::DRAINING) == Some("true"),
            version: state.get(keys::VERSION).unwrap_or("").to_owned(),
        })
    }
}

/// A chitchat transport over one pre-bound UDP socket that seals every datagram.
pub(crate) struct SealedTransport {
    socket: Mutex<Option<UdpSocket>>,
    keyring: Arc<Keyring>,
    counters: Arc<Counters>,
}

impl SealedTransport {
    pub(crate) fn new(socket: UdpSocket, keyring: Arc<Keyring>, counters: Arc<Counters>) -> Self {
        SealedTransport { socket: Mutex::new(Some(socket)), keyring, counters }
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self
            .socket
            .lock()
            .expect("transport mutex poisoned")
            .take()
            .ok_or_else(|| anyhow::anyhow!("the node-state socket was already opened"))?;
        Ok(Box::new(SealedSocket {
            socket,
            keyring: self.keyring.clone(),
            counters: self.counters.clone(),
            buf: vec![0u8; 65_536],
            plain: Vec::with_capacity(1_500),
        }))
    }
}

struct SealedSocket {
    socket: UdpSocket,
    keyring: Arc<Keyring>,
    counters: Arc<Counters>,
    buf: Vec<u8>,
    plain: Vec<u8>,
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.plain.clear();
        msg.serialize(&mut self.plain);
        let packet = self.keyring.seal(&self.plain);
        // A failed send (peer gone, datagram too large) must not stop
        // chitchat's loop: log it and carry on, as chitchat's own UDP socket does.
        if let Err(e) = self.socket.send_to(&packet, to).await {
            debug!(%to, error = %e, "node-state send failed");
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "node-state recv error");
                    continue;
                }
            };
            bump(&self.counters.state_packets_received);
            let plain = match self.keyring.open(&self.buf[..len]) {
                Ok(p) => p,
                Err(e) => {
                    bump(&self.counters.state_rejected);
                    debug!(%from, error = %e, "dropped a node-state packet that did not open");
                    continue;
                }
            };
            match ChitchatMessage::deserialize(&mut plain.as_slice()) {
                Ok(msg) => return Ok((from, msg)),
                Err(e) => {
                    bump(&self.counters.state_malformed);
                    debug!(%from, error = %e, "undecodable node-state message");
                }
            }
        }
    }
}

/// The running node-state gossip.
pub(crate) struct NodeStateGossip {
    handle: ChitchatHandle,
}

impl NodeStateGossip {
    pub(crate) async fn spawn(
        name: &str,
        generation: u64,
        advertise: SocketAddr,
        cluster: &str,
        interval: Duration,
        transport: SealedTransport,
        initial: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let failure_detector_config = FailureDetectorConfig {
            // Forget the state of nodes gone for 10 minutes (chitchat's 24 h
            // default would keep every restarted generation for a day).
            dead_node_grace_period: Duration::from_secs(600),
            ..FailureDetectorConfig::default()
        };
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(name.to_owned(), generation, advertise),
            cluster_id: cluster.to_owned(),
            gossip_interval: interval,
            listen_addr: advertise,
            // Peers come from foca (see `gossip_with`), not from a seed list.
            seed_nodes: Vec::new(),
            failure_detector_config,
            marked_for_deletion_grace_period: Duration::from_secs(3_600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let handle = chitchat::spawn_chitchat(config, initial, &transport).await?;
        Ok(NodeStateGossip { handle })
    }

    /// Starts a gossip round with the node-state socket at `addr`.
    pub(crate) fn gossip_with(&self, addr: SocketAddr) {
        let _ = self.handle.gossip(addr);
    }

    /// Sets keys of this node's own state.
    pub(crate) async fn set(&self, kvs: &[(&str, String)]) {
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        let state = guard.self_node_state();
        for (k, v) in kvs {
            if state.get(k) != Some(v.as_str()) {
                state.set(*k, v);
            }
        }
    }

    /// The latest state of every node, by name (the newest generation wins).
    pub(crate) async fn snapshot(&self) -> HashMap<String, (u64, NodeStatus)> {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let mut out: HashMap<String, (u64, NodeStatus)> = HashMap::new();
        for (id, state) in guard.node_states() {
            let Some(status) = NodeStatus::from_state(state) else { continue };
            let newer = out.get(&*id.node_id).is_none_or(|(g, _)| *g < id.generation_id);
            if newer {
                out.insert(id.node_id.to_string(), (id.generation_id, status));
            }
        }
        out
    }

    /// Asks chitchat's task to stop (it does not wait for it).
    pub(crate) fn shutdown(&self) {
        let _ = self.handle.initiate_shutdown();
    }
}
