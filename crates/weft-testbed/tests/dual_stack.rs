//! The dual-stack underlay ([`Underlay::DUAL_STACK`]): nodes with an IPv6 address on
//! `eth0` beside the IPv4 one, and CNI pods with both addresses. Root tests, like the
//! others of the testbed; the pod test also needs the weft-cni binary
//! (`cargo build --workspace --bins --locked`) and Debian's containernetworking-plugins.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use weft_testbed::{
    CniSetup, Testbed, TestbedConfig, Underlay, list_namespaces_with_prefix, node_ip, node_ip6,
};

const PING_TIMEOUT: Duration = Duration::from_secs(5);

fn no_etcd(nodes: usize) -> TestbedConfig {
    TestbedConfig {
        nodes,
        etcd: false,
        ..TestbedConfig::default()
    }
}

fn dual_stack_bed(label: &str, nodes: usize) -> Testbed {
    Testbed::new_with_underlay(label, no_etcd(nodes), Underlay::DUAL_STACK)
        .unwrap_or_else(|e| panic!("Testbed::new_with_underlay({label}) failed: {e}"))
}

/// `ip -6 addr show dev <dev> scope global` inside `ns`.
fn global_v6(tb: &Testbed, ns: &str, dev: &str) -> String {
    tb.exec(
        ns,
        &["ip", "-6", "addr", "show", "dev", dev, "scope", "global"],
    )
    .unwrap_or_else(|e| panic!("ip -6 addr in {ns}: {e}"))
}

fn assert_pings(tb: &Testbed, from_ns: &str, to: IpAddr) {
    let stats = tb
        .ping_ip(from_ns, to, 3, PING_TIMEOUT)
        .unwrap_or_else(|e| panic!("ping {to} from {from_ns}: {e}"));
    assert_eq!(
        stats.received, stats.transmitted,
        "ping {to} from {from_ns}: {stats:?}"
    );
}

fn assert_namespaces_gone(id: &str) {
    let left = list_namespaces_with_prefix(&format!("{id}-")).expect("listing namespaces");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn dual_stack_nodes_ping_each_other_over_both_families() {
    let mut tb = dual_stack_bed("dual-stack-underlay", 2);
    assert_eq!(tb.underlay(), Underlay::DUAL_STACK);
    assert_eq!(node_ip6(0), Some("fd00:250::1".parse().unwrap()));
    assert_eq!(node_ip6(1), Some("fd00:250::2".parse().unwrap()));
    for i in 0..2 {
        let n = tb.node(i);
        assert_eq!(n.ip, node_ip(i).unwrap());
        assert_eq!(n.ip6, node_ip6(i), "node {i}");
        let shown = global_v6(&tb, &n.ns, "eth0");
        let want = format!("inet6 {}/64", n.ip6.unwrap());
        assert!(shown.contains(&want), "node {i} eth0: {shown}");
        assert!(
            !shown.contains("tentative"),
            "node {i}: DAD is not off: {shown}"
        );
    }
    let (n0, n1) = (tb.node(0).clone(), tb.node(1).clone());
    // The v6 variants, both ways; then v4 through the unchanged Testbed::ping.
    for (from, to) in [(&n0, &n1), (&n1, &n0)] {
        let stats = tb
            .ping6(&from.ns, to.ip6.unwrap(), 3, PING_TIMEOUT)
            .unwrap_or_else(|e| panic!("ping6 {} -> {}: {e}", from.name, to.name));
        assert_eq!(stats.received, 3, "ping6 {} -> {}", from.name, to.name);
        let stats = tb
            .ping(&from.ns, to.ip, 3, PING_TIMEOUT)
            .unwrap_or_else(|e| panic!("ping {} -> {}: {e}", from.name, to.name));
        assert_eq!(stats.received, 3, "ping {} -> {}", from.name, to.name);
    }

    // A node added later is dual-stack too.
    let i = tb.add_node().expect("add_node");
    let n2 = tb.node(i).clone();
    assert_eq!(n2.ip6, node_ip6(i));
    assert_pings(&tb, &n2.ns, IpAddr::V6(n0.ip6.unwrap()));
    assert_pings(&tb, &n0.ns, IpAddr::V6(n2.ip6.unwrap()));
    assert_pings(&tb, &n2.ns, IpAddr::V4(n1.ip));

    let manifest = std::fs::read_to_string(tb.dir().join("testbed.json")).unwrap();
    assert!(manifest.contains("\"ip6\": \"fd00:250::3\""), "{manifest}");

    let id = tb.id().to_string();
    tb.teardown().expect("teardown");
    assert_namespaces_gone(&id);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn default_bed_has_no_ipv6_underlay() {
    let tb = Testbed::new("ipv4-only-underlay", no_etcd(1))
        .unwrap_or_else(|e| panic!("Testbed::new failed: {e}"));
    assert_eq!(tb.underlay(), Underlay::IPV4);
    assert_eq!(tb.underlay(), Underlay::default());
    let n = tb.node(0);
    assert_eq!(n.ip6, None);
    let shown = global_v6(&tb, &n.ns, "eth0");
    assert!(
        shown.trim().is_empty(),
        "eth0 has a global IPv6 address: {shown}"
    );
    let manifest = std::fs::read_to_string(tb.dir().join("testbed.json")).unwrap();
    assert!(!manifest.contains("ip6"), "{manifest}");
    let id = tb.id().to_string();
    tb.teardown().expect("teardown");
    assert_namespaces_gone(&id);
}

/// target/debug/weft-cni: the test binary is target/debug/deps/<name>.
fn weft_cni_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("weft-cni"))
        .expect("the test binary's target dir");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --workspace --bins --locked`",
        bin.display()
    );
    bin
}

const DUAL_STACK_SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.1.1/24
FLANNEL_IPV6_NETWORK=fc00::/48
FLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
";

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn cni_pod_gets_both_addresses_and_pings_its_ipv6_gateway() {
    let cni = CniSetup::new(weft_cni_bin());
    let mut tb = dual_stack_bed("dual-stack-cni-pod", 1);
    let env = tb.subnet_file(0);
    std::fs::create_dir_all(env.parent().unwrap()).unwrap();
    std::fs::write(&env, DUAL_STACK_SUBNET_ENV).unwrap();

    let a = tb
        .add_cni_pod(0, &cni)
        .unwrap_or_else(|e| panic!("add_cni_pod: {e}"));
    let b = tb
        .add_cni_pod(0, &cni)
        .unwrap_or_else(|e| panic!("add_cni_pod (second pod): {e}"));
    let gw4 = Ipv4Addr::new(10, 244, 1, 1);
    let gw6: Ipv6Addr = "fc00:0:0:1::1".parse().unwrap();
    for p in [&a, &b] {
        let pod = &p.pod;
        assert_eq!(pod.gateway, gw4, "{}", p.result);
        assert_eq!(pod.prefix, 24);
        assert_eq!(pod.ip.octets()[..3], [10, 244, 1], "{}", p.result);
        let ip6 = pod
            .ip6
            .unwrap_or_else(|| panic!("no IPv6 address in the result {}", p.result));
        assert_eq!(ip6.segments()[..4], [0xfc00, 0, 0, 1], "{}", p.result);
        assert_ne!(ip6, gw6);
        let shown = global_v6(&tb, &pod.ns, "eth0");
        assert!(shown.contains(&format!("inet6 {ip6}/64")), "{shown}");
        assert!(!shown.contains("tentative"), "DAD is not off: {shown}");
        // The IPv6 cluster network is routed via the pod's gateway.
        let routes = tb
            .exec(&pod.ns, &["ip", "-6", "route", "show", "fc00::/48"])
            .unwrap();
        assert!(routes.contains(&format!("via {gw6}")), "{routes}");
        assert_pings(&tb, &pod.ns, IpAddr::V6(gw6));
        assert_pings(&tb, &pod.ns, IpAddr::V4(gw4));
    }
    let cni0 = global_v6(&tb, &tb.node(0).ns, "cni0");
    assert!(cni0.contains(&format!("inet6 {gw6}/64")), "{cni0}");
    // Pod to pod over IPv6 on the node's bridge.
    assert_pings(&tb, &a.pod.ns, IpAddr::V6(b.pod.ip6.unwrap()));

    tb.del_cni_pod(&a, &cni).expect("del_cni_pod");
    tb.del_cni_pod(&b, &cni).expect("del_cni_pod");
    let id = tb.id().to_string();
    tb.teardown().expect("teardown");
    assert_namespaces_gone(&id);
}
