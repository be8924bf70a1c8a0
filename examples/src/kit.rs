//! What every reference service shares: metrics, `/metrics`, `/health`, `/ready`,
//! request ids and spans, the audit pipeline, the Redis client, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use secureconnect_audit::{
    AuditConfig, AuditEvent, AuditLayer, AuditPipeline, AuditPipelineConfig, AuditSink, FileSink,
    FileSinkConfig, Format, TracingSink, TrustedProxies,
};
use secureconnect_obs::logging::LogGuard;
use secureconnect_obs::{
    HttpMetricsConfig, HttpMetricsLayer, MatchedPathRoute, MetricsEndpointConfig, MetricsService,
    RequestTraceConfig, RequestTraceLayer,
};
use secureconnect_redis_fallback::RedisClient;
use tower::ServiceBuilder;

use crate::config::Config;
use crate::error::{chain, ApiError};
use crate::sessions::{LocalSessions, SessionStore};
use crate::token::{Authn, Tokens};

/// Writes each batch to the tracing sink and, when `AUDIT_FILE` is set, to the
/// hash-chained file.
struct AuditSinks {
    tracing: TracingSink,
    file: Option<FileSink>,
}

impl AuditSink for AuditSinks {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), secureconnect_audit::Error> {
        self.tracing.write(events)?;
        if let Some(file) = &mut self.file {
            file.write(events)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), secureconnect_audit::Error> {
        if let Some(file) = &mut self.file {
            file.flush()?;
        }
        Ok(())
    }
}

/// A service under construction: its registry, metrics, Redis client and audit trail.
#[derive(Debug)]
pub struct Kit {
    /// The service's name (`gateway`, `auth`, `storage`, `video`).
    pub name: &'static str,
    /// Its registry; register more metrics before [`Kit::finish`].
    pub registry: Registry,
    /// Request metrics.
    pub metrics: HttpMetricsLayer<MatchedPathRoute>,
    /// Redis, degraded when it is not there.
    pub redis: RedisClient,
    /// The audit trail.
    pub audit: AuditPipeline,
    /// Token verification.
    pub tokens: Tokens,
    /// Session checks (logout revokes tokens).
    pub sessions: SessionStore,
    /// The service's database, once [`Kit::open_db`] opened it.
    pub db: Option<crate::db::Db>,
    proxies: TrustedProxies,
    metrics_token: Option<String>,
    layers: bool,
}

/// What is left to do when a service stops.
#[derive(Clone, Debug)]
pub struct Running {
    audit: AuditPipeline,
    name: &'static str,
}

impl Running {
    /// Flushes the audit trail (up to 5 s).
    pub fn shutdown(&self) {
        let report = self.audit.shutdown(Duration::from_secs(5));
        tracing::info!(
            component = self.name,
            written = report.written,
            dropped = report.dropped,
            abandoned = report.abandoned,
            "audit trail flushed"
        );
    }
}

impl Kit {
    /// What the service's handlers check tokens with (its router state holds it).
    pub fn authn(&self) -> Authn {
        Authn {
            tokens: self.tokens.clone(),
            sessions: self.sessions.clone(),
        }
    }

    /// Sets up the common parts of service `name`; `sessions` is what the process knows
    /// about sessions, shared by the services it runs; `logs` is the process's log
    /// output, whose `log_lines_dropped_total` the service's `/metrics` shows.
    ///
    /// # Errors
    ///
    /// A message for a malformed configuration.
    pub async fn new(
        name: &'static str,
        config: &Config,
        jwt_secret: &str,
        sessions: &LocalSessions,
        logs: &LogGuard,
    ) -> Result<Self, String> {
        let mut registry = Registry::default();
        logs.register_metrics(&mut registry);
        let metrics = HttpMetricsLayer::new(
            HttpMetricsConfig::default().const_label("service", name),
            &mut registry,
        )
        .map_err(|e| chain(&e))?;
        secureconnect_obs::process::register(secureconnect_obs::build_info!(), &mut registry);
        let redis = RedisClient::connect(config.redis_client_config(), &mut registry)
            .await
            .map_err(|e| {
                format!(
                    "REDIS_URL={:?} (REDIS_MODE={}): {}",
                    config.redis_url,
                    config.redis_mode.as_str(),
                    chain(&e)
                )
            })?;
        let file = match &config.audit_file {
            Some(path) => {
                let mut file = FileSinkConfig::default();
                if let Some(key) = &config.audit_key {
                    file = file.chain_key(key.clone());
                }
                // The services of one process share the file's one chain.
                Some(
                    FileSink::open(path, file)
                        .map_err(|e| format!("AUDIT_FILE={}: {}", path.display(), chain(&e)))?,
                )
            }
            None => None,
        };
        let audit = AuditPipeline::new(
            AuditSinks {
                tracing: TracingSink::new(Format::Native),
                file,
            },
            AuditPipelineConfig::default(),
            &mut registry,
        )
        .map_err(|e| format!("audit: {}", chain(&e)))?;
        let proxies = config
            .trusted_proxies
            .parse()
            .map_err(|e| format!("TRUSTED_PROXIES: {}", chain(&e)))?;
        let sessions = SessionStore::new(redis.clone(), sessions.clone(), &mut registry);
        Ok(Self {
            name,
            registry,
            metrics,
            redis,
            audit,
            tokens: Tokens::new(jwt_secret, Duration::from_secs(15 * 60)),
            sessions,
            db: None,
            proxies,
            metrics_token: config.metrics_token.clone(),
            layers: config.layers,
        })
    }

    /// Opens the service's database (see [`crate::db`]) and applies its `migrations`;
    /// `/ready` reports it from then on.
    ///
    /// # Errors
    ///
    /// A message naming the database (password hidden).
    pub async fn open_db(
        &mut self,
        config: &Config,
        migrations: sqlx::migrate::Migrator,
    ) -> Result<crate::db::Db, String> {
        let db = crate::db::Db::open(self.name, config, migrations, &mut self.registry).await?;
        self.db = Some(db.clone());
        Ok(db)
    }

    /// The service's router with `/health`, `/ready`, `/metrics` (asking for
    /// `METRICS_TOKEN` as a bearer token when it is set), a JSON 404 fallback, request
    /// ids, request spans, metrics and audit around `app`.
    ///
    /// # Errors
    ///
    /// A message for a metrics token the endpoint refuses (empty, or not visible ASCII).
    pub fn finish(self, app: Router) -> Result<(Router, Running), String> {
        let ready = ReadyState {
            name: self.name,
            redis: self.redis.clone(),
            db: self.db.clone(),
        };
        let running = Running {
            audit: self.audit.clone(),
            name: self.name,
        };
        let mut endpoint = MetricsEndpointConfig::default();
        if let Some(token) = &self.metrics_token {
            endpoint = endpoint.bearer_token(token.as_str());
        }
        let metrics = MetricsService::new(Arc::new(self.registry), endpoint)
            .map_err(|e| format!("METRICS_TOKEN: {}", chain(&e)))?;
        let router = app
            .route(
                "/health",
                get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
            )
            .route("/ready", get(ready_handler).with_state(Arc::new(ready)))
            .route_service("/metrics", metrics)
            .fallback(|| async { ApiError::not_found("no such route") });
        if !self.layers {
            // SC_LAYERS=off: no request ids, spans, metrics or audit (for measuring them).
            return Ok((router, running));
        }
        let router = service_stack(router, self.name, self.metrics, self.audit, self.proxies);
        Ok((router, running))
    }
}

/// The layers of every reference service around `router`, outermost first: the audit
/// layer (it mints the request id the layers inside carry and gives it back in the
/// response's `X-Request-Id`, and needs a body type it can answer `503` with in
/// fail-closed mode), the request's span and
/// trace context (`traceparent` continued or a trace started; the metrics inside read it
/// for exemplars) and request metrics. What the handlers need travels in their routers'
/// state, not in the request's extensions (an extension is an allocation and a hash-map
/// insert per request). The benchmarks measure this very function.
pub fn service_stack(
    router: Router,
    name: &'static str,
    metrics: HttpMetricsLayer<MatchedPathRoute>,
    audit: AuditPipeline,
    proxies: TrustedProxies,
) -> Router {
    // One `Router::layer`: axum wraps (and boxes) every route once per call, so
    // the whole stack goes in at once.
    router.layer(
        ServiceBuilder::new()
            .layer(AuditLayer::new(
                audit,
                AuditConfig::default()
                    .service_name(name)
                    .trusted_proxies(proxies),
            ))
            .layer(RequestTraceLayer::new(
                RequestTraceConfig::default().component(name),
            ))
            .layer(metrics),
    )
}

#[derive(Debug)]
struct ReadyState {
    name: &'static str,
    redis: RedisClient,
    db: Option<crate::db::Db>,
}

async fn ready_handler(
    State(state): State<Arc<ReadyState>>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    // Ready also when Redis is degraded: the service keeps serving from its fallbacks.
    let mut body = serde_json::json!({
        "status": "ready",
        "service": state.name,
        "redis": state.redis.health().as_str(),
    });
    if state.redis.is_cluster() {
        // A master down degrades its slots only: how many take their fallback now.
        body["redis_slots_down"] = state.redis.slots_down().into();
    }
    let mut status = axum::http::StatusCode::OK;
    if let Some(db) = &state.db {
        // Not ready without its database: the service has no fallback for its records.
        let up = db.is_up().await;
        body["database"] = if up { "up" } else { "down" }.into();
        if !up {
            body["status"] = "unavailable".into();
            status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    (status, Json(body))
}

/// Serves `router` on `listener` until `shutdown` completes, with peer addresses for
/// the audit trail.
///
/// # Errors
///
/// If the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Binds `addr`, with a message naming it on failure.
///
/// # Errors
///
/// If the address cannot be bound.
pub async fn bind(name: &str, addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{name}: cannot listen on {addr}: {e}"))
}
