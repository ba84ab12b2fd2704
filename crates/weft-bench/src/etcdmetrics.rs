//! etcd's own Prometheus metrics (`GET /metrics` on its client port), so the load weft puts
//! on etcd is counted by etcd itself, not by weftd.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::ns;

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape: every sample.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the Prometheus text format (comments and malformed lines are skipped).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Scrape { samples }
    }

    /// Sum of every series of `name` whose labels include all of `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Messages etcd received for gRPC method `method` (a unary call is one message; a
    /// stream counts every request sent on it).
    pub fn grpc_msgs(&self, method: &str) -> f64 {
        self.sum("grpc_server_msg_received_total", &[("grpc_method", method)])
    }

    /// gRPC calls (unary) or streams started for `method`.
    pub fn grpc_started(&self, method: &str) -> f64 {
        self.sum("grpc_server_started_total", &[("grpc_method", method)])
    }

    /// The value of label `label` on the first series of `name` (e.g. etcd's version).
    pub fn label(&self, name: &str, label: &str) -> Option<String> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .find_map(|(_, labels, _)| {
                labels
                    .iter()
                    .find(|(k, _)| k == label)
                    .map(|(_, v)| v.clone())
            })
    }

    /// Whether the scrape looks like etcd's (guards against an empty or foreign answer).
    pub fn is_etcd(&self) -> bool {
        self.samples
            .iter()
            .any(|(n, _, _)| n == "etcd_server_proposals_committed_total")
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head.to_string(), Vec::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let labels = body
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            (name.to_string(), labels)
        }
    };
    Some((name, labels, value))
}

/// Scrapes etcd at `ip:port` from a thread inside namespace `from`.
pub fn scrape(from: &str, ip: Ipv4Addr, port: u16) -> Result<Scrape> {
    let text = ns::join(ns::spawn_in(from, move || {
        let mut s =
            std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2))
                .with_context(|| format!("connecting to etcd's metrics at {ip}:{port}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {ip}\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    })?)?;
    let Some((status, body)) = text.split_once("\r\n\r\n") else {
        bail!("etcd's /metrics answered without a header/body split");
    };
    if !status.starts_with("HTTP/1.") || !status.contains(" 200 ") {
        bail!(
            "etcd's /metrics answered {}",
            status.lines().next().unwrap_or("")
        );
    }
    let scrape = Scrape::parse(body);
    if !scrape.is_etcd() {
        bail!("the answer of {ip}:{port}/metrics has no etcd server metrics");
    }
    Ok(scrape)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP grpc_server_msg_received_total Total number of RPC stream messages received on the server.
# TYPE grpc_server_msg_received_total counter
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 3
grpc_server_msg_received_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 12
grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 12
etcd_server_proposals_committed_total 8
etcd_debugging_lease_ttl_total_bucket{le="+Inf"} 1
etcd_debugging_mvcc_watcher_total 4
etcd_server_version{server_version="3.4.23"} 1
"#;

    #[test]
    fn sums_series_by_label() {
        let s = Scrape::parse(TEXT);
        assert!(s.is_etcd());
        assert_eq!(s.grpc_msgs("LeaseKeepAlive"), 3.0);
        assert_eq!(s.grpc_msgs("Range"), 12.0);
        assert_eq!(s.grpc_started("Range"), 12.0);
        assert_eq!(s.grpc_msgs("Put"), 0.0);
        assert_eq!(s.sum("etcd_server_proposals_committed_total", &[]), 8.0);
        assert_eq!(s.sum("etcd_debugging_mvcc_watcher_total", &[]), 4.0);
        assert_eq!(
            s.sum("etcd_debugging_lease_ttl_total_bucket", &[("le", "+Inf")]),
            1.0
        );
        assert_eq!(
            s.label("etcd_server_version", "server_version").as_deref(),
            Some("3.4.23")
        );
        assert!(!Scrape::parse("foo 1\n").is_etcd());
    }
}
