//! `leadscore bench`: the engine alone, or with `--scorer` / `--handoff` the services on the
//! embedded broker.

use super::services::runtime;
use crate::ops::telemetry;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

pub(super) fn run_bench(
    events: Option<usize>,
    users: Option<usize>,
    rules: Option<PathBuf>,
    seed: u64,
    scorer: bool,
    handoff: bool,
    lookup: bool,
) -> Result<ExitCode> {
    let table = if lookup {
        telemetry::init_logging(false, "warn,rdkafka::client=off,librdkafka=error");
        let d = crate::bench::lookup::LookupBenchOptions::default();
        crate::bench::lookup::run(&crate::bench::lookup::LookupBenchOptions {
            events: events.unwrap_or(d.events),
            users: users.unwrap_or(d.users),
            seed,
            lookups: d.lookups,
        })?
    } else if handoff {
        telemetry::init_logging(false, "warn,rdkafka::client=off,librdkafka=error");
        runtime()?.block_on(crate::bench::handoff::run(
            &crate::bench::handoff::HandoffBenchOptions::default(),
        ))?
    } else if scorer {
        // rdkafka 0.39 also reports every partition-EOF event, which the bench and the
        // changelog restore read to on purpose, as a client "Global error"; and the
        // bench's consumer property reaches the scorer's producer too (CONFWARN).
        telemetry::init_logging(false, "warn,rdkafka::client=off,librdkafka=error");
        let d = crate::bench::scorer::ScorerBenchOptions::default();
        crate::bench::scorer::run(&crate::bench::scorer::ScorerBenchOptions {
            events: events.unwrap_or(d.events),
            users: users.unwrap_or(d.users),
            seed,
            partitions: d.partitions,
        })?
    } else {
        let d = crate::bench::BenchOptions::default();
        crate::bench::run(&crate::bench::BenchOptions {
            events: events.unwrap_or(d.events),
            users: users.unwrap_or(d.users),
            rules,
            seed,
        })?
    };
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// `leadscore bench --ingest`.
pub(super) fn run_ingest_bench() -> Result<ExitCode> {
    telemetry::init_logging(false, "warn,rdkafka::client=off,librdkafka=error");
    let table = runtime()?.block_on(crate::ingest::bench::run(
        &crate::ingest::bench::IngestBenchOptions::default(),
    ))?;
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
