//! Child processes for tests and soaks: services started from a binary with environment
//! variables, killed when dropped, signalled (SIGSTOP waits until the process has
//! stopped), and waited for until they answer.
//!
//! ```no_run
//! # async fn run() {
//! use std::process::Command;
//! use std::time::Duration;
//! use secureconnect_testkit::process::{wait_until_ok, ChildProcess};
//!
//! let port = secureconnect_testkit::free_port();
//! let service = ChildProcess::spawn(
//!     Command::new("target/debug/gateway").env("GATEWAY_ADDR", format!("127.0.0.1:{port}")),
//! )
//! .expect("gateway starts");
//! assert!(wait_until_ok(&format!("http://127.0.0.1:{port}/health"), Duration::from_secs(20)).await);
//! service.pause(); // SIGSTOP, returns once stopped
//! service.resume(); // SIGCONT
//! drop(service); // SIGKILL, reaped
//! # }
//! ```

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves nothing running.
#[derive(Debug)]
pub struct ChildProcess {
    // `None` once consumed by `kill`/`stop_with`.
    child: Option<Child>,
    pid: u32,
}

impl ChildProcess {
    /// Spawns `command` (its program, arguments, environment and stdio as set).
    ///
    /// # Errors
    ///
    /// If the program cannot be started.
    pub fn spawn(command: &mut Command) -> io::Result<Self> {
        command.spawn().map(Self::from)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Sends `signal`, named as `kill(1)` takes it (`STOP`, `CONT`, `TERM`, `KILL`, …).
    /// For `STOP` it returns only once every thread has stopped (`kill(2)` returns
    /// before), so what the test does next happens against a stopped process.
    ///
    /// # Panics
    ///
    /// If the signal cannot be sent, or a stopped process does not stop within 1 s.
    pub fn signal(&self, signal: &str) {
        send(self.pid, signal)
            .unwrap_or_else(|e| panic!("kill -{signal} {} failed: {e}", self.pid));
        if signal == "STOP" {
            wait_stopped(self.pid, Duration::from_secs(1));
        }
    }

    /// SIGSTOP, returning once the process has stopped: it hangs, keeping its sockets.
    ///
    /// # Panics
    ///
    /// As [`ChildProcess::signal`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: a paused process goes on.
    ///
    /// # Panics
    ///
    /// As [`ChildProcess::signal`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// SIGKILL (no clean-up at all) and reap.
    ///
    /// # Errors
    ///
    /// If the process cannot be killed or waited for.
    pub fn kill(mut self) -> io::Result<ExitStatus> {
        // On an error the child stays inside, and the drop reaps it.
        self.child_mut().kill()?;
        self.take().wait()
    }

    /// Sends `signal` (as [`ChildProcess::signal`]; `TERM` for a graceful shutdown),
    /// then waits for the process to exit and reaps it. A failure to signal (say, the
    /// process already exited) is not an error: the exit status tells.
    ///
    /// # Errors
    ///
    /// If the process cannot be waited for.
    pub fn stop_with(mut self, signal: &str) -> io::Result<ExitStatus> {
        let mut child = self.take();
        let _ = send(self.pid, signal);
        child.wait()
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("a ChildProcess is consumed only once")
    }

    fn take(&mut self) -> Child {
        self.child
            .take()
            .expect("a ChildProcess is consumed only once")
    }
}

impl From<Child> for ChildProcess {
    /// Takes ownership of `child`: from now on it is killed when dropped.
    fn from(child: Child) -> Self {
        let pid = child.id();
        Self {
            child: Some(child),
            pid,
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `GET url` every 50 ms until it answers 200, for at most `within`; whether it
/// did. For a service just started: its health endpoint answers once it serves.
pub async fn wait_until_ok(url: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if reqwest::get(url).await.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn send(pid: u32, signal: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill exited with {status}")))
    }
}

/// Waits until `/proc/<pid>/stat` says the process is stopped (state `T`).
fn wait_stopped(pid: u32, within: Duration) {
    let stat = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let state = std::fs::read_to_string(&stat).unwrap_or_default();
        // The command name, in parentheses, may hold anything: the state follows the last ')'.
        if state
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('T'))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("process {pid} did not stop");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> ChildProcess {
        ChildProcess::spawn(Command::new("sleep").arg("30")).unwrap()
    }

    fn state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next())
            .unwrap_or('?')
    }

    #[test]
    fn pause_waits_until_stopped_and_resume_goes_on() {
        let child = sleeper();
        child.pause();
        assert_eq!(state(child.id()), 'T');
        child.resume();
        for _ in 0..200 {
            if state(child.id()) != 'T' {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("still stopped after SIGCONT");
    }

    #[test]
    fn kill_and_stop_with_reap() {
        let status = sleeper().kill().unwrap();
        assert!(!status.success());
        let status = sleeper().stop_with("TERM").unwrap();
        assert!(!status.success());
    }

    #[test]
    fn dropping_kills() {
        let child = sleeper();
        let pid = child.id();
        drop(child);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "reaped"
        );
    }

    #[tokio::test]
    async fn wait_until_ok_gives_up() {
        let port = crate::free_port();
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{port}/health");
        assert!(!wait_until_ok(&url, Duration::from_millis(200)).await);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
