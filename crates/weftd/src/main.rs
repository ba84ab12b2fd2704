//! weftd: the node daemon, a drop-in for flanneld (etcd v3 leases, VXLAN backend).

mod daemon;
mod files;
mod flags;
mod health;
mod lease_exec;
mod peer_sync;
mod rules_sync;
mod watch_exec;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = flags::normalize_args(std::env::args());
    let env = |var: &str| std::env::var(var).ok();
    let flags = match flags::Flags::try_parse_from(&args) {
        Ok(f) => f,
        Err(e) => {
            // clap prints help/usage itself and names the offending flag.
            let _ = e.print();
            if let Some(note) =
                flags::rejected_flag(&e).and_then(|long| flags::env_source_note(&long, &args, env))
            {
                eprintln!("weftd: {note}");
            }
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if flags.version {
        eprintln!("weftd {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let level = match flags.verbosity {
        0 => "info",
        1 | 2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs collected from a file or a pod stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let validated = match flags.validate() {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("{e}");
            if let Some(note) = flags::env_source_note(e.flag(), &args, env) {
                tracing::error!("{note}");
            }
            return ExitCode::from(2);
        }
    };
    // One thread runs every task: weftd waits on etcd, netlink and timers and computes
    // little, and a single thread keeps one malloc arena (about 1 MiB less RSS than two
    // workers at 5,000 peers).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(flags, validated)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
