use super::schema::{default_entry_matchers, factor_decimal, FactorProblem};
use super::*;
use crate::event::{EventType, Scalar};
use crate::rules::{group_key, Audience, Cap, Decay, Inactivity, Matcher, Output, Predicate, Test};
use std::path::Path;

/// The rules file at `path` (a test's own: small and regular), read whole and parsed as the
/// `leadscore` package's `config::rules_file` does after its bounded read.
fn load_file(path: &Path) -> Result<Rules, RulesErrors> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_bytes(&bytes, &path.display().to_string())
}

/// Parses `source`, expecting errors, and returns them.
fn errors(source: &str) -> Vec<RuleError> {
    match parse_str(source, "test.toml") {
        Ok(rules) => panic!("expected errors, got {rules:?}"),
        Err(RulesErrors(errors)) => errors,
    }
}

/// Parses `source` expecting exactly one error, and returns its (line, key, message).
fn one_error(source: &str) -> (usize, String, String) {
    let errs = errors(source);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let e = &errs[0];
    (e.line, e.key.clone(), e.message.clone())
}

/// Parses `source` expecting exactly one error, at `line` on `key`, whose message contains `part`.
fn expect_error(source: &str, line: usize, key: &str, part: &str) {
    let (at, on, message) = one_error(source);
    assert_eq!((at, on.as_str()), (line, key), "{source:?}: {message}");
    assert!(message.contains(part), "{source:?}: {message}");
}

/// [`expect_error`] where the line is not the point.
fn expect_error_on(source: &str, key: &str, part: &str) {
    let (_, on, message) = one_error(source);
    assert_eq!(on, key, "{source:?}: {message}");
    assert!(message.contains(part), "{source:?}: {message}");
}

fn parse(source: &str) -> Rules {
    match parse_str(source, "test.toml") {
        Ok(rules) => rules,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

const MINIMAL_GROUP: &str =
    "[[group]]\nname = \"g\"\ndelta = 1\ntriggers = [{ type = \"session_start\" }]\n";

fn str_matcher(kind: EventType, name: &str) -> Matcher {
    Matcher {
        kind,
        name: Some(name.to_string()),
        app_id: None,
        properties: Vec::new(),
    }
}

#[test]
fn seed_canvas_loads_as_written() {
    let rules = parse(Rules::SEED_CANVAS);
    assert_eq!(rules.dedupe_window, 86_400_000);
    assert_eq!(rules.score.name, "lead score");
    assert_eq!((rules.score.min, rules.score.max), (Some(0), None));
    assert_eq!(rules.entry.on, default_entry_matchers());
    assert_eq!(rules.entry.reentry_window, 0);
    assert_eq!(rules.audience.include, []);
    assert_eq!(
        rules.audience.exclude,
        [
            Predicate {
                key: "is_employee".into(),
                test: Test::Equals(Scalar::Bool(true)),
            },
            Predicate {
                key: "lifecycle_stage".into(),
                test: Test::In(vec![Scalar::Str("customer".into())]),
            },
        ]
    );
    let names: Vec<&str> = rules.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["engaged", "high intent", "unsubscribed"]);
    let deltas: Vec<i64> = rules.groups.iter().map(|g| g.delta).collect();
    assert_eq!(deltas, [1, 5, -1]);
    assert_eq!(rules.groups[0].triggers.len(), 3);
    assert_eq!(rules.groups[0].cap, None);
    let high = &rules.groups[1];
    assert_eq!(
        high.cap,
        Some(Cap {
            points: 20,
            per: 86_400_000
        })
    );
    assert_eq!(
        high.triggers[0],
        str_matcher(EventType::CustomEvent, "demo_requested")
    );
    assert_eq!(
        high.triggers[1].properties,
        [Predicate {
            key: "plan".into(),
            test: Test::In(vec![
                Scalar::Str("pro".into()),
                Scalar::Str("enterprise".into())
            ]),
        }]
    );
    assert_eq!(
        rules.inactivity,
        Some(Inactivity {
            window: 7 * 86_400_000,
            decay: Decay::Delta(-1),
        })
    );
    assert_eq!(rules.output, Output::default());
}

#[test]
fn b2b_saas_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rules/b2b-saas.toml");
    let rules = match load_file(&path) {
        Ok(rules) => rules,
        Err(e) => panic!("{e}"),
    };
    assert!(rules.groups.len() >= 5);
    assert!(rules.groups.iter().any(|g| g.cap.is_some()));
    assert!(rules.score.max.is_some());
    assert!(!rules.audience.include.is_empty() && !rules.audience.exclude.is_empty());
    assert_eq!(
        rules.inactivity,
        Some(Inactivity {
            window: 14 * 86_400_000,
            decay: Decay::Factor {
                numerator: 9,
                scale: 1
            },
        })
    );
    assert_eq!(
        rules.output.tracked_attributes,
        ["lead_status", "salesforce_lead_id"]
    );
}

#[test]
fn empty_file_takes_every_default() {
    let rules = parse("");
    assert_eq!(rules.dedupe_window, 86_400_000);
    assert_eq!(rules.score.name, "lead score");
    assert_eq!(rules.entry.on, default_entry_matchers());
    assert_eq!(rules.entry.reentry_window, 0);
    assert_eq!(rules.audience, Audience::default());
    assert!(rules.groups.is_empty());
    assert_eq!(rules.inactivity, None);
    assert_eq!(rules.output.tracked_attributes, ["lead_status"]);
}

/// SPEC 4: a change's snapshot holds at least `lead_status`, so a list without it (or an
/// empty one) still tracks it, after the names given.
#[test]
fn lead_status_is_tracked_whether_listed_or_not() {
    let rules = parse("[output]\ntracked_attributes = [\"sf_lead_id\"]\n");
    assert_eq!(
        rules.output.tracked_attributes,
        ["sf_lead_id", "lead_status"]
    );
    let rules = parse("[output]\ntracked_attributes = []\n");
    assert_eq!(rules.output.tracked_attributes, ["lead_status"]);
    let rules = parse("[output]\ntracked_attributes = [\"plan\", \"lead_status\"]\n");
    assert_eq!(rules.output.tracked_attributes, ["plan", "lead_status"]);
}

#[test]
fn entry_without_on_keeps_the_default_matchers() {
    let rules = parse("[entry]\nreentry_window = \"1h\"\n");
    assert_eq!(rules.entry.on, default_entry_matchers());
    assert_eq!(rules.entry.reentry_window, 3_600_000);
}

#[test]
fn every_operator_and_matcher_field_loads() {
    let rules = parse(
        r#"
[audience]
include = [
  { attribute = "a", equals = "x" },
  { attribute = "b", not_in = [1, true, "s"] },
  { attribute = "c", exists = false },
  { attribute = "d", gt = -3 },
  { attribute = "e", gte = 0x10 },
  { attribute = "f", lt = 1_000 },
  { attribute = "g", lte = 7 },
]

[[group]]
name = "web"
delta = 2
triggers = [{ type = "session_start", app_id = "web" }, { type = "attribute_changed", name = "plan" }]
"#,
    );
    let tests: Vec<&Test> = rules.audience.include.iter().map(|p| &p.test).collect();
    assert_eq!(
        tests,
        [
            &Test::Equals(Scalar::Str("x".into())),
            &Test::NotIn(vec![
                Scalar::Int(1),
                Scalar::Bool(true),
                Scalar::Str("s".into())
            ]),
            &Test::Exists(false),
            &Test::Gt(-3),
            &Test::Gte(16),
            &Test::Lt(1000),
            &Test::Lte(7),
        ]
    );
    let triggers = &rules.groups[0].triggers;
    assert_eq!(triggers[0].app_id.as_deref(), Some("web"));
    assert_eq!(triggers[0].kind, EventType::SessionStart);
    assert_eq!(
        triggers[1],
        str_matcher(EventType::AttributeChanged, "plan")
    );
}

/// The decay of an `[inactivity]` table with `factor = <text>`.
fn decay_of(text: &str) -> Option<Decay> {
    let rules = parse(&format!(
        "[inactivity]\nwindow = \"14d\"\nfactor = {text}\n"
    ));
    rules.inactivity.map(|i| i.decay)
}

#[test]
fn factor_is_kept_as_an_exact_decimal() {
    for (text, numerator, scale) in [
        ("0.9", 9, 1),
        ("0.57", 57, 2),
        ("0.500", 5, 1),
        ("1e-5", 1, 5),
        ("2.5e-1", 25, 2),
    ] {
        assert_eq!(
            decay_of(text),
            Some(Decay::Factor { numerator, scale }),
            "{text}"
        );
    }
}

#[test]
fn factor_decimal_reads_plain_and_exponent_forms() {
    use FactorProblem::{OutOfRange, TooPrecise};
    assert_eq!(factor_decimal("0.57"), Ok((57, 2)));
    assert_eq!(factor_decimal("+0.5"), Ok((5, 1)));
    assert_eq!(factor_decimal("1e-5"), Ok((1, 5)));
    assert_eq!(factor_decimal("5.7E-1"), Ok((57, 2)));
    assert_eq!(factor_decimal("0.000_1"), Ok((1, 4)));
    assert_eq!(
        factor_decimal("0.123456789012345678"),
        Ok((123_456_789_012_345_678, 18))
    );
    for out in [
        "1.0", "1", "1.5E2", "-0.25", "0.0", "-0.0", "0e-3", "inf", "-inf", "nan", "1e99",
    ] {
        assert_eq!(factor_decimal(out), Err(OutOfRange), "{out}");
    }
    // 19 places above 1e-19: not kept exactly, so refused.
    for precise in [
        "0.1234567890123456789",
        "0.85051305748992833806",
        "5e-19",
        "1.1e-19",
    ] {
        assert_eq!(factor_decimal(precise), Err(TooPrecise), "{precise}");
    }
    // At or below 1e-19 every 64-bit score decays to 0, as with 1e-19 itself.
    for tiny in [
        "1e-19",
        "0.0000000000000000001",
        "9e-20",
        "1e-400",
        "1e-99999999999999999999",
    ] {
        assert_eq!(factor_decimal(tiny), Ok((1, 19)), "{tiny}");
    }
}

/// A factor is read from the literal as written: through a binary float,
/// `0.29999999999999999` was 0.3, and `0.99999999999999995` was 1.0 and refused.
#[test]
fn factor_is_the_decimal_written_not_its_nearest_float() {
    for (text, numerator, scale) in [
        ("0.29999999999999999", 29_999_999_999_999_999, 17),
        ("0.99999999999999995", 99_999_999_999_999_995, 17),
        ("0.99999999999999999", 99_999_999_999_999_999, 17),
        ("1e-400", 1, 19),
    ] {
        assert_eq!(
            decay_of(text),
            Some(Decay::Factor { numerator, scale }),
            "{text}"
        );
    }
    // 10 × 0.29999999999999999 = 2.9999999999999999, truncated: 2 (0.3 gave 3).
    assert_eq!(
        Decay::Factor {
            numerator: 29_999_999_999_999_999,
            scale: 17
        }
        .apply(10),
        2
    );
    assert_eq!(
        Decay::Factor {
            numerator: 1,
            scale: 19
        }
        .apply(i64::MAX),
        0
    );
    assert_eq!(
        Decay::Factor {
            numerator: 1,
            scale: 19
        }
        .apply(i64::MIN),
        0
    );
}

#[test]
fn reports_a_syntax_error_with_its_location() {
    let (line, key, message) = one_error("a = 1\nb = [1,\n");
    assert_eq!((line, key.as_str()), (2, ""));
    assert!(message.starts_with("TOML syntax error: "), "{message}");
}

#[test]
fn reports_zero_delta_with_line_and_key() {
    expect_error(
        "[[group]]\nname = \"a\"\ndelta = 1\ntriggers = [{ type = \"session_start\" }]\n\n\
             [[group]]\nname = \"b\"\ndelta = 0\ntriggers = [{ type = \"session_start\" }]\n",
        8,
        "group[2].delta",
        "zero",
    );
}

#[test]
fn reports_every_error_not_just_the_first() {
    let errs = errors(
        r#"dedupe_window = "1w"
colour = "red"

[score]
min = 10
max = 5

[[group]]
name = "g"
delta = 0
triggers = []
"#,
    );
    let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (1, "dedupe_window"),
            (2, "colour"),
            (6, "score.max"),
            (10, "group[1].delta"),
            (11, "group[1].triggers"),
        ]
    );
    let report = RulesErrors(errs).to_string();
    assert_eq!(report.lines().count(), 5);
    assert!(
        report.starts_with("test.toml:1:17: dedupe_window: invalid duration: unknown unit"),
        "{report}"
    );
}

#[test]
fn reports_unknown_keys_naming_the_allowed_ones() {
    expect_error(
        "[score]\nname = \"s\"\nmaximum = 3\n",
        3,
        "score.maximum",
        "allowed in [score]: name, min, max",
    );
    // `property` belongs in matchers; an audience predicate also misses its `attribute`.
    let errs = errors("[audience]\nexclude = [{ property = \"x\", exists = true }]\n");
    let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (2, "audience.exclude[1].attribute"),
            (2, "audience.exclude[1].property")
        ]
    );
    assert!(errs[1]
        .message
        .contains("allowed in a predicate: attribute, equals"));
    expect_error_on(
        &format!("{MINIMAL_GROUP}dleta = 1\n"),
        "group[1].dleta",
        "did you mean `delta`?",
    );
}

#[test]
fn reports_wrong_types() {
    let errs = errors(
        "[score]\nname = 3\n\n[entry]\non = { type = \"session_start\" }\n\n[output]\ntracked_attributes = [\"a\", 1]\n",
    );
    let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (2, "score.name"),
            (5, "entry.on"),
            (8, "output.tracked_attributes[2]")
        ]
    );
    assert_eq!(errs[0].message, "expected a string, found an integer");
    expect_error_on("[group]\nname = \"g\"\n", "group", "[[group]]");
}

#[test]
fn an_empty_tracked_attribute_name_is_an_error_naming_its_place() {
    expect_error(
        "[output]\ntracked_attributes = [\"lead_status\", \"\"]\n",
        2,
        "output.tracked_attributes[2]",
        "is empty: an attribute name",
    );
}

#[test]
fn reports_a_float_outside_factor_naming_the_key() {
    expect_error(
        "[[group]]\nname = \"g\"\ndelta = 1.5\ntriggers = [{ type = \"session_start\" }]\n",
        3,
        "group[1].delta",
        FLOAT_RULE,
    );
    let (line, key, _) =
        one_error("[audience]\ninclude = [{ attribute = \"n\", in = [1, 2.0] }]\n");
    assert_eq!((line, key.as_str()), (2, "audience.include[1].in[2]"));
}

#[test]
fn reports_a_factor_outside_zero_to_one() {
    for factor in ["1.0", "1.5", "0.0", "-0.5", "1", "nan", "inf"] {
        expect_error(
            &format!("[inactivity]\nwindow = \"7d\"\nfactor = {factor}\n"),
            3,
            "inactivity.factor",
            "strictly between 0 and 1",
        );
    }
}

#[test]
fn reports_a_factor_too_precise_to_keep_exact() {
    expect_error(
        "[inactivity]\nwindow = \"7d\"\nfactor = 0.85051305748992833806\n",
        3,
        "inactivity.factor",
        "more than 18 decimal places",
    );
}

#[test]
fn reports_both_delta_and_factor() {
    expect_error(
        "[inactivity]\nwindow = \"7d\"\ndelta = -1\nfactor = 0.5\n",
        4,
        "inactivity.factor",
        "not both",
    );
}

#[test]
fn reports_neither_delta_nor_factor() {
    expect_error(
        "\n[inactivity]\nwindow = \"7d\"\n",
        2,
        "inactivity",
        "either `delta`",
    );
}

#[test]
fn reports_a_non_negative_inactivity_delta() {
    for delta in ["0", "2"] {
        expect_error(
            &format!("[inactivity]\nwindow = \"7d\"\ndelta = {delta}\n"),
            3,
            "inactivity.delta",
            "must be negative",
        );
    }
}

#[test]
fn reports_bad_durations_with_the_duration_error() {
    let (line, key, message) = one_error("[entry]\nreentry_window = \"2w\"\n");
    assert_eq!((line, key.as_str()), (2, "entry.reentry_window"));
    assert_eq!(
        message,
        r#"invalid duration: unknown unit "w" in "2w" (use ms, s, m, h or d)"#
    );
    expect_error(
        "[inactivity]\nwindow = \"0s\"\ndelta = -1\n",
        2,
        "inactivity.window",
        "longer than 0s",
    );
    expect_error_on("dedupe_window = 60\n", "dedupe_window", "duration string");
}

#[test]
fn reports_unknown_event_types_listing_the_valid_ones() {
    expect_error(
        "[entry]\non = [{ type = \"email_added\" }, { type = \"page_view\" }]\n",
        2,
        "entry.on[2].type",
        "session_start, custom_event, email_added, attribute_changed, external_score",
    );
    let (_, _, message) = one_error("[entry]\non = [{ type = \"sessionstart\" }]\n");
    assert!(
        message.contains("did you mean \"session_start\"?"),
        "{message}"
    );
}

#[test]
fn reports_a_group_without_triggers() {
    expect_error(
        "[[group]]\nname = \"g\"\ndelta = 1\n",
        1,
        "group[1].triggers",
        "missing required key `triggers`",
    );
    expect_error(
        "[[group]]\nname = \"g\"\ndelta = 1\ntriggers = []\n",
        4,
        "group[1].triggers",
        "at least one trigger",
    );
}

#[test]
fn reports_a_predicate_with_no_operator() {
    expect_error(
        "[audience]\ninclude = [\n  { attribute = \"plan\" },\n]\n",
        3,
        "audience.include[1]",
        "no operator",
    );
}

#[test]
fn reports_a_predicate_with_two_operators_naming_them() {
    expect_error(
        "[[group]]\nname = \"g\"\ndelta = 1\ntriggers = [\n  { type = \"custom_event\", properties = [{ property = \"plan\", equals = \"pro\", in = [\"x\"] }] },\n]\n",
        5,
        "group[1].triggers[1].properties[1]",
        "(`equals`, `in`)",
    );
}

#[test]
fn reports_a_bad_operator_operand() {
    let errs = errors("[audience]\ninclude = [{ attribute = \"a\", in = [] }, { attribute = \"b\", exists = \"yes\" }, { attribute = \"c\", gt = \"5\" }]\n");
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "audience.include[1].in",
            "audience.include[2].exists",
            "audience.include[3].gt"
        ]
    );
}

#[test]
fn reports_a_duplicate_group_name() {
    let source = format!(
        "{MINIMAL_GROUP}\n[[group]]\nname = \"g\"\ndelta = 2\ntriggers = [{{ type = \"session_start\" }}]\n"
    );
    expect_error(&source, 7, "group[2].name", "group[1] on line 2");
}

/// Cap usage is kept under a 32-bit hash of the group's name: two names with one hash
/// (found by search, an outside review's pair) would share one cap, so the file is refused.
#[test]
fn reports_two_group_names_with_one_cap_key() {
    assert_eq!(group_key("g1222881"), group_key("g1414990"));
    let source = "[[group]]\nname = \"g1222881\"\ndelta = 5\ntriggers = [{ type = \"session_start\" }]\n\
                  cap = { points = 5, per = \"1d\" }\n\n\
                  [[group]]\nname = \"g1414990\"\ndelta = 5\ntriggers = [{ type = \"email_added\" }]\n\
                  cap = { points = 5, per = \"1d\" }\n";
    expect_error(
        source,
        8,
        "group[2].name",
        "the same 32-bit key as group \"g1222881\"",
    );
}

#[test]
fn reports_min_greater_than_max() {
    let (line, key, message) = one_error("[score]\nmax = 5\nmin = 10\n");
    assert_eq!((line, key.as_str()), (2, "score.max"));
    assert_eq!(message, "max (5) is less than min (10)");
}

#[test]
fn reports_missing_required_keys() {
    let errs = errors("[[group]]\ncap = { per = \"1d\" }\n\n[inactivity]\ndelta = -1\n\n[entry]\non = [{ name = \"x\" }]\n");
    let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (1, "group[1].name"),
            (1, "group[1].delta"),
            (1, "group[1].triggers"),
            (2, "group[1].cap.points"),
            (4, "inactivity.window"),
            (8, "entry.on[1].type"),
        ]
    );
}

#[test]
fn reports_a_bad_cap() {
    let (line, key, _) = one_error(&MINIMAL_GROUP.replace(
        "delta = 1\n",
        "delta = 1\ncap = { points = 0, per = \"1d\" }\n",
    ));
    assert_eq!((line, key.as_str()), (4, "group[1].cap.points"));
}

#[test]
fn quotes_keys_that_are_not_bare() {
    let (_, key, _) = one_error("[score]\n\"my key\" = 1\n");
    assert_eq!(key, "score.\"my key\"");
}

#[test]
fn display_is_file_line_column_key_message() {
    let e = RuleError {
        file: "r.toml".into(),
        line: 7,
        column: 9,
        key: "group[1].delta".into(),
        message: "boom".into(),
    };
    assert_eq!(e.to_string(), "r.toml:7:9: group[1].delta: boom");
    let e = RuleError {
        key: String::new(),
        ..e
    };
    assert_eq!(e.to_string(), "r.toml:7:9: boom");
}

/// The one error of parsing `bytes` as `file`.
fn bytes_error(bytes: &[u8], file: &str) -> RuleError {
    match parse_bytes(bytes, file) {
        Ok(rules) => panic!("{file} loaded: {rules:?}"),
        Err(RulesErrors(mut errs)) => {
            assert_eq!(errs.len(), 1, "{errs:#?}");
            errs.remove(0)
        }
    }
}

/// Past the cap (the caller reads one byte more than it) the bytes are not a rules file:
/// `/dev/zero` given by mistake reads as zeros, valid UTF-8.
#[test]
fn bytes_past_the_size_cap_are_one_error_naming_the_file() {
    let e = bytes_error(&vec![0u8; MAX_RULES_BYTES + 1], "/dev/zero");
    assert_eq!(
        (e.file.as_str(), e.line, e.key.as_str()),
        ("/dev/zero", 0, "")
    );
    assert!(e.message.contains("larger than 1 MiB"), "{e}");
    assert!(e.to_string().starts_with("/dev/zero: "), "{e}");
}

#[test]
fn a_file_at_the_cap_loads_and_one_byte_more_does_not() {
    let path =
        std::env::temp_dir().join(format!("leadscore-rules-cap-{}.toml", std::process::id()));
    let mut text = "#".repeat(MAX_RULES_BYTES - 1);
    text.push('\n');
    std::fs::write(&path, &text).expect("write the temporary file");
    let at_cap = load_file(&path);
    text.push('\n');
    std::fs::write(&path, &text).expect("write the temporary file");
    let over = load_file(&path);
    let _ = std::fs::remove_file(&path);
    assert!(at_cap.is_ok(), "{at_cap:?}");
    assert!(over.is_err());
}

#[test]
fn a_file_that_is_not_utf8_is_refused() {
    let path =
        std::env::temp_dir().join(format!("leadscore-rules-utf8-{}.toml", std::process::id()));
    std::fs::write(&path, b"[score]\nname = \"\xff\"\n").expect("write the temporary file");
    let result = load_file(&path);
    let _ = std::fs::remove_file(&path);
    let Err(RulesErrors(errs)) = result else {
        panic!("loaded")
    };
    assert!(errs[0].message.contains("not UTF-8"), "{}", errs[0]);
}

#[test]
fn columns_count_characters_not_bytes() {
    let errs = errors("[audience]\ninclude = [{ attribute = \"été\", gt = 1.5 }]\n");
    assert_eq!((errs[0].line, errs[0].column), (2, 38));
}

/// Every file in `examples/rules/invalid/` starts with `# expect: LINE KEY` and must produce
/// exactly that one error, so the examples cannot drift from the loader.
#[test]
fn invalid_examples_report_the_expected_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rules/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/rules/invalid exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "only {} invalid examples", files.len());
    for path in files {
        let source = std::fs::read_to_string(&path).expect("readable");
        let expect = source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect: LINE KEY` first line", path.display()));
        // A syntax error has an empty key: `# expect: 4`.
        let (line, key) = expect.trim().split_once(' ').unwrap_or((expect.trim(), ""));
        let line: usize = line
            .parse()
            .unwrap_or_else(|_| panic!("{}: bad expect line", path.display()));
        match load_file(&path) {
            Ok(_) => panic!("{} loaded without error", path.display()),
            Err(RulesErrors(errs)) => {
                assert_eq!(errs.len(), 1, "{}: {errs:#?}", path.display());
                assert_eq!(
                    (errs[0].line, errs[0].key.as_str()),
                    (line, key.trim()),
                    "{}: {}",
                    path.display(),
                    errs[0]
                );
            }
        }
    }
}
