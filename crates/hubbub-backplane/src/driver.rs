//! The backplane's driver: one [`Core`] behind a mutex, fed by the cluster
//! view, the node links and a ticker.
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
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::{Core, CoreLimits, PeerSink};

/// How often timeouts are checked.
const TICK: Duration = Duration::from_millis(250);
/// Chat frames received from links waiting for the core.
const INBOX: usize = 4_096;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct LinkSink(Arc<Links>);

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
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Backplane> {
        let view = cluster.view();
        let me = view.borrow().me.id;
        let links = cluster.links().clone();
        let backplane =
            Arc::new(Backplane { core: Mutex::new(Core::new(me, limits, Box::new(LinkSink(links.clone())))) });
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
        links.set_chat_inbox(inbox_tx);
        tasks.spawn(backplane.clone().run(view, inbox_rx, shutdown));
        backplane
    }

    /// Locks the core for one step. Never hold the guard across an `.await`.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().expect("backplane mutex poisoned")
    }

    async fn run(
        self: Arc<Self>,
        mut view: tokio::sync::watch::Receiver<Arc<hubbub_cluster::ClusterView>>,
        mut inbox: mpsc::Receiver<(NodeId, hubbub_proto::chat::ChatFrame)>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        let mut apply_view = true;
        loop {
            if apply_view {
                let current = view.borrow_and_update().clone();
                let draining = current
                    .active()
                    .filter(|m| m.status.as_ref().is_some_and(|s| s.draining))
                    .map(|m| m.identity.id)
                    .collect::<Vec<_>>();
                self.core().on_view(current.ring.clone(), draining, now_ms());
                apply_view = false;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                changed = view.changed() => match changed {
                    Ok(()) => apply_view = true,
                    Err(_) => return,
                },
                frame = inbox.recv() => match frame {
                    Some((from, frame)) => {
                        let now = now_ms();
                        let mut core = self.core();
                        core.on_frame(from, frame, now);
                        // Take what else is waiting under the same lock.
                        for _ in 0..256 {
                            match inbox.try_recv() {
                                Ok((from, frame)) => core.on_frame(from, frame, now),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => self.core().tick(now_ms()),
            }
        }
    }

    /// Starts draining (see [`Core::drain`]) and waits, up to `timeout`, until
    /// every handed-off room is acknowledged by its new owner. Returns the
    /// number still unacknowledged.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.core().drain(now_ms());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.core().unacked_handoffs();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
