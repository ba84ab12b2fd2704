//! flannel's other routing modes on real kernel networking (root only): host-gw beside a
//! hand-made flanneld host-gw node, and VXLAN with DirectRouting, each with pods and traffic.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use ipnet::Ipv4Net;
use weft_testbed::Signal;

const HOSTGW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;
const HAND_SUBNET: &str = "10.244.200.0/24";
/// A lease of a node that is not on the bed's link (10.250.0.0/16).
const OFF_LINK_SUBNET: &str = "10.244.201.0/24";
const OFF_LINK_IP: &str = "10.99.0.9";

fn key_of(sn: Ipv4Net) -> String {
    format!("{SUBNETS}{}-{}", sn.network(), sn.prefix_len())
}

/// Node `i`'s routes to `dst` (`ip -d route show <dst>`), trimmed.
fn routes_to(c: &Cluster, i: usize, dst: Ipv4Net) -> Vec<String> {
    c.sh(i, &["ip", "-d", "route", "show", &dst.to_string()])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Node `i`'s routes into the flannel Network out of eth0 with a gateway.
fn direct_routes(c: &Cluster, i: usize) -> Vec<String> {
    c.sh(i, &["ip", "route", "show"])
        .lines()
        .filter(|l| l.starts_with("10.244.") && l.contains(" via ") && l.contains(" dev eth0"))
        .map(|l| l.trim().to_string())
        .collect()
}

fn put_with_lease(c: &Cluster, key: &str, value: &str) {
    let grant = c.tb.etcdctl(&["lease", "grant", "86400"]).unwrap();
    let id = grant
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    c.tb.etcdctl(&["put", &format!("--lease={id}"), key, value])
        .unwrap();
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn host_gw_routes_pods_via_public_ips_beside_a_flanneld_node_and_refuses_a_peer_off_the_link() {
    let mut c = Cluster::new("hostgw", 3, Some(HOSTGW));
    // Node 2 is a flanneld host-gw node, by hand: its lease exactly as flanneld writes it.
    let hand_ip = c.tb.node(2).ip;
    let hand_sn: Ipv4Net = HAND_SUBNET.parse().unwrap();
    let hand_value =
        format!(r#"{{"PublicIP":"{hand_ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#);
    put_with_lease(&c, &key_of(hand_sn), &hand_value);
    // A node somewhere else, which host-gw cannot reach.
    let off_sn: Ipv4Net = OFF_LINK_SUBNET.parse().unwrap();
    put_with_lease(
        &c,
        &key_of(off_sn),
        &format!(r#"{{"PublicIP":"{OFF_LINK_IP}","PublicIPv6":null,"BackendType":"host-gw"}}"#),
    );

    c.start(0, &[]);
    c.start(1, &[]);
    let sn0 = c.subnet(0);
    let sn1 = c.subnet(1);

    // 1. leases as flanneld's host-gw writes them; no device; FLANNEL_MTU is eth0's
    for (i, sn) in [(0, sn0), (1, sn1)] {
        let v =
            c.tb.etcdctl(&["get", &key_of(sn), "--print-value-only"])
                .unwrap();
        assert_eq!(
            v.trim_end(),
            format!(
                r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"host-gw"}}"#,
                c.tb.node(i).ip
            )
        );
    }
    assert_eq!(c.sh_lenient(0, &["ip", "link", "show", "flannel.1"]), "");
    let env = read(&c.subnet_file(0));
    assert!(env.contains("FLANNEL_MTU=9001\n"), "{env}");

    // 2. a route per peer via its PublicIP on eth0, the same as flanneld's
    let via = |ip: Ipv4Addr| format!("via {ip} dev eth0");
    c.eventually(0, "routes to both peers", Duration::from_secs(5), || {
        let r = direct_routes(&c, 0);
        r.iter()
            .any(|l| l.starts_with(&format!("{sn1} {}", via(c.tb.node(1).ip))))
            && r.iter()
                .any(|l| l.starts_with(&format!("{hand_sn} {}", via(hand_ip))))
    });
    // The peer off the link is refused, said once in the log, and never routed.
    c.eventually(0, "off-link peer refused", Duration::from_secs(5), || {
        c.log(0).contains(&format!(
            "PublicIP {OFF_LINK_IP} is not on this node's link (eth0 has 10.250.0.0/16)"
        ))
    });
    assert!(
        routes_to(&c, 0, off_sn).is_empty(),
        "{:?}",
        routes_to(&c, 0, off_sn)
    );
    // flanneld's route on the hand-made node, for comparison
    let ip0 = c.tb.node(0).ip.to_string();
    let ip1 = c.tb.node(1).ip.to_string();
    for (sn, ip) in [(sn0, &ip0), (sn1, &ip1)] {
        c.sh(
            2,
            &[
                "ip",
                "route",
                "add",
                &sn.to_string(),
                "via",
                ip,
                "dev",
                "eth0",
                "proto",
                "boot",
            ],
        );
    }
    assert_eq!(
        routes_to(&c, 0, sn1),
        routes_to(&c, 2, sn1),
        "route details"
    );

    // 3. pods on all three nodes reach each other
    let mut pods = vec![c.pod(0), c.pod(1)];
    std::fs::create_dir_all(c.tb.subnet_file(2).parent().unwrap()).unwrap();
    std::fs::write(
        c.tb.subnet_file(2),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.200.1/24\nFLANNEL_MTU=9001\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    pods.push(c.tb.add_cni_pod(2, &cni_setup()).unwrap().pod);
    all_pairs_ping(&c, &pods);

    // 4. drift: a deleted route comes back at once
    c.sh(0, &["ip", "route", "del", &sn1.to_string()]);
    c.eventually(0, "deleted route repaired", Duration::from_secs(3), || {
        direct_routes(&c, 0)
            .iter()
            .any(|l| l.starts_with(&format!("{sn1} {}", via(c.tb.node(1).ip))))
    });

    // 5. a node that leaves: its route goes
    c.tb.etcdctl(&["del", &key_of(hand_sn)]).unwrap();
    c.eventually(
        0,
        "departed peer's route removed",
        Duration::from_secs(5),
        || routes_to(&c, 0, hand_sn).is_empty(),
    );

    // 6. the cluster moves to vxlan: every direct route is replaced by flannel.1's, none
    //    is left behind on eth0 (flanneld leaves them)
    put_with_lease(&c, &key_of(hand_sn), &hand_value);
    c.eventually(0, "hand peer back", Duration::from_secs(5), || {
        !routes_to(&c, 0, hand_sn).is_empty()
    });
    c.kill(0, Signal::SIGTERM);
    c.kill(1, Signal::SIGTERM);
    c.tb.etcdctl(&["put", CONFIG_KEY, NET_CONFIG]).unwrap();
    c.start(0, &[]);
    c.start(1, &[]);
    for i in [0, 1] {
        c.eventually(
            i,
            "flannel.1 after the switch",
            Duration::from_secs(10),
            || {
                !c.sh_lenient(i, &["ip", "link", "show", "flannel.1"])
                    .is_empty()
            },
        );
    }
    assert_eq!(c.subnet(0), sn0, "the same subnet after the switch");
    let mac1 = c.vtep_mac(1);
    c.eventually(0, "node 1 over VXLAN", Duration::from_secs(5), || {
        c.has_peer(0, sn1, &mac1, c.tb.node(1).ip) == (true, true, true)
    });
    assert_eq!(direct_routes(&c, 0), Vec::<String>::new());
    all_pairs_ping(&c, &pods[..2]);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn direct_routing_takes_peers_on_the_link_directly_and_the_others_through_vxlan() {
    let cfg = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#;
    let mut c = Cluster::new("directrt", 3, Some(cfg));
    // Node 2's PublicIP is on no link of nodes 0 and 1: they reach it through a gateway
    // (node 2's own underlay address), as a node in another subnet behind a router.
    let far = "10.99.2.3";
    let ip2 = c.tb.node(2).ip.to_string();
    c.sh(
        2,
        &["ip", "addr", "add", &format!("{far}/32"), "dev", "eth0"],
    );
    for i in [0, 1] {
        c.sh(
            i,
            &[
                "ip",
                "route",
                "add",
                &format!("{far}/32"),
                "via",
                &ip2,
                "dev",
                "eth0",
            ],
        );
    }
    c.start(0, &[]);
    c.start(1, &[]);
    c.start(2, &["--public-ip", far]);
    let (sn0, sn1, sn2) = (c.subnet(0), c.subnet(1), c.subnet(2));
    let ip1 = c.tb.node(1).ip;

    // Node 0: node 1 by a direct route, nothing on flannel.1 for it; node 2 over VXLAN.
    let mac2 = c.vtep_mac(2);
    c.eventually(0, "node 2 over VXLAN", Duration::from_secs(5), || {
        c.has_peer(0, sn2, &mac2, far.parse().unwrap()) == (true, true, true)
    });
    c.eventually(0, "node 1 direct", Duration::from_secs(5), || {
        direct_routes(&c, 0)
            .iter()
            .any(|l| l.starts_with(&format!("{sn1} via {ip1} dev eth0")))
    });
    let mac1 = c.vtep_mac(1);
    assert_eq!(
        c.has_peer(0, sn1, &mac1, ip1),
        (false, false, false),
        "no VXLAN entries for a direct peer"
    );
    // Node 2 has both others on its link: direct routes only.
    c.eventually(2, "node 2 routes directly", Duration::from_secs(5), || {
        direct_routes(&c, 2).len() == 2
    });
    assert_eq!(c.routes(2), "", "nothing through flannel.1 on node 2");
    let _ = sn0;

    let pods = vec![c.pod(0), c.pod(1), c.pod(2)];
    all_pairs_ping(&c, &pods);

    // Drift on the direct route is repaired as on the device.
    c.sh(0, &["ip", "route", "del", &sn1.to_string()]);
    c.eventually(0, "direct route repaired", Duration::from_secs(3), || {
        direct_routes(&c, 0)
            .iter()
            .any(|l| l.starts_with(&format!("{sn1} via {ip1} dev eth0")))
    });
    // /peers says which peers are direct.
    let (_, body) = c.http_get(0, "/peers").expect("/peers");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let direct_of = |sn: Ipv4Net| {
        doc["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["subnet"] == sn.to_string())
            .map(|p| p["direct"].as_bool().unwrap_or(false))
    };
    assert_eq!(direct_of(sn1), Some(true), "{body}");
    assert_eq!(direct_of(sn2), Some(false), "{body}");
}
