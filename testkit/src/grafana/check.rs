//! [`Checker`]: dashboards proven against what is really exported, so that a renamed
//! metric fails a test instead of leaving an empty panel.

use std::collections::{BTreeMap, BTreeSet};

use super::{panel_title, substitute, Dashboard};
use crate::promql::metric_names;
use crate::promtool_parse;

/// Checks dashboards: each has a unique `uid`, a `schemaVersion` and a `datasource`
/// variable (type `datasource`, Prometheus) that every panel and query uses; every
/// query uses only variables it has a test value for, parses with the real PromQL
/// parser once they are substituted (`promtool`), and names only metrics in the known
/// set (what the services export after traffic, what the recording rules record, and
/// whatever else the caller adds); so does every query variable's `label_values(…)` or
/// `query_result(…)`.
///
/// ```no_run
/// use secureconnect_testkit::grafana::{load_dir, Checker};
///
/// let known = ["http_requests_total", "job:errors:ratio_rate5m"];
/// let checked = Checker::new(known)
///     .value("job", "gateway")
///     .check(&load_dir("deploy/grafana/dashboards".as_ref()))
///     .unwrap_or_else(|problems| panic!("{problems}"));
/// assert!(checked > 0);
/// ```
#[derive(Clone, Debug)]
pub struct Checker {
    known: BTreeSet<String>,
    values: BTreeMap<String, String>,
}

/// Test values of Grafana's built-in variables (a 15 s scrape interval).
const BUILT_INS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "3600s"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
];

impl Checker {
    /// A checker that accepts the metric names in `known`, with test values for
    /// Grafana's built-in variables (`$__rate_interval`: `1m`, `$__interval`: `15s`,
    /// `$__range`: `3600s`, …).
    pub fn new<S: Into<String>>(known: impl IntoIterator<Item = S>) -> Self {
        Self {
            known: known.into_iter().map(Into::into).collect(),
            values: BUILT_INS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Substitutes `value` for the variable `name` (without `$`).
    pub fn value(mut self, name: &str, value: &str) -> Self {
        self.values.insert(name.to_owned(), value.to_owned());
        self
    }

    /// `expr` with the test values substituted.
    ///
    /// # Errors
    ///
    /// Names the variables without a test value.
    pub fn substitute(&self, expr: &str) -> Result<String, String> {
        let values = self
            .values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        substitute(expr, &values)
    }

    /// Checks `dashboards`; returns how many queries were checked.
    ///
    /// # Errors
    ///
    /// Every problem found, one a line, each naming the dashboard, the panel and (for a
    /// query) its `refId`: a missing or duplicate `uid`, no `schemaVersion`, no
    /// `datasource` variable, a panel or query on another data source, a variable
    /// without a test value, a query promtool cannot parse, a metric nobody exports or
    /// records (in a query or a variable's query), a dashboard without queries.
    ///
    /// # Panics
    ///
    /// If promtool cannot be run.
    pub fn check(&self, dashboards: &[Dashboard]) -> Result<usize, String> {
        let mut problems = Vec::new();
        let mut uids = BTreeSet::new();
        let mut parsed: Vec<(String, String)> = Vec::new();
        for dashboard in dashboards {
            let name = dashboard.name();
            if dashboard.uid().is_empty() || !uids.insert(dashboard.uid().to_owned()) {
                problems.push(format!(
                    "{name}: uid {:?} is missing or not unique",
                    dashboard.uid()
                ));
            }
            if !dashboard.json()["schemaVersion"].is_u64() {
                problems.push(format!("{name}: no schemaVersion"));
            }
            let datasource = dashboard.json()["templating"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| {
                    v["name"] == "datasource"
                        && v["type"] == "datasource"
                        && v["query"] == "prometheus"
                });
            if !datasource {
                problems.push(format!(
                    "{name}: no `datasource` variable of type datasource for Prometheus"
                ));
            }
            for (variable, query) in variable_queries(dashboard) {
                let at = format!("{name}: variable ${variable}");
                match self.substitute(&query).and_then(|q| metric_names(&q)) {
                    Ok(names) => {
                        for metric in names.iter().filter(|m| !self.known.contains(*m)) {
                            problems.push(format!(
                                "{at}: metric `{metric}` is exported by no service and recorded by no rule"
                            ));
                        }
                    }
                    Err(e) => problems.push(format!("{at}: {e}")),
                }
            }
            for panel in dashboard.panels() {
                let uses_variable = |v: &serde_json::Value| {
                    v["datasource"]["uid"] == "${datasource}"
                        && v["datasource"]["type"] == "prometheus"
                };
                let targets = panel["targets"].as_array().cloned().unwrap_or_default();
                if !targets.is_empty()
                    && (!uses_variable(panel)
                        || targets
                            .iter()
                            .any(|t| !t["datasource"].is_null() && !uses_variable(t)))
                {
                    problems.push(format!(
                        "{name}: panel {:?}: its data source is not ${{datasource}}",
                        panel_title(panel)
                    ));
                }
            }
            let queries = dashboard.queries();
            if queries.is_empty() {
                problems.push(format!("{name}: no query at all"));
            }
            for query in queries {
                let at = format!("{name}: panel {:?} ({})", query.panel, query.ref_id);
                let expr = match self.substitute(&query.expr) {
                    Ok(expr) => expr,
                    Err(e) => {
                        problems.push(format!("{at}: {e}"));
                        continue;
                    }
                };
                match metric_names(&expr) {
                    Ok(names) => {
                        for metric in names.iter().filter(|m| !self.known.contains(*m)) {
                            problems.push(format!(
                                "{at}: metric `{metric}` is exported by no service and recorded by no rule"
                            ));
                        }
                    }
                    Err(e) => problems.push(format!("{at}: {e}")),
                }
                parsed.push((at, expr));
            }
        }
        let exprs: Vec<&str> = parsed.iter().map(|(_, e)| e.as_str()).collect();
        if let Err(refused) = promtool_parse(&exprs) {
            for (i, said) in refused {
                let (at, expr) = &parsed[i];
                problems.push(format!("{at}: promtool cannot parse `{expr}`: {said}"));
            }
        }
        if problems.is_empty() {
            Ok(parsed.len())
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// The PromQL inside each query variable's `label_values(<selector>, <label>)` or
/// `query_result(<expr>)` (variables with other queries have none).
fn variable_queries(dashboard: &Dashboard) -> Vec<(String, String)> {
    dashboard.json()["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .filter_map(|v| {
            let query = v["definition"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .or_else(|| v["query"].as_str())?
                .trim();
            let inner = |prefix: &str| {
                query
                    .strip_prefix(prefix)
                    .and_then(|q| q.trim_start().strip_prefix('('))
                    .and_then(|q| q.strip_suffix(')'))
            };
            let promql = if let Some(args) = inner("label_values") {
                // The selector is all but the last argument; `label_values(job)` has none.
                args.rsplit_once(',')?.0.trim().to_owned()
            } else {
                inner("query_result")?.trim().to_owned()
            };
            Some((v["name"].as_str().unwrap_or_default().to_owned(), promql))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const DS: &str = r#"{"type": "prometheus", "uid": "${datasource}"}"#;

    fn dashboard(uid: &str, panels: &[(&str, &str)]) -> Dashboard {
        let panels: Vec<String> = panels
            .iter()
            .enumerate()
            .map(|(i, (title, expr))| {
                format!(
                    r#"{{"id": {i}, "type": "timeseries", "title": "{title}", "datasource": {DS},
                        "targets": [{{"refId": "A", "datasource": {DS}, "expr": {}}}]}}"#,
                    serde_json::to_string(expr).unwrap()
                )
            })
            .collect();
        let text = format!(
            r#"{{"uid": "{uid}", "title": "{uid}", "schemaVersion": 41,
                "templating": {{"list": [
                  {{"name": "datasource", "type": "datasource", "query": "prometheus"}},
                  {{"name": "job", "type": "query", "datasource": {DS}}}]}},
                "panels": [{}]}}"#,
            panels.join(",")
        );
        Dashboard::parse(&format!("{uid}.json"), &text).unwrap()
    }

    fn checker() -> Checker {
        Checker::new(["requests_total", "job:errors:ratio_rate5m"]).value("job", "a")
    }

    #[test]
    fn a_dashboard_of_known_metrics_passes() {
        let d = dashboard(
            "good",
            &[
                (
                    "Rate",
                    r#"sum by (job) (rate(requests_total{job=~"$job"}[$__rate_interval]))"#,
                ),
                (
                    "Burn",
                    r#"job:errors:ratio_rate5m{job=~"${job:regex}"} / 0.001"#,
                ),
            ],
        );
        assert_eq!(checker().check(&[d]), Ok(2));
    }

    #[test]
    fn an_unknown_metric_is_named_with_its_panel() {
        let d = dashboard(
            "renamed",
            &[
                ("Fine", "sum(rate(requests_total[5m]))"),
                (
                    "Errors",
                    r#"sum(rate(http_requests_total{code=~"5.."}[$__rate_interval]))"#,
                ),
            ],
        );
        let e = checker().check(&[d]).unwrap_err();
        assert_eq!(
            e,
            "renamed.json: panel \"Errors\" (A): metric `http_requests_total` is exported by no service and recorded by no rule"
        );
    }

    #[test]
    fn a_query_promtool_refuses_is_named_with_promtools_words() {
        let d = dashboard(
            "broken",
            &[("Fine", "requests_total"), ("Bad", "rate(requests_total)")],
        );
        let e = checker().check(&[d]).unwrap_err();
        assert!(
            e.starts_with(
                "broken.json: panel \"Bad\" (A): promtool cannot parse `rate(requests_total)`"
            ),
            "{e}"
        );
        assert!(e.contains("range vector"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn a_variable_without_a_value_and_a_foreign_data_source_are_problems() {
        let mut d = dashboard("vars", &[("Typo", r#"requests_total{job=~"$jbo"}"#)]);
        let text = d
            .json()
            .to_string()
            .replacen("${datasource}", "P1809F7CD0C75ACF3", 1);
        d = Dashboard::parse("vars.json", &text).unwrap();
        let e = checker().check(&[d.clone(), d]).unwrap_err();
        for says in [
            "vars.json: uid \"vars\" is missing or not unique",
            "vars.json: panel \"Typo\" (A): no value for $jbo",
            "vars.json: panel \"Typo\": its data source is not ${datasource}",
        ] {
            assert!(e.contains(says), "{says}:\n{e}");
        }
    }

    #[test]
    fn a_variable_listing_jobs_of_an_unknown_metric_fails() {
        let d = dashboard("var", &[("Rate", "requests_total")]);
        let text = d.json().to_string().replacen(
            r#""name":"job","#,
            r#""name":"job","definition":"label_values(http_requests_total{code=\"200\"}, job)","#,
            1,
        );
        let d = Dashboard::parse("var.json", &text).unwrap();
        assert_eq!(
            checker().check(&[d]).unwrap_err(),
            "var.json: variable $job: metric `http_requests_total` is exported by no service and recorded by no rule"
        );
        let fine = text.replace("http_requests_total{code=\\\"200\\\"}", "requests_total");
        assert_eq!(
            checker().check(&[Dashboard::parse("var.json", &fine).unwrap()]),
            Ok(1)
        );
    }

    #[test]
    fn a_dashboard_without_its_datasource_variable_or_queries_fails() {
        let d = Dashboard::parse(
            "bare.json",
            r#"{"uid": "bare", "schemaVersion": 41, "panels": []}"#,
        )
        .unwrap();
        let e = checker().check(&[d]).unwrap_err();
        assert!(e.contains("bare.json: no `datasource` variable"), "{e}");
        assert!(e.contains("bare.json: no query at all"), "{e}");
    }
}
