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
use std::io::{self, BufRead, Read};

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
    /// The first [`MAX_BAD_LINES_LISTED`] bad lines, with their reasons.
    pub bad_lines: Vec<BadLine>,
    /// Every bad line, listed or not.
    pub bad_line_count: usize,
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

/// The longest line held: a line longer than an event may be ([`Limits::DEFAULT_MAX_BYTES`])
/// is a bad line, as an oversized record is for the scorer; one longer than this is read on to
/// its end without being kept, and is a bad line too.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// The longest line read to its end: past it without a line end the input is not JSON lines
/// (`/dev/zero`, a binary file) and the run stops with an error instead of reading for ever.
pub const MAX_SKIPPED_LINE_BYTES: u64 = 64 * 1024 * 1024;

/// Bad lines kept with their reasons; past this many they are only counted, so a large file of
/// the wrong shape does not hold a reason per line.
pub const MAX_BAD_LINES_LISTED: usize = 1000;

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

/// Reads on to the end of a line of which `read` bytes were read already, keeping nothing:
/// its length (without the line end), or `None` past [`MAX_SKIPPED_LINE_BYTES`] without one.
/// The end of the input ends the line.
fn skip_line(input: &mut impl BufRead, read: u64) -> io::Result<Option<u64>> {
    let mut size = read;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(Some(size));
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            input.consume(i + 1);
            return Ok(Some(size + i as u64));
        }
        let n = buf.len();
        input.consume(n);
        size += n as u64;
        if size > MAX_SKIPPED_LINE_BYTES {
            return Ok(None);
        }
    }
}

/// The UTF-8 byte order mark.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// [`run_partitioned`] with the time guard explicit: a line whose `time` is more than
/// `max_skew` after `wall`, or after `now` when that is later (the simulation's present: a
/// replay of traffic dated after the day it runs is not "from the future" up to it), is a bad
/// line and moves no clock, as in the scorer (SPEC 2).
pub fn run_guarded(
    engine: &Engine,
    input: impl BufRead,
    now: Option<Millis>,
    partitions: i32,
    wall: Millis,
    max_skew: Millis,
) -> io::Result<Simulation> {
    let partitions = partitions.max(1);
    let wall = now.map_or(wall, |now| now.max(wall));
    let mut sim = Simulation::default();
    let mut parts: Vec<(Partition, i64)> = (0..partitions).map(|_| (Partition::new(), 0)).collect();
    let limits = Limits::default();
    let mut input = input;
    let mut line = Vec::new();
    for index in 0usize.. {
        line.clear();
        let read = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        } else if line.len() > MAX_LINE_BYTES {
            // Too long to hold: read on to its end, keeping nothing, and report it as the
            // oversized record it would be in the scorer (SPEC 2: never fatal).
            match skip_line(&mut input, line.len() as u64)? {
                Some(size) => {
                    let e = codec::DecodeError::Oversized {
                        size: usize::try_from(size).unwrap_or(usize::MAX),
                        limit: limits.max_bytes,
                    };
                    sim.bad_line(index + 1, e.to_string());
                    continue;
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "line {}: no line end within {MAX_SKIPPED_LINE_BYTES} bytes; the \
                             input is one JSON event per line (is it the right file?)",
                            index + 1
                        ),
                    ))
                }
            }
        }
        // A UTF-8 byte order mark opening the file (Windows tools write one) is not part of
        // the first event.
        let text = match line.strip_prefix(UTF8_BOM) {
            Some(rest) if index == 0 => rest,
            _ => &line[..],
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let decoded = codec::decode_event(Format::Json, None, text, &limits)
            .and_then(|e| codec::check_not_future(&e, wall, max_skew).map(|()| e));
        let item = match decoded {
            Ok(e) => Line::Event(e),
            // Skipped, as in the scorer: its time counts, it changes no user. The future-time
            // guard applies to it too, since it moves a clock.
            Err(codec::DecodeError::UnknownType(u)) => {
                match codec::check_time_not_future(u.time, wall, max_skew) {
                    Ok(()) => Line::UnknownType(*u),
                    Err(e) => {
                        sim.bad_line(index + 1, e.to_string());
                        continue;
                    }
                }
            }
            Err(e) => {
                sim.bad_line(index + 1, e.to_string());
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
        // As the scorer dead-letters it: an event past its user's bounds is a bad line.
        if let Line::Event(event) = &item {
            if let Err(e) = partition.admit(engine, &sim.users, event, offset) {
                sim.bad_line(index + 1, e.to_string());
                continue;
            }
        }
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

impl Simulation {
    /// Counts a bad line, and lists it while fewer than [`MAX_BAD_LINES_LISTED`] are.
    fn bad_line(&mut self, line: usize, reason: String) {
        self.bad_line_count += 1;
        if self.bad_lines.len() < MAX_BAD_LINES_LISTED {
            self.bad_lines.push(BadLine { line, reason });
        }
    }
}

/// A decoded line: an event, or one of a type this version does not know.
enum Line {
    Event(crate::event::Event),
    UnknownType(codec::UnknownType),
}

/// One user's line of `leadscore simulate` output.
pub fn user_json(user_id: &str, st: &UserState) -> Value {
    let attributes: Map<String, Value> = st
        .attributes()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_json()))
        .collect();
    json!({
        "user_id": user_id,
        "score": st.score,
        "enrolled": st.enrolled,
        "attributes": attributes,
        "last_change": st.last_change.get().map(format_rfc3339),
        "inactivity_due": st.shown_timer_due().map(format_rfc3339),
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

    fn run_bytes(input: impl BufRead) -> io::Result<Simulation> {
        let wall = crate::timestamp::parse_rfc3339("2026-03-01T00:00:00Z").unwrap_or_default();
        run_guarded(&engine(), input, None, 1, wall, 3_600_000)
    }

    /// An input with no line end (`/dev/zero`, a binary file) stops the run with an error
    /// naming the line: it was read into one line until the memory ran out.
    #[test]
    fn an_endless_line_is_an_error_not_a_read_that_fills_the_memory() {
        let endless = io::BufReader::new(io::repeat(0));
        let Err(e) = run_bytes(endless) else {
            panic!("an endless line was read as events");
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            e.to_string(),
            "line 1: no line end within 67108864 bytes; the input is one JSON event per line \
             (is it the right file?)"
        );
        // After good lines too, naming the line.
        let good = line("u1", &at(0), r#""type":"email_added","value":"a@x.io""#);
        let input = io::Cursor::new(format!("{good}\n")).chain(io::repeat(b'x'));
        let Err(e) = run_bytes(io::BufReader::new(input)) else {
            panic!("an endless second line was read as an event");
        };
        assert!(e.to_string().starts_with("line 2: no line end"), "{e}");
    }

    /// A line too long for an event but with an end is a bad line, as an oversized record is
    /// for the scorer; so is one that is not UTF-8. CRLF line ends read as LF ones.
    #[test]
    fn long_and_binary_lines_are_bad_lines_and_the_run_goes_on() {
        let email = line("u1", &at(0), r#""type":"email_added","value":"a@x.io""#);
        let session = line("u1", &at(1), r#""type":"session_start""#);
        let long = format!(r#"{{"user_id":"u2","pad":"{}"}}"#, "p".repeat(100_000));
        let mut input = format!("{email}\r\n{long}\n").into_bytes();
        input.extend_from_slice(b"{\"user_id\":\"\xff\"}\n");
        input.extend_from_slice(session.as_bytes());
        let sim = match run_bytes(input.as_slice()) {
            Ok(sim) => sim,
            Err(e) => panic!("{e}"),
        };
        let bad: Vec<usize> = sim.bad_lines.iter().map(|b| b.line).collect();
        assert_eq!(bad, [2, 3], "{:?}", sim.bad_lines);
        assert_eq!(sim.bad_line_count, 2);
        // The email (after a CRLF line end) enrolled u1 and the session after the bad lines
        // scored.
        let u1 = &sim.users["u1"];
        assert_eq!((u1.enrolled, u1.score), (true, 1));
    }

    /// A line longer than [`MAX_LINE_BYTES`] with an end (within
    /// [`MAX_SKIPPED_LINE_BYTES`]) is a bad line too, read on to its end without being held:
    /// it stopped the run before (SPEC 2: bad input is never fatal). So is one ended by the
    /// end of the input.
    #[test]
    fn a_line_too_long_to_hold_is_a_bad_line_and_the_run_goes_on() {
        let email = line("u1", &at(0), r#""type":"email_added","value":"a@x.io""#);
        let session = line("u1", &at(1), r#""type":"session_start""#);
        let pad = "x".repeat(MAX_LINE_BYTES + MAX_LINE_BYTES / 2);
        let long = format!(r#"{{"user_id":"u2","pad":"{pad}"}}"#);
        let input = format!("{email}\n{long}\n{session}\n{long}");
        // A small buffer: the skipped line spans many reads.
        let sim = match run_bytes(io::BufReader::with_capacity(4096, input.as_bytes())) {
            Ok(sim) => sim,
            Err(e) => panic!("{e}"),
        };
        let bad: Vec<(usize, &str)> = sim
            .bad_lines
            .iter()
            .map(|b| (b.line, b.reason.as_str()))
            .collect();
        let reason = format!(
            "payload is {} bytes, over the {}-byte limit",
            long.len(),
            Limits::default().max_bytes
        );
        assert_eq!(bad, [(2, reason.as_str()), (4, reason.as_str())]);
        let u1 = &sim.users["u1"];
        assert_eq!((u1.enrolled, u1.score), (true, 1));
        assert!(!sim.users.contains_key("u2"));
    }

    /// An attribute that would take its user past the per-user bound is a bad line, as the
    /// scorer dead-letters it: not applied, and the run goes on.
    #[test]
    fn an_attribute_past_the_users_bound_is_a_bad_line() {
        let big = "v".repeat(4000);
        let mut text = String::new();
        for i in 0..18 {
            let rest = format!(r#""type":"attribute_changed","name":"a{i:02}","value":"{big}""#);
            text.push_str(&line("u1", &at(0), &rest));
            text.push('\n');
        }
        let sim = match run_bytes(text.as_bytes()) {
            Ok(sim) => sim,
            Err(e) => panic!("{e}"),
        };
        let bad: Vec<usize> = sim.bad_lines.iter().map(|b| b.line).collect();
        assert_eq!(bad, [17, 18], "{:?}", sim.bad_lines);
        assert!(sim.bad_lines[0].reason.contains("\"a16\""));
        assert_eq!(sim.users["u1"].attributes().len(), 16);
    }

    /// Past [`MAX_BAD_LINES_LISTED`] bad lines are counted, not kept.
    #[test]
    fn bad_lines_past_the_listed_ones_are_only_counted() {
        let input = "not json\n".repeat(MAX_BAD_LINES_LISTED + 500);
        let sim = match run_bytes(input.as_bytes()) {
            Ok(sim) => sim,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(sim.bad_line_count, MAX_BAD_LINES_LISTED + 500);
        assert_eq!(sim.bad_lines.len(), MAX_BAD_LINES_LISTED);
        assert_eq!(
            sim.bad_lines.last().map(|b| b.line),
            Some(MAX_BAD_LINES_LISTED)
        );
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
                st.attributes().len(),
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
            .attributes()
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
