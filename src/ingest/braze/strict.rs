//! The body parsed strictly. serde_json's own `Value` keeps the last of a repeated key without
//! a word; here a repeated key refuses the body, naming the key and where it is. Nesting stays
//! bounded by serde_json's recursion limit (128), which applies to this visitor as to its own.

use super::BodyError;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// Parses `body` as a JSON value, refusing a repeated key in any object.
pub(super) fn parse(body: &[u8]) -> Result<Value, BodyError> {
    let context = Context {
        refused: RefCell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = ValueSeed {
        place: &Place::Top,
        context: &context,
    };
    let parsed = seed.deserialize(&mut de).and_then(|value| de.end().map(|()| value));
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
struct Context {
    /// Why the body was refused, when the visitor refused it.
    refused: RefCell<Option<BodyError>>,
}

impl Context {
    fn refuse<E: de::Error>(&self, why: BodyError) -> E {
        let message = why.to_string();
        *self.refused.borrow_mut() = Some(why);
        E::custom(message)
    }
}

/// Deserializes a [`Value`] at `place`.
#[derive(Clone, Copy)]
struct ValueSeed<'p> {
    place: &'p Place<'p>,
    context: &'p Context,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
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
