//! The command line. `main` calls [`run`]; each subcommand parses its arguments into ready
//! values and hands them to the library.

use crate::admin::{self, Health};
use crate::config::{LogFormat, Settings};
use crate::devbroker::DevBroker;
use crate::engine::Engine;
use crate::scorer::Scorer;
use crate::shutdown::Shutdown;
use crate::{codec, rules, simulate, telemetry, timestamp};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::{self, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "leadscore", version, about = "Real-time lead scoring on Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the scoring engine offline over a JSONL file of input events.
    Simulate {
        /// The rules file (TOML).
        #[arg(long)]
        rules: PathBuf,
        /// Input events, one JSON object per line.
        #[arg(long)]
        events: PathBuf,
        /// Move the clock on to this RFC 3339 time at the end, firing due inactivity timers.
        #[arg(long)]
        now: Option<String>,
        /// Print the score changes instead of the users' final state.
        #[arg(long)]
        changes: bool,
        /// Split the events into this many partitions by user id (Kafka's default
        /// partitioner), each with its own clock, as the scorer would see them.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
    /// Work with rules files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Measure the engine, the decoders and the state size (Markdown table); with --scorer,
    /// the scorer service on Kafka.
    Bench {
        /// Generated events [default: 1000000; with --scorer 200000, which keeps the input
        /// within the embedded broker's retention].
        #[arg(long)]
        events: Option<usize>,
        /// Generated users [default: 100000; with --scorer 20000].
        #[arg(long)]
        users: Option<usize>,
        /// Rules file (default: the seed canvas).
        #[arg(long, conflicts_with = "scorer")]
        rules: Option<PathBuf>,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Benchmark the scorer service end to end instead, in this process on the embedded
        /// broker (3 partitions, seed canvas, default scorer settings): throughput against a
        /// plain consumer, produce-to-score-change latency, changelog restore rate, state on
        /// disk.
        #[arg(long)]
        scorer: bool,
        /// Benchmark the handoff instead: leads per second and Salesforce API calls per 1,000
        /// leads against the stand-in (5,000 leads, embedded broker).
        #[arg(long, conflicts_with_all = ["scorer", "rules"])]
        handoff: bool,
    },
    /// Run the scorer service: input events to score changes, state in a changelog.
    Score {
        /// Settings file (TOML); environment variables LEADSCORE__SECTION__KEY override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the handoff service: leads crossing the threshold to Salesforce.
    Handoff {
        /// Settings file (TOML); environment variables LEADSCORE__SECTION__KEY override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The whole pipeline in one process, no setup: embedded broker, scorer, generated events.
    Demo {
        /// Generated users.
        #[arg(long, default_value_t = 300)]
        users: usize,
        /// Generated events.
        #[arg(long, default_value_t = 9_000)]
        events: usize,
        /// Seconds the generated traffic takes to produce.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// Run a local stand-in for Salesforce (OAuth token, Lead updates, sObject Collections)
    /// with injectable faults. The client secret comes from LEADSCORE_SALESFORCE_CLIENT_SECRET.
    SalesforceStandin {
        /// The address to serve on; its URL is salesforce.instance_url.
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: String,
        /// The connected app's consumer key the token endpoint accepts.
        #[arg(long, default_value = "leadscore-dev")]
        client_id: String,
        /// Share of API calls answered 503 SERVER_UNAVAILABLE (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        unavailable_rate: f64,
        /// Share of records failing with UNABLE_TO_LOCK_ROW (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        lock_rate: f64,
        /// A token is good for this many API calls, then 401 INVALID_SESSION_ID.
        #[arg(long)]
        token_ttl_calls: Option<u32>,
        /// After this many API calls, 403 REQUEST_LIMIT_EXCEEDED.
        #[arg(long)]
        daily_limit: Option<u64>,
        /// Added before every answer, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Seed of the fault draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the embedded Kafka-protocol broker alone, for local development.
    DevBroker {
        /// The address clients connect to (bootstrap.servers).
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: String,
        /// Partitions of the topics it creates.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Another topic to create, as NAME or NAME:PARTITIONS (repeatable). The mock broker
        /// does not implement topic creation by clients, so topics are made here.
        #[arg(long = "topic", value_name = "NAME[:PARTITIONS]")]
        topics: Vec<String>,
        /// Delay every answer of the broker by this many milliseconds, as a distant broker
        /// would (fault injection for tests: a restore slow enough to watch).
        #[arg(long, default_value_t = 0)]
        round_trip_ms: u32,
        /// Serve TLS with this certificate chain (PEM); clients then connect with
        /// security.protocol=ssl. Needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Validate rules files: a one-line summary each, or every error with its line and key.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Parses the command line and runs it. Exit codes: 0 success, 1 the input had errors
/// (reported on stderr), 2 usage errors.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        // `leadscore simulate | head`: the reader left; not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Simulate {
            rules,
            events,
            now,
            changes,
            partitions,
        } => run_simulate(rules, events, now, changes, partitions),
        Command::Rules {
            command: RulesCommand::Check { files },
        } => Ok(rules_check(&files)),
        Command::Score { config } => run_score(config),
        Command::Handoff { config } => run_handoff(config),
        Command::Demo {
            users,
            events,
            seconds,
        } => {
            telemetry::init_logging(false, "warn");
            runtime()?.block_on(crate::demo::run(crate::demo::DemoOptions {
                users,
                events,
                pace: std::time::Duration::from_secs(seconds),
                ..Default::default()
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            events,
            users,
            rules,
            seed,
            scorer,
            handoff,
        } => {
            let table = if handoff {
                telemetry::init_logging(false, "warn,rdkafka::client=off,librdkafka=error");
                runtime()?.block_on(crate::handoff_bench::run(
                    &crate::handoff_bench::HandoffBenchOptions::default(),
                ))?
            } else if scorer {
                // rdkafka 0.39 also reports every partition-EOF event, which the bench and the
                // changelog restore read to on purpose, as a client "Global error"; and the
                // bench's consumer property reaches the scorer's producer too (CONFWARN).
                telemetry::init_logging(false, "warn,rdkafka::client=off,librdkafka=error");
                let d = crate::scorer_bench::ScorerBenchOptions::default();
                crate::scorer_bench::run(&crate::scorer_bench::ScorerBenchOptions {
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
        Command::DevBroker {
            listen,
            partitions,
            topics,
            round_trip_ms,
            tls_cert,
            tls_key,
        } => {
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| crate::devbroker::Tls { cert, key });
            run_dev_broker(&listen, partitions, &topics, round_trip_ms, tls.as_ref())
        }
        Command::SalesforceStandin {
            listen,
            client_id,
            unavailable_rate,
            lock_rate,
            token_ttl_calls,
            daily_limit,
            latency_ms,
            seed,
        } => run_salesforce_standin(
            &listen,
            client_id,
            crate::sfstandin::Faults {
                token_ttl_calls,
                unavailable_rate,
                lock_rate,
                daily_limit,
                latency: std::time::Duration::from_millis(latency_ms),
                seed,
                ..Default::default()
            },
        ),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
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

fn run_score(config: Option<PathBuf>) -> Result<ExitCode> {
    run_service(config, |settings, health, shutdown| async move {
        let scorer = Scorer::start(settings, health).await?;
        let result = tokio::task::spawn_blocking(move || scorer.run(shutdown)).await;
        result.context("scorer thread panicked")??;
        Ok(())
    })
}

fn run_handoff(config: Option<PathBuf>) -> Result<ExitCode> {
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

fn run_dev_broker(
    listen: &str,
    partitions: i32,
    extra: &[String],
    round_trip_ms: u32,
    tls: Option<&crate::devbroker::Tls>,
) -> Result<ExitCode> {
    telemetry::init_logging(false, "info");
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
fn run_salesforce_standin(
    listen: &str,
    client_id: String,
    faults: crate::sfstandin::Faults,
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
    let cfg = crate::sfstandin::StandinConfig {
        client_id,
        client_secret: crate::config::Secret::new(secret),
        faults,
        ..Default::default()
    };
    runtime()?.block_on(async move {
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        let (addr, _standin) = crate::sfstandin::serve(listen, cfg, shutdown.clone())
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        println!("salesforce.instance_url=http://{addr}");
        io::stdout().flush()?;
        eprintln!("salesforce-standin: Salesforce stand-in on http://{addr} (GET /standin/leads shows the leads); Ctrl-C stops it");
        shutdown.wait().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn load_rules(path: &std::path::Path) -> Result<rules::Rules> {
    rules::load_file(path).map_err(|e| anyhow::anyhow!("invalid rules:\n{e}"))
}

fn run_simulate(
    rules_path: PathBuf,
    events: PathBuf,
    now: Option<String>,
    changes: bool,
    partitions: i32,
) -> Result<ExitCode> {
    let engine = Engine::new(load_rules(&rules_path)?);
    let now = now
        .map(|s| timestamp::parse_rfc3339(&s).with_context(|| format!("--now {s:?}")))
        .transpose()?;
    let file = std::fs::File::open(&events)
        .with_context(|| format!("cannot open events file {}", events.display()))?;
    let sim = simulate::run_partitioned(&engine, BufReader::new(file), now, partitions)
        .with_context(|| format!("reading {}", events.display()))?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if changes {
        for c in &sim.changes {
            writeln!(out, "{}", codec::change_to_json(c))?;
        }
    } else {
        for (user, st) in &sim.users {
            writeln!(out, "{}", simulate::user_json(user, st))?;
        }
    }
    out.flush()?;
    for bad in &sim.bad_lines {
        eprintln!("{}:{}: {}", events.display(), bad.line, bad.reason);
    }
    Ok(if sim.bad_lines.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{} of the input lines were bad and skipped",
            sim.bad_lines.len()
        );
        ExitCode::from(1)
    })
}

fn rules_check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for f in files {
        match rules::load_file(f) {
            Ok(r) => println!(
                "{}: ok: score {:?}, {} entry matcher(s), {} group(s), {} audience predicate(s), inactivity {}",
                f.display(),
                r.score.name,
                r.entry.on.len(),
                r.groups.len(),
                r.audience.include.len() + r.audience.exclude.len(),
                match r.inactivity {
                    Some(i) => format!("every {}", crate::duration::format(i.window)),
                    None => "off".to_string(),
                }
            ),
            Err(errors) => {
                ok = false;
                eprintln!("{errors}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
