//! The body parsed strictly. serde_json's own `Value` keeps the last of a repeated key and
//! turns an integer literal beyond 64 bits into a float, both without a word; here either
//! refuses the body, naming the key or the literal and where it is. Nesting stays bounded by
//! serde_json's recursion limit (128), which applies to this visitor as to its own, and the
//! values and keys of a body by [`MAX_VALUES`].

use super::BodyError;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Range;

/// The most values and object keys a body may hold. The largest request the limits allow
/// (75 objects in each array, 256 attributes or properties each) has about 60,000 values
/// and as many keys. Parsed, a value costs about ten times its text: without a bound, one
/// 1 MiB body of `[0,0,...]` (half a million values) took 50-70 MB to parse (an outside
/// check, 2026-12-07), so a few at once outgrew the ingest pod's memory limit.
pub const MAX_VALUES: usize = 150_000;

/// Parses `body` as a JSON value, refusing a repeated key in any object, an integer literal
/// outside the signed 64-bit range anywhere, and more than [`MAX_VALUES`] values and keys.
pub(super) fn parse(body: &[u8]) -> Result<Value, BodyError> {
    let context = Context {
        body,
        long_integers: long_integer_literals(body),
        numbers: Cell::new(0),
        values: Cell::new(0),
        refused: RefCell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = ValueSeed {
        place: &Place::Top,
        context: &context,
    };
    let parsed = seed
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    match (parsed, context.refused.into_inner()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(refused)) => Err(refused),
        (Err(e), None) => Err(BodyError::Malformed(e.to_string())),
    }
}

/// Where a value is in the body: a path of keys and indexes.
enum Place<'p> {
    Top,
    Key(&'p Place<'p>, &'p str),
    Index(&'p Place<'p>, usize),
}

/// How much of a key or literal an error quotes.
const QUOTED_CHARS: usize = 64;

/// `key` as an error quotes it: as it is when plain, escaped in double quotes otherwise, so no
/// control character or quote of it can garble the message; at most [`QUOTED_CHARS`].
fn quote_key(key: &str) -> (bool, String) {
    let head: String = key.chars().take(QUOTED_CHARS).collect();
    let cut = if head.len() < key.len() { "..." } else { "" };
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'));
    if plain {
        (true, format!("{head}{cut}"))
    } else {
        (false, format!("{head:?}{cut}"))
    }
}

/// `key` as a message names it: `'events'`, or escaped in double quotes when not plain.
fn named(key: &str) -> String {
    match quote_key(key) {
        (true, key) => format!("'{key}'"),
        (false, key) => key,
    }
}

impl fmt::Display for Place<'_> {
    /// `attributes[0].lead_score`, `partner["a b"]`; the top level is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Top => Ok(()),
            Place::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Place::Key(parent, key) => match (quote_key(key), parent) {
                ((true, key), Place::Top) => write!(f, "{key}"),
                ((true, key), _) => write!(f, "{parent}.{key}"),
                ((false, key), _) => write!(f, "{parent}[{key}]"),
            },
        }
    }
}

impl Place<'_> {
    fn describe(&self, top: &str) -> String {
        match self {
            Place::Top => top.to_string(),
            place => place.to_string(),
        }
    }
}

/// What the visitors share.
struct Context<'b> {
    body: &'b [u8],
    /// The integer literals of more than 18 digits: their ordinal among the body's numbers,
    /// and where they are. serde_json hands one it cannot hold as an `i64` or `u64` over as a
    /// float, indistinguishable from a float literal but for this.
    long_integers: Vec<(usize, Range<usize>)>,
    /// Numbers visited so far: serde_json visits them in the order of the text.
    numbers: Cell<usize>,
    /// Values and object keys met so far, against [`MAX_VALUES`].
    values: Cell<usize>,
    /// Why the body was refused, when the visitor refused it.
    refused: RefCell<Option<BodyError>>,
}

impl Context<'_> {
    fn next_number(&self) -> usize {
        let n = self.numbers.get();
        self.numbers.set(n + 1);
        n
    }

    /// Counts one more value or key; past [`MAX_VALUES`], refuses the body.
    fn count_value<E: de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        if n > MAX_VALUES {
            return Err(self.refuse(BodyError::TooManyValues { max: MAX_VALUES }));
        }
        Ok(())
    }

    fn refuse<E: de::Error>(&self, why: BodyError) -> E {
        let message = why.to_string();
        *self.refused.borrow_mut() = Some(why);
        E::custom(message)
    }

    fn out_of_range<E: de::Error>(&self, literal: &str, place: &Place<'_>) -> E {
        let (_, literal) = quote_key(literal);
        self.refuse(BodyError::IntegerOutOfRange {
            literal,
            place: place.describe("the body"),
        })
    }
}

/// The integer literals (no fraction, no exponent) of more than 18 digits outside strings, and
/// the non-zero literals with an exponent, as (ordinal among the numbers, byte range). Run
/// before parsing; on a body that is not JSON its answer does not matter, the parser refusing
/// it.
fn long_integer_literals(body: &[u8]) -> Vec<(usize, Range<usize>)> {
    let mut found = Vec::new();
    let (mut i, mut ordinal) = (0, 0);
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < body.len()
                    && matches!(body[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = &body[start..i];
                let integer = !token.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
                let digits = token.iter().filter(|b| b.is_ascii_digit()).count();
                // A mantissa with a digit other than 0 and an exponent: a float that may be
                // too small for an f64, which serde_json reads as 0.
                let mantissa = token.split(|b| matches!(b, b'e' | b'E')).next();
                let may_vanish = !integer
                    && token.iter().any(|b| matches!(b, b'e' | b'E'))
                    && mantissa.is_some_and(|m| m.iter().any(|b| matches!(b, b'1'..=b'9')));
                if (integer && digits > 18) || may_vanish {
                    found.push((ordinal, start..i));
                }
                ordinal += 1;
            }
            _ => i += 1,
        }
    }
    found
}

/// Deserializes a [`Value`] at `place`.
#[derive(Clone, Copy)]
struct ValueSeed<'p, 'b> {
    place: &'p Place<'p>,
    context: &'p Context<'b>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.context.count_value()?;
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        self.context.next_number();
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.context.next_number();
        if i64::try_from(v).is_err() {
            return Err(self.context.out_of_range(&v.to_string(), self.place));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        let ordinal = self.context.next_number();
        let long = &self.context.long_integers;
        if let Ok(i) = long.binary_search_by_key(&ordinal, |(n, _)| *n) {
            let text = String::from_utf8_lossy(&self.context.body[long[i].1.clone()]);
            let integer = !text.contains(['.', 'e', 'E']);
            if integer {
                // An integer literal that came as a float: beyond what a u64 or i64 holds.
                return Err(self.context.out_of_range(&text, self.place));
            }
            if v == 0.0 {
                // A non-zero literal below the smallest f64 (`1e-400`): read as 0 it would
                // pass as an integer score of 0 (an outside check, 2026-12-07).
                let (_, literal) = quote_key(&text);
                return Err(self.context.refuse(BodyError::NumberUnderflow {
                    literal,
                    place: self.place.describe("the body"),
                }));
            }
        }
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let place = Place::Index(self.place, items.len());
            let seed = ValueSeed {
                place: &place,
                context: self.context,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.context.count_value()?;
            if object.contains_key(&key) {
                return Err(self.context.refuse(BodyError::RepeatedKey {
                    key: named(&key),
                    place: self.place.describe("the top-level object"),
                }));
            }
            let place = Place::Key(self.place, &key);
            let seed = ValueSeed {
                place: &place,
                context: self.context,
            };
            let value = map.next_value_seed(seed)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}
