//! A whole weft cluster on this machine, shared by `weft-lab demo` and `weft-lab soak`: a namespaced
//! VPC with a real etcd (weft-testbed), weftd on every node, and pods made through weft-cni
//! and the real bridge/host-local plugins, the way kubelet makes them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_core::subnet_env::SubnetEnv;
use weft_testbed::weftd;
use weft_testbed::{CniSetup, Pid, Pod, Signal, Testbed, TestbedConfig, wait_until};

/// Where network config lives in etcd (flannel's default prefix).
pub const CONFIG_KEY: &str = "/coreos.com/network/config";
/// The prefix of the subnet leases.
pub const SUBNETS_PREFIX: &str = "/coreos.com/network/subnets/";
/// weftd's health port on every node.
pub const HEALTHZ_PORT: u16 = 8081;
/// How long a node may take to write subnet.env after weftd starts.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Progress lines on stderr, stamped with the time since the command started.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    t0: Instant,
}

impl Progress {
    pub fn start() -> Progress {
        Progress { t0: Instant::now() }
    }

    pub fn step(&self, msg: &str) {
        eprintln!("[{:>6.2}s] {msg}", self.t0.elapsed().as_secs_f64());
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Label of the testbed (in its logs and manifest).
    pub label: &'static str,
    pub nodes: usize,
    pub pods_per_node: usize,
    pub weftd: PathBuf,
    pub cni: PathBuf,
    /// The overlay network (the config's `Network`).
    pub network: String,
    /// Extra environment of every weftd (e.g. `RUST_LOG`).
    pub weftd_env: Vec<(String, String)>,
}

/// Checks the sizes a cluster command accepts; `pods_flag` names the pods flag in the error.
pub fn check_size(nodes: usize, pods_per_node: usize, pods_flag: &str) -> Result<()> {
    if !(2..=50).contains(&nodes) {
        bail!("--nodes {nodes} is out of range: use 2 to 50");
    }
    if pods_per_node == 0 || pods_per_node > 20 {
        bail!("{pods_flag} {pods_per_node} is out of range: use 1 to 20 pods per node");
    }
    Ok(())
}

/// Checks that the weftd and weft-cni binaries exist, naming the flag that overrides each.
pub fn check_binaries(weftd: &Path, cni: &Path) -> Result<()> {
    for (what, path, flag) in [("weftd", weftd, "--weftd"), ("weft-cni", cni, "--cni")] {
        if !path.exists() {
            bail!(
                "{what} binary {} not found; build it with `cargo build --release` or pass {flag} <path>",
                path.display()
            );
        }
    }
    Ok(())
}

/// A running cluster: the testbed, the weftd on each node, and the pods. Dropping it tears
/// the testbed down (weft-testbed kills every process and deletes every namespace).
#[derive(Debug)]
pub struct Cluster {
    pub tb: Testbed,
    /// The weftd running on each node (None while stopped).
    pub weftd: Vec<Option<Pid>>,
    /// Each node's subnet.env as first written.
    pub envs: Vec<SubnetEnv>,
    pub pods: Vec<Pod>,
    pub spec: ClusterSpec,
}

impl Cluster {
    /// Builds the cluster. `on_testbed` runs as soon as the testbed exists (the demo records
    /// it there, so a crash later on can still be cleaned up).
    pub fn build(
        spec: ClusterSpec,
        progress: Progress,
        on_testbed: impl FnOnce(&Testbed) -> Result<()>,
    ) -> Result<Cluster> {
        progress.step(&format!(
            "building a {}-node VPC in network namespaces with a real etcd",
            spec.nodes
        ));
        let tb = Testbed::new(spec.label, TestbedConfig::with_nodes(spec.nodes))
            .context("cannot build the testbed")?;
        on_testbed(&tb)?;
        progress.step(&format!(
            "testbed {} up in {:?}",
            tb.id(),
            tb.bring_up_time()
        ));
        let config = format!(
            r#"{{"Network":"{}","Backend":{{"Type":"vxlan"}}}}"#,
            spec.network
        );
        tb.etcdctl(&["put", CONFIG_KEY, &config])?;
        progress.step(&format!("wrote {CONFIG_KEY} = {config}"));

        let mut c = Cluster {
            weftd: vec![None; spec.nodes],
            envs: Vec::new(),
            pods: Vec::new(),
            tb,
            spec,
        };
        for i in 0..c.spec.nodes {
            c.start_weftd(i, &[])?;
        }
        progress.step(&format!("started weftd on {} nodes", c.spec.nodes));
        for i in 0..c.spec.nodes {
            let env = c.wait_subnet_env(i, READY_TIMEOUT)?;
            c.envs.push(env);
        }
        progress.step("every node holds a lease and wrote subnet.env");
        // A node is ready once its own lease and the peers it has seen so far are programmed;
        // a peer whose lease came a moment later is programmed on its watch event. Wait for
        // the full mesh before anything measures the paths.
        let started = Instant::now();
        c.wait_meshed(READY_TIMEOUT)?;
        progress.step(&format!(
            "every node has programmed every other node's VTEP ({:?})",
            started.elapsed()
        ));

        // Pods the way kubelet makes them: weft-cni (type flannel) → bridge + host-local.
        let cni = CniSetup::new(&c.spec.cni);
        for i in 0..c.spec.nodes {
            for _ in 0..c.spec.pods_per_node {
                let pod =
                    c.tb.add_cni_pod(i, &cni)
                        .with_context(|| format!("creating a pod on node {i} through weft-cni"))?;
                c.pods.push(pod.pod);
            }
        }
        progress.step(&format!("created {} pods", c.pods.len()));
        Ok(c)
    }

    /// weftd's command line on node `i`: flanneld's flags plus `extra`.
    pub fn weftd_args(&self, i: usize, extra: &[String]) -> Vec<String> {
        let mut args = weftd::flanneld_args(&self.tb, i);
        args.extend([
            format!("--state-dir={}", self.state_dir(i).display()),
            "--ip-masq".to_string(),
            format!("--healthz-port={HEALTHZ_PORT}"),
        ]);
        args.extend(extra.iter().cloned());
        args
    }

    /// Where weftd on node `i` keeps its state (the VTEP MAC).
    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.tb.node(i).dir.join("state")
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        weftd::log_path(&self.tb, i)
    }

    /// The last lines of node `i`'s weftd log (for error messages).
    pub fn log_tail(&self, i: usize) -> String {
        weftd::log_tail(&self.tb, i, 20)
    }

    /// Starts weftd on node `i` (which may be a node added after [`Cluster::build`]).
    pub fn start_weftd(&mut self, i: usize, extra: &[String]) -> Result<Pid> {
        if self.weftd.len() <= i {
            self.weftd.resize(i + 1, None);
        }
        let args = self.weftd_args(i, extra);
        let ns = self.tb.node(i).ns.clone();
        let log = self.log_path(i);
        let weftd = self.spec.weftd.clone();
        let env = self.spec.weftd_env.clone();
        let pid = self
            .tb
            .spawn(&ns, &weftd, &args, &env, &log)
            .with_context(|| format!("starting weftd on node {i}"))?;
        self.weftd[i] = Some(pid);
        Ok(pid)
    }

    /// Sends `sig` to weftd on node `i` and waits for it to exit (SIGKILL after `timeout`).
    /// Returns whether it exited within `timeout`.
    pub fn stop_weftd(&mut self, i: usize, sig: Signal, timeout: Duration) -> Result<bool> {
        let Some(pid) = self.weftd.get_mut(i).and_then(Option::take) else {
            return Ok(true);
        };
        if !self.tb.is_running(pid) {
            return Ok(true);
        }
        self.tb
            .signal(pid, sig)
            .with_context(|| format!("sending {sig} to weftd on node {i}"))?;
        if self.tb.wait_exit(pid, timeout)?.is_some() {
            return Ok(true);
        }
        self.tb.signal(pid, Signal::SIGKILL)?;
        self.tb.wait_exit(pid, Duration::from_secs(10))?;
        Ok(false)
    }

    /// Whether weftd on node `i` is running.
    pub fn weftd_running(&mut self, i: usize) -> bool {
        match self.weftd.get(i).copied().flatten() {
            Some(pid) => self.tb.is_running(pid),
            None => false,
        }
    }

    /// Node `i`'s subnet.env, if written and valid.
    pub fn subnet_env(&self, i: usize) -> Option<SubnetEnv> {
        weftd::subnet_env(&self.tb, i)
    }

    /// Waits until node `i` has written subnet.env.
    pub fn wait_subnet_env(&self, i: usize, timeout: Duration) -> Result<SubnetEnv> {
        weftd::wait_subnet_env(&self.tb, i, timeout).with_context(|| {
            format!(
                "node {i} did not become ready; its log:\n{}",
                self.log_tail(i)
            )
        })
    }

    /// The status code of weftd's /readyz on node `i` (None: no answer).
    pub fn readyz(&self, i: usize) -> Option<u16> {
        let node = self.tb.node(i);
        let ip = node.ip;
        weft_testbed::in_netns(&node.ns, move || http_status(ip, HEALTHZ_PORT, "/readyz"))
            .ok()
            .flatten()
    }

    /// The VTEP MAC of flannel.1 on node `i`, as the kernel shows it.
    /// Waits until every node's flannel.1 FDB has every other node's VTEP MAC towards that
    /// node's IP.
    pub fn wait_meshed(&self, timeout: Duration) -> Result<()> {
        let n = self.spec.nodes;
        let missing = || -> Vec<String> {
            let macs: Vec<Option<String>> = (0..n).map(|i| self.vtep_mac(i)).collect();
            let mut missing = Vec::new();
            for i in 0..n {
                let fdb = self
                    .tb
                    .exec(
                        &self.tb.node(i).ns,
                        &["bridge", "fdb", "show", "dev", "flannel.1"],
                    )
                    .unwrap_or_default();
                for (j, mac) in macs.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let want = mac
                        .as_ref()
                        .map(|m| format!("{m} dst {} ", self.tb.node(j).ip));
                    if !want.is_some_and(|w| fdb.lines().any(|l| format!("{l} ").contains(&w))) {
                        missing.push(format!("n{i} lacks n{j}"));
                    }
                }
            }
            missing
        };
        if wait_until(timeout, Duration::from_millis(20), || {
            missing().is_empty().then_some(())
        })
        .is_some()
        {
            return Ok(());
        }
        anyhow::bail!(
            "the nodes did not program each other within {timeout:?}: {}",
            missing().join(", ")
        )
    }

    pub fn vtep_mac(&self, i: usize) -> Option<String> {
        self.tb
            .exec(
                &self.tb.node(i).ns,
                &["cat", "/sys/class/net/flannel.1/address"],
            )
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// weftd's resident set size on node `i`, in KiB.
    pub fn weftd_rss_kib(&self, i: usize) -> Option<u64> {
        rss_kib(self.weftd.get(i).copied().flatten()?)
    }

    /// Gives up ownership of the testbed (for `weft-lab demo --keep`).
    pub fn into_testbed(self) -> Testbed {
        self.tb
    }
}

/// Resident set size of a process in KiB, from /proc.
pub fn rss_kib(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The status code of a GET of weftd's health server, from the calling thread's namespace.
fn http_status(ip: Ipv4Addr, port: u16, path: &str) -> Option<u16> {
    weft_testbed::http::get((ip, port).into(), path, Duration::from_secs(1))
        .ok()
        .map(|(code, _)| code)
}
