//! The objects `weft manifest` prints, built from a validated [`Spec`].
//!
//! Names, labels and the DaemonSet selector are kube-flannel's (namespace `kube-flannel`,
//! ConfigMap `kube-flannel-cfg`, DaemonSet `kube-flannel-ds` selecting `app: flannel`, service
//! account `flannel`), so applying this over a kube-flannel install (such as the hand-patched
//! etcd-mode one) replaces flanneld by weftd node by node instead of running both.

use super::Spec;
use super::yaml::{self, Doc, Map, Node, strs};
use crate::netconf::BackendFlag;

const SERVICE_ACCOUNT: &str = "flannel";
const CONFIG_MAP: &str = "kube-flannel-cfg";
const DAEMON_SET: &str = "kube-flannel-ds";

/// Where the image keeps the binaries.
const WEFT: &str = "/usr/local/bin/weft";
const WEFTD: &str = "/usr/local/bin/weftd";

/// weftd's `--state-dir` (the VTEP MAC survives restarts there) and the subnet.env directory.
const STATE_DIR: &str = "/var/lib/weft";
const RUN_DIR: &str = "/run/flannel";
const XTABLES_LOCK: &str = "/run/xtables.lock";
const CONFIG_DIR: &str = "/etc/kube-flannel/";
/// Where the etcd TLS Secret is mounted, and its keys (the `kubernetes.io/tls` names).
pub const ETCD_TLS_DIR: &str = "/etc/weft/etcd";
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";

/// Host directories, and where the init containers see them.
const CNI_BIN: (&str, &str) = ("/opt/cni/bin", "/host/opt/cni/bin");
const CNI_CONF: (&str, &str) = ("/etc/cni/net.d", "/host/etc/cni/net.d");
/// kubelet's config dir on every EKS AMI family, and where `weft doctor --host-root /host`
/// reads it inside the weftd container.
const KUBELET_DIR: (&str, &str) = ("/etc/kubernetes/kubelet", "/host/etc/kubernetes/kubelet");

/// Host directories `weft node cleanup-vpc-cni` works in: (volume, host path, hostPath type,
/// mount path). They are mounted whole because the cleanup removes or renames directories
/// right inside them (/run/aws-node, /var/log/aws-routed-eni, ...), and a directory that is
/// itself a mount point can be neither removed nor renamed (EBUSY).
const CLEANUP_MOUNTS: &[(&str, &str, &str, &str)] = &[
    ("host-run", "/run", "Directory", "/host/run"),
    ("host-var-log", "/var/log", "Directory", "/host/var/log"),
    (
        "host-var-lib-cni",
        "/var/lib/cni",
        "DirectoryOrCreate",
        "/host/var/lib/cni",
    ),
    ("host-bpf", "/sys/fs/bpf", "Directory", "/host/sys/fs/bpf"),
];

/// The cleanup init container's command line: the VPC CNI's paths as the container sees them
/// (/var/run is /run on every systemd host), and the overlay network: on a node whose
/// VPC-addressed pods still run, the cleanup excludes it from the VPC CNI's SNAT and routes it
/// through the main table from the first start on, before weftd has written subnet.env.
pub fn cleanup_command(spec: &Spec) -> Vec<String> {
    let mut cmd: Vec<String> = cleanup_paths().iter().map(|s| s.to_string()).collect();
    cmd.extend([
        "--subnet-file".to_string(),
        "/host/run/flannel/subnet.env".to_string(),
    ]);
    let network = serde_json::from_str::<serde_json::Value>(&spec.net_conf)
        .ok()
        .and_then(|v| v.get("Network")?.as_str().map(str::to_string));
    if let Some(net) = network {
        cmd.extend(["--overlay-network".to_string(), net]);
    }
    cmd
}

fn cleanup_paths() -> Vec<&'static str> {
    vec![
        WEFT,
        "node",
        "cleanup-vpc-cni",
        "--apply",
        "--conf-dir",
        CNI_CONF.1,
        "--bin-dir",
        CNI_BIN.1,
        "--aws-node-run-dir",
        "/host/run/aws-node",
        "--aws-log-dir",
        "/host/var/log/aws-routed-eni",
        "--egress-v4pd-dir",
        "/host/run/cni/v4pd",
        "--egress-v6pd-dir",
        "/host/run/cni/v6pd",
        "--cni-results-dir",
        "/host/var/lib/cni/results",
        "--aws-bpf-dir",
        "/host/sys/fs/bpf/globals/aws",
        "--networkd-links-dir",
        "/host/run/systemd/netif/links",
    ]
}

/// Namespaces that exist in every cluster: the manifest does not (re)label them.
const BUILTIN_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// True when the manifest leaves the namespace object alone because the cluster owns it.
pub fn namespace_is_builtin(ns: &str) -> bool {
    BUILTIN_NAMESPACES.contains(&ns)
}

/// The multi-document YAML stream, ending in a newline.
pub fn to_yaml(spec: &Spec) -> String {
    yaml::stream(&header(spec), &documents(spec))
}

/// A `v1` `List` holding the same objects, pretty JSON ending in a newline.
pub fn to_json(spec: &Spec) -> String {
    let items: Vec<Node> = documents(spec)
        .into_iter()
        .map(|d| Node::Map(d.body))
        .collect();
    let list = Map::new()
        .with("apiVersion", "v1")
        .with("kind", "List")
        .with("items", items);
    let mut out = crate::output::json(&Node::Map(list));
    out.push('\n');
    out
}

fn header(spec: &Spec) -> Vec<String> {
    let backend = match (spec.backend, spec.direct_routing) {
        (BackendFlag::Vxlan, false) => "VXLAN",
        (BackendFlag::Vxlan, true) => "VXLAN with DirectRouting",
        (BackendFlag::HostGw, _) => "host-gw routes",
    };
    vec![
        format!(
            "weft: a flanneld-compatible pod network (weftd, subnet leases in etcd v3, {backend}) for Kubernetes {}.",
            spec.kube
        ),
        "Rendered by `weft manifest`; apply with: weft manifest <same flags> | kubectl apply -f -"
            .into(),
        String::new(),
        "weftd reads the network config from etcd (/coreos.com/network/config), not from the"
            .into(),
        "ConfigMap below. Write it once with the same values (idempotent; `weft network check`"
            .into(),
        "verifies it and the leases):".into(),
        format!("  {}", spec.network_init.join(" ")),
    ]
}

fn documents(spec: &Spec) -> Vec<Doc> {
    let mut docs = Vec::new();
    if !namespace_is_builtin(&spec.namespace) {
        docs.push(namespace(spec));
    }
    docs.push(service_account(spec));
    docs.push(config_map(spec));
    docs.push(daemon_set(spec));
    docs
}

fn labels(pairs: &[(&str, &str)]) -> Map {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.push(k, *v);
    }
    m
}

fn object(api_version: &str, kind: &str, name: &str, namespace: Option<&str>, labels: Map) -> Map {
    let mut meta = Map::new().with("name", name);
    if let Some(ns) = namespace {
        meta.push("namespace", ns);
    }
    meta.push("labels", labels);
    Map::new()
        .with("apiVersion", api_version)
        .with("kind", kind)
        .with("metadata", meta)
}

fn namespace(spec: &Spec) -> Doc {
    Doc {
        comment: vec![
            "weftd needs hostNetwork, hostPath volumes and NET_ADMIN/NET_RAW: the privileged"
                .into(),
            "Pod Security level.".into(),
        ],
        body: object(
            "v1",
            "Namespace",
            &spec.namespace,
            None,
            labels(&[
                ("k8s-app", "flannel"),
                ("app.kubernetes.io/name", "weft"),
                ("pod-security.kubernetes.io/enforce", "privileged"),
            ]),
        ),
    }
}

fn service_account(spec: &Spec) -> Doc {
    Doc {
        comment: vec![
            "RBAC: none. weftd keeps its subnet leases in etcd and never calls the Kubernetes API, so".into(),
            "there is no ClusterRole or ClusterRoleBinding and the pods get no API token".into(),
            "(automountServiceAccountToken: false). kube-flannel's grants (nodes get/list/watch,".into(),
            "nodes/status patch, pods get) serve --kube-subnet-mgr, which weft does not have yet.".into(),
            "Coming from kube-flannel? Remove its now unused grant:".into(),
            "  kubectl delete clusterrolebinding flannel; kubectl delete clusterrole flannel".into(),
        ],
        body: object(
            "v1",
            "ServiceAccount",
            SERVICE_ACCOUNT,
            Some(&spec.namespace),
            labels(&[("k8s-app", "flannel"), ("app.kubernetes.io/name", "weft")]),
        )
        .with("automountServiceAccountToken", false),
    }
}

/// kube-flannel's `cbr0` conflist, byte for byte what `weft install-cni` writes.
pub fn cni_conf() -> String {
    let bytes = weft_cni::install::render_conflist(
        weft_cni::install::DEFAULT_NETWORK_NAME,
        weft_cni::install::DEFAULT_CNI_VERSION,
    );
    String::from_utf8_lossy(&bytes).into_owned()
}

fn config_map(spec: &Spec) -> Doc {
    let data = Map::new()
        .with_comment(
            &[
                "What `weft install-cni` writes to /etc/cni/net.d/10-flannel.conflist (the init",
                "container below renders it itself; kept here for tools that read kube-flannel's).",
            ],
            "cni-conf.json",
            cni_conf(),
        )
        .with_comment(
            &["The network config weftd expects in etcd (see the top of this file)."],
            "net-conf.json",
            &spec.net_conf,
        );
    Doc {
        comment: Vec::new(),
        body: object(
            "v1",
            "ConfigMap",
            CONFIG_MAP,
            Some(&spec.namespace),
            labels(&[
                ("tier", "node"),
                ("k8s-app", "flannel"),
                ("app", "flannel"),
                ("app.kubernetes.io/name", "weft"),
            ]),
        )
        .with("data", data),
    }
}

fn host_path(name: &str, path: &str, kind: &str) -> Node {
    Map::new()
        .with("name", name)
        .with("hostPath", Map::new().with("path", path).with("type", kind))
        .into()
}

fn mount(name: &str, path: &str) -> Node {
    Map::new().with("name", name).with("mountPath", path).into()
}

fn mount_ro(name: &str, path: &str) -> Node {
    Map::new()
        .with("name", name)
        .with("mountPath", path)
        .with("readOnly", true)
        .into()
}

fn net_caps() -> Map {
    Map::new().with("privileged", false).with(
        "capabilities",
        Map::new().with("add", strs(&["NET_ADMIN", "NET_RAW"])),
    )
}

/// weftd keeps NET_ADMIN and NET_RAW only, not the runtime's default set (chown, setuid, kill,
/// ...): what crates/weftd/tests/privileges.rs and the image test run it with.
fn weftd_caps() -> Map {
    Map::new().with("privileged", false).with(
        "capabilities",
        Map::new()
            .with("drop", strs(&["ALL"]))
            .with("add", strs(&["NET_ADMIN", "NET_RAW"])),
    )
}

/// weftd's command line: flanneld's flags in etcd mode.
pub fn weftd_args(spec: &Spec) -> Vec<String> {
    let mut args = vec![
        format!("--etcd-endpoints={}", spec.endpoints.join(",")),
        "--ip-masq".to_string(),
        "--healthz-ip=$(NODE_IP)".to_string(),
        format!("--healthz-port={}", spec.healthz_port),
        format!("--state-dir={STATE_DIR}"),
    ];
    if let Some(tls) = &spec.tls {
        args.push(format!("--etcd-cafile={ETCD_TLS_DIR}/{CA_KEY}"));
        if !tls.ca_only {
            args.push(format!("--etcd-certfile={ETCD_TLS_DIR}/{CERT_KEY}"));
            args.push(format!("--etcd-keyfile={ETCD_TLS_DIR}/{KEY_KEY}"));
        }
    }
    for iface in &spec.ifaces {
        args.push(format!("--iface={iface}"));
    }
    args
}

fn probe(path: &str, initial_delay: i64, period: i64) -> Map {
    Map::new()
        .with(
            "httpGet",
            Map::new().with("path", path).with("port", "healthz"),
        )
        .with("initialDelaySeconds", initial_delay)
        .with("periodSeconds", period)
}

fn weftd_container(spec: &Spec) -> Node {
    let mut mounts = vec![
        mount("run", RUN_DIR),
        mount("weft-state", STATE_DIR),
        mount_ro("flannel-cfg", CONFIG_DIR),
        mount("xtables-lock", XTABLES_LOCK),
        // Read-only, for `weft doctor --host-root /host` run in this container: the CNI
        // config and plugins the runtime uses, and kubelet's max pods.
        mount_ro("cni", CNI_CONF.1),
        mount_ro("cni-plugin", CNI_BIN.1),
        mount_ro("kubelet-config", KUBELET_DIR.1),
    ];
    if spec.tls.is_some() {
        mounts.push(mount_ro("etcd-tls", ETCD_TLS_DIR));
    }
    let node_ip = Map::new().with("name", "NODE_IP").with(
        "valueFrom",
        Map::new().with("fieldRef", Map::new().with("fieldPath", "status.hostIP")),
    );
    Map::new()
        .with("name", "weftd")
        .with("image", &spec.image)
        .with("command", strs(&[WEFTD]))
        .with("args", strs(&weftd_args(spec)))
        .with_comment(
            &[
                "The health and metrics server listens on the node IP only (the kubelet probes",
                "that address: the pod uses the host network).",
            ],
            "env",
            vec![node_ip],
        )
        .with(
            "ports",
            vec![
                Map::new()
                    .with("name", "healthz")
                    .with("containerPort", spec.healthz_port)
                    .with("protocol", "TCP"),
            ],
        )
        .with("livenessProbe", probe("/healthz", 10, 30))
        .with("readinessProbe", probe("/readyz", 5, 10))
        .with(
            "resources",
            Map::new().with(
                "requests",
                Map::new().with("cpu", "100m").with("memory", "50Mi"),
            ),
        )
        .with("securityContext", weftd_caps())
        .with("volumeMounts", mounts)
        .into()
}

fn install_cni_container(spec: &Spec) -> Node {
    Map::new()
        .with("name", "install-cni")
        .with("image", &spec.image)
        .with(
            "command",
            strs(&[
                WEFT,
                "install-cni",
                "--bin-dir",
                CNI_BIN.1,
                "--conf-dir",
                CNI_CONF.1,
                "--plugins-dir",
                weft_cni::install::DEFAULT_PLUGINS_DIR,
            ]),
        )
        .with(
            "volumeMounts",
            vec![mount("cni-plugin", CNI_BIN.1), mount("cni", CNI_CONF.1)],
        )
        .into()
}

fn cleanup_container(spec: &Spec) -> Node {
    let mut mounts = vec![mount("cni-plugin", CNI_BIN.1), mount("cni", CNI_CONF.1)];
    mounts.extend(
        CLEANUP_MOUNTS
            .iter()
            .map(|(name, _, _, path)| mount(name, path)),
    );
    mounts.push(mount("xtables-lock", XTABLES_LOCK));
    Map::new()
        .with_comment(
            &[
                "Removes what the AWS VPC CNI left on the node (its CNI config and plugins, state",
                "files, iptables chains, ip rules and route tables) so new pods get weft's network.",
                "While aws-node's ipamd still answers on the node it refuses, and this container",
                "fails and is retried: delete the aws-node DaemonSet first. It runs at every pod",
                "start and leaves a clean node alone; render without --cleanup-vpc-cni once every",
                "node is clean. While pods with VPC addresses still run on the node it does only",
                "what is safe for them (their ip rules, ENI route tables, SNAT and state stay) and",
                "the rest at a start after the node was drained. It removes and renames",
                "directories right under /run, /var/log, /var/lib/cni and /sys/fs/bpf, so it mounts",
                "those whole (a mount point cannot be removed); weftd does not get them. NET_RAW is for iptables-legacy's raw socket.",
            ],
            "name",
            "cleanup-vpc-cni",
        )
        .with("image", &spec.image)
        .with("command", strs(&cleanup_command(spec)))
        .with("securityContext", net_caps())
        .with("volumeMounts", mounts)
        .into()
}

fn volumes(spec: &Spec) -> Vec<Node> {
    let mut v = vec![
        host_path("run", RUN_DIR, "DirectoryOrCreate"),
        host_path("weft-state", STATE_DIR, "DirectoryOrCreate"),
        host_path("cni-plugin", CNI_BIN.0, "DirectoryOrCreate"),
        host_path("cni", CNI_CONF.0, "DirectoryOrCreate"),
        Map::new()
            .with("name", "flannel-cfg")
            .with("configMap", Map::new().with("name", CONFIG_MAP))
            .into(),
        host_path("xtables-lock", XTABLES_LOCK, "FileOrCreate"),
        host_path("kubelet-config", KUBELET_DIR.0, "DirectoryOrCreate"),
    ];
    if let Some(tls) = &spec.tls {
        let mut keys = vec![CA_KEY];
        if !tls.ca_only {
            keys.extend([CERT_KEY, KEY_KEY]);
        }
        let items: Vec<Node> = keys
            .iter()
            .map(|k| Map::new().with("key", *k).with("path", *k).into())
            .collect();
        v.push(
            Map::new()
                .with("name", "etcd-tls")
                .with(
                    "secret",
                    Map::new()
                        .with("secretName", &tls.secret)
                        .with_comment(
                            &["256 is mode 0400: readable by weftd (root) only."],
                            "defaultMode",
                            0o400_i64,
                        )
                        .with("items", items),
                )
                .into(),
        );
    }
    if spec.cleanup_vpc_cni {
        v.extend(
            CLEANUP_MOUNTS
                .iter()
                .map(|(name, host, kind, _)| host_path(name, host, kind)),
        );
    }
    v
}

fn daemon_set(spec: &Spec) -> Doc {
    let pod_labels = labels(&[
        ("tier", "node"),
        ("app", "flannel"),
        ("k8s-app", "flannel"),
        ("app.kubernetes.io/name", "weft"),
    ]);
    let node_affinity = Map::new().with(
        "requiredDuringSchedulingIgnoredDuringExecution",
        Map::new().with(
            "nodeSelectorTerms",
            vec![Map::new().with(
                "matchExpressions",
                vec![
                    Map::new()
                        .with("key", "kubernetes.io/os")
                        .with("operator", "In")
                        .with("values", strs(&["linux"])),
                    Map::new()
                        .with_comment(
                            &["Like aws-node: EKS Fargate, hybrid and Auto Mode nodes bring their own network."],
                            "key",
                            "eks.amazonaws.com/compute-type",
                        )
                        .with("operator", "NotIn")
                        .with("values", strs(&["fargate", "hybrid", "auto"])),
                ],
            )],
        ),
    );
    let mut init = Vec::new();
    if spec.cleanup_vpc_cni {
        init.push(cleanup_container(spec));
    }
    init.push(install_cni_container(spec));
    let pod = Map::new()
        .with("affinity", Map::new().with("nodeAffinity", node_affinity))
        .with("hostNetwork", true)
        .with_comment(
            &[
                "etcd host names resolve through the node's resolver: cluster DNS runs on the",
                "pod network that weftd is about to set up.",
            ],
            "dnsPolicy",
            "Default",
        )
        .with("priorityClassName", "system-node-critical")
        .with("serviceAccountName", SERVICE_ACCOUNT)
        .with("automountServiceAccountToken", false)
        .with(
            "tolerations",
            vec![
                Map::new()
                    .with("operator", "Exists")
                    .with("effect", "NoSchedule"),
                Map::new()
                    .with("operator", "Exists")
                    .with("effect", "NoExecute"),
            ],
        )
        .with("initContainers", init)
        .with("containers", vec![weftd_container(spec)])
        .with("volumes", volumes(spec));
    let ds_spec = Map::new()
        .with(
            "selector",
            Map::new().with("matchLabels", labels(&[("app", "flannel")])),
        )
        .with(
            "updateStrategy",
            Map::new()
                .with("type", "RollingUpdate")
                .with("rollingUpdate", Map::new().with("maxUnavailable", 1_i64)),
        )
        .with(
            "template",
            Map::new()
                .with("metadata", Map::new().with("labels", pod_labels))
                .with("spec", pod),
        );
    Doc {
        comment: vec![
            "weftd on every Linux node: init containers install the CNI plugin (type flannel) and".into(),
            "the cbr0 conflist, then weftd programs flannel.<VNI> and writes /run/flannel/subnet.env.".into(),
        ],
        body: object(
            "apps/v1",
            "DaemonSet",
            DAEMON_SET,
            Some(&spec.namespace),
            labels(&[
                ("tier", "node"),
                ("app", "flannel"),
                ("k8s-app", "flannel"),
                ("app.kubernetes.io/name", "weft"),
            ]),
        )
        .with("spec", ds_spec),
    }
}
