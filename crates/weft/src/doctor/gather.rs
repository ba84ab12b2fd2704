//! The effects layer of `weft doctor`: reads etcd, files, the kernel (netlink), the nat table,
//! the CNI dirs (through the VPC CNI cleanup planner's snapshot) and weftd's health server,
//! and hands plain [`Facts`] to the checks. Nothing here decides anything, and nothing here
//! changes the node.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use clap::Parser;
use ipnet::Ipv4Net;
use weft_core::config::NetworkConfig;
use weft_core::dataplane::Owned;
use weft_core::peer::ReachMode;
use weft_core::subnet::{config_key, subnets_key_prefix};
use weft_net::Netlink;
use weft_store::{Store, StoreError};

use super::DoctorArgs;
use super::facts::{
    BackendDumps, CniFacts, EtcdData, EtcdFacts, Facts, FileText, HealthFacts, KubeletFacts,
    NetFacts,
};
use crate::cleanup::snapshot::{self, SystemHost};
use crate::cleanup::{PathArgs, ToolArgs, plan};
use crate::cli::EtcdArgs;
use crate::eks::inputs;
use crate::etcd::{Etcd, store_cause};
use crate::v2;

/// kubelet config files of the EKS AMIs, in the order they are looked for.
pub const KUBELET_CONFIGS: &[&str] = &[
    // AL2023 (nodeadm).
    "/etc/kubernetes/kubelet/config.json",
    // AL2 (bootstrap.sh).
    "/etc/kubernetes/kubelet/kubelet-config.json",
    // Bottlerocket.
    "/etc/kubernetes/kubelet/config",
];

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
/// Larger files are not what the flags ask for.
const MAX_INPUT_BYTES: u64 = 16 << 20;

/// Gathers everything. Fails only on flags that cannot work (bad endpoints).
pub async fn gather(args: &DoctorArgs) -> Result<Facts> {
    let etcd = etcd_facts(&args.etcd).await?;
    let root = args.host_root.as_deref();
    let cni = cni_facts(
        &on_host(root, &args.conf_dir),
        &on_host(root, &args.bin_dir),
    )?;
    let net = net_facts(direct_routes_network(&etcd)).await;
    let backends = iptables_backends();
    let iptables_save = match (args.iptables_save.as_str(), &backends) {
        ("auto", Some(d)) => format!(
            "iptables-{}-save",
            weft_core::xtables::detect_backend(&d.legacy, &d.nft).backend
        ),
        ("auto", None) => "iptables-save".to_string(),
        (program, _) => program.to_string(),
    };
    Ok(Facts {
        etcd,
        subnet_file: args.subnet_file.clone(),
        subnet_env: read_text(&args.subnet_file),
        net,
        iptables_nat: iptables_nat(&iptables_save),
        iptables_save,
        iptables_backends: backends,
        nft_table: nft_table(),
        ip_forward: read_text(Path::new(IP_FORWARD)),
        bridge_nf_call_iptables: read_text(Path::new(BRIDGE_NF_CALL_IPTABLES)),
        cni,
        kubelet: kubelet_facts(root, args.kubelet_config.as_deref()),
        flannel_args: args.flannel_args.as_deref().map(flannel_args_text),
        nodes: args.nodes_json.as_deref().map(read_nodes),
        health: args.healthz.as_deref().map(health_facts),
    })
}

/// A small text file: missing, unreadable (with why), or its content.
pub fn read_text(path: &Path) -> FileText {
    match std::fs::read(path) {
        Ok(bytes) => FileText::Text(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileText::Missing,
        Err(e) => FileText::Unreadable(e.to_string()),
    }
}

fn store_error(e: StoreError) -> String {
    match store_cause(&e) {
        (cause, Some(hint)) => format!("{cause} ({hint})"),
        (cause, None) => cause,
    }
}

async fn etcd_facts(args: &EtcdArgs) -> Result<EtcdFacts> {
    let cfg = args.store_config()?;
    let endpoints = cfg.endpoints.join(",");
    let reach = async {
        let store = Store::connect(&cfg).await.map_err(store_error)?;
        let config = store.get_config().await.map_err(store_error)?;
        let v2 = if config.is_none() {
            let (endpoints, key) = (cfg.endpoints.clone(), config_key(&cfg.prefix));
            let auth = args
                .etcd_username
                .clone()
                .map(|u| (u, args.etcd_password.clone().unwrap_or_default()));
            tokio::task::spawn_blocking(move || {
                let auth = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                v2::probe(&endpoints, &key, auth)
            })
            .await
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        let etcd = Etcd {
            store,
            cfg: cfg.clone(),
        };
        let leases = etcd.leases().await.map_err(|e| format!("{e:#}"));
        Ok::<_, String>(EtcdData { config, v2, leases })
    }
    .await;
    Ok(EtcdFacts {
        endpoints,
        config_key: config_key(&cfg.prefix),
        subnets_prefix: subnets_key_prefix(&cfg.prefix),
        reach,
    })
}

/// The flannel Network when the stored config routes peers directly (host-gw,
/// DirectRouting), so the direct routes are worth reading.
fn direct_routes_network(etcd: &EtcdFacts) -> Option<Ipv4Net> {
    let raw = etcd.reach.as_ref().ok()?.config.as_deref()?;
    let cfg = NetworkConfig::parse(raw).ok()?;
    (ReachMode::of(&cfg) != ReachMode::Vxlan)
        .then_some(cfg.network)
        .flatten()
}

async fn net_facts(direct_network: Option<Ipv4Net>) -> Result<NetFacts, String> {
    let nl = Netlink::connect().map_err(|e| e.to_string())?;
    let links = nl.links().await.map_err(|e| e.to_string())?;
    let raw = nl.ipv4_addresses().await.map_err(|e| e.to_string())?;
    let addrs = raw.iter().map(|(index, ip, _, _)| (*index, *ip)).collect();
    let mut networks: Vec<(u32, Ipv4Net)> = raw
        .iter()
        .filter_map(|(index, ip, prefix, _)| {
            Some((*index, Ipv4Net::new(*ip, *prefix).ok()?.trunc()))
        })
        .collect();
    networks.dedup();
    let mut vxlan_state = Vec::new();
    for l in links.iter().filter(|l| l.name.starts_with("flannel.")) {
        let state = nl.read_state(l.index).await.map_err(|e| e.to_string());
        vxlan_state.push((l.index, state));
    }
    let mut underlay_state = Vec::new();
    if let Some(network) = direct_network {
        let mut candidates: Vec<u32> = raw
            .iter()
            .filter(|(_, ip, _, _)| !ip.is_loopback())
            .map(|(index, ..)| *index)
            .filter(|i| {
                links
                    .iter()
                    .any(|l| l.index == *i && !l.name.starts_with("flannel."))
            })
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        for index in candidates {
            let owned = Owned {
                device: None,
                underlay: Some((index, network)),
            };
            let state = nl.read_owned(&owned).await.map_err(|e| e.to_string());
            underlay_state.push((index, state));
        }
    }
    Ok(NetFacts {
        links,
        addrs,
        vxlan_state,
        networks,
        underlay_state,
    })
}

/// The nat table from one `iptables-save` dump (as weftd reads it: no `-t`, which with the
/// legacy backend would create the table).
fn iptables_nat(program: &str) -> Result<String, String> {
    let out = Command::new(program)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(weft_net::firewall::table_section(
        &String::from_utf8_lossy(&out.stdout),
        "nat",
    ))
}

/// flannel's nftables table, as `nft list table ip flannel-ipv4` prints it.
fn nft_table() -> Result<Option<String>, String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", "flannel-ipv4"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run nft: {e} (install nftables)"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else if stderr.contains("No such file or directory") {
        Ok(None)
    } else {
        Err(format!(
            "nft list table ip flannel-ipv4 failed ({}): {}",
            out.status,
            stderr.trim()
        ))
    }
}

/// The dumps of both iptables backends (what weftd's `--iptables-backend=auto` looks at).
fn iptables_backends() -> Option<BackendDumps> {
    let run = |program: &str| -> Result<String, std::io::ErrorKind> {
        let out = Command::new(program)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| e.kind())?;
        Ok(if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            String::new()
        })
    };
    let (l4, n4) = (run("iptables-legacy-save"), run("iptables-nft-save"));
    let missing = |r: &Result<String, std::io::ErrorKind>| r == &Err(std::io::ErrorKind::NotFound);
    if missing(&l4) && missing(&n4) {
        return None;
    }
    let text = |r: Result<String, std::io::ErrorKind>| r.unwrap_or_default();
    Some(BackendDumps {
        legacy: text(l4) + &text(run("ip6tables-legacy-save")),
        nft: text(n4) + &text(run("ip6tables-nft-save")),
    })
}

/// `weft node cleanup-vpc-cni`'s own flags, so its defaults stay the only ones.
#[derive(Debug, Parser)]
struct CleanupFlags {
    #[command(flatten)]
    paths: PathArgs,
    #[command(flatten)]
    tools: ToolArgs,
}

fn cni_facts(conf_dir: &Path, bin_dir: &Path) -> Result<CniFacts> {
    let flags = CleanupFlags::try_parse_from([
        "weft".as_ref(),
        "--conf-dir".as_ref(),
        conf_dir.as_os_str(),
        "--bin-dir".as_ref(),
        bin_dir.as_os_str(),
    ] as [&std::ffi::OsStr; 5])
    .context("cannot set up the VPC CNI snapshot")?;
    let tools = flags.tools.tools();
    let snap = snapshot::take(&mut SystemHost, &flags.paths.paths(), &tools);
    let leftovers = plan::plan(&snap, &tools);
    Ok(CniFacts {
        conf_dir: snap.conf_dir,
        bin_dir: snap.bin_dir,
        leftovers,
    })
}

fn read_capped(path: &Path) -> Result<String, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_INPUT_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

/// `path` on the node whose root file system is at `root` (none: this machine's own).
pub fn on_host(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(r) => r.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

fn kubelet_facts(root: Option<&Path>, explicit: Option<&Path>) -> KubeletFacts {
    let explicit = explicit.map(|p| on_host(root, p));
    let explicit = explicit.as_deref();
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => KUBELET_CONFIGS
            .iter()
            .map(|c| on_host(root, Path::new(c)))
            .collect(),
    };
    let found = candidates.iter().find(|p| p.exists()).cloned();
    let main = match (found, explicit) {
        (Some(p), _) => Some((p.clone(), read_capped(&p))),
        // An explicit path that does not exist is worth saying.
        (None, Some(p)) => Some((p.to_path_buf(), read_capped(p))),
        (None, None) => None,
    };
    // kubelet --config-dir drop-ins (AL2023: config.json.d/40-nodeadm.conf), applied in name
    // order after the file.
    let mut dropins = Vec::new();
    if let Some((p, Ok(_))) = &main {
        let dir = PathBuf::from(format!("{}.d", p.display()));
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut names: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            names.sort();
            dropins = names
                .into_iter()
                .map(|p| {
                    let t = read_capped(&p);
                    (p, t)
                })
                .collect();
        }
    }
    KubeletFacts {
        searched: candidates,
        main,
        dropins,
    }
}

fn flannel_args_text(value: &str) -> Result<String, String> {
    let path = Path::new(value);
    if !value.contains('\n') && path.is_file() {
        read_capped(path)
    } else {
        Ok(value.to_string())
    }
}

fn read_nodes(path: &Path) -> Result<Vec<inputs::Node>, String> {
    let bytes = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(MAX_INPUT_BYTES)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        buf
    } else {
        read_capped(path)?.into_bytes()
    };
    let doc = inputs::parse_json(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    inputs::parse_nodes(&doc).map_err(|e| format!("{}: {e}", path.display()))
}

fn health_facts(url: &str) -> HealthFacts {
    let base = url.trim_end_matches('/').to_string();
    let get = |path: &str| -> Result<(u16, String), String> {
        let ep = v2::http_endpoint(url).ok_or_else(|| {
            format!(
                "{url} is not an http://host:port URL (weftd's health server speaks plain HTTP)"
            )
        })?;
        let r = v2::http_get(&ep, path, None)?;
        Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
    };
    let readyz = get("/readyz");
    // Nothing answered: do not wait for a second timeout.
    let metrics = match &readyz {
        Err(e) => Err(e.clone()),
        Ok(_) => get("/metrics"),
    };
    HealthFacts {
        readyz,
        metrics,
        url: base,
    }
}
