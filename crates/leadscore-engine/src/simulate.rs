//! The offline simulator (SPEC section 5): the engine over a JSONL file, one partition in file
//! order, no Kafka.
//!
//! Each non-blank line is an input event in the JSON wire format; its position for
//! `topic/partition/offset` ids is `simulate/0/<line index>` (0-based). A bad line is reported
//! with its line number and skipped. Without `--now` the clock stops at the largest event time,
//! and timers due by then have fired; with it, the clock is moved on to `--now`.
//!
//! With `partitions > 1` the events are split by user id with Kafka's default partitioner, as
//! a topic of that many partitions would hold them, and each partition keeps its own clock (and
//! offsets), exactly as the scorer does: the way to compare a Kafka run with inactivity rules.
//!
//! As in the scorer, an event of an unknown `type` is skipped (its time still counts in its
//! partition's clock) and a `user_deleted` event drops the user from the output.

use crate::change::ScoreChange;
use crate::codec::{self, Format, Limits};
use crate::engine::Engine;
use crate::event::Origin;
use crate::partition::Partition;
use crate::partitioner::partition_for;
use crate::state::UserState;
use crate::timestamp::{format_rfc3339, Millis};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{self, BufRead};

/// The topic name simulated events are said to come from.
pub const SIMULATED_TOPIC: &str = "simulate";

/// A line that could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// The end state of a simulation.
#[derive(Debug, Default)]
pub struct Simulation {
    pub users: BTreeMap<String, UserState>,
    /// Every score change, in the order the engine made them.
    pub changes: Vec<ScoreChange>,
    pub bad_lines: Vec<BadLine>,
    /// The partition clock at the end.
    pub clock: Option<Millis>,
    /// Events of a type this version does not know: skipped (their time counted in the
    /// clock), as the scorer does by default (`scorer.unknown_types = "skip"`).
    pub skipped_unknown_types: usize,
}

/// Runs the engine over JSONL `input`, then moves the clock to `now` if given.
pub fn run(engine: &Engine, input: impl BufRead, now: Option<Millis>) -> io::Result<Simulation> {
    run_partitioned(engine, input, now, 1)
}

/// The default `scorer.max_future_skew` (the scorer's setting takes its default from here):
/// events dated further ahead of the wall clock are bad lines here, as they are dead letters
/// there.
pub const DEFAULT_MAX_FUTURE_SKEW: Millis = 3_600_000;

/// Runs the engine over JSONL `input` split into `partitions` partitions by user id.
pub fn run_partitioned(
    engine: &Engine,
    input: impl BufRead,
    now: Option<Millis>,
    partitions: i32,
) -> io::Result<Simulation> {
    run_guarded(
        engine,
        input,
        now,
        partitions,
        crate::timestamp::wall_clock_millis(),
        DEFAULT_MAX_FUTURE_SKEW,
    )
}

/// [`run_partitioned`] with the time guard explicit: a line whose `time` is more than
/// `max_skew` after `wall` is a bad line and moves no clock, as in the scorer (SPEC 2).
pub fn run_guarded(
    engine: &Engine,
    input: impl BufRead,
    now: Option<Millis>,
    partitions: i32,
    wall: Millis,
    max_skew: Millis,
) -> io::Result<Simulation> {
    let partitions = partitions.max(1);
    let mut sim = Simulation::default();
    let mut parts: Vec<(Partition, i64)> = (0..partitions).map(|_| (Partition::new(), 0)).collect();
    let limits = Limits::default();
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let decoded = codec::decode_event(Format::Json, None, line.as_bytes(), &limits)
            .and_then(|e| codec::check_not_future(&e, wall, max_skew).map(|()| e));
        let item = match decoded {
            Ok(e) => Line::Event(e),
            // Skipped, as in the scorer: its time counts, it changes no user. The future-time
            // guard applies to it too, since it moves a clock.
            Err(codec::DecodeError::UnknownType(u)) => {
                match codec::check_time_not_future(u.time, wall, max_skew) {
                    Ok(()) => Line::UnknownType(*u),
                    Err(e) => {
                        sim.bad_lines.push(BadLine {
                            line: index + 1,
                            reason: e.to_string(),
                        });
                        continue;
                    }
                }
            }
            Err(e) => {
                sim.bad_lines.push(BadLine {
                    line: index + 1,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let user_id = match &item {
            Line::Event(e) => &e.user_id,
            Line::UnknownType(u) => u.user_id.as_str(),
        };
        let p = if partitions == 1 {
            0
        } else {
            partition_for(user_id.as_bytes(), partitions)
        };
        let (partition, next_offset) = &mut parts[p as usize];
        let offset = if partitions == 1 {
            index as i64
        } else {
            *next_offset
        };
        *next_offset += 1;
        let origin = Origin {
            topic: SIMULATED_TOPIC,
            partition: p,
            offset,
        };
        match &item {
            Line::Event(event) => {
                partition.process(engine, &mut sim.users, event, origin, &mut sim.changes);
            }
            Line::UnknownType(u) => {
                sim.skipped_unknown_types += 1;
                partition.advance(engine, &mut sim.users, u.time, &mut sim.changes);
            }
        }
    }
    for (partition, _) in &mut parts {
        if let Some(to) = now.or(partition.clock()) {
            partition.advance(engine, &mut sim.users, to, &mut sim.changes);
        }
        sim.clock = sim.clock.max(partition.clock());
    }
    Ok(sim)
}

/// A decoded line: an event, or one of a type this version does not know.
enum Line {
    Event(crate::event::Event),
    UnknownType(codec::UnknownType),
}

/// One user's line of `leadscore simulate` output.
pub fn user_json(user_id: &str, st: &UserState) -> Value {
    let attributes: Map<String, Value> = st
        .attributes
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_json()))
        .collect();
    json!({
        "user_id": user_id,
        "score": st.score,
        "enrolled": st.enrolled,
        "attributes": attributes,
        "last_change": st.last_change.get().map(format_rfc3339),
        "inactivity_due": st.timer_due.get().map(format_rfc3339),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ReasonKind;

    const RULES: &str = r#"
dedupe_window = "24h"

[entry]
on = [{ type = "email_added" }]

[[group]]
name = "engaged"
delta = 1
triggers = [{ type = "session_start" }]

[inactivity]
window = "7d"
delta = -1
"#;

    fn engine() -> Engine {
        match crate::rules::parse_str(RULES, "test.toml") {
            Ok(r) => Engine::new(r),
            Err(e) => panic!("{e}"),
        }
    }

    fn simulate(lines: &[String]) -> Simulation {
        let input = lines.join("\n");
        let wall = crate::timestamp::parse_rfc3339("2026-03-01T00:00:00Z").unwrap_or_default();
        match run_guarded(&engine(), input.as_bytes(), None, 1, wall, 3_600_000) {
            Ok(sim) => sim,
            Err(e) => panic!("{e}"),
        }
    }

    /// One JSON event line; `at` is `YYYY-MM-DDTHH:MM` (UTC).
    fn line(user: &str, at: &str, rest: &str) -> String {
        format!(r#"{{"user_id":"{user}","time":"{at}:00Z",{rest}}}"#)
    }

    /// `minutes` after 2026-01-05T00:00, for [`line`].
    fn at(minutes: u32) -> String {
        format!("2026-01-05T{:02}:{:02}", minutes / 60, minutes % 60)
    }

    #[test]
    fn a_deleted_user_starts_from_nothing_and_its_old_event_ids_are_forgotten() {
        let u1 = |minutes, rest| line("u1", &at(minutes), rest);
        let mut lines = vec![
            u1(
                0,
                r#""type":"email_added","event_id":"e1","value":"a@x.io""#,
            ),
            u1(1, r#""type":"session_start","event_id":"s1""#),
            u1(
                2,
                r#""type":"attribute_changed","name":"plan","value":"pro""#,
            ),
            u1(60, r#""type":"user_deleted""#),
        ];
        let sim = simulate(&lines);
        assert!(sim.bad_lines.is_empty(), "{:?}", sim.bad_lines);
        assert!(!sim.users.contains_key("u1"), "dropped from the output");

        // Deleted, then a session: not enrolled any more, nothing of before.
        lines.push(u1(120, r#""type":"session_start","event_id":"s1""#));
        let sim = simulate(&lines);
        let st = &sim.users["u1"];
        assert_eq!(
            (
                st.score,
                st.enrolled,
                st.attributes.len(),
                st.timer_due.get()
            ),
            (0, false, 0, None),
            "{st:?}"
        );
        assert_eq!(st.last_change, None);

        // The enrolling email again, with its old id, well within the dedupe window: not a
        // duplicate, since the ids went with the state, so it enrolls and the session scores.
        lines.push(u1(
            180,
            r#""type":"email_added","event_id":"e1","value":"b@x.io""#,
        ));
        lines.push(u1(240, r#""type":"session_start","event_id":"s2""#));
        let sim = simulate(&lines);
        let st = &sim.users["u1"];
        assert_eq!((st.score, st.enrolled), (1, true), "{st:?}");
        let attributes: Vec<_> = st
            .attributes
            .iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect();
        assert_eq!(
            attributes,
            [("email", crate::event::Scalar::Str("b@x.io".into()))]
        );
        let user = user_json("u1", st);
        assert_eq!(user["score"], 1);
    }

    #[test]
    fn a_deletion_drops_the_pending_timer_and_an_unknown_type_moves_the_clock() {
        let eight_days_later = "2026-01-13T00:00";
        let sim = simulate(&[
            line("u1", &at(0), r#""type":"email_added","value":"a@x.io""#),
            line("u1", &at(1), r#""type":"session_start""#),
            line("u2", &at(0), r#""type":"email_added","value":"b@x.io""#),
            line("u2", &at(1), r#""type":"session_start""#),
            line("u1", &at(60), r#""type":"user_deleted""#),
            // A type this version does not know: skipped, but its time counts, so both
            // seven-day timers are due by it.
            line(
                "u9",
                eight_days_later,
                r#""type":"page_view","url":"/pricing""#,
            ),
        ]);
        assert!(sim.bad_lines.is_empty(), "{:?}", sim.bad_lines);
        assert_eq!(sim.skipped_unknown_types, 1);
        assert_eq!(
            sim.clock,
            crate::timestamp::parse_rfc3339(&format!("{eight_days_later}:00Z")).ok()
        );
        assert_eq!(sim.users["u2"].score, 0, "u2's timer fired");
        let decays: Vec<&str> = sim
            .changes
            .iter()
            .filter(|c| c.reason.kind == ReasonKind::Inactivity)
            .map(|c| &*c.user_id)
            .collect();
        assert_eq!(decays, ["u2"], "the deleted user's timer went with it");
        assert!(!sim.users.contains_key("u1"));
        assert!(
            !sim.users.contains_key("u9"),
            "an unknown type creates no user"
        );
    }

    #[test]
    fn an_unknown_type_dated_too_far_ahead_is_a_bad_line_and_moves_no_clock() {
        let sim = simulate(&[
            line("u1", &at(0), r#""type":"email_added","value":"a@x.io""#),
            line("u9", "2099-01-01T00:00", r#""type":"page_view""#),
        ]);
        assert_eq!(sim.bad_lines.len(), 1, "{:?}", sim.bad_lines);
        assert_eq!(sim.bad_lines[0].line, 2);
        assert!(sim.bad_lines[0].reason.contains("ahead of the wall clock"));
        assert_eq!(sim.skipped_unknown_types, 0);
        assert_eq!(
            sim.clock,
            crate::timestamp::parse_rfc3339("2026-01-05T00:00:00Z").ok()
        );
    }
}
