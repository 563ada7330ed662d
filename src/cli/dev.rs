//! The development commands: `leadscore demo`, `leadscore dev-broker`,
//! `leadscore salesforce-standin`.

use super::services::runtime;
use crate::dev::broker::DevBroker;
use crate::ops::telemetry;
use crate::runtime::shutdown::Shutdown;
use anyhow::{Context, Result};
use std::io::{self, Write};
use std::process::ExitCode;

pub(super) fn run_demo(users: usize, events: usize, seconds: u64) -> Result<ExitCode> {
    telemetry::init_logging(false, "warn");
    runtime()?.block_on(crate::dev::demo::run(crate::dev::demo::DemoOptions {
        users,
        events,
        pace: std::time::Duration::from_secs(seconds),
        ..Default::default()
    }))?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_dev_broker(
    listen: &str,
    partitions: i32,
    extra: &[String],
    round_trip_ms: u32,
    tls: Option<&crate::dev::broker::Tls>,
) -> Result<ExitCode> {
    telemetry::init_logging(false, "info");
    use crate::dev::broker::{check_partitions, check_topic};
    check_partitions(partitions).map_err(|e| anyhow::anyhow!("--partitions {partitions}: {e}"))?;
    let mut wanted: Vec<(String, i32)> = Vec::new();
    for t in extra {
        let (name, n) = match t.rsplit_once(':') {
            Some((name, n)) => (
                name,
                n.parse::<i32>().ok().filter(|n| *n > 0).with_context(|| {
                    format!("--topic {t:?}: PARTITIONS must be a positive integer")
                })?,
            ),
            None => (t.as_str(), partitions),
        };
        check_topic(name, n).map_err(|e| anyhow::anyhow!("--topic {t:?}: {e}"))?;
        wanted.push((name.to_string(), n));
    }
    runtime()?.block_on(async move {
        let broker = DevBroker::start_with(listen, tls).await?;
        if round_trip_ms > 0 {
            broker.set_round_trip(std::time::Duration::from_millis(round_trip_ms.into()))?;
        }
        let topics = crate::config::Topics::default();
        for (_, name) in topics.names() {
            if !wanted.iter().any(|(w, _)| w == name) {
                broker.create_topic(name, partitions)?;
            }
        }
        // The lead lookup directory of the default scorer group (one partition; with another
        // group id, add it with --topic <group>-instances:1).
        let instances = crate::config::Settings::default().instances_topic();
        if !wanted.iter().any(|(w, _)| *w == instances) {
            broker.create_topic(&instances, 1)?;
        }
        for (name, n) in &wanted {
            broker.create_topic(name, *n)?;
        }
        println!("bootstrap.servers={}", broker.bootstrap_servers());
        io::stdout().flush()?;
        eprintln!(
            "dev-broker: mock Kafka cluster on {}{} with leadscore's topics ({partitions} partitions each); Ctrl-C stops it",
            broker.bootstrap_servers(),
            if tls.is_some() { " (TLS)" } else { "" }
        );
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        shutdown.wait().await;
        drop(broker);
        Ok(ExitCode::SUCCESS)
    })
}

/// `leadscore salesforce-standin`: prints `salesforce.instance_url=URL` first on stdout, so a
/// script can read where it listens, then serves until Ctrl-C.
pub(super) fn run_salesforce_standin(
    listen: &str,
    client_id: String,
    faults: crate::dev::standin::Faults,
) -> Result<ExitCode> {
    telemetry::init_logging(false, "info");
    for (flag, rate) in [
        ("--unavailable-rate", faults.unavailable_rate),
        ("--lock-rate", faults.lock_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            anyhow::bail!("{flag} {rate}: a share between 0 and 1");
        }
    }
    const SECRET_ENV: &str = "LEADSCORE_SALESFORCE_CLIENT_SECRET";
    let secret = match std::env::var(SECRET_ENV) {
        Ok(s) if !s.is_empty() => s,
        _ => {
            eprintln!("salesforce-standin: warning: {SECRET_ENV} is unset; accepting the client secret \"dev-secret\"");
            "dev-secret".to_string()
        }
    };
    let cfg = crate::dev::standin::StandinConfig {
        client_id,
        client_secret: crate::config::Secret::new(secret),
        faults,
        ..Default::default()
    };
    runtime()?.block_on(async move {
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        let (addr, _standin) = crate::dev::standin::serve(listen, cfg, shutdown.clone())
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        println!("salesforce.instance_url=http://{addr}");
        io::stdout().flush()?;
        eprintln!("salesforce-standin: Salesforce stand-in on http://{addr} (GET /standin/leads shows the leads); Ctrl-C stops it");
        shutdown.wait().await;
        Ok(ExitCode::SUCCESS)
    })
}
