//! Owned partitions: what a rebalance does to a service that keeps keyed state per input
//! partition. Both services do the same: on assignment, restore each partition (local store,
//! then changelog; several partitions at once) and resume at its checkpointed offset; on revocation, checkpoint first
//! (unless the service already failed), then drop the partitions. Only restoring one partition
//! and holding its state differ, behind [`OwnsPartitions`].

use super::concurrent;
use super::kafka::{self, ServiceConsumer};
use super::service::Service;
use rdkafka::Offset;

/// A service's per-partition state, as the rebalance steps need it.
pub trait OwnsPartitions: Service {
    /// The service's state of one owned partition.
    type Owned: Send;
    /// Restores partition `p`: its state and the next input offset to process, if it was ever
    /// checkpointed. An error fails the service (the partition is not served).
    fn restore_partition(&self, p: i32) -> Result<(Self::Owned, Option<i64>), String>;
    /// Holds a restored partition.
    fn insert_owned(&self, p: i32, owned: Self::Owned);
    /// A partition was restored at a checkpoint, which may be ahead of the group's committed
    /// offset (a commit lost to a rebalance, a crash between the changelog and the asynchronous
    /// commit): count it as work, so the next checkpoint commits its position even if no new
    /// record arrives; otherwise the group's lag stays wrong until one does. That checkpoint
    /// writes no changelog record for it: the position repeats the last one.
    fn resumed_at_checkpoint(&self);
    /// Drops a revoked partition.
    fn remove_owned(&self, p: i32);
    /// The set of owned partitions changed: refresh the gauges that depend on it.
    fn owned_changed(&self);
    /// The assignment changed (called before restoring new partitions and after releasing
    /// revoked ones): the scorer tells the lookup directory which partitions it holds.
    fn announce(&self) {}
}

/// The assignment step of [`kafka::PartitionOwner::assigned`]: where to resume each partition.
pub fn assigned<S: OwnsPartitions>(service: &S, partitions: &[i32]) -> Vec<(i32, Offset)> {
    let health = service.health();
    // Restoring before joined: readiness never sees a joined instance with none of its new
    // partitions yet (that would read as "ready with an empty assignment").
    for &p in partitions {
        health.restoring(p);
    }
    health.joined();
    service.announce();
    // Up to RESTORE_PARALLELISM partitions restore at once: each one waits on the broker
    // (a reader, its watermarks, the fetches to the end) as much as it computes. A partition
    // is held, and counted restored, as soon as its own restore ends.
    let offsets = concurrent::map(partitions, concurrent::RESTORE_PARALLELISM, |&p| {
        match service.restore_partition(p) {
            Ok((owned, next)) => {
                service.insert_owned(p, owned);
                if next.is_some() {
                    service.resumed_at_checkpoint();
                }
                health.restored(p);
                // Records before `next` are skipped as they arrive (see kafka::FETCH_REWIND).
                (
                    p,
                    next.map_or(Offset::Stored, |n| Offset::Offset(kafka::rewound(n, 0))),
                )
            }
            Err(e) => {
                service
                    .faults()
                    .fail(S::NAME, format!("restoring partition {p}: {e}"));
                (p, Offset::Stored)
            }
        }
    });
    tracing::info!(?partitions, "partitions assigned");
    service.owned_changed();
    offsets
}

/// The revocation step of [`kafka::PartitionOwner::revoked`].
pub fn revoked<S: OwnsPartitions>(
    service: &S,
    consumer: &ServiceConsumer<S>,
    partitions: &[i32],
    lost: bool,
) {
    // After a failure the in-memory state may be ahead of what is durable: never checkpoint
    // it; the next owner replays from the last good checkpoint. Partitions the group already
    // gave away (`lost`) are not checkpointed either: their new owner may have checkpointed
    // later states since, which this instance's older ones would overwrite in the changelog
    // (a zombie's write); under exactly_once the fenced transaction would refuse it anyway.
    if !service.faults().failed() && !lost {
        if let Err(e) = service
            .checkpoint(consumer)
            .and_then(|()| service.settle(consumer))
        {
            service
                .faults()
                .fail(S::NAME, format!("checkpoint on revoke: {e}"));
        }
    }
    for &p in partitions {
        service.remove_owned(p);
        service.health().released(p);
    }
    if lost {
        service.health().left();
    }
    tracing::info!(?partitions, "partitions revoked");
    service.announce();
    service.owned_changed();
}
