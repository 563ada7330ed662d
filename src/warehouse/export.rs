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
//!
//! - A tombstone (null value keyed by a user: the user was forgotten, SPEC 2) deletes the
//!   user's row in both tables, in the batch's transaction and in the partition's order. A
//!   replay after a crash replays the changes before the tombstone and then the tombstone
//!   itself (offsets past it are committed only once it was applied), so the user ends
//!   forgotten; changes after it (a new life) are written again.
//! - A change whose Kafka key is not its user id is passed over, logged and counted, as a record
//!   that does not decode: its tombstone would be keyed differently from the row it wrote.
//! - No record stops the export: U+0000, which PostgreSQL's text and jsonb cannot hold, becomes
//!   U+FFFD; a record whose values PostgreSQL still refuses is passed over, counted and logged
//!   with its partition and offset ([`refused_record`]). A closed connection is re-opened and
//!   a failed batch retried, with a bounded backoff.

use super::db::{self, DbError, PgError, RECONNECT_GIVE_UP};
use super::from_millis;
use crate::change::ScoreChange;
use crate::codec::{check_key, decode_change, Format};
use crate::config::{quote_identifier, Settings, WarehouseSettings};
use crate::ops::admin::Health;
use crate::ops::telemetry;
use crate::runtime::kafka::{consumer_config, redact_error};
use crate::runtime::shutdown::Shutdown;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_postgres::{Client, Statement, Transaction};

/// How long a batch waits for more changes before it is written.
const LINGER: Duration = Duration::from_millis(200);
/// The first wait before a failed batch is written again, doubled up to the cap.
const RETRY_FIRST_WAIT: Duration = Duration::from_millis(500);
const RETRY_MAX_WAIT: Duration = Duration::from_secs(30);
/// How much of a user id or change id a log line quotes (an id can be kilobytes long).
const ID_QUOTED_CHARS: usize = 128;
/// PostgreSQL's `timestamptz` range in epoch milliseconds: 4714-11-24 BC to 294277-01-01.
const PG_MIN_MILLIS: i64 = -210_866_803_200_000;
const PG_END_MILLIS: i64 = 9_224_318_016_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Why a batch or a record was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("warehouse: {0}")]
    Pg(PgError),
    /// A value no `timestamptz` can hold: refused before it is sent.
    #[error("{0}")]
    Unwritable(&'static str),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        WriteError::Pg(PgError(e))
    }
}

impl WriteError {
    /// Whether the record is at fault, not the warehouse: see [`refused_record`].
    fn refused(&self) -> bool {
        match self {
            WriteError::Pg(e) => refused_record(&e.0),
            WriteError::Unwritable(_) => true,
        }
    }
}

/// The table definitions and statements, from the settings' (already checked) names.
struct Sql {
    schema: Vec<db::Create>,
    insert_change: String,
    upsert_score: String,
    forget_score: String,
    forget_changes: String,
}

impl Sql {
    fn new(w: &WarehouseSettings) -> Sql {
        let scores = quote_identifier(&w.scores_table).unwrap_or_default();
        let changes = quote_identifier(&w.changes_table).unwrap_or_default();
        // The index lives in the table's schema; its name is the table's with a suffix.
        let (table_schema, table_name) = match w.changes_table.rsplit_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, w.changes_table.as_str()),
        };
        let index_name = format!("{table_name}_user_time");
        let index = quote_identifier(&index_name)
            .unwrap_or_else(|| "\"leadscore_changes_user_time\"".to_string());
        // Looked up in the table's schema: that is where `CREATE INDEX` puts it.
        let index_qualified = table_schema
            .and_then(|schema| quote_identifier(&format!("{schema}.{index_name}")))
            .unwrap_or_else(|| index.clone());
        Sql {
            schema: vec![
                db::Create::table(
                    &changes,
                    "warehouse.changes_table",
                    "event_id text PRIMARY KEY,
                    user_id text NOT NULL,
                    time timestamptz NOT NULL,
                    previous_score bigint NOT NULL,
                    score bigint NOT NULL,
                    delta bigint NOT NULL,
                    reason_kind text NOT NULL,
                    reason_group text,
                    source_event_id text,
                    windows bigint NOT NULL,
                    attributes jsonb NOT NULL,
                    kafka_partition integer NOT NULL,
                    kafka_offset bigint NOT NULL,
                    exported_at timestamptz NOT NULL DEFAULT now()",
                ),
                db::Create {
                    name: index_qualified.clone(),
                    what: format!("index {index_qualified} on {changes} (user_id, time)"),
                    sql: format!("CREATE INDEX IF NOT EXISTS {index} ON {changes} (user_id, time)"),
                },
                db::Create::table(
                    &scores,
                    "warehouse.scores_table",
                    "user_id text PRIMARY KEY,
                    score bigint NOT NULL,
                    lead_status text,
                    attributes jsonb NOT NULL,
                    last_change_event_id text NOT NULL,
                    last_change_time timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now()",
                ),
            ],
            insert_change: format!(
                "INSERT INTO {changes} (event_id, user_id, time, previous_score, score, delta, \
                 reason_kind, reason_group, source_event_id, windows, attributes, \
                 kafka_partition, kafka_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::bigint, $11::text::jsonb, \
                 $12, $13) \
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
            forget_score: format!("DELETE FROM {scores} WHERE user_id = $1"),
            forget_changes: format!("DELETE FROM {changes} WHERE user_id = $1"),
        }
    }
}

/// One consumed record with where it came from.
struct Consumed {
    record: Record,
    partition: i32,
    offset: i64,
}

/// What a record on the changes topic asks of the warehouse.
enum Record {
    Change(ScoreChange),
    /// A tombstone: forget this user.
    Forget(String),
}

/// What writing one record did.
enum Outcome {
    Written,
    Duplicate,
    Forgotten,
}

/// The prepared statements of one transaction.
struct Statements {
    insert: Statement,
    upsert: Statement,
    forget_score: Statement,
    forget_changes: Statement,
}

/// The outcomes of a batch, counted once it is committed.
#[derive(Default)]
struct Tally {
    written: u64,
    duplicate: u64,
    forgotten: u64,
    refused: u64,
}

/// `s` with U+0000, which PostgreSQL's `text` and `jsonb` refuse, as U+FFFD (the replacement
/// character): deterministic, so a replay and a later tombstone of the user agree on the id.
fn scrub(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// At most [`ID_QUOTED_CHARS`] of `s`, for a log line.
fn quoted(s: &str) -> String {
    s.chars().take(ID_QUOTED_CHARS).collect()
}

/// Whether PostgreSQL refused this record's values (a data exception, a constraint, a limit
/// such as an index entry too large), as opposed to the warehouse being unable to take any
/// write (connection, permissions, a missing table, a full disk): the first kind is the
/// record's and it is passed over; the second is retried, since passing over would lose
/// everything it hits.
fn refused_record(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            ["22", "23", "54"]
                .iter()
                .any(|class| code.starts_with(class))
        }
        None => false,
    }
}

/// A change's time as a `timestamptz`, when PostgreSQL can hold it.
fn pg_time(ms: i64) -> Option<SystemTime> {
    (PG_MIN_MILLIS..PG_END_MILLIS)
        .contains(&ms)
        .then(|| from_millis(ms))
}

/// The export group's rebalances, for readiness: joined at each assignment, out of the group
/// when its partitions were lost (its session expired: a paused broker, a stalled process)
/// until the next one. An outside check (2026-12-07) saw an exporter read nothing for minutes
/// after a broker pause while `/readyz` said ready with no partition assigned.
struct ExportContext {
    health: Arc<Health>,
}

impl rdkafka::ClientContext for ExportContext {}

impl ConsumerContext for ExportContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Revoke(_)) && consumer.assignment_lost() {
            tracing::warn!("score changes' partitions lost: out of the export group until it assigns them again");
            self.health.left();
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.health.joined();
        }
    }
}

/// The export loop.
pub struct Exporter {
    client: Client,
    consumer: StreamConsumer<ExportContext>,
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
        if cfg.get("auto.offset.reset").is_none() {
            cfg.set("auto.offset.reset", "earliest");
        }
        cfg.set("enable.auto.commit", "false");
        // Changes of an exactly-once scorer count once committed.
        cfg.set("isolation.level", "read_committed");
        let context = ExportContext {
            health: Arc::clone(&health),
        };
        let consumer: StreamConsumer<ExportContext> = cfg
            .create_with_context(context)
            .map_err(|e| redact_error(e, &cfg))?;
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
        // Joined once the group assigns the partitions (`ExportContext`).
        self.health.set_consuming(true);
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
                match decode(format, message.key(), message.payload()) {
                    Ok(record) => batch.push(Consumed {
                        record,
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
            if !self.write_until_done(&batch, &shutdown).await? {
                // Shut down before the batch was written: nothing is committed, so the next
                // start replays it.
                break;
            }
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

    /// Writes `batch`, retrying until it is written: a closed connection is re-opened
    /// ([`db::reconnect`]), any other failure retried after 0.5 s, 1 s, 2 s ... at most 30 s.
    /// Gives up with the last error after [`RECONNECT_GIVE_UP`] of failures (the offsets are not
    /// committed: a restart replays the batch). `Ok(false)` when shutdown came first.
    async fn write_until_done(
        &mut self,
        batch: &[Consumed],
        shutdown: &Shutdown,
    ) -> Result<bool, ExportError> {
        let started = Instant::now();
        let mut wait = RETRY_FIRST_WAIT;
        loop {
            let error = match self.write(batch).await {
                Ok(()) => return Ok(true),
                Err(e) => e,
            };
            if self.client.is_closed() {
                tracing::warn!(error = %error, "warehouse connection closed; reconnecting");
                self.health.set_consuming(false);
                let schema = &self.sql.schema;
                match db::reconnect(&self.settings.warehouse, schema, shutdown).await? {
                    Some(client) => self.client = client,
                    None => return Ok(false),
                }
                self.health.set_consuming(true);
                continue;
            }
            if started.elapsed() >= RECONNECT_GIVE_UP {
                return Err(error.into());
            }
            tracing::warn!(error = %error, retry_in = ?wait, "writing score changes to the warehouse failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => return Ok(false),
            }
            wait = (wait * 2).min(RETRY_MAX_WAIT);
        }
    }

    /// Writes `batch` in one transaction. When PostgreSQL refuses a record's values
    /// ([`refused_record`]), the batch is written again record by record, each under a savepoint,
    /// and the refused ones are passed over: one record must not stop the export.
    async fn write(&mut self, batch: &[Consumed]) -> Result<(), WriteError> {
        let tally = match self.write_batch(batch, false).await {
            Err(e) if e.refused() => {
                tracing::info!(error = %e, "the warehouse refused a record; writing the batch record by record");
                self.write_batch(batch, true).await?
            }
            other => other?,
        };
        metrics::counter!(telemetry::WAREHOUSE_CHANGES_EXPORTED, "outcome" => "written")
            .increment(tally.written);
        metrics::counter!(telemetry::WAREHOUSE_CHANGES_EXPORTED, "outcome" => "duplicate")
            .increment(tally.duplicate);
        metrics::counter!(telemetry::WAREHOUSE_CHANGES_EXPORTED, "outcome" => "forgotten")
            .increment(tally.forgotten);
        metrics::counter!(telemetry::WAREHOUSE_CHANGES_SKIPPED).increment(tally.refused);
        Ok(())
    }

    /// One transaction for `batch`; with `one_by_one`, each record under a savepoint, a refused
    /// one rolled back, logged and counted.
    async fn write_batch(
        &mut self,
        batch: &[Consumed],
        one_by_one: bool,
    ) -> Result<Tally, WriteError> {
        let mut tx = self.client.transaction().await?;
        let statements = Statements {
            insert: tx.prepare(&self.sql.insert_change).await?,
            upsert: tx.prepare(&self.sql.upsert_score).await?,
            forget_score: tx.prepare(&self.sql.forget_score).await?,
            forget_changes: tx.prepare(&self.sql.forget_changes).await?,
        };
        let status_attribute = &self.settings.handoff.status_attribute;
        let mut tally = Tally::default();
        for consumed in batch {
            let outcome = if one_by_one {
                let savepoint = tx.savepoint("leadscore_record").await?;
                match apply(&savepoint, &statements, status_attribute, consumed).await {
                    Ok(outcome) => {
                        savepoint.commit().await?;
                        Some(outcome)
                    }
                    Err(e) if e.refused() => {
                        savepoint.rollback().await?;
                        log_refused(consumed, &e);
                        None
                    }
                    Err(e) => return Err(e),
                }
            } else {
                Some(apply(&tx, &statements, status_attribute, consumed).await?)
            };
            match outcome {
                Some(Outcome::Written) => tally.written += 1,
                Some(Outcome::Duplicate) => tally.duplicate += 1,
                Some(Outcome::Forgotten) => tally.forgotten += 1,
                None => tally.refused += 1,
            }
        }
        tx.commit().await?;
        Ok(tally)
    }
}

/// Logs a record the warehouse refused, with where it is.
fn log_refused(consumed: &Consumed, error: &WriteError) {
    let (user, change) = match &consumed.record {
        Record::Change(c) => (quoted(&c.user_id), quoted(&c.event_id().to_string())),
        Record::Forget(user) => (quoted(user), String::new()),
    };
    tracing::warn!(
        partition = consumed.partition,
        offset = consumed.offset,
        user_id = %user,
        event_id = %change,
        error = %error,
        "score change passed over: the warehouse refused it"
    );
}

/// Writes one record in `tx` (a transaction or a savepoint).
async fn apply(
    tx: &Transaction<'_>,
    statements: &Statements,
    status_attribute: &str,
    consumed: &Consumed,
) -> Result<Outcome, WriteError> {
    let Consumed {
        record,
        partition,
        offset,
    } = consumed;
    let change = match record {
        Record::Forget(user) => {
            // The user's history goes too: forgetting is a privacy deletion (SPEC 2).
            let user = scrub(user);
            tx.execute(&statements.forget_score, &[&&*user]).await?;
            tx.execute(&statements.forget_changes, &[&&*user]).await?;
            tracing::info!(partition, offset, user_id = %quoted(&user), "user forgotten in the warehouse");
            return Ok(Outcome::Forgotten);
        }
        Record::Change(change) => change,
    };
    let mut scrubbed = false;
    let mut text = |s: &str| -> String {
        let t = scrub(s);
        scrubbed |= matches!(t, Cow::Owned(_));
        t.into_owned()
    };
    let attributes = serde_json::Value::Object(
        change
            .attributes
            .iter()
            .map(|(k, v)| {
                let value = match v.to_json() {
                    serde_json::Value::String(s) => serde_json::Value::String(text(&s)),
                    other => other,
                };
                (text(k), value)
            })
            .collect(),
    )
    .to_string();
    let user = text(&change.user_id);
    let change_id = text(&change.event_id().to_string());
    let group = change.reason.group.as_deref().map(&mut text);
    let source = change.reason.source_event_id.as_deref().map(&mut text);
    let status = change.attribute(status_attribute).map(|s| match s {
        crate::event::ScalarRef::Str(s) => text(s),
        other => text(&other.to_string()),
    });
    if scrubbed {
        tracing::warn!(partition, offset, event_id = %quoted(&change_id), "U+0000 in a score change written as U+FFFD");
    }
    let Some(time) = pg_time(change.time) else {
        // The client cannot even encode a time this far out (it would overflow), so it is
        // refused here, as PostgreSQL would refuse it.
        return Err(WriteError::Unwritable(
            "the change's time is outside PostgreSQL's timestamptz range",
        ));
    };
    // Sent as bigint whatever the column: a table created by an older version has an integer
    // column, into which PostgreSQL refuses a count beyond 2^31 - 1 (SQLSTATE 22003), so the
    // change is passed over and counted, never written clamped.
    let windows = i64::from(change.windows);
    let inserted = tx
        .execute(
            &statements.insert,
            &[
                &change_id,
                &user,
                &time,
                &change.previous_score,
                &change.score,
                &change.delta,
                &change.reason.kind.as_str(),
                &group,
                &source,
                &windows,
                &attributes,
                partition,
                offset,
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(Outcome::Duplicate);
    }
    tx.execute(
        &statements.upsert,
        &[
            &user,
            &change.score,
            &status,
            &attributes,
            &change_id,
            &time,
        ],
    )
    .await?;
    Ok(Outcome::Written)
}

fn decode(format: Format, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<Record, String> {
    let Some(payload) = payload else {
        // A tombstone: the key is the user to forget.
        return match key.map(std::str::from_utf8) {
            Some(Ok(user)) if !user.is_empty() => Ok(Record::Forget(user.to_string())),
            Some(Ok(_)) | None => Err("a tombstone without a user id key".to_string()),
            Some(Err(_)) => Err("a tombstone whose key is not UTF-8".to_string()),
        };
    };
    let change = decode_change(format, payload).map_err(|e| e.to_string())?;
    // Keyed by another user, the change would be written under its user_id while that user's
    // tombstone, keyed by the same key as the change, would never find it. The handoff
    // dead-letters such a record (key_mismatch); here it is passed over. No key: nothing to
    // disagree with, as the handoff reads it.
    if let Some(key) = key {
        check_key(key, &change.user_id).map_err(|e| format!("{} ({e})", e.reason()))?;
    }
    Ok(Record::Change(change))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGE: &[u8] = br#"{"event_id":"external:bc4#1","user_id":"bc4-other","time":"2026-01-05T10:00:00Z","previous_score":0,"score":5,"delta":5,"reason":{"kind":"external","event_id":"s1"},"attributes":{}}"#;

    #[test]
    fn a_change_keyed_by_another_user_is_passed_over_naming_both() {
        // A later tombstone keyed bc4 would not find a row written under bc4-other.
        let refused = decode(Format::Json, Some(b"bc4"), Some(CHANGE));
        let why = refused
            .err()
            .expect("a key that is not the user id is refused");
        assert!(why.contains("bc4") && why.contains("bc4-other"), "{why}");
        assert!(decode(Format::Json, Some(b"bc4-other"), Some(CHANGE)).is_ok());
        // Without a key there is nothing to disagree with, as the handoff reads it.
        assert!(decode(Format::Json, None, Some(CHANGE)).is_ok());
    }
}
