//! The admin HTTP endpoint each service serves: `/metrics` (Prometheus text), `/healthz` (the
//! process is alive) and `/readyz` (every assigned partition restored and consuming; for the
//! handoff, also a Salesforce token obtained).

use crate::shutdown::Shutdown;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Readiness, shared between a service's loop and the admin endpoint.
#[derive(Debug, Default)]
pub struct Health {
    inner: Mutex<HealthState>,
}

#[derive(Debug, Default, Clone)]
struct HealthState {
    /// The consumer loop is running.
    consuming: bool,
    /// Partition number to whether it is restored.
    partitions: BTreeMap<i32, bool>,
    /// Other conditions that must hold (e.g. "salesforce token"), by name.
    conditions: BTreeMap<&'static str, bool>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    fn with<R>(&self, f: impl FnOnce(&mut HealthState) -> R) -> R {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    pub fn set_consuming(&self, on: bool) {
        self.with(|h| h.consuming = on);
    }

    pub fn restoring(&self, p: i32) {
        self.with(|h| h.partitions.insert(p, false));
    }

    pub fn restored(&self, p: i32) {
        self.with(|h| h.partitions.insert(p, true));
    }

    pub fn released(&self, p: i32) {
        self.with(|h| h.partitions.remove(&p));
    }

    pub fn set_condition(&self, name: &'static str, ok: bool) {
        self.with(|h| h.conditions.insert(name, ok));
    }

    pub fn is_ready(&self) -> bool {
        self.with(|h| {
            h.consuming && h.partitions.values().all(|r| *r) && h.conditions.values().all(|c| *c)
        })
    }

    fn body(&self) -> serde_json::Value {
        self.with(|h| {
            let restoring: Vec<i32> = h
                .partitions
                .iter()
                .filter(|(_, r)| !**r)
                .map(|(p, _)| *p)
                .collect();
            let assigned: Vec<i32> = h.partitions.keys().copied().collect();
            json!({
                "ready": h.consuming && restoring.is_empty() && h.conditions.values().all(|c| *c),
                "consuming": h.consuming,
                "assigned": assigned,
                "restoring": restoring,
                "conditions": h.conditions,
            })
        })
    }
}

/// Binds the admin listener (port 0 picks a free port) and serves until shutdown. Returns the
/// bound address.
pub async fn serve(
    listen: &str,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    shutdown: Shutdown,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let ready = health.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let h = ready.clone();
                async move {
                    let code = if h.is_ready() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, Json(h.body())).into_response()
                }
            }),
        );
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    tracing::info!(%addr, "admin endpoint listening (/metrics, /healthz, /readyz)");
    Ok(addr)
}
