//! SPEC section 3 rule 7: inactivity decay and its timer.

use super::*;

// 7. Inactivity

/// Rules decaying to a floor of 0, and u enrolled with three points by T0 + 2.
fn three_points_over_a_floor() -> (Engine, Vec<Event>) {
    let mut events = vec![email("u", T0)];
    events.extend((0..3).map(|i| session("u", T0 + i)));
    (rules(&format!("[score]\nmin = 0\n{DECAY}")), events)
}

#[test]
fn inactivity_decays_the_score_a_window_after_the_last_change() {
    let e = rules(DECAY);
    let events = session_after_email(T0, [session("u", T0 + H), session("v", T0 + 7 * D + H)]);
    let r = run(&e, &events);
    assert_eq!(r.score("u"), 1);
    let c = &r.changes[2];
    assert_eq!(
        (c.reason.kind, c.time, c.delta),
        (ReasonKind::Inactivity, T0 + H + 7 * D, -1)
    );
    assert_eq!(r.user("u").timer_due, Some(T0 + H + 14 * D));
}

#[test]
fn an_event_at_exactly_the_decay_time_sees_the_decay_first() {
    let e = rules(DECAY);
    let r = run(
        &e,
        &session_after_email(T0, [session("u", T0 + 1), session("u", T0 + 1 + 7 * D)]),
    );
    assert_eq!(
        r.kinds(),
        [
            (ReasonKind::Rule, 1),
            (ReasonKind::Rule, 1),
            (ReasonKind::Inactivity, -1),
            (ReasonKind::Rule, 1)
        ]
    );
    assert_eq!(r.score("u"), 2);
}

#[test]
fn one_millisecond_before_the_decay_time_nothing_decays() {
    let e = rules(DECAY);
    let r = run(&e, &session_after_email(T0, [session("v", T0 + 7 * D - 1)]));
    assert_eq!(r.score("u"), 1);
    assert_eq!(r.changes.len(), 1);
}

#[test]
fn the_timer_repeats_every_window_until_the_change_clamps_to_zero() {
    let (e, events) = three_points_over_a_floor();
    // Clock advances one window at a time: one change per window.
    let mut r = run(&e, &events);
    for w in 1..=5 {
        r.advance(&e, T0 + 2 + w * 7 * D);
    }
    assert_eq!(r.score("u"), 0);
    let decays: Vec<(Millis, u32)> = r.decays().iter().map(|c| (c.time, c.windows)).collect();
    assert_eq!(
        decays,
        [
            (T0 + 2 + 7 * D, 1),
            (T0 + 2 + 14 * D, 1),
            (T0 + 2 + 21 * D, 1)
        ]
    );
    assert_eq!(r.user("u").timer_due, None);
    assert_eq!(r.partition.pending_timers(), 0);
}

#[test]
fn one_clock_advance_over_many_windows_publishes_one_change_with_their_total() {
    let (e, events) = three_points_over_a_floor();
    let r = run_until(&e, &events, Some(T0 + 100 * D));
    let decays = r.decays();
    assert_eq!(decays.len(), 1);
    let c = decays[0];
    assert_eq!((c.previous_score, c.score, c.delta), (3, 0, -3));
    // The time of the last window applied, and how many windows the change covers.
    assert_eq!((c.time, c.windows), (T0 + 2 + 21 * D, 3));
    // The last window's due time, and the count of u's changes it ends at: three sessions and
    // three windows.
    assert_eq!(
        c.event_id().to_string(),
        format!("inactivity:u@{}#6", T0 + 2 + 21 * D)
    );
    assert_eq!(r.user("u").changes, 6);
    assert_eq!(r.user("u").last_change, Some(T0 + 2 + 21 * D));
    assert_eq!(r.user("u").timer_due, None);
    assert_eq!(r.partition.pending_timers(), 0);
}

/// Two distinct decays of one user can cover windows ending at the same due time: a late event
/// re-arms the timer at a time already decayed past, and the next clock advance fires the same
/// windows again from the new score. They are two changes, so they need two ids: a consumer that
/// drops duplicates by id must still add up to the score.
#[test]
fn a_decay_repeated_after_a_late_event_has_its_own_id() {
    let e = rules(DECAY);
    let set = |t: Millis| external("u", t, ScoreOp::Set(10), None);
    let r = run(
        &e,
        &[
            set(T0),
            session("v", T0 + 21 * D),
            // Late: re-arms u's timer at T0 + 7d, three windows behind the clock.
            set(T0),
            session("v", T0 + 21 * D),
        ],
    );
    let decays = r.decays();
    assert_eq!(decays.len(), 2);
    for c in &decays {
        assert_eq!((c.time, c.windows, c.delta), (T0 + 21 * D, 3, -3));
    }
    assert_ne!(
        decays[0].event_id().to_string(),
        decays[1].event_id().to_string()
    );
    // Deduplicated by id, the changes still add up to the score.
    let mut seen = std::collections::HashSet::new();
    let net: i64 = r
        .changes
        .iter()
        .filter(|c| &*c.user_id == "u" && seen.insert(c.event_id().to_string()))
        .map(|c| c.delta)
        .sum();
    assert_eq!((net, r.score("u")), (7, 7));
}

/// Issue 9.2: a score of 10^12 with a one-minute window and a year of silence is one change,
/// computed in closed form, not half a million.
#[test]
fn a_year_of_one_minute_windows_costs_one_change() {
    let e = rules("[inactivity]\nwindow = \"1m\"\ndelta = -1\n");
    let r = run_until(
        &e,
        &[external("u", T0, ScoreOp::Set(1_000_000_000_000), None)],
        Some(T0 + 365 * D),
    );
    let windows = 365 * 24 * 60;
    assert_eq!(r.changes.len(), 2, "the external score and one decay");
    let c = &r.changes[1];
    assert_eq!(c.reason.kind, ReasonKind::Inactivity);
    assert_eq!(c.windows, windows as u32);
    assert_eq!(c.delta, -windows);
    assert_eq!(r.score("u"), 1_000_000_000_000 - windows);
    assert_eq!(c.time, T0 + 365 * D);
    // Due again one window after the last one applied.
    assert_eq!(r.user("u").timer_due, Some(T0 + 365 * D + M));
}

/// More than 2^32 windows in one advance (one-millisecond windows over 50 days): the user's
/// count of changes, and so the change's id, counts every window, wrapping at 2^32 as firing
/// them one by one would (docs/semantics.md, "Change ids"); the change's `windows`, a uint32 on
/// the output, saturates. (An outside review found the id counting the saturated figure.)
#[test]
fn a_decay_over_more_than_2_pow_32_windows_counts_every_window_in_its_id() {
    let e = rules("[inactivity]\nwindow = \"1ms\"\ndelta = -1\n");
    let windows: i64 = 1 << 32;
    let r = run_until(
        &e,
        &[external("u", T0, ScoreOp::Set(5), None)],
        Some(T0 + windows),
    );
    assert_eq!(r.changes.len(), 2, "the external score and one decay");
    let c = &r.changes[1];
    // Due at T0 + 1ms, T0 + 2ms, ..., T0 + 2^32 ms.
    assert_eq!(c.delta, -windows);
    assert_eq!(c.windows, u32::MAX, "saturated");
    // The external score was change 1; 2^32 windows later the count is 1 again, wrapped.
    assert_eq!(
        c.event_id().to_string(),
        format!("inactivity:u@{}#1", T0 + windows)
    );
    assert_eq!(r.user("u").changes, 1);
}

/// The collapsed decay ends exactly where firing window by window ends, for every shape of
/// decay and bounds, and however far the clock jumps.
#[test]
fn a_collapsed_decay_equals_firing_window_by_window() {
    let decays = [
        "window = \"1h\"\ndelta = -1",
        "window = \"1h\"\ndelta = -7",
        "window = \"1h\"\nfactor = 0.5",
        "window = \"1h\"\nfactor = 0.93",
    ];
    let bounds = [
        "",
        "[score]\nmin = 0",
        "[score]\nmin = -20\nmax = 50",
        "[score]\nmin = 3",
    ];
    for decay in decays {
        for bound in bounds {
            let e = rules(&format!("{bound}\n[inactivity]\n{decay}\n"));
            for start in [-30, 0, 1, 5, 49, 1_000, 1 << 40] {
                for jump in [1, 2, 3, 7, 40, 500] {
                    let events = [external("u", T0, ScoreOp::Set(start), None)];
                    let at = T0 + jump * H + 17 * M;
                    let collapsed = run_until(&e, &events, Some(at));
                    let mut stepped = run(&e, &events);
                    for w in 1..=jump {
                        stepped.advance(&e, T0 + w * H);
                    }
                    stepped.advance(&e, at);
                    let what = format!("{bound} / {decay} / start {start} / {jump} windows");
                    // The same state, but for the recent-change history: one note for the
                    // collapsed change against one per window.
                    let without_history = |r: &Run| {
                        let mut users = r.users.clone();
                        for st in users.values_mut() {
                            st.history.clear();
                        }
                        users
                    };
                    assert_eq!(
                        without_history(&collapsed),
                        without_history(&stepped),
                        "{what}"
                    );
                    let decays = |r: &Run| -> (i64, u32, Option<Millis>) {
                        let d = r.decays();
                        (
                            d.iter().map(|c| c.delta).sum(),
                            d.iter().map(|c| c.windows).sum(),
                            d.last().map(|c| c.time),
                        )
                    };
                    assert_eq!(decays(&collapsed), decays(&stepped), "{what}");
                    assert!(collapsed.decays().len() <= 1, "{what}");
                }
            }
        }
    }
}

#[test]
fn the_timer_ends_for_a_user_excluded_at_due_time() {
    let e = rules(DECAY);
    let r = run_until(
        &e,
        &session_after_email(T0, [attr("u", T0 + D, "lifecycle_stage", s("customer"))]),
        Some(T0 + 30 * D),
    );
    assert_eq!(r.score("u"), 1);
    assert_eq!(r.user("u").timer_due, None);
}

#[test]
fn the_timer_ends_for_a_user_not_enrolled_at_due_time() {
    let e = rules_on(DECAY, &entry_on(r#"[{ type = "email_added" }]"#));
    let r = run_until(
        &e,
        &[external("u", T0, ScoreOp::Set(10), None)],
        Some(T0 + 30 * D),
    );
    assert_eq!(r.score("u"), 10);
    assert_eq!(r.user("u").timer_due, None);
}

#[test]
fn factor_decay_multiplies_and_truncates_toward_zero() {
    let e = rules("[inactivity]\nwindow = \"1d\"\nfactor = 0.5\n");
    let mut r = run(&e, &[external("u", T0, ScoreOp::Set(7), None)]);
    for d in 1..=10 {
        r.advance(&e, T0 + d * D);
    }
    let scores: Vec<i64> = r.changes.iter().map(|c| c.score).collect();
    assert_eq!(scores, [7, 3, 1, 0]);
    assert_eq!(r.user("u").timer_due, None);
}

#[test]
fn inactivity_changes_ignore_caps_and_reentry_but_restart_reentry() {
    let e = rules_on(DECAY, &reentry("1h"));
    let events = session_after_email(
        T0,
        [
            session("u", T0 + 7 * D + 30 * M),
            session("u", T0 + 7 * D + H),
        ],
    );
    // Decay at T0+7d; the session 30 minutes later waits; the one an hour later scores.
    let outcomes = [Outcome::ReentryWait, Outcome::Scored];
    run_expecting(&e, &events, 2, &outcomes, 1);
}

/// The factor decay one step at a time, as SPEC 3.7 words it: the reference `factor_steps`
/// must agree with.
fn factor_one_by_one(
    score: i64,
    numerator: i64,
    scale: u32,
    bounds: &crate::rules::ScoreSettings,
    max_steps: i64,
) -> (i64, i64) {
    let decay = Decay::Factor { numerator, scale };
    let (mut s, mut steps) = (score, 0);
    while steps < max_steps {
        let next = bounds.clamp(decay.apply(s));
        if next == s {
            break;
        }
        s = next;
        steps += 1;
    }
    (s, steps)
}

fn bounds(min: Option<i64>, max: Option<i64>) -> crate::rules::ScoreSettings {
    crate::rules::ScoreSettings {
        name: "score".into(),
        min,
        max,
    }
}

/// Every factor of one and two decimal places and a few of more, scores of both signs and
/// bounds on either side: taken band by band, the steps and the end are exactly the
/// one-by-one ones.
#[test]
fn factor_steps_taken_a_band_at_a_time_are_exactly_the_steps_one_by_one() {
    let mut factors: Vec<(i64, u32)> = (1..10).map(|n| (n, 1)).collect();
    factors.extend((1..100).map(|n| (n, 2)));
    factors.extend([(999, 3), (9_999, 4), (12_345, 5), (999_999, 6)]);
    let scores = [1, 2, 3, 7, 10, 99, 100, 101, 977, 1_000, 12_345, 99_999];
    let bound_sets = [
        bounds(None, None),
        bounds(Some(0), None),
        bounds(Some(3), Some(200_000)),
        bounds(Some(-200_000), Some(-5)),
        bounds(Some(-50), Some(50)),
    ];
    let mut checked = 0;
    for &(numerator, scale) in &factors {
        for &magnitude in &scores {
            for score in [magnitude, -magnitude] {
                for b in &bound_sets {
                    // `factor_steps` starts within the bounds (the engine's first step sees to
                    // that).
                    if b.clamp(score) != score {
                        continue;
                    }
                    for max_steps in [0, 1, 2, 5, 40, i64::MAX] {
                        let want = factor_one_by_one(score, numerator, scale, b, max_steps);
                        let got = factor_steps(score, numerator, scale, b, max_steps);
                        assert_eq!(
                            got, want,
                            "{score} × {numerator}/10^{scale}, {b:?}, at most {max_steps} steps"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

/// A factor within 10^-18 of 1 on a score of 10^18 takes one point a step: 10^18 steps, each of
/// which stepping one by one took a turn of its own (it never finished; issue 14). Taken a band
/// at a time, it is a handful of turns, with the same arithmetic.
#[test]
fn a_factor_next_to_1_decays_a_huge_score_in_bounded_work() {
    let (numerator, scale) = (999_999_999_999_999_999, 18);
    let e = 1_000_000_000_000_000_000i64;
    let none = bounds(None, None);
    // Every step below 10^18 takes exactly one point (ceil(a / 10^18) = 1).
    assert_eq!(factor_steps(e, numerator, scale, &none, i64::MAX), (0, e));
    assert_eq!(
        factor_steps(e, numerator, scale, &none, 1_000_000_000_000),
        (e - 1_000_000_000_000, 1_000_000_000_000)
    );
    assert_eq!(
        factor_steps(-e, numerator, scale, &bounds(None, Some(-7)), i64::MAX),
        (-7, e - 7)
    );
    // Above 10^18 a step takes two to nine points; the first few agree with the reference.
    let top = i64::MAX;
    for max_steps in [1, 2, 3, 50] {
        assert_eq!(
            factor_steps(top, numerator, scale, &none, max_steps),
            factor_one_by_one(top, numerator, scale, &none, max_steps)
        );
    }
    let (end, steps) = factor_steps(top, numerator, scale, &none, i64::MAX);
    assert_eq!(end, 0);
    // At least a ninth of the points a step (ceil(a / 10^18) <= 10), at most one.
    assert!((top / 10..=top).contains(&steps), "{steps}");
}

/// Through the engine: a factor within 10^-9 of 1, a score of 10^9 and a clock thirty years
/// past the timer with one-second windows: about 9.5 × 10^8 windows due, each taking one point
/// (ceil(a / 10^9) = 1), in one change that covers them all.
#[test]
fn a_factor_next_to_1_over_a_billion_windows_is_one_change() {
    let e = rules("[inactivity]\nwindow = \"1s\"\nfactor = 0.999999999\n");
    let start = 1_000_000_000;
    let mut r = run(&e, &[external("u", T0, ScoreOp::Set(start), None)]);
    let later = T0 + 30 * 365 * D;
    r.advance(&e, later);
    let windows = (later - (T0 + 1_000)) / 1_000 + 1;
    let decay = r
        .changes
        .last()
        .map(|c| (c.reason.kind, i64::from(c.windows)));
    assert_eq!(decay, Some((ReasonKind::Inactivity, windows)));
    assert_eq!(r.score("u"), start - windows);
}
