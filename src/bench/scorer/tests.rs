use super::*;

const METRICS: [&str; 17] = [
    "baseline: plain consumer (records/s)",
    "scorer throughput (events/s)",
    "scorer / baseline",
    "pipe: consume, produce, commit (records/s)",
    "scorer / pipe",
    "scorer throughput, exactly_once (events/s)",
    "pipe, exactly_once (records/s)",
    "scorer / pipe, exactly_once",
    "latency produce -> score change, p50 (ms)",
    "latency produce -> score change, p99 (ms)",
    "latency samples",
    "restore (changelog records/s)",
    "baseline: plain consumer on the changelog (records/s)",
    "changelog records read",
    "state on disk per user (bytes)",
    "state encoded per user, mean (bytes)",
    "users with state",
];

#[test]
fn tiny_run_reports_every_metric_with_a_positive_value() -> Result<()> {
    let report = run(&ScorerBenchOptions {
        events: 3_000,
        users: 300,
        ..ScorerBenchOptions::default()
    })?;
    let values = crate::bench::parse_report(&report);
    crate::bench::assert_positive(&values, &METRICS, &report);
    assert_eq!(values.len(), METRICS.len(), "{report}");
    assert!(
        report.contains("events = 3000 (+5000 for latency); users = 300; partitions = 3"),
        "{report}"
    );
    assert!(report.contains("the median of 3 pairs"), "{report}");
    Ok(())
}

#[test]
fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
    assert_eq!(median(&[0.9, 0.7, 0.8]), 0.8);
    assert_eq!(median(&[0.5, 0.25, 1.0, 0.75]), 0.625);
    assert_eq!(median(&[0.5]), 0.5);
    assert_eq!(median(&[]), 0.0);
}

#[test]
fn rejects_zero_events() {
    let opts = ScorerBenchOptions {
        events: 0,
        ..ScorerBenchOptions::default()
    };
    assert!(run(&opts).is_err());
}
