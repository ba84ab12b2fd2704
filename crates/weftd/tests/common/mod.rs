//! Shared helpers for weftd's integration tests: a testbed with weftd on its nodes.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use weft_core::subnet_env::SubnetEnv;
use weft_testbed::{
    CniSetup, EtcdSetup, Pid, Pinger, Pod, Signal, Testbed, TestbedConfig, wait_until,
};

pub const NET_CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
pub const CONFIG_KEY: &str = "/coreos.com/network/config";
pub const SUBNETS: &str = "/coreos.com/network/subnets/";

pub fn weftd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weftd"))
}

/// The weft-cni binary, built beside weftd (`cargo build --workspace --bins`, which
/// scripts/test.sh runs first).
pub fn cni_setup() -> CniSetup {
    let plugin = weftd_bin().with_file_name("weft-cni");
    assert!(
        plugin.exists(),
        "{} is missing: build it first with `cargo build -p weft-cni` (scripts/test.sh does)",
        plugin.display()
    );
    CniSetup::new(plugin)
}

/// A testbed plus the weftd processes running on its nodes.
pub struct Cluster {
    pub tb: Testbed,
    pub weftd: Vec<Option<Pid>>,
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// A bed with `nodes` nodes and the network config written (unless `config` is None).
    pub fn new(label: &str, nodes: usize, config: Option<&str>) -> Cluster {
        let tb = Testbed::new(label, TestbedConfig::with_nodes(nodes));
        Cluster::on(label, tb, nodes, config)
    }

    /// `N` nodes with the network config [`NET_CONFIG`], each running weftd started as
    /// flanneld's flags start it, each holding its lease: the cluster and the nodes' subnets.
    pub fn running<const N: usize>(label: &str) -> (Cluster, [Ipv4Net; N]) {
        let mut c = Cluster::new(label, N, Some(NET_CONFIG));
        c.start_all();
        let subnets = std::array::from_fn(|i| c.subnet(i));
        (c, subnets)
    }

    /// Starts weftd on every node, in node order, as flanneld's flags start it; does not wait.
    pub fn start_all(&mut self) {
        for i in 0..self.weftd.len() {
            self.start(i, &[]);
        }
    }

    /// `n` nodes with [`NET_CONFIG`] starting weftd at once: waits until each is ready (up
    /// to `timeout` each), asserts that their subnets are distinct and that every weftd
    /// still runs, and prints how long it took.
    pub fn started_at_once(label: &str, n: usize, timeout: Duration) -> Cluster {
        let mut c = Cluster::new(label, n, Some(NET_CONFIG));
        let t0 = Instant::now();
        c.start_all();
        let subnets: BTreeSet<Ipv4Net> = (0..n)
            .map(|i| c.wait_ready(i, timeout).subnet.unwrap())
            .collect();
        eprintln!("{n} daemons ready in {:?}", t0.elapsed());
        assert_eq!(subnets.len(), n, "distinct subnets: {subnets:?}");
        for i in 0..n {
            assert!(
                c.tb.is_running(c.weftd[i].unwrap()),
                "node {i} crashed:\n{}",
                c.log(i)
            );
        }
        c
    }

    /// Like [`Cluster::new`], with etcd run as `setup` says (e.g. a 3-member cluster).
    pub fn new_with_etcd(
        label: &str,
        nodes: usize,
        setup: EtcdSetup,
        config: Option<&str>,
    ) -> Cluster {
        let tb = Testbed::new_with_etcd(label, TestbedConfig::with_nodes(nodes), setup);
        Cluster::on(label, tb, nodes, config)
    }

    fn on(
        label: &str,
        tb: Result<Testbed, weft_testbed::TestbedError>,
        nodes: usize,
        config: Option<&str>,
    ) -> Cluster {
        let tb = tb.unwrap_or_else(|e| panic!("{label}: testbed: {e}"));
        if let Some(c) = config {
            tb.etcdctl(&["put", CONFIG_KEY, c]).expect("put config");
        }
        Cluster {
            weftd: vec![None; nodes],
            tb,
            extra_args: vec!["--ip-masq".into()],
        }
    }

    /// Adds a node to the bed (weftd not started) and returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.tb.add_node().expect("add node");
        self.weftd.resize(i + 1, None);
        i
    }

    /// Every key under the subnets prefix with its etcd metadata (value, lease, create and
    /// mod revision, version: the `kvs` of `etcdctl get -w json`), by decoded key.
    pub fn lease_kvs(&self) -> BTreeMap<String, serde_json::Value> {
        let out = self
            .tb
            .etcdctl(&["get", "--prefix", SUBNETS, "-w", "json"])
            .expect("etcdctl get --prefix");
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        v["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        let key = base64_decode(kv["key"].as_str().unwrap_or(""));
                        (String::from_utf8_lossy(&key).into_owned(), kv.clone())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls node `i`'s /readyz every `every` from inside its namespace until stopped.
    pub fn watch_ready(&self, i: usize, every: Duration) -> ReadyWatch {
        let ns = self.tb.node(i).ns.clone();
        let ip = self.tb.node(i).ip;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            weft_testbed::in_netns(&ns, move || {
                let start = Instant::now();
                let mut log = ReadyLog::default();
                let mut down_since: Option<Duration> = None;
                while !flag.load(Ordering::Relaxed) {
                    let ok = http_get(ip, 8081, "/readyz").is_some_and(|(code, _)| code == 200);
                    let now = start.elapsed();
                    log.samples += 1;
                    match (ok, down_since) {
                        (false, None) => down_since = Some(now),
                        (true, Some(from)) => {
                            log.not_ready.push((from, now - from));
                            down_since = None;
                        }
                        _ => {}
                    }
                    std::thread::sleep(every);
                }
                if let Some(from) = down_since {
                    log.not_ready.push((from, start.elapsed() - from));
                    log.ends_not_ready = true;
                }
                log
            })
            .expect("enter the node's namespace")
        });
        ReadyWatch { stop, handle }
    }

    pub fn subnet_file(&self, i: usize) -> PathBuf {
        self.tb.subnet_file(i)
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        weft_testbed::weftd::log_path(&self.tb, i)
    }

    pub fn log(&self, i: usize) -> String {
        weft_testbed::weftd::read_log(&self.tb, i)
    }

    /// weftd's flags for node `i`: flanneld's flags only. No `--state-dir`: every node uses
    /// the default `/var/lib/weft`, which [`Cluster::start`] makes one directory shared by all
    /// nodes of the bed, exactly as on one host (see [`Cluster::var_lib`]).
    pub fn args(&self, i: usize) -> Vec<String> {
        let mut a = weft_testbed::weftd::flanneld_args(&self.tb, i);
        a.extend(self.extras());
        a
    }

    /// This cluster's flags on top of flanneld's.
    fn extras(&self) -> Vec<String> {
        let mut a = vec!["--healthz-port=8081".to_string()];
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// The directory each weftd of this bed sees as `/var/lib` (see
    /// [`weft_testbed::weftd::var_lib`]): all nodes share one `/var/lib/weft`.
    pub fn var_lib(&self) -> PathBuf {
        weft_testbed::weftd::var_lib(&self.tb)
    }

    /// The state dir all nodes share (their `/var/lib/weft`).
    pub fn state_dir(&self) -> PathBuf {
        self.var_lib().join("weft")
    }

    /// The program and arguments that run `program args` in a private mount namespace with
    /// [`Cluster::var_lib`] over `/var/lib`. Every step execs, so the pid stays the same.
    fn in_mount_ns(&self, program: &str, args: Vec<String>) -> (PathBuf, Vec<String>) {
        weft_testbed::with_private_var_lib(&self.var_lib(), program, args)
    }

    /// Waits until `pid` runs weftd itself (after the wrappers' execs).
    fn wait_exec(&mut self, i: usize, pid: Pid, what: &str) {
        if !weft_testbed::weftd::wait_exec(&mut self.tb, pid, &weftd_bin()) {
            panic!(
                "{what} did not exec weftd within 5 s; log:\n{}",
                self.log(i)
            );
        }
    }

    /// Starts weftd on node `i` with the standard args plus `extra`.
    pub fn start(&mut self, i: usize, extra: &[&str]) -> Pid {
        self.start_env(i, extra, &[])
    }

    /// Like [`Cluster::start`], with extra environment variables.
    pub fn start_env(&mut self, i: usize, extra: &[&str], vars: &[(&str, &str)]) -> Pid {
        let mut args = self.extras();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pid = weft_testbed::weftd::spawn(&mut self.tb, &weftd_bin(), i, &args, vars)
            .unwrap_or_else(|e| panic!("spawn weftd on node {i}: {e}"));
        self.weftd[i] = Some(pid);
        pid
    }

    /// Starts weftd on node `i` under `wrapper` (e.g. `["setpriv", <flags>, "--"]`), which
    /// must exec weftd in place so that the pid is weftd's. Waits until it is.
    pub fn start_wrapped(&mut self, i: usize, wrapper: &[&str], extra: &[&str]) -> Pid {
        let (program, wrapper_args) = wrapper.split_first().expect("a wrapper program");
        let mut args: Vec<String> = wrapper_args.iter().map(|s| s.to_string()).collect();
        args.push(weftd_bin().display().to_string());
        args.extend(self.args(i));
        args.extend(extra.iter().map(|s| s.to_string()));
        let ns = self.tb.node(i).ns.clone();
        let log = self.log_path(i);
        let env = [("RUST_LOG".to_string(), "info,weftd=debug".to_string())];
        let (unshare, args) = self.in_mount_ns(program, args);
        let pid = self
            .tb
            .spawn(&ns, &unshare, &args, &env, &log)
            .expect("spawn the wrapper of weftd");
        self.wait_exec(i, pid, program);
        self.weftd[i] = Some(pid);
        pid
    }

    pub fn kill(&mut self, i: usize, sig: Signal) {
        if let Some(pid) = self.weftd[i].take() {
            self.tb.signal(pid, sig).expect("signal weftd");
            self.tb
                .wait_exit(pid, Duration::from_secs(10))
                .expect("wait weftd");
        }
    }

    /// Waits until node `i` has written subnet.env, and returns it.
    /// The JSON of an etcd key (`etcdctl get -w json`), e.g. to read its lease id.
    pub fn key_json(&self, key: &str) -> serde_json::Value {
        let out = self
            .tb
            .etcdctl(&["get", key, "-w", "json"])
            .expect("etcdctl get");
        serde_json::from_str(&out).expect("etcdctl json")
    }

    /// The etcd lease id a key is attached to (0: none), or None if the key is absent.
    pub fn key_lease(&self, key: &str) -> Option<i64> {
        let v = self.key_json(key);
        let kv = v["kvs"].get(0)?;
        Some(kv["lease"].as_i64().unwrap_or(0))
    }

    pub fn lease_key(sn: Ipv4Net) -> String {
        format!("{SUBNETS}{}-{}", sn.network(), sn.prefix_len())
    }

    pub fn wait_ready(&self, i: usize, timeout: Duration) -> SubnetEnv {
        weft_testbed::weftd::wait_subnet_env(&self.tb, i, timeout).unwrap_or_else(|| {
            panic!(
                "node {i} not ready after {timeout:?}; log:\n{}",
                self.log(i)
            )
        })
    }

    pub fn subnet(&self, i: usize) -> Ipv4Net {
        self.wait_ready(i, Duration::from_secs(15))
            .subnet
            .expect("FLANNEL_SUBNET")
    }

    /// A pod on node `i`, made the way kubelet makes one: weft-cni (type flannel) delegating to
    /// the real bridge and host-local plugins, reading the subnet.env weftd wrote.
    pub fn pod(&mut self, i: usize) -> Pod {
        self.wait_ready(i, Duration::from_secs(15));
        let cni = cni_setup();
        self.tb
            .add_cni_pod(i, &cni)
            .unwrap_or_else(|e| panic!("pod on node {i}: {e}"))
            .pod
    }

    /// `cmd` inside node `i`'s namespace.
    pub fn sh(&self, i: usize, cmd: &[&str]) -> String {
        let ns = self.tb.node(i).ns.clone();
        self.tb
            .exec(&ns, cmd)
            .unwrap_or_else(|e| panic!("{cmd:?} on node {i}: {e}"))
    }

    /// An HTTP GET to weftd's health port inside node `i`: (status code, body).
    pub fn http_get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        let ns = self.tb.node(i).ns.clone();
        let ip = self.tb.node(i).ip;
        let path = path.to_string();
        weft_testbed::in_netns(&ns, move || http_get(ip, 8081, &path))
            .ok()
            .flatten()
    }

    /// The sum of every series of metric `name` in node `i`'s /metrics whose labels include
    /// all of `with`; 0 when there is none.
    pub fn metric(&self, i: usize, name: &str, with: &[(&str, &str)]) -> f64 {
        let (_, body) = self
            .http_get(i, "/metrics")
            .unwrap_or_else(|| panic!("node {i}: /metrics did not answer"));
        weft_testbed::prom::Scrape::parse(&body).sum(name, with)
    }

    /// Waits until `f` holds, panicking with node `i`'s log otherwise.
    pub fn eventually(&self, i: usize, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        if wait_until(timeout, Duration::from_millis(50), || f().then_some(())).is_none() {
            panic!(
                "{what}: not true after {timeout:?}; node {i} log:\n{}",
                self.log(i)
            );
        }
    }

    /// `cmd`'s stdout inside node `i`, or "" if it fails (e.g. the device is gone).
    pub fn sh_lenient(&self, i: usize, cmd: &[&str]) -> String {
        let ns = self.tb.node(i).ns.clone();
        match self.tb.exec_output(&ns, cmd) {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => String::new(),
        }
    }
    pub fn routes(&self, i: usize) -> String {
        self.sh_lenient(i, &["ip", "route", "show", "dev", "flannel.1"])
    }
    pub fn neighs(&self, i: usize) -> String {
        self.sh_lenient(i, &["ip", "neigh", "show", "dev", "flannel.1"])
    }
    pub fn fdb(&self, i: usize) -> String {
        self.sh_lenient(i, &["bridge", "fdb", "show", "dev", "flannel.1"])
    }

    /// The VTEP MAC of flannel.1 on node `i`.
    pub fn vtep_mac(&self, i: usize) -> String {
        let j = self.sh(i, &["ip", "-j", "link", "show", "flannel.1"]);
        let v: serde_json::Value = serde_json::from_str(&j).expect("ip -j");
        v[0]["address"].as_str().expect("address").to_string()
    }

    /// Waits until each of `nodes` has programmed every other one (neighbour, FDB entry and
    /// route): a node is ready before its watch has delivered a lease written a moment later,
    /// so traffic started at "ready" can find no path yet.
    pub fn wait_mesh(&self, nodes: &[usize], timeout: Duration) {
        let peers: Vec<(usize, Ipv4Net, String, Ipv4Addr)> = nodes
            .iter()
            .map(|&j| (j, self.subnet(j), self.vtep_mac(j), self.tb.node(j).ip))
            .collect();
        for &i in nodes {
            for (j, sn, mac, ip) in &peers {
                if *j != i {
                    self.eventually(i, &format!("node {j} programmed"), timeout, || {
                        self.has_peer(i, *sn, mac, *ip) == (true, true, true)
                    });
                }
            }
        }
    }

    /// Waits (5 s) until node `i` holds all three entries (neighbour, FDB entry, route) of
    /// the peer at `subnet` with VTEP `mac` and `public_ip`.
    pub fn wait_peer(&self, i: usize, what: &str, subnet: Ipv4Net, mac: &str, public_ip: Ipv4Addr) {
        self.eventually(i, what, Duration::from_secs(5), || {
            self.has_peer(i, subnet, mac, public_ip) == (true, true, true)
        });
    }

    /// [`Cluster::wait_peer`] for node `j` at `subnet`; returns node `j`'s VTEP MAC and IP.
    pub fn wait_node_peer(
        &self,
        i: usize,
        what: &str,
        j: usize,
        subnet: Ipv4Net,
    ) -> (String, Ipv4Addr) {
        let (mac, ip) = (self.vtep_mac(j), self.tb.node(j).ip);
        self.wait_peer(i, what, subnet, &mac, ip);
        (mac, ip)
    }

    /// Entries node `i` holds for a peer subnet: (neigh, fdb, route) present?
    pub fn has_peer(
        &self,
        i: usize,
        subnet: Ipv4Net,
        mac: &str,
        public_ip: Ipv4Addr,
    ) -> (bool, bool, bool) {
        let gw = subnet.network();
        let neigh = self.neighs(i).lines().any(|l| {
            l.starts_with(&format!("{gw} ")) && l.contains(mac) && l.contains("PERMANENT")
        });
        let fdb = self.fdb(i).lines().any(|l| {
            l.starts_with(mac)
                && l.contains(&format!("dst {public_ip} "))
                && l.contains("self permanent")
        });
        let route = self
            .routes(i)
            .lines()
            .any(|l| l.starts_with(&format!("{subnet} via {gw} ")) && l.contains("onlink"));
        (neigh, fdb, route)
    }
}

/// A GET of weftd's health server (plain HTTP): the status and the body.
pub fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> Option<(u16, String)> {
    weft_testbed::http::get((ip, port).into(), path, Duration::from_secs(2)).ok()
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A running [`Cluster::watch_ready`].
pub struct ReadyWatch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<ReadyLog>,
}

impl ReadyWatch {
    pub fn stop(self) -> ReadyLog {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("readiness poller")
    }
}

/// What a [`ReadyWatch`] saw.
#[derive(Debug, Default, Clone)]
pub struct ReadyLog {
    pub samples: u64,
    /// Every stretch without a 200 from /readyz: (start, since the watch began; length).
    pub not_ready: Vec<(Duration, Duration)>,
    /// Whether the last stretch was still going on when the watch stopped.
    pub ends_not_ready: bool,
}

impl ReadyLog {
    pub fn total(&self) -> Duration {
        self.not_ready.iter().map(|(_, d)| *d).sum()
    }
    pub fn longest(&self) -> Duration {
        self.not_ready
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }
}

/// Standard base64, as etcdctl's JSON encodes keys and values; invalid input yields an
/// empty value, never a panic.
pub fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// A long-lived TCP flow from each pod to the next (pod i to pod i+1, around the ring), on
/// ports from `port`: a round trip every 20 ms until `stop` (see [`weft_testbed::flow`]).
pub fn ring_flows(
    pods: &[Pod],
    port: u16,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<Result<u64, String>>> {
    (0..pods.len())
        .map(|i| {
            let (a, b) = (&pods[i], &pods[(i + 1) % pods.len()]);
            weft_testbed::flow::tcp_flow(
                &b.ns,
                b.ip,
                &a.ns,
                port + i as u16,
                Duration::from_millis(20),
                stop.clone(),
            )
            .unwrap_or_else(|e| panic!("TCP flow {} -> {}: {e}", a.ip, b.ip))
        })
        .collect()
}

/// Stops the [`ring_flows`] and asserts that none broke and each made more than
/// `min_trips` round trips.
pub fn stop_flows(flows: Vec<JoinHandle<Result<u64, String>>>, stop: &AtomicBool, min_trips: u64) {
    stop.store(true, Ordering::Relaxed);
    for (i, f) in flows.into_iter().enumerate() {
        let trips = f
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("TCP flow {i} broke: {e}"));
        assert!(trips > min_trips, "flow {i} made {trips} round trips");
    }
}

/// A vxlan lease value as flanneld writes it, of the node at `ip` with VTEP `mac`.
pub fn vxlan_lease(ip: impl std::fmt::Display, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

/// Pings every ordered pair of `pods` (3 pings each) and asserts all replies came back.
pub fn all_pairs_ping(c: &Cluster, pods: &[Pod]) {
    for a in pods {
        for b in pods {
            if a.ns != b.ns {
                assert_ping(c, a, b, 3);
            }
        }
    }
}

/// Background pingers between pods `a` and `b`, one each way, a ping every 20 ms: (a to b,
/// b to a).
pub fn pingers_both_ways(c: &mut Cluster, a: &Pod, b: &Pod) -> (Pinger, Pinger) {
    let every = Duration::from_millis(20);
    let ab = c.tb.start_pinger(&a.ns, b.ip, every).unwrap();
    let ba = c.tb.start_pinger(&b.ns, a.ip, every).unwrap();
    (ab, ba)
}

/// Pings pod `b` from pod `a` `count` times (5 s at most) and asserts all replies came back.
pub fn assert_ping(c: &Cluster, a: &Pod, b: &Pod, count: u32) {
    let st =
        c.tb.ping(&a.ns, b.ip, count, Duration::from_secs(5))
            .expect("ping");
    assert_eq!(st.received, count, "{} -> {}: {st:?}", a.ip, b.ip);
}
