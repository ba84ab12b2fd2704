//! External interface and public IP selection, following flanneld (flannel-compat.md 7.3).
//!
//! [`select`] is pure: it works on a snapshot of the namespace's links, addresses and routes,
//! so every precedence rule is unit-tested; [`discover`] takes that snapshot over netlink.

use std::net::{Ipv4Addr, Ipv6Addr};

use regex::Regex;

use crate::netlink::{NetError, Netlink};

/// What the operator asked for (`--iface`, `--iface-regex`, `--iface-can-reach`, `--public-ip`).
#[derive(Debug, Clone, Default)]
pub struct IfaceRequest {
    pub ifaces: Vec<String>,
    pub regexes: Vec<String>,
    pub can_reach: Option<Ipv4Addr>,
    pub public_ip: Option<Ipv4Addr>,
}

/// One link of the namespace with its IPv4 addresses.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// (address, permanent), in kernel order.
    pub addrs: Vec<(Ipv4Addr, bool)>,
}

/// Everything [`select`] needs to know about the namespace.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub links: Vec<Candidate>,
    pub default_route_link: Option<u32>,
    /// The answer of `ip route get <can-reach>`: link and preferred source.
    pub can_reach_route: Option<(u32, Option<Ipv4Addr>)>,
}

/// The chosen external interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtIface {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// The interface's own address (the VXLAN device's underlay).
    pub iface_addr: Ipv4Addr,
    /// What goes into the lease: `--public-ip`, else the interface address.
    pub public_ip: Ipv4Addr,
}

/// Why no interface could be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IfaceError {
    #[error(
        "failed to find an interface that matches --iface/--iface-regex/--iface-can-reach ({0}); list the interfaces with `ip -4 addr` and pass an existing name or address with --iface"
    )]
    NoMatch(String),
    #[error("--iface-regex {pattern:?} is not a valid regular expression: {error}")]
    BadRegex { pattern: String, error: String },
    #[error(
        "no IPv4 default route to pick the external interface from; add a default route or pass --iface <name|address>"
    )]
    NoDefaultRoute,
    #[error("interface {0} has no usable IPv4 address; give it one or choose another with --iface")]
    NoAddress(String),
    #[error("interface {0} reports MTU 0; check the link (`ip link show {0}`)")]
    ZeroMtu(String),
    #[error(
        "no IPv6 default route to pick the external interface from; add one or pass --iface <name|address>"
    )]
    NoDefaultRoute6,
    #[error(
        "interface {0} has no global IPv6 address; give it one (`ip -6 addr`) or choose another with --iface"
    )]
    NoAddress6(String),
    #[error(
        "--public-ipv6 {ip} is an address of {holder}, not of the external interface {iface}; use the same interface for both families"
    )]
    PublicIpv6Elsewhere {
        ip: Ipv6Addr,
        holder: String,
        iface: String,
    },
}

/// Address preference: global unicast before link-local, permanent before dynamic (flannel
/// sorts the same way; IPv4 has no temporary addresses).
fn best_addr(c: &Candidate) -> Option<Ipv4Addr> {
    let mut usable: Vec<&(Ipv4Addr, bool)> = c
        .addrs
        .iter()
        .filter(|(ip, _)| {
            !ip.is_loopback() && !ip.is_multicast() && !ip.is_unspecified() && !ip.is_broadcast()
        })
        .collect();
    usable.sort_by_key(|(ip, permanent)| (ip.is_link_local(), !permanent));
    usable.first().map(|(ip, _)| *ip)
}

fn finish(
    c: &Candidate,
    addr: Option<Ipv4Addr>,
    req: &IfaceRequest,
) -> Result<ExtIface, IfaceError> {
    let iface_addr = addr
        .or_else(|| best_addr(c))
        .ok_or_else(|| IfaceError::NoAddress(c.name.clone()))?;
    if c.mtu == 0 {
        return Err(IfaceError::ZeroMtu(c.name.clone()));
    }
    Ok(ExtIface {
        index: c.index,
        name: c.name.clone(),
        mtu: c.mtu,
        iface_addr,
        public_ip: req.public_ip.unwrap_or(iface_addr),
    })
}

fn by_addr(snap: &Snapshot, ip: Ipv4Addr) -> Option<&Candidate> {
    snap.links
        .iter()
        .find(|c| c.addrs.iter().any(|(a, _)| *a == ip))
}

/// Chooses the external interface with flanneld's precedence: `--iface` entries in order (an
/// address or a name), then `--iface-regex` entries (matched against addresses first, then
/// names), then `--iface-can-reach`, else the interface owning `--public-ip`, else the
/// default route's interface.
pub fn select(req: &IfaceRequest, snap: &Snapshot) -> Result<ExtIface, IfaceError> {
    for want in &req.ifaces {
        if let Ok(ip) = want.parse::<Ipv4Addr>() {
            if let Some(c) = by_addr(snap, ip) {
                return finish(c, Some(ip), req);
            }
        } else if let Some(c) = snap.links.iter().find(|c| &c.name == want) {
            return finish(c, None, req);
        }
    }
    for pattern in &req.regexes {
        let re = Regex::new(pattern).map_err(|e| IfaceError::BadRegex {
            pattern: pattern.clone(),
            error: e.to_string(),
        })?;
        for c in &snap.links {
            if let Some((ip, _)) = c.addrs.iter().find(|(ip, _)| re.is_match(&ip.to_string())) {
                return finish(c, Some(*ip), req);
            }
        }
        if let Some(c) = snap.links.iter().find(|c| re.is_match(&c.name)) {
            return finish(c, None, req);
        }
    }
    if let Some(target) = req.can_reach {
        if let Some((index, src)) = snap.can_reach_route
            && let Some(c) = snap.links.iter().find(|c| c.index == index)
        {
            return finish(c, src, req);
        }
        return Err(IfaceError::NoMatch(format!("no route reaches {target}")));
    }
    if !req.ifaces.is_empty() || !req.regexes.is_empty() {
        let mut asked: Vec<String> = req.ifaces.iter().map(|i| format!("--iface {i}")).collect();
        asked.extend(req.regexes.iter().map(|r| format!("--iface-regex {r}")));
        return Err(IfaceError::NoMatch(asked.join(", ")));
    }
    if let Some(ip) = req.public_ip
        && let Some(c) = by_addr(snap, ip)
    {
        return finish(c, Some(ip), req);
    }
    let index = snap.default_route_link.ok_or(IfaceError::NoDefaultRoute)?;
    let c = snap
        .links
        .iter()
        .find(|c| c.index == index)
        .ok_or(IfaceError::NoDefaultRoute)?;
    finish(c, None, req)
}

/// One link of the namespace with its global IPv6 addresses (dual-stack).
#[derive(Debug, Clone)]
pub struct Candidate6 {
    pub index: u32,
    pub name: String,
    /// (address, permanent), in kernel order; link-local ones are left out.
    pub addrs: Vec<(Ipv6Addr, bool)>,
}

/// Everything [`select6`] needs to know about the namespace.
#[derive(Debug, Clone, Default)]
pub struct Snapshot6 {
    pub links: Vec<Candidate6>,
    /// The link of the main table's `::/0` route.
    pub default_route_link: Option<u32>,
}

/// The IPv6 side of the external interface: what `flannel-v6.<VNI>` sends from and what the
/// lease's PublicIPv6 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtIface6 {
    pub index: u32,
    pub name: String,
    /// The interface's own IPv6 address (the IPv6 VXLAN device's local address).
    pub iface_addr: Ipv6Addr,
    /// `--public-ipv6`, else the interface address.
    pub public_ip: Ipv6Addr,
}

/// IPv6 address preference: permanent (configured) before dynamic (SLAAC), then kernel order.
fn best_addr6(c: &Candidate6) -> Option<Ipv6Addr> {
    let mut usable: Vec<&(Ipv6Addr, bool)> = c
        .addrs
        .iter()
        .filter(|(ip, _)| crate::netlink::is_global_ipv6(ip))
        .collect();
    usable.sort_by_key(|(_, permanent)| !permanent);
    usable.first().map(|(ip, _)| *ip)
}

/// The link holding the IPv6 address `ip` (flannel's `GetInterfaceByIP6`).
pub fn by_addr6(snap: &Snapshot6, ip: Ipv6Addr) -> Option<&Candidate6> {
    snap.links
        .iter()
        .find(|c| c.addrs.iter().any(|(a, _)| *a == ip))
}

/// Chooses the IPv6 side of the external interface as flanneld does for dual-stack: on the
/// link `on` already chosen for IPv4 (if any), its preferred IPv6 address, or
/// `public_ipv6` if the link holds it (an address of another link is an error: both
/// families leave through one interface); without `on`, the link holding `public_ipv6`, else
/// the IPv6 default route's link. The lease carries `public_ipv6` if given (a NAT address),
/// else the interface address.
pub fn select6(
    on: Option<u32>,
    public_ipv6: Option<Ipv6Addr>,
    snap: &Snapshot6,
) -> Result<ExtIface6, IfaceError> {
    let holder = public_ipv6.and_then(|ip| by_addr6(snap, ip));
    let c = match on {
        Some(index) => {
            let c = snap
                .links
                .iter()
                .find(|c| c.index == index)
                .ok_or_else(|| IfaceError::NoAddress6(format!("link {index}")))?;
            if let (Some(ip), Some(h)) = (public_ipv6, holder)
                && h.index != c.index
            {
                return Err(IfaceError::PublicIpv6Elsewhere {
                    ip,
                    holder: h.name.clone(),
                    iface: c.name.clone(),
                });
            }
            c
        }
        None => match holder {
            Some(h) => h,
            None => {
                let index = snap.default_route_link.ok_or(IfaceError::NoDefaultRoute6)?;
                snap.links
                    .iter()
                    .find(|c| c.index == index)
                    .ok_or(IfaceError::NoDefaultRoute6)?
            }
        },
    };
    let iface_addr = public_ipv6
        .filter(|_| holder.is_some_and(|h| h.index == c.index))
        .or_else(|| best_addr6(c))
        .ok_or_else(|| IfaceError::NoAddress6(c.name.clone()))?;
    Ok(ExtIface6 {
        index: c.index,
        name: c.name.clone(),
        iface_addr,
        public_ip: public_ipv6.unwrap_or(iface_addr),
    })
}

/// Takes the snapshot [`select6`] needs from the current network namespace.
pub async fn discover6(nl: &Netlink) -> Result<Snapshot6, NetError> {
    let links = nl.links().await?;
    let addrs = nl.ipv6_addresses().await?;
    let links = links
        .into_iter()
        .map(|l| Candidate6 {
            index: l.index,
            addrs: addrs
                .iter()
                .filter(|(i, ..)| *i == l.index)
                .map(|(_, ip, _, permanent)| (*ip, *permanent))
                .collect(),
            name: l.name,
        })
        .collect();
    Ok(Snapshot6 {
        links,
        default_route_link: nl.default_route_link6().await?,
    })
}

/// Takes the snapshot [`select`] needs from the current network namespace.
pub async fn discover(nl: &Netlink, req: &IfaceRequest) -> Result<Snapshot, NetError> {
    let links = nl.links().await?;
    let addrs = nl.ipv4_addresses().await?;
    let links = links
        .into_iter()
        .map(|l| Candidate {
            index: l.index,
            addrs: addrs
                .iter()
                .filter(|(i, ..)| *i == l.index)
                .map(|(_, ip, _, permanent)| (*ip, *permanent))
                .collect(),
            name: l.name,
            mtu: l.mtu,
        })
        .collect();
    let can_reach_route = match req.can_reach {
        Some(ip) => nl.route_get(ip).await.ok(),
        None => None,
    };
    Ok(Snapshot {
        links,
        default_route_link: nl.default_route_link().await?,
        can_reach_route,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            links: vec![
                Candidate {
                    index: 1,
                    name: "lo".into(),
                    mtu: 65536,
                    addrs: vec![(Ipv4Addr::LOCALHOST, true)],
                },
                Candidate {
                    index: 2,
                    name: "eth0".into(),
                    mtu: 9001,
                    addrs: vec![
                        (Ipv4Addr::new(169, 254, 1, 1), true),
                        (Ipv4Addr::new(10, 0, 1, 5), false),
                        (Ipv4Addr::new(10, 0, 1, 6), true),
                    ],
                },
                Candidate {
                    index: 3,
                    name: "ens6".into(),
                    mtu: 1500,
                    addrs: vec![(Ipv4Addr::new(192, 168, 9, 2), true)],
                },
                Candidate {
                    index: 4,
                    name: "noaddr".into(),
                    mtu: 1500,
                    addrs: vec![],
                },
            ],
            default_route_link: Some(2),
            can_reach_route: None,
        }
    }

    #[test]
    fn default_route_interface_with_preferred_address() {
        let e = select(&IfaceRequest::default(), &snap()).unwrap();
        assert_eq!(e.name, "eth0");
        // global before link-local, permanent before dynamic
        assert_eq!(e.iface_addr, Ipv4Addr::new(10, 0, 1, 6));
        assert_eq!(e.public_ip, e.iface_addr);
        assert_eq!(e.mtu, 9001);
    }

    #[test]
    fn iface_by_name_and_by_address_in_order() {
        let req = IfaceRequest {
            ifaces: vec!["missing".into(), "ens6".into()],
            ..Default::default()
        };
        assert_eq!(select(&req, &snap()).unwrap().name, "ens6");
        let req = IfaceRequest {
            ifaces: vec!["10.0.1.5".into()],
            ..Default::default()
        };
        let e = select(&req, &snap()).unwrap();
        assert_eq!(
            (e.name.as_str(), e.iface_addr),
            ("eth0", Ipv4Addr::new(10, 0, 1, 5))
        );
    }

    #[test]
    fn regex_matches_addresses_before_names() {
        let req = IfaceRequest {
            regexes: vec!["^192\\.168\\.".into()],
            ..Default::default()
        };
        assert_eq!(select(&req, &snap()).unwrap().name, "ens6");
        let req = IfaceRequest {
            regexes: vec!["^ens".into()],
            ..Default::default()
        };
        assert_eq!(select(&req, &snap()).unwrap().name, "ens6");
        let req = IfaceRequest {
            regexes: vec!["(".into()],
            ..Default::default()
        };
        assert!(matches!(
            select(&req, &snap()),
            Err(IfaceError::BadRegex { .. })
        ));
    }

    #[test]
    fn unmatched_flags_are_an_error_naming_them() {
        let req = IfaceRequest {
            ifaces: vec!["wlan9".into()],
            ..Default::default()
        };
        let err = select(&req, &snap()).unwrap_err().to_string();
        assert!(err.contains("--iface wlan9"), "{err}");
    }

    #[test]
    fn can_reach_uses_route_source() {
        let mut s = snap();
        s.can_reach_route = Some((3, Some(Ipv4Addr::new(192, 168, 9, 2))));
        let req = IfaceRequest {
            can_reach: Some(Ipv4Addr::new(192, 168, 9, 200)),
            ..Default::default()
        };
        assert_eq!(select(&req, &s).unwrap().name, "ens6");
        s.can_reach_route = None;
        assert!(select(&req, &s).is_err());
    }

    #[test]
    fn public_ip_overrides_lease_address_and_picks_its_interface() {
        let req = IfaceRequest {
            public_ip: Some(Ipv4Addr::new(192, 168, 9, 2)),
            ..Default::default()
        };
        assert_eq!(select(&req, &snap()).unwrap().name, "ens6");
        // a NAT address on no interface: default route interface, lease carries the NAT IP
        let req = IfaceRequest {
            public_ip: Some(Ipv4Addr::new(54, 1, 2, 3)),
            ..Default::default()
        };
        let e = select(&req, &snap()).unwrap();
        assert_eq!(
            (e.name.as_str(), e.public_ip),
            ("eth0", Ipv4Addr::new(54, 1, 2, 3))
        );
    }

    #[test]
    fn no_default_route_or_address_is_explained() {
        let mut s = snap();
        s.default_route_link = None;
        assert_eq!(
            select(&IfaceRequest::default(), &s),
            Err(IfaceError::NoDefaultRoute)
        );
        let req = IfaceRequest {
            ifaces: vec!["noaddr".into()],
            ..Default::default()
        };
        assert_eq!(
            select(&req, &snap()),
            Err(IfaceError::NoAddress("noaddr".into()))
        );
    }

    fn v6(t: &str) -> Ipv6Addr {
        t.parse().unwrap()
    }

    fn snap6() -> Snapshot6 {
        Snapshot6 {
            links: vec![
                Candidate6 {
                    index: 2,
                    name: "eth0".into(),
                    addrs: vec![(v6("2001:db8::5"), false), (v6("fd00:250::1"), true)],
                },
                Candidate6 {
                    index: 3,
                    name: "ens6".into(),
                    addrs: vec![(v6("fd00:9::2"), true)],
                },
                Candidate6 {
                    index: 4,
                    name: "noaddr".into(),
                    addrs: vec![],
                },
            ],
            default_route_link: Some(2),
        }
    }

    #[test]
    fn ipv6_on_the_ipv4_interface_prefers_a_permanent_address() {
        let e = select6(Some(2), None, &snap6()).unwrap();
        assert_eq!((e.name.as_str(), e.iface_addr), ("eth0", v6("fd00:250::1")));
        assert_eq!(e.public_ip, e.iface_addr);
        assert_eq!(
            select6(Some(4), None, &snap6()),
            Err(IfaceError::NoAddress6("noaddr".into()))
        );
    }

    #[test]
    fn public_ipv6_picks_its_address_its_link_or_is_refused_elsewhere() {
        let e = select6(Some(2), Some(v6("2001:db8::5")), &snap6()).unwrap();
        assert_eq!(e.iface_addr, v6("2001:db8::5"));
        let e = select6(None, Some(v6("fd00:9::2")), &snap6()).unwrap();
        assert_eq!(e.name, "ens6");
        let err = select6(Some(2), Some(v6("fd00:9::2")), &snap6()).unwrap_err();
        assert!(
            matches!(err, IfaceError::PublicIpv6Elsewhere { .. }),
            "{err}"
        );
        // A NAT address on no link: the interface's own address, the lease the NAT one.
        let e = select6(Some(3), Some(v6("2600::1")), &snap6()).unwrap();
        assert_eq!(
            (e.iface_addr, e.public_ip),
            (v6("fd00:9::2"), v6("2600::1"))
        );
    }

    #[test]
    fn ipv6_alone_follows_the_ipv6_default_route() {
        assert_eq!(select6(None, None, &snap6()).unwrap().index, 2);
        let mut s = snap6();
        s.default_route_link = None;
        assert_eq!(select6(None, None, &s), Err(IfaceError::NoDefaultRoute6));
        assert_eq!(by_addr6(&s, v6("fd00:9::2")).map(|c| c.index), Some(3));
        assert!(by_addr6(&s, v6("fd00:9::3")).is_none());
    }
}
