//! Reference services built on the SecureConnect crates: `gateway`, `auth`, `storage`
//! and `video`, and `secureconnect`, which runs all four in one process.
//!
//! Run them with `cargo run --release -p secureconnect-examples --bin secureconnect`;
//! each binary's doc says what it serves and how to try it. They need no Redis (degraded
//! mode, in-memory fallbacks) and use the one at `REDIS_URL` when it is there.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod gateway;
pub mod kit;
pub mod quickstart;
pub mod services;
pub mod sessions;
pub mod storage;
pub mod token;
pub mod video;

use std::net::SocketAddr;

/// Reads a socket address from the environment variable `name`, or `default` when it
/// is unset. A malformed value is an error that names the variable.
///
/// # Errors
///
/// A message naming the variable.
pub fn addr_from_env(name: &str, default: SocketAddr) -> Result<SocketAddr, String> {
    match std::env::var(name) {
        Ok(value) => value.parse().map_err(|e| {
            format!("{name}={value:?} is not a socket address like 127.0.0.1:8080: {e}")
        }),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM, for `axum::serve(..).with_graceful_shutdown`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received, draining connections");
}
