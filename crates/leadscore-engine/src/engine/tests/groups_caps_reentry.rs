//! SPEC section 3 rules 4 and 5: groups, caps, clamping and re-entry.

use super::*;

// 4. Groups and caps

#[test]
fn an_event_scores_through_the_first_matching_group_in_file_order() {
    let src = BASE.replace(
        "[[group]]\nname = \"unsubscribed\"",
        "[[group]]\nname = \"also demo\"\ndelta = 50\ntriggers = [{ type = \"custom_event\", name = \"demo_requested\" }]\n\n[[group]]\nname = \"unsubscribed\"",
    );
    let e = Engine::new(crate::rules::parse_str(&src, "t.toml").expect("rules"));
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
    let r = run(&rules(""), &[email("u", T0), pro, free, bare]);
    assert_eq!(
        r.outcomes[1..],
        [Outcome::Scored, Outcome::NoGroup, Outcome::NoGroup]
    );
    assert_eq!(r.score("u"), 5);
}

#[test]
fn a_cap_cuts_a_delta_partly() {
    // Cap 12 per day, delta 5: 5 + 5 + 2 (cut) + 0.
    let r = run(
        &rules(""),
        &[
            email("u", T0),
            custom("u", T0 + H, "demo_requested"),
            custom("u", T0 + 2 * H, "demo_requested"),
            custom("u", T0 + 3 * H, "demo_requested"),
            custom("u", T0 + 4 * H, "demo_requested"),
        ],
    );
    assert_eq!(r.score("u"), 12);
    let deltas: Vec<i64> = r.changes.iter().map(|c| c.delta).collect();
    assert_eq!(deltas, [5, 5, 2]);
    assert_eq!(r.outcomes[4], Outcome::Unchanged);
}

#[test]
fn a_spent_cap_does_not_fall_through_to_a_later_group() {
    let src = BASE.replace(
        "[[group]]\nname = \"unsubscribed\"",
        "[[group]]\nname = \"demo fallback\"\ndelta = 1\ntriggers = [{ type = \"custom_event\", name = \"demo_requested\" }]\n\n[[group]]\nname = \"unsubscribed\"",
    );
    let e = Engine::new(crate::rules::parse_str(&src, "t.toml").expect("rules"));
    let mut events = vec![email("u", T0)];
    events.extend((1..=4).map(|i| custom("u", T0 + i * H, "demo_requested")));
    assert_eq!(run(&e, &events).score("u"), 12);
}

#[test]
fn cap_windows_are_aligned_to_the_epoch_in_utc() {
    // 23:00 and 01:00 the next day fall in different daily windows.
    let mut events = vec![email("u", T0)];
    events.extend((0..3).map(|i| custom("u", T0 + 23 * H + i * M, "demo_requested")));
    events.extend((0..3).map(|i| custom("u", T0 + D + H + i * M, "demo_requested")));
    let r = run(&rules(""), &events);
    let deltas: Vec<i64> = r.changes.iter().map(|c| c.delta).collect();
    assert_eq!(deltas, [5, 5, 2, 5, 5, 2]);
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
    let deltas: Vec<i64> = r.changes.iter().map(|c| c.delta).collect();
    assert_eq!(deltas, [5, 2, -1, -1, -1, -1, 4, -1, -1, -1, 1]);
    assert_eq!(r.score("u"), 5);
}

#[test]
fn the_score_is_clamped_to_min() {
    let e = rules("[score]\nmin = 0\n");
    let r = run(
        &e,
        &[
            email("u", T0),
            session("u", T0 + 1),
            custom("u", T0 + 2, "email_unsubscribed"),
            custom("u", T0 + 3, "email_unsubscribed"),
        ],
    );
    assert_eq!(r.score("u"), 0);
    assert_eq!(r.outcomes[3], Outcome::Unchanged);
    assert_eq!(r.changes.len(), 2);
}

#[test]
fn a_change_of_zero_does_not_restart_the_inactivity_timer() {
    let e = rules("[score]\nmin = 0\n[inactivity]\nwindow = \"1d\"\ndelta = -1\n");
    let r = run(
        &e,
        &[
            email("u", T0),
            session("u", T0 + H),
            custom("u", T0 + 2 * H, "email_unsubscribed"),
            custom("u", T0 + 3 * H, "email_unsubscribed"),
        ],
    );
    assert_eq!(r.user("u").timer_due, Some(T0 + 2 * H + D));
    assert_eq!(r.user("u").last_change, Some(T0 + 2 * H));
}

// 5. Re-entry

#[test]
fn no_group_applies_within_the_reentry_window() {
    let src = BASE.replace(
        "{ type = \"external_score\" }]",
        "{ type = \"external_score\" }]\nreentry_window = \"1h\"",
    );
    let e = Engine::new(crate::rules::parse_str(&src, "t.toml").expect("rules"));
    let r = run(
        &e,
        &[
            email("u", T0),
            session("u", T0 + M),
            session("u", T0 + M + H - 1),
            session("u", T0 + M + H),
        ],
    );
    assert_eq!(
        r.outcomes[1..],
        [Outcome::Scored, Outcome::ReentryWait, Outcome::Scored]
    );
    assert_eq!(r.score("u"), 2);
}

#[test]
fn a_late_event_before_the_last_change_does_not_score() {
    let r = run(
        &rules(""),
        &[
            email("u", T0),
            session("u", T0 + H),
            session("u", T0 + 30 * M),
        ],
    );
    assert_eq!(r.outcomes[2], Outcome::ReentryWait);
    assert_eq!(r.score("u"), 1);
}

#[test]
fn a_late_event_after_the_last_change_still_scores_and_does_not_move_the_clock() {
    let r = run(
        &rules(""),
        &[
            email("u", T0),
            session("u", T0 + H),
            session("v", T0 + 5 * H),
            session("u", T0 + 2 * H),
        ],
    );
    assert_eq!(r.outcomes[3], Outcome::Scored);
    assert_eq!(r.score("u"), 2);
    assert_eq!(r.partition.clock(), Some(T0 + 5 * H));
}
