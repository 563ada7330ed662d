//! Telemetry in one place: metric names (`leadscore_<noun>_<unit>[_total]`, base units, bounded
//! label values only, never user ids, URLs or error text), their descriptions, and logging setup.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const EVENTS_CONSUMED: &str = "leadscore_events_consumed_total";
pub const EVENTS_APPLIED: &str = "leadscore_events_applied_total";
pub const EVENTS_SKIPPED: &str = "leadscore_events_skipped_total";
pub const EVENTS_DEAD_LETTERED: &str = "leadscore_events_dead_lettered_total";
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
pub const PENDING_TIMERS: &str = "leadscore_pending_timers";
pub const CHECKPOINT_SECONDS: &str = "leadscore_checkpoint_duration_seconds";
pub const CHECKPOINTS: &str = "leadscore_checkpoints_total";
pub const PARTITION_CLOCK: &str = "leadscore_partition_clock_seconds";

/// Registers every metric's description (once per process).
pub fn describe() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        describe_counter!(EVENTS_CONSUMED, Unit::Count, "Input records read from Kafka, good or bad.");
        describe_counter!(EVENTS_APPLIED, Unit::Count, "Input events that changed a user's score.");
        describe_counter!(EVENTS_SKIPPED, Unit::Count, "Input events that changed no score, by reason (duplicate, not_enrolled, outside_audience, reentry_wait, no_group, unchanged, stale_external, replayed).");
        describe_counter!(EVENTS_DEAD_LETTERED, Unit::Count, "Bad input records sent to the dead-letter topic, by reason.");
        describe_counter!(SCORE_CHANGES, Unit::Count, "Score changes published, by reason kind (rule, inactivity, external, attribute).");
        describe_histogram!(EVENT_TO_OUTPUT_SECONDS, Unit::Seconds, "From an event's time to its score change being published (wall clock).");
        describe_histogram!(POLL_TO_OUTPUT_SECONDS, Unit::Seconds, "From polling a record to its batch being checkpointed.");
        describe_gauge!(CONSUMER_LAG, Unit::Count, "Consumer lag per assigned partition, from librdkafka statistics.");
        describe_counter!(RESTORE_RECORDS, Unit::Count, "Changelog records read while restoring partitions.");
        describe_histogram!(RESTORE_SECONDS, Unit::Seconds, "How long restoring one partition took.");
        describe_gauge!(RESTORING_PARTITIONS, Unit::Count, "Partitions being restored right now.");
        describe_gauge!(ASSIGNED_PARTITIONS, Unit::Count, "Partitions this instance owns.");
        describe_gauge!(STORE_USERS, Unit::Count, "Keys (users) held in state across owned partitions.");
        describe_gauge!(STORE_BYTES, Unit::Bytes, "Encoded bytes of state across owned partitions.");
        describe_gauge!(PENDING_TIMERS, Unit::Count, "Inactivity timers waiting to fire across owned partitions.");
        describe_histogram!(CHECKPOINT_SECONDS, Unit::Seconds, "How long a checkpoint (flush, changelog, commit or transaction) took.");
        describe_counter!(CHECKPOINTS, Unit::Count, "Checkpoints completed.");
        describe_gauge!(PARTITION_CLOCK, Unit::Seconds, "Each owned partition's clock, in Unix seconds.");
    });
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
