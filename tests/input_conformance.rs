//! Conformance of the input events (SPEC section 2) and of `leadscore simulate`'s output (SPEC
//! section 5), with the real binary as a black box.
//!
//! The expectation of every case is the SPEC, and where the SPEC is silent the decision recorded
//! in `docs/formats.md` / `docs/semantics.md` (and `schemas/event.schema.json`, which those pages
//! say agrees with the decoder). Where neither says, the case is marked "undocumented" and pins
//! what the command does today.
//!
//! Most tests are tables: one user per case (`{u}` in a line is replaced by the case's user id),
//! all cases of a table in one JSONL file and one `simulate` run. A case expects either a bad
//! line (reported on stderr as `FILE:LINE: reason`; the reason must contain the given fragment,
//! which names the field) or the user's resulting state. Divergences from the SPEC or the docs
//! found when this file was written are fixed, each test saying what was accepted before.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_leadscore");

/// The seed canvas of SPEC section 3, as shipped.
const SEED: &str = include_str!("../examples/rules/seed-canvas.toml");

/// No `min`, no inactivity: an `external_score` sets exactly what it says and `last_change` is
/// the (normalised) event time. The groups tell which property predicate matched a `p` event.
const PLAIN: &str = r#"
[entry]
on = [{ type = "email_added" }, { type = "external_score" }]

[[group]]
name = "int one"
delta = 1
triggers = [{ type = "custom_event", name = "p", properties = [{ property = "k", equals = 1 }] }]

[[group]]
name = "string one"
delta = 10
triggers = [{ type = "custom_event", name = "p", properties = [{ property = "k", equals = "1" }] }]

[[group]]
name = "true"
delta = 100
triggers = [{ type = "custom_event", name = "p", properties = [{ property = "k", equals = true }] }]

[[group]]
name = "positive"
delta = 1000
triggers = [{ type = "custom_event", name = "p", properties = [{ property = "k", gt = 0 }] }]

[[group]]
name = "any p"
delta = 10000
triggers = [{ type = "custom_event", name = "p" }]
"#;

/// Lets every time up to 9999-12-31 through the `--max-future-skew` guard.
const NO_SKEW_LIMIT: [&str; 2] = ["--max-future-skew", "4000000d"];

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn scratch_file(stem: &str, bytes: &[u8]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("input_conformance");
    fs::create_dir_all(&dir).unwrap();
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}-{stem}", std::process::id()));
    fs::write(&path, bytes).unwrap();
    path
}

struct Run {
    code: Option<i32>,
    /// Every stdout line, parsed, in output order (users, or changes with `--changes`).
    objects: Vec<Value>,
    /// Raw stdout lines.
    raw: Vec<String>,
    /// Bad lines: 1-based line number to reason.
    bad: BTreeMap<usize, String>,
    stderr: String,
}

impl Run {
    fn user(&self, id: &str) -> Option<&Value> {
        self.objects.iter().find(|o| o["user_id"] == id)
    }

    fn user_ids(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| o["user_id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn changes_of(&self, id: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["user_id"] == id).collect()
    }
}

/// Runs `simulate` and checks the bad-line report is consistent with the exit code.
fn simulate(rules: &str, events: &[u8], args: &[&str]) -> Run {
    let run = simulate_unchecked(rules, events, args);
    // docs/semantics.md, "The simulator": a bad line is reported and skipped; the exit code is
    // then 1 (0 without bad lines).
    let expected_code = if run.bad.is_empty() { 0 } else { 1 };
    assert_eq!(run.code, Some(expected_code), "stderr:\n{}", run.stderr);
    run
}

fn simulate_unchecked(rules: &str, events: &[u8], args: &[&str]) -> Run {
    let rules_path = scratch_file("rules.toml", rules.as_bytes());
    let events_path = scratch_file("events.jsonl", events);
    let out = Command::new(BIN)
        .arg("simulate")
        .arg("--rules")
        .arg(&rules_path)
        .arg("--events")
        .arg(&events_path)
        .args(args)
        .output()
        .expect("run leadscore simulate");
    let _ = fs::remove_file(&rules_path);
    let _ = fs::remove_file(&events_path);
    let stdout = String::from_utf8(out.stdout).expect("simulate writes UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let raw: Vec<String> = stdout.lines().map(str::to_owned).collect();
    let objects = raw
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line {l:?}: {e}")))
        .collect();
    let prefix = format!("{}:", events_path.display());
    let mut bad = BTreeMap::new();
    let mut summary = None;
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let (n, reason) = rest.split_once(": ").expect("FILE:LINE: reason");
            bad.insert(n.parse::<usize>().unwrap(), reason.to_owned());
        } else if let Some(n) = line.strip_suffix(" of the input lines were bad and skipped") {
            summary = Some(n.parse::<usize>().unwrap());
        }
    }
    assert_eq!(
        summary.unwrap_or(0),
        bad.len(),
        "summary line vs reported bad lines; stderr:\n{stderr}"
    );
    Run {
        code: out.status.code(),
        objects,
        raw,
        bad,
        stderr,
    }
}

enum Expect {
    /// The case's last line is a bad line whose reason contains this fragment (naming the
    /// field); its earlier lines are accepted; a one-line case leaves no user behind.
    Bad(&'static str),
    /// Every line is accepted and the user's output object has these fields, exactly (numbers
    /// compared with their kind: `1` is not `1.0`).
    User(Value),
    /// Every line is accepted and the user is not in the output.
    NoUser,
}

struct Case {
    what: String,
    lines: Vec<String>,
    expect: Expect,
}

fn case(what: &str, lines: &[&str], expect: Expect) -> Case {
    Case {
        what: what.to_owned(),
        lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        expect,
    }
}

fn bad(what: &str, line: &str, fragment: &'static str) -> Case {
    case(what, &[line], Expect::Bad(fragment))
}

fn user(what: &str, lines: &[&str], want: Value) -> Case {
    case(what, lines, Expect::User(want))
}

fn user_id_of(i: usize) -> String {
    format!("c{i:03}")
}

/// Runs every case in one file; reports all differing cases at once.
fn check_cases(rules: &str, args: &[&str], cases: &[Case]) -> Run {
    let mut text = String::new();
    let mut spans = Vec::new();
    let mut line_no = 0;
    for (i, c) in cases.iter().enumerate() {
        let uid = user_id_of(i);
        let first = line_no + 1;
        for l in &c.lines {
            text.push_str(&l.replace("{u}", &uid));
            text.push('\n');
            line_no += 1;
        }
        spans.push((uid, first, line_no));
    }
    let run = simulate(rules, text.as_bytes(), args);
    let mut failures = Vec::new();
    for (c, (uid, first, last)) in cases.iter().zip(&spans) {
        let got = run.user(uid);
        let mut expected_bad_line = None;
        match &c.expect {
            Expect::Bad(fragment) => {
                expected_bad_line = Some(*last);
                match run.bad.get(last) {
                    None => failures.push(format!(
                        "{} [{uid}]: accepted, expected a bad line containing {fragment:?}; user: {got:?}",
                        c.what
                    )),
                    Some(reason) if !reason.contains(fragment) => failures.push(format!(
                        "{} [{uid}]: bad line {reason:?}, expected it to contain {fragment:?}",
                        c.what
                    )),
                    Some(_) => {}
                }
                if first == last && got.is_some() {
                    failures.push(format!(
                        "{} [{uid}]: a bad line created a user: {got:?}",
                        c.what
                    ));
                }
            }
            Expect::User(want) => match got {
                None => failures.push(format!("{} [{uid}]: no user in the output", c.what)),
                Some(got) => {
                    for (k, v) in want.as_object().unwrap() {
                        if got.get(k) != Some(v) {
                            failures.push(format!(
                                "{} [{uid}]: {k} is {}, expected {v}",
                                c.what,
                                got.get(k).map_or("absent".to_owned(), Value::to_string)
                            ));
                        }
                    }
                }
            },
            Expect::NoUser => {
                if let Some(got) = got {
                    failures.push(format!("{} [{uid}]: expected no user, got {got}", c.what));
                }
            }
        }
        for n in *first..=*last {
            if Some(n) != expected_bad_line {
                if let Some(reason) = run.bad.get(&n) {
                    failures.push(format!("{} [{uid}]: line {n} is bad: {reason}", c.what));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) in a table of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    run
}

/// An `external_score` of 1 at this `time` (a JSON literal): with [`PLAIN`] rules the user's
/// `last_change` is then the time normalised to UTC.
fn score_at(time_literal: &str) -> String {
    format!(r#"{{"user_id":"{{u}}","time":{time_literal},"type":"external_score","score":1}}"#)
}

fn time_ok(time_literal: &str, utc: &str) -> Case {
    let line = score_at(time_literal);
    user(
        &format!("time {time_literal}"),
        &[&line],
        json!({"score": 1, "last_change": utc}),
    )
}

fn time_bad(time_literal: &str, fragment: &'static str) -> Case {
    let line = score_at(time_literal);
    bad(&format!("time {time_literal}"), &line, fragment)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// SPEC 2: every type
// ---------------------------------------------------------------------------------------------

#[test]
fn every_event_type_is_accepted_and_applied_as_the_spec_says() {
    let t = |m: u32| format!("2026-01-05T10:{m:02}:00Z");
    let cases = vec![
        user(
            "session_start before enrollment never scores",
            &[r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start"}"#],
            json!({"score": 0, "enrolled": false, "attributes": {}, "last_change": null, "inactivity_due": null}),
        ),
        user(
            "email_added enrolls, sets attribute email, scores nothing (no group)",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"a@example.com"}"#,
            ],
            json!({"score": 0, "enrolled": true, "attributes": {"email": "a@example.com"}, "last_change": null}),
        ),
        user(
            "a whole journey: session, pricing pro, pricing free, unsubscribe, status",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"email_added","value":"k@x.io"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:02:00Z","type":"session_start","app_id":"ios"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:03:00Z","type":"custom_event","name":"pricing_viewed","properties":{"plan":"pro"}}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:04:00Z","type":"custom_event","name":"pricing_viewed","properties":{"plan":"free"}}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:05:00Z","type":"custom_event","name":"email_unsubscribed"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:06:00Z","type":"attribute_changed","name":"lead_status","value":"Open"}"#,
            ],
            json!({
                "score": 5, "enrolled": true,
                "attributes": {"email": "k@x.io", "lead_status": "Open"},
                "last_change": t(5), "inactivity_due": "2026-01-12T10:05:00Z",
            }),
        ),
        user(
            "custom_event registered after enrollment scores 1",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"x@y"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"custom_event","name":"registered"}"#,
            ],
            json!({"score": 1, "last_change": t(1)}),
        ),
        user(
            "custom_event of a name no group has changes nothing",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"x@y"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"custom_event","name":"Registered"}"#,
            ],
            json!({"score": 0, "last_change": null}),
        ),
        user(
            "attribute_changed sets attributes before enrollment",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"attribute_changed","name":"lead_status","value":"New"}"#,
            ],
            json!({"score": 0, "enrolled": false, "attributes": {"lead_status": "New"}}),
        ),
        user(
            "attribute_changed with null removes the attribute",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"attribute_changed","name":"lead_status","value":"New"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"attribute_changed","name":"lead_status","value":null}"#,
            ],
            json!({"attributes": {}}),
        ),
        user(
            "external_score score enrolls and sets",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":7}"#,
            ],
            json!({"score": 7, "enrolled": true, "last_change": t(0)}),
        ),
        user(
            "external_score increments add up",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","increment":7}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"external_score","increment":-2}"#,
            ],
            json!({"score": 5, "last_change": t(1)}),
        ),
        user(
            "an excluded user scores no group, but an external score still applies",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"e@corp"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"attribute_changed","name":"is_employee","value":true}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:02:00Z","type":"session_start"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:03:00Z","type":"external_score","increment":4}"#,
            ],
            json!({"score": 4, "attributes": {"email": "e@corp", "is_employee": true}}),
        ),
        case(
            "user_deleted drops the user",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":9}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"user_deleted"}"#,
            ],
            Expect::NoUser,
        ),
        user(
            "after user_deleted the user starts from nothing",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"x@y","event_id":"d-1"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"external_score","score":9}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:02:00Z","type":"user_deleted"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:03:00Z","type":"session_start"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:04:00Z","type":"email_added","value":"x@y","event_id":"d-1"}"#,
            ],
            json!({"score": 0, "enrolled": true, "attributes": {"email": "x@y"}, "last_change": null, "inactivity_due": null}),
        ),
        case(
            "user_deleted of a user never seen",
            &[r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"user_deleted"}"#],
            Expect::NoUser,
        ),
        case(
            "an unknown type creates no user and is not a bad line",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"page_view","url":"/pricing"}"#,
            ],
            Expect::NoUser,
        ),
        user(
            "a repeated event_id within dedupe_window changes nothing, not even attributes",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"x@y"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"session_start","event_id":"s-1"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:02:00Z","type":"session_start","event_id":"s-1"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:03:00Z","type":"attribute_changed","name":"a","value":"first","event_id":"a-1"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:04:00Z","type":"attribute_changed","name":"a","value":"second","event_id":"a-1"}"#,
            ],
            json!({"score": 1, "attributes": {"a": "first", "email": "x@y"}}),
        ),
        user(
            "an unknown type's event_id is not remembered for duplicates",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"x@y"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:01:00Z","type":"page_view","event_id":"same"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:02:00Z","type":"session_start","event_id":"same"}"#,
            ],
            json!({"score": 1}),
        ),
    ];
    let run = check_cases(SEED, &[], &cases);
    assert!(run.bad.is_empty());
}

// ---------------------------------------------------------------------------------------------
// SPEC 2: required fields
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_null_empty_or_wrong_typed_required_fields_are_bad_lines_naming_the_field() {
    const T: &str = r#""time":"2026-01-05T10:00:00Z""#;
    let l = |body: &str| format!("{{{body}}}");
    // A line for the case's user at `T`, with `rest` after those two fields.
    let lu = |rest: &str| l(&format!(r#""user_id":"{{u}}",{T},{rest}"#));
    let lines: Vec<(String, String, &'static str)> = vec![
        // user_id
        (
            "user_id missing".into(),
            l(&format!(r#"{T},"type":"session_start""#)),
            r#"missing field "user_id""#,
        ),
        (
            "user_id null".into(),
            l(&format!(r#""user_id":null,{T},"type":"session_start""#)),
            r#"missing field "user_id""#,
        ),
        (
            "user_id empty".into(),
            l(&format!(r#""user_id":"",{T},"type":"session_start""#)),
            r#"field "user_id": must not be empty"#,
        ),
        (
            "user_id number".into(),
            l(&format!(r#""user_id":5,{T},"type":"session_start""#)),
            r#"field "user_id": expected a string"#,
        ),
        (
            "user_id bool".into(),
            l(&format!(r#""user_id":true,{T},"type":"session_start""#)),
            r#"field "user_id": expected a string"#,
        ),
        (
            "user_id array".into(),
            l(&format!(
                r#""user_id":["{{u}}"],{T},"type":"session_start""#
            )),
            r#"field "user_id": expected a string"#,
        ),
        (
            "user_id object".into(),
            l(&format!(
                r#""user_id":{{"id":"{{u}}"}},{T},"type":"session_start""#
            )),
            r#"field "user_id": expected a string"#,
        ),
        (
            "user_id empty on an unknown type".into(),
            l(&format!(r#""user_id":"",{T},"type":"page_view""#)),
            r#"field "user_id": must not be empty"#,
        ),
        (
            "user_id missing on user_deleted".into(),
            l(&format!(r#"{T},"type":"user_deleted""#)),
            r#"missing field "user_id""#,
        ),
        // time
        (
            "time missing".into(),
            l(r#""user_id":"{u}","type":"session_start""#),
            r#"missing field "time""#,
        ),
        (
            "time null".into(),
            l(r#""user_id":"{u}","time":null,"type":"session_start""#),
            r#"missing field "time""#,
        ),
        (
            "time missing on user_deleted".into(),
            l(r#""user_id":"{u}","type":"user_deleted""#),
            r#"missing field "time""#,
        ),
        (
            "time missing on an unknown type".into(),
            l(r#""user_id":"{u}","type":"page_view""#),
            r#"missing field "time""#,
        ),
        (
            "time bool".into(),
            l(r#""user_id":"{u}","time":true,"type":"session_start""#),
            r#"field "time": expected an RFC 3339 timestamp string, found a boolean"#,
        ),
        (
            "time object".into(),
            l(r#""user_id":"{u}","time":{"seconds":1},"type":"session_start""#),
            r#"field "time": expected an RFC 3339"#,
        ),
        (
            "time array".into(),
            l(r#""user_id":"{u}","time":["2026-01-05T10:00:00Z"],"type":"session_start""#),
            r#"field "time": expected an RFC 3339"#,
        ),
        (
            "time empty string".into(),
            l(r#""user_id":"{u}","time":"","type":"session_start""#),
            r#"field "time": invalid RFC 3339 timestamp"#,
        ),
        // type
        (
            "type missing".into(),
            l(&format!(r#""user_id":"{{u}}",{T}"#)),
            r#"missing field "type""#,
        ),
        (
            "type null".into(),
            lu(r#""type":null"#),
            r#"missing field "type""#,
        ),
        (
            "type number".into(),
            lu(r#""type":1"#),
            r#"field "type": expected a string"#,
        ),
        (
            "type bool".into(),
            lu(r#""type":true"#),
            r#"field "type": expected a string"#,
        ),
        (
            "type array".into(),
            lu(r#""type":["session_start"]"#),
            r#"field "type": expected a string"#,
        ),
        (
            "type object".into(),
            lu(r#""type":{}"#),
            r#"field "type": expected a string"#,
        ),
        // name
        (
            "custom_event name missing".into(),
            lu(r#""type":"custom_event""#),
            r#"missing field "name" (required for custom_event)"#,
        ),
        (
            "custom_event name null".into(),
            lu(r#""type":"custom_event","name":null"#),
            r#"missing field "name" (required for custom_event)"#,
        ),
        (
            "custom_event name empty".into(),
            lu(r#""type":"custom_event","name":"""#),
            r#"field "name": must not be empty"#,
        ),
        (
            "custom_event name number".into(),
            lu(r#""type":"custom_event","name":5"#),
            r#"field "name": expected a string"#,
        ),
        (
            "custom_event name array".into(),
            lu(r#""type":"custom_event","name":["x"]"#),
            r#"field "name": expected a string"#,
        ),
        (
            "attribute_changed name missing".into(),
            lu(r#""type":"attribute_changed","value":1"#),
            r#"missing field "name" (required for attribute_changed)"#,
        ),
        (
            "attribute_changed name null".into(),
            lu(r#""type":"attribute_changed","name":null,"value":1"#),
            r#"missing field "name" (required for attribute_changed)"#,
        ),
        (
            "attribute_changed name empty".into(),
            lu(r#""type":"attribute_changed","name":"","value":1"#),
            r#"field "name": must not be empty"#,
        ),
        (
            "attribute_changed name number".into(),
            lu(r#""type":"attribute_changed","name":5,"value":1"#),
            r#"field "name": expected a string"#,
        ),
        // value
        (
            "attribute_changed value missing".into(),
            lu(r#""type":"attribute_changed","name":"a""#),
            r#"missing field "value" (required for attribute_changed)"#,
        ),
        (
            "attribute_changed value object".into(),
            lu(r#""type":"attribute_changed","name":"a","value":{"x":1}"#),
            r#"field "value": expected a string, number, boolean or null, found an object"#,
        ),
        (
            "attribute_changed value array".into(),
            lu(r#""type":"attribute_changed","name":"a","value":[1]"#),
            r#"field "value": expected a string, number, boolean or null, found an array"#,
        ),
        (
            "email_added value missing".into(),
            lu(r#""type":"email_added""#),
            r#"missing field "value" (required for email_added)"#,
        ),
        (
            "email_added value null".into(),
            lu(r#""type":"email_added","value":null"#),
            r#"field "value": expected a string, found null"#,
        ),
        (
            "email_added value empty".into(),
            lu(r#""type":"email_added","value":"""#),
            r#"field "value": must not be empty"#,
        ),
        (
            "email_added value number".into(),
            lu(r#""type":"email_added","value":5"#),
            r#"field "value": expected a string"#,
        ),
        (
            "email_added value bool".into(),
            lu(r#""type":"email_added","value":true"#),
            r#"field "value": expected a string"#,
        ),
        (
            "email_added value object".into(),
            lu(r#""type":"email_added","value":{"a":"b"}"#),
            r#"field "value": expected a string"#,
        ),
        // optional fields, checked when present
        (
            "event_id empty".into(),
            lu(r#""type":"session_start","event_id":"""#),
            r#"field "event_id": must not be empty"#,
        ),
        (
            "event_id number".into(),
            lu(r#""type":"session_start","event_id":5"#),
            r#"field "event_id": expected a string"#,
        ),
        (
            "event_id empty on user_deleted".into(),
            lu(r#""type":"user_deleted","event_id":"""#),
            r#"field "event_id": must not be empty"#,
        ),
        (
            "event_id number on an unknown type".into(),
            lu(r#""type":"page_view","event_id":7"#),
            r#"field "event_id": expected a string"#,
        ),
        (
            "session_start app_id number".into(),
            lu(r#""type":"session_start","app_id":5"#),
            r#"field "app_id": expected a string"#,
        ),
        (
            "session_start app_id array".into(),
            lu(r#""type":"session_start","app_id":["a"]"#),
            r#"field "app_id": expected a string"#,
        ),
    ];
    let mut cases: Vec<Case> = lines
        .iter()
        .map(|(what, line, frag)| bad(what, line, frag))
        .collect();
    // And the same fields, valid: null optional fields count as absent; an empty app_id is a
    // value; an email is not validated as an address (undocumented: any non-empty string).
    cases.extend([
        user(
            "event_id and app_id null are absent",
            &[r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start","app_id":null,"event_id":null}"#],
            json!({"score": 0, "enrolled": false}),
        ),
        user(
            "app_id empty string",
            &[r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start","app_id":""}"#],
            json!({"score": 0}),
        ),
        user(
            "email_added value need not look like an address (undocumented)",
            &[r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"not an email"}"#],
            json!({"enrolled": true, "attributes": {"email": "not an email"}}),
        ),
        user(
            "attribute_changed value empty string is a value",
            &[r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"attribute_changed","name":"a","value":""}"#],
            json!({"attributes": {"a": ""}}),
        ),
        user(
            "escaped field values and a \\u-escaped type are read as JSON says",
            &[r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_sc\u006fre","score":2}"#],
            json!({"score": 2}),
        ),
        case(
            "whitespace around a user_id is part of it (undocumented); checked below",
            &[r#"{"user_id":" {u} ","time":"2026-01-05T10:00:00Z","type":"external_score","score":3}"#],
            Expect::NoUser,
        ),
    ]);
    let run = check_cases(PLAIN, &[], &cases);
    // The whitespace user id keeps its spaces.
    let padded = user_id_of(cases.len() - 1);
    assert_eq!(run.user(&format!(" {padded} ")).unwrap()["score"], 3);
}

// ---------------------------------------------------------------------------------------------
// SPEC 2: times
// ---------------------------------------------------------------------------------------------

#[test]
fn rfc3339_times_with_offsets_are_accepted_and_normalised_to_utc() {
    let mut cases = vec![
        time_ok(r#""2026-01-05T10:00:00Z""#, "2026-01-05T10:00:00Z"),
        time_ok(r#""2026-01-05t10:00:00z""#, "2026-01-05T10:00:00Z"),
        time_ok(r#""2026-01-05 10:00:00Z""#, "2026-01-05T10:00:00Z"),
        time_ok(r#""2026-01-05T12:00:00+02:00""#, "2026-01-05T10:00:00Z"),
        time_ok(r#""2026-01-05T10:00:00+00:00""#, "2026-01-05T10:00:00Z"),
        time_ok(r#""2026-01-05T10:00:00-00:00""#, "2026-01-05T10:00:00Z"),
        time_ok(
            r#""2026-01-05T10:00:00.123456789+05:45""#,
            "2026-01-05T04:15:00.123Z",
        ),
        time_ok(
            r#""2026-01-05T10:00:00.1-02:30""#,
            "2026-01-05T12:30:00.100Z",
        ),
        time_ok(r#""2026-01-05T10:00:00+23:59""#, "2026-01-04T10:01:00Z"),
        time_ok(r#""2026-01-05T10:00:00-23:59""#, "2026-01-06T09:59:00Z"),
        // offsets cross days, months, years and leap days
        time_ok(r#""2026-01-01T00:30:00+01:00""#, "2025-12-31T23:30:00Z"),
        time_ok(r#""2024-02-29T23:00:00-02:00""#, "2024-03-01T01:00:00Z"),
        time_ok(r#""2026-02-28T23:30:00-01:00""#, "2026-03-01T00:30:00Z"),
        // Feb 29 in leap years (2000 is one, year 0000 of the proleptic calendar too)
        time_ok(r#""2024-02-29T10:00:00Z""#, "2024-02-29T10:00:00Z"),
        time_ok(r#""2000-02-29T10:00:00Z""#, "2000-02-29T10:00:00Z"),
        time_ok(r#""0000-02-29T10:00:00Z""#, "0000-02-29T10:00:00Z"),
        // leap second: the last millisecond of its minute, whatever the fraction; only the
        // minute 23:59 in UTC has one (10:00:60Z is refused, below)
        time_ok(r#""2026-12-31T23:59:60Z""#, "2026-12-31T23:59:59.999Z"),
        time_ok(r#""2026-06-30T23:59:60.123Z""#, "2026-06-30T23:59:59.999Z"),
        time_ok(r#""2027-01-01T00:59:60+01:00""#, "2026-12-31T23:59:59.999Z"),
        time_ok(r#""2026-12-31T18:29:60-05:30""#, "2026-12-31T23:59:59.999Z"),
        // years 0000 and 9999, after the offset
        time_ok(r#""0000-01-01T00:00:00Z""#, "0000-01-01T00:00:00Z"),
        time_ok(r#""0000-01-01T00:00:00-01:00""#, "0000-01-01T01:00:00Z"),
        time_ok(r#""9999-12-31T23:59:59.999Z""#, "9999-12-31T23:59:59.999Z"),
        time_ok(r#""9999-12-31T23:59:60Z""#, "9999-12-31T23:59:59.999Z"),
        time_ok(r#""9999-12-31T23:00:00+01:00""#, "9999-12-31T22:00:00Z"),
    ];
    // Fractions of 1 to 9 digits, and many more, truncated (not rounded) to milliseconds.
    for (frac, ms) in [
        ("0", ""),
        ("1", ".100"),
        ("12", ".120"),
        ("123", ".123"),
        ("1239", ".123"),
        ("12399", ".123"),
        ("123999", ".123"),
        ("1239999", ".123"),
        ("12399999", ".123"),
        ("123999999", ".123"),
        ("0009", ""),
        ("99999999999999999999", ".999"),
    ] {
        cases.push(time_ok(
            &format!(r#""2026-01-05T10:00:00.{frac}Z""#),
            &format!("2026-01-05T10:00:00{ms}Z"),
        ));
    }
    cases.push(time_ok(
        &format!(r#""2026-01-05T10:00:00.{}Z""#, "9".repeat(2000)),
        "2026-01-05T10:00:00.999Z",
    ));
    check_cases(PLAIN, &NO_SKEW_LIMIT, &cases);
}

/// SPEC 2: `time` is an RFC 3339 timestamp. A number, in any unit or form, is the wrong type
/// and a bad line naming the field (epoch milliseconds were accepted until 2026-12-07).
#[test]
fn numeric_times_are_bad_lines_whatever_their_unit() {
    const F: &str = r#"field "time": expected an RFC 3339 timestamp string, found a"#;
    let cases = vec![
        time_bad("1767607200000", F),
        time_bad("1767607200", F),
        time_bad("1767607200000.0", F),
        time_bad("1.7676072e12", F),
        time_bad("0", F),
        time_bad("-1", F),
        time_bad("253402300800000", F),
        time_bad("1767607200000.5", F),
        time_bad("1e300", F),
        time_bad(
            r#""1767607200000""#,
            r#"field "time": invalid RFC 3339 timestamp"#,
        ),
    ];
    check_cases(PLAIN, &NO_SKEW_LIMIT, &cases);
}

#[test]
fn malformed_or_out_of_range_times_are_bad_lines_naming_the_field() {
    const F: &str = r#"field "time": invalid RFC 3339 timestamp"#;
    let mut cases = Vec::new();
    for (t, why) in [
        ("2026-01-05T10:00Z", "expected ':'"),
        ("2026-01-05", "expected 'T'"),
        ("2026-01-05T10:00:00", "expected 'Z' or an offset"),
        ("2026-01-05T10:00:00+0100", "expected ':'"),
        ("2026-01-05T10:00:00+05", "expected ':'"),
        ("2026-01-05T10:00:00.Z", "expected a digit"),
        ("2026-01-05T10:00:00,5Z", "expected 'Z' or an offset"),
        ("2026-01-05T10:00:00 Z", "expected 'Z' or an offset"),
        ("2026-01-05T10:00:00ZZ", "unexpected trailing characters"),
        (
            "2026-01-05T10:00:00Z+01:00",
            "unexpected trailing characters",
        ),
        ("2026-01-05T10:00:00Z ", "unexpected trailing characters"),
        (" 2026-01-05T10:00:00Z", "expected a digit"),
        ("2026-01-05\t10:00:00Z", "expected 'T'"),
        ("2026-01-05  10:00:00Z", "expected a digit"),
        ("2026-1-5T10:00:00Z", "expected a digit"),
        ("2026-01-05T1:00:00Z", "expected a digit"),
        ("+2026-01-05T10:00:00Z", "expected a digit"),
        ("-0001-01-01T00:00:00Z", "expected a digit"),
        ("10000-01-01T00:00:00Z", "expected '-'"),
        ("2026-W02-1T10:00:00Z", "expected a digit"),
        ("2026-005T10:00:00Z", "expected"),
        ("\u{ff12}026-01-05T10:00:00Z", "expected a digit"),
        ("soon", "expected a digit"),
        ("2026-00-05T10:00:00Z", "month 0 out of range"),
        ("2026-13-01T00:00:00Z", "month 13 out of range"),
        ("2026-01-00T10:00:00Z", "day 0 out of range for 2026-01"),
        ("2026-01-32T10:00:00Z", "day 32 out of range for 2026-01"),
        ("2026-04-31T10:00:00Z", "day 31 out of range for 2026-04"),
        ("2026-02-29T10:00:00Z", "day 29 out of range for 2026-02"),
        ("1900-02-29T10:00:00Z", "day 29 out of range for 1900-02"),
        ("2100-02-29T10:00:00Z", "day 29 out of range for 2100-02"),
        ("2026-01-05T24:00:00Z", "hour 24 out of range"),
        ("2026-01-05T10:60:00Z", "minute 60 out of range"),
        ("2026-01-05T10:00:61Z", "second 61 out of range"),
        (
            "2026-01-05T10:00:60Z",
            "second 60 (a leap second) at 10:00, which is not 23:59 in UTC",
        ),
        (
            "2026-12-31T23:59:60+01:00",
            "second 60 (a leap second) at 23:59, which is not 23:59 in UTC",
        ),
        ("2026-01-05T10:00:00+24:00", "offset hour 24 out of range"),
        ("2026-01-05T10:00:00-24:00", "offset hour 24 out of range"),
        ("2026-01-05T10:00:00+01:60", "offset minute 60 out of range"),
        (
            "0000-01-01T00:00:00+00:01",
            "instant is outside years 0000-9999 in UTC",
        ),
        (
            "9999-12-31T23:59:59-00:01",
            "instant is outside years 0000-9999 in UTC",
        ),
        ("", "expected a digit"),
    ] {
        let lit = serde_json::to_string(t).unwrap();
        let line = score_at(&lit);
        cases.push(case(
            &format!("time {lit} ({why})"),
            &[&line],
            Expect::Bad(F),
        ));
    }
    let run = check_cases(PLAIN, &NO_SKEW_LIMIT, &cases);
    // Each reason also names the problem, as listed.
    let mut reasons = run.bad.values();
    for (i, c) in cases.iter().enumerate() {
        let reason = reasons.next().unwrap();
        let why = c.what.rsplit_once(" (").unwrap().1.trim_end_matches(')');
        assert!(reason.contains(why), "case {i} {}: {reason}", c.what);
    }
}

#[test]
fn updated_at_orders_external_scores_by_instant_in_every_time_form() {
    let ext = |sec: u32, score: i64, updated_at: &str| {
        format!(
            r#"{{"user_id":"{{u}}","time":"2026-01-05T10:00:{sec:02}Z","type":"external_score","score":{score}{updated_at}}}"#
        )
    };
    let u = |v: &str| format!(r#","updated_at":{v}"#);
    let c = |what: &str, lines: Vec<String>, score: i64| {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        user(what, &refs, json!({ "score": score }))
    };
    let cases = vec![
        c(
            "a later instant written with an earlier clock reading applies",
            vec![ext(0, 10, &u(r#""2026-01-05T10:00:00+02:00""#)), ext(1, 20, &u(r#""2026-01-05T09:00:00Z""#))],
            20,
        ),
        c(
            "an earlier instant written with a later clock reading is stale",
            vec![ext(0, 10, &u(r#""2026-01-05T09:00:00Z""#)), ext(1, 20, &u(r#""2026-01-05T10:00:00+02:00""#))],
            10,
        ),
        c(
            "equal instants apply, an older one is stale",
            vec![
                ext(0, 10, &u(r#""2026-01-05T11:00:00+01:00""#)),
                ext(1, 20, &u(r#""2026-01-05T10:00:00Z""#)),
                ext(2, 30, &u(r#""2026-01-05T09:59:59.9999Z""#)),
            ],
            20,
        ),
        c(
            "fractions are truncated, not rounded, before comparing",
            vec![ext(0, 10, &u(r#""2026-01-05T10:00:00.0009Z""#)), ext(1, 20, &u(r#""2026-01-05T10:00:00Z""#))],
            20,
        ),
        c(
            "lowercase and space forms",
            vec![ext(0, 10, &u(r#""2026-01-05 10:00:00z""#)), ext(1, 20, &u(r#""2026-01-05t09:00:00Z""#))],
            10,
        ),
        c(
            "one without updated_at applies and clears the remembered one",
            vec![
                ext(0, 10, &u(r#""2026-01-05T10:00:00Z""#)),
                ext(1, 20, ""),
                ext(2, 30, &u(r#""2000-01-01T00:00:00Z""#)),
            ],
            30,
        ),
        c(
            "null updated_at is absent",
            vec![ext(0, 10, &u(r#""9999-12-31T23:59:59Z""#)), ext(1, 20, &u("null"))],
            20,
        ),
        c(
            "updated_at is not checked against the wall clock",
            vec![ext(0, 10, &u(r#""9999-12-31T23:59:59Z""#)), ext(1, 20, &u(r#""2026-01-05T10:00:00Z""#))],
            10,
        ),
        c(
            "updated_at on another type is ignored whatever it holds",
            vec![
                ext(0, 10, ""),
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:01Z","type":"session_start","updated_at":"garbage"}"#.into(),
            ],
            10,
        ),
        bad("updated_at not a time", &ext(0, 1, &u(r#""yesterday""#)), r#"field "updated_at": invalid RFC 3339 timestamp "yesterday""#),
        bad("updated_at a date only", &ext(0, 1, &u(r#""2026-01-05""#)), r#"field "updated_at": invalid RFC 3339 timestamp "2026-01-05""#),
        bad("updated_at Feb 29 of 2026", &ext(0, 1, &u(r#""2026-02-29T00:00:00Z""#)), r#"field "updated_at": invalid RFC 3339 timestamp"#),
        bad("updated_at epoch ms", &ext(0, 1, &u("1767607200000")), r#"field "updated_at": expected an RFC 3339 timestamp string, found a"#),
        bad("updated_at fractional", &ext(0, 1, &u("0.5")), r#"field "updated_at": expected an RFC 3339 timestamp string, found a"#),
        bad("updated_at bool", &ext(0, 1, &u("false")), r#"field "updated_at": expected an RFC 3339 timestamp string, found a boolean"#),
        bad("updated_at object", &ext(0, 1, &u("{}")), r#"field "updated_at": expected an RFC 3339"#),
    ];
    check_cases(PLAIN, &[], &cases);
}

#[test]
fn times_too_far_ahead_of_the_wall_clock_are_bad_lines_and_no_bad_line_moves_the_clock() {
    let soon = leadscore::timestamp::format_rfc3339(now_ms() + 30 * 60 * 1000);
    let late = leadscore::timestamp::format_rfc3339(now_ms() + 2 * 3600 * 1000);
    let soon_line = format!(r#"{{"user_id":"{{u}}","time":"{soon}","type":"page_view"}}"#);
    let late_line = format!(r#"{{"user_id":"{{u}}","time":"{late}","type":"session_start"}}"#);
    let cases = vec![
        user(
            "a decaying user: nothing below may move the clock to its next due time",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":10}"#,
            ],
            json!({"score": 10, "inactivity_due": "2026-01-12T10:00:00Z"}),
        ),
        bad(
            "2099 is more than 1h ahead",
            r#"{"user_id":"{u}","time":"2099-01-05T10:00:00Z","type":"session_start"}"#,
            r#"field "time": 2099-01-05T10:00:00Z is more than 1h ahead of the wall clock"#,
        ),
        bad(
            "an unknown type 2099 is bad too",
            r#"{"user_id":"{u}","time":"2099-01-05T10:00:00Z","type":"page_view"}"#,
            r#"field "time": 2099-01-05T10:00:00Z is more than 1h ahead"#,
        ),
        bad("two hours ahead", &late_line, r#"field "time": "#),
        bad(
            "missing type, dated later",
            r#"{"user_id":"{u}","time":"2026-03-12T10:00:00Z"}"#,
            r#"missing field "type""#,
        ),
        bad(
            "wrong-typed score, dated later",
            r#"{"user_id":"{u}","time":"2026-03-12T10:00:00Z","type":"external_score","score":"x"}"#,
            r#"field "score""#,
        ),
        bad(
            "empty user_id, dated later",
            r#"{"user_id":"","time":"2026-03-12T10:00:00Z","type":"session_start"}"#,
            r#"field "user_id""#,
        ),
        bad(
            "empty event_id, dated later",
            r#"{"user_id":"{u}","time":"2026-03-12T10:00:00Z","type":"session_start","event_id":""}"#,
            r#"field "event_id""#,
        ),
    ];
    check_cases(SEED, &[], &cases);

    // Half an hour ahead is within the default 1h and counts in the clock (the user decays);
    // with a larger --max-future-skew a 2099 event is accepted and moves the clock, and so it
    // is with a --now after it (the simulation's present; the guard used the wall clock
    // alone, so a replay of traffic dated after the day it ran lost those lines).
    for (what, line, args) in [
        ("30 minutes ahead", soon_line.as_str(), &[][..]),
        (
            "2099 with --max-future-skew",
            r#"{"user_id":"{u}","time":"2099-01-05T10:00:00Z","type":"page_view"}"#,
            &NO_SKEW_LIMIT[..],
        ),
        (
            "2099 with a --now after it",
            r#"{"user_id":"{u}","time":"2099-01-05T10:00:00Z","type":"page_view"}"#,
            &["--now", "2099-01-05T10:30:00Z"][..],
        ),
    ] {
        let cases = vec![
            user(
                "decays to min once the clock moves on",
                &[
                    r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":10}"#,
                ],
                json!({"score": 0}),
            ),
            case(what, &[line], Expect::NoUser),
        ];
        check_cases(SEED, args, &cases);
    }
}

// ---------------------------------------------------------------------------------------------
// SPEC 2: score / increment
// ---------------------------------------------------------------------------------------------

#[test]
fn external_scores_take_exactly_one_64_bit_integer_score_or_increment() {
    let one = |op: &str| {
        format!(
            r#"{{"user_id":"{{u}}","time":"2026-01-05T10:00:00Z","type":"external_score",{op}}}"#
        )
    };
    let ok = |op: &str, score: i64| user(op, &[&one(op)], json!({ "score": score }));
    let no = |op: &str, frag: &'static str| bad(op, &one(op), frag);
    let cases = vec![
        ok(r#""score":5"#, 5),
        ok(r#""score":5.0"#, 5),
        ok(r#""score":1e2"#, 100),
        ok(r#""score":1.0e1"#, 10),
        ok(r#""score":-5"#, -5),
        ok(r#""score":-0"#, 0),
        ok(r#""increment":-0.0"#, 0),
        ok(r#""score":9223372036854775807"#, i64::MAX),
        ok(r#""score":-9223372036854775808"#, i64::MIN),
        // As a float, -2^63 is what every integer just below the range rounds to, so it is
        // refused with them (docs/formats.md, "Numbers").
        bad(
            "score -2^63 written as a float",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":-9223372036854775808.0}"#,
            "out of the 64-bit integer range",
        ),
        ok(r#""score":4611686018427387904.0"#, 1 << 62),
        ok(r#""score":null,"increment":4"#, 4),
        ok(r#""score":7,"increment":null"#, 7),
        user(
            "increments add, negative ones too",
            &[
                &one(r#""increment":7"#),
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:01Z","type":"external_score","increment":-2}"#,
            ],
            json!({"score": 5, "last_change": "2026-01-05T10:00:01Z"}),
        ),
        user(
            "a score equal to the current one is no change",
            &[&one(r#""score":0"#)],
            json!({"score": 0, "enrolled": true, "last_change": null}),
        ),
        user(
            "undocumented: an increment past the 64-bit range saturates (no change at the top)",
            &[
                &one(r#""score":9223372036854775807"#),
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:01Z","type":"external_score","increment":9223372036854775807}"#,
            ],
            json!({"score": i64::MAX, "last_change": "2026-01-05T10:00:00Z"}),
        ),
        user(
            "score and increment on another type are ignored whatever they hold",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start","score":"junk","increment":[1]}"#,
            ],
            json!({"score": 0, "enrolled": false}),
        ),
        no(r#""score":5.5"#, r#"field "score": 5.5 is not an integer"#),
        no(r#""score":5e-1"#, r#"field "score": 0.5 is not an integer"#),
        no(
            r#""increment":-0.25"#,
            r#"field "increment": -0.25 is not an integer"#,
        ),
        no(
            r#""score":"5""#,
            r#"field "score": expected an integer, found a string"#,
        ),
        no(
            r#""increment":"1""#,
            r#"field "increment": expected an integer, found a string"#,
        ),
        no(
            r#""score":true"#,
            r#"field "score": expected an integer, found a boolean"#,
        ),
        no(
            r#""score":[5]"#,
            r#"field "score": expected an integer, found an array"#,
        ),
        no(
            r#""score":{"v":5}"#,
            r#"field "score": expected an integer, found an object"#,
        ),
        no(
            r#""score":9223372036854775808"#,
            r#"field "score": 9223372036854775808 is out of the 64-bit integer range"#,
        ),
        no(
            r#""score":12345678901234567890"#,
            r#"field "score": 12345678901234567890 is out of the 64-bit integer range"#,
        ),
        no(r#""score":18446744073709551616"#, r#"field "score": "#),
        no(
            r#""score":9223372036854775807.0"#,
            r#"field "score": 9.223372036854776e18 is out of the 64-bit integer range"#,
        ),
        no(
            r#""score":1e19"#,
            r#"field "score": 1e19 is out of the 64-bit integer range"#,
        ),
        no(
            r#""score":-1e19"#,
            r#"field "score": -1e19 is out of the 64-bit integer range"#,
        ),
        no(r#""score":-9223372036854776833"#, r#"field "score": "#),
        no(
            r#""score":5,"increment":1"#,
            r#"fields "score" and "increment" are both set (external_score needs exactly one)"#,
        ),
        no(
            r#""score":5,"increment":0"#,
            r#"fields "score" and "increment" are both set"#,
        ),
        no(
            r#""updated_at":"2026-01-05T10:00:00Z""#,
            r#"missing field "score" or "increment" (external_score needs exactly one)"#,
        ),
        no(
            r#""score":null,"increment":null"#,
            r#"missing field "score" or "increment""#,
        ),
    ];
    check_cases(PLAIN, &[], &cases);
}

// ---------------------------------------------------------------------------------------------
// SPEC 2: properties and attribute values
// ---------------------------------------------------------------------------------------------

#[test]
fn properties_take_scalars_and_rules_compare_numbers_by_value() {
    let enroll =
        r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"p@x"}"#;
    let event = |props: &str| {
        format!(
            r#"{{"user_id":"{{u}}","time":"2026-01-05T10:01:00Z","type":"custom_event","name":"p"{props}}}"#
        )
    };
    // PLAIN's groups: k equals 1 -> 1, equals "1" -> 10, equals true -> 100, gt 0 -> 1000,
    // anything else -> 10000.
    let ok = |props: &str, score: i64| {
        let e = event(props);
        user(
            &format!("properties{props}"),
            &[enroll, &e],
            json!({ "score": score }),
        )
    };
    let no = |props: &str, frag: &'static str| {
        let e = event(props);
        case(
            &format!("properties{props}"),
            &[enroll, &e],
            Expect::Bad(frag),
        )
    };
    let cases = vec![
        ok(r#","properties":{"k":1}"#, 1),
        ok(r#","properties":{"k":1.0}"#, 1),
        ok(r#","properties":{"k":1e0}"#, 1),
        ok(r#","properties":{"k":"1"}"#, 10),
        ok(r#","properties":{"k":true}"#, 100),
        ok(r#","properties":{"k":2.5}"#, 1000),
        ok(r#","properties":{"k":18446744073709551616}"#, 1000),
        ok(r#","properties":{"k":"2"}"#, 10000),
        ok(r#","properties":{"k":false}"#, 10000),
        ok(r#","properties":{"k":-0}"#, 10000),
        ok(r#","properties":{"k":""}"#, 10000),
        ok(r#","properties":{}"#, 10000),
        ok(r#","properties":null"#, 10000),
        ok("", 10000),
        ok(r#","properties":{"K":1}"#, 10000),
        ok(r#","properties":{"":1,"k":1}"#, 1),
        ok(r#","properties":{"k":1,"other":"x","n":2,"b":false}"#, 1),
        no(
            r#","properties":{"k":null}"#,
            r#"field "properties.k": expected a string, number or boolean, found null"#,
        ),
        no(
            r#","properties":{"k":{"a":1}}"#,
            r#"field "properties.k": expected a string, number or boolean, found an object"#,
        ),
        no(
            r#","properties":{"k":[1]}"#,
            r#"field "properties.k": expected a string, number or boolean, found an array"#,
        ),
        no(
            r#","properties":[1]"#,
            r#"field "properties": expected an object, found an array"#,
        ),
        no(
            r#","properties":"k=1""#,
            r#"field "properties": expected an object, found a string"#,
        ),
        no(
            r#","properties":7"#,
            r#"field "properties": expected an object"#,
        ),
        no(
            r#","properties":{"k":1,"k":2}"#,
            r#"field "properties": "k" appears more than once"#,
        ),
        no(
            r#","properties":{"k":1,"\u006b":2}"#,
            r#"field "properties": "k" appears more than once"#,
        ),
        user(
            "properties on a type without them are ignored whatever they hold",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start","properties":[{"k":null}]}"#,
            ],
            json!({"score": 0}),
        ),
    ];
    check_cases(PLAIN, &[], &cases);
}

#[test]
fn attribute_values_keep_their_json_kind_and_null_removes_them() {
    let set = |v: &str| {
        format!(
            r#"{{"user_id":"{{u}}","time":"2026-01-05T10:00:00Z","type":"attribute_changed","name":"a","value":{v}}}"#
        )
    };
    let ok = |v: &str, want: Value| {
        let l = set(v);
        user(
            &format!("value {v}"),
            &[&l],
            json!({ "attributes": { "a": want } }),
        )
    };
    let long = "y".repeat(60_000);
    let long_lit = format!(r#""{long}""#);
    let cases = vec![
        ok(r#""s""#, json!("s")),
        ok(r#""""#, json!("")),
        ok("1", json!(1)),
        ok("-2", json!(-2)),
        ok("1.0", json!(1.0)),
        ok("12.75", json!(12.75)),
        ok("1.5e300", json!(1.5e300)),
        ok("true", json!(true)),
        ok("false", json!(false)),
        ok("9223372036854775807", json!(i64::MAX)),
        ok("-9223372036854775808", json!(i64::MIN)),
        // Undocumented: exponent notation is a float, as Python's json reads it.
        ok("1e2", json!(100.0)),
        // Undocumented: an integer beyond the 64-bit range becomes the nearest float (lossy).
        ok("18446744073709551615", json!(18446744073709551615.0)),
        // Undocumented: an underflowing float reads as 0.0.
        ok("1e-400", json!(0.0)),
        ok(
            r#""a\u0000b\"\\\u00e9\ud83d\ude00""#,
            json!("a\u{0}b\"\\é😀"),
        ),
        ok(&long_lit, json!(long)),
        user(
            "null removes a set attribute",
            &[&set(r#""x""#), &set("null")],
            json!({"attributes": {}}),
        ),
        user(
            "null on an unset attribute is accepted and leaves nothing",
            &[&set("null")],
            json!({"attributes": {}, "enrolled": false}),
        ),
        user(
            "the last value wins and can change kind",
            &[&set(r#""1""#), &set("1")],
            json!({"attributes": {"a": 1}}),
        ),
        user(
            "attribute email is the one email_added sets; any scalar",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"e@x"}"#,
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:01Z","type":"attribute_changed","name":"email","value":5}"#,
            ],
            json!({"attributes": {"email": 5}, "enrolled": true}),
        ),
        bad(
            "value object",
            &set(r#"{"x":1}"#),
            r#"field "value": expected a string, number, boolean or null, found an object"#,
        ),
        bad(
            "value array",
            &set("[1]"),
            r#"field "value": expected a string, number, boolean or null, found an array"#,
        ),
        // Undocumented: a number too large for a float makes the line malformed.
        bad(
            "value 1e400",
            &set("1e400"),
            "malformed JSON payload: number out of range",
        ),
        // A lone surrogate is not Unicode: malformed.
        bad(
            "value lone surrogate",
            &set(r#""\ud800""#),
            "malformed JSON payload",
        ),
    ];
    let run = check_cases(PLAIN, &[], &cases);
    // The printed text keeps the kind too: 1 stays `1`, 1.0 stays `1.0`.
    assert!(run
        .raw
        .iter()
        .any(|l| l.contains(r#""attributes":{"a":1},"#)));
    assert!(run
        .raw
        .iter()
        .any(|l| l.contains(r#""attributes":{"a":1.0},"#)));
}

// ---------------------------------------------------------------------------------------------
// SPEC 2: unknown types, ignored and unknown fields, repeated keys
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_types_are_skipped_not_bad_lines_and_their_time_moves_the_clock() {
    // One user with a score due to decay at 2026-01-12T10:00Z; only an unknown-type event dated
    // then moves the clock there.
    let events = [
        r#"{"user_id":"d","time":"2026-01-05T10:00:00Z","type":"external_score","score":10}"#,
        r#"{"user_id":"x1","time":"2026-01-05T10:00:00Z","type":"page_view","url":"/pricing","score":"any"}"#,
        r#"{"user_id":"x2","time":"2026-01-05T10:00:00Z","type":"Session_Start"}"#,
        r#"{"user_id":"x3","time":"2026-01-05T10:00:00Z","type":"","name":5,"properties":7}"#,
        r#"{"user_id":"x4","time":"2026-01-05T10:00:00Z","type":"SESSION_START","value":[1]}"#,
        r#"{"user_id":"x5","time":"2026-01-12T10:00:00Z","type":"page_view"}"#,
    ]
    .join("\n");
    let run = simulate(SEED, events.as_bytes(), &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.bad.is_empty());
    assert_eq!(run.user_ids(), ["d"], "unknown types create no user");
    assert_eq!(run.objects[0]["score"], 9, "{}", run.raw[0]);
    assert_eq!(run.objects[0]["last_change"], "2026-01-12T10:00:00Z");

    // Without the unknown-type event at 01-12 nothing decays.
    let first_five: Vec<&str> = events.lines().take(5).collect();
    let run = simulate(SEED, first_five.join("\n").as_bytes(), &[]);
    assert_eq!(run.objects[0]["score"], 10);
}

#[test]
fn fields_a_type_does_not_use_and_unknown_fields_are_ignored_whatever_they_hold() {
    let cases = vec![
        user(
            "custom_event with app_id, value, updated_at, score of any kind",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"custom_event","name":"x","app_id":5,"value":{},"updated_at":"garbage","score":5.5}"#,
            ],
            json!({"score": 0, "attributes": {}}),
        ),
        user(
            "session_start with name, value, properties of any kind",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start","score":"x","value":[1],"name":{"a":1},"properties":7}"#,
            ],
            json!({"score": 0}),
        ),
        user(
            "external_score with name, value, app_id",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":1,"name":5,"value":{"a":[]},"app_id":false}"#,
            ],
            json!({"score": 1, "attributes": {}}),
        ),
        user(
            "email_added with a name does not rename the attribute",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"i@x","name":"other"}"#,
            ],
            json!({"attributes": {"email": "i@x"}}),
        ),
        user(
            "attribute_changed with properties",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"attribute_changed","name":"a","value":1,"properties":{"x":null}}"#,
            ],
            json!({"attributes": {"a": 1}}),
        ),
        case(
            "user_deleted with anything else",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"user_deleted","event_id":"del-1","value":[1],"score":"x"}"#,
            ],
            Expect::NoUser,
        ),
        user(
            "unknown fields with nested values",
            &[
                r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":2,"unknown":{"deep":[1,{"x":null}]},"user":"someone else","Time":"junk"}"#,
            ],
            json!({"score": 2, "last_change": "2026-01-05T10:00:00Z"}),
        ),
    ];
    check_cases(PLAIN, &[], &cases);
}

#[test]
fn repeated_known_keys_are_malformed() {
    const M: &str = "malformed JSON payload: duplicate field";
    let cases = vec![
        bad(
            "user_id twice, same value",
            r#"{"user_id":"{u}","user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start"}"#,
            M,
        ),
        bad(
            "user_id twice, the second escaped",
            r#"{"user_id":"{u}","user\u005fid":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start"}"#,
            M,
        ),
        bad(
            "time twice",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","time":"2026-01-05T11:00:00Z","type":"session_start"}"#,
            M,
        ),
        bad(
            "type twice",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"page_view","type":"session_start"}"#,
            M,
        ),
        bad(
            "score twice",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":1,"score":2}"#,
            M,
        ),
        bad(
            "name twice on a type that does not use it",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start","name":"x","name":"y"}"#,
            M,
        ),
    ];
    check_cases(PLAIN, &[], &cases);
}

// ---------------------------------------------------------------------------------------------
// JSONL framing
// ---------------------------------------------------------------------------------------------

#[test]
fn lines_that_are_not_one_json_object_are_malformed_bad_lines() {
    const M: &str = "malformed JSON payload";
    let ok = r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":1}"#;
    let cases = vec![
        bad(
            "array",
            "[]",
            "malformed JSON payload: invalid type: sequence, expected an event object",
        ),
        bad(
            "array of an event",
            &format!("[{ok}]"),
            "expected an event object",
        ),
        bad("string", r#""session_start""#, "invalid type: string"),
        bad("number", "42", "invalid type: integer `42`"),
        bad("float", "4.5", "invalid type: floating point"),
        bad("null", "null", "invalid type: null"),
        bad("bool", "true", "invalid type: boolean"),
        bad("empty object", "{}", r#"missing field "user_id""#),
        bad(
            "two objects on one line",
            &format!("{ok} {ok}"),
            "malformed JSON payload: trailing characters",
        ),
        bad(
            "trailing garbage",
            &format!("{ok} x"),
            "trailing characters",
        ),
        bad(
            "trailing comma",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start",}"#,
            "trailing comma",
        ),
        bad(
            "unterminated",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z""#,
            M,
        ),
        bad("comment", "// a comment", M),
        bad(
            "single quotes",
            r#"{'user_id':'{u}','time':'2026-01-05T10:00:00Z','type':'session_start'}"#,
            M,
        ),
        bad(
            "NaN",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":NaN}"#,
            M,
        ),
        bad(
            "leading zero",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":01}"#,
            "invalid number",
        ),
        bad(
            "lone surrogate in user_id",
            r#"{"user_id":"\ud800","time":"2026-01-05T10:00:00Z","type":"session_start"}"#,
            M,
        ),
        user(
            "leading and trailing blanks around the object",
            &[&format!("  \t{ok}  ")],
            json!({"score": 1}),
        ),
    ];
    check_cases(PLAIN, &[], &cases);
}

#[test]
fn blank_lines_crlf_bom_and_non_utf8_bytes_are_handled_line_by_line() {
    let ev = |u: &str| {
        format!(
            r#"{{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":1}}"#
        )
    };
    let mut f: Vec<u8> = Vec::new();
    // 1: a UTF-8 BOM at the start of the file is skipped (docs/formats.md)
    f.extend(b"\xEF\xBB\xBF");
    f.extend(ev("bom").as_bytes());
    f.extend(b"\n");
    // 2: CRLF line end: accepted
    f.extend(ev("crlf").as_bytes());
    f.extend(b"\r\n");
    // 3, 4, 5: blank lines (CRLF, LF, whitespace only) are skipped, and still counted
    f.extend(b"\r\n\n  \t \n");
    // 6: two events separated by a bare CR are one line (undocumented): malformed
    f.extend(ev("cr1").as_bytes());
    f.extend(b"\r");
    f.extend(ev("cr2").as_bytes());
    f.extend(b"\n");
    // 7: a non-UTF-8 byte in an unknown field: malformed, the rest goes on
    f.extend(br#"{"user_id":"bin1","time":"2026-01-05T10:00:00Z","type":"session_start","junk":"#);
    f.extend(b"\"\xC3\x28\"}\n");
    // 8: a non-UTF-8 byte in user_id
    f.extend(b"{\"user_id\":\"bin2\xFF\",\"time\":\"2026-01-05T10:00:00Z\",\"type\":\"session_start\"}\n");
    // 9: a NUL byte after the object
    f.extend(ev("nul").as_bytes());
    f.extend(b"\x00\n");
    // 10: a BOM anywhere else is not skipped: malformed
    f.extend(b"\xEF\xBB\xBF");
    f.extend(ev("bom2").as_bytes());
    f.extend(b"\n");
    // 11: the last line has no line end: accepted
    f.extend(ev("last").as_bytes());

    let run = simulate(PLAIN, &f, &[]);
    let lines: Vec<usize> = run.bad.keys().copied().collect();
    assert_eq!(lines, [6, 7, 8, 9, 10], "{}", run.stderr);
    assert!(
        run.bad[&10].starts_with("malformed JSON payload"),
        "{}",
        run.bad[&10]
    );
    assert!(
        run.bad[&6].contains("trailing characters"),
        "{}",
        run.bad[&6]
    );
    assert!(
        run.bad[&7].starts_with("malformed JSON payload: not UTF-8"),
        "{}",
        run.bad[&7]
    );
    assert!(
        run.bad[&8].starts_with("malformed JSON payload: not UTF-8"),
        "{}",
        run.bad[&8]
    );
    assert!(
        run.bad[&9].contains("trailing characters"),
        "{}",
        run.bad[&9]
    );
    assert_eq!(run.user_ids(), ["bom", "crlf", "last"]);
    assert_eq!(run.code, Some(1));
}

#[test]
fn lines_over_64_kib_are_bad_lines_and_long_strings_within_it_are_kept() {
    // A line of exactly `len` bytes (its line end not counted).
    let line = |u: &str, len: usize| {
        let base = format!(
            r#"{{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":1,"pad":""}}"#
        );
        let pad = "p".repeat(len - base.len());
        base.replace(r#""pad":"""#, &format!(r#""pad":"{pad}""#))
    };
    let long_id = "u".repeat(65_000);
    let long_id_line = format!(
        r#"{{"user_id":"{long_id}","time":"2026-01-05T10:00:00Z","type":"session_start"}}"#
    );
    // The user ids are the ones check_cases gives (no `{u}`, which would change the length).
    let u = user_id_of;
    let cases = vec![
        user("65536 bytes", &[&line(&u(0), 65_536)], json!({"score": 1})),
        bad(
            "65537 bytes",
            &line(&u(1), 65_537),
            "payload is 65537 bytes, over the 65536-byte limit",
        ),
        bad(
            "200000 bytes",
            &line(&u(2), 200_000),
            "payload is 200000 bytes, over the 65536-byte limit",
        ),
        bad(
            "leading blanks count",
            &format!("  {}", line(&u(3), 65_535)),
            "payload is 65537 bytes",
        ),
        user(
            "the CR of a CRLF does not count (undocumented)",
            &[&format!("{}\r", line(&u(4), 65_536))],
            json!({"score": 1}),
        ),
    ];
    let run = check_cases(PLAIN, &[], &cases);
    assert_eq!(run.bad.len(), 3);

    let run = simulate(PLAIN, long_id_line.as_bytes(), &[]);
    assert!(run.bad.is_empty(), "{}", run.stderr);
    assert_eq!(run.user_ids(), [long_id]);
}

// ---------------------------------------------------------------------------------------------
// SPEC 5: simulate output
// ---------------------------------------------------------------------------------------------

#[test]
fn simulate_prints_one_object_per_user_sorted_by_user_id_bytes_with_the_documented_fields() {
    let ids = [
        "b",
        "B",
        "a",
        "é",
        "Z",
        "\u{ff61}",
        "\u{10000}",
        "10",
        "9",
        "a ",
        "~",
        "\u{7f}",
        "ab",
        "A",
    ];
    let mut text = String::new();
    for (i, id) in ids.iter().enumerate() {
        let id = serde_json::to_string(id).unwrap();
        // several events per user: still one line each
        for s in 0..3 {
            text.push_str(&format!(
                r#"{{"user_id":{id},"time":"2026-01-05T10:{i:02}:{s:02}Z","type":"external_score","increment":1}}"#
            ));
            text.push('\n');
        }
    }
    let run = simulate(SEED, text.as_bytes(), &[]);
    assert!(run.bad.is_empty(), "{}", run.stderr);
    let mut want: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    want.sort(); // byte (UTF-8) order = code point order
                 // Undocumented: byte order, not UTF-16 order (U+FF61 sorts before U+10000 here; JavaScript's
                 // default sort and Java's String.compareTo put U+10000 first).
    assert_eq!(run.user_ids(), want);
    let fields: BTreeSet<&str> = [
        "user_id",
        "score",
        "enrolled",
        "attributes",
        "last_change",
        "inactivity_due",
    ]
    .into();
    for o in &run.objects {
        let keys: BTreeSet<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, fields, "{o}");
        assert_eq!(o["score"], 3);
        assert_eq!(o["enrolled"], true);
        assert!(o["attributes"].is_object());
    }
}

#[test]
fn now_applies_decays_due_up_to_it_and_never_moves_the_clock_back() {
    let events = concat!(
        r#"{"user_id":"n1","time":"2026-01-05T10:00:00Z","type":"external_score","score":10}"#,
        "\n",
        r#"{"user_id":"n2","time":"2026-01-06T10:00:00Z","type":"external_score","score":10}"#,
        "\n",
    );
    let at = |now: Option<&str>| {
        let args: Vec<&str> = now.map(|n| vec!["--now", n]).unwrap_or_default();
        let run = simulate(SEED, events.as_bytes(), &args);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        run.objects
            .iter()
            .map(|o| {
                (
                    o["score"].as_i64().unwrap(),
                    o["inactivity_due"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let n1_due = "2026-01-12T10:00:00Z".to_owned();
    let n2_due = "2026-01-13T10:00:00Z".to_owned();
    // Without --now the clock stops at the largest event time.
    assert_eq!(at(None), [(10, n1_due.clone()), (10, n2_due.clone())]);
    // A decay due exactly at --now is applied; one millisecond earlier it is not.
    assert_eq!(
        at(Some("2026-01-12T10:00:00Z")),
        [(9, "2026-01-19T10:00:00Z".to_owned()), (10, n2_due.clone())]
    );
    assert_eq!(
        at(Some("2026-01-12T09:59:59.999Z")),
        [(10, n1_due.clone()), (10, n2_due.clone())]
    );
    // Offsets and lowercase are read as in events; several windows at once.
    assert_eq!(
        at(Some("2026-02-01T00:00:00+02:00")),
        [
            (7, "2026-02-02T10:00:00Z".to_owned()),
            (7, "2026-02-03T10:00:00Z".to_owned())
        ]
    );
    assert_eq!(at(Some("2026-01-12t10:00:00z"))[0].0, 9);
    // Never back.
    assert_eq!(
        at(Some("2026-01-01T00:00:00Z")),
        [(10, n1_due), (10, n2_due)]
    );

    // A --now that is not an RFC 3339 time with an offset is a usage error naming --now.
    for bad_now in ["2026-01-12", "1767607200000", "2026-01-12T10:00:00"] {
        let run = simulate_unchecked(SEED, events.as_bytes(), &["--now", bad_now]);
        assert_ne!(run.code, Some(0));
        assert!(run.objects.is_empty());
        assert!(run.stderr.contains("--now"), "{}", run.stderr);
    }
}

#[test]
fn changes_prints_every_score_change_with_the_documented_fields() {
    let events = concat!(
        r#"{"user_id":"u1","time":"2026-01-05T10:00:00Z","type":"email_added","value":"u1@x","event_id":"e-1"}"#,
        "\n",
        r#"{"user_id":"u1","time":"2026-01-05T10:01:00Z","type":"session_start"}"#,
        "\n",
        r#"{"user_id":"u1","time":"2026-01-05T10:02:00Z","type":"attribute_changed","name":"lead_status","value":"Open"}"#,
        "\n",
        r#"{"user_id":"u2","time":"2026-01-05T10:03:00Z","type":"external_score","score":4,"event_id":"x-9"}"#,
        "\n",
        r#"{"user_id":"u2","time":"2026-01-05T10:04:00Z","type":"user_deleted"}"#,
        "\n",
    );
    let run = simulate(
        SEED,
        events.as_bytes(),
        &["--changes", "--now", "2026-01-20T00:00:00Z"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.changes_of("u1"),
        [
            &json!({"event_id": "rule:u1@1767607260000#1", "user_id": "u1", "time": "2026-01-05T10:01:00Z",
                    "previous_score": 0, "score": 1, "delta": 1,
                    "reason": {"kind": "rule", "group": "engaged", "event_id": "simulate/0/1"},
                    "attributes": {}}),
            &json!({"event_id": "attribute:u1@1767607320000#2", "user_id": "u1", "time": "2026-01-05T10:02:00Z",
                    "previous_score": 1, "score": 1, "delta": 0,
                    "reason": {"kind": "attribute", "event_id": "simulate/0/2"},
                    "attributes": {"lead_status": "Open"}}),
            &json!({"event_id": "inactivity:u1@1768212060000#3", "user_id": "u1", "time": "2026-01-12T10:01:00Z",
                    "previous_score": 1, "score": 0, "delta": -1, "windows": 1,
                    "reason": {"kind": "inactivity"},
                    "attributes": {"lead_status": "Open"}}),
        ]
    );
    // Undocumented: a deletion prints no line (the scorer's output tombstone has no JSONL form).
    assert_eq!(
        run.changes_of("u2"),
        [
            &json!({"event_id": "external:u2@1767607380000#1", "user_id": "u2", "time": "2026-01-05T10:03:00Z",
                 "previous_score": 0, "score": 4, "delta": 4,
                 "reason": {"kind": "external", "event_id": "x-9"},
                 "attributes": {}})
        ]
    );
    assert_eq!(run.objects.len(), 4);
}

// ---------------------------------------------------------------------------------------------
// Found by this file: two fixed, one documented.
// ---------------------------------------------------------------------------------------------

/// Accepted as i64::MIN before 2026-12-03: the parser reads them as floats that round to -2^63.
#[test]
fn integers_just_below_the_64_bit_range_are_bad_lines() {
    let cases = vec![
        bad(
            "score -9223372036854775809",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":-9223372036854775809}"#,
            r#"field "score": -9.223372036854776e18 is out of the 64-bit integer range"#,
        ),
        bad(
            "increment -9223372036854775809",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","increment":-9223372036854775809}"#,
            r#"field "increment": "#,
        ),
        bad(
            "score -9223372036854776832",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"external_score","score":-9223372036854776832}"#,
            r#"field "score": "#,
        ),
    ];
    check_cases(PLAIN, &[], &cases);
}

/// Accepted before 2026-12-03: only known fields were checked for repeats.
#[test]
fn a_repeated_unknown_key_in_the_event_object_is_malformed() {
    let cases = vec![
        bad(
            "x twice",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start","x":1,"x":2}"#,
            "malformed JSON payload",
        ),
        bad(
            "x twice, the second escaped",
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"session_start","x":1,"\u0078":2}"#,
            "malformed JSON payload",
        ),
    ];
    check_cases(PLAIN, &[], &cases);
}

/// docs/formats.md, "Numbers": the JSON parser keeps the sign of a zero written `-0`, and only a
/// float holds it, so `-0` (like `-0.0`) is the float -0.0, not the integer 0.
#[test]
fn an_attribute_value_written_minus_zero_is_the_float_minus_zero() {
    let cases = vec![user(
        "value -0",
        &[
            r#"{"user_id":"{u}","time":"2026-01-05T10:00:00Z","type":"attribute_changed","name":"a","value":-0}"#,
        ],
        json!({"attributes": {"a": -0.0}}),
    )];
    let run = check_cases(PLAIN, &[], &cases);
    assert!(
        run.raw[0].contains(r#""attributes":{"a":-0.0}"#),
        "{}",
        run.raw[0]
    );
}

/// `--partitions` below 1 and an `--explain-depth` beyond the scorer's bound are usage errors
/// that name the flag, not a run with a value the scorer could never have.
#[test]
fn simulate_refuses_partitions_below_one_and_an_explain_depth_past_the_scorers_bound() {
    let rules = "[entry]\non = [{ type = \"email_added\" }]\n";
    let line =
        b"{\"user_id\":\"u\",\"time\":\"2026-01-05T10:00:00Z\",\"type\":\"session_start\"}\n";
    for args in [
        &["--partitions", "0"][..],
        &["--partitions=-5"],
        &["--explain", "u", "--explain-depth", "100000"],
        &["--explain", "u", "--explain-depth", "1001"],
    ] {
        let run = simulate_unchecked(rules, line, args);
        assert_eq!(run.code, Some(2), "{args:?}: a usage error\n{}", run.stderr);
        let flag = args
            .iter()
            .find(|a| a.starts_with("--") && *a != &"--explain");
        let flag = flag
            .map(|f| f.split('=').next().unwrap_or(f))
            .unwrap_or_default();
        assert!(
            run.stderr.contains(flag),
            "{args:?}: names {flag}\n{}",
            run.stderr
        );
    }
    let run = simulate(
        rules,
        line,
        &["--explain", "u", "--json", "--explain-depth", "1000"],
    );
    assert_eq!(run.code, Some(0));
}
