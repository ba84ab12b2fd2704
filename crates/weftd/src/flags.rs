//! flanneld's command line, with `FLANNELD_*` environment fallbacks (flannel-compat.md 7).
//!
//! flanneld uses Go's `flag` package, which takes `-flag` and `--flag`, `-flag=v` and
//! `-flag v`. [`normalize_args`] rewrites single-dash long flags so clap sees `--flag`; an
//! environment variable only fills a flag that was not given on the command line.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::{ArgAction, Parser};

/// weftd: a drop-in for flanneld (etcd v3 subnet manager, VXLAN backend).
#[derive(Debug, Clone, Parser)]
#[command(name = "weftd", disable_version_flag = true, about, long_about = None)]
pub struct Flags {
    /// flanneld's `--etcd-*` flags, defined once in weft-store (shared with the weft CLI).
    #[command(flatten)]
    pub etcd: weft_store::EtcdFlags,

    /// Use the Kubernetes API instead of etcd (not available in weft yet).
    #[arg(long, env = "FLANNELD_KUBE_SUBNET_MGR", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false, value_parser = go_bool)]
    pub kube_subnet_mgr: bool,

    /// Interface (name or IP address) to use for inter-host traffic; repeatable, first match wins.
    #[arg(long, env = "FLANNELD_IFACE", action = ArgAction::Append)]
    pub iface: Vec<String>,
    /// Regex matched against interface addresses, then names; repeatable.
    #[arg(long, env = "FLANNELD_IFACE_REGEX", action = ArgAction::Append)]
    pub iface_regex: Vec<String>,
    /// Use the interface that routes to this IP (like `ip route get`).
    #[arg(long, env = "FLANNELD_IFACE_CAN_REACH")]
    pub iface_can_reach: Option<String>,
    /// IP address other nodes should use to reach this one (e.g. behind NAT).
    #[arg(long, env = "FLANNELD_PUBLIC_IP")]
    pub public_ip: Option<String>,
    /// IPv6 public address (IPv6 is not available in weft yet).
    #[arg(long, env = "FLANNELD_PUBLIC_IPV6")]
    pub public_ipv6: Option<String>,

    /// Where to write the subnet file the CNI plugin reads.
    #[arg(
        long,
        env = "FLANNELD_SUBNET_FILE",
        default_value = "/run/flannel/subnet.env"
    )]
    pub subnet_file: PathBuf,
    /// Renew the lease this many minutes before it expires (1..1439).
    #[arg(long, env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN", default_value_t = 60)]
    pub subnet_lease_renew_margin: i64,
    /// Advanced (weft only): lease TTL in seconds. flanneld hard-codes 24 h; short TTLs are for tests.
    #[arg(long, env = "WEFT_SUBNET_LEASE_TTL", default_value_t = 86400)]
    pub subnet_lease_ttl: i64,
    /// Advanced (weft only): seconds between anti-entropy checks of the lease watch (a
    /// keys-only, paged listing compared with what the watch delivered; a difference is
    /// repaired by a full listing).
    #[arg(long, env = "WEFT_LEASE_RELIST_INTERVAL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub lease_relist_interval: u64,

    /// Masquerade traffic leaving the overlay network.
    #[arg(long, env = "FLANNELD_IP_MASQ", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false, value_parser = go_bool)]
    pub ip_masq: bool,
    /// Do not add --random-fully to the MASQUERADE rules.
    #[arg(long, env = "FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false, value_parser = go_bool)]
    pub ip_masq_fully_random_disable: bool,
    /// Seconds between checks that the iptables rules are still in place.
    #[arg(long, env = "FLANNELD_IPTABLES_RESYNC", default_value_t = 5)]
    pub iptables_resync: u64,
    /// Add FLANNEL-FWD rules accepting the overlay network in FORWARD.
    #[arg(long, env = "FLANNELD_IPTABLES_FORWARD_RULES", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true, value_parser = go_bool)]
    pub iptables_forward_rules: bool,

    /// The iptables backend weftd writes with: `legacy` (iptables-legacy, e.g. Amazon Linux 2),
    /// `nft` (iptables-nft, e.g. AL2023), or `auto`: the one that already holds the node's rules
    /// (kubelet's KUBE-IPTABLES-HINT chain, else the most rules; nft when neither holds any), as
    /// kube-proxy's iptables-wrapper decides.
    #[arg(long, env = "WEFT_IPTABLES_BACKEND", value_enum, default_value_t = IptablesBackend::Auto)]
    pub iptables_backend: IptablesBackend,

    /// Address the health server listens on.
    #[arg(long, env = "FLANNELD_HEALTHZ_IP", default_value = "0.0.0.0")]
    pub healthz_ip: String,
    /// Port of /healthz, /readyz and /metrics; 0 disables the server.
    #[arg(long, env = "FLANNELD_HEALTHZ_PORT", default_value_t = 0)]
    pub healthz_port: u16,

    /// Directory for state that must survive restarts and reboots (the VTEP MAC, kept per
    /// node identity, so several weftd may share it).
    #[arg(long, env = "WEFT_STATE_DIR", default_value = "/var/lib/weft")]
    pub state_dir: PathBuf,

    /// Log verbosity like flanneld's klog -v (0 info, 1+ debug, 3+ trace); RUST_LOG overrides.
    #[arg(short = 'v', long = "v", env = "FLANNELD_V", default_value_t = 0)]
    pub verbosity: u8,

    /// Print the version and exit.
    #[arg(long, action = ArgAction::SetTrue)]
    pub version: bool,
}

/// `--iptables-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IptablesBackend {
    /// The backend that already holds the node's rules.
    Auto,
    /// iptables-legacy.
    Legacy,
    /// iptables-nft.
    Nft,
}

/// A boolean flag value the way Go's `flag` package (so flanneld) takes it, from the command
/// line or a `FLANNELD_*` variable: `1`, `t`, `T`, `TRUE`, `true`, `True` and their false twins.
fn go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(
            "expected true or false (or 1, 0, t, f, TRUE, FALSE, as flanneld takes them)".into(),
        ),
    }
}

/// When the rejected value of `--<long>` came from its environment variable rather than the
/// command line, a line saying so (the error itself names only the flag). `args` is the
/// command line, `lookup` reads the environment.
pub fn env_source_note(
    long: &str,
    args: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let cmd = <Flags as clap::CommandFactory>::command();
    let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long))?;
    let var = arg.get_env()?.to_str()?;
    let short = arg.get_short().map(|c| format!("-{c}"));
    let on_command_line = args.iter().skip(1).take_while(|a| *a != "--").any(|a| {
        let name = a.split('=').next().unwrap_or(a);
        name == format!("--{long}") || short.as_deref().is_some_and(|s| a.starts_with(s))
    });
    if on_command_line {
        return None;
    }
    let value = lookup(var)?;
    let shown = if arg.is_hide_env_values_set() {
        "(hidden)".to_string()
    } else {
        format!("{:?}", weft_core::clip::clip(&value))
    };
    Some(format!(
        "the value of --{long} comes from the environment variable {var}={shown}; correct or unset {var}"
    ))
}

/// The flag (long name) a clap error is about, when it rejected a value.
pub fn rejected_flag(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(arg) = err.get(ContextKind::InvalidArg)? else {
        return None;
    };
    // "--healthz-port <HEALTHZ_PORT>", "-v <VERBOSITY>"
    let name = arg.split([' ', '=']).next()?;
    let long = name.strip_prefix("--")?;
    Some(long.to_string())
}

/// A flag value that does not make sense, with the flag named.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error(
        "--subnet-lease-renew-margin {0} is out of range: it must be between 1 and 1439 minutes"
    )]
    RenewMargin(i64),
    #[error(
        "--subnet-lease-ttl {0} is out of range: use 5 to 31536000 seconds (default 86400 = 24 h, as flanneld)"
    )]
    LeaseTtl(i64),
    #[error("--{flag} {value:?} is not an IPv4 address: {hint}")]
    BadIp {
        flag: &'static str,
        value: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Endpoints(#[from] weft_store::EndpointsFlagError),
    #[error("--iptables-resync 0 is out of range: use a number of seconds ≥ 1")]
    Resync,
    #[error("--healthz-ip {0:?} is not an IP address")]
    HealthzIp(String),
}

impl FlagError {
    /// The flag (long name) the error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            FlagError::RenewMargin(_) => "subnet-lease-renew-margin",
            FlagError::LeaseTtl(_) => "subnet-lease-ttl",
            FlagError::BadIp { flag, .. } => flag,
            FlagError::Endpoints(_) => "etcd-endpoints",
            FlagError::Resync => "iptables-resync",
            FlagError::HealthzIp(_) => "healthz-ip",
        }
    }
}

impl Flags {
    /// Checks what clap's types cannot. Runs before anything touches etcd or the kernel.
    pub fn validate(&self) -> Result<Validated, FlagError> {
        if !(1..1440).contains(&self.subnet_lease_renew_margin) {
            return Err(FlagError::RenewMargin(self.subnet_lease_renew_margin));
        }
        if !(5..=31_536_000).contains(&self.subnet_lease_ttl) {
            return Err(FlagError::LeaseTtl(self.subnet_lease_ttl));
        }
        if self.iptables_resync == 0 {
            return Err(FlagError::Resync);
        }
        let endpoints = self.etcd.endpoints()?;
        let public_ip = parse_ip(
            "public-ip",
            &self.public_ip,
            "pass the address other nodes reach this node at",
        )?;
        let can_reach = parse_ip(
            "iface-can-reach",
            &self.iface_can_reach,
            "pass an IPv4 address such as the etcd server's",
        )?;
        let healthz_ip: IpAddr = self
            .healthz_ip
            .parse()
            .map_err(|_| FlagError::HealthzIp(weft_core::clip::clip(&self.healthz_ip)))?;
        Ok(Validated {
            endpoints,
            public_ip,
            can_reach,
            healthz_ip,
        })
    }
}

fn parse_ip(
    flag: &'static str,
    v: &Option<String>,
    hint: &'static str,
) -> Result<Option<Ipv4Addr>, FlagError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| FlagError::BadIp {
            flag,
            value: weft_core::clip::clip(s),
            hint,
        }),
    }
}

/// Flag values parsed beyond strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub endpoints: Vec<String>,
    pub public_ip: Option<Ipv4Addr>,
    pub can_reach: Option<Ipv4Addr>,
    pub healthz_ip: IpAddr,
}

/// Rewrites Go-style `-long-flag` into `--long-flag` (single-letter flags such as `-v` stay),
/// up to a bare `--`.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for (i, a) in args.into_iter().enumerate() {
        if i == 0 || passthrough {
            out.push(a);
            continue;
        }
        if a == "--" {
            passthrough = true;
            out.push(a);
            continue;
        }
        let name_len = a
            .strip_prefix('-')
            .filter(|rest| !rest.starts_with('-'))
            .map(|rest| rest.split('=').next().unwrap_or("").len());
        match name_len {
            Some(n) if n > 1 => out.push(format!("-{a}")),
            _ => out.push(a),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        let argv = normalize_args(
            std::iter::once("weftd".to_string()).chain(args.iter().map(|s| s.to_string())),
        );
        Flags::try_parse_from(argv)
    }

    #[test]
    fn flanneld_defaults() {
        let f = parse(&[]).unwrap();
        assert_eq!(
            f.etcd.etcd_endpoints,
            "http://127.0.0.1:4001,http://127.0.0.1:2379"
        );
        assert_eq!(f.etcd.etcd_prefix, "/coreos.com/network");
        assert_eq!(f.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(f.subnet_lease_renew_margin, 60);
        assert!(!f.ip_masq);
        assert!(f.iptables_forward_rules);
        assert_eq!(f.iptables_resync, 5);
        assert_eq!(f.healthz_port, 0);
        assert_eq!(f.healthz_ip, "0.0.0.0");
        assert_eq!(f.subnet_lease_ttl, 86400);
        assert_eq!(f.iptables_backend, IptablesBackend::Auto);
    }

    #[test]
    fn iptables_backend_takes_the_three_modes() {
        for (text, want) in [
            ("auto", IptablesBackend::Auto),
            ("legacy", IptablesBackend::Legacy),
            ("nft", IptablesBackend::Nft),
        ] {
            let f = parse(&[&format!("--iptables-backend={text}")]).unwrap();
            assert_eq!(f.iptables_backend, want);
        }
        let err = parse(&["--iptables-backend=nftables"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--iptables-backend") && err.contains("legacy"),
            "{err}"
        );
    }

    #[test]
    fn go_style_single_dash_and_bool_forms() {
        let f = parse(&[
            "-etcd-endpoints=http://10.0.0.1:2379",
            "-ip-masq",
            "--iptables-forward-rules=false",
            "-iface",
            "eth1",
            "--iface=10.0.0.9",
            "-v",
            "2",
        ])
        .unwrap();
        assert_eq!(f.etcd.etcd_endpoints, "http://10.0.0.1:2379");
        assert!(f.ip_masq);
        assert!(!f.iptables_forward_rules);
        assert_eq!(f.iface, vec!["eth1", "10.0.0.9"]);
        assert_eq!(f.verbosity, 2);
    }

    #[test]
    fn the_seed_manifest_args_parse() {
        let f = parse(&[
            "--ip-masq",
            "--kube-subnet-mgr=false",
            "--etcd-endpoints=http://10.0.1.20:2379",
        ])
        .unwrap();
        assert!(f.ip_masq && !f.kube_subnet_mgr);
        assert_eq!(
            f.validate().unwrap().endpoints,
            vec!["http://10.0.1.20:2379"]
        );
    }

    #[test]
    fn unknown_flag_is_named() {
        let err = parse(&["--etcd-endpoint=http://x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--etcd-endpoint"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_flag() {
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["--subnet-lease-renew-margin=0"],
                "--subnet-lease-renew-margin",
            ),
            (
                vec!["--subnet-lease-renew-margin=1440"],
                "--subnet-lease-renew-margin",
            ),
            (vec!["--public-ip=10.0.0.300"], "--public-ip"),
            (vec!["--iface-can-reach=nope"], "--iface-can-reach"),
            (vec!["--etcd-endpoints=10.0.0.1:2379"], "--etcd-endpoints"),
            (vec!["--etcd-endpoints=,"], "--etcd-endpoints"),
            (vec!["--subnet-lease-ttl=1"], "--subnet-lease-ttl"),
            (vec!["--iptables-resync=0"], "--iptables-resync"),
            (vec!["--healthz-ip=localhost"], "--healthz-ip"),
        ];
        for (args, flag) in cases {
            let err = parse(&args).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn malformed_values_are_rejected_by_clap_with_the_flag() {
        let err = parse(&["--healthz-port=http"]).unwrap_err().to_string();
        assert!(err.contains("--healthz-port"), "{err}");
        let err = parse(&["--ip-masq=maybe"]).unwrap_err().to_string();
        assert!(err.contains("--ip-masq"), "{err}");
    }

    #[test]
    fn booleans_are_taken_as_go_takes_them() {
        for (text, want) in [
            ("1", true),
            ("T", true),
            ("True", true),
            ("0", false),
            ("F", false),
        ] {
            let f = parse(&[&format!("--ip-masq={text}")]).unwrap();
            assert_eq!(f.ip_masq, want, "{text}");
        }
        let err = parse(&["--iptables-forward-rules=yes"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--iptables-forward-rules") && err.contains("1, 0"),
            "{err}"
        );
    }

    #[test]
    fn env_note_names_the_variable_only_when_the_value_came_from_it() {
        let args = |a: &[&str]| -> Vec<String> {
            std::iter::once("weftd")
                .chain(a.iter().copied())
                .map(String::from)
                .collect()
        };
        let env = |var: &str| (var == "FLANNELD_HEALTHZ_PORT").then(|| "http".to_string());
        let note = env_source_note("healthz-port", &args(&[]), env).unwrap();
        assert!(note.contains("FLANNELD_HEALTHZ_PORT=\"http\""), "{note}");
        assert_eq!(
            env_source_note("healthz-port", &args(&["--healthz-port=x"]), env),
            None
        );
        assert_eq!(
            env_source_note("healthz-port", &args(&["--healthz-port", "x"]), env),
            None
        );
        assert_eq!(env_source_note("public-ip", &args(&[]), env), None);
        assert_eq!(env_source_note("no-such-flag", &args(&[]), env), None);
        let secret = |_: &str| Some("s3cret".to_string());
        let note = env_source_note("etcd-password", &args(&[]), secret).unwrap();
        assert!(!note.contains("s3cret"), "{note}");
        let v = |var: &str| (var == "FLANNELD_V").then(|| "x".to_string());
        assert_eq!(env_source_note("v", &args(&["-v", "x"]), v), None);
        assert!(env_source_note("v", &args(&[]), v).is_some());
    }

    #[test]
    fn normalize_leaves_values_and_passthrough_alone() {
        let v = normalize_args(["weftd", "-iface", "-x", "--", "-keep"].map(String::from));
        assert_eq!(v, ["weftd", "--iface", "-x", "--", "-keep"]);
    }
}
