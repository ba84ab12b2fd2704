//! Reading flannel's keys from the legacy etcd v2 store (`/v2/keys/...`, plain HTTP/JSON), so
//! `weft network check` can explain the v2/v3 split and `migrate-v2` can copy the config.
//!
//! A GET-only HTTP/1.1 client over `std::net::TcpStream` (one request per connection,
//! `Connection: close`) keeps the dependency tree as it is; the response parsing is pure and
//! unit-tested. https endpoints are not probed: the v2 API is a migration aid only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response read; a flannel config or lease directory is far smaller.
const MAX_RESPONSE: u64 = 8 << 20;

/// etcd v2 error code for a missing key.
pub const ERR_KEY_NOT_FOUND: u64 = 100;

/// A plain-HTTP etcd endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpoint {
    /// `host:port` for the Host header and for resolving.
    pub authority: String,
    pub host: String,
    pub port: u16,
}

/// Splits `http://host[:port][/...]` into host and port (port 80 when absent, as a URL means).
/// Returns None for https or anything else.
pub fn http_endpoint(url: &str) -> Option<HttpEndpoint> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.is_empty() {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), 80),
        }
    };
    Some(HttpEndpoint {
        authority: authority.to_string(),
        host,
        port,
    })
}

/// The v2 URL path of a key: `/v2/keys` + the key, percent-encoding what is not path-safe.
pub fn key_path(key: &str) -> String {
    let mut out = String::from("/v2/keys");
    if !key.starts_with('/') {
        out.push('/');
    }
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~:@&=+,".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 (RFC 4648, with padding), for the Basic auth header.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Parses a whole HTTP/1.x response (the connection was closed by the server), handling
/// `Content-Length`, chunked transfer encoding and read-to-close bodies.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the response has no complete HTTP header")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "the HTTP header is not text")?;
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!(
            "not an HTTP/1.x response (status line {status_line:?}); is this an etcd client URL?"
        ));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad HTTP status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut content_type = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_string());
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = content_length {
        body.get(..n)
            .ok_or_else(|| {
                format!(
                    "the response body is cut short ({} of {n} bytes)",
                    body.len()
                )
            })?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line is cut short")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("a chunk is cut short")?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("a chunk is cut short")?;
    }
}

/// GET `path` from a plain-HTTP endpoint, with optional Basic auth.
pub fn http_get(
    ep: &HttpEndpoint,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Result<HttpResponse, String> {
    let addrs: Vec<SocketAddr> = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", ep.host))?
        .collect();
    let mut last = format!("{} resolves to no address", ep.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let io = |e: std::io::Error| format!("HTTP request to {} failed: {e}", ep.authority);
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: weft\r\nConnection: close\r\n",
        ep.authority
    );
    if let Some((user, password)) = auth {
        req.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64(format!("{user}:{password}").as_bytes())
        ));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(io)?;
    parse_response(&raw)
}

/// What the v2 store said about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Get {
    /// The key holds a value.
    Value { value: String, modified_index: u64 },
    /// The key is a directory: the names and values of its direct children.
    Dir {
        children: Vec<(String, Option<String>)>,
    },
    /// errorCode 100: no such key.
    NotFound,
    /// The server answered without the v2 API (etcd started without `--enable-v2`, or v2
    /// removed as in etcd 3.6).
    Disabled,
    /// Any other v2 error (auth, ...).
    Error { code: u64, message: String },
}

/// Interprets a v2 `GET /v2/keys/<key>` response.
pub fn parse_v2_get(resp: &HttpResponse) -> Result<V2Get, String> {
    let json: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let Some(json) = json.filter(Value::is_object) else {
        // etcd without --enable-v2 answers `404 page not found` as text/plain.
        if resp.status == 404 {
            return Ok(V2Get::Disabled);
        }
        return Err(format!(
            "HTTP {} with a body that is not etcd v2 JSON ({:?}); is this an etcd client URL?",
            resp.status,
            String::from_utf8_lossy(&resp.body[..resp.body.len().min(120)])
        ));
    };
    if let Some(code) = json.get("errorCode").and_then(Value::as_u64) {
        if code == ERR_KEY_NOT_FOUND {
            return Ok(V2Get::NotFound);
        }
        let message = json
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let cause = json.get("cause").and_then(Value::as_str).unwrap_or("");
        return Ok(V2Get::Error {
            code,
            message: if cause.is_empty() {
                message
            } else {
                format!("{message} ({cause})")
            },
        });
    }
    let node = json
        .get("node")
        .filter(|n| n.is_object())
        .ok_or_else(|| format!("HTTP {} without a \"node\" in the v2 answer", resp.status))?;
    if node.get("dir").and_then(Value::as_bool) == Some(true) {
        let children = node
            .get("nodes")
            .and_then(Value::as_array)
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| {
                        let key = n.get("key")?.as_str()?.to_string();
                        let value = n.get("value").and_then(Value::as_str).map(String::from);
                        Some((key, value))
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Ok(V2Get::Dir { children });
    }
    let value = node
        .get("value")
        .and_then(Value::as_str)
        .ok_or("the v2 node has no string \"value\"")?
        .to_string();
    let modified_index = node
        .get("modifiedIndex")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(V2Get::Value {
        value,
        modified_index,
    })
}

/// The outcome of probing one endpoint for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// https endpoint: not probed.
    SkippedHttps { endpoint: String },
    /// The endpoint answered.
    Answer { endpoint: String, get: V2Get },
    /// The endpoint could not be asked or gave no sensible answer.
    Failed { endpoint: String, error: String },
}

/// Asks the endpoints one after the other for `key` until one answers.
pub fn probe(endpoints: &[String], key: &str, auth: Option<(&str, &str)>) -> Vec<Probe> {
    let mut out = Vec::new();
    for url in endpoints {
        let Some(ep) = http_endpoint(url) else {
            out.push(Probe::SkippedHttps {
                endpoint: url.clone(),
            });
            continue;
        };
        match http_get(&ep, &key_path(key), auth).and_then(|r| parse_v2_get(&r)) {
            Ok(get) => {
                out.push(Probe::Answer {
                    endpoint: url.clone(),
                    get,
                });
                return out;
            }
            Err(error) => out.push(Probe::Failed {
                endpoint: url.clone(),
                error,
            }),
        }
    }
    out
}

/// The answer of the first endpoint that answered, if any.
pub fn answer(probes: &[Probe]) -> Option<(&str, &V2Get)> {
    probes.iter().find_map(|p| match p {
        Probe::Answer { endpoint, get } => Some((endpoint.as_str(), get)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            content_type: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            http_endpoint("http://10.250.0.2:2379"),
            Some(HttpEndpoint {
                authority: "10.250.0.2:2379".into(),
                host: "10.250.0.2".into(),
                port: 2379
            })
        );
        assert_eq!(http_endpoint("http://etcd/").unwrap().port, 80);
        let v6 = http_endpoint("http://[::1]:2379").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2379));
        assert_eq!(http_endpoint("https://10.0.0.1:2379"), None);
        assert_eq!(http_endpoint("http://"), None);
        assert_eq!(http_endpoint("http://h:port"), None);
    }

    #[test]
    fn key_paths_and_base64() {
        assert_eq!(
            key_path("/coreos.com/network/config"),
            "/v2/keys/coreos.com/network/config"
        );
        assert_eq!(key_path("/a b/c?"), "/v2/keys/a%20b/c%3F");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"root:s3cret!"), "cm9vdDpzM2NyZXQh");
    }

    // What etcd 3.4.23 with --enable-v2 answers (captured with curl).
    const FOUND: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Etcd-Index: 4\r\nContent-Length: 171\r\n\r\n{\"action\":\"get\",\"node\":{\"key\":\"/coreos.com/network/config\",\"value\":\"{\\\"Network\\\":\\\"10.244.0.0/16\\\",\\\"Backend\\\":{\\\"Type\\\":\\\"vxlan\\\"}}\",\"modifiedIndex\":4,\"createdIndex\":4}}\n";

    #[test]
    fn parses_a_found_key() {
        let r = parse_response(FOUND.as_bytes()).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            parse_v2_get(&r).unwrap(),
            V2Get::Value {
                value: r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#.into(),
                modified_index: 4
            }
        );
    }

    #[test]
    fn parses_missing_disabled_and_errors() {
        let missing = "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 89\r\n\r\n{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/coreos.com/network/nope\",\"index\":4}\n";
        let r = parse_response(missing.as_bytes()).unwrap();
        assert_eq!(parse_v2_get(&r).unwrap(), V2Get::NotFound);

        let disabled = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n\r\n404 page not found\n";
        let r = parse_response(disabled.as_bytes()).unwrap();
        assert_eq!(parse_v2_get(&r).unwrap(), V2Get::Disabled);

        let denied = resp(
            401,
            r#"{"errorCode":110,"message":"The request requires user authentication","cause":"Insufficient credentials","index":0}"#,
        );
        assert_eq!(
            parse_v2_get(&denied).unwrap(),
            V2Get::Error {
                code: 110,
                message: "The request requires user authentication (Insufficient credentials)"
                    .into()
            }
        );
        let err = parse_v2_get(&resp(200, "<html>")).unwrap_err();
        assert!(err.contains("not etcd v2 JSON"), "{err}");
        let err = parse_v2_get(&resp(200, "{\"x\":1}")).unwrap_err();
        assert!(err.contains("node"), "{err}");
    }

    #[test]
    fn parses_a_directory() {
        let body = r#"{"action":"get","node":{"key":"/coreos.com/network/subnets","dir":true,"nodes":[{"key":"/coreos.com/network/subnets/10.244.5.0-24","value":"{\"PublicIP\":\"1.2.3.4\"}","ttl":100,"modifiedIndex":5}],"modifiedIndex":5}}"#;
        assert_eq!(
            parse_v2_get(&resp(200, body)).unwrap(),
            V2Get::Dir {
                children: vec![(
                    "/coreos.com/network/subnets/10.244.5.0-24".into(),
                    Some(r#"{"PublicIP":"1.2.3.4"}"#.into())
                )]
            }
        );
        // An empty directory has no "nodes".
        let body = r#"{"action":"get","node":{"key":"/x","dir":true}}"#;
        assert_eq!(
            parse_v2_get(&resp(200, body)).unwrap(),
            V2Get::Dir { children: vec![] }
        );
    }

    #[test]
    fn chunked_and_close_delimited_bodies() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked.as_bytes()).unwrap().body,
            b"hello world"
        );
        let close = "HTTP/1.0 200 OK\r\n\r\nuntil close";
        assert_eq!(
            parse_response(close.as_bytes()).unwrap().body,
            b"until close"
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn probe_skips_https_and_reports_unreachable() {
        // Port 1 on localhost: refused at once (nothing listens there in a test environment).
        let probes = probe(
            &["https://10.0.0.1:2379".into(), "http://127.0.0.1:1".into()],
            "/coreos.com/network/config",
            None,
        );
        assert!(matches!(&probes[0], Probe::SkippedHttps { .. }));
        assert!(matches!(&probes[1], Probe::Failed { error, .. } if error.contains("127.0.0.1:1")));
        assert_eq!(answer(&probes), None);
    }
}
