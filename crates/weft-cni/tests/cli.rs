//! The real weft-cni binary against a fake delegate (no root needed).
//!
//! The fake `bridge` is a shell script in a temp CNI_PATH directory. It records its stdin and
//! CNI_* environment per verb and container, prints a canned result for ADD, and fails the
//! verb named in WEFT_FAKE_FAIL with a CNI error and exit status 3.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::spawn_with_stdin;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_weft-cni");

/// Deliberately odd whitespace: weft-cni must pass the delegate's bytes through unchanged.
const CANNED_RESULT: &str = r#"{"cniVersion":"0.3.1",  "interfaces":[{"name":"cni0"}],
  "ips":[{"version":"4","address":"10.244.1.5/24","gateway":"10.244.1.1","interface":0}]}
"#;

const FAKE_ERROR: &str =
    r#"{"cniVersion":"0.3.1","code":7,"msg":"fake failure","details":"as asked"}"#;

const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

fn fake_bridge() -> String {
    format!(
        r#"#!/bin/sh
rec="$WEFT_FAKE_RECORD/$CNI_COMMAND-$CNI_CONTAINERID"
cat > "$rec.stdin"
env | grep '^CNI_' | sort > "$rec.env"
if [ "$WEFT_FAKE_FAIL" = "$CNI_COMMAND" ]; then
    printf '%s' '{FAKE_ERROR}'
    exit 3
fi
if [ "$CNI_COMMAND" = ADD ]; then
    cat <<'EOF'
{CANNED_RESULT}EOF
fi
"#
    )
}

/// A temp "node": subnet.env, dataDir, a CNI_PATH dir with the fake bridge, a record dir.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::create_dir(dir.path().join("record")).unwrap();
        let script = bin.join("bridge");
        fs::write(&script, fake_bridge()).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("subnet.env"), SUBNET_ENV).unwrap();
        Node { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn state(&self, id: &str) -> PathBuf {
        self.path("data").join(id)
    }

    fn record(&self, verb: &str, id: &str, ext: &str) -> Option<Vec<u8>> {
        fs::read(self.path("record").join(format!("{verb}-{id}.{ext}"))).ok()
    }

    fn conf(&self, extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","subnetFile":"{}","dataDir":"{}","delegate":{{"hairpinMode":true,"isDefaultGateway":true}}{extra}}}"#,
            self.path("subnet.env").display(),
            self.path("data").display()
        )
    }

    fn run(&self, verb: &str, id: &str, stdin: &str, extra: &[(&str, &str)]) -> Output {
        run_cni(self.dir.path(), verb, id, stdin, extra)
    }
}

/// Runs weft-cni for the node in `base` with a full CNI environment for `verb` and `id`,
/// plus `extra` variables.
fn run_cni(base: &Path, verb: &str, id: &str, stdin: &str, extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/var/run/netns/fake-pod")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "K8S_POD_NAME=web;K8S_POD_NAMESPACE=default")
        .env(
            "CNI_PATH",
            format!(
                "{}:{}",
                base.join("empty").display(),
                base.join("bin").display()
            ),
        )
        .env("WEFT_FAKE_RECORD", base.join("record"));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    run_with_stdin(cmd, stdin)
}

fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    spawn_with_stdin(&mut cmd, "weft-cni", stdin.as_bytes())
        .wait_with_output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The CNI error JSON on stdout, checked for the spec's shape and a non-zero exit.
fn cni_error(out: &Output) -> Value {
    assert!(!out.status.success(), "expected failure: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"));
    for k in ["cniVersion", "code", "msg"] {
        assert!(v.get(k).is_some(), "{k} missing in {v}");
    }
    v
}

#[test]
fn add_saves_state_and_passes_the_result_through() {
    let node = Node::new();
    let out = node.run("ADD", "c-add", &node.conf(""), &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), CANNED_RESULT);

    let state = node.state("c-add");
    assert_eq!(mode(&state), 0o600);
    assert_eq!(mode(&node.path("data")), 0o700);
    let saved = fs::read(&state).unwrap();
    assert_eq!(Some(saved.clone()), node.record("ADD", "c-add", "stdin"));
    // Byte-exact: the kube-flannel cbr0 example (mtu 1450, ipMasq off because the daemon
    // masquerades), keys sorted like Go's json.Marshal, plus forceAddress (weft-cni lets
    // bridge replace cni0's gateway after a subnet move, which flannel's bridge refuses).
    assert_eq!(
        String::from_utf8(saved).unwrap(),
        r#"{"cniVersion":"0.3.1","forceAddress":true,"hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}"#
    );

    let env = String::from_utf8(node.record("ADD", "c-add", "env").unwrap()).unwrap();
    for line in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=c-add",
        "CNI_NETNS=/var/run/netns/fake-pod",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=K8S_POD_NAME=web;K8S_POD_NAMESPACE=default",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
    }
    assert!(env.contains("CNI_PATH="), "{env}");
}

#[test]
fn del_replays_the_saved_config_removes_it_and_is_idempotent() {
    let node = Node::new();
    assert!(
        node.run("ADD", "c-del", &node.conf(""), &[])
            .status
            .success()
    );
    let saved = fs::read(node.state("c-del")).unwrap();

    // The subnet changed and the DEL config differs: DEL still replays what ADD used.
    fs::write(
        node.path("subnet.env"),
        SUBNET_ENV.replace("10.244.1.1", "10.244.9.1"),
    )
    .unwrap();
    let out = node.run(
        "DEL",
        "c-del",
        &node.conf(r#","runtimeConfig":{"a":1}"#),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(node.record("DEL", "c-del", "stdin"), Some(saved));
    let env = String::from_utf8(node.record("DEL", "c-del", "env").unwrap()).unwrap();
    assert!(env.lines().any(|l| l == "CNI_COMMAND=DEL"), "{env}");
    assert!(!node.state("c-del").exists());

    // Again: nothing saved, nothing to do, success; even without subnet.env.
    fs::remove_file(node.path("record/DEL-c-del.stdin")).unwrap();
    fs::remove_file(node.path("subnet.env")).unwrap();
    let out = node.run("DEL", "c-del", &node.conf(""), &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    assert_eq!(node.record("DEL", "c-del", "stdin"), None);
}

#[test]
fn failed_del_keeps_state_until_a_retry_succeeds() {
    let node = Node::new();
    assert!(
        node.run("ADD", "c-retry", &node.conf(""), &[])
            .status
            .success()
    );
    let out = node.run(
        "DEL",
        "c-retry",
        &node.conf(""),
        &[("WEFT_FAKE_FAIL", "DEL")],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, FAKE_ERROR.as_bytes());
    assert!(node.state("c-retry").exists());
    let out = node.run("DEL", "c-retry", &node.conf(""), &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(!node.state("c-retry").exists());
}

#[test]
fn missing_subnet_env_is_code_11_and_names_the_file() {
    let node = Node::new();
    fs::remove_file(node.path("subnet.env")).unwrap();
    let out = node.run("ADD", "c-wait", &node.conf(""), &[]);
    let err = cni_error(&out);
    assert_eq!(err["code"], 11);
    assert_eq!(err["cniVersion"], "0.3.1");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains(&node.path("subnet.env").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("not running or not ready"), "{msg}");
    assert!(!node.state("c-wait").exists());
    assert_eq!(node.record("ADD", "c-wait", "stdin"), None);
    // The error is also logged to stderr for the runtime's log.
    assert!(String::from_utf8_lossy(&out.stderr).contains("subnet.env"));
}

#[test]
fn malformed_subnet_env_is_code_7_naming_the_key() {
    let node = Node::new();
    fs::write(
        node.path("subnet.env"),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=oops\n",
    )
    .unwrap();
    let err = cni_error(&node.run("ADD", "c-bad", &node.conf(""), &[]));
    assert_eq!(err["code"], 7);
    let msg = err["msg"].as_str().unwrap();
    assert!(msg.contains("FLANNEL_SUBNET"), "{msg}");
    assert!(msg.contains("subnet.env"), "{msg}");
}

#[test]
fn failed_add_passes_the_delegate_error_through_and_cleans_up() {
    let node = Node::new();
    let out = node.run(
        "ADD",
        "c-fail",
        &node.conf(""),
        &[("WEFT_FAKE_FAIL", "ADD")],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, FAKE_ERROR.as_bytes());
    assert!(
        !node.state("c-fail").exists(),
        "state must not outlive a failed ADD"
    );
    // The delegate was asked to DEL with the same config, to free what it may have taken.
    assert_eq!(
        node.record("DEL", "c-fail", "stdin"),
        node.record("ADD", "c-fail", "stdin")
    );
}

#[test]
fn missing_delegate_binary_is_code_7_naming_the_dirs() {
    let node = Node::new();
    let conf = node
        .conf("")
        .replace("\"hairpinMode\"", "\"type\":\"nope\",\"hairpinMode\"");
    let err = cni_error(&node.run("ADD", "c-nope", &conf, &[]));
    assert_eq!(err["code"], 7);
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains(&node.path("bin").display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains(&node.path("empty").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("containernetworking-plugins"), "{msg}");
    assert!(!node.state("c-nope").exists());
}

#[test]
fn bad_input_gives_the_spec_codes() {
    let node = Node::new();
    // Not JSON: 6.
    assert_eq!(cni_error(&node.run("ADD", "c", "{", &[]))["code"], 6);
    // Unsupported version: 1, listing what is supported.
    let conf = node.conf("").replace("0.3.1", "0.9.0");
    let err = cni_error(&node.run("ADD", "c", &conf, &[]));
    assert_eq!(err["code"], 1);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("0.3.1, 0.4.0, 1.0.0, 1.1.0")
    );
    // Forbidden delegate field: 7 with flannel's message.
    let conf = node
        .conf("")
        .replace("\"hairpinMode\"", "\"name\":\"x\",\"hairpinMode\"");
    let err = cni_error(&node.run("ADD", "c", &conf, &[]));
    assert_eq!(err["code"], 7);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("must not have 'name' field")
    );
    // Bad container ID / interface name: 4.
    for id in ["../etc", "a/b"] {
        assert_eq!(
            cni_error(&node.run("ADD", id, &node.conf(""), &[]))["code"],
            4
        );
    }
    let err = cni_error(&node.run("ADD", "c", &node.conf(""), &[("CNI_IFNAME", "eth:0")]));
    assert_eq!(err["code"], 4);
    assert!(err["msg"].as_str().unwrap().contains("CNI_IFNAME"));
    assert!(
        !node.path("data").exists(),
        "nothing may be written on bad input"
    );
}

#[test]
fn missing_env_is_code_4() {
    for (unset, verb) in [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ADD"),
        ("CNI_IFNAME", "ADD"),
        ("CNI_NETNS", "ADD"),
        ("CNI_CONTAINERID", "DEL"),
    ] {
        let node = Node::new();
        let mut cmd = Command::new(BIN);
        cmd.env_clear();
        let vars = [
            ("CNI_COMMAND", verb.to_string()),
            ("CNI_CONTAINERID", "c".to_string()),
            ("CNI_NETNS", "/var/run/netns/x".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", node.path("bin").display().to_string()),
        ];
        for (k, v) in &vars {
            if *k != unset {
                cmd.env(k, v);
            }
        }
        let err = cni_error(&run_with_stdin(cmd, &node.conf("")));
        assert_eq!(err["code"], 4, "{unset} {verb}");
        assert!(err["msg"].as_str().unwrap().contains(unset), "{err}");
    }
}

#[test]
fn version_reports_all_supported_versions() {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().env("CNI_COMMAND", "VERSION");
    let out = run_with_stdin(cmd, r#"{"cniVersion":"0.4.0"}"#);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"cniVersion\":\"0.4.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
    );
    let mut cmd = Command::new(BIN);
    cmd.env_clear().env("CNI_COMMAND", "VERSION");
    let out = run_with_stdin(cmd, "");
    assert!(
        out.stdout.starts_with(b"{\"cniVersion\":\"1.1.0\""),
        "{out:?}"
    );
}

#[test]
fn check_replays_with_prev_result_from_0_4_0_on() {
    let node = Node::new();
    let conf = node.conf("").replace("0.3.1", "0.4.0");
    assert!(node.run("ADD", "c-check", &conf, &[]).status.success());
    let with_prev = node
        .conf(r#","prevResult":{"cniVersion":"0.4.0","ips":[]}"#)
        .replace("\"0.3.1\"", "\"0.4.0\"");
    let out = node.run("CHECK", "c-check", &with_prev, &[]);
    assert!(out.status.success(), "{out:?}");
    let sent: Value =
        serde_json::from_slice(&node.record("CHECK", "c-check", "stdin").unwrap()).unwrap();
    assert_eq!(sent["prevResult"]["cniVersion"], "0.4.0");
    assert_eq!(sent["type"], "bridge");

    let out = node.run("CHECK", "unknown", &with_prev, &[]);
    assert_eq!(cni_error(&out)["code"], 3);

    // 0.3.x has no CHECK: success without running anything (flannel's behaviour).
    let out = node.run("CHECK", "unknown", &node.conf(""), &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(node.record("CHECK", "unknown", "stdin"), None);
}

#[test]
fn concurrent_adds_for_different_containers_do_not_mix() {
    let node = Node::new();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let conf = node.conf(&format!(r#","runtimeConfig":{{"podName":"pod-{i}"}}"#));
            let base = node.dir.path().to_path_buf();
            std::thread::spawn(move || run_cni(&base, "ADD", &format!("c{i}"), &conf, &[]))
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), CANNED_RESULT);
    }
    for i in 0..16 {
        let id = format!("c{i}");
        let saved = fs::read(node.state(&id)).unwrap();
        assert_eq!(
            Some(saved.clone()),
            node.record("ADD", &id, "stdin"),
            "{id}"
        );
        let v: Value = serde_json::from_slice(&saved).unwrap();
        assert_eq!(v["runtimeConfig"]["podName"], format!("pod-{i}"));
    }
    let files: Vec<_> = fs::read_dir(node.path("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != weft_cni::lock::LOCK_DIR)
        .collect();
    assert_eq!(files.len(), 16, "no temp files left: {files:?}");
    // One lock file per living container (DEL removes it).
    assert_eq!(
        fs::read_dir(node.path("data").join(weft_cni::lock::LOCK_DIR))
            .unwrap()
            .count(),
        16
    );
}
