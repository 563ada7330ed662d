//! Telemetry in one place: metric names (`leadscore_<noun>_<unit>[_total]`, base units, bounded
//! label values only, never user ids, URLs or error text), their descriptions, and logging setup.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

pub const EVENTS_CONSUMED: &str = "leadscore_events_consumed_total";
pub const EVENTS_APPLIED: &str = "leadscore_events_applied_total";
pub const EVENTS_SKIPPED: &str = "leadscore_events_skipped_total";
pub const EVENTS_DEAD_LETTERED: &str = "leadscore_events_dead_lettered_total";
pub const EVENTS_MISROUTED: &str = "leadscore_events_misrouted_total";
pub const SCORE_CHANGES: &str = "leadscore_score_changes_total";
pub const EVENT_TO_OUTPUT_SECONDS: &str = "leadscore_event_to_output_seconds";
pub const POLL_TO_OUTPUT_SECONDS: &str = "leadscore_poll_to_output_seconds";
pub const CONSUMER_LAG: &str = "leadscore_consumer_lag_messages";
pub const RESTORE_RECORDS: &str = "leadscore_restore_records_total";
pub const RESTORE_SECONDS: &str = "leadscore_restore_duration_seconds";
pub const RESTORING_PARTITIONS: &str = "leadscore_restoring_partitions";
pub const ASSIGNED_PARTITIONS: &str = "leadscore_assigned_partitions";
pub const STORE_USERS: &str = "leadscore_store_keys";
pub const STORE_BYTES: &str = "leadscore_store_bytes";
pub const STORE_VERIFY_FAILURES: &str = "leadscore_store_verify_failures_total";
pub const PENDING_TIMERS: &str = "leadscore_pending_timers";
pub const CHECKPOINT_SECONDS: &str = "leadscore_checkpoint_duration_seconds";
pub const CHECKPOINTS: &str = "leadscore_checkpoints_total";
pub const PARTITION_CLOCK: &str = "leadscore_partition_clock_seconds";
pub const RESTORE_REMAINING: &str = "leadscore_restore_remaining_records";

/// The per-partition gauges, with their descriptions. They live in [`PartitionGauges`], not in
/// the `metrics` registry, so that a partition's series disappear when it is revoked (the
/// registry cannot forget a series).
const PARTITION_GAUGES: &[(&str, &str)] = &[
    (CONSUMER_LAG, "Consumer lag per owned partition of the consumed topic, from librdkafka statistics."),
    (PARTITION_CLOCK, "Each owned partition's clock, in Unix seconds."),
    (RESTORE_REMAINING, "Changelog records left to read per partition being restored (from the high watermark when the restore started)."),
];

/// Registers every metric's description (once per process).
pub fn describe() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        describe_counter!(EVENTS_CONSUMED, Unit::Count, "Input records read from Kafka, good or bad.");
        describe_counter!(EVENTS_APPLIED, Unit::Count, "Input events that changed a user's score.");
        describe_counter!(EVENTS_SKIPPED, Unit::Count, "Input events that changed no score, by reason (duplicate, not_enrolled, outside_audience, reentry_wait, no_group, unchanged, stale_external, replayed).");
        describe_counter!(EVENTS_DEAD_LETTERED, Unit::Count, "Bad input records sent to the dead-letter topic, by reason.");
        describe_counter!(EVENTS_MISROUTED, Unit::Count, "Input records found off their user's home partition (murmur2 of the user id), by reason (wrong_partition, no_key): re-routed to it, or for a keyless record already there, scored in place.");
        describe_counter!(SCORE_CHANGES, Unit::Count, "Score changes published, by reason kind (rule, inactivity, external, attribute).");
        describe_histogram!(EVENT_TO_OUTPUT_SECONDS, Unit::Seconds, "From an event's time to its score change being published (wall clock).");
        describe_histogram!(POLL_TO_OUTPUT_SECONDS, Unit::Seconds, "From polling a record to its batch being checkpointed.");
        describe_counter!(RESTORE_RECORDS, Unit::Count, "Changelog records read while restoring partitions.");
        describe_histogram!(RESTORE_SECONDS, Unit::Seconds, "How long restoring one partition (local copy, then changelog) took.");
        describe_gauge!(RESTORING_PARTITIONS, Unit::Count, "Partitions being restored right now.");
        describe_gauge!(ASSIGNED_PARTITIONS, Unit::Count, "Partitions this instance owns.");
        describe_gauge!(STORE_USERS, Unit::Count, "Keys (users) held in state across owned partitions.");
        describe_gauge!(STORE_BYTES, Unit::Bytes, "Bytes the local store takes on disk (all partitions, journal included).");
        describe_counter!(STORE_VERIFY_FAILURES, Unit::Count, "Local store copies not trusted at a restore (restored wholly from the changelog instead), by reason (unreadable, no_meta, ahead, no_checkpoint, unverifiable, key_count, digest).");
        describe_gauge!(PENDING_TIMERS, Unit::Count, "Inactivity timers waiting to fire across owned partitions.");
        describe_histogram!(CHECKPOINT_SECONDS, Unit::Seconds, "How long a checkpoint (flush, changelog, commit or transaction) took.");
        describe_counter!(CHECKPOINTS, Unit::Count, "Checkpoints completed.");
    });
}

// ---------------------------------------------------------------------------------------------
// Labelled counters, exported at 0 from start-up
// ---------------------------------------------------------------------------------------------

/// A counter whose one label takes its values from a bounded set: (name, label, every value
/// the code can give the label). The values come from the lists the code itself draws from, so
/// a value added there is registered here too.
pub type LabelledCounter = (&'static str, &'static str, Vec<&'static str>);

/// The scorer's labelled counters. A labelled counter must be listed here (or in
/// [`handoff_counters`]) for its series to exist before the first occurrence; the test
/// `every_labelled_counter_is_registered_at_zero` finds the ones missing.
pub fn scorer_counters() -> Vec<LabelledCounter> {
    use crate::engine::Outcome;
    let skips = Outcome::ALL
        .iter()
        .filter(|o| **o != Outcome::Scored)
        .map(|o| o.as_str())
        .collect();
    let kinds = crate::change::ReasonKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    vec![
        (
            EVENTS_DEAD_LETTERED,
            "reason",
            crate::codec::DecodeError::REASONS.to_vec(),
        ),
        (EVENTS_SKIPPED, "reason", skips),
        (SCORE_CHANGES, "kind", kinds),
    ]
}

/// The handoff's labelled counters (see [`scorer_counters`]).
pub fn handoff_counters() -> Vec<LabelledCounter> {
    // As `handoff::dead_letter_label` maps reasons: decode errors, Salesforce codes, the rest
    // as `other`.
    let dead_letter_reasons = crate::codec::DecodeError::REASONS
        .iter()
        .chain(crate::handoff::SALESFORCE_DEAD_LETTER_LABELS)
        .copied()
        .chain(["other"])
        .collect();
    vec![
        (
            crate::handoff::HANDOFFS,
            "outcome",
            vec!["handed_off", "failed"],
        ),
        (
            crate::handoff::HANDOFF_DEAD_LETTERED,
            "reason",
            dead_letter_reasons,
        ),
    ]
}

/// Registers every series of `counters` at 0. A series that first appears at 1 shows Prometheus
/// no increase, so an `increase(...) > 0` alert would miss the first dead letter, skip or
/// failed handoff; registered up front, the first occurrence is a step from 0. Registering does
/// not change a series that already counts.
pub fn register_at_zero(counters: &[LabelledCounter]) {
    for (name, label, values) in counters {
        for value in values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
}

/// The scorer's labelled counters at 0: called once as the scorer starts.
pub fn register_scorer_counters() {
    register_at_zero(&scorer_counters());
}

/// The Salesforce calls counter's series (endpoint, status class), as `salesforce.rs` labels
/// them; `1xx` and `3xx` are left out: the HTTP client answers neither (it follows redirects).
pub const SALESFORCE_REQUEST_SERIES: (&[&str], &[&str]) = (
    &["token", "sobject", "collection"],
    &["2xx", "4xx", "5xx", "error"],
);

/// The handoff's labelled counters at 0: called once as the handoff starts.
pub fn register_handoff_counters() {
    register_at_zero(&handoff_counters());
    let (endpoints, classes) = SALESFORCE_REQUEST_SERIES;
    for endpoint in endpoints {
        for class in classes {
            metrics::counter!(crate::salesforce::REQUESTS, "endpoint" => *endpoint, "status_class" => *class)
                .increment(0);
        }
    }
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
        let mut g = match self.values.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    /// Sets `name{partition="p"}`. `name` must be one of the per-partition gauges above.
    pub fn set(&self, name: &'static str, partition: i32, value: f64) {
        debug_assert!(PARTITION_GAUGES.iter().any(|(n, _)| *n == name));
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
        for (name, help) in PARTITION_GAUGES {
            let mut samples = values.iter().filter(|((n, _), _)| n == name).peekable();
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

/// Logging: human-readable or JSON lines, level from the setting (or `RUST_LOG`).
pub fn init_logging(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labelled counters the services' code increments: `counter!(NAME, "label" => ...)`
    /// in each source file, by constant name.
    fn labelled_counters_in(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = source;
        while let Some(i) = rest.find("counter!(") {
            rest = &rest[i + "counter!(".len()..];
            let Some(end) = rest.find(')') else { break };
            let args = &rest[..end];
            if let Some((name, labels)) = args.split_once(',') {
                if labels.contains("=>") {
                    let name = name.trim();
                    let name = name.rsplit("::").next().unwrap_or(name).trim();
                    found.push(name.to_string());
                }
            }
        }
        found
    }

    /// A new labelled counter (or a new file's) must be added to the zero-registration, or its
    /// first occurrence goes unseen by `increase()` alerts.
    #[test]
    fn every_labelled_counter_is_registered_at_zero() {
        let constants: &[(&str, &str)] = &[
            ("EVENTS_DEAD_LETTERED", EVENTS_DEAD_LETTERED),
            ("EVENTS_SKIPPED", EVENTS_SKIPPED),
            ("SCORE_CHANGES", SCORE_CHANGES),
            ("HANDOFFS", crate::handoff::HANDOFFS),
            (
                "HANDOFF_DEAD_LETTERED",
                crate::handoff::HANDOFF_DEAD_LETTERED,
            ),
            ("REQUESTS", crate::salesforce::REQUESTS),
        ];
        let registered: Vec<&str> = scorer_counters()
            .iter()
            .chain(&handoff_counters())
            .map(|(name, _, _)| *name)
            .chain([crate::salesforce::REQUESTS])
            .collect();
        let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        let mut files = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src/") {
                let path = entry.expect("src/ entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        let mut seen = 0;
        for path in files {
            // This file registers the counters (and its test names them).
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("telemetry.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source file");
            for constant in labelled_counters_in(&text) {
                seen += 1;
                let name = constants
                    .iter()
                    .find(|(c, _)| *c == constant)
                    .map(|(_, n)| *n)
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: labelled counter {constant} is not registered at zero: add it to telemetry::scorer_counters or handoff_counters (and to this test's table)",
                            path.display()
                        )
                    });
                assert!(registered.contains(&name), "{constant} ({name})");
            }
        }
        assert!(seen >= 5, "the scan found the known labelled counters");
    }

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
