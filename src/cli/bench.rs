//! `leadscore bench`: the engine alone, or with `--scorer` / `--handoff` the services on the
//! embedded broker; with `--scale` how one instance's cost grows with its users.

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
    handoff: Option<f64>,
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
    } else if let Some(unavailable_rate) = handoff {
        telemetry::init_logging(false, "warn,rdkafka::client=off,librdkafka=error");
        let d = crate::bench::handoff::HandoffBenchOptions::default();
        runtime()?.block_on(crate::bench::handoff::run(
            &crate::bench::handoff::HandoffBenchOptions {
                leads: users.unwrap_or(d.leads),
                unavailable_rate,
                ..d
            },
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

/// `leadscore bench --scale`: prints the table, writes the CSV.
pub(super) fn run_scale_bench(
    users: Option<crate::bench::scale::ScaleUsers>,
    csv: Option<PathBuf>,
    events: Option<usize>,
    seed: u64,
) -> Result<ExitCode> {
    // As for --scorer: partition-EOF events reach the log as client errors, on purpose here.
    telemetry::init_logging(false, "warn,rdkafka::client=off,librdkafka=error");
    let d = crate::bench::scale::ScaleOptions::default();
    let table = crate::bench::scale::run(&crate::bench::scale::ScaleOptions {
        users: users.map_or(d.users, |u| u.0),
        stretch: events.unwrap_or(d.stretch),
        seed,
        csv: csv.unwrap_or(d.csv),
    })?;
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// The hidden child of `bench --scale`: one line of VmRSS figures on stdout.
pub(super) fn run_scale_child(users: usize, seed: u64) -> Result<ExitCode> {
    println!("{}", crate::bench::scale::child(users, seed)?);
    Ok(ExitCode::SUCCESS)
}
