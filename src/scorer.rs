//! The scorer service (`leadscore score`): a consumer group on the input topic; per owned
//! partition, the users' state in memory, durable in the changelog and the local store; every
//! score change to the output topic; bad input to the dead-letter topic.
//!
//! One thread polls the consumer and processes each record as it arrives; every
//! `batch_max_events` records or `batch_max_wait` it checkpoints (see [`crate::changelog`] and
//! `docs/crash-safety.md`). Rebalance callbacks run inside `poll`, on the same thread, so a
//! revocation always finds the work before it either checkpointed or checkpoints it first.

use crate::admin::Health;
use crate::changelog::{Changelog, ChangelogError, PartitionCheckpoint};
use crate::codec::{self, Limits};
use crate::config::{Guarantee, Settings};
use crate::engine::{Engine, Outcome};
use crate::event::Origin;
use crate::kafka::{self, ProduceError, Record, ServiceConsumer, ServiceProducer, TopicSpec};
use crate::keyed_state::KeyedState;
use crate::partition::Partition;
use crate::service::{self, Faults, Service};
use crate::shutdown::Shutdown;
use crate::state::UserState;
use crate::telemetry::{self as t, PartitionGauges};
use crate::timestamp::Millis;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::Producer;
use rdkafka::Offset;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use thiserror::Error;

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
    Setup(#[from] kafka::KafkaSetupError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Changelog(#[from] ChangelogError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error("{0}")]
    Fatal(String),
}

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
struct Owned {
    partition: Partition,
    users: KeyedState<UserState>,
}

/// Everything the loop and the rebalance callbacks share.
pub struct Core {
    engine: Engine,
    settings: Settings,
    producer: ServiceProducer,
    changelog: Changelog,
    health: Arc<Health>,
    limits: Limits,
    faults: Faults,
    state: Mutex<CoreState>,
}

#[derive(Default)]
struct CoreState {
    owned: HashMap<i32, Owned>,
    in_transaction: bool,
    /// Records processed since the last checkpoint.
    pending: usize,
    batch_started: Option<Instant>,
    changes_buf: Vec<crate::change::ScoreChange>,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, CoreState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn exactly_once(&self) -> bool {
        self.settings.scorer.guarantee == Guarantee::ExactlyOnce
    }

    fn ensure_transaction(&self, st: &mut CoreState) -> Result<(), ScorerError> {
        if self.exactly_once() && !st.in_transaction {
            self.producer.inner().begin_transaction()?;
            st.in_transaction = true;
        }
        Ok(())
    }

    fn publish(&self, changes: &[crate::change::ScoreChange]) -> Result<(), ScorerError> {
        let now = crate::timestamp::wall_clock_millis();
        for c in changes {
            let bytes = codec::encode_change(self.settings.scorer.output_format, c);
            self.producer.send(
                Record {
                    topic: &self.settings.topics.output,
                    partition: None,
                    key: c.user_id.as_bytes(),
                    payload: Some(&bytes),
                    headers: None,
                },
                false,
            )?;
            metrics::counter!(t::SCORE_CHANGES, "kind" => c.reason.kind.as_str()).increment(1);
            metrics::histogram!(t::EVENT_TO_OUTPUT_SECONDS)
                .record((now - c.time).max(0) as f64 / 1000.0);
        }
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

    fn fail(&self, msg: String) {
        self.faults.fail(<Core as Service>::NAME, msg);
    }

    fn restore(&self, p: i32) -> Result<(Owned, Offset), ScorerError> {
        self.health.restoring(p);
        let restored = self.changelog.restore(p)?;
        let (records_read, warm, duration) =
            (restored.records_read, restored.warm, restored.duration);
        let users = KeyedState::restore(restored, UserState::decode).map_err(|bad| {
            ScorerError::Fatal(format!(
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
        // Records before `next` are skipped as they arrive (see kafka::FETCH_REWIND).
        let offset = next.map_or(Offset::Stored, |n| Offset::Offset(kafka::rewound(n, 0)));
        Ok((Owned { partition, users }, offset))
    }
}

impl kafka::PartitionOwner for Core {
    fn assigned(
        &self,
        _consumer: &ServiceConsumer<Self>,
        partitions: &[i32],
    ) -> Vec<(i32, Offset)> {
        self.health.joined();
        let mut offsets = Vec::new();
        for &p in partitions {
            match self.restore(p) {
                Ok((owned, offset)) => {
                    self.lock().owned.insert(p, owned);
                    self.health.restored(p);
                    offsets.push((p, offset));
                }
                Err(e) => {
                    self.fail(format!("restoring partition {p}: {e}"));
                    offsets.push((p, Offset::Stored));
                }
            }
        }
        tracing::info!(?partitions, "partitions assigned");
        let st = self.lock();
        self.update_gauges(&st);
        offsets
    }

    fn revoked(&self, consumer: &ServiceConsumer<Self>, partitions: &[i32]) {
        // After a failure the in-memory state may be ahead of what is durable: never checkpoint
        // it; the next owner replays from the last good checkpoint.
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

/// The topics the scorer needs, created when missing.
pub fn topic_specs(settings: &Settings) -> Vec<TopicSpec> {
    let t = &settings.topics;
    vec![
        TopicSpec::new(&t.input, t.partitions, t.replication_factor),
        TopicSpec::compacted(&t.changelog, t.partitions, t.replication_factor),
        TopicSpec::new(&t.output, t.partitions, t.replication_factor),
        TopicSpec::dead_letter(&t.dlq, t.partitions, t.replication_factor),
    ]
}

/// A running scorer, ready to [`Scorer::run`].
pub struct Scorer {
    core: Arc<Core>,
    consumer: ServiceConsumer<Core>,
}

impl Scorer {
    /// Loads the rules, sets up the topics (checking co-partitioning) and the clients.
    pub async fn start(settings: Settings, health: Arc<Health>) -> Result<Scorer, ScorerError> {
        t::register_scorer_counters();
        let rules_path = settings.scorer.rules.clone().ok_or(ScorerError::NoRules)?;
        let rules = crate::rules::load_file(&rules_path).map_err(|errors| ScorerError::Rules {
            path: rules_path.display().to_string(),
            errors,
        })?;
        let props = settings.kafka.properties.clone();
        let counts = kafka::ensure_topics(&props, &topic_specs(&settings)).await?;
        kafka::check_copartitioned(&counts, &settings.topics.input, &settings.topics.changelog)?;
        let transactional_id = (settings.scorer.guarantee == Guarantee::ExactlyOnce).then(|| {
            settings.scorer.transactional_id.clone().unwrap_or_else(|| {
                format!(
                    "{}-{}",
                    settings.scorer.group_id,
                    std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string())
                )
            })
        });
        let producer = ServiceProducer::new(&props, transactional_id.as_deref())?;
        let changelog = Changelog::open(
            &settings.scorer.state_dir,
            &settings.topics.changelog,
            &props,
        )?;
        let limits = Limits {
            max_bytes: settings.scorer.max_event_bytes,
        };
        let core = Arc::new(Core {
            engine: Engine::new(rules),
            producer,
            changelog,
            health,
            limits,
            faults: Faults::default(),
            state: Mutex::new(CoreState::default()),
            settings,
        });
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
        service::run(&*self.core, &self.consumer, &shutdown)
    }
}

impl Service for Core {
    type Error = ScorerError;
    const NAME: &'static str = "scorer";

    fn health(&self) -> &Health {
        &self.health
    }

    fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Processes one input record.
    fn handle(&self, msg: &BorrowedMessage<'_>) -> Result<(), ScorerError> {
        let mut st = self.lock();
        let st = &mut *st;
        let p = msg.partition();
        let offset = msg.offset();
        let Some(owned) = st.owned.get_mut(&p) else {
            return Ok(()); // Not ours (any more): the new owner will process it.
        };
        if owned.users.is_processed(offset) {
            return Ok(()); // Already processed: fetched early on purpose, or delivered twice.
        }
        metrics::counter!(t::EVENTS_CONSUMED).increment(1);
        if st.pending == 0 {
            st.batch_started = Some(Instant::now());
        }
        st.pending += 1;
        self.ensure_transaction(st)?;
        let Some(owned) = st.owned.get_mut(&p) else {
            return Ok(());
        };
        owned.users.processing(offset);
        let topics = &self.settings.topics;
        let key = msg.key();
        let payload = msg.payload().unwrap_or_default();
        let decoded = codec::decode_event(
            self.settings.scorer.input_format,
            key,
            payload,
            &self.limits,
        )
        .and_then(|e| {
            if e.user_id.starts_with('\0') {
                Err(codec::DecodeError::InvalidValue {
                    field: "user_id".into(),
                    detail: "must not start with a NUL byte (reserved for checkpoint records)"
                        .into(),
                })
            } else {
                Ok(e)
            }
        });
        let event = match decoded {
            Ok(e) => e,
            Err(err) => {
                let reason = err.reason();
                metrics::counter!(t::EVENTS_DEAD_LETTERED, "reason" => reason).increment(1);
                tracing::debug!(
                    partition = p,
                    offset,
                    reason,
                    "dead-lettering a bad input record"
                );
                let headers = kafka::dead_letter_headers(
                    reason,
                    &err.to_string(),
                    Some((msg.topic(), p, offset)),
                );
                self.producer.send(
                    Record {
                        topic: &topics.dlq,
                        partition: None,
                        key: key.unwrap_or_default(),
                        payload: msg.payload(),
                        headers: Some(headers),
                    },
                    false,
                )?;
                return Ok(());
            }
        };
        let origin = Origin {
            topic: msg.topic(),
            partition: p,
            offset,
        };
        let changes = &mut st.changes_buf;
        changes.clear();
        let outcome =
            owned
                .partition
                .process(&self.engine, &mut owned.users, &event, origin, changes);
        if outcome == Outcome::Scored {
            metrics::counter!(t::EVENTS_APPLIED).increment(1);
        } else {
            metrics::counter!(t::EVENTS_SKIPPED, "reason" => outcome.as_str()).increment(1);
        }
        let changes = std::mem::take(&mut st.changes_buf);
        self.publish(&changes)?;
        st.changes_buf = changes;
        Ok(())
    }

    /// When the input is idle (caught up): with `follow_wall_clock`, each partition's clock
    /// moves on to the wall clock; either way, the timers due by the clock fire. (A late event
    /// can arm a timer already due; an idle partition has no next event to fire it.)
    fn on_idle(&self) -> Result<(), ScorerError> {
        let mut st = self.lock();
        let st = &mut *st;
        let wall = self
            .settings
            .scorer
            .follow_wall_clock
            .then(crate::timestamp::wall_clock_millis);
        let mut changes = std::mem::take(&mut st.changes_buf);
        changes.clear();
        for owned in st.owned.values_mut() {
            let Some(clock) = owned.partition.clock() else {
                continue;
            };
            let to = wall.map_or(clock, |w| w.max(clock));
            if to == clock && owned.partition.next_due().is_none_or(|d| d > clock) {
                continue;
            }
            owned
                .partition
                .advance(&self.engine, &mut owned.users, to, &mut changes);
        }
        if !changes.is_empty() {
            self.ensure_transaction(st)?;
            self.publish(&changes)?;
            if st.pending == 0 {
                st.batch_started = Some(Instant::now());
            }
            st.pending += 1;
        }
        st.changes_buf = changes;
        Ok(())
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
    fn checkpoint(&self, consumer: &ServiceConsumer<Core>) -> Result<(), ScorerError> {
        let mut st = self.lock();
        let st = &mut *st;
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
        let result = self.changelog.commit(
            &self.producer,
            consumer,
            &self.settings.topics.input,
            &parts,
            &offsets,
        );
        st.in_transaction = false;
        result?;
        if let Some(b) = st.batch_started.take() {
            metrics::histogram!(t::POLL_TO_OUTPUT_SECONDS).record(b.elapsed().as_secs_f64());
        }
        st.pending = 0;
        self.update_gauges(st);
        Ok(())
    }

    fn fatal(message: String) -> ScorerError {
        ScorerError::Fatal(message)
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
