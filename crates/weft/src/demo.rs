//! `weft demo`: a whole cluster on this machine. A namespaced VPC with a real etcd, weftd on
//! every node, pods on every node, and an all-pairs connectivity matrix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weft_testbed::destroy_detached;

use crate::cluster::{self, Cluster, ClusterSpec, Progress};

/// Where the demo records the testbed it is running, so `weft demo down` and the next run can
/// remove it (also after a crash).
const STATE_FILE: &str = "/run/weft-demo/testbed";

/// What `weft demo` runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub nodes: usize,
    pub pods_per_node: usize,
    pub weftd: PathBuf,
    pub cni: PathBuf,
    pub network: String,
    /// Leave the cluster running (remove it later with `weft demo down`).
    pub keep: bool,
}

/// Removes the demo cluster left by `--keep` or by a run that crashed. Returns whether there
/// was one.
pub fn down() -> Result<bool> {
    let Ok(dir) = std::fs::read_to_string(STATE_FILE) else {
        return Ok(false);
    };
    let dir = PathBuf::from(dir.trim());
    if dir.join("testbed.json").exists() {
        destroy_detached(&dir)
            .with_context(|| format!("removing the demo testbed in {}", dir.display()))?;
    }
    std::fs::remove_file(STATE_FILE).with_context(|| format!("removing {STATE_FILE}"))?;
    Ok(true)
}

fn record(dir: &Path) -> Result<()> {
    let state = Path::new(STATE_FILE);
    if let Some(parent) = state.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(state, dir.display().to_string())
        .with_context(|| format!("writing {STATE_FILE}"))
}

pub fn run(opts: &DemoOptions) -> Result<()> {
    cluster::check_size(opts.nodes, opts.pods_per_node, "--pods")?;
    cluster::check_binaries(&opts.weftd, &opts.cni)?;
    let progress = Progress::start();
    if down()? {
        progress.step("removed the demo cluster left by a previous run");
    }
    let spec = ClusterSpec {
        label: "demo",
        nodes: opts.nodes,
        pods_per_node: opts.pods_per_node,
        weftd: opts.weftd.clone(),
        cni: opts.cni.clone(),
        network: opts.network.clone(),
        weftd_env: Vec::new(),
    };
    let c = Cluster::build(spec, progress, |tb| record(tb.dir()))?;
    let envs = &c.envs;
    let pods = &c.pods;
    let tb = &c.tb;

    println!();
    println!(
        "{:<6} {:<12} {:<16} {:<19} {:<11} pods",
        "node", "public IP", "subnet", "VTEP MAC", "weftd RSS"
    );
    for (i, env) in envs.iter().enumerate() {
        let node = tb.node(i);
        let mac = c.vtep_mac(i).unwrap_or_else(|| "?".into());
        let ips: Vec<String> = pods
            .iter()
            .filter(|p| p.node == i)
            .map(|p| p.ip.to_string())
            .collect();
        let subnet = env.subnet.map(|s| s.to_string()).unwrap_or_default();
        let rss = c
            .weftd_rss_kib(i)
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "?".into());
        println!(
            "{:<6} {:<12} {:<16} {:<19} {:<11} {}",
            node.name,
            node.ip.to_string(),
            subnet,
            mac,
            rss,
            ips.join(" ")
        );
    }

    println!();
    println!("round-trip times in ms (3 pings each; FAIL = no reply)");
    print!("{:<14}", "from \\ to");
    for p in pods {
        print!("{:>13}", p.ip.to_string());
    }
    println!();
    let mut failures = 0;
    for a in pods {
        print!("{:<14}", a.ip.to_string());
        for b in pods {
            if a.ns == b.ns {
                print!("{:>13}", "-");
                continue;
            }
            match tb.ping(&a.ns, b.ip, 3, Duration::from_secs(5)) {
                Ok(st) if st.received == st.transmitted && st.received > 0 => {
                    print!("{:>13}", format!("{:.3}", st.avg_rtt_ms.unwrap_or(0.0)));
                }
                _ => {
                    failures += 1;
                    print!("{:>13}", "FAIL");
                }
            }
        }
        println!();
    }
    println!();
    let pairs = pods.len() * (pods.len() - 1);
    progress.step(&format!(
        "{} of {pairs} pod pairs connected",
        pairs - failures
    ));
    if opts.keep {
        let ids: Vec<String> = pods.iter().map(|p| p.ns.clone()).collect();
        let dir = c.into_testbed().detach();
        println!(
            "the cluster keeps running (testbed files in {}); try:",
            dir.display()
        );
        if let Some(ns) = ids.first() {
            println!("  ip netns exec {ns} ip addr show eth0");
        }
        println!("remove it with: weft demo down");
    } else {
        c.into_testbed().teardown().context("teardown")?;
        let _ = std::fs::remove_file(STATE_FILE);
        progress.step("torn down: namespaces, etcd and weftd removed");
    }
    if failures > 0 {
        bail!("{failures} of {pairs} pod pairs could not connect");
    }
    Ok(())
}
