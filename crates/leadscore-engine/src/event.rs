//! The input event: what users produce to `lead-events`, decoded from JSON or protobuf.
//!
//! Both wire formats decode into [`Event`], so the engine never sees the difference. Decoding and
//! validation live in [`crate::codec`]; this module only holds the model.

use crate::timestamp::Millis;
use std::fmt;
use std::sync::Arc;

/// A JSON scalar: the value of an attribute or of a custom event property.
#[derive(Clone, Debug)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    /// The value as a number, for `gt`/`gte`/`lt`/`lte`; `None` for strings and booleans.
    #[inline]
    pub fn as_f64(&self) -> Option<f64> {
        self.as_ref().as_f64()
    }

    /// Equality as a rules author means it: numbers compare by value (`1 == 1.0`), other kinds
    /// only to their own kind (`true != "true"`).
    #[inline]
    pub fn loose_eq(&self, other: &Scalar) -> bool {
        self.as_ref().loose_eq(other)
    }

    /// The value as JSON, for output.
    pub fn to_json(&self) -> serde_json::Value {
        self.as_ref().to_json()
    }

    /// A borrowed view of the value.
    #[inline]
    pub fn as_ref(&self) -> ScalarRef<'_> {
        match self {
            Scalar::Str(s) => ScalarRef::Str(s),
            Scalar::Int(i) => ScalarRef::Int(*i),
            Scalar::Float(f) => ScalarRef::Float(*f),
            Scalar::Bool(b) => ScalarRef::Bool(*b),
        }
    }
}

/// Whether the integer `i` and the float `f` are the same number, exactly: past 2^53 a float
/// holds only some integers, and converting `i` to a float would round it onto its neighbour.
fn int_equals_float(i: i64, f: f64) -> bool {
    // [-2^63, 2^63): the floats that can be an i64; NaN fails both comparisons.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    (-TWO_63..TWO_63).contains(&f) && f.trunc() == f && f as i64 == i
}

/// A [`Scalar`] borrowed from where it is stored: a user's attributes keep their values encoded
/// ([`crate::attributes::Attributes`]) and hand them out this way, without allocating.
#[derive(Clone, Copy, Debug)]
pub enum ScalarRef<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl ScalarRef<'_> {
    /// As [`Scalar::as_f64`].
    #[inline]
    pub fn as_f64(self) -> Option<f64> {
        match self {
            ScalarRef::Int(i) => Some(i as f64),
            ScalarRef::Float(f) => Some(f),
            _ => None,
        }
    }

    /// As [`Scalar::loose_eq`].
    #[inline]
    pub fn loose_eq(self, other: &Scalar) -> bool {
        match (self, other) {
            (ScalarRef::Str(a), Scalar::Str(b)) => {
                crate::state::bytes_eq(a.as_bytes(), b.as_bytes())
            }
            (ScalarRef::Bool(a), Scalar::Bool(b)) => a == *b,
            (ScalarRef::Int(a), Scalar::Int(b)) => a == *b,
            (ScalarRef::Float(a), Scalar::Float(b)) => a == *b,
            (ScalarRef::Int(i), Scalar::Float(f)) => int_equals_float(i, *f),
            (ScalarRef::Float(f), Scalar::Int(i)) => int_equals_float(*i, f),
            _ => false,
        }
    }

    /// Exact equality with an owned value, as `Scalar`'s `PartialEq`.
    #[inline]
    pub fn same(self, other: &Scalar) -> bool {
        self == other.as_ref()
    }

    pub fn to_owned(self) -> Scalar {
        match self {
            ScalarRef::Str(s) => Scalar::Str(s.to_string()),
            ScalarRef::Int(i) => Scalar::Int(i),
            ScalarRef::Float(f) => Scalar::Float(f),
            ScalarRef::Bool(b) => Scalar::Bool(b),
        }
    }

    /// The value as JSON, for output.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            ScalarRef::Str(s) => serde_json::Value::String(s.to_string()),
            ScalarRef::Int(i) => serde_json::Value::from(i),
            ScalarRef::Float(f) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            ScalarRef::Bool(b) => serde_json::Value::Bool(b),
        }
    }
}

/// Exact equality (a `Float` equals only a bit-identical `Float`), as for [`Scalar`].
impl PartialEq for ScalarRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ScalarRef::Str(a), ScalarRef::Str(b)) => a == b,
            (ScalarRef::Int(a), ScalarRef::Int(b)) => a == b,
            (ScalarRef::Float(a), ScalarRef::Float(b)) => a.to_bits() == b.to_bits(),
            (ScalarRef::Bool(a), ScalarRef::Bool(b)) => a == b,
            _ => false,
        }
    }
}

/// Exact equality (a `Float` equals only a bit-identical `Float`), used by state round-trips.
impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

impl fmt::Display for ScalarRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarRef::Str(s) => write!(f, "{s:?}"),
            ScalarRef::Int(i) => write!(f, "{i}"),
            ScalarRef::Float(x) => write!(f, "{x}"),
            ScalarRef::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The event types of SPEC section 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    SessionStart,
    CustomEvent,
    EmailAdded,
    AttributeChanged,
    ExternalScore,
    /// SPEC 2, forgetting: deletes the user's state; later events start from nothing. The
    /// partition handles it ([`crate::partition::Partition::process`]); it never reaches the
    /// rules, so no matcher of this type can ever match.
    UserDeleted,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::SessionStart,
        EventType::CustomEvent,
        EventType::EmailAdded,
        EventType::AttributeChanged,
        EventType::ExternalScore,
        EventType::UserDeleted,
    ];

    /// The wire name (`session_start`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionStart => "session_start",
            EventType::CustomEvent => "custom_event",
            EventType::EmailAdded => "email_added",
            EventType::AttributeChanged => "attribute_changed",
            EventType::ExternalScore => "external_score",
            EventType::UserDeleted => "user_deleted",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an `external_score` event does to the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreOp {
    /// `score`: set the score to this value.
    Set(i64),
    /// `increment`: add this value.
    Increment(i64),
}

/// One validated input event. The decoder guarantees the type-specific invariants documented on
/// each field, so the engine can rely on them.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub user_id: Arc<str>,
    /// Event time.
    pub time: Millis,
    /// Idempotency key; when absent the event's Kafka position (`topic/partition/offset`) serves.
    pub event_id: Option<Arc<str>>,
    pub kind: EventType,
    /// Custom event name (`custom_event`, required) or attribute name (`attribute_changed`, required).
    pub name: Option<String>,
    /// The app of a `session_start`.
    pub app_id: Option<String>,
    /// Custom event properties, in input order, keys unique.
    pub properties: Vec<(String, Scalar)>,
    /// `attribute_changed`: the new value, `None` removes the attribute.
    /// `email_added`: `Some(Scalar::Str(address))`.
    pub value: Option<Scalar>,
    /// `external_score`: always `Some`; `None` for every other type.
    pub score: Option<ScoreOp>,
    /// `external_score`: when the external model computed it.
    pub updated_at: Option<Millis>,
}

impl Event {
    /// A bare event of `kind` with no optional fields, for building events in code and tests.
    pub fn new(user_id: impl Into<Arc<str>>, time: Millis, kind: EventType) -> Event {
        Event {
            user_id: user_id.into(),
            time,
            event_id: None,
            kind,
            name: None,
            app_id: None,
            properties: Vec::new(),
            value: None,
            score: None,
            updated_at: None,
        }
    }

    /// The property named `key`, if the event has it.
    #[inline]
    pub fn property(&self, key: &str) -> Option<&Scalar> {
        self.properties
            .iter()
            .find(|(k, _)| crate::state::bytes_eq(k.as_bytes(), key.as_bytes()))
            .map(|(_, v)| v)
    }
}

/// Where an event was read from. Its position names the event when it has no `event_id`, and
/// lets a replay after a crash skip what a user's state already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl Origin<'_> {
    /// The `topic/partition/offset` id of SPEC section 2.
    pub fn event_id(&self) -> String {
        // Built for every change of an event without an id: no formatting machinery.
        let mut id = String::with_capacity(self.topic.len() + 32);
        id.push_str(self.topic);
        id.push('/');
        // Writing into a `String` cannot fail.
        let _ = write_decimal(&mut id, i64::from(self.partition));
        id.push('/');
        let _ = write_decimal(&mut id, self.offset);
        id
    }
}

/// Appends `n` in decimal (what `write!` does, without the formatting machinery: change ids
/// and positions are written for every score change), the digits written on the stack and
/// appended at once.
pub(crate) fn write_decimal(out: &mut impl std::fmt::Write, n: i64) -> std::fmt::Result {
    let mut buf = [0u8; 20];
    // Only ASCII digits and a sign were written.
    out.write_str(std::str::from_utf8(decimal(n, &mut buf)).unwrap_or_default())
}

/// `n` in decimal, sign first, written into the end of `buf` (20 bytes: `i64::MIN` fills it);
/// returns the part written.
pub(crate) fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}
