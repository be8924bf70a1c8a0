//! [`RedisServer`]: a real `redis-server` child process on a free loopback port.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// How long a started server has to answer `PING`.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A `redis-server` child process on `127.0.0.1` for tests. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    password: Option<String>,
    extra_args: Vec<String>,
    /// A configuration file (in `dir`) given as the first argument: Sentinel needs one
    /// it can rewrite.
    config_file: Option<String>,
}

/// A reply read by [`RedisServer::command`], in RESP2 terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other simple strings.
    Status(String),
    /// `-ERR …`: the whole error line.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$…`: a bulk string, `None` for a null bulk.
    Bulk(Option<Vec<u8>>),
    /// `*…`
    Array(Vec<Reply>),
}

impl Reply {
    /// The bulk string as UTF-8 text, if this is one.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Self::Status(s) => Some(s.clone()),
            _ => None,
        }
    }
}

pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl RedisServer {
    /// Starts a server on a free port, without persistence.
    ///
    /// # Errors
    ///
    /// If `redis-server` is missing or does not answer `PING` within 10 s.
    pub fn start() -> io::Result<Self> {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra command-line arguments (`["--maxmemory", "1mb"]`).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_with_args(args: &[&str]) -> io::Result<Self> {
        Self::start_with(args, None, |_| Vec::new())
    }

    /// Starts a server from a configuration file holding `config` (written in the
    /// server's own directory, where the server may rewrite it), then `args`, plus
    /// the arguments `more(port)` adds for the port it got.
    pub(crate) fn start_with(
        args: &[&str],
        config: Option<&str>,
        more: impl Fn(u16) -> Vec<String>,
    ) -> io::Result<Self> {
        let mut last_error = None;
        // A free port can be taken by someone else before the server binds it; try a
        // few.
        for _ in 0..5 {
            let port = free_port()?;
            let dir = tempfile::tempdir()?;
            let config_file = match config {
                Some(text) => {
                    let path = dir.path().join("redis.conf");
                    std::fs::write(&path, text)?;
                    Some(path.to_string_lossy().into_owned())
                }
                None => None,
            };
            let mut extra_args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            extra_args.extend(more(port));
            let mut server = Self {
                port,
                dir,
                child: None,
                password: None,
                extra_args,
                config_file,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let child = Command::new("redis-server")
            .args(&self.config_file)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--dir", &self.dir.path().to_string_lossy()])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run redis-server (install Debian's redis-server): {e}"),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Reply::Status(s)) = self.command(&["PING"]) {
                if s == "PONG" {
                    return Ok(());
                }
            }
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "redis-server exited at start ({status}) on port {}",
                        self.port
                    )));
                }
            }
            if Instant::now() > deadline {
                self.kill()?;
                return Err(io::Error::other("redis-server did not answer PING in time"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port the server listens on; the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's directory (its data, its configuration file).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, signal: Signal) -> io::Result<()> {
        let pid = self
            .pid()
            .and_then(|p| Pid::from_raw(p as i32))
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        kill_process(pid, signal).map_err(io::Error::from)
    }

    /// SIGSTOP, and waits until the process has stopped: connections stay open and
    /// hang.
    ///
    /// # Errors
    ///
    /// If the server is not running.
    pub fn pause(&self) -> io::Result<()> {
        self.signal(Signal::STOP)?;
        // kill(2) returns before the process has stopped: wait until it has, so that
        // what a test does next meets a stopped server.
        let stat = format!("/proc/{}/stat", self.pid().unwrap_or(0));
        for _ in 0..400 {
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            if text
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('T'))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(io::Error::other("redis-server did not stop"))
    }

    /// SIGCONT after [`pause`](Self::pause).
    ///
    /// # Errors
    ///
    /// If the server is not running.
    pub fn resume(&self) -> io::Result<()> {
        self.signal(Signal::CONT)
    }

    /// SIGKILL, and waits for the process to be gone. Does nothing if it is not running.
    ///
    /// # Errors
    ///
    /// If the signal cannot be sent.
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill), or
    /// killing it first). Settings made with `CONFIG SET` are gone, data too.
    ///
    /// # Errors
    ///
    /// If the port cannot be bound again or the server does not answer in time.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        self.password = None;
        self.spawn()
    }

    /// Sets the password [`command`](Self::command) authenticates with, after a
    /// `CONFIG SET requirepass` made elsewhere.
    pub fn set_password(&mut self, password: Option<&str>) {
        self.password = password.map(str::to_owned);
    }

    /// Runs one command on a fresh connection and reads its reply.
    ///
    /// `CONFIG SET requirepass <p>` through this method also makes later commands
    /// authenticate with `<p>`.
    ///
    /// # Errors
    ///
    /// On a connection or protocol failure (a Redis error reply is `Ok(Reply::Error)`).
    pub fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        let reply = command_at(self.port, self.password.as_deref(), args)?;
        let is_requirepass = args.len() == 4
            && args[0].eq_ignore_ascii_case("CONFIG")
            && args[1].eq_ignore_ascii_case("SET")
            && args[2].eq_ignore_ascii_case("requirepass");
        if is_requirepass && matches!(reply, Reply::Status(_)) {
            self.password = (!args[3].is_empty()).then(|| args[3].to_owned());
        }
        Ok(reply)
    }

    /// `CONFIG SET key value`.
    ///
    /// # Errors
    ///
    /// On a connection failure, or if Redis refuses the setting.
    pub fn config_set(&mut self, key: &str, value: &str) -> io::Result<()> {
        match self.command(&["CONFIG", "SET", key, value])? {
            Reply::Status(_) => Ok(()),
            other => Err(io::Error::other(format!(
                "CONFIG SET {key} {value}: {other:?}"
            ))),
        }
    }

    /// A field of `INFO`, such as `total_connections_received`.
    ///
    /// # Errors
    ///
    /// On a connection failure or when the field is absent.
    pub fn info_field(&mut self, field: &str) -> io::Result<String> {
        let info = self
            .command(&["INFO", "all"])?
            .text()
            .ok_or_else(|| io::Error::other("INFO gave no text"))?;
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| io::Error::other(format!("INFO has no field {field}")))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Runs one command on a fresh connection to `127.0.0.1:<port>` and reads its reply.
pub(crate) fn command_at(port: u16, password: Option<&str>, args: &[&str]) -> io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    if let Some(password) = password {
        write_command(&mut stream, &["AUTH", password])?;
        if let Reply::Error(e) = read_reply(&mut reader)? {
            return Err(io::Error::other(format!("AUTH failed: {e}")));
        }
    }
    write_command(&mut stream, args)?;
    read_reply(&mut reader)
}

fn write_command(stream: &mut TcpStream, args: &[&str]) -> io::Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| io::Error::other(format!("bad RESP line {line:?}")))
    };
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(number()?),
        "$" => {
            let len = number()?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut data = vec![0; len as usize + 2];
                reader.read_exact(&mut data)?;
                data.truncate(len as usize);
                Reply::Bulk(Some(data))
            }
        }
        "*" => {
            let len = number()?;
            let mut items = Vec::new();
            for _ in 0..len.max(0) {
                items.push(read_reply(reader)?);
            }
            Reply::Array(items)
        }
        _ => return Err(io::Error::other(format!("bad RESP line {line:?}"))),
    })
}
