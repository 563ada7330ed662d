//! SPEC section 3 rules 4 and 5: groups, caps, clamping and re-entry.

use super::*;
use crate::engine::MAX_CAP_WINDOWS;

// 4. Groups and caps

#[test]
fn an_event_scores_through_the_first_matching_group_in_file_order() {
    let e = rules_on("", &demo_group_before_unsubscribed("also demo", 50));
    let r = run(&e, &[email("u", T0), custom("u", T0 + 1, "demo_requested")]);
    assert_eq!(r.score("u"), 5);
    assert_eq!(r.changes[0].reason.group.as_deref(), Some("high intent"));
}

#[test]
fn property_predicates_select_the_trigger() {
    let mut pro = custom("u", T0 + 1, "pricing_viewed");
    pro.properties = vec![("plan".into(), Scalar::Str("pro".into()))];
    let mut free = custom("u", T0 + 2, "pricing_viewed");
    free.properties = vec![("plan".into(), Scalar::Str("free".into()))];
    let bare = custom("u", T0 + 3, "pricing_viewed");
    let outcomes = [Outcome::Scored, Outcome::NoGroup, Outcome::NoGroup];
    run_expecting(
        &rules(""),
        &[email("u", T0), pro, free, bare],
        1,
        &outcomes,
        5,
    );
}

/// An email at T0, then a demo request at each of `times`.
fn demos(times: impl IntoIterator<Item = Millis>) -> Vec<Event> {
    let mut events = vec![email("u", T0)];
    events.extend(times.into_iter().map(|t| custom("u", t, "demo_requested")));
    events
}

#[test]
fn a_cap_cuts_a_delta_partly() {
    // Cap 12 per day, delta 5: 5 + 5 + 2 (cut) + 0.
    let r = run_base(&demos((1..=4).map(|i| T0 + i * H)));
    assert_eq!(r.score("u"), 12);
    assert_eq!(r.deltas(), [5, 5, 2]);
    assert_eq!(r.outcomes[4], Outcome::Unchanged);
}

#[test]
fn a_spent_cap_does_not_fall_through_to_a_later_group() {
    let e = rules_on("", &demo_group_before_unsubscribed("demo fallback", 1));
    let events = demos((1..=4).map(|i| T0 + i * H));
    assert_eq!(run(&e, &events).score("u"), 12);
}

#[test]
fn cap_windows_are_aligned_to_the_epoch_in_utc() {
    // 23:00 and 01:00 the next day fall in different daily windows.
    let late = (0..3).map(|i| T0 + 23 * H + i * M);
    let r = run_base(&demos(late.chain((0..3).map(|i| T0 + D + H + i * M))));
    assert_eq!(r.deltas(), [5, 5, 2, 5, 5, 2]);
}

/// The daily windows (days since the epoch) of u's cap usage, sorted.
fn cap_days(r: &Run) -> Vec<i64> {
    let mut days: Vec<i64> = r.users["u"].caps().iter().map(|c| c.window).collect();
    days.sort_unstable();
    days
}

#[test]
fn cap_usage_is_kept_while_an_event_can_still_score_in_its_window() {
    let day0 = T0 / D;
    let demo = |t| custom("u", t, "demo_requested");
    // Day 0: 5 + 5. A demo on day 3 finds the re-entry start still on day 0 (its last change),
    // so day 0's usage stays, and a late external score that moves the start back lets a late
    // day-0 demo meet the 2 points the cap has left (SPEC 3.4), not a fresh cap.
    let mut events = demos([T0 + H, T0 + 2 * H]);
    events.push(demo(T0 + 3 * D));
    let r = run_base(&events);
    assert_eq!(cap_days(&r), [day0, day0 + 3]);
    events.push(external("u", T0 - D, ScoreOp::Set(0), None));
    events.push(demo(T0 + 3 * H));
    let r = run_base(&events);
    assert_eq!(r.changes.last().map(|c| c.delta), Some(2));
    // Once a later change has moved the start past day 0, the clock is more than a day beyond
    // it and more than the late horizon (a week), day 0 is forgotten: the next capped event
    // drops it. Within the week it stays.
    let r = run_base(&demos([T0 + H, T0 + 2 * H, T0 + 3 * D, T0 + 4 * D]));
    assert_eq!(cap_days(&r), [day0, day0 + 3, day0 + 4]);
    let mut events = demos([T0 + H, T0 + 2 * H, T0 + 9 * D, T0 + 10 * D]);
    let r = run_base(&events);
    assert_eq!(cap_days(&r), [day0 + 9, day0 + 10]);
    events.push(demo(T0 + 10 * D + H));
    assert_eq!(cap_days(&run_base(&events)), [day0 + 9, day0 + 10]);
}

/// SPEC 3.4, found by an outside-style check: an hourly cap's usage was dropped two hours
/// later (its window ended before the re-entry start and a period before the clock), so after
/// a late external score moved the re-entry start back, a late event in that hour met a fresh
/// cap. Usage within a week of the clock is now kept whatever the re-entry start.
#[test]
fn a_late_event_meets_its_hours_cap_after_a_late_external_score() {
    let e = rules_on(
        "",
        r#"
[entry]
on = [{ type = "email_added" }]
[[group]]
name = "visits"
delta = 3
cap = { points = 4, per = "1h" }
triggers = [{ type = "session_start" }]
"#,
    );
    let events = [
        email("u", T0 + 10 * H),
        session("u", T0 + 10 * H + 10 * M),
        session("u", T0 + 12 * H + 30 * M),
        session("u", T0 + 14 * H),
        external("u", T0 + 9 * H, ScoreOp::Set(100), None),
        session("u", T0 + 10 * H + 20 * M),
    ];
    let r = run(&e, &events);
    // The 10:00 hour had 3 of its 4 points applied: the late session gets the 1 left.
    assert_eq!(r.changes.last().map(|c| (c.delta, c.score)), Some((1, 101)));
    // More than a week later day 0's hours are forgotten once the group scores again (the
    // hour of the change before is kept: an event in it can still pass re-entry).
    let mut later = events.to_vec();
    later.push(session("u", T0 + 9 * D));
    later.push(session("u", T0 + 9 * D + 2 * H));
    let r = run(&e, &later);
    let mut hours: Vec<i64> = r.users["u"].caps().iter().map(|c| c.window).collect();
    hours.sort_unstable();
    assert_eq!(hours, [(T0 + 9 * D) / H, (T0 + 9 * D + 2 * H) / H]);
}

#[test]
fn cap_windows_stay_bounded_when_late_external_scores_keep_moving_the_reentry_start_back() {
    // Each late external score moves the re-entry start back to before every window, so none
    // can be dropped by time: the per-group bound keeps the latest.
    let days_run = MAX_CAP_WINDOWS as i64 + 24;
    let mut events = vec![email("u", T0)];
    for day in 0..days_run {
        events.push(external("u", T0 - D, ScoreOp::Set(0), None));
        events.push(custom("u", T0 + day * D + H, "demo_requested"));
    }
    let r = run_base(&events);
    let days = cap_days(&r);
    assert_eq!(days.len(), MAX_CAP_WINDOWS);
    assert_eq!(days.last(), Some(&(T0 / D + days_run - 1)));
    assert_eq!(
        days.first(),
        Some(&(T0 / D + days_run - MAX_CAP_WINDOWS as i64))
    );
    // Every demo still scored its 5 within its own day's cap.
    assert_eq!(r.score("u"), 5);
    assert_eq!(
        r.changes.iter().filter(|c| c.delta == 5).count() as i64,
        days_run
    );
}

#[test]
fn a_cap_counts_what_the_group_applied_after_clamping() {
    // max 7, cap 12 a day: the second demo applies only 2 (clamped), so it counts 2, not 5.
    let e = rules("[score]\nmax = 7\n");
    let unsub = |t| custom("u", t, "email_unsubscribed");
    let demo = |t| custom("u", t, "demo_requested");
    let r = run(
        &e,
        &[
            email("u", T0),
            demo(T0 + 1),
            demo(T0 + 2),
            unsub(T0 + 3),
            unsub(T0 + 4),
            unsub(T0 + 5),
            unsub(T0 + 6),
            demo(T0 + 7),
            unsub(T0 + 8),
            unsub(T0 + 9),
            unsub(T0 + 10),
            demo(T0 + 11),
        ],
    );
    assert_eq!(r.deltas(), [5, 2, -1, -1, -1, -1, 4, -1, -1, -1, 1]);
    assert_eq!(r.score("u"), 5);
}

/// An email at T0, a session at `step`, then two unsubscribes at `2 * step` and `3 * step`.
fn session_then_two_unsubscribes(step: Millis) -> [Event; 4] {
    [
        email("u", T0),
        session("u", T0 + step),
        custom("u", T0 + 2 * step, "email_unsubscribed"),
        custom("u", T0 + 3 * step, "email_unsubscribed"),
    ]
}

#[test]
fn the_score_is_clamped_to_min() {
    let e = rules("[score]\nmin = 0\n");
    let r = run(&e, &session_then_two_unsubscribes(1));
    assert_eq!(r.score("u"), 0);
    assert_eq!(r.outcomes[3], Outcome::Unchanged);
    assert_eq!(r.changes.len(), 2);
}

#[test]
fn a_change_of_zero_does_not_restart_the_inactivity_timer() {
    let e = rules("[score]\nmin = 0\n[inactivity]\nwindow = \"1d\"\ndelta = -1\n");
    let r = run(&e, &session_then_two_unsubscribes(H));
    assert_eq!(r.user("u").timer_due, Some(T0 + 2 * H + D));
    assert_eq!(r.user("u").last_change, Some(T0 + 2 * H));
}

// 5. Re-entry

#[test]
fn no_group_applies_within_the_reentry_window() {
    let events = [
        email("u", T0),
        session("u", T0 + M),
        session("u", T0 + M + H - 1),
        session("u", T0 + M + H),
    ];
    let outcomes = [Outcome::Scored, Outcome::ReentryWait, Outcome::Scored];
    run_expecting(&rules_on("", &reentry("1h")), &events, 1, &outcomes, 2);
}

#[test]
fn a_late_event_before_the_last_change_does_not_score() {
    let events = session_after_email(T0 + H, [session("u", T0 + 30 * M)]);
    run_expecting(&rules(""), &events, 2, &[Outcome::ReentryWait], 1);
}

#[test]
fn a_late_event_after_the_last_change_still_scores_and_does_not_move_the_clock() {
    let late = [session("v", T0 + 5 * H), session("u", T0 + 2 * H)];
    let events = session_after_email(T0 + H, late);
    let r = run_expecting(&rules(""), &events, 3, &[Outcome::Scored], 2);
    assert_eq!(r.partition.clock(), Some(T0 + 5 * H));
}
