//! The warehouse connection: tokio-postgres without TLS. `sslmode=disable` and `prefer` connect
//! in plain text (prefer finds no TLS to prefer); `require` is refused at connect with a message
//! saying so, rather than failing obscurely.

use crate::config::WarehouseSettings;
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
}

/// Connects, with the password from `password_env` when the URL has none; the connection is
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
        if let Some(password) = std::env::var(&settings.password_env)
            .ok()
            .filter(|p| !p.is_empty())
        {
            config.password(password);
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
