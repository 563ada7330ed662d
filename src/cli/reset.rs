//! `leadscore reset`: start a service over from nothing, the supported way.
//!
//! Offsets reset with Kafka's tools (`kafka-consumer-groups --reset-offsets`) are ignored: a
//! service resumes each partition from the checkpoint record in its own changelog, and reads the
//! group's committed offset only for a partition that was never checkpointed. So a reset writes
//! to the changelog instead, per partition: a tombstone for every key it holds, then a
//! checkpoint record saying "no state, resume the input at its beginning" (the input partition's
//! low watermark). A restore then yields an empty state and restarts the input there, for any
//! instance, with or without a local copy (a copy's keys are all among the tombstoned ones, so
//! it verifies against the new checkpoint). Then the local store under the service's state
//! directory is deleted, and the group's committed offsets (they would not be read anyway)
//! where the broker answered the group check: librdkafka aborts the process when asked to
//! delete a group on a broker without DeleteGroups, such as the dev broker.
//!
//! Why not delete and recreate the changelog topic: deletion is asynchronous on Kafka (an
//! immediate re-creation can fail while the old topic is being removed), a recreated topic
//! loses settings and ACLs made outside leadscore, and the embedded dev broker (librdkafka's
//! mock cluster) implements neither DeleteTopics nor CreateTopics. Records written to the
//! existing topic work on every broker; compaction later drops the tombstoned keys.
//!
//! It refuses while the consumer group has members: a running instance would checkpoint its
//! in-memory state over the reset. Kafka lists a group's members (ListGroups, DescribeGroups);
//! a broker that cannot (the dev broker) makes the check fail, and only `--skip-group-check`
//! (with every instance stopped) goes on then.

use crate::config::Settings;
use crate::ops::telemetry;
use crate::runtime::changelog::{Checkpoint, StateDigest, CHECKPOINT_KEY};
use crate::runtime::kafka::{self, Delivery, Record, ServiceProducer, SETUP_TIMEOUT};
use crate::runtime::store::LocalStore;
use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The local store's directory under a state directory (`runtime::store`), and the file fjall
/// keeps in every database it made: what a directory must hold to be deleted as a store.
const STORE_DIR: &str = "state.fjall";
const FJALL_MARKER: &str = "version";

/// Why the committed offsets may stay.
const NOT_READ: &str = "they are not read while a changelog partition has a checkpoint";

/// Which service to start over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Scorer,
    Handoff,
}

/// `leadscore reset`.
#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// Settings file (TOML) of the service to reset; environment variables
    /// LEADSCORE__SECTION__KEY override it, as for the service.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The service to start over: its consumer group, changelog topic and state directory.
    #[arg(long, value_enum, default_value = "scorer")]
    service: Which,
    /// Do it. Without --yes, print what would be done and exit with status 1.
    #[arg(long)]
    yes: bool,
    /// Do not ask the broker whether the group has members: for brokers that cannot list a
    /// group's members (the embedded dev broker). Only with every instance stopped.
    #[arg(long)]
    skip_group_check: bool,
}

/// What a reset works on, from the settings.
#[derive(Debug)]
struct Target {
    service: &'static str,
    group: String,
    changelog: String,
    /// The topic the service consumes, where the input starts over.
    input: String,
    state_dir: PathBuf,
}

impl Target {
    fn of(settings: &Settings, which: Which) -> Target {
        match which {
            Which::Scorer => Target {
                service: "scorer",
                group: settings.scorer.group_id.clone(),
                changelog: settings.topics.changelog.clone(),
                input: settings.topics.input.clone(),
                state_dir: settings.scorer.state_dir.clone(),
            },
            Which::Handoff => Target {
                service: "handoff",
                group: settings.handoff.group_id.clone(),
                changelog: settings.topics.handoff_changelog.clone(),
                input: settings.topics.output.clone(),
                state_dir: settings.handoff.state_dir.clone(),
            },
        }
    }
}

pub fn run(args: ResetArgs) -> Result<ExitCode> {
    let settings = Settings::load(args.config.as_deref())?;
    // Only the clients' own warnings and errors: the command prints its steps itself.
    telemetry::init_logging(false, "warn");
    let t = Target::of(&settings, args.service);
    let props = &settings.kafka.properties;

    // Everything that can refuse comes first, before anything is changed.
    let store = local_store(&t.state_dir)?;
    let probe: BaseConsumer = client(props, DefaultConsumerContext).context("kafka client")?;
    // No broker at all is said as such, before the group check: its failure would advise
    // skipping the check, which is the wrong cure for a wrong address (an outside check).
    if let Err(e) = probe.fetch_metadata(None, BROKER_PROBE) {
        let bootstrap = kafka::bootstrap_servers(props);
        bail!(
            "no Kafka broker answered at {bootstrap:?} within {} s ({e}): check \
             kafka.bootstrap_servers and that the brokers run; nothing was changed",
            BROKER_PROBE.as_secs()
        );
    }
    let group_check = if args.skip_group_check {
        "skipped (--skip-group-check)".to_string()
    } else {
        check_no_members(&probe, &t.group)?
    };
    // The state directory's lock, held to the end: a service still using it (the group check
    // skipped, or not seeing it) refuses the reset instead of losing its store under it.
    let _lock = match &store {
        Some(_) => Some(crate::runtime::changelog::lock_state_dir(&t.state_dir)?),
        None => None,
    };
    let partitions = partition_count(&probe, &t.changelog)?;

    println!(
        "leadscore reset --service {}: group {:?}, changelog {:?}, input {:?}",
        t.service, t.group, t.changelog, t.input
    );
    println!("  group members: {group_check}");
    match partitions {
        Some(n) => println!(
            "  changelog: tombstone every key of its {n} partition(s), then checkpoint each to start over at the beginning of {:?}",
            t.input
        ),
        None => println!("  changelog: {:?} does not exist, nothing to clear", t.changelog),
    }
    if args.skip_group_check {
        println!(
            "  committed offsets of group {:?}: leave ({NOT_READ})",
            t.group
        );
    } else {
        println!("  committed offsets of group {:?}: delete", t.group);
    }
    match &store {
        Some(path) => println!("  local store: delete {}", path.display()),
        None => println!(
            "  local store: none under {}, nothing to delete",
            t.state_dir.display()
        ),
    }
    if !args.yes {
        println!("nothing changed: run again with --yes to do this");
        return Ok(ExitCode::from(1));
    }

    if let Some(n) = partitions {
        let producer = ServiceProducer::new(props, None).context("kafka producer")?;
        let reader = kafka::reader(props).context("kafka reader")?;
        for p in 0..n {
            let (low, _) = probe
                .fetch_watermarks(&t.input, p, SETUP_TIMEOUT)
                .with_context(|| format!("watermarks of {:?} partition {p}", t.input))?;
            let keys = changelog_keys(&reader, &t.changelog, p)?;
            start_over(&producer, &t.changelog, p, &keys, low)?;
            println!(
                "  changelog partition {p}: {} key(s) tombstoned, input resumes at offset {low}",
                keys.len()
            );
        }
    }
    if let Some(path) = &store {
        LocalStore::destroy(&t.state_dir)?;
        println!("  local store: deleted {}", path.display());
    }
    // Last, as the one step that is not needed: the checkpoints written above take precedence.
    let offsets = if args.skip_group_check {
        // librdkafka (2.12) aborts the process when asked to delete a group on a broker without
        // DeleteGroups; a broker that answered ListGroups/DescribeGroups above has it.
        format!("left in place (not asked without the group check); {NOT_READ}")
    } else {
        delete_offsets(props, &t.group)
    };
    println!("  committed offsets: {offsets}");
    println!(
        "done: the next {} starts over from an empty state",
        t.service
    );
    Ok(ExitCode::SUCCESS)
}

/// A client from the `[kafka]` settings; an error never shows a credential.
fn client<C, T>(props: &BTreeMap<String, String>, context: C) -> Result<T, KafkaError>
where
    C: rdkafka::client::ClientContext,
    T: rdkafka::config::FromClientConfigAndContext<C>,
{
    let cfg = kafka::client_config(props);
    cfg.create_with_context(context)
        .map_err(|e| kafka::redact_error(e, &cfg))
}

/// How long `reset` waits for any broker to answer before saying none does.
const BROKER_PROBE: Duration = Duration::from_secs(10);

/// The store under `state_dir` if there is one to delete; an error if the path holds
/// something that is not a leadscore store, which a reset must not touch.
fn local_store(state_dir: &Path) -> Result<Option<PathBuf>> {
    let path = state_dir.join(STORE_DIR);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
        Ok(m) if m.is_dir() && path.join(FJALL_MARKER).is_file() => Ok(Some(path)),
        Ok(_) => bail!(
            "{} does not look like a leadscore store (a directory with a {FJALL_MARKER:?} file): \
             not deleting it; check the state_dir setting",
            path.display()
        ),
    }
}

/// "none" when group `group` has no members; an error naming them when it has, or saying why
/// the broker could not tell.
fn check_no_members<C: ConsumerContext>(probe: &BaseConsumer<C>, group: &str) -> Result<String> {
    let list = probe
        .fetch_group_list(Some(group), SETUP_TIMEOUT)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot list the members of consumer group {group:?}: {e}. The broker may not \
             implement ListGroups/DescribeGroups (the embedded dev broker does not): stop every \
             instance of the group, then run again with --skip-group-check"
            )
        })?;
    let members: Vec<String> = list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members())
        .map(|m| format!("{} ({}@{})", m.id(), m.client_id(), m.client_host()))
        .collect();
    if !members.is_empty() {
        bail!(
            "consumer group {group:?} has {} active member(s): {}. Stop every instance (scale \
             to 0) before a reset: a running one would checkpoint its state over it",
            members.len(),
            members.join(", ")
        );
    }
    Ok("none".to_string())
}

/// The partition count of `topic`, `None` when it does not exist.
fn partition_count<C: ConsumerContext>(
    probe: &BaseConsumer<C>,
    topic: &str,
) -> Result<Option<i32>> {
    let md = probe
        .fetch_metadata(Some(topic), SETUP_TIMEOUT)
        .with_context(|| format!("metadata of {topic:?}"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// Every key of changelog partition `p` but the checkpoint key, read to the partition's end.
/// Bounded by the partition's distinct keys (its users or leads), which the service holds in
/// memory anyway.
fn changelog_keys<C: ConsumerContext>(
    reader: &BaseConsumer<C>,
    topic: &str,
    p: i32,
) -> Result<BTreeSet<Vec<u8>>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    reader.assign(&tpl)?;
    let mut keys = BTreeSet::new();
    loop {
        match reader.poll(Duration::from_secs(10)) {
            // The end is the partition-EOF event, as for a restore.
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => {
                return Err(e).with_context(|| format!("reading {topic:?} partition {p}"))
            }
            Some(Ok(m)) => {
                if let Some(k) = m.key().filter(|k| *k != CHECKPOINT_KEY) {
                    keys.insert(k.to_vec());
                }
            }
        }
    }
    Ok(keys)
}

/// Tombstones `keys` on changelog partition `p`, then writes the checkpoint that vouches for
/// them: an empty state (no keys, digest 0), the input resuming at `input_from`, no partition
/// clock. A reset cut short before the checkpoint leaves tombstones a restore drops as an
/// incomplete checkpoint: the state is as before, and a second reset finishes the job.
fn start_over(
    producer: &ServiceProducer,
    topic: &str,
    p: i32,
    keys: &BTreeSet<Vec<u8>>,
    input_from: i64,
) -> Result<()> {
    for key in keys {
        producer.send(tombstone(topic, p, key), Delivery::Output)?;
    }
    let checkpoint = Checkpoint {
        next_input_offset: input_from,
        state: Some(StateDigest::default()),
        app: Vec::new(),
    }
    .encode();
    let record = Record {
        topic,
        partition: Some(p),
        key: Some(CHECKPOINT_KEY),
        payload: Some(&checkpoint),
        headers: None,
    };
    producer.send(record, Delivery::Checkpoint)?;
    producer
        .flush()
        .with_context(|| format!("writing to {topic:?} partition {p}"))?;
    Ok(())
}

fn tombstone<'a>(topic: &'a str, p: i32, key: &'a [u8]) -> Record<'a> {
    Record {
        topic,
        partition: Some(p),
        key: Some(key),
        payload: None,
        headers: None,
    }
}

/// Deletes the group (its committed offsets) where the broker allows it; says what happened.
/// Not an error when it cannot: the checkpoints just written take precedence.
fn delete_offsets(props: &BTreeMap<String, String>, group: &str) -> String {
    let admin: AdminClient<DefaultClientContext> = match client(props, DefaultClientContext) {
        Ok(a) => a,
        Err(e) => return format!("not deleted ({e}); {NOT_READ}"),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return format!("not deleted ({e}); {NOT_READ}"),
    };
    let opts = AdminOptions::new().operation_timeout(Some(SETUP_TIMEOUT));
    match rt.block_on(admin.delete_groups(&[group], &opts)) {
        Ok(results) => match results.into_iter().next() {
            Some(Ok(_)) => "deleted".to_string(),
            Some(Err((_, rdkafka::types::RDKafkaErrorCode::GroupIdNotFound))) => {
                "none to delete".to_string()
            }
            Some(Err((_, code))) => format!("not deleted ({code}); {NOT_READ}"),
            None => format!("not deleted (no answer); {NOT_READ}"),
        },
        Err(e) => format!("not deleted ({e}); {NOT_READ}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("leadscore-reset-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    #[test]
    fn deletes_only_what_looks_like_a_leadscore_store() {
        let dir = scratch("store");
        assert_eq!(local_store(&dir.join("missing")).expect("no dir"), None);
        assert_eq!(local_store(&dir).expect("no store"), None);

        let store = LocalStore::open(&dir).expect("open");
        drop(store);
        assert_eq!(local_store(&dir).expect("store"), Some(dir.join(STORE_DIR)));

        let other = scratch("not-a-store");
        std::fs::create_dir_all(other.join(STORE_DIR)).expect("dir");
        std::fs::write(other.join(STORE_DIR).join("precious.txt"), b"x").expect("file");
        let err = local_store(&other).expect_err("not a store").to_string();
        assert!(
            err.contains("does not look like a leadscore store"),
            "{err}"
        );
        assert!(err.contains(&other.display().to_string()), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
