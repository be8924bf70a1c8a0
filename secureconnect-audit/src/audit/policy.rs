//! [`AuditPolicy`]: which requests, besides 401 and 403 (always), are recorded.

use http::Method;

/// Which requests, besides 401 and 403 (always), are recorded.
///
/// ```
/// use secureconnect_audit::AuditPolicy;
///
/// let policy = AuditPolicy::denials_only().with_server_errors().with_writes();
/// assert!(policy.records(&http::Method::POST, 200));
/// assert!(policy.records(&http::Method::GET, 403));
/// assert!(!policy.records(&http::Method::GET, 200));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditPolicy {
    server_errors: bool,
    writes: bool,
    everything: bool,
}

impl AuditPolicy {
    /// Only 401 and 403 (the default).
    pub fn denials_only() -> Self {
        Self::default()
    }

    /// Also 5xx responses.
    pub fn with_server_errors(mut self) -> Self {
        self.server_errors = true;
        self
    }

    /// Also every `POST`, `PUT`, `PATCH` and `DELETE`.
    pub fn with_writes(mut self) -> Self {
        self.writes = true;
        self
    }

    /// Every request.
    pub fn with_everything(mut self) -> Self {
        self.everything = true;
        self
    }

    /// Whether a request with `method` answered `status` is recorded. 401 and 403
    /// always are.
    pub fn records(&self, method: &Method, status: u16) -> bool {
        self.records_label(crate::context::method_label(method), status)
    }

    /// [`records`](Self::records) for a method as an event writes it (`GET`,
    /// `_OTHER`).
    pub(crate) fn records_label(&self, method: &str, status: u16) -> bool {
        status == 401
            || status == 403
            || self.everything
            || (self.server_errors && status >= 500)
            || (self.writes && matches!(method, "POST" | "PUT" | "PATCH" | "DELETE"))
    }
}
