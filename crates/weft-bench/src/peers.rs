//! Synthetic peers: distinct subnets, fake public IPs on the underlay and distinct MACs.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::etcd::{lease_key, lease_value};

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
    pub fn value(&self) -> String {
        lease_value(self.public_ip, self.mac)
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
    }
}
