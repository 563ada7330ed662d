//! `leadscore warehouse import`: new rows of a warehouse table become `external_score` events.
//!
//! Each poll reads the rows after the watermark `(updated_at, user_id)`, in that order, at most
//! `warehouse.batch_size` of them. Comparing the pair, not the time alone, means rows sharing an
//! `updated_at` are never lost when a batch ends among them, and never read twice. The batch is
//! produced and acknowledged by Kafka; only then is the watermark (its last row) stored, in a
//! table of the warehouse itself. A crash in between re-sends the batch: each event's id is the
//! row's (`warehouse:<import>:<user>:<updated_at in µs>`), so the scorer drops the copies.
//!
//! A row whose `updated_at` is moved back to before the watermark, or that appears with an old
//! `updated_at` (a late load), is not seen: as with Cloud Data Ingestion, `updated_at` must grow
//! with every change of a row.

use super::db::{self, DbError};
use super::{to_micros, to_millis};
use crate::config::{quote_identifier, Settings, WarehouseSettings};
use crate::event::{Event, EventType, ScoreOp};
use crate::ingest::producer::{EventProducer, ProduceFailure};
use crate::ops::admin::Health;
use crate::ops::telemetry;
use crate::runtime::shutdown::Shutdown;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("reading {table}: {source}")]
    Read {
        table: String,
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Kafka(#[from] crate::runtime::kafka::KafkaSetupError),
    #[error("the warehouse connection closed")]
    Closed,
}

/// Where the last acknowledged batch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watermark {
    pub updated_at: SystemTime,
    pub user_id: String,
}

/// One row read.
#[derive(Clone, Debug)]
pub struct Row {
    pub user_id: Option<String>,
    pub score: Option<i64>,
    pub updated_at: SystemTime,
}

/// The SQL of one poll, from the settings' (already checked) names.
#[derive(Clone, Debug)]
struct Queries {
    create_watermarks: String,
    load_watermark: String,
    store_watermark: String,
    first: String,
    after: String,
}

impl Queries {
    fn new(w: &WarehouseSettings) -> Queries {
        let q = |name: &str| quote_identifier(name).unwrap_or_default();
        let (table, wm) = (q(&w.import_table), q(&w.watermark_table));
        let (user, score, at) = (
            q(&w.user_id_column),
            q(&w.score_column),
            q(&w.updated_at_column),
        );
        // The "C" collation orders user ids by bytes, the same on every server, so the order of
        // the poll and the comparison with the watermark agree whatever the database's locale.
        let user_c = format!("{user}::text COLLATE \"C\"");
        let select = format!("SELECT {user}::text, {score}::bigint, {at} FROM {table}");
        let order = format!("ORDER BY {at}, {user_c} LIMIT $1");
        Queries {
            create_watermarks: format!(
                "CREATE TABLE IF NOT EXISTS {wm} (name text PRIMARY KEY, \
                 updated_at timestamptz NOT NULL, user_id text NOT NULL, \
                 stored_at timestamptz NOT NULL DEFAULT now())"
            ),
            load_watermark: format!("SELECT updated_at, user_id FROM {wm} WHERE name = $1"),
            store_watermark: format!(
                "INSERT INTO {wm} (name, updated_at, user_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET updated_at = EXCLUDED.updated_at, \
                 user_id = EXCLUDED.user_id, stored_at = now()"
            ),
            first: format!("{select} WHERE {at} IS NOT NULL AND {user} IS NOT NULL {order}"),
            after: format!(
                "{select} WHERE {at} IS NOT NULL AND {user} IS NOT NULL \
                 AND ({at}, {user_c}) > ($2::timestamptz, $3::text COLLATE \"C\") {order}"
            ),
        }
    }
}

/// The event of one row; `None` for a row without a user id or score.
pub fn row_event(import_name: &str, row: &Row) -> Option<Event> {
    let user = row.user_id.as_deref().filter(|u| !u.is_empty())?;
    let score = row.score?;
    let time = to_millis(row.updated_at);
    let mut event = Event::new(user, time, EventType::ExternalScore);
    event.score = Some(ScoreOp::Set(score));
    event.updated_at = Some(time);
    event.event_id = Some(
        format!(
            "warehouse:{import_name}:{user}:{}",
            to_micros(row.updated_at)
        )
        .into(),
    );
    Some(event)
}

/// The import loop: polls until shutdown.
pub struct Importer {
    client: Client,
    producer: EventProducer,
    queries: Queries,
    settings: Settings,
}

impl Importer {
    /// Connects to the warehouse and Kafka, creates the watermark table when missing.
    pub async fn start(settings: Settings, health: Arc<Health>) -> Result<Importer, ImportError> {
        telemetry::register_at_zero(telemetry::Owner::Warehouse);
        let queries = Queries::new(&settings.warehouse);
        let client =
            db::connect_and_create(&settings.warehouse, &queries.create_watermarks).await?;
        let producer = EventProducer::start(&settings, Duration::from_secs(60)).await?;
        health.set_consuming(true);
        health.joined();
        Ok(Importer {
            client,
            producer,
            queries,
            settings,
        })
    }

    async fn load_watermark(&self) -> Result<Option<Watermark>, DbError> {
        let name = self.settings.warehouse.import_name();
        let row = self
            .client
            .query_opt(&self.queries.load_watermark, &[&name])
            .await?;
        Ok(row.map(|r| Watermark {
            updated_at: r.get(0),
            user_id: r.get(1),
        }))
    }

    async fn read(&self, after: Option<&Watermark>) -> Result<Vec<Row>, ImportError> {
        let limit = i64::try_from(self.settings.warehouse.batch_size).unwrap_or(i64::MAX);
        let rows = match after {
            None => self.client.query(&self.queries.first, &[&limit]).await,
            Some(w) => {
                self.client
                    .query(&self.queries.after, &[&limit, &w.updated_at, &w.user_id])
                    .await
            }
        }
        .map_err(|source| ImportError::Read {
            table: self.settings.warehouse.import_table.clone(),
            source,
        })?;
        Ok(rows
            .iter()
            .map(|r| Row {
                user_id: r.get(0),
                score: r.get(1),
                updated_at: r.get(2),
            })
            .collect())
    }

    /// Polls, produces, stores the watermark, until shutdown. A failure of Kafka or of the
    /// warehouse is logged and the same batch is tried again after `poll_interval`, from the
    /// stored watermark, so nothing is skipped.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ImportError> {
        let name = self.settings.warehouse.import_name().to_string();
        let interval = self.settings.warehouse.poll_interval;
        let mut watermark = self.load_watermark().await?;
        tracing::info!(import = %name, ?watermark, "warehouse import started");
        while !shutdown.is_triggered() {
            let full = match self.poll_once(&name, &mut watermark).await {
                Ok(n) => n == self.settings.warehouse.batch_size,
                Err(e) if self.client.is_closed() => {
                    // The connection is gone for good: exit, and let the restart reconnect.
                    tracing::error!(error = %e, "warehouse connection closed");
                    return Err(ImportError::Closed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "warehouse import poll failed; retrying");
                    // What is stored is the truth: re-read it, in case a batch was produced but
                    // its watermark was not stored.
                    if let Ok(stored) = self.load_watermark().await {
                        watermark = stored;
                    }
                    false
                }
            };
            if !full {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.wait() => {}
                }
            }
        }
        Ok(())
    }

    /// One batch: read, produce and wait for Kafka, store the watermark. Returns the rows read.
    async fn poll_once(
        &self,
        name: &str,
        watermark: &mut Option<Watermark>,
    ) -> Result<usize, PollError> {
        let rows = self.read(watermark.as_ref()).await?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let next = Watermark {
            updated_at: last.updated_at,
            user_id: last.user_id.clone().unwrap_or_default(),
        };
        let events: Vec<Event> = rows.iter().filter_map(|r| row_event(name, r)).collect();
        let skipped = rows.len() - events.len();
        self.producer
            .produce_all(&events, Duration::from_secs(60))
            .await?;
        self.client
            .execute(
                &self.queries.store_watermark,
                &[&name, &next.updated_at, &next.user_id],
            )
            .await
            .map_err(DbError::Sql)?;
        metrics::counter!(telemetry::WAREHOUSE_ROWS_IMPORTED).increment(events.len() as u64);
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "warehouse rows without a user id or score passed over"
            );
            metrics::counter!(telemetry::WAREHOUSE_ROWS_SKIPPED).increment(skipped as u64);
        }
        tracing::debug!(rows = rows.len(), "warehouse batch imported");
        *watermark = Some(next);
        Ok(rows.len())
    }
}

/// Why one poll failed (retried).
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Kafka(#[from] ProduceFailure),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_row_is_an_external_score_with_its_time_and_an_id_of_its_own() {
        let at = UNIX_EPOCH + Duration::from_micros(1_767_607_200_123_456);
        let row = Row {
            user_id: Some("u1".into()),
            score: Some(42),
            updated_at: at,
        };
        let e = row_event("imports", &row).expect("an event");
        assert_eq!(e.kind, EventType::ExternalScore);
        assert_eq!(e.score, Some(ScoreOp::Set(42)));
        assert_eq!(e.time, 1_767_607_200_123);
        assert_eq!(e.updated_at, Some(e.time));
        assert_eq!(
            e.event_id.as_deref(),
            Some("warehouse:imports:u1:1767607200123456")
        );
        let no_score = Row {
            score: None,
            ..row.clone()
        };
        assert!(row_event("imports", &no_score).is_none());
        let no_user = Row {
            user_id: Some(String::new()),
            ..row
        };
        assert!(row_event("imports", &no_user).is_none());
    }

    #[test]
    fn the_poll_compares_the_pair_so_equal_times_are_neither_lost_nor_repeated() {
        let q = Queries::new(&Settings::default().warehouse);
        assert!(q.after.contains(
            "(\"updated_at\", \"user_id\"::text COLLATE \"C\") > ($2::timestamptz, $3::text COLLATE \"C\")"
        ), "{}", q.after);
        assert!(q
            .after
            .contains("ORDER BY \"updated_at\", \"user_id\"::text COLLATE \"C\" LIMIT $1"));
    }
}
