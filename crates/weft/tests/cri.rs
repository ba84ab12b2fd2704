//! kubelet's own path (#10 item 6): pods made by containerd's CRI (`RunPodSandbox`), the way
//! kubelet makes them on an EKS node, through the conflist and plugins `weft install-cni`
//! puts on the node, with weftd running on both nodes.
//!
//! Two testbed nodes each run weftd (flanneld's flags, as the other testbed tests run it),
//! get `weft install-cni` run from the weft image (weft-cni as `flannel`, the image's static
//! bridge, host-local, portmap and loopback, the conflist), and run Debian's containerd with its CRI plugin pointed at the node's CNI dirs (see
//! weft_testbed::containerd for how it is run and why). The test talks CRI `runtime.v1` over
//! containerd's unix socket with the k8s-cri client, as kubelet does: a sandbox on each node,
//! ping between them, then StopPodSandbox/RemovePodSandbox, after which nothing of the pod
//! is left (host-local's IP, weft-cni's saved config, libcni's cache, the veth, the netns).
//!
//! Needs root, containerd + runc (Debian packages `containerd` and `runc`), gcc with the
//! static C library (the pause program is compiled here: there is no registry), etcd and the
//! CNI plugins; without them it fails saying what to install. CI runs as root.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest,
    VersionRequest,
};
use serde_json::Value;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use weft_cni::install::COMPANION_PLUGINS;
use weft_core::subnet_env::SubnetEnv;
use weft_testbed::containerd::{self, cni_conf_dir};
use weft_testbed::podman;
use weft_testbed::{Containerd, Testbed, TestbedConfig, oci, wait_until, weftd};

const NET_CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const CONFIG_KEY: &str = "/coreos.com/network/config";
/// The network name in install-cni's conflist (host-local keeps one dir per network).
const NETWORK: &str = "cbr0";

type Cri = RuntimeServiceClient<Channel>;

fn sibling(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_weft")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build it beside weft first (cargo build --workspace --bins; scripts/test.sh does)",
        p.display()
    );
    p
}

/// A CRI client on containerd's unix socket (tonic needs a connector for unix sockets; the
/// URI is a placeholder it never dials).
async fn connect(socket: &Path) -> Cri {
    let socket = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")
        .expect("static URI")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to containerd's CRI socket: {e}"));
    RuntimeServiceClient::new(channel)
}

/// The sandbox config kubelet sends for a plain pod (no host network, own pid namespace,
/// cluster DNS given explicitly so the host's resolv.conf plays no part).
fn sandbox_config(name: &str, uid: &str, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([
            ("io.kubernetes.pod.name".into(), name.into()),
            ("io.kubernetes.pod.namespace".into(), "default".into()),
            ("io.kubernetes.pod.uid".into(), uid.into()),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A sandbox as the test sees it.
#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    ip: Ipv4Addr,
    /// The network namespace path containerd reports (inside its mount namespace).
    netns: String,
    node: usize,
    create_time: Duration,
}

/// The sandbox's network namespace path from the verbose status (`info.runtimeSpec`).
fn netns_of(info: &HashMap<String, String>) -> Option<String> {
    let v: Value = serde_json::from_str(info.get("info")?).ok()?;
    v["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")?["path"]
        .as_str()
        .map(str::to_string)
}

async fn run_sandbox(cri: &mut Cri, ctrd: &Containerd, name: &str) -> Sandbox {
    let started = Instant::now();
    let uid = format!("{name}-uid");
    let resp = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config(name, &uid, ctrd.cgroup_parent())),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RunPodSandbox {name} on node {}: {e}\ncontainerd log:\n{}",
                ctrd.node(),
                ctrd.log_tail(40)
            )
        });
    let create_time = started.elapsed();
    let id = resp.into_inner().pod_sandbox_id;
    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let st = status.status.expect("a status");
    assert_eq!(st.state, 0, "sandbox {name} is not ready: {st:?}");
    let ip = st
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    let ip: Ipv4Addr = ip
        .parse()
        .unwrap_or_else(|_| panic!("sandbox {name} has no IPv4 address: {:?}", st.network));
    let netns = netns_of(&status.info).unwrap_or_else(|| {
        panic!(
            "no network namespace in the verbose status: {:?}",
            status.info
        )
    });
    Sandbox {
        id,
        ip,
        netns,
        node: ctrd.node(),
        create_time,
    }
}

/// Whatever of a pod's network state is still on its node (empty: nothing).
fn leftovers(tb: &Testbed, ctrd: &Containerd, sb: &Sandbox) -> Vec<String> {
    let paths = tb.cni_paths(sb.node);
    let mut left = Vec::new();
    let files = [
        (
            "host-local's reservation",
            paths.ipam_data_dir.join(NETWORK).join(sb.ip.to_string()),
        ),
        (
            "weft-cni's saved delegate config",
            paths.flannel_data_dir.join(&sb.id),
        ),
        (
            "libcni's cached result",
            tb.node(sb.node)
                .dir
                .join("cni/results")
                .join(format!("{NETWORK}-{}-eth0", sb.id)),
        ),
        (
            "the netns file",
            ctrd.host_path(&sb.netns).expect("netns under /var/run"),
        ),
        ("the netns mount", ctrd.view(&sb.netns)),
    ];
    for (what, path) in files {
        if path.exists() {
            left.push(format!("{what} {}", path.display()));
        }
    }
    let veths = tb
        .exec(
            &tb.node(sb.node).ns,
            &["ip", "-o", "link", "show", "master", "cni0"],
        )
        .unwrap_or_default();
    if !veths.trim().is_empty() {
        left.push(format!("pod veths on the node's cni0: {veths}"));
    }
    left
}

/// Every file under the node's CNI state dirs (`/var/lib/cni` and `/run/netns` as containerd
/// sees them) whose name is the pod's container id, IP or netns, or contains the id (a
/// lock, a cache entry, ...): after DEL there must be none.
fn files_naming(tb: &Testbed, sb: &Sandbox) -> Vec<PathBuf> {
    let dir = &tb.node(sb.node).dir;
    let netns_name = sb.netns.rsplit('/').next().unwrap_or_default().to_string();
    let ip = sb.ip.to_string();
    let mut stack = vec![dir.join("cni"), dir.join("run/netns")];
    let mut found = Vec::new();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if path == tb.cni_paths(sb.node).bin_dir {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(&sb.id) || name == ip || name == netns_name {
                found.push(path.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

/// Starts weftd on `node` as the other testbed tests do: flanneld's flags only (the subnet
/// file where containerd's CNI finds it as /run/flannel/subnet.env), in a private mount
/// namespace where the bed's `var-lib` dir stands over `/var/lib`, so the default state dir
/// `/var/lib/weft` is one dir shared by the bed's nodes, as on one host. Waits for subnet.env.
fn start_weftd(tb: &mut Testbed, node: usize) -> SubnetEnv {
    weftd::spawn(
        tb,
        &sibling("weftd"),
        node,
        &["--healthz-port=8081", "--ip-masq"],
        &[],
    )
    .expect("spawn weftd");
    weftd::ready(tb, node, Duration::from_secs(20))
}

/// What a node's init container does, from the image as the DaemonSet runs it:
/// `weft install-cni --plugins-dir /usr/lib/weft/cni` with the node's (empty) CNI dirs mounted
/// at /host/opt/cni/bin and /host/etc/cni/net.d. The sandboxes then run on the image's static
/// plugins, not on Debian's.
fn install_cni(tb: &Testbed, node: usize) {
    let bin = tb.cni_paths(node).bin_dir;
    let conf = cni_conf_dir(&tb.node(node).dir);
    for d in [&bin, &conf] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--network".into(),
        "none".into(),
    ];
    args.extend(podman::run_options());
    args.extend(podman::volume(&bin, "/host/opt/cni/bin", false));
    args.extend(podman::volume(&conf, "/host/etc/cni/net.d", false));
    args.extend(
        [
            "--entrypoint",
            "/usr/local/bin/weft",
            podman::DEV_IMAGE,
            "install-cni",
            "--bin-dir",
            "/host/opt/cni/bin",
            "--conf-dir",
            "/host/etc/cni/net.d",
            "--plugins-dir",
            "/usr/lib/weft/cni",
        ]
        .map(String::from),
    );
    let text =
        podman::podman_ok(&args).unwrap_or_else(|e| panic!("install-cni from the image: {e}"));
    for p in COMPANION_PLUGINS.iter().chain(&["flannel"]) {
        assert!(
            bin.join(p).is_file(),
            "install-cni did not install {p} into {}: {text}",
            bin.display()
        );
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn containerd_cri_sandboxes_reach_each_other_and_leave_no_state() {
    weft_testbed::require_root().expect("root");
    containerd::check_programs().unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    let mut tb = Testbed::new(
        "containerd_cri_sandboxes_reach_each_other_and_leave_no_state",
        TestbedConfig::with_nodes(2),
    )
    .unwrap_or_else(|e| panic!("testbed: {e}"));
    tb.etcdctl(&["put", CONFIG_KEY, NET_CONFIG])
        .expect("put config");
    podman::require_image(podman::DEV_IMAGE).unwrap_or_else(|e| panic!("{e}"));
    let envs: Vec<SubnetEnv> = (0..2).map(|i| start_weftd(&mut tb, i)).collect();
    for i in 0..2 {
        install_cni(&tb, i);
    }

    let image = format!("localhost/weft-test/pause:{}", tb.id());
    let archive = oci::build_pause_image(&tb.dir().join("pause"), &image)
        .unwrap_or_else(|e| panic!("pause image: {e}"));
    let mut ctrds = Vec::new();
    for i in 0..2 {
        let c = Containerd::start(&mut tb, i, &image).unwrap_or_else(|e| panic!("{e}"));
        c.import_image(&tb, &archive)
            .unwrap_or_else(|e| panic!("import the pause image on node {i}: {e}"));
        ctrds.push(c);
    }
    // The README's way onto a node without a registry: the image as an OCI archive, imported
    // into containerd's k8s.io namespace, where kubelet finds it by the manifest's reference.
    let weft_archive = tb.dir().join("weft-image.tar");
    let weft_image = format!("localhost/weft:{}", env!("CARGO_PKG_VERSION"));
    podman::podman_ok(&[
        "save".into(),
        "--quiet".into(),
        "--format".into(),
        "oci-archive".into(),
        "-o".into(),
        weft_archive.display().to_string(),
        weft_image.clone(),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    ctrds[0]
        .import_image(&tb, &weft_archive)
        .unwrap_or_else(|e| panic!("ctr images import of {weft_image}: {e}"));
    let sock = ctrds[0].socket().display().to_string();
    let listed = tb
        .exec(
            &tb.node(0).ns.clone(),
            &[
                "ctr",
                "--address",
                &sock,
                "-n",
                "k8s.io",
                "images",
                "ls",
                "-q",
            ],
        )
        .unwrap();
    assert!(
        listed.lines().any(|l| l.trim() == weft_image),
        "{weft_image} not in containerd after the import: {listed}"
    );
    let setup_time = t0.elapsed();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut clients = Vec::new();
    for c in &ctrds {
        let mut cri = rt.block_on(connect(c.socket()));
        let v = rt
            .block_on(cri.version(VersionRequest::default()))
            .expect("CRI Version")
            .into_inner();
        assert_eq!(v.runtime_name, "containerd", "{v:?}");
        assert_eq!(v.runtime_api_version, "v1", "{v:?}");
        // Like kubelet, wait for the runtime to report the network ready (the CNI config
        // was loaded from the node's conf dir).
        let ready = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let st = rt
                .block_on(cri.status(StatusRequest { verbose: false }))
                .ok()?
                .into_inner()
                .status?;
            st.conditions.iter().all(|c| c.status).then_some(())
        });
        assert!(
            ready.is_some(),
            "containerd on node {} never reported RuntimeReady and NetworkReady; log:\n{}",
            c.node(),
            c.log_tail(30)
        );
        clients.push(cri);
    }

    let mut sandboxes = Vec::new();
    for (i, (cri, c)) in clients.iter_mut().zip(&ctrds).enumerate() {
        let sb = rt.block_on(run_sandbox(cri, c, &format!("pod-n{i}")));
        let subnet = envs[i].subnet.expect("FLANNEL_SUBNET");
        assert!(
            subnet.contains(&sb.ip) && sb.ip != subnet.network(),
            "sandbox IP {} is not in node {i}'s subnet {subnet}",
            sb.ip
        );
        let left = leftovers(&tb, c, &sb);
        assert_eq!(
            left.len(),
            6,
            "while the pod runs, its IP, saved config, cache, netns and veth exist: {left:?}"
        );
        assert!(
            files_naming(&tb, &sb).len() >= 4,
            "the scan sees the running pod's files: {:?}",
            files_naming(&tb, &sb)
        );
        eprintln!(
            "node {i}: RunPodSandbox {} ip {} netns {} in {:?}",
            &sb.id[..12],
            sb.ip,
            sb.netns,
            sb.create_time
        );
        sandboxes.push(sb);
    }

    // Across the VXLAN overlay, both ways.
    for (from, to) in [(0, 1), (1, 0)] {
        let s = ctrds[from]
            .ping(
                &sandboxes[from].netns,
                sandboxes[to].ip,
                5,
                Duration::from_secs(5),
            )
            .unwrap_or_else(|e| panic!("ping {from} -> {to}: {e}"));
        eprintln!(
            "ping sandbox n{from} -> n{to} ({}): {}/{} received, avg {:?} ms",
            sandboxes[to].ip, s.received, s.transmitted, s.avg_rtt_ms
        );
        assert_eq!(s.received, s.transmitted, "{s:?}");
    }

    // kubelet's teardown: StopPodSandbox (CNI DEL) then RemovePodSandbox.
    for ((cri, c), sb) in clients.iter_mut().zip(&ctrds).zip(&sandboxes) {
        let started = Instant::now();
        rt.block_on(cri.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sb.id.clone(),
        }))
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", c.log_tail(30)));
        let stop_time = started.elapsed();
        let left = leftovers(&tb, c, sb);
        assert!(left.is_empty(), "after StopPodSandbox: {left:?}");
        rt.block_on(cri.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sb.id.clone(),
        }))
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", c.log_tail(30)));
        let listed = rt
            .block_on(cri.list_pod_sandbox(ListPodSandboxRequest { filter: None }))
            .expect("ListPodSandbox")
            .into_inner()
            .items;
        assert!(listed.is_empty(), "{listed:?}");
        assert!(leftovers(&tb, c, sb).is_empty());
        let stray = files_naming(&tb, sb);
        assert!(stray.is_empty(), "files of the removed pod: {stray:?}");
        eprintln!(
            "node {}: StopPodSandbox in {stop_time:?}, RemovePodSandbox after {:?}; nothing left",
            sb.node,
            started.elapsed()
        );
    }
    drop(clients);
    for c in ctrds {
        let dirs = c.cgroup_dirs().to_vec();
        c.stop(&mut tb).unwrap_or_else(|e| panic!("{e}"));
        assert!(dirs.iter().all(|d| !d.exists()), "cgroups left: {dirs:?}");
    }
    eprintln!("setup {setup_time:?}, total {:?}", t0.elapsed());
}
