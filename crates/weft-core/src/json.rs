//! JSON helpers that reproduce the parts of Go's `encoding/json` flannel depends on.
//!
//! flannel decodes its config and lease values with Go's decoder, which matches object keys
//! case-insensitively and lets the last matching key win. serde_json's `Value` keeps keys in a
//! sorted map, which loses the order needed for "last wins", so decoding goes through [`Json`],
//! a tree that keeps object members in document order.
//!
//! On the encoding side Go escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings, which
//! serde_json does not; [`write_go_value`] reproduces Go's bytes so lease values written by weft
//! are byte-for-byte what flanneld would write.

use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// Largest config or lease value accepted. Values come from etcd or the Kubernetes API, where
/// anyone with write access could store megabytes; real values are a few hundred bytes.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// A decoded JSON document that keeps object members in document order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Decodes one JSON document (serde_json enforces its nesting limit of 128).
    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Json, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Human description of the value's JSON type, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// Looks up an object member the way Go's decoder fills a struct field: keys compare
    /// case-insensitively and the last matching member wins. Non-objects have no members.
    pub(crate) fn get(&self, name: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members
                .iter()
                .rev()
                .find(|(key, _)| fold_eq(key, name))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// Like [`Json::get`], but a JSON `null` counts as absent: Go leaves a plain field at its
    /// zero value when it decodes `null` into it.
    pub(crate) fn get_present(&self, name: &str) -> Option<&Json> {
        self.get(name).filter(|value| !matches!(value, Json::Null))
    }

    /// Converts to a serde_json value (duplicate keys: the last one wins, as in Go).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(members) => {
                let mut map = serde_json::Map::new();
                for (key, value) in members {
                    map.insert(key.clone(), value.to_value());
                }
                Value::Object(map)
            }
        }
    }
}

/// Describes a serde_json value's type, for error messages ("a number", "null", ...).
pub fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Looks up a member of a serde_json object case-insensitively. An exact-case key is preferred;
/// otherwise the first case-insensitive match in map order is used (a `Value` map no longer
/// knows which of two differently-cased duplicates came last).
pub(crate) fn value_get<'a>(
    map: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Option<&'a Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(key, _)| fold_eq(key, name))
            .map(|(_, value)| value)
    })
}

/// Case-insensitive key comparison close to Go's simple Unicode folding: two characters match
/// when they are equal, or equal after lower-casing, or equal after upper-casing (the last rule
/// covers pairs such as `ſ`/`s`, the first two cover the Kelvin sign `K`/`k`).
pub(crate) fn fold_eq(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    let mut left = a.chars();
    let mut right = b.chars();
    loop {
        match (left.next(), right.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) => {
                if !char_fold_eq(x, y) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

fn char_fold_eq(x: char, y: char) -> bool {
    x == y || x.to_lowercase().eq(y.to_lowercase()) || x.to_uppercase().eq(y.to_uppercase())
}

/// Appends `s` as a JSON string exactly as Go's `json.Marshal` writes it (HTML-safe escaping).
pub(crate) fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `value` as compact JSON the way Go re-encodes a `json.RawMessage`.
pub(crate) fn write_go_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_go_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(out, key);
                out.push(':');
                write_go_value(out, item);
            }
            out.push('}');
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_case_insensitive_member_wins() {
        let doc = Json::from_slice(br#"{"Network":"a","network":"b","NETWORK":"c"}"#).unwrap();
        assert_eq!(doc.get("Network"), Some(&Json::String("c".into())));
        assert_eq!(doc.get("missing"), None);
    }

    #[test]
    fn null_counts_as_absent_for_get_present() {
        let doc = Json::from_slice(br#"{"SubnetLen":null}"#).unwrap();
        assert_eq!(doc.get("subnetlen"), Some(&Json::Null));
        assert_eq!(doc.get_present("subnetlen"), None);
    }

    #[test]
    fn fold_eq_matches_go_special_cases() {
        assert!(fold_eq("vni", "VNI"));
        assert!(fold_eq("\u{212a}ey", "key"));
        assert!(fold_eq("\u{17f}ubnetLen", "SubnetLen"));
        assert!(!fold_eq("VNIs", "VNI"));
        assert!(!fold_eq("Port", "Part"));
    }

    #[test]
    fn go_string_escaping() {
        let mut out = String::new();
        write_go_string(&mut out, "a<b>&\"\\\n\u{1}\u{2028}é");
        assert_eq!(out, r#""a\u003cb\u003e\u0026\"\\\n\u0001\u2028é""#);
    }

    #[test]
    fn go_value_is_compact() {
        let value: Value = serde_json::from_str(
            r#"{ "VNI" : 1, "VtepMAC" : "aa:bb:cc:dd:ee:01", "x": [1, null, true] }"#,
        )
        .unwrap();
        let mut out = String::new();
        write_go_value(&mut out, &value);
        assert_eq!(
            out,
            r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01","x":[1,null,true]}"#
        );
    }

    #[test]
    fn value_get_prefers_exact_case() {
        let value: Value = serde_json::from_str(r#"{"vni":2,"VNI":1,"vtepmac":"x"}"#).unwrap();
        let map = value.as_object().unwrap();
        assert_eq!(value_get(map, "VNI"), Some(&Value::from(1)));
        assert_eq!(value_get(map, "VtepMAC"), Some(&Value::from("x")));
    }
}
