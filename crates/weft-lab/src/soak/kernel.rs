//! What a node's kernel holds for weft, read over netlink from inside its namespace (through
//! weft-net, the reader weftd itself uses), and whether that is what the peers call for.

use anyhow::{Context, Result};
use weft_core::dataplane::{KernelState, desired_state};
use weft_core::mac::MacAddr;
use weft_core::peer::Peer;

/// The VXLAN device weftd manages (VNI 1).
pub const DEVICE: &str = "flannel.1";

/// flannel.1 on one node: whether it exists, its MAC and state, and its peer entries.
#[derive(Debug, Clone, Default)]
pub struct NodeKernel {
    /// None when the device does not exist.
    pub mac: Option<MacAddr>,
    pub up: bool,
    pub state: KernelState,
}

impl NodeKernel {
    /// Whether the device exists and holds all three entries of every peer in `peers`.
    pub fn programs_all(&self, peers: &[Peer]) -> bool {
        if self.mac.is_none() {
            return false;
        }
        let want = desired_state(peers);
        want.neighs.iter().all(|n| self.state.neighs.contains(n))
            && want.fdb.iter().all(|f| self.state.fdb.contains(f))
            && want.routes.iter().all(|r| self.state.routes.contains(r))
    }

    /// Whether any entry of `peer` is still there (its neighbour IP, FDB MAC or route).
    pub fn programs_any(&self, peer: &Peer) -> bool {
        let gw = peer.subnet.network();
        self.state.neighs.iter().any(|n| n.ip == gw)
            || self.state.fdb.iter().any(|f| f.mac == peer.vtep_mac)
            || self.state.routes.iter().any(|r| r.dst == peer.subnet)
    }
}

/// Reads flannel.1 inside `ns`.
pub fn read(ns: &str) -> Result<NodeKernel> {
    weft_testbed::in_netns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime")?;
        rt.block_on(async {
            let nl = weft_net::Netlink::connect()?;
            let Some(link) = nl.link_by_name(DEVICE).await? else {
                return Ok(NodeKernel::default());
            };
            let state = nl.read_state(link.index).await?;
            Ok::<_, anyhow::Error>(NodeKernel {
                mac: link.mac,
                up: link.up,
                state,
            })
        })
    })?
    .with_context(|| format!("reading {DEVICE} in {ns}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::test_peer as peer;

    #[test]
    fn all_three_entries_of_every_peer_are_needed() {
        let peers = [peer(1), peer(2)];
        let mut k = NodeKernel {
            mac: Some(MacAddr([2, 0, 0, 0, 0, 9])),
            up: true,
            state: desired_state(&peers),
        };
        assert!(k.programs_all(&peers));
        assert!(k.programs_any(&peers[1]));
        k.state.routes.retain(|r| r.dst != peers[1].subnet);
        assert!(!k.programs_all(&peers));
        assert!(
            k.programs_any(&peers[1]),
            "neighbour and FDB are still there"
        );
        k.state = KernelState::default();
        assert!(!k.programs_any(&peers[1]));
        let gone = NodeKernel::default();
        assert!(!gone.programs_all(&[]), "no device, nothing programmed");
    }
}
