use super::*;
use crate::dev::scratch::ScratchDir;

const EXAMPLE: &str = include_str!("../../deploy/config/leadscore.example.toml");

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(file: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(Some(("test.toml", file)), env(vars))
}

fn load_err(file: &str, vars: &[(&str, &str)]) -> String {
    match load(file, vars) {
        Ok(settings) => panic!("expected an error, loaded {settings:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that loading fails with an error containing `want`, and returns the error.
fn assert_load_err(file: &str, vars: &[(&str, &str)], want: &str) -> String {
    let e = load_err(file, vars);
    assert!(e.contains(want), "{want:?} not in: {e}");
    e
}

#[test]
fn defaults_match_the_documented_values() {
    let s = Settings::load_from(None, env(&[])).expect("defaults load");
    assert_eq!(s, Settings::default());
    assert_eq!(s.kafka.get("bootstrap.servers"), Some("localhost:9092"));
    assert_eq!(s.kafka.properties.len(), 1);
    assert_eq!(s.topics.input, "lead-events");
    assert_eq!(s.topics.changelog, "leadscore-scorer-changelog");
    assert_eq!(s.topics.output, "lead-score-changes");
    assert_eq!(s.topics.dlq, "lead-events-dlq");
    assert_eq!(s.topics.handoffs, "lead-handoffs");
    assert_eq!(s.topics.handoffs_dlq, "lead-handoffs-dlq");
    assert_eq!(s.topics.handoff_changelog, "leadscore-handoff-changelog");
    assert_eq!((s.topics.partitions, s.topics.replication_factor), (6, 1));
    assert_eq!(s.scorer.group_id, "leadscore-scorer");
    assert_eq!(s.scorer.rules, None);
    assert_eq!(s.scorer.state_dir, PathBuf::from("./state/scorer"));
    assert_eq!(s.scorer.guarantee, Guarantee::AtLeastOnce);
    assert_eq!(s.scorer.input_format, Format::Json);
    assert_eq!(s.scorer.output_format, Format::Json);
    assert_eq!(s.scorer.max_event_bytes, 65_536);
    assert_eq!(s.scorer.batch_max_events, 5_000);
    assert_eq!(s.scorer.batch_max_wait, Duration::from_millis(100));
    assert!(s.scorer.follow_wall_clock);
    assert_eq!(s.scorer.transactional_id, None);
    assert_eq!(s.handoff.group_id, "leadscore-handoff");
    assert_eq!(s.handoff.state_dir, PathBuf::from("./state/handoff"));
    assert_eq!(s.handoff.threshold, 100);
    assert_eq!(s.handoff.status_order, DEFAULT_STATUS_ORDER);
    assert_eq!(s.handoff.handoff_status, "MQL");
    assert!(s.handoff.skip_statuses.is_empty());
    assert_eq!(s.handoff.status_attribute, "lead_status");
    assert_eq!(s.handoff.lead_id_attribute, None);
    assert_eq!(s.handoff.lead_id_pattern, None);
    assert_eq!(
        s.handoff.patch_body,
        serde_json::json!({"lead_status": "MQL"})
    );
    assert_eq!(s.handoff.linger, Duration::from_millis(200));
    assert_eq!(s.handoff.max_batch, 200);
    assert_eq!(
        s.handoff.max_attempts, None,
        "retried until the call succeeds"
    );
    assert_eq!(s.handoff.backoff_initial, Duration::from_millis(200));
    assert_eq!(s.handoff.backoff_max, Duration::from_secs(30));
    assert_eq!(s.handoff.limit_pause, Duration::from_secs(60));
    assert_eq!(s.salesforce.instance_url, "http://127.0.0.1:8089");
    assert_eq!(s.salesforce.api_version, "v60.0");
    assert_eq!(s.salesforce.client_id, "");
    assert_eq!(
        s.salesforce.client_secret_env,
        "LEADSCORE_SALESFORCE_CLIENT_SECRET"
    );
    assert_eq!(s.salesforce.client_secret_file, None);
    assert_eq!(s.salesforce.timeout, Duration::from_secs(10));
    assert_eq!(s.admin.listen, "0.0.0.0:9464");
    assert_eq!(s.log.format, LogFormat::Human);
    assert_eq!(s.log.level, "info");
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    let file = r#"
        [scorer]
        rules = "file-rules.toml"
        batch_max_events = 100
        batch_max_wait = "1s"
        [handoff]
        threshold = 50
    "#;
    let s = load(
        file,
        &[
            ("LEADSCORE__SCORER__RULES", "/etc/rules.toml"),
            ("LEADSCORE__SCORER__GUARANTEE", "exactly_once"),
            ("LEADSCORE__HANDOFF__LINGER", "50ms"),
            ("UNRELATED", "ignored"),
        ],
    )
    .expect("loads");
    assert_eq!(s.scorer.rules, Some(PathBuf::from("/etc/rules.toml")));
    assert_eq!(s.scorer.guarantee, Guarantee::ExactlyOnce);
    assert_eq!(s.scorer.batch_max_events, 100);
    assert_eq!(s.scorer.batch_max_wait, Duration::from_secs(1));
    assert_eq!(s.handoff.threshold, 50);
    assert_eq!(s.handoff.linger, Duration::from_millis(50));
    assert_eq!(s.handoff.max_batch, 200, "untouched keys keep defaults");
    assert_eq!(
        s.scorer.rules_path().ok(),
        Some(Path::new("/etc/rules.toml"))
    );
}

#[test]
fn env_values_parse_as_toml_literals_or_strings() {
    let s = load(
        "",
        &[
            ("LEADSCORE__SCORER__BATCH_MAX_EVENTS", "1000"),
            ("LEADSCORE__SCORER__FOLLOW_WALL_CLOCK", "false"),
            ("LEADSCORE__HANDOFF__SKIP_STATUSES", r#"["MQL", "SQL"]"#),
            ("LEADSCORE__HANDOFF__STATUS_ATTRIBUTE", r#""status""#),
            ("LEADSCORE__HANDOFF__PATCH_BODY", r#"{"Status": "MQL"}"#),
            ("LEADSCORE__ADMIN__LISTEN", "127.0.0.1:9000"),
            // A number where a string belongs falls back to the text as written.
            ("LEADSCORE__SALESFORCE__CLIENT_ID", "12345"),
            ("LEADSCORE__LOG__FORMAT", "json"),
        ],
    )
    .expect("loads");
    assert_eq!(s.scorer.batch_max_events, 1000);
    assert!(!s.scorer.follow_wall_clock);
    assert_eq!(s.handoff.skip_statuses, ["MQL", "SQL"]);
    assert_eq!(s.handoff.status_attribute, "status");
    assert_eq!(s.handoff.patch_body, serde_json::json!({"Status": "MQL"}));
    assert_eq!(s.admin.listen, "127.0.0.1:9000");
    assert_eq!(s.salesforce.client_id, "12345");
    assert_eq!(s.log.format, LogFormat::Json);

    assert_load_err(
        "",
        &[("LEADSCORE__SCORER__BATCH_MAX_EVENTS", "many")],
        "scorer.batch_max_events",
    );
}

#[test]
fn patch_body_accepts_an_inline_table_or_a_json_string() {
    let table = load(r#"handoff.patch_body = { Status = "MQL" }"#, &[]).expect("table");
    let json = load(r#"handoff.patch_body = '{"Status": "MQL"}'"#, &[]).expect("json");
    assert_eq!(table.handoff.patch_body, json.handoff.patch_body);
    assert_load_err(
        r#"handoff.patch_body = "[1, 2]""#,
        &[],
        "handoff.patch_body: must be a JSON object",
    );
}

/// A body of no fields would mark every lead handed off and change nothing; a pause of nothing
/// after 403 REQUEST_LIMIT_EXCEEDED would call again at once.
#[test]
fn an_empty_patch_body_and_a_zero_limit_pause_are_refused() {
    assert_load_err(
        "handoff.patch_body = {}",
        &[],
        "handoff.patch_body: must set at least one field",
    );
    assert_load_err("handoff.patch_body = '{}'", &[], "handoff.patch_body");
    assert_load_err(r#"handoff.limit_pause = "0s""#, &[], "handoff.limit_pause");
    load(r#"handoff.limit_pause = "1ms""#, &[]).expect("a pause of 1 ms");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let e = load_err("[scorer]\nrulez = \"x.toml\"\n", &[]);
    assert!(
        e.starts_with(r#"config test.toml: unknown key "scorer.rulez" (expected one of: group_id, rules, state_dir,"#),
        "{e}"
    );
    let e = load_err("[scorers]\n", &[]);
    assert!(e.contains(r#"unknown key "scorers""#), "{e}");
    assert!(e.contains("kafka, topics, scorer"), "{e}");
    let e = load_err("[handoff]\nthreshold = \"high\"\n", &[]);
    assert!(
        e.starts_with("config test.toml: handoff.threshold: "),
        "{e}"
    );
    let e = load_err("[scorer]\nbatch_max_wait = \"5x\"\n", &[]);
    assert!(e.contains("scorer.batch_max_wait"), "{e}");
    assert!(e.contains(r#"unknown unit "x""#), "{e}");
    assert_load_err(
        "[scorer]\nguarantee = \"exactly\"\n",
        &[],
        "scorer.guarantee",
    );
    assert_load_err("topics = 3\n", &[], "topics: must be a table");
    let e = load_err("[scorer\n", &[]);
    assert!(e.starts_with("config test.toml: TOML parse error"), "{e}");
}

/// A syntax error names the file, line and column and what is wrong, but never quotes the
/// line: a typo on a credential's line printed the credential (the parser's own message
/// shows the source line), into the logs of whatever started the service.
#[test]
fn a_syntax_error_on_a_credential_line_does_not_show_the_credential() {
    for (file, line) in [
        // A missing closing quote.
        ("[kafka]\nsasl_password = \"hunter2secretXYZ\n", 2),
        // The key twice.
        (
            "[kafka]\nsasl_password = \"hunter2secretXYZ\"\nsasl_password = \"hunter2secretXYZ\"\n",
            3,
        ),
        // A URL with its password, the quote missing.
        (
            "[scorer]\n\n[warehouse]\nurl = \"postgresql://u:hunter2secretXYZ@db/x\n",
            4,
        ),
    ] {
        let e = load_err(file, &[]);
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            e.starts_with(&format!(
                "config test.toml: TOML parse error at line {line}, column "
            )),
            "{e}"
        );
    }
}

#[test]
fn kafka_properties_pass_through_verbatim_with_underscores_as_dots() {
    let file = r#"
        [kafka]
        bootstrap_servers = "file:9092"
        "enable.idempotence" = true
        queue_buffering_max_ms = 5
        ssl.ca.location = "/etc/ca.pem"
        "security.protocol" = "SASL_SSL"
    "#;
    let s = load(file, &[("LEADSCORE__KAFKA__BOOTSTRAP_SERVERS", "env:9092")]).expect("loads");
    let props: Vec<(&str, &str)> = s.kafka.iter().collect();
    assert_eq!(
        props,
        [
            ("bootstrap.servers", "env:9092"),
            ("enable.idempotence", "true"),
            ("queue.buffering.max.ms", "5"),
            ("security.protocol", "SASL_SSL"),
            ("ssl.ca.location", "/etc/ca.pem"),
        ]
    );
    let s = load("[kafka]\n\"bootstrap.servers\" = \"a:1\"\n", &[]).expect("loads");
    assert_eq!(s.kafka.get("bootstrap.servers"), Some("a:1"));
    let s = load("[kafka]\nclient_id = \"x\"\n", &[]).expect("loads");
    assert_eq!(s.kafka.get("bootstrap.servers"), Some("localhost:9092"));
    assert_eq!(s.kafka.get("client.id"), Some("x"));

    let e = load_err(
        "[kafka]\nbootstrap_servers = \"a\"\n\"bootstrap.servers\" = \"b\"\n",
        &[],
    );
    assert!(e.contains("kafka.bootstrap.servers: set twice"), "{e}");
}

#[test]
fn a_patch_body_setting_another_funnel_status_than_the_handoff_status_is_refused() {
    let e = Settings::load_from(
        None,
        env(&[(
            "LEADSCORE__HANDOFF__PATCH_BODY",
            r#"{"lead_status": "SQL"}"#,
        )]),
    )
    .expect_err("SQL is not the handoff status")
    .to_string();
    assert!(
        e.contains("handoff.patch_body") && e.contains("\"SQL\"") && e.contains("\"MQL\""),
        "{e}"
    );
    // The handoff status in any case and spacing, or a body that sets no status, loads.
    for body in [
        r#"{"lead_status": " mql "}"#,
        r#"{"Marketing_Qualified__c": true}"#,
        r#"{"Status": "MQL", "Rating": "Hot"}"#,
    ] {
        let loaded = Settings::load_from(None, env(&[("LEADSCORE__HANDOFF__PATCH_BODY", body)]));
        assert!(
            loaded.is_ok(),
            "{body}: {:?}",
            loaded.err().map(|e| e.to_string())
        );
    }
}

#[test]
fn handoff_waits_past_a_day_or_lingering_past_an_hour_are_refused() {
    // (setting, too long, the longest taken)
    for (key, over, most) in [
        ("linger", "9999d", "1h"),
        ("linger", "61m", "1h"),
        ("backoff_max", "99999d", "24h"),
        ("limit_pause", "25h", "24h"),
    ] {
        let var = format!("LEADSCORE__HANDOFF__{}", key.to_uppercase());
        let load = |value: &str| Settings::load_from(None, vec![(var.clone(), value.to_string())]);
        let e = load(over).expect_err(over).to_string();
        assert!(
            e.contains(&format!("handoff.{key}")) && e.contains("at most"),
            "{var}={over}: {e}"
        );
        assert!(load(most).is_ok(), "{var}={most}");
    }
}

#[test]
fn a_setting_with_one_underscore_after_leadscore_is_refused_not_ignored() {
    let e = Settings::load_from(None, env(&[("LEADSCORE_SALESFORCE__CLIENT_ID", "abc")]))
        .expect_err("a mistyped setting")
        .to_string();
    assert!(
        e.contains("LEADSCORE_SALESFORCE__CLIENT_ID")
            && e.contains("did you mean LEADSCORE__SALESFORCE__CLIENT_ID?"),
        "{e}"
    );
    assert!(!e.contains("abc"), "never the value: {e}");
    // Variables read by name, with one underscore and no double one, are not settings.
    let s = Settings::load_from(
        None,
        env(&[
            ("LEADSCORE_SALESFORCE_CLIENT_SECRET", "s"),
            ("LEADSCORE_TEST_BROKER", "tansu"),
        ]),
    );
    assert!(s.is_ok(), "{:?}", s.err().map(|e| e.to_string()));
}

#[test]
fn env_var_names_the_source_in_errors() {
    let e = load_err("", &[("LEADSCORE__SCORER__BATCH_MAX_EVENTS", "0")]);
    assert_eq!(
        e,
        "config test.toml, environment variable LEADSCORE__SCORER__BATCH_MAX_EVENTS: \
         scorer.batch_max_events: must be greater than 0"
    );
    let e = load_err("", &[("LEADSCORE__SCORER__RULEZ", "x")]);
    assert!(
        e.starts_with(
            r#"config test.toml, environment variable LEADSCORE__SCORER__RULEZ: unknown key "scorer.rulez""#
        ),
        "{e}"
    );
    let e = Settings::load_from(None, env(&[("LEADSCORE__HANDOFF__LINGER", "soon")]))
        .expect_err("bad duration")
        .to_string();
    assert!(
        e.starts_with(
            "config from environment variable LEADSCORE__HANDOFF__LINGER: handoff.linger:"
        ),
        "{e}"
    );
    assert_load_err(
        "scorer = 1\n",
        &[("LEADSCORE__SCORER__RULES", "r.toml")],
        "scorer: is an integer, not a table",
    );
    assert_load_err(
        "",
        &[("LEADSCORE__SCORER____RULES", "r.toml")],
        "LEADSCORE__SCORER____RULES: has an empty path segment",
    );
    let e = load_err(
        "",
        &[
            ("LEADSCORE__KAFKA__BOOTSTRAP_SERVERS", "a"),
            ("LEADSCORE__KAFKA__BOOTSTRAP__SERVERS", "b"),
        ],
    );
    assert!(e.contains("sets the same key as"), "{e}");
}

#[test]
fn cross_field_errors_name_the_field() {
    let e = load_err("[topics]\noutput = \"lead-events\"\n", &[]);
    assert_eq!(
        e,
        r#"config test.toml: topics.output: must differ from topics.input (both are "lead-events")"#
    );
    for (file, want) in [
        (
            "[scorer]\nbatch_max_events = 0\n",
            "scorer.batch_max_events: must be greater than 0",
        ),
        (
            "[handoff]\nmax_batch = 201\n",
            "handoff.max_batch: must be between 1 and 200",
        ),
        (
            "[handoff]\nbackoff_max = \"100ms\"\n",
            "handoff.backoff_max: must not be less than",
        ),
        (
            "[admin]\nlisten = \"localhost\"\n",
            "admin.listen: \"localhost\" is not a socket address",
        ),
        (
            "[scorer]\nexplain_depth = 5000\n",
            "scorer.explain_depth: must be at most 1000",
        ),
        (
            "[log]\nlevel = \"not a [filter\"\n",
            "log.level: \"not a [filter\" is not a log filter",
        ),
        (
            "[log]\nlevel = \"info,leadscore=loud\"\n",
            "log.level: \"info,leadscore=loud\" is not a log filter",
        ),
        (
            "[handoff]\ngroup_id = \"leadscore-scorer\"\n",
            "handoff.group_id: must differ from scorer.group_id",
        ),
        // Found by an outside check: the lookup directory written into the score changes,
        // logging silenced by a level word the filter took for a target, a 3 GB body.
        (
            "[topics]\ninstances = \"lead-score-changes\"\n",
            "topics.instances: the lead lookup directory topic \"lead-score-changes\" must differ from topics.output",
        ),
        (
            "[log]\nlevel = \"warning\"\n",
            "log.level: \"warning\" is not a level",
        ),
        (
            "[kafka]\n\"group.id\" = \"sneaky\"\n",
            "kafka.group.id: \"group.id\" is set by leadscore itself and would be ignored: set scorer.group_id",
        ),
        (
            "[log]\nlevel = \"info,Verbose\"\n",
            "log.level: \"Verbose\" is not a level",
        ),
        (
            "[ingest]\nmax_body_bytes = 99999999999999\n",
            "ingest.max_body_bytes: must be at most 33554432",
        ),
        (
            "[warehouse]\nexport_group_id = \"leadscore-handoff\"\n",
            "warehouse.export_group_id: must differ from handoff.group_id",
        ),
        (
            "[warehouse]\nexport_group_id = \"leadscore-scorer\"\n",
            "warehouse.export_group_id: must differ from scorer.group_id",
        ),
        (
            "[salesforce]\ninstance_url = \"example.com\"\n",
            "salesforce.instance_url:",
        ),
    ] {
        assert_load_err(file, &[], want);
    }
    for bad in ["scorer-0:9464", "ftp://x:1", "http://x:1/some/path"] {
        let e = load_err(&format!("[admin]\nadvertised_url = \"{bad}\"\n"), &[]);
        assert!(
            e.contains("admin.advertised_url: ") && e.contains("is not an http:// or https:// URL"),
            "{bad}: {e}"
        );
    }
    let e = load(
        "[topics]\npartitions = 0\n",
        &[("LEADSCORE__TOPICS__PARTITIONS", "3")],
    )
    .expect("the variable overrides the bad file value");
    assert_eq!(e.topics.partitions, 3);
}

#[test]
fn the_funnel_settings_must_describe_one_funnel() {
    let s = load(
        "[handoff]\nstatus_order = [\"Lead\", \"Qualified\", \"Won\"]\nhandoff_status = \" qualified\"\nskip_statuses = [\"Lost\"]\n",
        &[],
    )
    .expect("an org's own funnel loads");
    assert_eq!(s.handoff.status_order, ["Lead", "Qualified", "Won"]);
    let cases = [
        ("status_order = []", "handoff.status_order: must list"),
        (
            "status_order = [\"Open\", \" \", \"MQL\"]",
            "handoff.status_order: entry 1 is empty",
        ),
        (
            "status_order = [\"Open\", \"MQL\", \"open\"]",
            "handoff.status_order: \"Open\" and \"open\" are the same status",
        ),
        (
            "handoff_status = \"Marketing Qualified\"",
            "handoff.handoff_status: \"Marketing Qualified\" is not in handoff.status_order",
        ),
        (
            "skip_statuses = [\"MQL\", \"working\"]",
            "handoff.skip_statuses: \"working\" is before handoff.handoff_status",
        ),
        (
            "lead_id_pattern = \"[a-z]+\"",
            "handoff.lead_id_pattern: \"[a-z]+\": expected [CLASS]{MIN,MAX}",
        ),
    ];
    for (line, want) in cases {
        let e = load_err(&format!("[handoff]\n{line}\n"), &[]);
        assert!(e.contains(want), "{line}: {e}");
    }
    // Skipping a status at or after the handoff status is redundant, not wrong.
    load("[handoff]\nskip_statuses = [\"MQL\", \"SQL\"]\n", &[]).expect("compatible");
}

#[test]
fn statuses_compare_without_case_or_extra_whitespace() {
    assert_eq!(status_key("  Closed -   Converted "), "closed - converted");
    assert_eq!(status_key("MQL"), status_key("mql"));
    assert_eq!(status_key("\tWorking\n"), "working");
    assert_eq!(status_key("   "), "");
}

#[test]
fn lead_ids_are_salesforce_ids_by_default() {
    let ids = LeadIdPattern::SalesforceId;
    for good in [
        "00Q000000000001",
        "00Q000000000001AAA",
        "00Q5g000004nuOjEAI",
        // The 18-character form is case-insensitive, its suffix too.
        "00q5g000004nuojeai",
        "00Q000000000001A5Z",
    ] {
        assert!(ids.matches(good), "{good}");
    }
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "00Q00000000000/",
        "00Q0000000000",       // 13
        "00Q00000000000",      // 14
        "00Q0000000000001",    // 16
        "00Q00000000000001",   // 17
        "00Q0000000000000001", // 19
        "00Q-00000000001AA",
        "00Q 000000000001",
        "00Q00000000000ü",
        // A case suffix encodes 5 bits a character, as A-Z or 0-5.
        "00Q000000000001AA6",
        "00Q000000000001A9A",
        "00Q0000000000017AA",
    ] {
        assert!(!ids.matches(bad), "{bad:?}");
    }
}

#[test]
fn a_lead_id_pattern_is_one_class_and_a_length() {
    let p = LeadIdPattern::parse("[A-Za-z0-9_-]{1,40}").expect("valid");
    for good in ["ext-42", "A_b-9", "x"] {
        assert!(p.matches(good), "{good}");
    }
    for bad in ["", "a/b", "a b", "a.b", "é", &"x".repeat(41)] {
        assert!(!p.matches(bad), "{bad:?}");
    }
    let dots = LeadIdPattern::parse("[a-z.]{1,10}").expect("valid");
    assert!(dots.matches("a.b"));
    assert!(!dots.matches(".") && !dots.matches(".."), "never only dots");
    let exact = LeadIdPattern::parse("[0-9]{6}").expect("valid");
    assert!(exact.matches("123456") && !exact.matches("12345"));
    for (bad, why) in [
        ("a-z{1,2}", "expected [CLASS]"),
        ("[a-z]", "expected [CLASS]"),
        ("[a-z]{1,2", "expected [CLASS]"),
        ("[a-z]{x}", "is not a length"),
        ("[a-z]{0,5}", "the length must be 1 to 255"),
        ("[a-z]{5,2}", "the length must be 1 to 255"),
        ("[a-z]{1,1000}", "the length must be 1 to 255"),
        ("[]{1,2}", "the character class is empty"),
        ("[z-a]{1,2}", "not an ASCII range"),
        ("[a-zé]{1,2}", "not an ASCII range"),
        ("[a-z/]{1,2}", "cannot be in a lead id"),
        ("[%]{1,2}", "cannot be in a lead id"),
        ("[ -~]{1,2}", "cannot be in a lead id"),
    ] {
        let e = LeadIdPattern::parse(bad).expect_err(bad);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn rules_are_required_only_when_asked_for() {
    let s = load("", &[]).expect("loads without rules");
    let e = s.scorer.rules_path().expect_err("no rules").to_string();
    assert!(e.starts_with("scorer.rules is not set"), "{e}");
    assert_eq!(
        s.scorer.transactional_id_for("host1"),
        "leadscore-scorer-host1"
    );
}

#[test]
fn a_misspelt_kafka_credential_is_never_printed() {
    let s = load("", &[("LEADSCORE__KAFKA__SASL_PASSWORD", "sasl-hunter2")]).expect("loads");
    let shown = format!("{s:?} {s:#?}");
    assert!(!shown.contains("sasl-hunter2"), "{shown}");
    assert!(shown.contains("localhost:9092"), "{shown}");
    // A property librdkafka does not know is refused at load, naming where it was set (the
    // variable, or the file and its key), never its value.
    let e = load_err("", &[("LEADSCORE__KAFKA__SASL_PASWORD", "typo-hunter2")]);
    assert!(!e.contains("typo-hunter2"), "{e}");
    assert!(e.contains("LEADSCORE__KAFKA__SASL_PASWORD"), "{e}");
    assert!(
        e.contains("kafka.sasl.pasword: librdkafka refuses it"),
        "{e}"
    );
    let e = load_err("[kafka.producer]\nsasl_pasword = \"typo-hunter2\"\n", &[]);
    assert!(!e.contains("typo-hunter2"), "{e}");
    assert!(
        e.contains("kafka.producer.sasl.pasword: librdkafka refuses it"),
        "{e}"
    );
    // A value librdkafka cannot read is refused the same way, quoted when not a credential.
    let e = load_err("[kafka.consumer]\nfetch_wait_max_ms = \"abc\"\n", &[]);
    assert!(
        e.contains("kafka.consumer.fetch.wait.max.ms: librdkafka refuses it"),
        "{e}"
    );
}

#[test]
fn secret_is_never_printed() {
    let s = load(
        "[kafka]\nsasl_password = \"kafka-hunter2\"\n",
        &[
            ("LEADSCORE_SALESFORCE_CLIENT_SECRET", "sf-hunter2"),
            ("LEADSCORE__KAFKA__SSL_KEY_PASSWORD", "key-hunter2"),
        ],
    )
    .expect("loads");
    assert_eq!(s.kafka.get("sasl.password"), Some("kafka-hunter2"));
    let shown = format!("{s:?} {s:#?}");
    for secret in ["kafka-hunter2", "sf-hunter2", "key-hunter2"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret:?}"), "***");
    assert_eq!(format!("{secret}"), "***");
    assert_eq!(secret.expose(), "hunter2");
    let e = load_err(
        "",
        &[("LEADSCORE__SALESFORCE__CLIENT_SECRET", "env-hunter2")],
    );
    assert!(!e.contains("env-hunter2"), "{e}");
}

#[test]
fn secret_comes_from_env_or_file() {
    let settings = SalesforceSettings {
        client_secret_env: "TEST_SECRET".to_string(),
        ..SalesforceSettings::default()
    };
    let secret = settings
        .client_secret_with(|name| (name == "TEST_SECRET").then(|| "from-env".to_string()))
        .expect("env secret");
    assert_eq!(secret.expose(), "from-env");

    let e = settings
        .client_secret_with(|_| Some(String::new()))
        .expect_err("empty and no file")
        .to_string();
    assert!(e.contains("TEST_SECRET"), "{e}");
    assert!(e.contains("salesforce.client_secret_file"), "{e}");

    let dir = ScratchDir::new("config-test-secret").expect("scratch dir");
    let path = dir.path().join("secret");
    std::fs::write(&path, "from-file\n").expect("write secret file");
    let with_file = SalesforceSettings {
        client_secret_file: Some(path.clone()),
        ..settings.clone()
    };
    let from_file = with_file.client_secret_with(|_| None);
    let from_env = with_file.client_secret_with(|_| Some("from-env".to_string()));
    let _ = std::fs::remove_file(&path);
    assert_eq!(from_file.expect("file secret").expose(), "from-file");
    assert_eq!(from_env.expect("env first").expose(), "from-env");

    let e = with_file
        .client_secret_with(|_| None)
        .expect_err("file gone")
        .to_string();
    assert!(e.starts_with("Salesforce client secret file"), "{e}");
}

#[test]
fn a_secret_file_is_read_only_up_to_its_cap() {
    let zero = SalesforceSettings {
        client_secret_env: "TEST_SECRET".to_string(),
        client_secret_file: Some(PathBuf::from("/dev/zero")),
        ..SalesforceSettings::default()
    };
    let e = zero
        .client_secret_with(|_| None)
        .expect_err("/dev/zero is not a secret")
        .to_string();
    assert_eq!(
        e,
        "Salesforce client secret file /dev/zero: larger than 65536 bytes, so not a secret; \
         check salesforce.client_secret_file"
    );
    let dir = ScratchDir::new("config-test-secret-cap").expect("scratch dir");
    let path = dir.path().join("secret");
    let at_cap = "s".repeat(MAX_SECRET_FILE_BYTES as usize);
    std::fs::write(&path, &at_cap).expect("write secret file");
    let file = SalesforceSettings {
        client_secret_file: Some(path.clone()),
        ..zero.clone()
    };
    let read = file.client_secret_with(|_| None);
    let _ = std::fs::remove_file(&path);
    assert_eq!(read.expect("at the cap").expose(), at_cap);
}

#[test]
fn rejects_client_secret_in_file() {
    let e = load_err("[salesforce]\nclient_secret = \"hunter2\"\n", &[]);
    assert_eq!(
        e,
        "config test.toml: salesforce.client_secret: the client secret is read from the \
         environment or a file; see salesforce.client_secret_env / client_secret_file"
    );
    assert_load_err(
        "",
        &[("LEADSCORE__SALESFORCE__CLIENT_SECRET", "hunter2")],
        "environment variable LEADSCORE__SALESFORCE__CLIENT_SECRET",
    );
}

#[test]
fn example_config_loads() {
    let s = Settings::load_from(Some(("leadscore.example.toml", EXAMPLE)), env(&[]))
        .expect("example loads");
    assert_eq!(
        s.scorer.rules,
        Some(PathBuf::from("examples/rules/seed-canvas.toml"))
    );
    assert_eq!(s.kafka.get("bootstrap.servers"), Some("localhost:9092"));
    assert_eq!(s.handoff.backoff_max, Duration::from_secs(30));
    let mut expected = Settings::default();
    expected.scorer.rules = Some(PathBuf::from("examples/rules/seed-canvas.toml"));
    assert_eq!(s, expected, "the example shows the defaults");
}

#[test]
fn example_config_documents_every_key() {
    let sections = field_names::<Settings>();
    let keys = [
        ("topics", field_names::<Topics>()),
        ("scorer", field_names::<ScorerSettings>()),
        ("handoff", field_names::<HandoffSettings>()),
        ("salesforce", field_names::<SalesforceSettings>()),
        ("admin", field_names::<AdminSettings>()),
        ("log", field_names::<LogSettings>()),
    ];
    for section in sections {
        assert!(EXAMPLE.contains(&format!("[{section}]")), "[{section}]");
    }
    for (section, fields) in keys {
        for field in fields {
            let var = format!("LEADSCORE__{section}__{field}").to_uppercase();
            assert!(EXAMPLE.contains(&var), "{var} not in the example");
        }
    }
}

mod kafka_roles;

#[test]
fn unknown_types_defaults_to_skip_and_takes_dead_letter_from_file_or_env() {
    let s = load("", &[]).expect("defaults");
    assert_eq!(s.scorer.unknown_types, UnknownTypes::Skip);
    let s = load("[scorer]\nunknown_types = \"dead_letter\"\n", &[]).expect("file");
    assert_eq!(s.scorer.unknown_types, UnknownTypes::DeadLetter);
    let s = load("", &[("LEADSCORE__SCORER__UNKNOWN_TYPES", "dead_letter")]).expect("env");
    assert_eq!(s.scorer.unknown_types, UnknownTypes::DeadLetter);
    let e = load_err("[scorer]\nunknown_types = \"drop\"\n", &[]);
    assert!(e.contains("scorer.unknown_types"), "{e}");
    assert!(e.contains("skip") && e.contains("dead_letter"), "{e}");
}

/// A settings file is read to at most one byte past its cap: `/dev/zero` given by mistake was
/// read until the memory ran out (hundreds of MB a second).
#[test]
fn a_settings_file_is_read_only_up_to_its_cap() {
    let e = Settings::load(Some(Path::new("/dev/zero")))
        .expect_err("/dev/zero is not a settings file")
        .to_string();
    assert_eq!(
        e,
        "config /dev/zero: larger than 1048576 bytes, the limit for a settings file (is it the \
         right file?)"
    );
    let dir = ScratchDir::new("config-test-file-cap").expect("scratch dir");
    let path = dir.path().join("leadscore.toml");
    // A comment of exactly the cap loads (to the defaults); one byte more does not.
    let mut at_cap = String::from("# ");
    at_cap.push_str(&"x".repeat(load::MAX_CONFIG_BYTES as usize - 3));
    at_cap.push('\n');
    std::fs::write(&path, &at_cap).expect("write settings file");
    assert!(Settings::load(Some(&path)).is_ok());
    std::fs::write(&path, format!("{at_cap} ")).expect("write settings file");
    let e = Settings::load(Some(&path))
        .expect_err("over the cap")
        .to_string();
    assert!(e.contains("larger than 1048576 bytes"), "{e}");
    std::fs::write(&path, [b'#', 0xff, b'\n']).expect("write settings file");
    let e = Settings::load(Some(&path))
        .expect_err("not UTF-8")
        .to_string();
    assert!(e.ends_with("cannot read: not UTF-8 text"), "{e}");
}

/// A settings file or a secret file that is a named pipe nobody writes to: opening it waited
/// for a writer forever (the service never started, SIGTERM included, and said nothing). Now
/// each is an error at once that says what the path is.
#[test]
fn a_named_pipe_with_no_writer_as_settings_or_secret_is_an_error_not_a_hang() {
    let dir = ScratchDir::new("config-test-fifo").expect("scratch dir");
    let path = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let settings_path = path.clone();
    std::thread::spawn(move || {
        let settings = Settings::load(Some(&settings_path))
            .map(|_| ())
            .map_err(|e| e.to_string());
        let secret = SalesforceSettings {
            client_secret_env: "TEST_SECRET".to_string(),
            client_secret_file: Some(settings_path),
            ..SalesforceSettings::default()
        }
        .client_secret_with(|_| None)
        .map(|_| ())
        .map_err(|e| e.to_string());
        let _ = tx.send((settings, secret));
    });
    // A guard so a regression fails instead of hanging the suite; not a timing assertion.
    let (settings, secret) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("still waiting for a writer after a minute");
    let settings = settings.expect_err("a pipe is not a settings file");
    assert!(
        settings.starts_with(&format!("config {}", path.display())),
        "{settings}"
    );
    assert!(settings.contains("no writer"), "{settings}");
    let secret = secret.expect_err("a pipe is not a secret");
    assert!(
        secret.starts_with("Salesforce client secret file"),
        "{secret}"
    );
    assert!(secret.contains("no writer"), "{secret}");
}

/// librdkafka refuses a `message.timeout.ms` (set from `ingest.produce_timeout`) not above
/// `linger.ms`: a tiny timeout failed at start with librdkafka's words instead of the setting's.
#[test]
fn an_ingest_produce_timeout_too_short_to_produce_in_is_refused_by_name() {
    for short in ["1ms", "5ms", "99ms"] {
        let file = format!("[ingest]\nproduce_timeout = \"{short}\"\n");
        assert_load_err(&file, &[], "ingest.produce_timeout");
    }
    let ok = load("[ingest]\nproduce_timeout = \"100ms\"\n", &[]).expect("100ms loads");
    assert_eq!(
        ok.ingest.produce_timeout,
        std::time::Duration::from_millis(100)
    );
}
