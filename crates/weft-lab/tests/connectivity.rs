//! `weft-lab connectivity test` on the cluster `weft-lab demo --keep` leaves (root only; CI runs as
//! root): every pod pair passes ICMP, TCP and the MTU-sized ping, exit 0; with the overlay
//! route deleted in one pod, exit 1 and exactly the pairs to and from that pod fail, named.
//! The kept cluster is removed with `weft-lab demo down`, also when an assertion fails.

use std::process::{Command, Output};

use serde_json::Value;

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft-lab"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Removes the kept demo cluster when the test ends, however it ends.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let o = weft(&["demo", "down"]);
        if !o.status.success() {
            eprintln!("weft-lab demo down failed:\n{}", text(&o));
        }
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn connectivity_test_passes_on_a_kept_demo_and_names_the_pairs_a_broken_route_fails() {
    weft_testbed::require_root().expect("root");
    let started = std::time::Instant::now();
    let _down = Down;
    let keep = weft(&["demo", "--nodes", "2", "--pods-per-node", "2", "--keep"]);
    assert!(keep.status.success(), "{}", text(&keep));

    let ok = weft(&["connectivity", "test", "-o", "json"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let doc: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(doc["ok"], true, "{}", text(&ok));
    let pairs = doc["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 12, "{}", text(&ok));
    for p in pairs {
        for check in ["icmp", "tcp", "mtu"] {
            assert_eq!(p[check]["ok"], true, "{check}: {p}");
        }
        // The MTU check sends a full-sized, unfragmentable packet (the pod MTU).
        assert!(p["mtu_payload"].as_u64().unwrap() > 1000, "{p}");
    }

    // Break pod n1/p0's routes to the overlay (and its default route) (weftd does not own it, so it stays broken).
    let state = std::fs::read_to_string("/run/weft-demo/testbed").unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(state.trim()).join("testbed.json")).unwrap(),
    )
    .unwrap();
    let pod = manifest["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"] == 1 && p["ns"].as_str().unwrap().ends_with("p0"))
        .unwrap()
        .clone();
    let ns = pod["ns"].as_str().unwrap();
    let ip = pod["ip"].as_str().unwrap();
    for route in ["10.244.0.0/16", "default"] {
        let del = Command::new("ip")
            .args(["netns", "exec", ns, "ip", "route", "del", route])
            .output()
            .unwrap();
        assert!(del.status.success(), "{route}: {}", text(&del));
    }

    let broken = weft(&["connectivity", "test"]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    let out = String::from_utf8_lossy(&broken.stdout);
    assert!(out.starts_with("failures:\n"), "{out}");
    assert!(
        out.contains("n0/p0 10.244.") && out.contains(&format!("-> n1/p0 {ip}: ICMP")),
        "{out}"
    );
    assert!(out.contains(&format!("n1/p0 {ip} -> n0/p0")), "{out}");
    assert!(
        out.trim_end()
            .ends_with("8 of 12 pod pairs pass ICMP, TCP and MTU: FAIL"),
        "{out}"
    );
    let json = weft(&["connectivity", "test", "-o", "json"]);
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    let failed = doc["failed"].as_array().unwrap();
    // n1/p0 with each of the 2 pods on node 0, both ways; n1/p1 shares its bridge and still
    // reaches it.
    assert_eq!(failed.len(), 4, "{}", text(&json));
    for f in failed {
        assert!(f["from_ip"] == ip || f["to_ip"] == ip, "{f}");
        assert_eq!(f["icmp"]["ok"], false, "{f}");
    }
    let took = started.elapsed();
    eprintln!("connectivity test took {took:?}");
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
}
