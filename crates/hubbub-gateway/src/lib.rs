//! Hubbub's HTTP edge, served by axum on every node's `--listen` address.
//!
//! - health: `GET /healthz/live`, `GET /healthz/ready`;
//! - debug API (JSON): `GET /debug/members`, `GET /debug/ring[?key=K]`,
//!   `GET /debug/node` ([`debug`]);
//! - node links: `GET /internal/link`, upgraded to a tokio-tungstenite
//!   WebSocket and handed to `hubbub_cluster::Links` ([`link`]).
//!
//! Every error is a JSON body `{"error": {"code", "message"}}` with a fitting
//! status ([`AppError`]).

mod debug;
mod error;
mod link;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use hubbub_cluster::Cluster;

pub use error::AppError;

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
}

/// The node's router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
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
    axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await
}
