//! The HTTP side of `leadscore ingest`: `POST /users/track` with Braze's authentication, limits
//! and answers.
//!
//! A request goes through, in order: the API key (401), the rate limit (429 with
//! `Retry-After`), the `Content-Type` (415 unless JSON or absent), the body size (413), the
//! body's arrival within `ingest.body_timeout` (408), the `Idempotency-Key` header (400), the
//! body itself (400 when it is refused whole or nothing in it is valid), room for its events
//! until Kafka acknowledges them (503 when none is given back in time), then Kafka (503 when a
//! record was not acknowledged in time). Authentication comes before the rate limit so that
//! callers without a key cannot spend the callers' allowance.
//!
//! Connections are served by [`crate::ops::serve`] rather than `axum::serve`, which sets no
//! timer and so leaves hyper's header-read timeout off: a client sending half its headers would
//! hold its connection for ever.

use super::braze::{self, errors_json, Array, Batch, IdBasis, Options};
use super::producer::{EventProducer, ProduceFailure};
use crate::codec::Format;
use crate::config::Secret;
use crate::ops::telemetry;
use crate::runtime::sync::lock_unpoisoned;
use crate::timestamp::{wall_clock_millis, Millis};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The statuses `/users/track` answers, for the requests counter's bounded label.
pub const STATUSES: &[&str] = &["201", "400", "401", "408", "413", "415", "429", "503"];

/// What every request needs.
pub struct App {
    pub keys: Vec<Secret>,
    pub score_attribute: String,
    pub max_body_bytes: usize,
    pub max_future_skew: Duration,
    /// The scorer's input format and its limit on an encoded event (`scorer.input_format`,
    /// `scorer.max_event_bytes`): a larger event is refused here rather than dead-lettered.
    pub format: Format,
    pub max_event_bytes: usize,
    pub body_timeout: Duration,
    pub produce_timeout: Duration,
    pub limiter: Mutex<TokenBucket>,
    pub producer: EventProducer,
    /// Names this process in request ids: host (or process id) and start time.
    pub instance: String,
    pub requests: AtomicU64,
    /// The request bodies' share of memory ([`ByteBudget::BODIES`]).
    pub bodies: ByteBudget,
    /// The share of the events not yet acknowledged ([`ByteBudget::EVENTS`]).
    pub events: ByteBudget,
}

/// Room in memory that requests share, counted in KiB: the request bodies held at once
/// ([`ByteBudget::BODIES`]) and the events they turn into while Kafka has not acknowledged
/// them ([`ByteBudget::EVENTS`]). A request takes its share before it holds the bytes and gives
/// it back once they are gone (a body once answered, events once Kafka has given every delivery
/// report); past the budget it waits for others, and is answered 503 if none gives room back
/// in time. Without them, 4,096 connections could each hold a body of up to
/// `ingest.max_body_bytes` (an outside check held 1.3 GB with 1,000 stalled uploads, five times
/// the ingest pod's memory limit), and 30 requests of 167 KB held 370 MB of events while the
/// broker was paused (another, 2026-12-07).
///
/// A budget is two pools. Shares of at most [`ByteBudget::SMALL_SHARE`] of the budget come from
/// a pool of their own, a quarter of the budget again, and the others from the budget itself:
/// a semaphore serves its waiters in order, so a small request in one pool with large ones
/// would wait behind every large one queued before it although room was free (a 1-attribute
/// request waited 0.3-3.1 s behind requests of 75 objects of 256 attributes, 37 s with a slow
/// broker; 32 stalled chunked uploads held every caller for `ingest.body_timeout`: an outside
/// check, 2026-12-07). So the whole of a budget is 1.25 times its size.
pub struct ByteBudget {
    large: Arc<tokio::sync::Semaphore>,
    small: Arc<tokio::sync::Semaphore>,
    size_kib: u32,
    small_kib: u32,
}

/// A request's share of a [`ByteBudget`], given back when dropped; owned, so that a task that
/// outlives the request (its events' delivery) can hold it.
pub type Room = tokio::sync::OwnedSemaphorePermit;

impl ByteBudget {
    /// 32 MiB of request bodies: hundreds of Braze requests of typical size at once, 32 of the
    /// largest; and 8 MiB more for bodies of at most 512 KiB.
    pub const BODIES: u64 = crate::config::MAX_BODY_BYTES as u64;
    /// 64 MiB of events in flight, by [`Batch::in_flight_bytes`]: a request of 75 objects of
    /// 256 attributes each is about 25 MiB of them (two at once), a typical request a few KiB
    /// (thousands at once); and 16 MiB more for requests of at most 1 MiB of them.
    pub const EVENTS: u64 = 64 << 20;
    /// The largest share, as a fraction of the budget (1/64), that the small requests' pool
    /// serves; that pool is a quarter of the budget.
    pub const SMALL_SHARE: u32 = 64;

    /// What a budget of `bytes` holds at most, its small requests' pool included.
    pub const fn held_at_most(bytes: u64) -> u64 {
        bytes + bytes / 4
    }

    pub fn new(bytes: u64) -> ByteBudget {
        let size_kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX >> 4);
        let small_pool = (size_kib / 4).max(1);
        ByteBudget {
            large: Arc::new(tokio::sync::Semaphore::new(size_kib as usize)),
            small: Arc::new(tokio::sync::Semaphore::new(small_pool as usize)),
            size_kib,
            small_kib: (size_kib / ByteBudget::SMALL_SHARE).min(small_pool),
        }
    }

    /// The pool `bytes` take room from and the KiB they take of it: the whole budget at most,
    /// so that a request larger than all of it still goes through, alone.
    fn share(&self, bytes: u64) -> (&Arc<tokio::sync::Semaphore>, u32) {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1))
            .unwrap_or(u32::MAX)
            .min(self.size_kib);
        if kib <= self.small_kib {
            (&self.small, kib)
        } else {
            (&self.large, kib)
        }
    }

    /// Reserves room for `bytes` (the whole budget at most), waiting until `deadline` for
    /// other requests to give theirs back; `None` when they did not in time.
    pub async fn reserve_until(&self, bytes: u64, deadline: tokio::time::Instant) -> Option<Room> {
        let (pool, kib) = self.share(bytes);
        tokio::time::timeout_at(deadline, pool.clone().acquire_many_owned(kib))
            .await
            .ok()?
            .ok()
    }

    /// Room for `bytes` if there is some now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Room> {
        let (pool, kib) = self.share(bytes);
        pool.clone().try_acquire_many_owned(kib).ok()
    }
}

/// Runs `work` (a request's events sent and every delivery report awaited) in a task of its own
/// that holds `room` until `work` is done, and says the outcome on the returned channel. The
/// request waits for it as long as it likes; a client that goes away drops the request's
/// future, but the Kafka client still holds its records until their reports come, and so does
/// the task their room (before, the room went with the request: rounds of 40 clients closing
/// after 1 s grew the process by 30 MB a round to 603 MB against a paused broker, an outside
/// check, 2026-12-07).
pub fn hold_until_done<T: Send + 'static>(
    room: Room,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tell, told) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let outcome = work.await;
        drop(room);
        // Nobody may be listening any more: the room is given back all the same.
        let _ = tell.send(outcome);
    });
    told
}

/// The API's routes.
pub fn router(app: Arc<App>) -> Router {
    crate::ops::serve::json_errors_in(
        Router::new()
            .route("/users/track", post(track))
            .with_state(app),
        "message",
    )
}

/// Compares `given` with every key in time that depends only on the lengths, never on where
/// the bytes first differ, so an attacker cannot find a key byte by byte from answer times.
pub fn key_matches(keys: &[Secret], given: &[u8]) -> bool {
    let mut found = 0u8;
    for key in keys {
        let key = key.expose().as_bytes();
        let mut diff = u8::from(key.len() != given.len());
        for (i, k) in key.iter().enumerate() {
            diff |= k ^ given.get(i).copied().unwrap_or(0);
        }
        found |= u8::from(diff == 0);
    }
    found == 1
}

/// A token bucket: `rate` tokens a second, holding at most one second's worth.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate.max(1)),
            tokens: f64::from(rate.max(1)),
            last: now,
        }
    }

    /// Takes a token at `now`, or says in how many whole seconds (at least 1) one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err((((1.0 - self.tokens) / self.rate).ceil() as u64).max(1))
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    metrics::counter!(telemetry::INGEST_REQUESTS, "status" => status.as_str().to_string())
        .increment(1);
    (status, Json(body)).into_response()
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    answer(status, json!({ "message": text.into() }))
}

/// A `503` saying `text`, with `Retry-After: 1`.
fn unavailable(text: impl Into<String>) -> Response {
    let mut response = message(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(1));
    response
}

async fn track(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let response = handle(&app, &headers, body).await;
    metrics::histogram!(telemetry::INGEST_REQUEST_SECONDS).record(started.elapsed().as_secs_f64());
    response
}

/// A 400 naming the first of `names` the request gives more than once, if any.
fn repeated(headers: &HeaderMap, names: &[&str]) -> Option<Response> {
    let name = names
        .iter()
        .find(|name| headers.get_all(**name).iter().count() > 1)?;
    Some(message(
        StatusCode::BAD_REQUEST,
        format!("the {name} header is given more than once: send it once"),
    ))
}

async fn handle(app: &App, headers: &HeaderMap, body: Body) -> Response {
    // Two keys: which one counts would be a guess (the first did, so a wrong key then the
    // right one was refused and the other way round accepted).
    if let Some(refused) = repeated(headers, &[header::AUTHORIZATION.as_str()]) {
        return refused;
    }
    // The scheme is case-insensitive (RFC 9110); the key is not.
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
        .map(|v| v[7..].trim_ascii());
    if !given.is_some_and(|key| key_matches(&app.keys, key)) {
        let mut response = message(
            StatusCode::UNAUTHORIZED,
            "unknown or missing REST API key: send Authorization: Bearer YOUR-REST-API-KEY",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if let Err(wait) = lock_unpoisoned(&app.limiter).take(Instant::now()) {
        let mut response = message(
            StatusCode::TOO_MANY_REQUESTS,
            format!("rate limited: retry after {wait}s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return response;
    }
    // A header the request must not repeat: which of two values would count is a guess.
    let once = [
        header::CONTENT_TYPE.as_str(),
        "content-encoding",
        "idempotency-key",
    ];
    if let Some(refused) = repeated(headers, &once) {
        return refused;
    }
    // A compressed body would be read as JSON and refused as "not JSON": name the encoding.
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = quoted(encoding);
        if !encoding.trim().eq_ignore_ascii_case("identity") {
            return message(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding {encoding:?} is not supported: send the body uncompressed"
                ),
            );
        }
    }
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        if !is_json(kind) {
            let kind = quoted(kind);
            return message(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type {kind:?} is not JSON in UTF-8: send Content-Type: \
                     application/json"
                ),
            );
        }
    }
    let too_large = || {
        message(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than {} bytes (ingest.max_body_bytes)",
                app.max_body_bytes
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body_bytes as u64) {
        return too_large();
    }
    // Room for the body first: at the budget, a request waits for others to finish, and is
    // answered 503 if none does in time. The wait and the read share one deadline, so that a
    // request holds its connection `ingest.body_timeout` at most for its body (it was that
    // twice: the wait, then the read), which the stop's bound counts on.
    let body_deadline = tokio::time::Instant::now() + app.body_timeout;
    let reserved = declared.unwrap_or(app.max_body_bytes as u64);
    let Some(_room) = app.bodies.reserve_until(reserved, body_deadline).await else {
        return unavailable(format!(
            "the ingest API holds as many request bodies as its memory allows ({} MiB at \
             once): retry",
            ByteBudget::held_at_most(ByteBudget::BODIES) >> 20
        ));
    };
    let read = axum::body::to_bytes(body, app.max_body_bytes);
    let bytes = match tokio::time::timeout_at(body_deadline, read).await {
        Ok(Ok(bytes)) => bytes,
        // Over the limit (a body sent without a length): 413. Anything else (the client went
        // away, a broken chunked encoding) is not a size: 400, so a client resends it as it
        // is rather than cutting it down.
        Ok(Err(e)) => {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            return message(
                StatusCode::BAD_REQUEST,
                format!("the body was cut off before its end: {e}"),
            );
        }
        Err(_) => {
            return message(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}s (ingest.body_timeout)",
                    app.body_timeout.as_secs_f64()
                ),
            )
        }
    };
    let idempotency_key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if braze::valid_idempotency_key(key) => Some(key),
        Some(_) => {
            return message(
                StatusCode::BAD_REQUEST,
                format!(
                    "Idempotency-Key must be 1 to {} printable ASCII characters",
                    braze::MAX_IDEMPOTENCY_KEY_BYTES
                ),
            )
        }
    };
    let received: Millis = wall_clock_millis();
    let request_id = format!(
        "{}-{}",
        app.instance,
        app.requests.fetch_add(1, Ordering::Relaxed)
    );
    let opts = Options {
        score_attribute: &app.score_attribute,
        received,
        max_future_skew_ms: i64::try_from(app.max_future_skew.as_millis()).unwrap_or(i64::MAX),
        format: app.format,
        max_event_bytes: app.max_event_bytes,
        ids: match idempotency_key {
            Some(key) => IdBasis::IdempotencyKey(key),
            None => IdBasis::Request(&request_id),
        },
    };
    let mut batch = match braze::translate(&bytes, &opts) {
        Ok(batch) => batch,
        Err(e) => return message(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if batch.nothing_valid() {
        count_objects(&batch);
        return answer(
            StatusCode::BAD_REQUEST,
            json!({
                "message": "no valid attributes, events or purchases in the request",
                "errors": errors_json(&batch.errors),
            }),
        );
    }
    // Room for the events until Kafka acknowledges them. Without room now, the request lets
    // its events go while it waits, so that waiting requests hold only their bodies (within
    // their own budget), and makes them again once it has room: the same body and options
    // give the same events, ids included. The wait and Kafka's acknowledgement share one
    // deadline, `ingest.produce_timeout` (it was that twice: the wait, then Kafka).
    let produce_deadline = tokio::time::Instant::now() + app.produce_timeout;
    let in_flight = batch.in_flight_bytes();
    let room = match app.events.try_reserve(in_flight) {
        Some(room) => room,
        None => {
            drop(batch);
            let Some(room) = app.events.reserve_until(in_flight, produce_deadline).await else {
                return unavailable(format!(
                    "the ingest API holds as many events waiting for Kafka as its memory \
                     allows ({} MiB at once): nothing of this request was stored; retry",
                    ByteBudget::held_at_most(ByteBudget::EVENTS) >> 20
                ));
            };
            // The same body and options, so the same events (a refusal cannot differ).
            batch = match braze::translate(&bytes, &opts) {
                Ok(batch) => batch,
                Err(e) => return message(StatusCode::BAD_REQUEST, e.to_string()),
            };
            room
        }
    };
    let events = std::mem::take(&mut batch.events);
    let produced = events.len();
    let producer = app.producer.clone();
    // The events and their room go to a task that outlives this request if the client leaves:
    // the room is given back only once the Kafka client has let go of every record.
    let delivery = hold_until_done(room, async move {
        let pending = producer.send_all(&events).await;
        // The Kafka client has its own copies of the records sent.
        drop(events);
        EventProducer::delivered(pending?).await
    });
    let outcome = match tokio::time::timeout_at(produce_deadline, delivery).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(ProduceFailure::Undelivered {
            failed: produced,
            total: produced,
            first: "the task producing them ended without an outcome".to_string(),
        }),
        Err(_) => Err(ProduceFailure::TimedOut(app.produce_timeout)),
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, events = produced, "events not acknowledged by Kafka");
        return unavailable(
            "Kafka did not acknowledge the events within ingest.produce_timeout: some or all \
             of them may still be stored; retry the request with the same Idempotency-Key \
             (without one, a retried attribute update can apply twice)",
        );
    }
    // Counted only once answered 201 or 400: a 503's objects were neither accepted nor refused,
    // and its retry counts them.
    count_objects(&batch);
    metrics::counter!(telemetry::INGEST_EVENTS).increment(produced as u64);
    answer(StatusCode::CREATED, batch.answer())
}

/// A header's value as an answer quotes it: at most 100 characters of it, since the header is
/// the caller's, of any length.
fn quoted(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes())
        .chars()
        .take(100)
        .collect()
}

/// Whether a `Content-Type` is JSON: `application/json` or a `+json` type, any parameters
/// (`charset=utf-8`). Braze documents only `application/json`; a form or text body is a
/// caller's mistake better named than parsed.
fn is_json(kind: &HeaderValue) -> bool {
    let Ok(kind) = kind.to_str() else {
        return false;
    };
    let media = kind.split(';').next().unwrap_or_default().trim();
    let Some((top, sub)) = media.split_once('/') else {
        return false;
    };
    let sub = sub.to_ascii_lowercase();
    // JSON is UTF-8 (RFC 8259); a body declared in another charset would be read as UTF-8
    // all the same, and refused as "not JSON" or its text altered.
    let other_charset = kind.split(';').skip(1).any(|parameter| {
        parameter.split_once('=').is_some_and(|(name, value)| {
            let value = value.trim().trim_matches('"');
            name.trim().eq_ignore_ascii_case("charset")
                && !(value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8"))
        })
    });
    top.eq_ignore_ascii_case("application")
        && (sub == "json" || sub.ends_with("+json"))
        && !other_charset
}

fn count_objects(batch: &Batch) {
    let accepted = [
        batch.attributes_processed,
        batch.events_processed,
        batch.purchases_processed,
    ];
    for (i, array) in Array::ALL.iter().enumerate() {
        let name = array.as_str();
        let refused = batch.objects[i].saturating_sub(accepted[i]);
        metrics::counter!(telemetry::INGEST_OBJECTS, "array" => name, "outcome" => "accepted")
            .increment(accepted[i] as u64);
        metrics::counter!(telemetry::INGEST_OBJECTS, "array" => name, "outcome" => "refused")
            .increment(refused as u64);
    }
}

/// This process's name in request ids: host (or process id) and start time.
pub fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string());
    format!("{host}-{}", wall_clock_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_only_itself_whatever_its_length() {
        let keys = vec![
            Secret::new("old-key-0123456789"),
            Secret::new("new-key-abcdefghij"),
        ];
        assert!(key_matches(&keys, b"old-key-0123456789"));
        assert!(key_matches(&keys, b"new-key-abcdefghij"));
        assert!(!key_matches(&keys, b"new-key-abcdefghi"));
        assert!(!key_matches(&keys, b"new-key-abcdefghijk"));
        assert!(!key_matches(&keys, b""));
        assert!(!key_matches(&[], b"anything"));
    }

    #[test]
    fn json_content_types_are_told_from_others() {
        let json = |kind: &str| is_json(&HeaderValue::from_str(kind).unwrap());
        for kind in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "application/json; charset=\"UTF-8\"",
            // `utf8` is a common alias (MySQL's name, many clients send it): refused with 415
            // before (an outside check).
            "application/json; charset=utf8",
            "application/json; charset=UTF8",
        ] {
            assert!(json(kind), "{kind}");
        }
        // Found by an outside check: read as UTF-8 whatever it said.
        assert!(!json("application/json; charset=iso-8859-1"));
        for kind in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json-ish",
            "json",
            "",
        ] {
            assert!(!json(kind), "{kind}");
        }
    }

    fn after(wait: Duration) -> tokio::time::Instant {
        tokio::time::Instant::now() + wait
    }

    /// Found by an outside check: stalled uploads held 1.3 GB. Bodies reserve their length
    /// from one budget; past it a request waits, and gets nothing if none is given back.
    #[tokio::test]
    async fn bodies_past_the_budget_wait_for_room_and_get_it_when_one_is_answered() {
        let budget = ByteBudget::new(3 << 20);
        let wait = Duration::from_millis(200);
        let first = budget
            .reserve_until(2 << 20, after(wait))
            .await
            .expect("room for 2 MiB");
        let second = budget
            .reserve_until(1 << 20, after(wait))
            .await
            .expect("room for 1 MiB more");
        assert!(
            budget.reserve_until(100 << 10, after(wait)).await.is_none(),
            "the budget is spent"
        );
        drop(second);
        assert!(
            budget.reserve_until(1 << 20, after(wait)).await.is_some(),
            "room given back"
        );
        // A length past the whole budget waits for all of it, never for ever.
        assert!(budget.reserve_until(u64::MAX, after(wait)).await.is_none());
        drop(first);
        assert!(budget.reserve_until(u64::MAX, after(wait)).await.is_some());
        // Room now or none: what a request tries before it lets its events go to wait.
        let all = budget
            .try_reserve(3 << 20)
            .expect("the whole budget is free");
        assert!(
            budget.try_reserve(100 << 10).is_none(),
            "no room while it is held"
        );
        drop(all);
        assert!(
            budget.try_reserve(u64::MAX).is_some(),
            "the whole budget again"
        );
    }

    /// Found by an outside check (2026-12-07): a semaphore serves its waiters in order, so a
    /// 1-attribute request waited behind large ones queued for room although room was free.
    /// Small shares have their own pool: they never queue behind a large one, and the pool is
    /// bounded too.
    #[tokio::test]
    async fn small_shares_are_served_while_large_ones_wait_for_room() {
        let budget = Arc::new(ByteBudget::new(ByteBudget::EVENTS));
        let held = budget.try_reserve(40 << 20).expect("room for 40 MiB");
        let queued = {
            let budget = budget.clone();
            tokio::spawn(async move {
                budget
                    .reserve_until(40 << 20, after(Duration::from_secs(30)))
                    .await
                    .is_some()
            })
        };
        // The large one is queued, and has taken what room there was toward its share.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(budget.try_reserve(2 << 20).is_none());
        let small = budget
            .try_reserve(1024)
            .expect("a small share is served at once while a large one waits");
        let mut smalls = vec![small];
        // A quarter of the budget again, in shares of 1/64 of it, and no more.
        for _ in 1..16 {
            smalls.push(budget.try_reserve(1 << 20).expect("a share of 1 MiB"));
        }
        assert_eq!(smalls.len(), 16);
        assert!(
            budget.try_reserve(1 << 20).is_none(),
            "the small pool is spent"
        );
        assert!(!queued.is_finished(), "the large one still waits");
        drop(held);
        assert!(queued.await.expect("the waiter"), "room given back");
    }

    /// Found by an outside check (2026-12-07): a client that went away gave its events' room
    /// back while the Kafka client still held its records. The room stays with the work (the
    /// records' delivery) until it is done, whoever still waits for it.
    #[tokio::test]
    async fn a_share_is_held_until_the_work_is_done_though_nobody_waits_for_it() {
        let budget = ByteBudget::new(8 << 20);
        let room = budget.try_reserve(8 << 20).expect("the whole budget");
        let (done, delivered) = tokio::sync::oneshot::channel::<()>();
        let told = hold_until_done(room, async move {
            let _ = delivered.await;
        });
        // The client went away: nobody waits for the outcome.
        drop(told);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            budget.try_reserve(1 << 20).is_none(),
            "the room is held while the records are"
        );
        done.send(()).expect("the work waits");
        assert!(
            budget
                .reserve_until(8 << 20, after(Duration::from_secs(5)))
                .await
                .is_some(),
            "the room is given back once the work is done"
        );
    }

    #[test]
    fn the_bucket_refuses_past_its_rate_and_refills_with_time() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2, t0);
        assert_eq!(bucket.take(t0), Ok(()));
        assert_eq!(bucket.take(t0), Ok(()));
        assert_eq!(bucket.take(t0), Err(1));
        assert_eq!(bucket.take(t0 + Duration::from_millis(500)), Ok(()));
        assert!(bucket.take(t0 + Duration::from_millis(500)).is_err());
        // Never more than one second's worth, however long it was idle.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(bucket.take(later), Ok(()));
        assert_eq!(bucket.take(later), Ok(()));
        assert!(bucket.take(later).is_err());
    }
}
