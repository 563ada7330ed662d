//! Every labelled counter with a bounded label set is on `/metrics` at 0 from start-up, before
//! the first event: a series that first appears at 1 shows Prometheus no increase, and an
//! `increase(...) > 0` alert would miss the first dead letter, skip or failed handoff.

mod common;

use common::*;
use leadscore::config::Secret;
use leadscore::dev::standin::StandinConfig;
use std::time::Duration;

/// `/metrics` once the service is ready, checked with promtool.
fn scrape_when_ready(service: &Service, dir: &TempDir, name: &str) -> String {
    wait_until(Duration::from_secs(60), "the service to be ready", || {
        service.get("/readyz").is_some_and(|(code, _)| code == 200)
    });
    let (code, text) = service.get("/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    promtool_check(dir.path(), name, &text);
    text
}

fn assert_at_zero(text: &str, name: &str, label: &str, values: &[&str]) {
    assert!(!values.is_empty(), "{name}: no values to check");
    for value in values {
        let want = format!("{label}=\"{value}\"");
        assert_eq!(
            metric_with(text, name, &want),
            Some(0.0),
            "{name}{{{want}}} is not exported at 0 before the first event:\n{text}"
        );
    }
}

#[test]
fn a_fresh_scorer_exports_every_reason_and_kind_at_zero() {
    let rig = ScorerRig::new("zero-scorer", 1);
    let port = free_port();
    let env = rig.scorer_env("state", port, &[]);
    let scorer = Service::spawn("score", &env, port, rig.dir.path().join("scorer.log"));
    let text = scrape_when_ready(&scorer, &rig.dir, "scorer");

    assert!(
        text.lines()
            .any(|l| l == "leadscore_events_dead_lettered_total{reason=\"malformed\"} 0"),
        "{text}"
    );
    assert_at_zero(
        &text,
        "leadscore_events_dead_lettered_total",
        "reason",
        &leadscore::codec::DecodeError::REASONS,
    );
    let skips: Vec<&str> = leadscore::engine::Outcome::ALL
        .iter()
        .filter(|o| **o != leadscore::engine::Outcome::Scored)
        .map(|o| o.as_str())
        .collect();
    assert_at_zero(&text, "leadscore_events_skipped_total", "reason", &skips);
    let kinds: Vec<&str> = leadscore::change::ReasonKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_at_zero(&text, "leadscore_score_changes_total", "kind", &kinds);
}

#[test]
fn a_fresh_handoff_exports_every_outcome_and_reason_at_zero() {
    const SECRET: &str = "zero-test-secret";
    let rig = HandoffRig::new(
        "zero-handoff",
        1,
        StandinConfig {
            client_id: "leadscore-dev".into(),
            client_secret: Secret::new(SECRET),
            ..StandinConfig::default()
        },
    );
    let dir = &rig.dir;
    let port = free_port();
    let env = rig.env(port, SECRET);
    let handoff = Service::spawn("handoff", &env, port, dir.path().join("handoff.log"));
    let text = scrape_when_ready(&handoff, dir, "handoff");

    assert_at_zero(
        &text,
        "leadscore_handoffs_total",
        "outcome",
        leadscore::handoff::OUTCOME_STATUSES,
    );
    let mut reasons: Vec<&str> = leadscore::codec::DecodeError::REASONS.to_vec();
    reasons.extend(["not_found", "entity_is_deleted", "timeout", "other"]);
    assert_at_zero(
        &text,
        "leadscore_handoff_dead_lettered_total",
        "reason",
        &reasons,
    );
    assert_eq!(
        metric_with(
            &text,
            "leadscore_salesforce_requests_total",
            "status_class=\"5xx\""
        ),
        Some(0.0),
        "{text}"
    );
}
