//! The client's address, through a trusted-proxy policy.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::{Error, ErrorKind};

/// At most this many `X-Forwarded-For` entries are read, from the right.
const MAX_HOPS: usize = 16;
/// At most this many bytes of `X-Forwarded-For` are read, from the right.
const MAX_HEADER: usize = 2048;

/// The client of a request as the trusted-proxy policy establishes it: see
/// [`TrustedProxies::client_ip`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientIp {
    /// The client's address: the peer's own, or the hop a trusted proxy forwarded.
    Known(IpAddr),
    /// A trusted proxy forwarded a hop that cannot be read (not UTF-8, not an
    /// address) or more hops than are read: the client is unknown. `proxy` is the
    /// nearest trusted hop, the last address that can be vouched for. Never take it for
    /// the client's (it is shared by everyone behind that proxy).
    Unreadable {
        /// The nearest trusted hop.
        proxy: IpAddr,
    },
    /// No peer address was given.
    Unknown,
}

impl ClientIp {
    /// The client's address, when it is known.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Self::Known(ip) => Some(ip),
            _ => None,
        }
    }
}

/// Which peers may tell us the client's address in `X-Forwarded-For`.
///
/// A request from a peer outside these networks is attributed to the peer, whatever
/// its headers say. A request from a trusted proxy is attributed to the right-most
/// `X-Forwarded-For` hop that is not itself a trusted proxy, reading every header line
/// in order (a proxy may add its own line) and splitting from the right as bytes, so
/// that what a client put further left cannot hide it. A hop that cannot be read is
/// reported as such ([`ClientIp::Unreadable`]), never replaced by the proxy's address.
/// The work is bounded: at most 16 hops and 2 KiB of the header are looked at.
///
/// ```
/// use secureconnect_audit::{ClientIp, TrustedProxies};
///
/// let proxies: TrustedProxies = "10.0.0.0/8, 127.0.0.1/32".parse()?;
/// let peer = "10.1.2.3".parse()?;
/// // A client's own line, then the line its proxy added.
/// let lines = [&b"6.6.6.6, \xff"[..], &b"203.0.113.9, 10.0.0.7"[..]];
/// assert_eq!(
///     proxies.client_ip(Some(peer), lines),
///     ClientIp::Known("203.0.113.9".parse()?)
/// );
/// // An untrusted peer cannot claim another address.
/// let stranger = "198.51.100.1".parse()?;
/// assert_eq!(proxies.client_ip(Some(stranger), [b"1.2.3.4"]), ClientIp::Known(stranger));
/// // From a request's headers: `headers.get_all(X_FORWARDED_FOR)`.
/// let mut headers = http::HeaderMap::new();
/// headers.append("x-forwarded-for", "garbage".parse()?);
/// assert_eq!(
///     proxies.client_ip(Some(peer), headers.get_all("x-forwarded-for")),
///     ClientIp::Unreadable { proxy: peer }
/// );
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

    /// The client of a request from `peer` carrying the `X-Forwarded-For` header
    /// lines `x_forwarded_for`, in the order they came (`headers.get_all(…)`, or one
    /// line as `[bytes]`, or `None::<&[u8]>` for none).
    ///
    /// When every hop read is a trusted proxy, the left-most of them is the client (a
    /// request from inside the trusted networks).
    pub fn client_ip<I>(&self, peer: Option<IpAddr>, x_forwarded_for: I) -> ClientIp
    where
        I: IntoIterator,
        I::IntoIter: DoubleEndedIterator,
        I::Item: AsRef<[u8]>,
    {
        let Some(peer) = peer else {
            return ClientIp::Unknown;
        };
        // An IPv4 peer of a dual-stack listener arrives as `::ffff:a.b.c.d`: compared,
        // and reported, as the IPv4 address it is.
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return ClientIp::Known(peer);
        }
        let mut nearest = peer;
        let mut hops = 0;
        let mut budget = MAX_HEADER;
        for line in x_forwarded_for.into_iter().rev() {
            let line = line.as_ref();
            let cut = line.len() > budget;
            let mut tail = &line[line.len() - line.len().min(budget)..];
            budget -= tail.len();
            if cut {
                // The left-most piece of a cut line is part of a hop: leave it.
                match tail.iter().position(|b| *b == b',') {
                    Some(comma) => tail = &tail[comma + 1..],
                    None => return ClientIp::Unreadable { proxy: nearest },
                }
            }
            for hop in tail.rsplit(|b| *b == b',') {
                let hop = hop.trim_ascii();
                if hop.is_empty() {
                    continue;
                }
                hops += 1;
                if hops > MAX_HOPS {
                    return ClientIp::Unreadable { proxy: nearest };
                }
                match parse_hop(hop).map(|ip| ip.to_canonical()) {
                    Some(ip) if self.trusts(ip) => nearest = ip,
                    Some(ip) => return ClientIp::Known(ip),
                    None => return ClientIp::Unreadable { proxy: nearest },
                }
            }
            if cut {
                return ClientIp::Unreadable { proxy: nearest };
            }
        }
        ClientIp::Known(nearest)
    }
}

fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    parse_entry(std::str::from_utf8(hop).ok()?)
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn walks_from_the_right_over_trusted_hops() {
        let p: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = Some(ip("10.0.0.1"));
        assert_eq!(
            p.client_ip(peer, [b"6.6.6.6, 7.7.7.7, 10.0.0.2"]),
            ClientIp::Known(ip("7.7.7.7")),
            "the left-most entry is the client's claim; the right-most untrusted one is the truth"
        );
        assert_eq!(
            p.client_ip(peer, [b"[2001:db8::1]:443"]),
            ClientIp::Known(ip("2001:db8::1"))
        );
        assert_eq!(
            p.client_ip(peer, [b"1.1.1.1:80 ,\t, "]),
            ClientIp::Known(ip("1.1.1.1"))
        );
        assert_eq!(p.client_ip(None, [b"1.1.1.1"]), ClientIp::Unknown);
        assert_eq!(
            p.client_ip(peer, None::<&[u8]>),
            ClientIp::Known(ip("10.0.0.1"))
        );
        assert_eq!(
            p.client_ip(peer, [b"10.9.9.9, 10.0.0.2"]),
            ClientIp::Known(ip("10.9.9.9")),
            "only trusted hops: the left-most is an internal client"
        );
    }

    /// A dual-stack listener sees an IPv4 peer as `::ffff:a.b.c.d`; the trusted IPv4
    /// network still matches it, and a mapped hop is the IPv4 client it names.
    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_addresses() {
        let p: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            p.client_ip(Some(ip("::ffff:10.0.0.1")), [b"7.7.7.7"]),
            ClientIp::Known(ip("7.7.7.7"))
        );
        assert_eq!(
            p.client_ip(
                Some(ip("::ffff:10.0.0.1")),
                [b"::ffff:10.0.0.3, ::ffff:8.8.8.8"]
            ),
            ClientIp::Known(ip("8.8.8.8"))
        );
        assert_eq!(
            p.client_ip(Some(ip("::ffff:9.9.9.9")), [b"7.7.7.7"]),
            ClientIp::Known(ip("9.9.9.9"))
        );
    }

    #[test]
    fn every_line_counts_in_order_and_bytes_are_split_before_decoding() {
        let p: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = Some(ip("10.0.0.1"));
        // The proxy appended its own line: the last line is the nearest.
        let lines: [&[u8]; 2] = [b"6.6.6.6", b"203.0.113.7"];
        assert_eq!(p.client_ip(peer, lines), ClientIp::Known(ip("203.0.113.7")));
        // Bytes that are not UTF-8, further left than the hop that counts, change
        // nothing.
        let lines: [&[u8]; 2] = [b"\xff\xfe, 6.6.6.6", b"\xc3\x28, 198.51.100.3, 10.0.0.9"];
        assert_eq!(
            p.client_ip(peer, lines),
            ClientIp::Known(ip("198.51.100.3"))
        );
        // The hop that counts is unreadable: flagged, not replaced by a proxy.
        let lines: [&[u8]; 2] = [b"1.2.3.4", b"\xff, 10.0.0.9"];
        assert_eq!(
            p.client_ip(peer, lines),
            ClientIp::Unreadable {
                proxy: ip("10.0.0.9")
            }
        );
        assert_eq!(
            p.client_ip(peer, [b"garbage"]),
            ClientIp::Unreadable {
                proxy: ip("10.0.0.1")
            }
        );
        assert_eq!(
            ClientIp::Unreadable {
                proxy: ip("10.0.0.1")
            }
            .ip(),
            None
        );
    }

    #[test]
    fn a_huge_header_costs_a_bounded_amount() {
        let p: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = Some(ip("10.0.0.1"));
        // Only the last 16 hops are looked at; all trusted, so the client is unknown.
        let header = vec!["10.0.0.9"; 1000].join(", ");
        assert_eq!(
            p.client_ip(peer, [header.as_bytes()]),
            ClientIp::Unreadable {
                proxy: ip("10.0.0.9")
            }
        );
        // Beyond 2 KiB nothing is read, even in many lines.
        let lines = vec![" ".repeat(1000); 5];
        assert_eq!(
            p.client_ip(peer, &lines),
            ClientIp::Unreadable {
                proxy: ip("10.0.0.1")
            }
        );
        let long = format!("{}, 203.0.113.1", "9".repeat(5000));
        assert_eq!(
            p.client_ip(peer, [long.as_bytes()]),
            ClientIp::Known(ip("203.0.113.1"))
        );
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
