//! `[scorer]`: `leadscore score`.

use super::*;

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

/// What the scorer does with an input event whose `type` it does not know (SPEC 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownTypes {
    /// Skip it and count it (`leadscore_events_skipped_total{reason="unknown_type"}`); its
    /// time counts in the partition clock like any event's. Producers can then start sending a
    /// new type before the scorer knows it, without flooding the dead-letter topic.
    #[default]
    Skip,
    /// Dead-letter it (reason `unknown_type`), like other bad input; it moves no clock.
    DeadLetter,
}

impl UnknownTypes {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownTypes::Skip => "skip",
            UnknownTypes::DeadLetter => "dead_letter",
        }
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
    /// An event whose `time` is further than this ahead of the wall clock its record was
    /// written at (the record timestamp, `scorer::written_at`) is dead-lettered
    /// (`invalid_value`) and never moves a partition clock: one mis-dated record (a year typed
    /// as 2099) would otherwise decay every lead of its partition and be checkpointed.
    #[serde(deserialize_with = "deserialize_duration")]
    pub max_future_skew: Duration,
    /// How many recent score changes each user keeps, so a lookup can say why a lead has its
    /// score (`GET /v1/leads/{user_id}`); 0 keeps none. Each costs about 25 bytes of state.
    pub explain_depth: usize,
    /// An event of a type this version does not know: `skip` (default) or `dead_letter`.
    pub unknown_types: UnknownTypes,
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
            max_future_skew: Duration::from_millis(crate::simulate::DEFAULT_MAX_FUTURE_SKEW as u64),
            explain_depth: crate::history::DEFAULT_DEPTH,
            unknown_types: UnknownTypes::Skip,
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
