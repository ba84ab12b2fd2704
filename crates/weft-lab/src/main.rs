//! weft-lab: weft's lab on one machine. `demo` runs a whole cluster in network namespaces with a
//! real etcd, `soak` loops weftd's reliability scenarios on one, and `connectivity test` checks
//! every pod pair of a testbed cluster. It links the testbed; the production binaries (weftd,
//! weft-cni, weft) do not.

mod cluster;
mod connectivity;
mod demo;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft::cli;

#[derive(Debug, Parser)]
#[command(
    name = "weft-lab",
    version,
    about = "weft's lab on one machine: the demo, the soak and the connectivity test (root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum DemoAction {
    /// Remove the demo cluster left by `weft-lab demo --keep` (or by a crashed run).
    Down,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole cluster on this machine (root) and test every pod pair.
    ///
    /// A namespaced VPC with a real etcd, weftd on every node, pods made through weft-cni on
    /// every node, then an all-pairs connectivity matrix. `weft-lab demo down` removes a cluster
    /// left by `--keep`.
    Demo {
        #[command(subcommand)]
        action: Option<DemoAction>,
        /// Number of nodes.
        #[arg(long, value_name = "N", default_value_t = 3)]
        nodes: usize,
        /// Pods per node (as soak's; `--pods` is the old spelling).
        #[arg(long, alias = "pods", value_name = "N", default_value_t = 2)]
        pods_per_node: usize,
        /// Path of the weftd binary (default: next to this binary).
        #[arg(long, value_name = "PATH")]
        weftd: Option<PathBuf>,
        /// Path of the weft-cni binary (default: next to this binary).
        #[arg(long, value_name = "PATH")]
        cni: Option<PathBuf>,
        /// The overlay network.
        #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16")]
        network: String,
        /// Leave the cluster running; remove it later with `weft-lab demo down`.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        out: cli::OutputArgs,
    },
    /// Run weftd's reliability scenarios in a loop on a testbed cluster (root).
    ///
    /// weftd restarts, etcd outages, kernel drift and nodes joining and leaving, under 20 ms
    /// pings and long-lived TCP flows between pods, with kernel watchers counting flaps. Prints
    /// a report (`-o json` for JSON; `--json`, its old spelling, still works but is deprecated);
    /// exits 1 if a packet was lost (outside the soak's own drift
    /// damage), a flow reset, a lease changed, a repair took over 5 s or a kernel entry flapped.
    /// The testbed is always removed, also on Ctrl-C.
    Soak(soak::SoakArgs),
    /// Test every pod pair of a testbed cluster: ICMP, TCP and MTU-sized packets (root).
    #[command(subcommand)]
    Connectivity(connectivity::ConnectivityCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    weft::output::init_logging();
    let result = match cli.command {
        Command::Demo {
            action: Some(DemoAction::Down),
            ..
        } => demo::down().map(|had| {
            if had {
                eprintln!("weft-lab: removed the demo cluster");
            } else {
                eprintln!("weft-lab: no demo cluster is running");
            }
        }),
        Command::Demo {
            action: None,
            nodes,
            pods_per_node,
            weftd,
            cni,
            network,
            keep,
            out,
        } => demo::run(&demo::DemoOptions {
            nodes,
            pods_per_node,
            weftd: weftd.unwrap_or_else(|| weft::sibling("weftd")),
            cni: cni.unwrap_or_else(|| weft::sibling("weft-cni")),
            network,
            keep,
            output: out.output,
        }),
        Command::Soak(args) => soak::run(&args),
        Command::Connectivity(cmd) => return finish(connectivity::run(cmd)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

use weft::output::finish;
