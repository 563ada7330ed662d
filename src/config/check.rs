//! `Settings::check`: checks across fields and of ranges the types do not express, one function
//! per section, run in a fixed order so that the first problem reported is always the same one.

use super::load::Sources;
use super::*;
use crate::handoff::salesforce::MAX_COLLECTION_RECORDS;

const NON_EMPTY: &str = "must not be empty";
const POSITIVE: &str = "must be greater than 0";
const NONZERO: &str = "must be greater than 0s";

/// `Ok` when `ok`, else the error naming `keys` (the first is the one reported).
fn ensure(
    sources: &Sources<'_>,
    ok: bool,
    keys: &[&str],
    message: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(sources.invalid(keys, message))
    }
}

/// `scorer.explain_depth` at most: 1000 kept changes are about 25 KB of every user's state.
pub const MAX_EXPLAIN_DEPTH: usize = 1000;

impl Settings {
    /// Checks across fields and of ranges the types do not express, so a bad setting stops the
    /// service at startup rather than at the first event that needs it.
    pub(super) fn check(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        self.check_kafka(sources)?;
        self.check_topics(sources)?;
        self.check_services(sources)?;
        self.check_scorer(sources)?;
        self.check_handoff(sources)?;
        self.check_salesforce(sources)?;
        self.check_ingest(sources)?;
        self.check_warehouse(sources)?;
        self.check_admin_and_log(sources)
    }

    /// `[kafka]`: `producer` and `consumer` are tables, and neither holds a property librdkafka
    /// reserves for the other kind of client (it would be ignored there, with a warning at
    /// every start). Values are never quoted: they may be credentials.
    fn check_kafka(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        /// librdkafka properties a service always sets itself, and what to set instead.
        const SET_BY_LEADSCORE: &[(&str, &str)] = &[
            (
                "group.id",
                "set scorer.group_id, handoff.group_id or warehouse.export_group_id",
            ),
            (
                "enable.auto.commit",
                "offsets are committed with each checkpoint (docs/crash-safety.md)",
            ),
            (
                "enable.auto.offset.store",
                "offsets are committed with each checkpoint (docs/crash-safety.md)",
            ),
            (
                "enable.partition.eof",
                "the services need it to know when a partition is caught up",
            ),
        ];
        for key in self.kafka.properties.keys() {
            let (table, name) = split_role(key);
            // The variable that set this key, or the one that set its whole table.
            let mut origin = sources.origin(&["kafka", key]);
            if origin.env_var.is_none() && table != KafkaRole::Shared {
                let table_key = key.strip_suffix(name).unwrap_or(key).trim_end_matches('.');
                origin = sources.origin(&["kafka", table_key]);
            }
            let error = |message: String| ConfigError::Invalid {
                origin: origin.clone(),
                key: format!("kafka.{key}"),
                message,
            };
            if let Some(table) = [PRODUCER_PREFIX, CONSUMER_PREFIX]
                .iter()
                .map(|p| p.trim_end_matches('.'))
                .find(|t| key == t)
            {
                return Err(error(format!(
                    "must be a table of librdkafka properties ([kafka.{table}]), not a value"
                )));
            }
            // Properties each service sets itself, after these: one given here would be
            // dropped without a word (an outside check set `group.id` and the service ran
            // under its own group id).
            if let Some(instead) = SET_BY_LEADSCORE
                .iter()
                .find(|(property, _)| *property == name)
                .map(|(_, instead)| instead)
            {
                return Err(error(format!(
                    "{name:?} is set by leadscore itself and would be ignored: {instead}"
                )));
            }
            let owner = KafkaRole::of_property(name);
            if table != KafkaRole::Shared && owner != KafkaRole::Shared && owner != table {
                let (kind, other) = match owner {
                    KafkaRole::Consumer => ("consumer", "a producer"),
                    _ => ("producer", "a consumer"),
                };
                return Err(error(format!(
                    "{name:?} is a {kind} property, which librdkafka ignores in {other}: \
                     set it in {} (or [kafka], for every client it applies to)",
                    owner.table()
                )));
            }
            // librdkafka judges the property now, so that its verdict names the file or the
            // variable the property came from (at client creation it could name only the
            // property). A credential's value is never quoted.
            let value = self.kafka.properties.get(key).map_or("", String::as_str);
            if let Err(e) = rdkafka::ClientConfig::new()
                .set(name, value)
                .create_native_config()
            {
                let mut said = match e {
                    rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
                    other => other.to_string(),
                };
                if is_sensitive_kafka_property(name) && !value.is_empty() {
                    said = said.replace(value, "[redacted]");
                }
                return Err(error(format!("librdkafka refuses it: {said}")));
            }
        }
        Ok(())
    }

    /// `[topics]`: every name set and distinct, and sizes at least 1.
    fn check_topics(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let names = self.topics.names();
        for (i, (key, name)) in names.iter().enumerate() {
            ensure(sources, !name.is_empty(), &[key], NON_EMPTY)?;
            if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                let message = format!("must differ from {other} (both are \"{name}\")");
                return Err(sources.invalid(&[key, other], message));
            }
        }
        // The lead lookup directory (compacted, one partition) written into another topic
        // would put its records among score changes or events (an outside check).
        let instances = self.instances_topic();
        if let Some((other, _)) = names.iter().find(|(_, n)| **n == instances) {
            let key = if self.topics.instances.is_some() {
                "topics.instances"
            } else {
                "scorer.group_id"
            };
            let message =
                format!("the lead lookup directory topic {instances:?} must differ from {other}");
            return Err(sources.invalid(&[key, other], message));
        }
        let topics = &self.topics;
        ensure(
            sources,
            topics.partitions >= 1,
            &["topics.partitions"],
            "must be at least 1",
        )?;
        let replication = topics.replication_factor >= 1;
        ensure(
            sources,
            replication,
            &["topics.replication_factor"],
            "must be at least 1",
        )
    }

    /// What the two services must not share: consumer group and state directory.
    fn check_services(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let (scorer, handoff) = (&self.scorer, &self.handoff);
        let scorer_group = !scorer.group_id.is_empty();
        ensure(sources, scorer_group, &["scorer.group_id"], NON_EMPTY)?;
        let handoff_group = !handoff.group_id.is_empty();
        ensure(sources, handoff_group, &["handoff.group_id"], NON_EMPTY)?;
        ensure(
            sources,
            scorer.group_id != handoff.group_id,
            &["handoff.group_id", "scorer.group_id"],
            "must differ from scorer.group_id: the services consume different topics",
        )?;
        ensure(
            sources,
            scorer.state_dir != handoff.state_dir,
            &["handoff.state_dir", "scorer.state_dir"],
            "must differ from scorer.state_dir: each service owns its state directory",
        )
    }

    /// `[scorer]`: sizes and the transactional id.
    fn check_scorer(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let scorer = &self.scorer;
        // In the order they are reported: (holds, key, message).
        let rules = [
            (
                scorer.explain_depth <= MAX_EXPLAIN_DEPTH,
                "scorer.explain_depth",
                "must be at most 1000 (each kept change costs about 25 bytes of every user's state)",
            ),
            (scorer.max_event_bytes > 0, "scorer.max_event_bytes", POSITIVE),
            (scorer.batch_max_events > 0, "scorer.batch_max_events", POSITIVE),
            (
                scorer.transactional_id.as_deref() != Some(""),
                "scorer.transactional_id",
                "must not be empty (leave it unset for the default)",
            ),
        ];
        for (holds, key, message) in rules {
            ensure(sources, holds, &[key], message)?;
        }
        Ok(())
    }

    /// `[handoff]`: batching, retries, the funnel and the lead id.
    fn check_handoff(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let handoff = &self.handoff;
        ensure(
            sources,
            (1..=MAX_COLLECTION_RECORDS).contains(&handoff.max_batch),
            &["handoff.max_batch"],
            &format!(
                "must be between 1 and {MAX_COLLECTION_RECORDS} (the sObject Collections limit)"
            ),
        )?;
        ensure(
            sources,
            handoff.max_attempts != Some(0),
            &["handoff.max_attempts"],
            "must be at least 1 (leave it unset to retry until the call succeeds)",
        )?;
        ensure(
            sources,
            !handoff.backoff_initial.is_zero(),
            &["handoff.backoff_initial"],
            NONZERO,
        )?;
        ensure(
            sources,
            handoff.backoff_initial <= handoff.backoff_max,
            &["handoff.backoff_max", "handoff.backoff_initial"],
            "must not be less than handoff.backoff_initial",
        )?;
        // A 403 REQUEST_LIMIT_EXCEEDED pauses the calls (SPEC 6): a pause of nothing would
        // call again at once, into the same limit.
        ensure(
            sources,
            !handoff.limit_pause.is_zero(),
            &["handoff.limit_pause"],
            NONZERO,
        )?;
        // Waits past these keep leads (and, for a refused credential, every call) waiting for
        // days on a typo (`9999d`: an outside review). A day covers Salesforce's rolling
        // 24-hour API allowance; an hour of lingering is already far past any batching gain.
        for (key, value, max, what) in [
            ("handoff.linger", handoff.linger, HOUR, "1h"),
            (
                "handoff.backoff_initial",
                handoff.backoff_initial,
                DAY,
                "24h",
            ),
            ("handoff.backoff_max", handoff.backoff_max, DAY, "24h"),
            ("handoff.limit_pause", handoff.limit_pause, DAY, "24h"),
        ] {
            ensure(
                sources,
                value <= max,
                &[key],
                &format!("must be at most {what}: a lead would wait that long"),
            )?;
        }
        // A PATCH of no fields would answer 204 and change nothing: every lead "handed off".
        ensure(
            sources,
            handoff
                .patch_body
                .as_object()
                .is_some_and(|o| !o.is_empty()),
            &["handoff.patch_body"],
            "must set at least one field (the handoff status)",
        )?;
        let status = &["handoff.status_attribute"];
        ensure(
            sources,
            !handoff.status_attribute.is_empty(),
            status,
            NON_EMPTY,
        )?;
        self.check_funnel(sources)?;
        if let Err(message) = handoff.lead_id_pattern() {
            return Err(sources.invalid(&["handoff.lead_id_pattern"], message));
        }
        ensure(
            sources,
            handoff.lead_id_attribute.as_deref() != Some(""),
            &["handoff.lead_id_attribute"],
            "must not be empty (leave it unset to use the user id)",
        )
    }

    /// `[salesforce]`: an http(s) URL, a place for the secret, a timeout.
    fn check_salesforce(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let salesforce = &self.salesforce;
        let url = &salesforce.instance_url;
        ensure(
            sources,
            url.starts_with("http://") || url.starts_with("https://"),
            &["salesforce.instance_url"],
            &format!("\"{url}\" is not an http:// or https:// URL"),
        )?;
        let secret_env = &["salesforce.client_secret_env"];
        let has_secret_env = !salesforce.client_secret_env.is_empty();
        ensure(sources, has_secret_env, secret_env, NON_EMPTY)?;
        ensure(
            sources,
            !salesforce.timeout.is_zero(),
            &["salesforce.timeout"],
            NONZERO,
        )
    }

    /// `[admin]` and `[log]`.
    fn check_admin_and_log(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        if let Err(e) = self.admin.listen_addr() {
            let listen = &self.admin.listen;
            let message = format!("\"{listen}\" is not a socket address like 0.0.0.0:9464: {e}");
            return Err(sources.invalid(&["admin.listen"], message));
        }
        if let Some(url) = &self.admin.advertised_url {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/"
            });
            if !ok {
                let message = format!(
                    "{url:?} is not an http:// or https:// URL of a host (and port), like \
                     http://scorer-0.scorer:9464"
                );
                return Err(sources.invalid(&["admin.advertised_url"], message));
            }
        }
        ensure(
            sources,
            !self.log.level.is_empty(),
            &["log.level"],
            NON_EMPTY,
        )?;
        // A bare word is a target's name to the filter, not a level: `warning` enabled the
        // logs of a target named so and nothing else, not even errors (an outside check).
        let levels = ["off", "error", "warn", "info", "debug", "trace"];
        let not_a_level = self.log.level.split(',').map(str::trim).find(|d| {
            !d.is_empty()
                && !d.contains(['=', '[', ':'])
                && !levels.iter().any(|l| d.eq_ignore_ascii_case(l))
        });
        if let Some(word) = not_a_level {
            return Err(sources.invalid(
                &["log.level"],
                format!(
                    "{word:?} is not a level: use error, warn, info, debug, trace or off, or \
                     target=level (\"info,leadscore=debug\")"
                ),
            ));
        }
        // A directive the filter cannot read would be dropped with a note on stderr and the
        // service started at another level than asked for.
        match tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            Ok(_) => Ok(()),
            Err(e) => Err(sources.invalid(
                &["log.level"],
                format!(
                    "{:?} is not a log filter ({e}): a level (error, warn, info, debug, trace) \
                     or directives such as \"info,leadscore=debug\"",
                    self.log.level
                ),
            )),
        }
    }

    /// `handoff.status_order`, `handoff_status` and `skip_statuses` must describe one funnel.
    fn check_funnel(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let h = &self.handoff;
        let order = "handoff.status_order";
        if h.status_order.is_empty() {
            return Err(sources.invalid(&[order], "must list the lead funnel's statuses"));
        }
        let keys: Vec<String> = h.status_order.iter().map(|s| status_key(s)).collect();
        for (i, key) in keys.iter().enumerate() {
            if key.is_empty() {
                return Err(sources.invalid(&[order], format!("entry {i} is empty")));
            }
            if let Some(j) = keys[..i].iter().position(|k| k == key) {
                let message = format!(
                    "{:?} and {:?} are the same status (statuses compare without case and extra \
                     whitespace)",
                    h.status_order[j], h.status_order[i]
                );
                return Err(sources.invalid(&[order], message));
            }
        }
        let handoff_key = status_key(&h.handoff_status);
        let Some(at) = keys.iter().position(|k| *k == handoff_key) else {
            let message = format!("{:?} is not in handoff.status_order", h.handoff_status);
            return Err(sources.invalid(&["handoff.handoff_status", order], message));
        };
        // A body that sets another status of the funnel than the handoff status would move
        // leads there while the handoff counts them at the handoff status (an outside review:
        // `{"lead_status": "SQL"}` with MQL was taken). A body that sets no status (a checkbox
        // a Salesforce flow reads) is left alone.
        let fields = h.patch_body.as_object().into_iter().flatten();
        for (field, value) in fields {
            let Some(text) = value.as_str() else { continue };
            let key = status_key(text);
            if key != handoff_key && keys.contains(&key) {
                let message = format!(
                    "sets {field:?} to {text:?}, a status of handoff.status_order other than \
                     handoff.handoff_status {:?}: set it to the handoff status",
                    h.handoff_status
                );
                return Err(
                    sources.invalid(&["handoff.patch_body", "handoff.handoff_status"], message)
                );
            }
        }
        for skip in &h.skip_statuses {
            let key = status_key(skip);
            if key.is_empty() {
                return Err(sources.invalid(&["handoff.skip_statuses"], "has an empty entry"));
            }
            if keys[..at].contains(&key) {
                let message = format!(
                    "{skip:?} is before handoff.handoff_status {:?} in handoff.status_order; \
                     remove it from one of them",
                    h.handoff_status
                );
                return Err(sources.invalid(&["handoff.skip_statuses", order], message));
            }
        }
        Ok(())
    }
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
