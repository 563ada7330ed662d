//! A local stand-in for Salesforce (`leadscore salesforce-standin`), for tests and the demo: the
//! three endpoints the handoff uses, with Salesforce's documented answers and error shapes, and
//! injectable faults (expiring tokens, outages, row locks, the daily API limit, latency, and
//! answers a broken proxy could give: short, long or mismatched collection results, non-JSON
//! successes, oversized bodies).
//!
//! It is strict where a lenient fake would hide client bugs: ids must look like Salesforce ids,
//! `PATCH` bodies must be JSON objects sent as `application/json`, collections must say
//! `allOrNone` and name each record's type and id. Where it is stricter than Salesforce, the
//! function's doc says so.
//!
//! Endpoints:
//! - `POST /services/oauth2/token`: OAuth 2.0 client credentials (form).
//! - `PATCH /services/data/{v}/sobjects/Lead/{id}`: one lead; `204`.
//! - `PATCH /services/data/{v}/composite/sobjects`: sObject Collections, up to 200 records;
//!   `200` with one result per record.
//! - `GET /standin/leads`: the patched leads as JSON, for humans.
//!
//! Every `/services/data` answer carries `Sforce-Limit-Info: api-usage=USED/LIMIT`.

use crate::config::Secret;
use crate::runtime::shutdown::Shutdown;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The API allowance reported in `Sforce-Limit-Info` when no daily limit is injected (an
/// Enterprise org's base allowance).
pub const DEFAULT_API_LIMIT: u64 = 100_000;

/// Records an sObject Collections call may carry.
pub const MAX_RECORDS: usize = 200;

/// Requests kept for [`Standin::requests`]; older ones are dropped so a long demo does not grow
/// without bound.
pub const MAX_RECORDED_REQUESTS: usize = 10_000;

/// Injected failures. All off by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// A token is good for this many API calls; the next answers `401 INVALID_SESSION_ID`, as a
    /// session that timed out or was revoked does.
    pub token_ttl_calls: Option<u32>,
    /// The share of API calls answered `503 SERVER_UNAVAILABLE` (0 to 1).
    pub unavailable_rate: f64,
    /// The share of records (a lone lead or each record of a collection) failing with
    /// `UNABLE_TO_LOCK_ROW` (0 to 1).
    pub lock_rate: f64,
    /// After this many API calls, every call answers `403 REQUEST_LIMIT_EXCEEDED` until
    /// [`Standin::reset_limit`]; also the limit shown in `Sforce-Limit-Info`.
    pub daily_limit: Option<u64>,
    /// Added before every answer.
    pub latency: Duration,
    /// Seeds the draws of the rates, so a faulty run can be repeated.
    pub seed: u64,
    /// How sObject Collections answers are garbled, after the records were applied (a broken
    /// proxy or a buggy org): a client must not take such an answer's word for any record.
    pub collection_answer: CollectionAnswer,
    /// Successful updates answer `200` with an HTML page instead of `204` or the JSON
    /// results, after the records were applied (a proxy rewriting answers).
    pub non_json_success: bool,
    /// Successful updates answer with this many bytes of whitespace after their JSON (still
    /// valid JSON, a `200` for a lone lead), to test a client's cap on answers.
    pub answer_padding: usize,
}

/// Garbled sObject Collections answers ([`Faults::collection_answer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CollectionAnswer {
    /// One result per record, in request order, as Salesforce answers.
    #[default]
    Exact,
    /// The last result is missing.
    Short,
    /// An extra success result for a record nobody sent is added at the end.
    Long,
    /// Each result is moved one place up (the first goes last), so every result sits at
    /// another record's position; a lone result names another id.
    Mismatched,
}

/// The id of the extra result of [`CollectionAnswer::Long`] and of a lone
/// [`CollectionAnswer::Mismatched`] result: a well-formed Lead id no test sends.
pub const STRAY_LEAD_ID: &str = "00Q999999999999ZZZ";

/// The org the stand-in pretends to be.
#[derive(Clone, Debug)]
pub struct StandinConfig {
    /// The connected app's consumer key the token endpoint accepts.
    pub client_id: String,
    /// The consumer secret the token endpoint accepts; never logged or recorded.
    pub client_secret: Secret,
    /// The one API version served (`v60.0`); others are `404 NOT_FOUND`, as a version the org
    /// does not have would be.
    pub api_version: String,
    /// The leads that exist; `None`: every well-formed id exists, so tests and the demo need no
    /// fixtures.
    pub known_leads: Option<HashSet<String>>,
    /// Leads that were deleted: `ENTITY_IS_DELETED`.
    pub deleted_leads: HashSet<String>,
    pub faults: Faults,
}

impl Default for StandinConfig {
    fn default() -> Self {
        StandinConfig {
            client_id: "leadscore-dev".to_string(),
            client_secret: Secret::new("dev-secret"),
            api_version: "v60.0".to_string(),
            known_leads: None,
            deleted_leads: HashSet::new(),
            faults: Faults::default(),
        }
    }
}

/// One request as received, for tests to check what a client sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: Option<String>,
    /// In arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as text; a token request's `client_secret` value is replaced with `***`.
    pub body: String,
}

impl RecordedRequest {
    /// The first value of a header (`name` in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A handle on a running stand-in: what it saw and did, and its faults. Clones share it.
#[derive(Clone)]
pub struct Standin {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
}

struct Inner {
    cfg: StandinConfig,
    rng: u64,
    /// Issued token to the API calls made with it.
    tokens: HashMap<String, u32>,
    tokens_issued: u32,
    /// API calls accepted (the usage of `Sforce-Limit-Info`).
    api_calls: u64,
    leads: BTreeMap<String, Map<String, Value>>,
    patches: HashMap<String, usize>,
    requests: VecDeque<RecordedRequest>,
}

impl Inner {
    /// The next draw in [0, 1), from splitmix64: deterministic per seed, no dependency.
    fn draw(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.draw() < rate
    }

    fn limit(&self) -> u64 {
        self.cfg.faults.daily_limit.unwrap_or(DEFAULT_API_LIMIT)
    }
}

impl Standin {
    fn new(cfg: StandinConfig, addr: SocketAddr) -> Standin {
        let rng = cfg.faults.seed;
        Standin {
            inner: Arc::new(Mutex::new(Inner {
                cfg,
                rng,
                tokens: HashMap::new(),
                tokens_issued: 0,
                api_calls: 0,
                leads: BTreeMap::new(),
                patches: HashMap::new(),
                requests: VecDeque::new(),
            })),
            addr,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `http://ADDR`, the `salesforce.instance_url` of a client.
    pub fn instance_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current fields of every lead patched so far.
    pub fn leads(&self) -> BTreeMap<String, Map<String, Value>> {
        self.lock().leads.clone()
    }

    /// Successful updates of a lead, by either endpoint.
    pub fn patch_count(&self, lead_id: &str) -> usize {
        self.lock().patches.get(lead_id).copied().unwrap_or(0)
    }

    /// Requests received (the last [`MAX_RECORDED_REQUESTS`]), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    pub fn tokens_issued(&self) -> u32 {
        self.lock().tokens_issued
    }

    /// API calls counted against the limit (token requests and refused calls are not).
    pub fn api_calls(&self) -> u64 {
        self.lock().api_calls
    }

    /// A new 24-hour window: the usage goes back to 0.
    pub fn reset_limit(&self) {
        self.lock().api_calls = 0;
    }

    /// Replaces the faults; the draws restart from the new seed.
    pub fn set_faults(&self, faults: Faults) {
        let mut inner = self.lock();
        inner.rng = faults.seed;
        inner.cfg.faults = faults;
    }
}

/// Binds `listen` (port 0 picks a free port) and serves until `shutdown`.
pub async fn serve(
    listen: &str,
    cfg: StandinConfig,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, Standin)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let standin = Standin::new(cfg, addr);
    let app = Router::new().fallback(handle).with_state(standin.clone());
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "Salesforce stand-in failed");
        }
    });
    tracing::info!(%addr, "Salesforce stand-in listening");
    Ok((addr, standin))
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

/// Every request: recorded, delayed by the latency fault, then routed by hand so that unknown
/// paths and methods get Salesforce's error shapes rather than the framework's.
async fn handle(
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

const NOT_FOUND_MESSAGE: &str = "The requested resource does not exist";

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
fn redact_form_secret(form: &str) -> String {
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
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
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
/// `404`; the other record problems (`MALFORMED_ID`, `UNABLE_TO_LOCK_ROW`) `400`.
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
/// `allOrNone`, over 200 records, a record without `attributes.type` `Lead`, an id named
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
    if records.len() > MAX_RECORDS {
        return bad(
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::CONTENT_TYPE;

    const SECRET: &str = "p@ss w0rd&=+";

    fn lead(n: u32) -> String {
        format!("00Q{n:012}AAA")
    }

    fn config() -> StandinConfig {
        StandinConfig {
            client_id: "test-app".to_string(),
            client_secret: Secret::new(SECRET),
            ..StandinConfig::default()
        }
    }

    /// A running stand-in and a plain HTTP client; dropping it stops the stand-in.
    struct Running {
        standin: Standin,
        http: reqwest::Client,
        base: String,
        shutdown: Shutdown,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.trigger();
        }
    }

    async fn start(cfg: StandinConfig) -> Running {
        let shutdown = Shutdown::new();
        let (addr, standin) = serve("127.0.0.1:0", cfg, shutdown.clone())
            .await
            .expect("the stand-in starts");
        assert_eq!(standin.instance_url(), format!("http://{addr}"));
        Running {
            base: standin.instance_url(),
            standin,
            http: reqwest::Client::new(),
            shutdown,
        }
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
            let url = format!("{}/services/oauth2/token", self.base);
            answer(self.http.post(url).form(form).send().await.expect("sent")).await
        }

        async fn token(&self) -> String {
            let a = self
                .token_with(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "test-app"),
                    ("client_secret", SECRET),
                ])
                .await;
            assert_eq!(a.status, 200, "{}", a.body);
            a.body["access_token"]
                .as_str()
                .expect("an access token")
                .to_string()
        }

        async fn send(
            &self,
            method: reqwest::Method,
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
            self.send(
                reqwest::Method::PATCH,
                &path,
                Some(token),
                "application/json",
                body,
            )
            .await
        }

        async fn patch_collection(&self, token: &str, body: &Value) -> Answer {
            self.send(
                reqwest::Method::PATCH,
                "/services/data/v60.0/composite/sobjects",
                Some(token),
                "application/json",
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
        let a = s
            .token_with(&[
                ("grant_type", "client_credentials"),
                ("client_id", "test-app"),
                ("client_secret", SECRET),
            ])
            .await;
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
            .send(
                reqwest::Method::GET,
                "/services/oauth2/token",
                None,
                "text/plain",
                "",
            )
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
            let a = s
                .send(
                    reqwest::Method::PATCH,
                    &path,
                    token,
                    "application/json",
                    "{}",
                )
                .await;
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
            .send(
                reqwest::Method::PATCH,
                &path,
                Some(&token),
                "text/plain",
                "{}",
            )
            .await;
        assert_rest_error(&plain, 415, "UNSUPPORTED_MEDIA_TYPE");
        let get = s
            .send(
                reqwest::Method::GET,
                &path,
                Some(&token),
                "application/json",
                "",
            )
            .await;
        assert_rest_error(&get, 405, "METHOD_NOT_ALLOWED");
        for other in [
            format!("/services/data/v59.0/sobjects/Lead/{}", lead(1)),
            format!("/services/data/v60.0/sobjects/Account/{}", lead(1)),
            "/services/data/v60.0/query".to_string(),
        ] {
            let a = s
                .send(
                    reqwest::Method::PATCH,
                    &other,
                    Some(&token),
                    "application/json",
                    "{}",
                )
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
                reqwest::Method::PATCH,
                "/services/data/v60.0/composite/sobjects",
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
        let s = start(StandinConfig {
            faults: Faults {
                token_ttl_calls: Some(2),
                ..Faults::default()
            },
            ..config()
        })
        .await;
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
        let s = start(StandinConfig {
            faults: Faults {
                daily_limit: Some(2),
                ..Faults::default()
            },
            ..config()
        })
        .await;
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
        let s = start(StandinConfig {
            faults: Faults {
                unavailable_rate: 1.0,
                ..Faults::default()
            },
            ..config()
        })
        .await;
        let token = s.token().await;
        let down = s.patch_lead(&token, &lead(1), "{}").await;
        assert_rest_error(&down, 503, "SERVER_UNAVAILABLE");
        assert_eq!(s.standin.api_calls(), 0, "refused calls are not counted");

        s.standin.set_faults(Faults {
            lock_rate: 1.0,
            ..Faults::default()
        });
        assert_rest_error(
            &s.patch_lead(&token, &lead(1), "{}").await,
            400,
            "UNABLE_TO_LOCK_ROW",
        );

        let records: Vec<Value> = (0..200).map(|n| record(&lead(n))).collect();
        let body = json!({ "allOrNone": false, "records": records });
        let mut runs = Vec::new();
        for _ in 0..2 {
            s.standin.set_faults(Faults {
                lock_rate: 0.5,
                seed: 7,
                ..Faults::default()
            });
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
            s.standin.set_faults(Faults {
                collection_answer: fault,
                ..Faults::default()
            });
            let a = s.patch_collection(&token, &body).await;
            assert_eq!(a.status, 200, "{fault:?}");
            assert_eq!(ids(&a), want, "{fault:?}");
        }
        assert_eq!(s.standin.patch_count(&lead(2)), 3, "applied every time");

        // A lone lead's raw answer, status and text.
        let raw = |faults: Faults| {
            s.standin.set_faults(faults);
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
        let (status, padded) = raw(Faults {
            answer_padding: 1000,
            ..Faults::default()
        })
        .await;
        assert_eq!((status, padded.len()), (200, 1000));
        assert!(padded.trim().is_empty());
        let (status, html) = raw(Faults {
            non_json_success: true,
            ..Faults::default()
        })
        .await;
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
            .send(reqwest::Method::GET, "/nowhere", None, "text/plain", "")
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
}
