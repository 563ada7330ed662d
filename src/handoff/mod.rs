//! The handoff service (`leadscore handoff`, SPEC section 6): reads the score changes, picks the
//! leads that cross the threshold and are not already at MQL or beyond (the funnel of
//! `handoff.status_order`, [`Funnel`]), and updates their Lead records in Salesforce, batched,
//! retried, never lost, and only on what Salesforce answered.
//!
//! Per-user handoff state ([`LeadState`]) lives in the same changelog-backed store as the
//! scorer's ([`crate::runtime::changelog`]). One thread polls the consumer; leads to hand off collect in
//! a batch (up to `handoff.max_batch`, or `handoff.linger`), the batch is resolved against
//! Salesforce (retries and limit pauses included) until every lead has an outcome, the outcomes
//! go to `lead-handoffs` (and permanent failures to `lead-handoffs-dlq`), and only then is the
//! input position checkpointed: an offset is never committed before every lead before it has an
//! outcome recorded.

mod lead;
pub mod salesforce;
#[cfg(test)]
mod tests;

pub use lead::{decide, unlisted_status, Funnel, LeadState, Newest, Skip, RECENT_CHANGES};

use crate::codec::{self, Format};
use crate::config::{LeadIdPattern, Settings};
use crate::handoff::salesforce::{Backoff, LeadUpdate, RetryHint, SalesforceClient, SfError};
use crate::ops::admin::Health;
use crate::ops::telemetry::{
    HANDOFFS, HANDOFF_BATCH_SECONDS, HANDOFF_CHANGES, HANDOFF_CHANGES_REREAD,
    HANDOFF_DEAD_LETTERED, HANDOFF_LIMIT_PAUSES, HANDOFF_RETRIES, HANDOFF_WITHOUT_LEAD_ID,
};
use crate::runtime::blocking::blocking;
use crate::runtime::changelog::{Changelog, PartitionCheckpoint};
use crate::runtime::kafka::{self, Record, ServiceConsumer, ServiceProducer, TopicSpec};
use crate::runtime::keyed_state::KeyedState;
use crate::runtime::owned::{self, OwnsPartitions};
use crate::runtime::service::{self, Faults, Service};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::sync::lock_unpoisoned;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HandoffError {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::error::RuntimeError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("salesforce: {0}")]
    Salesforce(#[from] salesforce::SalesforceError),
    #[error("handoff.patch_body must be a JSON object")]
    PatchBody,
}

crate::runtime::error::from_runtime_errors!(HandoffError);

/// One lead's outcome as published on `topics.handoffs` (SPEC 6, "Results"), and as the value of
/// a failed lead's dead letter: always JSON, whatever the score changes' format. The contract
/// is docs/formats.md and schemas/handoff-outcome.schema.json.
pub struct HandoffOutcome<'a> {
    pub user_id: &'a str,
    /// The id the PATCH named (the user id, or `handoff.lead_id_attribute`).
    pub lead_id: &'a str,
    /// The score of the change that made the lead eligible.
    pub score: i64,
    /// That change's `event_id`, to join the outcome with it.
    pub change_event_id: &'a str,
    /// Calls made for this lead (a paused call is not one).
    pub attempts: u32,
    /// The answer's status for this lead; `None` when there was no answer.
    pub http_status: Option<u16>,
    pub resolution: Resolution<'a>,
    /// When the outcome was decided (epoch milliseconds).
    pub time: crate::timestamp::Millis,
}

/// How a lead's handoff ended.
#[derive(Debug, Clone, Copy)]
pub enum Resolution<'a> {
    /// Salesforce accepted the update.
    HandedOff,
    /// A permanent error, retries used up, or an invalid lead id: the lead is dead-lettered.
    Failed(&'a SfError),
    /// A later change showed the lead at MQL or beyond before its update was accepted, so the
    /// update was withdrawn (a PATCH then would move the lead back, SPEC 6). SPEC 6 asks for
    /// every outcome on `lead-handoffs`: this one says no further call is made. An attempt
    /// made before (a timeout, a retryable answer) may still have reached Salesforce.
    Superseded,
}

/// An outcome's `status` on `lead-handoffs` when the lead was handed off.
pub const HANDED_OFF: &str = "handed_off";
/// An outcome's `status` on `lead-handoffs` when the lead failed for good.
pub const FAILED: &str = "failed";
/// An outcome's `status` on `lead-handoffs` when its update was withdrawn
/// ([`Resolution::Superseded`]).
pub const SUPERSEDED: &str = "superseded";
/// Every `status` an outcome can have: the label values of `leadscore_handoffs_total`.
pub const OUTCOME_STATUSES: &[&str] = &[HANDED_OFF, FAILED, SUPERSEDED];

impl HandoffOutcome<'_> {
    /// [`HANDED_OFF`], [`FAILED`] or [`SUPERSEDED`].
    pub fn status(&self) -> &'static str {
        match self.resolution {
            Resolution::HandedOff => HANDED_OFF,
            Resolution::Failed(_) => FAILED,
            Resolution::Superseded => SUPERSEDED,
        }
    }

    /// The JSON value, keys sorted.
    pub fn encode(&self) -> Vec<u8> {
        let error = match self.resolution {
            Resolution::Failed(e) => {
                Some(json!({"errorCode": e.error_code, "message": e.message, "fields": e.fields}))
            }
            Resolution::HandedOff | Resolution::Superseded => None,
        };
        json!({
            "user_id": self.user_id,
            "lead_id": self.lead_id,
            "status": self.status(),
            "http_status": self.http_status,
            "attempts": self.attempts,
            "score": self.score,
            "change_event_id": self.change_event_id,
            "error": error,
            "time": crate::timestamp::format_rfc3339(self.time),
        })
        .to_string()
        .into_bytes()
    }
}

/// Why a round of calls stops all calls for a while.
enum Pause {
    /// `REQUEST_LIMIT_EXCEEDED`: the org's API allowance is spent.
    ApiLimit,
    /// The token request was refused, or a session was refused after a fresh token.
    Auth(String),
    /// No token could be had: the token endpoint failed (not the credentials).
    NoToken(String),
}

/// A lead waiting for its Salesforce outcome.
#[derive(Clone)]
struct Pending {
    /// The input partition its change came from: a revoked partition's leads are dropped
    /// with it (the next owner replays them from the last checkpoint).
    partition: i32,
    user_id: String,
    lead_id: String,
    score: i64,
    change_id: String,
    attempts: u32,
    /// Rounds of calls that left this lead to retry (its backoff grows with them).
    rounds: u32,
    /// When its next call may be made: `None` for a lead not called yet (the next round calls
    /// it), else the end of its backoff or of a pause. A lead waiting holds its partition
    /// (paused, not checkpointed); the other partitions go on.
    not_before: Option<Instant>,
    /// When it first went into a round (for the batch duration histogram).
    since: Option<Instant>,
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
    /// Shutdown interrupted `resolve` in a wait (a backoff or a pause): the checkpoints that
    /// follow on the way out (the final one, the revoke's) call nothing more.
    interrupted: bool,
    /// The partitions this service paused because a lead of theirs waits (a backoff or a
    /// pause) and must resume. Meanwhile the service loop goes on polling, so the consumer
    /// stays in its group however long the wait (`max.poll.interval.ms`), rebalances are
    /// served, and the other partitions are read and handed off as usual.
    paused: BTreeSet<i32>,
    /// Until when every call waits: the org's API limit or a refused credential, which no
    /// lead's own retry can change. Kept across rebalances: leads of a partition given back
    /// wait for the rest of the pause instead of calling into the same limit.
    calls_paused_until: Option<Instant>,
    /// When the lag of the paused partitions was last read from the broker.
    lag_read: Option<Instant>,
    /// Partitions that may hold published records not read yet: from their assignment and
    /// from each record until the consumer reports their end ([`Service::reached_end`]). A
    /// lead read there is not called until then ([`held_for_unread`]): a later record of the
    /// same lead may take it to MQL or beyond, and the call would move it back.
    unread: BTreeSet<i32>,
}

/// The most leads pending at once while they wait for their partitions' ends: past it they
/// are called as they come, in calls of `handoff.max_batch` (a backlog of any length cannot
/// hold them without bound; about 300 bytes each).
const UNREAD_HOLD_MAX: usize = 10_000;

/// Whether `lead` waits for the rest of its partition to be read before it is called: it is
/// new (not waiting out a retry or a pause, which holds its partition anyway), its partition
/// has published records not read yet, and the leads pending are within [`UNREAD_HOLD_MAX`].
///
/// Found by an outside check (2026-12-07): after a restart the handoff replays a partition
/// from its last checkpoint, and a call left as soon as `handoff.max_batch` leads were pending,
/// before the lead's own later change to SQL (already published, further on in the replay)
/// was read: the lead, PATCHed before the restart, was PATCHed back to MQL.
fn held_for_unread(lead: &Pending, unread: &BTreeSet<i32>, pending: usize) -> bool {
    lead.not_before.is_none() && unread.contains(&lead.partition) && pending <= UNREAD_HOLD_MAX
}

/// How often the lag of paused partitions is read from the broker's watermarks.
const PAUSED_LAG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Core {
    settings: Settings,
    format: Format,
    producer: ServiceProducer,
    changelog: Changelog,
    client: SalesforceClient,
    funnel: Funnel,
    lead_ids: LeadIdPattern,
    body: serde_json::Map<String, serde_json::Value>,
    backoff: Backoff,
    health: Arc<Health>,
    faults: Faults,
    runtime: tokio::runtime::Handle,
    shutdown: Shutdown,
    /// Whether a lead due for handoff without a lead id was logged (once per process: the
    /// counter tells how often).
    warned_no_lead_id: AtomicBool,
    /// The unlisted statuses logged so far ([`Core::unlisted_status`]).
    unlisted_logged: Mutex<std::collections::HashSet<String>>,
    state: Mutex<CoreState>,
}

/// How many distinct unlisted statuses the handoff logs, at most.
const UNLISTED_LOGGED: usize = 32;

impl Core {
    fn lock(&self) -> MutexGuard<'_, CoreState> {
        lock_unpoisoned(&self.state)
    }

    /// Produces a dead letter keyed `key` (`None`: no key, as the record it stands for had).
    fn dead_letter(
        &self,
        key: Option<&[u8]>,
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
            kafka::Delivery::Output,
        )?;
        Ok(())
    }

    /// A lead due for handoff whose score change carried no lead id: it waits for a change that
    /// has one. Counted, and logged once, since the usual cause is a setting: the scorer's
    /// rules do not track `handoff.lead_id_attribute`, and then no lead is ever handed off.
    fn no_lead_id(&self) {
        metrics::counter!(HANDOFF_WITHOUT_LEAD_ID).increment(1);
        if !self.warned_no_lead_id.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                lead_id_attribute = self.settings.handoff.lead_id_attribute.as_deref(),
                "a lead due for handoff has no lead id in its score change; it waits for one \
                 that has it. If none ever does, add the attribute to the rules' [output] \
                 tracked_attributes (counted in {HANDOFF_WITHOUT_LEAD_ID}; logged once)"
            );
        }
    }

    /// A lead at MQL or beyond moved to `status`, which `handoff.status_order` does not list:
    /// it keeps its last listed status ([`unlisted_status`]). Logged once per status, for the
    /// first [`UNLISTED_LOGGED`] statuses (a producer inventing statuses cannot fill the log).
    fn unlisted_status(&self, status: &str) {
        let mut seen = lock_unpoisoned(&self.unlisted_logged);
        if seen.len() >= UNLISTED_LOGGED || !seen.insert(status.to_string()) {
            return;
        }
        tracing::warn!(
            status,
            "a lead at the handoff status or beyond moved to a lead_status that \
             handoff.status_order does not list: it keeps its last listed status and is not \
             handed off again until a listed status before the handoff status comes. If this \
             status is a recycle, add it to handoff.status_order before the handoff status; if \
             it means Sales has the lead, to handoff.skip_statuses (logged once per status)"
        );
    }

    /// Publishes one lead's outcome (and, for a failure, its dead letter).
    fn record_outcome(
        &self,
        p: &Pending,
        http_status: Option<u16>,
        resolution: Resolution<'_>,
    ) -> Result<(), HandoffError> {
        // The outcome happened when it was decided: that is both its `time` and its record
        // timestamp (docs/formats.md).
        let now = crate::timestamp::wall_clock_millis();
        let outcome = HandoffOutcome {
            user_id: &p.user_id,
            lead_id: &p.lead_id,
            score: p.score,
            change_event_id: &p.change_id,
            attempts: p.attempts,
            http_status,
            resolution,
            time: now,
        };
        metrics::counter!(HANDOFFS, "outcome" => outcome.status()).increment(1);
        let bytes = outcome.encode();
        self.producer.send_at(
            Record {
                topic: &self.settings.topics.handoffs,
                partition: None,
                key: Some(p.user_id.as_bytes()),
                payload: Some(&bytes),
                headers: Some(kafka::content_type_headers(kafka::JSON_CONTENT_TYPE)),
            },
            kafka::record_timestamp(now, now),
            kafka::Delivery::Output,
        )?;
        if let Resolution::Failed(e) = resolution {
            // One line per lead dead-lettered (a rare event, bounded by the leads): an operator
            // reading the log sees what Salesforce refused and why, not only a counter.
            let why = if p.attempts == 0 {
                "lead dead-lettered without a call: its lead id is not a lead id"
            } else if e.hint == RetryHint::Permanent {
                "lead dead-lettered: Salesforce refused its update"
            } else {
                "lead dead-lettered: its calls kept failing until handoff.max_attempts"
            };
            tracing::warn!(
                lead_id = %p.lead_id,
                change = %p.change_id,
                http_status = ?http_status,
                attempts = p.attempts,
                error = %e,
                "{why}"
            );
            self.dead_letter(
                Some(p.user_id.as_bytes()),
                Some(&bytes),
                &e.error_code.to_ascii_lowercase(),
                &e.to_string(),
                None,
            )?;
        }
        Ok(())
    }

    /// Resolves the pending leads that are due: one round of Salesforce calls for the leads
    /// not called yet and those whose backoff or pause is over. A lead left to retry waits
    /// (`not_before`) and holds its partition: that partition is neither read on nor
    /// checkpointed until the lead has an outcome, while the others go on, so one lead that
    /// Salesforce keeps failing stops only its own partition. An org-wide pause (the API limit,
    /// a refused credential) holds every lead. Shutdown leaves the leads in a wait
    /// uncalled (the wait is the point of it; replay redoes them) and gives the leads not
    /// called yet their one call, as a call in flight is finished.
    ///
    /// It never sleeps: the wait is spent in the service loop, which keeps polling, so a pause
    /// longer than `max.poll.interval.ms` does not make the consumer leave its group.
    fn resolve(&self, st: &mut CoreState) -> Result<(), HandoffError> {
        let now = Instant::now();
        let stopping = self.shutdown.is_triggered() || st.interrupted;
        let org_pause = st.calls_paused_until.filter(|u| now < *u);
        // A lead read while its partition has one in a wait does not join that one's retry:
        // it waits for the partition to be resolved and goes in the next batch.
        let held = waiting_partitions(&st.pending);
        let pending = st.pending.len();
        let (mut due, mut waiting): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut st.pending).into_iter().partition(|l| {
                org_pause.is_none()
                    && match l.not_before {
                        None => {
                            !st.interrupted
                                && !held.contains(&l.partition)
                                && !held_for_unread(l, &st.unread, pending)
                        }
                        Some(t) => !stopping && now >= t,
                    }
            });
        if let Some(until) = org_pause {
            // Every lead waits for what is left of the pause: one whose own backoff ends
            // sooner too (else `checkpoint_due` would find it due at every turn of the pause),
            // and one read meanwhile in a partition not held (which it now holds). A lead read
            // in a held partition keeps waiting for its partition, as always.
            for l in waiting.iter_mut() {
                match l.not_before {
                    Some(t) if t < until => l.not_before = Some(until),
                    None if !held.contains(&l.partition) => {
                        l.not_before = Some(until);
                        l.since.get_or_insert(now);
                    }
                    _ => {}
                }
            }
        }
        if !due.is_empty() {
            for l in &mut due {
                l.since.get_or_insert(now);
            }
            let mut retry = Vec::new();
            // When the first of the leads this round resolves was first called.
            let mut resolved_since: Option<Instant> = None;
            let mut pause: Option<Pause> = None;
            // The last transient failure of the round, for its one log line.
            let mut failure: Option<SfError> = None;
            for chunk in due.chunks(
                self.settings
                    .handoff
                    .max_batch
                    .clamp(1, salesforce::MAX_COLLECTION_RECORDS),
            ) {
                if matches!(pause, Some(Pause::ApiLimit | Pause::Auth(_))) {
                    // The org's limit or its credentials refused a call: every other call of
                    // the round would meet the same answer, so the rest waits uncalled.
                    retry.extend(chunk.iter().cloned());
                    continue;
                }
                let updates: Vec<LeadUpdate> = chunk
                    .iter()
                    .map(|p| LeadUpdate {
                        lead_id: p.lead_id.clone(),
                        body: self.body.clone(),
                    })
                    .collect();
                let report = self.runtime.block_on(self.client.update_leads(&updates));
                self.health.set_condition(
                    crate::ops::admin::Condition::SalesforceToken,
                    self.client.has_token(),
                );
                // One outcome per lead is the client's contract; a lead without one is retried
                // rather than dropped.
                let mut outcomes = report.outcomes.into_iter();
                for p in chunk {
                    let o = outcomes.next().unwrap_or_else(|| salesforce::LeadOutcome {
                        http_status: None,
                        result: Err(SfError {
                            error_code: salesforce::UNEXPECTED_RESPONSE.to_string(),
                            message: "the Salesforce client reported no outcome for this lead"
                                .to_string(),
                            fields: Vec::new(),
                            hint: RetryHint::Retry,
                        }),
                    });
                    let mut p = p.clone();
                    p.attempts = p.attempts.saturating_add(1);
                    let (since, retried) = (p.since.unwrap_or(now), retry.len());
                    match o.result {
                        Ok(()) => self.record_outcome(&p, o.http_status, Resolution::HandedOff)?,
                        Err(e) => match e.hint {
                            RetryHint::Permanent => {
                                self.record_outcome(&p, o.http_status, Resolution::Failed(&e))?
                            }
                            RetryHint::PauseForLimit => {
                                pause = Some(Pause::ApiLimit);
                                p.attempts -= 1; // a paused call is not a failed attempt
                                retry.push(p);
                            }
                            RetryHint::AuthFailure => {
                                if pause.is_none() {
                                    pause = Some(Pause::Auth(e.to_string()));
                                }
                                p.attempts -= 1; // the credentials failed, not the lead
                                retry.push(p);
                            }
                            RetryHint::NoToken => {
                                if pause.is_none() {
                                    pause = Some(Pause::NoToken(e.to_string()));
                                }
                                p.attempts -= 1; // no call was made for the lead
                                retry.push(p);
                            }
                            RetryHint::Retry
                                if self
                                    .settings
                                    .handoff
                                    .max_attempts
                                    .is_some_and(|max| p.attempts >= max) =>
                            {
                                self.record_outcome(&p, o.http_status, Resolution::Failed(&e))?
                            }
                            RetryHint::Retry => {
                                metrics::counter!(HANDOFF_RETRIES).increment(1);
                                failure = Some(e);
                                retry.push(p);
                            }
                        },
                    }
                    if retry.len() == retried {
                        resolved_since = Some(resolved_since.map_or(since, |r| r.min(since)));
                    }
                }
            }
            if let Some(first) = resolved_since {
                metrics::histogram!(HANDOFF_BATCH_SECONDS).record(first.elapsed().as_secs_f64());
            }
            if !retry.is_empty() {
                // The most rounds a lead of this round has been through: the backoff's step.
                let round = retry.iter().map(|l| l.rounds + 1).max().unwrap_or(1);
                let wait = match pause {
                    Some(Pause::ApiLimit) => {
                        metrics::counter!(HANDOFF_LIMIT_PAUSES).increment(1);
                        tracing::warn!(
                            leads = retry.len(),
                            pause_s = self.settings.handoff.limit_pause.as_secs(),
                            "Salesforce API limit reached: pausing calls, keeping the leads"
                        );
                        Some(self.settings.handoff.limit_pause)
                    }
                    Some(Pause::Auth(error)) => {
                        // Counted by the client (leadscore_salesforce_auth_failures_total); a
                        // refused credential is probed as often as a long outage.
                        let wait = self.settings.handoff.backoff_max;
                        tracing::error!(
                            leads = retry.len(),
                            pause_s = wait.as_secs_f64(),
                            %error,
                            "Salesforce authentication failure (check salesforce.client_id and the \
                             client secret): pausing calls, keeping the leads"
                        );
                        Some(wait)
                    }
                    Some(Pause::NoToken(error)) => {
                        // No call can be made without a token: every lead of the round waits
                        // the same backoff.
                        let wait = self.backoff.delay(round, salesforce::jitter());
                        tracing::warn!(
                            leads = retry.len(),
                            pause_s = wait.as_secs_f64(),
                            %error,
                            "no Salesforce token (the token endpoint failed): pausing calls, keeping the leads"
                        );
                        Some(wait)
                    }
                    None => None,
                };
                let now = Instant::now();
                // Every pause holds every lead: the org's limit and refused credentials meet
                // each call, and without a token no call can be made (each lead read meanwhile
                // would ask the failing token endpoint again).
                if let Some(w) = wait {
                    st.calls_paused_until = Some(now + w);
                }
                let leads = retry.len();
                // One wait for the round's leads, so that they are retried together (in as
                // few calls as before), the backoff stepped by the most rounds among them.
                let wait_all =
                    wait.unwrap_or_else(|| self.backoff.delay(round, salesforce::jitter()));
                for mut l in retry {
                    l.rounds = l.rounds.saturating_add(1);
                    l.not_before = Some(now + wait_all);
                    waiting.push(l);
                }
                // One line per round of calls, so at most one per backoff wait
                // (`handoff.backoff_max` once an outage lasts): an outage shows in the log,
                // not only as lag and `leadscore_handoff_retries_total`.
                if let (None, Some(error)) = (&wait, &failure) {
                    tracing::warn!(
                        leads,
                        round,
                        retry_in_s = wait_all.as_secs_f64(),
                        %error,
                        "Salesforce calls failed: retrying, keeping the leads"
                    );
                }
            }
        }
        st.pending = waiting;
        if !st.pending.is_empty() && (stopping || self.shutdown.is_triggered()) {
            st.interrupted = true;
        }
        Ok(())
    }

    fn update_gauges(&self, st: &CoreState) {
        let leads: usize = st.owned.values().map(KeyedState::len).sum();
        self.changelog.update_store_gauges(leads);
    }
}

impl kafka::PartitionOwner for Core {
    fn assigned(&self, _c: &ServiceConsumer<Self>, partitions: &[i32]) -> Vec<(i32, Offset)> {
        owned::assigned(self, partitions)
    }

    fn revoked(&self, consumer: &ServiceConsumer<Self>, partitions: &[i32], lost: bool) {
        // Partitions paused for a wait are resumed before they go: librdkafka keeps a
        // partition's pause across a rebalance, so one given back to this instance would stay
        // paused with nothing waiting. If a wait remains, the next turn pauses again.
        let mut st = self.lock();
        if !st.paused.is_empty() {
            if let Err(e) = kafka::resume_assignment(consumer, false) {
                tracing::warn!(error = %e, "resuming the paused partitions before a revocation");
            }
            st.paused.clear();
        }
        drop(st);
        owned::revoked(self, consumer, partitions, lost)
    }
}

impl OwnsPartitions for Core {
    type Owned = KeyedState<LeadState>;

    fn restore_partition(&self, p: i32) -> Result<(Self::Owned, Option<i64>), String> {
        let r = self.changelog.restore(p).map_err(|e| e.to_string())?;
        let (records_read, warm, duration) = (r.records_read, r.warm, r.duration);
        let decode = |b: &[u8]| LeadState::decode(b).ok_or(());
        let owned = KeyedState::restore(r, decode).map_err(|bad| {
            format!(
                "partition {p}: the stored handoff state of user {:?} cannot be read",
                bad.key
            )
        })?;
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
        Ok((owned, next))
    }

    fn insert_owned(&self, p: i32, owned: Self::Owned) {
        let mut st = self.lock();
        st.owned.insert(p, owned);
        st.unread.insert(p);
    }

    fn resumed_at_checkpoint(&self) {
        let mut st = self.lock();
        if st.batch_started.is_none() {
            st.batch_started = Some(Instant::now());
        }
        st.processed += 1;
    }

    fn remove_owned(&self, p: i32) {
        let mut st = self.lock();
        st.owned.remove(&p);
        // Leads of the partition still waiting (the revoke's checkpoint came during a wait):
        // nothing of them was checkpointed, so the next owner replays and calls for them.
        st.pending.retain(|l| l.partition != p);
        st.paused.remove(&p);
        st.unread.remove(&p);
    }

    fn owned_changed(&self) {
        self.update_gauges(&self.lock());
    }
}

/// The partitions with a lead in a wait (a backoff or a pause): paused, not checkpointed, and
/// their leads read meanwhile wait too.
fn waiting_partitions(pending: &[Pending]) -> BTreeSet<i32> {
    pending
        .iter()
        .filter(|l| l.not_before.is_some())
        .map(|l| l.partition)
        .collect()
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
    "response_too_large",
    "invalid_lead_id",
];

/// Every value of the handoff dead-letter `reason` label: decode errors, the Salesforce codes
/// kept, and `other` for a code a server invents.
pub(crate) fn dead_letter_labels() -> Vec<&'static str> {
    codec::DecodeError::REASONS
        .iter()
        .chain(SALESFORCE_DEAD_LETTER_LABELS)
        .copied()
        .chain(["other"])
        .collect()
}

fn dead_letter_label(reason: &str) -> &'static str {
    codec::DecodeError::REASONS
        .iter()
        .chain(SALESFORCE_DEAD_LETTER_LABELS)
        .find(|l| **l == reason)
        .copied()
        .unwrap_or("other")
}

/// The `errorCode` of a lead whose id is not a lead id (`handoff.lead_id_pattern`); its dead
/// letter's reason is the same in lower case.
pub const INVALID_LEAD_ID: &str = "INVALID_LEAD_ID";

/// The error of a lead whose id does not match `handoff.lead_id_pattern`: no call is made.
pub fn invalid_lead_id(lead_id: &str) -> SfError {
    let shown: String = lead_id.chars().take(100).collect();
    SfError {
        error_code: INVALID_LEAD_ID.to_string(),
        message: format!(
            "lead id {shown:?} is not a lead id (handoff.lead_id_pattern; default: a Salesforce \
             id, 15 or 18 ASCII letters and digits, an 18-character one ending in three of \
             A-Z, a-z, 0-5); no call made"
        ),
        fields: Vec::new(),
        hint: RetryHint::Permanent,
    }
}

/// The score change's key, when present, must be its user id (SPEC 2, as for input events).
fn key_mismatch(key: Option<&[u8]>, user_id: &str) -> Option<codec::DecodeError> {
    key.and_then(|k| codec::check_key(k, user_id).err())
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

/// The encoding of the score changes the handoff consumes from `topics.output`: the scorer
/// writes them in `scorer.output_format`, so the handoff reads that setting, in this one place,
/// rather than a key of its own that could only disagree with what is on the topic.
pub fn score_change_format(settings: &Settings) -> Format {
    settings.scorer.output_format
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
        crate::ops::telemetry::describe();
        crate::ops::telemetry::register_handoff_counters();
        let secret = settings.salesforce.client_secret()?;
        let client = SalesforceClient::new(&settings.salesforce, secret)?;
        let body = settings
            .handoff
            .patch_body
            .as_object()
            .cloned()
            .ok_or(HandoffError::PatchBody)?;
        let lead_ids = settings
            .handoff
            .lead_id_pattern()
            .map_err(|m| HandoffError::fatal(format!("handoff.lead_id_pattern: {m}")))?;
        let props = settings.kafka.properties.clone();
        let counts = kafka::ensure_topics(&props, &topic_specs(&settings)).await?;
        kafka::check_copartitioned(
            &counts,
            &settings.topics.output,
            &settings.topics.handoff_changelog,
        )?;
        // Opening the store reads the disk: off the runtime's workers, as the scorer does.
        let producer = {
            let props = props.clone();
            blocking(move || ServiceProducer::new(&props, None)).await?
        };
        let changelog = {
            let (dir, topic, props) = (
                settings.handoff.state_dir.clone(),
                settings.topics.handoff_changelog.clone(),
                props.clone(),
            );
            blocking(move || Changelog::open(&dir, &topic, &props)).await?
        };
        health.set_condition(crate::ops::admin::Condition::SalesforceToken, false);
        match client.ensure_token().await {
            Ok(()) => health.set_condition(crate::ops::admin::Condition::SalesforceToken, true),
            Err(e) => tracing::warn!(error = %e, "no Salesforce token yet; calls will retry"),
        }
        let core = Arc::new(Core {
            format: score_change_format(&settings),
            backoff: Backoff::from_settings(&settings.handoff),
            producer,
            changelog,
            client,
            funnel: Funnel::new(&settings.handoff),
            lead_ids,
            body,
            health,
            faults: Faults::default(),
            runtime: tokio::runtime::Handle::current(),
            shutdown,
            warned_no_lead_id: AtomicBool::new(false),
            unlisted_logged: Mutex::default(),
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

    /// The partition is read to its end: its leads held for it ([`held_for_unread`]) are
    /// called in the next round.
    fn reached_end(&self, partition: i32) -> Result<(), HandoffError> {
        self.lock().unread.remove(&partition);
        Ok(())
    }

    fn handle(&self, msg: &BorrowedMessage<'_>) -> Result<(), HandoffError> {
        let mut st = self.lock();
        let st = &mut *st;
        let p = msg.partition();
        let offset = msg.offset();
        let Some(owned) = st.owned.get_mut(&p) else {
            return Ok(());
        };
        // More may follow: the partition's end, when the consumer reports it, says not.
        st.unread.insert(p);
        if owned.is_processed(offset) {
            metrics::counter!(HANDOFF_CHANGES_REREAD).increment(1);
            return Ok(());
        }
        metrics::counter!(HANDOFF_CHANGES).increment(1);
        owned.processing(offset);
        st.processed += 1;
        if st.batch_started.is_none() {
            st.batch_started = Some(Instant::now());
        }
        let reject = |e: codec::DecodeError| {
            self.dead_letter(
                msg.key(),
                msg.payload(),
                e.reason(),
                &e.to_string(),
                Some((msg.topic(), p, offset)),
            )
        };
        let Some(payload) = msg.payload() else {
            // SPEC 2, forgetting: the scorer deleted the user. Its lead is forgotten, a handoff
            // waiting in the batch included: if the user comes back and crosses the threshold
            // again, it is handed off again.
            let user = match codec::decode_tombstone_key(msg.key()) {
                Ok(u) => u,
                Err(e) => return reject(e),
            };
            st.pending.retain(|p| p.user_id != user);
            if let Some(owned) = st.owned.get_mut(&p) {
                owned.remove(user);
            }
            return Ok(());
        };
        let change = match codec::decode_change(self.format, payload) {
            Ok(c) => c,
            Err(e) => return reject(e),
        };
        // As the scorer checks its input: a record keyed by another user would be handed off
        // under one user's state while its partition holds the other's.
        if let Some(e) = key_mismatch(msg.key(), &change.user_id) {
            return reject(e);
        }
        let Some(owned) = st.owned.get_mut(&p) else {
            return Ok(());
        };
        let mut unlisted = None;
        let decision = owned.update_if_changed(&change.user_id, |lead| {
            unlisted = unlisted_status(lead, &change, &self.settings.handoff, &self.funnel);
            decide(lead, &change, &self.settings.handoff, &self.funnel)
        });
        if let Some(status) = unlisted {
            self.unlisted_status(&status);
        }
        if decision == Err(Skip::NoLeadId) {
            self.no_lead_id();
        }
        if decision == Err(Skip::AtOrBeyondHandoffStatus) {
            // Sales took the lead while its handoff waited for its batch (or for a retry): the
            // PATCH would move it back, so it is not sent, and the outcome says so.
            let (withdrawn, kept) = std::mem::take(&mut st.pending)
                .into_iter()
                .partition(|p| *p.user_id == *change.user_id);
            st.pending = kept;
            for lead in withdrawn {
                self.record_outcome(&lead, None, Resolution::Superseded)?;
            }
        }
        if let Ok(lead_id) = decision {
            let lead = Pending {
                partition: p,
                user_id: change.user_id.to_string(),
                lead_id,
                score: change.score,
                change_id: change.event_id().to_string(),
                attempts: 0,
                rounds: 0,
                not_before: None,
                since: None,
            };
            if self.lead_ids.matches(&lead.lead_id) {
                st.pending.push(lead);
            } else {
                // No call: an id like `..` or `a/b` would change the request's path. The lead
                // stays eligible, for another id: the same one is not dead-lettered again.
                owned.update_if_changed(&change.user_id, |l| l.refuse(&lead.lead_id));
                let error = invalid_lead_id(&lead.lead_id);
                self.record_outcome(&lead, None, Resolution::Failed(&error))?;
            }
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
                self.health
                    .set_condition(crate::ops::admin::Condition::SalesforceToken, true);
            }
            Err(e) => tracing::warn!(error = %e, "still no Salesforce token; asking again"),
        }
        Ok(())
    }

    fn checkpoint_due(&self, idle: bool) -> bool {
        let h = &self.settings.handoff;
        let st = self.lock();
        let now = Instant::now();
        // A lead waiting: due when its wait is over (its call goes on).
        if st
            .pending
            .iter()
            .any(|l| l.not_before.is_some_and(|t| now >= t))
        {
            return true;
        }
        let waited = st.batch_started.is_some_and(|b| b.elapsed() >= h.linger);
        let held = waiting_partitions(&st.pending);
        // Leads not called yet whose partition holds none in a wait, the ones read while their
        // partition was held among them: they are due once their partition is free, whether
        // or not a record came since.
        let new = if st.interrupted {
            0
        } else {
            let pending = st.pending.len();
            st.pending
                .iter()
                .filter(|l| {
                    l.not_before.is_none()
                        && !held.contains(&l.partition)
                        && !held_for_unread(l, &st.unread, pending)
                })
                .count()
        };
        new >= h.max_batch || ((st.processed > 0 || new > 0) && (idle || waited))
    }

    /// A partition with a lead waiting (a backoff, a pause) is paused (from the turn the wait
    /// begins: the service loop ticks right after a checkpoint, before the next poll): its
    /// records are not taken (its leads would grow without bound through a long wait) but the
    /// consumer is polled, so it stays in its group, and the other partitions are read on. A
    /// rebalance resumes the partitions it revokes; if a wait goes on, the partition is paused
    /// again at the next turn (a record delivered before that joins the pending leads). Resumed
    /// once its leads are resolved, at its position ([`kafka::resume_partitions`]).
    fn tick(&self, consumer: &ServiceConsumer<Core>) -> Result<(), HandoffError> {
        let mut st = self.lock();
        let held = waiting_partitions(&st.pending);
        let pause: Vec<i32> = held.difference(&st.paused).copied().collect();
        let resume: Vec<i32> = st.paused.difference(&held).copied().collect();
        if !pause.is_empty() {
            kafka::pause_partitions(consumer, &pause)?;
            if st.paused.is_empty() {
                st.lag_read = None;
            }
        }
        kafka::resume_partitions(consumer, &resume, !held.is_empty())?;
        st.paused = held;
        if !st.paused.is_empty() && st.lag_read.is_none_or(|t| t.elapsed() >= PAUSED_LAG_EVERY) {
            st.lag_read = Some(Instant::now());
            kafka::report_paused_lag(consumer, |p| {
                st.owned.get(&p).and_then(KeyedState::checkpointed_offset)
            });
        }
        Ok(())
    }

    /// Resolves the pending leads that are due, then checkpoints every partition without a
    /// lead left pending. A partition whose lead waits (a backoff, a pause) or was left by
    /// shutdown is not checkpointed: the next call goes on, or replay redoes it; the others
    /// are, so one lead Salesforce keeps failing holds back only its own partition.
    fn checkpoint(&self, consumer: &ServiceConsumer<Core>) -> Result<(), HandoffError> {
        let mut st = self.lock();
        let st = &mut *st;
        if !st.pending.is_empty() {
            self.resolve(st)?;
        }
        let held: BTreeSet<i32> = st.pending.iter().map(|l| l.partition).collect();
        // The records read since are either checkpointed now or held with their partition,
        // which is checkpointed once its leads are resolved.
        st.processed = 0;
        st.batch_started = None;
        let parts: Vec<PartitionCheckpoint> = st
            .owned
            .iter_mut()
            .filter(|(p, _)| !held.contains(p))
            .filter_map(|(&p, owned)| owned.checkpoint(p, Vec::new(), LeadState::encode))
            .collect();
        let offsets: Vec<(i32, i64)> = st
            .owned
            .iter()
            .filter(|(p, _)| !held.contains(p))
            .filter_map(|(p, o)| o.next_offset().map(|n| (*p, n)))
            .collect();
        if parts.is_empty() && offsets.is_empty() {
            return Ok(());
        }
        self.changelog.commit(
            &self.producer,
            consumer,
            &self.settings.topics.output,
            parts,
            &offsets,
            None,
        )?;
        self.update_gauges(st);
        Ok(())
    }

    fn fatal(message: String) -> HandoffError {
        HandoffError::fatal(message)
    }
}
