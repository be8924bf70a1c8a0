//! examples/deploy/prometheus.yml and rules/ in Debian's real Prometheus, against the
//! running reference services and a real redis-server that is killed and restarted; and
//! every query of the Grafana dashboards (examples/deploy/grafana) evaluated by it.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dashboards, free_port, register_and_login, traffic, System};
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_testkit::grafana::{Checker, PanelQuery};
use secureconnect_testkit::postgres::PgServer;
use secureconnect_testkit::process::ChildProcess;

struct Prometheus {
    /// Killed on drop, before its data directory goes.
    _child: ChildProcess,
    url: String,
    _dir: tempfile::TempDir,
}

/// The token the services ask for in this test.
const METRICS_TOKEN: &str = "prometheus-scrapes-with-this";

/// The shipped config with the test's ports, 1 s intervals, absolute rule paths, and
/// its `authorization` lines uncommented to read the token from `token_file`.
fn config_for(system: &System, token_file: &std::path::Path) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let shipped =
        std::fs::read_to_string(format!("{root}/examples/deploy/prometheus.yml")).unwrap();
    let mut config = shipped
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("scrape_timeout: 5s", "scrape_timeout: 900ms")
        .replace("../../rules/", &format!("{root}/rules/"));
    for (name, default) in [
        ("gateway", 8080),
        ("auth", 8081),
        ("video", 8083),
        ("storage", 8084),
    ] {
        config = config.replace(
            &format!("127.0.0.1:{default}"),
            &format!("127.0.0.1:{}", system.port(name)),
        );
    }
    assert!(!config.contains(":8080\""), "every port was replaced");
    let commented = "    # authorization:\n    #   credentials_file: /etc/prometheus/secureconnect-metrics-token\n";
    assert_eq!(
        config.matches(commented).count(),
        4,
        "each job shows the authorization setting"
    );
    config.replace(
        commented,
        &format!(
            "    authorization:\n      credentials_file: {}\n",
            token_file.display()
        ),
    )
}

/// Starts Prometheus with the config `config_for` gives (after `promtool check config`
/// accepted it).
fn start(system: &System) -> Prometheus {
    start_with_alerts(system, |rules| rules)
}

/// [`start`], with the shipped alert rules passed through `patch` first (to shorten a
/// `for:` the test cannot wait out).
fn start_with_alerts(system: &System, patch: impl Fn(String) -> String) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, format!("{METRICS_TOKEN}\n")).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let shipped = format!("{root}/rules/secureconnect-alerts.yml");
    let alerts = dir.path().join("secureconnect-alerts.yml");
    std::fs::write(&alerts, patch(std::fs::read_to_string(&shipped).unwrap())).unwrap();
    let config = config_for(system, &token_file);
    assert!(config.contains(&shipped));
    let config = config.replace(&shipped, &alerts.display().to_string());
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&path)
        .output()
        .expect("Debian's promtool (scripts/test installs it)");
    assert!(
        check.status.success(),
        "the config with its authorization lines in use is valid: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // Stores the exemplars of the OpenMetrics scrapes (trace ids on the buckets).
        .arg("--enable-feature=exemplar-storage")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's prometheus (scripts/test installs it)");
    Prometheus {
        _child: child.into(),
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// The overview's RED panels: each must show every service.
const RED_PANELS: [&str; 4] = [
    "Requests per second",
    "5xx ratio",
    "Latency p50 and p99",
    "Active requests",
];
const JOBS: [&str; 4] = ["auth", "gateway", "storage", "video"];

/// `query` evaluated now: its series as (job, value), or Prometheus's error.
async fn evaluate(prometheus: &Prometheus, query: &str) -> Result<Vec<(String, f64)>, String> {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prometheus.url))
        .query(&[("query", query)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| {
            let job = series["metric"]["job"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (job, value)
        })
        .collect())
}

/// Whether a RED panel's answer has a finite value for every service.
fn shows_every_service(series: &[(String, f64)]) -> bool {
    JOBS.iter()
        .all(|job| series.iter().any(|(j, v)| j == job && v.is_finite()))
}

async fn api(prometheus: &Prometheus, path: &str) -> Option<serde_json::Value> {
    let r = reqwest::get(format!("{}{path}", prometheus.url))
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    (v["status"] == "success").then(|| v["data"].clone())
}

/// Polls `check` every 250 ms for up to `within`.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn redis_down_alerts(alerts: &serde_json::Value) -> Vec<String> {
    alerts["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["labels"]["alertname"] == "RedisDown")
                .map(|x| format!("{}:{}", x["labels"]["job"], x["state"]))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_shipped_prometheus_config_scrapes_evaluates_and_alerts() {
    let mut redis = RedisServer::start().unwrap();
    let system = System::start(&redis.url(), &[("METRICS_TOKEN", METRICS_TOKEN)]).await;
    let prometheus = start(&system);
    let c = reqwest::Client::new();
    for name in ["gateway", "auth", "video", "storage"] {
        c.get(format!("http://127.0.0.1:{}/health", system.port(name)))
            .send()
            .await
            .unwrap();
        let bare = c
            .get(format!("http://127.0.0.1:{}/metrics", system.port(name)))
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status(), 401, "{name} wants the token");
    }

    let all_up = eventually(Duration::from_secs(30), || async {
        api(&prometheus, "/api/v1/targets").await.is_some_and(|t| {
            let active = t["activeTargets"].as_array().cloned().unwrap_or_default();
            active.len() == 4 && active.iter().all(|t| t["health"] == "up")
        })
    })
    .await;
    assert!(
        all_up,
        "every target is up: {:?}",
        api(&prometheus, "/api/v1/targets").await
    );

    let rules = api(&prometheus, "/api/v1/rules").await.unwrap();
    let groups = rules["groups"].as_array().unwrap();
    let shipped: usize = ["secureconnect-alerts.yml", "secureconnect-recording.yml"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(format!("{}/../rules/{f}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .lines()
                .filter(|l| l.trim_start().starts_with("- name:"))
                .count()
        })
        .sum();
    assert_eq!(groups.len(), shipped, "every rule group is loaded");
    let evaluated = eventually(Duration::from_secs(10), || async {
        let rules = api(&prometheus, "/api/v1/rules").await.unwrap();
        rules["groups"].as_array().unwrap().iter().all(|g| {
            g["rules"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["health"] == "ok")
        })
    })
    .await;
    assert!(evaluated, "no rule has an evaluation error: {rules}");

    let red = eventually(Duration::from_secs(15), || async {
        api(
            &prometheus,
            "/api/v1/query?query=sum%20by%20(job)%20(http_server_request_duration_seconds_count)",
        )
        .await
        .is_some_and(|d| d["result"].as_array().is_some_and(|r| r.len() == 4))
    })
    .await;
    assert!(red, "a RED query returns data for each service");

    every_dashboard_query_evaluates(&prometheus, &system).await;
    // A request with a known trace id: its exemplar on the gateway's duration buckets
    // reaches Prometheus's exemplar storage.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = c
        .post(format!("{}/v1/auth/login", system.gateway()))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"email": "nobody@example.org", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let query = format!(
        "/api/v1/query_exemplars?query=http_server_request_duration_seconds_bucket%7Bjob%3D%22gateway%22%7D&start={}&end={}",
        now - 600,
        now + 600
    );
    let stored = eventually(Duration::from_secs(20), || async {
        api(&prometheus, &query).await.is_some_and(|d| {
            d.as_array().into_iter().flatten().any(|series| {
                series["seriesLabels"]["http_route"] == "/v1/auth/{*rest}"
                    && series["exemplars"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| e["labels"]["trace_id"] == trace_id)
            })
        })
    })
    .await;
    assert!(
        stored,
        "Prometheus stores the gateway's exemplar with the trace id sent: {:?}",
        api(&prometheus, &query).await
    );

    redis.kill().unwrap();
    let alerting = eventually(Duration::from_secs(30), || async {
        api(&prometheus, "/api/v1/alerts")
            .await
            .is_some_and(|a| !redis_down_alerts(&a).is_empty())
    })
    .await;
    assert!(alerting, "RedisDown became pending or firing");

    redis.restart().unwrap();
    let cleared = eventually(Duration::from_secs(30), || async {
        api(&prometheus, "/api/v1/alerts")
            .await
            .is_some_and(|a| redis_down_alerts(&a).is_empty())
    })
    .await;
    assert!(cleared, "RedisDown cleared once Redis was back");
}

fn alert_states(alerts: &serde_json::Value, name: &str) -> Vec<String> {
    alerts["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["labels"]["alertname"] == name)
                .map(|x| {
                    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                    format!("{}:{}", text(&x["labels"]["job"]), text(&x["state"]))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Auth on PostgreSQL with a pool of 2; a lock held on its users table makes every
/// login a slow query, and logins keep coming: both connections are busy all the time.
/// `/metrics` shows it, and Prometheus fires DBPoolExhaustion (its `for:` shortened from
/// 5m to 5s) for job auth; once the lock goes, the pool drains and the alert clears.
#[tokio::test]
async fn a_saturated_database_pool_fires_db_pool_exhaustion() {
    let redis = RedisServer::start().unwrap();
    let pg = PgServer::start_new();
    let url = pg.url();
    let system = System::start_only(
        &["auth"],
        &redis.url(),
        &[
            ("METRICS_TOKEN", METRICS_TOKEN),
            ("DATABASE_URL", &url),
            ("DATABASE_MAX_CONNECTIONS", "2"),
            ("DATABASE_TIMEOUT_MS", "3000"),
        ],
    )
    .await;
    let prometheus = start_with_alerts(&system, |rules| {
        let (head, tail) = rules.split_once("- alert: DBPoolExhaustion").unwrap();
        format!(
            "{head}- alert: DBPoolExhaustion{}",
            tail.replacen("for: 5m", "for: 5s", 1)
        )
    });
    let auth = system.url("auth");
    let c = reqwest::Client::new();
    let metric = |text: &str, name: &str| {
        secureconnect_testkit::exposition::sample(text, name, &[("pool", "auth")])
    };
    let scrape = || async {
        c.get(format!("{auth}/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let quiet = scrape().await;
    assert_eq!(metric(&quiet, "db_connections_max"), Some(2.0), "{quiet}");
    assert_eq!(metric(&quiet, "db_connections_active"), Some(0.0));

    // The slow queries: a transaction holding the users table for 40 s.
    let holder = std::thread::spawn(move || {
        pg.psql(
            "BEGIN; LOCK TABLE auth_users IN ACCESS EXCLUSIVE MODE; \
             SELECT pg_sleep(40); COMMIT;",
        );
        pg
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, auth) = (Arc::clone(&stop), auth.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let body = serde_json::json!({ "email": "a@example.org", "password": "whatever1" });
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = c
                        .post(format!("{auth}/v1/auth/login"))
                        .json(&body)
                        .send()
                        .await
                    {
                        statuses.push(r.status().as_u16());
                    }
                }
                statuses
            })
        })
        .collect();

    let saturated = eventually(Duration::from_secs(10), || async {
        let text = scrape().await;
        metric(&text, "db_connections_active") == Some(2.0)
            && metric(&text, "db_connections_idle") == Some(0.0)
    })
    .await;
    assert!(saturated, "both connections busy: {}", scrape().await);
    let firing = eventually(Duration::from_secs(30), || async {
        api(&prometheus, "/api/v1/alerts")
            .await
            .is_some_and(|a| alert_states(&a, "DBPoolExhaustion") == ["auth:firing"])
    })
    .await;
    assert!(
        firing,
        "DBPoolExhaustion fires for auth: {:?}",
        api(&prometheus, "/api/v1/alerts").await
    );
    let waited = scrape().await;
    let waits = metric(&waited, "db_connection_acquire_seconds_count").unwrap();
    let quick = secureconnect_testkit::exposition::sample(
        &waited,
        "db_connection_acquire_seconds_bucket",
        &[("pool", "auth"), ("le", "0.1")],
    )
    .unwrap();
    assert!(waits > quick, "some waited more than 100 ms: {waited}");

    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for task in load {
        statuses.extend(task.await.unwrap());
    }
    assert!(
        statuses.contains(&503),
        "the slow queries ran out their deadline"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 503)),
        "a login of an unknown user is 401, or 503 while the pool is saturated: {statuses:?}"
    );
    let pg = holder.join().unwrap();
    let cleared = eventually(Duration::from_secs(30), || async {
        api(&prometheus, "/api/v1/alerts")
            .await
            .is_some_and(|a| alert_states(&a, "DBPoolExhaustion").is_empty())
    })
    .await;
    assert!(cleared, "DBPoolExhaustion cleared once the lock was gone");
    drop(pg);
}

/// Every panel query of the shipped dashboards, as Grafana would send it with all
/// services selected, evaluates without an error; the RED panels show every service;
/// and, with traffic flowing, every other panel has data too.
async fn every_dashboard_query_evaluates(prometheus: &Prometheus, system: &System) {
    // Light traffic to every service, so that rates over the last seconds are not 0/0:
    // a failed login (auth), an unknown file (storage), an unknown call (video).
    let c = reqwest::Client::new();
    let user = register_and_login(&c, &system.gateway(), "load@example.org").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, gateway) = (stop.clone(), system.gateway());
        tokio::spawn(async move {
            let body = serde_json::json!({ "email": "load@example.org", "password": "wrong" });
            for _ in 0..600 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let token = user.token.as_str();
                let _ = c
                    .post(format!("{gateway}/v1/auth/login"))
                    .json(&body)
                    .send()
                    .await;
                let _ = c
                    .get(format!("{gateway}/v1/storage/download-url/f-none"))
                    .bearer_auth(token)
                    .send()
                    .await;
                let _ = c
                    .get(format!("{gateway}/v1/calls/c-none"))
                    .bearer_auth(token)
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    traffic(system).await;

    // Grafana's values with every service selected and a 1 s scrape interval.
    let checker = Checker::new(Vec::<String>::new())
        .value("job", "auth|gateway|storage|video")
        .value("__rate_interval", "10s")
        .value("__range", "5m");
    let queries: Vec<(PanelQuery, String)> = dashboards()
        .iter()
        .flat_map(|d| d.queries())
        .map(|q| {
            let expr = checker.substitute(&q.expr).unwrap();
            (q, expr)
        })
        .collect();
    assert!(queries.len() >= 40);

    let red: Vec<&(PanelQuery, String)> = queries
        .iter()
        .filter(|(q, _)| {
            q.dashboard == "secureconnect-overview.json" && RED_PANELS.contains(&q.panel.as_str())
        })
        .collect();
    assert_eq!(red.len(), 5, "four RED panels, two queries for the latency");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut missing = Vec::new();
    loop {
        missing.clear();
        for (q, expr) in &red {
            let series = match evaluate(prometheus, expr).await {
                Ok(series) => series,
                Err(e) => {
                    missing.push(format!("{} ({}): {e}", q.panel, q.ref_id));
                    continue;
                }
            };
            if !shows_every_service(&series) {
                missing.push(format!("{} ({}): {series:?}", q.panel, q.ref_id));
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        missing.is_empty(),
        "RED panels without data for every service: {missing:#?}"
    );

    let mut failed = Vec::new();
    let mut empty = Vec::new();
    for (q, expr) in &queries {
        match evaluate(prometheus, expr).await {
            Err(e) => failed.push(format!("{}: {} ({}): {e}", q.dashboard, q.panel, q.ref_id)),
            Ok(series) if series.is_empty() => {
                empty.push(format!("{}: {} ({})", q.dashboard, q.panel, q.ref_id));
            }
            Ok(_) => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(failed.is_empty(), "Prometheus refused: {failed:#?}");
    assert!(empty.is_empty(), "panels without data: {empty:#?}");
}
