//! Strict JSON for federation bodies: canonical-JSON values only.
//!
//! serde_json alone accepts duplicate keys (last wins) and floats; ruma's canonical JSON rejects
//! floats and big integers but not duplicates. This parser rejects all of them, so what we hash and
//! sign is exactly what the sender meant.

use std::fmt;

use ruma::{CanonicalJsonObject, CanonicalJsonValue, Int};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a body was refused: `NotJson` maps to `M_NOT_JSON`, `BadJson` to `M_BAD_JSON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    NotJson(String),
    BadJson(String),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson(m) | Self::BadJson(m) => f.write_str(m),
        }
    }
}

/// Parses a JSON object under canonical-JSON rules.
pub fn parse_object(bytes: &[u8]) -> Result<CanonicalJsonObject, JsonError> {
    match parse_value(bytes)? {
        CanonicalJsonValue::Object(o) => Ok(o),
        _ => Err(JsonError::BadJson("expected a JSON object".to_owned())),
    }
}

/// Parses any JSON value under canonical-JSON rules.
pub fn parse_value(bytes: &[u8]) -> Result<CanonicalJsonValue, JsonError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(JsonError::BadJson("body is not valid UTF-8".to_owned()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue::deserialize_with(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value)
}

fn classify(e: serde_json::Error) -> JsonError {
    let message = e.to_string();
    match e.classify() {
        serde_json::error::Category::Data => JsonError::BadJson(message),
        _ if message.contains("recursion limit") => {
            JsonError::BadJson("JSON nested too deeply".to_owned())
        }
        _ => JsonError::NotJson(format!("invalid JSON: {message}")),
    }
}

struct StrictValue;

impl StrictValue {
    fn deserialize_with<'de, D: Deserializer<'de>>(d: D) -> Result<CanonicalJsonValue, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictSeed;

impl<'de> de::DeserializeSeed<'de> for StrictSeed {
    type Value = CanonicalJsonValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        StrictValue::deserialize_with(d)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = CanonicalJsonValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a canonical JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(CanonicalJsonValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Int::new(v)
            .map(CanonicalJsonValue::Integer)
            .ok_or_else(|| E::custom(format!("integer {v} is outside ±(2^53-1)")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v)
            .ok()
            .and_then(Int::new)
            .map(CanonicalJsonValue::Integer)
            .ok_or_else(|| E::custom(format!("integer {v} is outside ±(2^53-1)")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!("floats are not allowed in canonical JSON ({v})")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(CanonicalJsonValue::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(CanonicalJsonValue::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(CanonicalJsonValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(CanonicalJsonValue::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictSeed)? {
            out.push(v);
        }
        Ok(CanonicalJsonValue::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = CanonicalJsonObject::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictSeed)?;
            if out.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
        }
        Ok(CanonicalJsonValue::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(s: &[u8]) -> bool {
        matches!(parse_object(s), Err(JsonError::BadJson(_)))
    }

    #[test]
    fn canonical_rules() {
        assert!(
            parse_object(br#"{"a": 1, "b": [true, null, "x", {"c": -9007199254740991}]}"#).is_ok()
        );
        assert!(matches!(parse_object(b"{nope"), Err(JsonError::NotJson(_))));
        assert!(matches!(parse_object(b""), Err(JsonError::NotJson(_))));
        assert!(bad(br#"{"a": 1.5}"#));
        assert!(bad(br#"{"a": 1e3}"#));
        assert!(bad(br#"{"a": 9007199254740992}"#));
        assert!(bad(br#"{"a": -9007199254740992}"#));
        assert!(bad(br#"{"a": 1, "a": 2}"#));
        assert!(bad(b"{\"a\": \"\xff\"}"));
        assert!(bad(br#"[1]"#));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(bad(format!("{{\"a\": {deep}}}").as_bytes()));
        assert!(matches!(parse_object(br#"{"a": 1} x"#), Err(JsonError::NotJson(_))));
    }
}
