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
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

fn state_dir(rig: &ScorerRig) -> PathBuf {
    rig.dir.path().join("state")
}

/// A ready scorer, logging to `dir/<name>.log`; every one shares the store the reset clears.
fn ready_scorer(rig: &ScorerRig, name: &str) -> Service {
    let scorer = rig.scorer_logging_to(name, "state", &[]);
    wait_until(Duration::from_secs(60), "the scorer to be ready", || {
        scorer.get("/readyz").is_some_and(|(code, _)| code == 200)
    });
    scorer
}

/// The settings file the reset reads: the scorer's settings, as an operator would have them in
/// a file.
fn config_file(rig: &ScorerRig) -> PathBuf {
    let path = rig.dir.path().join("leadscore.toml");
    let text = format!(
        "[kafka]\nbootstrap_servers = {:?}\n\n[topics]\ninput = {:?}\nchangelog = {:?}\n\
         output = {:?}\ndlq = {:?}\n\n[scorer]\ngroup_id = {:?}\nstate_dir = {:?}\n",
        rig.broker.bootstrap,
        rig.names.input,
        rig.names.changelog,
        rig.names.output,
        rig.names.dlq,
        rig.names.group,
        state_dir(rig).display().to_string(),
    );
    std::fs::write(&path, text).expect("write the settings file");
    path
}

/// `leadscore reset --config FILE ARGS...`.
fn reset(rig: &ScorerRig, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("reset")
        .arg("--config")
        .arg(config_file(rig))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run leadscore reset")
}

/// Every score change published so far, as (user, score), in topic order.
fn changes(rig: &ScorerRig) -> Vec<(String, i64)> {
    read_all(&rig.broker, &rig.names.output)
        .iter()
        .filter_map(|r| r.payload.as_deref())
        .map(|p| {
            let c = codec::decode_change(Format::Json, p).expect("score changes decode");
            (c.user_id.to_string(), c.score)
        })
        .collect()
}

fn wait_for_changes(rig: &ScorerRig, n: usize) {
    wait_until(
        Duration::from_secs(90),
        &format!("{n} score changes"),
        || changes(rig).len() >= n,
    );
}

/// Waits until there are score changes and their count stops growing.
fn wait_settled(rig: &ScorerRig, what: &str, timeout: Duration) {
    let mut seen = 0;
    wait_until(timeout, what, || {
        std::thread::sleep(Duration::from_millis(1_500));
        let now = changes(rig).len();
        let settled = now > 0 && now == seen;
        seen = now;
        settled
    });
}

fn produce_events(rig: &ScorerRig) {
    rig.produce_generated(&traffic(100, 1_500, 3));
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

/// A refused reset changed nothing: the local store is there, and no tombstone was written to
/// the changelog after its first `before` records.
fn assert_untouched(rig: &ScorerRig, before: usize) {
    assert!(
        state_dir(rig).join("state.fjall").exists(),
        "the local store was touched"
    );
    let tombstones = read_all(&rig.broker, &rig.names.changelog)
        .iter()
        .skip(before)
        .filter(|r| r.payload.is_none())
        .count();
    assert_eq!(tombstones, 0, "the refused reset wrote to the changelog");
}

#[test]
fn reset_refuses_while_a_scorer_of_the_group_runs_and_changes_nothing() {
    let rig = ScorerRig::new("reset-refuses", 2);
    let mut scorer = ready_scorer(&rig, "scorer");
    produce_events(&rig);
    wait_for_changes(&rig, 1);
    let changelog_before = read_all(&rig.broker, &rig.names.changelog).len();

    let out = reset(&rig, &["--yes"]);
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
    assert_untouched(&rig, changelog_before);

    // Without the group check, the live scorer's lock on its state directory refuses it (it
    // deleted the store under the running scorer: an outside review).
    let out = reset(&rig, &["--skip-group-check", "--yes"]);
    assert!(!out.status.success(), "reset ran beside a live scorer");
    let err = stderr(&out);
    assert!(err.contains("is in use by another process"), "{err}");
    assert_untouched(&rig, changelog_before);
    scorer.stop();
}

#[test]
fn after_a_reset_a_new_scorer_starts_over_from_the_beginning_of_the_input() {
    let rig = ScorerRig::new("reset-starts-over", 2);
    let mut first = ready_scorer(&rig, "first");
    produce_events(&rig);
    // All events scored: the state in the changelog stops changing once every input record is
    // consumed; wait for the changes to stop growing.
    wait_settled(&rig, "the first scorer to finish", Duration::from_secs(90));
    first.stop();
    let first_changes = changes(&rig);
    let first_states = rig.changelog_states();
    assert!(!first_states.is_empty());

    // The mock cannot list a group's members: the operator vouches that the scorer is
    // stopped. Elsewhere (tansu) the group check runs, and the group's offsets are deleted.
    let check: &[&str] = if rig.broker.kind == BrokerKind::Mock {
        &["--skip-group-check"]
    } else {
        &[]
    };
    // Without --yes: the plan, exit status 1, nothing changed.
    let out = reset(&rig, check);
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
        plan.contains(&state_dir(&rig).join("state.fjall").display().to_string()),
        "{plan}"
    );
    assert!(state_dir(&rig).join("state.fjall").exists());
    assert_eq!(rig.changelog_states(), first_states);

    // With --yes: done, the local store gone, the changelog restores to nothing.
    let out = reset(&rig, &[check, &["--yes"]].concat());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("starts over"), "{}", stdout(&out));
    assert!(!state_dir(&rig).join("state.fjall").exists());
    assert!(
        state_dir(&rig).exists(),
        "only the store, not the state directory, is deleted"
    );
    assert!(rig.changelog_states().is_empty());

    // A new scorer re-scores every event from the input's beginning, to the same state.
    let mut second = ready_scorer(&rig, "second");
    wait_for_changes(&rig, 2 * first_changes.len());
    wait_settled(&rig, "the second scorer to finish", Duration::from_secs(60));
    second.stop();
    let all = changes(&rig);
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
    assert_eq!(rig.changelog_states(), first_states);
}

/// Found by an outside check: with no broker at the configured address the reset waited for
/// the group check and then advised `--skip-group-check`, naming no address. It now says that no
/// broker answered, and where, and changes nothing.
#[test]
fn a_reset_with_no_broker_names_the_address_and_does_not_advise_skipping_the_check() {
    let dir = TempDir::new("reset-no-broker");
    let config = dir.path().join("leadscore.toml");
    std::fs::write(&config, "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n").expect("config");
    let out = Command::new(BIN)
        .arg("reset")
        .arg("--config")
        .arg(&config)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .output()
        .expect("run leadscore reset");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no Kafka broker answered at \"127.0.0.1:1\""),
        "{stderr}"
    );
    assert!(!stderr.contains("--skip-group-check"), "{stderr}");
}
