//! The Salesforce REST client of the handoff (SPEC section 6): the OAuth 2.0 client credentials
//! token, lead updates one at a time or as one sObject Collections call, and what each answer
//! means for a retry.
//!
//! The client makes one call per [`SalesforceClient::update_leads`] and reports what happened to
//! each lead ([`LeadOutcome`]) with a [`RetryHint`]; deciding when to retry, pause or dead-letter
//! is the handoff's job, so the policy lives in one place ([`classify`], [`Backoff`]). The only
//! retry done here is the one replay after `401 INVALID_SESSION_ID` with a fresh token, because a
//! session expiring is the normal life of a cached token, not a failure of the lead.
//!
//! The client secret and the access token are [`Secret`]s: no `Debug`, `Display`, error or log
//! line of this module contains them.

use crate::config::{HandoffSettings, SalesforceSettings, Secret};
use crate::ops::telemetry::{
    SALESFORCE_API_LIMIT, SALESFORCE_API_USAGE, SALESFORCE_AUTH_FAILURES, SALESFORCE_REQUESTS,
    SALESFORCE_TOKEN_REFRESHES,
};
use metrics::{counter, gauge};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Duration;

/// Records per sObject Collections call: Salesforce rejects more with `EXCEEDED_ID_LIMIT`.
pub const MAX_COLLECTION_RECORDS: usize = 200;

/// The `errorCode` of an answer that is not the documented shape.
pub const UNEXPECTED_RESPONSE: &str = "UNEXPECTED_RESPONSE";
/// The `errorCode` of a request that timed out (no answer, so no Salesforce code).
pub const TIMEOUT: &str = "TIMEOUT";
/// The `errorCode` of a request that got no answer for another reason (refused, reset, DNS).
pub const CONNECTION_ERROR: &str = "CONNECTION_ERROR";
/// The `errorCode` of an answer whose body is over its cap ([`MAX_ANSWER_BYTES_PER_LEAD`],
/// [`MAX_ANSWER_BYTES_PER_CALL`]); retried, since no sane Salesforce answer is that large.
pub const RESPONSE_TOO_LARGE: &str = "RESPONSE_TOO_LARGE";

/// The largest answer read per lead of a call (and for a token request): a real answer is a few
/// hundred bytes per record, so this only stops a broken proxy or a hostile server from
/// filling the memory. Bodies are read piece by piece and the read stops at the cap.
pub const MAX_ANSWER_BYTES_PER_LEAD: usize = 1024 * 1024;
/// The largest answer read for one call, however many leads it carries.
pub const MAX_ANSWER_BYTES_PER_CALL: usize = 16 * 1024 * 1024;

/// Longest excerpt of an unexpected body kept in an error: enough to recognise a proxy's error
/// page, short enough for a Kafka record and a log line.
const BODY_EXCERPT_CHARS: usize = 300;

// ---------------------------------------------------------------------------------------------
// Outcomes and their classification
// ---------------------------------------------------------------------------------------------

/// What the handoff should do with a lead whose update failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryHint {
    /// A transient failure: try again after a [`Backoff`] delay.
    Retry,
    /// The org refuses every call for now (`403 REQUEST_LIMIT_EXCEEDED`): pause all calls and
    /// keep the leads, since retrying would only spend a limit that is exhausted, and no lead
    /// is at fault.
    PauseForLimit,
    /// The org refuses the credentials (a token request refused, or a session refused even
    /// after a fresh token): pause all calls and keep the leads, since no lead is at fault;
    /// an operator must fix the client id or secret.
    AuthFailure,
    /// Salesforce rejected this lead's update for good (`NOT_FOUND`, `MALFORMED_ID`, validation,
    /// ...): the lead goes to the dead-letter topic with the answer.
    Permanent,
}

impl RetryHint {
    /// The name used in logs and output records.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryHint::Retry => "retry",
            RetryHint::PauseForLimit => "pause_for_limit",
            RetryHint::AuthFailure => "auth_failure",
            RetryHint::Permanent => "permanent",
        }
    }
}

/// What to do after an answer with this HTTP status (`None`: no answer: timeout or connection
/// error) and Salesforce `errorCode` (or `statusCode` of a collection record).
///
/// - [`RetryHint::Retry`]: no answer, `408`, `429`, `5xx`, and `UNABLE_TO_LOCK_ROW` whatever the
///   status (another transaction holds the row; it comes with `400` alone or `200` in a
///   collection).
/// - [`RetryHint::PauseForLimit`]: `REQUEST_LIMIT_EXCEEDED` (Salesforce sends it with `403`;
///   the code decides, so a collection record carrying it pauses too).
/// - [`RetryHint::AuthFailure`]: `401`: a session refused even after the one
///   refresh-and-replay means the org refuses these credentials, which no lead is to blame
///   for, so the leads are kept rather than dead-lettered.
/// - [`RetryHint::Permanent`]: every other answer (`NOT_FOUND`, `MALFORMED_ID`,
///   `ENTITY_IS_DELETED`, `FIELD_CUSTOM_VALIDATION_EXCEPTION`, `INVALID_FIELD`, ...).
pub fn classify(http_status: Option<u16>, error_code: &str) -> RetryHint {
    if error_code == "UNABLE_TO_LOCK_ROW" {
        return RetryHint::Retry;
    }
    if error_code == "REQUEST_LIMIT_EXCEEDED" {
        return RetryHint::PauseForLimit;
    }
    match http_status {
        None | Some(408) | Some(429) | Some(500..=599) => RetryHint::Retry,
        Some(401) => RetryHint::AuthFailure,
        Some(_) => RetryHint::Permanent,
    }
}

/// One failed update (or token request), as Salesforce explained it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error_code}: {message}{}", fields_suffix(.fields))]
pub struct SfError {
    /// Salesforce's `errorCode` (`statusCode` in a collection record), the OAuth `error` of a
    /// token failure, or one of [`UNEXPECTED_RESPONSE`], [`TIMEOUT`], [`CONNECTION_ERROR`].
    pub error_code: String,
    pub message: String,
    /// The fields Salesforce blames (validation errors name them).
    pub fields: Vec<String>,
    pub hint: RetryHint,
}

fn fields_suffix(fields: &[String]) -> String {
    if fields.is_empty() {
        String::new()
    } else {
        format!(" (fields: {})", fields.join(", "))
    }
}

impl SfError {
    /// An error whose hint follows [`classify`].
    pub fn classified(
        http_status: Option<u16>,
        error_code: impl Into<String>,
        message: impl Into<String>,
        fields: Vec<String>,
    ) -> SfError {
        let error_code = error_code.into();
        SfError {
            hint: classify(http_status, &error_code),
            error_code,
            message: message.into(),
            fields,
        }
    }

    /// A 2xx answer Salesforce would not send (not JSON, results that do not match the
    /// records): the update may or may not have happened, so it is retried (PATCH is
    /// idempotent) and never taken as an outcome.
    fn unexpected_transient(status: u16, what: &str, body: &str) -> SfError {
        SfError {
            hint: RetryHint::Retry,
            ..SfError::unexpected(status, what, body)
        }
    }

    /// An answer that is not the documented shape; `what` says what was wrong with it.
    fn unexpected(status: u16, what: &str, body: &str) -> SfError {
        SfError::classified(
            Some(status),
            UNEXPECTED_RESPONSE,
            format!("HTTP {status}: {what}; body: {}", excerpt(body)),
            Vec::new(),
        )
    }
}

/// What happened to one lead of an [`SalesforceClient::update_leads`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeadOutcome {
    /// The HTTP status of the answer that decided this lead: the call's (`200` for a record of a
    /// collection, whatever its own result), or the token request's when no token could be
    /// had; `None` when no answer came back.
    pub http_status: Option<u16>,
    pub result: Result<(), SfError>,
}

/// One lead's update: its Salesforce id and the fields to set.
#[derive(Clone, Debug, PartialEq)]
pub struct LeadUpdate {
    pub lead_id: String,
    pub body: Map<String, Value>,
}

/// The result of one [`SalesforceClient::update_leads`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallReport {
    /// One per input lead, in input order.
    pub outcomes: Vec<LeadOutcome>,
    /// HTTP requests made, token requests and the replay included: Salesforce meters them.
    pub api_calls: u32,
    /// A `401 INVALID_SESSION_ID` made this call fetch a new token.
    pub token_refreshed: bool,
    /// `(used, allowed)` API calls in the org's 24-hour window, from the last answer's
    /// `Sforce-Limit-Info`, so the handoff can slow down before the limit hits.
    pub limit_info: Option<(u64, u64)>,
}

/// Why a [`SalesforceClient`] could not be made or could not get a token.
#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    #[error("salesforce.{key}: {message}")]
    Settings { key: &'static str, message: String },
    #[error("cannot build the HTTP client for Salesforce: {0}")]
    HttpClient(String),
    /// The token request failed; `status` is its HTTP status, `None` when no answer came.
    #[error("Salesforce token request failed{}: {error}", status_suffix(*.status))]
    Token { status: Option<u16>, error: SfError },
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------------------------

/// Exponential backoff with jitter for [`RetryHint::Retry`] failures. Jitter keeps many
/// instances that failed together (an org outage) from retrying together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The cap, so a long outage is still probed regularly.
    pub max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max }
    }

    /// `handoff.backoff_initial` and `handoff.backoff_max`.
    pub fn from_settings(settings: &HandoffSettings) -> Backoff {
        Backoff::new(settings.backoff_initial, settings.backoff_max)
    }

    /// The delay before retry number `attempt` (1 for the first retry; 0 counts as 1):
    /// `initial * 2^(attempt-1)` capped at `max`, then drawn from `[delay/2, delay]` by `jitter`
    /// (any `u64`, e.g. from [`jitter`]). Taking the randomness as an argument makes the delay a
    /// pure function, testable without a clock or a seeded generator; keeping the lower half
    /// keeps the growth visible while still spreading retries.
    pub fn delay(&self, attempt: u32, jitter: u64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(127);
        let grown = self.initial.as_nanos().saturating_mul(1u128 << doublings);
        let capped = grown.min(self.max.as_nanos());
        let low = capped / 2;
        let span = capped - low;
        let nanos = low + u128::from(jitter) % (span + 1);
        duration_from_nanos(nanos)
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 1e9, so it fits.
    let sub = u32::try_from(nanos % PER_SEC).unwrap_or(0);
    Duration::new(secs, sub)
}

/// A random `u64` for [`Backoff::delay`], from the standard library's per-process random hash
/// keys (no extra dependency for a value that only has to differ between instances and calls).
pub fn jitter() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Which endpoint a request went to: the `endpoint` label of [`SALESFORCE_REQUESTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Token,
    Sobject,
    Collection,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Sobject => "sobject",
            Endpoint::Collection => "collection",
        }
    }
}

/// An answer read in full.
struct Reply {
    status: u16,
    body: String,
}

/// A failure that applies to every lead of a call, with the status that caused it.
struct CallFailure {
    status: Option<u16>,
    error: SfError,
}

/// The Salesforce REST client: one per handoff instance, shared by reference (`&self`
/// everywhere, the token behind a lock).
pub struct SalesforceClient {
    http: reqwest::Client,
    /// Without a trailing `/`.
    instance_url: String,
    api_version: String,
    client_id: String,
    secret: Secret,
    /// The cached access token; `None` before the first one and after one was refused.
    token: Mutex<Option<Secret>>,
}

impl fmt::Debug for SalesforceClient {
    /// Shows the settings, never the secret or the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("instance_url", &self.instance_url)
            .field("api_version", &self.api_version)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.secret)
            .field("has_token", &self.has_token())
            .finish()
    }
}

impl SalesforceClient {
    /// A client for the org in `settings`, with `settings.timeout` per request. Redirects are
    /// not followed: the API does not redirect, and a `PATCH` silently turned into a `GET` by
    /// a proxy would look like a success.
    pub fn new(
        settings: &SalesforceSettings,
        secret: Secret,
    ) -> Result<SalesforceClient, SalesforceError> {
        let instance_url = settings
            .instance_url
            .trim()
            .trim_end_matches('/')
            .to_string();
        if !(instance_url.starts_with("https://") || instance_url.starts_with("http://")) {
            return Err(SalesforceError::Settings {
                key: "instance_url",
                message: format!("{instance_url:?} is not an http(s) URL"),
            });
        }
        let api_version = settings.api_version.trim().to_string();
        if api_version.is_empty() || api_version.contains('/') {
            return Err(SalesforceError::Settings {
                key: "api_version",
                message: format!("{api_version:?} is not an API version such as \"v60.0\""),
            });
        }
        if settings.client_id.trim().is_empty() {
            return Err(SalesforceError::Settings {
                key: "client_id",
                message: "is empty; set it to the connected app's consumer key".to_string(),
            });
        }
        if secret.expose().is_empty() {
            return Err(SalesforceError::Settings {
                key: "client_secret_env",
                message: "the client secret is empty".to_string(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leadscore/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SalesforceError::HttpClient(error_chain(&e)))?;
        Ok(SalesforceClient {
            http,
            instance_url,
            api_version,
            client_id: settings.client_id.trim().to_string(),
            secret,
            token: Mutex::new(None),
        })
    }

    /// Gets and caches an access token unless one is cached. The handoff calls it at startup
    /// so bad credentials show before any lead is consumed, and readiness can wait for it.
    pub async fn ensure_token(&self) -> Result<(), SalesforceError> {
        if self.has_token() {
            return Ok(());
        }
        let mut scratch = CallReport::default();
        match self.fetch_token(&mut scratch).await {
            Ok(_) => Ok(()),
            Err(f) => Err(SalesforceError::Token {
                status: f.status,
                error: f.error,
            }),
        }
    }

    /// A token is cached (the last one was not refused).
    pub fn has_token(&self) -> bool {
        self.cached_token().is_some()
    }

    /// Updates the leads, one outcome per lead in input order. One lead is a `PATCH` of its
    /// sObject row; several go in one sObject Collections call with `allOrNone: false`, so one
    /// bad lead does not fail the others. More than [`MAX_COLLECTION_RECORDS`] take one call
    /// per 200. A lead id given twice is sent once (its bodies merged, the later value
    /// winning) and both get its outcome: Salesforce rejects a whole call that names an id
    /// twice.
    pub async fn update_leads(&self, leads: &[LeadUpdate]) -> CallReport {
        let mut report = CallReport::default();
        // Merge duplicates: unique[i] is sent, slot[j] says which unique entry lead j is.
        let mut unique: Vec<LeadUpdate> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut slot = Vec::with_capacity(leads.len());
        for lead in leads {
            match index.get(lead.lead_id.as_str()) {
                Some(&i) => {
                    for (k, v) in &lead.body {
                        unique[i].body.insert(k.clone(), v.clone());
                    }
                    slot.push(i);
                }
                None => {
                    index.insert(lead.lead_id.as_str(), unique.len());
                    slot.push(unique.len());
                    unique.push(lead.clone());
                }
            }
        }
        let mut outcomes = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(MAX_COLLECTION_RECORDS) {
            outcomes.extend(self.update_chunk(chunk, &mut report).await);
        }
        report.outcomes = slot.into_iter().map(|i| outcomes[i].clone()).collect();
        report
    }

    /// One API call (plus the token request and replay it may need) for up to 200 distinct
    /// leads.
    async fn update_chunk(
        &self,
        chunk: &[LeadUpdate],
        report: &mut CallReport,
    ) -> Vec<LeadOutcome> {
        let (endpoint, url, body) = match chunk {
            [] => return Vec::new(),
            [lead] => (
                Endpoint::Sobject,
                format!(
                    "{}/services/data/{}/sobjects/Lead/{}",
                    self.instance_url,
                    self.api_version,
                    encode_path_segment(&lead.lead_id)
                ),
                Value::Object(lead.body.clone()),
            ),
            several => (
                Endpoint::Collection,
                format!(
                    "{}/services/data/{}/composite/sobjects",
                    self.instance_url, self.api_version
                ),
                collection_body(several),
            ),
        };
        let body = body.to_string();
        let token = match self.cached_token() {
            Some(t) => t,
            None => match self.fetch_token(report).await {
                Ok(t) => t,
                Err(f) => return every(chunk.len(), f),
            },
        };
        let limit = answer_limit(chunk.len());
        let mut answer = self
            .send_data(endpoint, &url, &body, &token, limit, report)
            .await;
        if matches!(&answer, Ok(reply) if is_invalid_session(reply)) {
            tracing::info!(
                endpoint = endpoint.label(),
                "Salesforce session expired or invalid; fetching a new token and replaying once"
            );
            match self.refresh_token(&token, report).await {
                Ok(fresh) => {
                    answer = self
                        .send_data(endpoint, &url, &body, &fresh, limit, report)
                        .await
                }
                Err(f) => return every(chunk.len(), f),
            }
        }
        let reply = match answer {
            Ok(reply) => reply,
            Err(f) => return every(chunk.len(), f),
        };
        if reply.status == 401 {
            counter!(SALESFORCE_AUTH_FAILURES, "cause" => "session_refused").increment(1);
            tracing::error!(
                endpoint = endpoint.label(),
                error = %rest_error(&reply),
                "Salesforce authentication failure: a session was refused even with a fresh token"
            );
        }
        let outcomes = match endpoint {
            Endpoint::Collection => {
                let ids: Vec<&str> = chunk.iter().map(|l| l.lead_id.as_str()).collect();
                collection_outcomes(&reply, &ids)
            }
            _ => vec![sobject_outcome(&reply)],
        };
        for (lead, outcome) in chunk.iter().zip(&outcomes) {
            if let Err(e) = &outcome.result {
                tracing::debug!(lead_id = %lead.lead_id, status = ?outcome.http_status, error_code = %e.error_code, hint = e.hint.as_str(), "Salesforce rejected a lead update");
            }
        }
        outcomes
    }

    /// A `PATCH` with the bearer token.
    async fn send_data(
        &self,
        endpoint: Endpoint,
        url: &str,
        body: &str,
        token: &Secret,
        limit: usize,
        report: &mut CallReport,
    ) -> Result<Reply, CallFailure> {
        let request = self
            .http
            .patch(url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_string());
        self.send(endpoint, request, limit, report).await
    }

    /// Sends a request and reads the answer, at most `max_body` bytes of it, counting it
    /// (report and metrics) and recording `Sforce-Limit-Info`. A longer body is a
    /// [`RESPONSE_TOO_LARGE`] failure, found without reading more than `max_body` + one piece.
    async fn send(
        &self,
        endpoint: Endpoint,
        request: reqwest::RequestBuilder,
        max_body: usize,
        report: &mut CallReport,
    ) -> Result<Reply, CallFailure> {
        report.api_calls += 1;
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let limit = response
                    .headers()
                    .get("sforce-limit-info")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_limit_info);
                read_capped(response, max_body)
                    .await
                    .map(|body| (status, limit, body))
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok((status, limit, body)) => {
                counter!(SALESFORCE_REQUESTS, "endpoint" => endpoint.label(), "status_class" => status_class(status)).increment(1);
                if let Some((used, max)) = limit {
                    report.limit_info = Some((used, max));
                    gauge!(SALESFORCE_API_USAGE).set(used as f64);
                    gauge!(SALESFORCE_API_LIMIT).set(max as f64);
                }
                tracing::debug!(endpoint = endpoint.label(), status, "Salesforce answered");
                match body {
                    Some(body) => Ok(Reply { status, body }),
                    None => {
                        let error = SfError {
                            error_code: RESPONSE_TOO_LARGE.to_string(),
                            message: format!(
                                "HTTP {status}: the answer is over {max_body} bytes; not read"
                            ),
                            fields: Vec::new(),
                            hint: RetryHint::Retry,
                        };
                        tracing::warn!(endpoint = endpoint.label(), status, error = %error, "Salesforce answer too large");
                        Err(CallFailure {
                            status: Some(status),
                            error,
                        })
                    }
                }
            }
            Err(e) => {
                counter!(SALESFORCE_REQUESTS, "endpoint" => endpoint.label(), "status_class" => "error")
                    .increment(1);
                let code = if e.is_timeout() {
                    TIMEOUT
                } else {
                    CONNECTION_ERROR
                };
                let error = SfError::classified(None, code, error_chain(&e), Vec::new());
                tracing::warn!(endpoint = endpoint.label(), error = %error, "no answer from Salesforce");
                Err(CallFailure {
                    status: None,
                    error,
                })
            }
        }
    }

    fn cached_token(&self) -> Option<Secret> {
        match self.token.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_token(&self, token: Option<Secret>) {
        match self.token.lock() {
            Ok(mut g) => *g = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }

    /// Replaces `stale`, which Salesforce refused. When another task already replaced it, that
    /// newer token is used instead of fetching yet another.
    async fn refresh_token(
        &self,
        stale: &Secret,
        report: &mut CallReport,
    ) -> Result<Secret, CallFailure> {
        {
            let mut cached = match self.token.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            match cached.as_ref() {
                Some(current) if current != stale => return Ok(current.clone()),
                _ => *cached = None,
            }
        }
        counter!(SALESFORCE_TOKEN_REFRESHES).increment(1);
        report.token_refreshed = true;
        self.fetch_token(report).await
    }

    /// OAuth 2.0 client credentials: `POST /services/oauth2/token` with a form. Caches and
    /// returns the token. A failure is never [`RetryHint::Permanent`]: no lead is at fault when
    /// the org will not issue a token, so the leads must be kept.
    async fn fetch_token(&self, report: &mut CallReport) -> Result<Secret, CallFailure> {
        let url = format!("{}/services/oauth2/token", self.instance_url);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose()),
        ];
        let request = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        let reply = match self
            .send(Endpoint::Token, request, MAX_ANSWER_BYTES_PER_LEAD, report)
            .await
        {
            Ok(reply) => reply,
            Err(f) => return Err(f),
        };
        match token_from_reply(&reply) {
            Ok(token) => {
                self.set_token(Some(token.clone()));
                tracing::info!("Salesforce access token obtained");
                Ok(token)
            }
            Err(error) => {
                if error.hint == RetryHint::AuthFailure {
                    counter!(SALESFORCE_AUTH_FAILURES, "cause" => "token_refused").increment(1);
                    tracing::error!(status = reply.status, error = %error, "Salesforce authentication failure: the token request was refused");
                } else {
                    tracing::warn!(status = reply.status, error = %error, "Salesforce gave no token");
                }
                Err(CallFailure {
                    status: Some(reply.status),
                    error,
                })
            }
        }
    }
}

/// The same failure for each of `n` leads.
fn every(n: usize, failure: CallFailure) -> Vec<LeadOutcome> {
    (0..n)
        .map(|_| LeadOutcome {
            http_status: failure.status,
            result: Err(failure.error.clone()),
        })
        .collect()
}

/// The sObject Collections body: `allOrNone: false` so each record succeeds or fails alone.
fn collection_body(leads: &[LeadUpdate]) -> Value {
    let records: Vec<Value> = leads
        .iter()
        .map(|lead| {
            let mut record = lead.body.clone();
            record.insert(
                "attributes".to_string(),
                serde_json::json!({ "type": "Lead" }),
            );
            record.insert("id".to_string(), Value::String(lead.lead_id.clone()));
            Value::Object(record)
        })
        .collect();
    serde_json::json!({ "allOrNone": false, "records": records })
}

/// Percent-encodes anything but unreserved characters, so an odd lead id cannot change the
/// request path (Salesforce then answers `MALFORMED_ID`, which is the truth).
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The documented REST error body: `[{"message", "errorCode", "fields"}]`.
#[derive(Deserialize)]
struct RestError {
    message: String,
    #[serde(rename = "errorCode")]
    error_code: String,
    #[serde(default)]
    fields: Vec<String>,
}

/// One result of an sObject Collections call.
#[derive(Deserialize)]
struct RecordResult {
    /// The record's id; Salesforce sends it with every success.
    #[serde(default)]
    id: Option<String>,
    success: bool,
    #[serde(default)]
    errors: Vec<RecordError>,
}

/// A collection record's error: `statusCode` where REST errors say `errorCode` (both accepted).
#[derive(Deserialize)]
struct RecordError {
    #[serde(rename = "statusCode", alias = "errorCode")]
    status_code: String,
    message: String,
    #[serde(default)]
    fields: Vec<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

fn is_invalid_session(reply: &Reply) -> bool {
    reply.status == 401
        && serde_json::from_str::<Vec<RestError>>(&reply.body)
            .is_ok_and(|errors| errors.iter().any(|e| e.error_code == "INVALID_SESSION_ID"))
}

/// The token of a `200`, or the OAuth error. Token failures are kept from
/// [`RetryHint::Permanent`] (see [`SalesforceClient::fetch_token`]).
fn token_from_reply(reply: &Reply) -> Result<Secret, SfError> {
    let error = if reply.status == 200 {
        match serde_json::from_str::<TokenAnswer>(&reply.body) {
            Ok(answer) if !answer.access_token.is_empty() => {
                return Ok(Secret::new(answer.access_token))
            }
            // The body could hold a token under another name: no excerpt of it.
            _ => SfError::classified(
                Some(200),
                UNEXPECTED_RESPONSE,
                "HTTP 200 from the token endpoint without an access_token",
                Vec::new(),
            ),
        }
    } else {
        match serde_json::from_str::<OAuthError>(&reply.body) {
            Ok(e) => SfError::classified(Some(reply.status), e.error, e.error_description, Vec::new()),
            Err(_) => SfError::unexpected(
                reply.status,
                "the token endpoint's answer is not an OAuth error {\"error\", \"error_description\"}",
                &reply.body,
            ),
        }
    };
    let hint = match error.hint {
        RetryHint::Retry => RetryHint::Retry,
        RetryHint::PauseForLimit => RetryHint::PauseForLimit,
        RetryHint::AuthFailure | RetryHint::Permanent => RetryHint::AuthFailure,
    };
    Err(SfError { hint, ..error })
}

/// The error of a non-2xx answer: the first entry of the documented error array, with the
/// codes of any further entries added to the message.
fn rest_error(reply: &Reply) -> SfError {
    match serde_json::from_str::<Vec<RestError>>(&reply.body) {
        Ok(errors) => match errors.split_first() {
            Some((first, rest)) => {
                let mut message = first.message.clone();
                if !rest.is_empty() {
                    let codes: Vec<&str> = rest.iter().map(|e| e.error_code.as_str()).collect();
                    message.push_str(&format!(" (and {}: {})", rest.len(), codes.join(", ")));
                }
                SfError::classified(
                    Some(reply.status),
                    first.error_code.clone(),
                    message,
                    first.fields.clone(),
                )
            }
            None => SfError::unexpected(reply.status, "an empty error array", &reply.body),
        },
        Err(_) => SfError::unexpected(
            reply.status,
            "not a Salesforce error array [{\"message\", \"errorCode\", \"fields\"}]",
            &reply.body,
        ),
    }
}

fn sobject_outcome(reply: &Reply) -> LeadOutcome {
    // Salesforce answers 204; any 2xx means the update was accepted, whatever a proxy put
    // in the body, so it is not read.
    let result = match reply.status {
        200..=299 => Ok(()),
        _ => Err(rest_error(reply)),
    };
    LeadOutcome {
        http_status: Some(reply.status),
        result,
    }
}

/// The outcome of each record of an sObject Collections call, in the order of `ids`, the
/// records sent. Salesforce answers one result per record in request order; an answer that is
/// not that (too few or too many results, or a success naming another record) is not in
/// request order, so only its successes that name the record at their position are taken, and
/// every other record is retried ([`RetryHint::Retry`]): no lead is marked handed off, or
/// dead-lettered, on a guess.
fn collection_outcomes(reply: &Reply, ids: &[&str]) -> Vec<LeadOutcome> {
    let n = ids.len();
    let call_error = |error: SfError| {
        every(
            n,
            CallFailure {
                status: Some(reply.status),
                error,
            },
        )
    };
    if !(200..300).contains(&reply.status) {
        return call_error(rest_error(reply));
    }
    let results = match serde_json::from_str::<Vec<Value>>(&reply.body) {
        Ok(results) => results,
        Err(e) => {
            return call_error(SfError::unexpected_transient(
                reply.status,
                &format!("not an array of {{\"id\", \"success\", \"errors\"}} results ({e})"),
                &reply.body,
            ))
        }
    };
    let parsed: Vec<Option<RecordResult>> = results
        .into_iter()
        .map(|v| serde_json::from_value(v).ok())
        .collect();
    let names_its_record = |i: usize| match parsed.get(i) {
        Some(Some(r)) if r.success => r.id.as_deref().is_some_and(|id| same_id(id, ids[i])),
        _ => false,
    };
    let in_order = parsed.len() == n
        && (0..n).all(|i| names_its_record(i) || parsed[i].as_ref().is_some_and(|r| !r.success));
    let mismatch = |i: usize| {
        let what = match parsed.get(i) {
            _ if parsed.len() != n => format!(
                "{} results for {n} records, so the results cannot be matched to records",
                parsed.len()
            ),
            Some(None) => format!("result {i} is not a {{\"success\", \"errors\"}} result"),
            Some(Some(r)) if r.success && !names_its_record(i) => format!(
                "result {i} is a success for {:?}, but record {i} is {:?}",
                r.id.as_deref().unwrap_or("(no id)"),
                ids[i]
            ),
            _ => "a success names another record, so the results are not in request order"
                .to_string(),
        };
        SfError::unexpected_transient(reply.status, &what, &reply.body)
    };
    (0..n)
        .map(|i| {
            let result = if names_its_record(i) {
                Ok(())
            } else if !in_order {
                Err(mismatch(i))
            } else {
                // In order and not a success: a failure with its errors.
                let errors = parsed[i].as_ref().map(|r| &r.errors);
                match errors.and_then(|e| e.first()) {
                    Some(e) => Err(SfError::classified(
                        Some(reply.status),
                        e.status_code.clone(),
                        e.message.clone(),
                        e.fields.clone(),
                    )),
                    None => Err(SfError::unexpected_transient(
                        reply.status,
                        "a record result with success false and no errors",
                        &reply.body,
                    )),
                }
            };
            LeadOutcome {
                http_status: Some(reply.status),
                result,
            }
        })
        .collect()
}

/// Whether a result's id names the record sent with `sent`: equal, or the 18-character form
/// Salesforce answers for a 15-character id sent (the same id with a case-checksum suffix).
fn same_id(answered: &str, sent: &str) -> bool {
    answered == sent
        || (sent.len() == 15 && answered.len() == 18 && answered.starts_with(sent))
        || (sent.len() == 18 && answered.len() == 15 && sent.starts_with(answered))
}

/// The body cap of a call carrying `leads` leads.
fn answer_limit(leads: usize) -> usize {
    MAX_ANSWER_BYTES_PER_LEAD
        .saturating_mul(leads.max(1))
        .min(MAX_ANSWER_BYTES_PER_CALL)
}

/// The body, read piece by piece; `None` when it is over `max` bytes (by its `Content-Length`
/// or as read), so an endless or huge answer costs at most `max` bytes and one piece.
async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Option<String>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    let mut body: Vec<u8> = Vec::new();
    while let Some(piece) = response.chunk().await? {
        if body.len() + piece.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&piece);
    }
    Ok(Some(String::from_utf8_lossy(&body).into_owned()))
}

/// `(used, allowed)` from `Sforce-Limit-Info: api-usage=18/15000`, which may carry further
/// `; per-app-api-usage=...` parts.
pub fn parse_limit_info(header: &str) -> Option<(u64, u64)> {
    header.split([';', ',']).find_map(|part| {
        let usage = part.trim().strip_prefix("api-usage=")?;
        let (used, max) = usage.split_once('/')?;
        Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
    })
}

/// The `status_class` label: bounded to `1xx`..`5xx`.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// An error with its causes (`reqwest`'s own message says little: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// The start of a body, for an error message.
fn excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty)".to_string();
    }
    let mut out: String = trimmed.chars().take(BODY_EXCERPT_CHARS).collect();
    if out.len() < trimmed.len() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::standin::{Faults, Standin, StandinConfig};
    use crate::runtime::shutdown::Shutdown;
    use serde_json::json;
    use std::collections::HashSet;

    /// Distinctive, so any leak is found by a plain substring search.
    const SECRET: &str = "s3cr3t-Sh0uld-N3v3r-Leak";

    fn lead(n: u32) -> String {
        format!("00Q{n:012}AAA")
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn update(n: u32) -> LeadUpdate {
        LeadUpdate {
            lead_id: lead(n),
            body: object(json!({ "lead_status": "MQL" })),
        }
    }

    fn standin_config() -> StandinConfig {
        StandinConfig {
            client_id: "test-app".to_string(),
            client_secret: Secret::new(SECRET),
            ..StandinConfig::default()
        }
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

    /// A stand-in org and a client for it; dropping it stops the stand-in.
    struct Org {
        standin: Standin,
        client: SalesforceClient,
        shutdown: Shutdown,
    }

    impl Drop for Org {
        fn drop(&mut self) {
            self.shutdown.trigger();
        }
    }

    async fn org(cfg: StandinConfig) -> Org {
        let shutdown = Shutdown::new();
        let (_, standin) = crate::dev::standin::serve("127.0.0.1:0", cfg, shutdown.clone())
            .await
            .expect("the stand-in starts");
        let client = client_for(&standin.instance_url(), SECRET, Duration::from_secs(5));
        Org {
            standin,
            client,
            shutdown,
        }
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
        let report = org
            .client
            .update_leads(&[update(1), update(2), update(3)])
            .await;
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
        let org = org(StandinConfig {
            faults: Faults {
                token_ttl_calls: Some(1),
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
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
        let org = org(StandinConfig {
            faults: Faults {
                token_ttl_calls: Some(0),
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
        let report = org.client.update_leads(&[update(1), update(2)]).await;
        assert_eq!(report.api_calls, 4, "token, call, token, replay; then stop");
        assert!(report.token_refreshed);
        assert_eq!(org.standin.tokens_issued(), 2);
        for outcome in &report.outcomes {
            assert_eq!(outcome.http_status, Some(401));
            let e = error_of(outcome);
            assert_eq!(e.error_code, "INVALID_SESSION_ID");
            assert_eq!(e.hint, RetryHint::AuthFailure, "credentials, not the lead");
        }
    }

    #[test]
    fn classify_follows_the_spec_for_every_case() {
        use RetryHint::*;
        let table: &[(Option<u16>, &str, RetryHint)] = &[
            // No answer: timeouts and connection errors.
            (None, TIMEOUT, Retry),
            (None, CONNECTION_ERROR, Retry),
            (Some(408), "REQUEST_TIMEOUT", Retry),
            (Some(429), "TOO_MANY_REQUESTS", Retry),
            (Some(500), "UNKNOWN_EXCEPTION", Retry),
            (Some(502), UNEXPECTED_RESPONSE, Retry),
            (Some(503), "SERVER_UNAVAILABLE", Retry),
            (Some(504), UNEXPECTED_RESPONSE, Retry),
            // Row locks, whatever status carries them.
            (Some(400), "UNABLE_TO_LOCK_ROW", Retry),
            (Some(200), "UNABLE_TO_LOCK_ROW", Retry),
            (Some(503), "UNABLE_TO_LOCK_ROW", Retry),
            // The daily API limit.
            (Some(403), "REQUEST_LIMIT_EXCEEDED", PauseForLimit),
            (Some(200), "REQUEST_LIMIT_EXCEEDED", PauseForLimit),
            // A session refused after the replay: credentials, not the lead.
            (Some(401), "INVALID_SESSION_ID", AuthFailure),
            // Other 4xx, and record errors inside a 200: no retry.
            (Some(404), "NOT_FOUND", Permanent),
            (Some(200), "NOT_FOUND", Permanent),
            (Some(400), "MALFORMED_ID", Permanent),
            (Some(200), "MALFORMED_ID", Permanent),
            (Some(404), "ENTITY_IS_DELETED", Permanent),
            (Some(400), "FIELD_CUSTOM_VALIDATION_EXCEPTION", Permanent),
            (Some(200), "FIELD_CUSTOM_VALIDATION_EXCEPTION", Permanent),
            (Some(400), "INVALID_FIELD", Permanent),
            (Some(400), "JSON_PARSER_ERROR", Permanent),
            (Some(403), "INSUFFICIENT_ACCESS_OR_READONLY", Permanent),
            (Some(405), "METHOD_NOT_ALLOWED", Permanent),
            (Some(415), "UNSUPPORTED_MEDIA_TYPE", Permanent),
            (Some(200), UNEXPECTED_RESPONSE, Permanent),
            (Some(302), UNEXPECTED_RESPONSE, Permanent),
        ];
        for (status, code, want) in table {
            assert_eq!(classify(*status, code), *want, "{status:?} {code}");
        }
    }

    #[tokio::test]
    async fn request_limit_exceeded_pauses_and_keeps_the_leads() {
        let org = org(StandinConfig {
            faults: Faults {
                daily_limit: Some(1),
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
        assert!(org.client.update_leads(&[update(1)]).await.outcomes[0]
            .result
            .is_ok());
        let refused = org.client.update_leads(&[update(2), update(3)]).await;
        for outcome in &refused.outcomes {
            assert_eq!(outcome.http_status, Some(403));
            let e = error_of(outcome);
            assert_eq!(e.error_code, "REQUEST_LIMIT_EXCEEDED");
            assert_eq!(e.hint, RetryHint::PauseForLimit);
        }
        assert_eq!(refused.limit_info, Some((1, 1)));
        org.standin.reset_limit();
        let later = org.client.update_leads(&[update(2), update(3)]).await;
        assert_eq!(later.outcomes, vec![ok(200), ok(200)]);
    }

    #[tokio::test]
    async fn server_unavailable_is_retried() {
        let org = org(StandinConfig {
            faults: Faults {
                unavailable_rate: 1.0,
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
        for leads in [vec![update(1)], vec![update(1), update(2)]] {
            let report = org.client.update_leads(&leads).await;
            assert_eq!(report.outcomes.len(), leads.len());
            for outcome in &report.outcomes {
                assert_eq!(outcome.http_status, Some(503));
                let e = error_of(outcome);
                assert_eq!(e.error_code, "SERVER_UNAVAILABLE");
                assert_eq!(e.hint, RetryHint::Retry);
            }
        }
    }

    #[tokio::test]
    async fn locked_rows_are_retried_per_record() {
        let org = org(StandinConfig {
            faults: Faults {
                lock_rate: 1.0,
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
        let lone = org.client.update_leads(&[update(1)]).await;
        assert_eq!(lone.outcomes[0].http_status, Some(400));
        assert_eq!(error_of(&lone.outcomes[0]).error_code, "UNABLE_TO_LOCK_ROW");
        assert_eq!(error_of(&lone.outcomes[0]).hint, RetryHint::Retry);

        let several = org.client.update_leads(&[update(1), update(2)]).await;
        for outcome in &several.outcomes {
            assert_eq!(outcome.http_status, Some(200));
            assert_eq!(error_of(outcome).error_code, "UNABLE_TO_LOCK_ROW");
            assert_eq!(error_of(outcome).hint, RetryHint::Retry);
        }
        assert!(org.standin.leads().is_empty());
    }

    #[tokio::test]
    async fn connection_refused_is_retried_without_a_status() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        let client = client_for(&format!("http://{closed}"), SECRET, Duration::from_secs(5));
        match client.ensure_token().await {
            Err(SalesforceError::Token {
                status: None,
                error,
            }) => {
                assert_eq!(error.error_code, CONNECTION_ERROR);
                assert_eq!(error.hint, RetryHint::Retry);
            }
            other => panic!("expected a connection error, got {other:?}"),
        }
        let report = client.update_leads(&[update(1), update(2)]).await;
        assert_eq!(report.api_calls, 1);
        for outcome in &report.outcomes {
            assert_eq!(outcome.http_status, None);
            assert_eq!(error_of(outcome).error_code, CONNECTION_ERROR);
            assert_eq!(error_of(outcome).hint, RetryHint::Retry);
        }
    }

    #[tokio::test]
    async fn timeout_is_retried_without_a_status() {
        let org = org(standin_config()).await;
        org.client.ensure_token().await.expect("a token");
        org.standin.set_faults(Faults {
            latency: Duration::from_millis(500),
            ..Faults::default()
        });
        let slow = client_for(
            &org.standin.instance_url(),
            SECRET,
            Duration::from_millis(50),
        );
        let report = slow.update_leads(&[update(1)]).await;
        assert_eq!(report.outcomes[0].http_status, None);
        assert_eq!(error_of(&report.outcomes[0]).error_code, TIMEOUT);
        assert_eq!(error_of(&report.outcomes[0]).hint, RetryHint::Retry);
    }

    #[test]
    fn backoff_doubles_then_caps_and_stays_within_jitter_bounds() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let base = |attempt: u32| {
            let grown = Duration::from_millis(100) * 2u32.pow(attempt.min(20) - 1);
            grown.min(Duration::from_secs(1))
        };
        let jitters = [
            0,
            1,
            7,
            999_999_937,
            123_456_789_012,
            u64::MAX / 3,
            u64::MAX,
        ];
        for attempt in 1..=12 {
            for jitter in jitters {
                let d = backoff.delay(attempt, jitter);
                assert!(
                    d >= base(attempt) / 2 && d <= base(attempt),
                    "attempt {attempt}, jitter {jitter}: {d:?} outside [{:?}, {:?}]",
                    base(attempt) / 2,
                    base(attempt)
                );
            }
            // The jitter reaches both ends: 0 the bottom, the span the top.
            assert_eq!(backoff.delay(attempt, 0), base(attempt) / 2);
            let span = base(attempt).as_nanos() - base(attempt).as_nanos() / 2;
            assert_eq!(backoff.delay(attempt, span as u64), base(attempt));
        }
        // Grows: 100, 200, 400, 800 ms, then the 1 s cap.
        let lows: Vec<u128> = (1..=6).map(|a| backoff.delay(a, 0).as_millis()).collect();
        assert_eq!(lows, vec![50, 100, 200, 400, 500, 500]);
        // Deterministic given the jitter; attempt 0 is the first retry; no overflow.
        assert_eq!(backoff.delay(3, 42), backoff.delay(3, 42));
        assert_eq!(backoff.delay(0, 5), backoff.delay(1, 5));
        assert!(backoff.delay(u32::MAX, u64::MAX) <= Duration::from_secs(1));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert!(huge.delay(u32::MAX, 0) >= Duration::MAX / 2);
        let settings = HandoffSettings::default();
        assert_eq!(
            Backoff::from_settings(&settings),
            Backoff::new(settings.backoff_initial, settings.backoff_max)
        );
        assert_ne!(jitter(), jitter(), "fresh randomness per call");
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

        let org = org(StandinConfig {
            faults: Faults {
                daily_limit: Some(50),
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
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
        match wrong.ensure_token().await {
            Err(SalesforceError::Token {
                status: Some(400),
                error,
            }) => {
                assert_eq!(error.error_code, "invalid_client");
                assert_eq!(error.message, "invalid client credentials");
                assert_eq!(error.hint, RetryHint::AuthFailure);
            }
            other => panic!("expected invalid_client, got {other:?}"),
        }
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
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _metrics = metrics::set_default_local_recorder(&recorder);
        crate::ops::telemetry::describe_to_current_recorder();

        let org = org(StandinConfig {
            known_leads: Some(HashSet::from([lead(1), lead(2)])),
            faults: Faults {
                token_ttl_calls: Some(2),
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
        org.client.update_leads(&[update(1)]).await; // token 2xx, sobject 2xx
        org.client.update_leads(&[update(3)]).await; // sobject 4xx (NOT_FOUND)
        org.client.update_leads(&[update(1), update(2)]).await; // 401, token, collection 2xx
        let rendered = handle.render();
        for line in [
            r#"leadscore_salesforce_requests_total{endpoint="token",status_class="2xx"} 2"#,
            r#"leadscore_salesforce_requests_total{endpoint="sobject",status_class="2xx"} 1"#,
            r#"leadscore_salesforce_requests_total{endpoint="sobject",status_class="4xx"} 1"#,
            r#"leadscore_salesforce_requests_total{endpoint="collection",status_class="4xx"} 1"#,
            r#"leadscore_salesforce_requests_total{endpoint="collection",status_class="2xx"} 1"#,
            "leadscore_salesforce_token_refreshes_total 1",
            "leadscore_salesforce_api_usage_calls 3",
            "leadscore_salesforce_api_limit_calls 100000",
        ] {
            assert!(rendered.contains(line), "missing {line} in:\n{rendered}");
        }
    }

    /// A canned answer, for shapes the stand-in never sends.
    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.to_string(),
        }
    }

    #[test]
    fn unexpected_answers_say_what_was_wrong() {
        // A proxy's HTML error page.
        let page = sobject_outcome(&reply(502, "<html>Bad Gateway</html>"));
        let e = error_of(&page);
        assert_eq!(e.error_code, UNEXPECTED_RESPONSE);
        assert_eq!(e.hint, RetryHint::Retry);
        assert!(e.message.contains("HTTP 502"), "{}", e.message);
        assert!(
            e.message.contains("not a Salesforce error array"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("<html>Bad Gateway</html>"),
            "{}",
            e.message
        );

        let odd = error_of(&sobject_outcome(&reply(400, "{\"oops\": 1}"))).clone();
        assert_eq!(
            (odd.error_code.as_str(), odd.hint),
            (UNEXPECTED_RESPONSE, RetryHint::Permanent)
        );
        let empty = error_of(&sobject_outcome(&reply(400, "[]"))).clone();
        assert!(
            empty.message.contains("an empty error array"),
            "{}",
            empty.message
        );
        // Any 2xx on a lone PATCH is success, whatever its body.
        for (status, body) in [(200, "{}"), (200, "<html>OK</html>"), (201, ""), (299, "x")] {
            assert_eq!(
                sobject_outcome(&reply(status, body)),
                ok(status),
                "{status} {body}"
            );
        }

        // A validation error keeps its fields; further errors are named.
        let validation = error_of(&sobject_outcome(&reply(
            400,
            r#"[{"message":"Rating is required","errorCode":"FIELD_CUSTOM_VALIDATION_EXCEPTION","fields":["Rating"]},
                {"message":"x","errorCode":"INVALID_FIELD"}]"#,
        )))
        .clone();
        assert_eq!(validation.error_code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
        assert_eq!(validation.fields, vec!["Rating".to_string()]);
        assert_eq!(
            validation.message,
            "Rating is required (and 1: INVALID_FIELD)"
        );
        assert_eq!(validation.hint, RetryHint::Permanent);

        // Collections: wrong count, wrong shape, failure without errors, errorCode spelling.
        let short = collection_outcomes(
            &reply(200, r#"[{"id":"a","success":true,"errors":[]}]"#),
            &["a", "b", "c"],
        );
        assert_eq!(short.len(), 3);
        assert_eq!(short[0], ok(200), "a success naming its record is taken");
        assert!(error_of(&short[2])
            .message
            .contains("1 results for 3 records"));
        assert_eq!(error_of(&short[2]).hint, RetryHint::Retry);
        let object_body = collection_outcomes(&reply(200, r#"{"success":true}"#), &["a", "b"]);
        assert!(error_of(&object_body[0]).message.contains("not an array"));
        assert_eq!(error_of(&object_body[0]).hint, RetryHint::Retry);
        let mixed = collection_outcomes(
            &reply(
                200,
                r#"[{"success":false,"errors":[]},
                    {"success":false,"errors":[{"errorCode":"MALFORMED_ID","message":"bad id","fields":["Id"]}]},
                    {"id":"x","success":true,"errors":[]}]"#,
            ),
            &["v", "w", "x"],
        );
        assert!(error_of(&mixed[0])
            .message
            .contains("success false and no errors"));
        assert_eq!(error_of(&mixed[0]).hint, RetryHint::Retry);
        assert_eq!(error_of(&mixed[1]).error_code, "MALFORMED_ID");
        assert_eq!(error_of(&mixed[1]).fields, vec!["Id".to_string()]);
        assert_eq!(mixed[2], ok(200));
        let whole = collection_outcomes(
            &reply(
                400,
                r#"[{"message":"too many","errorCode":"EXCEEDED_ID_LIMIT"}]"#,
            ),
            &["a", "b"],
        );
        assert!(whole
            .iter()
            .all(|o| o.http_status == Some(400) && error_of(o).error_code == "EXCEEDED_ID_LIMIT"));

        // Token answers: never Permanent, and a 200 body is never quoted (it may hold a token).
        let no_token = token_from_reply(&reply(200, r#"{"token":"abc"}"#)).expect_err("no token");
        assert_eq!(no_token.hint, RetryHint::AuthFailure);
        assert!(!no_token.message.contains("abc"));
        let down = token_from_reply(&reply(503, "down")).expect_err("down");
        assert_eq!(
            (down.error_code.as_str(), down.hint),
            (UNEXPECTED_RESPONSE, RetryHint::Retry)
        );

        let long = "x".repeat(5000);
        let e = error_of(&sobject_outcome(&reply(500, &long))).clone();
        assert!(
            e.message.len() < 500,
            "the body is cut: {}",
            e.message.len()
        );
    }

    #[test]
    fn new_rejects_settings_it_cannot_use() {
        let good = SalesforceSettings {
            client_id: "app".to_string(),
            ..SalesforceSettings::default()
        };
        let cases = [
            (
                SalesforceSettings {
                    instance_url: "ftp://x".to_string(),
                    ..good.clone()
                },
                "salesforce.instance_url",
            ),
            (
                SalesforceSettings {
                    api_version: String::new(),
                    ..good.clone()
                },
                "salesforce.api_version",
            ),
            (
                SalesforceSettings {
                    client_id: " ".to_string(),
                    ..good.clone()
                },
                "salesforce.client_id",
            ),
        ];
        for (settings, key) in cases {
            let e = SalesforceClient::new(&settings, Secret::new("s")).expect_err(key);
            assert!(e.to_string().starts_with(key), "{e}");
        }
        let e = SalesforceClient::new(&good, Secret::new("")).expect_err("empty secret");
        assert!(e.to_string().contains("secret is empty"), "{e}");
        let trailing = SalesforceSettings {
            instance_url: "https://example.my.salesforce.com/".to_string(),
            ..good
        };
        let client = SalesforceClient::new(&trailing, Secret::new("s")).expect("valid");
        assert_eq!(client.instance_url, "https://example.my.salesforce.com");
    }

    #[test]
    fn collection_results_are_matched_to_records_by_position_and_id() {
        let sent = [
            "00Q000000000001AAA",
            "00Q000000000002AAA",
            "00Q000000000003",
        ];
        let success = |id: &str| format!(r#"{{"id":"{id}","success":true,"errors":[]}}"#);
        let failure = r#"{"success":false,"errors":[{"statusCode":"NOT_FOUND","message":"gone"}]}"#;
        // In order: each result is taken, a 15-character id answered in its 18-character form.
        let body = format!(
            "[{},{failure},{}]",
            success(sent[0]),
            success("00Q000000000003ABC")
        );
        let exact = collection_outcomes(&reply(200, &body), &sent);
        assert_eq!(exact[0], ok(200));
        assert_eq!(error_of(&exact[1]).error_code, "NOT_FOUND");
        assert_eq!(error_of(&exact[1]).hint, RetryHint::Permanent);
        assert_eq!(exact[2], ok(200));
        // A success naming another record: the order is not to be trusted, so the failure
        // cannot be attributed either; only the success at its own position is taken.
        let body = format!("[{},{failure},{}]", success(sent[0]), success(sent[1]));
        let swapped = collection_outcomes(&reply(200, &body), &sent);
        assert_eq!(swapped[0], ok(200));
        for o in &swapped[1..] {
            assert_eq!(error_of(o).hint, RetryHint::Retry, "{o:?}");
            assert_eq!(error_of(o).error_code, UNEXPECTED_RESPONSE);
        }
        assert!(error_of(&swapped[2]).message.contains("is a success for"));
        // A success without an id is not a success for anyone.
        let body = r#"[{"success":true,"errors":[]}]"#;
        let anonymous = collection_outcomes(&reply(200, body), &sent[..1]);
        assert_eq!(error_of(&anonymous[0]).hint, RetryHint::Retry);
        // One unreadable result: the rest cannot be placed with confidence.
        let body = format!("[{},17,{failure}]", success(sent[0]));
        let odd = collection_outcomes(&reply(200, &body), &sent);
        assert_eq!(odd[0], ok(200));
        assert_eq!(error_of(&odd[1]).hint, RetryHint::Retry);
        assert_eq!(error_of(&odd[2]).hint, RetryHint::Retry);
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
            let org = org(StandinConfig {
                faults: Faults {
                    collection_answer: fault,
                    ..Faults::default()
                },
                ..standin_config()
            })
            .await;
            let report = org
                .client
                .update_leads(&[update(1), update(2), update(3)])
                .await;
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
            faults: Faults {
                collection_answer: CollectionAnswer::Short,
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
        let report = org
            .client
            .update_leads(&[update(1), update(2), update(3)])
            .await;
        assert_eq!(report.outcomes[0], ok(200));
        for o in &report.outcomes[1..] {
            assert_eq!(error_of(o).hint, RetryHint::Retry, "{o:?}");
        }
    }

    #[tokio::test]
    async fn a_non_json_success_is_a_success_for_a_lone_lead_and_a_retry_for_a_collection() {
        let org = org(StandinConfig {
            faults: Faults {
                non_json_success: true,
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
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
        let pad = |bytes: usize| {
            org.standin.set_faults(Faults {
                answer_padding: bytes,
                ..Faults::default()
            })
        };
        // A lone lead: 1 MiB.
        pad(MAX_ANSWER_BYTES_PER_LEAD - 10);
        assert_eq!(
            org.client.update_leads(&[update(1)]).await.outcomes,
            vec![ok(200)]
        );
        pad(MAX_ANSWER_BYTES_PER_LEAD + 1);
        let big = org.client.update_leads(&[update(1)]).await;
        let e = error_of(&big.outcomes[0]);
        assert_eq!(
            (e.error_code.as_str(), e.hint),
            (RESPONSE_TOO_LARGE, RetryHint::Retry)
        );
        assert_eq!(big.outcomes[0].http_status, Some(200));
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
        match client.ensure_token().await {
            Err(SalesforceError::Token {
                status: Some(200),
                error,
            }) => {
                assert_eq!(error.error_code, RESPONSE_TOO_LARGE);
                assert_eq!(error.hint, RetryHint::Retry);
            }
            other => panic!("expected an answer too large, got {other:?}"),
        }
        drop(client);
        let sent = server.await.expect("the server task");
        assert!(
            sent < 50 * 1024 * 1024,
            "the client stopped reading: the server could send only {sent} bytes"
        );
    }

    #[tokio::test]
    async fn refused_credentials_are_counted_as_authentication_failures() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _metrics = metrics::set_default_local_recorder(&recorder);
        crate::ops::telemetry::describe_to_current_recorder();
        let org = org(StandinConfig {
            faults: Faults {
                token_ttl_calls: Some(0),
                ..Faults::default()
            },
            ..standin_config()
        })
        .await;
        let wrong = client_for(&org.standin.instance_url(), "nope", Duration::from_secs(5));
        let refused = wrong.update_leads(&[update(1)]).await;
        assert_eq!(error_of(&refused.outcomes[0]).hint, RetryHint::AuthFailure);
        let expired = org.client.update_leads(&[update(1)]).await;
        assert_eq!(error_of(&expired.outcomes[0]).hint, RetryHint::AuthFailure);
        let rendered = handle.render();
        for line in [
            r#"leadscore_salesforce_auth_failures_total{cause="token_refused"} 1"#,
            r#"leadscore_salesforce_auth_failures_total{cause="session_refused"} 1"#,
        ] {
            assert!(rendered.contains(line), "missing {line} in:\n{rendered}");
        }
    }

    #[test]
    fn odd_lead_ids_cannot_change_the_path() {
        assert_eq!(
            encode_path_segment("00Q000000000001AAA"),
            "00Q000000000001AAA"
        );
        assert_eq!(encode_path_segment("../x?y"), "..%2Fx%3Fy");
    }
}
