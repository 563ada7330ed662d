//! The warehouse connection: tokio-postgres without TLS. `sslmode=disable` and `prefer` connect
//! in plain text (prefer finds no TLS to prefer); `require` is refused at connect with a message
//! saying so, rather than failing obscurely.
//!
//! Errors are shown with what the server said ([`PgError`]), and a connection that closed is
//! re-opened with a bounded backoff ([`reconnect`]).

use crate::config::{read_capped_text, CappedFileError, WarehouseSettings};
use crate::runtime::shutdown::Shutdown;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

/// A tokio-postgres error shown in full. Its own `Display` is only "db error" for everything
/// the server refuses; this one gives the server's severity, SQLSTATE, message, detail, hint and
/// the table, column or constraint when the server names them, all on one line (a log line).
#[derive(Debug)]
pub struct PgError(pub tokio_postgres::Error);

impl PgError {
    /// The SQLSTATE the server sent, if it was the server that refused.
    pub fn code(&self) -> Option<&str> {
        self.0.as_db_error().map(|db| db.code().code())
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError(e)
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Details may span lines; a log line must not.
        let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some(db) = self.0.as_db_error() else {
            // Not the server's refusal (I/O, closed, a parameter that does not encode): the
            // top level and its causes, which say what happened.
            write!(f, "{}", self.0)?;
            let mut source = std::error::Error::source(&self.0);
            while let Some(cause) = source {
                write!(f, ": {}", one_line(&cause.to_string()))?;
                source = cause.source();
            }
            return Ok(());
        };
        write!(
            f,
            "{} {}: {}",
            db.severity(),
            db.code().code(),
            one_line(db.message())
        )?;
        if let Some(detail) = db.detail() {
            write!(f, "; detail: {}", one_line(detail))?;
        }
        if let Some(hint) = db.hint() {
            write!(f, "; hint: {}", one_line(hint))?;
        }
        match (db.schema(), db.table()) {
            (Some(schema), Some(table)) => write!(f, "; table: {schema}.{table}")?,
            (None, Some(table)) => write!(f, "; table: {table}")?,
            _ => {}
        }
        if let Some(column) = db.column() {
            write!(f, "; column: {column}")?;
        }
        if let Some(constraint) = db.constraint() {
            write!(f, "; constraint: {constraint}")?;
        }
        Ok(())
    }
}

// No `source`: the Display above already says everything, and a reporter that prints the
// chain would say it twice.
impl std::error::Error for PgError {}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "warehouse.url is not set: the warehouse commands need a PostgreSQL connection string"
    )]
    NoUrl,
    #[error("warehouse.url: {0}")]
    BadUrl(String),
    #[error(
        "warehouse.url asks for sslmode=require, but leadscore connects to PostgreSQL in plain \
         text only (TCP or Unix socket); use sslmode=disable, or a TLS-terminating proxy"
    )]
    TlsRequired,
    #[error("cannot connect to the warehouse at {at}: {source}")]
    Connect { at: String, source: PgError },
    #[error(
        "warehouse: cannot create {what}: {source} (create it in advance, as docs/ingest.md \
         shows, or grant CREATE on its schema)"
    )]
    Create { what: String, source: PgError },
    #[error("warehouse: {0}")]
    Sql(PgError),
    #[error("warehouse password file {} (warehouse.password_file): {message}", .path.display())]
    PasswordFile { path: PathBuf, message: String },
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::Sql(PgError(e))
    }
}

/// The largest password file read: a mistaken path must fail clearly, not fill the memory.
const MAX_PASSWORD_FILE_BYTES: u64 = 64 * 1024;

impl CappedFileError for DbError {
    fn unreadable(path: PathBuf, source: std::io::Error) -> Self {
        let message = source.to_string();
        DbError::PasswordFile { path, message }
    }

    fn too_large(path: PathBuf, max: u64) -> Self {
        let message = format!("larger than {max} bytes, so not a password");
        DbError::PasswordFile { path, message }
    }
}

/// The password in `path`, trimmed (files usually end with a newline).
fn read_password(path: &Path) -> Result<String, DbError> {
    let text = read_capped_text::<DbError>(path, MAX_PASSWORD_FILE_BYTES)?;
    let password = text.trim();
    if password.is_empty() {
        let message = "empty".to_string();
        return Err(DbError::PasswordFile {
            path: path.to_path_buf(),
            message,
        });
    }
    Ok(password.to_string())
}

/// Connects, with the password from `password_file` when the URL has none; the connection is
/// driven by a task of its own, which ends (and logs) when the server goes away.
pub async fn connect(settings: &WarehouseSettings) -> Result<Client, DbError> {
    let url = settings.url.as_deref().ok_or(DbError::NoUrl)?;
    // The parse error and its cause never quote the URL (it may hold a password): they name
    // the option or the part that is wrong ("unknown option `pasword`").
    let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
        DbError::BadUrl(crate::runtime::error::error_chain(&e))
    })?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(DbError::TlsRequired);
    }
    if config.get_password().is_none() {
        if let Some(path) = &settings.password_file {
            config.password(read_password(path)?);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name("leadscore");
    }
    if config.get_connect_timeout().is_none() {
        // A server that does not answer must not hold a reconnection for ever.
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, connection) = config.connect(NoTls).await.map_err(|e| DbError::Connect {
        at: where_to(&config),
        source: PgError(e),
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %PgError(e), "warehouse connection lost");
        }
    });
    Ok(client)
}

/// Where a connection goes, for its errors: `host:port` of each host the URL names (a Unix
/// socket's directory for a socket), and the database. No user or password.
fn where_to(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "the default host".to_string()
    } else {
        hosts.join(", ")
    };
    match config.get_dbname() {
        Some(db) => format!("{hosts}, database {db:?}"),
        None => hosts,
    }
}

/// A table or index a command needs, created when missing. Its `CREATE` runs only when
/// `to_regclass` finds nothing of that name, so a role with no `CREATE` on the schema (or not
/// owning a table or index made for it) runs against relations created in advance.
#[derive(Clone, Debug)]
pub struct Create {
    /// The relation's name as SQL writes it (quoted; schema-qualified when configured so).
    pub name: String,
    /// What it is, for errors: `table "lead_scores" (warehouse.scores_table)`.
    pub what: String,
    /// The statement creating it (`IF NOT EXISTS`: two commands starting at once both pass).
    pub sql: String,
}

impl Create {
    /// The table `name` (quoted) of the setting `setting`, with these columns.
    pub fn table(name: &str, setting: &str, columns: &str) -> Create {
        Create {
            name: name.to_string(),
            what: format!("table {name} ({setting})"),
            sql: format!("CREATE TABLE IF NOT EXISTS {name} ({columns})"),
        }
    }
}

/// Connects (see [`connect`]), then creates what `schema` lists that is missing.
pub async fn connect_and_create(
    settings: &WarehouseSettings,
    schema: &[Create],
) -> Result<Client, DbError> {
    let client = connect(settings).await?;
    for c in schema {
        let missing: bool = client
            .query_one("SELECT to_regclass($1::text) IS NULL", &[&c.name])
            .await?
            .get(0);
        if missing {
            client
                .batch_execute(&c.sql)
                .await
                .map_err(|e| DbError::Create {
                    what: c.what.clone(),
                    source: PgError(e),
                })?;
        }
    }
    Ok(client)
}

/// How long one connection attempt may take when `warehouse.url` sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait between reconnection attempts, doubled after each failure up to the cap.
const RECONNECT_FIRST_WAIT: Duration = Duration::from_millis(500);
const RECONNECT_MAX_WAIT: Duration = Duration::from_secs(30);
/// How long the warehouse may stay unreachable before the command gives up and exits with the
/// last error (a supervisor restarts it, and the outage shows as a restart, not as silence).
pub const RECONNECT_GIVE_UP: Duration = Duration::from_secs(15 * 60);

/// After the connection closed (a server restart, a failover, a network cut): connects again,
/// with `schema` (see [`connect_and_create`]), waiting 0.5 s, 1 s, 2 s ... at most 30 s between
/// attempts, for at most [`RECONNECT_GIVE_UP`]. `Ok(None)` when shutdown came first.
pub async fn reconnect(
    settings: &WarehouseSettings,
    schema: &[Create],
    shutdown: &Shutdown,
) -> Result<Option<Client>, DbError> {
    reconnect_within(settings, schema, shutdown, RECONNECT_GIVE_UP).await
}

async fn reconnect_within(
    settings: &WarehouseSettings,
    schema: &[Create],
    shutdown: &Shutdown,
    give_up: Duration,
) -> Result<Option<Client>, DbError> {
    let started = Instant::now();
    let mut wait = RECONNECT_FIRST_WAIT;
    let mut attempt = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => return Ok(None),
        }
        attempt = attempt.saturating_add(1);
        match connect_and_create(settings, schema).await {
            Ok(client) => {
                tracing::info!(attempt, "warehouse connection re-established");
                return Ok(Some(client));
            }
            // A configuration error does not heal by waiting.
            Err(e @ (DbError::NoUrl | DbError::BadUrl(_) | DbError::TlsRequired)) => return Err(e),
            Err(e) if started.elapsed() >= give_up => {
                tracing::error!(error = %e, attempt, "warehouse still unreachable; giving up");
                return Err(e);
            }
            Err(e) => {
                wait = (wait * 2).min(RECONNECT_MAX_WAIT);
                tracing::warn!(error = %e, attempt, retry_in = ?wait, "warehouse reconnection failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_is_trimmed_and_an_empty_or_huge_one_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("leadscore-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        assert_eq!(read_password(&file("ok", b"s3cret\n")).unwrap(), "s3cret");
        let empty = read_password(&file("empty", b" \n"))
            .unwrap_err()
            .to_string();
        assert!(empty.contains("warehouse.password_file") && empty.contains("empty"));
        let huge = read_password(&file("huge", &[b'x'; 70_000]))
            .unwrap_err()
            .to_string();
        assert!(huge.contains("larger than"), "{huge}");
        assert!(!huge.contains("xxxx"), "never the content");
        let missing = read_password(&dir.join("none")).unwrap_err().to_string();
        assert!(missing.contains("none"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A mistyped connection string is refused naming what is wrong (the option, not only
    /// "invalid connection string"), and never quoting the password.
    #[tokio::test]
    async fn a_mistyped_url_is_refused_naming_the_option_never_the_password() {
        for (url, names) in [
            (
                "host=127.0.0.1 user=ls pasword=hunter2-secret dbname=wh",
                "pasword",
            ),
            (
                "host=127.0.0.1 user=ls dbnme=wh password=hunter2-secret",
                "dbnme",
            ),
            (
                "postgres://ls:hunter2-secret@127.0.0.1/wh?sslmod=disable",
                "sslmod",
            ),
        ] {
            let settings = WarehouseSettings {
                url: Some(url.to_string()),
                ..WarehouseSettings::default()
            };
            let e = connect(&settings).await.expect_err("refused").to_string();
            assert!(e.starts_with("warehouse.url: "), "{e}");
            assert!(e.contains(names), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
    }

    #[tokio::test]
    async fn reconnecting_gives_up_in_bounded_time_saying_why_and_never_retries_a_bad_url() {
        // A port nothing listens on: every attempt is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let settings = WarehouseSettings {
            url: Some(format!("host=127.0.0.1 port={port} user=x dbname=x")),
            ..WarehouseSettings::default()
        };
        let shutdown = Shutdown::new();
        let started = Instant::now();
        let e = reconnect_within(&settings, &[], &shutdown, Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        // 0.5 s, then 1 s: past the limit on the second attempt.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            e.contains("cannot connect") && e.contains("error connecting to server:"),
            "the cause, not only the kind: {e}"
        );
        // Where it tried, as libpq says it (not the user or a password).
        assert!(
            e.contains(&format!("at 127.0.0.1:{port}, database \"x\":")),
            "where: {e}"
        );
        let bad = WarehouseSettings {
            url: Some("sslmode=require host=127.0.0.1".into()),
            ..WarehouseSettings::default()
        };
        let e = reconnect_within(&bad, &[], &shutdown, Duration::from_secs(600))
            .await
            .unwrap_err();
        assert!(matches!(e, DbError::TlsRequired), "{e}");
        shutdown.trigger();
        assert!(
            reconnect_within(&settings, &[], &shutdown, Duration::from_secs(600))
                .await
                .unwrap()
                .is_none()
        );
    }
}
