//! `weft status` on a 3-node testbed with weftd on every node (root only; CI runs as root).
//! weftd runs with flanneld's flags and the health port the manifest uses (8081); `weft
//! status` runs in node 0's network namespace, as an operator on a node would run it.
//!
//! Healthy: every pair programmed, exit 0. Then weftd on node 2 is killed: the first problem
//! is node 2's unreachable weftd, its row says so, its pairs are unknown, exit 1; the other
//! pairs stay ok.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_testbed::{Signal, Testbed, wait_until, weftd};

mod common;
use common::Run;

fn weft() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

fn status(tb: &Testbed, extra: &[&str]) -> Run {
    let endpoint = format!("--etcd-endpoints={}", tb.etcd_endpoint());
    let mut argv = vec![weft(), "status", endpoint.as_str()];
    argv.extend(extra);
    Run::from(tb.exec_output(&tb.node(0).ns, &argv).unwrap())
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn status_shows_every_pair_programmed_then_an_unreachable_weftd_first() {
    let started = Instant::now();
    let weftd = Path::new(weft()).with_file_name("weftd");
    assert!(
        weftd.exists(),
        "weftd must be built beside weft (cargo build --workspace --bins)"
    );
    let mut tb = weftd::bed("status", 3, weftd::NET_CONFIG)
        .unwrap_or_else(|e| panic!("cannot build the testbed (root needed): {e}"));
    let pids = weftd::spawn_all(&mut tb, &weftd, 3, &["--healthz-port=8081", "--ip-masq"]).unwrap();
    let mut subnets = Vec::new();
    for i in 0..3 {
        let env = weftd::ready(&tb, i, Duration::from_secs(15));
        subnets.push(env.subnet.unwrap().to_string());
    }

    // Without --probe: the leases only, exit 0.
    let plain = status(&tb, &[]);
    assert_eq!(plain.code, 0, "{plain}");
    assert!(plain.stdout.contains("pairs not checked"), "{plain}");
    for s in &subnets {
        assert!(plain.stdout.contains(s.as_str()), "{s}: {plain}");
    }
    // TTLs for people: flanneld's 24 h lease, a few seconds old.
    assert!(plain.stdout.contains("23h59m"), "{plain}");

    // Healthy: all 6 pairs programmed (once every weftd has seen every lease).
    let healthy = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let r = status(&tb, &["--probe", "-o", "json"]);
        (r.code == 0).then_some(r)
    })
    .unwrap_or_else(|| panic!("never healthy:\n{}", status(&tb, &["--probe"])));
    let doc: Value = serde_json::from_str(&healthy.stdout).unwrap();
    assert_eq!(doc["ok"], true, "{healthy}");
    assert_eq!(doc["problems"].as_array().unwrap().len(), 0, "{healthy}");
    let pairs = doc["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 6, "{healthy}");
    assert!(pairs.iter().all(|p| p["state"] == "ok"), "{healthy}");
    for n in doc["nodes"].as_array().unwrap() {
        assert_eq!(n["weftd"], "ok", "{healthy}");
        assert!(n["held_seconds"].as_u64().is_some(), "{healthy}");
    }
    let text = status(&tb, &["--probe"]);
    assert_eq!(text.code, 0, "{text}");
    assert!(
        text.stdout
            .contains("3 nodes, 6 of 6 pairs programmed, 0 FAIL, 0 WARN: OK"),
        "{text}"
    );
    assert!(!text.stdout.contains("problems:"), "{text}");

    // weftd on node 2 killed: its weftd is the first problem, exit 1.
    tb.signal(pids[2], Signal::SIGKILL).unwrap();
    tb.wait_exit(pids[2], Duration::from_secs(5)).unwrap();
    let broken = status(&tb, &["--probe"]);
    assert_eq!(broken.code, 1, "{broken}");
    let first = broken.stdout.lines().nth(1).unwrap_or("");
    assert!(
        first.starts_with(&format!(
            "  FAIL {}: weftd unreachable at http://",
            subnets[2]
        )),
        "{broken}"
    );
    assert!(broken.stdout.contains("unreachable"), "{broken}");
    assert!(broken.stdout.trim_end().ends_with(": FAIL"), "{broken}");
    let json = status(&tb, &["--probe", "-o", "json"]);
    assert_eq!(json.code, 1, "{json}");
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    let pairs = doc["pairs"].as_array().unwrap();
    for p in pairs {
        let want = if p["from"] == subnets[2].as_str() {
            "unknown"
        } else {
            "ok"
        };
        assert_eq!(p["state"], want, "{json}");
    }

    tb.teardown().unwrap();
    let took = started.elapsed();
    eprintln!("status test took {took:?}\nhealthy:\n{text}\nbroken:\n{broken}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
