//! The network config weft-cni receives on stdin (flannel's `NetConf`).

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Error;

/// Where flanneld (and weftd) write the node's subnet lease.
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// Where the rendered delegate configs are kept between ADD and DEL.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

/// The fields weft-cni reads. Everything else in the config is ignored, as flannel does
/// (the runtime may add `capabilities`, `args`, ...).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// `cniVersion`; empty when absent.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub cni_version: String,
    /// Network name; becomes the delegate's `name`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub name: String,
    /// Plugin type (`flannel`); not used.
    #[serde(default, rename = "type", deserialize_with = "null_as_empty")]
    pub plugin_type: String,
    /// `subnetFile`; empty means [`DEFAULT_SUBNET_FILE`].
    #[serde(default, deserialize_with = "null_as_empty")]
    pub subnet_file: String,
    /// `dataDir`; empty means [`DEFAULT_DATA_DIR`].
    #[serde(default, deserialize_with = "null_as_empty")]
    pub data_dir: String,
    /// The delegate config to complete.
    #[serde(default)]
    pub delegate: Option<Map<String, Value>>,
    /// Base of the delegate's `ipam`.
    #[serde(default)]
    pub ipam: Option<Map<String, Value>>,
    /// Runtime config (capabilities args); copied into the delegate.
    #[serde(default)]
    pub runtime_config: Option<Map<String, Value>>,
    /// The ADD result, given on CHECK (and DEL from 0.4.0 on).
    #[serde(default)]
    pub prev_result: Option<Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Network names the way libcni's skel accepts them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn valid_network_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl NetConf {
    /// Decodes stdin: not JSON or wrong field types is code 6.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, Error> {
        let value: Value =
            serde_json::from_slice(stdin).map_err(|source| Error::Decode { source })?;
        // serde would also build a struct from a JSON array; a config must be an object.
        if !value.is_object() {
            let source = <serde_json::Error as serde::de::Error>::custom(format!(
                "expected a JSON object, found {}",
                weft_core::value_kind(&value)
            ));
            return Err(Error::Decode { source });
        }
        serde_json::from_value(value).map_err(|source| Error::Decode { source })
    }

    /// Checks what every verb but VERSION needs: a usable network name.
    pub fn validate(&self) -> Result<(), Error> {
        if self.name.is_empty() {
            return Err(Error::InvalidConfig(
                "\"name\" is missing; set the network name in the CNI config, e.g. \"name\": \"cbr0\"".to_string(),
            ));
        }
        if !valid_network_name(&self.name) {
            return Err(Error::InvalidConfig(format!(
                "\"name\" {:?} has invalid characters; a network name must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
                weft_core::clip::clip(&self.name)
            )));
        }
        Ok(())
    }

    /// `subnetFile` or its default.
    pub fn subnet_file(&self) -> PathBuf {
        PathBuf::from(if self.subnet_file.is_empty() {
            DEFAULT_SUBNET_FILE
        } else {
            &self.subnet_file
        })
    }

    /// `dataDir` or its default.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(if self.data_dir.is_empty() {
            DEFAULT_DATA_DIR
        } else {
            &self.data_dir
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kube_flannel_plugin_config_with_defaults() {
        let conf = NetConf::parse(br#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true},"capabilities":{"portMappings":true}}"#).unwrap();
        assert_eq!(conf.cni_version, "0.3.1");
        assert_eq!(conf.name, "cbr0");
        assert_eq!(conf.plugin_type, "flannel");
        assert_eq!(conf.subnet_file(), PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(conf.data_dir(), PathBuf::from("/var/lib/cni/flannel"));
        assert_eq!(conf.delegate.unwrap().len(), 2);
        assert!(conf.ipam.is_none());
    }

    #[test]
    fn explicit_paths_and_nulls() {
        let conf = NetConf::parse(br#"{"name":"n","subnetFile":"/tmp/s.env","dataDir":"/tmp/d","cniVersion":null,"delegate":null,"runtimeConfig":null}"#).unwrap();
        assert_eq!(conf.subnet_file(), PathBuf::from("/tmp/s.env"));
        assert_eq!(conf.data_dir(), PathBuf::from("/tmp/d"));
        assert_eq!(conf.cni_version, "");
        assert!(conf.delegate.is_none());
        let conf = NetConf::parse(br#"{"name":"n","subnetFile":"","dataDir":""}"#).unwrap();
        assert_eq!(conf.subnet_file(), PathBuf::from(DEFAULT_SUBNET_FILE));
        assert_eq!(conf.data_dir(), PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn decode_errors_are_code_6() {
        for bad in [
            &b""[..],
            b"not json",
            b"[]",
            b"null",
            b"\"x\"",
            br#"{"name":"n","delegate":"bridge"}"#,
            br#"{"name":"n","ipam":[1]}"#,
            br#"{"name":"n","runtimeConfig":7}"#,
            br#"{"name":1}"#,
            br#"{"cniVersion":0.3}"#,
        ] {
            let err = NetConf::parse(bad).unwrap_err();
            assert_eq!(err.code(), 6, "{}", String::from_utf8_lossy(bad));
            assert!(
                err.to_string()
                    .starts_with("failed to decode the network config on stdin")
            );
            assert!(!err.details().is_empty());
        }
    }

    #[test]
    fn network_name_rules() {
        let named = |n: &str| NetConf {
            name: n.to_string(),
            ..NetConf::default()
        };
        assert!(named("cbr0").validate().is_ok());
        assert!(named("my-net_1.x").validate().is_ok());
        for bad in ["", "-x", "a b", "a/b", "é"] {
            let err = named(bad).validate().unwrap_err();
            assert_eq!(err.code(), 7, "{bad:?}");
            assert!(err.to_string().contains("\"name\""), "{err}");
        }
    }
}
