//! The bad-flag corpus of the real weftd binary: flanneld's flags and their `FLANNELD_*`
//! environment fallbacks with values weftd must refuse before it contacts etcd or the kernel
//! (no root or etcd needed).
//!
//! Every case must exit with the expected status (2 for a flag clap or the validation refuses,
//! 1 for a setting the daemon refuses at start), say on stderr which flag (and environment
//! variable) is wrong and what to do, never panic, and stay short however long the value.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use weft_testbed::corpus;

/// How long weftd may take to refuse; a case still running then was not refused at all.
const DEADLINE: Duration = Duration::from_secs(15);

struct Case {
    label: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    code: i32,
    needles: &'static [&'static str],
    /// Substrings stderr must not contain.
    absent: &'static [&'static str],
}

fn case(label: &'static str, code: i32, needles: &'static [&'static str]) -> Case {
    Case {
        label,
        args: Vec::new(),
        env: Vec::new(),
        code,
        needles,
        absent: &[],
    }
}

impl Case {
    fn arg(mut self, arg: impl Into<String>) -> Case {
        self.args.push(arg.into());
        self
    }

    fn env(mut self, var: &'static str, value: impl Into<String>) -> Case {
        self.env.push((var, value.into()));
        self
    }

    fn absent(mut self, absent: &'static [&'static str]) -> Case {
        self.absent = absent;
        self
    }
}

/// Runs weftd with a clean environment and its files in `dir`; kills it at the deadline.
fn run(c: &Case, dir: &Path) -> Result<Output, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weftd"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NO_COLOR", "1")
        // Nothing listens there: a case that got as far as etcd fails the deadline check.
        .env("FLANNELD_ETCD_ENDPOINTS", "http://127.0.0.1:1")
        .arg(format!(
            "--subnet-file={}",
            dir.join("subnet.env").display()
        ))
        .arg(format!("--state-dir={}", dir.join("state").display()))
        .args(&c.args)
        .envs(c.env.iter().map(|(k, v)| (k, v)));
    corpus::output_within(&mut cmd, DEADLINE)
}

fn check(c: &Case, out: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems: Vec<String> = corpus::exit_problem(out, c.code).into_iter().collect();
    if !out.stdout.is_empty() {
        problems.push(format!("stdout: {}", String::from_utf8_lossy(&out.stdout)));
    }
    problems.extend(corpus::error_problems(&stderr, c.needles, c.absent));
    if !problems.is_empty() {
        problems.push(format!("stderr:\n{stderr}"));
    }
    problems
}

fn cases(busy_port: u16) -> Vec<Case> {
    let huge = "9".repeat(100_000);
    vec![
        // ---- refused by clap (2) ----
        case(
            "misspelt flag",
            2,
            &[
                "unexpected argument '--etcd-endpoint' found",
                "a similar argument exists: '--etcd-endpoints'",
            ],
        )
        .arg("--etcd-endpoint=http://10.0.0.1:2379"),
        case(
            "misspelt Go-style flag",
            2,
            &[
                "unexpected argument '--etcd-endpoint' found",
                "'--etcd-endpoints'",
            ],
        )
        .arg("-etcd-endpoint=http://10.0.0.1:2379"),
        case(
            "stray argument",
            2,
            &["unexpected argument 'extra' found", "Usage: weftd"],
        )
        .arg("extra"),
        case(
            "--healthz-port a word",
            2,
            &["invalid value 'http' for '--healthz-port <HEALTHZ_PORT>'"],
        )
        .arg("--healthz-port=http"),
        case(
            "--healthz-port too big",
            2,
            &[
                "'--healthz-port <HEALTHZ_PORT>'",
                "70000 is not in 0..=65535",
            ],
        )
        .arg("--healthz-port=70000"),
        case(
            "--healthz-port without a value",
            2,
            &["a value is required for '--healthz-port <HEALTHZ_PORT>'"],
        )
        .arg("--healthz-port"),
        case(
            "--ip-masq maybe",
            2,
            &[
                "invalid value 'maybe' for '--ip-masq",
                "expected true or false (or 1, 0, t, f, TRUE, FALSE",
            ],
        )
        .arg("--ip-masq=maybe"),
        case(
            "--iptables-forward-rules yes",
            2,
            &["invalid value 'yes' for '--iptables-forward-rules"],
        )
        .arg("--iptables-forward-rules=yes"),
        case(
            "--iptables-backend unknown",
            2,
            &[
                "invalid value 'nftables' for '--iptables-backend <IPTABLES_BACKEND>'",
                "[possible values: auto, legacy, nft]",
            ],
        )
        .arg("--iptables-backend=nftables"),
        case(
            "WEFT_IPTABLES_BACKEND unknown",
            2,
            &["invalid value 'iptables' for '--iptables-backend <IPTABLES_BACKEND>'"],
        )
        .env("WEFT_IPTABLES_BACKEND", "iptables"),
        case(
            "--iptables-resync negative",
            2,
            &["invalid value '-1' for '--iptables-resync <IPTABLES_RESYNC>'"],
        )
        .arg("--iptables-resync=-1"),
        case(
            "--subnet-lease-renew-margin a word",
            2,
            &["invalid value 'abc' for '--subnet-lease-renew-margin"],
        )
        .arg("--subnet-lease-renew-margin=abc"),
        case(
            "-v a word",
            2,
            &["invalid value 'loud' for '--v <VERBOSITY>'"],
        )
        .arg("-v")
        .arg("loud"),
        // ---- the same from FLANNELD_* variables: the variable is named (2) ----
        case(
            "FLANNELD_HEALTHZ_PORT a word",
            2,
            &[
                "'--healthz-port <HEALTHZ_PORT>'",
                "comes from the environment variable FLANNELD_HEALTHZ_PORT=\"http\"",
                "correct or unset FLANNELD_HEALTHZ_PORT",
            ],
        )
        .env("FLANNELD_HEALTHZ_PORT", "http"),
        case(
            "FLANNELD_IP_MASQ yes",
            2,
            &["'--ip-masq", "FLANNELD_IP_MASQ=\"yes\""],
        )
        .env("FLANNELD_IP_MASQ", "yes"),
        case(
            "FLANNELD_V a word",
            2,
            &["'--v <VERBOSITY>'", "FLANNELD_V=\"loud\""],
        )
        .env("FLANNELD_V", "loud"),
        case(
            "FLANNELD_IPTABLES_RESYNC a word",
            2,
            &["FLANNELD_IPTABLES_RESYNC=\"5s\""],
        )
        .env("FLANNELD_IPTABLES_RESYNC", "5s"),
        case(
            "FLANNELD_HEALTHZ_PORT a word, but the flag is given",
            2,
            &["invalid value 'http' for '--healthz-port"],
        )
        .env("FLANNELD_HEALTHZ_PORT", "8081")
        .arg("--healthz-port=http")
        .absent(&["FLANNELD_HEALTHZ_PORT"]),
        // ---- refused by the validation (2) ----
        case(
            "--subnet-lease-renew-margin 0",
            2,
            &[
                "--subnet-lease-renew-margin 0 is out of range",
                "between 1 and 1439 minutes",
            ],
        )
        .arg("--subnet-lease-renew-margin=0"),
        case(
            "--subnet-lease-renew-margin a day",
            2,
            &["--subnet-lease-renew-margin 1440 is out of range"],
        )
        .arg("--subnet-lease-renew-margin=1440"),
        case(
            "--subnet-lease-ttl 1",
            2,
            &[
                "--subnet-lease-ttl 1 is out of range",
                "use 5 to 31536000 seconds",
            ],
        )
        .arg("--subnet-lease-ttl=1"),
        case(
            "--subnet-lease-ttl over a year",
            2,
            &["--subnet-lease-ttl 31536001 is out of range"],
        )
        .arg("--subnet-lease-ttl=31536001"),
        case(
            "--iptables-resync 0",
            2,
            &["--iptables-resync 0 is out of range", "≥ 1"],
        )
        .arg("--iptables-resync=0"),
        case(
            "--public-ip out of range",
            2,
            &[
                "--public-ip \"10.0.0.300\" is not an IPv4 address",
                "the address other nodes reach this node at",
            ],
        )
        .arg("--public-ip=10.0.0.300"),
        case(
            "--public-ip IPv6",
            2,
            &["--public-ip \"fe80::1\" is not an IPv4 address"],
        )
        .arg("--public-ip=fe80::1"),
        case(
            "--public-ip 100 KB",
            2,
            &["--public-ip \"9999", "is not an IPv4 address"],
        )
        .arg(format!("--public-ip={huge}")),
        case(
            "--iface-can-reach a name",
            2,
            &[
                "--iface-can-reach \"etcd\" is not an IPv4 address",
                "such as the etcd server's",
            ],
        )
        .arg("--iface-can-reach=etcd"),
        case(
            "--etcd-endpoints without a scheme",
            2,
            &[
                "--etcd-endpoints entry \"10.0.0.1:2379\" must start with http:// or https://",
                "http://10.0.0.1:2379",
            ],
        )
        .arg("--etcd-endpoints=10.0.0.1:2379"),
        case(
            "--etcd-endpoints only commas",
            2,
            &["--etcd-endpoints \",,\" holds no endpoint"],
        )
        .arg("--etcd-endpoints=,,"),
        case(
            "--healthz-ip a name",
            2,
            &["--healthz-ip \"localhost\" is not an IP address"],
        )
        .arg("--healthz-ip=localhost"),
        case(
            "--healthz-ip 100 KB",
            2,
            &["--healthz-ip \"9999", "is not an IP address"],
        )
        .arg(format!("--healthz-ip={huge}")),
        case(
            "FLANNELD_PUBLIC_IP a word",
            2,
            &[
                "--public-ip \"bogus\" is not an IPv4 address",
                "comes from the environment variable FLANNELD_PUBLIC_IP=\"bogus\"",
            ],
        )
        .env("FLANNELD_PUBLIC_IP", "bogus"),
        case(
            "FLANNELD_SUBNET_LEASE_RENEW_MARGIN 0",
            2,
            &[
                "--subnet-lease-renew-margin 0 is out of range",
                "FLANNELD_SUBNET_LEASE_RENEW_MARGIN=\"0\"",
            ],
        )
        .env("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "0"),
        case(
            "WEFT_SUBNET_LEASE_TTL 1",
            2,
            &[
                "--subnet-lease-ttl 1 is out of range",
                "WEFT_SUBNET_LEASE_TTL=\"1\"",
            ],
        )
        .env("WEFT_SUBNET_LEASE_TTL", "1"),
        case(
            "FLANNELD_HEALTHZ_IP a name",
            2,
            &[
                "--healthz-ip \"any\" is not an IP address",
                "FLANNELD_HEALTHZ_IP=\"any\"",
            ],
        )
        .env("FLANNELD_HEALTHZ_IP", "any"),
        case(
            "FLANNELD_PUBLIC_IP bad, the flag is good",
            2,
            &["--iface-can-reach \"x\""],
        )
        .env("FLANNELD_PUBLIC_IP", "bogus")
        .arg("--public-ip=10.0.0.1")
        .arg("--iface-can-reach=x")
        .absent(&["FLANNELD_PUBLIC_IP"]),
        // ---- refused by the daemon at start, before etcd (1) ----
        case(
            "--kube-subnet-mgr",
            1,
            &[
                "--kube-subnet-mgr is not available in weft yet",
                "pass --etcd-endpoints",
            ],
        )
        .arg("--kube-subnet-mgr"),
        case(
            "FLANNELD_KUBE_SUBNET_MGR=1",
            1,
            &["--kube-subnet-mgr is not available in weft yet"],
        )
        .env("FLANNELD_KUBE_SUBNET_MGR", "1"),
        case(
            "--public-ipv6",
            1,
            &["--public-ipv6 is set, but IPv6 is not available in weft yet; remove the flag"],
        )
        .arg("--public-ipv6=fd00::1"),
        case(
            "--etcd-cafile missing",
            1,
            &[
                "cannot read CA file /nonexistent/ca.pem",
                "check --etcd-cafile",
            ],
        )
        .arg("--etcd-cafile=/nonexistent/ca.pem"),
        case(
            "--etcd-certfile without a key",
            1,
            &["--etcd-certfile is set but --etcd-keyfile is not; pass both"],
        )
        .arg("--etcd-certfile=/nonexistent/node.pem"),
        case(
            "--healthz-port taken",
            1,
            &["cannot listen on --healthz-ip/--healthz-port 127.0.0.1:"],
        )
        .arg("--healthz-ip=127.0.0.1")
        .arg(format!("--healthz-port={busy_port}")),
    ]
}

#[test]
fn bad_flags_are_refused_with_the_flag_named_and_no_panic() {
    // Held for the whole test so "--healthz-port taken" finds the port in use.
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let port = busy.local_addr().expect("local addr").port();
    let cases = cases(port);
    corpus::assert_corpus(
        "weftd",
        &cases,
        |c| c.label.to_string(),
        |c| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut problems = match run(c, dir.path()) {
                Ok(out) => check(c, &out),
                Err(e) => vec![e],
            };
            if dir.path().join("subnet.env").exists() {
                problems.push("wrote subnet.env".to_string());
            }
            problems
        },
    );
    println!("weftd: {} bad-flag cases", cases.len());
}
