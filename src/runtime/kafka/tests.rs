use super::*;
use rdkafka::producer::BaseProducer;

fn create(props: &[(&str, &str)]) -> Result<BaseProducer, KafkaError> {
    let props: BTreeMap<String, String> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    client_config(&props).create()
}

fn redacted_create(props: &[(&str, &str)]) -> Result<BaseProducer, KafkaError> {
    let props: BTreeMap<String, String> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    super::create(
        &client_config(&props),
        rdkafka::producer::DefaultProducerContext,
    )
}

#[test]
fn credentials_and_unknown_properties_are_redacted_known_ones_are_not() {
    for name in [
        "sasl.password",
        "SASL.PASSWORD",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.token.endpoint.url",
        "sasl.oauthbearer.config",
        "sasl.pasword",
        "no.such.property",
    ] {
        assert!(is_redacted_property(name), "{name}");
    }
    for name in [
        "bootstrap.servers",
        "session.timeout.ms",
        "security.protocol",
        "sasl.username",
        // Topic-level properties are known too.
        "auto.offset.reset",
        "acks",
    ] {
        assert!(!is_redacted_property(name), "{name}");
    }
}

#[test]
fn a_misspelt_password_is_named_but_its_value_is_not_shown() {
    let e = redacted_create(&[
        ("bootstrap.servers", "127.0.0.1:1"),
        ("sasl.pasword", "hunter2-typo"),
    ])
    .err()
    .expect("an unknown property fails");
    let text = format!("{e} {e:?}");
    assert!(text.contains("sasl.pasword"), "{text}");
    assert!(!text.contains("hunter2-typo"), "{text}");
    assert!(text.contains(REDACTED), "{text}");
    // Unredacted, rdkafka shows it: what this guards against.
    let raw = create(&[("sasl.pasword", "hunter2-typo")])
        .err()
        .expect("fails");
    assert!(raw.to_string().contains("hunter2-typo"), "{raw}");
}

#[test]
fn an_invalid_value_of_an_ordinary_property_is_shown() {
    let e = redacted_create(&[("socket.timeout.ms", "soon")])
        .err()
        .expect("an invalid value fails");
    assert!(e.to_string().contains("soon"), "{e}");
}

#[test]
fn creation_errors_lose_every_redacted_value() {
    let mut cfg = ClientConfig::new();
    cfg.set("sasl.password", "p4ssw0rd-value");
    cfg.set("bootstrap.servers", "broker-1:9092");
    let e = redact_error(
        KafkaError::ClientCreation("cannot use \"p4ssw0rd-value\" with broker-1:9092".into()),
        &cfg,
    );
    let text = e.to_string();
    assert!(!text.contains("p4ssw0rd-value"), "{text}");
    assert!(text.contains("broker-1:9092"), "{text}");
}

#[test]
fn the_instance_id_goes_to_the_group_consumer_only() {
    let props: BTreeMap<String, String> = [
        ("bootstrap.servers", "127.0.0.1:1"),
        ("group.instance.id", "scorer-0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(client_config(&props).get("group.instance.id"), None);
    assert_eq!(
        client_config(&props).get("bootstrap.servers"),
        Some("127.0.0.1:1")
    );
}

/// librdkafka refuses, when the client is created, security settings it was built without:
/// these are the ones a managed Kafka asks for.
#[test]
fn clients_accept_tls_and_the_sasl_mechanisms_managed_kafkas_use() {
    for (protocol, mechanism) in [
        ("ssl", None),
        ("sasl_ssl", Some("PLAIN")),
        ("sasl_ssl", Some("SCRAM-SHA-512")),
        ("sasl_ssl", Some("OAUTHBEARER")),
    ] {
        let mut props = vec![
            ("bootstrap.servers", "127.0.0.1:1"),
            ("security.protocol", protocol),
        ];
        if let Some(m) = mechanism {
            props.extend([
                ("sasl.mechanism", m),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ]);
            if m == "OAUTHBEARER" {
                props.retain(|(k, _)| !k.starts_with("sasl.user") && *k != "sasl.password");
                props.push(("enable.sasl.oauthbearer.unsecure.jwt", "true"));
            }
        }
        if let Err(e) = create(&props) {
            panic!("{protocol} {mechanism:?}: {e}");
        }
    }
    // Kerberos needs Cyrus SASL, which this build leaves out.
    let gssapi = create(&[
        ("security.protocol", "sasl_plaintext"),
        ("sasl.mechanism", "GSSAPI"),
    ]);
    assert!(gssapi.is_err(), "GSSAPI is not built in");
}

/// A sealed epoch counts as delivered once its own records (and earlier epochs') are, whatever
/// was sent after it: a checkpoint waits for its outputs while the next batch's are in flight.
#[test]
fn a_sealed_epoch_waits_for_its_own_records_and_earlier_ones_only() {
    use rdkafka::mocking::MockCluster;
    let mock = MockCluster::new(2).expect("mock cluster");
    mock.create_topic("fast", 1, 1).expect("topic");
    mock.create_topic("slow", 1, 1).expect("topic");
    mock.partition_leader("fast", 0, Some(1)).expect("leader");
    mock.partition_leader("slow", 0, Some(2)).expect("leader");
    let props = BTreeMap::from([("bootstrap.servers".to_string(), mock.bootstrap_servers())]);
    let producer = ServiceProducer::new(&props, None).expect("producer");
    let send = |topic: &str, n: usize| {
        for i in 0..n {
            producer
                .send(
                    Record {
                        topic,
                        partition: Some(0),
                        key: Some(format!("k{i}").as_bytes()),
                        payload: Some(b"v"),
                        headers: None,
                    },
                    Delivery::Output,
                )
                .expect("queued");
        }
    };
    // Slot reuse: more epochs than slots, each waited for in turn.
    for _ in 0..3 * EPOCH_SLOTS {
        send("fast", 2);
        let e = producer.seal().expect("sealed");
        assert_eq!(producer.delivered(e, true).ok(), Some(true));
    }
    send("fast", 3);
    let fast = producer.seal().expect("sealed");
    mock.broker_down(2).expect("down");
    send("slow", 3);
    let slow = producer.seal().expect("sealed");
    assert_eq!(producer.delivered(fast, true).ok(), Some(true));
    assert_eq!(producer.delivered(slow, false).ok(), Some(false));
    // A later epoch whose own records are delivered still waits for the held one before it.
    send("fast", 2);
    let after = producer.seal().expect("sealed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while producer.inner().in_flight_count() > 3 {
        assert!(
            Instant::now() < deadline,
            "the fast records were never delivered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(producer.delivered(after, false).ok(), Some(false));
    mock.broker_up(2).expect("up");
    assert_eq!(producer.delivered(after, true).ok(), Some(true));
    assert_eq!(producer.delivered(slow, false).ok(), Some(true));
    assert_eq!(producer.inner().in_flight_count(), 0);
}

/// librdkafka refuses a consumer whose `max.poll.interval.ms` is under its session timeout.
/// The restore reader joins no group, but it once kept librdkafka's 45 s session timeout while
/// the services' consumers had leadscore's 6 s: a `max.poll.interval.ms` of 30 s in `[kafka]`
/// was fine for them and made every restore fail ("Client creation error").
#[test]
fn a_max_poll_interval_the_group_consumer_takes_the_restore_reader_takes_too() {
    let props: BTreeMap<String, String> = [
        ("bootstrap.servers", "127.0.0.1:1"),
        ("max.poll.interval.ms", "6000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Err(e) = reader(&props) {
        panic!("the restore reader refused max.poll.interval.ms=6000: {e}");
    }
    // An operator's own session timeout still wins, and a bad pair is still refused.
    let mut own = props.clone();
    own.insert("session.timeout.ms".into(), "10000".into());
    assert!(reader(&own).is_err());
}
