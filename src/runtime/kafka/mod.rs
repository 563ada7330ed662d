//! Kafka plumbing shared by the scorer and the handoff: client configuration, topic setup, a
//! producer that reports delivery failures and the offsets of checkpoint records, and a consumer
//! context that hands partition assignment and revocation to the service that owns the state.

use crate::config::{split_role, KafkaRole};
use crate::ops::telemetry::{self, PartitionGauges};
use crate::runtime::sync::lock_unpoisoned;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The largest record the services produce (and their dead-letter topics accept when they
/// create them): dead letters carry whatever the input topic accepted.
pub const MAX_RECORD_BYTES: &str = "16777216";

/// How far before a resume position the services start fetching, skipping what they already
/// hold. Kafka returns the whole record batch containing a requested offset; some
/// Kafka-compatible brokers (tansu 0.6) return only batches starting at or after it, silently
/// skipping the rest of the batch. Starting a batch's worth early (librdkafka's default
/// `batch.num.messages` is 10,000) makes the first batch returned contain the position.
pub const FETCH_REWIND: i64 = 10_000;

/// Where to start fetching to resume at `next` (see [`FETCH_REWIND`]).
pub fn rewound(next: i64, low: i64) -> i64 {
    next.saturating_sub(FETCH_REWIND).max(low).max(0)
}

/// How long setup calls (metadata, topic creation) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum KafkaSetupError {
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    #[error("cannot create topic {topic:?}: {reason}")]
    CreateTopic { topic: String, reason: String },
    /// The brokers could not be asked what topics there are: nothing was reached, or nothing
    /// answered (a wrong address, a broker down, a listener that is not Kafka).
    #[error(
        "cannot read the topics from the brokers at kafka.bootstrap.servers = {bootstrap:?}: \
         {source} (is the address right, and a Kafka broker listening there?)"
    )]
    Metadata {
        bootstrap: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {topic:?} has {found} partitions but {expected_from:?} has {expected}: they must be co-partitioned (same partition count); recreate {topic:?} or fix the topic settings")]
    PartitionMismatch {
        topic: String,
        found: i32,
        expected_from: String,
        expected: i32,
    },
    #[error("topic {0:?} does not exist after creation")]
    Missing(String),
}

/// The consumer group session timeout unless `[kafka]` sets `session.timeout.ms`: how long the
/// group waits for a member that stopped heartbeating (a `kill -9`, a lost node) before its
/// partitions move on. librdkafka's default, 45 s, is also how long a restarted instance waited
/// for its own partitions wherever the broker has no static membership (the dev-broker, where a
/// restart right after a kill can take two session timeouts). 6 s is the least every stock
/// broker accepts (Kafka's `group.min.session.timeout.ms`); the heartbeat goes with it
/// ([`HEARTBEAT_INTERVAL_MS`]). With static membership on Kafka a restart within the session
/// timeout does not wait at all, so a larger value there only buys tolerance of network pauses
/// at the price of slower failover. docs/brokers.md has the restart times.
pub const SESSION_TIMEOUT_MS: &str = "6000";

/// The heartbeat unless `[kafka]` sets `heartbeat.interval.ms`: a third of
/// [`SESSION_TIMEOUT_MS`], as Kafka recommends, so two lost heartbeats do not end the session.
pub const HEARTBEAT_INTERVAL_MS: &str = "2000";

/// Properties only a group member acts on: given to the group consumer alone, so the producer,
/// the admin client and the restore reader neither warn about them nor use them.
/// `group.instance.id` (static membership) names one member of one group.
const GROUP_MEMBER_PROPERTIES: &[&str] = &["group.instance.id"];

/// The properties a client of `role` gets from the `[kafka]` settings (see
/// [`crate::config::KafkaSettings`]): the shared ones but those librdkafka reserves for another
/// kind of client, then the role's own table (`[kafka.producer]`, `[kafka.consumer]`) over them.
/// [`KafkaRole::Shared`] is the admin client's: the shared properties of no one kind.
pub fn role_properties(
    properties: &BTreeMap<String, String>,
    role: KafkaRole,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut own = Vec::new();
    for (key, value) in properties {
        match split_role(key) {
            (KafkaRole::Shared, name) => {
                let for_role = KafkaRole::of_property(name);
                if for_role == KafkaRole::Shared || for_role == role {
                    out.insert(name.to_string(), value.clone());
                }
            }
            (table, name) if table == role => own.push((name.to_string(), value.clone())),
            _ => {}
        }
    }
    // After every shared one, whatever the key order: the role's table overrides.
    out.extend(own);
    out
}

/// A client configuration from `properties` for a client of `role`, passed through verbatim
/// (but for the [`GROUP_MEMBER_PROPERTIES`], which only [`group_consumer`] sets).
fn role_config(properties: &BTreeMap<String, String>, role: KafkaRole) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in role_properties(properties, role) {
        if !GROUP_MEMBER_PROPERTIES.contains(&k.as_str()) {
            c.set(k, v);
        }
    }
    c
}

/// The admin client's configuration from the `[kafka]` settings: the shared properties (see
/// [`role_properties`]).
pub fn client_config(properties: &BTreeMap<String, String>) -> ClientConfig {
    role_config(properties, KafkaRole::Shared)
}

/// A consumer's configuration: shared properties and `[kafka.consumer]` (see
/// [`role_properties`]), with leadscore's session timeout and heartbeat unless they set their
/// own. Every consumer gets them, a restore reader too although it joins no group: librdkafka
/// refuses a `max.poll.interval.ms` under the session timeout, and against its 45 s default
/// one set for the services (say 30 s) made each restore fail.
pub fn consumer_config(properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = role_config(properties, KafkaRole::Consumer);
    for (key, value) in [
        ("session.timeout.ms", SESSION_TIMEOUT_MS),
        ("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS),
    ] {
        if cfg.get(key).is_none() {
            cfg.set(key, value);
        }
    }
    cfg
}

/// What replaces a value that must not be shown.
pub const REDACTED: &str = "[redacted]";

/// Whether librdkafka knows the property `name`, as a client or a topic property: setting it
/// to an empty value on a scratch configuration fails as "unknown" only for a name librdkafka
/// does not have. (Reading it back cannot tell: an unset property reads as unknown too.)
pub fn is_known_property(name: &str) -> bool {
    use rdkafka::bindings as rd;
    // The one property whose setter acts (it loads plugins): known, and never set here.
    if name == "plugin.library.paths" {
        return true;
    }
    let (Ok(c_name), Ok(empty)) = (CString::new(name), CString::new("")) else {
        return false;
    };
    let mut errstr = [0 as std::os::raw::c_char; 512];
    // SAFETY: the configuration is created, used and destroyed here; errstr is a writable
    // buffer of the size given.
    unsafe {
        let conf = rd::rd_kafka_conf_new();
        let res = rd::rd_kafka_conf_set(
            conf,
            c_name.as_ptr(),
            empty.as_ptr(),
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rd::rd_kafka_conf_destroy(conf);
        res != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_UNKNOWN
    }
}

/// Whether the value of property `name` must never appear in an error or a log line: a
/// credential by its name (see [`crate::config::is_sensitive_kafka_property`]), or a property
/// librdkafka does not know, which is most often a misspelt one (`sasl.pasword`) holding a
/// credential all the same.
///
/// A `[kafka.producer]` or `[kafka.consumer]` key is judged by the property it names.
pub fn is_redacted_property(name: &str) -> bool {
    let (_, name) = split_role(name);
    crate::config::is_sensitive_kafka_property(name) || !is_known_property(name)
}

/// `text` without `value`: quoted (as librdkafka quotes values) and, when long enough not to
/// garble the message, bare.
fn scrub(text: &str, value: &str) -> String {
    if value.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(&format!("\"{value}\""), &format!("\"{REDACTED}\""));
    if value.len() >= 4 {
        out = out.replace(value, REDACTED);
    }
    out
}

/// `error` from creating a client with `cfg`, without the value of any redacted property.
/// librdkafka's configuration errors quote the value (rdkafka's message appends it too), so a
/// typo in `LEADSCORE__KAFKA__SASL_PASWORD` would print the password.
pub fn redact_error(error: KafkaError, cfg: &ClientConfig) -> KafkaError {
    // (`config_map` hides a few known credentials itself: the values come from `get`.)
    let scrub_all = |text: &str| {
        cfg.config_map()
            .into_keys()
            .filter(|k| is_redacted_property(k))
            .filter_map(|k| cfg.get(k))
            .fold(text.to_string(), |t, v| scrub(&t, v))
    };
    match error {
        KafkaError::ClientConfig(res, desc, key, value) => {
            let hide = res == rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN
                || is_redacted_property(&key);
            let (desc, value) = if hide {
                (scrub(&desc, &value), REDACTED.to_string())
            } else {
                (desc, value)
            };
            KafkaError::ClientConfig(res, scrub_all(&desc), key, value)
        }
        KafkaError::ClientCreation(text) => KafkaError::ClientCreation(scrub_all(&text)),
        other => other,
    }
}

/// Creates a client from `cfg` with `context`; a failure never shows a redacted value.
fn create<C, T>(cfg: &ClientConfig, context: C) -> Result<T, KafkaError>
where
    C: ClientContext,
    T: rdkafka::config::FromClientConfigAndContext<C>,
{
    cfg.create_with_context(context)
        .map_err(|e| redact_error(e, cfg))
}

/// Sets `key` unless the user's properties already do.
fn set_default(cfg: &mut ClientConfig, key: &str, value: &str) {
    if cfg.get(key).is_none() {
        cfg.set(key, value);
    }
}

mod consumer;
mod producer;
mod topics;

pub use consumer::*;
pub use producer::*;
pub use topics::*;

#[cfg(test)]
mod tests;
