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
//! Whoever reads the store first waits for the queue to drain ([`LocalWriter::drain`]): a
//! restore, which also writes, and [`super::Changelog::store`]. A failed write stops the writes
//! after it (a batch of a later checkpoint would otherwise describe a partition missing the
//! failed one's keys) and fails every later checkpoint, as the write itself used to.

use super::ChangelogError;
use crate::runtime::store::{LocalStore, PartitionMeta};
use crate::runtime::sync::lock_unpoisoned;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Checkpoints queued at most (one per partition per checkpoint): past it, the service's thread
/// waits, so a slow disk slows the service instead of filling memory.
const QUEUE: usize = 32;

/// One partition's checkpoint for the local store.
struct Job {
    partition: i32,
    changes: Vec<(String, Option<Vec<u8>>)>,
    meta: PartitionMeta,
}

#[derive(Default)]
struct Shared {
    /// Jobs queued and not yet written (or skipped).
    queued: Mutex<usize>,
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
    for job in queue {
        if shared.failure().is_ok() {
            let changes: Vec<(&str, Option<&[u8]>)> = job
                .changes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            if let Err(e) = store.write(job.partition, &changes, &job.meta) {
                lock_unpoisoned(&shared.failure).get_or_insert(e.to_string());
            }
        }
        let mut queued = lock_unpoisoned(&shared.queued);
        *queued = queued.saturating_sub(1);
        shared.drained.notify_all();
    }
}
