//! Launches real `hubbub node` processes on free ports and observes them, for
//! full-stack tests.
//!
//! - [`Node`] is one `hubbub node` child process started with [`NodeOpts`]:
//!   ephemeral ports, a cluster key, seeds. Its stdout and stderr go to a log
//!   file whose tail is printed when a test panics (set `HUBBUB_TEST_LOGS` to
//!   a directory to keep every log), and dropping it kills and reaps it.
//! - [`Cluster`] starts `n1..nN` (n1 is the seed), restarts nodes by name and
//!   waits for convergence.
//! - [`NodeApi`] is a blocking client for the debug API with typed views
//!   ([`MembersView`], [`RingView`], [`NodeInfo`]).
//! - [`wait_until`] polls a check until it passes or a deadline expires; tests
//!   wait for conditions this way, never with fixed sleeps.
//! - [`browser`] drives headless chromium over the DevTools protocol, for
//!   tests of the web client.
//! - [`chaos`] records what many clients sent, had acknowledged and were
//!   delivered, and checks the history (acked-but-lost, unexpected,
//!   duplicates, order, gaps), for the chaos tests.
//! - [`netns`] runs nodes in network namespaces on a bridge, so a test can
//!   partition one node from the others (Linux, root).
//! - [`Process`] and [`run_to_exit`] are the lower level: any command, e.g.
//!   `hubbub dev` or a node that is expected to refuse its configuration.
//!
//! The binary is found through `HUBBUB_BIN`, else `target/debug/hubbub` next
//! to the test executable; build it first with `cargo build -p hubbub`.

mod api;
mod binary;
pub mod browser;
pub mod chaos;
mod cluster;
pub mod netns;
mod node;
mod ports;
mod process;
mod wait;

pub use api::{MemberInfo, MemberState, MembersView, NodeApi, NodeInfo, RingMember, RingView};
pub use binary::{hubbub_bin, hubbub_command};
pub use cluster::{Cluster, random_key};
pub use node::{Listening, Node, NodeOpts};
pub use ports::free_port_range;
pub use process::{Finished, Process, run_to_exit};
pub use wait::{deadline_in, wait_until};
