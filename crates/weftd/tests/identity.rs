//! VTEP MAC identity (issue #11 item 1): several weftd sharing one state dir, a state dir
//! copied from another node, a damaged MAC file, and a lease of another node that publishes
//! our MAC. Every weftd here runs with flanneld's flags only and the default state dir
//! `/var/lib/weft`, one directory shared by the whole bed (the harness bind-mounts it in a
//! private mount namespace), exactly as several weftd on one host.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use weft_testbed::Signal;

const READY: Duration = Duration::from_secs(20);

/// The VtepMAC node `i`'s lease publishes.
fn published_mac(c: &Cluster, i: usize) -> String {
    let key = Cluster::lease_key(c.subnet(i));
    let v = c.tb.etcdctl(&["get", &key, "--print-value-only"]).unwrap();
    let j: serde_json::Value = serde_json::from_str(v.trim()).expect("lease json");
    j["BackendData"]["VtepMAC"]
        .as_str()
        .expect("VtepMAC")
        .to_string()
}

fn mac_file(c: &Cluster) -> std::path::PathBuf {
    c.state_dir().join("flannel.1.mac")
}

fn unicast(mac: &str) -> bool {
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    first & 1 == 0 && mac != "00:00:00:00:00:00"
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn three_weftd_on_one_host_with_flannelds_flags_get_three_vtep_macs_and_pods_connect() {
    let mut c = Cluster::new("mac-shared", 3, Some(NET_CONFIG));
    for i in 0..3 {
        c.start(i, &[]);
    }
    for i in 0..3 {
        c.wait_ready(i, READY);
    }
    let macs: Vec<String> = (0..3).map(|i| c.vtep_mac(i)).collect();
    let distinct: BTreeSet<&String> = macs.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "one VTEP MAC per node, although they share /var/lib/weft: {macs:?}"
    );
    for (i, mac) in macs.iter().enumerate() {
        assert_eq!(&published_mac(&c, i), mac, "node {i} publishes its MAC");
    }
    let text = read(&mac_file(&c));
    for mac in &macs {
        assert!(
            text.lines().any(|l| l.starts_with(mac.as_str())),
            "{mac} in\n{text}"
        );
    }
    let pods: Vec<_> = (0..3).map(|i| c.pod(i)).collect();
    all_pairs_ping(&c, &pods);

    // The shared file gives each node its own MAC back: node 1 restarted after its device
    // was deleted (a reboot) re-creates it with the same MAC.
    c.kill(1, Signal::SIGTERM);
    c.sh(1, &["ip", "link", "del", "flannel.1"]);
    c.start(1, &[]);
    c.eventually(1, "device back", READY, || {
        c.sh_lenient(1, &["ip", "link", "show", "flannel.1"])
            .contains("flannel.1")
    });
    assert_eq!(c.vtep_mac(1), macs[1], "node 1 keeps its own MAC");
    all_pairs_ping(&c, &pods);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_node_started_from_another_nodes_state_dir_makes_its_own_mac() {
    let mut c = Cluster::new("mac-copied", 3, Some(NET_CONFIG));
    c.start(0, &[]);
    c.wait_ready(0, READY);
    let mac0 = c.vtep_mac(0);
    // An image baked after an older weft ran once: the file holds node 0's MAC in the old
    // format (a bare MAC), which the first node to read it adopts as its own.
    std::fs::write(mac_file(&c), format!("{mac0}\n")).unwrap();
    c.start(1, &[]);
    c.wait_ready(1, READY);
    let mac1 = c.vtep_mac(1);
    assert_ne!(mac1, mac0, "node 1 must not publish node 0's MAC");
    assert_eq!(published_mac(&c, 1), mac1);
    assert_eq!(c.metric(1, "weft_vtep_mac_conflicts_total", &[]) as u64, 1);
    assert!(
        c.log(1)
            .contains("another node publishes this node's VTEP MAC"),
        "{}",
        c.log(1)
    );
    // A copy in the current format: node 2 finds only other nodes' MACs and makes its own,
    // without a conflict.
    c.start(2, &[]);
    c.wait_ready(2, READY);
    let mac2 = c.vtep_mac(2);
    assert!(mac2 != mac0 && mac2 != mac1, "{mac0} {mac1} {mac2}");
    assert_eq!(
        c.metric(
            2,
            "weft_vtep_mac_replaced_total",
            &[("reason", "other_node")]
        ) as u64,
        1
    );
    assert_eq!(c.metric(2, "weft_vtep_mac_conflicts_total", &[]) as u64, 0);
    let pods: Vec<_> = (0..3).map(|i| c.pod(i)).collect();
    all_pairs_ping(&c, &pods);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_zero_multicast_or_garbage_mac_file_is_replaced() {
    let mut c = Cluster::new("mac-bad-file", 1, Some(NET_CONFIG));
    for (n, bad) in [
        "00:00:00:00:00:00\n",
        "01:00:5e:00:00:01\n",
        "this is not a MAC\n",
    ]
    .iter()
    .enumerate()
    {
        // As after a reboot: no device, only the file.
        c.sh_lenient(0, &["ip", "link", "del", "flannel.1"]);
        std::fs::write(mac_file(&c), bad).unwrap();
        c.start(0, &[]);
        c.eventually(0, "device up with a new MAC", READY, || {
            c.http_get(0, "/readyz").map(|r| r.0) == Some(200)
        });
        let mac = c.vtep_mac(0);
        assert!(unicast(&mac), "{bad:?} gave {mac}");
        assert_eq!(published_mac(&c, 0), mac);
        let text = read(&mac_file(&c));
        assert!(text.lines().any(|l| l.starts_with(&mac)), "{text}");
        assert!(!text.contains(bad.trim()), "{bad:?} replaced:\n{text}");
        assert_eq!(
            c.metric(0, "weft_vtep_mac_replaced_total", &[("reason", "invalid")]) as u64,
            1,
            "file {n}"
        );
        c.kill(0, Signal::SIGTERM);
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_lease_of_another_node_publishing_our_mac_makes_us_take_a_new_one() {
    let (mut c, [sn0, _]) = Cluster::running("mac-conflict");
    let ip0 = c.tb.node(0).ip;
    let old = c.vtep_mac(0);
    let (a, b) = (c.pod(0), c.pod(1));
    // Another node (a flanneld, say, that never checks) publishes node 0's MAC.
    let value = format!(
        r#"{{"PublicIP":"192.0.2.77","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{old}"}}}}"#
    );
    let t0 = std::time::Instant::now();
    c.tb.etcdctl(&["put", &format!("{SUBNETS}10.244.250.0-24"), &value])
        .unwrap();
    c.eventually(
        0,
        "node 0 moved to a new MAC",
        Duration::from_secs(10),
        || c.vtep_mac(0) != old,
    );
    let new = c.vtep_mac(0);
    eprintln!(
        "new VTEP MAC on the device {:?} after the conflicting lease",
        t0.elapsed()
    );
    assert!(unicast(&new));
    c.eventually(0, "new MAC published", Duration::from_secs(5), || {
        published_mac(&c, 0) == new
    });
    c.eventually(
        1,
        "node 1 programmed the new MAC",
        Duration::from_secs(5),
        || c.has_peer(1, sn0, &new, ip0) == (true, true, true),
    );
    assert!(
        !c.fdb(1).contains(&format!("{old} dst {ip0}")),
        "no stale FDB entry for the old MAC:\n{}",
        c.fdb(1)
    );
    assert_eq!(c.metric(0, "weft_vtep_mac_conflicts_total", &[]) as u64, 1);
    all_pairs_ping(&c, &[a, b]);
}
