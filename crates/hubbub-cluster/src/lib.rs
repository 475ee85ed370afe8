//! Hubbub's cluster substrate.
//!
//! A [`Cluster`] is this node's membership in the cluster:
//!
//! - SWIM through foca over UDP decides who is alive ([`membership`]); one task
//!   owns foca, one ordered scheduler delivers its timers ([`timers`]);
//! - chitchat spreads each node's dynamic state ([`node_state`]);
//! - every gossip datagram is sealed with the cluster [`Keyring`] ([`seal`]);
//! - a [`ClusterView`] combines both with the ring and is published on a
//!   `watch` ([`view`]);
//! - [`Links`] keeps one authenticated WebSocket per pair of nodes ([`links`]).
//!
//! Start it with [`Cluster::start`]; leave gracefully with [`Cluster::leave`],
//! then [`Cluster::shutdown`].

pub mod config;
pub mod counters;
pub mod identity;
pub mod links;
pub mod membership;
pub mod node_state;
pub mod seal;
mod timers;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ClusterConfig, MembershipConfig};
pub use counters::CountersSnapshot;
pub use identity::NodeIdentity;
pub use links::Links;
pub use membership::MemberState;
pub use node_state::NodeStatus;
pub use seal::Keyring;
pub use view::{ClusterView, MemberView};

use crate::counters::Counters;
use crate::membership::{Input, MembershipTask};
use crate::node_state::{NodeStateGossip, SealedTransport, keys};

/// Why the cluster layer could not start. Nothing keeps running.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The setting that named the address: `gossip` or `state_gossip`.
        setting: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Membership(#[from] config::MembershipConfigError),
    #[error("node-state gossip: {0}")]
    NodeState(String),
}

/// This node's membership in the cluster. See the crate docs.
pub struct Cluster {
    view: watch::Receiver<Arc<ClusterView>>,
    counters: Arc<Counters>,
    links: Arc<Links>,
    state: Arc<NodeStateGossip>,
    inputs: mpsc::Sender<Input>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    gossip_addr: SocketAddr,
    state_addr: SocketAddr,
    foca_config: foca::Config,
}

async fn bind(setting: &'static str, addr: SocketAddr) -> Result<UdpSocket, StartError> {
    UdpSocket::bind(addr).await.map_err(|source| StartError::Bind { setting, addr, source })
}

impl Cluster {
    /// Binds the gossip sockets and starts every cluster task.
    pub async fn start(config: ClusterConfig) -> Result<Cluster, StartError> {
        let foca_config = config.membership.to_foca()?;
        let gossip_socket = bind("gossip", config.gossip_bind).await?;
        let state_socket = bind("state_gossip", config.state_bind).await?;
        let local = |s: &UdpSocket, setting, bind_addr| {
            s.local_addr().map_err(|source| StartError::Bind { setting, addr: bind_addr, source })
        };
        let gossip_addr =
            SocketAddr::new(config.advertise_ip, local(&gossip_socket, "gossip", config.gossip_bind)?.port());
        let state_addr =
            SocketAddr::new(config.advertise_ip, local(&state_socket, "state_gossip", config.state_bind)?.port());
        let me = NodeIdentity::new(&config.name, gossip_addr, state_addr, config.http_advertise);

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let counters = Arc::new(Counters::default());
        let keyring = Arc::new(config.keyring);
        let gossip_socket = Arc::new(gossip_socket);

        let transport = SealedTransport::new(state_socket, keyring.clone(), counters.clone());
        let initial_state = vec![
            (keys::WS_URL.to_owned(), config.ws_url.clone()),
            (keys::CONNECTIONS.to_owned(), "0".to_owned()),
            (keys::LOAD.to_owned(), "0.000".to_owned()),
            (keys::DRAINING.to_owned(), "false".to_owned()),
            (keys::VERSION.to_owned(), config.version.clone()),
        ];
        let state = NodeStateGossip::spawn(
            &config.name,
            me.generation,
            state_addr,
            keyring.cluster(),
            Duration::from_millis(config.membership.state_gossip_interval_ms.max(1)),
            transport,
            initial_state,
        )
        .await
        .map_err(|e| StartError::NodeState(e.to_string()))?;
        let state = Arc::new(state);

        let (inputs_tx, inputs_rx) = mpsc::channel(1_024);
        let (timer_submit, timer_submit_rx) = mpsc::unbounded_channel();
        let (timer_due_tx, timer_due_rx) = mpsc::channel(256);
        let (membership_task, membership_rx) = MembershipTask::new(
            me.clone(),
            foca_config.clone(),
            gossip_socket.clone(),
            keyring.clone(),
            counters.clone(),
            timer_submit,
            config.seeds.len(),
            Duration::from_millis(config.membership.seed_announce_ms.max(1)),
        );
        tasks.spawn(timers::run(timer_submit_rx, timer_due_tx, shutdown.clone()));
        tasks.spawn(membership_task.run(inputs_rx, timer_due_rx, shutdown.clone()));
        tasks.spawn(membership::receive_loop(
            gossip_socket,
            keyring.clone(),
            counters.clone(),
            inputs_tx.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(membership::resolve_seeds_loop(
            config.seeds.clone(),
            Duration::from_millis(config.membership.seed_resolve_ms.max(1)),
            Duration::from_millis(config.membership.seed_announce_ms.max(1)),
            inputs_tx.clone(),
            shutdown.clone(),
        ));

        let (view_tx, view_rx) = watch::channel(Arc::new(ClusterView::initial(me.clone())));
        tasks.spawn(view::run(membership_rx, state.clone(), view_tx, shutdown.clone()));

        let links =
            Links::new(me.id, me.name.clone(), keyring.clone(), counters.clone(), inputs_tx.clone(), shutdown.clone());
        tasks.spawn(links.clone().dial_loop(view_rx.clone()));

        Ok(Cluster {
            view: view_rx,
            counters,
            links,
            state,
            inputs: inputs_tx,
            shutdown,
            tasks,
            gossip_addr,
            state_addr,
            foca_config,
        })
    }

    /// The latest cluster view; `changed()` wakes on every change.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// Counters for operators.
    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    /// The node links.
    pub fn links(&self) -> &Arc<Links> {
        &self.links
    }

    /// Advertised SWIM address (actual port when bound to port 0).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// Advertised node-state address.
    pub fn state_addr(&self) -> SocketAddr {
        self.state_addr
    }

    /// The foca configuration in force.
    pub fn foca_config(&self) -> &foca::Config {
        &self.foca_config
    }

    /// Publishes this node's connection count and load.
    pub async fn set_status(&self, connections: u64, load: f64) {
        self.state.set(&[(keys::CONNECTIONS, connections.to_string()), (keys::LOAD, format!("{load:.3}"))]).await;
    }

    /// Marks this node draining in its gossiped state: clients and peers
    /// move away from it.
    pub async fn set_draining(&self) {
        self.state.set(&[(keys::DRAINING, "true".to_owned())]).await;
    }

    /// Leaves the SWIM cluster gracefully: peers mark this node down at once
    /// instead of after a failure detection. Marks the node draining first.
    pub async fn leave(&self) {
        self.set_draining().await;
        let (tx, rx) = oneshot::channel();
        if self.inputs.send(Input::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }

    /// Stops every cluster task and waits for them (bounded by `timeout`).
    pub async fn shutdown(&self, timeout: Duration) {
        self.shutdown.cancel();
        self.state.shutdown();
        self.tasks.close();
        let _ = tokio::time::timeout(timeout, self.tasks.wait()).await;
    }
}
