//! The VXLAN device and its per-peer entries, programmed over rtnetlink.
//!
//! This is the only place that talks to the kernel's routing netlink family. It reads the
//! device's neighbour, FDB and route entries into a [`KernelState`], and applies the
//! [`Op`]s that `weft_core::dataplane::diff` computes, so the daemon itself stays a
//! plan-then-apply loop.

use std::net::{IpAddr, Ipv4Addr};

use crate::batch::{Batch, Kind};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_core::ErrorMessage;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
        RouteScope, RouteType,
    },
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, MulticastGroup, RouteMessageBuilder};
use tracing::{debug, info, warn};
use weft_core::{
    dataplane::{FdbEntry, KernelState, NeighEntry, Observed, Op, Owned, RouteEntry},
    mac::MacAddr,
};

/// The kernel's default VXLAN UDP port, used when the config leaves `Port` at 0.
pub const KERNEL_DEFAULT_VXLAN_PORT: u16 = 8472;

/// An error from a netlink request, naming the object and the operation.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("failed to open a netlink socket: {0}; weftd needs CAP_NET_ADMIN")]
    Socket(#[source] std::io::Error),
    /// The kernel's answer is written once, with a hint for a missing privilege (the
    /// rtnetlink error is not kept as a `source`: its own chain repeats the same text).
    #[error("failed to {what}: {}", describe(cause))]
    Request {
        what: String,
        cause: rtnetlink::Error,
    },
    #[error("network interface {0:?} not found")]
    NoSuchLink(String),
    #[error(
        "{device} exists but is not a VXLAN device ({found}); delete it (ip link del {device}) or change the VNI"
    )]
    NotVxlan { device: String, found: String },
    #[error("{0}")]
    Other(String),
}

impl NetError {
    fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
        let what = what.into();
        move |cause| NetError::Request { what, cause }
    }

    /// The errno of a failed netlink request, if the kernel returned one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Request {
                cause: rtnetlink::Error::NetlinkError(ErrorMessage { code, .. }),
                ..
            } => code.map(|c| -c.get()),
            _ => None,
        }
    }
}

/// The kernel's error for a netlink request as one short text, e.g. "Operation not
/// permitted (os error 1); weftd needs CAP_NET_ADMIN".
fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(ErrorMessage {
            code: Some(code), ..
        }) => {
            let errno = -code.get();
            let text = std::io::Error::from_raw_os_error(errno).to_string();
            if errno == EPERM || errno == EACCES {
                format!(
                    "{text}; weftd needs CAP_NET_ADMIN (run it as root or grant the capability)"
                )
            } else {
                text
            }
        }
        other => other.to_string(),
    }
}

const EPERM: i32 = 1;
const EACCES: i32 = 13;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;

/// What the VXLAN device should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// 0 means the kernel default (8472), as in flannel.
    pub port: u16,
    pub local: Ipv4Addr,
    pub underlay_index: u32,
    pub mtu: u32,
    pub learning: bool,
    pub gbp: bool,
    /// MAC for a device that has to be created (the persisted VTEP MAC).
    pub mac: MacAddr,
}

/// The device as found or created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub index: u32,
    pub mac: MacAddr,
    pub mtu: u32,
    /// True when this call created (or re-created) the device.
    pub created: bool,
}

/// Attributes of an existing VXLAN link that decide whether it can be reused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VxlanAttrs {
    pub vni: Option<u32>,
    pub underlay_index: Option<u32>,
    pub local: Option<Ipv4Addr>,
    pub port: Option<u16>,
    pub learning: Option<bool>,
    pub gbp: bool,
}

/// Why an existing device cannot be reused as it is (flannel's `vxlanLinksIncompat`, plus
/// learning, which weft keeps off). `None` means compatible.
pub fn vxlan_incompatibility(spec: &VxlanSpec, have: &VxlanAttrs) -> Option<String> {
    let want_port = if spec.port == 0 {
        KERNEL_DEFAULT_VXLAN_PORT
    } else {
        spec.port
    };
    if have.vni != Some(spec.vni) {
        return Some(format!("VNI {:?} instead of {}", have.vni, spec.vni));
    }
    if let Some(idx) = have.underlay_index
        && idx > 0
        && spec.underlay_index > 0
        && idx != spec.underlay_index
    {
        return Some(format!(
            "underlay device index {idx} instead of {}",
            spec.underlay_index
        ));
    }
    if let Some(local) = have.local
        && local != spec.local
    {
        return Some(format!("local address {local} instead of {}", spec.local));
    }
    if let Some(port) = have.port
        && port > 0
        && port != want_port
    {
        return Some(format!("UDP port {port} instead of {want_port}"));
    }
    if have.gbp != spec.gbp {
        return Some(format!("GBP {} instead of {}", have.gbp, spec.gbp));
    }
    if let Some(learning) = have.learning
        && learning != spec.learning
    {
        return Some(format!("learning {learning} instead of {}", spec.learning));
    }
    None
}

/// A link as listed by the kernel.
#[derive(Debug, Clone)]
pub struct LinkInfoView {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
    pub up: bool,
    pub kind: Option<String>,
    pub vxlan: Option<VxlanAttrs>,
}

fn link_view(msg: &LinkMessage) -> LinkInfoView {
    let mut v = LinkInfoView {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
        vxlan: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => v.name = n.clone(),
            LinkAttribute::Mtu(m) => v.mtu = *m,
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut b = [0u8; 6];
                b.copy_from_slice(a);
                v.mac = Some(MacAddr(b));
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => v.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                            let mut x = VxlanAttrs::default();
                            for a in attrs {
                                match a {
                                    InfoVxlan::Id(id) => x.vni = Some(*id),
                                    InfoVxlan::Link(l) => x.underlay_index = Some(*l),
                                    InfoVxlan::Local(ip) => x.local = Some(*ip),
                                    InfoVxlan::Port(p) => x.port = Some(*p),
                                    InfoVxlan::Learning(l) => x.learning = Some(*l),
                                    InfoVxlan::Gbp => x.gbp = true,
                                    _ => {}
                                }
                            }
                            v.vxlan = Some(x);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    v
}

/// A netlink connection bound to the network namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// The peers' entries go here, many requests per system call (`crate::batch`).
    batch: std::sync::Arc<tokio::sync::Mutex<Batch>>,
}

impl Netlink {
    /// Opens a routing netlink socket and drives it on the current tokio runtime.
    pub fn connect() -> Result<Netlink, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
        let batch = Batch::open().map_err(NetError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            batch: std::sync::Arc::new(tokio::sync::Mutex::new(batch)),
        })
    }

    /// The link with this name, if it exists.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfoView>, NetError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_view(&msg))),
            Ok(None) => Ok(None),
            Err(e) => {
                let err = NetError::Request {
                    what: format!("look up link {name}"),
                    cause: e,
                };
                if matches!(err.errno(), Some(ENODEV) | Some(ENOENT)) {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfoView>, NetError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(NetError::req("list links"))?;
        Ok(msgs.iter().map(link_view).collect())
    }

    /// IPv4 addresses per link index, with the permanent flag, in kernel order.
    pub async fn ipv4_addresses(&self) -> Result<Vec<(u32, Ipv4Addr, u8, bool)>, NetError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(NetError::req("list addresses"))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.family != AddressFamily::Inet {
                continue;
            }
            let permanent = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    AddressAttribute::Flags(f) => {
                        Some(f.contains(netlink_packet_route::address::AddressFlags::Permanent))
                    }
                    _ => None,
                })
                .unwrap_or(true);
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on p2p links.
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                out.push((m.header.index, ip, m.header.prefix_len, permanent));
            }
        }
        Ok(out)
    }

    /// The link index of the main table's IPv4 default route, if any.
    pub async fn default_route_link(&self) -> Result<Option<u32>, NetError> {
        for r in self.ipv4_routes().await? {
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if r.header.destination_prefix_length == 0
                && r.header.table == RouteHeader::RT_TABLE_MAIN
                && oif.is_some()
            {
                return Ok(oif);
            }
        }
        Ok(None)
    }

    /// `ip route get <dst>`: the outgoing link and preferred source address.
    pub async fn route_get(&self, dst: Ipv4Addr) -> Result<(u32, Option<Ipv4Addr>), NetError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .build();
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .map_err(NetError::req(format!("look up the route to {dst}")))?;
        let r = routes
            .first()
            .ok_or_else(|| NetError::Other(format!("no route to {dst}")))?;
        let oif = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
            .ok_or_else(|| {
                NetError::Other(format!("the route to {dst} has no output interface"))
            })?;
        let src = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        Ok((oif, src))
    }

    async fn ipv4_routes(&self) -> Result<Vec<RouteMessage>, NetError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        self.handle
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .map_err(NetError::req("list IPv4 routes"))
    }

    /// Finds or creates the VXLAN device. An existing compatible device is reused as it is,
    /// keeping its MAC, so a restart disturbs nothing; only a wrong MTU is corrected in place.
    /// An incompatible one is deleted and re-created with `spec.mac`.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<VxlanDevice, NetError> {
        if let Some(link) = self.link_by_name(&spec.name).await? {
            let reason = match (&link.kind, &link.vxlan) {
                (Some(k), Some(attrs)) if k == "vxlan" => vxlan_incompatibility(spec, attrs),
                (kind, _) => Some(format!(
                    "link type {} instead of vxlan",
                    kind.as_deref().unwrap_or("unknown")
                )),
            };
            match reason {
                None => {
                    let mac = link.mac.ok_or_else(|| {
                        NetError::Other(format!("{} reports no MAC address", spec.name))
                    })?;
                    if link.mtu != spec.mtu {
                        info!(device = %spec.name, from = link.mtu, to = spec.mtu, "correcting VXLAN device MTU");
                        self.handle
                            .link()
                            .set(LinkUnspec::new_with_index(link.index).mtu(spec.mtu).build())
                            .execute()
                            .await
                            .map_err(NetError::req(format!("set the MTU of {}", spec.name)))?;
                    }
                    return Ok(VxlanDevice {
                        index: link.index,
                        mac,
                        mtu: spec.mtu,
                        created: false,
                    });
                }
                Some(why) => {
                    warn!(device = %spec.name, reason = %why, "device exists with an incompatible configuration; recreating it");
                    self.handle
                        .link()
                        .del(link.index)
                        .execute()
                        .await
                        .map_err(NetError::req(format!("delete incompatible {}", spec.name)))?;
                }
            }
        }
        let mut builder = LinkVxlan::new(&spec.name, spec.vni)
            .local(spec.local)
            .dev(spec.underlay_index)
            .learning(spec.learning)
            .l2miss(false)
            .l3miss(false)
            .mtu(spec.mtu)
            .address(spec.mac.0.to_vec());
        if spec.port != 0 {
            builder = builder.port(spec.port);
        }
        if spec.gbp {
            builder = builder.gbp();
        }
        match self.handle.link().add(builder.build()).execute().await {
            Ok(()) => {}
            Err(e) => {
                let err = NetError::Request {
                    what: format!("create VXLAN device {}", spec.name),
                    cause: e,
                };
                // Another writer (a second daemon, an operator) won the race: look again.
                if err.errno() != Some(EEXIST) {
                    return Err(err);
                }
            }
        }
        let link = self
            .link_by_name(&spec.name)
            .await?
            .ok_or_else(|| NetError::NoSuchLink(spec.name.clone()))?;
        info!(device = %spec.name, index = link.index, mac = ?link.mac, "created VXLAN device");
        Ok(VxlanDevice {
            index: link.index,
            mac: link.mac.unwrap_or(spec.mac),
            mtu: link.mtu,
            created: true,
        })
    }

    /// Gives the device `index` a new MAC address in place (a VTEP MAC conflict), keeping
    /// its entries and its up state.
    pub async fn set_mac(&self, index: u32, mac: MacAddr) -> Result<(), NetError> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac.0.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(NetError::req(format!("set MAC {mac} on link {index}")))
    }

    /// Puts `addr/32` on the device and removes any other IPv4 address of the device that lies
    /// inside `network` (a stale lease's address), then sets the link up. No-ops when all is
    /// already right.
    pub async fn ensure_address_and_up(
        &self,
        index: u32,
        addr: Ipv4Addr,
        network: Ipv4Net,
    ) -> Result<(), NetError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(NetError::req("list the VXLAN device's addresses"))?;
        let mut have = false;
        for m in msgs {
            if m.header.family != AddressFamily::Inet || m.header.index != index {
                continue;
            }
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            match ip {
                Some(ip) if ip == addr && m.header.prefix_len == 32 => have = true,
                Some(ip) if network.contains(&ip) => {
                    info!(address = %ip, "removing a stale address from the VXLAN device");
                    self.handle
                        .address()
                        .del(m)
                        .execute()
                        .await
                        .map_err(NetError::req(format!("delete stale address {ip}")))?;
                }
                _ => {}
            }
        }
        if !have {
            self.handle
                .address()
                .add(index, IpAddr::V4(addr), 32)
                .replace()
                .execute()
                .await
                .map_err(NetError::req(format!("add {addr}/32 to the VXLAN device")))?;
        }
        let link = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .map_err(NetError::req("read the VXLAN device"))?;
        if !link
            .map(|l| l.header.flags.contains(LinkFlags::Up))
            .unwrap_or(false)
        {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(NetError::req("set the VXLAN device up"))?;
        }
        Ok(())
    }

    /// The permanent neighbours, FDB entries with a destination, and main-table routes of the
    /// device: what weft owns on it.
    pub async fn read_state(&self, index: u32) -> Result<KernelState, NetError> {
        self.read_owned(&Owned::device(index)).await
    }

    /// What weft owns in the kernel (see [`Owned`]): the VXLAN device's permanent
    /// neighbours, FDB entries with a destination and routes, and the direct routes on the
    /// external interface. The dumps are read as streams, entry by entry, so thousands of
    /// peers never sit in memory as netlink messages; without a device (host-gw) only the
    /// routes are read.
    pub async fn read_owned(&self, owned: &Owned) -> Result<KernelState, NetError> {
        let mut state = KernelState::default();

        if let Some(index) = owned.device {
            self.each_neighbour(AddressFamily::Inet, "list neighbours", |n| {
                if n.header.ifindex == index
                    && let (ip, Some(mac)) = neigh_of_message(n)
                    && let Some(ip) = ip
                {
                    state.neighs.push(NeighEntry { ip, mac });
                }
            })
            .await?;

            self.each_neighbour(AddressFamily::Bridge, "list FDB entries", |n| {
                if n.header.ifindex == index
                    && let Some(entry) = fdb_of_message(n)
                {
                    state.fdb.push(entry);
                }
            })
            .await?;
        }

        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(r) = routes
            .try_next()
            .await
            .map_err(NetError::req("list routes"))?
        {
            if let Some((oif, entry)) = route_of_message(&r)
                && let Some(entry) = owned.route(oif, entry)
            {
                state.routes.push(entry);
            }
        }
        Ok(state)
    }

    /// Reads the neighbour table of `family` as a stream, passing each entry to `each`;
    /// `what` names the dump in an error.
    async fn each_neighbour(
        &self,
        family: AddressFamily,
        what: &str,
        mut each: impl FnMut(&NeighbourMessage),
    ) -> Result<(), NetError> {
        let mut dump = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(n) = dump.try_next().await.map_err(NetError::req(what))? {
            each(&n);
        }
        Ok(())
    }

    /// The networks of the IPv4 addresses on link `index` (host addresses as /32): what is
    /// on that link.
    pub async fn link_networks(&self, index: u32) -> Result<Vec<Ipv4Net>, NetError> {
        Ok(self
            .ipv4_addresses()
            .await?
            .into_iter()
            .filter(|(i, ..)| *i == index)
            .filter_map(|(_, addr, prefix, _)| Ipv4Net::new(addr, prefix).ok())
            .map(|n| n.trunc())
            .collect())
    }

    /// Applies the ops in order and returns, for each op, whether it failed. A failed op does
    /// not stop the others (each peer's entries are independent); the caller counts failures
    /// and retries. Deleting something already gone counts as done.
    ///
    /// The requests go to the kernel in chunks of [`batch::CHUNK`], one system call each
    /// (`crate::batch`): the kernel handles them in the order of `ops` (neighbour, FDB, then
    /// route), and answers only for the ones it refuses and the last of each chunk.
    pub async fn apply(&self, owned: &Owned, ops: &[Op]) -> Vec<Option<NetError>> {
        let mut results: Vec<Option<NetError>> = Vec::with_capacity(ops.len());
        let mut requests = Vec::with_capacity(ops.len());
        let mut sent = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            debug!(?op, "applying");
            let link = match op {
                Op::SetRoute(r) | Op::DelRoute(r) => owned.link_of(r),
                _ => owned.device,
            };
            match link {
                Some(index) => {
                    requests.push(request(index, op));
                    sent.push(i);
                    results.push(None);
                }
                None => results.push(Some(NetError::Other(format!(
                    "{op:?} has no link to go to (no VXLAN device, or no external interface)"
                )))),
            }
        }
        if requests.is_empty() {
            return results;
        }
        let answers = self.batch.lock().await.run(requests).await;
        match answers {
            Ok(errnos) => {
                for (&i, errno) in sent.iter().zip(errnos) {
                    let op = &ops[i];
                    let Some(errno) = errno else { continue };
                    let gone = errno == ENOENT || errno == ESRCH;
                    let is_delete = matches!(op, Op::DelNeigh(_) | Op::DelFdb(_) | Op::DelRoute(_));
                    if !(gone && is_delete) {
                        results[i] = Some(refused(op, errno));
                    }
                }
            }
            Err(e) => {
                for &i in &sent {
                    results[i] = Some(NetError::Other(format!(
                        "failed to send {} over netlink: {e}",
                        describe_op(&ops[i])
                    )));
                }
            }
        }
        results
    }

    /// Deletes a link by name; absent is fine.
    pub async fn delete_link(&self, name: &str) -> Result<(), NetError> {
        if let Some(link) = self.link_by_name(name).await? {
            self.handle
                .link()
                .del(link.index)
                .execute()
                .await
                .map_err(NetError::req(format!("delete {name}")))?;
        }
        Ok(())
    }
}

/// A change the kernel announced on one of the groups weft cares about, reduced to the link
/// it concerns and, for neighbours, FDB entries and routes, to the entry itself, so the
/// daemon can tell the echo of its own change from drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelChange {
    /// A link appeared, changed or vanished.
    Link(u32),
    /// An IPv4 address on the link changed.
    Address(u32),
    /// An entry of a kind weft programs changed on the link.
    Entry(u32, Observed),
    /// Another neighbour or route change (IPv6, another table, a kernel route), with its
    /// link if known.
    Other(Option<u32>),
    /// The kernel dropped notifications because the socket's buffer was full: whoever keeps
    /// a model of the kernel must re-read it.
    Overrun,
}

impl KernelChange {
    /// The link this change is about, if known.
    pub fn ifindex(&self) -> Option<u32> {
        match self {
            KernelChange::Link(i) | KernelChange::Address(i) | KernelChange::Entry(i, _) => {
                Some(*i)
            }
            KernelChange::Other(i) => *i,
            KernelChange::Overrun => None,
        }
    }
}

/// The socket buffer asked for the notification socket (the kernel caps it at
/// net.core.rmem_max). Programming thousands of peers at once announces each entry.
const MONITOR_RCVBUF: usize = 4 << 20;

/// Listens to the kernel's link, IPv4 address, IPv4 route and neighbour notifications (like
/// `ip monitor`), so a deleted route, entry or device is noticed at once instead of at the next
/// periodic check.
pub struct ChangeMonitor {
    _handle: Handle,
    rx: futures::channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        netlink_sys::SocketAddr,
    )>,
}

impl ChangeMonitor {
    pub fn new() -> Result<ChangeMonitor, NetError> {
        use netlink_sys::AsyncSocket;
        let (mut conn, handle, rx) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Neigh,
        ])
        .map_err(NetError::Socket)?;
        if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(MONITOR_RCVBUF) {
            warn!(error = %e, "cannot enlarge the netlink notification buffer; bursts may overrun it (handled by a full re-read)");
        }
        tokio::spawn(conn);
        Ok(ChangeMonitor {
            _handle: handle,
            rx,
        })
    }

    /// The next change; None when the socket closed.
    pub async fn next(&mut self) -> Option<KernelChange> {
        use futures::StreamExt;
        loop {
            let (msg, _) = self.rx.next().await?;
            let inner = match msg.payload {
                NetlinkPayload::InnerMessage(inner) => inner,
                NetlinkPayload::Overrun(_) => return Some(KernelChange::Overrun),
                _ => continue,
            };
            let change = match inner {
                RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l) => {
                    KernelChange::Link(l.header.index)
                }
                RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
                    KernelChange::Address(a.header.index)
                }
                RouteNetlinkMessage::NewRoute(r) => route_change(&r, true),
                RouteNetlinkMessage::DelRoute(r) => route_change(&r, false),
                RouteNetlinkMessage::NewNeighbour(n) => neighbour_change(&n, true),
                RouteNetlinkMessage::DelNeighbour(n) => neighbour_change(&n, false),
                _ => continue,
            };
            return Some(change);
        }
    }
}

fn route_change(r: &RouteMessage, present: bool) -> KernelChange {
    match route_of_message(r) {
        Some((oif, entry)) => KernelChange::Entry(oif, Observed::Route { entry, present }),
        None => KernelChange::Other(route_oif(r)),
    }
}

fn neighbour_change(n: &NeighbourMessage, present: bool) -> KernelChange {
    let index = n.header.ifindex;
    match n.header.family {
        AddressFamily::Inet => match neigh_of_message(n) {
            (Some(ip), mac) => KernelChange::Entry(
                index,
                Observed::Neigh {
                    ip,
                    mac: if present { mac } else { None },
                },
            ),
            (None, _) => KernelChange::Other(Some(index)),
        },
        AddressFamily::Bridge => match fdb_of_message(n) {
            Some(entry) => KernelChange::Entry(index, Observed::Fdb { entry, present }),
            None => KernelChange::Other(Some(index)),
        },
        _ => KernelChange::Other(Some(index)),
    }
}

/// What weft reads of an IPv4 route message: the one route decoder, for weftd's dumps and
/// monitor, the soak's watcher and the benchmarks' listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteFacts {
    /// RTA_TABLE when present (tables above 255), else the header's table.
    pub table: u32,
    pub dst: Ipv4Net,
    pub gw: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub unicast: bool,
    /// Made by the kernel for an address (protocol kernel).
    pub kernel_made: bool,
    pub onlink: bool,
}

impl RouteFacts {
    /// In the main table.
    pub fn in_main_table(&self) -> bool {
        self.table == u32::from(RouteHeader::RT_TABLE_MAIN)
    }
}

/// The facts of an IPv4 route message (None for another family or a bad prefix length).
pub fn route_facts(r: &RouteMessage) -> Option<RouteFacts> {
    if r.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut table = u32::from(r.header.table);
    let (mut dst, mut gw, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some(RouteFacts {
        table,
        dst: Ipv4Net::new(dst, r.header.destination_prefix_length).ok()?,
        gw,
        oif,
        unicast: r.header.kind == RouteType::Unicast,
        kernel_made: r.header.protocol == RouteProtocol::Kernel,
        onlink: r.header.flags.contains(RouteFlags::Onlink),
    })
}

/// What weft reads of a neighbour (ARP) or bridge FDB message: the one neighbour decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighFacts {
    /// An FDB entry (family AF_BRIDGE) rather than an IPv4 neighbour.
    pub fdb: bool,
    pub ifindex: u32,
    /// NDA_DST: the neighbour's IP, or an FDB entry's remote VTEP.
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<MacAddr>,
    pub permanent: bool,
}

/// The facts of an IPv4 neighbour or FDB message (None for another family).
pub fn neigh_facts(n: &NeighbourMessage) -> Option<NeighFacts> {
    let fdb = match n.header.family {
        AddressFamily::Inet => false,
        AddressFamily::Bridge => true,
        _ => return None,
    };
    let (mut ip, mut mac) = (None, None);
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(*v4),
            // FDB dumps carry NDA_DST as raw bytes (rust-stack.md pitfall 4).
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                ip = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            }
            NeighbourAttribute::LinkLayerAddress(b) => mac = mac_from(b),
            _ => {}
        }
    }
    Some(NeighFacts {
        fdb,
        ifindex: n.header.ifindex,
        ip,
        mac,
        permanent: n.header.state == NeighbourState::Permanent,
    })
}

/// A neighbour message's IPv4 address, and its MAC if the entry is permanent (the only kind
/// weft programs; any other state means weft's entry is not there).
fn neigh_of_message(n: &NeighbourMessage) -> (Option<Ipv4Addr>, Option<MacAddr>) {
    match neigh_facts(n) {
        Some(f) => (f.ip, f.mac.filter(|_| f.permanent)),
        None => (None, None),
    }
}

/// An FDB message as the (MAC, destination) entry weft programs, if it has both.
fn fdb_of_message(n: &NeighbourMessage) -> Option<FdbEntry> {
    let f = neigh_facts(n)?;
    Some(FdbEntry {
        mac: f.mac?,
        dst: f.ip?,
    })
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// A route message as (output link, entry) if it is a route weft could own: main table,
/// unicast, not one the kernel made for an address, with an output link.
fn route_of_message(r: &RouteMessage) -> Option<(u32, RouteEntry)> {
    let f = route_facts(r)?;
    if !f.in_main_table() || !f.unicast || f.kernel_made {
        return None;
    }
    Some((
        f.oif?,
        RouteEntry {
            dst: f.dst,
            gw: f.gw,
            onlink: f.onlink,
            underlay: false,
        },
    ))
}

/// flannel's route: `<subnet> via <subnet address> dev flannel.N onlink`, or a direct one
/// (host-gw, DirectRouting) `<subnet> via <PublicIP> dev <ext>`; protocol boot (what
/// vishvananda/netlink sends by default, so `ip route` shows the same as on a flanneld node).
fn route_message(index: u32, r: &RouteEntry) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .output_interface(index)
        .scope(RouteScope::Universe)
        .protocol(RouteProtocol::Boot);
    if let Some(gw) = r.gw {
        b = b.gateway(gw);
    }
    if r.onlink {
        b = b.onlink();
    }
    b.build()
}

/// The request that carries out `op` on link `index`: what `ip neigh replace ... nud
/// permanent`, `bridge fdb replace ... self permanent` and `ip route replace ... proto boot`
/// (or their deletes) send.
fn request(index: u32, op: &Op) -> (Kind, RouteNetlinkMessage) {
    let neigh = |n: &NeighEntry| {
        permanent_neighbour(
            AddressFamily::Inet,
            index,
            vec![
                NeighbourAttribute::Destination(NeighbourAddress::Inet(n.ip)),
                NeighbourAttribute::LinkLayerAddress(n.mac.0.to_vec()),
            ],
        )
    };
    let fdb = |f: &FdbEntry| {
        let mut m = permanent_neighbour(
            AddressFamily::Bridge,
            index,
            vec![
                NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()),
                NeighbourAttribute::Destination(NeighbourAddress::Inet(f.dst)),
            ],
        );
        m.header.flags = NeighbourFlags::Own;
        m
    };
    match op {
        Op::SetNeigh(n) => (Kind::Replace, RouteNetlinkMessage::NewNeighbour(neigh(n))),
        Op::DelNeigh(n) => (Kind::Delete, RouteNetlinkMessage::DelNeighbour(neigh(n))),
        Op::SetFdb(f) => (Kind::Replace, RouteNetlinkMessage::NewNeighbour(fdb(f))),
        Op::DelFdb(f) => (Kind::Delete, RouteNetlinkMessage::DelNeighbour(fdb(f))),
        Op::SetRoute(r) => (
            Kind::Replace,
            RouteNetlinkMessage::NewRoute(route_message(index, r)),
        ),
        Op::DelRoute(r) => (
            Kind::Delete,
            RouteNetlinkMessage::DelRoute(route_message(index, r)),
        ),
    }
}

/// What an op does, for an error: "set route 10.244.2.0/24", "delete FDB entry ... dst ...".
fn describe_op(op: &Op) -> String {
    match op {
        Op::SetNeigh(n) => format!("set neighbour {} lladdr {}", n.ip, n.mac),
        Op::DelNeigh(n) => format!("delete neighbour {}", n.ip),
        Op::SetFdb(f) => format!("set FDB entry {} dst {}", f.mac, f.dst),
        Op::DelFdb(f) => format!("delete FDB entry {} dst {}", f.mac, f.dst),
        Op::SetRoute(r) => format!("set route {}", r.dst),
        Op::DelRoute(r) => format!("delete route {}", r.dst),
    }
}

/// The kernel refused `op` with `errno`: the same error a single request would give.
fn refused(op: &Op, errno: i32) -> NetError {
    let mut msg = ErrorMessage::default();
    msg.code = std::num::NonZeroI32::new(-errno);
    NetError::Request {
        what: describe_op(op),
        cause: rtnetlink::Error::NetlinkError(msg),
    }
}

/// A permanent neighbour message of `family` on link `index` with these attributes, in
/// this order: what a delete request names.
fn permanent_neighbour(
    family: AddressFamily,
    index: u32,
    attributes: Vec<NeighbourAttribute>,
) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes = attributes;
    m
}

fn mac_from(b: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(b).ok().map(MacAddr)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refused_request_is_described_once_with_the_privilege_it_needs() {
        let mut msg = ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(-1);
        let e = NetError::Request {
            what: "create VXLAN device flannel.1".into(),
            cause: rtnetlink::Error::NetlinkError(msg),
        };
        let text = e.to_string();
        assert_eq!(text.matches("Operation not permitted").count(), 1, "{text}");
        assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(e.errno(), Some(EPERM));
    }

    use super::*;

    fn spec() -> VxlanSpec {
        VxlanSpec {
            name: "flannel.1".into(),
            vni: 1,
            port: 0,
            local: Ipv4Addr::new(10, 0, 0, 1),
            underlay_index: 2,
            mtu: 8951,
            learning: false,
            gbp: false,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
        }
    }

    fn flanneld_like() -> VxlanAttrs {
        VxlanAttrs {
            vni: Some(1),
            underlay_index: Some(2),
            local: Some(Ipv4Addr::new(10, 0, 0, 1)),
            port: Some(8472),
            learning: Some(false),
            gbp: false,
        }
    }

    #[test]
    fn a_flanneld_device_is_compatible() {
        assert_eq!(vxlan_incompatibility(&spec(), &flanneld_like()), None);
    }

    #[test]
    fn each_difference_is_named() {
        let cases: Vec<(VxlanAttrs, &str)> = vec![
            (
                VxlanAttrs {
                    vni: Some(2),
                    ..flanneld_like()
                },
                "VNI",
            ),
            (
                VxlanAttrs {
                    underlay_index: Some(7),
                    ..flanneld_like()
                },
                "underlay",
            ),
            (
                VxlanAttrs {
                    local: Some(Ipv4Addr::new(10, 0, 0, 9)),
                    ..flanneld_like()
                },
                "local address",
            ),
            (
                VxlanAttrs {
                    port: Some(4789),
                    ..flanneld_like()
                },
                "UDP port",
            ),
            (
                VxlanAttrs {
                    learning: Some(true),
                    ..flanneld_like()
                },
                "learning",
            ),
            (
                VxlanAttrs {
                    gbp: true,
                    ..flanneld_like()
                },
                "GBP",
            ),
        ];
        for (attrs, word) in cases {
            let why = vxlan_incompatibility(&spec(), &attrs).expect("incompatible");
            assert!(why.contains(word), "{why} should mention {word}");
        }
    }

    #[test]
    fn explicit_port_must_match() {
        let s = VxlanSpec {
            port: 4789,
            ..spec()
        };
        assert!(vxlan_incompatibility(&s, &flanneld_like()).is_some());
        let have = VxlanAttrs {
            port: Some(4789),
            ..flanneld_like()
        };
        assert_eq!(vxlan_incompatibility(&s, &have), None);
    }

    /// The route to node 2's subnet 10.244.2.0/24 over the VXLAN device: onlink via the
    /// subnet address.
    fn vxlan_route() -> RouteEntry {
        RouteEntry {
            dst: "10.244.2.0/24".parse().unwrap(),
            gw: Some(Ipv4Addr::new(10, 244, 2, 0)),
            onlink: true,
            underlay: false,
        }
    }

    #[test]
    fn route_message_is_onlink_via_subnet_address() {
        let r = vxlan_route();
        let m = route_message(5, &r);
        assert!(m.header.flags.contains(RouteFlags::Onlink));
        assert_eq!(m.header.destination_prefix_length, 24);
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        assert!(m.attributes.contains(&RouteAttribute::Oif(5)));
        assert!(
            m.attributes
                .contains(&RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                    10, 244, 2, 0
                ))))
        );
    }

    #[test]
    fn route_facts_read_back_what_weft_sends() {
        let r = vxlan_route();
        let m = route_message(5, &r);
        let f = route_facts(&m).unwrap();
        assert_eq!((f.dst, f.gw, f.oif, f.onlink), (r.dst, r.gw, Some(5), true));
        assert!(f.in_main_table() && f.unicast && !f.kernel_made);
        assert_eq!(route_of_message(&m), Some((5, r)));
        let mut v6 = m.clone();
        v6.header.address_family = AddressFamily::Inet6;
        assert_eq!(route_facts(&v6), None);
        let mut other = m;
        other.attributes.push(RouteAttribute::Table(1536));
        assert!(!route_facts(&other).unwrap().in_main_table());
        assert_eq!(route_of_message(&other), None);
    }

    #[test]
    fn a_direct_route_goes_via_the_public_ip_without_onlink_and_reads_back_as_weft_s() {
        let r = RouteEntry {
            gw: Some(Ipv4Addr::new(192, 168, 1, 12)),
            onlink: false,
            underlay: true,
            ..vxlan_route()
        };
        let m = route_message(2, &r);
        let f = route_facts(&m).unwrap();
        assert_eq!(
            (f.dst, f.gw, f.oif, f.onlink),
            (r.dst, r.gw, Some(2), false)
        );
        let owned = Owned {
            device: Some(7),
            underlay: Some((2, "10.244.0.0/16".parse().unwrap())),
        };
        let (oif, read) = route_of_message(&m).unwrap();
        assert_eq!(owned.route(oif, read), Some(r));
    }

    #[test]
    fn neighbour_facts_of_arp_and_fdb_entries() {
        let mac = MacAddr([0x0e, 1, 2, 3, 4, 5]);
        let mut arp = NeighbourMessage::default();
        arp.header.family = AddressFamily::Inet;
        arp.header.ifindex = 7;
        arp.header.state = NeighbourState::Permanent;
        arp.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(10, 244, 2, 0))),
            NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
        ];
        let f = neigh_facts(&arp).unwrap();
        assert_eq!(
            (f.fdb, f.ifindex, f.ip, f.mac, f.permanent),
            (
                false,
                7,
                Some(Ipv4Addr::new(10, 244, 2, 0)),
                Some(mac),
                true
            )
        );
        assert_eq!(neigh_of_message(&arp), (f.ip, Some(mac)));
        arp.header.state = NeighbourState::Stale;
        assert_eq!(
            neigh_of_message(&arp).1,
            None,
            "only a permanent entry is weft's"
        );
        // An FDB dump carries NDA_DST as raw bytes.
        let mut fdb = NeighbourMessage::default();
        fdb.header.family = AddressFamily::Bridge;
        fdb.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
            NeighbourAttribute::Destination(NeighbourAddress::Other(vec![192, 168, 0, 2])),
        ];
        assert_eq!(
            fdb_of_message(&fdb),
            Some(FdbEntry {
                mac,
                dst: Ipv4Addr::new(192, 168, 0, 2)
            })
        );
        fdb.header.family = AddressFamily::Inet6;
        assert_eq!(neigh_facts(&fdb), None);
    }
}
