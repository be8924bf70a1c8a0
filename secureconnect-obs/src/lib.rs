//! Observability for tower and axum HTTP services: RED request metrics with bounded
//! labels, a Prometheus `/metrics` endpoint, process metrics, and JSON logs that Loki
//! collectors ingest.
//!
//! Everything records into a [`prometheus_client::registry::Registry`] that you own and
//! pass in: two services (or two tests) in one process never share series, and nothing
//! here installs global state unless you call [`logging::init`].
//!
//! # Wrapping an existing axum router
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use prometheus_client::registry::Registry;
//! use secureconnect_obs::{HttpMetricsConfig, HttpMetricsLayer, MetricsEndpointConfig, MetricsService};
//!
//! # fn existing_router() -> Router { Router::new().route("/users/{id}", get(|| async { "hi" })) }
//! let mut registry = Registry::default();
//! let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut registry)?;
//! secureconnect_obs::process::register(secureconnect_obs::build_info!(), &mut registry);
//! let endpoint = MetricsService::new(Arc::new(registry), MetricsEndpointConfig::default())?;
//!
//! let app = existing_router()
//!     .route_service("/metrics", endpoint)
//!     .layer(metrics);
//! // `GET /metrics` now answers; every other request is recorded as
//! // http_server_request_duration_seconds{http_request_method, http_route, http_response_status_code}.
//! # let _: Router = app;
//! # Ok::<(), secureconnect_obs::Error>(())
//! ```
//!
//! Mounting the endpoint as a route costs the other routes nothing. For a plain tower or
//! hyper service, or to keep the router untouched, [`MetricsEndpointLayer`] answers
//! `GET /metrics` in front of any service instead:
//! `.layer((MetricsEndpointLayer::new(registry, MetricsEndpointConfig::default())?, metrics))`.
//!
//! # Conventions
//!
//! The shape every public item takes, shared with the other SecureConnect crates:
//!
//! - Construction: `X::new(dependencies…, XConfig, &mut Registry)`, the registry last;
//!   anything that validates returns `Result<_, Error>`.
//! - Configuration: `XConfig` with private fields, consuming setters named after the
//!   field, checked once, in `X::new`. Configs have no getters named like their setters
//!   (Rust has no overloading); a required constructor argument may have one
//!   ([`LogConfig::service`]).
//! - Middleware: `FooLayer` builds `Foo<S>` (with `get_ref`, `get_mut`, `into_inner`),
//!   whose future is `foo::ResponseFuture` and body `foo::ResponseBody`.
//! - Errors: one [`Error`], with [`kind`](Error::kind) and `is_*` predicates; its
//!   `Display` never repeats its [`source`](std::error::Error::source).
//!
//! # Modules
//!
//! - [`request_metrics`]: the recording middleware ([`HttpMetricsLayer`], [`HttpMetrics`]).
//! - [`endpoint`]: serving the registry ([`MetricsEndpointLayer`], [`MetricsService`]).
//! - [`process`]: `process_*` metrics and `build_info`.
//! - [`logging`]: JSON lines on stdout and in rolling files ([`LogConfig`], [`logging::init`]).
//! - [`request_trace`]: W3C trace context for every request ([`RequestTraceLayer`]):
//!   `traceparent` continued or a trace started, `trace_id` and `span_id` on every line.
//! - `db_pool` (feature `sqlx`): the connections of a sqlx pool, busy, idle and allowed,
//!   read at scrape time, and the wait to acquire one (`DbPoolMetrics`).
//! - [`trace`]: a request span and a `request finished` line for tower-http's `TraceLayer`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "sqlx")]
pub mod db_pool;
pub mod endpoint;
mod error;
mod exemplar;
mod histogram;
mod labels;
pub mod logging;
pub mod process;
pub mod request_metrics;
pub mod request_trace;
mod route;
pub mod trace;

pub use endpoint::{MetricsEndpoint, MetricsEndpointConfig, MetricsEndpointLayer, MetricsService};
pub use error::{Error, ErrorKind};
pub use labels::{MethodLabel, RouteLabel};
pub use logging::{JsonLayer, LogConfig, LogGuard};
pub use request_metrics::{HttpMetrics, HttpMetricsConfig, HttpMetricsLayer};
pub use request_trace::{RequestTrace, RequestTraceConfig, RequestTraceLayer};
pub use route::ClassifyRoute;
#[cfg(feature = "axum")]
pub use route::MatchedPathRoute;
pub use trace::{RequestFinished, RequestSpan};
