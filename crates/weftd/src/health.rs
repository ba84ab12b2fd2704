//! Readiness, metrics and the /healthz, /readyz, /metrics server.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use weft_core::status::PeersView;

/// Error kinds counted in `weft_errors_total{kind}`.
#[derive(Debug, Clone, Copy)]
pub enum ErrorKind {
    Etcd,
    Config,
    Lease,
    Netlink,
    Iptables,
    SubnetFile,
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            ErrorKind::Etcd => "etcd",
            ErrorKind::Config => "config",
            ErrorKind::Lease => "lease",
            ErrorKind::Netlink => "netlink",
            ErrorKind::Iptables => "iptables",
            ErrorKind::SubnetFile => "subnet_file",
        }
    }
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    pub lease_held: Gauge,
    pub lease_expiry: Gauge<f64, AtomicU64>,
    pub peers_known: Gauge,
    pub peers_programmed: Gauge,
    pub reconcile_seconds: Histogram,
    pub reconcile_changes: Counter,
    pub kernel_reads: Counter,
    pub kernel_drift: Counter,
    pub watch_reconnects: Counter,
    pub lease_keys_refused: Counter,
    lease_relists: Family<Vec<(String, String)>, Counter>,
    pub lease_relist_checks: Counter,
    pub lease_relist_repairs: Counter,
    pub ready: Gauge,
    /// 1 per readiness condition that is met (`weft_ready_condition{condition}`).
    pub condition: Family<Vec<(String, String)>, Gauge>,
    /// /healthz answers that found a task wedged.
    pub wedged: Counter,
    /// Another node published our VTEP MAC, so this node took a new one.
    pub vtep_mac_conflicts: Counter,
    /// The persisted VTEP MAC was not used, by reason (`weft_vtep_mac_replaced{reason}`).
    pub vtep_mac_replaced: Family<Vec<(String, String)>, Counter>,
    /// Times subnet.env was withdrawn because this node lost its subnet.
    pub subnet_lost: Counter,
    /// iptables-restore runs that gave up waiting for the xtables lock.
    pub iptables_lock_busy: Counter,
    /// 1 for the iptables backend weftd writes with (`weft_iptables_backend{backend}`).
    pub iptables_backend: Family<Vec<(String, String)>, Gauge>,
    errors: Family<Vec<(String, String)>, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("weft");
        let lease_held = Gauge::default();
        let lease_expiry = Gauge::<f64, AtomicU64>::default();
        let peers_known = Gauge::default();
        let peers_programmed = Gauge::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        let reconcile_changes = Counter::default();
        let kernel_reads = Counter::default();
        let kernel_drift = Counter::default();
        let watch_reconnects = Counter::default();
        let lease_keys_refused = Counter::default();
        let lease_relists = Family::<Vec<(String, String)>, Counter>::default();
        let lease_relist_checks = Counter::default();
        let lease_relist_repairs = Counter::default();
        let ready = Gauge::default();
        let condition = Family::<Vec<(String, String)>, Gauge>::default();
        let wedged = Counter::default();
        let vtep_mac_conflicts = Counter::default();
        let vtep_mac_replaced = Family::<Vec<(String, String)>, Counter>::default();
        let subnet_lost = Counter::default();
        let iptables_lock_busy = Counter::default();
        let iptables_backend = Family::<Vec<(String, String)>, Gauge>::default();
        let errors = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "lease_held",
            "1 while this node holds a subnet lease",
            lease_held.clone(),
        );
        registry.register(
            "lease_expiry_timestamp_seconds",
            "Unix time at which the held lease expires unless renewed (0 for a reservation)",
            lease_expiry.clone(),
        );
        registry.register(
            "peers_known",
            "Remote VXLAN peers found in etcd",
            peers_known.clone(),
        );
        registry.register(
            "peers_programmed",
            "Remote peers whose neighbour, FDB entry and route are in the kernel",
            peers_programmed.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile pass: diff the leases against the device (read in full, or as last known) and apply the difference",
            reconcile_seconds.clone(),
        );
        registry.register(
            "reconcile_changes",
            "Kernel entries added, replaced or deleted by the reconciler",
            reconcile_changes.clone(),
        );
        registry.register(
            "kernel_reads",
            "Full reads of the VXLAN device's neighbours, FDB entries and routes (start-up, periodic check, after drift); lease changes are applied without one",
            kernel_reads.clone(),
        );
        registry.register(
            "kernel_drift",
            "Changes on the VXLAN device that weftd did not make (each triggers a full read and repair)",
            kernel_drift.clone(),
        );
        registry.register(
            "etcd_watch_reconnects",
            "Times the lease watch was re-established (etcd restart, network loss, compaction)",
            watch_reconnects.clone(),
        );
        registry.register(
            "lease_keys_refused",
            "Keys under <prefix>/subnets/ refused as peers, once per key and problem: an alias or malformed key, a value that does not parse or is over 64 KiB, a subnet overlapping ours",
            lease_keys_refused.clone(),
        );
        registry.register(
            "lease_relists",
            "Full paged listings of the leases after start-up, by reason: compacted (the watch's resume revision was compacted), too_large (a watch response over gRPC's message limit), repair (the anti-entropy check found a difference)",
            lease_relists.clone(),
        );
        registry.register(
            "lease_relist_checks",
            "Anti-entropy checks: a keys-only paged listing at the watch's revision compared with what the watch delivered",
            lease_relist_checks.clone(),
        );
        registry.register(
            "lease_relist_repairs",
            "Keys a re-list found missing, extra or stale in what the watch had delivered (0 unless events were missed)",
            lease_relist_repairs.clone(),
        );
        registry.register(
            "ready",
            "1 while every /readyz condition is met (lease held and in subnet.env, device and peers programmed, rules in place, watch synced)",
            ready.clone(),
        );
        registry.register(
            "ready_condition",
            "1 per /readyz condition (lease, dataplane, rules, watch) that is met",
            condition.clone(),
        );
        registry.register(
            "liveness_wedged",
            "/healthz answers that found the reconciler or the lease watch wedged past its bound",
            wedged.clone(),
        );
        registry.register(
            "vtep_mac_conflicts",
            "Times another node published this node's VTEP MAC, so this node took a new one",
            vtep_mac_conflicts.clone(),
        );
        registry.register(
            "vtep_mac_replaced",
            "Times the persisted VTEP MAC was not reused, by reason (other_node: the file holds only other nodes' MACs; invalid: zero, multicast or unparsable; unreadable)",
            vtep_mac_replaced.clone(),
        );
        registry.register(
            "subnet_lost",
            "Times subnet.env was withdrawn because this node lost its subnet (taken by another node, expired, deleted)",
            subnet_lost.clone(),
        );
        registry.register(
            "iptables_lock_busy",
            "iptables-restore runs that gave up after waiting 5 s for the xtables lock held by another process (each is retried at once; /readyz names the holder)",
            iptables_lock_busy.clone(),
        );
        registry.register(
            "iptables_backend",
            "1 for the iptables backend weftd writes its rules with (legacy, nft, or installed: whatever `iptables` is), as --iptables-backend chose it",
            iptables_backend.clone(),
        );
        registry.register("errors", "Errors by kind", errors.clone());
        Metrics {
            registry,
            lease_held,
            lease_expiry,
            peers_known,
            peers_programmed,
            reconcile_seconds,
            reconcile_changes,
            kernel_reads,
            kernel_drift,
            watch_reconnects,
            lease_keys_refused,
            lease_relists,
            lease_relist_checks,
            lease_relist_repairs,
            ready,
            condition,
            wedged,
            vtep_mac_conflicts,
            vtep_mac_replaced,
            subnet_lost,
            iptables_lock_busy,
            iptables_backend,
            errors,
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&vec![("kind".to_string(), kind.label().to_string())])
            .inc();
    }

    pub fn mac_replaced(&self, reason: &str) {
        self.vtep_mac_replaced
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// Counts a full re-list of the leases (`compacted`, `too_large` or `repair`).
    pub fn relisted(&self, reason: &'static str) {
        self.lease_relists
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

// The readiness conditions and their judging are weft-core's (pure).
pub use weft_core::readiness::{Condition, Readiness};

/// How long one unit of work of a watched task (a reconcile pass, an etcd request of the
/// watch, a timer that should have fired) may overrun before /healthz calls the daemon
/// wedged. Every etcd request has a 5 s timeout and a reconcile pass of thousands of peers
/// takes well under a second, so only a task that stopped making progress gets here.
pub const WEDGE_BOUND: Duration = Duration::from_secs(60);

/// What a watched task promised last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    /// Busy with `doing` since `since`: the next beat is due by `due`.
    Due {
        doing: &'static str,
        since: Instant,
        due: Instant,
    },
    /// Waiting for something that may legitimately take forever (lease events in a quiet
    /// cluster: a dead etcd connection is ended by the HTTP/2 keep-alive within seconds, which
    /// is a beat).
    Waiting { on: &'static str },
    /// The task ended (returned or panicked): nothing will ever beat again.
    Stopped,
}

/// The liveness heartbeat of one long-running task. The task says what it starts and how long
/// it may take ([`Heartbeat::busy`]) or that it waits for an event with no deadline
/// ([`Heartbeat::waiting`]); /healthz fails once a promise is overdue, or once the task has
/// ended. A task waiting for etcd to come back keeps promising short retries, so a daemon
/// that waits for etcd stays healthy (and not ready); a task stuck on an await that never
/// returns stops promising and is caught.
pub struct Heartbeat {
    name: &'static str,
    beat: Mutex<Beat>,
}

impl Heartbeat {
    fn new(name: &'static str, now: Instant) -> Heartbeat {
        Heartbeat {
            name,
            beat: Mutex::new(Beat::Due {
                doing: "starting",
                since: now,
                due: now + WEDGE_BOUND,
            }),
        }
    }

    fn set(&self, b: Beat) {
        *self.beat.lock().unwrap_or_else(|p| p.into_inner()) = b;
    }

    /// Starts `doing`, which ends (with another beat) within `within` plus [`WEDGE_BOUND`].
    pub fn busy(&self, doing: &'static str, within: Duration) {
        self.busy_at(Instant::now(), doing, within);
    }

    pub fn busy_at(&self, now: Instant, doing: &'static str, within: Duration) {
        self.set(Beat::Due {
            doing,
            since: now,
            due: now + within + WEDGE_BOUND,
        });
    }

    /// Waits for `on`, which may take forever without anything being wrong.
    pub fn waiting(&self, on: &'static str) {
        self.set(Beat::Waiting { on });
    }

    /// Marks the task as ended.
    pub fn stopped(&self) {
        self.set(Beat::Stopped);
    }

    /// What the task is doing at `now` and since when, for /healthz.
    pub fn status_at(&self, now: Instant) -> String {
        match *self.beat.lock().unwrap_or_else(|p| p.into_inner()) {
            Beat::Due { doing, since, due } => format!(
                "the {}: {doing} for {} s (bound {} s)",
                self.name,
                now.saturating_duration_since(since).as_secs(),
                due.saturating_duration_since(since).as_secs()
            ),
            Beat::Waiting { on } => format!("the {}: waiting for {on} (no bound)", self.name),
            Beat::Stopped => format!("the {}: stopped", self.name),
        }
    }

    /// `Err(why)` when the task is wedged at `now`.
    pub fn check_at(&self, now: Instant) -> Result<(), String> {
        let beat = *self.beat.lock().unwrap_or_else(|p| p.into_inner());
        match beat {
            Beat::Due { doing, since, due } if now > due => Err(format!(
                "the {} has been {doing} for {} s, longer than its bound of {} s",
                self.name,
                now.saturating_duration_since(since).as_secs(),
                due.saturating_duration_since(since).as_secs()
            )),
            Beat::Due { .. } | Beat::Waiting { .. } => Ok(()),
            Beat::Stopped => Err(format!("the {} has stopped", self.name)),
        }
    }
}

/// Held by a watched task: marks its heartbeat stopped when the task ends in any way (return,
/// panic, abort), so /healthz never reports a dead task as alive.
pub struct BeatGuard(pub Arc<Heartbeat>);

impl Drop for BeatGuard {
    fn drop(&mut self) {
        self.0.stopped();
    }
}

impl std::ops::Deref for BeatGuard {
    type Target = Heartbeat;
    fn deref(&self) -> &Heartbeat {
        &self.0
    }
}

/// State shared between the daemon's tasks and the health server.
pub struct Health {
    pub metrics: Metrics,
    readiness: Mutex<Readiness>,
    /// What the reconciler has programmed, for /peers.
    peers: Mutex<PeersView>,
    heartbeats: Mutex<Vec<Arc<Heartbeat>>>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            metrics: Metrics::new(),
            readiness: Mutex::new(Readiness::default()),
            peers: Mutex::new(PeersView::default()),
            heartbeats: Mutex::new(Vec::new()),
        })
    }

    fn update(&self, f: impl FnOnce(&mut Readiness)) {
        let mut r = self.readiness.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r);
        self.metrics.ready.set(i64::from(r.is_ready()));
        for c in Condition::ALL {
            self.metrics
                .condition
                .get_or_create(&vec![("condition".to_string(), c.name().to_string())])
                .set(i64::from(r.is_met(c)));
        }
    }

    /// Condition `c` is not met, for the reason `why` (shown by /readyz).
    pub fn unmet(&self, c: Condition, why: impl Into<String>) {
        let why = why.into();
        self.update(|r| r.set(c, Some(why)));
    }

    /// Condition `c` is met.
    pub fn met(&self, c: Condition) {
        self.update(|r| r.set(c, None));
    }

    pub fn is_met(&self, c: Condition) -> bool {
        self.readiness().is_met(c)
    }

    #[cfg(test)]
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ready()
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Updates what /peers serves (called by the reconciler with its model of the device).
    pub fn peers(&self, f: impl FnOnce(&mut PeersView)) {
        f(&mut self.peers.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The /peers body.
    pub fn render_peers(&self) -> String {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .render()
    }

    /// A new heartbeat that /healthz checks from now on; `name` as in "the reconciler".
    pub fn heartbeat(&self, name: &'static str) -> BeatGuard {
        let hb = Arc::new(Heartbeat::new(name, Instant::now()));
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hb.clone());
        BeatGuard(hb)
    }

    /// One line per watched task: what it is doing.
    pub fn heartbeat_status_at(&self, now: Instant) -> String {
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|h| h.status_at(now) + "\n")
            .collect()
    }

    /// `Err(reasons)` when a watched task is wedged at `now`.
    pub fn liveness_at(&self, now: Instant) -> Result<(), Vec<String>> {
        let problems: Vec<String> = self
            .heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|h| h.check_at(now).err())
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

async fn healthz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let now = Instant::now();
    match h.liveness_at(now) {
        Ok(()) => (
            StatusCode::OK,
            format!("weftd is running\n{}", h.heartbeat_status_at(now)),
        ),
        Err(problems) => {
            h.metrics.wedged.inc();
            let mut body = "weftd is wedged (restart it):\n".to_string();
            for p in problems {
                tracing::error!(problem = %p, "liveness check failed");
                body.push_str(&p);
                body.push('\n');
            }
            (StatusCode::SERVICE_UNAVAILABLE, body)
        }
    }
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let r = h.readiness();
    let code = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, r.render())
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.render(),
    )
}

async fn peers(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        h.render_peers(),
    )
}

/// Binds the health server; the returned future serves until the process ends.
pub async fn bind(
    addr: SocketAddr,
    health: Arc<Health>,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/peers", get(peers))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(async move { axum::serve(listener, app).await })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_is_met_and_says_why_not() {
        let h = Health::new();
        assert!(!h.is_ready());
        for c in Condition::ALL {
            h.met(c);
        }
        assert!(h.is_ready());
        assert_eq!(h.readiness().render(), "weftd is ready\n");
        assert!(h.metrics.render().contains("weft_ready 1"));
        h.unmet(
            Condition::Rules,
            "waiting for the xtables lock held by PID 12",
        );
        assert!(!h.is_ready());
        let body = h.readiness().render();
        assert!(
            body.starts_with(
                "weftd is not ready yet: waiting for the xtables lock held by PID 12\n"
            ),
            "{body}"
        );
        assert!(body.contains("lease: ok\n"), "{body}");
        assert!(
            body.contains("rules: waiting for the xtables lock"),
            "{body}"
        );
        let m = h.metrics.render();
        assert!(m.contains("weft_ready 0"), "{m}");
        assert!(
            m.contains(r#"weft_ready_condition{condition="rules"} 0"#),
            "{m}"
        );
        assert!(
            m.contains(r#"weft_ready_condition{condition="lease"} 1"#),
            "{m}"
        );
    }

    #[test]
    fn peers_serves_what_the_reconciler_published() {
        use weft_core::dataplane::{Programmed, desired_state};
        use weft_core::peer::Peer;
        let h = Health::new();
        assert_eq!(h.render_peers(), r#"{"lease":null,"updated":0,"peers":[]}"#);
        let peer = Peer {
            subnet: "10.244.2.0/24".parse().unwrap(),
            public_ip: "192.168.0.2".parse().unwrap(),
            vtep_mac: weft_core::mac::MacAddr::from([0x0a, 0, 0, 0, 0, 2]),
            direct: false,
        };
        let model = Programmed::from_state(&desired_state(std::slice::from_ref(&peer)));
        h.peers(|v| {
            v.set_lease(
                "10.244.1.0/24".parse().unwrap(),
                "192.168.0.1".parse().unwrap(),
                weft_core::mac::MacAddr::from([0x0a, 0, 0, 0, 0, 1]),
                None,
                7,
            );
            v.update(&[peer], &model, 7);
        });
        let body = h.render_peers();
        let doc: weft_core::status::PeersDoc = serde_json::from_str(&body).unwrap();
        assert_eq!(doc.lease.unwrap().subnet.to_string(), "10.244.1.0/24");
        assert_eq!(doc.peers.len(), 1);
        assert!(doc.peers[0].programmed, "{body}");
        assert_eq!(doc.peers[0].since, Some(7));
    }

    #[test]
    fn heartbeat_is_overdue_only_past_its_promise_plus_the_bound() {
        let t0 = Instant::now();
        let hb = Heartbeat::new("reconciler", t0);
        // A new task has the bound to make its first promise.
        assert!(hb.check_at(t0 + WEDGE_BOUND).is_ok());
        assert!(
            hb.check_at(t0 + WEDGE_BOUND + Duration::from_secs(1))
                .is_err()
        );
        // Idle until the next periodic pass in 60 s: fine up to 60 s + the bound.
        hb.busy_at(t0, "waiting for the next pass", Duration::from_secs(60));
        assert!(hb.check_at(t0 + Duration::from_secs(119)).is_ok());
        assert!(hb.check_at(t0 + Duration::from_secs(120)).is_ok());
        let err = hb.check_at(t0 + Duration::from_secs(121)).unwrap_err();
        assert!(err.contains("reconciler"), "{err}");
        assert!(err.contains("waiting for the next pass for 121 s"), "{err}");
        assert!(err.contains("bound of 120 s"), "{err}");
        assert_eq!(
            hb.status_at(t0 + Duration::from_secs(5)),
            "the reconciler: waiting for the next pass for 5 s (bound 120 s)"
        );
        // Each beat renews the promise: a task that keeps beating is never wedged.
        let mut now = t0;
        for _ in 0..1000 {
            now += Duration::from_secs(30);
            hb.busy_at(now, "running a reconcile pass", Duration::ZERO);
            assert!(hb.check_at(now + Duration::from_secs(59)).is_ok());
        }
    }

    #[test]
    fn waiting_without_deadline_is_alive_and_a_stopped_task_is_not() {
        let t0 = Instant::now();
        let hb = Arc::new(Heartbeat::new("lease watch", t0));
        hb.waiting("lease events");
        assert!(hb.check_at(t0 + Duration::from_secs(86400)).is_ok());
        {
            let _guard = BeatGuard(hb.clone());
        }
        let err = hb.check_at(t0).unwrap_err();
        assert_eq!(err, "the lease watch has stopped");
    }

    #[tokio::test]
    async fn the_probes_answer_503_with_the_reason() {
        let h = Health::new();
        let rec = h.heartbeat("reconciler");
        rec.busy("running a reconcile pass", Duration::ZERO);
        let status = |r: axum::response::Response| r.status();
        assert_eq!(
            status(healthz(State(h.clone())).await.into_response()),
            StatusCode::OK
        );
        // A pass that began longer ago than the bound and never ended.
        let Some(long_ago) = Instant::now().checked_sub(WEDGE_BOUND + Duration::from_secs(5))
        else {
            return; // the machine has been up for less than that: nothing to test with
        };
        rec.busy_at(long_ago, "running a reconcile pass", Duration::ZERO);
        let r = healthz(State(h.clone())).await.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            h.metrics
                .render()
                .lines()
                .find(|l| l.starts_with("weft_liveness_wedged_total")),
            Some("weft_liveness_wedged_total 1")
        );
        assert_eq!(
            status(readyz(State(h.clone())).await.into_response()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        for c in Condition::ALL {
            h.met(c);
        }
        assert_eq!(
            status(readyz(State(h.clone())).await.into_response()),
            StatusCode::OK
        );
    }

    #[test]
    fn liveness_fails_when_any_heartbeat_is_overdue() {
        let h = Health::new();
        let a = h.heartbeat("reconciler");
        let b = h.heartbeat("lease watch");
        let now = Instant::now();
        a.busy_at(now, "running a reconcile pass", Duration::ZERO);
        b.waiting("lease events");
        assert!(h.liveness_at(now + Duration::from_secs(30)).is_ok());
        let err = h.liveness_at(now + Duration::from_secs(61)).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].contains("the reconciler has been running a reconcile pass"),
            "{err:?}"
        );
        drop(b);
        assert_eq!(h.liveness_at(now).unwrap_err().len(), 1);
    }
}
