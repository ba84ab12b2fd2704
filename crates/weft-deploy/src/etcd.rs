//! `weft etcd ignition`, the pure part: everything to run weft's etcd as a production cluster on Fedora
//! CoreOS in the cluster's VPC, instead of the seed procedure's single plain-HTTP etcd on a
//! public IP with the retired discovery.etcd.io service.
//!
//! Into `--out-dir` the CLI (weft's etcd_cluster module) writes what this module plans and
//! issues:
//! - `ca.crt`, `ca.key`: the cluster CA (ECDSA P-256, 10 years). **An existing CA in the
//!   directory is reused** (after checking that ca.key belongs to ca.crt, that it is a CA and
//!   that it has not expired), so a re-run renews member and client certs without breaking
//!   anything that trusts the CA; only one of the two files present is an error.
//! - `client.crt`, `client.key`: the client cert of weftd and weft (CN `weft`).
//! - `<name>/server.{crt,key}`, `<name>/peer.{crt,key}` per member (SANs: its private IP and
//!   its name), and `<name>.ign`, the member's Ignition config (see [`ignition`]).
//!
//! Everything else the operator has to do is printed: `aws ec2 run-instances` per member, the
//! security-group rules, `weft network init` and the `kubectl create secret` for weftd.
//! Checks that need no file system (member count, IPs, names, token, version) come first and
//! name the flag and the fix.

pub mod ignition;
pub mod pki;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::error::{Result, bail, input};
use clap::{Args, Subcommand};

use self::ignition::{Cluster, Member};
use self::pki::Day;

/// The etcd release the generated units run by default (a tag of quay.io/coreos/etcd).
pub const DEFAULT_ETCD_VERSION: &str = "3.5.21";
/// The image repository a bare `--etcd-version` is a tag of.
pub const ETCD_IMAGE_REPOSITORY: &str = "quay.io/coreos/etcd";

/// `weft etcd ...`
#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// Generate a CA, TLS certs and one Fedora CoreOS Ignition config per member for a
    /// production etcd cluster (static bootstrap, mutual TLS, private IPs only), and print
    /// the AWS, weft and kubectl commands that go with them.
    ///
    /// An existing ca.crt/ca.key in --out-dir is reused, so re-running renews the member and
    /// client certs without changing what clients must trust.
    Ignition(IgnitionArgs),
}

/// `weft etcd ignition` flags.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example: weft etcd ignition --members 3 --private-ip 10.0.1.10 --private-ip 10.0.2.10 --private-ip 10.0.3.10 --out-dir ./etcd-pki"
)]
pub struct IgnitionArgs {
    /// Number of members: 1 (no fault tolerance) or 3 (survives the loss of one).
    #[arg(long, value_name = "N")]
    pub members: usize,
    /// Private VPC address of each member, in member order (repeat once per member). etcd
    /// listens there only, and the certs name it: launch each instance with exactly this IP.
    #[arg(long = "private-ip", value_name = "IP", action = clap::ArgAction::Append)]
    pub private_ip: Vec<String>,
    /// Members are named <prefix>0, <prefix>1, ...
    #[arg(long, value_name = "PREFIX", default_value = "etcd")]
    pub name_prefix: String,
    /// Where the CA, the certs and the Ignition configs go (created with mode 0700; it holds
    /// private keys).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// etcd's --initial-cluster-token (default: weft-etcd-<random>).
    #[arg(long, value_name = "TOKEN")]
    pub cluster_token: Option<String>,
    /// etcd version (a tag of quay.io/coreos/etcd, e.g. 3.5.21) or a full image reference
    /// (`--version` is the old spelling).
    #[arg(long, alias = "version", value_name = "VERSION|IMAGE", default_value = DEFAULT_ETCD_VERSION)]
    pub etcd_version: String,
    /// Pod network for the printed `weft network init` command.
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16")]
    pub network: String,
    /// EC2 instance type for the printed `aws ec2 run-instances` commands.
    #[arg(long, value_name = "TYPE", default_value = "t3.small")]
    pub instance_type: String,
}

/// Parses `weft etcd ignition` flags alone (`argv` without the program and subcommand), as
/// clap would under the `weft etcd ignition` command.
pub fn parse_ignition_args(argv: &[&str]) -> Result<IgnitionArgs, clap::Error> {
    #[derive(Debug, clap::Parser)]
    struct T {
        #[command(subcommand)]
        cmd: EtcdCommand,
    }
    let all = ["weft", "ignition"].iter().chain(argv.iter());
    let EtcdCommand::Ignition(a) = <T as clap::Parser>::try_parse_from(all)?.cmd;
    Ok(a)
}

/// The checked flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub cluster: Cluster,
    /// Whether the token was generated (and so must be kept if the configs are regenerated).
    pub token_generated: bool,
}

fn parse_ip(s: &str) -> Result<Ipv4Addr> {
    let ip: Ipv4Addr = s.trim().parse().map_err(|_| {
        input!(
            "--private-ip {s:?} is not an IPv4 address: pass the member's private VPC address, e.g. --private-ip 10.0.1.10"
        )
    })?;
    let o = ip.octets();
    let shared = o[0] == 100 && (64..128).contains(&o[1]);
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        bail!(
            "--private-ip {ip} cannot be a member address: pass the instance's private VPC address (etcd listens on it and the certs name it), e.g. --private-ip 10.0.1.10"
        );
    }
    if !(ip.is_private() || shared) {
        bail!(
            "--private-ip {ip} is not a private address: etcd must listen only inside the VPC (never on a public IP, as the seed setup did); pass the instance's private address from the VPC's RFC 1918 or 100.64.0.0/10 range, e.g. --private-ip 10.0.1.10"
        );
    }
    Ok(ip)
}

fn check_prefix(p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && p.len() <= 40
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && p.as_bytes()[0].is_ascii_lowercase();
    if !ok {
        bail!(
            "--name-prefix {p:?} cannot name members: use 1 to 40 lower-case letters, digits and '-', starting with a letter (it becomes the host name and a DNS name in the certs), e.g. --name-prefix etcd"
        );
    }
    Ok(())
}

fn check_token(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        bail!(
            "--cluster-token {t:?} is not usable: use 1 to 128 letters, digits, '-', '_' and '.', e.g. --cluster-token weft-prod-1 (or leave it out for a random one)"
        );
    }
    Ok(())
}

/// `quay.io/coreos/etcd:v3.5.21` from `3.5.21`/`v3.5.21`; a full reference passes unchanged.
pub fn image_for(version: &str) -> Result<String> {
    let v = version.trim();
    if v.contains('/') || v.contains(':') {
        if v.is_empty() || v.chars().any(char::is_whitespace) {
            bail!("--etcd-version {version:?} is not an image reference");
        }
        return Ok(v.to_string());
    }
    let bare = v.strip_prefix('v').unwrap_or(v);
    let parts: Vec<&str> = bare.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric || parts[0] != "3" || parts[1].parse::<u32>().unwrap_or(0) < 4 {
        bail!(
            "--etcd-version {version:?} is neither an etcd 3.4+ release such as {DEFAULT_ETCD_VERSION} nor an image reference such as {ETCD_IMAGE_REPOSITORY}:v{DEFAULT_ETCD_VERSION}"
        );
    }
    Ok(format!("{ETCD_IMAGE_REPOSITORY}:v{bare}"))
}

fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("weft-etcd-{:016x}", h.finish())
}

/// Checks the flags (no file system access).
pub fn plan(args: &IgnitionArgs) -> Result<Plan> {
    if args.members != 1 && args.members != 3 {
        bail!(
            "--members {} is not supported: use --members 3 for a cluster that survives the loss of one member, or --members 1 for a single member without fault tolerance (etcd needs an odd count; 5+ is not generated by weft)",
            args.members
        );
    }
    if args.private_ip.len() != args.members {
        let example: Vec<String> = (0..args.members)
            .map(|i| format!("--private-ip 10.0.{}.10", i + 1))
            .collect();
        bail!(
            "--members {} needs {} --private-ip values, one per member in order, but {} were given: e.g. {}",
            args.members,
            args.members,
            args.private_ip.len(),
            example.join(" ")
        );
    }
    check_prefix(&args.name_prefix)?;
    let mut members = Vec::new();
    for (i, s) in args.private_ip.iter().enumerate() {
        let ip = parse_ip(s)?;
        if let Some(dup) = members.iter().find(|m: &&Member| m.ip == ip) {
            bail!(
                "--private-ip {ip} is given twice (for {} and {}{i}): every member needs its own address",
                dup.name,
                args.name_prefix
            );
        }
        members.push(Member {
            name: format!("{}{i}", args.name_prefix),
            ip,
        });
    }
    let (token, token_generated) = match &args.cluster_token {
        Some(t) => {
            check_token(t)?;
            (t.clone(), false)
        }
        None => (random_token(), true),
    };
    let image = image_for(&args.etcd_version)?;
    if args.network.parse::<ipnet::Ipv4Net>().is_err() {
        bail!(
            "--network {:?} is not an IPv4 CIDR, e.g. --network 10.244.0.0/16",
            args.network
        );
    }
    Ok(Plan {
        cluster: Cluster {
            members,
            token,
            image,
        },
        token_generated,
    })
}

/// `s` quoted for a POSIX shell when it needs it (shlex; a flag value cannot hold a NUL, the
/// one byte shlex refuses, so the fallback is never taken).
fn sh(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| s.replace('\0', ""), |q| q.into_owned())
}

/// What to do next, with every command filled in (placeholders in <ANGLE_BRACKETS>).
pub fn instructions(
    plan: &Plan,
    args: &IgnitionArgs,
    reused_ca: bool,
    leaf_not_after: Day,
    ca_not_after: Day,
) -> String {
    let c = &plan.cluster;
    let dir = args.out_dir.display().to_string();
    let p = |f: &str| sh(&format!("{dir}/{f}"));
    let n = c.members.len();
    let endpoints = c.client_endpoints();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "weft etcd ignition: {n}-member etcd cluster, image {}, cluster token {}",
        c.image, c.token
    );
    let _ = writeln!(
        o,
        "\nWrote to {dir} (mode 0700; it holds private keys, keep it private):"
    );
    let _ = writeln!(
        o,
        "  ca.crt ca.key            the cluster CA ({}; valid until {ca_not_after})",
        if reused_ca {
            "REUSED from this directory"
        } else {
            "new"
        }
    );
    let _ = writeln!(
        o,
        "  client.crt client.key    client cert for weftd and weft (CN {})",
        pki::CLIENT_CN
    );
    for m in &c.members {
        let _ = writeln!(
            o,
            "  {0}.ign {0}/              member {0} at {1}: Ignition config, server and peer certs",
            m.name, m.ip
        );
    }
    let _ = writeln!(
        o,
        "Certs are valid until {leaf_not_after}. Re-run with the same --out-dir{} to renew them from the same CA.",
        if plan.token_generated {
            format!(" and --cluster-token {}", c.token)
        } else {
            String::new()
        }
    );

    let _ = writeln!(
        o,
        "\n1. Security group for the members (etcd listens on the private IPs only; no public address needed):"
    );
    let _ = writeln!(
        o,
        "   aws ec2 authorize-security-group-ingress --group-id <ETCD_SG_ID> --protocol tcp --port 2379 --source-group <NODE_SG_ID>   # clients: weftd on every node"
    );
    if n > 1 {
        let _ = writeln!(
            o,
            "   aws ec2 authorize-security-group-ingress --group-id <ETCD_SG_ID> --protocol tcp --port 2380 --source-group <ETCD_SG_ID>   # peers: between members"
        );
    }
    let _ = writeln!(
        o,
        "   Add 2379 from wherever you run `weft network init` and etcdctl (e.g. a bastion's group)."
    );

    let _ = writeln!(
        o,
        "\n2. Launch each member from a Fedora CoreOS AMI (stable stream, your region) in a private subnet of the VPC,\n   with exactly the private IP its certs name:"
    );
    for m in &c.members {
        let tags = format!("ResourceType=instance,Tags=[{{Key=Name,Value={}}}]", m.name);
        let _ = writeln!(
            o,
            "   aws ec2 run-instances --image-id <FCOS_AMI_ID> --instance-type {} --count 1 \\\n     --subnet-id <PRIVATE_SUBNET_ID_FOR_{ip}> --private-ip-address {ip} \\\n     --security-group-ids <ETCD_SG_ID> --key-name <KEY_NAME> \\\n     --user-data file://{} \\\n     --tag-specifications {}",
            sh(&args.instance_type),
            p(&format!("{}.ign", m.name)),
            sh(&tags),
            ip = m.ip,
        );
    }

    let tls = format!(
        "--etcd-cafile {} --etcd-certfile {} --etcd-keyfile {}",
        p("ca.crt"),
        p("client.crt"),
        p("client.key")
    );
    let _ = writeln!(
        o,
        "\n3. Check the cluster from a host in the VPC:\n   ETCDCTL_API=3 etcdctl --endpoints {endpoints} --cacert {} --cert {} --key {} endpoint health",
        p("ca.crt"),
        p("client.crt"),
        p("client.key")
    );
    let _ = writeln!(
        o,
        "\n4. Write the network config:\n   weft network init --network {} --etcd-endpoints {endpoints} {tls}",
        sh(&args.network)
    );
    let _ = writeln!(
        o,
        "\n5. Give weftd the CA and client cert (its DaemonSet mounts this Secret):\n   kubectl create secret generic weft-etcd-tls --from-file=ca.crt={} --from-file=tls.crt={} --from-file=tls.key={} -n kube-flannel",
        p("ca.crt"),
        p("client.crt"),
        p("client.key")
    );
    let _ = writeln!(
        o,
        "   weftd then runs with --etcd-endpoints={endpoints} and the mounted files as --etcd-cafile/--etcd-certfile/--etcd-keyfile\n   (e.g. weft manifest --etcd-endpoints {endpoints} --etcd-tls-secret weft-etcd-tls)."
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    fn args(list: &[&str]) -> IgnitionArgs {
        parse_ignition_args(list).unwrap()
    }

    fn plan_err(list: &[&str]) -> String {
        plan(&args(list)).unwrap_err().to_string()
    }

    #[test]
    fn plan_builds_members() {
        let p = plan(&args(&[
            "--members=3",
            "--private-ip=10.0.1.10",
            "--private-ip=10.0.2.10",
            "--private-ip=100.64.0.7",
            "--out-dir=/x",
            "--name-prefix=kv",
            "--cluster-token=tok",
        ]))
        .unwrap();
        let names: Vec<&str> = p.cluster.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["kv0", "kv1", "kv2"]);
        assert_eq!(p.cluster.token, "tok");
        assert!(!p.token_generated);
        assert_eq!(p.cluster.image, "quay.io/coreos/etcd:v3.5.21");
        let p = plan(&args(&[
            "--members=1",
            "--private-ip=10.0.1.10",
            "--out-dir=/x",
        ]))
        .unwrap();
        assert!(p.token_generated && p.cluster.token.starts_with("weft-etcd-"));
    }

    #[test]
    fn bad_input_names_the_flag_and_the_fix() {
        let e = plan_err(&["--members=2", "--private-ip=10.0.1.10", "--out-dir=/x"]);
        assert!(
            e.contains("--members 2") && e.contains("--members 3"),
            "{e}"
        );
        let e = plan_err(&["--members=3", "--private-ip=10.0.1.10", "--out-dir=/x"]);
        assert!(
            e.contains("needs 3 --private-ip") && e.contains("1 were given"),
            "{e}"
        );
        let e = plan_err(&["--members=1", "--private-ip=10.0.1.300", "--out-dir=/x"]);
        assert!(
            e.contains("--private-ip \"10.0.1.300\" is not an IPv4"),
            "{e}"
        );
        let e = plan_err(&["--members=1", "--private-ip=3.5.1.2", "--out-dir=/x"]);
        assert!(e.contains("not a private address"), "{e}");
        let e = plan_err(&["--members=1", "--private-ip=0.0.0.0", "--out-dir=/x"]);
        assert!(e.contains("cannot be a member address"), "{e}");
        let e = plan_err(&[
            "--members=3",
            "--private-ip=10.0.1.10",
            "--private-ip=10.0.1.11",
            "--private-ip=10.0.1.10",
            "--out-dir=/x",
        ]);
        assert!(e.contains("given twice"), "{e}");
        let e = plan_err(&[
            "--members=1",
            "--private-ip=10.0.1.10",
            "--out-dir=/x",
            "--name-prefix=Etcd_",
        ]);
        assert!(e.contains("--name-prefix"), "{e}");
        let e = plan_err(&[
            "--members=1",
            "--private-ip=10.0.1.10",
            "--out-dir=/x",
            "--cluster-token=a b",
        ]);
        assert!(e.contains("--cluster-token"), "{e}");
        let e = plan_err(&[
            "--members=1",
            "--private-ip=10.0.1.10",
            "--out-dir=/x",
            "--etcd-version=latest",
        ]);
        assert!(e.contains("--etcd-version \"latest\""), "{e}");
        // `--version`, the old spelling, still sets it.
        let e = plan_err(&[
            "--members=1",
            "--private-ip=10.0.1.10",
            "--out-dir=/x",
            "--version=latest",
        ]);
        assert!(e.contains("--etcd-version \"latest\""), "{e}");
    }

    #[test]
    fn versions_and_images() {
        assert_eq!(image_for("3.5.17").unwrap(), "quay.io/coreos/etcd:v3.5.17");
        assert_eq!(image_for("v3.6.0").unwrap(), "quay.io/coreos/etcd:v3.6.0");
        assert_eq!(
            image_for("registry.example/etcd:3.5").unwrap(),
            "registry.example/etcd:3.5"
        );
        assert!(image_for("3.3.1").is_err());
        assert!(image_for("3.5").is_err());
    }

    #[test]
    fn printed_paths_survive_the_shell() {
        for raw in [
            "./pki/ca.crt",
            "my pki/ca.crt",
            "it's/$HOME/`x`/ca.crt",
            "a\"b\\c",
            "",
        ] {
            let q = sh(raw);
            assert_eq!(
                shlex::split(&q),
                Some(vec![raw.to_string()]),
                "{raw:?} -> {q}"
            );
        }
        assert_eq!(sh("./pki/ca.crt"), "./pki/ca.crt");
    }
}
