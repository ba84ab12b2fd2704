//! `weft demo`: a whole cluster on this machine. A namespaced VPC with a real etcd, weftd on
//! every node, pods on every node, and an all-pairs connectivity matrix.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_core::subnet_env::SubnetEnv;
use weft_testbed::{CniSetup, Pod, Testbed, TestbedConfig, destroy_detached, wait_until};

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

fn step(msg: &str, t0: Instant) {
    eprintln!("[{:>6.2}s] {msg}", t0.elapsed().as_secs_f64());
}

/// Finds a sibling binary (target/release/weft → target/release/weftd).
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
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
    if opts.nodes < 2 || opts.nodes > 50 {
        bail!("--nodes {} is out of range: use 2 to 50", opts.nodes);
    }
    if opts.pods_per_node == 0 || opts.pods_per_node > 20 {
        bail!(
            "--pods {} is out of range: use 1 to 20 pods per node",
            opts.pods_per_node
        );
    }
    for (what, path, flag) in [
        ("weftd", &opts.weftd, "--weftd"),
        ("weft-cni", &opts.cni, "--cni"),
    ] {
        if !path.exists() {
            bail!(
                "{what} binary {} not found; build it with `cargo build --release` or pass {flag} <path>",
                path.display()
            );
        }
    }
    let t0 = Instant::now();
    if down()? {
        step("removed the demo cluster left by a previous run", t0);
    }
    step(
        &format!(
            "building a {}-node VPC in network namespaces with a real etcd",
            opts.nodes
        ),
        t0,
    );
    let mut tb = Testbed::new("demo", TestbedConfig::with_nodes(opts.nodes))
        .context("cannot build the testbed")?;
    record(tb.dir())?;
    step(
        &format!("testbed {} up in {:?}", tb.id(), tb.bring_up_time()),
        t0,
    );
    let config = format!(
        r#"{{"Network":"{}","Backend":{{"Type":"vxlan"}}}}"#,
        opts.network
    );
    tb.etcdctl(&["put", "/coreos.com/network/config", &config])?;
    step(&format!("wrote /coreos.com/network/config = {config}"), t0);

    let mut pids: Vec<weft_testbed::Pid> = Vec::new();
    for i in 0..opts.nodes {
        let node = tb.node(i).clone();
        let args = vec![
            format!("--etcd-endpoints={}", tb.etcd_endpoint()),
            format!("--subnet-file={}", tb.subnet_file(i).display()),
            format!("--state-dir={}", node.dir.join("state").display()),
            "--ip-masq".to_string(),
            "--healthz-port=8081".to_string(),
        ];
        pids.push(tb.spawn(
            &node.ns,
            &opts.weftd,
            &args,
            &[],
            &node.dir.join("weftd.log"),
        )?);
    }
    step(&format!("started weftd on {} nodes", opts.nodes), t0);

    let mut envs = Vec::new();
    for i in 0..opts.nodes {
        let path = tb.subnet_file(i);
        let env = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| SubnetEnv::parse(&t).ok())
        })
        .with_context(|| {
            format!(
                "node {i} did not become ready; its log:\n{}",
                log_tail(&tb.node(i).dir.join("weftd.log"))
            )
        })?;
        envs.push(env);
    }
    step("every node holds a lease and wrote subnet.env", t0);

    // Pods the way kubelet makes them: weft-cni (type flannel) → bridge + host-local.
    let cni = CniSetup::new(&opts.cni);
    let mut pods: Vec<Pod> = Vec::new();
    for i in 0..envs.len() {
        for _ in 0..opts.pods_per_node {
            let pod = tb
                .add_cni_pod(i, &cni)
                .with_context(|| format!("creating a pod on node {i} through weft-cni"))?;
            pods.push(pod.pod);
        }
    }
    step(&format!("created {} pods", pods.len()), t0);

    println!();
    println!(
        "{:<6} {:<12} {:<16} {:<19} {:<11} pods",
        "node", "public IP", "subnet", "VTEP MAC", "weftd RSS"
    );
    for (i, env) in envs.iter().enumerate() {
        let node = tb.node(i);
        let mac = tb
            .exec(&node.ns, &["cat", "/sys/class/net/flannel.1/address"])
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        let ips: Vec<String> = pods
            .iter()
            .filter(|p| p.node == i)
            .map(|p| p.ip.to_string())
            .collect();
        let subnet = env.subnet.map(|s| s.to_string()).unwrap_or_default();
        let rss = rss_kib(pids[i])
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
    for p in &pods {
        print!("{:>13}", p.ip.to_string());
    }
    println!();
    let mut failures = 0;
    for a in &pods {
        print!("{:<14}", a.ip.to_string());
        for b in &pods {
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
    step(
        &format!("{} of {pairs} pod pairs connected", pairs - failures),
        t0,
    );
    if opts.keep {
        let ids: Vec<String> = pods.iter().map(|p| p.ns.clone()).collect();
        let dir = tb.detach();
        println!(
            "the cluster keeps running (testbed files in {}); try:",
            dir.display()
        );
        if let Some(ns) = ids.first() {
            println!("  ip netns exec {ns} ip addr show eth0");
        }
        println!("remove it with: weft demo down");
    } else {
        tb.teardown().context("teardown")?;
        let _ = std::fs::remove_file(STATE_FILE);
        step("torn down: namespaces, etcd and weftd removed", t0);
    }
    if failures > 0 {
        bail!("{failures} of {pairs} pod pairs could not connect");
    }
    Ok(())
}

/// Resident set size of a process in KiB, from /proc.
fn rss_kib(pid: weft_testbed::Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn log_tail(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
