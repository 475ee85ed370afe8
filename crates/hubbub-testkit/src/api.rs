//! A blocking client for a node's HTTP debug API, and its JSON views.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// How long one request may take. Short, so that polling a frozen node
/// fails fast instead of stalling a test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /debug/members`.
#[derive(Clone, Debug, Deserialize)]
pub struct MembersView {
    /// The answering node's name.
    #[serde(rename = "self")]
    pub self_name: String,
    /// Every member the node knows, itself included.
    pub members: Vec<MemberInfo>,
}

/// One entry of [`MembersView::members`].
#[derive(Clone, Debug, Deserialize)]
pub struct MemberInfo {
    /// Node name.
    pub name: String,
    /// Node id, 16 hex digits.
    pub node_id: String,
    /// SWIM address.
    pub gossip_addr: SocketAddr,
    /// chitchat address.
    pub state_addr: SocketAddr,
    /// HTTP address.
    pub http_addr: SocketAddr,
    /// Incarnation order of this identity (start time in ms).
    pub bump: u64,
    /// SWIM state.
    pub state: MemberState,
    /// SWIM incarnation.
    pub incarnation: u64,
    /// Whether this entry is the answering node.
    pub is_self: bool,
    /// chitchat node state; null until it has arrived.
    #[serde(default)]
    pub node_state: Option<serde_json::Value>,
}

/// SWIM state of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; still in the ring.
    Suspect,
    /// Declared down; out of the ring.
    Down,
}

impl MembersView {
    /// The entries with this name (a restarted node may be listed twice).
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a MemberInfo> + 'a {
        self.members.iter().filter(move |m| m.name == name)
    }

    /// Whether some entry with this name is alive.
    pub fn is_alive(&self, name: &str) -> bool {
        self.named(name).any(|m| m.state == MemberState::Alive)
    }

    /// Whether no entry with this name is alive or suspect (down or absent).
    pub fn is_gone(&self, name: &str) -> bool {
        self.named(name).all(|m| m.state == MemberState::Down)
    }

    /// Names of alive and suspect entries, sorted.
    pub fn active_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.members.iter().filter(|m| m.state != MemberState::Down).map(|m| m.name.clone()).collect();
        names.sort();
        names
    }
}

/// `GET /debug/ring[?key=K]`.
#[derive(Clone, Debug, Deserialize)]
pub struct RingView {
    /// Local ring version counter (differs between nodes).
    pub epoch: u64,
    /// Hash of the member set; equal rings have equal fingerprints.
    pub fingerprint: String,
    /// Owners per key.
    pub replication_factor: u32,
    /// Alive and suspect nodes, sorted by node id.
    pub members: Vec<RingMember>,
    /// The key asked about, if any.
    #[serde(default)]
    pub key: Option<String>,
    /// All ring members for `key`, owner first.
    #[serde(default)]
    pub preference: Option<Vec<String>>,
}

impl RingView {
    /// Whether a member with this name is in the ring.
    pub fn contains(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.name == name)
    }

    /// Member names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        names.sort();
        names
    }
}

/// One entry of [`RingView::members`].
#[derive(Clone, Debug, Deserialize)]
pub struct RingMember {
    /// Node name.
    pub name: String,
    /// Node id, 16 hex digits.
    pub node_id: String,
}

/// `GET /debug/node`.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Node id, 16 hex digits.
    pub node_id: String,
    /// Cluster name. Optional here so that a node missing it fails only the
    /// tests that are about it, not every test that reads a counter.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Software version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Whether the node has joined its cluster.
    pub joined: bool,
    /// Effective configuration, without secrets.
    pub config: serde_json::Value,
    /// Counters by name.
    pub counters: BTreeMap<String, serde_json::Value>,
}

impl NodeInfo {
    /// A counter's value; an error names a missing or non-integer counter.
    pub fn counter(&self, name: &str) -> Result<u64, String> {
        self.counters
            .get(name)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("counter {name:?} missing or not an integer in {:?}", self.counters))
    }
}

/// Blocking client for one node's debug API. Keeps its connection alive
/// between requests; cheap to clone (clones share the connection pool).
#[derive(Clone, Debug)]
pub struct NodeApi {
    base: String,
    agent: ureq::Agent,
}

impl NodeApi {
    /// A client for the node whose HTTP listener is `addr`.
    pub fn new(addr: SocketAddr) -> NodeApi {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        NodeApi { base: format!("http://{addr}"), agent }
    }

    /// `GET path`, returning the status code and body text.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.base);
        let mut response = self.agent.get(&url).call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(|e| format!("GET {url}: reading body: {e}"))?;
        Ok((status, body))
    }

    /// `GET path`, requiring 200 and a body that parses as `T`.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            return Err(format!("GET {}{path}: status {status}: {body}", self.base));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {}{path}: bad JSON ({e}): {body}", self.base))
    }

    /// `GET /debug/members`.
    pub fn members(&self) -> Result<MembersView, String> {
        self.get_json("/debug/members")
    }

    /// `GET /debug/ring`.
    pub fn ring(&self) -> Result<RingView, String> {
        self.get_json("/debug/ring")
    }

    /// `GET /debug/ring?key=KEY` (`key` must be URL-safe, e.g. `room:r1`).
    pub fn ring_for(&self, key: &str) -> Result<RingView, String> {
        self.get_json(&format!("/debug/ring?key={key}"))
    }

    /// `GET /debug/rooms`: the names of the rooms the node holds (sequences).
    pub fn held_rooms(&self) -> Result<Vec<String>, String> {
        let view: serde_json::Value = self.get_json("/debug/rooms")?;
        let held = view["held"].as_array().ok_or_else(|| format!("/debug/rooms has no `held` array: {view}"))?;
        held.iter()
            .map(|h| h["room"].as_str().map(str::to_owned).ok_or_else(|| format!("a held entry has no room: {view}")))
            .collect()
    }

    /// `GET /debug/node`.
    pub fn node_info(&self) -> Result<NodeInfo, String> {
        self.get_json("/debug/node")
    }

    /// `GET /healthz/live`: Ok when it answers 200 `{"status":"live"}`.
    pub fn live(&self) -> Result<(), String> {
        let (status, body) = self.get("/healthz/live")?;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && json["status"] == "live" {
            Ok(())
        } else {
            Err(format!("/healthz/live: status {status}: {body}"))
        }
    }

    /// `GET /healthz/ready`: the status code and the parsed body.
    pub fn ready(&self) -> Result<(u16, serde_json::Value), String> {
        let (status, body) = self.get("/healthz/ready")?;
        let json = serde_json::from_str(&body).map_err(|e| format!("/healthz/ready: bad JSON ({e}): {body}"))?;
        Ok((status, json))
    }
}
