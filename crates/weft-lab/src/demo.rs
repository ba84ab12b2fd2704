//! `weft-lab demo`: a whole cluster on this machine. A namespaced VPC with a real etcd, weftd on
//! every node, pods on every node, and an all-pairs connectivity matrix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weft_testbed::destroy_detached;

use serde_json::json;

use crate::cluster::{self, Cluster, ClusterSpec, Progress};
use weft::cli::OutputFormat;

/// Where the demo records the testbed it is running, so `weft-lab demo down` and the next run can
/// remove it (also after a crash).
pub const STATE_FILE: &str = "/run/weft-demo/testbed";

/// What `weft-lab demo` runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub nodes: usize,
    pub pods_per_node: usize,
    pub weftd: PathBuf,
    pub cni: PathBuf,
    pub network: String,
    /// Leave the cluster running (remove it later with `weft-lab demo down`).
    pub keep: bool,
    /// The tables as text, or one JSON document (progress stays on stderr).
    pub output: OutputFormat,
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
    cluster::check_size(opts.nodes, opts.pods_per_node, "--pods-per-node")?;
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

    let json = opts.output == OutputFormat::Json;
    let mut node_rows = Vec::new();
    for (i, env) in envs.iter().enumerate() {
        let node = tb.node(i);
        node_rows.push(json!({
            "name": node.name,
            "public_ip": node.ip.to_string(),
            "subnet": env.subnet.map(|s| s.to_string()),
            "vtep_mac": c.vtep_mac(i),
            "weftd_rss_kib": c.weftd_rss_kib(i),
            "pods": pods
                .iter()
                .filter(|p| p.node == i)
                .map(|p| p.ip.to_string())
                .collect::<Vec<_>>(),
        }));
    }
    if !json {
        println!();
        println!(
            "{:<6} {:<12} {:<16} {:<19} {:<11} pods",
            "node", "public IP", "subnet", "VTEP MAC", "weftd RSS"
        );
        for row in &node_rows {
            let text = |k: &str| row[k].as_str().unwrap_or("?").to_string();
            let rss = row["weftd_rss_kib"]
                .as_u64()
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "?".into());
            let ips: Vec<&str> = row["pods"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
                .unwrap_or_default();
            println!(
                "{:<6} {:<12} {:<16} {:<19} {:<11} {}",
                text("name"),
                text("public_ip"),
                row["subnet"].as_str().unwrap_or(""),
                text("vtep_mac"),
                rss,
                ips.join(" ")
            );
        }
        println!();
    }
    let mut failures = 0;
    let mut pair_rows = Vec::new();
    // rtts[i][j]: the average round trip from pod i to pod j, None when a ping got no reply.
    let mut rtts = vec![vec![None; pods.len()]; pods.len()];
    for (i, a) in pods.iter().enumerate() {
        for (j, b) in pods.iter().enumerate() {
            if i == j {
                continue;
            }
            let rtt = match tb.ping(&a.ns, b.ip, 3, Duration::from_secs(5)) {
                Ok(st) if st.received == st.transmitted && st.received > 0 => {
                    Some(st.avg_rtt_ms.unwrap_or(0.0))
                }
                _ => None,
            };
            if rtt.is_none() {
                failures += 1;
            }
            rtts[i][j] = rtt;
            pair_rows.push(json!({
                "from": a.ip.to_string(),
                "to": b.ip.to_string(),
                "connected": rtt.is_some(),
                "rtt_ms": rtt,
            }));
        }
    }
    if !json {
        println!("round-trip times in ms (3 pings each; FAIL = no reply)");
        let ips: Vec<_> = pods.iter().map(|p| p.ip).collect();
        print!(
            "{}",
            crate::connectivity::rtt_matrix(&ips, |i, j| match rtts[i][j] {
                Some(ms) => format!("{ms:.3}"),
                None => "FAIL".to_string(),
            })
        );
        println!();
    }
    let pairs = pods.len() * (pods.len() - 1);
    progress.step(&format!(
        "{} of {pairs} pod pairs connected",
        pairs - failures
    ));
    let mut kept = None;
    if opts.keep {
        let ids: Vec<String> = pods.iter().map(|p| p.ns.clone()).collect();
        let dir = c.into_testbed().detach();
        // The hints go to stderr with -o json, so stdout stays one JSON document.
        let mut hints = format!(
            "the cluster keeps running (testbed files in {}); try:\n",
            dir.display()
        );
        if let Some(ns) = ids.first() {
            hints.push_str(&format!("  ip netns exec {ns} ip addr show eth0\n"));
        }
        hints.push_str("remove it with: weft-lab demo down\n");
        if json {
            eprint!("{hints}");
        } else {
            print!("{hints}");
        }
        kept = Some(dir.display().to_string());
    } else {
        c.into_testbed().teardown().context("teardown")?;
        let _ = std::fs::remove_file(STATE_FILE);
        progress.step("torn down: namespaces, etcd and weftd removed");
    }
    if json {
        let doc = json!({
            "nodes": node_rows,
            "pairs": pair_rows,
            "summary": {
                "pairs": pairs,
                "connected": pairs - failures,
                "failed": failures,
            },
            "kept_testbed_dir": kept,
        });
        println!("{}", weft::output::json(&doc));
    }
    if failures > 0 {
        bail!("{failures} of {pairs} pod pairs could not connect");
    }
    Ok(())
}
