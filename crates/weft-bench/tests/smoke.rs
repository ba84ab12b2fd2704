//! `weft-bench smoke`: every scenario at tiny sizes (well under a minute), checking that each
//! printed its table with floor and ratio columns. It measures on the namespaced testbed, so
//! it needs root and the weftd / weft-cni binaries built beside weft-bench
//! (`cargo build --workspace --bins`, which scripts/test.sh runs first).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const SCENARIOS: [&str; 7] = [
    "convergence",
    "bulk",
    "footprint",
    "startup",
    "etcd-load",
    "dataplane",
    "cni",
];

/// The header row of every table in `section` that has both a floor and a ratio column.
fn table_headers(section: &str) -> Vec<&str> {
    section
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("floor") && l.contains("ratio"))
        .collect()
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn smoke_prints_every_scenario_with_floor_and_ratio() {
    if let Err(e) = weft_testbed::require_root() {
        panic!(
            "weft-bench smoke builds network namespaces and runs etcd, weftd and iperf3 in them: {e}"
        );
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_weft-bench"));
    for needed in ["weftd", "weft-cni"] {
        let p = bin.with_file_name(needed);
        assert!(
            p.is_file(),
            "{} is missing: build the binaries first with `cargo build --workspace --bins` (scripts/test.sh does)",
            p.display()
        );
    }
    let started = Instant::now();
    let out = Command::new(bin)
        .arg("smoke")
        .output()
        .expect("running weft-bench smoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("weft-bench smoke took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "weft-bench smoke failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        !stdout.contains("MEASUREMENT FAILED"),
        "a measurement broke:\n{stdout}"
    );
    for s in SCENARIOS {
        let start = stdout
            .find(&format!("### {s}\n"))
            .unwrap_or_else(|| panic!("no section for {s}:\n{stdout}"));
        let rest = &stdout[start + 4..];
        let section = &rest[..rest.find("\n### ").unwrap_or(rest.len())];
        let headers = table_headers(section);
        assert!(
            !headers.is_empty(),
            "{s}: no table with floor and ratio columns:\n{section}"
        );
        let rows = section
            .lines()
            .filter(|l| l.starts_with("| ") && !headers.contains(l))
            .count();
        assert!(rows > 0, "{s}: the table has no rows:\n{section}");
    }
}
