//! Hubbub's benchmarks. The library itself is empty; the crate holds:
//!
//! - criterion benches under `benches/`: `ring` (lookups and rebuilds of
//!   `hubbub-ring`) and `hot_paths` (client JSON, node-link frames, fan-out
//!   in the backplane core);
//! - the load generator `hubbub-loadgen` (`src/loadgen/`), which speaks
//!   Hubbub's protocol and NATS's over WebSocket, and `compare.sh`, which runs
//!   the same workloads against a 3-node Hubbub and a 3-node NATS cluster.
//!
//! Check that the benches still run (each once, unmeasured) with
//! `cargo bench -p hubbub-benches -- --test`. Measured figures and the exact
//! commands live in `BENCHMARKS.md` at the repository root.
