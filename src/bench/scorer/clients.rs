//! The benchmark's own Kafka clients: producing the input, plain reads for the baselines,
//! and watching the scorer from outside (its first output, its committed offsets, latencies).

use super::*;
use crate::runtime::sync::lock_unpoisoned;

pub(super) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// A producer as an application's would be: keyed by user id with Kafka's default partitioner
/// (what the scorer's co-partitioning assumes). lz4, as the services use: uncompressed JSON
/// would overflow the mock's per-partition retention at the default size.
pub(super) fn producer(bootstrap: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    client(bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()
        .context("creating the input producer")
}

/// Queues a record, waiting while the local queue is full.
pub(super) fn send<K, P>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut rec: BaseRecord<'_, K, P>,
) -> Result<()>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e).context("producing input"),
        }
    }
}

/// A consumer outside any group (the id is required but nothing is committed).
pub(super) fn reader(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    client(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // Reaching the end is an empty fetch, which the broker holds this long.
        .set("fetch.wait.max.ms", MOCK_FETCH_WAIT_MS)
        .create()
        .context("creating a consumer")
}

pub(super) fn watermarks(bootstrap: &str, topic: &str, parts: i32) -> Result<Vec<(i64, i64)>> {
    let c = reader(bootstrap, "leadscore-bench-watermarks")?;
    (0..parts)
        .map(|p| {
            c.fetch_watermarks(topic, p, CALL_TIMEOUT)
                .with_context(|| format!("watermarks of {topic} [{p}]"))
        })
        .collect()
}

pub(super) fn high_watermarks(bootstrap: &str, topic: &str, parts: i32) -> Result<Vec<i64>> {
    Ok(watermarks(bootstrap, topic, parts)?
        .into_iter()
        .map(|w| w.1)
        .collect())
}

pub(super) fn low_watermarks(bootstrap: &str, topic: &str, parts: i32) -> Result<Vec<i64>> {
    Ok(watermarks(bootstrap, topic, parts)?
        .into_iter()
        .map(|w| w.0)
        .collect())
}

/// Assigns every partition of `topic` from `from` (per partition).
pub(super) fn assign(c: &BaseConsumer, topic: &str, from: &[Offset]) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in from.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, *o)?;
    }
    c.assign(&tpl).context("assigning partitions")
}

/// Reads the input once, only reading, and returns the records/s. It also checks that the
/// input is complete: the scorer's numbers mean nothing if the mock's retention (or a failed
/// delivery) lost some of it.
pub(super) fn baseline(bootstrap: &str, topic: &str, parts: i32, n: usize) -> Result<f64> {
    let marks = watermarks(bootstrap, topic, parts)?;
    let low: i64 = marks.iter().map(|w| w.0).sum();
    let high: i64 = marks.iter().map(|w| w.1).sum();
    if low > 0 {
        bail!(
            "the mock broker dropped {low} input records (it keeps about 5 MiB per partition): \
             use fewer --events or more partitions"
        );
    }
    if high != n as i64 {
        bail!("the input topic holds {high} records, {n} were produced");
    }
    plain_read_rate(bootstrap, topic, parts)
}

/// Reads every partition of `topic` from the beginning, touching each payload and nothing more,
/// and returns the records/s: what the broker and librdkafka allow, whatever the application
/// does. The clock stops at the last record, not at the end-of-partition events (an empty
/// fetch the broker holds for fetch.wait.max.ms).
pub(super) fn plain_read_rate(bootstrap: &str, topic: &str, parts: i32) -> Result<f64> {
    let expected: i64 = watermarks(bootstrap, topic, parts)?
        .iter()
        .map(|(lo, hi)| hi - lo)
        .sum();
    let c = reader(bootstrap, "leadscore-bench-baseline")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let started = Instant::now();
    assign(&c, topic, &vec![Offset::Beginning; parts as usize])?;
    let (mut records, mut bytes) = (0i64, 0usize);
    while records < expected {
        if Instant::now() > deadline {
            bail!("read {records} of {expected} records of {topic} in two minutes");
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload_len();
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
        }
    }
    let elapsed = started.elapsed();
    black_box(bytes);
    Ok(records as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// Watches a topic from its beginning for the first record of each partition and keeps the
/// earliest arrival: about when the scorer produced its first score change (a fetch wait of
/// [`MOCK_FETCH_WAIT_MS`] later), the start of the throughput measurement. A partition
/// assignment is not visible from outside the scorer; its first output is. (Not the record's
/// CreateTime: a score change is stamped with its event time, docs/formats.md.)
pub(super) struct FirstRecord {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<i64>>>,
}

impl FirstRecord {
    pub(super) fn watch(bootstrap: &str, topic: &str, parts: i32) -> Result<FirstRecord> {
        let c: BaseConsumer = client(bootstrap)
            .set("group.id", "leadscore-bench-first-change")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .context("creating the output watcher")?;
        assign(&c, topic, &vec![Offset::Beginning; parts as usize])?;
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let mut first: HashMap<i32, i64> = HashMap::new();
            // Stops reading once every partition showed its first record: the rest of the
            // run's CPU belongs to the scorer.
            while first.len() < parts as usize && !stop.load(Ordering::Relaxed) {
                match c.poll(Duration::from_millis(20)) {
                    Some(Ok(m)) => {
                        first.entry(m.partition()).or_insert_with(now_millis);
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "output watcher"),
                    None => {}
                }
            }
            first.into_values().min()
        });
        Ok(FirstRecord {
            done,
            thread: Some(thread),
        })
    }

    /// The earliest first record's arrival (epoch ms).
    pub(super) fn finish(mut self) -> Result<i64> {
        // Output is flushed before offsets are committed, so the records are there by now; a
        // partition may have none, hence the bounded wait.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.done.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("the output watcher already finished"))?;
        thread
            .join()
            .map_err(|_| anyhow!("the output watcher panicked"))?
            .ok_or_else(|| anyhow!("the scorer caught up without publishing a score change"))
    }
}

impl Drop for FirstRecord {
    /// A failed run must not leave the watcher polling a broker that is going away.
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The scorer's thread; stopped (and its error surfaced) by [`RunningScorer::stop`], or on
/// drop when a measurement fails first.
pub(super) struct RunningScorer {
    pub(super) thread: Option<JoinHandle<Result<(), ScorerError>>>,
    pub(super) shutdown: Shutdown,
}

impl RunningScorer {
    /// An error if the scorer already stopped on its own (it only stops on errors).
    pub(super) fn check(&mut self) -> Result<()> {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            self.stop()?;
            bail!("the scorer stopped unexpectedly");
        }
        Ok(())
    }

    pub(super) fn stop(&mut self) -> Result<()> {
        self.shutdown.trigger();
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the scorer thread panicked"))?
                .context("the scorer failed"),
            None => Ok(()),
        }
    }
}

impl Drop for RunningScorer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Reads the scorer group's committed input offsets, as lag monitoring would.
pub(super) struct CommittedOffsets {
    consumer: BaseConsumer,
    topic: String,
    parts: i32,
}

impl CommittedOffsets {
    pub(super) fn new(
        bootstrap: &str,
        group: &str,
        topic: &str,
        parts: i32,
    ) -> Result<CommittedOffsets> {
        // Same group id, never subscribed: it reads the group's offsets without joining it.
        let consumer = client(bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the offsets reader")?;
        Ok(CommittedOffsets {
            consumer,
            topic: topic.to_string(),
            parts,
        })
    }

    pub(super) fn sum(&self) -> Result<i64> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.parts {
            tpl.add_partition(&self.topic, p);
        }
        let got = self.consumer.committed_offsets(tpl, CALL_TIMEOUT)?;
        Ok(got
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum())
    }

    /// Waits until the committed offsets sum to `target`.
    pub(super) fn wait_for(
        &self,
        target: i64,
        timeout: Duration,
        scorer: &mut RunningScorer,
    ) -> Result<()> {
        self.wait_until(target, timeout, || scorer.check())
    }

    /// Waits until the committed offsets sum to `target`, while `alive` says the committing
    /// client is still running.
    pub(super) fn wait_until(
        &self,
        target: i64,
        timeout: Duration,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = 0;
        loop {
            alive()?;
            match self.sum() {
                Ok(s) if s >= target => return Ok(()),
                Ok(s) => last = s,
                // The coordinator may not know the group yet.
                Err(e) => tracing::debug!(error = %e, "committed offsets"),
            }
            if Instant::now() > deadline {
                bail!(
                    "{target} input records were not committed within {} s (last: {last})",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(COMMIT_POLL);
        }
    }
}

/// Produces `events` at [`LATENCY_RATE_PER_SEC`], each stamped with its produce time (its
/// CreateTime), and returns that time per `event_id` (the first, for ids sent twice).
pub(super) fn paced(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    events: &[Event],
) -> Result<HashMap<String, i64>> {
    let mut produced_at = HashMap::with_capacity(events.len());
    let started = Instant::now();
    for (i, e) in events.iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / LATENCY_RATE_PER_SEC);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let payload = codec::encode_event(Format::Json, e);
        let at = now_millis();
        send(
            producer,
            BaseRecord::to(topic)
                .key(&*e.user_id)
                .payload(&payload)
                .timestamp(at),
        )?;
        if let Some(id) = &e.event_id {
            produced_at.entry(id.to_string()).or_insert(at);
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the latency events")?;
    Ok(produced_at)
}

/// Watches the score changes published from `from` on, as they arrive, and records when each
/// arrived, by the source event's id. Arrival, not the record's CreateTime: a score change is
/// stamped with its event time (docs/formats.md), so the latency is measured as a consumer of
/// the changes sees it, a fetch wait of [`MOCK_FETCH_WAIT_MS`] included.
pub(super) struct Arrivals {
    done: Arc<AtomicBool>,
    /// The next offset the watcher will read, per partition.
    next: Arc<Mutex<Vec<i64>>>,
    thread: Option<JoinHandle<HashMap<String, i64>>>,
}

impl Arrivals {
    pub(super) fn watch(bootstrap: &str, topic: &str, from: &[i64]) -> Result<Arrivals> {
        let c: BaseConsumer = client(bootstrap)
            .set("group.id", "leadscore-bench-latency")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", MOCK_FETCH_WAIT_MS)
            .create()
            .context("creating the latency watcher")?;
        let offsets: Vec<Offset> = from.iter().map(|o| Offset::Offset(*o)).collect();
        assign(&c, topic, &offsets)?;
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let next = Arc::new(Mutex::new(from.to_vec()));
        let read = next.clone();
        let thread = std::thread::spawn(move || {
            let mut arrived = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                match c.poll(Duration::from_millis(20)) {
                    Some(Ok(m)) => {
                        let at = now_millis();
                        if let Some(n) = lock_unpoisoned(&read).get_mut(m.partition() as usize) {
                            *n = m.offset() + 1;
                        }
                        // Inactivity changes have no source event; events without an id are
                        // named by their Kafka position, which this side does not track.
                        let Some(payload) = m.payload() else { continue };
                        let Ok(change) = codec::decode_change(Format::Json, payload) else {
                            continue;
                        };
                        if let Some(id) = change.reason.source_event_id {
                            arrived.entry(id.to_string()).or_insert(at);
                        }
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "latency watcher"),
                    None => {}
                }
            }
            arrived
        });
        Ok(Arrivals {
            done,
            next,
            thread: Some(thread),
        })
    }

    /// Arrival minus produce time of every change whose source event is in `produced_at`, once
    /// the watcher has read up to `until` (the output's high watermarks, per partition, taken
    /// after the scorer committed the last input: its output is flushed before that).
    pub(super) fn finish(
        mut self,
        until: &[i64],
        produced_at: &HashMap<String, i64>,
    ) -> Result<Vec<i64>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let next = lock_unpoisoned(&self.next).clone();
            if next.iter().zip(until).all(|(n, u)| n >= u) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the latency watcher read to {next:?} of {until:?} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.done.store(true, Ordering::Relaxed);
        let arrived = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("the latency watcher already finished"))?
            .join()
            .map_err(|_| anyhow!("the latency watcher panicked"))?;
        Ok(produced_at
            .iter()
            .filter_map(|(id, at)| arrived.get(id).map(|arrived| arrived - at))
            .collect())
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
