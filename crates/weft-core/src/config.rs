//! flannel's network config (`<prefix>/config` in etcd, `net-conf.json` in kube mode).
//!
//! Decoding follows Go's `encoding/json` as flannel uses it: keys match case-insensitively at
//! every level, the last duplicate wins, unknown keys are ignored and `null` leaves a field at
//! its default. Defaults and validation follow flannel's `CheckNetworkConfig`, and every error
//! keeps flannel's wording so users can search for it, plus the key and a fix.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::clip::clip;
use crate::json::{Json, MAX_DOCUMENT_BYTES, write_go_string};
use crate::subnet::block_size;

/// Largest config accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = MAX_DOCUMENT_BYTES;

/// The VXLAN network identifier flannel uses when `Backend.VNI` is not set.
pub const DEFAULT_VNI: u32 = 1;

/// Largest VNI: the VXLAN header carries 24 bits.
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// Bytes of VXLAN encapsulation over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14):
/// the VXLAN device MTU and `FLANNEL_MTU` are the underlay MTU minus this.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Backend types flannel knows (`Backend.Type`, compared lower-cased).
pub const FLANNEL_BACKENDS: &[&str] = &[
    "udp",
    "vxlan",
    "host-gw",
    "ipip",
    "wireguard",
    "ipsec",
    "alloc",
    "extension",
    "tencent-vpc",
    "gce",
    "aws-vpc",
    "ali-vpc",
];

/// Smallest IPv4 MTU (RFC 791); a VXLAN device below it cannot carry IPv4.
const MIN_IPV4_MTU: u32 = 68;

const EXAMPLE_CONFIG: &str = r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#;

/// A parsed and validated flannel network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `EnableIPv4` (default true).
    pub enable_ipv4: bool,
    /// `EnableIPv6` (default false).
    pub enable_ipv6: bool,
    /// `EnableNFTables` (default false).
    pub enable_nftables: bool,
    /// `Network` with host bits cleared; always set when `enable_ipv4`.
    pub network: Option<Ipv4Net>,
    /// `SubnetLen`, defaulted as flannel does when `enable_ipv4` (0 when IPv4 is disabled and
    /// it was not given).
    pub subnet_len: u8,
    /// `SubnetMin`, defaulted to the second subnet of `network` when `enable_ipv4`.
    pub subnet_min: Ipv4Addr,
    /// `SubnetMax`, defaulted to the last subnet of `network` when `enable_ipv4`.
    pub subnet_max: Ipv4Addr,
    /// `IPv6Network` with host bits cleared; always set when `enable_ipv6`.
    pub ipv6_network: Option<Ipv6Net>,
    /// `IPv6SubnetLen`, defaulted when `enable_ipv6`.
    pub ipv6_subnet_len: u8,
    /// `IPv6SubnetMin`, defaulted when `enable_ipv6`.
    pub ipv6_subnet_min: Option<Ipv6Addr>,
    /// `IPv6SubnetMax`, defaulted when `enable_ipv6`.
    pub ipv6_subnet_max: Option<Ipv6Addr>,
    /// The backend section.
    pub backend: BackendConfig,
    /// True when `Backend` was absent, `null`, or had no `Type`: weft then uses vxlan, where
    /// flanneld would use udp (or fail), so the daemon should say so in its log.
    pub backend_defaulted: bool,
}

/// The `Backend` section of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// The vxlan backend.
    Vxlan(VxlanConfig),
    /// The host-gw backend: a route per peer subnet via the peer's PublicIP on the external
    /// interface, no device, no encapsulation. It has no options (flannel reads none).
    HostGw,
    /// A real flannel backend weft does not implement; `type_name` is lower-cased.
    Other {
        /// The backend type, such as `wireguard`.
        type_name: String,
    },
}

impl BackendConfig {
    /// The lower-cased backend type name (`vxlan`, `host-gw`, ...).
    pub fn type_name(&self) -> &str {
        match self {
            BackendConfig::Vxlan(_) => "vxlan",
            BackendConfig::HostGw => "host-gw",
            BackendConfig::Other { type_name } => type_name,
        }
    }
}

/// Options of the vxlan backend (flannel `VXLANConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VxlanConfig {
    /// `VNI`, default 1.
    pub vni: u32,
    /// `Port`; 0 leaves the port to the kernel, whose default is 8472 (not IANA's 4789).
    pub port: u16,
    /// `MTU`: the *underlay* MTU; the device MTU is this minus 50. `None` = the external
    /// interface's MTU.
    pub mtu: Option<u32>,
    /// `GBP` (group-based policy extension).
    pub gbp: bool,
    /// `Learning` (kernel FDB learning; flannel programs the FDB itself and leaves it off).
    pub learning: bool,
    /// `DirectRouting`: route directly to peers on the same L2 segment instead of encapsulating.
    pub direct_routing: bool,
}

impl Default for VxlanConfig {
    fn default() -> Self {
        VxlanConfig {
            vni: DEFAULT_VNI,
            port: 0,
            mtu: None,
            gbp: false,
            learning: false,
            direct_routing: false,
        }
    }
}

impl VxlanConfig {
    /// The MTU of the VXLAN device (and `FLANNEL_MTU`) for a given underlay MTU: the configured
    /// `MTU` if set, else `iface_mtu`, minus the 50 bytes of encapsulation.
    pub fn device_mtu(&self, iface_mtu: u32) -> u32 {
        self.mtu.unwrap_or(iface_mtu).saturating_sub(VXLAN_OVERHEAD)
    }
}

/// A network config that cannot be used. Each message names the key, keeps flannel's wording
/// and says how to fix the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The stored value is larger than [`MAX_CONFIG_BYTES`].
    #[error(
        "network config is {size} bytes, more than the {limit}-byte limit; a flannel network config is a few hundred bytes such as {EXAMPLE_CONFIG}, so check what was stored at the config key"
    )]
    TooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The value is not JSON.
    #[error(
        "network config is not valid JSON ({detail}); write a JSON object such as {EXAMPLE_CONFIG}"
    )]
    Syntax {
        /// The JSON parser's message (with line and column).
        detail: String,
    },
    /// The whole config is not a JSON object.
    #[error("{key} must be a JSON object, found {found}; write it as {example}")]
    NotAnObject {
        /// What is not an object (`network config`).
        key: &'static str,
        /// The JSON type found.
        found: &'static str,
        /// What it should look like.
        example: &'static str,
    },
    /// `Backend` is present but not a JSON object (e.g. `"Backend": "vxlan"`).
    #[error(
        "Backend: error decoding Backend property of config: found {found}, but Backend must be a JSON object; write it as \"Backend\": {{\"Type\": \"vxlan\"}}"
    )]
    BackendNotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// A key holds the wrong JSON type (e.g. `"SubnetLen": "24"`).
    #[error("{key}: expected {expected}, found {found}; write it as {example}")]
    WrongType {
        /// The key, e.g. `SubnetLen` or `Backend.VNI`.
        key: String,
        /// The JSON type expected.
        expected: &'static str,
        /// What was found.
        found: String,
        /// A correct example.
        example: &'static str,
    },
    /// A required key is missing.
    #[error("{key} is missing: {flannel}; {fix}")]
    Missing {
        /// The missing key.
        key: &'static str,
        /// flannel's message for it.
        flannel: &'static str,
        /// How to fix it.
        fix: &'static str,
    },
    /// A key has a value of the right type that flannel's rules reject.
    #[error("{key} {value}: {problem}; {fix}")]
    Invalid {
        /// The key, e.g. `Network` or `SubnetMin`.
        key: String,
        /// The offending value as written (strings quoted, cut if long).
        value: String,
        /// What is wrong, in flannel's words where flannel has them.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// `Backend.Type` is not a flannel backend.
    #[error(
        "Backend.Type {type_name:?}: unknown backend type: {type_name}; flannel backends are {known}, and weft implements vxlan and host-gw, so use \"Backend\": {{\"Type\": \"vxlan\"}}"
    )]
    UnknownBackend {
        /// The type as written (cut if long).
        type_name: String,
        /// The known backend types, comma separated.
        known: String,
    },
    /// Both `EnableIPv4` and `EnableIPv6` are false.
    #[error(
        "EnableIPv4 and EnableIPv6 are both false: none defined stack; set \"EnableIPv4\": true (or remove it, true is the default)"
    )]
    NoStack,
}

impl ConfigError {
    /// The config key the error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::TooLarge { .. } | ConfigError::Syntax { .. } | ConfigError::NoStack => {
                None
            }
            ConfigError::NotAnObject { key, .. } => Some(key),
            ConfigError::WrongType { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Missing { key, .. } => Some(key),
            ConfigError::UnknownBackend { .. } => Some("Backend.Type"),
            ConfigError::BackendNotAnObject { .. } => Some("Backend"),
        }
    }
}

/// How a key is expected to look, for wrong-type errors.
struct KeySpec {
    name: &'static str,
    expected: &'static str,
    example: &'static str,
}

const ENABLE_IPV4: KeySpec = bool_key("EnableIPv4", r#""EnableIPv4": true"#);
const ENABLE_IPV6: KeySpec = bool_key("EnableIPv6", r#""EnableIPv6": true"#);
const ENABLE_NFTABLES: KeySpec = bool_key("EnableNFTables", r#""EnableNFTables": false"#);
const NETWORK: KeySpec = string_key(
    "Network",
    "an IPv4 CIDR string",
    r#""Network": "10.244.0.0/16""#,
);
const SUBNET_LEN: KeySpec = uint_key("SubnetLen", r#""SubnetLen": 24"#);
const SUBNET_MIN: KeySpec = string_key(
    "SubnetMin",
    "an IPv4 address string",
    r#""SubnetMin": "10.244.1.0""#,
);
const SUBNET_MAX: KeySpec = string_key(
    "SubnetMax",
    "an IPv4 address string",
    r#""SubnetMax": "10.244.255.0""#,
);
const IPV6_NETWORK: KeySpec = string_key(
    "IPv6Network",
    "an IPv6 CIDR string",
    r#""IPv6Network": "fc00::/48""#,
);
const IPV6_SUBNET_LEN: KeySpec = uint_key("IPv6SubnetLen", r#""IPv6SubnetLen": 64"#);
const IPV6_SUBNET_MIN: KeySpec = string_key(
    "IPv6SubnetMin",
    "an IPv6 address string",
    r#""IPv6SubnetMin": "fc00:0:0:1::""#,
);
const IPV6_SUBNET_MAX: KeySpec = string_key(
    "IPv6SubnetMax",
    "an IPv6 address string",
    r#""IPv6SubnetMax": "fc00:0:0:ffff::""#,
);
const BACKEND_TYPE: KeySpec = string_key("Backend.Type", "a string", r#""Type": "vxlan""#);
const BACKEND_VNI: KeySpec = uint_key("Backend.VNI", r#""VNI": 1"#);
const BACKEND_PORT: KeySpec = uint_key("Backend.Port", r#""Port": 8472"#);
const BACKEND_MTU: KeySpec = uint_key("Backend.MTU", r#""MTU": 1500"#);
const BACKEND_GBP: KeySpec = bool_key("Backend.GBP", r#""GBP": false"#);
const BACKEND_LEARNING: KeySpec = bool_key("Backend.Learning", r#""Learning": false"#);
const BACKEND_DIRECT_ROUTING: KeySpec =
    bool_key("Backend.DirectRouting", r#""DirectRouting": false"#);

const fn bool_key(name: &'static str, example: &'static str) -> KeySpec {
    KeySpec {
        name,
        expected: "true or false (without quotes)",
        example,
    }
}

const fn uint_key(name: &'static str, example: &'static str) -> KeySpec {
    KeySpec {
        name,
        expected: "a whole number (without quotes)",
        example,
    }
}

const fn string_key(name: &'static str, expected: &'static str, example: &'static str) -> KeySpec {
    KeySpec {
        name,
        expected,
        example,
    }
}

impl KeySpec {
    /// The member name inside its object (`Backend.VNI` → `VNI`).
    fn member(&self) -> &'static str {
        match self.name.rsplit_once('.') {
            Some((_, member)) => member,
            None => self.name,
        }
    }

    fn wrong_type(&self, found: &Json) -> ConfigError {
        ConfigError::WrongType {
            key: self.name.to_owned(),
            expected: self.expected,
            found: describe(found),
            example: self.example,
        }
    }

    fn get_bool(&self, obj: &Json) -> Result<Option<bool>, ConfigError> {
        match obj.get_present(self.member()) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(other)),
        }
    }

    fn get_uint(&self, obj: &Json) -> Result<Option<u64>, ConfigError> {
        match obj.get_present(self.member()) {
            None => Ok(None),
            Some(value @ Json::Number(n)) => {
                n.as_u64().map(Some).ok_or_else(|| self.wrong_type(value))
            }
            Some(other) => Err(self.wrong_type(other)),
        }
    }

    fn get_str<'a>(&self, obj: &'a Json) -> Result<Option<&'a str>, ConfigError> {
        match obj.get_present(self.member()) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(other)),
        }
    }
}

/// Describes a value for an error message, with the value itself when it is short.
fn describe(value: &Json) -> String {
    match value {
        Json::String(s) if s.chars().count() <= 40 => format!("a string ({s:?})"),
        Json::Number(n) => format!("the number {n}"),
        Json::Bool(b) => format!("{b}"),
        other => other.kind().to_owned(),
    }
}

/// The value quoted for an error message, cut if long (see [`clip`]).
fn quoted(s: &str) -> String {
    format!("{:?}", clip(s))
}

fn invalid(
    key: &str,
    value: String,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// flannel's default `SubnetLen` for a network prefix, or `None` when the network is too small.
fn default_subnet_len(prefix: u8) -> Option<u8> {
    match prefix {
        0..=22 => Some(24),
        23..=28 => Some(prefix + 2),
        _ => None,
    }
}

/// flannel's default `IPv6SubnetLen` for a network prefix, or `None` when it is too small.
fn default_ipv6_subnet_len(prefix: u8) -> Option<u8> {
    match prefix {
        0..=62 => Some(64),
        63..=124 => Some(prefix + 2),
        _ => None,
    }
}

/// IPv4 part after defaults: (subnet_len, subnet_min, subnet_max).
type V4Defaults = (u8, Ipv4Addr, Ipv4Addr);

/// IPv6 part after defaults: (ipv6_subnet_len, ipv6_subnet_min, ipv6_subnet_max).
type V6Defaults = (u8, Option<Ipv6Addr>, Option<Ipv6Addr>);

impl NetworkConfig {
    /// Decodes a config, fills in flannel's defaults and applies `CheckNetworkConfig`'s rules.
    ///
    /// Beyond flannel it also rejects: input over 64 KiB, both stacks disabled (flanneld exits
    /// with `none defined stack` later), `SubnetMin` above `SubnetMax` (nothing could ever be
    /// allocated), out-of-range VXLAN `VNI`/`Port`/`MTU` (flannel passes them to the kernel,
    /// which truncates or rejects them), and `Backend.Type` values that are not flannel backends.
    pub fn parse(json: &[u8]) -> Result<NetworkConfig, ConfigError> {
        if json.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                size: json.len(),
                limit: MAX_CONFIG_BYTES,
            });
        }
        let doc = Json::from_slice(json).map_err(|e| ConfigError::Syntax {
            detail: e.to_string(),
        })?;
        if !matches!(doc, Json::Object(_)) {
            return Err(ConfigError::NotAnObject {
                key: "network config",
                found: doc.kind(),
                example: EXAMPLE_CONFIG,
            });
        }

        // Decode every key first, as Go's Unmarshal does before CheckNetworkConfig runs, so
        // type errors are reported even for a family that is disabled.
        let enable_ipv4 = ENABLE_IPV4.get_bool(&doc)?.unwrap_or(true);
        let enable_ipv6 = ENABLE_IPV6.get_bool(&doc)?.unwrap_or(false);
        let enable_nftables = ENABLE_NFTABLES.get_bool(&doc)?.unwrap_or(false);
        let network = NETWORK.get_str(&doc)?.map(parse_network).transpose()?;
        let subnet_len = SUBNET_LEN.get_uint(&doc)?;
        let subnet_min = parse_v4_addr(&SUBNET_MIN, &doc)?;
        let subnet_max = parse_v4_addr(&SUBNET_MAX, &doc)?;
        let ipv6_network = IPV6_NETWORK
            .get_str(&doc)?
            .map(parse_ipv6_network)
            .transpose()?;
        let ipv6_subnet_len = IPV6_SUBNET_LEN.get_uint(&doc)?;
        let ipv6_subnet_min = parse_v6_addr(&IPV6_SUBNET_MIN, &doc)?;
        let ipv6_subnet_max = parse_v6_addr(&IPV6_SUBNET_MAX, &doc)?;
        let (backend, backend_defaulted) = parse_backend(doc.get("Backend"))?;

        if !enable_ipv4 && !enable_ipv6 {
            return Err(ConfigError::NoStack);
        }

        let (subnet_len, subnet_min, subnet_max) = if enable_ipv4 {
            let network = network.ok_or(ConfigError::Missing {
                key: "Network",
                flannel: "please define a correct Network parameter in the flannel config",
                fix: r#"add the cluster pod CIDR, e.g. "Network": "10.244.0.0/16""#,
            })?;
            check_v4(network, subnet_len, subnet_min, subnet_max)?
        } else {
            let len = explicit_len(
                &SUBNET_LEN,
                subnet_len,
                30,
                "SubnetLen must be less than /31",
            )?;
            (
                len,
                subnet_min.unwrap_or(Ipv4Addr::UNSPECIFIED),
                subnet_max.unwrap_or(Ipv4Addr::UNSPECIFIED),
            )
        };

        let (ipv6_subnet_len, ipv6_subnet_min, ipv6_subnet_max) = if enable_ipv6 {
            let network6 = ipv6_network.ok_or(ConfigError::Missing {
                key: "IPv6Network",
                flannel: "please define a correct IPv6Network parameter in the flannel config",
                fix: r#"add the cluster IPv6 pod CIDR, e.g. "IPv6Network": "fc00::/48", or set "EnableIPv6": false"#,
            })?;
            check_v6(network6, ipv6_subnet_len, ipv6_subnet_min, ipv6_subnet_max)?
        } else {
            let len = explicit_len(
                &IPV6_SUBNET_LEN,
                ipv6_subnet_len,
                126,
                "IPv6SubnetLen must be less than /127",
            )?;
            (len, ipv6_subnet_min, ipv6_subnet_max)
        };

        Ok(NetworkConfig {
            enable_ipv4,
            enable_ipv6,
            enable_nftables,
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            ipv6_network,
            ipv6_subnet_len,
            ipv6_subnet_min,
            ipv6_subnet_max,
            backend,
            backend_defaulted,
        })
    }

    /// The vxlan options, when the backend is vxlan.
    pub fn vxlan(&self) -> Option<&VxlanConfig> {
        match &self.backend {
            BackendConfig::Vxlan(vxlan) => Some(vxlan),
            BackendConfig::HostGw | BackendConfig::Other { .. } => None,
        }
    }

    /// Number of addresses in one node subnet (2^(32 - SubnetLen)); 0 when IPv4 is off.
    pub fn subnet_size(&self) -> u64 {
        if self.enable_ipv4 && self.network.is_some() && self.subnet_len <= 32 {
            block_size(self.subnet_len)
        } else {
            0
        }
    }

    /// Number of allocatable subnets, `SubnetMin..=SubnetMax` in steps of the subnet size.
    pub fn subnet_count(&self) -> u64 {
        let size = self.subnet_size();
        let min = u64::from(u32::from(self.subnet_min));
        let max = u64::from(u32::from(self.subnet_max));
        if size == 0 || max < min {
            return 0;
        }
        (max - min) / size + 1
    }

    /// The IPv6 counterpart of [`Self::contains_subnet`]: a masked subnet inside
    /// `IPv6Network` with prefix `IPv6SubnetLen`, between `IPv6SubnetMin` and `IPv6SubnetMax`.
    pub fn contains_subnet6(&self, s: Ipv6Net) -> bool {
        let (Some(network), Some(min), Some(max)) = (
            self.ipv6_network,
            self.ipv6_subnet_min,
            self.ipv6_subnet_max,
        ) else {
            return false;
        };
        self.enable_ipv6
            && s.prefix_len() == self.ipv6_subnet_len
            && s.addr() == s.network()
            && network.contains(&s)
            && min <= s.addr()
            && s.addr() <= max
    }

    /// True when `s` is a subnet this config can hand out: a masked subnet inside `Network`
    /// with prefix `SubnetLen`, between `SubnetMin` and `SubnetMax` (flannel's reuse check).
    pub fn contains_subnet(&self, s: Ipv4Net) -> bool {
        let Some(network) = self.network else {
            return false;
        };
        self.enable_ipv4
            && s.prefix_len() == self.subnet_len
            && s.addr() == s.network()
            && network.contains(&s)
            && self.subnet_min <= s.addr()
            && s.addr() <= self.subnet_max
    }

    /// Renders the config as canonical flannel JSON that [`NetworkConfig::parse`] turns back
    /// into an equal config. Values equal to their defaults are left out.
    pub fn to_json(&self) -> String {
        let mut members: Vec<(&str, String)> = Vec::new();
        let string = |s: &str| {
            let mut out = String::new();
            write_go_string(&mut out, s);
            out
        };
        if let Some(network) = self.network {
            members.push(("Network", string(&network.to_string())));
        }
        if !self.enable_ipv4 {
            members.push(("EnableIPv4", "false".into()));
        }
        if self.enable_ipv6 {
            members.push(("EnableIPv6", "true".into()));
        }
        if self.enable_nftables {
            members.push(("EnableNFTables", "true".into()));
        }

        let v4_defaults = match self.network {
            Some(network) if self.enable_ipv4 => default_v4(network),
            _ => None,
        };
        let (default_len, default_min, default_max) =
            v4_defaults.unwrap_or((0, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED));
        if self.subnet_len != default_len {
            members.push(("SubnetLen", self.subnet_len.to_string()));
        }
        // SubnetMin/Max defaults depend on SubnetLen, so they are compared with the defaults
        // for the configured length rather than for the default length.
        let (len_min, len_max) = match self.network {
            Some(network) if self.enable_ipv4 => v4_bounds(network, self.subnet_len),
            _ => (default_min, default_max),
        };
        if self.subnet_min != len_min {
            members.push(("SubnetMin", string(&self.subnet_min.to_string())));
        }
        if self.subnet_max != len_max {
            members.push(("SubnetMax", string(&self.subnet_max.to_string())));
        }

        if let Some(network6) = self.ipv6_network {
            members.push(("IPv6Network", string(&network6.to_string())));
        }
        let v6_defaults = match self.ipv6_network {
            Some(network6) if self.enable_ipv6 => {
                let default_len = default_ipv6_subnet_len(network6.prefix_len()).unwrap_or(0);
                let (min, max) = v6_bounds(network6, self.ipv6_subnet_len);
                (default_len, Some(min), Some(max))
            }
            _ => (0, None, None),
        };
        if self.ipv6_subnet_len != v6_defaults.0 {
            members.push(("IPv6SubnetLen", self.ipv6_subnet_len.to_string()));
        }
        if self.ipv6_subnet_min != v6_defaults.1
            && let Some(min) = self.ipv6_subnet_min
        {
            members.push(("IPv6SubnetMin", string(&min.to_string())));
        }
        if self.ipv6_subnet_max != v6_defaults.2
            && let Some(max) = self.ipv6_subnet_max
        {
            members.push(("IPv6SubnetMax", string(&max.to_string())));
        }

        if let Some(backend) = self.backend_json(&string) {
            members.push(("Backend", backend));
        }

        let mut out = String::from("{");
        for (i, (key, value)) in members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{key}\":{value}");
        }
        out.push('}');
        out
    }

    fn backend_json(&self, string: &dyn Fn(&str) -> String) -> Option<String> {
        let mut members: Vec<(&str, String)> = Vec::new();
        match &self.backend {
            BackendConfig::Other { type_name } => {
                members.push(("Type", string(type_name)));
            }
            BackendConfig::HostGw => members.push(("Type", string("host-gw"))),
            BackendConfig::Vxlan(vxlan) => {
                if self.backend_defaulted && *vxlan == VxlanConfig::default() {
                    return None;
                }
                if !self.backend_defaulted {
                    members.push(("Type", string("vxlan")));
                }
                members.push(("VNI", vxlan.vni.to_string()));
                if vxlan.port != 0 {
                    members.push(("Port", vxlan.port.to_string()));
                }
                if let Some(mtu) = vxlan.mtu {
                    members.push(("MTU", mtu.to_string()));
                }
                if vxlan.gbp {
                    members.push(("GBP", "true".into()));
                }
                if vxlan.learning {
                    members.push(("Learning", "true".into()));
                }
                if vxlan.direct_routing {
                    members.push(("DirectRouting", "true".into()));
                }
            }
        }
        let body: Vec<String> = members
            .iter()
            .map(|(key, value)| format!("\"{key}\":{value}"))
            .collect();
        Some(format!("{{{}}}", body.join(",")))
    }
}

fn parse_network(text: &str) -> Result<Ipv4Net, ConfigError> {
    match text.parse::<Ipv4Net>() {
        Ok(net) => Ok(net.trunc()),
        Err(_) if text.parse::<Ipv6Net>().is_ok() => Err(invalid(
            "Network",
            quoted(text),
            "invalid IPv4 CIDR format",
            r#"Network must be an IPv4 CIDR such as "10.244.0.0/16"; put an IPv6 range in "IPv6Network" with "EnableIPv6": true"#,
        )),
        Err(_) => Err(invalid(
            "Network",
            quoted(text),
            "invalid IPv4 CIDR format",
            r#"write an address and a prefix length, such as "10.244.0.0/16""#,
        )),
    }
}

fn parse_ipv6_network(text: &str) -> Result<Ipv6Net, ConfigError> {
    text.parse::<Ipv6Net>().map(|net| net.trunc()).map_err(|_| {
        invalid(
            "IPv6Network",
            quoted(text),
            "invalid IPv6 CIDR format",
            r#"write an IPv6 address and a prefix length, such as "fc00::/48""#,
        )
    })
}

fn parse_v4_addr(spec: &KeySpec, doc: &Json) -> Result<Option<Ipv4Addr>, ConfigError> {
    let Some(text) = spec.get_str(doc)? else {
        return Ok(None);
    };
    text.parse::<Ipv4Addr>().map(Some).map_err(|_| {
        invalid(
            spec.name,
            quoted(text),
            "not an IPv4 address",
            format!("write a dotted-quad subnet address, e.g. {}", spec.example),
        )
    })
}

fn parse_v6_addr(spec: &KeySpec, doc: &Json) -> Result<Option<Ipv6Addr>, ConfigError> {
    let Some(text) = spec.get_str(doc)? else {
        return Ok(None);
    };
    text.parse::<Ipv6Addr>().map(Some).map_err(|_| {
        invalid(
            spec.name,
            quoted(text),
            "not an IPv6 address",
            format!("write an IPv6 subnet address, e.g. {}", spec.example),
        )
    })
}

/// An explicit subnet length for a disabled family: kept as given, but it must still fit.
fn explicit_len(
    spec: &KeySpec,
    raw: Option<u64>,
    max: u8,
    flannel: &str,
) -> Result<u8, ConfigError> {
    match raw {
        None => Ok(0),
        Some(len) => u8::try_from(len)
            .ok()
            .filter(|len| *len <= max)
            .ok_or_else(|| {
                invalid(
                    spec.name,
                    len.to_string(),
                    flannel,
                    format!("use {max} or less, or remove {}", spec.name),
                )
            }),
    }
}

/// Default SubnetLen/Min/Max for a network, or `None` when the network is too small.
fn default_v4(network: Ipv4Net) -> Option<V4Defaults> {
    let len = default_subnet_len(network.prefix_len())?;
    let (min, max) = v4_bounds(network, len);
    Some((len, min, max))
}

/// Default SubnetMin (second subnet: the first would hand a node the network address) and
/// SubnetMax (last subnet) for a network and subnet length.
fn v4_bounds(network: Ipv4Net, len: u8) -> (Ipv4Addr, Ipv4Addr) {
    let size = block_size(len);
    let start = u64::from(u32::from(network.network()));
    let end = u64::from(u32::from(network.broadcast()));
    (to_v4(start + size), to_v4((end + 1).saturating_sub(size)))
}

fn to_v4(n: u64) -> Ipv4Addr {
    Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))
}

/// What differs between the IPv4 and the IPv6 part of a config for [`check_family`]: key
/// names, limits, flannel's messages and the address arithmetic.
trait Family {
    type Net: Copy + std::fmt::Display;
    type Addr: Copy + Ord + std::fmt::Display;
    const NETWORK: &'static str;
    const LEN: &'static str;
    const MIN: &'static str;
    const MAX: &'static str;
    const MAX_LEN: u8;
    /// flannel's message for a SubnetLen over [`Family::MAX_LEN`], and weft's fix.
    const LEN_TOO_LONG: (&'static str, &'static str);
    /// flannel's message for a network that holds fewer than four subnets.
    const ACCOMMODATE: &'static str;
    /// flannel's message for a network too small for the default length, and weft's fix.
    const TOO_SMALL: (&'static str, &'static str);
    /// Whether an unspecified address (`0.0.0.0`) means "default", as flannel reads IPv4.
    const UNSPECIFIED_IS_DEFAULT: bool;
    fn prefix(net: Self::Net) -> u8;
    fn default_len(prefix: u8) -> Option<u8>;
    fn bounds(net: Self::Net, len: u8) -> (Self::Addr, Self::Addr);
    fn contains(net: Self::Net, addr: Self::Addr) -> bool;
    /// The start of the `/len` block holding `addr`.
    fn align(addr: Self::Addr, len: u8) -> Self::Addr;
    fn is_unspecified(addr: Self::Addr) -> bool;
}

struct V4;
struct V6;

/// The [`Family`] methods that read the same for both families (ipnet's and std's types).
macro_rules! same_for_both_families {
    ($net:ty, $addr:ty) => {
        fn prefix(net: $net) -> u8 {
            net.prefix_len()
        }
        fn contains(net: $net, addr: $addr) -> bool {
            net.contains(&addr)
        }
        fn align(addr: $addr, len: u8) -> $addr {
            <$net>::new(addr, len).map(|n| n.network()).unwrap_or(addr)
        }
        fn is_unspecified(addr: $addr) -> bool {
            addr.is_unspecified()
        }
    };
}

impl Family for V4 {
    type Net = Ipv4Net;
    type Addr = Ipv4Addr;
    const NETWORK: &'static str = "Network";
    const LEN: &'static str = "SubnetLen";
    const MIN: &'static str = "SubnetMin";
    const MAX: &'static str = "SubnetMax";
    const MAX_LEN: u8 = 30;
    const LEN_TOO_LONG: (&'static str, &'static str) = (
        "SubnetLen must be less than /31",
        "each node subnet needs room for the gateway and pods; use 30 or less, e.g. \"SubnetLen\": 24, or remove SubnetLen for the default",
    );
    const ACCOMMODATE: &'static str = "network must be able to accommodate at least four subnets";
    const TOO_SMALL: (&'static str, &'static str) = (
        "network is too small. Minimum useful network prefix is /28",
        r#"use a /28 or larger Network such as "10.244.0.0/16""#,
    );
    const UNSPECIFIED_IS_DEFAULT: bool = true;
    same_for_both_families!(Ipv4Net, Ipv4Addr);
    fn default_len(prefix: u8) -> Option<u8> {
        default_subnet_len(prefix)
    }
    fn bounds(net: Ipv4Net, len: u8) -> (Ipv4Addr, Ipv4Addr) {
        v4_bounds(net, len)
    }
}

impl Family for V6 {
    type Net = Ipv6Net;
    type Addr = Ipv6Addr;
    const NETWORK: &'static str = "IPv6Network";
    const LEN: &'static str = "IPv6SubnetLen";
    const MIN: &'static str = "IPv6SubnetMin";
    const MAX: &'static str = "IPv6SubnetMax";
    const MAX_LEN: u8 = 126;
    const LEN_TOO_LONG: (&'static str, &'static str) = (
        "IPv6SubnetLen must be less than /127",
        "use 126 or less, e.g. \"IPv6SubnetLen\": 64, or remove IPv6SubnetLen for the default",
    );
    const ACCOMMODATE: &'static str =
        "IPv6Network must be able to accommodate at least four subnets";
    const TOO_SMALL: (&'static str, &'static str) = (
        "IPv6Network is too small. Minimum useful network prefix is /124",
        r#"use a /124 or larger IPv6Network such as "fc00::/48""#,
    );
    const UNSPECIFIED_IS_DEFAULT: bool = false;
    same_for_both_families!(Ipv6Net, Ipv6Addr);
    fn default_len(prefix: u8) -> Option<u8> {
        default_ipv6_subnet_len(prefix)
    }
    fn bounds(net: Ipv6Net, len: u8) -> (Ipv6Addr, Ipv6Addr) {
        v6_bounds(net, len)
    }
}

/// The subnet length, SubnetMin and SubnetMax of one family's part, defaults filled in and
/// checked as flannel checks them (with flannel's messages).
fn check_family<F: Family>(
    network: F::Net,
    raw_len: Option<u64>,
    raw_min: Option<F::Addr>,
    raw_max: Option<F::Addr>,
) -> Result<(u8, F::Addr, F::Addr), ConfigError> {
    let prefix = F::prefix(network);
    let len = match raw_len {
        Some(len) if len > 0 => {
            if len > u64::from(F::MAX_LEN) {
                let (flannel, fix) = F::LEN_TOO_LONG;
                return Err(invalid(F::LEN, len.to_string(), flannel, fix));
            }
            // len <= MAX_LEN here, so the conversion cannot fail.
            let len = u8::try_from(len).unwrap_or(F::MAX_LEN);
            if u16::from(len) < u16::from(prefix) + 2 {
                return Err(invalid(
                    F::LEN,
                    len.to_string(),
                    F::ACCOMMODATE,
                    format!(
                        "{} {network} is a /{prefix}, so {} must be at least {}; raise {}, remove it for the default, or use a larger {}",
                        F::NETWORK,
                        F::LEN,
                        u16::from(prefix) + 2,
                        F::LEN,
                        F::NETWORK
                    ),
                ));
            }
            len
        }
        _ => F::default_len(prefix).ok_or_else(|| {
            let (flannel, fix) = F::TOO_SMALL;
            invalid(F::NETWORK, quoted(&network.to_string()), flannel, fix)
        })?,
    };

    let (default_min, default_max) = F::bounds(network, len);
    let pick = |key: &str, raw: Option<F::Addr>, default: F::Addr| match raw {
        None => Ok(default),
        Some(a) if F::UNSPECIFIED_IS_DEFAULT && F::is_unspecified(a) => Ok(default),
        Some(a) if F::contains(network, a) => Ok(a),
        Some(a) => Err(invalid(
            key,
            quoted(&a.to_string()),
            format!("{key} is not in the range of the {}", F::NETWORK),
            format!(
                "use an address inside {} {network} such as {default}, or remove {key}",
                F::NETWORK
            ),
        )),
    };
    let min = pick(F::MIN, raw_min, default_min)?;
    let max = pick(F::MAX, raw_max, default_max)?;

    for (key, addr) in [(F::MIN, min), (F::MAX, max)] {
        let aligned = F::align(addr, len);
        if aligned != addr {
            return Err(invalid(
                key,
                quoted(&addr.to_string()),
                format!("{key} is not on a SubnetLen boundary: {addr}"),
                format!(
                    "with {} {len} use the start of a /{len} such as {aligned}",
                    F::LEN
                ),
            ));
        }
    }

    if min > max {
        return Err(invalid(
            F::MIN,
            quoted(&min.to_string()),
            format!(
                "{} is above {} {max}, so no subnet can be allocated",
                F::MIN,
                F::MAX
            ),
            format!(
                "make {} at most {}, or remove both for the defaults {default_min} and {default_max}",
                F::MIN,
                F::MAX
            ),
        ));
    }
    Ok((len, min, max))
}

fn check_v4(
    network: Ipv4Net,
    raw_len: Option<u64>,
    raw_min: Option<Ipv4Addr>,
    raw_max: Option<Ipv4Addr>,
) -> Result<V4Defaults, ConfigError> {
    check_family::<V4>(network, raw_len, raw_min, raw_max)
}

/// Default IPv6SubnetMin/Max for a network and subnet length.
fn v6_bounds(network: Ipv6Net, len: u8) -> (Ipv6Addr, Ipv6Addr) {
    let size = 1u128
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0);
    let start = u128::from(network.network());
    let end = u128::from(network.broadcast());
    (
        Ipv6Addr::from(start.saturating_add(size)),
        Ipv6Addr::from(end.saturating_sub(size).saturating_add(1)),
    )
}

fn check_v6(
    network: Ipv6Net,
    raw_len: Option<u64>,
    raw_min: Option<Ipv6Addr>,
    raw_max: Option<Ipv6Addr>,
) -> Result<V6Defaults, ConfigError> {
    let (len, min, max) = check_family::<V6>(network, raw_len, raw_min, raw_max)?;
    Ok((len, Some(min), Some(max)))
}

/// Decodes `Backend`. Absent, `null`, or an object without a `Type` means "default": flanneld
/// would pick udp (or fail on an empty type); weft uses vxlan and reports `backend_defaulted`.
fn parse_backend(value: Option<&Json>) -> Result<(BackendConfig, bool), ConfigError> {
    let obj = match value {
        None | Some(Json::Null) => return Ok((BackendConfig::Vxlan(VxlanConfig::default()), true)),
        Some(obj @ Json::Object(_)) => obj,
        Some(other) => {
            return Err(ConfigError::BackendNotAnObject {
                found: other.kind(),
            });
        }
    };
    let type_name = BACKEND_TYPE.get_str(obj)?.unwrap_or("");
    // flannel lower-cases the type before looking up the backend.
    let lower = type_name.to_ascii_lowercase();
    match lower.as_str() {
        "" => Ok((BackendConfig::Vxlan(parse_vxlan(obj)?), true)),
        "vxlan" => Ok((BackendConfig::Vxlan(parse_vxlan(obj)?), false)),
        "host-gw" => Ok((BackendConfig::HostGw, false)),
        known if FLANNEL_BACKENDS.contains(&known) => Ok((
            BackendConfig::Other {
                type_name: lower.clone(),
            },
            false,
        )),
        _ => Err(ConfigError::UnknownBackend {
            type_name: clip(type_name),
            known: FLANNEL_BACKENDS.join(", "),
        }),
    }
}

fn parse_vxlan(obj: &Json) -> Result<VxlanConfig, ConfigError> {
    let mut cfg = VxlanConfig::default();
    if let Some(vni) = BACKEND_VNI.get_uint(obj)? {
        cfg.vni = u32::try_from(vni)
            .ok()
            .filter(|vni| *vni <= MAX_VNI)
            .ok_or_else(|| {
                invalid(
                    "Backend.VNI",
                    vni.to_string(),
                    format!(
                        "a VXLAN network identifier has 24 bits, so VNI must be at most {MAX_VNI}"
                    ),
                    "use a small number such as 1 (the default), the same on every node",
                )
            })?;
    }
    if let Some(port) = BACKEND_PORT.get_uint(obj)? {
        cfg.port = u16::try_from(port).map_err(|_| {
            invalid(
                "Backend.Port",
                port.to_string(),
                "a UDP port must be at most 65535",
                "use 0 or remove Port for the kernel default 8472, or 4789 for the IANA VXLAN port",
            )
        })?;
    }
    if let Some(mtu) = BACKEND_MTU.get_uint(obj)? {
        // Go's zero value means "not set": use the interface MTU.
        if mtu != 0 {
            let min = MIN_IPV4_MTU + VXLAN_OVERHEAD;
            cfg.mtu = Some(
                u32::try_from(mtu)
                    .ok()
                    .filter(|mtu| (min..=65535).contains(mtu))
                    .ok_or_else(|| {
                        invalid(
                            "Backend.MTU",
                            mtu.to_string(),
                            format!(
                                "MTU is the underlay MTU and must be from {min} to 65535 (the VXLAN device gets MTU - {VXLAN_OVERHEAD}, which must be at least {MIN_IPV4_MTU})"
                            ),
                            "set the MTU of the node interface that carries VXLAN traffic, e.g. 1500, or remove MTU to use that interface's MTU",
                        )
                    })?,
            );
        }
    }
    cfg.gbp = BACKEND_GBP.get_bool(obj)?.unwrap_or(false);
    cfg.learning = BACKEND_LEARNING.get_bool(obj)?.unwrap_or(false);
    cfg.direct_routing = BACKEND_DIRECT_ROUTING.get_bool(obj)?.unwrap_or(false);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetworkConfig, ConfigError> {
        NetworkConfig::parse(s.as_bytes())
    }

    fn ok(s: &str) -> NetworkConfig {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn manifest_default_config() {
        let cfg =
            ok(r#"{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"vxlan"}}"#);
        assert_eq!(
            cfg,
            NetworkConfig {
                enable_ipv4: true,
                enable_ipv6: false,
                enable_nftables: false,
                network: Some(net("10.244.0.0/16")),
                subnet_len: 24,
                subnet_min: v4("10.244.1.0"),
                subnet_max: v4("10.244.255.0"),
                ipv6_network: None,
                ipv6_subnet_len: 0,
                ipv6_subnet_min: None,
                ipv6_subnet_max: None,
                backend: BackendConfig::Vxlan(VxlanConfig::default()),
                backend_defaulted: false,
            }
        );
        assert_eq!(cfg.subnet_count(), 255);
        assert_eq!(cfg.subnet_size(), 256);
    }

    #[test]
    fn v4_defaults_table() {
        // (Network, SubnetLen given, want len, want min, want max)
        let cases = [
            ("10.244.0.0/16", None, 24, "10.244.1.0", "10.244.255.0"),
            ("10.0.0.0/8", None, 24, "10.0.1.0", "10.255.255.0"),
            ("10.244.0.0/22", None, 24, "10.244.1.0", "10.244.3.0"),
            ("10.244.0.0/23", None, 25, "10.244.0.128", "10.244.1.128"),
            ("10.244.0.0/24", None, 26, "10.244.0.64", "10.244.0.192"),
            ("10.244.0.0/28", None, 30, "10.244.0.4", "10.244.0.12"),
            ("10.244.0.0/16", Some(20), 20, "10.244.16.0", "10.244.240.0"),
            ("10.244.0.0/16", Some(0), 24, "10.244.1.0", "10.244.255.0"),
            ("10.244.0.0/16", Some(18), 18, "10.244.64.0", "10.244.192.0"),
            ("10.244.0.0/28", Some(30), 30, "10.244.0.4", "10.244.0.12"),
            ("0.0.0.0/0", None, 24, "0.0.1.0", "255.255.255.0"),
        ];
        for (network, len, want_len, want_min, want_max) in cases {
            let text = match len {
                Some(len) => format!(r#"{{"Network":"{network}","SubnetLen":{len}}}"#),
                None => format!(r#"{{"Network":"{network}"}}"#),
            };
            let cfg = ok(&text);
            assert_eq!(cfg.subnet_len, want_len, "{text}");
            assert_eq!(cfg.subnet_min, v4(want_min), "{text}");
            assert_eq!(cfg.subnet_max, v4(want_max), "{text}");
        }
    }

    #[test]
    fn network_host_bits_are_masked() {
        let cfg = ok(r#"{"Network":"10.244.3.7/16"}"#);
        assert_eq!(cfg.network, Some(net("10.244.0.0/16")));
    }

    #[test]
    fn case_insensitive_keys_at_every_level() {
        let cfg = ok(
            r#"{"network":"10.244.0.0/16","subnetlen":25,"backend":{"type":"VXLAN","vni":4,"port":4789,"mtu":9000,"gbp":true,"LEARNING":true,"directrouting":true}}"#,
        );
        assert_eq!(cfg.network, Some(net("10.244.0.0/16")));
        assert_eq!(cfg.subnet_len, 25);
        assert!(!cfg.backend_defaulted);
        assert_eq!(
            cfg.vxlan(),
            Some(&VxlanConfig {
                vni: 4,
                port: 4789,
                mtu: Some(9000),
                gbp: true,
                learning: true,
                direct_routing: true,
            })
        );
    }

    #[test]
    fn last_duplicate_key_wins() {
        let cfg = ok(r#"{"Network":"10.1.0.0/16","network":"10.244.0.0/16"}"#);
        assert_eq!(cfg.network, Some(net("10.244.0.0/16")));
    }

    #[test]
    fn unknown_keys_and_nulls_are_ignored() {
        let cfg = ok(
            r#"{"Network":"10.244.0.0/16","Whatever":[1,2],"SubnetLen":null,"SubnetMin":null,"Backend":{"Type":"vxlan","MacPrefix":"0E-2A","VNI":null}}"#,
        );
        assert_eq!(cfg.subnet_len, 24);
        assert_eq!(cfg.vxlan().map(|v| v.vni), Some(1));
    }

    #[test]
    fn backend_defaults_to_vxlan_and_is_flagged() {
        for text in [
            r#"{"Network":"10.244.0.0/16"}"#,
            r#"{"Network":"10.244.0.0/16","Backend":null}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":""}}"#,
        ] {
            let cfg = ok(text);
            assert!(cfg.backend_defaulted, "{text}");
            assert_eq!(
                cfg.backend,
                BackendConfig::Vxlan(VxlanConfig::default()),
                "{text}"
            );
        }
        let cfg = ok(r#"{"Network":"10.244.0.0/16","Backend":{"VNI":7}}"#);
        assert!(cfg.backend_defaulted);
        assert_eq!(cfg.vxlan().map(|v| v.vni), Some(7));
    }

    #[test]
    fn other_flannel_backends_are_recognised() {
        for name in FLANNEL_BACKENDS {
            let text = format!(
                r#"{{"Network":"10.244.0.0/16","Backend":{{"Type":"{}"}}}}"#,
                name.to_uppercase()
            );
            let cfg = ok(&text);
            assert_eq!(cfg.backend.type_name(), *name);
            assert!(!cfg.backend_defaulted);
            match *name {
                "vxlan" => {}
                "host-gw" => assert_eq!(cfg.backend, BackendConfig::HostGw),
                _ => assert_eq!(
                    cfg.backend,
                    BackendConfig::Other {
                        type_name: (*name).to_owned()
                    }
                ),
            }
            if *name != "vxlan" {
                assert!(cfg.vxlan().is_none());
            }
        }
    }

    #[test]
    fn enable_flags() {
        let cfg = ok(r#"{"Network":"10.244.0.0/16","EnableNFTables":true}"#);
        assert!(cfg.enable_ipv4 && !cfg.enable_ipv6 && cfg.enable_nftables);

        let cfg = ok(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}"#);
        assert!(!cfg.enable_ipv4);
        assert_eq!(cfg.network, None);
        assert_eq!(cfg.subnet_len, 0);
        assert_eq!(cfg.subnet_count(), 0);
        assert!(!cfg.contains_subnet(net("10.244.1.0/24")));
    }

    #[test]
    fn ipv6_defaults_table() {
        let cases = [
            ("fc00::/48", None, 64, "fc00:0:0:1::", "fc00:0:0:ffff::"),
            ("fc00::/62", None, 64, "fc00:0:0:1::", "fc00:0:0:3::"),
            (
                "fc00::/64",
                None,
                66,
                "fc00::4000:0:0:0",
                "fc00::c000:0:0:0",
            ),
            ("fc00::/124", None, 126, "fc00::4", "fc00::c"),
            (
                "fc00::/48",
                Some(56),
                56,
                "fc00:0:0:100::",
                "fc00:0:0:ff00::",
            ),
        ];
        for (network, len, want_len, want_min, want_max) in cases {
            let text = match len {
                Some(len) => format!(
                    r#"{{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"{network}","IPv6SubnetLen":{len}}}"#
                ),
                None => format!(
                    r#"{{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"{network}"}}"#
                ),
            };
            let cfg = ok(&text);
            assert_eq!(cfg.ipv6_subnet_len, want_len, "{text}");
            assert_eq!(
                cfg.ipv6_subnet_min,
                Some(want_min.parse().unwrap()),
                "{text}"
            );
            assert_eq!(
                cfg.ipv6_subnet_max,
                Some(want_max.parse().unwrap()),
                "{text}"
            );
        }
    }

    /// Every error: (config, key the error names, texts the message must contain).
    #[test]
    fn validation_errors_table() {
        let cases: &[(&str, Option<&str>, &[&str])] = &[
            ("", None, &["not valid JSON", "10.244.0.0/16"]),
            ("{", None, &["not valid JSON"]),
            (
                "[]",
                Some("network config"),
                &["must be a JSON object", "an array"],
            ),
            (
                "{}",
                Some("Network"),
                &[
                    "please define a correct Network parameter in the flannel config",
                    "\"Network\": \"10.244.0.0/16\"",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv4":false}"#,
                None,
                &["none defined stack", "EnableIPv4"],
            ),
            (
                r#"{"Network":5}"#,
                Some("Network"),
                &[
                    "Network: expected an IPv4 CIDR string, found the number 5",
                    "\"Network\": \"10.244.0.0/16\"",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0"}"#,
                Some("Network"),
                &[
                    "Network \"10.244.0.0\": invalid IPv4 CIDR format",
                    "10.244.0.0/16",
                ],
            ),
            (
                r#"{"Network":"fc00::/48"}"#,
                Some("Network"),
                &["invalid IPv4 CIDR format", "IPv6Network"],
            ),
            (
                r#"{"Network":"10.244.0.0/33"}"#,
                Some("Network"),
                &["invalid IPv4 CIDR format"],
            ),
            (
                r#"{"Network":"10.244.0.0/29"}"#,
                Some("Network"),
                &[
                    "Network \"10.244.0.0/29\": network is too small. Minimum useful network prefix is /28; use a /28 or larger Network such as \"10.244.0.0/16\"",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":"24"}"#,
                Some("SubnetLen"),
                &[
                    "SubnetLen: expected a whole number",
                    "found a string (\"24\")",
                    "\"SubnetLen\": 24",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":-1}"#,
                Some("SubnetLen"),
                &["expected a whole number", "-1"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":24.5}"#,
                Some("SubnetLen"),
                &["expected a whole number"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":31}"#,
                Some("SubnetLen"),
                &[
                    "SubnetLen 31: SubnetLen must be less than /31",
                    "30 or less",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":300}"#,
                Some("SubnetLen"),
                &["SubnetLen must be less than /31"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":17}"#,
                Some("SubnetLen"),
                &[
                    "network must be able to accommodate at least four subnets",
                    "at least 18",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/29","SubnetLen":30}"#,
                Some("SubnetLen"),
                &["at least four subnets"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}"#,
                Some("SubnetMin"),
                &[
                    "SubnetMin \"10.245.0.0\": SubnetMin is not in the range of the Network",
                    "10.244.1.0",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMax":"10.0.0.0"}"#,
                Some("SubnetMax"),
                &[
                    "SubnetMax is not in the range of the Network",
                    "10.244.255.0",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.5"}"#,
                Some("SubnetMin"),
                &[
                    "SubnetMin is not on a SubnetLen boundary: 10.244.1.5",
                    "such as 10.244.1.0",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMax":"10.244.9.1"}"#,
                Some("SubnetMax"),
                &["SubnetMax is not on a SubnetLen boundary: 10.244.9.1"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244"}"#,
                Some("SubnetMin"),
                &["not an IPv4 address", "\"SubnetMin\": \"10.244.1.0\""],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMin":10}"#,
                Some("SubnetMin"),
                &["SubnetMin: expected an IPv4 address string"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.5.0"}"#,
                Some("SubnetMin"),
                &["above SubnetMax 10.244.5.0"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":"true"}"#,
                Some("EnableIPv6"),
                &["EnableIPv6: expected true or false", "a string (\"true\")"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true}"#,
                Some("IPv6Network"),
                &["please define a correct IPv6Network parameter in the flannel config"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"10.0.0.0/8"}"#,
                Some("IPv6Network"),
                &["invalid IPv6 CIDR format", "fc00::/48"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/125"}"#,
                Some("IPv6Network"),
                &["IPv6Network is too small. Minimum useful network prefix is /124"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127}"#,
                Some("IPv6SubnetLen"),
                &["IPv6SubnetLen must be less than /127"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":49}"#,
                Some("IPv6SubnetLen"),
                &["IPv6Network must be able to accommodate at least four subnets"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fd00::"}"#,
                Some("IPv6SubnetMin"),
                &["IPv6SubnetMin is not in the range of the IPv6Network"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fd00::"}"#,
                Some("IPv6SubnetMax"),
                &["IPv6SubnetMax is not in the range of the IPv6Network"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:1::1"}"#,
                Some("IPv6SubnetMin"),
                &["IPv6SubnetMin is not on a SubnetLen boundary: fc00:0:0:1::1"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00:0:0:5::1"}"#,
                Some("IPv6SubnetMax"),
                &["IPv6SubnetMax is not on a SubnetLen boundary"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"nope"}"#,
                Some("IPv6SubnetMin"),
                &["not an IPv6 address"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":"vxlan"}"#,
                Some("Backend"),
                &[
                    "error decoding Backend property of config",
                    "found a string",
                    "Backend must be a JSON object",
                    "\"Backend\": {\"Type\": \"vxlan\"}",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":[1]}"#,
                Some("Backend"),
                &["found an array, but Backend must be a JSON object"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlna"}}"#,
                Some("Backend.Type"),
                &[
                    "Backend.Type \"vxlna\": unknown backend type: vxlna",
                    "host-gw",
                    "wireguard",
                    "\"Type\": \"vxlan\"",
                ],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":7}}"#,
                Some("Backend.Type"),
                &["Backend.Type: expected a string, found the number 7"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}"#,
                Some("Backend.VNI"),
                &["Backend.VNI: expected a whole number", "\"VNI\": 1"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#,
                Some("Backend.VNI"),
                &["Backend.VNI 16777216", "24 bits"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":65536}}"#,
                Some("Backend.Port"),
                &["Backend.Port 65536", "8472"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":100}}"#,
                Some("Backend.MTU"),
                &["Backend.MTU 100", "1500"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":70000}}"#,
                Some("Backend.MTU"),
                &["Backend.MTU 70000"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","GBP":1}}"#,
                Some("Backend.GBP"),
                &["Backend.GBP: expected true or false"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Learning":"no"}}"#,
                Some("Backend.Learning"),
                &["Backend.Learning"],
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":[]}}"#,
                Some("Backend.DirectRouting"),
                &["Backend.DirectRouting"],
            ),
        ];
        for (text, key, needles) in cases {
            let err = match parse(text) {
                Ok(cfg) => panic!("{text}: expected an error, got {cfg:?}"),
                Err(err) => err,
            };
            assert_eq!(err.key(), *key, "{text}: {err}");
            let msg = err.to_string();
            for needle in *needles {
                assert!(
                    msg.contains(needle),
                    "{text}:\n  message: {msg}\n  missing: {needle}"
                );
            }
        }
    }

    #[test]
    fn oversized_input_is_rejected() {
        let mut text = String::from(r#"{"Network":"10.244.0.0/16","Pad":""#);
        text.push_str(&"x".repeat(MAX_CONFIG_BYTES));
        text.push_str("\"}");
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, ConfigError::TooLarge { .. }));
        assert!(err.to_string().contains("65536-byte limit"), "{err}");
    }

    #[test]
    fn vxlan_mtu_zero_means_interface_mtu() {
        let cfg = ok(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":0}}"#);
        let vxlan = cfg.vxlan().copied().unwrap();
        assert_eq!(vxlan.mtu, None);
        assert_eq!(vxlan.device_mtu(1500), 1450);
        let cfg = ok(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":9000}}"#);
        assert_eq!(cfg.vxlan().map(|v| v.device_mtu(1500)), Some(8950));
    }

    #[test]
    fn subnet_count_and_contains() {
        let cfg = ok(r#"{"Network":"10.244.0.0/16"}"#);
        assert_eq!(cfg.subnet_count(), 255);
        assert!(cfg.contains_subnet(net("10.244.1.0/24")));
        assert!(cfg.contains_subnet(net("10.244.255.0/24")));
        assert!(
            !cfg.contains_subnet(net("10.244.0.0/24")),
            "below SubnetMin"
        );
        assert!(!cfg.contains_subnet(net("10.244.1.0/25")), "wrong prefix");
        assert!(
            !cfg.contains_subnet(net("10.245.1.0/24")),
            "outside Network"
        );
        assert!(!cfg.contains_subnet(net("10.244.1.5/24")), "host bits");

        let cfg = ok(
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.19.0"}"#,
        );
        assert_eq!(cfg.subnet_count(), 10);
        assert!(!cfg.contains_subnet(net("10.244.9.0/24")));
        assert!(cfg.contains_subnet(net("10.244.10.0/24")));
        assert!(cfg.contains_subnet(net("10.244.19.0/24")));
        assert!(!cfg.contains_subnet(net("10.244.20.0/24")));

        let cfg = ok(r#"{"Network":"0.0.0.0/0","SubnetLen":30}"#);
        assert_eq!(cfg.subnet_count(), (1u64 << 30) - 1);
    }

    #[test]
    fn to_json_round_trips() {
        let texts = [
            r#"{"Network":"10.244.0.0/16"}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"VNI":3}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#,
            r#"{"network":"10.244.0.0/16","subnetlen":26,"subnetmin":"10.244.2.0","SubnetMax":"10.244.9.192","EnableNFTables":true,"backend":{"type":"VXLAN","vni":4,"port":4789,"mtu":9000,"gbp":true,"learning":true,"directrouting":true}}"#,
            r#"{"Network":"10.244.0.0/16","SubnetLen":24}"#,
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":56,"IPv6SubnetMin":"fc00:0:0:200::","IPv6SubnetMax":"fc00:0:0:f00::"}"#,
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","SubnetLen":24}"#,
        ];
        for text in texts {
            let cfg = ok(text);
            let rendered = cfg.to_json();
            let again = parse(&rendered).unwrap_or_else(|e| panic!("{rendered}: {e}"));
            assert_eq!(again, cfg, "{text} -> {rendered}");
        }
    }

    #[test]
    fn to_json_is_canonical() {
        let cfg = ok(r#"{"network":"10.244.0.0/16","backend":{"type":"vxlan"}}"#);
        assert_eq!(
            cfg.to_json(),
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}"#
        );
        let cfg = ok(
            r#"{"Network":"10.244.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan","VNI":2,"Port":8472,"MTU":1400}}"#,
        );
        assert_eq!(
            cfg.to_json(),
            r#"{"Network":"10.244.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan","VNI":2,"Port":8472,"MTU":1400}}"#
        );
        let cfg = ok(r#"{"Network":"10.244.0.0/16"}"#);
        assert_eq!(cfg.to_json(), r#"{"Network":"10.244.0.0/16"}"#);
    }
}
