//! Plain-HTTP GETs from the calling thread's network namespace (weftd's health server, etcd's
//! /metrics), through ureq: one client for every test, the lab and the benchmarks. Call it
//! from a thread that has joined the namespace the address is reachable from.

use std::net::SocketAddr;
use std::time::Duration;

/// `GET http://<addr><path>`: the status and the body (any status; only transport failures
/// and a body over 64 MiB are errors). No proxy from the environment is used.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(timeout))
        .timeout_global(Some(timeout + timeout))
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let err = |e: ureq::Error| std::io::Error::other(format!("GET {url}: {e}"));
    let mut resp = agent.get(&url).call().map_err(err)?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(err)?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_body_of_any_answer() {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\nnot ready",
                "HTTP/1.0 200 OK\r\n\r\nok\n",
            ] {
                let (s, _) = listener.accept().unwrap();
                let mut r = std::io::BufReader::new(s);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                r.get_mut().write_all(answer.as_bytes()).unwrap();
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(get(addr, "/readyz", t).unwrap(), (503, "not ready".into()));
        assert_eq!(get(addr, "/healthz", t).unwrap(), (200, "ok\n".into()));
        server.join().unwrap();
        // Nothing listens any more: an error that names the URL.
        let e = get(addr, "/healthz", t).unwrap_err().to_string();
        assert!(e.contains(&format!("http://{addr}/healthz")), "{e}");
    }
}
