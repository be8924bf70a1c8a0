//! Criterion benchmarks of the SecureConnect crates; see `benches/`. Run them with
//! `cargo bench -p secureconnect-benches`. This crate has no library code.
