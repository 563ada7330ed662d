//! A damaged local store is detected, never trusted: after a clean stop, the store is damaged on
//! disk the ways an operator or a bad disk does it, and the next restore must not be warm, must
//! restore every user, and must count the failure. Against the embedded mock broker (or tansu).
//!
//! The store is fjall's: `state.fjall/partitions/<name>/` per partition (`p<N>` per Kafka
//! partition, `meta` for every partition's changelog position), each with a `manifest` file
//! without which fjall treats the partition as never created and deletes it; and
//! `state.fjall/journals/`. Removing a partition's directory or its manifest loses its keys
//! while its meta survives: the old code then restored it warm with nothing in it.

mod common;

use common::{metric_with, Broker, Names, TempDir};
use leadscore::ops::telemetry;
use leadscore::runtime::changelog::{Changelog, Restored};
use leadscore::runtime::kafka::{self, ServiceProducer};
use leadscore::runtime::keyed_state::KeyedState;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

const PARTITIONS: i32 = 3;
/// Users changed per partition and batch; each batch also adds new ones.
const USERS: usize = 40;
const BATCHES: usize = 4;

/// The failure counter is process-wide: the tests that read it run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `leadscore_store_verify_failures_total{reason}` now.
fn failures(reason: &str) -> f64 {
    let text = telemetry::render(&telemetry::prometheus());
    metric_with(
        &text,
        telemetry::STORE_VERIFY_FAILURES,
        &format!("reason=\"{reason}\""),
    )
    .unwrap_or(0.0)
}

fn utf8(b: &[u8]) -> Result<String, std::str::Utf8Error> {
    std::str::from_utf8(b).map(str::to_string)
}

/// A broker with a compacted changelog topic, and a service's state directories.
struct Setup {
    _broker: Broker,
    topic: String,
    /// A second changelog topic, empty: the first one deleted and created again.
    recreated: String,
    props: BTreeMap<String, String>,
    dir: TempDir,
}

/// What one restore of every partition gave: the partitions restored warm, and every user with
/// its value.
#[derive(Default)]
struct Restore {
    warm: BTreeSet<i32>,
    users: BTreeMap<String, String>,
}

impl Setup {
    fn new(test: &str) -> Setup {
        let names = Names::new(test);
        let recreated = format!("{}-recreated", names.changelog);
        let broker = Broker::start(&[
            (&names.changelog, PARTITIONS, true),
            (&recreated, PARTITIONS, true),
        ]);
        let props = broker.properties();
        Setup {
            _broker: broker,
            topic: names.changelog,
            recreated,
            props,
            dir: TempDir::new(test),
        }
    }

    /// The state directory of instance `name`.
    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The fjall directory of instance `name`.
    fn fjall(&self, name: &str) -> PathBuf {
        self.state(name).join("state.fjall")
    }

    /// Instance `name` runs as a service does: restores every partition, then checkpoints
    /// `BATCHES` batches (each changes some users and adds others), then stops cleanly.
    /// `round` keeps the users and values of one run apart from another's. Returns what it
    /// restored.
    fn run(&self, name: &str, round: usize) -> Restore {
        let changelog = Changelog::open(&self.state(name), &self.topic, &self.props).expect("open");
        let producer = ServiceProducer::new(&self.props, None).expect("producer");
        let consumer = kafka::reader(&self.props).expect("consumer");
        let mut restore = Restore::default();
        let mut states: Vec<KeyedState<String>> = Vec::new();
        for p in 0..PARTITIONS {
            let r = changelog.restore(p).expect("restore");
            restore.add(p, &r);
            states.push(KeyedState::restore(r, utf8).expect("utf8"));
        }
        for batch in 0..BATCHES {
            let mut parts = Vec::new();
            for (p, st) in states.iter_mut().enumerate() {
                let first = st.next_offset().unwrap_or(0);
                for i in 0..USERS {
                    st.processing(first + i as i64);
                    let user = format!("user-{p}-{}", (round * BATCHES + batch) * USERS / 2 + i);
                    st.update_if_changed(&user, |v| *v = format!("round {round} batch {batch}"));
                }
                parts.extend(st.checkpoint(p as i32, Vec::new(), |v| v.as_bytes().to_vec()));
            }
            changelog
                .commit(&producer, &consumer, "input", parts, &[], None)
                .expect("checkpoint");
        }
        restore
    }

    /// A crash in the middle of a checkpoint: user records reach the changelog, the checkpoint
    /// record after them never does.
    fn orphans(&self, records: &[(i32, &str, &str)]) {
        let producer = ServiceProducer::new(&self.props, None).expect("producer");
        for (p, key, value) in records {
            let record = kafka::Record {
                topic: &self.topic,
                partition: Some(*p),
                key: Some(key.as_bytes()),
                payload: Some(value.as_bytes()),
                headers: None,
            };
            producer
                .send(record, leadscore::runtime::kafka::Delivery::Output)
                .expect("send");
        }
        producer.flush().expect("flush");
    }

    /// Instance `name` restores every partition and stops.
    fn restore(&self, name: &str) -> Restore {
        let changelog = Changelog::open(&self.state(name), &self.topic, &self.props).expect("open");
        restore_all(&changelog)
    }

    /// Every user as the changelog holds it, restored into a scratch directory.
    fn changelog_users(&self) -> BTreeMap<String, String> {
        let scratch = TempDir::new("store-damage-scratch");
        let changelog = Changelog::open(scratch.path(), &self.topic, &self.props).expect("open");
        let restore = restore_all(&changelog);
        assert!(restore.warm.is_empty());
        restore.users
    }
}

impl Restore {
    fn add(&mut self, p: i32, r: &Restored) {
        if r.warm {
            self.warm.insert(p);
        }
        for (k, v) in &r.entries {
            self.users.insert(k.clone(), utf8(v).expect("utf8"));
        }
    }
}

fn restore_all(changelog: &Changelog) -> Restore {
    let mut restore = Restore::default();
    for p in 0..PARTITIONS {
        restore.add(p, &changelog.restore(p).expect("restore"));
    }
    restore
}

fn all_partitions() -> BTreeSet<i32> {
    (0..PARTITIONS).collect()
}

/// Instance a's store, after a clean stop, damaged by `damage` (given its fjall directory) in
/// partition(s) `damaged`: the restore is cold there and warm elsewhere, every user is back,
/// `reason` counted once per damaged partition, and the restart after is warm.
fn assert_recovers(test: &str, damaged: &[i32], reason: &str, damage: impl FnOnce(&Path)) {
    let _serial = serial();
    let setup = Setup::new(test);
    setup.run("a", 0);
    let before = failures(reason);
    damage(&setup.fjall("a"));
    let want = setup.changelog_users();
    let restore = setup.restore("a");
    let warm: BTreeSet<i32> = all_partitions()
        .into_iter()
        .filter(|p| !damaged.contains(p))
        .collect();
    assert_eq!(
        restore.warm, warm,
        "damaged partitions {damaged:?} restored warm"
    );
    assert_eq!(restore.users.len(), want.len(), "users lost");
    assert_eq!(restore.users, want);
    assert_eq!(
        failures(reason) - before,
        damaged.len() as f64,
        "{reason} counted"
    );

    // The store was rebuilt: the next restart is warm everywhere, with the same users.
    let again = setup.restore("a");
    assert_eq!(again.warm, all_partitions());
    assert_eq!(again.users, want);
}

/// Removes `path` (a file or a directory), which must exist.
fn remove(path: &Path) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if meta.is_dir() {
        std::fs::remove_dir_all(path).expect("remove dir");
    } else {
        std::fs::remove_file(path).expect("remove file");
    }
}

#[test]
fn an_undamaged_warm_restart_stays_warm_even_after_another_owner_moved_on() {
    let _serial = serial();
    let setup = Setup::new("store-intact");
    setup.run("a", 0);
    let before = all_failures();

    // Instance b owns the partitions for a while (a cold start from the changelog), so a's
    // copy is behind: its warm restart verifies against the checkpoints b wrote.
    let b = setup.run("b", 1);
    assert!(b.warm.is_empty());
    let want = setup.changelog_users();
    assert!(want.len() > (PARTITIONS as usize) * USERS * BATCHES / 2);
    let restore = setup.restore("a");
    assert_eq!(restore.warm, all_partitions());
    assert_eq!(restore.users, want);

    // And up to date, it stays warm.
    let again = setup.restore("a");
    assert_eq!(again.warm, all_partitions());
    assert_eq!(again.users, want);
    let after = all_failures();
    assert_eq!(after, before, "nothing counted as a failure");
}

/// The failures counted so far, every reason together.
fn all_failures() -> f64 {
    leadscore::runtime::changelog::VerifyFailure::REASONS
        .iter()
        .map(|r| failures(r))
        .sum()
}

#[test]
fn a_removed_partition_directory_is_not_trusted() {
    assert_recovers("store-rm-partition", &[1], "key_count", |fjall| {
        remove(&fjall.join("partitions/p1"))
    });
}

#[test]
fn removed_manifest_files_are_not_trusted() {
    // The manifest of every Kafka partition's fjall partition: fjall deletes those partitions
    // at open, while the meta partition still says where each copy stood.
    assert_recovers("store-rm-manifests", &[0, 1, 2], "key_count", |fjall| {
        for p in 0..PARTITIONS {
            remove(&fjall.join(format!("partitions/p{p}/manifest")));
        }
    });
}

#[test]
fn keys_whose_meta_was_lost_are_not_trusted() {
    assert_recovers("store-rm-meta", &[0, 1, 2], "no_meta", |fjall| {
        remove(&fjall.join("partitions/meta/manifest"))
    });
}

#[test]
fn records_of_an_incomplete_checkpoint_do_not_make_a_later_restart_distrust_its_copy() {
    let _serial = serial();
    let setup = Setup::new("store-orphans");
    setup.run("a", 0);
    let before = all_failures();
    // An owner crashes mid-checkpoint: a changed user and a new one reach the changelog only.
    setup.orphans(&[
        (0, "user-0-0", "never checkpointed"),
        (1, "user-1-new", "never checkpointed"),
    ]);
    // The next owner drops them (they follow the last checkpoint), then checkpoints users of
    // its own, not these two.
    setup.run("c", 1);
    let c = setup.restore("c");
    assert_eq!(c.users["user-0-0"], "round 0 batch 0");
    assert!(!c.users.contains_key("user-1-new"));

    // a's copy predates all of it: its restart reads the dropped records and then c's
    // checkpoints, which must have superseded them, or the state would differ from c's.
    let a = setup.restore("a");
    assert_eq!(a.warm, all_partitions(), "a's copy distrusted");
    assert_eq!(a.users, c.users);
    assert_eq!(setup.changelog_users(), c.users);
    let after = all_failures();
    assert_eq!(after, before, "nothing counted as a failure");
}

/// A changelog that ends before the local copy's checkpoint (deleted and created again,
/// truncated, or another cluster's) while the local copy holds state: the restore refuses,
/// naming the partition, the offsets and what to do, and keeps the copy. Before, it trusted
/// Kafka: the copy was cleared and the partition restored empty, and the scorer went on from
/// its group's committed input offsets with every user's score gone (an outside check: 53
/// of 1,080 users ended with other scores).
#[test]
fn a_changelog_that_ends_before_the_local_copy_is_refused_and_the_copy_kept() {
    let _serial = serial();
    let setup = Setup::new("store-ahead");
    setup.run("a", 0);
    let want = setup.changelog_users();
    let before = failures("ahead");
    let changelog =
        Changelog::open(&setup.state("a"), &setup.recreated, &setup.props).expect("open");
    for p in 0..PARTITIONS {
        let err = match changelog.restore(p) {
            Ok(r) => panic!("partition {p} restored {} users", r.entries.len()),
            Err(e) => e.to_string(),
        };
        for needle in [
            setup.recreated.as_str(),
            &format!("partition {p}"),
            "local copy",
            "leadscore reset",
        ] {
            assert!(err.contains(needle), "{needle:?} not in: {err}");
        }
    }
    assert_eq!(failures("ahead") - before, PARTITIONS as f64);
    drop(changelog);
    // The copy is still there: with its own changelog the restart is warm, every user back.
    let again = setup.restore("a");
    assert_eq!(again.warm, all_partitions());
    assert_eq!(again.users, want);
}

/// A damaged data block of one partition's table file: fjall reads blocks only when the keys
/// are, so the store opens, loading the partition fails, and so did clearing it before its
/// restore from the changelog (it reads the keys to delete them): every restore of the
/// partition failed, on every start (an outside review). Now the partition is restored from
/// the changelog and the store is marked for rebuilding: the next start restores everything
/// from the changelog once, the one after is warm.
#[test]
fn a_damaged_data_block_is_restored_from_the_changelog_and_the_store_rebuilt() {
    let _serial = serial();
    let setup = Setup::new("store-bad-block");
    setup.run("a", 0);
    {
        let store = leadscore::runtime::store::LocalStore::open(&setup.state("a")).expect("open");
        store.flush_to_tables().expect("flush");
    }
    let mut damaged = 0;
    let mut stack = vec![setup.fjall("a").join("partitions/p1")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.parent().is_some_and(|p| p.ends_with("segments")) {
                let mut bytes = std::fs::read(&path).expect("read");
                let at = bytes.len() / 4;
                let end = (at + 64).min(bytes.len());
                bytes[at..end].fill(0xa5);
                std::fs::write(&path, bytes).expect("write");
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0, "no table file of p1 written");
    let before = failures("unreadable");
    let want = setup.changelog_users();
    let restore = setup.restore("a");
    assert_eq!(restore.warm, BTreeSet::from([0, 2]), "p1 restored warm");
    assert_eq!(restore.users, want);
    assert_eq!(failures("unreadable") - before, 1.0, "counted once");
    // Rebuilt at the next start: everything from the changelog once, then warm again.
    let rebuilt = setup.restore("a");
    assert!(rebuilt.warm.is_empty(), "{:?} warm", rebuilt.warm);
    assert_eq!(rebuilt.users, want);
    let again = setup.restore("a");
    assert_eq!(again.warm, all_partitions());
    assert_eq!(again.users, want);
}
