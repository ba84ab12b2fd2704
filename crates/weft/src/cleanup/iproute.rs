//! The VPC CNI's policy routing, found in `ip -j rule`, `ip -4 -j route show table all` and
//! `ip -j link show` JSON, and what to delete. Pure.
//!
//! Priorities and table numbers are those of `pkg/networkutils/network.go` and `helper.go`
//! (eks-vpc-cni.md §1.5):
//!
//! | priority | rule | deleted when |
//! |---|---|---|
//! | 1 | `from <pod IP> lookup <ENI table>` (multi-NIC pods) | the table is an ENI table by number |
//! | 10 | SGPP branch-ENI rules, table vlanID+100 | the table is an ENI or VLAN table by number |
//! | 20 | `lookup local` moved from 0 (SGPP strict) | always; `0: lookup local` is restored first |
//! | 512 | `to <pod IP> lookup main` | always (this exact shape) |
//! | 1024 | `fwmark 0x80/0x80 lookup main` (older: `not to <VPC CIDR> lookup main`) | always (these shapes) |
//! | 1535 | `to <external service CIDR> lookup main` | always (this shape) |
//! | 1536 | `from <pod IP> lookup <ENI table>` | the table is an ENI table by number |
//! | 32765 | `from <ENI primary IP> lookup <ENI table>` | the table is an ENI table by number, holds a default route via an ENI interface (`ethN`/`ensN`), and systemd-networkd does not manage that interface |
//!
//! ENI tables: `deviceNumber + 1` on network card 0 (2..=99 here) and
//! `10000 + device + 100 * card` (10000..=19999); VLAN tables (SGPP): `vlanID + 100`
//! (101..=4194). An ENI table is flushed when it holds a default route via an ENI interface
//! that systemd-networkd does not manage. Rules with selectors the VPC CNI never sets (tos,
//! ipproto, ports, uid ranges, goto, ...) and named tables other than main/local/default are
//! never touched, nor are the main, local and default tables' routes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// `main`.
pub const MAIN: u32 = 254;
/// `local`.
pub const LOCAL: u32 = 255;
/// `default`.
pub const DEFAULT: u32 = 253;

/// The priority ipamd moves the `local` rule to in SGPP strict mode.
pub const MOVED_LOCAL_PRIORITY: u32 = 20;

/// Keys `ip -j rule` prints for the selectors the VPC CNI uses.
const KNOWN_RULE_KEYS: &[&str] = &[
    "priority", "src", "srclen", "dst", "dstlen", "fwmark", "fwmask", "not", "iif", "oif", "table",
    "protocol", "flags",
];

/// A routing table reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TableRef {
    Id(u32),
    /// A name from rt_tables other than main/local/default: never touched.
    Named(String),
}

impl TableRef {
    pub fn parse(s: &str) -> TableRef {
        match s {
            "main" => TableRef::Id(MAIN),
            "local" => TableRef::Id(LOCAL),
            "default" => TableRef::Id(DEFAULT),
            _ => s
                .parse()
                .map(TableRef::Id)
                .unwrap_or_else(|_| TableRef::Named(s.to_string())),
        }
    }

    /// The word for `lookup <table>`.
    pub fn word(&self) -> String {
        match self {
            TableRef::Id(MAIN) => "main".into(),
            TableRef::Id(LOCAL) => "local".into(),
            TableRef::Id(DEFAULT) => "default".into(),
            TableRef::Id(n) => n.to_string(),
            TableRef::Named(s) => s.clone(),
        }
    }

    fn id(&self) -> Option<u32> {
        match self {
            TableRef::Id(n) => Some(*n),
            TableRef::Named(_) => None,
        }
    }
}

/// Whether `table` is an ENI device table by the VPC CNI's numbering.
pub fn is_device_table(table: u32) -> bool {
    (2..=99).contains(&table) || (10000..=19999).contains(&table)
}

/// Whether `table` is an SGPP VLAN table (vlanID + 100).
pub fn is_vlan_table(table: u32) -> bool {
    (101..=4194).contains(&table) && !is_reserved_table(table)
}

/// `default`, `main` and `local` (and the unspecified table 0): never flushed.
pub fn is_reserved_table(table: u32) -> bool {
    table == 0 || (DEFAULT..=LOCAL).contains(&table)
}

/// Whether `dev` is named like an ENI the VPC CNI set up routes for: `ethN` (AL2) or `ensN`
/// (AL2023's predictable names) for device tables, `vlan.eth.N` for VLAN tables.
pub fn is_eni_link(dev: &str, table: u32) -> bool {
    let numbered = |p: &str| {
        dev.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if is_vlan_table(table) {
        numbered("vlan.eth.")
    } else {
        numbered("eth") || numbered("ens")
    }
}

/// One `ip -j rule` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRule {
    pub priority: u32,
    pub not: bool,
    /// `from` (address or `addr/len`); `None` for `all`.
    pub from: Option<String>,
    /// `to` (address or `addr/len`).
    pub to: Option<String>,
    /// `fwmark` (`mark` or `mark/mask`).
    pub fwmark: Option<String>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub table: TableRef,
    /// Keys beyond the selectors above: the VPC CNI never sets them.
    pub other_selectors: Vec<String>,
}

impl IpRule {
    fn from_json(v: &Value) -> Option<IpRule> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let with_len = |addr: Option<String>, len_key: &str| {
            addr.filter(|a| a != "all").map(|a| match v.get(len_key) {
                Some(len) => format!("{a}/{len}"),
                None => a,
            })
        };
        let obj = v.as_object()?;
        Some(IpRule {
            priority: v
                .get("priority")?
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())?,
            not: obj.contains_key("not"),
            from: with_len(s("src"), "srclen"),
            to: with_len(s("dst"), "dstlen"),
            fwmark: s("fwmark").map(|m| match s("fwmask") {
                Some(mask) => format!("{m}/{mask}"),
                None => m,
            }),
            iif: s("iif"),
            oif: s("oif"),
            table: TableRef::parse(&s("table")?),
            other_selectors: obj
                .keys()
                .filter(|k| !KNOWN_RULE_KEYS.contains(&k.as_str()))
                .cloned()
                .collect(),
        })
    }

    /// The selector words, as `ip rule` prints and takes them.
    pub fn selector_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.not {
            a.push("not".to_string());
        }
        if let Some(f) = &self.from {
            a.extend(["from".to_string(), f.clone()]);
        }
        if let Some(t) = &self.to {
            a.extend(["to".to_string(), t.clone()]);
        }
        if let Some(m) = &self.fwmark {
            a.extend(["fwmark".to_string(), m.clone()]);
        }
        if let Some(i) = &self.iif {
            a.extend(["iif".to_string(), i.clone()]);
        }
        if let Some(o) = &self.oif {
            a.extend(["oif".to_string(), o.clone()]);
        }
        a
    }

    /// `ip rule del ...` arguments naming exactly this rule.
    pub fn del_args(&self) -> Vec<String> {
        let mut a = vec![
            "rule".to_string(),
            "del".to_string(),
            "priority".to_string(),
            self.priority.to_string(),
        ];
        a.extend(self.selector_args());
        a.extend(["lookup".to_string(), self.table.word()]);
        a
    }

    /// As `ip rule` shows it: `512: from all to 10.0.1.5 lookup main`.
    pub fn display(&self) -> String {
        let mut words = vec![format!("{}:", self.priority)];
        if self.not {
            words.push("not".into());
        }
        words.push("from".into());
        words.push(self.from.clone().unwrap_or_else(|| "all".into()));
        for (k, v) in [("to", &self.to), ("fwmark", &self.fwmark)] {
            if let Some(v) = v {
                words.extend([k.to_string(), v.clone()]);
            }
        }
        for (k, v) in [("iif", &self.iif), ("oif", &self.oif)] {
            if let Some(v) = v {
                words.extend([k.to_string(), v.clone()]);
            }
        }
        words.extend(["lookup".into(), self.table.word()]);
        words.join(" ")
    }

    fn is_plain_local(&self) -> bool {
        self.table == TableRef::Id(LOCAL)
            && self.selector_args().is_empty()
            && self.other_selectors.is_empty()
    }
}

/// One route of `ip -4 -j route show table all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub table: TableRef,
    pub dst: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
    pub scope: Option<String>,
}

impl Route {
    fn from_json(v: &Value) -> Option<Route> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Route {
            // `table all` leaves the key out for main.
            table: s("table")
                .map(|t| TableRef::parse(&t))
                .unwrap_or(TableRef::Id(MAIN)),
            dst: s("dst")?,
            gateway: s("gateway"),
            dev: s("dev"),
            scope: s("scope"),
        })
    }

    /// As `ip route` shows it, without the table.
    pub fn display(&self) -> String {
        let mut words = vec![self.dst.clone()];
        if let Some(g) = &self.gateway {
            words.extend(["via".into(), g.clone()]);
        }
        if let Some(d) = &self.dev {
            words.extend(["dev".into(), d.clone()]);
        }
        if let Some(s) = &self.scope {
            words.extend(["scope".into(), s.clone()]);
        }
        words.join(" ")
    }
}

/// Parses `ip -j rule`.
pub fn parse_rules(json: &str) -> Result<Vec<IpRule>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let list = v.as_array().ok_or("not a JSON list")?;
    Ok(list.iter().filter_map(IpRule::from_json).collect())
}

/// Parses `ip -4 -j route show table all`.
pub fn parse_routes(json: &str) -> Result<Vec<Route>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let list = v.as_array().ok_or("not a JSON list")?;
    Ok(list.iter().filter_map(Route::from_json).collect())
}

/// Parses `ip -j link show` into name → ifindex.
pub fn parse_links(json: &str) -> Result<BTreeMap<String, u32>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let list = v.as_array().ok_or("not a JSON list")?;
    Ok(list
        .iter()
        .filter_map(|l| {
            let name = l.get("ifname")?.as_str()?.to_string();
            let index = u32::try_from(l.get("ifindex")?.as_u64()?).ok()?;
            Some((name, index))
        })
        .collect())
}

/// Whether a systemd-networkd link state file (`/run/systemd/netif/links/<ifindex>`) says
/// networkd manages the link: it names a `.network` file and the link is not `unmanaged`.
pub fn networkd_manages(state_file: &str) -> bool {
    let mut network_file = false;
    let mut unmanaged = false;
    for line in state_file.lines() {
        if let Some(v) = line.strip_prefix("NETWORK_FILE=") {
            network_file |= !v.trim().is_empty();
        }
        if let Some(v) = line.strip_prefix("ADMIN_STATE=") {
            unmanaged |= v.trim() == "unmanaged";
        }
    }
    network_file && !unmanaged
}

/// What is known about one ENI-numbered table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFacts {
    pub id: u32,
    pub routes: Vec<Route>,
    /// The ENI interface of its default route, if it has one via an ENI interface.
    pub eni_dev: Option<String>,
    /// That interface is managed by systemd-networkd.
    pub networkd: bool,
}

impl TableFacts {
    /// The VPC CNI's: a default route via an ENI interface networkd leaves alone.
    pub fn is_cni_owned(&self) -> bool {
        self.eni_dev.is_some() && !self.networkd
    }
}

/// The ENI-numbered tables that hold routes, by id.
pub fn eni_tables(
    routes: &[Route],
    links: &BTreeMap<String, u32>,
    networkd_managed: &BTreeSet<u32>,
) -> BTreeMap<u32, TableFacts> {
    let mut out: BTreeMap<u32, TableFacts> = BTreeMap::new();
    for r in routes {
        let Some(id) = r.table.id() else { continue };
        if is_reserved_table(id) || !(is_device_table(id) || is_vlan_table(id)) {
            continue;
        }
        let facts = out.entry(id).or_insert_with(|| TableFacts {
            id,
            routes: Vec::new(),
            eni_dev: None,
            networkd: false,
        });
        facts.routes.push(r.clone());
        if r.dst == "default"
            && let Some(dev) = r.dev.as_deref().filter(|d| is_eni_link(d, id))
            && facts.eni_dev.is_none()
        {
            facts.eni_dev = Some(dev.to_string());
            facts.networkd = links
                .get(dev)
                .is_some_and(|ix| networkd_managed.contains(ix));
        }
    }
    out
}

/// The verdict on one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleVerdict {
    /// The VPC CNI's: delete it, for this reason.
    Delete(&'static str),
    /// Looks like the VPC CNI's but is kept, for this reason (shown to the operator).
    Keep(String),
    /// Not the VPC CNI's; not mentioned.
    Unrelated,
}

/// Decides about one rule (the priority-20 `local` rule is handled by [`plan_local_rule`]).
pub fn classify(rule: &IpRule, tables: &BTreeMap<u32, TableFacts>) -> RuleVerdict {
    if !rule.other_selectors.is_empty() {
        return RuleVerdict::Unrelated;
    }
    let table = rule.table.id();
    let main = table == Some(MAIN);
    let device = table.is_some_and(is_device_table);
    let vlan = table.is_some_and(is_vlan_table);
    let only = |from: bool, to: bool, mark: bool, iif: bool| {
        rule.from.is_some() == from
            && rule.to.is_some() == to
            && rule.fwmark.is_some() == mark
            && rule.iif.is_some() == iif
            && rule.oif.is_none()
    };
    match rule.priority {
        512 if main && !rule.not && only(false, true, false, false) => RuleVerdict::Delete(
            "the CNI plugin's per-pod `to <pod IP> lookup main` rule (ToContainerRulePriority); DEL with ipamd gone leaves it behind",
        ),
        1024 if main && !rule.not && only(false, false, true, false) => RuleVerdict::Delete(
            "ipamd's connmark rule (hostRulePriority): replies to NodePort connections marked by the AWS CONNMARK rules go out through the main table; the marks are going too",
        ),
        1024 if main && rule.not && only(false, true, false, false) => RuleVerdict::Delete(
            "ipamd's old `not to <VPC CIDR> lookup main` rule (hostRulePriority in early releases)",
        ),
        1535 if main && !rule.not && only(false, true, false, false) => {
            RuleVerdict::Delete("ipamd's AWS_EXTERNAL_SERVICE_CIDRS rule")
        }
        1536 if device && !rule.not && only(true, false, false, false) => RuleVerdict::Delete(
            "the CNI plugin's per-pod `from <pod IP> lookup <ENI table>` rule for pods on secondary ENIs (FromPodRulePriority)",
        ),
        1 if device && !rule.not && only(true, false, false, false) => RuleVerdict::Delete(
            "the CNI plugin's multi-NIC pod rule (FromInterfaceRulePriority) into an ENI table",
        ),
        10 if !rule.not
            && (((device || vlan) && only(true, false, false, false))
                || (vlan
                    && only(false, false, false, true)
                    && rule
                        .iif
                        .as_deref()
                        .is_some_and(|i| i.starts_with("vlan.eth.")))) =>
        {
            RuleVerdict::Delete(
                "the CNI plugin's security-groups-for-pods branch-ENI rule (VLAN table = vlanID + 100)",
            )
        }
        32765 if device && !rule.not && only(true, false, false, false) => {
            let id = table.unwrap_or_default();
            match tables.get(&id) {
                Some(t) if t.is_cni_owned() => RuleVerdict::Delete(
                    "ipamd's `from <ENI primary IP> lookup <ENI table>` rule for a secondary ENI (FromPrimaryIPofENIRulePriority)",
                ),
                Some(TableFacts {
                    eni_dev: Some(dev),
                    networkd: true,
                    ..
                }) => RuleVerdict::Keep(format!(
                    "{dev} is managed by systemd-networkd (nodeadm writes the same priority-32765 rule for the interfaces it manages), so this rule and table {id} are networkd's"
                )),
                _ => RuleVerdict::Keep(format!(
                    "table {id} holds no default route via an ENI interface (ethN/ensN), so it is not recognisably the VPC CNI's"
                )),
            }
        }
        _ => RuleVerdict::Unrelated,
    }
}

/// What to do about the `local` rule: `Some((restore_zero, rule_at_20))` when ipamd moved it
/// to priority 20.
pub fn plan_local_rule(rules: &[IpRule]) -> Option<(bool, IpRule)> {
    let moved = rules
        .iter()
        .find(|r| r.priority == MOVED_LOCAL_PRIORITY && r.is_plain_local())?;
    let zero = rules.iter().any(|r| r.priority == 0 && r.is_plain_local());
    Some((!zero, moved.clone()))
}

/// The VPC CNI's host-side veth prefix (`AWS_VPC_K8S_CNI_VETHPREFIX`, default `eni`): a pod's
/// veth is `eni` + 11 hex digits of sha1("<namespace>.<pod>").
pub const VETH_PREFIX: &str = "eni";

/// A pod with a VPC address that still runs on this node: the CNI plugin's
/// `<pod IP> dev eni<hash> scope link` route in the main table, through a veth that exists
/// (the veth and the route disappear when the pod's network namespace goes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct LivePod {
    /// The pod's address.
    pub ip: String,
    /// Its host veth.
    pub dev: String,
    /// The ENI table of its `1536: from <pod IP> lookup <table>` rule: the pod lives on a
    /// secondary ENI and leaves through it.
    pub table: Option<u32>,
}

impl LivePod {
    /// `10.0.2.33 on eni1a2b3c4d5e6`.
    pub fn short(&self) -> String {
        format!("{} on {}", self.ip, self.dev)
    }

    /// `pod 10.0.2.33 on eni1a2b3c4d5e6 (ENI table 2)`.
    pub fn describe(&self) -> String {
        match self.table {
            Some(t) => format!("pod {} (ENI table {t})", self.short()),
            None => format!("pod {}", self.short()),
        }
    }
}

/// A single IPv4 address, as `ip -j route` prints a host route's dst (`10.0.2.33`, or
/// `10.0.2.33/32`).
fn host_address(dst: &str) -> Option<&str> {
    let addr = dst.strip_suffix("/32").unwrap_or(dst);
    addr.parse::<std::net::Ipv4Addr>().ok().map(|_| addr)
}

/// The VPC-addressed pods still running here: host routes in the main table via an existing
/// `eni*` link, each with the ENI table its `from <pod IP>` rule (priority 1536) sends it to.
pub fn live_pods(
    routes: &[Route],
    links: &BTreeMap<String, u32>,
    rules: &[IpRule],
) -> Vec<LivePod> {
    let mut out: Vec<LivePod> = routes
        .iter()
        .filter(|r| r.table == TableRef::Id(MAIN) && r.gateway.is_none())
        .filter_map(|r| {
            let dev = r.dev.as_deref()?;
            let ip = host_address(&r.dst)?;
            (dev.starts_with(VETH_PREFIX)
                && dev.len() > VETH_PREFIX.len()
                && links.contains_key(dev))
            .then(|| LivePod {
                ip: ip.to_string(),
                dev: dev.to_string(),
                table: rules
                    .iter()
                    .filter(|rule| rule.priority == 1536 && rule.other_selectors.is_empty())
                    .find(|rule| rule.from.as_deref().and_then(host_address) == Some(ip))
                    .and_then(|rule| rule.table.id())
                    .filter(|t| is_device_table(*t)),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The address a per-pod rule names (`512: to <pod>`, `1536: from <pod>`, `1: from <pod>`).
pub fn rule_pod_address(rule: &IpRule) -> Option<&str> {
    match rule.priority {
        512 => rule.to.as_deref().and_then(host_address),
        1 | 1536 => rule.from.as_deref().and_then(host_address),
        _ => None,
    }
}

/// The `to <overlay network> lookup main` rule at the VPC CNI's priority for CIDRs reached
/// through the main table (1535, AWS_EXTERNAL_SERVICE_CIDRS), which sorts before the pods'
/// `from <pod IP> lookup <ENI table>` rules (1536): VPC-addressed pods on secondary ENIs then
/// reach overlay pods through flannel.1 instead of the ENI's table, where the VPC would drop
/// them (it has no route to the overlay).
pub fn overlay_rule(network: &str) -> IpRule {
    IpRule {
        priority: 1535,
        not: false,
        from: None,
        to: Some(network.to_string()),
        fwmark: None,
        iif: None,
        oif: None,
        table: TableRef::Id(MAIN),
        other_selectors: Vec::new(),
    }
}

impl IpRule {
    /// `ip rule add ...` arguments for this rule.
    pub fn add_args(&self) -> Vec<String> {
        let mut a = self.del_args();
        a[1] = "add".to_string();
        a
    }
}
