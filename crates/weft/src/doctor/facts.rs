//! What the checks look at: plain data gathered from the node, etcd and the flags. Every field
//! keeps the error text of a failed read, so a check can say what it could not see.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use weft_core::dataplane::KernelState;
use weft_net::netlink::LinkInfoView;

use crate::cleanup::plan::Plan;
use crate::cleanup::snapshot::Listing;
use crate::eks::inputs::Node;
use crate::report::LeaseInput;
use crate::v2::Probe;

/// Everything the checks need.
#[derive(Debug, Clone)]
pub struct Facts {
    pub etcd: EtcdFacts,
    /// `--subnet-file`.
    pub subnet_file: PathBuf,
    pub subnet_env: FileText,
    /// Links, addresses and VXLAN state of this network namespace.
    pub net: Result<NetFacts, String>,
    /// The program that read the nat table, and the table (`*nat` ... `COMMIT`).
    pub iptables_save: String,
    pub iptables_nat: Result<String, String>,
    /// What each iptables backend holds, for the iptables-backend check; `None` when neither
    /// `iptables-legacy-save` nor `iptables-nft-save` is installed.
    pub iptables_backends: Option<BackendDumps>,
    /// `nft list table ip flannel-ipv4` (nftables mode): the listing, `None` when there is no
    /// such table, or why it could not be listed.
    pub nft_table: Result<Option<String>, String>,
    /// `/proc/sys/net/ipv4/ip_forward`.
    pub ip_forward: FileText,
    /// `/proc/sys/net/bridge/bridge-nf-call-iptables` (missing: br_netfilter not loaded).
    pub bridge_nf_call_iptables: FileText,
    pub cni: CniFacts,
    pub kubelet: KubeletFacts,
    /// `--flannel-args`: the text of the args (read from the file when it names one).
    pub flannel_args: Option<Result<String, String>>,
    /// `--nodes-json`: the nodes, or why they could not be read.
    pub nodes: Option<Result<Vec<Node>, String>>,
    /// `--healthz`.
    pub health: Option<HealthFacts>,
}

/// `iptables-legacy-save` + `ip6tables-legacy-save`, and `iptables-nft-save` +
/// `ip6tables-nft-save` (a command that failed contributes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendDumps {
    pub legacy: String,
    pub nft: String,
}

/// A small file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileText {
    Missing,
    Unreadable(String),
    Text(String),
}

/// What etcd said.
#[derive(Debug, Clone)]
pub struct EtcdFacts {
    /// `http://a:2379,http://b:2379`.
    pub endpoints: String,
    /// `<prefix>/config`.
    pub config_key: String,
    /// `<prefix>/subnets/`.
    pub subnets_prefix: String,
    /// The data, or why etcd could not be read (the root cause).
    pub reach: Result<EtcdData, String>,
}

/// The config and the leases.
#[derive(Debug, Clone)]
pub struct EtcdData {
    /// The raw config; None when the key does not exist in v3.
    pub config: Option<Vec<u8>>,
    /// When the config is missing from v3: what the v2 store said.
    pub v2: Vec<Probe>,
    /// Every key under `<prefix>/subnets/`.
    pub leases: Result<Vec<LeaseInput>, String>,
}

/// The kernel's view of this network namespace.
#[derive(Debug, Clone, Default)]
pub struct NetFacts {
    pub links: Vec<LinkInfoView>,
    /// (link index, address) of every IPv4 address.
    pub addrs: Vec<(u32, Ipv4Addr)>,
    /// The neighbours, FDB entries and routes of every `flannel.*` VXLAN link, by index.
    pub vxlan_state: Vec<(u32, Result<KernelState, String>)>,
    /// (link index, network) of every IPv4 address (host addresses as /32): what is on
    /// each link's L2 network.
    pub networks: Vec<(u32, Ipv4Net)>,
    /// With host-gw or DirectRouting: the routes into the flannel Network via a gateway out
    /// of each other link with an IPv4 address (weftd's direct routes, as
    /// `weft_core::dataplane::Owned` tells them), by link index.
    pub underlay_state: Vec<(u32, Result<KernelState, String>)>,
}

impl NetFacts {
    pub fn link(&self, index: u32) -> Option<&LinkInfoView> {
        self.links.iter().find(|l| l.index == index)
    }

    pub fn link_named(&self, name: &str) -> Option<&LinkInfoView> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The name of the link holding `ip`, if it is a local address.
    pub fn owner_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.addrs
            .iter()
            .find(|(_, a)| *a == ip)
            .map(|(i, _)| self.link(*i).map_or("?", |l| l.name.as_str()))
    }

    pub fn state_of(&self, index: u32) -> Option<&Result<KernelState, String>> {
        self.vxlan_state
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, s)| s)
    }

    /// The direct routes out of link `index`, if they were read.
    pub fn underlay_state_of(&self, index: u32) -> Option<&Result<KernelState, String>> {
        self.underlay_state
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, s)| s)
    }

    /// The networks of link `index`'s IPv4 addresses.
    pub fn networks_of(&self, index: u32) -> Vec<Ipv4Net> {
        self.networks
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// The CNI dirs and the VPC CNI cleanup planner's verdict.
#[derive(Debug, Clone)]
pub struct CniFacts {
    /// The conf dir, sorted, with the content of the network config files.
    pub conf_dir: Listing,
    pub bin_dir: Listing,
    /// What `weft node cleanup-vpc-cni` would do on this node.
    pub leftovers: Plan,
}

/// kubelet's config files.
#[derive(Debug, Clone, Default)]
pub struct KubeletFacts {
    /// The paths looked at when none was found.
    pub searched: Vec<PathBuf>,
    /// The config file and its text (or why it could not be read).
    pub main: Option<(PathBuf, Result<String, String>)>,
    /// `<config>.d/*.conf` drop-ins in the order kubelet applies them.
    pub dropins: Vec<(PathBuf, Result<String, String>)>,
}

/// weftd's health server.
#[derive(Debug, Clone)]
pub struct HealthFacts {
    pub url: String,
    /// (HTTP status, body) of `/readyz`.
    pub readyz: Result<(u16, String), String>,
    /// (HTTP status, body) of `/metrics`.
    pub metrics: Result<(u16, String), String>,
}
