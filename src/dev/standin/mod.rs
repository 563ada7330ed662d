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
//! - `PATCH /services/data/{v}/composite/sobjects`: sObject Collections, up to
//!   [`MAX_COLLECTION_RECORDS`](crate::handoff::salesforce::MAX_COLLECTION_RECORDS) (200) records;
//!   `200` with one result per record.
//! - `GET /standin/leads`: the patched leads as JSON, for humans.
//!
//! Every `/services/data` answer carries `Sforce-Limit-Info: api-usage=USED/LIMIT`.

use crate::config::Secret;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::sync::lock_unpoisoned;
use axum::Router;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod handlers;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use handlers::is_salesforce_id;

/// The API allowance reported in `Sforce-Limit-Info` when no daily limit is injected (an
/// Enterprise org's base allowance).
pub const DEFAULT_API_LIMIT: u64 = 100_000;

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
    /// Leads whose every update fails with `UNKNOWN_EXCEPTION` (a lone lead's with `500`), as
    /// an org-side fault on one record does (a trigger or flow that throws), until the fault
    /// is cleared.
    pub failing_leads: BTreeSet<String>,
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
        lock_unpoisoned(&self.inner)
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
    let app = Router::new()
        .fallback(handlers::handle)
        .with_state(standin.clone());
    crate::ops::admin::spawn_server(listener, app, shutdown, "Salesforce stand-in");
    tracing::info!(%addr, "Salesforce stand-in listening");
    Ok((addr, standin))
}
