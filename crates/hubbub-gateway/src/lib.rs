//! Hubbub's HTTP edge, served by axum on every node's `--listen` address.
//!
//! - health: `GET /healthz/live`, `GET /healthz/ready`;
//! - debug API (JSON): `GET /debug/members`, `GET /debug/ring[?key=K]`,
//!   `GET /debug/node` ([`debug`]);
//! - node links: `GET /internal/link`, upgraded to a tokio-tungstenite
//!   WebSocket and handed to `hubbub_cluster::Links` ([`link`]);
//! - chat clients: `GET /ws`, one session task per connection ([`session`]),
//!   speaking docs/protocol.md and driving the backplane;
//! - the web client at `/` ([`web`]);
//! - `GET /debug/rooms`: the rooms this node holds and subscribes to.
//!
//! Every error is a JSON body `{"error": {"code", "message"}}` with a fitting
//! status ([`AppError`]).

mod debug;
mod error;
mod frames;
mod link;
mod session;
mod upgrade;
mod web;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use hubbub_backplane::Backplane;
use hubbub_cluster::Cluster;
use tokio_util::sync::CancellationToken;

pub use error::AppError;
pub use session::ChatSettings;

/// What the HTTP handlers read.
pub struct Gateway {
    /// This node's cluster membership.
    pub cluster: Arc<Cluster>,
    /// When the node started.
    pub started: Instant,
    /// Build version.
    pub version: String,
    /// Cluster name.
    pub cluster_name: String,
    /// Replication factor (owner + replicas) shown by `/debug/ring`.
    pub replication_factor: usize,
    /// The settings in force, without secrets, shown by `/debug/node`.
    pub config_summary: serde_json::Value,
    /// The chat backplane client sessions talk to.
    pub backplane: Arc<Backplane>,
    /// Client-session settings.
    pub chat: ChatSettings,
    /// Cancelled when the node drains: new connections are refused, and a
    /// session that connects after `Core::close_all` closes itself (1001).
    pub clients_stop: CancellationToken,
    /// Source of connection ids.
    pub next_conn: AtomicU64,
}

/// The node's router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new();
    for path in web::paths() {
        router = router.route(path, get(move || async move { web::serve(path) }));
    }
    router
        .route("/ws", get(session::upgrade))
        .route("/debug/rooms", get(debug::rooms))
        .route("/healthz/live", get(debug::live))
        .route("/healthz/ready", get(debug::ready))
        .route("/debug/members", get(debug::members))
        .route("/debug/ring", get(debug::ring))
        .route("/debug/node", get(debug::node))
        .route(hubbub_cluster::links::LINK_PATH, get(link::upgrade))
        .fallback(error::not_found)
        .with_state(gateway)
}

/// Serves `router` on `listener` until `stop` fires, then finishes the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Chat frames are small and latency-bound: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await
}
