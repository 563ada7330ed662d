//! Topics the services need: created when missing, checked for co-partitioning.

#[allow(unused_imports)]
use super::*;

/// A topic the service needs, created when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Topic configs set at creation (e.g. `cleanup.policy=compact` for changelogs).
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn new(name: &str, partitions: i32, replication: i32) -> TopicSpec {
        TopicSpec {
            name: name.to_string(),
            partitions,
            replication,
            config: Vec::new(),
        }
    }

    /// A dead-letter topic: accepts records as large as the services produce.
    pub fn dead_letter(name: &str, partitions: i32, replication: i32) -> TopicSpec {
        let mut t = TopicSpec::new(name, partitions, replication);
        t.config
            .push(("max.message.bytes".into(), MAX_RECORD_BYTES.into()));
        t
    }

    /// A compacted changelog topic. It takes records as large as the services produce, as a
    /// dead-letter topic does: a user's state record is bounded (docs/operations.md, "The most
    /// one user can hold"), but the bound is past Kafka's default of 1 MB for rules with many
    /// capped groups or a deep explain history, and a state record the topic refuses would
    /// stop the service at every checkpoint. (A topic created beforehand keeps its own limit.)
    pub fn compacted(name: &str, partitions: i32, replication: i32) -> TopicSpec {
        let mut t = TopicSpec::new(name, partitions, replication);
        t.config.push(("cleanup.policy".into(), "compact".into()));
        t.config
            .push(("max.message.bytes".into(), MAX_RECORD_BYTES.into()));
        t
    }
}

/// The brokers the clients bootstrap from (`bootstrap.servers`), as messages name them.
pub fn bootstrap_servers(properties: &BTreeMap<String, String>) -> String {
    properties
        .get("bootstrap.servers")
        .cloned()
        .unwrap_or_default()
}

/// Creates the missing topics and returns every topic's partition count.
pub async fn ensure_topics(
    properties: &BTreeMap<String, String>,
    specs: &[TopicSpec],
) -> Result<HashMap<String, i32>, KafkaSetupError> {
    let admin: Arc<AdminClient<DefaultClientContext>> =
        Arc::new(create(&client_config(properties), DefaultClientContext)?);
    let bootstrap = bootstrap_servers(properties);
    tracing::info!(%bootstrap, "reading the topics from Kafka");
    let existing = partition_counts_off_worker(&admin, specs, &bootstrap).await?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    if !missing.is_empty() {
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|s| {
                let mut t = NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication),
                );
                for (k, v) in &s.config {
                    t = t.set(k, v);
                }
                t
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(SETUP_TIMEOUT));
        let names: Vec<&str> = missing.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(topics = ?names, "creating the missing topics");
        let results = admin.create_topics(new.iter(), &opts).await.map_err(|e| {
            KafkaSetupError::CreateTopic {
                topic: names.join(", "),
                reason: format!(
                    "the request to create it failed: {e} (topics.* names a topic the \
                     broker does not have and did not create: a typo, or a broker that \
                     refuses to create topics; create it, or fix the name)"
                ),
            }
        })?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(topic = %topic_of(&result), "created topic"),
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(%topic, "topic already exists")
                }
                Err((topic, code)) => {
                    return Err(KafkaSetupError::CreateTopic {
                        topic,
                        reason: code.to_string(),
                    })
                }
            }
        }
    }
    // Metadata can lag creation briefly.
    for _ in 0..50 {
        let counts = partition_counts_off_worker(&admin, specs, &bootstrap).await?;
        if specs.iter().all(|s| counts.contains_key(&s.name)) {
            return Ok(counts);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = partition_counts_off_worker(&admin, specs, &bootstrap).await?;
    match specs.iter().find(|s| !counts.contains_key(&s.name)) {
        Some(s) => Err(KafkaSetupError::Missing(s.name.clone())),
        None => Ok(counts),
    }
}

/// A failure to read the metadata, naming the brokers asked; other errors as they are.
fn naming_the_brokers(e: KafkaSetupError, bootstrap: &str) -> KafkaSetupError {
    match e {
        KafkaSetupError::Client(source) => KafkaSetupError::Metadata {
            bootstrap: bootstrap.to_string(),
            source,
        },
        other => other,
    }
}

fn topic_of(r: &Result<String, (String, RDKafkaErrorCode)>) -> &str {
    match r {
        Ok(t) | Err((t, _)) => t,
    }
}

/// [`partition_counts`] on the blocking pool (a metadata request waits on the network); a
/// failure names the brokers asked (`bootstrap`).
async fn partition_counts_off_worker(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    specs: &[TopicSpec],
    bootstrap: &str,
) -> Result<HashMap<String, i32>, KafkaSetupError> {
    let (admin, specs) = (admin.clone(), specs.to_vec());
    crate::runtime::blocking::blocking(move || partition_counts(admin.inner(), &specs))
        .await
        .map_err(|e| naming_the_brokers(e, bootstrap))
}

fn partition_counts<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    specs: &[TopicSpec],
) -> Result<HashMap<String, i32>, KafkaSetupError> {
    let md = client.fetch_metadata(None, SETUP_TIMEOUT)?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .filter(|t| specs.iter().any(|s| s.name == t.name()))
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// Checks that `topic` has as many partitions as `reference`.
pub fn check_copartitioned(
    counts: &HashMap<String, i32>,
    reference: &str,
    topic: &str,
) -> Result<i32, KafkaSetupError> {
    let expected = counts
        .get(reference)
        .copied()
        .ok_or_else(|| KafkaSetupError::Missing(reference.to_string()))?;
    let found = counts
        .get(topic)
        .copied()
        .ok_or_else(|| KafkaSetupError::Missing(topic.to_string()))?;
    if found != expected {
        return Err(KafkaSetupError::PartitionMismatch {
            topic: topic.to_string(),
            found,
            expected_from: reference.to_string(),
            expected,
        });
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state record is bounded but can pass Kafka's default 1 MB (rules with many capped
    /// groups, a deep explain history); a changelog that refused one stopped the service at
    /// every checkpoint. The changelogs leadscore creates take what its producer sends, as the
    /// dead-letter topics do.
    #[test]
    fn changelogs_and_dead_letter_topics_take_records_as_large_as_the_producer_sends() {
        let config = |t: TopicSpec| t.config.into_iter().collect::<BTreeMap<_, _>>();
        let changelog = config(TopicSpec::compacted("c", 3, 1));
        assert_eq!(changelog["cleanup.policy"], "compact");
        let dlq = config(TopicSpec::dead_letter("d", 3, 1));
        for c in [changelog, dlq] {
            assert_eq!(c["max.message.bytes"], MAX_RECORD_BYTES.to_string());
        }
    }

    /// A metadata fetch that reached no broker says which brokers were asked and which
    /// setting names them (it said "kafka client: Meta data fetch error:
    /// BrokerTransportFailure" alone); other errors pass as they are.
    #[test]
    fn a_failed_metadata_fetch_names_the_bootstrap_servers() {
        let failed = KafkaSetupError::Client(KafkaError::MetadataFetch(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        let e = naming_the_brokers(failed, "127.0.0.1:1").to_string();
        assert!(
            e.contains("kafka.bootstrap.servers") && e.contains("127.0.0.1:1"),
            "{e}"
        );
        assert!(e.contains("BrokerTransportFailure"), "the cause stays: {e}");
        let missing = naming_the_brokers(KafkaSetupError::Missing("t".into()), "b:9092");
        assert!(matches!(missing, KafkaSetupError::Missing(_)));
    }
}
