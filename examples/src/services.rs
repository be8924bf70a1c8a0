//! Building and running the services.

use std::net::SocketAddr;

use axum::Router;
use secureconnect_obs::logging::LogGuard;
use tokio::sync::watch;

use crate::config::Config;
use crate::kit::{bind, serve, Kit, Running};
use crate::sessions::LocalSessions;
use crate::{auth, gateway, storage, video};

/// One of the four services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// The API gateway.
    Gateway,
    /// Users, sessions, tokens, conversations.
    Auth,
    /// Files.
    Storage,
    /// Calls and signaling.
    Video,
}

impl ServiceKind {
    /// The service's name, in metrics, logs and audit events.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Auth => "auth",
            Self::Storage => "storage",
            Self::Video => "video",
        }
    }

    /// The address the configuration gives the service.
    pub fn addr(self, config: &Config) -> SocketAddr {
        match self {
            Self::Gateway => config.gateway_addr,
            Self::Auth => config.auth_addr,
            Self::Storage => config.storage_addr,
            Self::Video => config.video_addr,
        }
    }
}

/// Builds one service's router; `sessions` is shared by the services of the process,
/// `logs` is the process's log output (its metrics go on the service's `/metrics`).
///
/// # Errors
///
/// A message for a malformed configuration.
pub async fn build(
    kind: ServiceKind,
    config: &Config,
    jwt_secret: &str,
    sessions: &LocalSessions,
    logs: &LogGuard,
) -> Result<(Router, Running), String> {
    let mut kit = Kit::new(kind.name(), config, jwt_secret, sessions, logs).await?;
    let app = match kind {
        ServiceKind::Auth => {
            let db = kit.open_db(config, auth::migrations()).await?;
            auth::router(&kit, db)
                .map_err(|e| format!("cannot start the password hashing threads: {e}"))?
        }
        ServiceKind::Storage => {
            let db = kit.open_db(config, storage::migrations()).await?;
            storage::router(&kit, config, jwt_secret, db).await?
        }
        ServiceKind::Video => {
            let db = kit.open_db(config, video::history::migrations()).await?;
            video::router(&mut kit, config, db)?
        }
        ServiceKind::Gateway => gateway::router(
            &mut kit,
            config,
            config.auth_addr,
            config.storage_addr,
            &config.video_upstreams,
        )?,
    };
    kit.finish(app)
}

/// Runs `kinds` until SIGINT or SIGTERM, then drains connections and flushes the audit
/// trails; `logs` is the process's log output.
///
/// # Errors
///
/// A message for a malformed configuration, an address in use, or a server failure.
pub async fn run(
    kinds: &[ServiceKind],
    config: &Config,
    jwt_secret: &str,
    logs: &LogGuard,
) -> Result<(), String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    let mut running = Vec::new();
    // One process, one memory of sessions: a logout holds in every service it runs.
    let sessions = LocalSessions::new();
    for &kind in kinds {
        let addr = kind.addr(config);
        let listener = bind(kind.name(), addr).await?;
        let (router, handle) = build(kind, config, jwt_secret, &sessions, logs).await?;
        running.push(handle);
        let mut stop = stop_rx.clone();
        eprintln!("{} listening on http://{addr}", kind.name());
        tracing::info!(component = kind.name(), %addr, "listening");
        servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            serve(listener, router, shutdown).await
        }));
    }
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut failure = None;
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(format!("server failed: {e}")),
            Err(e) => failure = Some(format!("server task failed: {e}")),
        }
    }
    for handle in &running {
        handle.shutdown();
    }
    failure.map_or(Ok(()), Err)
}

/// The body of every service binary: configuration, logging, then [`run`].
pub async fn main(
    kinds: &[ServiceKind],
    log_name: &str,
    all_in_one: bool,
) -> std::process::ExitCode {
    let result = async {
        let config = Config::from_env().map_err(|e| e.to_string())?;
        let logs = secureconnect_obs::LogConfig::from_env(log_name)
            .and_then(secureconnect_obs::logging::init)
            .map_err(|e| crate::error::chain(&e))?;
        let secret = match (&config.jwt_secret, all_in_one) {
            (Some(secret), _) => secret.clone(),
            (None, true) => {
                eprintln!("JWT_SECRET is unset: using a random one for this run (tokens die with the process)");
                format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
            }
            (None, false) => config.require_jwt_secret().map_err(|e| e.to_string())?,
        };
        run(kinds, &config, &secret, &logs).await
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{log_name}: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
