//! Hash slots: which of the 16 384 slots of a Redis Cluster a key lives in, and which
//! key of a command decides where it goes.

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with, one byte at a
/// time from a table built at compile time.
const TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ TABLE[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

/// The hash slot of `key` on a Redis Cluster: CRC16 of the key's hash tag (the part
/// between the first `{` and the next `}`, when not empty) or of the whole key, modulo
/// 16 384. Keys that share a hash tag share a slot, so one script or transaction may
/// touch them all.
///
/// ```
/// use secureconnect_redis_fallback::cluster::key_slot;
///
/// assert_eq!(key_slot(b"foo"), 12_182);
/// assert_eq!(key_slot(b"sc:call:{c1}"), key_slot(b"sc:call:{c1}:p"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The part of `key` that is hashed.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// Commands that take no key (or whose arguments are not keys, such as `PUBLISH`'s
/// channel): routed to any node.
const KEYLESS: &[&[u8]] = &[
    b"PING",
    b"ECHO",
    b"INFO",
    b"TIME",
    b"DBSIZE",
    b"SCAN",
    b"SCRIPT",
    b"FUNCTION",
    b"CLUSTER",
    b"CONFIG",
    b"CLIENT",
    b"COMMAND",
    b"ACL",
    b"ROLE",
    b"PUBLISH",
    b"SPUBLISH",
    b"PUBSUB",
    b"FLUSHALL",
    b"FLUSHDB",
    b"MULTI",
    b"EXEC",
    b"DISCARD",
    b"WAIT",
    b"READONLY",
    b"READWRITE",
    b"HELLO",
    b"AUTH",
    b"SELECT",
    b"MEMORY",
    b"LATENCY",
    b"SLOWLOG",
    b"DEBUG",
    b"KEYS",
    b"RANDOMKEY",
];

/// The key that decides which node a command goes to: the first key it names, if any.
/// `EVAL`/`EVALSHA` (and their `_RO` forms) and `FCALL` take their first key after the
/// key count; every other command with keys names its first key first.
pub(crate) fn first_key(cmd: &redis::Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        redis::Arg::Simple(bytes) => bytes,
        _ => &b""[..],
    });
    let name = args.next()?;
    if KEYLESS.iter().any(|k| k.eq_ignore_ascii_case(name)) {
        return None;
    }
    let scripted = [
        &b"EVAL"[..],
        b"EVALSHA",
        b"EVAL_RO",
        b"EVALSHA_RO",
        b"FCALL",
        b"FCALL_RO",
    ];
    if scripted.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        let _script = args.next()?;
        let count = std::str::from_utf8(args.next()?)
            .ok()?
            .parse::<u32>()
            .ok()?;
        return if count == 0 { None } else { args.next() };
    }
    args.next()
}

/// The slot a command goes to, if it names a key.
pub(crate) fn cmd_slot(cmd: &redis::Cmd) -> Option<u16> {
    first_key(cmd).map(key_slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"bar"), 5_061);
        assert_eq!(key_slot(b"123456789"), 12_739);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"bar"),
            "an empty tag hashes the key"
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn first_keys() {
        assert_eq!(first_key(redis::cmd("GET").arg("k")), Some(&b"k"[..]));
        assert_eq!(first_key(&redis::cmd("PING")), None);
        assert_eq!(first_key(redis::cmd("publish").arg("ch").arg("m")), None);
        assert_eq!(
            first_key(redis::cmd("EVALSHA").arg("abc").arg(2).arg("k1").arg("k2")),
            Some(&b"k1"[..])
        );
        assert_eq!(
            first_key(redis::cmd("EVALSHA").arg("abc").arg(0).arg("x")),
            None
        );
        assert_eq!(first_key(redis::cmd("SCRIPT").arg("LOAD").arg("x")), None);
    }
}
