//! The consumer loop the scorer and the handoff share: poll a record and hand it to the
//! service, let the service work while the input is idle, checkpoint when its batch is due, and
//! on shutdown finish the batch, checkpoint and leave the group.
//!
//! A service may ask to see a few records ahead ([`Service::LOOKAHEAD`]): the loop then holds
//! up to that many records already fetched (polled without waiting) behind the one it hands
//! over, still one record per turn, in the order polled. Held records are handed over even
//! after a rebalance that ran inside a later poll: the service skips those of partitions it no
//! longer owns and those at or below its position, as it skips any record it should not
//! process. So only a service that never pauses, resumes or seeks its input may look ahead
//! (the scorer; not the handoff). On shutdown or an error the held records are dropped
//! unprocessed, like records not yet fetched.
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

/// What one poll gave the loop, kept in the order polled: a record, or the end of a
/// partition's input (every record of the partition before it polled), with the count of
/// rebalances when it was polled ([`kafka::OwnerContext::rebalances`]).
pub enum Polled<'a> {
    Record(BorrowedMessage<'a>),
    End { partition: i32, rebalances: u64 },
}

impl<'a> Polled<'a> {
    /// The record, if this is one.
    pub fn record(&self) -> Option<&BorrowedMessage<'a>> {
        match self {
            Polled::Record(m) => Some(m),
            Polled::End { .. } => None,
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
            match window.pop_front() {
                Some(Polled::Record(m)) if kafka::check_resumed(consumer, &m)? => {
                    service.handle_ahead(&m, &window)?;
                }
                // An end polled before a rebalance may be of a partition assigned again
                // since, with its records to read again: dropped. The next end comes after
                // the partition's next records, or after its next assignment.
                Some(Polled::End {
                    partition,
                    rebalances,
                }) if rebalances == consumer.context().rebalances() => {
                    service.reached_end(partition)?;
                }
                Some(Polled::Record(_) | Polled::End { .. }) | None => {}
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
        Some(Ok(m)) => Some(Polled::Record(m)),
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
