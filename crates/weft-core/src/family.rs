//! The address family a data plane, a peer or a rule is for: IPv4 or IPv6.
//!
//! flannel keeps the families apart (`flannel.<VNI>` and `flannel-v6.<VNI>`, `iptables` and
//! `ip6tables`, tables `ip flannel-ipv4` and `ip6 flannel-ipv6`), and so does weft: the peers,
//! the data plane model and its diff are generic over the network type ([`Ipv4Net`] or
//! [`Ipv6Net`]), with IPv4 as the default so that `Peer` means an IPv4 peer.

use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address family, for what is kept per family (the iptables binaries, the nftables table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Family {
    /// IPv4 (`iptables`, `ip flannel-ipv4`).
    #[default]
    V4,
    /// IPv6 (`ip6tables`, `ip6 flannel-ipv6`).
    V6,
}

impl Family {
    /// The family of the network type `N`.
    pub fn of<N: PodNet>() -> Family {
        if N::V6 { Family::V6 } else { Family::V4 }
    }

    /// `"IPv4"` or `"IPv6"`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => <Ipv4Net as PodNet>::NAME,
            Family::V6 => <Ipv6Net as PodNet>::NAME,
        }
    }
}

impl Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A network type of one family ([`Ipv4Net`] or [`Ipv6Net`]) and its address type.
pub trait PodNet:
    Copy + Eq + Ord + Hash + Debug + Display + FromStr + Default + Send + Sync + Into<IpNet> + 'static
{
    /// The family's address type.
    type Addr: Copy
        + Eq
        + Ord
        + Hash
        + Debug
        + Display
        + FromStr
        + Send
        + Sync
        + Into<IpAddr>
        + 'static;

    /// The lowest address (`0.0.0.0`, `::`).
    const ADDR_MIN: Self::Addr;
    /// The highest address (`255.255.255.255`, `ffff:…:ffff`).
    const ADDR_MAX: Self::Addr;
    /// The longest prefix (32, 128).
    const MAX_PREFIX: u8;
    /// `"IPv4"` or `"IPv6"`, for messages.
    const NAME: &'static str;
    /// Whether this is IPv6.
    const V6: bool;

    /// The network with `prefix` bits of `addr`, if the prefix fits the family.
    fn with_prefix(addr: Self::Addr, prefix: u8) -> Option<Self>;
    /// The address as written (host bits kept).
    fn addr(&self) -> Self::Addr;
    /// The network address (host bits cleared).
    fn network(&self) -> Self::Addr;
    /// The prefix length.
    fn prefix_len(&self) -> u8;
    /// The same network with the host bits cleared.
    fn trunc(&self) -> Self;
    /// Whether `addr` lies inside.
    fn contains_addr(&self, addr: &Self::Addr) -> bool;
    /// Whether `other` lies inside (or is the same network).
    fn contains_net(&self, other: &Self) -> bool;
    /// The address of this family in `ip`, if it is one.
    fn addr_of(ip: IpAddr) -> Option<Self::Addr>;
}

impl PodNet for Ipv4Net {
    type Addr = Ipv4Addr;
    const ADDR_MIN: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
    const ADDR_MAX: Ipv4Addr = Ipv4Addr::BROADCAST;
    const MAX_PREFIX: u8 = 32;
    const NAME: &'static str = "IPv4";
    const V6: bool = false;

    fn with_prefix(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Net> {
        Ipv4Net::new(addr, prefix).ok()
    }
    fn addr(&self) -> Ipv4Addr {
        Ipv4Net::addr(self)
    }
    fn network(&self) -> Ipv4Addr {
        Ipv4Net::network(self)
    }
    fn prefix_len(&self) -> u8 {
        Ipv4Net::prefix_len(self)
    }
    fn trunc(&self) -> Ipv4Net {
        Ipv4Net::trunc(self)
    }
    fn contains_addr(&self, addr: &Ipv4Addr) -> bool {
        self.contains(addr)
    }
    fn contains_net(&self, other: &Ipv4Net) -> bool {
        self.contains(other)
    }
    fn addr_of(ip: IpAddr) -> Option<Ipv4Addr> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
}

impl PodNet for Ipv6Net {
    type Addr = Ipv6Addr;
    const ADDR_MIN: Ipv6Addr = Ipv6Addr::UNSPECIFIED;
    const ADDR_MAX: Ipv6Addr = Ipv6Addr::new(
        0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
    );
    const MAX_PREFIX: u8 = 128;
    const NAME: &'static str = "IPv6";
    const V6: bool = true;

    fn with_prefix(addr: Ipv6Addr, prefix: u8) -> Option<Ipv6Net> {
        Ipv6Net::new(addr, prefix).ok()
    }
    fn addr(&self) -> Ipv6Addr {
        Ipv6Net::addr(self)
    }
    fn network(&self) -> Ipv6Addr {
        Ipv6Net::network(self)
    }
    fn prefix_len(&self) -> u8 {
        Ipv6Net::prefix_len(self)
    }
    fn trunc(&self) -> Ipv6Net {
        Ipv6Net::trunc(self)
    }
    fn contains_addr(&self, addr: &Ipv6Addr) -> bool {
        self.contains(addr)
    }
    fn contains_net(&self, other: &Ipv6Net) -> bool {
        self.contains(other)
    }
    fn addr_of(ip: IpAddr) -> Option<Ipv6Addr> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic_facts<N: PodNet>(net: &str, inside: &str, outside: &str, network: &str) {
        let n: N = net.parse().ok().unwrap();
        let i: N::Addr = inside.parse().ok().unwrap();
        let o: N::Addr = outside.parse().ok().unwrap();
        assert!(n.contains_addr(&i));
        assert!(!n.contains_addr(&o));
        assert_eq!(n.network().to_string(), network);
        assert!(n.contains_net(&n.trunc()));
        assert!(N::ADDR_MIN < i && i < N::ADDR_MAX);
        assert_eq!(N::with_prefix(i, N::MAX_PREFIX + 1), None);
        assert_eq!(N::addr_of(i.into()), Some(i));
    }

    #[test]
    fn both_families_answer_the_same_questions() {
        generic_facts::<Ipv4Net>("10.244.1.7/24", "10.244.1.9", "10.244.2.1", "10.244.1.0");
        generic_facts::<Ipv6Net>(
            "fc00:0:0:1::7/64",
            "fc00:0:0:1::9",
            "fc00:0:0:2::1",
            "fc00:0:0:1::",
        );
        assert_eq!(<Ipv4Net as PodNet>::addr_of("::1".parse().unwrap()), None);
        assert_eq!(
            <Ipv6Net as PodNet>::addr_of("10.0.0.1".parse().unwrap()),
            None
        );
        assert_eq!(Family::of::<Ipv4Net>(), Family::V4);
        assert_eq!(Family::of::<Ipv6Net>().to_string(), "IPv6");
        assert_eq!(
            <Ipv6Net as PodNet>::ADDR_MAX.to_string(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }
}
