//! How a request is turned into its `http_route` label.

use http::Request;

use crate::RouteLabel;

/// Finds the route template a request matched.
///
/// Return `None` when no route matched: the request is then labelled `unmatched`, never
/// with its raw path, which would let any client create series at will.
///
/// With axum, [`MatchedPathRoute`] (the default) reads axum's `MatchedPath`. For plain
/// tower or hyper, a closure `Fn(&str) -> Option<RouteLabel>` over the request path is a
/// classifier:
///
/// ```
/// use secureconnect_obs::{ClassifyRoute, RouteLabel};
///
/// let classify = |path: &str| match path {
///     "/health" => Some(RouteLabel::from_static("/health")),
///     p if p.starts_with("/users/") => Some(RouteLabel::from_static("/users/{id}")),
///     _ => None,
/// };
/// let req = http::Request::get("/users/42").body(()).unwrap();
/// assert_eq!(classify.classify(&req).unwrap().as_str(), "/users/{id}");
/// ```
pub trait ClassifyRoute: Clone {
    /// The route template of `request`, or `None` if it matched no route.
    fn classify<B>(&self, request: &Request<B>) -> Option<RouteLabel>;
}

impl<F> ClassifyRoute for F
where
    F: Fn(&str) -> Option<RouteLabel> + Clone,
{
    fn classify<B>(&self, request: &Request<B>) -> Option<RouteLabel> {
        self(request.uri().path())
    }
}

/// Reads the route template from axum's [`MatchedPath`](axum::extract::MatchedPath).
///
/// axum sets it for the layers added with `Router::layer` (and `route_layer`), so add
/// the metrics layer with `Router::layer`: requests that reach the fallback carry no
/// `MatchedPath` and are labelled `unmatched`.
#[cfg(feature = "axum")]
#[derive(Clone, Copy, Debug, Default)]
pub struct MatchedPathRoute;

#[cfg(feature = "axum")]
impl ClassifyRoute for MatchedPathRoute {
    fn classify<B>(&self, request: &Request<B>) -> Option<RouteLabel> {
        request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .cloned()
            .map(RouteLabel::from)
    }
}
