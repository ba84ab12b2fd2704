//! dataplane: iperf3 TCP and round-trip latency over weft's VXLAN path (pods made by weft-cni,
//! peers programmed by weftd), beside the same path programmed by hand with `ip`/`bridge` in
//! an identical fresh set of namespaces (the kernel's own floor), the underlay node→node,
//! same-node pod→pod and a hand-made host-gw path; then kernel tunings on weft's path.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use weft_testbed::{CniSetup, Testbed, TestbedConfig};

use crate::cluster::{self, Bins};
use crate::ns;
use crate::report::{Table, fmt_us, gbit, met, percentile, percentile_f, ratio};

const CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const PORT: u16 = 5201;

#[derive(Debug, Clone)]
pub struct Opts {
    pub mtus: Vec<u32>,
    pub secs: u64,
    pub streams: Vec<usize>,
    pub ping_count: u32,
    pub rr_count: usize,
    pub tuning: bool,
    /// Runs per path; each lasts `secs / reps`.
    pub reps: usize,
}

/// A source namespace and a destination address (with the namespace that serves it).
#[derive(Debug, Clone)]
struct PathSpec {
    from: String,
    to_ns: String,
    to: Ipv4Addr,
}

/// Throughput of one iperf3 TCP run in bit/s.
fn iperf(p: &PathSpec, secs: u64, streams: usize) -> Result<f64> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &p.from, "iperf3", "-c"])
        .arg(p.to.to_string())
        .args(["-p", &PORT.to_string(), "-t", &secs.to_string()])
        .args([
            "-P",
            &streams.to_string(),
            "-J",
            "--connect-timeout",
            "3000",
        ]);
    let out = cluster::run_timeout(c, Duration::from_secs(secs + 30))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 {} → {} printed no JSON: {}",
            p.from,
            p.to,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3 {} → {}: {e}", p.from, p.to);
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 {} → {}: no end.sum_received", p.from, p.to))
}

/// `ping -c N -i 0.01`: (avg, p99) in ms.
fn ping(p: &PathSpec, count: u32) -> Result<(f64, f64)> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &p.from, "ping", "-n", "-c"])
        .arg(count.to_string())
        .args(["-i", "0.01", "-W", "1"])
        .arg(p.to.to_string());
    let out = cluster::run_timeout(c, Duration::from_secs(u64::from(count) / 50 + 20))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    if times.len() < count as usize * 9 / 10 {
        bail!(
            "ping {} → {}: only {} of {count} replies",
            p.from,
            p.to,
            times.len()
        );
    }
    let avg = times.iter().sum::<f64>() / times.len() as f64;
    Ok((avg, percentile_f(&times, 99.0).unwrap_or(avg)))
}

/// A TCP_RR-style loop: 1-byte request, 1-byte response, `count` times over one connection
/// (Nagle off); returns (p50, p99) in ms.
fn tcp_rr(p: &PathSpec, count: usize) -> Result<(f64, f64)> {
    let (port_tx, port_rx) = channel();
    let server = ns::spawn_in(&p.to_ns, move || {
        let l = TcpListener::bind(("0.0.0.0", 0))?;
        let _ = port_tx.send(l.local_addr()?.port());
        l.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("no TCP_RR client within 10 s");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e.into()),
            }
        };
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b) {
                Ok(0) => return Ok(()),
                Ok(_) => s.write_all(&b)?,
                Err(e) => return Err(e.into()),
            }
        }
    })?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow!("the TCP_RR server did not start"))?;
    let to = p.to;
    let client = ns::spawn_in(&p.from, move || {
        let mut s = TcpStream::connect_timeout(&(to, port).into(), Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [7u8; 1];
        let mut v = Vec::with_capacity(count);
        for i in 0..count + 50 {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            if i >= 50 {
                v.push(t.elapsed());
            }
        }
        Ok(v)
    })?;
    let v = ns::join(client);
    let srv = ns::join(server);
    let v = v?;
    srv?;
    let f = |q| {
        percentile(&v, q)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    Ok((f(50.0), f(99.0)))
}

/// Starts a persistent iperf3 server in `ns` and waits until it listens.
fn iperf_server(tb: &mut Testbed, ns: &str) -> Result<()> {
    let log = tb.dir().join(format!("iperf3-{ns}.log"));
    tb.spawn(
        ns,
        Path::new("iperf3"),
        &[
            "-s".into(),
            "-p".into(),
            PORT.to_string(),
            "--forceflush".into(),
        ],
        &[],
        &log,
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server listening")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "iperf3 server in {ns} did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    )
}

fn wait_ping(tb: &Testbed, from: &str, to: Ipv4Addr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if tb
            .ping(from, to, 2, Duration::from_secs(2))
            .is_ok_and(|s| s.received > 0)
        {
            return Ok(());
        }
    }
    bail!("{from} cannot reach {to}")
}

struct Beds {
    w: Testbed,
    h: Testbed,
    underlay: PathSpec,
    weft: PathSpec,
    hand: PathSpec,
    same: PathSpec,
}

fn build(bins: &Bins, mtu: u32) -> Result<Beds> {
    // weft: two nodes running weftd, pods made by weft-cni → bridge → host-local.
    let mut w = cluster::bed(&format!("bench-dp-weft-{mtu}"), 2, mtu, CONFIG)?;
    cluster::start_weftd(&mut w, bins, 0)?;
    cluster::start_weftd(&mut w, bins, 1)?;
    cluster::wait_ready(&w, 0, Duration::from_secs(30))?;
    cluster::wait_ready(&w, 1, Duration::from_secs(30))?;
    let cni = CniSetup::new(&bins.weft_cni);
    let a = w.add_cni_pod(0, &cni)?.pod;
    let a2 = w.add_cni_pod(0, &cni)?.pod;
    let b = w.add_cni_pod(1, &cni)?.pod;
    wait_ping(&w, &a.ns, b.ip)?;

    // hand: the same topology, every object made with ip/bridge, no daemon, no iptables.
    let mut h = Testbed::new(
        &format!("bench-dp-hand-{mtu}"),
        TestbedConfig {
            nodes: 2,
            underlay_mtu: mtu,
            etcd: false,
            ..TestbedConfig::default()
        },
    )?;
    let pod_mtu = mtu - 50;
    let ha = h.add_pod(
        0,
        Ipv4Addr::new(10, 244, 1, 2),
        24,
        Ipv4Addr::new(10, 244, 1, 1),
        pod_mtu,
    )?;
    let hb = h.add_pod(
        1,
        Ipv4Addr::new(10, 244, 2, 2),
        24,
        Ipv4Addr::new(10, 244, 2, 1),
        pod_mtu,
    )?;
    let macs = ["0e:be:dd:00:00:01", "0e:be:dd:00:00:02"];
    for (i, mac) in macs.iter().enumerate() {
        let n = h.node(i).clone();
        cluster::hand_vxlan(
            &n.ns,
            n.ip,
            mac,
            pod_mtu,
            Ipv4Addr::new(10, 244, i as u8 + 1, 0),
        )?;
    }
    for (i, j) in [(0usize, 1usize), (1, 0)] {
        let ns = h.node(i).ns.clone();
        let gw = Ipv4Addr::new(10, 244, j as u8 + 1, 0);
        let peer_ip = h.node(j).ip;
        cluster::ip(
            &ns,
            &[
                "neigh",
                "replace",
                &gw.to_string(),
                "lladdr",
                macs[j],
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ],
        )?;
        let out = Command::new("bridge")
            .args([
                "-n",
                &ns,
                "fdb",
                "replace",
                macs[j],
                "dev",
                "flannel.1",
                "dst",
            ])
            .arg(peer_ip.to_string())
            .args(["self", "permanent"])
            .output()?;
        if !out.status.success() {
            bail!(
                "bridge fdb replace: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster::ip(
            &ns,
            &[
                "route",
                "replace",
                &format!("{gw}/24"),
                "via",
                &gw.to_string(),
                "dev",
                "flannel.1",
                "onlink",
            ],
        )?;
    }
    wait_ping(&h, &ha.ns, hb.ip)?;

    let n1 = w.node(1).clone();
    for ns in [b.ns.clone(), a2.ns.clone(), n1.ns.clone()] {
        iperf_server(&mut w, &ns)?;
    }
    iperf_server(&mut h, &hb.ns)?;
    Ok(Beds {
        underlay: PathSpec {
            from: w.node(0).ns.clone(),
            to_ns: n1.ns.clone(),
            to: n1.ip,
        },
        weft: PathSpec {
            from: a.ns.clone(),
            to_ns: b.ns.clone(),
            to: b.ip,
        },
        hand: PathSpec {
            from: ha.ns.clone(),
            to_ns: hb.ns.clone(),
            to: hb.ip,
        },
        same: PathSpec {
            from: a.ns.clone(),
            to_ns: a2.ns.clone(),
            to: a2.ip,
        },
        w,
        h,
    })
}

/// Copies weft's iptables ruleset (iptables-save on each weft node) into the matching hand
/// node; returns how many rules (`-A` lines) node 0 holds.
fn copy_rules(w: &Testbed, h: &Testbed) -> Result<usize> {
    let mut count = 0;
    for i in 0..2 {
        let saved = w.exec(&w.node(i).ns, &["iptables-save"])?;
        if i == 0 {
            count = saved.lines().filter(|l| l.starts_with("-A ")).count();
        }
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &h.node(i).ns, "iptables-restore"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(saved.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "iptables-restore on the hand node {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(count)
}

/// Removes the ruleset again from the hand nodes: `nft flush ruleset` deletes the tables,
/// so no netfilter hook (and no conntrack) stays behind; without nft, iptables flushes the
/// chains (the empty base chains then stay registered).
fn flush_rules(h: &Testbed) -> Result<()> {
    for i in 0..2 {
        let ns = h.node(i).ns.clone();
        if h.exec(&ns, &["nft", "flush", "ruleset"]).is_err() {
            for table in ["nat", "filter"] {
                h.exec(&ns, &["iptables", "-t", table, "-F"])?;
                h.exec(&ns, &["iptables", "-t", table, "-X"])?;
            }
        }
    }
    Ok(())
}

/// Switches the hand bed from VXLAN to host-gw routing (pod subnets via the peer node).
fn to_host_gw(h: &Testbed) -> Result<()> {
    for (i, j) in [(0usize, 1usize), (1, 0)] {
        let ns = h.node(i).ns.clone();
        let dst = format!("10.244.{}.0/24", j + 1);
        cluster::ip(&ns, &["route", "del", &dst])?;
        cluster::ip(
            &ns,
            &[
                "route",
                "add",
                &dst,
                "via",
                &h.node(j).ip.to_string(),
                "dev",
                "eth0",
            ],
        )?;
    }
    Ok(())
}

/// One ethtool setting tried on both weft nodes.
struct Knob {
    name: &'static str,
    dev: &'static str,
    features: &'static [(&'static str, &'static str)],
    why: &'static str,
}

const KNOBS: &[Knob] = &[
    Knob {
        name: "eth0: gro on",
        dev: "eth0",
        features: &[("gro", "on")],
        why: "GRO on the underlay veth (enables its NAPI path), so the VXLAN UDP tunnel can aggregate before decapsulation",
    },
    Knob {
        name: "eth0: gro on + rx-udp-gro-forwarding on",
        dev: "eth0",
        features: &[("gro", "on"), ("rx-udp-gro-forwarding", "on")],
        why: "the issue's suggestion: UDP GRO also for forwarded UDP",
    },
    Knob {
        name: "flannel.1: tx-checksum-ip-generic off",
        dev: "flannel.1",
        features: &[("tx-checksum-ip-generic", "off")],
        why: "the kops / flannel troubleshooting workaround for the kernel checksum bug: checksums in software",
    },
];

/// Current values of `features` on `dev` in `ns` (`ethtool -k` long names).
fn ethtool_get(
    tb: &Testbed,
    ns: &str,
    dev: &str,
    features: &[&str],
) -> Result<Vec<(String, String)>> {
    let text = tb.exec(ns, &["ethtool", "-k", dev])?;
    let long = |short: &str| match short {
        "gro" => "generic-receive-offload".to_string(),
        "gso" => "generic-segmentation-offload".to_string(),
        "tso" => "tcp-segmentation-offload".to_string(),
        other => other.to_string(),
    };
    features
        .iter()
        .map(|f| {
            let key = format!("{}:", long(f));
            let v = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(&key))
                .and_then(|r| r.split_whitespace().next())
                .ok_or_else(|| anyhow!("ethtool -k {dev} in {ns} has no {f}"))?;
            Ok((f.to_string(), v.to_string()))
        })
        .collect()
}

fn ethtool_set(tb: &Testbed, ns: &str, dev: &str, features: &[(String, String)]) -> Result<()> {
    let mut args: Vec<&str> = vec!["ethtool", "-K", dev];
    for (f, v) in features {
        args.push(f);
        args.push(v);
    }
    tb.exec(ns, &args).map(drop).map_err(Into::into)
}

/// Mean, min and max of a set of runs, in bit/s.
#[derive(Debug, Clone, Copy)]
struct Stat {
    mean: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(v: &[f64]) -> Stat {
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        Stat { mean, min, max }
    }
    /// `9.80 Gbit/s (9.52–10.08)` when there were several runs.
    fn show(&self, reps: usize) -> String {
        if reps > 1 {
            format!(
                "{} ({:.2}–{:.2})",
                gbit(self.mean),
                self.min / 1e9,
                self.max / 1e9
            )
        } else {
            gbit(self.mean)
        }
    }
}

/// Runs every path `reps` times for `secs / reps` seconds each, alternating the order from
/// one round to the next so that drift on a shared machine hits all paths alike.
fn measure(paths: &[&PathSpec], streams: usize, o: &Opts) -> Result<Vec<Stat>> {
    measure_prepared(paths, streams, o, &|_| Ok(()))
}

/// Like [`measure`], calling `prepare(k)` before each run of path `k`.
fn measure_prepared(
    paths: &[&PathSpec],
    streams: usize,
    o: &Opts,
    prepare: &dyn Fn(usize) -> Result<()>,
) -> Result<Vec<Stat>> {
    let per = (o.secs / o.reps.max(1) as u64).max(1);
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for r in 0..o.reps.max(1) {
        let order: Vec<usize> = if r % 2 == 0 {
            (0..paths.len()).collect()
        } else {
            (0..paths.len()).rev().collect()
        };
        for k in order {
            prepare(k)?;
            runs[k].push(iperf(paths[k], per, streams)?);
        }
    }
    Ok(runs.iter().map(|v| Stat::of(v)).collect())
}

pub fn run(bins: &Bins, o: &Opts) -> Result<Vec<Table>> {
    let mut thr = Table::new(
        "dataplane: iperf3 TCP throughput, pod → pod across nodes",
        "the same cross-node pod → pod VXLAN path (flannel.1 + cni0 bridge + veths, same MTUs) programmed by hand with ip/bridge in an identical fresh set of namespaces, no daemon and no iptables rules, measured in the same run",
        &[
            "underlay MTU",
            "streams",
            "weft pod→pod (VXLAN)",
            "floor: same path by hand",
            "ratio",
            "goal",
            "met",
            "underlay node→node",
            "weft / underlay",
            "same-node pod→pod",
            "floor + weft's iptables rules",
            "weft / (floor + rules)",
            "host-gw by hand",
        ],
    );
    let mut lat = Table::new(
        "dataplane: round-trip latency",
        "the same cross-node pod → pod VXLAN path programmed by hand, measured in the same run",
        &[
            "underlay MTU",
            "metric",
            "weft pod→pod (VXLAN)",
            "floor: same path by hand",
            "ratio",
            "floor + weft's iptables rules",
            "underlay node→node",
            "host-gw by hand",
            "same-node pod→pod",
        ],
    );
    let mut tun = Table::new(
        "dataplane: kernel tunings on weft's path (weftd unchanged), 1 stream",
        "weft's own path untuned, alternated run by run with the tuned one in the same run",
        &[
            "underlay MTU",
            "setting (both weft nodes)",
            "weft pod→pod tuned",
            "floor: untuned",
            "ratio",
            "host-gw by hand (reference)",
            "why tried",
        ],
    );
    let ethtool = Command::new("ethtool").arg("--version").output().is_ok();
    for &mtu in &o.mtus {
        let beds = build(bins, mtu).with_context(|| format!("building the MTU {mtu} beds"))?;
        // Five paths alternated run by run; "hand + rules" is the hand path with weft's
        // ruleset loaded just before its run (and removed before the plain hand runs).
        let rules = copy_rules(&beds.w, &beds.h)?;
        flush_rules(&beds.h)?;
        let prepare = |k: usize| match k {
            2 => flush_rules(&beds.h),
            4 => copy_rules(&beds.w, &beds.h).map(drop),
            _ => Ok(()),
        };
        let mut base_rows = Vec::new();
        let mut with_rules = Vec::new();
        for &n in &o.streams {
            let st = measure_prepared(
                &[
                    &beds.underlay,
                    &beds.weft,
                    &beds.hand,
                    &beds.same,
                    &beds.hand,
                ],
                n,
                o,
                &prepare,
            )?;
            with_rules.push(st[4]);
            base_rows.push((n, st));
        }
        flush_rules(&beds.h)?;
        let lat_paths = [&beds.weft, &beds.hand, &beds.underlay, &beds.same];
        let mut pings = Vec::new();
        let mut rrs = Vec::new();
        for p in lat_paths {
            pings.push(ping(p, o.ping_count)?);
            rrs.push(tcp_rr(p, o.rr_count)?);
        }
        copy_rules(&beds.w, &beds.h)?;
        let rules_ping = ping(&beds.hand, o.ping_count)?;
        let rules_rr = tcp_rr(&beds.hand, o.rr_count)?;
        flush_rules(&beds.h)?;
        if mtu == o.mtus[0] {
            thr.note(format!(
                "\"floor + weft's iptables rules\": the hand path with `iptables-save` of each weft node loaded into the matching hand node by `iptables-restore` just before each of its runs ({rules} rules on node 0, among them nat-table MASQUERADE rules, so conntrack runs), alternated with the other paths."
            ));
        }
        to_host_gw(&beds.h)?;
        let mut hgw = Vec::new();
        for &n in &o.streams {
            hgw.push(measure(&[&beds.hand], n, o)?[0]);
        }
        let hgw_ping = ping(&beds.hand, o.ping_count)?;
        let hgw_rr = tcp_rr(&beds.hand, o.rr_count)?;
        let mut base1 = None;
        for (k, (n, st)) in base_rows.into_iter().enumerate() {
            let [u, w, hnd, s] = [st[0], st[1], st[2], st[3]];
            if n == 1 {
                base1 = Some(w.mean);
            }
            thr.row(vec![
                mtu.to_string(),
                n.to_string(),
                w.show(o.reps),
                hnd.show(o.reps),
                ratio(w.mean, hnd.mean),
                "≥ 0.98×".into(),
                met(w.mean >= 0.98 * hnd.mean),
                u.show(o.reps),
                ratio(w.mean, u.mean),
                s.show(o.reps),
                with_rules[k].show(o.reps),
                ratio(w.mean, with_rules[k].mean),
                hgw[k].show(o.reps),
            ]);
        }
        // f(i): the figure for path i (weft, hand, underlay, same-node); r: hand + rules; g: host-gw.
        let lat_row = |name: &str, f: &dyn Fn(usize) -> f64, r: f64, g: f64| {
            vec![
                mtu.to_string(),
                name.to_string(),
                fmt_us(f(0)),
                fmt_us(f(1)),
                ratio(f(0), f(1)),
                fmt_us(r),
                fmt_us(f(2)),
                fmt_us(g),
                fmt_us(f(3)),
            ]
        };
        lat.row(lat_row(
            &format!("ping avg ({}× at 10 ms)", o.ping_count),
            &|i| pings[i].0,
            rules_ping.0,
            hgw_ping.0,
        ));
        lat.row(lat_row(
            "ping p99",
            &|i| pings[i].1,
            rules_ping.1,
            hgw_ping.1,
        ));
        lat.row(lat_row(
            &format!("TCP_RR p50 ({} × 1 byte)", o.rr_count),
            &|i| rrs[i].0,
            rules_rr.0,
            hgw_rr.0,
        ));
        lat.row(lat_row("TCP_RR p99", &|i| rrs[i].1, rules_rr.1, hgw_rr.1));

        if o.tuning && ethtool && base1.is_some() {
            for knob in KNOBS {
                match tune(&beds, knob, o) {
                    Ok((tuned, untuned)) => tun.row(vec![
                        mtu.to_string(),
                        knob.name.into(),
                        tuned.show(o.reps),
                        untuned.show(o.reps),
                        ratio(tuned.mean, untuned.mean),
                        hgw.first().map(|h| h.show(o.reps)).unwrap_or_default(),
                        knob.why.into(),
                    ]),
                    Err(e) => tun.note(format!("MTU {mtu}, {}: not measured: {e:#}", knob.name)),
                }
            }
        }
    }
    let per = (o.secs / o.reps.max(1) as u64).max(1);
    thr.note(format!(
        "Each cell: iperf3 TCP ({}), {} run(s) of {per} s per path, alternating the path order run by run; mean (min–max). The ratio column is weft ÷ floor. weftd runs with --ip-masq as kube-flannel does, so weft's nodes carry its iptables rules (FORWARD accept, POSTROUTING masquerade); the hand path has none.",
        iperf_version(),
        o.reps.max(1),
    ));
    thr.note("Pods on both paths have MTU = underlay − 50; host-gw routes the pod subnets via the peer's underlay address with the same pod MTU.");
    if !o.tuning {
        tun.note("Tunings skipped (--no-tuning or quick mode).");
    } else if !ethtool {
        tun.note("Tunings skipped: ethtool is not installed (apt-get install ethtool).");
    }
    Ok(vec![thr, lat, tun])
}

/// Measures weft's path with `knob` applied on both weft nodes and without it, alternating
/// run by run; the original settings are restored after every tuned run.
fn tune(beds: &Beds, knob: &Knob, o: &Opts) -> Result<(Stat, Stat)> {
    let names: Vec<&str> = knob.features.iter().map(|(f, _)| *f).collect();
    let want: Vec<(String, String)> = knob
        .features
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    let mut saved = Vec::new();
    for i in 0..2 {
        let ns = beds.w.node(i).ns.clone();
        let cur = ethtool_get(&beds.w, &ns, knob.dev, &names)?;
        saved.push((ns, cur));
    }
    let per = (o.secs / o.reps.max(1) as u64).max(1);
    let (mut tuned, mut untuned) = (Vec::new(), Vec::new());
    for r in 0..o.reps.max(1) {
        for tuned_now in if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            if tuned_now {
                for (ns, _) in &saved {
                    ethtool_set(&beds.w, ns, knob.dev, &want)?;
                }
                let got = iperf(&beds.weft, per, 1);
                for (ns, cur) in &saved {
                    ethtool_set(&beds.w, ns, knob.dev, cur)?;
                }
                tuned.push(got?);
            } else {
                untuned.push(iperf(&beds.weft, per, 1)?);
            }
        }
    }
    Ok((Stat::of(&tuned), Stat::of(&untuned)))
}

fn iperf_version() -> String {
    Command::new("iperf3")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(String::from)
        })
        .unwrap_or_else(|| "?".into())
}
