//! `weft eks plan`: the offline EKS migration runbook (no root, no network, no cluster).
//!
//! The Markdown and JSON runbooks for the fixtures under tests/fixtures/eks/ (modelled on real
//! `kubectl ... -o json` and `aws ec2 describe-instance-types` output) are compared exactly
//! with tests/golden/eks/; after an intended change rewrite them with
//!
//!     UPDATE_EXPECT=1 cargo test -p weft --test eks_plan
//!
//! and review the diff. Every error path has a message test: what the user sees must name the
//! flag, the value (or file and JSON path) and the fix.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::{EKS_REQUIRED, Run, eks_m5_args_with};

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self}");
        assert_eq!(self.stderr, "", "{self}");
        self
    }

    /// A plan error: exit 1 and one `weft: ...` message on stderr, nothing on stdout.
    fn fails(self) -> Run {
        assert_eq!(self.code, 1, "{self}");
        assert_eq!(self.stdout, "", "{self}");
        assert!(self.stderr.starts_with("weft: "), "{self}");
        self
    }

    /// A clap usage error: exit 2.
    fn usage_error(self) -> Run {
        assert_eq!(self.code, 2, "{self}");
        self
    }

    fn says(self, text: &str) -> Run {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}:\n{self}");
        self
    }
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    format!("tests/fixtures/eks/{name}")
}

/// `weft eks plan <args>` run from the crate directory (fixture paths are relative to it).
fn plan_with_stdin(args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.current_dir(crate_dir())
        .args(["eks", "plan"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run weft");
    if let Some(input) = stdin {
        // weft may refuse its flags and exit before reading stdin: a broken pipe is then the
        // expected end of this write, and the exit status and stderr say the rest.
        let written = child.stdin.take().unwrap().write_all(input.as_bytes());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    Run::from(child.wait_with_output().unwrap())
}

fn plan(args: &[&str]) -> Run {
    plan_with_stdin(args, None)
}

/// The required flags of a small plan, plus `extra`.
fn base(extra: &[&str]) -> Vec<String> {
    EKS_REQUIRED
        .iter()
        .chain(extra)
        .map(ToString::to_string)
        .collect()
}

fn plan_args(args: &[String]) -> Run {
    plan(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn plan_base(extra: &[&str]) -> Run {
    plan_args(&base(extra))
}

/// `plan_base` of one m5.large, plus `extra`.
fn plan_m5(extra: &[&str]) -> Run {
    plan_base(&[&["--instance-types", "m5.large"], extra].concat())
}

/// The golden runbook's flags: AL2023, m5.large and t3.small, the three kubectl fixtures.
fn golden_args(output: &str) -> Vec<String> {
    let nodes = fixture("nodes.json");
    let webhooks = fixture("webhooks.json");
    let apis = fixture("apiservices.json");
    let netpol = fixture("netpol.json");
    base(&[
        "--instance-types",
        "m5.large,t3.small",
        "--etcd-endpoints",
        "https://10.0.1.10:2379,https://10.0.2.10:2379,https://10.0.3.10:2379",
        "--nodes-json",
        &nodes,
        "--webhooks-json",
        &webhooks,
        "--apiservices-json",
        &apis,
        "--network-policies-json",
        &netpol,
        "--output",
        output,
    ])
}

fn golden(name: &str, actual: &str) {
    expect_test::expect_file![crate_dir().join("tests/golden/eks").join(name)].assert_eq(actual);
}

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// Golden runbooks

#[test]
fn golden_markdown_runbook() {
    let run = plan_args(&golden_args("markdown")).ok();
    golden("plan-al2023.md", &run.stdout);
}

#[test]
fn golden_json_runbook() {
    let run = plan_args(&golden_args("json")).ok();
    golden("plan-al2023.json", &run.stdout);

    // The structure a tool relies on.
    let v = run.json();
    let steps = v["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["id"].is_string()
        && s["title"].is_string()
        && s["commands"].is_array()
        && s["notes"].is_array()));
    let types: Vec<(&str, u64, u64, &str)> = v["max_pods"]["instance_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["instance_type"].as_str().unwrap(),
                t["eni_max_pods"].as_u64().unwrap(),
                t["target_max_pods"].as_u64().unwrap(),
                t["change"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("m5.large", 29, 110, "raise"),
            ("t3.small", 11, 110, "raise")
        ]
    );
    let backends: Vec<&str> = v["control_plane_access"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        backends,
        [
            "cert-manager-webhook",
            "aws-load-balancer-webhook-service",
            "metrics-server"
        ]
    );
    assert_eq!(v["nodes"]["skipped"][0]["compute_type"], "fargate");
}

#[test]
fn markdown_is_the_default_and_text_an_alias() {
    let mut args = golden_args("markdown");
    args.truncate(args.len() - 2);
    let default = plan_args(&args).ok();
    args.extend(["-o".to_string(), "text".to_string()]);
    let text = plan_args(&args).ok();
    assert_eq!(default.stdout, text.stdout);
    assert!(
        default
            .stdout
            .starts_with("# weft eks plan: cluster `prod` in us-east-1 (al2023)")
    );
}

// ---------------------------------------------------------------------------------------------
// What the runbook says for each AMI family and input

#[test]
fn al2_runbook_uses_bootstrap_flags_and_keeps_the_eni_reserve() {
    let run = plan(&[
        "--cluster-name",
        "legacy",
        "--region",
        "eu-west-1",
        "--ami-family",
        "al2",
        "--vpc-cidr",
        "192.168.0.0/16",
        "--instance-types",
        "t3.medium",
        "-o",
        "json",
    ])
    .ok();
    let v = run.json();
    assert_eq!(
        v["max_pods"]["setting"],
        "/etc/eks/bootstrap.sh legacy --use-max-pods false --kubelet-extra-args '--max-pods=110'"
    );
    // AL2 keeps reserving memory for the ENI value (17 pods: 11*17+255).
    assert_eq!(
        v["max_pods"]["instance_types"][0]["kube_reserved_mib_after"],
        442
    );
    // A VPC outside 10/8: EKS's default service CIDR is 10.100.0.0/16.
    assert_eq!(v["addresses"]["service_cidr"], "10.100.0.0/16");
    let text = v.to_string();
    assert!(text.contains("jq '.maxPods = 110' /etc/kubernetes/kubelet/kubelet-config.json"));
}

#[test]
fn bottlerocket_runbook_uses_apiclient_and_settings() {
    let run = plan(&[
        "--cluster-name",
        "br",
        "--region",
        "us-west-2",
        "--ami-family",
        "bottlerocket",
        "--vpc-cidr",
        "10.20.0.0/16",
        "--instance-types",
        "c5.xlarge",
        "--max-pods",
        "200",
    ])
    .ok();
    assert!(run.stdout.contains("`settings.kubernetes.max-pods = 200`"));
    assert!(
        run.stdout
            .contains("\"apiclient set kubernetes.max-pods=200\"")
    );
    assert!(
        run.stdout
            .contains("[settings.kubernetes]\nmax-pods = 200\n")
    );
    assert!(run.stdout.contains(
        "| c5.xlarge | 4 | 15 | 58 | 58 | - | 253 | 200 | raise | 893 -> 2455 | embedded table |"
    ));
}

#[test]
fn instance_types_json_covers_types_outside_the_table() {
    // m6a.large is not in the embedded table; c6in.32xlarge has two network cards and only
    // card 0's 8 ENIs count: 8 * 49 + 2 = 394 pods, more than a /24 holds.
    let types = fixture("instance-types.json");
    let run = plan_base(&["--instance-types-json", &types, "-o", "json"]).ok();
    let v = run.json();
    let rows = v["max_pods"]["instance_types"].as_array().unwrap();
    assert_eq!(rows[0]["instance_type"], "m6a.large");
    assert_eq!(rows[0]["eni_max_pods"], 29);
    assert_eq!(rows[0]["table_max_pods"], Value::Null);
    assert_eq!(rows[0]["source"], "--instance-types-json");
    assert_eq!(rows[1]["enis"], 8);
    assert_eq!(rows[1]["eni_max_pods"], 394);
    assert_eq!(rows[1]["change"], "lower (required)");
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("c6in.32xlarge: kubelet allows 394 pods today, more than the 253 pod addresses of a /24 node subnet"),
        "{warnings}"
    );
}

#[test]
fn nodes_can_come_from_stdin_and_name_their_instances() {
    let nodes = std::fs::read_to_string(crate_dir().join(fixture("nodes.json"))).unwrap();
    let run = plan_with_stdin(
        &base(&["--nodes-json", "-"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        Some(&nodes),
    )
    .ok();
    // Instance types come from the node labels; t3.small's 1924 MiB cannot afford 110 pods.
    assert!(
        run.stdout
            .contains("| m5.large | 3 | 10 | 29 | 29 | 29 (2 nodes) |")
    );
    assert!(run.stdout.contains("--instance-ids i-0a1b2c3d4e5f60003"));
    assert!(run.stdout.contains(
        "t3.small: at max pods 110 kubelet reserves 1465 MiB (kubeReserved) of the node's 1924 MiB"
    ));
    assert!(!run.stdout.contains("kubectl cordon fargate-"));
}

#[test]
fn without_optional_inputs_the_plan_says_what_it_did_not_check() {
    let run = plan_m5(&[]).ok();
    for text in [
        "webhooks were not checked (no --webhooks-json)",
        "APIServices were not checked (no --apiservices-json)",
        "--etcd-endpoints was not given",
        "--network-policies-json was not given",
        "kubectl get networkpolicy -A -o json > netpol.json",
        "weft network init --network 10.244.0.0/16 --subnet-len 24 --etcd-endpoints https://<etcd0-ip>:2379,https://<etcd1-ip>:2379,https://<etcd2-ip>:2379",
        "kubectl cordon <node-name>",
    ] {
        assert!(run.stdout.contains(text), "missing {text:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Error paths

#[test]
fn bad_cidrs_name_the_flag_and_the_fix() {
    plan_m5(&["--vpc-cidr", "10.1.0/16"])
        .fails()
        .says("--vpc-cidr \"10.1.0/16\" is not an IPv4 CIDR; write it as address/prefix, e.g. 10.0.0.0/16");
    plan_m5(&["--pod-cidr", "10.244.1.0/16"])
        .fails()
        .says("--pod-cidr 10.244.1.0/16 has host bits set; the network is 10.244.0.0/16: pass --pod-cidr 10.244.0.0/16");
    plan_m5(&["--service-cidr", "fd00::/108"])
        .fails()
        .says("--service-cidr \"fd00::/108\" is an IPv6 CIDR");
    plan_m5(&["--peered-cidr", "172.16.0.0/33"])
        .fails()
        .says("--peered-cidr \"172.16.0.0/33\" is not an IPv4 CIDR");
    plan_m5(&["--subnet-len", "12"])
        .fails()
        .says("--subnet-len: SubnetLen 12");
    // Several problems are reported together.
    plan_m5(&["--vpc-cidr", "x", "--pod-cidr", "y"])
        .fails()
        .says("the plan cannot be made (2 problems):")
        .says("--vpc-cidr \"x\"")
        .says("--pod-cidr \"y\"");
}

#[test]
fn overlapping_cidrs_fail_naming_both() {
    let with = |extra: &[&str]| plan_m5(extra).fails();
    // pod / VPC
    with(&["--pod-cidr", "10.0.128.0/17"])
        .says("--pod-cidr 10.0.128.0/17 overlaps --vpc-cidr 10.0.0.0/16: pod IPs would collide with VPC addresses")
        .says("e.g. --pod-cidr 10.244.0.0/17");
    // pod / secondary VPC CIDR (custom networking range)
    with(&["--vpc-cidr", "100.64.0.0/16", "--pod-cidr", "100.64.0.0/10"])
        .says("--pod-cidr 100.64.0.0/10 overlaps --vpc-cidr 100.64.0.0/16");
    // pod / service (given)
    with(&["--service-cidr", "10.244.0.0/20"])
        .says("--pod-cidr 10.244.0.0/16 overlaps --service-cidr 10.244.0.0/20: pod IPs would collide with Service cluster IPs");
    // service / pod, the other way round: a service CIDR inside the pod CIDR
    with(&[
        "--pod-cidr",
        "172.16.0.0/12",
        "--service-cidr",
        "172.20.0.0/16",
    ])
    .says("--pod-cidr 172.16.0.0/12 overlaps --service-cidr 172.20.0.0/16");
    // pod / the assumed EKS default service CIDR
    with(&["--pod-cidr", "172.20.0.0/16"])
        .says("--pod-cidr 172.20.0.0/16 overlaps the service CIDR 172.20.0.0/16 (assumed: the EKS default for this VPC; pass --service-cidr");
    // pod / peered
    with(&["--peered-cidr", "10.50.0.0/16", "--peered-cidr", "10.244.64.0/18"])
        .says("--pod-cidr 10.244.0.0/16 overlaps --peered-cidr 10.244.64.0/18: pods could not reach hosts in the peered or on-premises range");
    // service / VPC
    with(&["--service-cidr", "10.0.0.0/24"])
        .says("--service-cidr 10.0.0.0/24 overlaps --vpc-cidr 10.0.0.0/16: EKS never lets the service CIDR overlap the VPC");
    // pod / link-local (instance metadata)
    with(&["--pod-cidr", "169.254.0.0/16"]).says(
        "--pod-cidr 169.254.0.0/16 overlaps 169.254.0.0/16 (link-local: EC2 instance metadata",
    );
}

#[test]
fn unknown_instance_types_ask_for_describe_instance_types() {
    plan_base(&["--instance-types", "m5.large,x9.huge"])
        .fails()
        .says("unknown instance type \"x9.huge\" (from --instance-types): it is not in weft's embedded table (t3.micro, t3.small,")
        .says("pass --instance-types-json with the output of `aws ec2 describe-instance-types --region us-east-1 --instance-types x9.huge`");
    let types = fixture("instance-types.json");
    plan_base(&[
        "--instance-types",
        "x9.huge",
        "--instance-types-json",
        &types,
    ])
    .fails()
    .says("nor in --instance-types-json tests/fixtures/eks/instance-types.json;");
    let dir = tempfile::tempdir().unwrap();
    let nodes = write_temp(
        &dir,
        "nodes.json",
        r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"ip-10-0-9-9.ec2.internal","labels":{"node.kubernetes.io/instance-type":"z1d.large"}}}]}"#,
    );
    plan_base(&["--nodes-json", &nodes])
        .fails()
        .says("unknown instance type \"z1d.large\" (the instance type of node ip-10-0-9-9.ec2.internal in --nodes-json)");
}

#[test]
fn unknown_ami_family_lists_the_known_ones() {
    plan_args(&eks_m5_args_with("--ami-family", Some("ubuntu")))
        .usage_error()
        .says("invalid value 'ubuntu' for '--ami-family <FAMILY>'")
        .says("[possible values: al2, al2023, bottlerocket]");
}

#[test]
fn missing_required_flags_are_named() {
    for (flag, needles) in [
        (
            "--cluster-name",
            &[
                "the following required arguments were not provided",
                "--cluster-name <NAME>",
            ][..],
        ),
        ("--vpc-cidr", &["--vpc-cidr <CIDR>"]),
        ("--region", &["--region <REGION>"]),
        ("--ami-family", &["--ami-family <FAMILY>"]),
    ] {
        let run = plan_args(&eks_m5_args_with(flag, None)).usage_error();
        for n in needles {
            assert!(
                run.stderr.contains(n),
                "without {flag}: stderr lacks {n:?}:\n{run}"
            );
        }
    }
    plan_base(&[])
        .usage_error()
        .says("--instance-types <TYPES>|--instance-types-json <FILE>|--nodes-json <FILE>");
}

#[test]
fn malformed_json_names_the_file_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let with = |flag: &str, path: &str| plan_m5(&[flag, path]).fails();

    // Syntax: the file, serde_json's line and column, and what the file should hold.
    let broken = write_temp(
        &dir,
        "broken.json",
        "{\n  \"items\": [\n    {\"kind\": \"Node\",}\n",
    );
    with("--nodes-json", &broken)
        .says(&format!("--nodes-json {broken}: it is not valid JSON ("))
        .says("line 3 column")
        .says("it should hold the output of `kubectl get nodes -o json`");
    let empty = write_temp(&dir, "empty.json", "\n");
    with("--apiservices-json", &empty)
        .says(&format!("--apiservices-json {empty}: it is empty; it should hold the output of `kubectl get apiservices -o json`"));

    // Types, with the JSON path.
    let nodes = write_temp(
        &dir,
        "nodes.json",
        r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"a","labels":{"node.kubernetes.io/instance-type":"m5.large"}},"status":{"capacity":{"pods":29}}},{"kind":"Node","metadata":{"name":"b"},"status":{"capacity":{"pods":"many"}}}]}"#,
    );
    with("--nodes-json", &nodes).says(&format!(
        "--nodes-json {nodes}: at items[1].status.capacity.pods: expected a pod count such as \"110\", found the string \"many\""
    ));
    let types = write_temp(
        &dir,
        "types.json",
        r#"{"InstanceTypes":[{"InstanceType":"m5.large","NetworkInfo":{"MaximumNetworkInterfaces":"3","Ipv4AddressesPerInterface":10}}]}"#,
    );
    with("--instance-types-json", &types).says(&format!(
        "--instance-types-json {types}: at InstanceTypes[0].NetworkInfo.MaximumNetworkInterfaces: expected a whole number, found the string \"3\"; it should hold the output of `aws ec2 describe-instance-types"
    ));
    let hooks = write_temp(
        &dir,
        "hooks.json",
        r#"{"kind":"List","items":[{"kind":"ValidatingWebhookConfiguration","metadata":{"name":"x"},"webhooks":[{"name":"h","clientConfig":{}}]}]}"#,
    );
    with("--webhooks-json", &hooks).says(&format!(
        "--webhooks-json {hooks}: at items[0].webhooks[0].clientConfig: has neither \"service\" nor \"url\""
    ));
    let apis = write_temp(
        &dir,
        "apis.json",
        r#"{"kind":"List","items":[{"kind":"APIService","metadata":{"name":"v1beta1.metrics.k8s.io"},"spec":{"service":{"namespace":"kube-system"}}}]}"#,
    );
    with("--apiservices-json", &apis).says(&format!(
        "--apiservices-json {apis}: at items[0].spec.service.name: is missing"
    ));

    // A file passed to the wrong flag.
    let webhooks_fixture = fixture("webhooks.json");
    with("--nodes-json", &webhooks_fixture).says(
        "--nodes-json tests/fixtures/eks/webhooks.json: at items[0].kind: expected Node, found \"MutatingWebhookConfiguration\"",
    );
    // A file that is not there.
    with("--nodes-json", "tests/fixtures/eks/no-such-file.json")
        .says("cannot read --nodes-json tests/fixtures/eks/no-such-file.json:");
}

#[test]
fn stdin_can_be_read_once() {
    plan_with_stdin(
        &base(&["--nodes-json", "-", "--apiservices-json", "-"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        Some("{}"),
    )
    .fails()
    .says("--nodes-json and --apiservices-json all ask for stdin (-)");
}

#[test]
fn limits_that_cannot_work_are_refused() {
    plan_m5(&["--max-pods", "300"])
        .fails()
        .says("--max-pods 300 is more than the 253 pod addresses of a /24 node subnet");
    plan_m5(&["--max-pods", "0"])
        .fails()
        .says("--max-pods 0 would let no pod run");
    plan_m5(&["--etcd-endpoints", "10.0.1.10:2379"])
        .fails()
        .says("--etcd-endpoints entry \"10.0.1.10:2379\" must start with http:// or https://");
    // A pod CIDR must hold at least four node subnets, and weftd leases all but the first
    // (flannel's SubnetMin): /24 cut into /26s serves 3 nodes. The fixture has three EC2 nodes
    // (its Fargate node does not count); a fourth is one too many.
    let nodes = fixture("nodes.json");
    plan_base(&[
        "--nodes-json",
        &nodes,
        "--pod-cidr",
        "10.244.0.0/24",
        "--subnet-len",
        "26",
    ])
    .ok();
    let dir = tempfile::tempdir().unwrap();
    let items: Vec<String> = (1..=4)
        .map(|i| format!(r#"{{"kind":"Node","metadata":{{"name":"n{i}","labels":{{"node.kubernetes.io/instance-type":"m5.large"}}}}}}"#))
        .collect();
    let four = write_temp(
        &dir,
        "four.json",
        &format!(r#"{{"kind":"List","items":[{}]}}"#, items.join(",")),
    );
    plan_base(&["--nodes-json", &four, "--pod-cidr", "10.244.0.0/24", "--subnet-len", "26"])
        .fails()
        .says("--pod-cidr 10.244.0.0/24 with --subnet-len 26 has 3 node subnets, but --nodes-json lists 4 EC2 nodes: the rest would get no lease; pass a larger --pod-cidr (e.g. /23) or a longer --subnet-len");
}

#[test]
fn network_policies_are_named_as_unenforced_and_karpenter_gets_max_pods() {
    let run = plan_m5(&["--network-policies-json", &fixture("netpol.json")]).ok();
    for text in [
        "2 NetworkPolicies (payments/default-deny, payments/allow-frontend) stop being enforced when aws-node is deleted",
        "kube-network-policies",
        "kubectl patch ec2nodeclass <ec2nodeclass-name> --type merge -p '{\"spec\":{\"kubelet\":{\"maxPods\":110}}}'",
        "EC2NodeClass `spec.kubelet.maxPods`",
    ] {
        assert!(
            run.stdout.contains(text),
            "missing {text:?}:\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("--network-policies-json was not given"));
    // An empty list: nothing to warn about.
    let dir = tempfile::tempdir().unwrap();
    let empty = write_temp(&dir, "none.json", r#"{"kind":"List","items":[]}"#);
    let run = plan_m5(&["--network-policies-json", &empty]).ok();
    assert!(!run.stdout.contains("NetworkPolicies ("), "{}", run.stdout);
    // Something else than NetworkPolicies: the flag, the file and the kind are named.
    let wrong = write_temp(
        &dir,
        "nodes.json",
        r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"n"}}]}"#,
    );
    let run = plan_m5(&["--network-policies-json", &wrong]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("--network-policies-json")
            && run.stderr.contains("kubectl get networkpolicy -A -o json"),
        "{}",
        run.stderr
    );
}
