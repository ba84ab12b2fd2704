//! Pods made the way kubelet makes them: a CNI conflist's plugin chain, run like a
//! container runtime runs it through libcni, inside a node's namespace.
//!
//! For ADD, each plugin of the list gets its own config with the list's `name` and
//! `cniVersion`, the previous plugin's result as `prevResult`, and `runtimeConfig` for the
//! capabilities it declares (containerd always passes `portMappings`, empty for a pod
//! without hostPorts). DEL walks the list backwards with the same configs; from spec 0.4.0
//! on, each also gets the ADD result as `prevResult`, as libcni does with its cached result.
//!
//! The plugins run as `ip netns exec <node ns> <plugin>`, so `cni0` and the host-side veths
//! are created in the node, never on the host. All per-node state stays in the node's dir:
//! the `flannel` plugin's config gets `subnetFile`, `dataDir` and `ipam.dataDir` under
//! `<node dir>` (see [`CniNodePaths`]) unless the conflist sets them itself.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tracing::debug;

use crate::error::CniFailure;
use crate::{IPV6_SYSCTLS, Pod, Testbed, TestbedError, cmd, netns_path};

/// flannel's kube-flannel.yml `cni-conf.json` (the `cbr0` network), byte for byte.
pub const KUBE_FLANNEL_CONFLIST: &str = r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

/// Where Debian's containernetworking-plugins package installs the reference plugins.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The plugin type that resolves to [`CniSetup::plugin`].
pub const FLANNEL_TYPE: &str = "flannel";

/// The pod's interface name, as kubelet sets it.
pub const POD_IFNAME: &str = "eth0";

/// How long one plugin invocation may take before it is killed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Which CNI plugin chain builds the pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniSetup {
    /// The weft-cni binary; plugin type `flannel` runs it.
    pub plugin: PathBuf,
    /// Where the other plugins (bridge, host-local, portmap, ...) are looked up, in order,
    /// after the node's own bin dir.
    pub plugin_dirs: Vec<PathBuf>,
    /// The network config list (JSON), as it would sit in /etc/cni/net.d.
    pub conflist: String,
}

impl CniSetup {
    /// `plugin` with Debian's plugin dir and the kube-flannel `cbr0` conflist.
    pub fn new(plugin: impl Into<PathBuf>) -> CniSetup {
        CniSetup {
            plugin: plugin.into(),
            plugin_dirs: vec![PathBuf::from(DEFAULT_PLUGIN_DIR)],
            conflist: KUBE_FLANNEL_CONFLIST.to_string(),
        }
    }
}

/// A pod added through the CNI chain.
#[derive(Debug, Clone, PartialEq)]
pub struct CniPod {
    /// The pod namespace and its addressing (from the result).
    pub pod: Pod,
    /// The container id the plugins saw (`CNI_CONTAINERID`; the pod namespace's name).
    pub container_id: String,
    /// The chain's final result (the last plugin's stdout).
    pub result: Value,
}

/// Where a node's CNI files live, all under `<node dir>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniNodePaths {
    /// `<node dir>/cni/bin`: holds `flannel` -> [`CniSetup::plugin`]; first on CNI_PATH.
    pub bin_dir: PathBuf,
    /// `<node dir>/run/flannel/subnet.env`: the `subnetFile` (start weftd with
    /// `--subnet-file` there).
    pub subnet_file: PathBuf,
    /// `<node dir>/cni/flannel`: the flannel plugin's `dataDir` (saved delegate configs).
    pub flannel_data_dir: PathBuf,
    /// `<node dir>/cni/networks`: host-local's `dataDir` (one dir per network, one file per
    /// allocated IP).
    pub ipam_data_dir: PathBuf,
}

impl CniNodePaths {
    /// The paths for a node whose dir is `node_dir`.
    pub fn new(node_dir: &Path) -> CniNodePaths {
        CniNodePaths {
            bin_dir: node_dir.join("cni/bin"),
            subnet_file: node_dir.join("run/flannel/subnet.env"),
            flannel_data_dir: node_dir.join("cni/flannel"),
            ipam_data_dir: node_dir.join("cni/networks"),
        }
    }
}

/// A conflist, checked enough to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConfList {
    pub(crate) name: String,
    pub(crate) cni_version: String,
    pub(crate) plugins: Vec<Map<String, Value>>,
}

impl ConfList {
    /// Parses a conflist: an object with string `name` and `cniVersion` and a non-empty
    /// `plugins` list of objects with a string `type`.
    pub(crate) fn parse(text: &str) -> Result<ConfList, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(mut top) = v else {
            return Err("not a JSON object".to_string());
        };
        let string = |top: &Map<String, Value>, key: &str| match top.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!("\"{key}\" must be a non-empty string")),
        };
        let name = string(&top, "name")?;
        let cni_version = string(&top, "cniVersion")?;
        let Some(Value::Array(list)) = top.remove("plugins") else {
            return Err(
                "\"plugins\" must be a list (this must be a .conflist, not a .conf)".into(),
            );
        };
        if list.is_empty() {
            return Err("\"plugins\" is empty".to_string());
        }
        let mut plugins = Vec::with_capacity(list.len());
        for (i, p) in list.into_iter().enumerate() {
            match p {
                Value::Object(m) if m.get("type").and_then(Value::as_str).is_some() => {
                    plugins.push(m)
                }
                other => {
                    return Err(format!(
                        "plugin {i} is not an object with a string \"type\": {other}"
                    ));
                }
            }
        }
        Ok(ConfList {
            name,
            cni_version,
            plugins,
        })
    }

    pub(crate) fn plugin_type(&self, index: usize) -> &str {
        self.plugins[index]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// `MAJOR.MINOR.PATCH` as numbers; `None` if not of that shape.
fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let out = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(out)
}

/// Whether libcni hands the cached ADD result to DEL (spec 0.4.0 and later).
pub(crate) fn del_gets_prev_result(cni_version: &str) -> bool {
    parse_version(cni_version).is_some_and(|v| v >= (0, 4, 0))
}

/// The capability arguments containerd passes for every pod sandbox: no host ports.
pub(crate) fn default_capability_args() -> Map<String, Value> {
    let mut caps = Map::new();
    caps.insert("portMappings".into(), json!([]));
    caps
}

/// The config plugin `index` of `list` gets on stdin: its own object, plus `name` and
/// `cniVersion` from the list, `prevResult` when given, `runtimeConfig` for the
/// capabilities it declares that the runtime has arguments for (libcni's `buildOneConfig`
/// and `injectRuntimeConfig`). The `flannel` plugin also gets the node's paths, unless the
/// conflist already sets them.
pub(crate) fn plugin_config(
    list: &ConfList,
    index: usize,
    prev_result: Option<&Value>,
    paths: &CniNodePaths,
    capability_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = list.plugins[index].clone();
    conf.insert("name".into(), json!(list.name));
    conf.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let declared: Vec<String> = conf
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|caps| {
            caps.iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let runtime: Map<String, Value> = declared
        .iter()
        .filter_map(|k| Some((k.clone(), capability_args.get(k)?.clone())))
        .collect();
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    if list.plugin_type(index) == FLANNEL_TYPE {
        let path = |p: &Path| json!(p.display().to_string());
        conf.entry("subnetFile")
            .or_insert_with(|| path(&paths.subnet_file));
        conf.entry("dataDir")
            .or_insert_with(|| path(&paths.flannel_data_dir));
        // An `ipam` that is not an object is left for the plugin to reject.
        if let Value::Object(ipam) = conf.entry("ipam").or_insert_with(|| json!({})) {
            ipam.entry("dataDir")
                .or_insert_with(|| path(&paths.ipam_data_dir));
        }
    }
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

/// What a pod's addressing is, read from a CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodAddressing {
    pub(crate) ip: Ipv4Addr,
    /// The result's first IPv6 address, if any.
    pub(crate) ip6: Option<Ipv6Addr>,
    pub(crate) prefix: u8,
    /// The IP's gateway; 0.0.0.0 when the result names none.
    pub(crate) gateway: Ipv4Addr,
    /// The last interface outside the sandbox (for bridge: the host-side veth); empty if none.
    pub(crate) host_veth: String,
}

/// The first IPv4 address of a result (0.3.x with `"version":"4"` or 1.x without), its
/// gateway, the first IPv6 address (if any), and the host-side interface.
pub(crate) fn pod_addressing(result: &Value) -> Result<PodAddressing, String> {
    let ips = result
        .get("ips")
        .and_then(Value::as_array)
        .ok_or("the result has no \"ips\" list")?;
    let (ip, prefix, gateway) = ips
        .iter()
        .find_map(|entry| {
            let (addr, len) = entry.get("address")?.as_str()?.split_once('/')?;
            let ip: Ipv4Addr = addr.parse().ok()?;
            let prefix: u8 = len.parse().ok().filter(|p| *p <= 32)?;
            let gateway = entry
                .get("gateway")
                .and_then(Value::as_str)
                .and_then(|g| g.parse().ok())
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            Some((ip, prefix, gateway))
        })
        .ok_or("the result has no IPv4 address")?;
    let ip6 = ips.iter().find_map(|entry| {
        let (addr, _) = entry.get("address")?.as_str()?.split_once('/')?;
        addr.parse::<Ipv6Addr>().ok()
    });
    let host_veth = result
        .get("interfaces")
        .and_then(Value::as_array)
        .and_then(|ifs| {
            ifs.iter()
                .filter(|i| {
                    i.get("sandbox")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                })
                .filter_map(|i| i.get("name").and_then(Value::as_str))
                .next_back()
        })
        .unwrap_or_default()
        .to_string();
    Ok(PodAddressing {
        ip,
        ip6,
        prefix,
        gateway,
        host_veth,
    })
}

/// Whether a subnet.env's text gives the node an IPv6 pod subnet (`FLANNEL_IPV6_SUBNET`).
pub(crate) fn subnet_env_has_ipv6(text: &str) -> bool {
    text.lines().any(|l| {
        l.trim()
            .strip_prefix("FLANNEL_IPV6_SUBNET=")
            .is_some_and(|v| !v.trim().trim_matches('"').is_empty())
    })
}

/// `CNI_ARGS` as kubelet's runtime sets them.
pub(crate) fn cni_args(pod_name: &str, container_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name};K8S_POD_INFRA_CONTAINER_ID={container_id}"
    )
}

/// Everything one chain run needs.
struct Chain {
    list: ConfList,
    paths: CniNodePaths,
    /// The resolved binary of each plugin, in list order.
    binaries: Vec<PathBuf>,
    cni_path: String,
    node_ns: String,
    pod_ns: String,
    container_id: String,
    caps: Map<String, Value>,
}

/// What a plugin process did.
struct Ran {
    status: String,
    success: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Chain {
    /// Runs plugin `index` for `verb` with `config`; its stdout on success.
    fn run(
        &self,
        verb: &'static str,
        index: usize,
        config: Vec<u8>,
        netns: Option<&Path>,
    ) -> Result<Vec<u8>, Box<CniFailure>> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node_ns])
            .arg(&self.binaries[index])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_IFNAME", POD_IFNAME)
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_ARGS", cni_args(&self.pod_ns, &self.container_id));
        if let Some(ns) = netns {
            c.env("CNI_NETNS", ns);
        }
        let started = Instant::now();
        let ran = run_with_timeout(c, &config, PLUGIN_TIMEOUT);
        debug!(
            pod = %self.pod_ns,
            verb,
            plugin = self.list.plugin_type(index),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "CNI plugin ran"
        );
        let failure = |status: String, stdout: &[u8], stderr: &[u8]| {
            Box::new(CniFailure {
                verb,
                plugin: self.list.plugin_type(index).to_string(),
                index,
                network: self.list.name.clone(),
                pod_ns: self.pod_ns.clone(),
                node_ns: self.node_ns.clone(),
                container_id: self.container_id.clone(),
                status,
                error: serde_json::from_slice::<Value>(stdout)
                    .ok()
                    .filter(|v| v.get("code").is_some()),
                stdout: String::from_utf8_lossy(stdout).into_owned(),
                stderr: String::from_utf8_lossy(stderr).into_owned(),
                config: String::from_utf8_lossy(&config).into_owned(),
                cleanup: Vec::new(),
            })
        };
        match ran {
            Ok(r) if r.success => Ok(r.stdout),
            Ok(r) => Err(failure(r.status, &r.stdout, &r.stderr)),
            Err(e) => Err(failure(
                format!("could not run `ip netns exec`: {e}"),
                b"",
                b"",
            )),
        }
    }

    /// DEL of plugins `0..=last`, last first; the failures.
    fn del_range(
        &self,
        last: usize,
        prev_result: Option<&Value>,
        netns: Option<&Path>,
    ) -> Vec<CniFailure> {
        (0..=last)
            .rev()
            .filter_map(|i| {
                let config = plugin_config(&self.list, i, prev_result, &self.paths, &self.caps);
                self.run("DEL", i, config, netns).err().map(|f| *f)
            })
            .collect()
    }
}

/// Runs `c` with `stdin`, capturing stdout and stderr; kills it after `timeout`.
fn run_with_timeout(mut c: Command, stdin: &[u8], timeout: Duration) -> std::io::Result<Ran> {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn()?;
    let input = stdin.to_vec();
    let mut pipe_in = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(p) = pipe_in.as_mut() {
            // A plugin that exits without reading closes the pipe: its status says why.
            let _ = p.write_all(&input);
        }
    });
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let _ = writer.join();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(match status {
        Some(st) => Ran {
            status: st.to_string(),
            success: st.success(),
            stdout,
            stderr,
        },
        None => Ran {
            status: format!("did not finish within {timeout:?} and was killed"),
            success: false,
            stdout,
            stderr,
        },
    })
}

/// Finds `name` in `dirs` (a regular file, symlinks followed), like libcni's `FindInPath`.
fn find_in_path(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
}

/// Points `link` at `target`, replacing whatever link is there (atomically).
fn ensure_symlink(link: &Path, target: &Path) -> std::io::Result<()> {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let tmp = link.with_file_name(format!(
        ".{}.tmp-{}",
        link.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

impl Testbed {
    /// `<node dir>/run/flannel/subnet.env`: where the flannel plugin of
    /// [`Testbed::add_cni_pod`] reads node `node`'s lease (start weftd with
    /// `--subnet-file` there, or write it by hand). Panics if there is no such node.
    pub fn subnet_file(&self, node: usize) -> PathBuf {
        self.cni_paths(node).subnet_file
    }

    /// Node `node`'s CNI paths ([`CniNodePaths`]). Panics if there is no such node.
    pub fn cni_paths(&self, node: usize) -> CniNodePaths {
        CniNodePaths::new(&self.node(node).dir)
    }

    /// Creates pod namespace `<id>-n<node>p<j>` and runs the conflist's plugin chain for
    /// it like a container runtime (see the [module docs](crate::cni)): ADD of every plugin
    /// in order, each with the previous one's result as `prevResult`, inside the node's
    /// namespace, with CNI_PATH = `<node dir>/cni/bin` (holding `flannel` -> the plugin)
    /// then [`CniSetup::plugin_dirs`].
    ///
    /// When a plugin fails, the plugins up to and including the failed one get a DEL in
    /// reverse order (a runtime tears down the whole list after a failed ADD, and DEL must
    /// be idempotent), the namespace is deleted, and the error is
    /// [`TestbedError::Cni`] carrying the plugin's CNI error JSON.
    pub fn add_cni_pod(&mut self, node: usize, cni: &CniSetup) -> Result<CniPod, TestbedError> {
        self.check_live()?;
        let node_ns = match self.nodes.get(node) {
            Some(n) => n.ns.clone(),
            None => {
                return Err(TestbedError::Invalid(format!(
                    "add_cni_pod: node {node} does not exist (testbed {} has {} nodes)",
                    self.id,
                    self.nodes.len()
                )));
            }
        };
        let j = self.pods_per_node[node];
        let pod_ns = format!("{node_ns}p{j}");
        let mut chain = self.cni_chain(node, cni, "add_cni_pod", &pod_ns)?;
        chain.container_id = pod_ns.clone();
        self.pods_per_node[node] += 1;
        let hint = format!(
            "creating CNI pod {pod_ns} on node {node_ns} of testbed {}",
            self.id
        );

        self.namespaces.push(pod_ns.clone());
        // The runtime's loopback network, brought up directly.
        let made = cmd::start_ip_batch(None, &[format!("netns add {pod_ns}")], &hint)
            .and_then(|p| p.finish())
            .and_then(|_| {
                cmd::start_ip_batch(Some(&pod_ns), &["link set lo up".to_string()], &hint)
            })
            .and_then(|p| p.finish());
        if let Err(e) = made {
            let _ = self.delete_pod_ns(&pod_ns);
            return Err(e);
        }
        // IPv6 pods (a dual-stack bed, or a subnet.env with FLANNEL_IPV6_SUBNET): IPv6 on
        // and DAD off in the pod before the plugins make its eth0, so the address the
        // result reports is usable at once (as the node's cni0 already is).
        let ipv6 = self.underlay.ipv6
            || std::fs::read_to_string(&chain.paths.subnet_file)
                .is_ok_and(|t| subnet_env_has_ipv6(&t));
        if ipv6 {
            let mut sysctl = Command::new("ip");
            sysctl.args(["netns", "exec", &pod_ns, "sysctl", "-q"]);
            for kv in IPV6_SYSCTLS {
                sysctl.args(["-w", kv]);
            }
            if let Err(e) =
                cmd::start_with_stdin(sysctl, String::new(), &hint).and_then(|p| p.finish())
            {
                let _ = self.delete_pod_ns(&pod_ns);
                return Err(e);
            }
        }

        let netns = netns_path(&pod_ns);
        let mut prev: Option<Value> = None;
        for i in 0..chain.list.plugins.len() {
            let config = plugin_config(&chain.list, i, prev.as_ref(), &chain.paths, &chain.caps);
            let outcome = chain
                .run("ADD", i, config.clone(), Some(&netns))
                .and_then(|stdout| {
                    serde_json::from_slice::<Value>(&stdout).map_err(|e| {
                        Box::new(CniFailure {
                            verb: "ADD",
                            plugin: chain.list.plugin_type(i).to_string(),
                            index: i,
                            network: chain.list.name.clone(),
                            pod_ns: pod_ns.clone(),
                            node_ns: node_ns.clone(),
                            container_id: chain.container_id.clone(),
                            status: format!("exit status 0, but stdout is not a JSON result: {e}"),
                            error: None,
                            stdout: String::from_utf8_lossy(&stdout).into_owned(),
                            stderr: String::new(),
                            config: String::from_utf8_lossy(&config).into_owned(),
                            cleanup: Vec::new(),
                        })
                    })
                });
            match outcome {
                Ok(result) => prev = Some(result),
                Err(mut failure) => {
                    failure.cleanup = self.roll_back(&chain, i);
                    return Err(TestbedError::Cni(failure));
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let addressing = match pod_addressing(&result) {
            Ok(a) => a,
            Err(why) => {
                let last = chain.list.plugins.len() - 1;
                let cleanup = self.roll_back(&chain, last);
                return Err(TestbedError::Invalid(format!(
                    "add_cni_pod: the CNI result for pod {pod_ns} is unusable: {why}; result: {result}{}",
                    cleanup
                        .iter()
                        .map(|c| format!("\n  rollback: {c}"))
                        .collect::<String>()
                )));
            }
        };
        let pod = Pod {
            ns: pod_ns,
            ip: addressing.ip,
            ip6: addressing.ip6,
            node,
            index: j,
            prefix: addressing.prefix,
            gateway: addressing.gateway,
            host_veth: addressing.host_veth,
        };
        self.pods.push(pod.clone());
        self.write_manifest();
        debug!(id = %self.id, pod = %pod.ns, ip = %pod.ip, "CNI pod added");
        Ok(CniPod {
            pod,
            container_id: chain.container_id,
            result,
        })
    }

    /// Runs DEL through the chain in reverse order (every plugin is tried; from spec 0.4.0
    /// on each gets the ADD result as `prevResult`), then deletes the pod namespace.
    /// If a DEL fails, the namespace is kept so that a retry can finish, and the first
    /// failure is returned. Deleting a pod twice is fine: the second time the plugins get
    /// no CNI_NETNS and have nothing left to release.
    pub fn del_cni_pod(&mut self, pod: &CniPod, cni: &CniSetup) -> Result<(), TestbedError> {
        self.check_live()?;
        let belongs = self
            .nodes
            .get(pod.pod.node)
            .is_some_and(|n| pod.pod.ns.starts_with(&format!("{}p", n.ns)));
        if !belongs {
            return Err(TestbedError::ForeignNamespace {
                ns: pod.pod.ns.clone(),
                id: self.id.clone(),
            });
        }
        let mut chain = self.cni_chain(pod.pod.node, cni, "del_cni_pod", &pod.pod.ns)?;
        chain.container_id = pod.container_id.clone();
        let path = netns_path(&pod.pod.ns);
        let netns = path.exists().then_some(path.as_path());
        let prev = del_gets_prev_result(&chain.list.cni_version).then_some(&pod.result);
        let mut failures = chain.del_range(chain.list.plugins.len() - 1, prev, netns);
        if !failures.is_empty() {
            let mut first = failures.remove(0);
            first
                .cleanup
                .extend(failures.iter().map(|f| format!("also failed: {f}")));
            return Err(TestbedError::Cni(Box::new(first)));
        }
        if netns.is_some() {
            let hint = format!("deleting CNI pod {} of testbed {}", pod.pod.ns, self.id);
            cmd::start_ip_batch(None, &[format!("netns del {}", pod.pod.ns)], &hint)?.finish()?;
        }
        self.namespaces.retain(|n| *n != pod.pod.ns);
        self.pods.retain(|p| p.ns != pod.pod.ns);
        self.write_manifest();
        debug!(id = %self.id, pod = %pod.pod.ns, "CNI pod deleted");
        Ok(())
    }

    /// Checks the setup and prepares a chain run for a pod on `node` (container id and
    /// pod namespace still to be filled in by the caller when they differ).
    fn cni_chain(
        &self,
        node: usize,
        cni: &CniSetup,
        what: &str,
        pod_ns: &str,
    ) -> Result<Chain, TestbedError> {
        let node_ns = match self.nodes.get(node) {
            Some(n) => n.ns.clone(),
            None => {
                return Err(TestbedError::Invalid(format!(
                    "{what}: node {node} does not exist (testbed {} has {} nodes)",
                    self.id,
                    self.nodes.len()
                )));
            }
        };
        let list = ConfList::parse(&cni.conflist).map_err(|why| {
            TestbedError::Invalid(format!(
                "{what}: CniSetup::conflist is not a usable network config list: {why}"
            ))
        })?;
        let plugin = std::fs::canonicalize(&cni.plugin)
            .ok()
            .filter(|p| p.is_file())
            .ok_or_else(|| {
                TestbedError::Invalid(format!(
                    "{what}: CniSetup::plugin {} is not an existing file; build the weft-cni binary first (`cargo build -p weft-cni`)",
                    cni.plugin.display()
                ))
            })?;
        let paths = self.cni_paths(node);
        std::fs::create_dir_all(&paths.bin_dir)
            .and_then(|()| ensure_symlink(&paths.bin_dir.join(FLANNEL_TYPE), &plugin))
            .map_err(|e| TestbedError::Io {
                what: format!(
                    "{what}: linking {}/{FLANNEL_TYPE} to {}",
                    paths.bin_dir.display(),
                    plugin.display()
                ),
                source: e,
            })?;
        let dirs: Vec<PathBuf> = std::iter::once(paths.bin_dir.clone())
            .chain(cni.plugin_dirs.iter().cloned())
            .collect();
        let cni_path = dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let binaries = (0..list.plugins.len())
            .map(|i| {
                let t = list.plugin_type(i);
                find_in_path(t, &dirs).ok_or_else(|| {
                    TestbedError::Invalid(format!(
                        "{what}: plugin {t:?} (plugin {i} of network {:?}) is not in CNI_PATH {cni_path}; install containernetworking-plugins (Debian puts them in {DEFAULT_PLUGIN_DIR}) or add its directory to CniSetup::plugin_dirs",
                        list.name
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain {
            list,
            paths,
            binaries,
            cni_path,
            node_ns,
            pod_ns: pod_ns.to_string(),
            container_id: pod_ns.to_string(),
            caps: default_capability_args(),
        })
    }

    /// After a failed ADD: DEL plugins `0..=last` in reverse order, delete the pod
    /// namespace. Returns the problems met.
    fn roll_back(&mut self, chain: &Chain, last: usize) -> Vec<String> {
        let netns = netns_path(&chain.pod_ns);
        let mut problems: Vec<String> = chain
            .del_range(last, None, Some(&netns))
            .iter()
            .map(|f| f.to_string())
            .collect();
        if let Err(e) = self.delete_pod_ns(&chain.pod_ns) {
            problems.push(e.to_string());
        }
        problems
    }

    /// Deletes a pod namespace this bed created and forgets it.
    fn delete_pod_ns(&mut self, pod_ns: &str) -> Result<(), TestbedError> {
        let result = if netns_path(pod_ns).exists() {
            let hint = format!("deleting pod {pod_ns} of testbed {}", self.id);
            cmd::start_ip_batch(None, &[format!("netns del {pod_ns}")], &hint)
                .and_then(|p| p.finish())
                .map(drop)
        } else {
            Ok(())
        };
        self.remove_pod_ns(pod_ns);
        result
    }

    /// Forgets a pod namespace once it is gone (teardown still deletes it if it is not).
    fn remove_pod_ns(&mut self, pod_ns: &str) {
        if !netns_path(pod_ns).exists() {
            self.namespaces.retain(|n| n != pod_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> CniNodePaths {
        CniNodePaths::new(Path::new("/tb/n0"))
    }

    fn config(list: &ConfList, i: usize, prev: Option<&Value>) -> Value {
        serde_json::from_slice(&plugin_config(
            list,
            i,
            prev,
            &paths(),
            &default_capability_args(),
        ))
        .unwrap()
    }

    #[test]
    fn node_paths_stay_in_the_node_dir() {
        let p = paths();
        assert_eq!(p.bin_dir, Path::new("/tb/n0/cni/bin"));
        assert_eq!(p.subnet_file, Path::new("/tb/n0/run/flannel/subnet.env"));
        assert_eq!(p.flannel_data_dir, Path::new("/tb/n0/cni/flannel"));
        assert_eq!(p.ipam_data_dir, Path::new("/tb/n0/cni/networks"));
    }

    #[test]
    fn parses_kube_flannel_and_rejects_bad_lists() {
        let list = ConfList::parse(KUBE_FLANNEL_CONFLIST).unwrap();
        assert_eq!(
            (list.name.as_str(), list.cni_version.as_str()),
            ("cbr0", "0.3.1")
        );
        assert_eq!(list.plugins.len(), 2);
        assert_eq!(
            (list.plugin_type(0), list.plugin_type(1)),
            ("flannel", "portmap")
        );
        for (bad, needle) in [
            ("nope", "not JSON"),
            ("[]", "object"),
            (
                r#"{"cniVersion":"0.3.1","plugins":[{"type":"x"}]}"#,
                "\"name\"",
            ),
            (r#"{"name":"n","plugins":[{"type":"x"}]}"#, "\"cniVersion\""),
            (
                r#"{"name":"n","cniVersion":"0.3.1","type":"bridge"}"#,
                ".conflist",
            ),
            (r#"{"name":"n","cniVersion":"0.3.1","plugins":[]}"#, "empty"),
            (
                r#"{"name":"n","cniVersion":"0.3.1","plugins":[{"type":1}]}"#,
                "plugin 0",
            ),
        ] {
            let err = ConfList::parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn flannel_config_gets_list_fields_and_node_paths() {
        let list = ConfList::parse(KUBE_FLANNEL_CONFLIST).unwrap();
        assert_eq!(
            config(&list, 0, None),
            json!({
                "type": "flannel",
                "name": "cbr0",
                "cniVersion": "0.3.1",
                "delegate": {"hairpinMode": true, "isDefaultGateway": true},
                "subnetFile": "/tb/n0/run/flannel/subnet.env",
                "dataDir": "/tb/n0/cni/flannel",
                "ipam": {"dataDir": "/tb/n0/cni/networks"}
            })
        );
    }

    #[test]
    fn explicit_paths_in_the_conflist_win() {
        let list = ConfList::parse(
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"flannel","subnetFile":"/x.env","ipam":{"dataDir":"/ipam","routes":[]}}]}"#,
        )
        .unwrap();
        let c = config(&list, 0, None);
        assert_eq!(c["subnetFile"], "/x.env");
        assert_eq!(c["dataDir"], "/tb/n0/cni/flannel");
        assert_eq!(c["ipam"], json!({"dataDir": "/ipam", "routes": []}));
    }

    #[test]
    fn chained_plugin_gets_prev_result_and_runtime_config() {
        let list = ConfList::parse(KUBE_FLANNEL_CONFLIST).unwrap();
        let prev = json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.244.5.2/24"}]});
        assert_eq!(
            config(&list, 1, Some(&prev)),
            json!({
                "type": "portmap",
                "name": "cbr0",
                "cniVersion": "0.3.1",
                "capabilities": {"portMappings": true},
                "runtimeConfig": {"portMappings": []},
                "prevResult": prev
            })
        );
        // A capability the plugin does not declare (or declares false) is not passed.
        let list = ConfList::parse(
            r#"{"name":"n","cniVersion":"0.3.1","plugins":[{"type":"x","capabilities":{"portMappings":false,"bandwidth":true}}]}"#,
        )
        .unwrap();
        assert!(config(&list, 0, None).get("runtimeConfig").is_none());
    }

    #[test]
    fn del_prev_result_from_0_4_0_on() {
        for (v, want) in [
            ("0.3.1", false),
            ("0.3.0", false),
            ("0.4.0", true),
            ("1.0.0", true),
            ("1.1.0", true),
            ("junk", false),
        ] {
            assert_eq!(del_gets_prev_result(v), want, "{v}");
        }
    }

    #[test]
    fn addressing_from_results() {
        let bridge_031 = json!({
            "cniVersion": "0.3.1",
            "interfaces": [
                {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1234abcd", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/var/run/netns/p"}
            ],
            "ips": [{"version": "4", "interface": 2, "address": "10.244.5.2/24", "gateway": "10.244.5.1"}],
            "routes": [{"dst": "10.244.0.0/16"}]
        });
        assert_eq!(
            pod_addressing(&bridge_031).unwrap(),
            PodAddressing {
                ip: Ipv4Addr::new(10, 244, 5, 2),
                ip6: None,
                prefix: 24,
                gateway: Ipv4Addr::new(10, 244, 5, 1),
                host_veth: "veth1234abcd".into(),
            }
        );
        let v6_first = json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "fc00::5/64"}, {"address": "10.1.2.3/16"}]
        });
        let a = pod_addressing(&v6_first).unwrap();
        assert_eq!(
            (a.ip, a.prefix, a.gateway),
            (Ipv4Addr::new(10, 1, 2, 3), 16, Ipv4Addr::UNSPECIFIED)
        );
        assert_eq!(a.ip6, Some("fc00::5".parse().unwrap()));
        assert_eq!(a.host_veth, "");
        assert!(pod_addressing(&json!({})).is_err());
        assert!(pod_addressing(&json!({"ips": [{"address": "fc00::5/64"}]})).is_err());
    }

    #[test]
    fn subnet_env_with_an_ipv6_subnet() {
        assert!(subnet_env_has_ipv6(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\n"
        ));
        assert!(!subnet_env_has_ipv6(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\n"
        ));
        assert!(!subnet_env_has_ipv6("FLANNEL_IPV6_SUBNET=\n"));
    }

    #[test]
    fn kubelet_style_cni_args() {
        assert_eq!(
            cni_args("wt1-n0p0", "wt1-n0p0"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=wt1-n0p0;K8S_POD_INFRA_CONTAINER_ID=wt1-n0p0"
        );
    }

    #[test]
    fn runs_with_timeout() {
        let mut c = Command::new("sh");
        c.args(["-c", "cat; echo err >&2; exit 3"]);
        let r = run_with_timeout(c, b"hello", Duration::from_secs(10)).unwrap();
        assert!(!r.success);
        assert_eq!(r.stdout, b"hello");
        assert_eq!(r.stderr, b"err\n");
        assert!(r.status.contains('3'), "{}", r.status);
        let mut c = Command::new("sleep");
        c.arg("10");
        let started = Instant::now();
        let r = run_with_timeout(c, b"", Duration::from_millis(100)).unwrap();
        assert!(!r.success && r.status.contains("killed"), "{}", r.status);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn finds_plugins_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("bridge"), "").unwrap();
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_in_path("bridge", &dirs), Some(b.path().join("bridge")));
        std::fs::write(a.path().join("bridge"), "").unwrap();
        assert_eq!(find_in_path("bridge", &dirs), Some(a.path().join("bridge")));
        assert_eq!(find_in_path("../bridge", &dirs), None);
        assert_eq!(find_in_path("nope", &dirs), None);
        // The flannel link is followed and replaced when the plugin moves.
        let link = a.path().join("flannel");
        ensure_symlink(&link, &b.path().join("bridge")).unwrap();
        assert_eq!(find_in_path("flannel", &dirs), Some(link.clone()));
        ensure_symlink(&link, &a.path().join("bridge")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), a.path().join("bridge"));
    }
}
