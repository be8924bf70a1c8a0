//! The `/metrics` endpoint: a layer that answers `GET /metrics` and passes everything
//! else through, and a stand-alone service for a route or a separate listener.
//!
//! Rendering is kept apart from serving: [`negotiate`] picks the exposition format
//! from `Accept`, [`accepts_gzip`] reads `Accept-Encoding`, [`render`] encodes a
//! registry, and all three are pure functions.
//!
//! - OpenMetrics text (`application/openmetrics-text; version=1.0.0`, ending `# EOF`)
//!   when the client's `Accept` prefers it, as Prometheus does by default;
//!   otherwise the Prometheus text format with the exact content type
//!   `text/plain; version=0.0.4; charset=utf-8`.
//! - gzip when `Accept-Encoding` accepts it.
//! - An optional bearer token: without the right `Authorization: Bearer …` header the
//!   endpoint answers `401`.
//!
//! The pieces, as in tower-http: [`MetricsEndpointConfig`] (validated once, when the
//! layer or service is made), [`MetricsEndpointLayer`] which builds the middleware
//! [`MetricsEndpoint`], its [`ResponseFuture`] and [`ResponseBody`]; and the
//! stand-alone [`MetricsService`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use prometheus_client::registry::Registry;
//! use secureconnect_obs::{MetricsEndpointConfig, MetricsEndpointLayer};
//!
//! let registry = Arc::new(Registry::default());
//! let config = MetricsEndpointConfig::default().bearer_token("s3cret");
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(MetricsEndpointLayer::new(registry, config)?);
//! # Ok::<(), secureconnect_obs::Error>(())
//! ```

mod body;
mod config;
mod exemplars;
mod exposition;
mod future;
mod layer;
mod negotiation;
mod respond;
mod service;
mod standalone;

pub use self::body::ResponseBody;
pub use self::config::MetricsEndpointConfig;
pub use self::exposition::{render, Format};
pub use self::future::ResponseFuture;
pub use self::layer::MetricsEndpointLayer;
pub use self::negotiation::{accepts_gzip, negotiate};
pub use self::service::MetricsEndpoint;
pub use self::standalone::MetricsService;

/// The default path of the endpoint.
pub const DEFAULT_PATH: &str = "/metrics";
