//! Braze's `users/track` request body, validated and turned into leadscore input events. Pure:
//! the receive time and the request's id basis come in as values.
//!
//! # The mapping (docs/ingest.md has it for users)
//!
//! - **attributes**: the score attribute (`ingest.score_attribute`, default `lead_score`) as an
//!   integer becomes an `external_score` event with `score`, as `{"inc": N}` one with
//!   `increment`; `email` becomes `email_added` (null: `attribute_changed` removing it); every
//!   other attribute with a scalar value (string, number, boolean, null) becomes
//!   `attribute_changed`. Braze attributes carry no time, so these events take the request's
//!   receive time. An attribute whose value is an array or an object other than the score's
//!   `inc` (Braze's array, nested and `$time` forms) is not supported: it is left out and
//!   reported in `errors`, the object's other attributes still go.
//! - **events**: `custom_event` with `name`, `time`, `app_id` and `properties` (scalar values;
//!   an event with a nested property is rejected whole, since a rule could match it
//!   differently without it).
//! - **purchases**: `custom_event` named [`PURCHASE_EVENT`] whose properties are `product_id`,
//!   `currency`, `price`, `quantity` and then the purchase's own `properties`.
//!
//! Within a request, attributes come first, then events, then purchases, each in array order,
//! so an event in the same request as an attribute update sees the updated attribute. Within
//! one attributes object, the score attribute goes last (the others in key order): the score
//! change then carries the status and attributes the same object set, as the handoff reads
//! them.
//!
//! # Refused here rather than dead-lettered later
//!
//! A caller answered 201 is never told again, so whatever the scorer would dead-letter is
//! refused in `errors` instead: a `time` more than `scorer.max_future_skew` ahead, and an event
//! whose encoding (in `scorer.input_format`) is over `scorer.max_event_bytes`. Braze's limits
//! per value still allow an event of about 130 KB (256 properties of 255-character names and
//! values).
//!
//! # Parsed strictly
//!
//! A key repeated in any object and an integer literal outside the 64-bit range anywhere refuse
//! the whole body ([`BodyError::RepeatedKey`], [`BodyError::IntegerOutOfRange`]): serde_json's
//! `Value` would keep the last value, or round the integer to a float, without a word.
//!
//! # Event ids
//!
//! Braze has no idempotency key, so a caller's retry would count twice. With an
//! `Idempotency-Key` header every event id is derived from the key, a digest of the body and
//! the object's place in the request, so a retry of the same request is a duplicate to the
//! scorer, and another body sent under a reused key is not mistaken for one. Without one, an
//! event or purchase id is derived from its content as produced (the same user, name, app,
//! time and property values are the same event, however the request spelled them), and an
//! attribute update's id is unique to the request (the same
//! `{"inc": 5}` sent twice on purpose must count twice).

use crate::codec::{decode_event, encode_event, Format, Limits};
use crate::event::{Event, EventType, Scalar, ScoreOp};
use crate::timestamp::{format_rfc3339, parse_rfc3339, Millis, MAX_MILLIS, MIN_MILLIS};
use serde::Serialize;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// Objects of each kind per request, as Braze documents.
pub const MAX_OBJECTS: usize = 75;

/// The custom event name a purchase becomes.
pub const PURCHASE_EVENT: &str = "purchase";

/// The longest `external_id`, attribute or property name, and string value accepted (Braze's
/// limit on custom attribute keys and string values is 255 characters).
pub const MAX_NAME_CHARS: usize = 255;

/// The longest `external_id` accepted, in bytes (Braze's limit is 512 characters).
pub const MAX_EXTERNAL_ID_BYTES: usize = 512;

/// The longest `Idempotency-Key` header accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// Properties per event at most.
pub const MAX_PROPERTIES: usize = 256;

/// Attributes per attributes object at most (each becomes an event: without a bound one 1 MiB
/// request of empty attributes made about 100,000 events for one user).
pub const MAX_ATTRIBUTES: usize = 256;

/// Errors an answer lists at most; the rest are counted in one last entry (a request of many
/// refused attributes had an answer 13 times its size).
pub const MAX_ERRORS_LISTED: usize = 100;

/// The three arrays of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Array {
    Attributes,
    Events,
    Purchases,
}

impl Array {
    pub const ALL: [Array; 3] = [Array::Attributes, Array::Events, Array::Purchases];

    pub fn as_str(self) -> &'static str {
        match self {
            Array::Attributes => "attributes",
            Array::Events => "events",
            Array::Purchases => "purchases",
        }
    }
}

/// One object's problem, answered in `errors` as Braze does: `{"type": message,
/// "input_array": "events", "index": 3}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectError {
    #[serde(rename = "type")]
    pub message: String,
    pub input_array: Array,
    pub index: usize,
}

/// A request the whole of which is refused (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not JSON: {0}")]
    Malformed(String),
    #[error("the body must be a JSON object with attributes, events or purchases arrays")]
    NotObject,
    #[error("'{0}' must be an array")]
    NotArray(&'static str),
    #[error("'{array}' has {count} objects; at most {MAX_OBJECTS} are allowed per request")]
    TooMany { array: &'static str, count: usize },
    #[error(
        "the request has no attributes, events or purchases (its arrays are missing or empty)"
    )]
    Nothing,
    /// A key twice in one object: serde_json would keep the last value, the scorer's own
    /// decoder refuses such an event, and a guess could lose an array of events or score
    /// another user.
    #[error(
        "the key {key} appears more than once in {place}; which of its values counts would be a \
         guess, so the body is refused"
    )]
    RepeatedKey { key: String, place: String },
    /// An integer literal no 64-bit integer holds: serde_json would turn it into the nearest
    /// float (a score of -2^63 - 1 into -2^63), altering it without a word.
    #[error(
        "{place}: the integer {literal} is outside the 64-bit range \
         (-9223372036854775808 to 9223372036854775807)"
    )]
    IntegerOutOfRange { literal: String, place: String },
    /// A non-zero number literal too small for a 64-bit float (`1e-400`), which a parser reads
    /// as 0: a score or property altered without a word.
    #[error("{place}: the number {literal} is too small for a 64-bit float and would read as 0")]
    NumberUnderflow { literal: String, place: String },
    /// More values and keys than any request within the limits holds (see
    /// [`strict::MAX_VALUES`]): refused before they are all held.
    #[error(
        "the body holds more than {max} JSON values and keys; a request within the limits \
         (75 objects per array, 256 attributes or properties each) holds far fewer"
    )]
    TooManyValues { max: usize },
}

/// How this request's event ids are made (see the module doc).
#[derive(Clone, Copy, Debug)]
pub enum IdBasis<'a> {
    /// The caller's `Idempotency-Key` header ([`translate`] adds the body's digest to it).
    IdempotencyKey(&'a str),
    /// No key: an id unique to this request (for attribute updates).
    Request(&'a str),
}

/// What the translation needs besides the body.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    pub score_attribute: &'a str,
    /// When the request arrived: the time of attribute events.
    pub received: Millis,
    /// An event or purchase `time` further ahead of `received` than this is refused, as the
    /// scorer would dead-letter it (`scorer.max_future_skew`).
    pub max_future_skew_ms: i64,
    /// The input topic's format and the largest encoded event the scorer accepts
    /// (`scorer.input_format`, `scorer.max_event_bytes`): a larger event is refused, as the
    /// scorer would dead-letter it as `oversized`.
    pub format: Format,
    pub max_event_bytes: usize,
    pub ids: IdBasis<'a>,
}

/// A request translated: the events to produce, in order, and the answer's counts.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub attributes_processed: usize,
    pub events_processed: usize,
    pub purchases_processed: usize,
    pub errors: Vec<ObjectError>,
    /// Which arrays the request had (an absent array is left out of the answer, as Braze does).
    pub present: [bool; 3],
    /// Objects in each array.
    pub objects: [usize; 3],
}

impl Batch {
    /// Whether nothing in the request was valid: answered 400.
    pub fn nothing_valid(&self) -> bool {
        self.attributes_processed + self.events_processed + self.purchases_processed == 0
    }

    /// What the batch's events take in memory until Kafka acknowledges them, an estimate
    /// from measurement that errs high: each event's fields as held here, the Kafka client's
    /// copy of its record (about as long again: the encoding adds the field names and the user
    /// id), [`PER_EVENT_BYTES`] for the structures around each, and [`PER_PROPERTY_BYTES`] for
    /// those around each property. The ingest API reserves it before it produces
    /// ([`crate::ingest::server::ByteBudget::EVENTS`]).
    pub fn in_flight_bytes(&self) -> u64 {
        self.events
            .iter()
            .map(|event| {
                2 * field_bytes(event)
                    + PER_EVENT_BYTES
                    + PER_PROPERTY_BYTES * event.properties.len() as u64
            })
            .sum()
    }

    /// The answer's body: Braze's success shape, with `errors` when some objects were refused.
    pub fn answer(&self) -> Value {
        let mut body = Map::new();
        body.insert("message".into(), Value::from("success"));
        let counts = [
            self.attributes_processed,
            self.events_processed,
            self.purchases_processed,
        ];
        for (i, array) in Array::ALL.iter().enumerate() {
            if self.present[i] {
                let key = format!("{}_processed", array.as_str());
                body.insert(key, Value::from(counts[i]));
            }
        }
        if !self.errors.is_empty() {
            body.insert("errors".into(), errors_json(&self.errors));
        }
        Value::Object(body)
    }
}

/// [`Batch::in_flight_bytes`]' allowance per event besides its fields, measured: a request of
/// 75 objects of 256 attributes (19,200 events of about 170 bytes encoded) took the process
/// 25 MiB further until it was acknowledged, about 1,340 bytes per event (the event itself, the
/// Kafka client's message with its copies of key and payload, the delivery report's channel,
/// and the allocators' rounding); the estimate gives it about 1,560, 30 MiB for that request.
const PER_EVENT_BYTES: u64 = 1280;

/// [`Batch::in_flight_bytes`]' allowance per property besides its name's and value's bytes:
/// the name's `String` and its allocation (32 bytes at least, however short the name), the
/// value's `Scalar`, the slot in the event's `Vec` (grown by doubling), the property's JSON text
/// in the Kafka client's copy, and the parsed body's entry while the request is translated.
/// Measured: a request of 75 events and 75 purchases of 256 properties each, one or two letters
/// named and "" valued (38,400 properties from a body of 312 KB), took the process 13 MiB
/// further on its own and about 5 MB each for 40 at once; the estimate counted 0.9 MiB for it
/// before, 40 at once took the process to 211 MB (an outside check, 2026-12-07); it is 8.3 MiB
/// now.
const PER_PROPERTY_BYTES: u64 = 192;

/// The bytes of an event's variable fields, and its user id's (which its record's key and
/// encoding each hold again, though the events of an object share one copy here).
fn field_bytes(event: &Event) -> u64 {
    let value_bytes = |value: &Scalar| match value {
        Scalar::Str(s) => s.len(),
        _ => 24,
    };
    let properties: usize = event
        .properties
        .iter()
        .map(|(name, value)| name.len() + value_bytes(value) + 8)
        .sum();
    let text = event.user_id.len()
        + event.event_id.as_ref().map_or(0, |id| id.len())
        + event.name.as_ref().map_or(0, String::len)
        + event.app_id.as_ref().map_or(0, String::len)
        + event.value.as_ref().map_or(0, value_bytes)
        + properties;
    text as u64 + 64
}

/// `errors` as JSON.
///
/// At most [`MAX_ERRORS_LISTED`] are listed; past them one more entry, placed at the first one
/// left out, says how many more there are.
pub fn errors_json(errors: &[ObjectError]) -> Value {
    let listed = &errors[..errors.len().min(MAX_ERRORS_LISTED)];
    let mut json = serde_json::to_value(listed).unwrap_or(Value::Null);
    if let (Some(first_left), Value::Array(items)) = (errors.get(MAX_ERRORS_LISTED), &mut json) {
        let more = ObjectError {
            message: format!(
                "{} more errors not listed (an answer lists {MAX_ERRORS_LISTED})",
                errors.len() - MAX_ERRORS_LISTED
            ),
            input_array: first_left.input_array,
            index: first_left.index,
        };
        items.push(serde_json::to_value(more).unwrap_or(Value::Null));
    }
    json
}

/// Whether `key` may be an `Idempotency-Key`: 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] printable
/// ASCII characters, since it becomes part of event ids.
pub fn valid_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Translates a `users/track` body. `Err` refuses the whole request; `Ok` may still hold
/// nothing valid (see [`Batch::nothing_valid`]), with every object's error.
pub fn translate(body: &[u8], opts: &Options<'_>) -> Result<Batch, BodyError> {
    let value = strict::parse(body)?;
    // With a key, the ids also carry a digest of the body: a retry (the same JSON, whatever its
    // spacing or key order, serde_json's map being sorted) has the same ids and is dropped as
    // a duplicate; another body under a reused key has other ids, so it is never dropped as
    // the first one's copy.
    let keyed;
    let opts = &match opts.ids {
        IdBasis::IdempotencyKey(key) => {
            let digest = fnv1a_128(value.to_string().as_bytes());
            keyed = format!("{key}:{digest:032x}");
            Options {
                ids: IdBasis::IdempotencyKey(&keyed),
                ..*opts
            }
        }
        IdBasis::Request(_) => *opts,
    };
    let Value::Object(mut top) = value else {
        return Err(BodyError::NotObject);
    };
    let mut arrays: [Vec<Value>; 3] = Default::default();
    let mut batch = Batch::default();
    for (i, array) in Array::ALL.iter().enumerate() {
        match top.remove(array.as_str()) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                if items.len() > MAX_OBJECTS {
                    return Err(BodyError::TooMany {
                        array: array.as_str(),
                        count: items.len(),
                    });
                }
                batch.present[i] = true;
                batch.objects[i] = items.len();
                arrays[i] = items;
            }
            Some(_) => return Err(BodyError::NotArray(array.as_str())),
        }
    }
    // No array, or only empty ones: said as such, not as "no valid object" with an empty
    // list of errors (an outside check).
    if batch.objects.iter().sum::<usize>() == 0 {
        return Err(BodyError::Nothing);
    }
    let [attributes, events, purchases] = arrays;
    for (index, object) in attributes.iter().enumerate() {
        let mut errors = Vec::new();
        match attribute_events(object, index, opts, &mut errors) {
            // Nothing produced: the object is refused, or the answer would count as processed
            // an object of which nothing was stored. With no attribute at all, say so.
            Ok(produced) if produced.is_empty() => {
                if errors.is_empty() {
                    errors
                        .push("the object has no attribute to update besides 'external_id'".into());
                }
            }
            Ok(mut produced) => {
                batch.attributes_processed += 1;
                batch.events.append(&mut produced);
            }
            Err(message) => errors.insert(0, message),
        }
        batch
            .errors
            .extend(errors.into_iter().map(|message| ObjectError {
                message,
                input_array: Array::Attributes,
                index,
            }));
    }
    for (array, items) in [(Array::Events, events), (Array::Purchases, purchases)] {
        // Content ids already given in this array, and how often.
        let mut given: HashMap<String, usize> = HashMap::new();
        for (index, object) in items.iter().enumerate() {
            let result = match array {
                Array::Purchases => purchase_event(object, index, opts),
                _ => custom_event(object, index, opts),
            }
            .map(|mut event| {
                number_repeats(&mut event, &mut given, opts);
                event
            })
            .and_then(|event| check_size(&event, opts).map(|()| event));
            match result {
                Ok(event) => {
                    batch.events.push(event);
                    match array {
                        Array::Purchases => batch.purchases_processed += 1,
                        _ => batch.events_processed += 1,
                    }
                }
                Err(message) => batch.errors.push(ObjectError {
                    message,
                    input_array: array,
                    index,
                }),
            }
        }
    }
    Ok(batch)
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

/// Identifier fields Braze accepts in place of `external_id`.
const OTHER_IDENTIFIERS: &[&str] = &["braze_id", "user_alias", "phone"];
/// Those of them that beside `external_id` are still identifiers, not attributes (`phone` is
/// then the user's phone attribute).
const IDENTIFIERS_ONLY: &[&str] = &["braze_id", "user_alias"];

/// The object's user id: its `external_id`.
fn external_id(object: &Map<String, Value>) -> Result<String, String> {
    match object.get("external_id") {
        Some(Value::String(id)) if id.is_empty() => Err("'external_id' must not be empty".into()),
        Some(Value::String(id)) if id.len() > MAX_EXTERNAL_ID_BYTES => Err(format!(
            "'external_id' is longer than {MAX_EXTERNAL_ID_BYTES} bytes"
        )),
        Some(Value::String(id)) => Ok(id.clone()),
        Some(_) => Err("'external_id' must be a string".into()),
        None => {
            let other = OTHER_IDENTIFIERS
                .iter()
                .find(|k| object.contains_key(**k))
                .copied()
                .or_else(|| (object.contains_key("email")).then_some("email"));
            Err(match other {
                Some(k) => format!(
                    "'{k}' identifies the user, but only 'external_id' is supported here \
                     (leadscore keys every event by external_id)"
                ),
                None => "'external_id' is required".into(),
            })
        }
    }
}

fn as_object(object: &Value) -> Result<&Map<String, Value>, String> {
    object
        .as_object()
        .ok_or_else(|| "must be a JSON object".to_string())
}

/// A JSON scalar as an event value; `None` for arrays and objects. `null` is `Some(None)`.
fn scalar(value: &Value) -> Option<Option<Scalar>> {
    match value {
        Value::Null => Some(None),
        Value::Bool(b) => Some(Some(Scalar::Bool(*b))),
        Value::Number(n) => Some(Some(match n.as_i64() {
            Some(i) => Scalar::Int(i),
            None => Scalar::Float(n.as_f64()?),
        })),
        Value::String(s) => Some(Some(Scalar::Str(s.clone()))),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("{what} is longer than {MAX_NAME_CHARS} characters"));
    }
    Ok(())
}

fn check_string_value(what: &str, value: &Option<Scalar>) -> Result<(), String> {
    match value {
        Some(Scalar::Str(s)) if s.chars().count() > MAX_NAME_CHARS => Err(format!(
            "{what}: a string value is at most {MAX_NAME_CHARS} characters"
        )),
        _ => Ok(()),
    }
}

/// Keys of an attribute object that are not attributes.
const ATTRIBUTE_CONTROL_KEYS: &[&str] =
    &["external_id", "_update_existing_only", "push_token_import"];

/// One attributes object: its events, or why none. Unsupported attribute values are left out
/// with their message pushed to `errors`.
fn attribute_events(
    object: &Value,
    index: usize,
    opts: &Options<'_>,
    errors: &mut Vec<String>,
) -> Result<Vec<Event>, String> {
    let object = as_object(object)?;
    let user = external_id(object)?;
    let attributes = object
        .keys()
        .filter(|k| !ATTRIBUTE_CONTROL_KEYS.contains(&k.as_str()))
        .count();
    if attributes > MAX_ATTRIBUTES {
        return Err(format!(
            "the object has {attributes} attributes; at most {MAX_ATTRIBUTES}"
        ));
    }
    let mut events = Vec::new();
    // The score last, the others in key order: the score change then carries the attributes
    // this object set (a status set with the score is the status the score is handed off
    // with). Ids name the attribute, not its place, so they do not depend on this order.
    let score = opts.score_attribute;
    let others = object.iter().filter(|(name, _)| name.as_str() != score);
    for (name, value) in others.chain(object.get_key_value(score)) {
        if ATTRIBUTE_CONTROL_KEYS.contains(&name.as_str()) {
            continue;
        }
        // Another identifier beside `external_id` identifies, it is not an attribute of the
        // user (it became an attribute named `braze_id`); reported, the rest of the object goes.
        if IDENTIFIERS_ONLY.contains(&name.as_str()) {
            errors.push(format!(
                "'{name}' is an identifier, not an attribute: it was not stored (leadscore \
                 identifies users by 'external_id' only)"
            ));
            continue;
        }
        let id = match opts.ids {
            IdBasis::IdempotencyKey(key) => format!("braze:{key}:attributes:{index}:{name}"),
            IdBasis::Request(request) => format!("braze:{request}:attributes:{index}:{name}"),
        };
        let event = attribute_event(&user, name, value, opts).and_then(|mut event| {
            event.event_id = Some(id.into());
            check_size(&event, opts)
                .map(|()| event)
                .map_err(|e| format!("'{name}': {e}"))
        });
        match event {
            Ok(event) => events.push(event),
            Err(message) => errors.push(message),
        }
    }
    Ok(events)
}

/// One attribute of an attributes object as an event.
fn attribute_event(
    user: &str,
    name: &str,
    value: &Value,
    opts: &Options<'_>,
) -> Result<Event, String> {
    check_name("an attribute name", name)?;
    if name == opts.score_attribute {
        let op = match value {
            Value::Number(n) => integer(n).map(ScoreOp::Set),
            Value::Object(inc) if inc.len() == 1 => match inc.get("inc") {
                Some(Value::Number(n)) => integer(n).map(ScoreOp::Increment),
                _ => Err(NotInteger::Fraction),
            },
            // Braze's null removes an attribute; a lead always has a score.
            Value::Null => {
                return Err(format!(
                    "'{name}' (the score) cannot be removed with null; \
                     send an integer or {{\"inc\": integer}}"
                ))
            }
            _ => Err(NotInteger::Fraction),
        };
        let op = op.map_err(|why| match why {
            NotInteger::Fraction => {
                format!("'{name}' (the score) must be an integer or {{\"inc\": integer}}")
            }
            NotInteger::OutOfRange => format!(
                "'{name}' (the score) is outside the 64-bit integer range \
                 (-9223372036854775808 to 9223372036854775807)"
            ),
        })?;
        let mut event = Event::new(user, opts.received, EventType::ExternalScore);
        event.score = Some(op);
        return Ok(event);
    }
    let value = scalar(value).ok_or_else(|| {
        format!(
            "'{name}': arrays, nested objects and other update forms are not supported; \
             the attribute was not updated"
        )
    })?;
    check_string_value(&format!("'{name}'"), &value)?;
    let kind = match (name, &value) {
        ("email", Some(Scalar::Str(_))) => EventType::EmailAdded,
        ("email", Some(_)) => return Err("'email' must be a string".into()),
        _ => EventType::AttributeChanged,
    };
    let mut event = Event::new(user, opts.received, kind);
    if kind == EventType::AttributeChanged {
        event.name = Some(name.to_string());
    }
    event.value = value;
    Ok(event)
}

/// Why a number is no integer score.
enum NotInteger {
    /// A fraction, or not a number at all.
    Fraction,
    /// Whole, but at or beyond ±2^63.
    OutOfRange,
}

/// A JSON number as an integer score: an integer, or a float with no fraction (`45.0`, as
/// Python's `json` writes a float score) strictly inside (-2^63, 2^63). -2^63 itself is refused
/// too: it is the float every integer literal from -2^63 - 1 down to about -2^63 - 1024 rounds
/// to, so taking it would turn those into `i64::MIN` (the parser refuses such literals, and
/// this keeps a float written as -9.223372036854775808e18 from doing the same).
fn integer(n: &Number) -> Result<i64, NotInteger> {
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() != 0.0 {
        return Err(NotInteger::Fraction);
    }
    // 2^63 is exactly representable; every whole float strictly inside it fits an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f > -LIMIT && f < LIMIT {
        Ok(f as i64)
    } else {
        Err(NotInteger::OutOfRange)
    }
}

/// Refuses an event the scorer would dead-letter after its caller was told "success"
/// ([`scorer_refusal`] with the request's format and limit).
fn check_size(event: &Event, opts: &Options<'_>) -> Result<(), String> {
    scorer_refusal(event, opts.format, opts.max_event_bytes)
}

/// Why the scorer would dead-letter `event`, if it would: a time outside years 0000-9999, an
/// encoding (in `format`, as the producer sends it, id included) over `max_event_bytes`, or
/// anything else the scorer's decoder refuses. The ingest API refuses such an object in
/// `errors`, and `warehouse import` passes such a row over, so neither produces what can only
/// be dead-lettered.
pub fn scorer_refusal(event: &Event, format: Format, max_event_bytes: usize) -> Result<(), String> {
    // Checked before encoding: JSON would print such a time with a year the decoder cannot read,
    // and the message should say what is wrong, not how it fails to parse.
    if !(MIN_MILLIS..=MAX_MILLIS).contains(&event.time) {
        return Err(format!(
            "the time {} is outside years 0000-9999, so the scorer would dead-letter it",
            format_rfc3339(event.time)
        ));
    }
    let bytes = encode_event(format, event);
    if bytes.len() > max_event_bytes {
        return Err(format!(
            "the event is {} bytes encoded, over the scorer's limit of {} bytes \
             (scorer.max_event_bytes), so the scorer would dead-letter it",
            bytes.len(),
            max_event_bytes
        ));
    }
    // Whatever else the scorer's decoder refuses (an empty email, a user id it reserves) is
    // refused here too, in its words: the record read back exactly as the scorer will read it.
    let limits = Limits {
        max_bytes: max_event_bytes,
    };
    match decode_event(format, Some(event.user_id.as_bytes()), &bytes, &limits) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "the scorer would dead-letter this event ({}): {e}",
            e.reason()
        )),
    }
}

/// An event's or purchase's `time`.
fn object_time(object: &Map<String, Value>, opts: &Options<'_>) -> Result<Millis, String> {
    let text = match object.get("time") {
        Some(Value::String(s)) => s,
        Some(_) => return Err("'time' must be an ISO 8601 string".into()),
        None => return Err("'time' is required".into()),
    };
    let time = parse_iso8601(text).map_err(|e| format!("'time' {text:?}: {e}"))?;
    if time > opts.received.saturating_add(opts.max_future_skew_ms) {
        return Err(format!(
            "'time' {text:?} is more than {}s ahead of the server clock",
            opts.max_future_skew_ms / 1000
        ));
    }
    Ok(time)
}

fn optional_string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_name(&format!("'{key}'"), s)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(format!("'{key}' must be a string")),
    }
}

/// A required string, checked as [`check_name`] does.
fn required_name(object: &Map<String, Value>, key: &str) -> Result<String, String> {
    let Some(value) = object.get(key) else {
        return Err(format!("'{key}' is required"));
    };
    let name = value
        .as_str()
        .ok_or_else(|| format!("'{key}' must be a string"))?;
    check_name(&format!("'{key}'"), name)?;
    Ok(name.to_string())
}

/// An event's or purchase's `properties`: scalar values only.
fn properties(object: &Map<String, Value>) -> Result<Vec<(String, Scalar)>, String> {
    let props = match object.get("properties") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(props)) => props,
        Some(_) => return Err("'properties' must be an object".into()),
    };
    if props.len() > MAX_PROPERTIES {
        return Err(format!(
            "'properties' has {} entries; at most {MAX_PROPERTIES}",
            props.len()
        ));
    }
    let mut out = Vec::with_capacity(props.len());
    for (key, value) in props {
        check_name("a property name", key)?;
        match scalar(value) {
            // Not a property value to the scorer (its decoder refuses it) and not the same as
            // no property to a rule author: refused, never silently left out.
            Some(None) => {
                return Err(format!(
                    "property '{key}': null is not supported (a property is a string, number \
                     or boolean); leave the property out"
                ))
            }
            Some(Some(v)) => {
                check_string_value(&format!("property '{key}'"), &Some(v.clone()))?;
                out.push((key.clone(), v));
            }
            None => {
                return Err(format!(
                    "property '{key}': nested objects and arrays are not supported"
                ))
            }
        }
    }
    Ok(out)
}

/// The id of an event or purchase (see the module doc): with a key, its place in the request;
/// without one, a digest of the event as produced, so that the same user, name, app, time and
/// properties are the same event however the request wrote them (a time with `+01:00` or
/// `+0100`, a price of `1` or `1.0`, a purchase's `quantity` of 1 given or left to its default:
/// an outside check found each of these pairs counted twice when the id hashed the JSON text).
fn content_id(array: Array, index: usize, event: &Event, opts: &Options<'_>) -> String {
    match opts.ids {
        IdBasis::IdempotencyKey(key) => format!("braze:{key}:{}:{index}", array.as_str()),
        IdBasis::Request(_) => format!(
            "braze:{}:{:032x}",
            array.as_str(),
            fnv1a_128(&event_digest_input(event))
        ),
    }
}

/// Without an `Idempotency-Key`, the second and later events of one array of a request that
/// share a content id get `:2`, `:3`, ... after it: objects sent twice in one request are two
/// events, as Braze counts them (an outside review saw the scorer drop the second of two
/// identical events answered "events_processed": 2), while a retry of the request numbers
/// them the same way and is still dropped whole. With a key, the id holds the object's place.
fn number_repeats(event: &mut Event, given: &mut HashMap<String, usize>, opts: &Options<'_>) {
    if !matches!(opts.ids, IdBasis::Request(_)) {
        return;
    }
    let Some(id) = event.event_id.as_deref() else {
        return;
    };
    let count = given.entry(id.to_string()).or_insert(0);
    *count += 1;
    if *count > 1 {
        event.event_id = Some(format!("{id}:{count}").into());
    }
}

/// The bytes an event's content id hashes: its user, name, app and time (milliseconds), then
/// its properties in name order, each string with its length before it (so no two events
/// share the bytes) and each number as the value it is (an integral float as the integer).
fn event_digest_input(event: &Event) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    put(&mut out, &event.user_id);
    put(&mut out, event.name.as_deref().unwrap_or_default());
    match &event.app_id {
        Some(app) => {
            out.push(1);
            put(&mut out, app);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&event.time.to_le_bytes());
    let mut properties: Vec<&(String, Scalar)> = event.properties.iter().collect();
    properties.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in properties {
        put(&mut out, name);
        match value {
            Scalar::Str(v) => {
                out.push(b's');
                put(&mut out, v);
            }
            Scalar::Bool(v) => out.extend_from_slice(&[b'b', u8::from(*v)]),
            Scalar::Int(v) => {
                out.push(b'i');
                out.extend_from_slice(&v.to_le_bytes());
            }
            // 2^63 as a float is past every i64: the check keeps `as` exact.
            Scalar::Float(v) if v.fract() == 0.0 && v.abs() < 2f64.powi(63) => {
                out.push(b'i');
                out.extend_from_slice(&(*v as i64).to_le_bytes());
            }
            Scalar::Float(v) => {
                out.push(b'f');
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
    }
    out
}

/// FNV-1a, 128 bits: a stable content hash for ids (not for security).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

/// One events object as a `custom_event`.
fn custom_event(object: &Value, index: usize, opts: &Options<'_>) -> Result<Event, String> {
    let object = as_object(object)?;
    let user = external_id(object)?;
    let name = required_name(object, "name")?;
    let time = object_time(object, opts)?;
    let mut event = Event::new(user, time, EventType::CustomEvent);
    event.name = Some(name);
    event.app_id = optional_string(object, "app_id")?;
    event.properties = properties(object)?;
    event.event_id = Some(content_id(Array::Events, index, &event, opts).into());
    Ok(event)
}

/// Purchase fields that become properties of the `purchase` event.
const PURCHASE_FIELDS: &[&str] = &["product_id", "currency", "price", "quantity"];

/// One purchases object as a `custom_event` named [`PURCHASE_EVENT`].
fn purchase_event(object: &Value, index: usize, opts: &Options<'_>) -> Result<Event, String> {
    let object = as_object(object)?;
    let user = external_id(object)?;
    let product = required_name(object, "product_id")?;
    let currency = match object.get("currency") {
        Some(Value::String(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {
            c.clone()
        }
        Some(_) => return Err("'currency' must be an ISO 4217 code like \"USD\"".into()),
        None => return Err("'currency' is required".into()),
    };
    let price = match object.get("price") {
        Some(Value::Number(n)) => n.as_f64().filter(|p| p.is_finite()),
        None => return Err("'price' is required".into()),
        Some(_) => None,
    }
    .ok_or("'price' must be a number")?;
    let quantity = match object.get("quantity") {
        None | Some(Value::Null) => 1,
        Some(q) => q
            .as_i64()
            .filter(|q| (1..=100).contains(q))
            .ok_or("'quantity' must be an integer from 1 to 100")?,
    };
    let time = object_time(object, opts)?;
    let mut event = Event::new(user, time, EventType::CustomEvent);
    event.name = Some(PURCHASE_EVENT.to_string());
    event.app_id = optional_string(object, "app_id")?;
    let price = match object.get("price").and_then(Value::as_i64) {
        Some(i) => Scalar::Int(i),
        None => Scalar::Float(price),
    };
    event.properties = vec![
        ("product_id".into(), Scalar::Str(product)),
        ("currency".into(), Scalar::Str(currency)),
        ("price".into(), price),
        ("quantity".into(), Scalar::Int(quantity)),
    ];
    for (key, value) in properties(object)? {
        if PURCHASE_FIELDS.contains(&key.as_str()) {
            return Err(format!(
                "property '{key}' would hide the purchase's own '{key}'; rename it"
            ));
        }
        event.properties.push((key, value));
    }
    event.event_id = Some(content_id(Array::Purchases, index, &event, opts).into());
    Ok(event)
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// An ISO 8601 time as Braze accepts it: RFC 3339, and also an offset written `+1:00`,
/// `+0100` or `+01`, no offset at all (UTC, as Braze reads it), a date alone (midnight UTC),
/// the seconds left out (`2026-11-16T19:20Z`), and Braze's own `yyyy-MM-dd'T'HH:mm:ss:SSSZ`
/// (`2013-02-23T10:15:30:123-0800`: milliseconds after a colon, an RFC 822 offset).
pub fn parse_iso8601(text: &str) -> Result<Millis, String> {
    if let Ok(ms) = parse_rfc3339(text) {
        return Ok(ms);
    }
    let usage = "not an ISO 8601 time like 2026-01-05T10:00:00Z or 2026-01-05T10:00:00:000+0000";
    if text.len() == 10 {
        return parse_rfc3339(&format!("{text}T00:00:00Z")).map_err(|_| usage.to_string());
    }
    let text = complete_clock(text);
    // The offset starts at the last sign after the time's "T" (the date has '-' signs).
    let t = text.find(['T', 't', ' ']).ok_or(usage)?;
    let normalized = match text[t..].rfind(['+', '-']).map(|i| i + t) {
        None if text.ends_with(['Z', 'z']) => text.into_owned(),
        None => format!("{text}Z"),
        Some(sign) => {
            let (clock, offset) = text.split_at(sign);
            let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(usage.into());
            }
            let (h, m) = match (offset[1..].split_once(':'), digits.len()) {
                (Some((h, m)), _) => (h.to_string(), m.to_string()),
                (None, 1 | 2) => (digits.clone(), "00".to_string()),
                (None, 4) => (digits[..2].to_string(), digits[2..].to_string()),
                _ => return Err(usage.into()),
            };
            if h.is_empty() || h.len() > 2 || m.len() != 2 {
                return Err(usage.into());
            }
            format!("{clock}{}{h:0>2}:{m}", &offset[..1])
        }
    };
    parse_rfc3339(&normalized).map_err(|e| format!("{usage} ({e})"))
}

/// The clock of `text` (`yyyy-MM-ddTHH:mm` at bytes 0 to 15) in RFC 3339's form: `:00`
/// seconds added when they are left out, and Braze's `:SSS` milliseconds (exactly three
/// digits, as its Java pattern writes them) turned into `.SSS`. Anything else is returned as it
/// is, for the parser to refuse with its position.
fn complete_clock(text: &str) -> std::borrow::Cow<'_, str> {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let hh_mm = b.len() >= 16 && b[13] == b':' && digit(14) && digit(15);
    if !hh_mm {
        return text.into();
    }
    match b.get(16) {
        // No seconds: the minute is followed by the end, `Z` or an offset.
        None | Some(b'Z' | b'z' | b'+' | b'-') => {
            format!("{}:00{}", &text[..16], &text[16..]).into()
        }
        Some(b':') if b.get(19) == Some(&b':') && (20..23).all(digit) && !digit(23) => {
            format!("{}.{}", &text[..19], &text[20..]).into()
        }
        _ => text.into(),
    }
}

pub mod strict;
#[cfg(test)]
mod tests;
