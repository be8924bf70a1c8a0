//! Grafana dashboards (the classic JSON model) read for tests: every panel's PromQL
//! queries, the dashboard's variables, and Grafana's variable syntax (`$var`,
//! `${var}`, `${var:format}`, `[[var]]`) substituted with test values. [`Checker`]
//! proves a set of dashboards against what is really exported.
//!
//! ```
//! use secureconnect_testkit::grafana::{substitute, Dashboard};
//!
//! let dashboard = Dashboard::parse(
//!     "demo.json",
//!     r#"{"uid": "demo", "title": "Demo", "panels": [{"title": "Requests",
//!         "targets": [{"refId": "A", "expr": "sum(rate(requests_total{job=~\"$job\"}[$__rate_interval]))"}]}]}"#,
//! )
//! .unwrap();
//! let query = &dashboard.queries()[0];
//! assert_eq!(query.panel, "Requests");
//! let values = [("job", "gateway"), ("__rate_interval", "1m")];
//! assert_eq!(
//!     substitute(&query.expr, &values.into_iter().collect()).unwrap(),
//!     r#"sum(rate(requests_total{job=~"gateway"}[1m]))"#
//! );
//! ```

mod check;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

pub use self::check::Checker;

/// A dashboard file, parsed.
#[derive(Clone, Debug)]
pub struct Dashboard {
    name: String,
    json: Value,
}

/// One query of one panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanelQuery {
    /// The dashboard's file name.
    pub dashboard: String,
    /// The panel's title (`#<id>` when it has none).
    pub panel: String,
    /// The query's `refId` (`A`, `B`, …).
    pub ref_id: String,
    /// The PromQL, variables unsubstituted.
    pub expr: String,
}

impl Dashboard {
    /// Reads and parses the dashboard at `path`.
    ///
    /// # Panics
    ///
    /// If the file cannot be read or is not a JSON object, naming it.
    pub fn load(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Self::parse(&name, &text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Parses `text` as the dashboard `name` (used in messages).
    ///
    /// # Errors
    ///
    /// If `text` is not a JSON object.
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| format!("{name}: not JSON: {e}"))?;
        if !json.is_object() {
            return Err(format!("{name}: not a JSON object"));
        }
        Ok(Self {
            name: name.to_owned(),
            json,
        })
    }

    /// The name it was loaded under (its file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `uid` (empty if missing).
    pub fn uid(&self) -> &str {
        self.json["uid"].as_str().unwrap_or_default()
    }

    /// Its `title` (empty if missing).
    pub fn title(&self) -> &str {
        self.json["title"].as_str().unwrap_or_default()
    }

    /// The whole JSON document.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Its template variables (`templating.list`) as name and type.
    pub fn variables(&self) -> Vec<(String, String)> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default().to_owned(),
                    v["type"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Every panel, those inside collapsed rows included, rows themselves excluded.
    pub fn panels(&self) -> Vec<&Value> {
        let mut panels = Vec::new();
        for panel in self.json["panels"].as_array().into_iter().flatten() {
            if panel["type"] == "row" {
                panels.extend(panel["panels"].as_array().into_iter().flatten());
            } else {
                panels.push(panel);
            }
        }
        panels
    }

    /// Every query (a target with an `expr`) of every panel, in order.
    pub fn queries(&self) -> Vec<PanelQuery> {
        self.panels()
            .into_iter()
            .flat_map(|panel| {
                let title = panel_title(panel);
                panel["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(move |target| {
                        Some(PanelQuery {
                            dashboard: self.name.clone(),
                            panel: title.clone(),
                            ref_id: target["refId"].as_str().unwrap_or("?").to_owned(),
                            expr: target["expr"].as_str()?.to_owned(),
                        })
                    })
            })
            .collect()
    }
}

/// A panel's title, or `#<id>` when it has none.
pub fn panel_title(panel: &Value) -> String {
    match panel["title"].as_str() {
        Some(title) if !title.is_empty() => title.to_owned(),
        _ => format!("#{}", panel["id"]),
    }
}

/// Every `*.json` dashboard in `dir`, by file name.
///
/// # Panics
///
/// If `dir` cannot be read or a file is not a dashboard.
pub fn load_dir(dir: &Path) -> Vec<Dashboard> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Dashboard::load(p)).collect()
}

/// The variables `expr` uses, in order of appearance, each once (`$1`-style
/// references, which Grafana leaves alone, excluded).
pub fn variables_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some((_, name, after)) = next_variable(rest) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        rest = after;
    }
    names
}

/// `expr` with every variable replaced by its value in `values`.
///
/// # Errors
///
/// Names every variable `values` has no value for.
pub fn substitute(expr: &str, values: &BTreeMap<&str, &str>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut missing = Vec::new();
    let mut rest = expr;
    while let Some((before, name, after)) = next_variable(rest) {
        out.push_str(before);
        match values.get(name) {
            Some(value) => out.push_str(value),
            None => missing.push(format!("${name}")),
        }
        rest = after;
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!("no value for {}", missing.join(", ")))
    }
}

/// The text before the next variable reference, its name, and the text after it.
fn next_variable(text: &str) -> Option<(&str, &str, &str)> {
    let word = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut from = 0;
    loop {
        let i = from + text[from..].find(['$', '['])?;
        let tail = &text[i..];
        let found = if let Some(inner) = tail.strip_prefix("${") {
            inner.find('}').map(|end| {
                let name = inner[..end].split(':').next().unwrap_or_default();
                (name, 2 + end + 1)
            })
        } else if let Some(inner) = tail.strip_prefix("[[") {
            inner.find("]]").map(|end| {
                let name = inner[..end].split(':').next().unwrap_or_default();
                (name, 2 + end + 2)
            })
        } else {
            tail.strip_prefix('$')
                .map(|inner| (&inner[..word(inner)], 1 + word(inner)))
        };
        match found {
            Some((name, len))
                if !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.len() == word(name) =>
            {
                return Some((&text[..i], name, &text[i + len..]));
            }
            _ => from = i + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_variable_syntax_is_substituted() {
        let values: BTreeMap<&str, &str> = [("job", "gateway"), ("__rate_interval", "1m")]
            .into_iter()
            .collect();
        assert_eq!(
            substitute(
                "a{job=~\"$job\"}[$__rate_interval] ${job} ${job:regex} [[job]]",
                &values
            )
            .unwrap(),
            "a{job=~\"gateway\"}[1m] gateway gateway gateway"
        );
        assert_eq!(
            substitute(
                "label_replace(up, \"d\", \"$1\", \"s\", \"(.*)\") + x[5m]",
                &values
            )
            .unwrap(),
            "label_replace(up, \"d\", \"$1\", \"s\", \"(.*)\") + x[5m]",
            "$1 and plain brackets are left alone"
        );
        let e = substitute("a{job=~\"$jb\", i=\"${instance}\"}", &values).unwrap_err();
        assert_eq!(e, "no value for $jb, $instance");
        assert_eq!(
            variables_in("$job $__interval ${job} [[node]] $1"),
            ["job", "__interval", "node"]
        );
    }

    #[test]
    fn queries_of_rows_and_nested_panels() {
        let d = Dashboard::parse(
            "d.json",
            r#"{"uid": "u", "title": "T", "templating": {"list": [{"name": "job", "type": "query"}]},
               "panels": [
                 {"type": "row", "title": "open row", "panels": []},
                 {"type": "timeseries", "id": 2, "targets": [{"refId": "A", "expr": "a"}, {"refId": "B", "expr": "b"}]},
                 {"type": "row", "title": "collapsed", "panels": [
                   {"type": "stat", "title": "Inside", "targets": [{"refId": "A", "expr": "c"}]}]},
                 {"type": "text", "title": "Notes"}
               ]}"#,
        )
        .unwrap();
        let q = d.queries();
        let seen: Vec<(&str, &str, &str)> = q
            .iter()
            .map(|q| (q.panel.as_str(), q.ref_id.as_str(), q.expr.as_str()))
            .collect();
        assert_eq!(
            seen,
            [("#2", "A", "a"), ("#2", "B", "b"), ("Inside", "A", "c")]
        );
        assert_eq!(d.variables(), [("job".to_owned(), "query".to_owned())]);
        assert_eq!((d.uid(), d.title(), d.name()), ("u", "T", "d.json"));
        assert!(Dashboard::parse("x.json", "[1]").is_err());
        assert!(Dashboard::parse("x.json", "{")
            .unwrap_err()
            .contains("x.json"));
    }
}
