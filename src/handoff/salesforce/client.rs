//! The HTTP client: the OAuth token (fetched, cached, refreshed once on `INVALID_SESSION_ID`),
//! the update requests, and reading answers under their size caps.

use super::retry::{RetryHint, SfError};
use super::wire::{
    collection_body, collection_outcomes, encode_path_segment, every, is_invalid_session,
    parse_limit_info, redact_echo, rest_error, scrub, sobject_outcome, token_from_reply,
    CallFailure, LeadOutcome, LeadUpdate, Reply,
};
use super::{
    CONNECTION_ERROR, MAX_ANSWER_BYTES_PER_CALL, MAX_ANSWER_BYTES_PER_LEAD, MAX_COLLECTION_RECORDS,
    RESPONSE_TOO_LARGE, TIMEOUT,
};
use crate::config::{SalesforceSettings, Secret};
use crate::ops::telemetry::{
    SALESFORCE_API_LIMIT, SALESFORCE_API_USAGE, SALESFORCE_AUTH_FAILURES, SALESFORCE_REQUESTS,
    SALESFORCE_TOKEN_REFRESHES,
};
use crate::runtime::error::error_chain;
use crate::runtime::sync::lock_unpoisoned;
use metrics::{counter, gauge};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

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

/// The Salesforce REST client: one per handoff instance, shared by reference (`&self`
/// everywhere, the token behind a lock).
pub struct SalesforceClient {
    http: reqwest::Client,
    /// Without a trailing `/`.
    pub(super) instance_url: String,
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
        if !is_api_version(&api_version) {
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
        let mut used = token.clone();
        if matches!(&answer, Ok(reply) if is_invalid_session(reply)) {
            tracing::info!(
                endpoint = endpoint.label(),
                "Salesforce session expired or invalid; fetching a new token and replaying once"
            );
            match self.refresh_token(&token, report).await {
                Ok(fresh) => {
                    answer = self
                        .send_data(endpoint, &url, &body, &fresh, limit, report)
                        .await;
                    used = fresh;
                }
                Err(f) => return every(chunk.len(), f),
            }
        }
        // What the answer may have echoed of the requests: nothing of it is logged or kept.
        let hidden = [self.secret.expose(), token.expose(), used.expose()];
        let reply = match answer {
            Ok(reply) => reply,
            Err(f) => {
                let error = scrub(f.error, &hidden);
                return every(chunk.len(), CallFailure { error, ..f });
            }
        };
        if reply.status == 401 {
            counter!(SALESFORCE_AUTH_FAILURES, "cause" => "session_refused").increment(1);
            tracing::error!(
                endpoint = endpoint.label(),
                error = %scrub(rest_error(&reply), &hidden),
                "Salesforce authentication failure: a session was refused even with a fresh token"
            );
        }
        let mut outcomes = match endpoint {
            Endpoint::Collection => {
                let ids: Vec<&str> = chunk.iter().map(|l| l.lead_id.as_str()).collect();
                collection_outcomes(&reply, &ids)
            }
            _ => vec![sobject_outcome(&reply)],
        };
        for (lead, outcome) in chunk.iter().zip(&mut outcomes) {
            if let Err(e) = &mut outcome.result {
                *e = scrub(e.clone(), &hidden);
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
        let hidden = [self.secret.expose(), token.expose()];
        self.send(endpoint, request, limit, &hidden, report).await
    }

    /// Sends a request and reads the answer, at most `max_body` bytes of it, with the values
    /// of `hidden` that it echoes redacted ([`redact_echo`]), counting it
    /// (report and metrics) and recording `Sforce-Limit-Info`. A longer body is a
    /// [`RESPONSE_TOO_LARGE`] failure, found without reading more than `max_body` + one piece.
    async fn send(
        &self,
        endpoint: Endpoint,
        request: reqwest::RequestBuilder,
        max_body: usize,
        hidden: &[&str],
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
                    // Before any excerpt of it is taken: an answer that echoes the request
                    // holds what was sent to authenticate it.
                    Some(body) => Ok(Reply {
                        status,
                        body: redact_echo(body, hidden),
                    }),
                    // A lone PATCH's 2xx says all there is to say: its body is not read for
                    // anything (README: any 2xx is a success, whatever its body), so one past
                    // the cap is a success too, not a retry of an update that was made.
                    None if endpoint == Endpoint::Sobject && (200..300).contains(&status) => {
                        Ok(Reply {
                            status,
                            body: String::new(),
                        })
                    }
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
        lock_unpoisoned(&self.token).clone()
    }

    fn set_token(&self, token: Option<Secret>) {
        *lock_unpoisoned(&self.token) = token;
    }

    /// Replaces `stale`, which Salesforce refused. When another task already replaced it, that
    /// newer token is used instead of fetching yet another.
    async fn refresh_token(
        &self,
        stale: &Secret,
        report: &mut CallReport,
    ) -> Result<Secret, CallFailure> {
        {
            let mut cached = lock_unpoisoned(&self.token);
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
            .send(
                Endpoint::Token,
                request,
                MAX_ANSWER_BYTES_PER_LEAD,
                &[self.secret.expose()],
                report,
            )
            .await
        {
            Ok(reply) => reply,
            // No answer (or one past the cap): no lead is at fault, none is called for.
            Err(f) => {
                let error = SfError {
                    hint: RetryHint::NoToken,
                    ..f.error
                };
                return Err(CallFailure { error, ..f });
            }
        };
        match token_from_reply(&reply) {
            Ok(token) => {
                self.set_token(Some(token.clone()));
                tracing::info!("Salesforce access token obtained");
                Ok(token)
            }
            Err(error) => {
                // An OAuth error or a proxy's page can quote the form, secret and all.
                let error = scrub(error, &[self.secret.expose()]);
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

/// The body cap of a call carrying `leads` leads.
pub(super) fn answer_limit(leads: usize) -> usize {
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

/// The `status_class` label: bounded to `1xx`..`5xx`.
pub(super) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Whether `v` has the shape of a REST API version in a path: `v`, a major number, a dot and a
/// minor one (`v60.0`). Anything else (`60.0`, `v60`, `latest`) makes every call a `404
/// NOT_FOUND` that reads like a verdict on each lead (an outside review saw a typo dead-letter
/// every lead), so it is refused when the handoff starts.
pub(crate) fn is_api_version(v: &str) -> bool {
    let Some((major, minor)) = v.strip_prefix('v').and_then(|r| r.split_once('.')) else {
        return false;
    };
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    digits(major, 3) && digits(minor, 2)
}
