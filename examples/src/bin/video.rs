//! The video reference service on its own; see `secureconnect_examples::video`.
//!
//! ```text
//! JWT_SECRET=$(head -c 32 /dev/urandom | xxd -p -c 64) \
//!   cargo run --release -p secureconnect-examples --bin video
//! ```
//!
//! Configuration: see `secureconnect_examples::config::Config` (`REDIS_URL`, the
//! `*_ADDR` variables, `JWT_SECRET` (required), `LOG_DIR`, `AUDIT_FILE`, …). Stdout
//! carries JSON lines only; start-up messages go to stderr.

use secureconnect_examples::services::{main as run, ServiceKind};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(&[ServiceKind::Video], "video", false).await
}
