//! footprint: weftd's peak and steady RSS and CPU seconds at 0, 1,000 and 5,000 peers, then
//! idle CPU and forked children over a quiet minute; beside a bare watcher of the same keys
//! (`etcdctl watch --prefix --rev=1`, which receives every lease once and then idles).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::{self, Bins};
use crate::etcd::{Etcd, SUBNETS};
use crate::nlwatch;
use crate::ns::NsRuntime;
use crate::peers::fake_peers;
use crate::procfs::{self, ForkCounter};
use crate::report::{Table, fmt_ms, met, mib, percentile, ratio, ratio_d};
use crate::scenarios::bulk::{CONFIG, FIRST_PEER, OWN_PREVIOUS};

struct Usage {
    hwm_kib: u64,
    rss_kib: u64,
    cpu_s: f64,
    children_cpu_s: f64,
}

fn usage(pid: i32) -> Result<Usage> {
    let (cpu_s, children_cpu_s) =
        procfs::cpu_seconds(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(Usage {
        hwm_kib: procfs::status_kib(pid, "VmHWM").unwrap_or(0),
        rss_kib: procfs::status_kib(pid, "VmRSS").unwrap_or(0),
        cpu_s,
        children_cpu_s,
    })
}

struct Idle {
    secs: u64,
    weft_cpu: f64,
    floor_cpu: f64,
    weft_forks: usize,
    weft_programs: String,
    floor_forks: usize,
    counted: bool,
    /// (seconds into the window, CPU seconds spent in the preceding 500 ms)
    bursts: Vec<(f64, f64)>,
}

pub fn run(bins: &Bins, sizes: &[usize], idle_secs: u64) -> Result<Table> {
    let mut t = Table::new(
        "footprint: weftd's memory and CPU by number of peers, and over an idle minute",
        "a bare watcher of the same keys in the same namespace at the same time: `etcdctl watch --prefix --rev=1 /coreos.com/network/subnets/` (Go, receives every lease once, programs nothing)",
        &["peers", "metric", "weft", "floor", "ratio", "goal", "met"],
    );
    let biggest = sizes.iter().copied().max().unwrap_or(0);
    let forks = ForkCounter::start();
    for &n in sizes {
        let mut tb = cluster::bed(&format!("bench-footprint-{n}"), 1, 9001, CONFIG)?;
        let env = tb.subnet_file(0);
        if let Some(d) = env.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&env, OWN_PREVIOUS)?;
        let ns = tb.node(0).ns.clone();
        let peers = fake_peers(n, FIRST_PEER, None, 0xf0);
        if n > 0 {
            let w = Etcd::connect(&ns, &tb.etcd_endpoint())?;
            w.put_many(peers.iter().map(|p| (p.key(), p.value())).collect())?;
        }
        let etcdctl = std::env::var("WEFT_TESTBED_ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
        let floor_log = tb.dir().join("etcdctl-watch.log");
        let floor_pid = tb.spawn(
            &ns,
            std::path::Path::new(&etcdctl),
            &[
                format!("--endpoints={}", tb.etcd_endpoint()),
                "watch".into(),
                "--prefix".into(),
                "--rev=1".into(),
                SUBNETS.into(),
            ],
            &[("ETCDCTL_API".into(), "3".into())],
            &floor_log,
        )?;
        let pid = cluster::start_weftd(&mut tb, bins, 0)?;
        cluster::wait_ready(&tb, 0, Duration::from_secs(60))?;
        let rt = NsRuntime::new(&ns)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = nlwatch::dump(&rt, "flannel.1")?;
            if st.routes.len() >= n {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "weftd programmed {} of {n} routes within 60 s",
                    st.routes.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Let the first iptables checks and allocator settle.
        std::thread::sleep(Duration::from_secs(3));
        let (w, f) = (usage(pid.as_raw())?, usage(floor_pid.as_raw())?);
        let goal_rss = n == biggest && n >= 5000;
        t.row(vec![
            n.to_string(),
            "steady RSS (VmRSS)".into(),
            mib(w.rss_kib),
            mib(f.rss_kib),
            ratio(w.rss_kib as f64, f.rss_kib as f64),
            if goal_rss {
                "≤ 12 MiB".into()
            } else {
                String::new()
            },
            if goal_rss {
                met(w.rss_kib <= 12 * 1024)
            } else {
                String::new()
            },
        ]);
        t.row(vec![
            n.to_string(),
            "peak RSS (VmHWM)".into(),
            mib(w.hwm_kib),
            mib(f.hwm_kib),
            ratio(w.hwm_kib as f64, f.hwm_kib as f64),
            String::new(),
            String::new(),
        ]);
        t.row(vec![
            n.to_string(),
            "CPU from start to settled (utime+stime)".into(),
            format!("{:.2} s (+{:.2} s children)", w.cpu_s, w.children_cpu_s),
            format!("{:.2} s", f.cpu_s),
            ratio(w.cpu_s, f.cpu_s),
            String::new(),
            String::new(),
        ]);
        if n == biggest && idle_secs > 0 {
            let lost_before = cluster::log(&tb, 0)
                .matches("lost the etcd lease watch")
                .count();
            let idle = idle_window(&forks, pid.as_raw(), floor_pid.as_raw(), idle_secs)?;
            let lost = cluster::log(&tb, 0)
                .matches("lost the etcd lease watch")
                .count()
                - lost_before;
            // Still alive after the quiet minute? One more lease must be programmed.
            let probe = probe(&tb, &ns, n)?;
            let per_min = |cpu: f64| cpu * 60.0 / idle.secs as f64;
            let pct = |cpu: f64| 100.0 * cpu / idle.secs as f64;
            t.row(vec![
                n.to_string(),
                format!("idle CPU over {} s, no changes", idle.secs),
                format!(
                    "{:.3} s ({:.3} % of a core)",
                    idle.weft_cpu,
                    pct(idle.weft_cpu)
                ),
                format!(
                    "{:.3} s ({:.3} % of a core)",
                    idle.floor_cpu,
                    pct(idle.floor_cpu)
                ),
                ratio(idle.weft_cpu, idle.floor_cpu),
                "≈ 0 (≤ 0.1 % of a core)".into(),
                met(pct(idle.weft_cpu) <= 0.1),
            ]);
            t.note(format!(
                "Idle window at {n} peers, sampled every 500 ms: weftd's CPU came as {} (second into the window: CPU ms).",
                if idle.bursts.is_empty() {
                    "nothing measurable".to_string()
                } else {
                    idle.bursts
                        .iter()
                        .map(|(at, cpu)| format!("{at:.1} s: {:.0} ms", cpu * 1e3))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
            t.row(vec![
                n.to_string(),
                format!(
                    "etcd lease watch lost and re-established in those {} s (weftd's log)",
                    idle.secs
                ),
                lost.to_string(),
                String::new(),
                String::new(),
                "0".into(),
                met(lost == 0),
            ]);
            t.row(vec![
                n.to_string(),
                format!("after the idle window: {PROBES} more lease PUTs, one at a time → route + neighbour + FDB, p50 / worst"),
                format!("{} / {}", fmt_ms(probe.weft_p50), fmt_ms(probe.weft_max)),
                fmt_ms(probe.floor_p50),
                ratio_d(probe.weft_p50, probe.floor_p50),
                format!("all {PROBES} programmed"),
                met(probe.missing == 0),
            ]);
            t.row(vec![
                n.to_string(),
                format!("child processes forked in those {} s", idle.secs),
                if idle.counted {
                    format!("{} {}", idle.weft_forks, idle.weft_programs)
                } else {
                    "n/a".into()
                },
                if idle.counted {
                    idle.floor_forks.to_string()
                } else {
                    "n/a".into()
                },
                String::new(),
                "≤ 1 per 60 s".into(),
                if idle.counted {
                    met(per_min(idle.weft_forks as f64) <= 1.0 + f64::EPSILON)
                } else {
                    String::new()
                },
            ]);
        }
        if !tb.is_running(pid) {
            bail!(
                "weftd exited during the footprint run:\n{}",
                cluster::log(&tb, 0)
            );
        }
    }
    if let Err(e) = &forks {
        t.note(format!(
            "Forks could not be counted: the proc connector failed ({e:#})."
        ));
    }
    t.note(format!(
        "RSS is weftd's own (its iptables-save/restore children are separate processes; their CPU is shown as children). CPU per {} Hz tick, so figures below 0.01 s are at the edge of resolution.",
        procfs::clk_tck()
    ));
    Ok(t)
}

/// PUTs `PROBES` more leases, one at a time, 200 ms apart, each waited for (10 s at most):
/// is weftd still live after the quiet minute, and how fast is it with this many peers?
/// Returns (weft p50, weft worst, floor p50, not programmed), the floor being a bare
/// watcher's PUT-to-notify for the same PUT.
fn probe(tb: &weft_testbed::Testbed, ns: &str, n: usize) -> Result<Probe> {
    let peers = fake_peers(n + PROBES, FIRST_PEER, None, 0xf0);
    let listener = crate::nlwatch::listen(ns)?;
    let etcd = Etcd::connect(ns, &tb.etcd_endpoint())?;
    let notes = etcd.watch(SUBNETS)?;
    let (mut weft, mut floor, mut missing) = (Vec::new(), Vec::new(), 0);
    for p in &peers[n..] {
        std::thread::sleep(Duration::from_millis(200));
        let _ = listener.drain();
        let _ = notes.try_iter().count();
        let t0 = Instant::now();
        etcd.put(&p.key(), &p.value())?;
        let mut overruns = 0;
        match crate::scenarios::bulk::wait_all(
            &listener,
            std::slice::from_ref(p),
            crate::peers::Backend::Vxlan,
            true,
            t0,
            Duration::from_secs(10),
            &mut overruns,
        ) {
            Some(d) => weft.push(d),
            None => missing += 1,
        }
        if let Some(e) = notes.try_iter().find(|e| e.key == p.key()) {
            floor.push(e.at.saturating_duration_since(t0));
        }
    }
    Ok(Probe {
        weft_p50: percentile(&weft, 50.0),
        weft_max: percentile(&weft, 100.0),
        floor_p50: percentile(&floor, 50.0),
        missing,
    })
}

const PROBES: usize = 20;

struct Probe {
    weft_p50: Option<Duration>,
    weft_max: Option<Duration>,
    floor_p50: Option<Duration>,
    missing: usize,
}

fn idle_window(forks: &Result<ForkCounter>, pid: i32, floor_pid: i32, secs: u64) -> Result<Idle> {
    if let Ok(f) = forks {
        f.reset();
        f.watch(pid);
        f.watch(floor_pid);
    }
    let (w0, f0) = (usage(pid)?, usage(floor_pid)?);
    // Sample every 500 ms to see when the CPU is spent (periodic work shows as bursts).
    let t0 = Instant::now();
    let mut last = w0.cpu_s + w0.children_cpu_s;
    let mut bursts = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            Duration::from_millis(500).min(Duration::from_secs(secs).saturating_sub(t0.elapsed())),
        );
        let u = usage(pid)?;
        let now = u.cpu_s + u.children_cpu_s;
        if now > last + 1e-9 {
            bursts.push((t0.elapsed().as_secs_f64(), now - last));
        }
        last = now;
    }
    let (w1, f1) = (usage(pid)?, usage(floor_pid)?);
    let (weft_forks, programs, floor_forks, counted) = match forks {
        Ok(f) => {
            let (n, progs) = f.children_of(pid);
            let (fl, _) = f.children_of(floor_pid);
            let list = progs
                .iter()
                .map(|(p, c)| format!("{p}×{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            (
                n,
                if list.is_empty() {
                    String::new()
                } else {
                    format!("({list})")
                },
                fl,
                true,
            )
        }
        Err(_) => (0, String::new(), 0, false),
    };
    Ok(Idle {
        secs,
        weft_cpu: (w1.cpu_s + w1.children_cpu_s) - (w0.cpu_s + w0.children_cpu_s),
        floor_cpu: f1.cpu_s - f0.cpu_s,
        weft_forks,
        weft_programs: programs,
        floor_forks,
        counted,
        bursts,
    })
}
