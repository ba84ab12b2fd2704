//! `weft demo`: a whole cluster on this machine. A namespaced VPC with a real etcd, weftd on
//! every node, pods on every node, and an all-pairs connectivity matrix.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_core::subnet_env::SubnetEnv;
use weft_testbed::{Pod, Testbed, TestbedConfig, wait_until};

/// What `weft demo` runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub nodes: usize,
    pub pods_per_node: usize,
    pub weftd: PathBuf,
    pub network: String,
}

fn step(msg: &str, t0: Instant) {
    eprintln!("[{:>6.2}s] {msg}", t0.elapsed().as_secs_f64());
}

/// Finds weftd next to this binary (target/release/weft → target/release/weftd).
pub fn default_weftd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("weftd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("weftd"))
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
    if !opts.weftd.exists() {
        bail!(
            "weftd binary {} not found; build it with `cargo build --release` or pass --weftd <path>",
            opts.weftd.display()
        );
    }
    let t0 = Instant::now();
    step(
        &format!(
            "building a {}-node VPC in network namespaces with a real etcd",
            opts.nodes
        ),
        t0,
    );
    let mut tb = Testbed::new("demo", TestbedConfig::with_nodes(opts.nodes))
        .context("cannot build the testbed")?;
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
            format!("--subnet-file={}", node.dir.join("subnet.env").display()),
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
        let path = tb.node(i).dir.join("subnet.env");
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

    let mut pods: Vec<Pod> = Vec::new();
    for (i, env) in envs.iter().enumerate() {
        let sn = env.subnet.context("subnet.env without FLANNEL_SUBNET")?;
        for j in 0..opts.pods_per_node {
            let ip = Ipv4Addr::from(u32::from(sn.network()) + 10 + j as u32);
            let gw = Ipv4Addr::from(u32::from(sn.network()) + 1);
            pods.push(tb.add_pod(i, ip, sn.prefix_len(), gw, env.mtu)?);
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
    tb.teardown().context("teardown")?;
    step("torn down: namespaces, etcd and weftd removed", t0);
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
