//! `weft-lab connectivity test`: every pod pair of a testbed cluster (the one `weft-lab demo --keep`
//! leaves, or any testbed's `testbed.json`), each with three checks: ICMP (2 pings), TCP (a
//! connection to a listener opened in the target pod) and an MTU-sized ping that may not be
//! fragmented (`ping -M do -s <pod MTU - 28>`). A table (or `-o json`); exit 1 on any failure,
//! the failing pairs listed first.
//!
//! The verdicts and the rendering are pure ([`Check`], [`render_text`]); probing is in [`run`].

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use weft_testbed::{in_netns, parse_ping_summary};

use weft::cli::{OutputArgs, OutputFormat};
use weft::human;
use weft::output::{self, Outcome};

/// The TCP port each target pod listens on during the test.
const TCP_PORT: u16 = 17_771;

#[derive(Debug, Subcommand)]
pub enum ConnectivityCommand {
    /// Test every pod pair of a testbed cluster (root): ICMP, TCP and MTU-sized packets.
    ///
    /// Reads the cluster's manifest (`testbed.json`: the pods, their namespaces and nodes),
    /// by default the one `weft-lab demo --keep` leaves. Exit 1 when any pair fails a check.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub out: OutputArgs,
    /// The testbed's directory or its testbed.json [default: the cluster of `weft-lab demo --keep`].
    #[arg(long, value_name = "PATH")]
    pub testbed: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
struct ManifestPod {
    ns: String,
    ip: Ipv4Addr,
    node: usize,
}

#[derive(Debug, Clone, Deserialize)]
struct ManifestNode {
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Manifest {
    nodes: Vec<ManifestNode>,
    pods: Vec<ManifestPod>,
}

/// One check's verdict: the round trip when it passed, else why not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub ok: bool,
    pub ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn pass(took: Duration) -> Check {
        Check {
            ok: true,
            ms: Some(took.as_secs_f64() * 1000.0),
            error: None,
        }
    }

    fn fail(why: impl Into<String>) -> Check {
        Check {
            ok: false,
            ms: None,
            error: Some(why.into()),
        }
    }

    fn cell(&self) -> String {
        match (self.ok, self.ms) {
            // Sub-millisecond round trips are the usual case here: keep three decimals.
            (true, Some(ms)) if ms < 1000.0 => format!("{ms:.3} ms"),
            (true, Some(ms)) => human::duration(Duration::from_secs_f64(ms / 1000.0)),
            (true, None) => "ok".into(),
            (false, _) => "FAIL".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    pub from: String,
    pub to: String,
    pub from_ip: Ipv4Addr,
    pub to_ip: Ipv4Addr,
    pub icmp: Check,
    pub tcp: Check,
    pub mtu: Check,
    /// The ICMP payload of the MTU check (the target pod's MTU - 28).
    pub mtu_payload: u32,
}

impl PairResult {
    pub fn ok(&self) -> bool {
        self.icmp.ok && self.tcp.ok && self.mtu.ok
    }

    fn failures(&self) -> Vec<String> {
        [("ICMP", &self.icmp), ("TCP", &self.tcp), ("MTU", &self.mtu)]
            .into_iter()
            .filter(|(_, c)| !c.ok)
            .map(|(name, c)| format!("{name}: {}", c.error.as_deref().unwrap_or("failed")))
            .collect()
    }
}

/// The table: failing pairs first (with why), then one row per pair, then the summary.
pub fn render_text(pairs: &[PairResult]) -> String {
    let mut out = String::new();
    let failed: Vec<&PairResult> = pairs.iter().filter(|p| !p.ok()).collect();
    if !failed.is_empty() {
        out.push_str("failures:\n");
        for p in &failed {
            let _ = writeln!(
                out,
                "  {} {} -> {} {}: {}",
                p.from,
                p.from_ip,
                p.to,
                p.to_ip,
                p.failures().join("; ")
            );
        }
        out.push('\n');
    }
    let header = ["FROM", "TO", "ICMP", "TCP", "MTU", "RESULT"].map(String::from);
    let rows: Vec<[String; 6]> = pairs
        .iter()
        .map(|p| {
            [
                format!("{} {}", p.from, p.from_ip),
                format!("{} {}", p.to, p.to_ip),
                p.icmp.cell(),
                p.tcp.cell(),
                format!("{} ({} B)", p.mtu.cell(), p.mtu_payload + 28),
                if p.ok() { "ok" } else { "FAIL" }.to_string(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let mut l = String::new();
        for (c, w) in r.iter().zip(widths) {
            let _ = write!(l, "{c:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    let mut ips: Vec<Ipv4Addr> = Vec::new();
    for p in pairs {
        for ip in [p.from_ip, p.to_ip] {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    let by_ips: std::collections::HashMap<(Ipv4Addr, Ipv4Addr), &PairResult> =
        pairs.iter().map(|p| ((p.from_ip, p.to_ip), p)).collect();
    out.push_str("\nICMP round trips in ms (FAIL = the pair failed a check)\n");
    out.push_str(&rtt_matrix(&ips, |i, j| {
        match by_ips.get(&(ips[i], ips[j])) {
            Some(p) if p.ok() => p
                .icmp
                .ms
                .map_or_else(|| "ok".into(), |ms| format!("{ms:.3}")),
            Some(_) => "FAIL".into(),
            None => "?".into(),
        }
    }));
    let _ = writeln!(out, "\n{}", summary(pairs));
    out
}

/// The all-pairs round-trip matrix of `weft-lab demo` and `weft-lab connectivity test`: a header of
/// target IPs, one row per source, `cell(i, j)` off the diagonal and `-` on it.
pub fn rtt_matrix(ips: &[Ipv4Addr], cell: impl Fn(usize, usize) -> String) -> String {
    let mut out = format!("{:<14}", "from \\ to");
    for ip in ips {
        let _ = write!(out, "{:>13}", ip.to_string());
    }
    out.push('\n');
    for (i, a) in ips.iter().enumerate() {
        let _ = write!(out, "{:<14}", a.to_string());
        for j in 0..ips.len() {
            let c = if i == j { "-".to_string() } else { cell(i, j) };
            let _ = write!(out, "{c:>13}");
        }
        out.push('\n');
    }
    out
}

pub fn summary(pairs: &[PairResult]) -> String {
    let ok = pairs.iter().filter(|p| p.ok()).count();
    format!(
        "{ok} of {} pod pairs pass ICMP, TCP and MTU: {}",
        pairs.len(),
        if ok == pairs.len() { "OK" } else { "FAIL" }
    )
}

fn manifest_path(arg: Option<&Path>) -> Result<PathBuf> {
    let dir = match arg {
        Some(p) if p.is_file() => return Ok(p.to_path_buf()),
        Some(p) => p.to_path_buf(),
        None => {
            let state = crate::demo::STATE_FILE;
            let text = std::fs::read_to_string(state).map_err(|_| {
                anyhow!(
                    "no kept demo cluster ({state} is missing): start one with `weft-lab demo --keep`, or pass --testbed <dir>"
                )
            })?;
            PathBuf::from(text.trim())
        }
    };
    let path = dir.join("testbed.json");
    if !path.is_file() {
        bail!(
            "{} does not exist: pass --testbed with the directory of a running testbed (the one `weft-lab demo --keep` prints)",
            path.display()
        );
    }
    Ok(path)
}

fn ping(ns: &str, ip: Ipv4Addr, extra: &[&str]) -> Check {
    let started = Instant::now();
    let ip = ip.to_string();
    let mut args = vec!["netns", "exec", ns, "ping", "-n", "-q", "-W", "1"];
    args.extend(extra);
    args.push(&ip);
    match Command::new("ip").args(&args).output() {
        Ok(o) if o.status.success() => {
            // ping's own average round trip, else the wall time of the run.
            let took = parse_ping_summary(&String::from_utf8_lossy(&o.stdout))
                .and_then(|st| st.avg_rtt_ms)
                .map_or_else(
                    || started.elapsed(),
                    |ms| Duration::from_secs_f64(ms / 1000.0),
                );
            Check::pass(took)
        }
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let err = String::from_utf8_lossy(&o.stderr);
            let why = text
                .lines()
                .find(|l| l.contains("packet loss"))
                .or_else(|| err.lines().next())
                .unwrap_or("no reply")
                .trim()
                .to_string();
            Check::fail(why)
        }
        Err(e) => Check::fail(format!("cannot run `ip netns exec {ns} ping`: {e}")),
    }
}

fn pod_mtu(ns: &str) -> Result<u32> {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/sys/class/net/eth0/mtu"])
        .output()
        .with_context(|| format!("reading the MTU of eth0 in {ns}"))?;
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            anyhow!(
                "cannot read the MTU of eth0 in pod namespace {ns} (is the cluster still running?)"
            )
        })
}

/// A TCP round trip: connect from `ns` to the listener, send 4 bytes, read them back.
fn tcp(ns: &str, ip: Ipv4Addr) -> Check {
    let started = Instant::now();
    let r = in_netns(ns, move || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&(ip, TCP_PORT).into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"weft")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        if &buf != b"weft" {
            return Err(std::io::Error::other("the echo came back changed"));
        }
        Ok(())
    });
    match r {
        Ok(Ok(())) => Check::pass(started.elapsed()),
        Ok(Err(e)) => Check::fail(format!("{ip}:{TCP_PORT}: {e}")),
        Err(e) => Check::fail(e.to_string()),
    }
}

/// An echo listener in pod namespace `ns` until `stop` is set (accepts poll every 20 ms).
fn listen(ns: &str, ip: Ipv4Addr) -> Result<TcpListener> {
    let l = in_netns(ns, move || TcpListener::bind((ip, TCP_PORT)))
        .map_err(|e| anyhow!("{e}"))?
        .with_context(|| format!("listening on {ip}:{TCP_PORT} in {ns}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn serve(l: &TcpListener, stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() {
                    let _ = s.write_all(&buf);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

pub fn run(cmd: ConnectivityCommand) -> Result<Outcome> {
    let ConnectivityCommand::Test(args) = cmd;
    let path = manifest_path(args.testbed.as_deref())?;
    let m: Manifest = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a testbed manifest", path.display()))?;
    if m.pods.len() < 2 {
        bail!(
            "{} lists {} pod(s): a test needs at least 2",
            path.display(),
            m.pods.len()
        );
    }
    let name = |p: &ManifestPod| {
        let node = m.nodes.get(p.node).map_or("?", |n| n.name.as_str());
        let idx = p.ns.rsplit('p').next().unwrap_or("?");
        format!("{node}/p{idx}")
    };
    let mtus: Vec<u32> = m
        .pods
        .iter()
        .map(|p| pod_mtu(&p.ns))
        .collect::<Result<_>>()?;
    let listeners: Vec<TcpListener> = m
        .pods
        .iter()
        .map(|p| listen(&p.ns, p.ip))
        .collect::<Result<_>>()?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let pairs: Vec<PairResult> = std::thread::scope(|s| {
        for l in &listeners {
            let stop = &stop;
            s.spawn(move || serve(l, stop));
        }
        let workers: Vec<_> = m
            .pods
            .iter()
            .map(|a| {
                let (pods, mtus) = (&m.pods, &mtus);
                let name = &name;
                s.spawn(move || {
                    pods.iter()
                        .zip(mtus)
                        .filter(|(b, _)| b.ns != a.ns)
                        .map(|(b, mtu)| {
                            let payload = mtu.saturating_sub(28);
                            let size = payload.to_string();
                            PairResult {
                                from: name(a),
                                to: name(b),
                                from_ip: a.ip,
                                to_ip: b.ip,
                                icmp: ping(&a.ns, b.ip, &["-c", "2", "-i", "0.2"]),
                                tcp: tcp(&a.ns, b.ip),
                                mtu: ping(&a.ns, b.ip, &["-c", "1", "-M", "do", "-s", &size]),
                                mtu_payload: payload,
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let out = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    });
    let mut out = Outcome {
        failed: pairs.iter().any(|p| !p.ok()),
        ..Outcome::default()
    };
    match args.out.output {
        OutputFormat::Json => {
            let failed: Vec<&PairResult> = pairs.iter().filter(|p| !p.ok()).collect();
            out.say(output::json(&serde_json::json!({
                "ok": failed.is_empty(),
                "failed": failed,
                "pairs": pairs,
                "summary": summary(&pairs),
            })));
        }
        OutputFormat::Text => out.stdout.push_str(&render_text(&pairs)),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip_of(name: &str) -> Ipv4Addr {
        if name.starts_with("n0") {
            Ipv4Addr::new(10, 244, 1, 2)
        } else {
            Ipv4Addr::new(10, 244, 2, 2)
        }
    }

    fn pair(from: &str, to: &str, tcp_ok: bool) -> PairResult {
        PairResult {
            from: from.into(),
            to: to.into(),
            from_ip: ip_of(from),
            to_ip: ip_of(to),
            icmp: Check::pass(Duration::from_micros(156_000)),
            tcp: if tcp_ok {
                Check::pass(Duration::from_millis(2))
            } else {
                Check::fail("10.244.1.2:17771: connection timed out")
            },
            mtu: Check::pass(Duration::from_millis(1)),
            mtu_payload: 1422,
        }
    }

    #[test]
    fn failures_first_then_the_table_and_the_verdict() {
        let text = render_text(&[pair("n0/p0", "n1/p0", true), pair("n1/p0", "n0/p0", false)]);
        assert!(
            text.starts_with(
                "failures:\n  n1/p0 10.244.2.2 -> n0/p0 10.244.1.2: TCP: 10.244.1.2:17771: connection timed out\n"
            ),
            "{text}"
        );
        assert!(text.contains("156.000 ms"), "{text}");
        assert!(text.contains("(1450 B)"), "{text}");
        assert!(
            text.ends_with("1 of 2 pod pairs pass ICMP, TCP and MTU: FAIL\n"),
            "{text}"
        );
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        let matrix: Vec<String> = text
            .lines()
            .skip_while(|l| !l.starts_with("from \\ to"))
            .take(3)
            .map(words)
            .collect();
        assert_eq!(
            matrix,
            [
                "from \\ to 10.244.1.2 10.244.2.2",
                "10.244.1.2 - 156.000",
                "10.244.2.2 FAIL -"
            ],
            "{text}"
        );
        let ok = render_text(&[pair("n0/p0", "n1/p0", true)]);
        assert!(!ok.contains("failures:"), "{ok}");
        assert!(ok.ends_with(": OK\n"), "{ok}");
    }
}
