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
//! `LEADSCORE__KAFKA__BOOTSTRAP_SERVERS` all set `bootstrap.servers`.
//!
//! # Errors
//!
//! Every [`ConfigError`] names the file and the dotted key, and the environment variable when the
//! value came from one, since that is what the operator must find and fix. Unknown keys are
//! rejected everywhere but `[kafka]`: a misspelled setting silently taking its default is the
//! kind of mistake found only in production.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use toml::{Table, Value};

use crate::codec::Format;
use crate::handoff::salesforce::MAX_COLLECTION_RECORDS;

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
    pub log: LogSettings,
}

/// librdkafka properties, passed verbatim to every consumer, producer and admin client (see the
/// module doc for the key spelling).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Property name (with dots) to value, as librdkafka takes them: everything a string.
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
fn flatten_kafka(table: &Table) -> Result<Table, (String, String)> {
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
fn kafka_key(key: &str) -> String {
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

/// The delivery guarantee of the scorer's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// A crash may republish changes since the last commit; consumers deduplicate by the source
    /// event id. Cheapest and lowest latency.
    #[default]
    AtLeastOnce,
    /// Output, changelog and input offsets are committed in one Kafka transaction, so nothing is
    /// published twice, at the cost of latency per batch.
    ExactlyOnce,
}

impl Guarantee {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `leadscore score`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScorerSettings {
    /// Instances with the same group share the input partitions: scaling out is starting
    /// another instance.
    pub group_id: String,
    /// The rules file to score with. No default because only `score` needs it, so one file can
    /// configure the handoff too; `score` checks it through [`ScorerSettings::rules_path`].
    pub rules: Option<PathBuf>,
    /// Local per-partition state. It is a cache of the changelog topic: losing it costs a
    /// restore, not data.
    pub state_dir: PathBuf,
    pub guarantee: Guarantee,
    /// Wire format of the input topic, fixed per deployment by the producers.
    pub input_format: Format,
    /// Wire format of the score changes, chosen for their consumers.
    pub output_format: Format,
    /// Larger input messages go to the DLQ before parsing, so one hostile message cannot make
    /// the scorer allocate without bound.
    pub max_event_bytes: usize,
    /// Events per commit (or transaction): bounds the work repeated after a crash and the
    /// memory of a batch.
    pub batch_max_events: usize,
    /// How long a partial batch waits before it is committed: bounds latency at low traffic.
    #[serde(deserialize_with = "deserialize_duration")]
    pub batch_max_wait: Duration,
    /// Once a partition has caught up, its clock follows the wall clock, so inactivity timers
    /// fire even when no events arrive. Tests turn it off to keep time in event time only.
    pub follow_wall_clock: bool,
    /// An event whose `time` is further than this ahead of the wall clock is dead-lettered
    /// (`invalid_value`) and never moves a partition clock: one mis-dated record (a year typed
    /// as 2099) would otherwise decay every lead of its partition and be checkpointed.
    #[serde(deserialize_with = "deserialize_duration")]
    pub max_future_skew: Duration,
    /// The producer's transactional id with `exactly_once`; it must be stable across restarts
    /// of one instance and unique between instances. Unset: see
    /// [`ScorerSettings::transactional_id_for`].
    pub transactional_id: Option<String>,
}

impl Default for ScorerSettings {
    fn default() -> Self {
        ScorerSettings {
            group_id: "leadscore-scorer".to_string(),
            rules: None,
            state_dir: PathBuf::from("./state/scorer"),
            guarantee: Guarantee::AtLeastOnce,
            input_format: Format::Json,
            output_format: Format::Json,
            max_event_bytes: 65_536,
            batch_max_events: 5_000,
            batch_max_wait: Duration::from_millis(100),
            follow_wall_clock: true,
            max_future_skew: Duration::from_secs(3600),
            transactional_id: None,
        }
    }
}

impl ScorerSettings {
    /// The rules file, which `leadscore score` cannot run without.
    pub fn rules_path(&self) -> Result<&Path, ConfigError> {
        self.rules.as_deref().ok_or(ConfigError::Missing {
            key: "scorer.rules",
            why: "`leadscore score` needs a rules file (set scorer.rules in the config file or \
                  LEADSCORE__SCORER__RULES)",
        })
    }

    /// The configured transactional id, else `<group_id>-<hostname>`: stable across restarts on
    /// one host, distinct between hosts.
    pub fn transactional_id_for(&self, hostname: &str) -> String {
        match &self.transactional_id {
            Some(id) => id.clone(),
            None => format!("{}-{hostname}", self.group_id),
        }
    }
}

/// `leadscore handoff` (SPEC section 6).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffSettings {
    /// Instances with the same group share the score-change partitions.
    pub group_id: String,
    /// Local per-lead state (handed off since last eligible?), a cache of the handoff
    /// changelog topic.
    pub state_dir: PathBuf,
    /// A lead is handed off when its score is above this.
    pub threshold: i64,
    /// The lead funnel, earliest status first: a lead at `handoff_status` or beyond is never
    /// handed off (never moved back), and a move back to a status before it (a recycle)
    /// makes the lead eligible again. Compared as [`status_key`]s.
    pub status_order: Vec<String>,
    /// The status the handoff puts leads in (the one `patch_body` sets); one of `status_order`.
    pub handoff_status: String,
    /// Statuses outside `status_order` that also count as at or beyond the handoff status (a
    /// status missing from the order otherwise counts as before it). Kept from the releases
    /// before `status_order`; a status listed before `handoff_status` cannot be here.
    pub skip_statuses: Vec<String>,
    /// The snapshot attribute holding the lead's status, placed in `status_order`.
    pub status_attribute: String,
    /// The snapshot attribute holding the Salesforce lead id, for sources whose user ids are
    /// not lead ids; `None`: the user id is the lead id.
    pub lead_id_attribute: Option<String>,
    /// What a lead id must look like, as `[CLASS]{MIN,MAX}` (see [`LeadIdPattern`]); `None`: a
    /// Salesforce record id, 15 or 18 ASCII letters and digits. A lead whose id does not match
    /// is dead-lettered (`invalid_lead_id`) without a call.
    pub lead_id_pattern: Option<String>,
    /// The JSON object sent as each lead's update. TOML may write it as an inline table or as a
    /// JSON string, since Salesforce field names and values are easiest to copy as JSON.
    #[serde(deserialize_with = "deserialize_json_object")]
    pub patch_body: serde_json::Value,
    /// How long to wait for more pending leads to fill one Collections call: fewer API calls
    /// (Salesforce meters them) for a little latency.
    #[serde(deserialize_with = "deserialize_duration")]
    pub linger: Duration,
    /// Leads per sObject Collections call; Salesforce accepts at most
    /// [`MAX_COLLECTION_RECORDS`] (200).
    pub max_batch: usize,
    /// Attempts for retryable failures before the lead is dead-lettered with the last answer.
    pub max_attempts: u32,
    /// The first retry delay; it doubles (with jitter) per attempt.
    #[serde(deserialize_with = "deserialize_duration")]
    pub backoff_initial: Duration,
    /// The cap on a retry delay, so a long outage is still probed regularly.
    #[serde(deserialize_with = "deserialize_duration")]
    pub backoff_max: Duration,
    /// How long calls pause after `403 REQUEST_LIMIT_EXCEEDED`; the leads are kept, and retrying
    /// sooner would only spend the limit that is already exhausted.
    #[serde(deserialize_with = "deserialize_duration")]
    pub limit_pause: Duration,
}

impl Default for HandoffSettings {
    fn default() -> Self {
        HandoffSettings {
            group_id: "leadscore-handoff".to_string(),
            state_dir: PathBuf::from("./state/handoff"),
            threshold: 100,
            status_order: DEFAULT_STATUS_ORDER.iter().map(|s| s.to_string()).collect(),
            handoff_status: "MQL".to_string(),
            skip_statuses: Vec::new(),
            status_attribute: "lead_status".to_string(),
            lead_id_attribute: None,
            lead_id_pattern: None,
            patch_body: serde_json::json!({ "lead_status": "MQL" }),
            linger: Duration::from_millis(200),
            max_batch: MAX_COLLECTION_RECORDS,
            max_attempts: 8,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            limit_pause: Duration::from_secs(60),
        }
    }
}

/// The default `handoff.status_order`: the statuses of the common Salesforce lead funnels,
/// earliest first, with `MQL` the handoff status. Recycle buckets (`Nurture`, `Recycled`) come
/// first, so a move there from any later status is a recycle. Everything after `MQL` is with
/// sales or done, so never moved back to MQL: accepted and qualified (`SAL`, `SQL`),
/// `Opportunity`, converted (`Converted`, Salesforce's default `Closed - Converted`,
/// `Customer`) and closed or disqualified (`Closed`, `Closed - Not Converted`, `Unqualified`,
/// `Disqualified`). `Open - Not Contacted` and `Working - Contacted` are Salesforce's default
/// picklist values for new and worked leads.
pub const DEFAULT_STATUS_ORDER: &[&str] = &[
    "Nurture",
    "Recycled",
    "New",
    "Open",
    "Open - Not Contacted",
    "Working",
    "Working - Contacted",
    "MQL",
    "SAL",
    "SQL",
    "Opportunity",
    "Converted",
    "Closed - Converted",
    "Customer",
    "Closed",
    "Closed - Not Converted",
    "Unqualified",
    "Disqualified",
];

/// How statuses are compared: surrounding whitespace dropped, inner runs of whitespace made one
/// space, and case folded, so `"Closed -  Converted "` from a CRM sync is `Closed - Converted`
/// and `mql` is `MQL`. Picklist values that differ only in case are one status to the handoff.
pub fn status_key(status: &str) -> String {
    status
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// What a lead id must look like: `handoff.lead_id_pattern`, a deliberately small subset of
/// regular expressions with no regex engine behind it: one character class and a length,
/// `[CLASS]{MIN,MAX}` or `[CLASS]{N}`. The class lists characters and ranges (`A-Za-z0-9_-`; a
/// `-` first or last is itself). Whatever the pattern, an id is at most
/// [`LeadIdPattern::MAX_LEN`] long, and `/ ? # % \` and whitespace can never be in the class,
/// nor can an id be only dots: the id is a URL path segment and must not change the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeadIdPattern {
    /// A Salesforce record id: 15 or 18 ASCII letters and digits (the default).
    SalesforceId,
    /// A `[CLASS]{MIN,MAX}` pattern.
    Class {
        /// Allowed bytes (ASCII only).
        allowed: Vec<bool>,
        min: usize,
        max: usize,
    },
}

impl LeadIdPattern {
    /// The longest lead id any pattern accepts.
    pub const MAX_LEN: usize = 255;

    /// Parses `[CLASS]{MIN,MAX}`; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<LeadIdPattern, String> {
        let usage = "expected [CLASS]{MIN,MAX} or [CLASS]{N}, e.g. \"[A-Za-z0-9_-]{1,80}\"";
        let rest = pattern
            .strip_prefix('[')
            .ok_or_else(|| format!("{pattern:?}: {usage}"))?;
        let (class, count) = rest
            .split_once("]{")
            .ok_or_else(|| format!("{pattern:?}: {usage}"))?;
        let count = count
            .strip_suffix('}')
            .ok_or_else(|| format!("{pattern:?}: {usage}"))?;
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("{pattern:?}: {s:?} is not a length; {usage}"))
        };
        let (min, max) = match count.split_once(',') {
            Some((lo, hi)) => (number(lo)?, number(hi)?),
            None => (number(count)?, number(count)?),
        };
        if min == 0 || min > max || max > Self::MAX_LEN {
            return Err(format!(
                "{pattern:?}: the length must be 1 to {} with MIN <= MAX",
                Self::MAX_LEN
            ));
        }
        let mut allowed = vec![false; 128];
        let chars: Vec<char> = class.chars().collect();
        if chars.is_empty() {
            return Err(format!("{pattern:?}: the character class is empty"));
        }
        let mut i = 0;
        while i < chars.len() {
            let (lo, hi) = if i + 2 < chars.len() && chars[i + 1] == '-' {
                i += 3;
                (chars[i - 3], chars[i - 1])
            } else {
                i += 1;
                (chars[i - 1], chars[i - 1])
            };
            if !lo.is_ascii() || !hi.is_ascii() || lo > hi {
                return Err(format!(
                    "{pattern:?}: {lo}-{hi} is not an ASCII range (ids are ASCII)"
                ));
            }
            for c in lo..=hi {
                if c.is_ascii_control()
                    || c.is_ascii_whitespace()
                    || matches!(c, '/' | '?' | '#' | '%' | '\\')
                {
                    return Err(format!(
                        "{pattern:?}: {c:?} cannot be in a lead id (it is a URL path segment)"
                    ));
                }
                allowed[c as usize] = true;
            }
        }
        Ok(LeadIdPattern::Class { allowed, min, max })
    }

    /// Whether `id` is a lead id of this shape.
    pub fn matches(&self, id: &str) -> bool {
        if id.bytes().all(|b| b == b'.') {
            return false; // `.` and `..` (and empty) would be normalised out of the URL
        }
        match self {
            LeadIdPattern::SalesforceId => {
                (id.len() == 15 || id.len() == 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
            }
            LeadIdPattern::Class { allowed, min, max } => {
                (*min..=*max).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| allowed.get(usize::from(b)).copied().unwrap_or(false))
            }
        }
    }
}

impl HandoffSettings {
    /// The compiled `lead_id_pattern` (checked at load, so an error here names the setting).
    pub fn lead_id_pattern(&self) -> Result<LeadIdPattern, String> {
        match &self.lead_id_pattern {
            None => Ok(LeadIdPattern::SalesforceId),
            Some(p) => LeadIdPattern::parse(p),
        }
    }
}

/// The largest client secret file read: a secret is a few dozen bytes, and a mistaken path
/// (`/dev/zero`, a log file) must fail with a clear error rather than fill the memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The Salesforce org. The client secret is not here: see [`SalesforceSettings::client_secret`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SalesforceSettings {
    /// Base of the API and token URLs. The default is the local stand-in `leadscore demo` runs.
    pub instance_url: String,
    /// The REST API version in request paths, pinned so an org upgrade cannot change answers.
    pub api_version: String,
    /// The connected app's OAuth client id (not a secret).
    pub client_id: String,
    /// The environment variable holding the client secret, named here so deployments can
    /// follow their own secret-injection conventions.
    pub client_secret_env: String,
    /// A file holding the client secret (a mounted secret), read when the variable is unset.
    pub client_secret_file: Option<PathBuf>,
    /// Per HTTP request; a timed-out call is retried like a connection error.
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
}

impl Default for SalesforceSettings {
    fn default() -> Self {
        SalesforceSettings {
            instance_url: "http://127.0.0.1:8089".to_string(),
            api_version: "v60.0".to_string(),
            client_id: String::new(),
            client_secret_env: "LEADSCORE_SALESFORCE_CLIENT_SECRET".to_string(),
            client_secret_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl SalesforceSettings {
    /// The client secret: from the environment variable named by `client_secret_env` if it is
    /// set and non-empty, else from `client_secret_file` (trimmed, since files usually end with
    /// a newline). Never a setting, so it cannot end up on a command line or in a logged config.
    pub fn client_secret(&self) -> Result<Secret, ConfigError> {
        self.client_secret_with(|name| std::env::var(name).ok())
    }

    /// [`SalesforceSettings::client_secret`] with the environment given as a lookup, so tests
    /// need not mutate the process environment.
    pub fn client_secret_with(
        &self,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Secret, ConfigError> {
        if let Some(value) = env(&self.client_secret_env).filter(|v| !v.is_empty()) {
            return Ok(Secret(value));
        }
        let missing = || ConfigError::MissingSecret {
            env_var: self.client_secret_env.clone(),
            file: self.client_secret_file.clone(),
        };
        let path = self.client_secret_file.as_ref().ok_or_else(missing)?;
        let file_error = |source| ConfigError::SecretFile {
            path: path.clone(),
            source,
        };
        // Read at most one byte past the cap: enough to tell a secret from a wrong file.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(
                std::fs::File::open(path).map_err(file_error)?,
                MAX_SECRET_FILE_BYTES + 1,
            ),
            &mut bytes,
        )
        .map_err(file_error)?;
        if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
            return Err(ConfigError::SecretFileTooLarge {
                path: path.clone(),
                max: MAX_SECRET_FILE_BYTES,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            file_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not UTF-8 text",
            ))
        })?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(missing());
        }
        Ok(Secret(secret.to_string()))
    }
}

/// A credential. Its `Debug` and `Display` print `***`, so it can sit in structs that get logged;
/// only [`Secret::expose`] gives the value, at the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`). Both services read this section;
/// run them with different files or `LEADSCORE__ADMIN__LISTEN` when they share a host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// A socket address; port 0 picks a free port (tests).
    pub listen: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: "0.0.0.0:9464".to_string(),
        }
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

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// One `LEADSCORE__...` variable.
struct EnvEntry {
    var: String,
    /// The lowercased key path; under `kafka`, one segment in librdkafka spelling.
    path: Vec<String>,
    /// The value as given, used as a plain string when its literal reading has the wrong type.
    raw: String,
}

/// Where each setting came from, for naming it in errors.
struct Sources<'a> {
    file: Option<&'a str>,
    env: Vec<EnvEntry>,
}

impl Sources<'_> {
    /// The origin of the value at `path`: the environment variable that set it, or a table
    /// around it, or a key inside it; else the file.
    fn origin(&self, path: &[&str]) -> Origin {
        let env_var = self
            .env
            .iter()
            .filter(|_| !path.is_empty())
            .find(|entry| entry.path.iter().zip(path).all(|(a, b)| a.as_str() == *b))
            .map(|entry| entry.var.clone());
        Origin {
            file: self.file.map(str::to_string),
            env_var,
        }
    }

    /// The origin of a setting named by dotted keys (not under `kafka`): the first that came
    /// from the environment, else the file.
    fn origin_of(&self, keys: &[&str]) -> Origin {
        keys.iter()
            .map(|key| self.origin(&key.split('.').collect::<Vec<_>>()))
            .find(|origin| origin.env_var.is_some())
            .unwrap_or_else(|| self.origin(&[]))
    }

    /// The raw text of the environment variable that set exactly `path`.
    fn env_raw(&self, path: &[&str]) -> Option<&str> {
        self.env
            .iter()
            .find(|entry| {
                entry
                    .path
                    .iter()
                    .map(String::as_str)
                    .eq(path.iter().copied())
            })
            .map(|entry| entry.raw.as_str())
    }

    fn invalid(&self, keys: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin_of(keys),
            key: keys.first().copied().unwrap_or_default().to_string(),
            message: message.into(),
        }
    }
}

impl Settings {
    /// Defaults, then the file at `path` (if any), then the process's `LEADSCORE__*`
    /// environment variables.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let env = process_env()?;
        match path {
            None => Settings::load_from(None, env),
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: name.clone(),
                    source,
                })?;
                Settings::load_from(Some((&name, &text)), env)
            }
        }
    }

    /// [`Settings::load`] from given text and environment: `file` is (name for errors, TOML
    /// text); `env` may hold any variables, those without [`ENV_PREFIX`] are ignored.
    pub fn load_from(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut table = match file {
            None => Table::new(),
            Some((name, text)) => text.parse::<Table>().map_err(|e| ConfigError::Syntax {
                file: name.to_string(),
                message: e.to_string().trim_end().to_string(),
            })?,
        };
        let sources = Sources {
            file: file.map(|(name, _)| name),
            env: parse_env(env)?,
        };

        // Kafka keys are normalized before the overlay, so `bootstrap_servers` in the file and
        // LEADSCORE__KAFKA__BOOTSTRAP_SERVERS land on the same key and the variable wins.
        if let Some(Value::Table(kafka)) = table.get_mut("kafka") {
            *kafka = flatten_kafka(kafka).map_err(|(key, message)| ConfigError::Invalid {
                origin: sources.origin(&[]),
                key: format!("kafka.{key}"),
                message,
            })?;
        }
        for entry in &sources.env {
            overlay(&mut table, entry, &sources)?;
        }

        let sections = field_names::<Settings>();
        if let Some(key) = table.keys().find(|key| !sections.contains(&key.as_str())) {
            return Err(ConfigError::UnknownKey {
                origin: sources.origin(&[key]),
                key: key.clone(),
                expected: sections.to_vec(),
            });
        }
        let mut take = |name: &str| table.remove(name);
        let settings = Settings {
            kafka: section(&sources, "kafka", take("kafka"))?,
            topics: section(&sources, "topics", take("topics"))?,
            scorer: section(&sources, "scorer", take("scorer"))?,
            handoff: section(&sources, "handoff", take("handoff"))?,
            salesforce: section(&sources, "salesforce", take("salesforce"))?,
            admin: section(&sources, "admin", take("admin"))?,
            log: section(&sources, "log", take("log"))?,
        };
        settings.check(&sources)?;
        Ok(settings)
    }

    /// Checks across fields and of ranges the types do not express, so a bad setting stops the
    /// service at startup rather than at the first event that needs it.
    fn check(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let ensure = |ok: bool, keys: &[&str], message: &str| {
            if ok {
                Ok(())
            } else {
                Err(sources.invalid(keys, message))
            }
        };
        let names = self.topics.names();
        for (i, (key, name)) in names.iter().enumerate() {
            ensure(!name.is_empty(), &[key], "must not be empty")?;
            if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                let message = format!("must differ from {other} (both are \"{name}\")");
                return Err(sources.invalid(&[key, other], message));
            }
        }
        let topics = &self.topics;
        ensure(
            topics.partitions >= 1,
            &["topics.partitions"],
            "must be at least 1",
        )?;
        let replication = topics.replication_factor >= 1;
        ensure(
            replication,
            &["topics.replication_factor"],
            "must be at least 1",
        )?;

        let (scorer, handoff) = (&self.scorer, &self.handoff);
        let non_empty = "must not be empty";
        ensure(!scorer.group_id.is_empty(), &["scorer.group_id"], non_empty)?;
        ensure(
            !handoff.group_id.is_empty(),
            &["handoff.group_id"],
            non_empty,
        )?;
        ensure(
            scorer.group_id != handoff.group_id,
            &["handoff.group_id", "scorer.group_id"],
            "must differ from scorer.group_id: the services consume different topics",
        )?;
        ensure(
            scorer.state_dir != handoff.state_dir,
            &["handoff.state_dir", "scorer.state_dir"],
            "must differ from scorer.state_dir: each service owns its state directory",
        )?;
        let positive = "must be greater than 0";
        ensure(
            scorer.max_event_bytes > 0,
            &["scorer.max_event_bytes"],
            positive,
        )?;
        ensure(
            scorer.batch_max_events > 0,
            &["scorer.batch_max_events"],
            positive,
        )?;
        ensure(
            scorer.transactional_id.as_deref() != Some(""),
            &["scorer.transactional_id"],
            "must not be empty (leave it unset for the default)",
        )?;

        ensure(
            (1..=MAX_COLLECTION_RECORDS).contains(&handoff.max_batch),
            &["handoff.max_batch"],
            &format!(
                "must be between 1 and {MAX_COLLECTION_RECORDS} (the sObject Collections limit)"
            ),
        )?;
        ensure(
            handoff.max_attempts >= 1,
            &["handoff.max_attempts"],
            "must be at least 1",
        )?;
        let nonzero = "must be greater than 0s";
        ensure(
            !handoff.backoff_initial.is_zero(),
            &["handoff.backoff_initial"],
            nonzero,
        )?;
        ensure(
            handoff.backoff_initial <= handoff.backoff_max,
            &["handoff.backoff_max", "handoff.backoff_initial"],
            "must not be less than handoff.backoff_initial",
        )?;
        let status = &["handoff.status_attribute"];
        ensure(!handoff.status_attribute.is_empty(), status, non_empty)?;
        self.check_funnel(sources)?;
        if let Err(message) = handoff.lead_id_pattern() {
            return Err(sources.invalid(&["handoff.lead_id_pattern"], message));
        }
        ensure(
            handoff.lead_id_attribute.as_deref() != Some(""),
            &["handoff.lead_id_attribute"],
            "must not be empty (leave it unset to use the user id)",
        )?;

        let salesforce = &self.salesforce;
        let url = &salesforce.instance_url;
        ensure(
            url.starts_with("http://") || url.starts_with("https://"),
            &["salesforce.instance_url"],
            &format!("\"{url}\" is not an http:// or https:// URL"),
        )?;
        let secret_env = &["salesforce.client_secret_env"];
        ensure(
            !salesforce.client_secret_env.is_empty(),
            secret_env,
            non_empty,
        )?;
        ensure(
            !salesforce.timeout.is_zero(),
            &["salesforce.timeout"],
            nonzero,
        )?;

        if let Err(e) = self.admin.listen_addr() {
            let listen = &self.admin.listen;
            let message = format!("\"{listen}\" is not a socket address like 0.0.0.0:9464: {e}");
            return Err(sources.invalid(&["admin.listen"], message));
        }
        ensure(!self.log.level.is_empty(), &["log.level"], non_empty)
    }
}

impl Settings {
    /// `handoff.status_order`, `handoff_status` and `skip_statuses` must describe one funnel.
    fn check_funnel(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let h = &self.handoff;
        let order = "handoff.status_order";
        if h.status_order.is_empty() {
            return Err(sources.invalid(&[order], "must list the lead funnel's statuses"));
        }
        let keys: Vec<String> = h.status_order.iter().map(|s| status_key(s)).collect();
        for (i, key) in keys.iter().enumerate() {
            if key.is_empty() {
                return Err(sources.invalid(&[order], format!("entry {i} is empty")));
            }
            if let Some(j) = keys[..i].iter().position(|k| k == key) {
                let message = format!(
                    "{:?} and {:?} are the same status (statuses compare without case and extra \
                     whitespace)",
                    h.status_order[j], h.status_order[i]
                );
                return Err(sources.invalid(&[order], message));
            }
        }
        let handoff_key = status_key(&h.handoff_status);
        let Some(at) = keys.iter().position(|k| *k == handoff_key) else {
            let message = format!("{:?} is not in handoff.status_order", h.handoff_status);
            return Err(sources.invalid(&["handoff.handoff_status", order], message));
        };
        for skip in &h.skip_statuses {
            let key = status_key(skip);
            if key.is_empty() {
                return Err(sources.invalid(&["handoff.skip_statuses"], "has an empty entry"));
            }
            if keys[..at].contains(&key) {
                let message = format!(
                    "{skip:?} is before handoff.handoff_status {:?} in handoff.status_order; \
                     remove it from one of them",
                    h.handoff_status
                );
                return Err(sources.invalid(&["handoff.skip_statuses", order], message));
            }
        }
        Ok(())
    }
}

/// The process's `LEADSCORE__*` variables. Unlike `std::env::vars`, a variable that is not
/// Unicode is an error naming it rather than a panic, and other variables are not looked at.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let lossy = name.to_string_lossy();
        if !lossy.starts_with(ENV_PREFIX) {
            continue;
        }
        match (name.to_str(), value.into_string()) {
            (Some(name), Ok(value)) => vars.push((name.to_string(), value)),
            _ => {
                return Err(ConfigError::EnvVar {
                    var: lossy.into_owned(),
                    message: "is not valid Unicode".to_string(),
                })
            }
        }
    }
    Ok(vars)
}

/// The `LEADSCORE__*` variables among `env`, sorted by path so that a variable setting a whole
/// table applies before those setting keys inside it.
fn parse_env(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<EnvEntry>, ConfigError> {
    let mut entries = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let segments: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::EnvVar {
                var,
                message: "has an empty path segment (write LEADSCORE__SECTION__KEY)".to_string(),
            });
        }
        let path = match segments.split_first() {
            Some((section, keys)) if section == "kafka" && !keys.is_empty() => {
                vec![section.clone(), kafka_key(&keys.join("."))]
            }
            _ => segments,
        };
        entries.push(EnvEntry { var, path, raw });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    for pair in entries.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(ConfigError::EnvVar {
                var: pair[1].var.clone(),
                message: format!("sets the same key as {}", pair[0].var),
            });
        }
    }
    Ok(entries)
}

/// "an integer", "a string": a TOML type name for a message.
fn with_article(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}

/// An environment variable's value: a TOML value literal when it is one, else the plain string.
fn env_value(raw: &str) -> Value {
    raw.parse::<Value>()
        .unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// Inserts one environment variable's value at its path, creating tables as needed.
fn overlay(table: &mut Table, entry: &EnvEntry, sources: &Sources<'_>) -> Result<(), ConfigError> {
    let mut value = env_value(&entry.raw);
    let whole_kafka = entry.path.len() == 1 && entry.path[0] == "kafka";
    if let (true, Value::Table(kafka)) = (whole_kafka, &value) {
        value =
            Value::Table(
                flatten_kafka(kafka).map_err(|(key, message)| ConfigError::Invalid {
                    origin: sources.origin(&["kafka"]),
                    key: format!("kafka.{key}"),
                    message,
                })?,
            );
    }
    let Some((last, parents)) = entry.path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let slot = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match slot {
            Value::Table(inner) => current = inner,
            other => {
                let path: Vec<&str> = parents[..=depth].iter().map(String::as_str).collect();
                return Err(ConfigError::Invalid {
                    origin: sources.origin(&path),
                    key: path.join("."),
                    message: format!(
                        "is {}, not a table, so {} cannot set a key inside it",
                        with_article(other.type_str()),
                        entry.var
                    ),
                });
            }
        }
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// One section, deserialized from its table, with errors naming the offending key.
fn section<T: DeserializeOwned + Default>(
    sources: &Sources<'_>,
    name: &str,
    value: Option<Value>,
) -> Result<T, ConfigError> {
    let mut table = match value {
        None => return Ok(T::default()),
        Some(Value::Table(table)) => table,
        Some(other) => {
            return Err(ConfigError::Invalid {
                origin: sources.origin(&[name]),
                key: name.to_string(),
                message: format!("must be a table, not {}", with_article(other.type_str())),
            })
        }
    };
    if name == "salesforce" && table.contains_key("client_secret") {
        return Err(ConfigError::SecretSetting {
            origin: sources.origin(&[name, "client_secret"]),
        });
    }
    let fields = field_names::<T>();
    if !fields.is_empty() {
        if let Some(key) = table.keys().find(|key| !fields.contains(&key.as_str())) {
            return Err(ConfigError::UnknownKey {
                origin: sources.origin(&[name, key]),
                key: format!("{name}.{key}"),
                expected: fields.to_vec(),
            });
        }
    }
    if let Ok(settings) = T::deserialize(table.clone()) {
        return Ok(settings);
    }
    // serde does not say which field failed. Every field has a default, so each key can be
    // tried alone: the first that fails is the culprit, and its error is the message. A key set
    // from the environment gets a second chance as the plain string it was written as.
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let Some(value) = table.get(&key).cloned() else {
            continue;
        };
        let alone = |value: Value| T::deserialize(Table::from_iter([(key.clone(), value)]));
        let Err(error) = alone(value.clone()) else {
            continue;
        };
        if let Some(raw) = sources.env_raw(&[name, &key]) {
            let plain = Value::String(raw.to_string());
            if plain != value && alone(plain.clone()).is_ok() {
                table.insert(key, plain);
                continue;
            }
        }
        return Err(ConfigError::Invalid {
            origin: sources.origin(&[name, &key]),
            key: format!("{name}.{key}"),
            message: error.message().to_string(),
        });
    }
    T::deserialize(table).map_err(|error| ConfigError::Invalid {
        origin: sources.origin(&[name]),
        key: name.to_string(),
        message: error.message().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/config/leadscore.example.toml");

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(file: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(Some(("test.toml", file)), env(vars))
    }

    fn load_err(file: &str, vars: &[(&str, &str)]) -> String {
        match load(file, vars) {
            Ok(settings) => panic!("expected an error, loaded {settings:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = Settings::load_from(None, env(&[])).expect("defaults load");
        assert_eq!(s, Settings::default());
        assert_eq!(s.kafka.get("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(s.kafka.properties.len(), 1);
        assert_eq!(s.topics.input, "lead-events");
        assert_eq!(s.topics.changelog, "leadscore-scorer-changelog");
        assert_eq!(s.topics.output, "lead-score-changes");
        assert_eq!(s.topics.dlq, "lead-events-dlq");
        assert_eq!(s.topics.handoffs, "lead-handoffs");
        assert_eq!(s.topics.handoffs_dlq, "lead-handoffs-dlq");
        assert_eq!(s.topics.handoff_changelog, "leadscore-handoff-changelog");
        assert_eq!((s.topics.partitions, s.topics.replication_factor), (6, 1));
        assert_eq!(s.scorer.group_id, "leadscore-scorer");
        assert_eq!(s.scorer.rules, None);
        assert_eq!(s.scorer.state_dir, PathBuf::from("./state/scorer"));
        assert_eq!(s.scorer.guarantee, Guarantee::AtLeastOnce);
        assert_eq!(s.scorer.input_format, Format::Json);
        assert_eq!(s.scorer.output_format, Format::Json);
        assert_eq!(s.scorer.max_event_bytes, 65_536);
        assert_eq!(s.scorer.batch_max_events, 5_000);
        assert_eq!(s.scorer.batch_max_wait, Duration::from_millis(100));
        assert!(s.scorer.follow_wall_clock);
        assert_eq!(s.scorer.transactional_id, None);
        assert_eq!(s.handoff.group_id, "leadscore-handoff");
        assert_eq!(s.handoff.state_dir, PathBuf::from("./state/handoff"));
        assert_eq!(s.handoff.threshold, 100);
        assert_eq!(s.handoff.status_order, DEFAULT_STATUS_ORDER);
        assert_eq!(s.handoff.handoff_status, "MQL");
        assert!(s.handoff.skip_statuses.is_empty());
        assert_eq!(s.handoff.status_attribute, "lead_status");
        assert_eq!(s.handoff.lead_id_attribute, None);
        assert_eq!(s.handoff.lead_id_pattern, None);
        assert_eq!(
            s.handoff.patch_body,
            serde_json::json!({"lead_status": "MQL"})
        );
        assert_eq!(s.handoff.linger, Duration::from_millis(200));
        assert_eq!(s.handoff.max_batch, 200);
        assert_eq!(s.handoff.max_attempts, 8);
        assert_eq!(s.handoff.backoff_initial, Duration::from_millis(200));
        assert_eq!(s.handoff.backoff_max, Duration::from_secs(30));
        assert_eq!(s.handoff.limit_pause, Duration::from_secs(60));
        assert_eq!(s.salesforce.instance_url, "http://127.0.0.1:8089");
        assert_eq!(s.salesforce.api_version, "v60.0");
        assert_eq!(s.salesforce.client_id, "");
        assert_eq!(
            s.salesforce.client_secret_env,
            "LEADSCORE_SALESFORCE_CLIENT_SECRET"
        );
        assert_eq!(s.salesforce.client_secret_file, None);
        assert_eq!(s.salesforce.timeout, Duration::from_secs(10));
        assert_eq!(s.admin.listen, "0.0.0.0:9464");
        assert_eq!(s.log.format, LogFormat::Human);
        assert_eq!(s.log.level, "info");
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let file = r#"
            [scorer]
            rules = "file-rules.toml"
            batch_max_events = 100
            batch_max_wait = "1s"
            [handoff]
            threshold = 50
        "#;
        let s = load(
            file,
            &[
                ("LEADSCORE__SCORER__RULES", "/etc/rules.toml"),
                ("LEADSCORE__SCORER__GUARANTEE", "exactly_once"),
                ("LEADSCORE__HANDOFF__LINGER", "50ms"),
                ("UNRELATED", "ignored"),
            ],
        )
        .expect("loads");
        assert_eq!(s.scorer.rules, Some(PathBuf::from("/etc/rules.toml")));
        assert_eq!(s.scorer.guarantee, Guarantee::ExactlyOnce);
        assert_eq!(s.scorer.batch_max_events, 100);
        assert_eq!(s.scorer.batch_max_wait, Duration::from_secs(1));
        assert_eq!(s.handoff.threshold, 50);
        assert_eq!(s.handoff.linger, Duration::from_millis(50));
        assert_eq!(s.handoff.max_batch, 200, "untouched keys keep defaults");
        assert_eq!(
            s.scorer.rules_path().ok(),
            Some(Path::new("/etc/rules.toml"))
        );
    }

    #[test]
    fn env_values_parse_as_toml_literals_or_strings() {
        let s = load(
            "",
            &[
                ("LEADSCORE__SCORER__BATCH_MAX_EVENTS", "1000"),
                ("LEADSCORE__SCORER__FOLLOW_WALL_CLOCK", "false"),
                ("LEADSCORE__HANDOFF__SKIP_STATUSES", r#"["MQL", "SQL"]"#),
                ("LEADSCORE__HANDOFF__STATUS_ATTRIBUTE", r#""status""#),
                ("LEADSCORE__HANDOFF__PATCH_BODY", r#"{"Status": "Working"}"#),
                ("LEADSCORE__ADMIN__LISTEN", "127.0.0.1:9000"),
                // A number where a string belongs falls back to the text as written.
                ("LEADSCORE__SALESFORCE__CLIENT_ID", "12345"),
                ("LEADSCORE__LOG__FORMAT", "json"),
            ],
        )
        .expect("loads");
        assert_eq!(s.scorer.batch_max_events, 1000);
        assert!(!s.scorer.follow_wall_clock);
        assert_eq!(s.handoff.skip_statuses, ["MQL", "SQL"]);
        assert_eq!(s.handoff.status_attribute, "status");
        assert_eq!(
            s.handoff.patch_body,
            serde_json::json!({"Status": "Working"})
        );
        assert_eq!(s.admin.listen, "127.0.0.1:9000");
        assert_eq!(s.salesforce.client_id, "12345");
        assert_eq!(s.log.format, LogFormat::Json);

        let e = load_err("", &[("LEADSCORE__SCORER__BATCH_MAX_EVENTS", "many")]);
        assert!(e.contains("scorer.batch_max_events"), "{e}");
    }

    #[test]
    fn patch_body_accepts_an_inline_table_or_a_json_string() {
        let table = load(r#"handoff.patch_body = { Status = "Working" }"#, &[]).expect("table");
        let json = load(r#"handoff.patch_body = '{"Status": "Working"}'"#, &[]).expect("json");
        assert_eq!(table.handoff.patch_body, json.handoff.patch_body);
        let e = load_err(r#"handoff.patch_body = "[1, 2]""#, &[]);
        assert!(
            e.contains("handoff.patch_body: must be a JSON object"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let e = load_err("[scorer]\nrulez = \"x.toml\"\n", &[]);
        assert!(
            e.starts_with(r#"config test.toml: unknown key "scorer.rulez" (expected one of: group_id, rules, state_dir,"#),
            "{e}"
        );
        let e = load_err("[scorers]\n", &[]);
        assert!(e.contains(r#"unknown key "scorers""#), "{e}");
        assert!(e.contains("kafka, topics, scorer"), "{e}");
        let e = load_err("[handoff]\nthreshold = \"high\"\n", &[]);
        assert!(
            e.starts_with("config test.toml: handoff.threshold: "),
            "{e}"
        );
        let e = load_err("[scorer]\nbatch_max_wait = \"5x\"\n", &[]);
        assert!(e.contains("scorer.batch_max_wait"), "{e}");
        assert!(e.contains(r#"unknown unit "x""#), "{e}");
        let e = load_err("[scorer]\nguarantee = \"exactly\"\n", &[]);
        assert!(e.contains("scorer.guarantee"), "{e}");
        let e = load_err("topics = 3\n", &[]);
        assert!(e.contains("topics: must be a table"), "{e}");
        let e = load_err("[scorer\n", &[]);
        assert!(e.starts_with("config test.toml: TOML parse error"), "{e}");
    }

    #[test]
    fn kafka_properties_pass_through_verbatim_with_underscores_as_dots() {
        let file = r#"
            [kafka]
            bootstrap_servers = "file:9092"
            "enable.idempotence" = true
            queue_buffering_max_ms = 5
            ssl.ca.location = "/etc/ca.pem"
            "security.protocol" = "SASL_SSL"
        "#;
        let s = load(file, &[("LEADSCORE__KAFKA__BOOTSTRAP_SERVERS", "env:9092")]).expect("loads");
        let props: Vec<(&str, &str)> = s.kafka.iter().collect();
        assert_eq!(
            props,
            [
                ("bootstrap.servers", "env:9092"),
                ("enable.idempotence", "true"),
                ("queue.buffering.max.ms", "5"),
                ("security.protocol", "SASL_SSL"),
                ("ssl.ca.location", "/etc/ca.pem"),
            ]
        );
        let s = load("[kafka]\n\"bootstrap.servers\" = \"a:1\"\n", &[]).expect("loads");
        assert_eq!(s.kafka.get("bootstrap.servers"), Some("a:1"));
        let s = load("[kafka]\nclient_id = \"x\"\n", &[]).expect("loads");
        assert_eq!(s.kafka.get("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(s.kafka.get("client.id"), Some("x"));

        let e = load_err(
            "[kafka]\nbootstrap_servers = \"a\"\n\"bootstrap.servers\" = \"b\"\n",
            &[],
        );
        assert!(e.contains("kafka.bootstrap.servers: set twice"), "{e}");
    }

    #[test]
    fn env_var_names_the_source_in_errors() {
        let e = load_err("", &[("LEADSCORE__SCORER__BATCH_MAX_EVENTS", "0")]);
        assert_eq!(
            e,
            "config test.toml, environment variable LEADSCORE__SCORER__BATCH_MAX_EVENTS: \
             scorer.batch_max_events: must be greater than 0"
        );
        let e = load_err("", &[("LEADSCORE__SCORER__RULEZ", "x")]);
        assert!(
            e.starts_with(
                r#"config test.toml, environment variable LEADSCORE__SCORER__RULEZ: unknown key "scorer.rulez""#
            ),
            "{e}"
        );
        let e = Settings::load_from(None, env(&[("LEADSCORE__HANDOFF__LINGER", "soon")]))
            .expect_err("bad duration")
            .to_string();
        assert!(
            e.starts_with(
                "config from environment variable LEADSCORE__HANDOFF__LINGER: handoff.linger:"
            ),
            "{e}"
        );
        let e = load_err("scorer = 1\n", &[("LEADSCORE__SCORER__RULES", "r.toml")]);
        assert!(e.contains("scorer: is an integer, not a table"), "{e}");
        let e = load_err("", &[("LEADSCORE__SCORER____RULES", "r.toml")]);
        assert!(
            e.contains("LEADSCORE__SCORER____RULES: has an empty path segment"),
            "{e}"
        );
        let e = load_err(
            "",
            &[
                ("LEADSCORE__KAFKA__BOOTSTRAP_SERVERS", "a"),
                ("LEADSCORE__KAFKA__BOOTSTRAP__SERVERS", "b"),
            ],
        );
        assert!(e.contains("sets the same key as"), "{e}");
    }

    #[test]
    fn cross_field_errors_name_the_field() {
        let e = load_err("[topics]\noutput = \"lead-events\"\n", &[]);
        assert_eq!(
            e,
            r#"config test.toml: topics.output: must differ from topics.input (both are "lead-events")"#
        );
        let e = load_err("[scorer]\nbatch_max_events = 0\n", &[]);
        assert!(
            e.contains("scorer.batch_max_events: must be greater than 0"),
            "{e}"
        );
        let e = load_err("[handoff]\nmax_batch = 201\n", &[]);
        assert!(
            e.contains("handoff.max_batch: must be between 1 and 200"),
            "{e}"
        );
        let e = load_err("[handoff]\nbackoff_max = \"100ms\"\n", &[]);
        assert!(
            e.contains("handoff.backoff_max: must not be less than"),
            "{e}"
        );
        let e = load_err("[admin]\nlisten = \"localhost\"\n", &[]);
        assert!(
            e.contains("admin.listen: \"localhost\" is not a socket address"),
            "{e}"
        );
        let e = load_err("[handoff]\ngroup_id = \"leadscore-scorer\"\n", &[]);
        assert!(
            e.contains("handoff.group_id: must differ from scorer.group_id"),
            "{e}"
        );
        let e = load_err("[salesforce]\ninstance_url = \"example.com\"\n", &[]);
        assert!(e.contains("salesforce.instance_url:"), "{e}");
        let e = load(
            "[topics]\npartitions = 0\n",
            &[("LEADSCORE__TOPICS__PARTITIONS", "3")],
        )
        .expect("the variable overrides the bad file value");
        assert_eq!(e.topics.partitions, 3);
    }

    #[test]
    fn the_funnel_settings_must_describe_one_funnel() {
        let s = load(
            "[handoff]\nstatus_order = [\"Lead\", \"Qualified\", \"Won\"]\nhandoff_status = \" qualified\"\nskip_statuses = [\"Lost\"]\n",
            &[],
        )
        .expect("an org's own funnel loads");
        assert_eq!(s.handoff.status_order, ["Lead", "Qualified", "Won"]);
        let cases = [
            ("status_order = []", "handoff.status_order: must list"),
            (
                "status_order = [\"Open\", \" \", \"MQL\"]",
                "handoff.status_order: entry 1 is empty",
            ),
            (
                "status_order = [\"Open\", \"MQL\", \"open\"]",
                "handoff.status_order: \"Open\" and \"open\" are the same status",
            ),
            (
                "handoff_status = \"Qualified\"",
                "handoff.handoff_status: \"Qualified\" is not in handoff.status_order",
            ),
            (
                "skip_statuses = [\"MQL\", \"working\"]",
                "handoff.skip_statuses: \"working\" is before handoff.handoff_status",
            ),
            (
                "lead_id_pattern = \"[a-z]+\"",
                "handoff.lead_id_pattern: \"[a-z]+\": expected [CLASS]{MIN,MAX}",
            ),
        ];
        for (line, want) in cases {
            let e = load_err(&format!("[handoff]\n{line}\n"), &[]);
            assert!(e.contains(want), "{line}: {e}");
        }
        // Skipping a status at or after the handoff status is redundant, not wrong.
        load("[handoff]\nskip_statuses = [\"MQL\", \"SQL\"]\n", &[]).expect("compatible");
    }

    #[test]
    fn statuses_compare_without_case_or_extra_whitespace() {
        assert_eq!(status_key("  Closed -   Converted "), "closed - converted");
        assert_eq!(status_key("MQL"), status_key("mql"));
        assert_eq!(status_key("\tWorking\n"), "working");
        assert_eq!(status_key("   "), "");
    }

    #[test]
    fn lead_ids_are_salesforce_ids_by_default() {
        let ids = LeadIdPattern::SalesforceId;
        for good in [
            "00Q000000000001",
            "00Q000000000001AAA",
            "00Q5g000004nuOjEAI",
        ] {
            assert!(ids.matches(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "00Q00000000000/",
            "00Q0000000000",       // 13
            "00Q00000000000",      // 14
            "00Q0000000000001",    // 16
            "00Q00000000000001",   // 17
            "00Q0000000000000001", // 19
            "00Q-00000000001AA",
            "00Q 000000000001",
            "00Q00000000000ü",
        ] {
            assert!(!ids.matches(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_lead_id_pattern_is_one_class_and_a_length() {
        let p = LeadIdPattern::parse("[A-Za-z0-9_-]{1,40}").expect("valid");
        for good in ["ext-42", "A_b-9", "x"] {
            assert!(p.matches(good), "{good}");
        }
        for bad in ["", "a/b", "a b", "a.b", "é", &"x".repeat(41)] {
            assert!(!p.matches(bad), "{bad:?}");
        }
        let dots = LeadIdPattern::parse("[a-z.]{1,10}").expect("valid");
        assert!(dots.matches("a.b"));
        assert!(!dots.matches(".") && !dots.matches(".."), "never only dots");
        let exact = LeadIdPattern::parse("[0-9]{6}").expect("valid");
        assert!(exact.matches("123456") && !exact.matches("12345"));
        for (bad, why) in [
            ("a-z{1,2}", "expected [CLASS]"),
            ("[a-z]", "expected [CLASS]"),
            ("[a-z]{1,2", "expected [CLASS]"),
            ("[a-z]{x}", "is not a length"),
            ("[a-z]{0,5}", "the length must be 1 to 255"),
            ("[a-z]{5,2}", "the length must be 1 to 255"),
            ("[a-z]{1,1000}", "the length must be 1 to 255"),
            ("[]{1,2}", "the character class is empty"),
            ("[z-a]{1,2}", "not an ASCII range"),
            ("[a-zé]{1,2}", "not an ASCII range"),
            ("[a-z/]{1,2}", "cannot be in a lead id"),
            ("[%]{1,2}", "cannot be in a lead id"),
            ("[ -~]{1,2}", "cannot be in a lead id"),
        ] {
            let e = LeadIdPattern::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rules_are_required_only_when_asked_for() {
        let s = load("", &[]).expect("loads without rules");
        let e = s.scorer.rules_path().expect_err("no rules").to_string();
        assert!(e.starts_with("scorer.rules is not set"), "{e}");
        assert_eq!(
            s.scorer.transactional_id_for("host1"),
            "leadscore-scorer-host1"
        );
    }

    #[test]
    fn a_misspelt_kafka_credential_is_never_printed() {
        let s = load(
            "",
            &[
                ("LEADSCORE__KAFKA__SASL_PASWORD", "typo-hunter2"),
                (
                    "LEADSCORE__KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET",
                    "oauth-hunter2",
                ),
            ],
        )
        .expect("loads: librdkafka judges the properties");
        let shown = format!("{s:?} {s:#?}");
        for secret in ["typo-hunter2", "oauth-hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("sasl.pasword"), "{shown}");
        assert!(shown.contains("localhost:9092"), "{shown}");
    }

    #[test]
    fn secret_is_never_printed() {
        let s = load(
            "[kafka]\nsasl_password = \"kafka-hunter2\"\n",
            &[
                ("LEADSCORE_SALESFORCE_CLIENT_SECRET", "sf-hunter2"),
                ("LEADSCORE__KAFKA__SSL_KEY_PASSWORD", "key-hunter2"),
            ],
        )
        .expect("loads");
        assert_eq!(s.kafka.get("sasl.password"), Some("kafka-hunter2"));
        let shown = format!("{s:?} {s:#?}");
        for secret in ["kafka-hunter2", "sf-hunter2", "key-hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "hunter2");
        let e = load_err(
            "",
            &[("LEADSCORE__SALESFORCE__CLIENT_SECRET", "env-hunter2")],
        );
        assert!(!e.contains("env-hunter2"), "{e}");
    }

    #[test]
    fn secret_comes_from_env_or_file() {
        let settings = SalesforceSettings {
            client_secret_env: "TEST_SECRET".to_string(),
            ..SalesforceSettings::default()
        };
        let secret = settings
            .client_secret_with(|name| (name == "TEST_SECRET").then(|| "from-env".to_string()))
            .expect("env secret");
        assert_eq!(secret.expose(), "from-env");

        let e = settings
            .client_secret_with(|_| Some(String::new()))
            .expect_err("empty and no file")
            .to_string();
        assert!(e.contains("TEST_SECRET"), "{e}");
        assert!(e.contains("salesforce.client_secret_file"), "{e}");

        let path = std::env::temp_dir().join(format!(
            "leadscore-config-test-secret-{}",
            std::process::id()
        ));
        std::fs::write(&path, "from-file\n").expect("write secret file");
        let with_file = SalesforceSettings {
            client_secret_file: Some(path.clone()),
            ..settings.clone()
        };
        let from_file = with_file.client_secret_with(|_| None);
        let from_env = with_file.client_secret_with(|_| Some("from-env".to_string()));
        let _ = std::fs::remove_file(&path);
        assert_eq!(from_file.expect("file secret").expose(), "from-file");
        assert_eq!(from_env.expect("env first").expose(), "from-env");

        let e = with_file
            .client_secret_with(|_| None)
            .expect_err("file gone")
            .to_string();
        assert!(e.starts_with("Salesforce client secret file"), "{e}");
    }

    #[test]
    fn a_secret_file_is_read_only_up_to_its_cap() {
        let zero = SalesforceSettings {
            client_secret_env: "TEST_SECRET".to_string(),
            client_secret_file: Some(PathBuf::from("/dev/zero")),
            ..SalesforceSettings::default()
        };
        let e = zero
            .client_secret_with(|_| None)
            .expect_err("/dev/zero is not a secret")
            .to_string();
        assert_eq!(
            e,
            "Salesforce client secret file /dev/zero: larger than 65536 bytes, so not a secret; \
             check salesforce.client_secret_file"
        );
        let path = std::env::temp_dir().join(format!(
            "leadscore-config-test-secret-cap-{}",
            std::process::id()
        ));
        let at_cap = "s".repeat(MAX_SECRET_FILE_BYTES as usize);
        std::fs::write(&path, &at_cap).expect("write secret file");
        let file = SalesforceSettings {
            client_secret_file: Some(path.clone()),
            ..zero.clone()
        };
        let read = file.client_secret_with(|_| None);
        let _ = std::fs::remove_file(&path);
        assert_eq!(read.expect("at the cap").expose(), at_cap);
    }

    #[test]
    fn rejects_client_secret_in_file() {
        let e = load_err("[salesforce]\nclient_secret = \"hunter2\"\n", &[]);
        assert_eq!(
            e,
            "config test.toml: salesforce.client_secret: the client secret is read from the \
             environment or a file; see salesforce.client_secret_env / client_secret_file"
        );
        let e = load_err("", &[("LEADSCORE__SALESFORCE__CLIENT_SECRET", "hunter2")]);
        assert!(
            e.contains("environment variable LEADSCORE__SALESFORCE__CLIENT_SECRET"),
            "{e}"
        );
    }

    #[test]
    fn example_config_loads() {
        let s = Settings::load_from(Some(("leadscore.example.toml", EXAMPLE)), env(&[]))
            .expect("example loads");
        assert_eq!(
            s.scorer.rules,
            Some(PathBuf::from("examples/rules/seed-canvas.toml"))
        );
        assert_eq!(s.kafka.get("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(s.handoff.backoff_max, Duration::from_secs(30));
        let mut expected = Settings::default();
        expected.scorer.rules = Some(PathBuf::from("examples/rules/seed-canvas.toml"));
        assert_eq!(s, expected, "the example shows the defaults");
    }

    #[test]
    fn example_config_documents_every_key() {
        let sections = field_names::<Settings>();
        let keys = [
            ("topics", field_names::<Topics>()),
            ("scorer", field_names::<ScorerSettings>()),
            ("handoff", field_names::<HandoffSettings>()),
            ("salesforce", field_names::<SalesforceSettings>()),
            ("admin", field_names::<AdminSettings>()),
            ("log", field_names::<LogSettings>()),
        ];
        for section in sections {
            assert!(EXAMPLE.contains(&format!("[{section}]")), "[{section}]");
        }
        for (section, fields) in keys {
            for field in fields {
                let var = format!("LEADSCORE__{section}__{field}").to_uppercase();
                assert!(EXAMPLE.contains(&var), "{var} not in the example");
            }
        }
    }
}
