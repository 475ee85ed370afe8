//! The backplane's driver: one [`Core`] behind a mutex, fed by the cluster
//! view (through [`Fencing`]: quorum and delayed ring removal) and a
//! ticker in its own task, and by the node links' readers, which hand the
//! frames that arrived together to the core themselves ([`LinkFrames`]).
//!
//! Every entry point locks the core for a short, non-blocking step: the core
//! only queues frames (link queues, connection queues), it never waits, so
//! no lock is held across an `.await` and a slow peer or client cannot stall
//! another.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hubbub_cluster::{Cluster, Links};
use hubbub_ring::NodeId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::collections::BTreeSet;

use hubbub_ring::Ring;
use tracing::{debug, info, warn};

use crate::core::{Core, CoreLimits, PeerSink};
use crate::quorum::{Fencing, FencingConfig};
use crate::rebalance::{NodeLoad, plan};

/// How often timeouts are checked.
const TICK: Duration = Duration::from_millis(250);
/// Mean interval between rebalancing rounds (jittered ±30 %).
const REBALANCE_EVERY: Duration = Duration::from_secs(1);
/// A client asked to move is not asked again for this long.
const REBALANCE_QUIET_MS: u64 = 10_000;
/// Connections younger than this are not rebalanced (they may have just
/// moved here, from a draining node for instance).
const REBALANCE_MIN_AGE_MS: u64 = 15_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct LinkSink(Arc<Links>);

/// Where the links' readers hand their chat frames: one step of the core
/// per batch, so what the batch sequences goes to the replicas together.
/// Weak, because the core's [`LinkSink`] holds the links, which hold this.
struct LinkFrames(std::sync::Weak<Backplane>);

impl hubbub_cluster::links::ChatHandler for LinkFrames {
    fn handle(&self, from: NodeId, frames: Vec<hubbub_proto::chat::ChatFrame>) {
        let Some(backplane) = self.0.upgrade() else { return };
        let now = now_ms();
        let mut core = backplane.core();
        for frame in frames {
            core.on_frame_in_batch(from, frame, now);
        }
        core.end_batch(now);
    }
}

impl PeerSink for LinkSink {
    fn send(&self, peer: NodeId, frame: Bytes) {
        self.0.send(peer, frame);
    }
}

/// This node's backplane. Cheap to share (`Arc`).
pub struct Backplane {
    core: Mutex<Core>,
}

impl Backplane {
    /// Starts the backplane's tasks on `tasks`; they stop with `shutdown`.
    pub fn start(
        cluster: &Cluster,
        limits: CoreLimits,
        fencing: FencingConfig,
        rebalance: bool,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Backplane> {
        let view = cluster.view();
        let me = view.borrow().me.id;
        let links = cluster.links().clone();
        let backplane =
            Arc::new(Backplane { core: Mutex::new(Core::new(me, limits, Box::new(LinkSink(links.clone())))) });
        links.set_chat_handler(Arc::new(LinkFrames(Arc::downgrade(&backplane))));
        if rebalance {
            tasks.spawn(backplane.clone().rebalance_loop(cluster.view(), shutdown.clone()));
        }
        tasks.spawn(backplane.clone().run(view, fencing, shutdown));
        backplane
    }

    /// Locks the core for one step. Never hold the guard across an `.await`.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().expect("backplane mutex poisoned")
    }

    async fn run(
        self: Arc<Self>,
        mut view: tokio::sync::watch::Receiver<Arc<hubbub_cluster::ClusterView>>,
        fencing: FencingConfig,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        let me = view.borrow().me.id;
        let mut fencing = Fencing::new(me, fencing, now_ms());
        let mut ring = Ring::new([me]);
        let mut had_quorum = true;
        let mut generations: std::collections::HashMap<NodeId, u64> = std::collections::HashMap::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                changed = view.changed() => if changed.is_err() { return },
                _ = tick.tick() => self.core().tick(now_ms()),
            }
            // A view change or a tick: membership, fencing and the ring.
            let current = view.borrow_and_update().clone();
            let now = now_ms();
            let draining: BTreeSet<NodeId> = current
                .active()
                .filter(|m| m.status.as_ref().is_some_and(|s| s.draining))
                .map(|m| m.identity.id)
                .collect();
            fencing.observe(current.active().map(|m| m.identity.id).collect(), &draining, now);
            ring = ring.with_members(fencing.ring_members());
            let quorum = fencing.has_quorum();
            let mut core = self.core();
            for m in current.active().filter(|m| !m.is_self) {
                // A new process (not a renewal of the same one) has none of the
                // replica copies its predecessor had.
                if generations.insert(m.identity.id, m.identity.generation).is_some_and(|g| g != m.identity.generation)
                {
                    info!(member = %m.identity.name, "member restarted: re-syncing its replica copies");
                    core.member_restarted(m.identity.id, now);
                }
            }
            core.set_quorum(quorum);
            core.on_view(ring.clone(), draining.iter().copied(), now);
            if had_quorum && !quorum {
                core.quorum_lost(now);
                // Cut off in a minority: send clients to the nodes this one cannot see.
                let urls: Vec<String> = fencing
                    .stable()
                    .iter()
                    .filter(|id| current.active().all(|m| m.identity.id != **id))
                    .filter_map(|id| current.member(*id))
                    .map(|m| {
                        m.status
                            .as_ref()
                            .map(|s| s.ws_url.clone())
                            .unwrap_or_else(|| format!("ws://{}/ws", m.identity.http))
                    })
                    .collect();
                warn!(
                    seen = current.active().count(),
                    stable = fencing.stable().len(),
                    "lost the majority: refusing sends"
                );
                if !urls.is_empty() {
                    let share = core.connections().div_ceil(urls.len());
                    for url in &urls {
                        core.ask_to_move(share, url, "minority", 0, 0, now);
                    }
                }
            } else if !had_quorum && quorum {
                info!("majority regained");
                core.quorum_regained(now);
            }
            had_quorum = quorum;
        }
    }

    /// Every second or so (jittered), asks a bounded share of this node's
    /// clients to move when connection counts are out of balance
    /// ([`crate::rebalance::plan`]).
    async fn rebalance_loop(
        self: Arc<Self>,
        view: tokio::sync::watch::Receiver<Arc<hubbub_cluster::ClusterView>>,
        shutdown: CancellationToken,
    ) {
        use rand::RngExt;
        let mut last_plan: Option<(usize, String)> = None;
        loop {
            let wait = REBALANCE_EVERY.mul_f64(rand::rng().random_range(0.7..1.3));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let current = view.borrow().clone();
            let mut core = self.core();
            if core.draining || !core.quorum {
                continue;
            }
            // Every count comes from gossiped node state, this node's too,
            // so all are equally stale (a live count against stale ones
            // would look like an imbalance at every start).
            let nodes: Vec<NodeLoad> = current
                .active()
                .filter_map(|m| {
                    let status = m.status.as_ref().filter(|s| !s.draining)?;
                    Some(NodeLoad { id: m.identity.id, connections: status.connections, ws_url: status.ws_url.clone() })
                })
                .collect();
            // Act only on an imbalance seen in two rounds in a row.
            let planned = plan(current.me.id, &nodes);
            if let (Some((n, url)), Some((_, before))) = (&planned, &last_plan)
                && url == before
            {
                let moved = core.ask_to_move(*n, url, "rebalance", REBALANCE_QUIET_MS, REBALANCE_MIN_AGE_MS, now_ms());
                debug!(moved, to = url, "rebalancing connections");
            }
            last_plan = planned;
        }
    }

    /// Moves this node's clients to `urls` (round robin) over `window`, a
    /// share every 250 ms; returns how many were asked.
    pub async fn move_clients(&self, urls: &[String], window: Duration) -> usize {
        if urls.is_empty() {
            return 0;
        }
        let rounds = (window.as_millis() / 250).max(1) as usize;
        let mut asked = 0;
        for round in 0..rounds {
            {
                let mut core = self.core();
                let left = core.connections().saturating_sub(asked);
                let share = left.div_ceil(rounds - round);
                for (i, url) in urls.iter().enumerate() {
                    let part = share / urls.len() + usize::from(i < share % urls.len());
                    asked += core.ask_to_move(part, url, "draining", u64::MAX, 0, now_ms());
                }
                if core.connections() == 0 {
                    return asked;
                }
            }
            tokio::time::sleep(window / rounds as u32).await;
        }
        asked
    }
}
