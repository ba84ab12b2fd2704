//! What weftd has programmed, as its `/peers` endpoint serves it and `weft status` reads it.
//!
//! [`PeersView`] is kept by weftd from its model of the device after each reconcile pass (no
//! kernel read of its own); it remembers since when each peer has been programmed as it is.
//! [`PeersDoc`] is the JSON document, shared by both sides so the format cannot drift.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::dataplane::Programmed;
use crate::mac::MacAddr;
use crate::peer::Peer;

/// This node's own lease as weftd holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnLease {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub vtep_mac: MacAddr,
    /// Unix time the etcd lease expires unless renewed; `None` for a reservation.
    pub expires: Option<u64>,
    /// Unix time since which weftd has held this subnet.
    pub since: u64,
}

/// One peer weftd wants programmed, and whether it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    /// All zero for a host-gw peer, which has none.
    pub vtep_mac: MacAddr,
    /// Reached by a direct route via `public_ip` (host-gw, DirectRouting), not VXLAN.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    /// True when everything the peer needs is in the kernel: the neighbour, FDB entry and
    /// route through the device, or the direct route.
    pub programmed: bool,
    /// The entries the device lacks (`neighbour`, `fdb`, `route`); empty when programmed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Unix time since which the peer has been programmed with this IP and MAC (`None`
    /// while it is not programmed).
    pub since: Option<u64>,
}

/// The `/peers` document.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeersDoc {
    /// `None` until weftd holds a lease.
    pub lease: Option<OwnLease>,
    /// Unix time of the reconcile pass this describes (0 before the first).
    pub updated: u64,
    /// By subnet.
    pub peers: Vec<PeerState>,
}

/// weftd's view, updated after every reconcile pass.
#[derive(Debug, Clone, Default)]
pub struct PeersView {
    lease: Option<OwnLease>,
    updated: u64,
    peers: BTreeMap<Ipv4Net, PeerState>,
}

impl PeersView {
    /// Records this node's lease (`since` is kept while the subnet stays the same).
    pub fn set_lease(
        &mut self,
        subnet: Ipv4Net,
        public_ip: Ipv4Addr,
        vtep_mac: MacAddr,
        expires: Option<u64>,
        now: u64,
    ) {
        let since = match &self.lease {
            Some(l) if l.subnet == subnet => l.since,
            _ => now,
        };
        self.lease = Some(OwnLease {
            subnet,
            public_ip,
            vtep_mac,
            expires,
            since,
        });
    }

    /// After a reconcile pass: `peers` are the peers wanted, `model` what the device holds.
    /// A peer keeps its `since` while it stays programmed with the same IP and MAC.
    /// O(n log n) for n peers.
    pub fn update(&mut self, peers: &[Peer], model: &Programmed, now: u64) {
        let mut next = BTreeMap::new();
        for p in peers {
            if next.contains_key(&p.subnet) {
                continue;
            }
            let missing: Vec<String> = model
                .missing_for(p)
                .into_iter()
                .map(str::to_string)
                .collect();
            let programmed = missing.is_empty();
            let since = if programmed {
                match self.peers.get(&p.subnet) {
                    Some(old)
                        if old.public_ip == p.public_ip
                            && old.vtep_mac == p.vtep_mac
                            && old.direct == p.direct
                            && old.since.is_some() =>
                    {
                        old.since
                    }
                    _ => Some(now),
                }
            } else {
                None
            };
            next.insert(
                p.subnet,
                PeerState {
                    subnet: p.subnet,
                    public_ip: p.public_ip,
                    vtep_mac: p.vtep_mac,
                    direct: p.direct,
                    programmed,
                    missing,
                    since,
                },
            );
        }
        self.peers = next;
        self.updated = now;
    }

    pub fn doc(&self) -> PeersDoc {
        PeersDoc {
            lease: self.lease.clone(),
            updated: self.updated,
            peers: self.peers.values().cloned().collect(),
        }
    }

    /// The `/peers` body (compact JSON: a few dozen bytes a peer).
    pub fn render(&self) -> String {
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(&self.doc()).unwrap_or_else(|_| "{}".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{Op, desired_state};

    fn peer(n: u8, mac: u8) -> Peer {
        Peer {
            subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            public_ip: Ipv4Addr::new(192, 168, 0, n),
            vtep_mac: MacAddr::from([0x0a, 0, 0, 0, 0, mac]),
            direct: false,
        }
    }

    #[test]
    fn renders_programmed_peers_with_since_and_what_is_missing() {
        let peers = vec![peer(2, 2), peer(3, 3)];
        let mut model = Programmed::from_state(&desired_state(&peers));
        let mut v = PeersView::default();
        v.set_lease(
            "10.244.1.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 168, 0, 1),
            MacAddr::from([0x0a, 0, 0, 0, 0, 1]),
            Some(2000),
            100,
        );
        v.update(&peers, &model, 100);
        let doc: PeersDoc = serde_json::from_str(&v.render()).unwrap();
        assert_eq!(doc.updated, 100);
        assert_eq!(doc.lease.as_ref().unwrap().since, 100);
        assert_eq!(doc.lease.as_ref().unwrap().expires, Some(2000));
        assert_eq!(doc.peers.len(), 2);
        assert!(
            doc.peers
                .iter()
                .all(|p| p.programmed && p.since == Some(100))
        );
        assert!(v.render().contains(r#""vtep_mac":"0a:00:00:00:00:02""#));

        // The route of 10.244.3.0/24 disappears: that peer is not programmed, the other keeps
        // its since.
        let route = desired_state(&[peer(3, 3)]).routes[0];
        model.applied(&Op::DelRoute(route));
        v.set_lease(
            "10.244.1.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 168, 0, 1),
            MacAddr::from([0x0a, 0, 0, 0, 0, 1]),
            Some(3000),
            200,
        );
        v.update(&peers, &model, 200);
        let doc = v.doc();
        assert_eq!(doc.lease.as_ref().unwrap().since, 100, "same subnet");
        assert_eq!(doc.peers[0].since, Some(100));
        assert!(!doc.peers[1].programmed);
        assert_eq!(doc.peers[1].missing, vec!["route".to_string()]);
        assert_eq!(doc.peers[1].since, None);

        // Back, and node 2 has a new MAC: both programmed, both since now.
        let peers = vec![peer(2, 9), peer(3, 3)];
        let model = Programmed::from_state(&desired_state(&peers));
        v.update(&peers, &model, 300);
        let doc = v.doc();
        assert_eq!(doc.peers[0].since, Some(300));
        assert_eq!(doc.peers[1].since, Some(300));
        assert!(doc.peers.iter().all(|p| p.missing.is_empty()));
    }

    #[test]
    fn an_empty_view_renders_a_document_without_lease() {
        let doc: PeersDoc = serde_json::from_str(&PeersView::default().render()).unwrap();
        assert_eq!(doc, PeersDoc::default());
    }
}
