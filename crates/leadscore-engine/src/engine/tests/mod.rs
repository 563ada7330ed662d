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
