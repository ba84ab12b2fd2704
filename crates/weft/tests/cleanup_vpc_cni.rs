//! `weft node cleanup-vpc-cni` on a namespaced testbed node that carries the AWS VPC CNI's
//! leftovers exactly as eks-vpc-cni.md §1.2-1.5 lists them, with weftd running on both nodes
//! (root only; CI runs as root: without root this test fails with the testbed's reason).
//!
//! 1. A pod made through the node's conf dir (the runtime's way: the lexicographically first
//!    config) goes to the leftover aws-cni and fails with error E4.
//! 2. The dry run changes nothing.
//! 3. `--apply`, run inside the node's namespace with the node's paths, removes every leftover.
//! 4. With weft's config installed it is the first config; a pod gets an overlay IP through
//!    weft-cni and reaches a pod on the other node.
//! 5. Every unrelated rule, route, link and file survived.
//! 6. A second `--apply` is a no-op.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_testbed::{CniSetup, Testbed, wait_until, weftd};

mod common;
use common::{
    AWS_CONFLIST, FAKE_AWS_CNI, NodeRoot, Run, UPSTREAM_PLUGINS, first_config, install_cni,
    masquerade_written, sibling, write,
};

/// The VPC CNI's iptables state on node 0 (`network.go`, eks-vpc-cni.md §1.4), next to
/// kube-proxy-like rules and a site rule that share its built-in chains.
const AWS_IPTABLES: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:AWS-SNAT-CHAIN-0 - [0:0]
:AWS-CONNMARK-CHAIN-0 - [0:0]
:CNI-E4-3f1c0e5a9b7d2c4e6f8a1 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -i eni+ -m comment --comment "AWS, outbound connections" -j AWS-CONNMARK-CHAIN-0
-A PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark --mask 0x80
-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0
-A POSTROUTING -s 169.254.172.10/32 -m comment --comment "name: \"aws-cni\" id: \"8d7f3a\"" -j CNI-E4-3f1c0e5a9b7d2c4e6f8a1
-A AWS-SNAT-CHAIN-0 -d 10.250.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j RETURN
-A AWS-SNAT-CHAIN-0 ! -o vlan+ -m comment --comment "AWS, SNAT" -m addrtype ! --dst-type LOCAL -j SNAT --to-source 10.250.1.1 --random-fully
-A AWS-CONNMARK-CHAIN-0 -d 10.250.0.0/16 -m comment --comment "AWS CONNMARK CHAIN, VPC CIDR" -j RETURN
-A AWS-CONNMARK-CHAIN-0 -m comment --comment "AWS, CONNMARK" -j CONNMARK --set-xmark 0x80/0x80
-A CNI-E4-3f1c0e5a9b7d2c4e6f8a1 -d 224.0.0.0/4 -m comment --comment "name: \"aws-cni\" id: \"8d7f3a\"" -j ACCEPT
-A KUBE-SERVICES -d 172.20.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j RETURN
COMMIT
*mangle
-A PREROUTING -i eth0 -m comment --comment "AWS, primary ENI" -m addrtype --dst-type LOCAL --limit-iface-in -j CONNMARK --set-xmark 0x80/0x80
-A PREROUTING -i eni+ -m comment --comment "AWS, primary ENI" -j CONNMARK --restore-mark --mask 0x80
-A PREROUTING -i vlan+ -m comment --comment "AWS, primary ENI" -j CONNMARK --restore-mark --mask 0x80
-A PREROUTING -i eth0 -m comment --comment "site policy" -j CONNMARK --restore-mark --mask 0x8000
COMMIT
*filter
-A FORWARD -d 169.254.172.0/22 -m conntrack --ctstate NEW -m comment --comment "Block Node Local Pod access via IPv4" -j REJECT
COMMIT
"#;

/// The v1.23+ native connmark table (`nftables_connmark.go`).
const AWS_NFT: &str = r#"table ip aws-cni {
	chain snat-mark {
		ip daddr 10.250.0.0/16 return
		ct mark set ct mark or 0x80
	}
	chain nat-prerouting {
		type nat hook prerouting priority -90; policy accept;
		fib daddr type local return
		iifname "eni*" jump snat-mark
	}
}
"#;

/// Secondary ENI eth1 with ipamd's table 2 and rules; eth2 managed by systemd-networkd with
/// nodeadm's table 3 rule; a host rule at priority 100; the local rule moved to 20.
const IP_BATCH: &str = "link add eth1 type veth peer name eth1-peer
addr add 10.0.2.10/24 dev eth1
link set eth1 up
link set eth1-peer up
route add 10.0.2.1/32 dev eth1 scope link table 2
route add default via 10.0.2.1 dev eth1 table 2
rule add priority 512 to 10.0.1.77 lookup main
rule add priority 1024 fwmark 0x80/0x80 lookup main
rule add priority 1536 from 10.0.2.33 lookup 2
rule add priority 32765 from 10.0.2.10 lookup 2
link add eth2 type veth peer name eth2-peer
addr add 10.0.3.10/24 dev eth2
link set eth2 up
link set eth2-peer up
route add 10.0.3.1/32 dev eth2 scope link table 3
route add default via 10.0.3.1 dev eth2 table 3
rule add priority 32765 from 10.0.3.10 lookup 3
rule add priority 100 to 192.168.0.0/16 lookup 100
route add 192.168.50.0/24 dev eth1 table 100
rule add priority 20 lookup local
rule del priority 0 lookup local
";

fn has_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
}

/// Every file under `root`: relative path -> (size, mtime) or the symlink target; sockets
/// and directories too, so a dry run that touched anything shows up.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let desc = format!(
                "{:?} {:o} {} {}.{}",
                m.file_type(),
                m.mode(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            );
            out.insert(rel, desc);
            if m.is_dir() {
                walk(&p, root, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The node's network state as text, counters and timestamps stripped.
fn net_state(tb: &Testbed, ns: &str, legacy: bool) -> BTreeMap<&'static str, String> {
    let run = |cmd: &[&str]| {
        let out = tb.exec_output(ns, cmd).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.find(" [") {
                Some(i) if l.starts_with(':') => format!("{}\n", &l[..i]),
                _ => format!("{l}\n"),
            })
            .collect::<String>()
    };
    let mut s = BTreeMap::new();
    s.insert("nft-save", run(&["iptables-nft-save"]));
    if legacy {
        s.insert("legacy-save", run(&["iptables-legacy-save"]));
    }
    s.insert(
        "nft aws-cni",
        run(&["nft", "list", "table", "ip", "aws-cni"]),
    );
    s.insert("rules", run(&["ip", "rule"]));
    s.insert(
        "routes",
        run(&["ip", "-4", "route", "show", "table", "all"]),
    );
    s.insert("links", run(&["ip", "-o", "link", "show"]));
    s
}

impl Run {
    fn ok(&self) -> bool {
        self.code == 0
    }
}

fn cleanup(tb: &Testbed, ns: &str, node: &NodeRoot, extra: &[&str]) -> Run {
    let weft = env!("CARGO_BIN_EXE_weft");
    let mut argv: Vec<String> = vec![weft.into(), "node".into(), "cleanup-vpc-cni".into()];
    argv.extend(node.cleanup_args());
    argv.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    Run::from(tb.exec_output(ns, &argv).unwrap())
}

fn plant(tb: &Testbed, ns: &str, node: &NodeRoot, legacy: bool) {
    // Files (eks-vpc-cni.md §1.2).
    write(&node.conf().join("10-aws.conflist"), AWS_CONFLIST, 0o644);
    // Unrelated configs: one that sorts after weft's (so it never decides a pod's network)
    // and a file the runtime does not load.
    write(
        &node.conf().join("99-loopback.conf"),
        r#"{"cniVersion":"0.3.1","name":"lo","type":"loopback"}"#,
        0o644,
    );
    write(&node.conf().join("README"), "site notes\n", 0o644);
    for bin in ["aws-cni", "egress-cni"] {
        write(&node.bin().join(bin), FAKE_AWS_CNI, 0o755);
    }
    write(
        &node.bin().join("aws-cni-support.sh"),
        "#!/bin/sh\necho collecting EKS logs\n",
        0o755,
    );
    write(&node.bin().join("aws-eks-na-cli"), "#!/bin/sh\n", 0o755);
    for p in UPSTREAM_PLUGINS {
        std::fs::copy(Path::new("/usr/lib/cni").join(p), node.bin().join(p)).unwrap_or_else(|e| {
            panic!("copy /usr/lib/cni/{p} (install containernetworking-plugins): {e}")
        });
    }
    write(
        &node.p("var/run/aws-node/ipam.json"),
        r#"{"version":"vpc-cni-ipam/1","allocations":[{"containerID":"8d7f3a","ipv4":"10.0.2.33","interfaceName":"eth0","networkName":"aws-cni"}]}"#,
        0o644,
    );
    // ipamd's socket, left behind by a dead ipamd: the file exists, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(node.p("var/run/aws-node/ipamd.sock")).unwrap());
    for log in ["ipamd.log", "plugin.log"] {
        write(
            &node.p("var/log/aws-routed-eni").join(log),
            "{\"level\":\"info\"}\n",
            0o644,
        );
    }
    write(
        &node.p("run/cni/v4pd/egress-v6-ipam/last_reserved_ip.0"),
        "fd00::ac:5",
        0o644,
    );
    write(
        &node.p("sys/fs/bpf/globals/aws/maps/global_aws_conntrack_map"),
        "",
        0o600,
    );
    write(
        &node.p("var/lib/cni/results/aws-cni-8d7f3a-eth0"),
        r#"{"kind":"cniCacheV1"}"#,
        0o600,
    );
    write(
        &node.p("var/lib/cni/results/cbr0-5e4d3c-eth0"),
        r#"{"kind":"cniCacheV1"}"#,
        0o600,
    );

    // iptables in both backends, nft, ip rules and routes, from files.
    let rules = node.p("aws.rules");
    write(&rules, AWS_IPTABLES, 0o644);
    let rules = rules.display().to_string();
    let mut backends = vec!["iptables-nft-restore"];
    if legacy {
        backends.push("iptables-legacy-restore");
    }
    for restore in backends {
        tb.exec(ns, &[restore, "--noflush", &rules])
            .unwrap_or_else(|e| panic!("{restore}: {e}"));
    }
    let nft = node.p("aws.nft");
    write(&nft, AWS_NFT, 0o644);
    tb.exec(ns, &["nft", "-f", &nft.display().to_string()])
        .unwrap();
    let batch = node.p("aws.ip");
    write(&batch, IP_BATCH, 0o644);
    tb.exec(ns, &["ip", "-batch", &batch.display().to_string()])
        .unwrap();

    // systemd-networkd manages eth2 (its state file, by ifindex).
    let link: Value =
        serde_json::from_str(&tb.exec(ns, &["ip", "-j", "link", "show", "eth2"]).unwrap()).unwrap();
    let ifindex = link[0]["ifindex"].as_u64().unwrap();
    write(
        &node.p(&format!("run/systemd/netif/links/{ifindex}")),
        "ADMIN_STATE=configured\nOPER_STATE=routable\nNETWORK_FILE=/run/systemd/network/70-eks-eth2.network\n",
        0o644,
    );
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn cleanup_vpc_cni_turns_an_aws_node_into_a_weft_node() {
    let started = Instant::now();
    let weftd = sibling("weftd");
    let weft_cni = sibling("weft-cni");
    let mut tb = weftd::bed("cleanup-vpc-cni", 2, weftd::NET_CONFIG)
        .unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let legacy = has_program("iptables-legacy-restore");
    if !legacy {
        eprintln!("iptables-legacy is not installed: planting the nft backend only");
    }

    // weftd on both nodes, as crates/weftd/tests/common starts it.
    weftd::spawn_all(&mut tb, &weftd, 2, &["--healthz-port=8081", "--ip-masq"]).unwrap();
    let env0 = weftd::ready(&tb, 0, Duration::from_secs(15));
    let env1 = weftd::ready(&tb, 1, Duration::from_secs(15));
    let ns = tb.node(0).ns.clone();
    // Node 0 has programmed its route to node 1's subnet before anything is planted: node 1
    // is ready a moment before node 0's watch delivers its lease, and a route that appears
    // later would read as a change made by the dry run.
    let peer = env1
        .subnet
        .expect("node 1's subnet.env has FLANNEL_SUBNET")
        .to_string();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            tb.exec(&ns, &["ip", "-4", "route", "show", "dev", "flannel.1"])
                .ok()
                .filter(|t| t.lines().any(|l| l.starts_with(&format!("{peer} "))))
        })
        .is_some(),
        "node 0 has no route to node 1's subnet {peer}; log:\n{}",
        std::fs::read_to_string(tb.node(0).dir.join("weftd.log")).unwrap_or_default()
    );
    // weftd has written its masquerade rules (FLANNEL-POSTRTG) before anything is planted.
    assert!(
        masquerade_written(&tb, &ns),
        "weftd wrote no FLANNEL-POSTRTG rules"
    );

    let node = NodeRoot(tb.node(0).dir.join("root"));
    plant(&tb, &ns, &node, legacy);
    let planted_net = net_state(&tb, &ns, legacy);
    let planted_files = tree(&node.0);
    for needle in [
        "AWS-SNAT-CHAIN-0",
        "AWS, primary ENI",
        "KUBE-SERVICES",
        "FLANNEL-POSTRTG",
    ] {
        assert!(planted_net["nft-save"].contains(needle), "{needle}");
    }
    eprintln!(
        "weftd on 2 nodes and the leftovers planted in {:?}",
        started.elapsed()
    );

    // (1) The runtime's first config is the leftover one, and a pod fails with error E4.
    let (first, content) = first_config(&node.conf());
    assert_eq!(first, "10-aws.conflist");
    let through_conf_dir = |content: String| CniSetup {
        plugin: weft_cni.clone(),
        plugin_dirs: vec![node.bin(), PathBuf::from("/usr/lib/cni")],
        conflist: content,
    };
    let err = tb
        .add_cni_pod(0, &through_conf_dir(content))
        .expect_err("a pod through the leftover aws-cni config must fail");
    let failure = err.cni_failure().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(failure.plugin, "aws-cni", "{err}");
    assert!(
        failure
            .msg()
            .is_some_and(|m| m.contains("dial tcp 127.0.0.1:50051: connect: connection refused")),
        "{err}"
    );

    // (2) The dry run explains everything and changes nothing.
    let dry = cleanup(&tb, &ns, &node, &[]);
    assert!(dry.ok(), "{dry}");
    assert!(dry.stdout.contains("dry run, nothing was changed"), "{dry}");
    let dry_json = cleanup(&tb, &ns, &node, &["--output", "json"]);
    assert!(dry_json.ok(), "{dry_json}");
    let doc: Value = serde_json::from_str(&dry_json.stdout).unwrap();
    let whats: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["what"].as_str().unwrap())
        .collect();
    let expect = [
        "move the VPC CNI's network config",
        "iptables-nft table nat",
        "iptables-nft table mangle",
        "iptables-nft table filter",
        "delete nftables `table ip aws-cni`",
        "put the local rule back at priority 0",
        "delete 1 ip rule at priority 512",
        "delete 1 ip rule at priority 1024",
        "delete 1 ip rule at priority 1536",
        "delete 1 ip rule at priority 32765: `32765: from 10.0.2.10 lookup 2`",
        "flush route table 2",
        "remove aws-cni, aws-cni-support.sh, aws-eks-na-cli, egress-cni from",
        "/var/run/aws-node (ipam.json, ipamd.sock)",
        "/run/cni/v4pd",
        "/sys/fs/bpf/globals/aws",
        "move the VPC CNI's logs",
        "cached CNI result of network aws-cni",
    ];
    for e in expect {
        assert!(
            whats.iter().any(|w| w.contains(e)),
            "no step {e:?} in {whats:#?}"
        );
    }
    if legacy {
        for t in ["nat", "mangle", "filter"] {
            let e = format!("iptables-legacy table {t}");
            assert!(whats.iter().any(|w| w.starts_with(&e)), "no step {e:?}");
        }
    }
    let kept = doc["kept"].to_string();
    assert!(
        kept.contains("eth2 is managed by systemd-networkd"),
        "{kept}"
    );
    assert_eq!(
        net_state(&tb, &ns, legacy),
        planted_net,
        "the dry run changed the network"
    );
    assert_eq!(tree(&node.0), planted_files, "the dry run changed files");

    // (3) --apply removes every leftover.
    let applied = cleanup(&tb, &ns, &node, &["--apply"]);
    assert!(applied.ok(), "{applied}");
    assert!(
        applied
            .stdout
            .contains("done: a second look finds nothing of the VPC CNI left on this node"),
        "{applied}"
    );
    assert!(!applied.stdout.contains("FAILED"), "{applied}");
    let net = net_state(&tb, &ns, legacy);
    for (what, text) in &net {
        for gone in ["AWS", "CNI-E4-", "aws-cni", "Block Node Local"] {
            assert!(!text.contains(gone), "{what} still holds {gone:?}:\n{text}");
        }
    }
    assert!(net["nft aws-cni"].is_empty(), "{}", net["nft aws-cni"]);
    let rules = &net["rules"];
    assert!(rules.starts_with("0:\tfrom all lookup local\n"), "{rules}");
    for gone in [
        "20:\t",
        "512:\t",
        "1024:\t",
        "1536:\t",
        "32765:\tfrom 10.0.2.10 lookup 2",
    ] {
        assert!(!rules.contains(gone), "{gone:?} left:\n{rules}");
    }
    assert!(!net["routes"].contains("table 2 "), "{}", net["routes"]);
    assert!(!node.conf().join("10-aws.conflist").exists());
    assert_eq!(
        std::fs::read_to_string(node.conf().join("10-aws.conflist.weft-bak")).unwrap(),
        AWS_CONFLIST
    );
    for bin in [
        "aws-cni",
        "egress-cni",
        "aws-cni-support.sh",
        "aws-eks-na-cli",
    ] {
        assert!(!node.bin().join(bin).exists(), "{bin}");
    }
    for gone in [
        "var/run/aws-node",
        "var/log/aws-routed-eni",
        "run/cni/v4pd",
        "sys/fs/bpf/globals/aws",
        "var/lib/cni/results/aws-cni-8d7f3a-eth0",
    ] {
        assert!(!node.p(gone).exists(), "{gone}");
    }
    assert!(
        node.p("var/log/aws-routed-eni.weft-bak/ipamd.log")
            .is_file()
    );

    // (4) weft's config is now the first one; a pod gets an overlay IP through weft-cni and
    // reaches a pod on node 1.
    let install = install_cni(&weft_cni, &node.bin(), &node.conf())
        .output()
        .unwrap();
    let install = Run::from(install);
    assert!(install.ok(), "{install}");
    assert!(!install.stdout.contains("warning"), "{install}");
    let (first, content) = first_config(&node.conf());
    assert_eq!(first, "10-flannel.conflist");
    let pod0 = tb
        .add_cni_pod(0, &through_conf_dir(content))
        .unwrap_or_else(|e| panic!("pod on node 0 through weft's config: {e}"));
    let subnet0 = env0.subnet.expect("FLANNEL_SUBNET");
    assert!(
        subnet0.contains(&pod0.pod.ip),
        "{} not in {subnet0}",
        pod0.pod.ip
    );
    let pod1 = tb
        .add_cni_pod(1, &CniSetup::new(&weft_cni))
        .unwrap_or_else(|e| panic!("pod on node 1: {e}"));
    let reached = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        tb.ping(&pod0.pod.ns, pod1.pod.ip, 1, Duration::from_secs(1))
            .ok()
            .filter(|st| st.received == 1)
    });
    assert!(
        reached.is_some(),
        "{} cannot reach {}",
        pod0.pod.ip,
        pod1.pod.ip
    );
    let st = tb
        .ping(&pod0.pod.ns, pod1.pod.ip, 3, Duration::from_secs(3))
        .unwrap();
    assert_eq!(st.received, 3, "{st:?}");

    // (5) Everything unrelated survived.
    let after = net_state(&tb, &ns, legacy);
    let lines = |text: &str, keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        text.lines()
            .filter(|l| keep(l))
            .map(str::to_string)
            .collect()
    };
    let unrelated_ipt =
        |l: &str| l.contains("KUBE-") || l.contains("FLANNEL-") || l.contains("site policy");
    for key in ["nft-save", "legacy-save"] {
        if let Some(before) = planted_net.get(key) {
            let want = lines(before, &unrelated_ipt);
            assert!(!want.is_empty(), "{key}");
            assert_eq!(lines(&after[key], &unrelated_ipt), want, "{key}");
        }
    }
    let unrelated_rule = |l: &str| l.starts_with("100:") || l.contains("lookup 3");
    assert_eq!(
        lines(&after["rules"], &unrelated_rule),
        [
            "100:\tfrom all to 192.168.0.0/16 lookup 100",
            "32765:\tfrom 10.0.3.10 lookup 3"
        ]
    );
    let unrelated_route = |l: &str| l.contains("table 100") || l.contains("table 3");
    assert_eq!(
        lines(&after["routes"], &unrelated_route),
        lines(&planted_net["routes"], &unrelated_route)
    );
    assert_eq!(lines(&after["routes"], &unrelated_route).len(), 3);
    for link in ["eth1", "eth2"] {
        assert!(
            after["links"].contains(&format!(": {link}@")),
            "{link} is gone"
        );
    }
    let files = tree(&node.0);
    for keep in [
        "etc/cni/net.d/99-loopback.conf",
        "etc/cni/net.d/README",
        "var/lib/cni/results/cbr0-5e4d3c-eth0",
    ] {
        assert_eq!(files.get(keep), planted_files.get(keep), "{keep}");
    }
    for p in UPSTREAM_PLUGINS {
        let rel = format!("opt/cni/bin/{p}");
        assert_eq!(files.get(&rel), planted_files.get(&rel), "{rel}");
    }
    assert!(
        files
            .keys()
            .any(|k| k.starts_with("run/systemd/netif/links/"))
    );

    // (6) A second --apply finds nothing and changes nothing.
    let net_before = net_state(&tb, &ns, legacy);
    let files_before = tree(&node.0);
    let again = cleanup(&tb, &ns, &node, &["--apply", "--output", "json"]);
    assert!(again.ok(), "{again}");
    let doc: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(doc["steps"], serde_json::json!([]), "{again}");
    assert_eq!(doc["left_after_apply"], serde_json::json!([]), "{again}");
    let text = cleanup(&tb, &ns, &node, &["--apply"]);
    assert!(text.ok() && text.stdout.contains("nothing to do"), "{text}");
    assert_eq!(net_state(&tb, &ns, legacy), net_before);
    assert_eq!(tree(&node.0), files_before);

    tb.teardown().unwrap();
    eprintln!("cleanup-vpc-cni testbed test took {:?}", started.elapsed());
}
