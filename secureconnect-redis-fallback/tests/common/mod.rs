//! Scaffolding shared by the Cluster and Sentinel tests: a client, and load that
//! records every call's outcome.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

/// Generous for a loaded machine: the first connection, or a state reached.
pub(crate) const SETUP: Duration = Duration::from_secs(30);

/// A connected client on `config`; panics unless healthy within [`SETUP`].
pub(crate) async fn connect(config: RedisClientConfig) -> RedisClient {
    let redis = RedisClient::new(config, &mut Registry::default()).unwrap();
    assert!(
        redis.wait_for(Health::Healthy, SETUP).await,
        "the client did not connect"
    );
    redis
}

/// One call made under load.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// The caller.
    pub(crate) caller: usize,
    /// Its sequence number for that caller.
    pub(crate) seq: u64,
    /// When it was made.
    pub(crate) started: Instant,
    /// How long it took.
    pub(crate) took: Duration,
    /// `None` if it succeeded, else the error (`is_unavailable`, and whether it
    /// was refused locally: no Redis error behind it).
    pub(crate) error: Option<(bool, bool, String)>,
}

impl Call {
    pub(crate) fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Callers that run `op(caller, seq)` in a loop until stopped, recording each call.
pub(crate) struct Load {
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start<F, Fut>(callers: usize, pause: Duration, op: F) -> Self
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), secureconnect_redis_fallback::Error>> + Send,
    {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let op = Arc::new(op);
        let tasks = (0..callers)
            .map(|caller| {
                let (calls, stop, op) = (Arc::clone(&calls), Arc::clone(&stop), Arc::clone(&op));
                tokio::spawn(async move {
                    let mut seq = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let started = Instant::now();
                        let result = op(caller, seq).await;
                        let took = started.elapsed();
                        let error = result.err().map(|e| {
                            let cause = e
                                .redis_error()
                                .map(|r| format!("{r:?}"))
                                .unwrap_or_default();
                            (
                                e.is_unavailable(),
                                e.redis_error().is_none(),
                                format!("{e}: {cause}"),
                            )
                        });
                        calls.lock().unwrap().push(Call {
                            caller,
                            seq,
                            started,
                            took,
                            error,
                        });
                        seq += 1;
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self { calls, stop, tasks }
    }

    /// The calls recorded so far.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Stops the callers and returns every call.
    pub(crate) async fn stop(self) -> Vec<Call> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.calls).unwrap().into_inner().unwrap()
    }
}

/// Waits up to `within` until `check` is true, checking every 50 ms.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
