//! What the integration tests of the `weft` binary share: one run's exit code and output, the
//! binaries built beside weft, a node's file system (the VPC CNI's conflist, files written
//! with a mode, the first network config), the `weft install-cni` command, and the required
//! flags of a small `weft eks plan`. Each test file adds the assertions it needs in its own
//! `impl Run`.

// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use weft_testbed::{Testbed, wait_until};

/// What one weft run gave.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The VPC CNI's `misc/10-aws.conflist` as aws-node renders it for an IPv4 cluster.
pub const AWS_CONFLIST: &str = include_str!("../golden/cleanup/node/10-aws.conflist");

/// aws-cni (and egress-cni) with ipamd gone: ADD fails the way v1.22 fails in kubelet's events
/// (issue aws/amazon-vpc-cni-k8s#1322; libcni's skel wraps a plain error as code 999), DEL
/// returns success (`del()` swallows the dial error), VERSION answers.
pub const FAKE_AWS_CNI: &str = r#"#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
ADD)
    printf '%s\n' '{"cniVersion":"0.4.0","code":999,"msg":"add cmd: Error received from AddNetwork gRPC call: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing dial tcp 127.0.0.1:50051: connect: connection refused\""}'
    exit 1 ;;
VERSION)
    printf '%s\n' '{"cniVersion":"0.4.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0"]}' ;;
esac
exit 0
"#;

/// The reference plugins weft's conflist chains (besides weft-cni as `flannel`).
pub const UPSTREAM_PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "loopback"];

/// The binary `name` built beside weft (weftd, weft-cni).
pub fn sibling(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_weft")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test.sh does)",
        p.display()
    );
    p
}

/// Writes `content` to `path` (making its directories) with permissions `mode`.
pub fn write(path: &Path, content: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A node's file system, under its testbed dir.
pub struct NodeRoot(pub PathBuf);

impl NodeRoot {
    pub fn p(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    pub fn conf(&self) -> PathBuf {
        self.p("etc/cni/net.d")
    }
    pub fn bin(&self) -> PathBuf {
        self.p("opt/cni/bin")
    }

    /// The node's paths as `weft node cleanup-vpc-cni` flags.
    pub fn cleanup_args(&self) -> Vec<String> {
        let flag = |f: &str, rel: &str| [f.to_string(), self.p(rel).display().to_string()];
        [
            flag("--conf-dir", "etc/cni/net.d"),
            flag("--bin-dir", "opt/cni/bin"),
            flag("--aws-node-run-dir", "var/run/aws-node"),
            flag("--aws-log-dir", "var/log/aws-routed-eni"),
            flag("--egress-v4pd-dir", "run/cni/v4pd"),
            flag("--egress-v6pd-dir", "run/cni/v6pd"),
            flag("--cni-results-dir", "var/lib/cni/results"),
            flag("--aws-bpf-dir", "sys/fs/bpf/globals/aws"),
            flag("--networkd-links-dir", "run/systemd/netif/links"),
        ]
        .concat()
    }
}

/// The config a container runtime would use: the first `.conf`/`.conflist`/`.json` file of the
/// conf dir in byte order (containerd's go-cni sorts the names), and its content.
pub fn first_config(conf_dir: &Path) -> (String, String) {
    let mut names: Vec<String> = std::fs::read_dir(conf_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| weft_cni::install::is_network_config_name(n))
        .collect();
    names.sort();
    let first = names.first().expect("a network config").clone();
    let content = std::fs::read_to_string(conf_dir.join(&first)).unwrap();
    (first, content)
}

/// Whether weftd's masquerade rules (`-A FLANNEL-POSTRTG` in iptables-nft's nat table) show
/// up in `ns` within 5 s.
pub fn masquerade_written(tb: &Testbed, ns: &str) -> bool {
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        tb.exec(ns, &["iptables-nft-save", "-t", "nat"])
            .ok()
            .filter(|t| t.contains("-A FLANNEL-POSTRTG"))
    })
    .is_some()
}

/// `weft install-cni --plugin <plugin> --bin-dir <bin> --conf-dir <conf>`, to run as it is
/// or with more args.
pub fn install_cni(plugin: &Path, bin: &Path, conf: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.arg("install-cni")
        .arg("--plugin")
        .arg(plugin)
        .arg("--bin-dir")
        .arg(bin)
        .arg("--conf-dir")
        .arg(conf);
    cmd
}

/// The required flags of `weft eks plan` but the inputs (`--instance-types` and the like).
pub const EKS_REQUIRED: &[&str] = &[
    "--cluster-name",
    "prod",
    "--region",
    "us-east-1",
    "--ami-family",
    "al2023",
    "--vpc-cidr",
    "10.0.0.0/16",
];

/// `EKS_REQUIRED` and `--instance-types m5.large`, with `flag`'s value set to `value`, or
/// without `flag` and its value (None).
pub fn eks_m5_args_with(flag: &str, value: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = EKS_REQUIRED
        .iter()
        .chain(&["--instance-types", "m5.large"])
        .map(ToString::to_string)
        .collect();
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} is not in {args:?}"));
    match value {
        Some(v) => args[at + 1] = v.to_string(),
        None => {
            args.drain(at..at + 2);
        }
    }
    args
}
