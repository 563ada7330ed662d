//! The consumer loop the scorer and the handoff share: poll a record and hand it to the
//! service, let the service work while the input is idle, checkpoint when its batch is due, and
//! on shutdown finish the batch, checkpoint and leave the group.
//!
//! A service may ask to see a few records ahead ([`Service::LOOKAHEAD`]): the loop then holds
//! up to that many records already fetched (polled without waiting) behind the one it hands
//! over, still one record per turn, in the order polled. Held records are handed over even
//! after a rebalance that ran inside a later poll: the service skips those of partitions it no
//! longer owns and those at or below its position, as it skips any record it should not
//! process. After a lost assignment (checkpointed by no one) they are dropped instead
//! ([`Polled::current`]). So only a service that never pauses, resumes or seeks its input may
//! look ahead (the scorer; not the handoff). On shutdown or an error the held records are
//! dropped unprocessed, like records not yet fetched.
//!
//! A partition is caught up when its input has been read to the end, which librdkafka reports
//! in order with the records (`enable.partition.eof`, set on every service consumer): the loop
//! hands that over as [`Service::reached_end`] once the records polled before it are done. An
//! empty poll does not say it: rdkafka returns nothing from a poll that handled a rebalance or
//! a commit's answer, with records still waiting (a restarted scorer's first poll did, and its
//! restored clocks jumped to the wall clock before the backlog was read; an outside review).
//!
//! A failure inside a rebalance callback, which cannot return an error, is parked in
//! [`Faults`]: the loop ends on it at its next turn, and from then on nothing may be
//! checkpointed (the in-memory state may be ahead of what is durable; the next owner replays
//! from the last good checkpoint).

use crate::ops::admin::Health;
use crate::runtime::kafka::{self, PartitionOwner, ServiceConsumer};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::sync::lock_unpoisoned;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long one poll waits for a record before the service counts the input as idle.
const POLL: Duration = Duration::from_millis(50);

/// What one poll gave the loop, kept in the order polled: a record, with the count of lost
/// assignments when it was polled ([`kafka::OwnerContext::losses`]), or the end of a
/// partition's input (every record of the partition before it polled), with the count of
/// rebalances when it was polled ([`kafka::OwnerContext::rebalances`]).
pub enum Polled<'a> {
    Record {
        message: BorrowedMessage<'a>,
        losses: u64,
    },
    End {
        partition: i32,
        rebalances: u64,
    },
}

impl<'a> Polled<'a> {
    /// The record, if this is one.
    pub fn record(&self) -> Option<&BorrowedMessage<'a>> {
        match self {
            Polled::Record { message, .. } => Some(message),
            Polled::End { .. } => None,
        }
    }

    /// Whether this item still means what it meant when polled, given the consumer's counts
    /// of rebalances and of lost assignments now. A record polled before a lost assignment is
    /// stale: its partition was dropped without a checkpoint, so if it comes back its records
    /// are read again from the last one, this record after those before it. An end polled
    /// before any rebalance is stale: its partition may have been assigned again since, with
    /// its records to read again. A record outlives an ordinary rebalance: the revocation
    /// checkpointed, and the service skips what it no longer owns or has passed.
    pub fn current(&self, rebalances_now: u64, losses_now: u64) -> bool {
        match self {
            Polled::Record { losses, .. } => *losses == losses_now,
            Polled::End { rebalances, .. } => *rebalances == rebalances_now,
        }
    }
}

/// What the loop drives. Implemented by each service's core, which is also the
/// [`PartitionOwner`] its consumer's rebalances go to.
pub trait Service: PartitionOwner {
    type Error: std::fmt::Display + From<rdkafka::error::KafkaError>;
    /// The service's name in log lines ("scorer", "handoff").
    const NAME: &'static str;

    fn health(&self) -> &Health;
    fn faults(&self) -> &Faults;
    /// How many records after the one handed over [`Service::handle_ahead`] sees: 0 (the
    /// default) polls each record when the last is done. Only for a service that never
    /// pauses, resumes or seeks its input (see the module's notes).
    const LOOKAHEAD: usize = 0;
    /// Processes one input record.
    fn handle(&self, msg: &BorrowedMessage<'_>) -> Result<(), Self::Error>;
    /// Processes one input record, `ahead` what was polled after it (at most
    /// [`Service::LOOKAHEAD`] items, nearest first), which it may only look at: each is handed
    /// over in a later turn. By default, [`Service::handle`].
    fn handle_ahead(
        &self,
        msg: &BorrowedMessage<'_>,
        ahead: &VecDeque<Polled<'_>>,
    ) -> Result<(), Self::Error> {
        let _ = ahead;
        self.handle(msg)
    }
    /// Called when `partition`'s input has been read to its end, every record polled before
    /// it handed over and no rebalance since: the partition is caught up until its next
    /// record comes.
    fn reached_end(&self, partition: i32) -> Result<(), Self::Error> {
        let _ = partition;
        Ok(())
    }
    /// Called when a poll found nothing. Not the same as caught up (see the module's notes):
    /// a service that acts on being caught up keeps track of [`Service::reached_end`].
    fn on_idle(&self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Whether the batch processed so far should be checkpointed now.
    fn checkpoint_due(&self, idle: bool) -> bool;
    /// Makes everything processed so far durable, input position included; it may still be
    /// under way when this returns ([`Service::settle`] waits for it).
    fn checkpoint(&self, consumer: &ServiceConsumer<Self>) -> Result<(), Self::Error>;
    /// Carries a checkpoint still under way forward without waiting: called at every turn of
    /// the loop, after the checkpoint (if one was due) and before the next poll.
    fn tick(&self, _consumer: &ServiceConsumer<Self>) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Waits until every checkpoint begun is done: before partitions are released, and on
    /// shutdown.
    fn settle(&self, _consumer: &ServiceConsumer<Self>) -> Result<(), Self::Error> {
        Ok(())
    }
    /// A failure parked by a callback, as this service's error.
    fn fatal(message: String) -> Self::Error;
    /// After the loop ended on an error, before it returns (the scorer aborts an open
    /// transaction here).
    fn abandon(&self) {}
}

/// Failures a service could not return where they happened.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// The first failure not yet reported by the loop.
    fatal: Option<String>,
    /// The service failed: nothing may be checkpointed any more.
    failed: bool,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        lock_unpoisoned(&self.inner)
    }

    /// Records a failure of `service`; the loop ends on it at its next turn.
    pub fn fail(&self, service: &str, message: String) {
        tracing::error!(error = %message, "{service} failed");
        let mut f = self.lock();
        f.failed = true;
        f.fatal.get_or_insert(message);
    }

    /// Whether the service failed (then nothing may be checkpointed).
    pub fn failed(&self) -> bool {
        self.lock().failed
    }

    fn set_failed(&self) {
        self.lock().failed = true;
    }

    fn take_fatal(&self) -> Option<String> {
        self.lock().fatal.take()
    }
}

/// Consumes until `shutdown`, then finishes the batch, checkpoints and leaves the group.
/// Blocking: run it on its own thread.
pub fn run<S: Service>(
    service: &S,
    consumer: &ServiceConsumer<S>,
    shutdown: &Shutdown,
) -> Result<(), S::Error> {
    service.health().set_consuming(true);
    let result = (|| {
        // The record to hand over next, then those polled after it.
        let mut window: VecDeque<Polled<'_>> = VecDeque::with_capacity(S::LOOKAHEAD + 1);
        while !shutdown.is_triggered() {
            let mut idle = false;
            if window.is_empty() {
                match poll_one::<S>(consumer, POLL)? {
                    Some(item) => window.push_back(item),
                    None => idle = true,
                }
            }
            // Records fetched already, without waiting, up to the service's lookahead.
            while !window.is_empty() && window.len() <= S::LOOKAHEAD {
                match poll_one::<S>(consumer, Duration::ZERO)? {
                    Some(item) => window.push_back(item),
                    None => break,
                }
            }
            // A failure a rebalance callback parked during these polls ends the loop before
            // any record polled with it is handed over.
            if let Some(f) = service.faults().take_fatal() {
                return Err(S::fatal(f));
            }
            // A stale item (`Polled::current`) is dropped: a record polled before a lost
            // assignment is read again in order; after an end polled before a rebalance, the
            // next end comes after the partition's next records, or its next assignment.
            let ctx = consumer.context();
            match window.pop_front() {
                Some(item) if !item.current(ctx.rebalances(), ctx.losses()) => {}
                Some(Polled::Record { message, .. })
                    if kafka::check_resumed(consumer, &message)? =>
                {
                    service.handle_ahead(&message, &window)?;
                }
                Some(Polled::End { partition, .. }) => service.reached_end(partition)?,
                Some(Polled::Record { .. }) | None => {}
            }
            if idle {
                service.on_idle()?;
            }
            if service.checkpoint_due(idle) {
                service.checkpoint(consumer)?;
            }
            // After the checkpoint, before the next poll: a handoff batch that began a wait
            // in it pauses the partitions now, so no record polled meanwhile joins it.
            service.tick(consumer)?;
            kafka::rewind_unanswered(consumer)?;
        }
        service.checkpoint(consumer)?;
        service.settle(consumer)
    })();
    service.health().set_consuming(false);
    match &result {
        Ok(()) => {
            kafka::leave_group(consumer, kafka::LEAVE_TIMEOUT);
            tracing::info!("{} stopped cleanly", S::NAME);
        }
        Err(e) => {
            service.faults().set_failed();
            tracing::error!(error = %e, "{} stopping on error", S::NAME);
            service.abandon();
        }
    }
    result
}

/// One poll: a record, or a partition's end with the count of rebalances it belongs to; `None`
/// when it found nothing or a consumer error (logged; a fatal one ends the loop).
fn poll_one<'c, S: Service>(
    consumer: &'c ServiceConsumer<S>,
    timeout: Duration,
) -> Result<Option<Polled<'c>>, S::Error> {
    Ok(match consumer.poll(timeout) {
        Some(Ok(message)) => Some(Polled::Record {
            message,
            losses: consumer.context().losses(),
        }),
        Some(Err(KafkaError::PartitionEOF(partition))) => Some(Polled::End {
            partition,
            rebalances: consumer.context().rebalances(),
        }),
        Some(Err(e)) => {
            consumer_error::<S>(consumer, &e)?;
            None
        }
        None => None,
    })
}

/// A consumer error: a fatal one (another instance took this one's `group.instance.id`) ends
/// the consumer for good, so the service stops rather than sit idle and look ready; any other
/// is logged.
fn consumer_error<S: Service>(
    consumer: &ServiceConsumer<S>,
    e: &rdkafka::error::KafkaError,
) -> Result<(), S::Error> {
    if let Some((code, reason)) = consumer.client().fatal_error() {
        return Err(S::fatal(fatal_message(code, &reason)));
    }
    tracing::warn!(error = %e, "consumer error");
    Ok(())
}

/// The error a fatal consumer error ends the service with.
fn fatal_message(code: rdkafka::types::RDKafkaErrorCode, reason: &str) -> String {
    if code == rdkafka::types::RDKafkaErrorCode::FencedInstanceId {
        format!(
            "another instance joined the consumer group with this instance's kafka.group.instance.id ({reason}): every instance needs its own id"
        )
    } else {
        format!("fatal consumer error: {code}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Message;
    use rdkafka::Offset;
    use std::collections::BTreeMap;
    use std::sync::mpsc;
    use std::sync::Arc;

    /// A service looking ahead as the scorer does, which handles every record of a partition it
    /// owns and resumes a partition at its beginning (it never checkpoints). At `pause_at` it
    /// tells the test and waits for its word.
    struct Recorder {
        health: Arc<Health>,
        faults: Faults,
        owned: Mutex<bool>,
        handled: Mutex<Vec<i64>>,
        pause_at: i64,
        at_pause: Mutex<mpsc::Sender<()>>,
        resume: Mutex<mpsc::Receiver<()>>,
    }

    impl PartitionOwner for Recorder {
        fn assigned(&self, _c: &ServiceConsumer<Self>, partitions: &[i32]) -> Vec<(i32, Offset)> {
            *lock_unpoisoned(&self.owned) = true;
            partitions.iter().map(|&p| (p, Offset::Beginning)).collect()
        }

        /// A revocation is marked in the handled offsets: -1 when lost, -2 otherwise. After a
        /// lost one the partition is taken as owned again at once: the race where the
        /// assignment comes back before the records held ahead are handed over.
        fn revoked(&self, _c: &ServiceConsumer<Self>, _partitions: &[i32], lost: bool) {
            lock_unpoisoned(&self.handled).push(if lost { -1 } else { -2 });
            if !lost {
                *lock_unpoisoned(&self.owned) = false;
            }
        }
    }

    impl Service for Recorder {
        type Error = KafkaError;
        const NAME: &'static str = "recorder";
        const LOOKAHEAD: usize = 3;

        fn health(&self) -> &Health {
            &self.health
        }

        fn faults(&self) -> &Faults {
            &self.faults
        }

        fn handle(&self, msg: &BorrowedMessage<'_>) -> Result<(), KafkaError> {
            if !*lock_unpoisoned(&self.owned) {
                return Ok(());
            }
            lock_unpoisoned(&self.handled).push(msg.offset());
            if lock_unpoisoned(&self.handled).len() == 1 + self.pause_at as usize {
                let _ = lock_unpoisoned(&self.at_pause).send(());
                let _ = lock_unpoisoned(&self.resume).recv();
            }
            Ok(())
        }

        fn checkpoint_due(&self, _idle: bool) -> bool {
            false
        }

        fn checkpoint(&self, _consumer: &ServiceConsumer<Self>) -> Result<(), KafkaError> {
            Ok(())
        }

        fn fatal(message: String) -> KafkaError {
            panic!("unexpected fatal failure: {message}")
        }
    }

    /// A member the group expired (its session ran out while it was busy, and another member
    /// may own its partitions now) is told its revocation is of a lost assignment, so it does
    /// not checkpoint (review of 2026-12-07's fourth session); a member leaving on its own is
    /// not. Records held ahead when the assignment is lost are of partitions dropped without a
    /// checkpoint: if they come back, their records are read again from the last checkpoint,
    /// and a held record handed over first would be processed ahead of those before it.
    #[test]
    fn a_lost_assignment_is_revoked_as_lost_and_its_held_records_are_read_again_in_order() {
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        const RECORDS: i64 = 60;
        const PAUSE_AT: i64 = 20;
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("held-in", 1, 1).expect("topic");
        let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .expect("producer");
        for i in 0..RECORDS {
            let payload = i.to_string();
            producer
                .send(
                    BaseRecord::<(), _>::to("held-in")
                        .partition(0)
                        .payload(&payload),
                )
                .expect("queued");
        }
        producer.flush(Duration::from_secs(30)).expect("flushed");
        let (at_pause_tx, at_pause) = mpsc::channel();
        let (resume, resume_rx) = mpsc::channel();
        let shutdown = Shutdown::new();
        let service = Arc::new(Recorder {
            health: Health::new(),
            faults: Faults::default(),
            owned: Mutex::new(false),
            handled: Mutex::new(Vec::new()),
            pause_at: PAUSE_AT,
            at_pause: Mutex::new(at_pause_tx),
            resume: Mutex::new(resume_rx),
        });
        let props = BTreeMap::from([
            ("bootstrap.servers".to_string(), mock.bootstrap_servers()),
            ("heartbeat.interval.ms".to_string(), "100".to_string()),
        ]);
        let consumer =
            kafka::group_consumer(&props, "held-group", "held-in", service.clone(), false)
                .expect("group consumer");
        let looping = {
            let service = service.clone();
            let shutdown = shutdown.clone();
            std::thread::spawn(move || {
                run(&*service, &consumer, &shutdown).map_err(|e| e.to_string())
            })
        };
        at_pause
            .recv_timeout(Duration::from_secs(60))
            .expect("the loop reached the pause");
        // The coordinator expires the member while it is busy with record PAUSE_AT.
        mock.request_errors(
            RDKafkaApiKey::Heartbeat,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID],
        );
        std::thread::sleep(Duration::from_secs(1));
        resume.send(()).expect("resume");
        // Every record read again after the loss, in order from the first.
        let read_again = || {
            let handled = lock_unpoisoned(&service.handled);
            let lost = handled.iter().position(|&o| o == -1);
            lost.map(|at| (handled[..at].to_vec(), handled[at + 1..].to_vec()))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while read_again().is_none_or(|(_, after)| after.len() < RECORDS as usize) {
            assert!(
                std::time::Instant::now() < deadline,
                "the records were not all read again: {:?}",
                lock_unpoisoned(&service.handled)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        shutdown.trigger();
        looping.join().expect("loop thread").expect("loop");
        let (before, after) = read_again().expect("the loss was seen");
        let up_to = before.len() as i64;
        assert!(up_to > PAUSE_AT, "{before:?}");
        assert_eq!(before, (0..up_to).collect::<Vec<_>>());
        assert_eq!(
            after,
            (0..RECORDS).chain([-2]).collect::<Vec<_>>(),
            "after the loss, then the revocation of a clean stop"
        );
    }

    #[test]
    fn the_first_failure_is_reported_once_and_failed_sticks() {
        let f = Faults::default();
        assert!(!f.failed());
        assert_eq!(f.take_fatal(), None);
        f.fail("scorer", "restoring partition 1: boom".into());
        f.fail("scorer", "a later one".into());
        assert!(f.failed());
        assert_eq!(
            f.take_fatal().as_deref(),
            Some("restoring partition 1: boom")
        );
        assert_eq!(f.take_fatal(), None);
        assert!(f.failed(), "failed stays set after the report");
    }
}
