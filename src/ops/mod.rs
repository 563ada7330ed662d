//! What operators see: the admin HTTP port (`/metrics`, `/healthz`, `/readyz`) and telemetry
//! (the metrics table, logging).

pub mod admin;
pub mod metrics;
pub mod telemetry;
