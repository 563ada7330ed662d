//! The client against the Salesforce stand-in (and a few hand-made servers): requests, tokens,
//! retries, caps and metrics. The pure pieces are tested in `tests/pure.rs`.

use super::client::*;
use super::retry::*;
use super::wire::*;
use super::*;
use crate::config::{SalesforceSettings, Secret};
use crate::dev::standin::testing::{self, faults, lead, TestStandin};
use crate::dev::standin::{Faults, StandinConfig};
use metrics_exporter_prometheus::PrometheusRecorder;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::time::Duration;

mod pure;

/// Distinctive, so any leak is found by a plain substring search.
const SECRET: &str = "s3cr3t-Sh0uld-N3v3r-Leak";

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn update(n: u32) -> LeadUpdate {
    LeadUpdate {
        lead_id: lead(n),
        body: object(json!({ "lead_status": "MQL" })),
    }
}

/// The updates of leads `ns`, in order.
fn updates<const N: usize>(ns: [u32; N]) -> [LeadUpdate; N] {
    ns.map(update)
}

fn standin_config() -> StandinConfig {
    testing::config(SECRET)
}

fn client_for(instance_url: &str, secret: &str, timeout: Duration) -> SalesforceClient {
    let settings = SalesforceSettings {
        instance_url: instance_url.to_string(),
        client_id: "test-app".to_string(),
        timeout,
        ..SalesforceSettings::default()
    };
    SalesforceClient::new(&settings, Secret::new(secret)).expect("valid settings")
}

#[test]
fn an_api_version_of_another_shape_is_refused_naming_the_setting() {
    for bad in [
        "60.0", "v60", "V60.0", "latest", "v60.0/", "v.0", "v60.", "v6000.0", "", " ",
    ] {
        let settings = SalesforceSettings {
            instance_url: "https://example.my.salesforce.com".to_string(),
            client_id: "test-app".to_string(),
            api_version: bad.to_string(),
            ..SalesforceSettings::default()
        };
        match SalesforceClient::new(&settings, Secret::new(SECRET)) {
            Err(e) => assert!(
                e.to_string().contains("api_version") && e.to_string().contains("v60.0"),
                "{bad:?}: {e}"
            ),
            Ok(_) => panic!("{bad:?} was taken as an API version"),
        }
    }
    for good in ["v60.0", "v58.0", "v20.0", " v61.0 "] {
        let settings = SalesforceSettings {
            instance_url: "https://example.my.salesforce.com".to_string(),
            client_id: "test-app".to_string(),
            api_version: good.to_string(),
            ..SalesforceSettings::default()
        };
        assert!(
            SalesforceClient::new(&settings, Secret::new(SECRET)).is_ok(),
            "{good:?} refused"
        );
    }
}

/// A stand-in org and a client for it; dropping it stops the stand-in.
struct Org {
    standin: TestStandin,
    client: SalesforceClient,
}

async fn org(cfg: StandinConfig) -> Org {
    let standin = TestStandin::start(cfg).await;
    let client = client_for(&standin.instance_url(), SECRET, Duration::from_secs(5));
    Org { standin, client }
}

/// An org with the faults `set` turns on.
async fn faulty_org(set: impl FnOnce(&mut Faults)) -> Org {
    org(StandinConfig {
        faults: faults(set),
        ..standin_config()
    })
    .await
}

fn ok(status: u16) -> LeadOutcome {
    LeadOutcome {
        http_status: Some(status),
        result: Ok(()),
    }
}

fn error_of(outcome: &LeadOutcome) -> &SfError {
    match &outcome.result {
        Err(e) => e,
        Ok(()) => panic!("expected a failure, got {outcome:?}"),
    }
}

/// Asserts that every one of `outcomes` failed with this status, error code and hint.
fn assert_failed(outcomes: &[LeadOutcome], status: Option<u16>, code: &str, hint: RetryHint) {
    for outcome in outcomes {
        assert_eq!(outcome.http_status, status, "{outcome:?}");
        let e = error_of(outcome);
        assert_eq!((e.error_code.as_str(), e.hint), (code, hint), "{outcome:?}");
    }
}

/// The status and error of a token request that must fail.
async fn token_failure(client: &SalesforceClient) -> (Option<u16>, SfError) {
    match client.ensure_token().await {
        Err(SalesforceError::Token { status, error }) => (status, error),
        other => panic!("expected a token failure, got {other:?}"),
    }
}

/// A Prometheus recorder for a test to install on its own thread (a `tokio::test` runtime has
/// one thread).
fn local_recorder() -> PrometheusRecorder {
    metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder()
}

/// Asserts that `recorder` renders every one of `lines`.
fn assert_rendered(recorder: &PrometheusRecorder, lines: &[&str]) {
    let rendered = recorder.handle().render();
    for line in lines {
        assert!(rendered.contains(line), "missing {line} in:\n{rendered}");
    }
}

fn body_json(body: &str) -> Value {
    serde_json::from_str(body).expect("a JSON body")
}

#[tokio::test]
async fn lone_lead_is_patched_on_its_sobject_row_with_bearer_token_and_json_body() {
    let org = org(standin_config()).await;
    let report = org.client.update_leads(&[update(1)]).await;
    assert_eq!(report.outcomes, vec![ok(204)]);
    assert_eq!(report.api_calls, 2, "token + patch");
    assert!(!report.token_refreshed);

    let requests = org.standin.requests();
    assert_eq!(requests.len(), 2);
    let token = &requests[0];
    assert_eq!(token.method, "POST");
    assert_eq!(token.path, "/services/oauth2/token");
    assert_eq!(
        token.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        token.body,
        "grant_type=client_credentials&client_id=test-app&client_secret=***"
    );

    let patch = &requests[1];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.path,
        format!("/services/data/v60.0/sobjects/Lead/{}", lead(1))
    );
    assert_eq!(patch.query, None);
    let auth = patch.header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with("Bearer 00D") && auth.len() > "Bearer 00D".len(),
        "{auth}"
    );
    assert_eq!(patch.header("content-type"), Some("application/json"));
    assert_eq!(body_json(&patch.body), json!({ "lead_status": "MQL" }));
    assert_eq!(
        org.standin.leads().get(&lead(1)),
        Some(&object(json!({ "lead_status": "MQL" })))
    );
}

#[tokio::test]
async fn several_leads_go_in_one_collection_call_with_all_or_none_false() {
    let org = org(standin_config()).await;
    let mut leads = vec![update(1), update(2), update(3)];
    leads[1].body.insert("Rating".to_string(), json!("Hot"));
    let report = org.client.update_leads(&leads).await;
    assert_eq!(report.outcomes, vec![ok(200), ok(200), ok(200)]);
    assert_eq!(report.api_calls, 2, "token + one collection call");

    let requests = org.standin.requests();
    assert_eq!(requests.len(), 2);
    let call = &requests[1];
    assert_eq!(call.method, "PATCH");
    assert_eq!(call.path, "/services/data/v60.0/composite/sobjects");
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert!(call
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));
    assert_eq!(
        body_json(&call.body),
        json!({
            "allOrNone": false,
            "records": [
                { "attributes": { "type": "Lead" }, "id": lead(1), "lead_status": "MQL" },
                { "attributes": { "type": "Lead" }, "id": lead(2), "lead_status": "MQL", "Rating": "Hot" },
                { "attributes": { "type": "Lead" }, "id": lead(3), "lead_status": "MQL" },
            ]
        })
    );
    for n in 1..=3 {
        assert_eq!(org.standin.patch_count(&lead(n)), 1);
    }
}

#[tokio::test]
async fn collection_results_are_handled_one_by_one() {
    let org = org(StandinConfig {
        known_leads: Some(HashSet::from([lead(1), lead(3)])),
        ..standin_config()
    })
    .await;
    let report = org.client.update_leads(&updates([1, 2, 3])).await;
    assert_eq!(report.outcomes.len(), 3);
    assert_eq!(report.outcomes[0], ok(200));
    assert_eq!(report.outcomes[2], ok(200));
    let missing = error_of(&report.outcomes[1]);
    assert_eq!(report.outcomes[1].http_status, Some(200));
    assert_eq!(missing.error_code, "NOT_FOUND");
    assert_eq!(missing.hint, RetryHint::Permanent);
    let updated: Vec<String> = org.standin.leads().into_keys().collect();
    assert_eq!(updated, vec![lead(1), lead(3)]);
}

#[tokio::test]
async fn token_is_fetched_once_and_cached_across_calls() {
    let org = org(standin_config()).await;
    assert!(!org.client.has_token());
    org.client.ensure_token().await.expect("a token");
    assert!(org.client.has_token());
    org.client.ensure_token().await.expect("still a token");
    for n in 0..3 {
        let report = org.client.update_leads(&[update(n), update(n + 10)]).await;
        assert_eq!(report.api_calls, 1, "no token request once cached");
        assert!(report.outcomes.iter().all(|o| o.result.is_ok()));
    }
    assert_eq!(org.standin.tokens_issued(), 1);
    let token_requests = org
        .standin
        .requests()
        .iter()
        .filter(|r| r.path == "/services/oauth2/token")
        .count();
    assert_eq!(token_requests, 1);
}

#[tokio::test]
async fn expired_session_gets_one_fresh_token_and_one_replay() {
    let org = faulty_org(|f| f.token_ttl_calls = Some(1)).await;
    let first = org.client.update_leads(&[update(1)]).await;
    assert_eq!(first.outcomes, vec![ok(204)]);

    let second = org.client.update_leads(&[update(1)]).await;
    assert_eq!(second.outcomes, vec![ok(204)]);
    assert!(second.token_refreshed);
    assert_eq!(second.api_calls, 3, "refused call + token + replay");
    assert_eq!(org.standin.tokens_issued(), 2);
    assert_eq!(org.standin.patch_count(&lead(1)), 2);

    let requests = org.standin.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    let row = format!("/services/data/v60.0/sobjects/Lead/{}", lead(1));
    let token = "/services/oauth2/token";
    assert_eq!(paths, vec![token, &row, &row, token, &row]);
    assert_ne!(
        requests[2].header("authorization"),
        requests[4].header("authorization"),
        "the replay carries the new token"
    );
    assert_eq!(
        requests[2].body, requests[4].body,
        "the replay is the same update"
    );
}

#[tokio::test]
async fn session_refused_after_a_refresh_is_an_error_not_a_loop() {
    let org = faulty_org(|f| f.token_ttl_calls = Some(0)).await;
    let report = org.client.update_leads(&[update(1), update(2)]).await;
    assert_eq!(report.api_calls, 4, "token, call, token, replay; then stop");
    assert!(report.token_refreshed);
    assert_eq!(org.standin.tokens_issued(), 2);
    // Credentials, not the lead.
    assert_failed(
        &report.outcomes,
        Some(401),
        "INVALID_SESSION_ID",
        RetryHint::AuthFailure,
    );
}

#[tokio::test]
async fn request_limit_exceeded_pauses_and_keeps_the_leads() {
    let org = faulty_org(|f| f.daily_limit = Some(1)).await;
    assert!(org.client.update_leads(&[update(1)]).await.outcomes[0]
        .result
        .is_ok());
    let refused = org.client.update_leads(&[update(2), update(3)]).await;
    let limit = "REQUEST_LIMIT_EXCEEDED";
    assert_failed(
        &refused.outcomes,
        Some(403),
        limit,
        RetryHint::PauseForLimit,
    );
    assert_eq!(refused.limit_info, Some((1, 1)));
    org.standin.reset_limit();
    let later = org.client.update_leads(&[update(2), update(3)]).await;
    assert_eq!(later.outcomes, vec![ok(200), ok(200)]);
}

#[tokio::test]
async fn server_unavailable_is_retried() {
    let org = faulty_org(|f| f.unavailable_rate = 1.0).await;
    for leads in [vec![update(1)], vec![update(1), update(2)]] {
        let report = org.client.update_leads(&leads).await;
        assert_eq!(report.outcomes.len(), leads.len());
        assert_failed(
            &report.outcomes,
            Some(503),
            "SERVER_UNAVAILABLE",
            RetryHint::Retry,
        );
    }
}

#[tokio::test]
async fn locked_rows_are_retried_per_record() {
    let org = faulty_org(|f| f.lock_rate = 1.0).await;
    let locked = "UNABLE_TO_LOCK_ROW";
    let lone = org.client.update_leads(&[update(1)]).await;
    assert_failed(&lone.outcomes[..1], Some(400), locked, RetryHint::Retry);
    let several = org.client.update_leads(&[update(1), update(2)]).await;
    assert_failed(&several.outcomes, Some(200), locked, RetryHint::Retry);
    assert!(org.standin.leads().is_empty());
}

#[tokio::test]
async fn connection_refused_is_retried_without_a_status() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let client = client_for(&format!("http://{closed}"), SECRET, Duration::from_secs(5));
    // No token can be had: the leads are kept (a pause, no attempt counted), as no call was
    // made for them.
    let (status, error) = token_failure(&client).await;
    let kept = (None, CONNECTION_ERROR, RetryHint::NoToken);
    assert_eq!((status, error.error_code.as_str(), error.hint), kept);
    let report = client.update_leads(&[update(1), update(2)]).await;
    assert_eq!(report.api_calls, 1);
    assert_failed(&report.outcomes, None, CONNECTION_ERROR, RetryHint::NoToken);
}

/// A token endpoint that fails (5xx, a timeout, no answer, a 200 without a usable token) is no
/// lead's fault and makes no call for any: its leads are paused and kept, not retried towards
/// `max_attempts` and dead-lettered; refused credentials stay an authentication failure.
#[tokio::test]
async fn a_failing_token_endpoint_keeps_the_leads() {
    for (status, body, hint) in [
        (503, "down".to_string(), RetryHint::NoToken),
        (
            500,
            json!({"error": "server_error"}).to_string(),
            RetryHint::NoToken,
        ),
        (
            200,
            json!({"token": "elsewhere"}).to_string(),
            RetryHint::NoToken,
        ),
        (
            400,
            json!({"error": "invalid_client"}).to_string(),
            RetryHint::AuthFailure,
        ),
    ] {
        let (url, server) = echo_server(move |_: &str| (status, body.clone())).await;
        let client = client_for(&url, SECRET, Duration::from_secs(5));
        let report = client.update_leads(&updates([1, 2])).await;
        server.abort();
        for outcome in &report.outcomes {
            assert_eq!(error_of(outcome).hint, hint, "{status}: {outcome:?}");
        }
    }
}

#[tokio::test]
async fn timeout_is_retried_without_a_status() {
    let org = org(standin_config()).await;
    let slow = client_for(
        &org.standin.instance_url(),
        SECRET,
        Duration::from_millis(50),
    );
    slow.ensure_token().await.expect("a token");
    org.standin
        .set_faults(faults(|f| f.latency = Duration::from_millis(500)));
    let report = slow.update_leads(&[update(1)]).await;
    assert_failed(&report.outcomes[..1], None, TIMEOUT, RetryHint::Retry);
}

#[tokio::test]
/// The logs are checked in a process of their own (tests/handoff_broker.rs, at trace
/// level): a log capture inside this multi-threaded test binary missed call sites that other
/// tests registered at the same time.
async fn secret_never_appears_in_debug_errors_or_requests() {
    let org = org(StandinConfig {
        known_leads: Some(HashSet::from([lead(1)])),
        ..standin_config()
    })
    .await;
    let good = org.client.update_leads(&[update(1), update(2)]).await;
    let lone = org.client.update_leads(&[update(2)]).await;
    let wrong_secret = "wr0ng-S3cr3t-Also-Secret";
    let wrong = client_for(
        &org.standin.instance_url(),
        wrong_secret,
        Duration::from_secs(5),
    );
    let token_error = wrong.ensure_token().await.expect_err("a wrong secret");
    let refused = wrong.update_leads(&[update(1)]).await;

    let mut shown = vec![
        format!("{:?}", org.client),
        format!("{wrong:?}"),
        format!("{good:?}"),
        format!("{lone:?}"),
        format!("{refused:?}"),
        format!("{token_error}"),
        format!("{token_error:?}"),
        format!("{:?}", org.standin.requests()),
    ];
    for outcome in good
        .outcomes
        .iter()
        .chain(&lone.outcomes)
        .chain(&refused.outcomes)
    {
        if let Err(e) = &outcome.result {
            shown.push(e.to_string());
        }
    }
    for text in &shown {
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
        assert!(!text.contains(wrong_secret), "the secret leaked: {text}");
    }
    assert!(shown[0].contains("client_secret: ***"), "{}", shown[0]);
    assert!(
        shown[0].contains("test-app"),
        "settings still shown: {}",
        shown[0]
    );
}

#[tokio::test]
async fn sforce_limit_info_is_parsed_and_reported() {
    assert_eq!(parse_limit_info("api-usage=18/15000"), Some((18, 15000)));
    assert_eq!(
        parse_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-app)"),
        Some((25, 5000))
    );
    assert_eq!(
        parse_limit_info("per-app-api-usage=17/250(appName=x); api-usage=3/9"),
        Some((3, 9))
    );
    assert_eq!(parse_limit_info("api-usage=x/15000"), None);
    assert_eq!(parse_limit_info("api-usage=18"), None);
    assert_eq!(parse_limit_info(""), None);

    let org = faulty_org(|f| f.daily_limit = Some(50)).await;
    let first = org.client.update_leads(&[update(1)]).await;
    assert_eq!(first.limit_info, Some((1, 50)));
    let second = org.client.update_leads(&[update(1), update(2)]).await;
    assert_eq!(second.limit_info, Some((2, 50)));
}

#[tokio::test]
async fn wrong_credentials_keep_the_leads() {
    let org = org(standin_config()).await;
    let wrong = client_for(
        &org.standin.instance_url(),
        "not-it",
        Duration::from_secs(5),
    );
    let (status, error) = token_failure(&wrong).await;
    let invalid = (Some(400), "invalid_client", RetryHint::AuthFailure);
    assert_eq!((status, error.error_code.as_str(), error.hint), invalid);
    assert_eq!(error.message, "invalid client credentials");
    assert!(!wrong.has_token());
    let report = wrong.update_leads(&[update(1), update(2)]).await;
    assert_eq!(report.api_calls, 1, "no data call without a token");
    for outcome in &report.outcomes {
        assert_eq!(outcome.http_status, Some(400));
        assert_eq!(error_of(outcome).hint, RetryHint::AuthFailure);
    }
}

#[tokio::test]
async fn duplicate_lead_ids_are_sent_once_and_share_the_outcome() {
    let org = org(standin_config()).await;
    let mut again = update(1);
    again.body = object(json!({ "Rating": "Hot" }));
    let report = org
        .client
        .update_leads(&[update(1), update(2), again])
        .await;
    assert_eq!(report.outcomes, vec![ok(200), ok(200), ok(200)]);
    let requests = org.standin.requests();
    let records = &body_json(&requests[1].body)["records"];
    assert_eq!(records.as_array().map(Vec::len), Some(2));
    assert_eq!(
        org.standin.leads().get(&lead(1)),
        Some(&object(json!({ "lead_status": "MQL", "Rating": "Hot" })))
    );
    assert_eq!(org.standin.patch_count(&lead(1)), 1);

    // Two entries for one lead are still one lead: its own row.
    let same = org.client.update_leads(&[update(5), update(5)]).await;
    assert_eq!(same.outcomes, vec![ok(204), ok(204)]);
}

#[tokio::test]
async fn more_than_200_leads_take_one_call_per_200() {
    let org = org(standin_config()).await;
    let leads: Vec<LeadUpdate> = (0..450).map(update).collect();
    let report = org.client.update_leads(&leads).await;
    assert_eq!(report.api_calls, 4, "token + 200 + 200 + 50");
    assert_eq!(report.outcomes.len(), 450);
    assert!(report.outcomes.iter().all(|o| o.result.is_ok()));
    let sizes: Vec<usize> = org
        .standin
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/composite/sobjects"))
        .map(|r| body_json(&r.body)["records"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, vec![200, 200, 50]);
    assert!(org.client.update_leads(&[]).await.outcomes.is_empty());
}

#[tokio::test]
async fn metrics_count_requests_by_endpoint_and_status_class() {
    let recorder = local_recorder();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    crate::ops::telemetry::describe_to_current_recorder();

    let org = org(StandinConfig {
        known_leads: Some(HashSet::from([lead(1), lead(2)])),
        faults: faults(|f| f.token_ttl_calls = Some(2)),
        ..standin_config()
    })
    .await;
    org.client.update_leads(&[update(1)]).await; // token 2xx, sobject 2xx
    org.client.update_leads(&[update(3)]).await; // sobject 4xx (NOT_FOUND)
    org.client.update_leads(&[update(1), update(2)]).await; // 401, token, collection 2xx
    assert_rendered(
        &recorder,
        &[
            r#"leadscore_salesforce_requests_total{endpoint="token",status_class="2xx"} 2"#,
            r#"leadscore_salesforce_requests_total{endpoint="sobject",status_class="2xx"} 1"#,
            r#"leadscore_salesforce_requests_total{endpoint="sobject",status_class="4xx"} 1"#,
            r#"leadscore_salesforce_requests_total{endpoint="collection",status_class="4xx"} 1"#,
            r#"leadscore_salesforce_requests_total{endpoint="collection",status_class="2xx"} 1"#,
            "leadscore_salesforce_token_refreshes_total 1",
            "leadscore_salesforce_api_usage_calls 3",
            "leadscore_salesforce_api_limit_calls 100000",
        ],
    );
}

#[tokio::test]
async fn garbled_collection_answers_mark_no_lead_on_a_guess() {
    use crate::dev::standin::CollectionAnswer;
    let cases = [
        // The last result missing: the others name their records.
        (CollectionAnswer::Short, vec![true, true, false]),
        // An extra result: the three that name their records are taken.
        (CollectionAnswer::Long, vec![true, true, true]),
        // Every result at another record's position: none is taken.
        (CollectionAnswer::Mismatched, vec![false, false, false]),
    ];
    for (fault, want) in cases {
        let org = faulty_org(|f| f.collection_answer = fault).await;
        let report = org.client.update_leads(&updates([1, 2, 3])).await;
        let taken: Vec<bool> = report.outcomes.iter().map(|o| o.result.is_ok()).collect();
        assert_eq!(taken, want, "{fault:?}");
        for o in report.outcomes.iter().filter(|o| o.result.is_err()) {
            let e = error_of(o);
            assert_eq!(
                (e.error_code.as_str(), e.hint),
                (UNEXPECTED_RESPONSE, RetryHint::Retry),
                "{fault:?}: {e}"
            );
        }
    }
    // With a failing record, a short answer dead-letters nobody: the failure may belong to
    // any record.
    let org = org(StandinConfig {
        known_leads: Some(HashSet::from([lead(1), lead(3)])),
        faults: faults(|f| f.collection_answer = CollectionAnswer::Short),
        ..standin_config()
    })
    .await;
    let report = org.client.update_leads(&updates([1, 2, 3])).await;
    assert_eq!(report.outcomes[0], ok(200));
    for o in &report.outcomes[1..] {
        assert_eq!(error_of(o).hint, RetryHint::Retry, "{o:?}");
    }
}

#[tokio::test]
async fn a_non_json_success_is_a_success_for_a_lone_lead_and_a_retry_for_a_collection() {
    let org = faulty_org(|f| f.non_json_success = true).await;
    let lone = org.client.update_leads(&[update(1)]).await;
    assert_eq!(lone.outcomes, vec![ok(200)]);
    let several = org.client.update_leads(&[update(2), update(3)]).await;
    for o in &several.outcomes {
        let e = error_of(o);
        assert_eq!(
            (e.error_code.as_str(), e.hint),
            (UNEXPECTED_RESPONSE, RetryHint::Retry)
        );
        assert!(e.message.contains("<html>"), "{}", e.message);
    }
}

#[tokio::test]
async fn oversized_answers_are_transient_failures() {
    let org = org(standin_config()).await;
    let pad = |bytes: usize| org.standin.set_faults(faults(|f| f.answer_padding = bytes));
    // A lone lead: 1 MiB.
    pad(MAX_ANSWER_BYTES_PER_LEAD - 10);
    assert_eq!(
        org.client.update_leads(&[update(1)]).await.outcomes,
        vec![ok(200)]
    );
    // Past the cap, a lone PATCH's 2xx is still a success: its body is not needed (and not
    // read past the cap), and retrying would repeat an update that was made.
    pad(MAX_ANSWER_BYTES_PER_LEAD + 1);
    let big = org.client.update_leads(&[update(1)]).await;
    assert_eq!(big.outcomes, vec![ok(200)]);
    // Two leads: 2 MiB.
    pad(MAX_ANSWER_BYTES_PER_LEAD * 3 / 2);
    let two = org.client.update_leads(&[update(1), update(2)]).await;
    assert_eq!(two.outcomes, vec![ok(200), ok(200)]);
    // Twenty leads: 16 MiB, not 20.
    pad(MAX_ANSWER_BYTES_PER_CALL + 1);
    let leads: Vec<LeadUpdate> = (0..20).map(update).collect();
    let many = org.client.update_leads(&leads).await;
    assert!(many
        .outcomes
        .iter()
        .all(|o| error_of(o).error_code == RESPONSE_TOO_LARGE));
    assert_eq!(answer_limit(0), MAX_ANSWER_BYTES_PER_LEAD);
    assert_eq!(answer_limit(200), MAX_ANSWER_BYTES_PER_CALL);
}

/// A server whose answer never ends (chunked, no length): the client stops reading at its
/// cap instead of buffering it. Returns the address and the bytes it managed to send.
async fn endless_server() -> (String, tokio::task::JoinHandle<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return 0;
        };
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return 0,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let piece = vec![b' '; 64 * 1024];
        let mut sent = 0usize;
        while sent < 50 * 1024 * 1024 {
            let size = format!("{:x}\r\n", piece.len());
            let frame = [size.as_bytes(), &piece[..], &b"\r\n"[..]].concat();
            if socket.write_all(&frame).await.is_err() {
                break;
            }
            sent += piece.len();
        }
        sent
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn a_50_mb_answer_is_never_read_whole() {
    let (url, server) = endless_server().await;
    let client = client_for(&url, SECRET, Duration::from_secs(30));
    let (status, error) = token_failure(&client).await;
    let too_large = (Some(200), RESPONSE_TOO_LARGE, RetryHint::NoToken);
    assert_eq!((status, error.error_code.as_str(), error.hint), too_large);
    drop(client);
    let sent = server.await.expect("the server task");
    assert!(
        sent < 50 * 1024 * 1024,
        "the client stopped reading: the server could send only {sent} bytes"
    );
}

#[tokio::test]
async fn refused_credentials_are_counted_as_authentication_failures() {
    let recorder = local_recorder();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    crate::ops::telemetry::describe_to_current_recorder();
    let org = faulty_org(|f| f.token_ttl_calls = Some(0)).await;
    let wrong = client_for(&org.standin.instance_url(), "nope", Duration::from_secs(5));
    let refused = wrong.update_leads(&[update(1)]).await;
    assert_eq!(error_of(&refused.outcomes[0]).hint, RetryHint::AuthFailure);
    let expired = org.client.update_leads(&[update(1)]).await;
    assert_eq!(error_of(&expired.outcomes[0]).hint, RetryHint::AuthFailure);
    assert_rendered(
        &recorder,
        &[
            r#"leadscore_salesforce_auth_failures_total{cause="token_refused"} 1"#,
            r#"leadscore_salesforce_auth_failures_total{cause="session_refused"} 1"#,
        ],
    );
}

/// How an [`echo_server`] answers a request: its status and body.
type Answer = Box<dyn Fn(&str) -> (u16, String) + Send + Sync>;

/// A server that answers every request with `answer(request)`: the request as received (head
/// and body), so a test can echo it back as a proxy's error page or a careless endpoint would.
/// Closes each connection after its answer.
async fn echo_server(
    answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then as many body bytes as content-length says.
            let complete = |r: &[u8]| {
                let text = String::from_utf8_lossy(r);
                let Some(end) = text.find("\r\n\r\n") else {
                    return false;
                };
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                r.len() >= end + 4 + length
            };
            while !complete(&request) {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let (status, body) = answer(&String::from_utf8_lossy(&request));
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        }
    });
    (format!("http://{addr}"), task)
}

/// An [`echo_server`] answer: a token request gets `token`, every other request `data(request)`.
fn token_then(
    token: &'static str,
    data: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
) -> impl Fn(&str) -> (u16, String) + Send + Sync + 'static {
    move |r: &str| {
        if r.starts_with("POST") {
            (200, json!({ "access_token": token }).to_string())
        } else {
            data(r)
        }
    }
}

/// SPEC 6: the secret is never logged. An endpoint (or a proxy before it) that echoes the
/// request in its error puts the client secret, or the bearer token, into the answer; the
/// errors made of that answer (logged, and written to the outcome and dead-letter topics)
/// must not carry either, in any form the request had them: as sent, form-encoded or in a
/// JSON string.
#[tokio::test]
async fn an_answer_echoing_the_request_leaks_neither_the_secret_nor_the_token() {
    // Characters that percent-encoding and JSON both change, a space, a slash, a quote.
    let secret = "s3cr3t+Echo/Me \"quoted\" &more";
    let token = "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.echo";
    let answers: Vec<Answer> = vec![
        // An OAuth error whose description quotes the request.
        Box::new(|r: &str| {
            let e = json!({"error": "invalid_client", "error_description": r});
            (400, e.to_string())
        }),
        // A proxy's page that is not JSON at all.
        Box::new(|r: &str| (502, format!("bad gateway for: {r}"))),
        // The secret in other encodings than the form's: a URL's `%20` and lower-case hex,
        // JSON with `\/`, JSON escaped twice.
        Box::new(|_: &str| {
            let s = "s3cr3t+Echo/Me \"quoted\" &more";
            let json = serde_json::to_string(s).unwrap_or_default();
            let text = format!(
                "s3cr3t%2BEcho%2FMe%20%22quoted%22%20%26more s3cr3t%2bEcho%2fMe+%22quoted%22+%26more {} {}",
                json.replace('/', "\\/"),
                serde_json::to_string(&json).unwrap_or_default()
            );
            (
                400,
                json!({"error": "invalid_client", "error_description": text}).to_string(),
            )
        }),
        // A token, then Salesforce errors quoting the PATCH request (its Authorization too).
        Box::new(token_then(token, |r: &str| {
            let e = json!([{"message": r, "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION"}]);
            (400, e.to_string())
        })),
        Box::new(token_then(token, |r: &str| {
            (503, format!("<html>upstream said: {r}</html>"))
        })),
    ];
    let mut checked = 0;
    for answer in answers {
        let (url, server) = echo_server(answer).await;
        let client = client_for(&url, secret, Duration::from_secs(5));
        let mut shown = Vec::new();
        if let Err(e) = client.ensure_token().await {
            shown.push(format!("{e} {e:?}"));
        }
        for leads in [&updates([1])[..], &updates([1, 2])[..]] {
            let report = client.update_leads(leads).await;
            for outcome in &report.outcomes {
                if let Err(e) = &outcome.result {
                    shown.push(format!("{e} {e:?}"));
                }
            }
        }
        server.abort();
        for text in &shown {
            for (what, form) in [
                ("secret", secret.to_string()),
                (
                    "form-encoded secret",
                    "s3cr3t%2BEcho%2FMe+%22quoted%22+%26more".to_string(),
                ),
                (
                    "URL-encoded secret",
                    "s3cr3t%2BEcho%2FMe%20%22quoted%22%20%26more".to_string(),
                ),
                ("lower-case hex secret", "s3cr3t%2bEcho%2fMe".to_string()),
                (
                    "JSON-escaped secret",
                    r#"s3cr3t+Echo/Me \"quoted\""#.to_string(),
                ),
                ("JSON secret with \\/", r#"s3cr3t+Echo\/Me"#.to_string()),
                ("twice-escaped secret", r#"Me \\\"quoted"#.to_string()),
                ("secret's head", "s3cr3t".to_string()),
                ("token", token.to_string()),
            ] {
                assert!(!text.contains(&form), "the {what} leaked: {text}");
            }
        }
        assert!(
            shown.iter().any(|t| t.contains("[redacted]")),
            "the echo reached the errors, redacted: {shown:?}"
        );
        checked += shown.len();
    }
    assert!(checked >= 10, "{checked} errors checked");
}

/// An error message of most of a megabyte (within the answer cap), or a thousand blamed fields, is cut to a bound before it
/// is logged or copied into the outcome and the dead letter: a record that size could be
/// refused by Kafka, which stops the handoff, and each restart would repeat the call.
#[tokio::test]
async fn a_huge_error_message_is_cut_to_a_bound() {
    let (url, server) = echo_server(token_then("tok-for-the-huge-answer", |_: &str| {
        let fields: Vec<String> = (0..1000).map(|i| format!("Field{i}__c")).collect();
        let e = json!([{
            "message": "x".repeat(MAX_ANSWER_BYTES_PER_LEAD - 64 * 1024),
            "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "fields": fields,
        }]);
        (400, e.to_string())
    }))
    .await;
    let client = client_for(&url, SECRET, Duration::from_secs(5));
    let report = client.update_leads(&updates([1])).await;
    server.abort();
    let e = error_of(&report.outcomes[0]);
    assert_eq!(e.error_code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert!(
        e.message.len() < MAX_ERROR_MESSAGE + 64,
        "{}",
        e.message.len()
    );
    assert!(e.message.ends_with("more bytes)"), "says it was cut");
    assert_eq!(e.fields.len(), MAX_ERROR_FIELDS);
    assert!(e.to_string().len() < 4 * MAX_ERROR_MESSAGE);
}

/// A token that cannot be sent in a header (a line break in it) is no token: not cached, the
/// leads kept for a retry, instead of every call failing before it is sent, each lead
/// dead-lettered as a connection error, for as long as the token stayed cached.
#[tokio::test]
async fn a_token_that_cannot_be_a_header_is_refused_and_the_leads_kept() {
    let (url, server) = echo_server(token_then("00Dxx!AR8\r\nX-Evil: 1", |_: &str| {
        (204, String::new())
    }))
    .await;
    let client = client_for(&url, SECRET, Duration::from_secs(5));
    let (status, error) = token_failure(&client).await;
    assert_eq!(
        (status, error.error_code.as_str()),
        (Some(200), UNEXPECTED_RESPONSE)
    );
    assert!(!client.has_token());
    let report = client.update_leads(&updates([1, 2])).await;
    server.abort();
    for outcome in &report.outcomes {
        let e = error_of(outcome);
        assert_ne!(e.hint, RetryHint::Permanent, "{outcome:?}");
        assert_ne!(e.error_code, CONNECTION_ERROR, "{outcome:?}");
    }
}

/// Every `status_class` the client can count is a value the metrics table declares (and so
/// registers at zero): a 3xx, which the client answers as it follows no redirect, was counted
/// under a value the table did not list (an outside review).
#[test]
fn every_status_class_counted_is_declared_in_the_metrics_table() {
    let declared = crate::ops::metrics::METRICS
        .iter()
        .find(|m| m.name == crate::ops::metrics::SALESFORCE_REQUESTS)
        .and_then(|m| m.labels.iter().find(|l| l.name == "status_class"))
        .and_then(|l| l.values.list())
        .expect("the status_class label");
    for status in 100..=599u16 {
        let class = status_class(status);
        assert!(
            declared.contains(&class),
            "{status}: {class} not in {declared:?}"
        );
    }
    assert!(declared.contains(&"error"), "no answer");
}
