//! weft's deploy renderers: what an operator generates before and while weft is deployed,
//! as pure functions of flags and inputs (no etcd, no network, no node).
//!
//! - [`manifest`]: the Kubernetes manifests that run weftd on every node (`weft manifest`);
//! - [`eks`]: the offline runbook for moving an EKS cluster off the AWS VPC CNI (`weft eks plan`);
//! - [`etcd`]: a production etcd's certificates and Fedora CoreOS Ignition configs
//!   (`weft etcd ignition`; the `weft` CLI writes the files);
//! - [`netconf`]: the flannel network config that `weft network init` writes and the
//!   manifests carry, and what weftd refuses of it.
//!
//! The `weft` CLI parses the flags (the clap types are here, so every caller shares them),
//! calls these and prints the [`output::Outcome`].

mod error;

pub mod eks;
pub mod etcd;
pub mod manifest;
pub mod netconf;
pub mod output;

pub use error::{Error, Result};
