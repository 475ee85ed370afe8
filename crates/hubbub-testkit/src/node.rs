//! One `hubbub node` process.

use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::api::NodeApi;
use crate::binary::hubbub_command;
use crate::process::Process;

/// How to start a node. [`NodeOpts::new`] gives ephemeral ports on
/// 127.0.0.1 and no seeds; change the fields for anything else.
#[derive(Clone, Debug)]
pub struct NodeOpts {
    /// `--name`.
    pub name: String,
    /// `--cluster-key`; `None` passes no key flag.
    pub cluster_key: Option<String>,
    /// `--seeds`; empty passes no seeds flag.
    pub seeds: Vec<SocketAddr>,
    /// `--listen`; `None` passes no flag (the env or config file decides).
    pub listen: Option<String>,
    /// `--gossip`; `None` passes no flag.
    pub gossip: Option<String>,
    /// `--state-gossip`; `None` passes no flag.
    pub state_gossip: Option<String>,
    /// Further arguments after the ones above.
    pub args: Vec<String>,
    /// Environment variables for the node (inherited `HUBBUB_*` are removed).
    pub env: Vec<(String, String)>,
    /// How long to wait for the `listening` line.
    pub startup_timeout: Duration,
}

impl NodeOpts {
    /// A node named `name` with cluster key `key`, listening on ephemeral
    /// ports of 127.0.0.1.
    pub fn new(name: &str, key: &str) -> NodeOpts {
        let ephemeral = Some("127.0.0.1:0".to_owned());
        NodeOpts {
            name: name.to_owned(),
            cluster_key: Some(key.to_owned()),
            seeds: Vec::new(),
            listen: ephemeral.clone(),
            gossip: ephemeral.clone(),
            state_gossip: ephemeral,
            args: Vec::new(),
            env: Vec::new(),
            // Generous: a debug build on a loaded 2-core machine.
            startup_timeout: Duration::from_secs(20),
        }
    }

    /// The `hubbub node ...` arguments these options stand for.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["node".to_owned(), "--name".to_owned(), self.name.clone()];
        let flags = [
            ("--listen", &self.listen),
            ("--gossip", &self.gossip),
            ("--state-gossip", &self.state_gossip),
            ("--cluster-key", &self.cluster_key),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value.clone()]);
            }
        }
        if !self.seeds.is_empty() {
            let seeds: Vec<String> = self.seeds.iter().map(SocketAddr::to_string).collect();
            args.extend(["--seeds".to_owned(), seeds.join(",")]);
        }
        args.extend(self.args.iter().cloned());
        args
    }
}

/// The line a node prints on stdout once all its listeners are bound.
#[derive(Clone, Debug, Deserialize)]
pub struct Listening {
    /// Always `"listening"`.
    pub event: String,
    /// Node name.
    pub name: String,
    /// Node id, 16 hex digits.
    pub node_id: String,
    /// Bound HTTP address.
    pub http: SocketAddr,
    /// Bound SWIM address.
    pub gossip: SocketAddr,
    /// Bound chitchat address.
    pub state: SocketAddr,
}

/// A running `hubbub node`; dropping it kills and reaps the process.
pub struct Node {
    process: Process,
    listening: Listening,
    api: NodeApi,
    started_at: Instant,
}

impl Node {
    /// Starts `hubbub node` with `opts` and waits for its `listening` line.
    /// Panics (printing the node's log) if the line does not come in time or
    /// is not the documented JSON.
    pub fn spawn(opts: NodeOpts) -> Node {
        Node::spawn_with_prefix(opts, &[])
    }

    /// [`Node::spawn`] run through a command `prefix` (e.g. `ip netns exec
    /// ns1`), which must exec the binary in place so that the PID stays the
    /// node's.
    pub fn spawn_with_prefix(opts: NodeOpts, prefix: &[String]) -> Node {
        let mut cmd = hubbub_command();
        if let Some((program, rest)) = prefix.split_first() {
            let bin = cmd.get_program().to_owned();
            let mut wrapped = Command::new(program);
            wrapped.args(rest).arg(bin);
            for (key, value) in cmd.get_envs() {
                match value {
                    Some(value) => wrapped.env(key, value),
                    None => wrapped.env_remove(key),
                };
            }
            cmd = wrapped;
        }
        cmd.args(opts.to_args());
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        let process = Process::spawn(&opts.name, cmd);
        let line = process
            .next_stdout_line(Instant::now() + opts.startup_timeout)
            .unwrap_or_else(|e| panic!("node {} did not report listening: {e}", opts.name));
        let listening: Listening = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("node {}: first stdout line is not the listening JSON ({e}): {line}", opts.name)
        });
        assert_eq!(listening.event, "listening", "node {}: unexpected first line {line}", opts.name);
        assert_eq!(listening.name, opts.name, "node {}: listening line names another node", opts.name);
        let ports = [listening.http.port(), listening.gossip.port(), listening.state.port()];
        assert!(!ports.contains(&0), "node {}: listening line has port 0: {line}", opts.name);
        process.note(&format!("listening: {line}"));
        let api = NodeApi::new(listening.http);
        Node { process, listening, api, started_at: Instant::now() }
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.listening.name
    }

    /// Node id from the listening line.
    pub fn node_id(&self) -> &str {
        &self.listening.node_id
    }

    /// Bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.listening.http
    }

    /// Bound SWIM (gossip) address.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.listening.gossip
    }

    /// Bound chitchat (state) address.
    pub fn state_addr(&self) -> SocketAddr {
        self.listening.state
    }

    /// The whole listening line.
    pub fn listening(&self) -> &Listening {
        &self.listening
    }

    /// When the listening line was read.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The debug API client.
    pub fn api(&self) -> &NodeApi {
        &self.api
    }

    /// The underlying process (log, PID, signals by name).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The process's OS id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILLs the node and reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        self.process.kill9()
    }

    /// Freezes the node (SIGSTOP).
    pub fn sigstop(&self) {
        self.process.sigstop();
    }

    /// Resumes the node (SIGCONT).
    pub fn sigcont(&self) {
        self.process.sigcont();
    }

    /// Asks the node to leave and exit (SIGTERM).
    pub fn sigterm(&self) {
        self.process.sigterm();
    }

    /// Waits for the node to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}
