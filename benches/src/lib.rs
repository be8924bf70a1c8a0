//! Criterion benchmarks of the SecureConnect crates (see `benches/`; run them with
//! `cargo bench -p secureconnect-benches`) and the `soak` binary. The library holds what
//! the soak keeps apart from its harness: [`timeline`], the per-second record of a run
//! and its SVG picture, and [`mix`], its figures per request class and the
//! with/without-layers comparison.

pub mod mix;
pub mod timeline;
