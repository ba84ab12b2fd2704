//! The plan: from checked inputs to the max-pods table, the Services the EKS control plane
//! must reach, warnings, and the ordered runbook with every command filled in. Pure: no AWS,
//! no Kubernetes, no files.
//!
//! The step order follows eks-vpc-cni.md's "Checklist a migration tool must automate", with
//! one deliberate change taken from its §1.8: aws-node is removed *before* weft's DaemonSet
//! starts cleaning nodes, so aws-node cannot write 10-aws.conflist or its iptables chains back.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::AmiFamily;
use super::addresses::AddressPlan;
use super::inputs::{ApiService, InstanceType, Node, ServiceRef, Webhook, WebhookTarget};
use super::max_pods::{self, Change, EniLimits, KUBELET_DEFAULT_MAX_PODS};

/// Namespace and DaemonSet that `weft manifest` renders (kube-flannel's names).
const WEFT_NAMESPACE: &str = "kube-flannel";
const WEFT_DAEMONSET: &str = "kube-flannel-ds";
/// The Secret the plan tells the user to create for https etcd endpoints (the name
/// `weft etcd ignition` prints too).
const ETCD_TLS_SECRET: &str = "weft-etcd-tls";
/// `weft etcd ignition --out-dir`, and the files it writes there.
const ETCD_PKI: &str = "etcd-pki";
/// Lists the CRDs whose versions are converted by a webhook.
const CONVERSION_WEBHOOKS: &str = "kubectl get crd -o jsonpath='{range .items[?(@.spec.conversion.strategy==\"Webhook\")]}{.metadata.name}{\"\\n\"}{end}'";
/// Compute types whose nodes keep their own networking (aws-node's affinity skips them too).
const SKIPPED_COMPUTE_TYPES: &[&str] = &["fargate", "hybrid", "auto"];

/// Everything the plan is built from, already parsed and checked.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub cluster: String,
    pub region: String,
    pub ami: AmiFamily,
    pub addresses: AddressPlan,
    /// `--etcd-endpoints`, checked; `None` when not given yet.
    pub etcd_endpoints: Option<Vec<String>>,
    /// `--instance-types`, in the order given.
    pub instance_types: Vec<String>,
    /// `--instance-types-json`, with the label naming it for errors.
    pub described: Option<(String, Vec<InstanceType>)>,
    pub nodes: Option<Vec<Node>>,
    pub webhooks: Option<Vec<Webhook>>,
    pub api_services: Option<Vec<ApiService>>,
    /// `--network-policies-json`.
    pub network_policies: Option<Vec<super::inputs::NetworkPolicyRef>>,
    /// `--max-pods`.
    pub max_pods: Option<u32>,
}

/// The whole plan; `--output json` prints exactly this.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub cluster: ClusterSummary,
    pub addresses: Addresses,
    pub max_pods: MaxPods,
    /// Present with `--nodes-json`.
    pub nodes: Option<NodesSummary>,
    pub control_plane_access: ControlPlaneAccess,
    pub warnings: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterSummary {
    pub name: String,
    pub region: String,
    pub ami_family: &'static str,
    pub etcd_endpoints: Vec<String>,
    /// True when `--etcd-endpoints` was not given and the commands carry placeholders.
    pub etcd_endpoints_are_placeholders: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Addresses {
    pub pod_cidr: String,
    pub subnet_len: u8,
    /// Node subnets weftd can lease.
    pub node_subnets: u64,
    pub pod_addresses_per_node: u32,
    pub service_cidr: String,
    /// True when the service CIDR is EKS's default, not `--service-cidr`.
    pub service_cidr_assumed: bool,
    pub vpc_cidrs: Vec<String>,
    pub peered_cidrs: Vec<String>,
    /// What `weft network init` writes to `/coreos.com/network/config`.
    pub network_config: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MaxPods {
    /// The max pods every node gets.
    pub target: u32,
    /// True when the target came from `--max-pods`.
    pub target_from_flag: bool,
    /// The exact setting for the AMI family.
    pub setting: String,
    pub instance_types: Vec<TypeRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypeRow {
    pub instance_type: String,
    /// `embedded table` or `--instance-types-json`.
    pub source: &'static str,
    pub enis: u32,
    pub ipv4_per_eni: u32,
    /// ENIs * (IPv4 per ENI - 1) + 2: what the AMI writes into kubelet today.
    pub eni_max_pods: u32,
    /// The embedded table's published value, when the type is in it.
    pub table_max_pods: Option<u32>,
    /// Distinct `status.capacity.pods` of the nodes of this type (with `--nodes-json`).
    pub current_max_pods: Vec<u32>,
    /// Nodes of this type (with `--nodes-json`).
    pub nodes: usize,
    /// Pod addresses of one node subnet: the most the overlay can give a node.
    pub overlay_max_pods: u32,
    pub target_max_pods: u32,
    /// `raise`, `keep`, `lower (optional)` or `lower (required)`.
    pub change: &'static str,
    pub kube_reserved_mib_before: u32,
    pub kube_reserved_mib_after: u32,
    /// Memory of the type in MiB (`--instance-types-json`, else the smallest node's capacity).
    pub memory_mib: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodesSummary {
    pub total: usize,
    /// EC2 nodes the runbook rolls, in input order.
    pub ec2: Vec<NodeRow>,
    /// Fargate, hybrid and Auto Mode nodes, which keep their own networking.
    pub skipped: Vec<SkippedNode>,
    /// EKS managed node groups among the EC2 nodes.
    pub managed_node_groups: Vec<String>,
    /// EC2 nodes that have `spec.podCIDR` (EKS never sets it: E1).
    pub with_pod_cidr: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    pub name: String,
    pub instance_type: Option<String>,
    pub instance_id: Option<String>,
    pub node_group: Option<String>,
    pub current_max_pods: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedNode {
    pub name: String,
    pub compute_type: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneAccess {
    /// True with `--webhooks-json`.
    pub webhooks_checked: bool,
    /// True with `--apiservices-json`.
    pub api_services_checked: bool,
    /// Services the API server calls, which must move to the host network.
    pub backends: Vec<Backend>,
    /// Webhooks that call a URL (outside the pod network) and need nothing.
    pub unaffected: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    pub port: u32,
    /// The webhooks and APIServices that call it.
    pub used_by: Vec<String>,
    /// What breaks while the API server cannot reach it.
    pub impact: String,
}

/// One runbook step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub id: &'static str,
    pub title: String,
    pub commands: Vec<String>,
    pub notes: Vec<String>,
}

impl Step {
    fn new(id: &'static str, title: impl Into<String>) -> Step {
        Step {
            id,
            title: title.into(),
            commands: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn cmd(&mut self, c: impl Into<String>) -> &mut Step {
        self.commands.push(c.into());
        self
    }

    fn note(&mut self, n: impl Into<String>) -> &mut Step {
        self.notes.push(n.into());
        self
    }
}

impl AmiFamily {
    /// The `--ami-family` value.
    pub fn name(self) -> &'static str {
        match self {
            AmiFamily::Al2 => "al2",
            AmiFamily::Al2023 => "al2023",
            AmiFamily::Bottlerocket => "bottlerocket",
        }
    }

    /// The AMI family a node's `status.nodeInfo.osImage` names, when it is one of the three.
    fn of_os_image(os: &str) -> Option<AmiFamily> {
        if os.starts_with("Amazon Linux 2023") {
            Some(AmiFamily::Al2023)
        } else if os.starts_with("Amazon Linux 2") {
            Some(AmiFamily::Al2)
        } else if os.starts_with("Bottlerocket") {
            Some(AmiFamily::Bottlerocket)
        } else {
            None
        }
    }

    /// The exact kubelet max-pods setting, in the family's own words.
    pub fn setting(self, cluster: &str, n: u32) -> String {
        match self {
            AmiFamily::Al2 => format!(
                "/etc/eks/bootstrap.sh {cluster} --use-max-pods false --kubelet-extra-args '--max-pods={n}'"
            ),
            AmiFamily::Al2023 => {
                format!("NodeConfig spec.kubelet.maxPodsExpression: \"{n}\"")
            }
            AmiFamily::Bottlerocket => format!("settings.kubernetes.max-pods = {n}"),
        }
    }

    /// Whether the AMI's kubeReserved memory follows the new value (AL2 keeps reserving for
    /// the ENI-derived value even with `--use-max-pods false`).
    fn reserve_follows(self) -> bool {
        !matches!(self, AmiFamily::Al2)
    }
}

/// Builds the plan, or every reason it cannot be built.
pub fn build(input: &PlanInput) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let a = &input.addresses;
    let target = match input.max_pods {
        Some(0) => {
            errors.push("--max-pods 0 would let no pod run; pass e.g. --max-pods 110".into());
            0
        }
        Some(n) if n > a.pod_addresses => {
            errors.push(format!(
                "--max-pods {n} is more than the {} pod addresses of a /{} node subnet: pods past {} would fail in host-local (no IP addresses available); pass --max-pods {} or less, or a smaller --subnet-len",
                a.pod_addresses, a.subnet_len, a.pod_addresses, a.pod_addresses
            ));
            0
        }
        Some(n) => n,
        None => KUBELET_DEFAULT_MAX_PODS.min(a.pod_addresses),
    };

    let ec2_nodes: Vec<&Node> = input
        .nodes
        .iter()
        .flatten()
        .filter(|n| !is_skipped(n))
        .collect();
    if ec2_nodes.len() as u64 > a.node_subnets {
        errors.push(format!(
            "--pod-cidr {} with --subnet-len {} has {} node subnets, but --nodes-json lists {} EC2 nodes: the rest would get no lease; pass a larger --pod-cidr (e.g. /{}) or a longer --subnet-len (fewer pod addresses per node)",
            a.pod,
            a.subnet_len,
            a.node_subnets,
            ec2_nodes.len(),
            a.pod.prefix_len().saturating_sub(1)
        ));
    }

    let rows = match type_rows(input, &ec2_nodes, target) {
        Ok(rows) => rows,
        Err(mut e) => {
            errors.append(&mut e);
            Vec::new()
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    let (endpoints, placeholders) = match &input.etcd_endpoints {
        Some(e) => (e.clone(), false),
        None => (
            (0..3)
                .map(|i| format!("https://<etcd{i}-ip>:2379"))
                .collect(),
            true,
        ),
    };
    let ctx = Ctx {
        input,
        target,
        endpoints,
        ec2_nodes,
        backends: backends(input),
    };
    let plan = Plan {
        cluster: ClusterSummary {
            name: input.cluster.clone(),
            region: input.region.clone(),
            ami_family: input.ami.name(),
            etcd_endpoints: ctx.endpoints.clone(),
            etcd_endpoints_are_placeholders: placeholders,
        },
        addresses: Addresses {
            pod_cidr: a.pod.to_string(),
            subnet_len: a.subnet_len,
            node_subnets: a.node_subnets,
            pod_addresses_per_node: a.pod_addresses,
            service_cidr: a.service.to_string(),
            service_cidr_assumed: a.service_assumed,
            vpc_cidrs: a.vpc.iter().map(ToString::to_string).collect(),
            peered_cidrs: a.peered.iter().map(ToString::to_string).collect(),
            network_config: a.config_json.clone(),
        },
        max_pods: MaxPods {
            target,
            target_from_flag: input.max_pods.is_some(),
            setting: input.ami.setting(&input.cluster, target),
            instance_types: rows.clone(),
        },
        nodes: ctx.nodes_summary(),
        control_plane_access: ControlPlaneAccess {
            webhooks_checked: input.webhooks.is_some(),
            api_services_checked: input.api_services.is_some(),
            backends: ctx.backends.clone(),
            unaffected: unaffected(input),
        },
        warnings: ctx.warnings(&rows),
        steps: ctx.steps(&rows),
    };
    Ok(plan)
}

fn is_skipped(n: &Node) -> bool {
    n.compute_type
        .as_deref()
        .is_some_and(|c| SKIPPED_COMPUTE_TYPES.contains(&c))
}

/// The instance types to plan for, in order: `--instance-types`, then the types of the EC2
/// nodes, else every type of `--instance-types-json`.
fn wanted_types(input: &PlanInput, nodes: &[&Node]) -> Vec<(String, &'static str)> {
    fn push(out: &mut Vec<(String, &'static str)>, t: &str, from: &'static str) {
        let t = t.trim().to_ascii_lowercase();
        if !t.is_empty() && !out.iter().any(|(have, _)| *have == t) {
            out.push((t, from));
        }
    }
    let mut out = Vec::new();
    for t in &input.instance_types {
        push(&mut out, t, "--instance-types");
    }
    for n in nodes {
        if let Some(t) = &n.instance_type {
            push(&mut out, t, "--nodes-json");
        }
    }
    if out.is_empty()
        && let Some((_, described)) = &input.described
    {
        for t in described {
            push(&mut out, &t.name, "--instance-types-json");
        }
    }
    out
}

fn type_rows(input: &PlanInput, nodes: &[&Node], target: u32) -> Result<Vec<TypeRow>, Vec<String>> {
    let a = &input.addresses;
    let wanted = wanted_types(input, nodes);
    if wanted.is_empty() {
        return Err(vec![
            "no instance type to plan for: --nodes-json has no EC2 node with a node.kubernetes.io/instance-type label; pass --instance-types, e.g. --instance-types m5.large,t3.small".into(),
        ]);
    }
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    for (name, from) in wanted {
        let described = input
            .described
            .as_ref()
            .and_then(|(_, d)| d.iter().find(|t| t.name.eq_ignore_ascii_case(&name)));
        let table = max_pods::lookup(&name);
        let (limits, source): (EniLimits, &'static str) = match (described, table) {
            (Some(d), _) => (d.limits, "--instance-types-json"),
            (None, Some(r)) => (r.limits, "embedded table"),
            (None, None) => {
                errors.push(unknown_type(input, &name, from, nodes));
                continue;
            }
        };
        let eni = limits.eni_max_pods();
        let of_type: Vec<&&Node> = nodes
            .iter()
            .filter(|n| {
                n.instance_type
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(&name))
            })
            .collect();
        let current: BTreeSet<u32> = of_type.iter().filter_map(|n| n.capacity_pods).collect();
        let memory_mib = described
            .and_then(|d| d.memory_mib)
            .or_else(|| of_type.iter().filter_map(|n| n.memory_mib).min());
        rows.push(TypeRow {
            instance_type: name,
            source,
            enis: limits.enis,
            ipv4_per_eni: limits.ipv4_per_eni,
            eni_max_pods: eni,
            table_max_pods: table.map(|r| r.default_max_pods),
            current_max_pods: current.into_iter().collect(),
            nodes: of_type.len(),
            overlay_max_pods: a.pod_addresses,
            target_max_pods: target,
            change: Change::of(eni, target, a.pod_addresses).label(),
            kube_reserved_mib_before: max_pods::kube_reserved_mib(eni),
            kube_reserved_mib_after: max_pods::kube_reserved_mib(if input.ami.reserve_follows() {
                target
            } else {
                eni
            }),
            memory_mib,
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

fn unknown_type(input: &PlanInput, name: &str, from: &str, nodes: &[&Node]) -> String {
    let origin = if from == "--nodes-json" {
        let on: Vec<&str> = nodes
            .iter()
            .filter(|n| {
                n.instance_type
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(name))
            })
            .map(|n| n.name.as_str())
            .collect();
        format!(
            "the instance type of node {} in --nodes-json",
            on.join(", ")
        )
    } else {
        "from --instance-types".to_string()
    };
    let in_json = match &input.described {
        Some((label, _)) => format!(" nor in {label}"),
        None => String::new(),
    };
    format!(
        "unknown instance type {name:?} ({origin}): it is not in weft's embedded table ({}){in_json}; pass --instance-types-json with the output of `aws ec2 describe-instance-types --region {} --instance-types {name}`",
        max_pods::known_types().join(", "),
        input.region
    )
}

/// Services the API server calls, grouped so one fix covers every webhook using it.
fn backends(input: &PlanInput) -> Vec<Backend> {
    let mut by_service: BTreeMap<ServiceRef, (Vec<String>, bool, bool)> = BTreeMap::new();
    for w in input.webhooks.iter().flatten() {
        if let WebhookTarget::Service(s) = &w.target {
            let e = by_service.entry(s.clone()).or_default();
            e.0.push(format!(
                "{} {}: webhook {} (failurePolicy {})",
                w.kind, w.configuration, w.name, w.failure_policy
            ));
            e.1 |= w.failure_policy != "Ignore";
        }
    }
    for api in input.api_services.iter().flatten() {
        if let Some(s) = &api.service {
            let e = by_service.entry(s.clone()).or_default();
            let status = match &api.available {
                Some((status, Some(reason))) => format!(" (Available {status}, {reason})"),
                Some((status, None)) => format!(" (Available {status})"),
                None => String::new(),
            };
            e.0.push(format!("APIService {}{status}", api.name));
            e.2 = true;
        }
    }
    by_service
        .into_iter()
        .map(|(s, (used_by, blocking, api))| {
            let mut impact = Vec::new();
            if blocking {
                impact.push(
                    "API requests matching its webhook rules are rejected (failurePolicy Fail)",
                );
            } else if !used_by.is_empty() && !api {
                impact.push("its webhooks are skipped silently (failurePolicy Ignore)");
            }
            if api {
                impact.push(
                    "its API group turns FailedDiscoveryCheck: kubectl top, HPA and discovery of the group fail",
                );
            }
            Backend {
                namespace: s.namespace,
                service: s.name,
                port: s.port,
                used_by,
                impact: impact.join("; "),
            }
        })
        .collect()
}

fn unaffected(input: &PlanInput) -> Vec<String> {
    input
        .webhooks
        .iter()
        .flatten()
        .filter_map(|w| match &w.target {
            WebhookTarget::Url(url) => Some(format!(
                "{} {}: webhook {} calls {url}",
                w.kind, w.configuration, w.name
            )),
            WebhookTarget::Service(_) => None,
        })
        .collect()
}

/// The plan's inputs plus what was derived from them, for building texts.
struct Ctx<'a> {
    input: &'a PlanInput,
    target: u32,
    endpoints: Vec<String>,
    ec2_nodes: Vec<&'a Node>,
    backends: Vec<Backend>,
}

impl Ctx<'_> {
    fn region(&self) -> &str {
        &self.input.region
    }

    fn cluster(&self) -> &str {
        &self.input.cluster
    }

    fn tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// The etcd flags of the weft commands run from the operator's machine.
    fn etcd_flags(&self) -> String {
        let mut s = format!("--etcd-endpoints {}", self.endpoints.join(","));
        if self.tls() {
            s.push_str(&format!(
                " --etcd-cafile {ETCD_PKI}/ca.crt --etcd-certfile {ETCD_PKI}/client.crt --etcd-keyfile {ETCD_PKI}/client.key"
            ));
        }
        s
    }

    /// `weft doctor` on every node, inside the weftd container of weft's DaemonSet, which has
    /// the host network, subnet.env, weftd's health port and the etcd Secret.
    fn doctor_loop(&self) -> String {
        let mut etcd = format!("--etcd-endpoints {}", self.endpoints.join(","));
        if self.tls() {
            etcd.push_str(
                " --etcd-cafile /etc/weft/etcd/ca.crt --etcd-certfile /etc/weft/etcd/tls.crt --etcd-keyfile /etc/weft/etcd/tls.key",
            );
        }
        // weftd's health server listens on the node IP (the manifest's --healthz-ip), and the
        // host's CNI dirs and kubelet config are mounted read-only under /host.
        format!(
            "for pod in $(kubectl -n {WEFT_NAMESPACE} get pods -l app=flannel -o name); do ip=$(kubectl -n {WEFT_NAMESPACE} get \"$pod\" -o jsonpath='{{.status.hostIP}}'); echo \"== $pod ($ip)\"; kubectl -n {WEFT_NAMESPACE} exec \"$pod\" -c weftd -- /usr/local/bin/weft doctor {etcd} --host-root /host --healthz \"http://$ip:8081\"; done"
        )
    }

    fn manifest_command(&self, cleanup: bool) -> String {
        let a = &self.input.addresses;
        let mut s = format!(
            "weft manifest --etcd-endpoints {}",
            self.endpoints.join(",")
        );
        if self.tls() {
            s.push_str(&format!(" --etcd-tls-secret {ETCD_TLS_SECRET}"));
        }
        s.push_str(&format!(
            " --network {} --subnet-len {}",
            a.pod, a.subnet_len
        ));
        if cleanup {
            s.push_str(" --cleanup-vpc-cni");
        }
        s.push_str(" | kubectl apply -f -");
        s
    }

    fn instance_ids(&self) -> String {
        let ids: Vec<String> = self.ec2_nodes.iter().map(|n| instance_id(n)).collect();
        if ids.is_empty() {
            "<instance-id>".into()
        } else {
            ids.join(",")
        }
    }

    fn managed_node_groups(&self) -> Vec<String> {
        let groups: BTreeSet<String> = self
            .ec2_nodes
            .iter()
            .filter_map(|n| n.nodegroup.clone())
            .collect();
        groups.into_iter().collect()
    }

    fn nodes_summary(&self) -> Option<NodesSummary> {
        let nodes = self.input.nodes.as_ref()?;
        Some(NodesSummary {
            total: nodes.len(),
            ec2: self
                .ec2_nodes
                .iter()
                .map(|n| NodeRow {
                    name: n.name.clone(),
                    instance_type: n.instance_type.clone(),
                    instance_id: n.instance_id.clone(),
                    node_group: n.nodegroup.clone(),
                    current_max_pods: n.capacity_pods,
                })
                .collect(),
            skipped: nodes
                .iter()
                .filter(|n| is_skipped(n))
                .map(|n| SkippedNode {
                    name: n.name.clone(),
                    compute_type: n.compute_type.clone().unwrap_or_default(),
                })
                .collect(),
            managed_node_groups: self.managed_node_groups(),
            with_pod_cidr: self
                .ec2_nodes
                .iter()
                .filter(|n| n.pod_cidr.is_some())
                .map(|n| n.name.clone())
                .collect(),
        })
    }

    fn warnings(&self, rows: &[TypeRow]) -> Vec<String> {
        let input = self.input;
        let a = &input.addresses;
        let mut w = Vec::new();
        if a.service_assumed {
            w.push(format!(
                "the service CIDR {} is assumed, not given: EKS picks 172.20.0.0/16 when the VPC's primary CIDR (taken to be the first --vpc-cidr) is inside 10.0.0.0/8 and 10.100.0.0/16 otherwise, unless the cluster was created with its own; confirm it with the first preflight command and pass --service-cidr",
                a.service
            ));
        }
        match &input.etcd_endpoints {
            None => w.push(
                "--etcd-endpoints was not given: the commands carry https://<etcdN-ip>:2379 placeholders; choose the members' private IPs (step etcd) and re-run the plan with --etcd-endpoints".into(),
            ),
            Some(e) if e.iter().any(|e| e.starts_with("http://")) => w.push(
                "--etcd-endpoints uses plain http: the leases and the network config cross the network unencrypted and etcd accepts anyone who reaches it (the original procedure's open door); prefer the 3-member TLS cluster of step etcd".into(),
            ),
            Some(_) => {}
        }
        match &input.network_policies {
            None => w.push(
                "--network-policies-json was not given: NetworkPolicies stop being enforced once aws-node (the VPC CNI's network policy agent) is deleted, and weft enforces none; run `kubectl get networkpolicy -A -o json > netpol.json` (step preflight) and re-run the plan with --network-policies-json netpol.json".into(),
            ),
            Some(p) if !p.is_empty() => {
                let mut names: Vec<String> =
                    p.iter().map(|n| format!("{}/{}", n.namespace, n.name)).collect();
                let more = names.len().saturating_sub(10);
                names.truncate(10);
                w.push(format!(
                    "{} NetworkPolicies ({}{}) stop being enforced when aws-node is deleted: the VPC CNI's network policy agent runs inside aws-node, and weft, like flannel, enforces no policy. Either deploy a policy engine beside weft before the deploy step (kube-network-policies, as flannel documents; or Calico in policy-only mode), or accept that these pods lose their isolation during and after the migration",
                    p.len(),
                    names.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() }
                ));
            }
            Some(_) => {}
        }
        if a.pod_addresses < KUBELET_DEFAULT_MAX_PODS && input.max_pods.is_none() {
            w.push(format!(
                "a /{} node subnet holds only {} pod addresses, so max pods is capped at {} (kubelet's default is {KUBELET_DEFAULT_MAX_PODS}); a shorter --subnet-len gives each node more",
                a.subnet_len, a.pod_addresses, self.target
            ));
        }
        for r in rows
            .iter()
            .filter(|r| r.change == Change::LowerRequired.label())
        {
            w.push(format!(
                "{}: kubelet allows {} pods today, more than the {} pod addresses of a /{} node subnet; once on weft, pods past {} would fail in host-local (no IP addresses available), so its max pods must come down to {} (step max-pods)",
                r.instance_type, r.eni_max_pods, a.pod_addresses, a.subnet_len, a.pod_addresses, self.target
            ));
        }
        for r in rows {
            if let Some(mem) = r.memory_mib
                && u64::from(r.kube_reserved_mib_after) * 2 > mem
            {
                w.push(format!(
                    "{}: at max pods {} kubelet reserves {} MiB (kubeReserved) of the node's {mem} MiB, leaving about {} MiB for pods; plan this type's node group with a lower --max-pods",
                    r.instance_type,
                    r.target_max_pods,
                    r.kube_reserved_mib_after,
                    mem.saturating_sub(u64::from(r.kube_reserved_mib_after))
                ));
            }
        }
        for r in rows {
            let odd: Vec<String> = r
                .current_max_pods
                .iter()
                .filter(|c| **c != r.eni_max_pods)
                .map(ToString::to_string)
                .collect();
            if !odd.is_empty() {
                let cn = EniLimits {
                    enis: r.enis,
                    ipv4_per_eni: r.ipv4_per_eni,
                }
                .custom_networking_max_pods();
                w.push(format!(
                    "{} nodes report max pods {} where the ENI formula gives {} (custom networking gives {cn}): custom networking, prefix delegation or an earlier override is in place; the max-pods steps replace it with {}",
                    r.instance_type,
                    odd.join(", "),
                    r.eni_max_pods,
                    self.target
                ));
            }
        }
        let groups = self.managed_node_groups();
        if !groups.is_empty() {
            w.push(format!(
                "nodes of EKS managed node groups ({}): EKS computes max pods from the ENI table and injects it regardless of your settings (with several instance types, the lowest value for all); keep a changed max pods only with a launch template that names a custom AMI ID (then EKS adds no bootstrap user data){}",
                groups.join(", "),
                if input.ami == AmiFamily::Bottlerocket {
                    ", or, on Bottlerocket, settings.kubernetes.max-pods in the launch template's user data (managed node groups apply it)"
                } else {
                    ""
                }
            ));
        }
        if let Some(nodes) = &input.nodes {
            let mut mismatched = Vec::new();
            for n in &self.ec2_nodes {
                let Some(os) = &n.os_image else { continue };
                if AmiFamily::of_os_image(os) != Some(input.ami) {
                    mismatched.push(format!("{} ({os})", n.name));
                }
            }
            if !mismatched.is_empty() {
                w.push(format!(
                    "--ami-family is {} but these nodes run another OS: {}; the max-pods commands below are for {}: plan those node groups separately with their own --ami-family",
                    input.ami.name(),
                    mismatched.join(", "),
                    input.ami.name()
                ));
            }
            let skipped: Vec<String> = nodes
                .iter()
                .filter(|n| is_skipped(n))
                .map(|n| {
                    format!(
                        "{} ({})",
                        n.name,
                        n.compute_type.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            if !skipped.is_empty() {
                w.push(format!(
                    "left out of the plan, as aws-node and weft's DaemonSet leave them: {}; Fargate pods cannot reach overlay pod IPs (overlay pods reach them through masquerading)",
                    skipped.join(", ")
                ));
            }
            let unlabeled: Vec<&str> = self
                .ec2_nodes
                .iter()
                .filter(|n| n.instance_type.is_none())
                .map(|n| n.name.as_str())
                .collect();
            if !unlabeled.is_empty() {
                w.push(format!(
                    "no node.kubernetes.io/instance-type label on {}: their max pods is not checked",
                    unlabeled.join(", ")
                ));
            }
            for n in &self.ec2_nodes {
                if let Some(cidr) = &n.pod_cidr {
                    let inside = cidr
                        .parse::<ipnet::Ipv4Net>()
                        .is_ok_and(|c| a.pod.contains(&c));
                    w.push(format!(
                        "node {} has spec.podCIDR {cidr}{}: weftd takes its subnet from an etcd lease and ignores spec.podCIDR, so the node's pods will not use {cidr}",
                        n.name,
                        if inside {
                            format!(", inside --pod-cidr {} (a lease may be another subnet)", a.pod)
                        } else {
                            format!(", outside --pod-cidr {}", a.pod)
                        }
                    ));
                }
            }
            let used = self.ec2_nodes.len() as u64;
            if used * 2 > a.node_subnets {
                w.push(format!(
                    "{used} EC2 nodes use more than half of the {} node subnets: a lease stays taken for 24 h after its node goes away, so node replacements and scale-ups need the spare subnets; consider a larger --pod-cidr",
                    a.node_subnets
                ));
            }
        }
        if input.webhooks.is_none() {
            w.push("webhooks were not checked (no --webhooks-json): the API server cannot reach webhook pods on overlay IPs; see step control-plane-access".into());
        }
        if input.api_services.is_none() {
            w.push("APIServices were not checked (no --apiservices-json): metrics-server and other aggregated APIs break on overlay IPs; see step control-plane-access".into());
        }
        w
    }

    fn steps(&self, rows: &[TypeRow]) -> Vec<Step> {
        vec![
            self.preflight(rows),
            self.backup(),
            self.control_plane_access(),
            self.security_groups(),
            self.etcd(),
            self.network_config(),
            self.remove_aws_node(),
            self.deploy_weft(),
            self.max_pods(),
            self.roll_nodes(),
            self.ec2_cleanup(),
            self.cluster_cleanup(),
            self.post_checks(),
        ]
    }

    fn preflight(&self, rows: &[TypeRow]) -> Step {
        let (r, c) = (self.region(), self.cluster());
        let a = &self.input.addresses;
        let mut s = Step::new("preflight", "Preflight (read-only)");
        s.cmd(format!(
            "aws eks describe-cluster --region {r} --name {c} --query 'cluster.{{version: version, ipFamily: kubernetesNetworkConfig.ipFamily, serviceIpv4Cidr: kubernetesNetworkConfig.serviceIpv4Cidr, vpcId: resourcesVpcConfig.vpcId, clusterSecurityGroupId: resourcesVpcConfig.clusterSecurityGroupId}}'"
        ))
        .cmd(format!(
            "aws ec2 describe-vpcs --region {r} --vpc-ids <vpc-id> --query 'Vpcs[].CidrBlockAssociationSet[].CidrBlock' --output text"
        ))
        .cmd(format!(
            "aws eks describe-addon --region {r} --cluster-name {c} --addon-name vpc-cni --query 'addon.{{version: addonVersion, status: status}}'"
        ))
        .cmd(format!("aws eks list-nodegroups --region {r} --cluster-name {c}"))
        .cmd("kubectl -n kube-system get daemonset aws-node -o jsonpath='{.spec.template.spec.containers[0].image}{\"\\n\"}'")
        .cmd("kubectl -n kube-system get daemonset aws-node -o jsonpath='{range .spec.template.spec.containers[0].env[*]}{.name}={.value}{\"\\n\"}{end}' | grep -E '^(ENABLE_PREFIX_DELEGATION|ENABLE_POD_ENI|AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG|ENABLE_IPv6|AWS_VPC_K8S_CNI_EXTERNALSNAT)='")
        .cmd("kubectl get nodes -o wide -L node.kubernetes.io/instance-type,eks.amazonaws.com/compute-type,eks.amazonaws.com/nodegroup")
        .cmd("kubectl get nodes -o custom-columns=NAME:.metadata.name,MAXPODS:.status.allocatable.pods,PODCIDR:.spec.podCIDR")
        .cmd(CONVERSION_WEBHOOKS)
        .cmd("kubectl get services,ingresses -A -o yaml | grep -nE 'target-type: *\"?ip\"?'");
        let types: Vec<&str> = rows.iter().map(|r| r.instance_type.as_str()).collect();
        s.cmd("kubectl get nodes -o json > nodes.json")
            .cmd("kubectl get validatingwebhookconfigurations,mutatingwebhookconfigurations -o json > webhooks.json")
            .cmd("kubectl get apiservices -o json > apiservices.json")
            .cmd("kubectl get networkpolicy -A -o json > netpol.json")
            .cmd(format!(
                "aws ec2 describe-instance-types --region {r} --instance-types {} > instance-types.json",
                types.join(" ")
            ));
        s.note("Stop if ipFamily is ipv6: weft's overlay is IPv4 only.")
            .note(format!(
                "serviceIpv4Cidr must be {}{}, and every VPC CIDR (secondary and 100.64.0.0/10 custom-networking ranges too) must be among --vpc-cidr {}; otherwise re-run the plan with the real values.",
                a.service,
                if a.service_assumed { " (assumed here)" } else { "" },
                join_or_none(&a.vpc)
            ))
            .note("An aws-node image tag below v1.23 dials ipamd on 127.0.0.1:50051; v1.23 and later use unix:///var/run/aws-node/ipamd.sock and, on nf_tables hosts, a native `table ip aws-cni`. weft's cleanup handles both.")
            .note("ENABLE_PREFIX_DELEGATION=true: nodes hold /28 prefixes that step ec2-cleanup releases. ENABLE_POD_ENI=true (security groups for pods): branch-ENI pods lose their security groups on an overlay, so move them off first. AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true: ENIConfigs exist (deleted in step cluster-cleanup). ENABLE_IPv6=true: stop.")
            .note("CRDs listed by the conversion-webhook query need the same host-network fix as admission webhooks (step control-plane-access). Services and Ingresses with target-type ip (AWS Load Balancer Controller IP mode) need VPC-routable pod IPs: switch them to instance targets before the switch.");
        match &self.input.nodes {
            Some(_) => {
                let without = self
                    .ec2_nodes
                    .iter()
                    .filter(|n| n.pod_cidr.is_none())
                    .count();
                s.note(format!(
                    "{without} of the {} EC2 nodes have no spec.podCIDR, as always on EKS: stock flannel's kube subnet manager fails there with `Error registering network: failed to acquire lease: node pod cidr not assigned` (E1). weft keeps its subnet leases in etcd and does not need it.",
                    self.ec2_nodes.len()
                ));
            }
            None => {
                s.note("EKS never sets spec.podCIDR, so stock flannel's kube subnet manager fails with `failed to acquire lease: node pod cidr not assigned` (E1); weft keeps its leases in etcd instead.");
            }
        }
        if self.input.nodes.is_none()
            || self.input.webhooks.is_none()
            || self.input.api_services.is_none()
        {
            s.note("The last four commands save what this plan can read: re-run `weft eks plan` with --nodes-json nodes.json --webhooks-json webhooks.json --apiservices-json apiservices.json (and --instance-types-json instance-types.json for types outside the embedded table) to fill in node names, instance IDs and the Services to move.");
        }
        s
    }

    fn backup(&self) -> Step {
        let (r, c) = (self.region(), self.cluster());
        let mut s = Step::new("backup", "Back up the VPC CNI's objects");
        s.cmd("kubectl get ds aws-node -n kube-system -o yaml > aws-node-backup.yaml")
            .cmd("kubectl -n kube-system get configmap amazon-vpc-cni -o yaml > amazon-vpc-cni-backup.yaml")
            .cmd("kubectl -n kube-system get serviceaccount aws-node -o yaml > aws-node-serviceaccount-backup.yaml")
            .cmd("kubectl get clusterrole,clusterrolebinding aws-node -o yaml > aws-node-rbac-backup.yaml")
            .cmd("kubectl get crd eniconfigs.crd.k8s.amazonaws.com -o yaml > eniconfigs-crd-backup.yaml")
            .cmd("kubectl get eniconfigs.crd.k8s.amazonaws.com -o yaml > eniconfigs-backup.yaml")
            .cmd(format!(
                "aws eks describe-addon --region {r} --cluster-name {c} --addon-name vpc-cni > vpc-cni-addon-backup.json"
            ));
        s.note("Errors for objects that do not exist are fine (no ENIConfig CRD without custom networking; no add-on when aws-node is self-managed).")
            .note(format!(
                "Rollback: delete weft's DaemonSet (`kubectl -n {WEFT_NAMESPACE} delete daemonset {WEFT_DAEMONSET}`), then restore aws-node: for the EKS add-on `aws eks create-addon --region {r} --cluster-name {c} --addon-name vpc-cni --addon-version <version from vpc-cni-addon-backup.json>`; otherwise remove metadata.resourceVersion, uid, creationTimestamp and status from the backups and `kubectl create -f` them. Then recreate the pods node by node."
            ));
        s
    }

    fn control_plane_access(&self) -> Step {
        let r = self.region();
        let mut s = Step::new(
            "control-plane-access",
            "Move what the API server calls onto the host network (before the switch)",
        );
        s.note("The EKS control plane runs outside the cluster and cannot route to overlay pod IPs: webhooks, aggregated APIs (APIService) and CRD conversion webhooks served by pods break once those pods move to the overlay. Pods with hostNetwork: true keep the node's VPC IP under either CNI, so moving them now keeps them reachable through the whole migration.");
        if self.input.webhooks.is_none() || self.input.api_services.is_none() {
            s.cmd("kubectl get validatingwebhookconfigurations,mutatingwebhookconfigurations -o jsonpath='{range .items[*]}{.kind}{\" \"}{.metadata.name}{\": \"}{range .webhooks[*]}{.clientConfig.service.namespace}/{.clientConfig.service.name}{.clientConfig.url}{\" \"}{end}{\"\\n\"}{end}'")
                .cmd("kubectl get apiservices -o custom-columns=NAME:.metadata.name,SERVICE-NAMESPACE:.spec.service.namespace,SERVICE:.spec.service.name,AVAILABLE:.status.conditions[0].status | grep -v '<none>'");
            s.note("Not every input was given: the two commands above list the webhooks and APIServices that call a Service; each such Service needs the fix below.");
        }
        s.cmd(CONVERSION_WEBHOOKS);
        s.note("The CRDs the conversion-webhook query lists are served by a Service too: `kubectl get crd <name> -o jsonpath='{.spec.conversion.webhook.clientConfig.service}'` names it; move it like the ones below.");
        if self.backends.is_empty() {
            if self.input.webhooks.is_some() && self.input.api_services.is_some() {
                s.note("No webhook or APIService in --webhooks-json and --apiservices-json calls a Service in the cluster: nothing else to move.");
            }
        } else {
            for b in &self.backends {
                let (ns, name) = (&b.namespace, &b.service);
                let workload = format!("<deployment-behind-{name}>");
                s.cmd(format!("kubectl -n {ns} describe service {name}"))
                    .cmd(format!(
                        "kubectl -n {ns} patch deployment {workload} --type merge -p '{{\"spec\":{{\"template\":{{\"spec\":{{\"hostNetwork\":true,\"dnsPolicy\":\"ClusterFirstWithHostNet\"}}}}}}}}'"
                    ))
                    .cmd(format!(
                        "kubectl -n {ns} rollout status deployment/{workload} --timeout=5m"
                    ))
                    .cmd(format!(
                        "aws ec2 authorize-security-group-ingress --region {r} --group-id <node-sg-id> --protocol tcp --port <{name}-target-port> --source-group <cluster-sg-id>"
                    ))
                    .cmd(format!(
                        "kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={name} -o wide"
                    ));
                let mut note = format!(
                    "{ns}/{name} (port {}) serves {}. While it is unreachable, {}.",
                    b.port,
                    b.used_by.join("; "),
                    if b.impact.is_empty() {
                        "nothing the plan knows of breaks"
                    } else {
                        &b.impact
                    }
                );
                if name.contains("metrics-server") {
                    note.push_str(" Recent metrics-server manifests listen on --secure-port=10250, kubelet's port: on the host network move it first (e.g. --secure-port=4443 with containerPort and the Service's targetPort 4443).");
                }
                s.note(note);
            }
            s.note("`describe service` shows the selector and targetPort: patch the Deployment (or DaemonSet) those pods belong to, and open its targetPort on the nodes from the cluster security group (<cluster-sg-id> and <node-sg-id>: the first two commands of step security-groups). Afterwards the EndpointSlice lists node IPs instead of pod IPs.")
                .note("Before patching, make sure the port is free on the node: kubelet uses 10250, kube-proxy 10249 and 10256, weftd 8081. With hostNetwork two replicas cannot share a node; the scheduler keeps them apart when the container declares its port.")
                .note("If the workload comes from a Helm chart or an EKS add-on, set its hostNetwork and port values there instead (the next upgrade would revert a patch).");
        }
        s
    }

    fn security_groups(&self) -> Step {
        let (r, c) = (self.region(), self.cluster());
        let mut s = Step::new("security-groups", "Open the overlay and etcd ports");
        s.cmd(format!(
            "aws eks describe-cluster --region {r} --name {c} --query cluster.resourcesVpcConfig.clusterSecurityGroupId --output text"
        ))
        .cmd(format!(
            "aws ec2 describe-instances --region {r} --filters Name=tag-key,Values=kubernetes.io/cluster/{c} Name=instance-state-name,Values=running --query 'Reservations[].Instances[].[InstanceId,PrivateIpAddress,SecurityGroups[].GroupId]' --output text"
        ))
        .cmd(format!(
            "aws ec2 create-security-group --region {r} --vpc-id <vpc-id> --group-name {c}-weft-etcd --description 'weft etcd for EKS cluster {c}'"
        ))
        .cmd(format!(
            "aws ec2 authorize-security-group-ingress --region {r} --group-id <node-sg-id> --protocol udp --port 8472 --source-group <node-sg-id>"
        ))
        .cmd(format!(
            "aws ec2 authorize-security-group-ingress --region {r} --group-id <etcd-sg-id> --protocol tcp --port 2379 --source-group <node-sg-id>"
        ))
        .cmd(format!(
            "aws ec2 authorize-security-group-ingress --region {r} --group-id <etcd-sg-id> --protocol tcp --port 2380 --source-group <etcd-sg-id>"
        ))
        .cmd(format!(
            "aws ec2 authorize-security-group-ingress --region {r} --group-id <etcd-sg-id> --protocol tcp --port 2379 --cidr <operator-ip>/32"
        ));
        s.note("<cluster-sg-id> is the first command's answer; <node-sg-id> is the group the nodes share (second command); <etcd-sg-id> is what create-security-group returns.")
            .note("UDP 8472 is the VXLAN port (Linux kernel default, used by flannel and weft; not Calico's 4789) between every pair of nodes. Nodes that carry the EKS cluster security group (managed node groups by default) already pass it through that group's all-traffic self rule; self-managed nodes with their own groups need the rule above; with several node groups, repeat it for every pair of node security groups, both ways.")
            .note("TCP 2379 lets nodes (weftd) reach etcd's clients port, TCP 2380 carries etcd's peer traffic between members, and the last rule lets the machine running `weft network init` and `weft leases list` reach etcd (or run them from inside the VPC).")
            .note("VXLAN needs no change to the EC2 source/destination check: the outer packets carry node IPs. Only host-gw or DirectRouting would need it disabled.");
        s
    }

    /// Private IPs of the etcd members: the hosts of the endpoints when they are IPv4
    /// addresses, else placeholders. `weft etcd ignition` makes 1 or 3 members.
    fn etcd_member_ips(&self) -> Vec<String> {
        let members = if self.endpoints.len() == 1 { 1 } else { 3 };
        (0..members)
            .map(|i| {
                self.endpoints
                    .get(i)
                    .and_then(|e| endpoint_ip(e))
                    .unwrap_or_else(|| format!("<etcd{i}-ip>"))
            })
            .collect()
    }

    fn etcd(&self) -> Step {
        let (r, c) = (self.region(), self.cluster());
        let ips = self.etcd_member_ips();
        let mut s = Step::new(
            "etcd",
            format!("Run etcd for weft's leases ({} members, TLS)", ips.len()),
        );
        let ip_flags: Vec<String> = ips.iter().map(|ip| format!("--private-ip {ip}")).collect();
        s.cmd(format!(
            "weft etcd ignition --members {} {} --out-dir {ETCD_PKI} --network {}",
            ips.len(),
            ip_flags.join(" "),
            self.input.addresses.pod
        ));
        for (i, ip) in ips.iter().enumerate() {
            s.cmd(format!(
                "aws ec2 run-instances --region {r} --image-id <fedora-coreos-ami-id> --instance-type t3.small --count 1 --subnet-id <private-subnet-for-{ip}> --private-ip-address {ip} --security-group-ids <etcd-sg-id> --user-data file://{ETCD_PKI}/etcd{i}.ign --tag-specifications 'ResourceType=instance,Tags=[{{Key=Name,Value={c}-weft-etcd{i}}}]'"
            ));
        }
        let endpoints: Vec<String> = ips.iter().map(|ip| format!("https://{ip}:2379")).collect();
        s.cmd(format!(
            "ETCDCTL_API=3 etcdctl --endpoints {} --cacert {ETCD_PKI}/ca.crt --cert {ETCD_PKI}/client.crt --key {ETCD_PKI}/client.key endpoint health",
            endpoints.join(",")
        ));
        s.note(format!(
            "`weft etcd ignition` writes a CA, member and client certificates and one Fedora CoreOS Ignition config per member into {ETCD_PKI}/ (keep it private: it holds the keys), and prints the same launch commands. Put the members in different availability zones, on private IPs in the node VPC, in <etcd-sg-id>."
        ))
        .note("The original procedure ran a single plain-HTTP etcd on a public IP: a single point of failure and an open door. Three TLS members on private IPs survive the loss of one member or one zone.");
        if self.input.etcd_endpoints.is_none() {
            s.note("Pick the members' private IPs, then re-run this plan with --etcd-endpoints https://<ip0>:2379,https://<ip1>:2379,https://<ip2>:2379 so every command is filled in.");
        } else if self.endpoints.iter().any(|e| e.starts_with("http://")) {
            s.note("--etcd-endpoints is plain http: if that etcd already runs, this step shows how to replace it with a TLS cluster (then re-run the plan with the https endpoints).");
        }
        s
    }

    fn network_config(&self) -> Step {
        let a = &self.input.addresses;
        let flags = self.etcd_flags();
        let mut s = Step::new("network-config", "Write the network config to etcd v3");
        s.cmd(format!(
            "weft network init --network {} --subnet-len {} {flags}",
            a.pod, a.subnet_len
        ))
        .cmd(format!("weft network check {flags}"));
        s.note(format!(
            "Writes {} to /coreos.com/network/config through the etcd v3 API: {} node subnets of /{}, {} pod addresses each. A v2 `etcdctl set` would be invisible to weftd (E2 \"Key not found\", E3 \"response is invalid json\").",
            a.config_json, a.node_subnets, a.subnet_len, a.pod_addresses
        ));
        s
    }

    fn remove_aws_node(&self) -> Step {
        let (r, c) = (self.region(), self.cluster());
        let mut s = Step::new("remove-aws-node", "Remove aws-node");
        s.cmd(format!(
            "aws eks describe-addon --region {r} --cluster-name {c} --addon-name vpc-cni --query addon.addonVersion --output text"
        ))
        .cmd(format!(
            "aws eks delete-addon --region {r} --cluster-name {c} --addon-name vpc-cni"
        ))
        .cmd("kubectl -n kube-system delete daemonset aws-node --ignore-not-found")
        .cmd("kubectl -n kube-system get daemonset aws-node");
        s.note("When describe-addon answers ResourceNotFoundException, aws-node is self-managed: skip delete-addon, the kubectl delete removes it. The last command must answer NotFound.")
            .note("delete-addon without --preserve removes aws-node from the cluster. With --preserve EKS only stops managing the add-on and aws-node keeps running.")
            .note("aws-node goes before weft's DaemonSet so it cannot write 10-aws.conflist or its iptables chains back after weft's cleanup removed them (eks-vpc-cni.md §1.8). From here until weft is ready (next step) new pods fail with E4 (`dial tcp 127.0.0.1:50051: connect: connection refused`, or ipamd.sock on v1.23+); running pods keep their VPC IPs and keep working. Run the next step right away.")
            .note("EKS does not recreate a deleted aws-node DaemonSet, but re-adding the add-on, EKS add-on updates and `eksctl utils update-aws-node` bring it back: make sure nobody runs them. A non-destructive alternative to deleting is a nodeSelector no node matches: `kubectl -n kube-system patch daemonset aws-node --type strategic -p '{\"spec\":{\"template\":{\"spec\":{\"nodeSelector\":{\"weft/aws-node\":\"enabled\"}}}}}'`.");
        s
    }

    fn deploy_weft(&self) -> Step {
        let mut s = Step::new("deploy-weft", "Deploy weft with the VPC CNI cleanup");
        if self.tls() {
            s.cmd(format!(
                "kubectl create namespace {WEFT_NAMESPACE} --dry-run=client -o yaml | kubectl apply -f -"
            ))
                .cmd(format!(
                    "kubectl -n {WEFT_NAMESPACE} create secret generic {ETCD_TLS_SECRET} --from-file=ca.crt={ETCD_PKI}/ca.crt --from-file=tls.crt={ETCD_PKI}/client.crt --from-file=tls.key={ETCD_PKI}/client.key"
                ));
        }
        s.cmd(self.manifest_command(true))
            .cmd(format!(
                "kubectl -n {WEFT_NAMESPACE} rollout status daemonset/{WEFT_DAEMONSET} --timeout=15m"
            ))
            .cmd(format!(
                "kubectl -n {WEFT_NAMESPACE} logs -l app=flannel -c cleanup-vpc-cni --prefix --tail=20 --max-log-requests=100"
            ))
            .cmd(format!("weft leases list {}", self.etcd_flags()));
        s.note(format!(
            "The DaemonSet ({WEFT_DAEMONSET} in {WEFT_NAMESPACE}, kube-flannel's names) runs weftd on every EC2 Linux node and skips Fargate, hybrid and Auto Mode nodes. Its first init container runs `weft node cleanup-vpc-cni --apply` with the overlay network {}. On a node where pods with VPC addresses still run (an eni* veth with its host route), it does only what cannot cut them off: it moves 10-aws.conflist aside (which otherwise sorts before 10-flannel.conflist and sends every new pod to aws-cni: E4), removes the rules of pods already gone, puts a RETURN for {} at the top of AWS-SNAT-CHAIN-0 and adds `1535: to {} lookup main`. It keeps what those pods need: their 512/1536 ip rules, their ENI route tables, the SNAT and connmark rules and `fwmark 0x80` rule (their traffic out of the VPC), the aws-cni binaries and the VPC CNI's state; its log names each kept item and the pod that needs it (`kept because pod 10.0.x.y on eniXXXX still uses it`). On EC2 deleting them while the pods run cuts the pods off: their replies would leave through an ENI whose address they do not carry, and the source/destination check drops them. The rest goes at its next start after the node was drained (step roll-nodes). Its second init container, `weft install-cni`, copies weft-cni as `flannel` and, from the image, the static reference plugins that are missing or older: no EKS AMI has `bridge` once aws-node is gone.",
            self.input.addresses.pod, self.input.addresses.pod, self.input.addresses.pod
        ))
        .note(format!(
            "Until every node is rolled, old pods (VPC addresses) and new pods (overlay addresses, {}) reach each other both ways, on EC2 nodes that run weftd: a new pod's traffic to a VPC address is masqueraded by weftd (--ip-masq) to its node's primary IP and routed by the VPC to the old pod's ENI, which answers through its ENI's table; an old pod's traffic to the overlay goes through rule 1535 (and the VPC CNI's connmark) into flannel.1, where weftd masquerades it to the node's flannel.1 address, the SNAT exclusion keeping AWS-SNAT-CHAIN-0 from rewriting it to the primary IP first (the other node would answer that address from an overlay address straight onto the VPC, where it is dropped). Limits: each side sees the other's node address, not the pod IP; anything outside the cluster's weft nodes (VPC hosts, the control plane, Fargate pods, load balancers in IP mode) reaches overlay pods not at all, only replies come back (step control-plane-access).",
            self.input.addresses.pod
        ))
        .note("Every EC2 node should hold one lease in `weft leases list`. New pods now get overlay IPs; pods created before keep their VPC IPs until step roll-nodes recreates them.");
        s
    }

    fn max_pods(&self) -> Step {
        let (r, c, n) = (self.region(), self.cluster(), self.target);
        let a = &self.input.addresses;
        let mut s = Step::new(
            "max-pods",
            format!("Prepare the max-pods change to {n} (E5)"),
        );
        match self.input.ami {
            AmiFamily::Al2023 => {
                s.cmd(format!(
                    "cat > weft-max-pods-nodeconfig.yaml <<'EOF'\n---\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    maxPodsExpression: \"{n}\"\nEOF"
                ))
                .cmd(format!(
                    "cat > weft-node-ssm.json <<'EOF'\n{{\"commands\": [\n  \"mkdir -p /etc/eks/nodeadm.d\",\n  \"printf '%s\\\\n' 'apiVersion: node.eks.aws/v1alpha1' 'kind: NodeConfig' 'spec:' '  kubelet:' '    maxPodsExpression: \\\"{n}\\\"' > /etc/eks/nodeadm.d/60-weft-max-pods.yaml\",\n  \"exit 194\"\n]}}\nEOF"
                ));
                s.note(format!(
                    "AL2023 nodeadm regenerates kubelet's config at every boot, so the setting goes into a NodeConfig: per node into /etc/eks/nodeadm.d/ (nodeadm-run merges it at the next boot; weft-node-ssm.json writes it there in step roll-nodes), and into the launch template's user data for new nodes. maxPodsExpression makes kubeReserved follow the new value; `spec.kubelet.config.maxPods: {n}` also works (and is the way on nodeadm versions without maxPodsExpression) but keeps reserving memory for the ENI value."
                ));
            }
            AmiFamily::Al2 => {
                s.cmd(format!(
                    "cat > weft-node-ssm.json <<'EOF'\n{{\"commands\": [\n  \"jq '.maxPods = {n}' /etc/kubernetes/kubelet/kubelet-config.json > /tmp/weft-kubelet-config.json\",\n  \"mv /tmp/weft-kubelet-config.json /etc/kubernetes/kubelet/kubelet-config.json\",\n  \"if [ -f /etc/systemd/system/kubelet.service.d/30-kubelet-extra-args.conf ]; then sed -i 's/--max-pods=[0-9]*/--max-pods={n}/' /etc/systemd/system/kubelet.service.d/30-kubelet-extra-args.conf; fi\",\n  \"exit 194\"\n]}}\nEOF"
                ));
                s.note(format!(
                    "AL2's bootstrap.sh wrote maxPods into /etc/kubernetes/kubelet/kubelet-config.json at first boot; the file above rewrites it on a running node (and any --max-pods in KUBELET_EXTRA_ARGS, which wins over the file). For new nodes the launch template's user data must call `/etc/eks/bootstrap.sh {c} --use-max-pods false --kubelet-extra-args '--max-pods={n}'`: without --use-max-pods false bootstrap.sh writes the ENI value again."
                ))
                .note("AL2 keeps reserving kubelet memory for the ENI-derived value (kubeReserved = 11 MiB x max pods + 255 MiB) even with --use-max-pods false. AL2 AMIs are no longer published (since 2025-11-26): plan the move to AL2023.");
            }
            AmiFamily::Bottlerocket => {
                s.cmd(format!(
                    "cat > weft-node-ssm.json <<'EOF'\n{{\"commands\": [\n  \"apiclient set kubernetes.max-pods={n}\",\n  \"apiclient reboot\"\n]}}\nEOF"
                ))
                .cmd(format!(
                    "cat > weft-max-pods-user-data.toml <<'EOF'\n[settings.kubernetes]\nmax-pods = {n}\nEOF"
                ));
                s.note("Bottlerocket computes settings.kubernetes.max-pods from its ENI table; `apiclient set` (through SSM in the control container) changes it on a running node, and the TOML above goes into the launch template's user data for new nodes.");
            }
        }
        // Karpenter launches nodes from an EC2NodeClass, not from the node group's launch
        // template, and sets kubelet's max pods from it.
        s.cmd("kubectl get ec2nodeclasses -o custom-columns=NAME:.metadata.name,MAXPODS:.spec.kubelet.maxPods")
            .cmd(format!(
                "kubectl patch ec2nodeclass <ec2nodeclass-name> --type merge -p '{{\"spec\":{{\"kubelet\":{{\"maxPods\":{n}}}}}}}'"
            ));
        s.note(format!(
            "Karpenter nodes (if the cluster runs Karpenter) take max pods from EC2NodeClass `spec.kubelet.maxPods` (Karpenter v1; before v1 it was the NodePool's `spec.template.spec.kubelet.maxPods`), not from a launch template: patch every EC2NodeClass to {n}. Karpenter treats the change as drift and replaces those nodes on its own schedule (its disruption budgets), which replaces rather than reboots them; set it in the same maintenance window as step roll-nodes, or pause disruption (`spec.disruption.budgets: [{{nodes: \"0\"}}]` on the NodePools) until then."
        ));
        s.cmd(format!(
            "aws ec2 describe-launch-template-versions --region {r} --launch-template-id <launch-template-id> --versions '$Latest' --query 'LaunchTemplateVersions[0].LaunchTemplateData.UserData' --output text | base64 -d > user-data.txt"
        ))
        .cmd(format!(
            "aws ec2 create-launch-template-version --region {r} --launch-template-id <launch-template-id> --source-version '$Latest' --launch-template-data \"{{\\\"UserData\\\":\\\"$(base64 -w0 user-data.txt)\\\"}}\""
        ))
        .cmd(format!(
            "aws autoscaling update-auto-scaling-group --region {r} --auto-scaling-group-name <asg-name> --launch-template 'LaunchTemplateId=<launch-template-id>,Version=$Latest'"
        ));
        s.note(format!(
            "Edit user-data.txt between the two launch-template commands: {}. update-auto-scaling-group makes self-managed groups launch new nodes with it and leaves running nodes alone.",
            match self.input.ami {
                AmiFamily::Al2023 => "add weft-max-pods-nodeconfig.yaml as one more MIME part with Content-Type: application/node.eks.aws".to_string(),
                AmiFamily::Al2 => format!("replace the bootstrap.sh line by `/etc/eks/bootstrap.sh {c} --use-max-pods false --kubelet-extra-args '--max-pods={n}'`"),
                AmiFamily::Bottlerocket => "merge weft-max-pods-user-data.toml into the TOML".to_string(),
            }
        ))
        .note(format!(
            "EKS managed node groups compute max pods themselves and inject it regardless of these settings (with several instance types, the lowest value for all). Keep {n} there only with a launch template that names a custom AMI ID, so EKS adds no bootstrap user data{}. Changing a managed group's launch template version (`aws eks update-nodegroup-version`) replaces its nodes: do that at the next planned rotation, not now.",
            if self.input.ami == AmiFamily::Bottlerocket { "; for Bottlerocket, managed node groups do apply settings.kubernetes.max-pods from your user data" } else { "" }
        ))
        .note(format!(
            "{n} is {}; a /{} node subnet holds {} pod addresses. The max-pods table above shows, per instance type, the ENI value kubelet enforces today and the change. kubeReserved memory grows by 11 MiB per pod ({} MiB at {n}), which is a lot on a 2 GiB t3.small: pass a lower --max-pods for small instance types if needed.",
            if self.input.max_pods.is_some() { "the --max-pods value".to_string() } else { format!("kubelet's default and the usual per-node guidance (at most the subnet's {})", a.pod_addresses) },
            a.subnet_len,
            a.pod_addresses,
            max_pods::kube_reserved_mib(n)
        ))
        .note("Nothing here touches a node yet: step roll-nodes sends weft-node-ssm.json to one node at a time (SSM Run Command needs the SSM agent, present on the EKS AMIs, and AmazonSSMManagedInstanceCore on the node role; otherwise run the same commands as root over SSH). `exit 194` asks the SSM agent to reboot the node.");
        s
    }

    fn roll_nodes(&self) -> Step {
        let r = self.region();
        let a = &self.input.addresses;
        let mut s = Step::new(
            "roll-nodes",
            "Recreate the pods node by node, with the max-pods change (nodes stay)",
        );
        let nodes: Vec<(String, String)> = if self.ec2_nodes.is_empty() {
            vec![("<node-name>".into(), "<instance-id>".into())]
        } else {
            self.ec2_nodes
                .iter()
                .map(|n| (n.name.clone(), instance_id(n)))
                .collect()
        };
        for (node, id) in &nodes {
            s.cmd(format!("kubectl cordon {node}"))
                .cmd(format!(
                    "kubectl drain {node} --ignore-daemonsets --delete-emptydir-data --timeout=15m"
                ))
                .cmd(format!(
                    "kubectl get pods -A --field-selector spec.nodeName={node} -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name,HOSTNET:.spec.hostNetwork --no-headers | awk '$3 != \"true\" && $1 != \"{WEFT_NAMESPACE}\" {{print $1, $2}}' | while read -r ns pod; do kubectl -n \"$ns\" delete pod \"$pod\"; done"
                ))
                .cmd(format!(
                    "aws ssm send-command --region {r} --instance-ids {id} --document-name AWS-RunShellScript --comment 'weft: max pods {} and reboot' --parameters file://weft-node-ssm.json",
                    self.target
                ))
                .cmd(format!(
                    "kubectl wait --for=condition=Ready=false node/{node} --timeout=10m"
                ))
                .cmd(format!("kubectl wait --for=condition=Ready node/{node} --timeout=15m"))
                .cmd(format!("kubectl uncordon {node}"))
                .cmd(format!(
                    "kubectl -n {WEFT_NAMESPACE} get pods -l app=flannel --field-selector spec.nodeName={node} -o name | xargs -r kubectl -n {WEFT_NAMESPACE} logs -c cleanup-vpc-cni"
                ))
                .cmd(format!(
                    "kubectl get node {node} -o jsonpath='{{.status.allocatable.pods}}{{\"\\n\"}}'"
                ))
                .cmd(format!(
                    "kubectl get pods -A -o wide --field-selector spec.nodeName={node}"
                ));
        }
        s.note(format!(
            "One node at a time: drain evicts its pods (respecting PodDisruptionBudgets) so they start elsewhere with overlay IPs; the next command deletes the pods drain leaves (DaemonSet pods other than weft's), so no pod with a VPC address is left on the node. The reboot applies the new max pods, and weft's cleanup init container runs again at start: with no VPC pod left it removes the rest (per-pod ip rules, ENI tables 2.., SNAT and connmark rules, the aws-cni binaries and state). Its log must end with `done: a second look finds nothing of the VPC CNI left on this node`. Every pod the node runs afterwards gets an overlay IP from {}. allocatable.pods must show {} before the next node.",
            a.pod, self.target
        ))
        .note("The node is not replaced: it keeps its instance, volumes and IP.");
        if !self.managed_node_groups().is_empty() {
            s.note(format!(
                "Nodes of managed node groups ({}) also get max pods from EKS's own user data: if allocatable.pods still shows the ENI value after the reboot, the node keeps it until its group uses a launch template with a custom AMI ID (step max-pods); the pods still move to the overlay.",
                self.managed_node_groups().join(", ")
            ));
        }
        s.note(format!("If a node cannot reboot now: after the drain and the pod deletion, delete weft's pod on it instead (`kubectl -n {WEFT_NAMESPACE} delete pod -l app=flannel --field-selector spec.nodeName=<node>`: the DaemonSet starts it again and its cleanup init container removes the rest; restarting weftd does not disturb running traffic), check the cleanup log and uncordon it; its max pods then changes at its next reboot."));
        s.note("Never run `weft node cleanup-vpc-cni --all` on a node where pods with VPC addresses still run: it removes what they need now and, on EC2, cuts them off.");
        if self.ec2_nodes.is_empty() {
            s.note("Repeat the block for every EC2 node (`kubectl get nodes`; the instance ID is the last part of spec.providerID), or re-run the plan with --nodes-json to have it written out.");
        }
        if self.input.ami == AmiFamily::Bottlerocket {
            s.note("On Bottlerocket the SSM command runs in the control container, where apiclient is available.");
        }
        s
    }

    fn ec2_cleanup(&self) -> Step {
        let r = self.region();
        let mut s = Step::new(
            "ec2-cleanup",
            "Release the VPC addresses the VPC CNI still holds",
        );
        s.cmd(format!(
            "aws ec2 describe-network-interfaces --region {r} --filters Name=attachment.instance-id,Values={} --query 'NetworkInterfaces[].{{eni: NetworkInterfaceId, instance: Attachment.InstanceId, device: Attachment.DeviceIndex, attachment: Attachment.AttachmentId, description: Description, secondaryIps: PrivateIpAddresses[?Primary==`false`].PrivateIpAddress, prefixes: Ipv4Prefixes[].Ipv4Prefix}}'",
            self.instance_ids()
        ))
        .cmd(format!(
            "aws ec2 unassign-private-ip-addresses --region {r} --network-interface-id <primary-eni-id> --private-ip-addresses <secondary-ip> <secondary-ip>"
        ))
        .cmd(format!(
            "aws ec2 unassign-private-ip-addresses --region {r} --network-interface-id <primary-eni-id> --ipv4-prefixes <prefix/28>"
        ))
        .cmd(format!(
            "aws ec2 detach-network-interface --region {r} --attachment-id <attachment-id>"
        ))
        .cmd(format!(
            "aws ec2 wait network-interface-available --region {r} --network-interface-ids <eni-id>"
        ))
        .cmd(format!(
            "aws ec2 delete-network-interface --region {r} --network-interface-id <eni-id>"
        ));
        s.note("Only for nodes already rolled: until then their old pods still use these addresses.")
            .note("On the primary ENI (device 0) unassign the secondary IPs and /28 prefixes, never its primary address. Detach and delete only ENIs whose description is aws-K8S-<instance-id>: those are the VPC CNI's. Leave trunk and branch ENIs (security groups for pods) and ENIs other services own.")
            .note("With aws-node gone nothing sweeps these any more; until released they keep using subnet addresses (a /28 per node with WARM_PREFIX_TARGET=1). Needs ec2:DescribeNetworkInterfaces, ec2:UnassignPrivateIpAddresses, ec2:DetachNetworkInterface and ec2:DeleteNetworkInterface.");
        s
    }

    fn cluster_cleanup(&self) -> Step {
        let mut s = Step::new("cluster-cleanup", "Remove the VPC CNI's cluster objects");
        s.cmd("kubectl -n kube-system delete serviceaccount aws-node --ignore-not-found")
            .cmd("kubectl delete clusterrolebinding aws-node --ignore-not-found")
            .cmd("kubectl delete clusterrole aws-node --ignore-not-found")
            .cmd("kubectl -n kube-system delete configmap amazon-vpc-cni --ignore-not-found")
            .cmd("kubectl get eniconfigs.crd.k8s.amazonaws.com")
            .cmd("kubectl delete crd eniconfigs.crd.k8s.amazonaws.com --ignore-not-found")
            .cmd(self.manifest_command(false))
            .cmd("aws iam list-attached-role-policies --role-name <node-role-name>")
            .cmd("aws iam detach-role-policy --role-name <node-role-name> --policy-arn arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy");
        s.note("Deleting the ENIConfig CRD deletes every ENIConfig (custom networking); they are in eniconfigs-backup.yaml.")
            .note("Once every node has been rolled, apply the manifest again without --cleanup-vpc-cni: the cleanup init container has nothing left to do.")
            .note("Detach AmazonEKS_CNI_Policy only from roles no VPC CNI uses any more; if aws-node used IRSA (the eks.amazonaws.com/role-arn annotation in aws-node-serviceaccount-backup.yaml), delete that role instead.");
        s
    }

    fn post_checks(&self) -> Step {
        let flags = self.etcd_flags();
        let mut s = Step::new("post-checks", "Post-checks");
        s.cmd(self.doctor_loop())
            .cmd(format!("weft network check {flags}"))
            .cmd(format!("weft leases list {flags}"))
            .cmd("kubectl get nodes -o custom-columns=NAME:.metadata.name,TYPE:.metadata.labels.node\\.kubernetes\\.io/instance-type,MAXPODS:.status.allocatable.pods")
            .cmd("kubectl get pods -A -o wide --field-selector status.phase!=Running,status.phase!=Succeeded")
            .cmd(format!(
                "kubectl -n {WEFT_NAMESPACE} logs -l app=flannel -c cleanup-vpc-cni --prefix --tail=20 --max-log-requests=100"
            ))
            .cmd("kubectl get apiservices")
            .cmd("kubectl top nodes")
            .cmd("kubectl apply -f - <<'EOF'\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: weft-check\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: weft-check\n  template:\n    metadata:\n      labels:\n        app: weft-check\n    spec:\n      containers:\n      - name: web\n        image: busybox:1.36\n        command: [\"sh\", \"-c\", \"echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp\"]\nEOF")
            .cmd("kubectl rollout status daemonset/weft-check --timeout=5m")
            .cmd("kubectl get pods -l app=weft-check -o wide")
            .cmd("for ip in $(kubectl get pods -l app=weft-check -o jsonpath='{.items[*].status.podIP}'); do for pod in $(kubectl get pods -l app=weft-check -o name); do kubectl exec \"$pod\" -- wget -q -O /dev/null -T 3 \"http://$ip:8080/\" && echo \"ok   $pod -> $ip\" || echo \"FAIL $pod -> $ip\"; done; done")
            .cmd("kubectl exec daemonset/weft-check -- nslookup kubernetes.default.svc.cluster.local")
            .cmd("kubectl exec daemonset/weft-check -- wget -q -O- -T 5 http://checkip.amazonaws.com")
            .cmd("kubectl exec daemonset/weft-check -- wget -q -O /dev/null -T 5 http://<vpc-host>:<port>/")
            .cmd("kubectl delete daemonset weft-check")
            .cmd("kubectl -n kube-system get daemonset aws-node");
        s.note("`weft doctor` runs in each node's weftd container (host network, subnet.env, the etcd Secret, weftd's health port): etcd, the network config, the lease, flannel.1, peers and masquerading. With `--host-root /host` its host-file checks read the node's CNI config, CNI plugins and kubelet config, which the container mounts read-only; `--healthz` is the pod's host IP, where the manifest binds weftd's health port.");
        s.note(format!(
            "Expect: every node holds one lease; allocatable.pods is {} on every EC2 node; no pod is stuck in ContainerCreating; the cleanup logs report nothing left on any node (no 10-aws.conflist, no AWS- iptables chains, no priority 512/1536 ip rules); every APIService is Available; every pod pair answers `ok` (pod to pod across nodes and zones); DNS resolves; pods reach the internet and VPC hosts (masqueraded to the node IP); aws-node is NotFound.",
            self.target
        ));
        if !self.backends.is_empty() {
            let list: Vec<String> = self
                .backends
                .iter()
                .map(|b| format!("{}/{}", b.namespace, b.service))
                .collect();
            s.note(format!(
                "Exercise each moved backend once ({}): e.g. create an object its webhook checks with `kubectl create --dry-run=server -f <object.yaml>`.",
                list.join(", ")
            ));
        }
        s
    }
}

/// The IPv4 host of an endpoint URL such as `https://10.0.1.10:2379`.
fn endpoint_ip(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.split(['/', ':']).next()?;
    host.parse::<std::net::Ipv4Addr>()
        .ok()
        .map(|ip| ip.to_string())
}

fn instance_id(n: &Node) -> String {
    n.instance_id
        .clone()
        .unwrap_or_else(|| format!("<instance-id-of-{}>", n.name))
}

fn join_or_none(nets: &[ipnet::Ipv4Net]) -> String {
    if nets.is_empty() {
        "(none)".into()
    } else {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eks::addresses::{self, AddressFlags};
    use crate::eks::inputs::ServiceRef;

    fn input(types: &[&str]) -> PlanInput {
        let vpc = vec!["10.0.0.0/16".to_string()];
        PlanInput {
            cluster: "prod".into(),
            region: "us-east-1".into(),
            ami: AmiFamily::Al2023,
            addresses: addresses::plan(&AddressFlags {
                pod_cidr: "10.244.0.0/16",
                subnet_len: 24,
                service_cidr: Some("172.20.0.0/16"),
                vpc_cidrs: &vpc,
                peered_cidrs: &[],
            })
            .unwrap(),
            etcd_endpoints: Some(vec!["https://10.0.1.10:2379".into()]),
            instance_types: types.iter().map(ToString::to_string).collect(),
            described: None,
            nodes: None,
            webhooks: Some(Vec::new()),
            api_services: Some(Vec::new()),
            network_policies: Some(Vec::new()),
            max_pods: None,
        }
    }

    fn node(name: &str, t: &str, pods: u32) -> Node {
        Node {
            name: name.into(),
            instance_type: Some(t.into()),
            compute_type: None,
            nodegroup: None,
            capacity_pods: Some(pods),
            pod_cidr: None,
            instance_id: Some(format!("i-{name}")),
            os_image: Some("Amazon Linux 2023.7.20250414".into()),
            memory_mib: None,
        }
    }

    fn step<'a>(plan: &'a Plan, id: &str) -> &'a Step {
        plan.steps.iter().find(|s| s.id == id).unwrap()
    }

    #[test]
    fn eks_endpoint_hosts_become_member_ips() {
        assert_eq!(
            endpoint_ip("https://10.0.1.10:2379"),
            Some("10.0.1.10".into())
        );
        assert_eq!(endpoint_ip("http://10.0.1.10"), Some("10.0.1.10".into()));
        assert_eq!(endpoint_ip("https://etcd.internal:2379"), None);
        let plan = build(&input(&["m5.large"])).unwrap();
        // One endpoint: a one-member cluster (weft etcd ignition makes 1 or 3).
        assert_eq!(
            step(&plan, "etcd").commands[0],
            "weft etcd ignition --members 1 --private-ip 10.0.1.10 --out-dir etcd-pki --network 10.244.0.0/16"
        );
    }

    #[test]
    fn eks_types_from_nodes_follow_the_flag_types_once() {
        let mut i = input(&["M5.Large"]);
        i.nodes = Some(vec![
            node("a", "m5.large", 29),
            node("b", "t3.large", 35),
            node("c", "t3.large", 35),
        ]);
        let plan = build(&i).unwrap();
        let types: Vec<(&str, usize)> = plan
            .max_pods
            .instance_types
            .iter()
            .map(|r| (r.instance_type.as_str(), r.nodes))
            .collect();
        assert_eq!(types, [("m5.large", 1), ("t3.large", 2)]);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn eks_odd_current_max_pods_is_explained() {
        let mut i = input(&[]);
        i.nodes = Some(vec![node("a", "m5.large", 20)]);
        let plan = build(&i).unwrap();
        assert!(
            plan.warnings[0].starts_with(
                "m5.large nodes report max pods 20 where the ENI formula gives 29 (custom networking gives 20)"
            ),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn eks_os_pod_cidr_and_skipped_nodes_are_reported() {
        let mut i = input(&[]);
        let mut ubuntu = node("u", "m5.large", 29);
        ubuntu.os_image = Some("Ubuntu 22.04.5 LTS".into());
        let mut patched = node("p", "m5.large", 29);
        patched.pod_cidr = Some("10.244.7.0/24".into());
        let mut fargate = node("f", "m5.large", 1);
        fargate.compute_type = Some("fargate".into());
        fargate.instance_type = None;
        i.nodes = Some(vec![ubuntu, patched, fargate]);
        let plan = build(&i).unwrap();
        let w = plan.warnings.join("\n");
        assert!(
            w.contains(
                "--ami-family is al2023 but these nodes run another OS: u (Ubuntu 22.04.5 LTS)"
            ),
            "{w}"
        );
        assert!(
            w.contains("node p has spec.podCIDR 10.244.7.0/24, inside --pod-cidr 10.244.0.0/16"),
            "{w}"
        );
        assert!(
            w.contains(
                "left out of the plan, as aws-node and weft's DaemonSet leave them: f (fargate)"
            ),
            "{w}"
        );
        let nodes = plan.nodes.unwrap();
        assert_eq!(nodes.ec2.len(), 2);
        assert_eq!(nodes.with_pod_cidr, ["p"]);
    }

    #[test]
    fn eks_backends_group_webhooks_and_api_services_by_service() {
        let svc = ServiceRef {
            namespace: "kyverno".into(),
            name: "kyverno-svc".into(),
            port: 443,
        };
        let hook = |name: &str, policy: &str| Webhook {
            kind: "ValidatingWebhookConfiguration".into(),
            configuration: "kyverno-resource-validating-webhook-cfg".into(),
            name: name.into(),
            target: WebhookTarget::Service(svc.clone()),
            failure_policy: policy.into(),
        };
        let mut i = input(&["m5.large"]);
        i.webhooks = Some(vec![
            hook("validate.kyverno.svc-ignore", "Ignore"),
            hook("validate.kyverno.svc-fail", "Fail"),
            Webhook {
                kind: "MutatingWebhookConfiguration".into(),
                configuration: "pod-identity-webhook".into(),
                name: "iam-for-pods.amazonaws.com".into(),
                target: WebhookTarget::Url("https://127.0.0.1:23443/mutate".into()),
                failure_policy: "Ignore".into(),
            },
        ]);
        i.api_services = Some(vec![ApiService {
            name: "v1beta1.custom.metrics.k8s.io".into(),
            service: Some(ServiceRef {
                namespace: "monitoring".into(),
                name: "prometheus-adapter".into(),
                port: 443,
            }),
            available: Some(("False".into(), Some("FailedDiscoveryCheck".into()))),
        }]);
        let plan = build(&i).unwrap();
        let b = &plan.control_plane_access.backends;
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].service, "kyverno-svc");
        assert_eq!(b[0].used_by.len(), 2);
        assert!(b[0].impact.contains("rejected"));
        assert_eq!(
            b[1].used_by,
            ["APIService v1beta1.custom.metrics.k8s.io (Available False, FailedDiscoveryCheck)"]
        );
        assert_eq!(plan.control_plane_access.unaffected.len(), 1);
        let cmds = &step(&plan, "control-plane-access").commands;
        assert!(
            cmds.contains(&"kubectl -n monitoring describe service prometheus-adapter".to_string())
        );
        // Only Ignore webhooks: skipped silently, nothing rejected.
        i.webhooks = Some(vec![hook("only", "Ignore")]);
        i.api_services = Some(Vec::new());
        let plan = build(&i).unwrap();
        assert_eq!(
            plan.control_plane_access.backends[0].impact,
            "its webhooks are skipped silently (failurePolicy Ignore)"
        );
    }

    #[test]
    fn eks_small_node_subnets_cap_the_target() {
        let mut i = input(&["m5.large", "m5.4xlarge"]);
        let vpc = vec!["10.0.0.0/16".to_string()];
        i.addresses = addresses::plan(&AddressFlags {
            pod_cidr: "10.244.0.0/16",
            subnet_len: 26,
            service_cidr: None,
            vpc_cidrs: &vpc,
            peered_cidrs: &[],
        })
        .unwrap();
        let plan = build(&i).unwrap();
        assert_eq!(plan.max_pods.target, 61);
        let changes: Vec<&str> = plan
            .max_pods
            .instance_types
            .iter()
            .map(|r| r.change)
            .collect();
        assert_eq!(changes, ["raise", "lower (required)"]);
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.starts_with("a /26 node subnet holds only 61 pod addresses"))
        );
    }

    #[test]
    fn eks_every_step_has_commands_and_notes() {
        for ami in [AmiFamily::Al2, AmiFamily::Al2023, AmiFamily::Bottlerocket] {
            let mut i = input(&["m5.large"]);
            i.ami = ami;
            let plan = build(&i).unwrap();
            for s in &plan.steps {
                assert!(!s.commands.is_empty(), "{ami:?} {}", s.id);
                assert!(!s.notes.is_empty(), "{ami:?} {}", s.id);
            }
        }
    }

    #[test]
    fn eks_rolling_migration_keeps_vpc_pods_reachable_until_the_drain() {
        let plan = build(&input(&["m5.large"])).unwrap();
        let deploy = step(&plan, "deploy-weft").notes.join("\n");
        for want in [
            "with the overlay network 10.244.0.0/16",
            "it does only what cannot cut them off",
            "kept because pod 10.0.x.y on eniXXXX still uses it",
            "The rest goes at its next start after the node was drained",
            "reach each other both ways",
            "only replies come back",
        ] {
            assert!(
                deploy.contains(want),
                "deploy-weft lacks {want:?}:\n{deploy}"
            );
        }
        assert!(!deploy.contains("removes the VPC CNI's plugins, iptables chains"));
        let roll = step(&plan, "roll-nodes");
        let at = |needle: &str| {
            roll.commands
                .iter()
                .position(|c| c.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in {:#?}", roll.commands))
        };
        // Every VPC pod leaves the node (drain, then the DaemonSet pods drain leaves) before
        // the reboot that runs the rest of the cleanup, whose log is checked after it.
        assert!(at("kubectl drain") < at("delete pod \"$pod\""));
        assert!(at("delete pod \"$pod\"") < at("aws ssm send-command"));
        assert!(at("aws ssm send-command") < at("logs -c cleanup-vpc-cni"));
        let notes = roll.notes.join("\n");
        assert!(
            notes.contains("done: a second look finds nothing of the VPC CNI left on this node")
        );
        assert!(notes.contains("Never run `weft node cleanup-vpc-cni --all`"));
    }
}
