//! What a new owner of the handoff's partitions does with the state it restores.

use super::{config, keyed, lead_calls, Setup};
use crate::common::*;
use leadscore::dev::standin::Faults;
use leadscore::generator::salesforce_lead_id;
use std::time::Duration;

/// A new owner that restores a partition whose changelog checkpoint is ahead of the group's
/// committed offset (a commit lost to a rebalance, or a crash between the checkpoint and the
/// asynchronous commit) commits the checkpoint's position even when no new score change
/// arrives: otherwise the group's lag stays wrong until the next one. The scorer had the same
/// gap (tests/scorer_broker: `a_restored_checkpoint_ahead_of_the_group_commit_...`).
#[test]
fn a_restored_checkpoint_ahead_of_the_group_commit_is_committed_without_new_input() {
    let setup = Setup::new("ho-commit-restored", 2, config(Faults::default()));
    let records: Vec<_> = (0..40u64)
        .map(|i| {
            let user = format!("u{i}");
            // Every other one crosses the threshold.
            let score = if i % 2 == 0 { 120 } else { 40 };
            keyed(&user, i, score, "Open", &salesforce_lead_id(i as usize))
        })
        .collect();
    setup.send(&records);
    let mut first = setup.handoff();
    wait_group_caught_up(
        &setup.broker,
        &setup.names.group,
        &setup.names.output,
        records.len(),
        Duration::from_secs(60),
    );
    first.stop();
    let calls = lead_calls(&setup);
    assert!(calls > 0, "the first owner handed leads off");

    // A group with no commit at all (as a group whose commit was lost), beside the same
    // changelog and state: its checkpoints say everything is processed.
    let group = format!("{}-again", setup.names.group);
    let mut second = setup.handoff_with(&[("HANDOFF__GROUP_ID", &group)]);
    wait_group_caught_up(
        &setup.broker,
        &group,
        &setup.names.output,
        records.len(),
        Duration::from_secs(60),
    );
    second.stop();
    assert_eq!(
        lead_calls(&setup),
        calls,
        "the restored leads were not handed off again"
    );
}
