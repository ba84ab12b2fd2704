//! The `weft network` and `weft leases` commands against a real etcd in a namespaced testbed
//! (root only; CI runs as root: without root these tests fail with the testbed's reason).
//! The tests at the end need neither root nor etcd.

use std::process::Command;

use serde_json::Value;
use weft_testbed::{Testbed, TestbedConfig};

mod common;
use common::Run;

const KEY: &str = "/coreos.com/network/config";
const SUBNETS: &str = "/coreos.com/network/subnets/";
const MANIFEST: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

fn bed(label: &str, etcd_v2: bool) -> Testbed {
    Testbed::new(
        label,
        TestbedConfig {
            nodes: 1,
            underlay_mtu: 1500,
            etcd: true,
            etcd_v2,
        },
    )
    .unwrap_or_else(|e| panic!("{label}: cannot build the testbed: {e}"))
}

impl Run {
    fn ok(self, what: &str) -> Run {
        assert_eq!(self.code, 0, "{what}: {self}");
        self
    }

    fn fails(self, what: &str) -> Run {
        assert_eq!(self.code, 1, "{what}: {self}");
        self
    }
}

/// `weft <args> --etcd-endpoints <bed's etcd>` inside the bed's node 0.
fn weft(tb: &Testbed, args: &[&str]) -> Run {
    let ep = tb.etcd_endpoint();
    let mut cmd = vec![weft_bin()];
    cmd.extend_from_slice(args);
    cmd.extend_from_slice(&["--etcd-endpoints", &ep]);
    Run::from(
        tb.exec_output(&tb.node(0).ns, &cmd)
            .unwrap_or_else(|e| panic!("weft {args:?}: {e}")),
    )
}

fn get(tb: &Testbed, key: &str) -> String {
    tb.etcdctl(&["get", "--print-value-only", key])
        .expect("etcdctl get")
        .trim_end()
        .to_string()
}

fn mod_revision(tb: &Testbed, key: &str) -> i64 {
    let out = tb
        .etcdctl(&["get", "-w", "json", key])
        .expect("etcdctl get");
    let v: Value = serde_json::from_str(&out).expect("etcdctl json");
    v["kvs"][0]["mod_revision"].as_i64().unwrap_or(0)
}

fn etcdctl_v2(tb: &Testbed, args: &[&str]) -> String {
    let mut cmd = vec![
        "env",
        "ETCDCTL_API=2",
        "etcdctl",
        "--endpoints",
        "http://127.0.0.1:2379",
    ];
    cmd.extend_from_slice(args);
    tb.exec(tb.etcd_ns(), &cmd)
        .unwrap_or_else(|e| panic!("etcdctl (v2) {args:?}: {e}"))
}

fn vxlan_lease(ip: &str, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn init_writes_show_reads_back_and_init_is_idempotent() {
    let tb = bed("weft-cli-init-show", false);

    let r = weft(&tb, &["network", "show"]).fails("show without a config");
    assert!(r.stderr.contains("weft network init"), "{r}");

    let r = weft(
        &tb,
        &["network", "init", "--network", "10.244.0.0/16", "--dry-run"],
    )
    .ok("init --dry-run");
    assert!(r.stdout.contains("dry run: would write"), "{r}");
    assert_eq!(get(&tb, KEY), "", "--dry-run wrote nothing");

    let r = weft(&tb, &["network", "init", "--network", "10.244.0.0/16"]).ok("init");
    assert!(r.stdout.contains(&format!("writing {KEY}")), "{r}");
    assert!(r.stdout.contains(MANIFEST), "{r}");
    assert_eq!(get(&tb, KEY), MANIFEST);

    let r = weft(&tb, &["network", "show"]).ok("show");
    for needle in [
        MANIFEST,
        "Network    10.244.0.0/16",
        "SubnetLen  24",
        "SubnetMin  10.244.1.0",
        "SubnetMax  10.244.255.0",
        "Subnets    255",
        "Backend    vxlan",
        "VNI        1",
        "Port       8472",
        "MTU        from the node interface",
    ] {
        assert!(r.stdout.contains(needle), "{needle:?}: {r}");
    }
    let j = weft(&tb, &["network", "show", "--output", "json"])
        .ok("show json")
        .json();
    assert_eq!(j["key"], KEY);
    assert_eq!(j["raw"], MANIFEST);
    assert_eq!(j["valid"], true);
    assert_eq!(j["effective"]["Network"], "10.244.0.0/16");
    assert_eq!(j["effective"]["SubnetLen"], 24);
    assert_eq!(j["effective"]["Subnets"], 255);
    assert_eq!(j["effective"]["Backend"], "vxlan");
    assert_eq!(j["effective"]["VNI"], 1);
    assert_eq!(j["effective"]["Port"], 8472);
    assert_eq!(j["effective"]["MTU"], Value::Null);

    // Same flags again, and an equivalent hand-written config: nothing is written.
    let rev = mod_revision(&tb, KEY);
    let r = weft(&tb, &["network", "init", "--network", "10.244.0.0/16"]).ok("init again");
    assert!(r.stdout.contains("already holds this config"), "{r}");
    let r = weft(
        &tb,
        &[
            "network",
            "init",
            "--json",
            r#"{"network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1}}"#,
        ],
    )
    .ok("init equivalent json");
    assert!(r.stdout.contains("equivalent config"), "{r}");
    let file = tb.dir().join("net-conf.json");
    std::fs::write(&file, format!("{MANIFEST}\n")).expect("write net-conf.json");
    let path = file.to_str().expect("utf-8 path");
    let r = weft(&tb, &["network", "init", "--from-file", path]).ok("init --from-file");
    assert!(r.stdout.contains("already holds this config"), "{r}");
    assert_eq!(
        mod_revision(&tb, KEY),
        rev,
        "idempotent init must not write"
    );

    let r = weft(&tb, &["network", "check"]).ok("check");
    assert!(r.stdout.contains("check passed"), "{r}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn init_with_a_different_network_refuses_without_force() {
    let tb = bed("weft-cli-init-force", false);
    weft(&tb, &["network", "init", "--network", "10.244.0.0/16"]).ok("init");
    let lease = format!("{SUBNETS}10.244.3.0-24");
    tb.etcdctl(&[
        "put",
        &lease,
        &vxlan_lease("10.250.1.1", "aa:bb:cc:dd:ee:01"),
    ])
    .expect("put lease");

    // The same other network, without and with --force.
    let init_other = |extra: &[&str]| {
        let flags = ["--network", "10.245.0.0/16", "--subnet-len", "25"];
        weft(&tb, &[&["network", "init"], &flags[..], extra].concat())
    };
    let r = init_other(&[]).fails("init with another network");
    for needle in [
        "already holds a different config",
        "Network: 10.244.0.0/16 -> 10.245.0.0/16",
        "SubnetLen: 24 -> 25",
        "- stored: {\"Network\":\"10.244.0.0/16\"",
        "+ new:    {\"Network\":\"10.245.0.0/16\",\"SubnetLen\":25",
        "1 of the 1 leases",
        "--force",
    ] {
        assert!(r.stderr.contains(needle), "{needle:?}: {r}");
    }
    assert_eq!(get(&tb, KEY), MANIFEST, "refused init must not write");

    let r = init_other(&["--force"]).ok("init --force");
    assert!(r.stdout.contains("replacing it (--force)"), "{r}");
    assert_eq!(
        get(&tb, KEY),
        r#"{"Network":"10.245.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan"}}"#
    );
    // The old lease no longer fits: check says so.
    let r = weft(&tb, &["network", "check"]).fails("check after the change");
    assert!(r.stdout.contains("10.244.3.0-24: OUTSIDE"), "{r}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn check_on_a_missing_config_explains_and_fails() {
    let tb = bed("weft-cli-check-missing", false);
    let r = weft(&tb, &["network", "check"]).fails("check without a config");
    for needle in [
        &format!("{KEY} does not exist in the etcd v3 store") as &str,
        "serves no v2 API (it runs without --enable-v2)",
        "weft network init --network 10.244.0.0/16",
        &format!(
            "ETCDCTL_API=3 etcdctl --endpoints {} put {KEY} '{MANIFEST}'",
            tb.etcd_endpoint()
        ),
        "check failed",
    ] {
        assert!(r.stdout.contains(needle), "{needle:?}: {r}");
    }
    let j = weft(&tb, &["network", "check", "-o", "json"])
        .fails("check json")
        .json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["config"]["found"], false);
    assert!(!j["problems"].as_array().unwrap().is_empty());
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn v2_only_config_is_explained_and_migrate_v2_fixes_it() {
    let tb = bed("weft-cli-v2", true);

    let r = weft(&tb, &["network", "check"]).fails("check with nothing anywhere");
    assert!(r.stdout.contains("not in the etcd v2 store at"), "{r}");
    let r = weft(&tb, &["network", "migrate-v2"]).fails("migrate with nothing in v2");
    assert!(r.stderr.contains("nothing to migrate"), "{r}");

    // What the seed procedure's step 7 did for flannel v0.13 (etcdctl 3.4 still speaks v2).
    let v2_config = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
    etcdctl_v2(&tb, &["set", KEY, v2_config]);
    etcdctl_v2(
        &tb,
        &[
            "set",
            "--ttl",
            "600",
            &format!("{SUBNETS}10.244.7.0-24"),
            &vxlan_lease("10.250.1.1", "aa:bb:cc:dd:ee:01"),
        ],
    );
    assert_eq!(get(&tb, KEY), "", "v2 writes are invisible to v3");

    let r = weft(&tb, &["network", "check"]).fails("check with a v2-only config");
    for needle in [
        "missing from etcd v3 (found in etcd v2 only)",
        "holds it:",
        v2_config,
        "invisible to v3 clients",
        "E2",
        "E3",
        "--enable-v2",
        "weft network migrate-v2",
    ] {
        assert!(r.stdout.contains(needle), "{needle:?}: {r}");
    }
    let j = weft(&tb, &["network", "check", "--output", "json"])
        .fails("check json")
        .json();
    assert_eq!(j["config"]["v2_value"], v2_config);

    let r = weft(&tb, &["network", "migrate-v2", "--dry-run"]).ok("migrate --dry-run");
    assert!(r.stdout.contains("dry run: would write"), "{r}");
    assert_eq!(get(&tb, KEY), "");

    let r = weft(&tb, &["network", "migrate-v2"]).ok("migrate");
    assert!(r.stdout.contains("copied"), "{r}");
    assert!(
        r.stdout.contains(
            "1 subnet lease under /coreos.com/network/subnets/ in the v2 store is not copied"
        ),
        "{r}"
    );
    assert_eq!(get(&tb, KEY), v2_config);

    let r = weft(&tb, &["network", "check"]).ok("check after the migration");
    assert!(r.stdout.contains("check passed"), "{r}");
    let r = weft(&tb, &["network", "migrate-v2"]).ok("migrate again");
    assert!(r.stdout.contains("already holds this config"), "{r}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn leases_list_flags_each_kind_of_lease() {
    let tb = bed("weft-cli-leases", false);
    weft(&tb, &["network", "init", "--network", "10.244.0.0/16"]).ok("init");

    let grant = tb.etcdctl(&["lease", "grant", "600"]).expect("lease grant");
    let id = grant
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("lease id in {grant:?}"))
        .to_string();
    let key = |tail: &str| format!("{SUBNETS}{tail}");
    let put = |tail: &str, value: &str, lease: bool| {
        let k = key(tail);
        let lease_flag = format!("--lease={id}");
        let mut args = vec!["put", k.as_str(), value];
        if lease {
            args.insert(1, &lease_flag);
        }
        tb.etcdctl(&args)
            .unwrap_or_else(|e| panic!("put {tail}: {e}"));
    };
    let put_vxlan = |tail: &str, ip: &str, mac: &str, lease: bool| {
        put(tail, &vxlan_lease(ip, mac), lease);
    };
    put_vxlan("10.244.1.0-24", "10.250.1.1", "aa:bb:cc:dd:ee:01", true);
    put_vxlan("10.244.2.0-24", "10.250.1.2", "aa:bb:cc:dd:ee:02", false);
    put("10.244.3.0-24", "this is not json", false);
    put_vxlan("10.244.4.0-24", "10.250.1.9", "aa:bb:cc:dd:ee:04", true);
    put_vxlan("10.244.5.0-24", "10.250.1.9", "aa:bb:cc:dd:ee:05", false);
    put_vxlan("10.9.0.0-24", "10.250.1.6", "aa:bb:cc:dd:ee:06", false);
    put_vxlan("10.244.8.0-23", "10.250.1.7", "aa:bb:cc:dd:ee:07", false);
    put_vxlan("10.244.9.0-24", "10.250.1.8", "aa:bb:cc:dd:ee:08", false);

    let r = weft(&tb, &["leases", "list"]).ok("leases list");
    let row = |subnet: &str| -> String {
        r.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{subnet} ")))
            .unwrap_or_else(|| panic!("no row for {subnet}: {r}"))
            .to_string()
    };
    let normal = row("10.244.1.0/24");
    assert!(
        normal.contains("10.250.1.1")
            && normal.contains("aa:bb:cc:dd:ee:01")
            && normal.ends_with(" -"),
        "{normal}"
    );
    // The TTL (600 s granted) is for people: 10m or 9m59s, not a count of seconds.
    assert!(
        normal
            .split_whitespace()
            .any(|w| w == "10m" || (w.starts_with("9m") && w.ends_with('s'))),
        "{normal}"
    );
    assert!(row("10.244.2.0/24").contains("reservation"), "{r}");
    assert!(row("10.244.2.0/24").ends_with(" -"), "{r}");
    assert!(row("10.244.3.0/24").ends_with("BAD"), "{r}");
    assert!(row("10.244.4.0/24").ends_with("DUPLICATE-IP"), "{r}");
    assert!(row("10.244.5.0/24").ends_with("DUPLICATE-IP"), "{r}");
    assert!(row("10.9.0.0/24").ends_with("OUTSIDE"), "{r}");
    assert!(row("10.244.8.0/23").ends_with("OVERLAP,OUTSIDE"), "{r}");
    assert!(row("10.244.9.0/24").ends_with("OVERLAP"), "{r}");
    assert!(
        r.stdout
            .contains("10.244.3.0-24: BAD: lease value is not valid JSON"),
        "{r}"
    );
    // 1, 2, 3, 4, 5, 8, 9 are taken (the /23 covers 8 and 9); 10.9.0.0 is not in the network.
    assert!(
        r.stdout
            .contains("8 leases (6 reservations), 248 free subnets of 255, 7 problems"),
        "{r}"
    );

    let j = weft(&tb, &["leases", "list", "--output", "json"])
        .ok("leases list json")
        .json();
    let leases = j["leases"].as_array().expect("leases array");
    let by_key = |k: &str| -> &Value {
        leases
            .iter()
            .find(|l| l["key"] == k)
            .unwrap_or_else(|| panic!("{k} missing from {j}"))
    };
    let normal = by_key("10.244.1.0-24");
    let ttl = normal["ttl"].as_i64().expect("numeric TTL");
    assert!((1..=600).contains(&ttl), "{normal}");
    assert_eq!(normal["flags"], serde_json::json!([]));
    assert_eq!(normal["public_ip"], "10.250.1.1");
    assert_eq!(normal["vtep_mac"], "aa:bb:cc:dd:ee:01");
    assert_eq!(normal["vni"], 1);
    assert_eq!(normal["backend_type"], "vxlan");
    assert_eq!(by_key("10.244.2.0-24")["ttl"], "reservation");
    assert_eq!(by_key("10.244.3.0-24")["flags"], serde_json::json!(["BAD"]));
    assert_eq!(
        by_key("10.244.4.0-24")["flags"],
        serde_json::json!(["DUPLICATE-IP"])
    );
    assert_eq!(j["summary"]["free"], 248);
    assert_eq!(j["summary"]["total"], 255);
    assert_eq!(j["summary"]["problems"], 7);

    let r = weft(&tb, &["network", "check"]).fails("check with bad leases");
    assert!(r.stdout.contains("7 problems:"), "{r}");
    for needle in [
        "lease 10.244.3.0-24: BAD",
        "lease 10.244.4.0-24: DUPLICATE-IP",
        "lease 10.244.5.0-24: DUPLICATE-IP",
        "lease 10.9.0.0-24: OUTSIDE",
        "lease 10.244.8.0-23: OUTSIDE",
        "lease 10.244.8.0-23: OVERLAP",
        "lease 10.244.9.0-24: OVERLAP",
    ] {
        assert!(r.stdout.contains(needle), "{needle:?}: {r}");
    }
}

// ---- without root or etcd ----

fn weft_local(args: &[&str]) -> Run {
    Run::from(
        Command::new(weft_bin())
            .args(args)
            .env_remove("FLANNELD_ETCD_ENDPOINTS")
            .env_remove("FLANNELD_ETCD_PREFIX")
            .output()
            .expect("run weft"),
    )
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["network", "--help"],
        &["network", "init", "--help"],
        &["network", "show", "--help"],
        &["network", "check", "--help"],
        &["network", "migrate-v2", "--help"],
        &["leases", "--help"],
        &["leases", "list", "--help"],
        &["doctor", "--help"],
        &["manifest", "--help"],
        &["install-cni", "--help"],
        &["node", "cleanup-vpc-cni", "--help"],
        &["etcd", "ignition", "--help"],
        &["eks", "plan", "--help"],
        &["completion", "--help"],
        &["version", "--help"],
    ] {
        let r = weft_local(args).ok(&format!("{args:?}"));
        assert!(r.stdout.contains("Usage: weft"), "{args:?}: {r}");
    }
    let r = weft_local(&["network", "init", "--help"]);
    assert!(r.stdout.contains("FLANNELD_ETCD_ENDPOINTS"), "{r}");
}

#[test]
fn bad_input_is_refused_before_etcd_is_contacted() {
    // Nothing listens on port 1: had weft contacted etcd, the error would be about that.
    let ep = ["--etcd-endpoints", "http://127.0.0.1:1"];
    let cases: &[(&[&str], &str)] = &[
        (
            &["--network", "10.244.1.0/16"],
            "pass --network 10.244.0.0/16",
        ),
        (
            &["--network", "10.244.0.0/16", "--subnet-len", "31"],
            "--subnet-len",
        ),
        (
            &["--network", "10.244.0.0/16", "--vni", "16777216"],
            "--vni",
        ),
        (&["--json", "{\"Network\":"], "--json is invalid"),
        (
            &["--from-file", "/nonexistent/net-conf.json"],
            "/nonexistent/net-conf.json",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["network", "init"];
        all.extend_from_slice(args);
        all.extend_from_slice(&ep);
        let r = weft_local(&all).fails(&format!("{args:?}"));
        assert!(r.stderr.contains(needle), "{args:?}: {r}");
        assert!(!r.stderr.contains("127.0.0.1:1"), "{args:?}: {r}");
    }
}

#[test]
fn flags_that_would_be_ignored_are_refused() {
    let r = weft_local(&["network", "init", "--json", MANIFEST, "--vni", "5"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("--vni"), "{r}");
    let r = weft_local(&["network", "init"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("--network"), "{r}");
}

#[test]
fn unreachable_etcd_is_named_with_the_fix() {
    // One line: the endpoint, the cause (the socket's error, not the transport's debug chain)
    // and the fix, from every command that reads etcd.
    for args in [
        &["leases", "list"][..],
        &["network", "show"],
        &["network", "check"],
        &["network", "init", "--network", "10.244.0.0/16"],
    ] {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--etcd-endpoints", "http://127.0.0.1:1"]);
        let r = weft_local(&all).fails(&format!("{args:?}"));
        assert!(r.stderr.contains("http://127.0.0.1:1"), "{args:?}: {r}");
        assert!(r.stderr.contains("Connection refused"), "{args:?}: {r}");
        assert!(r.stderr.contains("check --etcd-endpoints"), "{args:?}: {r}");
        assert_eq!(r.stderr.lines().count(), 1, "one line: {r}");
        for dump in ["tonic", "source:", "ConnectError", "grpc request error"] {
            assert!(!r.stderr.contains(dump), "{args:?}: {dump:?} in {r}");
        }
        assert!(
            r.stderr.len() < 400,
            "{args:?}: {} bytes: {r}",
            r.stderr.len()
        );
    }
}

#[test]
fn top_level_help_is_one_line_per_command_in_workflow_order() {
    let r = weft_local(&["--help"]).ok("--help");
    assert!(r.stdout.len() < 2048, "{} bytes: {r}", r.stdout.len());
    let commands: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    for line in &commands {
        assert!(line.len() <= 100, "summary longer than a line: {line:?}");
    }
    let names: Vec<&str> = commands
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let order = [
        "etcd",
        "eks",
        "network",
        "manifest",
        "install-cni",
        "node",
        "leases",
        "doctor",
        "completion",
        "version",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|c| {
            names
                .iter()
                .position(|n| n == c)
                .unwrap_or_else(|| panic!("{c} missing from --help: {r}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "not in workflow order {order:?}: {names:?}"
    );
}

#[test]
fn version_prints_what_dash_dash_version_prints_or_json() {
    let flag = weft_local(&["--version"]).ok("--version");
    let cmd = weft_local(&["version"]).ok("version");
    assert_eq!(cmd.stdout, flag.stdout);
    assert_eq!(
        cmd.stdout.trim(),
        format!("weft {}", env!("CARGO_PKG_VERSION"))
    );
    let j = weft_local(&["version", "-o", "json"])
        .ok("version -o json")
        .json();
    assert_eq!(j["name"], "weft");
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn completion_scripts_name_the_commands() {
    for (shell, marker) in [
        ("bash", "complete -F _weft"),
        ("zsh", "#compdef weft"),
        ("fish", "complete -c weft"),
        ("elvish", "edit:completion:arg-completer[weft]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let r = weft_local(&["completion", shell]).ok(shell);
        assert!(r.stdout.contains(marker), "{shell}: {marker:?} missing");
        for sub in [
            "install-cni",
            "cleanup-vpc-cni",
            "migrate-v2",
            "etcd-endpoints",
        ] {
            assert!(r.stdout.contains(sub), "{shell}: {sub} missing");
        }
    }
    let r = weft_local(&["completion", "tcsh"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("[possible values: bash"), "{r}");
}

#[test]
fn old_spellings_are_hidden_but_named_in_help() {
    for (args, canonical, old) in [
        (
            &["doctor", "--help"][..],
            "--conf-dir",
            "`--cni-conf-dir` is the old",
        ),
        (
            &["etcd", "ignition", "--help"],
            "--etcd-version",
            "`--version` is the old spelling",
        ),
    ] {
        let r = weft_local(args).ok(&format!("{args:?}"));
        assert!(r.stdout.contains(canonical), "{args:?}: {r}");
        assert!(r.stdout.contains(old), "{args:?}: {old:?} missing: {r}");
    }
}
