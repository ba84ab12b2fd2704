//! flannel's nftables mode (`"EnableNFTables": true`) as data: the tables weftd owns, as one
//! `nft -f` transaction that replaces them whole, and how to tell whether the kernel still
//! holds what weftd wrote.
//!
//! The layout is flannel's (its knftables code, flannel-compat.md 6.4), so a node can switch
//! between flanneld and weftd: table `ip flannel-ipv4` (comment `rules for flannel-ipv4`),
//! chain `forward` (filter hook forward, priority filter) accepting the cluster network both
//! ways, chain `postrtg` (nat hook postrouting, priority srcnat) with flannel's six masquerade
//! rules, whose fourth is `ip saddr != <own subnet> ip daddr <network> return` (the iptables
//! mode's is `! -s <network> -d <own subnet>`) and whose mark match is the exact `0x4000`.
//! With IPv6 the same again in table `ip6 flannel-ipv6` (comment `rules for flannel-ipv6`),
//! with `ip6 saddr`/`ip6 daddr` matches, the IPv6 Network and subnet, and `ff00::/8` as the
//! multicast range never masqueraded. The family follows from the network type ([`PodNet`]).
//!
//! Unlike flanneld, which adds its chains and flushes them rule by rule, weftd writes a table
//! in one transaction that deletes and re-creates it: the kernel swaps the whole table at once,
//! so there is never a moment with half the rules, and anything else someone put into it goes.
//! A dual-stack node replaces both tables in one transaction ([`dual_transaction`]).

use std::fmt::Write as _;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::family::PodNet;
use crate::rules::multicast;

/// The family and name of flannel's IPv4 table.
pub const V4_TABLE: &str = "ip flannel-ipv4";
/// The family and name of flannel's IPv6 table.
pub const V6_TABLE: &str = "ip6 flannel-ipv6";

/// The family and name of flannel's table for `N` ([`V4_TABLE`] or [`V6_TABLE`]).
pub fn table_of<N: PodNet>() -> &'static str {
    if N::V6 { V6_TABLE } else { V4_TABLE }
}

/// The address match keyword of `N`'s family in a rule (`ip` or `ip6`).
fn match_of<N: PodNet>() -> &'static str {
    if N::V6 { "ip6" } else { "ip" }
}

/// What one family's nftables table should hold (IPv4 unless said otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NftRules<N: PodNet = Ipv4Net> {
    /// The flannel Network (IPv6Network for the IPv6 table).
    pub cluster: N,
    /// This node's subnet (its IPv6 subnet for the IPv6 table).
    pub own: N,
    /// `--ip-masq`: the `postrtg` chain.
    pub masq: bool,
    /// `--iptables-forward-rules`: the `forward` chain.
    pub forward: bool,
    /// `masquerade fully-random` (dropped when nft cannot do it, or with
    /// `--ip-masq-fully-random-disable`).
    pub fully_random: bool,
}

/// What both tables of a dual-stack node should hold. A family that is None has its table
/// removed by [`dual_transaction`] (a node that stopped serving it keeps no stale masquerade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DualNftRules {
    /// Table `ip flannel-ipv4`.
    pub v4: Option<NftRules<Ipv4Net>>,
    /// Table `ip6 flannel-ipv6`.
    pub v6: Option<NftRules<Ipv6Net>>,
}

/// The `nft -f` transaction that makes `N`'s table exactly `rules`: create it (so the delete
/// cannot fail), delete it, create it again with its chains and rules.
pub fn transaction<N: PodNet>(rules: &NftRules<N>) -> String {
    let mut s = String::new();
    write_table(&mut s, rules);
    s
}

/// The one `nft -f` transaction that makes both tables what `rules` says: each family's table
/// replaced whole as [`transaction`] does, or removed as [`removal_of`] does when that family is
/// None. The kernel applies all of it or nothing.
pub fn dual_transaction(rules: &DualNftRules) -> String {
    let mut s = String::new();
    match &rules.v4 {
        Some(r) => write_table(&mut s, r),
        None => s.push_str(&removal_of::<Ipv4Net>()),
    }
    match &rules.v6 {
        Some(r) => write_table(&mut s, r),
        None => s.push_str(&removal_of::<Ipv6Net>()),
    }
    s
}

fn write_table<N: PodNet>(s: &mut String, rules: &NftRules<N>) {
    let table = table_of::<N>();
    let name = table.split_once(' ').map_or(table, |(_, name)| name);
    let comment = format!("comment \"rules for {name}\" ;");
    let _ = writeln!(s, "add table {table} {{ {comment} }}");
    let _ = writeln!(s, "delete table {table}");
    let _ = writeln!(s, "add table {table} {{ {comment} }}");
    let (c, p) = (rules.cluster.trunc(), rules.own.trunc());
    let ip = match_of::<N>();
    if rules.forward {
        let _ = writeln!(
            s,
            "add chain {table} forward {{ type filter hook forward priority filter ; comment \"chain to accept flannel traffic\" ; }}"
        );
        let _ = writeln!(s, "add rule {table} forward {ip} saddr {c} accept");
        let _ = writeln!(s, "add rule {table} forward {ip} daddr {c} accept");
    }
    if rules.masq {
        let random = if rules.fully_random {
            " fully-random"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "add chain {table} postrtg {{ type nat hook postrouting priority srcnat ; comment \"chain to manage traffic masquerading by flannel\" ; }}"
        );
        for rule in masq_rules(c, p, random) {
            let _ = writeln!(s, "add rule {table} postrtg {rule}");
        }
    }
}

/// flannel's six masquerade rules of chain `postrtg`, as written (the mark as `0x4000`).
fn masq_rules<N: PodNet>(c: N, p: N, random: &str) -> [String; 6] {
    let ip = match_of::<N>();
    let multicast = multicast::<N>();
    [
        format!("meta mark {MARK} return"),
        format!("{ip} saddr {p} {ip} daddr {c} return"),
        format!("{ip} saddr {c} {ip} daddr {p} return"),
        format!("{ip} saddr != {p} {ip} daddr {c} return"),
        format!("{ip} saddr {c} {ip} daddr != {multicast} masquerade{random}"),
        format!("{ip} saddr != {c} {ip} daddr {c} masquerade{random}"),
    ]
}

/// The mark kube-proxy sets on packets it wants masqueraded, as flannel writes it.
const MARK: &str = "0x4000";
/// The same mark as `nft list` prints it.
const MARK_LISTED: &str = "0x00004000";

/// The rules of chain `postrtg` as `nft list table ip flannel-ipv4` (for IPv6 networks:
/// `ip6 flannel-ipv6`) prints them (rule lines only, no handles), for a table weftd or flanneld
/// wrote for `cluster` and `own`.
pub fn listed_masq_rules<N: PodNet>(cluster: N, own: N, fully_random: bool) -> Vec<String> {
    let random = if fully_random { " fully-random" } else { "" };
    masq_rules(cluster.trunc(), own.trunc(), random)
        .into_iter()
        .map(|r| r.replace(&format!("mark {MARK} "), &format!("mark {MARK_LISTED} ")))
        .collect()
}

/// The rule lines of one chain in a `nft list table` listing (normalized: no handles, no
/// comment, type or policy lines); None when the listing has no such chain.
pub fn chain_rules(listing: &str, chain: &str) -> Option<Vec<String>> {
    let normalized = normalize(listing);
    let mut lines = normalized.lines();
    let head = format!("chain {chain} {{");
    lines.find(|l| *l == head)?;
    Some(
        lines
            .take_while(|l| *l != "}")
            .filter(|l| !l.starts_with("comment ") && !l.starts_with("type "))
            .map(str::to_string)
            .collect(),
    )
}

/// The transaction that removes the IPv4 table, whether it exists or not (what the iptables
/// mode runs at start, as flannel's clean-up of the other mode does).
pub fn removal() -> String {
    removal_of::<Ipv4Net>()
}

/// The transaction that removes `N`'s table, whether it exists or not.
pub fn removal_of<N: PodNet>() -> String {
    let table = table_of::<N>();
    format!("add table {table}\ndelete table {table}\n")
}

/// The one transaction that removes both tables, whether they exist or not (the iptables
/// mode's clean-up of the other mode on a dual-stack node, as flannel's `cleanUp` deletes both).
pub fn removal_both() -> String {
    removal_of::<Ipv4Net>() + &removal_of::<Ipv6Net>()
}

/// A probe for `masquerade fully-random`, for `nft -c` (check only, nothing is committed).
pub fn fully_random_probe() -> String {
    format!(
        "add table {V4_TABLE}\nadd chain {V4_TABLE} masqueradeTest {{ type nat hook postrouting priority srcnat ; }}\nadd rule {V4_TABLE} masqueradeTest masquerade fully-random\n"
    )
}

/// `nft list table` output reduced to what matters when comparing two listings: lines
/// trimmed, blank ones and rule handles dropped.
pub fn normalize(listing: &str) -> String {
    let mut out = String::new();
    for line in listing.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let line = match line.find(" # handle ") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> NftRules {
        NftRules {
            cluster: "10.244.0.0/16".parse().unwrap(),
            own: "10.244.1.0/24".parse().unwrap(),
            masq: true,
            forward: true,
            fully_random: true,
        }
    }

    #[test]
    fn the_transaction_writes_flannel_s_layout_in_one_go() {
        expect_test::expect![[r#"
            add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }
            delete table ip flannel-ipv4
            add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }
            add chain ip flannel-ipv4 forward { type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; }
            add rule ip flannel-ipv4 forward ip saddr 10.244.0.0/16 accept
            add rule ip flannel-ipv4 forward ip daddr 10.244.0.0/16 accept
            add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }
            add rule ip flannel-ipv4 postrtg meta mark 0x4000 return
            add rule ip flannel-ipv4 postrtg ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return
            add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return
            add rule ip flannel-ipv4 postrtg ip saddr != 10.244.1.0/24 ip daddr 10.244.0.0/16 return
            add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
            add rule ip flannel-ipv4 postrtg ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
        "#]]
        .assert_eq(&transaction(&rules()));
    }

    #[test]
    fn flags_leave_out_their_chain_and_fully_random() {
        let t = transaction(&NftRules {
            masq: false,
            ..rules()
        });
        assert!(!t.contains("postrtg") && t.contains("chain ip flannel-ipv4 forward"));
        let t = transaction(&NftRules {
            forward: false,
            fully_random: false,
            ..rules()
        });
        assert!(!t.contains(" forward {") && t.contains("postrtg"));
        assert!(!t.contains("fully-random"), "{t}");
        assert!(t.contains("masquerade\n"));
        // Only the table, with neither.
        let t = transaction(&NftRules {
            forward: false,
            masq: false,
            ..rules()
        });
        assert_eq!(t.lines().count(), 3);
    }

    #[test]
    fn listings_compare_without_handles_and_layout() {
        let a = "table ip flannel-ipv4 {\n\tchain forward {\n\t\tip saddr 10.244.0.0/16 accept # handle 3\n\t}\n\n}\n";
        let b = "table ip flannel-ipv4 {\n  chain forward {\n    ip saddr 10.244.0.0/16 accept # handle 9\n  }\n}";
        assert_eq!(normalize(a), normalize(b));
        assert_ne!(normalize(a), normalize(&a.replace("saddr", "daddr")));
    }

    /// A listing as nft 1.0.6 prints the table weftd writes (taken from the root test
    /// crates/weftd/tests/nftables.rs, which compares the kernel's listing line for line).
    const LISTING: &str = "table ip flannel-ipv4 { # handle 7
	comment \"rules for flannel-ipv4\"
	chain forward { # handle 1
		comment \"chain to accept flannel traffic\"
		type filter hook forward priority filter; policy accept;
		ip saddr 10.244.0.0/16 accept # handle 3
		ip daddr 10.244.0.0/16 accept # handle 4
	}

	chain postrtg { # handle 2
		comment \"chain to manage traffic masquerading by flannel\"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x00004000 return # handle 5
		ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return # handle 6
		ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return # handle 7
		ip saddr != 10.244.1.0/24 ip daddr 10.244.0.0/16 return # handle 8
		ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random # handle 9
		ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random # handle 10
	}
}
";

    #[test]
    fn a_listing_s_chains_are_read_rule_by_rule() {
        let r = rules();
        let masq = chain_rules(LISTING, "postrtg").unwrap();
        assert_eq!(masq, listed_masq_rules(r.cluster, r.own, true));
        assert_ne!(masq, listed_masq_rules(r.cluster, r.own, false));
        assert_ne!(
            masq,
            listed_masq_rules(r.cluster, "10.244.2.0/24".parse().unwrap(), true)
        );
        assert_eq!(
            chain_rules(LISTING, "forward").unwrap(),
            [
                "ip saddr 10.244.0.0/16 accept",
                "ip daddr 10.244.0.0/16 accept"
            ]
        );
        assert_eq!(chain_rules(LISTING, "prerouting"), None);
        let flushed = LISTING.replace("\t\tmeta mark 0x00004000 return # handle 5\n", "");
        assert_eq!(chain_rules(&flushed, "postrtg").unwrap().len(), 5);
    }

    fn rules6() -> NftRules<Ipv6Net> {
        NftRules {
            // Host bits are cleared, as for IPv4.
            cluster: "fc00::1/48".parse().unwrap(),
            own: "fc00:0:0:1::1/64".parse().unwrap(),
            masq: true,
            forward: true,
            fully_random: true,
        }
    }

    #[test]
    fn the_ipv6_transaction_writes_flannel_s_ip6_table() {
        expect_test::expect![[r#"
            add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }
            delete table ip6 flannel-ipv6
            add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }
            add chain ip6 flannel-ipv6 forward { type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; }
            add rule ip6 flannel-ipv6 forward ip6 saddr fc00::/48 accept
            add rule ip6 flannel-ipv6 forward ip6 daddr fc00::/48 accept
            add chain ip6 flannel-ipv6 postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }
            add rule ip6 flannel-ipv6 postrtg meta mark 0x4000 return
            add rule ip6 flannel-ipv6 postrtg ip6 saddr fc00:0:0:1::/64 ip6 daddr fc00::/48 return
            add rule ip6 flannel-ipv6 postrtg ip6 saddr fc00::/48 ip6 daddr fc00:0:0:1::/64 return
            add rule ip6 flannel-ipv6 postrtg ip6 saddr != fc00:0:0:1::/64 ip6 daddr fc00::/48 return
            add rule ip6 flannel-ipv6 postrtg ip6 saddr fc00::/48 ip6 daddr != ff00::/8 masquerade fully-random
            add rule ip6 flannel-ipv6 postrtg ip6 saddr != fc00::/48 ip6 daddr fc00::/48 masquerade fully-random
        "#]]
        .assert_eq(&transaction(&rules6()));
        let t = transaction(&NftRules {
            forward: false,
            fully_random: false,
            ..rules6()
        });
        assert!(
            !t.contains(" forward {") && !t.contains("fully-random"),
            "{t}"
        );
        assert!(t.contains("ip6 daddr != ff00::/8 masquerade\n"), "{t}");
        assert!(!t.contains(" ip "), "no IPv4 match in the ip6 table: {t}");
        assert_eq!(table_of::<Ipv4Net>(), V4_TABLE);
        assert_eq!(table_of::<Ipv6Net>(), V6_TABLE);
    }

    #[test]
    fn the_dual_transaction_replaces_both_tables_at_once() {
        let both = DualNftRules {
            v4: Some(rules()),
            v6: Some(rules6()),
        };
        assert_eq!(
            dual_transaction(&both),
            transaction(&rules()) + &transaction(&rules6())
        );
        // A family left out has its table removed in the same transaction.
        let v6_only = DualNftRules {
            v4: None,
            v6: Some(rules6()),
        };
        assert_eq!(
            dual_transaction(&v6_only),
            format!(
                "add table ip flannel-ipv4\ndelete table ip flannel-ipv4\n{}",
                transaction(&rules6())
            )
        );
        let v4_only = DualNftRules {
            v4: Some(rules()),
            v6: None,
        };
        assert_eq!(
            dual_transaction(&v4_only),
            transaction(&rules()) + "add table ip6 flannel-ipv6\ndelete table ip6 flannel-ipv6\n"
        );
        assert_eq!(dual_transaction(&DualNftRules::default()), removal_both());
    }

    /// The IPv6 table as nft 1.0.6 lists it (`nft -a list table ip6 flannel-ipv6` after
    /// [`transaction`] of [`rules6`]).
    const LISTING6: &str = "table ip6 flannel-ipv6 { # handle 2
	comment \"rules for flannel-ipv6\"
	chain forward { # handle 1
		comment \"chain to accept flannel traffic\"
		type filter hook forward priority filter; policy accept;
		ip6 saddr fc00::/48 accept # handle 2
		ip6 daddr fc00::/48 accept # handle 3
	}

	chain postrtg { # handle 4
		comment \"chain to manage traffic masquerading by flannel\"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x00004000 return # handle 5
		ip6 saddr fc00:0:0:1::/64 ip6 daddr fc00::/48 return # handle 6
		ip6 saddr fc00::/48 ip6 daddr fc00:0:0:1::/64 return # handle 7
		ip6 saddr != fc00:0:0:1::/64 ip6 daddr fc00::/48 return # handle 8
		ip6 saddr fc00::/48 ip6 daddr != ff00::/8 masquerade fully-random # handle 9
		ip6 saddr != fc00::/48 ip6 daddr fc00::/48 masquerade fully-random # handle 10
	}
}
";

    #[test]
    fn an_ipv6_listing_s_chains_are_read_rule_by_rule() {
        let r = rules6();
        let masq = chain_rules(LISTING6, "postrtg").unwrap();
        assert_eq!(masq, listed_masq_rules(r.cluster, r.own, true));
        assert_eq!(
            masq,
            [
                "meta mark 0x00004000 return",
                "ip6 saddr fc00:0:0:1::/64 ip6 daddr fc00::/48 return",
                "ip6 saddr fc00::/48 ip6 daddr fc00:0:0:1::/64 return",
                "ip6 saddr != fc00:0:0:1::/64 ip6 daddr fc00::/48 return",
                "ip6 saddr fc00::/48 ip6 daddr != ff00::/8 masquerade fully-random",
                "ip6 saddr != fc00::/48 ip6 daddr fc00::/48 masquerade fully-random",
            ]
        );
        assert_ne!(masq, listed_masq_rules(r.cluster, r.own, false));
        assert_eq!(
            chain_rules(LISTING6, "forward").unwrap(),
            ["ip6 saddr fc00::/48 accept", "ip6 daddr fc00::/48 accept"]
        );
    }

    #[test]
    fn the_removal_never_fails_on_a_missing_table() {
        assert_eq!(
            removal(),
            "add table ip flannel-ipv4\ndelete table ip flannel-ipv4\n"
        );
        assert_eq!(
            removal_of::<Ipv6Net>(),
            "add table ip6 flannel-ipv6\ndelete table ip6 flannel-ipv6\n"
        );
        assert_eq!(removal_both(), removal() + &removal_of::<Ipv6Net>());
        assert!(fully_random_probe().contains("masquerade fully-random"));
    }
}
