//! Programming the peers into the kernel, through a [`DataPlane`]: netlink in the daemon,
//! an in-memory kernel in the tests below.
//!
//! A full pass is [`refresh`] (make sure the VXLAN device exists and is up with our address,
//! read what weft owns: the device's entries and the direct routes on the external interface,
//! and which networks that interface is on) then [`carry_out`] of the diff; an event pass is
//! [`carry_out`] alone, against weftd's model ([`Programmed`]: the last read plus every change
//! the kernel acknowledged since). With host-gw there is no device: only routes. The diff
//! itself is weft-core's ([`diff`](weft_core::dataplane::diff)); this module carries it out and
//! keeps the model true: an acknowledged change is recorded, a failed one is forgotten (its
//! state is unknown) so the retry's full pass re-reads it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_core::dataplane::{KernelState, Op, Owned, Programmed};
use weft_net::{NetError, Netlink, VxlanDevice, VxlanSpec};

/// The kernel's VXLAN device, the external interface's routes, as weftd programs them.
pub(crate) trait DataPlane {
    /// Finds or (re-)creates the device as `spec` says.
    async fn ensure_device(&self, spec: &VxlanSpec) -> Result<VxlanDevice, NetError>;
    /// Puts `addr/32` on the device (removing other addresses inside `network`), sets it up.
    async fn ensure_address_and_up(
        &self,
        index: u32,
        addr: Ipv4Addr,
        network: Ipv4Net,
    ) -> Result<(), NetError>;
    /// What weft owns in the kernel.
    async fn read_state(&self, owned: &Owned) -> Result<KernelState, NetError>;
    /// The networks of link `index`'s IPv4 addresses.
    async fn link_networks(&self, index: u32) -> Result<Vec<Ipv4Net>, NetError>;
    /// Applies `ops` in order: one result per op, `None` when the kernel acknowledged it.
    async fn apply(&self, owned: &Owned, ops: &[Op]) -> Vec<Option<NetError>>;
}

impl DataPlane for Netlink {
    async fn ensure_device(&self, spec: &VxlanSpec) -> Result<VxlanDevice, NetError> {
        self.ensure_vxlan(spec).await
    }
    async fn ensure_address_and_up(
        &self,
        index: u32,
        addr: Ipv4Addr,
        network: Ipv4Net,
    ) -> Result<(), NetError> {
        Netlink::ensure_address_and_up(self, index, addr, network).await
    }
    async fn read_state(&self, owned: &Owned) -> Result<KernelState, NetError> {
        self.read_owned(owned).await
    }
    async fn link_networks(&self, index: u32) -> Result<Vec<Ipv4Net>, NetError> {
        Netlink::link_networks(self, index).await
    }
    async fn apply(&self, owned: &Owned, ops: &[Op]) -> Vec<Option<NetError>> {
        Netlink::apply(self, owned, ops).await
    }
}

/// What the first half of a full pass found.
#[derive(Debug)]
pub(crate) struct Refreshed {
    /// The VXLAN device (None with host-gw).
    pub(crate) device: Option<VxlanDevice>,
    /// Where weft's entries are.
    pub(crate) owned: Owned,
    /// What they are, read fresh from the kernel.
    pub(crate) model: Programmed,
    /// The networks the external interface is on.
    pub(crate) on_link: Vec<Ipv4Net>,
}

/// The first half of a full pass: the device as `spec` says (none without a spec), up, with
/// `own`'s address, and a model of what weft owns read fresh from the kernel, with the
/// networks of the external interface `underlay`.
pub(crate) async fn refresh<D: DataPlane>(
    dp: &D,
    spec: Option<&VxlanSpec>,
    own: Ipv4Net,
    network: Ipv4Net,
    underlay: u32,
) -> Result<Refreshed, NetError> {
    let device = match spec {
        Some(spec) => {
            let dev = dp.ensure_device(spec).await?;
            dp.ensure_address_and_up(dev.index, own.network(), network)
                .await?;
            Some(dev)
        }
        None => None,
    };
    let owned = Owned {
        device: device.as_ref().map(|d| d.index),
        underlay: Some((underlay, network)),
    };
    let actual = dp.read_state(&owned).await?;
    let on_link = dp.link_networks(underlay).await?;
    Ok(Refreshed {
        device,
        owned,
        model: Programmed::from_state(&actual),
        on_link,
    })
}

/// What [`carry_out`] did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// The operations sent to the kernel.
    pub(crate) ops: usize,
    /// The ones it refused, with why.
    pub(crate) failed: Vec<(Op, NetError)>,
}

/// Applies `ops` (the diff of the peers against `programmed`) where `owned` says and records
/// the acknowledged ones in `programmed`; a failed one is forgotten.
pub(crate) async fn carry_out<D: DataPlane>(
    dp: &D,
    owned: &Owned,
    ops: &[Op],
    programmed: &mut Programmed,
) -> Applied {
    if ops.is_empty() {
        return Applied::default();
    }
    let results = dp.apply(owned, ops).await;
    let mut failed = Vec::new();
    for (op, result) in ops.iter().zip(results) {
        match result {
            None => programmed.applied(op),
            Some(e) => {
                forget(programmed, op);
                failed.push((*op, e));
            }
        }
    }
    Applied {
        ops: ops.len(),
        failed,
    }
}

/// After a failed operation the entry's kernel state is unknown; the retry re-reads the
/// device anyway, so the model only has to stop claiming it.
fn forget(programmed: &mut Programmed, op: &Op) {
    match op {
        Op::SetNeigh(n) | Op::DelNeigh(n) => programmed.applied(&Op::DelNeigh(*n)),
        Op::SetFdb(f) | Op::DelFdb(f) => programmed.applied(&Op::DelFdb(*f)),
        Op::SetRoute(r) | Op::DelRoute(r) => programmed.applied(&Op::DelRoute(*r)),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use weft_core::dataplane::desired_state;
    use weft_core::mac::MacAddr;
    use weft_core::peer::Peer;

    use super::*;

    /// Which ops the fake kernel refuses.
    type Refusal = fn(&Op) -> bool;

    /// An in-memory kernel: one VXLAN device (re-created with a new index when deleted), the
    /// external interface (index [`UNDERLAY`], on 192.0.2.0/24), their entries with the
    /// kernel's replace semantics, reads counted, and ops that fail while they match `refuse`.
    struct Kernel {
        index: Cell<u32>,
        exists: Cell<bool>,
        state: RefCell<Programmed>,
        reads: Cell<usize>,
        sent: RefCell<Vec<Op>>,
        refuse: RefCell<Option<Refusal>>,
    }

    impl Kernel {
        fn new() -> Kernel {
            Kernel {
                index: Cell::new(5),
                exists: Cell::new(false),
                state: RefCell::new(Programmed::default()),
                reads: Cell::new(0),
                sent: RefCell::new(Vec::new()),
                refuse: RefCell::new(None),
            }
        }
        /// What the device holds, sorted.
        fn holds(&self) -> KernelState {
            self.state.borrow().state()
        }
        /// The ops sent since the last call.
        fn take_sent(&self) -> Vec<Op> {
            std::mem::take(&mut self.sent.borrow_mut())
        }
        /// Someone deletes the device (its entries go with it; direct routes stay).
        fn delete_device(&self) {
            self.exists.set(false);
            let direct: Vec<_> = self
                .holds()
                .routes
                .into_iter()
                .filter(|r| r.underlay)
                .collect();
            *self.state.borrow_mut() = Programmed::from_state(&KernelState {
                routes: direct,
                ..KernelState::default()
            });
        }
    }

    impl DataPlane for Kernel {
        async fn ensure_device(&self, spec: &VxlanSpec) -> Result<VxlanDevice, NetError> {
            let created = !self.exists.replace(true);
            if created {
                self.index.set(self.index.get() + 1);
            }
            Ok(VxlanDevice {
                index: self.index.get(),
                mac: spec.mac,
                mtu: spec.mtu,
                created,
            })
        }
        async fn ensure_address_and_up(
            &self,
            index: u32,
            _addr: Ipv4Addr,
            _network: Ipv4Net,
        ) -> Result<(), NetError> {
            self.check(index)
        }
        async fn read_state(&self, owned: &Owned) -> Result<KernelState, NetError> {
            if let Some(index) = owned.device {
                self.check(index)?;
            }
            self.reads.set(self.reads.get() + 1);
            let mut state = self.holds();
            if owned.device.is_none() {
                state = KernelState {
                    routes: state.routes.into_iter().filter(|r| r.underlay).collect(),
                    ..KernelState::default()
                };
            }
            Ok(state)
        }
        async fn link_networks(&self, index: u32) -> Result<Vec<Ipv4Net>, NetError> {
            assert_eq!(index, UNDERLAY);
            Ok(vec!["192.0.2.0/24".parse().unwrap()])
        }
        async fn apply(&self, owned: &Owned, ops: &[Op]) -> Vec<Option<NetError>> {
            let refuse = *self.refuse.borrow();
            ops.iter()
                .map(|op| {
                    self.sent.borrow_mut().push(*op);
                    let direct = match op {
                        Op::SetRoute(r) | Op::DelRoute(r) if r.underlay => Some(r),
                        _ => None,
                    };
                    if let Some(r) = direct {
                        assert_eq!(owned.link_of(r), Some(UNDERLAY));
                    } else {
                        match owned.device {
                            Some(index) => {
                                if let Err(e) = self.check(index) {
                                    return Some(e);
                                }
                            }
                            None => return Some(NetError::Other("no device".into())),
                        }
                    }
                    if refuse.is_some_and(|f| f(op)) {
                        return Some(NetError::Other(format!("refused {op:?}")));
                    }
                    self.state.borrow_mut().applied(op);
                    None
                })
                .collect()
        }
    }

    impl Kernel {
        fn check(&self, index: u32) -> Result<(), NetError> {
            (self.exists.get() && index == self.index.get())
                .then_some(())
                .ok_or_else(|| NetError::NoSuchLink(format!("ifindex {index}")))
        }
    }

    fn spec() -> VxlanSpec {
        VxlanSpec {
            name: "flannel.1".into(),
            vni: 1,
            port: 0,
            local: "192.0.2.1".parse().unwrap(),
            underlay_index: 2,
            mtu: 1450,
            learning: false,
            gbp: false,
            mac: MacAddr([0x0e, 0, 0, 0, 0, 1]),
        }
    }

    const UNDERLAY: u32 = 2;

    fn peer(k: u8) -> Peer {
        Peer {
            subnet: format!("10.244.{k}.0/24").parse().unwrap(),
            public_ip: Ipv4Addr::new(192, 0, 2, k),
            vtep_mac: MacAddr([0x0e, 0, 0, 0, 1, k]),
            direct: false,
        }
    }

    fn direct(k: u8) -> Peer {
        Peer {
            direct: true,
            ..peer(k)
        }
    }

    const OWN: &str = "10.244.1.0/24";

    /// An event pass, as the daemon makes one: weft-core's diff of `peers` against the model,
    /// carried out.
    async fn apply(k: &Kernel, owned: &Owned, peers: &[Peer], model: &mut Programmed) -> Applied {
        let ops = weft_core::dataplane::diff(peers, &model.state());
        carry_out(k, owned, &ops, model).await
    }

    /// A full pass: refresh (with a VXLAN device unless `host_gw`), then apply.
    async fn full_pass(k: &Kernel, peers: &[Peer], host_gw: bool) -> (Refreshed, Applied) {
        let spec = spec();
        let mut r = refresh(
            k,
            (!host_gw).then_some(&spec),
            OWN.parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
            UNDERLAY,
        )
        .await
        .unwrap();
        let applied = apply(k, &r.owned, peers, &mut r.model).await;
        (r, applied)
    }

    /// A full pass with a VXLAN device: the device, where weft's entries are, the model.
    async fn full(k: &Kernel, peers: &[Peer]) -> (VxlanDevice, Owned, Programmed, Applied) {
        let (r, applied) = full_pass(k, peers, false).await;
        (r.device.unwrap(), r.owned, r.model, applied)
    }

    #[tokio::test]
    async fn a_full_pass_programs_every_peer_and_an_event_pass_only_the_change_without_a_read() {
        let k = Kernel::new();
        let peers: Vec<Peer> = (2..=50).map(peer).collect();
        let (dev, owned, mut model, applied) = full(&k, &peers).await;
        assert!(dev.created);
        assert_eq!(
            applied.ops,
            49 * 3,
            "a neighbour, an FDB entry and a route each"
        );
        assert!(applied.failed.is_empty());
        assert_eq!(k.holds(), desired_state(&peers));
        assert_eq!(
            model,
            Programmed::from_state(&k.holds()),
            "the model is the kernel"
        );
        k.take_sent();
        // one peer joins, one leaves, one moves to another host: an event pass
        let mut next = peers.clone();
        next.retain(|p| p.subnet != peer(10).subnet);
        next.push(peer(60));
        next[0].public_ip = "198.51.100.2".parse().unwrap();
        let reads = k.reads.get();
        let applied = apply(&k, &owned, &next, &mut model).await;
        assert_eq!(k.reads.get(), reads, "an event pass reads nothing back");
        assert_eq!(k.holds(), desired_state(&next));
        assert_eq!(model, Programmed::from_state(&k.holds()));
        // 3 for the new peer, 3 for the departed one, the moved peer's FDB entry (set + del)
        assert_eq!(applied.ops, 8, "{:?}", k.take_sent());
    }

    #[tokio::test]
    async fn a_restart_over_a_programmed_device_changes_nothing() {
        let k = Kernel::new();
        let peers: Vec<Peer> = (2..=200).map(peer).collect();
        full(&k, &peers).await;
        k.take_sent();
        // weftd restarts: no model, the device as the last weftd left it
        let (dev, _, _, applied) = full(&k, &peers).await;
        assert!(!dev.created, "the device is kept");
        assert_eq!(applied.ops, 0);
        assert!(k.take_sent().is_empty(), "not one entry is touched");
    }

    #[tokio::test]
    async fn a_refused_change_is_forgotten_and_the_next_full_pass_makes_only_it() {
        let k = Kernel::new();
        let peers: Vec<Peer> = (2..=20).map(peer).collect();
        *k.refuse.borrow_mut() = Some(
            |op| matches!(op, Op::SetRoute(r) if r.dst == "10.244.7.0/24".parse::<Ipv4Net>().unwrap()),
        );
        let (dev, _, model, applied) = full(&k, &peers).await;
        assert_eq!(applied.failed.len(), 1, "{:?}", applied.failed);
        assert!(matches!(applied.failed[0].0, Op::SetRoute(_)));
        assert_eq!(
            model.missing_for(&peer(7)),
            ["route"],
            "the model does not claim it"
        );
        // an event pass against that model would try it again too; the daemon's retry is a
        // full pass: it re-reads and sends only the missing route
        *k.refuse.borrow_mut() = None;
        k.take_sent();
        let (dev2, _, _, applied) = full(&k, &peers).await;
        assert_eq!(dev2.index, dev.index);
        assert_eq!(applied.ops, 1);
        assert!(matches!(k.take_sent()[..], [Op::SetRoute(r)] if r.dst == peer(7).subnet));
        assert_eq!(k.holds(), desired_state(&peers));
    }

    #[tokio::test]
    async fn drift_is_invisible_to_an_event_pass_and_repaired_by_a_full_one() {
        let k = Kernel::new();
        let peers: Vec<Peer> = (2..=10).map(peer).collect();
        let (_, owned, mut model, _) = full(&k, &peers).await;
        // someone deletes a neighbour behind weftd's back
        let gone = Op::DelNeigh(weft_core::dataplane::NeighEntry {
            ip: peer(4).subnet.network(),
            mac: peer(4).vtep_mac,
        });
        k.state.borrow_mut().applied(&gone);
        k.take_sent();
        assert_eq!(apply(&k, &owned, &peers, &mut model).await.ops, 0);
        // (which is why the monitor's drift, and a timer, ask for a full pass)
        let (_, _, _, applied) = full(&k, &peers).await;
        assert_eq!(applied.ops, 1);
        assert_eq!(k.holds(), desired_state(&peers));
    }

    #[tokio::test]
    async fn a_deleted_device_is_recreated_and_fully_programmed() {
        let k = Kernel::new();
        let peers: Vec<Peer> = (2..=10).map(peer).collect();
        let (dev, owned, mut model, _) = full(&k, &peers).await;
        k.delete_device();
        // an event pass on the old index fails every op; each is forgotten
        let applied = apply(&k, &owned, &[peer(11)], &mut model).await;
        assert!(!applied.failed.is_empty());
        assert!(
            applied
                .failed
                .iter()
                .all(|(_, e)| matches!(e, NetError::NoSuchLink(_))),
            "{:?}",
            applied.failed
        );
        let (dev2, _, model2, applied) = full(&k, &peers).await;
        assert!(dev2.created);
        assert_ne!(dev2.index, dev.index);
        assert_eq!(applied.ops, 9 * 3);
        assert_eq!(k.holds(), desired_state(&peers));
        assert_eq!(model2, Programmed::from_state(&k.holds()));
    }

    #[tokio::test]
    async fn host_gw_makes_no_device_and_programs_a_route_per_peer() {
        let k = Kernel::new();
        let peers: Vec<Peer> = (2..=20).map(direct).collect();
        let (r, applied) = full_pass(&k, &peers, true).await;
        assert!(r.device.is_none());
        assert!(!k.exists.get(), "no VXLAN device");
        assert_eq!(r.on_link, vec!["192.0.2.0/24".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(applied.ops, 19, "one route each");
        assert!(applied.failed.is_empty(), "{:?}", applied.failed);
        let held = k.holds();
        assert!(held.neighs.is_empty() && held.fdb.is_empty());
        assert!(held.routes.iter().all(|r| r.underlay && !r.onlink));
        assert_eq!(held, desired_state(&peers));
        // A restart changes nothing; a peer that leaves has its route removed.
        k.take_sent();
        let (_, applied) = full_pass(&k, &peers, true).await;
        assert_eq!(applied.ops, 0);
        let (_, applied) = full_pass(&k, &peers[1..], true).await;
        assert_eq!(applied.ops, 1);
        assert!(matches!(k.take_sent()[..], [Op::DelRoute(r)] if r.dst == peer(2).subnet));
    }

    #[tokio::test]
    async fn direct_routing_mixes_direct_routes_and_vxlan_entries_and_a_device_loss_keeps_the_direct_ones()
     {
        let k = Kernel::new();
        let peers = vec![direct(2), peer(3), direct(4)];
        let (dev, _, _, applied) = full(&k, &peers).await;
        assert_eq!(applied.ops, 2 + 3);
        assert_eq!(k.holds(), desired_state(&peers));
        k.delete_device();
        // The direct routes never went through the device, so they are still there.
        let (dev2, _, _, applied) = full(&k, &peers).await;
        assert_ne!(dev2.index, dev.index);
        assert_eq!(applied.ops, 3, "only peer 3's VXLAN entries");
        // An event pass moves a peer off VXLAN: its route is replaced in place.
        let (_, owned, mut model, _) = full(&k, &peers).await;
        let applied = apply(&k, &owned, &[direct(2), direct(3), direct(4)], &mut model).await;
        assert!(applied.failed.is_empty());
        assert_eq!(k.holds(), desired_state(&[direct(2), direct(3), direct(4)]));
    }
}
