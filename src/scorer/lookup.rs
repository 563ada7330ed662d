//! Lead lookup (issue 11): `GET /v1/leads/{user_id}` on any scorer instance's admin port.
//!
//! The instance that owns the user's home partition answers from the state it already holds:
//! the lead's score, status, caps and its recent changes with their reasons
//! ([`crate::explain::lead_view`]). Any other instance **forwards** the request to the owner
//! and relays its answer, so a client needs one URL and its token stays on the inside (a
//! redirect would make every client re-send the token to another host, which curl and Python's
//! requests refuse to do). Owners are found through a small compacted topic (the
//! "directory", `topics.instances`) where each instance publishes its advertised admin URL and
//! its assigned partitions, as Kafka Streams' `queryMetadataForKey` does.
//!
//! Never a stale or empty score: a partition that is being restored, or whose owner is not
//! known, is 503 with `Retry-After`; a forwarded request that lands on an instance that no
//! longer owns the partition is 503 too, never forwarded again. Unknown user: 404.

use super::Core;
use crate::config::Settings;
use crate::ops::admin::Health;
use crate::ops::telemetry as t;
use crate::partitioner::partition_for;
use crate::runtime::kafka;
use crate::runtime::sync::lock_unpoisoned;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The header a forwarded lookup carries: the instance it reaches answers itself or 503,
/// never forwards again (no loops while ownership moves).
pub const FORWARDED_HEADER: &str = "leadscore-forwarded";

/// What a 503 asks the client to wait, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

/// How long a forwarded request may take, connection included.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest lead view relayed from another instance or read by `leadscore lookup`. A view
/// is a few KB, but a producer can make one far larger: at the largest `scorer.explain_depth`
/// (1,000), notes whose event ids are 128 bytes of control characters (six bytes each in
/// JSON) and 64 KiB of such attributes come to about 1.25 MB
/// (`the_largest_view_a_producer_can_make_fits_the_bound`); cap usage adds at most 192 windows
/// per capped group of the rules. The bound was 1 MiB, and such a lead could not be looked up.
pub(crate) const MAX_VIEW_BYTES: usize = 16 << 20;

/// The longest user id looked up, in bytes (Kafka keys are rarely longer than a few dozen).
const MAX_USER_ID_BYTES: usize = 1024;

/// The bound a user id to look up is past, if any: 1 to [`MAX_USER_ID_BYTES`] bytes. The
/// scorer answers 400 with it; `leadscore lookup` says it before asking.
pub fn user_id_out_of_bounds(user_id: &str) -> Option<String> {
    (user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES)
        .then(|| format!("a user id is 1 to {MAX_USER_ID_BYTES} bytes"))
}

/// The largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// The largest directory record read; a larger one is ignored with a warning.
const MAX_DIRECTORY_RECORD_BYTES: usize = 256 * 1024;

/// The result of one lookup, for `leadscore_lookups_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupResult {
    Found,
    NotFound,
    Forwarded,
    Unavailable,
    Refused,
    BadRequest,
}

impl LookupResult {
    pub const ALL: [LookupResult; 6] = [
        LookupResult::Found,
        LookupResult::NotFound,
        LookupResult::Forwarded,
        LookupResult::Unavailable,
        LookupResult::Refused,
        LookupResult::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::Found => "found",
            LookupResult::NotFound => "not_found",
            LookupResult::Forwarded => "forwarded",
            LookupResult::Unavailable => "unavailable",
            LookupResult::Refused => "refused",
            LookupResult::BadRequest => "bad_request",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LookupSetupError {
    #[error("admin.token_file {path}: {reason}")]
    TokenFile { path: String, reason: String },
}

/// Reads the bearer tokens: one per line, blank lines and `#` comments skipped, at least one.
pub fn read_tokens(path: &std::path::Path) -> Result<Vec<String>, LookupSetupError> {
    let err = |reason: String| LookupSetupError::TokenFile {
        path: path.display().to_string(),
        reason,
    };
    // Bounded in size and time: `/dev/zero`, a wrong path to a large file or a pipe that never
    // ends is an error, not a hang.
    let bytes = crate::config::small_file::read_capped(path, MAX_TOKEN_FILE_BYTES)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(err(format!(
            "larger than {MAX_TOKEN_FILE_BYTES} bytes: is it the right file?"
        )));
    }
    let text =
        String::from_utf8(bytes).map_err(|e| err(format!("cannot read it as UTF-8 text: {e}")))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err(err("has no token (one per line)".into()));
    }
    if let Some(i) = tokens
        .iter()
        .position(|t| !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(err(format!(
            "token {} has a character an Authorization header cannot carry (only visible \
             ASCII, no spaces): a byte-order mark, or a non-ASCII character?",
            i + 1
        )));
    }
    if let Some(i) = tokens.iter().position(|t| t.len() < 16) {
        return Err(err(format!(
            "token {} is shorter than 16 characters: too easy to guess",
            i + 1
        )));
    }
    Ok(tokens)
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who this instance is, as published in the directory.
#[derive(Clone, Debug)]
struct Me {
    url: String,
    name: String,
}

/// Partition owners as the directory topic says, latest record first.
#[derive(Debug, Default)]
pub struct Directory {
    inner: Mutex<DirectoryState>,
}

#[derive(Debug, Default)]
struct DirectoryState {
    /// Per instance URL: the partitions it claims that no later record claimed.
    instances: HashMap<String, Vec<i32>>,
    /// Per partition: the URL of the instance whose record claimed it last (records are
    /// applied in offset order, so a later claim wins).
    owners: HashMap<i32, String>,
}

impl Directory {
    /// Applies the next directory record: `value` `None` is a tombstone (the instance left).
    fn apply(&self, url: &str, value: Option<&Value>) {
        let mut d = lock_unpoisoned(&self.inner);
        if let Some(old) = d.instances.remove(url) {
            for p in old {
                if d.owners.get(&p).is_some_and(|u| u == url) {
                    d.owners.remove(&p);
                }
            }
        }
        let Some(v) = value else { return };
        let partitions: Vec<i32> = v["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_i64().and_then(|p| i32::try_from(p).ok()))
            .collect();
        for &p in &partitions {
            // The claim moves the partition away from its previous owner; an instance left
            // with no partition is forgotten, so the map stays bounded by the partitions even
            // when crashed instances (never tombstoned) leave records behind.
            if let Some(previous) = d.owners.insert(p, url.to_string()) {
                if previous != url {
                    if let Some(theirs) = d.instances.get_mut(&previous) {
                        theirs.retain(|q| *q != p);
                        if theirs.is_empty() {
                            d.instances.remove(&previous);
                        }
                    }
                }
            }
        }
        d.instances.insert(url.to_string(), partitions);
    }

    /// The URL of the instance that claims partition `p`.
    pub fn owner(&self, p: i32) -> Option<String> {
        lock_unpoisoned(&self.inner).owners.get(&p).cloned()
    }
}

/// The lookup endpoint's shared state: created before the admin port binds, given the scorer
/// once it started.
pub struct Lookup {
    enabled: bool,
    tokens: Vec<String>,
    me: OnceLock<Me>,
    /// Weak: the core holds this lookup (to announce its partitions).
    core: OnceLock<std::sync::Weak<Core>>,
    directory: Arc<Directory>,
    announcer: OnceLock<Announcer>,
    stop: Arc<AtomicBool>,
    client: reqwest::Client,
}

impl Lookup {
    /// Reads `admin.token_file` when lookups are on.
    pub fn new(settings: &Settings) -> Result<Arc<Lookup>, LookupSetupError> {
        let admin = &settings.admin;
        let tokens = match (&admin.token_file, admin.lookup) {
            (Some(path), true) => read_tokens(path)?,
            _ => Vec::new(),
        };
        let client = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Ok(Arc::new(Lookup {
            enabled: admin.lookup,
            tokens,
            me: OnceLock::new(),
            core: OnceLock::new(),
            directory: Arc::new(Directory::default()),
            announcer: OnceLock::new(),
            stop: Arc::new(AtomicBool::new(false)),
            client,
        }))
    }

    /// The routes to serve on the admin port.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/leads/{user_id}", get(handle_path))
            .route("/v1/leads", get(handle_query))
            .with_state(self.clone())
    }

    /// The admin port is bound at `addr`: fixes the URL this instance advertises.
    pub fn set_address(&self, settings: &Settings, addr: SocketAddr) {
        let url = advertised_url(settings, addr);
        let name = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(host_name)
            .unwrap_or_else(|| url.clone());
        if self.enabled {
            tracing::info!(%url, "lead lookup on: GET {url}/v1/leads/{{user_id}}");
        }
        let _ = self.me.set(Me { url, name });
    }

    /// The URL this instance advertises, once the admin port is bound.
    pub fn url(&self) -> Option<&str> {
        self.me.get().map(|m| m.url.as_str())
    }

    /// The scorer started: lookups can be answered, and with lookups on and a directory
    /// `topic`, the directory is read and this instance's partitions are published to it
    /// (without one, only this instance's own partitions are answered; the others are 503).
    pub(super) fn attach(
        &self,
        core: std::sync::Weak<Core>,
        properties: &BTreeMap<String, String>,
        topic: Option<&str>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        if let (true, Some(topic)) = (self.enabled, topic) {
            let me = self.me.get().cloned().unwrap_or(Me {
                url: "http://127.0.0.1:9464".into(),
                name: "leadscore".into(),
            });
            let announcer = Announcer::new(properties, topic, me)?;
            let _ = self.announcer.set(announcer);
            start_directory_reader(properties, topic, self.directory.clone(), self.stop.clone())?;
        }
        let _ = self.core.set(core);
        Ok(())
    }

    /// Publishes this instance's assigned partitions (after every assignment change).
    pub(super) fn announce(&self, health: &Health) {
        if let Some(a) = self.announcer.get() {
            a.publish(&health.assigned());
        }
    }

    /// The scorer stopped: leave the directory and stop reading it.
    pub fn retire(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.announcer.get() {
            a.retire();
        }
    }
}

/// The URL other instances reach this one at.
fn advertised_url(settings: &Settings, addr: SocketAddr) -> String {
    if let Some(url) = &settings.admin.advertised_url {
        return url.trim_end_matches('/').to_string();
    }
    let port = addr.port();
    if !addr.ip().is_unspecified() {
        return match addr {
            SocketAddr::V4(a) => format!("http://{}:{port}", a.ip()),
            SocketAddr::V6(a) => format!("http://[{}]:{port}", a.ip()),
        };
    }
    // Listening everywhere: the host name, when it resolves (a pod's name in a StatefulSet
    // behind a headless service does not: set admin.advertised_url there).
    use std::net::ToSocketAddrs;
    match host_name() {
        Some(h)
            if (h.as_str(), port)
                .to_socket_addrs()
                .is_ok_and(|mut a| a.next().is_some()) =>
        {
            format!("http://{h}:{port}")
        }
        _ => format!("http://127.0.0.1:{port}"),
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Publishes this instance's record in the directory topic: key = its URL, value = its name,
/// URL and assigned partitions; a tombstone when it leaves.
struct Announcer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    me: Me,
}

impl Announcer {
    fn new(
        properties: &BTreeMap<String, String>,
        topic: &str,
        me: Me,
    ) -> Result<Announcer, rdkafka::error::KafkaError> {
        let mut cfg = kafka::client_config(properties);
        cfg.set("linger.ms", "0");
        Ok(Announcer {
            producer: cfg.create()?,
            topic: topic.to_string(),
            me,
        })
    }

    fn publish(&self, partitions: &[i32]) {
        let value = json!({
            "url": self.me.url,
            "name": self.me.name,
            "partitions": partitions,
            "at": crate::timestamp::format_rfc3339(crate::timestamp::wall_clock_millis()),
        })
        .to_string();
        let record = BaseRecord::<str, str>::to(&self.topic)
            .key(&self.me.url)
            .payload(&value)
            .partition(0);
        if let Err((e, _)) = self.producer.send(record) {
            tracing::warn!(error = %e, "cannot publish this instance's partitions to the lookup directory");
        }
    }

    fn retire(&self) {
        let record = BaseRecord::<str, ()>::to(&self.topic)
            .key(&self.me.url)
            .partition(0);
        if let Err((e, _)) = self.producer.send(record) {
            tracing::warn!(error = %e, "cannot remove this instance from the lookup directory");
        }
        let _ = self.producer.flush(Duration::from_secs(2));
    }
}

/// Reads the directory topic from its start, for as long as the scorer runs.
fn start_directory_reader(
    properties: &BTreeMap<String, String>,
    topic: &str,
    directory: Arc<Directory>,
    stop: Arc<AtomicBool>,
) -> Result<(), rdkafka::error::KafkaError> {
    let consumer = kafka::reader(properties)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let topic = topic.to_string();
    std::thread::Builder::new()
        .name("lookup-directory".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let Some(url) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    continue;
                };
                match m.payload() {
                    None => directory.apply(url, None),
                    Some(p) if p.len() <= MAX_DIRECTORY_RECORD_BYTES => {
                        match serde_json::from_slice::<Value>(p) {
                            Ok(v) => directory.apply(url, Some(&v)),
                            Err(e) => tracing::warn!(%topic, offset = m.offset(), error = %e, "ignoring a lookup directory record that is not JSON"),
                        }
                    }
                    Some(_) => tracing::warn!(%topic, offset = m.offset(), "ignoring an oversized lookup directory record"),
                }
            }
        })
        .map(|_| ())
        .map_err(|e| {
            rdkafka::error::KafkaError::ClientCreation(format!(
                "cannot start the lookup directory reader: {e}"
            ))
        })
}

/// What the instance holding a partition knows of a user.
enum Local {
    Found(Value),
    NotFound,
    /// Assigned here, still being restored.
    Restoring,
    /// Not assigned here.
    NotOwned,
}

impl Core {
    fn lookup_local(&self, p: i32, user_id: &str) -> Local {
        let st = self.lock();
        match st.owned.get(&p) {
            Some(owned) => match owned.users.get(user_id) {
                Some(user) => Local::Found(crate::explain::lead_view(&self.engine, user_id, user)),
                None => Local::NotFound,
            },
            None if self.health.partition(p).is_some() => Local::Restoring,
            None => Local::NotOwned,
        }
    }
}

fn answer(result: LookupResult, status: StatusCode, body: Value) -> Response {
    metrics::counter!(t::LOOKUPS, "result" => result.as_str()).increment(1);
    let mut r = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn unavailable(message: String) -> Response {
    answer(
        LookupResult::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "error": message }),
    )
}

/// `GET /v1/leads?user_id={user_id}`: the query form of [`handle_path`], for the ids a URL
/// path cannot carry: `.` and `..` are dot segments, which URL parsers (the `url` crate,
/// browsers) remove, percent-encoded or not, so `/v1/leads/..` would ask for `/v1/leads`.
async fn handle_query(
    State(lookup): State<Arc<Lookup>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    handle(lookup, query_user_id(query.as_deref()), headers).await
}

/// The `user_id` of a query string, its bytes percent-decoded (`+` a space) and then read as
/// UTF-8, strictly: a form decoder's lossy reading turned `%FF` into U+FFFD and answered for
/// that lead (an outside check).
fn query_user_id(query: Option<&str>) -> Result<String, String> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "user_id" {
            continue;
        }
        if found.is_some() {
            return Err("give user_id once".to_string());
        }
        let mut bytes = Vec::with_capacity(value.len());
        let mut rest = value.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            rest = tail;
            match b {
                b'+' => bytes.push(b' '),
                b'%' => {
                    let hex = rest
                        .get(..2)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or("user_id has a % not followed by two hex digits")?;
                    bytes.push(hex);
                    rest = &rest[2..];
                }
                b => bytes.push(b),
            }
        }
        found = Some(
            String::from_utf8(bytes)
                .map_err(|_| "user_id is not UTF-8 once percent-decoded".to_string())?,
        );
    }
    found.ok_or_else(|| {
        "give the user id in the path, /v1/leads/{user_id} (percent-encoded), or as \
         /v1/leads?user_id={user_id}"
            .to_string()
    })
}

/// `GET /v1/leads/{user_id}`.
async fn handle_path(
    State(lookup): State<Arc<Lookup>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let user_id = path
        .map(|Path(u)| u)
        .map_err(|e| format!("the user id in the path cannot be read: {}", e.body_text()));
    handle(lookup, user_id, headers).await
}

/// A lookup of `user_id` (or of an id that could not be read, answered 400 once the caller
/// is authorized).
async fn handle(
    lookup: Arc<Lookup>,
    user_id: Result<String, String>,
    headers: HeaderMap,
) -> Response {
    if !lookup.enabled {
        return answer(
            LookupResult::Refused,
            StatusCode::FORBIDDEN,
            json!({"error": "lead lookup is off on this instance: set admin.lookup = true (it shows personal data; see docs/operations.md)"}),
        );
    }
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        // Which one counts would be the server's guess (an outside check: the first won); the
        // ingest API refuses them the same way.
        return answer(
            LookupResult::BadRequest,
            StatusCode::BAD_REQUEST,
            json!({"error": "more than one Authorization header: send one"}),
        );
    }
    let auth = headers.get(header::AUTHORIZATION);
    if !lookup.tokens.is_empty() {
        let given = auth.and_then(|v| v.to_str().ok()).and_then(bearer_token);
        let ok = given.is_some_and(|g| {
            lookup.tokens.iter().fold(false, |any, t| {
                constant_time_eq(t.as_bytes(), g.as_bytes()) | any
            })
        });
        if !ok {
            return answer(
                LookupResult::Refused,
                StatusCode::UNAUTHORIZED,
                json!({"error": "lookups need Authorization: Bearer <token> with a token from admin.token_file"}),
            );
        }
    }
    let user_id = match user_id {
        Ok(u) => u,
        Err(message) => {
            return answer(
                LookupResult::BadRequest,
                StatusCode::BAD_REQUEST,
                json!({ "error": message }),
            )
        }
    };
    if let Some(bound) = user_id_out_of_bounds(&user_id) {
        return answer(
            LookupResult::BadRequest,
            StatusCode::BAD_REQUEST,
            json!({ "error": bound }),
        );
    }
    let Some(core) = lookup.core.get().and_then(std::sync::Weak::upgrade) else {
        return unavailable("the scorer is starting".into());
    };
    let p = partition_for(user_id.as_bytes(), core.input_partitions);
    let local = {
        let (core, user_id) = (core.clone(), user_id.clone());
        crate::runtime::blocking::blocking(move || core.lookup_local(p, &user_id)).await
    };
    let me = lookup.me.get();
    match local {
        Local::Found(mut view) => {
            view["partition"] = p.into();
            view["owner"] = me.map_or(Value::Null, |m| m.name.clone().into());
            view["owner_url"] = me.map_or(Value::Null, |m| m.url.clone().into());
            answer(LookupResult::Found, StatusCode::OK, view)
        }
        Local::NotFound => answer(
            LookupResult::NotFound,
            StatusCode::NOT_FOUND,
            json!({"error": format!("no lead {user_id:?}: no event for this user was scored"), "partition": p}),
        ),
        Local::Restoring => {
            unavailable(format!("partition {p} is being restored on this instance"))
        }
        Local::NotOwned if headers.contains_key(FORWARDED_HEADER) => unavailable(format!(
            "partition {p} moved away from this instance (rebalancing)"
        )),
        Local::NotOwned => {
            let owner = lookup
                .directory
                .owner(p)
                .filter(|u| me.is_none_or(|m| &m.url != u));
            match owner {
                Some(url) => forward(&lookup.client, &url, &user_id, auth).await,
                None => unavailable(format!(
                    "no instance owns partition {p} right now (rebalancing or starting)"
                )),
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's case does not matter
/// (RFC 9110, 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("Bearer").then(|| token.trim())
}

/// The lookup URL of `user_id` under `base` (an instance's admin URL): `/v1/leads/{user_id}`,
/// percent-encoded, or for `.` and `..`, which a path cannot carry (dot segments are removed),
/// `/v1/leads?user_id=...`. `None` if `base` cannot take a path (`mailto:` and the like).
///
/// Every byte of the id but the unreserved ones (RFC 3986: letters, digits, `-._~`) is
/// encoded here, before the URL parser sees it: the parser drops tabs and line breaks from
/// what it is given, so `dup\tid` pushed as a segment asked for `dupid` (an outside check).
pub fn lead_url(mut base: reqwest::Url, user_id: &str) -> Option<reqwest::Url> {
    if base.cannot_be_a_base() {
        return None;
    }
    let dots = user_id == "." || user_id == "..";
    let mut path = base.path().trim_end_matches('/').to_string();
    path.push_str("/v1/leads");
    if !dots {
        path.push('/');
        for b in user_id.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                path.push(char::from(b));
            } else {
                let _ = write!(path, "%{b:02X}");
            }
        }
    }
    base.set_path(&path);
    base.set_query(None);
    if dots {
        base.query_pairs_mut().append_pair("user_id", user_id);
    }
    Some(base)
}

/// Asks the owner at `base` and relays its answer (status, body, `Retry-After`).
async fn forward(
    client: &reqwest::Client,
    base: &str,
    user_id: &str,
    auth: Option<&HeaderValue>,
) -> Response {
    let Some(url) = reqwest::Url::parse(base)
        .ok()
        .and_then(|base| lead_url(base, user_id))
    else {
        return unavailable(format!("the owner's advertised URL {base:?} is not a URL"));
    };
    let mut request = client.get(url).header(FORWARDED_HEADER, "1");
    if let Some(a) = auth {
        request = request.header(header::AUTHORIZATION, a.clone());
    }
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => return unavailable(format!("the owner at {base} did not answer: {e}")),
    };
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(c)) if body.len() + c.len() <= MAX_VIEW_BYTES => body.extend_from_slice(&c),
            Ok(Some(_)) => {
                return unavailable(format!(
                    "the owner at {base} answered more than {MAX_VIEW_BYTES} bytes"
                ))
            }
            Ok(None) => break,
            Err(e) => return unavailable(format!("the owner at {base} broke off: {e}")),
        }
    }
    if status == StatusCode::OK {
        // The owner is named by a record of the instances topic: an answer for another user
        // (a wrong or forged claim) is never relayed as this lead's.
        let answered = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("user_id")
                    .and_then(|u| u.as_str())
                    .map(str::to_string)
            });
        if answered.as_deref() != Some(user_id) {
            return unavailable(format!(
                "the owner at {base} answered for another user ({}), not this one: only \
                 leadscore's scorers may write to the instances topic (docs/operations.md)",
                answered.map_or_else(|| "no user_id".to_string(), |u| format!("{u:?}"))
            ));
        }
    }
    metrics::counter!(t::LOOKUPS, "result" => LookupResult::Forwarded.as_str()).increment(1);
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One HTTP answer to the first request on a local port, for [`forward`]: its URL.
    async fn answering(body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 4096];
            let _ = socket.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        });
        url
    }

    /// Found by an outside check: a record written to the instances topic by anyone could
    /// name a server whose answer (another user's, or made up) was relayed as the lead's.
    /// An answer for another user is now a 503 that says why; one for this user is relayed.
    #[tokio::test]
    async fn an_owners_answer_for_another_user_is_not_relayed() {
        let client = reqwest::Client::new();
        let relayed = |answer: &'static str| {
            let client = client.clone();
            async move {
                let owner = answering(answer).await;
                let r = forward(&client, &owner, "alice", None).await;
                let status = r.status();
                let body = axum::body::to_bytes(r.into_body(), 1 << 16)
                    .await
                    .expect("body");
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (status, text) = relayed(r#"{"user_id":"x","score":999999}"#).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("another user"), "{text}");
        let (status, text) = relayed(r#"{"user_id":"alice","score":3}"#).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, r#"{"user_id":"alice","score":3}"#);
    }

    /// `.` and `..` go in the query: in a path the URL parser removes them (before, both
    /// became a request for `/v1/leads`); every other id is one percent-encoded segment that
    /// reads back as itself.
    #[test]
    fn a_lead_url_carries_every_user_id_dots_included() {
        let base = reqwest::Url::parse("http://scorer-0:9464/").expect("a URL");
        for id in [".", ".."] {
            let url = lead_url(base.clone(), id).expect("a lead URL");
            assert_eq!(url.path(), "/v1/leads", "{id}");
            let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            assert_eq!(pairs, [("user_id".to_string(), id.to_string())], "{url}");
        }
        for id in [
            "u1",
            "a/b",
            "...",
            "./x",
            "x/..",
            "%2e%2e",
            "q?x#y",
            "100%",
            " lead",
            "ü",
            // The URL parser drops tabs and line breaks from what it parses (an outside
            // check: `dup\tid` was asked as `dupid`, a forwarded lookup got the wrong lead).
            "dup\tid",
            "a\nb\rc",
            "\t",
            "x\u{0}y\u{7f}",
        ] {
            let url = lead_url(base.clone(), id).expect("a lead URL");
            let segments: Vec<&str> = url.path_segments().expect("a path").collect();
            assert_eq!(segments.len(), 3, "{id}: {url}");
            let decoded = percent_decode(segments[2]);
            assert_eq!(
                (segments[..2].to_vec(), decoded.as_str()),
                (vec!["v1", "leads"], id)
            );
            assert_eq!(url.query(), None, "{url}");
        }
        // A base with a path keeps it.
        let under = reqwest::Url::parse("http://h/admin").expect("a URL");
        assert_eq!(
            lead_url(under, "..").expect("a URL").as_str(),
            "http://h/admin/v1/leads?user_id=.."
        );
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("UTF-8")
    }

    /// Found by an outside review: a producer could make a lead whose view was larger than
    /// the 1 MiB that forwarding and `leadscore lookup` read, so it could not be looked up
    /// (a 503 through another instance, an error from the command). The largest view events
    /// can make, at the largest explain depth, fits the bound with room to spare.
    #[test]
    fn the_largest_view_a_producer_can_make_fits_the_bound() {
        use crate::codec::{decode_event, Format, Limits};
        use crate::event::Origin;
        let rules = crate::rules::parse_str(crate::rules::Rules::SEED_CANVAS, "seed")
            .expect("the seed canvas");
        let engine =
            crate::engine::Engine::new(rules).with_explain_depth(crate::config::MAX_EXPLAIN_DEPTH);
        let control = |n: usize| "\\u0001".repeat(n);
        let mut lines: Vec<String> = (0..7)
            .map(|i| {
                format!(
                    r#"{{"user_id":"w","time":"2026-01-01T00:00:00Z","type":"attribute_changed","name":"a{i}","value":"{}"}}"#,
                    control(9_000)
                )
            })
            .collect();
        for i in 0..1_000 {
            lines.push(format!(
                r#"{{"user_id":"w","time":"2026-01-01T{:02}:{:02}:{:02}Z","event_id":"{}{i:04}","type":"external_score","score":{}}}"#,
                1 + i / 3600,
                i / 60 % 60,
                i % 60,
                control(124),
                i + 1
            ));
        }
        let mut st = crate::state::UserState::default();
        let mut out = Vec::new();
        for (offset, line) in lines.iter().enumerate() {
            let ev = decode_event(
                Format::Json,
                Some(b"w"),
                line.as_bytes(),
                &Limits::default(),
            )
            .expect("a valid event");
            let origin = Origin {
                topic: "t",
                partition: 0,
                offset: offset as i64,
            };
            engine.apply(&mut st, &ev, origin, ev.time, &mut out);
        }
        assert_eq!(st.history.len(), crate::config::MAX_EXPLAIN_DEPTH);
        assert_eq!(st.attributes().len(), 7, "every attribute within the bound");
        let mut view = crate::explain::lead_view(&engine, "w", &st);
        view["partition"] = json!(0);
        view["owner"] = json!("http://scorer-0:9464");
        let bytes = serde_json::to_vec(&view).expect("JSON").len();
        assert!(bytes > 1 << 20, "{bytes}: not the largest view");
        assert!(
            bytes <= MAX_VIEW_BYTES / 2,
            "{bytes} against {MAX_VIEW_BYTES}"
        );
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "  Bearer   t0k  "] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value:?}");
        }
        for value in ["Basic t0k", "Bearert0k", "t0k", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_later_claim_wins_and_a_tombstone_releases_only_its_own_partitions() {
        let d = Directory::default();
        d.apply(
            "http://a:1",
            Some(&json!({"name": "a", "partitions": [0, 1, 2]})),
        );
        d.apply("http://b:1", Some(&json!({"name": "b", "partitions": [2]})));
        assert_eq!(d.owner(0).as_deref(), Some("http://a:1"));
        assert_eq!(d.owner(2).as_deref(), Some("http://b:1"));
        // a publishes again without 2: b keeps it.
        d.apply(
            "http://a:1",
            Some(&json!({"name": "a", "partitions": [0, 1]})),
        );
        assert_eq!(d.owner(2).as_deref(), Some("http://b:1"));
        // a leaves: its partitions have no owner; b's are untouched.
        d.apply("http://a:1", None);
        assert_eq!(d.owner(0), None);
        assert_eq!(d.owner(2).as_deref(), Some("http://b:1"));
        // An instance whose partitions were all claimed by others is forgotten.
        d.apply("http://d:1", Some(&json!({"name": "d", "partitions": [7]})));
        d.apply("http://e:1", Some(&json!({"name": "e", "partitions": [7]})));
        assert!(!lock_unpoisoned(&d.inner)
            .instances
            .contains_key("http://d:1"));
        // Garbage partitions are skipped, not fatal.
        d.apply(
            "http://c:1",
            Some(&json!({"partitions": ["x", -1, 1e20, 5]})),
        );
        assert_eq!(d.owner(5).as_deref(), Some("http://c:1"));
    }

    /// The query form reads the id's bytes as they were sent: `%FF` is not UTF-8 and is a
    /// 400, as in the path form. Before, it was decoded lossily and the lead whose id is
    /// U+FFFD answered (an outside check). `+` is a space, as forms write it.
    #[test]
    fn the_query_form_reads_an_id_exactly_or_not_at_all() {
        let id = |q: Option<&str>| query_user_id(q);
        assert_eq!(id(Some("user_id=a%2Fb")), Ok("a/b".to_string()));
        assert_eq!(id(Some("x=1&user_id=..")), Ok("..".to_string()));
        assert_eq!(id(Some("user_id=a+b%09c")), Ok("a b\tc".to_string()));
        assert_eq!(id(Some("user_id=%C3%BC")), Ok("ü".to_string()));
        for bad in [
            "user_id=%FF",
            "user_id=%C0%80",
            "user_id=%ZZ",
            "user_id=1%",
            "user_id=%+f",
        ] {
            let e = id(Some(bad)).unwrap_err();
            assert!(e.contains("user_id"), "{bad}: {e}");
        }
        assert!(id(Some("user_id=a&user_id=b"))
            .unwrap_err()
            .contains("once"));
        assert!(id(None).unwrap_err().contains("/v1/leads/{user_id}"));
        assert!(id(Some("uid=a"))
            .unwrap_err()
            .contains("/v1/leads/{user_id}"));
    }

    #[test]
    fn tokens_are_read_bounded_and_checked() {
        let dir = crate::dev::scratch::ScratchDir::new("lookup-tokens").unwrap();
        let f = dir.path().join("tokens");
        std::fs::write(
            &f,
            "# rotated monthly\nfirst-token-0123456789\n\n second-token-0123456789 \n",
        )
        .unwrap();
        assert_eq!(
            read_tokens(&f).unwrap(),
            vec!["first-token-0123456789", "second-token-0123456789"]
        );
        std::fs::write(&f, "short\n").unwrap();
        assert!(read_tokens(&f)
            .unwrap_err()
            .to_string()
            .contains("shorter than 16"));
        // A byte-order mark (an editor's UTF-8 "with BOM") or a non-ASCII character: a header
        // cannot carry it, so the token could never match (an outside check: accepted, then
        // every lookup answered 401).
        for bad in [
            "\u{feff}first-token-0123456789\n",
            "first-tökèn-0123456789\n",
            "first token with a space 0123\n",
        ] {
            std::fs::write(&f, bad).unwrap();
            let e = read_tokens(&f).unwrap_err().to_string();
            assert!(
                e.contains("token 1") && e.contains("visible ASCII"),
                "{bad:?}: {e}"
            );
        }
        std::fs::write(&f, "\n# nothing\n").unwrap();
        assert!(read_tokens(&f)
            .unwrap_err()
            .to_string()
            .contains("has no token"));
        let e = read_tokens(std::path::Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/zero"), "{e}");
        // A named pipe nobody writes to: an error at once, not a scorer that never starts.
        let pipe = f.with_extension("fifo");
        let _ = std::fs::remove_file(&pipe);
        let made = std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read_tokens(&pipe).unwrap_err().to_string();
        let _ = std::fs::remove_file(&pipe);
        assert!(e.contains("no writer"), "{e}");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
