//! leadscore-engine: the scoring core of leadscore, with no I/O and no Kafka.
//!
//! Time comes in as a value; events, rules and states come in as bytes or values and go out the
//! same way. Its `Cargo.toml` allows serde, serde_json, toml, prost and thiserror only, so the
//! boundary is enforced by Cargo: the `leadscore` package (the services) builds on this crate,
//! never the other way round.
//!
//! # Layout
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
//! - [`hash`]: the seeded hasher of the maps keyed by user id.
//! - [`partition`]: one partition's clock and timer index driving the engine over a user store.
//! - [`partitioner`]: Kafka's murmur2 partitioner (a user's home partition).
//! - [`simulate`]: the offline simulator (`leadscore simulate`).
//! - [`generator`] (feature `generator`): deterministic, realistic input events for the demo,
//!   the benchmarks and tests.

pub mod attributes;
pub mod change;
pub mod codec;
pub mod duration;
pub mod engine;
pub mod event;
pub mod explain;
#[cfg(feature = "generator")]
pub mod generator;
pub mod hash;
pub mod history;
pub mod partition;
pub mod partitioner;
pub mod proto;
pub mod rules;
pub mod simulate;
pub mod state;
pub mod timestamp;

// The generated `leadscore.v1` code names the well-known types by their package path from the
// crate root (`super::super::google::protobuf`).
pub(crate) use proto::google;
