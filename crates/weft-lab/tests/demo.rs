//! `weft-lab demo` end to end (root only; CI runs as root): the README's main command.

use std::process::{Command, Output};

mod common;
use common::{require_siblings, weft_lab as weft};

/// `weft-lab <args>`, asserted to succeed.
fn weft_ok(args: &[&str]) -> Output {
    let out = weft().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "weft-lab {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The testbed id (`wt` and 6 characters) in the progress lines on stderr.
fn testbed_id(stderr: &str) -> String {
    stderr
        .split_whitespace()
        .find(|w| w.starts_with("wt") && w.len() == 8)
        .expect("testbed id in the progress lines")
        .to_string()
}

fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One test, so the demo's single state file is never used by two runs at once.
#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn demo_runs_connects_every_pair_and_cleans_up() {
    weft_testbed::require_root().expect("root");
    require_siblings();

    let out = weft()
        .args(["demo", "--nodes", "2", "--pods-per-node", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("12 of 12 pod pairs connected"), "{stderr}");
    assert!(
        stdout.contains("VTEP MAC") && stdout.contains("n1 "),
        "{stdout}"
    );
    let id = testbed_id(&stderr);
    assert!(!namespaces().contains(&id), "torn down");

    // -o json: stdout is one document (progress stays on stderr); `--pods`, the old
    // spelling of --pods-per-node, still works
    let json = weft_ok(&["demo", "--nodes", "2", "--pods", "1", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "demo -o json is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&json.stdout)
        )
    });
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(2), "{doc}");
    assert_eq!(doc["summary"]["pairs"], 2, "{doc}");
    assert_eq!(doc["summary"]["connected"], 2, "{doc}");
    assert_eq!(doc["pairs"][0]["connected"], true, "{doc}");
    assert!(doc["pairs"][0]["rtt_ms"].as_f64().is_some(), "{doc}");
    assert!(doc["nodes"][0]["vtep_mac"].is_string(), "{doc}");
    assert!(doc["kept_testbed_dir"].is_null(), "{doc}");

    // --keep leaves it running; a second run removes the first; `demo down` removes the last
    let keep = weft_ok(&["demo", "--nodes", "2", "--pods", "1", "--keep"]);
    let kept_id = testbed_id(&String::from_utf8_lossy(&keep.stderr));
    assert!(namespaces().contains(&kept_id), "kept running");
    let again = weft()
        .args(["demo", "--nodes", "2", "--pods", "1", "--keep"])
        .output()
        .unwrap();
    let again_err = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success()
            && again_err.contains("removed the demo cluster left by a previous run"),
        "{again_err}"
    );
    assert!(!namespaces().contains(&kept_id), "previous run cleaned up");
    let down = weft().args(["demo", "down"]).output().unwrap();
    assert!(down.status.success());
    let ns = namespaces();
    assert!(
        !ns.lines()
            .any(|l| l.starts_with("wt") && again_err.contains(l.split('-').next().unwrap_or("?"))),
        "down removed everything: {ns}"
    );
    let down2 = weft().args(["demo", "down"]).output().unwrap();
    assert!(down2.status.success(), "down is idempotent");

    // bad flags are named
    let bad = weft().args(["demo", "--nodes", "1"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--nodes 1"));
}
