//! [`AuditConfig`]: how the audit middleware records.

use crate::event::Text;
use crate::{AuditPolicy, TrustedProxies};

/// Configuration of the audit middleware ([`AuditLayer`](crate::AuditLayer),
/// [`Audit`](crate::Audit)).
///
/// By default it records 401 and 403 only ([`AuditPolicy::denials_only`]), trusts no
/// proxy, writes no service name, and owns request ids: a client's `X-Request-Id` is
/// taken off the request (kept, cleaned, as `client_request_id`) and replaced by a
/// server-minted UUID v7, which the layers inside and the logs then carry (put the layer
/// outside them); the response carries it back in `X-Request-Id` unless the service set
/// one itself (what tower-http's `PropagateRequestIdLayer` would do, without a layer of
/// its own). With [`request_ids(false)`](Self::request_ids), the `X-Request-Id` it sees
/// is trusted as the server's (set by a layer in front of it) and the response is left
/// as it is.
///
/// ```
/// use secureconnect_audit::{AuditConfig, AuditPolicy};
///
/// let config = AuditConfig::default()
///     .policy(AuditPolicy::denials_only().with_server_errors())
///     .trusted_proxies("10.0.0.0/8, 127.0.0.1".parse()?)
///     .service_name("gateway")
///     .request_ids(false);
/// # Ok::<(), secureconnect_audit::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct AuditConfig {
    policy: AuditPolicy,
    trusted_proxies: TrustedProxies,
    service_name: Option<Text>,
    request_ids: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            policy: AuditPolicy::default(),
            trusted_proxies: TrustedProxies::none(),
            service_name: None,
            request_ids: true,
        }
    }
}

impl AuditConfig {
    /// Which other requests to record (default [`AuditPolicy::denials_only`]).
    pub fn policy(mut self, policy: AuditPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Which peers may set the client address through `X-Forwarded-For` (default
    /// none).
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// The service name written in every event (default none).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        let name: String = name.into();
        self.service_name = Some(name.into());
        self
    }

    /// Whether the middleware mints request ids (default `true`; see the type's docs).
    pub fn request_ids(mut self, enabled: bool) -> Self {
        self.request_ids = enabled;
        self
    }

    pub(crate) fn records(&self, method: &str, status: u16) -> bool {
        self.policy.records_label(method, status)
    }

    pub(crate) fn proxies(&self) -> &TrustedProxies {
        &self.trusted_proxies
    }

    pub(crate) fn service(&self) -> Option<&Text> {
        self.service_name.as_ref()
    }

    pub(crate) fn owns_request_ids(&self) -> bool {
        self.request_ids
    }
}
