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
//! - [`rules`]: the rules file's model, parser and warnings (the file is read by
//!   [`config::rules_file`], bounded in size and time).
//! - [`state`]: per-user state and its versioned encoding (the changelog record);
//!   [`history`]: the recent changes each user keeps, and [`explain`]: the lead view built
//!   from them (lookup, `simulate --explain`).
//! - [`engine`]: the pure scoring function and the inactivity step.
//! - [`partition`], [`partitioner`]: one partition's clock and timers; the murmur2 partitioner;
//!   [`hash`]: the seeded hasher of the maps keyed by user id.
//! - [`simulate`]: the offline simulator; [`generator`]: deterministic generated traffic.
//!
//! This package holds everything that talks to the world, one folder per role:
//!
//! - [`runtime`]: the Kafka runtime both services stand on: clients, topics, producer and
//!   dead letters ([`runtime::kafka`]); owned partitions' keyed state ([`runtime::keyed_state`])
//!   with its changelog checkpoints and restore ([`runtime::changelog`]) and local store
//!   ([`runtime::store`]); the consumer loop ([`runtime::service`]); shutdown.
//! - [`ops`]: what operators see: the admin port ([`ops::admin`]), the one metrics table
//!   ([`ops::metrics`]), telemetry and logging ([`ops::telemetry`]).
//! - [`config`]: settings: defaults, then the TOML file, then `LEADSCORE__*` environment
//!   variables; librdkafka properties pass through, secrets never printed.
//! - [`scorer`]: the scorer service (`leadscore score`): events to score changes, and lead
//!   lookup on its admin port ([`scorer::lookup`]).
//! - [`handoff`]: the handoff service (`leadscore handoff`) and its Salesforce client
//!   ([`handoff::salesforce`]): threshold crossings to Salesforce.
//! - [`ingest`]: `leadscore ingest`, a Braze `users/track`-compatible HTTP API producing input
//!   events.
//! - [`warehouse`]: `leadscore warehouse import|export`, PostgreSQL to input events and score
//!   changes to PostgreSQL.
//! - [`dev`]: stand-ins for the outside world: the embedded broker, the Salesforce stand-in,
//!   `leadscore demo`.
//! - [`bench`](mod@bench): `leadscore bench` (engine, `--scorer` with its pipe baseline,
//!   `--handoff`, `--lookup`, `--scale`), ratios against baselines measured in the same run.
//! - [`cli`]: the command line, one file per group of commands; `main` only calls [`cli::run`].
//!
//! A module is `pub` only when the binary or the integration tests need it (`bench` is
//! reached through the command line only).

pub use leadscore_engine::{
    change, codec, duration, engine, event, explain, generator, hash, history, partition,
    partitioner, proto, rules, simulate, state, timestamp,
};

pub(crate) mod bench;
pub mod cli;
pub mod config;
pub mod dev;
pub mod handoff;
pub mod ingest;
pub mod ops;
pub mod runtime;
pub mod scorer;
pub mod warehouse;
