//! Helpers shared by the integration tests: a real server on 127.0.0.1:0, a real HTTP
//! client, and real exposition parsers (promtool, prometheus-parse, Python's
//! prometheus_client).
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use prometheus_client::registry::Registry;
use secureconnect_obs::{
    HttpMetricsConfig, HttpMetricsLayer, MetricsEndpointConfig, MetricsEndpointLayer,
};

/// Serves `router` on a free loopback port.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("server runs");
    });
    addr
}

/// `router` with request metrics and `/metrics`, in a registry of its own.
pub fn instrument(router: Router) -> Router {
    let mut registry = Registry::default();
    let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut registry)
        .expect("default config is valid");
    router.layer(metrics).layer(
        MetricsEndpointLayer::new(Arc::new(registry), MetricsEndpointConfig::default())
            .expect("default config is valid"),
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client builds")
}

/// The Prometheus text exposition at `http://addr/metrics`.
pub async fn scrape(addr: SocketAddr) -> String {
    let response = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("scrape body")
}

/// Exposition look-ups, and promtool, from the workspace's test kit.
pub use secureconnect_testkit::exposition::{series_count, value};
pub use secureconnect_testkit::promtool_check;
/// Parses a Prometheus text (0.0.4) exposition with the official Python client's
/// parser, an implementation independent of ours; fails the test on any parse error.
pub use secureconnect_testkit::python::parse;

/// Serves a plain tower service (no axum) on a free loopback port with hyper.
pub async fn serve_tower<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    addr
}
