//! The admin HTTP endpoint each service serves: `/metrics` (Prometheus text), `/healthz` (the
//! process is alive) and `/readyz` (joined its consumer group, every assigned partition restored
//! and consuming; for the handoff, also a Salesforce token obtained).
//!
//! An instance that joined the group and was given no partition (more instances than
//! partitions) is ready: it is doing all it can. One that has not yet received its first
//! assignment is not, so a rolling restart waits for each instance to be back at work.

use crate::ops::serve::Bounds;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::sync::lock_unpoisoned;
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

/// A readiness condition a service adds to the common ones (consuming, partitions restored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// The handoff holds a Salesforce access token: without one it can hand nothing off.
    SalesforceToken,
}

impl Condition {
    /// Its key in `/readyz`'s `conditions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::SalesforceToken => "salesforce_token",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct HealthState {
    /// The consumer loop is running.
    consuming: bool,
    /// The first assignment (possibly empty) arrived from the consumer group.
    joined: bool,
    /// Partition number to whether it is restored.
    partitions: BTreeMap<i32, bool>,
    /// Other conditions that must hold, beyond consuming and owning restored partitions.
    conditions: BTreeMap<Condition, bool>,
}

impl HealthState {
    fn ready(&self) -> bool {
        self.consuming
            && self.joined
            && self.partitions.values().all(|r| *r)
            && self.conditions.values().all(|c| *c)
    }
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    fn with<R>(&self, f: impl FnOnce(&mut HealthState) -> R) -> R {
        let mut g = lock_unpoisoned(&self.inner);
        f(&mut g)
    }

    pub fn set_consuming(&self, on: bool) {
        self.with(|h| h.consuming = on);
    }

    /// The group gave this instance its partitions (possibly none); call before restoring them.
    pub fn joined(&self) {
        self.with(|h| h.joined = true);
    }

    /// The group took this instance's partitions away without a rebalance it took part in
    /// (its session expired: a paused broker, a stalled process): it is out of the group until
    /// the next assignment, and `/readyz` says so instead of "ready with no partitions" (an
    /// outside check saw a scorer stay ready for minutes that way, 2026-12-07).
    pub fn left(&self) {
        self.with(|h| h.joined = false);
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

    pub fn set_condition(&self, condition: Condition, ok: bool) {
        self.with(|h| h.conditions.insert(condition, ok));
    }

    /// Partition `p` on this instance: `None` not assigned, `Some(false)` assigned and
    /// restoring, `Some(true)` restored.
    pub fn partition(&self, p: i32) -> Option<bool> {
        self.with(|h| h.partitions.get(&p).copied())
    }

    /// The partitions assigned to this instance, restored or not.
    pub fn assigned(&self) -> Vec<i32> {
        self.with(|h| h.partitions.keys().copied().collect())
    }

    pub fn is_ready(&self) -> bool {
        self.with(|h| h.ready())
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
                "ready": h.ready(),
                "consuming": h.consuming,
                "joined": h.joined,
                "assigned": assigned,
                "restoring": restoring,
                "conditions": h
                    .conditions
                    .iter()
                    .map(|(c, ok)| (c.as_str(), *ok))
                    .collect::<BTreeMap<_, _>>(),
            })
        })
    }
}

/// Binds the admin listener (port 0 picks a free port) and serves until shutdown, with a
/// service's own `routes` beside the common ones (the scorer's lead lookup). Returns the
/// bound address.
pub async fn serve(
    listen: &str,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    shutdown: Shutdown,
    routes: Router,
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
                        crate::ops::telemetry::render(&m),
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
                    // One snapshot for the status and the body, so they cannot disagree when a
                    // rebalance lands between two reads.
                    let body = h.body();
                    let code = if body["ready"] == true {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, Json(body)).into_response()
                }
            }),
        )
        .merge(routes)
        .fallback(no_such_path);
    let app = crate::ops::serve::json_errors(app);
    spawn_server(listener, app, shutdown, "admin server");
    tracing::info!(%addr, "admin endpoint listening (/metrics, /healthz, /readyz)");
    Ok(addr)
}

/// Any other path: a JSON 404 naming it, as every other answer of the port is JSON (an empty
/// 404 read as "not JSON" in `leadscore lookup`).
async fn no_such_path(uri: axum::http::Uri) -> axum::response::Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": format!(
                "no such path: {} (this port serves /metrics, /healthz, /readyz and, on the \
                 scorer, /v1/leads/{{user_id}})",
                uri.path()
            )
        })),
    )
        .into_response()
}

/// Serves `app` on `listener` on a task of its own until `shutdown`, within the admin port's
/// bounds ([`Bounds::ADMIN`]: a header timeout and a connection limit).
pub(crate) fn spawn_server(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: Shutdown,
    what: &'static str,
) {
    tokio::spawn(crate::ops::serve::serve(
        listener,
        app,
        Bounds::ADMIN,
        shutdown,
        what,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin port itself closes a connection that never sends its headers, and answers
    /// every other path with JSON. Before, `axum::serve` held such a connection for ever (an
    /// outside-style check held 19,985 of them and `/healthz` stopped answering), and a path
    /// no route serves was an empty 404.
    #[tokio::test]
    async fn the_admin_port_closes_silent_connections_and_answers_unknown_paths_in_json() {
        use crate::ops::serve::probe::{exchange, opened, until_closed};
        let shutdown = Shutdown::new();
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let addr = serve(
            "127.0.0.1:0",
            Health::new(),
            handle,
            shutdown.clone(),
            Router::new(),
        )
        .await
        .expect("the admin port binds");
        let silent = opened(addr, b"").await;
        until_closed(
            silent,
            Bounds::ADMIN.header_timeout + std::time::Duration::from_secs(20),
        )
        .await;

        let answer = exchange(
            addr,
            b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("/v1/nothing")),
            "{body}"
        );
        shutdown.trigger();
    }

    #[test]
    fn ready_only_once_joined_restored_consuming_and_every_condition_holds() {
        let h = Health::new();
        assert!(!h.is_ready(), "nothing yet");
        h.set_consuming(true);
        assert!(!h.is_ready(), "no assignment yet");
        h.joined();
        assert!(h.is_ready(), "joined with no partition");
        h.restoring(3);
        h.restoring(1);
        assert!(!h.is_ready());
        let body = h.body();
        assert_eq!(body["ready"], false);
        assert_eq!(body["restoring"], json!([1, 3]));
        assert_eq!(body["assigned"], json!([1, 3]));
        h.restored(1);
        assert!(!h.is_ready(), "partition 3 still restoring");
        h.restored(3);
        assert!(h.is_ready());
        assert_eq!(h.body()["restoring"], json!([]));
        h.set_condition(Condition::SalesforceToken, false);
        assert!(!h.is_ready());
        assert_eq!(h.body()["conditions"]["salesforce_token"], false);
        h.set_condition(Condition::SalesforceToken, true);
        assert!(h.is_ready());
        h.released(3);
        assert_eq!(h.body()["assigned"], json!([1]));
        h.set_consuming(false);
        assert!(!h.is_ready(), "stopped consuming");
    }
}
