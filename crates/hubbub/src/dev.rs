//! `hubbub dev`: a local cluster of N separate `hubbub node` processes on
//! loopback, each with its own ports, all traffic over real UDP and TCP.
//!
//! Node `i` (names n1..nN) listens on `base + 10·(i−1)` (HTTP), `+1` (SWIM)
//! and `+2` (node state); every node seeds to n1. A fresh cluster key is
//! generated per run and passed through the environment (not the command
//! line, which other users can read). Ctrl-c or SIGTERM stops every node
//! gracefully, then exits.

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `hubbub dev` flags.
#[derive(Args, Debug)]
pub(crate) struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    nodes: u16,
    /// First port; node i uses base + 10·(i−1) for HTTP, +1 and +2 for gossip.
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u16).range(1..=65000))]
    base_port: u16,
}

/// How long nodes get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a node gets to print its `listening` line.
const START_DEADLINE: Duration = Duration::from_secs(20);

pub(crate) fn main(args: DevArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubbub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubbub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn run(args: DevArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let key = generate_key();
    let base = u32::from(args.base_port);
    let last_port = base + 10 * (u32::from(args.nodes) - 1) + 2;
    anyhow::ensure!(last_port <= 65_535, "--base-port {base} leaves no room for {} nodes", args.nodes);
    let seed = format!("127.0.0.1:{}", base + 1);
    let mut children: Vec<(String, Child)> = Vec::new();
    println!("hubbub dev: starting {} nodes (cluster key generated for this run)", args.nodes);
    for i in 0..u32::from(args.nodes) {
        let name = format!("n{}", i + 1);
        let port = base + 10 * i;
        let mut cmd = Command::new(&exe);
        cmd.arg("node")
            .args(["--name", &name])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--gossip", &format!("127.0.0.1:{}", port + 1)])
            .args(["--state-gossip", &format!("127.0.0.1:{}", port + 2)])
            .env("HUBBUB_CLUSTER_KEY", &key)
            .env_remove("HUBBUB_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if i > 0 {
            cmd.args(["--seeds", &seed]);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut children).await;
                anyhow::bail!("cannot start node {name}: {e}");
            }
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_DEADLINE, lines.next_line()).await;
        children.push((name.clone(), child));
        match line {
            Ok(Ok(Some(l))) if l.contains("\"listening\"") => {
                println!(
                    "  {name}  http://127.0.0.1:{port}/  ws://127.0.0.1:{port}/ws  debug: http://127.0.0.1:{port}/debug/members"
                );
            }
            _ => {
                stop_all(&mut children).await;
                anyhow::bail!("node {name} did not start (see its log above)");
            }
        }
        // Keep reading so the pipe never fills; nodes print nothing else.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }
    println!("hubbub dev: cluster running; press ctrl-c to stop");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let exited = async {
        // If a node exits on its own, stop the rest: a dev cluster with a hole
        // in it would only confuse.
        loop {
            for (name, child) in children.iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return (name.clone(), status);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let failed = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        (name, status) = exited => Some((name, status)),
    };
    println!("hubbub dev: stopping");
    stop_all(&mut children).await;
    match failed {
        None => Ok(()),
        Some((name, status)) => anyhow::bail!("node {name} exited ({status}); stopped the others"),
    }
}

/// SIGTERM to every child, then wait; SIGKILL whoever outlives the grace.
async fn stop_all(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for (name, child) in children.iter_mut() {
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("hubbub dev: {name} did not stop within {STOP_GRACE:?}; killing it");
                let _ = child.kill().await;
            }
        }
    }
}
