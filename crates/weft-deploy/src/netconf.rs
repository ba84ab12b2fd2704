//! The pure side of `weft network init/show/migrate-v2`: building a config from flags,
//! validating it with the parser weftd uses, the effective values, and the overwrite decision.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;
use weft_core::config::{BackendConfig, ConfigError, NetworkConfig, VXLAN_OVERHEAD};

/// The kernel's VXLAN port when the config leaves `Port` at 0.
pub const KERNEL_VXLAN_PORT: u16 = 8472;

/// `weft network init` flags that make up a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSpec {
    pub network: String,
    pub subnet_len: Option<u64>,
    pub subnet_min: Option<Ipv4Addr>,
    pub subnet_max: Option<Ipv4Addr>,
    pub backend: String,
    pub vni: Option<u64>,
    pub port: Option<u64>,
    pub mtu: Option<u64>,
    /// `--direct-routing` (vxlan only): `"DirectRouting": true`.
    pub direct_routing: bool,
    /// `--nftables`: `"EnableNFTables": true` (flannel's nftables mode).
    pub nftables: bool,
}

impl InitSpec {
    /// A spec with only `--network` set.
    #[cfg(test)]
    pub fn network(network: &str) -> InitSpec {
        InitSpec {
            network: network.to_string(),
            subnet_len: None,
            subnet_min: None,
            subnet_max: None,
            backend: "vxlan".into(),
            vni: None,
            port: None,
            mtu: None,
            direct_routing: false,
            nftables: false,
        }
    }
}

/// A config ready to be written: the exact bytes and what they mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub raw: String,
    pub config: NetworkConfig,
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The flag that sets a config key, for errors about flag-built configs.
fn flag_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "Network" => "--network",
        "SubnetLen" => "--subnet-len",
        "SubnetMin" => "--subnet-min",
        "SubnetMax" => "--subnet-max",
        "Backend" | "Backend.Type" => "--backend",
        "Backend.VNI" => "--vni",
        "Backend.Port" => "--port",
        "Backend.MTU" => "--mtu",
        "Backend.DirectRouting" => "--direct-routing",
        _ => return None,
    })
}

/// A backend weftd runs, as `--backend` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendFlag {
    /// VXLAN (with or without `DirectRouting`).
    Vxlan,
    /// host-gw: a route per peer subnet via the peer's PublicIP, no encapsulation.
    HostGw,
}

impl BackendFlag {
    /// flannel's `Backend.Type`.
    pub fn type_name(self) -> &'static str {
        match self {
            BackendFlag::Vxlan => "vxlan",
            BackendFlag::HostGw => "host-gw",
        }
    }
}

/// What to use instead of a backend weftd does not run.
const BACKEND_FIX: &str = "weftd runs vxlan (with --direct-routing for nodes that share an L2 network) and host-gw (every node on one L2 network)";

/// Why weftd does not run flannel backend `type_name` (lower-cased), and what runs instead.
/// The kernel facts are those of the machine weft is built and tested on: its kernel has no
/// CONFIG_WIREGUARD, CONFIG_INET_ESP or CONFIG_NET_IPIP.
pub fn backend_unavailable(type_name: &str) -> String {
    let why = match type_name {
        "wireguard" => "neither this machine's kernel nor weft has WireGuard support",
        "ipsec" => "neither this machine's kernel nor weft has ESP (IPsec) support",
        "ipip" => "neither this machine's kernel nor weft has IPIP support",
        "udp" => {
            "udp is a debug-only backend in flannel itself (a user-space proxy, meant for when the kernel can do neither VXLAN nor host-gw), and weft does not implement it"
        }
        "alloc" => {
            "alloc only hands out subnets and programs no routes; weft does not implement it"
        }
        "extension" => "extension runs shell commands per subnet; weft does not implement it",
        "aws-vpc" | "gce" | "ali-vpc" | "tencent-vpc" => {
            "it programs a cloud provider's route table, which weft does not do"
        }
        _ => "it is not a flannel backend weft implements",
    };
    format!("{why}; {BACKEND_FIX}")
}

/// `--backend` of `weft network init` and `weft manifest`: a config built for a backend weftd
/// does not run would stop weftd at start, so both commands refuse it with this. (A config
/// given whole, with `--json` or `--from-file`, is written with a warning instead: flanneld
/// nodes may still run it.)
pub fn check_backend_flag(backend: &str) -> Result<BackendFlag, String> {
    let lower = backend.trim().to_ascii_lowercase();
    match lower.as_str() {
        "vxlan" => return Ok(BackendFlag::Vxlan),
        "host-gw" => return Ok(BackendFlag::HostGw),
        _ => {}
    }
    let shown = weft_core::clip::clip(backend);
    if weft_core::config::FLANNEL_BACKENDS.contains(&lower.as_str()) {
        Err(format!(
            "--backend {shown:?} is not available: {}; pass --backend vxlan or --backend host-gw",
            backend_unavailable(&lower)
        ))
    } else {
        Err(format!(
            "--backend {shown:?} is not a flannel backend; {BACKEND_FIX}: pass --backend vxlan or --backend host-gw"
        ))
    }
}

/// Refuses the VXLAN-only flags with host-gw, naming the first one given.
fn check_vxlan_flags(backend: BackendFlag, spec: &InitSpec) -> Result<(), String> {
    if backend != BackendFlag::HostGw {
        return Ok(());
    }
    let given = [
        ("--vni", spec.vni.map(|v| format!(" {v}"))),
        ("--port", spec.port.map(|v| format!(" {v}"))),
        ("--mtu", spec.mtu.map(|v| format!(" {v}"))),
        ("--direct-routing", spec.direct_routing.then(String::new)),
    ];
    if let Some((flag, value)) = given
        .into_iter()
        .find_map(|(flag, value)| Some((flag, value?)))
    {
        let what = match flag {
            "--vni" => "has no VNI (it does not encapsulate)",
            "--port" => "has no UDP port (it does not encapsulate)",
            "--mtu" => "has no MTU option (pods get the node interface's MTU)",
            _ => "always routes directly via the peers' PublicIPs",
        };
        return Err(format!(
            "{flag}{value} is a vxlan option, but --backend host-gw {what}: drop {flag}, or pass --backend vxlan"
        ));
    }
    Ok(())
}

/// Builds the config JSON from flags (only the keys that were given, in flannel's usual
/// order, so the stored value reads like a hand-written one) and validates it.
pub fn build_config(spec: &InitSpec) -> Result<Candidate, String> {
    let kind = check_backend_flag(&spec.backend)?;
    check_vxlan_flags(kind, spec)?;
    let typed: Option<Ipv4Net> = spec.network.trim().parse().ok();
    let mut members = vec![format!("\"Network\":{}", json_string(spec.network.trim()))];
    if let Some(len) = spec.subnet_len {
        members.push(format!("\"SubnetLen\":{len}"));
    }
    if let Some(min) = spec.subnet_min {
        members.push(format!("\"SubnetMin\":{}", json_string(&min.to_string())));
    }
    if let Some(max) = spec.subnet_max {
        members.push(format!("\"SubnetMax\":{}", json_string(&max.to_string())));
    }
    if spec.nftables {
        members.push("\"EnableNFTables\":true".into());
    }
    let mut backend = vec![format!("\"Type\":{}", json_string(kind.type_name()))];
    for (key, value) in [("VNI", spec.vni), ("Port", spec.port), ("MTU", spec.mtu)] {
        if let Some(v) = value {
            backend.push(format!("\"{key}\":{v}"));
        }
    }
    if spec.direct_routing {
        backend.push("\"DirectRouting\":true".into());
    }
    members.push(format!("\"Backend\":{{{}}}", backend.join(",")));
    let raw = format!("{{{}}}", members.join(","));

    let config =
        NetworkConfig::parse(raw.as_bytes()).map_err(|e| match e.key().and_then(flag_of) {
            Some(flag) => format!("{flag}: {e}"),
            None => e.to_string(),
        })?;
    if let (Some(typed), Some(network)) = (typed, config.network)
        && typed.addr() != network.addr()
    {
        return Err(format!(
            "--network {typed} has host bits set; the network is {network}: pass --network {network}"
        ));
    }
    Ok(Candidate { raw, config })
}

/// Validates a raw config (from `--json`, `--from-file` or the v2 store), naming where it came from.
pub fn parse_raw(raw: &[u8], source: &str) -> Result<Candidate, String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| format!("{source} is not UTF-8 text; a network config is a JSON object"))?
        .trim();
    if text.is_empty() {
        return Err(format!(
            "{source} is empty; a network config is a JSON object such as {{\"Network\":\"10.244.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}"
        ));
    }
    let config =
        NetworkConfig::parse(text.as_bytes()).map_err(|e| format!("{source} is invalid: {e}"))?;
    Ok(Candidate {
        raw: text.to_string(),
        config,
    })
}

/// The effective values of a config, defaults filled in. Field names follow flannel's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    #[serde(rename = "Network")]
    pub network: Option<Ipv4Net>,
    #[serde(rename = "SubnetLen")]
    pub subnet_len: u8,
    #[serde(rename = "SubnetMin")]
    pub subnet_min: Ipv4Addr,
    #[serde(rename = "SubnetMax")]
    pub subnet_max: Ipv4Addr,
    /// Number of node subnets between SubnetMin and SubnetMax.
    #[serde(rename = "Subnets")]
    pub subnets: u64,
    #[serde(rename = "Backend")]
    pub backend: String,
    /// True when the config names no backend type (weft uses vxlan; flanneld would use udp).
    #[serde(rename = "BackendDefaulted")]
    pub backend_defaulted: bool,
    #[serde(rename = "VNI")]
    pub vni: Option<u32>,
    /// The UDP port in use: `Port`, or the kernel's 8472 when `Port` is 0.
    #[serde(rename = "Port")]
    pub port: Option<u16>,
    /// The underlay MTU from the config; None = the node interface's MTU.
    #[serde(rename = "MTU")]
    pub mtu: Option<u32>,
    /// vxlan's DirectRouting; None for a backend without it.
    #[serde(rename = "DirectRouting")]
    pub direct_routing: Option<bool>,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "EnableNFTables")]
    pub enable_nftables: bool,
    #[serde(skip)]
    port_defaulted: bool,
}

impl Effective {
    pub fn of(cfg: &NetworkConfig) -> Effective {
        let vxlan = cfg.vxlan();
        Effective {
            network: cfg.network,
            subnet_len: cfg.subnet_len,
            subnet_min: cfg.subnet_min,
            subnet_max: cfg.subnet_max,
            subnets: cfg.subnet_count(),
            backend: cfg.backend.type_name().to_string(),
            backend_defaulted: cfg.backend_defaulted,
            vni: vxlan.map(|v| v.vni),
            port: vxlan.map(|v| {
                if v.port == 0 {
                    KERNEL_VXLAN_PORT
                } else {
                    v.port
                }
            }),
            mtu: vxlan.and_then(|v| v.mtu),
            direct_routing: vxlan.map(|v| v.direct_routing),
            enable_ipv6: cfg.enable_ipv6,
            enable_nftables: cfg.enable_nftables,
            port_defaulted: vxlan.is_some_and(|v| v.port == 0),
        }
    }

    /// (name, value) lines for text output and diffs.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let na = || format!("n/a (backend {})", self.backend);
        let host_gw = self.backend == BackendFlag::HostGw.type_name();
        let mut out = vec![
            (
                "Network",
                self.network
                    .map_or_else(|| "none (IPv4 disabled)".to_string(), |n| n.to_string()),
            ),
            ("SubnetLen", self.subnet_len.to_string()),
            ("SubnetMin", self.subnet_min.to_string()),
            ("SubnetMax", self.subnet_max.to_string()),
            ("Subnets", self.subnets.to_string()),
            (
                "Backend",
                if self.backend_defaulted {
                    format!(
                        "{} (no Backend.Type in the config: weftd uses vxlan, flanneld would use udp)",
                        self.backend
                    )
                } else if host_gw {
                    format!(
                        "{} (a route per peer subnet via the peer's PublicIP, no encapsulation: every node must be on one L2 network)",
                        self.backend
                    )
                } else {
                    self.backend.clone()
                },
            ),
            ("VNI", self.vni.map_or_else(na, |v| v.to_string())),
            (
                "Port",
                match self.port {
                    None => na(),
                    Some(p) if self.port_defaulted => format!("{p} (Port 0: kernel default)"),
                    Some(p) => p.to_string(),
                },
            ),
            (
                "MTU",
                match (self.vni, self.mtu) {
                    (None, _) if host_gw => {
                        "the node interface's MTU (host-gw does not encapsulate)".to_string()
                    }
                    (None, _) => na(),
                    (Some(_), None) => format!(
                        "from the node interface (the VXLAN device gets interface MTU - {VXLAN_OVERHEAD})"
                    ),
                    (Some(_), Some(m)) => format!(
                        "{m} (the VXLAN device gets {})",
                        m.saturating_sub(VXLAN_OVERHEAD)
                    ),
                },
            ),
            (
                "DirectRouting",
                match self.direct_routing {
                    None => na(),
                    Some(false) => "false (every peer through VXLAN)".to_string(),
                    Some(true) => "true (a peer whose PublicIP is on this node's link gets a route via it; the others go through VXLAN)".to_string(),
                },
            ),
        ];
        if self.enable_ipv6 {
            out.push(("EnableIPv6", "true (weftd implements IPv4 only)".into()));
        }
        if self.enable_nftables {
            out.push(("EnableNFTables", "true".into()));
        }
        out
    }

    /// One line for "what will be written" messages.
    pub fn summary(&self) -> String {
        let network = self
            .network
            .map_or_else(|| "no IPv4 Network".to_string(), |n| n.to_string());
        let mut s = format!(
            "Network {network}, SubnetLen {}, {} subnets ({} .. {}), backend {}",
            self.subnet_len, self.subnets, self.subnet_min, self.subnet_max, self.backend
        );
        if let (Some(vni), Some(port)) = (self.vni, self.port) {
            s.push_str(&format!(", VNI {vni}, port {port}"));
        }
        if let Some(mtu) = self.mtu {
            s.push_str(&format!(", MTU {mtu}"));
        }
        if self.direct_routing == Some(true) {
            s.push_str(", DirectRouting");
        }
        s
    }
}

/// What to do with the config key, given what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing stored yet: write.
    Create,
    /// The stored value is byte-identical (`identical`) or means the same config: leave it.
    Unchanged { identical: bool },
    /// A different config is stored and `--force` was not given.
    Refuse { diff: Vec<String> },
    /// A different config is stored and `--force` was given: replace it.
    Overwrite { diff: Vec<String> },
}

/// Decides between creating, leaving alone, refusing and overwriting.
pub fn decide(stored: Option<&[u8]>, new: &Candidate, force: bool) -> Decision {
    let Some(stored) = stored else {
        return Decision::Create;
    };
    if stored == new.raw.as_bytes() {
        return Decision::Unchanged { identical: true };
    }
    let stored_cfg = NetworkConfig::parse(stored);
    if let Ok(cfg) = &stored_cfg
        && *cfg == new.config
    {
        return Decision::Unchanged { identical: false };
    }
    let diff = diff_lines(stored, &stored_cfg, new);
    if force {
        Decision::Overwrite { diff }
    } else {
        Decision::Refuse { diff }
    }
}

fn diff_lines(
    stored: &[u8],
    stored_cfg: &Result<NetworkConfig, ConfigError>,
    new: &Candidate,
) -> Vec<String> {
    let mut out = Vec::new();
    match stored_cfg {
        Ok(cfg) => {
            let old = Effective::of(cfg).lines();
            let new_lines = Effective::of(&new.config).lines();
            for ((name, a), (_, b)) in old.iter().zip(new_lines.iter()) {
                if a != b {
                    out.push(format!("  {name}: {a} -> {b}"));
                }
            }
            if old.len() != new_lines.len() {
                out.push("  EnableIPv6/EnableNFTables differ".into());
            }
        }
        Err(e) => out.push(format!("  the stored config is invalid: {e}")),
    }
    out.push(format!(
        "- stored: {}",
        String::from_utf8_lossy(stored).trim()
    ));
    out.push(format!("+ new:    {}", new.raw));
    out
}

/// Why weftd would refuse to start with a config that flannel accepts (weftd's own checks):
/// vxlan (with or without DirectRouting) and host-gw run, in iptables or nftables mode; every
/// other backend, and IPv6, is refused.
pub fn weftd_refusals(cfg: &NetworkConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let BackendConfig::Other { type_name } = &cfg.backend {
        out.push(format!(
            "backend {type_name:?} is not available in weftd, which refuses to start (flanneld would run it): {}",
            backend_unavailable(type_name)
        ));
    }
    if cfg.enable_ipv6 {
        out.push("EnableIPv6 is true, but weftd implements IPv4 only and refuses to start".into());
    }
    if cfg.network.is_none() || !cfg.enable_ipv4 {
        out.push("there is no IPv4 Network, which weftd needs".into());
    }
    out
}

/// What an operator must know about a config weftd runs, beyond its values: host-gw and
/// DirectRouting send pod traffic unencapsulated, which the network between nodes must carry.
pub fn backend_notes(cfg: &NetworkConfig) -> Vec<String> {
    const CARRY: &str = "the network between the nodes must carry packets addressed to pod IPs (on EC2: turn off every instance's source/destination check, `aws ec2 modify-instance-attribute --instance-id <id> --no-source-dest-check`)";
    match &cfg.backend {
        BackendConfig::HostGw => vec![format!(
            "host-gw routes each peer's subnet via the peer's PublicIP on the node's interface, unencapsulated: every node must be on one L2 network (a peer behind a router cannot be reached; use vxlan with --direct-routing there), and {CARRY}"
        )],
        BackendConfig::Vxlan(v) if v.direct_routing => vec![format!(
            "DirectRouting routes a peer whose PublicIP is on the node's own L2 network via that IP, unencapsulated (the other peers go through VXLAN): {CARRY}"
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn candidate(raw: &str) -> Candidate {
        parse_raw(raw.as_bytes(), "test").unwrap()
    }

    #[test]
    fn network_only_gives_the_manifest_config() {
        let c = build_config(&InitSpec::network("10.244.0.0/16")).unwrap();
        assert_eq!(
            c.raw,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#
        );
        let e = Effective::of(&c.config);
        assert_eq!(e.subnet_len, 24);
        assert_eq!(e.subnets, 255);
        assert_eq!(e.port, Some(8472));
        assert_eq!(e.vni, Some(1));
        assert_eq!(e.mtu, None);
        assert!(
            e.summary()
                .contains("Network 10.244.0.0/16, SubnetLen 24, 255 subnets")
        );
    }

    #[test]
    fn every_flag_lands_in_the_json() {
        let spec = InitSpec {
            network: "10.10.0.0/16".into(),
            subnet_len: Some(26),
            subnet_min: Some("10.10.1.0".parse().unwrap()),
            subnet_max: Some("10.10.9.192".parse().unwrap()),
            backend: "vxlan".into(),
            vni: Some(7),
            port: Some(4789),
            mtu: Some(9001),
            direct_routing: false,
            nftables: true,
        };
        let c = build_config(&spec).unwrap();
        assert_eq!(
            c.raw,
            r#"{"Network":"10.10.0.0/16","SubnetLen":26,"SubnetMin":"10.10.1.0","SubnetMax":"10.10.9.192","EnableNFTables":true,"Backend":{"Type":"vxlan","VNI":7,"Port":4789,"MTU":9001}}"#
        );
        let e = Effective::of(&c.config);
        assert_eq!((e.vni, e.port, e.mtu), (Some(7), Some(4789), Some(9001)));
        assert_eq!(e.subnets, (0x0a0a09c0u32 - 0x0a0a0100) as u64 / 64 + 1);
    }

    #[test]
    fn validation_errors_name_the_flag() {
        let cases: Vec<(InitSpec, &str)> = vec![
            (InitSpec::network("10.244.0.0"), "--network"),
            (InitSpec::network("fc00::/48"), "--network"),
            (InitSpec::network("10.244.0.0/30"), "--network"),
            (
                InitSpec {
                    subnet_len: Some(31),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--subnet-len",
            ),
            (
                InitSpec {
                    subnet_len: Some(17),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--subnet-len",
            ),
            (
                InitSpec {
                    subnet_min: Some("10.1.0.0".parse().unwrap()),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--subnet-min",
            ),
            (
                InitSpec {
                    subnet_max: Some("10.244.3.7".parse().unwrap()),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--subnet-max",
            ),
            (
                InitSpec {
                    vni: Some(1 << 24),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--vni",
            ),
            (
                InitSpec {
                    port: Some(70000),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--port",
            ),
            (
                InitSpec {
                    mtu: Some(100),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--mtu",
            ),
            (
                InitSpec {
                    backend: "vxlan2".into(),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--backend",
            ),
            (
                InitSpec {
                    backend: "host-gw".into(),
                    vni: Some(2),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--vni 2 is a vxlan option, but --backend host-gw has no VNI",
            ),
            (
                InitSpec {
                    backend: "host-gw".into(),
                    port: Some(4789),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--port 4789 is a vxlan option",
            ),
            (
                InitSpec {
                    backend: "host-gw".into(),
                    mtu: Some(9001),
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--mtu 9001 is a vxlan option",
            ),
            (
                InitSpec {
                    backend: "host-gw".into(),
                    direct_routing: true,
                    ..InitSpec::network("10.244.0.0/16")
                },
                "--direct-routing is a vxlan option, but --backend host-gw always routes directly",
            ),
            (InitSpec::network("10.244.1.0/16"), "10.244.0.0/16"),
        ];
        for (spec, needle) in cases {
            let err = build_config(&spec).unwrap_err();
            assert!(err.contains(needle), "{spec:?}: {err}");
        }
    }

    #[test]
    fn other_backends_are_refused_with_the_fix() {
        for (backend, why) in [
            (
                "wireguard",
                "neither this machine's kernel nor weft has WireGuard support",
            ),
            (
                "ipsec",
                "neither this machine's kernel nor weft has ESP (IPsec) support",
            ),
            (
                "IPIP",
                "neither this machine's kernel nor weft has IPIP support",
            ),
            ("udp", "udp is a debug-only backend in flannel itself"),
            ("alloc", "programs no routes"),
            ("extension", "shell commands"),
            ("aws-vpc", "cloud provider's route table"),
        ] {
            let err = build_config(&InitSpec {
                backend: backend.into(),
                ..InitSpec::network("10.244.0.0/16")
            })
            .unwrap_err();
            for needle in [
                &format!("--backend {backend:?} is not available: "),
                why,
                "weftd runs vxlan",
                "and host-gw",
                "pass --backend vxlan or --backend host-gw",
            ] {
                assert!(err.contains(needle), "{backend}: {err} (missing {needle})");
            }
        }
        let err = build_config(&InitSpec {
            backend: "vxlan2".into(),
            ..InitSpec::network("10.244.0.0/16")
        })
        .unwrap_err();
        assert!(
            err.contains("--backend \"vxlan2\" is not a flannel backend")
                && err.contains("pass --backend vxlan or --backend host-gw"),
            "{err}"
        );
        // The type is written as flannel names it, whatever the case of the flag.
        let c = build_config(&InitSpec {
            backend: " VXLAN".into(),
            ..InitSpec::network("10.244.0.0/16")
        })
        .unwrap();
        assert_eq!(
            c.raw,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#
        );
    }

    #[test]
    fn host_gw_writes_only_its_type_and_weftd_runs_it() {
        for flag in ["host-gw", "Host-GW"] {
            let c = build_config(&InitSpec {
                backend: flag.into(),
                subnet_len: Some(25),
                ..InitSpec::network("10.244.0.0/16")
            })
            .unwrap();
            assert_eq!(
                c.raw,
                r#"{"Network":"10.244.0.0/16","SubnetLen":25,"Backend":{"Type":"host-gw"}}"#
            );
            assert_eq!(c.config.backend, BackendConfig::HostGw);
            assert!(weftd_refusals(&c.config).is_empty());
        }
        let c = build_config(&InitSpec {
            backend: "host-gw".into(),
            ..InitSpec::network("10.244.0.0/16")
        })
        .unwrap();
        let e = Effective::of(&c.config);
        assert_eq!(
            (e.vni, e.port, e.mtu, e.direct_routing),
            (None, None, None, None)
        );
        let lines: BTreeMap<&str, String> = e.lines().into_iter().collect();
        assert!(
            lines["Backend"]
                .starts_with("host-gw (a route per peer subnet via the peer's PublicIP"),
            "{lines:?}"
        );
        assert!(lines["Backend"].contains("one L2 network"), "{lines:?}");
        assert_eq!(lines["VNI"], "n/a (backend host-gw)");
        assert_eq!(lines["Port"], "n/a (backend host-gw)");
        assert_eq!(
            lines["MTU"],
            "the node interface's MTU (host-gw does not encapsulate)"
        );
        assert_eq!(lines["DirectRouting"], "n/a (backend host-gw)");
        assert_eq!(
            e.summary(),
            "Network 10.244.0.0/16, SubnetLen 24, 255 subnets (10.244.1.0 .. 10.244.255.0), backend host-gw"
        );
        let notes = backend_notes(&c.config);
        assert!(
            notes.len() == 1
                && notes[0].contains("one L2 network")
                && notes[0].contains("--no-source-dest-check"),
            "{notes:?}"
        );
    }

    #[test]
    fn direct_routing_is_written_for_vxlan_and_shown() {
        let c = build_config(&InitSpec {
            vni: Some(4),
            direct_routing: true,
            ..InitSpec::network("10.244.0.0/16")
        })
        .unwrap();
        assert_eq!(
            c.raw,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4,"DirectRouting":true}}"#
        );
        assert_eq!(c.config.vxlan().map(|v| v.direct_routing), Some(true));
        assert!(weftd_refusals(&c.config).is_empty());
        let e = Effective::of(&c.config);
        assert_eq!(e.direct_routing, Some(true));
        assert!(
            e.summary().ends_with(", VNI 4, port 8472, DirectRouting"),
            "{}",
            e.summary()
        );
        let lines: BTreeMap<&str, String> = e.lines().into_iter().collect();
        assert!(
            lines["DirectRouting"]
                .starts_with("true (a peer whose PublicIP is on this node's link"),
            "{lines:?}"
        );
        assert!(backend_notes(&c.config)[0].starts_with("DirectRouting routes a peer"));
        // Without the flag nothing changes: no key, no note, and the line says false.
        let plain = build_config(&InitSpec::network("10.244.0.0/16")).unwrap();
        assert!(!plain.raw.contains("DirectRouting"));
        assert!(backend_notes(&plain.config).is_empty());
        let e = Effective::of(&plain.config);
        assert!(!e.summary().contains("DirectRouting"));
        let lines: BTreeMap<&str, String> = e.lines().into_iter().collect();
        assert_eq!(lines["DirectRouting"], "false (every peer through VXLAN)");
        // Switching it on is a difference `weft network init` shows before --force.
        let Decision::Refuse { diff } = decide(Some(plain.raw.as_bytes()), &c, false) else {
            panic!("expected a refusal");
        };
        assert!(
            diff.iter().any(|l| l.starts_with("  DirectRouting: false (every peer through VXLAN) -> true")),
            "{diff:?}"
        );
    }

    #[test]
    fn weftd_refuses_only_the_backends_it_does_not_run() {
        let parse = |t: &str| NetworkConfig::parse(t.as_bytes()).unwrap();
        for ok in [
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#,
            r#"{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"host-gw"}}"#,
        ] {
            assert_eq!(weftd_refusals(&parse(ok)), Vec::<String>::new(), "{ok}");
        }
        for (backend, needle) in [
            ("wireguard", "WireGuard support"),
            ("ipsec", "ESP (IPsec) support"),
            ("ipip", "IPIP support"),
            ("udp", "debug-only backend in flannel itself"),
        ] {
            let cfg = parse(&format!(
                r#"{{"Network":"10.244.0.0/16","Backend":{{"Type":"{backend}"}}}}"#
            ));
            let refusals = weftd_refusals(&cfg);
            assert_eq!(refusals.len(), 1, "{refusals:?}");
            for n in [
                &format!("backend {backend:?} is not available in weftd, which refuses to start"),
                needle,
                "weftd runs vxlan",
            ] {
                assert!(refusals[0].contains(n), "{refusals:?} (missing {n})");
            }
        }
    }

    #[test]
    fn raw_configs_are_validated_with_the_source_named() {
        let err = parse_raw(b"{\"Network\":\"10.244.0.0/16\"", "--json").unwrap_err();
        assert!(
            err.starts_with("--json is invalid") && err.contains("JSON"),
            "{err}"
        );
        let err = parse_raw(b"  \n", "file x").unwrap_err();
        assert!(err.contains("file x is empty"), "{err}");
        let err = parse_raw(b"{\"SubnetLen\":24}", "v2 key").unwrap_err();
        assert!(err.contains("Network is missing"), "{err}");
        let c = parse_raw(b" {\"Network\":\"10.5.0.0/16\"}\n", "f").unwrap();
        assert_eq!(c.raw, "{\"Network\":\"10.5.0.0/16\"}");
        let e = Effective::of(&c.config);
        assert!(e.backend_defaulted);
        assert!(e.lines()[5].1.contains("flanneld would use udp"));
    }

    #[test]
    fn overwrite_decisions() {
        let new = candidate(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#);
        assert_eq!(decide(None, &new, false), Decision::Create);
        assert_eq!(
            decide(Some(new.raw.as_bytes()), &new, false),
            Decision::Unchanged { identical: true }
        );
        // Same meaning, other bytes (key case, spacing, an explicit default).
        let same = br#"{ "network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "VXLAN", "VNI": 1} }"#;
        assert_eq!(
            decide(Some(same), &new, false),
            Decision::Unchanged { identical: false }
        );
        let other = br#"{"Network":"10.245.0.0/16","Backend":{"Type":"vxlan"}}"#;
        let Decision::Refuse { diff } = decide(Some(other), &new, false) else {
            panic!("expected a refusal");
        };
        assert!(
            diff.contains(&"  Network: 10.245.0.0/16 -> 10.244.0.0/16".to_string()),
            "{diff:?}"
        );
        assert!(
            diff.iter()
                .any(|l| l.starts_with("- stored: {\"Network\":\"10.245"))
        );
        assert!(
            diff.iter()
                .any(|l| l.starts_with("+ new:    {\"Network\":\"10.244"))
        );
        assert!(
            matches!(decide(Some(other), &new, true), Decision::Overwrite { diff } if !diff.is_empty())
        );
        // A stored value that is not a valid config is "different".
        let Decision::Refuse { diff } = decide(Some(b"{junk"), &new, false) else {
            panic!("expected a refusal");
        };
        assert!(diff[0].contains("stored config is invalid"), "{diff:?}");
    }
}
