//! The Grafana dashboard.

use super::*;

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/dashboards/leadscore.json")).expect("dashboard JSON")
}

/// Every value of the given keys anywhere in a JSON document.
fn collect<'a>(value: &'a Json, keys: &[&str], out: &mut Vec<&'a Json>) {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                if keys.contains(&k.as_str()) {
                    out.push(v);
                }
                collect(v, keys, out);
            }
        }
        Json::Array(items) => items.iter().for_each(|v| collect(v, keys, out)),
        _ => {}
    }
}

/// Panel queries (`expr`) and template-variable queries (`query`, `definition`).
fn dashboard_queries(dashboard: &Json) -> Vec<String> {
    let mut found = Vec::new();
    collect(dashboard, &["expr", "query", "definition"], &mut found);
    found
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The dashboard's `datasource` template variable.
pub(super) fn dashboard_datasource_variable() -> Json {
    dashboard()["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["name"] == "datasource")
        .cloned()
        .expect("a template variable named datasource")
}

fn dashboard_datasource_uids() -> BTreeSet<String> {
    let dashboard = dashboard();
    let mut found = Vec::new();
    collect(&dashboard, &["datasource"], &mut found);
    found
        .into_iter()
        .filter_map(|ds| ds.get("uid").and_then(Json::as_str).map(str::to_string))
        .collect()
}

/// Every panel that is not a row, with the title of the row it sits under.
fn dashboard_panels(dashboard: &Json) -> Vec<(String, &Json)> {
    let mut out = Vec::new();
    let mut row = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            row = panel["title"].as_str().expect("row title").to_string();
            for inner in panel["panels"].as_array().into_iter().flatten() {
                out.push((row.clone(), inner));
            }
        } else {
            out.push((row.clone(), panel));
        }
    }
    out
}

fn panel_exprs(panel: &Json) -> Vec<&str> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .collect()
}

/// The base names of every metric the dashboard queries.
fn dashboard_metrics(dashboard: &Json) -> BTreeSet<String> {
    dashboard_queries(dashboard)
        .iter()
        .flat_map(|e| metric_names(e))
        .map(|n| base_metric(&n).to_string())
        .collect()
}

/// The job matcher each service's queries carry: `job=~"$<variable>"`.
const SCORER_JOB: &str = "$scorer_job";
const HANDOFF_JOB: &str = "$handoff_job";

/// The job a query selects, from its `job=~"$..."` matchers; every metric must have one.
fn selected_job(expr: &str) -> String {
    let jobs: BTreeSet<String> = metric_uses(expr)
        .into_iter()
        .map(|u| {
            u.matchers
                .iter()
                .find(|(label, op, _)| label == "job" && op == "=~")
                .map(|(_, _, value)| value.clone())
                .unwrap_or_else(|| panic!("{} has no job=~ matcher in {expr}", u.name))
        })
        .collect();
    assert_eq!(jobs.len(), 1, "one service per query: {expr}");
    jobs.into_iter().next().expect("one")
}

/// Every panel and query picks its data source through the `datasource` variable, so the
/// dashboard imports into any Grafana, whatever its data sources' uids.
#[test]
fn dashboard_selects_its_data_source_through_a_variable_not_a_fixed_uid() {
    let variable = dashboard_datasource_variable();
    assert_eq!(variable["type"], "datasource");
    assert_eq!(variable["query"], "prometheus");
    assert_eq!(
        dashboard_datasource_uids(),
        BTreeSet::from(["${datasource}".to_string()]),
        "a panel or query names a fixed data source uid"
    );
    let dashboard = dashboard();
    for (row, panel) in dashboard_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for ds in std::iter::once(&panel["datasource"]).chain(
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        ) {
            assert_eq!(
                ds["uid"], "${datasource}",
                "{row} / {title}: data source {ds}"
            );
        }
    }
}

#[test]
fn dashboard_queries_only_metrics_the_binary_exports() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "leadscore");
    let known = known_metrics();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 10, "{queries:?}");
    for expr in &queries {
        for name in metric_names(expr) {
            assert!(
                known.contains(base_metric(&name)),
                "{name} (in {expr}) is not a metric of telemetry::METRICS"
            );
        }
    }
}

#[test]
fn dashboard_queries_histograms_by_their_series_and_other_metrics_by_name() {
    let histograms = histograms();
    for expr in dashboard_queries(&dashboard()) {
        for name in metric_names(&expr) {
            let base = base_metric(&name);
            if histograms.contains(base) {
                assert_ne!(name, base, "histogram {base} has no bare series: {expr}");
            } else {
                assert_eq!(name, base, "{base} is no histogram: {expr}");
            }
        }
    }
    let quantiles = dashboard_queries(&dashboard())
        .into_iter()
        .filter(|e| e.contains("histogram_quantile"))
        .collect::<Vec<_>>();
    assert!(!quantiles.is_empty());
    for q in quantiles {
        assert!(
            metric_names(&q).iter().all(|n| n.ends_with("_bucket")),
            "{q}"
        );
        assert!(q.contains("by (le)"), "{q}");
    }
}

#[test]
fn dashboard_shows_the_operational_metrics() {
    let shown = dashboard_metrics(&dashboard());
    for wanted in [
        telemetry::EVENTS_CONSUMED,
        telemetry::EVENTS_APPLIED,
        telemetry::EVENTS_SKIPPED,
        telemetry::EVENTS_DEAD_LETTERED,
        telemetry::SCORE_CHANGES,
        telemetry::EVENT_TO_OUTPUT_SECONDS,
        telemetry::CONSUMER_LAG,
        telemetry::RESTORING_PARTITIONS,
        telemetry::RESTORE_SECONDS,
        telemetry::RESTORE_RECORDS,
        telemetry::STORE_USERS,
        telemetry::PENDING_TIMERS,
        telemetry::CHECKPOINT_SECONDS,
        telemetry::ASSIGNED_PARTITIONS,
    ] {
        assert!(shown.contains(wanted), "no panel shows {wanted}");
    }
    let exprs = dashboard_queries(&dashboard()).join("\n");
    for by in ["sum by (reason)", "sum by (kind)", "by (partition)"] {
        assert!(exprs.contains(by), "no panel breaks down {by}");
    }
}

#[test]
fn dashboard_shows_every_handoff_and_salesforce_metric() {
    let dashboard = dashboard();
    let shown = dashboard_metrics(&dashboard);
    let own = handoff_metrics();
    assert!(own.len() >= 10, "{own:?}");
    for metric in &own {
        assert!(shown.contains(metric), "no panel shows {metric}");
    }

    // The handoff's side of what both services export: its lag and its restores.
    let handoff_exprs: Vec<String> = dashboard_queries(&dashboard)
        .into_iter()
        .filter(|e| !metric_names(e).is_empty() && selected_job(e) == HANDOFF_JOB)
        .collect();
    let handoff_shown: BTreeSet<String> = handoff_exprs
        .iter()
        .flat_map(|e| metric_names(e))
        .map(|n| base_metric(&n).to_string())
        .collect();
    for shared in [
        telemetry::CONSUMER_LAG,
        telemetry::ASSIGNED_PARTITIONS,
        telemetry::RESTORING_PARTITIONS,
        telemetry::RESTORE_SECONDS,
    ] {
        assert!(
            handoff_shown.contains(shared),
            "no handoff panel shows {shared}"
        );
    }
    let joined = handoff_exprs.join("\n");
    for by in [
        "sum by (outcome)",
        "sum by (status_class)",
        "sum by (endpoint)",
        "sum by (reason)",
        "by (partition)",
    ] {
        assert!(joined.contains(by), "no handoff panel breaks down {by}");
    }
    // API usage against the org's allowance, as a ratio.
    assert!(
        handoff_exprs.iter().any(|e| {
            let names = metric_names(e);
            e.contains(" / ")
                && names.first().map(String::as_str) == Some(telemetry::SALESFORCE_API_USAGE)
                && names.last().map(String::as_str) == Some(telemetry::SALESFORCE_API_LIMIT)
        }),
        "no panel divides {} by {}",
        telemetry::SALESFORCE_API_USAGE,
        telemetry::SALESFORCE_API_LIMIT
    );
}

#[test]
fn dashboard_tells_the_scorer_and_the_handoff_apart_by_job() {
    let dashboard = dashboard();
    // The job variables, and the Prometheus job names they must match.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let jobs = SCRAPED.map(|(_, job)| job);
    for (var, (job_name, other_job)) in ["scorer_job", "handoff_job"]
        .into_iter()
        .zip([(jobs[0], jobs[1]), (jobs[1], jobs[0])])
    {
        let v = variable(var);
        assert_eq!(v["type"], "textbox", "{var}: editable, for other job names");
        let value = v["query"].as_str().expect("default value");
        assert_eq!(v["current"]["value"], value, "{var}");
        let prefix = value.strip_suffix(".*").expect("a prefix regex");
        assert!(
            prefix.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{var}: {value}"
        );
        assert!(
            job_name.starts_with(prefix),
            "{var}={value} misses {job_name}"
        );
        assert!(
            !other_job.starts_with(prefix),
            "{var}={value} matches {other_job}"
        );
        // With the Prometheus Operator, a ServiceMonitor's job is the Service name.
        let service = format!("{job_name}-metrics");
        assert!(k8s_objects().contains_key(&("Service".to_string(), service.clone())));
        assert!(
            service.starts_with(prefix),
            "{var}={value} misses {service}"
        );
    }

    // Every query names its service; the handoff's own metrics and the panels under the
    // handoff rows select the handoff, all others the scorer.
    let own = handoff_metrics();
    let mut handoff_panels = 0;
    for (row, panel) in dashboard_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let want = if row.starts_with("Handoff") {
            handoff_panels += 1;
            HANDOFF_JOB
        } else {
            assert!(row.starts_with("Scorer"), "row {row:?}: Scorer or Handoff");
            SCORER_JOB
        };
        let exprs = panel_exprs(panel);
        assert!(!exprs.is_empty(), "{title}: no query");
        for expr in exprs {
            if metric_names(expr).is_empty() {
                continue; // e.g. up{...}
            }
            assert_eq!(selected_job(expr), want, "{row} / {title}: {expr}");
            for name in metric_names(expr) {
                if own.contains(base_metric(&name)) {
                    assert_eq!(want, HANDOFF_JOB, "{row} / {title}: {name}");
                }
            }
        }
    }
    assert!(handoff_panels >= 10, "{handoff_panels} handoff panels");
    let instance = variable("instance");
    let query = instance["definition"].as_str().expect("definition");
    assert_eq!(selected_job(query), SCORER_JOB, "{query}");
}

#[test]
fn dashboard_breaks_down_and_filters_only_by_labels_the_metrics_carry() {
    let labels = recorded_labels();
    // The table's labels, as the dashboard relies on them.
    let set = |names: &[&str]| -> Option<BTreeSet<String>> {
        Some(names.iter().map(|n| n.to_string()).collect())
    };
    assert_eq!(labels[telemetry::HANDOFFS], set(&["outcome"]));
    assert_eq!(labels[telemetry::HANDOFF_DEAD_LETTERED], set(&["reason"]));
    assert_eq!(labels[telemetry::HANDOFF_RETRIES], set(&[]));
    assert_eq!(
        labels[telemetry::SALESFORCE_REQUESTS],
        set(&["endpoint", "status_class"])
    );
    assert_eq!(labels[telemetry::SALESFORCE_API_USAGE], set(&[]));
    assert_eq!(labels[telemetry::SCORE_CHANGES], set(&["kind"]));
    for gauge in [
        telemetry::CONSUMER_LAG,
        telemetry::PARTITION_CLOCK,
        telemetry::RESTORE_REMAINING,
    ] {
        assert_eq!(labels[gauge], set(&["partition"]), "{gauge}");
    }

    let mut checked = 0;
    for expr in dashboard_queries(&dashboard()) {
        let uses = metric_uses(&expr);
        for by in grouping_labels(&expr) {
            if ["le", "instance", "job"].contains(&by.as_str()) {
                continue;
            }
            for u in &uses {
                if let Some(Some(carried)) = labels.get(base_metric(&u.name)) {
                    assert!(
                        carried.contains(&by),
                        "{} has no label {by}: {expr}",
                        u.name
                    );
                    checked += 1;
                }
            }
        }
        for u in &uses {
            for (label, op, value) in &u.matchers {
                if ["instance", "job"].contains(&label.as_str()) {
                    continue;
                }
                if let Some(Some(carried)) = labels.get(base_metric(&u.name)) {
                    assert!(
                        carried.contains(label),
                        "{} has no label {label}: {expr}",
                        u.name
                    );
                    checked += 1;
                }
                if op == "=" {
                    assert!(
                        label_value_exists(base_metric(&u.name), label, value),
                        "{label}=\"{value}\": no such value of {}: {expr}",
                        u.name
                    );
                }
            }
        }
    }
    assert!(checked >= 8, "only {checked} labels checked");
}

#[test]
fn dashboard_panels_have_unique_ids_and_do_not_overlap() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: id twice"
        );
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24, "{title}: wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.clone()) {
                    panic!("{title} overlaps {other}");
                }
            }
        }
    }
}
