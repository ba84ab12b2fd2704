//! Choosing this node's subnet (flannel `tryAcquireLease`/`allocateSubnet`), as a pure plan.
//!
//! The caller lists the leases, asks for a plan, then applies it: delete the listed keys and
//! either re-put the reused lease or create the new one with a "must not exist" transaction.
//! If the create loses a race, the caller re-lists (or passes the lost subnet in `exclude`)
//! and plans again.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::NetworkConfig;
use crate::lease::Lease;

/// flannel collects at most this many free subnets and picks one of them at random, so nodes
/// starting together rarely collide while allocation stays cheap on huge networks.
pub const MAX_CANDIDATES: usize = 100;

/// What to do to acquire a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquirePlan {
    /// Leases carrying our public IP that the config can no longer use: delete them first.
    pub delete: Vec<Ipv4Net>,
    /// The subnet to take.
    pub action: AcquireAction,
}

/// How to take the subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireAction {
    /// An existing lease carries our public IP and fits the config: write it again with our
    /// current attributes (and a fresh TTL).
    Reuse(Ipv4Net),
    /// Create a new lease for this subnet (it must not exist yet).
    Create(Ipv4Net),
}

impl AcquireAction {
    /// The subnet this action takes.
    pub fn subnet(&self) -> Ipv4Net {
        match self {
            AcquireAction::Reuse(net) | AcquireAction::Create(net) => *net,
        }
    }
}

/// No subnet can be acquired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every subnet between SubnetMin and SubnetMax overlaps an existing lease.
    #[error(
        "out of subnets: all {total} /{subnet_len} subnets of {network} between SubnetMin {subnet_min} and SubnetMax {subnet_max} are leased; remove stale leases (weft leases list) or widen Network/SubnetLen"
    )]
    OutOfSubnets {
        /// The config's Network.
        network: Ipv4Net,
        /// The config's SubnetLen.
        subnet_len: u8,
        /// Number of subnets between SubnetMin and SubnetMax.
        total: u64,
        /// Number of leases (and excluded subnets) overlapping that range.
        taken: u64,
        /// The config's SubnetMin.
        subnet_min: Ipv4Addr,
        /// The config's SubnetMax.
        subnet_max: Ipv4Addr,
    },
    /// The config has IPv4 disabled or no Network.
    #[error(
        "cannot allocate a subnet: the network config has no IPv4 Network (EnableIPv4 is false or Network is missing); weft allocates IPv4 subnets, so set \"EnableIPv4\": true and \"Network\", e.g. \"10.244.0.0/16\""
    )]
    NoIpv4Network,
}

/// Plans how this node gets its subnet, in flannel's order:
///
/// 1. A lease carrying our `public_ip` that fits the config → [`AcquireAction::Reuse`]. The
///    first such lease (in `leases` order) is reused; every lease with our IP that does not
///    fit the config goes to `delete` (flannel only looks at the first lease with our IP and
///    leaves later ones to expire; weft reuses the first that fits).
/// 2. `previous` (the subnet from subnet.env, masked) if it fits the config and no lease
///    overlaps it → [`AcquireAction::Create`].
/// 3. Otherwise one of the first [`MAX_CANDIDATES`] free subnets from SubnetMin upward,
///    chosen uniformly with `rng` → [`AcquireAction::Create`].
///
/// Leases listed in `delete` still count as taken in steps 2 and 3, as in flannel, so a
/// subnet is never handed out in the same round in which its old lease is deleted.
/// Deterministic for a given `rng` state.
pub fn plan_acquire(
    cfg: &NetworkConfig,
    leases: &[Lease],
    public_ip: Ipv4Addr,
    previous: Option<Ipv4Net>,
    rng: &mut impl rand::Rng,
) -> Result<AcquirePlan, AllocError> {
    plan_acquire_excluding(cfg, leases, public_ip, previous, &[], rng)
}

/// [`plan_acquire`] that also treats the `exclude` subnets as taken, for a caller that lost a
/// create race and retries without re-listing.
pub fn plan_acquire_excluding(
    cfg: &NetworkConfig,
    leases: &[Lease],
    public_ip: Ipv4Addr,
    previous: Option<Ipv4Net>,
    exclude: &[Ipv4Net],
    rng: &mut impl rand::Rng,
) -> Result<AcquirePlan, AllocError> {
    let network = match cfg.network {
        Some(network) if cfg.enable_ipv4 && cfg.subnet_size() > 0 => network,
        _ => return Err(AllocError::NoIpv4Network),
    };

    let mut delete: Vec<Ipv4Net> = Vec::new();
    let mut reuse = None;
    for lease in leases
        .iter()
        .filter(|lease| lease.attrs.public_ip == public_ip)
    {
        if cfg.contains_subnet(lease.subnet) {
            reuse = reuse.or(Some(lease.subnet));
        } else if !delete.contains(&lease.subnet) {
            delete.push(lease.subnet);
        }
    }
    if let Some(subnet) = reuse {
        return Ok(AcquirePlan {
            delete,
            action: AcquireAction::Reuse(subnet),
        });
    }

    let taken = Taken::new(
        leases
            .iter()
            .map(|lease| lease.subnet)
            .chain(exclude.iter().copied()),
    );

    if let Some(previous) = previous.map(|net| net.trunc())
        && cfg.contains_subnet(previous)
        && !taken.overlaps(range(previous))
    {
        return Ok(AcquirePlan {
            delete,
            action: AcquireAction::Create(previous),
        });
    }

    let free = free_candidates(cfg, &taken);
    if free.is_empty() {
        let size = cfg.subnet_size();
        let start = u64::from(u32::from(cfg.subnet_min));
        let end = u64::from(u32::from(cfg.subnet_max)) + size - 1;
        return Err(AllocError::OutOfSubnets {
            network,
            subnet_len: cfg.subnet_len,
            total: cfg.subnet_count(),
            taken: taken.count_overlapping((start, end)),
            subnet_min: cfg.subnet_min,
            subnet_max: cfg.subnet_max,
        });
    }
    let pick = rng.random_range(0..free.len());
    let subnet = free.get(pick).copied().ok_or(AllocError::NoIpv4Network)?;
    Ok(AcquirePlan {
        delete,
        action: AcquireAction::Create(subnet),
    })
}

/// The first [`MAX_CANDIDATES`] subnets from SubnetMin upward (to SubnetMax) that overlap no
/// taken range, in ascending order.
pub fn free_subnets(cfg: &NetworkConfig, leases: &[Lease]) -> Vec<Ipv4Net> {
    free_candidates(cfg, &Taken::new(leases.iter().map(|lease| lease.subnet)))
}

fn free_candidates(cfg: &NetworkConfig, taken: &Taken) -> Vec<Ipv4Net> {
    let size = cfg.subnet_size();
    if size == 0 {
        return Vec::new();
    }
    let min = u64::from(u32::from(cfg.subnet_min));
    let max = u64::from(u32::from(cfg.subnet_max));
    let mut free = Vec::new();
    let mut candidate = min;
    // Walk candidates and taken ranges together; a large taken range (say a hostile /8
    // lease) is skipped in one step instead of one subnet at a time.
    let mut ranges = taken.ranges.iter().peekable();
    while candidate <= max && free.len() < MAX_CANDIDATES {
        let end = candidate + size - 1;
        while ranges
            .next_if(|(_, range_end)| *range_end < candidate)
            .is_some()
        {}
        match ranges.peek() {
            Some((range_start, range_end)) if *range_start <= end => {
                // Jump to the first aligned candidate after this taken range.
                let steps = (range_end + 1 - min).div_ceil(size);
                candidate = min + steps * size;
            }
            _ => {
                if let Ok(net) = Ipv4Net::new(to_v4(candidate), cfg.subnet_len) {
                    free.push(net);
                }
                candidate += size;
            }
        }
    }
    free
}

/// Address range of a subnet as inclusive u64 bounds.
fn range(net: Ipv4Net) -> (u64, u64) {
    (
        u64::from(u32::from(net.network())),
        u64::from(u32::from(net.broadcast())),
    )
}

fn to_v4(n: u64) -> Ipv4Addr {
    Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Taken address ranges: sorted, merged, plus the original subnets for counting.
struct Taken {
    ranges: Vec<(u64, u64)>,
    subnets: Vec<(u64, u64)>,
}

impl Taken {
    fn new(subnets: impl Iterator<Item = Ipv4Net>) -> Taken {
        let subnets: Vec<(u64, u64)> = subnets.map(range).collect();
        let mut sorted = subnets.clone();
        sorted.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
        for (start, end) in sorted {
            match ranges.last_mut() {
                Some((_, last_end)) if start <= *last_end + 1 => *last_end = (*last_end).max(end),
                _ => ranges.push((start, end)),
            }
        }
        Taken { ranges, subnets }
    }

    fn overlaps(&self, (start, end): (u64, u64)) -> bool {
        self.ranges.iter().any(|(s, e)| *s <= end && start <= *e)
    }

    fn count_overlapping(&self, (start, end): (u64, u64)) -> u64 {
        self.subnets
            .iter()
            .filter(|(s, e)| *s <= end && start <= *e)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;
    use crate::mac::MacAddr;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::BTreeSet;

    const OURS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);

    fn cfg(text: &str) -> NetworkConfig {
        NetworkConfig::parse(text.as_bytes()).unwrap()
    }

    fn default_cfg() -> NetworkConfig {
        cfg(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#)
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn lease(subnet: &str, ip: Ipv4Addr) -> Lease {
        Lease {
            subnet: net(subnet),
            attrs: LeaseAttrs::vxlan(ip, 1, MacAddr([2, 0, 0, 0, 0, 1])),
        }
    }

    fn other(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 2, n)
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(42)
    }

    #[test]
    fn reuses_the_lease_carrying_our_ip() {
        let leases = [
            lease("10.244.5.0/24", other(1)),
            lease("10.244.7.0/24", OURS),
        ];
        let plan = plan_acquire(
            &default_cfg(),
            &leases,
            OURS,
            Some(net("10.244.9.0/24")),
            &mut rng(),
        )
        .unwrap();
        assert_eq!(
            plan,
            AcquirePlan {
                delete: vec![],
                action: AcquireAction::Reuse(net("10.244.7.0/24")),
            }
        );
    }

    #[test]
    fn incompatible_own_lease_is_deleted() {
        let cfg = default_cfg();
        // A /25 from an older SubnetLen, then the network address subnet (below SubnetMin).
        let leases = [
            lease("10.244.7.0/25", OURS),
            lease("10.244.0.0/24", OURS),
            lease("10.244.3.0/24", other(1)),
        ];
        let plan =
            plan_acquire(&cfg, &leases, OURS, Some(net("10.244.9.0/24")), &mut rng()).unwrap();
        assert_eq!(
            plan.delete,
            vec![net("10.244.7.0/25"), net("10.244.0.0/24")]
        );
        assert_eq!(plan.action, AcquireAction::Create(net("10.244.9.0/24")));
    }

    #[test]
    fn first_compatible_own_lease_is_reused_and_incompatible_ones_deleted() {
        let leases = [
            lease("10.245.0.0/24", OURS),
            lease("10.244.4.0/24", OURS),
            lease("10.244.6.0/24", OURS),
            lease("10.244.8.0/26", OURS),
        ];
        let plan = plan_acquire(&default_cfg(), &leases, OURS, None, &mut rng()).unwrap();
        assert_eq!(
            plan.delete,
            vec![net("10.245.0.0/24"), net("10.244.8.0/26")]
        );
        assert_eq!(plan.action, AcquireAction::Reuse(net("10.244.4.0/24")));
    }

    #[test]
    fn previous_subnet_is_reused_when_free() {
        let leases = [lease("10.244.5.0/24", other(1))];
        let plan = plan_acquire(
            &default_cfg(),
            &leases,
            OURS,
            Some(net("10.244.9.0/24")),
            &mut rng(),
        )
        .unwrap();
        assert_eq!(plan.action, AcquireAction::Create(net("10.244.9.0/24")));
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn previous_subnet_is_skipped_when_taken_or_incompatible() {
        let cfg = default_cfg();
        let leases = [
            lease("10.244.9.0/24", other(1)),
            lease("10.244.16.0/20", other(2)),
        ];
        for previous in [
            "10.244.9.0/24",
            "10.244.17.0/24",
            "10.244.0.0/24",
            "10.245.1.0/24",
            "10.244.9.0/25",
        ] {
            let plan = plan_acquire(&cfg, &leases, OURS, Some(net(previous)), &mut rng()).unwrap();
            let AcquireAction::Create(picked) = plan.action else {
                panic!("expected Create, got {plan:?}");
            };
            assert_ne!(picked, net(previous));
            assert!(cfg.contains_subnet(picked));
            assert!(
                !leases.iter().any(|l| l.subnet.contains(&picked)),
                "{picked}"
            );
        }
    }

    #[test]
    fn random_pick_only_among_first_100_free() {
        let cfg = default_cfg();
        // Every third subnet from 10.244.1.0 is taken.
        let leases: Vec<Lease> = (1..=255u8)
            .filter(|i| i % 3 == 0)
            .map(|i| lease(&format!("10.244.{i}.0/24"), other(i)))
            .collect();
        let free = free_subnets(&cfg, &leases);
        assert_eq!(free.len(), MAX_CANDIDATES);
        assert_eq!(free.first(), Some(&net("10.244.1.0/24")));
        assert_eq!(free.get(1), Some(&net("10.244.2.0/24")));
        assert_eq!(free.get(2), Some(&net("10.244.4.0/24")));
        let allowed: BTreeSet<Ipv4Net> = free.iter().copied().collect();

        let mut seen = BTreeSet::new();
        for seed in 0..2000 {
            let plan =
                plan_acquire(&cfg, &leases, OURS, None, &mut StdRng::seed_from_u64(seed)).unwrap();
            let AcquireAction::Create(picked) = plan.action else {
                panic!("expected Create");
            };
            assert!(
                allowed.contains(&picked),
                "{picked} is not among the first 100 free"
            );
            seen.insert(picked);
        }
        // Uniform over 100 candidates: 2000 draws hit (nearly) all of them.
        assert!(seen.len() > 95, "only {} distinct picks", seen.len());
    }

    #[test]
    fn deterministic_for_a_given_rng() {
        let cfg = default_cfg();
        let leases = [lease("10.244.5.0/24", other(1))];
        let a = plan_acquire(&cfg, &leases, OURS, None, &mut StdRng::seed_from_u64(9)).unwrap();
        let b = plan_acquire(&cfg, &leases, OURS, None, &mut StdRng::seed_from_u64(9)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn large_overlapping_leases_are_skipped() {
        let cfg = default_cfg();
        // A hostile /17 covers 10.244.0.0-10.244.127.255.
        let leases = [
            lease("10.244.0.0/17", other(1)),
            lease("10.244.129.0/24", other(2)),
        ];
        let free = free_subnets(&cfg, &leases);
        assert_eq!(free.first(), Some(&net("10.244.128.0/24")));
        assert_eq!(free.get(1), Some(&net("10.244.130.0/24")));
        assert_eq!(free.len(), 100);
    }

    #[test]
    fn excluded_subnets_are_treated_as_taken() {
        let cfg = cfg(
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.11.0"}"#,
        );
        let plan = plan_acquire_excluding(
            &cfg,
            &[],
            OURS,
            Some(net("10.244.10.0/24")),
            &[net("10.244.10.0/24")],
            &mut rng(),
        )
        .unwrap();
        assert_eq!(plan.action, AcquireAction::Create(net("10.244.11.0/24")));
    }

    #[test]
    fn out_of_subnets_names_the_count() {
        let cfg = cfg(
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.19.0"}"#,
        );
        let mut leases: Vec<Lease> = (10..=19u8)
            .map(|i| lease(&format!("10.244.{i}.0/24"), other(i)))
            .collect();
        leases.push(lease("10.244.30.0/24", other(30)));
        let err = plan_acquire(&cfg, &leases, OURS, None, &mut rng()).unwrap_err();
        assert_eq!(
            err,
            AllocError::OutOfSubnets {
                network: net("10.244.0.0/16"),
                subnet_len: 24,
                total: 10,
                taken: 10,
                subnet_min: Ipv4Addr::new(10, 244, 10, 0),
                subnet_max: Ipv4Addr::new(10, 244, 19, 0),
            }
        );
        assert_eq!(
            err.to_string(),
            "out of subnets: all 10 /24 subnets of 10.244.0.0/16 between SubnetMin 10.244.10.0 and SubnetMax 10.244.19.0 are leased; remove stale leases (weft leases list) or widen Network/SubnetLen"
        );
    }

    #[test]
    fn full_default_network() {
        let cfg = default_cfg();
        let leases: Vec<Lease> = (1..=255u8)
            .map(|i| lease(&format!("10.244.{i}.0/24"), other(i)))
            .collect();
        let err = plan_acquire(&cfg, &leases, OURS, None, &mut rng()).unwrap_err();
        assert!(err.to_string().starts_with("out of subnets: all 255 /24 subnets of 10.244.0.0/16 between SubnetMin 10.244.1.0 and SubnetMax 10.244.255.0 are leased"), "{err}");
        // Our own lease frees us from allocation even when the network is full.
        let plan = plan_acquire(&cfg, &leases, other(77), None, &mut rng()).unwrap();
        assert_eq!(plan.action, AcquireAction::Reuse(net("10.244.77.0/24")));
    }

    #[test]
    fn ipv6_only_config_cannot_allocate() {
        let cfg = cfg(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}"#);
        let err = plan_acquire(&cfg, &[], OURS, None, &mut rng()).unwrap_err();
        assert_eq!(err, AllocError::NoIpv4Network);
        assert!(err.to_string().contains("EnableIPv4"));
    }

    #[test]
    fn huge_network_allocates_quickly() {
        let cfg = cfg(r#"{"Network":"0.0.0.0/0","SubnetLen":30}"#);
        let leases = [lease("0.0.0.0/1", other(1))];
        let free = free_subnets(&cfg, &leases);
        assert_eq!(free.first(), Some(&net("128.0.0.0/30")));
        assert_eq!(free.len(), 100);
    }
}
