//! WebSocket upgrades done with hyper directly (not axum's
//! `WebSocketUpgrade`), so node links and client sessions get the same
//! `tokio_tungstenite::WebSocketStream` type with limits we choose.

use std::future::Future;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::debug;

use crate::AppError;

/// An upgraded server-side WebSocket.
pub(crate) type ServerWs = WebSocketStream<TokioIo<Upgraded>>;

/// Answers `req` with `101 Switching Protocols` and runs `serve` on the
/// upgraded connection; a request that is not a WebSocket upgrade gets a
/// 426 JSON error.
pub(crate) fn accept<F, Fut>(mut req: Request, config: WebSocketConfig, what: &'static str, serve: F) -> Response
where
    F: FnOnce(ServerWs) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let headers = req.headers();
    let is_upgrade =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_upgrade) else {
        return AppError {
            status: StatusCode::UPGRADE_REQUIRED,
            code: "upgrade_required",
            message: format!("{what} are WebSocket connections"),
        }
        .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                serve(ws).await;
            }
            Err(e) => debug!(error = %e, "WebSocket upgrade failed"),
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
