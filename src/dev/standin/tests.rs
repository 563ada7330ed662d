//! The stand-in over HTTP: its answers, faults and strictness, as a client sees them.

use super::handlers::{parse_form, redact_form_secret, NOT_FOUND_MESSAGE};
use super::testing::{self, faults, lead, TestStandin};
use super::*;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::json;

const SECRET: &str = "p@ss w0rd&=+";
const JSON: &str = "application/json";
/// The token request of the org's own client.
const GOOD_CLIENT: &[(&str, &str)] = &[
    ("grant_type", "client_credentials"),
    ("client_id", "test-app"),
    ("client_secret", SECRET),
];
const TOKEN_PATH: &str = "/services/oauth2/token";
const COLLECTION: &str = "/services/data/v60.0/composite/sobjects";

fn config() -> StandinConfig {
    testing::config(SECRET)
}

/// A running stand-in and a plain HTTP client.
struct Running {
    standin: TestStandin,
    http: reqwest::Client,
    base: String,
}

async fn start(cfg: StandinConfig) -> Running {
    let standin = TestStandin::start(cfg).await;
    Running {
        base: standin.instance_url(),
        standin,
        http: reqwest::Client::new(),
    }
}

/// A stand-in with the faults `set` turns on.
async fn start_faulty(set: impl FnOnce(&mut Faults)) -> Running {
    start(StandinConfig {
        faults: faults(set),
        ..config()
    })
    .await
}

/// An answer: status, `Sforce-Limit-Info`, body as JSON (`Null` when empty).
struct Answer {
    status: u16,
    limit_info: Option<String>,
    body: Value,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let limit_info = response
        .headers()
        .get("sforce-limit-info")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("a JSON body")
    };
    Answer {
        status,
        limit_info,
        body,
    }
}

impl Running {
    async fn token_with(&self, form: &[(&str, &str)]) -> Answer {
        let url = format!("{}{TOKEN_PATH}", self.base);
        answer(self.http.post(url).form(form).send().await.expect("sent")).await
    }

    async fn token(&self) -> String {
        let a = self.token_with(GOOD_CLIENT).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["access_token"]
            .as_str()
            .expect("an access token")
            .to_string()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(CONTENT_TYPE, content_type)
            .body(body.to_string());
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        answer(request.send().await.expect("sent")).await
    }

    async fn patch_lead(&self, token: &str, id: &str, body: &str) -> Answer {
        let path = format!("/services/data/v60.0/sobjects/Lead/{id}");
        self.send(Method::PATCH, &path, Some(token), JSON, body)
            .await
    }

    async fn patch_collection(&self, token: &str, body: &Value) -> Answer {
        self.send(
            Method::PATCH,
            COLLECTION,
            Some(token),
            JSON,
            &body.to_string(),
        )
        .await
    }
}

/// Asserts the documented REST error shape with this status and code.
fn assert_rest_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    let errors = a.body.as_array().expect("an error array");
    assert_eq!(errors.len(), 1, "{}", a.body);
    assert_eq!(errors[0]["errorCode"], code, "{}", a.body);
    assert!(errors[0]["message"].is_string(), "{}", a.body);
    assert!(errors[0]["fields"].is_array(), "{}", a.body);
}

fn record(id: &str) -> Value {
    json!({ "attributes": { "type": "Lead" }, "id": id, "lead_status": "MQL" })
}

#[tokio::test]
async fn token_endpoint_answers_with_the_documented_fields() {
    let s = start(config()).await;
    let a = s.token_with(GOOD_CLIENT).await;
    assert_eq!(a.status, 200);
    for field in [
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
    ] {
        assert!(a.body[field].is_string(), "{field} in {}", a.body);
    }
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["instance_url"], s.base.as_str());
    assert!(a.body["issued_at"]
        .as_str()
        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())));
    assert_eq!(a.limit_info, None, "the token endpoint is not an API call");
    let other = s.token().await;
    assert_ne!(a.body["access_token"].as_str(), Some(other.as_str()));
    assert_eq!(s.standin.tokens_issued(), 2);
    assert_eq!(s.standin.api_calls(), 0);
}

#[tokio::test]
async fn token_endpoint_refuses_wrong_clients_and_grant_types() {
    let s = start(config()).await;
    type Form<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Form, &str, &str); 4] = [
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "test-app"),
                ("client_secret", "nope"),
            ],
            "invalid_client",
            "invalid client credentials",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "other-app"),
                ("client_secret", SECRET),
            ],
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            &[
                ("grant_type", "password"),
                ("client_id", "test-app"),
                ("client_secret", SECRET),
            ],
            "unsupported_grant_type",
            "grant type not supported",
        ),
        (&[], "unsupported_grant_type", "grant type not supported"),
    ];
    for (form, error, description) in cases {
        let a = s.token_with(form).await;
        assert_eq!(a.status, 400, "{form:?}");
        assert_eq!(
            a.body,
            json!({ "error": error, "error_description": description }),
            "{form:?}"
        );
    }
    assert_eq!(s.standin.tokens_issued(), 0);
    let get = s
        .send(Method::GET, TOKEN_PATH, None, "text/plain", "")
        .await;
    assert_rest_error(&get, 405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn token_requests_are_recorded_without_the_secret() {
    let s = start(config()).await;
    s.token().await;
    let requests = s.standin.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].body,
        "grant_type=client_credentials&client_id=test-app&client_secret=***"
    );
    assert!(!format!("{requests:?}").contains(SECRET));
    assert!(!format!("{:?}", config()).contains(SECRET));
}

#[tokio::test]
async fn api_calls_without_a_valid_bearer_token_are_invalid_session_id() {
    let s = start(config()).await;
    let path = format!("/services/data/v60.0/sobjects/Lead/{}", lead(1));
    for token in [None, Some("00D000000000001!made-up")] {
        let a = s.send(Method::PATCH, &path, token, JSON, "{}").await;
        assert_rest_error(&a, 401, "INVALID_SESSION_ID");
        assert_eq!(a.body[0]["message"], "Session expired or invalid");
    }
    assert_eq!(s.standin.api_calls(), 0);
}

#[tokio::test]
async fn lead_patch_answers_204_and_merges_fields() {
    let s = start(config()).await;
    let token = s.token().await;
    let first = s
        .patch_lead(&token, &lead(1), r#"{"lead_status":"MQL"}"#)
        .await;
    assert_eq!((first.status, &first.body), (204, &Value::Null));
    assert_eq!(first.limit_info.as_deref(), Some("api-usage=1/100000"));
    let second = s.patch_lead(&token, &lead(1), r#"{"Rating":"Hot"}"#).await;
    assert_eq!(second.status, 204);
    assert_eq!(second.limit_info.as_deref(), Some("api-usage=2/100000"));
    let fifteen = &lead(2)[..15];
    assert_eq!(s.patch_lead(&token, fifteen, "{}").await.status, 204);

    assert_eq!(s.standin.patch_count(&lead(1)), 2);
    assert_eq!(s.standin.patch_count(&lead(9)), 0);
    let leads = s.standin.leads();
    assert_eq!(
        Value::Object(leads[&lead(1)].clone()),
        json!({ "lead_status": "MQL", "Rating": "Hot" })
    );
    assert!(leads.contains_key(fifteen));
    let last = s.standin.requests().pop().expect("recorded");
    assert_eq!(last.header("content-type"), Some("application/json"));
    assert!(last
        .header("authorization")
        .is_some_and(|a| a.ends_with(&token)));
}

#[tokio::test]
async fn lead_patch_errors_have_the_documented_shapes() {
    let s = start(StandinConfig {
        known_leads: Some(HashSet::from([lead(1), lead(2)])),
        deleted_leads: HashSet::from([lead(2)]),
        ..config()
    })
    .await;
    let token = s.token().await;
    let malformed = s.patch_lead(&token, "003-not-an-id", "{}").await;
    assert_rest_error(&malformed, 400, "MALFORMED_ID");
    assert_eq!(malformed.body[0]["fields"], json!(["Id"]));
    assert_rest_error(
        &s.patch_lead(&token, &lead(7), "{}").await,
        404,
        "NOT_FOUND",
    );
    assert_rest_error(
        &s.patch_lead(&token, &lead(2), "{}").await,
        404,
        "ENTITY_IS_DELETED",
    );
    for bad in [
        "not json",
        "[1, 2]",
        "\"MQL\"",
        r#"{"lead_status": {"nested": 1}}"#,
    ] {
        let a = s.patch_lead(&token, &lead(1), bad).await;
        assert_rest_error(&a, 400, "JSON_PARSER_ERROR");
    }
    let path = format!("/services/data/v60.0/sobjects/Lead/{}", lead(1));
    let plain = s
        .send(Method::PATCH, &path, Some(&token), "text/plain", "{}")
        .await;
    assert_rest_error(&plain, 415, "UNSUPPORTED_MEDIA_TYPE");
    let get = s.send(Method::GET, &path, Some(&token), JSON, "").await;
    assert_rest_error(&get, 405, "METHOD_NOT_ALLOWED");
    for other in [
        format!("/services/data/v59.0/sobjects/Lead/{}", lead(1)),
        format!("/services/data/v60.0/sobjects/Account/{}", lead(1)),
        "/services/data/v60.0/query".to_string(),
    ] {
        let a = s
            .send(Method::PATCH, &other, Some(&token), JSON, "{}")
            .await;
        assert_rest_error(&a, 404, "NOT_FOUND");
        assert!(
            a.limit_info.is_some(),
            "every API answer carries Sforce-Limit-Info"
        );
    }
    assert!(s.standin.leads().is_empty(), "no error changed a lead");
}

#[tokio::test]
async fn collection_answers_one_result_per_record_in_order() {
    let s = start(StandinConfig {
        known_leads: Some(HashSet::from([lead(1), lead(2), lead(3)])),
        deleted_leads: HashSet::from([lead(3)]),
        ..config()
    })
    .await;
    let token = s.token().await;
    let body = json!({
        "allOrNone": false,
        "records": [
            record(&lead(1)),
            { "attributes": { "type": "Lead" }, "lead_status": "MQL" },
            record("bad-id"),
            record(&lead(3)),
            record(&lead(4)),
            record(&lead(2)),
        ]
    });
    let a = s.patch_collection(&token, &body).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.limit_info.as_deref(), Some("api-usage=1/100000"));
    let failure = |code: &str, message: &str, fields: Value| json!({ "success": false, "errors": [{ "statusCode": code, "message": message, "fields": fields }] });
    assert_eq!(
        a.body,
        json!([
            { "id": lead(1), "success": true, "errors": [] },
            failure("MISSING_ARGUMENT", "Id not specified in an update call", json!(["Id"])),
            failure("MALFORMED_ID", "Lead ID: id value of incorrect type: bad-id", json!(["Id"])),
            failure("ENTITY_IS_DELETED", "entity is deleted", json!([])),
            failure("NOT_FOUND", NOT_FOUND_MESSAGE, json!([])),
            { "id": lead(2), "success": true, "errors": [] },
        ])
    );
    let updated: Vec<String> = s.standin.leads().into_keys().collect();
    assert_eq!(updated, vec![lead(1), lead(2)]);
    assert_eq!(s.standin.api_calls(), 1, "one call however many records");
}

#[tokio::test]
async fn collection_call_errors_have_the_documented_shapes() {
    let s = start(config()).await;
    let token = s.token().await;
    let too_many: Vec<Value> = (0..201).map(|n| record(&lead(n))).collect();
    let cases = [
        (json!({ "records": [record(&lead(1))] }), "INVALID_FIELD"),
        (
            json!({ "allOrNone": "no", "records": [] }),
            "JSON_PARSER_ERROR",
        ),
        (json!({ "allOrNone": false }), "JSON_PARSER_ERROR"),
        (json!([record(&lead(1))]), "JSON_PARSER_ERROR"),
        (
            json!({ "allOrNone": false, "records": too_many }),
            "EXCEEDED_ID_LIMIT",
        ),
        (
            json!({ "allOrNone": false, "records": [{ "id": lead(1), "lead_status": "MQL" }] }),
            "INVALID_TYPE",
        ),
        (
            json!({ "allOrNone": false, "records": [{ "attributes": { "type": "Account" }, "id": lead(1) }] }),
            "INVALID_TYPE",
        ),
        (
            json!({ "allOrNone": false, "records": [record(&lead(1)), record(&lead(1))] }),
            "INVALID_FIELD",
        ),
        (
            json!({ "allOrNone": false, "records": [{ "attributes": { "type": "Lead" }, "id": lead(1), "x": [1] }] }),
            "JSON_PARSER_ERROR",
        ),
    ];
    for (body, code) in cases {
        let a = s.patch_collection(&token, &body).await;
        assert_rest_error(&a, 400, code);
    }
    let exactly_200: Vec<Value> = (0..200).map(|n| record(&lead(n))).collect();
    assert!(
        s.standin.leads().is_empty(),
        "a refused call changes nothing"
    );
    let full = s
        .patch_collection(
            &token,
            &json!({ "allOrNone": false, "records": exactly_200 }),
        )
        .await;
    assert_eq!(full.body.as_array().map(Vec::len), Some(200));
    let wrong_type = s
        .send(
            Method::PATCH,
            COLLECTION,
            Some(&token),
            "application/xml",
            "<records/>",
        )
        .await;
    assert_rest_error(&wrong_type, 415, "UNSUPPORTED_MEDIA_TYPE");
}

#[tokio::test]
async fn all_or_none_rolls_back_every_record_when_one_fails() {
    let s = start(config()).await;
    let token = s.token().await;
    let body = json!({ "allOrNone": true, "records": [record(&lead(1)), record("bad")] });
    let a = s.patch_collection(&token, &body).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body[0]["success"], false);
    assert_eq!(
        a.body[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(a.body[1]["errors"][0]["statusCode"], "MALFORMED_ID");
    assert!(s.standin.leads().is_empty());
}

#[tokio::test]
async fn tokens_expire_after_the_configured_number_of_calls() {
    let s = start_faulty(|f| f.token_ttl_calls = Some(2)).await;
    let token = s.token().await;
    assert_eq!(s.patch_lead(&token, &lead(1), "{}").await.status, 204);
    assert_eq!(s.patch_lead(&token, &lead(1), "{}").await.status, 204);
    let expired = s.patch_lead(&token, &lead(1), "{}").await;
    assert_rest_error(&expired, 401, "INVALID_SESSION_ID");
    let fresh = s.token().await;
    assert_eq!(s.patch_lead(&fresh, &lead(1), "{}").await.status, 204);
}

#[tokio::test]
async fn daily_limit_answers_request_limit_exceeded_until_reset() {
    let s = start_faulty(|f| f.daily_limit = Some(2)).await;
    let token = s.token().await;
    for _ in 0..2 {
        assert_eq!(s.patch_lead(&token, &lead(1), "{}").await.status, 204);
    }
    let refused = s.patch_lead(&token, &lead(1), "{}").await;
    assert_rest_error(&refused, 403, "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(refused.limit_info.as_deref(), Some("api-usage=2/2"));
    s.standin.reset_limit();
    let again = s.patch_lead(&token, &lead(1), "{}").await;
    assert_eq!(again.status, 204);
    assert_eq!(again.limit_info.as_deref(), Some("api-usage=1/2"));
}

#[tokio::test]
async fn outage_and_lock_faults_follow_their_rates_and_seed() {
    let s = start_faulty(|f| f.unavailable_rate = 1.0).await;
    let token = s.token().await;
    let down = s.patch_lead(&token, &lead(1), "{}").await;
    assert_rest_error(&down, 503, "SERVER_UNAVAILABLE");
    assert_eq!(s.standin.api_calls(), 0, "refused calls are not counted");

    s.standin.set_faults(faults(|f| f.lock_rate = 1.0));
    assert_rest_error(
        &s.patch_lead(&token, &lead(1), "{}").await,
        400,
        "UNABLE_TO_LOCK_ROW",
    );

    let records: Vec<Value> = (0..200).map(|n| record(&lead(n))).collect();
    let body = json!({ "allOrNone": false, "records": records });
    let mut runs = Vec::new();
    for _ in 0..2 {
        s.standin
            .set_faults(faults(|f| (f.lock_rate, f.seed) = (0.5, 7)));
        let a = s.patch_collection(&token, &body).await;
        let locked: Vec<bool> = a
            .body
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW")
            .collect();
        runs.push(locked);
    }
    let count = runs[0].iter().filter(|l| **l).count();
    assert!((60..=140).contains(&count), "about half locked: {count}");
    assert_eq!(runs[0], runs[1], "the same seed locks the same records");
}

#[tokio::test]
async fn garbled_answer_faults_apply_the_records_then_garble_the_answer() {
    let s = start(config()).await;
    let token = s.token().await;
    let body = json!({ "allOrNone": false, "records": [record(&lead(1)), record(&lead(2))] });
    let ids = |a: &Answer| -> Vec<Value> {
        a.body
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["id"].clone())
            .collect()
    };
    let cases = [
        (CollectionAnswer::Short, vec![json!(lead(1))]),
        (
            CollectionAnswer::Long,
            vec![json!(lead(1)), json!(lead(2)), json!(STRAY_LEAD_ID)],
        ),
        (
            CollectionAnswer::Mismatched,
            vec![json!(lead(2)), json!(lead(1))],
        ),
    ];
    for (fault, want) in cases {
        s.standin
            .set_faults(faults(|f| f.collection_answer = fault));
        let a = s.patch_collection(&token, &body).await;
        assert_eq!(a.status, 200, "{fault:?}");
        assert_eq!(ids(&a), want, "{fault:?}");
    }
    assert_eq!(s.standin.patch_count(&lead(2)), 3, "applied every time");

    // A lone lead's raw answer, status and text.
    let raw = |set: fn(&mut Faults)| {
        s.standin.set_faults(faults(set));
        let path = format!("{}/services/data/v60.0/sobjects/Lead/{}", s.base, lead(1));
        let request = s
            .http
            .patch(path)
            .bearer_auth(&token)
            .header(CONTENT_TYPE, "application/json")
            .body("{}");
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status().as_u16();
            (status, response.text().await.expect("a body"))
        }
    };
    let (status, padded) = raw(|f| f.answer_padding = 1000).await;
    assert_eq!((status, padded.len()), (200, 1000));
    assert!(padded.trim().is_empty());
    let (status, html) = raw(|f| f.non_json_success = true).await;
    assert_eq!(status, 200);
    assert!(html.starts_with("<html>"), "{html}");
    assert_eq!(s.standin.patch_count(&lead(1)), 5, "applied every time");
}

#[tokio::test]
async fn leads_view_shows_what_the_org_holds() {
    let s = start(config()).await;
    let token = s.token().await;
    s.patch_lead(&token, &lead(1), r#"{"lead_status":"MQL"}"#)
        .await;
    let a = answer(
        s.http
            .get(format!("{}/standin/leads", s.base))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["leads"][lead(1)], json!({ "lead_status": "MQL" }));
    assert_eq!(a.body["patch_counts"][lead(1)], 1);
    assert_eq!(a.body["api_calls"], 1);
    assert_eq!(a.body["tokens_issued"], 1);
    let unknown = s
        .send(Method::GET, "/nowhere", None, "text/plain", "")
        .await;
    assert_rest_error(&unknown, 404, "NOT_FOUND");
}

#[test]
fn form_bodies_decode_escapes_and_plus() {
    assert_eq!(
        parse_form(b"a=1&b=p%40ss+w0rd%26%3D%2B&c&=x&d=%zz"),
        vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "p@ss w0rd&=+".to_string()),
            ("c".to_string(), String::new()),
            (String::new(), "x".to_string()),
            ("d".to_string(), "%zz".to_string()),
        ]
    );
    assert_eq!(
        redact_form_secret("client_id=a&client_secret=p%40ss&x=1"),
        "client_id=a&client_secret=***&x=1"
    );
    assert!(is_salesforce_id("00Q000000000001"));
    assert!(is_salesforce_id("00Q000000000001AAA"));
    assert!(!is_salesforce_id("00Q00000000001"));
    assert!(!is_salesforce_id("00Q-00000000001AA"));
    assert!(!is_salesforce_id("user-000042"));
}
