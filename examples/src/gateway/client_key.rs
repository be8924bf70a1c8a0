//! The key of the per-client rate limit: the client's address as the audit trail
//! resolves it (through `TRUSTED_PROXIES`, see secureconnect-audit's
//! [`TrustedProxies`]), not the peer's, so that clients behind one trusted proxy are
//! limited one by one while a client talking to the gateway directly cannot pick its
//! key with an `X-Forwarded-For` of its own. An IPv6 client is keyed by its /64: one
//! host usually holds a whole /64 and could otherwise take a fresh key per request.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use secureconnect_audit::TrustedProxies;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address for `parts`, through `proxies`.
pub(super) fn client_ip(proxies: &TrustedProxies, parts: &Parts) -> Option<IpAddr> {
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    let mut lines = parts.headers.get_all(X_FORWARDED_FOR).iter();
    let first = lines.next();
    match (first, lines.next()) {
        (None, _) => proxies.client_ip(Some(peer.ip()), None),
        (Some(only), None) => proxies.client_ip(Some(peer.ip()), Some(only.as_bytes())),
        // Several lines are one list, in order (RFC 9110 §5.3).
        (Some(_), Some(_)) => {
            let mut joined = Vec::new();
            for line in parts.headers.get_all(X_FORWARDED_FOR) {
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(line.as_bytes());
            }
            proxies.client_ip(Some(peer.ip()), Some(&joined))
        }
    }
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
        client_ip(&proxies, &parts(peer, forwarded)).map(key)
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
