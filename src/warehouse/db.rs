//! The warehouse connection: tokio-postgres without TLS. `sslmode=disable` and `prefer` connect
//! in plain text (prefer finds no TLS to prefer); `require` is refused at connect with a message
//! saying so, rather than failing obscurely.

use crate::config::{read_capped_text, CappedFileError, WarehouseSettings};
use std::path::{Path, PathBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

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
    #[error("cannot connect to the warehouse: {0}")]
    Connect(tokio_postgres::Error),
    #[error("warehouse: {0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("warehouse password file {} (warehouse.password_file): {message}", .path.display())]
    PasswordFile { path: PathBuf, message: String },
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
    // The parse error never quotes the URL: it may hold a password.
    let mut config: Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::BadUrl(e.to_string()))?;
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
    let (client, connection) = config.connect(NoTls).await.map_err(DbError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "warehouse connection lost");
        }
    });
    Ok(client)
}

/// Connects (see [`connect`]), then runs `schema`: the statements creating the tables a command
/// needs when they are missing.
pub async fn connect_and_create(
    settings: &WarehouseSettings,
    schema: &str,
) -> Result<Client, DbError> {
    let client = connect(settings).await?;
    client.batch_execute(schema).await.map_err(DbError::Sql)?;
    Ok(client)
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
}
