//! The metrics layer and `/metrics` endpoint over real TCP, with a real HTTP client,
//! checked by real exposition parsers.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::{client, instrument, parse, scrape, series_count, serve, value};
use prometheus_client::registry::Registry;
use secureconnect_obs::{
    HttpMetrics, HttpMetricsConfig, HttpMetricsLayer, MetricsEndpointConfig, MetricsEndpointLayer,
    MetricsService, RouteLabel,
};

const DURATION: &str = "http_server_request_duration_seconds";
const COUNT: &str = "http_server_request_duration_seconds_count";
const SUM: &str = "http_server_request_duration_seconds_sum";
const BUCKET: &str = "http_server_request_duration_seconds_bucket";
const ACTIVE: &str = "http_server_active_requests";

fn app() -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/users", post(|| async { StatusCode::CREATED }))
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route(
            "/sleep/{ms}",
            get(
                |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "slept"
                },
            ),
        )
}

/// A body that sends `chunks` chunks, `gap` apart.
fn slow_body(chunks: u32, gap: Duration) -> Body {
    let stream = futures_util::stream::unfold(0u32, move |sent| async move {
        if sent == chunks {
            return None;
        }
        if sent > 0 {
            tokio::time::sleep(gap).await;
        }
        Some((
            Ok::<_, std::io::Error>(Bytes::from_static(b"chunk\n")),
            sent + 1,
        ))
    });
    Body::from_stream(stream)
}

#[tokio::test]
async fn known_sequence_gives_exact_counts_routes_statuses_and_buckets() {
    let addr = serve(instrument(app())).await;
    let c = client();
    for id in 0..5 {
        let r = c
            .get(format!("http://{addr}/users/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..2 {
        let r = c.post(format!("http://{addr}/users")).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    for _ in 0..3 {
        let r = c.get(format!("http://{addr}/fail")).send().await.unwrap();
        assert_eq!(r.status(), 500);
    }
    let r = c
        .get(format!("http://{addr}/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("http://{addr}/sleep/120"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "slept");

    let text = scrape(addr).await;
    let s = parse(&text);
    let get_user = [
        ("http_request_method", "GET"),
        ("http_route", "/users/{id}"),
        ("http_response_status_code", "200"),
    ];
    assert_eq!(value(&s, COUNT, &get_user), Some(5.0), "{text}");
    let created = [
        ("http_request_method", "POST"),
        ("http_route", "/users"),
        ("http_response_status_code", "201"),
    ];
    assert_eq!(value(&s, COUNT, &created), Some(2.0));
    let failed = [
        ("http_route", "/fail"),
        ("http_response_status_code", "500"),
    ];
    assert_eq!(value(&s, COUNT, &failed), Some(3.0));
    let unmatched = [
        ("http_route", "unmatched"),
        ("http_response_status_code", "404"),
    ];
    assert_eq!(value(&s, COUNT, &unmatched), Some(1.0));
    assert!(
        !text.contains("/no/such/route"),
        "a raw path leaked into a label"
    );
    assert!(!text.contains("/users/3"), "a raw path leaked into a label");
    // /metrics itself is excluded by default.
    assert!(!text.contains("http_route=\"/metrics\""));

    // The 120 ms request lands above the 0.1 s bucket and within 0.25 s.
    let sleep = parse_buckets(&text, "/sleep/{ms}");
    assert_eq!(sleep.get("0.1"), Some(&0.0), "{sleep:?}");
    assert_eq!(sleep.get("0.25"), Some(&1.0), "{sleep:?}");
    assert_eq!(sleep.get("+Inf"), Some(&1.0));
    // Every default bucket is there, ending with +Inf.
    let users = parse_buckets(&text, "/users/{id}");
    let expected = [
        "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5",
        "7.5", "10", "+Inf",
    ];
    for le in expected {
        assert!(users.contains_key(le), "bucket le={le} missing: {users:?}");
    }
    assert_eq!(users["+Inf"], 5.0);
    // Nothing is in flight once the responses are read.
    assert_eq!(
        value(&s, ACTIVE, &[("http_route", "/users/{id}")]),
        Some(0.0)
    );
    assert!(text.contains(&format!("# TYPE {DURATION} histogram")));
}

/// `le` → cumulative count for the series of `route` with status 200.
fn parse_buckets(text: &str, route: &str) -> std::collections::BTreeMap<String, f64> {
    let needle = format!("http_route=\"{route}\"");
    text.lines()
        .filter(|l| l.starts_with(BUCKET) && l.contains(&needle))
        .filter(|l| l.contains("http_response_status_code=\"200\""))
        .map(|l| {
            let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            let v: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
            (le.to_owned(), v)
        })
        .collect()
}

#[tokio::test]
async fn exposition_passes_promtool_and_independent_parsers() {
    let mut registry = Registry::default();
    let metrics = HttpMetricsLayer::new(
        HttpMetricsConfig::default().const_label("service", "gateway"),
        &mut registry,
    )
    .unwrap();
    secureconnect_obs::process::register(secureconnect_obs::build_info!(), &mut registry);
    let router = app().layer(metrics).layer(
        MetricsEndpointLayer::new(Arc::new(registry), MetricsEndpointConfig::default()).unwrap(),
    );
    let addr = serve(router).await;
    let c = client();
    for path in ["/users/1", "/fail", "/nope"] {
        c.get(format!("http://{addr}{path}")).send().await.unwrap();
    }
    let text = scrape(addr).await;
    common::promtool_check(&text);
    let s = parse(&text);
    assert!(s.len() > 30);
    assert_eq!(
        value(
            &s,
            COUNT,
            &[("service", "gateway"), ("http_route", "/fail")]
        ),
        Some(1.0)
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
        "process_virtual_memory_bytes",
    ] {
        assert!(value(&s, name, &[]).is_some(), "{name} missing:\n{text}");
    }
    assert!(value(&s, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert_eq!(
        value(
            &s,
            "build_info",
            &[
                ("name", "secureconnect-obs"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        Some(1.0),
        "{text}"
    );

    let om = c
        .get(format!("http://{addr}/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let om = secureconnect_testkit::python::parse_openmetrics(&om);
    assert_eq!(
        value(
            &om,
            COUNT,
            &[("service", "gateway"), ("http_route", "/fail")]
        ),
        Some(1.0)
    );
    assert!(om.len() > 30);
}

#[tokio::test]
async fn ten_thousand_random_unmatched_paths_add_no_series() {
    let addr = serve(instrument(app())).await;
    let c = client();
    c.get(format!("http://{addr}/users/1"))
        .send()
        .await
        .unwrap();
    let before = scrape(addr).await;

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let paths: Vec<String> = (0..10_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            format!("/scan/{seed:x}/{}", seed % 977)
        })
        .collect();
    let sent = futures_util::stream::iter(paths)
        .map(|p| {
            let c = c.clone();
            async move {
                let r = c.get(format!("http://{addr}{p}")).send().await.unwrap();
                r.status()
            }
        })
        .buffer_unordered(32);
    let statuses: Vec<_> = futures_util::StreamExt::collect(sent).await;
    assert!(statuses.iter().all(|s| *s == 404));

    let after = scrape(addr).await;
    for name in [BUCKET, COUNT, SUM, ACTIVE] {
        assert_eq!(
            series_count(&after, name),
            series_count(&before, name) + if name == BUCKET { 15 } else { 1 },
            "{name}: only the single `unmatched` 404 series may be new"
        );
    }
    let s = parse(&after);
    assert_eq!(
        value(
            &s,
            COUNT,
            &[
                ("http_route", "unmatched"),
                ("http_response_status_code", "404")
            ]
        ),
        Some(10_000.0)
    );
}

use futures_util::StreamExt as _;

#[tokio::test]
async fn openmetrics_and_gzip_are_negotiated() {
    let addr = serve(instrument(app())).await;
    let c = client();
    c.get(format!("http://{addr}/users/1"))
        .send()
        .await
        .unwrap();

    let plain = c
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_text = plain.text().await.unwrap();
    assert!(!plain_text.contains("# EOF"));

    // What Prometheus itself sends.
    let om = c
        .get(format!("http://{addr}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;\
             version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        om.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om_text = om.text().await.unwrap();
    assert!(om_text.ends_with("# EOF\n"), "{om_text}");
    assert!(om_text.contains("# UNIT http_server_request_duration_seconds seconds"));

    let zipped = c
        .get(format!("http://{addr}/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let raw = zipped.bytes().await.unwrap();
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut unzipped)
        .expect("valid gzip");
    assert!(unzipped.contains("http_route=\"/users/{id}\""));
    assert!(raw.len() < unzipped.len());
}

#[tokio::test]
async fn bearer_token_guards_the_endpoint() {
    let registry = Arc::new(Registry::default());
    let router = app().layer(
        MetricsEndpointLayer::new(
            registry,
            MetricsEndpointConfig::default().bearer_token("correct-horse"),
        )
        .unwrap(),
    );
    let addr = serve(router).await;
    let c = client();
    let url = format!("http://{addr}/metrics");

    let missing = c.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert!(missing.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let wrong = c
        .get(&url)
        .bearer_auth("correct-hors")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let basic = c
        .get(&url)
        .basic_auth("correct-horse", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let right = c
        .get(&url)
        .bearer_auth("correct-horse")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // Other routes are not guarded.
    let other = c
        .get(format!("http://{addr}/users/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn client_dropping_a_slow_stream_leaves_no_active_request() {
    let router = app().route(
        "/stream",
        get(|| async { slow_body(1_000, Duration::from_millis(20)) }),
    );
    let addr = serve(instrument(router)).await;
    let labels = [("http_route", "/stream")];

    let mut response = client()
        .get(format!("http://{addr}/stream"))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().expect("a first chunk");
    assert_eq!(&first[..], b"chunk\n");
    let during = parse(&scrape(addr).await);
    assert_eq!(value(&during, ACTIVE, &labels), Some(1.0));
    drop(response);

    let mut settled = None;
    for _ in 0..100 {
        let s = parse(&scrape(addr).await);
        if value(&s, ACTIVE, &labels) == Some(0.0) {
            settled = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = settled.expect("the gauge went back to 0 after the client left");
    // The aborted stream is still recorded once, with the status that was sent.
    assert_eq!(
        value(
            &s,
            COUNT,
            &[
                ("http_route", "/stream"),
                ("http_response_status_code", "200")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn duration_runs_until_the_body_ends() {
    let router = app().route(
        "/stream",
        get(|| async { slow_body(4, Duration::from_millis(100)) }),
    );
    let addr = serve(instrument(router)).await;
    let response = client()
        .get(format!("http://{addr}/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "chunk\n".repeat(4));
    let text = scrape(addr).await;
    let s = parse(&text);
    let sum = value(&s, SUM, &[("http_route", "/stream")]).unwrap();
    assert!(
        sum >= 0.3,
        "the headers came at once but the body took 300 ms; sum = {sum}"
    );
    assert_eq!(parse_buckets(&text, "/stream").get("0.25"), Some(&0.0));
}

#[tokio::test]
async fn two_services_in_one_process_keep_separate_registries() {
    let a = serve(instrument(Router::new().route("/a", get(|| async { "a" })))).await;
    let b = serve(instrument(Router::new().route("/b", get(|| async { "b" })))).await;
    let c = client();
    for _ in 0..3 {
        c.get(format!("http://{a}/a")).send().await.unwrap();
    }
    c.get(format!("http://{b}/b")).send().await.unwrap();
    let (ta, tb) = (scrape(a).await, scrape(b).await);
    let (sa, sb) = (parse(&ta), parse(&tb));
    assert_eq!(value(&sa, COUNT, &[("http_route", "/a")]), Some(3.0));
    assert_eq!(value(&sa, COUNT, &[("http_route", "/b")]), None);
    assert_eq!(value(&sb, COUNT, &[("http_route", "/b")]), Some(1.0));
    assert_eq!(value(&sb, COUNT, &[("http_route", "/a")]), None);
}

#[tokio::test]
async fn non_standard_methods_are_other() {
    let addr = serve(instrument(app())).await;
    let method = reqwest::Method::from_bytes(b"PROPFIND").unwrap();
    client()
        .request(method, format!("http://{addr}/users/1"))
        .send()
        .await
        .unwrap();
    let s = parse(&scrape(addr).await);
    assert_eq!(
        value(&s, COUNT, &[("http_request_method", "_OTHER")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn plain_tower_service_with_a_classifier() {
    let mut registry = Registry::default();
    let classify = |path: &str| {
        path.strip_prefix("/items/")
            .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
            .map(|_| RouteLabel::from_static("/items/{id}"))
    };
    let metrics = HttpMetricsLayer::with_classifier(
        classify,
        HttpMetricsConfig::default()
            .prefix("plain")
            .buckets([0.1, 1.0]),
        &mut registry,
    )
    .unwrap();
    let service = tower::ServiceBuilder::new()
        .layer(
            MetricsEndpointLayer::new(Arc::new(registry), MetricsEndpointConfig::default())
                .unwrap(),
        )
        .layer(metrics)
        .service_fn(
            |req: axum::http::Request<hyper::body::Incoming>| async move {
                let status = if req.uri().path().starts_with("/items/") {
                    200
                } else {
                    404
                };
                Ok::<_, std::convert::Infallible>(
                    axum::http::Response::builder()
                        .status(status)
                        .body(Body::from("x"))
                        .unwrap(),
                )
            },
        );
    let addr = common::serve_tower(service).await;
    let c = client();
    for path in ["/items/1", "/items/22", "/items/abc", "/other"] {
        c.get(format!("http://{addr}{path}")).send().await.unwrap();
    }
    let text = scrape(addr).await;
    common::promtool_check(&text);
    let s = parse(&text);
    let count = "plain_http_server_request_duration_seconds_count";
    assert_eq!(
        value(&s, count, &[("http_route", "/items/{id}")]),
        Some(2.0)
    );
    // `/items/abc` got a 200 from the service but matched no route template.
    for status in ["200", "404"] {
        let labels = [
            ("http_route", "unmatched"),
            ("http_response_status_code", status),
        ];
        assert_eq!(value(&s, count, &labels), Some(1.0), "status {status}");
    }
    assert_eq!(
        series_count(&text, "plain_http_server_request_duration_seconds_bucket"),
        3 * 3,
        "three series (200 items, 200 unmatched, 404 unmatched) × (2 bounds + +Inf)"
    );
}

#[tokio::test]
async fn stand_alone_service_on_its_own_listener() {
    let mut registry = Registry::default();
    let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut registry).unwrap();
    let registry = Arc::new(registry);
    let api = serve(app().layer(metrics)).await;

    let admin = common::serve_tower(
        MetricsEndpointLayer::new(registry, MetricsEndpointConfig::default())
            .unwrap()
            .into_service(),
    )
    .await;

    let c = client();
    c.get(format!("http://{api}/users/7")).send().await.unwrap();
    // The API port does not serve metrics; the admin port does.
    assert_eq!(
        c.get(format!("http://{api}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let s = parse(&scrape(admin).await);
    assert_eq!(
        value(&s, COUNT, &[("http_route", "/users/{id}")]),
        Some(1.0)
    );
    assert_eq!(
        c.get(format!("http://{admin}/other"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let post = c
        .post(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET");
}

#[tokio::test]
async fn metrics_service_mounted_as_an_axum_route() {
    let mut registry = Registry::default();
    let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut registry).unwrap();
    let service = MetricsService::new(
        Arc::new(registry),
        MetricsEndpointConfig::default().bearer_token("t0ken"),
    )
    .unwrap();
    let router = app()
        .route_service("/internal/metrics", service)
        .layer(metrics);
    let addr = serve(router).await;
    let c = client();
    c.get(format!("http://{addr}/users/1"))
        .send()
        .await
        .unwrap();
    let url = format!("http://{addr}/internal/metrics");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    let text = c
        .get(&url)
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let s = parse(&text);
    assert_eq!(
        value(&s, COUNT, &[("http_route", "/users/{id}")]),
        Some(1.0)
    );
    // The scrapes themselves are recorded under their route (only /metrics is
    // excluded by default), so the 401 shows up.
    assert_eq!(
        value(
            &s,
            COUNT,
            &[
                ("http_route", "/internal/metrics"),
                ("http_response_status_code", "401")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_service_error_is_recorded_as_500_and_releases_the_gauge() {
    use tower::ServiceExt;

    let mut registry = Registry::default();
    let failing = HttpMetrics::new(
        tower::service_fn(|_req: axum::http::Request<Body>| async {
            Err::<axum::http::Response<Body>, _>(std::io::Error::other("backend gone"))
        }),
        |_: &str| Some(RouteLabel::from_static("/io")),
        HttpMetricsConfig::default(),
        &mut registry,
    )
    .unwrap();
    let registry = Arc::new(registry);
    let request = axum::http::Request::get("/io").body(Body::empty()).unwrap();
    assert!(failing.oneshot(request).await.is_err());

    let mut text = String::new();
    secureconnect_obs::endpoint::render(
        &mut text,
        &registry,
        secureconnect_obs::endpoint::Format::Prometheus,
    )
    .unwrap();
    let s = parse(&text);
    assert_eq!(
        value(
            &s,
            COUNT,
            &[("http_route", "/io"), ("http_response_status_code", "500")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, ACTIVE, &[("http_route", "/io")]), Some(0.0));
}
