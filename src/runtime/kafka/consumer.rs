//! The group consumer whose context hands assignment and revocation to the state owner, leaving the group, and the changelog reader.

#[allow(unused_imports)]
use super::*;
use rdkafka::message::BorrowedMessage;

/// What a service does when partitions come and go. Called on the consumer's polling thread,
/// inside `poll`, so the service's own processing is never running at the same time.
pub trait PartitionOwner: Send + Sync + Sized + 'static {
    /// Restores the partitions' state; returns, per partition, where to resume consuming
    /// (`Offset::Stored` to use the group's committed offset).
    fn assigned(&self, consumer: &ServiceConsumer<Self>, partitions: &[i32]) -> Vec<(i32, Offset)>;
    /// Makes everything processed so far on these partitions durable, then drops them. When
    /// `lost`, the group already took the partitions away (the session expired, or
    /// `max.poll.interval.ms` passed): another member may own them and have written their
    /// changelog since, so nothing is made durable; they are dropped, and their owner replays
    /// from the last checkpoint.
    fn revoked(&self, consumer: &ServiceConsumer<Self>, partitions: &[i32], lost: bool);
}

/// The consumer context: routes rebalances to the [`PartitionOwner`], and keeps the metrics
/// every service has per owned partition (assigned count, consumer lag), dropping a
/// partition's series when it is revoked.
pub struct OwnerContext<O: PartitionOwner> {
    pub owner: Arc<O>,
    /// The topic the group consumes.
    topic: String,
    /// The partitions this instance owns, for the lag gauges.
    owned: Mutex<BTreeSet<i32>>,
    /// The assignment is paused ([`pause_assignment`]): librdkafka fetches nothing, so its
    /// statistics' lag stands still; [`report_paused_lag`] reads it from the broker instead.
    paused: AtomicBool,
    /// Partitions [`resume_assignment`] resumed at their position, until their first record
    /// comes ([`check_resumed`]) or [`RESUME_ANSWER_WAIT`] passes without one
    /// ([`rewind_unanswered`]).
    resumed: ResumeWatch,
    /// How many rebalance callbacks have run: what was polled before one may be of an
    /// assignment that is gone (see [`OwnerContext::rebalances`]).
    rebalances: AtomicU64,
    /// How many revocations were of a lost assignment: what was polled before one belongs to
    /// partitions this instance stopped owning without a checkpoint (see
    /// [`OwnerContext::losses`]).
    losses: AtomicU64,
}

/// Resumed partitions, each with its position and when it was resumed, and a flag that says
/// whether there are any: the common case, nothing watched, reads the flag alone.
#[derive(Default)]
struct ResumeWatch {
    partitions: Mutex<HashMap<i32, (i64, Instant)>>,
    any: AtomicBool,
}

impl ResumeWatch {
    fn watch(&self, positions: &[(i32, i64)]) {
        lock_unpoisoned(&self.partitions).clear();
        self.watch_too(positions);
    }

    /// Watches `positions` besides the partitions watched already.
    fn watch_too(&self, positions: &[(i32, i64)]) {
        let now = Instant::now();
        let mut map = lock_unpoisoned(&self.partitions);
        map.extend(positions.iter().map(|&(p, next)| (p, (next, now))));
        self.any.store(!map.is_empty(), Ordering::Relaxed);
    }

    fn clear(&self) {
        self.watch(&[]);
    }

    /// Takes the watched partitions `due` selects (given the partition, its position and
    /// when it was resumed), returning each with its position.
    fn take(&self, due: impl Fn(i32, i64, Instant) -> bool) -> Vec<(i32, i64)> {
        if !self.any.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut map = lock_unpoisoned(&self.partitions);
        let taken: Vec<(i32, i64)> = map
            .iter()
            .filter(|(&p, &(next, at))| due(p, next, at))
            .map(|(&p, &(next, _))| (p, next))
            .collect();
        for (p, _) in &taken {
            map.remove(p);
        }
        self.any.store(!map.is_empty(), Ordering::Relaxed);
        taken
    }
}

impl<O: PartitionOwner> OwnerContext<O> {
    fn owned(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        lock_unpoisoned(&self.owned)
    }

    /// How many rebalance callbacks have run so far. An end-of-partition event polled before
    /// a rebalance may be of a partition revoked and assigned again since, whose records are
    /// to be read again: the service loop drops such an event instead of handing it over.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Acquire)
    }

    /// How many revocations so far were of a lost assignment. A record polled before one is
    /// past the position its partition is resumed at if assigned again (nothing was
    /// checkpointed), so handing it over would process it ahead of the records before it:
    /// the service loop drops it, and it is read again in order.
    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Acquire)
    }
}

pub type ServiceConsumer<O> = BaseConsumer<OwnerContext<O>>;

impl<O: PartitionOwner> ClientContext for OwnerContext<O> {
    /// Client errors, logged; reaching a partition's end is not one (librdkafka reports an
    /// empty partition's end at start as a global error: logged at ERROR, an alert on error
    /// lines fired on a healthy start; an outside check, 2026-12-07).
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }

    /// Consumer lag of the owned partitions, every `statistics.interval.ms`.
    fn stats(&self, stats: rdkafka::statistics::Statistics) {
        if self.paused.load(Ordering::Relaxed) {
            return;
        }
        let owned = self.owned();
        let gauges = PartitionGauges::global();
        for topic in stats.topics.values().filter(|t| t.topic == self.topic) {
            for (p, ps) in &topic.partitions {
                if owned.contains(p) && ps.consumer_lag >= 0 {
                    gauges.set(telemetry::CONSUMER_LAG, *p, ps.consumer_lag as f64);
                }
            }
        }
    }
}

impl<O: PartitionOwner> ConsumerContext for OwnerContext<O> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        self.rebalances.fetch_add(1, Ordering::AcqRel);
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        // A partition assigned again starts from its own offset (`assigned`), which
        // `check_resumed` must not take for a gap.
        self.resumed.clear();
        let topic = tpl
            .elements()
            .first()
            .map(|e| e.topic().to_string())
            .unwrap_or_default();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let offsets = self.owner.assigned(consumer, &partitions);
                let count = {
                    let mut owned = self.owned();
                    if !cooperative {
                        owned.clear();
                    }
                    owned.extend(&partitions);
                    owned.len()
                };
                metrics::gauge!(telemetry::ASSIGNED_PARTITIONS).set(count as f64);
                for (p, offset) in offsets {
                    if let Err(e) = tpl.set_partition_offset(&topic, p, offset) {
                        tracing::error!(partition = p, error = %e, "cannot set start offset");
                    }
                }
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                if lost {
                    tracing::warn!(
                        ?partitions,
                        "partitions lost: the group gave them away (session expired or \
                         max.poll.interval.ms passed); dropped without a checkpoint, their \
                         owner replays from the last one"
                    );
                }
                self.owner.revoked(consumer, &partitions, lost);
                if lost {
                    self.losses.fetch_add(1, Ordering::AcqRel);
                }
                let count = {
                    let mut owned = self.owned();
                    for p in &partitions {
                        owned.remove(p);
                        PartitionGauges::global().forget_partition(*p);
                    }
                    owned.len()
                };
                metrics::gauge!(telemetry::ASSIGNED_PARTITIONS).set(count as f64);
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
                for p in std::mem::take(&mut *self.owned()) {
                    PartitionGauges::global().forget_partition(p);
                }
                metrics::gauge!(telemetry::ASSIGNED_PARTITIONS).set(0.0);
            }
        }
    }
}

/// A group consumer on `topic` for `owner`, with offsets stored only by the service.
///
/// With `group.instance.id` in `[kafka]` it is a static member (KIP-345): a broker that
/// supports it hands a member restarting under the same id its partitions back at once, with
/// no rebalance and no wait for the old session to time out. Two live instances must never
/// share an id (the second fences the first), so there is no default: the Kubernetes manifests
/// set it to the pod name. See [`leave_group`] for a clean stop.
pub fn group_consumer<O: PartitionOwner>(
    properties: &BTreeMap<String, String>,
    group_id: &str,
    topic: &str,
    owner: Arc<O>,
    read_committed: bool,
) -> Result<ServiceConsumer<O>, KafkaError> {
    let mut cfg = consumer_config(properties);
    let resolved = role_properties(properties, KafkaRole::Consumer);
    for key in GROUP_MEMBER_PROPERTIES {
        if let Some(v) = resolved.get(*key) {
            cfg.set(*key, v);
        }
    }
    cfg.set("group.id", group_id);
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.auto.offset.store", "false");
    // The service loop learns that a partition is caught up from its end-of-partition event,
    // never from an empty poll (`runtime::service`).
    cfg.set("enable.partition.eof", "true");
    set_default(&mut cfg, "auto.offset.reset", "earliest");
    set_default(&mut cfg, "statistics.interval.ms", "5000");
    if read_committed {
        cfg.set("isolation.level", "read_committed");
    }
    let consumer: ServiceConsumer<O> = create(
        &cfg,
        OwnerContext {
            owner,
            topic: topic.to_string(),
            owned: Mutex::new(BTreeSet::new()),
            paused: AtomicBool::new(false),
            resumed: ResumeWatch::default(),
            rebalances: AtomicU64::new(0),
            losses: AtomicU64::new(0),
        },
    )?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// How long a clean stop waits for the group to be told this member is leaving.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Leaves the consumer group now, on a clean stop, so the partitions move on (or come back to
/// this instance's successor) without waiting for the session timeout.
///
/// librdkafka sends no LeaveGroup when a static member (`group.instance.id`) closes (KIP-345:
/// the member is expected back), but it does when one unsubscribes. So: unsubscribe, then poll
/// (serving the revocation, which checkpoints) until librdkafka has issued the LeaveGroup,
/// which it marks by dropping the member id. Closing the consumer afterwards waits for the
/// broker's answer. Records a poll still returns are dropped: they are past the checkpoint, and
/// the next owner reads them again.
pub fn leave_group<C: ConsumerContext>(consumer: &BaseConsumer<C>, timeout: Duration) {
    consumer.unsubscribe();
    let deadline = Instant::now() + timeout;
    loop {
        let _ = consumer.poll(Duration::from_millis(20));
        if member_id(consumer).is_empty() {
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                timeout_s = timeout.as_secs(),
                "the consumer group was not told of this member leaving; its partitions wait for the session timeout"
            );
            return;
        }
    }
}

/// Pauses fetching for `partitions` of the consumed topic (the others go on). Paused, a
/// consumer is still polled: it stays in its group and serves rebalances, however long the
/// pause. While any partition is paused, the lag of every owned partition comes from
/// [`report_paused_lag`].
pub fn pause_partitions<O: PartitionOwner>(
    consumer: &ServiceConsumer<O>,
    partitions: &[i32],
) -> Result<(), KafkaError> {
    if partitions.is_empty() {
        return Ok(());
    }
    consumer.pause(&partition_list(&consumer.context().topic, partitions))?;
    consumer.context().paused.store(true, Ordering::Relaxed);
    Ok(())
}

/// The list of `partitions` of `topic`.
fn partition_list(topic: &str, partitions: &[i32]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    tpl
}

/// How long a resumed partition may go without its first record before it is fetched again
/// from [`FETCH_REWIND`] before its position ([`rewind_unanswered`]).
pub const RESUME_ANSWER_WAIT: Duration = Duration::from_millis(500);

/// Resumes fetching for every partition the consumer holds now, each at its position (the
/// record after the last one handed over). With `watch`, each partition that has handed records
/// over is watched until its first record: a broker that returns the whole record batch holding
/// the position (Apache Kafka, librdkafka's mock cluster) brings that record next, and nothing
/// is fetched twice; a broker that returns only batches starting at or after it (tansu 0.6)
/// skips the rest of that batch, or returns nothing when that batch is its last, and the
/// partition is then fetched again from [`FETCH_REWIND`] before the position: at once when its
/// first record is past the position ([`check_resumed`]), after [`RESUME_ANSWER_WAIT`] when no
/// record came ([`rewind_unanswered`]; also the case of a partition with nothing new, which
/// then reads its last records again). Every resume used to rewind, fetching up to 10,000
/// records per partition again after each backoff of the handoff. Without `watch` (partitions
/// resumed only to be revoked), nothing is watched.
pub fn resume_assignment<O: PartitionOwner>(
    consumer: &ServiceConsumer<O>,
    watch: bool,
) -> Result<(), KafkaError> {
    resume(consumer, None, watch, true)
}

/// Resumes `partitions` only, as [`resume_assignment`] resumes all; `others_paused`: whether
/// partitions stay paused besides them (their lag still comes from [`report_paused_lag`]).
pub fn resume_partitions<O: PartitionOwner>(
    consumer: &ServiceConsumer<O>,
    partitions: &[i32],
    others_paused: bool,
) -> Result<(), KafkaError> {
    if partitions.is_empty() {
        return Ok(());
    }
    resume(consumer, Some(partitions), true, !others_paused)
}

fn resume<O: PartitionOwner>(
    consumer: &ServiceConsumer<O>,
    only: Option<&[i32]>,
    watch: bool,
    none_left: bool,
) -> Result<(), KafkaError> {
    let context = consumer.context();
    let positions: Vec<(i32, i64)> = if watch {
        consumer
            .position()?
            .elements()
            .iter()
            .filter(|e| only.is_none_or(|o| o.contains(&e.partition())))
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some((e.partition(), next)),
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    match only {
        None => {
            context.resumed.watch(&positions);
            consumer.resume(&consumer.assignment()?)?;
        }
        Some(partitions) => {
            context.resumed.watch_too(&positions);
            consumer.resume(&partition_list(&context.topic, partitions))?;
        }
    }
    if none_left {
        context.paused.store(false, Ordering::Relaxed);
    }
    // librdkafka resumes a partition by clearing a flag, without waking the broker thread,
    // which may sleep up to a second before it fetches again; a seek to the same position
    // starts the fetch now.
    for (p, next) in positions {
        consumer.seek(&context.topic, p, Offset::Offset(next), Duration::ZERO)?;
    }
    Ok(())
}

/// Whether `msg` may be handled: called for every record before the service sees it. The first
/// record of a partition [`resume_assignment`] watches is the one at its position, unless the
/// broker skipped part of a batch (or the position had no record: a transaction marker, a
/// deleted record); then the record is dropped, the partition is fetched again from
/// [`FETCH_REWIND`] before the position (the service skips what it has handled), and this
/// returns `false`. Seeking discards what was fetched for the partition before it, so the next
/// record is from the new fetch. An error means the partition could not be fetched again: the
/// record must not be handled either (what the broker skipped would be lost), so the service
/// stops and a restart replays from its checkpoint.
pub fn check_resumed<O: PartitionOwner>(
    consumer: &ServiceConsumer<O>,
    msg: &BorrowedMessage<'_>,
) -> Result<bool, KafkaError> {
    let p = msg.partition();
    let expected = consumer.context().resumed.take(|q, _, _| q == p).pop();
    match expected {
        Some((_, next)) if msg.offset() > next => {
            tracing::debug!(
                partition = msg.partition(),
                position = next,
                first = msg.offset(),
                "the first record after a resume is past the position; fetching again from before it"
            );
            fetch_again(consumer, msg.partition(), next)?;
            Ok(false)
        }
        _ => Ok(true),
    }
}

/// Fetches again, from [`FETCH_REWIND`] before its position, every partition watched since
/// a resume ([`resume_assignment`]) that has had no record for [`RESUME_ANSWER_WAIT`]: the
/// broker may be holding back the rest of a batch the position is inside. The service loop
/// calls it at every turn; it costs a flag read when nothing is watched.
pub fn rewind_unanswered<O: PartitionOwner>(
    consumer: &ServiceConsumer<O>,
) -> Result<(), KafkaError> {
    let due = consumer
        .context()
        .resumed
        .take(|_, _, at| at.elapsed() >= RESUME_ANSWER_WAIT);
    for (p, next) in due {
        tracing::debug!(
            partition = p,
            position = next,
            "no record since the resume; fetching again from before the position"
        );
        fetch_again(consumer, p, next)?;
    }
    Ok(())
}

/// Seeks partition `p` of the consumed topic to [`FETCH_REWIND`] before `next`. Seeking
/// discards whatever was fetched for it before.
fn fetch_again<O: PartitionOwner>(
    consumer: &ServiceConsumer<O>,
    p: i32,
    next: i64,
) -> Result<(), KafkaError> {
    let topic = &consumer.context().topic;
    consumer.seek(topic, p, Offset::Offset(rewound(next, 0)), Duration::ZERO)
}

/// How long [`report_paused_lag`] waits for one partition's watermarks.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(1);

/// The consumer lag of each owned partition while the assignment is paused, from the broker's
/// high watermark and `committed` (the partition's committed input position; everything from
/// the low watermark when none): the records not yet handled grow through a pause, and the lag
/// alerts must see them. One metadata round trip per partition, so call it every few seconds,
/// not per poll. A partition whose watermarks cannot be had keeps its last figure.
pub fn report_paused_lag<O: PartitionOwner>(
    consumer: &ServiceConsumer<O>,
    committed: impl Fn(i32) -> Option<i64>,
) {
    let context = consumer.context();
    let owned: Vec<i32> = context.owned().iter().copied().collect();
    for p in owned {
        match consumer.fetch_watermarks(&context.topic, p, WATERMARK_TIMEOUT) {
            Ok((low, high)) => {
                let lag = (high - committed(p).unwrap_or(low).max(low)).max(0);
                PartitionGauges::global().set(telemetry::CONSUMER_LAG, p, lag as f64);
            }
            Err(e) => {
                tracing::debug!(partition = p, error = %e, "no watermarks for the paused lag")
            }
        }
    }
}

/// The consumer's current group member id (empty when not a member).
fn member_id<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> String {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: rk is a live consumer handle; the returned string (or null) is owned by the
    // caller and freed with rd_kafka_mem_free.
    unsafe {
        let p = rd::rd_kafka_memberid(rk);
        if p.is_null() {
            return String::new();
        }
        let id = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        rd::rd_kafka_mem_free(rk, p.cast());
        id
    }
}

/// A consumer outside any group, for reading a partition from a given offset to its end
/// (restoring a changelog).
pub fn reader(
    properties: &BTreeMap<String, String>,
) -> Result<BaseConsumer<ReaderContext>, KafkaError> {
    let mut cfg = consumer_config(properties);
    cfg.set("group.id", "leadscore-restore");
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.partition.eof", "true");
    cfg.set("isolation.level", "read_committed");
    set_default(&mut cfg, "fetch.max.bytes", "52428800");
    set_default(&mut cfg, "queued.max.messages.kbytes", "262144");
    // A restore ends with a fetch that finds nothing; don't let the broker hold it for the
    // default 500 ms per partition.
    set_default(&mut cfg, "fetch.wait.max.ms", "10");
    create(&cfg, ReaderContext)
}

/// The restore reader's context: reaching a partition's end is how a restore finishes, not an
/// error worth logging.
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
}

/// Whether a consumer error is the kind that passes: a broker unreachable or restarting, a
/// request timed out, a partition's leader moving. Anything else (an unknown topic, no
/// authorisation, a corrupt record) stays until someone acts on it.
pub fn is_transient(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Resolve
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NetworkException
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::BrokerNotAvailable
                | C::NotCoordinator
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
        )
    )
}

/// Logs a client error at ERROR, except reaching a partition's end, which the services and the
/// restore reader expect (`enable.partition.eof`).
fn log_client_error(error: KafkaError, reason: &str) {
    if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
        tracing::error!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for ReaderContext {}

/// Commits `offsets` (next offset to read per partition of `topic`) for the group, without
/// waiting: the services' own checkpoints say where to resume, the group offsets serve lag
/// monitoring and tools.
pub fn commit_async<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offsets: &[(i32, i64)],
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    if let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async) {
        tracing::debug!(error = %e, "group offset commit failed");
    }
}
