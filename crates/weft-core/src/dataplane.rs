//! The VXLAN data plane as data: what the kernel should hold for a set of peers, and the
//! operations that take it from what it holds now.
//!
//! Per peer flannel programs, in this order, a permanent neighbour (ARP) entry for the peer's
//! subnet address with the peer's VTEP MAC, an FDB entry sending that MAC to the peer's public
//! IP, and an on-link route to the subnet via the subnet address. The route comes last so the
//! kernel never has to ARP for the gateway. Unlike flannel, the diff also removes entries that
//! are no longer wanted (stale FDB entries after an IP change, peers deleted while weftd was
//! down) and leaves correct entries alone, so a restart changes nothing.
//!
//! A peer reached directly (host-gw, or VXLAN with DirectRouting and the peer on this node's
//! link) gets only a route via its PublicIP on the external interface (flannel's
//! `ip route replace <subnet> via <PublicIP>`), and nothing on the VXLAN device. Such routes
//! are weft's when they lie inside the flannel Network, in the main table, with a gateway, on
//! the external interface: the diff removes the ones no peer calls for (a node that left, a
//! switch from host-gw to VXLAN), which flannel never does.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;

use crate::family::PodNet;
use crate::mac::MacAddr;
use crate::peer::Peer;

/// A permanent neighbour (ARP) entry on `flannel.<VNI>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighEntry<N: PodNet = Ipv4Net> {
    /// The peer's subnet address (e.g. `10.244.2.0`).
    pub ip: N::Addr,
    /// The peer's VTEP MAC.
    pub mac: MacAddr,
}

/// A permanent `self` FDB entry with a destination on `flannel.<VNI>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry<N: PodNet = Ipv4Net> {
    /// The peer's VTEP MAC.
    pub mac: MacAddr,
    /// The peer's public IP.
    pub dst: N::Addr,
}

/// A main-table route to a peer's subnet: out of `flannel.<VNI>`, or (`underlay`) out of the
/// external interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteEntry<N: PodNet = Ipv4Net> {
    /// The peer's subnet.
    pub dst: N,
    /// The gateway (the peer's subnet address through VXLAN, its PublicIP directly), if any.
    pub gw: Option<N::Addr>,
    /// Whether the route has the `onlink` flag.
    pub onlink: bool,
    /// The route leaves through the external interface (a direct route), not the VXLAN
    /// device.
    pub underlay: bool,
}

/// What weft owns in the kernel (what weft-net reads, or what should be): the VXLAN device's
/// entries, and the direct routes on the external interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelState<N: PodNet = Ipv4Net> {
    /// Permanent neighbour entries.
    pub neighs: Vec<NeighEntry<N>>,
    /// FDB entries with a destination.
    pub fdb: Vec<FdbEntry<N>>,
    /// Routes through the device, and direct routes.
    pub routes: Vec<RouteEntry<N>>,
}

/// Where weft's entries are in the kernel: the VXLAN device (none with host-gw), and the
/// external interface, whose routes into the flannel Network are weft's direct routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned<N: PodNet = Ipv4Net> {
    /// The VXLAN device's index.
    pub device: Option<u32>,
    /// The external interface's index, and the flannel Network.
    pub underlay: Option<(u32, N)>,
}

impl<N: PodNet> Owned<N> {
    /// The entries of the VXLAN device `index` alone.
    pub fn device(index: u32) -> Owned<N> {
        Owned {
            device: Some(index),
            underlay: None,
        }
    }

    /// A route out of link `oif` (main table, unicast, not made by the kernel) as weft's
    /// entry, if it is weft's: any route out of the VXLAN device, and a route out of the
    /// external interface with a gateway to a subnet strictly inside the flannel Network
    /// (never a route to the whole Network, which no peer's subnet is).
    pub fn route(&self, oif: u32, r: RouteEntry<N>) -> Option<RouteEntry<N>> {
        if Some(oif) == self.device {
            return Some(RouteEntry {
                underlay: false,
                ..r
            });
        }
        match self.underlay {
            Some((index, network))
                if index == oif
                    && r.gw.is_some()
                    && network.contains_net(&r.dst)
                    && r.dst.prefix_len() > network.prefix_len() =>
            {
                Some(RouteEntry {
                    underlay: true,
                    ..r
                })
            }
            _ => None,
        }
    }

    /// The link a route goes out of.
    pub fn link_of(&self, r: &RouteEntry<N>) -> Option<u32> {
        if r.underlay {
            self.underlay.map(|(index, _)| index)
        } else {
            self.device
        }
    }
}

/// One change to the kernel. `Set*` operations are "replace" (create or overwrite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op<N: PodNet = Ipv4Net> {
    /// `ip route del <dst> [via <gw>] dev flannel.N` (or `dev <ext>` for a direct route).
    DelRoute(RouteEntry<N>),
    /// `bridge fdb del <mac> dev flannel.N dst <dst> self`.
    DelFdb(FdbEntry<N>),
    /// `ip neigh del <ip> dev flannel.N`.
    DelNeigh(NeighEntry<N>),
    /// `ip neigh replace <ip> lladdr <mac> dev flannel.N nud permanent`.
    SetNeigh(NeighEntry<N>),
    /// `bridge fdb replace <mac> dev flannel.N dst <dst> self permanent`.
    SetFdb(FdbEntry<N>),
    /// `ip route replace <dst> via <gw> dev flannel.N onlink`, or `ip route replace <dst> via <PublicIP> dev <ext>`.
    SetRoute(RouteEntry<N>),
}

/// The peers that are programmed: sorted by subnet, one per subnet (the first given wins).
fn effective_peers<N: PodNet>(peers: &[Peer<N>]) -> Vec<Peer<N>> {
    let mut sorted: Vec<(usize, Peer<N>)> = peers.iter().copied().enumerate().collect();
    sorted.sort_by_key(|(index, peer)| (peer.subnet.trunc(), *index));
    let mut out: Vec<Peer<N>> = Vec::with_capacity(sorted.len());
    for (_, peer) in sorted {
        if out
            .last()
            .is_none_or(|last| last.subnet.trunc() != peer.subnet.trunc())
        {
            out.push(peer);
        }
    }
    out
}

fn neigh_of<N: PodNet>(peer: &Peer<N>) -> NeighEntry<N> {
    NeighEntry {
        ip: peer.subnet.network(),
        mac: peer.vtep_mac,
    }
}

fn fdb_of<N: PodNet>(peer: &Peer<N>) -> FdbEntry<N> {
    FdbEntry {
        mac: peer.vtep_mac,
        dst: peer.public_ip,
    }
}

fn route_of<N: PodNet>(peer: &Peer<N>) -> RouteEntry<N> {
    if peer.direct {
        RouteEntry {
            dst: peer.subnet.trunc(),
            gw: Some(peer.public_ip),
            onlink: false,
            underlay: true,
        }
    } else {
        RouteEntry {
            dst: peer.subnet.trunc(),
            gw: Some(peer.subnet.network()),
            onlink: true,
            underlay: false,
        }
    }
}

/// The kernel state `peers` call for, without contradictions:
///
/// - peers are taken in subnet order, and for a subnet listed twice the first peer wins;
/// - one neighbour entry per IP (the peer with the lowest subnet wins), since the kernel
///   keeps one entry per address;
/// - one FDB entry per MAC: when two peers claim the same VTEP MAC (a cloned VM, a hostile
///   lease), the peer with the lowest subnet gets the FDB entry. `bridge fdb replace` keeps a
///   single destination per MAC, so two entries would overwrite each other on every sync.
///   The other peer's neighbour and route are still programmed; its traffic reaches the first
///   peer's host, which is the best a shared MAC allows.
pub fn desired_state<N: PodNet>(peers: &[Peer<N>]) -> KernelState<N> {
    desired_from_effective(&effective_peers(peers))
}

fn desired_from_effective<N: PodNet>(peers: &[Peer<N>]) -> KernelState<N> {
    let mut state = KernelState::default();
    let mut neigh_ips = BTreeSet::new();
    let mut fdb_macs = BTreeSet::new();
    for peer in peers {
        if !peer.direct {
            let neigh = neigh_of(peer);
            if neigh_ips.insert(neigh.ip) {
                state.neighs.push(neigh);
            }
            let fdb = fdb_of(peer);
            if fdb_macs.insert(fdb.mac) {
                state.fdb.push(fdb);
            }
        }
        state.routes.push(route_of(peer));
    }
    state
}

/// The operations that turn `actual` into the state `desired` calls for.
///
/// Order: deletions first (routes, then FDB, then neighbours; each sorted), then for each peer
/// in subnet order the missing or different entries in the order neighbour, FDB, route.
///
/// - An entry that exists exactly as wanted yields no operation, so an unchanged peer set
///   yields no operations at all.
/// - A neighbour with the right IP but another MAC, or a route with the right destination but
///   another gateway or flags, is replaced (`Set*`), not deleted first.
/// - FDB entries are keyed by (MAC, destination): a peer whose public IP changed yields
///   `DelFdb(mac, old)` and `SetFdb(mac, new)`; a peer whose MAC changed yields
///   `DelFdb(old_mac, ip)` and `SetFdb(new_mac, ip)`.
/// - If the kernel holds several entries for one wanted route destination or neighbour IP,
///   one is kept (the exact match, else the first, which is then replaced) and the rest are
///   deleted.
///
/// O((n + m) log(n + m)) for n peers and m kernel entries: sorted vectors and ordered maps,
/// no linear searches inside loops (at 5,000 peers the earlier quadratic version took 170 ms).
pub fn diff<N: PodNet>(desired: &[Peer<N>], actual: &KernelState<N>) -> Vec<Op<N>> {
    let peers = effective_peers(desired);
    let want = desired_from_effective(&peers);
    let want_routes: BTreeMap<N, RouteEntry<N>> = want.routes.iter().map(|r| (r.dst, *r)).collect();
    let want_neighs: BTreeMap<N::Addr, NeighEntry<N>> =
        want.neighs.iter().map(|n| (n.ip, *n)).collect();
    let want_fdb: BTreeSet<FdbEntry<N>> = want.fdb.iter().copied().collect();
    let mut ops = Vec::new();

    // Routes keyed by destination (sorted, so one destination's entries are adjacent).
    let actual_routes = sorted_unique(&actual.routes);
    ops.extend(
        surplus(&actual_routes, &want_routes, |r| r.dst)
            .into_iter()
            .map(Op::DelRoute),
    );

    // FDB keyed by (mac, dst).
    let actual_fdb = sorted_unique(&actual.fdb);
    ops.extend(
        actual_fdb
            .iter()
            .filter(|entry| !want_fdb.contains(entry))
            .map(|entry| Op::DelFdb(*entry)),
    );

    // Neighbours keyed by IP.
    let actual_neighs = sorted_unique(&actual.neighs);
    ops.extend(
        surplus(&actual_neighs, &want_neighs, |n| n.ip)
            .into_iter()
            .map(Op::DelNeigh),
    );

    // Additions and replacements, peer by peer.
    let mut emitted: BTreeSet<FdbEntry<N>> = BTreeSet::new();
    for peer in &peers {
        if peer.direct {
            let route = route_of(peer);
            if actual_routes.binary_search(&route).is_err() {
                ops.push(Op::SetRoute(route));
            }
            continue;
        }
        let neigh = neigh_of(peer);
        if want_neighs.get(&neigh.ip) == Some(&neigh)
            && actual_neighs.binary_search(&neigh).is_err()
        {
            ops.push(Op::SetNeigh(neigh));
        }
        let fdb = fdb_of(peer);
        if want_fdb.contains(&fdb) && actual_fdb.binary_search(&fdb).is_err() && emitted.insert(fdb)
        {
            ops.push(Op::SetFdb(fdb));
        }
        let route = route_of(peer);
        if actual_routes.binary_search(&route).is_err() {
            ops.push(Op::SetRoute(route));
        }
    }
    ops
}

/// The entries to delete where the kernel keeps one entry per key: of `actual` (sorted, so
/// one key's entries are adjacent), every entry of a key `want` lacks, and of a wanted key
/// all but one (the exact match, else the first, which is then replaced).
fn surplus<E: Copy + PartialEq, K: Ord>(
    actual: &[E],
    want: &BTreeMap<K, E>,
    key: impl Fn(&E) -> K,
) -> Vec<E> {
    let mut dels = Vec::new();
    for have in actual.chunk_by(|a, b| key(a) == key(b)) {
        let keep = want
            .get(&key(&have[0]))
            .map(|w| have.iter().position(|e| e == w).unwrap_or(0));
        dels.extend(
            have.iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != keep)
                .map(|(_, e)| *e),
        );
    }
    dels
}

fn sorted_unique<T: Ord + Copy>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// One entry-level change the kernel announced on the device (a netlink notification,
/// reduced to what weft owns there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed<N: PodNet = Ipv4Net> {
    /// The neighbour for `ip` is now permanent with `mac` (`Some`), or it is gone or no
    /// longer permanent (`None`). The kernel keeps one neighbour per address.
    Neigh { ip: N::Addr, mac: Option<MacAddr> },
    /// An FDB entry with a destination appeared (`present`) or vanished.
    Fdb { entry: FdbEntry<N>, present: bool },
    /// A route weft could own (main table, unicast, not a kernel route) appeared or vanished.
    Route { entry: RouteEntry<N>, present: bool },
}

/// What weftd believes its device holds: the last full dump, plus its own changes that the
/// kernel acknowledged, plus the changes the kernel announced since.
///
/// It lets weftd apply a lease event without dumping thousands of kernel entries, and tell
/// the echo of its own change (nothing to do) from drift (someone else changed the device:
/// re-read it). It is never the only truth: any surprise, and a periodic timer, replace it
/// with a fresh dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programmed<N: PodNet = Ipv4Net> {
    neighs: BTreeMap<N::Addr, MacAddr>,
    fdb: BTreeSet<FdbEntry<N>>,
    routes: BTreeSet<RouteEntry<N>>,
}

impl<N: PodNet> Default for Programmed<N> {
    fn default() -> Self {
        Programmed {
            neighs: BTreeMap::new(),
            fdb: BTreeSet::new(),
            routes: BTreeSet::new(),
        }
    }
}

impl<N: PodNet> Default for KernelState<N> {
    fn default() -> Self {
        KernelState {
            neighs: Vec::new(),
            fdb: Vec::new(),
            routes: Vec::new(),
        }
    }
}

impl<N: PodNet> Programmed<N> {
    /// The model of a freshly dumped device.
    pub fn from_state(state: &KernelState<N>) -> Programmed<N> {
        Programmed {
            neighs: state.neighs.iter().map(|n| (n.ip, n.mac)).collect(),
            fdb: state.fdb.iter().copied().collect(),
            routes: state.routes.iter().copied().collect(),
        }
    }

    /// The model as a [`KernelState`] (sorted), for [`diff`].
    pub fn state(&self) -> KernelState<N> {
        KernelState {
            neighs: self
                .neighs
                .iter()
                .map(|(ip, mac)| NeighEntry { ip: *ip, mac: *mac })
                .collect(),
            fdb: self.fdb.iter().copied().collect(),
            routes: self.routes.iter().copied().collect(),
        }
    }

    /// Which of the entries `peer` calls for (`"neighbour"`, `"fdb"`, `"route"`) the model
    /// lacks: empty when the peer is fully programmed. O(log n).
    pub fn missing_for(&self, peer: &Peer<N>) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if peer.direct {
            if !self.routes.contains(&route_of(peer)) {
                missing.push("route");
            }
            return missing;
        }
        let n = neigh_of(peer);
        if self.neighs.get(&n.ip) != Some(&n.mac) {
            missing.push("neighbour");
        }
        if !self.fdb.contains(&fdb_of(peer)) {
            missing.push("fdb");
        }
        if !self.routes.contains(&route_of(peer)) {
            missing.push("route");
        }
        missing
    }

    /// Number of entries (neighbours + FDB entries + routes).
    pub fn len(&self) -> usize {
        self.neighs.len() + self.fdb.len() + self.routes.len()
    }

    /// Whether the model holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The model's routes to `dst` (usually one). `RouteEntry` orders by `dst` first, so they
    /// are one range of the set: a lookup, not a scan of every route (which made a full pass
    /// over N peers cost O(N²)).
    fn routes_to(&self, dst: N) -> impl Iterator<Item = &RouteEntry<N>> {
        let first = RouteEntry {
            dst,
            gw: None,
            onlink: false,
            underlay: false,
        };
        let last = RouteEntry {
            dst,
            gw: Some(N::ADDR_MAX),
            onlink: true,
            underlay: true,
        };
        self.routes.range(first..=last)
    }

    /// The model's FDB entries for `mac` (usually one), as a range like [`Self::routes_to`].
    fn fdb_of(&self, mac: MacAddr) -> impl Iterator<Item = &FdbEntry<N>> {
        let first = FdbEntry {
            mac,
            dst: N::ADDR_MIN,
        };
        let last = FdbEntry {
            mac,
            dst: N::ADDR_MAX,
        };
        self.fdb.range(first..=last)
    }

    /// Records an operation the kernel acknowledged (or a delete of something already gone),
    /// with the kernel's semantics: a neighbour is keyed by IP, `bridge fdb replace` leaves a
    /// MAC one destination, `ip route replace` leaves a destination one route.
    pub fn applied(&mut self, op: &Op<N>) {
        match op {
            Op::SetNeigh(n) => {
                self.neighs.insert(n.ip, n.mac);
            }
            Op::DelNeigh(n) => {
                self.neighs.remove(&n.ip);
            }
            Op::SetFdb(f) => {
                let stale: Vec<FdbEntry<N>> = self.fdb_of(f.mac).copied().collect();
                for e in stale {
                    self.fdb.remove(&e);
                }
                self.fdb.insert(*f);
            }
            Op::DelFdb(f) => {
                self.fdb.remove(f);
            }
            Op::SetRoute(r) => {
                let stale: Vec<RouteEntry<N>> = self.routes_to(r.dst).copied().collect();
                for e in stale {
                    self.routes.remove(&e);
                }
                self.routes.insert(*r);
            }
            Op::DelRoute(r) => {
                self.routes.remove(r);
            }
        }
    }

    /// Records a change the kernel announced. Returns `true` when the kernel is where the
    /// model expected it (the echo of weftd's own change, or a change to something weft does
    /// not own), `false` when the device now differs from the model: drift, so the caller
    /// should re-read the device and repair it.
    pub fn observe(&mut self, change: &Observed<N>) -> bool {
        match *change {
            Observed::Neigh { ip, mac } => {
                let before = match mac {
                    Some(m) => self.neighs.insert(ip, m),
                    None => self.neighs.remove(&ip),
                };
                before == mac
            }
            Observed::Fdb { entry, present } => {
                let had = if present {
                    !self.fdb.insert(entry)
                } else {
                    self.fdb.remove(&entry)
                };
                had == present
            }
            Observed::Route { entry, present } => {
                if present {
                    // Expected only if this is the one route the model holds for the
                    // destination (a replace announces the new route, not the old one's end).
                    let alone = self.routes_to(entry.dst).all(|r| *r == entry);
                    let had = !self.routes.insert(entry);
                    had && alone
                } else {
                    !self.routes.remove(&entry)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, last])
    }

    fn peer(third: u8, ip_last: u8, mac_last: u8) -> Peer {
        Peer {
            subnet: format!("10.244.{third}.0/24").parse().unwrap(),
            public_ip: Ipv4Addr::new(192, 168, 1, ip_last),
            vtep_mac: mac(mac_last),
            direct: false,
        }
    }

    fn neigh(third: u8, mac_last: u8) -> NeighEntry {
        NeighEntry {
            ip: Ipv4Addr::new(10, 244, third, 0),
            mac: mac(mac_last),
        }
    }

    fn fdb(mac_last: u8, ip_last: u8) -> FdbEntry {
        FdbEntry {
            mac: mac(mac_last),
            dst: Ipv4Addr::new(192, 168, 1, ip_last),
        }
    }

    fn route(third: u8) -> RouteEntry {
        RouteEntry {
            dst: format!("10.244.{third}.0/24").parse().unwrap(),
            gw: Some(Ipv4Addr::new(10, 244, third, 0)),
            onlink: true,
            underlay: false,
        }
    }

    /// What a new VXLAN peer `peer(third, ip_last, mac_last)` yields, in order: its
    /// neighbour, FDB entry and route.
    fn adds(third: u8, ip_last: u8, mac_last: u8) -> [Op; 3] {
        [
            Op::SetNeigh(neigh(third, mac_last)),
            Op::SetFdb(fdb(mac_last, ip_last)),
            Op::SetRoute(route(third)),
        ]
    }

    fn peers() -> Vec<Peer> {
        // Deliberately unsorted.
        vec![peer(3, 13, 3), peer(2, 12, 2)]
    }

    #[test]
    fn empty_to_full_adds_in_order() {
        let ops = diff(&peers(), &KernelState::default());
        assert_eq!(ops, [adds(2, 12, 2), adds(3, 13, 3)].concat());
    }

    #[test]
    fn full_to_same_is_no_ops() {
        let state = desired_state(&peers());
        assert_eq!(
            state,
            KernelState {
                neighs: vec![neigh(2, 2), neigh(3, 3)],
                fdb: vec![fdb(2, 12), fdb(3, 13)],
                routes: vec![route(2), route(3)],
            }
        );
        assert_eq!(diff(&peers(), &state), vec![]);
        // Order of what the kernel reports does not matter.
        let shuffled = KernelState {
            neighs: state.neighs.iter().rev().copied().collect(),
            fdb: state.fdb.iter().rev().copied().collect(),
            routes: state.routes.iter().rev().copied().collect(),
        };
        assert_eq!(diff(&peers(), &shuffled), vec![]);
    }

    #[test]
    fn changed_mac_replaces_neigh_and_moves_fdb() {
        let state = desired_state(&peers());
        let new = vec![peer(3, 13, 3), peer(2, 12, 0x22)];
        assert_eq!(
            diff(&new, &state),
            vec![
                Op::DelFdb(fdb(2, 12)),
                Op::SetNeigh(neigh(2, 0x22)),
                Op::SetFdb(fdb(0x22, 12)),
            ]
        );
    }

    #[test]
    fn changed_public_ip_moves_fdb_only() {
        let state = desired_state(&peers());
        let new = vec![peer(3, 13, 3), peer(2, 99, 2)];
        assert_eq!(
            diff(&new, &state),
            vec![Op::DelFdb(fdb(2, 12)), Op::SetFdb(fdb(2, 99))]
        );
    }

    #[test]
    fn removed_peer_is_deleted_route_first() {
        let state = desired_state(&peers());
        assert_eq!(
            diff(&[peer(3, 13, 3)], &state),
            vec![
                Op::DelRoute(route(2)),
                Op::DelFdb(fdb(2, 12)),
                Op::DelNeigh(neigh(2, 2)),
            ]
        );
        assert_eq!(
            diff(&[], &state),
            vec![
                Op::DelRoute(route(2)),
                Op::DelRoute(route(3)),
                Op::DelFdb(fdb(2, 12)),
                Op::DelFdb(fdb(3, 13)),
                Op::DelNeigh(neigh(2, 2)),
                Op::DelNeigh(neigh(3, 3)),
            ]
        );
    }

    #[test]
    fn wrong_route_is_replaced() {
        let mut state = desired_state(&peers());
        state.routes[0].gw = Some(Ipv4Addr::new(192, 168, 1, 12));
        state.routes[1].onlink = false;
        assert_eq!(
            diff(&peers(), &state),
            vec![Op::SetRoute(route(2)), Op::SetRoute(route(3))]
        );
    }

    #[test]
    fn extra_routes_for_a_wanted_destination_are_deleted() {
        let mut state = desired_state(&peers());
        let wrong = RouteEntry {
            gw: None,
            onlink: false,
            ..route(2)
        };
        state.routes.push(wrong);
        assert_eq!(diff(&peers(), &state), vec![Op::DelRoute(wrong)]);
    }

    #[test]
    fn duplicate_mac_gets_one_fdb_entry() {
        // Two leases claim the same MAC with different public IPs.
        let dup = vec![peer(2, 12, 7), peer(3, 13, 7)];
        let ops = diff(&dup, &KernelState::default());
        assert_eq!(
            ops,
            vec![
                Op::SetNeigh(neigh(2, 7)),
                Op::SetFdb(fdb(7, 12)),
                Op::SetRoute(route(2)),
                Op::SetNeigh(neigh(3, 7)),
                Op::SetRoute(route(3)),
            ]
        );
        // Applying them converges: no flapping on the next sync.
        assert_eq!(diff(&dup, &desired_state(&dup)), vec![]);
        // Same MAC and same IP: still one FdbEntry, one SetFdb.
        let same = vec![peer(2, 12, 7), peer(3, 12, 7)];
        let sets = diff(&same, &KernelState::default())
            .into_iter()
            .filter(|op| matches!(op, Op::SetFdb(_)))
            .count();
        assert_eq!(sets, 1);
    }

    #[test]
    fn duplicate_subnet_first_peer_wins() {
        let dup = vec![peer(2, 12, 2), peer(2, 99, 9)];
        assert_eq!(desired_state(&dup), desired_state(&[peer(2, 12, 2)]));
    }

    #[test]
    fn unrelated_stale_entries_are_removed() {
        let mut state = desired_state(&peers());
        state.neighs.push(neigh(9, 9));
        state.fdb.push(fdb(9, 19));
        state.routes.push(route(9));
        assert_eq!(
            diff(&peers(), &state),
            vec![
                Op::DelRoute(route(9)),
                Op::DelFdb(fdb(9, 19)),
                Op::DelNeigh(neigh(9, 9)),
            ]
        );
    }

    // The straightforward quadratic version this module shipped first: the fast diff must
    // agree with it on every input.
    fn reference_diff(desired: &[Peer], actual: &KernelState) -> Vec<Op> {
        let want = desired_state(desired);
        let mut ops = Vec::new();

        // Routes keyed by destination.
        let mut actual_routes: Vec<RouteEntry> = actual.routes.clone();
        actual_routes.sort();
        actual_routes.dedup();
        ops.extend(
            reference_keyed_dels(&actual_routes, &want.routes, |r| r.dst)
                .into_iter()
                .map(Op::DelRoute),
        );

        // FDB keyed by (mac, dst).
        let mut actual_fdb: Vec<FdbEntry> = actual.fdb.clone();
        actual_fdb.sort();
        actual_fdb.dedup();
        ops.extend(
            actual_fdb
                .iter()
                .filter(|entry| !want.fdb.contains(entry))
                .map(|entry| Op::DelFdb(*entry)),
        );

        // Neighbours keyed by IP.
        let mut actual_neighs: Vec<NeighEntry> = actual.neighs.clone();
        actual_neighs.sort();
        actual_neighs.dedup();
        ops.extend(
            reference_keyed_dels(&actual_neighs, &want.neighs, |n| n.ip)
                .into_iter()
                .map(Op::DelNeigh),
        );

        // Additions and replacements, peer by peer.
        let mut emitted: BTreeSet<FdbEntry> = BTreeSet::new();
        for peer in effective_peers(desired) {
            let neigh = neigh_of(&peer);
            if want.neighs.contains(&neigh) && !actual_neighs.contains(&neigh) {
                ops.push(Op::SetNeigh(neigh));
            }
            let fdb = fdb_of(&peer);
            if want.fdb.contains(&fdb) && !actual_fdb.contains(&fdb) && emitted.insert(fdb) {
                ops.push(Op::SetFdb(fdb));
            }
            let route = route_of(&peer);
            if !actual_routes.contains(&route) {
                ops.push(Op::SetRoute(route));
            }
        }
        ops
    }

    // The reference's deletions where a key holds one entry: every entry of a key that is
    // not wanted, and of a wanted key all but one (the wanted entry if there, else the first).
    fn reference_keyed_dels<E: Copy + PartialEq, K: Ord>(
        actual: &[E],
        want: &[E],
        key: impl Fn(&E) -> K,
    ) -> Vec<E> {
        let mut dels = Vec::new();
        for k in actual.iter().map(&key).collect::<BTreeSet<_>>() {
            let have: Vec<E> = actual.iter().copied().filter(|e| key(e) == k).collect();
            match want.iter().find(|w| key(w) == k) {
                None => dels.extend(have),
                Some(w) => {
                    let keep = have.iter().position(|e| e == w).unwrap_or(0);
                    dels.extend(
                        have.iter()
                            .enumerate()
                            .filter(|(i, _)| *i != keep)
                            .map(|(_, e)| *e),
                    );
                }
            }
        }
        dels
    }

    #[test]
    fn fast_diff_agrees_with_the_reference_on_random_states() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..3000 {
            let n = rng.random_range(0..8);
            let desired: Vec<Peer> = (0..n)
                .map(|_| {
                    peer(
                        rng.random_range(0..6),
                        rng.random_range(0..4),
                        rng.random_range(0..4),
                    )
                })
                .collect();
            let mut actual = desired_state(
                &(0..rng.random_range(0..8))
                    .map(|_| {
                        peer(
                            rng.random_range(0..6),
                            rng.random_range(0..4),
                            rng.random_range(0..4),
                        )
                    })
                    .collect::<Vec<_>>(),
            );
            for _ in 0..rng.random_range(0..3) {
                actual.routes.push(RouteEntry {
                    gw: None,
                    onlink: rng.random(),
                    ..route(rng.random_range(0..6))
                });
                actual
                    .neighs
                    .push(neigh(rng.random_range(0..6), rng.random_range(0..4)));
                actual
                    .fdb
                    .push(fdb(rng.random_range(0..4), rng.random_range(0..4)));
            }
            assert_eq!(
                diff(&desired, &actual),
                reference_diff(&desired, &actual),
                "desired {desired:?} actual {actual:?}"
            );
            // Applying the ops to a model of `actual` reaches a state with nothing left to do.
            // (The model keeps one neighbour per IP, as the kernel does.)
            let mut model = Programmed::from_state(&actual);
            for op in diff(&desired, &model.state()) {
                model.applied(&op);
            }
            assert_eq!(
                diff(&desired, &model.state()),
                vec![],
                "desired {desired:?}"
            );
        }
    }

    #[test]
    fn echoes_of_own_changes_are_expected() {
        let mut model = Programmed::default();
        let ops = diff(&peers(), &model.state());
        for op in &ops {
            model.applied(op);
        }
        assert_eq!(model.len(), 6);
        // The kernel announces exactly what was applied: nothing unexpected.
        assert!(model.observe(&Observed::Neigh {
            ip: Ipv4Addr::new(10, 244, 2, 0),
            mac: Some(mac(2))
        }));
        assert!(model.observe(&Observed::Fdb {
            entry: fdb(2, 12),
            present: true
        }));
        assert!(model.observe(&Observed::Route {
            entry: route(2),
            present: true
        }));
        // Deletions weft made itself.
        for op in diff(&[peer(3, 13, 3)], &model.state()) {
            model.applied(&op);
        }
        assert!(model.observe(&Observed::Route {
            entry: route(2),
            present: false
        }));
        assert!(model.observe(&Observed::Fdb {
            entry: fdb(2, 12),
            present: false
        }));
        assert!(model.observe(&Observed::Neigh {
            ip: Ipv4Addr::new(10, 244, 2, 0),
            mac: None
        }));
        // Changes to things weft does not own: a non-permanent neighbour coming and going.
        assert!(model.observe(&Observed::Neigh {
            ip: Ipv4Addr::new(10, 244, 9, 9),
            mac: None
        }));
        assert_eq!(model.state(), desired_state(&[peer(3, 13, 3)]));
    }

    #[test]
    fn drift_is_unexpected() {
        let full = Programmed::from_state(&desired_state(&peers()));
        let cases = [
            // Someone deleted our route, neighbour or FDB entry.
            Observed::Route {
                entry: route(2),
                present: false,
            },
            Observed::Neigh {
                ip: Ipv4Addr::new(10, 244, 2, 0),
                mac: None,
            },
            Observed::Fdb {
                entry: fdb(2, 12),
                present: false,
            },
            // Someone changed our neighbour's MAC.
            Observed::Neigh {
                ip: Ipv4Addr::new(10, 244, 2, 0),
                mac: Some(mac(9)),
            },
            // Someone added entries weft does not want.
            Observed::Route {
                entry: route(9),
                present: true,
            },
            Observed::Neigh {
                ip: Ipv4Addr::new(10, 244, 9, 0),
                mac: Some(mac(9)),
            },
            Observed::Fdb {
                entry: fdb(9, 19),
                present: true,
            },
            // Someone replaced our route with another one for the same destination.
            Observed::Route {
                entry: RouteEntry {
                    gw: None,
                    onlink: false,
                    ..route(2)
                },
                present: true,
            },
        ];
        for change in cases {
            let mut model = full.clone();
            assert!(!model.observe(&change), "{change:?}");
            // And the model now says what the kernel holds, so a diff repairs it.
            assert!(!diff(&peers(), &model.state()).is_empty(), "{change:?}");
        }
    }

    #[test]
    fn applied_follows_kernel_replace_semantics() {
        let mut model = Programmed::from_state(&desired_state(&peers()));
        let other_route = RouteEntry {
            gw: None,
            onlink: false,
            ..route(2)
        };
        model.applied(&Op::SetRoute(other_route));
        model.applied(&Op::SetFdb(fdb(2, 99)));
        model.applied(&Op::SetNeigh(neigh(2, 9)));
        let s = model.state();
        assert_eq!(s.routes, vec![other_route, route(3)]);
        assert_eq!(s.fdb, vec![fdb(2, 99), fdb(3, 13)]);
        assert_eq!(s.neighs, vec![neigh(2, 9), neigh(3, 3)]);
        model.applied(&Op::DelNeigh(neigh(2, 1)));
        assert_eq!(model.state().neighs, vec![neigh(3, 3)]);
    }

    /// A replace (and an announced route) is judged against every route the model holds for
    /// the destination, whatever their gateway, flags and link, and against no other.
    #[test]
    fn a_replace_drops_every_route_to_its_destination_and_only_those() {
        let net = |t: &str| -> Ipv4Net { t.parse().unwrap() };
        let r = |dst: &str, gw: Option<[u8; 4]>, onlink: bool, underlay: bool| RouteEntry {
            dst: net(dst),
            gw: gw.map(Ipv4Addr::from),
            onlink,
            underlay,
        };
        let to_2 = [
            r("10.244.2.0/24", None, false, false),
            r("10.244.2.0/24", Some([10, 244, 2, 0]), true, false),
            r("10.244.2.0/24", Some([255, 255, 255, 255]), true, true),
        ];
        // Neighbours in the set's order: a shorter prefix of the same address, the next subnet.
        let others = [
            r("10.244.2.0/23", Some([192, 168, 1, 2]), false, true),
            r("10.244.3.0/24", None, false, false),
            r("10.244.1.0/24", Some([255, 255, 255, 255]), true, true),
        ];
        let state = KernelState {
            routes: to_2.iter().chain(&others).copied().collect(),
            ..KernelState::default()
        };
        let mut model = Programmed::from_state(&state);
        assert!(!model.observe(&Observed::Route {
            entry: to_2[0],
            present: true
        }));
        let new = r("10.244.2.0/24", Some([192, 168, 1, 12]), false, true);
        model.applied(&Op::SetRoute(new));
        let mut want: Vec<RouteEntry> = others.iter().copied().chain([new]).collect();
        want.sort();
        assert_eq!(model.state().routes, want);
        assert!(model.observe(&Observed::Route {
            entry: new,
            present: true
        }));
        model.applied(&Op::SetFdb(fdb(2, 1)));
        model.applied(&Op::SetFdb(fdb(3, 1)));
        model.applied(&Op::SetFdb(fdb(2, 255)));
        assert_eq!(model.state().fdb, vec![fdb(2, 255), fdb(3, 1)]);
    }

    fn direct(third: u8, ip_last: u8) -> Peer {
        Peer {
            direct: true,
            ..peer(third, ip_last, 0)
        }
    }

    fn direct_route(third: u8, ip_last: u8) -> RouteEntry {
        RouteEntry {
            dst: format!("10.244.{third}.0/24").parse().unwrap(),
            gw: Some(Ipv4Addr::new(192, 168, 1, ip_last)),
            onlink: false,
            underlay: true,
        }
    }

    #[test]
    fn a_direct_peer_gets_only_a_route_via_its_public_ip() {
        let peers = vec![peer(2, 12, 2), direct(3, 13)];
        let want = desired_state(&peers);
        assert_eq!(want.neighs, vec![neigh(2, 2)]);
        assert_eq!(want.fdb, vec![fdb(2, 12)]);
        assert_eq!(want.routes, vec![route(2), direct_route(3, 13)]);
        let ops = diff(&peers, &KernelState::default());
        let mut want_ops = adds(2, 12, 2).to_vec();
        want_ops.push(Op::SetRoute(direct_route(3, 13)));
        assert_eq!(ops, want_ops);
        let mut model = Programmed::default();
        for op in &ops {
            model.applied(op);
        }
        assert!(diff(&peers, &model.state()).is_empty());
        assert!(model.missing_for(&direct(3, 13)).is_empty());
        assert_eq!(model.missing_for(&direct(4, 14)), vec!["route"]);
    }

    #[test]
    fn a_peer_that_becomes_direct_has_its_route_replaced_and_its_vxlan_entries_removed() {
        let before = vec![peer(2, 12, 2)];
        let mut model = Programmed::default();
        for op in diff(&before, &KernelState::default()) {
            model.applied(&op);
        }
        let after = vec![direct(2, 12)];
        let ops = diff(&after, &model.state());
        // The route is replaced in place (same destination), never deleted first, so the
        // subnet is never unreachable; the neighbour and FDB entry go.
        assert_eq!(
            ops,
            vec![
                Op::DelFdb(fdb(2, 12)),
                Op::DelNeigh(neigh(2, 2)),
                Op::SetRoute(direct_route(2, 12)),
            ]
        );
        for op in &ops {
            model.applied(op);
        }
        assert_eq!(model.state(), desired_state(&after));
        // And back.
        let ops = diff(&before, &model.state());
        assert_eq!(ops, adds(2, 12, 2));
    }

    #[test]
    fn a_direct_route_no_peer_calls_for_is_removed_and_a_moved_one_replaced() {
        let actual = KernelState {
            routes: vec![direct_route(3, 13), direct_route(4, 99)],
            ..KernelState::default()
        };
        let ops = diff(&[direct(4, 14)], &actual);
        assert_eq!(
            ops,
            vec![
                Op::DelRoute(direct_route(3, 13)),
                Op::SetRoute(direct_route(4, 14)),
            ]
        );
    }

    #[test]
    fn only_routes_into_the_network_with_a_gateway_on_the_external_interface_are_weft_s() {
        let owned = Owned {
            device: Some(7),
            underlay: Some((2, "10.244.0.0/16".parse::<Ipv4Net>().unwrap())),
        };
        let r = |dst: &str, gw: Option<[u8; 4]>| RouteEntry {
            dst: dst.parse().unwrap(),
            gw: gw.map(Ipv4Addr::from),
            onlink: false,
            underlay: false,
        };
        let via = Some([192, 168, 1, 12]);
        // Out of the device: always.
        assert_eq!(
            owned.route(7, r("10.244.2.0/24", via)).map(|e| e.underlay),
            Some(false)
        );
        // Out of the external interface: a subnet of the Network via a gateway.
        let direct = owned.route(2, r("10.244.2.0/24", via)).unwrap();
        assert!(direct.underlay);
        assert_eq!(owned.link_of(&direct), Some(2));
        // Not: the whole Network, outside it, without a gateway, another link.
        assert_eq!(owned.route(2, r("10.244.0.0/16", via)), None);
        assert_eq!(owned.route(2, r("10.245.2.0/24", via)), None);
        assert_eq!(owned.route(2, r("0.0.0.0/0", via)), None);
        assert_eq!(owned.route(2, r("10.244.2.0/24", None)), None);
        assert_eq!(owned.route(3, r("10.244.2.0/24", via)), None);
        // The device alone owns nothing on the external interface.
        assert_eq!(Owned::device(7).route(2, r("10.244.2.0/24", via)), None);
    }

    #[test]
    fn ipv6_peers_get_the_same_entries_and_the_same_diff_as_ipv4() {
        use ipnet::Ipv6Net;
        use std::net::Ipv6Addr;
        let p6 = |k: u16, mac_last: u8| Peer::<Ipv6Net> {
            subnet: format!("fc00:0:0:{k:x}::/64").parse().unwrap(),
            public_ip: format!("fd00:250::{k:x}").parse().unwrap(),
            vtep_mac: mac(mac_last),
            direct: false,
        };
        let peers = [p6(2, 2), p6(3, 3)];
        let want = desired_state(&peers);
        assert_eq!(
            want.neighs[0],
            NeighEntry {
                ip: "fc00:0:0:2::".parse::<Ipv6Addr>().unwrap(),
                mac: mac(2)
            }
        );
        assert_eq!(want.fdb[1].dst, "fd00:250::3".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            want.routes[0],
            RouteEntry {
                dst: "fc00:0:0:2::/64".parse().unwrap(),
                gw: Some("fc00:0:0:2::".parse().unwrap()),
                onlink: true,
                underlay: false,
            }
        );
        // Empty kernel: neighbour, FDB, route per peer; applied, nothing is left to do.
        let ops = diff(&peers, &KernelState::default());
        assert_eq!(ops.len(), 6);
        let mut model = Programmed::default();
        for op in &ops {
            model.applied(op);
        }
        assert!(diff(&peers, &model.state()).is_empty());
        assert!(model.missing_for(&peers[0]).is_empty());
        // A peer's new public IP: the FDB entry moves (the range lookup over all-ones v6
        // addresses finds the old one), the rest stays.
        let moved = [
            Peer {
                public_ip: "fd00:250::99".parse().unwrap(),
                ..peers[0]
            },
            peers[1],
        ];
        let ops = diff(&moved, &model.state());
        assert_eq!(
            ops,
            vec![
                Op::DelFdb(fdb6(2, "fd00:250::2")),
                Op::SetFdb(fdb6(2, "fd00:250::99")),
            ]
        );
        model.applied(&ops[1]);
        assert_eq!(
            model.state().fdb.len(),
            2,
            "replace leaves a MAC one destination"
        );

        fn fdb6(mac_last: u8, dst: &str) -> FdbEntry<Ipv6Net> {
            FdbEntry {
                mac: MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, mac_last]),
                dst: dst.parse().unwrap(),
            }
        }
    }
}
