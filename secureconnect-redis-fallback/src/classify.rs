//! How a failed call is read, in one place: what the caller is told ([`ErrorKind`]),
//! which `redis_commands_total{outcome}` counts it ([`Outcome`]), and what it says
//! about Redis's health (an [`Event`] for the tracker, or none).
//!
//! | failure | kind | outcome | health event |
//! |---|---|---|---|
//! | refused at once: degraded | `Unavailable` | `rejected` | — |
//! | refused at once: writes refused | `WritesUnavailable` | `rejected` | — |
//! | no connection yet | `Unavailable` | `rejected` | `Unavailable` |
//! | our deadline, or a redis-rs timeout | `Timeout` | `timeout` | `Timeout` |
//! | I/O, dropped or refused connection, `LOADING`, `BUSY`, `MASTERDOWN`, `CLUSTERDOWN`, `TRYAGAIN`, a `MOVED`/`ASK` left after redis-rs's retries | `Unavailable` | `unavailable` | `Unavailable` (on a Cluster: for the slot's master only) |
//! | refused at once: the slot's Cluster master is down | `Unavailable` | `rejected` | — |
//! | `NOAUTH`, `WRONGPASS`, authentication failed | `Unavailable` | `unavailable` | `AuthRefused` |
//! | `NOPERM` (an ACL refuses this command or key) | `PermissionDenied` | `command_error` | `Reply` (Redis is up; the caller's error) |
//! | `OOM`, `READONLY` | `WritesUnavailable` | `unavailable` | `WritesRefused` |
//! | `WRONGTYPE`, `NOSCRIPT`, bad arguments, unexpected reply | `Command` | `command_error` | `Reply` (Redis is up) |

use crate::error::ErrorKind;
use crate::health::Event;
use crate::metrics::Outcome;

/// What one failure means for the caller, the metrics and the health tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What the caller is told.
    pub(crate) kind: ErrorKind,
    /// How `redis_commands_total` counts it.
    pub(crate) outcome: Outcome,
    /// What it says about Redis's health; `None` for a call refused before it was sent.
    pub(crate) event: Option<Event>,
    /// This level's message (the Redis error, when there is one, is the source).
    pub(crate) message: &'static str,
}

impl Failure {
    const fn new(
        kind: ErrorKind,
        outcome: Outcome,
        event: Option<Event>,
        message: &'static str,
    ) -> Self {
        Self {
            kind,
            outcome,
            event,
            message,
        }
    }

    /// The client is degraded: the call is refused without touching the network.
    pub(crate) const DEGRADED: Self = Self::new(
        ErrorKind::Unavailable,
        Outcome::Rejected,
        None,
        "client is degraded",
    );

    /// Writes are refused (`OOM`/`READONLY` seen): a write is refused at once.
    pub(crate) const WRITES_REFUSED: Self = Self::new(
        ErrorKind::WritesUnavailable,
        Outcome::Rejected,
        None,
        "redis refuses writes",
    );

    /// No connection to send the call on.
    pub(crate) const NO_CONNECTION: Self = Self::new(
        ErrorKind::Unavailable,
        Outcome::Rejected,
        Some(Event::Unavailable("no connection")),
        "no connection",
    );

    /// On a Cluster, the master of the call's slot is down: refused without touching
    /// the network.
    pub(crate) const NODE_DOWN: Self = Self::new(
        ErrorKind::Unavailable,
        Outcome::Rejected,
        None,
        "the cluster master of this key is down",
    );

    /// The call ran out of its deadline.
    pub(crate) const DEADLINE: Self = Self::new(
        ErrorKind::Timeout,
        Outcome::Timeout,
        Some(Event::Timeout),
        "no reply within the call deadline",
    );
}

/// Reads an error returned by redis-rs.
pub(crate) fn classify(error: &redis::RedisError) -> Failure {
    const UNAVAILABLE: Failure = Failure::new(
        ErrorKind::Unavailable,
        Outcome::Unavailable,
        Some(Event::Unavailable("connection error or server unavailable")),
        "",
    );
    const TIMEOUT: Failure = Failure::new(
        ErrorKind::Timeout,
        Outcome::Timeout,
        Some(Event::Timeout),
        "",
    );
    const AUTH: Failure = Failure::new(
        ErrorKind::Unavailable,
        Outcome::Unavailable,
        Some(Event::AuthRefused),
        "",
    );
    const WRITES_REFUSED: Failure = Failure::new(
        ErrorKind::WritesUnavailable,
        Outcome::Unavailable,
        Some(Event::WritesRefused),
        "",
    );
    const PERMISSION: Failure = Failure::new(
        ErrorKind::PermissionDenied,
        Outcome::CommandError,
        Some(Event::Reply),
        "",
    );
    const COMMAND: Failure = Failure::new(
        ErrorKind::Command,
        Outcome::CommandError,
        Some(Event::Reply),
        "",
    );
    if error.is_timeout() {
        return TIMEOUT;
    }
    if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
        return UNAVAILABLE;
    }
    if error.kind() == redis::ErrorKind::AuthenticationFailed {
        return AUTH;
    }
    match error.code() {
        // A redirection still owed after redis-rs's retries: a Cluster in the middle of
        // a failover or a resharding.
        Some("LOADING" | "BUSY" | "MASTERDOWN" | "CLUSTERDOWN" | "TRYAGAIN" | "MOVED" | "ASK") => {
            UNAVAILABLE
        }
        Some("NOAUTH" | "WRONGPASS") => AUTH,
        Some("NOPERM") => PERMISSION,
        Some("OOM" | "READONLY") => WRITES_REFUSED,
        _ => match error.kind() {
            redis::ErrorKind::Io | redis::ErrorKind::ClusterConnectionNotFound => UNAVAILABLE,
            _ => COMMAND,
        },
    }
}

/// Whether a command (by its name) may write. Unknown commands count as writes, so an
/// `OOM` or `READONLY` Redis refuses them at once rather than after a round trip.
pub(crate) fn is_read_only(name: &[u8]) -> bool {
    const READS: &[&[u8]] = &[
        b"GET",
        b"MGET",
        b"EXISTS",
        b"TTL",
        b"PTTL",
        b"TYPE",
        b"STRLEN",
        b"GETRANGE",
        b"HGET",
        b"HMGET",
        b"HGETALL",
        b"HEXISTS",
        b"HLEN",
        b"HKEYS",
        b"HVALS",
        b"HSCAN",
        b"SMEMBERS",
        b"SISMEMBER",
        b"SMISMEMBER",
        b"SCARD",
        b"SSCAN",
        b"SRANDMEMBER",
        b"ZRANGE",
        b"ZRANGEBYSCORE",
        b"ZREVRANGE",
        b"ZSCORE",
        b"ZCARD",
        b"ZRANK",
        b"ZCOUNT",
        b"ZSCAN",
        b"LRANGE",
        b"LLEN",
        b"LINDEX",
        b"XRANGE",
        b"XREVRANGE",
        b"XLEN",
        b"SCAN",
        b"DBSIZE",
        b"PING",
        b"ECHO",
        b"TIME",
        b"INFO",
        b"EVALSHA_RO",
        b"EVAL_RO",
        b"PUBSUB",
    ];
    READS.iter().any(|r| r.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str) -> redis::RedisError {
        redis::make_extension_error(code.to_owned(), None)
    }

    #[test]
    fn timeouts_and_io_are_unavailable() {
        let timeout = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(
            classify(&timeout),
            Failure::new(
                ErrorKind::Timeout,
                Outcome::Timeout,
                Some(Event::Timeout),
                ""
            )
        );
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&refused).kind, ErrorKind::Unavailable);
        assert_eq!(
            classify(&refused).event,
            Some(Event::Unavailable("connection error or server unavailable"))
        );
    }

    #[test]
    fn server_errors_map_as_the_table_says() {
        let read = |code: &str| {
            let f = classify(&server_error(code));
            (f.kind, f.outcome, f.event)
        };
        for code in [
            "LOADING",
            "BUSY",
            "MASTERDOWN",
            "CLUSTERDOWN",
            "TRYAGAIN",
            "MOVED",
            "ASK",
        ] {
            assert_eq!(
                read(code),
                (
                    ErrorKind::Unavailable,
                    Outcome::Unavailable,
                    Some(Event::Unavailable("connection error or server unavailable"))
                ),
                "{code}"
            );
        }
        assert_eq!(
            read("NOPERM"),
            (
                ErrorKind::PermissionDenied,
                Outcome::CommandError,
                Some(Event::Reply)
            ),
            "an ACL refusing one command is the caller's error, not a health signal"
        );
        for code in ["NOAUTH", "WRONGPASS"] {
            assert_eq!(
                read(code),
                (
                    ErrorKind::Unavailable,
                    Outcome::Unavailable,
                    Some(Event::AuthRefused)
                ),
                "{code}"
            );
        }
        for code in ["OOM", "READONLY"] {
            assert_eq!(
                read(code),
                (
                    ErrorKind::WritesUnavailable,
                    Outcome::Unavailable,
                    Some(Event::WritesRefused)
                ),
                "{code}"
            );
        }
        for code in ["WRONGTYPE", "NOSCRIPT", "ERR"] {
            assert_eq!(
                read(code),
                (
                    ErrorKind::Command,
                    Outcome::CommandError,
                    Some(Event::Reply)
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn read_only_table() {
        assert!(is_read_only(b"get"));
        assert!(is_read_only(b"HGETALL"));
        assert!(!is_read_only(b"SET"));
        assert!(!is_read_only(b"EVALSHA"));
        assert!(!is_read_only(b"SOMETHINGNEW"));
    }
}
