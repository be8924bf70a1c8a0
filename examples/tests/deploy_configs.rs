//! The log shippers' configs read where the services write, and lift only static,
//! low-cardinality labels.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::System;
use secureconnect_redis_fallback::testing::RedisServer;

const GLOB: &str = "/var/log/secureconnect/*.log";

fn deploy(file: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn both_shippers_read_the_log_dir_and_label_only_service_and_level() {
    let alloy = deploy("config.alloy");
    let promtail = deploy("promtail.yml");
    assert!(
        alloy.contains(&format!("\"__path__\" = \"{GLOB}\"")),
        "{alloy}"
    );
    assert!(
        promtail.contains(&format!("__path__: {GLOB}")),
        "{promtail}"
    );
    assert!(alloy.contains("values = { service = \"\", level = \"\" }"));
    assert!(alloy.contains("stage.label_keep {\n    values = [\"service\", \"level\"]"));
    assert!(promtail.contains("- labels:\n          service:\n          level:\n      - labeldrop"));
    let code = |text: &str, comment: &str| -> String {
        text.lines()
            .filter(|l| !l.trim_start().starts_with(comment))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (alloy_code, promtail_code) = (code(&alloy, "//"), code(&promtail, "#"));
    for id in ["request_id", "user_id", "trace_id", "span_id"] {
        assert!(
            !alloy_code.contains(&format!("{id} =")) && !promtail_code.contains(&format!("{id}:")),
            "{id} must not be a label"
        );
    }
    assert!(
        alloy.contains("com.secureconnect.service")
            && promtail.contains("com.secureconnect.service")
    );
}

#[test]
fn both_shippers_and_the_rules_readme_show_the_query_by_trace_id() {
    let query = r#"{service=~".+"} |= "<trace_id>" | json | trace_id = "<trace_id>" or audit_event_trace_id = "<trace_id>""#;
    assert!(deploy("config.alloy").contains(&format!("//   {query}")));
    assert!(deploy("promtail.yml").contains(&format!("#   {query}")));
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/README.md"))
            .unwrap();
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert!(
        readme.contains(&format!(
            "{{service=~\".+\"}} |= \"{id}\" | json\n  | trace_id = \"{id}\" or audit_event_trace_id = \"{id}\""
        )),
        "the rules README shows the same query"
    );
}

#[tokio::test]
async fn services_write_json_lines_where_the_shippers_look() {
    let redis = RedisServer::start().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path().join("var/log/secureconnect");
    let dir_text = dir.to_string_lossy().into_owned();
    let system = System::start(&redis.url(), &[("LOG_DIR", dir_text.as_str())]).await;
    reqwest::get(format!("{}/v1/nowhere", system.gateway()))
        .await
        .unwrap();
    drop(system); // stops the services; the non-blocking writers have flushed per line
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    for (name, service) in names.iter().zip(["auth", "gateway", "storage", "video"]) {
        assert!(
            name.starts_with(&format!("{service}.")) && name.ends_with(".log"),
            "{name} matches {GLOB}"
        );
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["service"], service);
        assert!(first["level"].is_string() && first["timestamp"].is_string());
    }
}

#[test]
fn grafana_provisioning_loads_the_dashboards_from_prometheus_yml_s_prometheus() {
    let datasource = deploy("grafana/provisioning/datasources/secureconnect.yml");
    let provider = deploy("grafana/provisioning/dashboards/secureconnect.yml");
    let readme = deploy("README.md");
    // Grafana's $__rate_interval is built on the data source's interval: if it is not
    // the scrape interval, short-range panels go empty or smooth too much.
    let scrape = deploy("prometheus.yml")
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("scrape_interval:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap();
    assert!(
        datasource.contains(&format!("timeInterval: {scrape}")),
        "{datasource}"
    );
    assert!(datasource.contains("type: prometheus"));
    assert!(datasource.contains("url: http://127.0.0.1:9090"));
    // The provider reads the directory the README's command names.
    assert!(
        provider.contains("path: ${SECURECONNECT_DASHBOARDS}"),
        "{provider}"
    );
    for (variable, dir) in [
        ("SECURECONNECT_DASHBOARDS", "grafana/dashboards"),
        ("GF_PATHS_PROVISIONING", "grafana/provisioning"),
    ] {
        assert!(
            readme.contains(&format!("{variable}=$PWD/examples/deploy/{dir} ")),
            "{variable}"
        );
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(dir);
        assert!(path.is_dir(), "{}", path.display());
    }
    assert!(common::dashboards().len() >= 5);
}
