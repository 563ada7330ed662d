//! leadscore: real-time lead scoring on Kafka.
//!
//! # Layout
//!
//! The scoring core is its own crate, `crates/leadscore-engine`: pure, no I/O and no clock
//! inside, time comes in as a value; its manifest allows no Kafka and no I/O crates. Its modules
//! are re-exported here under their usual names:
//!
//! - [`timestamp`], [`duration`]: event time and rules durations.
//! - [`event`], [`change`]: the input event and the score change.
//! - [`codec`], [`proto`]: JSON and protobuf, validated.
//! - [`rules`]: the rules file, its loader, its warnings.
//! - [`state`]: per-user state and its versioned encoding (the changelog record).
//! - [`engine`]: the pure scoring function and the inactivity step.
//! - [`partition`], [`partitioner`]: one partition's clock and timers; the murmur2 partitioner.
//! - [`simulate`]: the offline simulator; [`generator`]: deterministic generated traffic.
//!
//! The service package (this crate) holds everything that talks to the world:
//!
//! - [`store`]: the local embedded state store (fjall): each owned partition's keys and
//!   changelog position, written atomically per batch, for warm restarts.
//! - [`bench`](mod@bench): `leadscore bench`, single-threaded rates and state sizes, with ratios
//!   against baselines measured in the same run.
//! - [`scorer_bench`]: `leadscore bench --scorer`, the scorer end to end on the embedded broker.
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
//! - [`devbroker`]: the embedded mock Kafka broker on a fixed address (`leadscore dev-broker`).
//! - [`demo`]: `leadscore demo`, everything in one process.
//! - [`cli`]: the command line; `main` only calls [`cli::run`].

pub use leadscore_engine::{
    change, codec, duration, engine, event, generator, partition, partitioner, proto, rules,
    simulate, state, timestamp,
};

pub mod bench;
pub mod cli;
pub mod config;
pub mod dev;
pub mod handoff;
pub mod ops;
pub mod runtime;
pub mod scorer;
