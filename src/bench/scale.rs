//! `leadscore bench --scale`: how the cost of one instance grows with its users.
//!
//! For each user count (10k, 100k, 1M and 5M by default) it builds the state one scorer
//! instance would hold for that many users, as the scorer builds it (`Partition::process` over
//! a [`KeyedState`], checkpointed every `batch_max_events` events), and measures three costs:
//!
//! - **the engine rate**: `Partition::process` events/s over a fixed stretch of further traffic
//!   once the state is built, spread over the whole population, so every event is a lookup in
//!   the full map (the build itself is not timed: each chunk of it touches only its own users);
//! - **resident memory per user**: in a child process (this executable re-run with a hidden
//!   flag) that builds the same state and nothing else, VmRSS after minus VmRSS before, divided
//!   by the users held: allocator overhead and hash table slack included, unlike the encoded
//!   size;
//! - **restore time**: the state written as a changelog through the scorer's checkpoint API on
//!   the embedded broker ([`DevBroker`]), restored into an empty state directory as `bench
//!   --scorer` restores it, beside a bare consumer reading the same changelog.
//!
//! Traffic is generated in chunks of [`CHUNK_USERS`] users, one after the other in event time,
//! so the input is never held whole (5M users are 50M events). docs/scale.md has the method and
//! the figures.

use super::scorer::measure_restore;
use super::ScorerPath;
use crate::codec::{self, Format, Limits};
use crate::config::Settings;
use crate::dev::broker::DevBroker;
use crate::dev::scratch::ScratchDir;
use crate::engine::Engine;
use crate::event::Event;
use crate::generator::{self, GeneratorConfig};
use crate::partition::UserStore;
use crate::partitioner::partition_for;
use crate::rules::{self, Rules};
use crate::runtime::changelog::Changelog;
use crate::runtime::concurrent::RESTORE_PARALLELISM;
use crate::runtime::kafka::{self, ServiceProducer};
use crate::runtime::keyed_state::KeyedState;
use crate::state::UserState;
use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The user counts measured when `--scale-users` is not given.
pub const DEFAULT_USERS: [usize; 4] = [10_000, 100_000, 1_000_000, 5_000_000];
/// Below this the resident figure is a few pages of RSS: noise, not a per-user cost.
pub const MIN_USERS: usize = 1_000;
/// Above this one instance's state (about 0.5 KB per user, held twice while the changelog is
/// written and restored) no longer fits beside everyone else on a shared machine.
pub const MAX_USERS: usize = 10_000_000;
/// How many sizes one run may measure.
pub const MAX_SIZES: usize = 8;
/// Where the CSV goes unless `--csv` says otherwise.
pub const DEFAULT_CSV: &str = "target/bench-scale.csv";
/// Events of the timed stretch per size unless `--events` says otherwise.
pub const DEFAULT_STRETCH: usize = 1_000_000;
/// The stretch is generated and held whole before it is timed.
pub const MAX_STRETCH: usize = 10_000_000;

/// Generated events per user: the same traffic shape as `leadscore bench`.
const EVENTS_PER_USER: usize = 10;
/// Users generated at a time: 500,000 events, about 150 MB of input held at once. The chunks
/// split the generator's four weeks between them, one after the other, so the build covers
/// the same event time, and fires the same inactivity timers per user, at every size (four
/// weeks per chunk would fire every earlier user's weekly timer four times per chunk).
const CHUNK_USERS: usize = 50_000;
/// The event time the timed stretch covers: short, so that the timers of the idle users
/// falling due meanwhile (a week's inactivity window spread over everyone: about 1/168 of the
/// users per hour) stay a small share of its work at every size.
const STRETCH_SPAN: i64 = 3_600_000;
/// What one changelog partition may hold, counting records uncompressed: the mock keeps about
/// 5 MiB per partition (compressed bytes) and silently drops older records, so 4 MiB of
/// uncompressed records leaves a margin whatever the compression does.
const PARTITION_BUDGET: usize = 4 << 20;
/// A record's framing in a v2 record batch beyond its key and value (length, attributes,
/// timestamp and offset deltas, key and value lengths, header count: varints), at most.
const RECORD_OVERHEAD: usize = 16;
/// A bound on the partition count the budget may ask for (5M users need about 350).
const MAX_PARTITIONS: usize = 2_000;
/// The input topic named in the events' origins.
const TOPIC: &str = "bench-scale";
/// The hidden flag that makes `leadscore bench` the resident-memory child.
pub const CHILD_FLAG: &str = "--scale-rss-child";

/// What `leadscore bench --scale` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleOptions {
    pub users: Vec<usize>,
    /// Events of the timed engine stretch, per size.
    pub stretch: usize,
    pub seed: u64,
    pub csv: PathBuf,
}

impl Default for ScaleOptions {
    fn default() -> Self {
        ScaleOptions {
            users: DEFAULT_USERS.to_vec(),
            stretch: DEFAULT_STRETCH,
            seed: 42,
            csv: PathBuf::from(DEFAULT_CSV),
        }
    }
}

/// `--scale-users`: a comma-separated list of user counts, each in
/// `MIN_USERS..=MAX_USERS`, at most [`MAX_SIZES`] of them, measured in the order given.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleUsers(pub Vec<usize>);

/// Parses `--scale-users` (clap names the flag and the value in front of the message).
pub fn parse_users(list: &str) -> Result<ScaleUsers, String> {
    let sizes = list
        .split(',')
        .map(|s| {
            let s = s.trim();
            let n: usize = s.replace('_', "").parse().map_err(|_| {
                format!("{s:?} is not a user count (a whole number, e.g. 2000,5000)")
            })?;
            check_users(n)
        })
        .collect::<Result<Vec<usize>, String>>()?;
    if sizes.len() > MAX_SIZES {
        return Err(format!(
            "{} sizes; at most {MAX_SIZES} per run",
            sizes.len()
        ));
    }
    Ok(ScaleUsers(sizes))
}

/// A user count in range, or why not.
pub fn check_users(n: usize) -> Result<usize, String> {
    if (MIN_USERS..=MAX_USERS).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} users is out of range: each size must be from {MIN_USERS} to {MAX_USERS}"
        ))
    }
}

/// One size's figures: a row of the table and the CSV.
#[derive(Clone, Debug, Default)]
struct Row {
    users: usize,
    /// Events that built the state.
    events: usize,
    engine_rate: f64,
    resident: f64,
    encoded: f64,
    partitions: usize,
    restore: Duration,
    restore_rate: f64,
    bare_rate: f64,
    /// The engine rate of the stretch's batches processed one record at a time, no user
    /// loaded ahead.
    single_rate: f64,
}

/// The CSV columns, in order, as the table's.
const CSV_HEADER: &str = "users,events,engine_events_per_s,resident_bytes_per_user,\
encoded_bytes_per_user,changelog_partitions,restore_s,restore_records_per_s,\
bare_consumer_records_per_s,ratio,low_watermark_max,engine_events_per_s_one_at_a_time";

impl Row {
    fn ratio(&self) -> f64 {
        self.restore_rate / self.bare_rate.max(1e-9)
    }

    /// The figures as the table and the CSV both show them, in column order.
    fn cells(&self) -> [String; 12] {
        [
            self.users.to_string(),
            self.events.to_string(),
            format!("{:.0}", self.engine_rate),
            format!("{:.1}", self.resident),
            format!("{:.1}", self.encoded),
            self.partitions.to_string(),
            format!("{:.3}", self.restore.as_secs_f64()),
            format!("{:.0}", self.restore_rate),
            format!("{:.0}", self.bare_rate),
            format!("{:.3}", self.ratio()),
            // The largest low watermark of the changelog: a row exists only when
            // `check_complete` found every one at 0.
            "0".to_string(),
            format!("{:.0}", self.single_rate),
        ]
    }

    fn table_line(&self) -> String {
        format!("| {} |", self.cells().join(" | "))
    }

    fn csv_line(&self) -> String {
        self.cells().join(",")
    }
}

/// Runs the benchmark, writes the CSV (after each size, so a long run that fails late keeps
/// what it measured) and returns the report: a Markdown table and the run's facts.
///
/// Blocking, with its own async runtime for the broker's forwarder: call it outside any runtime.
pub fn run(opts: &ScaleOptions) -> Result<String> {
    if opts.users.is_empty() {
        bail!("--scale-users: no sizes to measure");
    }
    for &n in &opts.users {
        check_users(n).map_err(|e| anyhow!("--scale-users: {e}"))?;
    }
    if !(1..=MAX_STRETCH).contains(&opts.stretch) {
        bail!(
            "--events (the timed stretch of --scale) must be from 1 to {MAX_STRETCH}, not {}",
            opts.stretch
        );
    }
    let engine = seed_canvas_engine()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut rows = Vec::new();
    for &users in &opts.users {
        let row = measure_size(&engine, &runtime, users, opts)
            .with_context(|| format!("measuring {users} users"))?;
        rows.push(row);
        write_csv(&opts.csv, &rows)?;
    }
    Ok(report(opts, &rows))
}

fn seed_canvas_engine() -> Result<Engine> {
    let rules = rules::parse_str(Rules::SEED_CANVAS, "seed-canvas.toml")
        .map_err(|e| anyhow!("the built-in seed canvas does not load:\n{e}"))?;
    Ok(Engine::new(rules))
}

/// Every figure of one size. The child runs first, while this process holds nothing big; the
/// sizes and the changelog are taken from the built state, the timed stretch runs after them
/// (it grows the states), and the state is dropped before the restore, which holds a copy of
/// its own.
fn measure_size(
    engine: &Engine,
    runtime: &tokio::runtime::Runtime,
    users: usize,
    opts: &ScaleOptions,
) -> Result<Row> {
    let rss = resident_in_child(users, opts.seed)?;
    let mut built = Built::build(engine, users, opts.seed)?;
    let events = built.path.events;
    let held = built.path.users.len().max(1);
    let (mut encoded_total, mut record_bytes) = (0usize, 0usize);
    for (k, st) in built.path.users.entries() {
        let len = st.encode().len();
        encoded_total += len;
        record_bytes += k.len() + len + RECORD_OVERHEAD;
    }
    let partitions = record_bytes
        .div_ceil(PARTITION_BUDGET)
        .clamp(1, MAX_PARTITIONS);
    if record_bytes > PARTITION_BUDGET * MAX_PARTITIONS {
        bail!(
            "{record_bytes} bytes of changelog need more than {MAX_PARTITIONS} partitions of the \
             mock broker: measure fewer users"
        );
    }
    let parts = partitions as i32;

    let dir = ScratchDir::new("scale-bench")?;
    let broker = runtime.block_on(DevBroker::start("127.0.0.1:0"))?;
    let properties =
        BTreeMap::from([("bootstrap.servers".to_string(), broker.bootstrap_servers())]);
    let topic = Settings::default().topics.changelog;
    broker.create_topic(&topic, parts)?;
    write_changelog(
        &built,
        &topic,
        parts,
        &dir.path().join("writer"),
        &properties,
    )?;
    // Last, as it grows the states: the sizes and the changelog are of the build's traffic.
    let (engine_rate, single_rate) = built.stretch(engine, users, opts.stretch, opts.seed)?;
    drop(built);

    let expected = held as i64 + i64::from(parts);
    check_complete(&properties, &topic, parts, expected)?;
    let restore = measure_restore(&dir.path().join("restore"), &topic, parts, &properties)?;
    if restore.users != held || restore.records != expected as u64 {
        bail!(
            "the restore read {} records and {} users; the changelog holds {expected} records \
             of {held} users",
            restore.records,
            restore.users
        );
    }
    let bare_rate = bare_read_rate(&properties, &topic, parts, expected)?;
    drop(broker);
    Ok(Row {
        users,
        events,
        engine_rate,
        single_rate,
        resident: rss.per_user(),
        encoded: encoded_total as f64 / held as f64,
        partitions,
        restore: restore.time,
        restore_rate: restore.records as f64 / restore.time.as_secs_f64().max(1e-9),
        bare_rate,
    })
}

// ---------------------------------------------------------------------------------------------
// The state, built as the scorer builds it
// ---------------------------------------------------------------------------------------------

/// One instance's state: one partition's clock and timers over a [`KeyedState`] of every user,
/// as the scorer's `Owned` holds them, driven record by record as the scorer drives them.
struct Built {
    path: ScorerPath,
    /// The scorer's `batch_max_events`: a checkpoint after each that many events.
    batch: usize,
}

impl Built {
    /// Builds `users` users' state from their traffic, [`CHUNK_USERS`] users at a time.
    fn build(engine: &Engine, users: usize, seed: u64) -> Result<Built> {
        let mut b = Built {
            path: ScorerPath::new(TOPIC),
            batch: Settings::default().scorer.batch_max_events.max(1),
        };
        let mut out = Vec::new();
        let limits = Limits::default();
        let chunks = users.div_ceil(CHUNK_USERS);
        let span = GeneratorConfig::default().span / chunks.max(1) as i64;
        for (c, first) in (0..users).step_by(CHUNK_USERS).enumerate() {
            let n = CHUNK_USERS.min(users - first);
            let chunk = traffic(
                GeneratorConfig {
                    users: n,
                    events: n * EVENTS_PER_USER,
                    seed: chunk_seed(seed, c as u64),
                    start: generator::DEFAULT_START + span * c as i64,
                    span,
                    ..GeneratorConfig::default()
                },
                |local| first + local,
                b.path.events,
            );
            // Held encoded, in two large buffers, and decoded one event at a time as the
            // scorer decodes its input: the generated events are freed all together first, so
            // the state is not built between the small leftovers of half a million events
            // (holding the events whole made the child's figure 1.7 KB per user at 100k users,
            // 1.3 KB without).
            let records = Records::encode(&chunk);
            drop(chunk);
            for (key, payload) in records.iter() {
                let e = codec::decode_event(Format::Protobuf, Some(key), payload, &limits)
                    .map_err(|e| anyhow!("a generated event does not decode: {e}"))?;
                b.process(engine, &e, &mut out);
                if b.path.events % b.batch == 0 {
                    b.checkpoint();
                }
            }
        }
        b.checkpoint();
        Ok(b)
    }

    /// The scorer's path for one event ([`ScorerPath::process`]).
    fn process(&mut self, engine: &Engine, e: &Event, out: &mut Vec<crate::change::ScoreChange>) {
        self.path.process(engine, e, out);
    }

    /// Empties the list of changed keys as a scorer's checkpoint does. The records are
    /// dropped unencoded: only their effect on the held state matters here (the changelog is
    /// written from the finished state, see [`write_changelog`]).
    fn checkpoint(&mut self) {
        self.path.checkpoint(|_| Vec::new());
    }

    /// `Partition::process` events/s over `events` more events of generated traffic whose users
    /// are spread over all `users`, in the [`STRETCH_SPAN`] of event time after the build.
    /// Checkpoints run between batches, outside the clock, so the list of changed keys stays as
    /// small as in the scorer. Every second batch is processed as the scorer processes records
    /// ([`ScorerPath::process_at`], the next records' users loaded ahead), the others one
    /// record at a time with nothing loaded ahead (the scorer until 2026-12-07), each kind
    /// timed apart: returns the two rates, the scorer's first. Alternating batches see the
    /// same state at the same size and the same drift of this machine's speed.
    fn stretch(
        &mut self,
        engine: &Engine,
        users: usize,
        events: usize,
        seed: u64,
    ) -> Result<(f64, f64)> {
        let stretch = traffic(
            GeneratorConfig {
                users: events.div_ceil(EVENTS_PER_USER),
                events,
                seed: chunk_seed(seed, u64::MAX),
                start: self
                    .path
                    .partition
                    .clock()
                    .unwrap_or(generator::DEFAULT_START),
                span: STRETCH_SPAN,
                ..GeneratorConfig::default()
            },
            |local| spread(local, users),
            self.path.events,
        );
        // Decoded from their records in arrival order before the clock starts, as the
        // scorer's decoder hands events over (each with strings of its own, laid out in the
        // order they are read), as `leadscore bench` runs them.
        let records = Records::encode(&stretch);
        drop(stretch);
        let limits = Limits::default();
        let stretch: Vec<Event> = records
            .iter()
            .map(|(key, payload)| {
                codec::decode_event(Format::Protobuf, Some(key), payload, &limits)
                    .map_err(|e| anyhow!("a generated event does not decode: {e}"))
            })
            .collect::<Result<_>>()?;
        drop(records);
        let mut out = Vec::new();
        // [the scorer's path, one record at a time]: events and time.
        let mut timed = [(0usize, Duration::ZERO); 2];
        // Two batches at least, so that each kind has one.
        let size = self.batch.min(stretch.len().div_ceil(2)).max(1);
        for (k, batch) in stretch.chunks(size).enumerate() {
            let kind = k % 2;
            let started = Instant::now();
            if kind == 0 {
                for i in 0..batch.len() {
                    self.path.process_at(engine, batch, i, &mut out);
                }
            } else {
                for e in batch {
                    self.process(engine, e, &mut out);
                }
            }
            timed[kind].0 += batch.len();
            timed[kind].1 += started.elapsed();
            self.checkpoint();
        }
        let rate = |(n, t): (usize, Duration)| n as f64 / t.as_secs_f64().max(1e-9);
        Ok((rate(timed[0]), rate(timed[1])))
    }
}

/// A chunk of input as Kafka would hand it over: keys and protobuf payloads, back to back.
struct Records {
    bytes: Vec<u8>,
    /// Per record: where it starts, its key's length, its payload's length.
    spans: Vec<(usize, usize, usize)>,
}

impl Records {
    fn encode(events: &[Event]) -> Records {
        let mut r = Records {
            bytes: Vec::new(),
            spans: Vec::with_capacity(events.len()),
        };
        for e in events {
            let start = r.bytes.len();
            r.bytes.extend_from_slice(e.user_id.as_bytes());
            let payload = codec::encode_event(Format::Protobuf, e);
            r.bytes.extend_from_slice(&payload);
            r.spans.push((start, e.user_id.len(), payload.len()));
        }
        r
    }

    /// Each record's key and payload.
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|&(start, key, len)| {
            let record = &self.bytes[start..start + key + len];
            record.split_at(key)
        })
    }
}

/// Generated traffic with its users renamed by `user` (from the generator's numbering) and its
/// event ids moved past `first_id`, so that chunks neither share users nor event ids (a shared
/// id would make the second event a duplicate).
fn traffic(cfg: GeneratorConfig, user: impl Fn(usize) -> usize, first_id: usize) -> Vec<Event> {
    let mut events = generator::generate(&cfg);
    for e in &mut events {
        if let Some(n) = number_after(&e.user_id, "user-") {
            e.user_id = generator::user_id(user(n)).into();
        }
        if let Some(i) = e
            .event_id
            .as_deref()
            .and_then(|id| number_after(id, "evt-"))
        {
            e.event_id = Some(format!("evt-{:06}", first_id + i).into());
        }
    }
    events
}

fn number_after(s: &str, prefix: &str) -> Option<usize> {
    s.strip_prefix(prefix)?.parse().ok()
}

/// Each chunk's seed: its own users' personas and traffic.
fn chunk_seed(seed: u64, chunk: u64) -> u64 {
    seed ^ chunk.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A user among `users` for the stretch's user `n`, spread over the whole population
/// (a multiplicative hash: neighbouring numbers land far apart).
fn spread(n: usize, users: usize) -> usize {
    let h = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h ^ (h >> 29)) % users.max(1) as u64) as usize
}

// ---------------------------------------------------------------------------------------------
// Resident memory, in a child process
// ---------------------------------------------------------------------------------------------

/// What the child measured, in KiB of VmRSS.
struct Rss {
    users: usize,
    before_kib: u64,
    after_kib: u64,
}

impl Rss {
    fn per_user(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 * 1024.0 / self.users.max(1) as f64
    }

    fn line(&self) -> String {
        format!(
            "users={} before_kib={} after_kib={}",
            self.users, self.before_kib, self.after_kib
        )
    }

    fn parse(line: &str) -> Option<Rss> {
        let mut fields = BTreeMap::new();
        for f in line.split_whitespace() {
            let (k, v) = f.split_once('=')?;
            fields.insert(k, v.parse::<u64>().ok()?);
        }
        Some(Rss {
            users: usize::try_from(*fields.get("users")?).ok()?,
            before_kib: *fields.get("before_kib")?,
            after_kib: *fields.get("after_kib")?,
        })
    }
}

/// Re-runs this executable as the child ([`child`]) and reads its one line.
///
/// The child's allocator (mimalloc, src/main.rs) commits its arena ahead of use and purges
/// freed pages a second later by default: that would count about 6 MB that no user holds in
/// every reading (it doubled the 10k-user figure). The child commits on demand and purges at
/// once instead; block sizes and layout, which is what a user costs, are the same.
fn resident_in_child(users: usize, seed: u64) -> Result<Rss> {
    let exe = std::env::current_exe().context("cannot find this executable to re-run it")?;
    let out = std::process::Command::new(&exe)
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .env("MIMALLOC_PURGE_DELAY", "0")
        .args([
            "bench",
            CHILD_FLAG,
            &users.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .output()
        .with_context(|| format!("running {} {CHILD_FLAG}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the resident-memory child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    stdout
        .lines()
        .find_map(Rss::parse)
        .ok_or_else(|| anyhow!("the resident-memory child printed no figures: {stdout:?}"))
}

/// The child: builds `users` users' state (the keyed state and the partition's timer index, as
/// the scorer's `Owned` holds them) and nothing else, and prints VmRSS before and after. The
/// input of each chunk is freed, and malloc's free memory returned to the system, before each
/// reading: what remains is what the state holds, allocator overhead and table slack included.
/// (Not split between the two: memory a dropped timer index frees lies between live state
/// allocations, and malloc keeps it, so RSS does not move.)
pub fn child(users: usize, seed: u64) -> Result<String> {
    check_users(users).map_err(|e| anyhow!("{CHILD_FLAG}: {e}"))?;
    let engine = seed_canvas_engine()?;
    release_free_memory();
    let before_kib = vm_rss_kib()?;
    let built = Built::build(&engine, users, seed)?;
    release_free_memory();
    let rss = Rss {
        users: built.path.users.len(),
        before_kib,
        after_kib: vm_rss_kib()?,
    };
    black_box(&built);
    Ok(rss.line())
}

/// VmRSS of this process, from /proc/self/status.
fn vm_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (the resident-memory figure needs Linux)")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS line in /proc/self/status"))
}

/// Hands free memory back to the system, so VmRSS counts live allocations (and their
/// fragmentation), not the freed input of the last chunk: mimalloc's, the binary's allocator
/// (src/main.rs), which purges free pages only after a delay unless forced, and glibc's
/// malloc's, which librdkafka and a test binary on the system allocator use.
fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers and may be called at any time from any thread;
    // with nothing allocated through mimalloc it has nothing to do.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: glibc's malloc_trim only releases free heap memory; any pad value is valid.
        unsafe {
            malloc_trim(0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The changelog: written as the scorer writes it, restored, and read bare
// ---------------------------------------------------------------------------------------------

/// Writes the built state to `topic` as a scorer owning its `parts` partitions would checkpoint
/// it: each partition's users in a [`KeyedState`] of their own, its checkpoint (changed keys,
/// then the checkpoint record with the partition clock) staged through [`Changelog::stage`] by
/// the services' producer, and flushed. What `Changelog::commit` does for at-least-once, less
/// the group offsets and the local store, which a restore does not read.
fn write_changelog(
    built: &Built,
    topic: &str,
    parts: i32,
    dir: &Path,
    properties: &BTreeMap<String, String>,
) -> Result<()> {
    let changelog = Changelog::open(dir, topic, properties)?;
    let producer = ServiceProducer::new(properties, None).context("creating the producer")?;
    let mut keys: Vec<Vec<&str>> = vec![Vec::new(); parts as usize];
    for (k, _) in built.path.users.entries() {
        keys[partition_for(k.as_bytes(), parts) as usize].push(k);
    }
    // The scorer's checkpoint metadata: its partition clock, 8 bytes big-endian.
    let clock = built
        .path
        .partition
        .clock()
        .map(|c| c.to_be_bytes().to_vec())
        .unwrap_or_default();
    for (p, keys) in (0..parts).zip(&keys) {
        let mut state = KeyedState::<UserState>::default();
        state.processing(built.path.events as i64 - 1);
        for k in keys {
            if let Some(st) = built.path.users.get(k) {
                UserStore::update(&mut state, k, |s| *s = st.clone());
            }
        }
        let Some(cp) = state.checkpoint(p, clock.clone(), UserState::encode) else {
            continue;
        };
        let changes: Vec<(&str, Option<&[u8]>)> = cp
            .records
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        changelog.stage(&producer, p, &changes, &cp.checkpoint)?;
        // One partition at a time: the producer's queue never holds the whole changelog.
        producer.flush()?;
    }
    Ok(())
}

/// Checks that the changelog holds all `expected` records: every low watermark 0 (the mock
/// dropped nothing) and the high watermarks summing to `expected`.
fn check_complete(
    properties: &BTreeMap<String, String>,
    topic: &str,
    parts: i32,
    expected: i64,
) -> Result<()> {
    let c = kafka::reader(properties).context("creating a reader")?;
    let mut high_sum = 0i64;
    for p in 0..parts {
        let (low, high) = c
            .fetch_watermarks(topic, p, kafka::SETUP_TIMEOUT)
            .with_context(|| format!("watermarks of {topic} [{p}]"))?;
        if low != 0 {
            bail!(
                "the mock broker dropped the first {low} records of {topic} [{p}] (it keeps about \
                 5 MiB per partition): the partition budget is too large"
            );
        }
        high_sum += high;
    }
    if high_sum != expected {
        bail!("{topic} holds {high_sum} records, {expected} were written");
    }
    Ok(())
}

/// A consumer with the restore's own client settings (`kafka::reader`), every partition of
/// `topic` assigned from the beginning at once, counting records and nothing else: what the
/// broker and librdkafka allow. Timed from the assignment to the last of `expected` records.
fn bare_read_rate(
    properties: &BTreeMap<String, String>,
    topic: &str,
    parts: i32,
    expected: i64,
) -> Result<f64> {
    let c = kafka::reader(properties).context("creating the bare consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    // A minute, plus a second per 10,000 records: ten times slower than the mock ever was.
    let limit = Duration::from_secs(60 + expected as u64 / 10_000);
    let started = Instant::now();
    c.assign(&tpl).context("assigning the changelog")?;
    let mut records = 0i64;
    while records < expected {
        if started.elapsed() > limit {
            bail!("the bare consumer read {records} of {expected} records in {limit:?}");
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                black_box(m.payload_len());
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
        }
    }
    Ok(records as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--csv: cannot create {}", dir.display()))?;
    }
    let mut csv = format!("{CSV_HEADER}\n");
    for r in rows {
        csv.push_str(&r.csv_line());
        csv.push('\n');
    }
    std::fs::write(path, csv).with_context(|| format!("--csv: cannot write {}", path.display()))
}

fn report(opts: &ScaleOptions, rows: &[Row]) -> String {
    let mut out = String::from(
        "| users | events | engine events/s | resident B/user | encoded B/user | changelog \
         partitions | restore s | restore records/s | bare consumer records/s | ratio | low \
         watermarks | engine events/s one at a time |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&r.table_line());
        out.push('\n');
    }
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let _ = write!(
        out,
        "\nevents: the generated traffic that built the state ({EVENTS_PER_USER} per user, \
         {CHUNK_USERS} users at a time); engine events/s: Partition::process over a KeyedState, \
         as the scorer runs it (the next records' users loaded ahead), timed over every other \
         batch of {} further events spread over all users, checkpoints between batches \
         untimed; one at a time: the other batches, nothing loaded ahead (the scorer until \
         2026-12-07); resident: VmRSS of a child holding only the state and its timer index, after \
         minus before, per user held; restore: a fresh Changelog restoring every partition into \
         an empty directory, {RESTORE_PARALLELISM} at once as an assignment does; ratio: \
         restore records/s / bare consumer records/s; low watermarks: the largest of the changelog's (0: the mock dropped nothing)\n\
         machine: available_parallelism = {cores}; seed = {}; broker = librdkafka mock cluster \
         (in-process); csv = {}; {} build\n",
        opts.stretch,
        opts.seed,
        opts.csv.display(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    out
}

#[cfg(test)]
mod tests;
