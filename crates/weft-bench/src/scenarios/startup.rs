//! startup: from process start to subnet.env written and /readyz 200, for one node and for
//! 20 and 50 nodes started at once; beside the floor of what start-up must do: spawn a
//! process in the node's namespace and take a lease in etcd with a bare client (connect,
//! list, grant, guarded create), measured in the same run.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;

use crate::cluster::{self, Bins, HEALTH_PORT};
use crate::etcd::{Etcd, lease_value};
use crate::ns;
use crate::report::{Table, fmt_ms, median, met, percentile, ratio_d};

const CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const TIMEOUT: Duration = Duration::from_secs(60);

/// When a node became ready, relative to `t0`: (subnet.env written, /readyz 200).
fn watch_ready(
    tb: &weft_testbed::Testbed,
    i: usize,
    t0: Instant,
) -> Result<std::thread::JoinHandle<Result<(Duration, Duration)>>> {
    let file = tb.subnet_file(i);
    let ip = tb.node(i).ip;
    ns::spawn_in(&tb.node(i).ns.clone(), move || {
        let deadline = t0 + TIMEOUT;
        // The file first (a cheap stat every 1 ms), then /readyz, so weftd is not flooded
        // with requests while it starts.
        let env = loop {
            if std::fs::metadata(&file).is_ok() {
                break t0.elapsed();
            }
            if Instant::now() > deadline {
                bail!("no subnet.env within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let ready = loop {
            if cluster::http_get(ip, HEALTH_PORT, "/readyz") == Some(200) {
                break t0.elapsed();
            }
            if Instant::now() > deadline {
                bail!("/readyz not 200 within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        Ok((env, ready))
    })
}

/// The floor for one node: `ip netns exec <ns> true`, plus a bare lease acquisition.
fn floor_one(tb: &weft_testbed::Testbed, i: usize, tag: &str) -> Result<Duration> {
    let t0 = Instant::now();
    let st = Command::new("ip")
        .args(["netns", "exec", &tb.node(i).ns, "true"])
        .status()?;
    if !st.success() {
        bail!("ip netns exec true failed");
    }
    let spawn = t0.elapsed();
    let key = format!("/weft-bench/floor/{tag}/{i}");
    let acquire = Etcd::bare_acquire(
        &tb.node(i).ns,
        &tb.etcd_endpoint(),
        key,
        lease_value(tb.node(i).ip, [0x0e, 0xbe, 0x5f, 0, 0, i as u8]),
    )?;
    Ok(spawn + acquire)
}

struct Many {
    n: usize,
    env_all: Duration,
    ready_all: Duration,
    floor: Duration,
    distinct: usize,
    conflicts: usize,
    spawn_all: Duration,
    own_median: Duration,
    own_worst: Duration,
}

fn many(bins: &Bins, n: usize) -> Result<Many> {
    let mut tb = cluster::bed(&format!("bench-startup-{n}"), n, 9001, CONFIG)?;
    // Floor: N sequential process spawns (as weftd's are spawned below), then N bare
    // acquisitions at once, each from its own node over its own connection.
    let t0 = Instant::now();
    for i in 0..n {
        Command::new("ip")
            .args(["netns", "exec", &tb.node(i).ns, "true"])
            .status()?;
    }
    let (tx, rx) = channel();
    for i in 0..n {
        let (nsn, ep, ip) = (tb.node(i).ns.clone(), tb.etcd_endpoint(), tb.node(i).ip);
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = Etcd::bare_acquire(
                &nsn,
                &ep,
                format!("/weft-bench/floor/many/{i}"),
                lease_value(ip, [0x0e, 0xbe, 0x5e, 0, 0, i as u8]),
            );
            let _ = tx.send(r.map(|_| Instant::now()));
        });
    }
    drop(tx);
    let mut last = t0;
    for r in rx {
        last = last.max(r?);
    }
    let floor = last - t0;

    let t0 = Instant::now();
    let mut watchers = Vec::with_capacity(n);
    let mut spawned_at = Vec::with_capacity(n);
    for i in 0..n {
        spawned_at.push(t0.elapsed());
        cluster::start_weftd(&mut tb, bins, i)?;
    }
    let spawn_all = t0.elapsed();
    for i in 0..n {
        watchers.push(watch_ready(&tb, i, t0)?);
    }
    let mut env_all = Duration::ZERO;
    let mut ready_all = Duration::ZERO;
    let mut own = Vec::with_capacity(n);
    for (i, w) in watchers.into_iter().enumerate() {
        let (e, r) = ns::join(w)
            .with_context(|| format!("node {i} of {n}; its log:\n{}", cluster::log(&tb, i)))?;
        env_all = env_all.max(e);
        ready_all = ready_all.max(r);
        own.push(r.saturating_sub(spawned_at[i]));
    }
    let subnets: BTreeSet<Ipv4Net> = (0..n)
        .filter_map(|i| cluster::subnet_env(&tb, i).and_then(|e| e.subnet))
        .collect();
    let conflicts = (0..n)
        .map(|i| {
            cluster::log(&tb, i)
                .matches("taken by another node")
                .count()
        })
        .sum();
    Ok(Many {
        n,
        env_all,
        ready_all,
        floor,
        distinct: subnets.len(),
        conflicts,
        spawn_all,
        own_median: median(&own).unwrap_or_default(),
        own_worst: percentile(&own, 100.0).unwrap_or_default(),
    })
}

pub fn run(bins: &Bins, trials: usize, node_counts: &[usize]) -> Result<Table> {
    let mut t = Table::new(
        "startup: process start → subnet.env written and /readyz 200",
        "what start-up cannot avoid, measured in the same run: `ip netns exec <node> true` plus a bare etcd client taking a lease (connect, list the subnets, grant, create with a version guard); for N nodes, N such spawns one after another then N acquisitions at once",
        &["nodes", "metric", "weft", "floor", "ratio", "goal", "met"],
    );
    // One node at a time, each on a fresh node (a new lease in a bed whose earlier nodes
    // keep running), alternating with its floor.
    let mut tb = cluster::bed("bench-startup-1", trials.max(1), 9001, CONFIG)?;
    let (mut envs, mut readys, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..trials.max(1) {
        floors.push(floor_one(&tb, k, "one")?);
        let t0 = Instant::now();
        cluster::start_weftd(&mut tb, bins, k)?;
        let (e, r) = ns::join(watch_ready(&tb, k, t0)?)
            .with_context(|| format!("single-node trial {k}; log:\n{}", cluster::log(&tb, k)))?;
        envs.push(e);
        readys.push(r);
    }
    let f = median(&floors);
    let r50 = median(&readys);
    t.row(vec![
        "1".into(),
        format!("start → subnet.env, median of {}", envs.len()),
        fmt_ms(median(&envs)),
        fmt_ms(f),
        ratio_d(median(&envs), f),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "1".into(),
        format!("start → /readyz 200, median of {}", readys.len()),
        fmt_ms(r50),
        fmt_ms(f),
        ratio_d(r50, f),
        "≤ 100 ms".into(),
        met(r50.is_some_and(|r| r <= Duration::from_millis(100))),
    ]);
    t.row(vec![
        "1".into(),
        format!("start → /readyz 200, worst of {}", readys.len()),
        fmt_ms(percentile(&readys, 100.0)),
        fmt_ms(percentile(&floors, 100.0)),
        ratio_d(percentile(&readys, 100.0), percentile(&floors, 100.0)),
        String::new(),
        String::new(),
    ]);
    drop(tb);

    for &n in node_counts {
        let m = many(bins, n).with_context(|| format!("{n} nodes at once"))?;
        let goal = n >= 50;
        t.row(vec![
            m.n.to_string(),
            "all started at once → every subnet.env written".into(),
            fmt_ms(Some(m.env_all)),
            fmt_ms(Some(m.floor)),
            ratio_d(Some(m.env_all), Some(m.floor)),
            String::new(),
            String::new(),
        ]);
        t.row(vec![
            m.n.to_string(),
            "all started at once → every /readyz 200".into(),
            fmt_ms(Some(m.ready_all)),
            fmt_ms(Some(m.floor)),
            ratio_d(Some(m.ready_all), Some(m.floor)),
            if goal {
                "≤ 3 s".into()
            } else {
                String::new()
            },
            if goal {
                met(m.ready_all <= Duration::from_secs(3))
            } else {
                String::new()
            },
        ]);
        t.row(vec![
            m.n.to_string(),
            "per node, its own spawn → /readyz 200: median / worst".into(),
            format!(
                "{} / {}",
                fmt_ms(Some(m.own_median)),
                fmt_ms(Some(m.own_worst))
            ),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        t.row(vec![
            m.n.to_string(),
            "distinct subnets / lost create races (\"taken by another node\")".into(),
            format!("{} / {}", m.distinct, m.conflicts),
            String::new(),
            String::new(),
            format!("{} / 0", m.n),
            met(m.distinct == m.n && m.conflicts == 0),
        ]);
        t.note(format!(
            "{} nodes: the harness spawns the {} weftd processes one after another (`ip netns exec`, waiting for each exec), which took {}; all {} daemons and their iptables children share this machine's {} cores, where a real cluster has a machine per node.",
            m.n,
            m.n,
            fmt_ms(Some(m.spawn_all)),
            m.n,
            std::thread::available_parallelism().map(|c| c.get()).unwrap_or(0)
        ));
    }
    t.note("Start = just before `ip netns exec <node> weftd …` is spawned. weftd runs with --ip-masq, so start-up includes its iptables work (iptables --version, iptables-save, iptables-restore).");
    Ok(t)
}
