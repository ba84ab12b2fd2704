//! bulk: N synthetic peers exist in etcd before weftd starts; time from start until every
//! neighbour, FDB entry and route is in the kernel (netlink listener, then a dump to check
//! that nothing is missing, flannel #958), and the time to remove them all when the leases
//! vanish; beside `ip -batch`/`bridge -batch` programming the same entries into an
//! identical fresh namespace with its own flannel.1.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_core::dataplane::KernelState;

use crate::cluster::{self, Bins};
use crate::etcd::{Etcd, SUBNETS};
use crate::nlwatch::{self, Entry, Event, Listener};
use crate::ns::NsRuntime;
use crate::peers::{FakePeer, fake_peers};
use crate::report::{Table, fmt_ms, fmt_ms_f, met, ratio_d};

/// A /11 holds 8192 /24s; peers take 10.200.0.0 upwards, the observer keeps 10.192.1.0/24
/// (its previous subnet), so `del --prefix …/subnets/10.2` removes exactly the peers.
pub const CONFIG: &str = r#"{"Network":"10.192.0.0/11","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
pub const OWN_PREVIOUS: &str = "FLANNEL_NETWORK=10.192.0.0/11\nFLANNEL_SUBNET=10.192.1.1/24\nFLANNEL_MTU=8951\nFLANNEL_IPMASQ=true\n";
pub const FIRST_PEER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);
pub const DELETE_PREFIX: &str = "/coreos.com/network/subnets/10.2";

/// Counts of peers whose (neighbour, FDB, route) is absent from `st`.
pub fn missing(peers: &[FakePeer], st: &KernelState) -> (usize, usize, usize) {
    let neighs: HashSet<(Ipv4Addr, [u8; 6])> = st.neighs.iter().map(|n| (n.ip, n.mac.0)).collect();
    let fdb: HashSet<([u8; 6], Ipv4Addr)> = st.fdb.iter().map(|f| (f.mac.0, f.dst)).collect();
    let routes: HashSet<(ipnet::Ipv4Net, Option<Ipv4Addr>)> =
        st.routes.iter().map(|r| (r.dst, r.gw)).collect();
    let mut m = (0, 0, 0);
    for p in peers {
        if !neighs.contains(&(p.gw(), p.mac)) {
            m.0 += 1;
        }
        if !fdb.contains(&(p.mac, p.public_ip)) {
            m.1 += 1;
        }
        if !routes.contains(&(p.subnet, Some(p.gw()))) {
            m.2 += 1;
        }
    }
    m
}

/// Peers' entries still present in `st` (after a removal).
pub fn left(peers: &[FakePeer], st: &KernelState) -> usize {
    let (n, f, r) = missing(peers, st);
    3 * peers.len() - n - f - r
}

/// Waits until the listener has announced every entry of `peers` (added, or removed);
/// returns the time of the last one after `t0`, or None on timeout.
pub fn wait_all(
    listener: &Listener,
    peers: &[FakePeer],
    add: bool,
    t0: Instant,
    timeout: Duration,
    overruns: &mut usize,
) -> Option<Duration> {
    let mut want: HashSet<Entry> = peers
        .iter()
        .flat_map(|p| {
            [
                Entry::Route(p.subnet),
                Entry::Neigh(p.gw()),
                Entry::Fdb(p.mac),
            ]
        })
        .collect();
    let mut last = None;
    let deadline = t0 + timeout;
    while !want.is_empty() && Instant::now() < deadline {
        if let Some(ev) = listener.next(Duration::from_millis(20)) {
            match ev {
                Event::Overrun => *overruns += 1,
                Event::Change {
                    at,
                    new,
                    item: entry,
                } => {
                    if new == add && want.remove(&entry) {
                        last = Some(at);
                    }
                }
            }
        }
    }
    if want.is_empty() {
        last.map(|t| t.saturating_duration_since(t0))
    } else {
        None
    }
}

/// (FDB, neighbour, route) lines for one peer, as `bridge`/`ip` batch commands.
fn lines(p: &FakePeer, add: bool) -> [String; 3] {
    let (mac, gw) = (p.mac_str(), p.gw());
    if add {
        [
            format!(
                "fdb replace {mac} dev flannel.1 dst {} self permanent",
                p.public_ip
            ),
            format!("neigh replace {gw} lladdr {mac} dev flannel.1 nud permanent"),
            format!("route replace {} via {gw} dev flannel.1 onlink", p.subnet),
        ]
    } else {
        [
            format!("fdb del {mac} dev flannel.1 dst {} self", p.public_ip),
            format!("neigh del {gw} dev flannel.1"),
            format!("route del {} via {gw} dev flannel.1", p.subnet),
        ]
    }
}

/// The hand floor: `bridge -batch` for the FDB, then `ip -batch` for the neighbours and
/// `ip -batch` for the routes (deletion: routes first). Returns (FDB, neighbours, routes).
pub fn hand_batch(ns: &str, peers: &[FakePeer], add: bool) -> Result<[Duration; 3]> {
    let mut cols: [Vec<String>; 3] = Default::default();
    for p in peers {
        for (k, l) in lines(p, add).into_iter().enumerate() {
            cols[k].push(l);
        }
    }
    let [fdb, neigh, route] = cols;
    if add {
        let f = cluster::batch("bridge", ns, &fdb)?;
        let n = cluster::batch("ip", ns, &neigh)?;
        let r = cluster::batch("ip", ns, &route)?;
        Ok([f, n, r])
    } else {
        let r = cluster::batch("ip", ns, &route)?;
        let f = cluster::batch("bridge", ns, &fdb)?;
        let n = cluster::batch("ip", ns, &neigh)?;
        Ok([f, n, r])
    }
}

struct SizeRun {
    n: usize,
    weft: Option<Duration>,
    floor: Duration,
    floor_split: [Duration; 3],
    phase: Option<Duration>,
    lease_ms: Option<f64>,
    reconcile_ms: Option<f64>,
    ready_ms: Option<f64>,
    weft_missing: (usize, usize, usize),
    floor_missing: (usize, usize, usize),
    weft_remove: Option<Duration>,
    floor_remove: Duration,
    weft_left: usize,
    floor_left: usize,
    overruns: usize,
    dump_time: Duration,
    diff_full: Duration,
    diff_empty: Duration,
}

fn run_size(bins: &Bins, n: usize) -> Result<SizeRun> {
    let mut tb = cluster::bed(&format!("bench-bulk-{n}"), 2, 9001, CONFIG)?;
    let env = tb.subnet_file(0);
    if let Some(d) = env.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&env, OWN_PREVIOUS)?;
    let peers = fake_peers(n, FIRST_PEER, None, 0xb0);
    let writer = Etcd::connect(&tb.node(1).ns, &tb.etcd_endpoint())?;
    writer.put_many(peers.iter().map(|p| (p.key(), p.value())).collect())?;
    let count = writer.count(SUBNETS)?;
    if count != n as i64 {
        bail!("wrote {n} leases but etcd holds {count}");
    }

    // The floor: node 1, a fresh namespace with its own flannel.1, programmed by hand.
    let fns = tb.node(1).ns.clone();
    cluster::hand_vxlan(
        &fns,
        tb.node(1).ip,
        "0e:be:ff:00:00:01",
        8951,
        Ipv4Addr::new(10, 192, 1, 0),
    )?;
    let floor_split = hand_batch(&fns, &peers, true)?;
    let floor: Duration = floor_split.iter().sum();
    let frt = NsRuntime::new(&fns)?;
    let floor_missing = missing(&peers, &nlwatch::dump(&frt, "flannel.1")?);

    // weftd on node 0.
    let ons = tb.node(0).ns.clone();
    let listener = nlwatch::listen(&ons)?;
    let mut overruns = 0;
    let wall0 = cluster::now_day_seconds();
    let t0 = Instant::now();
    let pid = cluster::start_weftd(&mut tb, bins, 0)?;
    let timeout = Duration::from_secs(30) + Duration::from_millis(10 * n as u64);
    let weft = wait_all(&listener, &peers, true, t0, timeout, &mut overruns);
    let own = cluster::wait_ready(&tb, 0, Duration::from_secs(30))?;
    let ort = NsRuntime::new(&ons)?;
    let dump_t0 = Instant::now();
    let weft_missing = missing(&peers, &nlwatch::dump(&ort, "flannel.1")?);
    let dump_time = dump_t0.elapsed();
    let (diff_full, diff_empty) = diff_times(&peers);
    let log = cluster::log(&tb, 0);
    let at = |needle: &str| cluster::log_time(&log, needle).map(|t| (t - wall0) * 1e3);
    let (lease_ms, reconcile_ms, ready_ms) = (
        at("holding lease"),
        at("reconciling VXLAN peers"),
        at("weftd is ready"),
    );
    let phase = match (weft, reconcile_ms) {
        (Some(w), Some(r)) if ms_of(w) >= r => Some(Duration::from_secs_f64((ms_of(w) - r) / 1e3)),
        _ => None,
    };

    // The leases vanish.
    if own.to_string().starts_with("10.2") {
        bail!("weftd took {own}, inside the peers' range; cannot delete the peers by prefix");
    }
    let _ = listener.drain();
    let t1 = Instant::now();
    let deleted = writer.delete_prefix(DELETE_PREFIX)?;
    if deleted != n as i64 {
        bail!("etcd del --prefix {DELETE_PREFIX} removed {deleted} keys, expected {n}");
    }
    let weft_remove = wait_all(&listener, &peers, false, t1, timeout, &mut overruns);
    let weft_left = left(&peers, &nlwatch::dump(&ort, "flannel.1")?);
    let floor_remove: Duration = hand_batch(&fns, &peers, false)?.iter().sum();
    let floor_left = left(&peers, &nlwatch::dump(&frt, "flannel.1")?);
    if !tb.is_running(pid) {
        bail!("weftd exited during the bulk run:\n{log}");
    }
    Ok(SizeRun {
        n,
        weft,
        floor,
        floor_split,
        phase,
        lease_ms,
        reconcile_ms,
        ready_ms,
        weft_missing,
        floor_missing,
        weft_remove,
        floor_remove,
        weft_left,
        floor_left,
        overruns,
        dump_time,
        diff_full,
        diff_empty,
    })
}

/// How long weft-core's `dataplane::diff` (the reconciler's planning step) takes for these
/// peers against a kernel that already holds everything, and against an empty one.
pub fn diff_times(peers: &[FakePeer]) -> (Duration, Duration) {
    use weft_core::dataplane::{desired_state, diff};
    use weft_core::mac::MacAddr;
    use weft_core::peer::Peer;
    let want: Vec<Peer> = peers
        .iter()
        .map(|p| Peer {
            subnet: p.subnet,
            public_ip: p.public_ip,
            vtep_mac: MacAddr(p.mac),
            direct: false,
        })
        .collect();
    let full = desired_state(&want);
    let t0 = Instant::now();
    let ops = diff(&want, &full);
    let t_full = t0.elapsed();
    let t1 = Instant::now();
    let ops2 = diff(&want, &KernelState::default());
    let t_empty = t1.elapsed();
    debug_assert!(ops.is_empty() && ops2.len() == 3 * peers.len());
    (t_full, t_empty)
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_missing(m: (usize, usize, usize)) -> String {
    format!("{} / {} / {}", m.0, m.1, m.2)
}

pub fn run(bins: &Bins, sizes: &[usize]) -> Result<Table> {
    let mut t = Table::new(
        "bulk: synthetic peers in etcd before weftd starts → every neighbour, FDB entry and route programmed",
        "`bridge -batch` (FDB) + `ip -batch` (neighbours, routes) programming the same entries into a fresh namespace with its own flannel.1, in the same run",
        &["peers", "metric", "weft", "floor", "ratio", "goal", "met"],
    );
    for &n in sizes {
        let r = run_size(bins, n).with_context(|| format!("bulk with {n} peers"))?;
        let ok = r
            .weft
            .is_some_and(|w| w.as_secs_f64() <= 1.5 * r.floor.as_secs_f64());
        t.row(vec![
            r.n.to_string(),
            "start → all 3×N entries in the kernel".into(),
            fmt_ms(r.weft),
            fmt_ms(Some(r.floor)),
            ratio_d(r.weft, Some(r.floor)),
            "≤ 1.5×".into(),
            met(ok),
        ]);
        t.row(vec![
            r.n.to_string(),
            "of which programming (first reconcile → last entry)".into(),
            fmt_ms(r.phase),
            fmt_ms(Some(r.floor)),
            ratio_d(r.phase, Some(r.floor)),
            String::new(),
            String::new(),
        ]);
        t.row(vec![
            r.n.to_string(),
            "leases deleted (`del --prefix`) → all entries gone".into(),
            fmt_ms(r.weft_remove),
            fmt_ms(Some(r.floor_remove)),
            ratio_d(r.weft_remove, Some(r.floor_remove)),
            String::new(),
            String::new(),
        ]);
        let wm = r.weft_missing.0 + r.weft_missing.1 + r.weft_missing.2;
        t.row(vec![
            r.n.to_string(),
            "entries missing after programming (neigh / fdb / route)".into(),
            fmt_missing(r.weft_missing),
            fmt_missing(r.floor_missing),
            String::new(),
            "0".into(),
            met(wm == 0),
        ]);
        t.row(vec![
            r.n.to_string(),
            "entries left after the leases vanished".into(),
            r.weft_left.to_string(),
            r.floor_left.to_string(),
            String::new(),
            "0".into(),
            met(r.weft_left == 0),
        ]);
        if wm > 0 {
            t.note(format!(
                "**{wm} ENTRIES MISSING with {} peers (neigh/fdb/route {}): weftd did not program everything (flannel #958 class of bug).**",
                r.n,
                fmt_missing(r.weft_missing)
            ));
        }
        let fmt = |v: Option<f64>| v.map(fmt_ms_f).unwrap_or_else(|| "n/a".into());
        t.note(format!(
            "{} peers, weftd's log: lease held {} after start, first reconcile {}, ready (subnet.env) {}; all entries seen {}. Floor split: FDB {}, neighbours {}, routes {}.",
            r.n,
            fmt(r.lease_ms),
            fmt(r.reconcile_ms),
            fmt(r.ready_ms),
            fmt_ms(r.weft),
            fmt_ms(Some(r.floor_split[0])),
            fmt_ms(Some(r.floor_split[1])),
            fmt_ms(Some(r.floor_split[2])),
        ));
        t.note(format!(
            "{} peers, where a reconcile's time goes (measured in this process, same code as weftd): one dump of flannel.1's neighbours, FDB and routes through weft-net {}; weft-core's `dataplane::diff` against a kernel that already matches {} and against an empty one {}. weftd runs a full reconcile (dump + diff) on every batch of lease events, once more after its own changes (its netlink monitor kicks it), and on its periodic re-check.",
            r.n,
            fmt_ms(Some(r.dump_time)),
            fmt_ms(Some(r.diff_full)),
            fmt_ms(Some(r.diff_empty)),
        ));
        if r.overruns > 0 {
            t.note(format!(
                "**The netlink listener overran {} time(s) with {} peers: completion times are lower bounds; the dump counts are exact.**",
                r.overruns, r.n
            ));
        }
    }
    t.note("Start = just before `ip netns exec … weftd` is spawned, so process start, etcd connect, config read, lease acquisition (one list of all leases), VXLAN device, iptables rules and the lease list are all inside the weft figure; the floor only programs.");
    Ok(t)
}
