//! Every metric leadscore exports, in one table: name, kind, unit, labels with their bounded
//! value sets, which service exports it, and help text. [`describe`](super::telemetry::describe)
//! iterates it, the zero-registration reads it, tests and the deploy checks read it. A new
//! metric is one constant and one row here.
//!
//! Names follow `leadscore_<noun>_<unit>[_total]` in base units; label values come only from
//! bounded sets (never user ids, URLs or error text).

use metrics::Unit;

// Scorer.
pub const EVENTS_CONSUMED: &str = "leadscore_events_consumed_total";
pub const EVENTS_APPLIED: &str = "leadscore_events_applied_total";
pub const EVENTS_SKIPPED: &str = "leadscore_events_skipped_total";
pub const EVENTS_DEAD_LETTERED: &str = "leadscore_events_dead_lettered_total";
pub const EVENTS_MISROUTED: &str = "leadscore_events_misrouted_total";
pub const USERS_DELETED: &str = "leadscore_users_deleted_total";
pub const SCORE_CHANGES: &str = "leadscore_score_changes_total";
pub const EVENT_TO_OUTPUT_SECONDS: &str = "leadscore_event_to_output_seconds";
pub const POLL_TO_OUTPUT_SECONDS: &str = "leadscore_poll_to_output_seconds";
pub const PENDING_TIMERS: &str = "leadscore_pending_timers";
pub const PARTITION_CLOCK: &str = "leadscore_partition_clock_seconds";
pub const LOOKUPS: &str = "leadscore_lookups_total";

// Both services: consumption, owned partitions, state and checkpoints.
pub const CONSUMER_LAG: &str = "leadscore_consumer_lag_messages";
pub const RESTORE_RECORDS: &str = "leadscore_restore_records_total";
pub const RESTORE_SECONDS: &str = "leadscore_restore_duration_seconds";
pub const RESTORING_PARTITIONS: &str = "leadscore_restoring_partitions";
pub const RESTORE_REMAINING: &str = "leadscore_restore_remaining_records";
pub const ASSIGNED_PARTITIONS: &str = "leadscore_assigned_partitions";
pub const STORE_USERS: &str = "leadscore_store_keys";
pub const STORE_BYTES: &str = "leadscore_store_bytes";
pub const STORE_VERIFY_FAILURES: &str = "leadscore_store_verify_failures_total";
pub const CHECKPOINT_SECONDS: &str = "leadscore_checkpoint_duration_seconds";
pub const CHECKPOINTS: &str = "leadscore_checkpoints_total";

// Handoff.
pub const HANDOFFS: &str = "leadscore_handoffs_total";
pub const HANDOFF_CHANGES: &str = "leadscore_handoff_changes_consumed_total";
pub const HANDOFF_CHANGES_REREAD: &str = "leadscore_handoff_changes_reread_total";
pub const HANDOFF_RETRIES: &str = "leadscore_handoff_retries_total";
pub const HANDOFF_WITHOUT_LEAD_ID: &str = "leadscore_handoff_changes_without_lead_id_total";
pub const HANDOFF_DEAD_LETTERED: &str = "leadscore_handoff_dead_lettered_total";
pub const HANDOFF_LIMIT_PAUSES: &str = "leadscore_handoff_limit_pauses_total";
pub const HANDOFF_BATCH_SECONDS: &str = "leadscore_handoff_batch_duration_seconds";

// The handoff's Salesforce client.
pub const SALESFORCE_REQUESTS: &str = "leadscore_salesforce_requests_total";
pub const SALESFORCE_TOKEN_REFRESHES: &str = "leadscore_salesforce_token_refreshes_total";
pub const SALESFORCE_API_USAGE: &str = "leadscore_salesforce_api_usage_calls";
pub const SALESFORCE_API_LIMIT: &str = "leadscore_salesforce_api_limit_calls";
pub const SALESFORCE_AUTH_FAILURES: &str = "leadscore_salesforce_auth_failures_total";

// Ingest and the warehouse sync.
pub const INGEST_REQUESTS: &str = "leadscore_ingest_requests_total";
pub const INGEST_REQUEST_SECONDS: &str = "leadscore_ingest_request_duration_seconds";
pub const INGEST_OBJECTS: &str = "leadscore_ingest_objects_total";
pub const INGEST_EVENTS: &str = "leadscore_ingest_events_produced_total";
pub const WAREHOUSE_ROWS_IMPORTED: &str = "leadscore_warehouse_rows_imported_total";
pub const WAREHOUSE_ROWS_SKIPPED: &str = "leadscore_warehouse_rows_skipped_total";
pub const WAREHOUSE_CHANGES_EXPORTED: &str = "leadscore_warehouse_changes_exported_total";
pub const WAREHOUSE_CHANGES_SKIPPED: &str = "leadscore_warehouse_changes_skipped_total";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The Prometheus `# TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Which service exports a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Scorer,
    Handoff,
    /// The shared runtime: consumption, owned partitions, state, checkpoints.
    Both,
    /// `leadscore ingest`.
    Ingest,
    /// `leadscore warehouse import|export`.
    Warehouse,
}

impl Owner {
    pub fn exported_by(self, service: Owner) -> bool {
        self == Owner::Both || self == service
    }
}

/// The values a label can take.
#[derive(Clone, Copy)]
pub enum Values {
    Fixed(&'static [&'static str]),
    /// Drawn from the list the code itself uses, so a value added there is covered here.
    From(fn() -> Vec<&'static str>),
    /// An owned partition's number: bounded by the topic's partition count. Such gauges live
    /// in `telemetry::PartitionGauges`, so a revoked partition's series disappear.
    Partition,
}

impl Values {
    /// The bounded set, or `None` for partition numbers.
    pub fn list(self) -> Option<Vec<&'static str>> {
        match self {
            Values::Fixed(v) => Some(v.to_vec()),
            Values::From(f) => Some(f()),
            Values::Partition => None,
        }
    }
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.list() {
            Some(v) => write!(f, "{v:?}"),
            None => f.write_str("<partition>"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Label {
    pub name: &'static str,
    pub values: Values,
}

#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub labels: &'static [Label],
    pub owner: Owner,
    pub help: &'static str,
}

impl Metric {
    /// Per-partition gauges are rendered by `telemetry::PartitionGauges`, not the registry.
    pub fn per_partition(&self) -> bool {
        self.labels
            .iter()
            .any(|l| matches!(l.values, Values::Partition))
    }
}

const PARTITION: &[Label] = &[Label {
    name: "partition",
    values: Values::Partition,
}];

/// The names of every value of a closed set (`T::ALL`), for a label's [`Values::From`].
fn names<T: Copy, const N: usize>(all: [T; N], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.into_iter().map(name).collect()
}

fn skip_reasons() -> Vec<&'static str> {
    use crate::engine::Outcome;
    Outcome::skipped().map(Outcome::as_str).collect()
}

/// The table. Order: scorer, both, handoff, Salesforce.
pub const METRICS: &[Metric] = &[
    Metric {
        name: EVENTS_CONSUMED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Scorer,
        help: "Input records read from Kafka, good or bad.",
    },
    Metric {
        name: EVENTS_APPLIED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Scorer,
        help: "Input events that changed a user's score.",
    },
    Metric {
        name: EVENTS_SKIPPED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "reason",
            values: Values::From(skip_reasons),
        }],
        owner: Owner::Scorer,
        help: "Input events that changed no score, by reason (duplicate, not_enrolled, outside_audience, reentry_wait, no_group, unchanged, stale_external, replayed, unknown_type).",
    },
    Metric {
        name: USERS_DELETED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Scorer,
        help: "Users forgotten: user_deleted events and input tombstones applied (state, timer and seen ids dropped; tombstones written to the changelog and the score changes).",
    },
    Metric {
        name: EVENTS_DEAD_LETTERED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "reason",
            values: Values::From(|| crate::codec::DecodeError::REASONS.to_vec()),
        }],
        owner: Owner::Scorer,
        help: "Bad input records sent to the dead-letter topic, by reason.",
    },
    Metric {
        name: EVENTS_MISROUTED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "reason",
            values: Values::From(|| names(crate::scorer::MisroutedReason::ALL, |r| r.as_str())),
        }],
        owner: Owner::Scorer,
        help: "Input records found off their user's home partition (murmur2 of the user id), by reason (wrong_partition, no_key): re-routed to it, or for a keyless record already there, scored in place.",
    },
    Metric {
        name: LOOKUPS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "result",
            values: Values::From(|| names(crate::scorer::lookup::LookupResult::ALL, |r| r.as_str())),
        }],
        owner: Owner::Scorer,
        help: "Lead lookups (GET /v1/leads/{user_id}) this instance answered, by result: found, not_found, forwarded (to the partition's owner), unavailable (503: rebalancing or restoring), refused (lookup off, or no valid token), bad_request.",
    },
    Metric {
        name: SCORE_CHANGES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "kind",
            values: Values::From(|| names(crate::change::ReasonKind::ALL, |k| k.as_str())),
        }],
        owner: Owner::Scorer,
        help: "Score changes published, by reason kind (rule, inactivity, external, attribute).",
    },
    Metric {
        name: EVENT_TO_OUTPUT_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &[],
        owner: Owner::Scorer,
        help: "From an event's time to its score change being published (wall clock).",
    },
    Metric {
        name: POLL_TO_OUTPUT_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &[],
        owner: Owner::Scorer,
        help: "From polling a record to its batch being checkpointed.",
    },
    Metric {
        name: PENDING_TIMERS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Scorer,
        help: "Entries of the inactivity timer index across owned partitions: one per user with a running timer, plus entries of timers that ended or moved earlier, each until its old due time.",
    },
    Metric {
        name: PARTITION_CLOCK,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        labels: PARTITION,
        owner: Owner::Scorer,
        help: "Each owned partition's clock, in Unix seconds.",
    },
    Metric {
        name: CONSUMER_LAG,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: PARTITION,
        owner: Owner::Both,
        help: "Consumer lag per owned partition of the consumed topic, from librdkafka statistics (from the broker's watermarks while the handoff pauses its partitions).",
    },
    Metric {
        name: RESTORE_RECORDS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Both,
        help: "Changelog records read while restoring partitions.",
    },
    Metric {
        name: RESTORE_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &[],
        owner: Owner::Both,
        help: "How long restoring one partition (local copy, then changelog) took.",
    },
    Metric {
        name: RESTORING_PARTITIONS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Both,
        help: "Partitions being restored right now.",
    },
    Metric {
        name: RESTORE_REMAINING,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: PARTITION,
        owner: Owner::Both,
        help: "Changelog records left to read per partition being restored (from the high watermark when the restore started).",
    },
    Metric {
        name: ASSIGNED_PARTITIONS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Both,
        help: "Partitions this instance owns.",
    },
    Metric {
        name: STORE_USERS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Both,
        help: "Keys (users) held in state across owned partitions.",
    },
    Metric {
        name: STORE_BYTES,
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        labels: &[],
        owner: Owner::Both,
        help: "Bytes the local store takes on disk (all partitions, journal included).",
    },
    Metric {
        name: STORE_VERIFY_FAILURES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "reason",
            values: Values::From(|| crate::runtime::changelog::VerifyFailure::REASONS.to_vec()),
        }],
        owner: Owner::Both,
        help: "Local store copies not trusted at a restore (restored wholly from the changelog instead), by reason (unreadable, no_meta, ahead, no_checkpoint, unverifiable, key_count, digest).",
    },
    Metric {
        name: CHECKPOINT_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &[],
        owner: Owner::Both,
        help: "How long a checkpoint (flush, changelog, commit or transaction) took.",
    },
    Metric {
        name: CHECKPOINTS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Both,
        help: "Checkpoints completed.",
    },
    Metric {
        name: HANDOFFS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "outcome",
            values: Values::Fixed(crate::handoff::OUTCOME_STATUSES),
        }],
        owner: Owner::Handoff,
        help: "Leads with a handoff outcome, by outcome (handed_off, failed, superseded).",
    },
    Metric {
        name: HANDOFF_CHANGES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Handoff,
        help: "Score change records read by the handoff.",
    },
    Metric {
        name: HANDOFF_CHANGES_REREAD,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Handoff,
        help: "Score change records fetched again and skipped, already handled: the records before a resume position that an assignment, or a resume on a broker that skips part of a batch, fetches again (docs/brokers.md).",
    },
    Metric {
        name: HANDOFF_WITHOUT_LEAD_ID,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Handoff,
        help: "Score changes of a lead due for handoff that carried no lead id (the attribute handoff.lead_id_attribute): the lead waits for a change that has one. Rising steadily with no handoffs: the scorer's rules do not track that attribute ([output] tracked_attributes).",
    },
    Metric {
        name: HANDOFF_RETRIES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Handoff,
        help: "Lead updates retried after a transient Salesforce failure.",
    },
    Metric {
        name: HANDOFF_DEAD_LETTERED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "reason",
            values: Values::From(crate::handoff::dead_letter_labels),
        }],
        owner: Owner::Handoff,
        help: "Records sent to the handoff dead-letter topic, by reason.",
    },
    Metric {
        name: HANDOFF_LIMIT_PAUSES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Handoff,
        help: "Pauses after Salesforce's REQUEST_LIMIT_EXCEEDED.",
    },
    Metric {
        name: HANDOFF_BATCH_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &[],
        owner: Owner::Handoff,
        help: "How long the leads resolved by one round of calls took since their first call, retries included.",
    },
    Metric {
        name: SALESFORCE_REQUESTS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[
            Label {
                name: "endpoint",
                values: Values::Fixed(&["token", "sobject", "collection"]),
            },
            // 3xx happens: the client follows no redirect (a redirect is retried, README,
            // failure policy). 1xx reaches no caller through the HTTP client, but the label
            // says what any status would be counted as.
            Label {
                name: "status_class",
                values: Values::Fixed(&["1xx", "2xx", "3xx", "4xx", "5xx", "error"]),
            },
        ],
        owner: Owner::Handoff,
        help: "HTTP requests to Salesforce, by endpoint (token, sobject, collection) and status class (1xx to 5xx, error = no answer).",
    },
    Metric {
        name: SALESFORCE_TOKEN_REFRESHES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Handoff,
        help: "Access tokens fetched again after Salesforce answered 401 INVALID_SESSION_ID.",
    },
    Metric {
        name: SALESFORCE_API_USAGE,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Handoff,
        help: "API calls used in the org's 24-hour window (Sforce-Limit-Info api-usage).",
    },
    Metric {
        name: SALESFORCE_API_LIMIT,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Handoff,
        help: "The org's 24-hour API call allowance (Sforce-Limit-Info api-usage).",
    },
    Metric {
        name: SALESFORCE_AUTH_FAILURES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "cause",
            values: Values::Fixed(&["token_refused", "session_refused"]),
        }],
        owner: Owner::Handoff,
        help: "Credentials Salesforce refused, by cause (token_refused, session_refused).",
    },
    Metric {
        name: INGEST_REQUESTS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "status",
            values: Values::From(|| crate::ingest::server::STATUSES.to_vec()),
        }],
        owner: Owner::Ingest,
        help: "POST /users/track requests answered, by HTTP status (201, 400, 401, 408, 413, 415, 429, 503).",
    },
    Metric {
        name: INGEST_REQUEST_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &[],
        owner: Owner::Ingest,
        help: "From receiving a /users/track request to answering it, Kafka acknowledgements included.",
    },
    Metric {
        name: INGEST_OBJECTS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[
            Label {
                name: "array",
                values: Values::From(|| names(crate::ingest::braze::Array::ALL, |a| a.as_str())),
            },
            Label {
                name: "outcome",
                values: Values::Fixed(&["accepted", "refused"]),
            },
        ],
        owner: Owner::Ingest,
        help: "users/track objects, by array (attributes, events, purchases) and outcome (accepted, refused with a per-object error).",
    },
    Metric {
        name: INGEST_EVENTS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Ingest,
        help: "Input events produced by the ingest API and acknowledged by Kafka.",
    },
    Metric {
        name: WAREHOUSE_ROWS_IMPORTED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Warehouse,
        help: "Warehouse rows produced as external_score events and acknowledged by Kafka (warehouse import).",
    },
    Metric {
        name: WAREHOUSE_ROWS_SKIPPED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Warehouse,
        help: "Warehouse rows with a null or empty user id, or a null score, passed over (warehouse import).",
    },
    Metric {
        name: WAREHOUSE_CHANGES_EXPORTED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[Label {
            name: "outcome",
            values: Values::Fixed(&["written", "duplicate", "forgotten"]),
        }],
        owner: Owner::Warehouse,
        help: "Score changes exported to the warehouse, by outcome (written, duplicate: already in the history table, forgotten: a tombstone deleted the user's rows).",
    },
    Metric {
        name: WAREHOUSE_CHANGES_SKIPPED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        owner: Owner::Warehouse,
        help: "Score change records passed over by warehouse export (and logged): not decodable, a tombstone without a user key, or refused by the warehouse.",
    },
];

/// The row of `name`.
pub fn metric(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

/// Every series of the counters `service` exports, as (name, labels), for registering them at
/// zero: the product of each counter's label values.
pub fn counter_series(service: Owner) -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let mut out = Vec::new();
    for m in METRICS {
        if m.kind != Kind::Counter || !m.owner.exported_by(service) {
            continue;
        }
        let mut series: Vec<Vec<(&'static str, &'static str)>> = vec![Vec::new()];
        for label in m.labels {
            let Some(values) = label.values.list() else {
                series.clear();
                break;
            };
            series = series
                .into_iter()
                .flat_map(|s| {
                    values.iter().map(move |v| {
                        let mut s = s.clone();
                        s.push((label.name, *v));
                        s
                    })
                })
                .collect();
        }
        out.extend(series.into_iter().map(|s| (m.name, s)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_follow_the_conventions_and_are_unique() {
        let mut seen = BTreeSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("leadscore_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
            if m.unit == Unit::Seconds {
                assert!(m.name.ends_with("_seconds"), "{}", m.name);
            }
            if m.unit == Unit::Bytes {
                assert!(m.name.ends_with("_bytes"), "{}", m.name);
            }
            assert!(!m.help.is_empty(), "{}", m.name);
        }
    }

    #[test]
    fn label_values_are_bounded_non_empty_and_unique() {
        for m in METRICS {
            for l in m.labels {
                let Some(values) = l.values.list() else {
                    assert_eq!(l.name, "partition", "{}", m.name);
                    continue;
                };
                assert!(!values.is_empty(), "{} {}", m.name, l.name);
                let unique: BTreeSet<_> = values.iter().collect();
                assert_eq!(unique.len(), values.len(), "{} {}", m.name, l.name);
                assert!(values.len() <= 64, "{} {}: unbounded?", m.name, l.name);
            }
        }
    }

    /// A deletion is counted as a user deleted, not as a skipped event: the skipped counter has no
    /// `deleted` series, which stayed at zero for ever (an outside review).
    #[test]
    fn a_deletion_is_not_a_skip_reason() {
        assert!(!skip_reasons().contains(&"deleted"), "{:?}", skip_reasons());
        assert!(skip_reasons().contains(&"duplicate"));
    }

    #[test]
    fn counter_series_cover_every_label_combination() {
        let series = counter_series(Owner::Handoff);
        let requests: Vec<_> = series
            .iter()
            .filter(|(n, _)| *n == SALESFORCE_REQUESTS)
            .collect();
        assert_eq!(requests.len(), 3 * 6);
        // The shared runtime's counters belong to both services, the scorer's to it alone.
        assert!(series.iter().any(|(n, _)| *n == CHECKPOINTS));
        assert!(!series.iter().any(|(n, _)| *n == EVENTS_SKIPPED));
        let scorer = counter_series(Owner::Scorer);
        assert!(scorer
            .iter()
            .any(|(n, l)| *n == EVENTS_MISROUTED && l == &[("reason", "wrong_partition")]));
    }
}
