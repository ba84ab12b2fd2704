//! weft-core: the pure logic of weft, a flanneld-compatible Kubernetes overlay daemon.
//!
//! Everything here is data in, data out: no files, sockets, processes or clocks. Randomness is
//! injected. The adapters (weft-net, weft-store) and the daemon own the side effects.
//!
//! - [`config`] — flannel's network config JSON, with flannel's defaults and checks.
//! - [`lease`] — lease values (`LeaseAttrs`) with flannel's exact bytes.
//! - [`subnet`] — subnet keys and etcd key layout.
//! - [`alloc`] — choosing this node's subnet.
//! - [`peer`] — turning leases into VXLAN peers.
//! - [`dataplane`] — the desired-vs-actual diff for the VXLAN device.
//! - [`family`] — IPv4 or IPv6: what the peers and the data plane are generic over.
//! - [`rules`] — iptables masquerade/forward rules and `iptables-restore` plans.
//! - [`subnet_env`] — `/run/flannel/subnet.env`.
//! - [`mac`] — MAC addresses.
//! - [`clip`] — cutting input echoed in error messages down to size.
//! - [`xtables`] — the host's iptables backend (legacy or nft) and the xtables lock's holder.

pub mod agent;
pub mod alloc;
pub mod clip;
pub mod config;
pub mod dataplane;
pub mod family;
mod json;
pub mod lease;
pub mod lease_watch;
pub mod mac;
pub mod nft;
pub mod peer;
pub mod peers;
pub mod readiness;
pub mod rules;
pub mod saved;
pub mod status;
pub mod subnet;
pub mod subnet_env;
pub mod vtep;
pub mod xtables;

pub use alloc::{AcquireAction, AcquirePlan, AllocError, Listing, plan_acquire};
pub use config::{BackendConfig, ConfigError, NetworkConfig, VxlanConfig};
pub use dataplane::{FdbEntry, KernelState, NeighEntry, Op, RouteEntry};
pub use json::value_kind;
pub use lease::{Lease, LeaseAttrs, LeaseError, VxlanBackendData};
pub use mac::{MacAddr, MacParseError};
pub use peer::{Peer, PeerVerdict, classify_lease};
pub use rules::{Rule, Table};
pub use subnet::KeyError;
pub use subnet_env::{SubnetEnv, SubnetEnvError};
