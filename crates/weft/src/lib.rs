//! weft's operator CLI as a library: the `weft` binary (src/main.rs) is its command line, and
//! weft-lab (the demo, the soak and the connectivity test on the testbed) reuses its output
//! helpers. The renderers (manifests, the EKS plan, etcd Ignition and PKI, the network config)
//! are the weft-deploy crate's, re-exported here under their old paths. Nothing here links the
//! testbed.

pub use weft_deploy::{eks, manifest, netconf};

pub mod cleanup;
pub mod cli;
pub mod doctor;
pub mod etcd;
pub mod etcd_cluster;
pub mod human;
pub mod install_cni;
pub mod leases;
pub mod network;
pub mod output;
pub mod report;
pub mod status;
pub mod v2;

use std::path::PathBuf;

/// Finds a sibling binary (target/release/weft → target/release/weftd).
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}
