//! The bad-request corpus of the real weft-cni binary: bad CNI_* environments, bad network
//! configs on stdin and bad subnet.env files (no root, no delegate plugin needed).
//!
//! Every case must exit non-zero with the spec's error JSON on stdout (`cniVersion`, the
//! expected `code`, a `msg` that names the input, what is wrong and how to fix it, `details`),
//! must not panic, must stay short however long the input, and must leave `dataDir` untouched.

mod common;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::spawn_piped;
use serde_json::{Value, json};
use weft_testbed::corpus;

const BIN: &str = env!("CARGO_BIN_EXE_weft-cni");

const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

/// What the network config on stdin is.
enum Stdin {
    /// A valid config for the node's temp dir with these top-level keys replaced.
    Patched(Value),
    /// These exact bytes.
    Raw(Vec<u8>),
}

/// What subnet.env is.
enum SubnetFile {
    Text(Vec<u8>),
    Absent,
    Directory,
}

/// One bad request and the error it must get.
struct Case {
    label: &'static str,
    /// Variables replacing the full, valid ADD environment; `None` removes the variable.
    env: Vec<(&'static str, Option<OsString>)>,
    stdin: Stdin,
    subnet_env: SubnetFile,
    code: u64,
    needles: &'static [&'static str],
}

fn case(label: &'static str, code: u64, needles: &'static [&'static str]) -> Case {
    Case {
        label,
        env: Vec::new(),
        stdin: Stdin::Patched(json!({})),
        subnet_env: SubnetFile::Text(SUBNET_ENV.as_bytes().to_vec()),
        code,
        needles,
    }
}

impl Case {
    fn env(mut self, var: &'static str, value: impl Into<OsString>) -> Case {
        self.env.push((var, Some(value.into())));
        self
    }

    fn unset(mut self, var: &'static str) -> Case {
        self.env.push((var, None));
        self
    }

    fn verb(self, verb: &str) -> Case {
        self.env("CNI_COMMAND", verb)
    }

    fn conf(mut self, patch: Value) -> Case {
        self.stdin = Stdin::Patched(patch);
        self
    }

    fn raw(mut self, bytes: impl Into<Vec<u8>>) -> Case {
        self.stdin = Stdin::Raw(bytes.into());
        self
    }

    fn subnet_env(mut self, file: SubnetFile) -> Case {
        self.subnet_env = file;
        self
    }
}

/// A valid config for the node in `dir`, with `patch`'s keys replacing the defaults.
fn config(dir: &Path, patch: &Value) -> Vec<u8> {
    let mut conf = json!({
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "type": "flannel",
        "subnetFile": dir.join("subnet.env"),
        "dataDir": dir.join("data"),
        "delegate": {"hairpinMode": true, "isDefaultGateway": true},
    });
    if let (Some(conf), Some(patch)) = (conf.as_object_mut(), patch.as_object()) {
        for (k, v) in patch {
            conf.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&conf).expect("a JSON value serializes")
}

fn run(c: &Case, dir: &Path) -> Output {
    match &c.subnet_env {
        SubnetFile::Text(t) => std::fs::write(dir.join("subnet.env"), t).expect("write subnet.env"),
        SubnetFile::Absent => {}
        SubnetFile::Directory => std::fs::create_dir(dir.join("subnet.env")).expect("mkdir"),
    }
    let bin_dir = dir.join("bin");
    std::fs::create_dir(&bin_dir).expect("mkdir bin");
    let stdin = match &c.stdin {
        Stdin::Patched(patch) => config(dir, patch),
        Stdin::Raw(bytes) => bytes.clone(),
    };
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c0ffee")
        .env("CNI_NETNS", "/var/run/netns/bad-request")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "K8S_POD_NAME=web;K8S_POD_NAMESPACE=default")
        .env("CNI_PATH", &bin_dir);
    for (var, value) in &c.env {
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
    }
    let mut child = spawn_piped(&mut cmd, "weft-cni");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // weft-cni may answer before reading everything (it does not for now); ignore EPIPE.
    let _ = pipe.write_all(&stdin);
    drop(pipe);
    child.wait_with_output().expect("wait for weft-cni")
}

/// Checks one run; returns what is wrong with it.
fn check(c: &Case, dir: &Path, out: &Output) -> Vec<String> {
    let mut problems = Vec::new();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        problems.push("exited 0".to_string());
    }
    if stderr.contains("panicked") {
        problems.push(format!("panicked: {stderr}"));
    }
    if dir.join("data").exists() {
        problems.push("dataDir was created".to_string());
    }
    let v: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!(
                "stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            ));
            return problems;
        }
    };
    if !v["cniVersion"].is_string() || !v["details"].is_string() {
        problems.push(format!("cniVersion or details missing: {v}"));
    }
    if v["code"].as_u64() != Some(c.code) {
        problems.push(format!("code {} instead of {}: {v}", v["code"], c.code));
    }
    let msg = v["msg"].as_str().unwrap_or_default();
    let msg_problems = corpus::error_problems(msg, c.needles, &[]);
    if !msg_problems.is_empty() {
        problems.push(format!("msg: {msg}"));
        problems.extend(msg_problems);
    }
    if !stderr.contains("weft-cni: ") {
        problems.push(format!("no error line on stderr: {stderr}"));
    }
    problems
}

fn cases() -> Vec<Case> {
    let huge = "x".repeat(100_000);
    let mut ten_mib = b"{\"cniVersion\":\"1.0.0\",\"name\":\"cbr0\",\"pad\":\"".to_vec();
    ten_mib.resize(10 * 1024 * 1024, b'x');
    // A valid config followed by spaces: valid JSON, one byte over the limit.
    let mut one_mib_plus_one = br#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel"}"#.to_vec();
    one_mib_plus_one.resize(weft_cni::MAX_STDIN + 1, b' ');
    let deep = format!(
        r#"{{"cniVersion":"1.0.0","name":"cbr0","x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    // Found by the subnet_env fuzz target: control characters quote 6 bytes each, and the
    // value and the entry were both quoted whole.
    let fuzz_crash = format!(
        "FLANNEL_NETWORK=10.244.0.0/16{}\u{1a}{}\0\0\01{},1MASQ=false\n*",
        "\0".repeat(6),
        "\u{b}".repeat(82),
        "\0".repeat(8)
    );
    let bad_list = format!(
        "FLANNEL_NETWORK=10.244.0.0/16,{huge}\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    );
    vec![
        // ---- the CNI_* environment (code 4) ----
        case(
            "CNI_COMMAND unset",
            4,
            &[
                "CNI_COMMAND is not set",
                "ADD, DEL, CHECK, VERSION, STATUS, GC",
                "container runtime",
            ],
        )
        .unset("CNI_COMMAND"),
        case(
            "CNI_COMMAND lower case",
            4,
            &[
                "CNI_COMMAND=\"add\" is not a CNI verb",
                "expected one of ADD",
            ],
        )
        .verb("add"),
        case(
            "CNI_COMMAND with a trailing space",
            4,
            &["CNI_COMMAND=\"ADD \" is not a CNI verb"],
        )
        .verb("ADD "),
        case(
            "CNI_COMMAND not UTF-8",
            4,
            &["CNI_COMMAND=\"ADD\u{fffd}\" is not a CNI verb"],
        )
        .env("CNI_COMMAND", OsString::from_vec(b"ADD\xff".to_vec())),
        case(
            "CNI_COMMAND 100 KB",
            4,
            &[
                "CNI_COMMAND=\"xxxx",
                "is not a CNI verb",
                "expected one of ADD",
            ],
        )
        .env("CNI_COMMAND", huge.clone()),
        case(
            "ADD without CNI_CONTAINERID",
            4,
            &[
                "CNI_CONTAINERID not set but CNI_COMMAND=ADD requires it",
                "the container runtime must set it",
            ],
        )
        .unset("CNI_CONTAINERID"),
        case(
            "ADD without netns, ifname and path",
            4,
            &["CNI_NETNS, CNI_IFNAME, CNI_PATH not set but CNI_COMMAND=ADD requires them"],
        )
        .unset("CNI_NETNS")
        .unset("CNI_IFNAME")
        .unset("CNI_PATH"),
        case("ADD with an empty CNI_NETNS", 4, &["CNI_NETNS not set"]).env("CNI_NETNS", ""),
        case(
            "CNI_PATH only colons",
            4,
            &["CNI_PATH not set but CNI_COMMAND=ADD requires it"],
        )
        .env("CNI_PATH", ":::"),
        case(
            "DEL without CNI_IFNAME",
            4,
            &["CNI_IFNAME not set but CNI_COMMAND=DEL requires it"],
        )
        .verb("DEL")
        .unset("CNI_IFNAME"),
        case(
            "CHECK without CNI_NETNS",
            4,
            &["CNI_NETNS not set but CNI_COMMAND=CHECK requires it"],
        )
        .verb("CHECK")
        .unset("CNI_NETNS"),
        case(
            "CNI_CONTAINERID a path",
            4,
            &[
                "CNI_CONTAINERID=\"../../etc/passwd\" is invalid",
                "it starts with '.'",
                "names the state file under dataDir",
            ],
        )
        .env("CNI_CONTAINERID", "../../etc/passwd"),
        case(
            "CNI_CONTAINERID with a slash inside",
            4,
            &["CNI_CONTAINERID=\"pod/x\" is invalid", "it contains '/'"],
        )
        .env("CNI_CONTAINERID", "pod/x"),
        case(
            "CNI_CONTAINERID ..",
            4,
            &["CNI_CONTAINERID=\"..\" is invalid", "it starts with '.'"],
        )
        .env("CNI_CONTAINERID", ".."),
        // The CNI spec's rule (SPEC.md, Parameters): an alphanumeric first character, then
        // alphanumerics, '_', '.' or '-'.
        case(
            "CNI_CONTAINERID hidden-file name",
            4,
            &[
                "CNI_CONTAINERID=\".locks\" is invalid",
                "it starts with '.'",
                "starts with a letter or digit followed by letters, digits, '_', '.' or '-'",
            ],
        )
        .env("CNI_CONTAINERID", ".locks"),
        case(
            "CNI_CONTAINERID starting with '-'",
            4,
            &["CNI_CONTAINERID=\"-rf\" is invalid", "it starts with '-'"],
        )
        .env("CNI_CONTAINERID", "-rf"),
        case(
            "CNI_CONTAINERID starting with '_'",
            4,
            &["it starts with '_'"],
        )
        .env("CNI_CONTAINERID", "_pod"),
        case(
            "CNI_CONTAINERID with a space",
            4,
            &["CNI_CONTAINERID=\"my pod\" is invalid", "it contains ' '"],
        )
        .env("CNI_CONTAINERID", "my pod"),
        case("CNI_CONTAINERID with a colon", 4, &["it contains ':'"])
            .env("CNI_CONTAINERID", "k8s:pod"),
        case("CNI_CONTAINERID with a newline", 4, &["it contains '\\n'"])
            .env("CNI_CONTAINERID", "pod\nDEL"),
        case("CNI_CONTAINERID not ASCII", 4, &["it contains '\u{e9}'"])
            .env("CNI_CONTAINERID", "caf\u{e9}"),
        case("CNI_CONTAINERID not UTF-8", 4, &["it contains '\u{fffd}'"])
            .env("CNI_CONTAINERID", OsString::from_vec(b"pod\xff".to_vec())),
        case(
            "CNI_CONTAINERID with a backslash",
            4,
            &["CNI_CONTAINERID", "it contains '\\\\'"],
        )
        .env("CNI_CONTAINERID", "a\\b"),
        case(
            "CNI_CONTAINERID 300 bytes",
            4,
            &["CNI_CONTAINERID", "it is 300 bytes long, the limit is 255"],
        )
        .env("CNI_CONTAINERID", "c".repeat(300)),
        case(
            "CNI_CONTAINERID 100 KB",
            4,
            &[
                "CNI_CONTAINERID",
                "it is 100000 bytes long, the limit is 255",
            ],
        )
        .env("CNI_CONTAINERID", huge.clone()),
        case(
            "CNI_IFNAME too long",
            4,
            &[
                "CNI_IFNAME=\"averyverylongname\" is invalid",
                "the limit is 15",
                "such as \"eth0\"",
            ],
        )
        .env("CNI_IFNAME", "averyverylongname"),
        case(
            "CNI_IFNAME with a space",
            4,
            &["CNI_IFNAME=\"eth 0\" is invalid", "it contains ' '"],
        )
        .env("CNI_IFNAME", "eth 0"),
        case(
            "CNI_IFNAME with a colon",
            4,
            &["CNI_IFNAME=\"eth0:1\"", "it contains ':'"],
        )
        .env("CNI_IFNAME", "eth0:1"),
        case(
            "CNI_IFNAME .",
            4,
            &["CNI_IFNAME=\".\" is invalid", "\".\" is reserved"],
        )
        .env("CNI_IFNAME", "."),
        // ---- the network config on stdin: decoding (6) ----
        case(
            "empty stdin",
            6,
            &[
                "failed to decode the network config on stdin",
                "EOF",
                "it must be a JSON object such as",
            ],
        )
        .raw(""),
        case(
            "stdin not JSON",
            6,
            &[
                "failed to decode the network config on stdin",
                "expected value",
            ],
        )
        .raw("cniVersion=1.0.0"),
        case(
            "stdin a JSON array",
            6,
            &["expected a JSON object, found an array"],
        )
        .raw("[{\"name\":\"cbr0\"}]"),
        case(
            "stdin 10 MiB, truncated",
            7,
            &[
                "the network config on stdin is larger than 1048576 bytes (1 MiB)",
                "10-flannel.conflist",
            ],
        )
        .raw(ten_mib),
        case(
            "stdin a valid config padded to 1 MiB + 1",
            7,
            &["the network config on stdin is larger than 1048576 bytes"],
        )
        .raw(one_mib_plus_one),
        case(
            "stdin nested 200 deep",
            6,
            &["failed to decode", "recursion limit"],
        )
        .raw(deep),
        case(
            "name a number",
            6,
            &[
                "failed to decode",
                "invalid type: integer `7`, expected a string",
            ],
        )
        .conf(json!({"name": 7})),
        case(
            "cniVersion a number",
            6,
            &["failed to decode", "invalid type: floating point `0.3`"],
        )
        .conf(json!({"cniVersion": 0.3})),
        case(
            "delegate a string",
            6,
            &["failed to decode", "expected a map"],
        )
        .conf(json!({"delegate": "bridge"})),
        // ---- versions (1) ----
        case(
            "cniVersion unknown",
            1,
            &[
                "cniVersion \"9.9.9\" in the network config is not supported",
                "supported versions: 0.1.0, 0.2.0",
                "set \"cniVersion\"",
            ],
        )
        .conf(json!({"cniVersion": "9.9.9"})),
        case(
            "cniVersion without a patch number",
            1,
            &["cniVersion \"1.0\" in the network config is not supported"],
        )
        .conf(json!({"cniVersion": "1.0"})),
        case(
            "cniVersion 100 KB",
            1,
            &[
                "cniVersion \"xxxx",
                "is not supported",
                "supported versions",
            ],
        )
        .conf(json!({"cniVersion": huge})),
        case(
            "STATUS on 1.0.0",
            1,
            &[
                "CNI_COMMAND=STATUS is defined from CNI spec 1.1.0 on",
                "cniVersion \"1.0.0\"",
                "raise \"cniVersion\"",
            ],
        )
        .verb("STATUS"),
        case(
            "GC on 0.4.0",
            1,
            &["CNI_COMMAND=GC is defined from CNI spec 1.1.0 on"],
        )
        .verb("GC")
        .conf(json!({"cniVersion": "0.4.0"})),
        // ---- config rules (7) ----
        case(
            "name missing",
            7,
            &[
                "invalid network config: \"name\" is missing",
                "\"name\": \"cbr0\"",
            ],
        )
        .conf(json!({"name": null})),
        case(
            "name with a slash",
            7,
            &["\"name\" \"a/b\" has invalid characters", "letters, digits"],
        )
        .conf(json!({"name": "a/b"})),
        case(
            "name 100 KB with a space",
            7,
            &["\"name\"", "has invalid characters"],
        )
        .conf(json!({"name": format!("a {huge}")})),
        case(
            "delegate type a number",
            7,
            &[
                "'delegate' dictionary, if present, must have (string) 'type' field",
                "\"type\": \"bridge\"",
            ],
        )
        .conf(json!({"delegate": {"type": 7}})),
        case(
            "delegate with a name",
            7,
            &[
                "'delegate' dictionary must not have 'name' field",
                "remove \"name\" from \"delegate\"",
            ],
        )
        .conf(json!({"delegate": {"name": "x"}})),
        case(
            "delegate with ipam",
            7,
            &[
                "'delegate' dictionary must not have 'ipam' field",
                "top-level \"ipam\"",
            ],
        )
        .conf(json!({"delegate": {"ipam": {"type": "host-local"}}})),
        case(
            "delegate type a path",
            7,
            &[
                "plugin type \"../../bin/sh\" is not a plugin name",
                "such as \"bridge\"",
            ],
        )
        .conf(json!({"delegate": {"type": "../../bin/sh"}})),
        case(
            "delegate type 100 KB",
            7,
            &[
                "failed to find plugin",
                "in CNI_PATH",
                "containernetworking-plugins",
            ],
        )
        .conf(json!({"delegate": {"type": huge}})),
        case(
            "delegate not installed",
            7,
            &[
                "failed to find plugin \"macvlan\" in CNI_PATH",
                "apt-get install containernetworking-plugins",
            ],
        )
        .conf(json!({"delegate": {"type": "macvlan"}})),
        case(
            "ipam.routes a string",
            7,
            &[
                "failed to read IPAM routes",
                "\"ipam\".\"routes\" must be a list",
            ],
        )
        .conf(json!({"ipam": {"routes": "10.0.0.0/8"}})),
        case("ipam route without dst", 7, &["route 0 has no \"dst\""])
            .conf(json!({"ipam": {"routes": [{"gw": "10.244.1.1"}]}})),
        case(
            "ipam route dst not a CIDR",
            7,
            &["route 1 has \"dst\" \"10.0.0.0\", not a CIDR"],
        )
        .conf(json!({"ipam": {"routes": [{"dst": "192.168.0.0/16"}, {"dst": "10.0.0.0"}]}})),
        case(
            "ipam route gw not an IP",
            7,
            &["route 0 has \"gw\" \"gateway\", not an IP address"],
        )
        .conf(json!({"ipam": {"routes": [{"dst": "192.168.0.0/16", "gw": "gateway"}]}})),
        // ---- state (3) ----
        case(
            "CHECK of an unknown container",
            3,
            &[
                "no network state for container \"c0ffee\"",
                "does not exist",
                "nothing to check",
            ],
        )
        .verb("CHECK"),
        // ---- subnet.env (11, 5, 7) ----
        case(
            "subnet.env missing",
            11,
            &[
                "failed to load flannel 'subnet.env' file",
                "subnet.env does not exist",
                "weftd (or flanneld) is probably not running",
            ],
        )
        .subnet_env(SubnetFile::Absent),
        case(
            "subnet.env a directory",
            5,
            &[
                "failed to load flannel 'subnet.env' file: cannot read",
                "check its permissions",
            ],
        )
        .subnet_env(SubnetFile::Directory),
        case(
            "subnet.env not UTF-8",
            7,
            &[
                "subnet.env",
                "the file is not UTF-8 text",
                "weftd rewrites the file",
            ],
        )
        .subnet_env(SubnetFile::Text(
            b"FLANNEL_NETWORK=10.244.0.0/16\xff\n".to_vec(),
        )),
        case(
            "subnet.env empty",
            7,
            &[
                "subnet.env is missing FLANNEL_NETWORK (or FLANNEL_IPV6_NETWORK)",
                "FLANNEL_MTU",
            ],
        )
        .subnet_env(SubnetFile::Text(Vec::new())),
        case(
            "subnet.env line without =",
            7,
            &["subnet.env line 5: \"garbage\" is not KEY=VALUE"],
        )
        .subnet_env(SubnetFile::Text(
            format!("{SUBNET_ENV}garbage\n").into_bytes(),
        )),
        case(
            "subnet.env FLANNEL_MTU a word",
            7,
            &["FLANNEL_MTU=\"big\": expected a whole number"],
        )
        .subnet_env(SubnetFile::Text(
            SUBNET_ENV.replace("1450", "big").into_bytes(),
        )),
        case(
            "subnet.env bad entry in a network list",
            7,
            &[
                "subnet.env line 1: FLANNEL_NETWORK=",
                "\"10.0.0.0/33\" is not an IPv4 CIDR",
                "comma-separated list",
            ],
        )
        .subnet_env(SubnetFile::Text(
            SUBNET_ENV
                .replace("10.244.0.0/16", "10.244.0.0/16,10.0.0.0/33")
                .into_bytes(),
        )),
        case(
            "subnet.env 100 KB entry in a network list",
            7,
            &["subnet.env line 1: FLANNEL_NETWORK=", "is not an IPv4 CIDR"],
        )
        .subnet_env(SubnetFile::Text(bad_list.into_bytes())),
        case(
            "subnet.env entry full of control characters (fuzz)",
            7,
            &["subnet.env line 1: FLANNEL_NETWORK=", "is not an IPv4 CIDR"],
        )
        .subnet_env(SubnetFile::Text(fuzz_crash.into_bytes())),
    ]
}

#[test]
fn bad_requests_get_a_cni_error_and_no_panic() {
    let cases = cases();
    corpus::assert_corpus(
        "weft-cni",
        &cases,
        |c| c.label.to_string(),
        |c| {
            let dir = tempfile::tempdir().expect("temp dir");
            let out = run(c, dir.path());
            check(c, dir.path(), &out)
        },
    );
    println!("weft-cni: {} bad-request cases", cases.len());
}

/// The state file must stay inside dataDir: a container ID cannot point anywhere else, even
/// for DEL, which needs no netns.
#[test]
fn container_ids_never_leave_the_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outside: PathBuf = dir.path().join("outside");
    std::fs::write(&outside, "keep me").expect("write");
    for id in ["../outside", "/etc/passwd", "x/../../outside"] {
        let c = case("DEL with a path as container ID", 4, &["CNI_CONTAINERID"])
            .verb("DEL")
            .env("CNI_CONTAINERID", id);
        let sub = dir.path().join(format!("node-{}", id.len()));
        std::fs::create_dir(&sub).expect("mkdir");
        let out = run(&c, &sub);
        let problems = check(&c, &sub, &out);
        assert!(problems.is_empty(), "{id}: {problems:?}");
    }
    assert_eq!(std::fs::read_to_string(&outside).expect("read"), "keep me");
}
