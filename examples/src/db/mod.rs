//! The reference services' database: SQLite embedded by default, PostgreSQL when
//! `DATABASE_URL` names one.
//!
//! - Without `DATABASE_URL`, the database is `DATA_DIR/secureconnect.db` (`DATA_DIR`
//!   defaults to `./secureconnect-data`, created private to the user, the database file
//!   `0600`), in WAL mode with a busy timeout. Nothing needs installing: SQLite is
//!   compiled in.
//! - `DATABASE_URL=postgres://user:password@host/db` uses PostgreSQL. The password never
//!   reaches a log line or an error message ([`DatabaseUrl`]).
//!
//! One code path serves both (sqlx's `any` driver, portable SQL, `$1` placeholders).
//! Each service owns its tables (prefixed with its name) and brings its migrations,
//! embedded in the binary and applied at start-up.
//!
//! # Failures
//!
//! Every database operation of a request has a deadline (`DATABASE_TIMEOUT_MS`, 2 s by
//! default), waiting for a connection included: a database that is down, paused or
//! saturated answers `503 {"error":"database_unavailable"}` in that time, never a hang
//! nor a 500. The pool tests a connection before lending it and opens new ones as
//! needed, so the service heals by itself when the database returns. `/ready` says
//! `"database": "up"` or `"down"`.

mod url;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_obs::db_pool::{DbPoolMetrics, DbPoolMetricsConfig};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Executor};

pub use self::url::DatabaseUrl;
use crate::config::Config;
use crate::error::{chain, ApiError};

/// The embedded database's file name in `DATA_DIR`.
pub const SQLITE_FILE: &str = "secureconnect.db";

/// How long start-up keeps trying to reach the database before it gives up.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Why a database operation failed.
#[derive(Debug)]
pub enum DbError {
    /// The database cannot be reached in time (down, paused, saturated): 503.
    Unavailable(String),
    /// A unique constraint refused the write.
    Duplicate,
    /// Anything else (a bug, a schema out of date): 500, logged.
    Failed(sqlx::Error),
}

impl DbError {
    fn classify(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(error.to_string()),
            sqlx::Error::Database(e) if e.is_unique_violation() => Self::Duplicate,
            sqlx::Error::Database(e) => {
                let code = e.code().unwrap_or_default();
                // PostgreSQL: connection exception (08), insufficient resources (53),
                // operator intervention (57: shutdown, cancelled by a timeout).
                // SQLite: busy (5) and locked (6) past the busy timeout.
                let transient = code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code == "5"
                    || code == "6";
                if transient {
                    Self::Unavailable(error.to_string())
                } else {
                    Self::Failed(error)
                }
            }
            _ => Self::Failed(error),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(reason) => {
                tracing::warn!(reason, "database unavailable");
                ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; try again shortly",
                )
            }
            DbError::Duplicate => ApiError::internal("database write refused"),
            DbError::Failed(e) => {
                tracing::error!(error = %chain(&e), "database operation failed");
                ApiError::internal("database operation failed")
            }
        }
    }
}

/// A service's connection pool, its metrics registered; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: DbPoolMetrics<Any>,
    deadline: Duration,
    postgres: bool,
}

impl Db {
    /// Connects service `service` to the configured database and applies `migrations`;
    /// the pool's metrics go to `registry` with `pool="<service>"`.
    ///
    /// # Errors
    ///
    /// A message naming the database (password hidden) when it cannot be opened within
    /// 10 s or a migration fails.
    pub async fn open(
        service: &'static str,
        config: &Config,
        migrations: Migrator,
        registry: &mut Registry,
    ) -> Result<Self, String> {
        sqlx::any::install_default_drivers();
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => DatabaseUrl::sqlite_file(&prepare_data_dir(&config.data_dir)?),
        };
        let shown = url.redacted();
        let options: AnyConnectOptions = url
            .expose()
            .parse()
            .map_err(|e| format!("DATABASE_URL={shown}: {}", chain(&e)))?;
        let sqlite = url.is_sqlite();
        let busy_ms = config.database_timeout.as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(config.database_max_connections)
            .min_connections(0)
            .acquire_timeout(config.database_timeout)
            .idle_timeout(Duration::from_secs(600))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Readers do not block the writer; a writer waits for another
                        // at most the deadline.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute(&*format!("PRAGMA busy_timeout = {busy_ms}"))
                            .await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        let started = tokio::time::Instant::now();
        let mut migrations = migrations;
        // The services share the migrations table; each knows only its own.
        migrations.set_ignore_missing(true);
        loop {
            match migrations.run(&pool).await {
                Ok(()) => break,
                Err(e) if started.elapsed() < STARTUP_WAIT && is_unreachable(&e) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(format!(
                        "DATABASE_URL={shown}: {service}'s migrations: {}",
                        chain(&e)
                    ))
                }
            }
        }
        tracing::info!(component = service, database = %shown, "database ready");
        let pool = DbPoolMetrics::new(
            pool,
            DbPoolMetricsConfig::default().pool_name(service),
            registry,
        );
        Ok(Self {
            pool,
            deadline: config.database_timeout,
            postgres: url.is_postgres(),
        })
    }

    /// Runs `work` on a connection of the pool within the deadline: waiting for the
    /// connection and the work together.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`] past the deadline or when the database cannot be
    /// reached; otherwise what the work's error is.
    pub async fn run<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        F: FnOnce(PoolConnection<Any>) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let attempt = async {
            let conn = self.pool.acquire().await?;
            work(conn).await
        };
        match tokio::time::timeout(self.deadline, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(DbError::classify(e)),
            Err(_) => Err(DbError::Unavailable(format!(
                "no answer within {} ms",
                self.deadline.as_millis()
            ))),
        }
    }

    /// Whether the database answers `SELECT 1` within the deadline.
    pub async fn is_up(&self) -> bool {
        self.run(|mut conn| async move { conn.execute("SELECT 1").await })
            .await
            .is_ok()
    }

    /// Whether it is PostgreSQL (rather than SQLite).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }
}

/// Whether a migration failed because the database could not be reached (yet).
fn is_unreachable(error: &sqlx::migrate::MigrateError) -> bool {
    matches!(
        error,
        sqlx::migrate::MigrateError::Execute(
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Protocol(_)
        )
    )
}

/// Creates `DATA_DIR` (owner-only) and the database file in it (`0600`); the file's path.
fn prepare_data_dir(dir: &Path) -> Result<std::path::PathBuf, String> {
    let error = |e: std::io::Error| format!("DATA_DIR={}: {e}", dir.display());
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(error)?;
    let file = dir.join(SQLITE_FILE);
    let mut open = std::fs::OpenOptions::new();
    open.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    open.open(&file).map_err(error)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    async fn pragma(db: &Db, name: &'static str) -> String {
        db.run(|mut conn| async move {
            let row = sqlx::query(&format!("PRAGMA {name}"))
                .fetch_one(&mut *conn)
                .await?;
            // journal_mode is text, busy_timeout a number.
            row.try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn the_embedded_database_is_private_in_wal_mode_with_a_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::from_env().unwrap();
        config.database_url = None;
        config.data_dir = dir.path().join("data");
        config.database_timeout = Duration::from_millis(1500);
        let db = Db::open(
            "auth",
            &config,
            crate::auth::migrations(),
            &mut Registry::default(),
        )
        .await
        .unwrap();
        assert!(!db.is_postgres());
        assert_eq!(pragma(&db, "journal_mode").await, "wal");
        assert_eq!(pragma(&db, "busy_timeout").await, "1500");
        assert_eq!(pragma(&db, "foreign_keys").await, "1");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&config.data_dir), 0o700);
            assert_eq!(mode(&config.data_dir.join(SQLITE_FILE)), 0o600);
        }
        // A second service on the same file keeps the first one's migrations.
        let storage = Db::open(
            "storage",
            &config,
            crate::storage::migrations(),
            &mut Registry::default(),
        )
        .await
        .unwrap();
        assert!(storage.is_up().await);
        Db::open(
            "auth",
            &config,
            crate::auth::migrations(),
            &mut Registry::default(),
        )
        .await
        .unwrap();
    }
}
