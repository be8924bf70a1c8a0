//! All four reference services (gateway, auth, storage, video) in one process.
//!
//! ```text
//! cargo run --release -p secureconnect-examples --bin secureconnect
//! ```
//!
//! Gateway on 8080, auth 8081, video 8083, storage 8084 (`GATEWAY_ADDR`, `AUTH_ADDR`,
//! `VIDEO_ADDR`, `STORAGE_ADDR`). Works without Redis (degraded mode, in-memory
//! fallbacks) and uses the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`) when
//! one is there. `JWT_SECRET` is generated for the run when unset. Stdout carries JSON
//! lines only (logs and audit events); start-up messages go to stderr. The repository's
//! README walks through trying each part with curl.

use secureconnect_examples::services::{main as run, ServiceKind};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(
        &[
            ServiceKind::Auth,
            ServiceKind::Storage,
            ServiceKind::Video,
            ServiceKind::Gateway,
        ],
        "secureconnect",
        true,
    )
    .await
}
