//! The four reference services as real processes, on free loopback ports, against a real
//! redis-server.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod all_in_one;
pub mod redis_load;
pub mod video_nodes;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub use secureconnect_testkit::free_port;
use secureconnect_testkit::process::{wait_until_ok, ChildProcess};

pub const SECRET: &str = "test-secret-test-secret-test-secret-42";

pub struct System {
    pub dir: tempfile::TempDir,
    pub ports: [(&'static str, u16); 4],
    pub redis_url: String,
    pub extra: Vec<(String, String)>,
    children: Vec<(String, ChildProcess)>,
}

impl System {
    pub fn gateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.port("gateway"))
    }

    /// `http://127.0.0.1:<port of name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.port(name))
    }

    pub fn port(&self, name: &str) -> u16 {
        self.ports.iter().find(|(n, _)| *n == name).unwrap().1
    }

    pub fn audit_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.audit.jsonl"))
    }

    pub fn stdout(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.out"))).unwrap_or_default()
    }

    pub async fn start(redis_url: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_only(&["auth", "storage", "video", "gateway"], redis_url, extra).await
    }

    /// Starts only the services `names` (the others' ports stay unused).
    pub async fn start_only(
        names: &[&'static str],
        redis_url: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut system = Self::new(redis_url, extra);
        for name in names {
            system.spawn(name).await;
        }
        system
    }

    fn new(redis_url: &str, extra: &[(&str, &str)]) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            ports: [
                ("auth", free_port()),
                ("storage", free_port()),
                ("video", free_port()),
                ("gateway", free_port()),
            ],
            redis_url: redis_url.to_owned(),
            extra: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            children: Vec::new(),
        }
    }

    /// The command for `exe`, with the system's environment; stdout to `<file>.out`,
    /// audit events to `audit_file(file)`.
    fn command(&self, exe: &str, file: &str) -> Command {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{file}.out")))
            .unwrap();
        let mut cmd = Command::new(exe);
        cmd.env("JWT_SECRET", SECRET)
            .env("REDIS_URL", &self.redis_url)
            .env("STORAGE_DIR", self.storage_dir())
            .env("DATA_DIR", self.dir.path().join("data"))
            .env("AUDIT_FILE", self.audit_file(file))
            .env("RUST_LOG", "info");
        for (service, port) in self.ports {
            cmd.env(
                format!("{}_ADDR", service.to_ascii_uppercase()),
                format!("127.0.0.1:{port}"),
            );
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::from(out)).stderr(Stdio::null());
        cmd
    }

    /// Where the storage services keep their files.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    fn exe(name: &str) -> &'static str {
        match name {
            "auth" => env!("CARGO_BIN_EXE_auth"),
            "storage" => env!("CARGO_BIN_EXE_storage"),
            "video" => env!("CARGO_BIN_EXE_video"),
            _ => env!("CARGO_BIN_EXE_gateway"),
        }
    }

    pub async fn spawn(&mut self, name: &'static str) {
        let cmd = self.command(Self::exe(name), name);
        self.spawn_on(name, cmd, self.port(name)).await;
    }

    /// Starts another instance of `name` (sharing Redis, the storage folder and the
    /// other services' addresses) on a port of its own, which it returns. Its stdout and
    /// audit file are named `<name>-<port>`.
    pub async fn spawn_another(&mut self, name: &'static str) -> u16 {
        let port = free_port();
        let mut cmd = self.command(Self::exe(name), &format!("{name}-{port}"));
        cmd.env(
            format!("{}_ADDR", name.to_ascii_uppercase()),
            format!("127.0.0.1:{port}"),
        );
        self.spawn_on(name, cmd, port).await;
        port
    }

    /// Starts an instance of `name` called `label` (its stdout `<label>.out`, the name
    /// [`kill`](Self::kill) and [`signal`](Self::signal) take) listening on `port`, with
    /// `env` on top of the system's environment.
    pub async fn spawn_labelled(
        &mut self,
        name: &'static str,
        label: &str,
        port: u16,
        env: &[(&str, &str)],
    ) {
        let mut cmd = self.command(Self::exe(name), label);
        cmd.env(
            format!("{}_ADDR", name.to_ascii_uppercase()),
            format!("127.0.0.1:{port}"),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = ChildProcess::spawn(&mut cmd).unwrap();
        self.children.push((label.to_owned(), child));
        let url = format!("http://127.0.0.1:{port}/health");
        assert!(
            wait_until_ok(&url, Duration::from_secs(20)).await,
            "{label} did not come up"
        );
    }

    async fn spawn_on(&mut self, name: &'static str, mut cmd: Command, port: u16) {
        let child = ChildProcess::spawn(&mut cmd).unwrap();
        self.children.push((name.to_owned(), child));
        let url = format!("http://127.0.0.1:{port}/health");
        assert!(
            wait_until_ok(&url, Duration::from_secs(20)).await,
            "{name} did not come up"
        );
    }

    /// Sends `signal` (`STOP`, `CONT`) to a service; `STOP` returns once it has stopped.
    pub fn signal(&self, name: &str, signal: &str) {
        let (_, child) = self.children.iter().find(|(n, _)| *n == name).unwrap();
        child.signal(signal);
    }

    /// SIGKILL: no clean-up at all.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| *n == name) {
            let (_, child) = self.children.remove(i);
            child.kill().unwrap();
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // Killed (on drop) before the directory they write into goes.
        self.children.clear();
    }
}

pub struct Session {
    pub user_id: String,
    pub token: String,
}

pub async fn register_and_login(client: &reqwest::Client, gateway: &str, email: &str) -> Session {
    let body = serde_json::json!({ "email": email, "password": "correct horse battery" });
    let r = client
        .post(format!("{gateway}/v1/auth/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = client
        .post(format!("{gateway}/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    Session {
        user_id: v["user_id"].as_str().unwrap().to_owned(),
        token: v["access_token"].as_str().unwrap().to_owned(),
    }
}

/// Sends `request` and reads its JSON body, whatever the status.
pub async fn json(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Sends `request` and reads its body as text (a `/metrics` exposition), whatever the
/// status.
pub async fn text(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

/// A WebSocket to the gateway, as a client has it.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the signaling WebSocket of `call` through the gateway.
pub async fn ws(system: &System, call: &str, token: &str) -> Socket {
    let url = format!(
        "ws://127.0.0.1:{}/v1/calls/{call}/ws?access_token={token}",
        system.port("gateway")
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Sends `value` as a text frame.
pub async fn send(socket: &mut Socket, value: serde_json::Value) {
    use futures_util::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            value.to_string().into(),
        ))
        .await
        .unwrap();
}

/// The next text frame, parsed (waiting up to 5 s).
pub async fn recv(socket: &mut Socket) -> serde_json::Value {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// A user's whole day through the gateway, so that every service has served requests
/// and every family of metrics has series: accounts and logins (auth), a file uploaded,
/// refused to another user and downloaded (storage), a conversation (gateway), a call
/// joined over WebSocket, dropped, rejoined with a wrong and then the right token, and
/// left (video), and requests that end in 401 and 404.
pub async fn traffic(system: &System) {
    let g = system.gateway();
    let c = reqwest::Client::new();
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let alice = register_and_login(&c, &g, &format!("alice-{n}@example.org")).await;
    let bob = register_and_login(&c, &g, &format!("bob-{n}@example.org")).await;

    let up = json(
        c.post(format!("{g}/v1/storage/upload-url"))
            .bearer_auth(&alice.token)
            .json(&serde_json::json!({ "file_name": "a.txt", "file_size": 5, "content_type": "text/plain" })),
    )
    .await;
    let put = c
        .put(format!("{g}{}", up["upload_url"].as_str().unwrap()))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let file = up["file_id"].as_str().unwrap();
    let denied = c
        .get(format!("{g}/v1/storage/download-url/{file}"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let dl = json(
        c.get(format!("{g}/v1/storage/download-url/{file}"))
            .bearer_auth(&alice.token),
    )
    .await;
    let got = c
        .get(format!("{g}{}", dl["download_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);

    let conv = json(
        c.post(format!("{g}/v1/conversations"))
            .bearer_auth(&alice.token)
            .json(&serde_json::json!({})),
    )
    .await;
    let read = c
        .get(format!(
            "{g}/v1/conversations/{}",
            conv["id"].as_str().unwrap()
        ))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let call = json(c.post(format!("{g}/v1/calls")).bearer_auth(&alice.token)).await;
    let call = call["call_id"].as_str().unwrap();
    let mut joined = Vec::new();
    for user in [&alice, &bob] {
        let mut socket = ws(system, call, &user.token).await;
        send(&mut socket, serde_json::json!({ "type": "join" })).await;
        let reply = recv(&mut socket).await;
        assert_eq!(reply["type"], "joined", "{reply}");
        joined.push((socket, reply));
    }
    let (bob_socket, bob_joined) = joined.pop().unwrap();
    let (alice_socket, alice_joined) = joined.pop().unwrap();
    drop(alice_socket); // closed without a leave: awaiting rejoin
    let (id, token) = (
        &alice_joined["participant_id"],
        &alice_joined["rejoin_token"],
    );
    let mut socket = ws(system, call, &alice.token).await;
    send(
        &mut socket,
        serde_json::json!({ "type": "rejoin", "participant_id": id, "token": bob_joined["rejoin_token"] }),
    )
    .await;
    let refused = recv(&mut socket).await;
    assert_eq!(refused["code"], "bad_token", "{refused}");
    drop(bob_socket);
    let mut socket = ws(system, call, &alice.token).await;
    send(
        &mut socket,
        serde_json::json!({ "type": "rejoin", "participant_id": id, "token": token }),
    )
    .await;
    assert_eq!(recv(&mut socket).await["type"], "rejoined");
    send(&mut socket, serde_json::json!({ "type": "leave" })).await;

    for (path, status) in [("/v1/nowhere", 404), ("/v1/calls", 401)] {
        let r = c.post(format!("{g}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The shipped Grafana dashboards (examples/deploy/grafana/dashboards).
pub fn dashboards() -> Vec<secureconnect_testkit::grafana::Dashboard> {
    secureconnect_testkit::grafana::load_dir(&repo().join("examples/deploy/grafana/dashboards"))
}

/// The metric names the shipped recording rules (rules/*.yml) record.
pub fn recorded_metrics() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("rules")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            names.extend(secureconnect_testkit::promql::recorded_metrics(&text));
        }
    }
    names.sort();
    names
}
