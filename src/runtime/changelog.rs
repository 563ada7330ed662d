//! Changelog-backed keyed state, shared by the scorer and the handoff.
//!
//! A service keeps, per owned partition, a map of key to state bytes in memory. It is durable in
//! two places: a compacted changelog topic co-partitioned with the input (the source of truth)
//! and a [`LocalStore`] copy (so a restart reads only the changelog's tail).
//!
//! A checkpoint writes the changed keys to changelog partition `p`, then one *checkpoint record*
//! (key [`CHECKPOINT_KEY`]) holding the input position and the service's own metadata. Records
//! of one partition stay in order (idempotent producer), so a delivered checkpoint vouches for
//! every state record before it. A restore applies state records only once a checkpoint after
//! them is read: records of a checkpoint that never completed (a crash between the two) are
//! dropped and recomputed from the input. See `docs/crash-safety.md`.
//!
//! A checkpoint record also carries the partition's key count and an order-independent digest
//! of its (key, value) pairs ([`StateDigest`]), kept up to date per changed key by
//! [`KeyedState`](crate::runtime::keyed_state::KeyedState). A warm restart trusts its local copy only if
//! the copy plus the changelog's tail matches the last checkpoint read; otherwise it restores
//! the partition wholly from the changelog, with a warning and
//! `leadscore_store_verify_failures_total{reason}` (docs/crash-safety.md, "Verifying the local
//! store").

use crate::ops::telemetry::{self as t, PartitionGauges};
use crate::runtime::kafka::{self, ProduceError, Record, ServiceProducer};
use crate::runtime::store::{LocalStore, PartitionMeta, StoreError};
use crate::runtime::sync::lock_unpoisoned;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

mod checkpoint;
mod local_writer;

pub use checkpoint::{entry_hash, Checkpoint, StateDigest, CHECKPOINT_KEY};
use local_writer::LocalWriter;

/// Why a warm restart did not trust its local copy (the `reason` label of
/// [`t::STORE_VERIFY_FAILURES`]). A bounded set: see [`VerifyFailure::REASONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyFailure {
    /// The local copy could not be read (an engine error, or its checkpoint does not decode).
    Unreadable,
    /// Keys without the partition's meta: the meta was lost.
    NoMeta,
    /// The changelog has no record at or after the local copy's checkpoint (the topic was
    /// recreated or truncated): the restore refuses when the copy holds keys
    /// ([`ChangelogError::Ahead`]).
    Ahead,
    /// No checkpoint record at or after the local copy's changelog offset.
    NoCheckpoint,
    /// The last checkpoint predates digests (version 1): nothing to verify against.
    Unverifiable,
    /// The number of keys differs from the last checkpoint's.
    KeyCount,
    /// Same number of keys, different digest: some value or key differs.
    Digest,
}

impl VerifyFailure {
    /// Every reason label, for exporting the counter at 0 from start-up.
    pub const REASONS: [&'static str; 7] = [
        "unreadable",
        "no_meta",
        "ahead",
        "no_checkpoint",
        "unverifiable",
        "key_count",
        "digest",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerifyFailure::Unreadable => "unreadable",
            VerifyFailure::NoMeta => "no_meta",
            VerifyFailure::Ahead => "ahead",
            VerifyFailure::NoCheckpoint => "no_checkpoint",
            VerifyFailure::Unverifiable => "unverifiable",
            VerifyFailure::KeyCount => "key_count",
            VerifyFailure::Digest => "digest",
        }
    }
}

#[derive(Debug, Error)]
pub enum ChangelogError {
    #[error("changelog {topic:?} partition {partition}: {source}")]
    Kafka {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the state directory {path} is in use by another process (another instance with the \
         same state_dir, or one still stopping): each instance needs a directory of its own"
    )]
    StateDirInUse { path: PathBuf },
    #[error("changelog produce: {0}")]
    Produce(#[from] ProduceError),
    #[error("kafka transaction: {0}")]
    Transaction(KafkaError),
    #[error(
        "local state store: a checkpoint's write failed, so the store is no longer written: {0}"
    )]
    LocalWrite(String),
    #[error("a checkpoint record is damaged or of an unknown version")]
    BadCheckpoint,
    #[error("changelog {topic:?} partition {partition}: a key is not UTF-8")]
    BadKey { topic: String, partition: i32 },
    #[error(
        "changelog {topic:?} partition {partition} has no record at or after offset {offset}, \
         where the local copy in {dir} ({keys} keys) was checkpointed: the changelog was deleted \
         and created again, truncated, or is another cluster's. Starting from it would drop that \
         state and go on from the group's committed input offsets, rescoring every user from \
         nothing. Point the service at the changelog it wrote; or, if this changelog is the right \
         one (the copy is another deployment's, or a development broker was reset), start over \
         with `leadscore reset`, which clears the local copies and re-reads the input from its \
         beginning"
    )]
    Ahead {
        topic: String,
        partition: i32,
        offset: i64,
        dir: PathBuf,
        keys: usize,
    },
}

/// One more local copy not trusted, by reason ([`t::STORE_VERIFY_FAILURES`]).
fn count_failure(reason: VerifyFailure) {
    metrics::counter!(t::STORE_VERIFY_FAILURES, "reason" => reason.as_str()).increment(1);
}

/// A partition's state after a restore.
#[derive(Debug, Default)]
pub struct Restored {
    pub entries: HashMap<String, Vec<u8>>,
    /// The last complete checkpoint; `None` for a partition never checkpointed.
    pub checkpoint: Option<Checkpoint>,
    /// Changelog records read (the local store supplied the rest).
    pub records_read: u64,
    /// Whether the local store was used (a warm restart): it was, and it matched the last
    /// checkpoint's [`StateDigest`].
    pub warm: bool,
    pub duration: Duration,
    /// Keys of changelog records after the last checkpoint (one that never completed), which
    /// the restore dropped. They are still in the changelog, where a later restore would apply
    /// them with the next checkpoint: the next checkpoint must write these keys again (their
    /// restored value, or a tombstone for a key the state lacks) so that the changelog's last
    /// record of every key is the state's.
    pub unconfirmed: Vec<String>,
}

/// A partition's local copy, as a warm restart starts from it.
struct LocalCopy {
    entries: HashMap<String, Vec<u8>>,
    /// Of `entries`, computed while loading them.
    state: StateDigest,
    /// The offset of the checkpoint record the copy reflects.
    changelog_offset: i64,
    checkpoint: Checkpoint,
}

/// A partition's state as a read of the changelog to its end leaves it.
#[derive(Default)]
struct Replay {
    entries: HashMap<String, Vec<u8>>,
    /// Of `entries`, kept up to date record by record.
    state: StateDigest,
    /// The last complete checkpoint (read, or the local copy's).
    checkpoint: Option<Checkpoint>,
    /// The offset of the last checkpoint record read; `None` if none was.
    checkpoint_offset: Option<i64>,
    /// The changes applied, in order, for the local store; only kept when `keep_applied`.
    applied: Vec<(String, Option<Vec<u8>>)>,
    /// Whether to keep `applied`: a warm restore writes the tail it applied on top of the
    /// local copy; a cold one writes the final `entries` into a cleared partition instead, so
    /// it keeps no second copy of every record read.
    keep_applied: bool,
    /// Keys of the records after the last checkpoint, dropped.
    unconfirmed: Vec<String>,
    /// Changelog records read, over every pass of this restore.
    records_read: u64,
}

impl Replay {
    /// Applies one change, keeping the digest up to date.
    fn apply(&mut self, key: String, value: Option<Vec<u8>>) {
        let new = value.as_deref().map(|v| entry_hash(&key, v));
        let old = self.entries.get(&key).map(|o| entry_hash(&key, o));
        if self.keep_applied {
            self.applied.push((key.clone(), value.clone()));
        }
        match value {
            Some(v) => self.entries.insert(key, v),
            None => self.entries.remove(&key),
        };
        match (old, new) {
            (None, Some(n)) => self.state.insert(n),
            (Some(o), Some(n)) => self.state.replace(o, n),
            (Some(o), None) => self.state.remove(o),
            (None, None) => {}
        }
    }

    /// Whether the state matches the last checkpoint read; what differs if not.
    fn verify(&self) -> Result<(), (VerifyFailure, String)> {
        let (Some(offset), Some(cp)) = (self.checkpoint_offset, &self.checkpoint) else {
            return Err((
                VerifyFailure::NoCheckpoint,
                "no checkpoint record at or after the local copy's changelog offset".to_owned(),
            ));
        };
        let Some(want) = cp.state else {
            return Err((
                VerifyFailure::Unverifiable,
                format!("the checkpoint at changelog offset {offset} predates state digests"),
            ));
        };
        let got = self.state;
        if got.keys != want.keys {
            Err((
                VerifyFailure::KeyCount,
                format!(
                    "{} keys, the checkpoint at changelog offset {offset} says {}",
                    got.keys, want.keys
                ),
            ))
        } else if got.sum != want.sum {
            Err((
                VerifyFailure::Digest,
                format!(
                    "digest {:016x}, the checkpoint at changelog offset {offset} says {:016x}",
                    got.sum, want.sum
                ),
            ))
        } else {
            Ok(())
        }
    }
}

/// How a restore's warm start went: the verified local copy plus the changelog tail, or no
/// usable copy (after reading `records_read` changelog records trying to verify one).
enum WarmStart {
    Verified { replay: Replay, local_offset: i64 },
    Cold { records_read: u64 },
}

/// One partition's share of a checkpoint: its changed keys (`None` deletes) and its record.
#[derive(Debug, Clone)]
pub struct PartitionCheckpoint {
    pub partition: i32,
    pub records: Vec<(String, Option<Vec<u8>>)>,
    pub checkpoint: Checkpoint,
}

impl PartitionCheckpoint {
    fn refs(&self) -> Vec<(&str, Option<&[u8]>)> {
        self.records
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect()
    }
}

/// How many at-least-once checkpoints a service lets be under way at once: a batch's writes
/// (its outputs' deliveries, then its changelog records') took longer than the next batch on
/// the mock broker, so with one the scorer waited for the last a quarter of its time.
pub const CHECKPOINTS_IN_FLIGHT: usize = 2;

/// An at-least-once checkpoint under way ([`Changelog::begin_commit`]).
pub struct PendingCommit {
    step: CommitStep,
    input_topic: String,
    parts: Vec<PartitionCheckpoint>,
    offsets: Vec<(i32, i64)>,
    started: Instant,
    /// When the checkpoint's batch was first polled, if the service times that.
    polled: Option<Instant>,
}

/// What a pending checkpoint waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommitStep {
    /// The outputs sent up to this epoch's seal: then the changelog records go out.
    Outputs(kafka::Epoch),
    /// The changelog records (sent in this epoch): then the offsets and the local store.
    Changelog(kafka::Epoch),
    Done,
}

/// Carries checkpoints under way forward, oldest first, each only once the one before it is
/// done (so their changelog records follow each other in order): without waiting, except that
/// it waits for the oldest until at most `keep` are left. `advance(checkpoint, wait)` takes one
/// as far as it can and says whether it is done. The scorer's and the pipe baseline's.
pub fn drive_in_order<T, E>(
    in_flight: &mut VecDeque<T>,
    keep: usize,
    mut advance: impl FnMut(&mut T, bool) -> Result<bool, E>,
) -> Result<(), E> {
    loop {
        let wait = in_flight.len() > keep;
        let Some(oldest) = in_flight.front_mut() else {
            return Ok(());
        };
        if !advance(oldest, wait)? {
            return Ok(());
        }
        in_flight.pop_front();
    }
}

/// A service's changelog topic and local store.
pub struct Changelog {
    topic: String,
    dir: PathBuf,
    store: Arc<LocalStore>,
    /// Checkpoints' writes to `store`, off the service's thread.
    writer: LocalWriter,
    properties: BTreeMap<String, String>,
    /// When the store's disk use was last measured (it walks the directory).
    disk_measured: Mutex<Option<Instant>>,
    /// The state directory's lock ([`lock_state_dir`]), held while this is open.
    _lock: std::fs::File,
}

/// The lock file in a state directory.
const LOCK_FILE: &str = "LOCK";

/// Locks state directory `dir` for this process (an exclusive `flock` on `dir/LOCK`, released
/// when the file is closed, also when the process dies): fjall takes no lock, and two processes
/// writing one store (two instances started with the same `state_dir`, or a restart while the
/// old process still stops) would damage it (an outside review).
pub fn lock_state_dir(dir: &Path) -> Result<std::fs::File, ChangelogError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ChangelogError::StateDir {
            path: path.clone(),
            source,
        })?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        extern "C" {
            fn flock(fd: i32, operation: i32) -> i32;
        }
        // LOCK_EX | LOCK_NB (the same values on Linux and the BSDs).
        const LOCK_EX_NB: i32 = 2 | 4;
        // SAFETY: `flock` takes a descriptor this `File` owns, open for the call, and an
        // integer; it touches no memory of ours.
        if unsafe { flock(file.as_raw_fd(), LOCK_EX_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                ChangelogError::StateDirInUse {
                    path: dir.to_path_buf(),
                }
            } else {
                ChangelogError::StateDir { path, source: e }
            });
        }
    }
    Ok(file)
}

/// How often [`Changelog::update_store_gauges`] measures the store's disk use.
const DISK_MEASURE_INTERVAL: Duration = Duration::from_secs(5);

/// Restore metrics of one partition while it restores: counts it in the restoring gauge and
/// drops its remaining-records series when the restore ends, however it ends.
struct RestoreGauges {
    partition: i32,
    reported: u64,
}

impl RestoreGauges {
    fn start(partition: i32) -> RestoreGauges {
        metrics::gauge!(t::RESTORING_PARTITIONS).increment(1.0);
        RestoreGauges {
            partition,
            reported: 0,
        }
    }

    /// `read` records so far; `remaining` to the high watermark seen at the start.
    fn progress(&mut self, read: u64, remaining: i64) {
        metrics::counter!(t::RESTORE_RECORDS).increment(read - self.reported);
        self.reported = read;
        PartitionGauges::global().set(
            t::RESTORE_REMAINING,
            self.partition,
            remaining.max(0) as f64,
        );
    }
}

impl Drop for RestoreGauges {
    fn drop(&mut self) {
        metrics::gauge!(t::RESTORING_PARTITIONS).decrement(1.0);
        PartitionGauges::global().remove(t::RESTORE_REMAINING, self.partition);
    }
}

impl Changelog {
    /// Opens the local store under `dir`; a damaged one is deleted (the changelog restores it).
    pub fn open(
        dir: &Path,
        topic: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Changelog, ChangelogError> {
        std::fs::create_dir_all(dir).map_err(|source| ChangelogError::StateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = lock_state_dir(dir)?;
        let store = match LocalStore::open(dir) {
            Ok(s) => s,
            Err(e) if e.is_damaged() => {
                tracing::warn!(dir = %dir.display(), error = %e, "local store damaged; rebuilding it from the changelog");
                metrics::counter!(t::STORE_VERIFY_FAILURES, "reason" => VerifyFailure::Unreadable.as_str()).increment(1);
                LocalStore::destroy(dir)?;
                LocalStore::open(dir)?
            }
            Err(e) => return Err(e.into()),
        };
        let store = Arc::new(store);
        Ok(Changelog {
            topic: topic.to_string(),
            dir: dir.to_path_buf(),
            writer: LocalWriter::start(store.clone())?,
            store,
            properties: properties.clone(),
            disk_measured: Mutex::new(None),
            _lock: lock,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The local store, once every checkpoint queued for it is written (a failed write is
    /// logged here; the next checkpoint or restore reports it).
    pub fn store(&self) -> &LocalStore {
        if let Err(e) = self.writer.drain() {
            tracing::warn!(error = %e, "reading a local store that lags the changelog");
        }
        &self.store
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the store gauges: `keys` held in memory across owned partitions, and (at most every
    /// few seconds) the bytes the local store takes on disk.
    pub fn update_store_gauges(&self, keys: usize) {
        metrics::gauge!(t::STORE_USERS).set(keys as f64);
        let due = {
            let mut last = lock_unpoisoned(&self.disk_measured);
            let due = last.is_none_or(|at| at.elapsed() >= DISK_MEASURE_INTERVAL);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            match self.store.disk_bytes() {
                Ok(bytes) => metrics::gauge!(t::STORE_BYTES).set(bytes as f64),
                Err(e) => tracing::debug!(error = %e, "cannot measure the local store"),
            }
        }
    }

    /// Restores partition `p`: the local copy, then the changelog from where it left off.
    /// Progress shows in the restore metrics (records read, records remaining per partition,
    /// partitions restoring, duration).
    pub fn restore(&self, p: i32) -> Result<Restored, ChangelogError> {
        // The local copy as the last checkpoints left it, and no queued write landing on a
        // partition this restore clears or rewrites.
        self.writer.drain()?;
        let mut gauges = RestoreGauges::start(p);
        let restored = self.restore_partition(p, &mut gauges)?;
        metrics::histogram!(t::RESTORE_SECONDS).record(restored.duration.as_secs_f64());
        Ok(restored)
    }

    /// The local copy is trusted only once verified: it is read (its [`StateDigest`] computed
    /// on the way), then the changelog from the copy's own checkpoint record (not the record
    /// after it) to the end, applying the tail. The last checkpoint read then describes exactly
    /// the state the copy plus the tail should be, whether it is the copy's own record or a
    /// later one (compaction may have removed the copy's, never the latest). On any mismatch
    /// the partition is restored wholly from the changelog.
    fn restore_partition(
        &self,
        p: i32,
        gauges: &mut RestoreGauges,
    ) -> Result<Restored, ChangelogError> {
        let started = Instant::now();
        let kerr = |source| ChangelogError::Kafka {
            topic: self.topic.clone(),
            partition: p,
            source,
        };
        let reader = kafka::reader(&self.properties).map_err(kerr)?;
        let watermarks = reader
            .fetch_watermarks(&self.topic, p, kafka::SETUP_TIMEOUT)
            .map_err(kerr)?;

        let (replay, warm_from) = match self.warm_replay(&reader, p, watermarks, gauges)? {
            WarmStart::Verified {
                replay,
                local_offset,
            } => (replay, Some(local_offset)),
            WarmStart::Cold { records_read } => {
                let replay = self.cold_replay(&reader, p, watermarks, records_read, gauges)?;
                (replay, None)
            }
        };
        self.save_local_copy(p, &replay, warm_from)?;
        Ok(Restored {
            entries: replay.entries,
            checkpoint: replay.checkpoint,
            records_read: replay.records_read,
            warm: warm_from.is_some(),
            duration: started.elapsed(),
            unconfirmed: replay.unconfirmed,
        })
    }

    /// The local copy (loaded and checked by [`Changelog::local_copy`]) plus the changelog
    /// tail from the copy's own checkpoint record, kept only when it verifies against the last
    /// checkpoint read; otherwise the copy is distrusted and cleared.
    fn warm_replay<C: ConsumerContext>(
        &self,
        reader: &BaseConsumer<C>,
        p: i32,
        (low, high): (i64, i64),
        gauges: &mut RestoreGauges,
    ) -> Result<WarmStart, ChangelogError> {
        let Some(local) = self.local_copy(p)? else {
            return Ok(WarmStart::Cold { records_read: 0 });
        };
        let local_offset = local.changelog_offset;
        let keys = local.entries.len();
        let start = Replay {
            entries: local.entries,
            state: local.state,
            checkpoint: Some(local.checkpoint),
            keep_applied: true,
            ..Replay::default()
        };
        let from = local_offset.max(low);
        let replay = self.replay(reader, p, (low, high), from, start, gauges)?;
        // Read to the partition's end, not judged by the high watermark, which some
        // Kafka-compatible brokers under-report (tansu: every warm restart there was taken
        // for this, an outside check).
        if replay.records_read == 0 {
            if keys > 0 {
                // Counted here; the error itself, which says it all, is logged by the service
                // it stops.
                count_failure(VerifyFailure::Ahead);
                return Err(ChangelogError::Ahead {
                    topic: self.topic.clone(),
                    partition: p,
                    offset: local_offset,
                    dir: self.dir.clone(),
                    keys,
                });
            }
            // No state to lose: the changelog is trusted as it is.
            let detail = format!(
                "the local copy is at changelog offset {local_offset}, the changelog has no record there or after"
            );
            self.distrust(p, VerifyFailure::Ahead, &detail);
            self.clear_local(p)?;
            return Ok(WarmStart::Cold { records_read: 0 });
        }
        match replay.verify() {
            Ok(()) => Ok(WarmStart::Verified {
                replay,
                local_offset,
            }),
            Err((reason, detail)) => {
                self.distrust(p, reason, &detail);
                self.clear_local(p)?;
                Ok(WarmStart::Cold {
                    records_read: replay.records_read,
                })
            }
        }
    }

    /// The whole changelog partition, from its low watermark. `read_before` counts the records
    /// a failed warm start already read, so the metrics count every record this restore read.
    fn cold_replay<C: ConsumerContext>(
        &self,
        reader: &BaseConsumer<C>,
        p: i32,
        (low, high): (i64, i64),
        read_before: u64,
        gauges: &mut RestoreGauges,
    ) -> Result<Replay, ChangelogError> {
        let start = Replay {
            records_read: read_before,
            ..Replay::default()
        };
        let replay = self.replay(reader, p, (low, high), low, start, gauges)?;
        // Checked too, though there is no better source to fall back to: a mismatch
        // here means the changelog's history is inconsistent, worth a warning.
        if replay
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.state.is_some())
        {
            if let Err((reason, detail)) = replay.verify() {
                tracing::warn!(
                    partition = p,
                    reason = reason.as_str(),
                    %detail,
                    "the changelog does not match its own last checkpoint; using it as it is"
                );
            }
        }
        Ok(replay)
    }

    /// Brings the local copy up to date so the next restart is warm (nothing to write when
    /// the verified copy, at `warm_from`, was already the latest checkpoint).
    fn save_local_copy(
        &self,
        p: i32,
        replay: &Replay,
        warm_from: Option<i64>,
    ) -> Result<(), ChangelogError> {
        let (Some(offset), Some(cp)) = (replay.checkpoint_offset, &replay.checkpoint) else {
            return Ok(());
        };
        if warm_from == Some(offset) && replay.applied.is_empty() {
            return Ok(());
        }
        let changes: Vec<(&str, Option<&[u8]>)> = if warm_from.is_some() {
            // The tail, on top of the verified copy.
            replay
                .applied
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect()
        } else {
            // A cold restore's partition was cleared (or never written): the state as a whole.
            replay
                .entries
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
                .collect()
        };
        self.store.write(
            p,
            &changes,
            &PartitionMeta {
                changelog_offset: offset,
                app: cp.encode(),
            },
        )?;
        Ok(())
    }

    /// Partition `p`'s local copy, if there is one worth verifying. A copy that cannot be used
    /// at all is counted, logged and cleared here.
    fn local_copy(&self, p: i32) -> Result<Option<LocalCopy>, ChangelogError> {
        let (meta, entries) = match self.store.load_partition(p) {
            Ok(x) => x,
            Err(e) => {
                self.distrust(p, VerifyFailure::Unreadable, &e.to_string());
                self.clear_local(p)?;
                return Ok(None);
            }
        };
        let Some(meta) = meta else {
            // The meta is written atomically with every change: keys without it mean it was
            // lost, and with it what the keys reflect.
            if !entries.is_empty() {
                let detail = format!("{} keys but no meta", entries.len());
                self.distrust(p, VerifyFailure::NoMeta, &detail);
                self.clear_local(p)?;
            }
            return Ok(None);
        };
        let checkpoint = match Checkpoint::decode(&meta.app) {
            Ok(cp) => cp,
            Err(e) => {
                self.distrust(p, VerifyFailure::Unreadable, &e.to_string());
                self.clear_local(p)?;
                return Ok(None);
            }
        };
        let mut state = StateDigest::default();
        let mut map = HashMap::with_capacity(entries.len());
        for (k, v) in entries {
            state.insert(entry_hash(&k, &v));
            map.insert(k, v);
        }
        Ok(Some(LocalCopy {
            entries: map,
            state,
            changelog_offset: meta.changelog_offset,
            checkpoint,
        }))
    }

    /// Clears partition `p`'s local copy before it is restored wholly from the changelog. A
    /// copy too damaged to clear (its keys cannot be read) condemns the store instead
    /// ([`LocalStore::condemn`]: rebuilt at the next start): the restore goes on from the
    /// changelog either way, instead of failing on every start.
    fn clear_local(&self, p: i32) -> Result<(), ChangelogError> {
        match self.store.clear_partition(p) {
            Ok(()) => Ok(()),
            Err(e) if e.is_damaged() => {
                tracing::warn!(
                    partition = p,
                    error = %e,
                    "the local copy cannot be cleared; restoring the partition from the changelog, and the local store is rebuilt at the next start"
                );
                self.store.condemn()?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A local copy not to be trusted: a warning naming the partition and what is wrong, and
    /// the counter by reason.
    fn distrust(&self, p: i32, reason: VerifyFailure, detail: &str) {
        tracing::warn!(
            partition = p,
            reason = reason.as_str(),
            detail,
            "local state does not match the changelog; restoring the partition wholly from the changelog"
        );
        count_failure(reason);
    }

    /// Reads changelog partition `p` from `from` to its end into `out`. User records are held
    /// back until a checkpoint record follows them.
    fn replay<C: ConsumerContext>(
        &self,
        reader: &BaseConsumer<C>,
        p: i32,
        (low, high): (i64, i64),
        from: i64,
        mut out: Replay,
        gauges: &mut RestoreGauges,
    ) -> Result<Replay, ChangelogError> {
        let kerr = |source| ChangelogError::Kafka {
            topic: self.topic.clone(),
            partition: p,
            source,
        };
        gauges.progress(out.records_read, high - from);
        // Read to the end even when the high watermark says there is nothing: the end is the
        // partition-EOF event (some Kafka-compatible brokers under-report the watermark).
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, p, Offset::Offset(kafka::rewound(from, low)))
            .map_err(kerr)?;
        reader.assign(&tpl).map_err(kerr)?;
        let mut pending: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        loop {
            match reader.poll(Duration::from_secs(10)) {
                // No record and no end-of-partition within the timeout: keep waiting, the
                // partition-EOF event (not the high watermark, which some Kafka-compatible
                // brokers under-report) says when the end is reached.
                None => tracing::debug!(partition = p, "restore: waiting for the changelog"),
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                // A broker that cannot be reached (one of several bootstrap addresses down,
                // a leader moving) is waited out, as the services' own loop does; the restore
                // goes on when the partition's leader answers.
                Some(Err(e))
                    if kafka::is_transient(&e) && reader.client().fatal_error().is_none() =>
                {
                    tracing::warn!(partition = p, error = %e, "restore: waiting out a broker error");
                }
                Some(Err(e)) => return Err(kerr(e)),
                Some(Ok(m)) if m.offset() < from => {
                    // Fetched early on purpose (kafka::FETCH_REWIND), or delivered twice.
                }
                Some(Ok(m)) => {
                    out.records_read += 1;
                    if out.records_read % 1_000 == 0 {
                        gauges.progress(out.records_read, high - m.offset() - 1);
                    }
                    let key = m.key().unwrap_or_default();
                    if key == CHECKPOINT_KEY {
                        let cp = Checkpoint::decode(m.payload().unwrap_or_default())?;
                        for (k, v) in pending.drain(..) {
                            out.apply(k, v);
                        }
                        out.checkpoint = Some(cp);
                        out.checkpoint_offset = Some(m.offset());
                    } else {
                        let k = std::str::from_utf8(key)
                            .map_err(|_| ChangelogError::BadKey {
                                topic: self.topic.clone(),
                                partition: p,
                            })?
                            .to_string();
                        pending.push((k, m.payload().map(<[u8]>::to_vec)));
                    }
                }
            }
        }
        if !pending.is_empty() {
            tracing::info!(
                partition = p,
                records = pending.len(),
                "dropped changelog records of an incomplete checkpoint"
            );
            out.unconfirmed = pending.into_iter().map(|(k, _)| k).collect();
        }
        gauges.progress(out.records_read, 0);
        Ok(out)
    }

    /// The checkpoint protocol, shared by both services (docs/crash-safety.md): outputs durable
    /// first (delivered, or in the open transaction), then each partition's changed keys and
    /// checkpoint record, then (exactly-once) the input offsets and the commit of the
    /// transaction, then the group offsets and the local store. Returns once it is all done.
    ///
    /// With a transactional producer a transaction must be open; it is committed here. Each
    /// completed checkpoint is counted and timed (the checkpoint metrics of both services), and
    /// with `polled` (when its batch's first record was polled) so is the time from then.
    pub fn commit<C: ConsumerContext>(
        &self,
        producer: &ServiceProducer,
        consumer: &BaseConsumer<C>,
        input_topic: &str,
        parts: Vec<PartitionCheckpoint>,
        offsets: &[(i32, i64)],
        polled: Option<Instant>,
    ) -> Result<(), ChangelogError> {
        if !producer.is_transactional() {
            let mut commit =
                self.begin_commit(producer, input_topic, parts, offsets.to_vec(), polled)?;
            self.advance(producer, consumer, &mut commit, true)?;
            return Ok(());
        }
        let started = Instant::now();
        for part in &parts {
            self.stage(producer, part.partition, &part.refs(), &part.checkpoint)?;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(input_topic, *p, Offset::Offset(*o))
                .map_err(ChangelogError::Transaction)?;
        }
        if let (Some(gm), false) = (consumer.group_metadata(), offsets.is_empty()) {
            producer
                .inner()
                .send_offsets_to_transaction(&tpl, &gm, kafka::SETUP_TIMEOUT)
                .map_err(ChangelogError::Transaction)?;
        }
        producer
            .inner()
            .commit_transaction(kafka::SETUP_TIMEOUT)
            .map_err(ChangelogError::Transaction)?;
        producer.take_failures()?;
        self.finish(
            consumer,
            producer,
            input_topic,
            parts,
            offsets,
            started,
            polled,
        )
    }

    /// Starts an at-least-once checkpoint of what was processed and sent so far (the
    /// producer's current epoch is sealed), for [`Changelog::advance`] to carry through as
    /// deliveries arrive, while the service goes on with its next batch: the order of writes
    /// stays that of [`Changelog::commit`], only the waiting overlaps with work.
    pub fn begin_commit(
        &self,
        producer: &ServiceProducer,
        input_topic: &str,
        parts: Vec<PartitionCheckpoint>,
        offsets: Vec<(i32, i64)>,
        polled: Option<Instant>,
    ) -> Result<PendingCommit, ChangelogError> {
        debug_assert!(!producer.is_transactional());
        Ok(PendingCommit {
            step: CommitStep::Outputs(producer.seal()?),
            input_topic: input_topic.to_string(),
            parts,
            offsets,
            started: Instant::now(),
            polled,
        })
    }

    /// Takes `commit` as far as the deliveries so far allow (with `wait`, to its end): once
    /// the outputs sent before it are delivered, stages the changelog records; once those are,
    /// commits the group offsets and queues the local store write. `Ok(true)` when it is done.
    pub fn advance<C: ConsumerContext>(
        &self,
        producer: &ServiceProducer,
        consumer: &BaseConsumer<C>,
        commit: &mut PendingCommit,
        wait: bool,
    ) -> Result<bool, ChangelogError> {
        loop {
            match commit.step {
                CommitStep::Outputs(epoch) => {
                    if !producer.delivered(epoch, wait)? {
                        return Ok(false);
                    }
                    for part in &commit.parts {
                        self.stage(producer, part.partition, &part.refs(), &part.checkpoint)?;
                    }
                    commit.step = CommitStep::Changelog(producer.seal()?);
                }
                CommitStep::Changelog(epoch) => {
                    if !producer.delivered(epoch, wait)? {
                        return Ok(false);
                    }
                    commit.step = CommitStep::Done;
                    self.finish(
                        consumer,
                        producer,
                        &commit.input_topic,
                        std::mem::take(&mut commit.parts),
                        &commit.offsets,
                        commit.started,
                        commit.polled,
                    )?;
                    return Ok(true);
                }
                CommitStep::Done => return Ok(true),
            }
        }
    }

    /// Carries the checkpoints under way forward ([`drive_in_order`] over
    /// [`Changelog::advance`]).
    pub fn drive<C: ConsumerContext>(
        &self,
        producer: &ServiceProducer,
        consumer: &BaseConsumer<C>,
        in_flight: &mut VecDeque<PendingCommit>,
        keep: usize,
    ) -> Result<(), ChangelogError> {
        drive_in_order(in_flight, keep, |commit, wait| {
            self.advance(producer, consumer, commit, wait)
        })
    }

    /// The end of a checkpoint whose changelog records are delivered: the group offsets (also
    /// in the group itself with exactly-once, whose transaction holds them already: some
    /// brokers only show group commits to offset readers; lag monitoring and tools read them,
    /// resuming never does), the local store, the metrics.
    #[allow(clippy::too_many_arguments)]
    fn finish<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        producer: &ServiceProducer,
        input_topic: &str,
        parts: Vec<PartitionCheckpoint>,
        offsets: &[(i32, i64)],
        started: Instant,
        polled: Option<Instant>,
    ) -> Result<(), ChangelogError> {
        kafka::commit_async(consumer, input_topic, offsets);
        for part in parts {
            self.persist_local(producer, part)?;
        }
        metrics::histogram!(t::CHECKPOINT_SECONDS).record(started.elapsed().as_secs_f64());
        if let Some(polled) = polled {
            metrics::histogram!(t::POLL_TO_OUTPUT_SECONDS).record(polled.elapsed().as_secs_f64());
        }
        metrics::counter!(t::CHECKPOINTS).increment(1);
        Ok(())
    }

    /// Queues partition `p`'s changed keys (`None` deletes) and then its checkpoint record.
    pub fn stage(
        &self,
        producer: &ServiceProducer,
        p: i32,
        changes: &[(&str, Option<&[u8]>)],
        checkpoint: &Checkpoint,
    ) -> Result<(), ChangelogError> {
        for (key, value) in changes {
            producer.send(
                Record {
                    topic: &self.topic,
                    partition: Some(p),
                    key: Some(key.as_bytes()),
                    payload: *value,
                    headers: None,
                },
                kafka::Delivery::Output,
            )?;
        }
        let cp = checkpoint.encode();
        producer.send(
            Record {
                topic: &self.topic,
                partition: Some(p),
                key: Some(CHECKPOINT_KEY),
                payload: Some(&cp),
                headers: None,
            },
            kafka::Delivery::Checkpoint,
        )?;
        Ok(())
    }

    /// After the staged records are delivered (or their transaction committed): the same
    /// changes into the local store, with the checkpoint's changelog offset. Queued, written on
    /// the store's own thread ([`local_writer`]); an error here is an earlier write's.
    pub fn persist_local(
        &self,
        producer: &ServiceProducer,
        part: PartitionCheckpoint,
    ) -> Result<(), ChangelogError> {
        let Some(offset) = producer.checkpoint_offset(&self.topic, part.partition) else {
            // Delivered but no offset known (should not happen): the next restart reads more of
            // the changelog, nothing is lost.
            return Ok(());
        };
        // The records move to the writer's thread: no copy of the changed states on this one.
        self.writer.write(
            part.partition,
            part.records,
            PartitionMeta {
                changelog_offset: offset,
                app: part.checkpoint.encode(),
            },
        )
    }
}

#[cfg(test)]
mod tests;
