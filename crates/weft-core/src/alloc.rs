//! Choosing this node's subnet (flannel `tryAcquireLease`/`allocateSubnet`), as a pure plan.
//!
//! The caller lists the leases, asks for a plan, then applies it: delete the listed keys and
//! either re-put the reused lease or create the new one with a "must not exist" transaction.
//! If the create loses a race, the caller re-lists (or passes the lost subnet in `exclude`)
//! and plans again.
//!
//! Where weft differs from flannel: flannel picks at random among the *first 100* free
//! subnets, so nodes that start together draw from the same 100 and collide often (50 nodes
//! drawing from 100 make about 12 colliding pairs when they list at the same moment). weft
//! first tries a subnet derived from the node's public IP ([`preferred_index`]): nodes whose
//! addresses lie in one aligned block (the usual case, a VPC subnet) never share it. If that
//! subnet is taken, weft picks uniformly among *all* free subnets, which spreads concurrent
//! picks over the whole range. flannel's preferences (a lease carrying our IP, then the
//! subnet from subnet.env) still come first.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::NetworkConfig;
use crate::lease::{Lease, LeaseAttrs};
use crate::subnet::{claimed_subnet, claimed_subnet6, parse_subnet_key_dual};

/// The keys under `<prefix>/subnets/` as the allocator needs them.
///
/// Every key that names a subnet keeps that subnet taken, whatever its value: a value weft
/// cannot parse (garbage, another program's format, over the size limit) is still someone's
/// key, and an alias key (`10.244.2.0-024`) still names a subnet that a flanneld node may
/// route. Only canonical keys with a value that parses are leases that can be reused by
/// public IP; the subnets of all the others are only avoided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Canonical keys with a parseable value (only the subnet and public IP are kept).
    pub leases: Vec<Lease>,
    /// Subnets claimed by the other keys (bad value, alias key), never handed out.
    pub claimed: Vec<Ipv4Net>,
    /// The IPv6 subnets those other keys name, never handed out either.
    pub claimed6: Vec<Ipv6Net>,
}

impl Listing {
    /// From `(key tail, value)` pairs; `None` for a value that was not read (over the size
    /// limit).
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Listing {
        let mut out = Listing::default();
        for (tail, value) in keys {
            let lease = parse_subnet_key_dual(tail)
                .ok()
                .and_then(|(subnet, subnet6)| {
                    let attrs = LeaseAttrs::parse(value?).ok()?;
                    Some(Lease {
                        subnet,
                        subnet6,
                        attrs: LeaseAttrs {
                            public_ip: attrs.public_ip,
                            public_ipv6: None,
                            backend_type: None,
                            backend_data: None,
                            backend_v6_data: None,
                        },
                    })
                });
            match lease {
                Some(l) => out.leases.push(l),
                None => {
                    out.claimed.extend(claimed_subnet(tail));
                    out.claimed6.extend(claimed_subnet6(tail));
                }
            }
        }
        out
    }
}

/// What to do to acquire a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquirePlan {
    /// Leases carrying our public IP that the config can no longer use: delete them first.
    pub delete: Vec<Ipv4Net>,
    /// The subnet to take.
    pub action: AcquireAction,
    /// With `EnableIPv6`, the IPv6 subnet that goes with it (the reused lease's, or a new
    /// one); the key is then the dual-stack `<v4>&<v6>` key.
    pub subnet6: Option<Ipv6Net>,
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
    /// Every IPv6 subnet between IPv6SubnetMin and IPv6SubnetMax overlaps an existing lease.
    #[error(
        "out of IPv6 subnets: all {total} /{subnet_len} subnets of IPv6Network {network} between IPv6SubnetMin {subnet_min} and IPv6SubnetMax {subnet_max} are leased; remove stale leases (weft leases list) or widen IPv6Network/IPv6SubnetLen"
    )]
    OutOfIpv6Subnets {
        /// The config's IPv6Network.
        network: Ipv6Net,
        /// The config's IPv6SubnetLen.
        subnet_len: u8,
        /// Number of subnets between IPv6SubnetMin and IPv6SubnetMax.
        total: u128,
        /// The config's IPv6SubnetMin.
        subnet_min: Ipv6Addr,
        /// The config's IPv6SubnetMax.
        subnet_max: Ipv6Addr,
    },
    /// The config has IPv4 disabled or no Network.
    #[error(
        "cannot allocate a subnet: the network config has no IPv4 Network (EnableIPv4 is false or Network is missing); weft allocates IPv4 subnets, so set \"EnableIPv4\": true and \"Network\", e.g. \"10.244.0.0/16\""
    )]
    NoIpv4Network,
    /// `EnableIPv6` without a usable IPv6Network.
    #[error(
        "cannot allocate an IPv6 subnet: EnableIPv6 is true but the network config has no usable IPv6Network; set \"IPv6Network\", e.g. \"fc00::/48\""
    )]
    NoIpv6Network,
}

/// Plans how this node gets its subnet, in flannel's order:
///
/// 1. A lease carrying our `public_ip` that fits the config → [`AcquireAction::Reuse`]. The
///    first such lease (in `leases` order) is reused; every lease with our IP that does not
///    fit the config goes to `delete` (flannel only looks at the first lease with our IP and
///    leaves later ones to expire; weft reuses the first that fits).
/// 2. `previous` (the subnet from subnet.env, masked) if it fits the config and no lease
///    overlaps it → [`AcquireAction::Create`].
/// 3. Otherwise the subnet [`preferred_subnet`] derives from `public_ip`, if free, else one
///    of all the free subnets between SubnetMin and SubnetMax, chosen uniformly with `rng`
///    → [`AcquireAction::Create`]. (flannel chooses among the first 100 free subnets only.)
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

/// [`plan_acquire_excluding`] on a [`Listing`]: the subnets of keys that are not usable
/// leases are taken too, so a key with a garbage value can never make `create` fail again
/// and again on the same candidate.
pub fn plan_acquire_listed(
    cfg: &NetworkConfig,
    listing: &Listing,
    public_ip: Ipv4Addr,
    previous: Option<Ipv4Net>,
    exclude: &[Ipv4Net],
    rng: &mut impl rand::Rng,
) -> Result<AcquirePlan, AllocError> {
    let mut taken = listing.claimed.clone();
    taken.extend_from_slice(exclude);
    plan_acquire_excluding(cfg, &listing.leases, public_ip, previous, &taken, rng)
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
        // flannel's reuse check, with its IPv6 half: with IPv6 on the lease must carry an
        // IPv6 subnet the config can hand out, with IPv6 off it must carry none.
        let v6_fits = match (cfg.enable_ipv6, lease.subnet6) {
            (true, Some(s6)) => cfg.contains_subnet6(s6),
            (false, None) => true,
            _ => false,
        };
        if cfg.contains_subnet(lease.subnet) && v6_fits {
            reuse = reuse.or(Some((lease.subnet, lease.subnet6)));
        } else if !delete.contains(&lease.subnet) {
            delete.push(lease.subnet);
        }
    }
    if let Some((subnet, subnet6)) = reuse {
        return Ok(AcquirePlan {
            delete,
            action: AcquireAction::Reuse(subnet),
            subnet6,
        });
    }

    let taken = Taken::new(
        leases
            .iter()
            .map(|lease| lease.subnet)
            .chain(exclude.iter().copied())
            .map(range),
    );

    if let Some(previous) = previous.map(|net| net.trunc())
        && cfg.contains_subnet(previous)
        && !taken.overlaps(range(previous))
    {
        return Ok(AcquirePlan {
            delete,
            action: AcquireAction::Create(previous),
            subnet6: None,
        });
    }

    let free = FreeSubnets::new(space_v4(cfg), &taken);
    if free.count() == 0 {
        let size = u128::from(cfg.subnet_size());
        let start = u128::from(u32::from(cfg.subnet_min));
        let end = u128::from(u32::from(cfg.subnet_max)) + size - 1;
        return Err(AllocError::OutOfSubnets {
            network,
            subnet_len: cfg.subnet_len,
            total: cfg.subnet_count(),
            taken: taken.count_overlapping((start, end)),
            subnet_min: cfg.subnet_min,
            subnet_max: cfg.subnet_max,
        });
    }
    let index = free.pick(public_ip, rng);
    let subnet = subnet_at(cfg, index as u64).ok_or(AllocError::NoIpv4Network)?;
    Ok(AcquirePlan {
        delete,
        action: AcquireAction::Create(subnet),
        subnet6: None,
    })
}

/// [`plan_acquire_listed`] for a dual-stack config: the IPv4 plan as flannel makes it, and
/// with `EnableIPv6` its IPv6 half. A reused lease keeps its IPv6 subnet; a new lease gets
/// the previous IPv6 subnet from subnet.env (`previous6`) when it fits the config and is
/// free, else the IPv6 subnet [`preferred_index`] derives from `public_ip` when free, else a
/// free one chosen uniformly (flannel runs its own first-100 list for IPv6, independently
/// of IPv4, as here). flannel's etcd mode always allocates IPv4, so IPv6 comes only with it.
pub fn plan_acquire_dual(
    cfg: &NetworkConfig,
    listing: &Listing,
    public_ip: Ipv4Addr,
    previous: (Option<Ipv4Net>, Option<Ipv6Net>),
    exclude: &[Ipv4Net],
    rng: &mut impl rand::Rng,
) -> Result<AcquirePlan, AllocError> {
    let mut plan = plan_acquire_listed(cfg, listing, public_ip, previous.0, exclude, rng)?;
    if !cfg.enable_ipv6 || matches!(plan.action, AcquireAction::Reuse(_)) {
        return Ok(plan);
    }
    let taken6 = listing
        .leases
        .iter()
        .filter_map(|l| l.subnet6)
        .chain(listing.claimed6.iter().copied());
    plan.subnet6 = Some(plan_ipv6_subnet(cfg, taken6, previous.1, public_ip, rng)?);
    Ok(plan)
}

/// A free IPv6 subnet for a new lease: `previous6` if it fits and is free, else the one
/// derived from `public_ip` if free, else a uniformly chosen free one.
pub fn plan_ipv6_subnet(
    cfg: &NetworkConfig,
    taken6: impl Iterator<Item = Ipv6Net>,
    previous6: Option<Ipv6Net>,
    public_ip: Ipv4Addr,
    rng: &mut impl rand::Rng,
) -> Result<Ipv6Net, AllocError> {
    let (Some(network), Some(min), Some(max)) =
        (cfg.ipv6_network, cfg.ipv6_subnet_min, cfg.ipv6_subnet_max)
    else {
        return Err(AllocError::NoIpv6Network);
    };
    let len = cfg.ipv6_subnet_len;
    let taken = Taken::new(taken6.map(range6));
    if let Some(previous) = previous6.map(|net| net.trunc())
        && cfg.contains_subnet6(previous)
        && !taken.overlaps(range6(previous))
    {
        return Ok(previous);
    }
    let size = 1u128
        .checked_shl(128 - u32::from(len))
        .ok_or(AllocError::NoIpv6Network)?;
    let (lo, hi) = (u128::from(min), u128::from(max));
    let total = if hi < lo { 0 } else { (hi - lo) / size + 1 };
    let free = FreeSubnets::new(
        Space {
            min: lo,
            size,
            total,
        },
        &taken,
    );
    if free.count() == 0 {
        return Err(AllocError::OutOfIpv6Subnets {
            network,
            subnet_len: len,
            total,
            subnet_min: min,
            subnet_max: max,
        });
    }
    let index = free.pick(public_ip, rng);
    Ipv6Net::new(Ipv6Addr::from(lo + index * size), len).map_err(|_| AllocError::NoIpv6Network)
}

/// The subnet a node with `public_ip` tries first when it has no lease and no usable
/// subnet.env (if it is free): see [`preferred_index`]. None when the config allocates no
/// IPv4 subnets.
pub fn preferred_subnet(cfg: &NetworkConfig, public_ip: Ipv4Addr) -> Option<Ipv4Net> {
    let total = cfg.subnet_count();
    if total == 0 {
        return None;
    }
    subnet_at(cfg, preferred_index(public_ip, total))
}

/// Index (0 = SubnetMin) of the subnet a node with `public_ip` tries first, out of `total`
/// (≥ 1): the IP's offset inside its aligned block of 2^k addresses, 2^k being the largest
/// power of two ≤ `total`, plus a fixed hash of the block, modulo `total`.
///
/// So nodes whose IPs lie in one such block (for 255 subnets, a /25 of node addresses)
/// always get distinct first choices, and nodes in different blocks share one only by
/// chance, as uniformly random picks would. The mapping is fixed (it never changes between
/// versions or runs), so a node that lost both its lease and subnet.env tries the same
/// subnet again.
pub fn preferred_index(public_ip: Ipv4Addr, total: u64) -> u64 {
    if total <= 1 {
        return 0;
    }
    let bits = (63 - total.leading_zeros()).min(32);
    let ip = u64::from(u32::from(public_ip));
    let mask = (1u64 << bits) - 1;
    let (offset, block) = (ip & mask, ip >> bits);
    (offset + mix(block) % total) % total
}

/// splitmix64's finaliser: a fixed, well-spread 64-bit hash (std's hashers may change).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The subnet at `index` (0 = SubnetMin), without range checks beyond the address space.
fn subnet_at(cfg: &NetworkConfig, index: u64) -> Option<Ipv4Net> {
    let min = u64::from(u32::from(cfg.subnet_min));
    let addr = u32::try_from(min + index * cfg.subnet_size()).ok()?;
    Ipv4Net::new(Ipv4Addr::from(addr), cfg.subnet_len).ok()
}

/// The candidate subnets of one family: `total` subnets of `size` addresses from `min`.
#[derive(Debug, Clone, Copy)]
struct Space {
    min: u128,
    size: u128,
    total: u128,
}

/// The IPv4 candidates of `cfg`, SubnetMin..=SubnetMax.
fn space_v4(cfg: &NetworkConfig) -> Space {
    Space {
        min: u128::from(u32::from(cfg.subnet_min)),
        size: u128::from(cfg.subnet_size()),
        total: u128::from(cfg.subnet_count()),
    }
}

/// The free subnets of a [`Space`] as index intervals, without listing them (a /0 network
/// with /30 subnets has 2^30 candidates, an IPv6 /48 with /64 subnets 2^16, a /0 2^64).
struct FreeSubnets {
    space: Space,
    /// Sorted, disjoint, inclusive index intervals of candidates overlapping a taken range.
    blocked: Vec<(u128, u128)>,
}

impl FreeSubnets {
    fn new(space: Space, taken: &Taken) -> FreeSubnets {
        let Space { min, size, total } = space;
        let mut blocked: Vec<(u128, u128)> = Vec::new();
        if total > 0 && size > 0 {
            let last = min + (total * size - 1);
            for &(start, end) in &taken.ranges {
                if end < min || start > last {
                    continue;
                }
                // Candidate i covers [min + i·size, min + (i+1)·size − 1].
                let lo = start.saturating_sub(min) / size;
                let hi = ((end - min) / size).min(total - 1);
                match blocked.last_mut() {
                    Some((_, prev_hi)) if lo <= *prev_hi + 1 => *prev_hi = (*prev_hi).max(hi),
                    _ => blocked.push((lo, hi)),
                }
            }
        }
        FreeSubnets { space, blocked }
    }

    fn count(&self) -> u128 {
        self.space.total
            - self
                .blocked
                .iter()
                .map(|(lo, hi)| hi - lo + 1)
                .sum::<u128>()
    }

    fn is_free(&self, index: u128) -> bool {
        index < self.space.total
            && !self
                .blocked
                .iter()
                .any(|(lo, hi)| *lo <= index && index <= *hi)
    }

    /// Index of the `n`-th free candidate (0-based, ascending); `n` < [`Self::count`].
    fn nth(&self, mut n: u128) -> u128 {
        let mut next = 0;
        for &(lo, hi) in &self.blocked {
            let gap = lo - next;
            if n < gap {
                return next + n;
            }
            n -= gap;
            next = hi + 1;
        }
        next + n
    }

    /// The candidate for a node with `public_ip` ([`preferred_index`]) if it is free, else
    /// one of the free candidates, uniformly. Needs [`Self::count`] > 0.
    fn pick(&self, public_ip: Ipv4Addr, rng: &mut impl rand::Rng) -> u128 {
        let total = u64::try_from(self.space.total).unwrap_or(u64::MAX);
        let preferred = u128::from(preferred_index(public_ip, total));
        if self.is_free(preferred) {
            preferred
        } else {
            self.nth(rng.random_range(0..self.count()))
        }
    }

    /// Every free candidate index in ascending order (tests only: may be huge).
    #[cfg(test)]
    fn all(&self) -> Vec<u128> {
        (0..self.count()).map(|n| self.nth(n)).collect()
    }
}

/// Address range of a subnet as inclusive bounds.
fn range(net: Ipv4Net) -> (u128, u128) {
    (
        u128::from(u32::from(net.network())),
        u128::from(u32::from(net.broadcast())),
    )
}

/// Address range of an IPv6 subnet as inclusive bounds.
fn range6(net: Ipv6Net) -> (u128, u128) {
    (u128::from(net.network()), u128::from(net.broadcast()))
}

/// Taken address ranges: sorted, merged, plus the original subnets for counting.
struct Taken {
    ranges: Vec<(u128, u128)>,
    subnets: Vec<(u128, u128)>,
}

impl Taken {
    fn new(subnets: impl Iterator<Item = (u128, u128)>) -> Taken {
        let subnets: Vec<(u128, u128)> = subnets.collect();
        let mut sorted = subnets.clone();
        sorted.sort_unstable();
        let mut ranges: Vec<(u128, u128)> = Vec::with_capacity(sorted.len());
        for (start, end) in sorted {
            match ranges.last_mut() {
                Some((_, last_end)) if start <= *last_end + 1 => *last_end = (*last_end).max(end),
                _ => ranges.push((start, end)),
            }
        }
        Taken { ranges, subnets }
    }

    fn overlaps(&self, (start, end): (u128, u128)) -> bool {
        self.ranges.iter().any(|(s, e)| *s <= end && start <= *e)
    }

    fn count_overlapping(&self, (start, end): (u128, u128)) -> u64 {
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
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
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
            subnet6: None,
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

    /// The plan of the node at `OURS` under the default config, with the seeded rng.
    fn our_plan(leases: &[Lease], previous: Option<&str>) -> AcquirePlan {
        plan_acquire(&default_cfg(), leases, OURS, previous.map(net), &mut rng()).unwrap()
    }

    #[test]
    fn reuses_the_lease_carrying_our_ip() {
        let leases = [
            lease("10.244.5.0/24", other(1)),
            lease("10.244.7.0/24", OURS),
        ];
        assert_eq!(
            our_plan(&leases, Some("10.244.9.0/24")),
            AcquirePlan {
                subnet6: None,
                delete: vec![],
                action: AcquireAction::Reuse(net("10.244.7.0/24")),
            }
        );
    }

    #[test]
    fn incompatible_own_lease_is_deleted() {
        // A /25 from an older SubnetLen, then the network address subnet (below SubnetMin).
        let leases = [
            lease("10.244.7.0/25", OURS),
            lease("10.244.0.0/24", OURS),
            lease("10.244.3.0/24", other(1)),
        ];
        assert_eq!(
            our_plan(&leases, Some("10.244.9.0/24")),
            AcquirePlan {
                subnet6: None,
                delete: vec![net("10.244.7.0/25"), net("10.244.0.0/24")],
                action: AcquireAction::Create(net("10.244.9.0/24")),
            }
        );
    }

    #[test]
    fn first_compatible_own_lease_is_reused_and_incompatible_ones_deleted() {
        let leases = [
            lease("10.245.0.0/24", OURS),
            lease("10.244.4.0/24", OURS),
            lease("10.244.6.0/24", OURS),
            lease("10.244.8.0/26", OURS),
        ];
        assert_eq!(
            our_plan(&leases, None),
            AcquirePlan {
                subnet6: None,
                delete: vec![net("10.245.0.0/24"), net("10.244.8.0/26")],
                action: AcquireAction::Reuse(net("10.244.4.0/24")),
            }
        );
    }

    #[test]
    fn previous_subnet_is_reused_when_free() {
        let leases = [lease("10.244.5.0/24", other(1))];
        assert_eq!(
            our_plan(&leases, Some("10.244.9.0/24")),
            AcquirePlan {
                subnet6: None,
                delete: vec![],
                action: AcquireAction::Create(net("10.244.9.0/24")),
            }
        );
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

    fn free_of(cfg: &NetworkConfig, leases: &[Lease]) -> Vec<Ipv4Net> {
        FreeSubnets::new(
            space_v4(cfg),
            &Taken::new(leases.iter().map(|l| range(l.subnet))),
        )
        .all()
        .into_iter()
        .filter_map(|i| subnet_at(cfg, i as u64))
        .collect()
    }

    fn picked(plan: AcquirePlan) -> Ipv4Net {
        match plan.action {
            AcquireAction::Create(net) => net,
            other => panic!("expected Create, got {other:?}"),
        }
    }

    #[test]
    fn preferred_subnet_is_taken_when_free_whatever_the_rng() {
        let cfg = default_cfg();
        let leases = [lease("10.244.5.0/24", other(1))];
        let want = preferred_subnet(&cfg, OURS).unwrap();
        assert!(cfg.contains_subnet(want));
        for seed in 0..50 {
            let plan =
                plan_acquire(&cfg, &leases, OURS, None, &mut StdRng::seed_from_u64(seed)).unwrap();
            assert_eq!(picked(plan), want);
        }
    }

    #[test]
    fn preferred_mapping_is_fixed() {
        // A node that lost its lease and subnet.env tries the same subnet again, in every
        // version: changing this mapping changes where restarted nodes land.
        let cfg = default_cfg();
        let got: Vec<String> = [
            Ipv4Addr::new(10, 250, 1, 1),
            Ipv4Addr::new(10, 250, 1, 2),
            Ipv4Addr::new(10, 250, 1, 200),
            Ipv4Addr::new(192, 168, 1, 11),
        ]
        .iter()
        .map(|ip| preferred_subnet(&cfg, *ip).unwrap().to_string())
        .collect();
        assert_eq!(got, PREFERRED_GOLDEN);
    }

    const PREFERRED_GOLDEN: [&str; 4] = [
        "10.244.160.0/24",
        "10.244.161.0/24",
        "10.244.74.0/24",
        "10.244.104.0/24",
    ];

    #[test]
    fn first_choices_are_distinct_within_an_aligned_block() {
        // 255 subnets → blocks of 128 node addresses. The testbed's nodes (10.250.1.1 ...)
        // and any /25 of node addresses get pairwise distinct first choices.
        let cfg = default_cfg();
        for base in [
            Ipv4Addr::new(10, 250, 1, 0),
            Ipv4Addr::new(10, 0, 7, 128),
            Ipv4Addr::new(172, 31, 200, 0),
        ] {
            let firsts: BTreeSet<Ipv4Net> = (0..128u32)
                .map(|i| {
                    let ip = Ipv4Addr::from(u32::from(base) + i);
                    picked(plan_acquire(&cfg, &[], ip, None, &mut rng()).unwrap())
                })
                .collect();
            assert_eq!(firsts.len(), 128, "block {base}");
        }
        // Same property for other sizes: /20 subnets of a /16 (15 subnets → blocks of 8).
        let small = NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","SubnetLen":20}"#).unwrap();
        let firsts: BTreeSet<Ipv4Net> = (0..8u32)
            .map(|i| {
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 2, 8)) + i);
                picked(plan_acquire(&small, &[], ip, None, &mut rng()).unwrap())
            })
            .collect();
        assert_eq!(firsts.len(), 8);
    }

    /// Pairs of nodes (out of 50 with random addresses in a /16) whose first choices are the
    /// same subnet, averaged over many clusters.
    fn mean_colliding_pairs(choose: impl Fn(Ipv4Addr, &mut StdRng) -> Ipv4Net) -> f64 {
        let mut gen_rng = StdRng::seed_from_u64(7);
        let clusters = 400;
        let mut pairs = 0usize;
        for _ in 0..clusters {
            let mut count = std::collections::BTreeMap::<Ipv4Net, usize>::new();
            for _ in 0..50 {
                let ip = Ipv4Addr::new(10, 0, gen_rng.random(), gen_rng.random());
                *count.entry(choose(ip, &mut gen_rng)).or_default() += 1;
            }
            pairs += count.values().map(|c| c * (c - 1) / 2).sum::<usize>();
        }
        pairs as f64 / clusters as f64
    }

    #[test]
    fn first_choices_of_scattered_nodes_spread_over_the_whole_range() {
        let cfg = default_cfg();
        let weft =
            mean_colliding_pairs(|ip, r| picked(plan_acquire(&cfg, &[], ip, None, r).unwrap()));
        // flannel's choice: uniform among the first 100 free subnets.
        let flannel = mean_colliding_pairs(|_, r| subnet_at(&cfg, r.random_range(0..100)).unwrap());
        eprintln!(
            "colliding pairs of first choices per 50 nodes: weft {weft:.2}, flannel {flannel:.2}"
        );
        // Uniform over 255 subnets: C(50,2)/255 = 4.8 pairs; over 100: 12.25.
        assert!(weft < 6.5, "weft: {weft:.2} colliding pairs per 50 nodes");
        assert!(flannel > 10.0, "flannel: {flannel:.2}");
    }

    #[test]
    fn taken_preferred_subnet_falls_back_uniformly_to_all_free() {
        let cfg = default_cfg();
        // Every third subnet from 10.244.1.0 is taken, and so is our preferred one.
        let preferred = preferred_subnet(&cfg, OURS).unwrap();
        let mut leases: Vec<Lease> = (1..=255u8)
            .filter(|i| i % 3 == 0)
            .map(|i| lease(&format!("10.244.{i}.0/24"), other(i)))
            .collect();
        if !leases.iter().any(|l| l.subnet == preferred) {
            leases.push(lease(&preferred.to_string(), other(0)));
        }
        let free: BTreeSet<Ipv4Net> = free_of(&cfg, &leases).into_iter().collect();
        assert!(free.len() >= 160, "{}", free.len());
        assert!(!free.contains(&preferred));
        let mut seen = BTreeSet::new();
        for seed in 0..2000 {
            let got = picked(
                plan_acquire(&cfg, &leases, OURS, None, &mut StdRng::seed_from_u64(seed)).unwrap(),
            );
            assert!(free.contains(&got), "{got} is not free");
            seen.insert(got);
        }
        // Uniform over all free subnets (not only the lowest 100): 2000 draws hit every one.
        assert_eq!(seen, free);
    }

    #[test]
    fn preferred_index_stays_in_range() {
        let mut r = rng();
        for total in (1..=600u64).chain([1 << 20, (1 << 30) + 3, u64::from(u32::MAX)]) {
            for _ in 0..50 {
                let ip = Ipv4Addr::from(r.random::<u32>());
                assert!(preferred_index(ip, total) < total, "{ip} {total}");
            }
        }
        assert_eq!(preferred_index(OURS, 1), 0);
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
        let free = free_of(&cfg, &leases);
        assert_eq!(free.first(), Some(&net("10.244.128.0/24")));
        assert_eq!(free.get(1), Some(&net("10.244.130.0/24")));
        // 255 candidates from 10.244.1.0, 127 under the /17, one more taken.
        assert_eq!(free.len(), 127);
        for seed in 0..200 {
            let got = picked(
                plan_acquire(&cfg, &leases, OURS, None, &mut StdRng::seed_from_u64(seed)).unwrap(),
            );
            assert!(free.contains(&got), "{got}");
        }
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

    fn vxlan_json(ip: Ipv4Addr) -> Vec<u8> {
        LeaseAttrs::vxlan(ip, 1, MacAddr([2, 0, 0, 0, 0, 1]))
            .to_json()
            .into_bytes()
    }

    #[test]
    fn keys_with_garbage_values_are_taken() {
        // A small range, 10 subnets; our preferred one and 8 others hold garbage.
        let cfg = cfg(
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.19.0"}"#,
        );
        let preferred = preferred_subnet(&cfg, OURS).unwrap();
        let garbage: Vec<String> = (10..=19u8)
            .map(|i| format!("10.244.{i}.0-24"))
            .filter(|k| parse_subnet_key_dual(k).map(|(n, _)| n).unwrap() != net("10.244.13.0/24"))
            .collect();
        let values: Vec<&[u8]> = vec![
            b"{not json",
            b"",
            b"\xff\xfe",
            b"null",
            b"[]",
            br#"{"PublicIP":"x"}"#,
        ];
        let keys = garbage
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), Some(values[i % values.len()])));
        let listing = Listing::from_keys(keys);
        assert!(listing.leases.is_empty());
        assert_eq!(listing.claimed.len(), 9);
        assert!(listing.claimed.contains(&preferred), "{preferred}");
        for seed in 0..100 {
            let plan = plan_acquire_listed(
                &cfg,
                &listing,
                OURS,
                Some(net("10.244.11.0/24")),
                &[],
                &mut StdRng::seed_from_u64(seed),
            )
            .unwrap();
            assert_eq!(plan.action, AcquireAction::Create(net("10.244.13.0/24")));
        }
        // Over the size limit (value not read) is the same.
        let listing = Listing::from_keys([("10.244.13.0-24", None)]);
        assert_eq!(listing.claimed, vec![net("10.244.13.0/24")]);
        // All ten claimed: out of subnets, not an endless create loop.
        let all: Vec<String> = (10..=19u8).map(|i| format!("10.244.{i}.0-24")).collect();
        let listing = Listing::from_keys(all.iter().map(|k| (k.as_str(), Some(&b"x"[..]))));
        let err = plan_acquire_listed(&cfg, &listing, OURS, None, &[], &mut rng()).unwrap_err();
        assert!(
            matches!(err, AllocError::OutOfSubnets { taken: 10, .. }),
            "{err}"
        );
    }

    #[test]
    fn alias_keys_claim_their_subnet_but_are_never_reused() {
        let cfg = cfg(
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.11.0"}"#,
        );
        // An alias key carrying our IP: not a lease of ours to reuse (writing to it would
        // keep the alias), but its subnet is avoided.
        let ours = vxlan_json(OURS);
        let listing = Listing::from_keys([
            ("10.244.10.0-024", Some(ours.as_slice())),
            ("junk", Some(ours.as_slice())),
        ]);
        assert!(listing.leases.is_empty());
        assert_eq!(listing.claimed, vec![net("10.244.10.0/24")]);
        let plan = plan_acquire_listed(
            &cfg,
            &listing,
            OURS,
            Some(net("10.244.10.0/24")),
            &[],
            &mut rng(),
        )
        .unwrap();
        assert_eq!(plan.action, AcquireAction::Create(net("10.244.11.0/24")));
        // The canonical key with our IP is reused as before.
        let listing = Listing::from_keys([
            ("10.244.10.0-024", Some(vxlan_json(other(1)).as_slice())),
            ("10.244.11.0-24", Some(ours.as_slice())),
        ]);
        let plan = plan_acquire_listed(&cfg, &listing, OURS, None, &[], &mut rng()).unwrap();
        assert_eq!(plan.action, AcquireAction::Reuse(net("10.244.11.0/24")));
    }

    #[test]
    fn huge_network_allocates_quickly() {
        let cfg = cfg(r#"{"Network":"0.0.0.0/0","SubnetLen":30}"#);
        let leases = [lease("0.0.0.0/1", other(1))];
        let free = FreeSubnets::new(
            space_v4(&cfg),
            &Taken::new(leases.iter().map(|l| range(l.subnet))),
        );
        assert_eq!(
            subnet_at(&cfg, free.nth(0) as u64),
            Some(net("128.0.0.0/30"))
        );
        assert_eq!(free.count(), 1 << 29);
        for seed in 0..100 {
            let got = picked(
                plan_acquire(
                    &cfg,
                    &leases,
                    other(2),
                    None,
                    &mut StdRng::seed_from_u64(seed),
                )
                .unwrap(),
            );
            assert!(got.addr() >= Ipv4Addr::new(128, 0, 0, 0), "{got}");
        }
    }

    fn dual_cfg() -> NetworkConfig {
        cfg(
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#,
        )
    }

    fn dual_listing(keys: &[(&str, Ipv4Addr)]) -> Listing {
        let values: Vec<String> = keys
            .iter()
            .map(|(_, ip)| LeaseAttrs::vxlan(*ip, 1, MacAddr([2, 0, 0, 0, 0, 1])).to_json())
            .collect();
        Listing::from_keys(
            keys.iter()
                .zip(&values)
                .map(|((k, _), v)| (*k, Some(v.as_bytes()))),
        )
    }

    /// Our node's dual-stack plan with `previous` from subnet.env and an rng seeded `seed`.
    fn dual_plan(
        cfg: &NetworkConfig,
        listing: &Listing,
        previous: (Option<Ipv4Net>, Option<Ipv6Net>),
        seed: u64,
    ) -> Result<AcquirePlan, AllocError> {
        plan_acquire_dual(
            cfg,
            listing,
            OURS,
            previous,
            &[],
            &mut StdRng::seed_from_u64(seed),
        )
    }

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn a_dual_stack_node_gets_both_subnets_and_flannels_dual_key() {
        let cfg = dual_cfg();
        let listing = dual_listing(&[("10.244.1.0-24&fc00:0:0:1::-64", other(1))]);
        assert_eq!(listing.leases[0].subnet6, Some(net6("fc00:0:0:1::/64")));
        for seed in 0..50 {
            let plan = dual_plan(&cfg, &listing, (None, None), seed).unwrap();
            let v4 = picked(plan.clone());
            let v6 = plan.subnet6.unwrap();
            assert_ne!(v4, net("10.244.1.0/24"));
            assert_ne!(
                v6,
                net6("fc00:0:0:1::/64"),
                "a taken IPv6 subnet is never handed out"
            );
            assert_eq!(v6.prefix_len(), 64);
            assert!(cfg.contains_subnet6(v6), "{v6}");
            let lease = Lease {
                subnet: v4,
                subnet6: Some(v6),
                attrs: LeaseAttrs::host_gw(OURS),
            };
            assert!(lease.key().contains('&'));
            assert_eq!(
                crate::subnet::parse_subnet_key_dual(&lease.key()).unwrap(),
                (v4, Some(v6))
            );
        }
        // The same node asks again: the same IPv6 subnet (derived from its IP), not random.
        let a = dual_plan(&cfg, &listing, (None, None), 1);
        let b = dual_plan(&cfg, &listing, (None, None), 2);
        assert_eq!(a.unwrap().subnet6, b.unwrap().subnet6);
    }

    #[test]
    fn a_dual_lease_with_our_ip_is_reused_whole_and_a_v4_only_one_is_replaced() {
        let cfg = dual_cfg();
        let listing = dual_listing(&[("10.244.7.0-24&fc00:0:0:7::-64", OURS)]);
        let plan = dual_plan(&cfg, &listing, (None, None), 0).unwrap();
        assert_eq!(plan.action, AcquireAction::Reuse(net("10.244.7.0/24")));
        assert_eq!(plan.subnet6, Some(net6("fc00:0:0:7::/64")));
        assert!(plan.delete.is_empty());

        // Our IPv4-only lease from before IPv6 was turned on: deleted, a dual one created
        // (flannel's reuse check asks for a v6 subnet when IPv6 is on).
        let listing = dual_listing(&[("10.244.7.0-24", OURS)]);
        let plan = dual_plan(&cfg, &listing, (None, None), 0).unwrap();
        assert_eq!(plan.delete, vec![net("10.244.7.0/24")]);
        assert!(matches!(plan.action, AcquireAction::Create(_)));
        assert!(plan.subnet6.is_some());

        // And the other way: IPv6 turned off, our dual lease is not reused.
        let v4_only = default_cfg();
        let listing = dual_listing(&[("10.244.7.0-24&fc00:0:0:7::-64", OURS)]);
        let plan = dual_plan(&v4_only, &listing, (None, None), 0).unwrap();
        assert_eq!(plan.delete, vec![net("10.244.7.0/24")]);
        assert_eq!(plan.subnet6, None);
    }

    #[test]
    fn the_previous_ipv6_subnet_is_taken_back_when_free_and_fitting() {
        let cfg = dual_cfg();
        let listing = dual_listing(&[("10.244.1.0-24&fc00:0:0:1::-64", other(1))]);
        let prev = (Some(net("10.244.9.0/24")), Some(net6("fc00:0:0:9::1/64")));
        let plan = dual_plan(&cfg, &listing, prev, 0).unwrap();
        assert_eq!(plan.action, AcquireAction::Create(net("10.244.9.0/24")));
        assert_eq!(plan.subnet6, Some(net6("fc00:0:0:9::/64")));
        // Taken by another node, or outside IPv6Network: not taken back.
        for bad in ["fc00:0:0:1::/64", "fd00:0:0:9::/64", "fc00:0:0:9::/80"] {
            let prev = (None, Some(net6(bad)));
            let plan = dual_plan(&cfg, &listing, prev, 0).unwrap();
            assert_ne!(plan.subnet6, Some(net6(bad).trunc()), "{bad}");
        }
    }

    #[test]
    fn a_garbage_dual_key_still_keeps_its_ipv6_subnet_and_a_full_v6_range_is_an_error() {
        // /124 IPv6Network with /126 subnets: 4 candidates, min..max = the 2nd to the last.
        let cfg = cfg(
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/124","Backend":{"Type":"vxlan"}}"#,
        );
        let all: Vec<Ipv6Net> = (0..4u128)
            .map(|i| {
                Ipv6Net::new(
                    Ipv6Addr::from(u128::from(net6("fc00::/124").network()) + i * 4),
                    126,
                )
                .unwrap()
            })
            .filter(|n| cfg.contains_subnet6(*n))
            .collect();
        assert!(!all.is_empty());
        let mut keys: Vec<(String, Vec<u8>)> = all
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    format!("10.244.{}.0-24&{}-126", i + 1, n.addr()),
                    b"not json".to_vec(),
                )
            })
            .collect();
        let listing =
            Listing::from_keys(keys.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice()))));
        assert_eq!(listing.claimed6, all);
        let err = dual_plan(&cfg, &listing, (None, None), 0).unwrap_err();
        assert!(matches!(err, AllocError::OutOfIpv6Subnets { .. }), "{err}");
        assert!(err.to_string().contains("IPv6SubnetLen"), "{err}");
        // One freed: exactly that one is handed out.
        keys.pop();
        let listing =
            Listing::from_keys(keys.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice()))));
        let plan = dual_plan(&cfg, &listing, (None, None), 0).unwrap();
        assert_eq!(plan.subnet6, all.last().copied());
    }
}
