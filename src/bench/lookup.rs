//! `leadscore bench --lookup`: how long `GET /v1/leads/{user_id}` takes, answered by the
//! partition's owner (local) and forwarded by another instance to the owner (forwarded).
//!
//! Two scorers run in this process on the embedded broker, sharing 4 partitions, with lookup
//! on; generated traffic is scored first, then one client asks instance A for users A owns and
//! for users B owns, one request at a time over a kept-alive connection, and reports the
//! percentiles. The client, both scorers and the broker share the machine's cores: the numbers
//! are an upper bound for a quiet deployment, not a forecast.

use crate::codec::{self, Format};
use crate::dev::broker::DevBroker;
use crate::dev::scratch::ScratchDir;
use crate::generator::{self, GeneratorConfig};
use crate::ops::admin::{self, Health};
use crate::ops::telemetry;
use crate::rules::Rules;
use crate::runtime::shutdown::Shutdown;
use crate::scorer::lookup::Lookup;
use crate::scorer::Scorer;
use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What `leadscore bench --lookup` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct LookupBenchOptions {
    pub users: usize,
    pub events: usize,
    /// Lookups timed per kind (local, forwarded).
    pub lookups: usize,
    pub seed: u64,
}

impl Default for LookupBenchOptions {
    /// 10,000 lookups of each kind, as issue 11 asks, over 2,000 scored users.
    fn default() -> Self {
        LookupBenchOptions {
            users: 2_000,
            events: 20_000,
            lookups: 10_000,
            seed: 42,
        }
    }
}

const PARTITIONS: i32 = 4;

/// Runs the benchmark and returns its Markdown report. Blocking: call it outside any runtime.
pub fn run(opts: &LookupBenchOptions) -> Result<String> {
    if opts.lookups == 0 || opts.users == 0 {
        bail!("nothing to measure");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let dir = ScratchDir::new("lookup-bench")?;
    let broker = runtime.block_on(DevBroker::start("127.0.0.1:0"))?;
    let result = measure(opts, &runtime, &broker, &dir);
    drop(broker);
    drop(runtime);
    result
}

struct Instance {
    port: u16,
    url: String,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<Result<(), crate::scorer::ScorerError>>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn measure(
    opts: &LookupBenchOptions,
    runtime: &tokio::runtime::Runtime,
    broker: &DevBroker,
    dir: &ScratchDir,
) -> Result<String> {
    let mut settings = broker.settings(PARTITIONS)?;
    let rules_path = dir.path().join("seed-canvas.toml");
    std::fs::write(&rules_path, Rules::SEED_CANVAS).context("writing the seed canvas")?;
    settings.scorer.rules = Some(rules_path);
    settings.scorer.group_id = "leadscore-bench-lookup".into();
    settings.scorer.follow_wall_clock = false;
    settings.admin.lookup = true;
    settings.admin.listen = "127.0.0.1:0".into();
    broker.create_topic(&settings.instances_topic(), 1)?;

    // The traffic, scored before any lookup.
    let events = generator::generate(&GeneratorConfig {
        users: opts.users,
        events: opts.events,
        seed: opts.seed,
        ..GeneratorConfig::default()
    });
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .context("producer")?;
    for e in &events {
        let payload = codec::encode_event(Format::Json, e);
        let mut record = BaseRecord::to(&settings.topics.input)
            .key(&*e.user_id)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the input")?;
    let mut users: Vec<String> = events.iter().map(|e| e.user_id.to_string()).collect();
    users.sort();
    users.dedup();
    drop(events);

    let start = |name: &str| -> Result<Instance> {
        let mut s = settings.clone();
        s.scorer.state_dir = dir.path().join(name);
        let health = Health::new();
        let shutdown = Shutdown::new();
        let lookup = Lookup::new(&s)?;
        let addr = runtime.block_on(admin::serve(
            &s.admin.listen,
            health.clone(),
            telemetry::prometheus(),
            shutdown.clone(),
            lookup.routes(),
        ))?;
        lookup.set_address(&s, addr);
        let url = lookup.url().unwrap_or_default().to_string();
        let scorer = runtime
            .block_on(Scorer::start_with(s, health, lookup))
            .with_context(|| format!("starting scorer {name}"))?;
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || scorer.run(stop));
        Ok(Instance {
            port: addr.port(),
            url,
            shutdown,
            thread: Some(thread),
        })
    };
    let a = start("a")?;
    let b = start("b")?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let get = |port: u16, user: &str| -> Result<(u16, serde_json::Value)> {
        let r = client
            .get(format!("http://127.0.0.1:{port}/v1/leads/{user}"))
            .send()?;
        let status = r.status().as_u16();
        Ok((status, r.json().unwrap_or_default()))
    };
    // Both own a share and every user answers: scored and settled.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut local, mut forwarded) = (Vec::new(), Vec::new());
    loop {
        local.clear();
        forwarded.clear();
        let mut all = true;
        for u in &users {
            match get(a.port, u)? {
                (200, v) if v["owner_url"] == a.url.as_str() => local.push(u.clone()),
                (200, v) if v["owner_url"] == b.url.as_str() => forwarded.push(u.clone()),
                _ => {
                    all = false;
                    break;
                }
            }
        }
        if all && !local.is_empty() && !forwarded.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the two scorers did not settle with every user answering within 180 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let timed = |who: &[String]| -> Result<Vec<Duration>> {
        let mut took = Vec::with_capacity(opts.lookups);
        for i in 0..opts.lookups {
            let user = &who[i % who.len()];
            let t = Instant::now();
            let (status, _) = get(a.port, user)?;
            took.push(t.elapsed());
            if status != 200 {
                return Err(anyhow!("lookup of {user} answered {status} during the run"));
            }
        }
        took.sort();
        Ok(took)
    };
    let local_times = timed(&local)?;
    let forwarded_times = timed(&forwarded)?;
    drop(a);
    drop(b);
    Ok(report(opts, &local_times, &forwarded_times))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(opts: &LookupBenchOptions, local: &[Duration], forwarded: &[Duration]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lead lookup: {} lookups of each kind through instance A, {} users scored on 2 scorers (4 partitions), embedded broker, one client",
        opts.lookups, opts.users
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| metric | value | note |");
    let _ = writeln!(out, "|---|---|---|");
    for (kind, times, note) in [
        ("local", local, "A owns the user's partition"),
        ("forwarded", forwarded, "A forwards to B, the owner"),
    ] {
        let total: f64 = times.iter().map(Duration::as_secs_f64).sum();
        let _ = writeln!(
            out,
            "| lookup {kind}, p50 (ms) | {:.3} | {note} |",
            percentile(times, 0.5)
        );
        let _ = writeln!(
            out,
            "| lookup {kind}, p99 (ms) | {:.3} | {note} |",
            percentile(times, 0.99)
        );
        let _ = writeln!(
            out,
            "| lookup {kind}, rate (lookups/s) | {:.0} | one client, one at a time |",
            times.len() as f64 / total.max(1e-9)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_reports_every_figure() -> Result<()> {
        let report = run(&LookupBenchOptions {
            users: 100,
            events: 1_000,
            lookups: 200,
            seed: 3,
        })?;
        let values = crate::bench::parse_report(&report);
        crate::bench::assert_positive(
            &values,
            &[
                "lookup local, p50 (ms)",
                "lookup local, p99 (ms)",
                "lookup local, rate (lookups/s)",
                "lookup forwarded, p50 (ms)",
                "lookup forwarded, p99 (ms)",
                "lookup forwarded, rate (lookups/s)",
            ],
            &report,
        );
        Ok(())
    }
}
