//! Synthetic peers: distinct subnets, fake public IPs on the underlay and distinct MACs.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::etcd::{lease_key, lease_value, lease_value_host_gw};
use crate::nlwatch::Entry;

/// The flannel backend a scenario runs weftd with (and the fake peers publish).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `"Type":"vxlan"`: per peer a neighbour, an FDB entry and a route on flannel.1.
    Vxlan,
    /// `"Type":"host-gw"`: per peer one main-table route via its PublicIP on eth0, no device.
    HostGw,
}

impl Backend {
    /// How many kernel entries weftd programs per peer.
    pub fn entries_per_peer(self) -> usize {
        match self {
            Backend::Vxlan => 3,
            Backend::HostGw => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakePeer {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub mac: [u8; 6],
}

impl FakePeer {
    pub fn key(&self) -> String {
        lease_key(self.subnet)
    }
    /// The lease a flanneld/weftd with the VXLAN backend writes for this peer.
    pub fn value(&self) -> String {
        lease_value(self.public_ip, self.mac)
    }
    /// The lease this peer writes with `backend` (host-gw: no MAC, no backend data).
    pub fn value_for(&self, backend: Backend) -> String {
        match backend {
            Backend::Vxlan => self.value(),
            Backend::HostGw => lease_value_host_gw(self.public_ip),
        }
    }
    /// The kernel entries weftd programs for this peer with `backend`, as the netlink
    /// listener reports them: VXLAN route, neighbour and FDB entry; host-gw the route alone.
    pub fn entries(&self, backend: Backend) -> Vec<Entry> {
        match backend {
            Backend::Vxlan => vec![
                Entry::Route(self.subnet),
                Entry::Neigh(self.gw()),
                Entry::Fdb(self.mac),
            ],
            Backend::HostGw => vec![Entry::Route(self.subnet)],
        }
    }
    /// The neighbour entry and route gateway: the subnet's own address.
    pub fn gw(&self) -> Ipv4Addr {
        self.subnet.network()
    }
    pub fn mac_str(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// `n` peers with /24 subnets counted up from `first` (skipping `skip`, e.g. the observer's
/// own subnet), public IPs 10.250.100.1, 10.250.100.2, ... (on the underlay /16, never a
/// real node: nodes use 10.250.1.x up to node 249), MACs `0e:be:<tag>:..` (locally
/// administered unicast).
pub fn fake_peers(n: usize, first: Ipv4Addr, skip: Option<Ipv4Net>, tag: u8) -> Vec<FakePeer> {
    let base = u32::from(first);
    let mut out = Vec::with_capacity(n);
    let mut k = 0u32;
    while out.len() < n {
        let subnet = Ipv4Net::new(Ipv4Addr::from(base + (k << 8)), 24).unwrap_or_default();
        k += 1;
        if Some(subnet) == skip {
            continue;
        }
        let i = out.len();
        let public_ip = Ipv4Addr::new(10, 250, (100 + i / 250) as u8, (i % 250 + 1) as u8);
        let mac = [0x0e, 0xbe, tag, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        out.push(FakePeer {
            subnet,
            public_ip,
            mac,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn distinct_and_skipping_own() {
        let own: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let p = fake_peers(600, Ipv4Addr::new(10, 244, 0, 0), Some(own), 1);
        assert_eq!(p.len(), 600);
        assert!(p.iter().all(|x| x.subnet != own));
        assert_eq!(
            p.iter().map(|x| x.subnet).collect::<BTreeSet<_>>().len(),
            600
        );
        assert_eq!(
            p.iter().map(|x| x.public_ip).collect::<BTreeSet<_>>().len(),
            600
        );
        assert_eq!(p.iter().map(|x| x.mac).collect::<BTreeSet<_>>().len(), 600);
        assert_eq!(p[0].subnet, "10.244.0.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(p[1].subnet, "10.244.2.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(p[300].subnet, "10.245.45.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(p[0].public_ip, Ipv4Addr::new(10, 250, 100, 1));
        assert_eq!(p[250].public_ip, Ipv4Addr::new(10, 250, 101, 1));
        assert_eq!(p[1].mac_str(), "0e:be:01:00:00:01");
        assert!(p[0].value().contains("\"VtepMAC\":\"0e:be:01:00:00:00\""));
        assert_eq!(p[0].key(), "/coreos.com/network/subnets/10.244.0.0-24");
        assert_eq!(p[0].value_for(Backend::Vxlan), p[0].value());
    }

    #[test]
    fn host_gw_peers_write_flanneld_host_gw_leases_and_expect_one_route() {
        let p = fake_peers(2, Ipv4Addr::new(10, 200, 0, 0), None, 0xb0);
        assert_eq!(
            p[1].value_for(Backend::HostGw),
            r#"{"PublicIP":"10.250.100.2","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        assert_eq!(
            p[1].entries(Backend::HostGw),
            vec![Entry::Route("10.200.1.0/24".parse().unwrap())]
        );
        assert_eq!(
            p[1].entries(Backend::Vxlan),
            vec![
                Entry::Route("10.200.1.0/24".parse().unwrap()),
                Entry::Neigh(Ipv4Addr::new(10, 200, 1, 0)),
                Entry::Fdb([0x0e, 0xbe, 0xb0, 0, 0, 1]),
            ]
        );
        for b in [Backend::Vxlan, Backend::HostGw] {
            assert_eq!(p[0].entries(b).len(), b.entries_per_peer());
        }
    }

    #[test]
    fn every_public_ip_is_on_the_underlay_16() {
        // host-gw refuses a peer off the external interface's networks (10.250.0.0/16 on
        // every node's eth0), so the fake peers must all sit inside it, and never on a node.
        let underlay: Ipv4Net = "10.250.0.0/16".parse().unwrap();
        let p = fake_peers(8000, Ipv4Addr::new(10, 200, 0, 0), None, 0xb0);
        assert!(p.iter().all(|x| underlay.contains(&x.public_ip)));
        assert!(p.iter().all(|x| x.public_ip.octets()[2] >= 100));
    }
}
