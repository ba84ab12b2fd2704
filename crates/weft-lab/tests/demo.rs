//! `weft-lab demo` end to end (root only; CI runs as root): the README's main command.

use std::process::Command;

fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft-lab"))
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
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_weft-lab"));
    for sibling in ["weftd", "weft-cni"] {
        assert!(
            bin.with_file_name(sibling).exists(),
            "{sibling} must be built beside weft-lab (cargo build --workspace --bins)"
        );
    }

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
    let id = stderr
        .split_whitespace()
        .find(|w| w.starts_with("wt") && w.len() == 8)
        .expect("testbed id in the progress lines")
        .to_string();
    assert!(!namespaces().contains(&id), "torn down");

    // -o json: stdout is one document (progress stays on stderr); `--pods`, the old
    // spelling of --pods-per-node, still works
    let json = weft()
        .args(["demo", "--nodes", "2", "--pods", "1", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
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
    let keep = weft()
        .args(["demo", "--nodes", "2", "--pods", "1", "--keep"])
        .output()
        .unwrap();
    assert!(
        keep.status.success(),
        "{}",
        String::from_utf8_lossy(&keep.stderr)
    );
    let kept_id = String::from_utf8_lossy(&keep.stderr)
        .split_whitespace()
        .find(|w| w.starts_with("wt") && w.len() == 8)
        .expect("id")
        .to_string();
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
