//! The loose intermediate: what each field held on the wire, before any validation.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// What a field held on the wire, before validation. JSON strings borrow from the payload.
#[derive(Debug, Default)]
pub(super) enum Loose<'a> {
    /// The field was not there.
    #[default]
    Absent,
    Null,
    Bool(bool),
    Int(i64),
    /// A JSON integer above `i64::MAX`.
    BigUint(u64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An array, contents skipped: no field accepts one.
    Array,
    /// An object whose contents were skipped (nested deeper than any field looks).
    Object,
    /// An object whose entries were kept, in input order.
    Map(Vec<(Cow<'a, str>, Loose<'a>)>),
    /// A protobuf `google.protobuf.Timestamp`, range-checked by the validator.
    Timestamp(crate::proto::google::protobuf::Timestamp),
    /// A protobuf enum number this schema version does not know.
    UnknownEnum(i32),
}

impl<'a> Loose<'a> {
    /// How the value is named in a wrong-type message.
    pub(super) fn found(&self) -> &'static str {
        match self {
            Loose::Absent => "nothing",
            Loose::Null => "null",
            Loose::Bool(_) => "a boolean",
            Loose::Int(_) | Loose::BigUint(_) => "an integer",
            Loose::Float(_) => "a float",
            Loose::Str(_) => "a string",
            Loose::Array => "an array",
            Loose::Object | Loose::Map(_) => "an object",
            Loose::Timestamp(_) => "a timestamp",
            Loose::UnknownEnum(_) => "an enum number",
        }
    }

    /// The value, unless it is absent or null: the two mean the same for every field but `value`.
    pub(super) fn given(self) -> Option<Loose<'a>> {
        match self {
            Loose::Absent | Loose::Null => None,
            v => Some(v),
        }
    }
}

/// Deserializes a [`Loose`]. `depth` is how many levels of objects keep their entries; deeper
/// objects and all arrays are walked and dropped, which bounds what a payload can make us store.
pub(super) struct LooseSeed<'a> {
    depth: u8,
    lifetime: PhantomData<&'a ()>,
}

impl LooseSeed<'_> {
    pub(super) fn new(depth: u8) -> Self {
        LooseSeed {
            depth,
            lifetime: PhantomData,
        }
    }
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for LooseSeed<'a> {
    type Value = Loose<'a>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'a>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for LooseSeed<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Loose<'a>, E> {
        Ok(Loose::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Loose<'a>, E> {
        Ok(Loose::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Loose<'a>, E> {
        Ok(i64::try_from(v).map_or(Loose::BigUint(v), Loose::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Loose<'a>, E> {
        Ok(Loose::Float(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Loose<'a>, E> {
        Ok(Loose::Null)
    }

    fn visit_none<E>(self) -> Result<Loose<'a>, E> {
        Ok(Loose::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'a>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'a>, A::Error> {
        if self.depth == 0 {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Loose::Object);
        }
        // Sized for a typical object, so most never reallocate.
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some(key) = map.next_key_seed(KeySeed(PhantomData))? {
            let value = map.next_value_seed(LooseSeed::new(self.depth - 1))?;
            entries.push((key, value));
        }
        Ok(Loose::Map(entries))
    }
}

/// Deserializes an object key, borrowing it from the payload when it has no escapes.
pub(super) struct KeySeed<'a>(pub(super) PhantomData<&'a ()>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for KeySeed<'a> {
    type Value = Cow<'a, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'a, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for KeySeed<'a> {
    type Value = Cow<'a, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// The first name that appears twice in `entries`, if any.
pub(super) fn find_duplicate<'e, V>(entries: &'e [(Cow<'_, str>, V)]) -> Option<&'e str> {
    // Pairwise is fastest for the few entries real objects have; sorting bounds the cost of a
    // hostile payload with thousands of them.
    if entries.len() <= 16 {
        for (i, (key, _)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(k, _)| k == key) {
                return Some(key);
            }
        }
        return None;
    }
    let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}
