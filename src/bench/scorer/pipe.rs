//! The pipe baseline: the scorer's physical limit on this broker. A plain consume, produce,
//! commit loop with no decoding and no engine, which produces exactly the records the scorer
//! produced in the same run (its score changes and changelog records, read back and replayed
//! byte for byte), at the scorer's cadence and with the services' own producer
//! ([`ServiceProducer`]: the runtime's configuration, gzip, idempotence or transactions). Only
//! what the scorer adds to this loop (decode, scoring, encoding, the local store) separates the
//! two rates.

use super::*;
use crate::config::Guarantee;
use crate::runtime::changelog::{drive_in_order, CHECKPOINTS_IN_FLIGHT};
use crate::runtime::kafka::{self, Delivery, Record, ServiceProducer};
use rdkafka::message::OwnedHeaders;
use std::collections::VecDeque;

/// One record as the scorer produced it.
pub(super) struct Replayed {
    key: Vec<u8>,
    /// `None`: a tombstone.
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    timestamp: Option<i64>,
}

impl Replayed {
    fn bytes(&self) -> usize {
        self.key.len() + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// What the scorer produced while it scored the input once, per partition, in order.
pub(super) struct Captured {
    pub(super) output: Vec<Vec<Replayed>>,
    pub(super) changelog: Vec<Vec<Replayed>>,
}

impl Captured {
    pub(super) fn records(&self) -> usize {
        self.output
            .iter()
            .chain(&self.changelog)
            .map(Vec::len)
            .sum()
    }

    pub(super) fn bytes(&self) -> usize {
        self.output
            .iter()
            .chain(&self.changelog)
            .flatten()
            .map(Replayed::bytes)
            .sum()
    }
}

/// Where each topic stood before and after a scorer run: the records it produced lie between.
#[derive(Clone, Debug, Default)]
pub(super) struct Produced {
    pub(super) output: (Vec<i64>, Vec<i64>),
    pub(super) changelog: (Vec<i64>, Vec<i64>),
}

/// Reads back what a scorer run produced (`produced`, on `output` and `changelog`).
pub(super) fn capture(
    bootstrap: &str,
    output: &str,
    changelog: &str,
    produced: &Produced,
) -> Result<Captured> {
    Ok(Captured {
        output: read_range(bootstrap, output, &produced.output.0, &produced.output.1)?,
        changelog: read_range(
            bootstrap,
            changelog,
            &produced.changelog.0,
            &produced.changelog.1,
        )?,
    })
}

/// The committed records of each partition of `topic` from `from` up to `to` (exclusive).
/// Bounded by the run: what one scorer run produced for `--events`.
fn read_range(
    bootstrap: &str,
    topic: &str,
    from: &[i64],
    to: &[i64],
) -> Result<Vec<Vec<Replayed>>> {
    // librdkafka reads read_committed by default: a transactional range's control records take
    // offsets and are never returned.
    let c = reader(bootstrap, "leadscore-bench-capture")?;
    let offsets: Vec<Offset> = from.iter().map(|o| Offset::Offset(*o)).collect();
    assign(&c, topic, &offsets)?;
    let mut out: Vec<Vec<Replayed>> = from.iter().map(|_| Vec::new()).collect();
    let mut done: Vec<bool> = from.iter().zip(to).map(|(f, t)| f >= t).collect();
    let mut first: Vec<Option<i64>> = vec![None; from.len()];
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done.iter().all(|d| *d) {
        if Instant::now() > deadline {
            bail!("reading back {topic} took over two minutes");
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                let (Some(end), Some(records)) = (to.get(p), out.get_mut(p)) else {
                    continue;
                };
                if m.offset() < *end {
                    first[p].get_or_insert(m.offset());
                    records.push(Replayed {
                        key: m.key().unwrap_or_default().to_vec(),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers: m.headers().map(|h| h.detach()),
                        timestamp: m.timestamp().to_millis(),
                    });
                }
                if m.offset() >= end - 1 {
                    done[p] = true;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(d) = done.get_mut(p as usize) {
                    *d = true;
                }
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading back {topic}")),
            None => {}
        }
    }
    // The first record of each range is data (control records only close transactions): a
    // range starting elsewhere lost its head to the mock's retention, and the replay would be
    // short.
    for (p, (f, t)) in from.iter().zip(to).enumerate() {
        if f < t && first[p] != Some(*f) {
            bail!(
                "{topic} [{p}] starts at {:?}, not {f}: the mock broker's retention dropped \
                 records before they were read back (use fewer --events)",
                first[p]
            );
        }
    }
    Ok(out)
}

/// One run of the pipe: its topics and group, the scorer settings it copies the cadence,
/// guarantee and client properties from, and the records to replay.
pub(super) struct PipeRun<'a> {
    pub(super) settings: &'a Settings,
    pub(super) output: String,
    pub(super) changelog: String,
    pub(super) group: String,
    /// Input records per partition.
    pub(super) input: Vec<i64>,
    pub(super) captured: &'a Captured,
}

/// The pipe's rate, measured from outside exactly as the scorer's: from its first output's
/// arrival until its group's committed offsets cover the input.
pub(super) fn pipe_rate(bootstrap: &str, run: &PipeRun<'_>) -> Result<f64> {
    let parts = run.input.len() as i32;
    let n: i64 = run.input.iter().sum();
    let input = &run.settings.topics.input;
    let first = FirstRecord::watch(bootstrap, &run.output, parts)?;
    let offsets = CommittedOffsets::new(bootstrap, &run.group, input, parts)?;
    let stop = Arc::new(AtomicBool::new(false));
    let result = std::thread::scope(|s| {
        let stopped = stop.clone();
        let pipe = s.spawn(move || pipe_loop(run, &stopped));
        let waited = offsets.wait_until(n, Duration::from_secs(120), || {
            if pipe.is_finished() {
                bail!("the pipe stopped before its offsets were committed");
            }
            Ok(())
        });
        let caught_up = now_millis();
        stop.store(true, Ordering::Relaxed);
        let ran = pipe.join().map_err(|_| anyhow!("the pipe panicked"))?;
        ran.and(waited).map(|()| caught_up)
    });
    let caught_up = result?;
    let started = first.finish()?;
    Ok(n as f64 / ((caught_up - started).max(1) as f64 / 1000.0))
}

/// Consumes the input once, replaying the captured records in the scorer's proportion, and
/// checkpoints as the scorer does; then waits for `stop` (a consumer closed at once might lose
/// its last asynchronous commit).
fn pipe_loop(run: &PipeRun<'_>, stop: &AtomicBool) -> Result<()> {
    let s = &run.settings.scorer;
    let props = &run.settings.kafka.properties;
    let input = run.settings.topics.input.as_str();
    let eos = s.guarantee == Guarantee::ExactlyOnce;
    let txn_id = format!("{}-{}", run.group, std::process::id());
    let producer = ServiceProducer::new(props, eos.then_some(txn_id.as_str()))
        .context("creating the pipe's producer")?;
    let mut cfg = kafka::consumer_config(props);
    cfg.set("group.id", &run.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = cfg.create().context("creating the pipe's consumer")?;
    let parts = run.input.len();
    assign(&consumer, input, &vec![Offset::Beginning; parts])?;
    let n: i64 = run.input.iter().sum();
    let mut consumed = vec![0i64; parts];
    let mut next: Vec<Option<i64>> = vec![None; parts];
    let (mut out_sent, mut log_sent) = (vec![0usize; parts], vec![0usize; parts]);
    let (mut total, mut pending) = (0i64, 0usize);
    let mut batch_started: Option<Instant> = None;
    let mut in_txn = false;
    let mut in_flight: VecDeque<PipeCommit> = VecDeque::new();
    // The share of `records` due once `done` of `of` input records are consumed.
    let due = |records: usize, done: i64, of: i64| (records as i64 * done / of.max(1)) as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while total < n || pending > 0 {
        if Instant::now() > deadline {
            bail!("the pipe consumed {total} of {n} records in two minutes");
        }
        // The scorer's loop: a poll of 50 ms, idle when it returns nothing.
        let idle = match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                if p >= parts || next[p].is_some_and(|o| m.offset() < o) {
                    continue;
                }
                if eos && !in_txn {
                    producer.inner().begin_transaction()?;
                    in_txn = true;
                }
                if pending == 0 {
                    batch_started = Some(Instant::now());
                }
                pending += 1;
                total += 1;
                consumed[p] += 1;
                next[p] = Some(m.offset() + 1);
                let records = &run.captured.output[p];
                let to = due(records.len(), consumed[p], run.input[p]);
                for r in &records[out_sent[p]..to] {
                    send(&producer, &run.output, None, r)?;
                }
                out_sent[p] = to;
                false
            }
            Some(Err(e)) => return Err(e).context("the pipe's consumer"),
            None => true,
        };
        drive(&mut in_flight, &producer, &consumer, run, usize::MAX)?;
        let checkpoint = pending > 0
            && (pending >= s.batch_max_events
                || idle
                || total == n
                || batch_started.is_some_and(|b| b.elapsed() >= s.batch_max_wait));
        if !checkpoint {
            continue;
        }
        // The scorer's checkpoint: outputs durable, then each partition's changelog records,
        // then (exactly-once) the offsets in the transaction, then the group offsets.
        // At-least-once it waits for the checkpoint before, then goes on while this one's
        // writes are under way, as the scorer does.
        let log: Vec<(usize, usize)> = run
            .captured
            .changelog
            .iter()
            .enumerate()
            .map(|(p, records)| {
                let to = due(records.len(), consumed[p], run.input[p]);
                let from = std::mem::replace(&mut log_sent[p], to);
                (from, to)
            })
            .collect();
        let offsets: Vec<(i32, i64)> = next
            .iter()
            .enumerate()
            .filter_map(|(p, o)| o.map(|o| (p as i32, o)))
            .collect();
        if eos {
            send_changelog(&producer, run, &log)?;
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &offsets {
                tpl.add_partition_offset(input, *p, Offset::Offset(*o))?;
            }
            let gm = consumer
                .group_metadata()
                .ok_or_else(|| anyhow!("the pipe's consumer has no group metadata"))?;
            producer
                .inner()
                .send_offsets_to_transaction(&tpl, &gm, kafka::SETUP_TIMEOUT)?;
            producer.inner().commit_transaction(kafka::SETUP_TIMEOUT)?;
            producer.take_failures()?;
            in_txn = false;
            kafka::commit_async(&consumer, input, &offsets);
        } else {
            drive(
                &mut in_flight,
                &producer,
                &consumer,
                run,
                CHECKPOINTS_IN_FLIGHT - 1,
            )?;
            in_flight.push_back(PipeCommit {
                outputs: Some(producer.seal()?),
                changelog: None,
                log,
                offsets,
            });
            drive(&mut in_flight, &producer, &consumer, run, usize::MAX)?;
        }
        pending = 0;
        batch_started = None;
    }
    drive(&mut in_flight, &producer, &consumer, run, 0)?;
    while !stop.load(Ordering::Relaxed) {
        let _ = consumer.poll(Duration::from_millis(20));
    }
    Ok(())
}

/// An at-least-once checkpoint of the pipe under way, as the scorer's
/// ([`crate::runtime::changelog::Changelog::advance`]): outputs delivered, then the changelog
/// records sent and delivered, then the group offsets.
struct PipeCommit {
    outputs: Option<kafka::Epoch>,
    changelog: Option<kafka::Epoch>,
    /// Per partition, the range of its captured changelog records this checkpoint sends.
    log: Vec<(usize, usize)>,
    offsets: Vec<(i32, i64)>,
}

impl PipeCommit {
    /// Takes the checkpoint as far as deliveries allow (with `wait`, to its end); `true` when
    /// it is done.
    fn advance(
        &mut self,
        producer: &ServiceProducer,
        consumer: &BaseConsumer,
        run: &PipeRun<'_>,
        wait: bool,
    ) -> Result<bool> {
        if let Some(epoch) = self.outputs {
            if !producer.delivered(epoch, wait)? {
                return Ok(false);
            }
            self.outputs = None;
            send_changelog(producer, run, &self.log)?;
            self.changelog = Some(producer.seal()?);
        }
        if let Some(epoch) = self.changelog {
            if !producer.delivered(epoch, wait)? {
                return Ok(false);
            }
            self.changelog = None;
            kafka::commit_async(consumer, &run.settings.topics.input, &self.offsets);
        }
        Ok(true)
    }
}

/// [`drive_in_order`] over the pipe's checkpoints.
fn drive(
    in_flight: &mut VecDeque<PipeCommit>,
    producer: &ServiceProducer,
    consumer: &BaseConsumer,
    run: &PipeRun<'_>,
    keep: usize,
) -> Result<()> {
    drive_in_order(in_flight, keep, |c, wait| {
        c.advance(producer, consumer, run, wait)
    })
}

/// Sends each partition's captured changelog records in `log`'s ranges.
fn send_changelog(
    producer: &ServiceProducer,
    run: &PipeRun<'_>,
    log: &[(usize, usize)],
) -> Result<()> {
    for (p, (records, &(from, to))) in run.captured.changelog.iter().zip(log).enumerate() {
        for r in &records[from..to] {
            send(producer, &run.changelog, Some(p as i32), r)?;
        }
    }
    Ok(())
}

/// Produces one replayed record as the scorer did: score changes by key, changelog records to
/// their partition.
fn send(
    producer: &ServiceProducer,
    topic: &str,
    partition: Option<i32>,
    r: &Replayed,
) -> Result<()> {
    producer.send_at(
        Record {
            topic,
            partition,
            key: Some(&r.key),
            payload: r.payload.as_deref(),
            headers: r.headers.clone(),
        },
        r.timestamp,
        Delivery::Output,
    )?;
    Ok(())
}
