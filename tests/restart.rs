//! A restarted scorer is back at work within seconds, after a `kill -9` and after a clean stop,
//! with the default group settings (librdkafka's 45 s session timeout made a restarted
//! instance wait that long for its own partitions on a broker without static membership).
//!
//! The bound below is generous on purpose: it tells "seconds" from "the old session timeout",
//! on a loaded machine. docs/brokers.md has the measured times.

mod common;

use common::*;
use leadscore::config::Secret;
use leadscore::dev::standin::StandinConfig;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 2;

/// Restarted to ready and processing: well under the 45 s it took.
const BACK_WITHIN: Duration = Duration::from_secs(30);

/// A scorer on `port` with the default session timeout and heartbeat (the shared test
/// environment shortens them), and `extra` settings on top.
fn scorer(rig: &ScorerRig, port: u16, extra: &[(&str, &str)]) -> Service {
    let mut settings = vec![("SCORER__BATCH_MAX_WAIT", "200ms")];
    settings.extend_from_slice(extra);
    let mut env = rig.scorer_env("state", port, &settings);
    env.retain(|(k, _)| {
        k != "LEADSCORE__KAFKA__SESSION_TIMEOUT_MS"
            && k != "LEADSCORE__KAFKA__HEARTBEAT_INTERVAL_MS"
    });
    Service::spawn("score", &env, port, rig.dir.path().join("scorer.log"))
}

/// Produces `n` events for users `{tag}-0..n` (spread over the partitions by key).
fn produce_emails(rig: &ScorerRig, tag: &str, n: usize) {
    let records: Vec<(String, String)> = (0..n)
        .map(|i| {
            let user = format!("{tag}-{i}");
            let line = format!(
                r#"{{"user_id":"{user}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"{user}@example.com"}}"#
            );
            (user, line)
        })
        .collect();
    produce_all(&producer(&rig.broker), &rig.names.input, &records);
}

fn consumed(scorer: &Service) -> f64 {
    scorer
        .get("/metrics")
        .map(|(_, text)| metric_sum(&text, "leadscore_events_consumed_total"))
        .unwrap_or(0.0)
}

fn ready(scorer: &Service) -> bool {
    scorer.get("/readyz").is_some_and(|(code, _)| code == 200)
}

/// Starts a scorer, lets it work, stops it with `stop`, starts it again and requires it ready
/// and scoring new events within [`BACK_WITHIN`] of the restart.
fn back_to_work_after(test: &str, stop: impl FnOnce(&mut Service), extra: &[(&str, &str)]) {
    let setup = ScorerRig::new(test, PARTITIONS);
    let port = free_port();
    let mut first = scorer(&setup, port, extra);
    wait_until(
        Duration::from_secs(60),
        "the first scorer to be ready",
        || ready(&first),
    );
    produce_emails(&setup, "before", 10);
    wait_until(Duration::from_secs(30), "the first events scored", || {
        consumed(&first) >= 10.0
    });
    stop(&mut first);
    drop(first);

    let restarted_at = Instant::now();
    let second = scorer(&setup, port, extra);
    wait_until(BACK_WITHIN, "the restarted scorer to be ready", || {
        ready(&second)
    });
    produce_emails(&setup, "after", 10);
    let left = BACK_WITHIN.saturating_sub(restarted_at.elapsed());
    wait_until(left, "the restarted scorer to score new events", || {
        consumed(&second) >= 10.0
    });
    eprintln!(
        "{test}: restart to ready and processing: {:.1} s",
        restarted_at.elapsed().as_secs_f64()
    );
}

#[test]
fn a_killed_scorer_is_back_and_scoring_within_seconds() {
    back_to_work_after("restart-kill", |s| s.kill9(), &[]);
}

#[test]
fn a_cleanly_stopped_scorer_is_back_and_scoring_within_seconds() {
    back_to_work_after(
        "restart-term",
        |s| assert!(s.terminate().success(), "clean stop"),
        &[],
    );
}

/// The same with static membership, as the Kubernetes manifests configure it.
#[test]
fn a_killed_static_member_is_back_and_scoring_within_seconds() {
    back_to_work_after(
        "restart-kill-static",
        |s| s.kill9(),
        &[("KAFKA__GROUP_INSTANCE_ID", "scorer-0")],
    );
}

#[test]
fn a_cleanly_stopped_static_member_is_back_and_scoring_within_seconds() {
    back_to_work_after(
        "restart-term-static",
        |s| assert!(s.terminate().success(), "clean stop"),
        &[("KAFKA__GROUP_INSTANCE_ID", "scorer-0")],
    );
}

/// The handoff too: killed, restarted, ready and reading score changes within seconds.
#[test]
fn a_killed_handoff_is_back_and_reading_within_seconds() {
    const SECRET: &str = "restart-test-secret";
    let rig = HandoffRig::new(
        "restart-handoff",
        PARTITIONS,
        StandinConfig {
            client_id: "leadscore-dev".into(),
            client_secret: Secret::new(SECRET),
            ..StandinConfig::default()
        },
    );
    let (broker, names, dir) = (&rig.broker, &rig.names, &rig.dir);
    let port = free_port();
    let env = rig.env(port, SECRET);
    let log = dir.path().join("handoff.log");
    let mut first = Service::spawn("handoff", &env, port, log.clone());
    wait_until(
        Duration::from_secs(60),
        "the first handoff to be ready",
        || ready(&first),
    );
    first.kill9();
    drop(first);

    let restarted_at = Instant::now();
    let second = Service::spawn("handoff", &env, port, log);
    wait_until(BACK_WITHIN, "the restarted handoff to be ready", || {
        ready(&second)
    });
    // Any record counts as read (a bad one goes to the dead-letter topic).
    let records: Vec<(String, &str)> = (0..10)
        .map(|i| (format!("u{i}"), "not a score change"))
        .collect();
    produce_all(&producer(broker), &names.output, &records);
    let left = BACK_WITHIN.saturating_sub(restarted_at.elapsed());
    wait_until(left, "the restarted handoff to read new records", || {
        second.get("/metrics").is_some_and(|(_, text)| {
            metric_sum(&text, "leadscore_handoff_changes_consumed_total") >= 10.0
        })
    });
    eprintln!(
        "restart-handoff: restart to ready and reading: {:.1} s",
        restarted_at.elapsed().as_secs_f64()
    );
}
