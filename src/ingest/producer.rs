//! Input events to Kafka, keyed by user, each to its user's home partition (murmur2, computed
//! here as the scorer does), through an idempotent producer; a batch is done only when Kafka
//! has acknowledged every record. Shared by `leadscore ingest` and `leadscore warehouse import`.

use crate::codec::{encode_event, Format};
use crate::config::{KafkaRole, Settings};
use crate::event::Event;
use crate::partitioner::partition_for;
use crate::runtime::kafka::{
    ensure_topics, redact_error, role_properties, KafkaSetupError, TopicSpec,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::time::Duration;

/// Why a batch was not acknowledged. The caller may retry it: event ids make a retry a
/// duplicate to the scorer.
#[derive(Debug, thiserror::Error)]
pub enum ProduceFailure {
    #[error("kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{failed} of {total} record(s) were not delivered; first: {first}")]
    Undelivered {
        failed: usize,
        total: usize,
        first: String,
    },
    #[error("Kafka did not acknowledge every record within {0:?}")]
    TimedOut(Duration),
}

/// The input topic's producer. A clone shares the Kafka client.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer,
    topic: String,
    partitions: i32,
    format: Format,
}

impl EventProducer {
    /// An idempotent producer for the input topic, in its format (created when missing, with
    /// `topics.partitions` and `topics.replication_factor`, like the scorer does); its partition
    /// count is read once, here: the scorer refuses to run on an input topic whose count changed
    /// under it anyway.
    pub async fn start(
        settings: &Settings,
        delivery_timeout: Duration,
    ) -> Result<EventProducer, KafkaSetupError> {
        let (properties, topics) = (&settings.kafka.properties, &settings.topics);
        let topic = topics.input.as_str();
        let spec = TopicSpec::new(topic, topics.partitions, topics.replication_factor);
        let counts = ensure_topics(properties, &[spec]).await?;
        let partitions = counts
            .get(topic)
            .copied()
            .ok_or_else(|| KafkaSetupError::Missing(topic.to_string()))?;
        // The shared `[kafka]` properties and `[kafka.producer]`, as the services' producers.
        let mut cfg = rdkafka::ClientConfig::new();
        for (key, value) in role_properties(properties, KafkaRole::Producer) {
            if key != "group.instance.id" {
                cfg.set(key, value);
            }
        }
        cfg.set("enable.idempotence", "true");
        // Only a fallback: every record names its partition.
        cfg.set("partitioner", "murmur2_random");
        if cfg.get("linger.ms").is_none() {
            cfg.set("linger.ms", "5");
        }
        if cfg.get("message.timeout.ms").is_none() {
            // A record still queued when its request gives up fails instead of waiting on.
            // This cannot take back a record the broker already has (sent, its answer not yet
            // in): such a record can still be written after the caller got its 503, which
            // therefore says the events may be stored (docs/ingest.md, "Answers").
            cfg.set(
                "message.timeout.ms",
                delivery_timeout.as_millis().max(1).to_string(),
            );
        }
        let producer: FutureProducer = cfg.create().map_err(|e| redact_error(e, &cfg))?;
        Ok(EventProducer {
            producer,
            topic: topic.to_string(),
            partitions,
            format: settings.scorer.input_format,
        })
    }

    /// The input topic's partition count.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Produces `events` in order and waits for every delivery report, at most `timeout`.
    pub async fn produce_all(
        &self,
        events: &[Event],
        timeout: Duration,
    ) -> Result<(), ProduceFailure> {
        let sent = async { EventProducer::delivered(self.send_all(events).await?).await };
        tokio::time::timeout(timeout, sent)
            .await
            .unwrap_or(Err(ProduceFailure::TimedOut(timeout)))
    }

    /// Hands `events` to the Kafka client in order (waiting while its queue is full) and
    /// returns their delivery reports, to wait for with [`EventProducer::delivered`]. Once
    /// sent, the client holds each record (its own copy) until its report: delivered, or failed
    /// after `message.timeout.ms` at the latest, whether or not anyone still waits for it.
    pub async fn send_all(&self, events: &[Event]) -> Result<Vec<DeliveryFuture>, ProduceFailure> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(events.len());
        for event in events {
            let payload = encode_event(self.format, event);
            let key = event.user_id.as_bytes();
            let partition = partition_for(key, self.partitions);
            let mut record = FutureRecord::to(&self.topic)
                .key(key)
                .payload(&payload)
                .partition(partition);
            loop {
                match self.producer.send_result(record) {
                    Ok(future) => {
                        pending.push(future);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        // The records sent before are the Kafka client's until their reports
                        // come: whoever holds room for them holds it until then.
                        let _ = EventProducer::delivered(pending).await;
                        return Err(ProduceFailure::Kafka(e));
                    }
                }
            }
        }
        Ok(pending)
    }

    /// Waits for every delivery report of `pending`, however long that takes (the Kafka client
    /// gives each by `message.timeout.ms`): `Ok` when every record was acknowledged.
    pub async fn delivered(pending: Vec<DeliveryFuture>) -> Result<(), ProduceFailure> {
        let total = pending.len();
        let mut failed = 0;
        let mut first = None;
        for future in pending {
            let error = match future.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "the producer was closed".to_string(),
            };
            failed += 1;
            first.get_or_insert(error);
        }
        match first {
            None => Ok(()),
            Some(first) => Err(ProduceFailure::Undelivered {
                failed,
                total,
                first,
            }),
        }
    }
}
