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
        let event = match decoded {
            Ok(e) => e,
            Err(e) => {
                sim.bad_lines.push(BadLine {
                    line: index + 1,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let p = if partitions == 1 {
            0
        } else {
            partition_for(event.user_id.as_bytes(), partitions)
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
        partition.process(engine, &mut sim.users, &event, origin, &mut sim.changes);
    }
    for (partition, _) in &mut parts {
        if let Some(to) = now.or(partition.clock()) {
            partition.advance(engine, &mut sim.users, to, &mut sim.changes);
        }
        sim.clock = sim.clock.max(partition.clock());
    }
    Ok(sim)
}

/// One user's line of `leadscore simulate` output.
pub fn user_json(user_id: &str, st: &UserState) -> Value {
    let attributes: Map<String, Value> = st
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    json!({
        "user_id": user_id,
        "score": st.score,
        "enrolled": st.enrolled,
        "attributes": attributes,
        "last_change": st.last_change.map(format_rfc3339),
        "inactivity_due": st.timer_due.map(format_rfc3339),
    })
}
