//! Watching each node's kernel for flaps: a correct neighbour, FDB or route entry of a peer
//! that is deleted and then added again. weftd never needs to do that (it replaces entries in
//! place and leaves correct ones alone), so outside the soak's own damage every flap is a bug.
//!
//! The listener is a netlink socket opened inside the node's namespace and read on its own
//! thread (like `ip monitor neigh route` plus `bridge monitor fdb`), each announcement stamped
//! when it was read. The counting is pure ([`FlapCounter`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Result;
use ipnet::Ipv4Net;
use netlink_packet_route::{neighbour::NeighbourMessage, route::RouteMessage};
use serde::Serialize;
use weft_core::mac::MacAddr;
use weft_core::peer::Peer;
use weft_net::netlink::{neigh_facts, route_facts};
use weft_testbed::nlmonitor::{Announced, Announcement, NetlinkMonitor};

const RCVBUF: usize = 8 << 20;

/// An entry the kernel announced, with what the announcement says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Route { dst: Ipv4Net, gw: Option<Ipv4Addr> },
    Neigh { ip: Ipv4Addr, mac: Option<MacAddr> },
    Fdb { mac: MacAddr, dst: Option<Ipv4Addr> },
}

/// One announcement (`Overrun`: the kernel dropped some, so the flap count may be short).
pub type NlEvent = Announcement<Seen>;

/// A running listener in one namespace; stops when dropped.
pub struct Watcher(NetlinkMonitor<Seen>);

impl Watcher {
    /// Subscribes to neighbour (ARP and FDB) and IPv4 route announcements inside `ns`.
    pub fn start(ns: &str) -> Result<Watcher> {
        Ok(Watcher(NetlinkMonitor::start(ns, RCVBUF, |a| match a {
            Announced::Route(r) => route(r),
            Announced::Neighbour(n) => neigh(n),
        })?))
    }

    /// Everything announced since the last call.
    pub fn drain(&self) -> Vec<NlEvent> {
        self.0.drain()
    }
}

fn route(r: &RouteMessage) -> Option<Seen> {
    let f = route_facts(r)?;
    f.in_main_table().then_some(Seen::Route {
        dst: f.dst,
        gw: f.gw,
    })
}

fn neigh(n: &NeighbourMessage) -> Option<Seen> {
    let f = neigh_facts(n)?;
    if f.fdb {
        f.mac.map(|mac| Seen::Fdb { mac, dst: f.ip })
    } else {
        f.ip.map(|ip| Seen::Neigh { ip, mac: f.mac })
    }
}

/// The three entries weftd programs per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Neigh,
    Fdb,
    Route,
}

/// Which of `peers`' correct entries an announcement is about (index into `peers`).
pub fn match_entry(peers: &[Peer], seen: &Seen) -> Option<(usize, EntryKind)> {
    peers.iter().position(|p| matches_peer(p, seen)).map(|i| {
        let kind = match seen {
            Seen::Route { .. } => EntryKind::Route,
            Seen::Neigh { .. } => EntryKind::Neigh,
            Seen::Fdb { .. } => EntryKind::Fdb,
        };
        (i, kind)
    })
}

fn matches_peer(p: &Peer, seen: &Seen) -> bool {
    let gw = p.subnet.network();
    match *seen {
        Seen::Route { dst, gw: g } => dst == p.subnet && g.is_none_or(|g| g == gw),
        Seen::Neigh { ip, mac } => ip == gw && mac.is_none_or(|m| m == p.vtep_mac),
        Seen::Fdb { mac, dst } => mac == p.vtep_mac && dst.is_none_or(|d| d == p.public_ip),
    }
}

/// One flap: a correct entry deleted, then added back.
#[derive(Debug, Clone, Copy)]
pub struct Flap {
    /// The node whose kernel flapped.
    pub node: usize,
    /// The peer the entry is for (a node index).
    pub peer: usize,
    pub kind: EntryKind,
    pub deleted_at: Instant,
    /// How long the entry was missing.
    pub gap: Duration,
}

/// Counts flaps from the announcements of every node's listener.
#[derive(Debug, Default)]
pub struct FlapCounter {
    /// Correct entries deleted and not (yet) added back: (node, peer, kind) → when.
    pending: BTreeMap<(usize, usize, EntryKind), Instant>,
    pub flaps: Vec<Flap>,
    /// Deletions of correct entries that the soak caused itself (ignored).
    pub caused_by_soak: u64,
    pub overruns: u64,
}

impl FlapCounter {
    /// Takes one announcement from `node`'s kernel. `peers` are the node's correct peers with
    /// their node indices; `caused_by_soak` says the soak was damaging this node then.
    pub fn observe(
        &mut self,
        node: usize,
        peers: &[(usize, Peer)],
        event: &NlEvent,
        caused_by_soak: bool,
    ) {
        let NlEvent::Change {
            at,
            new,
            item: seen,
        } = *event
        else {
            self.overruns += 1;
            return;
        };
        let plain: Vec<Peer> = peers.iter().map(|(_, p)| *p).collect();
        let Some((i, kind)) = match_entry(&plain, &seen) else {
            return;
        };
        let key = (node, peers[i].0, kind);
        if !new {
            if caused_by_soak {
                self.caused_by_soak += 1;
            } else {
                self.pending.entry(key).or_insert(at);
            }
        } else if let Some(deleted_at) = self.pending.remove(&key) {
            self.flaps.push(Flap {
                node,
                peer: key.1,
                kind,
                deleted_at,
                gap: at.saturating_duration_since(deleted_at),
            });
        }
    }

    /// Correct entries deleted (not by the soak) and never added back.
    pub fn still_missing(&self) -> impl Iterator<Item = ((usize, usize, EntryKind), Instant)> + '_ {
        self.pending.iter().map(|(k, at)| (*k, *at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::test_peer as peer;

    fn ev(at: Instant, new: bool, seen: Seen) -> NlEvent {
        NlEvent::Change {
            at,
            new,
            item: seen,
        }
    }

    #[test]
    fn only_a_peers_exact_entries_match() {
        let peers = [peer(1), peer(2)];
        let route = Seen::Route {
            dst: "10.244.2.0/24".parse().unwrap(),
            gw: Some(Ipv4Addr::new(10, 244, 2, 0)),
        };
        assert_eq!(match_entry(&peers, &route), Some((1, EntryKind::Route)));
        let no_gateway = Seen::Route {
            dst: "10.244.2.0/24".parse().unwrap(),
            gw: None,
        };
        assert_eq!(
            match_entry(&peers, &no_gateway),
            Some((1, EntryKind::Route))
        );
        let other_gw = Seen::Route {
            dst: "10.244.2.0/24".parse().unwrap(),
            gw: Some(Ipv4Addr::new(10, 250, 0, 1)),
        };
        assert_eq!(match_entry(&peers, &other_gw), None);
        let pod_arp = Seen::Neigh {
            ip: Ipv4Addr::new(10, 244, 1, 2),
            mac: Some(MacAddr([2, 0, 0, 0, 0, 9])),
        };
        assert_eq!(match_entry(&peers, &pod_arp), None);
        let fdb = Seen::Fdb {
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: Some(Ipv4Addr::new(10, 250, 1, 1)),
        };
        assert_eq!(match_entry(&peers, &fdb), Some((0, EntryKind::Fdb)));
        let stale_fdb = Seen::Fdb {
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: Some(Ipv4Addr::new(10, 250, 1, 7)),
        };
        assert_eq!(match_entry(&peers, &stale_fdb), None);
    }

    #[test]
    fn a_delete_then_add_is_a_flap_unless_the_soak_caused_it() {
        let peers = [(4, peer(1))];
        let neigh = Seen::Neigh {
            ip: Ipv4Addr::new(10, 244, 1, 0),
            mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        };
        let t = Instant::now();
        let mut c = FlapCounter::default();
        c.observe(0, &peers, &ev(t, true, neigh), false);
        assert!(c.flaps.is_empty(), "an add alone is no flap");
        c.observe(0, &peers, &ev(t, false, neigh), false);
        assert_eq!(c.still_missing().count(), 1);
        c.observe(
            0,
            &peers,
            &ev(t + Duration::from_millis(3), true, neigh),
            false,
        );
        assert_eq!(c.flaps.len(), 1);
        let f = c.flaps[0];
        assert_eq!((f.node, f.peer, f.kind), (0, 4, EntryKind::Neigh));
        assert_eq!(f.gap, Duration::from_millis(3));
        assert_eq!(c.still_missing().count(), 0);

        c.observe(1, &peers, &ev(t, false, neigh), true);
        c.observe(1, &peers, &ev(t, true, neigh), true);
        assert_eq!(c.flaps.len(), 1, "the soak's own damage is not a flap");
        assert_eq!(c.caused_by_soak, 1);
        c.observe(1, &peers, &NlEvent::Overrun, false);
        assert_eq!(c.overruns, 1);
    }
}
