//! A listener for the kernel's neighbour (ARP and FDB) and IPv4 route announcements inside a
//! namespace, like `ip monitor neigh route` plus `bridge monitor fdb`: the socket is opened in
//! the namespace and read on its own blocking thread, so each announcement is stamped the
//! moment it was read, with no runtime in between. What an announcement means is the
//! caller's `decode`; new versus deleted, the timestamps and lost announcements are this
//! module's. Used by the benchmarks (convergence) and by `weft-lab soak` (flap counting).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{RouteNetlinkMessage, neighbour::NeighbourMessage, route::RouteMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::{TestbedError, in_netns};

const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_ROUTE: u32 = 7;

/// One announced message, for `decode`.
#[derive(Debug, Clone, Copy)]
pub enum Announced<'a> {
    Route(&'a RouteMessage),
    /// An IPv4 neighbour (family Inet) or an FDB entry (family Bridge).
    Neighbour(&'a NeighbourMessage),
}

/// What the listener saw.
#[derive(Debug, Clone, Copy)]
pub enum Announcement<T> {
    /// `item` (what `decode` made of the message) was added or changed (`new`) or deleted.
    Change { at: Instant, new: bool, item: T },
    /// The kernel dropped announcements (ENOBUFS): whatever is counted from them may be short.
    Overrun,
}

/// A running listener; stops when dropped.
pub struct NetlinkMonitor<T> {
    rx: Receiver<Announcement<T>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> NetlinkMonitor<T> {
    /// Subscribes to neighbour and IPv4 route announcements in `ns` (returns once subscribed),
    /// with a receive buffer of `rcvbuf` bytes (root may exceed net.core.rmem_max, so a burst
    /// of thousands of entries fits).
    pub fn start(
        ns: &str,
        rcvbuf: usize,
        decode: impl Fn(Announced<'_>) -> Option<T> + Send + 'static,
    ) -> Result<NetlinkMonitor<T>, TestbedError> {
        let sock = in_netns(ns, move || open(rcvbuf))?.map_err(|source| TestbedError::Io {
            what: format!("opening a netlink listener in {ns}"),
            source,
        })?;
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nlmonitor:{ns}"))
            .spawn(move || listen(&sock, &tx, &stop2, &decode))
            .map_err(|source| TestbedError::Io {
                what: "spawning the netlink listener thread".into(),
                source,
            })?;
        Ok(NetlinkMonitor {
            rx,
            stop,
            thread: Some(thread),
        })
    }

    /// The next announcement, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Announcement<T>> {
        match self.rx.recv_timeout(timeout) {
            Ok(a) => Some(a),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Everything already received, without waiting.
    pub fn drain(&self) -> Vec<Announcement<T>> {
        self.rx.try_iter().collect()
    }
}

impl<T> Drop for NetlinkMonitor<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(rcvbuf: usize) -> std::io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind(&SocketAddr::new(0, 0))?;
    sock.add_membership(RTNLGRP_NEIGH)?;
    sock.add_membership(RTNLGRP_IPV4_ROUTE)?;
    if setsockopt(&sock.as_fd(), sockopt::RcvBufForce, &rcvbuf).is_err() {
        sock.set_rx_buf_sz(rcvbuf)?;
    }
    // Wake up every 100 ms to notice a stop request.
    setsockopt(
        &sock.as_fd(),
        sockopt::ReceiveTimeout,
        &TimeVal::new(0, 100_000),
    )
    .map_err(std::io::Error::from)?;
    Ok(sock)
}

fn listen<T>(
    sock: &Socket,
    tx: &Sender<Announcement<T>>,
    stop: &AtomicBool,
    decode: &impl Fn(Announced<'_>) -> Option<T>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 17);
    while !stop.load(Ordering::SeqCst) {
        buf.clear();
        match sock.recv(&mut buf, 0) {
            Ok(_) => {
                let at = Instant::now();
                for (new, item) in parse(&buf, decode) {
                    let _ = tx.send(Announcement::Change { at, new, item });
                }
            }
            Err(e) => match e.raw_os_error().map(Errno::from_raw) {
                Some(Errno::ENOBUFS) => {
                    let _ = tx.send(Announcement::Overrun);
                }
                Some(Errno::EAGAIN) | Some(Errno::EINTR) => {}
                _ => {
                    tracing::warn!("netlink listener stopped: {e}");
                    return;
                }
            },
        }
    }
}

/// The route and neighbour announcements in one datagram, decoded: (added?, item).
fn parse<T>(buf: &[u8], decode: &impl Fn(Announced<'_>) -> Option<T>) -> Vec<(bool, T)> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len])
            && let NetlinkPayload::InnerMessage(inner) = msg.payload
        {
            let change = match &inner {
                RouteNetlinkMessage::NewRoute(r) => decode(Announced::Route(r)).map(|i| (true, i)),
                RouteNetlinkMessage::DelRoute(r) => decode(Announced::Route(r)).map(|i| (false, i)),
                RouteNetlinkMessage::NewNeighbour(n) => {
                    decode(Announced::Neighbour(n)).map(|i| (true, i))
                }
                RouteNetlinkMessage::DelNeighbour(n) => {
                    decode(Announced::Neighbour(n)).map(|i| (false, i))
                }
                _ => None,
            };
            out.extend(change);
        }
        off += (len + 3) & !3;
    }
    out
}
