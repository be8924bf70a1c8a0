//! The key of the per-client rate limit: the client's address as the audit trail
//! resolves it (through `TRUSTED_PROXIES`, see secureconnect-audit's
//! [`TrustedProxies`]), not the peer's, so that clients behind one trusted proxy are
//! limited one by one while a client talking to the gateway directly cannot pick its
//! key with an `X-Forwarded-For` of its own. An IPv6 client is keyed by its /64: one
//! host usually holds a whole /64 and could otherwise take a fresh key per request.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use secureconnect_audit::{ClientIp, TrustedProxies};

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The limit's key for `parts`, through `proxies`: the client's address (see [`key`]);
/// for a request whose forwarded client cannot be read, one key per proxy it came
/// through, shared by all such requests (never the proxy's own budget, which its
/// well-behaved clients do not share).
pub(super) fn client_key(proxies: &TrustedProxies, parts: &Parts) -> Option<String> {
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    let lines = parts.headers.get_all(X_FORWARDED_FOR);
    match proxies.client_ip(Some(peer.ip()), lines.iter().map(HeaderValue::as_bytes)) {
        ClientIp::Known(ip) => Some(key(ip)),
        ClientIp::Unreadable { proxy } => Some(format!("unreadable via {proxy}")),
        _ => None,
    }
}

/// The `X-Forwarded-For` the gateway sends upstream: the client as resolved through
/// `proxies` (so the services, which trust the gateway, audit the client and not the
/// load balancer in front of it); `unknown` when a forwarded hop cannot be read (the
/// services flag it); the peer when nothing was forwarded by a trusted proxy. The
/// client's own lines are never passed on.
pub(super) fn forwarded_for(
    proxies: &TrustedProxies,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
) -> HeaderValue {
    let lines = headers.get_all(X_FORWARDED_FOR);
    let client = match proxies.client_ip(Some(peer.ip()), lines.iter().map(HeaderValue::as_bytes)) {
        ClientIp::Known(ip) => ip,
        ClientIp::Unreadable { .. } => return HeaderValue::from_static("unknown"),
        _ => peer.ip(),
    };
    HeaderValue::from_str(&client.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// The limit's key for a client address: an IPv4 address as such, an IPv6 one by its
/// /64 (an IPv4-mapped IPv6 address is the IPv4 address).
pub(super) fn key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64));
            format!("{prefix}/64")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut request = Request::builder().uri("/");
        for line in forwarded {
            request = request.header(X_FORWARDED_FOR, *line);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 4000)));
        parts
    }

    fn resolved(proxies: &str, peer: &str, forwarded: &[&str]) -> Option<String> {
        let proxies: TrustedProxies = proxies.parse().unwrap();
        client_key(&proxies, &parts(peer, forwarded))
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        assert_eq!(
            resolved("10.0.0.0/8", "10.0.0.1", &["203.0.113.9"]).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            resolved("10.0.0.0/8", "10.0.0.1", &["198.51.100.7, 203.0.113.9"]).as_deref(),
            Some("203.0.113.9"),
            "the right-most entry the proxy appended, not the client's claim"
        );
        assert_eq!(
            resolved("10.0.0.0/8", "10.0.0.1", &["198.51.100.7", "203.0.113.9"]).as_deref(),
            Some("203.0.113.9"),
            "a second header line is read as the list's continuation"
        );
    }

    #[test]
    fn an_unreadable_forwarded_client_is_not_keyed_as_its_proxy() {
        assert_eq!(
            resolved("10.0.0.0/8", "10.0.0.1", &["not-an-address"]).as_deref(),
            Some("unreadable via 10.0.0.1")
        );
        assert_ne!(
            resolved("10.0.0.0/8", "10.0.0.1", &["not-an-address"]),
            resolved("10.0.0.0/8", "10.0.0.1", &[]),
            "apart from the requests the proxy itself makes"
        );
    }

    #[test]
    fn an_untrusted_peer_is_keyed_by_itself() {
        assert_eq!(
            resolved("10.0.0.0/8", "198.51.100.1", &["1.2.3.4"]).as_deref(),
            Some("198.51.100.1")
        );
        assert_eq!(
            resolved("", "127.0.0.1", &["1.2.3.4"]).as_deref(),
            Some("127.0.0.1")
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(
            key("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            key("2001:db8:1:2::1".parse().unwrap()),
            key("2001:db8:1:2:ffff::9".parse().unwrap())
        );
        assert_ne!(
            key("2001:db8:1:2::1".parse().unwrap()),
            key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
        assert_eq!(
            resolved("10.0.0.0/8", "10.0.0.1", &["[2001:db8::7]:443"]).as_deref(),
            Some("2001:db8::/64")
        );
    }
}
