//! `weft doctor` on namespaced testbed nodes (root only; CI runs as root: without root these
//! tests fail with the testbed's reason). Doctor runs inside a node's network namespace, the
//! way an operator runs it on a node, and must name the cause and the fix of each error of the
//! original field report:
//!
//! - a healthy node of a 2-node weft cluster: every check OK, exit 0;
//! - E5: kubelet's ENI-derived maxPods 29 (m5.large) on a /24: WARN with each AMI's setting;
//! - E4: a leftover 10-aws.conflist sorting first, plus other VPC CNI leftovers: FAIL with both
//!   error forms and `weft node cleanup-vpc-cni --apply`, which then clears it;
//! - a broken data plane: weftd killed and a peer route deleted: the peer check FAILs naming it;
//! - E2: the config missing from etcd v3, and etcd unreachable;
//! - E3: the config only in the etcd v2 store (`weft network migrate-v2` then clears it);
//! - E1: kube-subnet-mgr args on a cluster whose nodes have no podCIDR.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_testbed::{Signal, Testbed, TestbedConfig, wait_until, weftd};

mod common;
use common::{AWS_CONFLIST, NodeRoot, Run, UPSTREAM_PLUGINS, install_cni, sibling, write};

const CONFIG_KEY: &str = "/coreos.com/network/config";
const NODES_NO_PODCIDR: &str = "tests/golden/doctor/nodes-no-podcidr.json";
const KUBELET_ENI: &str = "tests/golden/doctor/kubelet-config-m5.large.json";
const KUBELET_RAISED: &str = "tests/golden/doctor/kubelet-config-raised.yaml";

/// The VPC CNI's SNAT chain as aws-node leaves it (eks-vpc-cni.md §1.4).
const AWS_NAT: &str = r#"*nat
:AWS-SNAT-CHAIN-0 - [0:0]
-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0
-A AWS-SNAT-CHAIN-0 -d 10.250.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j RETURN
-A AWS-SNAT-CHAIN-0 ! -o vlan+ -m comment --comment "AWS, SNAT" -m addrtype ! --dst-type LOCAL -j SNAT --to-source 10.250.1.1 --random-fully
COMMIT
"#;

fn weft() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

/// One doctor run (exit code, stdout, and the JSON report when asked for): its findings.
impl Run {
    /// The finding of `check` in a JSON report.
    fn check(&self, check: &str) -> Value {
        self.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == check)
            .cloned()
            .unwrap_or_else(|| panic!("no {check} row:\n{self}"))
    }

    /// Asserts `check`'s status and that each needle is in its detail, cause or fix.
    #[track_caller]
    fn expect(&self, check: &str, status: &str, needles: &[&str]) {
        let c = self.check(check);
        assert_eq!(c["status"], status, "{check}:\n{self}");
        let text = format!("{}\n{}\n{}", c["detail"], c["cause"], c["fix"]);
        let text = text.replace("\\\"", "\"");
        for n in needles {
            assert!(text.contains(n), "{check}: {n:?} missing:\n{self}");
        }
    }
}

fn doctor(tb: &Testbed, ns: &str, args: &[String]) -> Run {
    let mut argv: Vec<&str> = vec![weft(), "doctor"];
    argv.extend(args.iter().map(String::as_str));
    Run::from(tb.exec_output(ns, &argv).unwrap())
}

fn flag(name: &str, value: impl std::fmt::Display) -> [String; 2] {
    [name.to_string(), value.to_string()]
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn doctor_on_a_weft_cluster_healthy_e5_e4_and_a_broken_peer() {
    let started = Instant::now();
    let weftd = sibling("weftd");
    let weft_cni = sibling("weft-cni");
    let mut tb = weftd::bed("doctor-cluster", 2, weftd::NET_CONFIG)
        .unwrap_or_else(|e| panic!("cannot build the testbed (root needed): {e}"));
    let endpoint = tb.etcd_endpoint();

    // weftd on both nodes, with flanneld's flags, as crates/weftd/tests/common starts it.
    // Node 1 is an AL2-like node: weftd writes with iptables-legacy (with a lock file of the
    // bed's, not the host's /run/xtables.lock).
    let lock = tb.dir().join("xtables.lock").display().to_string();
    let mut pids =
        weftd::spawn_all(&mut tb, &weftd, 1, &["--healthz-port=8081", "--ip-masq"]).unwrap();
    pids.push(
        weftd::spawn(
            &mut tb,
            &weftd,
            1,
            &[
                "--healthz-port=8081",
                "--ip-masq",
                "--iptables-backend=legacy",
            ],
            &[("XTABLES_LOCKFILE", &lock)],
        )
        .unwrap(),
    );
    let log = |tb: &Testbed, i: usize| weftd::read_log(tb, i);
    weftd::ready(&tb, 0, Duration::from_secs(15));
    let env1 = weftd::ready(&tb, 1, Duration::from_secs(15));
    let peer_subnet = env1.subnet.unwrap();
    let n0 = tb.node(0).clone();
    let ns = n0.ns.clone();
    // Node 0 has programmed node 1 and serves /readyz.
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            tb.exec(&ns, &["ip", "route", "show", "dev", "flannel.1"])
                .ok()
                .filter(|r| r.contains(&peer_subnet.to_string()))
        })
        .is_some(),
        "node 0 never programmed {peer_subnet}; log:\n{}",
        log(&tb, 0)
    );

    // Node 0's CNI dirs as the weft DaemonSet's init container leaves them.
    let conf = n0.dir.join("etc/cni/net.d");
    let bin = n0.dir.join("opt/cni/bin");
    let install = install_cni(&weft_cni, &bin, &conf).output().unwrap();
    assert!(install.status.success(), "{install:?}");
    for p in UPSTREAM_PLUGINS {
        std::fs::copy(Path::new("/usr/lib/cni").join(p), bin.join(p)).unwrap_or_else(|e| {
            panic!("copy /usr/lib/cni/{p} (install containernetworking-plugins): {e}")
        });
    }

    let base: Vec<String> = [
        flag("--etcd-endpoints", &endpoint),
        flag("--subnet-file", tb.subnet_file(0).display()),
        flag("--conf-dir", conf.display()),
        flag("--bin-dir", bin.display()),
        flag(
            "--flannel-args",
            format!("--ip-masq --etcd-endpoints={endpoint} --healthz-port=8081"),
        ),
        flag("--nodes-json", fixture(NODES_NO_PODCIDR)),
        flag("--healthz", format!("http://{}:8081", n0.ip)),
        flag("--output", "json"),
    ]
    .concat();
    let with = |extra: &[[String; 2]]| -> Vec<String> {
        let mut a = base.clone();
        a.extend(extra.iter().flatten().cloned());
        a
    };

    // 1. Healthy: every row OK.
    let healthy = doctor(
        &tb,
        &ns,
        &with(&[flag("--kubelet-config", fixture(KUBELET_RAISED))]),
    );
    assert_eq!(healthy.code, 0, "{healthy}");
    let rows = healthy.json()["checks"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 14, "{healthy}");
    for r in &rows {
        assert_eq!(r["status"], "OK", "{} is not OK:\n{healthy}", r["check"]);
    }
    // 1b. The same node seen from a pod that has the host's files under a root (the weftd
    // container mounts them at /host): the default CNI dirs and kubelet config paths, below it.
    let kubelet_dir = n0.dir.join("etc/kubernetes/kubelet");
    std::fs::create_dir_all(&kubelet_dir).unwrap();
    std::fs::copy(fixture(KUBELET_RAISED), kubelet_dir.join("config")).unwrap();
    let mut rooted: Vec<String> = base
        .chunks(2)
        .filter(|f| f[0] != "--conf-dir" && f[0] != "--bin-dir")
        .flatten()
        .cloned()
        .collect();
    rooted.extend(flag("--host-root", n0.dir.display()));
    let in_pod = doctor(&tb, &ns, &rooted);
    assert_eq!(in_pod.code, 0, "{in_pod}");
    for r in in_pod.json()["checks"].as_array().unwrap() {
        assert_eq!(
            r["status"], "OK",
            "{} is not OK with --host-root:\n{in_pod}",
            r["check"]
        );
    }
    in_pod.expect(
        "cni-config",
        "OK",
        &[&conf.join("10-flannel.conflist").display().to_string()],
    );
    std::fs::remove_dir_all(n0.dir.join("etc/kubernetes")).unwrap();

    healthy.expect(
        "peers",
        "OK",
        &[&format!("{peer_subnet} via {}", tb.node(1).ip)],
    );
    healthy.expect("lease", "OK", &[&format!("node IP {} (eth0)", n0.ip)]);
    healthy.expect(
        "vxlan-device",
        "OK",
        &["flannel.1: VNI 1, port 8472, MTU 8951"],
    );
    healthy.expect("max-pods", "OK", &["maxPods 110", "253 pod addresses"]);
    healthy.expect("weftd-health", "OK", &["ready", "1 of 1 peers programmed"]);
    // weftd chose nft (no rules in either backend on a fresh node namespace) and doctor
    // finds its chains there.
    healthy.expect(
        "iptables-backend",
        "OK",
        &["weft's chains are in iptables-nft, the host's backend"],
    );

    // On the legacy node doctor reads the nat table where weftd wrote it (--iptables-save
    // auto follows the host's backend), and finds weft's chains in the host's backend.
    let n1 = tb.node(1).clone();
    let on_legacy = doctor(
        &tb,
        &n1.ns,
        &[
            flag("--etcd-endpoints", &endpoint),
            flag("--subnet-file", tb.subnet_file(1).display()),
            // The old spellings of --conf-dir and --bin-dir still work.
            flag("--cni-conf-dir", conf.display()),
            flag("--cni-bin-dir", bin.display()),
            flag("--output", "json"),
        ]
        .concat(),
    );
    on_legacy.expect("masquerade", "OK", &["(iptables-legacy-save)"]);
    on_legacy.expect(
        "iptables-backend",
        "OK",
        &["weft's chains are in iptables-legacy, the host's backend"],
    );

    // The text table of the same node.
    let text_args: Vec<String> = with(&[flag("--kubelet-config", fixture(KUBELET_RAISED))])
        .into_iter()
        .filter(|a| a != "--output" && a != "json")
        .collect();
    let text = doctor(&tb, &ns, &text_args);
    assert_eq!(text.code, 0, "{text}");
    assert!(text.stdout.starts_with("CHECK"), "{text}");
    assert!(
        text.stdout.contains("OK: 14 OK, 0 WARN, 0 FAIL, 0 SKIP"),
        "{text}"
    );

    // 2. E5: the ENI-derived maxPods of an m5.large.
    let e5 = doctor(
        &tb,
        &ns,
        &with(&[flag("--kubelet-config", fixture(KUBELET_ENI))]),
    );
    assert_eq!(e5.code, 0, "a WARN alone exits 0:\n{e5}");
    e5.expect(
        "max-pods",
        "WARN",
        &[
            "maxPods 29",
            "m5.large",
            "3 ENIs x (10 - 1) + 2",
            "a /24 node subnet gives host-local 253 pod addresses",
            "E5",
            "--use-max-pods false --kubelet-extra-args '--max-pods=110'",
            "spec.kubelet.config.maxPods: 110",
            "settings.kubernetes.max-pods = 110",
        ],
    );

    // 3. E4: the VPC CNI's conflist sorts first, its binary and SNAT chain are left too.
    write(&conf.join("10-aws.conflist"), AWS_CONFLIST, 0o644);
    write(&bin.join("aws-cni"), "#!/bin/sh\nexit 1\n", 0o755);
    let rules = n0.dir.join("aws.rules");
    write(&rules, AWS_NAT, 0o644);
    tb.exec(
        &ns,
        &[
            "iptables-restore",
            "--noflush",
            &rules.display().to_string(),
        ],
    )
    .unwrap();
    let e4_args = with(&[flag("--kubelet-config", fixture(KUBELET_RAISED))]);
    let e4 = doctor(&tb, &ns, &e4_args);
    assert_eq!(e4.code, 1, "{e4}");
    e4.expect(
        "cni-config",
        "FAIL",
        &[
            "10-aws.conflist (plugin aws-cni)",
            "E4",
            "dial tcp 127.0.0.1:50051: connect: connection refused",
            "/var/run/aws-node/ipamd.sock",
            "weft node cleanup-vpc-cni --apply",
            "does not need to be replaced",
        ],
    );
    e4.expect(
        "vpc-cni-leftovers",
        "WARN",
        &[
            "AWS-SNAT-CHAIN-0",
            "aws-cni",
            "weft node cleanup-vpc-cni --apply",
        ],
    );
    // The fix, as doctor says it: the cleanup, in place, with this node's paths.
    let paths = NodeRoot(n0.dir.clone()).cleanup_args();
    let mut argv = vec![weft(), "node", "cleanup-vpc-cni", "--apply"];
    argv.extend(paths.iter().map(String::as_str));
    let cleanup = tb.exec_output(&ns, &argv).unwrap();
    assert!(cleanup.status.success(), "{cleanup:?}");
    let after = doctor(&tb, &ns, &e4_args);
    after.expect("cni-config", "OK", &["10-flannel.conflist"]);
    after.expect("vpc-cni-leftovers", "OK", &[]);
    assert_eq!(after.code, 0, "{after}");

    // 4. A broken data plane: weftd gone (it would repair within milliseconds) and a peer's
    //    route deleted.
    tb.signal(pids[0], Signal::SIGKILL).unwrap();
    tb.wait_exit(pids[0], Duration::from_secs(5)).unwrap();
    tb.exec(
        &ns,
        &[
            "ip",
            "route",
            "del",
            &peer_subnet.to_string(),
            "dev",
            "flannel.1",
        ],
    )
    .unwrap();
    let broken = doctor(&tb, &ns, &e4_args);
    assert_eq!(broken.code, 1, "{broken}");
    broken.expect(
        "peers",
        "FAIL",
        &[
            &format!(
                "{peer_subnet} (node {}): route missing or wrong",
                tb.node(1).ip
            ),
            &format!(
                "ip route replace {peer_subnet} via {} dev flannel.1 onlink",
                peer_subnet.network()
            ),
            "restart weftd",
        ],
    );
    broken.expect("weftd-health", "WARN", &["no answer"]);
    broken.expect("lease", "OK", &[]);

    tb.teardown().unwrap();
    eprintln!("doctor cluster test took {:?}", started.elapsed());
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn doctor_names_e1_e2_and_e3() {
    let started = Instant::now();
    let tb = Testbed::new(
        "doctor-etcd",
        TestbedConfig {
            nodes: 1,
            etcd_v2: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("cannot build the testbed (root needed): {e}"));
    let ns = tb.node(0).ns.clone();
    let endpoint = tb.etcd_endpoint();
    let args = |endpoint: &str, extra: &[[String; 2]]| -> Vec<String> {
        let mut a: Vec<String> = [
            flag("--etcd-endpoints", endpoint),
            flag("--subnet-file", tb.subnet_file(0).display()),
            flag(
                "--cni-conf-dir",
                tb.node(0).dir.join("etc/cni/net.d").display(),
            ),
            flag(
                "--cni-bin-dir",
                tb.node(0).dir.join("opt/cni/bin").display(),
            ),
            flag("--output", "json"),
        ]
        .concat();
        a.extend(extra.iter().flatten().cloned());
        a
    };

    // E2: nothing in etcd v3 (nor in v2).
    let missing = doctor(&tb, &ns, &args(&endpoint, &[]));
    assert_eq!(missing.code, 1, "{missing}");
    missing.expect("etcd", "OK", &[&endpoint]);
    missing.expect(
        "network-config",
        "FAIL",
        &[
            "/coreos.com/network/config is missing from etcd v3",
            "not in the etcd v2 store",
            "Couldn't fetch network config: 100: Key not found (/coreos.com)",
            "E2",
            &format!("weft network init --network 10.244.0.0/16 --etcd-endpoints {endpoint}"),
        ],
    );
    missing.expect(
        "lease",
        "FAIL",
        &[
            "does not exist",
            "subnet.env: no such file",
            "weftd is not running",
        ],
    );

    // E2: etcd unreachable (nothing listens on that port).
    let dead = "http://10.250.0.2:2399";
    let unreachable = doctor(&tb, &ns, &args(dead, &[]));
    assert_eq!(unreachable.code, 1, "{unreachable}");
    unreachable.expect(
        "etcd",
        "FAIL",
        &[
            &format!("cannot read etcd v3 at {dead}"),
            "Key not found (/coreos.com)",
            "E2",
            "TCP 2379",
            &format!("etcdctl --endpoints {dead} endpoint health"),
        ],
    );
    unreachable.expect("network-config", "SKIP", &["etcd is unreachable"]);

    // E3: the config written the v2 way, as the field report's flannel 0.13 needed.
    let v2_config = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
    tb.exec(
        tb.etcd_ns(),
        &[
            "env",
            "ETCDCTL_API=2",
            "etcdctl",
            "--endpoints",
            "http://127.0.0.1:2379",
            "set",
            CONFIG_KEY,
            v2_config,
        ],
    )
    .unwrap();
    let v2_only = doctor(&tb, &ns, &args(&endpoint, &[]));
    assert_eq!(v2_only.code, 1, "{v2_only}");
    v2_only.expect(
        "network-config",
        "FAIL",
        &[
            "missing from etcd v3, but the etcd v2 store at",
            v2_config,
            "E2",
            "E3",
            "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint.",
            "weft network migrate-v2",
        ],
    );
    // The fix doctor names.
    let migrate = tb
        .exec_output(
            &ns,
            &[
                weft(),
                "network",
                "migrate-v2",
                "--etcd-endpoints",
                &endpoint,
            ],
        )
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    let migrated = doctor(&tb, &ns, &args(&endpoint, &[]));
    migrated.expect("network-config", "OK", &["Network 10.244.0.0/16"]);

    // E1: flannel's stock args (kube subnet manager) on EKS nodes without podCIDRs.
    let e1 = doctor(
        &tb,
        &ns,
        &args(
            &endpoint,
            &[
                flag("--flannel-args", "--ip-masq --kube-subnet-mgr"),
                flag("--nodes-json", fixture(NODES_NO_PODCIDR)),
            ],
        ),
    );
    assert_eq!(e1.code, 1, "{e1}");
    e1.expect(
        "kube-subnet-mgr",
        "FAIL",
        &[
            "node pod cidr not assigned",
            "2 of 2 nodes have no spec.podCIDR: ip-10-0-1-10.ec2.internal, ip-10-0-2-20.ec2.internal",
            "Error registering network: failed to acquire lease: node \"ip-10-0-1-10.ec2.internal\" pod cidr not assigned",
            "EKS never assigns podCIDRs",
            "--etcd-endpoints",
        ],
    );
    // The same cluster in etcd mode is fine.
    let etcd_mode = doctor(
        &tb,
        &ns,
        &args(
            &endpoint,
            &[
                flag(
                    "--flannel-args",
                    format!("--ip-masq --etcd-endpoints={endpoint}"),
                ),
                flag("--nodes-json", fixture(NODES_NO_PODCIDR)),
            ],
        ),
    );
    etcd_mode.expect("kube-subnet-mgr", "OK", &["etcd mode"]);

    tb.teardown().unwrap();
    eprintln!("doctor etcd test took {:?}", started.elapsed());
}
