//! `[warehouse]`: `leadscore warehouse import` and `export`, the PostgreSQL warehouse sync.

use super::load::Sources;
use super::*;

/// `leadscore warehouse import|export` (docs/ingest.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarehouseSettings {
    /// The PostgreSQL connection string, as libpq writes it: `host=db user=leadscore
    /// dbname=warehouse` or `postgresql://leadscore@db/warehouse`. Plain TCP or a Unix socket
    /// only: `sslmode=disable` and `prefer` connect unencrypted, `require` fails. The password
    /// is better left out of it: see `password_file`.
    pub url: Option<String>,
    /// A file holding the database password (a mounted secret), used when the connection
    /// string has none, so the password need not sit in a config file or a variable.
    pub password_file: Option<PathBuf>,
    /// The table or view `import` polls: one row per user with the latest external score.
    pub import_table: String,
    /// Its user id column (read as text).
    pub user_id_column: String,
    /// Its score column (an integer type).
    pub score_column: String,
    /// Its `timestamp with time zone` column: when the row's score was computed.
    pub updated_at_column: String,
    /// How often `import` polls when the last poll found nothing new.
    #[serde(deserialize_with = "deserialize_duration")]
    pub poll_interval: Duration,
    /// Rows per poll: one batch is produced and acknowledged before the next is read.
    pub batch_size: usize,
    /// The table in the warehouse where `import` keeps its watermark (created when missing).
    pub watermark_table: String,
    /// The watermark's row in it, so several imports can share the table; default: the import
    /// table's name.
    pub import_name: Option<String>,
    /// The consumer group of `export` on the score changes topic.
    pub export_group_id: String,
    /// Each lead's current score and status (created when missing).
    pub scores_table: String,
    /// The history of score changes, keyed by the change's event id (created when missing).
    pub changes_table: String,
    /// Changes per database transaction at most.
    pub export_batch: usize,
}

impl Default for WarehouseSettings {
    fn default() -> Self {
        WarehouseSettings {
            url: None,
            password_file: None,
            import_table: "lead_score_imports".to_string(),
            user_id_column: "user_id".to_string(),
            score_column: "score".to_string(),
            updated_at_column: "updated_at".to_string(),
            poll_interval: Duration::from_secs(10),
            batch_size: 1000,
            watermark_table: "leadscore_import_watermarks".to_string(),
            import_name: None,
            export_group_id: "leadscore-warehouse-export".to_string(),
            scores_table: "lead_scores".to_string(),
            changes_table: "lead_score_changes".to_string(),
            export_batch: 500,
        }
    }
}

/// `name` as a quoted SQL identifier: `schema.table` becomes `"schema"."table"`. `None` when a
/// part is empty or holds a `"` or a NUL, which no quoting could make safe to read.
pub fn quote_identifier(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2
        || parts
            .iter()
            .any(|p| p.is_empty() || p.contains(['"', '\0']) || p.len() > 63)
    {
        return None;
    }
    Some(
        parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join("."),
    )
}

impl WarehouseSettings {
    /// The watermark's row name.
    pub fn import_name(&self) -> &str {
        self.import_name.as_deref().unwrap_or(&self.import_table)
    }
}

impl Settings {
    /// `[warehouse]`: identifiers SQL can quote, positive sizes.
    pub(super) fn check_warehouse(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let w = &self.warehouse;
        let tables = [
            ("warehouse.import_table", &w.import_table),
            ("warehouse.watermark_table", &w.watermark_table),
            ("warehouse.scores_table", &w.scores_table),
            ("warehouse.changes_table", &w.changes_table),
        ];
        for (key, name) in tables {
            if quote_identifier(name).is_none() {
                return Err(sources.invalid(
                    &[key],
                    format!(
                        "\"{name}\" is not a table name (NAME or SCHEMA.NAME, at most 63 \
                         characters each, without '\"')"
                    ),
                ));
            }
        }
        let columns = [
            ("warehouse.user_id_column", &w.user_id_column),
            ("warehouse.score_column", &w.score_column),
            ("warehouse.updated_at_column", &w.updated_at_column),
        ];
        for (key, name) in columns {
            if name.contains('.') || quote_identifier(name).is_none() {
                return Err(sources.invalid(
                    &[key],
                    format!(
                        "\"{name}\" is not a column name (at most 63 characters, no '\"' or '.')"
                    ),
                ));
            }
        }
        if w.scores_table == w.changes_table {
            return Err(sources.invalid(
                &["warehouse.changes_table", "warehouse.scores_table"],
                "must differ from warehouse.scores_table",
            ));
        }
        let sizes = [
            (w.batch_size > 0, "warehouse.batch_size"),
            (w.export_batch > 0, "warehouse.export_batch"),
            (!w.poll_interval.is_zero(), "warehouse.poll_interval"),
        ];
        for (ok, key) in sizes {
            if !ok {
                return Err(sources.invalid(&[key], "must be greater than 0"));
            }
        }
        if w.export_group_id.is_empty() {
            return Err(sources.invalid(&["warehouse.export_group_id"], "must not be empty"));
        }
        // The export reads `lead-score-changes` as the handoff does: one group would share
        // its partitions out between the two, and leads on the export's would never be handed
        // off. (The scorer's group reads the input: sharing it would split that.)
        for (other, key) in [
            (&self.handoff.group_id, "handoff.group_id"),
            (&self.scorer.group_id, "scorer.group_id"),
        ] {
            if &w.export_group_id == other {
                return Err(sources.invalid(
                    &["warehouse.export_group_id", key],
                    format!(
                        "must differ from {key}: each consumer of the changes needs a group of \
                         its own"
                    ),
                ));
            }
        }
        if w.url.as_deref() == Some("") {
            return Err(sources.invalid(&["warehouse.url"], "must not be empty"));
        }
        Ok(())
    }
}
