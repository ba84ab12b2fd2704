//! `weft eks plan`: an offline runbook for moving an EKS cluster from the AWS VPC CNI to weft
//! without replacing nodes.
//!
//! It never calls AWS or Kubernetes: it reads flags and the JSON the user pastes or pipes
//! (`aws ec2 describe-instance-types`, `kubectl get nodes|...webhookconfigurations|apiservices
//! -o json`), checks the address plan, works out max pods per instance type, finds the Services
//! the control plane must keep reaching, and prints every kubectl, aws and weft command in order
//! (eks-vpc-cni.md's migration checklist), as Markdown or JSON.
//!
//! Layout: this file holds the flags and the file reading; `inputs` parses the documents,
//! `addresses` the CIDRs, `max_pods` the ENI arithmetic and its table, `runbook` builds the
//! plan and `render` prints it. Everything below this file is pure.

mod addresses;
pub mod inputs;
pub mod max_pods;
mod render;
mod runbook;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, bail, input as anyhow};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::Value;

use crate::output::Outcome;
use weft_store::EtcdFlags as EtcdArgs;

/// `weft eks ...`
#[derive(Debug, Subcommand)]
pub enum EksCommand {
    /// Print the runbook that moves this EKS cluster from the AWS VPC CNI to weft (offline).
    ///
    /// Reads only flags and files (`-` is stdin): nothing calls AWS or Kubernetes. Checks the
    /// pod CIDR against the VPC, service and peered CIDRs (an overlap exits 1), works out max
    /// pods per instance type and the exact setting for the AMI family, lists the webhooks and
    /// APIServices that must move to the host network, and prints every kubectl, aws and weft
    /// command from preflight to post-checks.
    Plan(PlanArgs),
}

/// The AMI family of the nodes: it decides how kubelet's max pods is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AmiFamily {
    /// Amazon Linux 2 (bootstrap.sh).
    Al2,
    /// Amazon Linux 2023 (nodeadm NodeConfig).
    Al2023,
    /// Bottlerocket (settings.kubernetes.max-pods).
    Bottlerocket,
}

/// Output format of `weft eks plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PlanFormat {
    /// A Markdown runbook.
    #[default]
    #[value(alias = "text")]
    Markdown,
    /// One JSON document: the plan with steps (id, title, commands, notes).
    Json,
}

/// `weft eks plan` flags.
#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("instance_type_source")
        .required(true)
        .multiple(true)
        .args(["instance_types", "instance_types_json", "nodes_json"])
))]
#[command(after_help = "Example:\n  kubectl get nodes -o json > nodes.json\n  \
    weft eks plan --cluster-name prod --region us-east-1 --ami-family al2023 \\\n    \
    --vpc-cidr 10.0.0.0/16 --instance-types m5.large,t3.small --nodes-json nodes.json > runbook.md")]
pub struct PlanArgs {
    /// The EKS cluster's name.
    #[arg(long, value_name = "NAME")]
    pub cluster_name: String,
    /// The cluster's AWS region, e.g. us-east-1.
    #[arg(long, value_name = "REGION")]
    pub region: String,
    /// The nodes' AMI family.
    #[arg(long, value_enum, value_name = "FAMILY")]
    pub ami_family: AmiFamily,
    /// A CIDR of the cluster's VPC, primary first (repeatable or comma-separated; include
    /// secondary and 100.64.0.0/10 custom-networking ranges).
    #[arg(
        long = "vpc-cidr",
        value_name = "CIDR",
        required = true,
        value_delimiter = ','
    )]
    pub vpc_cidrs: Vec<String>,
    /// The cluster's service CIDR (default: EKS's default, 172.20.0.0/16 when the primary VPC
    /// CIDR is inside 10.0.0.0/8, else 10.100.0.0/16).
    #[arg(long, value_name = "CIDR")]
    pub service_cidr: Option<String>,
    /// A peered VPC or on-premises range pods must reach (repeatable or comma-separated).
    #[arg(long = "peered-cidr", value_name = "CIDR", value_delimiter = ',')]
    pub peered_cidrs: Vec<String>,
    /// The overlay pod network.
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16")]
    pub pod_cidr: String,
    /// Prefix length of each node's subnet.
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub subnet_len: u64,
    /// Instance types to plan max pods for, comma-separated (e.g. m5.large,t3.small).
    #[arg(long, value_name = "TYPES", value_delimiter = ',')]
    pub instance_types: Vec<String>,
    /// Output of `aws ec2 describe-instance-types` for types outside the embedded table
    /// (`-` = stdin).
    #[arg(long, value_name = "FILE")]
    pub instance_types_json: Option<PathBuf>,
    /// Output of `kubectl get nodes -o json` (`-` = stdin).
    #[arg(long, value_name = "FILE")]
    pub nodes_json: Option<PathBuf>,
    /// Output of `kubectl get validatingwebhookconfigurations,mutatingwebhookconfigurations
    /// -o json` (`-` = stdin).
    #[arg(long, value_name = "FILE")]
    pub webhooks_json: Option<PathBuf>,
    /// Output of `kubectl get apiservices -o json` (`-` = stdin).
    #[arg(long, value_name = "FILE")]
    pub apiservices_json: Option<PathBuf>,
    /// Output of `kubectl get networkpolicy -A -o json` (`-` = stdin): the policies that stop
    /// being enforced when aws-node (the VPC CNI's network policy agent) goes.
    #[arg(long, value_name = "FILE")]
    pub network_policies_json: Option<PathBuf>,
    /// Comma-separated endpoints of weft's etcd (default: placeholders for a 3-member cluster).
    #[arg(long, value_name = "URLS")]
    pub etcd_endpoints: Option<String>,
    /// Max pods per node (default: 110, or the node subnet's pod addresses if fewer).
    #[arg(long, value_name = "N")]
    pub max_pods: Option<u32>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = PlanFormat::Markdown)]
    pub output: PlanFormat,
}

/// Runs a `weft eks` command.
pub fn run(cmd: EksCommand) -> Result<Outcome> {
    match cmd {
        EksCommand::Plan(args) => plan(&args, &mut std::io::stdin().lock()),
    }
}

/// `weft eks plan`, reading `-` inputs from `stdin`.
fn plan(args: &PlanArgs, stdin: &mut dyn std::io::Read) -> Result<Outcome> {
    let stdin_flags: Vec<&str> = [
        ("--instance-types-json", &args.instance_types_json),
        ("--nodes-json", &args.nodes_json),
        ("--webhooks-json", &args.webhooks_json),
        ("--apiservices-json", &args.apiservices_json),
        ("--network-policies-json", &args.network_policies_json),
    ]
    .into_iter()
    .filter(|(_, p)| p.as_deref() == Some(Path::new("-")))
    .map(|(f, _)| f)
    .collect();
    if stdin_flags.len() > 1 {
        bail!(
            "{} all ask for stdin (-), which holds one document: save all but one to files",
            stdin_flags.join(" and ")
        );
    }

    let addresses = addresses::plan(&addresses::AddressFlags {
        pod_cidr: &args.pod_cidr,
        subnet_len: args.subnet_len,
        service_cidr: args.service_cidr.as_deref(),
        vpc_cidrs: &args.vpc_cidrs,
        peered_cidrs: &args.peered_cidrs,
    })
    .map_err(problems)?;

    let etcd_endpoints = match &args.etcd_endpoints {
        Some(raw) => Some(EtcdArgs::with_endpoints(raw).endpoints()?),
        None => None,
    };

    let input = runbook::PlanInput {
        cluster: nonempty("--cluster-name", &args.cluster_name)?,
        region: nonempty("--region", &args.region)?,
        ami: args.ami_family,
        addresses,
        etcd_endpoints,
        instance_types: args.instance_types.clone(),
        described: read(
            stdin,
            "--instance-types-json",
            args.instance_types_json.as_deref(),
            inputs::parse_instance_types,
        )?,
        nodes: read(
            stdin,
            "--nodes-json",
            args.nodes_json.as_deref(),
            inputs::parse_nodes,
        )?
        .map(|(_, v)| v),
        webhooks: read(
            stdin,
            "--webhooks-json",
            args.webhooks_json.as_deref(),
            inputs::parse_webhooks,
        )?
        .map(|(_, v)| v),
        api_services: read(
            stdin,
            "--apiservices-json",
            args.apiservices_json.as_deref(),
            inputs::parse_api_services,
        )?
        .map(|(_, v)| v),
        network_policies: read(
            stdin,
            "--network-policies-json",
            args.network_policies_json.as_deref(),
            inputs::parse_network_policies,
        )?
        .map(|(_, v)| v),
        max_pods: args.max_pods,
    };
    let plan = runbook::build(&input).map_err(problems)?;
    Ok(Outcome {
        stdout: match args.output {
            PlanFormat::Markdown => render::to_markdown(&plan),
            PlanFormat::Json => render::to_json(&plan),
        },
        ..Outcome::default()
    })
}

/// One error out of a list of problems.
fn problems(list: Vec<String>) -> Error {
    match list.as_slice() {
        [one] => anyhow!("{one}"),
        many => {
            let lines: Vec<String> = many.iter().map(|p| format!("  - {p}")).collect();
            anyhow!(
                "the plan cannot be made ({} problems):\n{}",
                many.len(),
                lines.join("\n")
            )
        }
    }
}

fn nonempty(flag: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        bail!("{flag} is empty; pass the value, e.g. {flag} prod");
    }
    Ok(v.to_string())
}

/// The command whose output a flag expects, for error messages.
fn expected_source(flag: &str) -> &'static str {
    match flag {
        "--instance-types-json" => "aws ec2 describe-instance-types --instance-types <type> ...",
        "--nodes-json" => "kubectl get nodes -o json",
        "--webhooks-json" => {
            "kubectl get validatingwebhookconfigurations,mutatingwebhookconfigurations -o json"
        }
        "--network-policies-json" => "kubectl get networkpolicy -A -o json",
        _ => "kubectl get apiservices -o json",
    }
}

/// Reads and parses one input document; errors name the flag, the file and the JSON path.
fn read<T>(
    stdin: &mut dyn std::io::Read,
    flag: &str,
    path: Option<&Path>,
    parse: fn(&Value) -> Result<T, inputs::PathError>,
) -> Result<Option<(String, T)>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let label = if path == Path::new("-") {
        format!("{flag} - (stdin)")
    } else {
        format!("{flag} {}", path.display())
    };
    let hint = expected_source(flag);
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        stdin.read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| anyhow!("cannot read {label}: {e}"))?;
    let doc = inputs::parse_json(&bytes)
        .map_err(|e| anyhow!("{label}: {e}; it should hold the output of `{hint}`"))?;
    let value =
        parse(&doc).map_err(|e| anyhow!("{label}: {e}; it should hold the output of `{hint}`"))?;
    Ok(Some((label, value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        eks: EksCommand,
    }

    fn args(extra: &[&str]) -> PlanArgs {
        let mut argv = vec![
            "t",
            "plan",
            "--cluster-name",
            "prod",
            "--region",
            "us-east-1",
            "--ami-family",
            "al2023",
            "--vpc-cidr",
            "10.0.0.0/16",
        ];
        argv.extend_from_slice(extra);
        let EksCommand::Plan(a) = T::try_parse_from(argv).unwrap().eks;
        a
    }

    fn run_with(a: &PlanArgs, stdin: &str) -> Result<Outcome> {
        plan(a, &mut stdin.as_bytes())
    }

    #[test]
    fn eks_flags_parse_lists_and_defaults() {
        let a = args(&[
            "--instance-types",
            "m5.large,t3.small",
            "--vpc-cidr",
            "10.1.0.0/16,100.64.0.0/16",
        ]);
        assert_eq!(a.instance_types, ["m5.large", "t3.small"]);
        assert_eq!(a.vpc_cidrs, ["10.0.0.0/16", "10.1.0.0/16", "100.64.0.0/16"]);
        assert_eq!(a.pod_cidr, "10.244.0.0/16");
        assert_eq!(a.subnet_len, 24);
        assert_eq!(a.output, PlanFormat::Markdown);
        assert_eq!(
            args(&["--instance-types", "m5.large", "-o", "text"]).output,
            PlanFormat::Markdown
        );
    }

    #[test]
    fn eks_plan_reads_stdin_once() {
        let a = args(&["--nodes-json", "-"]);
        let nodes = r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"n1","labels":{"node.kubernetes.io/instance-type":"t3.large"}},"spec":{"providerID":"aws:///us-east-1a/i-0abc"},"status":{"capacity":{"pods":"35"}}}]}"#;
        let out = run_with(&a, nodes).unwrap();
        assert!(
            out.stdout
                .contains("| t3.large | 3 | 12 | 35 | 35 | 35 (1 node) |"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("--instance-ids i-0abc"));

        let a = args(&["--nodes-json", "-", "--webhooks-json", "-"]);
        let e = run_with(&a, nodes).unwrap_err().to_string();
        assert_eq!(
            e,
            "--nodes-json and --webhooks-json all ask for stdin (-), which holds one document: save all but one to files"
        );
    }

    #[test]
    fn eks_plan_stdin_errors_say_stdin() {
        let a = args(&["--webhooks-json", "-", "--instance-types", "m5.large"]);
        let e = run_with(&a, "{\"items\": [").unwrap_err().to_string();
        assert!(
            e.starts_with("--webhooks-json - (stdin): it is not valid JSON ("),
            "{e}"
        );
        assert!(e.ends_with("it should hold the output of `kubectl get validatingwebhookconfigurations,mutatingwebhookconfigurations -o json`"), "{e}");
    }

    #[test]
    fn eks_plan_checks_etcd_endpoints_and_names() {
        let a = args(&[
            "--instance-types",
            "m5.large",
            "--etcd-endpoints",
            "10.0.0.5:2379",
        ]);
        let e = run_with(&a, "").unwrap_err().to_string();
        assert!(e.contains("must start with http:// or https://"), "{e}");
        let mut a = args(&["--instance-types", "m5.large"]);
        a.cluster_name = " ".into();
        let e = run_with(&a, "").unwrap_err().to_string();
        assert!(e.starts_with("--cluster-name is empty"), "{e}");
    }

    #[test]
    fn eks_plan_json_has_ordered_steps() {
        let a = args(&["--instance-types", "m5.large", "-o", "json"]);
        let out = run_with(&a, "").unwrap();
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        let ids: Vec<&str> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "preflight",
                "backup",
                "control-plane-access",
                "security-groups",
                "etcd",
                "network-config",
                "remove-aws-node",
                "deploy-weft",
                "max-pods",
                "roll-nodes",
                "ec2-cleanup",
                "cluster-cleanup",
                "post-checks"
            ]
        );
        assert_eq!(v["max_pods"]["target"], 110);
        assert_eq!(v["cluster"]["etcd_endpoints_are_placeholders"], true);
    }
}
