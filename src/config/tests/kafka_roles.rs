//! `[kafka.producer]` and `[kafka.consumer]` (issue 12, point 3), split out of `tests.rs`.

use super::*;

use crate::runtime::kafka::{client_config, consumer_config, producer_config};

const ROLE_TABLES: &str = r#"
    [kafka]
    bootstrap_servers = "k:9092"
    client_id = "shared"
    linger_ms = 20
    fetch_wait_max_ms = 50
    [kafka.producer]
    compression_codec = "lz4"
    client_id = "producer"
    [kafka.consumer]
    "fetch.min.bytes" = 1000
"#;

#[test]
fn producer_and_consumer_tables_reach_only_their_own_clients() {
    let s = load(ROLE_TABLES, &[]).expect("loads");
    let props = &s.kafka.properties;

    let producer = producer_config(props);
    let consumer = consumer_config(props);
    let keys = [
        "bootstrap.servers",
        "client.id",
        "compression.codec",
        "linger.ms",
        "fetch.wait.max.ms",
        "fetch.min.bytes",
    ];
    // The producer's own table wins for client.id.
    let produced = [
        Some("k:9092"),
        Some("producer"),
        Some("lz4"),
        Some("20"),
        None,
        None,
    ];
    assert_eq!(keys.map(|k| producer.get(k)), produced);
    let consumed = [
        Some("k:9092"),
        Some("shared"),
        None,
        None,
        Some("50"),
        Some("1000"),
    ];
    assert_eq!(keys.map(|k| consumer.get(k)), consumed);

    let admin = client_config(props);
    assert_eq!(admin.get("client.id"), Some("shared"));
    for key in [
        "linger.ms",
        "fetch.wait.max.ms",
        "compression.codec",
        "fetch.min.bytes",
    ] {
        assert_eq!(admin.get(key), None, "{key}");
    }
    // What makes librdkafka warn: a client given a property of the other kind, or one it
    // does not know (a `producer.`-prefixed key passed through verbatim).
    for (name, cfg, other) in [
        ("producer", &producer, CONSUMER_ONLY_PROPERTIES),
        ("consumer", &consumer, PRODUCER_ONLY_PROPERTIES),
        ("admin", &admin, CONSUMER_ONLY_PROPERTIES),
    ] {
        for key in cfg.config_map().keys() {
            let key: &str = &key[..];
            assert!(!other.contains(&key), "{name} got {key}");
            assert!(
                !key.starts_with(PRODUCER_PREFIX) && !key.starts_with(CONSUMER_PREFIX),
                "{name} got {key}"
            );
        }
    }
}

#[test]
fn env_sets_producer_and_consumer_properties_over_the_file() {
    let s = load(
        ROLE_TABLES,
        &[
            ("LEADSCORE__KAFKA__PRODUCER__COMPRESSION_CODEC", "lz4"),
            ("LEADSCORE__KAFKA__CONSUMER__FETCH_MIN_BYTES", "7"),
            ("LEADSCORE__KAFKA__PRODUCER__BATCH_SIZE", "65536"),
        ],
    )
    .expect("loads");
    let producer = producer_config(&s.kafka.properties);
    assert_eq!(producer.get("compression.codec"), Some("lz4"));
    assert_eq!(producer.get("batch.size"), Some("65536"));
    let consumer = consumer_config(&s.kafka.properties);
    assert_eq!(consumer.get("fetch.min.bytes"), Some("7"));
    assert_eq!(consumer.get("batch.size"), None);
}

#[test]
fn producers_compress_with_gzip_unless_either_codec_alias_is_set() {
    let defaults = Settings::default();
    let producer = producer_config(&defaults.kafka.properties);
    assert_eq!(producer.get("compression.codec"), Some("gzip"));
    assert_eq!(producer.get("compression.type"), None);
    // librdkafka's two names for one setting: a default under the other name would race the
    // user's choice (which one wins depends on the order they are applied in).
    for alias in ["compression.codec", "compression.type"] {
        for table in ["[kafka]", "[kafka.producer]"] {
            let s = load(&format!("{table}\n\"{alias}\" = \"snappy\"\n"), &[]).expect("loads");
            let producer = producer_config(&s.kafka.properties);
            let set: Vec<(&str, Option<&str>)> = ["compression.codec", "compression.type"]
                .iter()
                .map(|k| (*k, producer.get(k)))
                .collect();
            let expected: Vec<(&str, Option<&str>)> = ["compression.codec", "compression.type"]
                .iter()
                .map(|k| (*k, (*k == alias).then_some("snappy")))
                .collect();
            assert_eq!(set, expected, "{table} {alias}");
        }
    }
}

#[test]
fn a_property_in_the_other_kinds_table_is_rejected_naming_it() {
    let e = load_err("[kafka.producer]\nfetch_wait_max_ms = 5\n", &[]);
    assert_eq!(
        e,
        "config test.toml: kafka.producer.fetch.wait.max.ms: \"fetch.wait.max.ms\" is a consumer \
         property, which librdkafka ignores in a producer: set it in [kafka.consumer] (or \
         [kafka], for every client it applies to)"
    );
    let e = assert_load_err(
        "[kafka.consumer]\n\"compression.type\" = \"gzip\"\n",
        &[],
        "kafka.consumer.compression.type: \"compression.type\" is a producer property",
    );
    assert!(e.contains("set it in [kafka.producer]"), "{e}");
    let e = load_err(
        "",
        &[("LEADSCORE__KAFKA__CONSUMER__LINGER_MS", "secret-looking-9")],
    );
    assert!(
        e.starts_with(
            "config test.toml, environment variable LEADSCORE__KAFKA__CONSUMER__LINGER_MS: \
             kafka.consumer.linger.ms:"
        ),
        "{e}"
    );
    assert!(
        !e.contains("secret-looking-9"),
        "values are never quoted: {e}"
    );
    assert_load_err(
        "[kafka]\nproducer = \"gzip\"\n",
        &[],
        "kafka.producer: must be a table of librdkafka properties ([kafka.producer])",
    );
    // Shared properties may go in either table, and each kind's own in its own.
    load(
        "[kafka.producer]\nclient_id = \"p\"\nlinger_ms = 1\n[kafka.consumer]\nclient_id = \"c\"\nisolation_level = \"read_committed\"\n",
        &[],
    )
    .expect("loads");
}

#[test]
fn role_table_credentials_are_redacted_and_other_values_shown() {
    let s = load(
        "[kafka.producer]\nsasl_password = \"prod-hunter2\"\ncompression_codec = \"lz4\"\n",
        &[("LEADSCORE__KAFKA__CONSUMER__SASL_PASSWORD", "cons-hunter2")],
    )
    .expect("loads");
    let shown = format!("{s:?}");
    for secret in ["prod-hunter2", "cons-hunter2"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains(r#""producer.compression.codec": "lz4""#),
        "a known property's value is shown: {shown}"
    );
}

#[test]
fn the_role_only_property_lists_name_real_librdkafka_properties() {
    for name in PRODUCER_ONLY_PROPERTIES
        .iter()
        .chain(CONSUMER_ONLY_PROPERTIES)
    {
        assert!(
            crate::runtime::kafka::is_known_property(name),
            "{name} is not a librdkafka property"
        );
        assert!(!name.starts_with(PRODUCER_PREFIX) && !name.starts_with(CONSUMER_PREFIX));
    }
}

#[test]
fn a_role_table_from_the_environment_replaces_the_files() {
    let s = load(
        ROLE_TABLES,
        &[
            (
                "LEADSCORE__KAFKA__PRODUCER",
                "{ linger_ms = 9, \"batch.size\" = 1000 }",
            ),
            ("LEADSCORE__KAFKA__PRODUCER__BATCH_SIZE", "2000"),
        ],
    )
    .expect("loads");
    let producer = producer_config(&s.kafka.properties);
    assert_eq!(producer.get("linger.ms"), Some("9"));
    assert_eq!(
        producer.get("batch.size"),
        Some("2000"),
        "the narrower variable wins"
    );
    assert_eq!(
        producer.get("compression.codec"),
        Some("gzip"),
        "the file's lz4 is gone"
    );
    assert_eq!(producer.get("client.id"), Some("shared"));
    let consumer = consumer_config(&s.kafka.properties);
    assert_eq!(
        consumer.get("fetch.min.bytes"),
        Some("1000"),
        "the other table stays"
    );
    let e = load_err("", &[("LEADSCORE__KAFKA__CONSUMER", "{ linger_ms = 1 }")]);
    assert!(
        e.starts_with(
            "config test.toml, environment variable LEADSCORE__KAFKA__CONSUMER: \
             kafka.consumer.linger.ms:"
        ),
        "{e}"
    );
    assert_load_err(
        "",
        &[("LEADSCORE__KAFKA__PRODUCER", "gzip")],
        "kafka.producer: must be a table",
    );
}
