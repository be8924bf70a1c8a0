//! The API gateway: validates tokens, limits rates, and proxies to the services.
//!
//! | prefix | service | public |
//! |---|---|---|
//! | `/v1/auth/*` | auth | `register`, `login` |
//! | `/v1/conversations*` | auth | |
//! | `/v1/storage/*` | storage | `blobs/*` (signed URLs are the credential) |
//! | `/v1/calls*` | video (WebSocket included) | |
//!
//! Several video nodes: a call's requests go to the node that owns it, new calls to
//! the live nodes in turn, and the nodes of `VIDEO_UPSTREAMS` are tried while Redis
//! cannot tell (see `video_routes`). While a call's owner is unreachable (it died and
//! its calls are not adopted yet) its requests get 503 `call_unavailable` with
//! `Retry-After: 1`.
//!
//! Bodies stream both ways; a body over 2 MiB declared to the auth or video service is
//! answered 413 without forwarding it (storage uploads are not limited here). An upstream that does not answer within
//! `UPSTREAM_TIMEOUT_MS` gives 504, one that cannot be reached 502, both with a JSON body
//! naming the service. Requests are limited per client address (the client's, through
//! `TRUSTED_PROXIES`, as the audit trail resolves it; an IPv6 client by its /64) and per user by
//! secureconnect-redis-fallback's `RateLimitLayer` (`RATE_LIMIT_CLIENT_PER_MINUTE`,
//! `RATE_LIMIT_PER_MINUTE`; policy `RATE_LIMIT_POLICY`, `local_approx` by default),
//! answering `429` with `Retry-After` and the API's JSON error body. In order: the
//! per-client limit, authentication (401), the per-user limit, the upstream. Upstream
//! requests carry the gateway's W3C trace context (`traceparent`), so the services'
//! spans, log lines and audit events share the request's `trace_id`.

mod client_key;
mod video_routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use secureconnect_redis_fallback::rate_limit::{
    Quota, RateLimitLayer, RateLimitMetrics, RateLimiter, RateLimiterConfig,
};

use crate::config::Config;
use crate::error::ApiError;
use crate::kit::Kit;
use crate::token::{Authn, Claims};

#[derive(Debug)]
struct Upstreams {
    auth: String,
    storage: String,
}

struct GatewayState {
    client: Client<HttpConnector, Body>,
    upstreams: Upstreams,
    video: Arc<video_routes::VideoRoutes>,
    timeout: Duration,
    /// Whose `X-Forwarded-For` lines are believed (`TRUSTED_PROXIES`).
    proxies: secureconnect_audit::TrustedProxies,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn is_public(method: &axum::http::Method, path: &str) -> bool {
    (method == axum::http::Method::POST
        && (path == "/v1/auth/register" || path == "/v1/auth/login"))
        || path.starts_with("/v1/storage/blobs/")
}

/// A rate limit answering `429` with `Retry-After`, `X-RateLimit-Source` and the API's
/// JSON error body (`{"error": "rate_limited", …}`, as [`ApiError`] writes it).
fn rate_limit(
    limiter: RateLimiter,
    key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
) -> RateLimitLayer {
    let body = serde_json::json!({ "error": "rate_limited", "message": "too many requests" });
    RateLimitLayer::new(limiter, key).refusal_body(
        HeaderValue::from_static("application/json"),
        body.to_string(),
    )
}

/// Authenticates every request that is not public: 401 without a valid token of a
/// live session. The claims go into the request's extensions (the per-user limit's
/// key), and the user into the response's, so that the audit events of what follows (a
/// per-user 429, an upstream's 403, …) name the user the gateway authenticated.
async fn authenticate(State(authn): State<Authn>, request: Request, next: Next) -> Response {
    if is_public(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let claims = match crate::token::authenticate(&authn, &parts).await {
        Ok(claims) => claims,
        Err(e) => return e.into_response(),
    };
    let actor = secureconnect_audit::Actor::user(claims.sub.clone());
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(claims);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(actor);
    response
}

async fn proxy(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    forward(&state, peer, request).await
}

async fn forward(state: &GatewayState, peer: SocketAddr, mut request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let (service, base) = if path.starts_with("/v1/auth/") || path.starts_with("/v1/conversations")
    {
        ("auth", state.upstreams.auth.as_str())
    } else if path.starts_with("/v1/storage/") {
        ("storage", state.upstreams.storage.as_str())
    } else {
        ("video", "")
    };

    // JSON APIs take bodies up to axum's default limit. A larger declared body is
    // refused here: forwarded, the upstream would answer 413 and close mid-upload, and
    // the reset could reach the gateway before the answer does (a 502 instead of 413).
    // The body is read and dropped first (up to a bound), so that the client reads the
    // answer rather than a reset. Storage uploads (signed URLs) keep streaming.
    if service != "storage" && declared_length(&request).is_some_and(|n| n > body_limit(service)) {
        let drained = tokio::time::timeout(state.timeout, drain(request.into_body())).await;
        return too_large(service, !matches!(drained, Ok(true)));
    }

    let upgrade = request.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    strip_hop_by_hop(request.headers_mut(), upgrade);
    let forwarded = client_key::forwarded_for(&state.proxies, peer, request.headers());
    request.headers_mut().insert("x-forwarded-for", forwarded);
    // The upstream continues this request's trace, as a child of the gateway's span.
    secureconnect_obs::request_trace::inject(&tracing::Span::current(), request.headers_mut());

    if service == "video" {
        return forward_video(state, request, client_upgrade).await;
    }
    if rebase(&mut request, base).is_none() {
        return bad_uri();
    }
    match send(state, request).await {
        Ok(response) => finish(response, client_upgrade),
        Err(failure) => failure.response(service),
    }
}

/// The largest body the gateway lets through to `service` (storage uploads stream and
/// are not limited here).
fn body_limit(service: &str) -> u64 {
    if service == "video" {
        VIDEO_BODY_LIMIT
    } else {
        JSON_BODY_LIMIT
    }
}

/// 413 for a body over [`body_limit`]; `close` when part of it is still unread
/// (the connection cannot carry another request).
fn too_large(service: &str, close: bool) -> Response {
    let limit = body_limit(service);
    let mut response = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "bad_request",
        format!("request bodies to the {service} service are limited to {limit} bytes"),
    )
    .into_response();
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Points `request` at `base` (`http://host:port`), keeping its path and query;
/// `None` when that is no URI.
fn rebase(request: &mut Request, base: &str) -> Option<()> {
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = format!("{base}{path_and_query}").parse::<Uri>().ok()?;
    Some(())
}

fn bad_uri() -> Response {
    ApiError::bad_request("bad_uri", "the request URI cannot be forwarded").into_response()
}

/// Why an upstream gave no response.
enum Failure {
    /// No answer within `UPSTREAM_TIMEOUT_MS`.
    Timeout,
    /// The connection could not be made: the request was not sent (safe to send
    /// elsewhere).
    Connect,
    /// It failed after the connection was made.
    Other,
}

impl Failure {
    fn response(&self, service: &str) -> Response {
        match self {
            Self::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("the {service} service did not answer in time"),
            )
            .into_response(),
            Self::Connect | Self::Other => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("the {service} service is unavailable"),
            )
            .into_response(),
        }
    }
}

/// Sends `request` upstream, within the timeout.
async fn send(
    state: &GatewayState,
    request: Request,
) -> Result<Response<hyper::body::Incoming>, Failure> {
    let upstream = request.uri().authority().map(ToString::to_string);
    match tokio::time::timeout(state.timeout, state.client.request(request)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(e)) => {
            tracing::warn!(upstream, error = %e, "upstream unreachable");
            Err(if e.is_connect() {
                Failure::Connect
            } else {
                Failure::Other
            })
        }
        Ok(Ok(response)) => Ok(response),
    }
}

/// The client's response: an upgraded connection spliced to the upstream's, or the
/// upstream's response streamed.
fn finish(
    response: Response<hyper::body::Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let mut response = response;
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, Body::empty());
        }
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, Body::new(body))
}

/// A video request, to the node [`video_routes`] names; sent again elsewhere only when
/// the connection could not be made (or, for a call whose owner is unknown, a node
/// answered 404 or 503). The body (at most [`VIDEO_BODY_LIMIT`]) is read first, so that it can
/// be sent again.
async fn forward_video(
    state: &GatewayState,
    request: Request,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(
        state.timeout,
        http_body_util::Limited::new(body, VIDEO_BODY_LIMIT as usize).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return too_large("video", true)
        }
        // The client's body broke off (or was malformed): not a size problem.
        Ok(Err(_)) => {
            let mut response =
                ApiError::bad_request("bad_body", "the request body could not be read")
                    .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        Err(_) => return Failure::Timeout.response("video"),
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let attempt = |base: &str| -> Option<Request> {
        let mut request = Request::new(Body::from(body.clone()));
        *request.method_mut() = parts.method.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        *request.uri_mut() = format!("{base}{path_and_query}").parse::<Uri>().ok()?;
        Some(request)
    };
    let routes = &state.video;
    let (nodes, probing) = match routes.target(&parts.method, parts.uri.path()).await {
        video_routes::Target::Owner { call, base } => {
            let Some(request) = attempt(&base) else {
                return bad_uri();
            };
            match send(state, request).await {
                Ok(response) => return finish(response, client_upgrade),
                Err(Failure::Connect) => {}
                Err(failure) => return failure.response("video"),
            }
            // The node refused the connection: the call may have moved.
            routes.forget(&call);
            match routes.look_up(&call).await {
                video_routes::Target::Owner { base: moved, .. } if moved != base => {
                    (vec![moved], false)
                }
                video_routes::Target::Probe(nodes) => (nodes, true),
                _ => {
                    routes.forget(&call);
                    return call_unavailable();
                }
            }
        }
        video_routes::Target::OwnerDown => return call_unavailable(),
        video_routes::Target::Probe(nodes) => (nodes, true),
        video_routes::Target::Any(nodes) => (nodes, false),
    };
    let mut last = None;
    for base in &nodes {
        let Some(request) = attempt(base) else {
            return bad_uri();
        };
        match send(state, request).await {
            // Not there (or a node still recovering its calls): the next one may be.
            Ok(response)
                if probing
                    && matches!(
                        response.status(),
                        StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE
                    ) =>
            {
                last = Some(response);
            }
            Ok(response) => return finish(response, client_upgrade),
            Err(Failure::Connect) => {}
            Err(failure) => return failure.response("video"),
        }
    }
    match last {
        Some(not_found) => finish(not_found, None),
        None => Failure::Connect.response("video"),
    }
}

/// 503 `call_unavailable`, `Retry-After: 1`: the call's node is unreachable and its
/// calls are not adopted yet.
fn call_unavailable() -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "call_unavailable",
        "the node serving this call is unreachable; retry shortly",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The largest body the JSON services take: axum's default body limit.
const JSON_BODY_LIMIT: u64 = 2 * 1024 * 1024;

/// The largest video request body: it is buffered (to be sent again to another node),
/// and no video route takes more than a small JSON object.
const VIDEO_BODY_LIMIT: u64 = 4 * 1024;

/// Reads and drops a refused body, up to `DRAIN_LIMIT` bytes: whether it ended.
async fn drain(mut body: Body) -> bool {
    use http_body_util::BodyExt;
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            if read > DRAIN_LIMIT {
                return false;
            }
        }
    }
    true
}

/// How much of a refused body the gateway reads before closing the connection instead.
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

/// The body length the client declared in `Content-Length`, if it did.
fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The gateway's routes, proxying to the services at the given addresses (the video
/// nodes `host:port`).
///
/// # Errors
///
/// A message for a rate limit of zero.
pub fn router(
    kit: &mut Kit,
    config: &Config,
    auth: SocketAddr,
    storage: SocketAddr,
    video: &[String],
) -> Result<Router, String> {
    let metrics = RateLimitMetrics::new(&mut kit.registry);
    let limiter = |name: &str, limit| {
        let quota = Quota::new(limit, Duration::from_secs(60))
            .map_err(|e| format!("rate limit: {}", crate::error::chain(&e)))?;
        let config = RateLimiterConfig::new(name, quota).policy(config.rate_limit_policy);
        Ok::<_, String>(RateLimiter::new(kit.redis.clone(), config, &metrics))
    };
    let proxies: secureconnect_audit::TrustedProxies = config
        .trusted_proxies
        .parse()
        .map_err(|e| format!("TRUSTED_PROXIES: {}", crate::error::chain(&e)))?;
    let limit_proxies = proxies.clone();
    let per_client = rate_limit(limiter("client", config.rate_limit_client)?, move |parts| {
        client_key::client_key(&limit_proxies, parts)
    });
    let per_user = rate_limit(limiter("user", config.rate_limit)?, |parts| {
        Some(parts.extensions.get::<Claims>()?.sub.clone())
    });
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    let state = Arc::new(GatewayState {
        client: Client::builder(TokioExecutor::new()).build(connector),
        upstreams: Upstreams {
            auth: format!("http://{auth}"),
            storage: format!("http://{storage}"),
        },
        video: video_routes::VideoRoutes::start(kit.redis.clone(), video),
        timeout: config.upstream_timeout,
        proxies,
    });
    // The last layer added sees a request first: per client, authentication, per user.
    let route = any(proxy)
        .layer::<_, Infallible>(per_user)
        .layer::<_, Infallible>(middleware::from_fn_with_state(kit.authn(), authenticate))
        .layer::<_, Infallible>(per_client)
        .with_state(state);
    Ok(Router::new()
        .route("/v1/auth/{*rest}", route.clone())
        .route("/v1/conversations", route.clone())
        .route("/v1/conversations/{*rest}", route.clone())
        .route("/v1/storage/{*rest}", route.clone())
        .route("/v1/calls", route.clone())
        .route("/v1/calls/{*rest}", route))
}
