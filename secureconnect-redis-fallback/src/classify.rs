//! How a Redis error is read: a health signal or the caller's error.

/// What an error says about Redis's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Connection errors and server states that mean "not now".
    Unavailable,
    /// The call ran out of time.
    Timeout,
    /// Authentication is refused: degraded, loudly, with slow retries.
    Auth,
    /// Writes are refused; reads are fine.
    WritesRefused,
    /// The command itself was wrong: returned to the caller, no health signal.
    Command,
}

/// Classifies an error returned by redis-rs.
pub(crate) fn classify(error: &redis::RedisError) -> Class {
    if error.is_timeout() {
        return Class::Timeout;
    }
    if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
        return Class::Unavailable;
    }
    if error.kind() == redis::ErrorKind::AuthenticationFailed {
        return Class::Auth;
    }
    match error.code() {
        Some("LOADING" | "BUSY" | "MASTERDOWN" | "CLUSTERDOWN" | "TRYAGAIN") => Class::Unavailable,
        Some("NOAUTH" | "WRONGPASS" | "NOPERM") => Class::Auth,
        Some("OOM" | "READONLY") => Class::WritesRefused,
        _ => match error.kind() {
            redis::ErrorKind::Io | redis::ErrorKind::ClusterConnectionNotFound => {
                Class::Unavailable
            }
            _ => Class::Command,
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
        redis::RedisError::from((redis::ErrorKind::Extension, "test", code.to_owned()))
    }

    #[test]
    fn timeouts_and_io_are_unavailable() {
        let timeout = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(classify(&timeout), Class::Timeout);
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&refused), Class::Unavailable);
    }

    #[test]
    fn read_only_table() {
        assert!(is_read_only(b"get"));
        assert!(is_read_only(b"HGETALL"));
        assert!(!is_read_only(b"SET"));
        assert!(!is_read_only(b"EVALSHA"));
        assert!(!is_read_only(b"SOMETHINGNEW"));
        let _ = server_error("X");
    }
}
