//! A netlink multicast listener (neighbours, FDB, IPv4 routes) inside a namespace, stamping
//! each announcement with the moment it was read; and kernel-state dumps through weft-net.
//!
//! The listener is a blocking socket on its own thread: no polling, no runtime between the
//! kernel and the timestamp. Its receive buffer is forced large (root may exceed rmem_max) so
//! a burst of thousands of entries is not lost; if the kernel still reports an overrun
//! (ENOBUFS), an [`Event::Overrun`] says so and the caller must not trust completion times.

use std::net::Ipv4Addr;

use anyhow::Result;
use ipnet::Ipv4Net;
use netlink_packet_route::{
    AddressFamily,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
};
use weft_core::dataplane::KernelState;
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

/// Subscribes to neighbour and IPv4 route announcements in `ns`; returns once subscribed.
pub fn listen(ns: &str) -> Result<Listener> {
    Ok(NetlinkMonitor::start(ns, RCVBUF, |a| match a {
        Announced::Route(r) => route(r),
        Announced::Neighbour(n) => neigh(n),
    })?)
}

fn route(r: &RouteMessage) -> Option<Entry> {
    let dst = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ipv4Net::new(dst, r.header.destination_prefix_length)
        .ok()
        .map(Entry::Route)
}

fn neigh(n: &NeighbourMessage) -> Option<Entry> {
    match n.header.family {
        AddressFamily::Inet => n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(Entry::Neigh(*ip)),
            _ => None,
        }),
        AddressFamily::Bridge => n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(b) => {
                <[u8; 6]>::try_from(b.as_slice()).ok().map(Entry::Fdb)
            }
            _ => None,
        }),
        _ => None,
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
