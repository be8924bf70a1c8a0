//! The client's address, through a trusted-proxy policy.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::{Error, ErrorKind};

/// At most this many `X-Forwarded-For` entries are read, from the right.
const MAX_HOPS: usize = 16;
/// At most this many bytes of `X-Forwarded-For` are read, from the right.
const MAX_HEADER: usize = 2048;

/// Which peers may tell us the client's address in `X-Forwarded-For`.
///
/// A request from a peer outside these networks is attributed to the peer, whatever
/// its headers say. A request from a trusted proxy is attributed to the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy. The work is bounded:
/// at most 16 entries and 2 KiB of the header are looked at.
///
/// ```
/// use secureconnect_audit::TrustedProxies;
///
/// let proxies: TrustedProxies = "10.0.0.0/8, 127.0.0.1/32".parse()?;
/// let peer = "10.1.2.3".parse()?;
/// assert_eq!(
///     proxies.client_ip(Some(peer), Some(b"203.0.113.9, 10.0.0.7")),
///     Some("203.0.113.9".parse()?)
/// );
/// // An untrusted peer cannot claim another address.
/// let stranger = "198.51.100.1".parse()?;
/// assert_eq!(proxies.client_ip(Some(stranger), Some(b"1.2.3.4")), Some(stranger));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts nobody: the peer address is the client address (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts these networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            nets: nets.into_iter().collect(),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` carrying `x_forwarded_for`.
    pub fn client_ip(
        &self,
        peer: Option<IpAddr>,
        x_forwarded_for: Option<&[u8]>,
    ) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let Some(header) = x_forwarded_for else {
            return Some(peer);
        };
        let tail = &header[header.len().saturating_sub(MAX_HEADER)..];
        let Ok(text) = std::str::from_utf8(tail) else {
            return Some(peer);
        };
        for entry in text.rsplit(',').take(MAX_HOPS) {
            match parse_entry(entry.trim()) {
                Some(ip) if self.trusts(ip) => continue,
                Some(ip) => return Some(ip),
                // An unreadable hop: stop at the last trustworthy address.
                None => return Some(peer),
            }
        }
        Some(peer)
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    entry.rsplit_once(':')?.0.parse().ok()
}

impl FromStr for TrustedProxies {
    type Err = Error;

    /// A comma-separated list of networks or addresses; empty trusts nobody. An entry
    /// that is neither is [`ErrorKind::InvalidProxy`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = part
                .parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| Error::with_detail(ErrorKind::InvalidProxy, part))?;
            nets.push(net);
        }
        Ok(Self { nets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_from_the_right_over_trusted_hops() {
        let p: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = Some("10.0.0.1".parse().unwrap());
        assert_eq!(
            p.client_ip(peer, Some(b"6.6.6.6, 7.7.7.7, 10.0.0.2")),
            Some("7.7.7.7".parse().unwrap()),
            "the left-most entry is the client's claim; the right-most untrusted one is the truth"
        );
        assert_eq!(
            p.client_ip(peer, Some(b"[2001:db8::1]:443")),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(p.client_ip(peer, Some(b"garbage")), peer);
        assert_eq!(p.client_ip(None, Some(b"1.1.1.1")), None);
    }

    #[test]
    fn a_huge_header_costs_a_bounded_amount() {
        let p: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let header = vec!["10.0.0.9"; 1000].join(", ");
        let peer = Some("10.0.0.1".parse().unwrap());
        // Only the last 16 hops are looked at; all trusted, so the peer is kept.
        assert_eq!(p.client_ip(peer, Some(header.as_bytes())), peer);
    }

    #[test]
    fn parsing() {
        assert!("10.0.0.0/8, ::1".parse::<TrustedProxies>().is_ok());
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert_eq!(
            "".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::none()
        );
    }
}
