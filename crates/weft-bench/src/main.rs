//! weft-bench: benchmarks of weft on the namespaced testbed.
//!
//! `weft-bench <scenario>` builds its own testbed(s), runs weftd / weft-cni on them and prints
//! Markdown tables. Every figure stands beside a floor measured in the same run and their
//! ratio; goals are printed, never asserted. The command fails only when a measurement
//! itself broke. Everything runs inside namespaces the testbed creates; every run is bounded
//! in count and time. `smoke` (or `--quick`) runs each scenario at tiny sizes.

mod cluster;
mod etcd;
mod etcdmetrics;
mod nlwatch;
mod ns;
mod peers;
mod procfs;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::cluster::Bins;
use crate::peers::Backend;
use crate::report::Table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Convergence,
    Bulk,
    Footprint,
    Startup,
    EtcdLoad,
    Dataplane,
    Cni,
    /// Every scenario above, in that order.
    All,
    /// Every scenario at tiny sizes (same as `all --quick`), for CI.
    Smoke,
}

/// Which backends `bulk` and `convergence` measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backends {
    /// flannel's VXLAN backend (flannel.1: neighbour, FDB entry and route per peer).
    Vxlan,
    /// flannel's host-gw backend (a route per peer via its PublicIP on eth0).
    HostGw,
    /// VXLAN, then host-gw, each its own table.
    Both,
}

impl Backends {
    fn list(self) -> Vec<Backend> {
        match self {
            Backends::Vxlan => vec![Backend::Vxlan],
            Backends::HostGw => vec![Backend::HostGw],
            Backends::Both => vec![Backend::Vxlan, Backend::HostGw],
        }
    }
}

/// Benchmarks of weft on the namespaced testbed (root only).
#[derive(Debug, Parser)]
#[command(name = "weft-bench", about, long_about = None)]
struct Cli {
    scenario: Scenario,
    /// Tiny sizes for every scenario (replaces the size flags): a check that measuring works.
    #[arg(long)]
    quick: bool,
    /// weftd binary (default: beside this program).
    #[arg(long)]
    weftd: Option<PathBuf>,
    /// weft-cni binary (default: beside this program).
    #[arg(long)]
    weft_cni: Option<PathBuf>,
    /// Extra environment for every weftd, KEY=VALUE (repeatable), e.g. MALLOC_ARENA_MAX=1.
    #[arg(long, value_parser = parse_env)]
    weftd_env: Vec<(String, String)>,
    /// bulk, convergence: the backend(s) weftd runs with, each measured on its own bed with
    /// its own table (VXLAN first).
    #[arg(long, value_enum, default_value_t = Backends::Both)]
    backend: Backends,
    /// convergence: measured peers (each added, then deleted).
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// bulk: peer counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 5000])]
    bulk_sizes: Vec<usize>,
    /// footprint: peer counts.
    #[arg(long, value_delimiter = ',', default_values_t = [0, 1000, 5000])]
    footprint_sizes: Vec<usize>,
    /// footprint: length of the idle window at the largest size, in seconds.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// startup: single-node trials.
    #[arg(long, default_value_t = 10)]
    startup_trials: usize,
    /// startup: node counts started at once.
    #[arg(long, value_delimiter = ',', default_values_t = [20, 50])]
    startup_nodes: Vec<usize>,
    /// etcd-load: node counts (each runs weftd and the flannel replay, steady and renewing).
    #[arg(long, value_delimiter = ',', default_values_t = [3, 20])]
    etcd_load_nodes: Vec<usize>,
    /// etcd-load: length of the measured window, in seconds.
    #[arg(long, default_value_t = 60)]
    etcd_load_secs: u64,
    /// etcd-load: the short lease TTL (seconds) of the renewing beds; weftd renews at half of it.
    #[arg(long, default_value_t = 20)]
    etcd_load_ttl: i64,
    /// dataplane: iperf3 seconds per path and stream count (split over --iperf-reps runs).
    #[arg(long, default_value_t = 10)]
    iperf_secs: u64,
    /// dataplane: runs per path, alternated between paths (each lasts iperf-secs / reps).
    #[arg(long, default_value_t = 2)]
    iperf_reps: usize,
    /// dataplane: underlay MTUs.
    #[arg(long, value_delimiter = ',', default_values_t = [9001, 1500])]
    mtus: Vec<u32>,
    /// dataplane: parallel TCP streams per run.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    streams: Vec<usize>,
    /// dataplane: pings per path.
    #[arg(long, default_value_t = 100)]
    ping_count: u32,
    /// dataplane: TCP_RR transactions per path.
    #[arg(long, default_value_t = 2000)]
    rr_count: usize,
    /// dataplane: skip the ethtool tunings.
    #[arg(long)]
    no_tuning: bool,
    /// cni: pods per chain.
    #[arg(long, default_value_t = 200)]
    cni_pods: usize,
}

impl Cli {
    fn quick_sizes(&mut self) {
        self.samples = 20;
        self.bulk_sizes = vec![50];
        self.footprint_sizes = vec![0, 50];
        self.idle_secs = 3;
        self.startup_trials = 2;
        self.startup_nodes = vec![3];
        self.etcd_load_nodes = vec![3];
        self.etcd_load_secs = 6;
        self.etcd_load_ttl = 6;
        self.iperf_secs = 1;
        self.iperf_reps = 1;
        self.mtus = vec![1500];
        self.streams = vec![1];
        self.ping_count = 20;
        self.rr_count = 200;
        self.no_tuning = true;
        self.cni_pods = 5;
    }
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    format!("nproc {nproc}, kernel {kernel}, CPU {cpu}")
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures: other work on a shared machine shows here.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn bin_beside(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The scenario's measurements, each its table(s) or why it broke (bulk and convergence: one
/// per backend, so a broken host-gw run keeps the VXLAN table, and the other way round).
fn run_one(s: Scenario, cli: &Cli, bins: &Bins) -> Vec<Result<Vec<Table>>> {
    let one = |t: Result<Table>| vec![t.map(|t| vec![t])];
    let per_backend = |f: &dyn Fn(Backend) -> Result<Table>| {
        cli.backend
            .list()
            .into_iter()
            .map(|b| f(b).map(|t| vec![t]))
            .collect()
    };
    match s {
        Scenario::Convergence => {
            per_backend(&|b| scenarios::convergence::run(bins, cli.samples, b))
        }
        Scenario::Bulk => per_backend(&|b| scenarios::bulk::run(bins, &cli.bulk_sizes, b)),
        Scenario::Footprint => one(scenarios::footprint::run(
            bins,
            &cli.footprint_sizes,
            cli.idle_secs,
        )),
        Scenario::Startup => one(scenarios::startup::run(
            bins,
            cli.startup_trials,
            &cli.startup_nodes,
        )),
        Scenario::EtcdLoad => one(scenarios::etcd_load::run(
            bins,
            &scenarios::etcd_load::Opts {
                nodes: cli.etcd_load_nodes.clone(),
                secs: cli.etcd_load_secs,
                ttl: cli.etcd_load_ttl,
            },
        )),
        Scenario::Dataplane => vec![scenarios::dataplane::run(
            bins,
            &scenarios::dataplane::Opts {
                mtus: cli.mtus.clone(),
                secs: cli.iperf_secs,
                streams: cli.streams.clone(),
                ping_count: cli.ping_count,
                rr_count: cli.rr_count,
                tuning: !cli.no_tuning,
                reps: cli.iperf_reps,
            },
        )],
        Scenario::Cni => one(scenarios::cni::run(bins, cli.cni_pods)),
        Scenario::All | Scenario::Smoke => unreachable!("expanded by main"),
    }
}

fn name(s: Scenario) -> &'static str {
    match s {
        Scenario::Convergence => "convergence",
        Scenario::Bulk => "bulk",
        Scenario::Footprint => "footprint",
        Scenario::Startup => "startup",
        Scenario::EtcdLoad => "etcd-load",
        Scenario::Dataplane => "dataplane",
        Scenario::Cni => "cni",
        Scenario::All => "all",
        Scenario::Smoke => "smoke",
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = weft_testbed::require_root() {
        eprintln!("weft-bench: {e}");
        return ExitCode::from(2);
    }
    if cli.quick || cli.scenario == Scenario::Smoke {
        cli.quick_sizes();
    }
    let bins = Bins {
        weftd: cli.weftd.clone().unwrap_or_else(|| bin_beside("weftd")),
        weft_cni: cli
            .weft_cni
            .clone()
            .unwrap_or_else(|| bin_beside("weft-cni")),
        weftd_env: cli.weftd_env.clone(),
    };
    let checked = cluster::require_file(&bins.weftd, "weftd", "--weftd")
        .and_then(|()| cluster::require_file(&bins.weft_cni, "weft-cni", "--weft-cni"))
        .context("looking for the binaries under test");
    if let Err(e) = checked {
        eprintln!("weft-bench: {e:#}");
        return ExitCode::from(2);
    }
    let list: Vec<Scenario> = match cli.scenario {
        Scenario::All | Scenario::Smoke => vec![
            Scenario::Convergence,
            Scenario::Bulk,
            Scenario::Footprint,
            Scenario::Startup,
            Scenario::EtcdLoad,
            Scenario::Dataplane,
            Scenario::Cni,
        ],
        s => vec![s],
    };
    let command: Vec<String> = std::env::args().collect();
    let mut broken = 0;
    for s in list {
        let started = Instant::now();
        eprintln!("weft-bench: running {} ...", name(s));
        println!("### {}\n", name(s));
        println!("Command: `{}`  ", command.join(" "));
        println!("Machine: {}  ", machine());
        println!("Load average at start: {}  ", loadavg());
        println!(
            "Date: {}\n",
            std::process::Command::new("date")
                .args(["-u", "+%Y-%m-%d %H:%M UTC"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        );
        for part in run_one(s, &cli, &bins) {
            match part {
                Ok(tables) => {
                    for t in tables {
                        println!("{}", t.render());
                    }
                }
                Err(e) => {
                    broken += 1;
                    println!("**MEASUREMENT FAILED**: {e:#}\n");
                    eprintln!("weft-bench: {} failed: {e:#}", name(s));
                }
            }
        }
        println!(
            "_{} took {:.0} s; load average at the end: {}._\n",
            name(s),
            started.elapsed().as_secs_f64(),
            loadavg()
        );
        eprintln!(
            "weft-bench: {} done in {:.1} s",
            name(s),
            started.elapsed().as_secs_f64()
        );
    }
    if broken > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
