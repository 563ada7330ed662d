//! `leadscore bench --scorer`: the scorer service end to end, on Kafka, in one process.
//!
//! [`crate::bench`] measures the engine alone; this measures what an operator sees: how fast
//! the scorer drains a backlog, how long an event takes to become a score change, how fast a
//! partition's state restores from the changelog, and what the state costs on disk. Absolute
//! rates depend on the machine and the broker, so throughput comes with baselines measured in
//! the same run on the same broker and records: a plain consumer that only reads, and the pipe
//! ([`pipe`]), a consume, produce, commit loop that produces exactly what the scorer produced,
//! at its cadence, with its producer: the scorer's physical limit here. The ratios move only
//! when the scorer does. Both guarantees are measured, at-least-once (the default) and
//! exactly_once.
//!
//! Everything runs in this process on librdkafka's mock cluster ([`DevBroker`]), like
//! `leadscore demo`: no setup, but the broker shares the machine's cores with the scorer and the
//! measuring clients, so the numbers are a floor, not a forecast for a real cluster. The scorer
//! runs with its default settings (batch size and wait included): tuning them for the bench
//! would measure a configuration nobody deploys. One client property differs, to undo a mock
//! artifact rather than to tune: `fetch.wait.max.ms` (see [`MOCK_FETCH_WAIT_MS`]).

use crate::codec::{self, Format};
use crate::config::{Guarantee, Settings};
use crate::dev::broker::DevBroker;
use crate::dev::scratch::ScratchDir;
use crate::event::Event;
use crate::generator::{self, GeneratorConfig};
use crate::ops::admin::Health;
use crate::rules::Rules;
use crate::runtime::changelog::Changelog;
use crate::runtime::concurrent;
use crate::runtime::shutdown::Shutdown;
use crate::scorer::{Scorer, ScorerError};
use crate::state::UserState;
use anyhow::{anyhow, bail, Context, Result};
use clients::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, ToBytes};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What `leadscore bench --scorer` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ScorerBenchOptions {
    /// Generated input events for the throughput run (the latency run adds its own).
    pub events: usize,
    pub users: usize,
    pub seed: u64,
    /// Partitions of every topic (input, changelog, output, dead letters).
    pub partitions: i32,
}

impl Default for ScorerBenchOptions {
    /// 200,000 events over 20,000 users on 3 partitions: the same ten events per user as
    /// `leadscore bench`, few enough that each input partition stays inside the mock broker's
    /// retention (about 5 MiB per partition, see docs/brokers.md) and the whole run takes well
    /// under a minute on two cores.
    fn default() -> Self {
        ScorerBenchOptions {
            events: 200_000,
            users: 20_000,
            seed: 42,
            partitions: 3,
        }
    }
}

/// Events produced while the scorer is caught up, for the latency measurement.
const LATENCY_EVENTS: usize = 5_000;
/// Their rate: moderate, so the latency is the scorer's path and not a backlog's queueing.
const LATENCY_RATE_PER_SEC: f64 = 2_000.0;
/// The scorer's `fetch.wait.max.ms` on the mock, which answers a fetch that finds no data only
/// after all of it, even when data arrives meanwhile (Kafka answers when the data arrives).
/// The measuring readers use it too: reaching the end of a partition is such a fetch.
const MOCK_FETCH_WAIT_MS: &str = "10";
/// How often the scorer group's committed offsets are read.
const COMMIT_POLL: Duration = Duration::from_millis(50);
/// Per Kafka call of the measuring clients.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the benchmark and returns its report: a Markdown table and a line of machine facts.
///
/// Blocking, and it starts its own async runtime (for the broker's forwarder and the scorer's
/// setup): call it from outside any runtime.
pub fn run(opts: &ScorerBenchOptions) -> Result<String> {
    if opts.events == 0 {
        bail!("nothing to measure: --events is 0");
    }
    if opts.partitions < 1 {
        bail!("partitions must be at least 1");
    }
    // The scorer under test records its metrics into the Prometheus recorder, as a deployed
    // one does (`leadscore score` installs it before the scorer starts): their cost counts.
    crate::ops::telemetry::prometheus();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // For the rules file and the state directories.
    let dir = ScratchDir::new("scorer-bench")?;
    let broker = runtime.block_on(DevBroker::start("127.0.0.1:0"))?;
    let result = measure_all(opts, &runtime, &broker, dir.path());
    // Every client of the run is gone by now; the broker goes before the runtime that serves
    // its forwarder.
    drop(broker);
    drop(runtime);
    result
}

/// Everything measured, in the order the steps run.
struct Measured {
    baseline_rate: f64,
    scorer_rate: f64,
    scorer_changes: i64,
    pipe_rate: f64,
    /// Scorer / pipe of the at-least-once pairs run back to back after the first (see
    /// [`EXTRA_PAIRS`]).
    extra_ratios: Vec<f64>,
    /// Records (and their key and value bytes) the pipe replayed per run, at-least-once.
    replayed: (usize, usize),
    eos_scorer_rate: f64,
    eos_pipe_rate: f64,
    eos_replayed: (usize, usize),
    latency_ms: Vec<i64>,
    latency_events: usize,
    restore_records: u64,
    restore_time: Duration,
    changelog_baseline: f64,
    restored_users: usize,
    encoded_mean: f64,
    disk_bytes: u64,
    store_users: u64,
    changelog_dropped: i64,
}

fn measure_all(
    opts: &ScorerBenchOptions,
    runtime: &tokio::runtime::Runtime,
    broker: &DevBroker,
    dir: &Path,
) -> Result<String> {
    let bootstrap = broker.bootstrap_servers();
    let defaults: BTreeMap<String, String> =
        BTreeMap::from([("bootstrap.servers".to_string(), bootstrap.clone())]);
    let settings = bench_settings(opts, broker, dir)?;
    let topics = settings.topics.clone();
    let parts = opts.partitions;
    let n = opts.events;

    // One generation for both runs, so the latency events continue the same users' traffic
    // in event time (the generator sorts by time) instead of starting over.
    let mut events = generator::generate(&GeneratorConfig {
        users: opts.users,
        events: n + LATENCY_EVENTS,
        seed: opts.seed,
        ..GeneratorConfig::default()
    });
    let tail = events.split_off(n);

    // 1. The input.
    let producer = producer(&bootstrap)?;
    produce_input(&producer, &topics.input, &events)?;
    drop(events);

    // 2. Baseline: read everything, nothing else.
    let baseline_rate = baseline(&bootstrap, &topics.input, parts, n)?;

    // 3. Scorer throughput.
    let (mut running, offsets, throughput) =
        scorer_throughput(runtime, &settings, &bootstrap, parts, n)?;

    // 4. Latency: the scorer is caught up; new events arrive at a moderate rate.
    let out_before = high_watermarks(&bootstrap, &topics.output, parts)?;
    let arrivals = Arrivals::watch(&bootstrap, &topics.output, &out_before)?;
    let produced_at = paced(&producer, &topics.input, &tail)?;
    drop(producer);
    offsets.wait_for(
        (n + tail.len()) as i64,
        Duration::from_secs(60),
        &mut running,
    )?;
    let out_after = high_watermarks(&bootstrap, &topics.output, parts)?;
    let latency_ms = arrivals.finish(&out_after, &produced_at)?;
    drop(offsets);

    // 5. Stop the scorer, then restore its changelog into an empty directory.
    running.stop()?;
    let changelog_dropped: i64 = low_watermarks(&bootstrap, &topics.changelog, parts)?
        .iter()
        .sum();
    // What a restore could reach on this broker: the same records, only read.
    let changelog_baseline = plain_read_rate(&bootstrap, &topics.changelog, parts)?;
    let restore = measure_restore(
        &dir.join("restore-state"),
        &topics.changelog,
        parts,
        &defaults,
    )?;

    // 6. The scorer's own local store, now that nothing holds it open.
    let own = Changelog::open(&settings.scorer.state_dir, &topics.changelog, &defaults)?;
    let disk_bytes = own.store().disk_bytes()?;
    let mut store_users = 0u64;
    for p in 0..parts {
        store_users += own.store().partition_stats(p)?.0;
    }
    drop(own);

    // 7. The pipe, replaying what the scorer produced while it scored the input.
    let input_counts = high_watermarks(&bootstrap, &topics.input, parts)?;
    let pipe = |settings: &Settings, produced: &Produced, name: &str| -> Result<(f64, Captured)> {
        let captured = capture(
            &bootstrap,
            &settings.topics.output,
            &settings.topics.changelog,
            produced,
        )?;
        let run = PipeRun {
            settings,
            output: format!("leadscore-bench-{name}-output"),
            changelog: format!("leadscore-bench-{name}-changelog"),
            group: format!("leadscore-bench-{name}"),
            input: input_counts.clone(),
            captured: &captured,
        };
        broker.create_topic(&run.output, parts)?;
        broker.create_topic(&run.changelog, parts)?;
        Ok((pipe_rate(&bootstrap, &run)?, captured))
    };
    let (pipe_rate, captured) = pipe(&settings, &throughput.produced, "pipe")?;
    let replayed = (captured.records(), captured.bytes());
    drop(captured);

    // 7b. More at-least-once pairs, each a fresh scorer (its own group, topics and state) and
    // at once its pipe: on a shared machine the speed drifts by tens of percent over seconds,
    // and the first pair's legs run ten seconds apart (latency and restore in between).
    let mut extra_ratios = Vec::with_capacity(EXTRA_PAIRS);
    for i in 1..=EXTRA_PAIRS {
        let name = format!("alo{i}");
        let again = fresh_settings(&settings, broker, dir, &name, Guarantee::AtLeastOnce)?;
        let (mut running, offsets, run) = scorer_throughput(runtime, &again, &bootstrap, parts, n)?;
        drop(offsets);
        running.stop()?;
        let (rate, captured) = pipe(&again, &run.produced, &format!("pipe-{name}"))?;
        drop(captured);
        extra_ratios.push(run.rate / rate.max(1e-9));
    }

    // 8. exactly_once: a second scorer on the same input, with its own group, topics and state,
    // then its pipe.
    let eos = fresh_settings(&settings, broker, dir, "eos", Guarantee::ExactlyOnce)?;
    let (mut eos_running, eos_offsets, eos_throughput) =
        scorer_throughput(runtime, &eos, &bootstrap, parts, n)?;
    drop(eos_offsets);
    eos_running.stop()?;
    let (eos_pipe_rate, captured) = pipe(&eos, &eos_throughput.produced, "pipe-eos")?;
    let eos_replayed = (captured.records(), captured.bytes());
    drop(captured);

    Ok(report(
        opts,
        &settings,
        &Measured {
            baseline_rate,
            scorer_rate: throughput.rate,
            scorer_changes: throughput.changes,
            pipe_rate,
            extra_ratios,
            replayed,
            eos_scorer_rate: eos_throughput.rate,
            eos_pipe_rate,
            eos_replayed,
            latency_ms,
            latency_events: tail.len(),
            restore_records: restore.records,
            restore_time: restore.time,
            changelog_baseline,
            restored_users: restore.users,
            encoded_mean: restore.encoded_mean,
            disk_bytes,
            store_users,
            changelog_dropped,
        },
    ))
}

/// The scorer's settings for the run: every leadscore topic on `broker` (the mock cannot
/// create them), the seed canvas written into `dir`, state under `dir`.
fn bench_settings(opts: &ScorerBenchOptions, broker: &DevBroker, dir: &Path) -> Result<Settings> {
    let rules_path = dir.join("seed-canvas.toml");
    std::fs::write(&rules_path, Rules::SEED_CANVAS).context("writing the seed canvas")?;
    let mut settings = broker.settings(opts.partitions)?;
    // Without it a caught-up scorer would see new events in 500 ms steps on the mock, and the
    // latency would measure the mock. It changes nothing while data is waiting (the
    // throughput run); the restore below runs with the defaults.
    settings
        .kafka
        .properties
        .insert("fetch.wait.max.ms".into(), MOCK_FETCH_WAIT_MS.into());
    settings.scorer.rules = Some(rules_path);
    settings.scorer.state_dir = dir.join("scorer-state");
    settings.scorer.group_id = "leadscore-bench-scorer".into();
    // Generated traffic lies weeks in the past: the wall clock would decay every score at once
    // and turn the latency run into an inactivity storm.
    settings.scorer.follow_wall_clock = false;
    Ok(settings)
}

/// How many at-least-once scorer / pipe pairs run after the first: `scorer / pipe` is the
/// median of all of them.
const EXTRA_PAIRS: usize = 2;

/// A second scorer's settings: `settings` with `guarantee` and its own group, output and
/// changelog topics (created on `broker`, named with `suffix`) and state directory, so that it
/// starts from nothing on the same input.
fn fresh_settings(
    settings: &Settings,
    broker: &DevBroker,
    dir: &Path,
    suffix: &str,
    guarantee: Guarantee,
) -> Result<Settings> {
    let mut again = settings.clone();
    again.scorer.guarantee = guarantee;
    again.scorer.group_id = format!("{}-{suffix}", settings.scorer.group_id);
    again.scorer.state_dir = dir.join(format!("scorer-state-{suffix}"));
    again.topics.output = format!("{}-{suffix}", settings.topics.output);
    again.topics.changelog = format!("{}-{suffix}", settings.topics.changelog);
    broker.create_topic(&again.topics.output, settings.topics.partitions)?;
    broker.create_topic(&again.topics.changelog, settings.topics.partitions)?;
    Ok(again)
}

/// Produces `events` to `topic` as JSON, keyed by user, and waits until they are all written.
fn produce_input(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    events: &[Event],
) -> Result<()> {
    for e in events {
        let payload = codec::encode_event(Format::Json, e);
        send(
            producer,
            BaseRecord::to(topic).key(&*e.user_id).payload(&payload),
        )?;
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the input")?;
    Ok(())
}

/// The scorer's rate through the whole input, from its first score change to its committing
/// the last input offset.
struct Throughput {
    rate: f64,
    changes: i64,
    /// What it produced meanwhile, for the pipe to replay.
    produced: Produced,
}

/// Starts the scorer on the `n` input events already produced and waits until it has caught
/// up. The scorer keeps running (for the latency run), as do the committed-offsets watch.
fn scorer_throughput(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    bootstrap: &str,
    parts: i32,
    n: usize,
) -> Result<(RunningScorer, CommittedOffsets, Throughput)> {
    let topics = &settings.topics;
    let group = settings.scorer.group_id.clone();
    let out_start = high_watermarks(bootstrap, &topics.output, parts)?;
    let changelog_start = high_watermarks(bootstrap, &topics.changelog, parts)?;
    let first_change = FirstRecord::watch(bootstrap, &topics.output, parts)?;
    let scorer = runtime
        .block_on(Scorer::start(settings.clone(), Health::new()))
        .context("starting the scorer")?;
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let scorer_thread = std::thread::spawn(move || scorer.run(stop));
    let mut running = RunningScorer {
        thread: Some(scorer_thread),
        shutdown,
    };
    let offsets = CommittedOffsets::new(bootstrap, &group, &topics.input, parts)?;
    let deadline = Duration::from_secs(60) + Duration::from_millis(n as u64 / 2);
    offsets.wait_for(n as i64, deadline, &mut running)?;
    let caught_up = now_millis();
    let started = first_change.finish()?;
    let scorer_secs = ((caught_up - started).max(1)) as f64 / 1000.0;
    let out_end = high_watermarks(bootstrap, &topics.output, parts)?;
    let changes: i64 = out_end.iter().zip(&out_start).map(|(h, s)| h - s).sum();
    let produced = Produced {
        output: (out_start, out_end),
        changelog: (
            changelog_start,
            high_watermarks(bootstrap, &topics.changelog, parts)?,
        ),
    };
    let throughput = Throughput {
        rate: n as f64 / scorer_secs,
        changes,
        produced,
    };
    Ok((running, offsets, throughput))
}

/// A restore of the whole changelog into an empty directory, and what it restored.
pub(super) struct Restore {
    pub(super) records: u64,
    pub(super) time: Duration,
    pub(super) users: usize,
    pub(super) encoded_mean: f64,
}

/// Restores every partition of `changelog` into `state_dir` with `properties` (the defaults:
/// the restore as a deployed scorer runs it, whose read to the end of each partition waits out
/// fetch.wait.max.ms, on Kafka too), and decodes every state restored.
pub(super) fn measure_restore(
    state_dir: &Path,
    changelog: &str,
    parts: i32,
    properties: &BTreeMap<String, String>,
) -> Result<Restore> {
    let fresh = Changelog::open(state_dir, changelog, properties)?;
    let restore_started = Instant::now();
    // As a scorer's assignment restores them: RESTORE_PARALLELISM partitions at once.
    let partitions: Vec<i32> = (0..parts).collect();
    let results = concurrent::map(&partitions, concurrent::RESTORE_PARALLELISM, |&p| {
        fresh
            .restore(p)
            .with_context(|| format!("restoring changelog partition {p}"))
    });
    let mut records = 0u64;
    let mut restored = Vec::with_capacity(results.len());
    for r in results {
        let r = r?;
        records += r.records_read;
        restored.push(r.entries);
    }
    let time = restore_started.elapsed();
    drop(fresh);
    let mut encoded_total = 0usize;
    let mut users = 0usize;
    for (user, bytes) in restored.iter().flatten() {
        let state = UserState::decode(bytes)
            .map_err(|e| anyhow!("restored state of {user} does not decode: {e}"))?;
        encoded_total += state.encode().len();
        users += 1;
    }
    Ok(Restore {
        records,
        time,
        users,
        encoded_mean: encoded_total as f64 / users.max(1) as f64,
    })
}

fn report(opts: &ScorerBenchOptions, settings: &Settings, m: &Measured) -> String {
    let n = opts.events;
    let s = &settings.scorer;
    let defaults = format!(
        "scorer defaults, untuned: batch_max_events = {}, batch_max_wait = {} ms, {:?}",
        s.batch_max_events,
        s.batch_max_wait.as_millis(),
        s.guarantee
    );
    let mut ratios = vec![m.scorer_rate / m.pipe_rate.max(1e-9)];
    ratios.extend(&m.extra_ratios);
    let mut lat = m.latency_ms.clone();
    lat.sort_unstable();
    let nearest_rank = |p: usize| {
        lat.get((lat.len().max(1) - 1) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    let restore_rate = m.restore_records as f64 / m.restore_time.as_secs_f64().max(1e-9);
    let per_user = |bytes: u64| bytes as f64 / m.store_users.max(1) as f64;
    let mut restore_note = format!(
        "target >= 500000; a fresh Changelog in an empty directory, all {} partitions, {:.0} ms",
        opts.partitions,
        m.restore_time.as_secs_f64() * 1000.0
    );
    if m.changelog_dropped > 0 {
        let _ = write!(
            restore_note,
            "; the mock's retention had dropped the oldest {} changelog records (it never compacts)",
            m.changelog_dropped
        );
    }
    let rows: Vec<(&str, String, String)> = vec![
        (
            "baseline: plain consumer (records/s)",
            format!("{:.0}", m.baseline_rate),
            format!("BaseConsumer, all partitions assigned from the beginning, timed to the last of the {n} records"),
        ),
        (
            "scorer throughput (events/s)",
            format!("{:.0}", m.scorer_rate),
            format!(
                "from the first score change's arrival at a watcher (group join and restore excluded) until \
                 the group's committed offsets sum to {n} (read every {} ms); {} score changes; {defaults}",
                COMMIT_POLL.as_millis(),
                m.scorer_changes
            ),
        ),
        (
            "scorer / baseline",
            format!("{:.2}", m.scorer_rate / m.baseline_rate.max(1e-9)),
            "target >= 0.60".to_string(),
        ),
        (
            "pipe: consume, produce, commit (records/s)",
            format!("{:.0}", m.pipe_rate),
            format!(
                "no decode, no engine: the scorer's {} output and changelog records ({} key and value bytes) \
                 replayed over the input in its proportion, its batch cadence, its producer \
                 (the runtime's, {}); timed as the scorer; at-least-once",
                m.replayed.0,
                m.replayed.1,
                crate::runtime::kafka::DEFAULT_COMPRESSION
            ),
        ),
        (
            "scorer / pipe",
            format!("{:.2}", median(&ratios)),
            format!(
                "target >= 0.85; at-least-once; the median of {} pairs: the rates above ({:.2}), \
                 then {} more, each a fresh scorer on the input and at once its pipe ({})",
                ratios.len(),
                ratios[0],
                m.extra_ratios.len(),
                m.extra_ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "scorer throughput, exactly_once (events/s)",
            format!("{:.0}", m.eos_scorer_rate),
            "a second scorer on the same input with its own group, topics and state; a transaction per batch".to_string(),
        ),
        (
            "pipe, exactly_once (records/s)",
            format!("{:.0}", m.eos_pipe_rate),
            format!(
                "transactional producer, send_offsets_to_transaction per batch; {} records ({} bytes) replayed",
                m.eos_replayed.0, m.eos_replayed.1
            ),
        ),
        (
            "scorer / pipe, exactly_once",
            format!("{:.2}", m.eos_scorer_rate / m.eos_pipe_rate.max(1e-9)),
            "the same ratio with transactions".to_string(),
        ),
        (
            "latency produce -> score change, p50 (ms)",
            nearest_rank(50).to_string(),
            format!(
                "arrival of the change at a consumer (fetch.wait.max.ms = {MOCK_FETCH_WAIT_MS}) - input \
                 CreateTime; {} events at \
                 {:.0}/s, caught up; scorer fetch.wait.max.ms = {MOCK_FETCH_WAIT_MS} (the mock \
                 holds an empty fetch for all of it, Kafka does not)",
                m.latency_events, LATENCY_RATE_PER_SEC
            ),
        ),
        (
            "latency produce -> score change, p99 (ms)",
            nearest_rank(99).to_string(),
            "nearest rank".to_string(),
        ),
        (
            "latency samples",
            lat.len().to_string(),
            "score changes matched to their input by reason.source_event_id; events without an event_id skipped".to_string(),
        ),
        (
            "restore (changelog records/s)",
            format!("{restore_rate:.0}"),
            restore_note,
        ),
        (
            "baseline: plain consumer on the changelog (records/s)",
            format!("{:.0}", m.changelog_baseline),
            format!(
                "the same records, only read, as in the input baseline; restore / this = {:.2}",
                restore_rate / m.changelog_baseline.max(1e-9)
            ),
        ),
        (
            "changelog records read",
            m.restore_records.to_string(),
            format!("state and checkpoint records; {} users restored", m.restored_users),
        ),
        (
            "state on disk per user (bytes)",
            format!("{:.1}", per_user(m.disk_bytes)),
            format!(
                "LocalStore::disk_bytes() of the scorer's state dir after it stopped ({} bytes), journal included",
                m.disk_bytes
            ),
        ),
        (
            "state encoded per user, mean (bytes)",
            format!("{:.1}", m.encoded_mean),
            "UserState::encode() over the restored entries".to_string(),
        ),
        (
            "users with state",
            m.store_users.to_string(),
            format!("in the scorer's local store, of {} configured", opts.users),
        ),
    ];
    let mut out = String::from("| metric | value | note |\n|---|---|---|\n");
    for (metric, value, note) in rows {
        let _ = writeln!(out, "| {metric} | {value} | {note} |");
    }
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let _ =
        writeln!(
        out,
        "\nmachine: available_parallelism = {cores}; events = {n} (+{} for latency); users = {}; \
         partitions = {}; seed = {}; broker = librdkafka mock cluster (in-process, 1 broker); \
         JSON input; {} build",
        m.latency_events,
        opts.users,
        opts.partitions,
        opts.seed,
        if cfg!(debug_assertions) { "debug" } else { "release" },
    );
    out
}
mod clients;
mod pipe;
use pipe::{capture, pipe_rate, Captured, PipeRun, Produced};
/// The middle value (the mean of the middle two for an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests;
