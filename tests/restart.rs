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
use rdkafka::producer::Producer;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 2;

/// Restarted to ready and processing: well under the 45 s it took.
const BACK_WITHIN: Duration = Duration::from_secs(30);

struct Setup {
    broker: Broker,
    names: Names,
    dir: TempDir,
}

impl Setup {
    fn new(test: &str) -> Setup {
        let names = Names::new(test);
        let broker = Broker::start(&[
            (&names.input, PARTITIONS, false),
            (&names.changelog, PARTITIONS, true),
            (&names.output, PARTITIONS, false),
            (&names.dlq, PARTITIONS, false),
        ]);
        Setup {
            broker,
            names,
            dir: TempDir::new(test),
        }
    }

    /// A scorer with the default session timeout and heartbeat (the shared test environment
    /// shortens them), and `extra` settings on top.
    fn scorer(&self, port: u16, extra: &[(&str, &str)]) -> Service {
        let mut env: Vec<(String, String)> = scorer_env(
            &self.broker,
            &self.names,
            &self.dir.path().join("state"),
            &rules_path("seed-canvas.toml"),
            port,
        )
        .into_iter()
        .filter(|(k, _)| {
            k != "LEADSCORE__KAFKA__SESSION_TIMEOUT_MS"
                && k != "LEADSCORE__KAFKA__HEARTBEAT_INTERVAL_MS"
        })
        .collect();
        env.push(("LEADSCORE__SCORER__BATCH_MAX_WAIT".into(), "200ms".into()));
        for (k, v) in extra {
            env.push((format!("LEADSCORE__{k}"), v.to_string()));
        }
        Service::spawn("score", &env, port, self.dir.path().join("scorer.log"))
    }

    /// Produces `n` events for users `{tag}-0..n` (spread over the partitions by key).
    fn produce(&self, tag: &str, n: usize) {
        let p = producer(&self.broker);
        for i in 0..n {
            let user = format!("{tag}-{i}");
            let line = format!(
                r#"{{"user_id":"{user}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"{user}@example.com"}}"#
            );
            produce(
                &p,
                &self.names.input,
                Some(user.as_bytes()),
                line.as_bytes(),
            );
        }
        p.flush(Duration::from_secs(10)).expect("flush");
    }
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
    let setup = Setup::new(test);
    let port = free_port();
    let mut first = setup.scorer(port, extra);
    wait_until(
        Duration::from_secs(60),
        "the first scorer to be ready",
        || ready(&first),
    );
    setup.produce("before", 10);
    wait_until(Duration::from_secs(30), "the first events scored", || {
        consumed(&first) >= 10.0
    });
    stop(&mut first);
    drop(first);

    let restarted_at = Instant::now();
    let second = setup.scorer(port, extra);
    wait_until(BACK_WITHIN, "the restarted scorer to be ready", || {
        ready(&second)
    });
    setup.produce("after", 10);
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
    let p = producer(broker);
    for i in 0..10 {
        let key = format!("u{i}");
        produce(
            &p,
            &names.output,
            Some(key.as_bytes()),
            b"not a score change",
        );
    }
    p.flush(Duration::from_secs(10)).expect("flush");
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
