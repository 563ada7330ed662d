//! The score changes as a user of another Kafka client sees them (issue 12): a real scorer
//! publishes them, in each output format, with its shipped defaults, and
//! `tests/python/read_changes.py` reads them with aiokafka (compression, headers, timestamps
//! decoded by a client leadscore does not use), decodes protobuf with classes protoc generates
//! from `proto/`, and validates every change against `schemas/score-change.schema.json`.
//!
//! The Python environment is made by tests/setup: `target/pyenv`, or `$LEADSCORE_PYENV`.

mod common;

use common::*;
use leadscore::codec;
use leadscore::engine::Engine;
use leadscore::generator::GeneratorConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PARTITIONS: i32 = 3;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The Python of the environment tests/setup makes.
fn python() -> PathBuf {
    let env = std::env::var_os("LEADSCORE_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/pyenv"));
    let python = env.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/setup (it creates the Python environment with aiokafka)",
        python.display()
    );
    python
}

/// Runs a scorer with `format` output over generated traffic, then the Python reader over its
/// output topic; returns the reader's summary and the changes the simulation expects, by id.
fn scorer_output_read_by_aiokafka(format: &str) -> (Value, BTreeMap<String, Value>) {
    let rig = ScorerRig::new(&format!("pyclient-{format}"), PARTITIONS);
    let (broker, names) = (&rig.broker, &rig.names);
    let (_, records) = rig.produce_generated(&GeneratorConfig {
        users: 60,
        events: 800,
        // Every event named by its id, so the change ids do not depend on Kafka positions and
        // the simulation's are the scorer's.
        with_event_ids: 1.0,
        ..GeneratorConfig::default()
    });
    let jsonl: Vec<u8> = records
        .iter()
        .flat_map(|(_, payload)| payload.iter().chain(b"\n"))
        .copied()
        .collect();

    let rules = rules_path("seed-canvas.toml");
    let engine = Engine::new(leadscore::config::rules_file::load(&rules).expect("rules"));
    let simulated = leadscore::simulate::run_partitioned(&engine, &jsonl[..], None, PARTITIONS)
        .expect("simulate");
    let expected: BTreeMap<String, Value> = simulated
        .changes
        .iter()
        .map(|c| (c.event_id().to_string(), codec::change_to_json(c)))
        .collect();
    assert!(expected.len() > 50, "{} changes", expected.len());

    // The shipped defaults but the output format: no compression or header set here.
    let mut scorer = rig.scorer("state", &[("SCORER__OUTPUT_FORMAT", format)]);
    wait_until(
        Duration::from_secs(120),
        "the scorer to publish every change",
        || read_all(broker, &names.output).len() >= expected.len(),
    );
    assert!(scorer.terminate().success(), "{}", scorer.log_text());

    let out = Command::new(python())
        .arg(repo("tests/python/read_changes.py"))
        .args(["--bootstrap", &broker.bootstrap])
        .args(["--topic", &names.output])
        .args(["--format", format])
        .arg("--schema")
        .arg(repo("schemas/score-change.schema.json"))
        .arg("--proto")
        .arg(repo("proto"))
        .output()
        .expect("run read_changes.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "read_changes.py failed: {stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}); stderr: {stderr}"));
    (summary, expected)
}

fn assert_every_change_read_and_valid(format: &str) {
    let (summary, expected) = scorer_output_read_by_aiokafka(format);
    let count = |key: &str| summary[key].as_u64().unwrap_or(u64::MAX);
    let records = count("records");
    assert_eq!(
        summary["failures"],
        Value::Array(Vec::new()),
        "{format}: {records} records"
    );
    assert_eq!(
        records,
        expected.len() as u64,
        "{format}: one record per change"
    );
    assert_eq!(count("tombstones"), 0);
    for key in [
        "decoded",
        "valid",
        "content_type_ok",
        "key_ok",
        "timestamp_ok",
        "create_time",
    ] {
        assert_eq!(count(key), records, "{format}: {key}");
    }
    // What aiokafka read (through protobuf, mapped as docs/formats.md says) is exactly what
    // the engine made.
    let read: BTreeMap<String, Value> = summary["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["event_id"].as_str().expect("event_id").to_string(),
                c.clone(),
            )
        })
        .collect();
    assert_eq!(read.len(), expected.len(), "{format}: distinct changes");
    for (id, want) in &expected {
        assert_eq!(read.get(id), Some(want), "{format}: change {id}");
    }
}

#[test]
fn aiokafka_reads_the_json_score_changes_as_shipped_and_each_validates() {
    assert_every_change_read_and_valid("json");
}

#[test]
fn aiokafka_reads_the_protobuf_score_changes_as_shipped_and_each_validates() {
    assert_every_change_read_and_valid("protobuf");
}
