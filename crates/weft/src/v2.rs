//! Reading flannel's keys from the legacy etcd v2 store (`/v2/keys/...`, plain HTTP/JSON), so
//! `weft network check` can explain the v2/v3 split and `migrate-v2` can copy the config.
//!
//! The GETs go through ureq (plain HTTP, no proxy from the environment: an etcd in the VPC is
//! never reached through a web proxy); interpreting the v2 answer is pure and unit-tested.
//! https endpoints are not probed: the v2 API is a migration aid only.

use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response read; a flannel config or lease directory is far smaller.
const MAX_RESPONSE: u64 = 8 << 20;

/// etcd v2 error code for a missing key.
pub const ERR_KEY_NOT_FOUND: u64 = 100;

/// A plain-HTTP endpoint: weft-store's endpoint type, the one `--etcd-endpoints` parser.
pub use weft_store::Endpoint as HttpEndpoint;

/// An `http://host[:port][/...]` URL's endpoint (port 80 when absent, as a URL means).
/// Returns None for https or anything else.
pub fn http_endpoint(url: &str) -> Option<HttpEndpoint> {
    HttpEndpoint::parse(url).ok().filter(|e| !e.is_https())
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

/// GET `path` from a plain-HTTP endpoint, with optional Basic auth.
pub fn http_get(
    ep: &HttpEndpoint,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Result<HttpResponse, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(TIMEOUT))
        .user_agent("weft")
        .build()
        .into();
    let url = format!("http://{}{path}", ep.authority());
    let failed = |e: ureq::Error| {
        format!(
            "HTTP request to {} failed: {e}; is this an etcd client URL?",
            ep.authority()
        )
    };
    let mut req = agent.get(&url).header("Accept", "application/json");
    if let Some((user, password)) = auth {
        req = req.header(
            "Authorization",
            format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
        );
    }
    let mut resp = req.call().map_err(failed)?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE)
        .read_to_vec()
        .map_err(failed)?;
    Ok(HttpResponse {
        status,
        content_type,
        body,
    })
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
        let ep = http_endpoint("http://10.250.0.2:2379").unwrap();
        assert_eq!(
            (ep.authority(), ep.host(), ep.port_or_default()),
            ("10.250.0.2:2379", "10.250.0.2", 2379)
        );
        assert_eq!(http_endpoint("http://etcd/").unwrap().port_or_default(), 80);
        let v6 = http_endpoint("http://[::1]:2379").unwrap();
        assert_eq!((v6.host(), v6.port_or_default()), ("::1", 2379));
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

    /// A one-connection HTTP server on loopback that answers `raw` to whatever it is asked
    /// and hands back the request it got.
    fn serve_once(raw: &'static str) -> (HttpEndpoint, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = std::io::BufReader::new(s);
            let mut req = String::new();
            while r.read_line(&mut req).unwrap() > 2 {}
            r.get_mut().write_all(raw.as_bytes()).unwrap();
            req
        });
        (
            http_endpoint(&format!("http://127.0.0.1:{port}")).unwrap(),
            handle,
        )
    }

    fn get(raw: &'static str) -> Result<HttpResponse, String> {
        let (ep, server) = serve_once(raw);
        let got = http_get(&ep, "/v2/keys/coreos.com/network/config", None);
        server.join().unwrap();
        got
    }

    #[test]
    fn parses_a_found_key() {
        let (ep, server) = serve_once(FOUND);
        let r = http_get(
            &ep,
            "/v2/keys/coreos.com/network/config",
            Some(("root", "s3cret!")),
        )
        .unwrap();
        let req = server.join().unwrap();
        assert!(
            req.starts_with("GET /v2/keys/coreos.com/network/config HTTP/1.1\r\n"),
            "{req}"
        );
        let auth = req
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            })
            .map(|(_, v)| v.trim());
        assert_eq!(auth, Some("Basic cm9vdDpzM2NyZXQh"), "{req}");
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
        let r = get(missing).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(parse_v2_get(&r).unwrap(), V2Get::NotFound);

        let disabled = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n\r\n404 page not found\n";
        let r = get(disabled).unwrap();
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
        assert_eq!(get(chunked).unwrap().body, b"hello world");
        let close = "HTTP/1.0 200 OK\r\n\r\nuntil close";
        assert_eq!(get(close).unwrap().body, b"until close");
        let short = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        assert!(get(short).is_err());
        let ssh = "SSH-2.0-OpenSSH_9.2\r\n\r\n";
        let e = get(ssh).unwrap_err();
        assert!(e.contains("is this an etcd client URL"), "{e}");
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
