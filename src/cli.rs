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
    /// Measure the engine, the decoders and the state size (Markdown table).
    Bench {
        /// Generated events.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Generated users.
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Rules file (default: the seed canvas).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Run the scorer service: input events to score changes, state in a changelog.
    Score {
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
        } => {
            let table = crate::bench::run(&crate::bench::BenchOptions {
                events,
                users,
                rules,
                seed,
            })?;
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::DevBroker {
            listen,
            partitions,
            topics,
        } => run_dev_broker(&listen, partitions, &topics),
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
        let scorer = Scorer::start(settings, health).await?;
        let stop = shutdown.clone();
        let result = tokio::task::spawn_blocking(move || scorer.run(stop)).await;
        shutdown.trigger();
        result.context("scorer thread panicked")??;
        Ok(ExitCode::SUCCESS)
    })
}

fn run_dev_broker(listen: &str, partitions: i32, extra: &[String]) -> Result<ExitCode> {
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
        let broker = DevBroker::start(listen).await?;
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
            "dev-broker: mock Kafka cluster on {} with leadscore's topics ({partitions} partitions each); Ctrl-C stops it",
            broker.bootstrap_servers()
        );
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        shutdown.wait().await;
        drop(broker);
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
