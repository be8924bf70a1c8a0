//! [`PgServer`]: a private PostgreSQL cluster on a free port, for tests.
//!
//! `initdb` makes a fresh cluster in a temporary directory and `postgres` serves it on
//! 127.0.0.1 only (trust authentication, user and database `postgres`). As root, both
//! run as the `postgres` user (`initdb` refuses root). The server is a child of the test:
//! [`PgServer::stop_immediate`] stops it as `pg_ctl stop -m immediate` does (no
//! checkpoint, clients cut off), [`PgServer::start`] brings it back on the same port and
//! data, and dropping the helper kills it and removes the directory.
//!
//! The binaries are looked for in `PG_BIN`, then `/usr/lib/postgresql/<newest>/bin`,
//! then `PATH`; `./scripts/test` installs Debian's `postgresql` package when none is
//! there.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// See the [module docs](self).
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PgServer {
    /// Makes a cluster and starts it.
    ///
    /// # Panics
    ///
    /// If the binaries are missing or the server does not come up within 30 s.
    pub fn start_new() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("sc-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temporary directory: {e}"));
        let owner = if is_root() {
            Some(postgres_ids())
        } else {
            None
        };
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
        if let Some((uid, gid)) = owner {
            use std::os::unix::fs::PermissionsExt;
            // The postgres user goes through the directory to its data.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.path().display()));
            std::os::unix::fs::chown(&data, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", data.display()));
        }
        let mut server = Self {
            port: crate::free_port(),
            bin,
            dir,
            owner,
            child: None,
        };
        let out = server
            .command("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.start();
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again) on its port and data; returns once it accepts
    /// connections.
    ///
    /// # Panics
    ///
    /// If it does not within 30 s.
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        let data = self.data_dir();
        let log = std::fs::File::create(self.dir.path().join("postgres.log"))
            .unwrap_or_else(|e| panic!("postgres.log: {e}"));
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres did not come up:\n{}", self.log());
    }

    /// `pg_ctl stop -m immediate`: the server quits without a checkpoint, every client
    /// cut off. Returns once it has exited.
    ///
    /// # Panics
    ///
    /// If `pg_ctl` fails.
    pub fn stop_immediate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = child.wait();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// `psql -c <sql>` as `postgres`: its standard output (unaligned, tuples only).
    ///
    /// # Panics
    ///
    /// If psql fails.
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-X", "-A", "-t", "-v"])
            .arg("ON_ERROR_STOP=1")
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql -c {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A PostgreSQL binary, as the `postgres` user when the test runs as root.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid).current_dir(self.dir.path());
        }
        cmd.env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        cmd
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: the immediate shutdown, which also ends the server's children.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether PostgreSQL's server binaries can be found.
pub fn available() -> bool {
    find_bin_dir().is_some()
}

fn bin_dir() -> PathBuf {
    find_bin_dir().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is missing (no initdb in PG_BIN, /usr/lib/postgresql/*/bin or PATH): \
             run ./scripts/test, or apt-get install postgresql"
        )
    })
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .unwrap_or_else(|| {
            panic!("running as root, and there is no postgres user to run initdb as (apt-get install postgresql makes one)")
        })
}
