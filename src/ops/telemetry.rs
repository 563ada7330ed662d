//! Telemetry in one place: metric names (`leadscore_<noun>_<unit>[_total]`, base units, bounded
//! label values only, never user ids, URLs or error text), their descriptions, and logging setup.

use crate::runtime::sync::lock_unpoisoned;
use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

pub use super::metrics::*;

mod logging;

pub use logging::{filter_directives, init_logging, subscriber, JsonLines, QUIET_CRATES};

/// Registers every metric's description from [`METRICS`] (once per process). The per-partition
/// gauges are described by [`PartitionGauges::render`] instead.
pub fn describe() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(describe_to_current_recorder);
}

/// [`describe`] without the once-per-process guard: for a test's local recorder.
pub fn describe_to_current_recorder() {
    for m in METRICS.iter().filter(|m| !m.per_partition()) {
        match m.kind {
            Kind::Counter => describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// Registers every counter series `service` exports at 0, from [`METRICS`]. A series that
/// first appears at 1 shows Prometheus no increase, so an `increase(...) > 0` alert would miss
/// the first dead letter, skip or failed handoff; registered up front, the first occurrence is
/// a step from 0. Registering does not change a series that already counts.
pub fn register_at_zero(service: Owner) {
    for (name, labels) in counter_series(service) {
        let labels: Vec<metrics::Label> = labels
            .into_iter()
            .map(|(k, v)| metrics::Label::new(k, v))
            .collect();
        metrics::counter!(name, labels).increment(0);
    }
}

/// The scorer's counters at 0: called once as the scorer starts.
pub fn register_scorer_counters() {
    register_at_zero(Owner::Scorer);
}

/// The handoff's counters at 0: called once as the handoff starts.
pub fn register_handoff_counters() {
    register_at_zero(Owner::Handoff);
}

/// Installs the Prometheus recorder once per process and returns its handle for `/metrics`.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0, 3600.0, 86400.0,
                ])
                .and_then(|b| b.install_recorder());
            let handle = match handle {
                Ok(h) => h,
                // Another recorder is installed (tests): render from a detached one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            handle
        })
        .clone()
}

/// Gauges labelled by partition that are dropped, series and all, when the partition leaves
/// this instance: a revoked partition's lag or clock would otherwise stay on the dashboard with
/// its last value. Rendered after the registry's metrics on `/metrics`.
#[derive(Debug, Default)]
pub struct PartitionGauges {
    values: Mutex<BTreeMap<(&'static str, i32), f64>>,
}

impl PartitionGauges {
    /// The process-wide set, like the `metrics` recorder.
    pub fn global() -> &'static PartitionGauges {
        static GLOBAL: OnceLock<PartitionGauges> = OnceLock::new();
        GLOBAL.get_or_init(PartitionGauges::default)
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<(&'static str, i32), f64>) -> R) -> R {
        let mut g = lock_unpoisoned(&self.values);
        f(&mut g)
    }

    /// Sets `name{partition="p"}`. `name` must be one of the per-partition gauges above.
    pub fn set(&self, name: &'static str, partition: i32, value: f64) {
        debug_assert!(metric(name).is_some_and(|m| m.per_partition()));
        self.with(|v| v.insert((name, partition), value));
    }

    /// Drops one series.
    pub fn remove(&self, name: &'static str, partition: i32) {
        self.with(|v| v.remove(&(name, partition)));
    }

    /// Drops every series of `partition`.
    pub fn forget_partition(&self, partition: i32) {
        self.with(|v| v.retain(|(_, p), _| *p != partition));
    }

    /// The current value of one series.
    pub fn get(&self, name: &'static str, partition: i32) -> Option<f64> {
        self.with(|v| v.get(&(name, partition)).copied())
    }

    /// Prometheus text format: `# HELP`, `# TYPE` and the samples of each gauge that has any.
    pub fn render(&self) -> String {
        let values = self.with(|v| v.clone());
        let mut out = String::new();
        for m in METRICS.iter().filter(|m| m.per_partition()) {
            let (name, help) = (m.name, m.help);
            let mut samples = values.iter().filter(|((n, _), _)| *n == name).peekable();
            if samples.peek().is_none() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for ((_, p), value) in samples {
                let _ = writeln!(out, "{name}{{partition=\"{p}\"}} {value}");
            }
            out.push('\n');
        }
        out
    }
}

/// The `/metrics` body: the registry's metrics, then the per-partition gauges.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&PartitionGauges::global().render());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_counters_render_at_zero_before_anything_happens() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            register_scorer_counters();
            register_handoff_counters();
        });
        let text = handle.render();
        for line in [
            "leadscore_events_dead_lettered_total{reason=\"malformed\"} 0",
            "leadscore_events_skipped_total{reason=\"duplicate\"} 0",
            "leadscore_events_skipped_total{reason=\"stale_external\"} 0",
            "leadscore_score_changes_total{kind=\"inactivity\"} 0",
            "leadscore_handoffs_total{outcome=\"failed\"} 0",
            "leadscore_handoff_dead_lettered_total{reason=\"entity_is_deleted\"} 0",
            "leadscore_handoff_dead_lettered_total{reason=\"other\"} 0",
            "leadscore_salesforce_requests_total{endpoint=\"collection\",status_class=\"5xx\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("reason=\"scored\""),
            "a scored event is no skip: {text}"
        );
    }

    #[test]
    fn a_forgotten_partition_leaves_no_series_and_no_empty_family() {
        let g = PartitionGauges::default();
        g.set(CONSUMER_LAG, 0, 5.0);
        g.set(CONSUMER_LAG, 2, 7.0);
        g.set(PARTITION_CLOCK, 2, 1_700_000_000.5);
        let text = g.render();
        assert!(text.contains("leadscore_consumer_lag_messages{partition=\"0\"} 5\n"));
        assert!(text.contains("leadscore_consumer_lag_messages{partition=\"2\"} 7\n"));
        assert!(text.contains("leadscore_partition_clock_seconds{partition=\"2\"} 1700000000.5\n"));
        assert_eq!(
            text.matches("# TYPE leadscore_consumer_lag_messages gauge")
                .count(),
            1
        );

        g.forget_partition(2);
        let text = g.render();
        assert!(!text.contains("partition=\"2\""), "{text}");
        assert!(
            !text.contains("leadscore_partition_clock_seconds"),
            "no HELP/TYPE without samples: {text}"
        );
        assert!(text.contains("leadscore_consumer_lag_messages{partition=\"0\"} 5\n"));

        g.remove(CONSUMER_LAG, 0);
        assert_eq!(g.render(), "");
        assert_eq!(g.get(CONSUMER_LAG, 0), None);
    }
}
