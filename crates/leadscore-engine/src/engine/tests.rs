//! Engine behaviour, one or more tests per semantic rule of SPEC section 3.

use super::*;
use crate::partition::Partition;
use std::collections::BTreeMap;

const M: Millis = 60_000;
const H: Millis = 60 * M;
const D: Millis = 24 * H;
/// 2026-01-05T00:00:00Z, a Monday.
const T0: Millis = 1_767_571_200_000;

const BASE: &str = r#"
[entry]
on = [{ type = "email_added" }, { type = "external_score" }]

[audience]
exclude = [
  { attribute = "is_employee", equals = true },
  { attribute = "lifecycle_stage", in = ["customer"] },
]

[[group]]
name = "engaged"
delta = 1
triggers = [{ type = "session_start" }, { type = "custom_event", name = "webinar_joined" }]

[[group]]
name = "high intent"
delta = 5
cap = { points = 12, per = "1d" }
triggers = [
  { type = "custom_event", name = "demo_requested" },
  { type = "custom_event", name = "pricing_viewed", properties = [{ property = "plan", in = ["pro", "enterprise"] }] },
]

[[group]]
name = "unsubscribed"
delta = -1
triggers = [{ type = "custom_event", name = "email_unsubscribed" }]
"#;

fn rules(extra: &str) -> Engine {
    let src = format!("{extra}\n{BASE}");
    match crate::rules::parse_str(&src, "test.toml") {
        Ok(r) => Engine::new(r),
        Err(e) => panic!("test rules do not load:\n{e}"),
    }
}

struct Run {
    users: BTreeMap<String, UserState>,
    changes: Vec<ScoreChange>,
    outcomes: Vec<Outcome>,
    partition: Partition,
}

impl Run {
    fn score(&self, user: &str) -> i64 {
        self.users.get(user).map_or(0, |s| s.score)
    }
    fn user(&self, user: &str) -> &UserState {
        &self.users[user]
    }
    fn kinds(&self) -> Vec<(ReasonKind, i64)> {
        self.changes
            .iter()
            .map(|c| (c.reason.kind, c.delta))
            .collect()
    }
}

fn run(engine: &Engine, events: &[Event]) -> Run {
    run_until(engine, events, None)
}

/// Processes `events` as one partition, then moves the clock to `now` when given.
fn run_until(engine: &Engine, events: &[Event], now: Option<Millis>) -> Run {
    let mut r = Run {
        users: BTreeMap::new(),
        changes: Vec::new(),
        outcomes: Vec::new(),
        partition: Partition::new(),
    };
    for (i, e) in events.iter().enumerate() {
        let origin = Origin {
            topic: "t",
            partition: 0,
            offset: i as i64,
        };
        let o = r
            .partition
            .process(engine, &mut r.users, e, origin, &mut r.changes);
        r.outcomes.push(o);
    }
    if let Some(now) = now {
        r.partition
            .advance(engine, &mut r.users, now, &mut r.changes);
    }
    r
}

fn ev(user: &str, time: Millis, kind: EventType) -> Event {
    Event::new(user, time, kind)
}
fn email(user: &str, time: Millis) -> Event {
    let mut e = ev(user, time, EventType::EmailAdded);
    e.value = Some(Scalar::Str(format!("{user}@example.com")));
    e
}
fn session(user: &str, time: Millis) -> Event {
    ev(user, time, EventType::SessionStart)
}
fn custom(user: &str, time: Millis, name: &str) -> Event {
    let mut e = ev(user, time, EventType::CustomEvent);
    e.name = Some(name.to_string());
    e
}
fn attr(user: &str, time: Millis, name: &str, value: Option<Scalar>) -> Event {
    let mut e = ev(user, time, EventType::AttributeChanged);
    e.name = Some(name.to_string());
    e.value = value;
    e
}
fn external(user: &str, time: Millis, op: ScoreOp, updated_at: Option<Millis>) -> Event {
    let mut e = ev(user, time, EventType::ExternalScore);
    e.score = Some(op);
    e.updated_at = updated_at;
    e
}
fn with_id(mut e: Event, id: &str) -> Event {
    e.event_id = Some(id.to_string());
    e
}
fn s(v: &str) -> Option<Scalar> {
    Some(Scalar::Str(v.to_string()))
}

// 1. Attributes

#[test]
fn attributes_update_whether_or_not_the_user_is_enrolled() {
    let e = rules("");
    let r = run(
        &e,
        &[
            attr("u", T0, "lead_status", s("Open")),
            attr("u", T0 + 1, "seats", Some(Scalar::Int(5))),
            attr("u", T0 + 2, "seats", None),
        ],
    );
    let st = r.user("u");
    assert!(!st.enrolled);
    assert_eq!(st.attribute("lead_status"), s("Open").as_ref());
    assert_eq!(st.attribute("seats"), None);
}

#[test]
fn email_added_sets_the_email_attribute() {
    let r = run(&rules(""), &[email("u", T0)]);
    assert_eq!(r.user("u").attribute("email"), s("u@example.com").as_ref());
}

// 2. Enrollment

#[test]
fn events_before_enrollment_never_score() {
    let r = run(
        &rules(""),
        &[session("u", T0), custom("u", T0 + 1, "demo_requested")],
    );
    assert_eq!(r.score("u"), 0);
    assert_eq!(r.outcomes, [Outcome::NotEnrolled, Outcome::NotEnrolled]);
    assert!(!r.user("u").enrolled);
}

#[test]
fn the_enrolling_event_is_also_scored() {
    let e = rules("");
    // With a session_start entry, the enrolling session scores through "engaged".
    let src = BASE.replace(
        r#"on = [{ type = "email_added" }, { type = "external_score" }]"#,
        r#"on = [{ type = "session_start" }]"#,
    );
    let e2 = Engine::new(crate::rules::parse_str(&src, "t.toml").expect("rules"));
    let r = run(&e2, &[session("u", T0)]);
    assert_eq!(r.score("u"), 1);
    assert!(r.user("u").enrolled);
    // email_added enrolls but matches no group: enrolled, no score.
    let r = run(&e, &[email("u", T0), session("u", T0 + 1)]);
    assert_eq!(r.outcomes, [Outcome::NoGroup, Outcome::Scored]);
    assert_eq!(r.score("u"), 1);
}

// 3. Audience

#[test]
fn excluded_users_do_not_score() {
    let r = run(
        &rules(""),
        &[
            email("u", T0),
            attr("u", T0 + 1, "is_employee", Some(Scalar::Bool(true))),
            session("u", T0 + 2),
        ],
    );
    assert_eq!(r.score("u"), 0);
    assert_eq!(r.outcomes[2], Outcome::OutsideAudience);
}

#[test]
fn audience_is_evaluated_on_the_attributes_after_the_event() {
    let src = format!(
        "{}\n[[group]]\nname = \"became lead\"\ndelta = 3\ntriggers = [{{ type = \"attribute_changed\", name = \"lifecycle_stage\" }}]\n",
        BASE
    );
    let e = Engine::new(crate::rules::parse_str(&src, "t.toml").expect("rules"));
    let r = run(
        &e,
        &[
            email("u", T0),
            attr("u", T0 + 1, "lifecycle_stage", s("customer")),
            attr("u", T0 + 2, "lifecycle_stage", s("lead")),
        ],
    );
    assert_eq!(r.outcomes[1], Outcome::OutsideAudience);
    assert_eq!(r.outcomes[2], Outcome::Scored);
    assert_eq!(r.score("u"), 3);
}

#[test]
fn include_predicates_must_all_hold() {
    let mut r = rules("").rules().clone();
    r.audience.include = vec![
        Predicate {
            key: "country".into(),
            test: crate::rules::Test::In(vec![Scalar::Str("DE".into())]),
        },
        Predicate {
            key: "employees".into(),
            test: crate::rules::Test::Gte(50),
        },
    ];
    let e = Engine::new(r);
    let r = run(
        &e,
        &[
            email("u", T0),
            attr("u", T0 + 1, "country", s("DE")),
            session("u", T0 + 2),
            attr("u", T0 + 3, "employees", Some(Scalar::Int(50))),
            session("u", T0 + 4),
        ],
    );
    assert_eq!(r.outcomes[2], Outcome::OutsideAudience);
    assert_eq!(r.outcomes[4], Outcome::Scored);
    assert_eq!(r.score("u"), 1);
}

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

// 6. External scores

#[test]
fn external_scores_set_or_increment_enrolled_or_not_whatever_the_audience() {
    let no_entry = BASE.replace(
        r#"on = [{ type = "email_added" }, { type = "external_score" }]"#,
        r#"on = [{ type = "email_added" }]"#,
    );
    let e = Engine::new(crate::rules::parse_str(&no_entry, "t.toml").expect("rules"));
    let r = run(
        &e,
        &[
            attr("u", T0, "is_employee", Some(Scalar::Bool(true))),
            external("u", T0 + 1, ScoreOp::Set(40), None),
            external("u", T0 + 2, ScoreOp::Increment(-5), None),
        ],
    );
    assert!(!r.user("u").enrolled);
    assert_eq!(r.score("u"), 35);
    assert_eq!(
        r.kinds(),
        [(ReasonKind::External, 40), (ReasonKind::External, -5)]
    );
    assert_eq!(r.changes[0].reason.group, None);
}

#[test]
fn a_stale_external_score_is_ignored() {
    let r = run(
        &rules(""),
        &[
            external("u", T0, ScoreOp::Set(50), Some(T0)),
            external("u", T0 + 1, ScoreOp::Set(10), Some(T0 - 1)),
            external("u", T0 + 2, ScoreOp::Set(20), Some(T0)),
        ],
    );
    assert_eq!(
        r.outcomes,
        [Outcome::Scored, Outcome::StaleExternal, Outcome::Scored]
    );
    assert_eq!(r.score("u"), 20);
}

#[test]
fn an_external_score_without_updated_at_always_applies() {
    let r = run(
        &rules(""),
        &[
            external("u", T0, ScoreOp::Set(50), Some(T0 + D)),
            external("u", T0 + 1, ScoreOp::Set(10), None),
            external("u", T0 + 2, ScoreOp::Set(30), Some(T0)),
        ],
    );
    assert_eq!(r.outcomes, [Outcome::Scored; 3]);
    assert_eq!(r.score("u"), 30);
}

#[test]
fn external_scores_are_clamped_and_ignore_reentry() {
    let src = BASE.replace(
        "{ type = \"external_score\" }]",
        "{ type = \"external_score\" }]\nreentry_window = \"1d\"",
    );
    let e = Engine::new(
        crate::rules::parse_str(&format!("[score]\nmin = 0\nmax = 100\n{src}"), "t.toml")
            .expect("rules"),
    );
    let r = run(
        &e,
        &[
            external("u", T0, ScoreOp::Set(500), None),
            external("u", T0 + 1, ScoreOp::Increment(-1000), None),
        ],
    );
    assert_eq!(
        r.kinds(),
        [(ReasonKind::External, 100), (ReasonKind::External, -100)]
    );
}

// 7. Inactivity

const DECAY: &str = "[inactivity]\nwindow = \"7d\"\ndelta = -1\n";

#[test]
fn inactivity_decays_the_score_a_window_after_the_last_change() {
    let e = rules(DECAY);
    let events = [
        email("u", T0),
        session("u", T0),
        session("u", T0 + H),
        session("v", T0 + 7 * D + H),
    ];
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
        &[
            email("u", T0),
            session("u", T0),
            session("u", T0 + 1),
            session("u", T0 + 1 + 7 * D),
        ],
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
    let r = run(
        &e,
        &[
            email("u", T0),
            session("u", T0),
            session("v", T0 + 7 * D - 1),
        ],
    );
    assert_eq!(r.score("u"), 1);
    assert_eq!(r.changes.len(), 1);
}

#[test]
fn the_timer_repeats_every_window_until_the_change_clamps_to_zero() {
    let e = rules(&format!("[score]\nmin = 0\n{DECAY}"));
    let mut events = vec![email("u", T0)];
    events.extend((0..3).map(|i| session("u", T0 + i)));
    // Clock advances one window at a time: one change per window.
    let mut r = run(&e, &events);
    for w in 1..=5 {
        r.partition
            .advance(&e, &mut r.users, T0 + 2 + w * 7 * D, &mut r.changes);
    }
    assert_eq!(r.score("u"), 0);
    let decays: Vec<(Millis, u32)> = r
        .changes
        .iter()
        .filter(|c| c.reason.kind == ReasonKind::Inactivity)
        .map(|c| (c.time, c.windows))
        .collect();
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
    let e = rules(&format!("[score]\nmin = 0\n{DECAY}"));
    let mut events = vec![email("u", T0)];
    events.extend((0..3).map(|i| session("u", T0 + i)));
    let r = run_until(&e, &events, Some(T0 + 100 * D));
    let decays: Vec<&ScoreChange> = r
        .changes
        .iter()
        .filter(|c| c.reason.kind == ReasonKind::Inactivity)
        .collect();
    assert_eq!(decays.len(), 1);
    let c = decays[0];
    assert_eq!((c.previous_score, c.score, c.delta), (3, 0, -3));
    // The time of the last window applied, and how many windows the change covers.
    assert_eq!((c.time, c.windows), (T0 + 2 + 21 * D, 3));
    assert_eq!(c.event_id, format!("inactivity:u@{}", T0 + 2 + 21 * D));
    assert_eq!(r.user("u").last_change, Some(T0 + 2 + 21 * D));
    assert_eq!(r.user("u").timer_due, None);
    assert_eq!(r.partition.pending_timers(), 0);
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
                        stepped.partition.advance(
                            &e,
                            &mut stepped.users,
                            T0 + w * H,
                            &mut stepped.changes,
                        );
                    }
                    stepped
                        .partition
                        .advance(&e, &mut stepped.users, at, &mut stepped.changes);
                    let what = format!("{bound} / {decay} / start {start} / {jump} windows");
                    assert_eq!(collapsed.users, stepped.users, "{what}");
                    let decays = |r: &Run| -> (i64, u32, Option<Millis>) {
                        let d: Vec<&ScoreChange> = r
                            .changes
                            .iter()
                            .filter(|c| c.reason.kind == ReasonKind::Inactivity)
                            .collect();
                        (
                            d.iter().map(|c| c.delta).sum(),
                            d.iter().map(|c| c.windows).sum(),
                            d.last().map(|c| c.time),
                        )
                    };
                    assert_eq!(decays(&collapsed), decays(&stepped), "{what}");
                    assert!(
                        collapsed
                            .changes
                            .iter()
                            .filter(|c| c.reason.kind == ReasonKind::Inactivity)
                            .count()
                            <= 1,
                        "{what}"
                    );
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
        &[
            email("u", T0),
            session("u", T0),
            attr("u", T0 + D, "lifecycle_stage", s("customer")),
        ],
        Some(T0 + 30 * D),
    );
    assert_eq!(r.score("u"), 1);
    assert_eq!(r.user("u").timer_due, None);
}

#[test]
fn the_timer_ends_for_a_user_not_enrolled_at_due_time() {
    let no_entry = format!(
        "{DECAY}{}",
        BASE.replace(
            r#"on = [{ type = "email_added" }, { type = "external_score" }]"#,
            r#"on = [{ type = "email_added" }]"#,
        )
    );
    let e = Engine::new(crate::rules::parse_str(&no_entry, "t.toml").expect("rules"));
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
        r.partition
            .advance(&e, &mut r.users, T0 + d * D, &mut r.changes);
    }
    let scores: Vec<i64> = r.changes.iter().map(|c| c.score).collect();
    assert_eq!(scores, [7, 3, 1, 0]);
    assert_eq!(r.user("u").timer_due, None);
}

#[test]
fn inactivity_changes_ignore_caps_and_reentry_but_restart_reentry() {
    let src = format!(
        "{DECAY}{}",
        BASE.replace(
            "{ type = \"external_score\" }]",
            "{ type = \"external_score\" }]\nreentry_window = \"1h\""
        )
    );
    let e = Engine::new(crate::rules::parse_str(&src, "t.toml").expect("rules"));
    let r = run(
        &e,
        &[
            email("u", T0),
            session("u", T0),
            session("u", T0 + 7 * D + 30 * M),
            session("u", T0 + 7 * D + H),
        ],
    );
    // Decay at T0+7d; the session 30 minutes later waits; the one an hour later scores.
    assert_eq!(r.outcomes[2..], [Outcome::ReentryWait, Outcome::Scored]);
    assert_eq!(r.score("u"), 1);
}

// 8. Duplicates

#[test]
fn a_duplicate_just_inside_the_window_changes_nothing() {
    let r = run(
        &rules(""),
        &[
            email("u", T0),
            with_id(session("u", T0 + H), "e1"),
            with_id(session("u", T0 + H + D - 1), "e1"),
        ],
    );
    assert_eq!(r.outcomes[2], Outcome::Duplicate);
    assert_eq!(r.score("u"), 1);
}

#[test]
fn the_same_id_just_outside_the_window_applies_again() {
    let r = run(
        &rules(""),
        &[
            email("u", T0),
            with_id(session("u", T0 + H), "e1"),
            with_id(session("u", T0 + H + D), "e1"),
            with_id(session("u", T0 + H + D + 1), "e1"),
        ],
    );
    assert_eq!(r.outcomes[2..], [Outcome::Scored, Outcome::Duplicate]);
    assert_eq!(r.score("u"), 2);
}

#[test]
fn a_redelivered_event_is_a_duplicate_even_much_later_in_the_log() {
    let mut events = vec![
        email("u", T0),
        with_id(custom("u", T0 + H, "webinar_joined"), "w"),
    ];
    events.extend((0..20).map(|i| session("v", T0 + i * H)));
    events.push(with_id(custom("u", T0 + H, "webinar_joined"), "w"));
    let r = run(&rules(""), &events);
    assert_eq!(r.outcomes.last(), Some(&Outcome::Duplicate));
    assert_eq!(r.score("u"), 1);
}

/// Issue 9.3: an event that arrives more than two windows behind the partition clock, sent
/// twice back to back (a producer's retry), is applied once: its id's retention counts from
/// the clock when it was recorded, not from its own time.
#[test]
fn a_late_event_retried_by_its_producer_is_a_duplicate() {
    let r = run(
        &rules(""),
        &[
            email("u", T0),
            session("v", T0 + 10 * D),
            with_id(session("u", T0 + H), "late"),
            with_id(session("u", T0 + H), "late"),
        ],
    );
    assert_eq!(r.outcomes[2..], [Outcome::Scored, Outcome::Duplicate]);
    assert_eq!(r.score("u"), 1);
}

#[test]
fn a_late_events_id_is_forgotten_two_windows_after_it_was_recorded() {
    let e = rules("");
    let late = with_id(session("u", T0 + H), "late");
    let mut r = run(
        &e,
        &[email("u", T0), session("v", T0 + 10 * D), late.clone()],
    );
    let recorded = T0 + 10 * D;
    assert_eq!(r.user("u").seen.last().map(|s| s.recorded), Some(recorded));
    // Kept while the clock is within two windows of the recording clock ...
    for (i, at) in [(3, recorded + 2 * D - 1), (4, recorded + 2 * D + 1)] {
        r.partition.process(
            &e,
            &mut r.users,
            &with_id(session("v", at), &format!("v{i}")),
            Origin {
                topic: "t",
                partition: 0,
                offset: i,
            },
            &mut r.changes,
        );
        let kept = r.user("u").seen.len();
        let o = r.partition.process(
            &e,
            &mut r.users,
            &with_id(attr("u", at, "x", s("y")), &format!("probe{i}")),
            Origin {
                topic: "t",
                partition: 0,
                offset: 10 + i,
            },
            &mut r.changes,
        );
        assert_ne!(o, Outcome::Duplicate);
        let has_late = r
            .user("u")
            .seen
            .iter()
            .any(|s| s.id_hash == crate::state::stable_hash(b"late"));
        // ... and forgotten once it is past them.
        assert_eq!(has_late, i == 3, "clock {at}, {kept} ids before");
    }
}

#[test]
fn duplicates_are_per_user() {
    let r = run(
        &rules(""),
        &[
            email("u", T0),
            email("v", T0),
            with_id(session("u", T0 + 1), "same"),
            with_id(session("v", T0 + 2), "same"),
        ],
    );
    assert_eq!((r.score("u"), r.score("v")), (1, 1));
}

#[test]
fn a_duplicate_does_not_update_attributes() {
    let r = run(
        &rules(""),
        &[
            with_id(attr("u", T0, "lead_status", s("Open")), "a"),
            attr("u", T0 + 1, "lead_status", s("MQL")),
            with_id(attr("u", T0 + 2, "lead_status", s("Open")), "a"),
        ],
    );
    assert_eq!(r.user("u").attribute("lead_status"), s("MQL").as_ref());
}

// Score change records (SPEC section 4)

#[test]
fn a_tracked_attribute_change_alone_is_published_with_delta_zero() {
    let r = run(
        &rules(""),
        &[
            attr("u", T0, "lead_status", s("Open")),
            attr("u", T0 + 1, "lead_status", s("Open")),
            attr("u", T0 + 2, "city", s("Berlin")),
        ],
    );
    assert_eq!(r.kinds(), [(ReasonKind::Attribute, 0)]);
    assert_eq!(r.changes[0].attribute("lead_status"), s("Open").as_ref());
}

#[test]
fn changes_carry_ids_reasons_and_a_snapshot_of_tracked_attributes() {
    let r = run(
        &rules(""),
        &[
            attr("u", T0, "lead_status", s("Working")),
            email("u", T0 + 1),
            with_id(custom("u", T0 + 2, "demo_requested"), "d-1"),
        ],
    );
    let c = r.changes.last().expect("a change");
    assert_eq!((c.previous_score, c.score, c.delta), (0, 5, 5));
    assert_eq!(c.reason.kind, ReasonKind::Rule);
    assert_eq!(c.reason.group.as_deref(), Some("high intent"));
    assert_eq!(c.reason.source_event_id.as_deref(), Some("d-1"));
    assert_eq!(
        c.attributes,
        vec![("lead_status".to_string(), Scalar::Str("Working".into()))]
    );
    // An event without an id is named by its position.
    let first = &r.changes[0];
    assert_eq!(first.reason.source_event_id.as_deref(), Some("t/0/0"));
}

#[test]
fn change_ids_are_deterministic_and_unique() {
    let e = rules(DECAY);
    let events = [
        email("u", T0),
        session("u", T0 + 1),
        with_id(session("u", T0 + 2), "x"),
        with_id(session("u", T0 + 2 + D), "x"),
        session("v", T0 + 30 * D),
    ];
    let a = run(&e, &events);
    let b = run(&e, &events);
    let ids: Vec<&str> = a.changes.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(
        ids,
        b.changes
            .iter()
            .map(|c| c.event_id.as_str())
            .collect::<Vec<_>>()
    );
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

// 9. Replays

#[test]
fn a_replayed_offset_changes_nothing() {
    let e = rules("");
    let mut users = BTreeMap::new();
    let mut changes = Vec::new();
    let mut p = Partition::new();
    let origin = Origin {
        topic: "t",
        partition: 0,
        offset: 7,
    };
    for ev in [email("u", T0), session("u", T0 + 1)] {
        let o = Origin {
            offset: origin.offset + ev.time - T0,
            ..origin
        };
        p.process(&e, &mut users, &ev, o, &mut changes);
    }
    let before = users.clone();
    let o = p.process(
        &e,
        &mut users,
        &session("u", T0 + 1),
        Origin {
            offset: 8,
            ..origin
        },
        &mut changes,
    );
    assert_eq!(o, Outcome::Replayed);
    assert_eq!(users, before);
}

#[test]
fn change_ids_spell_the_source_time_and_kind() {
    assert_eq!(
        change_id("e-1", T0, ReasonKind::Rule),
        format!("e-1@{T0}:rule")
    );
    assert_eq!(
        change_id("x", -1_500, ReasonKind::External),
        "x@-1500:external"
    );
    assert_eq!(change_id("y", 0, ReasonKind::Attribute), "y@0:attribute");
}
