//! `leadscore score` and `leadscore handoff`: settings, logging, the admin port and the
//! service thread, until a signal.

use crate::config::{LogFormat, Settings};
use crate::ops::admin::{self, Health};
use crate::ops::telemetry;
use crate::runtime::shutdown::Shutdown;
use crate::scorer::lookup::Lookup;
use crate::scorer::Scorer;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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

/// A started service, to run on a blocking thread until it stops.
type Run = Box<dyn FnOnce() -> Result<()> + Send>;

pub(super) fn run_score(config: Option<PathBuf>) -> Result<ExitCode> {
    run_service(
        config,
        true,
        |settings, health, shutdown, lookup| async move {
            let scorer = Scorer::start_with(settings, health, lookup).await?;
            Ok(Box::new(move || Ok(scorer.run(shutdown)?)) as Run)
        },
    )
}

pub(super) fn run_handoff(config: Option<PathBuf>) -> Result<ExitCode> {
    run_service(config, false, |settings, health, shutdown, _| async move {
        let handoff = crate::handoff::Handoff::start(settings, health, shutdown).await?;
        Ok(Box::new(move || Ok(handoff.run()?)) as Run)
    })
}

/// How long a Kafka service may take to stop after SIGTERM before the process exits without
/// finishing: under the 60 s grace period the manifests give (docs/operations.md). A stop
/// takes seconds when the broker answers.
const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(50);

/// How long a stop during a service's start waits for the start's blocking steps (a broker
/// request, the store being opened) before the process exits without them.
const STOP_DURING_START: std::time::Duration = std::time::Duration::from_secs(2);

/// What both services share: settings, signals, the admin endpoint, then the service itself;
/// when it ends, the admin endpoint stops too. A signal during the start (no broker yet, a
/// topic being created) ends it there: nothing was processed, so there is nothing to finish
/// (before, the start's own waits of 30-60 s ran out first; an outside check).
fn run_service<F, Fut>(config: Option<PathBuf>, scorer: bool, start: F) -> Result<ExitCode>
where
    F: FnOnce(Settings, Arc<Health>, Shutdown, Arc<Lookup>) -> Fut,
    Fut: std::future::Future<Output = Result<Run>>,
{
    let settings = load_settings(config)?;
    let runtime = runtime()?;
    let result = runtime.block_on(async move {
        let shutdown = Shutdown::new();
        shutdown.on_signals_within(STOP_DEADLINE);
        let health = Health::new();
        // Lead lookup is the scorer's: the handoff serves the common routes only.
        let lookup = Lookup::new(&settings)?;
        let routes = if scorer {
            lookup.routes()
        } else {
            axum::Router::new()
        };
        let addr = admin::serve(
            &settings.admin.listen,
            health.clone(),
            telemetry::prometheus(),
            shutdown.clone(),
            routes,
        )
        .await
        .with_context(|| format!("admin endpoint on {}", settings.admin.listen))?;
        // Only the scorer serves lookups: the handoff announced a route it answers 404.
        if scorer {
            lookup.set_address(&settings, addr);
        }
        let started = tokio::select! {
            started = start(settings, health, shutdown.clone(), lookup) => started,
            () = shutdown.wait() => {
                tracing::info!("stopped during the start: nothing was processed");
                return Ok(ExitCode::SUCCESS);
            }
        };
        let result = match started {
            Ok(run) => tokio::task::spawn_blocking(run)
                .await
                .context("service thread panicked")
                .and_then(|r| r),
            Err(e) => Err(e),
        };
        shutdown.trigger();
        result?;
        Ok(ExitCode::SUCCESS)
    });
    runtime.shutdown_timeout(STOP_DURING_START);
    result
}
