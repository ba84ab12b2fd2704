//! weft-testbed: a namespaced multi-node "VPC" on one Linux machine, with a real
//! etcd, for weft's integration tests, demo and benchmarks.
//!
//! Everything lives in network namespaces the testbed creates; the host's own
//! interfaces, routes, sysctls and firewall are never touched:
//!
//! ```text
//!   <id>-sw    bridge br0 10.250.0.1/16 (MTU = underlay MTU, default 9001)
//!     ├── port "etcd" ── <id>-etcd  eth0 10.250.0.2/16, runs etcd on :2379
//!     ├── port "etcd<k>" ── <id>-etcd<k>  one more etcd member (only with EtcdSetup::Members)
//!     ├── port "n0"   ── <id>-n0    eth0 10.250.1.1/16, default via 10.250.0.1, ip_forward=1
//!     ├── port "n1"   ── <id>-n1    eth0 10.250.1.2/16 ...
//!     └── ...
//!   <id>-n<i>p<j>  pod j of node i: eth0 <-> vethp<j> on bridge cni0 in <id>-n<i>
//! ```
//!
//! A dual-stack bed ([`Testbed::new_with_underlay`] with [`Underlay::DUAL_STACK`]) also
//! gives every node's `eth0` [`node_ip6`] (fd00:250::<i+1>/64, no DAD), and its CNI pods
//! an IPv6 address when the node's subnet.env has `FLANNEL_IPV6_SUBNET` ([`Pod::ip6`]);
//! [`Testbed::ping6`] pings those.
//!
//! Pods come two ways: [`Testbed::add_pod`] plumbs one by hand, and
//! [`Testbed::add_cni_pod`] runs a CNI conflist's plugin chain (weft-cni, bridge,
//! host-local, portmap) inside the node's namespace the way a container runtime does,
//! with all of the node's CNI state under its dir (see [`cni`]).
//!
//! `<id>` is `wt` + 6 random hex digits, claimed atomically by creating
//! `<id>-sw`, so beds in parallel threads and processes never collide.
//! Dropping the [`Testbed`] (also while a test panics) kills every process it
//! started (and any of their descendants still inside its namespaces), deletes
//! every namespace it created and removes its temp dir (`WEFT_TESTBED_KEEP=1`
//! keeps the dir for debugging). Commands only ever run inside the bed's own
//! namespaces: `exec`, `spawn`, `ping`, ... refuse any other namespace.
//!
//! Environment: `WEFT_TESTBED_ETCD` / `WEFT_TESTBED_ETCDCTL` override the etcd
//! binaries (default: `etcd` / `etcdctl` from `PATH`).

mod cmd;
pub mod cni;
pub mod containerd;
pub mod corpus;
pub mod ec2;
mod error;
pub mod flow;
pub mod http;
mod netns;
pub mod nlmonitor;
pub mod oci;
mod ping;
pub mod podman;
pub mod prom;
pub mod tls;
pub mod weftd;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tracing::{debug, info, warn};

pub use cni::{CniNodePaths, CniPod, CniSetup, KUBE_FLANNEL_CONFLIST};
pub use containerd::Containerd;
pub use ec2::VpcPod;
pub use error::{CniFailure, TestbedError};
pub use netns::{NETNS_DIR, in_netns, list_namespaces_with_prefix, netns_path, require_root};
pub use nix::sys::signal::Signal;
/// Handle of a process started by the testbed (its kernel pid).
pub use nix::unistd::Pid;
pub use ping::{PingStats, Pinger, parse_ping_summary, parse_reply_seqs};
pub use tls::{
    CertSpec, ClientTlsFiles, EtcdMember, EtcdMemberStatus, EtcdMembers, EtcdSetup, EtcdTls,
    EtcdTlsFiles, IssuedCert, TestCa,
};

/// Every testbed id (and so every namespace it creates) starts with this.
pub const ID_PREFIX: &str = "wt";
/// Address of the switch bridge `br0` (the nodes' default gateway).
pub const SWITCH_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// Address of etcd's `eth0`.
pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
/// Prefix length of the underlay 10.250.0.0/16.
pub const UNDERLAY_PREFIX: u8 = 16;
/// Prefix length of the IPv6 underlay fd00:250::/64 (only with [`Underlay::ipv6`]).
pub const UNDERLAY6_PREFIX: u8 = 64;
/// etcd's client port.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// Most nodes a bed can have (addresses 10.250.1.1 ..= 10.250.255.250).
pub const MAX_NODES: usize = 255 * 250;

const ETCD_HEALTH_TIMEOUT: Duration = Duration::from_secs(20);
const ETCD_POLL: Duration = Duration::from_millis(50);
const KEEP_ENV: &str = "WEFT_TESTBED_KEEP";
const ETCD_ENV: &str = "WEFT_TESTBED_ETCD";
const ETCDCTL_ENV: &str = "WEFT_TESTBED_ETCDCTL";

/// Underlay address of node `index`: 10.250.1.1 for node 0 ... 10.250.1.250 for
/// node 249, then 10.250.2.1 for node 250, and so on. `None` beyond [`MAX_NODES`].
pub fn node_ip(index: usize) -> Option<Ipv4Addr> {
    if index >= MAX_NODES {
        return None;
    }
    let third = u8::try_from(1 + index / 250).ok()?;
    let fourth = u8::try_from(index % 250 + 1).ok()?;
    Some(Ipv4Addr::new(10, 250, third, fourth))
}

/// IPv6 underlay address of node `index` (only used with [`Underlay::ipv6`]):
/// fd00:250::1 for node 0, fd00:250::2 for node 1, ... (the last group is `index + 1`,
/// so node 249 is fd00:250::fa). `None` beyond [`MAX_NODES`], like [`node_ip`].
pub fn node_ip6(index: usize) -> Option<Ipv6Addr> {
    if index >= MAX_NODES {
        return None;
    }
    let last = u16::try_from(index + 1).ok()?;
    Some(Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, last))
}

/// Per-netns sysctls of a dual-stack underlay ([`Underlay::ipv6`]): IPv6 on, duplicate
/// address detection off (addresses usable at once), set before the interfaces exist so
/// every one created later inherits them from `default`.
const IPV6_SYSCTLS: [&str; 4] = [
    "net.ipv6.conf.all.disable_ipv6=0",
    "net.ipv6.conf.default.disable_ipv6=0",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
];

/// `(program, args)` that run `program args` in a private mount namespace with `var_lib`
/// bind-mounted over `/var/lib`: several weftd of one bed then share one `/var/lib/weft`, as on
/// one host, and the host's own is never touched. Every step execs, so the pid stays the same.
pub fn with_private_var_lib(
    var_lib: &Path,
    program: &str,
    args: impl IntoIterator<Item = String>,
) -> (PathBuf, Vec<String>) {
    let mut a: Vec<String> = [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount --bind "$0" /var/lib && exec "$@""#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(var_lib.display().to_string());
    a.push(program.to_string());
    a.extend(args);
    (PathBuf::from("unshare"), a)
}

/// Polls `f` every `interval` until it returns `Some` or `timeout` has passed
/// (`f` is tried one last time at the deadline).
pub fn wait_until<T>(
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestbedConfig {
    /// Number of nodes created up front (more can be added with [`Testbed::add_node`]).
    pub nodes: usize,
    /// MTU of the switch bridge and of every underlay veth (AWS uses 9001).
    pub underlay_mtu: u32,
    /// Start a real etcd in `<id>-etcd`.
    pub etcd: bool,
    /// Start etcd with `--enable-v2` (for legacy v2 data tests).
    pub etcd_v2: bool,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        TestbedConfig {
            nodes: 3,
            underlay_mtu: 9001,
            etcd: true,
            etcd_v2: false,
        }
    }
}

impl TestbedConfig {
    /// The default config with `nodes` nodes.
    pub fn with_nodes(nodes: usize) -> Self {
        TestbedConfig {
            nodes,
            ..Self::default()
        }
    }
}

/// How the underlay is addressed, beyond [`TestbedConfig`] (kept out of it so that its
/// struct literals elsewhere in the workspace keep compiling); see
/// [`Testbed::new_with_underlay`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Underlay {
    /// Dual-stack: besides its IPv4 address, every node's `eth0` gets [`node_ip6`]
    /// `/64` (`nodad`), and the switch, the nodes and their CNI pods get IPv6 on with
    /// DAD off (`disable_ipv6=0`, `accept_dad=0`) and, on nodes, `net.ipv6.conf.all.forwarding=1`.
    /// Off by default: an IPv4-only bed is exactly as before.
    pub ipv6: bool,
}

impl Underlay {
    /// IPv4 only (the default).
    pub const IPV4: Underlay = Underlay { ipv6: false };
    /// IPv4 and IPv6.
    pub const DUAL_STACK: Underlay = Underlay { ipv6: true };
}

/// One simulated machine: a namespace attached to the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub index: usize,
    /// `"n0"`, `"n1"`, ...
    pub name: String,
    /// `<id>-n<i>`
    pub ns: String,
    /// Underlay address of `eth0` (see [`node_ip`]).
    pub ip: Ipv4Addr,
    /// IPv6 underlay address of `eth0` (see [`node_ip6`]); `None` unless the bed is
    /// dual-stack ([`Underlay::ipv6`]).
    pub ip6: Option<Ipv6Addr>,
    /// `<testbed dir>/n<i>/`, for the node's config, state and logs.
    pub dir: PathBuf,
}

/// A pod namespace plumbed into a node's `cni0` bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// `<id>-n<i>p<j>`
    pub ns: String,
    /// Address of the pod's `eth0`.
    pub ip: Ipv4Addr,
    /// IPv6 address of the pod's `eth0`: the CNI result's first IPv6 address (a
    /// dual-stack subnet.env), `None` for IPv4-only pods and hand-plumbed ones.
    pub ip6: Option<Ipv6Addr>,
    /// Index of the node the pod runs on.
    pub node: usize,
    /// `j`: the pod's number on its node.
    pub index: usize,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// Node-side veth (`vethp<j>`, a port of `cni0` in the node's namespace).
    pub host_veth: String,
}

#[derive(Debug)]
struct Tracked {
    pid: Pid,
    child: Child,
    what: String,
    is_etcd: bool,
    status: Option<ExitStatus>,
}

impl Tracked {
    /// Non-blocking reap; the exit status once the process has exited.
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.status = Some(st);
        }
        self.status
    }
}

/// A namespaced multi-node VPC with (optionally) a real etcd. See the crate docs.
#[derive(Debug)]
pub struct Testbed {
    id: String,
    label: String,
    cfg: TestbedConfig,
    underlay: Underlay,
    dir: Option<TempDir>,
    dir_path: PathBuf,
    sw_ns: String,
    etcd_ns: String,
    /// Every namespace this bed created (or was about to create), in creation order.
    namespaces: Vec<String>,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    pods_per_node: Vec<usize>,
    procs: Vec<Tracked>,
    etcd_pid: Option<Pid>,
    /// TLS files and extra members (see [`tls`]).
    etcd_state: tls::EtcdState,
    log_seq: usize,
    bring_up: Duration,
    torn_down: bool,
}

impl Testbed {
    /// Builds the switch, etcd (if configured) and `cfg.nodes` nodes, and waits
    /// until etcd is healthy. `label` (e.g. the test name) only appears in logs
    /// and in `<dir>/testbed.json`.
    pub fn new(label: &str, cfg: TestbedConfig) -> Result<Testbed, TestbedError> {
        Self::new_with_etcd(label, cfg, EtcdSetup::Plain)
    }

    /// Like [`Testbed::new`], running etcd as `setup` says: over TLS, or as members started
    /// from explicit command lines (see [`tls`]). `cfg.etcd` must be true unless `setup` is
    /// [`EtcdSetup::Plain`].
    pub fn new_with_etcd(
        label: &str,
        cfg: TestbedConfig,
        setup: EtcdSetup,
    ) -> Result<Testbed, TestbedError> {
        Self::new_with_etcd_and_underlay(label, cfg, setup, Underlay::IPV4)
    }

    /// Like [`Testbed::new`], with the underlay addressed as `underlay` says
    /// ([`Underlay::DUAL_STACK`]: every node also gets [`node_ip6`]).
    pub fn new_with_underlay(
        label: &str,
        cfg: TestbedConfig,
        underlay: Underlay,
    ) -> Result<Testbed, TestbedError> {
        Self::new_with_etcd_and_underlay(label, cfg, EtcdSetup::Plain, underlay)
    }

    /// [`Testbed::new_with_etcd`] and [`Testbed::new_with_underlay`] together.
    pub fn new_with_etcd_and_underlay(
        label: &str,
        cfg: TestbedConfig,
        setup: EtcdSetup,
        underlay: Underlay,
    ) -> Result<Testbed, TestbedError> {
        require_root()?;
        if !cfg.etcd && setup != EtcdSetup::Plain {
            return Err(TestbedError::Invalid(
                "an EtcdSetup other than Plain needs TestbedConfig::etcd = true".into(),
            ));
        }
        if cfg.nodes > MAX_NODES {
            return Err(TestbedError::Invalid(format!(
                "{} nodes requested, at most {MAX_NODES} are supported",
                cfg.nodes
            )));
        }
        check_mtu(cfg.underlay_mtu)?;
        let started = Instant::now();
        let id = claim_id()?;
        // From here on, `tb` owns `<id>-sw`: any early return drops it and so cleans up.
        let mut tb = Testbed {
            id: id.clone(),
            label: label.to_string(),
            cfg: cfg.clone(),
            underlay,
            dir: None,
            dir_path: PathBuf::new(),
            sw_ns: format!("{id}-sw"),
            etcd_ns: format!("{id}-etcd"),
            namespaces: vec![format!("{id}-sw")],
            nodes: Vec::new(),
            pods: Vec::new(),
            pods_per_node: Vec::new(),
            procs: Vec::new(),
            etcd_pid: None,
            etcd_state: tls::EtcdState::new(setup),
            log_seq: 0,
            bring_up: Duration::ZERO,
            torn_down: false,
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("weft-testbed-{id}-"))
            .tempdir()
            .map_err(|e| TestbedError::Io {
                what: "creating the testbed temp dir (check TMPDIR)".into(),
                source: e,
            })?;
        tb.dir_path = dir.path().to_path_buf();
        tb.dir = Some(dir);
        tb.prepare_etcd_tls()?;
        debug!(id = %tb.id, label, dir = %tb.dir_path.display(), "testbed: building");
        tb.plumb(0..cfg.nodes, cfg.etcd, true)?;
        tb.bring_up = started.elapsed();
        tb.write_manifest();
        info!(
            id = %tb.id,
            label,
            nodes = cfg.nodes,
            etcd = cfg.etcd,
            elapsed_ms = tb.bring_up.as_secs_f64() * 1e3,
            dir = %tb.dir_path.display(),
            "testbed up"
        );
        Ok(tb)
    }

    /// The bed's unique id, e.g. `wt3fa9c1`; every namespace name starts with it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The label given to [`Testbed::new`].
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn config(&self) -> &TestbedConfig {
        &self.cfg
    }

    /// How the underlay is addressed (see [`Underlay`]).
    pub fn underlay(&self) -> Underlay {
        self.underlay
    }

    /// How long [`Testbed::new`] took.
    pub fn bring_up_time(&self) -> Duration {
        self.bring_up
    }

    /// The per-testbed temp dir (removed on drop unless `WEFT_TESTBED_KEEP=1`).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The switch namespace (`<id>-sw`, holding bridge `br0`).
    pub fn switch_ns(&self) -> &str {
        &self.sw_ns
    }

    /// Every namespace this bed created so far.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// `http://10.250.0.2:2379` (`https://` with TLS; every member's client URL,
    /// comma-separated, for [`EtcdSetup::Members`]), reachable from every node namespace.
    pub fn etcd_endpoint(&self) -> String {
        self.etcd_state.endpoints()
    }

    /// `<id>-etcd` (the namespace exists only when the config enables etcd).
    pub fn etcd_ns(&self) -> &str {
        &self.etcd_ns
    }

    /// Pid of the running etcd, if any.
    pub fn etcd_pid(&self) -> Option<Pid> {
        self.etcd_pid
    }

    /// etcd's stdout/stderr (appended across restarts).
    pub fn etcd_log(&self) -> PathBuf {
        self.dir_path.join("etcd.log")
    }

    /// `ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 <args>` inside the
    /// etcd namespace; stdout on success.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, TestbedError> {
        self.etcdctl_stdin(args, "")
    }

    /// Like [`Testbed::etcdctl`], feeding `stdin` to etcdctl (e.g. `put key` reads
    /// the value from stdin, `txn` reads its script).
    pub fn etcdctl_stdin(&self, args: &[&str], stdin: &str) -> Result<String, TestbedError> {
        self.require_etcd()?;
        let cmd = self.etcdctl_command(args.iter().map(OsStr::new));
        let out = cmd::start_with_stdin(cmd, stdin.to_string(), &self.etcd_hint())?.finish()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGKILL etcd by pid and reap it; the data dir is kept for [`Testbed::start_etcd`].
    pub fn stop_etcd(&mut self) -> Result<(), TestbedError> {
        if self.etcd_state.is_members() && self.etcd_pid.is_some() {
            return self.stop_etcd_members();
        }
        let pid = self.etcd_pid.ok_or_else(|| {
            TestbedError::EtcdUnavailable(format!(
                "stop_etcd: etcd of testbed {} is not running",
                self.id
            ))
        })?;
        if let Some(st) = self.tracked(pid)?.poll() {
            warn!(id = %self.id, %pid, "stop_etcd: etcd had already exited ({st})");
            self.etcd_pid = None;
            return Ok(());
        }
        self.kill_and_reap(pid, "etcd")?;
        self.etcd_pid = None;
        debug!(id = %self.id, %pid, "etcd stopped");
        Ok(())
    }

    /// SIGKILLs `pid` and waits (10 s at most) until it is reaped; `what` names it in the
    /// timeout error.
    pub(crate) fn kill_and_reap(&mut self, pid: Pid, what: &str) -> Result<(), TestbedError> {
        self.signal(pid, Signal::SIGKILL)?;
        let timeout = Duration::from_secs(10);
        if self.wait_exit(pid, timeout)?.is_none() {
            return Err(TestbedError::Timeout {
                what: format!("{what} after SIGKILL"),
                pid,
                timeout,
            });
        }
        Ok(())
    }

    /// Restarts etcd with the same data dir and waits until it is healthy.
    pub fn start_etcd(&mut self) -> Result<(), TestbedError> {
        if !self.cfg.etcd {
            return Err(TestbedError::EtcdUnavailable(format!(
                "start_etcd: testbed {} was built without etcd (TestbedConfig::etcd = false)",
                self.id
            )));
        }
        if let Some(pid) = self.etcd_pid
            && self.is_running(pid)
        {
            return Err(TestbedError::Invalid(format!(
                "start_etcd: etcd (pid {pid}) is already running; call stop_etcd() first"
            )));
        }
        self.spawn_etcd()?;
        self.wait_etcd_healthy()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`. Panics if there is no such node (like slice indexing).
    pub fn node(&self, i: usize) -> &Node {
        match self.nodes.get(i) {
            Some(n) => n,
            None => panic!(
                "testbed {} has {} nodes, node({i}) does not exist",
                self.id,
                self.nodes.len()
            ),
        }
    }

    /// All pods added so far.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Adds one node (namespace, veth to the switch, address, route, ip_forward)
    /// and returns its index.
    pub fn add_node(&mut self) -> Result<usize, TestbedError> {
        self.check_live()?;
        let i = self.nodes.len();
        if i >= MAX_NODES {
            return Err(TestbedError::Invalid(format!(
                "add_node: at most {MAX_NODES} nodes are supported"
            )));
        }
        self.plumb(i..i + 1, false, false)?;
        self.write_manifest();
        Ok(i)
    }

    /// Hand-plumbs a pod on `node`: namespace `<id>-n<node>p<j>` whose `eth0`
    /// (`addr/prefix`, `mtu`, default route via `gateway`) is a veth to
    /// `vethp<j>`, a port of the node's bridge `cni0` (`gateway/prefix`,
    /// created with the first pod).
    pub fn add_pod(
        &mut self,
        node: usize,
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
        mtu: u32,
    ) -> Result<Pod, TestbedError> {
        self.check_live()?;
        let node_ns = match self.nodes.get(node) {
            Some(n) => n.ns.clone(),
            None => {
                return Err(TestbedError::Invalid(format!(
                    "add_pod: node {node} does not exist (testbed {} has {} nodes)",
                    self.id,
                    self.nodes.len()
                )));
            }
        };
        if !(1..=31).contains(&prefix) {
            return Err(TestbedError::Invalid(format!(
                "add_pod: prefix /{prefix} must be 1..=31"
            )));
        }
        if addr == gateway {
            return Err(TestbedError::Invalid(format!(
                "add_pod: pod address {addr} equals the gateway"
            )));
        }
        check_mtu(mtu)?;
        let j = self.pods_per_node[node];
        self.pods_per_node[node] += 1;
        let pod_ns = format!("{node_ns}p{j}");
        let host_veth = format!("vethp{j}");
        let hint = format!(
            "plumbing pod {pod_ns} on node {node_ns} of testbed {}",
            self.id
        );

        self.namespaces.push(pod_ns.clone());
        cmd::start_ip_batch(None, &[format!("netns add {pod_ns}")], &hint)?.finish()?;

        let mut node_lines = Vec::new();
        if j == 0 {
            node_lines.extend([
                format!("link add cni0 mtu {mtu} type bridge"),
                format!("addr add {gateway}/{prefix} dev cni0"),
                "link set cni0 up".to_string(),
            ]);
        }
        node_lines.extend([
            format!(
                "link add {host_veth} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {pod_ns}"
            ),
            format!("link set {host_veth} master cni0"),
            format!("link set {host_veth} up"),
        ]);
        cmd::start_ip_batch(Some(&node_ns), &node_lines, &hint)?.finish()?;

        let pod_lines = [
            "link set lo up".to_string(),
            format!("addr add {addr}/{prefix} dev eth0"),
            "link set eth0 up".to_string(),
            format!("route add default via {gateway}"),
        ];
        cmd::start_ip_batch(Some(&pod_ns), &pod_lines, &hint)?.finish()?;

        let pod = Pod {
            ns: pod_ns,
            ip: addr,
            ip6: None,
            node,
            index: j,
            prefix,
            gateway,
            host_veth,
        };
        self.pods.push(pod.clone());
        self.write_manifest();
        debug!(id = %self.id, pod = %pod.ns, ip = %addr, "pod added");
        Ok(pod)
    }

    /// Starts `ip netns exec <ns> <program> <args>` with `env` added, stdin from
    /// /dev/null and stdout+stderr appended to `log` (created if missing).
    /// `ip netns exec` execs in place, so the returned pid is the program's.
    /// The process is tracked: SIGKILLed and reaped at teardown.
    pub fn spawn(
        &mut self,
        ns: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Pid, TestbedError> {
        self.check_live()?;
        self.check_ns(ns)?;
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        self.spawn_tracked(ns, program.as_os_str(), &args, env, log, false, &[])
    }

    /// Sends `sig` to a process this testbed started (by pid).
    pub fn signal(&mut self, pid: Pid, sig: Signal) -> Result<(), TestbedError> {
        let t = self.tracked(pid)?;
        if let Some(st) = t.status {
            return Err(TestbedError::UnknownProcess {
                pid,
                extra: format!(" that is still alive (it already exited: {st}, and was reaped)"),
            });
        }
        // Not yet reaped, so the pid cannot have been reused.
        nix::sys::signal::kill(pid, sig).map_err(|e| TestbedError::Io {
            what: format!("kill({pid}, {sig}) of {}", t.what),
            source: e.into(),
        })
    }

    /// Waits up to `timeout` for a tracked process to exit and reaps it.
    /// `Ok(None)` on timeout (the process keeps running). Returns the same status
    /// again if called after the process was already reaped.
    pub fn wait_exit(
        &mut self,
        pid: Pid,
        timeout: Duration,
    ) -> Result<Option<ExitStatus>, TestbedError> {
        let t = self.tracked(pid)?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(st) = t.poll() {
                return Ok(Some(st));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Whether a tracked process is still running (reaps it if it exited).
    /// `false` for pids this testbed did not start.
    pub fn is_running(&mut self, pid: Pid) -> bool {
        match self.tracked(pid) {
            Ok(t) => t.poll().is_none(),
            Err(_) => false,
        }
    }

    /// `ip netns exec <ns> <cmd...>`; stdout on success, an error carrying the
    /// command and its stderr on a non-zero exit.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Result<String, TestbedError> {
        let out = self.exec_output(ns, cmd)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let c = self.exec_command(ns, cmd)?;
            Err(cmd::status_error(
                cmd::describe(&c),
                &out,
                "",
                &format!("ran inside netns {ns} of testbed {}", self.id),
            ))
        }
    }

    /// `ip netns exec <ns> <cmd...>`; the raw output, whatever the exit status.
    pub fn exec_output(&self, ns: &str, cmd: &[&str]) -> Result<Output, TestbedError> {
        let mut c = self.exec_command(ns, cmd)?;
        cmd::output(&mut c, &format!("running a command inside netns {ns}"))
    }

    /// Starts a background `ping -n -i <interval> -W 1 <to>` inside `from_ns`,
    /// its output going to a file in the testbed dir. Returns once ping is running
    /// and handles SIGINT.
    pub fn start_pinger(
        &mut self,
        from_ns: &str,
        to: Ipv4Addr,
        interval: Duration,
    ) -> Result<Pinger, TestbedError> {
        self.check_live()?;
        self.check_ns(from_ns)?;
        if interval < Duration::from_millis(2) {
            return Err(TestbedError::Invalid(format!(
                "start_pinger: interval {interval:?} is below ping's 2 ms minimum"
            )));
        }
        self.log_seq += 1;
        let log = self
            .dir_path
            .join(format!("ping-{}-{from_ns}-{to}.log", self.log_seq));
        let args = vec![
            "-n".to_string(),
            "-i".to_string(),
            format!("{:.3}", interval.as_secs_f64()),
            "-W".to_string(),
            "1".to_string(),
            to.to_string(),
        ];
        let pid = self.spawn(from_ns, Path::new("ping"), &args, &[], &log)?;
        // Ready once ping catches SIGINT (so `stop` gets a summary). Its output
        // is block-buffered until the first reply, so the log can't tell.
        let started = wait_until(Duration::from_secs(5), Duration::from_micros(500), || {
            if !self.is_running(pid) {
                return Some(Err(std::fs::read_to_string(&log).unwrap_or_default()));
            }
            catches_signal(pid, Signal::SIGINT).then_some(Ok(()))
        });
        match started {
            Some(Ok(())) => Ok(Pinger {
                pid,
                log,
                from_ns: from_ns.to_string(),
                to,
                interval,
            }),
            Some(Err(text)) => Err(TestbedError::Command {
                cmd: format!("ip netns exec {from_ns} ping {}", args.join(" ")),
                status: "exited at start-up".into(),
                stderr: text,
                stdin: String::new(),
                hint: "is the destination routable from that namespace?".into(),
            }),
            None => {
                let _ = self.signal(pid, Signal::SIGKILL);
                let _ = self.wait_exit(pid, Duration::from_secs(5));
                Err(TestbedError::Timeout {
                    what: format!("ping from {from_ns} to {to} installing its SIGINT handler"),
                    pid,
                    timeout: Duration::from_secs(5),
                })
            }
        }
    }

    /// `ping -n -q -c <count> -i 0.05 -w <timeout s, rounded up> <to>` inside
    /// `from_ns`. Loss is not an error (check [`PingStats::received`]); an error
    /// is returned only when ping printed no summary (e.g. "Network is unreachable").
    pub fn ping(
        &self,
        from_ns: &str,
        to: Ipv4Addr,
        count: u32,
        timeout: Duration,
    ) -> Result<PingStats, TestbedError> {
        self.ping_ip(from_ns, IpAddr::V4(to), count, timeout)
    }

    /// [`Testbed::ping`] to an IPv6 address (`ping -6 ...`).
    pub fn ping6(
        &self,
        from_ns: &str,
        to: Ipv6Addr,
        count: u32,
        timeout: Duration,
    ) -> Result<PingStats, TestbedError> {
        self.ping_ip(from_ns, IpAddr::V6(to), count, timeout)
    }

    /// [`Testbed::ping`] to either family: an IPv6 `to` runs `ping -6`, an IPv4 one
    /// exactly the command [`Testbed::ping`] documents.
    pub fn ping_ip(
        &self,
        from_ns: &str,
        to: IpAddr,
        count: u32,
        timeout: Duration,
    ) -> Result<PingStats, TestbedError> {
        if count == 0 {
            return Err(TestbedError::Invalid("ping: count must be >= 1".into()));
        }
        let secs = timeout.as_secs_f64().ceil().max(1.0).to_string();
        let count_s = count.to_string();
        let to_s = to.to_string();
        let mut argv = vec!["ping"];
        if to.is_ipv6() {
            argv.push("-6");
        }
        argv.extend(["-n", "-q", "-c", &count_s, "-i", "0.05", "-w", &secs, &to_s]);
        let out = self.exec_output(from_ns, &argv)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_ping_summary(&stdout).ok_or_else(|| TestbedError::PingParse {
            cmd: format!(
                "ip netns exec {from_ns} {} ({})",
                argv.join(" "),
                out.status
            ),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        })
    }

    /// `ip -n <ns> link set dev <dev> up|down`.
    pub fn link_set(&self, ns: &str, dev: &str, up: bool) -> Result<(), TestbedError> {
        self.check_ns(ns)?;
        let state = if up { "up" } else { "down" };
        cmd::checked(
            Command::new("ip").args(["-n", ns, "link", "set", "dev", dev, state]),
            &format!("does {dev} exist in netns {ns} (`ip -n {ns} link`)?"),
        )
        .map(drop)
    }

    /// Kills every process, deletes every namespace and removes the temp dir,
    /// reporting all problems (every step is attempted regardless). Dropping the
    /// bed does the same but can only log problems.
    pub fn teardown(mut self) -> Result<(), TestbedError> {
        let errors = self.teardown_inner();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TestbedError::Teardown {
                id: self.id.clone(),
                errors,
            })
        }
    }
}

// Internals.
impl Testbed {
    fn check_live(&self) -> Result<(), TestbedError> {
        if self.torn_down {
            Err(TestbedError::Invalid(format!(
                "testbed {} was already torn down",
                self.id
            )))
        } else {
            Ok(())
        }
    }

    fn check_ns(&self, ns: &str) -> Result<(), TestbedError> {
        if self.namespaces.iter().any(|n| n == ns) {
            Ok(())
        } else {
            Err(TestbedError::ForeignNamespace {
                ns: ns.to_string(),
                id: self.id.clone(),
            })
        }
    }

    fn exec_command(&self, ns: &str, cmd: &[&str]) -> Result<Command, TestbedError> {
        self.check_ns(ns)?;
        if cmd.is_empty() {
            return Err(TestbedError::Invalid("exec: empty command".into()));
        }
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(cmd);
        Ok(c)
    }

    fn tracked(&mut self, pid: Pid) -> Result<&mut Tracked, TestbedError> {
        self.procs
            .iter_mut()
            .rev()
            .find(|t| t.pid == pid)
            .ok_or(TestbedError::UnknownProcess {
                pid,
                extra: String::new(),
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_tracked(
        &mut self,
        ns: &str,
        program: &OsStr,
        args: &[OsString],
        env: &[(String, String)],
        log: &Path,
        is_etcd: bool,
        strip_env_prefixes: &[&str],
    ) -> Result<Pid, TestbedError> {
        let log_start = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| TestbedError::Io {
                what: format!("opening log file {}", log.display()),
                source: e,
            })?;
        let err = out.try_clone().map_err(|e| TestbedError::Io {
            what: format!("duplicating log file handle {}", log.display()),
            source: e,
        })?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        strip_env(&mut c, strip_env_prefixes);
        c.envs(env.iter().map(|(k, v)| (k, v)));
        let child = c
            .spawn()
            .map_err(|e| cmd::spawn_error(&c, e, "is iproute2 (`ip`) installed and in PATH?"))?;
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let what = cmd::describe(&c);
        debug!(id = %self.id, %pid, cmd = %what, log = %log.display(), "spawned");
        self.procs.push(Tracked {
            pid,
            child,
            what: what.clone(),
            is_etcd,
            status: None,
        });
        let mut launch = Vec::new();
        for a in std::iter::once(c.get_program()).chain(c.get_args()) {
            launch.extend_from_slice(a.as_bytes());
            launch.push(0);
        }
        self.wait_exec(pid, &launch, &what, log, log_start)?;
        Ok(pid)
    }

    /// Waits until `ip netns exec` has exec'd the program, so that signals sent
    /// right after `spawn` reach the program and not `ip`. A process that exits
    /// first because `ip` could not exec the program is an error.
    fn wait_exec(
        &mut self,
        pid: Pid,
        launch: &[u8],
        what: &str,
        log: &Path,
        log_start: u64,
    ) -> Result<(), TestbedError> {
        let own = std::fs::read("/proc/self/cmdline").unwrap_or_default();
        let cmdline = format!("/proc/{pid}/cmdline");
        let outcome = wait_until(
            Duration::from_secs(5),
            Duration::from_micros(200),
            || match self.tracked(pid).ok()?.poll() {
                Some(st) => Some(Some(st)),
                None => {
                    let cur = std::fs::read(&cmdline).unwrap_or_default();
                    (!cur.is_empty() && cur != own && cur != launch).then_some(None)
                }
            },
        );
        match outcome {
            Some(None) => Ok(()),
            None => {
                warn!(id = %self.id, %pid, cmd = %what, "spawned process did not exec its program within 5 s");
                Ok(())
            }
            Some(Some(status)) => {
                let tail = read_from(log, log_start);
                if tail.contains("exec of \"") {
                    Err(TestbedError::Command {
                        cmd: what.to_string(),
                        status: status.to_string(),
                        stderr: tail,
                        stdin: String::new(),
                        hint: "is the program installed, and the path right?".into(),
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    fn require_etcd(&self) -> Result<(), TestbedError> {
        if !self.cfg.etcd {
            return Err(TestbedError::EtcdUnavailable(format!(
                "testbed {} was built without etcd (TestbedConfig::etcd = false)",
                self.id
            )));
        }
        if self.etcd_pid.is_none() {
            return Err(TestbedError::EtcdUnavailable(format!(
                "etcd of testbed {} is stopped; call start_etcd() first",
                self.id
            )));
        }
        Ok(())
    }

    fn etcd_hint(&self) -> String {
        let log = if self.etcd_state.is_members() {
            self.dir_path.join("etcd-<member>.log")
        } else {
            self.etcd_log()
        };
        format!(
            "etcdctl ran inside netns {} against etcd of testbed {}; etcd's log is {}",
            self.etcdctl_ns(),
            self.id,
            log.display()
        )
    }

    /// Where etcdctl runs: inside `<id>-etcd` next to the single member, or in the switch
    /// namespace for [`EtcdSetup::Members`] (it reaches every member over `br0`, whichever
    /// member is partitioned).
    fn etcdctl_ns(&self) -> &str {
        if self.etcd_state.is_members() {
            &self.sw_ns
        } else {
            &self.etcd_ns
        }
    }

    fn etcdctl_command<'a>(&self, args: impl IntoIterator<Item = &'a OsStr>) -> Command {
        let etcdctl = std::env::var_os(ETCDCTL_ENV).unwrap_or_else(|| "etcdctl".into());
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.etcdctl_ns()])
            .arg(etcdctl)
            .args(self.etcd_state.etcdctl_args())
            .args(args);
        strip_env(&mut c, &["ETCDCTL_"]);
        c.env("ETCDCTL_API", "3");
        c
    }

    fn spawn_etcd(&mut self) -> Result<(), TestbedError> {
        if self.etcd_state.is_members() {
            return self.spawn_etcd_members();
        }
        let id = self.id.clone();
        let data_dir = self.dir_path.join("etcd");
        let scheme = self.etcd_state.scheme();
        let client_urls =
            format!("{scheme}://{ETCD_IP}:{ETCD_CLIENT_PORT},{scheme}://127.0.0.1:2379");
        let advertise = format!("{scheme}://{ETCD_IP}:{ETCD_CLIENT_PORT}");
        let cluster = format!("{id}=http://127.0.0.1:2380");
        let mut args: Vec<OsString> = [
            OsStr::new("--name"),
            OsStr::new(&id),
            OsStr::new("--data-dir"),
            data_dir.as_os_str(),
            OsStr::new("--listen-client-urls"),
            OsStr::new(&client_urls),
            OsStr::new("--advertise-client-urls"),
            OsStr::new(&advertise),
            OsStr::new("--listen-peer-urls"),
            OsStr::new("http://127.0.0.1:2380"),
            OsStr::new("--initial-advertise-peer-urls"),
            OsStr::new("http://127.0.0.1:2380"),
            OsStr::new("--initial-cluster"),
            OsStr::new(&cluster),
            // A single member campaigns after a random 1..=10 ticks once etcd's
            // start-up fast-forward is done: with the default 100 ms tick that
            // is up to 1 s of start-up; 10 ms ticks make it 10..100 ms. With no
            // peers, the short timeouts cannot cause spurious elections.
            OsStr::new("--heartbeat-interval"),
            OsStr::new("10"),
            OsStr::new("--election-timeout"),
            OsStr::new("100"),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        if self.cfg.etcd_v2 {
            args.push("--enable-v2".into());
        }
        args.extend(self.etcd_state.server_tls_args());
        let etcd = std::env::var_os(ETCD_ENV).unwrap_or_else(|| "etcd".into());
        let ns = self.etcd_ns().to_string();
        let log = self.etcd_log();
        let pid = self.spawn_tracked(&ns, &etcd, &args, &[], &log, true, &["ETCD"])?;
        self.etcd_pid = Some(pid);
        Ok(())
    }

    /// Polls every 50 ms: first whether etcd accepts TCP on 127.0.0.1:2379 (cheap,
    /// and avoids etcdctl's 1 s gRPC reconnect back-off), then
    /// `etcdctl endpoint health`.
    fn wait_etcd_healthy(&mut self) -> Result<(), TestbedError> {
        if self.etcd_state.is_members() {
            return self.wait_members_healthy();
        }
        let Some(pid) = self.etcd_pid else {
            return self.require_etcd();
        };
        let ns = self.etcd_ns().to_string();
        let started = Instant::now();
        loop {
            if let Some(status) = self.tracked(pid)?.poll() {
                self.etcd_pid = None;
                return Err(TestbedError::EtcdExited {
                    ns,
                    status: status.to_string(),
                    log: self.etcd_log().display().to_string(),
                    log_tail: log_tail(&self.etcd_log(), 30),
                });
            }
            let last_error;
            let port_open = in_netns(&ns, || {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ETCD_CLIENT_PORT));
                TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
            })
            .unwrap_or(false);
            if port_open {
                let mut c = self.etcdctl_command(
                    [
                        "--dial-timeout=2s",
                        "--command-timeout=3s",
                        "endpoint",
                        "health",
                    ]
                    .map(OsStr::new),
                );
                match cmd::output(&mut c, &self.etcd_hint()) {
                    Ok(out) if out.status.success() => {
                        debug!(
                            id = %self.id,
                            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                            "etcd healthy"
                        );
                        return Ok(());
                    }
                    Ok(out) => last_error = unhealthy(&out),
                    Err(e) => return Err(e),
                }
            } else {
                last_error = "127.0.0.1:2379 does not accept connections yet".into();
            }
            if started.elapsed() >= ETCD_HEALTH_TIMEOUT {
                return Err(TestbedError::EtcdUnhealthy {
                    ns,
                    waited: started.elapsed(),
                    last_error,
                    log: self.etcd_log().display().to_string(),
                    log_tail: log_tail(&self.etcd_log(), 30),
                });
            }
            std::thread::sleep(ETCD_POLL);
        }
    }

    /// Creates namespaces for the nodes `new_nodes` (and etcd), wires them to the
    /// switch (creating it when `first`), configures them concurrently, starts
    /// etcd and waits for it.
    fn plumb(
        &mut self,
        new_nodes: Range<usize>,
        with_etcd: bool,
        first: bool,
    ) -> Result<(), TestbedError> {
        let id = self.id.clone();
        let mtu = self.cfg.underlay_mtu;
        let sw = self.sw_ns.clone();
        let hint = format!("building testbed {id} ({})", self.label);
        let etcd_ns = self.etcd_ns.clone();

        // (switch port, peer namespace) for every new attachment.
        let mut ports: Vec<(String, String)> = Vec::new();
        if with_etcd {
            ports.push(("etcd".into(), etcd_ns.clone()));
        }
        let mut new = Vec::new();
        for i in new_nodes.clone() {
            let ip = node_ip(i).ok_or_else(|| {
                TestbedError::Invalid(format!("node {i} exceeds {MAX_NODES} nodes"))
            })?;
            let ip6 = if self.underlay.ipv6 {
                Some(node_ip6(i).ok_or_else(|| {
                    TestbedError::Invalid(format!("node {i} exceeds {MAX_NODES} nodes"))
                })?)
            } else {
                None
            };
            let node = Node {
                index: i,
                name: format!("n{i}"),
                ns: format!("{id}-n{i}"),
                ip,
                ip6,
                dir: self.dir_path.join(format!("n{i}")),
            };
            ports.push((node.name.clone(), node.ns.clone()));
            new.push(node);
        }

        // 1. Namespaces: one `ip -batch` of `netns add` lines. Record the names
        // first; teardown only deletes those that exist.
        let ns_names: Vec<String> = ports.iter().map(|(_, ns)| ns.clone()).collect();
        self.namespaces.extend(ns_names.iter().cloned());
        if !ns_names.is_empty() {
            let lines: Vec<String> = ns_names.iter().map(|n| format!("netns add {n}")).collect();
            cmd::start_ip_batch(None, &lines, &hint)?.finish()?;
        }

        // 1b. Dual-stack: IPv6 on and DAD off in the switch (once) and the new nodes
        // before any interface is made, so br0, the ports and every eth0 inherit it.
        if self.underlay.ipv6 {
            let mut targets: Vec<&str> = new.iter().map(|n| n.ns.as_str()).collect();
            if first {
                targets.push(&sw);
            }
            let started = targets
                .into_iter()
                .map(|ns| {
                    let mut sysctl = Command::new("ip");
                    sysctl.args(["netns", "exec", ns, "sysctl", "-q"]);
                    for kv in IPV6_SYSCTLS {
                        sysctl.args(["-w", kv]);
                    }
                    if ns != sw {
                        sysctl.args(["-w", "net.ipv6.conf.all.forwarding=1"]);
                    }
                    cmd::start_with_stdin(sysctl, String::new(), &hint)
                })
                .collect();
            cmd::finish_all(started)?;
        }

        // 2. Switch side: bridge (once) and one veth per attachment, the peer end
        // created directly in the attached namespace as `eth0`.
        let mut sw_lines = Vec::new();
        if first {
            sw_lines.extend([
                "link set lo up".to_string(),
                format!("link add br0 mtu {mtu} type bridge"),
                format!("addr add {SWITCH_IP}/{UNDERLAY_PREFIX} dev br0"),
            ]);
        }
        for (port, peer_ns) in &ports {
            sw_lines.extend([
                format!(
                    "link add {port} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {peer_ns}"
                ),
                format!("link set {port} master br0"),
                format!("link set {port} up"),
            ]);
        }
        if first {
            sw_lines.push(format!("link set br0 mtu {mtu}"));
            if self.underlay.ipv6 {
                // Flood neighbour discovery's multicast to every port, whatever MLD
                // reports the bridge has seen (there is no querier on this switch).
                sw_lines.push("link set br0 type bridge mcast_snooping 0".to_string());
            }
            sw_lines.push("link set br0 up".to_string());
        }
        if !sw_lines.is_empty() {
            cmd::start_ip_batch(Some(&sw), &sw_lines, &hint)?.finish()?;
        }

        // 3. Attached namespaces, all at once; etcd starts as soon as its
        // namespace is ready, while the nodes are still being configured.
        let etcd_batch = if with_etcd {
            let lines = [
                "link set lo up".to_string(),
                format!("addr add {ETCD_IP}/{UNDERLAY_PREFIX} dev eth0"),
                "link set eth0 up".to_string(),
            ];
            Some(cmd::start_ip_batch(Some(&etcd_ns), &lines, &hint)?)
        } else {
            None
        };
        let mut pending = Vec::new();
        let mut first_err = None;
        for node in &new {
            let mut lines = vec![
                "link set lo up".to_string(),
                format!("addr add {}/{UNDERLAY_PREFIX} dev eth0", node.ip),
            ];
            if let Some(ip6) = node.ip6 {
                lines.push(format!("addr add {ip6}/{UNDERLAY6_PREFIX} dev eth0 nodad"));
            }
            lines.extend([
                "link set eth0 up".to_string(),
                format!("route add default via {SWITCH_IP}"),
            ]);
            match cmd::start_ip_batch(Some(&node.ns), &lines, &hint) {
                Ok(p) => pending.push(p),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
            // Per-netns sysctl, never the host's.
            let mut sysctl = Command::new("ip");
            sysctl.args([
                "netns",
                "exec",
                &node.ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ]);
            match cmd::start_with_stdin(sysctl, String::new(), &hint) {
                Ok(p) => pending.push(p),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
            if let Err(e) = std::fs::create_dir_all(&node.dir) {
                first_err.get_or_insert(TestbedError::Io {
                    what: format!("creating {}", node.dir.display()),
                    source: e,
                });
            }
        }
        if let Some(b) = etcd_batch {
            match b.finish() {
                Ok(_) => {
                    if first_err.is_none()
                        && let Err(e) = self.spawn_etcd()
                    {
                        first_err = Some(e);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Wait for every child even after a failure, so none is left unreaped.
        for p in pending {
            if let Err(e) = p.finish() {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        for node in new {
            self.nodes.push(node);
            self.pods_per_node.push(0);
        }
        if with_etcd {
            self.wait_etcd_healthy()?;
        }
        Ok(())
    }

    fn write_manifest(&self) {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                let mut j = serde_json::json!({"index": n.index, "name": n.name, "ns": n.ns, "ip": n.ip.to_string(), "dir": n.dir});
                if let Some(ip6) = n.ip6 {
                    j["ip6"] = ip6.to_string().into();
                }
                j
            })
            .collect();
        let pods: Vec<serde_json::Value> = self
            .pods
            .iter()
            .map(|p| serde_json::json!({"ns": p.ns, "ip": p.ip.to_string(), "node": p.node, "host_veth": p.host_veth}))
            .collect();
        let manifest = serde_json::json!({
            "id": self.id,
            "label": self.label,
            "pid": std::process::id(),
            "underlay_mtu": self.cfg.underlay_mtu,
            "switch_ns": self.switch_ns(),
            "etcd_ns": self.etcd_ns(),
            "etcd_endpoint": if self.cfg.etcd { Some(self.etcd_endpoint()) } else { None },
            "namespaces": self.namespaces,
            "nodes": nodes,
            "pods": pods,
        });
        let path = self.dir_path.join("testbed.json");
        let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            warn!(id = %self.id, "writing {}: {e}", path.display());
        }
    }

    /// Leaves the bed running after this process exits (for `weft-lab demo --keep`): its
    /// processes, namespaces and directory stay, and `<dir>/testbed.json` records them.
    /// [`destroy_detached`] removes it all later. Returns that directory.
    pub fn detach(mut self) -> PathBuf {
        self.write_manifest();
        self.torn_down = true;
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.dir_path.clone()
    }

    /// The teardown proper; idempotent, never panics, returns every problem.
    fn teardown_inner(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let started = Instant::now();
        let mut errors = Vec::new();

        // 1. Tracked processes by pid: pingers and spawned programs, then etcd.
        for etcd_pass in [false, true] {
            for t in self.procs.iter_mut().filter(|t| t.is_etcd == etcd_pass) {
                if t.poll().is_some() {
                    continue;
                }
                if let Err(e) = nix::sys::signal::kill(t.pid, Signal::SIGKILL)
                    && e != nix::errno::Errno::ESRCH
                {
                    errors.push(format!("SIGKILL pid {} ({}): {e}", t.pid, t.what));
                }
                match t.child.wait() {
                    Ok(st) => t.status = Some(st),
                    Err(e) => errors.push(format!("reaping pid {} ({}): {e}", t.pid, t.what)),
                }
            }
        }
        self.etcd_pid = None;

        // 2. Namespaces: pods, nodes, etcd, switch.
        let mut existing: Vec<&String> = self
            .namespaces
            .iter()
            .filter(|n| netns_path(n).exists())
            .collect();
        existing.sort_by_key(|n| ns_rank(n));
        existing.dedup();
        // Descendants of our processes that are still inside our namespaces
        // (e.g. a daemon's children) would keep a deleted namespace alive.
        kill_strays(&existing, &mut errors, false);
        if !existing.is_empty() {
            let lines: Vec<String> = existing.iter().map(|n| format!("netns del {n}")).collect();
            let mut c = Command::new("ip");
            c.args(["-force", "-batch", "-"]);
            let mut script = lines.join("\n");
            script.push('\n');
            match cmd::start_with_stdin(c, script, "deleting testbed namespaces")
                .and_then(|p| p.finish())
            {
                Ok(_) => {}
                Err(e) => errors.push(e.to_string()),
            }
            for n in &existing {
                if netns_path(n).exists() {
                    errors.push(format!(
                        "netns {n} still exists after `ip netns del`; remove it with `ip netns del {n}`"
                    ));
                }
            }
        }

        // 3. The temp dir.
        if let Some(dir) = self.dir.take() {
            if keep_dir() {
                let path = dir.keep();
                warn!(id = %self.id, label = %self.label, "{KEEP_ENV} set: keeping testbed dir {}", path.display());
            } else if let Err(e) = dir.close() {
                errors.push(format!("removing {}: {e}", self.dir_path.display()));
            }
        }
        debug!(
            id = %self.id,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            errors = errors.len(),
            "testbed torn down"
        );
        errors
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for e in self.teardown_inner() {
            warn!(id = %self.id, label = %self.label, "testbed teardown: {e}");
        }
    }
}

/// Removes a testbed left running by [`Testbed::detach`]: kills every process inside its
/// namespaces (found by namespace identity, never by name), deletes the namespaces and removes
/// its directory. Only namespaces named like a testbed's (`wt…`) are touched.
pub fn destroy_detached(dir: &Path) -> Result<(), TestbedError> {
    let path = dir.join("testbed.json");
    let text = std::fs::read_to_string(&path).map_err(|source| TestbedError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    let manifest: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        TestbedError::Invalid(format!("{} is not a testbed manifest: {e}", path.display()))
    })?;
    let mut namespaces: Vec<String> = manifest["namespaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    namespaces.retain(|n| n.starts_with(ID_PREFIX) && netns_path(n).exists());
    namespaces.sort_by_key(|n| ns_rank(n));
    let refs: Vec<&String> = namespaces.iter().collect();
    let mut errors = Vec::new();
    kill_strays(&refs, &mut errors, true);
    for n in &namespaces {
        let out = Command::new("ip").args(["netns", "del", n]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => errors.push(format!(
                "ip netns del {n}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => errors.push(format!("ip netns del {n}: {e}")),
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        errors.push(format!("removing {}: {e}", dir.display()));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TestbedError::Teardown {
            id: manifest["id"].as_str().unwrap_or("?").to_string(),
            errors,
        })
    }
}

fn check_mtu(mtu: u32) -> Result<(), TestbedError> {
    if (68..=65535).contains(&mtu) {
        Ok(())
    } else {
        Err(TestbedError::Invalid(format!(
            "MTU {mtu} is outside 68..=65535"
        )))
    }
}

/// Picks a random id and claims it by creating `<id>-sw`; `ip netns add` fails
/// if the name exists, so two beds can never share an id.
fn claim_id() -> Result<String, TestbedError> {
    let mut last = None;
    for _ in 0..16 {
        let id = format!("{ID_PREFIX}{:06x}", rand::random::<u32>() & 0x00ff_ffff);
        let sw = format!("{id}-sw");
        if netns_path(&sw).exists() {
            continue;
        }
        let mut c = Command::new("ip");
        c.args(["netns", "add", &sw]);
        match cmd::checked(
            &mut c,
            "is iproute2 installed, and is /var/run/netns writable (are you root)?",
        ) {
            Ok(_) => return Ok(id),
            Err(e) => {
                if !netns_path(&sw).exists() {
                    return Err(e);
                }
                last = Some(e); // lost a race for this id: try another
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        TestbedError::Invalid("could not find a free testbed id after 16 tries".into())
    }))
}

/// Teardown order: pods, then nodes, then etcd, then the switch.
fn ns_rank(ns: &str) -> u8 {
    let suffix = ns.rsplit_once('-').map(|(_, s)| s).unwrap_or(ns);
    if suffix == "sw" {
        3
    } else if suffix.starts_with("etcd") {
        2
    } else if suffix.contains('p') {
        0
    } else {
        1
    }
}

fn keep_dir() -> bool {
    std::env::var(KEEP_ENV)
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false)
}

/// SIGKILLs (by pid) every process still living in one of `namespaces`: they
/// can only be descendants of processes this bed started.
fn kill_strays(namespaces: &[&String], errors: &mut Vec<String>, expected: bool) {
    let ids: BTreeSet<(u64, u64)> = namespaces
        .iter()
        .filter_map(|n| netns::ns_identity(&netns_path(n)))
        .collect();
    if ids.is_empty() {
        return;
    }
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in rd.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some(ident) = netns::ns_identity(&entry.path().join("ns/net")) else {
            continue;
        };
        if !ids.contains(&ident) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if expected {
            debug!(
                "killing pid {pid} ({}) inside a testbed namespace",
                cmdline.trim()
            );
        } else {
            warn!(
                "testbed teardown: killing leftover pid {pid} ({}) inside a testbed namespace",
                cmdline.trim()
            );
        }
        if let Err(e) = nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGKILL)
            && e != nix::errno::Errno::ESRCH
        {
            errors.push(format!(
                "SIGKILL leftover pid {pid} ({}): {e}",
                cmdline.trim()
            ));
        }
    }
}

/// A file's contents from byte `start` on (lossy, empty on error).
fn read_from(path: &Path, start: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(start)).is_ok()
    {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The last `lines` lines of a log file (for error messages).
fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(cannot read {})", path.display());
    };
    let mut buf = Vec::new();
    {
        use std::io::{Read, Seek, SeekFrom};
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let _ = f.read_to_end(&mut buf);
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether `pid` has a handler installed for `sig` (`SigCgt` in /proc/<pid>/status).
fn catches_signal(pid: Pid, sig: Signal) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig as i32 - 1)) != 0)
}

fn strip_env(c: &mut Command, prefixes: &[&str]) {
    if prefixes.is_empty() {
        return;
    }
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && prefixes.iter().any(|p| k.starts_with(p))
        {
            c.env_remove(k);
        }
    }
}

/// What a failed `etcdctl endpoint health` said: its stdout, then its stderr.
pub(crate) fn unhealthy(out: &std::process::Output) -> String {
    format!(
        "etcdctl endpoint health: {}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        assert_eq!(node_ip(0), Some(Ipv4Addr::new(10, 250, 1, 1)));
        assert_eq!(node_ip(2), Some(Ipv4Addr::new(10, 250, 1, 3)));
        assert_eq!(node_ip(249), Some(Ipv4Addr::new(10, 250, 1, 250)));
        assert_eq!(node_ip(250), Some(Ipv4Addr::new(10, 250, 2, 1)));
        assert_eq!(
            node_ip(MAX_NODES - 1),
            Some(Ipv4Addr::new(10, 250, 255, 250))
        );
        assert_eq!(node_ip(MAX_NODES), None);
    }

    #[test]
    fn teardown_order() {
        let mut v = vec![
            "wt000001-sw",
            "wt000001-etcd",
            "wt000001-etcd2",
            "wt000001-n0",
            "wt000001-n0p1",
            "wt000001-n10",
        ];
        v.sort_by_key(|n| ns_rank(n));
        assert_eq!(
            v,
            [
                "wt000001-n0p1",
                "wt000001-n0",
                "wt000001-n10",
                "wt000001-etcd",
                "wt000001-etcd2",
                "wt000001-sw"
            ]
        );
    }

    #[test]
    fn wait_until_times_out_and_succeeds() {
        let mut n = 0;
        let r = wait_until(Duration::from_secs(1), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(r, Some(3));
        let start = Instant::now();
        let r: Option<()> =
            wait_until(Duration::from_millis(30), Duration::from_millis(5), || None);
        assert!(r.is_none());
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn default_config() {
        let c = TestbedConfig::default();
        assert_eq!(
            (c.nodes, c.underlay_mtu, c.etcd, c.etcd_v2),
            (3, 9001, true, false)
        );
        assert_eq!(TestbedConfig::with_nodes(5).nodes, 5);
    }
}
