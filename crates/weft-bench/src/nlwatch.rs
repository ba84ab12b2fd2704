//! A netlink multicast listener (neighbours, FDB, IPv4 routes) inside a namespace, stamping
//! each announcement with the moment it was read; and kernel-state dumps through weft-net.
//!
//! The listener is a blocking socket on its own thread: no polling, no runtime between the
//! kernel and the timestamp. Its receive buffer is forced large (root may exceed rmem_max) so
//! a burst of thousands of entries is not lost; if the kernel still reports an overrun
//! (ENOBUFS), an [`Event::Overrun`] says so and the caller must not trust completion times.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ipnet::Ipv4Net;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use weft_core::dataplane::KernelState;

use crate::ns::{self, NsRuntime};

const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
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

#[derive(Debug, Clone, Copy)]
pub enum Event {
    Change {
        at: Instant,
        new: bool,
        entry: Entry,
    },
    /// The kernel dropped notifications (ENOBUFS): completion times are unreliable.
    Overrun,
}

/// A running listener; stops when dropped.
pub struct Listener {
    rx: Receiver<Event>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Listener {
    /// Subscribes to neighbour and IPv4 route announcements in `ns`; returns once subscribed.
    pub fn start(ns: &str) -> Result<Listener> {
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel::<Result<()>>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = ns::spawn_in(ns, move || {
            let sock = match open() {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            run(&sock, &tx, &stop2)
        })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the netlink listener thread died"))??;
        Ok(Listener {
            rx,
            stop,
            thread: Some(thread),
        })
    }

    /// The next event, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Event> {
        match self.rx.recv_timeout(timeout) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Everything already received, without waiting.
    pub fn drain(&self) -> Vec<Event> {
        self.rx.try_iter().collect()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open() -> Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
    sock.bind(&SocketAddr::new(0, 0))
        .context("binding the netlink socket")?;
    sock.add_membership(RTNLGRP_NEIGH)
        .context("joining RTNLGRP_NEIGH")?;
    sock.add_membership(RTNLGRP_IPV4_ROUTE)
        .context("joining RTNLGRP_IPV4_ROUTE")?;
    if setsockopt(&sock.as_fd(), sockopt::RcvBufForce, &RCVBUF).is_err() {
        sock.set_rx_buf_sz(RCVBUF)
            .context("setting the receive buffer")?;
    }
    setsockopt(
        &sock.as_fd(),
        sockopt::ReceiveTimeout,
        &TimeVal::new(0, 100_000),
    )
    .context("setting SO_RCVTIMEO")?;
    Ok(sock)
}

fn run(sock: &Socket, tx: &Sender<Event>, stop: &AtomicBool) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 17);
    while !stop.load(Ordering::SeqCst) {
        buf.clear();
        match sock.recv(&mut buf, 0) {
            Ok(_) => {
                let at = Instant::now();
                parse(&buf, at, tx);
            }
            Err(e) => {
                let code = e.raw_os_error();
                if code == Some(Errno::ENOBUFS as i32) {
                    let _ = tx.send(Event::Overrun);
                } else if code != Some(Errno::EAGAIN as i32) && code != Some(Errno::EINTR as i32) {
                    return Err(anyhow!("netlink listener: {e}"));
                }
            }
        }
    }
    Ok(())
}

fn parse(buf: &[u8], at: Instant, tx: &Sender<Event>) {
    let mut off = 0usize;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len])
            && let NetlinkPayload::InnerMessage(inner) = msg.payload
        {
            let change = match inner {
                RouteNetlinkMessage::NewRoute(r) => route(&r).map(|e| (true, e)),
                RouteNetlinkMessage::DelRoute(r) => route(&r).map(|e| (false, e)),
                RouteNetlinkMessage::NewNeighbour(n) => neigh(&n).map(|e| (true, e)),
                RouteNetlinkMessage::DelNeighbour(n) => neigh(&n).map(|e| (false, e)),
                _ => None,
            };
            if let Some((new, entry)) = change {
                let _ = tx.send(Event::Change { at, new, entry });
            }
        }
        off += (len + 3) & !3;
    }
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
