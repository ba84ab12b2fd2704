//! What the VPC CNI left in one iptables table, found in `<backend>-save -t <table>` text,
//! and the `<backend>-restore --noflush` payload that removes exactly that. Pure.
//!
//! Rules are recognised by what only the VPC CNI writes: its chain names (`AWS-SNAT-CHAIN-<n>`,
//! `AWS-CONNMARK-CHAIN-<n>`, egress-cni's `CNI-E4-*` / `CNI-E6-*`) and its comment strings
//! (`"AWS, primary ENI"`, `"AWS, CONNMARK"`, ...). Built-in chains are never flushed: kube-proxy,
//! weft (`FLANNEL-POSTRTG`, `FLANNEL-FWD`) and the host own rules there. A rule is deleted
//! with `-D <chain> <its spec as saved>`, which names that one rule exactly; duplicates get one
//! `-D` each.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Comments the VPC CNI puts on its rules (`pkg/networkutils/network.go`). A rule carrying
/// one of them is removed wherever it sits.
pub const AWS_COMMENTS: &[&str] = &[
    "AWS SNAT CHAIN",
    "AWS SNAT CHAIN EXCLUSION",
    "AWS, SNAT",
    "AWS, primary ENI",
    "AWS, outbound connections",
    "AWS, CONNMARK",
    "AWS CONNMARK CHAIN, VPC CIDR",
    "AWS CONNMARK CHAIN, EXCLUDED CIDR",
];

/// Comment prefix of the FORWARD REJECT of IPv6 / v6-egress clusters (`... via IPv4`, and
/// `... via IPv6` in ip6tables).
pub const BLOCK_COMMENT_PREFIX: &str = "Block Node Local Pod access via";

/// Whether `chain` is one of the VPC CNI's own chains.
pub fn is_aws_chain(chain: &str) -> bool {
    let numbered = |prefix: &str| {
        chain
            .strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    // egress-cni names its per-pod chains `CNI-E4-<hash>` / `CNI-E6-<hash>`; the upstream
    // plugins use `CNI-<hex>` and `CNI-DN-`/`CNI-HOSTPORT-*`, and hex has no '-', so the
    // prefix cannot collide.
    numbered("AWS-SNAT-CHAIN-")
        || numbered("AWS-CONNMARK-CHAIN-")
        || chain.starts_with("CNI-E4-")
        || chain.starts_with("CNI-E6-")
}

/// Whether a rule's comment marks it as the VPC CNI's.
pub fn is_aws_comment(comment: &str) -> bool {
    AWS_COMMENTS.contains(&comment) || comment.starts_with(BLOCK_COMMENT_PREFIX)
}

// The one iptables-save reader is weft-core's.
use weft_core::saved::SavedTable;

/// Why a rule or chain goes; drives the step's explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// `AWS-SNAT-CHAIN-<n>` and the POSTROUTING jump.
    Snat,
    /// `AWS-CONNMARK-CHAIN-<n>`, the CONNMARK restore/set rules (nat and mangle).
    Connmark,
    /// The FORWARD REJECT of 169.254.172.0/22 (or its IPv6 twin).
    BlockNodeLocal,
    /// egress-cni's per-pod `CNI-E4-*` / `CNI-E6-*` chains.
    Egress,
}

impl Finding {
    fn of_chain(chain: &str) -> Finding {
        if chain.starts_with("AWS-SNAT-CHAIN-") {
            Finding::Snat
        } else if chain.starts_with("AWS-CONNMARK-CHAIN-") {
            Finding::Connmark
        } else {
            Finding::Egress
        }
    }

    fn of_comment(comment: &str) -> Finding {
        if comment.starts_with(BLOCK_COMMENT_PREFIX) {
            Finding::BlockNodeLocal
        } else if comment.contains("SNAT") {
            Finding::Snat
        } else {
            Finding::Connmark
        }
    }
}

/// What to remove from one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCleanup {
    /// Rules outside the AWS chains to delete: (chain, spec), in saved order.
    pub delete: Vec<(String, String)>,
    /// AWS chains to flush and delete, in saved order.
    pub chains: Vec<String>,
    /// What was found, for the explanation.
    pub findings: BTreeSet<Finding>,
    /// Rules to insert at the top of a chain: (chain, spec).
    pub insert: Vec<(String, String)>,
    /// What was found but kept (the caller asked to keep these kinds).
    pub kept: BTreeSet<Finding>,
}

impl TableCleanup {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.chains.is_empty() && self.insert.is_empty()
    }

    /// The `iptables-restore --noflush` payload: every `-D` first (so no rule still jumps to
    /// a chain being deleted), then `-F` of each AWS chain (they may jump to each other, as
    /// the numbered SNAT chains of old releases did), then `-X`. `None` when there is nothing
    /// to do.
    pub fn restore_payload(&self, table: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut out = format!("*{table}\n");
        for (chain, spec) in &self.insert {
            let _ = writeln!(out, "-I {chain} 1 {spec}");
        }
        for (chain, spec) in &self.delete {
            let _ = writeln!(out, "-D {chain} {spec}");
        }
        for chain in &self.chains {
            let _ = writeln!(out, "-F {chain}");
        }
        for chain in &self.chains {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
        Some(out)
    }
}

/// Decides what to remove from `table`'s saved text.
#[cfg(test)]
pub fn plan_table(table: &str, text: &str) -> TableCleanup {
    plan_table_keeping(table, text, &BTreeSet::new(), None)
}

/// The SNAT chain the POSTROUTING jump of current releases goes to.
pub const SNAT_CHAIN: &str = "AWS-SNAT-CHAIN-0";
/// The comment on the overlay exclusion weft puts into [`SNAT_CHAIN`].
pub const OVERLAY_EXCLUSION_COMMENT: &str = "weft: overlay network, not SNATed";

/// The exclusion rule's spec, in iptables-save's words (so a second look recognises it).
pub fn overlay_exclusion_spec(network: &str) -> String {
    format!("-d {network} -m comment --comment \"{OVERLAY_EXCLUSION_COMMENT}\" -j RETURN")
}

/// Like [`plan_table`], keeping the rules and chains of the kinds in `keep` (they are listed
/// in [`TableCleanup::kept`]). With `overlay`, a kept [`SNAT_CHAIN`] gets a `RETURN` for the
/// overlay network at its top (unless it has one), shaped like the VPC CNI's own exclusions
/// (AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS): traffic to overlay pods is then left to weftd's
/// FLANNEL-POSTRTG instead of being SNATed to the node's primary IP, whose replies the
/// other node would send from an overlay address straight onto the VPC (dropped by the
/// source/destination check). The rule goes with the chain when the chain goes.
pub fn plan_table_keeping(
    table: &str,
    text: &str,
    keep: &BTreeSet<Finding>,
    overlay: Option<&str>,
) -> TableCleanup {
    let saved = SavedTable::parse(table, text);
    let mut out = TableCleanup::default();
    for chain in saved.chains.iter().filter(|c| is_aws_chain(c)) {
        let finding = Finding::of_chain(chain);
        if keep.contains(&finding) {
            out.kept.insert(finding);
            continue;
        }
        if !out.chains.contains(chain) {
            out.findings.insert(finding);
            out.chains.push(chain.clone());
        }
    }
    if let Some(net) = overlay
        && table == "nat"
        && keep.contains(&Finding::Snat)
        && saved.chains.iter().any(|c| c == SNAT_CHAIN)
    {
        let spec = overlay_exclusion_spec(net);
        let present = saved
            .rules
            .iter()
            .any(|r| r.chain == SNAT_CHAIN && r.spec == spec);
        if !present {
            out.insert.push((SNAT_CHAIN.to_string(), spec));
        }
    }
    for rule in &saved.rules {
        if is_aws_chain(&rule.chain) {
            // Goes with its chain's flush.
            continue;
        }
        let jumps = rule.target.as_deref().filter(|t| is_aws_chain(t));
        let comment = rule.comment.as_deref().filter(|c| is_aws_comment(c));
        let finding = match (jumps, comment) {
            (Some(target), _) => Finding::of_chain(target),
            (None, Some(comment)) => Finding::of_comment(comment),
            (None, None) => continue,
        };
        if keep.contains(&finding) {
            out.kept.insert(finding);
            continue;
        }
        out.findings.insert(finding);
        out.delete.push((rule.chain.clone(), rule.spec.clone()));
    }
    out
}
