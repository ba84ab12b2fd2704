//! weftd needs CAP_NET_ADMIN and CAP_NET_RAW and nothing else (issue #6 item 9), root only.
//!
//! weftd runs as uid 0 (like a DaemonSet container) under `setpriv`, entered into the node's
//! namespace first by `ip netns exec` (which itself needs CAP_SYS_ADMIN), with every
//! capability set cut down to those two and no_new_privs: the bounding set, so neither weftd
//! nor the iptables-save/iptables-restore it forks can ever get another one, and the
//! inheritable and ambient sets. Without CAP_DAC_OVERRIDE, uid 0 reads and writes its files
//! only as their owner, like any other user. A second daemon without CAP_NET_ADMIN must fail
//! with an error, not a panic.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::*;
use weft_testbed::Pid;

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const ONLY_NET: u64 = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW);

/// `setpriv` giving exactly `caps` (e.g. "+net_admin,+net_raw") in every set, then exec.
fn setpriv(caps: &str) -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all,{caps}"),
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The capability masks of a process, from /proc/<pid>/status: (field, mask).
fn caps(pid: Pid) -> Vec<(String, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
        })
        .collect()
}

fn cap(pid: Pid, field: &str) -> u64 {
    caps(pid)
        .into_iter()
        .find(|(k, _)| k == field)
        .unwrap_or_else(|| panic!("{field} missing in /proc/{pid}/status"))
        .1
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn weftd_works_with_only_net_admin_and_net_raw() {
    let mut c = Cluster::new("caps", 2, Some(NET_CONFIG));
    let wrap = setpriv("+net_admin,+net_raw");
    let pids: Vec<Pid> = (0..2)
        .map(|i| c.start_wrapped(i, &strs(&wrap), &[]))
        .collect();
    for (i, pid) in pids.iter().enumerate() {
        let got = caps(*pid);
        eprintln!("node {i}: weftd pid {pid}: {got:x?}");
        for field in ["CapPrm", "CapEff", "CapBnd", "CapInh", "CapAmb"] {
            assert_eq!(
                cap(*pid, field),
                ONLY_NET,
                "{field} of weftd on node {i}: {got:x?}"
            );
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])),
            "no_new_privs is set:\n{status}"
        );
    }
    let envs: Vec<_> = (0..2)
        .map(|i| c.wait_ready(i, Duration::from_secs(20)))
        .collect();
    for (i, env) in envs.iter().enumerate() {
        assert!(env.subnet.is_some() && env.ipmasq, "node {i}: {env:?}");
        assert_eq!(
            c.http_get(i, "/readyz").map(|r| r.0),
            Some(200),
            "node {i}:\n{}",
            c.log(i)
        );
        let rules = c.sh(i, &["iptables-save"]);
        for chain in ["FLANNEL-POSTRTG", "FLANNEL-FWD"] {
            assert!(
                rules.contains(&format!(":{chain} ")) && rules.contains(&format!("-j {chain}")),
                "node {i}: chain {chain} made and jumped to:\n{rules}"
            );
        }
    }
    let a = c.pod(0);
    let b = c.pod(1);
    let st = c.tb.ping(&a.ns, b.ip, 10, Duration::from_secs(5)).unwrap();
    assert_eq!(st.received, 10, "cross-node ping: {st:?}");
    // Kernel drift is repaired with the same privileges: a deleted route comes back.
    let sn1 = c.subnet(1);
    let route = format!("{sn1}");
    c.sh(0, &["ip", "route", "del", &route, "dev", "flannel.1"]);
    c.eventually(0, "route repaired", Duration::from_secs(10), || {
        c.routes(0).contains(&route)
    });
    for (i, pid) in pids.iter().enumerate() {
        assert!(c.tb.is_running(*pid), "weftd {i} exited:\n{}", c.log(i));
        let log = c.log(i);
        for bad in ["ERROR", "Operation not permitted", "panicked"] {
            assert!(!log.contains(bad), "node {i} logged {bad:?}:\n{log}");
        }
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn without_net_admin_weftd_fails_with_an_error_not_a_panic() {
    let mut c = Cluster::new("caps-missing", 1, Some(NET_CONFIG));
    let wrap = setpriv("+net_raw");
    let pid = c.start_wrapped(0, &strs(&wrap), &[]);
    let status =
        c.tb.wait_exit(pid, Duration::from_secs(20))
            .expect("wait weftd")
            .unwrap_or_else(|| panic!("weftd kept running without CAP_NET_ADMIN:\n{}", c.log(0)));
    let log = c.log(0);
    eprintln!("exit: {status}; log:\n{log}");
    assert_eq!(
        (status.code(), status.signal()),
        (Some(1), None),
        "an error exit, not a panic (101) or a signal:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    let error = log
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no ERROR line:\n{log}"));
    assert!(
        error.contains("flannel.1") && error.contains("Operation not permitted"),
        "the error names the device and the kernel's refusal: {error}"
    );
    assert!(
        error.contains("CAP_NET_ADMIN"),
        "the error names the missing privilege: {error}"
    );
    assert_eq!(
        error.matches("Operation not permitted").count(),
        1,
        "the kernel's answer is said once: {error}"
    );
    assert!(!c.subnet_file(0).exists(), "not ready without the device");
}

/// `env XTABLES_LOCKFILE=<file in the bed>`: iptables-legacy then leaves the host's
/// /run/xtables.lock alone.
fn own_lock(c: &Cluster) -> Vec<String> {
    let lock = c.tb.dir().join("xtables.lock");
    vec!["env".into(), format!("XTABLES_LOCKFILE={}", lock.display())]
}

/// Why CAP_NET_RAW is in the set: iptables-legacy talks to the kernel over a raw socket. With
/// iptables-nft (netlink only, Debian 12's default) CAP_NET_ADMIN alone is enough.
#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn net_raw_is_what_iptables_legacy_needs() {
    let mut c = Cluster::new("caps-legacy", 3, Some(NET_CONFIG));
    let ns = c.tb.node(0).ns.clone();
    let probe =
        c.tb.exec_output(&ns, &["iptables-legacy", "-t", "nat", "-S"])
            .unwrap();
    assert!(
        probe.status.success(),
        "iptables-legacy does not work here even with every privilege (is the ip_tables module available?): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let lock = own_lock(&c);
    let both = [lock.clone(), setpriv("+net_admin,+net_raw")].concat();
    let admin_only = [lock, setpriv("+net_admin")].concat();
    let legacy = ["--iptables-backend=legacy"];
    c.start_wrapped(0, &strs(&both), &legacy);
    c.start_wrapped(1, &strs(&admin_only), &legacy);
    c.start_wrapped(2, &strs(&admin_only), &[]);
    c.wait_ready(0, Duration::from_secs(20));
    let legacy_rules = c.sh(0, &["iptables-legacy-save", "-t", "nat"]);
    assert!(
        legacy_rules.contains(":FLANNEL-POSTRTG "),
        "node 0 programs iptables-legacy:\n{legacy_rules}"
    );
    c.wait_ready(2, Duration::from_secs(20));
    let nft_rules = c.sh(2, &["iptables-save", "-t", "nat"]);
    assert!(nft_rules.contains(":FLANNEL-POSTRTG "), "{nft_rules}");
    std::thread::sleep(Duration::from_secs(3));
    let log = c.log(1);
    eprintln!("iptables-legacy without CAP_NET_RAW:\n{log}");
    assert!(
        !c.subnet_file(1).exists(),
        "node 1 became ready without CAP_NET_RAW under iptables-legacy:\n{log}"
    );
    assert!(
        log.contains("iptables") && log.contains("CAP_NET_RAW"),
        "the failure names iptables and the capability it needs:\n{log}"
    );
    assert!(c.tb.is_running(c.weftd[1].unwrap()), "it keeps retrying");
}
