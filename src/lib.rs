//! leadscore: real-time lead scoring on Kafka.
//!
//! # Layout
//!
//! The scoring core is pure: no I/O and no clock inside, time comes in as a value.
//!
//! - [`timestamp`]: event time as epoch milliseconds; RFC 3339 in and out.
//! - [`duration`]: the `"90m"`, `"7d"` durations of rules files and settings.
//! - [`event`]: the input event model, shared by both wire formats.
//! - [`codec`]: JSON and protobuf decoding (with validation) and encoding of events and changes.
//! - [`proto`]: the prost types generated from `proto/leadscore/v1/`.
//! - [`rules`]: the rules file model, its TOML loader and the predicate tests.
//! - [`change`]: the score change record published to `lead-score-changes`.
//! - [`state`]: per-user state and its versioned binary encoding (the changelog record).
//! - [`engine`]: the pure scoring function: (state, event, rules) to (state, changes), and the
//!   inactivity timer step.
//! - [`partition`]: one partition's clock and timer index driving the engine over a user store.
//! - [`store`]: the local embedded state store (fjall): each owned partition's keys and
//!   changelog position, written atomically per batch, for warm restarts.
//! - [`generator`]: deterministic, realistic input events (personas, late and duplicate events)
//!   for the benchmark, the demo and tests.
//! - [`bench`](mod@bench): `leadscore bench`, single-threaded rates and state sizes, with ratios
//!   against baselines measured in the same run.
//! - [`scorer_bench`]: `leadscore bench --scorer`, the scorer end to end on the embedded broker.
//! - [`simulate`]: the offline simulator (`leadscore simulate`).
//! - [`config`]: the services' settings: defaults, then the TOML file, then `LEADSCORE__*`
//!   environment variables; librdkafka properties pass through.
//! - [`kafka`]: Kafka plumbing shared by both services: client config, topics, the producer,
//!   the consumer context that hands rebalances to the state owner.
//! - [`changelog`]: changelog-backed keyed state shared by both services: checkpoints, restore.
//! - [`keyed_state`]: one owned partition's keyed state in memory, what changed since the last
//!   checkpoint, and the input position; shared by both services.
//! - [`service`]: the consumer loop both services run (poll, idle work, checkpoints, shutdown).
//! - [`scorer`]: the scorer service (`leadscore score`).
//! - [`salesforce`]: the Salesforce REST client of the handoff: OAuth token, lead updates (one
//!   row or an sObject Collections call), retry classification and backoff.
//! - [`sfstandin`]: a local Salesforce stand-in with injectable faults, for tests, the demo and
//!   `leadscore salesforce-standin`.
//! - [`handoff`]: the handoff service (`leadscore handoff`): threshold crossings to Salesforce.
//! - [`handoff_bench`]: `leadscore bench --handoff`, leads per second and API calls per lead.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`telemetry`]: metric names and descriptions, logging.
//! - [`shutdown`]: the one shutdown signal every loop watches.
//! - [`partitioner`]: Kafka's murmur2 partitioner.
//! - [`devbroker`]: the embedded mock Kafka broker on a fixed address (`leadscore dev-broker`).
//! - [`demo`]: `leadscore demo`, everything in one process.
//! - [`cli`]: the command line; `main` only calls [`cli::run`].

pub mod admin;
pub mod bench;
pub mod change;
pub mod changelog;
pub mod cli;
pub mod codec;
pub mod config;
pub mod demo;
pub mod devbroker;
pub mod duration;
pub mod engine;
pub mod event;
pub mod generator;
pub mod handoff;
pub mod handoff_bench;
pub mod kafka;
pub mod keyed_state;
pub mod partition;
pub mod partitioner;
pub mod proto;
pub mod rules;
pub mod salesforce;
pub mod scorer;
pub mod scorer_bench;
pub mod service;
pub mod sfstandin;
pub mod shutdown;
pub mod simulate;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod timestamp;
