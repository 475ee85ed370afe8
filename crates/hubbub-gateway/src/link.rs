//! `GET /internal/link`: the HTTP upgrade for node links.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;

use crate::Gateway;

pub(crate) async fn upgrade(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let links = gw.cluster.links().clone();
    crate::upgrade::accept(req, hubbub_cluster::links::websocket_config(), "node links", move |ws| async move {
        links.serve_inbound(ws).await
    })
}
