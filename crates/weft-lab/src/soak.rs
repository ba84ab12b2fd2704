//! `weft-lab soak`: weftd's reliability scenarios (restarts, etcd outages, kernel drift, nodes
//! joining and leaving) in a loop for as long as asked, on a testbed cluster built like
//! `weft-lab demo`'s, under constant pod traffic, with a report of what broke and how fast weftd
//! recovered. The integration tests run the same code for 20 seconds; long soaks run it for
//! hours outside CI.

mod figures;
mod kernel;
mod report;
mod traffic;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use rand::Rng;
use tracing::{info, warn};
use weft_core::peer::Peer;
use weft_testbed::Signal;

use crate::cluster::{self, Cluster, ClusterSpec, Progress, SUBNETS_PREFIX};
use figures::{LossTag, Summary, parse_duration, show_duration};
use kernel::NodeKernel;
use report::{KernelReport, Report, Rss, Timings};
use traffic::{Flow, PingPair};
use watch::{FlapCounter, Watcher};
use weft::cli::{OutputArgs, OutputFormat};

/// The lease TTL of a churn node that leaves by dying (its lease must expire).
const CHURN_TTL: Duration = Duration::from_secs(5);
/// A peer must be programmed or removed within this (a repair) or the soak fails.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(5);
/// How long to wait for anything before calling it a problem.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// First port of the TCP flows (one per flow, inside the pods).
const FLOW_PORT: u16 = 7000;

/// `weft-lab soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Number of nodes that stay for the whole soak (churn adds one more that comes and goes).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub nodes: usize,
    /// Pods per node.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub pods_per_node: usize,
    /// How long to run the scenarios, e.g. 40s, 10m, 2h. Every chosen scenario runs at least
    /// once; the last one started finishes.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Scenarios to cycle through (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<ScenarioArg>,
    /// How long etcd stays down in each etcd-outage iteration.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub outage: Duration,
    /// Path of the weftd binary (default: next to this binary).
    #[arg(long, value_name = "PATH")]
    pub weftd: Option<PathBuf>,
    /// Path of the weft-cni binary (default: next to this binary).
    #[arg(long, value_name = "PATH")]
    pub cni: Option<PathBuf>,
    // The report's format (progress stays on stderr); `--json` below is its old spelling.
    #[command(flatten)]
    pub out: OutputArgs,
    /// Deprecated: the old spelling of `-o json`, kept so scripts do not break.
    #[arg(long, hide = true)]
    pub json: bool,
    /// Copy weftd's and etcd's logs into this directory at the end (without it they are kept
    /// only when the soak fails, in a directory the report names).
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
}

/// A scenario on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioArg {
    /// SIGKILL then SIGTERM of weftd on one random node, then on every node at once.
    Restart,
    /// etcd stopped for --outage, then started again.
    EtcdOutage,
    /// A peer route deleted, neighbours and FDB flushed, flannel.1 deleted,
    /// FLANNEL-POSTRTG flushed, on a random node.
    Drift,
    /// A new node's weftd joins and leaves (lease deleted, or lease expired).
    Churn,
    /// All of the above.
    All,
}

/// A scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Restart,
    EtcdOutage,
    Drift,
    Churn,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::Restart,
        Scenario::EtcdOutage,
        Scenario::Drift,
        Scenario::Churn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Restart => "restart",
            Scenario::EtcdOutage => "etcd-outage",
            Scenario::Drift => "drift",
            Scenario::Churn => "churn",
        }
    }
}

/// The chosen scenarios in the order given, each once; `all` is every scenario.
pub fn scenarios(args: &[ScenarioArg]) -> Vec<Scenario> {
    let mut out: Vec<Scenario> = Vec::new();
    for a in args {
        let add: &[Scenario] = match a {
            ScenarioArg::Restart => &[Scenario::Restart],
            ScenarioArg::EtcdOutage => &[Scenario::EtcdOutage],
            ScenarioArg::Drift => &[Scenario::Drift],
            ScenarioArg::Churn => &[Scenario::Churn],
            ScenarioArg::All => &Scenario::ALL,
        };
        for s in add {
            if !out.contains(s) {
                out.push(*s);
            }
        }
    }
    out
}

/// The validated options.
#[derive(Debug, Clone)]
struct Plan {
    nodes: usize,
    pods_per_node: usize,
    duration: Duration,
    scenarios: Vec<Scenario>,
    outage: Duration,
    weftd: PathBuf,
    cni: PathBuf,
    json: bool,
    logs: Option<PathBuf>,
}

impl Plan {
    fn from_args(a: &SoakArgs) -> Result<Plan> {
        cluster::check_size(a.nodes, a.pods_per_node, "--pods-per-node")?;
        if a.duration < Duration::from_secs(1) || a.duration > Duration::from_secs(7 * 86400) {
            bail!(
                "--duration {} is out of range: use 1s to 7 days (e.g. 40s, 10m, 2h)",
                show_duration(a.duration)
            );
        }
        if a.outage < Duration::from_secs(1) || a.outage > Duration::from_secs(3600) {
            bail!(
                "--outage {} is out of range: use 1s to 1h",
                show_duration(a.outage)
            );
        }
        let scenarios = scenarios(&a.scenario);
        if scenarios.is_empty() {
            bail!("--scenario is empty: name restart, etcd-outage, drift, churn or all");
        }
        let weftd = a.weftd.clone().unwrap_or_else(|| weft::sibling("weftd"));
        let cni = a.cni.clone().unwrap_or_else(|| weft::sibling("weft-cni"));
        cluster::check_binaries(&weftd, &cni)?;
        Ok(Plan {
            nodes: a.nodes,
            pods_per_node: a.pods_per_node,
            duration: a.duration,
            scenarios,
            outage: a.outage,
            weftd,
            cni,
            json: a.json || a.out.output == OutputFormat::Json,
            logs: a.logs.clone(),
        })
    }
}

pub fn run(args: &SoakArgs) -> Result<()> {
    let plan = Plan::from_args(args)?;
    let json = plan.json;
    weft_testbed::require_root().context("weft-lab soak builds network namespaces")?;
    let interrupt = install_interrupt()?;
    let progress = Progress::start();
    let mut soak = Soak::start(plan, progress, interrupt)?;
    if let Err(e) = soak.run_scenarios() {
        soak.problem(format!("the soak stopped early: {e:#}"));
    }
    let report = soak.finish();
    if report.passed {
        progress.step("soak passed");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if !report.passed {
        let n = report.failures.len();
        let mut shown: Vec<String> = report.failures.iter().take(3).cloned().collect();
        if n > 3 {
            shown.push(format!("and {} more", n - 3));
        }
        bail!("soak failed: {}", shown.join("; "));
    }
    Ok(())
}

/// Sets a flag on SIGINT, SIGTERM or SIGHUP, so the soak stops, tears the testbed down and
/// reports instead of dying with namespaces and processes left behind.
fn install_interrupt() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler's runtime")?;
    let (mut int, mut term, mut hup) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })
        .context("installing the SIGINT/SIGTERM handlers")?;
    let f = flag.clone();
    std::thread::Builder::new()
        .name("soak-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    let name = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                        _ = hup.recv() => "SIGHUP",
                    };
                    if f.swap(true, Ordering::SeqCst) {
                        eprintln!("weft-lab soak: {name} again: still tearing the testbed down");
                    } else {
                        eprintln!("weft-lab soak: {name}: stopping, tearing the testbed down");
                    }
                }
            })
        })
        .context("starting the signal handler thread")?;
    Ok(flag)
}

/// How a wait ended.
enum Waited<T> {
    Done(T),
    TimedOut,
    Interrupted,
}

/// Polls `f` every `interval` until it returns Some, `timeout` passes or the soak is stopped.
fn poll<T>(
    stop: &AtomicBool,
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Waited<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Waited::Done(v);
        }
        if stop.load(Ordering::SeqCst) {
            return Waited::Interrupted;
        }
        if t0.elapsed() >= timeout {
            return Waited::TimedOut;
        }
        std::thread::sleep(interval);
    }
}

/// The timings collected while running.
#[derive(Debug, Default)]
struct Figures {
    iterations: BTreeMap<Scenario, u32>,
    restart_ready: Vec<Duration>,
    reconnect: Vec<Duration>,
    repairs: BTreeMap<&'static str, Vec<Duration>>,
    churn_join: Vec<Duration>,
    churn_leave_deleted: Vec<Duration>,
    churn_leave_expired: Vec<Duration>,
    not_ready_during_outages: u64,
    lease_changes: Vec<String>,
    problems: Vec<String>,
    /// Samples of each stable node's weftd RSS (KiB).
    rss: Vec<Vec<u64>>,
}

/// What a stable node looked like when the soak started (and must still look like).
#[derive(Debug, Clone)]
struct Baseline {
    peer: Peer,
    lease_value: String,
    masq_rules: Vec<String>,
}

/// A drift damage window: the soak itself was breaking `node`'s data plane.
#[derive(Debug, Clone, Copy)]
struct Damage {
    node: usize,
    from: Instant,
    to: Option<Instant>,
}

struct Soak {
    plan: Plan,
    progress: Progress,
    stop: Arc<AtomicBool>,
    /// When the scenarios started.
    started: Instant,
    /// Phases with their start, for labelling moments in the report.
    timeline: Vec<(Instant, String)>,
    names: Vec<String>,
    /// The node that comes and goes (churn), after the stable ones.
    churn_node: Option<usize>,
    base: Vec<Baseline>,
    pings: Vec<PingPair>,
    flows: Vec<Flow>,
    watchers: Vec<Watcher>,
    flaps: FlapCounter,
    damage: Vec<Damage>,
    fig: Figures,
    rng: rand::rngs::ThreadRng,
    /// Declared last: dropped (torn down) after the traffic and watchers stop.
    c: Cluster,
}

impl Soak {
    /// Builds the cluster, records the baseline and starts the traffic and the watchers.
    fn start(plan: Plan, progress: Progress, stop: Arc<AtomicBool>) -> Result<Soak> {
        let spec = ClusterSpec {
            label: "soak",
            nodes: plan.nodes,
            pods_per_node: plan.pods_per_node,
            weftd: plan.weftd.clone(),
            cni: plan.cni.clone(),
            network: "10.244.0.0/16".into(),
            weftd_env: vec![("RUST_LOG".into(), "info".into())],
        };
        let mut c = Cluster::build(spec, progress, |_| Ok(()))?;
        let n = plan.nodes;
        let churn_node = if plan.scenarios.contains(&Scenario::Churn) {
            let i = c.tb.add_node().context("adding the churn node")?;
            progress.step(&format!(
                "added node {} for churn (weftd comes and goes there)",
                c.tb.node(i).name
            ));
            Some(i)
        } else {
            None
        };
        let names: Vec<String> = c.tb.nodes().iter().map(|n| n.name.clone()).collect();

        // The stable nodes' identities, once each has programmed all the others.
        let mut peers = Vec::new();
        for (i, name) in names.iter().enumerate().take(n) {
            let k = kernel::read(&c.tb.node(i).ns)?;
            let mac = k
                .mac
                .with_context(|| format!("{name} has no flannel.1 after weftd became ready"))?;
            let subnet = c.envs[i]
                .subnet
                .with_context(|| format!("{name}'s subnet.env has no FLANNEL_SUBNET"))?;
            peers.push(Peer {
                subnet,
                public_ip: c.tb.node(i).ip,
                vtep_mac: mac,
                direct: false,
            });
        }
        for (i, name) in names.iter().enumerate().take(n) {
            let others: Vec<Peer> = others(&peers, i);
            let ns = c.tb.node(i).ns.clone();
            let ok = weft_testbed::wait_until(WAIT, POLL, || {
                kernel::read(&ns)
                    .ok()
                    .filter(|k| k.programs_all(&others))
                    .map(|_| ())
            });
            if ok.is_none() {
                bail!(
                    "{name} did not program its peers within {WAIT:?}; its log:\n{}",
                    c.log_tail(i)
                );
            }
        }
        let leases = lease_values(&c)?;
        let mut base = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            let key = lease_key(p);
            let lease_value = leases
                .get(&key)
                .cloned()
                .with_context(|| format!("{}'s lease {key} is not in etcd", names[i]))?;
            base.push(Baseline {
                peer: *p,
                lease_value,
                masq_rules: masq_rules(&c, i)?,
            });
        }

        let mut watchers = Vec::new();
        for i in 0..n {
            watchers.push(Watcher::start(&c.tb.node(i).ns)?);
        }
        let first_pod = |i: usize| c.pods.iter().find(|p| p.node == i).cloned();
        let mut flows = Vec::new();
        for i in 0..n {
            let (Some(a), Some(b)) = (first_pod(i), first_pod((i + 1) % n)) else {
                bail!("node {i} or its neighbour has no pod");
            };
            flows.push(Flow::start(&a, &b, FLOW_PORT + i as u16)?);
        }
        // every ordered pair of nodes while that stays small, else a ring both ways
        let mut pairs = Vec::new();
        if n <= 4 {
            for a in 0..n {
                for b in 0..n {
                    if a != b {
                        pairs.push((a, b));
                    }
                }
            }
        } else {
            for a in 0..n {
                pairs.push((a, (a + 1) % n));
                pairs.push(((a + 1) % n, a));
            }
        }
        let mut pings = Vec::new();
        for (a, b) in pairs {
            let (Some(pa), Some(pb)) = (first_pod(a), first_pod(b)) else {
                bail!("node {a} or {b} has no pod");
            };
            pings.push(PingPair::start(&mut c.tb, &pa, &pb)?);
        }
        std::thread::sleep(Duration::from_secs(1));
        for p in &mut pings {
            p.drain(LossTag::Unexpected);
            if p.highest() == 0 || p.unexpected_so_far() > 0 {
                bail!(
                    "pods cannot reach each other before the soak even started: ping {} → {} got {} replies, lost {}",
                    p.from_ip,
                    p.to_ip,
                    p.highest(),
                    p.unexpected_so_far()
                );
            }
        }
        let rss = (0..n)
            .map(|i| c.weftd_rss_kib(i).into_iter().collect())
            .collect();
        progress.step(&format!(
            "soak running for {}: {} ({} pings every 20 ms, {} TCP flows, a kernel watcher per node)",
            show_duration(plan.duration),
            plan.scenarios
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", "),
            pings.len(),
            flows.len()
        ));
        let now = Instant::now();
        Ok(Soak {
            plan,
            progress,
            stop,
            started: now,
            timeline: vec![(now, "start".into())],
            names,
            churn_node,
            base,
            pings,
            flows,
            watchers,
            flaps: FlapCounter::default(),
            damage: Vec::new(),
            fig: Figures {
                rss,
                ..Figures::default()
            },
            rng: rand::rng(),
            c,
        })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn problem(&mut self, what: String) {
        let label = self.label_at(Instant::now());
        warn!("{what}");
        self.progress.step(&format!("PROBLEM: {what}"));
        self.fig.problems.push(format!("{label}: {what}"));
    }

    fn phase(&mut self, label: String) {
        info!(phase = %label, "soak phase");
        self.timeline.push((Instant::now(), label));
    }

    /// "42.1s (drift #3)": a moment of the soak for the report.
    fn label_at(&self, at: Instant) -> String {
        let phase = self
            .timeline
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map(|(_, l)| l.as_str())
            .unwrap_or("setup");
        if at < self.started {
            return "setup".into();
        }
        format!(
            "{:.1}s ({phase})",
            at.duration_since(self.started).as_secs_f64()
        )
    }

    fn stable(&self) -> usize {
        self.plan.nodes
    }

    fn run_scenarios(&mut self) -> Result<()> {
        let deadline = self.started + self.plan.duration;
        let list = self.plan.scenarios.clone();
        let mut cycle = 0u32;
        'cycles: loop {
            for &s in &list {
                if self.stopped() || (cycle > 0 && Instant::now() >= deadline) {
                    break 'cycles;
                }
                let it = self.fig.iterations.get(&s).copied().unwrap_or(0) + 1;
                self.phase(format!("{} #{it}", s.name()));
                match s {
                    Scenario::Restart => self.restart(it)?,
                    Scenario::EtcdOutage => self.etcd_outage(it)?,
                    Scenario::Drift => self.drift(it)?,
                    Scenario::Churn => self.churn(it)?,
                }
                if self.stopped() {
                    break 'cycles;
                }
                *self.fig.iterations.entry(s).or_default() += 1;
                self.check(&format!("{} #{it}", s.name()))?;
            }
            cycle += 1;
        }
        self.phase("finishing".into());
        Ok(())
    }

    // ---- scenarios ----

    /// SIGKILL, then SIGTERM, of weftd on one random node, then on every node at once; each
    /// time started again and waited for until ready.
    fn restart(&mut self, it: u32) -> Result<()> {
        let n = self.stable();
        let one = self.rng.random_range(0..n);
        self.progress.step(&format!(
            "restart #{it}: weftd on {} (SIGKILL, then SIGTERM), then on every node",
            self.names[one]
        ));
        let all: Vec<usize> = (0..n).collect();
        for (nodes, sig) in [
            (vec![one], Signal::SIGKILL),
            (vec![one], Signal::SIGTERM),
            (all.clone(), Signal::SIGKILL),
            (all, Signal::SIGTERM),
        ] {
            if self.stopped() {
                return Ok(());
            }
            self.restart_nodes(&nodes, sig)?;
        }
        Ok(())
    }

    fn restart_nodes(&mut self, nodes: &[usize], sig: Signal) -> Result<()> {
        for &i in nodes {
            self.sample_rss(i);
            if !self.c.stop_weftd(i, sig, Duration::from_secs(10))? {
                self.problem(format!(
                    "weftd on {} did not exit within 10 s of {sig}",
                    self.names[i]
                ));
            }
        }
        let mut since = Vec::new();
        for &i in nodes {
            since.push((i, Instant::now()));
            self.c.start_weftd(i, &[])?;
        }
        for (i, t) in self.wait_ready(&since)? {
            self.fig.restart_ready.push(t);
            info!(node = %self.names[i], ms = t.as_millis() as u64, "weftd ready after {sig}");
        }
        Ok(())
    }

    /// Waits until every node in `since` answers /readyz 200; returns the time each took
    /// from its instant. Nodes that never do are problems.
    fn wait_ready(&mut self, since: &[(usize, Instant)]) -> Result<Vec<(usize, Duration)>> {
        let mut done: Vec<(usize, Duration)> = Vec::new();
        let t0 = Instant::now();
        while done.len() < since.len() {
            for &(i, t) in since {
                if !done.iter().any(|(d, _)| *d == i) && self.c.readyz(i) == Some(200) {
                    done.push((i, t.elapsed()));
                }
            }
            if self.stopped() {
                return Ok(done);
            }
            if t0.elapsed() > WAIT {
                for &(i, _) in since {
                    if !done.iter().any(|(d, _)| *d == i) {
                        let tail = self.c.log_tail(i);
                        self.problem(format!(
                            "weftd on {} not ready {WAIT:?} after (re)start; log tail:\n{tail}",
                            self.names[i]
                        ));
                    }
                }
                return Ok(done);
            }
            std::thread::sleep(POLL);
        }
        Ok(done)
    }

    /// etcd down for --outage, then up again; the time until every weftd is ready again.
    fn etcd_outage(&mut self, it: u32) -> Result<()> {
        let n = self.stable();
        self.progress.step(&format!(
            "etcd-outage #{it}: etcd stopped for {}",
            show_duration(self.plan.outage)
        ));
        self.c.tb.stop_etcd().context("stopping etcd")?;
        let down = Instant::now();
        let mut noticed = vec![false; n];
        let mut last_probe = down;
        while down.elapsed() < self.plan.outage {
            if self.stopped() {
                return Ok(());
            }
            if last_probe.elapsed() >= Duration::from_millis(500) {
                for (i, seen) in noticed.iter_mut().enumerate() {
                    if !*seen && self.c.readyz(i) != Some(200) {
                        *seen = true;
                    }
                }
                last_probe = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.fig.not_ready_during_outages += noticed.iter().filter(|s| **s).count() as u64;
        let t = Instant::now();
        self.c.tb.start_etcd().context("starting etcd again")?;
        let back = Instant::now();
        let since: Vec<(usize, Instant)> = (0..n).map(|i| (i, back)).collect();
        let ready = self.wait_ready(&since)?;
        let max = ready.iter().map(|(_, d)| *d).max().unwrap_or_default();
        self.fig.reconnect.extend(ready.iter().map(|(_, d)| *d));
        self.progress.step(&format!(
            "etcd-outage #{it}: etcd healthy {} after starting it; every weftd ready {} later ({} of {n} had noticed the outage)",
            show_duration(back - t),
            show_duration(max),
            noticed.iter().filter(|s| **s).count()
        ));
        Ok(())
    }

    /// On one random node: a peer route deleted, neighbours and FDB flushed, flannel.1
    /// deleted, FLANNEL-POSTRTG flushed; each time the time until weftd has repaired it.
    fn drift(&mut self, it: u32) -> Result<()> {
        let n = self.stable();
        let k = self.rng.random_range(0..n);
        let j = (k + self.rng.random_range(1..n)) % n;
        let ns = self.c.tb.node(k).ns.clone();
        let route = self.base[j].peer.subnet.to_string();
        self.progress.step(&format!(
            "drift #{it}: on {}: route to {}'s {route}, neighbours + FDB, flannel.1, FLANNEL-POSTRTG",
            self.names[k], self.names[j]
        ));
        // losses found from here on that involve node k are the soak's own doing
        for p in &mut self.pings {
            p.drain(LossTag::Unexpected);
        }
        self.damage.push(Damage {
            node: k,
            from: Instant::now(),
            to: None,
        });
        let steps: [(&'static str, Vec<&str>); 4] = [
            (
                "route",
                vec!["ip", "route", "del", route.as_str(), "dev", kernel::DEVICE],
            ),
            (
                "neigh-fdb",
                vec![
                    "sh",
                    "-c",
                    "ip neigh flush dev flannel.1 nud permanent && bridge fdb flush dev flannel.1",
                ],
            ),
            ("device", vec!["ip", "link", "del", kernel::DEVICE]),
            (
                "iptables",
                vec!["iptables", "-w", "-t", "nat", "-F", "FLANNEL-POSTRTG"],
            ),
        ];
        let mut shown = Vec::new();
        for (kind, cmd) in steps {
            if self.stopped() {
                break;
            }
            self.phase(format!("drift #{it}: {kind} on {}", self.names[k]));
            let t0 = Instant::now();
            if let Err(e) = self.c.tb.exec(&ns, &cmd) {
                self.problem(format!("drift {kind}: {e}"));
                continue;
            }
            let waited = if kind == "iptables" {
                let want = self.base[k].masq_rules.clone();
                let c = &self.c;
                poll(&self.stop, WAIT, Duration::from_millis(50), || {
                    masq_rules(c, k).ok().filter(|r| *r == want).map(|_| ())
                })
            } else {
                let want = others(&self.peers(), k);
                let mac = self.base[k].peer.vtep_mac;
                poll(&self.stop, WAIT, POLL, || {
                    kernel::read(&ns)
                        .ok()
                        .filter(|s| s.up && s.programs_all(&want) && s.mac == Some(mac))
                        .map(|_| ())
                })
            };
            match waited {
                Waited::Done(_) => {
                    let d = t0.elapsed();
                    shown.push(format!("{kind} {}", show_duration(d)));
                    self.fig.repairs.entry(kind).or_default().push(d);
                }
                Waited::TimedOut => self.problem(format!(
                    "drift {kind} on {}: not repaired within {WAIT:?}",
                    self.names[k]
                )),
                Waited::Interrupted => break,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        // let traffic through the repaired node resume before closing the window
        std::thread::sleep(Duration::from_millis(500));
        for p in &mut self.pings {
            let tag = if p.from == k || p.to == k {
                LossTag::Damage
            } else {
                LossTag::Unexpected
            };
            p.drain(tag);
        }
        if let Some(d) = self.damage.last_mut() {
            d.to = Some(Instant::now());
        }
        self.progress.step(&format!(
            "drift #{it}: repaired: {}",
            if shown.is_empty() {
                "-".into()
            } else {
                shown.join(", ")
            }
        ));
        Ok(())
    }

    /// A new node's weftd joins (every stable node must program it, and a pod must reach
    /// it), then leaves: on odd iterations its lease is deleted after SIGTERM, on even ones it
    /// is SIGKILLed and its 5 s lease expires. Every stable node must remove it.
    fn churn(&mut self, it: u32) -> Result<()> {
        let Some(cn) = self.churn_node else {
            return Ok(());
        };
        let expire = it.is_multiple_of(2);
        let name = self.names[cn].clone();
        let ns = self.c.tb.node(cn).ns.clone();
        self.progress.step(&format!(
            "churn #{it}: a new weftd on {name} joins, then leaves ({})",
            if expire {
                "killed, lease expires"
            } else {
                "stopped, lease deleted"
            }
        ));
        self.fresh_churn_node(cn)?;
        let extra = if expire {
            vec![format!("--subnet-lease-ttl={}", CHURN_TTL.as_secs())]
        } else {
            Vec::new()
        };
        let t0 = Instant::now();
        self.c.start_weftd(cn, &extra)?;
        let env = match poll(&self.stop, WAIT, POLL, || self.c.subnet_env(cn)) {
            Waited::Done(env) => env,
            Waited::Interrupted => return Ok(()),
            Waited::TimedOut => {
                let tail = self.c.log_tail(cn);
                self.problem(format!(
                    "churn: weftd on {name} wrote no subnet.env within {WAIT:?}; log tail:\n{tail}"
                ));
                self.c
                    .stop_weftd(cn, Signal::SIGKILL, Duration::from_secs(5))?;
                return Ok(());
            }
        };
        let (Some(subnet), Ok(k)) = (env.subnet, kernel::read(&ns)) else {
            self.problem(format!(
                "churn: {name} is ready without a subnet or a readable flannel.1"
            ));
            return Ok(());
        };
        let Some(mac) = k.mac else {
            self.problem(format!("churn: {name} is ready without flannel.1"));
            return Ok(());
        };
        let peer = Peer {
            subnet,
            public_ip: self.c.tb.node(cn).ip,
            vtep_mac: mac,
            direct: false,
        };
        let stable_ns: Vec<String> = (0..self.stable())
            .map(|i| self.c.tb.node(i).ns.clone())
            .collect();
        match poll(&self.stop, WAIT, POLL, || {
            everywhere(&stable_ns, &peer, true)
        }) {
            Waited::Done(_) => {
                let d = t0.elapsed();
                self.fig.churn_join.push(d);
                if d > PROPAGATION_LIMIT {
                    self.problem(format!(
                        "churn: {name} ({subnet}) took {} to be programmed everywhere",
                        show_duration(d)
                    ));
                }
            }
            Waited::TimedOut => self.problem(format!(
                "churn: {name} ({subnet}) not programmed on every node within {WAIT:?}"
            )),
            Waited::Interrupted => return Ok(()),
        }
        // the new node's own data plane: a pod on a stable node reaches its flannel.1
        if let Some(pod) = self.c.pods.first().cloned() {
            let gw = subnet.network();
            match self.c.tb.ping(&pod.ns, gw, 3, Duration::from_secs(3)) {
                Ok(st) if st.received == st.transmitted => {}
                Ok(st) => self.problem(format!(
                    "churn: pod {} reached {name}'s flannel.1 ({gw}) with {} of {} pings",
                    pod.ip, st.received, st.transmitted
                )),
                Err(e) => self.problem(format!(
                    "churn: pod {} could not ping {name}'s flannel.1 ({gw}): {e}",
                    pod.ip
                )),
            }
        }
        if expire {
            self.c
                .stop_weftd(cn, Signal::SIGKILL, Duration::from_secs(10))?;
        } else {
            self.c
                .stop_weftd(cn, Signal::SIGTERM, Duration::from_secs(10))?;
            self.c
                .tb
                .etcdctl(&["del", &lease_key(&peer)])
                .context("deleting the churn node's lease")?;
        }
        let t_leave = Instant::now();
        let limit = if expire {
            CHURN_TTL + Duration::from_secs(3)
        } else {
            PROPAGATION_LIMIT
        };
        let join = self.fig.churn_join.last().copied().unwrap_or_default();
        match poll(&self.stop, WAIT, POLL, || {
            everywhere(&stable_ns, &peer, false)
        }) {
            Waited::Done(_) => {
                let d = t_leave.elapsed();
                if expire {
                    self.fig.churn_leave_expired.push(d);
                } else {
                    self.fig.churn_leave_deleted.push(d);
                }
                if d > limit {
                    self.problem(format!(
                        "churn: {name} ({subnet}) took {} to be removed everywhere (limit {})",
                        show_duration(d),
                        show_duration(limit)
                    ));
                }
                self.progress.step(&format!(
                    "churn #{it}: {name} ({subnet}) programmed everywhere {} after start, removed {} after leaving",
                    show_duration(join),
                    show_duration(d)
                ));
            }
            Waited::TimedOut => self.problem(format!(
                "churn: {name} ({subnet}) still programmed somewhere {WAIT:?} after leaving"
            )),
            Waited::Interrupted => return Ok(()),
        }
        Ok(())
    }

    /// Makes the churn node a machine weftd has never seen: no device, no state, no
    /// subnet.env (so it gets a new VTEP MAC and a new lease).
    fn fresh_churn_node(&mut self, cn: usize) -> Result<()> {
        let ns = self.c.tb.node(cn).ns.clone();
        let _ = self
            .c
            .tb
            .exec_output(&ns, &["ip", "link", "del", kernel::DEVICE]);
        for p in [self.c.state_dir(cn), self.c.tb.subnet_file(cn)] {
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(e) = r
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(e).with_context(|| format!("removing {}", p.display()));
            }
        }
        Ok(())
    }

    // ---- checks after every scenario ----

    fn peers(&self) -> Vec<Peer> {
        self.base.iter().map(|b| b.peer).collect()
    }

    /// After a scenario: weftd still running everywhere, every node programming every other,
    /// leases, subnets and MACs unchanged, and the traffic and watchers read.
    fn check(&mut self, after: &str) -> Result<()> {
        let n = self.stable();
        for i in 0..n {
            if !self.c.weftd_running(i) {
                let tail = self.c.log_tail(i);
                self.problem(format!(
                    "weftd on {} exited (after {after}); log tail:\n{tail}",
                    self.names[i]
                ));
                self.c.start_weftd(i, &[])?;
                let t = Instant::now();
                self.wait_ready(&[(i, t)])?;
            }
        }
        let peers = self.peers();
        for i in 0..n {
            let want = others(&peers, i);
            let ns = self.c.tb.node(i).ns.clone();
            let waited = poll(&self.stop, PROPAGATION_LIMIT, POLL, || {
                kernel::read(&ns).ok().filter(|k| k.programs_all(&want))
            });
            if let Waited::TimedOut = waited {
                self.problem(format!(
                    "{} is missing peer entries after {after}",
                    self.names[i]
                ));
            }
        }
        self.read_watchers();
        let mut lost = Vec::new();
        for p in &mut self.pings {
            let before = p.unexpected_so_far();
            p.drain(LossTag::Unexpected);
            let now = p.unexpected_so_far();
            if now > before {
                lost.push(format!("{} → {}: {}", p.from_ip, p.to_ip, now - before));
            }
        }
        if !lost.is_empty() {
            self.problem_note(format!("pings lost during {after}: {}", lost.join(", ")));
        }
        self.check_identities(after)?;
        for i in 0..n {
            self.sample_rss(i);
        }
        Ok(())
    }

    /// A progress line for something the report will count anyway (not a separate problem).
    fn problem_note(&self, what: String) {
        warn!("{what}");
        self.progress.step(&format!("WARNING: {what}"));
    }

    /// Subnets (subnet.env), VTEP MACs (kernel) and lease values (etcd) of the stable nodes
    /// against the baseline; each change is recorded once.
    fn check_identities(&mut self, after: &str) -> Result<()> {
        let leases = lease_values(&self.c)?;
        for i in 0..self.stable() {
            let b = self.base[i].clone();
            let name = self.names[i].clone();
            let mut changes = Vec::new();
            let subnet = self.c.subnet_env(i).and_then(|e| e.subnet);
            if subnet != Some(b.peer.subnet) {
                changes.push(format!(
                    "{name}: subnet.env says {} instead of {} (after {after})",
                    subnet
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "nothing".into()),
                    b.peer.subnet
                ));
            }
            let mac = kernel::read(&self.c.tb.node(i).ns).ok().and_then(|k| k.mac);
            if mac != Some(b.peer.vtep_mac) {
                changes.push(format!(
                    "{name}: VTEP MAC {} instead of {} (after {after})",
                    mac.map(|m| m.to_string())
                        .unwrap_or_else(|| "missing".into()),
                    b.peer.vtep_mac
                ));
            }
            let key = lease_key(&b.peer);
            let value = leases.get(&key);
            if value != Some(&b.lease_value) {
                changes.push(format!(
                    "{name}: lease {key} is {} instead of {} (after {after})",
                    value.map(String::as_str).unwrap_or("gone"),
                    b.lease_value
                ));
            }
            for ch in changes {
                // the same change seen after every later scenario is one change
                let stem = ch.split(" (after").next().unwrap_or(&ch).to_string();
                if !self.fig.lease_changes.iter().any(|c| c.starts_with(&stem)) {
                    self.problem_note(ch.clone());
                    self.fig.lease_changes.push(ch);
                }
            }
        }
        Ok(())
    }

    fn read_watchers(&mut self) {
        let peers = self.peers();
        for (node, w) in self.watchers.iter().enumerate() {
            let mine: Vec<(usize, Peer)> = peers
                .iter()
                .copied()
                .enumerate()
                .filter(|(j, _)| *j != node)
                .collect();
            for ev in w.drain() {
                let at = match ev {
                    weft_testbed::nlmonitor::Announcement::Change { at, .. } => at,
                    weft_testbed::nlmonitor::Announcement::Overrun => Instant::now(),
                };
                // a little slack after the window: the listener reads a moment late
                let caused = self.damage.iter().any(|d| {
                    d.node == node
                        && at >= d.from
                        && d.to.is_none_or(|to| at <= to + Duration::from_millis(200))
                });
                self.flaps.observe(node, &mine, &ev, caused);
            }
        }
    }

    fn sample_rss(&mut self, i: usize) {
        if let Some(k) = self.c.weftd_rss_kib(i)
            && let Some(v) = self.fig.rss.get_mut(i)
        {
            v.push(k);
        }
    }

    // ---- the end ----

    /// Stops the traffic and the watchers, saves the logs if asked (or if it failed), tears
    /// the testbed down and builds the report.
    fn finish(mut self) -> Report {
        self.phase("stopping".into());
        let ran = self.started.elapsed();
        let interrupted = self.stopped();
        let names = self.names.clone();
        let labels: Vec<(Instant, String)> = self.timeline.clone();
        let started = self.started;
        let label = |at: Instant| {
            let phase = labels
                .iter()
                .rev()
                .find(|(t, _)| *t <= at)
                .map(|(_, l)| l.as_str())
                .unwrap_or("setup");
            format!(
                "{:.1}s ({phase})",
                at.saturating_duration_since(started).as_secs_f64()
            )
        };
        let flows: Vec<_> = self
            .flows
            .iter_mut()
            .map(|f| f.stop(&names, label))
            .collect();
        let mut pings = Vec::new();
        for p in &mut self.pings {
            pings.push(p.stop(&mut self.c.tb, &names));
        }
        self.read_watchers();
        self.watchers.clear();
        for i in 0..self.stable() {
            self.sample_rss(i);
        }
        let kernel = KernelReport {
            flaps: self.flaps.flaps.len(),
            flap_details: self
                .flaps
                .flaps
                .iter()
                .take(50)
                .map(|f| {
                    format!(
                        "{}: {:?} entry of {} deleted at {} and re-added {:.1} ms later",
                        names[f.node],
                        f.kind,
                        names[f.peer],
                        label(f.deleted_at),
                        f.gap.as_secs_f64() * 1e3
                    )
                })
                .collect(),
            still_missing: self
                .flaps
                .still_missing()
                .map(|((node, peer, kind), at)| {
                    format!(
                        "{}: {kind:?} entry of {} deleted at {}",
                        names[node],
                        names[peer],
                        label(at)
                    )
                })
                .collect(),
            deletions_caused_by_soak: self.flaps.caused_by_soak,
            watcher_overruns: self.flaps.overruns,
        };
        let fig = &self.fig;
        let all_repairs: Vec<Duration> = fig.repairs.values().flatten().copied().collect();
        let repair = |k: &str| Summary::of(fig.repairs.get(k).map(Vec::as_slice).unwrap_or(&[]));
        let timings = Timings {
            restart_ready: Summary::of(&fig.restart_ready),
            etcd_reconnect: Summary::of(&fig.reconnect),
            repair: Summary::of(&all_repairs),
            repair_route: repair("route"),
            repair_neigh_fdb: repair("neigh-fdb"),
            repair_device: repair("device"),
            repair_iptables: repair("iptables"),
            churn_join: Summary::of(&fig.churn_join),
            churn_leave_deleted: Summary::of(&fig.churn_leave_deleted),
            churn_leave_expired: Summary::of(&fig.churn_leave_expired),
        };
        let rss_kib = fig
            .rss
            .iter()
            .enumerate()
            .map(|(i, v)| Rss {
                node: names[i].clone(),
                start: v.first().copied(),
                end: v.last().copied(),
                max: v.iter().max().copied(),
            })
            .collect();
        let iterations = self
            .plan
            .scenarios
            .iter()
            .map(|s| {
                (
                    s.name().to_string(),
                    fig.iterations.get(s).copied().unwrap_or(0),
                )
            })
            .collect();
        let mut report = Report {
            testbed: self.c.tb.id().to_string(),
            nodes: self.plan.nodes,
            pods_per_node: self.plan.pods_per_node,
            scenarios: self
                .plan
                .scenarios
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
            duration_s: self.plan.duration.as_secs_f64(),
            ran_s: (ran.as_secs_f64() * 10.0).round() / 10.0,
            outage_s: self.plan.outage.as_secs_f64(),
            interrupted,
            iterations,
            pings,
            tcp_flows: flows,
            kernel,
            lease_changes: fig.lease_changes.clone(),
            timings,
            not_ready_during_outages: fig.not_ready_during_outages,
            rss_kib,
            problems: fig.problems.clone(),
            logs: None,
            passed: false,
            failures: Vec::new(),
        };
        // (an interruption alone is no reason to keep logs)
        let failing = report.verdict().iter().any(|f| f != report::INTERRUPTED);
        let logs_dir = self.plan.logs.clone().or_else(|| {
            failing.then(|| std::env::temp_dir().join(format!("weft-soak-{}-logs", report.testbed)))
        });
        if let Some(dir) = logs_dir {
            match save_logs(&self.c, &dir) {
                Ok(()) => report.logs = Some(dir.display().to_string()),
                Err(e) => report.problems.push(format!("saving the logs: {e:#}")),
            }
        }
        let Soak { c, progress, .. } = self;
        match c.into_testbed().teardown() {
            Ok(()) => progress.step("torn down: namespaces, etcd and weftd removed"),
            Err(e) => report.problems.push(format!("teardown: {e}")),
        }
        report.failures = report.verdict();
        report.passed = report.failures.is_empty();
        report
    }
}

/// Whether every namespace in `nodes` programs `peer` (`want`) or holds none of its entries.
fn everywhere(nodes: &[String], peer: &Peer, want: bool) -> Option<()> {
    nodes
        .iter()
        .all(|ns| {
            kernel::read(ns).is_ok_and(|k: NodeKernel| {
                if want {
                    k.programs_all(&[*peer])
                } else {
                    !k.programs_any(peer)
                }
            })
        })
        .then_some(())
}

/// `peers` without node `i`'s own entry.
fn others(peers: &[Peer], i: usize) -> Vec<Peer> {
    peers
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, p)| *p)
        .collect()
}

fn lease_key(p: &Peer) -> String {
    format!(
        "{SUBNETS_PREFIX}{}-{}",
        p.subnet.network(),
        p.subnet.prefix_len()
    )
}

/// Every lease in etcd: key → value.
fn lease_values(c: &Cluster) -> Result<BTreeMap<String, String>> {
    let out =
        c.tb.etcdctl(&["get", "--prefix", SUBNETS_PREFIX])
            .context("listing the leases")?;
    let lines: Vec<&str> = out.lines().collect();
    Ok(lines
        .chunks(2)
        .filter(|kv| kv.len() == 2)
        .map(|kv| (kv[0].to_string(), kv[1].to_string()))
        .collect())
}

/// The FLANNEL-POSTRTG rules on node `i`, sorted.
fn masq_rules(c: &Cluster, i: usize) -> Result<Vec<String>> {
    let out =
        c.tb.exec(&c.tb.node(i).ns, &["iptables-save", "-t", "nat"])
            .context("reading the nat table")?;
    let mut rules: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("-A FLANNEL-POSTRTG "))
        .map(String::from)
        .collect();
    rules.sort();
    Ok(rules)
}

/// Copies every node's weftd log and etcd's log into `dir`.
fn save_logs(c: &Cluster, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, node) in c.tb.nodes().iter().enumerate() {
        let from = c.log_path(i);
        if from.exists() {
            let to = dir.join(format!("{}-weftd.log", node.name));
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    let etcd = c.tb.etcd_log();
    if etcd.exists() {
        std::fs::copy(&etcd, dir.join("etcd.log")).context("copying etcd's log")?;
    }
    Ok(())
}

/// Peer `n` of the unit tests: 10.244.<n>.0/24 at 10.250.1.<n>, VTEP MAC 02:00:00:00:00:<n>.
#[cfg(test)]
fn test_peer(n: u8) -> Peer {
    Peer {
        subnet: format!("10.244.{n}.0/24").parse().unwrap(),
        public_ip: std::net::Ipv4Addr::new(10, 250, 1, n),
        vtep_mac: weft_core::mac::MacAddr([2, 0, 0, 0, 0, n]),
        direct: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_and_duplicates_go() {
        assert_eq!(scenarios(&[ScenarioArg::All]), Scenario::ALL.to_vec());
        assert_eq!(
            scenarios(&[ScenarioArg::Drift, ScenarioArg::Restart, ScenarioArg::Drift]),
            vec![Scenario::Drift, Scenario::Restart]
        );
        assert_eq!(
            scenarios(&[ScenarioArg::Churn, ScenarioArg::All]),
            vec![
                Scenario::Churn,
                Scenario::Restart,
                Scenario::EtcdOutage,
                Scenario::Drift
            ]
        );
    }

    fn args(extra: &[&str]) -> Result<SoakArgs, clap::Error> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            soak: SoakArgs,
        }
        let mut argv = vec!["soak"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.soak)
    }

    #[test]
    fn flags_parse_into_typed_values() {
        let a = args(&[
            "--duration",
            "40s",
            "--outage",
            "5s",
            "--scenario",
            "restart,drift",
        ])
        .unwrap();
        assert_eq!(a.duration, Duration::from_secs(40));
        assert_eq!(a.outage, Duration::from_secs(5));
        assert_eq!(a.scenario, vec![ScenarioArg::Restart, ScenarioArg::Drift]);
        let d = args(&[]).unwrap();
        assert_eq!(
            (d.nodes, d.pods_per_node, d.duration, d.outage),
            (3, 1, Duration::from_secs(600), Duration::from_secs(60))
        );
        assert_eq!(d.scenario, vec![ScenarioArg::All]);
        assert!(args(&["--scenario", "reboot"]).is_err());
        assert!(args(&["--duration", "10"]).is_err());
    }

    #[test]
    fn dash_o_json_and_the_old_json_flag_both_ask_for_json() {
        let bins = ["--weftd", "/bin/true", "--cni", "/bin/true"];
        let plan = |extra: &[&str]| {
            let all: Vec<&str> = bins.iter().chain(extra).copied().collect();
            Plan::from_args(&args(&all).unwrap()).unwrap().json
        };
        assert!(!plan(&[]));
        assert!(!plan(&["-o", "text"]));
        assert!(plan(&["-o", "json"]));
        assert!(plan(&["--output", "json"]));
        assert!(plan(&["--json"]));
        assert!(args(&["-o", "yaml"]).is_err());
    }

    #[test]
    fn out_of_range_options_are_named() {
        let mut a = args(&["--weftd", "/bin/true", "--cni", "/bin/true"]).unwrap();
        assert!(Plan::from_args(&a).is_ok());
        a.nodes = 1;
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("--nodes 1"), "{e}");
        a.nodes = 3;
        a.pods_per_node = 0;
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("--pods-per-node 0"), "{e}");
        a.pods_per_node = 1;
        a.outage = Duration::from_millis(500);
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("--outage 500 ms"), "{e}");
        a.outage = Duration::from_secs(5);
        a.duration = Duration::ZERO;
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("--duration 0 ms"), "{e}");
        a.duration = Duration::from_secs(5);
        a.weftd = Some("/nonexistent/weftd".into());
        let e = Plan::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("--weftd"), "{e}");
    }
}
