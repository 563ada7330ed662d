//! Settings of the two services, `leadscore score --config FILE` and
//! `leadscore handoff --config FILE`.
//!
//! Settings are layered: built-in defaults, then the TOML file, then environment variables. A
//! deployment can then ship one reviewed file and adjust a few values per environment (a broker
//! address, a rules path) without templating it.
//!
//! # Environment variables
//!
//! `LEADSCORE__SECTION__KEY=value` sets `section.key`: `__` separates path segments, which are
//! lowercased (`LEADSCORE__SCORER__BATCH_MAX_EVENTS=1000`). A value is read as a TOML value
//! literal when it is one (`1000`, `true`, `["MQL", "SQL"]`, `"quoted"`) and as a plain string
//! otherwise (`host:9092`, `exactly_once`, `250ms`). When the literal reading gives the wrong type
//! for the key (`LEADSCORE__SALESFORCE__CLIENT_ID=12345` for a string setting), the plain string is
//! used instead, so users need not quote values inside shell quotes.
//!
//! `LEADSCORE_SALESFORCE_CLIENT_SECRET` (one underscore) is deliberately outside this scheme: it
//! is the default place of the Salesforce secret, which is never a setting (see [`Secret`]).
//!
//! # Kafka properties
//!
//! Every key of `[kafka]` is a librdkafka property, passed through verbatim so that any client
//! option (SASL, TLS, tuning) needs no code here. `_` in a key means `.`, because environment
//! variable names cannot contain dots: `bootstrap_servers`, `"bootstrap.servers"` and
//! `LEADSCORE__KAFKA__BOOTSTRAP_SERVERS` all set `bootstrap.servers`. `[kafka.producer]` and
//! `[kafka.consumer]` (`LEADSCORE__KAFKA__PRODUCER__LINGER_MS`) hold properties for one kind of
//! client, laid over `[kafka]` (see `kafka.rs`).
//!
//! # Errors
//!
//! Every [`ConfigError`] names the file and the dotted key, and the environment variable when the
//! value came from one, since that is what the operator must find and fix. Unknown keys are
//! rejected everywhere but `[kafka]`: a misspelled setting silently taking its default is the
//! kind of mistake found only in production.
//!
//! # Files an operator names
//!
//! The settings file, the rules file ([`rules_file`]) and the secret, password, API key and
//! token files are read by [`small_file`]: bounded in size and in time, so a wrong path
//! (`/dev/zero`, a log, a named pipe nobody writes to) is an error naming it, never a hang.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use toml::{Table, Value};

use crate::codec::Format;

mod check;
pub use check::MAX_EXPLAIN_DEPTH;
mod env;
mod handoff;
mod ingest;
mod kafka;
mod load;
pub mod rules_file;
mod salesforce;
mod scorer;
pub mod small_file;
mod warehouse;

pub use handoff::{status_key, HandoffSettings, LeadIdPattern, DEFAULT_STATUS_ORDER};
pub use ingest::{
    ApiKeysError, IngestSettings, MAX_API_KEYS_FILE_BYTES, MAX_BODY_BYTES, MIN_API_KEY_LEN,
};
pub use kafka::{
    is_sensitive_kafka_property, split_role, KafkaRole, KafkaSettings, CONSUMER_ONLY_PROPERTIES,
    CONSUMER_PREFIX, PRODUCER_ONLY_PROPERTIES, PRODUCER_PREFIX,
};
pub use salesforce::{SalesforceSettings, Secret, MAX_SECRET_FILE_BYTES};
pub use scorer::{Guarantee, ScorerSettings, UnknownTypes};
pub use warehouse::{quote_identifier, WarehouseSettings};

/// Environment variables starting with this are settings.
pub const ENV_PREFIX: &str = "LEADSCORE__";

/// Separates path segments in a setting's environment variable name.
const ENV_SEPARATOR: &str = "__";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why the settings could not be loaded, or a value they point to could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// Bounded: `/dev/zero` or a log given by mistake is an error, not a read that fills the
    /// memory.
    #[error("config {file}: larger than {max} bytes, the limit for a settings file (is it the right file?)")]
    TooLarge { file: String, max: u64 },
    /// The file is not TOML; the message carries toml's line, column and excerpt.
    #[error("config {file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{origin}: unknown key \"{key}\" (expected one of: {})", .expected.join(", "))]
    UnknownKey {
        origin: Origin,
        key: String,
        expected: Vec<&'static str>,
    },
    /// A value of the wrong type or out of range, or two values that contradict each other.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: Origin,
        key: String,
        message: String,
    },
    #[error(
        "{origin}: salesforce.client_secret: the client secret is read from the environment or a \
         file; see salesforce.client_secret_env / client_secret_file"
    )]
    SecretSetting { origin: Origin },
    /// An environment variable with [`ENV_PREFIX`] whose name or value cannot be a setting.
    #[error("environment variable {var}: {message}")]
    EnvVar { var: String, message: String },
    /// A setting that is optional in general but required by the command being run.
    #[error("{key} is not set: {why}")]
    Missing {
        key: &'static str,
        why: &'static str,
    },
    #[error("{}", missing_secret_message(.env_var, .file.as_deref()))]
    MissingSecret {
        env_var: String,
        file: Option<PathBuf>,
    },
    #[error("Salesforce client secret file {}: {source}", .path.display())]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A secret file larger than any secret: most likely the wrong path (a device, a log).
    #[error(
        "Salesforce client secret file {}: larger than {max} bytes, so not a secret; \
         check salesforce.client_secret_file",
        .path.display()
    )]
    SecretFileTooLarge { path: PathBuf, max: u64 },
}

/// How an error names a small file ([`read_capped_text`]) that could not be read.
pub(crate) trait CappedFileError {
    /// Cannot be opened or read, or is not UTF-8 text.
    fn unreadable(path: PathBuf, source: std::io::Error) -> Self;
    /// Larger than `max`: most likely the wrong path (a device, a log).
    fn too_large(path: PathBuf, max: u64) -> Self;
}

/// A small text file (a secret, keys, a password), read to at most one byte past `max`: enough to
/// tell it from a wrong file (`/dev/zero`, a log) without filling the memory.
pub(crate) fn read_capped_text<E: CappedFileError>(path: &Path, max: u64) -> Result<String, E> {
    let bytes =
        small_file::read_capped(path, max).map_err(|e| E::unreadable(path.to_path_buf(), e))?;
    if bytes.len() as u64 > max {
        return Err(E::too_large(path.to_path_buf(), max));
    }
    String::from_utf8(bytes).map_err(|_| {
        let not_text = std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text");
        E::unreadable(path.to_path_buf(), not_text)
    })
}

impl CappedFileError for ConfigError {
    fn unreadable(path: PathBuf, source: std::io::Error) -> Self {
        ConfigError::SecretFile { path, source }
    }

    fn too_large(path: PathBuf, max: u64) -> Self {
        ConfigError::SecretFileTooLarge { path, max }
    }
}

fn missing_secret_message(env_var: &str, file: Option<&Path>) -> String {
    let file = match file {
        Some(path) => format!(
            "the file {} (salesforce.client_secret_file) is empty",
            path.display()
        ),
        None => "salesforce.client_secret_file is not set".to_string(),
    };
    format!(
        "no Salesforce client secret: the environment variable {env_var} is unset or empty, \
         and {file}"
    )
}

/// Where a setting came from, so an error points at the line or variable to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The config file as named on the command line; `None` when running without one.
    pub file: Option<String>,
    /// The environment variable that set (or overrode) the value.
    pub env_var: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, &self.env_var) {
            (Some(file), Some(var)) => write!(f, "config {file}, environment variable {var}"),
            (None, Some(var)) => write!(f, "config from environment variable {var}"),
            (Some(file), None) => write!(f, "config {file}"),
            (None, None) => f.write_str("config (built-in defaults)"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Everything both services read at startup. Each service ignores the sections it has no use
/// for, so one file can serve both.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// librdkafka properties shared by every client of the service.
    pub kafka: KafkaSettings,
    /// Topic names, configurable so several deployments can share a cluster.
    pub topics: Topics,
    /// `leadscore score`.
    pub scorer: ScorerSettings,
    /// `leadscore handoff`.
    pub handoff: HandoffSettings,
    /// The Salesforce org the handoff updates.
    pub salesforce: SalesforceSettings,
    /// The metrics and health endpoint.
    pub admin: AdminSettings,
    /// `leadscore ingest`: the users/track-compatible HTTP API.
    pub ingest: IngestSettings,
    /// `leadscore warehouse import|export`: the PostgreSQL warehouse sync.
    pub warehouse: WarehouseSettings,
    pub log: LogSettings,
}

/// Topic names. Every one is configurable so that two deployments (staging and production, or
/// two tenants) can share a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Lead events the scorer consumes.
    pub input: String,
    /// The scorer's compacted per-user state log, replayed to restore a partition's state.
    pub changelog: String,
    /// Score changes the scorer publishes and the handoff consumes.
    pub output: String,
    /// Input events the scorer cannot decode or validate, kept for inspection instead of
    /// blocking the partition.
    pub dlq: String,
    /// The outcome of every handoff attempt, for downstream consumers to chain on.
    pub handoffs: String,
    /// Leads Salesforce rejected for good (other 4xx), with its answer.
    pub handoffs_dlq: String,
    /// The handoff's compacted per-lead state log (who was handed off since last eligible).
    pub handoff_changelog: String,
    /// The scorer instances' directory: each publishes its admin URL and partitions here
    /// (compacted, one partition), so any instance can forward a lead lookup to the owner.
    /// Used only with `admin.lookup`; default `<scorer.group_id>-instances`.
    pub instances: Option<String>,
    /// Partitions of topics the services create when missing; existing topics are left as they
    /// are. It caps how many instances of a consumer group can share the work.
    pub partitions: i32,
    /// Replication factor of topics the services create when missing; 1 suits a single
    /// development broker only.
    pub replication_factor: i32,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            input: "lead-events".to_string(),
            changelog: "leadscore-scorer-changelog".to_string(),
            output: "lead-score-changes".to_string(),
            dlq: "lead-events-dlq".to_string(),
            handoffs: "lead-handoffs".to_string(),
            handoffs_dlq: "lead-handoffs-dlq".to_string(),
            handoff_changelog: "leadscore-handoff-changelog".to_string(),
            instances: None,
            partitions: 6,
            replication_factor: 1,
        }
    }
}

impl Topics {
    /// Every topic name with its key, for checks and for creating missing topics.
    pub fn names(&self) -> [(&'static str, &str); 7] {
        [
            ("topics.input", &self.input),
            ("topics.changelog", &self.changelog),
            ("topics.output", &self.output),
            ("topics.dlq", &self.dlq),
            ("topics.handoffs", &self.handoffs),
            ("topics.handoffs_dlq", &self.handoffs_dlq),
            ("topics.handoff_changelog", &self.handoff_changelog),
        ]
    }
}

/// The admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`). Both services read this section;
/// run them with different files or `LEADSCORE__ADMIN__LISTEN` when they share a host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// A socket address; port 0 picks a free port (tests).
    pub listen: String,
    /// Serve `GET /v1/leads/{user_id}` on the scorer (docs/operations.md, "Looking a lead
    /// up"). Off by default: the answer shows personal data (attributes, e-mail).
    pub lookup: bool,
    /// A file of bearer tokens, one per line (several, so they can rotate): when set, lookups
    /// need `Authorization: Bearer <token>`. `/metrics` and the probes stay open.
    pub token_file: Option<PathBuf>,
    /// The URL other instances reach this one's admin port at, published so that any instance
    /// can forward a lookup to the partition's owner. Default: `http://<listen address>`, or
    /// with an unspecified listen address (`0.0.0.0`) the host name when it resolves.
    pub advertised_url: Option<String>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: "0.0.0.0:9464".to_string(),
            lookup: false,
            token_file: None,
            advertised_url: None,
        }
    }
}

impl Settings {
    /// The scorer instances' directory topic (`topics.instances`, default
    /// `<scorer.group_id>-instances`).
    pub fn instances_topic(&self) -> String {
        self.topics
            .instances
            .clone()
            .unwrap_or_else(|| format!("{}-instances", self.scorer.group_id))
    }
}

impl AdminSettings {
    /// The listen address, checked at load so this cannot fail on loaded settings.
    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        self.listen.parse()
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter directive (`info`, `leadscore=debug,rdkafka=warn`), so one module can
    /// be made verbose without drowning the rest.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Human,
            level: "info".to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// serde helpers
// ---------------------------------------------------------------------------------------------

/// A duration setting written as [`crate::duration`] does: `"100ms"`, `"5s"`, `"1h30m"`.
fn deserialize_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a duration string like "100ms", "5s" or "1h30m""#)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            let millis = crate::duration::parse(s).map_err(E::custom)?;
            let millis = u64::try_from(millis)
                .map_err(|_| E::custom(format!(r#"duration "{s}" is negative"#)))?;
            Ok(Duration::from_millis(millis))
        }
    }

    deserializer.deserialize_str(DurationVisitor)
}

/// A JSON object written as a TOML table or as a string of JSON.
fn deserialize_json_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<serde_json::Value, D::Error> {
    let value = match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| de::Error::custom(format!("not valid JSON: {e}")))?,
        other => other,
    };
    if !value.is_object() {
        return Err(de::Error::custom(
            r#"must be a JSON object, as an inline table ({ lead_status = "MQL" }) or a JSON string ('{"lead_status": "MQL"}')"#,
        ));
    }
    Ok(value)
}

/// The field names serde's derive gives a struct, read by letting it deserialize from a
/// deserializer that only records them. Keeps the "expected one of" lists of errors in step with
/// the structs; empty for anything but a struct (`[kafka]`).
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Stop;

    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field names recorded")
        }
    }

    impl std::error::Error for Stop {}

    impl de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    struct Recorder<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Recorder<'_> {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Recorder(&mut fields));
    fields
}

/// "an integer", "a string": a TOML type name for a message.
fn with_article(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}

#[cfg(test)]
mod tests;
