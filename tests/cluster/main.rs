//! Full-stack cluster tests: real `hubbub node` processes on ephemeral ports,
//! observed through their debug API, under real faults (SIGKILL, SIGSTOP,
//! SIGTERM, hostile UDP, wrong keys, bad configuration).
//!
//! They run the binary at `target/debug/hubbub` (or `HUBBUB_BIN`), so build
//! it first: `cargo build -p hubbub && cargo test -p hubbub-tests`. Timings
//! are printed; see them with `-- --nocapture`. Every test starts its own
//! processes, bounds every wait with a deadline, and kills what it started
//! when it ends, passing or not (a failing test prints its nodes' log tails).

mod bad_config;
mod chat_bad_input;
mod chat_batch;
mod chat_ring_change;
mod chat_routing;
mod chat_util;
mod client_resume;
mod convergence;
mod dev_launcher;
mod faults;
mod hostile;
mod observe;
mod web_browser;
