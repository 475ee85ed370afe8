//! `hubbub`: a node of the Hubbub chat cluster, and a local dev cluster.
//!
//! - `hubbub node ...` runs one node ([`node`], settings in [`config`]);
//! - `hubbub dev --nodes N` runs N nodes as separate processes on loopback
//!   ([`dev`]);
//! - `hubbub bot --url URL` runs a chat bot on one connection ([`bot`]).
//!
//! This binary is the only place that wires components together, owns the
//! signal handling and the shutdown order, and uses `anyhow`.

mod bot;
mod config;
mod dev;
mod load;
mod node;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a node allocates and frees small
/// buffers for every frame (strings of chat messages, encoded frames,
/// queue nodes) from several threads, and glibc's allocator was ~18 % of a
/// node's CPU at saturation (`_int_malloc`, `malloc_consolidate`,
/// `unlink_chunk`, `_int_free`). See BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "hubbub", version, about = "Hubbub: a clustered real-time chat backend with no broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node.
    Node(Box<config::NodeArgs>),
    /// Run a local cluster of separate node processes on loopback.
    Dev(dev::DevArgs),
    /// Run a chat bot on one connection: echo, scripted replies or a steady message rate.
    Bot(bot::BotArgs),
}

/// Exit code for a refused setting or command line.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line without its "error: " prefix.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            eprintln!("hubbub: {}", first.trim_start_matches("error: "));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Node(args) => node::main(*args),
        Command::Dev(args) => dev::main(args),
        Command::Bot(args) => bot::main(args),
    }
}
