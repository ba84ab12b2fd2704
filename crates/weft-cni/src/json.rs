//! JSON output the way Go's `encoding/json` writes it, so the saved delegate config and the
//! error JSON are byte-identical to flannel's: compact, object keys sorted (Go sorts map
//! keys), and `<`, `>`, `&`, U+2028, U+2029 escaped as `\u003c`, ... .

use std::io;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::Value;
use serde_json::ser::Formatter;

/// Compact formatter (the trait's defaults) with Go's extra string escapes.
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `value` as Go would marshal it (see the module doc).
pub fn to_vec_go<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Serializing plain data into a Vec cannot fail; fall back to serde_json's own output
    // rather than panic if it ever did.
    if value.serialize(&mut ser).is_err() {
        return serde_json::to_vec(value).unwrap_or_default();
    }
    out
}

/// A JSON value that serializes its objects with keys in byte order, whatever map type
/// serde_json was built with (the `preserve_order` feature keeps insertion order).
pub struct Sorted<'a>(pub &'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut m = serializer.serialize_map(Some(keys.len()))?;
                for k in keys {
                    m.serialize_entry(k, &Sorted(&map[k]))?;
                }
                m.end()
            }
            Value::Array(items) => {
                let mut s = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    s.serialize_element(&Sorted(item))?;
                }
                s.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// `value` rendered like Go's `json.Marshal` of a `map[string]interface{}`.
pub fn render_value(value: &Value) -> Vec<u8> {
    to_vec_go(&Sorted(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_recursively_and_is_compact() {
        let v = json!({"type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"}]]},"ipMasq":false,"cniVersion":"0.3.1"});
        assert_eq!(
            String::from_utf8(render_value(&v)).unwrap(),
            r#"{"cniVersion":"0.3.1","ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]],"type":"host-local"},"type":"bridge"}"#
        );
    }

    #[test]
    fn escapes_like_go() {
        let v = json!({"a":"x<y>&z\u{2028}\u{2029}\"\\\n é"});
        assert_eq!(
            String::from_utf8(render_value(&v)).unwrap(),
            "{\"a\":\"x\\u003cy\\u003e\\u0026z\\u2028\\u2029\\\"\\\\\\n é\"}"
        );
    }
}
