//! The published JSON Schema of the input event (`schemas/event.schema.json`, draft 2020-12)
//! against what the scorer really accepts: every example event in `examples/` and the README
//! validates, and on a corpus of good and bad events (`tests/corpus/events/{good,bad}.jsonl`)
//! the schema and the decoder agree, event by event.
//!
//! "The decoder accepts" means [`codec::decode_event`] returns an event, or reports a type it
//! does not know ([`codec::DecodeError::UnknownType`]): such an event is valid input, skipped
//! by the scorer with the default `scorer.unknown_types = "skip"`.
//!
//! Left out of the corpus on purpose, because no JSON Schema can say them (the scorer checks
//! them, and its tests cover them):
//! - a repeated object key (`{"a":1,"a":2}`): malformed for the decoder, while a schema sees
//!   the parsed document, with one of the two values;
//! - a record key that differs from `user_id`, and the size limit (`scorer.max_event_bytes`):
//!   properties of the Kafka record, not of the value;
//! - a `time` too far ahead of the wall clock (`scorer.max_future_skew`): it moves with the clock;
//! - a day the month does not have (`2026-02-30`), and an RFC 3339 offset that moves an instant
//!   at the edge of year 0000 or 9999 out of range: a pattern could list the days of each month
//!   and leap years, at the cost of a pattern nobody can read.

use leadscore::codec::{self, Format, Limits};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    let path = root().join("schemas/event.schema.json");
    let text = std::fs::read_to_string(&path).expect("schemas/event.schema.json");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::draft202012::meta::validate(&schema).expect("the schema is valid draft 2020-12");
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

/// Whether the decoder accepts `line` as an input event (see the module doc).
fn decodes(line: &str) -> Result<(), codec::DecodeError> {
    match codec::decode_event(Format::Json, None, line.as_bytes(), &Limits::default()) {
        Ok(_) | Err(codec::DecodeError::UnknownType(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Schema errors of `line`, for a failure message.
fn schema_errors(v: &jsonschema::Validator, line: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(line).expect("corpus lines are JSON");
    v.iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// The non-blank lines of a JSONL file, with their 1-based numbers.
fn jsonl(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

fn example_event_files() -> Vec<PathBuf> {
    let dir = root().join("examples/events");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/events")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl" || x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_event_file_validates() {
    let v = validator();
    let files = example_event_files();
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        for (n, line) in jsonl(&file) {
            let errors = schema_errors(&v, &line);
            assert!(errors.is_empty(), "{}:{n}: {errors:?}", file.display());
            assert_eq!(decodes(&line), Ok(()), "{}:{n}", file.display());
        }
    }
}

/// The input events the README shows: every line of a fenced code block that is a JSON object
/// with `user_id`, `time` and `type` and is not a score change (which has `previous_score`).
fn readme_events() -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut in_fence = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            continue;
        }
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        let is_event = ["user_id", "time", "type"]
            .iter()
            .all(|k| obj.contains_key(*k))
            && !obj.contains_key("previous_score");
        if is_event {
            out.push((i + 1, line.trim().to_string()));
        }
    }
    out
}

#[test]
fn every_event_the_readme_shows_validates() {
    let v = validator();
    let events = readme_events();
    assert!(
        events.len() >= 4,
        "the README's input section shows events: {events:?}"
    );
    for (n, line) in events {
        let errors = schema_errors(&v, &line);
        assert!(errors.is_empty(), "README.md:{n}: {errors:?}");
        assert_eq!(decodes(&line), Ok(()), "README.md:{n}");
    }
}

#[test]
fn the_schema_and_the_decoder_agree_on_the_corpus() {
    let v = validator();
    let corpus = root().join("tests/corpus/events");
    let mut disagreements = Vec::new();
    for (file, want) in [("good.jsonl", true), ("bad.jsonl", false)] {
        let lines = jsonl(&corpus.join(file));
        assert!(lines.len() >= 20, "{file} is a real corpus");
        for (n, line) in lines {
            let value: Value = serde_json::from_str(&line).expect("corpus lines are JSON");
            let schema_ok = v.is_valid(&value);
            let decoded = decodes(&line);
            if schema_ok != want || decoded.is_ok() != want {
                disagreements.push(format!(
                    "{file}:{n}: {line}\n  schema: {:?}\n  decoder: {decoded:?}",
                    schema_errors(&v, &line)
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
