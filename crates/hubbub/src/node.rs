//! `hubbub node`: wiring and shutdown order of one node.
//!
//! Start: validate settings → bind the HTTP listener → start the cluster
//! (binds the gossip sockets) → print the `listening` line → serve.
//! SIGTERM or ctrl-c: mark the node draining → ask clients to move to the
//! other nodes (`reconnect`) over the drain window → close the remaining
//! ones (1001) and refuse new ones → hand every room
//! this node holds to its next owner and wait for the acknowledgements →
//! leave the cluster (peers see the node go at once) → keep forwarding late
//! frames briefly → stop HTTP and every task. Each step is bounded in time,
//! well inside a 30 s orchestrator grace period.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hubbub_backplane::{Backplane, CoreLimits, FencingConfig, HistoryLimits, now_ms};
use hubbub_cluster::{Cluster, ClusterConfig};
use hubbub_gateway::{ChatSettings, Gateway};
use hubbub_proto::client::CloseCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{ConfigError, NodeArgs, NodeConfig};
use crate::load::LoadMeter;

/// How often this node republishes its load and connection count.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on each shutdown step.
const SHUTDOWN_STEP: Duration = Duration::from_secs(3);
/// After leaving, frames peers sent before they saw the leave are still
/// forwarded to the rooms' new owners for this long.
const LEAVE_LINGER: Duration = Duration::from_millis(500);

pub(crate) fn main(args: NodeArgs) -> ExitCode {
    let config = match NodeConfig::load(args) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubbub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Setting(e)) => usage_error(&e),
        Err(RunError::Other(e)) => {
            eprintln!("hubbub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(e: &ConfigError) -> ExitCode {
    eprintln!("hubbub: {e}");
    ExitCode::from(crate::EXIT_USAGE)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

enum RunError {
    /// A setting that only fails when used (an address already in use).
    Setting(ConfigError),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        RunError::Other(e)
    }
}

fn setting_error(setting: &str, message: String) -> RunError {
    RunError::Setting(ConfigError { setting: setting.to_owned(), message })
}

async fn run(config: NodeConfig) -> Result<(), RunError> {
    let started = Instant::now();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| setting_error("listen", format!("cannot bind {}: {e}", config.listen)))?;
    let http_local = listener.local_addr().context("reading the HTTP listener's address")?;
    let advertise_ip = config.advertise_ip();
    let http_advertise = SocketAddr::new(advertise_ip, http_local.port());
    let ws_url = config.ws_url.clone().unwrap_or_else(|| format!("ws://{http_advertise}/ws"));
    let summary = config.summary();
    let version = env!("CARGO_PKG_VERSION").to_owned();

    let cluster_config = ClusterConfig {
        name: config.name.clone(),
        gossip_bind: config.gossip,
        state_bind: config.state_gossip,
        advertise_ip,
        http_advertise,
        ws_url,
        seeds: config.seeds.clone(),
        keyring: config.keyring,
        membership: config.membership,
        version: version.clone(),
    };
    let cluster = match Cluster::start(cluster_config).await {
        Ok(c) => Arc::new(c),
        Err(hubbub_cluster::StartError::Bind { setting, addr, source }) => {
            return Err(setting_error(setting, format!("cannot bind {addr}: {source}")));
        }
        Err(e) => return Err(RunError::Other(e.into())),
    };

    let me = cluster.view().borrow().me.clone();
    let listening = serde_json::json!({
        "event": "listening",
        "name": me.name,
        "node_id": me.id.to_string(),
        "http": http_advertise.to_string(),
        "gossip": cluster.gossip_addr().to_string(),
        "state": cluster.state_addr().to_string(),
    });
    // The one line on stdout: launchers and tests read the bound ports here.
    println!("{listening}");
    info!(name = %me.name, node_id = %me.id, http = %http_advertise, gossip = %cluster.gossip_addr(), "node started");

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let limits = CoreLimits {
        replication_factor: config.replication_factor,
        history: HistoryLimits {
            messages: config.chat.history_messages,
            bytes: config.chat.history_bytes,
            age_ms: config.chat.history_age_secs * 1_000,
        },
        max_rooms: config.chat.max_rooms,
        max_in_flight: config.chat.max_in_flight,
        ..CoreLimits::default()
    };
    let fencing = FencingConfig { removal_delay_ms: config.chat.ring_removal_delay_ms, ..FencingConfig::default() };
    let backplane = Backplane::start(&cluster, limits, fencing, config.chat.rebalance, &tasks, shutdown.clone());
    let drain_window = Duration::from_millis(config.chat.drain_window_ms);
    let status = tokio::spawn(publish_status(cluster.clone(), backplane.clone(), shutdown.clone()));
    let clients_stop = CancellationToken::new();

    let gateway = Arc::new(Gateway {
        cluster: cluster.clone(),
        started,
        version,
        cluster_name: config.cluster.clone(),
        replication_factor: config.replication_factor,
        config_summary: summary,
        backplane: backplane.clone(),
        chat: ChatSettings {
            limits: hubbub_proto::client::Limits { max_body: config.chat.max_body },
            hello_timeout: Duration::from_millis(config.chat.hello_timeout_ms),
            client_queue_bytes: config.chat.client_queue_bytes,
        },
        clients_stop: clients_stop.clone(),
        next_conn: Default::default(),
    });
    let app = hubbub_gateway::router(gateway);
    let http_stop = shutdown.clone();
    let server = tokio::spawn(async move { hubbub_gateway::serve(listener, app, http_stop).await });

    wait_for_signal().await;
    info!(window_ms = drain_window.as_millis() as u64, "draining: moving clients to other nodes");
    cluster.set_draining().await;
    let targets = other_nodes(&cluster);
    let asked = backplane.move_clients(&targets, drain_window).await;
    info!(asked, left = backplane.core().connections(), "closing the remaining client connections");
    clients_stop.cancel();
    // Sessions connected from now on see `clients_stop` and close themselves.
    backplane.core().close_all(CloseCode::GoingAway);
    let closed = wait_for(SHUTDOWN_STEP, || backplane.core().connections() == 0).await;
    if !closed {
        warn!("client connections still open after {SHUTDOWN_STEP:?}");
    }
    backplane.core().drain(now_ms());
    wait_for(SHUTDOWN_STEP, || backplane.core().unacked_handoffs() == 0).await;
    let unacked = backplane.core().unacked_handoffs();
    if unacked > 0 {
        warn!(unacked, "rooms handed off without acknowledgement");
    } else {
        info!("rooms handed off");
    }
    info!("leaving the cluster");
    let _ = tokio::time::timeout(SHUTDOWN_STEP, cluster.leave()).await;
    tokio::time::sleep(LEAVE_LINGER).await;
    shutdown.cancel();
    match tokio::time::timeout(SHUTDOWN_STEP, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server stopped with an error"),
        Ok(Err(e)) => warn!(error = %e, "HTTP server task failed"),
        Err(_) => warn!("HTTP connections still open after {SHUTDOWN_STEP:?}; closing them"),
    }
    let _ = status.await;
    tasks.close();
    let _ = tokio::time::timeout(SHUTDOWN_STEP, tasks.wait()).await;
    cluster.shutdown(SHUTDOWN_STEP).await;
    info!("stopped");
    Ok(())
}

/// Republishes load and connection count in node state.
async fn publish_status(cluster: Arc<Cluster>, backplane: Arc<Backplane>, shutdown: CancellationToken) {
    let mut meter = LoadMeter::new();
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let connections = backplane.core().connections() as u64;
                cluster.set_status(connections, meter.sample()).await;
            }
        }
    }
}

/// WebSocket URLs of the other active, non-draining members.
fn other_nodes(cluster: &Cluster) -> Vec<String> {
    let view = cluster.view().borrow().clone();
    view.active()
        .filter(|m| !m.is_self)
        .filter_map(|m| match &m.status {
            Some(s) if s.draining => None,
            Some(s) => Some(s.ws_url.clone()),
            None => Some(format!("ws://{}/ws", m.identity.http)),
        })
        .collect()
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held.
async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only ctrl-c stops this node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT"),
    }
}
