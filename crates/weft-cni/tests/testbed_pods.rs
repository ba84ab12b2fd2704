//! Pods made the way kubelet makes them: weft-testbed runs the kube-flannel conflist
//! (weft-cni as `flannel`, then Debian's portmap; weft-cni delegates to bridge and
//! host-local) inside a node namespace, against a subnet.env written by hand (no weftd).
//!
//! Needs root (network namespaces) and the `containernetworking-plugins` package
//! (/usr/lib/cni); without root the testbed fails with an explanation. CI runs as root.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use weft_cni::install::{DEFAULT_CNI_VERSION, DEFAULT_NETWORK_NAME, render_conflist};
use weft_testbed::{
    CniPod, CniSetup, KUBE_FLANNEL_CONFLIST, Testbed, TestbedConfig, list_namespaces_with_prefix,
};

const PLUGIN: &str = env!("CARGO_BIN_EXE_weft-cni");

fn bed(label: &str, nodes: usize) -> Testbed {
    let cfg = TestbedConfig {
        nodes,
        etcd: false,
        ..TestbedConfig::default()
    };
    Testbed::new(label, cfg).unwrap_or_else(|e| panic!("Testbed::new({label}) failed: {e}"))
}

fn setup() -> CniSetup {
    CniSetup::new(PLUGIN)
}

/// Writes node `node`'s subnet.env the way weftd / flanneld would.
fn write_subnet_env(tb: &Testbed, node: usize, subnet: &str) {
    let path = tb.subnet_file(node);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={subnet}\nFLANNEL_MTU=8951\nFLANNEL_IPMASQ=true\n"
        ),
    )
    .unwrap();
}

fn host_has_link(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn mtu(tb: &Testbed, ns: &str, dev: &str) -> u32 {
    tb.exec(ns, &["cat", &format!("/sys/class/net/{dev}/mtu")])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// IPv4 addresses of `dev` in `ns` as "a.b.c.d/len".
fn addrs(tb: &Testbed, ns: &str, dev: &str) -> Vec<String> {
    let out = tb
        .exec(ns, &["ip", "-j", "-4", "addr", "show", "dev", dev])
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// The namespaces of bed `id` that still exist.
fn namespaces_of(id: &str) -> Vec<String> {
    list_namespaces_with_prefix(&format!("{id}-")).unwrap()
}

fn lease_file(tb: &Testbed, node: usize, ip: Ipv4Addr) -> std::path::PathBuf {
    tb.cni_paths(node)
        .ipam_data_dir
        .join("cbr0")
        .join(ip.to_string())
}

fn state_file(tb: &Testbed, pod: &CniPod) -> std::path::PathBuf {
    tb.cni_paths(pod.pod.node)
        .flannel_data_dir
        .join(&pod.container_id)
}

fn in_subnet(ip: Ipv4Addr, third: u8) -> bool {
    let o = ip.octets();
    o[0] == 10 && o[1] == 244 && o[2] == third && o[3] > 1
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn two_pods_on_one_node_through_the_plugin_chain() {
    let mut tb = bed("two_pods_on_one_node_through_the_plugin_chain", 1);
    let host_had_cni0 = host_has_link("cni0");
    write_subnet_env(&tb, 0, "10.244.5.1/24");
    let cni = setup();
    let node_ns = tb.node(0).ns.clone();

    let a = tb.add_cni_pod(0, &cni).unwrap();
    let b = tb.add_cni_pod(0, &cni).unwrap();
    assert_eq!(a.pod.ns, format!("{}-n0p0", tb.id()));
    assert_eq!(b.pod.ns, format!("{}-n0p1", tb.id()));
    assert_eq!(a.container_id, a.pod.ns);
    for p in [&a, &b] {
        assert!(in_subnet(p.pod.ip, 5), "{:?}", p.pod);
        assert_eq!(p.pod.prefix, 24);
        assert_eq!(p.pod.gateway, Ipv4Addr::new(10, 244, 5, 1));
        assert_eq!(p.result["cniVersion"], "0.3.1", "{}", p.result);
        // The pod's eth0 has the address and flannel's MTU.
        assert_eq!(addrs(&tb, &p.pod.ns, "eth0"), [format!("{}/24", p.pod.ip)]);
        assert_eq!(mtu(&tb, &p.pod.ns, "eth0"), 8951);
        // Its node-side veth is a port of cni0 in the node.
        let master = tb
            .exec(
                &node_ns,
                &["ip", "-j", "link", "show", "dev", &p.pod.host_veth],
            )
            .unwrap();
        let master: Value = serde_json::from_str(&master).unwrap();
        assert_eq!(master[0]["master"], "cni0", "{master}");
        // host-local and weft-cni keep their state in the node's dir.
        assert!(lease_file(&tb, 0, p.pod.ip).is_file(), "{:?}", p.pod);
        assert!(state_file(&tb, p).is_file());
    }
    assert_ne!(a.pod.ip, b.pod.ip);
    assert_eq!(addrs(&tb, &node_ns, "cni0"), ["10.244.5.1/24"]);
    assert_eq!(mtu(&tb, &node_ns, "cni0"), 8951);
    assert_eq!(
        host_has_link("cni0"),
        host_had_cni0,
        "cni0 must not appear on the host"
    );
    assert_eq!(tb.pods().len(), 2);

    let s = tb
        .ping(&a.pod.ns, b.pod.ip, 3, Duration::from_secs(5))
        .unwrap();
    assert_eq!(s.received, 3, "{s:?}");
    let s = tb
        .ping(&b.pod.ns, a.pod.ip, 3, Duration::from_secs(5))
        .unwrap();
    assert_eq!(s.received, 3, "{s:?}");

    // DEL releases the IP, forgets the saved delegate config and removes the namespace.
    tb.del_cni_pod(&a, &cni).unwrap();
    assert!(
        !lease_file(&tb, 0, a.pod.ip).exists(),
        "host-local still holds {}",
        a.pod.ip
    );
    assert!(!state_file(&tb, &a).exists());
    assert!(!namespaces_of(tb.id()).contains(&a.pod.ns));
    assert!(!tb.namespaces().contains(&a.pod.ns));
    assert_eq!(tb.pods().len(), 1);
    // A second DEL is fine, and the other pod is untouched.
    tb.del_cni_pod(&a, &cni).unwrap();
    assert!(lease_file(&tb, 0, b.pod.ip).is_file());
    let s = tb
        .ping(
            &b.pod.ns,
            Ipv4Addr::new(10, 244, 5, 1),
            1,
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(s.received, 1, "{s:?}");

    // The freed address can be handed out again.
    let c = tb.add_cni_pod(0, &cni).unwrap();
    assert!(in_subnet(c.pod.ip, 5));
    assert_ne!(c.pod.ip, b.pod.ip);

    let id = tb.id().to_string();
    drop(tb);
    assert!(
        namespaces_of(&id).is_empty(),
        "left: {:?}",
        namespaces_of(&id)
    );
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn missing_subnet_env_is_code_11_and_leaves_no_namespace() {
    let mut tb = bed("missing_subnet_env_is_code_11_and_leaves_no_namespace", 1);
    let cni = setup();
    let subnet_file = tb.subnet_file(0);
    assert!(subnet_file.starts_with(&tb.node(0).dir));
    assert!(subnet_file.ends_with("run/flannel/subnet.env"));

    let err = tb.add_cni_pod(0, &cni).unwrap_err();
    eprintln!("add_cni_pod without subnet.env: {err}");
    assert_eq!(err.cni_code(), Some(11), "{err}");
    let failure = err.cni_failure().unwrap();
    assert_eq!((failure.verb, failure.plugin.as_str()), ("ADD", "flannel"));
    let msg = failure.msg().unwrap();
    assert!(msg.contains(&subnet_file.display().to_string()), "{msg}");
    assert!(err.to_string().contains("code 11"), "{err}");
    assert!(failure.cleanup.is_empty(), "{:?}", failure.cleanup);

    let pod_ns = format!("{}-n0p0", tb.id());
    assert!(
        !namespaces_of(tb.id()).contains(&pod_ns),
        "{:?}",
        namespaces_of(tb.id())
    );
    assert!(!tb.namespaces().contains(&pod_ns));
    assert!(tb.pods().is_empty());
    assert!(!tb.cni_paths(0).flannel_data_dir.join(&pod_ns).exists());
    let node_ns = tb.node(0).ns.clone();
    let links = tb.exec(&node_ns, &["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("veth"), "{links}");

    // Once the daemon has written subnet.env, the next pod works.
    write_subnet_env(&tb, 0, "10.244.7.1/24");
    let pod = tb.add_cni_pod(0, &cni).unwrap();
    assert!(in_subnet(pod.pod.ip, 7));
    tb.del_cni_pod(&pod, &cni).unwrap();
    assert!(!lease_file(&tb, 0, pod.pod.ip).exists());
    assert!(!namespaces_of(tb.id()).iter().any(|n| n.contains("-n0p")));
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn each_node_has_its_own_bridge_and_state() {
    let mut tb = bed("each_node_has_its_own_bridge_and_state", 2);
    let host_had_cni0 = host_has_link("cni0");
    write_subnet_env(&tb, 0, "10.244.5.1/24");
    write_subnet_env(&tb, 1, "10.244.6.1/24");
    let cni = setup();
    let p0 = tb.add_cni_pod(0, &cni).unwrap();
    let p1 = tb.add_cni_pod(1, &cni).unwrap();
    assert_eq!(p1.pod.ns, format!("{}-n1p0", tb.id()));
    assert!(in_subnet(p0.pod.ip, 5), "{:?}", p0.pod);
    assert!(in_subnet(p1.pod.ip, 6), "{:?}", p1.pod);
    let (n0, n1) = (tb.node(0).ns.clone(), tb.node(1).ns.clone());
    assert_eq!(addrs(&tb, &n0, "cni0"), ["10.244.5.1/24"]);
    assert_eq!(addrs(&tb, &n1, "cni0"), ["10.244.6.1/24"]);
    assert_eq!(host_has_link("cni0"), host_had_cni0);

    // Each node's host-local and weft-cni state is in its own dir only.
    assert!(lease_file(&tb, 0, p0.pod.ip).is_file());
    assert!(lease_file(&tb, 1, p1.pod.ip).is_file());
    assert!(!lease_file(&tb, 0, p1.pod.ip).exists());
    assert!(!lease_file(&tb, 1, p0.pod.ip).exists());
    assert!(state_file(&tb, &p0).starts_with(&tb.node(0).dir));
    assert!(state_file(&tb, &p1).starts_with(&tb.node(1).dir));
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state_file(&tb, &p1)).unwrap()).unwrap();
    assert_eq!(saved["ipam"]["ranges"][0][0]["subnet"], "10.244.6.0/24");
    assert_eq!(
        Path::new(saved["ipam"]["dataDir"].as_str().unwrap()),
        tb.cni_paths(1).ipam_data_dir
    );

    // Each node's pod reaches its own gateway.
    for (p, gw) in [(&p0, [10, 244, 5, 1]), (&p1, [10, 244, 6, 1])] {
        let s = tb
            .ping(&p.pod.ns, Ipv4Addr::from(gw), 1, Duration::from_secs(5))
            .unwrap();
        assert_eq!(s.received, 1, "{s:?}");
    }
    tb.del_cni_pod(&p0, &cni).unwrap();
    tb.del_cni_pod(&p1, &cni).unwrap();
    for (node, p) in [(0, &p0), (1, &p1)] {
        assert!(!lease_file(&tb, node, p.pod.ip).exists());
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn spec_1_0_0_chain_adds_and_deletes_with_prev_result() {
    let mut tb = bed("spec_1_0_0_chain_adds_and_deletes_with_prev_result", 1);
    write_subnet_env(&tb, 0, "10.244.9.1/24");
    let cni = CniSetup {
        conflist: KUBE_FLANNEL_CONFLIST.replace("\"0.3.1\"", "\"1.0.0\""),
        ..setup()
    };
    let pod = tb.add_cni_pod(0, &cni).unwrap();
    assert_eq!(pod.result["cniVersion"], "1.0.0", "{}", pod.result);
    assert!(in_subnet(pod.pod.ip, 9));
    assert!(!pod.pod.host_veth.is_empty(), "{}", pod.result);
    tb.del_cni_pod(&pod, &cni).unwrap();
    assert!(!lease_file(&tb, 0, pod.pod.ip).exists());
    tb.del_cni_pod(&pod, &cni).unwrap();
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn bad_setups_are_refused_before_anything_is_created() {
    let mut tb = bed("bad_setups_are_refused_before_anything_is_created", 1);
    write_subnet_env(&tb, 0, "10.244.5.1/24");
    let cases = [
        (
            CniSetup::new("/nonexistent/weft-cni"),
            "cargo build -p weft-cni",
        ),
        (
            CniSetup {
                plugin_dirs: vec!["/nonexistent".into()],
                ..setup()
            },
            "\"portmap\"",
        ),
        (
            CniSetup {
                conflist: "{\"name\":\"cbr0\"}".into(),
                ..setup()
            },
            "cniVersion",
        ),
    ];
    for (cni, needle) in cases {
        let msg = tb.add_cni_pod(0, &cni).unwrap_err().to_string();
        assert!(msg.contains(needle), "{msg}");
    }
    assert!(tb.add_cni_pod(3, &setup()).is_err());
    assert!(!namespaces_of(tb.id()).iter().any(|n| n.contains("-n0p")));
    // The pod numbering was not used up.
    let pod = tb.add_cni_pod(0, &setup()).unwrap();
    assert_eq!(pod.pod.ns, format!("{}-n0p0", tb.id()));
}

#[test]
fn testbed_default_conflist_is_what_install_writes() {
    let installed: Value =
        serde_json::from_slice(&render_conflist(DEFAULT_NETWORK_NAME, DEFAULT_CNI_VERSION))
            .unwrap();
    let testbed: Value = serde_json::from_str(KUBE_FLANNEL_CONFLIST).unwrap();
    assert_eq!(installed, testbed);
    let cni = setup();
    assert_eq!(cni.conflist, KUBE_FLANNEL_CONFLIST);
    assert_eq!(cni.plugin_dirs, [Path::new("/usr/lib/cni")]);
}
