//! The wire shapes of the REST API: the request bodies sent, the answers read (REST errors,
//! sObject Collections results, OAuth tokens and errors, `Sforce-Limit-Info`) and what each
//! answer means for each lead.

use super::retry::{RetryHint, SfError};
use super::{BODY_EXCERPT_CHARS, UNEXPECTED_RESPONSE};
use crate::config::Secret;
use serde::Deserialize;
use serde_json::{Map, Value};

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

/// An answer read in full.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: String,
}

/// A failure that applies to every lead of a call, with the status that caused it.
pub(super) struct CallFailure {
    pub(super) status: Option<u16>,
    pub(super) error: SfError,
}

/// The same failure for each of `n` leads.
pub(super) fn every(n: usize, failure: CallFailure) -> Vec<LeadOutcome> {
    (0..n)
        .map(|_| LeadOutcome {
            http_status: failure.status,
            result: Err(failure.error.clone()),
        })
        .collect()
}

/// The sObject Collections body: `allOrNone: false` so each record succeeds or fails alone.
pub(super) fn collection_body(leads: &[LeadUpdate]) -> Value {
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
pub(super) fn encode_path_segment(s: &str) -> String {
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

pub(super) fn is_invalid_session(reply: &Reply) -> bool {
    reply.status == 401
        && serde_json::from_str::<Vec<RestError>>(&reply.body)
            .is_ok_and(|errors| errors.iter().any(|e| e.error_code == "INVALID_SESSION_ID"))
}

/// The token of a `200`, or the OAuth error. Token failures are kept from
/// [`RetryHint::Permanent`] (see [`SalesforceClient::fetch_token`]).
pub(super) fn token_from_reply(reply: &Reply) -> Result<Secret, SfError> {
    let error = if reply.status == 200 {
        match serde_json::from_str::<TokenAnswer>(&reply.body) {
            // A token must go into an `Authorization` header: one that cannot (a control
            // character, a line break) would fail every call made with it, before sending,
            // for as long as it stayed cached.
            Ok(answer)
                if !answer.access_token.is_empty()
                    && reqwest::header::HeaderValue::from_str(&answer.access_token).is_ok() =>
            {
                return Ok(Secret::new(answer.access_token))
            }
            Ok(answer) if !answer.access_token.is_empty() => SfError::classified(
                Some(200),
                UNEXPECTED_RESPONSE,
                "HTTP 200 from the token endpoint with an access_token that cannot be sent in a header",
                Vec::new(),
            ),
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
        // A 200 without a usable token is the endpoint's failure, not the credentials'.
        _ if reply.status == 200 => RetryHint::NoToken,
        RetryHint::Retry | RetryHint::NoToken => RetryHint::NoToken,
        RetryHint::PauseForLimit => RetryHint::PauseForLimit,
        RetryHint::AuthFailure | RetryHint::Permanent => RetryHint::AuthFailure,
    };
    Err(SfError { hint, ..error })
}

/// The error of a non-2xx answer: the first entry of the documented error array, with the
/// codes of any further entries added to the message.
pub(super) fn rest_error(reply: &Reply) -> SfError {
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

pub(super) fn sobject_outcome(reply: &Reply) -> LeadOutcome {
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
pub(super) fn collection_outcomes(reply: &Reply, ids: &[&str]) -> Vec<LeadOutcome> {
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

/// Whether a result's id names the record sent with `sent`: equal, or the same record in the
/// other form. A 15-character id is case-sensitive, so an 18-character one that starts with it
/// exactly is its record (whatever its suffix says); its 18-character form adds a suffix that
/// encodes the case of its letters, so that it names the record in any case: `00q5e...EAD`
/// is `00Q5e...`, and `00q5e...` with another suffix is another record.
pub(super) fn same_id(answered: &str, sent: &str) -> bool {
    let long = |id: &str| match id.len() {
        15 => Some(format!("{id}{}", case_suffix(id)?)),
        18 if id.is_ascii() => Some(id.to_string()),
        _ => None,
    };
    answered == sent
        || (sent.len() == 15 && answered.len() == 18 && answered.starts_with(sent))
        || (sent.len() == 18 && answered.len() == 15 && sent.starts_with(answered))
        || (answered.len() == 18 || sent.len() == 18)
            && matches!((long(answered), long(sent)), (Some(a), Some(b)) if a.eq_ignore_ascii_case(&b))
}

/// The three characters Salesforce appends to a 15-character id: for each five characters, a
/// bit per upper-case letter, as one of `A`-`Z`, `0`-`5`.
fn case_suffix(id15: &str) -> Option<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let bytes = id15.as_bytes();
    if bytes.len() != 15 || !id15.is_ascii() {
        return None;
    }
    Some(
        bytes
            .chunks(5)
            .map(|chunk| {
                let bits = chunk
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.is_ascii_uppercase())
                    .fold(0usize, |n, (i, _)| n | 1 << i);
                ALPHABET[bits] as char
            })
            .collect(),
    )
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

/// The start of a body, for an error message.
pub(super) fn excerpt(body: &str) -> String {
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

/// The longest error message kept from an answer, in bytes: a message is logged and copied
/// into the lead's outcome and dead letter, and an answer of any size could otherwise make a
/// record Kafka refuses (which stops the service, and a restart repeats the call).
pub(super) const MAX_ERROR_MESSAGE: usize = 2048;

/// The most blamed fields kept from an answer, each cut to [`MAX_ERROR_MESSAGE`] too.
pub(super) const MAX_ERROR_FIELDS: usize = 32;

/// `error` fit to be logged and published: every form in which its text could hold one of
/// `hidden` (the client secret, the bearer token) replaced by `[redacted]`, as sent, as a form
/// encodes it and as a JSON string escapes it, since an endpoint or a proxy can echo the
/// request in its error (SPEC 6: the secret is never logged); then its message and fields cut
/// to bounds.
pub(super) fn scrub(mut error: SfError, hidden: &[&str]) -> SfError {
    let forms = hidden_forms(hidden, 1);
    let clean = |text: &mut String| {
        redact(text, &forms);
        cut(text, MAX_ERROR_MESSAGE);
    };
    clean(&mut error.error_code);
    clean(&mut error.message);
    error.fields.truncate(MAX_ERROR_FIELDS);
    error.fields.iter_mut().for_each(clean);
    error
}

/// The shortest value [`redact_echo`] takes out of a whole answer: a shorter one could be a
/// piece of the answer's own syntax (a key, an id), which redacting would garble. Client
/// secrets and tokens are far longer; [`scrub`] still takes a short one out of the errors.
const MIN_REDACTED_IN_ANSWER: usize = 8;

/// An answer's body with every form of `hidden` (see [`scrub`]) it holds redacted, before
/// anything is read from it, so that no excerpt of it can carry part of a secret.
pub(super) fn redact_echo(mut body: String, hidden: &[&str]) -> String {
    redact(&mut body, &hidden_forms(hidden, MIN_REDACTED_IN_ANSWER));
    body
}

/// Each of `hidden` at least `min` bytes long in every form an echo is likely to hold it: as
/// sent; percent-encoded as a form writes it (a space as `+`) or as a URL does (`%20`), with
/// upper- or lower-case hex; as a JSON string escapes it, also with `/` as `\/`, and escaped
/// twice (a JSON error quoting a JSON body).
fn hidden_forms(hidden: &[&str], min: usize) -> Vec<String> {
    let json = |s: &str| {
        let quoted = serde_json::to_string(s).unwrap_or_default();
        quoted
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or_default()
            .to_string()
    };
    let mut forms: Vec<String> = hidden
        .iter()
        .filter(|h| h.len() >= min)
        .flat_map(|h| {
            let form = form_encoded(h);
            let url = form.replace('+', "%20");
            let once = json(h);
            [
                h.to_string(),
                lower_hex(&form),
                lower_hex(&url),
                form,
                url,
                once.replace('/', "\\/"),
                json(&once),
                once,
            ]
        })
        .filter(|f| !f.is_empty())
        .collect();
    forms.sort();
    forms.dedup();
    // Longest first, so that no shorter form leaves part of a longer one behind.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms
}

fn redact(text: &mut String, forms: &[String]) {
    for form in forms {
        if text.contains(form.as_str()) {
            *text = text.replace(form.as_str(), "[redacted]");
        }
    }
}

/// `text` as `application/x-www-form-urlencoded` writes it (the token request's form): letters,
/// digits and `*-._` as they are, a space as `+`, every other byte as `%XX`.
fn form_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `text` with the hex digits of its `%XX` escapes in lower case.
fn lower_hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut left = 0;
    for c in text.chars() {
        if c == '%' {
            left = 2;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Cuts `text` to at most `max` bytes (at a character boundary), saying how much went.
fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("... ({dropped} more bytes)"));
}
