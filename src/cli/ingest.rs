//! `leadscore ingest` and `leadscore warehouse import|export`: settings, logging, the admin
//! port, then the service until a signal.

use crate::config::{LogFormat, Settings};
use crate::ops::admin::{self, Health};
use crate::ops::telemetry;
use crate::runtime::shutdown::Shutdown;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub(super) fn run_ingest(config: Option<PathBuf>) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    telemetry::init_logging(settings.log.format == LogFormat::Json, &settings.log.level);
    // Before the runtime: a bad keys file is a configuration error, said before anything starts.
    settings.ingest.api_keys()?;
    run_with_admin(settings, |settings, health, shutdown| async move {
        let ingest = crate::ingest::Ingest::start(&settings, health).await?;
        ingest.run(shutdown).await
    })
}

/// Which way `leadscore warehouse` syncs.
pub(super) enum Sync {
    Import,
    Export,
}

pub(super) fn run_warehouse(config: Option<PathBuf>, sync: Sync) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    telemetry::init_logging(settings.log.format == LogFormat::Json, &settings.log.level);
    run_with_admin(settings, |settings, health, shutdown| async move {
        match sync {
            Sync::Import => {
                let import = crate::warehouse::import::Importer::start(settings, health).await?;
                import.run(shutdown).await?;
            }
            Sync::Export => {
                let export = crate::warehouse::export::Exporter::start(settings, health).await?;
                export.run(shutdown).await?;
            }
        }
        Ok(())
    })
}

/// Signals, the admin endpoint (the common routes), then `service` until it ends; then the admin
/// endpoint stops too.
fn run_with_admin<F, Fut>(settings: Settings, service: F) -> Result<ExitCode>
where
    F: FnOnce(Settings, Arc<Health>, Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    super::services::runtime()?.block_on(async move {
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        let health = Health::new();
        admin::serve(
            &settings.admin.listen,
            health.clone(),
            telemetry::prometheus(),
            shutdown.clone(),
            axum::Router::new(),
        )
        .await
        .with_context(|| format!("admin endpoint on {}", settings.admin.listen))?;
        let result = service(settings, health, shutdown.clone()).await;
        shutdown.trigger();
        result?;
        Ok(ExitCode::SUCCESS)
    })
}
