//! [`WriteWatch`]: what a server says about itself over time (its role, the writes it
//! executed and those it refused), sampled from a thread of its own, to show that a
//! client never wrote to a primary after it was replaced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::server::{command_at, Reply};

/// Commands counted as writes in [`Sample::writes`] (not `PUBLISH`: sentinels publish
/// their hellos on every server they watch).
const WRITES: &[&str] = &[
    "set", "del", "evalsha", "eval", "incr", "hset", "hincrby", "hdel", "sadd", "srem", "pexpire",
    "expire",
];

/// One look at a server, from one `INFO all`.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// `master` or `slave`.
    pub role: String,
    /// Write commands executed ([`INFO commandstats`] calls of `SET`, `EVALSHA`,
    /// `DEL`, `HSET`, `SADD`, `PEXPIRE`, … summed), replicated ones included.
    pub writes: u64,
    /// Commands refused before they ran (`READONLY`, `OOM`…: `rejected_calls`, all
    /// commands).
    pub rejected: u64,
}

/// Samples the server on a port every 20 ms until [`stop`](Self::stop)ped.
///
/// ```no_run
/// use secureconnect_redis_fallback::testing::{RedisServer, WriteWatch};
///
/// let server = RedisServer::start()?;
/// let watch = WriteWatch::start(server.port());
/// // … a failover …
/// let samples = watch.stop();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct WriteWatch {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WriteWatch {
    /// Starts sampling `127.0.0.1:<port>` (a sample is skipped while it does not
    /// answer).
    pub fn start(port: u16) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Reply::Bulk(Some(info))) = command_at(port, None, &["INFO", "all"]) {
                        let sample = parse(&String::from_utf8_lossy(&info));
                        samples
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(sample);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; every sample, oldest first.
    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether no write ran on the server while it was a primary after `since`: the
    /// writes count of every such sample is the same.
    pub fn unwritten_as_primary_after(samples: &[Sample], since: Instant) -> bool {
        let counts: Vec<u64> = samples
            .iter()
            .filter(|s| s.at > since && s.role == "master")
            .map(|s| s.writes)
            .collect();
        counts.windows(2).all(|w| w[0] == w[1])
    }
}

impl Drop for WriteWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn parse(info: &str) -> Sample {
    let mut writes = 0;
    let mut rejected = 0;
    let mut role = String::new();
    for line in info.lines() {
        if let Some(r) = line.strip_prefix("role:") {
            role = r.trim().to_owned();
        }
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let stat = |key: &str| -> u64 {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        rejected += stat("rejected_calls");
        if WRITES.contains(&name) {
            writes += stat("calls");
        }
    }
    Sample {
        at: Instant::now(),
        role,
        writes,
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_read() {
        let info = "# Replication\r\nrole:master\r\n# Commandstats\r\n\
                    cmdstat_set:calls=5,usec=10,usec_per_call=2.00,rejected_calls=1,failed_calls=0\r\n\
                    cmdstat_get:calls=7,usec=10,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_evalsha:calls=3,usec=10,usec_per_call=2.00,rejected_calls=2,failed_calls=0\r\n";
        let s = parse(info);
        assert_eq!((s.role.as_str(), s.writes, s.rejected), ("master", 8, 3));
    }
}
