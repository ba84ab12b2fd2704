//! weft: the operator CLI.

use weft::{
    cleanup, cli, doctor, eks, etcd_cluster, install_cni, leases, manifest, network, status,
};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use weft::cli::{LeasesCommand, NetworkCommand};
use weft::output::Outcome;

#[derive(Debug, Parser)]
#[command(name = "weft", version, about = "weft's operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The commands in the order of the workflow: the etcd, the plan, the config, the deployment,
// the node, then looking at the result and testing it. Each summary (the first paragraph) is
// one line of `weft --help`; the rest is `weft <command> --help`.
#[derive(Debug, Subcommand)]
enum Command {
    /// A production etcd for weft: CA, TLS certs and Fedora CoreOS Ignition configs.
    #[command(subcommand)]
    Etcd(etcd_cluster::EtcdCommand),
    /// Plan an EKS cluster's move from the AWS VPC CNI to weft (an offline runbook).
    #[command(subcommand)]
    Eks(eks::EksCommand),
    /// The network config in etcd: write it, show it, check it, migrate it from etcd v2.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Print the Kubernetes manifests that run weftd on every node.
    ///
    /// Namespace, ServiceAccount, RBAC, ConfigMap and DaemonSet (and optionally the VPC CNI
    /// cleanup init container) for `kubectl apply -f -`.
    Manifest(manifest::ManifestArgs),
    /// Install the CNI plugin, its delegate plugins and the conflist (the init container).
    ///
    /// Copies weft-cni as <bin-dir>/flannel, the delegate plugins it needs (bridge, host-local,
    /// portmap, loopback) where missing or older, and writes <conf-dir>/10-flannel.conflist
    /// (kube-flannel's cbr0 config); idempotent. This is what the DaemonSet's init container runs.
    InstallCni {
        /// The weft-cni binary to install (default: next to this binary).
        #[arg(long, value_name = "PATH")]
        plugin: Option<PathBuf>,
        /// The CNI bin dir.
        #[arg(long, default_value = weft_cni::install::DEFAULT_BIN_DIR, value_name = "DIR")]
        bin_dir: PathBuf,
        /// The container runtime's CNI conf dir.
        #[arg(long, default_value = weft_cni::install::DEFAULT_CONF_DIR, value_name = "DIR")]
        conf_dir: PathBuf,
        /// Where to copy bridge, host-local, portmap and loopback from [default: /usr/lib/weft/cni
        /// when it exists, as in the weft image; otherwise none are copied].
        #[arg(long, value_name = "DIR")]
        plugins_dir: Option<PathBuf>,
        /// Also replace delegate plugins that are as new or newer than weft's, or whose version
        /// cannot be read.
        #[arg(long)]
        replace_plugins: bool,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        out: cli::OutputArgs,
    },
    /// Commands run on one node (as root, on the node or in its network namespace).
    #[command(subcommand)]
    Node(cleanup::NodeCommand),
    /// The subnet leases in etcd.
    #[command(subcommand)]
    Leases(LeasesCommand),
    /// The cluster at a glance: leases, and what every weftd has programmed (--probe).
    ///
    /// Every node's lease from etcd (subnet, public IP, VTEP MAC, TTL, flags), problems first;
    /// with --probe, each weftd's /peers and whether every node has programmed every other
    /// node as its lease says. Exit 1 on any FAIL (WARN alone exits 0).
    Status(status::StatusArgs),
    /// Check this node: every known failure (E1-E5) as OK/WARN/FAIL with cause and fix.
    ///
    /// Run as root, on the node or in its network namespace: etcd, the network config, the
    /// lease and subnet.env, the VXLAN device and peers, masquerading, sysctls, the CNI config,
    /// VPC CNI leftovers, kubelet max pods and the subnet manager mode; each problem with its
    /// cause and fix. Exit 1 when any check fails.
    Doctor(doctor::DoctorArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// For example `weft completion bash > /etc/bash_completion.d/weft`, or
    /// `source <(weft completion zsh)`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print weft's version (as --version; `-o json` for a JSON document).
    Version {
        #[command(flatten)]
        out: cli::OutputArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    weft::output::init_logging();
    let result = match cli.command {
        Command::InstallCni {
            plugin,
            bin_dir,
            conf_dir,
            plugins_dir,
            replace_plugins,
            dry_run,
            out,
        } => {
            let mut opts = weft_cni::install::InstallOptions::new(
                plugin.unwrap_or_else(|| weft::sibling("weft-cni")),
            );
            opts.bin_dir = bin_dir;
            opts.conf_dir = conf_dir;
            opts.plugins_dir = plugins_dir.or_else(|| {
                let default = PathBuf::from(weft_cni::install::DEFAULT_PLUGINS_DIR);
                default.is_dir().then_some(default)
            });
            opts.replace_plugins = replace_plugins;
            opts.dry_run = dry_run;
            return finish(install_cni::run(&opts, out.output));
        }
        Command::Etcd(cmd) => etcd_cluster::run(cmd),
        Command::Network(cmd) => return finish(etcd_command(run_network(cmd))),
        Command::Eks(cmd) => return finish(eks::run(cmd).map_err(anyhow::Error::from)),
        Command::Leases(LeasesCommand::List { out, etcd }) => {
            return finish(etcd_command(leases::list(&etcd, out.output)));
        }
        Command::Status(args) => return finish(etcd_command(status::run(&args))),
        Command::Manifest(args) => {
            return finish(manifest::run(&args).map_err(anyhow::Error::from));
        }
        Command::Node(cmd) => return finish(cleanup::run(cmd)),
        Command::Doctor(args) => return finish(doctor::run(&args)),
        Command::Completion { shell } => return completion(shell).emit(),
        Command::Version { out } => return version(out.output).emit(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The completion script, written to a buffer first so a closed pipe cannot panic.
fn completion(shell: clap_complete::Shell) -> Outcome {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "weft", &mut script);
    Outcome {
        stdout: String::from_utf8_lossy(&script).into_owned(),
        ..Outcome::default()
    }
}

/// `weft version`: what `weft --version` prints, or a JSON document.
fn version(format: cli::OutputFormat) -> Outcome {
    let name = env!("CARGO_PKG_NAME");
    let version = env!("CARGO_PKG_VERSION");
    let mut out = Outcome::default();
    match format {
        cli::OutputFormat::Text => out.say(format!("{name} {version}")),
        cli::OutputFormat::Json => out.say(weft::output::json(&serde_json::json!({
            "name": name,
            "version": version,
        }))),
    }
    out
}

async fn run_network(cmd: NetworkCommand) -> anyhow::Result<Outcome> {
    match cmd {
        NetworkCommand::Init(args) => network::init(&args).await,
        NetworkCommand::Show { out, etcd } => network::show(&etcd, out.output).await,
        NetworkCommand::Check { out, etcd } => network::check(&etcd, out.output).await,
        NetworkCommand::MigrateV2 { write, etcd } => network::migrate_v2(&etcd, write).await,
    }
}

/// Runs an etcd command on a small single-threaded runtime.
fn etcd_command(fut: impl Future<Output = anyhow::Result<Outcome>>) -> anyhow::Result<Outcome> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
        .block_on(fut)
}

use weft::output::finish;
