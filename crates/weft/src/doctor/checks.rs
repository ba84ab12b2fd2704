//! The checks: from [`Facts`] to one [`Finding`] each. No I/O, so every verdict is
//! unit-tested. A finding that is not OK always says its cause and its fix; the texts quote
//! the errors users actually see (E1-E5 of the original field report) so a search for the
//! error message lands here.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;
use weft_cni::install::{
    DEFAULT_CONFLIST_NAME, PLUGIN_FILE_NAME, config_plugin_type, is_network_config_name,
    missing_plugins,
};
use weft_core::config::{BackendConfig, NetworkConfig, VXLAN_OVERHEAD};
use weft_core::dataplane::{KernelState, Op, Owned, RouteEntry, diff};
use weft_core::lease::{Lease, LeaseAttrs};
use weft_core::peer::{Peer, PeerVerdict, Reach, ReachMode, classify_lease};
use weft_core::rules::{FORWARD_CHAIN, MASQ_CHAIN, Table, masq_rules, plan_sync};
use weft_core::subnet_env::SubnetEnv;
use weft_net::netlink::KERNEL_DEFAULT_VXLAN_PORT;

use super::facts::{Facts, FileText, NetFacts};
use super::parse;
use crate::cleanup::plan::{Action, Area, is_aws_config};
use crate::cleanup::snapshot::Kind;
use crate::eks::AmiFamily;
use crate::eks::max_pods::{self, KUBELET_DEFAULT_MAX_PODS};
use crate::netconf::Effective;
use crate::network::weftd_refusals;
use crate::report::{self, Ttl};
use crate::v2::{self, Probe, V2Get};

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    /// Works, but something will bite (or could not be verified).
    Warn,
    /// Broken: pods on this node fail or cannot reach others.
    Fail,
    /// Not checked: an input is missing (the detail says which flag provides it).
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    /// What was found, with the numbers.
    pub detail: String,
    /// Why it matters and what usually causes it (empty when OK).
    pub cause: String,
    /// What to run or change (empty when OK).
    pub fix: String,
}

impl Finding {
    fn new(check: &'static str, status: Status, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            status,
            detail: detail.into(),
            cause: String::new(),
            fix: String::new(),
        }
    }

    fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding::new(check, Status::Ok, detail)
    }

    fn skip(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding::new(check, Status::Skip, detail)
    }

    fn bad(
        check: &'static str,
        status: Status,
        detail: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            status,
            detail: detail.into(),
            cause: cause.into(),
            fix: fix.into(),
        }
    }

    fn warn(
        check: &'static str,
        detail: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::bad(check, Status::Warn, detail, cause, fix)
    }

    fn fail(
        check: &'static str,
        detail: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::bad(check, Status::Fail, detail, cause, fix)
    }
}

pub const ETCD: &str = "etcd";
pub const NETWORK_CONFIG: &str = "network-config";
pub const LEASE: &str = "lease";
pub const VXLAN_DEVICE: &str = "vxlan-device";
pub const PEERS: &str = "peers";
pub const MASQUERADE: &str = "masquerade";
pub const IPTABLES_BACKEND: &str = "iptables-backend";
pub const IP_FORWARD: &str = "ip-forward";
pub const BR_NETFILTER: &str = "br-netfilter";
pub const CNI_CONFIG: &str = "cni-config";
pub const VPC_CNI_LEFTOVERS: &str = "vpc-cni-leftovers";
pub const MAX_PODS: &str = "max-pods";
pub const KUBE_SUBNET_MGR: &str = "kube-subnet-mgr";
pub const WEFTD_HEALTH: &str = "weftd-health";

/// What several checks derive from the facts.
struct Derived {
    /// The stored config, when it parses.
    cfg: Option<NetworkConfig>,
    /// subnet.env, when it parses.
    env: Option<SubnetEnv>,
    /// The leases that parse (subnet key and value).
    leases: Option<Vec<Lease>>,
}

impl Derived {
    fn of(f: &Facts) -> Derived {
        let data = f.etcd.reach.as_ref().ok();
        let cfg = data
            .and_then(|d| d.config.as_deref())
            .and_then(|raw| NetworkConfig::parse(raw).ok());
        let env = match &f.subnet_env {
            FileText::Text(t) => SubnetEnv::parse(t).ok(),
            _ => None,
        };
        let leases = data.and_then(|d| d.leases.as_ref().ok()).map(|inputs| {
            inputs
                .iter()
                .filter_map(|l| {
                    let subnet = *l.subnet.as_ref().ok()?;
                    let attrs = LeaseAttrs::parse(&l.value).ok()?;
                    Some(Lease {
                        subnet,
                        subnet6: None,
                        attrs,
                    })
                })
                .collect()
        });
        Derived { cfg, env, leases }
    }

    fn own_subnet(&self) -> Option<Ipv4Net> {
        self.env.as_ref().and_then(|e| e.subnet)
    }

    fn own_lease(&self) -> Option<&Lease> {
        let own = self.own_subnet()?;
        self.leases.as_ref()?.iter().find(|l| l.subnet == own)
    }

    /// The VXLAN device name the config calls for (flannel.1 without a config).
    fn device_name(&self) -> String {
        let vni = self
            .cfg
            .as_ref()
            .and_then(|c| c.vxlan())
            .map_or(weft_core::config::DEFAULT_VNI, |v| v.vni);
        format!("flannel.{vni}")
    }
}

/// Runs every check, in the order of the table.
pub fn run_all(f: &Facts) -> Vec<Finding> {
    let d = Derived::of(f);
    vec![
        etcd(f),
        network_config(f),
        lease(f, &d),
        vxlan_device(f, &d),
        peers(f, &d),
        masquerade(f, &d),
        iptables_backend(f, &d),
        ip_forward(f),
        br_netfilter(f, &d),
        cni_config(f),
        vpc_cni_leftovers(f),
        max_pods_check(f, &d),
        kube_subnet_mgr(f),
        weftd_health(f),
    ]
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

// ---------------------------------------------------------------------------------------
// 1. etcd

const ETCD_CAUSE: &str = "weftd keeps the network config and every node's subnet lease in etcd: without it no node can read the config, take or renew a lease, or learn its peers. flannel reports the same state as `Couldn't fetch network config: 100: Key not found (/coreos.com)` or as timeouts (error E2). Usual reasons: etcd is not running, the security group does not allow TCP 2379 from the nodes, etcd listens on or advertises another address (listen-client-urls / advertise-client-urls), or the TLS files or credentials do not match";

fn etcd(f: &Facts) -> Finding {
    let e = &f.etcd;
    let weftd_endpoints = f
        .flannel_args
        .as_ref()
        .and_then(|a| a.as_ref().ok())
        .and_then(|t| parse::flannel_args(t).etcd_endpoints)
        .filter(|w| w.trim_end_matches('/') != e.endpoints);
    let other = weftd_endpoints
        .map(|w| format!(" (note: --flannel-args names --etcd-endpoints={w}; check that one too)"))
        .unwrap_or_default();
    match &e.reach {
        Ok(_) => Finding::ok(ETCD, format!("etcd v3 answers at {}{other}", e.endpoints)),
        Err(err) => Finding::fail(
            ETCD,
            format!("cannot read etcd v3 at {}: {err}{other}", e.endpoints),
            ETCD_CAUSE,
            format!(
                "from this node run `ETCDCTL_API=3 etcdctl --endpoints {} endpoint health`; make etcd listen on an address the nodes reach (listen-client-urls http://0.0.0.0:2379, advertise-client-urls http://<etcd private IP>:2379), allow TCP 2379 from the node security group, and give weftd and weft doctor the same --etcd-endpoints and --etcd-cafile/--etcd-certfile/--etcd-keyfile",
                e.endpoints
            ),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// 2. network config

fn v2_phrase(probes: &[Probe]) -> String {
    match v2::answer(probes) {
        Some((ep, V2Get::NotFound)) => format!("not in the etcd v2 store at {ep} either"),
        Some((ep, V2Get::Disabled)) => format!(
            "the etcd at {ep} serves no v2 API (no --enable-v2), so no v2 copy was looked for"
        ),
        Some((ep, V2Get::Dir { .. })) => {
            format!("the etcd v2 store at {ep} holds a directory there, not a config")
        }
        Some((ep, V2Get::Error { code, message })) => {
            format!("the etcd v2 store at {ep} answered error {code}: {message}")
        }
        Some((ep, V2Get::Value { .. })) => format!("the etcd v2 store at {ep} holds it"),
        None => {
            let why: Vec<String> = probes
                .iter()
                .map(|p| match p {
                    Probe::SkippedHttps { endpoint } => {
                        format!("{endpoint}: https, not probed for v2")
                    }
                    Probe::Failed { endpoint, error } => format!("{endpoint}: {error}"),
                    Probe::Answer { endpoint, .. } => format!("{endpoint}: answered"),
                })
                .collect();
            if why.is_empty() {
                "the etcd v2 store was not checked".into()
            } else {
                format!("the etcd v2 store was not checked ({})", why.join("; "))
            }
        }
    }
}

fn network_config(f: &Facts) -> Finding {
    let e = &f.etcd;
    let key = &e.config_key;
    let data = match &e.reach {
        Ok(d) => d,
        Err(_) => {
            return Finding::skip(
                NETWORK_CONFIG,
                format!("cannot read {key}: etcd is unreachable (see the etcd check)"),
            );
        }
    };
    let Some(raw) = &data.config else {
        if let Some((ep, V2Get::Value { value, .. })) = v2::answer(&data.v2) {
            return Finding::fail(
                NETWORK_CONFIG,
                format!(
                    "{key} is missing from etcd v3, but the etcd v2 store at {ep} holds it: {}",
                    value.trim()
                ),
                "etcd keeps the v2 and v3 keyspaces apart. The config was written through the v2 API (`ETCDCTL_API=2 etcdctl set`, or by flannel before 0.18), so weftd and flannel 0.18+, which read v3 only, see no config: they wait for it, take no lease and write no subnet.env. The same split is behind error E2 (`Couldn't fetch network config: 100: Key not found (/coreos.com)`: a v2 client such as flannel 0.13 looking for a config written with the v3 API) and error E3 (`client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint.`: a v2 client against an etcd that serves v3 only)",
                format!(
                    "copy it to v3 with `weft network migrate-v2 --etcd-endpoints {}` (preview with --dry-run), then restart weftd on every node; once no v2 client is left, etcd can run without --enable-v2",
                    e.endpoints
                ),
            );
        }
        return Finding::fail(
            NETWORK_CONFIG,
            format!(
                "{key} is missing from etcd v3 ({}); {}",
                e.endpoints,
                v2_phrase(&data.v2)
            ),
            "weftd and flanneld read the network config at start and wait until it exists: no node takes a lease or writes subnet.env, so pods fail with `open /run/flannel/subnet.env: no such file or directory`. flannel reports the missing key as `Couldn't fetch network config: 100: Key not found (/coreos.com)` (error E2; a v2 client) or `flannel config not found in etcd store. Did you create your config using etcdv3 API?` (flannel 0.18+)",
            format!(
                "write it to etcd v3: `weft network init --network 10.244.0.0/16 --etcd-endpoints {}` (pick a Network that overlaps neither the VPC nor the service CIDR; pass weftd's --etcd-prefix if it is not the default)",
                e.endpoints
            ),
        );
    };
    match NetworkConfig::parse(raw) {
        Err(err) => Finding::fail(
            NETWORK_CONFIG,
            format!("{key} holds an invalid config: {err}"),
            format!(
                "weftd and flanneld refuse to start with it (flanneld retries `Couldn't fetch network config` forever); stored value: {}",
                String::from_utf8_lossy(raw).trim()
            ),
            format!(
                "write a valid config over it: `weft network init --force --network 10.244.0.0/16 --etcd-endpoints {}` (or --json '<config>'); `weft network show` prints the stored one",
                e.endpoints
            ),
        ),
        Ok(cfg) => {
            let summary = Effective::of(&cfg).summary();
            let refusals = weftd_refusals(&cfg);
            if !refusals.is_empty() {
                return Finding::fail(
                    NETWORK_CONFIG,
                    format!("{key}: {summary}"),
                    format!("weftd cannot run this config: {}", refusals.join("; ")),
                    "write an IPv4 config with a backend weftd runs: `weft network init --force --network <CIDR>` for vxlan (with --vni/--port/--mtu/--direct-routing as needed), or add --backend host-gw when every node is on one L2 network; then restart weftd on every node",
                );
            }
            if cfg.backend_defaulted {
                return Finding::warn(
                    NETWORK_CONFIG,
                    format!("{key}: {summary}, but it names no Backend.Type"),
                    "without \"Backend\": {\"Type\": \"vxlan\"} weftd uses vxlan while flanneld would use udp, so a mixed cluster would not talk",
                    "rewrite it with the type: `weft network init --force --json '{\"Network\":\"<CIDR>\",\"Backend\":{\"Type\":\"vxlan\"}}'`",
                );
            }
            Finding::ok(NETWORK_CONFIG, format!("{key}: {summary}"))
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. lease held, matching subnet.env

fn local_addrs_text(f: &Facts) -> String {
    match &f.net {
        Ok(n) => {
            let list: Vec<String> = n
                .addrs
                .iter()
                .filter(|(_, ip)| !ip.is_loopback())
                .map(|(i, ip)| format!("{ip} ({})", n.link(*i).map_or("?", |l| l.name.as_str())))
                .collect();
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            }
        }
        Err(_) => "unknown".into(),
    }
}

fn lease(f: &Facts, d: &Derived) -> Finding {
    let path = f.subnet_file.display();
    let text = match &f.subnet_env {
        FileText::Missing => {
            return Finding::fail(
                LEASE,
                format!("{path} does not exist"),
                format!(
                    "the CNI plugin (type flannel) reads this file for every new pod, so pods on this node stay in ContainerCreating with `failed to load flannel 'subnet.env' file: open {path}: no such file or directory` (older plugins: `loadFlannelSubnetEnv failed: open {path}: no such file or directory`). weftd writes it once it holds a lease and its rules are in place: weftd is not running on this node, or not ready (no etcd, no network config, no free subnet)"
                ),
                "start weftd on this node (the weft DaemonSet) and read its log or `weft doctor --healthz http://127.0.0.1:8081` for why it is not ready; the etcd and network-config rows name the usual reasons. Pass --subnet-file if weftd writes it elsewhere",
            );
        }
        FileText::Unreadable(e) => {
            return Finding::fail(
                LEASE,
                format!("cannot read {path}: {e}"),
                "the CNI plugin cannot read it either, so new pods fail",
                "run weft doctor as root on the node; check the file's permissions (weftd writes it 0644)",
            );
        }
        FileText::Text(t) => t,
    };
    let env = match SubnetEnv::parse(text) {
        Ok(env) => env,
        Err(e) => {
            return Finding::fail(
                LEASE,
                format!("{path} is unusable: {e}"),
                "the CNI plugin refuses it, so new pods fail (`failed to load flannel 'subnet.env' file`)",
                "delete the file and restart weftd on this node: it rewrites it from its lease",
            );
        }
    };
    let Some(subnet) = env.subnet else {
        return Finding::fail(
            LEASE,
            format!("{path} has no FLANNEL_SUBNET"),
            "weft is IPv4-only: without an IPv4 subnet the CNI plugin gives pods no address",
            "delete the file and restart weftd",
        );
    };
    let key = format!(
        "{}{}-{}",
        f.etcd.subnets_prefix,
        subnet.network(),
        subnet.prefix_len()
    );
    let head = format!("{path}: FLANNEL_SUBNET {subnet}");
    if let (Some(cfg), Some(net)) = (&d.cfg, env.network)
        && cfg.network.is_some_and(|n| n != net)
    {
        return Finding::fail(
            LEASE,
            format!(
                "{head}, FLANNEL_NETWORK {net}, but the network config says Network {}",
                cfg.network.map(|n| n.to_string()).unwrap_or_default()
            ),
            "the network config changed after weftd wrote subnet.env: pods get addresses of the old network, which other nodes no longer route",
            "restart weftd on this node (it takes a lease in the new Network and rewrites subnet.env), then recreate the pods on this node",
        );
    }
    let data = match &f.etcd.reach {
        Ok(data) => data,
        Err(_) => {
            return Finding::warn(
                LEASE,
                format!("{head}; the lease {key} could not be checked: etcd is unreachable"),
                "the node keeps working with its programmed routes, but weftd cannot renew the lease (24 h TTL) or learn new peers while etcd is away",
                "fix the etcd row first",
            );
        }
    };
    let inputs = match &data.leases {
        Ok(i) => i,
        Err(e) => {
            return Finding::warn(
                LEASE,
                format!("{head}; cannot list {}: {e}", f.etcd.subnets_prefix),
                "the lease could not be verified",
                "check etcd's health and permissions (weftd needs read access to the prefix)",
            );
        }
    };
    let net = f.net.as_ref().ok();
    let local = |ip: Ipv4Addr| net.and_then(|n| n.owner_of(ip)).map(str::to_string);
    let rep = report::build(d.cfg.as_ref(), inputs.clone());
    let mine = rep.rows.iter().find(|r| r.subnet == Some(subnet));
    // The lease this node holds according to its addresses, if any.
    let held = rep
        .rows
        .iter()
        .find(|r| r.public_ip.is_some_and(|ip| local(ip).is_some()));
    let Some(row) = mine else {
        let elsewhere = match held {
            Some(h) => format!(
                "; this node ({}) holds {} instead",
                h.public_ip.map(|i| i.to_string()).unwrap_or_default(),
                h.subnet
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| h.key.clone())
            ),
            None => String::new(),
        };
        return Finding::fail(
            LEASE,
            format!("{head}, but etcd holds no lease {key}{elsewhere}"),
            "the lease expired or was deleted (weftd, like flanneld, exits when its own lease is revoked), or subnet.env is left from an earlier run: pods get addresses from a subnet no peer routes to this node, and another node may be handed the same subnet",
            "restart weftd on this node: it takes a lease again (reusing this subnet while it is free) and rewrites subnet.env; recreate this node's pods if the subnet changed. `weft leases list` shows every lease",
        );
    };
    let ttl = match &row.ttl {
        Ttl::Seconds(s) => format!("TTL {}", crate::human::ttl(*s)),
        Ttl::Reservation => "a reservation (no TTL)".to_string(),
        Ttl::Expired => "expired".to_string(),
        Ttl::Unknown(e) => format!("TTL unknown ({e})"),
    };
    if row.ttl == Ttl::Expired || !row.problems.is_empty() {
        let problems: Vec<String> = row
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.flag.as_str(), p.message))
            .collect();
        let what = if row.ttl == Ttl::Expired {
            vec!["its etcd lease has expired and the key is about to disappear".to_string()]
        } else {
            problems
        };
        return Finding::fail(
            LEASE,
            format!("{head}, lease {key}: {}", what.join("; ")),
            "peers skip or mis-program a lease like this, so pods on this node are cut off from pods elsewhere",
            "restart weftd on this node so it takes a clean lease; delete stale keys with `etcdctl del <key>` (see `weft leases list`)",
        );
    }
    let Some(ip) = row.public_ip else {
        return Finding::fail(
            LEASE,
            format!("{head}, lease {key} has no PublicIP"),
            "peers cannot reach this node",
            "restart weftd on this node",
        );
    };
    if net.is_none() {
        return Finding::warn(
            LEASE,
            format!(
                "{head}, lease {key} for PublicIP {ip}, {ttl}; this host's addresses could not be listed"
            ),
            "whether the lease belongs to this node could not be verified",
            "run weft doctor as root inside the node's network namespace",
        );
    }
    match local(ip) {
        Some(dev) => Finding::ok(
            LEASE,
            format!("{head} is leased to this node: node IP {ip} ({dev}), {ttl}"),
        ),
        None => {
            if let Some(h) = held {
                return Finding::fail(
                    LEASE,
                    format!(
                        "{head} is leased to {ip}, not to this node, which holds {} (PublicIP {})",
                        h.subnet
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| h.key.clone()),
                        h.public_ip.map(|i| i.to_string()).unwrap_or_default()
                    ),
                    "subnet.env is stale: pods here get addresses of another node's subnet, and replies to them go to that node",
                    "restart weftd on this node so it rewrites subnet.env from its lease, then recreate this node's pods",
                );
            }
            Finding::warn(
                LEASE,
                format!(
                    "{head}, lease {key} names PublicIP {ip}, which is not an address of this host (local: {})",
                    local_addrs_text(f)
                ),
                "that is right only when weftd runs with --public-ip behind NAT; otherwise the subnet belongs to another node and subnet.env here is stale",
                "if weftd has no --public-ip, restart it on this node so it takes its own lease and rewrites subnet.env",
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. flannel.<VNI>

fn vxlan_device(f: &Facts, d: &Derived) -> Finding {
    if let Some(cfg) = &d.cfg
        && !matches!(cfg.backend, BackendConfig::Vxlan(_))
    {
        return Finding::skip(
            VXLAN_DEVICE,
            format!(
                "the backend is {:?}, not vxlan: there is no flannel.<VNI> device to check",
                cfg.backend.type_name()
            ),
        );
    }
    let vx = d
        .cfg
        .as_ref()
        .and_then(|c| c.vxlan().copied())
        .unwrap_or_default();
    let assumed = if d.cfg.is_none() {
        " (no network config: assuming VNI 1 and port 8472)"
    } else {
        ""
    };
    let name = d.device_name();
    let net = match &f.net {
        Ok(n) => n,
        Err(e) => {
            return Finding::warn(
                VXLAN_DEVICE,
                format!("cannot list the links of this network namespace: {e}"),
                "the device could not be checked",
                "run weft doctor as root on the node (or inside the node's network namespace)",
            );
        }
    };
    let Some(dev) = net.link_named(&name) else {
        let others: Vec<&str> = net
            .links
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| n.starts_with("flannel."))
            .collect();
        let also = if others.is_empty() {
            String::new()
        } else {
            format!(" (found {}: the VNI changed?)", others.join(", "))
        };
        return Finding::fail(
            VXLAN_DEVICE,
            format!("{name} does not exist{also}{assumed}"),
            "weftd creates the VXLAN device after it takes its lease; without it this node reaches no pod on another node",
            "start weftd on this node and read its log; the lease row says whether it holds a lease",
        );
    };
    let want_port = if vx.port == 0 {
        KERNEL_DEFAULT_VXLAN_PORT
    } else {
        vx.port
    };
    let attrs = dev.vxlan.clone().unwrap_or_default();
    if dev.kind.as_deref() != Some("vxlan") {
        return Finding::fail(
            VXLAN_DEVICE,
            format!(
                "{name} is a {} device, not vxlan",
                dev.kind.as_deref().unwrap_or("unknown")
            ),
            "something else took the name weftd needs",
            format!("delete it (`ip link del {name}`) and restart weftd"),
        );
    }
    let mut fails = Vec::new();
    let mut warns = Vec::new();
    if attrs.vni != Some(vx.vni) {
        fails.push(format!(
            "VNI {} instead of {}",
            attrs.vni.map_or("unknown".into(), |v| v.to_string()),
            vx.vni
        ));
    }
    if let Some(port) = attrs.port
        && port != want_port
    {
        fails.push(format!("UDP port {port} instead of {want_port}"));
    }
    if !dev.up {
        fails.push("it is down".into());
    }
    // The underlay: the VXLAN device's lower link, else the link holding the lease's IP.
    let lease_ip = d.own_lease().map(|l| l.attrs.public_ip);
    let underlay = attrs
        .underlay_index
        .filter(|i| *i > 0)
        .and_then(|i| net.link(i))
        .or_else(|| {
            let ip = attrs.local.or(lease_ip.map(std::net::IpAddr::V4))?;
            let idx = net
                .addrs
                .iter()
                .find(|(_, a)| std::net::IpAddr::V4(*a) == ip)?
                .0;
            net.link(idx)
        });
    let mtu_text = match underlay {
        Some(u) => {
            let max = u.mtu.saturating_sub(VXLAN_OVERHEAD);
            let want = vx.device_mtu(u.mtu);
            if dev.mtu > max {
                fails.push(format!(
                    "MTU {} is more than {} MTU {} - {VXLAN_OVERHEAD} = {max}: full-size encapsulated packets do not fit the underlay and are dropped",
                    dev.mtu, u.name, u.mtu
                ));
            } else if dev.mtu < want {
                warns.push(format!(
                    "MTU {} is below {want} ({} MTU {} - {VXLAN_OVERHEAD}{}): pods use smaller packets than the underlay carries",
                    dev.mtu,
                    u.name,
                    vx.mtu.unwrap_or(u.mtu),
                    if vx.mtu.is_some() { ", the config's MTU" } else { "" }
                ));
            }
            format!(
                "MTU {} ({} MTU {} - {VXLAN_OVERHEAD})",
                dev.mtu, u.name, u.mtu
            )
        }
        None => {
            warns.push("its underlay link could not be found, so its MTU was not checked".into());
            format!("MTU {}", dev.mtu)
        }
    };
    if let Some(env) = &d.env
        && env.mtu != dev.mtu
    {
        let msg = format!(
            "FLANNEL_MTU in {} is {}, the device's MTU is {}",
            f.subnet_file.display(),
            env.mtu,
            dev.mtu
        );
        if env.mtu > dev.mtu {
            fails.push(format!(
                "{msg}: pods send packets bigger than the tunnel carries"
            ));
        } else {
            warns.push(msg);
        }
    }
    if let (Some(l), Some(mac)) = (d.own_lease(), dev.mac)
        && let Ok(data) = l.attrs.vxlan_data()
        && data.vtep_mac != mac
    {
        fails.push(format!(
            "its MAC {mac} differs from the VtepMAC {} this node's lease advertises: peers address this node's VTEP with the wrong MAC",
            data.vtep_mac
        ));
    }
    let detail_ok = format!(
        "{name}: VNI {}, port {want_port}, {mtu_text}, {}{assumed}",
        vx.vni,
        if dev.up { "up" } else { "down" }
    );
    if !fails.is_empty() {
        return Finding::fail(
            VXLAN_DEVICE,
            format!(
                "{name}: {}",
                fails
                    .iter()
                    .chain(&warns)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "weftd reuses a compatible existing device as it is and recreates an incompatible one at start; a device that differs now was changed by hand or by another agent, or weftd is not running",
            format!(
                "restart weftd on this node; if it persists, delete the device (`ip link del {name}`) and restart weftd so it creates it from the config (VNI {}, port {want_port}, MTU = underlay MTU - {VXLAN_OVERHEAD})",
                vx.vni
            ),
        );
    }
    if !warns.is_empty() {
        return Finding::warn(
            VXLAN_DEVICE,
            format!("{detail_ok}; {}", warns.join("; ")),
            "the device works, but not as weftd would set it up now",
            format!(
                "delete the device (`ip link del {name}`) and restart weftd so it recreates it; set Backend.MTU in the network config only to override the underlay MTU"
            ),
        );
    }
    Finding::ok(VXLAN_DEVICE, detail_ok)
}

// ---------------------------------------------------------------------------------------
// 5. peers

/// The command for `op`: `dev` is the VXLAN device, `ext` the external interface (where a
/// direct route goes).
fn op_command(op: &Op, dev: &str, ext: &str) -> String {
    match op {
        Op::SetNeigh(n) => format!(
            "ip neigh replace {} lladdr {} dev {dev} nud permanent",
            n.ip, n.mac
        ),
        Op::SetFdb(e) => format!(
            "bridge fdb replace {} dev {dev} dst {} self permanent",
            e.mac, e.dst
        ),
        Op::SetRoute(r) => match (r.gw, r.underlay) {
            (Some(gw), true) => format!("ip route replace {} via {gw} dev {ext}", r.dst),
            (Some(gw), false) => format!("ip route replace {} via {gw} dev {dev} onlink", r.dst),
            (None, _) => format!(
                "ip route replace {} dev {}",
                r.dst,
                if r.underlay { ext } else { dev }
            ),
        },
        Op::DelNeigh(n) => format!("ip neigh del {} dev {dev}", n.ip),
        Op::DelFdb(e) => format!("bridge fdb del {} dev {dev} dst {} self", e.mac, e.dst),
        Op::DelRoute(r) => {
            let link = if r.underlay { ext } else { dev };
            match r.gw {
                Some(gw) => format!("ip route del {} via {gw} dev {link}", r.dst),
                None => format!("ip route del {} dev {link}", r.dst),
            }
        }
    }
}

/// The external interface for direct routes: the link holding this node's lease's PublicIP,
/// with its direct routes (into `network`) as read. `Err` is the finding when it cannot be
/// known or read.
fn external_routes(
    net: &NetFacts,
    d: &Derived,
    network: Ipv4Net,
) -> Result<(u32, String, Vec<RouteEntry>), Finding> {
    let Some(own) = d.own_lease() else {
        return Err(Finding::skip(
            PEERS,
            "this node's lease is not known (see lease), so neither its external interface nor its direct routes can be checked",
        ));
    };
    let ip = own.attrs.public_ip;
    let Some(index) = net.addrs.iter().find(|(_, a)| *a == ip).map(|(i, _)| *i) else {
        return Err(Finding::skip(
            PEERS,
            format!(
                "this node's PublicIP {ip} is not a local address (see lease), so its external interface is not known"
            ),
        ));
    };
    let name = net.link(index).map_or("?", |l| l.name.as_str()).to_string();
    let owned = Owned {
        device: None,
        underlay: Some((index, network)),
    };
    match net.underlay_state_of(index) {
        Some(Ok(state)) => Ok((
            index,
            name,
            state
                .routes
                .iter()
                .filter_map(|r| owned.route(index, *r))
                .collect(),
        )),
        Some(Err(e)) => Err(Finding::warn(
            PEERS,
            format!("cannot read the routes of {name}: {e}"),
            "the direct routes to the peers could not be checked",
            "run weft doctor as root on the node",
        )),
        None => Err(Finding::skip(
            PEERS,
            format!("the routes of {name} were not read"),
        )),
    }
}

fn peers(f: &Facts, d: &Derived) -> Finding {
    let Some(cfg) = &d.cfg else {
        return Finding::skip(PEERS, "no usable network config (see network-config)");
    };
    if let BackendConfig::Other { type_name } = &cfg.backend {
        return Finding::skip(
            PEERS,
            format!("the backend is {type_name:?}, which weftd does not run (see network-config)"),
        );
    }
    let Some(network) = cfg.network else {
        return Finding::skip(PEERS, "the network config has no IPv4 Network");
    };
    let Some(leases) = &d.leases else {
        return Finding::skip(PEERS, "the leases could not be read from etcd (see etcd)");
    };
    let mode = ReachMode::of(cfg);
    let name = d.device_name();
    let Ok(net) = &f.net else {
        return Finding::skip(
            PEERS,
            "the kernel state could not be read (see vxlan-device)",
        );
    };
    // What weft owns in the kernel: the VXLAN device's entries (none with host-gw) and the
    // direct routes on the external interface (host-gw, DirectRouting).
    let mut state = KernelState::default();
    if cfg.vxlan().is_some() {
        let Some(dev) = net.link_named(&name) else {
            return Finding::skip(PEERS, format!("{name} does not exist (see vxlan-device)"));
        };
        match net.state_of(dev.index) {
            Some(Ok(s)) => state = s.clone(),
            Some(Err(e)) => {
                return Finding::warn(
                    PEERS,
                    format!("cannot read the neighbours, FDB and routes of {name}: {e}"),
                    "the peers could not be checked",
                    "run weft doctor as root on the node",
                );
            }
            None => return Finding::skip(PEERS, format!("the state of {name} was not read")),
        }
    }
    let mut reach = Reach {
        mode,
        iface: String::new(),
        on_link: Vec::new(),
    };
    if mode != ReachMode::Vxlan {
        let (index, ext, routes) = match external_routes(net, d, network) {
            Ok(r) => r,
            Err(finding) => return finding,
        };
        state.routes.extend(routes);
        reach.on_link = net.networks_of(index);
        reach.iface = ext;
    }
    let ext = reach.iface.clone();
    let place = match mode {
        ReachMode::Vxlan => name.clone(),
        ReachMode::VxlanDirect => format!("{name} and {ext}"),
        ReachMode::HostGw => ext.clone(),
    };
    let own = d.own_subnet();
    let mut programmed: Vec<Peer> = Vec::new();
    let mut rejected = Vec::new();
    for l in leases {
        match classify_lease(cfg, own, l) {
            PeerVerdict::Peer(p) => match reach.decide(p) {
                Ok(p) => programmed.push(p),
                Err(why) => rejected.push(why),
            },
            PeerVerdict::Reject(why) => rejected.push(why),
            PeerVerdict::Ignore(_) => {}
        }
    }
    programmed.sort();
    let ops = diff(&programmed, &state);
    // Missing or wrong entries, grouped by the peer they belong to.
    let mut missing: BTreeMap<Ipv4Net, (Ipv4Addr, Vec<&'static str>)> = BTreeMap::new();
    let mut repair = Vec::new();
    let mut stale = Vec::new();
    for op in &ops {
        let (peer, what) = match op {
            Op::SetNeigh(n) => (
                programmed.iter().find(|p| p.subnet.network() == n.ip),
                "neighbour",
            ),
            Op::SetFdb(e) => (
                programmed
                    .iter()
                    .find(|p| p.vtep_mac == e.mac && p.public_ip == e.dst),
                "fdb",
            ),
            Op::SetRoute(r) => (
                programmed.iter().find(|p| p.subnet.trunc() == r.dst),
                if r.underlay { "direct route" } else { "route" },
            ),
            _ => {
                stale.push(format!("`{}`", op_command(op, &name, &ext)));
                continue;
            }
        };
        repair.push(format!("`{}`", op_command(op, &name, &ext)));
        if let Some(p) = peer {
            missing
                .entry(p.subnet)
                .or_insert_with(|| (p.public_ip, Vec::new()))
                .1
                .push(what);
        }
    }
    let rejected_text = if rejected.is_empty() {
        String::new()
    } else {
        format!("; leases weftd refuses to program: {}", rejected.join("; "))
    };
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(s, (ip, what))| format!("{s} (node {ip}): {} missing or wrong", what.join(", ")))
            .collect();
        let needs = match mode {
            ReachMode::Vxlan => "each peer needs a permanent neighbour (ARP) entry for its subnet address, an FDB entry sending its VTEP MAC to its public IP, and an onlink route".to_string(),
            ReachMode::VxlanDirect => format!("a peer on {ext}'s network (DirectRouting) needs a route to its subnet via its PublicIP on {ext}; any other peer a permanent neighbour (ARP) entry for its subnet address, an FDB entry sending its VTEP MAC to its public IP, and an onlink route on {name}"),
            ReachMode::HostGw => format!("each peer (host-gw) needs a route to its subnet via its PublicIP on {ext}"),
        };
        return Finding::fail(
            PEERS,
            format!(
                "{} of {} not programmed on {place}: {}{rejected_text}",
                missing.len(),
                plural(programmed.len(), "peer", "peers"),
                list.join("; ")
            ),
            format!(
                "pods on this node cannot reach pods in those subnets: {needs}. weftd programs them from the leases and repairs them on every change, so missing entries mean weftd is not running here, lost etcd, or failed to program them (its log and weft_errors_total{{kind=\"netlink\"}} say why)"
            ),
            format!(
                "start or restart weftd on this node (it repairs everything at start); by hand: {}",
                repair.join(", ")
            ),
        );
    }
    if !stale.is_empty() || !rejected.is_empty() {
        let stale_text = if stale.is_empty() {
            String::new()
        } else {
            format!("; stale entries: {}", stale.join(", "))
        };
        return Finding::warn(
            PEERS,
            format!(
                "{} programmed on {place}{stale_text}{rejected_text}",
                plural(programmed.len(), "peer", "peers")
            ),
            "stale entries point at nodes whose lease is gone (weftd removes them on its next sync; flanneld never does), and refused leases leave their subnets unreachable from here",
            "restart weftd if stale entries stay; fix or delete the refused leases (`weft leases list` flags them)",
        );
    }
    if programmed.is_empty() {
        return Finding::ok(
            PEERS,
            format!("no other node holds a lease: nothing to program on {place}"),
        );
    }
    let list: Vec<String> = programmed
        .iter()
        .map(|p| {
            if p.direct && mode == ReachMode::VxlanDirect {
                format!("{} via {} (direct)", p.subnet, p.public_ip)
            } else {
                format!("{} via {}", p.subnet, p.public_ip)
            }
        })
        .collect();
    let each = match mode {
        ReachMode::Vxlan => "neighbour, fdb, route each",
        ReachMode::VxlanDirect => {
            "a direct route each on the node's network, neighbour, fdb, route each through VXLAN"
        }
        ReachMode::HostGw => "a route via its PublicIP each",
    };
    Finding::ok(
        PEERS,
        format!(
            "{} programmed on {place} ({each}): {}",
            plural(programmed.len(), "peer", "peers"),
            list.join(", ")
        ),
    )
}

// ---------------------------------------------------------------------------------------
// 6. masquerade

/// "2 rules missing: a | b", or `otherwise` when none is missing but the rules still differ.
fn missing_rules(missing: &[String], otherwise: &str) -> String {
    if missing.is_empty() {
        otherwise.to_string()
    } else {
        format!(
            "{} missing: {}",
            plural(missing.len(), "rule", "rules"),
            missing.join(" | ")
        )
    }
}

/// Whitespace-normalised rule line, for telling which desired rules are absent.
fn norm(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn masquerade(f: &Facts, d: &Derived) -> Finding {
    let Some(env) = &d.env else {
        return Finding::skip(MASQUERADE, "no usable subnet.env (see lease)");
    };
    let (Some(network), Some(subnet)) = (env.network, env.subnet) else {
        return Finding::skip(
            MASQUERADE,
            "subnet.env has no FLANNEL_NETWORK or FLANNEL_SUBNET",
        );
    };
    let args = f
        .flannel_args
        .as_ref()
        .and_then(|a| a.as_ref().ok())
        .map(|t| parse::flannel_args(t));
    if !env.ipmasq {
        let args_note = match &args {
            Some(a) if !a.ip_masq => " and --flannel-args has no --ip-masq",
            _ => "",
        };
        return Finding::warn(
            MASQUERADE,
            format!(
                "FLANNEL_IPMASQ=false in {}{args_note}: weftd runs without --ip-masq",
                f.subnet_file.display()
            ),
            "on EKS the VPC does not route overlay addresses, so pod traffic leaving the cluster network must be masqueraded. With FLANNEL_IPMASQ=false the CNI plugin turns the bridge plugin's ipMasq on instead, which masquerades everything leaving the node's subnet, pod-to-pod traffic to other nodes included: pods there see this node's IP instead of the client pod's, and NetworkPolicy cannot tell pods apart",
            "run weftd with --ip-masq (the weft manifest does, as kube-flannel.yml does for flanneld), then recreate this node's pods so they get the bridge config without ipMasq",
        );
    }
    if nftables_mode(f, d) {
        return nft_masquerade(f, network, subnet);
    }
    let saved = match &f.iptables_nat {
        Ok(s) => s,
        Err(e) => {
            return Finding::warn(
                MASQUERADE,
                format!("cannot read the nat table: {e}"),
                "the masquerade rules could not be checked",
                format!(
                    "run weft doctor as root; pass --iptables-save if weftd uses another iptables than {}",
                    f.iptables_save
                ),
            );
        }
    };
    let variants = [true, false].map(|rf| masq_rules(network, subnet, rf));
    if variants
        .iter()
        .any(|rules| plan_sync(Table::Nat, saved, rules).is_none())
    {
        return Finding::ok(
            MASQUERADE,
            format!(
                "nat FLANNEL-POSTRTG holds weftd's 6 rules for Network {network}, subnet {subnet}, and POSTROUTING jumps to it ({})",
                f.iptables_save
            ),
        );
    }
    let lines: Vec<String> = saved.lines().map(norm).collect();
    let missing_of = |rules: &[weft_core::rules::Rule]| -> Vec<String> {
        rules
            .iter()
            .map(|r| r.append_line())
            .filter(|l| !lines.contains(&norm(l)))
            .collect()
    };
    let (rules, missing) = variants
        .iter()
        .map(|r| (r, missing_of(r)))
        .min_by_key(|(_, m)| m.len())
        .unwrap_or((&variants[0], Vec::new()));
    let what = missing_rules(
        &missing,
        "the rules are there but out of order or duplicated",
    );
    let payload = plan_sync(Table::Nat, saved, rules).unwrap_or_default();
    Finding::fail(
        MASQUERADE,
        format!("nat table ({}): {what}", f.iptables_save),
        "without FLANNEL-POSTRTG pod traffic to the VPC and the internet leaves with overlay source addresses and gets no reply (FLANNEL_IPMASQ=true told the CNI plugin to leave masquerading to weftd). weftd restores the rules within --iptables-resync seconds while it runs, so they stay missing only when weftd is not running, lacks NET_ADMIN, or uses another iptables backend than this one",
        format!(
            "check that weftd runs with --ip-masq (weftd-health, its log); weftd and kube-proxy must use the same iptables backend (legacy or nft). By hand: iptables-restore --noflush <<'EOF'\n{payload}EOF"
        ),
    )
}

/// Whether weftd runs flannel's nftables mode: the stored config says so; without a
/// readable config, whether flannel's nftables table is there.
fn nftables_mode(f: &Facts, d: &Derived) -> bool {
    match &d.cfg {
        Some(cfg) => cfg.enable_nftables,
        None => matches!(f.nft_table, Ok(Some(_))),
    }
}

/// nftables mode: chain `postrtg` of table `ip flannel-ipv4` holds flannel's six rules.
fn nft_masquerade(f: &Facts, network: Ipv4Net, subnet: Ipv4Net) -> Finding {
    use weft_core::nft::{self, NftRules};
    let by_hand = || {
        let tx = nft::transaction(&NftRules {
            cluster: network,
            own: subnet,
            masq: true,
            forward: true,
            fully_random: true,
        });
        format!(
            "check that weftd runs with --ip-masq (weftd-health, its log). By hand (replaces the table whole, as weftd does): nft -f - <<'EOF'\n{tx}EOF"
        )
    };
    const CAUSE: &str = "without chain postrtg pod traffic to the VPC and the internet leaves with overlay source addresses and gets no reply (FLANNEL_IPMASQ=true told the CNI plugin to leave masquerading to weftd). weftd repairs the table from nf_tables notifications while it runs, so it stays wrong only when weftd is not running or lacks NET_ADMIN";
    let listing = match &f.nft_table {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Finding::fail(
                MASQUERADE,
                "EnableNFTables is set, but there is no nftables table ip flannel-ipv4",
                CAUSE,
                by_hand(),
            );
        }
        Err(e) => {
            return Finding::warn(
                MASQUERADE,
                format!("cannot list the nftables table ip flannel-ipv4: {e}"),
                "the masquerade rules could not be checked",
                "run weft doctor as root on the node (the weft image has nft)",
            );
        }
    };
    let Some(rules) = nft::chain_rules(listing, "postrtg") else {
        return Finding::fail(
            MASQUERADE,
            "table ip flannel-ipv4 has no chain postrtg",
            CAUSE,
            by_hand(),
        );
    };
    let variants = [true, false].map(|fr| nft::listed_masq_rules(network, subnet, fr));
    if variants.contains(&rules) {
        return Finding::ok(
            MASQUERADE,
            format!(
                "nftables table ip flannel-ipv4, chain postrtg holds weftd's 6 rules for Network {network}, subnet {subnet}"
            ),
        );
    }
    let missing = variants
        .iter()
        .map(|want| -> Vec<String> {
            want.iter()
                .filter(|l| !rules.contains(l))
                .cloned()
                .collect()
        })
        .min_by_key(Vec::len)
        .unwrap_or_default();
    let what = missing_rules(
        &missing,
        "the rules are there but out of order, duplicated or joined by others",
    );
    Finding::fail(
        MASQUERADE,
        format!("nftables table ip flannel-ipv4, chain postrtg: {what}"),
        CAUSE,
        by_hand(),
    )
}

/// weft's chains must be in the backend the host (kubelet, kube-proxy) uses, which is what
/// weftd's `--iptables-backend=auto` picks (weft_core::xtables). In nftables mode there must
/// be none in either backend, and in iptables mode no nftables table.
fn iptables_backend(f: &Facts, d: &Derived) -> Finding {
    let nft_mode = nftables_mode(f, d);
    if !nft_mode && matches!(f.nft_table, Ok(Some(_))) {
        return Finding::warn(
            IPTABLES_BACKEND,
            "EnableNFTables is false, but the nftables table ip flannel-ipv4 (the nftables mode's) is there",
            "a flanneld or weftd that ran in nftables mode left it; its chains masquerade and accept traffic a second time beside the iptables mode's (weftd removes it when it starts in iptables mode)",
            "restart weftd, or remove it by hand: `nft delete table ip flannel-ipv4`",
        );
    }
    use weft_core::xtables::{Backend, detect_backend};
    let Some(d) = &f.iptables_backends else {
        return Finding::skip(
            IPTABLES_BACKEND,
            "neither iptables-legacy-save nor iptables-nft-save is installed here, so the two backends cannot be compared (the weft image has both)",
        );
    };
    let host = detect_backend(&d.legacy, &d.nft);
    let other = match host.backend {
        Backend::Legacy => Backend::Nft,
        Backend::Nft => Backend::Legacy,
    };
    let has_weft = |dump: &str| {
        dump.lines().any(|l| {
            l.strip_prefix(':')
                .and_then(|l| l.split_whitespace().next())
                .is_some_and(|c| c == MASQ_CHAIN || c == FORWARD_CHAIN)
        })
    };
    let dump = |b: Backend| match b {
        Backend::Legacy => &d.legacy,
        Backend::Nft => &d.nft,
    };
    let (in_host, in_other) = (has_weft(dump(host.backend)), has_weft(dump(other)));
    let remove_from = |b: Backend| {
        format!(
            "remove weft's chains from iptables-{b}: delete the jumps to them (`iptables-{b}-save | grep FLANNEL` lists them; `iptables-{b} -t nat -D POSTROUTING ...`, `iptables-{b} -t filter -D FORWARD ...`), then `iptables-{b} -t nat -F {MASQ_CHAIN}; iptables-{b} -t nat -X {MASQ_CHAIN}; iptables-{b} -t filter -F {FORWARD_CHAIN}; iptables-{b} -t filter -X {FORWARD_CHAIN}`"
        )
    };
    if nft_mode {
        let holding: Vec<Backend> = [(host.backend, in_host), (other, in_other)]
            .into_iter()
            .filter_map(|(b, has)| has.then_some(b))
            .collect();
        if holding.is_empty() {
            return Finding::ok(
                IPTABLES_BACKEND,
                "nftables mode: weft's rules are in table ip flannel-ipv4, and neither iptables backend holds the iptables mode's chains",
            );
        }
        return Finding::warn(
            IPTABLES_BACKEND,
            format!(
                "EnableNFTables is set, but the iptables mode's chains ({MASQ_CHAIN}, {FORWARD_CHAIN}) are in {}",
                holding
                    .iter()
                    .map(|b| format!("iptables-{b}"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            "a flanneld or weftd that ran in iptables mode left them; they masquerade and accept traffic a second time beside table ip flannel-ipv4 (weftd removes them when it starts in nftables mode)",
            format!(
                "restart weftd, or {}",
                holding
                    .iter()
                    .map(|b| remove_from(*b))
                    .collect::<Vec<_>>()
                    .join("; and ")
            ),
        );
    }
    let remove = remove_from(other);
    match (in_host, in_other) {
        (true, false) => Finding::ok(
            IPTABLES_BACKEND,
            format!(
                "weft's chains are in iptables-{}, the host's backend ({host})",
                host.backend
            ),
        ),
        (false, false) => Finding::ok(
            IPTABLES_BACKEND,
            format!(
                "the host's backend is {host}; weft's chains are in neither backend yet (masquerade says whether they should be)"
            ),
        ),
        (false, true) => Finding::fail(
            IPTABLES_BACKEND,
            format!(
                "weft's chains are in iptables-{other}, but the host's rules are in iptables-{} ({host})",
                host.backend
            ),
            "iptables-legacy and iptables-nft are two separate rule sets in the kernel and a packet passes both, in an order neither tool controls, so weft's masquerade and forward rules no longer run where kube-proxy's rules expect them (Service traffic masqueraded twice or not at all, pod traffic dropped by the other set's FORWARD policy). weftd with --iptables-backend=auto writes where the host's rules are; an explicit --iptables-backend or WEFT_IPTABLES_BACKEND overrides that",
            format!(
                "run weftd with --iptables-backend=auto (the default) or --iptables-backend={}; then {remove}",
                host.backend
            ),
        ),
        (true, true) => Finding::warn(
            IPTABLES_BACKEND,
            format!(
                "weft's chains are in both backends: iptables-{} (the host's: {host}) and iptables-{other}",
                host.backend
            ),
            "a weftd that once ran with the other backend left its chains there; they masquerade and accept traffic a second time, in an order neither backend controls",
            remove,
        ),
    }
}

// ---------------------------------------------------------------------------------------
// 7. sysctls

fn ip_forward(f: &Facts) -> Finding {
    match &f.ip_forward {
        FileText::Text(t) if t.trim() == "1" => Finding::ok(IP_FORWARD, "net.ipv4.ip_forward = 1"),
        FileText::Text(t) => Finding::fail(
            IP_FORWARD,
            format!("net.ipv4.ip_forward = {}", t.trim()),
            "the kernel drops every packet it would forward: pods reach nothing beyond this node, and nothing reaches them through flannel.<VNI>",
            "`sysctl -w net.ipv4.ip_forward=1`, and make it stay: `echo net.ipv4.ip_forward=1 > /etc/sysctl.d/99-weft.conf` (kube-proxy and the EKS AMIs normally set it)",
        ),
        FileText::Missing => Finding::warn(
            IP_FORWARD,
            "/proc/sys/net/ipv4/ip_forward does not exist",
            "IP forwarding could not be checked (no /proc?)",
            "run weft doctor on the node with /proc mounted",
        ),
        FileText::Unreadable(e) => Finding::warn(
            IP_FORWARD,
            format!("cannot read /proc/sys/net/ipv4/ip_forward: {e}"),
            "IP forwarding could not be checked",
            "run weft doctor on the node with /proc mounted",
        ),
    }
}

fn br_netfilter(f: &Facts, d: &Derived) -> Finding {
    if d.cfg.as_ref().is_some_and(|c| c.enable_nftables) {
        return Finding::skip(
            BR_NETFILTER,
            "EnableNFTables is set: br_netfilter is not needed",
        );
    }
    match &f.bridge_nf_call_iptables {
        FileText::Text(t) if t.trim() == "1" => Finding::ok(
            BR_NETFILTER,
            "br_netfilter is loaded, net.bridge.bridge-nf-call-iptables = 1",
        ),
        FileText::Text(t) => Finding::warn(
            BR_NETFILTER,
            format!("net.bridge.bridge-nf-call-iptables = {}", t.trim()),
            "traffic between pods on the same bridge (cni0) bypasses iptables, so kube-proxy's Service rules miss it: a pod reaching a Service whose backend sits on the same node fails or gets the wrong source",
            "`sysctl -w net.bridge.bridge-nf-call-iptables=1`, persisted in /etc/sysctl.d/",
        ),
        FileText::Missing => Finding::warn(
            BR_NETFILTER,
            "/proc/sys/net/bridge/bridge-nf-call-iptables does not exist: the br_netfilter module is not loaded",
            "flanneld refuses to start without it (`Failed to check br_netfilter: stat /proc/sys/net/bridge/bridge-nf-call-iptables: no such file or directory`), and without it kube-proxy's Service rules miss pod-to-pod traffic on the same bridge",
            "`modprobe br_netfilter`, and load it at boot: `echo br_netfilter > /etc/modules-load.d/br_netfilter.conf`",
        ),
        FileText::Unreadable(e) => Finding::warn(
            BR_NETFILTER,
            format!("cannot read /proc/sys/net/bridge/bridge-nf-call-iptables: {e}"),
            "br_netfilter could not be checked",
            "run weft doctor as root on the node",
        ),
    }
}

// ---------------------------------------------------------------------------------------
// 8. the first CNI config, and the VPC CNI's leftovers

/// Both forms of error E4, as kubelet/containerd report them.
pub const E4_BEFORE_1_23: &str = "dial tcp 127.0.0.1:50051: connect: connection refused";
pub const E4_FROM_1_23: &str =
    "dial unix /var/run/aws-node/ipamd.sock: connect: connection refused";

fn cni_config(f: &Facts) -> Finding {
    let conf = &f.cni.conf_dir;
    let dir = conf.dir.display();
    let entries = match &conf.entries {
        Ok(e) => e,
        Err(e) => {
            return Finding::warn(
                CNI_CONFIG,
                e.clone(),
                "the CNI config could not be checked",
                "run weft doctor as root, with --conf-dir set to the container runtime's conf dir",
            );
        }
    };
    let configs: Vec<_> = entries
        .iter()
        .filter(|e| is_network_config_name(&e.name) && e.kind != Kind::Dir)
        .collect();
    let Some(first) = configs.first() else {
        return Finding::fail(
            CNI_CONFIG,
            format!("{dir} holds no network config (.conf, .conflist, .json)"),
            "the container runtime has no network to put pods on: new pods stay in ContainerCreating with `network plugin is not ready: cni config uninitialized`",
            format!(
                "install weft's config and plugin: `weft install-cni --conf-dir {dir} --bin-dir {}` (the weft DaemonSet's init container does this)",
                f.cni.bin_dir.dir.display()
            ),
        );
    };
    let content = first.content.as_deref();
    let plugin = content.and_then(config_plugin_type);
    let plugin_text = plugin.as_deref().unwrap_or("unreadable");
    let path = conf.dir.join(&first.name);
    if is_aws_config(&first.name, content) {
        return Finding::fail(
            CNI_CONFIG,
            format!(
                "the first network config in {dir} is the AWS VPC CNI's {} (plugin {plugin_text}), not weft's {DEFAULT_CONFLIST_NAME}",
                first.name
            ),
            format!(
                "error E4: the container runtime uses the first config in lexical order, and \"10-aws.conflist\" sorts before \"10-flannel.conflist\", so every new pod goes to aws-cni, which calls ipamd; with aws-node gone, sandboxes fail with `Failed to create pod sandbox: ... networkPlugin cni failed to set up pod ... network: add cmd: Error received from AddNetwork gRPC call: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing {E4_BEFORE_1_23}\"` (VPC CNI up to v1.22) or the same error naming ipamd's unix socket instead (v1.23+: `{E4_FROM_1_23}`, or `no such file or directory` once /var/run/aws-node/ipamd.sock is gone). Nothing in aws-node removes the file when it is deleted"
            ),
            "run `weft node cleanup-vpc-cni` to see the plan, then `weft node cleanup-vpc-cni --apply`: it moves the VPC CNI's config aside and removes its rules, routes and binaries in place, so the node does not need to be replaced; recreate the pods that failed",
        );
    }
    if plugin.as_deref() != Some(PLUGIN_FILE_NAME) {
        return Finding::fail(
            CNI_CONFIG,
            format!(
                "the first network config in {dir} is {} (plugin {plugin_text}), not weft's {DEFAULT_CONFLIST_NAME} (plugin flannel)",
                first.name
            ),
            "the container runtime uses the first config in lexical order, so new pods go to that plugin instead of weft",
            format!(
                "install weft's config (`weft install-cni --conf-dir {dir}`) and move {} out of the directory (or rename it to sort after {DEFAULT_CONFLIST_NAME})",
                path.display()
            ),
        );
    }
    let bin = &f.cni.bin_dir;
    let names = bin.names();
    if bin.entries.is_ok() && !names.contains(&PLUGIN_FILE_NAME) {
        return Finding::fail(
            CNI_CONFIG,
            format!(
                "{} is weft's config, but {} has no `flannel` plugin",
                path.display(),
                bin.dir.display()
            ),
            "the runtime finds no plugin binary for type flannel: `failed to find plugin \"flannel\" in path`",
            format!("`weft install-cni --bin-dir {}`", bin.dir.display()),
        );
    }
    let missing = missing_plugins(names.iter().copied());
    if bin.entries.is_ok() && !missing.is_empty() {
        return Finding::warn(
            CNI_CONFIG,
            format!(
                "{} is first (plugin flannel), but {} misses {}",
                path.display(),
                bin.dir.display(),
                missing.join(", ")
            ),
            "weft's config delegates to bridge with host-local IPAM and chains portmap, and containerd runs loopback for every pod (on EKS the VPC CNI's init container copies loopback, portmap, bandwidth and host-local, never bridge)",
            format!(
                "run `weft install-cni --plugins-dir /usr/lib/weft/cni` from the weft image (the DaemonSet's install-cni init container does) to copy the static reference plugins into {}",
                bin.dir.display()
            ),
        );
    }
    Finding::ok(
        CNI_CONFIG,
        format!(
            "{} is the first network config (plugin flannel)",
            path.display()
        ),
    )
}

fn vpc_cni_leftovers(f: &Facts) -> Finding {
    let plan = &f.cni.leftovers;
    let first = f.cni.conf_dir.entries.as_ref().ok().and_then(|e| {
        e.iter()
            .find(|e| is_network_config_name(&e.name) && e.kind != Kind::Dir)
            .map(|e| f.cni.conf_dir.dir.join(&e.name))
    });
    // The first config is the cni-config row's business.
    let steps: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| {
            !(s.area == Area::CniConfig
                && s.actions.iter().any(
                    |a| matches!(a, Action::Rename { from, .. } if Some(from) == first.as_ref()),
                ))
        })
        .map(|s| format!("[{}] {}", s.area.label(), s.what))
        .collect();
    let mut notes = Vec::new();
    if let Some(b) = &plan.blocker {
        notes.push(b.clone());
    }
    notes.extend(
        plan.problems
            .iter()
            .map(|p| format!("could not inspect: {p}")),
    );
    if steps.is_empty() && notes.is_empty() {
        return Finding::ok(
            VPC_CNI_LEFTOVERS,
            "no AWS VPC CNI leftovers (iptables chains, nft table, ip rules, route tables, binaries, state)",
        );
    }
    let mut detail = Vec::new();
    if !steps.is_empty() {
        detail.push(format!(
            "`weft node cleanup-vpc-cni` would still: {}",
            steps.join("; ")
        ));
    }
    detail.extend(notes);
    Finding::warn(
        VPC_CNI_LEFTOVERS,
        detail.join("; "),
        "deleting aws-node leaves the VPC CNI's iptables chains (AWS-SNAT-CHAIN-0, AWS-CONNMARK-CHAIN-0), its nft table, its ip rules and ENI route tables, its binaries and state on the node; nothing removes them, and the SNAT and connmark rules cause subtle connectivity problems for overlay and host traffic",
        "`weft node cleanup-vpc-cni` prints each step with its reason; `weft node cleanup-vpc-cni --apply` carries them out in place (no node replacement needed); stop aws-node cluster-wide first",
    )
}

// ---------------------------------------------------------------------------------------
// 9. kubelet max pods (E5)

fn max_pods_fix(target: u32, usable: Option<u32>) -> String {
    let limit = usable
        .map(|u| format!(" (at most {u} for this node's subnet)"))
        .unwrap_or_default();
    format!(
        "set max pods to {target}{limit} and restart kubelet: AL2: `{}` in the launch template's user data (on a running node, `maxPods` in /etc/kubernetes/kubelet/kubelet-config.json and any --max-pods in KUBELET_EXTRA_ARGS); AL2023: NodeConfig spec.kubelet.config.maxPods: {target}, or {} (kubeReserved then follows), in the user data or /etc/eks/nodeadm.d/; Bottlerocket: {} (`apiclient set kubernetes.max-pods={target}`). EKS managed node groups inject max-pods themselves unless the launch template names a custom AMI. `weft eks plan` prints the per-node commands",
        AmiFamily::Al2.setting("<cluster-name>", target),
        AmiFamily::Al2023.setting("<cluster-name>", target),
        AmiFamily::Bottlerocket.setting("<cluster-name>", target),
    )
}

fn max_pods_check(f: &Facts, d: &Derived) -> Finding {
    let k = &f.kubelet;
    let Some((path, main)) = &k.main else {
        let searched: Vec<String> = k.searched.iter().map(|p| p.display().to_string()).collect();
        return Finding::skip(
            MAX_PODS,
            format!(
                "no kubelet config at {}; pass --kubelet-config",
                searched.join(", ")
            ),
        );
    };
    let text = match main {
        Ok(t) => t,
        Err(e) => {
            return Finding::warn(
                MAX_PODS,
                format!("cannot read {}: {e}", path.display()),
                "kubelet's max pods could not be checked",
                "run weft doctor as root, or pass --kubelet-config",
            );
        }
    };
    // The file, then its drop-ins in order: the last maxPods wins.
    let mut value = None;
    let mut source = path.display().to_string();
    let files = std::iter::once((path, Ok(text.clone())))
        .chain(k.dropins.iter().map(|(p, t)| (p, t.clone())));
    for (p, t) in files {
        let parsed = t.and_then(|t| parse::max_pods(&t));
        match parsed {
            Ok(Some(n)) => {
                value = Some(n);
                source = p.display().to_string();
            }
            Ok(None) => {}
            Err(e) => {
                return Finding::warn(
                    MAX_PODS,
                    format!("cannot read maxPods from {}: {e}", p.display()),
                    "kubelet's max pods could not be checked (kubelet would refuse this file too)",
                    "fix the file, or pass the right one with --kubelet-config",
                );
            }
        }
    }
    let (max, from) = match value {
        Some(n) => (n, format!("maxPods {n} in {source}")),
        None => (
            KUBELET_DEFAULT_MAX_PODS,
            format!(
                "{} sets no maxPods, so kubelet's default {KUBELET_DEFAULT_MAX_PODS} applies",
                path.display()
            ),
        ),
    };
    let subnet_len = d.own_subnet().map(|s| s.prefix_len()).or_else(|| {
        d.cfg
            .as_ref()
            .filter(|c| c.subnet_size() > 0)
            .map(|c| c.subnet_len)
    });
    let usable = subnet_len.map(max_pods::pod_addresses);
    let subnet_text = match (subnet_len, usable) {
        (Some(len), Some(u)) => format!(
            "a /{len} node subnet gives host-local {u} pod addresses (2^{} - 3)",
            32 - u32::from(len)
        ),
        _ => "the node subnet is unknown (no subnet.env or config)".to_string(),
    };
    let target = usable.map_or(KUBELET_DEFAULT_MAX_PODS, |u| {
        u.min(KUBELET_DEFAULT_MAX_PODS)
    });
    if let Some(u) = usable
        && max > u
    {
        return Finding::fail(
            MAX_PODS,
            format!("{from}, but {subnet_text}"),
            format!(
                "kubelet admits up to {max} pods, but host-local runs out of addresses after {u}: the pods past that fail with `failed to allocate for range 0: no IP addresses available in range set`"
            ),
            max_pods_fix(u.min(KUBELET_DEFAULT_MAX_PODS), usable),
        );
    }
    let eni_types: Vec<&str> = max_pods::TABLE
        .iter()
        .filter(|r| r.default_max_pods == max)
        .flat_map(|r| r.types.iter().copied())
        .collect();
    let custom_types: Vec<&str> = max_pods::TABLE
        .iter()
        .filter(|r| r.custom_networking == max)
        .flat_map(|r| r.types.iter().copied())
        .collect();
    let eni = if !eni_types.is_empty() {
        let row = max_pods::TABLE.iter().find(|r| r.default_max_pods == max);
        let formula = row
            .map(|r| {
                format!(
                    " ({} ENIs x ({} - 1) + 2)",
                    r.limits.enis, r.limits.ipv4_per_eni
                )
            })
            .unwrap_or_default();
        format!(
            ": the AWS VPC CNI's ENI limit of {}{formula}",
            eni_types.join(", ")
        )
    } else if !custom_types.is_empty() {
        format!(
            ": the VPC CNI's custom-networking ENI limit of {}",
            custom_types.join(", ")
        )
    } else {
        String::new()
    };
    if max < target {
        let cause = if eni.is_empty() {
            format!(
                "kubelet admits only {max} pods (daemonset pods included), fewer than the overlay allows; the scheduler says `Too many pods` while CPU, memory and addresses are free"
            )
        } else {
            format!(
                "error E5: the EKS AMI's bootstrap derived max pods from the ENI table when the node joined with the VPC CNI (ENIs x (IPv4 per ENI - 1) + 2), and replacing the CNI does not change kubelet's config: the node stays capped at {max} pods (hostNetwork daemonset pods included) and the scheduler says `Too many pods` while CPU, memory and overlay addresses are free"
            )
        };
        return Finding::warn(
            MAX_PODS,
            format!("{from}{eni}; {subnet_text}"),
            cause,
            max_pods_fix(target, usable),
        );
    }
    if !eni.is_empty() {
        return Finding::warn(
            MAX_PODS,
            format!("{from}{eni}; {subnet_text}"),
            "error E5's setting is still in place: the EKS AMI derives max pods from the VPC CNI's ENI table at boot. It does not limit this node today, but it follows the instance type, not the overlay: another instance type in the node group (or a relaunch) brings another cap, and kubeReserved memory is sized for it",
            max_pods_fix(max.min(usable.unwrap_or(max)), usable),
        );
    }
    Finding::ok(MAX_PODS, format!("{from}; {subnet_text}"))
}

// ---------------------------------------------------------------------------------------
// 10. kube subnet manager without podCIDRs (E1)

fn kube_subnet_mgr(f: &Facts) -> Finding {
    let nodes = match &f.nodes {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            return Finding::warn(
                KUBE_SUBNET_MGR,
                format!("cannot read --nodes-json: {e}"),
                "the nodes' podCIDRs could not be checked",
                "pass the output of `kubectl get nodes -o json`",
            );
        }
        None => None,
    };
    let without: Vec<&str> = nodes
        .map(|n| {
            n.iter()
                .filter(|n| n.pod_cidr.is_none())
                .map(|n| n.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    let count = nodes.map_or(0, |n| n.len());
    let args = match &f.flannel_args {
        None => {
            return Finding::skip(
                KUBE_SUBNET_MGR,
                "pass --flannel-args (the flanneld or weftd container's args) to check the subnet manager mode",
            );
        }
        Some(Err(e)) => {
            return Finding::warn(
                KUBE_SUBNET_MGR,
                format!("cannot read --flannel-args: {e}"),
                "the subnet manager mode could not be checked",
                "pass the args themselves or a readable file",
            );
        }
        Some(Ok(t)) => parse::flannel_args(t),
    };
    if !args.kube_subnet_mgr {
        let mode = match &args.etcd_endpoints {
            Some(ep) => format!("etcd mode (--etcd-endpoints={ep})"),
            None => "etcd mode (no --kube-subnet-mgr; flanneld's default etcd endpoints unless --etcd-endpoints is set)".to_string(),
        };
        let pods = if count == 1 && without.len() == 1 {
            "; the node has no podCIDR, which etcd mode does not need".to_string()
        } else if count > 0 && without.len() == count {
            format!("; none of the {count} nodes has a podCIDR, which etcd mode does not need")
        } else {
            String::new()
        };
        return Finding::ok(KUBE_SUBNET_MGR, format!("{mode}{pods}"));
    }
    let flag = args
        .kube_flag
        .clone()
        .unwrap_or_else(|| "--kube-subnet-mgr".into());
    let fix = "run weftd (or flanneld) in etcd mode instead: remove --kube-subnet-mgr (or pass --kube-subnet-mgr=false) and pass --etcd-endpoints=http://<etcd>:2379, with the network config written to etcd v3 (`weft network init`); `weft manifest` renders a DaemonSet that does this";
    match nodes {
        Some(_) if !without.is_empty() => {
            let shown: Vec<&str> = without.iter().take(5).copied().collect();
            let more = if without.len() > shown.len() {
                format!(" and {} more", without.len() - shown.len())
            } else {
                String::new()
            };
            Finding::fail(
                KUBE_SUBNET_MGR,
                format!(
                    "node pod cidr not assigned: the args use the kube subnet manager ({flag}), but {} of {} have no spec.podCIDR: {}{more}",
                    without.len(),
                    plural(count, "node", "nodes"),
                    shown.join(", ")
                ),
                format!(
                    "error E1: in kube mode flanneld takes each node's subnet from node.spec.podCIDR, which only a control plane with --allocate-node-cidrs assigns (kubeadm --pod-network-cidr); EKS never assigns podCIDRs, so flanneld exits with `Error registering network: failed to acquire lease: node \"{}\" pod cidr not assigned` (weftd refuses --kube-subnet-mgr outright)",
                    shown.first().copied().unwrap_or("<node>")
                ),
                fix,
            )
        }
        Some(_) => Finding::warn(
            KUBE_SUBNET_MGR,
            format!(
                "the args use the kube subnet manager ({flag}); every one of the {} has a spec.podCIDR",
                plural(count, "node", "nodes")
            ),
            "flanneld can run like this, but weftd has no kube mode yet and refuses --kube-subnet-mgr; on EKS new nodes never get a podCIDR, so each one would hit error E1 (`node pod cidr not assigned`) unless something assigns them",
            fix,
        ),
        None => Finding::warn(
            KUBE_SUBNET_MGR,
            format!(
                "the args use the kube subnet manager ({flag}); pass --nodes-json to see whether the nodes have a spec.podCIDR"
            ),
            "error E1: kube mode needs node.spec.podCIDR on every node, and EKS never assigns podCIDRs: flanneld exits with `Error registering network: failed to acquire lease: node \"<node>\" pod cidr not assigned` (weftd refuses --kube-subnet-mgr outright)",
            fix,
        ),
    }
}

// ---------------------------------------------------------------------------------------
// 11. weftd's /readyz and /metrics

fn weftd_health(f: &Facts) -> Finding {
    let Some(h) = &f.health else {
        return Finding::skip(
            WEFTD_HEALTH,
            "pass --healthz http://127.0.0.1:<weftd --healthz-port> to read weftd's /readyz and /metrics",
        );
    };
    let metrics = match &h.metrics {
        Ok((200, body)) => Some(parse::metrics(body)),
        _ => None,
    };
    let mut facts = Vec::new();
    let mut warns = Vec::new();
    if let Some(m) = &metrics {
        if let (Some(known), Some(prog)) = (m.peers_known, m.peers_programmed) {
            facts.push(format!("{prog} of {known} peers programmed"));
            if prog < known {
                warns.push(format!("only {prog} of {known} peers are programmed"));
            }
        }
        if m.lease_held == Some(0.0) {
            warns.push("weft_lease_held is 0".into());
        }
        if !m.errors.is_empty() {
            let e: Vec<String> = m.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
            facts.push(format!("errors since start: {}", e.join(", ")));
        }
    }
    let facts_text = if facts.is_empty() {
        String::new()
    } else {
        format!("; metrics: {}", facts.join(", "))
    };
    match &h.readyz {
        Err(e) => Finding::warn(
            WEFTD_HEALTH,
            format!("no answer from {}/readyz: {e}", h.url),
            "weftd is not running on this node, or serves its health port elsewhere (weftd --healthz-port; 0 turns the server off)",
            "start weftd (the weft DaemonSet) and pass the URL of its --healthz-ip/--healthz-port",
        ),
        Ok((200, _)) if warns.is_empty() => {
            Finding::ok(WEFTD_HEALTH, format!("{}/readyz: ready{facts_text}", h.url))
        }
        Ok((200, _)) => Finding::warn(
            WEFTD_HEALTH,
            format!(
                "{}/readyz: ready, but {}{facts_text}",
                h.url,
                warns.join("; ")
            ),
            "weftd reports it could not program every peer it knows (see the peers row and its log)",
            "read weftd's log for the failing peers; restart weftd if the count stays behind",
        ),
        Ok((code, body)) => Finding::warn(
            WEFTD_HEALTH,
            format!(
                "{}/readyz answers {code}: {}{facts_text}",
                h.url,
                body.trim()
            ),
            "weftd runs but is not ready: it has not written subnet.env or put its data plane in place, so new pods on this node fail; the reason above is weftd's own",
            "fix what the reason names (usually etcd or the network config: see those rows), then watch /readyz turn 200",
        ),
    }
}
