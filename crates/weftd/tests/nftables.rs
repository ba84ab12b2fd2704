//! flannel's nftables mode (`"EnableNFTables": true`) on real kernel networking (root only):
//! flannel's table layout, the iptables mode's chains removed at start, masquerading and
//! pod-to-pod traffic, drift repaired from nf_tables announcements, and the way back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use weft_testbed::Signal;

const NFT_CONFIG: &str =
    r#"{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}"#;

fn table(c: &Cluster, i: usize) -> String {
    c.sh_lenient(i, &["nft", "list", "table", "ip", "flannel-ipv4"])
}

/// The table's lines, trimmed, blank ones dropped.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn nftables_mode_writes_flannel_s_table_masquerades_and_repairs_it() {
    let mut c = Cluster::new("nftmode", 2, Some(NFT_CONFIG));
    // Node 0 ran flanneld's iptables mode before: its chains and jumps are there.
    for cmd in [
        "iptables-nft -t nat -N FLANNEL-POSTRTG",
        "iptables-nft -t nat -A POSTROUTING -m comment --comment flanneld-masq -j FLANNEL-POSTRTG",
        "iptables-nft -t nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 -j MASQUERADE",
        "iptables-nft -t filter -N FLANNEL-FWD",
        "iptables-nft -t filter -A FORWARD -j FLANNEL-FWD",
        "iptables-nft -t filter -A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT",
    ] {
        let argv: Vec<&str> = cmd.split_whitespace().collect();
        c.sh(0, &argv);
    }
    c.start(0, &[]);
    c.start(1, &[]);
    let sn0 = c.subnet(0);
    c.subnet(1);

    // 1. flannel's layout, line for line as nft lists it
    let p = sn0.to_string();
    let expected = [
        "table ip flannel-ipv4 {",
        "comment \"rules for flannel-ipv4\"",
        "chain forward {",
        "comment \"chain to accept flannel traffic\"",
        "type filter hook forward priority filter; policy accept;",
        "ip saddr 10.244.0.0/16 accept",
        "ip daddr 10.244.0.0/16 accept",
        "}",
        "chain postrtg {",
        "comment \"chain to manage traffic masquerading by flannel\"",
        "type nat hook postrouting priority srcnat; policy accept;",
        "meta mark 0x00004000 return",
        &format!("ip saddr {p} ip daddr 10.244.0.0/16 return"),
        &format!("ip saddr 10.244.0.0/16 ip daddr {p} return"),
        &format!("ip saddr != {p} ip daddr 10.244.0.0/16 return"),
        "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
        "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
        "}",
        "}",
    ];
    assert_eq!(lines(&table(&c, 0)), expected, "{}", table(&c, 0));
    // 2. the iptables mode's chains and jumps are gone, nothing else of iptables is touched
    let saved = c.sh(0, &["iptables-nft-save"]);
    assert!(!saved.contains("FLANNEL-"), "{saved}");
    assert!(
        c.log(0)
            .contains("removed the iptables mode's FLANNEL-POSTRTG and FLANNEL-FWD chains")
    );

    // 3. pods reach each other, and the outside through masquerading: the switch has no
    //    route to the pod network, so its replies come back only to a node address
    let pods = [c.pod(0), c.pod(1)];
    all_pairs_ping(&c, &pods);
    let sw = c.tb.switch_ns().to_string();
    let no_route =
        c.tb.exec_output(&sw, &["ip", "route", "get", &pods[0].ip.to_string()])
            .unwrap();
    let via_default = String::from_utf8_lossy(&no_route.stdout).contains("10.250.");
    assert!(
        !no_route.status.success() || !via_default,
        "the switch must not route to pods for this check"
    );
    let got =
        c.tb.ping(
            &pods[0].ns,
            "10.250.0.1".parse().unwrap(),
            3,
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        got.received, 3,
        "pod -> outside the cluster network, masqueraded"
    );

    // 3b. `weft doctor` on the node reads the table (not iptables) and finds it as it must be
    let weft = weftd_bin().with_file_name("weft");
    assert!(
        weft.exists(),
        "{} is missing: run `cargo build --workspace --bins --locked` first (scripts/test.sh does)",
        weft.display()
    );
    let endpoint = c.tb.etcd_endpoint();
    let subnet_file = c.subnet_file(0).display().to_string();
    let ns = c.tb.node(0).ns.clone();
    let out =
        c.tb.exec_output(
            &ns,
            &[
                weft.to_str().unwrap(),
                "doctor",
                "--etcd-endpoints",
                &endpoint,
                "--subnet-file",
                &subnet_file,
                "--output",
                "json",
            ],
        )
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("weft doctor --output json: {e}: {out:?}"));
    let row = |check: &str| -> serde_json::Value {
        report["checks"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["check"] == check).cloned())
            .unwrap_or_else(|| panic!("no {check} row: {report:#}"))
    };
    for (check, needle) in [
        (
            "masquerade",
            "table ip flannel-ipv4, chain postrtg holds weftd's 6 rules",
        ),
        ("iptables-backend", "nftables mode"),
        ("network-config", ""),
    ] {
        let r = row(check);
        assert_eq!(r["status"], "OK", "{check}: {r:#}");
        assert!(r.to_string().contains(needle), "{check}: {r:#}");
    }

    // 4. drift: a flushed chain is put back from the nf_tables announcement
    let t0 = Instant::now();
    c.sh(
        0,
        &["nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg"],
    );
    c.eventually(0, "flushed chain repaired", Duration::from_secs(5), || {
        lines(&table(&c, 0)) == expected
    });
    let repair = t0.elapsed();
    eprintln!("nftables drift repaired in {repair:?}");
    // The log line follows the read-back after the write, so it may come a little after
    // the table is whole again.
    c.eventually(0, "the repair logged", Duration::from_secs(5), || {
        c.log(0).contains("the rules had drifted; repaired")
    });
    // ... and so is a deleted table.
    c.sh(0, &["nft", "delete", "table", "ip", "flannel-ipv4"]);
    c.eventually(0, "deleted table repaired", Duration::from_secs(5), || {
        lines(&table(&c, 0)) == expected
    });
    // A restart writes the same table; traffic keeps flowing.
    c.kill(0, Signal::SIGTERM);
    c.start(0, &[]);
    c.wait_ready(0, Duration::from_secs(15));
    c.eventually(0, "table after restart", Duration::from_secs(5), || {
        lines(&table(&c, 0)) == expected
    });
    all_pairs_ping(&c, &pods);

    // 5. back to the iptables mode: the table goes, flannel's chains come
    c.kill(0, Signal::SIGTERM);
    c.kill(1, Signal::SIGTERM);
    c.tb.etcdctl(&["put", CONFIG_KEY, NET_CONFIG]).unwrap();
    c.start(0, &[]);
    c.eventually(0, "iptables chains back", Duration::from_secs(10), || {
        c.sh(0, &["iptables-nft-save", "-t", "nat"])
            .contains("-A FLANNEL-POSTRTG")
    });
    assert_eq!(table(&c, 0), "", "the nftables table is removed");
    assert!(
        c.log(0)
            .contains("removed the nftables mode's table ip flannel-ipv4")
    );
}
