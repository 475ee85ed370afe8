//! Chaos tests: real `hubbub node` processes, hundreds of resilient clients,
//! real faults (kill -9, a network partition between namespaces, SIGTERM,
//! a node joining), and a history of every send, ack and delivery checked
//! afterwards (`hubbub_testkit::chaos`): nothing acknowledged is lost,
//! nothing is duplicated, every room's seqs go on in order without gaps.
//!
//! Each test prints one `chaos: run=…` summary line and its figures
//! (detection, resume, failover, rebalance times); see them with
//! `-- --nocapture`. They need the binary at `target/debug/hubbub` (or
//! `HUBBUB_BIN`), and run one at a time: `cargo test -p hubbub-tests --test
//! chaos -- --test-threads=1`. The partition test needs root (network
//! namespaces, iptables).

mod kill;
mod load;
mod partition;
mod rebalance;
mod verdict;
