//! The plan as Markdown (the default) and as JSON. Pure and deterministic: the golden files
//! under tests/golden/eks/ are exactly this output.

use std::fmt::Write as _;

use super::runbook::{Plan, TypeRow};
use crate::output;

/// The plan as one pretty JSON document.
pub fn to_json(plan: &Plan) -> String {
    let mut s = output::json(plan);
    s.push('\n');
    s
}

/// Escapes text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn code_list(items: &[String]) -> String {
    if items.is_empty() {
        "none given".into()
    } else {
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn now_column(r: &TypeRow) -> String {
    if r.nodes == 0 {
        return "-".into();
    }
    let values: Vec<String> = r.current_max_pods.iter().map(ToString::to_string).collect();
    let values = if values.is_empty() {
        "?".to_string()
    } else {
        values.join(", ")
    };
    let plural = if r.nodes == 1 { "node" } else { "nodes" };
    format!("{values} ({} {plural})", r.nodes)
}

/// The plan as a Markdown runbook.
pub fn to_markdown(plan: &Plan) -> String {
    let mut m = String::new();
    let c = &plan.cluster;
    let _ = writeln!(
        m,
        "# weft eks plan: cluster `{}` in {} ({})\n",
        c.name, c.region, c.ami_family
    );
    m.push_str(
        "Generated offline by `weft eks plan` from its flags and input files; it called neither AWS nor Kubernetes. \
         Values in angle brackets, such as `<node-sg-id>`, are placeholders to fill in. \
         Run the steps in order: every step after `backup` changes the cluster or its VPC.\n\n",
    );

    if !plan.warnings.is_empty() {
        m.push_str("## Warnings\n\n");
        for w in &plan.warnings {
            let _ = writeln!(m, "- {w}");
        }
        m.push('\n');
    }

    let a = &plan.addresses;
    m.push_str("## Address plan\n\n| | |\n|---|---|\n");
    let _ = writeln!(
        m,
        "| Pod CIDR (overlay) | `{}`: {} node subnets of /{}, {} pod addresses each |",
        a.pod_cidr, a.node_subnets, a.subnet_len, a.pod_addresses_per_node
    );
    let _ = writeln!(
        m,
        "| Service CIDR | `{}`{} |",
        a.service_cidr,
        if a.service_cidr_assumed {
            " (assumed: EKS's default for this VPC)"
        } else {
            ""
        }
    );
    let _ = writeln!(m, "| VPC CIDRs | {} |", code_list(&a.vpc_cidrs));
    let _ = writeln!(
        m,
        "| Peered and on-premises CIDRs | {} |",
        code_list(&a.peered_cidrs)
    );
    m.push_str("| Overlaps | none |\n");
    let _ = writeln!(m, "| Network config | `{}` |", a.network_config);
    let _ = writeln!(
        m,
        "| etcd endpoints | `{}`{} |\n",
        c.etcd_endpoints.join(","),
        if c.etcd_endpoints_are_placeholders {
            " (placeholders)"
        } else {
            ""
        }
    );

    let mp = &plan.max_pods;
    m.push_str("## Max pods\n\n");
    let _ = writeln!(
        m,
        "Every EC2 node gets max pods **{}**. The setting for {}: `{}`.\n",
        mp.target, c.ami_family, mp.setting
    );
    m.push_str(
        "| Instance type | ENIs | IPv4/ENI | ENI max pods | Table | Now | Overlay allows | New | Change | kubeReserved MiB | Source |\n\
         |---|---:|---:|---:|---:|---|---:|---:|---|---|---|\n",
    );
    for r in &mp.instance_types {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} -> {} | {} |",
            r.instance_type,
            r.enis,
            r.ipv4_per_eni,
            r.eni_max_pods,
            r.table_max_pods
                .map_or_else(|| "-".to_string(), |v| v.to_string()),
            now_column(r),
            r.overlay_max_pods,
            r.target_max_pods,
            r.change,
            r.kube_reserved_mib_before,
            r.kube_reserved_mib_after,
            r.source
        );
    }
    let _ = writeln!(
        m,
        "\nENI max pods = ENIs x (IPv4 per ENI - 1) + 2: what the AMI wrote into kubelet, which still applies after aws-node is gone (E5). \
         Overlay allows = the addresses host-local hands out in one /{} node subnet (2^(32-{}) - 3: network, gateway and broadcast excluded). \
         kubeReserved = 11 MiB x max pods + 255 MiB.\n",
        a.subnet_len, a.subnet_len
    );

    if let Some(n) = &plan.nodes {
        m.push_str("## Nodes\n\n");
        let _ = writeln!(
            m,
            "{} nodes in --nodes-json: {} EC2 nodes to roll, {} left out.\n",
            n.total,
            n.ec2.len(),
            n.skipped.len()
        );
        if !n.ec2.is_empty() {
            m.push_str("| Node | Instance type | Instance ID | Managed node group | Max pods now |\n|---|---|---|---|---:|\n");
            for e in &n.ec2 {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} |",
                    e.name,
                    e.instance_type.as_deref().unwrap_or("?"),
                    e.instance_id.as_deref().unwrap_or("?"),
                    e.node_group.as_deref().unwrap_or("-"),
                    e.current_max_pods
                        .map_or_else(|| "?".to_string(), |v| v.to_string())
                );
            }
            m.push('\n');
        }
        for s in &n.skipped {
            let _ = writeln!(
                m,
                "- left out: {} (compute type {})",
                s.name, s.compute_type
            );
        }
        if !n.skipped.is_empty() {
            m.push('\n');
        }
    }

    let cp = &plan.control_plane_access;
    m.push_str("## What the EKS control plane must reach\n\n");
    if cp.backends.is_empty() {
        m.push_str("No Service to move in the inputs given.\n\n");
    } else {
        m.push_str("| Service | Called by | While unreachable |\n|---|---|---|\n");
        for b in &cp.backends {
            let _ = writeln!(
                m,
                "| `{}/{}:{}` | {} | {} |",
                b.namespace,
                b.service,
                b.port,
                cell(&b.used_by.join("<br>")),
                cell(&b.impact)
            );
        }
        m.push('\n');
    }
    for u in &cp.unaffected {
        let _ = writeln!(m, "- unaffected (URL outside the pod network): {u}");
    }
    if !cp.webhooks_checked {
        m.push_str("- webhooks not checked: pass --webhooks-json\n");
    }
    if !cp.api_services_checked {
        m.push_str("- APIServices not checked: pass --apiservices-json\n");
    }
    if !cp.unaffected.is_empty() || !cp.webhooks_checked || !cp.api_services_checked {
        m.push('\n');
    }

    m.push_str("## Runbook\n");
    for (i, step) in plan.steps.iter().enumerate() {
        let _ = writeln!(m, "\n### {}. {} (`{}`)\n", i + 1, step.title, step.id);
        for n in &step.notes {
            let _ = writeln!(m, "- {n}");
        }
        if !step.commands.is_empty() {
            if !step.notes.is_empty() {
                m.push('\n');
            }
            m.push_str("```sh\n");
            for c in &step.commands {
                m.push_str(c);
                m.push('\n');
            }
            m.push_str("```\n");
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_escape_pipes_and_newlines() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }

    #[test]
    fn code_lists() {
        assert_eq!(code_list(&[]), "none given");
        assert_eq!(
            code_list(&["10.0.0.0/16".into(), "10.1.0.0/16".into()]),
            "`10.0.0.0/16`, `10.1.0.0/16`"
        );
    }
}
