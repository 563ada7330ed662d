//! Engine behaviour, one or more tests per semantic rule of SPEC section 3: the shared rules file,
//! runner and event builders here, one file per group of rules below.

use super::*;
use crate::partition::Partition;
use std::collections::BTreeMap;

mod attributes_enrollment_audience;
mod duplicates_and_ids;
mod external;
mod groups_caps_reentry;
mod inactivity;

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

/// A weekly decay of one point, added to [`BASE`] by the inactivity and duplicate tests.
const DECAY: &str = "[inactivity]\nwindow = \"7d\"\ndelta = -1\n";

/// The `[entry]` matchers of [`BASE`].
const ENTRY_ON: &str = r#"on = [{ type = "email_added" }, { type = "external_score" }]"#;

/// [`BASE`] with `extra` before it.
fn rules(extra: &str) -> Engine {
    rules_on(extra, BASE)
}

/// `base` (an edit of [`BASE`]) with `extra` before it.
fn rules_on(extra: &str, base: &str) -> Engine {
    let src = format!("{extra}\n{base}");
    match crate::rules::parse_str(&src, "test.toml") {
        Ok(r) => Engine::new(r),
        Err(e) => panic!("test rules do not load:\n{e}"),
    }
}

/// [`BASE`] with `from`, which must be in it, replaced by `to`.
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is not in BASE");
    BASE.replace(from, to)
}

/// [`BASE`] enrolling on these matchers instead.
fn entry_on(matchers: &str) -> String {
    edit(ENTRY_ON, &format!("on = {matchers}"))
}

/// [`BASE`] with a re-entry window.
fn reentry(window: &str) -> String {
    edit(
        ENTRY_ON,
        &format!("{ENTRY_ON}\nreentry_window = {window:?}"),
    )
}

/// [`BASE`] with a group `name` of `delta` on demo_requested just before "unsubscribed" (so
/// after "high intent", which also matches demo_requested).
fn demo_group_before_unsubscribed(name: &str, delta: i64) -> String {
    let unsubscribed = "[[group]]\nname = \"unsubscribed\"";
    edit(
        unsubscribed,
        &format!(
            "[[group]]\nname = {name:?}\ndelta = {delta}\n\
             triggers = [{{ type = \"custom_event\", name = \"demo_requested\" }}]\n\n{unsubscribed}"
        ),
    )
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
    fn deltas(&self) -> Vec<i64> {
        self.changes.iter().map(|c| c.delta).collect()
    }
    /// The inactivity changes, in order.
    fn decays(&self) -> Vec<&ScoreChange> {
        self.changes
            .iter()
            .filter(|c| c.reason.kind == ReasonKind::Inactivity)
            .collect()
    }
    /// Processes `event` as the partition's input at `offset`.
    fn process(&mut self, engine: &Engine, event: &Event, offset: i64) -> Outcome {
        self.partition.process(
            engine,
            &mut self.users,
            event,
            origin(offset),
            &mut self.changes,
        )
    }
    /// Moves the partition clock to `now`.
    fn advance(&mut self, engine: &Engine, now: Millis) {
        self.partition
            .advance(engine, &mut self.users, now, &mut self.changes);
    }
}

fn origin(offset: i64) -> Origin<'static> {
    Origin {
        topic: "t",
        partition: 0,
        offset,
    }
}

fn run(engine: &Engine, events: &[Event]) -> Run {
    run_until(engine, events, None)
}

/// [`run`] with the rules of [`BASE`] as they are.
fn run_base(events: &[Event]) -> Run {
    run(&rules(""), events)
}

/// [`run`], checking the outcomes of the events from index `from` on and u's final score.
fn run_expecting(
    engine: &Engine,
    events: &[Event],
    from: usize,
    outcomes: &[Outcome],
    score: i64,
) -> Run {
    let r = run(engine, events);
    let to = from + outcomes.len();
    assert_eq!(r.outcomes[from..to], *outcomes, "outcomes {from}..{to}");
    assert_eq!(r.score("u"), score);
    r
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
        let o = r.process(engine, e, i as i64);
        r.outcomes.push(o);
    }
    if let Some(now) = now {
        r.advance(engine, now);
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
/// u enrolls at T0 and scores a point with a session `at`, then `rest`.
fn session_after_email(at: Millis, rest: impl IntoIterator<Item = Event>) -> Vec<Event> {
    let mut events = vec![email("u", T0), session("u", at)];
    events.extend(rest);
    events
}
fn with_id(mut e: Event, id: &str) -> Event {
    e.event_id = Some(id.into());
    e
}
fn s(v: &str) -> Option<Scalar> {
    Some(Scalar::Str(v.to_string()))
}
