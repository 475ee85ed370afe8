//! `GET /internal/link`: the HTTP upgrade for node links.
//!
//! The upgrade is done with hyper directly (not axum's `WebSocketUpgrade`) so
//! that both ends of a link are the same `tokio_tungstenite::WebSocketStream`
//! type, with the same frame limits.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::debug;

use crate::{AppError, Gateway};

pub(crate) async fn upgrade(State(gw): State<Arc<Gateway>>, mut req: Request) -> Response {
    let headers = req.headers();
    let is_upgrade =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_upgrade) else {
        return AppError {
            status: StatusCode::UPGRADE_REQUIRED,
            code: "upgrade_required",
            message: "node links are WebSocket connections".to_owned(),
        }
        .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let links = gw.cluster.links().clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(hubbub_cluster::links::websocket_config()),
                )
                .await;
                links.serve_inbound(ws).await;
            }
            Err(e) => debug!(error = %e, "node link upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .expect("static response parts are valid")
}
