//! One input partition: its clock, its inactivity timers, and the engine run over its users.
//!
//! SPEC 3.7: each partition has a clock, the largest event time seen on it, checked before each
//! event is applied; timers due by then fire first, in order of due time (then user id). The
//! user states live behind [`UserStore`], so the offline simulator keeps them in a map and the
//! Kafka scorer in its changelog-backed store, with the same code in between.

use crate::change::ScoreChange;
use crate::engine::{Engine, Outcome};
use crate::event::{Event, EventType, Origin};
use crate::state::UserState;
use crate::timestamp::Millis;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

/// Where a partition's user states live.
pub trait UserStore {
    /// Runs `f` on the user's state (a fresh default one if the user is unknown) and keeps the
    /// state `f` leaves behind.
    fn update<R>(&mut self, user_id: &str, f: impl FnOnce(&mut UserState) -> R) -> R;

    /// The user's state, if the store has one.
    fn get(&self, user_id: &str) -> Option<&UserState>;

    /// Deletes the user's state (SPEC 2, forgetting), returning it if there was one.
    fn remove(&mut self, user_id: &str) -> Option<UserState>;
}

impl UserStore for BTreeMap<String, UserState> {
    fn update<R>(&mut self, user_id: &str, f: impl FnOnce(&mut UserState) -> R) -> R {
        match self.get_mut(user_id) {
            Some(st) => f(st),
            None => f(self.entry(user_id.to_string()).or_default()),
        }
    }

    fn get(&self, user_id: &str) -> Option<&UserState> {
        BTreeMap::get(self, user_id)
    }

    fn remove(&mut self, user_id: &str) -> Option<UserState> {
        BTreeMap::remove(self, user_id)
    }
}

/// Any hasher: the scorer and the benchmark use [`crate::hash::UserMap`].
impl<H: BuildHasher> UserStore for HashMap<String, UserState, H> {
    fn update<R>(&mut self, user_id: &str, f: impl FnOnce(&mut UserState) -> R) -> R {
        match self.get_mut(user_id) {
            Some(st) => f(st),
            None => f(self.entry(user_id.to_string()).or_default()),
        }
    }

    fn get(&self, user_id: &str) -> Option<&UserState> {
        HashMap::get(self, user_id)
    }

    fn remove(&mut self, user_id: &str) -> Option<UserState> {
        HashMap::remove(self, user_id)
    }
}

/// A partition's clock and timer index. The index is derived data: [`Partition::restore`]
/// rebuilds it from the user states, so only the clock needs persisting beside them.
#[derive(Debug, Default, Clone)]
pub struct Partition {
    clock: Option<Millis>,
    timers: BTreeSet<Timer>,
}

/// A timer index entry, ordered by due time, then user id. The id is a `Box<str>`, 8 bytes
/// less per entry than a `String`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    due: Millis,
    user: Box<str>,
}

/// A timer entry as `(due, user)` whether it owns the user id or borrows it, so the index can
/// be searched without allocating a `String` (the `Borrow<dyn TimerKey>` lookup idiom).
trait TimerKey {
    fn key(&self) -> (Millis, &str);
}

impl TimerKey for Timer {
    fn key(&self) -> (Millis, &str) {
        (self.due, &self.user)
    }
}

impl TimerKey for (Millis, &str) {
    fn key(&self) -> (Millis, &str) {
        (self.0, self.1)
    }
}

impl<'a> Borrow<dyn TimerKey + 'a> for Timer {
    fn borrow(&self) -> &(dyn TimerKey + 'a) {
        self
    }
}

// The same order as `Timer`'s derived one: due time, then user id.
impl Ord for dyn TimerKey + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for dyn TimerKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn TimerKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn TimerKey + '_ {}

impl Partition {
    pub fn new() -> Partition {
        Partition::default()
    }

    /// A partition resumed at `clock`, with the timers of the given users.
    pub fn restore<'a>(
        clock: Option<Millis>,
        users: impl IntoIterator<Item = (&'a str, &'a UserState)>,
    ) -> Partition {
        let timers = users
            .into_iter()
            .filter_map(|(u, st)| {
                st.timer_due.get().map(|due| Timer {
                    due,
                    user: u.into(),
                })
            })
            .collect();
        Partition { clock, timers }
    }

    /// The largest event time seen (or the wall clock once caught up); `None` before any event.
    pub fn clock(&self) -> Option<Millis> {
        self.clock
    }

    /// How many entries the timer index holds: one per user with a running inactivity timer,
    /// plus the entries `reschedule` leaves behind until their old due time.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// The earliest due timer, if any.
    pub fn next_due(&self) -> Option<Millis> {
        self.timers.first().map(|t| t.due)
    }

    /// Checks an event against its user's bounds before anything of it counts, the clock
    /// included: an event whose attribute would take the user's attributes past
    /// [`crate::engine::MAX_ATTRIBUTE_BYTES`] is bad input (`invalid_value`), which the caller
    /// dead-letters (SPEC 2: a dead-lettered record moves no clock) instead of processing it.
    /// What [`Partition::process`] would skip before the attributes step passes, whatever the
    /// state holds now: a replay (at or below the user's last offset) and a duplicate (SPEC
    /// 3.8: it changes nothing, and its time counts in the clock like any event's). Only
    /// attribute events look the user up.
    pub fn admit<S: UserStore>(
        &self,
        engine: &Engine,
        store: &S,
        event: &Event,
        offset: i64,
    ) -> Result<(), crate::codec::DecodeError> {
        if crate::engine::attribute_of(event).is_none() {
            return Ok(());
        }
        let st = store.get(&event.user_id);
        if let Some(st) = st {
            if st.last_offset.get().is_some_and(|o| offset <= o) {
                return Ok(());
            }
            let clock = self.clock.map_or(event.time, |c| c.max(event.time));
            if let Some(id) = &event.event_id {
                if engine.is_duplicate(st, id, event.time, clock) {
                    return Ok(());
                }
            }
        }
        crate::engine::attribute_error(st, event).map_or(Ok(()), Err)
    }

    /// Processes one event: counts its time in the clock, fires the timers due by then, then
    /// applies it. An event at or below the user's `last_offset` is a replay and changes nothing.
    /// A `user_deleted` event deletes the user ([`Partition::delete`]) after its time is counted.
    pub fn process<S: UserStore>(
        &mut self,
        engine: &Engine,
        store: &mut S,
        event: &Event,
        origin: Origin<'_>,
        out: &mut Vec<ScoreChange>,
    ) -> Outcome {
        let clock = self.clock.map_or(event.time, |c| c.max(event.time));
        self.advance(engine, store, clock, out);
        if event.kind == EventType::UserDeleted {
            return self.delete(store, &event.user_id, origin.offset);
        }
        let (outcome, before, after) = store.update(&event.user_id, |st| {
            if st.last_offset.get().is_some_and(|o| origin.offset <= o) {
                return (Outcome::Replayed, None, None);
            }
            let before = st.timer_due.get();
            let outcome = engine.apply(st, event, origin, clock, out);
            st.last_offset = origin.offset.into();
            (outcome, before, st.timer_due.get())
        });
        if before != after {
            self.reschedule(&event.user_id, before, after);
        }
        outcome
    }

    /// SPEC 2, forgetting: deletes the user's state and its pending inactivity timer, at the
    /// partition clock as it stands (a tombstone has no time of its own, so it moves no clock;
    /// a `user_deleted` event has counted its time before). Later events of the user start
    /// from nothing: not enrolled, score 0, no attributes, no remembered event ids.
    ///
    /// The replay guard holds as for any event: a state that already holds `offset` (a replay
    /// over a state stored after this deletion, so of a re-created user) is left alone and the
    /// result is [`Outcome::Replayed`]. Otherwise the result is [`Outcome::Deleted`], whether or
    /// not there was a state: deleting is idempotent.
    pub fn delete<S: UserStore>(&mut self, store: &mut S, user_id: &str, offset: i64) -> Outcome {
        match store.get(user_id) {
            Some(st) if st.last_offset.get().is_some_and(|o| offset <= o) => {
                return Outcome::Replayed
            }
            Some(_) => {}
            None => return Outcome::Deleted,
        }
        if let Some(st) = store.remove(user_id) {
            if st.timer_due.is_some() {
                self.reschedule(user_id, st.timer_due.get(), None);
            }
        }
        Outcome::Deleted
    }

    /// SPEC 2, forgetting by a tombstone (a record with no time of its own): the timers already
    /// due by the clock as it stands fire first (a late event can arm one behind the clock, and
    /// it would have fired at the next event), so a deleted user's due decay is published before
    /// the deletion, as a `user_deleted` event's clock check publishes it; then
    /// [`Partition::delete`]. The clock does not move.
    pub fn forget<S: UserStore>(
        &mut self,
        engine: &Engine,
        store: &mut S,
        user_id: &str,
        offset: i64,
        out: &mut Vec<ScoreChange>,
    ) -> Outcome {
        if let Some(clock) = self.clock {
            self.advance(engine, store, clock, out);
        }
        self.delete(store, user_id, offset)
    }

    /// Moves the clock forward to `to` (never back) and fires every timer due by then, in order.
    pub fn advance<S: UserStore>(
        &mut self,
        engine: &Engine,
        store: &mut S,
        to: Millis,
        out: &mut Vec<ScoreChange>,
    ) {
        let to = self.clock.map_or(to, |c| c.max(to));
        self.clock = Some(to);
        // Each user's timer fires at most once per advance: `fire_timer` covers every window
        // due by `to` in one step and leaves the timer due after `to` or ended. An entry behind
        // its user's timer (left there when the timer moved later, see `reschedule`) moves to
        // the timer's due time without touching the state, and fires from there if that is
        // due too; so this loop runs at most twice per user, however far the clock moves.
        while self.timers.first().is_some_and(|t| t.due <= to) {
            let Some(Timer { due, user }) = self.timers.pop_first() else {
                break;
            };
            // The state is the truth: a read, so an entry that is behind changes nothing (the
            // scorer's store writes what `update` touched at the next checkpoint), and one whose
            // user was deleted does not bring the user back.
            let next = match store.get(&user).and_then(|st| st.timer_due.get()) {
                Some(current) if current == due => store.update(&user, |st| {
                    engine.fire_timer(&user, st, due, to, out);
                    st.timer_due.get()
                }),
                current => current,
            };
            if let Some(due) = next {
                self.timers.insert(Timer { due, user });
            }
        }
    }

    /// Keeps the index in step with a user's timer moving from `before` to `after`. A change
    /// re-arms the timer, so this runs for about every other event; the common move, to a later
    /// time (the user's events come in time order), leaves the entry where it is: the index
    /// only needs an entry at or before each running timer, and `advance` moves one that is
    /// behind when it comes up (about one B-tree update per user and inactivity window instead
    /// of two per change: issue 14). Any other move takes the entry out, when it is at
    /// `before`, and puts one at `after`, reusing its user id.
    ///
    /// So the index holds one entry per user with a running timer, plus, until their old due
    /// time, the entries of timers that ended or moved earlier after a move later (when the
    /// entry is no longer at `before`), and of users deleted meanwhile; `advance` drops those.
    fn reschedule(&mut self, user: &str, before: Option<Millis>, after: Option<Millis>) {
        if let (Some(before), Some(after)) = (before, after) {
            if after >= before {
                return;
            }
        }
        let old = before.and_then(|t| self.timers.take(&(t, user) as &dyn TimerKey));
        if let Some(due) = after {
            let user = old.map_or_else(|| user.into(), |t| t.user);
            self.timers.insert(Timer { due, user });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ReasonKind;
    use crate::event::Scalar;

    const T0: Millis = 1_767_571_200_000;
    const M: Millis = 60_000;

    fn engine() -> Engine {
        let rules = "[entry]\non = [{ type = \"email_added\" }]\n\
                     [[group]]\nname = \"engaged\"\ndelta = 1\ntriggers = [{ type = \"session_start\" }]\n\
                     [inactivity]\nwindow = \"7d\"\ndelta = -1\n";
        match crate::rules::parse_str(rules, "test.toml") {
            Ok(r) => Engine::new(r),
            Err(e) => panic!("{e}"),
        }
    }

    fn email(user: &str, time: Millis) -> Event {
        let mut e = Event::new(user, time, EventType::EmailAdded);
        e.value = Some(Scalar::Str(format!("{user}@example.com")));
        e
    }

    fn origin(offset: i64) -> Origin<'static> {
        Origin {
            topic: "t",
            partition: 0,
            offset,
        }
    }

    /// User `u` setting (or with `None` removing) a string attribute.
    fn attr_event(name: &str, time: Millis, value: Option<&str>) -> Event {
        let mut ev = Event::new("u", time, EventType::AttributeChanged);
        ev.name = Some(name.into());
        ev.value = value.map(|v| Scalar::Str(v.into()));
        ev
    }

    /// Found by an outside check: a producer's retry of an attribute event, a duplicate by
    /// SPEC 3.8, was dead-lettered once the user's attributes were full (the bound checked
    /// before the duplicate), so its time did not count in the clock and a decay due by then
    /// did not fire. A duplicate passes `admit` and is dropped as one, counting its time.
    #[test]
    fn a_duplicate_retry_passes_admit_when_the_attributes_are_full() {
        let e = engine();
        let mut p = Partition::new();
        let mut store: BTreeMap<String, UserState> = BTreeMap::new();
        let mut out = Vec::new();
        let attr = |name: &str, time: Millis, value: Option<&str>, id: &str| {
            let mut ev = attr_event(name, time, value);
            ev.event_id = Some(id.into());
            ev
        };
        let big = "v".repeat(4000);
        let mut offset = 0;
        let mut run = |p: &mut Partition, store: &mut BTreeMap<String, UserState>, ev: &Event| {
            let admitted = p.admit(&e, store, ev, offset);
            let outcome = admitted
                .is_ok()
                .then(|| p.process(&e, store, ev, origin(offset), &mut out));
            offset += 1;
            (admitted.is_ok(), outcome)
        };
        let first = attr("cx", T0, Some(&big), "d-x");
        assert!(run(&mut p, &mut store, &first).0);
        run(&mut p, &mut store, &attr("cx", T0 + 1, None, "rm"));
        for i in 0..16 {
            let fill = attr(
                &format!("a{i:02}"),
                T0 + 2 + i,
                Some(&big),
                &format!("f{i}"),
            );
            assert!(run(&mut p, &mut store, &fill).0, "filler {i}");
        }
        // A new attribute would pass the bound ...
        let fresh = attr("cy", T0 + 100, Some(&big), "new");
        assert_eq!(run(&mut p, &mut store, &fresh), (false, None));
        // ... but the retry of the first event, 23 hours on, is a duplicate: admitted, dropped
        // as one, and its time counts.
        let retry = attr("cx", T0 + 23 * 60 * M, Some(&big), "d-x");
        assert_eq!(
            run(&mut p, &mut store, &retry),
            (true, Some(Outcome::Duplicate))
        );
        assert_eq!(p.clock(), Some(T0 + 23 * 60 * M));
        assert_eq!(store["u"].attribute("cx"), None);
    }

    /// A user's attributes stay within `MAX_ATTRIBUTE_BYTES`: `admit` refuses the event that
    /// would pass it (naming the attribute and the limit) before anything of it counts, the
    /// clock included; a removal, a replay and a shorter value pass; `apply` called directly
    /// does not set it either.
    #[test]
    fn an_attribute_past_the_users_bound_is_refused_before_the_clock_moves() {
        use crate::engine::MAX_ATTRIBUTE_BYTES;
        let e = engine();
        let mut p = Partition::new();
        let mut store: BTreeMap<String, UserState> = BTreeMap::new();
        let mut out = Vec::new();
        let attr = attr_event;
        let big = "v".repeat(4000);
        let mut offset = 0;
        let mut refused = Vec::new();
        for i in 0..20 {
            let ev = attr(&format!("a{i:02}"), T0 + i, Some(&big));
            match p.admit(&e, &store, &ev, offset) {
                Ok(()) => {
                    p.process(&e, &mut store, &ev, origin(offset), &mut out);
                }
                Err(err) => {
                    assert_eq!(err.reason(), "invalid_value");
                    let text = err.to_string();
                    assert!(text.contains(&format!("\"a{i:02}\"")), "{text}");
                    assert!(text.contains(&format!("{MAX_ATTRIBUTE_BYTES} bytes per user")));
                    refused.push(i);
                }
            }
            offset += 1;
        }
        assert_eq!(refused, (16..20).collect::<Vec<_>>());
        assert_eq!(p.clock(), Some(T0 + 15), "a refused event moves no clock");
        let held = store["u"].attributes().encoded_len();
        assert!(held <= MAX_ATTRIBUTE_BYTES, "{held}");
        // A shorter value and a removal pass; the removal makes room for one more.
        let shorter = attr("a01", T0 + 30, Some("short"));
        assert!(p.admit(&e, &store, &shorter, offset).is_ok());
        let removal = attr("a02", T0 + 31, None);
        assert!(p.admit(&e, &store, &removal, offset).is_ok());
        p.process(&e, &mut store, &removal, origin(offset), &mut out);
        offset += 1;
        let again = attr("a16", T0 + 32, Some(&big));
        assert!(p.admit(&e, &store, &again, offset).is_ok());
        // A replay passes whatever the state now holds (`process` skips it).
        let refused_now = attr("a17", T0 + 33, Some(&big));
        assert!(p.admit(&e, &store, &refused_now, offset).is_ok());
        p.process(&e, &mut store, &again, origin(offset), &mut out);
        assert!(
            p.admit(&e, &store, &refused_now, offset).is_ok(),
            "a replay"
        );
        assert!(p.admit(&e, &store, &refused_now, offset + 1).is_err());
        // `apply` on its own keeps the bound too: the attribute is not set.
        let mut st = store["u"].clone();
        let before = st.attributes().clone();
        e.apply(&mut st, &refused_now, origin(offset + 1), T0 + 33, &mut out);
        assert_eq!(*st.attributes(), before);
    }

    #[test]
    fn a_tombstone_deletes_at_the_clock_without_moving_it_and_drops_the_timer() {
        let engine = engine();
        let mut p = Partition::new();
        let mut users = BTreeMap::new();
        let mut out = Vec::new();
        p.process(&engine, &mut users, &email("u1", T0), origin(0), &mut out);
        let session = Event::new("u1", T0 + M, EventType::SessionStart);
        p.process(&engine, &mut users, &session, origin(1), &mut out);
        assert_eq!((users["u1"].score, p.pending_timers()), (1, 1));

        assert_eq!(p.delete(&mut users, "u1", 2), Outcome::Deleted);
        assert!(users.is_empty());
        assert_eq!(p.pending_timers(), 0);
        assert_eq!(
            p.clock(),
            Some(T0 + M),
            "a tombstone has no time: the clock stays"
        );
        // Idempotent: deleting what is not there is a deletion all the same.
        assert_eq!(p.delete(&mut users, "u1", 3), Outcome::Deleted);
        assert_eq!(p.delete(&mut users, "nobody", 4), Outcome::Deleted);
    }

    /// A late event re-arms u1's timer behind the clock; a tombstone for u1 then fires it (the
    /// decay is published, then the user deleted), as a `user_deleted` event would. Before,
    /// the tombstone deleted at once and the due decay was never published.
    #[test]
    fn a_tombstone_fires_the_timers_due_by_the_clock_before_it_deletes() {
        const W: Millis = 7 * 86_400_000;
        let engine = engine();
        let mut p = Partition::new();
        let mut users = BTreeMap::new();
        let mut out = Vec::new();
        p.process(&engine, &mut users, &email("u1", T0), origin(0), &mut out);
        let first = Event::new("u1", T0 + M, EventType::SessionStart);
        p.process(&engine, &mut users, &first, origin(1), &mut out);
        // u2 moves the clock past u1's due time; a late external score of u1 (no re-entry
        // wait) re-arms its timer at T0 + 2M + W, behind the clock.
        let u2 = Event::new("u2", T0 + 3 * W, EventType::SessionStart);
        p.process(&engine, &mut users, &u2, origin(2), &mut out);
        let mut late = Event::new("u1", T0 + 2 * M, EventType::ExternalScore);
        late.score = Some(crate::event::ScoreOp::Increment(5));
        p.process(&engine, &mut users, &late, origin(3), &mut out);
        out.clear();
        assert_eq!(
            p.forget(&engine, &mut users, "u1", 4, &mut out),
            Outcome::Deleted
        );
        assert!(!users.contains_key("u1"));
        let decays: Vec<_> = out
            .iter()
            .filter(|c| &*c.user_id == "u1")
            .map(|c| (c.reason.kind, c.time, c.windows))
            .collect();
        assert_eq!(
            decays,
            [(ReasonKind::Inactivity, T0 + 2 * M + 2 * W, 2)],
            "{out:#?}"
        );
        assert_eq!(p.clock(), Some(T0 + 3 * W), "a tombstone moves no clock");
    }

    /// The index entry stays put when a user's timer moves later (issue 14): it comes up at the
    /// old time, fires nothing and moves to the new one, where the timer fires. A timer moved
    /// earlier fires at its new time; a deleted user's entry left behind fires nothing and does
    /// not bring the user back.
    #[test]
    fn timers_fire_at_their_latest_due_time_whichever_way_they_moved() {
        const W: Millis = 7 * 86_400_000;
        let engine = engine();
        let mut p = Partition::new();
        let mut users = BTreeMap::new();
        let mut out = Vec::new();
        let mut offset = 0;
        let mut feed = |p: &mut Partition, users: &mut BTreeMap<String, UserState>, e: Event| {
            let mut out = Vec::new();
            p.process(&engine, users, &e, origin(offset), &mut out);
            offset += 1;
        };
        // u1's timer moves later twice; u2's moves later, then u2 is deleted.
        for (user, times) in [("u1", [M, 2 * M, 3 * M]), ("u2", [M, 2 * M, 2 * M])] {
            feed(&mut p, &mut users, email(user, T0));
            for t in times {
                feed(
                    &mut p,
                    &mut users,
                    Event::new(user, T0 + t, EventType::SessionStart),
                );
            }
        }
        feed(
            &mut p,
            &mut users,
            Event::new("u2", T0 + 4 * M, EventType::UserDeleted),
        );
        assert_eq!(users["u1"].timer_due, Some(T0 + 3 * M + W));
        assert!(!users.contains_key("u2"));

        // The old due times come and go: nothing fires, nobody comes back.
        p.advance(&engine, &mut users, T0 + 2 * M + W, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(
            !users.contains_key("u2"),
            "a deleted user's old entry re-created it"
        );
        assert_eq!(users["u1"].score, 3);
        assert_eq!(
            p.pending_timers(),
            1,
            "u1's entry moved to its timer's time"
        );

        p.advance(&engine, &mut users, T0 + 3 * M + W, &mut out);
        let fired: Vec<(&str, Millis, i64)> =
            out.iter().map(|c| (&*c.user_id, c.time, c.score)).collect();
        assert_eq!(fired, [("u1", T0 + 3 * M + W, 2)]);
        out.clear();

        // u3's timer moves earlier: a late external score re-arms it from an earlier time.
        feed(&mut p, &mut users, email("u3", T0 + 10 * M));
        feed(
            &mut p,
            &mut users,
            Event::new("u3", T0 + 10 * M, EventType::SessionStart),
        );
        let mut late = Event::new("u3", T0 + 5 * M, EventType::ExternalScore);
        late.score = Some(crate::event::ScoreOp::Set(10));
        feed(&mut p, &mut users, late);
        assert_eq!(users["u3"].timer_due, Some(T0 + 5 * M + W));
        p.advance(&engine, &mut users, T0 + 5 * M + 2 * W - 1, &mut out);
        let fired: Vec<(&str, Millis)> = out.iter().map(|c| (&*c.user_id, c.time)).collect();
        assert!(
            fired.starts_with(&[("u3", T0 + 5 * M + W)]),
            "u3 decays at its earlier time: {fired:?}"
        );
    }

    /// The property the crash-safety argument needs: replaying a stretch of input over a
    /// stored state that already holds some of it (each user's `last_offset`) ends where the
    /// uninterrupted run ended, deletions included. A state stored after a deletion and a
    /// re-creation holds the re-creating offsets, so the replayed deletion is recognised as
    /// held (`Replayed`) instead of deleting the re-created user.
    #[test]
    fn replaying_over_a_newer_stored_state_ends_where_the_uninterrupted_run_ended() {
        let engine = engine();
        let events = [
            email("u1", T0),
            Event::new("u1", T0 + M, EventType::SessionStart),
            email("u2", T0 + 2 * M),
            Event::new("u1", T0 + 3 * M, EventType::UserDeleted),
            email("u1", T0 + 4 * M),
            Event::new("u1", T0 + 5 * M, EventType::SessionStart),
            Event::new("u2", T0 + 6 * M, EventType::SessionStart),
        ];
        let run = |users: &mut BTreeMap<String, UserState>, p: &mut Partition, from: usize| {
            let mut out = Vec::new();
            let outcomes: Vec<Outcome> = (from..events.len())
                .map(|i| p.process(&engine, users, &events[i], origin(i as i64), &mut out))
                .collect();
            outcomes
        };
        let mut whole = BTreeMap::new();
        run(&mut whole, &mut Partition::new(), 0);

        for stored_after in 0..events.len() {
            // The state as stored after `stored_after + 1` events, replayed from the start.
            let mut users = BTreeMap::new();
            let mut p = Partition::new();
            run_prefix(&engine, &events, stored_after + 1, &mut users, &mut p);
            let mut p = Partition::restore(None, users.iter().map(|(k, v)| (k.as_str(), v)));
            let outcomes = run(&mut users, &mut p, 0);
            assert_eq!(
                users, whole,
                "stored after event {stored_after}: {outcomes:?}"
            );
        }
    }

    /// What the scorer does after a crash: resume from a checkpoint (the users' states as
    /// encoded for the changelog, deleted users absent, and the clock) and process the rest of
    /// the input. For every checkpoint position the end state, and the changes published
    /// after the checkpoint, equal the uninterrupted run's, deletions, re-creations and the
    /// timers around them included.
    #[test]
    fn resuming_from_any_checkpoint_equals_the_uninterrupted_run_with_deletions() {
        const DAY: Millis = 86_400_000;
        let engine = engine();
        let events = [
            email("u1", T0),
            Event::new("u1", T0 + M, EventType::SessionStart),
            email("u2", T0 + 2 * M),
            Event::new("u2", T0 + 3 * M, EventType::SessionStart),
            // Both seven-day decays fall due by this deletion's time and fire before it.
            Event::new("u1", T0 + 8 * DAY, EventType::UserDeleted),
            Event::new("u1", T0 + 8 * DAY + M, EventType::SessionStart),
            email("u1", T0 + 8 * DAY + 2 * M),
            Event::new("u1", T0 + 8 * DAY + 3 * M, EventType::SessionStart),
            Event::new("u2", T0 + 9 * DAY, EventType::UserDeleted),
            email("u3", T0 + 10 * DAY),
        ];
        let process = |users: &mut BTreeMap<String, UserState>,
                       p: &mut Partition,
                       range: std::ops::Range<usize>| {
            let mut out = Vec::new();
            for i in range {
                p.process(&engine, users, &events[i], origin(i as i64), &mut out);
            }
            out
        };
        let mut whole = BTreeMap::new();
        let mut p = Partition::new();
        let mut whole_changes = Vec::new();
        for i in 0..events.len() {
            whole_changes.push(process(&mut whole, &mut p, i..i + 1));
        }
        assert!(!whole.contains_key("u2"));
        assert_eq!(
            whole["u1"].score, 1,
            "re-created: enrolled again, one session"
        );
        let decays = whole_changes
            .concat()
            .iter()
            .filter(|c| c.reason.kind == crate::change::ReasonKind::Inactivity)
            .count();
        assert_eq!(decays, 2, "both users decayed before their deletions");

        for k in 0..=events.len() {
            let mut users = BTreeMap::new();
            let mut p = Partition::new();
            process(&mut users, &mut p, 0..k);
            // The checkpoint, through the changelog's encoding.
            let mut restored: BTreeMap<String, UserState> = users
                .iter()
                .map(|(u, st)| (u.clone(), UserState::decode(&st.encode()).expect("decodes")))
                .collect();
            let mut p =
                Partition::restore(p.clock(), restored.iter().map(|(u, st)| (u.as_str(), st)));
            let changes = process(&mut restored, &mut p, k..events.len());
            assert_eq!(restored, whole, "resumed at {k}");
            assert_eq!(changes, whole_changes[k..].concat(), "resumed at {k}");
        }
    }

    fn run_prefix(
        engine: &Engine,
        events: &[Event],
        n: usize,
        users: &mut BTreeMap<String, UserState>,
        p: &mut Partition,
    ) {
        let mut out = Vec::new();
        for (i, e) in events[..n].iter().enumerate() {
            p.process(engine, users, e, origin(i as i64), &mut out);
        }
    }
}
