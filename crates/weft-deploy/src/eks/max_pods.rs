//! Max pods on EKS nodes: the VPC CNI's ENI arithmetic that the EKS AMIs write into kubelet's
//! `maxPods`, the embedded table of common instance types, and what the overlay allows instead.
//!
//! After aws-node is gone the ENI limit no longer bounds how many pods a node can address, but
//! kubelet keeps enforcing the ENI-derived `maxPods` until it is reconfigured (seed error E5).

/// kubelet's default `maxPods`, and the practical per-node guidance (and the cap EKS's
/// max-pods calculator applies to instances with at most 30 vCPUs).
pub const KUBELET_DEFAULT_MAX_PODS: u32 = 110;

/// ENI limits of an instance type (network card 0 only, as the VPC CNI counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EniLimits {
    /// Network interfaces the instance can attach.
    pub enis: u32,
    /// IPv4 addresses per interface, the interface's own primary address included.
    pub ipv4_per_eni: u32,
}

impl EniLimits {
    /// The VPC CNI's max pods, which the AL2 bootstrap, AL2023 nodeadm and Bottlerocket write
    /// into kubelet: `ENIs * (IPv4 per ENI - 1) + 2`. The first address of every ENI is the
    /// ENI's own; the +2 are aws-node and kube-proxy, which use the host network.
    pub fn eni_max_pods(self) -> u32 {
        self.enis
            .saturating_mul(self.ipv4_per_eni.saturating_sub(1))
            .saturating_add(2)
    }

    /// Max pods with VPC CNI custom networking, where the primary ENI carries no pods:
    /// `(ENIs - 1) * (IPv4 per ENI - 1) + 2`.
    pub fn custom_networking_max_pods(self) -> u32 {
        self.enis
            .saturating_sub(1)
            .saturating_mul(self.ipv4_per_eni.saturating_sub(1))
            .saturating_add(2)
    }
}

/// One row of the table of common instance types (eks-vpc-cni.md §2.2; ENIs and IPv4 per ENI
/// from nodeadm's instance-info.jsonl, default max pods equal to the VPC CNI's
/// eni-max-pods.txt). The derived columns are kept as published so a test can check the
/// arithmetic against them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRow {
    /// The instance types that share the row.
    pub types: &'static [&'static str],
    pub limits: EniLimits,
    /// Default max pods (what the AMIs set).
    pub default_max_pods: u32,
    /// With custom networking.
    pub custom_networking: u32,
    /// Prefix delegation before the calculator's cap.
    pub prefix_delegation_raw: u32,
    /// Prefix delegation as EKS's calculator recommends it (capped at 110, or 250 above 30 vCPUs).
    pub prefix_delegation_recommended: u32,
}

const fn row(
    types: &'static [&'static str],
    enis: u32,
    ipv4_per_eni: u32,
    derived: [u32; 4],
) -> TableRow {
    TableRow {
        types,
        limits: EniLimits { enis, ipv4_per_eni },
        default_max_pods: derived[0],
        custom_networking: derived[1],
        prefix_delegation_raw: derived[2],
        prefix_delegation_recommended: derived[3],
    }
}

/// The embedded table: exactly the rows of eks-vpc-cni.md §2.2. Other types need
/// `--instance-types-json` (the output of `aws ec2 describe-instance-types`).
pub const TABLE: &[TableRow] = &[
    row(&["t3.micro"], 2, 2, [4, 3, 34, 34]),
    row(&["t3.small"], 3, 4, [11, 8, 146, 110]),
    row(
        &["t3.medium", "t3a.medium", "t4g.medium"],
        3,
        6,
        [17, 12, 242, 110],
    ),
    row(&["t3.large"], 3, 12, [35, 24, 530, 110]),
    row(&["t3.xlarge", "t3.2xlarge"], 4, 15, [58, 44, 898, 110]),
    row(
        &["m5.large", "m6i.large", "m7i.large", "m6g.large"],
        3,
        10,
        [29, 20, 434, 110],
    ),
    row(
        &["c5.large", "c6i.large", "c6g.large", "r5.large"],
        3,
        10,
        [29, 20, 434, 110],
    ),
    row(
        &["m5.xlarge", "m5.2xlarge", "m6i.xlarge"],
        4,
        15,
        [58, 44, 898, 110],
    ),
    row(
        &["c5.xlarge", "c5.2xlarge", "r5.xlarge"],
        4,
        15,
        [58, 44, 898, 110],
    ),
    row(&["m5.4xlarge"], 8, 30, [234, 205, 3714, 110]),
    row(
        &["c5.18xlarge", "m5.24xlarge"],
        15,
        50,
        [737, 688, 11762, 250],
    ),
];

/// The table row of an instance type (names compare case-insensitively).
pub fn lookup(instance_type: &str) -> Option<&'static TableRow> {
    TABLE.iter().find(|r| {
        r.types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(instance_type))
    })
}

/// All instance types of the embedded table, for error messages.
pub fn known_types() -> Vec<&'static str> {
    TABLE.iter().flat_map(|r| r.types.iter().copied()).collect()
}

/// Pod addresses in one node subnet of prefix `subnet_len`: host-local hands out every
/// address except the network address, the bridge's gateway address (the first host) and the
/// broadcast address, so 2^(32 - len) - 3 (253 for a /24).
pub fn pod_addresses(subnet_len: u8) -> u32 {
    let size = 1u64 << (32 - u32::from(subnet_len.min(32)));
    u32::try_from(size.saturating_sub(3)).unwrap_or(u32::MAX)
}

/// kubelet memory the EKS AMIs reserve for a max-pods value (`kubeReserved`): 11 MiB per pod
/// plus 255 MiB.
pub fn kube_reserved_mib(max_pods: u32) -> u32 {
    max_pods.saturating_mul(11).saturating_add(255)
}

/// What the max-pods change does to one instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The ENI value is below the target: raise it (E5).
    Raise,
    /// Already at the target.
    Keep,
    /// The ENI value is above the target but fits the node subnet: lowering is a choice.
    LowerOptional,
    /// The ENI value is above what the node subnet can address: pods past the subnet would
    /// fail in host-local, so it must come down.
    LowerRequired,
}

impl Change {
    /// Decides the change from the ENI value, the target and the node subnet's addresses.
    pub fn of(eni_max_pods: u32, target: u32, pod_addresses: u32) -> Change {
        if eni_max_pods > pod_addresses {
            Change::LowerRequired
        } else if eni_max_pods > target {
            Change::LowerOptional
        } else if eni_max_pods < target {
            Change::Raise
        } else {
            Change::Keep
        }
    }

    /// Short label for tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Change::Raise => "raise",
            Change::Keep => "keep",
            Change::LowerOptional => "lower (optional)",
            Change::LowerRequired => "lower (required)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max pods with prefix delegation before any cap: every secondary address slot holds a
    /// /28 (16 addresses): `ENIs * ((IPv4 per ENI - 1) * 16) + 2`.
    fn prefix_delegation_max_pods(l: EniLimits) -> u32 {
        l.enis * ((l.ipv4_per_eni - 1) * 16) + 2
    }

    fn limits(t: &str) -> EniLimits {
        lookup(t)
            .unwrap_or_else(|| panic!("{t} is in the table"))
            .limits
    }

    #[test]
    fn formula_matches_every_published_column_of_the_table() {
        for r in TABLE {
            let l = r.limits;
            assert_eq!(l.eni_max_pods(), r.default_max_pods, "{:?}", r.types);
            assert_eq!(
                l.custom_networking_max_pods(),
                r.custom_networking,
                "{:?}",
                r.types
            );
            assert_eq!(
                prefix_delegation_max_pods(l),
                r.prefix_delegation_raw,
                "{:?}",
                r.types
            );
            let cap = if r.prefix_delegation_recommended == 250 {
                250
            } else {
                KUBELET_DEFAULT_MAX_PODS
            };
            assert_eq!(
                r.prefix_delegation_raw.min(cap),
                r.prefix_delegation_recommended,
                "{:?}",
                r.types
            );
        }
    }

    #[test]
    fn well_known_rows() {
        // The values users meet: t3.medium 17, t3.large 35, m5.large 29 (eks-vpc-cni.md gotchas).
        assert_eq!(limits("t3.micro").eni_max_pods(), 4);
        assert_eq!(limits("t3.small").eni_max_pods(), 11);
        assert_eq!(limits("t3.medium").eni_max_pods(), 17);
        assert_eq!(limits("t4g.medium").eni_max_pods(), 17);
        assert_eq!(limits("t3.large").eni_max_pods(), 35);
        assert_eq!(limits("m5.large").eni_max_pods(), 29);
        assert_eq!(limits("r5.xlarge").eni_max_pods(), 58);
        assert_eq!(limits("m5.4xlarge").eni_max_pods(), 234);
        assert_eq!(limits("m5.24xlarge").eni_max_pods(), 737);
        assert_eq!(limits("M5.Large"), limits("m5.large"));
        assert!(lookup("m5.metal").is_none());
    }

    #[test]
    fn every_type_appears_once() {
        let types = known_types();
        let mut sorted = types.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), types.len());
        assert_eq!(types.len(), 25);
    }

    #[test]
    fn host_local_addresses_per_node_subnet() {
        assert_eq!(pod_addresses(24), 253);
        assert_eq!(pod_addresses(23), 509);
        assert_eq!(pod_addresses(25), 125);
        assert_eq!(pod_addresses(26), 61);
        assert_eq!(pod_addresses(30), 1);
        assert_eq!(pod_addresses(32), 0);
    }

    #[test]
    fn kube_reserved_follows_max_pods() {
        assert_eq!(kube_reserved_mib(29), 574);
        assert_eq!(kube_reserved_mib(110), 1465);
        assert_eq!(kube_reserved_mib(11), 376);
    }

    #[test]
    fn change_per_type() {
        let addrs = pod_addresses(24);
        assert_eq!(Change::of(29, 110, addrs), Change::Raise);
        assert_eq!(Change::of(110, 110, addrs), Change::Keep);
        assert_eq!(Change::of(234, 110, addrs), Change::LowerOptional);
        assert_eq!(Change::of(737, 110, addrs), Change::LowerRequired);
        // A /26 node subnet holds 61 pods: even m5.large's 29 fits, t3.xlarge's 58 too.
        assert_eq!(Change::of(58, 61, pod_addresses(26)), Change::Raise);
        assert_eq!(
            Change::of(234, 61, pod_addresses(26)),
            Change::LowerRequired
        );
    }

    #[test]
    fn degenerate_limits_do_not_overflow() {
        let l = EniLimits {
            enis: u32::MAX,
            ipv4_per_eni: u32::MAX,
        };
        assert_eq!(l.eni_max_pods(), u32::MAX);
        let l = EniLimits {
            enis: 1,
            ipv4_per_eni: 1,
        };
        assert_eq!(l.eni_max_pods(), 2);
        assert_eq!(l.custom_networking_max_pods(), 2);
    }
}
