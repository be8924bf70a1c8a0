//! Metrics of a [`sqlx`] connection pool (feature `sqlx`): how many connections are busy,
//! idle and allowed, read from the pool when `/metrics` is scraped, and how long callers
//! wait for a connection.
//!
//! | metric | type | |
//! |---|---|---|
//! | `db_connections_active` | gauge | connections lent out (open minus idle) |
//! | `db_connections_idle` | gauge | open connections waiting in the pool |
//! | `db_connections_max` | gauge | the pool's `max_connections` |
//! | `db_connection_acquire_seconds` | histogram | the wait for a connection, successful or not |
//!
//! Every series carries `pool="<name>"` ([`DbPoolMetricsConfig::pool_name`], `main` by
//! default). The gauges cost the query path nothing: a collector asks the pool when the
//! registry is encoded. The wait is recorded where the connection is acquired, so
//! acquire through [`DbPoolMetrics::acquire`] (a plain `pool.acquire()`, or a query on
//! `&pool`, still works, it is only not timed).
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use secureconnect_obs::db_pool::{DbPoolMetrics, DbPoolMetricsConfig};
//!
//! # async fn example<DB: sqlx::Database>(pool: sqlx::Pool<DB>) -> Result<(), sqlx::Error> {
//! let mut registry = Registry::default();
//! let config = DbPoolMetricsConfig::default().pool_name("users");
//! let db = DbPoolMetrics::new(pool, config, &mut registry);
//! let conn = db.acquire().await?; // the wait lands in db_connection_acquire_seconds
//! // … queries on `&mut *conn` …
//! # drop(conn);
//! # Ok(()) }
//! ```
//!
//! The shipped alert rule `DBPoolExhaustion` fires when more than 80 % of a job's
//! `db_connections_max` have been active for five minutes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// The default buckets of the acquire wait, in seconds: 100 µs to 10 s.
const DEFAULT_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Settings of [`DbPoolMetrics`].
#[derive(Clone, Debug)]
pub struct DbPoolMetricsConfig {
    pool_name: String,
    buckets: Vec<f64>,
}

impl Default for DbPoolMetricsConfig {
    fn default() -> Self {
        Self {
            pool_name: "main".into(),
            buckets: DEFAULT_BUCKETS.to_vec(),
        }
    }
}

impl DbPoolMetricsConfig {
    /// The `pool` label of every series (default `main`): tells two pools of one
    /// registry apart.
    #[must_use]
    pub fn pool_name(mut self, name: impl Into<String>) -> Self {
        self.pool_name = name.into();
        self
    }

    /// The buckets of `db_connection_acquire_seconds` (default 100 µs to 10 s).
    #[must_use]
    pub fn buckets(mut self, buckets: impl IntoIterator<Item = f64>) -> Self {
        self.buckets = buckets.into_iter().collect();
        self
    }
}

/// A pool with its metrics registered; see the [module docs](self). Cloning is cheap and
/// shares the pool and the histogram.
#[derive(Debug)]
pub struct DbPoolMetrics<DB: Database> {
    pool: Pool<DB>,
    wait: Histogram,
}

impl<DB: Database> Clone for DbPoolMetrics<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            wait: self.wait.clone(),
        }
    }
}

impl<DB: Database> DbPoolMetrics<DB> {
    /// Registers the metrics of `pool` in `registry`.
    pub fn new(pool: Pool<DB>, config: DbPoolMetricsConfig, registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_label(("pool".into(), config.pool_name.into()));
        let wait = Histogram::new(config.buckets);
        registry.register_with_unit(
            "db_connection_acquire",
            "Time waited for a database connection from the pool (also when none came)",
            Unit::Seconds,
            wait.clone(),
        );
        registry.register_collector(Box::new(PoolCollector { pool: pool.clone() }));
        Self { pool, wait }
    }

    /// A connection from the pool, the wait recorded.
    ///
    /// # Errors
    ///
    /// The pool's: [`sqlx::Error::PoolTimedOut`] when none came within its
    /// `acquire_timeout`, [`sqlx::Error::PoolClosed`], or the error of a connection
    /// attempt.
    pub async fn acquire(&self) -> Result<PoolConnection<DB>, sqlx::Error> {
        let start = std::time::Instant::now();
        let conn = self.pool.acquire().await;
        self.wait.observe(start.elapsed().as_secs_f64());
        conn
    }

    /// The pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

/// Reads the pool's gauges at scrape time.
#[derive(Debug)]
struct PoolCollector<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Database> Collector for PoolCollector<DB> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let open = self.pool.size();
        // Read after the size: a connection opened in between is not counted idle
        // without being counted open.
        let idle = u32::try_from(self.pool.num_idle())
            .unwrap_or(u32::MAX)
            .min(open);
        let max = self.pool.options().get_max_connections();
        for (name, help, value) in [
            (
                "db_connections_active",
                "Database connections lent out by the pool",
                open - idle,
            ),
            (
                "db_connections_idle",
                "Open database connections idle in the pool",
                idle,
            ),
            (
                "db_connections_max",
                "The most connections the pool opens",
                max,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::from(value)).encode(metric)?;
        }
        Ok(())
    }
}
