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
    #[error("--etcd-endpoints entry {:?} must start with http:// or https://, e.g. --etcd-endpoints {}", weft_core::clip::clip(.0), scheme_example(.0))]
    Scheme(String),
    #[error("--etcd-endpoints entry {:?} is not scheme://host[:port] (a host name or address, a numeric port, no spaces or quotes); pass e.g. --etcd-endpoints http://10.0.0.5:2379", weft_core::clip::clip(.0))]
    Shape(String),
}

/// A corrected example for an endpoint without an http(s) scheme: `x:2379` → `http://x:2379`,
/// `ftp://x:2379` → `http://x:2379`.
pub(crate) fn scheme_example(entry: &str) -> String {
    let rest = entry.split_once("://").map_or(entry, |(_, rest)| rest);
    format!("http://{}", weft_core::clip::clip(rest))
}

/// One etcd client URL of `--etcd-endpoints`: `http[s]://host[:port][/path]`, the one parser
/// every part of weft uses (weftd and the CLI's store, `weft manifest`'s checks, the etcd v2
/// reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    https: bool,
    /// `host` or `host:port` as written (IPv6 in brackets).
    authority: String,
    /// The host without brackets.
    host: String,
    port: Option<u16>,
    /// What follows the authority, without the trailing slash (etcd's clients ignore it).
    path: String,
}

impl Endpoint {
    /// Parses one entry (trimmed; a trailing `/` is dropped, as etcdctl does).
    pub fn parse(entry: &str) -> Result<Endpoint, EndpointError> {
        let entry = entry.trim();
        let (https, rest) = if let Some(rest) = entry.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = entry.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(EndpointError::Scheme(
                entry.trim_end_matches('/').to_string(),
            ));
        };
        let rest = rest.trim_end_matches('/');
        let url = format!("{}{rest}", if https { "https://" } else { "http://" });
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let shape = || EndpointError::Shape(url.clone());
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(shape)?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(shape()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
        if !host_ok {
            return Err(shape());
        }
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| shape())?),
        };
        Ok(Endpoint {
            https,
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            path: path.to_string(),
            url,
        })
    }

    /// The URL as weft dials it (trimmed, no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// `host[:port]` as written.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The host, without an IPv6 address's brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port as written, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port dialled: as written, or the scheme's (80, 443).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }

    /// A path after the authority (`""` when there is none).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Splits flanneld's comma-separated `--etcd-endpoints` and parses each entry.
pub fn parse_endpoint_list(value: &str) -> Result<Vec<Endpoint>, EndpointError> {
    let endpoints = value
        .split(',')
        .filter(|e| !e.trim().trim_end_matches('/').is_empty())
        .map(Endpoint::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(EndpointError::Empty(value.to_string()));
    }
    Ok(endpoints)
}

/// Splits flanneld's comma-separated `--etcd-endpoints` and checks each entry: the URLs.
pub fn parse_endpoints(value: &str) -> Result<Vec<String>, EndpointError> {
    Ok(parse_endpoint_list(value)?
        .into_iter()
        .map(|e| e.url)
        .collect())
}
