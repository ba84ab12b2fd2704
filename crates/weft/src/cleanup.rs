//! `weft node cleanup-vpc-cni`: removes what the AWS VPC CNI left on a node that stays in
//! place (eks-vpc-cni.md §1.8), so it can run weft without being replaced: the original
//! field report's error E4 ("dial tcp 127.0.0.1:50051: connect: connection refused" for every
//! new pod), whose only known fix was replacing every node.
//!
//! Three stages, each apart:
//! 1. [`snapshot::take`] reads the node (directory listings, `<backend>-save -t <table>` of
//!    iptables-legacy / iptables-nft and their ip6tables twins, `nft list table ip aws-cni`,
//!    `ip -j rule`, `ip -4 -j route show table all`, `ip -j link show`, systemd-networkd's
//!    link state) and changes nothing;
//! 2. [`plan::plan`] turns that snapshot into steps (what, why, the exact command or file
//!    operation); pure, so it is unit-tested on saved real output;
//! 3. with `--apply`, [`apply::apply`] carries the steps out, then the node is read and
//!    planned again: an empty second plan is what "clean" means, and it is also why a second
//!    `--apply` is a no-op.
//!
//! Every path is a flag and every program injectable, so tests run it on temp dirs inside a
//! network namespace (`ip netns exec <ns> weft node cleanup-vpc-cni --conf-dir ...`).

mod apply;
mod iproute;
mod iptables;
pub(crate) mod plan;
pub(crate) mod snapshot;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::{OutputArgs, OutputFormat};
use crate::output::{self, Outcome};
use apply::{ActionResult, StepResult};
use plan::Plan;
use snapshot::{Backend, Host, Paths, SystemHost, Tools};

/// `weft node ...`: commands run on one node.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Remove the AWS VPC CNI's leftovers from this node (dry run unless --apply).
    ///
    /// Moves its CNI config aside (while 10-aws.conflist sorts first, every new pod goes to
    /// aws-cni and fails: error E4), removes its binaries (keeping bridge, host-local,
    /// portmap, loopback and the other upstream plugins), its iptables chains and rules in
    /// both backends, `table ip aws-cni`, its ip rules and ENI route tables, and its state
    /// files. Without --apply it prints the plan (what, why, the exact command) and changes
    /// nothing. Idempotent: a second --apply finds nothing to do.
    CleanupVpcCni(CleanupArgs),
}

/// Arguments of `weft node cleanup-vpc-cni`.
#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    /// Carry out the plan (default: print it and change nothing).
    #[arg(long)]
    pub apply: bool,
    /// Apply even though ipamd still answers on this node.
    #[arg(long, requires = "apply")]
    pub force: bool,
    /// Also remove what VPC-addressed pods still running here need (their per-pod ip rules,
    /// ENI route tables, SNAT and connmark rules, the aws-cni binaries and state). On EC2
    /// that cuts them off: their replies leave through the wrong ENI. Without it, a node with
    /// such pods gets only what is safe while they run; run again after the drain.
    #[arg(long)]
    pub all: bool,
    /// The overlay network (weftd's Network, e.g. 10.244.0.0/16), when the subnet file does
    /// not say it yet (default: FLANNEL_NETWORK of --subnet-file).
    #[arg(long, value_name = "CIDR")]
    pub overlay_network: Option<ipnet::Ipv4Net>,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(flatten)]
    pub tools: ToolArgs,
}

/// Where the VPC CNI's files are (the real node's paths by default).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Paths")]
pub struct PathArgs {
    /// The container runtime's CNI conf dir.
    #[arg(long, default_value = weft_cni::install::DEFAULT_CONF_DIR, value_name = "DIR")]
    pub conf_dir: PathBuf,
    /// The CNI bin dir.
    #[arg(long, default_value = weft_cni::install::DEFAULT_BIN_DIR, value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// ipamd's checkpoint and sockets.
    #[arg(long, value_name = "DIR", default_value = "/var/run/aws-node")]
    pub aws_node_run_dir: PathBuf,
    /// The VPC CNI's logs (moved aside to <dir>.weft-bak, not deleted).
    #[arg(long, value_name = "DIR", default_value = "/var/log/aws-routed-eni")]
    pub aws_log_dir: PathBuf,
    /// egress-cni's host-local data dir (holds egress-v6-ipam).
    #[arg(long, value_name = "DIR", default_value = "/run/cni/v4pd")]
    pub egress_v4pd_dir: PathBuf,
    /// egress-cni's host-local data dir (holds egress-v4-ipam).
    #[arg(long, value_name = "DIR", default_value = "/run/cni/v6pd")]
    pub egress_v6pd_dir: PathBuf,
    /// libcni's cached results (aws-cni-* entries are removed).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cni/results")]
    pub cni_results_dir: PathBuf,
    /// The network policy agent's bpffs pins.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/globals/aws")]
    pub aws_bpf_dir: PathBuf,
    /// systemd-networkd's link state files (links it manages keep their 32765 rules).
    #[arg(long, value_name = "DIR", default_value = "/run/systemd/netif/links")]
    pub networkd_links_dir: PathBuf,
    /// Where the kernel lists the legacy iptables tables that exist.
    #[arg(long, value_name = "DIR", default_value = "/proc/net")]
    pub proc_net: PathBuf,
    /// weftd's subnet file: its FLANNEL_NETWORK is the overlay network.
    #[arg(long, value_name = "PATH", default_value = "/run/flannel/subnet.env")]
    pub subnet_file: PathBuf,
}

impl PathArgs {
    pub fn paths(&self) -> Paths {
        Paths {
            conf_dir: self.conf_dir.clone(),
            bin_dir: self.bin_dir.clone(),
            aws_node_run_dir: self.aws_node_run_dir.clone(),
            aws_log_dir: self.aws_log_dir.clone(),
            egress_v4pd_dir: self.egress_v4pd_dir.clone(),
            egress_v6pd_dir: self.egress_v6pd_dir.clone(),
            cni_results_dir: self.cni_results_dir.clone(),
            aws_bpf_dir: self.aws_bpf_dir.clone(),
            networkd_links_dir: self.networkd_links_dir.clone(),
            proc_net: self.proc_net.clone(),
            subnet_file: self.subnet_file.clone(),
        }
    }
}

/// The programs it runs (names on PATH, or paths). An iptables backend is the command that
/// `-save` and `-restore` are appended to; a backend whose `-save` is missing is skipped.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Programs")]
pub struct ToolArgs {
    #[arg(long, default_value = "ip", value_name = "PROGRAM")]
    pub ip: String,
    #[arg(long, default_value = "nft", value_name = "PROGRAM")]
    pub nft: String,
    #[arg(long, default_value = "iptables-legacy", value_name = "PROGRAM")]
    pub iptables_legacy: String,
    #[arg(long, default_value = "iptables-nft", value_name = "PROGRAM")]
    pub iptables_nft: String,
    #[arg(long, default_value = "ip6tables-legacy", value_name = "PROGRAM")]
    pub ip6tables_legacy: String,
    #[arg(long, default_value = "ip6tables-nft", value_name = "PROGRAM")]
    pub ip6tables_nft: String,
}

impl ToolArgs {
    pub fn tools(&self) -> Tools {
        let backend = |name, base: &String, legacy, v6| Backend {
            name,
            base: base.clone(),
            legacy,
            v6,
        };
        Tools {
            ip: self.ip.clone(),
            nft: self.nft.clone(),
            backends: vec![
                backend("iptables-legacy", &self.iptables_legacy, true, false),
                backend("iptables-nft", &self.iptables_nft, false, false),
                backend("ip6tables-legacy", &self.ip6tables_legacy, true, true),
                backend("ip6tables-nft", &self.ip6tables_nft, false, true),
            ],
        }
    }
}

/// What this command leaves to others, said on every run.
pub const NOT_HANDLED: &[&str] = &[
    "EC2: the node's secondary IPs, /28 prefixes and aws-K8S-<instance-id> ENIs stay allocated from the subnet until released with the AWS API (UnassignPrivateIpAddresses, DetachNetworkInterface, DeleteNetworkInterface)",
    "kubelet max-pods is unchanged (error E5): raise it in the kubelet config or the NodeConfig and restart kubelet",
    "sysctls (rp_filter=2 on the primary ENI, ip_forward=1), the ENI MTU of 9001 and /run/xtables.lock stay: harmless for weft, and the lock is shared with kube-proxy",
];

/// Runs a `weft node` command.
pub fn run(cmd: NodeCommand) -> Result<Outcome> {
    match cmd {
        NodeCommand::CleanupVpcCni(args) => Ok(cleanup_vpc_cni(&args, &mut SystemHost)),
    }
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub apply: bool,
    pub plan: Plan,
    /// `--apply` was refused (ipamd still runs).
    pub refused: bool,
    /// One per step, after `--apply`.
    pub results: Option<Vec<StepResult>>,
    /// The plan of a second look after `--apply`.
    pub after: Option<Plan>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.refused
            || !self.plan.problems.is_empty()
            || self
                .results
                .as_ref()
                .is_some_and(|r| r.iter().any(|s| !s.ok()))
            || self
                .after
                .as_ref()
                .is_some_and(|a| !a.is_empty() || !a.problems.is_empty())
    }
}

/// Snapshot, plan and (with `--apply`) apply, on `host`.
pub fn cleanup_vpc_cni(args: &CleanupArgs, host: &mut dyn Host) -> Outcome {
    let paths = args.paths.paths();
    let tools = args.tools.tools();
    let look = |host: &mut dyn Host| {
        let mut snap = snapshot::take(host, &paths, &tools);
        if let Some(net) = args.overlay_network {
            snap.overlay = Ok(Some((net.trunc(), "--overlay-network".to_string())));
        }
        plan::plan_with(&snap, &tools, args.all)
    };
    let plan = look(host);
    let mut report = Report {
        apply: args.apply,
        refused: args.apply && plan.blocker.is_some() && !args.force,
        plan,
        results: None,
        after: None,
    };
    if args.apply && !report.refused {
        report.results = Some(apply::apply(&report.plan, host));
        report.after = Some(look(host));
    }
    let mut out = Outcome {
        failed: report.failed(),
        ..Outcome::default()
    };
    match args.out.output {
        OutputFormat::Json => out.say(output::json(&report_json(&report))),
        OutputFormat::Text => out.stdout = render_text(&report),
    }
    out
}

fn result_json(r: &ActionResult) -> serde_json::Value {
    match r {
        ActionResult::Done => json!({"status": "done"}),
        ActionResult::Skipped => json!({"status": "skipped"}),
        ActionResult::Failed(e) => json!({"status": "failed", "error": e}),
    }
}

/// The JSON document of `--output json`.
pub fn report_json(r: &Report) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = r
        .plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v = json!({
                "area": s.area,
                "what": s.what,
                "why": s.why,
                "commands": s.actions.iter().map(|a| a.command()).collect::<Vec<_>>(),
                "actions": s.actions,
            });
            if let Some(res) = r.results.as_ref().and_then(|res| res.get(i)) {
                v["results"] = res.actions.iter().map(result_json).collect();
            }
            v
        })
        .collect();
    json!({
        "mode": if r.apply { "apply" } else { "dry-run" },
        "refused": r.refused,
        "blocker": r.plan.blocker,
        "live_vpc_pods": r.plan.live_pods,
        "live_vpc_pods_unknown": r.plan.live_unknown,
        "steps": steps,
        "kept": r.plan.kept,
        "warnings": r.plan.warnings,
        "problems": r.plan.problems,
        "left_after_apply": r.after.as_ref().map(|a| a.steps.iter().map(|s| &s.what).collect::<Vec<_>>()),
        "problems_after_apply": r.after.as_ref().map(|a| &a.problems),
        "not_handled": NOT_HANDLED,
    })
}

fn indent(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let _ = writeln!(out, "{}{line}", if i == 0 { first } else { rest });
    }
    out
}

fn list(out: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for item in items {
        out.push_str(&indent(item, "  - ", "    "));
    }
}

/// The text output: the plan (dry run), or the plan with what happened (`--apply`).
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let n = r.plan.steps.len();
    let steps = if n == 1 { "step" } else { "steps" };
    let head = if r.plan.is_empty() && (!r.plan.live_pods.is_empty() || r.plan.live_unknown) {
        "nothing to do while VPC-addressed pods run here".to_string()
    } else if r.plan.is_empty() {
        "nothing to do: no VPC CNI leftovers found on this node".to_string()
    } else if r.refused {
        format!("refused to apply the {n} {steps} below, nothing was changed")
    } else if r.apply {
        format!("applying {n} {steps}")
    } else {
        format!("dry run, nothing was changed; `--apply` carries out these {n} {steps}")
    };
    let _ = writeln!(out, "weft node cleanup-vpc-cni: {head}");
    if !r.plan.live_pods.is_empty() {
        let pods: Vec<String> = r.plan.live_pods.iter().map(|p| p.describe()).collect();
        let _ = writeln!(
            out,
            "VPC-addressed pods still run here: {}. Only what is safe while they run is planned; what they need is kept (below) until they are gone: drain the node, then run this again (--all removes it now and cuts them off)",
            pods.join(", ")
        );
    } else if r.plan.live_unknown {
        let _ = writeln!(
            out,
            "the node's routes and links could not be read, so what VPC-addressed pods may need is kept (below)"
        );
    }
    if let Some(b) = &r.plan.blocker {
        let label = if r.refused { "refused" } else { "warning" };
        let _ = writeln!(out, "{label}: {b}");
    }
    for (i, s) in r.plan.steps.iter().enumerate() {
        let _ = writeln!(out, "\n{}. [{}] {}", i + 1, s.area.label(), s.what);
        out.push_str(&indent(&s.why, "   why: ", "        "));
        let result = r.results.as_ref().and_then(|res| res.get(i));
        for (j, a) in s.actions.iter().enumerate() {
            out.push_str(&indent(&a.command(), "   do:  ", "        "));
            match result.and_then(|res| res.actions.get(j)) {
                Some(ActionResult::Done) => out.push_str("        -> done\n"),
                Some(ActionResult::Skipped) => {
                    out.push_str("        -> skipped (an earlier action of this step failed)\n")
                }
                Some(ActionResult::Failed(e)) => {
                    out.push_str(&indent(e, "        -> FAILED: ", "           "))
                }
                None => {}
            }
        }
    }
    list(&mut out, "kept", &r.plan.kept);
    list(&mut out, "warnings", &r.plan.warnings);
    list(&mut out, "could not inspect", &r.plan.problems);
    let not_handled: Vec<String> = NOT_HANDLED.iter().map(|s| s.to_string()).collect();
    list(&mut out, "not handled here", &not_handled);
    if let Some(after) = &r.after {
        if after.is_empty() && after.problems.is_empty() && !after.live_pods.is_empty() {
            let _ = writeln!(
                out,
                "\ndone for now: what is safe while VPC-addressed pods run is done; the rest (kept above) waits until they are gone: drain the node and run this again"
            );
        } else if after.is_empty() && after.problems.is_empty() {
            let _ = writeln!(
                out,
                "\ndone: a second look finds nothing of the VPC CNI left on this node"
            );
        } else {
            let left: Vec<String> = after.steps.iter().map(|s| s.what.clone()).collect();
            list(&mut out, "still left after applying", &left);
            list(
                &mut out,
                "could not inspect after applying",
                &after.problems,
            );
        }
    }
    out
}
