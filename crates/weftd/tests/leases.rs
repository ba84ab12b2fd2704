//! Lease life cycle against a real etcd: renewal in place, re-acquiring a lost key, running
//! out of subnets, and flanneld's environment fallbacks (root only).

mod common;

use std::time::Duration;

use common::*;

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn renewal_keeps_the_same_key_and_etcd_lease_and_leaves_no_orphans() {
    let mut c = Cluster::new("renew", 1, Some(NET_CONFIG));
    c.start(0, &["--subnet-lease-ttl=6"]);
    let sn = c.subnet(0);
    let key = Cluster::lease_key(sn);
    let id = c.key_lease(&key).expect("lease key");
    assert_ne!(id, 0, "attached to an etcd lease");
    let before = c.tb.etcdctl(&["lease", "list"]).unwrap();
    // three TTLs: without renewal the key would be gone by now
    std::thread::sleep(Duration::from_secs(18));
    assert_eq!(
        c.key_lease(&key),
        Some(id),
        "same key, same etcd lease after renewals:\n{}",
        c.log(0)
    );
    let after = c.tb.etcdctl(&["lease", "list"]).unwrap();
    assert_eq!(after, before, "no orphan leases");
    let ttl =
        c.tb.etcdctl(&["lease", "timetolive", &format!("{id:x}")])
            .unwrap();
    assert!(ttl.contains("granted with TTL(6s)"), "{ttl}");
    assert!(c.tb.is_running(c.weftd[0].unwrap()));
    let (_, metrics) = c.http_get(0, "/metrics").expect("metrics");
    // An idle watch stays up: etcd drops clients that ping more often than its
    // --grpc-keepalive-min-time (5 s), which once cut weftd's watch every 8 s.
    assert!(
        !c.log(0).contains("lost the etcd lease watch"),
        "the watch dropped while idle:\n{}",
        c.log(0)
    );
    assert!(
        metrics.contains("weft_etcd_watch_reconnects_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_lease_expiry_timestamp_seconds"),
        "{metrics}"
    );
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_deleted_own_key_is_reacquired_without_exiting() {
    let (mut c, [sn, _]) = Cluster::running("own-key");
    let key = Cluster::lease_key(sn);
    c.tb.etcdctl(&["del", &key]).unwrap();
    c.eventually(0, "key re-created", Duration::from_secs(10), || {
        c.key_lease(&key).is_some()
    });
    let value = c.tb.etcdctl(&["get", &key, "--print-value-only"]).unwrap();
    assert!(
        value.contains(&format!("\"PublicIP\":\"{}\"", c.tb.node(0).ip)),
        "{value}"
    );
    assert_eq!(c.subnet(0), sn, "the same subnet, since it was still free");
    assert!(
        c.tb.is_running(c.weftd[0].unwrap()),
        "weftd kept running:\n{}",
        c.log(0)
    );
    assert!(c.log(0).contains("re-acquiring"), "{}", c.log(0));
    // the peer never lost the route (the key came back with the same MAC and IP)
    let mac = c.vtep_mac(0);
    let ip = c.tb.node(0).ip;
    c.eventually(1, "peer entries", Duration::from_secs(5), || {
        c.has_peer(1, sn, &mac, ip) == (true, true, true)
    });
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn running_out_of_subnets_is_explained_with_the_numbers() {
    // a /28 with /30 subnets: 4 subnets, the first is skipped, so 3 nodes fit
    let mut c = Cluster::new(
        "out-of-subnets",
        4,
        Some(r#"{"Network":"10.244.0.0/28","Backend":{"Type":"vxlan"}}"#),
    );
    for i in 0..3 {
        c.start(i, &[]);
        c.wait_ready(i, Duration::from_secs(20));
    }
    c.start(3, &[]);
    c.eventually(3, "out-of-subnets message", Duration::from_secs(10), || {
        let l = c.log(3);
        l.contains("out of subnets")
            && l.contains("10.244.0.0/28")
            && l.contains("/30")
            && l.contains('3')
    });
    let (code, body) = c.http_get(3, "/readyz").expect("readyz");
    assert_eq!(code, 503);
    assert!(body.contains("out of subnets"), "{body}");
    assert!(!c.subnet_file(3).exists());
    assert!(
        c.tb.is_running(c.weftd[3].unwrap()),
        "keeps waiting for a subnet instead of exiting"
    );
    // once a node leaves, the waiting one gets its subnet
    let freed = c.subnet(2);
    c.kill(2, weft_testbed::Signal::SIGKILL);
    c.tb.etcdctl(&["del", &Cluster::lease_key(freed)]).unwrap();
    assert_eq!(c.wait_ready(3, Duration::from_secs(20)).subnet, Some(freed));
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn flanneld_environment_variables_fill_unset_flags() {
    let mut c = Cluster::new("env-flags", 1, None);
    c.tb.etcdctl(&["put", "/weft-test/network/config", NET_CONFIG])
        .unwrap();
    c.extra_args.clear();
    c.start_env(
        0,
        &[],
        &[
            ("FLANNELD_ETCD_PREFIX", "/weft-test/network"),
            ("FLANNELD_IP_MASQ", "true"),
        ],
    );
    let env = c.wait_ready(0, Duration::from_secs(20));
    assert!(env.ipmasq, "FLANNELD_IP_MASQ=true applied");
    let sn = env.subnet.unwrap();
    let keys =
        c.tb.etcdctl(&[
            "get",
            "--prefix",
            "--keys-only",
            "/weft-test/network/subnets/",
        ])
        .unwrap();
    assert!(keys.contains(&format!("{}-24", sn.network())), "{keys}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn after_etcd_data_loss_a_node_takes_back_the_subnet_in_its_subnet_env() {
    let (mut c, [sn]) = Cluster::running("data-loss");
    c.kill(0, weft_testbed::Signal::SIGKILL);
    // etcd loses every lease (restored from an old backup, or wiped)
    c.tb.etcdctl(&["del", "--prefix", SUBNETS]).unwrap();
    c.start(0, &[]);
    c.eventually(0, "lease re-created", Duration::from_secs(10), || {
        c.key_lease(&Cluster::lease_key(sn)).is_some()
    });
    assert_eq!(c.subnet(0), sn, "the subnet from subnet.env is reused");
    assert!(c.log(0).contains("previous subnet found"), "{}", c.log(0));
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_reservation_is_used_and_stays_a_reservation() {
    let mut c = Cluster::new("reservation", 1, Some(NET_CONFIG));
    // a reservation: a key without an etcd lease, carrying this node's public IP
    let key = format!("{SUBNETS}10.244.77.0-24");
    let ip = c.tb.node(0).ip;
    let reserved = format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}}}"#
    );
    c.tb.etcdctl(&["put", &key, &reserved]).unwrap();
    c.start(0, &[]);
    assert_eq!(
        c.subnet(0),
        "10.244.77.0/24".parse().unwrap(),
        "the reserved subnet is used"
    );
    assert_eq!(
        c.key_lease(&key),
        Some(0),
        "still no TTL: a reservation (flannel #1329 attaches a 24 h lease)"
    );
    let value = c.tb.etcdctl(&["get", &key, "--print-value-only"]).unwrap();
    assert!(
        value.contains(&c.vtep_mac(0)),
        "the value carries the real VTEP MAC: {value}"
    );
}
