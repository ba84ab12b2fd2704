//! The daemon: acquire a lease, build the VXLAN device (none with host-gw), then keep the
//! kernel in step with etcd. Four tasks share one [`Shared`] state:
//! - the lease watch (list, then watch from revision + 1, resuming after the last delivered
//!   event; re-list on compaction or an oversized response; a periodic anti-entropy check),
//! - the reconciler (desired peers vs. what the kernel holds, minimal changes, also on a timer
//!   so that deleted routes or a deleted device come back within seconds),
//! - the lease keeper (renew in place; re-acquire if our key vanishes or is taken),
//! - the firewall keeper (one iptables-save per period; rewrite only on drift).
//!
//! Nothing is torn down on exit: a restarted weftd finds its device and entries already right
//! and changes nothing, so traffic that flows keeps flowing.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, error, info, warn};
use weft_core::agent;
use weft_core::alloc::{AcquireAction, Listing as KeySet, plan_acquire_listed};
use weft_core::config::{BackendConfig, NetworkConfig};
use weft_core::dataplane::Observed;
use weft_core::dataplane::{Owned, Programmed, diff};
use weft_core::lease::{LeaseAttrs, LeaseError, MAX_LEASE_BYTES};
use weft_core::lease_watch::Relist;
use weft_core::mac::MacAddr;
use weft_core::peer::{Reach, ReachMode};
use weft_core::rules::{Rule, forward_rules, masq_rules};
use weft_core::subnet::lease_key;
use weft_core::subnet_env::SubnetEnv;
use weft_core::vtep::{Fresh, MacChoice, NodeIdentity, fresh_mac};
use weft_net::iface::{self, ExtIface, IfaceRequest};
use weft_net::netlink::{ChangeMonitor, KernelChange};
use weft_net::{FirewallError, Iptables, Netlink, Nftables, VxlanSpec};
use weft_store::{HeldLease, LeaseEvent, RawLease, Store, StoreConfig, WatchBatch};

use crate::files;
use crate::flags::{Flags, IptablesBackend, Validated};
use crate::health::{self, Condition, ErrorKind, Health};
use crate::lease_exec::{LeaseExecutor, LeasePort, News};
use crate::peer_sync;
use crate::rules_sync;
use crate::watch_exec::{Failure, LeaseSink, LeaseSource, LeaseStream, WatchExecutor};
use weft_core::peers::{Entry, Notice, PeerTable, parse_entry};

/// How often the reconciler looks at the kernel even when nothing was announced. Changes to
/// the device are normally seen at once through netlink notifications; this is the safety net
/// (a full dump of thousands of entries is not free, so it stays rare).
const RESYNC: Duration = Duration::from_secs(60);
/// The same when netlink notifications are not available.
const RESYNC_UNANNOUNCED: Duration = Duration::from_secs(10);

/// A change to our own lease key seen by the watch (see [`News`]).
type OwnKey = News<RawLease>;

struct Shared {
    /// The next reconcile must re-read the device (drift was announced, notifications were
    /// lost, or an earlier pass failed).
    full_due: AtomicBool,
    /// Full passes asked for by other tasks that wait for the outcome (the number of kernel
    /// changes that failed).
    passes: mpsc::Sender<oneshot::Sender<Result<usize, String>>>,
    table: Mutex<PeerTable>,
    own: Mutex<HeldLease>,
    kick: Notify,
    health: Arc<Health>,
}

impl Shared {
    fn own(&self) -> HeldLease {
        *self.own.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn set_own(&self, l: HeldLease) {
        *self.own.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }
    fn table(&self) -> std::sync::MutexGuard<'_, PeerTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything fixed at start-up.
struct Node {
    flags: Flags,
    store: Store,
    nl: Netlink,
    fw: Iptables,
    cfg: NetworkConfig,
    network: Ipv4Net,
    ext: ExtIface,
    /// The VXLAN device as it should be (None with host-gw), with the MAC chosen at start.
    vxlan: Option<VxlanSpec>,
    /// How peers are reached.
    reach: ReachMode,
    /// FLANNEL_MTU: the VXLAN device's MTU, or the external interface's with host-gw.
    mtu: u32,
    random_fully: bool,
    /// The nftables mode's table writer (`EnableNFTables`); None in the iptables mode.
    nft: Option<Nftables>,
    ttl: i64,
    /// What identifies this node as the owner of its VTEP MAC (the MAC file's records).
    identity: NodeIdentity,
    mac_path: std::path::PathBuf,
    /// The VTEP MAC in use: the spec's until a conflict made a new one (zero with host-gw).
    vtep: Mutex<MacAddr>,
}

impl Node {
    fn mac(&self) -> MacAddr {
        *self.vtep.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device as it should be, with the VTEP MAC in use (None with host-gw).
    fn spec(&self) -> Option<VxlanSpec> {
        self.vxlan.as_ref().map(|spec| VxlanSpec {
            mac: self.mac(),
            ..spec.clone()
        })
    }

    /// The device's name (empty with host-gw), for messages.
    fn device_name(&self) -> &str {
        self.vxlan.as_ref().map_or("", |s| s.name.as_str())
    }
}

/// The MAC this node uses when it has to create its device: its own from the MAC file, the
/// old format's (adopted on upgrade), or a fresh one when the file holds only other nodes'
/// MACs (a shared or copied state dir) or an unusable one.
fn choose_mac(path: &std::path::Path, me: &NodeIdentity, health: &Health) -> MacAddr {
    let fresh = || MacAddr::random_local(&mut rand::rng());
    let file = match files::read_macs(path) {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "cannot read the VTEP MAC file; making a new MAC");
            health.metrics.mac_replaced("unreadable");
            return fresh();
        }
    };
    match file.choose(me) {
        MacChoice::Own(m) => m,
        MacChoice::Legacy(m) => {
            info!(file = %path.display(), mac = %m, "adopting the VTEP MAC of the old-format file; it is rewritten with this node's identity");
            m
        }
        MacChoice::Fresh(why) => {
            let mac = fresh();
            match &why {
                Fresh::NoRecord => {}
                Fresh::OtherNodes => {
                    warn!(file = %path.display(), %mac, "the VTEP MAC file holds only other nodes' MACs (a state dir shared by several nodes, or copied from another node or image); this node makes its own")
                }
                Fresh::Invalid(problem) => {
                    warn!(file = %path.display(), %problem, %mac, "the VTEP MAC file holds no usable MAC for this node; replacing it")
                }
            }
            if let Some(reason) = why.metric_reason() {
                health.metrics.mac_replaced(reason);
            }
            mac
        }
    }
}

fn persist_mac(path: &std::path::Path, device: &str, me: &NodeIdentity, mac: MacAddr) {
    if let Err(e) = files::remember_mac(path, device, me, mac) {
        warn!(error = %e, "cannot persist the VTEP MAC; it will change if the device is re-created");
    }
}

/// The other node whose lease publishes our VTEP MAC, if any, in a listing.
fn mac_holder<'a>(node: &Node, raws: &'a [RawLease]) -> Option<&'a RawLease> {
    node.vxlan.as_ref()?;
    let mine = node.mac();
    raws.iter().find(|r| {
        matches!(
            parse_entry(&node.cfg, r.subnet.clone(), &r.value),
            Entry::Peer(p) if p.vtep_mac == mine && p.public_ip != node.ext.public_ip
        )
    })
}

/// Another node publishes our VTEP MAC: take a new one (none that any lease publishes), put
/// it on the device, persist it and count it. The caller publishes it in our lease.
async fn change_mac(node: &Node, health: &Health, holder: &str, taken: HashSet<MacAddr>) {
    let old = node.mac();
    let mut taken = taken;
    taken.insert(old);
    let new = fresh_mac(&mut rand::rng(), &taken);
    warn!(%old, %new, holder, "another node publishes this node's VTEP MAC (their FDB entries for it would collide); switching to a new MAC");
    health.metrics.vtep_mac_conflicts.inc();
    *node.vtep.lock().unwrap_or_else(|p| p.into_inner()) = new;
    let device = node.device_name();
    match node.nl.link_by_name(device).await {
        Ok(Some(link)) => {
            if let Err(e) = node.nl.set_mac(link.index, new).await {
                node_error_h(health, ErrorKind::Netlink);
                warn!(error = %e, "cannot set the new VTEP MAC on the device; re-creating it");
                let _ = node.nl.delete_link(device).await;
            }
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot look up the VXLAN device"),
    }
    persist_mac(&node.mac_path, device, &node.identity, new);
}

fn node_error_h(health: &Health, kind: ErrorKind) {
    health.metrics.error(kind);
}

/// The VXLAN device as it should be: flannel's attributes, the MAC from the MAC file (or the
/// existing device's, which is kept so a restart disturbs nothing), persisted.
async fn vxlan_device(
    nl: &Netlink,
    vx: &weft_core::config::VxlanConfig,
    ext: &ExtIface,
    dev_name: &str,
    mac_path: &std::path::Path,
    identity: &NodeIdentity,
    health: &Health,
) -> Result<VxlanSpec> {
    let underlay_mtu = vx.mtu.unwrap_or(ext.mtu);
    if underlay_mtu <= 50 + 68 {
        bail!(
            "the underlay MTU {underlay_mtu} is too small for VXLAN (needs 50 bytes of headroom); check Backend.MTU or the interface MTU"
        );
    }
    let chosen = choose_mac(mac_path, identity, health);
    let spec = VxlanSpec {
        name: dev_name.to_string(),
        vni: vx.vni,
        port: vx.port,
        local: ext.public_ip.into(),
        underlay_index: ext.index,
        mtu: underlay_mtu - 50,
        learning: vx.learning,
        gbp: vx.gbp,
        mac: chosen,
    };
    let dev = nl
        .ensure_vxlan(&spec)
        .await
        .with_context(|| format!("cannot set up VXLAN device {dev_name}"))?;
    if dev.mac != chosen {
        // The device lives in this node's network namespace, so its MAC is this node's (and
        // what its lease publishes): keep it, so a restart disturbs nothing.
        info!(device = %dev_name, mac = %dev.mac, "keeping the existing device's VTEP MAC");
    }
    // Persist the MAC so a re-created device (after a reboot, or a deletion) keeps it and
    // peers' neighbour entries stay right (flannel #533).
    persist_mac(mac_path, dev_name, identity, dev.mac);
    Ok(VxlanSpec {
        mac: dev.mac,
        ..spec
    })
}

/// Runs weftd until SIGTERM/SIGINT.
pub async fn run(flags: Flags, v: Validated) -> Result<()> {
    if flags.kube_subnet_mgr {
        bail!(
            "--kube-subnet-mgr is not available in weft yet: weft keeps leases in etcd. Run etcd and pass --etcd-endpoints (on EKS nodes never get a pod CIDR, which is why the etcd mode exists)"
        );
    }
    if flags.public_ipv6.as_deref().is_some_and(|s| !s.is_empty()) {
        bail!("--public-ipv6 is set, but IPv6 is not available in weft yet; remove the flag");
    }
    let health = Health::new();
    if flags.healthz_port > 0 {
        let addr = SocketAddr::new(v.healthz_ip, flags.healthz_port);
        let server = health::bind(addr, health.clone())
            .await
            .with_context(|| format!("cannot listen on --healthz-ip/--healthz-port {addr}"))?;
        tokio::spawn(async move {
            if let Err(e) = server.await {
                error!(error = %e, "health server stopped");
            }
        });
        info!(%addr, "serving /healthz, /readyz and /metrics");
    }

    let previous = std::fs::read_to_string(&flags.subnet_file)
        .ok()
        .and_then(|t| weft_core::subnet_env::previous_subnet(&t));
    if let Some(p) = previous {
        info!(subnet = %p, file = %flags.subnet_file.display(), "previous subnet found");
    }

    let store_cfg = StoreConfig {
        endpoints: v.endpoints.clone(),
        prefix: flags.etcd.etcd_prefix.clone(),
        ca_file: flags.etcd.etcd_cafile.clone(),
        cert_file: flags.etcd.etcd_certfile.clone(),
        key_file: flags.etcd.etcd_keyfile.clone(),
        username: flags.etcd.etcd_username.clone(),
        password: flags.etcd.etcd_password.clone(),
    };
    if store_cfg.ca_file.is_none() && store_cfg.cert_file.is_none() {
        warn!(
            "no etcd TLS files given: connecting to etcd over plain http; use --etcd-cafile (and --etcd-certfile/--etcd-keyfile) in production"
        );
    }
    let store = connect_store(&store_cfg, &health).await?;
    let cfg = wait_for_config(&store, &health).await?;
    let vx = match &cfg.backend {
        BackendConfig::Vxlan(vx) => Some(*vx),
        BackendConfig::HostGw => None,
        BackendConfig::Other { type_name } => bail!(
            "backend {type_name:?} in {} is not available in weft{}; weft implements \"vxlan\" and \"host-gw\": set \"Backend\": {{\"Type\": \"vxlan\"}}",
            store.config_key(),
            match type_name.as_str() {
                "wireguard" | "ipsec" | "ipip" =>
                    " (and this kernel has no WireGuard, ESP or IPIP support to prove it on)",
                "udp" => " (flannel itself keeps udp for debugging only)",
                _ => "",
            }
        ),
    };
    if cfg.backend_defaulted {
        warn!(key = %store.config_key(), "the network config has no Backend: weft uses vxlan, but flanneld would use udp; set \"Backend\": {{\"Type\": \"vxlan\"}} so both agree");
    }
    if cfg.enable_ipv6 {
        bail!(
            "EnableIPv6 is set in {}, but IPv6 is not available in weft yet; set it to false",
            store.config_key()
        );
    }
    let network = cfg
        .network
        .with_context(|| format!("{} has no Network", store.config_key()))?;
    // kube-proxy's iptables mode needs br_netfilter; flannel skips the check in nftables mode.
    if !cfg.enable_nftables
        && !std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists()
    {
        warn!(
            "br_netfilter is not loaded (no /proc/sys/net/bridge/bridge-nf-call-iptables): kube-proxy needs it for service traffic between pods on one node; run `modprobe br_netfilter`"
        );
    }

    let nl = Netlink::connect().context("cannot open a netlink socket")?;
    let req = IfaceRequest {
        ifaces: flags.iface.clone(),
        regexes: flags.iface_regex.clone(),
        can_reach: v.can_reach,
        public_ip: v.public_ip,
    };
    let snap = iface::discover(&nl, &req)
        .await
        .context("cannot list interfaces")?;
    let ext = iface::select(&req, &snap)?;
    info!(iface = %ext.name, addr = %ext.iface_addr, public_ip = %ext.public_ip, mtu = ext.mtu, "using external interface");

    let dev_name = vx.map_or_else(String::new, |vx| format!("flannel.{}", vx.vni));
    let mac_path = files::mac_file(&flags.state_dir, &dev_name);
    let identity = files::node_identity(ext.public_ip, vx.map_or(0, |vx| vx.vni));
    let (vxlan, mtu) = match vx {
        Some(vx) => {
            let spec =
                vxlan_device(&nl, &vx, &ext, &dev_name, &mac_path, &identity, &health).await?;
            let mtu = spec.mtu;
            (Some(spec), mtu)
        }
        None => {
            // flannel's host-gw refuses a NAT the same way: a peer's route points at our
            // PublicIP, which must be this interface's address.
            if ext.public_ip != ext.iface_addr {
                bail!(
                    "your PublicIP ({}) differs from the address of {} ({}), meaning that probably you're on a NAT, which is not supported by the host-gw backend; remove --public-ip, or use the vxlan backend",
                    ext.public_ip,
                    ext.name,
                    ext.iface_addr
                );
            }
            info!(iface = %ext.name, mtu = ext.mtu, "host-gw: routing to peers via their PublicIP on {}, no device", ext.name);
            (None, ext.mtu)
        }
    };
    let reach = ReachMode::of(&cfg);
    if reach == ReachMode::VxlanDirect {
        info!(iface = %ext.name, "DirectRouting: peers on {}'s networks get a direct route, the others VXLAN", ext.name);
    }

    let fw = choose_iptables(flags.iptables_backend).await;
    health
        .metrics
        .iptables_backend
        .get_or_create(&vec![(
            "backend".to_string(),
            fw.backend.map_or("installed", |b| b.name()).to_string(),
        )])
        .set(1);
    let nft = cfg.enable_nftables.then(Nftables::default);
    let random_fully = !flags.ip_masq_fully_random_disable
        && match &nft {
            Some(nft) => nft.supports_fully_random().await,
            None => fw.supports_random_fully().await,
        };
    // Each mode removes what the other one wrote, as flannel does at start.
    match &nft {
        Some(_) => match fw.remove_flannel_chains().await {
            Ok(t) if !t.is_empty() => {
                info!(tables = ?t.iter().map(|t| t.name()).collect::<Vec<_>>(), "nftables mode: removed the iptables mode's FLANNEL-POSTRTG and FLANNEL-FWD chains")
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "nftables mode: cannot look for the iptables mode's chains")
            }
        },
        None => match Nftables::default().remove().await {
            Ok(true) => info!(
                "iptables mode: removed the nftables mode's table {}",
                weft_core::nft::V4_TABLE
            ),
            Ok(false) => {}
            Err(e) => debug!(error = %e, "iptables mode: cannot look for the nftables table"),
        },
    }
    let node = Arc::new(Node {
        ttl: flags.subnet_lease_ttl,
        vtep: Mutex::new(vxlan.as_ref().map_or(MacAddr::default(), |s| s.mac)),
        identity,
        mac_path,
        flags,
        store,
        nl,
        fw,
        cfg,
        network,
        ext,
        vxlan,
        reach,
        mtu,
        random_fully,
        nft,
    });

    health.unmet(Condition::Lease, "acquiring a subnet lease");
    let (own, listing) = acquire_retrying(&node, previous, None, &health).await;
    let mut listing = Some(listing);
    let (passes_tx, passes) = mpsc::channel(4);
    let shared = Arc::new(Shared {
        full_due: AtomicBool::new(true),
        passes: passes_tx,
        table: Mutex::new(PeerTable::default()),
        own: Mutex::new(own),
        kick: Notify::new(),
        health: health.clone(),
    });
    set_lease_metrics(&health, &own);
    info!(subnet = %own.subnet, key = %lease_key(&node.flags.etcd.etcd_prefix, own.subnet), "holding lease");
    if let Some(p) = previous.filter(|p| *p != own.subnet) {
        // subnet.env still offers the old subnet, which may be another node's by now.
        withdraw_subnet(
            &node,
            &health,
            p,
            &format!("is no longer this node's (it now holds {})", own.subnet),
        );
    }

    // Data plane, rules and peers first; subnet.env (and readiness) last.
    let mut plane = Plane::new(&node);
    loop {
        match bring_up(&node, &shared, &mut plane, listing.take()).await {
            Ok(rev) => {
                let (tx, rx) = mpsc::channel(16);
                spawn_tasks(node.clone(), shared.clone(), rev, tx, rx, plane, passes);
                break;
            }
            Err(e) => {
                error!(error = format!("{e:#}"), "bring-up failed; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    shutdown_signal().await;
    info!("stopping; the device, routes, rules and lease stay in place so traffic keeps flowing");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, run until killed.
            std::future::pending::<()>().await;
        }
    }
}

async fn connect_store(cfg: &StoreConfig, health: &Health) -> Result<Store> {
    let mut delay = Duration::from_millis(200);
    loop {
        match Store::connect(cfg).await {
            Ok(s) => return Ok(s),
            Err(e @ weft_store::StoreError::File { .. })
            | Err(e @ weft_store::StoreError::Tls(_)) => {
                return Err(e.into());
            }
            Err(e) => {
                health.metrics.error(ErrorKind::Etcd);
                health.unmet(Condition::Lease, format!("etcd unreachable: {e}"));
                warn!(error = %e, "cannot reach etcd; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Reads `<prefix>/config` until it exists and is valid. Meanwhile /readyz says why, and the
/// log says what to do; a repeated problem is logged again only every 30 s.
async fn wait_for_config(store: &Store, health: &Health) -> Result<NetworkConfig> {
    let key = store.config_key();
    let mut last: Option<(String, Instant)> = None;
    loop {
        let problem = match store.get_config().await {
            Ok(Some(bytes)) => match NetworkConfig::parse(&bytes) {
                Ok(cfg) => {
                    info!(key = %key, network = ?cfg.network, subnet_len = cfg.subnet_len, "network config loaded");
                    return Ok(cfg);
                }
                Err(e) => {
                    health.metrics.error(ErrorKind::Config);
                    format!("the network config in {key} is invalid: {e}")
                }
            },
            Ok(None) => format!(
                "network config key {key} not found in etcd (v3 API). Write it with: ETCDCTL_API=3 etcdctl put {key} '{{\"Network\":\"10.244.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}' (or `weft network init`). A config written with the v2 API (etcdctl set, ETCDCTL_API=2) is invisible to v3 readers"
            ),
            Err(e) => {
                health.metrics.error(ErrorKind::Etcd);
                format!("cannot read {key} from etcd: {e}")
            }
        };
        health.unmet(Condition::Lease, problem.clone());
        let repeat = matches!(&last, Some((p, at)) if *p == problem && at.elapsed() < Duration::from_secs(30));
        if !repeat {
            error!("{problem}; retrying every second");
            last = Some((problem, Instant::now()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Our lease's value, as flanneld's backend writes it.
fn lease_value(node: &Node) -> String {
    match &node.vxlan {
        Some(spec) => LeaseAttrs::vxlan(node.ext.public_ip, spec.vni, node.mac()).to_json(),
        None => LeaseAttrs::host_gw(node.ext.public_ip).to_json(),
    }
}

/// How the peer table judges one key (a value over the size limit was not even kept).
fn entry_of(cfg: &NetworkConfig, r: &RawLease) -> Entry {
    match r.oversized {
        Some(size) => Entry::Skip {
            why: LeaseError::TooLarge {
                size,
                limit: MAX_LEASE_BYTES,
            }
            .to_string(),
            reject: true,
        },
        None => parse_entry(cfg, r.subnet.clone(), &r.value),
    }
}

/// Replaces the peer table with a listing; returns how many keys differed from it.
fn reset_table(node: &Node, shared: &Shared, raws: &[RawLease]) -> usize {
    shared.table().reset(
        raws.iter()
            .map(|r| (r.key.clone(), r.mod_revision, entry_of(&node.cfg, r))),
    )
}

/// The leases as listed from etcd, and the revision of that listing.
type Listing = (Vec<RawLease>, i64);

/// flannel's acquire (reuse by public IP, then the previous subnet, then a random free one),
/// with a lost race retried instead of being fatal. Also returns the listing the decision
/// was made on, so start-up can program the peers from it without listing them again.
async fn acquire(
    node: &Node,
    mut previous: Option<Ipv4Net>,
    exclude: Option<Ipv4Net>,
    health: &Health,
) -> Result<(HeldLease, Listing)> {
    let mut rng = StdRng::from_os_rng();
    for attempt in 0..100u32 {
        let (raws, rev) = node.store.list_leases().await?;
        withdraw_if_taken(node, health, &raws);
        // Never publish a VTEP MAC that another node already publishes.
        if let Some(holder) = mac_holder(node, &raws) {
            let taken = raws
                .iter()
                .filter_map(|r| match entry_of(&node.cfg, r) {
                    Entry::Peer(p) => Some(p.vtep_mac),
                    _ => None,
                })
                .collect();
            change_mac(node, health, &holder.key, taken).await;
        }
        let value = lease_value(node);
        // Every key counts: one with a value weft cannot read, or an alias key, still
        // keeps its subnet from being picked (and a create from failing on it forever).
        let prefix = node.store.subnets_prefix();
        let keys = KeySet::from_keys(raws.iter().map(|r| (r.tail(&prefix), r.value())));
        // `exclude`: a subnet another node now holds under our old key; never take it back.
        let excluded: Vec<Ipv4Net> = exclude.into_iter().collect();
        let plan = plan_acquire_listed(
            &node.cfg,
            &keys,
            node.ext.public_ip,
            previous,
            &excluded,
            &mut rng,
        )?;
        for stale in &plan.delete {
            info!(subnet = %stale, "deleting our old lease that no longer fits the network config");
            node.store.delete_lease(*stale).await?;
        }
        let got = match plan.action {
            AcquireAction::Reuse(sn) => {
                match raws.iter().find(|r| r.subnet.as_ref().ok() == Some(&sn)) {
                    Some(existing) => node.store.take_over(existing, &value, node.ttl).await?,
                    None => None,
                }
            }
            AcquireAction::Create(sn) => {
                let got = node.store.create_lease(sn, &value, node.ttl).await?;
                if got.is_none() {
                    info!(subnet = %sn, attempt, "subnet was taken by another node at the same moment; picking again");
                    if previous == Some(sn) {
                        previous = None;
                    }
                }
                got
            }
        };
        if let Some(l) = got {
            return Ok((l, (raws, rev)));
        }
        let jitter = rand::random::<u64>() % 50;
        tokio::time::sleep(Duration::from_millis(10 + jitter)).await;
    }
    bail!("could not acquire a subnet lease after 100 attempts (constant contention on etcd)")
}

async fn acquire_retrying(
    node: &Node,
    previous: Option<Ipv4Net>,
    exclude: Option<Ipv4Net>,
    health: &Health,
) -> (HeldLease, Listing) {
    let mut delay = Duration::from_millis(500);
    loop {
        match acquire(node, previous, exclude, health).await {
            Ok(l) => return l,
            Err(e) => {
                health.metrics.error(ErrorKind::Lease);
                health.unmet(Condition::Lease, format!("no subnet lease: {e:#}"));
                error!(
                    error = format!("{e:#}"),
                    "failed to acquire a subnet lease; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn set_lease_metrics(health: &Health, l: &HeldLease) {
    health.metrics.lease_held.set(1);
    let expiry = if l.lease_id == 0 {
        0.0
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
            + l.ttl as f64
    };
    health.metrics.lease_expiry.set(expiry);
}

fn desired_rules(node: &Node, own: Ipv4Net) -> Vec<Rule> {
    let mut rules = Vec::new();
    if node.flags.ip_masq {
        rules.extend(masq_rules(node.network, own, node.random_fully));
    }
    if node.flags.iptables_forward_rules {
        rules.extend(forward_rules(node.network));
    }
    rules
}

fn subnet_env(node: &Node, own: Ipv4Net) -> String {
    SubnetEnv {
        network: Some(node.network),
        subnet: Some(own),
        ipv6_network: None,
        ipv6_subnet: None,
        mtu: node.mtu,
        ipmasq: node.flags.ip_masq,
    }
    .render()
}

/// Writes subnet.env unless it already holds exactly this content.
fn write_subnet_env(node: &Node, shared: &Shared, own: Ipv4Net) -> Result<bool> {
    let text = subnet_env(node, own);
    if std::fs::read_to_string(&node.flags.subnet_file)
        .ok()
        .as_deref()
        == Some(text.as_str())
    {
        return Ok(false);
    }
    if let Err(e) = files::write_atomic(&node.flags.subnet_file, text.as_bytes(), 0o644) {
        shared.health.metrics.error(ErrorKind::SubnetFile);
        return Err(e.into());
    }
    Ok(true)
}

/// Address, rules, the first full peer sync, then subnet.env and readiness. Returns the
/// revision the peers were listed at, for the watch to continue from. `listing` is the
/// acquire's listing of the leases (listed again when absent, e.g. on a retry).
async fn bring_up(
    node: &Node,
    shared: &Shared,
    plane: &mut Plane,
    listing: Option<Listing>,
) -> Result<i64> {
    let own = shared.own();
    if let Some(spec) = node.spec() {
        let dev = node.nl.ensure_vxlan(&spec).await?;
        node.nl
            .ensure_address_and_up(dev.index, own.subnet.network(), node.network)
            .await?;
    }
    // The rules (an iptables-save and -restore, two child processes) and the peers are
    // independent: program both at once; readiness waits for both.
    let rules = async {
        let changed = sync_rules(node, shared, own.subnet).await?;
        if !changed.is_empty() {
            info!(tables = ?changed, "rules programmed");
        }
        anyhow::Ok(())
    };
    let peers = async {
        let (raws, rev) = match listing {
            Some(l) => l,
            None => node.store.list_leases().await?,
        };
        reset_table(node, shared, &raws);
        let failed = reconcile(node, shared, plane).await;
        dataplane_condition(shared, &failed);
        if failed? > 0 {
            // Some kernel changes failed: the reconciler retries them.
            shared.full_due.store(true, Ordering::Relaxed);
            shared.kick.notify_one();
        }
        anyhow::Ok(rev)
    };
    let ((), rev) = tokio::try_join!(rules, peers)?;
    if write_subnet_env(node, shared, own.subnet)? {
        info!(file = %node.flags.subnet_file.display(), "wrote subnet file");
    }
    shared.health.met(Condition::Lease);
    info!(subnet = %own.subnet, "weftd is ready");
    Ok(rev)
}

/// The data plane's state, owned by whoever runs the passes: bring-up, then the data plane
/// task alone.
struct Plane {
    /// Where weft's entries are (the device's index, the external interface) and what they
    /// are as far as weftd knows: the last full read plus weftd's own acknowledged changes and
    /// the kernel's announcements since. `None` until the first full pass.
    model: Option<(Owned, Programmed)>,
    /// How peers are reached, with the external interface's networks as the last full pass
    /// read them.
    reach: Reach,
}

impl Plane {
    fn new(node: &Node) -> Plane {
        Plane {
            model: None,
            reach: Reach {
                mode: node.reach,
                iface: node.ext.name.clone(),
                on_link: Vec::new(),
            },
        }
    }

    /// The index of the device the model is of (None before the first full pass, and with
    /// host-gw).
    fn dev(&self) -> Option<u32> {
        self.model.as_ref().and_then(|(owned, _)| owned.device)
    }

    /// Takes one kernel announcement into the model. True when it is drift: what weft owns
    /// now differs from the model (or cannot be told to match it), so a full pass must re-read
    /// it.
    fn observe(&mut self, change: KernelChange) -> bool {
        let underlay = self
            .model
            .as_ref()
            .and_then(|(owned, _)| owned.underlay)
            .map(|(index, _)| index);
        match change {
            KernelChange::Overrun => {
                warn!(
                    "netlink notifications were lost (socket buffer full); re-reading the device"
                );
                true
            }
            // The external interface's addresses decide which peers are on its link, and a
            // link going down takes its routes without a word: with direct routes, either
            // means a full pass.
            KernelChange::Link(i) | KernelChange::Address(i) => {
                self.dev() == Some(i)
                    || (Some(i) == underlay && self.reach.mode != ReachMode::Vxlan)
            }
            KernelChange::Entry(i, observed) => match self.model.as_mut() {
                Some((owned, programmed)) => {
                    let observed = match observed {
                        Observed::Route { entry, present } => match owned.route(i, entry) {
                            Some(entry) => Observed::Route { entry, present },
                            None => return false,
                        },
                        other if owned.device == Some(i) => other,
                        _ => return false,
                    };
                    let expected = programmed.observe(&observed);
                    if !expected {
                        debug!(?observed, "the kernel changed an entry weft owns");
                    }
                    !expected
                }
                None => false,
            },
            KernelChange::Other(_) | KernelChange::Address6(_) | KernelChange::Entry6(..) => false,
        }
    }
}

/// A full pass: make sure the device exists and is right, read what weft owns, diff the
/// peers against that and apply only the difference. Resets the model. Returns the number of
/// kernel changes that failed (retried by the caller).
async fn reconcile(node: &Node, shared: &Shared, plane: &mut Plane) -> Result<usize> {
    let started = Instant::now();
    // Whatever was announced before this read is superseded by it.
    shared.full_due.store(false, Ordering::Relaxed);
    let own = shared.own();
    let fresh = peer_sync::refresh(
        &node.nl,
        node.spec().as_ref(),
        own.subnet,
        node.network,
        node.ext.index,
    )
    .await?;
    if fresh.device.as_ref().is_some_and(|d| d.created) {
        warn!(device = %node.device_name(), "the VXLAN device was missing; re-created it with the same MAC");
    }
    shared.health.metrics.kernel_reads.inc();
    plane.reach.on_link = fresh.on_link;
    let (owned, programmed) = plane.model.insert((fresh.owned, fresh.model));
    Ok(apply_peers(node, shared, &plane.reach, owned, programmed, Some(started)).await)
}

/// An event pass (leases changed): diff the peers against the model and apply the
/// difference, without reading the kernel back. Falls back to a full pass when there is no
/// model yet or one is due.
async fn reconcile_peers(node: &Node, shared: &Shared, plane: &mut Plane) -> Result<usize> {
    match plane.model.as_mut() {
        Some((owned, programmed)) if !shared.full_due.load(Ordering::Relaxed) => {
            Ok(apply_peers(node, shared, &plane.reach, owned, programmed, None).await)
        }
        _ => reconcile(node, shared, plane).await,
    }
}

/// Diffs the peers against `programmed`, applies the operations and records the ones the
/// kernel acknowledged in `programmed`. Returns the number of failed operations.
/// `full_pass_started`: when the full pass this belongs to began (None for an event pass).
async fn apply_peers(
    node: &Node,
    shared: &Shared,
    reach: &Reach,
    owned: &Owned,
    programmed: &mut Programmed,
    full_pass_started: Option<Instant>,
) -> usize {
    let started = full_pass_started.unwrap_or_else(Instant::now);
    let full = full_pass_started.is_some();
    let own = shared.own();
    let (peers, notices) = shared.table().peers(Some(own.subnet), reach);
    for n in notices {
        match n {
            Notice::Rejected { key, why } => {
                shared.health.metrics.lease_keys_refused.inc();
                warn!(%key, %why, "skipping lease")
            }
            Notice::Ignored { key, why } => debug!(%key, %why, "not a peer of this backend"),
        }
    }
    let ops = diff(&peers, &programmed.state());
    let mut failed_ops = 0usize;
    if !ops.is_empty() {
        if full {
            info!(
                changes = ops.len(),
                peers = peers.len(),
                "reconciling peers with the kernel"
            );
        } else {
            debug!(
                changes = ops.len(),
                peers = peers.len(),
                "applying lease changes"
            );
        }
        let applied = peer_sync::carry_out(&node.nl, owned, &ops, programmed).await;
        for (op, e) in &applied.failed {
            node_error(shared, ErrorKind::Netlink);
            warn!(?op, error = %e, "kernel change failed; will retry");
        }
        failed_ops = applied.failed.len();
        shared
            .health
            .metrics
            .reconcile_changes
            .inc_by((applied.ops - failed_ops) as u64);
    }
    publish_peers(node, shared, &own, &peers, programmed);
    shared.health.metrics.peers_known.set(peers.len() as i64);
    shared
        .health
        .metrics
        .peers_programmed
        .set((peers.len() - failed_ops.min(peers.len())) as i64);
    shared
        .health
        .metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    failed_ops
}

/// Updates what /peers serves from the model after a pass: O(n log n), no kernel read.
fn publish_peers(
    node: &Node,
    shared: &Shared,
    own: &HeldLease,
    peers: &[weft_core::peer::Peer],
    programmed: &Programmed,
) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expiry = shared.health.metrics.lease_expiry.get();
    let expires = (own.lease_id != 0 && expiry > 0.0).then_some(expiry as u64);
    shared.health.peers(|v| {
        v.set_lease(own.subnet, node.ext.public_ip, node.mac(), expires, now);
        v.update(peers, programmed, now);
    });
}

fn node_error(shared: &Shared, kind: ErrorKind) {
    shared.health.metrics.error(kind);
}

fn spawn_tasks(
    node: Arc<Node>,
    shared: Arc<Shared>,
    rev: i64,
    tx: mpsc::Sender<OwnKey>,
    rx: mpsc::Receiver<OwnKey>,
    plane: Plane,
    passes: mpsc::Receiver<oneshot::Sender<Result<usize, String>>>,
) {
    let mon = ChangeMonitor::new()
        .map_err(|e| warn!(error = %e, "cannot listen to netlink notifications; kernel drift is repaired every {RESYNC_UNANNOUNCED:?} instead"))
        .ok();
    tokio::spawn(watch_task(node.clone(), shared.clone(), rev, tx));
    tokio::spawn(dataplane_task(
        node.clone(),
        shared.clone(),
        plane,
        mon,
        passes,
    ));
    tokio::spawn(lease_task(node.clone(), shared.clone(), rx));
    tokio::spawn(firewall_task(node, shared));
}

/// Sets the dataplane readiness condition from a reconcile pass's result.
fn dataplane_condition(shared: &Shared, result: &Result<usize>) {
    match result {
        Ok(0) => shared.health.met(Condition::Dataplane),
        Ok(n) => shared.health.unmet(
            Condition::Dataplane,
            format!("{n} kernel changes on the VXLAN device failed; retrying"),
        ),
        Err(e) => shared.health.unmet(
            Condition::Dataplane,
            format!("cannot program the VXLAN device: {e:#}"),
        ),
    }
}

/// The next kernel announcement; pending forever without a monitor. A closed monitor is
/// dropped (with a warning): drift is then found by the periodic full pass.
async fn next_change(mon: &mut Option<ChangeMonitor>) -> KernelChange {
    loop {
        let Some(m) = mon.as_mut() else {
            return std::future::pending().await;
        };
        match m.next().await {
            Some(change) => return change,
            None => {
                *mon = None;
                warn!(
                    "the netlink notification socket closed; kernel drift is repaired every {RESYNC_UNANNOUNCED:?} instead"
                );
            }
        }
    }
}

/// The data plane task, the one owner of the device's model ([`Plane`]). It waits for a
/// reason to run a pass (leases changed, a full pass asked for, the period) while it takes
/// the kernel's announcements into the model: the echo of weftd's own change matches it and
/// is ignored; anything else (a deleted route, neighbour or FDB entry, an entry someone
/// added, the device or its address changing, lost notifications) is drift and brings a
/// full pass, so repairs take milliseconds, not a period. During a pass, announcements wait
/// compactly (programming thousands of peers announces each entry: the socket is drained at
/// once rather than queueing full netlink messages) and are taken in after it.
async fn dataplane_task(
    node: Arc<Node>,
    shared: Arc<Shared>,
    mut plane: Plane,
    mut mon: Option<ChangeMonitor>,
    mut passes: mpsc::Receiver<oneshot::Sender<Result<usize, String>>>,
) {
    let hb = shared.health.heartbeat("reconciler");
    let mut waiting: Vec<KernelChange> = Vec::new();
    let mut passes_open = true;
    loop {
        let period = if mon.is_some() {
            RESYNC
        } else {
            RESYNC_UNANNOUNCED
        };
        // The timer below ends this wait within `period` at the latest.
        hb.busy("waiting for the next reconcile pass", period);
        let timer = tokio::time::sleep(period);
        tokio::pin!(timer);
        let mut reply = None;
        loop {
            tokio::select! {
                biased;
                r = passes.recv(), if passes_open => match r {
                    Some(r) => {
                        reply = Some(r);
                        shared.full_due.store(true, Ordering::Relaxed);
                        break;
                    }
                    // No task can ask any more; the other reasons remain.
                    None => passes_open = false,
                },
                _ = shared.kick.notified() => break,
                _ = &mut timer => {
                    shared.full_due.store(true, Ordering::Relaxed);
                    break;
                }
                change = next_change(&mut mon) => {
                    if plane.observe(change) {
                        shared.health.metrics.kernel_drift.inc();
                        shared.full_due.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
        hb.busy("running a reconcile pass", Duration::ZERO);
        let result = {
            let full = shared.full_due.load(Ordering::Relaxed);
            let pass = async {
                if full {
                    reconcile(&node, &shared, &mut plane).await
                } else {
                    reconcile_peers(&node, &shared, &mut plane).await
                }
            };
            tokio::pin!(pass);
            loop {
                tokio::select! {
                    biased;
                    r = &mut pass => break r,
                    change = next_change(&mut mon) => waiting.push(change),
                }
            }
        };
        let mut drift = false;
        for change in waiting.drain(..) {
            drift |= plane.observe(change);
        }
        waiting.shrink_to(1024);
        if drift {
            shared.health.metrics.kernel_drift.inc();
            shared.full_due.store(true, Ordering::Relaxed);
            shared.kick.notify_one();
        }
        dataplane_condition(&shared, &result);
        let retry = match &result {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => {
                node_error(&shared, ErrorKind::Netlink);
                error!(error = format!("{e:#}"), "reconcile failed; retrying");
                true
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(result.map_err(|e| format!("{e:#}")));
        }
        if retry {
            shared.full_due.store(true, Ordering::Relaxed);
            hb.busy(
                "waiting to retry a reconcile pass",
                Duration::from_millis(500),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            shared.kick.notify_one();
        }
    }
}

/// The lease watch: [`weft_core::lease_watch::WatchCursor`] run by [`WatchExecutor`], reading etcd
/// ([`EtcdLeases`]) and feeding the lease table, our own key's news and the reconciler
/// ([`NodeLeases`]). `rev` is the revision up to which every event has been applied to the
/// peer table (first the start-up listing's): a broken stream resumes from `rev + 1`, and
/// `rev` only moves to the last delivered event's mod revision or to a progress
/// notification's revision. A compacted resume revision, or a response over gRPC's message
/// limit, is replaced by a paged listing. Every --lease-relist-interval, the anti-entropy
/// check asks for a progress notification, then lists the keys (without values) at `rev`
/// and compares them with the table; any difference is repaired by a full listing.
async fn watch_task(node: Arc<Node>, shared: Arc<Shared>, rev: i64, own_tx: mpsc::Sender<OwnKey>) {
    let period = Duration::from_secs(node.flags.lease_relist_interval);
    let hb = shared.health.heartbeat("lease watch");
    let sink = NodeLeases {
        node: node.clone(),
        shared,
        own_tx,
        hb,
    };
    WatchExecutor::new(EtcdLeases(node), sink, rev, period)
        .run()
        .await
}

/// etcd's leases, through the node's store.
struct EtcdLeases(Arc<Node>);

impl LeaseSource for EtcdLeases {
    type Stream = weft_store::LeaseWatch;
    async fn list(&self) -> Result<(Vec<RawLease>, i64), Failure> {
        Ok(self.0.store.list_leases().await?)
    }
    async fn watch(&self, from: i64) -> Result<weft_store::LeaseWatch, Failure> {
        Ok(self.0.store.watch_leases(from).await?)
    }
    async fn revisions(&self, at: i64) -> Result<Vec<weft_store::KeyRevision>, Failure> {
        Ok(self.0.store.list_lease_revisions(Some(at)).await?.0)
    }
}

impl LeaseStream for weft_store::LeaseWatch {
    async fn next(&mut self) -> Result<Option<WatchBatch>, Failure> {
        Ok(weft_store::LeaseWatch::next(self).await?)
    }
    async fn request_progress(&mut self) -> Result<(), Failure> {
        Ok(weft_store::LeaseWatch::request_progress(self).await?)
    }
}

/// The lease table, our own key's news, the reconciler and health: where the watch's
/// findings go.
struct NodeLeases {
    node: Arc<Node>,
    shared: Arc<Shared>,
    own_tx: mpsc::Sender<OwnKey>,
    hb: health::BeatGuard,
}

impl LeaseSink for NodeLeases {
    fn listed(&self, raws: &[RawLease], why: Relist) -> usize {
        let (node, shared) = (&*self.node, &*self.shared);
        shared.health.metrics.relisted(why.label());
        let own_subnet = shared.own().subnet;
        let own_key = lease_key(&node.flags.etcd.etcd_prefix, own_subnet);
        if let Some(mine) = raws.iter().find(|x| x.key == own_key) {
            let _ = self.own_tx.try_send(News::Put(own_subnet, mine.clone()));
        } else {
            let _ = self.own_tx.try_send(News::Deleted(own_subnet));
        }
        let repaired = reset_table(node, shared, raws);
        shared
            .health
            .metrics
            .lease_relist_repairs
            .inc_by(repaired as u64);
        if node.vxlan.is_some()
            && shared
                .table()
                .holder_of_mac(node.mac(), node.ext.public_ip)
                .is_some()
        {
            let _ = self.own_tx.try_send(News::MacConflict);
        }
        repaired
    }

    fn apply(&self, events: Vec<LeaseEvent>) {
        let (node, shared) = (&*self.node, &*self.shared);
        let own_subnet = shared.own().subnet;
        let own_key = lease_key(&node.flags.etcd.etcd_prefix, own_subnet);
        let mut t = shared.table();
        for ev in events {
            match ev {
                LeaseEvent::Put(r) => {
                    if r.key == own_key {
                        let _ = self.own_tx.try_send(News::Put(own_subnet, r.clone()));
                    }
                    let entry = entry_of(&node.cfg, &r);
                    if let Entry::Peer(p) = &entry
                        && node.vxlan.is_some()
                        && p.vtep_mac == node.mac()
                        && p.public_ip != node.ext.public_ip
                    {
                        let _ = self.own_tx.try_send(News::MacConflict);
                    }
                    t.put(r.key, r.mod_revision, entry);
                }
                LeaseEvent::Delete { key, .. } => {
                    if key == own_key {
                        let _ = self.own_tx.try_send(News::Deleted(own_subnet));
                    }
                    t.delete(&key);
                }
            }
        }
    }

    fn differences(&self, keys: &[weft_store::KeyRevision]) -> usize {
        self.shared.health.metrics.lease_relist_checks.inc();
        self.shared
            .table()
            .differences(keys.iter().map(|k| (k.key.as_str(), k.mod_revision)))
    }

    fn reconcile(&self) {
        self.shared.kick.notify_one();
    }

    fn watching(&self, reconnected: bool) {
        if reconnected {
            self.shared.health.metrics.watch_reconnects.inc();
        }
        self.shared.health.met(Condition::Watch);
    }

    fn relisting(&self, why: &str) {
        self.shared.health.unmet(Condition::Watch, why);
    }

    fn lost(&self, why: &str) {
        lost_etcd(&self.shared, why);
    }

    fn busy(&self, doing: &'static str, within: Duration) {
        self.hb.busy(doing, within);
    }

    fn waiting(&self, on: &'static str) {
        self.hb.waiting(on);
    }
}

fn lost_etcd(shared: &Shared, why: &str) {
    if shared.health.is_met(Condition::Watch) {
        warn!(
            error = why,
            "lost the etcd lease watch; the data plane stays as it is while reconnecting"
        );
    } else {
        debug!(error = why, "etcd still unreachable");
    }
    node_error(shared, ErrorKind::Etcd);
    shared.health.unmet(
        Condition::Watch,
        format!("lease watch: etcd unreachable: {why}"),
    );
}

fn held_of(l: HeldLease) -> agent::Held {
    agent::Held {
        subnet: l.subnet,
        lease_id: l.lease_id,
        ttl: l.ttl,
    }
}

fn lease_of(h: agent::Held) -> HeldLease {
    HeldLease {
        subnet6: None,
        subnet: h.subnet,
        lease_id: h.lease_id,
        ttl: h.ttl,
    }
}

/// Judges a value the watch found in our own key (weft_core::agent::judge_own_key).
fn judge_own(node: &Node, raw: &RawLease) -> agent::OwnKey {
    let parsed = match raw.value() {
        Some(v) => LeaseAttrs::parse(v).map_err(|e| e.to_string()),
        None => Err(LeaseError::TooLarge {
            size: raw.oversized.unwrap_or(0),
            limit: MAX_LEASE_BYTES,
        }
        .to_string()),
    };
    let parsed = parsed.map(|attrs| {
        let ours = match &node.vxlan {
            Some(spec) => {
                attrs.backend_type.as_deref() == Some("vxlan")
                    && attrs.vxlan_data().ok()
                        == Some(weft_core::lease::VxlanBackendData {
                            vni: spec.vni,
                            vtep_mac: node.mac(),
                        })
            }
            // The PublicIP is judged by judge_own_key; host-gw publishes nothing else.
            None => attrs.backend_type.as_deref() == Some("host-gw"),
        };
        (attrs.public_ip, ours)
    });
    agent::judge_own_key(parsed, node.ext.public_ip, raw.lease_id)
}

/// The lease task: weft_core's [`agent::LeaseAgent`] run by [`LeaseExecutor`] against etcd
/// and this node through [`NodeLease`].
async fn lease_task(node: Arc<Node>, shared: Arc<Shared>, rx: mpsc::Receiver<OwnKey>) {
    let margin = node.flags.subnet_lease_renew_margin;
    let held = held_of(shared.own());
    LeaseExecutor::new(NodeLease { node, shared }, held, margin)
        .run(rx)
        .await
}

/// The lease agent's way out to etcd and this node.
struct NodeLease {
    node: Arc<Node>,
    shared: Arc<Shared>,
}

impl LeasePort for NodeLease {
    type Value = RawLease;

    fn judge(&self, raw: &RawLease) -> agent::OwnKey {
        judge_own(&self.node, raw)
    }

    async fn renew(&self, lease_id: i64) -> Result<Option<i64>, String> {
        let renewed = self.node.store.renew(lease_id).await;
        if let Ok(Some(ttl)) = renewed {
            debug!(subnet = %self.shared.own().subnet, ttl, "renewed lease");
        }
        renewed.map_err(|e| e.to_string())
    }

    fn renewal_failed(&self, error: &str) {
        node_error(&self.shared, ErrorKind::Lease);
        warn!(error = %error, "lease renewal failed; retrying in 5 s");
    }

    fn hold(&self, held: agent::Held, adopted: bool) {
        if adopted {
            debug!(subnet = %held.subnet, "our key was rewritten with another etcd lease; adopting it");
        }
        let held = lease_of(held);
        self.shared.set_own(held);
        set_lease_metrics(&self.shared.health, &held);
    }

    fn withdraw(&self, subnet: Ipv4Net, why: &str) {
        withdraw_subnet(&self.node, &self.shared.health, subnet, why);
    }

    async fn restore(&self, subnet: Ipv4Net) {
        info!(subnet = %subnet, "the lease was renewed after all; restoring subnet.env");
        restore_subnet(&self.node, &self.shared, subnet).await;
    }

    async fn rewrite(&self, held: agent::Held, raw: &RawLease, why: &str) -> agent::Rewrite {
        rewrite_own_key(&self.node, &lease_of(held), raw, why).await
    }

    async fn reacquire(
        &self,
        held: agent::Held,
        previous: Option<Ipv4Net>,
        exclude: Option<Ipv4Net>,
        why: &str,
    ) -> (agent::Held, tokio::time::Instant) {
        let (node, shared) = (&*self.node, &*self.shared);
        warn!(subnet = %held.subnet, "{why}; re-acquiring ({})", if exclude.is_some() { "another subnet" } else { "the same subnet if still free" });
        if shared.health.is_met(Condition::Lease) {
            // Not withdrawn (which says why): our own key is being rewritten.
            shared
                .health
                .unmet(Condition::Lease, "re-acquiring the subnet lease");
        }
        let (new, _) = acquire_retrying(node, previous, exclude, &shared.health).await;
        let granted = tokio::time::Instant::now();
        if new.subnet != held.subnet {
            warn!(old = %held.subnet, new = %new.subnet, "subnet changed; pods on the old subnet must be re-created");
        } else {
            info!(subnet = %new.subnet, "lease re-acquired");
        }
        // The lease is ours from now on: the data plane's pass below programs the device for
        // it (its address, and its own subnet never routed as a peer's). The agent's Hold
        // publishes the same lease again.
        self.hold(held_of(new), false);
        apply_own_subnet_until_done(node, shared, new.subnet, "cannot apply the new lease").await;
        (held_of(new), granted)
    }

    async fn resolve_mac_conflict(&self) -> Option<agent::Held> {
        resolve_mac_conflict(&self.node, &self.shared)
            .await
            .map(held_of)
    }
}

/// A lease event showed another node publishing our VTEP MAC. After a random pause (when both
/// nodes are weftd, the other one often moves first and there is nothing left to do), check
/// again; if the conflict is still there, take a new MAC and publish it in our lease. Returns
/// the lease that now carries the new MAC (None when nothing was published).
async fn resolve_mac_conflict(node: &Node, shared: &Shared) -> Option<HeldLease> {
    let pause = Duration::from_millis(rand::random::<u64>() % 1000);
    tokio::time::sleep(pause).await;
    let (holder, taken) = {
        let t = shared.table();
        (
            t.holder_of_mac(node.mac(), node.ext.public_ip)
                .map(str::to_string),
            t.macs(),
        )
    };
    let Some(holder) = holder else {
        debug!("the VTEP MAC conflict resolved itself (the other node moved)");
        return None;
    };
    change_mac(node, &shared.health, &holder, taken).await;
    // The device's MAC changed under the model: re-read it.
    shared.full_due.store(true, Ordering::Relaxed);
    shared.kick.notify_one();
    let value = lease_value(node);
    for _ in 0..5 {
        let own = shared.own();
        match node.store.get_lease(own.subnet).await {
            Ok(Some(raw)) => {
                match LeaseAttrs::parse(&raw.value) {
                    Ok(a) if a.public_ip == node.ext.public_ip => {}
                    // Not ours any more: the lease keeper re-acquires (with the new MAC).
                    _ => return None,
                }
                match node.store.take_over(&raw, &value, node.ttl).await {
                    Ok(Some(held)) => {
                        // The lease task publishes it (set_own, metrics) through the agent.
                        info!(subnet = %held.subnet, mac = %node.mac(), "published the new VTEP MAC");
                        return Some(held);
                    }
                    Ok(None) => {
                        debug!("our lease changed while publishing the new VTEP MAC; again")
                    }
                    Err(e) => {
                        node_error(shared, ErrorKind::Lease);
                        warn!(error = %e, "cannot publish the new VTEP MAC; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            // Gone: the lease keeper re-acquires (with the new MAC).
            Ok(None) => return None,
            Err(e) => {
                node_error(shared, ErrorKind::Lease);
                warn!(error = %e, "cannot read our lease to publish the new VTEP MAC; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    None
}

/// Replaces subnet.env (atomically) with one the CNI plugin refuses, naming the lost subnet
/// and why, so that no pod gets an address that may now be another node's. The file is
/// rewritten with the new subnet once its lease is held and programmed.
fn withdraw_subnet(node: &Node, health: &Health, lost: Ipv4Net, why: &str) {
    let text = weft_core::subnet_env::render_lost(
        Some(node.network),
        node.mtu,
        node.flags.ip_masq,
        lost,
        why,
    );
    health.metrics.subnet_lost.inc();
    health.unmet(
        Condition::Lease,
        format!("subnet {lost} {why}; acquiring a lease"),
    );
    match files::write_atomic(&node.flags.subnet_file, text.as_bytes(), 0o644) {
        Ok(()) => {
            warn!(subnet = %lost, file = %node.flags.subnet_file.display(), "withdrew the subnet from subnet.env: new pods are refused until a lease is held and programmed")
        }
        Err(e) => {
            health.metrics.error(ErrorKind::SubnetFile);
            error!(error = %e, "cannot withdraw the lost subnet from subnet.env; pods may still be given its addresses");
        }
    }
}

/// Our key holds a value that is not ours (`why`): write ours back in place, guarded on the
/// revision we saw and with the etcd lease we hold, so the renewal goes on as before. If the
/// key changed again meanwhile the watch brings that change; if our etcd lease is gone,
/// re-acquire (returned as the re-acquire request).
async fn rewrite_own_key(
    node: &Node,
    own: &HeldLease,
    raw: &RawLease,
    why: &str,
) -> agent::Rewrite {
    warn!(subnet = %own.subnet, key = %raw.key, problem = %why, "our lease key holds a value that is not ours; rewriting it in place");
    match node
        .store
        .rewrite_own(raw, &lease_value(node), own.lease_id)
        .await
    {
        Ok(true) => {
            info!(subnet = %own.subnet, "our lease key holds our value again");
            agent::Rewrite::Done
        }
        Ok(false) => {
            if own.lease_id != 0 && matches!(node.store.ttl(own.lease_id).await, Ok(None)) {
                return agent::Rewrite::LeaseGone;
            }
            debug!(subnet = %own.subnet, "our key changed again before the rewrite; the watch brings the change");
            agent::Rewrite::Raced
        }
        Err(e) => agent::Rewrite::Failed(e.to_string()),
    }
}

/// While this node looks for a lease (at start, or after losing one), subnet.env may still
/// offer a subnet from before. If the listing shows that subnet leased by another node, it is
/// withdrawn at once, even if no new lease can be had yet (the network is full, say).
fn withdraw_if_taken(node: &Node, health: &Health, raws: &[RawLease]) {
    let Some(offered) = std::fs::read_to_string(&node.flags.subnet_file)
        .ok()
        .and_then(|t| weft_core::subnet_env::previous_subnet(&t))
    else {
        return;
    };
    let holder = raws
        .iter()
        .filter(|r| r.subnet.as_ref().ok() == Some(&offered))
        .find_map(|r| LeaseAttrs::parse(&r.value).ok())
        .map(|a| a.public_ip)
        .filter(|ip| *ip != node.ext.public_ip);
    if let Some(ip) = holder {
        withdraw_subnet(
            node,
            health,
            offered,
            &format!("was taken by another node (PublicIP {ip})"),
        );
    }
}

/// Puts subnet.env back for a subnet that turned out to be still ours.
async fn restore_subnet(node: &Node, shared: &Shared, subnet: Ipv4Net) {
    apply_own_subnet_until_done(node, shared, subnet, "cannot restore subnet.env").await;
}

/// [`apply_own_subnet`], retried every second (logging `what` failed) until it is done; then
/// the lease condition is met.
async fn apply_own_subnet_until_done(node: &Node, shared: &Shared, subnet: Ipv4Net, what: &str) {
    while let Err(e) = apply_own_subnet(node, shared, subnet).await {
        error!(error = format!("{e:#}"), "{what}; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    shared.health.met(Condition::Lease);
}

/// Programs the node for `subnet`, the lease held (`Shared::own`): the rules, then a full
/// pass of the data plane (the device, its address, the peers), then subnet.env.
async fn apply_own_subnet(node: &Node, shared: &Shared, subnet: Ipv4Net) -> Result<()> {
    sync_rules(node, shared, subnet).await?;
    // A full pass by the data plane task, which owns the device's model (and retries what
    // failed); subnet.env follows once it is done.
    let (reply, outcome) = oneshot::channel();
    shared
        .passes
        .send(reply)
        .await
        .map_err(|_| anyhow::anyhow!("the data plane task has stopped"))?;
    let failed = outcome
        .await
        .map_err(|_| anyhow::anyhow!("the data plane task has stopped"))?
        .map_err(anyhow::Error::msg)?;
    if failed > 0 {
        warn!(
            failed,
            "some kernel changes for the new lease failed; the reconciler retries them"
        );
    }
    if write_subnet_env(node, shared, subnet)? {
        info!(file = %node.flags.subnet_file.display(), "rewrote subnet file");
    }
    Ok(())
}
/// Brings the rules for `subnet` in place: iptables (see [`rules_sync::sync_rules`]), or
/// flannel's nftables table in one transaction. Returns what it changed.
async fn sync_rules(
    node: &Node,
    shared: &Shared,
    subnet: Ipv4Net,
) -> Result<Vec<&'static str>, FirewallError> {
    let Some(nft) = &node.nft else {
        let changed =
            rules_sync::sync_rules(&node.fw, &shared.health, &desired_rules(node, subnet)).await?;
        return Ok(changed.iter().map(|t| t.name()).collect());
    };
    let rules = weft_core::nft::NftRules {
        cluster: node.network,
        own: subnet,
        masq: node.flags.ip_masq,
        forward: node.flags.iptables_forward_rules,
        fully_random: node.random_fully,
    };
    match nft.sync(&rules).await {
        Ok(changed) => {
            shared.health.met(Condition::Rules);
            Ok(if changed {
                vec![weft_core::nft::V4_TABLE]
            } else {
                Vec::new()
            })
        }
        Err(e) => {
            shared.health.unmet(
                Condition::Rules,
                format!("cannot program the nftables table: {e}"),
            );
            Err(e)
        }
    }
}

/// The iptables binaries to write with: those `--iptables-backend` names, or in `auto` those
/// of the backend the host's rules are in (see weft_core::xtables).
async fn choose_iptables(flag: IptablesBackend) -> Iptables {
    use weft_core::xtables::Backend;
    let chosen = match flag {
        IptablesBackend::Legacy => Backend::Legacy,
        IptablesBackend::Nft => Backend::Nft,
        IptablesBackend::Auto => match weft_net::firewall::detect_host_backend().await {
            Some(choice) => {
                info!(backend = %choice.backend, why = %choice, "iptables backend detected (--iptables-backend=auto)");
                choice.backend
            }
            None => {
                warn!(
                    "neither iptables-legacy-save nor iptables-nft-save is installed, so the iptables backend cannot be told; using `iptables` as installed (pass --iptables-backend=legacy|nft with both flavours installed to choose)"
                );
                return Iptables::default();
            }
        },
    };
    if flag != IptablesBackend::Auto {
        info!(backend = %chosen, "iptables backend set by --iptables-backend");
    }
    Iptables::for_backend(chosen)
}

/// Keeps the iptables rules in place. With iptables-nft the kernel announces every ruleset
/// change, so a flushed chain is put back within a second and the periodic check (one
/// `iptables-save`) runs only every max(--iptables-resync, 60 s) as a safety net; with
/// iptables-legacy there are no announcements and the check runs every --iptables-resync.
async fn firewall_task(node: Arc<Node>, shared: Arc<Shared>) {
    let resync = Duration::from_secs(node.flags.iptables_resync);
    let changed = Arc::new(Notify::new());
    let announced = (node.nft.is_some() || node.fw.is_nft().await)
        && weft_net::firewall::watch_nftables_changes({
            let changed = changed.clone();
            move || changed.notify_one()
        })
        .map_err(|e| warn!(error = %e, "cannot watch nf_tables changes; checking iptables every --iptables-resync"))
        .is_ok();
    let period = if announced {
        resync.max(Duration::from_secs(60))
    } else {
        resync
    };
    info!(
        backend = if node.nft.is_some() {
            "nftables mode"
        } else {
            node.fw.backend.map_or("installed", |b| b.name())
        },
        announced,
        period_s = period.as_secs(),
        "checking the iptables rules on ruleset announcements (nft) and every period"
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = changed.notified() => {
                // Let a burst of changes (ours included) settle, and check at most once per
                // 200 ms however busy the ruleset is.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let rules = desired_rules(&node, shared.own().subnet);
        if rules.is_empty() {
            continue;
        }
        match sync_rules(&node, &shared, shared.own().subnet).await {
            Ok(changed) if !changed.is_empty() => {
                warn!(tables = ?changed, "the rules had drifted; repaired");
            }
            Ok(_) => {}
            Err(e) => {
                node_error(&shared, ErrorKind::Iptables);
                error!(error = %e, "cannot check the rules");
            }
        }
    }
}
