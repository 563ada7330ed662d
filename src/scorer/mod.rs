//! The scorer service (`leadscore score`): a consumer group on the input topic; per owned
//! partition, the users' state in memory, durable in the changelog and the local store; every
//! score change to the output topic; bad input to the dead-letter topic.
//!
//! One thread polls the consumer and processes the records in the order they arrive, holding
//! the next [`LOOKAHEAD`] behind the one it processes to load their users into the cache
//! meanwhile; every `batch_max_events` records or `batch_max_wait` it checkpoints (see [`crate::runtime::changelog`] and
//! `docs/crash-safety.md`). Rebalance callbacks run inside `poll`, on the same thread, so a
//! revocation always finds the work before it either checkpointed or checkpoints it first.

use crate::change::ReasonKind;
use crate::codec::{self, Limits};
use crate::config::{Guarantee, Settings, UnknownTypes};
use crate::engine::{Engine, Outcome};
use crate::event::Origin;
use crate::ops::admin::Health;
use crate::ops::telemetry::{self as t, PartitionGauges};
use crate::partition::Partition;
use crate::partitioner::partition_for;
use crate::runtime::blocking::blocking;
use crate::runtime::changelog::{
    Changelog, PartitionCheckpoint, PendingCommit, CHECKPOINTS_IN_FLIGHT,
};
use crate::runtime::error::{from_runtime_errors, RuntimeError};
use crate::runtime::kafka::{self, Record, ServiceConsumer, ServiceProducer, TopicSpec};
use crate::runtime::keyed_state::KeyedState;
use crate::runtime::owned::{self, OwnsPartitions};
use crate::runtime::service::{self, Faults, Polled, Service};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::sync::lock_unpoisoned;
use crate::state::UserState;
use crate::timestamp::Millis;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::Producer;
use rdkafka::Offset;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use thiserror::Error;

pub mod lookup;
use lookup::Lookup;

/// How long the scorer waits at start for the lookup directory topic to be found or created:
/// it is optional (without it lookups answer for this instance's partitions only), so a broker
/// that does not answer costs seconds of start-up, not librdkafka's one-minute request timeout.
const DIRECTORY_SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ScorerError {
    #[error("setting scorer.rules is required: the rules file to score with")]
    NoRules,
    #[error("rules {path}: {errors}")]
    Rules {
        path: String,
        errors: crate::rules::RulesErrors,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

from_runtime_errors!(ScorerError);

/// Checkpoint metadata of a scorer partition: the partition clock.
fn encode_clock(clock: Option<Millis>) -> Vec<u8> {
    match clock {
        Some(c) => c.to_be_bytes().to_vec(),
        None => Vec::new(),
    }
}

fn decode_clock(app: &[u8]) -> Option<Millis> {
    let b: [u8; 8] = app.try_into().ok()?;
    Some(Millis::from_be_bytes(b))
}

/// One owned partition: its clock and timers, and its users' state.
pub struct Owned {
    partition: Partition,
    users: KeyedState<UserState>,
    /// The partition's input has been read to its end and no record came since
    /// ([`Service::reached_end`]): only then does its clock follow the wall clock (SPEC 3.7,
    /// "once the partition is caught up"). False when restored: a restarted scorer reads its
    /// backlog in event time first.
    caught_up: bool,
}

/// The metric series every record touches, looked up once. A `metrics::counter!` call finds
/// its series in the recorder's registry each time (about 130 ns with the Prometheus
/// recorder); a handle is an atomic add (about 18 ns). Made when the scorer starts, after the
/// service installed its recorder (a handle made before that would record nothing).
struct RecordMetrics {
    consumed: metrics::Counter,
    applied: metrics::Counter,
    deleted: metrics::Counter,
    /// One per kind, in the order of [`ReasonKind::ALL`].
    changes: [metrics::Counter; 4],
    /// One per outcome of [`Outcome::skipped`]: the series registered at zero.
    skipped: Vec<(Outcome, metrics::Counter)>,
    event_to_output: metrics::Histogram,
}

impl RecordMetrics {
    fn new() -> RecordMetrics {
        RecordMetrics {
            consumed: metrics::counter!(t::EVENTS_CONSUMED),
            applied: metrics::counter!(t::EVENTS_APPLIED),
            deleted: metrics::counter!(t::USERS_DELETED),
            changes: ReasonKind::ALL
                .map(|k| metrics::counter!(t::SCORE_CHANGES, "kind" => k.as_str())),
            skipped: Outcome::skipped()
                .map(|o| {
                    (
                        o,
                        metrics::counter!(t::EVENTS_SKIPPED, "reason" => o.as_str()),
                    )
                })
                .collect(),
            event_to_output: metrics::histogram!(t::EVENT_TO_OUTPUT_SECONDS),
        }
    }

    fn skipped(&self, outcome: Outcome) {
        match self.skipped.iter().find(|(o, _)| *o == outcome) {
            Some((_, c)) => c.increment(1),
            None => metrics::counter!(t::EVENTS_SKIPPED, "reason" => outcome.as_str()).increment(1),
        }
    }

    fn change(&self, kind: ReasonKind) -> &metrics::Counter {
        &self.changes[ReasonKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default()]
    }
}

/// Everything the loop and the rebalance callbacks share.
pub struct Core {
    engine: Engine,
    settings: Settings,
    producer: ServiceProducer,
    changelog: Changelog,
    health: Arc<Health>,
    limits: Limits,
    /// The input topic's partition count: a user's home partition is murmur2 of the user id
    /// modulo this (SPEC 2, partitioning).
    input_partitions: i32,
    faults: Faults,
    state: Mutex<CoreState>,
    /// The lead lookup endpoint, told of every assignment change.
    lookup: Arc<Lookup>,
    metrics: RecordMetrics,
}

#[derive(Default)]
struct CoreState {
    owned: HashMap<i32, Owned>,
    in_transaction: bool,
    /// Records processed since the last checkpoint.
    pending: usize,
    batch_started: Option<Instant>,
    changes_buf: Vec<crate::change::ScoreChange>,
    /// Each published change is encoded here in turn (librdkafka copies it).
    encode_buf: Vec<u8>,
    /// At-least-once: the checkpoints whose writes are under way, oldest first (at most
    /// [`CHECKPOINTS_IN_FLIGHT`]).
    commits: VecDeque<PendingCommit>,
    /// By home partition: the records this instance re-routed there ([`Core::reroute`]) and
    /// has not read back there yet. A home partition with copies on their way is not caught
    /// up ([`follows_wall_clock`]). Forgotten for a partition when it is assigned: its
    /// copies may have been read by the owner before.
    rerouted: HashMap<i32, u64>,
}

impl CoreState {
    /// One more unit of work for the next checkpoint (a record, a restored position to commit,
    /// a round of timers), starting the batch's clock when it is the first.
    fn add_pending(&mut self) {
        if self.pending == 0 {
            self.batch_started = Some(Instant::now());
        }
        self.pending += 1;
    }
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, CoreState> {
        lock_unpoisoned(&self.state)
    }

    /// Carries the checkpoints under way forward, waiting until at most `keep` are left.
    fn drive_commits(
        &self,
        st: &mut CoreState,
        consumer: &ServiceConsumer<Core>,
        keep: usize,
    ) -> Result<(), ScorerError> {
        self.changelog
            .drive(&self.producer, consumer, &mut st.commits, keep)?;
        Ok(())
    }

    fn exactly_once(&self) -> bool {
        self.settings.scorer.guarantee == Guarantee::ExactlyOnce
    }

    /// The assignment was lost (librdkafka loses all of it at once): the work since the last
    /// checkpoint is the new owner's to redo. Under exactly_once the open transaction, which
    /// holds that work's changes, is aborted, so the next checkpoint cannot commit them beside
    /// the new owner's copies.
    fn drop_unfinished_batch(&self) {
        let mut st = self.lock();
        if self.exactly_once() && st.in_transaction {
            if let Err(e) = self
                .producer
                .inner()
                .abort_transaction(kafka::SETUP_TIMEOUT)
            {
                self.faults.fail(
                    <Core as Service>::NAME,
                    format!("aborting the transaction of lost partitions: {e}"),
                );
            }
            st.in_transaction = false;
        }
        st.pending = 0;
        st.batch_started = None;
    }

    fn ensure_transaction(&self, st: &mut CoreState) -> Result<(), ScorerError> {
        if self.exactly_once() && !st.in_transaction {
            self.producer.inner().begin_transaction()?;
            st.in_transaction = true;
        }
        Ok(())
    }

    /// Publishes score changes: keyed by the user, stamped with the change's event time
    /// ([`kafka::record_timestamp`]), with a `content-type` header naming the format
    /// (docs/formats.md).
    fn publish(
        &self,
        changes: &[crate::change::ScoreChange],
        bytes: &mut Vec<u8>,
    ) -> Result<(), ScorerError> {
        let now = crate::timestamp::wall_clock_millis();
        let format = self.settings.scorer.output_format;
        for c in changes {
            codec::encode_change_into(format, c, bytes);
            let content_type = kafka::score_change_content_type(format);
            self.producer.send_at(
                Record {
                    topic: &self.settings.topics.output,
                    partition: None,
                    key: Some(c.user_id.as_bytes()),
                    payload: Some(bytes),
                    headers: Some(kafka::content_type_headers(content_type)),
                },
                kafka::record_timestamp(c.time, now),
                kafka::Delivery::Output,
            )?;
            self.metrics.change(c.reason.kind).increment(1);
            self.metrics
                .event_to_output
                .record((now - c.time).max(0) as f64 / 1000.0);
        }
        Ok(())
    }

    /// SPEC 2, forgetting: a tombstone keyed by the user on the output topic, so that compacted
    /// copies downstream (and the handoff) forget the user too.
    fn publish_tombstone(&self, user_id: &str) -> Result<(), ScorerError> {
        self.producer.send(
            Record {
                topic: &self.settings.topics.output,
                partition: None,
                key: Some(user_id.as_bytes()),
                payload: None,
                headers: None,
            },
            kafka::Delivery::Output,
        )?;
        Ok(())
    }

    fn update_gauges(&self, st: &CoreState) {
        let users: usize = st.owned.values().map(|o| o.users.len()).sum();
        let timers: usize = st
            .owned
            .values()
            .map(|o| o.partition.pending_timers())
            .sum();
        metrics::gauge!(t::STORE_USERS).set(users as f64);
        metrics::gauge!(t::PENDING_TIMERS).set(timers as f64);
        for (p, o) in &st.owned {
            if let Some(c) = o.partition.clock() {
                PartitionGauges::global().set(t::PARTITION_CLOCK, *p, c as f64 / 1000.0);
            }
        }
        self.changelog.update_store_gauges(users);
    }

    /// Each caught-up partition ([`follows_wall_clock`]) fires the timers due by its
    /// clock, which first moves on to the wall clock with `follow_wall_clock` ([`idle_target`]).
    /// A partition with records still to read is left alone: an empty poll does not mean
    /// caught up (`runtime::service`).
    fn advance_clocks(&self, st: &mut CoreState) -> Result<(), ScorerError> {
        let wall = self
            .settings
            .scorer
            .follow_wall_clock
            .then(crate::timestamp::wall_clock_millis);
        let mut changes = std::mem::take(&mut st.changes_buf);
        changes.clear();
        let all_read = st.owned.values().all(|o| o.caught_up);
        for (p, owned) in st.owned.iter_mut() {
            let Some(clock) = owned.partition.clock() else {
                continue;
            };
            let copies = st.rerouted.get(p).copied().unwrap_or(0);
            let caught_up = follows_wall_clock(owned.caught_up, all_read, copies);
            let Some(to) = idle_target(clock, caught_up, wall) else {
                continue;
            };
            if to == clock && owned.partition.next_due().is_none_or(|d| d > clock) {
                continue;
            }
            owned
                .partition
                .advance(&self.engine, &mut owned.users, to, &mut changes);
        }
        let published = if changes.is_empty() {
            Ok(())
        } else {
            self.ensure_transaction(st)
                .and_then(|()| self.publish(&changes, &mut st.encode_buf))
                .map(|()| st.add_pending())
        };
        st.changes_buf = changes;
        published
    }

    fn restore(&self, p: i32) -> Result<(Owned, Option<i64>), ScorerError> {
        let restored = self.changelog.restore(p)?;
        let (records_read, warm, duration) =
            (restored.records_read, restored.warm, restored.duration);
        let users = KeyedState::restore(restored, UserState::decode).map_err(|bad| {
            ScorerError::fatal(format!(
                "partition {p}: the stored state of user {:?} cannot be read ({}); was it written by a newer leadscore?",
                bad.key, bad.error
            ))
        })?;
        let clock = users.checkpointed_app().and_then(decode_clock);
        let next = users.next_offset();
        let partition = Partition::restore(clock, users.entries());
        tracing::info!(
            partition = p,
            users = users.len(),
            changelog_records = records_read,
            warm,
            resume_offset = next,
            duration_ms = duration.as_millis() as u64,
            "partition restored"
        );
        let owned = Owned {
            partition,
            users,
            caught_up: false,
        };
        Ok((owned, next))
    }
}

/// An input record that is not bad input.
enum Input {
    Event(crate::event::Event),
    /// An event of a type this version does not know, with `scorer.unknown_types = "skip"`.
    UnknownType(codec::UnknownType),
    /// A null value keyed by a user: delete the user (SPEC 2, forgetting).
    Tombstone(String),
}

impl Input {
    fn user_id(&self) -> &str {
        match self {
            Input::Event(e) => &e.user_id,
            Input::UnknownType(u) => &u.user_id,
            Input::Tombstone(u) => u,
        }
    }
}

impl Core {
    /// Decodes one input record, with the check only the scorer makes (SPEC 2): a time too far
    /// ahead of the wall clock, checked before the record can touch any partition clock.
    /// Decodes an input record. Its event time may be at most `max_skew` ahead of `written`,
    /// the wall clock the record was written at ([`written_at`]).
    fn decode_input(
        &self,
        msg: &BorrowedMessage<'_>,
        written: Millis,
        max_skew: Millis,
    ) -> Result<Input, codec::DecodeError> {
        let Some(payload) = msg.payload() else {
            return codec::decode_tombstone_key(msg.key()).map(|u| Input::Tombstone(u.to_string()));
        };
        let s = &self.settings.scorer;
        match codec::decode_event(s.input_format, msg.key(), payload, &self.limits) {
            Ok(e) => {
                codec::check_not_future(&e, written, max_skew)?;
                Ok(Input::Event(e))
            }
            Err(codec::DecodeError::UnknownType(u)) if s.unknown_types == UnknownTypes::Skip => {
                codec::check_time_not_future(u.time, written, max_skew)?;
                Ok(Input::UnknownType(*u))
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a bad input record to the dead-letter topic with its reason. It changes no state
    /// and no clock: only its offset counts as processed.
    fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        err: &codec::DecodeError,
    ) -> Result<(), ScorerError> {
        let (p, offset) = (msg.partition(), msg.offset());
        let reason = err.reason();
        metrics::counter!(t::EVENTS_DEAD_LETTERED, "reason" => reason).increment(1);
        tracing::debug!(
            partition = p,
            offset,
            reason,
            "dead-lettering a bad input record"
        );
        let headers =
            kafka::dead_letter_headers(reason, &err.to_string(), Some((msg.topic(), p, offset)));
        self.producer.send(
            Record {
                topic: &self.settings.topics.dlq,
                partition: None,
                key: msg.key(),
                payload: msg.payload(),
                headers: Some(headers),
            },
            kafka::Delivery::Output,
        )?;
        Ok(())
    }

    /// Re-produces a record found off its user's home partition to the home partition of the
    /// input topic, keyed by the user, with the original bytes and a header naming its position
    /// here (never one it carried in: a header copied with it from elsewhere, or set by its
    /// producer, would give it another record's identity). The home partition's owner scores it there, in
    /// the order the copies arrive; the copy is part of this batch, so it is durable before this
    /// offset is committed, and a copy re-sent after a crash is a duplicate of the first
    /// (docs/crash-safety.md, "Records off their home partition").
    fn reroute(
        &self,
        msg: &BorrowedMessage<'_>,
        user_id: &str,
        home: i32,
        reason: MisroutedReason,
    ) -> Result<(), ScorerError> {
        metrics::counter!(t::EVENTS_MISROUTED, "reason" => reason.as_str()).increment(1);
        let origin = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        let headers = OwnedHeaders::new().insert(Header {
            key: REROUTED_FROM_HEADER,
            value: Some(origin.as_bytes()),
        });
        // With the original record timestamp: the home partition judges the event's time
        // against when it was first written, as this partition did ([`written_at`]).
        self.producer.send_at(
            Record {
                topic: msg.topic(),
                partition: Some(home),
                key: Some(user_id.as_bytes()),
                payload: msg.payload(),
                headers: Some(headers),
            },
            msg.timestamp().to_millis().filter(|&t| t > 0),
            kafka::Delivery::Output,
        )?;
        Ok(())
    }
}

/// The wall clock an input record was written at, which its event's time is checked against
/// (SPEC 2: at most `scorer.max_future_skew` ahead): the record's timestamp (the producer's
/// create time, or the broker's append time) when it is at most `max_skew` ahead of `now`,
/// else `now` (no timestamp, or one further ahead: a record stamped with a mis-dated event's
/// time must not carry the event past the guard). Judged by when it was written, a record gets
/// the same answer each time it is read, after a crash, a rebalance or a reset (SPEC 3.9);
/// judged by when it is read, a record dead-lettered just past the skew was accepted by a
/// replay minutes later. A timestamp up to `max_skew` ahead is trusted, not capped at `now`,
/// so that a producer whose clock runs a little ahead (or that stamps records with their event
/// times, as Flink and Kafka Streams do) gets the same answer on every read too (an outside
/// check); the price is that an event may then be up to twice the skew ahead of the scorer's
/// clock. Only a record with no timestamp, or one more than the skew ahead, is judged by the
/// clock of each read.
pub fn written_at(timestamp: rdkafka::Timestamp, now: Millis, max_skew: Millis) -> Millis {
    timestamp
        .to_millis()
        .filter(|&t| t > 0 && t <= now.saturating_add(max_skew))
        .unwrap_or(now)
}

/// Why a record was not on its user's home partition (a bounded label set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MisroutedReason {
    /// Keyed, but produced with another partitioner than Kafka's murmur2 default, or to an
    /// explicit partition.
    WrongPartition,
    /// No key: the producer spread it over the partitions.
    NoKey,
}

impl MisroutedReason {
    pub const ALL: [MisroutedReason; 2] = [MisroutedReason::WrongPartition, MisroutedReason::NoKey];

    pub fn as_str(self) -> &'static str {
        match self {
            MisroutedReason::WrongPartition => "wrong_partition",
            MisroutedReason::NoKey => "no_key",
        }
    }
}

/// The header a re-routed input record carries: the `topic/partition/offset` it was first
/// consumed at, which stands as its `event_id` when it has none.
pub const REROUTED_FROM_HEADER: &str = "leadscore-rerouted-from";

/// The original position a re-routed copy names, if the record is one: a header naming a
/// position of the record's own topic, on another partition than the record's (a copy is made
/// on its user's home partition, from a record that was not) that the topic has. Anything else
/// is not this scorer's copy (a header carried over by a mirror or a replay into another
/// topic, or set by hand) and is ignored, so the record keeps its own position as identity:
/// a header taken at its word would make it a duplicate of the record it names.
fn rerouted_from(msg: &BorrowedMessage<'_>, partitions: i32) -> Option<String> {
    let headers = msg.headers()?;
    let value = headers
        .iter()
        .find(|h| h.key == REROUTED_FROM_HEADER)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())?;
    copied_from(value, msg.topic(), msg.partition(), partitions).then(|| value.to_string())
}

/// Whether `value` names a position `topic/partition/offset` of `topic`, on a partition other
/// than `at`, below `partitions`, at an offset of zero or more.
fn copied_from(value: &str, topic: &str, at: i32, partitions: i32) -> bool {
    let Some((partition, offset)) = value
        .strip_prefix(topic)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    let canonical = |s: &str| s == "0" || !s.starts_with(['0', '+', '-']);
    match (partition.parse::<i32>(), offset.parse::<i64>()) {
        (Ok(q), Ok(o)) => {
            canonical(partition)
                && canonical(offset)
                && q != at
                && (0..partitions).contains(&q)
                && o >= 0
        }
        _ => false,
    }
}

impl kafka::PartitionOwner for Core {
    fn assigned(&self, _c: &ServiceConsumer<Self>, partitions: &[i32]) -> Vec<(i32, Offset)> {
        owned::assigned(self, partitions)
    }

    fn revoked(&self, consumer: &ServiceConsumer<Self>, partitions: &[i32], lost: bool) {
        if lost {
            self.drop_unfinished_batch();
        }
        owned::revoked(self, consumer, partitions, lost)
    }
}

impl OwnsPartitions for Core {
    type Owned = Owned;

    fn restore_partition(&self, p: i32) -> Result<(Owned, Option<i64>), String> {
        self.restore(p).map_err(|e| e.to_string())
    }

    fn insert_owned(&self, p: i32, owned: Owned) {
        let mut st = self.lock();
        st.rerouted.remove(&p);
        st.owned.insert(p, owned);
    }

    fn resumed_at_checkpoint(&self) {
        self.lock().add_pending();
    }

    fn remove_owned(&self, p: i32) {
        self.lock().owned.remove(&p);
    }

    fn owned_changed(&self) {
        self.update_gauges(&self.lock());
    }

    fn announce(&self) {
        self.lookup.announce(&self.health);
    }
}

/// Loads the rules file, logging one warning per rule that can never do anything (what
/// `leadscore rules check` prints), so an operator sees them in the scorer's log too.
fn load_rules_logging_warnings(
    path: &std::path::Path,
) -> Result<crate::rules::Rules, crate::rules::RulesErrors> {
    let checked = crate::config::rules_file::check(path)?;
    for w in &checked.warnings {
        tracing::warn!(
            file = %w.file,
            line = w.line,
            key = %w.key,
            "rules warning: {}",
            w.message
        );
    }
    Ok(checked.rules)
}

/// The rules as the scorer runs them: every change's snapshot also holds the attributes the
/// handoff decides by, `handoff.status_attribute` and `handoff.lead_id_attribute` (as read from
/// the scorer's own settings), whether the rules file tracks them or not. Without the status in
/// the snapshot a lead at SQL or Customer looked like one before MQL and was moved back to MQL
/// (SPEC 6; an outside review), and without the lead id no change could be handed off.
fn tracking_handoff_attributes(
    mut rules: crate::rules::Rules,
    handoff: &crate::config::HandoffSettings,
) -> crate::rules::Rules {
    let tracked = &mut rules.output.tracked_attributes;
    let needed = std::iter::once(&handoff.status_attribute).chain(&handoff.lead_id_attribute);
    for name in needed {
        if !name.is_empty() && !tracked.contains(name) {
            tracked.push(name.clone());
        }
    }
    rules
}

/// The topics the scorer needs, created when missing; with lead lookup on, the instances'
/// directory too (compacted, one partition: every instance reads all of it).
pub fn topic_specs(settings: &Settings) -> Vec<TopicSpec> {
    let t = &settings.topics;
    let mut specs = vec![
        TopicSpec::new(&t.input, t.partitions, t.replication_factor),
        TopicSpec::compacted(&t.changelog, t.partitions, t.replication_factor),
        TopicSpec::new(&t.output, t.partitions, t.replication_factor),
        TopicSpec::dead_letter(&t.dlq, t.partitions, t.replication_factor),
    ];
    if settings.admin.lookup {
        specs.push(TopicSpec::compacted(
            &settings.instances_topic(),
            1,
            t.replication_factor,
        ));
    }
    specs
}

/// A running scorer, ready to [`Scorer::run`].
pub struct Scorer {
    core: Arc<Core>,
    consumer: ServiceConsumer<Core>,
}

impl Scorer {
    /// Loads the rules, sets up the topics (checking co-partitioning) and the clients; no lead
    /// lookup (the benchmarks, the demo).
    pub async fn start(settings: Settings, health: Arc<Health>) -> Result<Scorer, ScorerError> {
        let lookup = Lookup::new(&Settings {
            admin: Default::default(),
            ..settings.clone()
        })
        .map_err(|e| ScorerError::fatal(e.to_string()))?;
        Scorer::start_with(settings, health, lookup).await
    }

    /// [`Scorer::start`] answering lead lookups through `lookup` (`admin.lookup`).
    pub async fn start_with(
        settings: Settings,
        health: Arc<Health>,
        lookup: Arc<Lookup>,
    ) -> Result<Scorer, ScorerError> {
        t::register_scorer_counters();
        let rules_path = settings.scorer.rules.clone().ok_or(ScorerError::NoRules)?;
        let rules = {
            let path = rules_path.clone();
            blocking(move || load_rules_logging_warnings(&path)).await
        }
        .map_err(|errors| ScorerError::Rules {
            path: rules_path.display().to_string(),
            errors,
        })?;
        let props = settings.kafka.properties.clone();
        // The lookup directory is set up apart: without it an instance still answers lookups
        // for its own partitions, so a broker that cannot create it only costs forwarding.
        let instances = settings.instances_topic();
        let (directory, required): (Vec<TopicSpec>, Vec<TopicSpec>) = topic_specs(&settings)
            .into_iter()
            .partition(|s| settings.admin.lookup && s.name == instances);
        let counts = kafka::ensure_topics(&props, &required).await?;
        // Bounded apart too: a broker that cannot create it (the embedded dev-broker, for any
        // group but the default) left a create request waiting librdkafka's full request
        // timeout, a minute of start-up with nothing in the log (found by an outside check).
        let directory_setup = tokio::time::timeout(
            DIRECTORY_SETUP_TIMEOUT,
            kafka::ensure_topics(&props, &directory),
        );
        let directory = match directory.is_empty() {
            true => None,
            false => match directory_setup.await.unwrap_or_else(|_| {
                Err(kafka::KafkaSetupError::CreateTopic {
                    topic: instances.clone(),
                    reason: format!("no answer within {} s", DIRECTORY_SETUP_TIMEOUT.as_secs()),
                })
            }) {
                Ok(_) => Some(instances),
                Err(e) => {
                    tracing::warn!(
                        topic = %instances,
                        error = %e,
                        "lead lookup answers for this instance's partitions only: the instances' directory topic is missing and cannot be created (create it, compacted, one partition; docs/operations.md)"
                    );
                    None
                }
            },
        };
        let input_partitions = kafka::check_copartitioned(
            &counts,
            &settings.topics.input,
            &settings.topics.changelog,
        )?;
        let transactional_id = (settings.scorer.guarantee == Guarantee::ExactlyOnce).then(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string());
            settings.scorer.transactional_id_for(&host)
        });
        // init_transactions waits on the broker, opening the store reads the disk.
        let producer = {
            let props = props.clone();
            blocking(move || ServiceProducer::new(&props, transactional_id.as_deref())).await?
        };
        let changelog = {
            let (dir, topic, props) = (
                settings.scorer.state_dir.clone(),
                settings.topics.changelog.clone(),
                props.clone(),
            );
            blocking(move || Changelog::open(&dir, &topic, &props)).await?
        };
        let limits = Limits {
            max_bytes: settings.scorer.max_event_bytes,
        };
        let core = Arc::new(Core {
            engine: Engine::new(tracking_handoff_attributes(rules, &settings.handoff))
                .with_explain_depth(settings.scorer.explain_depth),
            producer,
            changelog,
            health,
            limits,
            input_partitions,
            faults: Faults::default(),
            state: Mutex::new(CoreState::default()),
            lookup: lookup.clone(),
            metrics: RecordMetrics::new(),
            settings,
        });
        lookup.attach(Arc::downgrade(&core), &props, directory.as_deref())?;
        let consumer = kafka::group_consumer(
            &props,
            &core.settings.scorer.group_id,
            &core.settings.topics.input,
            core.clone(),
            true,
        )?;
        Ok(Scorer { core, consumer })
    }

    /// Consumes until `shutdown`; then finishes the batch, checkpoints, leaves the group.
    /// Blocking: run it on its own thread.
    pub fn run(self, shutdown: Shutdown) -> Result<(), ScorerError> {
        let result = service::run(&*self.core, &self.consumer, &shutdown);
        self.core.lookup.retire();
        result
    }
}

/// Records the scorer holds behind the one it processes: their users are loaded into the
/// cache meanwhile ([`KeyedState::look_ahead`]), the buckets three records ahead, the entries
/// two, the states' blocks one, so that each record's update finds its user there instead of
/// waiting on up to three cache misses in a row (docs/scale.md, "Lookahead", under "Against the targets"). The scorer never
/// pauses, resumes or seeks its input, and skips a held record whose partition it no longer
/// owns or has processed already, as [`Service::LOOKAHEAD`] requires.
pub const LOOKAHEAD: usize = 3;

impl Core {
    /// [`Service::handle`] with the state locked.
    fn handle_locked(
        &self,
        st: &mut CoreState,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), ScorerError> {
        let p = msg.partition();
        let offset = msg.offset();
        let Some(owned) = st.owned.get_mut(&p) else {
            return Ok(()); // Not ours (any more): the new owner will process it.
        };
        // Polled before the partition's end, if one comes: read to the end only from there.
        owned.caught_up = false;
        let processed = owned.users.is_processed(offset);
        // Read once: it counts the copy back here, and names the event when it has no id.
        let copy_of = rerouted_from(msg, self.input_partitions);
        if copy_of.is_some() {
            // A copy read back: one fewer on its way here (a copy another instance made, or
            // one made before this assignment, is not counted, hence saturating).
            if let Some(n) = st.rerouted.get_mut(&p) {
                *n = n.saturating_sub(1);
            }
        }
        if processed {
            return Ok(()); // Already processed: fetched early on purpose, or delivered twice.
        }
        self.metrics.consumed.increment(1);
        st.add_pending();
        self.ensure_transaction(st)?;
        let Some(owned) = st.owned.get_mut(&p) else {
            return Ok(());
        };
        owned.users.processing(offset);
        let key = msg.key();
        let max_skew = self.settings.scorer.max_future_skew.as_millis() as Millis;
        let now = crate::timestamp::wall_clock_millis();
        let written = written_at(msg.timestamp(), now, max_skew);
        let input = match self.decode_input(msg, written, max_skew) {
            Ok(input) => input,
            Err(err) => return self.dead_letter(msg, &err),
        };
        let home = partition_for(input.user_id().as_bytes(), self.input_partitions);
        if home != p {
            // SPEC 2: scored in the user's home partition, never in a second copy of its state.
            let reason = if key.is_none() {
                MisroutedReason::NoKey
            } else {
                MisroutedReason::WrongPartition
            };
            let sent = self.reroute(msg, input.user_id(), home, reason);
            *st.rerouted.entry(home).or_default() += 1;
            return sent;
        }
        if key.is_none() {
            // On its home partition already: scored here, only counted.
            metrics::counter!(t::EVENTS_MISROUTED, "reason" => MisroutedReason::NoKey.as_str())
                .increment(1);
        }
        let origin = Origin {
            topic: msg.topic(),
            partition: p,
            offset,
        };
        let changes = &mut st.changes_buf;
        changes.clear();
        // The user to write tombstones for, when the record deleted one.
        let (outcome, deleted) = match input {
            Input::Event(mut event) => {
                if event.event_id.is_none() {
                    // A re-routed record keeps the identity of its original position, so a
                    // second copy (re-produced after a crash) is a duplicate
                    // (docs/crash-safety.md).
                    event.event_id = copy_of.map(Into::into);
                }
                if let Err(err) = owned
                    .partition
                    .admit(&self.engine, &owned.users, &event, offset)
                {
                    // Past the user's bounds: bad input, moving no clock (SPEC 2).
                    return self.dead_letter(msg, &err);
                }
                let outcome = owned.partition.process(
                    &self.engine,
                    &mut owned.users,
                    &event,
                    origin,
                    changes,
                );
                (
                    outcome,
                    (outcome == Outcome::Deleted).then_some(event.user_id),
                )
            }
            Input::UnknownType(u) => {
                // Counted in the clock like any event that changes nothing (docs/semantics.md).
                owned
                    .partition
                    .advance(&self.engine, &mut owned.users, u.time, changes);
                (Outcome::UnknownType, None)
            }
            // No time of its own: deleted at the partition clock, which it does not move, once
            // the timers due by that clock have fired.
            Input::Tombstone(user) => {
                let outcome =
                    owned
                        .partition
                        .forget(&self.engine, &mut owned.users, &user, offset, changes);
                (outcome, (outcome == Outcome::Deleted).then(|| user.into()))
            }
        };
        match outcome {
            Outcome::Scored => self.metrics.applied.increment(1),
            Outcome::Deleted => self.metrics.deleted.increment(1),
            _ => self.metrics.skipped(outcome),
        }
        self.publish(&st.changes_buf, &mut st.encode_buf)?;
        if let Some(user) = deleted {
            // After the changes above (timers due before the deletion fired first), so that
            // the last record of the user on the output is the tombstone. The changelog's
            // tombstone follows at the checkpoint (KeyedState::remove).
            self.publish_tombstone(&user)?;
        }
        Ok(())
    }
}

impl Service for Core {
    type Error = ScorerError;
    const NAME: &'static str = "scorer";
    const LOOKAHEAD: usize = LOOKAHEAD;

    fn health(&self) -> &Health {
        &self.health
    }

    fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Processes one input record.
    fn handle(&self, msg: &BorrowedMessage<'_>) -> Result<(), ScorerError> {
        self.handle_locked(&mut self.lock(), msg)
    }

    /// Loads the users of the records `ahead` (by their keys, each in the state of its
    /// partition), then processes `msg`.
    fn handle_ahead(
        &self,
        msg: &BorrowedMessage<'_>,
        ahead: &VecDeque<Polled<'_>>,
    ) -> Result<(), ScorerError> {
        let mut st = self.lock();
        for (i, next) in ahead.iter().filter_map(Polled::record).enumerate() {
            if let (Some(owned), Some(key)) = (st.owned.get(&next.partition()), next.key()) {
                owned.users.look_ahead(key, i + 1);
            }
        }
        self.handle_locked(&mut st, msg)
    }

    /// A partition read to its end is caught up: its clock moves on to the wall clock now
    /// (with `follow_wall_clock`), without waiting for a poll that finds nothing in any
    /// partition, which busy partitions beside it may never leave.
    fn reached_end(&self, partition: i32) -> Result<(), ScorerError> {
        let mut st = self.lock();
        let Some(owned) = st.owned.get_mut(&partition) else {
            return Ok(());
        };
        owned.caught_up = true;
        // The last of the instance's partitions to reach its end lets the others follow the
        // wall clock too.
        self.advance_clocks(&mut st)
    }

    /// When a poll found nothing: [`Core::advance_clocks`] over every partition.
    fn on_idle(&self) -> Result<(), ScorerError> {
        let mut st = self.lock();
        self.advance_clocks(&mut st)
    }

    fn checkpoint_due(&self, idle: bool) -> bool {
        let s = &self.settings.scorer;
        let st = self.lock();
        st.pending > 0
            && (st.pending >= s.batch_max_events
                || idle
                || st
                    .batch_started
                    .is_some_and(|b| b.elapsed() >= s.batch_max_wait))
    }

    /// Makes everything processed so far durable: outputs, then the changed users and each
    /// partition's checkpoint record, then the local store and the group offsets.
    ///
    /// At-least-once, the batch's states are encoded here and its writes go on while the next
    /// batch is processed ([`Service::tick`]): the waits for deliveries overlap with scoring
    /// instead of stopping it twice a batch. At most [`CHECKPOINTS_IN_FLIGHT`] are under way,
    /// each carried forward once the one before is done, so each follows the order of
    /// docs/crash-safety.md.
    fn checkpoint(&self, consumer: &ServiceConsumer<Core>) -> Result<(), ScorerError> {
        let mut st = self.lock();
        let st = &mut *st;
        self.drive_commits(st, consumer, CHECKPOINTS_IN_FLIGHT - 1)?;
        self.ensure_transaction(st)?;
        let parts: Vec<PartitionCheckpoint> = st
            .owned
            .iter_mut()
            .filter_map(|(&p, o)| {
                let clock = encode_clock(o.partition.clock());
                o.users.checkpoint(p, clock, UserState::encode)
            })
            .collect();
        let offsets: Vec<(i32, i64)> = st
            .owned
            .iter()
            .filter_map(|(p, o)| o.users.next_offset().map(|n| (*p, n)))
            .collect();
        // Timed to when the checkpoint is done, which at-least-once is after this returns.
        let polled = st.batch_started.take();
        if self.exactly_once() {
            let result = self.changelog.commit(
                &self.producer,
                consumer,
                &self.settings.topics.input,
                parts,
                &offsets,
                polled,
            );
            st.in_transaction = false;
            result?;
        } else {
            let commit = self.changelog.begin_commit(
                &self.producer,
                &self.settings.topics.input,
                parts,
                offsets,
                polled,
            )?;
            st.commits.push_back(commit);
            self.drive_commits(st, consumer, usize::MAX)?;
        }
        st.pending = 0;
        self.update_gauges(st);
        Ok(())
    }

    fn tick(&self, consumer: &ServiceConsumer<Core>) -> Result<(), ScorerError> {
        let mut st = self.lock();
        if st.commits.is_empty() {
            return Ok(());
        }
        self.drive_commits(&mut st, consumer, usize::MAX)
    }

    fn settle(&self, consumer: &ServiceConsumer<Core>) -> Result<(), ScorerError> {
        self.drive_commits(&mut self.lock(), consumer, 0)
    }

    fn fatal(message: String) -> ScorerError {
        ScorerError::fatal(message)
    }

    fn abandon(&self) {
        if self.exactly_once() {
            let _ = self
                .producer
                .inner()
                .abort_transaction(kafka::SETUP_TIMEOUT);
        }
    }
}

/// Whether a partition counts as caught up (SPEC 3.7), so that its clock may follow the wall
/// clock: read to its end (`at_end`), and so is every partition this instance owns
/// (`all_read`), and none of the records this instance re-routed to it is still on its way
/// (`copies_on_the_way`). A record produced off its user's home partition (a producer with
/// librdkafka's default partitioner, or no key) is scored on the home partition only after the
/// partition it landed on is read that far: until then the home partition has not seen all
/// its input, however far it has read its own. Before this, a home partition that reached its
/// end while a backlog of its users' events still sat on the others jumped to the wall clock
/// between a user's events, firing months of decays after the first ones and again after the
/// later ones. Partitions of other instances are not known here: their copies can still
/// arrive after the jump (README, "Which partitioner").
fn follows_wall_clock(at_end: bool, all_read: bool, copies_on_the_way: u64) -> bool {
    at_end && all_read && copies_on_the_way == 0
}

/// Where a partition's clock moves when its records run out (its end, or a poll that found
/// nothing): to the wall clock `wall` (given with `follow_wall_clock`) once the partition
/// counts as caught up ([`follows_wall_clock`]), never back; nowhere while records remain.
/// Then the timers due by it fire.
///
/// A partition with records left fires nothing, not even the timers due by its unchanged
/// clock (a late event can arm one already due): SPEC 3.7 checks the clock, and fires what is
/// due, before each event, so they fire before the next one. Fired at an empty poll in the
/// middle of a backlog (rdkafka returns one after a rebalance or a commit's answer), a
/// collapsed decay was split into two changes at a moment no input decides, one of them with
/// the id of the unsplit change and another delta: a replay could publish the other split,
/// and a consumer dropping repeats by id would add up the wrong total (an outside review).
/// Once the partition is read to its end, what is due fires (as `simulate` fires it at the
/// end of its input).
fn idle_target(clock: Millis, caught_up: bool, wall: Option<Millis>) -> Option<Millis> {
    caught_up.then(|| wall.map_or(clock, |w| w.max(clock)))
}

#[cfg(test)]
mod tests {
    use super::copied_from;

    /// Records left to read: the clock stays and nothing fires, whatever the wall clock.
    /// Read to the end: timers fire, at the wall clock when it is followed and ahead.
    #[test]
    fn a_partition_with_records_left_fires_nothing_when_the_poll_comes_back_empty() {
        use super::idle_target;
        assert_eq!(idle_target(1_000, false, None), None);
        assert_eq!(idle_target(1_000, false, Some(5_000)), None);
        assert_eq!(idle_target(1_000, true, None), Some(1_000));
        assert_eq!(idle_target(1_000, true, Some(5_000)), Some(5_000));
        assert_eq!(
            idle_target(9_000, true, Some(5_000)),
            Some(9_000),
            "never back"
        );
    }

    /// The guard's clock is the record's own timestamp, trusted up to the skew ahead of now
    /// (a producer clock a little ahead gets the same answer on every read); a record with no
    /// timestamp (librdkafka's -1), a zero one, or one further ahead is read against now.
    #[test]
    fn an_event_is_checked_against_when_its_record_was_written() {
        use super::written_at;
        use rdkafka::Timestamp;
        let (now, skew) = (1_767_607_260_000, 3_600_000);
        let hour_ago = now - 3_600_000;
        let check = |t| written_at(t, now, skew);
        assert_eq!(check(Timestamp::CreateTime(hour_ago)), hour_ago);
        assert_eq!(check(Timestamp::LogAppendTime(hour_ago)), hour_ago);
        assert_eq!(check(Timestamp::CreateTime(now + 150_000)), now + 150_000);
        assert_eq!(check(Timestamp::CreateTime(now + skew)), now + skew);
        assert_eq!(check(Timestamp::CreateTime(now + skew + 1)), now);
        assert_eq!(check(Timestamp::NotAvailable), now);
        assert_eq!(check(Timestamp::CreateTime(0)), now);
        assert_eq!(check(Timestamp::CreateTime(-1)), now);
        // The same record read 2.5 minutes later, its producer's clock 2.5 minutes ahead: the
        // same clock, so the same answer (an outside check found the first read used now).
        let ts = Timestamp::CreateTime(now + 150_000);
        assert_eq!(
            written_at(ts, now, skew),
            written_at(ts, now + 150_000, skew)
        );
    }

    /// The scorer's changes carry what the handoff reads, named in the handoff settings, even
    /// when the rules file tracks neither.
    #[test]
    fn changes_carry_the_handoff_status_and_lead_id_attributes_the_rules_do_not_track() {
        use crate::change::ScoreChange;
        use crate::event::{Event, EventType, Origin, Scalar, ScalarRef};
        let rules = crate::rules::parse_str(
            "[entry]\non = [{ type = \"session_start\" }]\n\
             [[group]]\nname = \"s\"\ndelta = 150\ntriggers = [{ type = \"session_start\" }]\n\
             [output]\ntracked_attributes = [\"email\"]\n",
            "rules.toml",
        )
        .expect("rules");
        let handoff = crate::config::HandoffSettings {
            status_attribute: "sf_status".to_string(),
            lead_id_attribute: Some("sf_id".to_string()),
            ..Default::default()
        };
        let engine =
            crate::engine::Engine::new(super::tracking_handoff_attributes(rules, &handoff));
        let mut st = crate::state::UserState::default();
        let mut out: Vec<ScoreChange> = Vec::new();
        let origin = Origin {
            topic: "lead-events",
            partition: 0,
            offset: 0,
        };
        let t = 1_767_571_200_000;
        for (i, (name, value)) in [("sf_status", "SQL"), ("sf_id", "00Q000000000001AAA")]
            .into_iter()
            .enumerate()
        {
            let mut e = Event::new("u", t, EventType::AttributeChanged);
            e.name = Some(name.into());
            e.value = Some(Scalar::Str(value.to_string()));
            engine.apply(
                &mut st,
                &e,
                Origin {
                    offset: i as i64,
                    ..origin
                },
                t,
                &mut out,
            );
        }
        out.clear();
        let e = Event::new("u", t + 1, EventType::SessionStart);
        engine.apply(
            &mut st,
            &e,
            Origin {
                offset: 2,
                ..origin
            },
            t + 1,
            &mut out,
        );
        let change = out.last().expect("a score change");
        assert_eq!(change.score, 150);
        assert_eq!(change.attribute("sf_status"), Some(ScalarRef::Str("SQL")));
        assert_eq!(
            change.attribute("sf_id"),
            Some(ScalarRef::Str("00Q000000000001AAA"))
        );
    }

    /// Only a position of the record's own topic, on another partition that the topic has, at
    /// an offset, written as the scorer writes it, names a re-routed copy's origin.
    #[test]
    fn a_rerouting_header_counts_only_when_it_can_be_the_scorers_own() {
        let t = "lead-events";
        for (value, own) in [
            ("lead-events/1/0", true),
            ("lead-events/5/12345", true),
            ("lead-events/0/7", false), // the record's own partition: no copy
            ("lead-events/6/7", false), // a partition the topic does not have
            ("lead-events/-1/7", false),
            ("lead-events/1/-7", false),
            ("lead-events/01/7", false), // not as the scorer writes it
            ("lead-events/1/+7", false),
            ("lead-events/1", false),
            ("lead-events/1/7/8", false),
            ("other-topic/1/7", false), // carried over from another topic
            ("lead-events.v2/1/7", false),
            ("lead-events-x/1/7", false),
            ("", false),
        ] {
            assert_eq!(copied_from(value, t, 0, 6), own, "{value}");
        }
    }
}
