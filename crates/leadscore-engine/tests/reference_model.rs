//! A deliberately naive, independent reference model of the scoring semantics (SPEC section 3,
//! plus the decisions of docs/semantics.md), written from those two documents only, and a
//! property test that runs the engine and the model over the same random event sequences and
//! compares, user by user, the final state and every published score change.
//!
//! The model keeps everything in plain maps and vectors, fires inactivity one window at a time
//! and forgets only what docs/semantics.md says the engine forgets: event ids once the clock has
//! passed their recording by two dedupe windows (at most 4,096 per user), and the usage of cap
//! windows no event can score in under the current re-entry start that ended more than a
//! period and a week before the clock (at most 192 per group). Besides each user's changes it compares the
//! order of changes across users.
//! It shares no code with the engine beyond the public event and change types.
//!
//! `REFERENCE_CASES=N` runs N cases per rule set instead of 2048.

use leadscore_engine::change::{ReasonKind, ScoreChange};
use leadscore_engine::engine::Engine;
use leadscore_engine::event::{Event, EventType, Origin, Scalar, ScoreOp};
use leadscore_engine::partition::Partition;
use leadscore_engine::rules::parse_str;
use leadscore_engine::state::UserState;
use leadscore_engine::timestamp::Millis;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

const H: Millis = 3_600_000;
const M: Millis = 60_000;
const D: Millis = 24 * H;
/// 2026-01-05T00:00:00Z: aligned to the day, so every hour-grid time sits on cap-window and
/// inactivity boundaries as often as possible.
const T0: Millis = 1_767_571_200_000;
const TOPIC: &str = "lead-events";

// ---------------------------------------------------------------------------------------------
// Model rules: written by hand next to each TOML file, never derived from the engine's parser.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Test {
    Equals(Scalar),
    In(Vec<Scalar>),
    NotIn(Vec<Scalar>),
    Exists(bool),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
}

#[derive(Clone, Debug)]
struct Pred {
    key: &'static str,
    test: Test,
}

#[derive(Clone, Debug)]
struct Matcher {
    kind: EventType,
    name: Option<&'static str>,
    app_id: Option<&'static str>,
    props: Vec<Pred>,
}

#[derive(Clone, Debug)]
struct Group {
    name: &'static str,
    delta: i64,
    /// (points, period in ms)
    cap: Option<(i64, Millis)>,
    triggers: Vec<Matcher>,
}

#[derive(Clone, Copy, Debug)]
enum Decay {
    Delta(i64),
    /// numerator / denominator, exact decimal
    Factor(i64, i64),
}

#[derive(Clone, Debug)]
struct ModelRules {
    dedupe: Millis,
    min: Option<i64>,
    max: Option<i64>,
    entry: Vec<Matcher>,
    reentry: Millis,
    include: Vec<Pred>,
    exclude: Vec<Pred>,
    groups: Vec<Group>,
    inactivity: Option<(Millis, Decay)>,
    tracked: Vec<&'static str>,
}

fn s(v: &str) -> Scalar {
    Scalar::Str(v.to_string())
}

fn strs(vs: &[&str]) -> Vec<Scalar> {
    vs.iter().map(|v| s(v)).collect()
}

fn pred(key: &'static str, test: Test) -> Pred {
    Pred { key, test }
}

fn on(kind: EventType) -> Matcher {
    Matcher {
        kind,
        name: None,
        app_id: None,
        props: Vec::new(),
    }
}

fn custom(name: &'static str) -> Matcher {
    Matcher {
        name: Some(name),
        ..on(EventType::CustomEvent)
    }
}

impl Matcher {
    fn app(mut self, app: &'static str) -> Matcher {
        self.app_id = Some(app);
        self
    }
    fn named(mut self, name: &'static str) -> Matcher {
        self.name = Some(name);
        self
    }
    fn prop(mut self, p: Pred) -> Matcher {
        self.props.push(p);
        self
    }
}

/// Numbers compare by value (an integer equals the same float), other kinds only to their own.
fn loose_eq(a: &Scalar, b: &Scalar) -> bool {
    match (a, b) {
        (Scalar::Str(x), Scalar::Str(y)) => x == y,
        (Scalar::Bool(x), Scalar::Bool(y)) => x == y,
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

fn num(v: &Scalar) -> Option<f64> {
    match v {
        Scalar::Int(i) => Some(*i as f64),
        Scalar::Float(f) => Some(*f),
        _ => None,
    }
}

fn eval(t: &Test, v: Option<&Scalar>) -> bool {
    let n = v.and_then(num);
    match t {
        Test::Equals(x) => v.is_some_and(|v| loose_eq(v, x)),
        Test::In(xs) => v.is_some_and(|v| xs.iter().any(|x| loose_eq(v, x))),
        Test::NotIn(xs) => v.is_none_or(|v| !xs.iter().any(|x| loose_eq(v, x))),
        Test::Exists(b) => v.is_some() == *b,
        Test::Gt(x) => n.is_some_and(|n| n > *x),
        Test::Gte(x) => n.is_some_and(|n| n >= *x),
        Test::Lt(x) => n.is_some_and(|n| n < *x),
        Test::Lte(x) => n.is_some_and(|n| n <= *x),
    }
}

fn matches(m: &Matcher, e: &Event) -> bool {
    m.kind == e.kind
        && m.name.is_none_or(|n| e.name.as_deref() == Some(n))
        && m.app_id.is_none_or(|a| e.app_id.as_deref() == Some(a))
        && m.props.iter().all(|p| {
            let v = e
                .properties
                .iter()
                .find(|(k, _)| k == p.key)
                .map(|(_, v)| v);
            eval(&p.test, v)
        })
}

// ---------------------------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct MUser {
    score: i64,
    enrolled: bool,
    attrs: BTreeMap<String, Scalar>,
    /// (group index, window start) -> points applied (absolute value)
    caps: BTreeMap<(usize, Millis), i64>,
    last_change: Option<Millis>,
    ext_updated_at: Option<Millis>,
    timer: Option<Millis>,
    /// (event id, event time, partition clock when recorded)
    seen: Vec<(String, Millis, Millis)>,
    /// published changes, each inactivity window counted as one
    count: u64,
}

/// A score change in a form both sides are normalised to.
#[derive(Clone, PartialEq)]
struct Change {
    id: String,
    time: Millis,
    previous: i64,
    score: i64,
    delta: i64,
    kind: ReasonKind,
    group: Option<String>,
    source: Option<String>,
    windows: u32,
    attrs: Vec<(String, String)>,
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} t={} {}->{} ({:+}) {}",
            self.kind.as_str(),
            ht(self.time),
            self.previous,
            self.score,
            self.delta,
            self.group.as_deref().unwrap_or("-"),
        )?;
        if self.windows != 0 {
            write!(f, " windows={}", self.windows)?;
        }
        write!(
            f,
            " src={} attrs={:?} id={}",
            self.source.as_deref().unwrap_or("-"),
            self.attrs,
            self.id
        )
    }
}

/// The observable end state of a user.
#[derive(Clone, Debug, PartialEq, Default)]
struct Final {
    score: i64,
    enrolled: bool,
    attrs: Vec<(String, String)>,
    last_change: Option<String>,
    timer_due: Option<String>,
}

fn show(v: &Scalar) -> String {
    match v {
        Scalar::Str(x) => format!("{x:?}"),
        Scalar::Int(i) => format!("{i}i"),
        Scalar::Float(x) => format!("{x:?}f"),
        Scalar::Bool(b) => format!("{b}"),
    }
}

/// A time as hours from T0 (every generated time is on the hour grid).
fn ht(t: Millis) -> String {
    let d = t - T0;
    if d % H == 0 {
        format!("{}h", d / H)
    } else {
        format!("{d}ms")
    }
}

/// How often the model met each situation worth testing (see `the_generator_reaches_...`).
#[derive(Default)]
struct Stats(BTreeMap<&'static str, u64>);

impl Stats {
    fn bump(&mut self, what: &'static str) {
        *self.0.entry(what).or_default() += 1;
    }
}

struct Model {
    r: ModelRules,
    clock: Option<Millis>,
    users: BTreeMap<String, MUser>,
    changes: Vec<(String, Change)>,
    stats: Stats,
}

impl Model {
    fn new(r: ModelRules) -> Model {
        Model {
            r,
            clock: None,
            users: BTreeMap::new(),
            changes: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn in_audience(r: &ModelRules, u: &MUser) -> bool {
        r.include.iter().all(|p| eval(&p.test, u.attrs.get(p.key)))
            && !r.exclude.iter().any(|p| eval(&p.test, u.attrs.get(p.key)))
    }

    fn tracked(r: &ModelRules, u: &MUser) -> Vec<(String, String)> {
        // sorted by name, as the snapshot is
        u.attrs
            .iter()
            .filter(|(k, _)| r.tracked.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), show(v)))
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        user: &str,
        time: Millis,
        previous: i64,
        kind: ReasonKind,
        group: Option<&str>,
        source: Option<String>,
        windows: u32,
    ) {
        let u = self.users.get_mut(user).expect("user exists");
        u.count += if kind == ReasonKind::Inactivity {
            u64::from(windows)
        } else {
            1
        };
        let c = Change {
            id: format!("{}:{}@{}#{}", kind.as_str(), user, time, u.count),
            time,
            previous,
            score: u.score,
            delta: u.score - previous,
            kind,
            group: group.map(str::to_string),
            source,
            windows,
            attrs: Self::tracked(&self.r, u),
        };
        self.changes.push((user.to_string(), c));
    }

    /// Fires every timer due at or before the clock, one window at a time.
    fn fire_due(&mut self) {
        let Some(clock) = self.clock else { return };
        let Some((window, decay)) = self.r.inactivity else {
            return;
        };
        // docs/semantics.md: due timers fire in order of due time, then user id (a user's
        // collapsed decay is placed by the first window it covers).
        let mut due: Vec<(Millis, String)> = self
            .users
            .iter()
            .filter_map(|(n, u)| u.timer.filter(|&t| t <= clock).map(|t| (t, n.clone())))
            .collect();
        due.sort();
        if due.len() > 1 && due.windows(2).any(|w| w[0].1 > w[1].1) {
            self.stats
                .bump("timers of several users due, not in user order");
        }
        for (_, name) in due {
            let r = self.r.clone();
            let mut fired: Option<(i64, Millis, u32)> = None; // (previous, last T, windows)
            loop {
                let u = self.users.get_mut(&name).expect("user");
                let Some(t) = u.timer else { break };
                if t > clock {
                    break;
                }
                if !u.enrolled || !Self::in_audience(&r, u) {
                    self.stats.bump("timer ended: not enrolled or excluded");
                    u.timer = None;
                    break;
                }
                let raw = match decay {
                    Decay::Delta(d) => u.score + d,
                    Decay::Factor(n, den) => u.score * n / den,
                };
                let new = {
                    let x = r.min.map_or(raw, |m| raw.max(m));
                    r.max.map_or(x, |m| x.min(m))
                };
                if new == u.score {
                    self.stats.bump("timer ended: zero change");
                    u.timer = None;
                    break;
                }
                if u.score < 0 {
                    self.stats.bump("decay of a negative score");
                }
                let prev = fired.map_or(u.score, |f| f.0);
                let windows = fired.map_or(0, |f| f.2) + 1;
                u.score = new;
                u.last_change = Some(t);
                u.timer = Some(t + window);
                fired = Some((prev, t, windows));
            }
            if let Some((prev, t, windows)) = fired {
                if windows > 1 {
                    self.stats.bump("collapsed decay");
                }
                self.publish(&name, t, prev, ReasonKind::Inactivity, None, None, windows);
            }
        }
    }

    fn process(&mut self, e: &Event, offset: usize) {
        let clock = self.clock.map_or(e.time, |c| c.max(e.time));
        self.clock = Some(clock);
        self.fire_due();
        let user = e.user_id.to_string();
        if e.kind == EventType::UserDeleted {
            self.stats.bump("deletion");
            self.users.remove(&user);
            return;
        }
        let r = self.r.clone();
        let u = self.users.entry(user.clone()).or_default();

        // 8. Duplicates.
        if let Some(id) = e.event_id.as_deref() {
            // SPEC 3.8: forgotten once the clock has passed `rec` by at least two windows.
            let hit = |seen: &[(String, Millis, Millis)]| {
                seen.iter()
                    .any(|(sid, t0, _)| sid == id && e.time < t0 + r.dedupe)
            };
            let before = hit(&u.seen);
            u.seen.retain(|(_, _, rec)| clock < rec + 2 * r.dedupe);
            if hit(&u.seen) {
                self.stats.bump("duplicate dropped");
                return;
            }
            if before {
                self.stats.bump("id forgotten, applied again");
            }
            // docs/semantics.md: an id applied again (not a duplicate: at or after the earlier
            // event's time plus the window) takes the earlier application's place.
            u.seen.retain(|(sid, _, _)| sid != id);
            // docs/semantics.md: the recording clock is kept with its distance from the event
            // time rounded up to a multiple of 2^k, k = max(0, bit length - 9).
            let late = (clock - e.time) as u64;
            let k = (u64::BITS - late.leading_zeros()).saturating_sub(9);
            let rec = e.time + (late.div_ceil(1 << k) << k) as Millis;
            u.seen.push((id.to_string(), e.time, rec));
            // docs/semantics.md: at most 4,096 ids per user, the first recorded dropped first
            if u.seen.len() > 4096 {
                u.seen.remove(0);
            }
        }
        let source = e
            .event_id
            .as_deref()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{TOPIC}/0/{offset}"));

        // 1. Attributes.
        let before = Self::tracked(&r, u);
        match e.kind {
            EventType::AttributeChanged => {
                let name = e.name.clone().expect("attribute name");
                match &e.value {
                    Some(v) => {
                        u.attrs.insert(name, v.clone());
                    }
                    None => {
                        u.attrs.remove(&name);
                    }
                }
            }
            EventType::EmailAdded => {
                u.attrs
                    .insert("email".into(), e.value.clone().expect("email"));
            }
            _ => {}
        }
        let tracked_changed = Self::tracked(&r, u) != before;

        // 2. Enrollment.
        let enrolling = !u.enrolled && r.entry.iter().any(|m| matches(m, e));
        if enrolling {
            u.enrolled = true;
        }

        let previous = u.score;
        let mut scored: Option<(ReasonKind, Option<&'static str>)> = None;
        if e.kind == EventType::ExternalScore {
            // 6. External scores.
            let stale = matches!((e.updated_at, u.ext_updated_at), (Some(a), Some(b)) if a < b);
            if stale {
                self.stats.bump("stale external score");
            } else {
                u.ext_updated_at = e.updated_at;
                let raw = match e.score.expect("score op") {
                    ScoreOp::Set(v) => v,
                    ScoreOp::Increment(i) => u.score + i,
                };
                let new = {
                    let x = r.min.map_or(raw, |m| raw.max(m));
                    r.max.map_or(x, |m| x.min(m))
                };
                if new != u.score {
                    u.score = new;
                    scored = Some((ReasonKind::External, None));
                } else {
                    self.stats.bump("external score without change");
                }
            }
        } else if u.enrolled
            && !Self::in_audience(&r, u)
            && r.groups
                .iter()
                .any(|g| g.triggers.iter().any(|m| matches(m, e)))
        {
            self.stats.bump("outside the audience");
        } else if u.enrolled
            && Self::in_audience(&r, u)
            && u.last_change.is_some_and(|t| e.time < t + r.reentry)
            && r.groups
                .iter()
                .any(|g| g.triggers.iter().any(|m| matches(m, e)))
        {
            self.stats.bump("re-entry wait");
        } else if u.enrolled
            && Self::in_audience(&r, u)
            && u.last_change.is_none_or(|t| e.time >= t + r.reentry)
        {
            // 3, 5, 4: audience, re-entry, first matching group, cap, clamp.
            if let Some((gi, g)) = r
                .groups
                .iter()
                .enumerate()
                .find(|(_, g)| g.triggers.iter().any(|m| matches(m, e)))
            {
                let mut delta = g.delta;
                let mut key = None;
                if let Some((points, per)) = g.cap {
                    let w = e.time.div_euclid(per) * per;
                    // SPEC 3.4: everything the group applied in the window counts, except in
                    // windows docs/semantics.md lets the engine forget: ended at or before the
                    // re-entry start, more than a period before the clock and more than a week
                    // before it (a late external score can move the start back before one),
                    // and beyond the latest 192.
                    let start = u.last_change.map_or(Millis::MIN, |t| t + r.reentry);
                    u.caps.retain(|&(g, cw), _| {
                        g != gi
                            || cw == w
                            || cw + per > start
                            || cw + 2 * per > clock
                            || cw + per > clock - 7 * D
                    });
                    loop {
                        let others: Vec<Millis> = u
                            .caps
                            .keys()
                            .filter(|&&(g, cw)| g == gi && cw != w)
                            .map(|&(_, cw)| cw)
                            .collect();
                        if others.len() < 192 {
                            break;
                        }
                        self.stats.bump("cap windows over the bound");
                        u.caps
                            .remove(&(gi, *others.iter().min().expect("192 or more")));
                    }
                    let used = u.caps.get(&(gi, w)).copied().unwrap_or(0);
                    let left = (points - used).max(0);
                    if left == 0 {
                        self.stats.bump("cap spent");
                    } else if delta.abs() > left {
                        self.stats.bump("cap cut");
                    }
                    delta = delta.clamp(-left, left);
                    key = Some((gi, w));
                }
                let raw = u.score + delta;
                let new = {
                    let x = r.min.map_or(raw, |m| raw.max(m));
                    r.max.map_or(x, |m| x.min(m))
                };
                if new != raw {
                    self.stats.bump("rule clamped");
                }
                if new != u.score {
                    self.stats.bump("rule scores");
                    if enrolling {
                        self.stats.bump("enrolling event scores");
                    }
                    if e.time < clock {
                        self.stats.bump("late event scores");
                    }
                    if let Some(k) = key {
                        *u.caps.entry(k).or_default() += (new - u.score).abs();
                    }
                    u.score = new;
                    scored = Some((ReasonKind::Rule, Some(g.name)));
                }
            }
        }
        if let Some((kind, group)) = scored {
            u.last_change = Some(e.time);
            u.timer = r.inactivity.map(|(w, _)| e.time + w);
            if u.timer.is_some_and(|t| t <= clock) {
                self.stats.bump("timer armed behind the clock");
            }
            if tracked_changed {
                self.stats.bump("tracked attribute with a score change");
            }
            self.publish(&user, e.time, previous, kind, group, Some(source), 0);
        } else if tracked_changed {
            self.stats.bump("tracked attribute alone");
            self.publish(
                &user,
                e.time,
                previous,
                ReasonKind::Attribute,
                None,
                Some(source),
                0,
            );
        }
    }

    fn advance(&mut self, to: Millis) {
        self.clock = Some(self.clock.map_or(to, |c| c.max(to)));
        self.fire_due();
    }

    fn finals(&self) -> BTreeMap<String, Final> {
        self.users
            .iter()
            .map(|(n, u)| {
                (
                    n.clone(),
                    Final {
                        score: u.score,
                        enrolled: u.enrolled,
                        attrs: u.attrs.iter().map(|(k, v)| (k.clone(), show(v))).collect(),
                        last_change: u.last_change.map(ht),
                        timer_due: u.timer.map(ht),
                    },
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Rule sets: the TOML the engine reads and the model's hand-written twin.
// ---------------------------------------------------------------------------------------------

/// SPEC section 3's seed canvas, as shipped (`examples/rules/seed-canvas.toml`).
const SEED: &str = leadscore_engine::rules::Rules::SEED_CANVAS;

fn seed_model() -> ModelRules {
    ModelRules {
        dedupe: D,
        min: Some(0),
        max: None,
        entry: vec![on(EventType::EmailAdded), on(EventType::ExternalScore)],
        reentry: 0,
        include: vec![],
        exclude: vec![
            pred("is_employee", Test::Equals(Scalar::Bool(true))),
            pred("lifecycle_stage", Test::In(strs(&["customer"]))),
        ],
        groups: vec![
            Group {
                name: "engaged",
                delta: 1,
                cap: None,
                triggers: vec![
                    on(EventType::SessionStart),
                    custom("registered"),
                    custom("webinar_joined"),
                ],
            },
            Group {
                name: "high intent",
                delta: 5,
                cap: Some((20, D)),
                triggers: vec![
                    custom("demo_requested"),
                    custom("pricing_viewed")
                        .prop(pred("plan", Test::In(strs(&["pro", "enterprise"])))),
                ],
            },
            Group {
                name: "unsubscribed",
                delta: -1,
                cap: None,
                triggers: vec![custom("email_unsubscribed")],
            },
        ],
        inactivity: Some((7 * D, Decay::Delta(-1))),
        tracked: vec!["lead_status"],
    }
}

/// min and max, caps (positive and negative groups), a non-zero re-entry window, a short dedupe
/// window (ids forgotten within a run), a group on a tracked attribute change, `email` tracked.
const CAPPED: &str = r#"
dedupe_window = "6h"

[score]
min = -6
max = 25

[entry]
on = [{ type = "email_added" }, { type = "external_score" }, { type = "session_start", app_id = "web" }]
reentry_window = "2h"

[audience]
exclude = [
  { attribute = "is_employee", equals = true },
  { attribute = "lifecycle_stage", in = ["customer"] },
]

[[group]]
name = "status"
delta = 2
triggers = [{ type = "attribute_changed", name = "lead_status" }]

[[group]]
name = "engaged"
delta = 3
cap = { points = 7, per = "6h" }
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
delta = -4
cap = { points = 6, per = "1d" }
triggers = [{ type = "custom_event", name = "email_unsubscribed" }, { type = "email_added" }]

[inactivity]
window = "1d"
delta = -4

[output]
tracked_attributes = ["lead_status", "email"]
"#;

fn capped_model() -> ModelRules {
    ModelRules {
        dedupe: 6 * H,
        min: Some(-6),
        max: Some(25),
        entry: vec![
            on(EventType::EmailAdded),
            on(EventType::ExternalScore),
            on(EventType::SessionStart).app("web"),
        ],
        reentry: 2 * H,
        include: vec![],
        exclude: vec![
            pred("is_employee", Test::Equals(Scalar::Bool(true))),
            pred("lifecycle_stage", Test::In(strs(&["customer"]))),
        ],
        groups: vec![
            Group {
                name: "status",
                delta: 2,
                cap: None,
                triggers: vec![on(EventType::AttributeChanged).named("lead_status")],
            },
            Group {
                name: "engaged",
                delta: 3,
                cap: Some((7, 6 * H)),
                triggers: vec![on(EventType::SessionStart), custom("webinar_joined")],
            },
            Group {
                name: "high intent",
                delta: 5,
                cap: Some((12, D)),
                triggers: vec![
                    custom("demo_requested"),
                    custom("pricing_viewed")
                        .prop(pred("plan", Test::In(strs(&["pro", "enterprise"])))),
                ],
            },
            Group {
                name: "unsubscribed",
                delta: -4,
                cap: Some((6, D)),
                triggers: vec![custom("email_unsubscribed"), on(EventType::EmailAdded)],
            },
        ],
        inactivity: Some((D, Decay::Delta(-4))),
        tracked: vec!["lead_status", "email"],
    }
}

/// Factor decay over negative and positive scores.
const FACTOR: &str = r#"
dedupe_window = "24h"

[score]
min = -300
max = 700

[entry]
on = [{ type = "custom_event", name = "registered" }, { type = "external_score" }]

[audience]
exclude = [{ attribute = "is_employee", equals = true }]

[[group]]
name = "engaged"
delta = 4
triggers = [{ type = "session_start" }, { type = "custom_event", name = "webinar_joined" }, { type = "custom_event", name = "registered" }]

[[group]]
name = "high intent"
delta = 9
cap = { points = 20, per = "12h" }
triggers = [
  { type = "custom_event", name = "demo_requested" },
  { type = "custom_event", name = "pricing_viewed", properties = [{ property = "plan", equals = "enterprise" }] },
]

[[group]]
name = "negative"
delta = -7
triggers = [{ type = "custom_event", name = "email_unsubscribed" }]

[inactivity]
window = "10h"
factor = 0.57
"#;

fn factor_model() -> ModelRules {
    ModelRules {
        dedupe: D,
        min: Some(-300),
        max: Some(700),
        entry: vec![custom("registered"), on(EventType::ExternalScore)],
        reentry: 0,
        include: vec![],
        exclude: vec![pred("is_employee", Test::Equals(Scalar::Bool(true)))],
        groups: vec![
            Group {
                name: "engaged",
                delta: 4,
                cap: None,
                triggers: vec![
                    on(EventType::SessionStart),
                    custom("webinar_joined"),
                    custom("registered"),
                ],
            },
            Group {
                name: "high intent",
                delta: 9,
                cap: Some((20, 12 * H)),
                triggers: vec![
                    custom("demo_requested"),
                    custom("pricing_viewed").prop(pred("plan", Test::Equals(s("enterprise")))),
                ],
            },
            Group {
                name: "negative",
                delta: -7,
                cap: None,
                triggers: vec![custom("email_unsubscribed")],
            },
        ],
        inactivity: Some((10 * H, Decay::Factor(57, 100))),
        tracked: vec!["lead_status"],
    }
}

/// Include predicates of every kind, property predicates, app_id matchers, no `min`.
const INCLUDE: &str = r#"
dedupe_window = "12h"

[score]
max = 40

[entry]
on = [{ type = "email_added" }, { type = "attribute_changed", name = "lifecycle_stage" }, { type = "external_score" }]
reentry_window = "1h"

[audience]
include = [
  { attribute = "employees", gt = 10 },
  { attribute = "employees", lt = 500 },
  { attribute = "country", in = ["FR", "DE", "US"] },
  { attribute = "lifecycle_stage", not_in = ["customer", "churned"] },
  { attribute = "email", exists = true },
]
exclude = [
  { attribute = "is_employee", equals = true },
  { attribute = "lead_status", equals = "Disqualified" },
]

[[group]]
name = "app"
delta = 2
triggers = [
  { type = "session_start", app_id = "ios" },
  { type = "custom_event", name = "pricing_viewed", properties = [{ property = "seats", gte = 5 }, { property = "seats", lte = 100 }] },
  { type = "custom_event", name = "demo_requested", properties = [{ property = "plan", exists = false }] },
]

[[group]]
name = "any"
delta = 1
triggers = [
  { type = "session_start" },
  { type = "custom_event", name = "pricing_viewed", properties = [{ property = "plan", not_in = ["free"] }] },
]

[[group]]
name = "neg"
delta = -2
triggers = [
  { type = "custom_event", name = "email_unsubscribed" },
  { type = "custom_event", properties = [{ property = "seats", lt = 0 }] },
]

[inactivity]
window = "3d"
delta = -3
"#;

fn include_model() -> ModelRules {
    ModelRules {
        dedupe: 12 * H,
        min: None,
        max: Some(40),
        entry: vec![
            on(EventType::EmailAdded),
            on(EventType::AttributeChanged).named("lifecycle_stage"),
            on(EventType::ExternalScore),
        ],
        reentry: H,
        include: vec![
            pred("employees", Test::Gt(10.0)),
            pred("employees", Test::Lt(500.0)),
            pred("country", Test::In(strs(&["FR", "DE", "US"]))),
            pred(
                "lifecycle_stage",
                Test::NotIn(strs(&["customer", "churned"])),
            ),
            pred("email", Test::Exists(true)),
        ],
        exclude: vec![
            pred("is_employee", Test::Equals(Scalar::Bool(true))),
            pred("lead_status", Test::Equals(s("Disqualified"))),
        ],
        groups: vec![
            Group {
                name: "app",
                delta: 2,
                cap: None,
                triggers: vec![
                    on(EventType::SessionStart).app("ios"),
                    custom("pricing_viewed")
                        .prop(pred("seats", Test::Gte(5.0)))
                        .prop(pred("seats", Test::Lte(100.0))),
                    custom("demo_requested").prop(pred("plan", Test::Exists(false))),
                ],
            },
            Group {
                name: "any",
                delta: 1,
                cap: None,
                triggers: vec![
                    on(EventType::SessionStart),
                    custom("pricing_viewed").prop(pred("plan", Test::NotIn(strs(&["free"])))),
                ],
            },
            Group {
                name: "neg",
                delta: -2,
                cap: None,
                triggers: vec![
                    custom("email_unsubscribed"),
                    on(EventType::CustomEvent).prop(pred("seats", Test::Lt(0.0))),
                ],
            },
        ],
        inactivity: Some((3 * D, Decay::Delta(-3))),
        tracked: vec!["lead_status"],
    }
}

/// Corners: `dedupe_window = "0s"`, external scores that do not enroll, a tracked attribute that
/// also enrolls, min and max both on one side of zero, so 0 (the initial score) is outside them.
const CORNERS: &str = r#"
dedupe_window = "0s"

[score]
min = -9
max = -2

[entry]
on = [{ type = "attribute_changed", name = "lifecycle_stage" }, { type = "custom_event", name = "registered" }]

[[group]]
name = "up"
delta = 2
triggers = [{ type = "session_start" }, { type = "custom_event", name = "registered" }]

[[group]]
name = "down"
delta = -5
triggers = [{ type = "custom_event", name = "email_unsubscribed" }, { type = "custom_event", name = "demo_requested" }]

[inactivity]
window = "2d"
delta = -1

[output]
tracked_attributes = ["lead_status", "lifecycle_stage"]
"#;

fn corners_model() -> ModelRules {
    ModelRules {
        dedupe: 0,
        min: Some(-9),
        max: Some(-2),
        entry: vec![
            on(EventType::AttributeChanged).named("lifecycle_stage"),
            custom("registered"),
        ],
        reentry: 0,
        include: vec![],
        exclude: vec![],
        groups: vec![
            Group {
                name: "up",
                delta: 2,
                cap: None,
                triggers: vec![on(EventType::SessionStart), custom("registered")],
            },
            Group {
                name: "down",
                delta: -5,
                cap: None,
                triggers: vec![custom("email_unsubscribed"), custom("demo_requested")],
            },
        ],
        inactivity: Some((2 * D, Decay::Delta(-1))),
        tracked: vec!["lead_status", "lifecycle_stage"],
    }
}

// ---------------------------------------------------------------------------------------------
// Running both and comparing.
// ---------------------------------------------------------------------------------------------

fn engine(src: &str) -> Engine {
    Engine::new(parse_str(src, "reference.toml").expect("rules load"))
}

fn origin(offset: usize) -> Origin<'static> {
    Origin {
        topic: TOPIC,
        partition: 0,
        offset: offset as i64,
    }
}

fn norm_change(c: &ScoreChange) -> Change {
    Change {
        id: c.event_id().to_string(),
        time: c.time,
        previous: c.previous_score,
        score: c.score,
        delta: c.delta,
        kind: c.reason.kind,
        group: c.reason.group.as_deref().map(str::to_string),
        source: c.reason.source_event_id.as_deref().map(str::to_string),
        windows: c.windows,
        attrs: c
            .attributes
            .iter()
            .map(|(k, v)| (k.to_string(), show(&v.to_owned())))
            .collect(),
    }
}

fn norm_state(st: &UserState) -> Final {
    Final {
        score: st.score,
        enrolled: st.enrolled,
        attrs: st
            .attributes()
            .iter()
            .map(|(k, v)| (k.to_string(), show(&v.to_owned())))
            .collect(),
        last_change: st.last_change.get().map(ht),
        timer_due: st.timer_due.get().map(ht),
    }
}

type PerUser = BTreeMap<String, (Final, Vec<Change>)>;

fn group_by_user(finals: BTreeMap<String, Final>, changes: Vec<(String, Change)>) -> PerUser {
    let mut out: PerUser = finals
        .into_iter()
        .map(|(u, f)| (u, (f, Vec::new())))
        .collect();
    for (u, c) in changes {
        out.entry(u).or_default().1.push(c);
    }
    out
}

/// The order of all published changes, across users.
type Stream = Vec<String>;

fn run_engine(src: &str, events: &[Event], now: Option<Millis>) -> (PerUser, Stream) {
    let e = engine(src);
    let mut users: BTreeMap<String, UserState> = BTreeMap::new();
    let mut changes = Vec::new();
    let mut p = Partition::new();
    for (i, ev) in events.iter().enumerate() {
        p.process(&e, &mut users, ev, origin(i), &mut changes);
    }
    if let Some(now) = now {
        p.advance(&e, &mut users, now, &mut changes);
    }
    let stream = changes.iter().map(|c| c.event_id().to_string()).collect();
    let per_user = group_by_user(
        users
            .iter()
            .map(|(u, st)| (u.clone(), norm_state(st)))
            .collect(),
        changes
            .iter()
            .map(|c| (c.user_id.to_string(), norm_change(c)))
            .collect(),
    );
    (per_user, stream)
}

fn run_model(r: ModelRules, events: &[Event], now: Option<Millis>) -> (PerUser, Stream, Stats) {
    let mut m = Model::new(r);
    for (i, ev) in events.iter().enumerate() {
        m.process(ev, i);
    }
    if let Some(now) = now {
        m.advance(now);
    }
    let changes = std::mem::take(&mut m.changes);
    let stream = changes.iter().map(|(_, c)| c.id.clone()).collect();
    (group_by_user(m.finals(), changes), stream, m.stats)
}

/// The first difference between the model and the engine, if any. A user the engine keeps no
/// state for compares as a fresh user (storage of empty states is not observable semantics).
fn diff(model: &PerUser, engine: &PerUser) -> Option<String> {
    let users: BTreeSet<&String> = model.keys().chain(engine.keys()).collect();
    let empty = (Final::default(), Vec::new());
    for u in users {
        let (mf, mc) = model.get(u).unwrap_or(&empty);
        let (ef, ec) = engine.get(u).unwrap_or(&empty);
        if let Some(i) = (0..mc.len().max(ec.len())).find(|&i| mc.get(i) != ec.get(i)) {
            return Some(format!(
                "user {u}: change #{i} differs\n  model:  {:?}\n  engine: {:?}\n  model changes:  {mc:#?}\n  engine changes: {ec:#?}",
                mc.get(i),
                ec.get(i)
            ));
        }
        if mf != ef {
            return Some(format!(
                "user {u}: final state differs\n  model:  {mf:?}\n  engine: {ef:?}\n  changes: {mc:#?}"
            ));
        }
    }
    None
}

fn compare(src: &str, model: ModelRules, case: &Case) -> Result<Stats, String> {
    let now = case.now();
    let events = &case.events;
    let (m, m_stream, stats) = run_model(model, events, now);
    let (e, e_stream) = run_engine(src, events, now);
    let d = diff(&m, &e).or_else(|| {
        (m_stream != e_stream).then(|| {
            format!("the order of changes across users differs\n  model:  {m_stream:#?}\n  engine: {e_stream:#?}")
        })
    });
    match d {
        None => Ok(stats),
        Some(d) => {
            let shown: Vec<String> = events
                .iter()
                .enumerate()
                .map(|(i, e)| show_event(i, e))
                .collect();
            Err(format!("{d}\nevents as run:\n{}", shown.join("\n")))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generation.
// ---------------------------------------------------------------------------------------------

const USERS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone)]
struct Case {
    /// Starts with a profile for every user that passes every audience used (before T0).
    events: Vec<Event>,
    /// hours the final advance goes past the last clock
    now_extra: i64,
}

impl Case {
    fn now(&self) -> Option<Millis> {
        self.events
            .iter()
            .map(|e| e.time)
            .max()
            .map(|c| c + self.now_extra * H)
    }
}

fn show_event(i: usize, e: &Event) -> String {
    let mut out = format!("#{i} {} t={} {}", e.user_id, ht(e.time), e.kind.as_str());
    if let Some(id) = &e.event_id {
        out += &format!(" id={id}");
    }
    if let Some(n) = &e.name {
        out += &format!(" name={n}");
    }
    if let Some(a) = &e.app_id {
        out += &format!(" app={a}");
    }
    for (k, v) in &e.properties {
        out += &format!(" {k}={}", show(v));
    }
    match e.kind {
        EventType::AttributeChanged | EventType::EmailAdded => {
            out += &format!(" value={}", e.value.as_ref().map_or("null".into(), show));
        }
        _ => {}
    }
    if let Some(op) = e.score {
        out += &format!(" {op:?}");
    }
    if let Some(u) = e.updated_at {
        out += &format!(" updated_at={}", ht(u));
    }
    out
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "now = last clock + {}h", self.now_extra)?;
        for (i, e) in self.events.iter().enumerate() {
            writeln!(f, "{}", show_event(i, e))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    New {
        user: usize,
        kind: u8,
        a: u8,
        b: u8,
        id: Option<u8>,
        upd: Option<u8>,
    },
    /// Re-send an earlier event (same id, same fields) `back` events ago, shifted by `dt` hours.
    Retry { back: usize, dt: usize },
    /// `n` events of one kind by one user, `spacing` hours apart, to spend caps.
    Burst {
        user: usize,
        kind: u8,
        n: usize,
        spacing: i64,
    },
}

/// Hour offsets of a retry: the same time, around it, and around the dedupe windows used.
const RETRY_DT: [i64; 14] = [0, 0, 0, 1, -1, -3, 5, 6, 7, 11, 12, 23, 24, 25];

/// How far the cursor moves before an event, in hours, indexed by a number in 0..64: mostly
/// not at all or an hour, sometimes days (idle partitions, collapsed decays).
fn advance_hours(adv: u8) -> i64 {
    match adv {
        0..=19 => 0,
        20..=43 => 1,
        44..=51 => 2,
        52..=55 => 3,
        56..=58 => 6,
        59 => 12,
        60 => 24,
        61 => 48,
        62 => 168,
        _ => 240,
    }
}

fn attr_value(name: &str, a: u8) -> Option<Scalar> {
    let pick = |vs: Vec<Option<Scalar>>| vs[a as usize % vs.len()].clone();
    match name {
        "is_employee" => pick(vec![
            Some(Scalar::Bool(true)),
            Some(Scalar::Bool(false)),
            Some(s("true")),
            None,
            None,
            None,
            Some(Scalar::Int(1)),
        ]),
        "lifecycle_stage" => pick(vec![
            Some(s("customer")),
            Some(s("lead")),
            Some(s("lead")),
            Some(s("lead")),
            Some(s("churned")),
            None,
            Some(Scalar::Int(3)),
        ]),
        "lead_status" => pick(vec![
            Some(s("Open")),
            Some(s("Open")),
            Some(s("MQL")),
            Some(s("SQL")),
            Some(s("Disqualified")),
            None,
        ]),
        "employees" => pick(vec![
            Some(Scalar::Int(5)),
            Some(Scalar::Int(10)),
            Some(Scalar::Float(10.5)),
            Some(Scalar::Int(11)),
            Some(Scalar::Int(11)),
            Some(Scalar::Int(499)),
            Some(Scalar::Float(499.0)),
            Some(Scalar::Int(500)),
            Some(s("many")),
            None,
        ]),
        _ => pick(vec![
            Some(s("FR")),
            Some(s("DE")),
            Some(s("US")),
            Some(s("US")),
            Some(s("RU")),
            None,
            Some(Scalar::Int(33)),
        ]),
    }
}

/// Event kinds, by a number in 0..34: sessions and demo requests often (to spend caps),
/// attributes often (to move users in and out of the audience), deletions rarely.
fn new_event(user: &str, time: Millis, kind: u8, a: u8, b: u8) -> Event {
    let mut e = Event::new(user, time, EventType::SessionStart);
    let custom = |e: &mut Event, name: &str| {
        e.kind = EventType::CustomEvent;
        e.name = Some(name.to_string());
    };
    match kind {
        0..=5 => e.app_id = [None, Some("web"), Some("ios")][a as usize % 3].map(str::to_string),
        6 => custom(&mut e, "registered"),
        7 | 8 => custom(&mut e, "webinar_joined"),
        9..=13 => custom(&mut e, "demo_requested"),
        14 | 15 => {
            custom(&mut e, "pricing_viewed");
            let plan = [
                Some(s("pro")),
                Some(s("enterprise")),
                Some(s("free")),
                Some(Scalar::Int(1)),
                None,
            ][a as usize % 5]
                .clone();
            let seats = [
                Some(Scalar::Int(3)),
                Some(Scalar::Int(5)),
                Some(Scalar::Float(5.0)),
                Some(Scalar::Int(100)),
                Some(Scalar::Float(100.5)),
                Some(Scalar::Int(-1)),
                Some(s("10")),
                None,
            ][b as usize % 8]
                .clone();
            if let Some(p) = plan {
                e.properties.push(("plan".into(), p));
            }
            if let Some(v) = seats {
                e.properties.push(("seats".into(), v));
            }
        }
        16 => custom(&mut e, "email_unsubscribed"),
        17 => {
            custom(&mut e, "noise");
            let seats = [
                Scalar::Int(-2),
                Scalar::Float(-0.5),
                Scalar::Int(0),
                Scalar::Bool(false),
            ][b as usize % 4]
                .clone();
            e.properties.push(("seats".into(), seats));
        }
        18 | 19 => {
            e.kind = EventType::EmailAdded;
            e.value = Some(s(["u@example.com", "v@example.com"][a as usize % 2]));
        }
        20..=29 => {
            let name = [
                "is_employee",
                "lifecycle_stage",
                "lifecycle_stage",
                "lead_status",
                "lead_status",
                "lead_status",
                "employees",
                "employees",
                "country",
                "country",
            ][(kind - 20) as usize];
            e.kind = EventType::AttributeChanged;
            e.name = Some(name.to_string());
            e.value = attr_value(name, a);
        }
        30..=32 => {
            e.kind = EventType::ExternalScore;
            e.score = Some(match a % 4 {
                0 => ScoreOp::Set(i64::from(b % 50) - 12),
                // large scores, for exact factor arithmetic (100 x 0.57 = 57)
                2 => ScoreOp::Set(i64::from(b) * 4 - 300),
                _ => ScoreOp::Increment(i64::from(b % 21) - 10),
            });
        }
        _ => e.kind = EventType::UserDeleted,
    }
    e
}

const KINDS: u8 = 34;

fn build(steps: &[(u8, u8, u8, Op)]) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let mut cursor = T0;
    for (adv, late, late_h, op) in steps {
        cursor += advance_hours(*adv) * H;
        // mostly in order; sometimes up to two days late; sometimes up to ten days late
        let lateness = match late {
            0..=10 => 0,
            11..=14 => i64::from(*late_h % 48),
            _ => i64::from(*late_h),
        };
        let time = cursor - lateness * H;
        match op {
            Op::Retry { back, dt } if !events.is_empty() => {
                let mut e = events[events.len() - 1 - back % events.len()].clone();
                e.time += RETRY_DT[dt % RETRY_DT.len()] * H;
                events.push(e);
            }
            Op::Retry { .. } => events.push(new_event("a", time, 0, 0, 0)),
            Op::Burst {
                user,
                kind,
                n,
                spacing,
            } => {
                for i in 0..*n {
                    let t = time + i as i64 * spacing * H;
                    cursor = cursor.max(t);
                    events.push(new_event(USERS[*user], t, *kind, 0, 0));
                }
            }
            Op::New {
                user,
                kind,
                a,
                b,
                id,
                upd,
            } => {
                let mut e = new_event(USERS[*user], time, *kind, *a, *b);
                // ids are scoped per user: the same small pool for every user
                e.event_id = id.map(|k| format!("e{k}").into());
                if e.kind == EventType::ExternalScore {
                    e.updated_at = upd.map(|k| T0 + i64::from(k) * 12 * H);
                }
                events.push(e);
            }
        }
    }
    events
}

fn case_strategy(max_len: usize) -> impl Strategy<Value = Case> {
    // user a most, c least
    let user = prop_oneof![5 => Just(0usize), 3 => Just(1usize), 2 => Just(2usize)];
    let new = (
        user,
        0u8..KINDS,
        any::<u8>(),
        any::<u8>(),
        proptest::option::weighted(0.45, 0u8..6),
        proptest::option::weighted(0.6, 0u8..8),
    )
        .prop_map(|(user, kind, a, b, id, upd)| Op::New {
            user,
            kind,
            a,
            b,
            id,
            upd,
        });
    let retry = (0usize..6, 0usize..RETRY_DT.len()).prop_map(|(back, dt)| Op::Retry { back, dt });
    // sessions, webinars, demo requests, pricing views (plan "pro"), unsubscriptions, emails
    let burst = (
        0..USERS.len(),
        prop_oneof![Just(0u8), Just(7), Just(9), Just(14), Just(16), Just(18)],
        2usize..6,
        0i64..4,
    )
        .prop_map(|(user, kind, n, spacing)| Op::Burst {
            user,
            kind,
            n,
            spacing,
        });
    let op = prop_oneof![12 => new, 2 => retry, 1 => burst];
    let step = (0u8..64, 0u8..16, 1u8..240, op);
    (
        proptest::collection::vec(step, 0..max_len),
        prop_oneof![6 => Just(0i64), 1 => 1i64..400],
        any::<bool>(),
    )
        .prop_map(move |(steps, now_extra, profile)| {
            let mut events = Vec::new();
            if profile {
                for user in USERS {
                    let t = T0 - H;
                    let mut email = Event::new(user, t, EventType::EmailAdded);
                    email.value = Some(s("u@example.com"));
                    events.push(email);
                    for (name, value) in [("employees", Scalar::Int(50)), ("country", s("FR"))] {
                        let mut e = Event::new(user, t, EventType::AttributeChanged);
                        e.name = Some(name.to_string());
                        e.value = Some(value);
                        events.push(e);
                    }
                }
            }
            events.extend(build(&steps));
            Case { events, now_extra }
        })
}

/// 2048 cases per rule set; `REFERENCE_CASES=N` for a longer search.
fn cases() -> u32 {
    std::env::var("REFERENCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048)
}

fn check(src: &str, model: fn() -> ModelRules, case: &Case) -> Result<(), TestCaseError> {
    compare(src, model(), case)
        .map(drop)
        .map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn seed_canvas_matches_the_reference_model(case in case_strategy(70)) {
        check(SEED, seed_model, &case)?;
    }

    #[test]
    fn caps_min_max_and_reentry_match_the_reference_model(case in case_strategy(70)) {
        check(CAPPED, capped_model, &case)?;
    }

    #[test]
    fn factor_decay_matches_the_reference_model(case in case_strategy(70)) {
        check(FACTOR, factor_model, &case)?;
    }

    #[test]
    fn include_predicates_match_the_reference_model(case in case_strategy(70)) {
        check(INCLUDE, include_model, &case)?;
    }

    #[test]
    fn corner_rules_match_the_reference_model(case in case_strategy(70)) {
        check(CORNERS, corners_model, &case)?;
    }
}

type RuleSet = (&'static str, &'static str, fn() -> ModelRules);

const RULE_SETS: [RuleSet; 5] = [
    ("seed", SEED, seed_model),
    ("capped", CAPPED, capped_model),
    ("factor", FACTOR, factor_model),
    ("include", INCLUDE, include_model),
    ("corners", CORNERS, corners_model),
];

/// The generator reaches every situation the comparison is meant to cover (a generator that
/// never produced, say, a collapsed decay would make the property tests pass vacuously).
#[test]
fn the_generator_reaches_every_situation_worth_comparing() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut total = Stats::default();
    for (name, src, model) in RULE_SETS {
        let mut runner = TestRunner::deterministic();
        let strategy = case_strategy(70);
        let mut stats = Stats::default();
        for _ in 0..200 {
            let case = strategy.new_tree(&mut runner).expect("case").current();
            let st = compare(src, model(), &case).unwrap_or_else(|d| panic!("{name}: {d}"));
            for (k, v) in st.0 {
                *stats.0.entry(k).or_default() += v;
                *total.0.entry(k).or_default() += v;
            }
        }
        println!("{name}: {:?}", stats.0);
    }
    for what in [
        "duplicate dropped",
        "id forgotten, applied again",
        "stale external score",
        "external score without change",
        "outside the audience",
        "re-entry wait",
        "cap spent",
        "cap cut",
        "rule clamped",
        "enrolling event scores",
        "late event scores",
        "timer armed behind the clock",
        "tracked attribute with a score change",
        "tracked attribute alone",
        "timer ended: not enrolled or excluded",
        "timer ended: zero change",
        "decay of a negative score",
        "rule scores",
        "collapsed decay",
        "deletion",
        "timers of several users due, not in user order",
    ] {
        assert!(
            total.0.get(what).copied().unwrap_or(0) > 0,
            "never reached: {what}"
        );
    }
}

/// SPEC 3.4: a group's delta "is first cut to what the group's cap has left (the cap counts,
/// in absolute value, the change that group actually applied within the window holding the
/// event's time ...)". The engine used to forget a window's usage whenever a later capped change
/// rewrote the user's caps and the window had ended a period before the clock, so whether a late
/// event in an old window met its cap depended on an event in another window: without one the
/// late event got the 2 points the cap had left; with one, all 5, and the group applied 15
/// points in a window capped at 12. Now usage is kept while an event can still score in its
/// window under the re-entry start the user had when it is pruned.
#[test]
fn a_late_event_meets_its_windows_cap_whatever_capped_change_came_in_another_window() {
    const RULES: &str = r#"
[entry]
on = [{ type = "custom_event", name = "demo_requested" }]

[[group]]
name = "high intent"
delta = 5
cap = { points = 12, per = "1d" }
triggers = [{ type = "custom_event", name = "demo_requested" }]
"#;
    let demo = |h: i64| new_event("a", T0 + h * H, 9, 0, 0);
    let mut reset = Event::new("a", T0 - 24 * H, EventType::ExternalScore);
    reset.score = Some(ScoreOp::Set(0));
    // `unrelated` is a capped change in day 3, after day 0 ended more than a day before the clock.
    for unrelated in [false, true] {
        let mut events = vec![demo(0), demo(1)]; // day 0: +5, +5 (10 of 12 used)
        if unrelated {
            events.push(demo(72)); // day 3: +5
        } else {
            events.push(new_event("b", T0 + 72 * H, 9, 0, 0)); // only moves the clock
        }
        // A late external score moves the re-entry start back before the late event.
        events.push(reset.clone());
        events.push(demo(2)); // late, day 0: 2 points left
        let (out, _) = run_engine(RULES, &events, None);
        let last = out["a"].1.last().expect("a change").clone();
        assert_eq!(
            (ht(last.time), last.previous, last.delta),
            ("2h".to_string(), 0, 2),
            "unrelated capped change in another window: {unrelated}; changes of a: {:#?}",
            out["a"].1
        );
    }
}

/// docs/semantics.md: "at most 4,096 ids are kept per user, the first recorded dropped first". With event
/// times running backwards, "oldest" could mean the first recorded or the earliest event time;
/// the model drops the first recorded.
#[test]
fn more_than_4096_ids_match_the_reference_model() {
    let mut events = Vec::new();
    let mut email = Event::new("a", T0, EventType::EmailAdded);
    email.value = Some(s("u@example.com"));
    events.push(email);
    for i in 0..4200i64 {
        let mut e = Event::new("a", T0 + (4200 - i) * M, EventType::SessionStart);
        e.event_id = Some(format!("x{i}").into());
        events.push(e);
    }
    // The first recorded ids (latest times) and the earliest-timed ones, again.
    for i in [0i64, 1, 103, 104, 105, 4198, 4199] {
        let mut e = Event::new("a", T0 + 4200 * M, EventType::SessionStart);
        e.event_id = Some(format!("x{i}").into());
        events.push(e);
    }
    for (name, src, model) in RULE_SETS {
        let case = Case {
            events: events.clone(),
            now_extra: 0,
        };
        if let Err(d) = compare(src, model(), &case) {
            panic!("{name}: {d}");
        }
    }
}

/// Hand-built sequences at the places where the documents leave a reader a choice; each is
/// compared with the model under every rule set.
#[test]
fn hand_picked_corners_match_the_reference_model() {
    let at = |u: &str, h: i64, kind: EventType| Event::new(u, T0 + h * H, kind);
    let external = |h: i64, op: ScoreOp, upd: Option<i64>| {
        let mut e = at("a", h, EventType::ExternalScore);
        e.score = Some(op);
        e.updated_at = upd.map(|u| T0 + u * H);
        e
    };
    let attr = |h: i64, name: &str, v: Option<Scalar>| {
        let mut e = at("a", h, EventType::AttributeChanged);
        e.name = Some(name.into());
        e.value = v;
        e
    };
    let with_id = |mut e: Event, id: &str| {
        e.event_id = Some(id.into());
        e
    };
    let mut late_email = with_id(at("b", -24, EventType::EmailAdded), "e3");
    late_email.value = Some(s("u@example.com"));
    let cases: Vec<(&str, Vec<Event>)> = vec![
        (
            // An id applied again (not a duplicate) takes the earlier application's place: the
            // earlier one, recorded 23 hours late, has its recording clock rounded up past the
            // later one's, so a model keeping both remembered it longer (found by an outside
            // review with REFERENCE_CASES=7000, under CORNERS' zero dedupe window).
            "id applied again",
            vec![
                at("a", 0, EventType::SessionStart),
                with_id(at("b", -23, EventType::SessionStart), "e3"),
                with_id(at("b", 0, EventType::SessionStart), "e3"),
                late_email,
            ],
        ),
        (
            // an external score equal to the score still moves the remembered updated_at
            "no-op external score",
            vec![
                external(0, ScoreOp::Set(5), Some(10)),
                external(1, ScoreOp::Set(5), Some(20)),
                external(2, ScoreOp::Set(7), Some(15)),
                external(3, ScoreOp::Increment(0), Some(12)),
                external(4, ScoreOp::Set(9), None),
                external(5, ScoreOp::Set(8), Some(1)),
            ],
        ),
        (
            // a tracked attribute set to the same value, to an equal number of another kind
            "tracked attribute re-set",
            vec![
                attr(0, "lead_status", Some(s("Open"))),
                attr(1, "lead_status", Some(s("Open"))),
                attr(2, "lead_status", Some(Scalar::Int(1))),
                attr(3, "lead_status", Some(Scalar::Float(1.0))),
                attr(4, "lead_status", None),
                attr(5, "lead_status", None),
            ],
        ),
        (
            // an id retried exactly when the clock reaches r + 2 x window, one hour before
            "id forgetting boundary",
            vec![
                with_id(at("a", 0, EventType::SessionStart), "x"),
                at("b", 47, EventType::SessionStart),
                with_id(at("a", 1, EventType::SessionStart), "x"),
                at("b", 48, EventType::SessionStart),
                with_id(at("a", 2, EventType::SessionStart), "x"),
            ],
        ),
    ];
    let mut enrol = external(-1, ScoreOp::Set(1), None);
    enrol.user_id = "a".into();
    for (what, events) in cases {
        for (name, src, model) in RULE_SETS {
            let case = Case {
                events: std::iter::once(enrol.clone())
                    .chain(events.clone())
                    .collect(),
                now_extra: 0,
            };
            if let Err(d) = compare(src, model(), &case) {
                panic!("{what}, {name}: {d}");
            }
        }
    }
}
