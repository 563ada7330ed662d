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

mod client;
mod retry;
#[cfg(test)]
mod tests;
mod wire;

pub use client::{CallReport, SalesforceClient, SalesforceError};
pub use retry::{classify, jitter, Backoff, RetryHint, SfError};
pub use wire::{parse_limit_info, LeadOutcome, LeadUpdate};

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
