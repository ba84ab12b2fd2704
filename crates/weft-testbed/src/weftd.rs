//! weftd on a testbed node as weftd's tests, the lab and the benchmarks run it: flanneld's
//! own flags for that node, where its log goes, and the subnet.env it writes. One place, so
//! the three agree on what a node's weftd is.

use std::path::PathBuf;
use std::time::Duration;

use weft_core::subnet_env::SubnetEnv;

use crate::{Testbed, wait_until};

/// flanneld's flags that every weftd on node `i` needs: the bed's etcd and the node's
/// subnet.env (`<node dir>/run/flannel/subnet.env`, where the flannel CNI plugin reads it).
/// Nothing else: the rest is the caller's (and flanneld's defaults).
pub fn flanneld_args(tb: &Testbed, i: usize) -> Vec<String> {
    vec![
        format!("--etcd-endpoints={}", tb.etcd_endpoint()),
        format!("--subnet-file={}", tb.subnet_file(i).display()),
    ]
}

/// Where node `i`'s weftd writes its log (stdout and stderr).
pub fn log_path(tb: &Testbed, i: usize) -> PathBuf {
    tb.node(i).dir.join("weftd.log")
}

/// Node `i`'s weftd log so far (empty when there is none).
pub fn read_log(tb: &Testbed, i: usize) -> String {
    std::fs::read_to_string(log_path(tb, i)).unwrap_or_default()
}

/// The last `lines` lines of node `i`'s weftd log, for error messages.
pub fn log_tail(tb: &Testbed, i: usize, lines: usize) -> String {
    let log = read_log(tb, i);
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Node `i`'s subnet.env, if written and valid.
pub fn subnet_env(tb: &Testbed, i: usize) -> Option<SubnetEnv> {
    std::fs::read_to_string(tb.subnet_file(i))
        .ok()
        .and_then(|t| SubnetEnv::parse(&t).ok())
}

/// Waits up to `timeout` for node `i`'s subnet.env.
pub fn wait_subnet_env(tb: &Testbed, i: usize, timeout: Duration) -> Option<SubnetEnv> {
    wait_until(timeout, Duration::from_millis(10), || subnet_env(tb, i))
}
