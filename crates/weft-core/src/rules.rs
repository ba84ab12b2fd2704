//! iptables masquerade and forward rules (flannel's `FLANNEL-POSTRTG`/`FLANNEL-FWD` chains),
//! and plans that bring a table in line with them using `iptables-restore --noflush`.
//!
//! The same rules serve both families: IPv4 with `iptables`, IPv6 with `ip6tables` (flannel's
//! `masqIP6Rules`/`forwardRules` with the IPv6 Network and subnet, `ff00::/8` in place of
//! `224.0.0.0/4`); the family follows from the network type ([`PodNet`]).
//!
//! Specs are kept in the canonical form `iptables-save` prints, so the current state can be
//! compared with the desired rules as plain text: no `iptables -C` per rule, and order,
//! duplicates and extras are all visible (flannel's resync checks existence only).

use std::fmt::{self, Write as _};

use crate::family::PodNet;

/// The masquerade chain (table `nat`).
pub const MASQ_CHAIN: &str = "FLANNEL-POSTRTG";
/// The forward chain (table `filter`).
pub const FORWARD_CHAIN: &str = "FLANNEL-FWD";
/// Comment on every masquerade rule.
pub const MASQ_COMMENT: &str = "flanneld masq";
/// Comment on every forward rule.
pub const FORWARD_COMMENT: &str = "flanneld forward";
/// kube-proxy's masquerade mark: packets it marked are left to its own rules.
pub const KUBE_PROXY_MARK: &str = "0x4000/0x4000";

/// The IPv4 multicast range, never masqueraded.
pub const MULTICAST_V4: &str = "224.0.0.0/4";
/// The IPv6 multicast range, never masqueraded.
pub const MULTICAST_V6: &str = "ff00::/8";

/// The multicast range of `N`'s family ([`MULTICAST_V4`] or [`MULTICAST_V6`]).
pub fn multicast<N: PodNet>() -> &'static str {
    if N::V6 { MULTICAST_V6 } else { MULTICAST_V4 }
}

const BUILTIN_CHAINS: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// An iptables table weft writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `nat`.
    Nat,
    /// `filter`.
    Filter,
}

impl Table {
    /// The table name as iptables spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule: `-A <chain> <spec>` in `<table>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The table.
    pub table: Table,
    /// The chain the rule is appended to.
    pub chain: String,
    /// The match and target in `iptables-save` canonical form.
    pub spec: String,
}

impl Rule {
    fn new(table: Table, chain: &str, spec: String) -> Rule {
        Rule {
            table,
            chain: chain.to_owned(),
            spec,
        }
    }

    /// The `iptables-restore` line appending this rule: `-A <chain> <spec>`.
    pub fn append_line(&self) -> String {
        format!("-A {} {}", self.chain, self.spec)
    }

    /// The spec as an argument vector (quotes removed), for `iptables -t <table> -C <chain> ...`.
    pub fn args(&self) -> Vec<String> {
        tokens(&self.spec).into_iter().map(unquote_token).collect()
    }

    /// True when the rule sits in a built-in chain (it is a jump into one of weft's chains).
    pub fn is_jump(&self) -> bool {
        BUILTIN_CHAINS.contains(&self.chain.as_str())
    }
}

/// The masquerade rules of flannel ≥ v0.20, in order: the `POSTROUTING` jump first, then the
/// six `FLANNEL-POSTRTG` rules. `cluster` is Network, `own` is this node's subnet (for IPv6,
/// for `ip6tables`: IPv6Network and the IPv6 subnet).
pub fn masq_rules<N: PodNet>(cluster: N, own: N, random_fully: bool) -> Vec<Rule> {
    let comment = format!("-m comment --comment \"{MASQ_COMMENT}\"");
    let fully = if random_fully { " --random-fully" } else { "" };
    let (c, p) = (cluster.trunc(), own.trunc());
    let multicast = multicast::<N>();
    vec![
        Rule::new(
            Table::Nat,
            "POSTROUTING",
            format!("{comment} -j {MASQ_CHAIN}"),
        ),
        // Leave packets kube-proxy marked for masquerading to kube-proxy.
        Rule::new(
            Table::Nat,
            MASQ_CHAIN,
            format!("-m mark --mark {KUBE_PROXY_MARK} {comment} -j RETURN"),
        ),
        // Pod-to-pod traffic keeps its source address.
        Rule::new(
            Table::Nat,
            MASQ_CHAIN,
            format!("-s {p} -d {c} {comment} -j RETURN"),
        ),
        Rule::new(
            Table::Nat,
            MASQ_CHAIN,
            format!("-s {c} -d {p} {comment} -j RETURN"),
        ),
        Rule::new(
            Table::Nat,
            MASQ_CHAIN,
            format!("! -s {c} -d {p} {comment} -j RETURN"),
        ),
        // Pods leaving the cluster (except multicast) are masqueraded.
        Rule::new(
            Table::Nat,
            MASQ_CHAIN,
            format!("-s {c} ! -d {multicast} {comment} -j MASQUERADE{fully}"),
        ),
        // Outside traffic entering the cluster network through this node is masqueraded.
        Rule::new(
            Table::Nat,
            MASQ_CHAIN,
            format!("! -s {c} -d {c} {comment} -j MASQUERADE{fully}"),
        ),
    ]
}

/// The forward rules: the `FORWARD` jump, then accept traffic from and to the cluster network
/// (hosts whose FORWARD policy is DROP, e.g. with Docker, would otherwise drop pod traffic).
/// With an IPv6 network, for `ip6tables`.
pub fn forward_rules<N: PodNet>(cluster: N) -> Vec<Rule> {
    let comment = format!("-m comment --comment \"{FORWARD_COMMENT}\"");
    let c = cluster.trunc();
    vec![
        Rule::new(
            Table::Filter,
            "FORWARD",
            format!("{comment} -j {FORWARD_CHAIN}"),
        ),
        Rule::new(
            Table::Filter,
            FORWARD_CHAIN,
            format!("-s {c} {comment} -j ACCEPT"),
        ),
        Rule::new(
            Table::Filter,
            FORWARD_CHAIN,
            format!("-d {c} {comment} -j ACCEPT"),
        ),
    ]
}

/// Compares `saved` (the output of `iptables-save -t <table>`, with or without `-c` counters)
/// with the `desired` rules of `table` and returns the `iptables-restore --noflush` payload
/// that repairs it, or `None` when nothing needs doing.
///
/// The table is in sync when each of weft's chains holds exactly its desired rules in order
/// and each jump rule appears exactly once in its built-in chain (anywhere in it). A chain
/// that differs is rewritten whole (declaring it in the payload flushes it); a missing jump
/// is appended (`-A`, as flannel ≥ v0.22 does); extra copies of a jump are deleted. No other
/// chain or rule is touched. Rules of other tables in `desired` are ignored.
pub fn plan_sync(table: Table, saved: &str, desired: &[Rule]) -> Option<String> {
    let state = SavedTable::parse(table, saved);

    let mut chains: Vec<&str> = Vec::new();
    let mut jumps: Vec<&Rule> = Vec::new();
    for rule in desired.iter().filter(|rule| rule.table == table) {
        if rule.is_jump() {
            if !jumps
                .iter()
                .any(|jump| jump.chain == rule.chain && jump.spec == rule.spec)
            {
                jumps.push(rule);
            }
        } else if !chains.contains(&rule.chain.as_str()) {
            chains.push(&rule.chain);
        }
    }

    let stale: Vec<&str> = chains
        .iter()
        .copied()
        .filter(|chain| {
            let want: Vec<String> = desired
                .iter()
                .filter(|rule| rule.table == table && rule.chain == *chain)
                .map(|rule| normalize(&rule.spec))
                .collect();
            !state.is_declared(chain) || state.specs(chain) != want
        })
        .collect();

    let mut jump_lines = Vec::new();
    for jump in &jumps {
        let spec = normalize(&jump.spec);
        let count = state
            .specs(&jump.chain)
            .iter()
            .filter(|have| **have == spec)
            .count();
        if count == 0 {
            jump_lines.push(format!("-A {} {}", jump.chain, jump.spec));
        }
        for _ in 1..count {
            jump_lines.push(format!("-D {} {}", jump.chain, jump.spec));
        }
    }

    if stale.is_empty() && jump_lines.is_empty() {
        return None;
    }
    let rewrites = stale.iter().flat_map(|chain| {
        desired
            .iter()
            .filter(move |rule| rule.table == table && rule.chain == *chain)
            .map(Rule::append_line)
    });
    Some(restore_payload(table, &stale, rewrites.chain(jump_lines)))
}

/// The `iptables-restore --noflush` payload that removes weft's `chains` from `table`: every
/// rule elsewhere that jumps (`-j`/`-g`) to one of them is deleted, then the chains are
/// flushed and deleted (`-X`). `None` when none of the chains exist and nothing jumps to them.
/// For a cleanup command, and for flannel's leftovers (`FLANNEL-POSTRTG`, `FLANNEL-FWD`).
pub fn plan_remove(table: Table, saved: &str, chains: &[&str]) -> Option<String> {
    let state = SavedTable::parse(table, saved);
    let existing: Vec<&str> = chains
        .iter()
        .copied()
        .filter(|chain| state.is_declared(chain))
        .collect();
    let deletions: Vec<String> = state
        .rules
        .iter()
        .filter(|(chain, spec)| {
            !chains.contains(&chain.as_str())
                && jump_target(spec).is_some_and(|target| chains.contains(&target))
        })
        .map(|(chain, spec)| format!("-D {chain} {spec}"))
        .collect();
    if existing.is_empty() && deletions.is_empty() {
        return None;
    }
    let removals = existing.iter().map(|chain| format!("-X {chain}"));
    Some(restore_payload(
        table,
        &existing,
        deletions.into_iter().chain(removals),
    ))
}

/// An `iptables-restore --noflush` payload for `table`: the `declare`d chains (which flushes
/// them), then `lines` in order, then `COMMIT`.
fn restore_payload(table: Table, declare: &[&str], lines: impl Iterator<Item = String>) -> String {
    let mut out = format!("*{}\n", table.name());
    for chain in declare {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    out.push_str("COMMIT\n");
    out
}

/// What `iptables-save` says about one table, with each spec normalized for comparison.
struct SavedTable {
    declared: Vec<String>,
    /// (chain, normalized spec) in file order.
    rules: Vec<(String, String)>,
}

impl SavedTable {
    fn parse(table: Table, saved: &str) -> SavedTable {
        let t = crate::saved::SavedTable::parse(table.name(), saved);
        SavedTable {
            rules: t
                .rules
                .into_iter()
                .map(|r| (r.chain, normalize(&r.spec)))
                .collect(),
            declared: t.chains,
        }
    }

    fn is_declared(&self, chain: &str) -> bool {
        self.declared.iter().any(|name| name == chain)
    }

    fn specs(&self, chain: &str) -> Vec<String> {
        self.rules
            .iter()
            .filter(|(name, _)| name == chain)
            .map(|(_, spec)| spec.clone())
            .collect()
    }
}

/// Splits a spec into tokens, keeping double-quoted strings (with `\"` escapes) whole.
fn tokens(spec: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in spec.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => {
                in_quotes = !in_quotes;
                start.get_or_insert(i);
            }
            c if c.is_whitespace() && !in_quotes => {
                if let Some(s) = start.take() {
                    out.push(&spec[s..i]);
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(s) = start {
        out.push(&spec[s..]);
    }
    out
}

fn unquote_token(token: &str) -> String {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {}
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Whitespace-normalised spec for comparison.
fn normalize(spec: &str) -> String {
    tokens(spec).join(" ")
}

/// The chain a spec jumps or goes to, if any.
fn jump_target(spec: &str) -> Option<&str> {
    let toks = tokens(spec);
    toks.iter()
        .position(|t| matches!(*t, "-j" | "--jump" | "-g" | "--goto"))
        .and_then(|i| toks.get(i + 1).copied())
}

#[cfg(test)]
mod tests {
    use ipnet::{Ipv4Net, Ipv6Net};

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn masq() -> Vec<Rule> {
        masq_rules(net("10.244.0.0/16"), net("10.244.1.0/24"), true)
    }

    /// The nat payload that brings `saved` in line with [`masq`], if any.
    fn nat_plan(saved: &str) -> Option<String> {
        plan_sync(Table::Nat, saved, &masq())
    }

    /// weft's FLANNEL-POSTRTG rules for [`masq`] as `iptables-save` writes them (a macro, so
    /// that `concat!` builds the fixtures below from it).
    macro_rules! postrtg_rules {
        () => {
            "\
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment \"flanneld masq\" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment \"flanneld masq\" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully
"
        };
    }

    /// A realistic `iptables-save -t nat` of a kube-proxy node, with weft's rules in sync.
    const NAT_IN_SYNC: &str = concat!("\
# Generated by iptables-save v1.8.9 (nf_tables) on Mon Jan  1 00:00:00 2024
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG
", postrtg_rules!(), "\
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
COMMIT
# Completed on Mon Jan  1 00:00:00 2024
");

    const FULL_NAT_PAYLOAD: &str = concat!("*nat\n:FLANNEL-POSTRTG - [0:0]\n", postrtg_rules!());

    const JUMP: &str = "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n";

    #[test]
    fn masq_rules_match_flannel() {
        let lines: Vec<String> = masq().iter().map(Rule::append_line).collect();
        assert_eq!(
            lines,
            [
                "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG",
                "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN",
                "-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN",
                "-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment \"flanneld masq\" -j RETURN",
                "-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment \"flanneld masq\" -j RETURN",
                "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
                "-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
            ]
        );
        assert!(masq().iter().all(|r| r.table == Table::Nat));
        let plain = masq_rules(net("10.244.0.0/16"), net("10.244.1.0/24"), false);
        assert!(plain.iter().all(|r| !r.spec.contains("random-fully")));
        assert!(plain[5].spec.ends_with("-j MASQUERADE"));
    }

    #[test]
    fn forward_rules_match_flannel() {
        let rules = forward_rules(net("10.244.0.0/16"));
        let lines: Vec<String> = rules.iter().map(Rule::append_line).collect();
        assert_eq!(
            lines,
            [
                "-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD",
                "-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT",
                "-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT",
            ]
        );
        assert!(rules.iter().all(|r| r.table == Table::Filter));
    }

    /// flannel's `masqIP6Rules` and IPv6 `forwardRules` for ip6tables, as ip6tables-save
    /// (1.8.9, either backend) prints them back.
    const V6_NAT_SAVED: &str = "\
# Generated by ip6tables-nft-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN
-A FLANNEL-POSTRTG -s fc00:0:0:1::/64 -d fc00::/48 -m comment --comment \"flanneld masq\" -j RETURN
-A FLANNEL-POSTRTG -s fc00::/48 -d fc00:0:0:1::/64 -m comment --comment \"flanneld masq\" -j RETURN
-A FLANNEL-POSTRTG ! -s fc00::/48 -d fc00:0:0:1::/64 -m comment --comment \"flanneld masq\" -j RETURN
-A FLANNEL-POSTRTG -s fc00::/48 ! -d ff00::/8 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s fc00::/48 -d fc00::/48 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully
COMMIT
";

    fn masq6() -> Vec<Rule> {
        // Host bits in the inputs are cleared, as for IPv4.
        masq_rules(net6("fc00::5/48"), net6("fc00:0:0:1::7/64"), true)
    }

    #[test]
    fn ipv6_masq_rules_match_flannel() {
        let lines: Vec<String> = masq6().iter().map(Rule::append_line).collect();
        assert_eq!(
            lines,
            [
                "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG",
                "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN",
                "-A FLANNEL-POSTRTG -s fc00:0:0:1::/64 -d fc00::/48 -m comment --comment \"flanneld masq\" -j RETURN",
                "-A FLANNEL-POSTRTG -s fc00::/48 -d fc00:0:0:1::/64 -m comment --comment \"flanneld masq\" -j RETURN",
                "-A FLANNEL-POSTRTG ! -s fc00::/48 -d fc00:0:0:1::/64 -m comment --comment \"flanneld masq\" -j RETURN",
                "-A FLANNEL-POSTRTG -s fc00::/48 ! -d ff00::/8 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
                "-A FLANNEL-POSTRTG ! -s fc00::/48 -d fc00::/48 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
            ]
        );
        assert!(masq6().iter().all(|r| r.table == Table::Nat));
        let plain = masq_rules(net6("fc00::/48"), net6("fc00:0:0:1::/64"), false);
        assert!(plain.iter().all(|r| !r.spec.contains("random-fully")));
        assert!(plain[5].spec.ends_with("-j MASQUERADE"));
        assert!(plain[6].spec.ends_with("-j MASQUERADE"));
        assert_eq!(multicast::<Ipv4Net>(), "224.0.0.0/4");
        assert_eq!(multicast::<Ipv6Net>(), "ff00::/8");
    }

    #[test]
    fn ipv6_forward_rules_match_flannel() {
        let rules = forward_rules(net6("fc00::/48"));
        let lines: Vec<String> = rules.iter().map(Rule::append_line).collect();
        assert_eq!(
            lines,
            [
                "-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD",
                "-A FLANNEL-FWD -s fc00::/48 -m comment --comment \"flanneld forward\" -j ACCEPT",
                "-A FLANNEL-FWD -d fc00::/48 -m comment --comment \"flanneld forward\" -j ACCEPT",
            ]
        );
        assert!(rules.iter().all(|r| r.table == Table::Filter));
    }

    #[test]
    fn ipv6_tables_sync_like_ipv4_ones() {
        assert_eq!(plan_sync(Table::Nat, V6_NAT_SAVED, &masq6()), None);
        let payload = plan_sync(Table::Nat, "", &masq6()).unwrap();
        let mut want = String::from("*nat\n:FLANNEL-POSTRTG - [0:0]\n");
        for rule in &masq6()[1..] {
            want.push_str(&rule.append_line());
            want.push('\n');
        }
        want.push_str(&masq6()[0].append_line());
        want.push_str("\nCOMMIT\n");
        assert_eq!(payload, want);
        // A new IPv6 lease rewrites the chain, not the jump.
        let moved = masq_rules(net6("fc00::/48"), net6("fc00:0:0:9::/64"), true);
        let payload = plan_sync(Table::Nat, V6_NAT_SAVED, &moved).unwrap();
        assert!(
            payload.contains("-s fc00:0:0:9::/64 -d fc00::/48"),
            "{payload}"
        );
        assert!(!payload.contains("POSTROUTING"), "{payload}");
        // The IPv4 rules are not in sync with an IPv6 table, and the other way round.
        assert!(plan_sync(Table::Nat, V6_NAT_SAVED, &masq()).is_some());
        assert!(plan_sync(Table::Nat, NAT_IN_SYNC, &masq6()).is_some());
        // Removal reads an ip6tables-save dump the same way.
        assert_eq!(
            plan_remove(Table::Nat, V6_NAT_SAVED, &[MASQ_CHAIN]).as_deref(),
            Some(
                "*nat\n:FLANNEL-POSTRTG - [0:0]\n-D POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n-X FLANNEL-POSTRTG\nCOMMIT\n"
            )
        );
    }

    #[test]
    fn args_unquote_the_comment() {
        let rule = &masq()[0];
        assert_eq!(
            rule.args(),
            [
                "-m",
                "comment",
                "--comment",
                "flanneld masq",
                "-j",
                "FLANNEL-POSTRTG"
            ]
        );
        assert!(rule.is_jump());
        assert!(!masq()[1].is_jump());
    }

    #[test]
    fn in_sync_table_needs_nothing() {
        assert_eq!(nat_plan(NAT_IN_SYNC), None);
        // Jump position inside POSTROUTING does not matter.
        let kube_jump = "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\"";
        let moved = NAT_IN_SYNC
            .replace(JUMP, "")
            .replace(kube_jump, &format!("{JUMP}{kube_jump}"));
        assert_ne!(moved, NAT_IN_SYNC);
        assert_eq!(nat_plan(&moved), None);
        // Rules of another table are ignored.
        let mut both = masq();
        both.extend(forward_rules(net("10.244.0.0/16")));
        assert_eq!(plan_sync(Table::Nat, NAT_IN_SYNC, &both), None);
    }

    #[test]
    fn counters_are_ignored() {
        let with_counters: String = NAT_IN_SYNC
            .lines()
            .map(|line| {
                if line.starts_with("-A") {
                    format!("[12:3456] {line}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        assert_eq!(nat_plan(&with_counters), None);
    }

    #[test]
    fn empty_table_gets_everything() {
        let want = format!("{FULL_NAT_PAYLOAD}{JUMP}COMMIT\n");
        assert_eq!(nat_plan("").as_deref(), Some(want.as_str()));
        let bare = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        assert_eq!(nat_plan(bare).as_deref(), Some(want.as_str()));
    }

    #[test]
    fn flushed_chain_is_rewritten_without_touching_the_jump() {
        let flushed: String = NAT_IN_SYNC
            .lines()
            .filter(|line| !line.starts_with("-A FLANNEL-POSTRTG"))
            .map(|line| format!("{line}\n"))
            .collect();
        let want = format!("{FULL_NAT_PAYLOAD}COMMIT\n");
        assert_eq!(nat_plan(&flushed).as_deref(), Some(want.as_str()));
    }

    #[test]
    fn missing_jump_is_appended_alone() {
        let no_jump = NAT_IN_SYNC.replace(JUMP, "");
        assert_eq!(
            nat_plan(&no_jump).as_deref(),
            Some(format!("*nat\n{JUMP}COMMIT\n").as_str())
        );
    }

    #[test]
    fn duplicate_jumps_are_deleted() {
        let doubled = NAT_IN_SYNC.replace(JUMP, &format!("{JUMP}{JUMP}{JUMP}"));
        let delete = JUMP.replacen("-A ", "-D ", 1);
        assert_eq!(
            nat_plan(&doubled).as_deref(),
            Some(format!("*nat\n{delete}{delete}COMMIT\n").as_str())
        );
    }

    #[test]
    fn reordered_duplicated_or_extra_chain_rules_are_rewritten() {
        let want = format!("{FULL_NAT_PAYLOAD}COMMIT\n");
        let rule2 = "-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN\n";
        let rule3 = "-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment \"flanneld masq\" -j RETURN\n";

        let reordered = NAT_IN_SYNC.replace(&format!("{rule2}{rule3}"), &format!("{rule3}{rule2}"));
        assert_ne!(reordered, NAT_IN_SYNC);
        let duplicated = NAT_IN_SYNC.replace(rule2, &format!("{rule2}{rule2}"));
        let extra = NAT_IN_SYNC.replace(rule2, &format!("{rule2}-A FLANNEL-POSTRTG -j ACCEPT\n"));
        for (case, saved) in [
            ("reordered", reordered),
            ("duplicated", duplicated),
            ("extra", extra),
        ] {
            assert_eq!(nat_plan(&saved).as_deref(), Some(want.as_str()), "{case}");
        }

        // A changed own subnet (new lease) rewrites the chain.
        let moved = masq_rules(net("10.244.0.0/16"), net("10.244.9.0/24"), true);
        let payload = plan_sync(Table::Nat, NAT_IN_SYNC, &moved).unwrap();
        assert!(payload.contains("-s 10.244.9.0/24 -d 10.244.0.0/16"));
        assert!(!payload.contains("POSTROUTING"));

        // Without --random-fully support the MASQUERADE rules differ.
        let plain = masq_rules(net("10.244.0.0/16"), net("10.244.1.0/24"), false);
        assert!(plan_sync(Table::Nat, NAT_IN_SYNC, &plain).is_some());
    }

    #[test]
    fn missing_chain_declaration_is_added() {
        let undeclared = NAT_IN_SYNC.replace(":FLANNEL-POSTRTG - [0:0]\n", "");
        let want = format!("{FULL_NAT_PAYLOAD}COMMIT\n");
        assert_eq!(nat_plan(&undeclared).as_deref(), Some(want.as_str()));
    }

    #[test]
    fn whitespace_differences_do_not_matter() {
        let spaced = NAT_IN_SYNC.replace("-j RETURN", "  -j   RETURN ");
        assert_eq!(nat_plan(&spaced), None);
    }

    #[test]
    fn other_tables_in_saved_output_are_ignored() {
        let filter = "*filter\n:FORWARD ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n-A FLANNEL-POSTRTG -j DROP\nCOMMIT\n";
        let combined = format!("{filter}{NAT_IN_SYNC}");
        assert_eq!(nat_plan(&combined), None);
    }

    #[test]
    fn filter_table_sync() {
        let fwd = forward_rules(net("10.244.0.0/16"));
        let saved = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:FLANNEL-FWD - [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD
-A FORWARD -j DOCKER-USER
-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
";
        assert_eq!(plan_sync(Table::Filter, saved, &fwd), None);
        let stale = saved.replace("-d 10.244.0.0/16 -m comment", "-d 10.99.0.0/16 -m comment");
        assert_eq!(
            plan_sync(Table::Filter, &stale, &fwd).as_deref(),
            Some(
                "*filter\n:FLANNEL-FWD - [0:0]\n-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\nCOMMIT\n"
            )
        );
    }

    #[test]
    fn remove_deletes_jumps_then_chains() {
        let doubled = NAT_IN_SYNC.replace(JUMP, &format!("{JUMP}{JUMP}"));
        let delete = JUMP.replacen("-A ", "-D ", 1);
        assert_eq!(
            plan_remove(Table::Nat, &doubled, &[MASQ_CHAIN]).as_deref(),
            Some(
                format!(
                    "*nat\n:FLANNEL-POSTRTG - [0:0]\n{delete}{delete}-X FLANNEL-POSTRTG\nCOMMIT\n"
                )
                .as_str()
            )
        );
        // Nothing of ours there: nothing to do.
        let clean: String = NAT_IN_SYNC
            .lines()
            .filter(|line| !line.contains("FLANNEL"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(plan_remove(Table::Nat, &clean, &[MASQ_CHAIN]), None);
        // flannel's wrong-table cleanup target is simply absent from nat.
        assert_eq!(
            plan_remove(Table::Nat, &clean, &[MASQ_CHAIN, FORWARD_CHAIN]),
            None
        );
    }

    #[test]
    fn remove_handles_goto_and_inter_chain_jumps() {
        let saved = "*nat\n:POSTROUTING ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n-A POSTROUTING -g A\n-A A -j B\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n";
        assert_eq!(
            plan_remove(Table::Nat, saved, &["A", "B"]).as_deref(),
            Some("*nat\n:A - [0:0]\n:B - [0:0]\n-D POSTROUTING -g A\n-X A\n-X B\nCOMMIT\n")
        );
    }

    #[test]
    fn tokenizer_keeps_quoted_strings() {
        assert_eq!(
            tokens(r#"-m comment --comment "a \"b\" c"  -j X"#),
            ["-m", "comment", "--comment", r#""a \"b\" c""#, "-j", "X"]
        );
        assert_eq!(unquote_token(r#""a \"b\" c""#), r#"a "b" c"#);
        assert_eq!(jump_target("-s 1.2.3.4/32 -j RETURN"), Some("RETURN"));
        assert_eq!(jump_target("-s 1.2.3.4/32"), None);
    }
}
