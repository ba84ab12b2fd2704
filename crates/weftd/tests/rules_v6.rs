//! flannel's IPv6 traffic rules on real kernel networking (root only), written through
//! weft-net's API: the ip6tables chains (`FLANNEL-POSTRTG`, `FLANNEL-FWD`) line for line as
//! flannel lays them out and idempotent; the dual-stack nftables transaction (tables
//! `ip flannel-ipv4` and `ip6 flannel-ipv6`); each mode removing the other's IPv6 leftovers;
//! and IPv6 pod traffic masqueraded to the outside.
//!
//! Every test works in network namespaces of its own (removed by a drop guard); the host's
//! firewall and interfaces are never touched. Only the nf_tables backend of iptables is used
//! (iptables-legacy would take the host's /run/xtables.lock).

use std::future::Future;
use std::process::{Command, Output};

use ipnet::{Ipv4Net, Ipv6Net};
use weft_core::family::Family;
use weft_core::nft::{DualNftRules, NftRules, V4_TABLE, V6_TABLE};
use weft_core::rules::{Rule, Table, forward_rules, masq_rules};
use weft_core::xtables::Backend;
use weft_net::{Iptables, Nftables};

const C6: &str = "fc00::/48";
const P6: &str = "fc00:0:0:1::/64";
const C4: &str = "10.244.0.0/16";
const P4: &str = "10.244.1.0/24";

fn net6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

fn net4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// A named network namespace of this test, deleted when dropped.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("wfw6-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Ns(name);
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn name(&self) -> &str {
        &self.0
    }

    /// `cmd` inside the namespace; its stdout. Panics when it fails.
    fn sh(&self, cmd: &[&str]) -> String {
        let out = self.output(cmd);
        assert!(
            out.status.success(),
            "{} in {}: {out:?}",
            cmd.join(" "),
            self.0
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn output(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {}: {e}", self.0, cmd.join(" ")))
    }

    /// Runs the future `make` builds on a current-thread runtime in a thread inside the
    /// namespace: the commands weft-net starts run there.
    fn block_on<R, F>(&self, make: impl FnOnce() -> F + Send + 'static) -> R
    where
        R: Send + 'static,
        F: Future<Output = R> + 'static,
    {
        weft_testbed::in_netns(&self.0, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(make())
        })
        .unwrap_or_else(|e| panic!("in {}: {e}", self.0))
    }

    /// `ip6tables-nft-save -t <table>` (or iptables-nft-save), without the `#` lines.
    fn saved(&self, family: Family, table: Table) -> Vec<String> {
        let save = match family {
            Family::V4 => "iptables-nft-save",
            Family::V6 => "ip6tables-nft-save",
        };
        self.sh(&[save, "-t", table.name()])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    /// `nft list table <table>`, lines trimmed, blank ones dropped; empty when absent.
    fn nft_table(&self, table: &str) -> Vec<String> {
        let mut cmd = vec!["nft", "list", "table"];
        cmd.extend(table.split_whitespace());
        let out = self.output(&cmd);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd.join(" ")));
    assert!(out.status.success(), "{}: {out:?}", cmd.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn v6_rules() -> Vec<Rule> {
    let mut rules = masq_rules(net6(C6), net6(P6), true);
    rules.extend(forward_rules(net6(C6)));
    rules
}

fn v4_rules() -> Vec<Rule> {
    let mut rules = masq_rules(net4(C4), net4(P4), true);
    rules.extend(forward_rules(net4(C4)));
    rules
}

/// The ip6tables of the nft backend (Debian 12's default).
fn ip6tables() -> Iptables {
    Iptables::for_backend(Backend::Nft).ip6()
}

/// flannel's ip6tables nat table (masqIP6Rules, with the POSTROUTING jump), as
/// ip6tables-save prints it in a namespace that had nothing else.
fn flannel_v6_nat() -> Vec<String> {
    let m = "-m comment --comment \"flanneld masq\"";
    [
        "*nat".to_string(),
        ":PREROUTING ACCEPT [0:0]".into(),
        ":INPUT ACCEPT [0:0]".into(),
        ":OUTPUT ACCEPT [0:0]".into(),
        ":POSTROUTING ACCEPT [0:0]".into(),
        ":FLANNEL-POSTRTG - [0:0]".into(),
        format!("-A POSTROUTING {m} -j FLANNEL-POSTRTG"),
        format!("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {P6} -d {C6} {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {C6} -d {P6} {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s {C6} -d {P6} {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {C6} ! -d ff00::/8 {m} -j MASQUERADE --random-fully"),
        format!("-A FLANNEL-POSTRTG ! -s {C6} -d {C6} {m} -j MASQUERADE --random-fully"),
        "COMMIT".into(),
    ]
    .to_vec()
}

/// flannel's ip6tables filter table (forwardRules with the IPv6 network).
fn flannel_v6_filter() -> Vec<String> {
    let m = "-m comment --comment \"flanneld forward\"";
    [
        "*filter".to_string(),
        ":INPUT ACCEPT [0:0]".into(),
        ":FORWARD ACCEPT [0:0]".into(),
        ":OUTPUT ACCEPT [0:0]".into(),
        ":FLANNEL-FWD - [0:0]".into(),
        format!("-A FORWARD {m} -j FLANNEL-FWD"),
        format!("-A FLANNEL-FWD -s {C6} {m} -j ACCEPT"),
        format!("-A FLANNEL-FWD -d {C6} {m} -j ACCEPT"),
        "COMMIT".into(),
    ]
    .to_vec()
}

/// flannel's `ip6 flannel-ipv6` table as `nft list table` prints it.
fn flannel_v6_table() -> Vec<String> {
    [
        "table ip6 flannel-ipv6 {".to_string(),
        "comment \"rules for flannel-ipv6\"".into(),
        "chain forward {".into(),
        "comment \"chain to accept flannel traffic\"".into(),
        "type filter hook forward priority filter; policy accept;".into(),
        format!("ip6 saddr {C6} accept"),
        format!("ip6 daddr {C6} accept"),
        "}".into(),
        "chain postrtg {".into(),
        "comment \"chain to manage traffic masquerading by flannel\"".into(),
        "type nat hook postrouting priority srcnat; policy accept;".into(),
        "meta mark 0x00004000 return".into(),
        format!("ip6 saddr {P6} ip6 daddr {C6} return"),
        format!("ip6 saddr {C6} ip6 daddr {P6} return"),
        format!("ip6 saddr != {P6} ip6 daddr {C6} return"),
        format!("ip6 saddr {C6} ip6 daddr != ff00::/8 masquerade fully-random"),
        format!("ip6 saddr != {C6} ip6 daddr {C6} masquerade fully-random"),
        "}".into(),
        "}".into(),
    ]
    .to_vec()
}

fn dual() -> DualNftRules {
    DualNftRules {
        v4: Some(NftRules {
            cluster: net4(C4),
            own: net4(P4),
            masq: true,
            forward: true,
            fully_random: true,
        }),
        v6: Some(NftRules {
            cluster: net6(C6),
            own: net6(P6),
            masq: true,
            forward: true,
            fully_random: true,
        }),
    }
}

/// Writes the IPv4 and IPv6 iptables rules in `ns`; the (family, table) pairs changed.
fn write_iptables(ns: &Ns) -> Vec<(Family, Table)> {
    ns.block_on(|| async {
        let v4 = Iptables::for_backend(Backend::Nft);
        let v6 = v4.ip6();
        let mut changed: Vec<(Family, Table)> = v4
            .sync(&v4_rules())
            .await
            .expect("iptables sync")
            .into_iter()
            .map(|t| (Family::V4, t))
            .collect();
        changed.extend(
            v6.sync(&v6_rules())
                .await
                .expect("ip6tables sync")
                .into_iter()
                .map(|t| (Family::V6, t)),
        );
        changed
    })
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn ip6tables_rules_match_flannel_and_a_second_sync_changes_nothing() {
    let ns = Ns::new("ipt");
    let changed = ns.block_on(|| async { ip6tables().sync(&v6_rules()).await });
    assert_eq!(changed.unwrap(), [Table::Nat, Table::Filter]);
    assert_eq!(ns.saved(Family::V6, Table::Nat), flannel_v6_nat());
    assert_eq!(ns.saved(Family::V6, Table::Filter), flannel_v6_filter());
    // IPv4 is not touched by the IPv6 rules.
    let v4 = ns.sh(&["iptables-nft-save"]);
    assert!(!v4.contains("FLANNEL"), "{v4}");

    // Again: nothing to do, nothing changes, the jumps are not duplicated.
    let again = ns.block_on(|| async { ip6tables().sync(&v6_rules()).await });
    assert_eq!(again.unwrap(), Vec::<Table>::new());
    assert_eq!(ns.saved(Family::V6, Table::Nat), flannel_v6_nat());
    assert_eq!(ns.saved(Family::V6, Table::Filter), flannel_v6_filter());

    // Drift: a flushed chain and a deleted jump are put back, nothing else is rewritten.
    ns.sh(&["ip6tables-nft", "-t", "nat", "-F", "FLANNEL-POSTRTG"]);
    ns.sh(&[
        "ip6tables-nft",
        "-t",
        "filter",
        "-D",
        "FORWARD",
        "-m",
        "comment",
        "--comment",
        "flanneld forward",
        "-j",
        "FLANNEL-FWD",
    ]);
    let repaired = ns.block_on(|| async { ip6tables().sync(&v6_rules()).await });
    assert_eq!(repaired.unwrap(), [Table::Nat, Table::Filter]);
    assert_eq!(ns.saved(Family::V6, Table::Nat), flannel_v6_nat());
    assert_eq!(ns.saved(Family::V6, Table::Filter), flannel_v6_filter());

    // Both families side by side: each table holds its own family's rules only.
    let both = write_iptables(&ns);
    assert_eq!(
        both,
        [(Family::V4, Table::Nat), (Family::V4, Table::Filter)]
    );
    let nat4 = ns.saved(Family::V4, Table::Nat).join("\n");
    assert!(
        nat4.contains(&format!("-A FLANNEL-POSTRTG -s {C4} ! -d 224.0.0.0/4")),
        "{nat4}"
    );
    assert!(
        !nat4.contains("ff00::/8") && !nat4.contains("fc00"),
        "{nat4}"
    );
    assert_eq!(ns.saved(Family::V6, Table::Nat), flannel_v6_nat());
    assert_eq!(write_iptables(&ns), Vec::<(Family, Table)>::new());
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn the_dual_nftables_transaction_writes_flannel_s_two_tables() {
    let ns = Ns::new("nft");
    let nft = std::sync::Arc::new(Nftables::default());
    let sync = |ns: &Ns, nft: &std::sync::Arc<Nftables>| {
        let nft = nft.clone();
        ns.block_on(move || async move { nft.sync_dual(&dual()).await })
            .expect("nft sync_dual")
    };
    assert!(sync(&ns, &nft), "the first sync writes");
    assert_eq!(ns.nft_table(V6_TABLE), flannel_v6_table());
    let v4 = ns.nft_table(V4_TABLE);
    assert_eq!(
        v4.first().map(String::as_str),
        Some("table ip flannel-ipv4 {")
    );
    assert!(
        v4.contains(&format!(
            "ip saddr {C4} ip daddr != 224.0.0.0/4 masquerade fully-random"
        )),
        "{v4:?}"
    );
    // Again: the kernel holds what was written, nothing is written.
    assert!(!sync(&ns, &nft), "an unchanged table is left alone");
    assert_eq!(ns.nft_table(V6_TABLE), flannel_v6_table());

    // Drift in the IPv6 table alone is noticed and repaired, as is a deleted table.
    ns.sh(&["nft", "flush", "chain", "ip6", "flannel-ipv6", "postrtg"]);
    assert!(sync(&ns, &nft), "a flushed ip6 chain is rewritten");
    assert_eq!(ns.nft_table(V6_TABLE), flannel_v6_table());
    ns.sh(&["nft", "delete", "table", "ip6", "flannel-ipv6"]);
    assert!(sync(&ns, &nft), "a deleted ip6 table is rewritten");
    assert_eq!(ns.nft_table(V6_TABLE), flannel_v6_table());
    assert_eq!(ns.nft_table(V4_TABLE), v4);

    // A node that stops serving IPv4 drops its table in the same transaction.
    let nft2 = nft.clone();
    let wrote =
        ns.block_on(
            move || async move { nft2.sync_dual(&DualNftRules { v4: None, ..dual() }).await },
        );
    assert!(wrote.unwrap());
    assert_eq!(ns.nft_table(V4_TABLE), Vec::<String>::new());
    assert_eq!(ns.nft_table(V6_TABLE), flannel_v6_table());
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn each_mode_removes_the_other_mode_s_ipv6_leftovers() {
    let ns = Ns::new("switch");
    // Someone else's IPv6 rules, which must survive both switches.
    ns.sh(&["ip6tables-nft", "-t", "nat", "-N", "KUBE-POSTROUTING"]);
    ns.sh(&[
        "ip6tables-nft",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-j",
        "KUBE-POSTROUTING",
    ]);
    // The iptables mode ran before (both families).
    write_iptables(&ns);
    assert!(ns.sh(&["ip6tables-nft-save"]).contains("-A FLANNEL-FWD"));

    // 1. to the nftables mode: its start removes the iptables chains of both families
    let removed = ns.block_on(|| async {
        Iptables::for_backend(Backend::Nft)
            .remove_flannel_chains_both()
            .await
    });
    assert_eq!(
        removed.unwrap(),
        [
            (Family::V4, Table::Nat),
            (Family::V4, Table::Filter),
            (Family::V6, Table::Nat),
            (Family::V6, Table::Filter)
        ]
    );
    let v6 = ns.sh(&["ip6tables-nft-save"]);
    assert!(!v6.contains("FLANNEL"), "{v6}");
    assert!(v6.contains("-A POSTROUTING -j KUBE-POSTROUTING"), "{v6}");
    assert!(!ns.sh(&["iptables-nft-save"]).contains("FLANNEL"));
    let wrote = ns.block_on(|| async { Nftables::default().sync_dual(&dual()).await });
    assert!(wrote.unwrap());
    assert_eq!(ns.nft_table(V6_TABLE), flannel_v6_table());
    // Nothing left to remove the second time.
    let again = ns.block_on(|| async {
        Iptables::for_backend(Backend::Nft)
            .remove_flannel_chains_both()
            .await
    });
    assert_eq!(again.unwrap(), Vec::<(Family, Table)>::new());

    // 2. back to the iptables mode: its start removes both nftables tables
    let removed = ns.block_on(|| async { Nftables::default().remove_both().await });
    assert_eq!(removed.unwrap(), [V4_TABLE, V6_TABLE]);
    assert_eq!(ns.nft_table(V6_TABLE), Vec::<String>::new());
    assert_eq!(ns.nft_table(V4_TABLE), Vec::<String>::new());
    let tables = ns.sh(&["nft", "list", "tables"]);
    assert!(!tables.contains("flannel"), "{tables}");
    let none = ns.block_on(|| async { Nftables::default().remove_both().await });
    assert_eq!(none.unwrap(), Vec::<&str>::new());
    write_iptables(&ns);
    assert_eq!(ns.saved(Family::V6, Table::Filter), flannel_v6_filter());
    let nat = ns.saved(Family::V6, Table::Nat).join("\n");
    assert!(nat.contains("-A POSTROUTING -j KUBE-POSTROUTING"), "{nat}");
    for line in &flannel_v6_nat()[6..13] {
        assert!(nat.contains(line.as_str()), "{line} in {nat}");
    }
}

/// A pod, its node and a host outside the cluster network, in three namespaces: pod
/// fc00:0:0:1::2 (inside C6, behind the node), node forwarding between fc00:0:0:1::/64 and
/// 2001:db8:6::/64, outside 2001:db8:6::2 with no route to C6 (so only masqueraded traffic
/// gets replies). The outside counts the echo requests by their source.
struct Bed {
    pod: Ns,
    node: Ns,
    outside: Ns,
}

const POD: &str = "fc00:0:0:1::2";
const NODE_UP: &str = "2001:db8:6::1";
const OUTSIDE: &str = "2001:db8:6::2";

impl Bed {
    fn new(tag: &str) -> Bed {
        let bed = Bed {
            pod: Ns::new(&format!("{tag}p")),
            node: Ns::new(&format!("{tag}n")),
            outside: Ns::new(&format!("{tag}o")),
        };
        for ns in [&bed.pod, &bed.node, &bed.outside] {
            for key in ["all", "default"] {
                ns.sh(&[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.accept_dad=0"),
                ]);
            }
        }
        bed.node
            .sh(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let pid = std::process::id();
        let (pod_if, node_pod_if) = (format!("p{pid}"), format!("np{pid}"));
        let (node_out_if, out_if) = (format!("no{pid}"), format!("o{pid}"));
        for (a, b, peer) in [
            (&node_pod_if, &pod_if, &bed.pod),
            (&node_out_if, &out_if, &bed.outside),
        ] {
            bed.node.sh(&[
                "ip",
                "link",
                "add",
                a,
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                peer.name(),
            ]);
            bed.node.sh(&["ip", "link", "set", a, "up"]);
            peer.sh(&["ip", "link", "set", b, "up"]);
        }
        let addr = |ns: &Ns, a: &str, dev: &str| {
            ns.sh(&["ip", "-6", "addr", "add", a, "dev", dev, "nodad"]);
        };
        addr(&bed.pod, &format!("{POD}/64"), &pod_if);
        addr(&bed.node, "fc00:0:0:1::1/64", &node_pod_if);
        addr(&bed.node, &format!("{NODE_UP}/64"), &node_out_if);
        addr(&bed.outside, &format!("{OUTSIDE}/64"), &out_if);
        bed.pod.sh(&[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fc00:0:0:1::1",
        ]);
        bed.outside.sh(&["nft", "add", "table", "ip6", "seen"]);
        bed.outside.sh(&[
            "nft",
            "add chain ip6 seen input { type filter hook input priority filter ; }",
        ]);
        for src in [NODE_UP, C6] {
            bed.outside.sh(&[
                "nft",
                &format!(
                    "add rule ip6 seen input ip6 saddr {src} icmpv6 type echo-request counter"
                ),
            ]);
        }
        bed
    }

    /// `ping -6` from the pod address to the outside: the replies received.
    fn ping(&self, count: u32) -> u32 {
        let n = count.to_string();
        let out = self.pod.output(&[
            "ping", "-6", "-n", "-q", "-c", &n, "-i", "0.2", "-W", "1", "-I", POD, OUTSIDE,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let (_, rest) = l.split_once(" packets transmitted, ")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no ping summary: {out:?}"))
    }

    /// Echo requests the outside saw so far (from the node's address, from inside C6).
    fn seen(&self) -> (u64, u64) {
        let listing = self.outside.sh(&["nft", "list", "table", "ip6", "seen"]);
        let count = |needle: &str| -> u64 {
            listing
                .lines()
                .find(|l| l.contains(needle))
                .and_then(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let i = w.iter().position(|t| *t == "packets")?;
                    w.get(i + 1)?.parse().ok()
                })
                .unwrap_or_else(|| panic!("no counter for {needle}: {listing}"))
        };
        (
            count(&format!("saddr {NODE_UP} ")),
            count(&format!("saddr {C6} ")),
        )
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn ipv6_pod_traffic_leaves_masqueraded_in_both_modes() {
    let bed = Bed::new("mq");
    // Without the rules the outside sees the pod's address and cannot answer.
    assert_eq!(bed.ping(2), 0, "no replies without masquerading");
    let (from_node, from_pods) = bed.seen();
    assert_eq!(from_node, 0);
    assert!(from_pods >= 2, "the requests arrived unmasqueraded");

    // iptables mode: ip6tables' FLANNEL-POSTRTG masquerades to the node's address.
    let changed = bed
        .node
        .block_on(|| async { ip6tables().sync(&v6_rules()).await });
    assert_eq!(changed.unwrap(), [Table::Nat, Table::Filter]);
    assert_eq!(bed.ping(3), 3, "pod -> outside, masqueraded");
    assert_eq!(
        bed.seen(),
        (from_node + 3, from_pods),
        "the outside saw the node's address only"
    );
    let counters = bed.node.sh(&["ip6tables-nft-save", "-c", "-t", "nat"]);
    let masq = counters
        .lines()
        .find(|l| l.contains("! -d ff00::/8") && l.contains("MASQUERADE"))
        .unwrap_or_else(|| panic!("{counters}"));
    assert!(
        !masq.starts_with("[0:0]"),
        "the MASQUERADE rule counted: {masq}"
    );

    // nftables mode: the iptables chains go, the ip6 table masquerades.
    let removed = bed.node.block_on(|| async {
        Iptables::for_backend(Backend::Nft)
            .remove_flannel_chains_both()
            .await
    });
    assert!(removed.unwrap().contains(&(Family::V6, Table::Nat)));
    let (from_node, from_pods) = bed.seen();
    assert_eq!(bed.ping(2), 0, "no masquerading between the modes");
    let (between_node, between_pods) = bed.seen();
    assert_eq!(between_node, from_node, "not from the node's address");
    assert!(between_pods >= from_pods + 2, "unmasqueraded again");
    let (from_node, from_pods) = (between_node, between_pods);
    let wrote = bed
        .node
        .block_on(|| async { Nftables::default().sync_dual(&dual()).await });
    assert!(wrote.unwrap());
    assert_eq!(bed.ping(3), 3, "pod -> outside, masqueraded by nftables");
    assert_eq!(
        bed.seen(),
        (from_node + 3, from_pods),
        "the outside saw the node's address only"
    );
}
