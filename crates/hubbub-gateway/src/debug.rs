//! Health checks and the JSON debug API.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hubbub_cluster::MemberView;
use hubbub_ring::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{AppError, Gateway};

/// Longest key `/debug/ring?key=` accepts.
const MAX_KEY_LEN: usize = 1_024;

pub(crate) async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

pub(crate) async fn ready(State(gw): State<Arc<Gateway>>) -> Response {
    let view = gw.cluster.view().borrow().clone();
    if view.ready {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let body = json!({ "status": "not_ready", "reason": "not joined yet: no other member is alive and seeds are configured" });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

#[derive(Serialize)]
struct MemberJson<'a> {
    name: &'a str,
    node_id: String,
    gossip_addr: String,
    state_addr: String,
    http_addr: String,
    bump: u64,
    state: hubbub_cluster::MemberState,
    incarnation: u16,
    is_self: bool,
    node_state: Option<&'a hubbub_cluster::NodeStatus>,
}

impl<'a> From<&'a MemberView> for MemberJson<'a> {
    fn from(m: &'a MemberView) -> Self {
        MemberJson {
            name: &m.identity.name,
            node_id: m.identity.id.to_string(),
            gossip_addr: m.identity.gossip.to_string(),
            state_addr: m.identity.state.to_string(),
            http_addr: m.identity.http.to_string(),
            bump: m.identity.bump,
            state: m.state,
            incarnation: m.incarnation,
            is_self: m.is_self,
            node_state: m.status.as_ref(),
        }
    }
}

pub(crate) async fn members(State(gw): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let view = gw.cluster.view().borrow().clone();
    let members: Vec<MemberJson<'_>> = view.members.iter().map(MemberJson::from).collect();
    Json(json!({ "self": view.me.name, "members": members }))
}

#[derive(Deserialize)]
pub(crate) struct RingQuery {
    key: Option<String>,
}

pub(crate) async fn ring(
    State(gw): State<Arc<Gateway>>,
    query: Result<Query<RingQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Query(query) = query.map_err(|e| AppError::bad_request("bad_query", e.body_text()))?;
    let view = gw.cluster.view().borrow().clone();
    let name_of = |id: NodeId| view.member(id).map(|m| m.identity.name.clone()).unwrap_or_else(|| id.to_string());
    let members: Vec<_> =
        view.ring.members().iter().map(|id| json!({ "name": name_of(*id), "node_id": id.to_string() })).collect();
    let mut body = json!({
        "epoch": view.ring.epoch(),
        "fingerprint": format!("{:016x}", view.ring.fingerprint()),
        "replication_factor": gw.replication_factor,
        "members": members,
    });
    if let Some(key) = query.key {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(AppError::bad_request("bad_key", format!("key must be 1..={MAX_KEY_LEN} bytes")));
        }
        let preference: Vec<String> = view.ring.preference_order(key.as_bytes()).into_iter().map(name_of).collect();
        body["key"] = json!(key);
        body["preference"] = json!(preference);
    }
    Ok(Json(body))
}

pub(crate) async fn node(State(gw): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let view = gw.cluster.view().borrow().clone();
    let foca = gw.cluster.foca_config();
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    Json(json!({
        "name": view.me.name,
        "node_id": view.me.id.to_string(),
        "cluster": gw.cluster_name,
        "version": gw.version,
        "uptime_secs": gw.started.elapsed().as_secs_f64(),
        "joined": view.joined,
        "ready": view.ready,
        "members_active": view.active().count(),
        "ring_epoch": view.ring.epoch(),
        "gossip_addr": gw.cluster.gossip_addr().to_string(),
        "state_addr": gw.cluster.state_addr().to_string(),
        "config": gw.config_summary,
        "membership": {
            "probe_period_ms": ms(foca.probe_period),
            "probe_rtt_ms": ms(foca.probe_rtt),
            "suspect_to_down_ms": ms(foca.suspect_to_down_after),
            "max_transmissions": foca.max_transmissions.get(),
            "max_packet_size": foca.max_packet_size.get(),
        },
        "links": gw.cluster.links().list(),
        "chat": gw.backplane.core().counters(),
        "counters": gw.cluster.counters(),
    }))
}

pub(crate) async fn rooms(State(gw): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let (held, local) = gw.backplane.core().rooms();
    Json(json!({ "held": held, "local": local }))
}
