//! The layer over real TCP: client addresses through the trusted-proxy policy, request
//! ids kept apart, unique ids and strictly increasing `seq` under concurrency, and the
//! policy.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::IpAddr;

use secureconnect_audit::chain::verify;
use secureconnect_audit::{
    Actor, ActorRef, AuditPipelineConfig, AuditPolicy, Outcome, TrustedProxies,
};

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let untrusted = common::start(
        "10.0.0.0/8".parse().unwrap(),
        AuditPipelineConfig::default(),
    )
    .await;
    let trusted = common::start(
        "127.0.0.1/32".parse().unwrap(),
        AuditPipelineConfig::default(),
    )
    .await;
    let client = reqwest::Client::new();
    for service in [&untrusted, &trusted] {
        client
            .get(format!("http://{}/admin", service.addr))
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
            .send()
            .await
            .unwrap();
        // A 1,000-entry header: only the right-most hops are read.
        let long = (0..1000)
            .map(|i| format!("198.51.100.{}", i % 250))
            .collect::<Vec<_>>()
            .join(", ");
        client
            .get(format!("http://{}/admin", service.addr))
            .header("x-forwarded-for", long)
            .send()
            .await
            .unwrap();
        service.settle().await;
    }
    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    let from = |s: &common::Service| {
        s.memory
            .events()
            .iter()
            .map(|e| e.client_ip())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        from(&untrusted),
        vec![Some(localhost); 2],
        "an untrusted peer's header is ignored"
    );
    assert_eq!(
        from(&trusted),
        vec![
            Some("203.0.113.7".parse().unwrap()),
            Some("198.51.100.249".parse().unwrap())
        ],
        "through a trusted proxy: the right-most untrusted hop"
    );
}

#[tokio::test]
async fn client_request_ids_are_kept_apart_and_cleaned() {
    let service = common::start(TrustedProxies::none(), AuditPipelineConfig::default()).await;
    let client = reqwest::Client::new();
    let first = client
        .get(format!("http://{}/admin", service.addr))
        .send()
        .await
        .unwrap();
    let server_id = first.headers().get("x-request-id").cloned();
    service.settle().await;
    let earlier = service.memory.events()[0].clone();
    assert!(earlier.request_id().is_some());
    assert_eq!(earlier.client_request_id(), None);

    // A client reusing an earlier event id, and one with a tab and obs-text bytes.
    let reused = earlier.event_id().to_string();
    client
        .get(format!("http://{}/admin", service.addr))
        .header("x-request-id", reused.as_str())
        .send()
        .await
        .unwrap();
    client
        .get(format!("http://{}/admin", service.addr))
        .header(
            "x-request-id",
            http::HeaderValue::from_bytes(b"abc\tdef\xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    service.settle().await;
    let events = service.memory.events();
    assert_eq!(events[1].client_request_id(), Some(reused.as_str()));
    assert_ne!(
        events[1].request_id(),
        Some(reused.as_str()),
        "never taken as the server's id"
    );
    assert_ne!(events[1].event_id(), earlier.event_id());
    assert_eq!(
        events[2].client_request_id(),
        Some("abc\\u{0009}def\\u{fffd}")
    );
    assert!(events[2].has_flag("escaped"));
    // The minted id goes back to the client, and it is the event's.
    assert_eq!(
        server_id.as_ref().and_then(|v| v.to_str().ok()),
        events[0].request_id()
    );
}

#[tokio::test]
async fn the_minted_request_id_is_echoed_unless_the_service_set_one_or_ids_are_not_owned() {
    use axum::routing::get;
    use secureconnect_audit::{AuditConfig, AuditLayer, AuditPipeline, MemorySink};
    use tower::ServiceExt;

    let mut registry = prometheus_client::registry::Registry::default();
    let pipeline = AuditPipeline::new(
        MemorySink::new(),
        AuditPipelineConfig::default(),
        &mut registry,
    )
    .unwrap();
    let app = |config: AuditConfig| {
        axum::Router::new()
            .route("/plain", get(|| async { "ok" }))
            .route(
                "/own",
                get(|| async { ([("x-request-id", "set-by-the-service")], "ok") }),
            )
            .layer(AuditLayer::new(pipeline.clone(), config))
    };
    let get = |path: &str, client_id: &str| {
        http::Request::get(path)
            .header("x-request-id", client_id)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let ids = |response: &http::Response<axum::body::Body>| {
        response
            .headers()
            .get_all("x-request-id")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    let owned = app(AuditConfig::default());
    let a = owned
        .clone()
        .oneshot(get("/plain", "client"))
        .await
        .unwrap();
    let b = owned
        .clone()
        .oneshot(get("/plain", "client"))
        .await
        .unwrap();
    let (a, b) = (ids(&a), ids(&b));
    assert_eq!(a.len(), 1, "one id: {a:?}");
    assert_ne!(a[0], "client", "the client's id is not the server's");
    assert!(uuid::Uuid::parse_str(&a[0]).is_ok_and(|id| id.get_version_num() == 7));
    assert_ne!(a, b, "one id per request");
    let own = owned.oneshot(get("/own", "client")).await.unwrap();
    assert_eq!(
        ids(&own),
        ["set-by-the-service"],
        "the service's own id is kept"
    );

    let not_owned = app(AuditConfig::default().request_ids(false));
    let plain = not_owned.oneshot(get("/plain", "front")).await.unwrap();
    assert!(ids(&plain).is_empty(), "the response is left as it is");
    pipeline.shutdown(std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn a_thousand_concurrent_denials_get_unique_ids_and_increasing_seq() {
    let service = common::start(TrustedProxies::none(), AuditPipelineConfig::default()).await;
    let client = reqwest::Client::new();
    let requests = (0..1000).map(|i| {
        let client = client.clone();
        let url = format!("http://{}/admin", service.addr);
        tokio::spawn(async move {
            client
                .get(url)
                .header("x-test-user", format!("user-{i}"))
                .send()
                .await
                .unwrap()
                .status()
        })
    });
    for r in requests.collect::<Vec<_>>() {
        assert_eq!(r.await.unwrap(), 403);
    }
    service.settle().await;
    let events = service.memory.events();
    assert_eq!(events.len(), 1000);
    let ids: HashSet<_> = events.iter().map(|e| e.event_id()).collect();
    assert_eq!(ids.len(), 1000, "every event_id is unique");
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].seq(),
            pair[0].seq() + 1,
            "seq strictly increases, without gaps"
        );
    }
    let users: HashSet<_> = events
        .iter()
        .map(|e| match e.actor() {
            ActorRef::User { id } => id.to_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(users.len(), 1000);
    // The native file is hash-chained and intact.
    let report = verify(
        std::io::BufReader::new(std::fs::File::open(&service.native).unwrap()),
        None,
        None,
    )
    .unwrap();
    assert_eq!((report.lines, report.breaks), (1000, vec![]));
}

#[tokio::test]
async fn policy_and_anonymous_actors() {
    use axum::routing::{get, post};
    use prometheus_client::registry::Registry;
    use secureconnect_audit::{AuditConfig, AuditLayer, AuditPipeline, MemorySink};
    use tower::ServiceExt;

    let sink = MemorySink::new();
    let pipeline = AuditPipeline::new(
        sink.clone(),
        AuditPipelineConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    let app = axum::Router::new()
        .route("/r", get(|| async { "ok" }))
        .route("/w", post(|| async { "ok" }))
        .route("/boom", get(|| async { http::StatusCode::BAD_GATEWAY }))
        .route("/no", get(|| async { http::StatusCode::UNAUTHORIZED }))
        .layer(AuditLayer::new(
            pipeline.clone(),
            AuditConfig::default().policy(AuditPolicy::denials_only().with_writes()),
        ));
    for (method, path) in [
        ("GET", "/r"),
        ("POST", "/w"),
        ("GET", "/boom"),
        ("GET", "/no"),
        ("GET", "/nowhere"),
    ] {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap();
    }
    pipeline.shutdown(std::time::Duration::from_secs(2));
    let events = sink.events();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.http().unwrap().route.to_owned(), e.outcome()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("/w".to_owned(), Outcome::Allowed),
            ("/no".to_owned(), Outcome::Denied)
        ],
        "GET 200, 502 and 404 are not recorded under denials + writes"
    );
    assert_eq!(
        events[1].actor(),
        Actor::Anonymous,
        "no actor is Anonymous, never a panic"
    );
    assert_eq!(events[1].reason().unwrap().code, "unauthenticated");
}

/// A handler's `Auditor` sees what a middleware inside the layer added to the request
/// (a request id, the peer address), as well as what the layer captured.
#[tokio::test]
async fn auditor_sees_what_inner_middleware_adds() {
    use axum::routing::get;
    use secureconnect_audit::{
        AuditConfig, AuditEvent, AuditLayer, AuditPipeline, Auditor, MemorySink, PeerAddr,
    };
    use tower::ServiceExt;

    async fn handler(auditor: Auditor) -> http::StatusCode {
        auditor
            .record(AuditEvent::builder("probe.read", Outcome::Allowed))
            .unwrap();
        http::StatusCode::OK
    }

    let sink = MemorySink::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let pipeline =
        AuditPipeline::new(sink.clone(), AuditPipelineConfig::default(), &mut registry).unwrap();
    let app = axum::Router::new()
        .route("/probe/{id}", get(handler))
        .layer(axum::middleware::map_request(
            |mut request: axum::extract::Request| async move {
                request
                    .headers_mut()
                    .insert("x-request-id", "inner-id".parse().unwrap());
                request
                    .extensions_mut()
                    .insert(PeerAddr("10.1.2.3:5".parse().unwrap()));
                request
            },
        ))
        .layer(AuditLayer::new(
            pipeline.clone(),
            AuditConfig::default().request_ids(false),
        ));
    let request = http::Request::get("/probe/7")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(request).await.unwrap().status(), 200);
    pipeline.shutdown(std::time::Duration::from_secs(5));
    let events = sink.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].request_id(), Some("inner-id"));
    assert_eq!(events[0].client_ip(), Some("10.1.2.3".parse().unwrap()));
    assert_eq!(events[0].http().unwrap().route, "/probe/{id}");
}

#[tokio::test]
async fn a_denial_recorded_by_the_handler_is_not_recorded_again_by_the_layer() {
    let service = common::start(TrustedProxies::none(), AuditPipelineConfig::default()).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{}/files/f1", service.addr))
        .json(&serde_json::json!({ "user": "bob", "reason": "not the owner" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A plain 403 that no handler recorded is still the layer's.
    let r = client
        .get(format!("http://{}/admin", service.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    service.settle().await;
    let events = service.memory.events();
    let actions: Vec<(&str, Outcome)> = events.iter().map(|e| (e.action(), e.outcome())).collect();
    assert_eq!(
        actions,
        vec![
            ("file.upload_url", Outcome::Denied),
            ("http.request", Outcome::Denied)
        ],
        "one event per denial"
    );
}

#[tokio::test]
async fn forwarded_for_reads_every_line_from_the_right_and_flags_what_it_cannot_read() {
    use http::HeaderValue;
    let service = common::start(
        "127.0.0.1/32, 10.0.0.0/8".parse().unwrap(),
        AuditPipelineConfig::default(),
    )
    .await;
    let client = reqwest::Client::new();
    let deny = |lines: Vec<HeaderValue>| {
        let mut request = client.get(format!("http://{}/admin", service.addr));
        for line in lines {
            request = request.header("x-forwarded-for", line);
        }
        request.send()
    };
    let bytes = |b: &[u8]| HeaderValue::from_bytes(b).unwrap();
    // The client's own line first, then the line its trusted proxy added.
    deny(vec![bytes(b"6.6.6.6"), bytes(b"203.0.113.7")])
        .await
        .unwrap();
    // Bytes that are not UTF-8 in the client's part cannot hide the hop that counts.
    deny(vec![
        bytes(b"\xff\xfe, 6.6.6.6"),
        bytes(b"\xc3\x28, 198.51.100.3, 10.0.0.9"),
    ])
    .await
    .unwrap();
    // The hop that counts is unreadable: flagged, never the proxy's address.
    deny(vec![bytes(b"1.2.3.4"), bytes(b"\xff\xfe, 10.0.0.9")])
        .await
        .unwrap();
    service.settle().await;
    let events = service.memory.events();
    let ips: Vec<Option<IpAddr>> = events.iter().map(|e| e.client_ip()).collect();
    assert_eq!(
        ips,
        vec![
            Some("203.0.113.7".parse().unwrap()),
            Some("198.51.100.3".parse().unwrap()),
            None
        ]
    );
    assert!(
        events[2].has_flag("client_ip_unreadable"),
        "{:?}",
        events[2]
    );
    assert!(!events[0].has_flag("client_ip_unreadable"));
    let native = std::fs::read_to_string(&service.native).unwrap();
    assert!(native.contains("\"client_ip_unreadable\""), "{native}");
}

/// The trace id comes from the trace context a tracing middleware inside the layer left
/// on the request (for an `Auditor`) and on the response (for the layer's event), not
/// from the client's `traceparent`; without such a context, from the `traceparent`.
#[tokio::test]
async fn trace_ids_come_from_the_request_trace_context_else_from_traceparent() {
    use axum::middleware::{from_fn, Next};
    use axum::routing::get;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use secureconnect_audit::{
        AuditConfig, AuditEvent, AuditLayer, AuditPipeline, Auditor, MemorySink,
    };
    use tower::ServiceExt;

    const SERVER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    async fn handler(auditor: Auditor) -> http::StatusCode {
        auditor
            .record(AuditEvent::builder("probe.read", Outcome::Denied))
            .unwrap();
        http::StatusCode::FORBIDDEN
    }

    /// What secureconnect-obs's `RequestTraceLayer` does with the request's context.
    async fn traced(mut request: axum::extract::Request, next: Next) -> axum::response::Response {
        let context = SpanContext::new(
            TraceId::from_hex(SERVER_TRACE).unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        request.extensions_mut().insert(context.clone());
        let mut response = next.run(request).await;
        response.extensions_mut().insert(context);
        response
    }

    let sink = MemorySink::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let pipeline =
        AuditPipeline::new(sink.clone(), AuditPipelineConfig::default(), &mut registry).unwrap();
    let routes = || {
        axum::Router::new()
            .route("/probe", get(handler))
            .route("/admin", get(|| async { http::StatusCode::FORBIDDEN }))
    };
    let audit = AuditLayer::new(pipeline.clone(), AuditConfig::default());
    for (router, path) in [
        (routes().layer(from_fn(traced)), "/probe"),
        (routes().layer(from_fn(traced)), "/admin"),
        (routes(), "/admin"),
    ] {
        let request = http::Request::get(path)
            .header(
                "traceparent",
                format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01"),
            )
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.layer(audit.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 403);
    }
    pipeline.shutdown(std::time::Duration::from_secs(5));
    let got: Vec<(String, Option<String>)> = sink
        .events()
        .iter()
        .map(|e| (e.action().to_owned(), e.trace_id().map(str::to_owned)))
        .collect();
    let event = |action: &str, trace: &str| (action.to_owned(), Some(trace.to_owned()));
    assert_eq!(
        got,
        vec![
            event("probe.read", SERVER_TRACE),
            event("http.request", SERVER_TRACE),
            event("http.request", CLIENT_TRACE),
        ]
    );
}

#[tokio::test]
async fn the_first_user_agent_line_is_recorded_and_none_when_absent() {
    let service = common::start(TrustedProxies::none(), AuditPipelineConfig::default()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/admin", service.addr);
    client
        .get(&url)
        .header("user-agent", "first/1")
        .header("x-forwarded-for", "6.6.6.6")
        .header("user-agent", "second/2")
        .send()
        .await
        .unwrap();
    client.get(&url).send().await.unwrap();
    service.settle().await;
    let events = service.memory.events();
    let agents: Vec<_> = events.iter().map(|e| e.user_agent()).collect();
    assert_eq!(agents, vec![Some("first/1"), None]);
}
