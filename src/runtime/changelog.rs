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

use crate::kafka::{self, ProduceError, Record, ServiceProducer};
use crate::store::{LocalStore, PartitionMeta, StoreError};
use crate::telemetry::{self as t, PartitionGauges};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The key of checkpoint records. Starts with a NUL byte, which the services refuse in keys of
/// input events, so it can never be a user's key.
pub const CHECKPOINT_KEY: &[u8] = b"\0leadscore.checkpoint";

/// Encoding version of checkpoint records.
const CHECKPOINT_VERSION: u8 = 1;

/// What a checkpoint record says: where the input resumes, and service-specific metadata
/// (the scorer's partition clock).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// The next input offset to process on this partition.
    pub next_input_offset: i64,
    pub app: Vec<u8>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(9 + self.app.len());
        v.push(CHECKPOINT_VERSION);
        v.extend_from_slice(&self.next_input_offset.to_be_bytes());
        v.extend_from_slice(&self.app);
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, ChangelogError> {
        match bytes {
            [CHECKPOINT_VERSION, rest @ ..] if rest.len() >= 8 => {
                let mut o = [0u8; 8];
                o.copy_from_slice(&rest[..8]);
                Ok(Checkpoint {
                    next_input_offset: i64::from_be_bytes(o),
                    app: rest[8..].to_vec(),
                })
            }
            _ => Err(ChangelogError::BadCheckpoint),
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
    #[error("changelog produce: {0}")]
    Produce(#[from] ProduceError),
    #[error("kafka transaction: {0}")]
    Transaction(KafkaError),
    #[error("a checkpoint record is damaged or of an unknown version")]
    BadCheckpoint,
    #[error("changelog {topic:?} partition {partition}: a key is not UTF-8")]
    BadKey { topic: String, partition: i32 },
}

/// A partition's state after a restore.
#[derive(Debug, Default)]
pub struct Restored {
    pub entries: HashMap<String, Vec<u8>>,
    /// The last complete checkpoint; `None` for a partition never checkpointed.
    pub checkpoint: Option<Checkpoint>,
    /// Changelog records read (the local store supplied the rest).
    pub records_read: u64,
    /// Whether the local store was used (a warm restart).
    pub warm: bool,
    pub duration: Duration,
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

/// A service's changelog topic and local store.
pub struct Changelog {
    topic: String,
    dir: PathBuf,
    store: LocalStore,
    properties: BTreeMap<String, String>,
    /// When the store's disk use was last measured (it walks the directory).
    disk_measured: Mutex<Option<Instant>>,
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
        let store = match LocalStore::open(dir) {
            Ok(s) => s,
            Err(e) if e.is_damaged() => {
                tracing::warn!(dir = %dir.display(), error = %e, "local store damaged; rebuilding it from the changelog");
                LocalStore::destroy(dir)?;
                LocalStore::open(dir)?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Changelog {
            topic: topic.to_string(),
            dir: dir.to_path_buf(),
            store,
            properties: properties.clone(),
            disk_measured: Mutex::new(None),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn store(&self) -> &LocalStore {
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
            let mut last = match self.disk_measured.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
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
        let mut gauges = RestoreGauges::start(p);
        let restored = self.restore_partition(p, &mut gauges)?;
        metrics::histogram!(t::RESTORE_SECONDS).record(restored.duration.as_secs_f64());
        Ok(restored)
    }

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
        let (low, high) = reader
            .fetch_watermarks(&self.topic, p, kafka::SETUP_TIMEOUT)
            .map_err(kerr)?;

        let mut out = Restored::default();
        let (meta, entries) = match self.store.load_partition(p) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "local state unreadable; restoring from the changelog");
                self.store.clear_partition(p)?;
                (None, Vec::new())
            }
        };
        let mut from = low;
        if let Some(meta) = meta {
            if meta.changelog_offset < high {
                match Checkpoint::decode(&meta.app) {
                    Ok(cp) => {
                        out.entries = entries.into_iter().collect();
                        out.checkpoint = Some(cp);
                        out.warm = true;
                        from = (meta.changelog_offset + 1).max(low);
                    }
                    Err(_) => self.store.clear_partition(p)?,
                }
            } else {
                // The local copy is ahead of the changelog: the topic was recreated. Trust Kafka.
                tracing::warn!(
                    partition = p,
                    local = meta.changelog_offset,
                    high,
                    "local state is ahead of the changelog; restoring from the changelog"
                );
                self.store.clear_partition(p)?;
            }
        }

        gauges.progress(0, high - from);
        let mut last_checkpoint_offset = None;
        let mut applied: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        // Read to the end even when the high watermark says there is nothing: the end is the
        // partition-EOF event (some Kafka-compatible brokers under-report the watermark).
        {
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
                                match &v {
                                    Some(v) => out.entries.insert(k.clone(), v.clone()),
                                    None => out.entries.remove(&k),
                                };
                                applied.push((k, v));
                            }
                            out.checkpoint = Some(cp);
                            last_checkpoint_offset = Some(m.offset());
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
            }
        }
        gauges.progress(out.records_read, 0);

        // Bring the local copy up to date so the next restart is warm.
        if let (Some(offset), Some(cp)) = (last_checkpoint_offset, &out.checkpoint) {
            let changes: Vec<(&str, Option<&[u8]>)> = applied
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            self.store.write(
                p,
                &changes,
                &PartitionMeta {
                    changelog_offset: offset,
                    app: cp.encode(),
                },
            )?;
        }
        out.duration = started.elapsed();
        Ok(out)
    }

    /// The checkpoint protocol, shared by both services (docs/crash-safety.md): outputs durable
    /// first (flushed, or in the open transaction), then each partition's changed keys and
    /// checkpoint record, then (exactly-once) the input offsets and the commit of the
    /// transaction, then the group offsets and the local store.
    ///
    /// With a transactional producer a transaction must be open; it is committed here. Each
    /// completed checkpoint is counted and timed (the checkpoint metrics of both services).
    pub fn commit<C: ConsumerContext>(
        &self,
        producer: &ServiceProducer,
        consumer: &BaseConsumer<C>,
        input_topic: &str,
        parts: &[PartitionCheckpoint],
        offsets: &[(i32, i64)],
    ) -> Result<(), ChangelogError> {
        let started = Instant::now();
        if !producer.is_transactional() {
            producer.flush()?;
        }
        for part in parts {
            self.stage(producer, part.partition, &part.refs(), &part.checkpoint)?;
        }
        if producer.is_transactional() {
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
        } else {
            producer.flush()?;
        }
        // Also in the group itself (with exactly-once they are already in the transaction;
        // some brokers only show group commits to offset readers): lag monitoring and tools
        // read them, resuming never does.
        kafka::commit_async(consumer, input_topic, offsets);
        for part in parts {
            self.persist_local(producer, part.partition, &part.refs(), &part.checkpoint)?;
        }
        metrics::histogram!(t::CHECKPOINT_SECONDS).record(started.elapsed().as_secs_f64());
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
                    key: key.as_bytes(),
                    payload: *value,
                    headers: None,
                },
                false,
            )?;
        }
        let cp = checkpoint.encode();
        producer.send(
            Record {
                topic: &self.topic,
                partition: Some(p),
                key: CHECKPOINT_KEY,
                payload: Some(&cp),
                headers: None,
            },
            true,
        )?;
        Ok(())
    }

    /// After the staged records are delivered (or their transaction committed): the same
    /// changes into the local store, with the checkpoint's changelog offset.
    pub fn persist_local(
        &self,
        producer: &ServiceProducer,
        p: i32,
        changes: &[(&str, Option<&[u8]>)],
        checkpoint: &Checkpoint,
    ) -> Result<(), ChangelogError> {
        let Some(offset) = producer.checkpoint_offset(&self.topic, p) else {
            // Delivered but no offset known (should not happen): the next restart reads more of
            // the changelog, nothing is lost.
            return Ok(());
        };
        self.store.write(
            p,
            changes,
            &PartitionMeta {
                changelog_offset: offset,
                app: checkpoint.encode(),
            },
        )?;
        Ok(())
    }
}
