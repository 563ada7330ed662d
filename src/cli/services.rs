//! `leadscore score` and `leadscore handoff`: settings, logging, the admin port and the
//! service thread, until a signal.

use crate::config::{LogFormat, Settings};
use crate::ops::admin::{self, Health};
use crate::ops::telemetry;
use crate::runtime::shutdown::Shutdown;
use crate::scorer::Scorer;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load_settings(config: Option<PathBuf>) -> Result<Settings> {
    let settings = Settings::load(config.as_deref())?;
    telemetry::init_logging(settings.log.format == LogFormat::Json, &settings.log.level);
    Ok(settings)
}

pub(super) fn run_score(config: Option<PathBuf>) -> Result<ExitCode> {
    run_service(config, |settings, health, shutdown| async move {
        let scorer = Scorer::start(settings, health).await?;
        let result = tokio::task::spawn_blocking(move || scorer.run(shutdown)).await;
        result.context("scorer thread panicked")??;
        Ok(())
    })
}

pub(super) fn run_handoff(config: Option<PathBuf>) -> Result<ExitCode> {
    run_service(config, |settings, health, shutdown| async move {
        let handoff = crate::handoff::Handoff::start(settings, health, shutdown).await?;
        let result = tokio::task::spawn_blocking(move || handoff.run()).await;
        result.context("handoff thread panicked")??;
        Ok(())
    })
}

/// What both services share: settings, signals, the admin endpoint, then the service itself;
/// when it ends, the admin endpoint stops too.
fn run_service<F, Fut>(config: Option<PathBuf>, service: F) -> Result<ExitCode>
where
    F: FnOnce(Settings, std::sync::Arc<Health>, Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let settings = load_settings(config)?;
    runtime()?.block_on(async move {
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        let health = Health::new();
        admin::serve(
            &settings.admin.listen,
            health.clone(),
            telemetry::prometheus(),
            shutdown.clone(),
        )
        .await
        .with_context(|| format!("admin endpoint on {}", settings.admin.listen))?;
        let result = service(settings, health, shutdown.clone()).await;
        shutdown.trigger();
        result?;
        Ok(ExitCode::SUCCESS)
    })
}
