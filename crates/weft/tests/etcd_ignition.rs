//! `weft etcd ignition`: golden Ignition configs (cert bodies replaced by placeholders, so
//! they are deterministic), CLI errors, and the generated etcd flags run for real.
//!
//! The testbed tests (root only; CI runs as root) take the etcd flags out of the generated
//! systemd unit, exactly as podman would pass them, and run them in the testbed's etcd
//! namespace: the member at 10.250.0.2, and for 3 members also 10.250.0.3 and 10.250.0.4,
//! which the testbed adds to that namespace's eth0 (one namespace, three etcd processes, each
//! bound to its own address; see `weft_testbed::tls`). Only the host paths change: the
//! certs come out of the Ignition config into a temp dir that stands for /etc/etcd/pki, and
//! each member's data dir replaces /var/lib/etcd. Then `weft network init` and weftd run over
//! mTLS with the generated client cert.
//!
//! Regenerate the golden files with
//!     UPDATE_EXPECT=1 cargo test -p weft --test etcd_ignition

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use weft_testbed::{
    ClientTlsFiles, EtcdMember, EtcdMembers, EtcdSetup, Signal, Testbed, TestbedConfig, wait_until,
};

const NETWORK: &str = "10.244.0.0/16";

fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

fn weftd_bin() -> PathBuf {
    let p = Path::new(weft_bin()).with_file_name("weftd");
    assert!(
        p.exists(),
        "{} is missing: build it first with `cargo build -p weftd` (scripts/test.sh builds every binary)",
        p.display()
    );
    p
}

fn run(args: &[&str]) -> Output {
    Command::new(weft_bin())
        .args(args)
        .output()
        .expect("run weft")
}

/// `weft etcd ignition --members 1 --private-ip <ip> --out-dir <out>`.
fn one_member(ip: &str, out: &Path) -> Output {
    let out = out.to_str().unwrap();
    run(&[
        "etcd",
        "ignition",
        "--members",
        "1",
        "--private-ip",
        ip,
        "--out-dir",
        out,
    ])
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `weft etcd ignition` for `ips` into `out`; panics unless it succeeds.
fn generate(out: &Path, ips: &[Ipv4Addr], token: &str) -> String {
    let mut args = vec![
        "etcd".to_string(),
        "ignition".into(),
        "--members".into(),
        ips.len().to_string(),
        "--out-dir".into(),
        out.display().to_string(),
        "--cluster-token".into(),
        token.into(),
    ];
    for ip in ips {
        args.extend(["--private-ip".into(), ip.to_string()]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&a);
    assert!(o.status.success(), "weft {a:?}: {}", show(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

fn b64_decode(text: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = A
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {c:?}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The files of an Ignition config: path → (mode, decoded contents).
fn ign_files(ign: &Value) -> Vec<(String, u64, String)> {
    ign["storage"]["files"]
        .as_array()
        .expect("storage.files")
        .iter()
        .map(|f| {
            let src = f["contents"]["source"].as_str().expect("contents.source");
            let data = src
                .strip_prefix("data:;base64,")
                .unwrap_or_else(|| panic!("source is not a base64 data URL: {src}"));
            (
                f["path"].as_str().expect("path").to_string(),
                f["mode"].as_u64().expect("mode"),
                String::from_utf8(b64_decode(data)).expect("utf-8 contents"),
            )
        })
        .collect()
}

/// The config with every cert/key body replaced by `<PEM label of path>`.
fn placeholders(mut ign: Value) -> Value {
    for f in ign["storage"]["files"].as_array_mut().expect("files") {
        let path = f["path"].as_str().unwrap_or_default().to_string();
        if path.starts_with("/etc/etcd/pki/") {
            let src = f["contents"]["source"].as_str().unwrap_or_default();
            let pem = String::from_utf8(b64_decode(
                src.strip_prefix("data:;base64,").unwrap_or_default(),
            ))
            .unwrap_or_default();
            let label = pem
                .lines()
                .next()
                .unwrap_or_default()
                .trim_matches('-')
                .trim_start_matches("BEGIN ")
                .to_string();
            f["contents"]["source"] = Value::from(format!("data:;base64,<{label} of {path}>"));
        }
    }
    ign
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/ignition")
        .join(name);
    expect_test::expect_file![path].assert_eq(actual);
}

#[test]
fn ignition_configs_match_the_golden_files() {
    for ips in [
        vec![Ipv4Addr::new(10, 0, 1, 10)],
        vec![
            Ipv4Addr::new(10, 0, 1, 10),
            Ipv4Addr::new(10, 0, 2, 10),
            Ipv4Addr::new(10, 0, 3, 10),
        ],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("pki");
        generate(&out, &ips, "golden-token");
        let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
        for i in 0..ips.len() {
            let name = format!("etcd{i}");
            let ign = read_json(&out.join(format!("{name}.ign")));
            // The bodies are the files written beside the configs, and keys are 0600.
            let files = ign_files(&ign);
            let body = |p: &str| {
                files
                    .iter()
                    .find(|f| f.0 == p)
                    .unwrap_or_else(|| panic!("{name}.ign has no {p}"))
            };
            assert_eq!(body("/etc/etcd/pki/ca.crt").2, ca);
            for f in ["server.crt", "server.key", "peer.crt", "peer.key"] {
                let on_disk = std::fs::read_to_string(out.join(&name).join(f)).unwrap();
                let (_, mode, text) = body(&format!("/etc/etcd/pki/{f}"));
                assert_eq!(text, &on_disk, "{name}.ign {f}");
                assert_eq!(*mode, 0o600, "{f}");
            }
            let text = serde_json::to_string_pretty(&placeholders(ign)).unwrap() + "\n";
            golden(&format!("{}-member-{name}.ign.json", ips.len()), &text);
        }
    }
}

#[test]
fn bad_input_is_refused_with_the_flag_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let out = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--members", "2", "--private-ip", "10.0.1.1"],
            "--members 3",
        ),
        (
            vec!["--members", "3", "--private-ip", "10.0.1.1"],
            "needs 3 --private-ip values",
        ),
        (
            vec!["--members", "1", "--private-ip", "10.0.1"],
            "--private-ip \"10.0.1\" is not an IPv4 address",
        ),
        (
            vec!["--members", "1", "--private-ip", "54.1.2.3"],
            "is not a private address",
        ),
    ];
    for (extra, needle) in cases {
        let mut a = vec!["etcd", "ignition", "--out-dir", out];
        a.extend(extra);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(1), "{a:?}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{a:?}: {}", show(&o));
        assert!(!Path::new(out).exists(), "nothing written on a flag error");
    }
    // An out dir that cannot be created (under a regular file).
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let under = file.join("x");
    let o = one_member("10.0.1.1", &under);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot create --out-dir"),
        "{}",
        show(&o)
    );
}

#[test]
fn rerun_reuses_the_ca_and_a_half_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pki");
    let ip = [Ipv4Addr::new(10, 0, 1, 10)];
    let first = generate(&out, &ip, "t");
    assert!(first.contains("the cluster CA (new;"), "{first}");
    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    let client = std::fs::read(out.join("client.crt")).unwrap();
    let again = generate(&out, &ip, "t");
    assert!(again.contains("REUSED"), "{again}");
    assert_eq!(std::fs::read(out.join("ca.crt")).unwrap(), ca);
    assert_ne!(std::fs::read(out.join("client.crt")).unwrap(), client);
    std::fs::remove_file(out.join("ca.key")).unwrap();
    let o = one_member("10.0.1.10", &out);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ca.crt exists but") && err.contains("ca.key does not"),
        "{}",
        show(&o)
    );
}

/// The words of the unit's ExecStart after the etcd binary: the flags etcd gets.
fn etcd_flags_of_unit(unit: &str) -> Vec<String> {
    let mut logical = String::new();
    for line in unit.lines() {
        if let Some(body) = line.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
        } else {
            logical.push_str(line);
            logical.push('\n');
        }
    }
    let exec = logical
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= in the unit");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.ends_with("/etcd"))
        .unwrap_or_else(|| panic!("no etcd binary in ExecStart: {exec}"));
    words[at + 1..].iter().map(|s| s.to_string()).collect()
}

/// Member `name` of the generated configs, ready for the testbed: its flags with
/// /etc/etcd/pki and /var/lib/etcd mapped into `root`, its certs written there from the
/// Ignition config.
fn member_from_ignition(out: &Path, root: &Path, name: &str, ip: Ipv4Addr) -> EtcdMember {
    let ign = read_json(&out.join(format!("{name}.ign")));
    assert_eq!(ign["ignition"]["version"], "3.4.0");
    let unit = ign["systemd"]["units"]
        .as_array()
        .expect("systemd.units")
        .iter()
        .find(|u| u["name"] == "etcd-member.service")
        .expect("etcd-member.service");
    assert_eq!(unit["enabled"], true);
    let flags = etcd_flags_of_unit(unit["contents"].as_str().expect("unit contents"));
    for want in [
        format!("--listen-client-urls=https://{ip}:2379"),
        "--client-cert-auth=true".into(),
        "--peer-client-cert-auth=true".into(),
        "--initial-cluster-state=new".into(),
    ] {
        assert!(flags.contains(&want), "{want} in {flags:?}");
    }
    let pki = root.join(name).join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    for (path, _, text) in ign_files(&ign) {
        if let Some(f) = path.strip_prefix("/etc/etcd/pki/") {
            std::fs::write(pki.join(f), text).unwrap();
        }
    }
    let data = root.join(name).join("data");
    let pki_s = pki.display().to_string();
    let args = flags
        .iter()
        .map(|f| {
            f.replace("/etc/etcd/pki", &pki_s)
                .replace("/var/lib/etcd", &data.display().to_string())
        })
        .collect();
    EtcdMember {
        name: name.into(),
        ip,
        args,
    }
}

struct Bed {
    tb: Testbed,
    out: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A testbed whose etcd is the generated cluster with members at `ips`.
fn bed_from_ignition(label: &str, ips: &[Ipv4Addr], nodes: usize) -> Bed {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let report = generate(&out, ips, &format!("weft-{label}"));
    assert!(report.contains("weft network init"), "{report}");
    let members = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| member_from_ignition(&out, tmp.path(), &format!("etcd{i}"), *ip))
        .collect();
    let client = ClientTlsFiles {
        ca: out.join("ca.crt"),
        cert: Some(out.join("client.crt")),
        key: Some(out.join("client.key")),
    };
    let tb = Testbed::new_with_etcd(
        label,
        TestbedConfig::with_nodes(nodes),
        EtcdSetup::Members(EtcdMembers {
            members,
            client: Some(client),
        }),
    )
    .unwrap_or_else(|e| panic!("{label}: testbed: {e}"));
    Bed { tb, out, _tmp: tmp }
}

impl Bed {
    fn tls_flags(&self) -> Vec<String> {
        vec![
            format!("--etcd-cafile={}", self.out.join("ca.crt").display()),
            format!("--etcd-certfile={}", self.out.join("client.crt").display()),
            format!("--etcd-keyfile={}", self.out.join("client.key").display()),
        ]
    }

    /// `weft <args> --etcd-endpoints <members>` in node 0's namespace.
    fn weft(&self, args: &[&str], tls: &[String]) -> Output {
        let ep = format!("--etcd-endpoints={}", self.tb.etcd_endpoint());
        let mut cmd = vec![weft_bin()];
        cmd.extend_from_slice(args);
        cmd.push(&ep);
        cmd.extend(tls.iter().map(String::as_str));
        self.tb
            .exec_output(&self.tb.node(0).ns, &cmd)
            .unwrap_or_else(|e| panic!("weft {args:?}: {e}"))
    }

    fn start_weftd(&mut self, i: usize) -> (Pid, PathBuf, PathBuf) {
        let tls = self.tls_flags();
        let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
        let pid = weft_testbed::weftd::spawn(&mut self.tb, &weftd_bin(), i, &tls, &[])
            .expect("spawn weftd");
        (
            pid,
            self.tb.subnet_file(i),
            weft_testbed::weftd::log_path(&self.tb, i),
        )
    }
}

use weft_testbed::Pid;

/// Waits for weftd's subnet.env and returns it.
fn wait_subnet_env(subnet: &Path, log: &Path) -> String {
    wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        std::fs::read_to_string(subnet)
            .ok()
            .filter(|t| t.contains("FLANNEL_SUBNET="))
    })
    .unwrap_or_else(|| {
        panic!(
            "weftd wrote no {} within 30 s; log:\n{}",
            subnet.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

fn init_and_run_weftd(b: &mut Bed, nodes: usize) {
    let tls = b.tls_flags();
    // Without a client cert the members refuse the connection.
    let o = b.weft(&["network", "show"], &tls[..1]);
    assert_ne!(o.status.code(), Some(0), "CA only must fail: {}", show(&o));

    let o = b.weft(&["network", "init", "--network", NETWORK], &tls);
    assert!(
        o.status.success(),
        "weft network init over mTLS: {}",
        show(&o)
    );
    let stored =
        b.tb.etcdctl(&["get", "--print-value-only", "/coreos.com/network/config"])
            .expect("etcdctl get");
    assert!(stored.contains(NETWORK), "stored config: {stored}");
    let o = b.weft(&["network", "show"], &tls);
    assert!(o.status.success(), "weft network show: {}", show(&o));

    for i in 0..nodes {
        let (_pid, subnet, log) = b.start_weftd(i);
        let env = wait_subnet_env(&subnet, &log);
        assert!(env.contains("FLANNEL_NETWORK=10.244.0.0/16"), "{env}");
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn one_member_config_runs_and_serves_weft_and_weftd_over_mtls() {
    let mut b = bed_from_ignition("ign-1", &[weft_testbed::ETCD_IP], 1);
    init_and_run_weftd(&mut b, 1);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn three_member_config_forms_a_cluster_that_survives_one_member() {
    let ips = [
        weft_testbed::ETCD_IP,
        Ipv4Addr::new(10, 250, 0, 3),
        Ipv4Addr::new(10, 250, 0, 4),
    ];
    let mut b = bed_from_ignition("ign-3", &ips, 2);
    let members = b.tb.etcdctl(&["member", "list"]).expect("member list");
    for (i, ip) in ips.iter().enumerate() {
        assert!(
            members.contains(&format!(
                "started, etcd{i}, https://{ip}:2380, https://{ip}:2379"
            )),
            "member list:\n{members}"
        );
    }
    init_and_run_weftd(&mut b, 2);

    // Losing one member keeps the quorum: a weftd that starts now still gets a lease over
    // mTLS (after a few failed attempts at the dead member's endpoint).
    let (_, pid) = b.tb.etcd_member_pids()[2].clone();
    b.tb.signal(pid, Signal::SIGKILL).expect("kill etcd2");
    b.tb.wait_exit(pid, Duration::from_secs(10))
        .expect("wait etcd2");
    let i = b.tb.add_node().expect("add node");
    let (_pid, subnet, log) = b.start_weftd(i);
    let env = wait_subnet_env(&subnet, &log);
    assert!(env.contains("FLANNEL_NETWORK=10.244.0.0/16"), "{env}");
}

/// With one of three members down, `weft network show` against all three endpoints still
/// answers from the quorum: weft-store sends a read again when the balanced channel handed it
/// to the dead endpoint, and when the killed member was the leader and the others are still
/// electing one ("etcdserver: leader changed").
#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn weft_cli_reads_with_one_of_three_members_down() {
    let ips = [
        weft_testbed::ETCD_IP,
        Ipv4Addr::new(10, 250, 0, 3),
        Ipv4Addr::new(10, 250, 0, 4),
    ];
    let mut b = bed_from_ignition("ign-3-cli", &ips, 1);
    let tls = b.tls_flags();
    let o = b.weft(&["network", "init", "--network", NETWORK], &tls);
    assert!(o.status.success(), "weft network init: {}", show(&o));
    let (_, pid) = b.tb.etcd_member_pids()[2].clone();
    b.tb.signal(pid, Signal::SIGKILL).expect("kill etcd2");
    b.tb.wait_exit(pid, Duration::from_secs(10))
        .expect("wait etcd2");
    for _ in 0..5 {
        let o = b.weft(&["network", "show"], &tls);
        assert!(
            o.status.success(),
            "weft network show with 2 of 3 members: {}",
            show(&o)
        );
    }
}
