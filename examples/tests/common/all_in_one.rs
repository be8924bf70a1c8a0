//! The all-in-one `secureconnect` binary as a real process with an audit file, and the
//! `audit-verify` binary on that file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use secureconnect_testkit::free_port;
use secureconnect_testkit::process::{wait_until_ok, ChildProcess};

/// The chain key the tests run with.
pub const AUDIT_KEY: &str = "audit-key-audit-key-audit-key-0123456789";

/// The four services in one process.
pub struct AllInOne {
    pub ports: [(&'static str, u16); 4],
    pub audit_file: PathBuf,
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    child: Option<ChildProcess>,
}

impl AllInOne {
    /// Starts it with `AUDIT_FILE=audit_file`, `AUDIT_KEY`, trusting 127.0.0.1 as a
    /// proxy, Redis absent (degraded mode: in-memory fallbacks), stdout in `dir`.
    pub async fn start(dir: &Path, audit_file: &Path, extra: &[(&str, &str)]) -> Self {
        let mut env: Vec<(String, String)> = vec![
            ("AUDIT_FILE".into(), audit_file.display().to_string()),
            ("AUDIT_KEY".into(), AUDIT_KEY.into()),
            ("TRUSTED_PROXIES".into(), "127.0.0.1".into()),
            ("JWT_SECRET".into(), super::SECRET.into()),
            (
                "REDIS_URL".into(),
                format!("redis://127.0.0.1:{}/", free_port()),
            ),
            (
                "STORAGE_DIR".into(),
                dir.join("files").display().to_string(),
            ),
            ("DATA_DIR".into(), dir.join("data").display().to_string()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut system = Self {
            ports: [
                ("gateway", free_port()),
                ("auth", free_port()),
                ("storage", free_port()),
                ("video", free_port()),
            ],
            audit_file: audit_file.to_owned(),
            dir: dir.to_owned(),
            env,
            child: None,
        };
        system.spawn().await;
        system
    }

    /// Starts the process (again).
    pub async fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("secureconnect.out"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secureconnect"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (service, port) in self.ports {
            cmd.env(
                format!("{}_ADDR", service.to_ascii_uppercase()),
                format!("127.0.0.1:{port}"),
            );
        }
        let errors = out.try_clone().unwrap();
        self.child = Some(
            ChildProcess::spawn(cmd.stdout(Stdio::from(out)).stderr(Stdio::from(errors))).unwrap(),
        );
        for (name, _) in self.ports {
            assert!(
                wait_until_ok(
                    &format!("{}/health", self.url(name)),
                    Duration::from_secs(20)
                )
                .await,
                "{name} did not come up:\n{}",
                std::fs::read_to_string(self.dir.join("secureconnect.out")).unwrap_or_default()
            );
        }
    }

    pub fn url(&self, name: &str) -> String {
        let port = self.ports.iter().find(|(n, _)| *n == name).unwrap().1;
        format!("http://127.0.0.1:{port}")
    }

    /// SIGKILL: no clean-up at all.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            child.kill().unwrap();
        }
    }

    /// SIGTERM, and waits until it has flushed its audit trail and exited.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let status = child.stop_with("TERM").unwrap();
            assert!(status.success(), "{status}");
        }
    }

    /// The audit file's lines as JSON.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until the audit file has at least `n` lines.
    pub async fn wait_for_events(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..500 {
            let text = std::fs::read_to_string(&self.audit_file).unwrap_or_default();
            if text.lines().count() >= n && text.ends_with('\n') {
                return self.events();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} lines in {}", self.audit_file.display());
    }
}

/// `audit-verify FILE` with `AUDIT_KEY`: its exit code and output. The binary is the
/// workspace's own, built next to this test's (`cargo test --workspace` builds it; so
/// does `cargo build -p secureconnect-audit`).
pub fn audit_verify(file: &Path) -> (i32, String) {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("audit-verify"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p secureconnect-audit --bin audit-verify` first",
        bin.display()
    );
    let out = Command::new(&bin)
        .arg(file)
        .env("AUDIT_KEY", AUDIT_KEY)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}
