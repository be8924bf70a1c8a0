//! Load and fault soak of the reference system.
//!
//! ```text
//! cargo build --release -p secureconnect-examples
//! cargo run --release -p secureconnect-benches --bin soak -- --duration 180
//! ```
//!
//! Starts a real `redis-server` and the four reference services (release binaries next
//! to this one) on loopback, drives a mix through the gateway — logins, conversation
//! reads and writes, file uploads and downloads, calls whose WebSocket participants
//! exchange signaling — with bounded concurrency, and meanwhile kills Redis and brings
//! it back, SIGSTOPs it, kills the video service with SIGKILL and restarts it, and
//! restarts the storage service. Then it prices the layers: the same clients run the
//! same mix in short alternating windows (ABBA order, `--windows`, default 8) through
//! the gateway and through a second gateway built without the metrics and audit layers
//! (`SC_LAYERS=off`), each window's first second of warm-up left out. Latencies,
//! counts and errors are kept per request class ([`secureconnect_benches::mix`]), and
//! every service's peak and final RSS is read from `/proc/<pid>/status`; a gap over a
//! second in the harness's own scheduling (a paused or starved process) is reported,
//! since the latencies across it include it. Progress goes
//! to stderr every 5 s; the Markdown summary to stdout and, with the timeline of the
//! load drawn as an SVG (requests, p50 and p99, 5xx per second, the fault windows
//! shaded), to `summary.md` and `timeline.svg` in `--out` (default `target/soak`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use secureconnect_benches::mix::{alternating, ms, Class, Comparison, Mix, Window};
use secureconnect_benches::timeline::Timeline;
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_testkit::free_port;
use secureconnect_testkit::process::{wait_until_ok, ChildProcess};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "soak-secret-soak-secret-soak-secret-0001";
const USERS: usize = 16;
const CALLS: usize = 4;
/// Each comparison window's first part, left out of its figures: new connections, pools
/// filling, the other gateway's requests draining.
const WARM_UP: Duration = Duration::from_secs(1);

struct Service {
    name: &'static str,
    exe: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    child: Option<ChildProcess>,
    /// Peak RSS (kB) of earlier processes of this service.
    peak_kb: u64,
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`: peak RSS, `VmRSS`: RSS now); 0 if
/// the process is gone.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn peak_rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM")
}

impl Service {
    async fn start(&mut self) {
        let child = ChildProcess::spawn(
            Command::new(&self.exe)
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.exe.display()));
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/health", self.port);
        if !wait_until_ok(&url, Duration::from_secs(20)).await {
            panic!("{} did not come up", self.name);
        }
    }

    fn stop(&mut self, signal: &str) {
        if let Some(child) = self.child.take() {
            self.peak_kb = self.peak_kb.max(peak_rss_kb(child.id()));
            let _ = child.stop_with(signal);
        }
    }

    /// The highest peak RSS (kB) of all its processes so far.
    fn peak(&self) -> u64 {
        self.child
            .as_ref()
            .map_or(0, |c| peak_rss_kb(c.id()))
            .max(self.peak_kb)
    }

    /// The RSS (kB) of its running process.
    fn rss(&self) -> u64 {
        self.child
            .as_ref()
            .map_or(0, |c| status_kb(c.id(), "VmRSS"))
    }
}

/// Which fault is active, for attributing errors and latencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Healthy,
    Degraded,
    Recovering,
}

struct Stats {
    /// Per phase, per request class.
    latencies: BTreeMap<Phase, Mix>,
    responses: BTreeMap<(u16, String, &'static str), u64>,
    timeline: Timeline,
}

/// One load's record, shared by its clients.
struct Shared {
    stats: Mutex<Stats>,
    phase: Mutex<(Phase, &'static str)>,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Off while a comparison window warms up: what completes is not recorded.
    recording: AtomicBool,
    stop: AtomicBool,
    /// The clock of the signaling messages' send times.
    origin: Instant,
}

impl Shared {
    fn new(origin: Instant, recording: bool) -> Self {
        Self {
            stats: Mutex::new(Stats {
                latencies: BTreeMap::new(),
                responses: BTreeMap::new(),
                timeline: Timeline::new(origin),
            }),
            phase: Mutex::new((Phase::Healthy, "none")),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            recording: AtomicBool::new(recording),
            stop: AtomicBool::new(false),
            origin,
        }
    }

    fn record(&self, class: Class, status: u16, cause: String, took: Duration) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let (phase, fault) = *self.phase.lock().unwrap_or_else(|e| e.into_inner());
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats
            .latencies
            .entry(phase)
            .or_default()
            .record(class, status, took);
        stats.timeline.record(Instant::now(), status, took);
        *stats.responses.entry((status, cause, fault)).or_default() += 1;
    }

    /// Records a signaling message's relay latency (not an HTTP request: kept out of
    /// the request counts and the timeline).
    fn record_signal(&self, took: Duration) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let (phase, _) = *self.phase.lock().unwrap_or_else(|e| e.into_inner());
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats
            .latencies
            .entry(phase)
            .or_default()
            .record(Class::Signaling, 200, took);
    }

    /// Every phase's requests, merged.
    fn mix(&self) -> Mix {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = Mix::default();
        for mix in stats.latencies.values() {
            all.merge(mix);
        }
        all
    }

    fn set_phase(&self, phase: Phase, fault: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = (phase, fault);
    }

    /// Marks `label` on the timeline, from `from` until now.
    fn fault(&self, label: &str, from: Instant) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.timeline.fault(label, from, Instant::now());
    }
}

async fn timed(shared: &Shared, class: Class, request: reqwest::RequestBuilder) -> Option<Value> {
    let started = Instant::now();
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let cause = body["error"]
                .as_str()
                .unwrap_or(if status < 400 { "ok" } else { "other" })
                .to_owned();
            shared.record(class, status, cause, started.elapsed());
            (status < 300).then_some(body)
        }
        Err(e) => {
            shared.record(
                class,
                0,
                format!(
                    "transport: {}",
                    if e.is_timeout() { "timeout" } else { "connect" }
                ),
                started.elapsed(),
            );
            None
        }
    }
}

struct User {
    token: String,
    email: String,
    conversation: String,
}

async fn worker(shared: Arc<Shared>, gateway: String, user: Arc<User>, id: usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default();
    let mut files: Vec<String> = Vec::new();
    let mut i = id;
    while !shared.stop.load(Ordering::Relaxed) {
        i += 1;
        let auth = format!("Bearer {}", user.token);
        match i % 10 {
            0..=3 => {
                timed(
                    &shared,
                    Class::ConversationRead,
                    client
                        .get(format!("{gateway}/v1/conversations/{}", user.conversation))
                        .header("authorization", &auth),
                )
                .await;
            }
            4 => {
                timed(
                    &shared,
                    Class::Login,
                    client
                        .post(format!("{gateway}/v1/auth/login"))
                        .json(&json!({ "email": user.email, "password": "soak password" })),
                )
                .await;
            }
            5 | 6 => {
                let up = timed(&shared, Class::Upload, client.post(format!("{gateway}/v1/storage/upload-url")).header("authorization", &auth)
                    .json(&json!({ "file_name": "soak.bin", "file_size": 4096, "content_type": "application/octet-stream" }))).await;
                if let Some(up) = up {
                    let url = up["upload_url"].as_str().unwrap_or_default();
                    let put = client.put(format!("{gateway}{url}")).body(vec![7u8; 4096]);
                    if timed(&shared, Class::Upload, put).await.is_some() {
                        if let Some(id) = up["file_id"].as_str() {
                            files.push(id.to_owned());
                        }
                    }
                }
            }
            7 | 8 => {
                if let Some(file) = files.last().cloned() {
                    let dl = timed(
                        &shared,
                        Class::Download,
                        client
                            .get(format!("{gateway}/v1/storage/download-url/{file}"))
                            .header("authorization", &auth),
                    )
                    .await;
                    if let Some(url) =
                        dl.and_then(|d| d["download_url"].as_str().map(str::to_owned))
                    {
                        let started = Instant::now();
                        if let Ok(r) = client.get(format!("{gateway}{url}")).send().await {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            shared.record(
                                Class::Download,
                                status,
                                if status < 400 {
                                    "ok".into()
                                } else {
                                    "download".into()
                                },
                                started.elapsed(),
                            );
                        }
                    }
                    if files.len() > 8 {
                        let old = files.remove(0);
                        timed(
                            &shared,
                            Class::FileDelete,
                            client
                                .delete(format!("{gateway}/v1/storage/files/{old}"))
                                .header("authorization", &auth),
                        )
                        .await;
                    }
                }
            }
            _ => {
                timed(
                    &shared,
                    Class::ConversationWrite,
                    client
                        .post(format!("{gateway}/v1/conversations"))
                        .header("authorization", &auth)
                        .json(&json!({ "members": [] })),
                )
                .await;
            }
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One call participant: joins, then sends an ICE candidate to its peer every 500 ms,
/// stamped with its send time, and records the relay latency of the candidates it
/// receives; after a drop it reconnects and rejoins with its token; leaves the call
/// when the load stops.
async fn participant(
    shared: Arc<Shared>,
    gateway_port: u16,
    call: String,
    token: String,
    rejoined: Arc<AtomicUsize>,
    peer_ids: Arc<Mutex<Vec<String>>>,
) {
    let url = format!("ws://127.0.0.1:{gateway_port}/v1/calls/{call}/ws?access_token={token}");
    let mut me: Option<(String, String)> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let hello = match &me {
            None => json!({ "type": "join" }),
            Some((id, token)) => json!({ "type": "rejoin", "participant_id": id, "token": token }),
        };
        if socket
            .send(Message::Text(hello.to_string().into()))
            .await
            .is_err()
        {
            continue;
        }
        let Some(reply) = next_json(&mut socket).await else {
            continue;
        };
        match reply["type"].as_str() {
            Some("joined") => {
                let id = reply["participant_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                peer_ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(id.clone());
                me = Some((
                    id,
                    reply["rejoin_token"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
            Some("rejoined") => {
                rejoined.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                let leave = json!({ "type": "leave" }).to_string();
                let _ = socket.send(Message::Text(leave.into())).await;
                let _ = socket.close(None).await;
                return;
            }
            tokio::select! {
                _ = tick.tick() => {
                    let sent_us = shared.origin.elapsed().as_micros() as u64;
                    let signal = json!({ "type": "ice", "payload": { "candidate": "soak", "sent_us": sent_us } });
                    if socket.send(Message::Text(signal.to_string().into())).await.is_err() { break; }
                }
                message = socket.next() => {
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(sent_us) = relayed_ice_sent_us(&text) {
                                let now = shared.origin.elapsed();
                                shared.record_signal(now.saturating_sub(Duration::from_micros(sent_us)));
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
        }
    }
}

/// The send time stamped in a relayed ICE message (`{"type":"ice","from","payload"}`).
fn relayed_ice_sent_us(text: &str) -> Option<u64> {
    let message: Value = serde_json::from_str(text).ok()?;
    if message["type"] != "ice" {
        return None;
    }
    message["payload"]["sent_us"].as_u64()
}

async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .ok()??
        {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

async fn redis_state(client: &reqwest::Client, gateway: &str) -> String {
    match client.get(format!("{gateway}/ready")).send().await {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["redis"].as_str().map(str::to_owned))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Milliseconds until the gateway reports `state`.
async fn until_state(
    client: &reqwest::Client,
    gateway: &str,
    state: &str,
    since: Instant,
) -> Option<u128> {
    for _ in 0..600 {
        if redis_state(client, gateway).await == state {
            return Some(since.elapsed().as_millis());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

async fn participants(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    calls: &[String],
) -> usize {
    let mut total = 0;
    for call in calls {
        if let Ok(r) = client
            .get(format!("{gateway}/v1/calls/{call}"))
            .bearer_auth(token)
            .send()
            .await
        {
            if let Ok(v) = r.json::<Value>().await {
                total += v["participants"].as_array().map_or(0, Vec::len);
            }
        }
    }
    total
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn audit_counts(client: &reqwest::Client, port: u16) -> [f64; 3] {
    let text = match client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    [
        metric_sum(&text, "audit_events_produced_total"),
        metric_sum(&text, "audit_events_written_total"),
        metric_sum(&text, "audit_events_dropped_total"),
    ]
}

/// Starts the load on the gateway at `port`: `CALLS` new calls with two WebSocket
/// participants each, and `concurrency` clients looping over the mix, until
/// `shared.stop`. Returns the calls and the tasks.
async fn start_load(
    shared: &Arc<Shared>,
    port: u16,
    users: &[Arc<User>],
    concurrency: usize,
    rejoined: &Arc<AtomicUsize>,
    peer_ids: &Arc<Mutex<Vec<String>>>,
) -> (Vec<String>, Vec<tokio::task::JoinHandle<()>>) {
    let gateway = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut calls = Vec::new();
    let mut tasks = Vec::new();
    for c in 0..CALLS {
        let call: Value = client
            .post(format!("{gateway}/v1/calls"))
            .bearer_auth(&users[c].token)
            .send()
            .await
            .expect("call")
            .json()
            .await
            .unwrap_or_default();
        let id = call["call_id"].as_str().unwrap_or_default().to_owned();
        for u in [c, c + CALLS] {
            tasks.push(tokio::spawn(participant(
                shared.clone(),
                port,
                id.clone(),
                users[u].token.clone(),
                rejoined.clone(),
                peer_ids.clone(),
            )));
        }
        calls.push(id);
    }
    for w in 0..concurrency {
        tasks.push(tokio::spawn(worker(
            shared.clone(),
            gateway.clone(),
            users[w % USERS].clone(),
            w,
        )));
    }
    (calls, tasks)
}

/// One window of the comparison: the whole mix through the gateway at `port` for
/// [`WARM_UP`] (not recorded), then for `length` (recorded).
async fn window(
    port: u16,
    layers: bool,
    users: &[Arc<User>],
    concurrency: usize,
    length: Duration,
) -> Window {
    let shared = Arc::new(Shared::new(Instant::now(), false));
    let (rejoined, peer_ids) = (Arc::default(), Arc::default());
    let (_, tasks) = start_load(&shared, port, users, concurrency, &rejoined, &peer_ids).await;
    tokio::time::sleep(WARM_UP).await;
    shared.recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(length).await;
    shared.recording.store(false, Ordering::Relaxed);
    let measured = started.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let window = Window {
        layers,
        measured,
        mix: shared.mix(),
    };
    eprintln!(
        "[compare] {:<15} {:>7.0} req/s over {:.1} s",
        if layers {
            "with layers"
        } else {
            "without layers"
        },
        window.mix.overall().requests() as f64 / measured.as_secs_f64(),
        measured.as_secs_f64()
    );
    window
}

/// Watches the harness's own scheduling: every gap over a second between two ticks of
/// 100 ms (the process paused with SIGSTOP, or starved of CPU) is pushed to the list,
/// since the latencies measured across it include it.
fn watch_stalls() -> (Arc<Mutex<Vec<Duration>>>, tokio::task::JoinHandle<()>) {
    let stalls = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn({
        let stalls = stalls.clone();
        async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = Instant::now();
                let gap = now - last;
                if gap > Duration::from_secs(1) {
                    stalls.lock().unwrap_or_else(|e| e.into_inner()).push(gap);
                }
                last = now;
            }
        }
    });
    (stalls, task)
}

const USAGE: &str =
    "usage: soak [--duration SECONDS] [--concurrency N] [--windows N] [--window SECONDS] [--out DIR]";

#[tokio::main]
async fn main() {
    let mut duration = Duration::from_secs(180);
    let mut concurrency = 24usize;
    let mut out = PathBuf::from("target/soak");
    let mut windows = 8usize;
    let mut window_length: Option<Duration> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--duration" => {
                duration =
                    Duration::from_secs(args.next().and_then(|v| v.parse().ok()).unwrap_or(180))
            }
            "--concurrency" => concurrency = args.next().and_then(|v| v.parse().ok()).unwrap_or(24),
            "--out" => out = args.next().map(PathBuf::from).unwrap_or(out),
            "--windows" => windows = args.next().and_then(|v| v.parse().ok()).unwrap_or(windows),
            "--window" => {
                window_length = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs_f64)
            }
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    for name in ["auth", "storage", "video", "gateway"] {
        if !bin_dir.join(name).exists() {
            eprintln!(
                "soak: {} is missing: run `cargo build --release -p secureconnect-examples` first",
                bin_dir.join(name).display()
            );
            std::process::exit(2);
        }
    }

    // Persistent, as a Redis holding sessions should be: a session lives in Redis only,
    // so one restarted empty would log every user out.
    let mut redis =
        RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"])
            .expect("redis-server");
    let dir = std::env::temp_dir().join(format!("sc-soak-{}", std::process::id()));
    let ports: Vec<(&'static str, u16)> = ["auth", "storage", "video", "gateway"]
        .iter()
        .map(|n| (*n, free_port()))
        .collect();
    let bare_port = free_port();
    let mut base_env: Vec<(String, String)> = vec![
        ("JWT_SECRET".into(), SECRET.into()),
        ("REDIS_URL".into(), redis.url()),
        (
            "STORAGE_DIR".into(),
            dir.join("files").display().to_string(),
        ),
        // The records (accounts, conversations, files) survive the restarts.
        ("DATA_DIR".into(), dir.join("data").display().to_string()),
        ("RUST_LOG".into(), "warn".into()),
        ("RATE_LIMIT_PER_MINUTE".into(), "1000000".into()),
        ("RATE_LIMIT_CLIENT_PER_MINUTE".into(), "1000000".into()),
    ];
    for (name, port) in &ports {
        base_env.push((
            format!("{}_ADDR", name.to_ascii_uppercase()),
            format!("127.0.0.1:{port}"),
        ));
    }
    let mut services: Vec<Service> = ports
        .iter()
        .map(|(name, port)| Service {
            name,
            exe: bin_dir.join(name),
            env: base_env.clone(),
            port: *port,
            child: None,
            peak_kb: 0,
        })
        .collect();
    let mut bare_env = base_env.clone();
    bare_env.push(("SC_LAYERS".into(), "off".into()));
    bare_env.retain(|(k, _)| k != "GATEWAY_ADDR");
    bare_env.push(("GATEWAY_ADDR".into(), format!("127.0.0.1:{bare_port}")));
    let mut bare = Service {
        name: "gateway (no layers)",
        exe: bin_dir.join("gateway"),
        env: bare_env,
        port: bare_port,
        child: None,
        peak_kb: 0,
    };
    for s in &mut services {
        s.start().await;
    }
    bare.start().await;
    let port = |name: &str| {
        ports
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, p)| *p)
    };
    let gateway = format!("http://127.0.0.1:{}", port("gateway"));
    let client = reqwest::Client::new();

    // Users, each with a conversation.
    let mut users = Vec::new();
    for i in 0..USERS {
        let email = format!("user{i}@soak.test");
        let creds = json!({ "email": email, "password": "soak password" });
        let _ = client
            .post(format!("{gateway}/v1/auth/register"))
            .json(&creds)
            .send()
            .await;
        let login: Value = client
            .post(format!("{gateway}/v1/auth/login"))
            .json(&creds)
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login body");
        let token = login["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let conv: Value = client
            .post(format!("{gateway}/v1/conversations"))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .expect("conversation")
            .json()
            .await
            .unwrap_or_default();
        users.push(Arc::new(User {
            token,
            email,
            conversation: conv["id"].as_str().unwrap_or_default().to_owned(),
        }));
    }

    let (stalls, stall_watch) = watch_stalls();
    let start = Instant::now();
    let shared = Arc::new(Shared::new(start, true));

    // Calls with two WebSocket participants each, and the clients.
    let rejoined = Arc::new(AtomicUsize::new(0));
    let peer_ids = Arc::new(Mutex::new(Vec::new()));
    let (calls, tasks) = start_load(
        &shared,
        port("gateway"),
        &users,
        concurrency,
        &rejoined,
        &peer_ids,
    )
    .await;

    // Progress.
    let progress = {
        let shared = shared.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = shared.requests.load(Ordering::Relaxed);
                let (phase, fault) = *shared.phase.lock().unwrap_or_else(|e| e.into_inner());
                eprintln!(
                    "[{:>4}s] {:>7.0} req/s  5xx so far: {}  phase: {phase:?} ({fault})",
                    started.elapsed().as_secs(),
                    (now - last) as f64 / 5.0,
                    shared.errors.load(Ordering::Relaxed)
                );
                last = now;
            }
        })
    };

    let at = |fraction: f64| start + duration.mul_f64(fraction);
    let mut report: Vec<String> = Vec::new();
    let mut audit_before_restarts = [0f64; 3];

    tokio::time::sleep_until(at(0.15).into()).await;
    redis.kill().expect("kill redis");
    let t = Instant::now();
    let killed_at = t;
    shared.set_phase(Phase::Degraded, "redis_killed");
    let detect = until_state(&client, &gateway, "degraded", t).await;
    tokio::time::sleep_until(at(0.30).into()).await;
    redis.restart().expect("restart redis");
    let t = Instant::now();
    shared.set_phase(Phase::Recovering, "redis_killed");
    let recover = until_state(&client, &gateway, "healthy", t).await;
    shared.set_phase(Phase::Healthy, "none");
    shared.fault("Redis killed", killed_at);
    report.push(format!("| Redis killed (SIGKILL), then restarted | detected in {} ms | healthy {} ms after the restart |",
        detect.map_or("—".into(), |v| v.to_string()), recover.map_or("—".into(), |v| v.to_string())));

    tokio::time::sleep_until(at(0.45).into()).await;
    redis.pause().expect("pause redis");
    let t = Instant::now();
    let paused_at = t;
    shared.set_phase(Phase::Degraded, "redis_paused");
    let detect = until_state(&client, &gateway, "degraded", t).await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(t.elapsed())).await;
    redis.resume().expect("resume redis");
    let t = Instant::now();
    shared.set_phase(Phase::Recovering, "redis_paused");
    let recover = until_state(&client, &gateway, "healthy", t).await;
    shared.set_phase(Phase::Healthy, "none");
    shared.fault("Redis stopped 5 s", paused_at);
    report.push(format!(
        "| Redis stopped (SIGSTOP) for 5 s | detected in {} ms | healthy {} ms after SIGCONT |",
        detect.map_or("—".into(), |v| v.to_string()),
        recover.map_or("—".into(), |v| v.to_string())
    ));

    tokio::time::sleep_until(at(0.60).into()).await;
    let before = participants(&client, &gateway, &users[0].token, &calls).await;
    let video = services
        .iter_mut()
        .find(|s| s.name == "video")
        .expect("video");
    let a = audit_counts(&client, video.port).await;
    for k in 0..3 {
        audit_before_restarts[k] += a[k];
    }
    shared.set_phase(Phase::Degraded, "video_restart");
    let rejoined_before = rejoined.load(Ordering::Relaxed);
    let t = Instant::now();
    video.stop("KILL");
    video.start().await;
    let restarted_ms = t.elapsed().as_millis();
    shared.fault("video killed", t);
    let after = participants(&client, &gateway, &users[0].token, &calls).await;
    shared.set_phase(Phase::Healthy, "none");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rejoins = rejoined.load(Ordering::Relaxed) - rejoined_before;
    report.push(format!("| video service killed (SIGKILL) and restarted | back in {restarted_ms} ms | participants {before} before, {after} after; {rejoins} rejoined with their tokens |"));

    tokio::time::sleep_until(at(0.75).into()).await;
    let storage = services
        .iter_mut()
        .find(|s| s.name == "storage")
        .expect("storage");
    let a = audit_counts(&client, storage.port).await;
    for k in 0..3 {
        audit_before_restarts[k] += a[k];
    }
    shared.set_phase(Phase::Degraded, "storage_restart");
    let t = Instant::now();
    storage.stop("TERM");
    storage.start().await;
    let restarted_ms = t.elapsed().as_millis();
    shared.fault("storage restarted", t);
    shared.set_phase(Phase::Healthy, "none");
    report.push(format!("| storage service restarted (SIGTERM, start) | back in {restarted_ms} ms | uploads and downloads in between answered 502 (counted below) |"));

    tokio::time::sleep_until(at(0.90).into()).await;
    shared.stop.store(true, Ordering::Relaxed);
    shared
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .timeline
        .end(Instant::now());
    for task in tasks {
        let _ = task.await;
    }
    progress.abort();
    let soak_requests = shared.requests.load(Ordering::Relaxed);
    let soak_elapsed = start.elapsed();

    // The layers' price: the same clients and mix through both gateways, in short
    // alternating windows of equal length.
    let length =
        window_length.unwrap_or_else(|| duration.mul_f64(0.04).max(Duration::from_secs(5)));
    let mut comparison = Comparison::default();
    for layers in alternating(windows) {
        let target = if layers { port("gateway") } else { bare_port };
        comparison
            .windows
            .push(window(target, layers, &users, concurrency, length).await);
    }

    stall_watch.abort();
    let stalls = std::mem::take(&mut *stalls.lock().unwrap_or_else(|e| e.into_inner()));

    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut audit = audit_before_restarts;
    for s in &services {
        let a = audit_counts(&client, s.port).await;
        for k in 0..3 {
            audit[k] += a[k];
        }
    }
    let memory: Vec<(String, u64, u64)> = services
        .iter()
        .chain([&bare])
        .map(|s| (s.name.to_owned(), s.peak(), s.rss()))
        .collect();
    for s in &mut services {
        s.stop("TERM");
    }
    bare.stop("TERM");
    let _ = std::fs::remove_dir_all(&dir);

    // Summary.
    let stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    let mut whole = Mix::default();
    for mix in stats.latencies.values() {
        whole.merge(mix);
    }
    let mut md = String::new();
    let _ =
        writeln!(md,
        "## Soak: {} s, {concurrency} concurrent clients, {} calls × 2 WebSocket participants\n",
        duration.as_secs(),
        CALLS
    );
    let _ = writeln!(
        md,
        "{soak_requests} requests in {:.0} s ({:.0} per second) through the gateway.\n",
        soak_elapsed.as_secs_f64(),
        soak_requests as f64 / soak_elapsed.as_secs_f64()
    );
    if stalls.is_empty() {
        let _ = writeln!(
            md,
            "The harness ran throughout (no gap over 1 s in its own scheduling).\n"
        );
    } else {
        let total: Duration = stalls.iter().sum();
        let _ = writeln!(
            md,
            "**The harness itself did not run for {:.1} s ({} gap{} over 1 s, the longest {:.1} s): \
             it was paused or starved of CPU, and the latencies measured across a gap include it.**\n",
            total.as_secs_f64(),
            stalls.len(),
            if stalls.len() == 1 { "" } else { "s" },
            stalls.iter().max().copied().unwrap_or_default().as_secs_f64()
        );
    }
    let _ = writeln!(
        md,
        "| phase | requests | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|"
    );
    for (phase, mix) in &stats.latencies {
        let mut all = mix.overall();
        let _ = writeln!(
            md,
            "| {phase:?} | {} | {} | {} | {} |",
            all.requests(),
            ms(all.percentile(50.0)),
            ms(all.percentile(99.0)),
            ms(all.percentile(99.9))
        );
    }
    let _ = writeln!(
        md,
        "\nPer request class, the whole load (every phase); signaling is the one-way latency \
         of an ICE message from its sender to its peer, through the gateway and the video \
         service, 2 per second per participant:\n"
    );
    let _ = writeln!(md, "{}", whole.table());
    let _ = writeln!(md, "| fault | detection | recovery |\n|---|---|---|");
    for line in &report {
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(
        md,
        "\n| status | cause | during | count |\n|---|---|---|---|"
    );
    for ((status, cause, fault), count) in stats
        .responses
        .iter()
        .filter(|((s, _, _), _)| *s >= 400 || *s == 0)
    {
        let _ = writeln!(md, "| {status} | {cause} | {fault} | {count} |");
    }
    let redis_5xx: u64 = stats
        .responses
        .iter()
        .filter(|((s, _, f), _)| *s >= 500 && f.starts_with("redis"))
        .map(|(_, c)| c)
        .sum();
    let _ = writeln!(
        md,
        "\n5xx while Redis was killed or stopped: **{redis_5xx}**.\n"
    );
    let _ = writeln!(md, "| audit events | produced | written | dropped |\n|---|---|---|---|\n| all services | {:.0} | {:.0} | {:.0} |\n", audit[0], audit[1], audit[2]);
    let _ = writeln!(
        md,
        "| service | peak RSS (`VmHWM`, every process of it) | RSS at the end (`VmRSS`) |\n|---|---|---|"
    );
    let mib = |kb: u64| format!("{:.1} MiB", kb as f64 / 1024.0);
    for (name, peak, rss) in &memory {
        let _ = writeln!(md, "| {name} | {} | {} |", mib(*peak), mib(*rss));
    }
    let _ = writeln!(
        md,
        "\n### The layers' price: the same mix through both gateways\n\n\
         {} windows of {:.1} s (after {:.0} s of warm-up each, left out), alternating \
         (with, without, without, with, …), {concurrency} clients and {} calls each: the \
         gateway with its metrics and audit layers against the one with `SC_LAYERS=off`. \
         Signaling is sent at a fixed rate, so its throughput ratio is 1 by construction.\n",
        comparison.windows.len(),
        length.as_secs_f64(),
        WARM_UP.as_secs_f64(),
        CALLS
    );
    let _ = writeln!(md, "{}", comparison.table());
    let pairs: Vec<String> = comparison
        .pair_throughput_ratios()
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect();
    let _ = writeln!(
        md,
        "Throughput ratio of each (with, without) pair of windows, in run order: {}.\n",
        pairs.join(", ")
    );

    let overall = comparison.ratios(None);
    let auth_peak = memory
        .iter()
        .find(|(name, _, _)| name == "auth")
        .map_or(0, |(_, peak, _)| *peak);
    let mut healthy_non_login = stats
        .latencies
        .get(&Phase::Healthy)
        .map(Mix::non_login)
        .unwrap_or_default();
    let mut compared_non_login = comparison.mix(true).non_login();
    let met = |ok: bool| if ok { "met" } else { "**not met**" };
    let p99_ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (h, c) = (
        p99_ms(healthy_non_login.percentile(99.0)),
        p99_ms(compared_non_login.percentile(99.0)),
    );
    let _ = writeln!(
        md,
        "### Against the goals\n\n| goal | this run | |\n|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| auth peak RSS < 150 MiB | {} | {} |",
        mib(auth_peak),
        met((auth_peak as f64) < 150.0 * 1024.0)
    );
    let _ = writeln!(
        md,
        "| p99 of non-login requests < 20 ms | {h:.2} ms in the soak's healthy phases; {c:.2} ms in the windows with layers | {} |",
        met(h < 20.0 && c < 20.0)
    );
    let _ = writeln!(
        md,
        "| gateway throughput with layers ≥ 0.95 of without | {:.3} | {} |",
        overall.throughput,
        met(overall.throughput >= 0.95)
    );
    let non_login = comparison.non_login_ratios();
    let _ = writeln!(
        md,
        "| p99 with layers ≤ 1.10 × without | {:.2} over every request; {:.2} without the logins | {} |",
        overall.p99,
        non_login.p99,
        met(overall.p99 <= 1.10)
    );
    print!("{md}");

    let title = format!(
        "Soak: {} s, {concurrency} clients; fault windows shaded",
        duration.as_secs()
    );
    let svg = stats
        .timeline
        .render_svg(&title)
        .unwrap_or_else(|e| panic!("cannot draw the timeline: {e}"));
    std::fs::create_dir_all(&out)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
    for (name, text) in [("summary.md", &md), ("timeline.svg", &svg)] {
        let path = out.join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("soak: wrote {}", path.display());
    }
}
