//! `weft manifest`: golden files and schema validation (no root, no cluster).
//!
//! Golden files live in tests/golden/manifest/. After an intended change, rewrite them with
//!     UPDATE_EXPECT=1 cargo test -p weft --test manifest
//! and review the diff. The default image tag (this crate's version) is written as
//! `@VERSION@` in the golden files so a version bump does not touch them.
//!
//! Schema validation runs `kubernetes-validate --strict` (PyPI package `kubernetes-validate`,
//! which bundles the Kubernetes schemas and works offline). Without it the validation test
//! fails and says how to install it: it never passes silently.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags of the full-options render (golden `full.yaml` and the validation runs).
const FULL: &[&str] = &[
    "--etcd-endpoints",
    "https://10.0.0.5:2379,https://10.0.0.6:2379",
    "--etcd-tls-secret",
    "weft-etcd-tls",
    "--cleanup-vpc-cni",
    "--iface",
    "eth0",
    "--network",
    "10.50.0.0/16",
    "--subnet-len",
    "25",
    "--vni",
    "4096",
    "--port",
    "4789",
    "--mtu",
    "9001",
    "--healthz-port",
    "9081",
    "--kubernetes-version",
    "1.31",
];

const DEFAULT: &[&str] = &["--etcd-endpoints", "http://10.0.0.5:2379"];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn weft_manifest(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("manifest")
        .args(args)
        .output()
        .expect("run weft");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn render(args: &[&str]) -> String {
    let run = weft_manifest(args);
    assert_eq!(run.code, 0, "weft manifest {args:?} failed: {}", run.stderr);
    run.stdout
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/manifest")
}

/// Compares `actual` with a golden file (expect-test; `UPDATE_EXPECT=1` rewrites it), with
/// the default image's version as `@VERSION@`.
fn check_golden(name: &str, actual: &str) {
    let default_image = format!("localhost/weft:{}", env!("CARGO_PKG_VERSION"));
    let actual = actual.replace(&default_image, "localhost/weft:@VERSION@");
    expect_test::expect_file![golden_dir().join(name)].assert_eq(&actual);
}

#[test]
fn default_render_matches_the_golden_file() {
    check_golden("default.yaml", &render(DEFAULT));
}

#[test]
fn full_options_render_matches_the_golden_file() {
    check_golden("full.yaml", &render(FULL));
}

#[test]
fn json_render_matches_the_golden_file() {
    let mut args = DEFAULT.to_vec();
    args.extend(["--output", "json"]);
    check_golden("default.json", &render(&args));
}

#[test]
fn render_is_deterministic() {
    assert_eq!(render(FULL), render(FULL));
}

#[test]
fn full_render_has_what_the_brief_asks_for() {
    let y = render(FULL);
    for want in [
        "hostNetwork: true",
        "priorityClassName: system-node-critical",
        "- name: cleanup-vpc-cni",
        "- cleanup-vpc-cni\n",
        "- --apply\n",
        "- name: install-cni",
        "\"--etcd-cafile=/etc/weft/etcd/ca.crt\"",
        "\"--etcd-certfile=/etc/weft/etcd/tls.crt\"",
        "\"--etcd-keyfile=/etc/weft/etcd/tls.key\"",
        "\"--iface=eth0\"",
        "\"--healthz-port=9081\"",
        "containerPort: 9081",
        "secretName: weft-etcd-tls",
        "- /host/run/aws-node\n",
        "path: /var/log\n",
        "type: FileOrCreate",
        "maxUnavailable: 1",
        "\"Network\": \"10.50.0.0/16\"",
        "\"VNI\": 4096",
    ] {
        assert!(y.contains(want), "full render lacks {want:?}:\n{y}");
    }
    assert!(
        !y.contains("kind: ClusterRole"),
        "weftd needs no RBAC grant:\n{y}"
    );
    assert!(!y.contains("limits:"), "no CPU limit:\n{y}");
    // The cleanup init container runs before install-cni.
    assert!(y.find("name: cleanup-vpc-cni").unwrap() < y.find("name: install-cni").unwrap());
}

#[test]
fn plain_http_warns_on_stderr_only() {
    let run = weft_manifest(DEFAULT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("warning: --etcd-endpoints http://10.0.0.5:2379 is plain http"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "weft network init --etcd-endpoints http://10.0.0.5:2379 --network 10.244.0.0/16"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("warning"), "{}", run.stdout);
    let run = weft_manifest(FULL);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

#[test]
fn bad_flags_fail_with_the_flag_named_and_nothing_on_stdout() {
    for (args, flag) in [
        (vec!["--network", "10.244.0.0/33"], "--network"),
        (vec!["--backend", "ipip"], "--backend"),
        (vec!["--backend", "host-gw", "--port", "4789"], "--port"),
        (vec!["--kubernetes-version", "1.28"], "--kubernetes-version"),
        (vec!["--vni", "99999999"], "--vni"),
        (vec!["--etcd-tls-secret", "s"], "--etcd-tls-secret"),
    ] {
        let mut all = DEFAULT.to_vec();
        all.extend(args.iter().copied());
        let run = weft_manifest(&all);
        assert_eq!(run.code, 1, "{all:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{all:?}: {}", run.stdout);
        assert!(run.stderr.contains(flag), "{all:?}: {}", run.stderr);
    }
    let run = weft_manifest(&["--etcd-endpoints", "10.0.0.5:2379"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("--etcd-endpoints http://10.0.0.5:2379"),
        "{}",
        run.stderr
    );
}

/// The validator's command: $KUBERNETES_VALIDATE or `kubernetes-validate` on PATH.
fn validator() -> String {
    std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into())
}

/// Runs `kubernetes-validate --strict` on a file of `docs` documents and asserts that every
/// one passed (it only warns, and exits 0, for a kind it has no schema for).
fn validate(file: &Path, kube: &str, docs: usize, what: &str) {
    let out = Command::new(validator())
        .args(["--strict", "-k", kube])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): install it with `pip install kubernetes-validate==1.37.0` (CI does)",
                validator()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} against {kube}: {text}\n{}",
        std::fs::read_to_string(file).unwrap()
    );
    assert!(
        !text.contains("WARN") && !text.contains("ERROR"),
        "{what} against {kube}: {text}"
    );
    assert_eq!(
        text.matches(" passed for resource ").count(),
        docs,
        "{what} against {kube}: expected {docs} validated objects:\n{text}"
    );
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let ca_only: Vec<&str> = vec![
        "--etcd-endpoints",
        "https://etcd.example.internal:2379",
        "--etcd-tls-secret",
        "etcd-ca",
        "--etcd-ca-only",
        "--namespace",
        "kube-system",
    ];
    for kube in ["1.29", "1.33", "1.35"] {
        for (name, flags, docs) in [
            ("default", DEFAULT.to_vec(), 4),
            ("full", FULL.to_vec(), 4),
            // kube-system exists already: no Namespace object.
            ("ca-only", ca_only.clone(), 3),
        ] {
            let mut args = flags.clone();
            args.retain(|a| *a != "--kubernetes-version" && *a != "1.31");
            args.extend(["--kubernetes-version", kube]);
            let yaml = render(&args);
            assert_eq!(yaml.matches("\n---\n").count(), docs, "{name}: {yaml}");
            let file = dir.path().join(format!("{name}-{kube}.yaml"));
            std::fs::write(&file, &yaml).unwrap();
            validate(&file, &format!("{kube}.0"), docs, name);

            // The JSON List: validate its items (the validator has no schema for List).
            args.extend(["--output", "json"]);
            let list: serde_json::Value = serde_json::from_str(&render(&args)).unwrap();
            assert_eq!(list["kind"], "List");
            let items = list["items"].as_array().unwrap();
            assert_eq!(items.len(), docs);
            let stream: Vec<String> = items.iter().map(|i| i.to_string()).collect();
            let file = dir.path().join(format!("{name}-{kube}.json.yaml"));
            std::fs::write(&file, stream.join("\n---\n")).unwrap();
            validate(&file, &format!("{kube}.0"), docs, &format!("{name} (json)"));
        }
    }
}

/// The command lines in the manifest are accepted by the binaries they call: each is run with
/// `--help` appended, which makes clap check every flag before it and exit without doing
/// anything. Catches a renamed flag in weftd, `weft install-cni` or `weft node cleanup-vpc-cni`.
#[test]
fn the_rendered_command_lines_parse_with_the_real_binaries() {
    let list: serde_json::Value =
        serde_json::from_str(&render(&[FULL, &["--output", "json"]].concat())).unwrap();
    let pod = &list["items"][3]["spec"]["template"]["spec"];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let weft = Path::new(env!("CARGO_BIN_EXE_weft"));
    let weftd = weft.with_file_name("weftd");
    assert!(
        weftd.exists(),
        "build weftd first (cargo build --workspace --bins): {} is missing",
        weftd.display()
    );
    let check = |program: &Path, args: &[String], what: &str| {
        let out = Command::new(program)
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {} {args:?} is refused: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut seen = 0;
    for c in pod["initContainers"].as_array().unwrap() {
        let cmd = strings(&c["command"]);
        assert_eq!(cmd[0], "/usr/local/bin/weft");
        let name = c["name"].as_str().unwrap();
        // Never let a test on a real node get near --apply: check it exists in the help text,
        // and parse the rest without it.
        let args: Vec<String> = cmd[1..]
            .iter()
            .filter(|a| *a != "--apply")
            .cloned()
            .collect();
        let help = check(weft, &args, name);
        if cmd.iter().any(|a| a == "--apply") {
            assert!(help.contains("--apply"), "{name}: no --apply in\n{help}");
        }
        seen += 1;
    }
    assert_eq!(seen, 2, "cleanup-vpc-cni and install-cni");
    let weftd_container = &pod["containers"][0];
    assert_eq!(
        strings(&weftd_container["command"]),
        ["/usr/local/bin/weftd"]
    );
    check(&weftd, &strings(&weftd_container["args"]), "weftd");
}
