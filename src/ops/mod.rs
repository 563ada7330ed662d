//! What operators see: the admin HTTP port (`/metrics`, `/healthz`, `/readyz`) and telemetry
//! (the metrics table, logging), and the bounded HTTP serving loop every port of ours uses.

pub mod admin;
pub mod metrics;
pub mod serve;
pub mod telemetry;
