//! Programming the peers into the VXLAN device, through a [`DataPlane`]: netlink in the
//! daemon, an in-memory kernel in the tests below.
//!
//! A full pass is [`refresh`] (make sure the device exists and is up with our address, read
//! what it holds) then [`apply`]; an event pass is [`apply`] alone, against weftd's model of
//! the device ([`Programmed`]: the last read plus every change the kernel acknowledged since).
//! The diff itself is weft-core's ([`diff`]); this module carries it out and keeps the model
//! true: an acknowledged change is recorded, a failed one is forgotten (its state is unknown)
//! so the retry's full pass re-reads it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_core::dataplane::{KernelState, Op, Programmed};
use weft_net::{NetError, Netlink, VxlanDevice, VxlanSpec};

/// The kernel's VXLAN device and its entries, as weftd programs them.
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
    /// What the device holds.
    async fn read_state(&self, index: u32) -> Result<KernelState, NetError>;
    /// Applies `ops` in order: one result per op, `None` when the kernel acknowledged it.
    async fn apply(&self, index: u32, ops: &[Op]) -> Vec<Option<NetError>>;
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
    async fn read_state(&self, index: u32) -> Result<KernelState, NetError> {
        Netlink::read_state(self, index).await
    }
    async fn apply(&self, index: u32, ops: &[Op]) -> Vec<Option<NetError>> {
        Netlink::apply(self, index, ops).await
    }
}

/// The first half of a full pass: the device as `spec` says, up, with `own`'s address, and
/// a model of it read fresh from the kernel.
pub(crate) async fn refresh<D: DataPlane>(
    dp: &D,
    spec: &VxlanSpec,
    own: Ipv4Net,
    network: Ipv4Net,
) -> Result<(VxlanDevice, Programmed), NetError> {
    let dev = dp.ensure_device(spec).await?;
    dp.ensure_address_and_up(dev.index, own.network(), network)
        .await?;
    let actual = dp.read_state(dev.index).await?;
    Ok((dev, Programmed::from_state(&actual)))
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// The operations sent to the kernel.
    pub(crate) ops: usize,
    /// The ones it refused, with why.
    pub(crate) failed: Vec<(Op, NetError)>,
}

/// Applies `ops` (the diff of the peers against `programmed`) to device `index` and records
/// the acknowledged ones in `programmed`; a failed one is forgotten.
pub(crate) async fn carry_out<D: DataPlane>(
    dp: &D,
    index: u32,
    ops: &[Op],
    programmed: &mut Programmed,
) -> Applied {
    if ops.is_empty() {
        return Applied::default();
    }
    let results = dp.apply(index, ops).await;
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

    /// An in-memory kernel: one VXLAN device (re-created with a new index when deleted),
    /// its entries with the kernel's replace semantics, reads counted, and ops that fail
    /// while they match `refuse`.
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
        /// Someone deletes the device (its entries go with it).
        fn delete_device(&self) {
            self.exists.set(false);
            *self.state.borrow_mut() = Programmed::default();
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
        async fn read_state(&self, index: u32) -> Result<KernelState, NetError> {
            self.check(index)?;
            self.reads.set(self.reads.get() + 1);
            Ok(self.holds())
        }
        async fn apply(&self, index: u32, ops: &[Op]) -> Vec<Option<NetError>> {
            let refuse = *self.refuse.borrow();
            ops.iter()
                .map(|op| {
                    self.sent.borrow_mut().push(*op);
                    if let Err(e) = self.check(index) {
                        return Some(e);
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

    fn peer(k: u8) -> Peer {
        Peer {
            subnet: format!("10.244.{k}.0/24").parse().unwrap(),
            public_ip: Ipv4Addr::new(192, 0, 2, k),
            vtep_mac: MacAddr([0x0e, 0, 0, 0, 1, k]),
        }
    }

    const OWN: &str = "10.244.1.0/24";

    /// An event pass, as the daemon makes one: weft-core's diff of `peers` against the model,
    /// carried out.
    async fn apply(k: &Kernel, index: u32, peers: &[Peer], model: &mut Programmed) -> Applied {
        let ops = weft_core::dataplane::diff(peers, &model.state());
        carry_out(k, index, &ops, model).await
    }

    /// A full pass: refresh, then apply.
    async fn full(k: &Kernel, peers: &[Peer]) -> (VxlanDevice, Programmed, Applied) {
        let (dev, mut model) = refresh(
            k,
            &spec(),
            OWN.parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
        )
        .await
        .unwrap();
        let applied = apply(k, dev.index, peers, &mut model).await;
        (dev, model, applied)
    }

    #[tokio::test]
    async fn a_full_pass_programs_every_peer_and_an_event_pass_only_the_change_without_a_read() {
        let k = Kernel::new();
        let peers: Vec<Peer> = (2..=50).map(peer).collect();
        let (dev, mut model, applied) = full(&k, &peers).await;
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
        let applied = apply(&k, dev.index, &next, &mut model).await;
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
        let (dev, _, applied) = full(&k, &peers).await;
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
        let (dev, model, applied) = full(&k, &peers).await;
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
        let (dev2, _, applied) = full(&k, &peers).await;
        assert_eq!(dev2.index, dev.index);
        assert_eq!(applied.ops, 1);
        assert!(matches!(k.take_sent()[..], [Op::SetRoute(r)] if r.dst == peer(7).subnet));
        assert_eq!(k.holds(), desired_state(&peers));
    }

    #[tokio::test]
    async fn drift_is_invisible_to_an_event_pass_and_repaired_by_a_full_one() {
        let k = Kernel::new();
        let peers: Vec<Peer> = (2..=10).map(peer).collect();
        let (dev, mut model, _) = full(&k, &peers).await;
        // someone deletes a neighbour behind weftd's back
        let gone = Op::DelNeigh(weft_core::dataplane::NeighEntry {
            ip: peer(4).subnet.network(),
            mac: peer(4).vtep_mac,
        });
        k.state.borrow_mut().applied(&gone);
        k.take_sent();
        assert_eq!(apply(&k, dev.index, &peers, &mut model).await.ops, 0);
        // (which is why the monitor's drift, and a timer, ask for a full pass)
        let (_, _, applied) = full(&k, &peers).await;
        assert_eq!(applied.ops, 1);
        assert_eq!(k.holds(), desired_state(&peers));
    }

    #[tokio::test]
    async fn a_deleted_device_is_recreated_and_fully_programmed() {
        let k = Kernel::new();
        let peers: Vec<Peer> = (2..=10).map(peer).collect();
        let (dev, mut model, _) = full(&k, &peers).await;
        k.delete_device();
        // an event pass on the old index fails every op; each is forgotten
        let applied = apply(&k, dev.index, &[peer(11)], &mut model).await;
        assert!(!applied.failed.is_empty());
        assert!(
            applied
                .failed
                .iter()
                .all(|(_, e)| matches!(e, NetError::NoSuchLink(_))),
            "{:?}",
            applied.failed
        );
        let (dev2, model2, applied) = full(&k, &peers).await;
        assert!(dev2.created);
        assert_ne!(dev2.index, dev.index);
        assert_eq!(applied.ops, 9 * 3);
        assert_eq!(k.holds(), desired_state(&peers));
        assert_eq!(model2, Programmed::from_state(&k.holds()));
    }
}
