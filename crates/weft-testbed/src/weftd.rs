//! weftd on a testbed node as weftd's tests, the lab and the benchmarks run it: flanneld's
//! own flags for that node, where its log goes, and the subnet.env it writes. One place, so
//! the three agree on what a node's weftd is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_core::subnet_env::SubnetEnv;

use crate::{Pid, Testbed, TestbedError, wait_until, with_private_var_lib};

/// flanneld's default etcd key for the network config (`--etcd-prefix` /coreos.com/network).
pub const CONFIG_KEY: &str = "/coreos.com/network/config";

/// The network config of the stock manifests: VXLAN over 10.244.0.0/16, flannel's defaults.
pub const NET_CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

/// A bed of `nodes` nodes whose etcd holds `config` at [`CONFIG_KEY`].
pub fn bed(label: &str, nodes: usize, config: &str) -> Result<Testbed, TestbedError> {
    let tb = Testbed::new(label, crate::TestbedConfig::with_nodes(nodes))?;
    tb.etcdctl(&["put", CONFIG_KEY, config])?;
    Ok(tb)
}

/// [`spawn`] on nodes `0..n`, each with the same `extra` flags.
pub fn spawn_all(
    tb: &mut Testbed,
    weftd: &Path,
    n: usize,
    extra: &[&str],
) -> Result<Vec<Pid>, TestbedError> {
    (0..n).map(|i| spawn(tb, weftd, i, extra, &[])).collect()
}

/// flanneld's flags that every weftd on node `i` needs: the bed's etcd and the node's
/// subnet.env (`<node dir>/run/flannel/subnet.env`, where the flannel CNI plugin reads it).
/// Nothing else: the rest is the caller's (and flanneld's defaults).
pub fn flanneld_args(tb: &Testbed, i: usize) -> Vec<String> {
    vec![
        format!("--etcd-endpoints={}", tb.etcd_endpoint()),
        format!("--subnet-file={}", tb.subnet_file(i).display()),
    ]
}

/// The directory every weftd of the bed sees as `/var/lib`: [`spawn`] runs weftd in a private
/// mount namespace where it stands over `/var/lib`, so the host's own `/var/lib` is never
/// touched and all nodes share one default state dir `/var/lib/weft`, as several weftd on one
/// host do.
pub fn var_lib(tb: &Testbed) -> PathBuf {
    let dir = tb.dir().join("var-lib");
    // create_dir_all fails only on a bed whose dir is gone; spawn then reports it.
    let _ = std::fs::create_dir_all(dir.join("weft"));
    dir
}

/// Starts `weftd` on node `i` the way a user runs it on a host: [`flanneld_args`] plus
/// `extra`, no `--state-dir` (the default, under the bed's shared [`var_lib`]), logging to
/// [`log_path`] with `RUST_LOG=info,weftd=debug` plus `env`. Returns once the pid runs weftd
/// itself (the mount-namespace wrappers exec it in place), so signals reach weftd.
pub fn spawn(
    tb: &mut Testbed,
    weftd: &Path,
    i: usize,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<Pid, TestbedError> {
    let mut args = flanneld_args(tb, i);
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut vars = vec![("RUST_LOG".to_string(), "info,weftd=debug".to_string())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (program, args) = with_private_var_lib(&var_lib(tb), &weftd.display().to_string(), args);
    let ns = tb.node(i).ns.clone();
    let log = log_path(tb, i);
    let pid = tb.spawn(&ns, &program, &args, &vars, &log)?;
    if !wait_exec(tb, pid, weftd) {
        return Err(TestbedError::Io {
            what: format!(
                "node {i}: the mount-namespace wrapper did not exec {} within 5 s",
                weftd.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        });
    }
    Ok(pid)
}

/// Waits (up to 5 s) until `pid` runs `program` itself, after its wrappers' execs. True once
/// it does, or when the process is already gone (the caller sees its exit status and log);
/// false when the wrapper still runs.
pub fn wait_exec(tb: &mut Testbed, pid: Pid, program: &Path) -> bool {
    let Ok(exe) = std::fs::canonicalize(program) else {
        return false;
    };
    wait_until(Duration::from_secs(5), Duration::from_millis(5), || {
        let now = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        (now.as_ref() == Some(&exe) || !tb.is_running(pid)).then_some(())
    })
    .is_some()
}

/// Waits up to `timeout` for node `i`'s subnet.env; panics with its weftd log otherwise.
pub fn ready(tb: &Testbed, i: usize, timeout: Duration) -> SubnetEnv {
    wait_subnet_env(tb, i, timeout).unwrap_or_else(|| {
        panic!(
            "weftd on node {i} wrote no subnet.env within {timeout:?}; log:\n{}",
            read_log(tb, i)
        )
    })
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
