//! An existing axum router wrapped with secureconnect-obs in one line.
//!
//! Run it:
//!
//! ```text
//! cargo run --release -p secureconnect-examples --bin obs-quickstart
//! curl -s localhost:3000/users/42
//! curl -s localhost:3000/metrics | grep http_server
//! ```
//!
//! Environment: `QUICKSTART_ADDR` (default `127.0.0.1:3000`), `RUST_LOG` (default
//! `info`), `LOG_DIR` (also write daily log files there). Stdout carries JSON log lines
//! only; start-up messages for people go to stderr.

use std::net::SocketAddr;
use std::process::ExitCode;

use secureconnect_examples::{addr_from_env, quickstart, shutdown_signal};
use secureconnect_obs::{logging, LogConfig};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("obs-quickstart: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let addr = addr_from_env("QUICKSTART_ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)))?;
    let _logs = LogConfig::from_env("quickstart")
        .and_then(logging::init)
        // The error's Display leaves its cause (the parser's reason) to `source()`.
        .map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })?;
    let app = quickstart::instrument(quickstart::existing_router()).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    eprintln!("obs-quickstart listening on http://{addr} (try /users/42 and /metrics)");
    tracing::info!(%addr, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))
}
