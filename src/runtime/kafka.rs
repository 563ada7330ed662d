//! Kafka plumbing shared by the scorer and the handoff: client configuration, topic setup, a
//! producer that reports delivery failures and the offsets of checkpoint records, and a consumer
//! context that hands partition assignment and revocation to the service that owns the state.

use crate::ops::telemetry::{self, PartitionGauges};
use crate::runtime::sync::lock_unpoisoned;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The largest record the services produce (and their dead-letter topics accept when they
/// create them): dead letters carry whatever the input topic accepted.
pub const MAX_RECORD_BYTES: &str = "16777216";

/// How far before a resume position the services start fetching, skipping what they already
/// hold. Kafka returns the whole record batch containing a requested offset; some
/// Kafka-compatible brokers (tansu 0.6) return only batches starting at or after it, silently
/// skipping the rest of the batch. Starting a batch's worth early (librdkafka's default
/// `batch.num.messages` is 10,000) makes the first batch returned contain the position.
pub const FETCH_REWIND: i64 = 10_000;

/// Where to start fetching to resume at `next` (see [`FETCH_REWIND`]).
pub fn rewound(next: i64, low: i64) -> i64 {
    next.saturating_sub(FETCH_REWIND).max(low).max(0)
}

/// How long setup calls (metadata, topic creation) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum KafkaSetupError {
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    #[error("cannot create topic {topic:?}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("topic {topic:?} has {found} partitions but {expected_from:?} has {expected}: they must be co-partitioned (same partition count); recreate {topic:?} or fix the topic settings")]
    PartitionMismatch {
        topic: String,
        found: i32,
        expected_from: String,
        expected: i32,
    },
    #[error("topic {0:?} does not exist after creation")]
    Missing(String),
}

/// The consumer group session timeout unless `[kafka]` sets `session.timeout.ms`: how long the
/// group waits for a member that stopped heartbeating (a `kill -9`, a lost node) before its
/// partitions move on. librdkafka's default, 45 s, is also how long a restarted instance waited
/// for its own partitions wherever the broker has no static membership (the dev-broker, where a
/// restart right after a kill can take two session timeouts). 6 s is the least every stock
/// broker accepts (Kafka's `group.min.session.timeout.ms`); the heartbeat goes with it
/// ([`HEARTBEAT_INTERVAL_MS`]). With static membership on Kafka a restart within the session
/// timeout does not wait at all, so a larger value there only buys tolerance of network pauses
/// at the price of slower failover. docs/brokers.md has the restart times.
pub const SESSION_TIMEOUT_MS: &str = "6000";

/// The heartbeat unless `[kafka]` sets `heartbeat.interval.ms`: a third of
/// [`SESSION_TIMEOUT_MS`], as Kafka recommends, so two lost heartbeats do not end the session.
pub const HEARTBEAT_INTERVAL_MS: &str = "2000";

/// Properties only a group member acts on: given to the group consumer alone, so the producer,
/// the admin client and the restore reader neither warn about them nor use them.
/// `group.instance.id` (static membership) names one member of one group.
const GROUP_MEMBER_PROPERTIES: &[&str] = &["group.instance.id"];

/// A client configuration from the `[kafka]` settings, passed through verbatim (but for the
/// [`GROUP_MEMBER_PROPERTIES`], which only [`group_consumer`] sets).
pub fn client_config(properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in properties {
        if !GROUP_MEMBER_PROPERTIES.contains(&k.as_str()) {
            c.set(k, v);
        }
    }
    c
}

/// What replaces a value that must not be shown.
pub const REDACTED: &str = "[redacted]";

/// Whether librdkafka knows the property `name`, as a client or a topic property: setting it
/// to an empty value on a scratch configuration fails as "unknown" only for a name librdkafka
/// does not have. (Reading it back cannot tell: an unset property reads as unknown too.)
pub fn is_known_property(name: &str) -> bool {
    use rdkafka::bindings as rd;
    // The one property whose setter acts (it loads plugins): known, and never set here.
    if name == "plugin.library.paths" {
        return true;
    }
    let (Ok(c_name), Ok(empty)) = (CString::new(name), CString::new("")) else {
        return false;
    };
    let mut errstr = [0 as std::os::raw::c_char; 512];
    // SAFETY: the configuration is created, used and destroyed here; errstr is a writable
    // buffer of the size given.
    unsafe {
        let conf = rd::rd_kafka_conf_new();
        let res = rd::rd_kafka_conf_set(
            conf,
            c_name.as_ptr(),
            empty.as_ptr(),
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rd::rd_kafka_conf_destroy(conf);
        res != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_UNKNOWN
    }
}

/// Whether the value of property `name` must never appear in an error or a log line: a
/// credential by its name (see [`crate::config::is_sensitive_kafka_property`]), or a property
/// librdkafka does not know, which is most often a misspelt one (`sasl.pasword`) holding a
/// credential all the same.
pub fn is_redacted_property(name: &str) -> bool {
    crate::config::is_sensitive_kafka_property(name) || !is_known_property(name)
}

/// `text` without `value`: quoted (as librdkafka quotes values) and, when long enough not to
/// garble the message, bare.
fn scrub(text: &str, value: &str) -> String {
    if value.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(&format!("\"{value}\""), &format!("\"{REDACTED}\""));
    if value.len() >= 4 {
        out = out.replace(value, REDACTED);
    }
    out
}

/// `error` from creating a client with `cfg`, without the value of any redacted property.
/// librdkafka's configuration errors quote the value (rdkafka's message appends it too), so a
/// typo in `LEADSCORE__KAFKA__SASL_PASWORD` would print the password.
pub fn redact_error(error: KafkaError, cfg: &ClientConfig) -> KafkaError {
    // (`config_map` hides a few known credentials itself: the values come from `get`.)
    let scrub_all = |text: &str| {
        cfg.config_map()
            .into_keys()
            .filter(|k| is_redacted_property(k))
            .filter_map(|k| cfg.get(k))
            .fold(text.to_string(), |t, v| scrub(&t, v))
    };
    match error {
        KafkaError::ClientConfig(res, desc, key, value) => {
            let hide = res == rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN
                || is_redacted_property(&key);
            let (desc, value) = if hide {
                (scrub(&desc, &value), REDACTED.to_string())
            } else {
                (desc, value)
            };
            KafkaError::ClientConfig(res, scrub_all(&desc), key, value)
        }
        KafkaError::ClientCreation(text) => KafkaError::ClientCreation(scrub_all(&text)),
        other => other,
    }
}

/// Creates a client from `cfg` with `context`; a failure never shows a redacted value.
fn create<C, T>(cfg: &ClientConfig, context: C) -> Result<T, KafkaError>
where
    C: ClientContext,
    T: rdkafka::config::FromClientConfigAndContext<C>,
{
    cfg.create_with_context(context)
        .map_err(|e| redact_error(e, cfg))
}

/// Sets `key` unless the user's properties already do.
fn set_default(cfg: &mut ClientConfig, key: &str, value: &str) {
    if cfg.get(key).is_none() {
        cfg.set(key, value);
    }
}

/// A topic the service needs, created when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Topic configs set at creation (e.g. `cleanup.policy=compact` for changelogs).
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn new(name: &str, partitions: i32, replication: i32) -> TopicSpec {
        TopicSpec {
            name: name.to_string(),
            partitions,
            replication,
            config: Vec::new(),
        }
    }

    /// A dead-letter topic: accepts records as large as the services produce.
    pub fn dead_letter(name: &str, partitions: i32, replication: i32) -> TopicSpec {
        let mut t = TopicSpec::new(name, partitions, replication);
        t.config
            .push(("max.message.bytes".into(), MAX_RECORD_BYTES.into()));
        t
    }

    /// A compacted changelog topic.
    pub fn compacted(name: &str, partitions: i32, replication: i32) -> TopicSpec {
        let mut t = TopicSpec::new(name, partitions, replication);
        t.config.push(("cleanup.policy".into(), "compact".into()));
        t
    }
}

/// Creates the missing topics and returns every topic's partition count.
pub async fn ensure_topics(
    properties: &BTreeMap<String, String>,
    specs: &[TopicSpec],
) -> Result<HashMap<String, i32>, KafkaSetupError> {
    let admin: Arc<AdminClient<DefaultClientContext>> =
        Arc::new(create(&client_config(properties), DefaultClientContext)?);
    let existing = partition_counts_off_worker(&admin, specs).await?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    if !missing.is_empty() {
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|s| {
                let mut t = NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication),
                );
                for (k, v) in &s.config {
                    t = t.set(k, v);
                }
                t
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(SETUP_TIMEOUT));
        for result in admin.create_topics(new.iter(), &opts).await? {
            match result {
                Ok(_) => tracing::info!(topic = %topic_of(&result), "created topic"),
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(%topic, "topic already exists")
                }
                Err((topic, code)) => {
                    return Err(KafkaSetupError::CreateTopic {
                        topic,
                        reason: code.to_string(),
                    })
                }
            }
        }
    }
    // Metadata can lag creation briefly.
    for _ in 0..50 {
        let counts = partition_counts_off_worker(&admin, specs).await?;
        if specs.iter().all(|s| counts.contains_key(&s.name)) {
            return Ok(counts);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = partition_counts_off_worker(&admin, specs).await?;
    match specs.iter().find(|s| !counts.contains_key(&s.name)) {
        Some(s) => Err(KafkaSetupError::Missing(s.name.clone())),
        None => Ok(counts),
    }
}

fn topic_of(r: &Result<String, (String, RDKafkaErrorCode)>) -> &str {
    match r {
        Ok(t) | Err((t, _)) => t,
    }
}

/// [`partition_counts`] on the blocking pool: a metadata request waits on the network.
async fn partition_counts_off_worker(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    specs: &[TopicSpec],
) -> Result<HashMap<String, i32>, KafkaSetupError> {
    let (admin, specs) = (admin.clone(), specs.to_vec());
    super::blocking::blocking(move || partition_counts(admin.inner(), &specs)).await
}

fn partition_counts<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    specs: &[TopicSpec],
) -> Result<HashMap<String, i32>, KafkaSetupError> {
    let md = client.fetch_metadata(None, SETUP_TIMEOUT)?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .filter(|t| specs.iter().any(|s| s.name == t.name()))
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// Checks that `topic` has as many partitions as `reference`.
pub fn check_copartitioned(
    counts: &HashMap<String, i32>,
    reference: &str,
    topic: &str,
) -> Result<i32, KafkaSetupError> {
    let expected = counts
        .get(reference)
        .copied()
        .ok_or_else(|| KafkaSetupError::Missing(reference.to_string()))?;
    let found = counts
        .get(topic)
        .copied()
        .ok_or_else(|| KafkaSetupError::Missing(topic.to_string()))?;
    if found != expected {
        return Err(KafkaSetupError::PartitionMismatch {
            topic: topic.to_string(),
            found,
            expected_from: reference.to_string(),
            expected,
        });
    }
    Ok(expected)
}

/// Delivery bookkeeping: failures since the last flush, and the offset of the last checkpoint
/// record delivered per changelog partition (the local store remembers it).
#[derive(Default)]
pub struct DeliveryTracker {
    failures: AtomicU64,
    first_failure: Mutex<Option<String>>,
    checkpoints: Mutex<HashMap<(String, i32), i64>>,
}

/// The delivery opaque: whether a record is a checkpoint whose offset must be remembered.
pub type IsCheckpoint = usize;

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = IsCheckpoint;

    fn delivery(&self, result: &DeliveryResult<'_>, is_checkpoint: IsCheckpoint) {
        match result {
            Ok(m) => {
                if is_checkpoint == 1 {
                    if let Ok(mut c) = self.checkpoints.lock() {
                        c.insert((m.topic().to_string(), m.partition()), m.offset());
                    }
                }
            }
            Err((e, m)) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_failure.lock() {
                    first.get_or_insert_with(|| {
                        format!("delivery to {} [{}] failed: {e}", m.topic(), m.partition())
                    });
                }
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum ProduceError {
    #[error("kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{count} record(s) were not delivered; first: {first}")]
    Undelivered { count: u64, first: String },
}

/// One record to produce.
pub struct Record<'a> {
    pub topic: &'a str,
    /// `None`: the configured partitioner picks by key.
    pub partition: Option<i32>,
    pub key: &'a [u8],
    /// `None` is a tombstone.
    pub payload: Option<&'a [u8]>,
    pub headers: Option<OwnedHeaders>,
}

/// The services' producer: idempotent (at-least-once) or transactional (exactly-once).
pub struct ServiceProducer {
    inner: ThreadedProducer<DeliveryTracker>,
    tracker: Arc<DeliveryTracker>,
    transactional: bool,
}

impl ServiceProducer {
    /// An idempotent producer; with `transactional_id`, a transactional one (transactions
    /// initialized).
    pub fn new(
        properties: &BTreeMap<String, String>,
        transactional_id: Option<&str>,
    ) -> Result<ServiceProducer, KafkaError> {
        let mut cfg = client_config(properties);
        cfg.set("enable.idempotence", "true");
        cfg.set("partitioner", "murmur2_random");
        set_default(&mut cfg, "linger.ms", "5");
        // Dead letters carry the original record, however large the input allowed it to be.
        set_default(&mut cfg, "message.max.bytes", MAX_RECORD_BYTES);
        set_default(&mut cfg, "compression.type", "lz4");
        if let Some(id) = transactional_id {
            cfg.set("transactional.id", id);
        }
        let inner: ThreadedProducer<DeliveryTracker> = create(&cfg, DeliveryTracker::default())?;
        let tracker = inner.context().clone();
        if transactional_id.is_some() {
            inner.init_transactions(SETUP_TIMEOUT)?;
        }
        Ok(ServiceProducer {
            inner,
            tracker,
            transactional: transactional_id.is_some(),
        })
    }

    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    pub fn inner(&self) -> &ThreadedProducer<DeliveryTracker> {
        &self.inner
    }

    /// Queues a record, waiting while the local queue is full.
    pub fn send(&self, r: Record<'_>, is_checkpoint: bool) -> Result<(), ProduceError> {
        let mut rec: BaseRecord<'_, [u8], [u8], IsCheckpoint> =
            BaseRecord::with_opaque_to(r.topic, is_checkpoint as usize).key(r.key);
        if let Some(p) = r.payload {
            rec = rec.payload(p);
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if let Some(h) = r.headers {
            rec = rec.headers(h);
        }
        loop {
            match self.inner.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits until every queued record is delivered; an error if any was not since the last
    /// call. (In a transaction, commit does this.)
    pub fn flush(&self) -> Result<(), ProduceError> {
        // rdkafka's flush on a ThreadedProducer waits in steps of about 100 ms (its background
        // thread takes the delivery reports), which dominated every checkpoint: ask librdkafka
        // to send now, then watch the in-flight count.
        self.inner.flush(Duration::ZERO).or_else(|e| match e {
            KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => Ok(()),
            e => Err(e),
        })?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.inner.in_flight_count() > 0 {
            if std::time::Instant::now() > deadline {
                return Err(ProduceError::Kafka(KafkaError::Flush(
                    RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        self.take_failures()
    }

    /// Returns and clears the delivery failures recorded so far.
    pub fn take_failures(&self) -> Result<(), ProduceError> {
        let count = self.tracker.failures.swap(0, Ordering::Relaxed);
        let first = self
            .tracker
            .first_failure
            .lock()
            .ok()
            .and_then(|mut f| f.take());
        if count > 0 {
            return Err(ProduceError::Undelivered {
                count,
                first: first.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// The offset of the last checkpoint record delivered to `topic` `partition`.
    pub fn checkpoint_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.tracker
            .checkpoints
            .lock()
            .ok()
            .and_then(|c| c.get(&(topic.to_string(), partition)).copied())
    }
}

/// Where a record came from: topic, partition, offset.
pub type Source<'a> = (&'a str, i32, i64);

/// The headers of a dead letter, the same in every service's dead-letter topic:
/// `leadscore.error.reason` (a short code), `leadscore.error.message`, and where the record
/// came from (`leadscore.source.topic`, `.partition`, `.offset`) when it came from Kafka.
pub fn dead_letter_headers(
    reason: &str,
    message: &str,
    source: Option<Source<'_>>,
) -> OwnedHeaders {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "leadscore.error.reason",
            value: Some(reason),
        })
        .insert(Header {
            key: "leadscore.error.message",
            value: Some(message),
        });
    let Some((topic, partition, offset)) = source else {
        return headers;
    };
    headers
        .insert(Header {
            key: "leadscore.source.topic",
            value: Some(topic),
        })
        .insert(Header {
            key: "leadscore.source.partition",
            value: Some(&partition.to_string()),
        })
        .insert(Header {
            key: "leadscore.source.offset",
            value: Some(&offset.to_string()),
        })
}

/// What a service does when partitions come and go. Called on the consumer's polling thread,
/// inside `poll`, so the service's own processing is never running at the same time.
pub trait PartitionOwner: Send + Sync + Sized + 'static {
    /// Restores the partitions' state; returns, per partition, where to resume consuming
    /// (`Offset::Stored` to use the group's committed offset).
    fn assigned(&self, consumer: &ServiceConsumer<Self>, partitions: &[i32]) -> Vec<(i32, Offset)>;
    /// Makes everything processed so far on these partitions durable, then drops them.
    fn revoked(&self, consumer: &ServiceConsumer<Self>, partitions: &[i32]);
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
}

impl<O: PartitionOwner> OwnerContext<O> {
    fn owned(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        lock_unpoisoned(&self.owned)
    }
}

pub type ServiceConsumer<O> = BaseConsumer<OwnerContext<O>>;

impl<O: PartitionOwner> ClientContext for OwnerContext<O> {
    /// Consumer lag of the owned partitions, every `statistics.interval.ms`.
    fn stats(&self, stats: rdkafka::statistics::Statistics) {
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
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
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
                self.owner.revoked(consumer, &partitions);
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
    let mut cfg = client_config(properties);
    for key in GROUP_MEMBER_PROPERTIES {
        if let Some(v) = properties.get(*key) {
            cfg.set(*key, v);
        }
    }
    cfg.set("group.id", group_id);
    set_default(&mut cfg, "session.timeout.ms", SESSION_TIMEOUT_MS);
    set_default(&mut cfg, "heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS);
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.auto.offset.store", "false");
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
    let mut cfg = client_config(properties);
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
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(error = %error, reason, "kafka client error");
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::BaseProducer;

    fn create(props: &[(&str, &str)]) -> Result<BaseProducer, KafkaError> {
        let props: BTreeMap<String, String> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        client_config(&props).create()
    }

    fn redacted_create(props: &[(&str, &str)]) -> Result<BaseProducer, KafkaError> {
        let props: BTreeMap<String, String> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        super::create(
            &client_config(&props),
            rdkafka::producer::DefaultProducerContext,
        )
    }

    #[test]
    fn credentials_and_unknown_properties_are_redacted_known_ones_are_not() {
        for name in [
            "sasl.password",
            "SASL.PASSWORD",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.token.endpoint.url",
            "sasl.oauthbearer.config",
            "sasl.pasword",
            "no.such.property",
        ] {
            assert!(is_redacted_property(name), "{name}");
        }
        for name in [
            "bootstrap.servers",
            "session.timeout.ms",
            "security.protocol",
            "sasl.username",
            // Topic-level properties are known too.
            "auto.offset.reset",
            "acks",
        ] {
            assert!(!is_redacted_property(name), "{name}");
        }
    }

    #[test]
    fn a_misspelt_password_is_named_but_its_value_is_not_shown() {
        let e = redacted_create(&[
            ("bootstrap.servers", "127.0.0.1:1"),
            ("sasl.pasword", "hunter2-typo"),
        ])
        .err()
        .expect("an unknown property fails");
        let text = format!("{e} {e:?}");
        assert!(text.contains("sasl.pasword"), "{text}");
        assert!(!text.contains("hunter2-typo"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
        // Unredacted, rdkafka shows it: what this guards against.
        let raw = create(&[("sasl.pasword", "hunter2-typo")])
            .err()
            .expect("fails");
        assert!(raw.to_string().contains("hunter2-typo"), "{raw}");
    }

    #[test]
    fn an_invalid_value_of_an_ordinary_property_is_shown() {
        let e = redacted_create(&[("session.timeout.ms", "soon")])
            .err()
            .expect("an invalid value fails");
        assert!(e.to_string().contains("soon"), "{e}");
    }

    #[test]
    fn creation_errors_lose_every_redacted_value() {
        let mut cfg = ClientConfig::new();
        cfg.set("sasl.password", "p4ssw0rd-value");
        cfg.set("bootstrap.servers", "broker-1:9092");
        let e = redact_error(
            KafkaError::ClientCreation("cannot use \"p4ssw0rd-value\" with broker-1:9092".into()),
            &cfg,
        );
        let text = e.to_string();
        assert!(!text.contains("p4ssw0rd-value"), "{text}");
        assert!(text.contains("broker-1:9092"), "{text}");
    }

    #[test]
    fn the_instance_id_goes_to_the_group_consumer_only() {
        let props: BTreeMap<String, String> = [
            ("bootstrap.servers", "127.0.0.1:1"),
            ("group.instance.id", "scorer-0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(client_config(&props).get("group.instance.id"), None);
        assert_eq!(
            client_config(&props).get("bootstrap.servers"),
            Some("127.0.0.1:1")
        );
    }

    /// librdkafka refuses, when the client is created, security settings it was built without:
    /// these are the ones a managed Kafka asks for.
    #[test]
    fn clients_accept_tls_and_the_sasl_mechanisms_managed_kafkas_use() {
        for (protocol, mechanism) in [
            ("ssl", None),
            ("sasl_ssl", Some("PLAIN")),
            ("sasl_ssl", Some("SCRAM-SHA-512")),
            ("sasl_ssl", Some("OAUTHBEARER")),
        ] {
            let mut props = vec![
                ("bootstrap.servers", "127.0.0.1:1"),
                ("security.protocol", protocol),
            ];
            if let Some(m) = mechanism {
                props.extend([
                    ("sasl.mechanism", m),
                    ("sasl.username", "u"),
                    ("sasl.password", "p"),
                ]);
                if m == "OAUTHBEARER" {
                    props.retain(|(k, _)| !k.starts_with("sasl.user") && *k != "sasl.password");
                    props.push(("enable.sasl.oauthbearer.unsecure.jwt", "true"));
                }
            }
            if let Err(e) = create(&props) {
                panic!("{protocol} {mechanism:?}: {e}");
            }
        }
        // Kerberos needs Cyrus SASL, which this build leaves out.
        let gssapi = create(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanism", "GSSAPI"),
        ]);
        assert!(gssapi.is_err(), "GSSAPI is not built in");
    }
}
