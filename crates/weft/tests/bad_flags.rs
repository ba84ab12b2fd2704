//! The bad-flag corpus of the real `weft` binary: flags, `FLANNELD_ETCD_*` variables and input
//! files that weft must refuse before it contacts etcd or touches the node (no root or etcd
//! needed).
//!
//! Every case must exit with the expected status (2 for what clap refuses, 1 for what weft
//! refuses), say on stderr which flag or file is wrong and what to do, never panic, and stay
//! short however long the input.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use weft_testbed::corpus;

mod common;
use common::{EKS_REQUIRED, eks_m5_args_with};

/// Nothing listens there; weft must not get as far as trying it.
const DEAD_ETCD: &str = "http://127.0.0.1:1";

const DEADLINE: Duration = Duration::from_secs(20);

struct Case {
    label: &'static str,
    /// `{dir}` is replaced by the case's temp dir.
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    code: i32,
    needles: &'static [&'static str],
}

fn case<S: AsRef<str>>(
    label: &'static str,
    code: i32,
    args: &[S],
    needles: &'static [&'static str],
) -> Case {
    Case {
        label,
        args: args.iter().map(|a| a.as_ref().to_string()).collect(),
        env: Vec::new(),
        code,
        needles,
    }
}

impl Case {
    fn env(mut self, var: &'static str, value: impl Into<String>) -> Case {
        self.env.push((var, value.into()));
        self
    }
}

fn run(c: &Case, dir: &Path) -> Result<Output, String> {
    let dir_text = dir.display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", dir)
        .args(c.args.iter().map(|a| a.replace("{dir}", &dir_text)))
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir);
    corpus::output_within(&mut cmd, DEADLINE)
}

fn check(c: &Case, dir: &Path, out: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems: Vec<String> = corpus::exit_problem(out, c.code).into_iter().collect();
    if stdout.contains("panicked") {
        problems.push("panicked".to_string());
    }
    if stderr.contains("127.0.0.1:1") {
        problems.push("contacted etcd".to_string());
    }
    if dir.join("out").exists() {
        problems.push("created the output directory".to_string());
    }
    let dir_text = dir.display().to_string();
    let needles = c.needles.iter().map(|n| n.replace("{dir}", &dir_text));
    problems.extend(corpus::error_problems(&stderr, needles, &[]));
    if !problems.is_empty() {
        problems.push(format!("stdout:\n{stdout}\nstderr:\n{stderr}"));
    }
    problems
}

/// `weft eks plan` with valid required flags, plus `extra`.
fn eks(extra: &[&str]) -> Vec<String> {
    ["eks", "plan"]
        .iter()
        .chain(EKS_REQUIRED)
        .chain(&["--instance-types", "m5.large"])
        .chain(extra)
        .map(|a| a.to_string())
        .collect()
}

/// `weft network init <extra> --etcd-endpoints <dead>`.
fn init(extra: &[&str]) -> Vec<String> {
    ["network", "init"]
        .iter()
        .chain(extra)
        .chain(&["--etcd-endpoints", DEAD_ETCD])
        .map(|a| a.to_string())
        .collect()
}

/// `weft etcd ignition <extra> --out-dir {dir}/out`.
fn ignition(extra: &[&str]) -> Vec<String> {
    ["etcd", "ignition"]
        .iter()
        .chain(extra)
        .chain(&["--out-dir", "{dir}/out"])
        .map(|a| a.to_string())
        .collect()
}

fn cases() -> Vec<Case> {
    let huge_json = format!(
        r#"{{"Network":"10.244.0.0/16","Pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    vec![
        // ---- refused by clap (2) ----
        case("no command", 2, &[] as &[&str], &["Usage: weft <COMMAND>"]),
        case(
            "misspelt command",
            2,
            &["netwrok", "show"],
            &[
                "unrecognized subcommand 'netwrok'",
                "a similar subcommand exists: 'network'",
            ],
        ),
        case(
            "misspelt flag",
            2,
            &["network", "show", "--etcd-endpoint", DEAD_ETCD],
            &[
                "unexpected argument '--etcd-endpoint' found",
                "a similar argument exists: '--etcd-endpoints'",
            ],
        ),
        case(
            "network init without a source",
            2,
            &["network", "init"],
            &[
                "the following required arguments were not provided",
                "--network <CIDR>|--from-file <PATH>|--json <RAW>",
            ],
        ),
        case(
            "--json with --vni",
            2,
            &["network", "init", "--json", "{}", "--vni", "5"],
            &["the argument '--json <RAW>' cannot be used with '--vni <N>'"],
        ),
        case(
            "--output yaml",
            2,
            &["leases", "list", "--output", "yaml"],
            &[
                "invalid value 'yaml' for '--output <OUTPUT>'",
                "[possible values: text, json]",
            ],
        ),
        case(
            "completion for an unknown shell",
            2,
            &["completion", "tcsh"],
            &[
                "invalid value 'tcsh' for '<SHELL>'",
                "[possible values: bash, elvish, fish, powershell, zsh]",
            ],
        ),
        case(
            "completion without a shell",
            2,
            &["completion"],
            &[
                "the following required arguments were not provided",
                "<SHELL>",
            ],
        ),
        case(
            "version --output yaml",
            2,
            &["version", "--output", "yaml"],
            &["invalid value 'yaml' for '--output <OUTPUT>'"],
        ),
        case(
            "install-cni --output yaml",
            2,
            &["install-cni", "--output", "yaml", "--conf-dir", "{dir}/out"],
            &["invalid value 'yaml' for '--output <OUTPUT>'"],
        ),
        case(
            "--subnet-min short",
            2,
            &[
                "network",
                "init",
                "--network",
                "10.244.0.0/16",
                "--subnet-min",
                "10.244.1",
            ],
            &[
                "invalid value '10.244.1' for '--subnet-min <IP>'",
                "invalid IPv4 address syntax",
            ],
        ),
        case(
            "--subnet-len negative",
            2,
            &[
                "network",
                "init",
                "--network",
                "10.244.0.0/16",
                "--subnet-len",
                "-1",
            ],
            &["invalid value '-1' for '--subnet-len <N>'"],
        ),
        case(
            "--vni a word",
            2,
            &[
                "network",
                "init",
                "--network",
                "10.244.0.0/16",
                "--vni",
                "one",
            ],
            &["invalid value 'one' for '--vni <N>'"],
        ),
        case(
            "manifest without endpoints",
            2,
            &["manifest"],
            &[
                "the following required arguments were not provided",
                "--etcd-endpoints <URLS>",
            ],
        ),
        case(
            "eks plan --ami-family windows",
            2,
            &[
                vec!["eks".to_string(), "plan".to_string()],
                eks_m5_args_with("--ami-family", Some("windows")),
            ]
            .concat(),
            &[
                "invalid value 'windows' for '--ami-family <FAMILY>'",
                "[possible values: al2, al2023, bottlerocket]",
            ],
        ),
        // ---- the network config, refused before etcd (1) ----
        case(
            "--network with host bits",
            1,
            &init(&["--network", "10.244.1.0/16"]),
            &["pass --network 10.244.0.0/16"],
        ),
        case(
            "--network IPv6",
            1,
            &init(&["--network", "fc00::/48"]),
            &["--network", "fc00::/48"],
        ),
        case(
            "--subnet-len 31",
            1,
            &init(&["--network", "10.244.0.0/16", "--subnet-len", "31"]),
            &["--subnet-len", "SubnetLen must be less than /31"],
        ),
        case(
            "--vni over 24 bits",
            1,
            &init(&["--network", "10.244.0.0/16", "--vni", "16777216"]),
            &["--vni: Backend.VNI 16777216", "24 bits"],
        ),
        case(
            "--mtu 10",
            1,
            &init(&["--network", "10.244.0.0/16", "--mtu", "10"]),
            &["--mtu: Backend.MTU 10", "e.g. 1500"],
        ),
        case(
            "network init --backend wireguard",
            1,
            &init(&["--network", "10.244.0.0/16", "--backend", "wireguard"]),
            &[
                "--backend \"wireguard\" is not available: neither this machine's kernel nor weft has WireGuard support",
                "pass --backend vxlan or --backend host-gw",
            ],
        ),
        case(
            "manifest --backend udp (the same kind of message)",
            1,
            &[
                "manifest",
                "--etcd-endpoints",
                "http://10.0.0.1:2379",
                "--backend",
                "udp",
            ],
            &[
                "--backend \"udp\" is not available: udp is a debug-only backend in flannel itself",
                "pass --backend vxlan or --backend host-gw",
            ],
        ),
        case(
            "network init --backend host-gw --mtu",
            1,
            &init(&[
                "--network",
                "10.244.0.0/16",
                "--backend",
                "host-gw",
                "--mtu",
                "9001",
            ]),
            &[
                "--mtu 9001 is a vxlan option, but --backend host-gw has no MTU option",
                "drop --mtu",
            ],
        ),
        case(
            "network init --direct-routing with --json",
            2,
            &init(&[
                "--json",
                r#"{"Network":"10.244.0.0/16"}"#,
                "--direct-routing",
            ]),
            &["--direct-routing", "--json"],
        ),
        case(
            "--json truncated",
            1,
            &init(&["--json", "{\"Network\":"]),
            &["--json is invalid", "not valid JSON"],
        ),
        case(
            "--json an array",
            1,
            &init(&["--json", "[]"]),
            &["--json is invalid", "must be a JSON object, found an array"],
        ),
        case(
            "--json unknown backend",
            1,
            &init(&[
                "--json",
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlna"}}"#,
            ]),
            &[
                "--json is invalid",
                "Backend.Type \"vxlna\": unknown backend type",
            ],
        ),
        case(
            "--json 100 KB",
            1,
            &init(&["--json", &huge_json]),
            &["--json is invalid", "more than the 65536-byte limit"],
        ),
        case(
            "--from-file missing",
            1,
            &init(&["--from-file", "{dir}/missing.json"]),
            &[
                "cannot read --from-file {dir}/missing.json",
                "No such file or directory",
            ],
        ),
        case(
            "--from-file a directory",
            1,
            &init(&["--from-file", "{dir}"]),
            &["cannot read --from-file {dir}", "Is a directory"],
        ),
        case(
            "--from-file 10 MiB",
            1,
            &init(&["--from-file", "{dir}/big.json"]),
            &[
                "--from-file {dir}/big.json is invalid",
                "10485760 bytes, more than the 65536-byte limit",
            ],
        ),
        case(
            "--from-file not UTF-8 JSON",
            1,
            &init(&["--from-file", "{dir}/latin1.json"]),
            &[
                "--from-file {dir}/latin1.json is not UTF-8 text",
                "a network config is a JSON object",
            ],
        ),
        // ---- etcd endpoints (1) ----
        case(
            "--etcd-endpoints without a scheme",
            1,
            &[
                "network",
                "init",
                "--network",
                "10.244.0.0/16",
                "--etcd-endpoints",
                "10.0.0.1:2379",
            ],
            &[
                "--etcd-endpoints entry \"10.0.0.1:2379\" must start with http:// or https://",
                "http://10.0.0.1:2379",
            ],
        ),
        case(
            "--etcd-endpoints only commas",
            1,
            &["leases", "list", "--etcd-endpoints", ", ,"],
            &["--etcd-endpoints", "holds no endpoint"],
        ),
        case(
            "FLANNELD_ETCD_ENDPOINTS without a scheme",
            1,
            &["leases", "list"],
            &[
                "must start with http:// or https://",
                "comes from the environment variable FLANNELD_ETCD_ENDPOINTS",
            ],
        )
        .env("FLANNELD_ETCD_ENDPOINTS", "etcd.internal:2379"),
        case(
            "FLANNELD_ETCD_ENDPOINTS empty list",
            1,
            &["network", "show"],
            &["holds no endpoint", "FLANNELD_ETCD_ENDPOINTS"],
        )
        .env("FLANNELD_ETCD_ENDPOINTS", ","),
        // ---- manifest (1) ----
        case(
            "manifest endpoint without a scheme",
            1,
            &["manifest", "--etcd-endpoints", "10.0.0.1:2379"],
            &["--etcd-endpoints entry \"10.0.0.1:2379\" must start with http:// or https://"],
        ),
        case(
            "manifest network with host bits",
            1,
            &[
                "manifest",
                "--etcd-endpoints",
                "http://10.0.0.1:2379",
                "--network",
                "10.244.1.0/16",
            ],
            &[
                "--network 10.244.1.0/16 has host bits set",
                "pass --network 10.244.0.0/16",
            ],
        ),
        case(
            "manifest old Kubernetes",
            1,
            &[
                "manifest",
                "--etcd-endpoints",
                "http://10.0.0.1:2379",
                "--kubernetes-version",
                "1.20",
            ],
            &[
                "--kubernetes-version \"1.20\" is not supported",
                "1.29 to 1.35",
            ],
        ),
        case(
            "manifest https without a CA",
            1,
            &["manifest", "--etcd-endpoints", "https://10.0.0.1:2379"],
            &[
                "is https, but weftd has no built-in trust roots",
                "pass --etcd-tls-secret NAME",
            ],
        ),
        // ---- etcd ignition (1): nothing is written ----
        case(
            "etcd ignition with 2 members",
            1,
            &ignition(&["--members", "2"]),
            &["--members 2 is not supported", "--members 3"],
        ),
        case(
            "etcd ignition --etcd-version latest",
            1,
            &ignition(&[
                "--members",
                "1",
                "--private-ip",
                "10.0.1.10",
                "--etcd-version",
                "latest",
            ]),
            &["--etcd-version \"latest\" is neither an etcd 3.4+ release"],
        ),
        case(
            "etcd ignition --version (the old spelling) latest",
            1,
            &ignition(&[
                "--members",
                "1",
                "--private-ip",
                "10.0.1.10",
                "--version",
                "latest",
            ]),
            &["--etcd-version \"latest\" is neither an etcd 3.4+ release"],
        ),
        case(
            "etcd ignition with too few IPs",
            1,
            &ignition(&["--members", "3", "--private-ip", "10.0.1.10"]),
            &[
                "--members 3 needs 3 --private-ip values",
                "--private-ip 10.0.1.10 --private-ip 10.0.2.10",
            ],
        ),
        // ---- eks plan (1) ----
        case(
            "eks pod CIDR inside the VPC",
            1,
            &eks(&["--pod-cidr", "10.0.0.0/16"]),
            &[
                "--pod-cidr 10.0.0.0/16 overlaps --vpc-cidr 10.0.0.0/16",
                "e.g. --pod-cidr 10.244.0.0/16",
            ],
        ),
        case(
            "eks unknown instance type",
            1,
            &[
                vec!["eks".to_string(), "plan".to_string()],
                eks_m5_args_with("--instance-types", Some("m5.nope")),
            ]
            .concat(),
            &["unknown instance type \"m5.nope\" (from --instance-types)"],
        ),
        case(
            "eks nodes JSON missing",
            1,
            &eks(&["--nodes-json", "{dir}/nodes.json"]),
            &["cannot read --nodes-json {dir}/nodes.json"],
        ),
        case(
            "eks nodes JSON truncated",
            1,
            &eks(&["--nodes-json", "{dir}/bad.json"]),
            &[
                "--nodes-json {dir}/bad.json: it is not valid JSON",
                "kubectl get nodes -o json",
            ],
        ),
    ]
}

#[test]
fn bad_flags_are_refused_with_the_flag_named_and_no_panic() {
    let cases = cases();
    corpus::assert_corpus(
        "weft",
        &cases,
        |c| c.label.to_string(),
        |c| {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("bad.json"), "{\"items\": [").expect("write");
            std::fs::write(
                dir.path().join("latin1.json"),
                b"{\"Network\":\"10.244.0.0/16\xe9\"}",
            )
            .expect("write");
            if c.args.iter().any(|a| a.ends_with("big.json")) {
                let mut big = b"{\"Network\":\"10.244.0.0/16\",\"Pad\":\"".to_vec();
                big.resize(10 * 1024 * 1024 - 2, b'x');
                big.extend_from_slice(b"\"}");
                std::fs::write(dir.path().join("big.json"), big).expect("write");
            }
            match run(c, dir.path()) {
                Ok(out) => check(c, dir.path(), &out),
                Err(e) => vec![e],
            }
        },
    );
    println!("weft: {} bad-flag cases", cases.len());
}
