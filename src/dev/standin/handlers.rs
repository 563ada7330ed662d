//! The stand-in's HTTP side: routing, the OAuth token endpoint, and the REST API's answers
//! (sObject rows, sObject Collections, injected faults), over the shared state of `mod.rs`.

use super::{
    CollectionAnswer, Inner, RecordedRequest, Standin, MAX_RECORDED_REQUESTS, STRAY_LEAD_ID,
};
use crate::handoff::salesforce::MAX_COLLECTION_RECORDS;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

/// Every request: recorded, delayed by the latency fault, then routed by hand so that unknown
/// paths and methods get Salesforce's error shapes rather than the framework's.
pub(super) async fn handle(
    State(standin): State<Standin>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let latency = {
        let mut inner = standin.lock();
        record(&mut inner, &method, &uri, &headers, &body);
        inner.cfg.faults.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if path == "/services/oauth2/token" {
        if method != Method::POST {
            return method_not_allowed(&method, "POST");
        }
        return token(&standin, &body);
    }
    if path == "/standin/leads" && method == Method::GET {
        return leads_view(&standin);
    }
    match path.strip_prefix("/services/data/") {
        Some(rest) => api(&standin, &method, rest, &headers, &body),
        None => rest_error(StatusCode::NOT_FOUND, "NOT_FOUND", NOT_FOUND_MESSAGE, &[]),
    }
}

pub(super) const NOT_FOUND_MESSAGE: &str = "The requested resource does not exist";

fn record(inner: &mut Inner, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    let body = if uri.path() == "/services/oauth2/token" {
        redact_form_secret(&text)
    } else {
        text.into_owned()
    };
    let request = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    if inner.requests.len() >= MAX_RECORDED_REQUESTS {
        inner.requests.pop_front();
    }
    inner.requests.push_back(request);
}

/// A form body with the `client_secret` value replaced, so recordings can be printed.
pub(super) fn redact_form_secret(form: &str) -> String {
    form.split('&')
        .map(|pair| {
            if pair.starts_with("client_secret=") {
                "client_secret=***"
            } else {
                pair
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------------------------------------
// OAuth token
// ---------------------------------------------------------------------------------------------

/// OAuth 2.0 client credentials. Salesforce tells an unknown consumer key
/// (`invalid_client_id`) from a wrong secret (`invalid_client`); both are `400`.
fn token(standin: &Standin, body: &[u8]) -> Response {
    let form = parse_form(body);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let oauth_error = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    };
    if field("grant_type") != Some("client_credentials") {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    let mut inner = standin.lock();
    if field("client_id") != Some(inner.cfg.client_id.as_str()) {
        return oauth_error("invalid_client_id", "client identifier invalid");
    }
    if field("client_secret") != Some(inner.cfg.client_secret.expose()) {
        return oauth_error("invalid_client", "invalid client credentials");
    }
    inner.tokens_issued += 1;
    // Org id ! session id, as Salesforce's tokens look; the draw keeps tokens unguessable
    // enough that a test using a made-up one gets 401.
    let nonce = (inner.draw() * 1e15) as u64;
    let token = format!(
        "00D000000000001!AQ.standin.{}.{nonce:015}",
        inner.tokens_issued
    );
    inner.tokens.insert(token.clone(), 0);
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let instance_url = standin.instance_url();
    Json(json!({
        "access_token": token,
        "instance_url": instance_url,
        "id": format!("{instance_url}/id/00D000000000001AAA/005000000000001AAA"),
        "token_type": "Bearer",
        "issued_at": issued_at.to_string(),
        "signature": "c3RhbmRpbi1zaWduYXR1cmUtbm90LWFuLWhtYWM=",
        "scope": "api",
    }))
    .into_response()
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte).
pub(super) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Decodes `%XX` escapes; a malformed escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The REST API
// ---------------------------------------------------------------------------------------------

/// `/services/data/...`: session, limit and outage checks, then the resource; every answer
/// with `Sforce-Limit-Info`.
fn api(
    standin: &Standin,
    method: &Method,
    rest: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let mut inner = standin.lock();
    let mut response = api_answer(&mut inner, method, rest, headers, body);
    let usage = format!("api-usage={}/{}", inner.api_calls, inner.limit());
    if let Ok(value) = HeaderValue::from_str(&usage) {
        response.headers_mut().insert("sforce-limit-info", value);
    }
    response
}

fn api_answer(
    inner: &mut Inner,
    method: &Method,
    rest: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ttl = inner.cfg.faults.token_ttl_calls;
    let session_ok = match token.and_then(|t| inner.tokens.get(t)) {
        Some(used) => ttl.is_none_or(|ttl| *used < ttl),
        None => false,
    };
    if !session_ok {
        return rest_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
            &[],
        );
    }
    if inner.api_calls >= inner.limit() && inner.cfg.faults.daily_limit.is_some() {
        return rest_error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
            &[],
        );
    }
    let unavailable = inner.cfg.faults.unavailable_rate;
    if inner.chance(unavailable) {
        return rest_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "Server temporarily unavailable; try again later",
            &[],
        );
    }
    inner.api_calls += 1;
    if let Some(used) = token.and_then(|t| inner.tokens.get_mut(t)) {
        *used += 1;
    }

    let segments: Vec<&str> = rest.split('/').collect();
    let (version, resource) = match segments.split_first() {
        Some((v, r)) => (*v, r),
        None => return not_found(),
    };
    if version != inner.cfg.api_version {
        return not_found();
    }
    match resource {
        ["sobjects", "Lead", id] => {
            if method != Method::PATCH {
                return method_not_allowed(method, "PATCH");
            }
            if let Some(refusal) = non_json_refusal(headers) {
                return refusal;
            }
            patch_lead(inner, &percent_decode(id), body)
        }
        ["composite", "sobjects"] => {
            if method != Method::PATCH {
                return method_not_allowed(method, "PATCH");
            }
            if let Some(refusal) = non_json_refusal(headers) {
                return refusal;
            }
            patch_collection(inner, body)
        }
        _ => not_found(),
    }
}

/// A REST error: `[{"message", "errorCode", "fields"}]`.
fn rest_error(status: StatusCode, code: &str, message: &str, fields: &[&str]) -> Response {
    (
        status,
        Json(json!([{ "message": message, "errorCode": code, "fields": fields }])),
    )
        .into_response()
}

fn not_found() -> Response {
    rest_error(StatusCode::NOT_FOUND, "NOT_FOUND", NOT_FOUND_MESSAGE, &[])
}

fn method_not_allowed(method: &Method, allowed: &str) -> Response {
    rest_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        &format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
        &[],
    )
}

/// Bodies must be declared JSON: `415 UNSUPPORTED_MEDIA_TYPE` otherwise, so a client that
/// forgets the header fails here as it would against an org that reads XML by default.
fn non_json_refusal(headers: &HeaderMap) -> Option<Response> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        None
    } else {
        Some(rest_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            &format!("Content type '{content_type}' not supported"),
            &[],
        ))
    }
}

/// 15 or 18 ASCII letters and digits, the shape of a Salesforce record id. (The checksum of an
/// 18-character id is not checked.)
pub fn is_salesforce_id(id: &str) -> bool {
    (id.len() == 15 || id.len() == 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A request body that is a JSON object of scalar field values, or the message of a
/// `JSON_PARSER_ERROR`. `skip` names keys that are not fields (a record's `attributes`).
fn json_fields(value: &Value, skip: &[&str]) -> Result<Map<String, Value>, String> {
    let object = value
        .as_object()
        .ok_or_else(|| "Cannot deserialize instance of Lead from a non-object value".to_string())?;
    let mut fields = Map::new();
    for (k, v) in object {
        if skip.contains(&k.as_str()) {
            continue;
        }
        if v.is_object() || v.is_array() {
            return Err(format!(
                "Cannot deserialize instance of {k} from a JSON {}: field values are scalars",
                if v.is_object() { "object" } else { "array" }
            ));
        }
        fields.insert(k.clone(), v.clone());
    }
    Ok(fields)
}

/// Why a record cannot be updated: `(errorCode, message, fields)`.
type Problem = (&'static str, String, Vec<String>);

/// Why a record cannot be updated; `None` when it can.
fn record_problem(inner: &mut Inner, id: &str) -> Option<Problem> {
    if !is_salesforce_id(id) {
        return Some((
            "MALFORMED_ID",
            format!("Lead ID: id value of incorrect type: {id}"),
            vec!["Id".to_string()],
        ));
    }
    if inner.cfg.deleted_leads.contains(id) {
        return Some((
            "ENTITY_IS_DELETED",
            "entity is deleted".to_string(),
            Vec::new(),
        ));
    }
    if let Some(known) = &inner.cfg.known_leads {
        if !known.contains(id) {
            return Some(("NOT_FOUND", NOT_FOUND_MESSAGE.to_string(), Vec::new()));
        }
    }
    if inner.cfg.faults.failing_leads.contains(id) {
        return Some((
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred. Please include this ErrorId if you contact support"
                .to_string(),
            Vec::new(),
        ));
    }
    let lock_rate = inner.cfg.faults.lock_rate;
    if inner.chance(lock_rate) {
        return Some((
            "UNABLE_TO_LOCK_ROW",
            "unable to obtain exclusive access to this record".to_string(),
            Vec::new(),
        ));
    }
    None
}

fn apply(inner: &mut Inner, id: &str, fields: Map<String, Value>) {
    inner
        .leads
        .entry(id.to_string())
        .or_default()
        .extend(fields);
    *inner.patches.entry(id.to_string()).or_insert(0) += 1;
}

/// `PATCH .../sobjects/Lead/{id}`: `204`, or one REST error. Unknown and deleted leads are
/// `404`, a failing lead's `UNKNOWN_EXCEPTION` `500`; the other record problems
/// (`MALFORMED_ID`, `UNABLE_TO_LOCK_ROW`) `400`.
fn patch_lead(inner: &mut Inner, id: &str, body: &[u8]) -> Response {
    if !is_salesforce_id(id) {
        let message = format!("Lead ID: id value of incorrect type: {id}");
        return rest_error(StatusCode::BAD_REQUEST, "MALFORMED_ID", &message, &["Id"]);
    }
    let parsed = serde_json::from_slice::<Value>(body)
        .map_err(|e| e.to_string())
        .and_then(|v| json_fields(&v, &[]));
    let fields = match parsed {
        Ok(fields) => fields,
        Err(message) => {
            return rest_error(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", &message, &[])
        }
    };
    if let Some((code, message, blamed)) = record_problem(inner, id) {
        let status = match code {
            "NOT_FOUND" | "ENTITY_IS_DELETED" => StatusCode::NOT_FOUND,
            "UNKNOWN_EXCEPTION" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let blamed: Vec<&str> = blamed.iter().map(String::as_str).collect();
        return rest_error(status, code, &message, &blamed);
    }
    apply(inner, id, fields);
    success(inner, None)
}

/// A successful update's answer: `204` for a lone lead, or `200` with the collection results,
/// as garbled by [`Faults::non_json_success`] and [`Faults::answer_padding`].
fn success(inner: &Inner, results: Option<Value>) -> Response {
    let faults = &inner.cfg.faults;
    if faults.non_json_success {
        let page = "<html><body><h1>OK</h1>Request processed.</body></html>";
        return (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            page,
        )
            .into_response();
    }
    let mut body = results.map(|r| r.to_string()).unwrap_or_default();
    if body.is_empty() && faults.answer_padding == 0 {
        return StatusCode::NO_CONTENT.into_response();
    }
    body.push_str(&" ".repeat(faults.answer_padding));
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `PATCH .../composite/sobjects`. Problems with the request as a whole (not JSON, no
/// `allOrNone`, over [`MAX_COLLECTION_RECORDS`] records, a record without `attributes.type` `Lead`, an id named
/// twice) fail the call with one REST error; problems of one record fail that record in its
/// result. `allOrNone: true` rolls back every record when one fails, as Salesforce does.
/// Stricter than Salesforce: `allOrNone` must be present (Salesforce defaults it to false), so
/// a client cannot rely on a default by accident.
fn patch_collection(inner: &mut Inner, body: &[u8]) -> Response {
    let bad = |code: &str, message: &str| rest_error(StatusCode::BAD_REQUEST, code, message, &[]);
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad("JSON_PARSER_ERROR", &e.to_string()),
    };
    let Some(request) = request.as_object() else {
        return bad("JSON_PARSER_ERROR", "the body must be a JSON object");
    };
    let all_or_none = match request.get("allOrNone") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad("JSON_PARSER_ERROR", "allOrNone must be true or false"),
        None => return bad("INVALID_FIELD", "allOrNone: required (true or false)"),
    };
    let Some(records) = request.get("records").and_then(Value::as_array) else {
        return bad("JSON_PARSER_ERROR", "records must be an array of sObjects");
    };
    if records.len() > MAX_COLLECTION_RECORDS {
        return bad(
            "EXCEEDED_ID_LIMIT",
            &format!(
                "record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS} records into this call"
            ),
        );
    }
    // Validate the call as a whole before touching any record.
    let mut parsed: Vec<(Option<String>, Map<String, Value>)> = Vec::with_capacity(records.len());
    let mut seen: HashSet<String> = HashSet::new();
    for (i, record) in records.iter().enumerate() {
        let kind = record
            .get("attributes")
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str);
        if kind != Some("Lead") {
            let message = match kind {
                Some(other) => format!("records[{i}]: sObject type '{other}' is not supported (the stand-in has Lead only)"),
                None => format!("records[{i}]: attributes.type is required"),
            };
            return bad("INVALID_TYPE", &message);
        }
        let fields = match json_fields(record, &["attributes"]) {
            Ok(f) => f,
            Err(message) => return bad("JSON_PARSER_ERROR", &format!("records[{i}]: {message}")),
        };
        let mut fields = fields;
        let id = fields
            .remove("id")
            .or_else(|| fields.remove("Id"))
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            });
        if let Some(id) = &id {
            if !seen.insert(id.clone()) {
                return bad("INVALID_FIELD", &format!("Duplicate id in list: {id}"));
            }
        }
        parsed.push((id, fields));
    }
    let mut results: Vec<Result<String, Problem>> = parsed
        .iter()
        .map(|(id, _)| match id {
            None => Err((
                "MISSING_ARGUMENT",
                "Id not specified in an update call".to_string(),
                vec!["Id".to_string()],
            )),
            Some(id) => match record_problem(inner, id) {
                Some(problem) => Err(problem),
                None => Ok(id.clone()),
            },
        })
        .collect();
    let rolled_back = all_or_none && results.iter().any(Result::is_err);
    if rolled_back {
        for r in &mut results {
            if r.is_ok() {
                *r = Err((
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header".to_string(),
                    Vec::new(),
                ));
            }
        }
    }
    let mut answer = Vec::with_capacity(results.len());
    for (result, (_, fields)) in results.into_iter().zip(parsed) {
        match result {
            Ok(id) => {
                apply(inner, &id, fields);
                answer.push(json!({ "id": id, "success": true, "errors": [] }));
            }
            Err((code, message, blamed)) => answer.push(json!({
                "success": false,
                "errors": [{ "statusCode": code, "message": message, "fields": blamed }],
            })),
        }
    }
    match inner.cfg.faults.collection_answer {
        CollectionAnswer::Exact => {}
        CollectionAnswer::Short => {
            answer.pop();
        }
        CollectionAnswer::Long => {
            answer.push(json!({ "id": STRAY_LEAD_ID, "success": true, "errors": [] }));
        }
        CollectionAnswer::Mismatched if answer.len() > 1 => answer.rotate_left(1),
        CollectionAnswer::Mismatched => {
            for result in &mut answer {
                result["id"] = json!(STRAY_LEAD_ID);
            }
        }
    }
    success(inner, Some(Value::Array(answer)))
}

/// `GET /standin/leads`: what the org holds now, for a person watching the demo.
fn leads_view(standin: &Standin) -> Response {
    let inner = standin.lock();
    let patches: BTreeMap<&String, &usize> = inner.patches.iter().collect();
    Json(json!({
        "leads": inner.leads,
        "patch_counts": patches,
        "api_calls": inner.api_calls,
        "api_limit": inner.limit(),
        "tokens_issued": inner.tokens_issued,
    }))
    .into_response()
}
