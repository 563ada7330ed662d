//! `leadscore bench --ingest`: the ingest API's requests and events per second with 75-event
//! bodies, against a bare producer of the same events through the same idempotent producer
//! (the ratio is what the HTTP layer, the parsing and the validation cost), in one run on the
//! embedded broker.

use super::braze::{self, IdBasis, Options, MAX_OBJECTS};
use super::producer::EventProducer;
use super::Ingest;
use crate::dev::broker::DevBroker;
use crate::dev::scratch::ScratchDir;
use crate::event::Event;
use crate::ops::admin::Health;
use crate::runtime::shutdown::Shutdown;
use crate::timestamp::{format_rfc3339, wall_clock_millis};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the ingest benchmark runs.
#[derive(Debug, Clone)]
pub struct IngestBenchOptions {
    /// Requests of 75 events each.
    pub requests: usize,
    /// Requests (and baseline batches) in flight at once.
    pub concurrency: usize,
}

impl Default for IngestBenchOptions {
    fn default() -> Self {
        IngestBenchOptions {
            requests: 400,
            concurrency: 4,
        }
    }
}

const KEY: &str = "leadscore-bench-ingest-key";

/// Request `i`'s body: 75 custom events of distinct users.
fn body(i: usize, time: &str) -> String {
    let events: Vec<serde_json::Value> = (0..MAX_OBJECTS)
        .map(|j| {
            serde_json::json!({
                "external_id": format!("bench-user-{}", (i * MAX_OBJECTS + j) % 20_000),
                "name": "pricing_viewed",
                "time": time,
                "properties": {"plan": "pro", "request": i, "index": j},
            })
        })
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

/// Runs the benchmark and returns a Markdown table.
pub async fn run(opts: &IngestBenchOptions) -> Result<String> {
    if opts.requests == 0 || opts.concurrency == 0 {
        bail!("the ingest bench needs at least one request and one client");
    }
    let dir = ScratchDir::new("ingest-bench")?;
    let broker = DevBroker::start("127.0.0.1:0").await?;
    let mut settings = broker.settings(3)?;
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{KEY}\n")).context("keys file")?;
    settings.ingest.api_keys_file = Some(keys);
    settings.ingest.listen = "127.0.0.1:0".into();
    settings.ingest.rate_limit = u32::MAX;

    let time = format_rfc3339(wall_clock_millis());
    let bodies: Arc<Vec<String>> = Arc::new((0..opts.requests).map(|i| body(i, &time)).collect());
    // The baseline produces exactly the events the API would, translated up front.
    let batches: Vec<Vec<Event>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let request = format!("bench-{i}");
            let o = Options {
                score_attribute: "lead_score",
                received: wall_clock_millis(),
                max_future_skew_ms: 3_600_000,
                format: settings.scorer.input_format,
                max_event_bytes: settings.scorer.max_event_bytes,
                ids: IdBasis::Request(&request),
            };
            braze::translate(b.as_bytes(), &o).map(|batch| batch.events)
        })
        .collect::<Result<_, _>>()
        .context("bench bodies")?;
    let events = opts.requests * MAX_OBJECTS;

    let producer = Arc::new(EventProducer::start(&settings, Duration::from_secs(30)).await?);
    let batches = Arc::new(batches);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..opts.concurrency {
        let (producer, batches, n) = (producer.clone(), batches.clone(), opts.concurrency);
        tasks.push(tokio::spawn(async move {
            for batch in batches.iter().skip(c).step_by(n) {
                producer.produce_all(batch, Duration::from_secs(30)).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let bare = started.elapsed();

    let shutdown = Shutdown::new();
    let ingest = Ingest::start(&settings, Health::new()).await?;
    let addr = ingest.local_addr()?;
    let server = tokio::spawn(ingest.run(shutdown.clone()));
    let url = format!("http://{addr}/users/track");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..opts.concurrency {
        let (http, bodies, url, n) = (http.clone(), bodies.clone(), url.clone(), opts.concurrency);
        tasks.push(tokio::spawn(async move {
            for body in bodies.iter().skip(c).step_by(n) {
                let answer = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                if answer.status().as_u16() != 201 {
                    bail!(
                        "ingest answered {}: {}",
                        answer.status(),
                        answer.text().await?
                    );
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let api = started.elapsed();
    shutdown.trigger();
    let _ = server.await;

    let per_s = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let rows = [
        (
            format!(
                "ingest requests ({MAX_OBJECTS} events each, {} clients)",
                opts.concurrency
            ),
            per_s(opts.requests, api),
            "requests/s",
        ),
        ("ingest events".to_string(), per_s(events, api), "events/s"),
        (
            format!("bare producer, same events ({} tasks)", opts.concurrency),
            per_s(events, bare),
            "events/s",
        ),
        (
            "ingest / bare producer".to_string(),
            bare.as_secs_f64() / api.as_secs_f64().max(1e-9),
            "ratio",
        ),
    ];
    writeln!(out, "| metric | value | unit |\n|---|---|---|")?;
    for (name, value, unit) in rows {
        writeln!(out, "| {name} | {value:.2} | {unit} |")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_reports_both_rates_and_their_ratio() -> Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let table = rt.block_on(run(&IngestBenchOptions {
            requests: 8,
            concurrency: 2,
        }))?;
        let report = crate::bench::parse_report(&table);
        for key in [
            "ingest requests (75 events each, 2 clients)",
            "ingest events",
            "bare producer, same events (2 tasks)",
            "ingest / bare producer",
        ] {
            let value: f64 = report
                .get(key)
                .unwrap_or_else(|| panic!("{key} in {table}"))
                .parse()?;
            assert!(value > 0.0, "{key}: {value}");
        }
        Ok(())
    }
}
