//! One input partition: its clock, its inactivity timers, and the engine run over its users.
//!
//! SPEC 3.7: each partition has a clock, the largest event time seen on it, checked before each
//! event is applied; timers due by then fire first, in order of due time (then user id). The
//! user states live behind [`UserStore`], so the offline simulator keeps them in a map and the
//! Kafka scorer in its changelog-backed store, with the same code in between.

use crate::change::ScoreChange;
use crate::engine::{Engine, Outcome};
use crate::event::{Event, Origin};
use crate::state::UserState;
use crate::timestamp::Millis;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where a partition's user states live.
pub trait UserStore {
    /// Runs `f` on the user's state (a fresh default one if the user is unknown) and keeps the
    /// state `f` leaves behind.
    fn update<R>(&mut self, user_id: &str, f: impl FnOnce(&mut UserState) -> R) -> R;
}

impl UserStore for BTreeMap<String, UserState> {
    fn update<R>(&mut self, user_id: &str, f: impl FnOnce(&mut UserState) -> R) -> R {
        match self.get_mut(user_id) {
            Some(st) => f(st),
            None => f(self.entry(user_id.to_string()).or_default()),
        }
    }
}

impl UserStore for HashMap<String, UserState> {
    fn update<R>(&mut self, user_id: &str, f: impl FnOnce(&mut UserState) -> R) -> R {
        match self.get_mut(user_id) {
            Some(st) => f(st),
            None => f(self.entry(user_id.to_string()).or_default()),
        }
    }
}

/// A partition's clock and timer index. The index is derived data: [`Partition::restore`]
/// rebuilds it from the user states, so only the clock needs persisting beside them.
#[derive(Debug, Default, Clone)]
pub struct Partition {
    clock: Option<Millis>,
    timers: BTreeSet<Timer>,
}

/// A timer index entry, ordered by due time, then user id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    due: Millis,
    user: String,
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
                st.timer_due.map(|due| Timer {
                    due,
                    user: u.to_string(),
                })
            })
            .collect();
        Partition { clock, timers }
    }

    /// The largest event time seen (or the wall clock once caught up); `None` before any event.
    pub fn clock(&self) -> Option<Millis> {
        self.clock
    }

    /// How many users have a running inactivity timer.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// The earliest due timer, if any.
    pub fn next_due(&self) -> Option<Millis> {
        self.timers.first().map(|t| t.due)
    }

    /// Processes one event: counts its time in the clock, fires the timers due by then, then
    /// applies it. An event at or below the user's `last_offset` is a replay and changes nothing.
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
        let (outcome, before, after) = store.update(&event.user_id, |st| {
            if st.last_offset.is_some_and(|o| origin.offset <= o) {
                return (Outcome::Replayed, None, None);
            }
            let before = st.timer_due;
            let outcome = engine.apply(st, event, origin, clock, out);
            st.last_offset = Some(origin.offset);
            (outcome, before, st.timer_due)
        });
        if before != after {
            self.reschedule(&event.user_id, before, after);
        }
        outcome
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
        // due by `to` in one step and leaves the timer due after `to` or ended, so this loop
        // runs at most once per timer, however far the clock moves.
        while self.timers.first().is_some_and(|t| t.due <= to) {
            let Some(Timer { due, user }) = self.timers.pop_first() else {
                break;
            };
            let next = store.update(&user, |st| {
                if st.timer_due != Some(due) {
                    // Stale index entry; the state is the truth.
                    return st.timer_due;
                }
                engine.fire_timer(&user, st, due, to, out);
                st.timer_due
            });
            if let Some(due) = next {
                self.timers.insert(Timer { due, user });
            }
        }
    }

    /// Moves the user's index entry from `before` to `after`, reusing its user id: a change
    /// re-arms the timer, so this runs for about every other event.
    fn reschedule(&mut self, user: &str, before: Option<Millis>, after: Option<Millis>) {
        let old = before.and_then(|t| self.timers.take(&(t, user) as &dyn TimerKey));
        if let Some(due) = after {
            let user = old.map_or_else(|| user.to_string(), |t| t.user);
            self.timers.insert(Timer { due, user });
        }
    }
}
