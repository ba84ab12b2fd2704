//! A netlink multicast listener (neighbours, FDB, IPv4 routes) inside a namespace, stamping
//! each announcement with the moment it was read; and kernel-state dumps through weft-net.
//!
//! The listener is a blocking socket on its own thread: no polling, no runtime between the
//! kernel and the timestamp. Its receive buffer is forced large (root may exceed rmem_max) so
//! a burst of thousands of entries is not lost; if the kernel still reports an overrun
//! (ENOBUFS), an [`Event::Overrun`] says so and the caller must not trust completion times.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Result;
use ipnet::Ipv4Net;
use netlink_packet_route::{neighbour::NeighbourMessage, route::RouteMessage};
use weft_core::dataplane::KernelState;
use weft_net::netlink::{neigh_facts, route_facts};
use weft_testbed::nlmonitor::{Announced, Announcement, NetlinkMonitor};

use crate::ns::NsRuntime;

const RCVBUF: usize = 64 << 20;

/// What the kernel announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A route (any table) to this prefix.
    Route(Ipv4Net),
    /// An IPv4 neighbour entry for this address.
    Neigh(Ipv4Addr),
    /// A bridge-family (FDB) entry for this MAC.
    Fdb([u8; 6]),
}

/// One announcement (`Overrun`: the kernel dropped some, completion times are unreliable).
pub type Event = Announcement<Entry>;

/// A running listener; stops when dropped.
pub type Listener = NetlinkMonitor<Entry>;

/// The next entry `listener` announces within `wait` as added or changed (`added`) or as
/// deleted (not `added`), with the moment it was read; an announcement of the other kind
/// yields `None`, and an overrun adds one to `overruns`.
pub fn next_of_kind(
    listener: &Listener,
    wait: Duration,
    added: bool,
    overruns: &mut usize,
) -> Option<(Instant, Entry)> {
    match listener.next(wait)? {
        Event::Overrun => {
            *overruns += 1;
            None
        }
        Event::Change { at, new, item } => (new == added).then_some((at, item)),
    }
}

/// Subscribes to neighbour and IPv4 route announcements in `ns`; returns once subscribed.
pub fn listen(ns: &str) -> Result<Listener> {
    Ok(NetlinkMonitor::start(ns, RCVBUF, |a| match a {
        Announced::Route(r) => route(r),
        Announced::Neighbour(n) => neigh(n),
    })?)
}

fn route(r: &RouteMessage) -> Option<Entry> {
    route_facts(r).map(|f| Entry::Route(f.dst))
}

fn neigh(n: &NeighbourMessage) -> Option<Entry> {
    let f = neigh_facts(n)?;
    if f.fdb {
        f.mac.map(|m| Entry::Fdb(m.0))
    } else {
        f.ip.map(Entry::Neigh)
    }
}

/// The VXLAN state of `dev` in the namespace `rt` lives in (empty if the device is absent).
pub fn dump(rt: &NsRuntime, dev: &str) -> Result<KernelState> {
    let dev = dev.to_string();
    rt.call(move || async move {
        let nl = weft_net::Netlink::connect()?;
        match nl.link_by_name(&dev).await? {
            Some(link) => Ok::<_, anyhow::Error>(nl.read_state(link.index).await?),
            None => Ok(KernelState::default()),
        }
    })?
}

/// weft's direct routes in the namespace `rt` lives in (host-gw): main-table routes with a
/// gateway out of `ext` to subnets inside `network`, read the way weftd reads them
/// (weft-net's `read_owned` without a device). Empty if `ext` is absent.
pub fn dump_direct(rt: &NsRuntime, ext: &str, network: Ipv4Net) -> Result<KernelState> {
    let ext = ext.to_string();
    rt.call(move || async move {
        let nl = weft_net::Netlink::connect()?;
        match nl.link_by_name(&ext).await? {
            Some(link) => {
                let owned = weft_core::dataplane::Owned {
                    device: None,
                    underlay: Some((link.index, network)),
                };
                Ok::<_, anyhow::Error>(nl.read_owned(&owned).await?)
            }
            None => Ok(KernelState::default()),
        }
    })?
}
