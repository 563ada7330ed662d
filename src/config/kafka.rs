//! `[kafka]`: librdkafka properties passed through verbatim, and their redaction.
//!
//! # Producer and consumer tables
//!
//! `[kafka]` holds what every client shares (brokers, TLS, SASL). `[kafka.producer]` and
//! `[kafka.consumer]` hold what only the services' producers, or only their consumers (the group
//! consumer and the changelog restore reader), get; each is laid over `[kafka]` for its clients,
//! so it can also override a shared value. They are kept in the one flat property map under the
//! prefixes [`PRODUCER_PREFIX`] and [`CONSUMER_PREFIX`] (a `[kafka.producer]` table flattens to
//! `producer.compression.codec`, just as `[kafka.ssl]` flattens to `ssl.ca.location`), which is
//! also what the environment gives: `LEADSCORE__KAFKA__PRODUCER__COMPRESSION_CODEC=gzip`.
//! No librdkafka property starts with either prefix.
//!
//! Why: librdkafka warns ("Configuration property X is a producer property and will be ignored
//! by this consumer instance") whenever a client gets a property of the other kind, so tuning the
//! producer in `[kafka]` filled the consumers' logs. A property librdkafka reserves to one kind
//! ([`PRODUCER_ONLY_PROPERTIES`], [`CONSUMER_ONLY_PROPERTIES`]) set in the shared `[kafka]` is
//! therefore given to that kind's clients only; one set in the other kind's table is an error
//! naming it (`Settings::check`), since it could only be ignored there.

use super::*;

/// The key prefix of `[kafka.producer]` properties in [`KafkaSettings::properties`].
pub const PRODUCER_PREFIX: &str = "producer.";

/// The key prefix of `[kafka.consumer]` properties in [`KafkaSettings::properties`].
pub const CONSUMER_PREFIX: &str = "consumer.";

/// Client and topic properties librdkafka applies to producers only (scope `P` in librdkafka
/// 2.12's CONFIGURATION.md; callbacks left out, they cannot be set from a file).
pub const PRODUCER_ONLY_PROPERTIES: &[&str] = &[
    "acks",
    "batch.num.messages",
    "batch.size",
    "compression.codec",
    "compression.level",
    "compression.type",
    "delivery.report.only.error",
    "delivery.timeout.ms",
    "enable.gapless.guarantee",
    "enable.idempotence",
    "linger.ms",
    "message.send.max.retries",
    "message.timeout.ms",
    "partitioner",
    "produce.offset.report",
    "queue.buffering.backpressure.threshold",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "queuing.strategy",
    "request.required.acks",
    "request.timeout.ms",
    "retries",
    "sticky.partitioning.linger.ms",
    "transaction.timeout.ms",
    "transactional.id",
];

/// Client and topic properties librdkafka applies to consumers only (scope `C` in librdkafka
/// 2.12's CONFIGURATION.md; callbacks left out).
pub const CONSUMER_ONLY_PROPERTIES: &[&str] = &[
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "offset.store.method",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "session.timeout.ms",
];

/// Which clients a property is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaRole {
    /// Every client: brokers, security, metadata.
    Shared,
    Producer,
    Consumer,
}

impl KafkaRole {
    /// The role librdkafka gives the property `name` (in librdkafka spelling).
    pub fn of_property(name: &str) -> KafkaRole {
        if PRODUCER_ONLY_PROPERTIES.contains(&name) {
            KafkaRole::Producer
        } else if CONSUMER_ONLY_PROPERTIES.contains(&name) {
            KafkaRole::Consumer
        } else {
            KafkaRole::Shared
        }
    }

    /// The table a property of this role is set in, for messages.
    pub fn table(self) -> &'static str {
        match self {
            KafkaRole::Shared => "[kafka]",
            KafkaRole::Producer => "[kafka.producer]",
            KafkaRole::Consumer => "[kafka.consumer]",
        }
    }
}

/// A key of [`KafkaSettings::properties`] split into the table it came from and the librdkafka
/// property name: `producer.linger.ms` is `(Producer, "linger.ms")`.
pub fn split_role(key: &str) -> (KafkaRole, &str) {
    if let Some(name) = key.strip_prefix(PRODUCER_PREFIX) {
        (KafkaRole::Producer, name)
    } else if let Some(name) = key.strip_prefix(CONSUMER_PREFIX) {
        (KafkaRole::Consumer, name)
    } else {
        (KafkaRole::Shared, key)
    }
}

/// librdkafka properties: the shared `[kafka]` ones, passed verbatim to every consumer, producer
/// and admin client, and the `[kafka.producer]` / `[kafka.consumer]` ones for one kind of client
/// (see the module doc, and the config module doc for the key spelling).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Property name (with dots) to value, as librdkafka takes them: everything a string.
    /// `[kafka.producer]` and `[kafka.consumer]` entries carry [`PRODUCER_PREFIX`] and
    /// [`CONSUMER_PREFIX`]; [`crate::runtime::kafka`] resolves them per client.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    /// A broker on this machine, so `leadscore dev-broker` and a service work with no config.
    fn default() -> Self {
        KafkaSettings {
            properties: BTreeMap::from([(
                "bootstrap.servers".to_string(),
                "localhost:9092".to_string(),
            )]),
        }
    }
}

impl KafkaSettings {
    /// The value of a property, by its dotted librdkafka name.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// Every property, for building a client configuration.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Whether a librdkafka property may hold a credential, whose value must not reach an error or
/// a log: any name containing `password`, `secret`, `token` or `key` in any case
/// (`sasl.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...), and
/// `sasl.oauthbearer.config`. Broad on purpose: hiding a key file's path costs little.
/// [`crate::runtime::kafka::is_redacted_property`] adds the properties librdkafka does not know.
pub fn is_sensitive_kafka_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"]
        .iter()
        .any(|word| key.contains(word))
        || key == "sasl.oauthbearer.config"
}

impl fmt::Debug for KafkaSettings {
    /// Settings get logged at startup; credentials passed through as properties must not be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.properties.iter().map(|(k, v)| {
                let shown = if crate::runtime::kafka::is_redacted_property(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

impl<'de> Deserialize<'de> for KafkaSettings {
    /// Any table: nested tables (from unquoted dotted keys like `ssl.ca.location = ...`) are
    /// flattened, `_` becomes `.`, and scalar values are stringified; the result is laid over the
    /// defaults.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = Table::deserialize(deserializer)?;
        let flat = flatten_kafka(&table).map_err(|(_, message)| de::Error::custom(message))?;
        let mut settings = KafkaSettings::default();
        for (key, value) in flat {
            let value = kafka_value_string(&value).map_err(de::Error::custom)?;
            settings.properties.insert(key, value);
        }
        Ok(settings)
    }
}

/// A `[kafka]` table with nested tables flattened and keys in librdkafka spelling. Two spellings
/// of one property are an error naming it, rather than one silently winning.
pub(super) fn flatten_kafka(table: &Table) -> Result<Table, (String, String)> {
    fn walk(
        prefix: &str,
        table: &Table,
        out: &mut Table,
        spelled: &mut BTreeMap<String, String>,
    ) -> Result<(), (String, String)> {
        for (key, value) in table {
            let full = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let Value::Table(inner) = value {
                walk(&full, inner, out, spelled)?;
                continue;
            }
            let property = kafka_key(&full);
            if let Some(previous) = spelled.insert(property.clone(), full.clone()) {
                let message = format!("set twice, as \"{previous}\" and \"{full}\"");
                return Err((property, message));
            }
            out.insert(property, value.clone());
        }
        Ok(())
    }
    let mut out = Table::new();
    walk("", table, &mut out, &mut BTreeMap::new())?;
    Ok(out)
}

/// A `[kafka]` key in librdkafka spelling.
pub(super) fn kafka_key(key: &str) -> String {
    key.replace('_', ".")
}

/// A TOML value as librdkafka expects it. Arrays become comma-separated lists, librdkafka's
/// list syntax. The message never quotes the value: it may be a credential.
fn kafka_value_string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(x) => Ok(x.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(_) | Value::Table(_) => {
                    Err("an array property must hold strings, numbers or booleans".to_string())
                }
                scalar => kafka_value_string(scalar),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join(",")),
        other => Err(format!(
            "a librdkafka property is a string, number, boolean or array of those, not {}",
            with_article(other.type_str())
        )),
    }
}
