//! The handoff service (`leadscore handoff`, SPEC section 6): reads the score changes, picks the
//! leads that cross the threshold and are not already MQL, and updates their Lead records in
//! Salesforce, batched, retried, never lost.
//!
//! Per-user handoff state ([`LeadState`]) lives in the same changelog-backed store as the
//! scorer's ([`crate::changelog`]). One thread polls the consumer; leads to hand off collect in
//! a batch (up to `handoff.max_batch`, or `handoff.linger`), the batch is resolved against
//! Salesforce (retries and limit pauses included) until every lead has an outcome, the outcomes
//! go to `lead-handoffs` (and permanent failures to `lead-handoffs-dlq`), and only then is the
//! input position checkpointed: an offset is never committed before every lead before it has an
//! outcome recorded.

use crate::admin::Health;
use crate::change::ScoreChange;
use crate::changelog::{Changelog, ChangelogError, PartitionCheckpoint};
use crate::codec::{self, Format};
use crate::config::{HandoffSettings, Settings};
use crate::event::Scalar;
use crate::kafka::{self, ProduceError, Record, ServiceConsumer, ServiceProducer, TopicSpec};
use crate::keyed_state::KeyedState;
use crate::salesforce::{self, Backoff, LeadUpdate, RetryHint, SalesforceClient, SfError};
use crate::service::{self, Faults, Service};
use crate::shutdown::Shutdown;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;

pub const HANDOFFS: &str = "leadscore_handoffs_total";
pub const HANDOFF_CHANGES: &str = "leadscore_handoff_changes_consumed_total";
pub const HANDOFF_RETRIES: &str = "leadscore_handoff_retries_total";
pub const HANDOFF_DEAD_LETTERED: &str = "leadscore_handoff_dead_lettered_total";
pub const HANDOFF_LIMIT_PAUSES: &str = "leadscore_handoff_limit_pauses_total";
pub const HANDOFF_BATCH_SECONDS: &str = "leadscore_handoff_batch_duration_seconds";

fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        HANDOFFS,
        Unit::Count,
        "Leads with a handoff outcome, by outcome (handed_off, failed)."
    );
    describe_counter!(
        HANDOFF_CHANGES,
        Unit::Count,
        "Score change records read by the handoff."
    );
    describe_counter!(
        HANDOFF_RETRIES,
        Unit::Count,
        "Lead updates retried after a transient Salesforce failure."
    );
    describe_counter!(
        HANDOFF_DEAD_LETTERED,
        Unit::Count,
        "Records sent to the handoff dead-letter topic, by reason."
    );
    describe_counter!(
        HANDOFF_LIMIT_PAUSES,
        Unit::Count,
        "Pauses after Salesforce's REQUEST_LIMIT_EXCEEDED."
    );
    describe_histogram!(
        HANDOFF_BATCH_SECONDS,
        Unit::Seconds,
        "How long resolving one batch of leads took, retries included."
    );
    salesforce::describe();
}

#[derive(Debug, Error)]
pub enum HandoffError {
    #[error(transparent)]
    Setup(#[from] kafka::KafkaSetupError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Changelog(#[from] ChangelogError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("salesforce: {0}")]
    Salesforce(#[from] salesforce::SalesforceError),
    #[error("handoff.patch_body must be a JSON object")]
    PatchBody,
    #[error("{0}")]
    Fatal(String),
}

/// What the handoff remembers about a user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeadState {
    /// Handed off (or given up on) since it last became eligible.
    pub handed_off: bool,
    /// The last `lead_status` seen, to notice a change.
    pub status: Option<String>,
}

const LEAD_STATE_VERSION: u8 = 1;

impl LeadState {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![LEAD_STATE_VERSION, self.handed_off as u8];
        if let Some(s) = &self.status {
            v.extend_from_slice(s.as_bytes());
        }
        v
    }

    pub fn decode(bytes: &[u8]) -> Option<LeadState> {
        match bytes {
            [LEAD_STATE_VERSION, flag @ (0 | 1)] => Some(LeadState {
                handed_off: *flag == 1,
                status: None,
            }),
            [LEAD_STATE_VERSION, flag @ (0 | 1), rest @ ..] => Some(LeadState {
                handed_off: *flag == 1,
                status: Some(std::str::from_utf8(rest).ok()?.to_string()),
            }),
            _ => None,
        }
    }
}

/// Why a score change hands nothing off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    AtOrBelowThreshold,
    SkipStatus,
    AlreadyHandedOff,
    NoLeadId,
}

/// SPEC 6 "Who", as a pure function: updates the user's handoff state for one score change and
/// says whether to hand the lead off now (and under which lead id).
pub fn decide(
    st: &mut LeadState,
    change: &ScoreChange,
    s: &HandoffSettings,
) -> Result<String, Skip> {
    let status = match change.attribute(&s.status_attribute) {
        Some(Scalar::Str(v)) => Some(v.clone()),
        Some(other) => Some(other.to_string()),
        None => None,
    };
    let skipped = |st: &Option<String>| {
        st.as_ref()
            .is_some_and(|v| s.skip_statuses.iter().any(|k| k == v))
    };
    if status != st.status {
        // A status change to a value outside the skip list makes the lead eligible again.
        if !skipped(&status) {
            st.handed_off = false;
        }
        st.status = status.clone();
    }
    if change.score <= s.threshold {
        return Err(Skip::AtOrBelowThreshold);
    }
    if skipped(&status) {
        return Err(Skip::SkipStatus);
    }
    if st.handed_off {
        return Err(Skip::AlreadyHandedOff);
    }
    let lead_id = match &s.lead_id_attribute {
        None => change.user_id.clone(),
        Some(attr) => match change.attribute(attr) {
            Some(Scalar::Str(id)) if !id.is_empty() => id.clone(),
            // Not known yet: a later change that carries it hands the lead off.
            _ => return Err(Skip::NoLeadId),
        },
    };
    st.handed_off = true;
    Ok(lead_id)
}

/// A lead waiting for its Salesforce outcome.
struct Pending {
    user_id: String,
    lead_id: String,
    score: i64,
    change_id: String,
    attempts: u32,
}

type Owned = KeyedState<LeadState>;

#[derive(Default)]
struct CoreState {
    owned: HashMap<i32, Owned>,
    pending: Vec<Pending>,
    /// Records processed since the last checkpoint.
    processed: usize,
    batch_started: Option<Instant>,
    /// When a token was last asked for while idle without one.
    token_asked: Option<Instant>,
}

pub struct Core {
    settings: Settings,
    format: Format,
    producer: ServiceProducer,
    changelog: Changelog,
    client: SalesforceClient,
    body: serde_json::Map<String, serde_json::Value>,
    backoff: Backoff,
    health: Arc<Health>,
    faults: Faults,
    runtime: tokio::runtime::Handle,
    shutdown: Shutdown,
    state: Mutex<CoreState>,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, CoreState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn dead_letter(
        &self,
        key: &[u8],
        payload: Option<&[u8]>,
        reason: &str,
        message: &str,
        source: Option<kafka::Source<'_>>,
    ) -> Result<(), HandoffError> {
        metrics::counter!(HANDOFF_DEAD_LETTERED, "reason" => dead_letter_label(reason))
            .increment(1);
        let headers = kafka::dead_letter_headers(reason, message, source);
        self.producer.send(
            Record {
                topic: &self.settings.topics.handoffs_dlq,
                partition: None,
                key,
                payload,
                headers: Some(headers),
            },
            false,
        )?;
        Ok(())
    }

    /// Publishes one lead's outcome (and, for a failure, its dead letter).
    fn record_outcome(
        &self,
        p: &Pending,
        http_status: Option<u16>,
        error: Option<&SfError>,
    ) -> Result<(), HandoffError> {
        let status = if error.is_none() {
            "handed_off"
        } else {
            "failed"
        };
        metrics::counter!(HANDOFFS, "outcome" => status).increment(1);
        let outcome = json!({
            "user_id": p.user_id,
            "lead_id": p.lead_id,
            "status": status,
            "http_status": http_status,
            "attempts": p.attempts,
            "score": p.score,
            "change_event_id": p.change_id,
            "error": error.map(|e| json!({"errorCode": e.error_code, "message": e.message, "fields": e.fields})),
            "time": crate::timestamp::format_rfc3339(crate::timestamp::wall_clock_millis()),
        });
        let bytes = outcome.to_string().into_bytes();
        self.producer.send(
            Record {
                topic: &self.settings.topics.handoffs,
                partition: None,
                key: p.user_id.as_bytes(),
                payload: Some(&bytes),
                headers: None,
            },
            false,
        )?;
        if let Some(e) = error {
            self.dead_letter(
                p.user_id.as_bytes(),
                Some(&bytes),
                &e.error_code.to_ascii_lowercase(),
                &e.to_string(),
                None,
            )?;
        }
        Ok(())
    }

    /// Resolves every pending lead: Salesforce calls with retries, backoff and limit pauses,
    /// until each has an outcome. Returns false when shutdown interrupted it (nothing of the
    /// unresolved leads may then be checkpointed).
    fn resolve(&self, st: &mut CoreState) -> Result<bool, HandoffError> {
        let started = Instant::now();
        let mut queue: Vec<Pending> = std::mem::take(&mut st.pending);
        let mut round = 0u32;
        while !queue.is_empty() {
            if self.shutdown.is_triggered() && round > 0 {
                st.pending = queue;
                return Ok(false);
            }
            round += 1;
            let mut retry = Vec::new();
            let mut pause = false;
            for chunk in queue.chunks(self.settings.handoff.max_batch.clamp(1, 200)) {
                let updates: Vec<LeadUpdate> = chunk
                    .iter()
                    .map(|p| LeadUpdate {
                        lead_id: p.lead_id.clone(),
                        body: self.body.clone(),
                    })
                    .collect();
                let report = self.runtime.block_on(self.client.update_leads(&updates));
                self.health
                    .set_condition("salesforce_token", self.client.has_token());
                for (p, o) in chunk.iter().zip(report.outcomes) {
                    let mut p = Pending {
                        user_id: p.user_id.clone(),
                        lead_id: p.lead_id.clone(),
                        score: p.score,
                        change_id: p.change_id.clone(),
                        attempts: p.attempts + 1,
                    };
                    match o.result {
                        Ok(()) => self.record_outcome(&p, o.http_status, None)?,
                        Err(e) => match e.hint {
                            RetryHint::Permanent => {
                                self.record_outcome(&p, o.http_status, Some(&e))?
                            }
                            RetryHint::PauseForLimit => {
                                pause = true;
                                p.attempts -= 1; // a paused call is not a failed attempt
                                retry.push(p);
                            }
                            RetryHint::Retry
                                if p.attempts >= self.settings.handoff.max_attempts =>
                            {
                                self.record_outcome(&p, o.http_status, Some(&e))?
                            }
                            RetryHint::Retry => {
                                metrics::counter!(HANDOFF_RETRIES).increment(1);
                                retry.push(p);
                            }
                        },
                    }
                }
            }
            queue = retry;
            if queue.is_empty() {
                break;
            }
            let wait = if pause {
                metrics::counter!(HANDOFF_LIMIT_PAUSES).increment(1);
                tracing::warn!(
                    leads = queue.len(),
                    pause_s = self.settings.handoff.limit_pause.as_secs(),
                    "Salesforce API limit reached: pausing calls, keeping the leads"
                );
                self.settings.handoff.limit_pause
            } else {
                self.backoff.delay(round, salesforce::jitter())
            };
            self.sleep(wait);
        }
        metrics::histogram!(HANDOFF_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(true)
    }

    /// Sleeps, waking early on shutdown.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.shutdown.is_triggered() {
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
    }

    fn update_gauges(&self, st: &CoreState) {
        let leads: usize = st.owned.values().map(KeyedState::len).sum();
        self.changelog.update_store_gauges(leads);
    }

    fn fail(&self, msg: String) {
        self.faults.fail(<Core as Service>::NAME, msg);
    }
}

impl kafka::PartitionOwner for Core {
    fn assigned(&self, _c: &ServiceConsumer<Self>, partitions: &[i32]) -> Vec<(i32, Offset)> {
        self.health.joined();
        let mut out = Vec::new();
        for &p in partitions {
            self.health.restoring(p);
            match self.changelog.restore(p) {
                Ok(r) => {
                    let (records_read, warm, duration) = (r.records_read, r.warm, r.duration);
                    let decode = |b: &[u8]| LeadState::decode(b).ok_or(());
                    let owned = match KeyedState::restore(r, decode) {
                        Ok(owned) => owned,
                        Err(bad) => {
                            self.fail(format!(
                                "partition {p}: the stored handoff state of user {:?} cannot be read",
                                bad.key
                            ));
                            out.push((p, Offset::Stored));
                            continue;
                        }
                    };
                    let next = owned.next_offset();
                    tracing::info!(
                        partition = p,
                        leads = owned.len(),
                        changelog_records = records_read,
                        warm,
                        resume_offset = next,
                        duration_ms = duration.as_millis() as u64,
                        "partition restored"
                    );
                    self.lock().owned.insert(p, owned);
                    self.health.restored(p);
                    out.push((
                        p,
                        next.map_or(Offset::Stored, |n| Offset::Offset(kafka::rewound(n, 0))),
                    ));
                }
                Err(e) => {
                    self.fail(format!("restoring partition {p}: {e}"));
                    out.push((p, Offset::Stored));
                }
            }
        }
        tracing::info!(?partitions, "partitions assigned");
        self.update_gauges(&self.lock());
        out
    }

    fn revoked(&self, consumer: &ServiceConsumer<Self>, partitions: &[i32]) {
        if !self.faults.failed() {
            if let Err(e) = self.checkpoint(consumer) {
                self.fail(format!("checkpoint on revoke: {e}"));
            }
        }
        let mut st = self.lock();
        for p in partitions {
            st.owned.remove(p);
            self.health.released(*p);
        }
        tracing::info!(?partitions, "partitions revoked");
        self.update_gauges(&st);
    }
}

/// The Salesforce error codes (lower case) a lead can end on, which are metric label values as
/// they are, like the input's decode errors ([`codec::DecodeError::REASONS`]). Any other code a
/// server sends counts as `other` on the metric (labels come from bounded sets); the dead
/// letter's header keeps the code itself.
pub(crate) const SALESFORCE_DEAD_LETTER_LABELS: &[&str] = &[
    "not_found",
    "malformed_id",
    "entity_is_deleted",
    "invalid_field",
    "invalid_cross_reference_key",
    "field_custom_validation_exception",
    "required_field_missing",
    "string_too_long",
    "invalid_or_null_for_restricted_picklist",
    "json_parser_error",
    "insufficient_access_or_readonly",
    "insufficient_access_on_cross_reference_entity",
    "method_not_allowed",
    "server_unavailable",
    "unable_to_lock_row",
    "request_timeout",
    "too_many_requests",
    "unknown_exception",
    "timeout",
    "connection_error",
    "unexpected_response",
];

fn dead_letter_label(reason: &str) -> &'static str {
    codec::DecodeError::REASONS
        .iter()
        .chain(SALESFORCE_DEAD_LETTER_LABELS)
        .find(|l| **l == reason)
        .copied()
        .unwrap_or("other")
}

/// The topics the handoff needs, created when missing.
pub fn topic_specs(settings: &Settings) -> Vec<TopicSpec> {
    let t = &settings.topics;
    vec![
        TopicSpec::new(&t.output, t.partitions, t.replication_factor),
        TopicSpec::compacted(&t.handoff_changelog, t.partitions, t.replication_factor),
        TopicSpec::new(&t.handoffs, t.partitions, t.replication_factor),
        TopicSpec::dead_letter(&t.handoffs_dlq, t.partitions, t.replication_factor),
    ]
}

pub struct Handoff {
    core: Arc<Core>,
    consumer: ServiceConsumer<Core>,
}

impl Handoff {
    /// Reads the secret, sets up topics and clients, and asks Salesforce for a token.
    pub async fn start(
        settings: Settings,
        health: Arc<Health>,
        shutdown: Shutdown,
    ) -> Result<Handoff, HandoffError> {
        describe();
        crate::telemetry::register_handoff_counters();
        let secret = settings.salesforce.client_secret()?;
        let client = SalesforceClient::new(&settings.salesforce, secret)?;
        let body = settings
            .handoff
            .patch_body
            .as_object()
            .cloned()
            .ok_or(HandoffError::PatchBody)?;
        let props = settings.kafka.properties.clone();
        let counts = kafka::ensure_topics(&props, &topic_specs(&settings)).await?;
        kafka::check_copartitioned(
            &counts,
            &settings.topics.output,
            &settings.topics.handoff_changelog,
        )?;
        let producer = ServiceProducer::new(&props, None)?;
        let changelog = Changelog::open(
            &settings.handoff.state_dir,
            &settings.topics.handoff_changelog,
            &props,
        )?;
        health.set_condition("salesforce_token", false);
        match client.ensure_token().await {
            Ok(()) => health.set_condition("salesforce_token", true),
            Err(e) => tracing::warn!(error = %e, "no Salesforce token yet; calls will retry"),
        }
        let core = Arc::new(Core {
            format: settings.scorer.output_format,
            backoff: Backoff::from_settings(&settings.handoff),
            producer,
            changelog,
            client,
            body,
            health,
            faults: Faults::default(),
            runtime: tokio::runtime::Handle::current(),
            shutdown,
            state: Mutex::new(CoreState::default()),
            settings,
        });
        let consumer = kafka::group_consumer(
            &props,
            &core.settings.handoff.group_id,
            &core.settings.topics.output,
            core.clone(),
            true,
        )?;
        Ok(Handoff { core, consumer })
    }

    /// Consumes until shutdown; blocking, run it on its own thread.
    pub fn run(self) -> Result<(), HandoffError> {
        service::run(&*self.core, &self.consumer, &self.core.shutdown)
    }
}

impl Service for Core {
    type Error = HandoffError;
    const NAME: &'static str = "handoff";

    fn health(&self) -> &Health {
        &self.health
    }

    fn faults(&self) -> &Faults {
        &self.faults
    }

    fn handle(&self, msg: &BorrowedMessage<'_>) -> Result<(), HandoffError> {
        let mut st = self.lock();
        let st = &mut *st;
        let p = msg.partition();
        let offset = msg.offset();
        let Some(owned) = st.owned.get_mut(&p) else {
            return Ok(());
        };
        if owned.is_processed(offset) {
            return Ok(());
        }
        metrics::counter!(HANDOFF_CHANGES).increment(1);
        owned.processing(offset);
        st.processed += 1;
        if st.batch_started.is_none() {
            st.batch_started = Some(Instant::now());
        }
        let change = match codec::decode_change(self.format, msg.payload().unwrap_or_default()) {
            Ok(c) => c,
            Err(e) => {
                self.dead_letter(
                    msg.key().unwrap_or_default(),
                    msg.payload(),
                    e.reason(),
                    &e.to_string(),
                    Some((msg.topic(), p, offset)),
                )?;
                return Ok(());
            }
        };
        let Some(owned) = st.owned.get_mut(&p) else {
            return Ok(());
        };
        let decision = owned.update_if_changed(&change.user_id, |lead| {
            decide(lead, &change, &self.settings.handoff)
        });
        if let Ok(lead_id) = decision {
            st.pending.push(Pending {
                user_id: change.user_id.clone(),
                lead_id,
                score: change.score,
                change_id: change.event_id.clone(),
                attempts: 0,
            });
        }
        Ok(())
    }

    /// Without a token the handoff is not ready. While idle, ask again every `backoff_max`: a
    /// pod that started while Salesforce was unreachable must become ready without waiting for
    /// a lead to hand off.
    fn on_idle(&self) -> Result<(), HandoffError> {
        if self.client.has_token() {
            return Ok(());
        }
        {
            let mut st = self.lock();
            let every = self.settings.handoff.backoff_max;
            if st.token_asked.is_some_and(|t| t.elapsed() < every) {
                return Ok(());
            }
            st.token_asked = Some(Instant::now());
        }
        match self.runtime.block_on(self.client.ensure_token()) {
            Ok(()) => {
                tracing::info!("Salesforce token obtained");
                self.health.set_condition("salesforce_token", true);
            }
            Err(e) => tracing::warn!(error = %e, "still no Salesforce token; asking again"),
        }
        Ok(())
    }

    fn checkpoint_due(&self, idle: bool) -> bool {
        let h = &self.settings.handoff;
        let st = self.lock();
        let waited = st.batch_started.is_some_and(|b| b.elapsed() >= h.linger);
        st.pending.len() >= h.max_batch || (st.processed > 0 && (idle || waited))
    }

    /// Resolves the pending leads, then checkpoints every partition.
    fn checkpoint(&self, consumer: &ServiceConsumer<Core>) -> Result<(), HandoffError> {
        let mut st = self.lock();
        let st = &mut *st;
        if !st.pending.is_empty() && !self.resolve(st)? {
            return Ok(()); // interrupted: replay will redo it
        }
        let parts: Vec<PartitionCheckpoint> = st
            .owned
            .iter_mut()
            .filter_map(|(&p, owned)| owned.checkpoint(p, Vec::new(), LeadState::encode))
            .collect();
        let offsets: Vec<(i32, i64)> = st
            .owned
            .iter()
            .filter_map(|(p, o)| o.next_offset().map(|n| (*p, n)))
            .collect();
        self.changelog.commit(
            &self.producer,
            consumer,
            &self.settings.topics.output,
            &parts,
            &offsets,
        )?;
        st.processed = 0;
        st.batch_started = None;
        self.update_gauges(st);
        Ok(())
    }

    fn fatal(message: String) -> HandoffError {
        HandoffError::Fatal(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Reason, ReasonKind};

    #[test]
    fn dead_letter_labels_are_a_bounded_set() {
        assert_eq!(dead_letter_label("entity_is_deleted"), "entity_is_deleted");
        assert_eq!(dead_letter_label("malformed"), "malformed");
        assert_eq!(dead_letter_label("some_code_a_server_made_up"), "other");
        assert_eq!(dead_letter_label(""), "other");
        for code in [
            salesforce::TIMEOUT,
            salesforce::CONNECTION_ERROR,
            salesforce::UNEXPECTED_RESPONSE,
        ] {
            assert_ne!(
                dead_letter_label(&code.to_ascii_lowercase()),
                "other",
                "{code}"
            );
        }
    }

    fn settings() -> HandoffSettings {
        Settings::default().handoff
    }

    fn change(user: &str, score: i64, status: Option<&str>) -> ScoreChange {
        ScoreChange {
            event_id: format!("c-{score}"),
            user_id: user.into(),
            time: 0,
            previous_score: 0,
            score,
            delta: score,
            reason: Reason {
                kind: ReasonKind::Rule,
                group: None,
                source_event_id: None,
            },
            attributes: status
                .map(|s| vec![("lead_status".to_string(), Scalar::Str(s.into()))])
                .unwrap_or_default(),
        }
    }

    #[test]
    fn hands_off_once_when_the_score_passes_the_threshold() {
        let s = settings();
        let mut st = LeadState::default();
        assert_eq!(
            decide(&mut st, &change("u", 100, None), &s),
            Err(Skip::AtOrBelowThreshold)
        );
        assert_eq!(
            decide(&mut st, &change("u", 101, None), &s),
            Ok("u".to_string())
        );
        assert_eq!(
            decide(&mut st, &change("u", 105, None), &s),
            Err(Skip::AlreadyHandedOff)
        );
    }

    #[test]
    fn leads_in_a_skip_status_are_not_handed_off() {
        let s = settings();
        let mut st = LeadState::default();
        assert_eq!(
            decide(&mut st, &change("u", 150, Some("MQL")), &s),
            Err(Skip::SkipStatus)
        );
    }

    #[test]
    fn a_status_change_outside_the_skip_list_makes_the_lead_eligible_again() {
        let s = settings();
        let mut st = LeadState::default();
        assert!(decide(&mut st, &change("u", 120, Some("Open")), &s).is_ok());
        assert_eq!(
            decide(&mut st, &change("u", 121, Some("MQL")), &s),
            Err(Skip::SkipStatus)
        );
        // Back to a status outside the list: eligible again.
        assert!(decide(&mut st, &change("u", 122, Some("Nurture")), &s).is_ok());
        // The same status again is no change.
        assert_eq!(
            decide(&mut st, &change("u", 123, Some("Nurture")), &s),
            Err(Skip::AlreadyHandedOff)
        );
    }

    #[test]
    fn the_lead_id_can_come_from_an_attribute() {
        let mut s = settings();
        s.lead_id_attribute = Some("salesforce_lead_id".into());
        let mut st = LeadState::default();
        assert_eq!(
            decide(&mut st, &change("u", 120, None), &s),
            Err(Skip::NoLeadId)
        );
        assert!(!st.handed_off, "waits for a change carrying the id");
        let mut c = change("u", 121, None);
        c.attributes.push((
            "salesforce_lead_id".into(),
            Scalar::Str("00Q5g000004nuOjEAI".into()),
        ));
        assert_eq!(
            decide(&mut st, &c, &s),
            Ok("00Q5g000004nuOjEAI".to_string())
        );
    }

    #[test]
    fn lead_state_round_trips() {
        for st in [
            LeadState::default(),
            LeadState {
                handed_off: true,
                status: Some("Open".into()),
            },
            LeadState {
                handed_off: false,
                status: Some(String::new()),
            },
        ] {
            let back = LeadState::decode(&st.encode());
            // An empty status reads back as none: both mean "no status".
            let want = LeadState {
                status: st.status.clone().filter(|s| !s.is_empty()),
                ..st.clone()
            };
            assert_eq!(back, Some(want));
        }
        assert_eq!(LeadState::decode(&[9, 0]), None);
    }
}
