//! convergence: from a lease PUT in etcd to the observer's route, neighbour and FDB entry,
//! seen by a netlink multicast listener; beside a bare etcd watch client's PUT-to-notify
//! latency for the very same PUT.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cluster::{self, Bins};
use crate::etcd::{Etcd, SUBNETS};
use crate::nlwatch::{self, Entry, Event, Listener};
use crate::peers::{FakePeer, fake_peers};
use crate::report::{Table, fmt_ms, met, percentile, ratio_d};

/// 10.244.0.0/14 holds 1024 /24s: room for 500+ distinct peers named 10.244.x.0, 10.245.x.0.
const CONFIG: &str = r#"{"Network":"10.244.0.0/14","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
const WARMUP: usize = 10;
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// One sample: floor (watch notified) and weft (all three entries in the kernel).
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    floor: Option<Duration>,
    weft: Option<Duration>,
    route: Option<Duration>,
    neigh: Option<Duration>,
    fdb: Option<Duration>,
}

pub fn run(bins: &Bins, samples: usize) -> Result<Table> {
    let mut tb = cluster::bed("bench-convergence", 2, 9001, CONFIG)?;
    let pid = cluster::start_weftd(&mut tb, bins, 0)?;
    let own = cluster::wait_ready(&tb, 0, Duration::from_secs(30))?;
    let observer = tb.node(0).ns.clone();
    let listener = nlwatch::listen(&observer)?;
    // The bare watcher sits where weftd's watch sits (the observer node); the writer is
    // another node, as a peer's daemon would be.
    let watcher = Etcd::connect(&observer, &tb.etcd_endpoint())?;
    let notes_rx = watcher.watch(SUBNETS)?;
    let writer = Etcd::connect(&tb.node(1).ns, &tb.etcd_endpoint())?;

    let peers = fake_peers(
        samples + WARMUP,
        Ipv4Addr::new(10, 244, 1, 0),
        Some(own),
        0xc0,
    );
    let mut overruns = 0usize;
    let mut adds = Vec::with_capacity(peers.len());
    for p in &peers {
        adds.push(measure(
            &listener,
            &notes_rx,
            &mut overruns,
            p,
            true,
            || writer.put(&p.key(), &p.value()),
        )?);
    }
    let mut dels = Vec::with_capacity(peers.len());
    for p in &peers {
        dels.push(measure(
            &listener,
            &notes_rx,
            &mut overruns,
            p,
            false,
            || writer.delete(&p.key()).map(drop),
        )?);
    }
    if !tb.is_running(pid) {
        bail!(
            "weftd on the observer exited during the run:\n{}",
            cluster::log(&tb, 0)
        );
    }

    let mut t = Table::new(
        &format!(
            "convergence: lease PUT/DELETE in etcd → route + neighbour + FDB on the observer ({samples} distinct peers)"
        ),
        "a bare etcd v3 watch client (etcd-client, in the observer's namespace) notified of the same PUT/DELETE",
        &["metric", "weft", "floor", "ratio", "goal", "met"],
    );
    for (verb, set) in [("add", &adds[WARMUP..]), ("delete", &dels[WARMUP..])] {
        let weft: Vec<Duration> = set.iter().filter_map(|s| s.weft).collect();
        let floor: Vec<Duration> = set.iter().filter_map(|s| s.floor).collect();
        for p in [50.0, 90.0, 99.0] {
            let (w, f) = (percentile(&weft, p), percentile(&floor, p));
            let (goal, ok) = if p == 99.0 {
                match (w, f) {
                    (Some(w), Some(f)) => {
                        let g = f * 2 + Duration::from_millis(1);
                        (
                            format!("≤ 2×floor + 1 ms = {}", fmt_ms(Some(g))),
                            met(w <= g),
                        )
                    }
                    _ => ("≤ 2×floor + 1 ms".into(), "n/a".into()),
                }
            } else {
                (String::new(), String::new())
            };
            t.row(vec![
                format!("{verb} p{p:.0}"),
                fmt_ms(w),
                fmt_ms(f),
                ratio_d(w, f),
                goal,
                ok,
            ]);
        }
        let own: Vec<Duration> = set
            .iter()
            .filter_map(|s| Some(s.weft?.saturating_sub(s.floor?)))
            .collect();
        let half = set.len() / 2;
        let share_p50 = |part: &[Sample]| {
            let v: Vec<Duration> = part
                .iter()
                .filter_map(|s| Some(s.weft?.saturating_sub(s.floor?)))
                .collect();
            fmt_ms(percentile(&v, 50.0))
        };
        let (small, big) = if verb == "add" {
            (&set[..half], &set[half..])
        } else {
            (&set[half..], &set[..half])
        };
        t.row(vec![
            format!("{verb}: weftd's own share p50 with < {half} peers / with ≥ {half} peers held"),
            format!("{} / {}", share_p50(small), share_p50(big)),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        t.row(vec![
            format!("{verb}: weftd's own share per sample (weft − floor), p50 / p99"),
            format!(
                "{} / {}",
                fmt_ms(percentile(&own, 50.0)),
                fmt_ms(percentile(&own, 99.0))
            ),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        let missing = set.iter().filter(|s| s.weft.is_none()).count();
        let fmissing = set.iter().filter(|s| s.floor.is_none()).count();
        t.row(vec![
            format!("{verb}: samples not converged within {SAMPLE_TIMEOUT:?}"),
            missing.to_string(),
            fmissing.to_string(),
            String::new(),
            "0".into(),
            met(missing == 0),
        ]);
    }
    let part = |f: fn(&Sample) -> Option<Duration>| {
        let v: Vec<Duration> = adds[WARMUP..].iter().filter_map(f).collect();
        fmt_ms(percentile(&v, 50.0))
    };
    t.note(format!(
        "Per entry on add, p50: neighbour {}, FDB {}, route {} after the PUT (weftd programs them in that order).",
        part(|s| s.neigh),
        part(|s| s.fdb),
        part(|s| s.route)
    ));
    t.note(format!(
        "Peers accumulate: the observer holds 0 → {samples} peers during the add phase and {samples} → 0 during the delete phase ({WARMUP} warm-up samples first, not counted). Network 10.244.0.0/14, observer subnet {own}."
    ));
    t.note("The clock starts just before the client sends the request; both columns measure the same request, so etcd's own commit time is in both.");
    if overruns > 0 {
        t.note(format!(
            "**The netlink listener overran {overruns} time(s): some timings may be missing.**"
        ));
    }
    Ok(t)
}

/// Runs `act` (the PUT or DELETE) and waits until the watcher and the kernel reported it.
fn measure(
    listener: &Listener,
    notes: &std::sync::mpsc::Receiver<crate::etcd::WatchEvent>,
    overruns: &mut usize,
    p: &FakePeer,
    add: bool,
    act: impl FnOnce() -> Result<()>,
) -> Result<Sample> {
    // Anything still queued belongs to earlier samples.
    let _ = listener.drain();
    let _ = notes.try_iter().count();
    let key = p.key();
    let wanted: HashMap<Entry, usize> = [
        (Entry::Route(p.subnet), 0),
        (Entry::Neigh(p.gw()), 1),
        (Entry::Fdb(p.mac), 2),
    ]
    .into_iter()
    .collect();
    let mut got: [Option<Instant>; 3] = [None; 3];
    let mut floor_at = None;
    let t0 = Instant::now();
    act()?;
    let deadline = t0 + SAMPLE_TIMEOUT;
    while Instant::now() < deadline && (floor_at.is_none() || got.iter().any(Option::is_none)) {
        for n in notes.try_iter() {
            if n.key == key && n.put == add && floor_at.is_none() {
                floor_at = Some(n.at);
            }
        }
        if let Some(ev) = listener.next(Duration::from_millis(1)) {
            match ev {
                Event::Overrun => *overruns += 1,
                Event::Change {
                    at,
                    new,
                    item: entry,
                } => {
                    if new == add
                        && let Some(&i) = wanted.get(&entry)
                        && got[i].is_none()
                    {
                        got[i] = Some(at);
                    }
                }
            }
        }
    }
    let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(t0));
    let weft = if got.iter().all(Option::is_some) {
        got.iter()
            .flatten()
            .max()
            .map(|t| t.saturating_duration_since(t0))
    } else {
        None
    };
    Ok(Sample {
        floor: since(floor_at),
        weft,
        route: since(got[0]),
        neigh: since(got[1]),
        fdb: since(got[2]),
    })
}
