//! The four reference services as real processes, on free loopback ports, against a real
//! redis-server.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-secret-test-secret-test-secret-42";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct System {
    pub dir: tempfile::TempDir,
    pub ports: [(&'static str, u16); 4],
    pub redis_url: String,
    pub extra: Vec<(String, String)>,
    children: Vec<(&'static str, Child)>,
}

impl System {
    pub fn gateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.port("gateway"))
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
        let mut system = Self {
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
        };
        for name in ["auth", "storage", "video", "gateway"] {
            system.spawn(name).await;
        }
        system
    }

    pub async fn spawn(&mut self, name: &'static str) {
        let exe = match name {
            "auth" => env!("CARGO_BIN_EXE_auth"),
            "storage" => env!("CARGO_BIN_EXE_storage"),
            "video" => env!("CARGO_BIN_EXE_video"),
            _ => env!("CARGO_BIN_EXE_gateway"),
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.out")))
            .unwrap();
        let mut cmd = Command::new(exe);
        cmd.env("JWT_SECRET", SECRET)
            .env("REDIS_URL", &self.redis_url)
            .env("STORAGE_DIR", self.dir.path().join("files"))
            .env("AUDIT_FILE", self.audit_file(name))
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
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push((name, child));
        let url = format!("http://127.0.0.1:{}/health", self.port(name));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to a service.
    pub fn signal(&self, name: &str, signal: &str) {
        let (_, child) = self.children.iter().find(|(n, _)| *n == name).unwrap();
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        if signal == "STOP" {
            // kill(2) returns before every thread has stopped: wait until it has.
            let stat = format!("/proc/{}/stat", child.id());
            for _ in 0..200 {
                let state = std::fs::read_to_string(&stat).unwrap_or_default();
                if state
                    .rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('T'))
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("{name} did not stop");
        }
    }

    /// SIGKILL: no clean-up at all.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| *n == name) {
            let (_, mut child) = self.children.remove(i);
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
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

/// A sample line of a metrics page whose labels include `labels`, parsed.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|lab| l.contains(lab)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Sends `request` and reads its JSON body, whatever the status.
pub async fn json(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}
