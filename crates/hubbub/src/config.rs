//! Node configuration: a TOML file, then `HUBBUB_*` environment variables,
//! then flags (flags win), validated once at start-up.
//!
//! Every problem is reported as one [`ConfigError`] line that names the
//! setting the way the TOML file spells it, plus its flag and variable.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use hubbub_cluster::{Keyring, MembershipConfig, NodeIdentity};
use hubbub_proto::link;
use serde::Deserialize;

/// Default HTTP/WebSocket listener.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Default SWIM listener (memberlist's well-known port).
pub(crate) const DEFAULT_GOSSIP: &str = "127.0.0.1:7946";
/// Default cluster name.
pub(crate) const DEFAULT_CLUSTER: &str = "hubbub";
/// Default replication factor (owner + one replica).
pub(crate) const DEFAULT_REPLICATION_FACTOR: usize = 2;
/// Largest replication factor accepted.
pub(crate) const MAX_REPLICATION_FACTOR: usize = 7;

/// `hubbub node` flags. Each has a `HUBBUB_*` variable; both override the file.
#[derive(Args, Debug, Default)]
pub(crate) struct NodeArgs {
    /// TOML configuration file (keys are the flag names with `_`).
    #[arg(long, env = "HUBBUB_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Unique node name: 1–64 characters of [A-Za-z0-9._-].
    #[arg(long, env = "HUBBUB_NAME")]
    pub(crate) name: Option<String>,
    /// HTTP and WebSocket listen address [default: 127.0.0.1:8000].
    #[arg(long, env = "HUBBUB_LISTEN", value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// SWIM gossip UDP listen address [default: 127.0.0.1:7946].
    #[arg(long, env = "HUBBUB_GOSSIP", value_name = "ADDR")]
    pub(crate) gossip: Option<String>,
    /// Node-state gossip UDP listen address [default: gossip IP, gossip port + 1].
    #[arg(long, env = "HUBBUB_STATE_GOSSIP", value_name = "ADDR")]
    pub(crate) state_gossip: Option<String>,
    /// IP or host name other nodes and clients use to reach this node
    /// [default: the gossip IP, or the local IP that routes to the first seed].
    #[arg(long, env = "HUBBUB_ADVERTISE", value_name = "HOST")]
    pub(crate) advertise: Option<String>,
    /// Comma-separated gossip addresses (host:port) of other nodes.
    #[arg(long, env = "HUBBUB_SEEDS", value_name = "LIST")]
    pub(crate) seeds: Option<String>,
    /// Cluster name; nodes of other clusters cannot join [default: hubbub].
    #[arg(long, env = "HUBBUB_CLUSTER")]
    pub(crate) cluster: Option<String>,
    /// Comma-separated cluster keys (≥ 32 characters each): the first seals,
    /// all open, for rotation.
    #[arg(long, env = "HUBBUB_CLUSTER_KEY", value_name = "KEYS", hide_env_values = true)]
    pub(crate) cluster_key: Option<String>,
    /// Run without a cluster key: anyone who can reach the gossip port can join.
    #[arg(long, env = "HUBBUB_INSECURE")]
    pub(crate) insecure: bool,
    /// Copies of each room's state: owner plus replicas [default: 2].
    #[arg(long, env = "HUBBUB_REPLICATION_FACTOR", value_name = "N")]
    pub(crate) replication_factor: Option<String>,
    /// WebSocket URL advertised to clients [default: ws://ADVERTISE:PORT/ws].
    #[arg(long, env = "HUBBUB_WS_URL", value_name = "URL")]
    pub(crate) ws_url: Option<String>,
    /// Largest message body in bytes, at most 524288 and a quarter of
    /// --client-queue-bytes; frames over 4× this close the connection
    /// [default: 65536].
    #[arg(long, env = "HUBBUB_MAX_BODY", value_name = "BYTES")]
    pub(crate) max_body: Option<String>,
    /// A client must say hello within this [default: 10000].
    #[arg(long, env = "HUBBUB_HELLO_TIMEOUT_MS", value_name = "MS")]
    pub(crate) hello_timeout_ms: Option<String>,
    /// Bytes queued for one client before it is closed as slow [default: 1048576].
    #[arg(long, env = "HUBBUB_CLIENT_QUEUE_BYTES", value_name = "BYTES")]
    pub(crate) client_queue_bytes: Option<String>,
    /// Sends one client may have unanswered before it is closed [default: 1024].
    #[arg(long, env = "HUBBUB_MAX_IN_FLIGHT", value_name = "N")]
    pub(crate) max_in_flight: Option<String>,
    /// Rooms one connection may join [default: 128].
    #[arg(long, env = "HUBBUB_MAX_ROOMS", value_name = "N")]
    pub(crate) max_rooms: Option<String>,
    /// Messages of history kept per room [default: 1000].
    #[arg(long, env = "HUBBUB_HISTORY_MESSAGES", value_name = "N")]
    pub(crate) history_messages: Option<String>,
    /// Bytes of history kept per room, at most 2097152 [default: 1048576].
    #[arg(long, env = "HUBBUB_HISTORY_BYTES", value_name = "BYTES")]
    pub(crate) history_bytes: Option<String>,
    /// Age after which history messages are dropped [default: 3600].
    #[arg(long, env = "HUBBUB_HISTORY_AGE_SECS", value_name = "SECS")]
    pub(crate) history_age_secs: Option<String>,
    /// How long a node declared down stays in the chat ring, so a flapping
    /// verdict does not move its rooms twice [default: 1000].
    #[arg(long, env = "HUBBUB_RING_REMOVAL_DELAY_MS", value_name = "MS")]
    pub(crate) ring_removal_delay_ms: Option<String>,
    /// Move connections from fuller to emptier nodes (`reconnect` frames)
    /// while counts differ by more than 10 % from the mean [default: true].
    #[arg(long, env = "HUBBUB_REBALANCE", value_name = "BOOL")]
    pub(crate) rebalance: Option<String>,
    /// On SIGTERM, clients are moved to other nodes over this window before
    /// the rest are closed [default: 5000].
    #[arg(long, env = "HUBBUB_DRAIN_WINDOW_MS", value_name = "MS")]
    pub(crate) drain_window_ms: Option<String>,
}

/// The TOML file. Unknown keys are refused.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    listen: Option<String>,
    gossip: Option<String>,
    state_gossip: Option<String>,
    advertise: Option<String>,
    seeds: Option<Vec<String>>,
    cluster: Option<String>,
    cluster_key: Option<KeyList>,
    insecure: Option<bool>,
    replication_factor: Option<usize>,
    ws_url: Option<String>,
    max_body: Option<u64>,
    hello_timeout_ms: Option<u64>,
    client_queue_bytes: Option<u64>,
    max_in_flight: Option<u64>,
    max_rooms: Option<u64>,
    history_messages: Option<u64>,
    history_bytes: Option<u64>,
    history_age_secs: Option<u64>,
    ring_removal_delay_ms: Option<u64>,
    drain_window_ms: Option<u64>,
    rebalance: Option<bool>,
    #[serde(default)]
    membership: MembershipConfig,
}

/// `cluster_key = "k"` or `cluster_key = ["new", "old"]`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum KeyList {
    One(String),
    Many(Vec<String>),
}

/// A setting that was refused: one line naming it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub(crate) setting: String,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = self.setting.replace('_', "-");
        let env = format!("HUBBUB_{}", self.setting.to_uppercase());
        if self.setting == "config" || !self.setting.contains('.') {
            write!(f, "invalid setting '{}' (--{flag} / {env}): {}", self.setting, self.message)
        } else {
            write!(f, "invalid setting '{}' (config file): {}", self.setting, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(setting: &str, message: impl Into<String>) -> ConfigError {
    // Keep the error on one line whatever the message carries.
    let message: String = message.into().split_whitespace().collect::<Vec<_>>().join(" ");
    ConfigError { setting: setting.to_owned(), message }
}

/// A validated node configuration.
#[derive(Debug)]
pub(crate) struct NodeConfig {
    pub(crate) name: String,
    pub(crate) listen: SocketAddr,
    pub(crate) gossip: SocketAddr,
    pub(crate) state_gossip: SocketAddr,
    /// Set explicitly; otherwise derived once sockets are known.
    pub(crate) advertise: Option<IpAddr>,
    pub(crate) seeds: Vec<String>,
    pub(crate) cluster: String,
    pub(crate) keyring: Keyring,
    pub(crate) replication_factor: usize,
    pub(crate) ws_url: Option<String>,
    pub(crate) chat: ChatConfig,
    pub(crate) membership: MembershipConfig,
}

/// Client-facing limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ChatConfig {
    pub(crate) max_body: usize,
    pub(crate) hello_timeout_ms: u64,
    pub(crate) client_queue_bytes: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) max_rooms: usize,
    pub(crate) history_messages: usize,
    pub(crate) history_bytes: usize,
    pub(crate) history_age_secs: u64,
    pub(crate) ring_removal_delay_ms: u64,
    pub(crate) drain_window_ms: u64,
    pub(crate) rebalance: bool,
}

/// A whole number from a flag (text) or the file, within `range`.
fn number(
    setting: &str,
    flag: Option<String>,
    file: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let value = match (flag, file) {
        (Some(v), _) => v.trim().parse::<u64>().map_err(|_| err(setting, format!("{v:?} is not a whole number")))?,
        (None, Some(v)) => v,
        (None, None) => default,
    };
    if !range.contains(&value) {
        return Err(err(setting, format!("{value} is outside {}..={}", range.start(), range.end())));
    }
    Ok(value)
}

fn parse_addr(setting: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|e| err(setting, format!("{e}: {value:?} (expected IP:PORT, e.g. 127.0.0.1:8000)")))
}

fn valid_label(s: &str) -> bool {
    NodeIdentity::valid_name(s)
}

fn parse_seed(seed: &str) -> Result<String, ConfigError> {
    let seed = seed.trim();
    let Some((host, port)) = seed.rsplit_once(':') else {
        return Err(err("seeds", format!("{seed:?} has no port (expected host:port)")));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(err("seeds", format!("{seed:?} is not host:port with a port in 1..=65535")));
    }
    Ok(seed.to_owned())
}

fn read_file(path: &PathBuf) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" at line {l}")).unwrap_or_default();
        err("config", format!("{}{at}: {}", path.display(), e.message()))
    })
}

impl NodeConfig {
    /// Merges file, environment and flags (clap already put env under flags)
    /// and validates the result.
    pub(crate) fn load(args: NodeArgs) -> Result<NodeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };

        let name = args.name.or(file.name).ok_or_else(|| err("name", "required: give every node a unique name"))?;
        if !valid_label(&name) {
            return Err(err("name", format!("{name:?} must be 1–64 characters of A-Z a-z 0-9 . _ -")));
        }

        let listen = parse_addr("listen", args.listen.as_deref().or(file.listen.as_deref()).unwrap_or(DEFAULT_LISTEN))?;
        let gossip = parse_addr("gossip", args.gossip.as_deref().or(file.gossip.as_deref()).unwrap_or(DEFAULT_GOSSIP))?;
        let state_gossip = match args.state_gossip.as_deref().or(file.state_gossip.as_deref()) {
            Some(v) => parse_addr("state_gossip", v)?,
            None if gossip.port() == 0 => SocketAddr::new(gossip.ip(), 0),
            None => {
                let port = gossip.port().checked_add(1).ok_or_else(|| {
                    err("state_gossip", "gossip port is 65535, so the default (gossip port + 1) does not exist; set it")
                })?;
                SocketAddr::new(gossip.ip(), port)
            }
        };
        if state_gossip == gossip && gossip.port() != 0 {
            return Err(err("state_gossip", format!("{state_gossip} is the gossip address; they need separate ports")));
        }

        let advertise = match args.advertise.as_deref().or(file.advertise.as_deref()) {
            None => None,
            Some(host) => Some(resolve_host(host)?),
        };

        let seeds: Vec<String> = match (args.seeds, file.seeds) {
            (Some(list), _) => {
                list.split(',').filter(|s| !s.trim().is_empty()).map(parse_seed).collect::<Result<_, _>>()?
            }
            (None, Some(list)) => list.iter().map(|s| parse_seed(s)).collect::<Result<_, _>>()?,
            (None, None) => Vec::new(),
        };

        let cluster = args.cluster.or(file.cluster).unwrap_or_else(|| DEFAULT_CLUSTER.to_owned());
        if !valid_label(&cluster) {
            return Err(err("cluster", format!("{cluster:?} must be 1–64 characters of A-Z a-z 0-9 . _ -")));
        }

        let insecure = args.insecure || file.insecure.unwrap_or(false);
        let keys: Option<Vec<String>> = match (args.cluster_key, file.cluster_key) {
            (Some(list), _) => Some(list.split(',').map(|k| k.trim().to_owned()).collect()),
            (None, Some(KeyList::One(k))) => Some(vec![k]),
            (None, Some(KeyList::Many(ks))) => Some(ks),
            (None, None) => None,
        };
        let keyring = match (keys, insecure) {
            (Some(_), true) => return Err(err("insecure", "cannot be combined with cluster_key; choose one")),
            (None, true) => Keyring::insecure(&cluster),
            (None, false) => {
                return Err(err(
                    "cluster_key",
                    "required: give a shared secret of at least 32 characters, or pass --insecure for a throwaway cluster",
                ));
            }
            (Some(keys), false) => Keyring::new(&keys, &cluster).map_err(|e| err("cluster_key", e.to_string()))?,
        };

        let replication_factor = match (args.replication_factor, file.replication_factor) {
            (Some(v), _) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| err("replication_factor", format!("{v:?} is not a whole number")))?,
            (None, Some(v)) => v,
            (None, None) => DEFAULT_REPLICATION_FACTOR,
        };
        if !(1..=MAX_REPLICATION_FACTOR).contains(&replication_factor) {
            return Err(err(
                "replication_factor",
                format!("{replication_factor} is outside 1..={MAX_REPLICATION_FACTOR}"),
            ));
        }

        let ws_url = args.ws_url.or(file.ws_url);
        if let Some(url) = &ws_url
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            return Err(err("ws_url", format!("{url:?} must start with ws:// or wss://")));
        }

        let chat = ChatConfig {
            // Bounded so every frame between nodes fits a link frame (see
            // `hubbub_proto::link::MAX_BODY_SETTING`).
            max_body: number("max_body", args.max_body, file.max_body, 65_536, 64..=link::MAX_BODY_SETTING as u64)?
                as usize,
            hello_timeout_ms: number(
                "hello_timeout_ms",
                args.hello_timeout_ms,
                file.hello_timeout_ms,
                10_000,
                100..=600_000,
            )?,
            client_queue_bytes: number(
                "client_queue_bytes",
                args.client_queue_bytes,
                file.client_queue_bytes,
                1 << 20,
                4_096..=1 << 30,
            )? as usize,
            max_in_flight: number("max_in_flight", args.max_in_flight, file.max_in_flight, 1_024, 1..=1_000_000)?
                as usize,
            max_rooms: number("max_rooms", args.max_rooms, file.max_rooms, 128, 1..=100_000)? as usize,
            history_messages: number(
                "history_messages",
                args.history_messages,
                file.history_messages,
                1_000,
                1..=1_000_000,
            )? as usize,
            history_bytes: number(
                "history_bytes",
                args.history_bytes,
                file.history_bytes,
                1 << 20,
                1_024..=link::MAX_HISTORY_BYTES_SETTING as u64,
            )? as usize,
            history_age_secs: number(
                "history_age_secs",
                args.history_age_secs,
                file.history_age_secs,
                3_600,
                1..=30 * 86_400,
            )?,
            ring_removal_delay_ms: number(
                "ring_removal_delay_ms",
                args.ring_removal_delay_ms,
                file.ring_removal_delay_ms,
                1_000,
                0..=60_000,
            )?,
            drain_window_ms: number("drain_window_ms", args.drain_window_ms, file.drain_window_ms, 5_000, 0..=120_000)?,
            rebalance: match (args.rebalance, file.rebalance) {
                (Some(v), _) => match v.trim() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    other => return Err(err("rebalance", format!("{other:?} is not true or false"))),
                },
                (None, Some(v)) => v,
                (None, None) => true,
            },
        };
        // One message, escaped, can be as long as the client frame that
        // carried it (4 × max_body); a connection's queue must hold it, or
        // every subscriber of a room would be closed as a slow consumer.
        if chat.client_queue_bytes < 4 * chat.max_body {
            let message = format!(
                "{} needs client_queue_bytes of at least {} (one message can be 4 x max_body once escaped), not {}",
                chat.max_body,
                4 * chat.max_body,
                chat.client_queue_bytes
            );
            return Err(err("max_body", message));
        }

        let membership = file.membership;
        membership.to_foca().map_err(|e| err(&format!("membership.{}", e.setting), e.reason))?;

        Ok(NodeConfig {
            name,
            listen,
            gossip,
            state_gossip,
            advertise,
            seeds,
            cluster,
            keyring,
            replication_factor,
            ws_url,
            chat,
            membership,
        })
    }

    /// The IP to advertise: the explicit setting; else the gossip IP when it
    /// is a specific address; else the local IP that routes to the first seed
    /// that resolves; else loopback.
    pub(crate) fn advertise_ip(&self) -> IpAddr {
        if let Some(ip) = self.advertise {
            return ip;
        }
        if !self.gossip.ip().is_unspecified() {
            return self.gossip.ip();
        }
        for seed in &self.seeds {
            if let Some(ip) = route_source_ip(seed) {
                return ip;
            }
        }
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    /// The settings in force, for `/debug/node`. Never includes key material.
    pub(crate) fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "listen": self.listen.to_string(),
            "gossip": self.gossip.to_string(),
            "state_gossip": self.state_gossip.to_string(),
            "advertise": self.advertise.map(|ip| ip.to_string()),
            "seeds": self.seeds,
            "cluster": self.cluster,
            "insecure": self.keyring.is_insecure(),
            "key_ids": self.keyring.key_ids(),
            "replication_factor": self.replication_factor,
            "ws_url": self.ws_url,
            "chat": self.chat,
            "membership": self.membership,
        })
    }
}

/// The local IP the kernel would use to send to `seed` (no packet is sent:
/// connecting a UDP socket only picks a route).
fn route_source_ip(seed: &str) -> Option<IpAddr> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(seed).ok()?.next()?;
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(addr).ok()?;
    Some(sock.local_addr().ok()?.ip())
}

fn resolve_host(host: &str) -> Result<IpAddr, ConfigError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| err("advertise", format!("{host:?} is not an IP address and does not resolve")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn args() -> NodeArgs {
        NodeArgs { name: Some("n1".into()), cluster_key: Some(KEY.into()), ..Default::default() }
    }

    fn setting_of(a: NodeArgs) -> String {
        NodeConfig::load(a).unwrap_err().setting
    }

    #[test]
    fn defaults_are_valid() {
        let c = NodeConfig::load(args()).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.state_gossip.port(), 7947);
        assert_eq!(c.replication_factor, 2);
        assert_eq!(c.advertise_ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn each_bad_setting_is_named() {
        assert_eq!(setting_of(NodeArgs { name: None, ..args() }), "name");
        assert_eq!(setting_of(NodeArgs { name: Some("a b".into()), ..args() }), "name");
        assert_eq!(setting_of(NodeArgs { listen: Some("nonsense".into()), ..args() }), "listen");
        assert_eq!(setting_of(NodeArgs { gossip: Some("1.2.3:x".into()), ..args() }), "gossip");
        assert_eq!(setting_of(NodeArgs { seeds: Some("hostonly".into()), ..args() }), "seeds");
        assert_eq!(setting_of(NodeArgs { cluster_key: Some("short".into()), ..args() }), "cluster_key");
        assert_eq!(setting_of(NodeArgs { cluster_key: None, ..args() }), "cluster_key");
        assert_eq!(setting_of(NodeArgs { insecure: true, ..args() }), "insecure");
        assert_eq!(setting_of(NodeArgs { replication_factor: Some("0".into()), ..args() }), "replication_factor");
        assert_eq!(setting_of(NodeArgs { ws_url: Some("http://x".into()), ..args() }), "ws_url");
        assert_eq!(setting_of(NodeArgs { config: Some("/nonexistent/x.toml".into()), ..args() }), "config");
    }

    /// A body or a history too large for one node-link frame would be lost
    /// between nodes: such settings are refused at start-up.
    #[test]
    fn sizes_beyond_a_link_frame_are_refused() {
        let body = |n: usize| NodeArgs {
            max_body: Some(n.to_string()),
            client_queue_bytes: Some((4 * n).to_string()),
            ..args()
        };
        let history = |n: usize| NodeArgs { history_bytes: Some(n.to_string()), ..args() };
        assert_eq!(NodeConfig::load(body(link::MAX_BODY_SETTING)).unwrap().chat.max_body, link::MAX_BODY_SETTING);
        assert_eq!(setting_of(body(link::MAX_BODY_SETTING + 1)), "max_body");
        let max_history = link::MAX_HISTORY_BYTES_SETTING;
        assert_eq!(NodeConfig::load(history(max_history)).unwrap().chat.history_bytes, max_history);
        assert_eq!(setting_of(history(max_history + 1)), "history_bytes");
        // A queue that could not hold one message of the largest body.
        let small_queue = NodeArgs { client_queue_bytes: Some((4 * 65_536 - 1).to_string()), ..args() };
        assert_eq!(setting_of(small_queue), "max_body");
    }

    #[test]
    fn errors_are_one_line() {
        let e = err("config", "line one\nline two");
        assert!(!e.to_string().contains('\n'));
        assert!(e.to_string().contains("'config'"));
    }

    #[test]
    fn file_values_apply_under_flags() {
        let dir = std::env::temp_dir().join(format!("hubbub-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nseeds = [\"a:1\", \"b:2\"]\ncluster_key = [\"0123456789abcdef0123456789abcdef\", \"fedcba9876543210fedcba9876543210\"]\n[membership]\nprobe_period_ms = 400\n",
        )
        .unwrap();
        let c = NodeConfig::load(NodeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:9001".into()),
            cluster_key: None,
            ..args()
        })
        .unwrap();
        assert_eq!(c.listen.port(), 9001, "flag wins over file");
        assert_eq!(c.seeds, vec!["a:1", "b:2"]);
        assert_eq!(c.keyring.len(), 2);
        assert_eq!(c.membership.probe_period_ms, 400);

        std::fs::write(&path, "name = \"x\"\nbogus = 1\n").unwrap();
        let e = NodeConfig::load(NodeArgs { config: Some(path.clone()), ..args() }).unwrap_err();
        assert_eq!(e.setting, "config");
        assert!(e.message.contains("bogus"), "{}", e.message);

        std::fs::write(&path, "[membership]\nprobe_rtt_ms = 5000\n").unwrap();
        let e = NodeConfig::load(NodeArgs { config: Some(path.clone()), ..args() }).unwrap_err();
        assert_eq!(e.setting, "membership.probe_rtt_ms");
        std::fs::remove_dir_all(&dir).ok();
    }
}
