//! Subnet arithmetic and the etcd key layout flannel uses (`<prefix>/config`,
//! `<prefix>/subnets/<A.B.C.D-len>`).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::clip::clip;

/// The example shown in key errors so the user sees the expected form.
const KEY_FORM: &str = "expected A.B.C.D-LEN such as \"10.244.1.0-24\", optionally followed by \"&<ipv6>-<len>\" such as \"10.244.1.0-24&fc00:0:0:1::-64\"";

/// A subnet key (the part of an etcd key after `<prefix>/subnets/`) that weft cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key does not have the `A.B.C.D-LEN[&IPV6-LEN]` form.
    #[error("subnet key {key:?} is malformed: {reason}; {KEY_FORM}")]
    Malformed {
        /// The rejected key tail (cut if long).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address in the key is not the network address of its prefix.
    #[error(
        "subnet key {key:?} has host bits set: {addr}/{prefix_len} is not a network address; the key for that subnet is {expected:?}"
    )]
    HostBitsSet {
        /// The rejected key tail (cut if long).
        key: String,
        /// The address as written in the key.
        addr: String,
        /// The prefix length as written in the key.
        prefix_len: u8,
        /// The correctly masked key.
        expected: String,
    },
    /// The key parses to a subnet, but is not the exact text flannel and weft write for it
    /// (`10.244.2.0-024`, uppercase or uncompressed IPv6): an alias of the canonical key.
    /// Taking it as a lease would let anyone shadow a live node's subnet under another key.
    #[error(
        "subnet key {key:?} is not canonical: the key of that subnet is {canonical:?}; an alias key is never used as a lease (it could take the subnet's traffic from the node holding {canonical:?}): delete it"
    )]
    NotCanonical {
        /// The rejected key tail (cut if long).
        key: String,
        /// The key flannel and weft write for the same subnet.
        canonical: String,
    },
}

/// The key tail of an IPv4 subnet, `10.244.1.0-24` (flannel `MakeSubnetKey`).
///
/// Host bits are cleared first so the key always parses back with [`parse_subnet_key`].
pub fn subnet_key(net: Ipv4Net) -> String {
    let net = net.trunc();
    format!("{}-{}", net.addr(), net.prefix_len())
}

/// The dual-stack key tail, `10.244.1.0-24&fc00:0:0:1::-64` (flannel `MakeSubnetKey` with an
/// IPv6 subnet; the IPv6 address uses the compressed lowercase form, like Go).
pub fn subnet_key_dual(net: Ipv4Net, net6: Option<Ipv6Net>) -> String {
    match net6 {
        None => subnet_key(net),
        Some(net6) => {
            let net6 = net6.trunc();
            format!("{}&{}-{}", subnet_key(net), net6.addr(), net6.prefix_len())
        }
    }
}

/// Parses a key tail (the part after `<prefix>/subnets/`) and returns the IPv4 subnet.
///
/// Accepts `A.B.C.D-LEN` and the dual-stack `A.B.C.D-LEN&<ipv6>-<len6>` form; rejects host
/// bits, prefix lengths over 32 and anything else. Unlike flannel's unanchored regex this
/// matches the whole tail, so `x10.244.1.0-24` or `a/10.244.1.0-24` are not subnets.
pub fn parse_subnet_key(s: &str) -> Result<Ipv4Net, KeyError> {
    parse_subnet_key_dual(s).map(|(net, _)| net)
}

/// Like [`parse_subnet_key`], also returning the IPv6 subnet of a dual-stack key.
///
/// Only the canonical form is a key: the tail must be byte for byte what
/// [`subnet_key_dual`] renders for the subnet it names (what flannel's `MakeSubnetKey`
/// writes), so `10.244.2.0-024` is refused ([`KeyError::NotCanonical`]) rather than taken as
/// a second lease for 10.244.2.0/24.
pub fn parse_subnet_key_dual(s: &str) -> Result<(Ipv4Net, Option<Ipv6Net>), KeyError> {
    let (net, net6) = parse_subnet_key_lenient(s)?;
    let canonical = subnet_key_dual(net, net6);
    if canonical != s {
        return Err(KeyError::NotCanonical {
            key: clip(s),
            canonical,
        });
    }
    Ok((net, net6))
}

/// The IPv6 subnet a dual-stack key claims (`…&fc00:0:0:1::-64`), canonical or not, for the
/// allocator; None when the key names none.
pub fn claimed_subnet6(s: &str) -> Option<Ipv6Net> {
    let (_, v6) = s.split_once('&')?;
    let (addr, len) = v6.trim().rsplit_once('-')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 128)?;
    Ipv6Net::new(addr.parse().ok()?, len)
        .ok()
        .map(|n| n.trunc())
}

/// The subnet a key under `<prefix>/subnets/` claims, canonical or not, for the allocator:
/// any key that names a subnet, even as an alias (`10.244.2.0-024`), with host bits set or
/// with junk in front (flannel's key regex is not anchored at the start, so flanneld reads
/// ` 10.244.2.0-24` or `x10.244.2.0-24` as 10.244.2.0/24), keeps that subnet from being
/// handed to a new node. None when the key names no IPv4 subnet at all.
pub fn claimed_subnet(s: &str) -> Option<Ipv4Net> {
    let v4_part = s.split_once('&').map_or(s, |(v4, _)| v4).trim_end();
    let (addr_text, len_text) = v4_part.rsplit_once('-')?;
    if len_text.is_empty() || !len_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len = len_text.trim_start_matches('0').parse::<u8>().unwrap_or(0);
    if len > 32 || len_text.trim_start_matches('0').len() > 2 {
        return None;
    }
    // The trailing run of digits and dots, with leading zeros allowed in each octet.
    let start = addr_text
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let octets: Vec<&str> = addr_text[start..].split('.').collect();
    if octets.len() != 4 {
        return None;
    }
    let mut addr = [0u8; 4];
    for (slot, octet) in addr.iter_mut().zip(&octets) {
        let digits = octet.trim_start_matches('0');
        if octet.is_empty() || digits.len() > 3 {
            return None;
        }
        *slot = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
    }
    Ipv4Net::new(Ipv4Addr::from(addr), len)
        .ok()
        .map(|n| n.trunc())
}

/// The key grammar without the canonical-form check.
fn parse_subnet_key_lenient(s: &str) -> Result<(Ipv4Net, Option<Ipv6Net>), KeyError> {
    let malformed = |reason: String| KeyError::Malformed {
        key: clip(s),
        reason,
    };
    let (v4_part, v6_part) = match s.split_once('&') {
        Some((v4, v6)) => (v4, Some(v6)),
        None => (s, None),
    };

    let (addr_text, len_text) = v4_part
        .rsplit_once('-')
        .ok_or_else(|| malformed("no '-' between the address and the prefix length".into()))?;
    let addr: Ipv4Addr = addr_text
        .parse()
        .map_err(|_| malformed(format!("{:?} is not an IPv4 address", clip(addr_text))))?;
    let len = parse_prefix_len(len_text, 32).ok_or_else(|| {
        malformed(format!(
            "prefix length {:?} is not a number from 0 to 32",
            clip(len_text)
        ))
    })?;
    let net = Ipv4Net::new(addr, len)
        .map_err(|_| malformed(format!("prefix length {len} is not a number from 0 to 32")))?;
    if net.trunc().addr() != addr {
        return Err(KeyError::HostBitsSet {
            key: clip(s),
            addr: addr.to_string(),
            prefix_len: len,
            expected: subnet_key_dual_text(net.trunc(), v6_part),
        });
    }

    let net6 = match v6_part {
        None => None,
        Some(v6) => {
            let (addr6_text, len6_text) = v6.rsplit_once('-').ok_or_else(|| {
                malformed("no '-' between the IPv6 address and its prefix length".into())
            })?;
            let addr6: Ipv6Addr = addr6_text
                .parse()
                .map_err(|_| malformed(format!("{:?} is not an IPv6 address", clip(addr6_text))))?;
            let len6 = parse_prefix_len(len6_text, 128).ok_or_else(|| {
                malformed(format!(
                    "IPv6 prefix length {:?} is not a number from 0 to 128",
                    clip(len6_text)
                ))
            })?;
            let net6 = Ipv6Net::new(addr6, len6).map_err(|_| {
                malformed(format!(
                    "IPv6 prefix length {len6} is not a number from 0 to 128"
                ))
            })?;
            if net6.trunc().addr() != addr6 {
                return Err(KeyError::HostBitsSet {
                    key: clip(s),
                    addr: addr6.to_string(),
                    prefix_len: len6,
                    expected: subnet_key_dual(net, Some(net6.trunc())),
                });
            }
            Some(net6)
        }
    };
    Ok((net, net6))
}

/// The corrected key for a host-bits error, keeping the IPv6 part verbatim when present.
fn subnet_key_dual_text(net: Ipv4Net, v6_part: Option<&str>) -> String {
    match v6_part {
        Some(v6) => format!("{}&{}", subnet_key(net), clip(v6)),
        None => subnet_key(net),
    }
}

/// Parses a decimal prefix length of at most `max`; only ASCII digits are allowed (no sign).
fn parse_prefix_len(text: &str, max: u8) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u8>().ok().filter(|len| *len <= max)
}

/// The first host address of a subnet (network address + 1), used for `FLANNEL_SUBNET`.
pub fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(1))
}

/// The first host address of an IPv6 subnet, used for `FLANNEL_IPV6_SUBNET`.
pub fn first_host_v6(net: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()).wrapping_add(1))
}

/// Normalises an etcd prefix like Go's `path.Join`/`path.Clean` and makes it absolute:
/// duplicate and trailing slashes collapse, `.` disappears, `..` removes the previous element.
/// The result has a leading slash and no trailing slash (`/` for an empty prefix).
pub fn normalize_prefix(prefix: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in prefix.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn join_prefix(prefix: &str, name: &str) -> String {
    let base = normalize_prefix(prefix);
    if base == "/" {
        format!("/{name}")
    } else {
        format!("{base}/{name}")
    }
}

/// The directory of lease keys, `<prefix>/subnets/`, with the trailing slash.
///
/// flannel lists `<prefix>/subnets` without the slash, which also matches siblings such as
/// `<prefix>/subnets2/...`; listing with the slash avoids that.
pub fn subnets_key_prefix(prefix: &str) -> String {
    format!("{}/", join_prefix(prefix, "subnets"))
}

/// The network config key, `<prefix>/config`.
pub fn config_key(prefix: &str) -> String {
    join_prefix(prefix, "config")
}

/// The subnets one lease key names: the IPv4 subnet, and a dual-stack lease's IPv6 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnets {
    /// The IPv4 subnet (flannel's etcd mode always has one).
    pub v4: Ipv4Net,
    /// The IPv6 subnet of a dual-stack lease.
    pub v6: Option<Ipv6Net>,
}

impl From<Ipv4Net> for Subnets {
    fn from(v4: Ipv4Net) -> Subnets {
        Subnets { v4, v6: None }
    }
}

impl Subnets {
    /// The key tail, `10.244.1.0-24` or `10.244.1.0-24&fc00:0:0:1::-64`.
    pub fn key(&self) -> String {
        subnet_key_dual(self.v4, self.v6)
    }
}

/// The lease key of `net`, `<prefix>/subnets/10.244.1.0-24` (or the dual-stack
/// `<prefix>/subnets/10.244.1.0-24&fc00:0:0:1::-64`).
pub fn lease_key(prefix: &str, net: impl Into<Subnets>) -> String {
    format!("{}{}", subnets_key_prefix(prefix), net.into().key())
}

/// Number of addresses in a subnet of length `len` (`len <= 32`), as u64 so /0 fits.
pub(crate) fn block_size(len: u8) -> u64 {
    1u64 << (32 - u32::from(len.min(32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn key_round_trip() {
        for s in [
            "10.244.1.0/24",
            "0.0.0.0/0",
            "10.244.1.4/30",
            "192.168.0.7/32",
        ] {
            let n = net(s);
            assert_eq!(parse_subnet_key(&subnet_key(n)).unwrap(), n);
        }
        assert_eq!(subnet_key(net("10.244.1.0/24")), "10.244.1.0-24");
    }

    #[test]
    fn subnet_key_masks_host_bits() {
        assert_eq!(subnet_key(net("10.244.1.5/24")), "10.244.1.0-24");
    }

    #[test]
    fn dual_stack_keys() {
        let v6: Ipv6Net = "fc00:0:0:1::/64".parse().unwrap();
        let key = subnet_key_dual(net("10.244.1.0/24"), Some(v6));
        assert_eq!(key, "10.244.1.0-24&fc00:0:0:1::-64");
        assert_eq!(
            parse_subnet_key_dual(&key).unwrap(),
            (net("10.244.1.0/24"), Some(v6))
        );
        assert_eq!(parse_subnet_key(&key).unwrap(), net("10.244.1.0/24"));
        assert_eq!(
            parse_subnet_key_dual("10.244.1.0-24").unwrap(),
            (net("10.244.1.0/24"), None)
        );
    }

    #[test]
    fn bad_keys_are_rejected_with_the_expected_form() {
        for bad in [
            "",
            "garbage",
            "10.244.1.0",
            "10.244.1.0-",
            "10.244.1.0-33",
            "10.244.1.0-+24",
            "10.244.1.0--24",
            "10.244.1.0-24x",
            "10.244.1-24",
            "010.244.1.0-24",
            "x10.244.1.0-24",
            "sub/10.244.1.0-24",
            " 10.244.1.0-24",
            "10.244.1.0-24&",
            "10.244.1.0-24&fc00::",
            "10.244.1.0-24&fc00::-129",
            "10.244.1.0-24&zz::-64",
            "10.244.1.0-24&fc00::-64&x",
            "fc00::-64",
        ] {
            let err = parse_subnet_key(bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("10.244.1.0-24"), "{msg}");
        }
    }

    #[test]
    fn host_bits_error_suggests_the_masked_key() {
        let err = parse_subnet_key("10.244.1.5-24").unwrap_err();
        assert!(matches!(err, KeyError::HostBitsSet { .. }));
        let msg = err.to_string();
        assert!(msg.contains("host bits"), "{msg}");
        assert!(msg.contains("\"10.244.1.0-24\""), "{msg}");

        let err = parse_subnet_key("10.244.1.0-24&fc00:0:0:1::5-64").unwrap_err();
        assert!(
            err.to_string().contains("10.244.1.0-24&fc00:0:0:1::-64"),
            "{err}"
        );
    }

    #[test]
    fn only_canonical_keys_are_keys() {
        for (alias, canonical) in [
            ("10.244.2.0-024", "10.244.2.0-24"),
            ("0.0.0.0-00", "0.0.0.0-0"),
            (
                "10.244.1.0-24&FC00:0:0:1::-64",
                "10.244.1.0-24&fc00:0:0:1::-64",
            ),
            (
                "10.244.1.0-24&fc00:0000:0:1::-64",
                "10.244.1.0-24&fc00:0:0:1::-64",
            ),
            (
                "10.244.1.0-24&fc00:0:0:1:0:0:0:0-64",
                "10.244.1.0-24&fc00:0:0:1::-64",
            ),
            (
                "10.244.1.0-24&fc00:0:0:1::-064",
                "10.244.1.0-24&fc00:0:0:1::-64",
            ),
        ] {
            let err = parse_subnet_key(alias).unwrap_err();
            assert_eq!(
                err,
                KeyError::NotCanonical {
                    key: alias.into(),
                    canonical: canonical.into()
                }
            );
            let msg = err.to_string();
            assert!(
                msg.contains("not canonical") && msg.contains(canonical),
                "{msg}"
            );
            // ... yet it still claims its subnet for the allocator
            assert_eq!(
                claimed_subnet(alias),
                parse_subnet_key(canonical).ok(),
                "{alias}"
            );
        }
        for good in [
            "10.244.2.0-24",
            "0.0.0.0-0",
            "10.244.1.0-24&fc00:0:0:1::-64",
        ] {
            assert_eq!(
                subnet_key_dual(
                    parse_subnet_key_dual(good).unwrap().0,
                    parse_subnet_key_dual(good).unwrap().1,
                ),
                good
            );
        }
    }

    #[test]
    fn accepted_keys_are_canonical_and_claim_their_subnet() {
        // What the subnet_key fuzz target checks, over random keys from the key alphabet.
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "0123456789.-&:abcfFx+ é0012".chars().collect();
        let mut rng = StdRng::seed_from_u64(11);
        let mut accepted = 0;
        for _ in 0..50_000 {
            let mut key = format!(
                "{}.{}.{}.{}-{}",
                rng.random_range(0..300u32),
                rng.random_range(0..300u32),
                rng.random_range(0..300u32),
                rng.random_range(0..300u32),
                rng.random_range(0..40u32)
            );
            for _ in 0..rng.random_range(0..4) {
                let at = rng.random_range(0..=key.chars().count());
                let c = alphabet[rng.random_range(0..alphabet.len())];
                let mut chars: Vec<char> = key.chars().collect();
                if rng.random_bool(0.5) && at < chars.len() {
                    chars.remove(at);
                } else {
                    chars.insert(at, c);
                }
                key = chars.into_iter().collect();
            }
            let claimed = claimed_subnet(&key);
            if let Ok((net, net6)) = parse_subnet_key_dual(&key) {
                accepted += 1;
                assert_eq!(subnet_key_dual(net, net6), key);
                assert_eq!(claimed, Some(net), "{key:?}");
            }
        }
        assert!(accepted > 250, "{accepted}");
    }

    #[test]
    fn every_key_naming_a_subnet_claims_it() {
        let want = Some(net("10.244.2.0/24"));
        for key in [
            "10.244.2.0-24",
            "10.244.2.0-024",
            "10.244.2.0-0024",
            "010.244.002.000-24",
            " 10.244.2.0-24",
            "+10.244.2.0-24",
            "x10.244.2.0-24",
            "é10.244.2.0-24",
            "sub/10.244.2.0-24",
            "10.244.2.0-24 ",
            "10.244.2.9-24",
            "10.244.2.0-24&junk",
        ] {
            assert_eq!(claimed_subnet(key), want, "{key:?}");
        }
        for none in [
            "",
            "junk",
            "10.244.2.0",
            "10.244.2.0-",
            "10.244.2.0-33",
            "10.244.2.0-+24",
            "10.244.2-24",
            "10.244.2.0.1-24",
            "10.244.2.256-24",
            "10.244..0-24",
            "10.244.2.0-24x",
        ] {
            assert_eq!(claimed_subnet(none), None, "{none:?}");
        }
    }

    #[test]
    fn first_hosts() {
        assert_eq!(
            first_host(net("10.244.1.0/24")),
            Ipv4Addr::new(10, 244, 1, 1)
        );
        assert_eq!(
            first_host(net("10.244.1.7/24")),
            Ipv4Addr::new(10, 244, 1, 1)
        );
        let v6: Ipv6Net = "fc00:0:0:1::/64".parse().unwrap();
        assert_eq!(first_host_v6(v6).to_string(), "fc00:0:0:1::1");
    }

    #[test]
    fn key_prefixes_follow_path_join() {
        let cases = [
            ("/coreos.com/network", "/coreos.com/network"),
            ("/coreos.com/network/", "/coreos.com/network"),
            ("//coreos.com//network//", "/coreos.com/network"),
            ("coreos.com/network", "/coreos.com/network"),
            ("/a/./b/../c", "/a/c"),
            ("", "/"),
            ("/", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_prefix(input), want, "{input:?}");
        }
        assert_eq!(
            subnets_key_prefix("/coreos.com/network/"),
            "/coreos.com/network/subnets/"
        );
        assert_eq!(subnets_key_prefix(""), "/subnets/");
        assert_eq!(
            config_key("/coreos.com/network"),
            "/coreos.com/network/config"
        );
        assert_eq!(config_key("/"), "/config");
        assert_eq!(
            lease_key("/coreos.com/network", net("10.244.1.0/24")),
            "/coreos.com/network/subnets/10.244.1.0-24"
        );
    }
}
