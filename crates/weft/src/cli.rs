//! Argument structs of the `network` and `leases` commands (clap derive), apart from the logic.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// How to reach etcd: weft-store's [`weft_store::EtcdFlags`], the same flags, defaults and
/// `FLANNELD_*` environment fallbacks as weftd and flanneld, so a node's environment works
/// unchanged.
pub use weft_store::EtcdFlags as EtcdArgs;

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
    /// Backend type: vxlan, or host-gw when every node is on one L2 network (the backends
    /// weftd runs; others are refused).
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
    /// DirectRouting (vxlan): a peer whose PublicIP is on the node's own L2 network is routed
    /// via that IP unencapsulated, the others go through VXLAN.
    #[arg(long, conflicts_with_all = ["json", "from_file"])]
    pub direct_routing: bool,
    /// flannel's nftables mode ("EnableNFTables": true): weftd writes the table
    /// ip flannel-ipv4 instead of iptables chains; br_netfilter is not needed.
    #[arg(long, conflicts_with_all = ["json", "from_file"])]
    pub nftables: bool,
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
    fn defaults_are_flanneld_s() {
        // The declared defaults (independent of FLANNELD_* variables in the environment).
        use clap::CommandFactory;
        let cmd = T::command();
        let default = |id: &str| {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_default_values()[0].to_string_lossy().into_owned()
        };
        assert_eq!(
            default("etcd_endpoints"),
            "http://127.0.0.1:4001,http://127.0.0.1:2379"
        );
        assert_eq!(default("etcd_prefix"), "/coreos.com/network");
    }

    /// The `weft network init` command that `weft manifest` prints parses with this CLI's
    /// flags and names the same network as the manifest's net-conf.json.
    #[test]
    fn manifest_network_init_command_parses() {
        use clap::Args as _;
        #[derive(Debug, Parser)]
        struct M {
            #[command(flatten)]
            m: weft_deploy::manifest::ManifestArgs,
        }
        for extra in [
            &[][..],
            &[
                "--network",
                "10.50.0.0/16",
                "--subnet-len",
                "25",
                "--vni",
                "4096",
            ][..],
            &[
                "--network",
                "172.16.0.0/12",
                "--backend",
                "VXLAN",
                "--port",
                "0",
            ][..],
            &["--backend", "host-gw", "--subnet-len", "26"][..],
            &["--direct-routing", "--mtu", "9001"][..],
            &["--backend", "host-gw", "--nftables"][..],
        ] {
            let mut argv = vec!["weft", "--etcd-endpoints", "http://10.0.0.5:2379"];
            argv.extend_from_slice(extra);
            let a = M::try_parse_from(argv).unwrap().m;
            let (spec, _) = weft_deploy::manifest::validate(&a).unwrap();
            let parsed = weft_core::config::NetworkConfig::parse(spec.net_conf.as_bytes()).unwrap();
            let init = InitArgs::augment_args(clap::Command::new("weft"))
                .try_get_matches_from(&spec.network_init[2..])
                .unwrap_or_else(|e| panic!("{:?}: {e}", spec.network_init));
            assert_eq!(
                init.get_one::<String>("network").map(String::as_str),
                parsed.network.map(|n| n.to_string()).as_deref(),
                "{extra:?}"
            );
            // The command writes the very config the manifest's ConfigMap carries.
            let init = <InitArgs as clap::FromArgMatches>::from_arg_matches(&init).unwrap();
            let built = crate::netconf::build_config(&crate::netconf::InitSpec {
                network: init.network.clone().unwrap(),
                subnet_len: init.subnet_len,
                subnet_min: init.subnet_min,
                subnet_max: init.subnet_max,
                backend: init.backend.clone(),
                vni: init.vni,
                port: init.port,
                mtu: init.mtu,
                direct_routing: init.direct_routing,
                nftables: init.nftables,
            })
            .unwrap();
            assert_eq!(built.config, parsed, "{extra:?}: {:?}", spec.network_init);
        }
    }
}
