//! Argument structs of the `network` and `leases` commands (clap derive), apart from the logic.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use weft_store::StoreConfig;

/// The environment fallback of `--etcd-endpoints`.
const ENDPOINTS_ENV: &str = "FLANNELD_ETCD_ENDPOINTS";

/// How to reach etcd: the same flags and `FLANNELD_*` environment fallbacks as weftd and
/// flanneld, so a node's environment works unchanged.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "etcd")]
pub struct EtcdArgs {
    /// Comma-separated etcd endpoints (http:// or https://).
    #[arg(
        long,
        env = "FLANNELD_ETCD_ENDPOINTS",
        value_name = "URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: String,
    /// etcd prefix of the network config and the subnet leases (as weftd's --etcd-prefix).
    #[arg(
        long,
        env = "FLANNELD_ETCD_PREFIX",
        value_name = "PREFIX",
        default_value = "/coreos.com/network"
    )]
    pub etcd_prefix: String,
    /// CA that signed etcd's server certificate (https endpoints).
    #[arg(long, env = "FLANNELD_ETCD_CAFILE", value_name = "PATH")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd TLS (with --etcd-keyfile).
    #[arg(long, env = "FLANNELD_ETCD_CERTFILE", value_name = "PATH")]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd TLS (with --etcd-certfile).
    #[arg(long, env = "FLANNELD_ETCD_KEYFILE", value_name = "PATH")]
    pub etcd_keyfile: Option<PathBuf>,
    /// etcd username.
    #[arg(long, env = "FLANNELD_ETCD_USERNAME", value_name = "NAME")]
    pub etcd_username: Option<String>,
    /// etcd password.
    #[arg(
        long,
        env = "FLANNELD_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
}

impl EtcdArgs {
    /// The endpoints, split on commas and checked, or an error naming the flag (and the
    /// environment variable, when the value came from there) and the fix.
    pub fn endpoints(&self) -> anyhow::Result<Vec<String>> {
        weft_store::parse_endpoints(&self.etcd_endpoints).map_err(|e| {
            let on_command_line = std::env::args()
                .skip(1)
                .any(|a| a == "--etcd-endpoints" || a.starts_with("--etcd-endpoints="));
            let from_env = std::env::var(ENDPOINTS_ENV).is_ok_and(|v| v == self.etcd_endpoints);
            if from_env && !on_command_line {
                anyhow::anyhow!(
                    "{e} (the value comes from the environment variable {ENDPOINTS_ENV}; correct or unset it)"
                )
            } else {
                e.into()
            }
        })
    }

    /// The store config for weft-store.
    pub fn store_config(&self) -> anyhow::Result<StoreConfig> {
        Ok(StoreConfig {
            endpoints: self.endpoints()?,
            prefix: self.etcd_prefix.clone(),
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
            username: self.etcd_username.clone(),
            password: self.etcd_password.clone(),
        })
    }
}

/// Output format of the commands that print data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// `--output` for commands whose output is data.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `weft network ...`
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Write the network config (<prefix>/config) to etcd v3, validated like weftd reads it.
    ///
    /// Idempotent: an identical (or equivalent) stored config is left alone. A different one is
    /// only replaced with --force.
    Init(InitArgs),
    /// Print the stored network config: raw, and the effective values with defaults.
    Show {
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Validate the stored config and the subnet leases; exit 1 when anything is wrong.
    ///
    /// When the config is missing from etcd v3, also looks in the etcd v2 store (plain HTTP
    /// only) and explains the v2/v3 split.
    Check {
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Copy the network config from the etcd v2 store to v3 (subnet leases are not copied).
    MigrateV2 {
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

/// `--force` and `--dry-run` of the commands that write the config.
#[derive(Debug, Clone, Copy, Args)]
pub struct WriteArgs {
    /// Replace a stored config that differs.
    #[arg(long)]
    pub force: bool,
    /// Print what would be written, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `weft network init`.
#[derive(Debug, Clone, Args)]
#[command(group(
    clap::ArgGroup::new("source")
        .required(true)
        .args(["network", "from_file", "json"])
))]
pub struct InitArgs {
    /// The cluster pod network (IPv4 CIDR), e.g. 10.244.0.0/16.
    #[arg(long, value_name = "CIDR")]
    pub network: Option<String>,
    /// Prefix length of each node's subnet (default: 24, or network prefix + 2 for small networks).
    #[arg(long, value_name = "N", allow_negative_numbers = true, conflicts_with_all = ["json", "from_file"])]
    pub subnet_len: Option<u64>,
    /// First subnet handed out (default: the second subnet of the network).
    #[arg(long, value_name = "IP", conflicts_with_all = ["json", "from_file"])]
    pub subnet_min: Option<Ipv4Addr>,
    /// Last subnet handed out (default: the last subnet of the network).
    #[arg(long, value_name = "IP", conflicts_with_all = ["json", "from_file"])]
    pub subnet_max: Option<Ipv4Addr>,
    /// Backend type: vxlan, the only one weftd implements (others are refused).
    #[arg(long, default_value = "vxlan", conflicts_with_all = ["json", "from_file"])]
    pub backend: String,
    /// VXLAN network identifier (vxlan; default 1).
    #[arg(long, value_name = "N", allow_negative_numbers = true, conflicts_with_all = ["json", "from_file"])]
    pub vni: Option<u64>,
    /// VXLAN UDP port (vxlan; default 0 = kernel default 8472).
    #[arg(long, value_name = "N", allow_negative_numbers = true, conflicts_with_all = ["json", "from_file"])]
    pub port: Option<u64>,
    /// Underlay MTU (vxlan; the VXLAN device gets MTU - 50; default: the node interface's MTU).
    #[arg(long, value_name = "N", allow_negative_numbers = true, conflicts_with_all = ["json", "from_file"])]
    pub mtu: Option<u64>,
    /// Write this file's content as the config (validated first).
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// Write this JSON as the config (validated first).
    #[arg(long, value_name = "RAW")]
    pub json: Option<String>,
    #[command(flatten)]
    pub write: WriteArgs,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// `weft leases ...`
#[derive(Debug, Subcommand)]
pub enum LeasesCommand {
    /// One row per key under <prefix>/subnets/, with TTLs and problem flags.
    ///
    /// Flags: DUPLICATE-IP (two leases with one PublicIP), OVERLAP (subnets overlap), OUTSIDE
    /// (not inside Network, wrong SubnetLen, or outside SubnetMin..SubnetMax), BAD (key or value
    /// unusable, with the reason).
    List {
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    #[test]
    fn endpoints_are_split_and_checked() {
        let t =
            T::try_parse_from(["t", "--etcd-endpoints", "http://a:2379/, https://b:2379"]).unwrap();
        assert_eq!(
            t.etcd.endpoints().unwrap(),
            vec!["http://a:2379", "https://b:2379"]
        );
        let t = T::try_parse_from(["t", "--etcd-endpoints", "10.0.0.1:2379"]).unwrap();
        let err = t.etcd.endpoints().unwrap_err().to_string();
        assert!(
            err.contains("--etcd-endpoints") && err.contains("http://10.0.0.1:2379"),
            "{err}"
        );
        let t = T::try_parse_from(["t", "--etcd-endpoints", " , "]).unwrap();
        assert!(t.etcd.endpoints().is_err());
    }

    #[test]
    fn defaults_match_weftd() {
        // Only meaningful when the FLANNELD_* variables are not set in the test environment.
        if std::env::vars().any(|(k, _)| k.starts_with("FLANNELD_ETCD")) {
            return;
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.etcd.etcd_endpoints, "http://127.0.0.1:2379");
        assert_eq!(t.etcd.etcd_prefix, "/coreos.com/network");
    }
}
