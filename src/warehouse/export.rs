//! `leadscore warehouse export`: score changes into two warehouse tables.
//!
//! - `changes_table` (default `lead_score_changes`): one row per change, primary key the
//!   change's `event_id`, inserted with `ON CONFLICT DO NOTHING`, so a change consumed twice (a
//!   replay after a crash, a scorer's re-publication) is written once.
//! - `scores_table` (default `lead_scores`): one row per lead, its current score, status and
//!   tracked attributes, updated by each change that was new to the history table. Changes of a
//!   user come in order (one partition), so the row holds the latest.
//!
//! A batch of changes is written in one transaction, and the consumer offsets are committed
//! only after it: a crash in between replays the batch, which writes nothing twice. The tables
//! are created when missing (`CREATE TABLE IF NOT EXISTS`); docs/ingest.md has their columns.

use super::db::{self, DbError};
use super::from_millis;
use crate::change::ScoreChange;
use crate::codec::{decode_change, Format};
use crate::config::{quote_identifier, Settings, WarehouseSettings};
use crate::ops::admin::Health;
use crate::ops::telemetry;
use crate::runtime::kafka::{
    consumer_config, redact_error, HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS,
};
use crate::runtime::shutdown::Shutdown;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// How long a batch waits for more changes before it is written.
const LINGER: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
}

/// The table definitions and statements, from the settings' (already checked) names.
struct Sql {
    schema: String,
    insert_change: String,
    upsert_score: String,
}

impl Sql {
    fn new(w: &WarehouseSettings) -> Sql {
        let scores = quote_identifier(&w.scores_table).unwrap_or_default();
        let changes = quote_identifier(&w.changes_table).unwrap_or_default();
        // The index lives in the table's schema; its name is the table's with a suffix.
        let table_name = w.changes_table.rsplit('.').next().unwrap_or_default();
        let index = quote_identifier(&format!("{table_name}_user_time"))
            .unwrap_or_else(|| "\"leadscore_changes_user_time\"".to_string());
        Sql {
            schema: format!(
                "CREATE TABLE IF NOT EXISTS {changes} (
                    event_id text PRIMARY KEY,
                    user_id text NOT NULL,
                    time timestamptz NOT NULL,
                    previous_score bigint NOT NULL,
                    score bigint NOT NULL,
                    delta bigint NOT NULL,
                    reason_kind text NOT NULL,
                    reason_group text,
                    source_event_id text,
                    windows integer NOT NULL,
                    attributes jsonb NOT NULL,
                    kafka_partition integer NOT NULL,
                    kafka_offset bigint NOT NULL,
                    exported_at timestamptz NOT NULL DEFAULT now()
                );
                CREATE INDEX IF NOT EXISTS {changes_index} ON {changes} (user_id, time);
                CREATE TABLE IF NOT EXISTS {scores} (
                    user_id text PRIMARY KEY,
                    score bigint NOT NULL,
                    lead_status text,
                    attributes jsonb NOT NULL,
                    last_change_event_id text NOT NULL,
                    last_change_time timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now()
                );",
                changes_index = index,
            ),
            insert_change: format!(
                "INSERT INTO {changes} (event_id, user_id, time, previous_score, score, delta, \
                 reason_kind, reason_group, source_event_id, windows, attributes, \
                 kafka_partition, kafka_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12, $13) \
                 ON CONFLICT (event_id) DO NOTHING"
            ),
            upsert_score: format!(
                "INSERT INTO {scores} (user_id, score, lead_status, attributes, \
                 last_change_event_id, last_change_time) \
                 VALUES ($1, $2, $3, $4::text::jsonb, $5, $6) \
                 ON CONFLICT (user_id) DO UPDATE SET score = EXCLUDED.score, \
                 lead_status = EXCLUDED.lead_status, attributes = EXCLUDED.attributes, \
                 last_change_event_id = EXCLUDED.last_change_event_id, \
                 last_change_time = EXCLUDED.last_change_time, updated_at = now()"
            ),
        }
    }
}

/// One consumed change with where it came from.
struct Consumed {
    change: ScoreChange,
    partition: i32,
    offset: i64,
}

/// The export loop.
pub struct Exporter {
    client: Client,
    consumer: StreamConsumer,
    sql: Sql,
    settings: Settings,
    health: Arc<Health>,
}

impl Exporter {
    /// Connects to the warehouse (creating the tables) and joins the export group.
    pub async fn start(settings: Settings, health: Arc<Health>) -> Result<Exporter, ExportError> {
        telemetry::register_at_zero(telemetry::Owner::Warehouse);
        let sql = Sql::new(&settings.warehouse);
        let client = db::connect_and_create(&settings.warehouse, &sql.schema).await?;
        // The shared `[kafka]` properties and `[kafka.consumer]`.
        let mut cfg = consumer_config(&settings.kafka.properties);
        cfg.set("group.id", &settings.warehouse.export_group_id);
        for (key, value) in [
            ("session.timeout.ms", SESSION_TIMEOUT_MS),
            ("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS),
            ("auto.offset.reset", "earliest"),
        ] {
            if cfg.get(key).is_none() {
                cfg.set(key, value);
            }
        }
        cfg.set("enable.auto.commit", "false");
        // Changes of an exactly-once scorer count once committed.
        cfg.set("isolation.level", "read_committed");
        let consumer: StreamConsumer = cfg.create().map_err(|e| redact_error(e, &cfg))?;
        consumer.subscribe(&[&settings.topics.output])?;
        Ok(Exporter {
            client,
            consumer,
            sql,
            settings,
            health,
        })
    }

    /// Consumes until shutdown: batches of changes, each written in one transaction, then its
    /// offsets committed.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), ExportError> {
        self.health.set_consuming(true);
        self.health.joined();
        let format = self.settings.scorer.output_format;
        let max = self.settings.warehouse.export_batch;
        let topic = self.settings.topics.output.clone();
        while !shutdown.is_triggered() {
            let mut batch: Vec<Consumed> = Vec::new();
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
            // The first record may wait as long as it takes; the rest of a batch, LINGER.
            loop {
                let wait = if batch.is_empty() && next.is_empty() {
                    Duration::from_secs(1)
                } else {
                    LINGER
                };
                let message = tokio::select! {
                    m = tokio::time::timeout(wait, self.consumer.recv()) => m,
                    _ = shutdown.wait() => break,
                };
                let message = match message {
                    Err(_) if batch.is_empty() && next.is_empty() => continue,
                    Err(_) => break,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "score changes consumer");
                        continue;
                    }
                    Ok(Ok(m)) => m,
                };
                let (partition, offset) = (message.partition(), message.offset());
                next.insert(partition, offset + 1);
                match decode(format, message.payload()) {
                    Ok(change) => batch.push(Consumed {
                        change,
                        partition,
                        offset,
                    }),
                    Err(reason) => {
                        tracing::warn!(partition, offset, %reason, "score change passed over");
                        metrics::counter!(telemetry::WAREHOUSE_CHANGES_SKIPPED).increment(1);
                    }
                }
                if batch.len() >= max {
                    break;
                }
            }
            if next.is_empty() {
                continue;
            }
            self.write(&batch).await?;
            let mut offsets = TopicPartitionList::new();
            for (partition, offset) in &next {
                offsets.add_partition_offset(&topic, *partition, Offset::Offset(*offset))?;
            }
            // After a rebalance took a partition away, its commit fails: the new owner replays
            // from the last commit, and the history's primary key absorbs the replay.
            if let Err(e) = self.consumer.commit(&offsets, CommitMode::Sync) {
                tracing::warn!(error = %e, "committing export offsets failed; the batch will be replayed");
            }
        }
        Ok(())
    }

    /// Writes `batch` in one transaction.
    async fn write(&mut self, batch: &[Consumed]) -> Result<(), ExportError> {
        let tx = self.client.transaction().await.map_err(DbError::Sql)?;
        let insert = tx
            .prepare(&self.sql.insert_change)
            .await
            .map_err(DbError::Sql)?;
        let upsert = tx
            .prepare(&self.sql.upsert_score)
            .await
            .map_err(DbError::Sql)?;
        let (mut written, mut duplicate) = (0u64, 0u64);
        for Consumed {
            change,
            partition,
            offset,
        } in batch
        {
            let attributes = serde_json::Value::Object(
                change
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            )
            .to_string();
            let time = from_millis(change.time);
            let windows = i32::try_from(change.windows).unwrap_or(i32::MAX);
            let change_id = change.event_id().to_string();
            let inserted = tx
                .execute(
                    &insert,
                    &[
                        &change_id,
                        &&*change.user_id,
                        &time,
                        &change.previous_score,
                        &change.score,
                        &change.delta,
                        &change.reason.kind.as_str(),
                        &change.reason.group.as_deref(),
                        &change.reason.source_event_id.as_deref(),
                        &windows,
                        &attributes,
                        partition,
                        offset,
                    ],
                )
                .await
                .map_err(DbError::Sql)?;
            if inserted == 0 {
                duplicate += 1;
                continue;
            }
            written += 1;
            let status = change
                .attribute(&self.settings.handoff.status_attribute)
                .map(|s| match s {
                    crate::event::ScalarRef::Str(s) => s.to_owned(),
                    other => other.to_string(),
                });
            tx.execute(
                &upsert,
                &[
                    &&*change.user_id,
                    &change.score,
                    &status,
                    &attributes,
                    &change_id,
                    &time,
                ],
            )
            .await
            .map_err(DbError::Sql)?;
        }
        tx.commit().await.map_err(DbError::Sql)?;
        metrics::counter!(telemetry::WAREHOUSE_CHANGES_EXPORTED, "outcome" => "written")
            .increment(written);
        metrics::counter!(telemetry::WAREHOUSE_CHANGES_EXPORTED, "outcome" => "duplicate")
            .increment(duplicate);
        Ok(())
    }
}

fn decode(format: Format, payload: Option<&[u8]>) -> Result<ScoreChange, String> {
    let payload = payload.ok_or("no value (a tombstone)")?;
    decode_change(format, payload).map_err(|e| e.to_string())
}
