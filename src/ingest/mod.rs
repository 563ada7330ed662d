//! `leadscore ingest`: an HTTP API compatible with Braze's `POST /users/track`, so partner
//! tools that send external scores, attributes and events to Braze can send them to leadscore
//! with only the base URL and the key changed. Every accepted object becomes input events on
//! the input topic, keyed by user, each in its user's home partition, answered only once Kafka
//! has acknowledged them all.
//!
//! # Layout
//!
//! - [`braze`]: the request body, validated and translated into input events (pure).
//! - [`server`]: the route, API keys, rate limit, body cap, answers.
//! - [`producer`]: the input topic's idempotent producer, shared with `leadscore warehouse
//!   import`.
//! - [`bench`](mod@bench): `leadscore bench --ingest`, against a bare producer.
//!
//! docs/ingest.md is the user's guide: the mapping, the answers, the event ids.

pub mod bench;
pub mod braze;
pub mod producer;
pub mod server;

use crate::config::Settings;
use crate::ops::admin::Health;
use crate::ops::telemetry;
use crate::runtime::shutdown::Shutdown;
use anyhow::{Context, Result};
use producer::EventProducer;
use server::{App, TokenBucket};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A started ingest API: keys read, producer connected, listener bound.
pub struct Ingest {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    header_timeout: std::time::Duration,
}

impl Ingest {
    /// Reads the API keys, connects the producer (creating the input topic when missing) and
    /// binds `ingest.listen`; then the service is ready.
    pub async fn start(settings: &Settings, health: Arc<Health>) -> Result<Ingest> {
        let keys = settings.ingest.api_keys()?;
        telemetry::register_at_zero(telemetry::Owner::Ingest);
        let producer = EventProducer::start(settings, settings.ingest.produce_timeout)
            .await
            .with_context(|| format!("input topic {:?}", settings.topics.input))?;
        let listen = &settings.ingest.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("ingest.listen {listen}"))?;
        let ingest = &settings.ingest;
        let app = Arc::new(App {
            keys,
            score_attribute: ingest.score_attribute.clone(),
            max_body_bytes: ingest.max_body_bytes,
            max_future_skew: settings.scorer.max_future_skew,
            format: settings.scorer.input_format,
            max_event_bytes: settings.scorer.max_event_bytes,
            body_timeout: ingest.body_timeout,
            produce_timeout: ingest.produce_timeout,
            limiter: Mutex::new(TokenBucket::new(ingest.rate_limit, Instant::now())),
            producer,
            instance: server::instance_name(),
            requests: AtomicU64::new(0),
            bodies: server::ByteBudget::new(server::ByteBudget::BODIES),
            events: server::ByteBudget::new(server::ByteBudget::EVENTS),
        });
        // The admin endpoint's readiness is a consumer's; the API is ready once it can produce.
        health.set_consuming(true);
        health.joined();
        Ok(Ingest {
            listener,
            app,
            header_timeout: ingest.header_timeout,
        })
    }

    /// The bound API address (port 0 in tests picks one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until shutdown; requests in flight are finished (and their events acknowledged).
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, "ingest API listening (POST /users/track)");
        crate::ops::serve::serve(
            self.listener,
            server::router(self.app),
            crate::ops::serve::Bounds::ingest(self.header_timeout),
            shutdown,
            "ingest API",
        )
        .await;
        Ok(())
    }
}
