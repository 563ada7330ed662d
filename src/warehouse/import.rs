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
//!
//! A row dated ahead of the clock (the earlier of the warehouse's and the importer's) is held:
//! not read, so neither produced (the scorer would dead-letter an event too far ahead) nor
//! passed by the watermark, which therefore never gets ahead of the clock; rows written later
//! with the current time still sort after it. The held row is read once its time has come.
//!
//! Rows are never refused by the query itself: the score is read as text and parsed here, so one
//! value beyond the 64-bit range is passed over (counted, and logged naming the row) instead of
//! failing every poll. A null user id sorts as the empty one and is counted with the rows
//! passed over; a null `updated_at` cannot be placed after any watermark, so such rows are
//! counted (and logged) as they appear, never imported.

use super::db::{self, DbError, PgError};
use super::{to_micros, to_millis};
use crate::codec::Format;
use crate::config::{quote_identifier, Settings, WarehouseSettings};
use crate::event::{Event, EventType, ScoreOp};
use crate::ingest::braze::scorer_refusal;
use crate::ingest::producer::{EventProducer, ProduceFailure};
use crate::ops::admin::Health;
use crate::ops::telemetry;
use crate::runtime::shutdown::Shutdown;
use crate::timestamp::format_rfc3339;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("reading {table}: {error}")]
    Read { table: String, error: PgError },
    #[error(transparent)]
    Kafka(#[from] crate::runtime::kafka::KafkaSetupError),
    #[error(
        "warehouse.updated_at_column {column:?} of {table} is {found}, not timestamptz: a time \
         without a zone is compared with the clock in the session's time zone, so rows would be \
         held hours early or late; use a timestamptz column, or a view converting it \
         (updated_at AT TIME ZONE 'UTC')"
    )]
    UpdatedAtType {
        table: String,
        column: String,
        found: String,
    },
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
    /// The score column as text: whatever its type, reading it cannot fail, so a value that is
    /// not a 64-bit integer is this row's problem, not the whole poll's ([`parse_score`]).
    pub score: Option<String>,
    pub updated_at: SystemTime,
}

/// Why a row became no event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A null or empty user id, or a null score.
    Missing,
    /// A score that is not a number, or outside the 64-bit range.
    BadScore(&'static str),
    /// An event the scorer would dead-letter ([`scorer_refusal`], as the ingest API checks
    /// its events): a time outside years 0000-9999 (`-infinity`, a date BC), an event over
    /// `scorer.max_event_bytes` (a user id of tens of kilobytes). Why, in words.
    Unscorable(String),
}

/// How many rows with a bad score are logged one by one per batch; the rest are summed up.
const BAD_ROWS_LOGGED: usize = 10;
/// How much of a bad score value a log line quotes.
const SCORE_QUOTED_CHARS: usize = 64;
/// How much of a user id a log line quotes (one can be tens of kilobytes).
const USER_QUOTED_CHARS: usize = 128;
/// How often, at most, the rows with a null `updated_at` are counted (a query of its own).
const TIMELESS_CHECK_EVERY: Duration = Duration::from_secs(60);

/// The SQL of one poll, from the settings' (already checked) names.
#[derive(Clone, Debug)]
struct Queries {
    create_watermarks: [db::Create; 1],
    load_watermark: String,
    store_watermark: String,
    first: String,
    after: String,
    count_timeless: String,
    /// Rows dated after `$1` (not `infinity`): held until due.
    count_far_ahead: String,
}

/// How much of a score's text a poll reads: a score in the 64-bit range is at most a few dozen
/// characters (more only with a long fraction, whose cut keeps its rounding), and a `text`
/// column could hold a gigabyte.
const SCORE_READ_CHARS: usize = 4_097;

impl Queries {
    /// `max_event_bytes` is the scorer's: a user id longer than half of it makes an event the
    /// scorer would refuse (the id is in it twice), so a poll reads no more of an id than
    /// that and a character: the rows of a batch cannot hold more, however long the values
    /// in the table (a batch of ten 30 MB user ids took 774 MB before).
    fn new(w: &WarehouseSettings, max_event_bytes: usize) -> Queries {
        let id_chars = max_event_bytes / 2 + 1;
        let q = |name: &str| quote_identifier(name).unwrap_or_default();
        let (table, wm) = (q(&w.import_table), q(&w.watermark_table));
        let (user, score, at) = (
            q(&w.user_id_column),
            q(&w.score_column),
            q(&w.updated_at_column),
        );
        // The "C" collation orders user ids by bytes, the same on every server, so the order of
        // the poll and the comparison with the watermark agree whatever the database's locale.
        // A null user id orders as the empty one: such rows are read (and counted as passed
        // over) and can carry the watermark like any other.
        let user_c = format!("COALESCE({user}::text, '') COLLATE \"C\"");
        let select = format!(
            "SELECT left({user}::text, {id_chars}), left({score}::text, {SCORE_READ_CHARS}), \
             {at} FROM {table}"
        );
        // A watermark on a cut user id (as long as a poll reads one) stands for every id that
        // starts with it at its time, all too long for an event: they are not read again.
        let past_cut = format!(
            "NOT ({at} = $2::timestamptz AND char_length($3::text) >= {id_chars} \
             AND starts_with(COALESCE({user}::text, ''), $3::text))"
        );
        // Two rows of one user with one `updated_at` are a loading mistake (the pair must be
        // unique): the one with the largest score is read first, imported, and the others
        // passed over, so which wins does not depend on the table's physical order.
        // The score named with its table: a bare name in `ORDER BY` means the output column
        // first, which is the score's text, and "9" sorts after "100" (an outside review).
        let order = format!("ORDER BY {at}, {user_c}, {table}.{score} DESC NULLS LAST LIMIT $1");
        // Rows dated ahead of the clock are held until due: the watermark must not pass a time
        // that rows written now still carry. The earlier of the server's clock (what `now()`
        // writes) and the importer's (what the scorer's future-skew check is close to).
        let due = |clock: &str| {
            format!(
                "{at} IS NOT NULL AND {at} <= LEAST(statement_timestamp(), {clock}::timestamptz)"
            )
        };
        Queries {
            create_watermarks: [db::Create::table(
                &wm,
                "warehouse.watermark_table",
                "name text PRIMARY KEY, updated_at timestamptz NOT NULL, \
                 user_id text NOT NULL, stored_at timestamptz NOT NULL DEFAULT now()",
            )],
            load_watermark: format!("SELECT updated_at, user_id FROM {wm} WHERE name = $1"),
            store_watermark: format!(
                "INSERT INTO {wm} (name, updated_at, user_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET updated_at = EXCLUDED.updated_at, \
                 user_id = EXCLUDED.user_id, stored_at = now()"
            ),
            first: format!("{select} WHERE {} {order}", due("$2")),
            after: format!(
                "{select} WHERE {} \
                 AND ({at}, {user_c}) > ($2::timestamptz, $3::text COLLATE \"C\") \
                 AND {past_cut} {order}",
                due("$4")
            ),
            // `infinity` is never due, so never read either (`-infinity` is, and is passed
            // over as outside years 0000-9999).
            count_timeless: format!(
                "SELECT count(*) FROM {table} WHERE {at} IS NULL OR {at} = 'infinity'"
            ),
            count_far_ahead: format!(
                "SELECT count(*) FROM {table} WHERE {at} > $1::timestamptz AND {at} <> 'infinity'"
            ),
        }
    }
}

/// A score read as text as an integer: an integer literal, or a decimal or float one (from a
/// `numeric` or `real` column) rounded to the nearest integer, halves away from zero (as
/// PostgreSQL's `numeric` to `bigint` cast). Errors say what is wrong with it.
pub fn parse_score(text: &str) -> Result<i64, &'static str> {
    const NOT_A_NUMBER: &str = "not a number";
    const OUT_OF_RANGE: &str = "outside the 64-bit integer range";
    let t = text.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Ok(n);
    }
    let (negative, unsigned) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => {
            let e = &unsigned[i + 1..];
            let e_digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if e_digits.is_empty() || !digits_only(e_digits) {
                return Err(NOT_A_NUMBER);
            }
            // An exponent too long for an i64 is far beyond any score either way.
            let magnitude = e_digits
                .parse::<i64>()
                .unwrap_or(i64::MAX / 4)
                .min(i64::MAX / 4);
            let exp = if e.starts_with('-') {
                -magnitude
            } else {
                magnitude
            };
            (&unsigned[..i], exp)
        }
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return Err(NOT_A_NUMBER);
    }
    // The value is 0.<all> × 10^point: `point` digits of `all` are the integer part.
    let all = format!("{int}{frac}");
    let significant = all.trim_start_matches('0');
    let point = (int.len() as i64)
        .saturating_add(exponent)
        .saturating_sub((all.len() - significant.len()) as i64);
    let all = significant.as_bytes();
    if all.is_empty() {
        return Ok(0);
    }
    // The first digit is not 0, so the value is at least 10^(point-1): beyond i64 from 20 on.
    if point > 19 {
        return Err(OUT_OF_RANGE);
    }
    let (magnitude, round_up) = if point <= 0 {
        (0i128, point == 0 && all[0] >= b'5')
    } else {
        let p = point as usize;
        let mut m: i128 = 0;
        for i in 0..p {
            m = m * 10 + i128::from(all.get(i).map_or(0, |d| d - b'0'));
        }
        (m, all.get(p).is_some_and(|d| *d >= b'5'))
    };
    let magnitude = magnitude + i128::from(round_up);
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).map_err(|_| OUT_OF_RANGE)
}

/// The event of one row, or why there is none. `format` and `max_event_bytes` are the
/// scorer's (`scorer.input_format`, `scorer.max_event_bytes`): an event it would dead-letter is
/// no event.
pub fn row_event(
    import_name: &str,
    row: &Row,
    format: Format,
    max_event_bytes: usize,
) -> Result<Event, Skip> {
    let user = row
        .user_id
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or(Skip::Missing)?;
    let score = parse_score(row.score.as_deref().ok_or(Skip::Missing)?).map_err(Skip::BadScore)?;
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
    scorer_refusal(&event, format, max_event_bytes).map_err(Skip::Unscorable)?;
    Ok(event)
}

/// Refuses an `updated_at` column of another type than `timestamptz` (a `timestamp` without
/// zone was read as UTC but compared with the clock in the session's zone). A table that
/// cannot be read yet (missing, no access) is the polls' to report, as before.
async fn check_updated_at_type(
    client: &Client,
    queries: &Queries,
    w: &WarehouseSettings,
) -> Result<(), ImportError> {
    let Ok(statement) = client.prepare(&queries.first).await else {
        return Ok(());
    };
    match updated_at_type_error(statement.columns(), w) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The error for an `updated_at` column (the third of the import query's `columns`) of another
/// type than `timestamptz`, if it is one.
fn updated_at_type_error(
    columns: &[tokio_postgres::Column],
    w: &WarehouseSettings,
) -> Option<ImportError> {
    let t = columns.get(2)?.type_();
    (*t != tokio_postgres::types::Type::TIMESTAMPTZ).then(|| ImportError::UpdatedAtType {
        table: w.import_table.clone(),
        column: w.updated_at_column.clone(),
        found: t.name().to_string(),
    })
}

/// The rows with a null `updated_at` last counted, and when; and the rows dated far ahead.
#[derive(Default)]
struct Timeless {
    seen: u64,
    far_ahead: u64,
    checked: Option<Instant>,
}

/// The import loop: polls until shutdown.
pub struct Importer {
    client: Client,
    producer: EventProducer,
    queries: Queries,
    settings: Settings,
    health: Arc<Health>,
}

impl Importer {
    /// Connects to the warehouse and Kafka, creates the watermark table when missing.
    pub async fn start(settings: Settings, health: Arc<Health>) -> Result<Importer, ImportError> {
        telemetry::register_at_zero(telemetry::Owner::Warehouse);
        let queries = Queries::new(&settings.warehouse, settings.scorer.max_event_bytes);
        let client =
            db::connect_and_create(&settings.warehouse, &queries.create_watermarks).await?;
        check_updated_at_type(&client, &queries, &settings.warehouse).await?;
        let producer = EventProducer::start(&settings, Duration::from_secs(60)).await?;
        health.set_consuming(true);
        health.joined();
        Ok(Importer {
            client,
            producer,
            queries,
            settings,
            health,
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

    /// The due rows after `after` (see [`Queries`]), `now` being the importer's clock.
    async fn read(
        &self,
        after: Option<&Watermark>,
        now: SystemTime,
    ) -> Result<Vec<Row>, ImportError> {
        let limit = i64::try_from(self.settings.warehouse.batch_size).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                self.client
                    .query(&self.queries.first, &[&limit, &now])
                    .await
            }
            Some(w) => {
                self.client
                    .query(
                        &self.queries.after,
                        &[&limit, &w.updated_at, &w.user_id, &now],
                    )
                    .await
            }
        }
        .map_err(|e| self.read_error(e))?;
        // The column's type is checked at start, but the table may have been created or
        // altered since (a missing table is the polls' to report): a `date` column would fail
        // every read, and a `timestamp` without zone would be read in the wrong zone.
        let wrong_type = rows
            .first()
            .and_then(|r| updated_at_type_error(r.columns(), &self.settings.warehouse));
        if let Some(e) = wrong_type {
            return Err(e);
        }
        let read_error = |e| self.read_error(e);
        rows.iter()
            .map(|r| {
                Ok(Row {
                    user_id: r.try_get(0).map_err(read_error)?,
                    score: r.try_get(1).map_err(read_error)?,
                    updated_at: r.try_get(2).map_err(read_error)?,
                })
            })
            .collect()
    }

    fn read_error(&self, error: tokio_postgres::Error) -> ImportError {
        ImportError::Read {
            table: self.settings.warehouse.import_table.clone(),
            error: PgError(error),
        }
    }

    /// Runs a `count(*)` query; a failure is logged as counting `what`, and gives `None`.
    async fn count(
        &self,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: &str,
    ) -> Option<u64> {
        match self.client.query_one(query, params).await {
            Ok(row) => Some(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)),
            Err(e) => {
                tracing::warn!(error = %PgError(e), "counting {what} failed");
                None
            }
        }
    }

    /// Polls, produces, stores the watermark, until shutdown. A failure of Kafka or of the
    /// warehouse is logged and the same batch is tried again after `poll_interval`, from the
    /// stored watermark, so nothing is skipped. A closed connection is re-opened
    /// ([`db::reconnect`]: bounded backoff; the command exits only when the warehouse stays
    /// unreachable for [`db::RECONNECT_GIVE_UP`]).
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), ImportError> {
        let name = self.settings.warehouse.import_name().to_string();
        let interval = self.settings.warehouse.poll_interval;
        let mut watermark = self.load_watermark().await?;
        let mut timeless = Timeless::default();
        tracing::info!(import = %name, ?watermark, "warehouse import started");
        while !shutdown.is_triggered() {
            let full = match self.poll_once(&name, &mut watermark).await {
                Ok(n) => n == self.settings.warehouse.batch_size,
                Err(e) if self.client.is_closed() => {
                    tracing::warn!(error = %e, "warehouse connection closed; reconnecting");
                    self.health.set_consuming(false);
                    let reconnected = db::reconnect(
                        &self.settings.warehouse,
                        &self.queries.create_watermarks,
                        &shutdown,
                    )
                    .await?;
                    let Some(client) = reconnected else { break };
                    self.client = client;
                    self.health.set_consuming(true);
                    self.reload(&mut watermark).await;
                    // Poll again at once: the rows waited during the outage.
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "warehouse import poll failed; retrying");
                    self.reload(&mut watermark).await;
                    false
                }
            };
            if !full {
                self.count_timeless(&mut timeless).await;
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.wait() => {}
                }
            }
        }
        Ok(())
    }

    /// What is stored is the truth: re-read it after a failure, in case a batch was produced
    /// and its watermark stored though the answer was lost.
    async fn reload(&self, watermark: &mut Option<Watermark>) {
        match self.load_watermark().await {
            Ok(stored) => *watermark = stored,
            Err(e) => tracing::warn!(error = %e, "re-reading the import watermark failed"),
        }
    }

    /// Counts the rows with a null or infinite `updated_at` (at most every
    /// [`TIMELESS_CHECK_EVERY`]): they
    /// cannot be ordered after any watermark, so they are never read; each is counted as
    /// passed over once, when the number of such rows grows.
    async fn count_timeless(&self, timeless: &mut Timeless) {
        if timeless
            .checked
            .is_some_and(|t| t.elapsed() < TIMELESS_CHECK_EVERY)
        {
            return;
        }
        timeless.checked = Some(Instant::now());
        let what = "the rows with a null or infinite updated_at";
        let Some(n) = self.count(&self.queries.count_timeless, &[], what).await else {
            return;
        };
        self.count_far_ahead(timeless).await;
        if n > timeless.seen {
            let w = &self.settings.warehouse;
            tracing::warn!(
                table = %w.import_table,
                column = %w.updated_at_column,
                rows = n,
                "warehouse rows with a null or infinite updated_at are never imported: they are never due, or cannot be ordered after the watermark"
            );
            metrics::counter!(telemetry::WAREHOUSE_ROWS_SKIPPED).increment(n - timeless.seen);
        }
        timeless.seen = n;
    }

    /// Warns when rows dated more than `scorer.max_future_skew` ahead are waiting (their
    /// number changed since the last check): they are held until due, which for a mistyped
    /// year (2206 for 2026) is never in practice, and would otherwise wait unseen.
    async fn count_far_ahead(&self, timeless: &mut Timeless) {
        let skew = self.settings.scorer.max_future_skew;
        let Some(after) = SystemTime::now().checked_add(skew) else {
            return;
        };
        let what = "the rows dated far ahead";
        let Some(n) = self
            .count(&self.queries.count_far_ahead, &[&after], what)
            .await
        else {
            return;
        };
        if n > 0 && n != timeless.far_ahead {
            let w = &self.settings.warehouse;
            tracing::warn!(
                table = %w.import_table,
                column = %w.updated_at_column,
                rows = n,
                ahead = ?skew,
                "warehouse rows dated more than scorer.max_future_skew ahead are held until due (is the year right?)"
            );
        }
        timeless.far_ahead = n;
    }

    /// One batch: read, produce and wait for Kafka, store the watermark. Returns the rows read.
    async fn poll_once(
        &self,
        name: &str,
        watermark: &mut Option<Watermark>,
    ) -> Result<usize, PollError> {
        let rows = self.read(watermark.as_ref(), SystemTime::now()).await?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let next = Watermark {
            updated_at: last.updated_at,
            user_id: last.user_id.clone().unwrap_or_default(),
        };
        let mut events = Vec::with_capacity(rows.len());
        let mut missing: Vec<(&Row, &'static str)> = Vec::new();
        let mut bad: Vec<(&Row, &'static str)> = Vec::new();
        let mut unscorable: Vec<(&Row, String)> = Vec::new();
        let mut repeated: Vec<(&Row, &'static str)> = Vec::new();
        // The row the last event came from. The rows of one (user id, updated_at) pair are
        // adjacent ([`Queries`]' order), and a batch never starts inside a pair (it starts
        // after the watermark pair): the first of a pair with an event is the one imported.
        let mut imported: Option<&Row> = None;
        let scorer = &self.settings.scorer;
        for row in &rows {
            if imported.is_some_and(|i| i.updated_at == row.updated_at && i.user_id == row.user_id)
            {
                repeated.push((row, "another row of this user with this updated_at"));
                continue;
            }
            match row_event(name, row, scorer.input_format, scorer.max_event_bytes) {
                Ok(event) => {
                    events.push(event);
                    imported = Some(row);
                }
                Err(Skip::Missing) => missing.push((
                    row,
                    if row.user_id.as_deref().unwrap_or_default().is_empty() {
                        "no user id"
                    } else {
                        "no score"
                    },
                )),
                Err(Skip::BadScore(reason)) => bad.push((row, reason)),
                Err(Skip::Unscorable(reason)) => unscorable.push((row, reason)),
            }
        }
        self.producer
            .produce_all(&events, Duration::from_secs(60))
            .await?;
        self.client
            .execute(
                &self.queries.store_watermark,
                &[&name, &next.updated_at, &next.user_id],
            )
            .await
            .map_err(DbError::from)?;
        // Counted once the batch is done: a batch retried after a failure is counted once.
        metrics::counter!(telemetry::WAREHOUSE_ROWS_IMPORTED).increment(events.len() as u64);
        let table = &self.settings.warehouse.import_table;
        log_passed_over(
            table,
            missing.iter().copied(),
            "it has no user id or no score",
            "without a user id or a score",
        );
        log_passed_over(
            table,
            bad.iter().map(|(row, reason)| (*row, *reason)),
            "its score is not a 64-bit integer",
            "for their score",
        );
        log_passed_over(
            table,
            unscorable
                .iter()
                .map(|(row, reason)| (*row, reason.as_str())),
            "the scorer would dead-letter its event",
            "the scorer would dead-letter them",
        );
        log_passed_over(
            table,
            repeated.iter().copied(),
            "its user id and updated_at repeat the row imported before it (the one with the \
             largest score); keep the pair unique",
            "repeating the user id and updated_at of an imported row",
        );
        let skipped = missing.len() + bad.len() + unscorable.len() + repeated.len();
        if skipped > 0 {
            metrics::counter!(telemetry::WAREHOUSE_ROWS_SKIPPED).increment(skipped as u64);
        }
        tracing::debug!(rows = rows.len(), "warehouse batch imported");
        *watermark = Some(next);
        Ok(rows.len())
    }
}

/// Logs the rows of a batch passed over for one reason: the first [`BAD_ROWS_LOGGED`] one by
/// one (user id and score cut to what a log line quotes: either can be tens of kilobytes),
/// the rest as a count.
fn log_passed_over<'r>(
    table: &str,
    rows: impl ExactSizeIterator<Item = (&'r Row, &'r str)>,
    why: &str,
    rest: &str,
) {
    let n = rows.len();
    for (row, reason) in rows.take(BAD_ROWS_LOGGED) {
        let user = row.user_id.as_deref().unwrap_or_default();
        let score = row.score.as_deref().unwrap_or_default();
        tracing::warn!(
            table = %table,
            user_id = %user.chars().take(USER_QUOTED_CHARS).collect::<String>(),
            user_id_bytes = user.len(),
            updated_at = %format_rfc3339(to_millis(row.updated_at)),
            updated_at_us = %to_micros(row.updated_at),
            score = %score.chars().take(SCORE_QUOTED_CHARS).collect::<String>(),
            reason = %reason,
            "warehouse row passed over: {why}"
        );
    }
    if n > BAD_ROWS_LOGGED {
        tracing::warn!(
            rows = n - BAD_ROWS_LOGGED,
            "more warehouse rows of this batch passed over: {rest}"
        );
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
    use crate::codec::Limits;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_row_is_an_external_score_with_its_time_and_an_id_of_its_own() {
        let at = UNIX_EPOCH + Duration::from_micros(1_767_607_200_123_456);
        let row = Row {
            user_id: Some("u1".into()),
            score: Some("42".into()),
            updated_at: at,
        };
        let e = event_of(&row).expect("an event");
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
        assert_eq!(event_of(&no_score).err(), Some(Skip::Missing));
        let huge = Row {
            score: Some("100000000000000000000".into()),
            ..row.clone()
        };
        assert_eq!(
            event_of(&huge).err(),
            Some(Skip::BadScore("outside the 64-bit integer range"))
        );
        let no_user = Row {
            user_id: Some(String::new()),
            ..row
        };
        assert_eq!(event_of(&no_user.clone()).err(), Some(Skip::Missing));
        let null_user = Row {
            user_id: None,
            ..no_user
        };
        assert_eq!(event_of(&null_user).err(), Some(Skip::Missing));
    }

    /// A row's event, checked against the scorer's default limits in JSON.
    fn event_of(row: &Row) -> Result<Event, Skip> {
        row_event("imports", row, Format::Json, Limits::DEFAULT_MAX_BYTES)
    }

    #[test]
    fn a_row_whose_event_the_scorer_would_dead_letter_is_passed_over_saying_why() {
        let row = |user: &str, updated_at: SystemTime| Row {
            user_id: Some(user.to_string()),
            score: Some("1".into()),
            updated_at,
        };
        // '-infinity' as tokio-postgres reads it: i64::MIN microseconds before 2000-01-01.
        let y2000 = UNIX_EPOCH + Duration::from_secs(946_684_800);
        let minus_infinity = y2000 - Duration::from_micros(i64::MIN.unsigned_abs());
        let before_year_0 = crate::warehouse::from_millis(crate::timestamp::MIN_MILLIS - 1);
        let after_9999 = crate::warehouse::from_millis(crate::timestamp::MAX_MILLIS + 1);
        for at in [minus_infinity, before_year_0, after_9999] {
            let refused = event_of(&row("u1", at));
            let why = format!("{:?}", refused.as_ref().err());
            assert!(why.contains("0000-9999"), "{:?}: {why}", to_millis(at));
        }
        // A user id that makes the event larger than the scorer takes (70,000 characters: a
        // 140 KB event, the id repeating it): refused with the sizes.
        let now = UNIX_EPOCH + Duration::from_secs(1_767_607_200);
        let why = format!("{:?}", event_of(&row(&"u".repeat(70_000), now)).err());
        assert!(why.contains("65536"), "{why}");
        // The edges of the range and a long user id that fits are imported.
        let edge = crate::warehouse::from_millis(crate::timestamp::MIN_MILLIS);
        assert!(event_of(&row("u1", edge)).is_ok());
        assert!(event_of(&row(&"u".repeat(20_000), now)).is_ok());
    }

    #[test]
    fn the_poll_compares_the_pair_so_equal_times_are_neither_lost_nor_repeated() {
        let settings = Settings::default();
        let q = Queries::new(&settings.warehouse, settings.scorer.max_event_bytes);
        let user_c = "COALESCE(\"user_id\"::text, '') COLLATE \"C\"";
        assert!(
            q.after.contains(&format!(
                "(\"updated_at\", {user_c}) > ($2::timestamptz, $3::text COLLATE \"C\")"
            )),
            "{}",
            q.after
        );
        assert!(q.after.contains(&format!(
            "ORDER BY \"updated_at\", {user_c}, \"lead_score_imports\".\"score\" DESC NULLS LAST \
             LIMIT $1"
        )));
    }

    #[test]
    fn the_poll_reads_only_rows_due_by_both_clocks() {
        let settings = Settings::default();
        let q = Queries::new(&settings.warehouse, settings.scorer.max_event_bytes);
        let due = |clock: &str| {
            format!("\"updated_at\" <= LEAST(statement_timestamp(), {clock}::timestamptz)")
        };
        assert!(q.first.contains(&due("$2")), "{}", q.first);
        assert!(q.after.contains(&due("$4")), "{}", q.after);
    }

    #[test]
    fn a_score_is_an_integer_or_a_number_rounded_and_anything_else_says_why_not() {
        for (text, want) in [
            ("42", 42),
            (" -7 ", -7),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
            ("-9223372036854775808.00", i64::MIN),
            ("42.00", 42),
            ("12.5", 13),
            ("-12.5", -13),
            ("12.49", 12),
            ("0.5", 1),
            ("0.05", 0),
            (".5", 1),
            ("5.", 5),
            ("1e3", 1000),
            ("4.2e1", 42),
            ("1.5e-07", 0),
            ("000123", 123),
            ("-0", 0),
            ("1E18", 1_000_000_000_000_000_000),
        ] {
            assert_eq!(parse_score(text), Ok(want), "{text}");
        }
        let range = Err("outside the 64-bit integer range");
        for text in [
            "100000000000000000000",
            "9223372036854775808",
            "9223372036854775807.5",
            "-9223372036854775809",
            "1e+20",
            "1e999999999999999999999",
        ] {
            assert_eq!(parse_score(text), range, "{text}");
        }
        for text in [
            "",
            "abc",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e",
            "1.2.3",
            "--1",
            "e5",
            ".",
        ] {
            assert_eq!(parse_score(text), Err("not a number"), "{text}");
        }
    }
}
