//! `leadscore bench`: how fast one core scores and decodes, and how big user state gets.
//!
//! Everything runs single-threaded on events from [`crate::generator`], so the numbers are per
//! core and reproducible for a seed. Absolute rates depend on the machine, so every rate comes
//! with a ratio against a baseline measured in the same run (`serde_json::Value` parsing of the
//! same payloads, or the engine alone against the whole partition path): a ratio moves only when
//! our code does. Each measurement runs once untimed to warm caches, the allocator and branch
//! predictors, then once timed.

pub mod handoff;
pub mod lookup;
pub mod scale;
pub mod scorer;

use crate::codec::{self, Format, Limits};
use crate::engine::Engine;
use crate::event::{Event, Origin};
use crate::generator::{self, GeneratorConfig};
use crate::partition::Partition;
use crate::rules::{self, Rules};
use crate::runtime::keyed_state::KeyedState;
use crate::state::UserState;
use anyhow::{anyhow, bail, Result};
use leadscore_engine::hash::UserMap;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What `leadscore bench` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// Generated input events, duplicates and late events included.
    pub events: usize,
    pub users: usize,
    /// The rules file to score with; `None` for the seed canvas ([`Rules::SEED_CANVAS`]).
    pub rules: Option<PathBuf>,
    pub seed: u64,
}

impl Default for BenchOptions {
    /// A million events over 100 000 users: ten events per user, enough users that the store
    /// does not fit in the CPU caches, and a run of well under a minute on two cores.
    fn default() -> Self {
        BenchOptions {
            events: 1_000_000,
            users: 100_000,
            rules: None,
            seed: 42,
        }
    }
}

/// The topic name the benchmark's events are said to come from.
const TOPIC: &str = "bench";

/// Runs the benchmark and returns its report: a Markdown table and a line of machine facts.
pub fn run(opts: &BenchOptions) -> Result<String> {
    let (rules, rules_name) = match &opts.rules {
        Some(path) => (
            crate::config::rules_file::load(path).map_err(|e| anyhow!("invalid rules:\n{e}"))?,
            path.display().to_string(),
        ),
        None => (
            rules::parse_str(Rules::SEED_CANVAS, "seed-canvas.toml")
                .map_err(|e| anyhow!("the built-in seed canvas does not load:\n{e}"))?,
            "seed canvas".to_string(),
        ),
    };
    let engine = Engine::new(rules);
    let cfg = GeneratorConfig {
        users: opts.users,
        events: opts.events,
        seed: opts.seed,
        ..GeneratorConfig::default()
    };

    let started = Instant::now();
    let events = generator::generate(&cfg);
    let generate_time = started.elapsed();
    if events.is_empty() {
        bail!("nothing to measure: --events is 0");
    }
    let n = events.len();

    let json: Vec<Vec<u8>> = events
        .iter()
        .map(|e| codec::encode_event(Format::Json, e))
        .collect();
    let proto: Vec<Vec<u8>> = events
        .iter()
        .map(|e| codec::encode_event(Format::Protobuf, e))
        .collect();
    let limits = Limits::default();
    // A decoder that rejects our own output would make its rate meaningless: check first.
    // The protobuf decodes are kept: they are the engine rows' events (below).
    let mut decoded: Vec<Event> = Vec::with_capacity(n);
    for (format, payloads) in [(Format::Json, &json), (Format::Protobuf, &proto)] {
        for (e, p) in events.iter().zip(payloads) {
            match codec::decode_event(format, Some(e.user_id.as_bytes()), p, &limits) {
                Ok(back) if back == *e => {
                    if format == Format::Protobuf {
                        decoded.push(back);
                    }
                }
                Ok(_) => bail!("{format:?} round trip changed event {:?}", e.event_id),
                Err(err) => bail!("{format:?} decode of a generated event failed: {err}"),
            }
        }
    }
    // The engine rows take those events, decoded from their protobuf payloads before the
    // clock starts, one after the other in arrival order, so that each event's strings lie
    // together and in the order they are read, as a stream of decoded records leaves them.
    // The generator lays out each user's events together and then sorts all of them by time,
    // so reading its events in arrival order jumped about the heap: a cache miss per event
    // (hashing the user id, reading the event's strings) that a scorer, which processes each
    // record just after decoding it, does not have. (The decode rows below still read the
    // generator's events' keys, as they always did.)

    // The whole-partition path over the scorer's own store (`KeyedState`: inline keys,
    // changed-flags and the list of changed keys), with what the scorer does around it per
    // record: the input position noted, the event admitted against its user's bounds
    // (`Partition::admit`: an attribute event looks its user up a second time) and, every
    // `scorer.batch_max_events` events, a checkpoint of the store, all inside the clock, the
    // users of the next records loaded ahead as the scorer does (`ScorerPath::process_at`).
    // Run three times: with the checkpoint's bookkeeping alone (each changed key looked up,
    // its flag cleared, its record hashed into the digest), with every changed state encoded
    // too (the changelog's cost), and one record at a time with nothing loaded ahead. Left out: decoding (its own rows), publishing the changes and the
    // records (`bench --scorer` measures the whole service against its pipe), rdkafka and
    // the metrics.
    let batch = crate::config::Settings::default()
        .scorer
        .batch_max_events
        .max(1);
    let keyed_run = |encode: fn(&UserState) -> Vec<u8>, ahead: bool| {
        measure(|| {
            let mut path = ScorerPath::new(TOPIC);
            let mut out = Vec::new();
            let mut changes = 0usize;
            for i in 0..decoded.len() {
                changes += if ahead {
                    path.process_at(&engine, &decoded, i, &mut out)
                } else {
                    path.process(&engine, &decoded[i], &mut out)
                };
                if path.events % batch == 0 {
                    path.checkpoint(encode);
                }
            }
            (path.users, changes)
        })
    };
    let (keyed_time, (keyed, keyed_changes)) = keyed_run(|_| Vec::new(), true);
    let (encoded_time, _) = keyed_run(UserState::encode, true);
    // The same path one record at a time, as the scorer took them until 2026-12-07, with no
    // user loaded ahead: the hints must change nothing.
    let (single_time, (single, single_changes)) = keyed_run(|_| Vec::new(), false);
    if single_changes != keyed_changes
        || single.len() != keyed.len()
        || single.entries().any(|(k, st)| keyed.get(k) != Some(st))
        || single.state_digest() != keyed.state_digest()
    {
        bail!(
            "Partition::process gave other results looking ahead ({keyed_changes} against \
             {single_changes} changes, {} against {} users)",
            keyed.len(),
            single.len()
        );
    }
    drop(single);

    // The same events and admission over a plain `HashMap` store with the scorer's hasher
    // (keys as `String`s, states in the table's buckets), with no checkpoints: the store this
    // figure was measured on until 2026-12-07, kept as the comparison.
    let (partition_time, (store, partition_changes)) = measure(|| {
        let mut partition = Partition::new();
        let mut store: UserMap<UserState> = UserMap::default();
        let mut out = Vec::new();
        let mut changes = 0usize;
        for (i, e) in decoded.iter().enumerate() {
            if partition.admit(&engine, &store, e, i as i64).is_ok() {
                black_box(partition.process(&engine, &mut store, e, origin(i), &mut out));
                changes += out.len();
                out.clear();
            }
        }
        (store, changes)
    });

    // Two stores, one path: the same states and changes, or one of the figures is of
    // something else.
    if keyed_changes != partition_changes
        || keyed.len() != store.len()
        || keyed.entries().any(|(k, st)| store.get(k) != Some(st))
    {
        bail!(
            "Partition::process gave other results over the scorer's store than over a HashMap \
             ({keyed_changes} against {partition_changes} changes, {} against {} users)",
            keyed.len(),
            store.len()
        );
    }
    drop(keyed);

    // The engine alone: states pre-indexed in a Vec, no map lookups, no timer index.
    let (index, users) = index_users(&decoded);
    let (engine_time, (engine_changes, states)) = measure(|| {
        let mut states = vec![UserState::default(); users];
        let mut out = Vec::new();
        let mut clock = i64::MIN;
        let mut changes = 0usize;
        for (i, (e, &u)) in decoded.iter().zip(&index).enumerate() {
            clock = clock.max(e.time);
            black_box(engine.apply(&mut states[u], e, origin(i), clock, &mut out));
            changes += out.len();
            out.clear();
        }
        black_box(&states);
        (changes, states)
    });

    // The memory floor under `Engine::apply`: the same events in the same order, touching only
    // what it reads first (the user's state, its oldest remembered id and first attribute, the
    // event's user and id), each a likely cache miss. What `apply` takes beyond this is work.
    let (floor_time, _) = measure(|| {
        let mut x = 0u64;
        for (e, &u) in decoded.iter().zip(&index) {
            let st = &states[u];
            x = x.wrapping_add(st.score as u64);
            if let Some(s) = st.seen.first() {
                x = x.wrapping_add(s.time() as u64);
            }
            x = x.wrapping_add(st.attributes().iter().next().map_or(0, |(k, _)| k.len()) as u64);
            x = x.wrapping_add(e.user_id.bytes().next().map_or(0, u64::from));
            if let Some(id) = &e.event_id {
                x = x.wrapping_add(id.bytes().next().map_or(0, u64::from));
            }
        }
        black_box(x)
    });
    drop(states);
    drop(decoded);

    let (baseline_time, _) = measure(|| {
        for p in &json {
            let _ = black_box(serde_json::from_slice::<serde_json::Value>(black_box(p)));
        }
    });
    let (json_time, _) = measure(|| decode_all(Format::Json, &events, &json, &limits));
    let (proto_time, _) = measure(|| decode_all(Format::Protobuf, &events, &proto, &limits));

    let mut sizes: Vec<usize> = store.values().map(|st| st.encode().len()).collect();
    sizes.sort_unstable();
    let mean_state = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    let nearest_rank = |p: usize| {
        sizes
            .get((sizes.len().max(1) - 1) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    let heap_per_user =
        store.values().map(UserState::heap_bytes).sum::<usize>() as f64 / store.len().max(1) as f64;
    let mean_len = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;

    let rate = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let rows: Vec<(&str, String, String)> = vec![
        (
            "engine, Partition::process (events/s)",
            format!("{:.0}", rate(keyed_time)),
            format!("whole-partition path on the scorer's store (KeyedState), each event admitted first, the users of the next {} loaded ahead as the scorer does, a checkpoint's bookkeeping every {batch} events (states not encoded); {keyed_changes} score changes incl. inactivity", crate::scorer::LOOKAHEAD),
        ),
        (
            "engine, Partition::process one record at a time (events/s)",
            format!("{:.0}", rate(single_time)),
            "the same with no record's user loaded ahead (the scorer until 2026-12-07; its checkpoints still load their keys ahead)".to_string(),
        ),
        (
            "engine, Partition::process with checkpoints encoded (events/s)",
            format!("{:.0}", rate(encoded_time)),
            "the same, each checkpoint also encoding every changed state (the changelog's records, UserState::encode)".to_string(),
        ),
        (
            "engine, Partition::process, HashMap store (events/s)",
            format!("{:.0}", rate(partition_time)),
            format!("the same path one record at a time over a HashMap<String, UserState> with the scorer's hasher, no checkpoints (this figure's store until 2026-12-07's first session); {partition_changes} score changes"),
        ),
        (
            "engine, Engine::apply (events/s)",
            format!("{:.0}", rate(engine_time)),
            format!("engine only, states in a Vec, no timers; {engine_changes} score changes"),
        ),
        (
            "engine memory floor (events/s)",
            format!("{:.0}", rate(floor_time)),
            "the same events in order, only touching what Engine::apply reads first (the user's state, its oldest remembered id and first attribute, the event's ids): the cache misses alone".to_string(),
        ),
        (
            "Partition::process time / Engine::apply time",
            format!("{:.2}", ratio(keyed_time, engine_time)),
            "cost of the store lookup, clock and timer index (the scorer's store, users loaded ahead)".to_string(),
        ),
        (
            "JSON decode (events/s)",
            format!("{:.0}", rate(json_time)),
            "codec::decode_event with the key, validated".to_string(),
        ),
        (
            "JSON baseline: serde_json::Value (events/s)",
            format!("{:.0}", rate(baseline_time)),
            "serde_json::from_slice::<Value> on the same payloads, no validation".to_string(),
        ),
        (
            "JSON decode time / baseline time",
            format!("{:.2}", ratio(json_time, baseline_time)),
            "below 1: faster than parsing into a Value".to_string(),
        ),
        (
            "protobuf decode (events/s)",
            format!("{:.0}", rate(proto_time)),
            "codec::decode_event with the key, validated".to_string(),
        ),
        (
            "protobuf decode time / JSON baseline time",
            format!("{:.2}", ratio(proto_time, baseline_time)),
            "same events, against the serde_json::Value baseline".to_string(),
        ),
        (
            "state bytes per user, mean",
            format!("{mean_state:.1}"),
            "UserState::encode() after the Partition::process run".to_string(),
        ),
        (
            "state bytes per user, p50",
            nearest_rank(50).to_string(),
            "nearest rank".to_string(),
        ),
        (
            "state bytes per user, p99",
            nearest_rank(99).to_string(),
            "nearest rank".to_string(),
        ),
        (
            "state bytes per user, max",
            sizes.last().copied().unwrap_or(0).to_string(),
            String::new(),
        ),
        (
            "UserState size (bytes)",
            std::mem::size_of::<UserState>().to_string(),
            "size_of::<UserState>(): a map slot's value, heap excluded".to_string(),
        ),
        (
            "state heap bytes per user, mean",
            format!("{heap_per_user:.1}"),
            "UserState::heap_bytes(): capacities, allocator overhead excluded".to_string(),
        ),
        (
            "users with state",
            store.len().to_string(),
            format!("of {} configured", opts.users),
        ),
        (
            "JSON event size, mean (bytes)",
            format!("{:.1}", mean_len(&json)),
            "one input message value".to_string(),
        ),
        (
            "protobuf event size, mean (bytes)",
            format!("{:.1}", mean_len(&proto)),
            "one input message value".to_string(),
        ),
        (
            "generator (events/s)",
            format!("{:.0}", rate(generate_time)),
            "not a product path: how long the input took to make".to_string(),
        ),
    ];

    let mut report = String::from("| metric | value | note |\n|---|---|---|\n");
    for (metric, value, note) in rows {
        let _ = writeln!(report, "| {metric} | {value} | {note} |");
    }
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let _ = writeln!(
        report,
        "\nmachine: available_parallelism = {cores}; events = {n}; users = {}; rules = {rules_name}; \
         seed = {}; {} build; single-threaded, one warm-up pass per measurement",
        opts.users,
        opts.seed,
        if cfg!(debug_assertions) { "debug" } else { "release" },
    );
    Ok(report)
}

/// One input partition driven as the scorer drives it, record by record: the input position
/// noted, the event admitted against its user's bounds (one the scorer would dead-letter is
/// not processed), then `Partition::process` over the scorer's store. `leadscore bench`'s
/// `Partition::process` rows and `bench --scale` both run it.
pub(crate) struct ScorerPath {
    pub(crate) users: KeyedState<UserState>,
    pub(crate) partition: Partition,
    /// Records taken, which are also the next input offset.
    pub(crate) events: usize,
    /// The input topic named in the events' origins.
    topic: &'static str,
}

impl ScorerPath {
    pub(crate) fn new(topic: &'static str) -> ScorerPath {
        ScorerPath {
            users: KeyedState::default(),
            partition: Partition::new(),
            events: 0,
            topic,
        }
    }

    /// Takes the next record's event; returns how many score changes it made (`out` is left
    /// empty).
    pub(crate) fn process(
        &mut self,
        engine: &Engine,
        e: &Event,
        out: &mut Vec<crate::change::ScoreChange>,
    ) -> usize {
        let offset = self.events as i64;
        self.events += 1;
        self.users.processing(offset);
        if self
            .partition
            .admit(engine, &self.users, e, offset)
            .is_err()
        {
            return 0;
        }
        let origin = Origin {
            topic: self.topic,
            partition: 0,
            offset,
        };
        black_box(
            self.partition
                .process(engine, &mut self.users, e, origin, out),
        );
        let changes = out.len();
        out.clear();
        changes
    }

    /// `events[i]` as the scorer takes it: the users of the [`crate::scorer::LOOKAHEAD`]
    /// records after it loaded ahead ([`KeyedState::look_ahead`]), then
    /// [`ScorerPath::process`].
    pub(crate) fn process_at(
        &mut self,
        engine: &Engine,
        events: &[Event],
        i: usize,
        out: &mut Vec<crate::change::ScoreChange>,
    ) -> usize {
        self.users.look_ahead_all(
            events[i + 1..]
                .iter()
                .take(crate::scorer::LOOKAHEAD)
                .map(|e| e.user_id.as_bytes()),
        );
        self.process(engine, &events[i], out)
    }

    /// A checkpoint of the store, its records encoded with `encode` and dropped: the changed
    /// keys looked up, their flags cleared, the digest kept.
    pub(crate) fn checkpoint(&mut self, encode: fn(&UserState) -> Vec<u8>) {
        drop(black_box(self.users.checkpoint(0, Vec::new(), encode)));
    }
}

/// Runs `f` once to warm up, then once timed.
/// Timed runs of each measurement after its warm-up; the fastest is reported. This machine's
/// speed drifts by tens of percent within seconds, and drift only ever adds time: the fastest
/// of a few runs is the steadiest figure of what the code costs.
const TIMED_RUNS: usize = 3;

fn measure<R>(mut f: impl FnMut() -> R) -> (Duration, R) {
    drop(black_box(f()));
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..TIMED_RUNS {
        drop(last.take());
        let started = Instant::now();
        let r = f();
        best = best.min(started.elapsed());
        last = Some(black_box(r));
    }
    (best, last.expect("TIMED_RUNS is at least 1"))
}

fn origin(i: usize) -> Origin<'static> {
    Origin {
        topic: TOPIC,
        partition: 0,
        offset: i as i64,
    }
}

fn decode_all(format: Format, events: &[Event], payloads: &[Vec<u8>], limits: &Limits) {
    for (e, p) in events.iter().zip(payloads) {
        let key = Some(e.user_id.as_bytes());
        let _ = black_box(codec::decode_event(
            format,
            black_box(key),
            black_box(p),
            limits,
        ));
    }
}

/// Each event's user as an index into a dense Vec, and the number of users: built before the
/// engine-only run so its timing holds no map lookup.
fn index_users(events: &[Event]) -> (Vec<usize>, usize) {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let index = events
        .iter()
        .map(|e| {
            let next = ids.len();
            *ids.entry(&*e.user_id).or_insert(next)
        })
        .collect();
    (index, ids.len())
}

/// The numbers of a report, by metric: for the tests that read the table.
#[cfg(test)]
pub fn parse_report(report: &str) -> std::collections::BTreeMap<&str, &str> {
    report
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() == 5 && cells[1] != "metric" && !cells[1].starts_with("---"))
                .then(|| (cells[1], cells[2]))
        })
        .collect()
}

/// Asserts that a report has each of `metrics`, each a positive, finite number.
#[cfg(test)]
pub fn assert_positive(
    values: &std::collections::BTreeMap<&str, &str>,
    metrics: &[&str],
    report: &str,
) {
    for metric in metrics {
        let Some(value) = values.get(metric) else {
            panic!("{metric} missing from\n{report}");
        };
        let v: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("{metric}: {value:?}: {e}"));
        assert!(v > 0.0 && v.is_finite(), "{metric} = {v}\n{report}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: [&str; 22] = [
        "engine, Partition::process (events/s)",
        "engine, Partition::process one record at a time (events/s)",
        "engine, Partition::process with checkpoints encoded (events/s)",
        "engine, Partition::process, HashMap store (events/s)",
        "engine, Engine::apply (events/s)",
        "engine memory floor (events/s)",
        "Partition::process time / Engine::apply time",
        "JSON decode (events/s)",
        "JSON baseline: serde_json::Value (events/s)",
        "JSON decode time / baseline time",
        "protobuf decode (events/s)",
        "protobuf decode time / JSON baseline time",
        "state bytes per user, mean",
        "state bytes per user, p50",
        "state bytes per user, p99",
        "state bytes per user, max",
        "UserState size (bytes)",
        "state heap bytes per user, mean",
        "users with state",
        "JSON event size, mean (bytes)",
        "protobuf event size, mean (bytes)",
        "generator (events/s)",
    ];

    #[test]
    fn small_run_reports_every_metric_with_a_positive_value() -> Result<()> {
        let report = run(&BenchOptions {
            events: 2_000,
            users: 200,
            ..BenchOptions::default()
        })?;
        let values = parse_report(&report);
        assert_positive(&values, &METRICS, &report);
        assert!(report.contains("available_parallelism = "), "{report}");
        assert!(report.contains("events = 2000; users = 200"), "{report}");
        Ok(())
    }

    #[test]
    fn rejects_a_missing_rules_file() {
        let opts = BenchOptions {
            events: 10,
            users: 2,
            rules: Some(PathBuf::from("/nonexistent/rules.toml")),
            seed: 1,
        };
        assert!(run(&opts).is_err());
    }

    /// The full default run, for the numbers in the docs:
    /// `cargo test --release --lib bench::tests::default_run -- --ignored --nocapture`.
    #[test]
    #[ignore = "takes most of a minute; run in release"]
    fn default_run() -> Result<()> {
        println!("{}", run(&BenchOptions::default())?);
        Ok(())
    }
}
