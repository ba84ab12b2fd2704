//! Readiness, metrics and the /healthz, /readyz, /metrics server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

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
    pub ready: Gauge,
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
        let ready = Gauge::default();
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
            "ready",
            "1 once subnet.env is written and the data plane is in place",
            ready.clone(),
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
            ready,
            errors,
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&vec![("kind".to_string(), kind.label().to_string())])
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

/// State shared between the daemon's tasks and the health server.
pub struct Health {
    pub metrics: Metrics,
    ready: AtomicBool,
    status: Mutex<String>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
            status: Mutex::new("starting".into()),
        })
    }

    /// Not ready, with the reason /readyz reports.
    pub fn not_ready(&self, why: impl Into<String>) {
        self.ready.store(false, std::sync::atomic::Ordering::SeqCst);
        self.metrics.ready.set(0);
        if let Ok(mut s) = self.status.lock() {
            *s = why.into();
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        self.metrics.ready.set(1);
        if let Ok(mut s) = self.status.lock() {
            *s = "ready".into();
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn status(&self) -> String {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn healthz() -> &'static str {
    "weftd is running\n"
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    if h.is_ready() {
        (StatusCode::OK, "weftd is ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("weftd is not ready yet: {}\n", h.status()),
        )
    }
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

/// Binds the health server; the returned future serves until the process ends.
pub async fn bind(
    addr: SocketAddr,
    health: Arc<Health>,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(async move { axum::serve(listener, app).await })
}
