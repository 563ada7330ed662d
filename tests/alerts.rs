//! The shipped alerting rules (`deploy/prometheus/alerts.yml`): valid for Prometheus
//! (`promtool check rules`), behaving as their unit tests say (`promtool test rules
//! alerts.test.yml`, a firing and a quiet case per alert), written only against metrics,
//! labels and label values leadscore exports (the one table, `telemetry::METRICS`), and each
//! with a runbook in docs/operations.md.

mod common;

use common::files::{root, str_key, yaml};
use common::promql::{grouping_labels, is_ident_char, metric_uses};
use leadscore::ops::telemetry::{self, Metric};
use serde_yaml_ng::Value as Yaml;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn prometheus_dir() -> PathBuf {
    root().join("deploy/prometheus")
}

/// Every alerting rule of alerts.yml.
fn alerts() -> Vec<Yaml> {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let groups = rules["groups"].as_sequence().expect("groups");
    let alerts: Vec<Yaml> = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter().cloned())
        .filter(|r| r.get("alert").is_some())
        .collect();
    assert!(alerts.len() >= 9, "{} alerts", alerts.len());
    alerts
}

/// `promtool ARGS` in deploy/prometheus; `None` (after saying so) when promtool is absent.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(prometheus_dir())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: promtool is not installed (tests/setup installs it)");
            None
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules() {
    if let Some(out) = promtool(&["check", "rules", "alerts.yml"]) {
        assert_success(&out, "promtool check rules alerts.yml");
    }
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    if let Some(out) = promtool(&["test", "rules", "alerts.test.yml"]) {
        assert_success(&out, "promtool test rules alerts.test.yml");
    }
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_test_case() {
    let tests = yaml("deploy/prometheus/alerts.test.yml");
    let cases: Vec<&Yaml> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().expect("alert_rule_test"))
        .collect();
    for alert in alerts() {
        let name = str_key(&alert, "alert");
        let of_alert: Vec<&&Yaml> = cases
            .iter()
            .filter(|c| str_key(c, "alertname") == name)
            .collect();
        let fired = |c: &&&Yaml| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
        assert!(of_alert.iter().any(fired), "{name}: no case where it fires");
        assert!(
            of_alert.iter().any(|c| !fired(c)),
            "{name}: no case where it stays quiet"
        );
    }
}

#[test]
fn every_alert_has_a_wait_a_severity_and_a_runbook_in_the_operations_doc() {
    let doc = std::fs::read_to_string(root().join("docs/operations.md")).expect("operations.md");
    let headings: BTreeSet<String> = doc
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_lowercase())
        .collect();
    let mut names = BTreeSet::new();
    for alert in alerts() {
        let name = str_key(&alert, "alert");
        assert!(names.insert(name.to_string()), "{name} twice");
        assert!(name.starts_with("Leadscore"), "{name}");
        assert!(alert.get("for").is_some(), "{name}: no `for:`");
        let severity = str_key(&alert["labels"], "severity");
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: severity {severity}"
        );
        let annotations = &alert["annotations"];
        assert!(!str_key(annotations, "summary").is_empty(), "{name}");
        let description = str_key(annotations, "description");
        let anchor = name.to_lowercase();
        assert!(
            description.contains(&format!("docs/operations.md#{anchor}")),
            "{name}: the description points at docs/operations.md#{anchor}: {description}"
        );
        assert!(
            headings.contains(&anchor),
            "docs/operations.md has no heading {name} (the runbook of the alert)"
        );
    }
}

/// The row of a series name, histogram suffixes allowed.
fn row(name: &str) -> Option<&'static Metric> {
    telemetry::metric(name).or_else(|| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .filter_map(telemetry::metric)
            .find(|m| m.kind == telemetry::Kind::Histogram)
    })
}

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

#[test]
fn alerts_use_only_metrics_labels_and_values_from_the_metrics_table() {
    for alert in alerts() {
        let name = str_key(&alert, "alert");
        let expr = str_key(&alert, "expr");
        let uses = metric_uses(expr);
        assert!(!uses.is_empty(), "{name}: no leadscore metric in {expr}");
        let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
        for u in &uses {
            let m = row(&u.name)
                .unwrap_or_else(|| panic!("{name}: {} is not in telemetry::METRICS", u.name));
            labels.extend(m.labels.iter().map(|l| l.name.to_string()));
            for (label, op, value) in &u.matchers {
                if TARGET_LABELS.contains(&label.as_str()) {
                    continue;
                }
                let l = m
                    .labels
                    .iter()
                    .find(|l| l.name == label)
                    .unwrap_or_else(|| panic!("{name}: {} has no label {label}", m.name));
                let Some(values) = l.values.list() else {
                    continue;
                };
                let wanted: Vec<&str> = if op.contains('~') {
                    value.split('|').collect()
                } else {
                    vec![value.as_str()]
                };
                for v in wanted {
                    assert!(
                        values.contains(&v),
                        "{name}: {}{{{label}{op}\"{value}\"}}: {v:?} is not one of {values:?}",
                        m.name
                    );
                }
            }
        }
        for label in grouping_labels(expr) {
            assert!(
                labels.contains(&label),
                "{name}: groups by {label}, which none of its metrics carries"
            );
        }
        for templated in ["summary", "description"] {
            let text = str_key(&alert["annotations"], templated);
            for (i, _) in text.match_indices("$labels.") {
                let label: String = text[i + 8..]
                    .chars()
                    .take_while(|c| is_ident_char(*c))
                    .collect();
                assert!(
                    labels.contains(&label),
                    "{name}: {templated} shows $labels.{label}, which its metrics do not carry"
                );
            }
        }
    }
}

#[test]
fn the_checks_above_catch_a_metric_or_value_that_does_not_exist() {
    // The parser the checks rely on finds names, matchers and grouping labels.
    let uses = metric_uses(
        r#"sum by (job, reason) (increase(leadscore_handoffs_total{outcome="lost"}[5m])) and leadscore_nope"#,
    );
    assert_eq!(uses.len(), 2);
    assert_eq!(uses[0].name, "leadscore_handoffs_total");
    assert_eq!(
        uses[0].matchers,
        vec![("outcome".into(), "=".into(), "lost".into())]
    );
    assert!(row("leadscore_nope").is_none());
    let outcome = row("leadscore_handoffs_total").expect("row").labels[0]
        .values
        .list()
        .expect("bounded");
    assert!(!outcome.contains(&"lost"));
    assert_eq!(
        grouping_labels("x and on (job, instance, partition) y by(reason)"),
        ["instance", "job", "partition", "reason"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
