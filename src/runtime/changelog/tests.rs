use super::*;

#[test]
fn checkpoints_of_both_versions_decode() {
    let cp = Checkpoint {
        next_input_offset: 42,
        state: Some(StateDigest { keys: 3, sum: 7 }),
        app: b"clock".to_vec(),
    };
    let bytes = cp.encode();
    assert_eq!(bytes[0], 2);
    assert_eq!(Checkpoint::decode(&bytes).expect("v2"), cp);

    // A version 1 record, as the previous release wrote it.
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&42i64.to_be_bytes());
    v1.extend_from_slice(b"clock");
    let old = Checkpoint::decode(&v1).expect("v1");
    assert_eq!(
        old,
        Checkpoint {
            state: None,
            ..cp.clone()
        }
    );
    assert_eq!(
        old.encode(),
        v1,
        "nothing to vouch for: written as version 1"
    );

    for bad in [&b""[..], &[2, 0, 0][..], &bytes[..20], &[3; 40][..]] {
        assert!(matches!(
            Checkpoint::decode(bad),
            Err(ChangelogError::BadCheckpoint)
        ));
    }
}

#[test]
fn the_entry_hash_is_fixed_and_separates_key_from_value() {
    // Part of the stored format: these values must never change (an independent
    // implementation of the same steps gave them).
    assert_eq!(entry_hash("user-1", b"state"), 0x1b62_2583_a4ed_8af3);
    assert_eq!(entry_hash("", b""), 0x4d94_28e3_c1cc_ccdc);
    assert_ne!(entry_hash("ab", b"c"), entry_hash("a", b"bc"));
    assert_ne!(entry_hash("a", b"\0"), entry_hash("a", b""));
    assert_ne!(entry_hash("k", b"12345678"), entry_hash("k", b"12345679"));
}

#[test]
fn the_digest_adds_removes_and_replaces_in_any_order() {
    let e = |k: &str, v: &str| entry_hash(k, v.as_bytes());
    let mut d = StateDigest::default();
    d.insert(e("b", "2"));
    d.insert(e("a", "1"));
    d.insert(e("c", "3"));
    d.replace(e("a", "1"), e("a", "9"));
    d.remove(e("c", "3"));
    assert_eq!(
        d,
        StateDigest::of([("a", b"9".as_slice()), ("b", b"2".as_slice())])
    );
    assert_eq!(d.keys, 2);
}

fn replay_of(entries: &[(&str, &str)], checkpoint: Option<StateDigest>) -> Replay {
    replay_keeping(entries, checkpoint, false)
}

/// A replay of `entries`; `keep_applied` as a warm restore (true) or a cold one sets it.
fn replay_keeping(
    entries: &[(&str, &str)],
    checkpoint: Option<StateDigest>,
    keep_applied: bool,
) -> Replay {
    let mut r = Replay {
        keep_applied,
        ..Replay::default()
    };
    for (k, v) in entries {
        r.apply(k.to_string(), Some(v.as_bytes().to_vec()));
    }
    r.checkpoint = Some(Checkpoint {
        state: checkpoint,
        ..Checkpoint::default()
    });
    r.checkpoint_offset = Some(7);
    r
}

#[test]
fn a_replay_verifies_against_the_last_checkpoint_read() {
    let pairs = [("a", "1"), ("b", "2")];
    let digest = StateDigest::of(pairs.iter().map(|(k, v)| (*k, v.as_bytes())));
    assert_eq!(replay_of(&pairs, Some(digest)).verify(), Ok(()));

    let reason = |r: Replay| r.verify().expect_err("mismatch").0;
    assert_eq!(
        reason(replay_of(&pairs[..1], Some(digest))),
        VerifyFailure::KeyCount
    );
    assert_eq!(
        reason(replay_of(&[("a", "1"), ("b", "3")], Some(digest))),
        VerifyFailure::Digest
    );
    assert_eq!(reason(replay_of(&pairs, None)), VerifyFailure::Unverifiable);
    let mut none_read = replay_of(&pairs, Some(digest));
    none_read.checkpoint_offset = None;
    assert_eq!(reason(none_read), VerifyFailure::NoCheckpoint);

    // Changes and deletes keep the digest of what is held, whether or not the changes are
    // kept for the local store (a warm restore keeps them, a cold one writes `entries`).
    for keep in [true, false] {
        let mut r = replay_keeping(&[("a", "0"), ("c", "3")], Some(digest), keep);
        r.apply("a".into(), Some(b"1".to_vec()));
        r.apply("b".into(), Some(b"2".to_vec()));
        r.apply("c".into(), None);
        r.apply("never".into(), None);
        assert_eq!(r.verify(), Ok(()), "keep_applied = {keep}");
        assert_eq!(r.applied.len(), if keep { 6 } else { 0 });
        let mut held: Vec<_> = r.entries.iter().collect();
        held.sort();
        assert_eq!(
            held,
            [
                (&"a".to_string(), &b"1".to_vec()),
                (&"b".to_string(), &b"2".to_vec())
            ]
        );
    }
}

#[test]
fn failure_reasons_are_a_bounded_set() {
    let all = [
        VerifyFailure::Unreadable,
        VerifyFailure::NoMeta,
        VerifyFailure::Ahead,
        VerifyFailure::NoCheckpoint,
        VerifyFailure::Unverifiable,
        VerifyFailure::KeyCount,
        VerifyFailure::Digest,
    ];
    let labels: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels, VerifyFailure::REASONS);
}

mod local_writer {
    use super::super::local_writer::{gather, Job, LocalWriter, Merged, Shared};
    use super::*;
    use crate::dev::scratch::ScratchDir;

    /// A writer on a new store, the store, and the directory that holds it.
    fn writer(name: &str) -> (LocalWriter, Arc<LocalStore>, ScratchDir) {
        let dir = ScratchDir::new(name).expect("scratch dir");
        let store = Arc::new(LocalStore::open(dir.path()).expect("open"));
        let writer = LocalWriter::start(store.clone()).expect("start");
        (writer, store, dir)
    }

    fn rows(r: &[(&str, Option<&[u8]>)]) -> Vec<(String, Option<Vec<u8>>)> {
        r.iter()
            .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
            .collect()
    }

    fn meta(offset: i64) -> PartitionMeta {
        PartitionMeta {
            changelog_offset: offset,
            app: b"clock".to_vec(),
        }
    }

    #[test]
    fn queued_checkpoints_are_written_in_order_before_the_store_is_read() {
        let (writer, store, _dir) = writer("local-writer-order");
        writer
            .write(
                0,
                rows(&[("ann", Some(b"1")), ("bob", Some(b"1"))]),
                meta(4),
            )
            .expect("queue");
        writer
            .write(0, rows(&[("ann", Some(b"2")), ("bob", None)]), meta(9))
            .expect("queue");
        writer.drain().expect("drained");
        let (m, entries) = store.load_partition(0).expect("load");
        assert_eq!(m, Some(meta(9)), "the last checkpoint's position");
        assert_eq!(entries, vec![("ann".to_string(), b"2".to_vec())]);
    }

    /// Checkpoints queued together become one write per partition: each partition's changes
    /// in the order queued (the store keeps a key's last value) with its last checkpoint's
    /// position, whichever partitions came between.
    #[test]
    fn checkpoints_queued_together_are_merged_per_partition() {
        let (jobs, queue) = std::sync::mpsc::sync_channel(8);
        let job = |partition, r: &[(&str, Option<&[u8]>)], offset| Job {
            partition,
            changes: rows(r),
            meta: meta(offset),
        };
        jobs.send(job(1, &[("cat", Some(b"1"))], 3))
            .expect("queued");
        jobs.send(job(0, &[("ann", Some(b"2")), ("bob", None)], 9))
            .expect("queued");
        jobs.send(job(1, &[("cat", None), ("dan", Some(b"1"))], 5))
            .expect("queued");
        drop(jobs);
        let shared = Shared::default();
        let (merged, n) = gather(
            job(0, &[("ann", Some(b"1")), ("bob", Some(b"1"))], 4),
            &queue,
            &shared,
        );
        assert_eq!(n, 4);
        let expected: Merged = BTreeMap::from([
            (
                0,
                (
                    rows(&[
                        ("ann", Some(b"1")),
                        ("bob", Some(b"1")),
                        ("ann", Some(b"2")),
                        ("bob", None),
                    ]),
                    meta(9),
                ),
            ),
            (
                1,
                (
                    rows(&[("cat", Some(b"1")), ("cat", None), ("dan", Some(b"1"))]),
                    meta(5),
                ),
            ),
        ]);
        assert_eq!(merged, expected);
    }

    #[test]
    fn a_failed_write_stops_later_writes_and_fails_every_later_call() {
        let (writer, store, _dir) = writer("local-writer-failure");
        // An empty key: the store refuses the whole batch.
        writer
            .write(0, rows(&[("", Some(b"1"))]), meta(4))
            .expect("queued");
        assert!(matches!(writer.drain(), Err(ChangelogError::LocalWrite(_))));
        assert!(matches!(
            writer.write(0, rows(&[("ann", Some(b"1"))]), meta(9)),
            Err(ChangelogError::LocalWrite(_))
        ));
        assert!(matches!(writer.drain(), Err(ChangelogError::LocalWrite(_))));
        let (m, entries) = store.load_partition(0).expect("load");
        assert_eq!((m, entries.len()), (None, 0), "nothing after the failure");
    }
}

/// A mock cluster whose topic `out` lives on broker 2 (the test takes it down) and `later`,
/// `log` (the changelog) and `in` on broker 1; a changelog, a producer and a consumer on it.
/// Fields drop in order: the clients before the cluster they talk to.
struct Rig {
    changelog: Changelog,
    producer: ServiceProducer,
    consumer: BaseConsumer,
    _dir: crate::dev::scratch::ScratchDir,
    mock: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let mock = rdkafka::mocking::MockCluster::new(2).expect("mock cluster");
        for (topic, leader) in [("out", 2), ("later", 1), ("log", 1), ("in", 1)] {
            mock.create_topic(topic, 1, 1).expect("topic");
            mock.partition_leader(topic, 0, Some(leader))
                .expect("leader");
        }
        // A failed test leaves records for the downed broker: they expire instead of holding
        // the producer's drop for librdkafka's default five minutes.
        let props = BTreeMap::from([
            ("bootstrap.servers".to_string(), mock.bootstrap_servers()),
            ("message.timeout.ms".to_string(), "10000".to_string()),
        ]);
        let dir = crate::dev::scratch::ScratchDir::new(name).expect("scratch dir");
        Rig {
            changelog: Changelog::open(dir.path(), "log", &props).expect("changelog"),
            producer: ServiceProducer::new(&props, None).expect("producer"),
            consumer: kafka::consumer_config(&props)
                .set("group.id", name)
                .create()
                .expect("consumer"),
            mock,
            _dir: dir,
        }
    }

    fn send(&self, topic: &str) {
        self.producer
            .send(
                kafka::Record {
                    topic,
                    partition: Some(0),
                    key: Some(b"u"),
                    payload: Some(b"change"),
                    headers: None,
                },
                kafka::Delivery::Output,
            )
            .expect("queued");
    }

    /// A checkpoint of one user's state, to resume at input offset `next`.
    fn begin(&self, next: i64) -> PendingCommit {
        let part = PartitionCheckpoint {
            partition: 0,
            records: vec![("u".to_string(), Some(b"state".to_vec()))],
            checkpoint: Checkpoint {
                next_input_offset: next,
                state: None,
                app: Vec::new(),
            },
        };
        self.changelog
            .begin_commit(&self.producer, "in", vec![part], vec![(0, next)], None)
            .expect("begun")
    }

    fn log_end(&self) -> i64 {
        self.producer
            .inner()
            .client()
            .fetch_watermarks("log", 0, Duration::from_secs(10))
            .expect("watermarks")
            .1
    }
}

/// The checkpoint under way keeps docs/crash-safety.md's order while the service goes on:
/// nothing of it reaches the changelog until the outputs sent before it are delivered, and
/// outputs sent after it (the next batch) are not waited for.
#[test]
fn a_pending_checkpoint_writes_the_changelog_only_after_its_outputs_are_delivered() {
    let rig = Rig::new("pending-commit");
    rig.mock.broker_down(2).expect("down");
    rig.send("out");
    let mut commit = rig.begin(1);
    // The next batch's output, on a broker that answers.
    rig.send("later");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!rig
        .changelog
        .advance(&rig.producer, &rig.consumer, &mut commit, false)
        .expect("no failure"));
    // Time for anything it had sent to arrive.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rig.log_end(),
        0,
        "changelog written before the outputs were delivered"
    );
    rig.mock.broker_up(2).expect("up");
    assert!(rig
        .changelog
        .advance(&rig.producer, &rig.consumer, &mut commit, true)
        .expect("done"));
    // The user's state, then the checkpoint record.
    assert_eq!(rig.log_end(), 2);
    assert_eq!(rig.producer.checkpoint_offset("log", 0), Some(1));
}

/// The time from a batch's first poll is recorded once its checkpoint is done, not when it
/// begins: at-least-once that is after the outputs and the changelog records are delivered.
#[test]
fn poll_to_output_is_timed_when_the_checkpoint_is_done() {
    let rig = Rig::new("poll-to-output");
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let samples = || {
        handle
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("leadscore_poll_to_output_seconds_count "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap_or(0))
    };
    rig.mock.broker_down(2).expect("down");
    rig.send("out");
    let mut commit = rig.begin(1);
    commit.polled = Some(std::time::Instant::now());
    metrics::with_local_recorder(&recorder, || {
        std::thread::sleep(Duration::from_millis(300));
        assert!(!rig
            .changelog
            .advance(&rig.producer, &rig.consumer, &mut commit, false)
            .expect("no failure"));
    });
    assert_eq!(samples(), 0, "timed before the outputs were delivered");
    rig.mock.broker_up(2).expect("up");
    metrics::with_local_recorder(&recorder, || {
        assert!(rig
            .changelog
            .advance(&rig.producer, &rig.consumer, &mut commit, true)
            .expect("done"));
    });
    assert_eq!(samples(), 1);
}

/// Two checkpoints under way: the later one's changelog records wait for the earlier one's,
/// even when its own outputs are delivered first, so checkpoints reach the changelog in order.
#[test]
fn checkpoints_under_way_reach_the_changelog_in_order() {
    let rig = Rig::new("commits-in-order");
    rig.mock.broker_down(2).expect("down");
    rig.send("out");
    let mut in_flight = VecDeque::from([rig.begin(1)]);
    rig.send("later");
    in_flight.push_back(rig.begin(2));
    std::thread::sleep(Duration::from_millis(300));
    rig.changelog
        .drive(&rig.producer, &rig.consumer, &mut in_flight, usize::MAX)
        .expect("no failure");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(in_flight.len(), 2);
    assert_eq!(rig.log_end(), 0, "the later checkpoint went first");
    rig.mock.broker_up(2).expect("up");
    rig.changelog
        .drive(&rig.producer, &rig.consumer, &mut in_flight, 0)
        .expect("done");
    assert!(in_flight.is_empty());
    // Each user's state and checkpoint, the second's last.
    assert_eq!(rig.log_end(), 4);
    assert_eq!(rig.producer.checkpoint_offset("log", 0), Some(3));
}

/// Two processes writing one local store would damage it, and fjall takes no lock: a second
/// open of a state directory in use fails at once, naming it, until the first closes (an
/// outside review).
#[test]
fn a_state_directory_in_use_is_refused_naming_it() {
    let dir = crate::dev::scratch::ScratchDir::new("changelog-lock").expect("scratch");
    let props = BTreeMap::new();
    let first = Changelog::open(dir.path(), "changelog", &props).expect("first open");
    let second = Changelog::open(dir.path(), "changelog", &props);
    match second {
        Err(e @ ChangelogError::StateDirInUse { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a state directory in use was opened twice"),
    }
    drop(first);
    Changelog::open(dir.path(), "changelog", &props).expect("open after the first closed");
}

/// Found by an outside check: with one of two bootstrap brokers unreachable, the restore
/// reader's poll returned a transport error for it, and the restore failed with it, so
/// `score` and `handoff` exited at every start. A transient error is waited out, as the
/// services' own consumer loop does.
#[test]
fn a_restore_waits_out_an_unreachable_bootstrap_broker() {
    let rig = Rig::new("restore-unreachable");
    let mut in_flight = VecDeque::from([rig.begin(7)]);
    rig.changelog
        .drive(&rig.producer, &rig.consumer, &mut in_flight, 0)
        .expect("checkpointed");
    let dir = crate::dev::scratch::ScratchDir::new("restore-unreachable-2").expect("scratch");
    // Slow answers keep the restore reading while the connection to the other one fails.
    for broker in [1, 2] {
        rig.mock
            .broker_round_trip_time(broker, Duration::from_millis(300))
            .expect("round trip");
    }
    let unreachable = format!("{},127.0.0.1:1", rig.mock.bootstrap_servers());
    let props = BTreeMap::from([("bootstrap.servers".to_string(), unreachable)]);
    let other = Changelog::open(dir.path(), "log", &props).expect("changelog");
    let restored = other
        .restore(0)
        .expect("restored despite the unreachable broker");
    assert_eq!(
        restored.entries.get("u").map(Vec::as_slice),
        Some(&b"state"[..])
    );
    assert_eq!(restored.checkpoint.map(|c| c.next_input_offset), Some(7));
}
