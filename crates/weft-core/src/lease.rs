//! Lease values: the JSON stored at `<prefix>/subnets/<key>` (flannel `LeaseAttrs`).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::clip::clip;
use crate::json::{
    Json, MAX_DOCUMENT_BYTES, value_get, value_kind, write_go_string, write_go_value,
};
use crate::mac::MacAddr;
use crate::subnet::subnet_key_dual;

/// Largest lease value accepted, in bytes.
pub const MAX_LEASE_BYTES: usize = MAX_DOCUMENT_BYTES;

const EXAMPLE_LEASE: &str = r#"{"PublicIP":"192.168.1.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}"#;

/// The attributes a node publishes with its subnet lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAttrs {
    /// `PublicIP`: where peers send encapsulated traffic (`0.0.0.0` when absent, like Go).
    pub public_ip: Ipv4Addr,
    /// `PublicIPv6`, serialized as `null` when unset.
    pub public_ipv6: Option<Ipv6Addr>,
    /// `BackendType`, e.g. `vxlan`; `None` when absent or empty (udp and alloc set none).
    pub backend_type: Option<String>,
    /// `BackendData`, backend specific (vxlan: [`VxlanBackendData`]).
    pub backend_data: Option<Value>,
    /// `BackendV6Data`, the IPv6 counterpart of `backend_data`.
    pub backend_v6_data: Option<Value>,
}

/// A lease value that cannot be decoded. Messages name the field and say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The value is larger than [`MAX_LEASE_BYTES`].
    #[error(
        "lease value is {size} bytes, more than the {limit}-byte limit; a lease is about 130 bytes such as {EXAMPLE_LEASE}, so delete the key and let its node register again"
    )]
    TooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The value is not JSON.
    #[error(
        "lease value is not valid JSON ({detail}); expected an object such as {EXAMPLE_LEASE}; delete the key and let its node register again"
    )]
    Syntax {
        /// The JSON parser's message.
        detail: String,
    },
    /// The value is JSON but not an object.
    #[error(
        "lease value must be a JSON object, found {found}; expected an object such as {EXAMPLE_LEASE}; delete the key and let its node register again"
    )]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error(
        "lease field {field}: expected {expected}, found {found}; write it as {example}, or delete the key and let its node register again"
    )]
    WrongType {
        /// The field, e.g. `PublicIP` or `BackendData.VNI`.
        field: &'static str,
        /// The JSON type expected.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
        /// A correct example.
        example: &'static str,
    },
    /// A field has the right type but an unusable value.
    #[error(
        "lease field {field} {value:?}: {reason}; write it as {example}, or delete the key and let its node register again"
    )]
    InvalidField {
        /// The field.
        field: &'static str,
        /// The value as written (cut if long).
        value: String,
        /// What is wrong with it.
        reason: String,
        /// A correct example.
        example: &'static str,
    },
    /// A required field is missing.
    #[error(
        "lease field {field} is missing; a vxlan lease carries it, e.g. {example}; the node that wrote it must publish it again (restart its flanneld/weftd)"
    )]
    Missing {
        /// The field.
        field: &'static str,
        /// A correct example.
        example: &'static str,
    },
}

impl LeaseError {
    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            LeaseError::WrongType { field, .. }
            | LeaseError::InvalidField { field, .. }
            | LeaseError::Missing { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl LeaseAttrs {
    /// The attributes of a vxlan lease, as flanneld's vxlan backend publishes them.
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, mac: MacAddr) -> LeaseAttrs {
        LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: Some("vxlan".to_owned()),
            backend_data: Some(VxlanBackendData { vni, vtep_mac: mac }.to_value()),
            backend_v6_data: None,
        }
    }

    /// The same attributes with flannel's dual-stack vxlan half: `PublicIPv6` and
    /// `BackendV6Data` (`{"VNI":…,"VtepMAC":<flannel-v6.<VNI>'s MAC>}`).
    pub fn with_vxlan_v6(self, public_ipv6: Ipv6Addr, vni: u32, mac6: MacAddr) -> LeaseAttrs {
        LeaseAttrs {
            public_ipv6: Some(public_ipv6),
            backend_v6_data: Some(
                VxlanBackendData {
                    vni,
                    vtep_mac: mac6,
                }
                .to_value(),
            ),
            ..self
        }
    }

    /// The attributes of a host-gw lease, as flanneld's host-gw backend publishes them: no
    /// backend data (`{"PublicIP":"…","PublicIPv6":null,"BackendType":"host-gw"}`).
    pub fn host_gw(public_ip: Ipv4Addr) -> LeaseAttrs {
        LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: Some("host-gw".to_owned()),
            backend_data: None,
            backend_v6_data: None,
        }
    }

    /// The exact bytes Go's `json.Marshal` produces for flannel's `LeaseAttrs`: fields in
    /// declaration order, `PublicIPv6` always present (`null` when unset), the backend fields
    /// omitted when empty, no whitespace, Go's HTML-safe string escaping.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(160);
        out.push_str("{\"PublicIP\":");
        write_go_string(&mut out, &self.public_ip.to_string());
        out.push_str(",\"PublicIPv6\":");
        match self.public_ipv6 {
            Some(ip) => write_go_string(&mut out, &ip.to_string()),
            None => out.push_str("null"),
        }
        if let Some(backend_type) = self.backend_type.as_deref().filter(|t| !t.is_empty()) {
            out.push_str(",\"BackendType\":");
            write_go_string(&mut out, backend_type);
        }
        if let Some(data) = &self.backend_data {
            out.push_str(",\"BackendData\":");
            write_go_value(&mut out, data);
        }
        if let Some(data) = &self.backend_v6_data {
            out.push_str(",\"BackendV6Data\":");
            write_go_value(&mut out, data);
        }
        out.push('}');
        out
    }

    /// Decodes a lease value the way flannel does (case-insensitive keys, unknown keys ignored),
    /// but refuses values over 64 KiB and a `PublicIP` that is not IPv4. A missing `PublicIP`
    /// decodes as `0.0.0.0`, as in Go, so the lease still counts as taken when allocating.
    pub fn parse(bytes: &[u8]) -> Result<LeaseAttrs, LeaseError> {
        let doc = json_of(bytes)?;
        if !matches!(doc, Json::Object(_)) {
            return Err(LeaseError::NotAnObject { found: doc.kind() });
        }

        let public_ip = match doc.get("PublicIP") {
            None => Ipv4Addr::UNSPECIFIED,
            Some(Json::String(text)) => parse_public_ip(text)?,
            Some(other) => {
                return Err(LeaseError::WrongType {
                    field: "PublicIP",
                    expected: "an IPv4 address string",
                    found: other.kind(),
                    example: r#""PublicIP":"192.168.1.11""#,
                });
            }
        };
        let public_ipv6 = match doc.get_present("PublicIPv6") {
            None => None,
            Some(Json::String(text)) => {
                Some(
                    text.parse::<Ipv6Addr>()
                        .map_err(|_| LeaseError::InvalidField {
                            field: "PublicIPv6",
                            value: clip(text),
                            reason: "not an IPv6 address".into(),
                            example: r#""PublicIPv6":"2001:db8::11" or "PublicIPv6":null"#,
                        })?,
                )
            }
            Some(other) => {
                return Err(LeaseError::WrongType {
                    field: "PublicIPv6",
                    expected: "an IPv6 address string or null",
                    found: other.kind(),
                    example: r#""PublicIPv6":null"#,
                });
            }
        };
        let backend_type = match doc.get_present("BackendType") {
            None => None,
            Some(Json::String(text)) if text.is_empty() => None,
            Some(Json::String(text)) => Some(text.clone()),
            Some(other) => {
                return Err(LeaseError::WrongType {
                    field: "BackendType",
                    expected: "a string",
                    found: other.kind(),
                    example: r#""BackendType":"vxlan""#,
                });
            }
        };
        // Go keeps these as raw JSON of any type; the backend decides what they mean.
        let backend_data = doc.get_present("BackendData").map(Json::to_value);
        let backend_v6_data = doc.get_present("BackendV6Data").map(Json::to_value);

        Ok(LeaseAttrs {
            public_ip,
            public_ipv6,
            backend_type,
            backend_data,
            backend_v6_data,
        })
    }

    /// Decodes `BackendData` as vxlan data.
    pub fn vxlan_data(&self) -> Result<VxlanBackendData, LeaseError> {
        match &self.backend_data {
            None => Err(LeaseError::Missing {
                field: "BackendData",
                example: r#""BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}"#,
            }),
            Some(value) => VxlanBackendData::from_value(value),
        }
    }
}

impl LeaseAttrs {
    /// Decodes `BackendV6Data` as vxlan data (the `flannel-v6.<VNI>` device's VNI and MAC).
    pub fn vxlan_v6_data(&self) -> Result<VxlanBackendData, LeaseError> {
        match &self.backend_v6_data {
            None => Err(LeaseError::Missing {
                field: "BackendV6Data",
                example: r#""BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}"#,
            }),
            Some(value) => VxlanBackendData::from_value(value),
        }
    }
}

fn parse_public_ip(text: &str) -> Result<Ipv4Addr, LeaseError> {
    text.parse::<Ipv4Addr>().map_err(|_| {
        let reason = if text.parse::<Ipv6Addr>().is_ok() {
            "PublicIP must be an IPv4 address (an IPv6 address belongs in PublicIPv6)"
        } else {
            "not an IPv4 address"
        };
        LeaseError::InvalidField {
            field: "PublicIP",
            value: clip(text),
            reason: reason.into(),
            example: r#""PublicIP":"192.168.1.11""#,
        }
    })
}

/// The vxlan `BackendData`: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct VxlanBackendData {
    /// `VNI` of the sender's VXLAN device.
    #[serde(rename = "VNI")]
    pub vni: u32,
    /// `VtepMAC`: the MAC of the sender's `flannel.<VNI>` device.
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: MacAddr,
}

const EXAMPLE_VXLAN_DATA: &str = r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}"#;

/// The JSON document of a lease value or vxlan backend data: at most [`MAX_LEASE_BYTES`].
fn json_of(bytes: &[u8]) -> Result<Json, LeaseError> {
    if bytes.len() > MAX_LEASE_BYTES {
        return Err(LeaseError::TooLarge {
            size: bytes.len(),
            limit: MAX_LEASE_BYTES,
        });
    }
    Json::from_slice(bytes).map_err(|e| LeaseError::Syntax {
        detail: e.to_string(),
    })
}

/// The value of the required `key` of vxlan backend data; absent or null is
/// [`LeaseError::Missing`] naming `field`.
fn vxlan_field<'a>(
    map: &'a serde_json::Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a Value, LeaseError> {
    match value_get(map, key) {
        None | Some(Value::Null) => Err(LeaseError::Missing {
            field,
            example: EXAMPLE_VXLAN_DATA,
        }),
        Some(value) => Ok(value),
    }
}

/// `field` of vxlan backend data holds `found` where `expected` belongs.
fn vxlan_wrong_type(field: &'static str, expected: &'static str, found: &Value) -> LeaseError {
    LeaseError::WrongType {
        field,
        expected,
        found: value_kind(found),
        example: EXAMPLE_VXLAN_DATA,
    }
}

impl VxlanBackendData {
    /// As a JSON value (for [`LeaseAttrs::backend_data`]).
    pub fn to_value(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("VNI".to_owned(), Value::from(self.vni));
        map.insert("VtepMAC".to_owned(), Value::from(self.vtep_mac.to_string()));
        Value::Object(map)
    }

    /// The exact JSON flannel writes: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}` (also the
    /// value of the kube `backend-data` annotation).
    pub fn to_json(&self) -> String {
        format!(r#"{{"VNI":{},"VtepMAC":"{}"}}"#, self.vni, self.vtep_mac)
    }

    /// Decodes vxlan backend data with case-insensitive keys. Both `VNI` and `VtepMAC` are
    /// required (Go would default a missing VNI to 0, which no weft node uses).
    pub fn from_value(value: &Value) -> Result<VxlanBackendData, LeaseError> {
        let Value::Object(map) = value else {
            return Err(vxlan_wrong_type("BackendData", "an object", value));
        };
        let vni = match vxlan_field(map, "VNI", "BackendData.VNI")? {
            Value::Number(n) => {
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| LeaseError::InvalidField {
                        field: "BackendData.VNI",
                        value: n.to_string(),
                        reason: "VNI must be a whole number from 0 to 4294967295".into(),
                        example: EXAMPLE_VXLAN_DATA,
                    })?
            }
            other => return Err(vxlan_wrong_type("BackendData.VNI", "a number", other)),
        };
        let vtep_mac = match vxlan_field(map, "VtepMAC", "BackendData.VtepMAC")? {
            Value::String(text) => {
                text.parse::<MacAddr>()
                    .map_err(|e| LeaseError::InvalidField {
                        field: "BackendData.VtepMAC",
                        value: clip(text),
                        reason: format!("not a MAC address ({})", e.reason),
                        example: EXAMPLE_VXLAN_DATA,
                    })?
            }
            other => {
                return Err(vxlan_wrong_type(
                    "BackendData.VtepMAC",
                    "a MAC address string",
                    other,
                ));
            }
        };
        Ok(VxlanBackendData { vni, vtep_mac })
    }

    /// Decodes vxlan backend data from bytes (e.g. the kube `backend-data` annotation).
    pub fn parse(bytes: &[u8]) -> Result<VxlanBackendData, LeaseError> {
        let doc = json_of(bytes)?;
        VxlanBackendData::from_value(&doc.to_value())
    }
}

impl<'de> Deserialize<'de> for VxlanBackendData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        VxlanBackendData::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// A subnet lease: the subnet (from the key) and the attributes (from the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The leased subnet.
    pub subnet: Ipv4Net,
    /// The IPv6 subnet of a dual-stack lease (its key is `<v4>&<v6>`).
    pub subnet6: Option<Ipv6Net>,
    /// The published attributes.
    pub attrs: LeaseAttrs,
}

impl Lease {
    /// The key tail of this lease, e.g. `10.244.1.0-24` (`10.244.1.0-24&fc00:0:0:1::-64`
    /// for a dual-stack lease).
    pub fn key(&self) -> String {
        subnet_key_dual(self.subnet, self.subnet6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLANNEL_BYTES: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn huge_numbers_in_backend_data_read_back_the_same() {
        // Found by the lease_json fuzzer: a 74-digit VNI parsed to an f64 that was written
        // back as a different one (serde_json's fast float parsing without float_roundtrip).
        let raw = br#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":55555555555555555555555555555555555555555555555555555555555555555555555551,"VtepMAC":"c6:d2:32:6f:8f:01"}}"#;
        let attrs = LeaseAttrs::parse(raw).unwrap();
        let again = LeaseAttrs::parse(attrs.to_json().as_bytes()).unwrap();
        assert_eq!(again, attrs);
        assert!(attrs.vxlan_data().is_err(), "such a VNI is no VNI");
    }

    #[test]
    fn vxlan_lease_has_flannels_exact_bytes() {
        let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(192, 168, 64, 3), 1, mac("c6:d2:32:6f:8f:44"));
        assert_eq!(attrs.to_json(), FLANNEL_BYTES);
        assert_eq!(LeaseAttrs::parse(FLANNEL_BYTES.as_bytes()).unwrap(), attrs);
    }

    #[test]
    fn dual_stack_lease_bytes() {
        let text = r#"{"PublicIP":"192.168.1.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}"#;
        let attrs = LeaseAttrs::parse(text.as_bytes()).unwrap();
        assert_eq!(attrs.public_ipv6, Some("2001:db8::11".parse().unwrap()));
        assert_eq!(attrs.to_json(), text);
    }

    #[test]
    fn udp_lease_omits_backend_fields() {
        let attrs = LeaseAttrs {
            public_ip: Ipv4Addr::new(10, 0, 0, 1),
            public_ipv6: None,
            backend_type: None,
            backend_data: None,
            backend_v6_data: None,
        };
        assert_eq!(
            attrs.to_json(),
            r#"{"PublicIP":"10.0.0.1","PublicIPv6":null}"#
        );
        let attrs = LeaseAttrs {
            backend_type: Some(String::new()),
            ..attrs
        };
        assert_eq!(
            attrs.to_json(),
            r#"{"PublicIP":"10.0.0.1","PublicIPv6":null}"#
        );
    }

    #[test]
    fn parse_is_case_insensitive_and_lenient_like_go() {
        let attrs = LeaseAttrs::parse(
            br#" { "publicip" : "10.0.0.2", "backendtype":"host-gw", "backenddata": null, "extra": 1 } "#,
        )
        .unwrap();
        assert_eq!(attrs.public_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(attrs.backend_type.as_deref(), Some("host-gw"));
        assert_eq!(attrs.backend_data, None);

        let attrs = LeaseAttrs::parse(b"{}").unwrap();
        assert_eq!(attrs.public_ip, Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn parse_errors_name_the_field() {
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            (b"", None, "not valid JSON"),
            (b"[1]", None, "must be a JSON object, found an array"),
            (
                br#"{"PublicIP":5}"#,
                Some("PublicIP"),
                "lease field PublicIP: expected an IPv4 address string, found a number",
            ),
            (br#"{"PublicIP":null}"#, Some("PublicIP"), "found null"),
            (
                br#"{"PublicIP":"2001:db8::1"}"#,
                Some("PublicIP"),
                "PublicIP must be an IPv4 address",
            ),
            (
                br#"{"PublicIP":"10.0.0"}"#,
                Some("PublicIP"),
                "not an IPv4 address",
            ),
            (
                br#"{"PublicIP":"10.0.0.1","PublicIPv6":"10.0.0.1"}"#,
                Some("PublicIPv6"),
                "not an IPv6 address",
            ),
            (
                br#"{"PublicIP":"10.0.0.1","PublicIPv6":7}"#,
                Some("PublicIPv6"),
                "expected an IPv6 address string or null",
            ),
            (
                br#"{"PublicIP":"10.0.0.1","BackendType":["vxlan"]}"#,
                Some("BackendType"),
                "lease field BackendType: expected a string, found an array",
            ),
        ];
        for (bytes, field, needle) in cases {
            let err = LeaseAttrs::parse(bytes).unwrap_err();
            assert_eq!(err.field(), *field, "{err}");
            let msg = err.to_string();
            assert!(msg.contains(needle), "{msg}");
            assert!(msg.contains("delete the key"), "{msg}");
        }
    }

    #[test]
    fn oversized_lease_is_rejected() {
        let mut text = String::from(r#"{"PublicIP":"10.0.0.1","BackendData":""#);
        text.push_str(&"a".repeat(MAX_LEASE_BYTES));
        text.push_str("\"}");
        let err = LeaseAttrs::parse(text.as_bytes()).unwrap_err();
        assert!(matches!(err, LeaseError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn vxlan_backend_data_codec() {
        let data = VxlanBackendData {
            vni: 1,
            vtep_mac: mac("aa:bb:cc:dd:ee:01"),
        };
        assert_eq!(data.to_json(), r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}"#);
        assert_eq!(serde_json::to_string(&data).unwrap(), data.to_json());
        assert_eq!(
            VxlanBackendData::parse(br#"{"vni":1,"vtepmac":"AA:BB:CC:DD:EE:01"}"#).unwrap(),
            data
        );
        assert_eq!(
            serde_json::from_str::<VxlanBackendData>(r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}"#)
                .unwrap(),
            data
        );
    }

    #[test]
    fn vxlan_backend_data_errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#""x""#,
                "BackendData",
                "expected an object, found a string",
            ),
            (
                r#"{"VtepMAC":"aa:bb:cc:dd:ee:01"}"#,
                "BackendData.VNI",
                "is missing",
            ),
            (
                r#"{"VNI":-1,"VtepMAC":"aa:bb:cc:dd:ee:01"}"#,
                "BackendData.VNI",
                "whole number",
            ),
            (
                r#"{"VNI":"1","VtepMAC":"aa:bb:cc:dd:ee:01"}"#,
                "BackendData.VNI",
                "expected a number",
            ),
            (r#"{"VNI":1}"#, "BackendData.VtepMAC", "is missing"),
            (
                r#"{"VNI":1,"VtepMAC":"zz"}"#,
                "BackendData.VtepMAC",
                "not a MAC address",
            ),
            (
                r#"{"VNI":1,"VtepMAC":5}"#,
                "BackendData.VtepMAC",
                "expected a MAC address string",
            ),
        ];
        for (text, field, needle) in cases {
            let err = VxlanBackendData::parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.field(), Some(*field), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn attrs_vxlan_data() {
        let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(10, 0, 0, 1), 3, mac("aa:bb:cc:dd:ee:01"));
        assert_eq!(attrs.vxlan_data().unwrap().vni, 3);
        let attrs = LeaseAttrs {
            backend_data: None,
            ..attrs
        };
        assert_eq!(attrs.vxlan_data().unwrap_err().field(), Some("BackendData"));
    }

    #[test]
    fn go_escaping_in_backend_type() {
        let attrs = LeaseAttrs {
            public_ip: Ipv4Addr::new(10, 0, 0, 1),
            public_ipv6: None,
            backend_type: Some("<x>".into()),
            backend_data: Some(serde_json::json!({"a": "&"})),
            backend_v6_data: None,
        };
        assert_eq!(
            attrs.to_json(),
            r#"{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":"\u003cx\u003e","BackendData":{"a":"\u0026"}}"#
        );
    }

    #[test]
    fn lease_key() {
        let lease = Lease {
            subnet6: None,
            subnet: "10.244.3.0/24".parse().unwrap(),
            attrs: LeaseAttrs::vxlan(Ipv4Addr::new(10, 0, 0, 1), 1, mac("aa:bb:cc:dd:ee:01")),
        };
        assert_eq!(lease.key(), "10.244.3.0-24");
    }

    #[test]
    fn a_host_gw_lease_is_written_as_flanneld_writes_it() {
        let attrs = LeaseAttrs::host_gw(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            attrs.to_json(),
            r#"{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        assert_eq!(
            LeaseAttrs::parse(attrs.to_json().as_bytes()).unwrap(),
            attrs
        );
    }

    #[test]
    fn a_dual_stack_vxlan_lease_is_written_byte_for_byte_as_flanneld_writes_it() {
        let flannel = r#"{"PublicIP":"192.168.1.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}"#;
        let ours = LeaseAttrs::vxlan(Ipv4Addr::new(192, 168, 1, 11), 1, mac("aa:bb:cc:dd:ee:01"))
            .with_vxlan_v6("2001:db8::11".parse().unwrap(), 1, mac("aa:bb:cc:dd:ee:02"));
        assert_eq!(ours.to_json(), flannel);
        let parsed = LeaseAttrs::parse(flannel.as_bytes()).unwrap();
        assert_eq!(parsed, ours);
        assert_eq!(
            parsed.vxlan_v6_data().unwrap().vtep_mac,
            mac("aa:bb:cc:dd:ee:02")
        );
        let lease = Lease {
            subnet: "10.244.37.0/24".parse().unwrap(),
            subnet6: Some("fc00:0:0:25::/64".parse().unwrap()),
            attrs: parsed,
        };
        assert_eq!(lease.key(), "10.244.37.0-24&fc00:0:0:25::-64");
        let v4_only = LeaseAttrs::parse(FLANNEL_BYTES.as_bytes()).unwrap();
        assert!(
            v4_only
                .vxlan_v6_data()
                .unwrap_err()
                .to_string()
                .contains("BackendV6Data")
        );
    }
}
