//! The retry policy: what an answer means for a lead ([`RetryHint`], [`classify`], [`SfError`])
//! and how long to wait before trying again ([`Backoff`]).

use super::wire::excerpt;
use super::UNEXPECTED_RESPONSE;
use crate::config::HandoffSettings;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

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
    /// No token could be had for a reason other than refused credentials (the token endpoint
    /// timed out, could not be reached or answered `5xx`): pause all calls and keep the leads,
    /// without counting an attempt for any, since no call was made for them.
    NoToken,
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
            RetryHint::NoToken => "no_token",
            RetryHint::Permanent => "permanent",
        }
    }
}

/// What to do after an answer with this HTTP status (`None`: no answer: timeout or connection
/// error) and Salesforce `errorCode` (or `statusCode` of a collection record).
///
/// - [`RetryHint::Retry`]: no answer, `408`, `429`, `5xx`, `1xx` and `3xx` (no redirect is
///   followed, so nothing happened), and the [`TRANSIENT_CODES`] whatever the status: a
///   collection's record fails with the code its lone update would have answered with its
///   status, so a lead's fate does not depend on whether it was batched.
/// - [`RetryHint::PauseForLimit`]: `REQUEST_LIMIT_EXCEEDED` (Salesforce sends it with `403`;
///   the code decides, so a collection record carrying it pauses too).
/// - [`RetryHint::AuthFailure`]: `401`: a session refused even after the one
///   refresh-and-replay means the org refuses these credentials, which no lead is to blame
///   for, so the leads are kept rather than dead-lettered.
/// - [`RetryHint::Permanent`]: every other answer: other 4xx and record errors in a `200`
///   (`NOT_FOUND`, `MALFORMED_ID`,
///   `ENTITY_IS_DELETED`, `FIELD_CUSTOM_VALIDATION_EXCEPTION`, `INVALID_FIELD`, ...).
pub fn classify(http_status: Option<u16>, error_code: &str) -> RetryHint {
    if TRANSIENT_CODES.contains(&error_code) {
        return RetryHint::Retry;
    }
    if error_code == "REQUEST_LIMIT_EXCEEDED" {
        return RetryHint::PauseForLimit;
    }
    match http_status {
        None | Some(408) | Some(429) | Some(500..=599) => RetryHint::Retry,
        Some(401) => RetryHint::AuthFailure,
        // Not Salesforce's word on the lead: the client follows no redirect, so the update did
        // not happen. Retried (a proxy's detour can pass) and dead-lettered after
        // `max_attempts`; SPEC 6 exempts only other 4xx from retry.
        Some(100..=199 | 300..=399) => RetryHint::Retry,
        Some(_) => RetryHint::Permanent,
    }
}

/// Salesforce error codes that say the org, not the lead, failed this time; retried whatever
/// status carries them. `UNABLE_TO_LOCK_ROW`: another transaction holds the row (with `400`
/// alone, `200` in a collection). `UNKNOWN_EXCEPTION`, `SERVER_UNAVAILABLE`,
/// `REQUEST_RUNNING_TOO_LONG`: a server-side failure, a `500` or `503` for a lone update and a
/// record error inside a collection's `200` (an outside review found a collection's
/// `UNKNOWN_EXCEPTION` dead-lettered after one attempt while the same lead alone was retried).
pub const TRANSIENT_CODES: [&str; 4] = [
    "UNABLE_TO_LOCK_ROW",
    "UNKNOWN_EXCEPTION",
    "SERVER_UNAVAILABLE",
    "REQUEST_RUNNING_TOO_LONG",
];

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
    pub(super) fn unexpected_transient(status: u16, what: &str, body: &str) -> SfError {
        SfError {
            hint: RetryHint::Retry,
            ..SfError::unexpected(status, what, body)
        }
    }

    /// An answer that is not the documented shape; `what` says what was wrong with it.
    pub(super) fn unexpected(status: u16, what: &str, body: &str) -> SfError {
        SfError::classified(
            Some(status),
            UNEXPECTED_RESPONSE,
            format!("HTTP {status}: {what}; body: {}", excerpt(body)),
            Vec::new(),
        )
    }
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
