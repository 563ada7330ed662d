//! `leadscore reset` against a broker (the embedded mock by default): it refuses while a scorer
//! of the group runs, says what it would do without `--yes`, and after a reset a new scorer
//! starts over from an empty state, re-scoring the input from its beginning.
//!
//! The mock implements neither ListGroups/DescribeGroups (so the group check cannot succeed
//! there, and the successful reset passes `--skip-group-check` with the scorer stopped) nor
//! DeleteGroups (so the committed offsets stay: the checkpoints the reset writes take
//! precedence over them, which is what this shows). With `LEADSCORE_TEST_BROKER=tansu` the
//! refusal names the group's member and the reset runs with the group check.

mod common;

use common::*;
use leadscore::codec::{self, Format};
use leadscore::generator::{self, GeneratorConfig};
use rdkafka::producer::Producer;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

struct Rig {
    broker: Broker,
    names: Names,
    dir: TempDir,
}

impl Rig {
    fn new(test: &str) -> Rig {
        let names = Names::new(test);
        let broker = Broker::start(&[
            (&names.input, 2, false),
            (&names.changelog, 2, true),
            (&names.output, 2, false),
            (&names.dlq, 2, false),
        ]);
        Rig {
            broker,
            names,
            dir: TempDir::new(test),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn scorer(&self, name: &str) -> Service {
        let port = free_port();
        let mut env = scorer_env(
            &self.broker,
            &self.names,
            &self.state_dir(),
            &rules_path("seed-canvas.toml"),
            port,
        );
        env.push(("LEADSCORE__SCORER__BATCH_MAX_WAIT".into(), "300ms".into()));
        let scorer = Service::spawn(
            "score",
            &env,
            port,
            self.dir.path().join(format!("{name}.log")),
        );
        wait_until(Duration::from_secs(60), "the scorer to be ready", || {
            scorer.get("/readyz").is_some_and(|(code, _)| code == 200)
        });
        scorer
    }

    /// The settings file the reset reads: the scorer's settings, as an operator would have
    /// them in a file.
    fn config_file(&self) -> PathBuf {
        let path = self.dir.path().join("leadscore.toml");
        let text = format!(
            "[kafka]\nbootstrap_servers = {:?}\n\n[topics]\ninput = {:?}\nchangelog = {:?}\n\
             output = {:?}\ndlq = {:?}\n\n[scorer]\ngroup_id = {:?}\nstate_dir = {:?}\n",
            self.broker.bootstrap,
            self.names.input,
            self.names.changelog,
            self.names.output,
            self.names.dlq,
            self.names.group,
            self.state_dir().display().to_string(),
        );
        std::fs::write(&path, text).expect("write the settings file");
        path
    }

    /// `leadscore reset --config FILE ARGS...`.
    fn reset(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("reset")
            .arg("--config")
            .arg(self.config_file())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .expect("run leadscore reset")
    }

    /// Every score change published so far, as (user, score), in topic order.
    fn changes(&self) -> Vec<(String, i64)> {
        read_all(&self.broker, &self.names.output)
            .iter()
            .filter_map(|r| r.payload.as_deref())
            .map(|p| {
                let c = codec::decode_change(Format::Json, p).expect("score changes decode");
                (c.user_id, c.score)
            })
            .collect()
    }

    fn wait_for_changes(&self, n: usize) {
        wait_until(
            Duration::from_secs(90),
            &format!("{n} score changes"),
            || self.changes().len() >= n,
        );
    }
}

fn produce_events(rig: &Rig) {
    let cfg = GeneratorConfig {
        users: 100,
        events: 1_500,
        seed: 3,
        ..GeneratorConfig::default()
    };
    let p = producer(&rig.broker);
    for e in generator::generate(&cfg) {
        let payload = codec::encode_event(Format::Json, &e);
        produce(&p, &rig.names.input, Some(e.user_id.as_bytes()), &payload);
    }
    p.flush(Duration::from_secs(10)).expect("flush");
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A multiset of changes: the order of two partitions' changes interleaves differently from
/// run to run, each user's own do not.
fn by_user(changes: &[(String, i64)]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (user, score) in changes {
        out.entry(user.clone()).or_default().push(*score);
    }
    out
}

#[test]
fn reset_refuses_while_a_scorer_of_the_group_runs_and_changes_nothing() {
    let rig = Rig::new("reset-refuses");
    let mut scorer = rig.scorer("scorer");
    produce_events(&rig);
    rig.wait_for_changes(1);
    let changelog_before = read_all(&rig.broker, &rig.names.changelog).len();

    let out = rig.reset(&["--yes"]);
    assert!(!out.status.success(), "reset ran beside a live scorer");
    let err = stderr(&out);
    if rig.broker.kind == BrokerKind::Mock {
        // The mock cannot list members: refused, with the way out for a stopped group.
        assert!(
            err.contains("cannot list the members of consumer group")
                && err.contains(&rig.names.group)
                && err.contains("--skip-group-check"),
            "{err}"
        );
    } else {
        assert!(
            err.contains("active member") && err.contains(&rig.names.group),
            "the refusal names the group and its members: {err}"
        );
    }
    assert!(
        rig.state_dir().join("state.fjall").exists(),
        "the local store was touched"
    );
    let tombstones = read_all(&rig.broker, &rig.names.changelog)
        .iter()
        .skip(changelog_before)
        .filter(|r| r.payload.is_none())
        .count();
    assert_eq!(tombstones, 0, "the refused reset wrote to the changelog");
    assert!(scorer.terminate().success());
}

#[test]
fn after_a_reset_a_new_scorer_starts_over_from_the_beginning_of_the_input() {
    let rig = Rig::new("reset-starts-over");
    let mut first = rig.scorer("first");
    produce_events(&rig);
    // All events scored: the state in the changelog stops changing once every input record is
    // consumed; wait for the changes to stop growing.
    let mut seen = 0;
    wait_until(
        Duration::from_secs(90),
        "the first scorer to finish",
        || {
            std::thread::sleep(Duration::from_millis(1_500));
            let now = rig.changes().len();
            let settled = now > 0 && now == seen;
            seen = now;
            settled
        },
    );
    assert!(first.terminate().success());
    let first_changes = rig.changes();
    let first_states = states_from_changelog(&rig.broker, &rig.names.changelog);
    assert!(!first_states.is_empty());

    // The mock cannot list a group's members: the operator vouches that the scorer is
    // stopped. Elsewhere (tansu) the group check runs, and the group's offsets are deleted.
    let check: &[&str] = if rig.broker.kind == BrokerKind::Mock {
        &["--skip-group-check"]
    } else {
        &[]
    };
    // Without --yes: the plan, exit status 1, nothing changed.
    let out = rig.reset(check);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let plan = stdout(&out);
    assert!(
        plan.contains("tombstone every key") && plan.contains("--yes"),
        "{plan}"
    );
    assert!(
        plan.contains(&rig.state_dir().join("state.fjall").display().to_string()),
        "{plan}"
    );
    assert!(rig.state_dir().join("state.fjall").exists());
    assert_eq!(
        states_from_changelog(&rig.broker, &rig.names.changelog),
        first_states
    );

    // With --yes: done, the local store gone, the changelog restores to nothing.
    let out = rig.reset(&[check, &["--yes"]].concat());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("starts over"), "{}", stdout(&out));
    assert!(!rig.state_dir().join("state.fjall").exists());
    assert!(
        rig.state_dir().exists(),
        "only the store, not the state directory, is deleted"
    );
    assert!(states_from_changelog(&rig.broker, &rig.names.changelog).is_empty());

    // A new scorer re-scores every event from the input's beginning, to the same state.
    let mut second = rig.scorer("second");
    rig.wait_for_changes(2 * first_changes.len());
    let mut seen = 0;
    wait_until(
        Duration::from_secs(60),
        "the second scorer to finish",
        || {
            std::thread::sleep(Duration::from_millis(1_500));
            let now = rig.changes().len();
            let settled = now == seen;
            seen = now;
            settled
        },
    );
    assert!(second.terminate().success());
    let all = rig.changes();
    assert_eq!(all.len(), 2 * first_changes.len(), "every change once more");
    let mut expected = by_user(&first_changes);
    for scores in expected.values_mut() {
        let twice = scores.clone();
        scores.extend(twice);
    }
    assert_eq!(
        by_user(&all),
        expected,
        "the same changes, user by user, twice"
    );
    assert_eq!(
        states_from_changelog(&rig.broker, &rig.names.changelog),
        first_states
    );
}
