//! Kernel adapters of weft: the VXLAN device and its peer entries over rtnetlink, the
//! external interface choice, and iptables rules. Each sits behind a small API that takes
//! plans computed by `weft-core` and applies them.

pub mod batch;
pub mod firewall;
pub mod iface;
pub mod netlink;
pub mod nftables;

pub use firewall::{FirewallError, Iptables};
pub use iface::{ExtIface, IfaceError, IfaceRequest};
pub use netlink::{NetError, Netlink, VxlanDevice, VxlanSpec};
pub use nftables::Nftables;
