//! `weft doctor`: checks one node the way an operator would by hand, and names the cause and
//! the fix of each problem, including every error of the original field report (E1-E5):
//!
//! | check              | what it looks at                                                  |
//! |--------------------|-------------------------------------------------------------------|
//! | etcd               | the v3 API answers at `--etcd-endpoints` (E2)                     |
//! | network-config     | `<prefix>/config` in v3, only in v2 (E2/E3), missing, malformed   |
//! | lease              | subnet.env exists, parses, and its subnet is leased to this node  |
//! | vxlan-device       | `flannel.<VNI>`: VNI, port, MTU (underlay - 50), up, VTEP MAC     |
//! | peers              | neighbour, FDB entry and route of every peer lease                |
//! | masquerade         | FLANNEL-POSTRTG against `iptables-save` (when FLANNEL_IPMASQ)     |
//! | iptables-backend   | weft's chains are in the backend the host's rules are in          |
//! | ip-forward         | `net.ipv4.ip_forward` in this network namespace                   |
//! | br-netfilter       | `net.bridge.bridge-nf-call-iptables` exists and is 1              |
//! | cni-config         | the runtime's first CNI config is flannel's (E4: 10-aws.conflist) |
//! | vpc-cni-leftovers  | what `weft node cleanup-vpc-cni` would still remove               |
//! | max-pods           | kubelet `maxPods` against the subnet and the ENI table (E5)       |
//! | kube-subnet-mgr    | kube mode on a cluster without podCIDRs (E1)                      |
//! | weftd-health       | `/readyz` and `/metrics` of weftd (with `--healthz`)              |
//!
//! Layout: [`gather`] is the thin effects layer (etcd, files, netlink, `iptables-save`, the
//! cleanup planner's snapshot, HTTP) and returns plain [`facts::Facts`]; [`checks`] turns
//! them into findings without any I/O, so every verdict is unit-tested without root;
//! [`render`] prints the table or the JSON document.

mod checks;
mod facts;
mod gather;
mod parse;
mod render;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::Args;

use crate::cli::{EtcdArgs, OutputArgs, OutputFormat};
use crate::output::Outcome;

use checks::Status;

/// `weft doctor` flags.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Checks (one row each): etcd, network-config, lease, vxlan-device, peers, \
masquerade, ip-forward, br-netfilter, cni-config, vpc-cni-leftovers, max-pods, kube-subnet-mgr, \
weftd-health.\nSTATUS is OK, WARN, FAIL or SKIP (not checked: an input is missing); every row \
that is not OK says its cause and its fix. Exit status 1 when any check FAILs.\n\nExample, as \
root on a node:\n  weft doctor --etcd-endpoints http://10.0.1.20:2379 --healthz \
http://127.0.0.1:8081 \\\n    --flannel-args \"$(kubectl -n kube-flannel get ds kube-flannel-ds \
-o jsonpath='{.spec.template.spec.containers[0].args}')\" \\\n    --nodes-json nodes.json"
)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub out: OutputArgs,
    /// The subnet.env weftd writes (weftd's --subnet-file).
    #[arg(long, default_value = "/run/flannel/subnet.env", value_name = "PATH")]
    pub subnet_file: PathBuf,
    /// Where the node's root file system is mounted, when doctor runs in a pod (weft's weftd
    /// container mounts the CNI dirs and kubelet's config dir read-only under /host): the CNI
    /// dirs and kubelet's config are read below it.
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// The container runtime's CNI conf dir (as install-cni's; `--cni-conf-dir` is the old
    /// spelling).
    #[arg(long, alias = "cni-conf-dir", default_value = weft_cni::install::DEFAULT_CONF_DIR, value_name = "DIR")]
    pub conf_dir: PathBuf,
    /// The CNI bin dir (as install-cni's; `--cni-bin-dir` is the old spelling).
    #[arg(long, alias = "cni-bin-dir", default_value = weft_cni::install::DEFAULT_BIN_DIR, value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// kubelet's config file (JSON or YAML with `maxPods`); its `<file>.d/*.conf` drop-ins are
    /// read too. Default: the first that exists of /etc/kubernetes/kubelet/config.json
    /// (AL2023), /etc/kubernetes/kubelet/kubelet-config.json (AL2) and
    /// /etc/kubernetes/kubelet/config (Bottlerocket).
    #[arg(long, value_name = "PATH")]
    pub kubelet_config: Option<PathBuf>,
    /// The args of the flanneld or weftd container (a file holding them, or the args
    /// themselves), to tell kube subnet manager mode (`--kube-subnet-mgr`) from etcd mode.
    #[arg(long, value_name = "FILE|ARGS", allow_hyphen_values = true)]
    pub flannel_args: Option<String>,
    /// Output of `kubectl get nodes -o json` (`-` = stdin), to see whether nodes have a
    /// spec.podCIDR.
    #[arg(long, value_name = "FILE")]
    pub nodes_json: Option<PathBuf>,
    /// weftd's health server, e.g. http://127.0.0.1:8081 (weftd --healthz-port): reads
    /// /readyz and /metrics.
    #[arg(long, value_name = "URL")]
    pub healthz: Option<String>,
    /// iptables-save to read the nat table with (the one weftd and kube-proxy use); `auto`:
    /// iptables-legacy-save or iptables-nft-save, whichever backend the host's rules are in (as
    /// weftd's --iptables-backend=auto decides), or iptables-save without the two flavours.
    #[arg(long, default_value = "auto", value_name = "PROGRAM")]
    pub iptables_save: String,
    /// How to reach etcd, as weftd does (last, as its own help section).
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// Runs `weft doctor`: gathers the facts, runs every check, renders them.
pub fn run(args: &DoctorArgs) -> Result<Outcome> {
    let facts = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?
        .block_on(gather::gather(args))?;
    let findings = checks::run_all(&facts);
    let mut out = Outcome {
        failed: findings.iter().any(|f| f.status == Status::Fail),
        ..Outcome::default()
    };
    match args.out.output {
        OutputFormat::Json => out.say(crate::output::json(&render::json(&findings))),
        OutputFormat::Text => out.stdout = render::text(&findings),
    }
    Ok(out)
}
