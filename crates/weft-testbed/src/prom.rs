//! The Prometheus text format, as etcd's and weftd's `/metrics` answer: one parser for the
//! testbed's etcd member control and for the benchmarks.

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

    /// The value of the first series of `name` without labels; None when there is none.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, labels, _)| n == name && labels.is_empty())
            .map(|(_, _, v)| *v)
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
        assert_eq!(s.value("etcd_debugging_mvcc_watcher_total"), Some(4.0));
        assert_eq!(s.value("grpc_server_started_total"), None, "labelled only");
        assert_eq!(s.value("nope"), None);
    }
}
