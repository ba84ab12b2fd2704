//! Reliability on the testbed: lease expiry, partitions longer than the TTL (flannel #1289),
//! many daemons at once, and an etcd outage under traffic (root only).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use ipnet::Ipv4Net;
use weft_testbed::Signal;

fn env_subnet(c: &Cluster, i: usize) -> Option<Ipv4Net> {
    std::fs::read_to_string(c.subnet_file(i))
        .ok()
        .and_then(|t| weft_core::subnet_env::SubnetEnv::parse(&t).ok())
        .and_then(|e| e.subnet)
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_node_cut_off_past_its_ttl_never_shares_a_subnet_when_it_returns() {
    let mut c = Cluster::new("partition", 2, Some(NET_CONFIG));
    c.start(0, &["--subnet-lease-ttl=5"]);
    c.start(1, &[]);
    let sn0 = c.subnet(0);
    c.subnet(1);
    let key = Cluster::lease_key(sn0);
    let ns0 = c.tb.node(0).ns.clone();
    c.tb.link_set(&ns0, "eth0", false).unwrap();
    c.eventually(0, "lease expired in etcd", Duration::from_secs(15), || {
        c.key_lease(&key).is_none()
    });
    // Cut off past its TTL, node 0 cannot know whether its subnet is still its own: it has
    // withdrawn the subnet from subnet.env, and the CNI plugin refuses new pods clearly.
    c.eventually(0, "subnet withdrawn", Duration::from_secs(5), || {
        read(&c.subnet_file(0)).contains("WEFT_SUBNET_LOST")
    });
    let err = c.tb.add_cni_pod(0, &cni_setup()).unwrap_err().to_string();
    assert!(
        err.contains("no subnet to give pods")
            && err.contains(&format!("subnet {sn0} could not be renewed")),
        "{err}"
    );
    // meanwhile a new node takes the free subnet
    let grant = c.tb.etcdctl(&["lease", "grant", "600"]).unwrap();
    let id = grant.split_whitespace().nth(1).unwrap().to_string();
    let other = r#"{"PublicIP":"10.250.1.77","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:77"}}"#;
    c.tb.etcdctl(&["put", &format!("--lease={id}"), &key, other])
        .unwrap();
    c.tb.link_set(&ns0, "eth0", true).unwrap();
    c.eventually(
        0,
        "moved to another subnet",
        Duration::from_secs(20),
        || env_subnet(&c, 0).is_some_and(|s| s != sn0),
    );
    let now = env_subnet(&c, 0).unwrap();
    let value = c.tb.etcdctl(&["get", &key, "--print-value-only"]).unwrap();
    assert_eq!(value.trim(), other, "the new holder keeps its subnet");
    let mine =
        c.tb.etcdctl(&["get", &Cluster::lease_key(now), "--print-value-only"])
            .unwrap();
    assert!(
        mine.contains(&format!("\"PublicIP\":\"{}\"", c.tb.node(0).ip)),
        "{mine}"
    );
    let log = c.log(0);
    assert!(log.contains("subnet changed"), "the move is logged:\n{log}");
    assert!(c.tb.is_running(c.weftd[0].unwrap()));
    // node 1 routes node 0's new subnet and not the old one to node 0
    let (mac0, ip0) = c.wait_node_peer(1, "peer 0 at its new subnet", 0, now);
    assert_ne!(c.has_peer(1, sn0, &mac0, ip0), (true, true, true));
    let pod = c.pod(0);
    assert!(
        now.contains(&pod.ip),
        "a new pod is in the new subnet {now}: {pod:?}"
    );
}

/// One running node in a Network of two subnets, 10.244.1.0/24 and 10.244.2.0/24: the
/// cluster, node 0's subnet and the other one.
fn two_subnet_node(label: &str) -> (Cluster, Ipv4Net, Ipv4Net) {
    let mut c = Cluster::new(
        label,
        1,
        Some(
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.2.0","Backend":{"Type":"vxlan"}}"#,
        ),
    );
    c.start(0, &[]);
    let sn0 = c.subnet(0);
    let other: Ipv4Net = if sn0.network().octets()[2] == 1 {
        "10.244.2.0/24".parse().unwrap()
    } else {
        "10.244.1.0/24".parse().unwrap()
    };
    (c, sn0, other)
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_subnet_taken_while_weftd_was_down_is_withdrawn_even_while_no_lease_is_free() {
    let (mut c, sn0, other) = two_subnet_node("taken-down");
    c.kill(0, Signal::SIGKILL);
    // While weftd is down, another node takes its subnet and the only other one is taken too.
    for (sn, ip, mac) in [
        (sn0, "192.0.2.21", "02:00:00:00:00:21"),
        (other, "192.0.2.22", "02:00:00:00:00:22"),
    ] {
        c.tb.etcdctl(&["put", &Cluster::lease_key(sn), &vxlan_lease(ip, mac)])
            .unwrap();
    }
    c.start(0, &[]);
    c.eventually(0, "waiting for a subnet", Duration::from_secs(10), || {
        c.log(0).contains("out of subnets")
    });
    c.eventually(0, "old subnet withdrawn", Duration::from_secs(5), || {
        read(&c.subnet_file(0)).contains("WEFT_SUBNET_LOST")
    });
    let err = c.tb.add_cni_pod(0, &cni_setup()).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "subnet {sn0} was taken by another node (PublicIP 192.0.2.21)"
        )),
        "{err}"
    );
    c.tb.etcdctl(&["del", &Cluster::lease_key(other)]).unwrap();
    let env = c.wait_ready(0, Duration::from_secs(15));
    assert_eq!(env.subnet, Some(other));
    let pod = c.pod(0);
    assert!(other.contains(&pod.ip), "{pod:?} in {other}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_stolen_subnet_is_withdrawn_from_pods_until_a_new_lease_is_programmed() {
    // Two subnets only: once node 0's is stolen and the other is taken, it has to wait.
    let (mut c, sn0, other) = two_subnet_node("stolen");
    // A pod before the move: cni0 carries the old subnet's gateway from then on.
    let before =
        c.tb.add_cni_pod(0, &cni_setup())
            .expect("a pod before the move");
    assert!(sn0.contains(&before.pod.ip), "{:?} in {sn0}", before.pod);
    c.tb.etcdctl(&[
        "put",
        &Cluster::lease_key(other),
        &vxlan_lease("192.0.2.10", "02:00:00:00:00:10"),
    ])
    .unwrap();
    let t0 = Instant::now();
    c.tb.etcdctl(&[
        "put",
        &Cluster::lease_key(sn0),
        &vxlan_lease("192.0.2.11", "02:00:00:00:00:11"),
    ])
    .unwrap();
    c.eventually(0, "subnet withdrawn", Duration::from_secs(5), || {
        read(&c.subnet_file(0)).contains("WEFT_SUBNET_LOST")
    });
    eprintln!(
        "subnet.env withdrawn {:?} after the key was taken",
        t0.elapsed()
    );
    let text = read(&c.subnet_file(0));
    assert!(!text.contains("FLANNEL_SUBNET"), "{text}");
    // No free subnet: node 0 stays without one, and every CNI ADD meanwhile fails clearly.
    std::thread::sleep(Duration::from_secs(1));
    let err = c.tb.add_cni_pod(0, &cni_setup()).unwrap_err().to_string();
    assert!(
        err.contains("no subnet to give pods")
            && err.contains(&format!(
                "subnet {sn0} was taken by another node (PublicIP 192.0.2.11)"
            )),
        "{err}"
    );
    let (code, body) = c.http_get(0, "/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(
        body.contains(&format!("lease: subnet {sn0} was taken"))
            || body.contains("lease: no subnet lease"),
        "{body}"
    );
    let (_, metrics) = c.http_get(0, "/metrics").unwrap();
    assert!(metrics.contains("weft_subnet_lost_total 1"), "{metrics}");
    // The other subnet frees up: node 0 takes it, programs it, and pods work again.
    c.tb.etcdctl(&["del", &Cluster::lease_key(other)]).unwrap();
    let env = c.wait_ready(0, Duration::from_secs(15));
    assert_eq!(env.subnet, Some(other));
    // Once subnet.env offers the new subnet, the device is already the new subnet's: its
    // address, and no route of its own subnet through it (that would take the pods' traffic
    // away from cni0).
    let addr = c.sh(0, &["ip", "-4", "-o", "addr", "show", "dev", "flannel.1"]);
    assert!(
        addr.contains(&format!("{}/32", other.network()))
            && !addr.contains(&format!("{}/32", sn0.network())),
        "{addr}"
    );
    let routes = c.routes(0);
    assert!(
        !routes.contains(&other.to_string()),
        "own subnet routed through flannel.1: {routes}"
    );
    // The first pod after the move gets the new subnet, and cni0 the new gateway in place
    // of the old one (flannel's bridge refuses it: "cni0" already has an IP address
    // different from ...); no one has to delete cni0.
    let after = c.pod(0);
    assert!(other.contains(&after.ip), "{after:?} in {other}");
    let addrs = c.sh(0, &["ip", "-4", "-o", "addr", "show", "dev", "cni0"]);
    let gateway = format!("{}/{}", after_gateway(other), other.prefix_len());
    assert!(addrs.contains(&gateway), "{addrs}");
    assert_eq!(addrs.lines().count(), 1, "only the new gateway: {addrs}");
    // The old pod is still deleted cleanly (its saved delegate config), and its DEL leaves
    // the new gateway alone.
    c.tb.del_cni_pod(&before, &cni_setup())
        .expect("CNI DEL of the pod from before the move");
    let addrs_after_del = c.sh(0, &["ip", "-4", "-o", "addr", "show", "dev", "cni0"]);
    assert_eq!(addrs_after_del, addrs);
    c.eventually(0, "ready again", Duration::from_secs(5), || {
        c.http_get(0, "/readyz").map(|r| r.0) == Some(200)
    });
}

/// The gateway host-local gives the bridge in `subnet`: its first host address.
fn after_gateway(subnet: Ipv4Net) -> std::net::Ipv4Addr {
    let n = u32::from(subnet.network());
    std::net::Ipv4Addr::from(n + 1)
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_dead_node_leaves_its_peers_within_the_ttl_and_its_subnet_is_reused() {
    // a /28 cut into /30s: three usable subnets, so node 3 can only start once one frees up
    let mut c = Cluster::new(
        "expiry",
        4,
        Some(r#"{"Network":"10.244.0.0/28","Backend":{"Type":"vxlan"}}"#),
    );
    let ttl = 5;
    for i in 0..3 {
        c.start(i, &[&format!("--subnet-lease-ttl={ttl}")]);
    }
    let dead_sn = c.subnet(1);
    c.subnet(0);
    c.subnet(2);
    let (mac1, ip1) = c.wait_node_peer(0, "peer 1", 1, dead_sn);
    c.start(3, &[]);
    c.eventually(3, "waiting for a subnet", Duration::from_secs(10), || {
        c.log(3).contains("out of subnets")
    });

    let t0 = Instant::now();
    c.kill(1, Signal::SIGKILL);
    c.eventually(0, "dead peer removed", Duration::from_secs(ttl + 6), || {
        c.has_peer(0, dead_sn, &mac1, ip1) == (false, false, false)
    });
    let gone = t0.elapsed();
    eprintln!("dead node removed from its peers {gone:?} after it died (TTL {ttl} s)");
    assert!(
        gone <= Duration::from_secs(ttl + 2),
        "removed within TTL + 1 s of expiry: {gone:?}"
    );
    let env3 = c.wait_ready(3, Duration::from_secs(15));
    assert_eq!(
        env3.subnet,
        Some(dead_sn),
        "the freed subnet goes to the waiting node"
    );
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn fifty_daemons_at_once_get_fifty_distinct_subnets() {
    let n = 50;
    let c = Cluster::started_at_once("fifty", n, Duration::from_secs(60));
    let races: usize = (0..n)
        .map(|i| c.log(i).matches("taken by another node").count())
        .sum();
    eprintln!("lost create races retried: {races}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn when_subnets_run_out_every_daemon_without_one_says_so() {
    // a /21 holds 8 /24s; the first is skipped: 7 leases for 10 daemons
    let n = 10;
    let mut c = Cluster::new(
        "run-out",
        n,
        Some(r#"{"Network":"10.244.0.0/21","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#),
    );
    c.start_all();
    let ready = |c: &Cluster| (0..n).filter(|&i| env_subnet(c, i).is_some()).count();
    c.eventually(0, "seven nodes ready", Duration::from_secs(30), || {
        ready(&c) == 7
    });
    let waiting: Vec<usize> = (0..n).filter(|&i| env_subnet(&c, i).is_none()).collect();
    assert_eq!(waiting.len(), 3);
    for &i in &waiting {
        c.eventually(i, "out-of-subnets message", Duration::from_secs(10), || {
            let l = c.log(i);
            l.contains("out of subnets") && l.contains("10.244.0.0/21") && l.contains("/24")
        });
        assert!(
            c.tb.is_running(c.weftd[i].unwrap()),
            "node {i} keeps running"
        );
    }
    let subnets: BTreeSet<Ipv4Net> = (0..n).filter_map(|i| env_subnet(&c, i)).collect();
    assert_eq!(subnets.len(), 7, "no subnet handed out twice");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn an_etcd_outage_loses_no_packet_and_a_node_joining_meanwhile_is_programmed_after() {
    let mut c = Cluster::new("etcd-outage", 3, Some(NET_CONFIG));
    c.start(0, &[]);
    c.start(1, &[]);
    let sn0 = c.subnet(0);
    let sn1 = c.subnet(1);
    // Both nodes programmed before the pings start, as before an outage in a real cluster.
    c.wait_mesh(&[0, 1], Duration::from_secs(10));
    let a = c.pod(0);
    let b = c.pod(1);
    let (p1, p2) = pingers_both_ways(&mut c, &a, &b);
    let leases_before = c.tb.etcdctl(&["get", "--prefix", SUBNETS]).unwrap();

    c.tb.stop_etcd().unwrap();
    c.eventually(
        0,
        "not ready while etcd is down",
        Duration::from_secs(10),
        || c.http_get(0, "/readyz").map(|r| r.0) == Some(503),
    );
    let (_, metrics) = c.http_get(0, "/metrics").unwrap();
    assert!(metrics.contains("weft_ready 0"), "{metrics}");
    // Waiting for etcd is not being wedged: /healthz stays 200 (a liveness probe must not
    // restart a daemon that keeps the data plane up), the lease watch keeps beating with short
    // promises (its reconnect attempts), and /readyz names the condition that is not met.
    let (code, body) = c.http_get(0, "/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(
        body.contains("watch: lease watch: etcd unreachable"),
        "{body}"
    );
    assert!(body.contains("lease: ok"), "{body}");
    assert!(body.contains("dataplane: ok"), "{body}");
    assert!(body.contains("rules: ok"), "{body}");
    let (code, body) = c.http_get(0, "/healthz").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("the lease watch: "), "{body}");
    assert!(
        !body.contains("the lease watch: waiting for lease events"),
        "the watch noticed the outage and retries with bounded steps: {body}"
    );
    assert!(body.contains("the reconciler: "), "{body}");
    // a node joins while etcd is away
    c.start(2, &[]);
    std::thread::sleep(Duration::from_secs(8));
    for i in 0..2 {
        assert!(
            c.tb.is_running(c.weftd[i].unwrap()),
            "node {i} rides out the outage"
        );
    }
    for i in 0..2 {
        let (code, body) = c.http_get(i, "/healthz").unwrap();
        assert_eq!(code, 200, "node {i} healthy after 8 s without etcd: {body}");
    }
    c.tb.start_etcd().unwrap();
    let back = Instant::now();
    c.eventually(0, "watch back", Duration::from_secs(5), || {
        c.log(0).contains("lease watch re-established")
    });
    eprintln!(
        "watch re-established {:?} after etcd returned",
        back.elapsed()
    );
    assert!(
        back.elapsed() < Duration::from_millis(2500),
        "reconnects within about a second"
    );
    let sn2 = c.subnet(2);
    c.wait_node_peer(0, "late joiner programmed", 2, sn2);
    c.eventually(0, "ready again", Duration::from_secs(5), || {
        c.http_get(0, "/readyz").map(|r| r.0) == Some(200)
    });
    std::thread::sleep(Duration::from_millis(300));
    let s1 = p1.stop(&mut c.tb).unwrap();
    let s2 = p2.stop(&mut c.tb).unwrap();
    assert_eq!(
        (s1.lost(), s2.lost()),
        (0, 0),
        "packets lost during the outage: {s1:?} {s2:?}"
    );
    // no lease of the running nodes changed
    let after = c.tb.etcdctl(&["get", "--prefix", SUBNETS]).unwrap();
    for sn in [sn0, sn1] {
        let key = Cluster::lease_key(sn);
        let line = |t: &str| t.lines().skip_while(|l| *l != key).nth(1).map(String::from);
        assert_eq!(line(&leases_before), line(&after), "lease {key} unchanged");
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn restarting_every_node_at_once_keeps_tcp_flows_and_pings() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let mut c = Cluster::new("restart-all", 3, Some(NET_CONFIG));
    c.start_all();
    let pods: Vec<_> = (0..3).map(|i| c.pod(i)).collect();
    let macs: Vec<String> = (0..3).map(|i| c.vtep_mac(i)).collect();
    let envs: Vec<String> = (0..3).map(|i| read(&c.subnet_file(i))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flows = ring_flows(&pods, 5000, &stop);
    let pingers: Vec<_> = (0..3)
        .map(|i| {
            c.tb.start_pinger(&pods[i].ns, pods[(i + 2) % 3].ip, Duration::from_millis(20))
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for sig in [Signal::SIGKILL, Signal::SIGTERM] {
        for i in 0..3 {
            c.kill(i, sig);
        }
        for i in 0..3 {
            c.start(i, &[]);
        }
        for i in 0..3 {
            c.eventually(i, "ready again", Duration::from_secs(20), || {
                c.http_get(i, "/readyz").map(|r| r.0) == Some(200)
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop_flows(flows, &stop, 20);
    for p in pingers {
        let st = p.stop(&mut c.tb).unwrap();
        assert_eq!(st.lost(), 0, "pings lost: {st:?}");
    }
    for i in 0..3 {
        assert_eq!(c.vtep_mac(i), macs[i], "same VTEP MAC on node {i}");
        assert_eq!(
            read(&c.subnet_file(i)),
            envs[i],
            "same subnet.env on node {i}"
        );
    }
}
