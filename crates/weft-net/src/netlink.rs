//! The VXLAN device and its per-peer entries, programmed over rtnetlink.
//!
//! This is the only place that talks to the kernel's routing netlink family. It reads the
//! device's neighbour, FDB and route entries into a [`KernelState`], and applies the
//! [`Op`]s that `weft_core::dataplane::diff` computes, so the daemon itself stays a
//! plan-then-apply loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::batch::{Batch, Kind};
use futures::TryStreamExt;
use ipnet::{Ipv4Net, Ipv6Net};
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
    family::PodNet,
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
const EINVAL: i32 = 22;

/// What the VXLAN device should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// 0 means the kernel default (8472), as in flannel.
    pub port: u16,
    /// The source address of the encapsulated packets (IFLA_VXLAN_LOCAL, or
    /// IFLA_VXLAN_LOCAL6 for flannel's `flannel-v6.<VNI>`).
    pub local: IpAddr,
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
    /// IFLA_VXLAN_LOCAL or IFLA_VXLAN_LOCAL6, whichever the kernel reports.
    pub local: Option<IpAddr>,
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
                                    InfoVxlan::Local(ip) => x.local = Some(IpAddr::V4(*ip)),
                                    InfoVxlan::Local6(ip) => x.local = Some(IpAddr::V6(*ip)),
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
        Ok(self
            .addresses(AddressFamily::Inet)
            .await?
            .into_iter()
            .filter_map(|(index, ip, prefix, permanent)| match ip {
                IpAddr::V4(ip) => Some((index, ip, prefix, permanent)),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// The global IPv6 addresses per link index (not link-local, loopback, multicast or
    /// unspecified), with their prefix length and the permanent flag, in kernel order:
    /// flannel's `GetInterfaceIP6Addrs` candidates for the external interface and its
    /// PublicIPv6.
    pub async fn ipv6_addresses(&self) -> Result<Vec<(u32, Ipv6Addr, u8, bool)>, NetError> {
        Ok(self
            .addresses(AddressFamily::Inet6)
            .await?
            .into_iter()
            .filter_map(|(index, ip, prefix, permanent)| match ip {
                IpAddr::V6(ip) if is_global_ipv6(&ip) => Some((index, ip, prefix, permanent)),
                _ => None,
            })
            .collect())
    }

    /// The link holding the address `ip` (flannel's `GetInterfaceByIP`/`GetInterfaceByIP6`),
    /// if any; for IPv6 only the global addresses of [`Self::ipv6_addresses`] count.
    pub async fn link_with_address(&self, ip: IpAddr) -> Result<Option<u32>, NetError> {
        Ok(match ip {
            IpAddr::V4(ip) => self
                .ipv4_addresses()
                .await?
                .into_iter()
                .find(|(_, a, ..)| *a == ip)
                .map(|(index, ..)| index),
            IpAddr::V6(ip) => self
                .ipv6_addresses()
                .await?
                .into_iter()
                .find(|(_, a, ..)| *a == ip)
                .map(|(index, ..)| index),
        })
    }

    /// The addresses of `family` per link index: (index, address, prefix length, permanent).
    async fn addresses(
        &self,
        family: AddressFamily,
    ) -> Result<Vec<(u32, IpAddr, u8, bool)>, NetError> {
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
            if m.header.family != family {
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
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on p2p links
            // (IPv6 addresses carry IFA_ADDRESS alone, unless they have a peer).
            let same_family = |ip: &IpAddr| ip.is_ipv6() == (family == AddressFamily::Inet6);
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) if same_family(ip) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) if same_family(ip) => Some(*ip),
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
        Ok(default_route_oif(&self.routes(AddressFamily::Inet).await?))
    }

    /// The link index of the main table's IPv6 default route (`::/0`), if any: flannel's
    /// `GetDefaultV6GatewayInterface`.
    pub async fn default_route_link6(&self) -> Result<Option<u32>, NetError> {
        Ok(default_route_oif(&self.routes(AddressFamily::Inet6).await?))
    }

    /// `ip route get <dst>`: the outgoing link and preferred source address.
    pub async fn route_get(&self, dst: Ipv4Addr) -> Result<(u32, Option<Ipv4Addr>), NetError> {
        let r = self.route_lookup(IpAddr::V4(dst)).await?;
        let src = match r.src {
            Some(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        };
        Ok((r.oif, src))
    }

    /// `ip -6 route get <dst>`: the outgoing link and preferred source address.
    pub async fn route_get6(&self, dst: Ipv6Addr) -> Result<(u32, Option<Ipv6Addr>), NetError> {
        let r = self.route_lookup(IpAddr::V6(dst)).await?;
        let src = match r.src {
            Some(IpAddr::V6(ip)) => Some(ip),
            _ => None,
        };
        Ok((r.oif, src))
    }

    /// `ip route get <dst>` for either family: the outgoing link, the preferred source and
    /// the gateway. A route without a gateway means `dst` is on the link (flannel's rule for
    /// DirectRouting).
    pub async fn route_lookup(&self, dst: IpAddr) -> Result<RouteLookup, NetError> {
        let msg = match dst {
            IpAddr::V4(dst) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst, 32)
                .build(),
            IpAddr::V6(dst) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst, 128)
                .build(),
        };
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
        route_lookup_of(r)
            .ok_or_else(|| NetError::Other(format!("the route to {dst} has no output interface")))
    }

    /// Every route of `family` (a dump).
    async fn routes(&self, family: AddressFamily) -> Result<Vec<RouteMessage>, NetError> {
        let (msg, what) = if family == AddressFamily::Inet6 {
            (route_dump::<Ipv6Net>(), "list IPv6 routes")
        } else {
            (route_dump::<Ipv4Net>(), "list IPv4 routes")
        };
        self.handle
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .map_err(NetError::req(what))
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
        let builder = LinkVxlan::new(&spec.name, spec.vni);
        let builder = match spec.local {
            IpAddr::V4(local) => builder.local(local),
            IpAddr::V6(local) => builder.local6(local),
        };
        let mut builder = builder
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
        if spec.local.is_ipv6() {
            // As flannel does for its IPv6 device: no router advertisements on the overlay.
            let path = format!("/proc/sys/net/ipv6/conf/{}/accept_ra", spec.name);
            if let Err(e) = std::fs::write(&path, "0") {
                debug!(path = %path, error = %e, "cannot turn off accept_ra (ignored)");
            }
        }
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

    /// Puts the host address `addr` (`/32`, or `/128` for IPv6) on the device, removes the
    /// device's other addresses of that family that weft would have put there, then sets the
    /// link up. No-ops when all is already right.
    ///
    /// For IPv4 the others are the addresses inside `network` (a stale lease's address). For
    /// IPv6 they are every address but the link-local ones, whatever `network` is (flannel's
    /// `EnsureV6AddressOnLink` on `flannel-v6.<VNI>`).
    pub async fn ensure_address_and_up<N: PodNet>(
        &self,
        index: u32,
        addr: N::Addr,
        network: N,
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
            if m.header.family != family_of::<N>() || m.header.index != index {
                continue;
            }
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => N::addr_of(*ip),
                _ => None,
            });
            match ip {
                Some(ip) if ip == addr && m.header.prefix_len == N::MAX_PREFIX => have = true,
                Some(ip) if stale_device_address(network, ip) => {
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
                .add(index, addr.into(), N::MAX_PREFIX)
                .replace()
                .execute()
                .await
                .map_err(NetError::req(format!(
                    "add {addr}/{} to the VXLAN device",
                    N::MAX_PREFIX
                )))?;
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

    /// The permanent IPv4 neighbours, FDB entries with an IPv4 destination, and main-table
    /// IPv4 routes of the device: what weft owns on it (`read_owned` with
    /// `Owned::<Ipv6Net>::device(index)` reads an IPv6 device).
    pub async fn read_state(&self, index: u32) -> Result<KernelState, NetError> {
        self.read_owned(&Owned::device(index)).await
    }

    /// What weft owns in the kernel (see [`Owned`]) in the family `N`: the VXLAN device's
    /// permanent neighbours, FDB entries with a destination of the family and routes, and the
    /// direct routes on the external interface. The dumps are read as streams, entry by
    /// entry, so thousands of peers never sit in memory as netlink messages; without a device
    /// (host-gw) only the routes are read. Entries of the other family are left out (the FDB
    /// dump is AF_BRIDGE for both: its entries are told apart by their destination).
    pub async fn read_owned<N: PodNet>(
        &self,
        owned: &Owned<N>,
    ) -> Result<KernelState<N>, NetError> {
        let mut state = KernelState::default();

        if let Some(index) = owned.device {
            self.each_neighbour(family_of::<N>(), "list neighbours", |n| {
                if n.header.ifindex == index
                    && let (ip, Some(mac)) = neigh_of_message::<N>(n)
                    && let Some(ip) = ip
                {
                    state.neighs.push(NeighEntry { ip, mac });
                }
            })
            .await?;

            self.each_neighbour(AddressFamily::Bridge, "list FDB entries", |n| {
                if n.header.ifindex == index
                    && let Some(entry) = fdb_of_message::<N>(n)
                {
                    state.fdb.push(entry);
                }
            })
            .await?;
        }

        let mut routes = self.handle.route().get(route_dump::<N>()).execute();
        while let Some(r) = routes
            .try_next()
            .await
            .map_err(NetError::req("list routes"))?
        {
            if let Some((oif, entry)) = route_of_message::<N>(&r)
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

    /// The networks of the addresses of family `N` on link `index` (host addresses as /32 or
    /// /128; for IPv6 the global ones of [`Self::ipv6_addresses`]): what is on that link.
    pub async fn link_networks<N: PodNet>(&self, index: u32) -> Result<Vec<N>, NetError> {
        let addrs: Vec<(u32, IpAddr, u8)> = if N::V6 {
            self.ipv6_addresses()
                .await?
                .into_iter()
                .map(|(i, a, p, _)| (i, IpAddr::V6(a), p))
                .collect()
        } else {
            self.ipv4_addresses()
                .await?
                .into_iter()
                .map(|(i, a, p, _)| (i, IpAddr::V4(a), p))
                .collect()
        };
        Ok(addrs
            .into_iter()
            .filter(|(i, ..)| *i == index)
            .filter_map(|(_, addr, prefix)| N::with_prefix(N::addr_of(addr)?, prefix))
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
    pub async fn apply<N: PodNet>(&self, owned: &Owned<N>, ops: &[Op<N>]) -> Vec<Option<NetError>> {
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
        let mut batch = self.batch.lock().await;
        let answers = batch.run(requests).await;
        match answers {
            Ok(errnos) => {
                let mut moved = Vec::new();
                for (&i, errno) in sent.iter().zip(errnos) {
                    let op = &ops[i];
                    let Some(errno) = errno else { continue };
                    let gone = errno == ENOENT || errno == ESRCH;
                    let is_delete = matches!(op, Op::DelNeigh(_) | Op::DelFdb(_) | Op::DelRoute(_));
                    if !(gone && is_delete) {
                        results[i] = Some(refused(op, errno));
                    }
                    if errno == EINVAL
                        && let Op::SetRoute(r) = op
                        && N::V6
                        && r.onlink
                    {
                        moved.push(i);
                    }
                }
                if !moved.is_empty() {
                    self.move_onlink_routes(&mut batch, owned, ops, &moved, &mut results)
                        .await;
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

    /// IPv6 refuses an on-link route whose gateway the table already reaches through another
    /// link (`ip6_route_check_nh_onlink`: EINVAL), which is the case when a peer's subnet
    /// moves from a direct route on the external interface to the VXLAN device (its route
    /// via the subnet address is reached through the old route). IPv4 replaces it in place;
    /// for IPv6 the route to the subnet is deleted first, then set again: the subnet is
    /// unreachable only between the two requests. `moved` are the indexes of such refused
    /// `SetRoute`s in `ops`; their results are those of the second try.
    async fn move_onlink_routes<N: PodNet>(
        &self,
        batch: &mut Batch,
        owned: &Owned<N>,
        ops: &[Op<N>],
        moved: &[usize],
        results: &mut [Option<NetError>],
    ) {
        let mut requests = Vec::with_capacity(2 * moved.len());
        for &i in moved {
            let Op::SetRoute(r) = &ops[i] else { continue };
            let Some(index) = owned.link_of(r) else {
                continue;
            };
            debug!(dst = %r.dst, "deleting the route to the subnet before setting it on-link");
            requests.push((Kind::Delete, RouteNetlinkMessage::DelRoute(route_to(r.dst))));
            requests.push(request(index, &ops[i]));
        }
        match batch.run(requests).await {
            Ok(errnos) => {
                // Every second answer is a retried replace (the deletes' answers do not
                // matter: gone is fine, and a failure shows in the replace).
                for (&i, errno) in moved.iter().zip(errnos.into_iter().skip(1).step_by(2)) {
                    results[i] = errno.map(|errno| refused(&ops[i], errno));
                }
            }
            Err(e) => {
                for &i in moved {
                    results[i] = Some(NetError::Other(format!(
                        "failed to send {} over netlink: {e}",
                        describe_op(&ops[i])
                    )));
                }
            }
        }
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
/// daemon can tell the echo of its own change from drift. IPv4 and IPv6 entries come as
/// different variants, so a daemon with `flannel.<VNI>` and `flannel-v6.<VNI>` hands each to
/// the model of its family (and, by the link, of its device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelChange {
    /// A link appeared, changed or vanished.
    Link(u32),
    /// An IPv4 address on the link changed.
    Address(u32),
    /// An IPv4 entry of a kind weft programs changed on the link (a neighbour, an FDB entry
    /// with an IPv4 destination, a route).
    Entry(u32, Observed),
    /// An IPv6 address on the link changed.
    Address6(u32),
    /// An IPv6 entry of a kind weft programs changed on the link (a neighbour, an FDB entry
    /// with an IPv6 destination, a route).
    Entry6(u32, Observed<Ipv6Net>),
    /// Another neighbour or route change (another table, a kernel route, an FDB entry
    /// without a destination), with its link if known.
    Other(Option<u32>),
    /// The kernel dropped notifications because the socket's buffer was full: whoever keeps
    /// a model of the kernel must re-read it.
    Overrun,
}

impl KernelChange {
    /// The link this change is about, if known.
    pub fn ifindex(&self) -> Option<u32> {
        match self {
            KernelChange::Link(i)
            | KernelChange::Address(i)
            | KernelChange::Entry(i, _)
            | KernelChange::Address6(i)
            | KernelChange::Entry6(i, _) => Some(*i),
            KernelChange::Other(i) => *i,
            KernelChange::Overrun => None,
        }
    }
}

/// The socket buffer asked for the notification socket (the kernel caps it at
/// net.core.rmem_max). Programming thousands of peers at once announces each entry.
const MONITOR_RCVBUF: usize = 4 << 20;

/// Listens to the kernel's link, address (IPv4 and IPv6), route (IPv4 and IPv6) and
/// neighbour notifications (like `ip monitor`), so a deleted route, entry or device is
/// noticed at once instead of at the next periodic check.
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
            MulticastGroup::Ipv6Ifaddr,
            MulticastGroup::Ipv6Route,
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
                    address_change(&a)
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

fn address_change(a: &AddressMessage) -> KernelChange {
    match a.header.family {
        AddressFamily::Inet6 => KernelChange::Address6(a.header.index),
        _ => KernelChange::Address(a.header.index),
    }
}

fn route_change(r: &RouteMessage, present: bool) -> KernelChange {
    match r.header.address_family {
        AddressFamily::Inet => match route_of_message::<Ipv4Net>(r) {
            Some((oif, entry)) => KernelChange::Entry(oif, Observed::Route { entry, present }),
            None => KernelChange::Other(route_oif(r)),
        },
        AddressFamily::Inet6 => match route_of_message::<Ipv6Net>(r) {
            Some((oif, entry)) => KernelChange::Entry6(oif, Observed::Route { entry, present }),
            None => KernelChange::Other(route_oif(r)),
        },
        _ => KernelChange::Other(route_oif(r)),
    }
}

/// A neighbour's change as the [`Observed`] entry of family `N` (None when the message has
/// no address of that family).
fn observed_neigh<N: PodNet>(n: &NeighbourMessage, present: bool) -> Option<Observed<N>> {
    match neigh_of_message::<N>(n) {
        (Some(ip), mac) => Some(Observed::Neigh {
            ip,
            mac: if present { mac } else { None },
        }),
        (None, _) => None,
    }
}

fn neighbour_change(n: &NeighbourMessage, present: bool) -> KernelChange {
    let index = n.header.ifindex;
    let change = match n.header.family {
        AddressFamily::Inet => {
            observed_neigh::<Ipv4Net>(n, present).map(|o| KernelChange::Entry(index, o))
        }
        AddressFamily::Inet6 => {
            observed_neigh::<Ipv6Net>(n, present).map(|o| KernelChange::Entry6(index, o))
        }
        // The FDB is one table for both families: the destination tells them apart.
        AddressFamily::Bridge => fdb_of_message::<Ipv4Net>(n)
            .map(|entry| KernelChange::Entry(index, Observed::Fdb { entry, present }))
            .or_else(|| {
                fdb_of_message::<Ipv6Net>(n)
                    .map(|entry| KernelChange::Entry6(index, Observed::Fdb { entry, present }))
            }),
        _ => None,
    };
    change.unwrap_or(KernelChange::Other(Some(index)))
}

/// The address family of `N`'s addresses: AF_INET or AF_INET6.
fn family_of<N: PodNet>() -> AddressFamily {
    if N::V6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

/// Whether an address `ip` of the VXLAN device is one weft removes (it is not the device's
/// own): for IPv4 one inside the flannel Network, for IPv6 any but a link-local one.
fn stale_device_address<N: PodNet>(network: N, ip: N::Addr) -> bool {
    match ip.into() {
        IpAddr::V4(_) => network.contains_addr(&ip),
        IpAddr::V6(v6) => !v6.is_unicast_link_local(),
    }
}

/// A delete request for the main table's route to `dst`, whatever its link, gateway and
/// protocol.
fn route_to<N: PodNet>(dst: N) -> RouteMessage {
    let mut m = match dst.network().into() {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, dst.prefix_len())
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, dst.prefix_len())
            .build(),
    };
    m.header.protocol = RouteProtocol::Unspec;
    m
}

/// The request that dumps every route of family `N`.
fn route_dump<N: PodNet>() -> RouteMessage {
    if N::V6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    }
}

/// What weft reads of a route message of one family (IPv4 by default): the one route
/// decoder, for weftd's dumps and monitor, the soak's watcher and the benchmarks' listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteFacts<N: PodNet = Ipv4Net> {
    /// RTA_TABLE when present (tables above 255), else the header's table.
    pub table: u32,
    pub dst: N,
    pub gw: Option<N::Addr>,
    pub oif: Option<u32>,
    pub unicast: bool,
    /// Made by the kernel for an address (protocol kernel).
    pub kernel_made: bool,
    pub onlink: bool,
}

impl<N: PodNet> RouteFacts<N> {
    /// In the main table.
    pub fn in_main_table(&self) -> bool {
        self.table == u32::from(RouteHeader::RT_TABLE_MAIN)
    }
}

/// An address of a route attribute, if it is of family `N`.
fn route_addr<N: PodNet>(a: &RouteAddress) -> Option<N::Addr> {
    match a {
        RouteAddress::Inet(ip) => N::addr_of(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => N::addr_of(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// The facts of an IPv4 route message (None for another family or a bad prefix length).
pub fn route_facts(r: &RouteMessage) -> Option<RouteFacts> {
    route_facts_of::<Ipv4Net>(r)
}

/// The facts of a route message of family `N` (None for another family or a bad prefix
/// length).
pub fn route_facts_of<N: PodNet>(r: &RouteMessage) -> Option<RouteFacts<N>> {
    if r.header.address_family != family_of::<N>() {
        return None;
    }
    let mut table = u32::from(r.header.table);
    let (mut dst, mut gw, mut oif) = (N::ADDR_MIN, None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(addr) => {
                if let Some(ip) = route_addr::<N>(addr) {
                    dst = ip;
                }
            }
            RouteAttribute::Gateway(addr) => {
                if let Some(ip) = route_addr::<N>(addr) {
                    gw = Some(ip);
                }
            }
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some(RouteFacts {
        table,
        dst: N::with_prefix(dst, r.header.destination_prefix_length)?,
        gw,
        oif,
        unicast: r.header.kind == RouteType::Unicast,
        kernel_made: r.header.protocol == RouteProtocol::Kernel,
        onlink: r.header.flags.contains(RouteFlags::Onlink),
    })
}

/// What weft reads of a neighbour (ARP/NDP) or bridge FDB message for one family (IPv4 by
/// default): the one neighbour decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighFacts<N: PodNet = Ipv4Net> {
    /// An FDB entry (family AF_BRIDGE) rather than a neighbour of family `N`.
    pub fdb: bool,
    pub ifindex: u32,
    /// NDA_DST of family `N`: the neighbour's IP, or an FDB entry's remote VTEP (None when
    /// absent or of the other family).
    pub ip: Option<N::Addr>,
    pub mac: Option<MacAddr>,
    pub permanent: bool,
}

/// The facts of an IPv4 neighbour or FDB message (None for another family); an FDB entry's
/// IPv6 destination reads as none.
pub fn neigh_facts(n: &NeighbourMessage) -> Option<NeighFacts> {
    neigh_facts_of::<Ipv4Net>(n)
}

/// The facts of a neighbour message of family `N` or an FDB message (None for another
/// family). An FDB entry's destination is kept only if it is of family `N`.
pub fn neigh_facts_of<N: PodNet>(n: &NeighbourMessage) -> Option<NeighFacts<N>> {
    let fdb = match n.header.family {
        AddressFamily::Bridge => true,
        f if f == family_of::<N>() => false,
        _ => return None,
    };
    let (mut ip, mut mac) = (None, None);
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = N::addr_of(IpAddr::V4(*v4));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = N::addr_of(IpAddr::V6(*v6));
            }
            // FDB dumps carry NDA_DST as raw bytes (rust-stack.md pitfall 4): 4 for an IPv4
            // VTEP, 16 for an IPv6 one.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                ip = if let Ok(v4) = <[u8; 4]>::try_from(b.as_slice()) {
                    N::addr_of(IpAddr::from(v4))
                } else if let Ok(v6) = <[u8; 16]>::try_from(b.as_slice()) {
                    N::addr_of(IpAddr::from(v6))
                } else {
                    None
                };
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

/// A neighbour message's address of family `N`, and its MAC if the entry is permanent (the
/// only kind weft programs; any other state means weft's entry is not there).
fn neigh_of_message<N: PodNet>(n: &NeighbourMessage) -> (Option<N::Addr>, Option<MacAddr>) {
    match neigh_facts_of::<N>(n) {
        Some(f) if !f.fdb => (f.ip, f.mac.filter(|_| f.permanent)),
        _ => (None, None),
    }
}

/// An FDB message as the (MAC, destination) entry weft programs, if it has both and the
/// destination is of family `N`.
fn fdb_of_message<N: PodNet>(n: &NeighbourMessage) -> Option<FdbEntry<N>> {
    let f = neigh_facts_of::<N>(n)?;
    Some(FdbEntry {
        mac: f.mac?,
        dst: f.ip?,
    })
}

/// What `ip route get` answers, for either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLookup {
    /// The outgoing link.
    pub oif: u32,
    /// The preferred source address (RTA_PREFSRC), if any.
    pub src: Option<IpAddr>,
    /// The gateway (RTA_GATEWAY), if any: none means the destination is on the link.
    pub gateway: Option<IpAddr>,
}

/// The answer of a route lookup (None without an output link).
fn route_lookup_of(r: &RouteMessage) -> Option<RouteLookup> {
    let addr = |a: &RouteAddress| match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    };
    Some(RouteLookup {
        oif: route_oif(r)?,
        src: r.attributes.iter().find_map(|a| match a {
            RouteAttribute::PrefSource(a) => addr(a),
            _ => None,
        }),
        gateway: r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(a) => addr(a),
            _ => None,
        }),
    })
}

/// The output link of the first main-table default route (prefix length 0) among `routes`.
fn default_route_oif(routes: &[RouteMessage]) -> Option<u32> {
    routes.iter().find_map(|r| {
        let oif = route_oif(r);
        (r.header.destination_prefix_length == 0
            && r.header.table == RouteHeader::RT_TABLE_MAIN
            && oif.is_some())
        .then_some(oif)
        .flatten()
    })
}

/// A global IPv6 address: not link-local, loopback, multicast or unspecified.
pub fn is_global_ipv6(ip: &Ipv6Addr) -> bool {
    !ip.is_unicast_link_local() && !ip.is_loopback() && !ip.is_multicast() && !ip.is_unspecified()
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// A route message as (output link, entry) if it is a route of family `N` weft could own:
/// main table, unicast, not one the kernel made for an address, with an output link.
fn route_of_message<N: PodNet>(r: &RouteMessage) -> Option<(u32, RouteEntry<N>)> {
    let f = route_facts_of::<N>(r)?;
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

/// flannel's route: `<subnet> via <subnet address> dev flannel.N onlink` (`ip -6 route ...
/// dev flannel-v6.N onlink` for IPv6), or a direct one (host-gw, DirectRouting)
/// `<subnet> via <PublicIP> dev <ext>`; protocol boot (what vishvananda/netlink sends by
/// default, so `ip route` shows the same as on a flanneld node).
fn route_message<N: PodNet>(index: u32, r: &RouteEntry<N>) -> RouteMessage {
    fn rest<T>(
        b: RouteMessageBuilder<T>,
        index: u32,
        gw: Option<IpAddr>,
        onlink: bool,
    ) -> RouteMessage {
        let mut b = b
            .output_interface(index)
            .scope(RouteScope::Universe)
            .protocol(RouteProtocol::Boot);
        if let Some(gw) = gw {
            b.get_mut()
                .attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if onlink {
            b = b.onlink();
        }
        b.build()
    }
    let gw = r.gw.map(Into::into);
    let len = r.dst.prefix_len();
    match r.dst.network().into() {
        IpAddr::V4(dst) => rest(
            RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst, len),
            index,
            gw,
            r.onlink,
        ),
        IpAddr::V6(dst) => rest(
            RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(dst, len),
            index,
            gw,
            r.onlink,
        ),
    }
}

/// The request that carries out `op` on link `index`: what `ip neigh replace ... nud
/// permanent`, `bridge fdb replace ... self permanent` and `ip route replace ... proto boot`
/// (or their deletes, or their `ip -6` twins) send.
fn request<N: PodNet>(index: u32, op: &Op<N>) -> (Kind, RouteNetlinkMessage) {
    let neigh = |n: &NeighEntry<N>| {
        permanent_neighbour(
            family_of::<N>(),
            index,
            vec![
                NeighbourAttribute::Destination(NeighbourAddress::from(n.ip.into())),
                NeighbourAttribute::LinkLayerAddress(n.mac.0.to_vec()),
            ],
        )
    };
    let fdb = |f: &FdbEntry<N>| {
        let mut m = permanent_neighbour(
            AddressFamily::Bridge,
            index,
            vec![
                NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()),
                NeighbourAttribute::Destination(NeighbourAddress::from(f.dst.into())),
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
fn describe_op<N: PodNet>(op: &Op<N>) -> String {
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
fn refused<N: PodNet>(op: &Op<N>, errno: i32) -> NetError {
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
            local: Ipv4Addr::new(10, 0, 0, 1).into(),
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
            local: Some(Ipv4Addr::new(10, 0, 0, 1).into()),
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
                    local: Some(Ipv4Addr::new(10, 0, 0, 9).into()),
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
        assert_eq!(route_of_message::<Ipv4Net>(&other), None);
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
        assert_eq!(neigh_of_message::<Ipv4Net>(&arp), (f.ip, Some(mac)));
        arp.header.state = NeighbourState::Stale;
        assert_eq!(
            neigh_of_message::<Ipv4Net>(&arp).1,
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
            fdb_of_message::<Ipv4Net>(&fdb),
            Some(FdbEntry {
                mac,
                dst: Ipv4Addr::new(192, 168, 0, 2)
            })
        );
        fdb.header.family = AddressFamily::Inet6;
        assert_eq!(neigh_facts(&fdb), None);
    }

    // ---- IPv6 (flannel-v6.<VNI>) ----

    fn v6(t: &str) -> Ipv6Addr {
        t.parse().unwrap()
    }

    /// The route to node 2's IPv6 subnet over `flannel-v6.1`: onlink via the subnet address.
    fn vxlan_route6() -> RouteEntry<Ipv6Net> {
        RouteEntry {
            dst: "fc00:0:0:2::/64".parse().unwrap(),
            gw: Some(v6("fc00:0:0:2::")),
            onlink: true,
            underlay: false,
        }
    }

    /// What the IPv4 encoders sent before they served both families, attribute for
    /// attribute: the IPv4 request is unchanged.
    #[test]
    fn the_ipv4_route_request_is_what_it_always_was() {
        let r = vxlan_route();
        let before = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst.network(), r.dst.prefix_len())
            .output_interface(5)
            .scope(RouteScope::Universe)
            .protocol(RouteProtocol::Boot)
            .gateway(Ipv4Addr::new(10, 244, 2, 0))
            .onlink()
            .build();
        assert_eq!(route_message(5, &r), before);
        let direct = RouteEntry {
            gw: Some(Ipv4Addr::new(192, 168, 1, 12)),
            onlink: false,
            underlay: true,
            ..r
        };
        let before = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst.network(), r.dst.prefix_len())
            .output_interface(2)
            .scope(RouteScope::Universe)
            .protocol(RouteProtocol::Boot)
            .gateway(Ipv4Addr::new(192, 168, 1, 12))
            .build();
        assert_eq!(route_message(2, &direct), before);
        assert_eq!(
            route_dump::<Ipv4Net>(),
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        );
    }

    #[test]
    fn the_ipv4_neighbour_and_fdb_requests_are_what_they_always_were() {
        let mac = MacAddr([0x0e, 1, 2, 3, 4, 5]);
        let (kind, msg) = request(
            7,
            &Op::SetNeigh(NeighEntry::<Ipv4Net> {
                ip: Ipv4Addr::new(10, 244, 2, 0),
                mac,
            }),
        );
        assert_eq!(kind, Kind::Replace);
        let RouteNetlinkMessage::NewNeighbour(n) = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(n.header.family, AddressFamily::Inet);
        assert_eq!(n.header.state, NeighbourState::Permanent);
        assert_eq!(
            n.attributes,
            vec![
                NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(
                    10, 244, 2, 0
                ))),
                NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
            ]
        );
        let (kind, msg) = request(
            7,
            &Op::DelFdb(FdbEntry::<Ipv4Net> {
                mac,
                dst: Ipv4Addr::new(192, 168, 0, 2),
            }),
        );
        assert_eq!(kind, Kind::Delete);
        let RouteNetlinkMessage::DelNeighbour(f) = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(f.header.family, AddressFamily::Bridge);
        assert_eq!(f.header.flags, NeighbourFlags::Own);
        assert_eq!(
            f.attributes,
            vec![
                NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
                NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(
                    192, 168, 0, 2
                ))),
            ]
        );
    }

    #[test]
    fn an_ipv6_route_is_onlink_via_the_subnet_address_and_reads_back_only_as_ipv6() {
        let r = vxlan_route6();
        let m = route_message(5, &r);
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(m.header.destination_prefix_length, 64);
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert!(m.header.flags.contains(RouteFlags::Onlink));
        assert_eq!(
            m.attributes,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet6(v6("fc00:0:0:2::"))),
                RouteAttribute::Oif(5),
                RouteAttribute::Gateway(RouteAddress::Inet6(v6("fc00:0:0:2::"))),
            ]
        );
        let f = route_facts_of::<Ipv6Net>(&m).unwrap();
        assert_eq!((f.dst, f.gw, f.oif, f.onlink), (r.dst, r.gw, Some(5), true));
        assert!(f.in_main_table() && f.unicast && !f.kernel_made);
        assert_eq!(route_of_message::<Ipv6Net>(&m), Some((5, r)));
        // The IPv4 decoder does not take it, nor the IPv6 decoder an IPv4 route.
        assert_eq!(route_facts(&m), None);
        assert_eq!(route_of_message::<Ipv4Net>(&m), None);
        assert_eq!(
            route_facts_of::<Ipv6Net>(&route_message(5, &vxlan_route())),
            None
        );
        assert_eq!(
            route_dump::<Ipv6Net>().header.address_family,
            AddressFamily::Inet6
        );
    }

    #[test]
    fn an_ipv6_direct_route_goes_via_the_public_ip_and_reads_back_as_weft_s() {
        let r = RouteEntry {
            gw: Some(v6("fd00:250::2")),
            onlink: false,
            underlay: true,
            ..vxlan_route6()
        };
        let m = route_message(2, &r);
        assert!(!m.header.flags.contains(RouteFlags::Onlink));
        let owned = Owned::<Ipv6Net> {
            device: Some(7),
            underlay: Some((2, "fc00::/48".parse().unwrap())),
        };
        let (oif, read) = route_of_message::<Ipv6Net>(&m).unwrap();
        assert_eq!(owned.route(oif, read), Some(r));
    }

    /// A message as the kernel would see it, and back as a dump would give it.
    fn through_the_wire(n: &NeighbourMessage) -> NeighbourMessage {
        use netlink_packet_core::{Emitable, Parseable};
        let mut buf = vec![0u8; n.buffer_len()];
        n.emit(&mut buf);
        NeighbourMessage::parse(&buf).unwrap()
    }

    #[test]
    fn ipv6_neighbour_and_fdb_requests_carry_16_byte_addresses_and_read_back() {
        let mac = MacAddr([0x0e, 1, 2, 3, 4, 6]);
        let neigh = NeighEntry::<Ipv6Net> {
            ip: v6("fc00:0:0:2::"),
            mac,
        };
        let (kind, msg) = request(7, &Op::SetNeigh(neigh));
        assert_eq!(kind, Kind::Replace);
        let RouteNetlinkMessage::NewNeighbour(n) = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(n.header.family, AddressFamily::Inet6);
        assert_eq!(n.header.state, NeighbourState::Permanent);
        assert_eq!(n.header.ifindex, 7);
        let n = through_the_wire(&n);
        assert_eq!(neigh_of_message::<Ipv6Net>(&n), (Some(neigh.ip), Some(mac)));
        assert_eq!(neigh_facts(&n), None, "not an IPv4 neighbour");
        assert_eq!(
            neighbour_change(&n, true),
            KernelChange::Entry6(
                7,
                Observed::Neigh {
                    ip: neigh.ip,
                    mac: Some(mac)
                }
            )
        );
        assert_eq!(
            neighbour_change(&n, false),
            KernelChange::Entry6(
                7,
                Observed::Neigh {
                    ip: neigh.ip,
                    mac: None
                }
            )
        );

        // `bridge fdb replace <mac> dev flannel-v6.1 dst fd00::2 self permanent`
        let fdb = FdbEntry::<Ipv6Net> {
            mac,
            dst: v6("fd00::2"),
        };
        let (kind, msg) = request(7, &Op::SetFdb(fdb));
        assert_eq!(kind, Kind::Replace);
        let RouteNetlinkMessage::NewNeighbour(f) = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(f.header.family, AddressFamily::Bridge);
        assert_eq!(f.header.flags, NeighbourFlags::Own);
        assert_eq!(f.header.state, NeighbourState::Permanent);
        let f = through_the_wire(&f);
        // An AF_BRIDGE dump carries NDA_DST as raw bytes: 16 of them.
        assert!(
            f.attributes
                .contains(&NeighbourAttribute::Destination(NeighbourAddress::Other(
                    fdb.dst.octets().to_vec()
                )))
        );
        assert_eq!(fdb_of_message::<Ipv6Net>(&f), Some(fdb));
        assert_eq!(fdb_of_message::<Ipv4Net>(&f), None, "an IPv6 VTEP");
        assert_eq!(
            neighbour_change(&f, true),
            KernelChange::Entry6(
                7,
                Observed::Fdb {
                    entry: fdb,
                    present: true
                }
            )
        );
        // An IPv4 VTEP in the same table is the IPv4 model's.
        let fdb4 = FdbEntry::<Ipv4Net> {
            mac,
            dst: Ipv4Addr::new(192, 168, 0, 2),
        };
        let RouteNetlinkMessage::DelNeighbour(f4) = request(7, &Op::DelFdb(fdb4)).1 else {
            panic!()
        };
        let f4 = through_the_wire(&f4);
        assert_eq!(fdb_of_message::<Ipv6Net>(&f4), None);
        assert_eq!(
            neighbour_change(&f4, false),
            KernelChange::Entry(
                7,
                Observed::Fdb {
                    entry: fdb4,
                    present: false
                }
            )
        );
        // An FDB entry without a destination (the device's own) is neither's.
        let mut own = permanent_neighbour(
            AddressFamily::Bridge,
            7,
            vec![NeighbourAttribute::LinkLayerAddress(mac.0.to_vec())],
        );
        own = through_the_wire(&own);
        assert_eq!(neighbour_change(&own, true), KernelChange::Other(Some(7)));
        assert_eq!(
            describe_op(&Op::SetFdb(fdb)),
            format!("set FDB entry {mac} dst fd00::2")
        );
    }

    #[test]
    fn route_changes_are_told_apart_by_family() {
        let m4 = route_message(5, &vxlan_route());
        let m6 = route_message(6, &vxlan_route6());
        assert_eq!(
            route_change(&m4, false),
            KernelChange::Entry(
                5,
                Observed::Route {
                    entry: vxlan_route(),
                    present: false
                }
            )
        );
        assert_eq!(
            route_change(&m6, false),
            KernelChange::Entry6(
                6,
                Observed::Route {
                    entry: vxlan_route6(),
                    present: false
                }
            )
        );
        assert_eq!(route_change(&m6, true).ifindex(), Some(6));
        // A kernel route (the device's fe80::/64) is not an entry.
        let mut kernel = m6;
        kernel.header.protocol = RouteProtocol::Kernel;
        assert_eq!(route_change(&kernel, true), KernelChange::Other(Some(6)));
        let mut a = AddressMessage::default();
        a.header.index = 4;
        a.header.family = AddressFamily::Inet6;
        assert_eq!(address_change(&a), KernelChange::Address6(4));
        a.header.family = AddressFamily::Inet;
        assert_eq!(address_change(&a), KernelChange::Address(4));
    }

    fn spec6() -> VxlanSpec {
        VxlanSpec {
            name: "flannel-v6.1".into(),
            local: v6("fd00:250::1").into(),
            ..spec()
        }
    }

    #[test]
    fn an_ipv6_device_compares_its_ipv6_local_address() {
        let have = VxlanAttrs {
            local: Some(v6("fd00:250::1").into()),
            ..flanneld_like()
        };
        assert_eq!(vxlan_incompatibility(&spec6(), &have), None);
        let moved = VxlanAttrs {
            local: Some(v6("fd00:250::9").into()),
            ..flanneld_like()
        };
        let why = vxlan_incompatibility(&spec6(), &moved).unwrap();
        assert!(why.contains("local address fd00:250::9"), "{why}");
        // An IPv4 device where an IPv6 one is wanted is not the same device.
        assert!(vxlan_incompatibility(&spec6(), &flanneld_like()).is_some());
        assert!(vxlan_incompatibility(&spec(), &have).is_some());
    }

    #[test]
    fn a_vxlan_link_reports_its_ipv6_local_address() {
        let mut m = LinkMessage::default();
        m.header.index = 9;
        m.attributes = vec![
            LinkAttribute::IfName("flannel-v6.1".into()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(netlink_packet_route::link::InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(1),
                    InfoVxlan::Local6(v6("fd00:250::1")),
                    InfoVxlan::Port(8472),
                ])),
            ]),
        ];
        let v = link_view(&m);
        assert_eq!(v.kind.as_deref(), Some("vxlan"));
        let x = v.vxlan.unwrap();
        assert_eq!(x.local, Some(IpAddr::V6(v6("fd00:250::1"))));
        assert_eq!(x.vni, Some(1));
    }

    #[test]
    fn the_addresses_weft_removes_from_its_device() {
        let net4: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert!(stale_device_address(net4, Ipv4Addr::new(10, 244, 9, 0)));
        assert!(!stale_device_address(net4, Ipv4Addr::new(192, 168, 0, 1)));
        // IPv6: everything but link-local, inside the Network or not.
        let net6: Ipv6Net = "fc00::/48".parse().unwrap();
        assert!(stale_device_address(net6, v6("fc00:0:0:9::")));
        assert!(stale_device_address(net6, v6("2001:db8::1")));
        assert!(!stale_device_address(net6, v6("fe80::1")));
        assert!(is_global_ipv6(&v6("fd00:250::1")));
        for not in ["fe80::1", "::1", "ff02::1", "::"] {
            assert!(!is_global_ipv6(&v6(not)), "{not}");
        }
    }

    #[test]
    fn the_default_route_and_a_route_lookup_of_either_family() {
        let mut other = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(v6("fd00:250::"), 64)
            .output_interface(3)
            .build();
        let default = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .output_interface(2)
            .gateway(v6("fd00:250::fe"))
            .build();
        let mut elsewhere = default.clone();
        elsewhere.header.table = 100;
        assert_eq!(
            default_route_oif(&[other.clone(), elsewhere.clone(), default.clone()]),
            Some(2)
        );
        assert_eq!(default_route_oif(&[other.clone(), elsewhere]), None);
        assert_eq!(
            route_lookup_of(&default),
            Some(RouteLookup {
                oif: 2,
                src: None,
                gateway: Some(v6("fd00:250::fe").into())
            })
        );
        other
            .attributes
            .push(RouteAttribute::PrefSource(RouteAddress::Inet6(v6(
                "fd00:250::1",
            ))));
        let on_link = route_lookup_of(&other).unwrap();
        assert_eq!(on_link.gateway, None, "on the link: a direct peer");
        assert_eq!(on_link.src, Some(v6("fd00:250::1").into()));
    }
}
