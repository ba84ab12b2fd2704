//! weftd and the host's iptables (root only): the backend it writes with follows the rules
//! already on the node (kube-proxy's iptables-wrapper convention) unless --iptables-backend
//! says otherwise, and a held xtables lock delays the rules without hanging weftd.
//!
//! iptables-legacy takes the xtables lock, a file shared by every network namespace of the
//! host (/run/xtables.lock). These tests never touch the host's: every iptables-legacy they
//! run, and weftd, use a lock file in the test's own directory (XTABLES_LOCKFILE, which
//! Debian's iptables 1.8.9 honours).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

/// The lock file of this test bed.
fn lock_file(c: &Cluster) -> PathBuf {
    c.tb.dir().join("xtables.lock")
}

/// `iptables*` in node `i` with the bed's lock file.
fn ipt(c: &Cluster, i: usize, cmd: &[&str]) -> String {
    let lock = format!("XTABLES_LOCKFILE={}", lock_file(c).display());
    let full: Vec<&str> = ["env", lock.as_str()]
        .into_iter()
        .chain(cmd.iter().copied())
        .collect();
    c.sh(i, &full)
}

/// What kube-proxy and kubelet leave on a node: kubelet's hint chain in mangle and a few
/// service rules in nat, written with `backend` (`legacy` or `nft`).
fn kube_rules(c: &Cluster, i: usize, backend: &str) {
    let bin = format!("iptables-{backend}");
    ipt(c, i, &[&bin, "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]);
    ipt(c, i, &[&bin, "-t", "nat", "-N", "KUBE-SERVICES"]);
    for n in 1..=3 {
        let dst = format!("172.20.0.{n}/32");
        ipt(
            c,
            i,
            &[
                &bin,
                "-t",
                "nat",
                "-A",
                "KUBE-SERVICES",
                "-d",
                &dst,
                "-p",
                "tcp",
                "-j",
                "RETURN",
            ],
        );
    }
    ipt(
        c,
        i,
        &[&bin, "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES"],
    );
}

fn start(c: &mut Cluster, i: usize, extra: &[&str]) {
    let lock = lock_file(c).display().to_string();
    c.start_env(i, extra, &[("XTABLES_LOCKFILE", &lock)]);
}

fn has_flannel_rules(c: &Cluster, i: usize, backend: &str) -> bool {
    let nat = ipt(c, i, &[&format!("iptables-{backend}-save"), "-t", "nat"]);
    nat.contains(":FLANNEL-POSTRTG ") && nat.contains("-A FLANNEL-POSTRTG")
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn weftd_writes_with_the_backend_that_holds_the_hosts_rules() {
    let mut c = Cluster::new("ipt-backend", 4, Some(NET_CONFIG));
    // 0: an AL2-like node (kube-proxy on iptables-legacy), auto; 1: an AL2023-like node
    // (iptables-nft), auto; 2: legacy holds the rules but the flag says nft; 3: nft holds
    // them but the flag (from the environment) says legacy.
    kube_rules(&c, 0, "legacy");
    kube_rules(&c, 1, "nft");
    kube_rules(&c, 2, "legacy");
    kube_rules(&c, 3, "nft");
    start(&mut c, 0, &["--iptables-resync=1"]);
    start(&mut c, 1, &[]);
    start(&mut c, 2, &["--iptables-backend=nft"]);
    let lock = lock_file(&c).display().to_string();
    c.start_env(
        3,
        &[],
        &[
            ("XTABLES_LOCKFILE", &lock),
            ("WEFT_IPTABLES_BACKEND", "legacy"),
        ],
    );
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(20));
    }
    for (i, want, other) in [
        (0, "legacy", "nft"),
        (1, "nft", "legacy"),
        (2, "nft", "legacy"),
        (3, "legacy", "nft"),
    ] {
        assert!(
            has_flannel_rules(&c, i, want),
            "node {i}: the rules are in iptables-{want}; log:\n{}",
            c.log(i)
        );
        assert!(
            !has_flannel_rules(&c, i, other),
            "node {i}: no rules in iptables-{other}"
        );
    }
    let log0 = c.log(0);
    assert!(
        log0.contains("iptables backend detected")
            && log0.contains("kubelet's KUBE-IPTABLES-HINT chain is in iptables-legacy"),
        "the choice and its reason are logged:\n{log0}"
    );
    assert!(
        c.log(1)
            .contains("KUBE-IPTABLES-HINT chain is in iptables-nft")
    );
    assert!(c.log(2).contains("set by --iptables-backend"));
    for (i, want) in [(0, "legacy"), (1, "nft"), (2, "nft"), (3, "legacy")] {
        let (_, metrics) = c.http_get(i, "/metrics").expect("metrics");
        assert!(
            metrics.contains(&format!("weft_iptables_backend{{backend=\"{want}\"}} 1")),
            "node {i}:\n{metrics}"
        );
    }

    // Drift watching follows the chosen backend: on the legacy node (no nf_tables
    // announcements) a flushed chain is put back by the periodic check, on the nft node at once.
    let t0 = Instant::now();
    ipt(
        &c,
        0,
        &["iptables-legacy", "-t", "nat", "-F", "FLANNEL-POSTRTG"],
    );
    c.eventually(
        0,
        "legacy FLANNEL-POSTRTG repaired",
        Duration::from_secs(5),
        || has_flannel_rules(&c, 0, "legacy"),
    );
    eprintln!("legacy drift repaired in {:?}", t0.elapsed());
    let t0 = Instant::now();
    c.sh(1, &["iptables-nft", "-t", "nat", "-F", "FLANNEL-POSTRTG"]);
    c.eventually(
        1,
        "nft FLANNEL-POSTRTG repaired",
        Duration::from_secs(3),
        || has_flannel_rules(&c, 1, "nft"),
    );
    eprintln!("nft drift repaired in {:?}", t0.elapsed());
    assert!(
        !has_flannel_rules(&c, 0, "nft") && !has_flannel_rules(&c, 1, "legacy"),
        "repairs use the chosen backend too"
    );
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_fresh_node_without_rules_gets_nft_and_is_told_why() {
    let mut c = Cluster::new("ipt-fresh", 1, Some(NET_CONFIG));
    start(&mut c, 0, &[]);
    c.wait_ready(0, Duration::from_secs(20));
    assert!(has_flannel_rules(&c, 0, "nft"));
    assert!(!has_flannel_rules(&c, 0, "legacy"));
    let log = c.log(0);
    assert!(
        log.contains("neither iptables-legacy nor iptables-nft holds a rule yet"),
        "{log}"
    );
}

/// Holds `file` with `flock(1)` (an exclusive flock, as iptables-legacy takes it) for `secs`.
struct LockHolder {
    child: Child,
}

impl LockHolder {
    fn hold(file: &Path, secs: u64) -> LockHolder {
        let child = Command::new("flock")
            .arg(file)
            .args(["sleep", &secs.to_string()])
            .spawn()
            .expect("flock");
        // Wait until the lock is taken (the file exists and /proc/locks names the holder).
        let pid = child.id();
        weft_testbed::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            let locks = std::fs::read_to_string("/proc/locks").ok()?;
            locks
                .lines()
                .any(|l| l.split_whitespace().nth(4) == Some(&pid.to_string()))
                .then_some(())
        })
        .expect("flock took the lock");
        LockHolder { child }
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_held_xtables_lock_delays_the_rules_and_readyz_names_its_holder() {
    let mut c = Cluster::new("ipt-lock", 1, Some(NET_CONFIG));
    kube_rules(&c, 0, "legacy");
    let mut holder = LockHolder::hold(&lock_file(&c), 20);
    let held_at = Instant::now();
    let pid = holder.child.id();
    start(&mut c, 0, &[]);
    let weftd = c.weftd[0].unwrap();

    // While the lock is held: weftd runs and answers, /readyz says who holds the lock, no rule
    // and no subnet.env.
    let want = format!("waiting for the xtables lock held by PID {pid} (flock)");
    c.eventually(
        0,
        "/readyz names the lock holder",
        Duration::from_secs(8),
        || {
            c.http_get(0, "/readyz")
                .is_some_and(|(code, body)| code == 503 && body.contains(&want))
        },
    );
    let seen_after = held_at.elapsed();
    eprintln!("/readyz named the holder {seen_after:?} after the lock was taken");
    std::thread::sleep(Duration::from_secs(8));
    let (code, body) = c.http_get(0, "/readyz").expect("readyz answers");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(&want),
        "still waiting, still says why: {body}"
    );
    assert!(c.tb.is_running(weftd), "weftd runs on");
    assert_eq!(
        c.http_get(0, "/healthz").map(|(code, _)| code),
        Some(200),
        "the health server is not stuck behind the lock"
    );
    assert!(!has_flannel_rules(&c, 0, "legacy"));
    assert!(!c.subnet_file(0).exists(), "no subnet.env before the rules");

    // The holder lets go (after 20 s): rules and readiness follow at once.
    holder.child.wait().expect("flock ends");
    let released = Instant::now();
    eprintln!("lock held for {:?}", held_at.elapsed());
    c.eventually(
        0,
        "ready after the lock is released",
        Duration::from_secs(5),
        || {
            c.http_get(0, "/readyz")
                .is_some_and(|(code, _)| code == 200)
        },
    );
    let ready_after = released.elapsed();
    assert!(has_flannel_rules(&c, 0, "legacy"));
    assert!(c.subnet_file(0).exists());
    eprintln!("ready {ready_after:?} after the xtables lock was released");
    assert!(
        ready_after < Duration::from_secs(2),
        "ready {ready_after:?} after the release"
    );
    let log = c.log(0);
    let retries = log.matches("gave up after 5 s").count();
    assert!(retries >= 3, "bounded waits, retried:\n{log}");
    let (_, metrics) = c.http_get(0, "/metrics").expect("metrics");
    assert!(
        metrics.contains(&format!("weft_iptables_lock_busy_total {retries}")),
        "each busy wait is counted:\n{metrics}"
    );
}
