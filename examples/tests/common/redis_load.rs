//! Load through the gateway while Redis fails over (a Cluster master, a Sentinel
//! primary): signed-in users reading a call in a loop, every answer recorded; and what
//! the services' `/ready` say about Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{json, recv, register_and_login, send, ws, Session, Socket, System};

/// Settings for a system under load: limits high enough that nothing is refused for
/// rate (a 429 is not what these tests look at).
pub const UNLIMITED: [(&str, &str); 3] = [
    ("RATE_LIMIT_PER_MINUTE", "10000000"),
    ("RATE_LIMIT_CLIENT_PER_MINUTE", "10000000"),
    ("CALLS_PER_USER_MAX", "100000"),
];

/// One request of the load.
#[derive(Clone, Debug)]
pub struct Answer {
    pub started: Instant,
    pub took: Duration,
    /// The HTTP status, 0 when no answer came.
    pub status: u16,
}

/// Users reading `call` through the gateway in a loop.
pub struct GatewayLoad {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl GatewayLoad {
    /// `GET /v1/calls/{call}` by each of `users` in turn, from `workers` tasks.
    pub fn start(gateway: &str, call: &str, users: &[Session], workers: usize) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tokens: Arc<Vec<String>> = Arc::new(users.iter().map(|u| u.token.clone()).collect());
        let tasks = (0..workers)
            .map(|w| {
                let (answers, stop, tokens) =
                    (Arc::clone(&answers), Arc::clone(&stop), Arc::clone(&tokens));
                let url = format!("{gateway}/v1/calls/{call}");
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(20))
                        .build()
                        .unwrap();
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let status = match client
                            .get(&url)
                            .bearer_auth(&tokens[i % tokens.len()])
                            .send()
                            .await
                        {
                            Ok(r) => r.status().as_u16(),
                            Err(_) => 0,
                        };
                        answers.lock().unwrap().push(Answer {
                            started,
                            took: started.elapsed(),
                            status,
                        });
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            answers,
            stop,
            tasks,
        }
    }

    /// Stops the load; every answer.
    pub async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.answers).unwrap().into_inner().unwrap()
    }
}

/// Asserts that every request was answered 200: no 5xx, no request left unanswered.
pub fn assert_all_ok(answers: &[Answer]) {
    let bad: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests not answered 200, first {:?}",
        bad.len(),
        answers.len(),
        bad.first()
    );
    assert!(
        answers.len() > 100,
        "the load ran: {} requests",
        answers.len()
    );
}

/// `n` users, signed in through the gateway.
pub async fn users(c: &reqwest::Client, gateway: &str, n: usize) -> Vec<Session> {
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        users.push(register_and_login(c, gateway, &format!("user{i}@example.org")).await);
    }
    users
}

/// A call made by `owner` and joined over WebSockets by `owner` and `other`: the call,
/// and each one's socket, participant id and rejoin token.
pub async fn call_with_two(
    system: &System,
    c: &reqwest::Client,
    owner: &Session,
    other: &Session,
) -> (String, Vec<(Socket, String, String)>) {
    let g = system.gateway();
    let call = json(c.post(format!("{g}/v1/calls")).bearer_auth(&owner.token)).await;
    let call = call["call_id"].as_str().unwrap().to_owned();
    let mut joined = Vec::new();
    for user in [owner, other] {
        let mut socket = ws(system, &call, &user.token).await;
        send(&mut socket, serde_json::json!({ "type": "join" })).await;
        let reply = recv(&mut socket).await;
        assert_eq!(reply["type"], "joined", "{reply}");
        let id = reply["participant_id"].as_str().unwrap().to_owned();
        let token = reply["rejoin_token"].as_str().unwrap().to_owned();
        joined.push((socket, id, token));
    }
    (call, joined)
}

/// `GET /ready` of every service.
pub async fn readiness(c: &reqwest::Client, system: &System) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for name in ["gateway", "auth", "storage", "video"] {
        let url = format!("http://127.0.0.1:{}/ready", system.port(name));
        all.push(json(c.get(url)).await);
    }
    all
}

/// Waits up to `within` until every service's `/ready` says Redis is healthy (and, on a
/// Cluster, no slot is down); how long it took.
pub async fn all_healthy(
    c: &reqwest::Client,
    system: &System,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let ready = readiness(c, system).await;
        if ready
            .iter()
            .all(|r| r["redis"] == "healthy" && r.get("redis_slots_down").is_none_or(|d| d == 0))
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits up to `within` until `check` holds, polling every 100 ms; how long it took.
pub async fn within<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
