//! Turning leases into VXLAN peers, refusing leases that would break the data plane.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::NetworkConfig;
use crate::lease::Lease;
use crate::mac::MacAddr;
use crate::subnet::subnet_key;

/// A remote node to program on the VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// The peer's pod subnet.
    pub subnet: Ipv4Net,
    /// Where encapsulated packets go (the FDB `dst`).
    pub public_ip: Ipv4Addr,
    /// The MAC of the peer's VXLAN device.
    pub vtep_mac: MacAddr,
}

/// What to do with one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerVerdict {
    /// Program it.
    Peer(Peer),
    /// Not ours to program (our own lease, another backend): worth a debug log only.
    Ignore(String),
    /// Malformed or hostile: programming it could break routing, so warn and skip it.
    Reject(String),
}

/// Decides whether a lease becomes a VXLAN peer.
///
/// `own` is this node's subnet, if it holds one. Like flannel, only `BackendType` exactly
/// `"vxlan"` is programmed (case-sensitive). Unlike flannel, weft also refuses leases whose
/// subnet lies outside the config, overlaps our own subnet, whose VNI differs from ours, or
/// whose public IP or MAC could not be a real VTEP: flannel would program those and break
/// traffic for the whole subnet.
pub fn classify_lease(cfg: &NetworkConfig, own: Option<Ipv4Net>, lease: &Lease) -> PeerVerdict {
    let key = subnet_key(lease.subnet);
    let subnet = lease.subnet;

    if own == Some(subnet) {
        return PeerVerdict::Ignore(format!("lease {key} is this node's own subnet"));
    }
    match lease.attrs.backend_type.as_deref() {
        Some("vxlan") => {}
        Some(other) => {
            return PeerVerdict::Ignore(format!(
                "lease {key} has BackendType {other:?}, not \"vxlan\": it belongs to another backend"
            ));
        }
        None => {
            return PeerVerdict::Ignore(format!(
                "lease {key} has no BackendType (udp or alloc backend), not \"vxlan\""
            ));
        }
    }
    let Some(vxlan) = cfg.vxlan() else {
        return PeerVerdict::Ignore(format!(
            "lease {key} is a vxlan lease but this node's backend is {:?}",
            cfg.backend.type_name()
        ));
    };

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
    })
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
