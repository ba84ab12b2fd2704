//! weft: the operator CLI.

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "weft", version, about = "weft's operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole cluster on this machine (needs root): a namespaced VPC with a real etcd,
    /// weftd on every node and pods on every node, then an all-pairs connectivity matrix.
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Pods per node.
        #[arg(long, default_value_t = 2)]
        pods: usize,
        /// Path of the weftd binary (default: next to this binary).
        #[arg(long)]
        weftd: Option<PathBuf>,
        /// The overlay network.
        #[arg(long, default_value = "10.244.0.0/16")]
        network: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo {
            nodes,
            pods,
            weftd,
            network,
        } => demo::run(&demo::DemoOptions {
            nodes,
            pods_per_node: pods,
            weftd: weftd.unwrap_or_else(demo::default_weftd),
            network,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}
