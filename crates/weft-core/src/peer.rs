//! Turning leases into peers, refusing leases that would break the data plane, and deciding
//! how each peer is reached: through the VXLAN device, or by a direct route via its PublicIP
//! on the external interface (host-gw, VXLAN with DirectRouting).

use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::{BackendConfig, NetworkConfig};
use crate::family::PodNet;
use crate::lease::Lease;
use crate::mac::MacAddr;
use crate::subnet::{subnet_key, subnet_key_dual};

/// A remote node to program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer<N: PodNet = Ipv4Net> {
    /// The peer's pod subnet.
    pub subnet: N,
    /// Where encapsulated packets go (the FDB `dst`), or the gateway of a direct route.
    pub public_ip: N::Addr,
    /// The MAC of the peer's VXLAN device (all zero for a host-gw lease, which has none).
    pub vtep_mac: MacAddr,
    /// Reached by a route via `public_ip` on the external interface, not through VXLAN
    /// (host-gw, or VXLAN with DirectRouting and the peer on this node's link).
    pub direct: bool,
}

/// What to do with one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerVerdict<N: PodNet = Ipv4Net> {
    /// Program it.
    Peer(Peer<N>),
    /// Not ours to program (our own lease, another backend): worth a debug log only.
    Ignore(String),
    /// Malformed or hostile: programming it could break routing, so warn and skip it.
    Reject(String),
}

/// Decides whether a lease becomes a peer of this node's backend.
///
/// `own` is this node's subnet, if it holds one. Like flannel, only leases whose
/// `BackendType` is exactly this node's backend (`"vxlan"`, `"host-gw"`; case-sensitive) are
/// programmed. Unlike flannel, weft also refuses leases whose subnet lies outside the config,
/// overlaps our own subnet, whose VNI differs from ours, or whose public IP or MAC could not
/// be a real node: flannel would program those and break traffic for the whole subnet.
pub fn classify_lease(cfg: &NetworkConfig, own: Option<Ipv4Net>, lease: &Lease) -> PeerVerdict {
    let key = subnet_key(lease.subnet);
    let subnet = lease.subnet;

    if own == Some(subnet) {
        return PeerVerdict::Ignore(format!("lease {key} is this node's own subnet"));
    }
    let wanted = match &cfg.backend {
        BackendConfig::Vxlan(_) => "vxlan",
        BackendConfig::HostGw => "host-gw",
        BackendConfig::Other { type_name } => {
            return PeerVerdict::Ignore(format!(
                "lease {key}: this node's backend {type_name:?} programs no peers"
            ));
        }
    };
    match lease.attrs.backend_type.as_deref() {
        Some(t) if t == wanted => {}
        Some(other) => {
            return PeerVerdict::Ignore(format!(
                "lease {key} has BackendType {other:?}, not {wanted:?}: it belongs to another backend"
            ));
        }
        None => {
            return PeerVerdict::Ignore(format!(
                "lease {key} has no BackendType (udp or alloc backend), not {wanted:?}"
            ));
        }
    }

    if subnet.addr() != subnet.network() {
        return PeerVerdict::Reject(format!(
            "lease {key}: subnet {subnet} has host bits set; delete the key"
        ));
    }
    match cfg.network {
        Some(network) if cfg.enable_ipv4 && network.contains(&subnet) => {}
        Some(network) => {
            return PeerVerdict::Reject(format!(
                "lease {key}: subnet {subnet} is outside Network {network}; delete the key or fix the node's config"
            ));
        }
        None => {
            return PeerVerdict::Reject(format!(
                "lease {key}: this node's config has no IPv4 Network, so no IPv4 lease can be programmed"
            ));
        }
    }
    if let Some(own) = own
        && (own.contains(&subnet) || subnet.contains(&own))
    {
        return PeerVerdict::Reject(format!(
            "lease {key}: subnet {subnet} overlaps this node's subnet {own}; delete the stale lease"
        ));
    }
    if subnet.prefix_len() != cfg.subnet_len {
        return PeerVerdict::Reject(format!(
            "lease {key}: subnet {subnet} is a /{} but SubnetLen is {}; delete the key or align the node's config",
            subnet.prefix_len(),
            cfg.subnet_len
        ));
    }

    let mac = match cfg.vxlan() {
        None => MacAddr::default(),
        Some(vxlan) => {
            let data = match lease.attrs.vxlan_data() {
                Ok(data) => data,
                Err(err) => return PeerVerdict::Reject(format!("lease {key}: {err}")),
            };
            if data.vni != vxlan.vni {
                return PeerVerdict::Reject(format!(
                    "lease {key}: VNI mismatch: the lease has VNI {} but this node uses VNI {}; every node must use the same Backend.VNI",
                    data.vni, vxlan.vni
                ));
            }
            let mac = data.vtep_mac;
            if mac.is_zero() || mac.is_multicast() {
                return PeerVerdict::Reject(format!(
                    "lease {key}: VtepMAC {mac} is not a unicast address, so it cannot be a VXLAN endpoint; restart weftd/flanneld on that node"
                ));
            }
            mac
        }
    };

    let ip = lease.attrs.public_ip;
    let bad_ip = if ip.is_unspecified() {
        Some("an unspecified")
    } else if ip.is_loopback() {
        Some("a loopback")
    } else if ip.is_multicast() {
        Some("a multicast")
    } else if ip.is_broadcast() {
        Some("the broadcast")
    } else {
        None
    };
    if let Some(kind) = bad_ip {
        return PeerVerdict::Reject(format!(
            "lease {key}: PublicIP {ip} is {kind} address, not a reachable node address; set --public-ip (or the interface) on that node"
        ));
    }

    PeerVerdict::Peer(Peer {
        subnet,
        public_ip: ip,
        vtep_mac: mac,
        direct: matches!(cfg.backend, BackendConfig::HostGw),
    })
}

/// The IPv6 half of [`classify_lease`] for a dual-stack node: whether the lease's IPv6 subnet
/// becomes a peer on `flannel-v6.<VNI>`.
///
/// flannel programs the IPv6 half of a vxlan lease from its `BackendV6Data` and `PublicIPv6`
/// when the lease has an IPv6 subnet. weft refuses, as for IPv4, an IPv6 subnet outside
/// `IPv6Network`, of another length, overlapping `own6`, a VNI other than ours, a VtepMAC that
/// is not unicast, and a `PublicIPv6` that cannot be a node's (unspecified, loopback,
/// multicast, link-local: a VXLAN destination needs a routable address). An IPv4-only lease
/// (a node without IPv6) is ignored: its IPv4 half is still a peer.
pub fn classify_lease6(
    cfg: &NetworkConfig,
    own6: Option<Ipv6Net>,
    lease: &Lease,
) -> PeerVerdict<Ipv6Net> {
    let key = subnet_key_dual(lease.subnet, lease.subnet6);
    let Some(subnet) = lease.subnet6 else {
        return PeerVerdict::Ignore(format!(
            "lease {key} has no IPv6 subnet (that node runs IPv4 only): no IPv6 peer"
        ));
    };
    let (true, Some(network)) = (cfg.enable_ipv6, cfg.ipv6_network) else {
        return PeerVerdict::Ignore(format!(
            "lease {key}: this node's config has IPv6 off, so its IPv6 subnet is not programmed"
        ));
    };
    if own6 == Some(subnet) {
        return PeerVerdict::Ignore(format!("lease {key} is this node's own subnet"));
    }
    let Some(vxlan) = cfg.vxlan() else {
        return PeerVerdict::Ignore(format!(
            "lease {key}: weft programs IPv6 peers with the vxlan backend only"
        ));
    };
    if lease.attrs.backend_type.as_deref() != Some("vxlan") {
        return PeerVerdict::Ignore(format!(
            "lease {key} has BackendType {:?}, not \"vxlan\": it belongs to another backend",
            lease.attrs.backend_type.as_deref().unwrap_or("")
        ));
    }
    if subnet.addr() != subnet.network() {
        return PeerVerdict::Reject(format!(
            "lease {key}: IPv6 subnet {subnet} has host bits set; delete the key"
        ));
    }
    if !network.contains(&subnet) {
        return PeerVerdict::Reject(format!(
            "lease {key}: IPv6 subnet {subnet} is outside IPv6Network {network}; delete the key or fix the node's config"
        ));
    }
    if let Some(own6) = own6
        && (own6.contains(&subnet) || subnet.contains(&own6))
    {
        return PeerVerdict::Reject(format!(
            "lease {key}: IPv6 subnet {subnet} overlaps this node's IPv6 subnet {own6}; delete the stale lease"
        ));
    }
    if subnet.prefix_len() != cfg.ipv6_subnet_len {
        return PeerVerdict::Reject(format!(
            "lease {key}: IPv6 subnet {subnet} is a /{} but IPv6SubnetLen is {}; delete the key or align the node's config",
            subnet.prefix_len(),
            cfg.ipv6_subnet_len
        ));
    }
    let data = match lease.attrs.vxlan_v6_data() {
        Ok(data) => data,
        Err(err) => return PeerVerdict::Reject(format!("lease {key}: {err}")),
    };
    if data.vni != vxlan.vni {
        return PeerVerdict::Reject(format!(
            "lease {key}: VNI mismatch in BackendV6Data: the lease has VNI {} but this node uses VNI {}; every node must use the same Backend.VNI",
            data.vni, vxlan.vni
        ));
    }
    let mac = data.vtep_mac;
    if mac.is_zero() || mac.is_multicast() {
        return PeerVerdict::Reject(format!(
            "lease {key}: the IPv6 VtepMAC {mac} is not a unicast address, so it cannot be a VXLAN endpoint; restart weftd/flanneld on that node"
        ));
    }
    let Some(ip) = lease.attrs.public_ipv6 else {
        return PeerVerdict::Reject(format!(
            "lease {key}: PublicIPv6 is null but the lease has an IPv6 subnet; set --public-ipv6 (or give the interface an IPv6 address) on that node"
        ));
    };
    let bad = if ip.is_unspecified() {
        Some("an unspecified")
    } else if ip.is_loopback() {
        Some("a loopback")
    } else if ip.is_multicast() {
        Some("a multicast")
    } else if ip.is_unicast_link_local() {
        Some("a link-local")
    } else if ip.to_ipv4_mapped().is_some() {
        Some("an IPv4-mapped")
    } else {
        None
    };
    if let Some(kind) = bad {
        return PeerVerdict::Reject(format!(
            "lease {key}: PublicIPv6 {ip} is {kind} address, not a routable node address; set --public-ipv6 (or the interface) on that node"
        ));
    }
    PeerVerdict::Peer(Peer {
        subnet,
        public_ip: ip,
        vtep_mac: mac,
        direct: false,
    })
}

/// How this node reaches its peers: the backend's rule and the prefixes directly on the
/// external interface's link (its addresses' networks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// How peers are reached.
    pub mode: ReachMode,
    /// The external interface's name, for messages.
    pub iface: String,
    /// The IPv4 networks of the external interface's addresses (host routes left out): a
    /// PublicIP inside one is on this node's link.
    pub on_link: Vec<Ipv4Net>,
}

/// The backend's rule for reaching a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachMode {
    /// Every peer through the VXLAN device.
    Vxlan,
    /// VXLAN with DirectRouting: a peer on this node's link by a direct route, the others
    /// through the VXLAN device (flannel's rule: `ip route get <PublicIP>` has no gateway).
    VxlanDirect,
    /// host-gw: every peer by a direct route; a peer off this node's link cannot be reached
    /// and is refused.
    HostGw,
}

impl ReachMode {
    /// The rule of `cfg`'s backend.
    pub fn of(cfg: &NetworkConfig) -> ReachMode {
        match &cfg.backend {
            BackendConfig::HostGw => ReachMode::HostGw,
            BackendConfig::Vxlan(vx) if vx.direct_routing => ReachMode::VxlanDirect,
            _ => ReachMode::Vxlan,
        }
    }
}

impl Reach {
    /// Every peer through VXLAN (no DirectRouting).
    pub fn vxlan() -> Reach {
        Reach {
            mode: ReachMode::Vxlan,
            iface: String::new(),
            on_link: Vec::new(),
        }
    }

    /// Whether `ip` is on this node's link.
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        self.on_link
            .iter()
            .any(|n| n.prefix_len() < 32 && n.contains(&ip))
    }

    /// Decides how `peer` is reached (sets [`Peer::direct`]); `Err` says why a host-gw peer
    /// cannot be reached at all.
    pub fn decide(&self, mut peer: Peer) -> Result<Peer, String> {
        match self.mode {
            ReachMode::Vxlan => peer.direct = false,
            ReachMode::VxlanDirect => peer.direct = self.on_link(peer.public_ip),
            ReachMode::HostGw => {
                if !self.on_link(peer.public_ip) {
                    let link = if self.on_link.is_empty() {
                        "no IPv4 network".to_string()
                    } else {
                        self.on_link
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(format!(
                        "lease {}: PublicIP {} is not on this node's link ({} has {link}), and host-gw can only route to nodes on one L2 network; put the nodes on one subnet or use the vxlan backend (with DirectRouting for the nodes that share one)",
                        subnet_key(peer.subnet),
                        peer.public_ip,
                        self.iface
                    ));
                }
                peer.direct = true;
            }
        }
        Ok(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;

    fn cfg() -> NetworkConfig {
        NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}"#)
            .unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    fn lease(subnet: &str, ip: [u8; 4], mac_text: &str) -> Lease {
        Lease {
            subnet6: None,
            subnet: net(subnet),
            attrs: LeaseAttrs::vxlan(Ipv4Addr::from(ip), 1, mac(mac_text)),
        }
    }

    fn own() -> Option<Ipv4Net> {
        Some(net("10.244.1.0/24"))
    }

    #[test]
    fn good_lease_becomes_a_peer() {
        let verdict = classify_lease(
            &cfg(),
            own(),
            &lease("10.244.2.0/24", [192, 168, 1, 12], "aa:bb:cc:dd:ee:02"),
        );
        assert_eq!(
            verdict,
            PeerVerdict::Peer(Peer {
                subnet: net("10.244.2.0/24"),
                public_ip: Ipv4Addr::new(192, 168, 1, 12),
                vtep_mac: mac("aa:bb:cc:dd:ee:02"),
                direct: false,
            })
        );
        // Without an own subnet (not yet acquired) the same lease is still a peer.
        let verdict = classify_lease(
            &cfg(),
            None,
            &lease("10.244.2.0/24", [192, 168, 1, 12], "aa:bb:cc:dd:ee:02"),
        );
        assert!(matches!(verdict, PeerVerdict::Peer(_)));
    }

    fn expect_ignore(verdict: PeerVerdict, needle: &str) {
        match verdict {
            PeerVerdict::Ignore(msg) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("expected Ignore({needle}), got {other:?}"),
        }
    }

    fn expect_reject(verdict: PeerVerdict, needles: &[&str]) {
        match verdict {
            PeerVerdict::Reject(msg) => {
                for needle in needles {
                    assert!(msg.contains(needle), "{msg} (missing {needle})");
                }
            }
            other => panic!("expected Reject({needles:?}), got {other:?}"),
        }
    }

    #[test]
    fn ignored_leases() {
        let cfg = cfg();
        expect_ignore(
            classify_lease(
                &cfg,
                own(),
                &lease("10.244.1.0/24", [192, 168, 1, 11], "aa:bb:cc:dd:ee:01"),
            ),
            "own subnet",
        );

        let mut hostgw = lease("10.244.3.0/24", [192, 168, 1, 13], "aa:bb:cc:dd:ee:03");
        hostgw.attrs.backend_type = Some("host-gw".into());
        hostgw.attrs.backend_data = None;
        expect_ignore(classify_lease(&cfg, own(), &hostgw), "\"host-gw\"");

        let mut upper = lease("10.244.3.0/24", [192, 168, 1, 13], "aa:bb:cc:dd:ee:03");
        upper.attrs.backend_type = Some("VXLAN".into());
        expect_ignore(classify_lease(&cfg, own(), &upper), "\"VXLAN\"");

        let mut udp = lease("10.244.3.0/24", [192, 168, 1, 13], "aa:bb:cc:dd:ee:03");
        udp.attrs.backend_type = None;
        expect_ignore(classify_lease(&cfg, own(), &udp), "no BackendType");

        let hostgw_cfg =
            NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
                .unwrap();
        expect_ignore(
            classify_lease(
                &hostgw_cfg,
                own(),
                &lease("10.244.3.0/24", [192, 168, 1, 13], "aa:bb:cc:dd:ee:03"),
            ),
            "host-gw",
        );
    }

    fn hostgw_cfg() -> NetworkConfig {
        NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
            .unwrap()
    }

    /// A lease exactly as flanneld's host-gw backend writes it.
    fn hostgw_lease(subnet: &str, ip: [u8; 4]) -> Lease {
        let value = format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"host-gw"}}"#,
            Ipv4Addr::from(ip)
        );
        Lease {
            subnet6: None,
            subnet: net(subnet),
            attrs: LeaseAttrs::parse(value.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn a_host_gw_node_takes_host_gw_leases_as_direct_peers_and_ignores_vxlan_ones() {
        let verdict = classify_lease(
            &hostgw_cfg(),
            own(),
            &hostgw_lease("10.244.2.0/24", [192, 168, 1, 12]),
        );
        assert_eq!(
            verdict,
            PeerVerdict::Peer(Peer {
                subnet: net("10.244.2.0/24"),
                public_ip: Ipv4Addr::new(192, 168, 1, 12),
                vtep_mac: MacAddr::default(),
                direct: true,
            })
        );
        // The same checks as for VXLAN leases.
        expect_reject(
            classify_lease(
                &hostgw_cfg(),
                own(),
                &hostgw_lease("10.245.2.0/24", [192, 168, 1, 12]),
            ),
            &["outside Network 10.244.0.0/16"],
        );
        expect_reject(
            classify_lease(
                &hostgw_cfg(),
                own(),
                &hostgw_lease("10.244.2.0/24", [127, 0, 0, 1]),
            ),
            &["PublicIP 127.0.0.1 is a loopback address"],
        );
        // A host-gw lease is ignored by a VXLAN node and the other way round.
        expect_ignore(
            classify_lease(
                &cfg(),
                own(),
                &hostgw_lease("10.244.2.0/24", [192, 168, 1, 12]),
            ),
            "BackendType \"host-gw\", not \"vxlan\"",
        );
        expect_ignore(
            classify_lease(
                &hostgw_cfg(),
                own(),
                &lease("10.244.3.0/24", [192, 168, 1, 13], "aa:bb:cc:dd:ee:03"),
            ),
            "BackendType \"vxlan\", not \"host-gw\"",
        );
    }

    fn reach(mode: ReachMode) -> Reach {
        Reach {
            mode,
            iface: "eth0".into(),
            on_link: vec![net("192.168.1.10/24"), net("10.9.9.9/32")],
        }
    }

    fn peer(ip: [u8; 4]) -> Peer {
        Peer {
            subnet: net("10.244.2.0/24"),
            public_ip: Ipv4Addr::from(ip),
            vtep_mac: mac("aa:bb:cc:dd:ee:02"),
            direct: false,
        }
    }

    #[test]
    fn direct_routing_takes_the_peers_on_the_link_directly_and_the_others_through_vxlan() {
        let r = reach(ReachMode::VxlanDirect);
        assert!(r.decide(peer([192, 168, 1, 12])).unwrap().direct);
        assert!(!r.decide(peer([192, 168, 2, 12])).unwrap().direct);
        // A host address (/32) on the interface puts nothing else on the link.
        assert!(!r.decide(peer([10, 9, 9, 8])).unwrap().direct);
        // Without DirectRouting nothing is direct, on the link or not.
        let r = reach(ReachMode::Vxlan);
        assert!(!r.decide(peer([192, 168, 1, 12])).unwrap().direct);
        let mut was_direct = peer([192, 168, 1, 12]);
        was_direct.direct = true;
        assert!(!r.decide(was_direct).unwrap().direct);
    }

    #[test]
    fn host_gw_refuses_a_peer_off_the_link_and_says_what_to_do() {
        let r = reach(ReachMode::HostGw);
        assert!(r.decide(peer([192, 168, 1, 12])).unwrap().direct);
        let err = r.decide(peer([192, 168, 2, 12])).unwrap_err();
        for needle in [
            "lease 10.244.2.0-24",
            "PublicIP 192.168.2.12 is not on this node's link",
            "eth0 has 192.168.1.10/24, 10.9.9.9/32",
            "vxlan backend",
        ] {
            assert!(err.contains(needle), "{err} (missing {needle})");
        }
        let none = Reach {
            on_link: Vec::new(),
            ..reach(ReachMode::HostGw)
        };
        assert!(
            none.decide(peer([192, 168, 1, 12]))
                .unwrap_err()
                .contains("eth0 has no IPv4 network")
        );
    }

    #[test]
    fn the_reach_mode_follows_the_backend() {
        let parse = |t: &str| NetworkConfig::parse(t.as_bytes()).unwrap();
        assert_eq!(ReachMode::of(&cfg()), ReachMode::Vxlan);
        assert_eq!(ReachMode::of(&hostgw_cfg()), ReachMode::HostGw);
        assert_eq!(
            ReachMode::of(&parse(
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#
            )),
            ReachMode::VxlanDirect
        );
    }

    #[test]
    fn rejected_leases() {
        let cfg = cfg();
        let good_mac = "aa:bb:cc:dd:ee:02";
        let ip = [192, 168, 1, 12];

        let mut no_data = lease("10.244.2.0/24", ip, good_mac);
        no_data.attrs.backend_data = None;
        expect_reject(
            classify_lease(&cfg, own(), &no_data),
            &["10.244.2.0-24", "BackendData is missing"],
        );

        let mut no_mac = lease("10.244.2.0/24", ip, good_mac);
        no_mac.attrs.backend_data = Some(serde_json::json!({"VNI": 1}));
        expect_reject(
            classify_lease(&cfg, own(), &no_mac),
            &["10.244.2.0-24", "VtepMAC is missing"],
        );

        let mut bad_mac = lease("10.244.2.0/24", ip, good_mac);
        bad_mac.attrs.backend_data = Some(serde_json::json!({"VNI": 1, "VtepMAC": "nope"}));
        expect_reject(classify_lease(&cfg, own(), &bad_mac), &["VtepMAC", "nope"]);

        let mut not_object = lease("10.244.2.0/24", ip, good_mac);
        not_object.attrs.backend_data = Some(serde_json::json!("x"));
        expect_reject(classify_lease(&cfg, own(), &not_object), &["BackendData"]);

        let mut other_vni = lease("10.244.2.0/24", ip, good_mac);
        other_vni.attrs.backend_data = Some(serde_json::json!({"VNI": 2, "VtepMAC": good_mac}));
        expect_reject(
            classify_lease(&cfg, own(), &other_vni),
            &["10.244.2.0-24", "VNI mismatch", "VNI 2", "VNI 1"],
        );

        expect_reject(
            classify_lease(&cfg, own(), &lease("10.245.2.0/24", ip, good_mac)),
            &["10.245.2.0-24", "outside Network 10.244.0.0/16"],
        );
        expect_reject(
            classify_lease(&cfg, own(), &lease("10.244.2.0/25", ip, good_mac)),
            &["10.244.2.0-25", "SubnetLen is 24"],
        );
        expect_reject(
            classify_lease(&cfg, own(), &lease("10.244.0.0/23", ip, good_mac)),
            &["10.244.0.0-23", "overlaps this node's subnet 10.244.1.0/24"],
        );
        expect_reject(
            classify_lease(&cfg, own(), &lease("10.244.1.128/25", ip, good_mac)),
            &["overlaps"],
        );
        let host_bits = Lease {
            subnet6: None,
            subnet: Ipv4Net::new(Ipv4Addr::new(10, 244, 2, 7), 24).unwrap(),
            attrs: LeaseAttrs::vxlan(Ipv4Addr::from(ip), 1, mac(good_mac)),
        };
        expect_reject(classify_lease(&cfg, own(), &host_bits), &["host bits"]);

        for (bad_ip, kind) in [
            ([0, 0, 0, 0], "unspecified"),
            ([127, 0, 0, 1], "loopback"),
            ([224, 0, 0, 5], "multicast"),
            ([255, 255, 255, 255], "broadcast"),
        ] {
            expect_reject(
                classify_lease(&cfg, own(), &lease("10.244.2.0/24", bad_ip, good_mac)),
                &["10.244.2.0-24", "PublicIP", kind],
            );
        }
        for bad_mac in [
            "00:00:00:00:00:00",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
        ] {
            expect_reject(
                classify_lease(&cfg, own(), &lease("10.244.2.0/24", ip, bad_mac)),
                &["10.244.2.0-24", "VtepMAC", bad_mac],
            );
        }
    }
}
