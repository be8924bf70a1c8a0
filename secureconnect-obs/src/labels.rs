//! Bounded label values for the request metrics.
//!
//! Every value a label can take is either one of a fixed set (`http_request_method`,
//! `http_response_status_code`) or a route template the application declared
//! (`http_route`), so a scan of random paths never creates a series.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

/// The `http_request_method` label: one of the standard methods, or `_OTHER`.
///
/// Follows OpenTelemetry's HTTP semantic conventions: a method outside the set of
/// RFC 9110 methods plus `PATCH` is reported as `_OTHER`, so a client cannot create
/// series by inventing methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodLabel {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `CONNECT`
    Connect,
    /// `OPTIONS`
    Options,
    /// `TRACE`
    Trace,
    /// `PATCH`
    Patch,
    /// Any other method.
    Other,
}

impl MethodLabel {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
            Self::Other => "_OTHER",
        }
    }
}

impl From<&http::Method> for MethodLabel {
    fn from(method: &http::Method) -> Self {
        match *method {
            http::Method::GET => Self::Get,
            http::Method::HEAD => Self::Head,
            http::Method::POST => Self::Post,
            http::Method::PUT => Self::Put,
            http::Method::DELETE => Self::Delete,
            http::Method::CONNECT => Self::Connect,
            http::Method::OPTIONS => Self::Options,
            http::Method::TRACE => Self::Trace,
            http::Method::PATCH => Self::Patch,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for MethodLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `http_route` label: a route template such as `/users/{id}`, never a raw path.
///
/// Cloning is cheap (a reference-count increment at most), so a label is taken from
/// the request without allocating.
///
/// ```
/// use secureconnect_obs::RouteLabel;
///
/// assert_eq!(RouteLabel::from_static("/users/{id}").as_str(), "/users/{id}");
/// assert_eq!(RouteLabel::unmatched().as_str(), "unmatched");
/// ```
#[derive(Clone)]
pub struct RouteLabel(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
    #[cfg(feature = "axum")]
    Matched(axum::extract::MatchedPath),
}

impl RouteLabel {
    /// The label value of a request that matched no route.
    pub const UNMATCHED: &'static str = "unmatched";

    /// A route template known at compile time.
    pub const fn from_static(template: &'static str) -> Self {
        Self(Repr::Static(template))
    }

    /// A route template from a shared string (for example from a route table built at
    /// start-up). The string is shared, not copied, on every clone.
    pub fn new(template: impl Into<Arc<str>>) -> Self {
        Self(Repr::Shared(template.into()))
    }

    /// The label of a request that matched no route: `unmatched`.
    pub const fn unmatched() -> Self {
        Self::from_static(Self::UNMATCHED)
    }

    /// The label value.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
            #[cfg(feature = "axum")]
            Repr::Matched(m) => m.as_str(),
        }
    }
}

#[cfg(feature = "axum")]
impl From<axum::extract::MatchedPath> for RouteLabel {
    fn from(matched: axum::extract::MatchedPath) -> Self {
        Self(Repr::Matched(matched))
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl Hash for RouteLabel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for RouteLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for RouteLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Labels of `http_server_active_requests`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ActiveLabels {
    pub(crate) method: MethodLabel,
    pub(crate) route: RouteLabel,
}

pub(crate) const METHOD: &str = "http_request_method";
pub(crate) const ROUTE: &str = "http_route";
pub(crate) const STATUS: &str = "http_response_status_code";

impl EncodeLabelSet for ActiveLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        (METHOD, self.method.as_str()).encode(encoder.encode_label())?;
        (ROUTE, self.route.as_str()).encode(encoder.encode_label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_collapse_to_other() {
        let custom = http::Method::from_bytes(b"PROPFIND").expect("valid token");
        assert_eq!(MethodLabel::from(&custom), MethodLabel::Other);
        assert_eq!(MethodLabel::from(&http::Method::PATCH).as_str(), "PATCH");
    }

    #[test]
    fn route_labels_compare_by_text() {
        assert_eq!(
            RouteLabel::new("/a/{id}"),
            RouteLabel::from_static("/a/{id}")
        );
        assert_ne!(RouteLabel::new("/a"), RouteLabel::unmatched());
    }
}
