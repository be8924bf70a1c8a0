//! The Grafana dashboards of examples/deploy/grafana, proven against the running
//! services: every panel query parses with the real PromQL parser (promtool) and names
//! only metrics that the four services export after traffic or that the recording
//! rules record; a dashboard naming a metric nobody exports fails, and says which
//! metric on which panel.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use common::{dashboards, recorded_metrics, traffic, System};
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_testkit::exposition::parse;
use secureconnect_testkit::grafana::{Checker, Dashboard};

/// Series Prometheus itself adds to every scrape of every target.
const PER_TARGET: &[&str] = &["up"];

/// What a dashboard may name: every sample name the four services export once they
/// have served a day's traffic, the recording rules' names, and [`PER_TARGET`]. Taken
/// once per test binary from real processes.
fn known() -> &'static BTreeSet<String> {
    static KNOWN: OnceLock<BTreeSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let redis = RedisServer::start().unwrap();
            let system = System::start(&redis.url(), &[]).await;
            traffic(&system).await;
            let mut known: BTreeSet<String> = PER_TARGET.iter().map(|s| (*s).to_owned()).collect();
            for (name, port) in system.ports {
                let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let samples = parse(&text);
                assert!(!samples.is_empty(), "{name} exports nothing");
                known.extend(samples.into_iter().map(|s| s.name));
            }
            known.extend(recorded_metrics());
            known
        })
    })
}

fn checker() -> Checker {
    Checker::new(known()).value("job", "gateway")
}

#[test]
fn every_panel_query_parses_and_names_only_exported_or_recorded_metrics() {
    let dashboards = dashboards();
    let names: Vec<&str> = dashboards.iter().map(Dashboard::name).collect();
    assert_eq!(
        names,
        [
            "secureconnect-audit.json",
            "secureconnect-calls.json",
            "secureconnect-overview.json",
            "secureconnect-redis.json",
            "secureconnect-slo.json"
        ]
    );
    let checked = checker()
        .check(&dashboards)
        .unwrap_or_else(|problems| panic!("the dashboards do not match the services:\n{problems}"));
    let queries: usize = dashboards.iter().map(|d| d.queries().len()).sum();
    assert_eq!(checked, queries);
    assert!(checked >= 40, "{checked} queries");

    for d in &dashboards {
        assert_eq!(d.json()["schemaVersion"], 41, "{}", d.name());
        assert!(
            d.variables()
                .contains(&("job".to_owned(), "query".to_owned())),
            "{}: a job variable",
            d.name()
        );
    }
    // The SLO dashboard shows every burn rate the rules record.
    let slo = dashboards.iter().find(|d| d.uid() == "sc-slo").unwrap();
    let shown: String = slo.queries().into_iter().map(|q| q.expr).collect();
    for recorded in recorded_metrics() {
        assert!(
            shown.contains(&format!("{recorded}{{")),
            "{recorded} has no panel"
        );
    }
}

#[test]
fn a_dashboard_naming_a_metric_nobody_exports_fails_the_check() {
    // The classic way a dashboard rots: the metric is renamed, the panel stays.
    let overview = dashboards()
        .into_iter()
        .find(|d| d.uid() == "sc-overview")
        .unwrap();
    let mut json = overview.json().clone();
    let panel = json["panels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["title"] == "Requests per second")
        .unwrap();
    let expr = panel["targets"][0]["expr"].as_str().unwrap().to_owned();
    panel["targets"][0]["expr"] = expr
        .replace(
            "http_server_request_duration_seconds_count",
            "http_requests_total",
        )
        .into();
    let broken = Dashboard::parse("broken-overview.json", &json.to_string()).unwrap();

    let problems = checker().check(&[broken]).unwrap_err();
    assert_eq!(
        problems,
        "broken-overview.json: panel \"Requests per second\" (A): metric `http_requests_total` \
         is exported by no service and recorded by no rule"
    );
    // The shipped one passes with the same checker.
    assert!(checker().check(&[overview]).is_ok());
}
