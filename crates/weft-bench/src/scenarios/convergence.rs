//! convergence: from a lease PUT in etcd to the observer's route, neighbour and FDB entry,
//! seen by a netlink multicast listener; beside a bare etcd watch client's PUT-to-notify
//! latency for the very same PUT.
//!
//! The host-gw variant: weftd runs with `"Type":"host-gw"`, the writer puts host-gw leases
//! (public IPs on the underlay /16, so on eth0's link), and weft's time is the moment the
//! peer's one route (via its PublicIP on eth0) appears or goes; the floor is the same bare
//! watcher.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cluster::{self, Bins};
use crate::etcd::{Etcd, SUBNETS};
use crate::nlwatch::{self, Entry, Listener, next_of_kind};
use crate::peers::{Backend, FakePeer, fake_peers};
use crate::report::{Table, fmt_ms, met, percentile, ratio_d};

/// 10.244.0.0/14 holds 1024 /24s: room for 500+ distinct peers named 10.244.x.0, 10.245.x.0.
const CONFIG: &str = r#"{"Network":"10.244.0.0/14","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
/// The same network with the host-gw backend.
const CONFIG_HOST_GW: &str =
    r#"{"Network":"10.244.0.0/14","SubnetLen":24,"Backend":{"Type":"host-gw"}}"#;
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

pub fn run(bins: &Bins, samples: usize, backend: Backend) -> Result<Table> {
    let mut tb = match backend {
        Backend::Vxlan => cluster::bed("bench-convergence", 2, 9001, CONFIG)?,
        Backend::HostGw => cluster::bed("bench-convergence-hostgw", 2, 9001, CONFIG_HOST_GW)?,
    };
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
            backend,
            true,
            || writer.put(&p.key(), &p.value_for(backend)),
        )?);
    }
    let mut dels = Vec::with_capacity(peers.len());
    for p in &peers {
        dels.push(measure(
            &listener,
            &notes_rx,
            &mut overruns,
            p,
            backend,
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

    let title = match backend {
        Backend::Vxlan => format!(
            "convergence: lease PUT/DELETE in etcd → route + neighbour + FDB on the observer ({samples} distinct peers)"
        ),
        Backend::HostGw => format!(
            "convergence (host-gw): host-gw lease PUT/DELETE in etcd → the route via the peer's PublicIP on the observer's eth0 ({samples} distinct peers)"
        ),
    };
    let mut t = Table::new(
        &title,
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
    match backend {
        Backend::Vxlan => t.note(format!(
            "Per entry on add, p50: neighbour {}, FDB {}, route {} after the PUT (weftd programs them in that order).",
            part(|s| s.neigh),
            part(|s| s.fdb),
            part(|s| s.route)
        )),
        Backend::HostGw => t.note(
            "host-gw: weft's time is the one route per peer (`<subnet> via <PublicIP> dev eth0`, main table); there is no device, neighbour or FDB entry. The leases are flanneld's host-gw leases (public IPs 10.250.100.1 upwards, on the underlay 10.250.0.0/16).",
        ),
    }
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
#[allow(clippy::too_many_arguments)]
fn measure(
    listener: &Listener,
    notes: &std::sync::mpsc::Receiver<crate::etcd::WatchEvent>,
    overruns: &mut usize,
    p: &FakePeer,
    backend: Backend,
    add: bool,
    act: impl FnOnce() -> Result<()>,
) -> Result<Sample> {
    // Anything still queued belongs to earlier samples.
    let _ = listener.drain();
    let _ = notes.try_iter().count();
    let key = p.key();
    let wanted = wanted_slots(p, backend);
    // Slots this backend has no entry for count as seen (never waited for, never a time).
    let mut got: [Option<Instant>; 3] = [None; 3];
    let mut seen = [true; 3];
    for &i in wanted.values() {
        seen[i] = false;
    }
    let mut floor_at = None;
    let t0 = Instant::now();
    act()?;
    let deadline = t0 + SAMPLE_TIMEOUT;
    while Instant::now() < deadline && (floor_at.is_none() || seen.iter().any(|s| !s)) {
        for n in notes.try_iter() {
            if n.key == key && n.put == add && floor_at.is_none() {
                floor_at = Some(n.at);
            }
        }
        if let Some((at, entry)) = next_of_kind(listener, Duration::from_millis(1), add, overruns)
            && let Some(&i) = wanted.get(&entry)
            && !seen[i]
        {
            got[i] = Some(at);
            seen[i] = true;
        }
    }
    let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(t0));
    let weft = converged(&got, &seen).map(|t| t.saturating_duration_since(t0));
    Ok(Sample {
        floor: since(floor_at),
        weft,
        route: since(got[0]),
        neigh: since(got[1]),
        fdb: since(got[2]),
    })
}

/// The entries to wait for and their slot in a sample: route 0, neighbour 1, FDB 2 (host-gw:
/// the route alone).
fn wanted_slots(p: &FakePeer, backend: Backend) -> HashMap<Entry, usize> {
    p.entries(backend)
        .into_iter()
        .map(|e| {
            let slot = match e {
                Entry::Route(_) => 0,
                Entry::Neigh(_) => 1,
                Entry::Fdb(_) => 2,
            };
            (e, slot)
        })
        .collect()
}

/// When the last wanted entry was seen, if all were.
fn converged(got: &[Option<Instant>; 3], seen: &[bool; 3]) -> Option<Instant> {
    if seen.iter().all(|s| *s) {
        got.iter().flatten().max().copied()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_gw_waits_for_the_route_alone() {
        let p = fake_peers(1, Ipv4Addr::new(10, 244, 1, 0), None, 0xc0)[0];
        let hg = wanted_slots(&p, Backend::HostGw);
        assert_eq!(hg.len(), 1);
        assert_eq!(hg.get(&Entry::Route(p.subnet)), Some(&0));
        let vx = wanted_slots(&p, Backend::Vxlan);
        assert_eq!(vx.len(), 3);
        assert_eq!(vx.get(&Entry::Neigh(p.gw())), Some(&1));
        assert_eq!(vx.get(&Entry::Fdb(p.mac)), Some(&2));
    }

    #[test]
    fn converged_is_the_last_wanted_entry() {
        let t0 = Instant::now();
        let (a, b) = (t0 + Duration::from_millis(1), t0 + Duration::from_millis(2));
        // host-gw: the route alone, the other slots never wanted.
        assert_eq!(converged(&[Some(a), None, None], &[true; 3]), Some(a));
        assert_eq!(converged(&[None, None, None], &[false, true, true]), None);
        // VXLAN: all three, the latest counts; one missing means not converged.
        assert_eq!(converged(&[Some(a), Some(b), Some(a)], &[true; 3]), Some(b));
        assert_eq!(
            converged(&[Some(a), Some(b), None], &[true, true, false]),
            None
        );
    }

    #[test]
    fn configs_differ_only_in_the_backend() {
        assert_eq!(CONFIG_HOST_GW.replace("host-gw", "vxlan"), CONFIG);
    }
}
