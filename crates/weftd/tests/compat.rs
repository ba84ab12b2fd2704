//! weftd beside a hand-made flanneld-style node: the same keys, values, device and per-peer
//! entries, and pods on both kinds of node reach each other (root only).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use ipnet::Ipv4Net;

const HAND_SUBNET: &str = "10.244.200.0/24";
const HAND_MAC: &str = "aa:bb:cc:dd:ee:03";

/// The lines of `text` that mention `needle`.
fn lines_with(text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.trim().to_string())
        .collect()
}

fn lease_of(c: &Cluster, sn: Ipv4Net) -> (String, String) {
    let key = format!("{SUBNETS}{}-{}", sn.network(), sn.prefix_len());
    let out = c.tb.etcdctl(&["get", &key, "--print-value-only"]).unwrap();
    (key, out.trim_end().to_string())
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn keys_values_device_and_entries_match_flanneld() {
    let mut c = Cluster::new(
        "compat",
        3,
        Some(r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}"#),
    );
    // node 2 is programmed by hand exactly as flanneld does (flannel-compat.md 10b)
    let hand_ip = c.tb.node(2).ip;
    let hand_sn: Ipv4Net = HAND_SUBNET.parse().unwrap();
    let hand_ns = c.tb.node(2).ns.clone();
    for cmd in [
        format!(
            "ip link add flannel.1 address {HAND_MAC} mtu 8951 type vxlan id 1 local {hand_ip} dev eth0 nolearning"
        ),
        format!("ip addr add {}/32 dev flannel.1", hand_sn.network()),
        "ip link set flannel.1 up".to_string(),
    ] {
        let argv: Vec<&str> = cmd.split_whitespace().collect();
        c.tb.exec(&hand_ns, &argv).unwrap();
    }
    let grant = c.tb.etcdctl(&["lease", "grant", "86400"]).unwrap();
    let lease_id = grant
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let hand_value = format!(
        r#"{{"PublicIP":"{hand_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{HAND_MAC}"}}}}"#
    );
    let hand_key = format!("{SUBNETS}10.244.200.0-24");
    c.tb.etcdctl(&[
        "put",
        &format!("--lease={lease_id}"),
        &hand_key,
        &hand_value,
    ])
    .unwrap();

    c.start(0, &[]);
    c.start(1, &[]);
    let sn0 = c.subnet(0);
    let sn1 = c.subnet(1);
    assert!(sn0 != hand_sn && sn1 != hand_sn);

    // 1. keys and values: flannel's layout and exact JSON
    let value_re = |ip: Ipv4Addr, mac: &str| {
        format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
        )
    };
    for (i, sn) in [(0, sn0), (1, sn1)] {
        let (key, value) = lease_of(&c, sn);
        assert_eq!(
            key,
            format!("/coreos.com/network/subnets/{}-24", sn.network())
        );
        assert_eq!(
            value,
            value_re(c.tb.node(i).ip, &c.vtep_mac(i)),
            "lease value of node {i}"
        );
        // attached to a 24 h etcd lease
        let json = c.tb.etcdctl(&["get", &key, "-w", "json"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let id = v["kvs"][0]["lease"].as_i64().expect("key has a lease");
        let ttl =
            c.tb.etcdctl(&["lease", "timetolive", &format!("{id:x}")])
                .unwrap();
        assert!(ttl.contains("granted with TTL(86400s)"), "{ttl}");
    }
    // the hand-made lease is left alone
    assert_eq!(lease_of(&c, hand_sn).1, hand_value);

    // 2. the device: same attributes as flanneld's
    let dev = |i: usize| -> serde_json::Value {
        let j = c.sh(i, &["ip", "-d", "-j", "link", "show", "flannel.1"]);
        serde_json::from_str::<serde_json::Value>(&j).unwrap()[0].clone()
    };
    let (w, h) = (dev(0), dev(2));
    assert_eq!(w["mtu"], h["mtu"], "MTU");
    assert_eq!(w["mtu"], 8951);
    let (wi, hi) = (&w["linkinfo"]["info_data"], &h["linkinfo"]["info_data"]);
    assert_eq!(w["linkinfo"]["info_kind"], "vxlan");
    for field in [
        "id",
        "port",
        "learning",
        "ttl",
        "tos",
        "df",
        "ageing",
        "udp_csum",
        "udp_zero_csum6_tx",
        "udp_zero_csum6_rx",
        "proxy",
        "rsc",
        "l2miss",
        "l3miss",
    ] {
        assert_eq!(
            wi[field], hi[field],
            "vxlan attribute {field}: weft {wi} vs flanneld {hi}"
        );
    }
    assert_eq!(wi["port"], 8472);
    assert_eq!(wi["learning"], false);
    assert_eq!(wi["local"], c.tb.node(0).ip.to_string());
    assert_eq!(wi["link"], hi["link"], "underlay device");
    let addr = c.sh(0, &["ip", "-4", "-o", "addr", "show", "dev", "flannel.1"]);
    assert!(
        addr.contains(&format!("inet {}/32", sn0.network())),
        "{addr}"
    );
    let mac0 = c.vtep_mac(0);
    let first = u8::from_str_radix(&mac0[..2], 16).unwrap();
    assert_eq!(
        first & 0x03,
        0x02,
        "VTEP MAC {mac0} is unicast and locally administered"
    );

    // 3. weftd programs the hand-made peer exactly as flanneld would
    c.eventually(
        0,
        "hand-made peer programmed",
        Duration::from_secs(5),
        || c.has_peer(0, hand_sn, HAND_MAC, hand_ip) == (true, true, true),
    );

    // program the weftd peers on the hand-made node, as flanneld would
    for (i, sn) in [(0, sn0), (1, sn1)] {
        let mac = c.vtep_mac(i);
        let ip = c.tb.node(i).ip.to_string();
        let gw = sn.network().to_string();
        for cmd in [
            format!("ip neigh replace {gw} lladdr {mac} dev flannel.1 nud permanent"),
            format!("bridge fdb replace {mac} dev flannel.1 dst {ip} self permanent"),
            format!("ip route replace {sn} via {gw} dev flannel.1 onlink proto boot"),
        ] {
            let argv: Vec<&str> = cmd.split_whitespace().collect();
            c.tb.exec(&hand_ns, &argv).unwrap();
        }
    }
    // node 0 (weftd) and node 2 (by hand) now hold the same entries for node 1, line for line
    let gw1 = format!("{} ", sn1.network());
    c.eventually(0, "peer 1 programmed", Duration::from_secs(5), || {
        !lines_with(&c.routes(0), &sn1.to_string()).is_empty()
    });
    assert_eq!(
        lines_with(&c.routes(0), &sn1.to_string()),
        lines_with(&c.routes(2), &sn1.to_string()),
        "routes"
    );
    let full_routes = |i: usize| {
        lines_with(
            &c.sh(i, &["ip", "-d", "route", "show", "dev", "flannel.1"]),
            &sn1.to_string(),
        )
    };
    assert_eq!(
        full_routes(0),
        full_routes(2),
        "route details (protocol, scope, flags)"
    );
    assert_eq!(
        lines_with(&c.neighs(0), &gw1),
        lines_with(&c.neighs(2), &gw1),
        "neighbours"
    );
    let mac1 = c.vtep_mac(1);
    assert_eq!(
        lines_with(&c.fdb(0), &mac1),
        lines_with(&c.fdb(2), &mac1),
        "fdb"
    );

    // 4. pods across weftd and flanneld-style nodes
    let pods = [c.pod(0), c.pod(1)];
    // the hand-made node's subnet.env, exactly as flanneld writes it; its pod goes through
    // the same CNI chain
    std::fs::create_dir_all(c.tb.subnet_file(2).parent().unwrap()).unwrap();
    std::fs::write(
        c.tb.subnet_file(2),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.200.1/24\nFLANNEL_MTU=8951\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    let hand_pod = c.tb.add_cni_pod(2, &cni_setup()).unwrap().pod;
    assert!(hand_sn.contains(&hand_pod.ip), "{}", hand_pod.ip);
    for p in &pods {
        assert_eq!(
            c.tb.ping(&p.ns, hand_pod.ip, 3, Duration::from_secs(5))
                .unwrap()
                .received,
            3,
            "{} -> hand pod",
            p.ip
        );
        assert_eq!(
            c.tb.ping(&hand_pod.ns, p.ip, 3, Duration::from_secs(5))
                .unwrap()
                .received,
            3,
            "hand pod -> {}",
            p.ip
        );
    }

    // 5. iptables rules: flannel's chains, rules, order and comments
    let nat = c.sh(0, &["iptables-save", "-t", "nat"]);
    let masq: Vec<&str> = nat
        .lines()
        .filter(|l| l.contains("flanneld masq"))
        .collect();
    let p = sn0.to_string();
    let expected = [
        "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG".to_string(),
        "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN".to_string(),
        format!("-A FLANNEL-POSTRTG -s {p} -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d {p} -m comment --comment \"flanneld masq\" -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d {p} -m comment --comment \"flanneld masq\" -j RETURN"),
        "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully".to_string(),
        "-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully".to_string(),
    ];
    assert_eq!(
        masq,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "nat rules:\n{nat}"
    );
    let filter = c.sh(0, &["iptables-save", "-t", "filter"]);
    let fwd: Vec<&str> = filter
        .lines()
        .filter(|l| l.contains("flanneld forward"))
        .collect();
    assert_eq!(
        fwd,
        [
            "-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD",
            "-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT",
            "-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT",
        ],
        "filter rules:\n{filter}"
    );
}
