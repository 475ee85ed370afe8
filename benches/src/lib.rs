//! Criterion benchmarks of Hubbub's crates, one bench target per crate under
//! `benches/` (`ring`: lookups and rebuilds of `hubbub-ring`). The library
//! itself is empty.
//!
//! Run them with `cargo bench -p hubbub-benches`, or check that they still run
//! (each once, unmeasured) with `cargo bench -p hubbub-benches -- --test`.
//! Measured figures live in `BENCHMARKS.md` at the repository root.
