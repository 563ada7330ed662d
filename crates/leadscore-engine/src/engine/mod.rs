//! The scoring engine: SPEC section 3, semantics 1 to 8, as a pure function.
//!
//! [`Engine::apply`] takes a user's state, one event and the partition clock, updates the state
//! and appends the score changes; [`Engine::fire_timer`] is the inactivity step. Neither does I/O
//! or reads a clock: time comes in as a value, so the offline simulator, the Kafka scorer and the
//! property tests all run exactly this code. The partition clock and the timer index live one
//! level up, in [`crate::partition`].

use crate::attributes::{Attributes, Selection};
use crate::change::{ChangeId, Reason, ReasonKind, ScoreChange};
use crate::event::{Event, EventType, Origin, Scalar, ScoreOp};
use crate::rules::{Cap, Decay, Matcher, Predicate, Rules};
use crate::state::{bytes_eq, stable_hash, AudienceMemo, CapUsage, OptI64, SeenEvent, UserState};
use crate::timestamp::Millis;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// At most this many applied event ids are remembered per user; the first recorded go first. A
/// bound on state size against a user flooded with distinct ids, set far above what a real user
/// sends within two dedupe windows (4,096 in the default 48 hours is one event every 42 seconds,
/// day and night), so that SPEC 3.8's retention holds for every realistic user. A full list is
/// about 50 KB of state record (12 bytes an id) and 64 KB in memory; its scan per event costs a
/// flooded user microseconds, nobody else anything.
pub const MAX_SEEN_IDS: usize = 4096;

/// The most bytes one user's attributes may take (encoded, as the state record holds them):
/// names and values together. A real lead has a few dozen attributes, a few KiB; without a
/// bound, a producer setting thousands of attributes on one user grew its state record past
/// what Kafka takes (1 MB by default), and the scorer stopped on that user's checkpoint, again
/// at every restart. An event whose attribute would take the user past it is bad input
/// ([`attribute_error`]): the scorer dead-letters it, `simulate` reports it as a bad line, and
/// nothing of it is applied. A change that does not grow the attributes (a removal, a shorter
/// or equal value) always applies, even to a state over the bound.
pub const MAX_ATTRIBUTE_BYTES: usize = 64 * 1024;

/// The attribute an event sets or removes, if it is one that does: `attribute_changed` (its
/// `name`, `value` null removes) and `email_added` (`email`).
pub(crate) fn attribute_of(ev: &Event) -> Option<(&str, Option<&Scalar>)> {
    match ev.kind {
        EventType::AttributeChanged => ev.name.as_deref().map(|n| (n, ev.value.as_ref())),
        EventType::EmailAdded => Some(("email", ev.value.as_ref())),
        _ => None,
    }
}

/// Why `ev` cannot be applied to the user whose state is `st` (none when it can): its
/// attribute would take the user's attributes past [`MAX_ATTRIBUTE_BYTES`]. An
/// `invalid_value` naming the attribute and the sizes, for the dead-letter topic.
pub fn attribute_error(st: Option<&UserState>, ev: &Event) -> Option<crate::codec::DecodeError> {
    let (name, value) = attribute_of(ev)?;
    let empty = UserState::default();
    let st = st.unwrap_or(&empty);
    let after = st
        .attributes()
        .size_past(name, value, MAX_ATTRIBUTE_BYTES)?;
    Some(crate::codec::DecodeError::InvalidValue {
        field: "value".into(),
        detail: format!(
            "setting attribute {} would take user {}'s attributes to {} bytes, over the limit \
             of {MAX_ATTRIBUTE_BYTES} bytes per user (names and values); remove attributes \
             the user no longer needs first",
            crate::codec::Quoted(name),
            crate::codec::Quoted(&ev.user_id),
            after,
        ),
    })
}

/// The most cap windows kept per capped group and user (`Engine::score_within_cap`): the
/// event's own, and the latest others up to this many in all: a week of hourly windows and
/// more. Ordinary traffic keeps a few; only a user scoring through a capped group in more
/// distinct windows than this within [`CAP_LATE_HORIZON`], or late external scores moving the
/// re-entry start back again and again, reach it.
pub const MAX_CAP_WINDOWS: usize = 192;

/// A group's usage of a window that ended less than this before the partition clock is kept
/// whatever the re-entry start, so an event up to a week late meets exactly the cap SPEC 3.4
/// counts even after a late `external_score` has moved the re-entry start back.
pub const CAP_LATE_HORIZON: Millis = 7 * crate::timestamp::MS_PER_DAY;

/// What became of one event, for metrics (`skipped` reasons) and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The score changed.
    Scored,
    /// A duplicate of an applied event within the dedupe window: nothing changed.
    Duplicate,
    /// The user's state already holds this event (a replay after a restart): nothing changed.
    Replayed,
    /// Applied (attributes, enrollment), but the user is not enrolled, so it cannot score.
    NotEnrolled,
    /// Applied, but the user is outside the audience.
    OutsideAudience,
    /// Applied, but within the re-entry wait after the last score change.
    ReentryWait,
    /// Applied, but no group has a matching trigger.
    NoGroup,
    /// Applied, but the change came to zero: a spent cap, the score's min/max, or an external
    /// score equal to the current one.
    Unchanged,
    /// An external score older than the last applied one.
    StaleExternal,
    /// An event of a type this version does not know (`scorer.unknown_types = "skip"`): only its
    /// time counted, in the partition clock. The decoder reports it; the engine never sees it.
    UnknownType,
    /// The user's state was deleted (`user_deleted`, or a tombstone). Not in [`Outcome::ALL`],
    /// whose other values label scored and skipped events: deletions are counted apart.
    Deleted,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::Scored,
        Outcome::Duplicate,
        Outcome::Replayed,
        Outcome::NotEnrolled,
        Outcome::OutsideAudience,
        Outcome::ReentryWait,
        Outcome::NoGroup,
        Outcome::Unchanged,
        Outcome::StaleExternal,
        Outcome::UnknownType,
    ];

    /// The outcomes of an event that changed no score: [`Outcome::ALL`] but `Scored` and
    /// `Deleted` (a deletion has a counter of its own, `leadscore_users_deleted_total`), the
    /// label values of the skipped-events counter.
    pub fn skipped() -> impl Iterator<Item = Outcome> {
        Outcome::ALL
            .into_iter()
            .filter(|o| !matches!(o, Outcome::Scored | Outcome::Deleted))
    }

    /// A bounded label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Scored => "scored",
            Outcome::Duplicate => "duplicate",
            Outcome::Replayed => "replayed",
            Outcome::NotEnrolled => "not_enrolled",
            Outcome::OutsideAudience => "outside_audience",
            Outcome::ReentryWait => "reentry_wait",
            Outcome::NoGroup => "no_group",
            Outcome::Unchanged => "unchanged",
            Outcome::StaleExternal => "stale_external",
            Outcome::UnknownType => "unknown_type",
            Outcome::Deleted => "deleted",
        }
    }
}

/// Rules prepared for evaluation.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: Rules,
    /// [`crate::rules::group_key`] of each group's name, the key of its cap usage in the state.
    group_keys: Vec<u32>,
    /// The tracked attributes, which a change's snapshot copies from the user's attributes in
    /// one pass.
    tracked: Selection,
    /// Each group's name (in group order), shared by every change through the group.
    group_names: Vec<Arc<str>>,
    /// Per event type (indexed by [`kind_index`]): the group triggers of that type as
    /// `(group index, matcher)`, in group then trigger order, so an event tests only matchers
    /// that can match it and the first hit is the first group with a matching trigger.
    triggers_by_kind: [Vec<(usize, Matcher)>; EventType::ALL.len()],
    /// Per event type: the `entry.on` matchers of that type.
    entry_by_kind: [Vec<Matcher>; EventType::ALL.len()],
    /// How many recent changes each user keeps in its [`History`](crate::history::History).
    explain_depth: usize,
    /// The audience's predicates, each with whether it is an `include`, sorted by attribute
    /// name: [`Engine::in_audience`] reads them all in one pass over the user's attributes.
    audience: Vec<(Predicate, bool)>,
    /// This engine's key for the audience verdicts it leaves in user states
    /// ([`crate::state::AudienceMemo`]): distinct per [`Engine::new`] in a process (clones
    /// share it, as they share the rules); 0, no verdicts kept, once the keys run out.
    audience_key: u32,
}

/// The next engine's audience key ([`Engine::audience_key`]).
static NEXT_AUDIENCE_KEY: AtomicU32 = AtomicU32::new(1);

/// A key no engine of this process has had, or 0 (keep no verdicts) when all are taken: a
/// process builds one engine, a test process tens of thousands, never 8,388,607.
fn new_audience_key() -> u32 {
    NEXT_AUDIENCE_KEY
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| {
            (k <= AudienceMemo::MAX_KEY).then_some(k + 1)
        })
        .unwrap_or(0)
}

/// An event type as an index into the per-type tables.
#[inline]
fn kind_index(kind: EventType) -> usize {
    match kind {
        EventType::SessionStart => 0,
        EventType::CustomEvent => 1,
        EventType::EmailAdded => 2,
        EventType::AttributeChanged => 3,
        EventType::ExternalScore => 4,
        // Handled by the partition before any rule; its (empty) tables are never read.
        EventType::UserDeleted => 5,
    }
}

impl Engine {
    pub fn new(rules: Rules) -> Engine {
        let group_keys = rules
            .groups
            .iter()
            .map(|g| crate::rules::group_key(&g.name))
            .collect();
        let tracked = Selection::new(&rules.output.tracked_attributes);
        let group_names = rules
            .groups
            .iter()
            .map(|g| Arc::from(g.name.as_str()))
            .collect();
        let mut triggers_by_kind: [Vec<(usize, Matcher)>; EventType::ALL.len()] =
            Default::default();
        for (gi, g) in rules.groups.iter().enumerate() {
            for m in &g.triggers {
                triggers_by_kind[kind_index(m.kind)].push((gi, m.clone()));
            }
        }
        let mut entry_by_kind: [Vec<Matcher>; EventType::ALL.len()] = Default::default();
        for m in &rules.entry.on {
            entry_by_kind[kind_index(m.kind)].push(m.clone());
        }
        let audience_of = |ps: &[Predicate], include: bool| {
            ps.iter()
                .map(move |p| (p.clone(), include))
                .collect::<Vec<_>>()
        };
        let mut audience = audience_of(&rules.audience.include, true);
        audience.extend(audience_of(&rules.audience.exclude, false));
        audience.sort_by(|(a, _), (b, _)| a.key.as_bytes().cmp(b.key.as_bytes()));
        Engine {
            audience,
            rules,
            group_keys,
            tracked,
            group_names,
            triggers_by_kind,
            entry_by_kind,
            explain_depth: crate::history::DEFAULT_DEPTH,
            audience_key: new_audience_key(),
        }
    }

    /// Keeps the last `depth` changes of each user in its state (0: none), so a lookup can say
    /// why a user has its score. [`crate::history::DEFAULT_DEPTH`] unless set.
    pub fn with_explain_depth(mut self, depth: usize) -> Engine {
        self.explain_depth = depth;
        self
    }

    pub fn explain_depth(&self) -> usize {
        self.explain_depth
    }

    /// The name of the group whose name hash (as cap usage and change notes keep it) is `key`,
    /// if the rules still have it.
    pub fn group_name(&self, key: u32) -> Option<&str> {
        self.group_keys
            .iter()
            .position(|k| *k == key)
            .map(|i| self.rules.groups[i].name.as_str())
    }

    /// Publishes a change: into `out`, and into the user's recent history.
    #[inline]
    fn emit(
        &self,
        st: &mut UserState,
        group: Option<u32>,
        change: ScoreChange,
        out: &mut Vec<ScoreChange>,
    ) {
        if self.explain_depth > 0 {
            st.history.push(&change, group, self.explain_depth);
        }
        // The change's id carries the user's count of changes up to it: one more for an event,
        // every window for a collapsed decay, as firing them one by one would count.
        if let ChangeId::Count(n) = change.id {
            st.changes = n;
        }
        out.push(change);
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Applies one event to a user's state. `clock` is the partition clock after this event was
    /// counted (so `clock >= event.time`); timers due by then must already have fired.
    pub fn apply(
        &self,
        st: &mut UserState,
        ev: &Event,
        origin: Origin<'_>,
        clock: Millis,
        out: &mut Vec<ScoreChange>,
    ) -> Outcome {
        let rules = &self.rules;
        prefetch_inputs(st, ev);

        // 8. Duplicates. Only explicit ids can repeat: a Kafka position is unique.
        if let Some(id) = &ev.event_id {
            if self.is_duplicate_and_record(st, id, ev.time, clock) {
                return Outcome::Duplicate;
            }
        }

        prefetch_attributes(ev);

        // 1. Attributes, whether or not the user is enrolled.
        // Past the per-user bound the attribute is not set: the scorer and `simulate` refuse
        // such an event before it gets here (`attribute_error`); this keeps the bound for
        // every other caller.
        let attribute_change = attribute_of(ev).is_some_and(|(name, value)| {
            st.set_attribute_within(name, value, MAX_ATTRIBUTE_BYTES) && self.is_tracked(name)
        });

        // 2. Enrollment: the enrolling event is also scored.
        let kind = kind_index(ev.kind);
        if !st.enrolled && self.entry_by_kind[kind].iter().any(|m| m.matches(ev)) {
            st.enrolled = true;
        }

        let (outcome, new_score, group) = if let Some(op) = ev.score {
            // 6. External scores: enrolled or not, whatever the audience, never through a group.
            if let (Some(at), Some(last)) = (ev.updated_at, st.external_updated_at().get()) {
                if at < last {
                    return self.finish(
                        st,
                        ev,
                        origin,
                        attribute_change,
                        out,
                        Outcome::StaleExternal,
                    );
                }
            }
            st.set_external_updated_at(ev.updated_at.into());
            let target = match op {
                ScoreOp::Set(s) => s,
                ScoreOp::Increment(d) => st.score.saturating_add(d),
            };
            (Outcome::Scored, rules.score.clamp(target), None)
        } else if !st.enrolled {
            return self.finish(st, ev, origin, attribute_change, out, Outcome::NotEnrolled);
        } else if !self.in_audience_kept(st) {
            // 3. Audience, on the attributes after step 1.
            return self.finish(
                st,
                ev,
                origin,
                attribute_change,
                out,
                Outcome::OutsideAudience,
            );
        } else if st
            .last_change
            .get()
            .is_some_and(|t| ev.time < t.saturating_add(rules.entry.reentry_window))
        {
            // 5. Re-entry.
            return self.finish(st, ev, origin, attribute_change, out, Outcome::ReentryWait);
        } else {
            // 4. Groups: the first with a matching trigger, cut to its cap, then clamped.
            let Some(gi) = self.triggers_by_kind[kind]
                .iter()
                .find(|(_, m)| m.matches(ev))
                .map(|(gi, _)| *gi)
            else {
                return self.finish(st, ev, origin, attribute_change, out, Outcome::NoGroup);
            };
            let group = &rules.groups[gi];
            let new_score = match group.cap {
                Some(cap) => {
                    self.score_within_cap(st, cap, self.group_keys[gi], group.delta, ev.time, clock)
                }
                None => rules.score.clamp(st.score.saturating_add(group.delta)),
            };
            (
                Outcome::Scored,
                new_score,
                Some((&self.group_names[gi], self.group_keys[gi])),
            )
        };

        if new_score == st.score {
            // A change of zero is no change.
            return self.finish(st, ev, origin, attribute_change, out, Outcome::Unchanged);
        }
        let kind = if group.is_some() {
            ReasonKind::Rule
        } else {
            ReasonKind::External
        };
        let source = source_id(ev, origin);
        let id = ChangeId::Count(st.changes.wrapping_add(1));
        let change = self.change(
            st,
            Arc::clone(&ev.user_id),
            ev.time,
            new_score,
            Reason {
                kind,
                group: group.map(|(name, _)| Arc::clone(name)),
                source_event_id: Some(source),
            },
            id,
        );
        self.emit(st, group.map(|(_, key)| key), change, out);
        outcome
    }

    /// SPEC 3.4, a group with a cap: the new score after `delta`, cut to what is left of the cap
    /// in the event's window and then clamped. Records in `st.caps` what was applied after
    /// clamping (so a delta eaten by the score's min/max does not spend the cap).
    ///
    /// It also forgets, to bound the state, that group's usage of windows no event can score in
    /// any more: a window is dropped once it ended at or before the re-entry start (the last
    /// change's time plus `reentry_window`: SPEC 3.5 lets no group apply to an earlier event),
    /// more than a whole period before the clock *and* more than [`CAP_LATE_HORIZON`] before
    /// it. Keeping usage until all three hold means a late event meets exactly the cap the spec
    /// counts unless it is more than a week late and a late `external_score` has since moved
    /// the re-entry start back past its window (docs/semantics.md). At most
    /// [`MAX_CAP_WINDOWS`] windows are kept per group, the earliest dropped first.
    fn score_within_cap(
        &self,
        st: &mut UserState,
        cap: Cap,
        key: u32,
        delta: i64,
        time: Millis,
        clock: Millis,
    ) -> i64 {
        let window = time.div_euclid(cap.per);
        // Worked on as a `Vec` and put back exact-size: only capped events come here.
        let mut caps = st.take_caps();
        // The first window still kept: one that ends after the re-entry start, within a
        // period of the clock, or within the late horizon of it. (`window` itself is never
        // dropped: the event passed re-entry.)
        let reentry_start = st.last_change.get().map_or(Millis::MIN, |t| {
            t.saturating_add(self.rules.entry.reentry_window)
        });
        let first_kept = (reentry_start.div_euclid(cap.per))
            .min(clock.div_euclid(cap.per) - 1)
            .min(clock.saturating_sub(CAP_LATE_HORIZON).div_euclid(cap.per))
            .min(window);
        caps.retain(|c| c.group != key || c.window >= first_kept);
        // A hard bound, only reached when late external scores keep moving the re-entry start
        // back: the group's earliest other windows go first. (No list is built: nearly every
        // call finds one or two windows and removes none.)
        let is_other = |c: &CapUsage| c.group == key && c.window != window;
        while caps.iter().filter(|c| is_other(c)).count() >= MAX_CAP_WINDOWS {
            let earliest = (0..caps.len())
                .filter(|&i| is_other(&caps[i]))
                .min_by_key(|&i| caps[i].window)
                .expect("the group has other windows");
            caps.swap_remove(earliest);
        }
        let slot = match caps
            .iter()
            .position(|c| c.group == key && c.window == window)
        {
            Some(i) => i,
            None => {
                caps.push(CapUsage {
                    group: key,
                    window,
                    used: 0,
                });
                caps.len() - 1
            }
        };
        let left = cap.points.saturating_sub(caps[slot].used);
        let cut = delta.unsigned_abs().min(left) as i64;
        let new_score = self
            .rules
            .score
            .clamp(st.score.saturating_add(cut * delta.signum()));
        caps[slot].used += (new_score - st.score).unsigned_abs();
        if caps[slot].used == 0 {
            caps.swap_remove(slot);
        }
        st.set_caps(caps);
        new_score
    }

    /// The inactivity step for a user whose timer is due at `due`, with the partition clock at
    /// `to >= due`. SPEC 3.7: the timer fires at `due`, `due + window`, ... while those are due by
    /// `to`, each step a decay at its due time, until a step clamps to no change (which ends the
    /// timer). All the steps of one clock advance are published as one change carrying the total
    /// delta, the time of the last step and how many windows it covers; the state ends exactly as
    /// step-by-step firing leaves it. The work is bounded: a closed form for `delta`, and for
    /// `factor` one turn per run of equal decrements ([`factor_steps`]).
    pub fn fire_timer(
        &self,
        user_id: &str,
        st: &mut UserState,
        due: Millis,
        to: Millis,
        out: &mut Vec<ScoreChange>,
    ) {
        debug_assert_eq!(st.timer_due, Some(due));
        st.timer_due = OptI64::NONE;
        let Some(inactivity) = self.rules.inactivity else {
            return;
        };
        // Events change attributes and enrollment, timers never do: checking once at `due`
        // is checking at every step of this advance.
        if !st.enrolled || !self.in_audience_kept(st) || to < due {
            return;
        }
        let window = inactivity.window.max(1);
        // Windows due by `to`: `due`, `due + window`, ... (at least one).
        let due_count = ((to - due) / window).saturating_add(1);
        let (score, steps) = self.decay_steps(inactivity.decay, st.score, due_count);
        if steps == 0 {
            return;
        }
        let last = due.saturating_add((steps - 1).saturating_mul(window));
        // By `last`, not `to`: a timer armed already due fires at whichever advance comes
        // first, but its last decayed window is the same however the windows were split over
        // advances, so the stored state is too (SPEC 3.9).
        self.forget_ids(st, last);
        // The last window's due time alone does not name a decay: a late event can re-arm the
        // timer behind the clock, and the next advance decays the same windows again from the
        // new score. That event changed the score in between, so the user's count of changes
        // tells the two apart (as it does every change id); the count is state, so a replay
        // gives each decay the same one.
        // The count takes every window, wrapping at 2^32 as counting them one by one would
        // (docs/semantics.md, "Change ids"); the change's `windows`, a uint32 on the output,
        // saturates instead.
        let windows = u32::try_from(steps).unwrap_or(u32::MAX);
        let id = ChangeId::Count(st.changes.wrapping_add(steps as u32));
        let mut change = self.change(
            st,
            Arc::from(user_id),
            last,
            score,
            Reason {
                kind: ReasonKind::Inactivity,
                group: None,
                source_event_id: None,
            },
            id,
        );
        change.windows = windows;
        self.emit(st, None, change, out);
        if steps < due_count {
            // The next window is due by `to` too, and changes nothing: the timer ends there.
            st.timer_due = OptI64::NONE;
        }
    }

    /// Applies up to `max_steps` decays to `score`, each clamped, stopping at the first step
    /// that changes nothing. Returns the final score and how many steps changed it.
    fn decay_steps(&self, decay: Decay, score: i64, max_steps: i64) -> (i64, i64) {
        let bounds = &self.rules.score;
        // The first step on its own: a score outside [min, max] (rules changed since it was
        // set) is clamped into range by it, after which every step stays in range.
        let first = bounds.clamp(decay.apply(score));
        if first == score || max_steps <= 0 {
            return (score, 0);
        }
        let (mut s, mut steps) = (first, 1i64);
        match decay {
            Decay::Delta(d) => {
                // s, s + d, s + 2d, ... until a bound (or the i64 range) stops it; the step that
                // reaches the bound is the last one that changes anything.
                let remaining = max_steps - 1;
                let bound = if d < 0 {
                    bounds.min.unwrap_or(i64::MIN)
                } else {
                    bounds.max.unwrap_or(i64::MAX)
                };
                let room = (bound as i128 - s as i128).unsigned_abs();
                let step = d.unsigned_abs() as u128;
                let to_bound = room.div_ceil(step) as i128; // steps until the bound is reached
                let taken = to_bound.min(remaining as i128);
                let moved = s as i128 + taken * d as i128;
                s = if taken == to_bound {
                    bound
                } else {
                    moved as i64
                };
                steps += taken as i64;
            }
            Decay::Factor { numerator, scale } => {
                let (end, taken) = factor_steps(s, numerator, scale, bounds, max_steps - 1);
                s = end;
                steps += taken;
            }
        }
        (s, steps)
    }

    /// Whether `name` is a tracked attribute.
    #[inline]
    fn is_tracked(&self, name: &str) -> bool {
        self.tracked
            .names()
            .iter()
            .any(|t| bytes_eq(t.as_bytes(), name.as_bytes()))
    }

    /// [`Engine::in_audience`], kept in the state until its attributes change: most events
    /// of a user find them as the last event left them.
    #[inline]
    fn in_audience_kept(&self, st: &mut UserState) -> bool {
        if let Some(verdict) = st.audience.get(self.audience_key) {
            return verdict;
        }
        let verdict = self.in_audience(st);
        st.audience.set(self.audience_key, verdict);
        verdict
    }

    /// Whether the user matches every `include` and no `exclude` predicate.
    #[inline]
    pub fn in_audience(&self, st: &UserState) -> bool {
        // Every include holds and no exclude does: each predicate's result equals `include`.
        st.attributes().all_sorted(
            &self.audience,
            |(p, _)| &p.key,
            |(p, include), value| p.test.eval_ref(value) == *include,
        )
    }

    /// Records the score change in the state (score, re-entry start, timer) and builds the record.
    fn change(
        &self,
        st: &mut UserState,
        user_id: Arc<str>,
        time: Millis,
        new_score: i64,
        reason: Reason,
        id: ChangeId,
    ) -> ScoreChange {
        let previous = st.score;
        st.score = new_score;
        st.last_change = time.into();
        st.timer_due = self
            .rules
            .inactivity
            .map(|i| time.saturating_add(i.window))
            .into();
        ScoreChange {
            id,
            user_id,
            time,
            previous_score: previous,
            score: new_score,
            // Scores more than `i64::MAX` apart (external scores at the ends of the range):
            // the difference saturates, keeping its sign (docs/formats.md).
            delta: new_score.saturating_sub(previous),
            reason,
            windows: 0,
            attributes: self.snapshot(st),
        }
    }

    /// Ends an event that did not change the score: publishes a tracked attribute's change alone.
    fn finish(
        &self,
        st: &mut UserState,
        ev: &Event,
        origin: Origin<'_>,
        attribute_change: bool,
        out: &mut Vec<ScoreChange>,
        outcome: Outcome,
    ) -> Outcome {
        if attribute_change {
            let source_id = source_id(ev, origin);
            let change = ScoreChange {
                id: ChangeId::Count(st.changes.wrapping_add(1)),
                user_id: ev.user_id.clone(),
                time: ev.time,
                previous_score: st.score,
                score: st.score,
                delta: 0,
                reason: Reason {
                    kind: ReasonKind::Attribute,
                    group: None,
                    source_event_id: Some(source_id),
                },
                windows: 0,
                attributes: self.snapshot(st),
            };
            self.emit(st, None, change, out);
        }
        outcome
    }

    fn snapshot(&self, st: &UserState) -> Attributes {
        st.attributes().select(&self.tracked)
    }

    /// Drops the remembered ids forgotten by partition clock `clock` (SPEC 3.8), `clock` being
    /// at or before the partition clock: what the user's next event with an id would drop
    /// first, done while its state is at hand anyway. Called when an inactivity timer decays
    /// the score, long after a user's last events (7 days in the seed canvas, ids are kept 2
    /// days), so an idle user does not hold ids nothing can match any more until it comes back
    /// (issue 14: they were a quarter of the memory per user at 1M users). The clock only
    /// moves forward, so an id forgotten now would be forgotten then: no verdict changes.
    fn forget_ids(&self, st: &mut UserState, clock: Millis) {
        let (_, horizon) = self.dedupe_bounds(clock);
        if st.seen.iter().all(|s| s.kept_after(horizon)) {
            return;
        }
        let kept: Vec<SeenEvent> = st
            .seen
            .iter()
            .filter(|s| s.kept_after(horizon))
            .copied()
            .collect();
        st.seen = kept.into_boxed_slice();
    }

    /// Whether an event with the explicit id `id` at `time` is a duplicate for the user whose
    /// state is `st` at partition clock `clock` (SPEC 3.8): what [`Engine::apply`] would find
    /// first, recording nothing. (At most one remembered id has a given hash: recording one
    /// drops the older.)
    pub fn is_duplicate(&self, st: &UserState, id: &str, time: Millis, clock: Millis) -> bool {
        let (window, horizon) = self.dedupe_bounds(clock);
        let h = stable_hash(id.as_bytes());
        st.seen
            .iter()
            .any(|s| s.id_hash == h && s.kept_after(horizon) && s.catches(time, window))
    }

    /// The dedupe window, and the horizon at partition clock `clock`: an id recorded (or
    /// applied) at or before it is forgotten (SPEC 3.8, two windows).
    fn dedupe_bounds(&self, clock: Millis) -> (Millis, Millis) {
        let window = self.rules.dedupe_window;
        (window, clock.saturating_sub(window.saturating_mul(2)))
    }

    /// SPEC 3.8: a duplicate is an event whose id the user has applied at a time `t0` with
    /// `time < t0 + dedupe_window`. Otherwise the id is recorded with this event's time and the
    /// partition clock.
    ///
    /// An id is forgotten once the partition clock passes the later of `t0` and the clock when it
    /// was recorded by two windows: counting from the recording clock, a producer's retry of an
    /// event that arrived late is still caught (docs/semantics.md).
    fn is_duplicate_and_record(
        &self,
        st: &mut UserState,
        id: &str,
        time: Millis,
        clock: Millis,
    ) -> bool {
        let (window, horizon) = self.dedupe_bounds(clock);
        // Worked on as a `Vec` and put back exact-size: ids expire in bursts (a session's worth
        // at a time), and an active user's past peak does not stay in its state (issue 14:
        // memory per user). The allocator grows and shrinks the block in place within its size
        // class, so a push or an expiry costs a `realloc` call, rarely a copy: `bench` measured
        // no change in either engine rate, and 40 B less per user at 1M users, against growing
        // by half.
        let mut seen = std::mem::take(&mut st.seen).into_vec();
        seen.retain(|s| s.kept_after(horizon));
        let h = stable_hash(id.as_bytes());
        if let Some(i) = seen.iter().position(|s| s.id_hash == h) {
            if seen[i].catches(time, window) {
                st.seen = seen.into_boxed_slice();
                return true;
            }
            seen.remove(i);
        }
        if seen.len() >= MAX_SEEN_IDS {
            seen.remove(0);
        }
        seen.reserve_exact(1);
        seen.push(SeenEvent::new(h, time, clock.max(time)));
        st.seen = seen.into_boxed_slice();
        false
    }
}

/// Up to `max_steps` steps of a `factor` decay (`numerator / 10^scale`, in (0, 1)) from `score`,
/// each truncated toward zero and clamped to `bounds`, stopping at the first step that changes
/// nothing; `score` is within `bounds`. Returns the final score and how many steps changed it,
/// exactly as stepping one by one would, in far fewer turns (issue 14: a factor close to 1 took
/// one turn per window, up to about 10^10 of them).
///
/// A step from `a = |score|` takes away `d(a) = a - floor(a × n / D) = ceil(a × (D - n) / D)`.
/// That amount is the same for every `a` in a band `((c - 1) × D / (D - n), c × D / (D - n)]`
/// and smaller in every band below, so each turn of the loop takes all the steps left in one
/// band at once (an arithmetic run of `c` each) and the next turn starts in a lower band: at
/// most `d(|score|)` turns, and never more than the steps taken. The score moves toward zero,
/// so only the bound on that side can stop it early: the step that would pass it lands on it.
pub(crate) fn factor_steps(
    score: i64,
    numerator: i64,
    scale: u32,
    bounds: &crate::rules::ScoreSettings,
    max_steps: i64,
) -> (i64, i64) {
    let denominator = 10i128.pow(scale);
    let keep = numerator as i128;
    let cut = denominator - keep; // D - n, in 1..D for a factor in (0, 1)
    if score == 0 || max_steps <= 0 || keep <= 0 || cut <= 0 {
        return (score, 0);
    }
    let negative = score < 0;
    // Work on |score| toward 0, with the bound on that side as `floor` (0 when there is none
    // or it lies beyond 0).
    let floor: i128 = if negative {
        bounds.max.map_or(0, |m| (-(m as i128)).max(0))
    } else {
        bounds.min.map_or(0, |m| (m as i128).max(0))
    };
    let mut a = (score as i128).abs();
    let mut steps: i128 = 0;
    let max_steps = max_steps as i128;
    while a > floor && steps < max_steps {
        // This band: every step from here down to `low` takes `c`.
        let c = (a * cut + denominator - 1) / denominator;
        let low = (c - 1) * denominator / cut + 1;
        let in_band = (a - low) / c + 1;
        // Steps until the floor: the one that reaches or passes it lands on it, and is the last.
        let to_floor = (a - floor + c - 1) / c;
        let left = max_steps - steps;
        if to_floor <= in_band.min(left) {
            a = floor;
            steps += to_floor;
            break;
        }
        let take = in_band.min(left);
        a -= take * c;
        steps += take;
    }
    let end = if negative { -a } else { a };
    (end as i64, steps as i64)
}

/// Loads into the cache the blocks of a user's state that [`Engine::apply`] reads first (the
/// remembered ids, the attributes, both ends of the explain history): a hint for a caller
/// that knows which user comes next, and `apply`'s own first step.
#[inline(always)]
pub fn prefetch_state(st: &UserState) {
    prefetch(st.seen.as_ptr());
    prefetch(st.attributes().as_ptr());
    // Read and moved when a change is noted (about every other event).
    let (first, next) = st.history.ends();
    prefetch(first);
    prefetch(next);
}

/// Asks the CPU to start loading, all at once, the heap data this event will read: the user's
/// id lists and attributes and the event's strings. Each is a likely cache miss (states and
/// events are scattered over memory); issued together they overlap instead of stalling one
/// after the other. A hint only: nothing is read, so dangling or empty pointers are harmless.
#[inline(always)]
fn prefetch_inputs(st: &UserState, ev: &Event) {
    prefetch_state(st);
    if let Some(id) = &ev.event_id {
        prefetch(id.as_ptr());
    }
    if let Some(name) = &ev.name {
        prefetch(name.as_ptr());
    }
    prefetch(ev.properties.as_ptr());
    prefetch(ev.user_id.as_ptr());
    if let Some(Scalar::Str(v)) = &ev.value {
        prefetch(v.as_ptr());
    }
}

/// The second wave, once the list itself has arrived: the names and string values of the
/// event's properties, when the list is short. (The user's attributes are one buffer, loaded
/// by the first wave.)
#[inline(always)]
fn prefetch_attributes(ev: &Event) {
    if ev.properties.len() <= 16 {
        for (k, v) in &ev.properties {
            prefetch(k.as_ptr());
            if let Scalar::Str(s) = v {
                prefetch(s.as_ptr());
            }
        }
    }
}

/// Asks the CPU to start loading the cache line at `p`: a hint that reads nothing into the
/// program, so any address, dangling or null, is harmless (a no-op off x86-64).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint that never faults and reads nothing into the program, for
    // any address; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The id naming an event: its `event_id`, shared with its changes, else its position
/// (SPEC 2).
fn source_id(ev: &Event, origin: Origin<'_>) -> Arc<str> {
    match &ev.event_id {
        Some(id) => Arc::clone(id),
        None => Arc::from(origin.event_id()),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lookup_tests {
    use super::*;
    use crate::rules::{Audience, Test};

    /// `in_audience` reads every predicate in one pass over the sorted attributes; it must
    /// agree with looking each predicate's attribute up on its own, whatever the predicates'
    /// order in the rules file, names before, between and after the user's own, and two
    /// predicates on one name.
    #[test]
    fn in_audience_agrees_with_one_lookup_per_predicate() {
        let values = [
            None,
            Some(Scalar::Bool(true)),
            Some(Scalar::Str("customer".into())),
            Some(Scalar::Int(5)),
        ];
        let tests = [
            Test::Equals(Scalar::Bool(true)),
            Test::In(vec![Scalar::Str("customer".into())]),
            Test::NotIn(vec![Scalar::Str("customer".into())]),
            Test::Exists(true),
            Test::Exists(false),
            Test::Gt(3),
        ];
        // Keys sorting before, between, equal to and after the user's two attributes.
        let keys = ["a", "is_employee", "k", "lead_status", "z"];
        let predicate = |i: usize| Predicate {
            key: keys[i % keys.len()].into(),
            test: tests[(i / keys.len()) % tests.len()].clone(),
        };
        let n = keys.len() * tests.len();
        let mut checked = 0;
        for own in &values {
            for twin in &values {
                let mut st = UserState::default();
                // "is_employee" and "lead_status" have the same length.
                st.set_attribute("is_employee", own.as_ref());
                st.set_attribute("lead_status", twin.as_ref());
                // Audiences of up to three predicates, drawn by a stride through all of them.
                for start in 0..n {
                    for (stride, len, includes) in [(7, 1, 1), (11, 2, 1), (13, 3, 2), (5, 2, 0)] {
                        let ps: Vec<Predicate> =
                            (0..len).map(|j| predicate(start + j * stride)).collect();
                        let audience = Audience {
                            include: ps[..includes.min(len)].to_vec(),
                            exclude: ps[includes.min(len)..].to_vec(),
                        };
                        let plain = audience
                            .include
                            .iter()
                            .all(|p| p.test.eval_ref(st.attribute(&p.key)))
                            && !audience
                                .exclude
                                .iter()
                                .any(|p| p.test.eval_ref(st.attribute(&p.key)));
                        let mut rules =
                            crate::rules::parse_str("", "t.toml").expect("empty rules load");
                        rules.audience = audience;
                        let engine = Engine::new(rules);
                        assert_eq!(engine.in_audience(&st), plain, "{own:?} {twin:?} {ps:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, values.len() * values.len() * n * 4);
    }
}

#[cfg(test)]
mod decimal_tests {
    use super::*;

    #[test]
    fn decimals_and_positions_are_written_as_format_writes_them() {
        for n in [0, 1, -1, 9, 10, -10, 1_767_607_260_000, i64::MAX, i64::MIN] {
            let mut s = String::from("x");
            crate::event::write_decimal(&mut s, n).expect("a String takes any write");
            assert_eq!(s, format!("x{n}"));
        }
        let long = "t".repeat(96);
        for topic in ["lead-events.v1", long.as_str(), &long[..95]] {
            for (partition, offset) in [
                (0, 0),
                (7, 123_456_789),
                (-1, -1),
                (i32::MIN, i64::MIN),
                (i32::MAX, i64::MAX),
            ] {
                let origin = Origin {
                    topic,
                    partition,
                    offset,
                };
                let expected = format!("{topic}/{partition}/{offset}");
                assert_eq!(origin.event_id(), expected);
                // An event without an id is named by its position, whatever the topic's length.
                let ev = Event::new("u", 0, EventType::SessionStart);
                assert_eq!(&*source_id(&ev, origin), expected);
            }
        }
    }
}
