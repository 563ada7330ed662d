//! The local store's checkpoint writes, on a thread of their own.
//!
//! A checkpoint's write to the local store (a fjall batch: journal, memtable) took about a fifth
//! of the scorer thread's time under `bench --scorer`, and nothing waits for it: the local store
//! only saves a restart from reading the whole changelog, and may lag it (docs/crash-safety.md,
//! step 4). So the service's thread queues the write and goes on; this thread writes the
//! partitions' checkpoints in the order they were queued, each after its changelog records were
//! acknowledged (the caller queues only then), so the store is never ahead of the changelog. A
//! crash loses at most the queued writes: the next restore reads a longer changelog tail.
//!
//! Checkpoints queued within a second of each other are written together, one atomic write per
//! partition with the last one's meta ([`gather`]): a user changed in several of them is
//! written once, which halved the store's disk bytes and its compaction work under
//! `bench --scorer`, and the store still holds exactly some checkpoint's state.
//!
//! Whoever reads the store first waits for the queue to drain ([`LocalWriter::drain`]): a
//! restore, which also writes, and [`super::Changelog::store`]. A failed write stops the writes
//! after it (a batch of a later checkpoint would otherwise describe a partition missing the
//! failed one's keys) and fails every later checkpoint, as the write itself used to.

use super::ChangelogError;
use crate::runtime::store::{LocalStore, PartitionMeta};
use crate::runtime::sync::lock_unpoisoned;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Checkpoints queued at most (one per partition per checkpoint): past it, the service's thread
/// waits, so a slow disk slows the service instead of filling memory.
const QUEUE: usize = 32;

/// How long the writer gathers checkpoints into one write (unless a reader waits): the store
/// may lag the changelog by this much more, which a restore reads from the changelog instead.
const COALESCE: Duration = Duration::from_secs(1);

/// The most changed keys gathered into one write, which bounds the memory they hold.
const COALESCE_RECORDS: usize = 100_000;

/// One partition's checkpoint for the local store.
pub(super) struct Job {
    pub(super) partition: i32,
    pub(super) changes: Vec<(String, Option<Vec<u8>>)>,
    pub(super) meta: PartitionMeta,
}

#[derive(Default)]
pub(super) struct Shared {
    /// Jobs queued and not yet written (or skipped).
    queued: Mutex<usize>,
    /// How many readers wait in [`LocalWriter::drain`]: while any do, what is queued is
    /// written at once.
    draining: AtomicUsize,
    drained: Condvar,
    /// The first failed write, reported by every later call: sticky.
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn failure(&self) -> Result<(), ChangelogError> {
        match &*lock_unpoisoned(&self.failure) {
            Some(f) => Err(ChangelogError::LocalWrite(f.clone())),
            None => Ok(()),
        }
    }
}

pub(super) struct LocalWriter {
    /// `None` once dropping.
    jobs: Option<SyncSender<Job>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LocalWriter {
    pub(super) fn start(store: Arc<LocalStore>) -> Result<LocalWriter, ChangelogError> {
        let (jobs, queue) = sync_channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let on_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("leadscore-store".into())
            .spawn(move || write_all(&store, &queue, &on_thread))
            .map_err(|e| ChangelogError::LocalWrite(format!("cannot start its writer: {e}")))?;
        Ok(LocalWriter {
            jobs: Some(jobs),
            shared,
            thread: Some(thread),
        })
    }

    /// Queues partition `partition`'s checkpoint; an error if an earlier write failed.
    pub(super) fn write(
        &self,
        partition: i32,
        changes: Vec<(String, Option<Vec<u8>>)>,
        meta: PartitionMeta,
    ) -> Result<(), ChangelogError> {
        self.shared.failure()?;
        let job = Job {
            partition,
            changes,
            meta,
        };
        *lock_unpoisoned(&self.shared.queued) += 1;
        let sent = self.jobs.as_ref().map(|j| j.send(job));
        if !matches!(sent, Some(Ok(()))) {
            *lock_unpoisoned(&self.shared.queued) -= 1;
            return Err(ChangelogError::LocalWrite("its writer stopped".into()));
        }
        Ok(())
    }

    /// Waits until every queued write is done; an error if one failed.
    pub(super) fn drain(&self) -> Result<(), ChangelogError> {
        self.shared.draining.fetch_add(1, Ordering::AcqRel);
        let _done = Leave(&self.shared.draining);
        let mut queued = lock_unpoisoned(&self.shared.queued);
        while *queued > 0 && self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            // In steps, so a writer that died (a panic) cannot leave this waiting for good.
            queued = self
                .shared
                .drained
                .wait_timeout(queued, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(queued);
        self.shared.failure()
    }
}

/// Counts a reader out of [`Shared::draining`] when dropped.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for LocalWriter {
    /// Writes what is queued, then stops the thread: a clean stop leaves the store as up to
    /// date as the changelog, so the next start is warm.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Err(e) = self.shared.failure() {
            tracing::warn!(error = %e, "the local store lags the changelog; the next restore reads more of it");
        }
    }
}

fn write_all(store: &LocalStore, queue: &Receiver<Job>, shared: &Shared) {
    while let Ok(first) = queue.recv() {
        let (merged, jobs) = gather(first, queue, shared);
        for (partition, (changes, meta)) in merged {
            if shared.failure().is_err() {
                break;
            }
            let changes: Vec<(&str, Option<&[u8]>)> = changes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            // One atomic write per partition: every key of the checkpoints merged (the store
            // keeps the last value of a key) with the last one's meta, so the store holds
            // exactly the state of that checkpoint, as if each had been written in turn.
            if let Err(e) = store.write(partition, &changes, &meta) {
                lock_unpoisoned(&shared.failure).get_or_insert(e.to_string());
            }
        }
        let mut queued = lock_unpoisoned(&shared.queued);
        *queued = queued.saturating_sub(jobs);
        shared.drained.notify_all();
    }
}

/// Checkpoints whose writes are merged into one, per partition: their changes in order and the
/// last one's meta.
pub(super) type Merged = BTreeMap<i32, (Vec<(String, Option<Vec<u8>>)>, PartitionMeta)>;

/// Checkpoints gathered so far: merged, how many, and how many changed keys they hold.
#[derive(Default)]
struct Gathered {
    merged: Merged,
    jobs: usize,
    records: usize,
}

impl Gathered {
    fn add(&mut self, job: Job) {
        self.jobs += 1;
        self.records += job.changes.len();
        match self.merged.entry(job.partition) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((job.changes, job.meta));
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let (changes, meta) = e.get_mut();
                changes.extend(job.changes);
                *meta = job.meta;
            }
        }
    }
}

/// `first` and the checkpoints queued after it for up to [`COALESCE`] (less once a reader
/// waits, the merged changes reach [`COALESCE_RECORDS`], or the queue closes), merged per
/// partition, and how many jobs that was. A user changed in several checkpoints is written
/// once: fewer journal bytes and less compaction for the store, on the machine's other core.
pub(super) fn gather(first: Job, queue: &Receiver<Job>, shared: &Shared) -> (Merged, usize) {
    let mut g = Gathered::default();
    g.add(first);
    let deadline = Instant::now() + COALESCE;
    while g.records < COALESCE_RECORDS && shared.draining.load(Ordering::Acquire) == 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // In short steps, so a reader's wait is noticed soon.
        match queue.recv_timeout((deadline - now).min(Duration::from_millis(10))) {
            Ok(job) => g.add(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Whatever is queued already goes into this write too.
    while let Ok(job) = queue.try_recv() {
        g.add(job);
    }
    (g.merged, g.jobs)
}
