//! etcd-load: what weft's nodes cost etcd, counted by etcd itself (its `/metrics` scraped
//! before and after a window): requests by gRPC method, raft proposals committed, lease
//! grants/revokes/renewals, watchers, and at the end the etcd leases no key uses (orphans).
//!
//! Four beds run side by side for each node count, each with its own etcd, so no figure mixes
//! with another: weftd at steady state (the default 24 h lease, no renewal in the window),
//! weftd renewing (a short `--subnet-lease-ttl`, so every node renews several times in the
//! window), and the same two for flannel's etcd traffic replayed by bare clients (the floor).
//! The replay does what flanneld's etcd subnet manager does (flannel-compat.md 1.4–1.8):
//! list the subnets with one TimeToLive per key, grant + guarded create, one watch stream
//! holding a prefix watch and a watch of its own key, one TimeToLive per PUT event seen, and
//! a renewal that grants a new lease and puts the key with it, leaving the old lease to expire.

use std::net::Ipv4Addr;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use ipnet::Ipv4Net;
use weft_testbed::{ETCD_CLIENT_PORT, ETCD_IP, Pid, Testbed};

use crate::cluster::{self, Bins};
use crate::etcd::{CONFIG_KEY, SUBNETS, lease_key, lease_value};
use crate::etcdmetrics::{self, Scrape};
use crate::ns::NsRuntime;
use crate::report::{Table, met, ratio};

const CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
/// flanneld's fixed lease TTL and weftd's default.
const DAY: i64 = 86400;
/// flanneld's default renew margin (minutes) and the smallest one it accepts.
const MARGIN_DEFAULT_MIN: i64 = 60;
const MARGIN_MIN: i64 = 1;
/// Start-up traffic (listings, creates, the first watch events) is over by then.
const SETTLE: Duration = Duration::from_secs(2);

/// gRPC methods that change etcd's state (each a raft proposal when it succeeds).
const WRITES: [&str; 6] = [
    "Put",
    "Txn",
    "DeleteRange",
    "LeaseGrant",
    "LeaseRevoke",
    "Compact",
];
/// gRPC methods that only read.
const READS: [&str; 3] = ["Range", "LeaseTimeToLive", "LeaseLeases"];

pub struct Opts {
    pub nodes: Vec<usize>,
    pub secs: u64,
    pub ttl: i64,
}

/// When a lease of `ttl` seconds is renewed with flanneld's smallest margin (1 minute):
/// `ttl − margin`, the margin capped at half the TTL (what weftd does for short TTLs, so
/// the replay renews at the same period).
fn renew_period(ttl: i64) -> Duration {
    let margin = (MARGIN_MIN * 60).min(ttl / 2).max(1);
    Duration::from_secs((ttl - margin).max(1) as u64)
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    writes: f64,
    reads: f64,
    keepalive_msgs: f64,
    keepalive_streams: f64,
    watch_msgs: f64,
    proposals: f64,
    granted: f64,
    revoked: f64,
    renewed: f64,
    bytes_in: f64,
    bytes_out: f64,
}

/// A report row without a goal: its metric, what of [`Counts`] it shows, and flannel's
/// published figure.
type CountRow = (&'static str, fn(&Counts) -> f64, &'static str);

fn counts(a: &Scrape, b: &Scrape) -> Counts {
    let d = |f: &dyn Fn(&Scrape) -> f64| f(b) - f(a);
    let sum = |s: &Scrape, methods: &[&str]| methods.iter().map(|m| s.grpc_msgs(m)).sum::<f64>();
    Counts {
        writes: d(&|s| sum(s, &WRITES)),
        reads: d(&|s| sum(s, &READS)),
        keepalive_msgs: d(&|s| s.grpc_msgs("LeaseKeepAlive")),
        keepalive_streams: d(&|s| s.grpc_started("LeaseKeepAlive")),
        watch_msgs: d(&|s| s.grpc_msgs("Watch")),
        proposals: d(&|s| s.sum("etcd_server_proposals_committed_total", &[])),
        granted: d(&|s| s.sum("etcd_debugging_lease_granted_total", &[])),
        revoked: d(&|s| s.sum("etcd_debugging_lease_revoked_total", &[])),
        renewed: d(&|s| s.sum("etcd_debugging_lease_renewed_total", &[])),
        bytes_in: d(&|s| s.sum("etcd_network_client_grpc_received_bytes_total", &[])),
        bytes_out: d(&|s| s.sum("etcd_network_client_grpc_sent_bytes_total", &[])),
    }
}

/// Every gRPC method with messages in the window, `Method n` (for the notes).
fn by_method(a: &Scrape, b: &Scrape) -> String {
    let methods = [
        "Range",
        "Put",
        "Txn",
        "DeleteRange",
        "LeaseGrant",
        "LeaseRevoke",
        "LeaseKeepAlive",
        "LeaseTimeToLive",
        "LeaseLeases",
        "Watch",
    ];
    let parts: Vec<String> = methods
        .iter()
        .filter_map(|m| {
            let n = b.grpc_msgs(m) - a.grpc_msgs(m);
            (n > 0.0).then(|| format!("{m} {n:.0}"))
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// etcd's state at the end of the window.
#[derive(Debug, Clone, Copy, Default)]
struct End {
    watchers: f64,
    watch_streams: f64,
    leases: usize,
    orphans: usize,
    subnet_keys: usize,
}

/// Lists etcd's leases and the keys attached to each, and the subnet keys, from `ns`.
fn leases_at_end(ns: &str, endpoint: &str) -> Result<(usize, usize, usize)> {
    let rt = NsRuntime::new(ns)?;
    let ep = endpoint.to_string();
    rt.call(move || async move {
        let mut c = Client::connect([ep], None).await?;
        let ids: Vec<i64> = c.leases().await?.leases().iter().map(|l| l.id()).collect();
        let mut orphans = 0;
        for id in &ids {
            let r = c
                .lease_time_to_live(*id, Some(LeaseTimeToLiveOptions::new().with_keys()))
                .await?;
            // An expired lease etcd has not revoked yet is listed too: still an orphan.
            if r.keys().is_empty() {
                orphans += 1;
            }
        }
        let keys = c
            .get(
                SUBNETS,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?
            .count();
        Ok::<_, etcd_client::Error>((ids.len(), orphans, keys as usize))
    })?
    .context("listing etcd's leases")
}

/// flannel's etcd traffic for every node of a bed, each node a bare client in its namespace.
struct Replay {
    rts: Vec<NsRuntime>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Replay {
    fn start(tb: &Testbed, ttl: i64, renew: Option<Duration>) -> Result<Replay> {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = channel();
        let n = tb.nodes().len();
        let mut rts = Vec::with_capacity(n);
        for i in 0..n {
            let rt = NsRuntime::new(&tb.node(i).ns)?;
            let third = u8::try_from(i + 1).context("the replay gives node i 10.244.(i+1).0/24")?;
            let subnet = Ipv4Net::new(Ipv4Addr::new(10, 244, third, 0), 24)?;
            let node = FlannelNode {
                endpoint: tb.etcd_endpoint(),
                key: lease_key(subnet),
                value: lease_value(tb.node(i).ip, [0x0e, 0xf1, 0, 0, 0, third]),
                ttl,
                renew,
            };
            let (errors, ready) = (errors.clone(), ready_tx.clone());
            rt.spawn(move || async move {
                if let Err(e) = node.run(ready).await {
                    errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("replayed flannel node {i}: {e}"));
                }
            })?;
            rts.push(rt);
        }
        drop(ready_tx);
        let replay = Replay { rts, errors };
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            if ready_rx.recv_timeout(left).is_err() {
                replay.check()?;
                bail!("the replayed flannel nodes were not all watching within 30 s");
            }
        }
        Ok(replay)
    }

    /// Fails with the first error a replayed node hit.
    fn check(&self) -> Result<()> {
        match self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
        {
            Some(e) => Err(anyhow!("{e}")),
            None => Ok(()),
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        // Dropping the runtimes cancels the clients before the bed (and its etcd) goes.
        self.rts.clear();
    }
}

struct FlannelNode {
    endpoint: String,
    key: String,
    value: String,
    ttl: i64,
    renew: Option<Duration>,
}

impl FlannelNode {
    async fn run(self, ready: Sender<()>) -> Result<(), etcd_client::Error> {
        let mut c = Client::connect([self.endpoint.clone()], None).await?;
        // Start-up: the config, then getSubnets (one TimeToLive per key).
        c.get(CONFIG_KEY, None).await?;
        let listing = c
            .get(SUBNETS, Some(GetOptions::new().with_prefix()))
            .await?;
        for kv in listing.kvs() {
            let _ = c.lease_time_to_live(kv.lease(), None).await;
        }
        let rev = listing.header().map(|h| h.revision()).unwrap_or(0);
        // createSubnet: Grant, then Put only if the key does not exist.
        let lease = c.lease_grant(self.ttl, None).await?;
        c.txn(
            Txn::new()
                .when([Compare::version(self.key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    self.key.clone(),
                    self.value.clone(),
                    Some(PutOptions::new().with_lease(lease.id())),
                )]),
        )
        .await?;
        // WatchLeases (the prefix) and WatchLease (our key): one gRPC stream, two watchers.
        let mut watch = c
            .watch(
                SUBNETS,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(rev + 1),
                ),
            )
            .await?;
        watch
            .watch(
                self.key.clone(),
                Some(WatchOptions::new().with_start_revision(rev + 1)),
            )
            .await?;
        let mut ttl_client = c.clone();
        let watching = async move {
            let mut created = 0;
            while let Some(resp) = watch.message().await? {
                if resp.created() {
                    created += 1;
                    if created == 2 {
                        let _ = ready.send(());
                    }
                }
                // parseSubnetWatchResponse: every PUT event costs a TimeToLive RPC.
                for ev in resp.events() {
                    if ev.event_type() == EventType::Put
                        && let Some(kv) = ev.kv()
                    {
                        ttl_client.lease_time_to_live(kv.lease(), None).await?;
                    }
                }
            }
            Ok::<(), etcd_client::Error>(())
        };
        let (key, value, ttl) = (self.key, self.value, self.ttl);
        let renewing = async move {
            let Some(period) = self.renew else {
                return std::future::pending::<Result<(), etcd_client::Error>>().await;
            };
            loop {
                tokio::time::sleep(period).await;
                // updateSubnet: a new lease and a plain Put; the old lease is not revoked.
                let l = c.lease_grant(ttl, None).await?;
                c.put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(l.id())),
                )
                .await?;
            }
        };
        tokio::try_join!(watching, renewing).map(drop)
    }
}

/// One of the four beds of a node count.
struct Bed {
    tb: Testbed,
    weftd: Vec<Pid>,
    replay: Option<Replay>,
    before: Scrape,
    after: Scrape,
    window: Duration,
    end: End,
}

impl Bed {
    fn weft(label: &str, n: usize, bins: &Bins, ttl: i64) -> Result<Bed> {
        let mut tb = cluster::bed(label, n, 9001, CONFIG)?;
        let extra = [
            format!("--subnet-lease-ttl={ttl}"),
            format!("--subnet-lease-renew-margin={MARGIN_MIN}"),
        ];
        let extra: &[String] = if ttl == DAY { &[] } else { &extra };
        let mut weftd = Vec::with_capacity(n);
        for i in 0..n {
            weftd.push(cluster::start_weftd_with(&mut tb, bins, i, extra)?);
        }
        Ok(Bed::new(tb, weftd, None))
    }

    fn flannel(label: &str, n: usize, ttl: i64) -> Result<Bed> {
        let tb = cluster::bed(label, n, 9001, CONFIG)?;
        let renew = (ttl != DAY).then(|| renew_period(ttl));
        let replay = Replay::start(&tb, ttl, renew)?;
        Ok(Bed::new(tb, Vec::new(), Some(replay)))
    }

    fn new(tb: Testbed, weftd: Vec<Pid>, replay: Option<Replay>) -> Bed {
        Bed {
            tb,
            weftd,
            replay,
            before: Scrape::default(),
            after: Scrape::default(),
            window: Duration::ZERO,
            end: End::default(),
        }
    }

    fn wait_ready(&self) -> Result<()> {
        for i in 0..self.weftd.len() {
            cluster::wait_ready(&self.tb, i, Duration::from_secs(60))?;
        }
        Ok(())
    }

    fn scrape(&self) -> Result<Scrape> {
        etcdmetrics::scrape(&self.tb.node(0).ns, ETCD_IP, ETCD_CLIENT_PORT)
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(r) = &self.replay {
            r.check()?;
        }
        for (i, pid) in self.weftd.clone().into_iter().enumerate() {
            if !self.tb.is_running(pid) {
                bail!(
                    "weftd on node {i} exited during the window; its log:\n{}",
                    cluster::log(&self.tb, i)
                );
            }
        }
        let (leases, orphans, subnet_keys) =
            leases_at_end(&self.tb.node(0).ns, &self.tb.etcd_endpoint())?;
        self.end = End {
            watchers: self.after.sum("etcd_debugging_mvcc_watcher_total", &[]),
            watch_streams: self
                .after
                .sum("etcd_debugging_mvcc_watch_stream_total", &[]),
            leases,
            orphans,
            subnet_keys,
        };
        let n = self.tb.nodes().len();
        if subnet_keys != n {
            bail!("{n} nodes but {subnet_keys} subnet keys in etcd at the end of the window");
        }
        Ok(())
    }

    fn counts(&self) -> Counts {
        counts(&self.before, &self.after)
    }
}

fn fmt_rate(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() < 0.1 {
        format!("{v:.3}")
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

pub fn run(bins: &Bins, opts: &Opts) -> Result<Table> {
    let period = renew_period(opts.ttl);
    let prod_period_h = (DAY - MARGIN_DEFAULT_MIN * 60) as f64 / 3600.0;
    let mut t = Table::new(
        &format!(
            "etcd-load: requests, raft proposals, watchers and leases per node, counted by etcd's /metrics over a {} s window",
            opts.secs
        ),
        "flannel's etcd traffic replayed by bare etcd clients (one per node, in the node's namespace) against another etcd in the same run: getSubnets with a TimeToLive per key, Grant + guarded create, one watch stream with a prefix watch and a watch of its own key, a TimeToLive per PUT event, and renewal by a new Grant + Put (the old lease left to expire)",
        &[
            "nodes",
            "metric",
            "weft",
            "floor",
            "ratio",
            "flannel, published",
            "goal",
            "met",
        ],
    );
    let mut etcd_version = String::new();
    for &n in &opts.nodes {
        let label = |what: &str| format!("bench-etcdload-{n}-{what}");
        let mut beds = [
            Bed::weft(&label("ws"), n, bins, DAY)?,
            Bed::weft(&label("wr"), n, bins, opts.ttl)?,
            Bed::flannel(&label("fs"), n, DAY)?,
            Bed::flannel(&label("fr"), n, opts.ttl)?,
        ];
        for b in &beds {
            b.wait_ready()?;
        }
        std::thread::sleep(SETTLE);
        let mut started = Vec::with_capacity(beds.len());
        for b in beds.iter_mut() {
            b.before = b.scrape()?;
            started.push(Instant::now());
        }
        std::thread::sleep(Duration::from_secs(opts.secs));
        for (b, t0) in beds.iter_mut().zip(&started) {
            b.after = b.scrape()?;
            b.window = t0.elapsed();
        }
        for b in beds.iter_mut() {
            b.finish()?;
        }
        let [ws, wr, fs, fr] = &beds;
        etcd_version = ws
            .after
            .label("etcd_server_version", "server_version")
            .unwrap_or_else(|| "version unknown".into());
        let (cws, cwr, cfs, cfr) = (ws.counts(), wr.counts(), fs.counts(), fr.counts());
        let nf = n as f64;
        let hourly = |v: f64, b: &Bed| v / nf * 3600.0 / b.window.as_secs_f64();
        // Renewals in the window: weftd opens one LeaseKeepAlive stream per renewal (etcd's
        // lease_renewed counter counts keep-alive messages, see the note); the replay grants
        // one lease per renewal.
        let (wren, fren) = (cwr.keepalive_streams, cfr.granted);
        if wren < nf || fren < nf {
            bail!(
                "too few renewals in the {} s window ({wren} weft, {fren} replayed for {n} nodes): use a longer --etcd-load-secs or a shorter --etcd-load-ttl",
                opts.secs
            );
        }
        let mut row =
            |metric: String, w: f64, f: f64, published: &str, goal: &str, ok: Option<bool>| {
                t.row(vec![
                    n.to_string(),
                    metric,
                    fmt_rate(w),
                    fmt_rate(f),
                    ratio(w, f),
                    published.into(),
                    goal.into(),
                    ok.map(met).unwrap_or_default(),
                ]);
            };
        let steady: [CountRow; 4] = [
            (
                "steady (24 h lease, no renewal in the window): writes per node per hour (Put, Txn, DeleteRange, LeaseGrant, LeaseRevoke)",
                |c| c.writes,
                "0 between renewals",
            ),
            (
                "steady: reads per node per hour (Range, LeaseTimeToLive, LeaseLeases)",
                |c| c.reads,
                "0 between renewals",
            ),
            (
                "steady: LeaseKeepAlive messages per node per hour",
                |c| c.keepalive_msgs,
                "0 (no keep-alive)",
            ),
            (
                "steady: raft proposals committed per node per hour",
                |c| c.proposals,
                "",
            ),
        ];
        for (metric, of, published) in steady {
            row(
                metric.into(),
                hourly(of(&cws), ws),
                hourly(of(&cfs), fs),
                published,
                "",
                None,
            );
        }
        row(
            "watchers per node (etcd_debugging_mvcc_watcher_total ÷ nodes)".into(),
            ws.end.watchers / nf,
            fs.end.watchers / nf,
            "2 (subnets prefix + own key)",
            "",
            None,
        );
        row(
            "watch streams per node (etcd_debugging_mvcc_watch_stream_total ÷ nodes)".into(),
            ws.end.watch_streams / nf,
            fs.end.watch_streams / nf,
            "",
            "",
            None,
        );
        row(
            "steady: gRPC bytes received + sent by etcd per node per hour (watch events, keep-alive replies; HTTP/2 pings not included)".into(),
            hourly(cws.bytes_in + cws.bytes_out, ws),
            hourly(cfs.bytes_in + cfs.bytes_out, fs),
            "",
            "",
            None,
        );
        row(
            format!(
                "renewing (lease TTL {} s, renewed every {} s): renewals per node in the window (weft: keep-alive streams opened; floor: lease grants)",
                opts.ttl,
                period.as_secs()
            ),
            wren / nf,
            fren / nf,
            "",
            "",
            None,
        );
        let w_wr = cwr.writes / wren;
        row(
            "per renewal: writes".into(),
            w_wr,
            cfr.writes / fren,
            "2 (Grant + Put)",
            "≤ 2 (flannel's)",
            Some(w_wr <= 2.0),
        );
        row(
            "per renewal: reads (all nodes' TimeToLive calls on the watch event included)".into(),
            cwr.reads / wren,
            cfr.reads / fren,
            &format!("{} (N + 1 TimeToLive)", n + 1),
            "",
            None,
        );
        let per_renewal: [CountRow; 3] = [
            (
                "per renewal: LeaseKeepAlive messages",
                |c| c.keepalive_msgs,
                "0",
            ),
            (
                "per renewal: raft proposals committed (lease expiries included)",
                |c| c.proposals,
                "2, + 1 when the old lease expires",
            ),
            (
                "per renewal: lease grants / revocations and expiries (etcd_debugging_lease_*)",
                |c| c.granted + c.revoked,
                "1 grant + 1 expiry",
            ),
        ];
        for (metric, of, published) in per_renewal {
            row(
                metric.into(),
                of(&cwr) / wren,
                of(&cfr) / fren,
                published,
                "",
                None,
            );
        }
        row(
            format!(
                "renewing: all requests per node per hour at a renewal every {} s",
                period.as_secs()
            ),
            hourly(
                cwr.writes + cwr.reads + cwr.keepalive_msgs + cwr.watch_msgs,
                wr,
            ),
            hourly(
                cfr.writes + cfr.reads + cfr.keepalive_msgs + cfr.watch_msgs,
                fr,
            ),
            "",
            "",
            None,
        );
        // At the defaults: a 24 h lease renewed 60 min before it expires, i.e. every 23 h.
        let at_defaults = |steady_h: f64, per_renewal: f64| steady_h + per_renewal / prod_period_h;
        row(
            format!(
                "at the defaults (24 h lease renewed every {prod_period_h:.0} h): writes per node per hour"
            ),
            at_defaults(hourly(cws.writes, ws), cwr.writes / wren),
            at_defaults(hourly(cfs.writes, fs), cfr.writes / fren),
            "0.087 (2 per 23 h)",
            "",
            None,
        );
        row(
            format!("at the defaults: reads + keep-alives per node per hour ({n} nodes)"),
            at_defaults(
                hourly(cws.reads + cws.keepalive_msgs, ws),
                (cwr.reads + cwr.keepalive_msgs) / wren,
            ),
            at_defaults(
                hourly(cfs.reads + cfs.keepalive_msgs, fs),
                (cfr.reads + cfr.keepalive_msgs) / fren,
            ),
            &fmt_rate((n + 1) as f64 / prod_period_h),
            "",
            None,
        );
        row(
            "orphan etcd leases at the end (listed by etcd, no key attached), renewing beds".into(),
            wr.end.orphans as f64,
            fr.end.orphans as f64,
            "1 per renewal, for the renew margin (60 min)",
            "0",
            Some(wr.end.orphans == 0 && ws.end.orphans == 0),
        );
        t.note(format!(
            "{n} nodes, messages etcd received by gRPC method in the window: weft steady: {}; weft renewing: {}; replay steady: {}; replay renewing: {}. For weft renewing etcd_debugging_lease_renewed_total rose by {:.0} and {:.0} LeaseKeepAlive streams were opened.",
            by_method(&ws.before, &ws.after),
            by_method(&wr.before, &wr.after),
            by_method(&fs.before, &fs.after),
            by_method(&fr.before, &fr.after),
            cwr.renewed,
            cwr.keepalive_streams,
        ));
        t.note(format!(
            "{n} nodes, etcd leases alive at the end / subnet keys: weft steady {} / {}, weft renewing {} / {}, replay steady {} / {}, replay renewing {} / {}.",
            ws.end.leases,
            ws.end.subnet_keys,
            wr.end.leases,
            wr.end.subnet_keys,
            fs.end.leases,
            fs.end.subnet_keys,
            fr.end.leases,
            fr.end.subnet_keys,
        ));
        drop(beds);
    }
    t.note("Counted by etcd (grpc_server_msg_received_total by grpc_method, etcd_server_proposals_committed_total, etcd_debugging_lease_{granted,revoked,renewed}_total, etcd_debugging_mvcc_watcher_total / watch_stream_total, etcd_network_client_grpc_{received,sent}_bytes_total), scraped from each bed's etcd before and after the window; nothing else talks to those etcds in the window. Per node per hour = count ÷ nodes × 3600 ÷ window.");
    t.note(format!("weftd renews the etcd lease it already holds by keep-alive, on a new LeaseKeepAlive stream per renewal. That stream carries 2 messages: etcd-client's `lease_keep_alive` sends one and waits for its answer, then weft-store's `renew` sends a second to read the TTL; one would do. In this etcd ({etcd_version}, lease checkpointing off) the leader answers a keep-alive from memory: no raft proposal (see the proposals row), no disk write, and no watch event, so no other node hears of it. flannel grants a new lease and puts the key again (2 raft proposals, and a PUT event that makes every node call TimeToLive); the old lease expires at the end of its TTL, which is one more proposal, made by etcd."));
    t.note(format!(
        "Published baseline: flannel's code (flannel-compat.md 1.4, perf-anchors.md 1.5): 2 writes per node per renewal, one renewal per 23 h = 0.087 writes per node per hour, N + 1 TimeToLive calls per renewal, 2 watchers per node. \"At the defaults\" = steady rate + per-renewal cost ÷ {prod_period_h:.0} h, from this run's figures."
    ));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_ttl_minus_the_capped_margin() {
        assert_eq!(renew_period(20), Duration::from_secs(10));
        assert_eq!(renew_period(6), Duration::from_secs(3));
        assert_eq!(renew_period(600), Duration::from_secs(540));
        assert_eq!(renew_period(DAY), Duration::from_secs(DAY as u64 - 60));
    }

    #[test]
    fn rates_are_readable() {
        assert_eq!(fmt_rate(0.0), "0");
        assert_eq!(fmt_rate(0.0869), "0.087");
        assert_eq!(fmt_rate(2.0), "2.00");
        assert_eq!(fmt_rate(1234.4), "1234");
    }
}
