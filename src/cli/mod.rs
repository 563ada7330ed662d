//! The command line. `main` calls [`run`]; each subcommand parses its arguments into ready
//! values and hands them to the library.

mod bench;
mod dev;
mod ingest;
mod lookup;
mod offline;
mod reset;
mod services;

use anyhow::Result;
use clap::{Parser, Subcommand};
use dev::{run_dev_broker, run_salesforce_standin};
use offline::{rules_check, run_simulate};
use services::{run_handoff, run_score};
use std::io;
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
    Simulate(offline::SimulateArgs),
    /// Look a lead up on a running scorer (any instance): its score, status and why.
    Lookup(lookup::LookupArgs),
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
        /// Generated users [default: 100000; with --scorer 20000; with --handoff the leads,
        /// 5000].
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
        /// With --handoff: the share of calls the stand-in answers 503 (0 to below 1), to measure
        /// the handoff through retries [default: 0].
        #[arg(long, value_name = "RATE", requires = "handoff", value_parser = crate::bench::handoff::parse_rate)]
        unavailable_rate: Option<f64>,
        /// Benchmark the ingest API instead: requests and events per second with 75-event
        /// bodies, against a bare producer of the same events (embedded broker).
        #[arg(long, conflicts_with_all = ["scorer", "handoff", "lookup", "rules"])]
        ingest: bool,
        /// Benchmark lead lookup instead: p50/p99 of GET /v1/leads/{user_id} answered locally
        /// and forwarded to the owner (two scorers on the embedded broker, 10,000 lookups each).
        #[arg(long, conflicts_with_all = ["scorer", "rules", "handoff"])]
        lookup: bool,
        /// Measure how one instance's cost grows with its users instead: the engine rate,
        /// resident memory per user and the changelog restore time (embedded broker) at each of
        /// --scale-users; --events sets the timed engine stretch [default: 1000000]
        /// (docs/scale.md).
        #[arg(long, conflicts_with_all = ["scorer", "handoff", "ingest", "lookup", "rules", "users"])]
        scale: bool,
        /// The user counts of --scale, comma-separated, each from 1000 to 10000000
        /// [default: 10000,100000,1000000,5000000].
        #[arg(long, value_name = "N,N,...", requires = "scale", value_parser = crate::bench::scale::parse_users)]
        scale_users: Option<crate::bench::scale::ScaleUsers>,
        /// Where --scale writes its CSV (for docs/scale/chart.py) [default: target/bench-scale.csv].
        #[arg(long, value_name = "PATH", requires = "scale")]
        csv: Option<PathBuf>,
        /// Internal: the resident-memory child of --scale (builds this many users' state and
        /// prints VmRSS).
        #[arg(long = "scale-rss-child", hide = true, value_name = "USERS")]
        scale_rss_child: Option<usize>,
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
    /// Run the ingest API: Braze users/track-compatible HTTP requests to input events.
    Ingest {
        /// Settings file (TOML); environment variables LEADSCORE__SECTION__KEY override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Sync with a PostgreSQL warehouse: external scores in, score changes out.
    Warehouse {
        #[command(subcommand)]
        command: WarehouseCommand,
    },
    /// Start a service over from nothing: clear its changelog checkpoints and state, so it
    /// re-reads its input from the beginning (docs/operations.md, "Starting over"). Refuses
    /// while the consumer group has members; without --yes only says what it would do.
    Reset(reset::ResetArgs),
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
enum WarehouseCommand {
    /// Poll a warehouse table of (user id, score, updated at) and produce new rows as
    /// external_score events; the watermark is stored after Kafka acknowledged them.
    Import {
        /// Settings file (TOML); environment variables LEADSCORE__SECTION__KEY override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Consume the score changes into the warehouse: each lead's current score and status, and
    /// the history of changes (idempotent on the change id).
    Export {
        /// Settings file (TOML); environment variables LEADSCORE__SECTION__KEY override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Validate rules files: a one-line summary each, or every error with its line and key.
    /// Rules that can never do anything are warned about (exit status 0 unless --strict).
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Fail (exit status 1) when any file has a warning, not only on errors.
        #[arg(long)]
        strict: bool,
    },
}

/// Whether `e` is the reader of standard output having left (`leadscore ... | head`): a
/// closed pipe anywhere in its chain.
pub(super) fn reader_left(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Parses the command line and runs it. Exit codes: 0 success, 1 the input had errors
/// (reported on stderr), 2 usage errors.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        // `leadscore simulate | head`: the reader left; not an error.
        Err(e) if reader_left(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, as `{:#}` writes them (`outer: cause: ...`), but
/// without a cause whose text the line already holds: many errors name their cause in their
/// own message and also return it as their `source` (thiserror's `#[from]`), which `{:#}`
/// printed twice ("cannot read: No such file or directory (os error 2): No such file or
/// directory (os error 2)").
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Simulate(args) => run_simulate(args),
        Command::Lookup(args) => lookup::run_lookup(args),
        Command::Rules {
            command: RulesCommand::Check { files, strict },
        } => Ok(rules_check(&files, strict)),
        Command::Score { config } => run_score(config),
        Command::Handoff { config } => run_handoff(config),
        Command::Ingest { config } => ingest::run_ingest(config),
        Command::Warehouse {
            command: WarehouseCommand::Import { config },
        } => ingest::run_warehouse(config, ingest::Sync::Import),
        Command::Warehouse {
            command: WarehouseCommand::Export { config },
        } => ingest::run_warehouse(config, ingest::Sync::Export),
        Command::Reset(args) => reset::run(args),
        Command::Demo {
            users,
            events,
            seconds,
        } => dev::run_demo(users, events, seconds),
        Command::Bench {
            scale_rss_child: Some(users),
            seed,
            ..
        } => bench::run_scale_child(users, seed),
        Command::Bench {
            scale: true,
            scale_users,
            csv,
            events,
            seed,
            ..
        } => bench::run_scale_bench(scale_users, csv, events, seed),
        Command::Bench { ingest: true, .. } => bench::run_ingest_bench(),
        Command::Bench {
            events,
            users,
            rules,
            seed,
            scorer,
            handoff,
            unavailable_rate,
            lookup,
            ..
        } => bench::run_bench(
            events,
            users,
            rules,
            seed,
            scorer,
            handoff.then_some(unavailable_rate.unwrap_or(0.0)),
            lookup,
        ),
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
                .map(|(cert, key)| crate::dev::broker::Tls { cert, key });
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
            crate::dev::standin::Faults {
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

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    /// A cause the outer message already quotes is not repeated; one it does not is kept.
    #[test]
    fn an_error_line_names_each_cause_once() {
        let missing = io::Error::new(io::ErrorKind::NotFound, "No such file or directory");
        let read = crate::config::Settings::load(Some(std::path::Path::new("/nonexistent/x")))
            .expect_err("no such file");
        let line = error_chain(&anyhow::Error::from(read));
        assert_eq!(
            line,
            "config /nonexistent/x: cannot read: No such file or directory (os error 2)"
        );
        let kafka = crate::runtime::kafka::KafkaSetupError::from(
            rdkafka::error::KafkaError::ClientCreation("bad property".into()),
        );
        assert_eq!(
            error_chain(&anyhow::Error::from(kafka)),
            "kafka client: Client creation error: bad property"
        );
        let wrapped = Err::<(), _>(missing)
            .context("opening the events")
            .unwrap_err();
        assert_eq!(
            error_chain(&wrapped),
            "opening the events: No such file or directory"
        );
    }
}
