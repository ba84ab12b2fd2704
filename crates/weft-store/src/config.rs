//! How to reach etcd: the store config and `--etcd-endpoints` parsing.

use std::path::PathBuf;

/// How to reach etcd: the same knobs as flanneld's `--etcd-*` flags.
#[derive(Clone, Default)]
pub struct StoreConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for StoreConfig {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A malformed `--etcd-endpoints` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error(
        "--etcd-endpoints {:?} holds no endpoint; pass e.g. --etcd-endpoints http://10.0.0.5:2379", weft_core::clip::clip(.0)
    )]
    Empty(String),
    #[error("--etcd-endpoints entry {:?} must start with http:// or https://, e.g. {}", weft_core::clip::clip(.0), scheme_example(.0))]
    Scheme(String),
}

/// A corrected example for an endpoint without an http(s) scheme: `x:2379` → `http://x:2379`,
/// `ftp://x:2379` → `http://x:2379`.
pub(crate) fn scheme_example(entry: &str) -> String {
    let rest = entry.split_once("://").map_or(entry, |(_, rest)| rest);
    format!("http://{}", weft_core::clip::clip(rest))
}

/// Splits flanneld's comma-separated `--etcd-endpoints` and checks each entry's scheme.
pub fn parse_endpoints(value: &str) -> Result<Vec<String>, EndpointError> {
    let endpoints: Vec<String> = value
        .split(',')
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(EndpointError::Empty(value.to_string()));
    }
    if let Some(bad) = endpoints
        .iter()
        .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
    {
        return Err(EndpointError::Scheme(bad.clone()));
    }
    Ok(endpoints)
}
