//! Full-stack tests for Hubbub live in `cluster/` (one test binary, `cargo test -p hubbub-tests`); this library is empty.
