//! weftd on testbed nodes, started the way the integration tests start it.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use weft_testbed::{Pid, Testbed, TestbedConfig};

use crate::etcd::CONFIG_KEY;

/// Port of weftd's /healthz, /readyz and /metrics on every node.
pub const HEALTH_PORT: u16 = 8081;

/// The binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    pub weftd: PathBuf,
    pub weft_cni: PathBuf,
    /// Extra environment for every weftd (e.g. allocator knobs to experiment with).
    pub weftd_env: Vec<(String, String)>,
}

/// A bed with `nodes` nodes, etcd and `config` written as the network config.
pub fn bed(label: &str, nodes: usize, underlay_mtu: u32, config: &str) -> Result<Testbed> {
    let tb = Testbed::new(
        label,
        TestbedConfig {
            nodes,
            underlay_mtu,
            ..TestbedConfig::default()
        },
    )
    .with_context(|| format!("building testbed {label}"))?;
    tb.etcdctl(&["put", CONFIG_KEY, config])
        .context("writing the network config")?;
    Ok(tb)
}

pub use weft_testbed::weftd::{log_path, subnet_env};

/// Node `i`'s weftd log so far.
pub fn log(tb: &Testbed, i: usize) -> String {
    weft_testbed::weftd::read_log(tb, i)
}

/// Starts weftd on node `i` (flags as in weftd's integration tests, plus `--ip-masq` as in
/// kube-flannel.yml); returns its pid once it runs.
pub fn start_weftd(tb: &mut Testbed, bins: &Bins, i: usize) -> Result<Pid> {
    start_weftd_with(tb, bins, i, &[])
}

/// [`start_weftd`] with `extra` flags appended (e.g. a short `--subnet-lease-ttl`).
pub fn start_weftd_with(tb: &mut Testbed, bins: &Bins, i: usize, extra: &[String]) -> Result<Pid> {
    let n = tb.node(i).clone();
    let mut args = weft_testbed::weftd::flanneld_args(tb, i);
    args.extend([
        format!("--state-dir={}", n.dir.join("state").display()),
        format!("--healthz-port={HEALTH_PORT}"),
        "--ip-masq".to_string(),
    ]);
    args.extend(extra.iter().cloned());
    let mut env = vec![("RUST_LOG".to_string(), "info".to_string())];
    env.extend(bins.weftd_env.iter().cloned());
    tb.spawn(&n.ns, &bins.weftd, &args, &env, &log_path(tb, i))
        .with_context(|| format!("starting weftd on node {i}"))
}

/// Waits until node `i` has written subnet.env; returns its subnet.
pub fn wait_ready(tb: &Testbed, i: usize, timeout: Duration) -> Result<Ipv4Net> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(sn) = subnet_env(tb, i).and_then(|e| e.subnet) {
            return Ok(sn);
        }
        if Instant::now() >= deadline {
            bail!(
                "weftd on node {i} wrote no subnet.env within {timeout:?}; its log ends with:\n{}",
                weft_testbed::weftd::log_tail(tb, i, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The status of a GET of weftd's health server; call it from a thread inside the node's
/// namespace.
pub fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> Option<u16> {
    weft_testbed::http::get((ip, port).into(), path, Duration::from_secs(1))
        .ok()
        .map(|(code, _)| code)
}

/// Runs `cmd`, killing it after `timeout`; returns its output (an error if it had to be killed).
pub fn run_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().with_context(|| format!("running {desc}"))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let reader = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out_t = reader(stdout.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_t = reader(stderr.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{desc} did not finish within {timeout:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// `ip -n <ns> -batch -` (or `bridge -n <ns> -batch -`) with `lines`; returns the wall time.
pub fn batch(tool: &str, ns: &str, lines: &[String]) -> Result<Duration> {
    let mut script = lines.join("\n");
    script.push('\n');
    let mut c = Command::new(tool);
    c.args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = c
        .spawn()
        .with_context(|| format!("running {tool} -batch"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{tool} -n {ns} -batch failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// `ip -n <ns> <args>`, failing on a non-zero exit.
pub fn ip(ns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip -n {ns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates `flannel.1` by hand the way weftd does (VNI 1, no learning, port 8472, MTU
/// underlay − 50, the subnet address as /32), for the floors.
pub fn hand_vxlan(ns: &str, local: Ipv4Addr, mac: &str, mtu: u32, addr: Ipv4Addr) -> Result<()> {
    ip(
        ns,
        &[
            "link",
            "add",
            "flannel.1",
            "address",
            mac,
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &local.to_string(),
            "dev",
            "eth0",
            "nolearning",
            "dstport",
            "8472",
        ],
    )?;
    ip(
        ns,
        &["link", "set", "flannel.1", "mtu", &mtu.to_string(), "up"],
    )?;
    ip(
        ns,
        &["addr", "add", &format!("{addr}/32"), "dev", "flannel.1"],
    )?;
    Ok(())
}

/// Whether a binary is runnable (exists as a file).
pub fn require_file(p: &Path, what: &str, flag: &str) -> Result<()> {
    if p.is_file() {
        Ok(())
    } else {
        bail!(
            "{what} {} is missing: build it (`cargo build --release --bins`, which scripts/bench.sh runs) or pass {flag}",
            p.display()
        )
    }
}

/// Seconds since UTC midnight now (to line weftd's log timestamps up with our clock).
pub fn now_day_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() % 86400.0)
        .unwrap_or(0.0)
}

/// The UTC seconds-of-day of the first weftd log line containing `needle` (tracing's
/// default format starts each line with an RFC 3339 UTC timestamp).
pub fn log_time(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let ts = line.split_whitespace().next()?;
    let t = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracing_timestamps() {
        let log = "2026-03-01T10:00:01.500000Z  INFO weftd::daemon: holding lease subnet=10.0.0.0/24\n2026-03-01T10:00:02.250000Z  INFO weftd::daemon: weftd is ready";
        assert_eq!(log_time(log, "holding lease"), Some(36001.5));
        assert_eq!(log_time(log, "is ready"), Some(36002.25));
        assert_eq!(log_time(log, "nope"), None);
    }
}
