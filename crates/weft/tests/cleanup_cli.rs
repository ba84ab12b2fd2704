//! `weft node cleanup-vpc-cni` as a binary, with every path in a temp dir and every program
//! injected: fake `ip`, `nft` and iptables backends that print output saved from the real
//! tools and log what they are asked to do (no root needed).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{NodeRoot, UPSTREAM_PLUGINS, write};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cleanup/node")
}

/// A node in a temp dir: its files, and fake tools under `tools/`.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let node = Node {
            dir: tempfile::tempdir().unwrap(),
        };
        let f = fixtures();
        let fx = |name: &str| f.join(name).display().to_string();
        let log = node.p("calls.log").display().to_string();
        let restore_log = node.p("restore.log").display().to_string();
        // `ip`: answers the three reads, logs everything.
        write(
            &node.p("tools/ip"),
            &format!(
                "#!/bin/sh\necho \"ip $*\" >> {log}\ncase \"$*\" in\n\"-j rule\") cat {} ;;\n\"-4 -j route show table all\") cat {} ;;\n\"-j link show\") cat {} ;;\nesac\n",
                fx("ip-rule.json"),
                fx("ip-route.json"),
                fx("ip-link.json")
            ),
            0o755,
        );
        write(
            &node.p("tools/nft"),
            &format!(
                "#!/bin/sh\necho \"nft $*\" >> {log}\ncase \"$1\" in\nlist) cat {} ;;\nesac\n",
                fx("nft-aws-cni.txt")
            ),
            0o755,
        );
        for backend in ["iptables-legacy", "iptables-nft"] {
            write(
                &node.p(&format!("tools/{backend}-save")),
                &format!(
                    "#!/bin/sh\necho \"{backend}-save $*\" >> {log}\ncat {}/{backend}-\"$2\".txt\n",
                    f.display()
                ),
                0o755,
            );
            write(
                &node.p(&format!("tools/{backend}-restore")),
                &format!(
                    "#!/bin/sh\necho \"{backend}-restore $*\" >> {log}\ncat >> {restore_log}\n"
                ),
                0o755,
            );
        }
        write(
            &node.p("proc/net/ip_tables_names"),
            "nat\nmangle\nfilter\n",
            0o644,
        );
        write(
            &node.p("etc/cni/net.d/10-aws.conflist"),
            &std::fs::read_to_string(f.join("10-aws.conflist")).unwrap(),
            0o644,
        );
        for bin in ["aws-cni", "egress-cni"].iter().chain(UPSTREAM_PLUGINS) {
            write(&node.p(&format!("opt/cni/bin/{bin}")), "#!/bin/sh\n", 0o755);
        }
        write(&node.p("var/run/aws-node/ipam.json"), "{}", 0o644);
        write(&node.p("var/log/aws-routed-eni/ipamd.log"), "log\n", 0o644);
        write(
            &node.p("run/systemd/netif/links/7"),
            &std::fs::read_to_string(f.join("networkd-7")).unwrap(),
            0o644,
        );
        node
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, extra: &[&str]) -> (i32, String, String) {
        let p = |rel: &str| self.p(rel).display().to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["node", "cleanup-vpc-cni"])
            .args(NodeRoot(self.dir.path().to_path_buf()).cleanup_args())
            .args(["--proc-net", &p("proc/net")])
            .args(["--ip", &p("tools/ip"), "--nft", &p("tools/nft")])
            .args(["--iptables-legacy", &p("tools/iptables-legacy")])
            .args(["--iptables-nft", &p("tools/iptables-nft")])
            .args(["--ip6tables-legacy", &p("tools/missing/ip6tables-legacy")])
            .args(["--ip6tables-nft", &p("tools/missing/ip6tables-nft")])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.p("calls.log")).unwrap_or_default()
    }
}

#[test]
fn dry_run_reads_through_the_injected_tools_and_changes_nothing() {
    let node = Node::new();
    let (code, out, err) = node.run(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("weft node cleanup-vpc-cni: dry run, nothing was changed"));
    assert!(
        out.contains("iptables-legacy-restore --noflush -w 5 <<'EOF'"),
        "{out}"
    );
    assert!(out.contains("nft delete table ip aws-cni"), "{out}");
    assert!(
        out.contains("ip6tables-nft: ") && out.contains("is not installed"),
        "{out}"
    );
    let calls = node.calls();
    for read in [
        "ip -j rule",
        "ip -4 -j route show table all",
        "ip -j link show",
        "nft list table ip aws-cni",
        "iptables-legacy-save -t nat",
        "iptables-nft-save -t filter",
    ] {
        assert!(calls.contains(read), "{read}: {calls}");
    }
    assert!(
        !calls.contains("restore") && !calls.contains(" del ") && !calls.contains("delete"),
        "{calls}"
    );
    assert!(node.p("etc/cni/net.d/10-aws.conflist").exists());
    assert!(node.p("var/run/aws-node/ipam.json").exists());

    let (code, out, _) = node.run(&["--output", "json"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["mode"], "dry-run");
    let steps = doc["steps"].as_array().unwrap();
    assert!(steps.len() > 10, "{out}");
    for s in steps {
        assert!(!s["why"].as_str().unwrap().is_empty());
        assert!(!s["commands"].as_array().unwrap().is_empty());
    }
}

#[test]
fn apply_runs_the_plan_and_reports_what_is_still_there() {
    let node = Node::new();
    let (code, out, err) = node.run(&["--apply"]);
    // The fakes keep printing the same rules, so the second look still finds them: the
    // command says so and exits 1.
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("still left after applying:"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    let calls = node.calls();
    let changes: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains("restore") || l.contains(" del ") || l.contains("delete"))
        .collect();
    // 6 restores (3 tables x 2 backends), the nft table, 8 ip rules (20, 512 x2, 1024,
    // 1535, 1536 x2, 32765 into table 2).
    assert_eq!(changes.len(), 6 + 1 + 8, "{changes:#?}");
    let payloads = std::fs::read_to_string(node.p("restore.log")).unwrap();
    assert_eq!(payloads.matches("COMMIT").count(), 6, "{payloads}");
    assert!(!payloads.contains("KUBE-") && !payloads.contains("FLANNEL-"));
    assert!(calls.contains("ip route flush table 2"), "{calls}");
    assert!(!calls.contains("table 3"), "{calls}");
    // Files are really moved and removed.
    assert!(!node.p("etc/cni/net.d/10-aws.conflist").exists());
    assert!(node.p("etc/cni/net.d/10-aws.conflist.weft-bak").exists());
    assert!(!node.p("opt/cni/bin/aws-cni").exists());
    assert!(node.p("opt/cni/bin/bridge").exists());
    assert!(!node.p("var/run/aws-node").exists());
    assert!(node.p("var/log/aws-routed-eni.weft-bak/ipamd.log").exists());
}

#[test]
fn force_needs_apply_and_help_names_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["node", "cleanup-vpc-cni", "--force"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["node", "cleanup-vpc-cni", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--apply",
        "--conf-dir",
        "--bin-dir",
        "--aws-node-run-dir",
        "--cni-results-dir",
        "--iptables-legacy",
        "--nft",
        "[default: /etc/cni/net.d]",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}
