//! weftd under the etcd content real clusters hold (issue #11 items 2 to 5), root only:
//! keys with values weft cannot parse, alias keys, a watch broken in the middle of a long
//! catch-up, and a listing far over gRPC's 4 MiB message limit.
//!
//! Figures are printed: `cargo test -p weftd --test etcd_content -- --nocapture`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Client, Txn, TxnOp};
use ipnet::Ipv4Net;
use weft_core::config::NetworkConfig;
use weft_core::lease::LeaseAttrs;
use weft_core::mac::MacAddr;
use weft_testbed::Signal;

/// Writes `ops` (put with a value, or delete when None) from inside the etcd namespace with
/// one client: in transactions of up to 128 puts when `per_txn` > 1 (one revision per
/// transaction), else one revision per operation. Returns the revision after the last write.
fn write(c: &Cluster, ops: Vec<(String, Option<Vec<u8>>)>, per_txn: usize) -> i64 {
    with_etcd_client(c, move |mut client| async move {
        let mut rev = 0;
        for chunk in ops.chunks(per_txn.clamp(1, 128)) {
            let txn = Txn::new().and_then(
                chunk
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => TxnOp::put(k.clone(), v.clone(), None),
                        None => TxnOp::delete(k.clone(), None),
                    })
                    .collect::<Vec<_>>(),
            );
            let r = client.txn(txn).await.expect("txn");
            rev = r.header().map(|h| h.revision()).unwrap_or(0);
        }
        rev
    })
}

/// Runs `f` with an etcd client connected from inside the etcd namespace, on a runtime of
/// its own.
fn with_etcd_client<T: Send + 'static, F: Future<Output = T>>(
    c: &Cluster,
    f: impl FnOnce(Client) -> F + Send + 'static,
) -> T {
    let ns = c.tb.etcd_ns().to_string();
    weft_testbed::in_netns(&ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = Client::connect(["http://127.0.0.1:2379"], None)
                .await
                .expect("connect to etcd");
            f(client).await
        })
    })
    .expect("etcd namespace")
}

fn lease_json(ip: Ipv4Addr, mac: MacAddr) -> Vec<u8> {
    LeaseAttrs::vxlan(ip, 1, mac).to_json().into_bytes()
}

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x0e, 0xee, b[0], b[1], b[2], b[3]])
}

/// The peer subnets node `i` routes through flannel.1.
fn routed(c: &Cluster, i: usize) -> BTreeSet<Ipv4Net> {
    c.routes(i)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// VTEP MAC → VTEP IP of node `i`'s FDB.
fn fdb(c: &Cluster, i: usize) -> BTreeMap<String, String> {
    c.fdb(i)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let mac = w.next()?.to_string();
            let dst = l
                .split(" dst ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string();
            Some((mac, dst))
        })
        .collect()
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn garbage_values_keep_their_subnets_and_a_node_still_gets_a_free_one_quickly() {
    let mut c = Cluster::new("garbage", 1, Some(NET_CONFIG));
    let cfg = NetworkConfig::parse(NET_CONFIG.as_bytes()).unwrap();
    let ip = c.tb.node(0).ip;
    // 200 of the 255 subnets hold values weft cannot parse, the node's preferred subnet
    // (its first choice, which it would try again and again) among them.
    let preferred = weft_core::alloc::preferred_subnet(&cfg, ip).unwrap();
    let mut garbage: Vec<Ipv4Net> = vec![preferred];
    garbage.extend(
        (1..=255u8)
            .map(|k| Ipv4Net::new(Ipv4Addr::new(10, 244, k, 0), 24).unwrap())
            .filter(|sn| *sn != preferred)
            .take(199),
    );
    let values: [&[u8]; 8] = [
        b"{not json",
        b"",
        b"\xff\xfe\x00",
        b"null",
        br#"{"PublicIP":"not-an-ip"}"#,
        br#"{"PublicIP":"10.250.1.200","BackendType":"vxlan","BackendData":{"VNI":"x"}}"#,
        br#"["PublicIP","10.250.1.200"]"#,
        &[b'a'; 70 * 1024],
    ];
    let ops: Vec<(String, Option<Vec<u8>>)> = garbage
        .iter()
        .enumerate()
        .map(|(n, sn)| {
            (
                Cluster::lease_key(*sn),
                Some(values[n % values.len()].to_vec()),
            )
        })
        .collect();
    let rev = write(&c, ops, 100);
    let t0 = Instant::now();
    c.start(0, &[]);
    let env = c.wait_ready(0, Duration::from_secs(10));
    let took = t0.elapsed();
    eprintln!("200 garbage values: node ready with a free subnet in {took:?}");
    let sn = env.subnet.unwrap();
    assert!(!garbage.contains(&sn), "{sn} holds garbage");
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} to get a subnet:\n{}",
        c.log(0)
    );
    // Nobody's key was touched.
    for (key, kv) in c.lease_kvs() {
        if key != Cluster::lease_key(sn) {
            assert!(
                kv["mod_revision"].as_i64().unwrap() <= rev,
                "{key} was rewritten: {kv}"
            );
        }
    }
    assert!(routed(&c, 0).is_empty(), "no route from garbage");
    // Each bad key is refused once (logged and counted), not on every pass.
    c.eventually(0, "refusals counted", Duration::from_secs(5), || {
        c.metric(0, "weft_lease_keys_refused_total", &[]) >= 200.0
    });
    assert_eq!(c.metric(0, "weft_lease_keys_refused_total", &[]), 200.0);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn an_alias_key_with_a_hostile_public_ip_changes_no_route() {
    let (c, [sn, _]) = Cluster::running("alias");
    let (mac0, ip0) = (c.vtep_mac(0), c.tb.node(0).ip);
    c.wait_peer(1, "peer programmed", sn, &mac0, ip0);
    // Keys that parse to node 0's subnet but are not its key, each claiming the subnet for
    // a hostile address.
    let hostile = Ipv4Addr::new(10, 250, 1, 66);
    let aliases = [
        format!("{SUBNETS}{}-0{}", sn.network(), sn.prefix_len()),
        format!("{SUBNETS}{}-{}&FC00::-64", sn.network(), sn.prefix_len()),
    ];
    let ops = aliases
        .iter()
        .enumerate()
        .map(|(n, k)| (k.clone(), Some(lease_json(hostile, mac(n as u32)))))
        .collect();
    write(&c, ops, 1);
    // Give a wrong route time to appear (lease events are applied within milliseconds).
    let _ = weft_testbed::wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
        fdb(&c, 1)
            .values()
            .any(|dst| *dst == hostile.to_string())
            .then_some(())
    });
    assert_eq!(
        c.has_peer(1, sn, &mac0, ip0),
        (true, true, true),
        "node 0's entries stay"
    );
    let f = fdb(&c, 1);
    assert!(
        !f.values().any(|dst| *dst == hostile.to_string()),
        "an FDB entry sends traffic to the hostile address: {f:?}"
    );
    assert_eq!(routed(&c, 1), BTreeSet::from([sn]));
    assert_eq!(c.metric(1, "weft_lease_keys_refused_total", &[]), 2.0);
    let log = c.log(1);
    assert!(log.contains("not canonical"), "{log}");
    // logged once per key
    assert_eq!(log.matches("not canonical").count(), 2, "{log}");
    // and node 0 keeps its key and subnet
    assert_eq!(c.subnet(0), sn);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_watch_broken_in_the_middle_of_a_long_catch_up_skips_no_event() {
    let (mut c, [own]) = Cluster::running("catch-up");
    let peers = other_subnets(own, 200);
    let ip = |round: u32, k: usize| Ipv4Addr::new(10, 251, round as u8, k as u8);
    // weftd falls behind: frozen, and its connection to etcd is cut by an etcd restart.
    let pid = c.weftd[0].unwrap();
    c.tb.signal(pid, Signal::SIGSTOP).unwrap();
    c.tb.stop_etcd().unwrap();
    c.tb.start_etcd().unwrap();
    let mut ops: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    // 1,200 revisions: every peer written 6 times (etcd sends a catching-up watch 1,000
    // revisions per response, each stamped with the current revision).
    for round in 0..6 {
        for (k, sn) in peers.iter().enumerate() {
            let v = lease_json(ip(round, k), mac(k as u32));
            ops.push((Cluster::lease_key(*sn), Some(v)));
        }
    }
    // The next response breaks the stream: six 1 MiB values make it larger than gRPC's
    // 4 MiB message limit.
    let big: Vec<Ipv4Net> = (0..6u8)
        .map(|k| Ipv4Net::new(Ipv4Addr::new(10, 244, 0, k * 16), 28).unwrap())
        .collect();
    for sn in &big {
        ops.push((Cluster::lease_key(*sn), Some(vec![b'x'; 1 << 20])));
    }
    // After the break: half the peers leave, the other half move, 1,000 revisions more.
    for sn in &peers[..100] {
        ops.push((Cluster::lease_key(*sn), None));
    }
    for round in 6..16 {
        for (k, sn) in peers.iter().enumerate().skip(100) {
            let v = lease_json(ip(round, k), mac(k as u32));
            ops.push((Cluster::lease_key(*sn), Some(v)));
        }
    }
    let revisions = ops.len();
    let t0 = Instant::now();
    let last = write(&c, ops, 1);
    eprintln!(
        "wrote {revisions} revisions (up to {last}) in {:?}",
        t0.elapsed()
    );
    assert!(revisions > 2000);
    let t0 = Instant::now();
    c.tb.signal(pid, Signal::SIGCONT).unwrap();
    let want: BTreeSet<Ipv4Net> = peers[100..].iter().copied().collect();
    let want_fdb: BTreeMap<String, String> = (100..200)
        .map(|k| (mac(k as u32).to_string(), ip(15, k).to_string()))
        .collect();
    let ok = weft_testbed::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        (routed(&c, 0) == want && fdb(&c, 0) == want_fdb).then_some(())
    });
    let (r, f) = (routed(&c, 0), fdb(&c, 0));
    assert!(
        ok.is_some(),
        "after the catch-up node 0 routes {} subnets (want {}), missing {:?}, extra {:?}; FDB entries right: {} of 100\n{}",
        r.len(),
        want.len(),
        want.difference(&r).collect::<Vec<_>>(),
        r.difference(&want).collect::<Vec<_>>(),
        want_fdb
            .iter()
            .filter(|(m, d)| f.get(*m) == Some(d))
            .count(),
        c.log(0)
    );
    eprintln!("caught up with the final state in {:?}", t0.elapsed());
    assert!(c.tb.is_running(pid));
    assert!(c.metric(0, "weft_lease_relists_total", &[("reason", "too_large")]) >= 1.0);
    assert!(
        c.metric(0, "weft_lease_relist_repairs_total", &[]) >= 100.0,
        "the re-list repaired what the broken watch had not delivered"
    );
    // The six huge values are refused for their keys only.
    let log = c.log(0);
    assert!(log.contains("more than the 65536-byte limit"), "{log}");
}

/// Writes every key's values in order (one revision each), the keys concurrently.
fn write_concurrently(c: &Cluster, per_key: Vec<(String, Vec<Vec<u8>>)>) -> i64 {
    with_etcd_client(c, move |client| async move {
        let writes = per_key.into_iter().map(|(key, values)| {
            let mut c = client.clone();
            async move {
                let mut rev = 0;
                for v in values {
                    rev = c
                        .put(key.clone(), v, None)
                        .await
                        .expect("put")
                        .header()
                        .map(|h| h.revision())
                        .unwrap_or(0);
                }
                rev
            }
        });
        futures::future::join_all(writes)
            .await
            .into_iter()
            .max()
            .unwrap_or(0)
    })
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_watch_cut_by_an_etcd_restart_during_a_catch_up_resumes_after_the_last_event() {
    let (mut c, [own]) = Cluster::running("catch-up-cut");
    let peers = other_subnets(own, 200);
    const ROUNDS: u8 = 40;
    let ip = |round: u8, k: usize| Ipv4Addr::new(10, 253, round, k as u8);
    // weftd falls behind: frozen, its connection cut by an etcd restart, while every peer
    // is written 40 times (8,000 revisions: a catch-up of 8 responses, ~100 ms apart).
    let pid = c.weftd[0].unwrap();
    c.tb.signal(pid, Signal::SIGSTOP).unwrap();
    c.tb.stop_etcd().unwrap();
    c.tb.start_etcd().unwrap();
    let per_key = peers
        .iter()
        .enumerate()
        .map(|(k, sn)| {
            let values = (0..ROUNDS)
                .map(|r| lease_json(ip(r, k), mac(k as u32)))
                .collect();
            (Cluster::lease_key(*sn), values)
        })
        .collect();
    let t0 = Instant::now();
    let last = write_concurrently(&c, per_key);
    eprintln!(
        "wrote {} revisions (up to {last}) in {:?}",
        peers.len() * ROUNDS as usize,
        t0.elapsed()
    );
    // Let weftd reconnect and start catching up, then cut the stream again in the middle.
    let before = c.log(0).matches("lease watch re-established").count();
    c.tb.signal(pid, Signal::SIGCONT).unwrap();
    c.eventually(0, "watch re-established", Duration::from_secs(20), || {
        c.log(0).matches("lease watch re-established").count() > before
    });
    std::thread::sleep(Duration::from_millis(250));
    c.tb.stop_etcd().unwrap();
    let cut = fdb(&c, 0);
    let at_cut = (0..peers.len())
        .filter(|k| cut.get(&mac(*k as u32).to_string()) == Some(&ip(ROUNDS - 1, *k).to_string()))
        .count();
    c.tb.start_etcd().unwrap();
    let want: BTreeMap<String, String> = (0..peers.len())
        .map(|k| (mac(k as u32).to_string(), ip(ROUNDS - 1, k).to_string()))
        .collect();
    let ok = weft_testbed::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        (fdb(&c, 0) == want).then_some(())
    });
    let f = fdb(&c, 0);
    assert!(
        ok.is_some(),
        "after the catch-up {} of {} peers have their last VTEP IP\n{}",
        want.iter().filter(|(m, d)| f.get(*m) == Some(d)).count(),
        want.len(),
        c.log(0)
    );
    eprintln!(
        "when the stream was cut, {at_cut} of {} peers had their last value; all have it now",
        peers.len()
    );
    assert_eq!(routed(&c, 0).len(), peers.len());
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_joining_node_lists_25000_leases() {
    const LEASES: u32 = 25_000;
    // VXLAN peers among them; the others are leases of flannel's wireguard backend, which a
    // VXLAN node lists but does not program (programming 25,000 peers, 75,000 kernel
    // entries, is the bulk benchmark's subject, and takes a minute in a debug build).
    const PEERS: u32 = 2_000;
    let config = r#"{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
    let mut c = Cluster::new("25k-leases", 1, Some(config));
    // Realistic values (public IPs 172.16.x.y, distinct MACs or keys), about 190 bytes a
    // key with etcd's metadata: 4.7 MB in all, over gRPC's 4 MiB message limit.
    // Reservations (no etcd lease), written 128 to a transaction.
    let ops: Vec<(String, Option<Vec<u8>>)> = (0..LEASES)
        .map(|n| {
            let sn = Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + ((n + 256) << 8)), 24).unwrap();
            let ip = Ipv4Addr::from(0xac10_0000 + n);
            let value = if n < PEERS {
                lease_json(ip, mac(n))
            } else {
                format!(
                    r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"wireguard","BackendData":{{"PublicKey":"{n:043}="}}}}"#
                )
                .into_bytes()
            };
            (Cluster::lease_key(sn), Some(value))
        })
        .collect();
    let bytes: usize = ops
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().unwrap().len() + 24)
        .sum();
    assert!(bytes > 4 << 20, "{bytes} bytes");
    let t0 = Instant::now();
    write(&c, ops, 128);
    eprintln!(
        "wrote {LEASES} leases ({:.1} MB) in {:?}",
        bytes as f64 / 1e6,
        t0.elapsed()
    );
    let t0 = Instant::now();
    c.start(0, &[]);
    let env = c.wait_ready(0, Duration::from_secs(60));
    eprintln!(
        "a node joining {LEASES} leases is ready in {:?}",
        t0.elapsed()
    );
    let sn = env.subnet.unwrap();
    assert!(c.key_lease(&Cluster::lease_key(sn)).is_some());
    let n = c.routes(0).lines().count();
    assert_eq!(n, PEERS as usize, "routes to every VXLAN peer");
    // The CLI lists them too.
    let weft = weftd_bin().with_file_name("weft");
    assert!(
        weft.exists(),
        "{} is missing: build it first with `cargo build -p weft`",
        weft.display()
    );
    let ep = format!("--etcd-endpoints={}", c.tb.etcd_endpoint());
    let ns = c.tb.node(0).ns.clone();
    let out =
        c.tb.exec(
            &ns,
            &[
                weft.to_str().unwrap(),
                "leases",
                "list",
                &ep,
                "--output",
                "json",
            ],
        )
        .expect("weft leases list");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["summary"]["leases"], LEASES + 1, "{}", doc["summary"]);
    let out =
        c.tb.exec(&ns, &[weft.to_str().unwrap(), "network", "check", &ep])
            .expect("weft network check");
    assert!(!out.contains("cannot list"), "{out}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn our_key_overwritten_with_a_value_not_ours_is_rewritten_in_place() {
    let (mut c, [sn]) = Cluster::running("own-rewrite");
    let key = Cluster::lease_key(sn);
    let id = c.key_lease(&key).expect("lease key");
    let ours = c.tb.etcdctl(&["get", &key, "--print-value-only"]).unwrap();
    let ip = c.tb.node(0).ip;
    let wrong_mac = lease_json(ip, mac(7));
    for (what, value) in [
        ("garbage", b"{not json".to_vec()),
        ("our IP with another VtepMAC", wrong_mac),
    ] {
        let value = String::from_utf8(value).unwrap();
        // written the way an operator would, without our etcd lease
        c.tb.etcdctl(&["put", &key, &value]).unwrap();
        c.eventually(
            0,
            &format!("{what} rewritten"),
            Duration::from_secs(5),
            || c.tb.etcdctl(&["get", &key, "--print-value-only"]).unwrap() == ours,
        );
        assert_eq!(
            c.key_lease(&key),
            Some(id),
            "{what}: back on our etcd lease"
        );
        assert_eq!(c.subnet(0), sn, "{what}: the same subnet");
    }
    assert!(c.log(0).contains("rewriting it in place"), "{}", c.log(0));
    assert!(c.tb.is_running(c.weftd[0].unwrap()));
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn anti_entropy_checks_find_nothing_when_the_watch_missed_nothing_even_across_a_compaction() {
    let mut c = Cluster::new("anti-entropy", 1, Some(NET_CONFIG));
    c.start(0, &["--lease-relist-interval=1"]);
    let own = c.subnet(0);
    let peers = other_subnets(own, 50);
    let put = |round: u8| {
        peers
            .iter()
            .enumerate()
            .map(|(k, sn)| {
                let ip = Ipv4Addr::new(10, 252, round, k as u8);
                (Cluster::lease_key(*sn), Some(lease_json(ip, mac(k as u32))))
            })
            .collect::<Vec<_>>()
    };
    write(&c, put(0), 1);
    c.eventually(0, "peers programmed", Duration::from_secs(10), || {
        routed(&c, 0).len() == peers.len()
    });
    // A quiet cluster is compacted past the last lease change: the check still lists at a
    // revision it can read (a progress notification brings the watch's revision forward).
    std::thread::sleep(Duration::from_millis(1500));
    let noise: Vec<(String, Option<Vec<u8>>)> = (0..20)
        .map(|n| ("/weft-test/noise".to_string(), Some(vec![b'0' + n])))
        .collect();
    let rev = write(&c, noise, 1);
    c.tb.etcdctl(&["compact", &rev.to_string()]).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    write(&c, put(1), 1);
    let want: BTreeMap<String, String> = (0..peers.len())
        .map(|k| {
            (
                mac(k as u32).to_string(),
                Ipv4Addr::new(10, 252, 1, k as u8).to_string(),
            )
        })
        .collect();
    c.eventually(0, "peers moved", Duration::from_secs(10), || {
        fdb(&c, 0) == want
    });
    std::thread::sleep(Duration::from_millis(1500));
    let checks = c.metric(0, "weft_lease_relist_checks_total", &[]);
    let relists = c.metric(0, "weft_lease_relists_total", &[]);
    let repairs = c.metric(0, "weft_lease_relist_repairs_total", &[]);
    eprintln!("anti-entropy: {checks} checks, {relists} re-lists, {repairs} repairs");
    assert!(checks >= 4.0, "{checks} checks in ~6 s:\n{}", c.log(0));
    assert_eq!(repairs, 0.0, "{}", c.log(0));
    assert_eq!(relists, 0.0, "no full listing was needed:\n{}", c.log(0));
}

/// `n` /24s of 10.244.0.0/16 other than `own`: subnets for peers written by hand.
fn other_subnets(own: Ipv4Net, n: usize) -> Vec<Ipv4Net> {
    (1..=255u8)
        .map(|k| Ipv4Net::new(Ipv4Addr::new(10, 244, k, 0), 24).unwrap())
        .filter(|sn| *sn != own)
        .take(n)
        .collect()
}
