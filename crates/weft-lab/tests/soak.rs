//! `weft-lab soak` end to end, CI-sized (root only; CI runs as root): every scenario at least once
//! on a real testbed, nothing lost, and the testbed gone afterwards, also after Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

mod common;
use common::{require_siblings, weft_lab as weft};

/// Two soaks at once would slow each other down on a 2-core runner.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn require_binaries() {
    weft_testbed::require_root().expect("weft-lab soak needs root (CI runs as root)");
    require_siblings();
}

fn namespaces_of(id: &str) -> Vec<String> {
    weft_testbed::list_namespaces_with_prefix(id).expect("list namespaces")
}

/// Starts `weft-lab soak` with stdout captured and stderr lines forwarded to a channel (and
/// echoed, so a failing run shows its progress).
fn spawn_soak(args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = weft()
        .arg("soak")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft-lab soak");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for the child, killing it (by pid) after `timeout`; returns (success, stdout).
fn finish(mut child: Child, timeout: Duration) -> (bool, String) {
    let t0 = Instant::now();
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return (st.success(), reader.join().unwrap_or_default());
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weft-lab soak still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn a_short_soak_runs_every_scenario_and_loses_nothing() {
    require_binaries();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let (child, _lines) = spawn_soak(&[
        "--duration",
        "20s",
        "--outage",
        "5s",
        "--scenario",
        "all",
        "-o",
        "json",
    ]);
    let (ok, stdout) = finish(child, Duration::from_secs(120));
    eprintln!("weft-lab soak took {:?}", t0.elapsed());
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{stdout}"));
    assert!(ok, "weft-lab soak failed: {:#}", report["failures"]);
    assert_eq!(report["passed"], true);

    for s in ["restart", "etcd-outage", "drift", "churn"] {
        let n = report["iterations"][s].as_u64().unwrap_or(0);
        assert!(
            n > 0,
            "scenario {s} ran {n} times: {}",
            report["iterations"]
        );
    }
    let pings = report["pings"].as_array().expect("pings");
    assert_eq!(pings.len(), 6, "every ordered pair of 3 nodes");
    for p in pings {
        assert!(p["sent"].as_u64().unwrap() > 500, "{p}");
        assert_eq!(p["lost_unexpected"], 0, "{p}");
    }
    let flows = report["tcp_flows"].as_array().expect("tcp_flows");
    assert_eq!(flows.len(), 3);
    for f in flows {
        assert_eq!(f["resets"], 0, "{f}");
        assert!(f["round_trips"].as_u64().unwrap() > 300, "{f}");
    }
    assert_eq!(report["kernel"]["flaps"], 0, "{}", report["kernel"]);
    assert!(
        report["kernel"]["deletions_caused_by_soak"]
            .as_u64()
            .unwrap()
            > 0,
        "the watchers saw the soak's own drift: {}",
        report["kernel"]
    );
    assert_eq!(report["lease_changes"].as_array().unwrap().len(), 0);
    let t = &report["timings"];
    for k in [
        "restart_ready",
        "etcd_reconnect",
        "repair_route",
        "repair_neigh_fdb",
        "repair_device",
        "repair_iptables",
        "churn_join",
        "churn_leave_deleted",
    ] {
        assert!(t[k]["count"].as_u64().unwrap() > 0, "{k}: {}", t[k]);
    }
    assert!(t["repair"]["max_ms"].as_f64().unwrap() <= 5000.0, "{t}");
    for r in report["rss_kib"].as_array().unwrap() {
        assert!(r["end"].as_u64().unwrap() > 0, "{r}");
    }
    let id = report["testbed"].as_str().expect("testbed id");
    assert!(namespaces_of(id).is_empty(), "testbed {id} torn down");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn ctrl_c_tears_the_testbed_down_and_reports() {
    require_binaries();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // `--json`, the deprecated spelling of `-o json`, still works.
    let (child, lines) = spawn_soak(&["--duration", "10m", "--outage", "5s", "--json"]);
    let pid = child.id();
    let t0 = Instant::now();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("weft-lab soak said nothing for 60 s");
        if line.contains("soak running") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "soak never started");
    }
    std::thread::sleep(Duration::from_secs(1));
    // SIGINT to weft only (not its process group), as a bare `kill -INT` would send
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let (ok, stdout) = finish(child, Duration::from_secs(60));
    assert!(!ok, "an interrupted soak does not pass");
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{stdout}"));
    assert_eq!(report["interrupted"], true);
    let id = report["testbed"].as_str().expect("testbed id");
    assert!(
        namespaces_of(id).is_empty(),
        "testbed {id} left: {:?}",
        namespaces_of(id)
    );
    if let Some(logs) = report["logs"].as_str() {
        let _ = std::fs::remove_dir_all(logs);
    }
}

#[test]
fn bad_flags_are_named_before_anything_is_built() {
    for (args, want) in [
        (vec!["--duration", "10"], "no unit"),
        (vec!["--duration", "10x"], "unknown unit"),
        (vec!["--scenario", "reboot"], "reboot"),
        (vec!["--nodes", "1"], "--nodes 1"),
        (vec!["--pods-per-node", "0"], "--pods-per-node 0"),
        (vec!["--outage", "0s"], "--outage 0 ms"),
        (vec!["--weftd", "/nonexistent/weftd"], "--weftd"),
    ] {
        let out = weft().arg("soak").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
