//! The services' producer: idempotent or transactional, delivery failures and checkpoint offsets tracked; dead-letter headers.

#[allow(unused_imports)]
use super::*;
use rdkafka::util::IntoOpaque;
use std::ffi::c_void;

/// How many delivery epochs can have records in flight at once (see [`Epoch`]).
pub(super) const EPOCH_SLOTS: usize = 4;

/// Delivery bookkeeping: failures since the last flush, the offset of the last checkpoint
/// record delivered per changelog partition (the local store remembers it), and how many
/// records of each recent epoch are still undelivered.
#[derive(Default)]
pub struct DeliveryTracker {
    failures: AtomicU64,
    first_failure: Mutex<Option<String>>,
    checkpoints: Mutex<HashMap<(String, i32), i64>>,
    /// The epoch records are sent in now.
    epoch: AtomicU64,
    /// Records sent and not yet reported, per epoch slot (`epoch % EPOCH_SLOTS`).
    undelivered: [AtomicU64; EPOCH_SLOTS],
}

/// A span of sends: every record sent between two [`ServiceProducer::seal`] calls. Sealing
/// one lets a service wait for exactly what it sent before (a checkpoint's outputs) while it
/// goes on sending the next batch's, which a flush (waiting for every record in flight) cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch(u64);

/// What a produced record is, carried to its delivery report (the delivery opaque): a
/// checkpoint record's offset must be remembered, other records only count when they fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A score change, dead letter, outcome, re-routed input or state record.
    Output = 0,
    /// A partition's checkpoint record in a changelog.
    Checkpoint = 1,
}

/// The delivery opaque: the record's kind and its epoch's slot, packed into the pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    kind: Delivery,
    slot: usize,
}

impl IntoOpaque for Sent {
    fn into_ptr(self) -> *mut c_void {
        (self.kind as usize | (self.slot << 1)) as *mut c_void
    }

    unsafe fn from_ptr(ptr: *mut c_void) -> Self {
        // Only `into_ptr` above made the pointer: a kind bit and a slot.
        let bits = ptr as usize;
        Sent {
            kind: if bits & 1 == Delivery::Checkpoint as usize {
                Delivery::Checkpoint
            } else {
                Delivery::Output
            },
            slot: (bits >> 1) % EPOCH_SLOTS,
        }
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = Sent;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Sent) {
        let kind = sent.kind;
        // Counted down after the outcome is recorded: a waiter that sees its epoch delivered
        // sees its failures and checkpoint offsets too.
        let _done = CountDown(&self.undelivered[sent.slot]);
        match result {
            Ok(m) => {
                if kind == Delivery::Checkpoint {
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

/// Counts one delivery report of a slot when dropped.
struct CountDown<'a>(&'a AtomicU64);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
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
    /// `None`: a record without a key (a dead letter of a keyless record keeps it so).
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone.
    pub payload: Option<&'a [u8]>,
    pub headers: Option<OwnedHeaders>,
}

/// The compression of every record the services produce unless `[kafka.producer]` (or
/// `[kafka]`) sets `compression.codec` / `compression.type`. gzip is the one codec every
/// mainstream client decodes with nothing but its own package: aiokafka and kafka-python need
/// the `lz4`, `zstandard` or `python-snappy` packages for the others, kafkajs ships only gzip
/// (the others are plug-ins), and Kafka's Java client and librdkafka read all of them.
/// docs/formats.md, "Compression", has the trade-off.
pub const DEFAULT_COMPRESSION: &str = "gzip";

/// The two names librdkafka gives the producer's codec (aliases: setting both leaves which one
/// wins to the order they are applied in).
const COMPRESSION_PROPERTIES: [&str; 2] = ["compression.codec", "compression.type"];

/// The services' producer configuration: the shared properties and `[kafka.producer]` (see
/// [`role_properties`]), idempotence and Kafka's partitioner forced, and defaults for what the
/// user did not set.
pub fn producer_config(properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = role_config(properties, KafkaRole::Producer);
    cfg.set("enable.idempotence", "true");
    cfg.set("partitioner", "murmur2_random");
    set_default(&mut cfg, "linger.ms", "5");
    // Dead letters carry the original record, however large the input allowed it to be.
    set_default(&mut cfg, "message.max.bytes", MAX_RECORD_BYTES);
    if COMPRESSION_PROPERTIES.iter().all(|k| cfg.get(k).is_none()) {
        cfg.set("compression.codec", DEFAULT_COMPRESSION);
    }
    cfg
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
        let mut cfg = producer_config(properties);
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

    /// Queues a record, waiting while the local queue is full. Its record timestamp is the
    /// produce time.
    pub fn send(&self, r: Record<'_>, kind: Delivery) -> Result<(), ProduceError> {
        self.send_at(r, None, kind)
    }

    /// [`ServiceProducer::send`] with the record timestamp `timestamp` (epoch milliseconds, see
    /// [`record_timestamp`]); `None` is the produce time.
    pub fn send_at(
        &self,
        r: Record<'_>,
        timestamp: Option<i64>,
        kind: Delivery,
    ) -> Result<(), ProduceError> {
        let slot = (self.tracker.epoch.load(Ordering::Acquire) % EPOCH_SLOTS as u64) as usize;
        let mut rec: BaseRecord<'_, [u8], [u8], Sent> =
            BaseRecord::with_opaque_to(r.topic, Sent { kind, slot });
        if let Some(k) = r.key {
            rec = rec.key(k);
        }
        if let Some(p) = r.payload {
            rec = rec.payload(p);
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if let Some(h) = r.headers {
            rec = rec.headers(h);
        }
        if let Some(t) = timestamp {
            rec = rec.timestamp(t);
        }
        let undelivered = &self.tracker.undelivered[slot];
        undelivered.fetch_add(1, Ordering::AcqRel);
        loop {
            match self.inner.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    // Not queued: no report will come.
                    undelivered.fetch_sub(1, Ordering::AcqRel);
                    return Err(e.into());
                }
            }
        }
    }

    /// Ends the current epoch and returns it: records sent from now on belong to the next.
    /// Sends and seals that must be ordered (a checkpoint's outputs before it is sealed) come
    /// from one thread, the service's. At most [`EPOCH_SLOTS`] epochs are in flight: sealing
    /// first waits for the oldest slot to empty (it long has, when each checkpoint waits for
    /// its epochs before the next begins).
    pub fn seal(&self) -> Result<Epoch, ProduceError> {
        let sealed = self.tracker.epoch.load(Ordering::Acquire);
        let reused = ((sealed + 1) % EPOCH_SLOTS as u64) as usize;
        self.wait_until(|| self.tracker.undelivered[reused].load(Ordering::Acquire) == 0)?;
        self.tracker.epoch.store(sealed + 1, Ordering::Release);
        Ok(Epoch(sealed))
    }

    /// Whether every record sent in `epoch` and the epochs before it has been reported: then
    /// `Ok(true)`, or the delivery failures since the last check. With `wait`, waits for that
    /// (asking librdkafka to send at once), else answers at once.
    pub fn delivered(&self, epoch: Epoch, wait: bool) -> Result<bool, ProduceError> {
        let done = || {
            // The epochs still live up to `epoch`: older ones emptied before their slot was
            // reused (`seal`).
            let current = self.tracker.epoch.load(Ordering::Acquire);
            let oldest = current.saturating_sub(EPOCH_SLOTS as u64 - 1);
            (oldest..=epoch.0.min(current)).all(|e| {
                self.tracker.undelivered[(e % EPOCH_SLOTS as u64) as usize].load(Ordering::Acquire)
                    == 0
            })
        };
        if !done() {
            if !wait {
                return Ok(false);
            }
            self.send_now()?;
            self.wait_until(done)?;
        }
        self.take_failures()?;
        Ok(true)
    }

    /// Asks librdkafka to send what it holds now instead of after `linger.ms`.
    fn send_now(&self) -> Result<(), ProduceError> {
        // rdkafka's flush on a ThreadedProducer waits in steps of about 100 ms (its background
        // thread takes the delivery reports): a zero timeout only wakes the broker threads.
        self.inner.flush(Duration::ZERO).or_else(|e| match e {
            KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => Ok(()),
            e => Err(e),
        })?;
        Ok(())
    }

    /// Polls `done` every 200 µs for up to a minute.
    fn wait_until(&self, done: impl Fn() -> bool) -> Result<(), ProduceError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            if std::time::Instant::now() > deadline {
                return Err(ProduceError::Kafka(KafkaError::Flush(
                    RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    /// Waits until every queued record is delivered; an error if any was not since the last
    /// call. (In a transaction, commit does this.)
    pub fn flush(&self) -> Result<(), ProduceError> {
        // rdkafka's own flush waits in steps of about 100 ms, which dominated every
        // checkpoint: ask librdkafka to send now, then watch the in-flight count.
        self.send_now()?;
        self.wait_until(|| self.inner.in_flight_count() == 0)?;
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

// ---------------------------------------------------------------------------------------------
// Output record conventions (docs/formats.md)
// ---------------------------------------------------------------------------------------------

/// The header naming the format of an output record's value, so a consumer of a topic whose
/// format changed (a deployment moved from JSON to protobuf) can tell the records apart.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// The `content-type` of a JSON value.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The `content-type` of a protobuf `leadscore.v1.ScoreChange`: `application/x-protobuf`
/// with a `messageType` parameter naming the fully qualified message, the common convention
/// for protobuf over HTTP and messaging, so a reader knows which message to decode.
pub const SCORE_CHANGE_PROTOBUF_CONTENT_TYPE: &str =
    "application/x-protobuf; messageType=leadscore.v1.ScoreChange";

/// The `content-type` of a score change written in `format`.
pub fn score_change_content_type(format: crate::codec::Format) -> &'static str {
    match format {
        crate::codec::Format::Json => JSON_CONTENT_TYPE,
        crate::codec::Format::Protobuf => SCORE_CHANGE_PROTOBUF_CONTENT_TYPE,
    }
}

/// Headers holding only a `content-type`.
pub fn content_type_headers(content_type: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header {
        key: CONTENT_TYPE_HEADER,
        value: Some(content_type),
    })
}

/// The record timestamp of an output record about something that happened at `event_time`,
/// with the wall clock at `now` (both epoch milliseconds): the event time, as Kafka Streams
/// stamps its outputs, so time-based tools (retention, `offsetsForTimes`, windowed joins
/// downstream) see when the change happened rather than when it was published.
///
/// Two exceptions, where the broker or the clients would refuse or misread the event time, get
/// `None` (the produce time) or `now`:
/// - at or before the epoch: librdkafka reads 0 as "now" and Kafka's clients reject negative
///   timestamps;
/// - after `now`: Kafka 4 brokers reject a record more than `message.timestamp.after.max.ms`
///   (1 h by default) ahead, and an event may be dated up to `scorer.max_future_skew` ahead, so
///   the timestamp is capped at `now`. A failed delivery would stop the scorer.
pub fn record_timestamp(event_time: i64, now: i64) -> Option<i64> {
    (event_time > 0).then(|| event_time.min(now.max(1)))
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

#[cfg(test)]
mod output_conventions {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn record_timestamps_are_event_times_within_what_brokers_accept() {
        let now = 1_767_607_260_000;
        assert_eq!(
            record_timestamp(now - 86_400_000, now),
            Some(now - 86_400_000)
        );
        assert_eq!(record_timestamp(now, now), Some(now));
        // Ahead of the wall clock (within scorer.max_future_skew): capped, so a broker's
        // message.timestamp.after.max.ms cannot refuse it.
        assert_eq!(record_timestamp(now + 3_000_000, now), Some(now));
        // The epoch and before: librdkafka reads 0 as "now", Kafka's clients reject negatives.
        assert_eq!(record_timestamp(0, now), None);
        assert_eq!(record_timestamp(-1, now), None);
    }

    #[test]
    fn score_changes_name_their_format_in_the_content_type() {
        use crate::codec::Format;
        assert_eq!(score_change_content_type(Format::Json), "application/json");
        assert_eq!(
            score_change_content_type(Format::Protobuf),
            "application/x-protobuf; messageType=leadscore.v1.ScoreChange"
        );
        let headers = content_type_headers(JSON_CONTENT_TYPE);
        let h = headers.get(0);
        assert_eq!(
            (h.key, h.value),
            ("content-type", Some(&b"application/json"[..]))
        );
    }
}
