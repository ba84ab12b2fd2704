//! From a [`Snapshot`] to the plan: steps, each saying what it removes, why, and the exact
//! command or file operation. Pure: the same snapshot always gives the same plan, and the
//! snapshot of a cleaned node gives an empty one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use weft_cni::install::{config_plugin_type, is_network_config_name, missing_plugins};

use super::iproute::{self, IpRule, LivePod, Route, RuleVerdict, TableFacts};
use super::iptables::{self, Finding};
use super::snapshot::{Kind, Listing, NftState, Snapshot, StateRole, Tools};

/// The VPC CNI's conflist (`misc/10-aws.conflist`).
pub const AWS_CONFLIST: &str = "10-aws.conflist";
/// The VPC CNI's network name and plugin type.
pub const AWS_NETWORK: &str = "aws-cni";
/// Suffix of the configs and directories moved aside.
pub const BACKUP_SUFFIX: &str = ".weft-bak";
/// What the VPC CNI installs in the CNI bin dir besides the upstream plugins.
pub const AWS_BINARIES: &[&str] = &[
    "aws-cni",
    "egress-cni",
    "aws-cni-support.sh",
    "aws-eks-na-cli",
    "aws-eks-na-cli-v6",
];
/// Prefix of libcni's cached results of the aws-cni network.
pub const AWS_RESULT_PREFIX: &str = "aws-cni-";

/// The part of the node a step changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    CniConfig,
    Iptables,
    Nftables,
    IpRule,
    Route,
    CniBinary,
    State,
}

impl Area {
    pub fn label(self) -> &'static str {
        match self {
            Area::CniConfig => "cni-config",
            Area::Iptables => "iptables",
            Area::Nftables => "nftables",
            Area::IpRule => "ip-rule",
            Area::Route => "route",
            Area::CniBinary => "cni-binary",
            Area::State => "state",
        }
    }
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Action {
    /// rename(2), refusing to replace an existing `to`.
    Rename { from: PathBuf, to: PathBuf },
    /// unlink(2), or a recursive removal of a directory; gone already counts as done.
    Remove { path: PathBuf, recursive: bool },
    /// A command, with `stdin` fed to it.
    Run {
        program: String,
        args: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stdin: Option<String>,
    },
}

impl Action {
    fn run(program: &str, args: Vec<String>, stdin: Option<String>) -> Action {
        Action::Run {
            program: program.to_string(),
            args,
            stdin,
        }
    }

    /// The shell equivalent, e.g. `mv -n a b`, or a here-document for stdin.
    pub fn command(&self) -> String {
        let path = |p: &Path| shell_quote(&p.display().to_string());
        match self {
            Action::Rename { from, to } => format!("mv -n {} {}", path(from), path(to)),
            Action::Remove {
                path: p,
                recursive: true,
            } => format!("rm -r {}", path(p)),
            Action::Remove { path: p, .. } => format!("rm {}", path(p)),
            Action::Run {
                program,
                args,
                stdin,
            } => {
                let mut line = std::iter::once(program.as_str())
                    .chain(args.iter().map(String::as_str))
                    .map(shell_quote)
                    .collect::<Vec<_>>()
                    .join(" ");
                if let Some(input) = stdin {
                    line.push_str(" <<'EOF'\n");
                    line.push_str(input);
                    if !input.ends_with('\n') {
                        line.push('\n');
                    }
                    line.push_str("EOF");
                }
                line
            }
        }
    }
}

/// Quotes a word for a shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub area: Area,
    /// What goes.
    pub what: String,
    /// Why it must go (or may go).
    pub why: String,
    pub actions: Vec<Action>,
    /// Later actions depend on earlier ones: stop the step at the first failure.
    pub chained: bool,
}

/// The plan for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The VPC CNI-looking things deliberately left in place, and why.
    pub kept: Vec<String>,
    /// Things the operator should fix that this command does not.
    pub warnings: Vec<String>,
    /// What could not be inspected (the plan may be incomplete).
    pub problems: Vec<String>,
    /// Why applying would be unsafe right now (ipamd still running).
    pub blocker: Option<String>,
    /// The VPC-addressed pods still running here: what they need is kept until they are gone.
    pub live_pods: Vec<LivePod>,
    /// The routes and links could not be read, so whether pods still run is unknown (and
    /// what they would need is kept).
    pub live_unknown: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The name a moved-aside `name` gets: `<name>.weft-bak`, or `.weft-bak.2`, `.3`, ... when
/// taken.
pub fn backup_name(name: &str, taken: &[&str]) -> String {
    let first = format!("{name}{BACKUP_SUFFIX}");
    if !taken.contains(&first.as_str()) {
        return first;
    }
    (2u32..)
        .map(|n| format!("{first}.{n}"))
        .find(|c| !taken.contains(&c.as_str()))
        .unwrap_or(first)
}

/// Whether a network config is the VPC CNI's: the file name, the network name or the first
/// plugin's type.
pub fn is_aws_config(name: &str, content: Option<&[u8]>) -> bool {
    if name == AWS_CONFLIST {
        return true;
    }
    let Some(bytes) = content else { return false };
    let network = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(str::to_string));
    network.as_deref() == Some(AWS_NETWORK)
        || config_plugin_type(bytes).as_deref() == Some(AWS_NETWORK)
}

/// What still needs the VPC CNI's policy routing, SNAT and state on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// No VPC-addressed pod runs here: everything can go.
    None,
    /// These pods still run here.
    Pods(Vec<LivePod>),
    /// The routes or links could not be read: assume pods run.
    Unknown,
}

impl Live {
    /// Why something `f` selects must stay: `pod 10.0.2.33 on eni... still uses it`, or `None`
    /// when no live pod needs it.
    pub fn users(&self, f: impl Fn(&LivePod) -> bool) -> Option<String> {
        match self {
            Live::None => None,
            Live::Unknown => Some(
                "the node's routes and links could not be read, so it is unknown whether VPC-addressed pods still use it".into(),
            ),
            Live::Pods(pods) => {
                let users: Vec<&LivePod> = pods.iter().filter(|p| f(p)).collect();
                match users.as_slice() {
                    [] => None,
                    [one] => Some(format!("{} still uses it", one.describe())),
                    many => Some(format!(
                        "pods {} still use it",
                        many.iter().map(|p| p.short()).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }
    }

    /// Why what every VPC-addressed pod needs must stay.
    pub fn any(&self) -> Option<String> {
        self.users(|_| true)
    }
}

/// The node's policy routing, parsed.
struct Routing {
    rules: Vec<IpRule>,
    routes: Vec<Route>,
    links: BTreeMap<String, u32>,
}

/// Computes the plan: with VPC-addressed pods still running (their `eni*` veths and host
/// routes), only what is safe while they run; what they need is listed as kept.
pub fn plan(snap: &Snapshot, tools: &Tools) -> Plan {
    plan_with(snap, tools, false)
}

/// Like [`plan`]; with `all`, everything goes even while VPC-addressed pods run (on EC2 that
/// cuts their return path: `--all`).
pub fn plan_with(snap: &Snapshot, tools: &Tools, all: bool) -> Plan {
    let mut p = Plan::default();
    if let Some(what) = &snap.ipamd {
        p.blocker = Some(format!(
            "ipamd is still running on this node ({what}): it would put its config, rules and routes straight back. Stop the VPC CNI cluster-wide first (`aws eks delete-addon --addon-name vpc-cni`, or `kubectl -n kube-system delete daemonset aws-node`), wait for the aws-node pod to leave this node, then run again (--force applies anyway)"
        ));
    }
    let routing = parse_routing(snap, &mut p);
    let live = match (&routing, all) {
        (_, true) => Live::None,
        (None, false) => Live::Unknown,
        (Some(r), false) => {
            let pods = iproute::live_pods(&r.routes, &r.links, &r.rules);
            if pods.is_empty() {
                Live::None
            } else {
                Live::Pods(pods)
            }
        }
    };
    if let Live::Pods(pods) = &live {
        p.live_pods = pods.clone();
    }
    p.live_unknown = live == Live::Unknown;
    let overlay = match &snap.overlay {
        Ok(o) => o.as_ref().map(|(net, _)| net.to_string()),
        Err(e) => {
            p.problems.push(e.clone());
            None
        }
    };
    if live != Live::None && overlay.is_none() {
        p.warnings.push(format!(
            "the overlay network is not known (no --overlay-network, and {}): while VPC-addressed pods run here, AWS-SNAT-CHAIN-0 keeps SNATing traffic to overlay pods to the node's primary IP (the other node then answers from an overlay address straight onto the VPC, which EC2 drops), and pods on secondary ENIs send overlay addresses into their ENI's table. Run again once weftd has written its subnet file, or pass --overlay-network",
            match &snap.overlay {
                Ok(None) => format!("no FLANNEL_NETWORK in {}", snap.subnet_file.display()),
                _ => format!("{} could not be used", snap.subnet_file.display()),
            }
        ));
    }
    plan_configs(snap, &mut p);
    plan_iptables(snap, &live, overlay.as_deref(), &mut p);
    plan_nft(snap, tools, &live, &mut p);
    if let Some(r) = &routing {
        plan_routing(snap, r, tools, &live, overlay.as_deref(), &mut p);
    }
    plan_binaries(snap, &live, &mut p);
    plan_state(snap, &live, &mut p);
    p
}

fn parse_routing(snap: &Snapshot, p: &mut Plan) -> Option<Routing> {
    let rules = parsed("ip -j rule", &snap.rules, iproute::parse_rules, p);
    let routes = parsed(
        "ip -4 -j route show table all",
        &snap.routes,
        iproute::parse_routes,
        p,
    );
    let links = parsed("ip -j link show", &snap.links, iproute::parse_links, p);
    Some(Routing {
        rules: rules?,
        routes: routes?,
        links: links?,
    })
}

fn listing_problem(l: &Listing, p: &mut Plan) {
    if let Err(e) = &l.entries {
        p.problems.push(e.clone());
    }
}

fn plan_configs(snap: &Snapshot, p: &mut Plan) {
    let conf = &snap.conf_dir;
    listing_problem(conf, p);
    let Ok(entries) = &conf.entries else { return };
    let mut taken: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    let mut moved = BTreeSet::new();
    for e in entries {
        if !is_network_config_name(&e.name)
            || e.kind == Kind::Dir
            || !is_aws_config(&e.name, e.content.as_deref())
        {
            continue;
        }
        let refs: Vec<&str> = taken.iter().map(String::as_str).collect();
        let backup = backup_name(&e.name, &refs);
        taken.push(backup.clone());
        moved.insert(e.name.clone());
        let first_plugin = e.content.as_deref().and_then(config_plugin_type);
        p.steps.push(Step {
            area: Area::CniConfig,
            what: format!(
                "move the VPC CNI's network config {} aside (first plugin {})",
                conf.dir.join(&e.name).display(),
                first_plugin.as_deref().unwrap_or("unreadable")
            ),
            why: format!(
                "the container runtime loads the configs of the conf dir in lexicographic order and uses the first; while {} is there, every new pod sandbox goes to aws-cni, which with ipamd gone fails with \"dial tcp 127.0.0.1:50051: connect: connection refused\" (error E4; \"ipamd.sock\" on v1.23+), and nothing in aws-node removes it. Renamed, not deleted: `mv {} {}` restores it",
                e.name,
                conf.dir.join(&backup).display(),
                conf.dir.join(&e.name).display()
            ),
            actions: vec![Action::Rename {
                from: conf.dir.join(&e.name),
                to: conf.dir.join(&backup),
            }],
            chained: false,
        });
    }
    // What the runtime will use once the VPC CNI's configs are gone.
    let first = entries.iter().find(|e| {
        is_network_config_name(&e.name) && e.kind != Kind::Dir && !moved.contains(&e.name)
    });
    match first {
        None if !moved.is_empty() => p.warnings.push(format!(
            "no network config is left in {}: pods cannot start on this node until weft's is installed (`weft install-cni`, or the weft DaemonSet's init container)",
            conf.dir.display()
        )),
        Some(f) if !is_weft_config(f.content.as_deref()) => {
            let plugin = f.content.as_deref().and_then(config_plugin_type);
            p.warnings.push(format!(
                "the first network config in {} is {} (plugin {}), so new pods go there, not to weft; install weft's (`weft install-cni`), and remove that config or move it out of the directory",
                conf.dir.display(),
                f.name,
                plugin.as_deref().unwrap_or("unreadable")
            ));
        }
        _ => {}
    }
}

fn is_weft_config(content: Option<&[u8]>) -> bool {
    content.and_then(config_plugin_type).as_deref() == Some(weft_cni::install::PLUGIN_FILE_NAME)
}

fn finding_why(f: Finding) -> &'static str {
    match f {
        Finding::Snat => {
            "AWS-SNAT-CHAIN-<n> SNATs pod traffic leaving the VPC CIDRs to the node's primary IP; weft's FLANNEL-POSTRTG masquerades overlay pods instead, and nothing keeps the chain's VPC CIDR list current any more (cilium#25804: leftover AWS rules cause \"subtle and random connectivity issues\")"
        }
        Finding::Connmark => {
            "the CONNMARK rules mark connections from the primary ENI and from eni* pod veths with 0x80 for ipamd's `fwmark 0x80/0x80 lookup main` ip rule, which goes too; left behind they keep marking traffic for policy routing that no longer exists"
        }
        Finding::BlockNodeLocal => {
            "the FORWARD REJECT blocks the VPC CNI's node-local egress range (169.254.172.0/22 or fd00::ac:00/118), which nothing uses any more"
        }
        Finding::Egress => {
            "egress-cni's per-pod SNAT chains (CNI-E4-*/CNI-E6-*) and their POSTROUTING jumps belong to pods of the aws-cni network"
        }
    }
}

/// What each kind of kept iptables item is, and why live pods need it.
fn kept_finding(f: Finding) -> &'static str {
    match f {
        Finding::Snat => "AWS-SNAT-CHAIN-<n> and its POSTROUTING jump",
        Finding::Connmark => "the CONNMARK rules (and AWS-CONNMARK-CHAIN-<n>)",
        Finding::Egress => "egress-cni's CNI-E4-*/CNI-E6-* chains",
        Finding::BlockNodeLocal => "the node-local REJECT",
    }
}

fn plan_iptables(snap: &Snapshot, live: &Live, overlay: Option<&str>, p: &mut Plan) {
    let keep: BTreeSet<Finding> = if live.any().is_some() {
        [Finding::Snat, Finding::Connmark, Finding::Egress].into()
    } else {
        BTreeSet::new()
    };
    for b in &snap.iptables {
        let name = b.backend.name;
        if !b.installed {
            p.kept.push(format!(
                "{name}: {} is not installed, so there are no rules of that backend to remove",
                b.backend.save()
            ));
            continue;
        }
        let tables = match &b.tables {
            Ok(t) => t,
            Err(e) => {
                p.problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        for (table, text) in tables {
            let c = iptables::plan_table_keeping(table, text, &keep, overlay);
            if !c.kept.is_empty()
                && let Some(reason) = live.any()
            {
                let kinds: Vec<&str> = c.kept.iter().map(|f| kept_finding(*f)).collect();
                p.kept.push(format!(
                    "{name} table {table}: {} kept because {reason}: pods on secondary ENIs reach destinations outside the VPC SNATed to the primary IP through the primary ENI (connmark 0x80, then `1024: fwmark 0x80/0x80 lookup main`); without either half their traffic leaves an ENI with an address that is not its own, which EC2 drops",
                    kinds.join(", ")
                ));
            }
            let Some(payload) = c.restore_payload(table) else {
                continue;
            };
            let mut parts = Vec::new();
            if let Some((chain, _)) = c.insert.first() {
                parts.push(format!(
                    "insert a RETURN for the overlay network {} at the top of {chain}",
                    overlay.unwrap_or_default()
                ));
            }
            if !c.delete.is_empty() {
                parts.push(format!(
                    "delete {} rule{}",
                    c.delete.len(),
                    if c.delete.len() == 1 { "" } else { "s" }
                ));
            }
            if !c.chains.is_empty() {
                parts.push(format!("flush and delete {}", c.chains.join(", ")));
            }
            let mut whys: Vec<&str> = c.findings.iter().map(|f| finding_why(*f)).collect();
            if !c.insert.is_empty() {
                whys.insert(0, "while VPC-addressed pods still need AWS-SNAT-CHAIN-0, it would SNAT traffic to overlay pods to the node's primary IP, and the overlay pod's node would answer that address directly from the overlay pod's address onto the VPC, which EC2's source/destination check drops; the RETURN (shaped like the VPC CNI's own AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS exclusions) leaves overlay traffic to weftd's FLANNEL-POSTRTG, and goes with the chain when the node is drained and cleaned");
            }
            let why = whys.join("; ");
            p.steps.push(Step {
                area: Area::Iptables,
                what: format!("{name} table {table}: {}", parts.join(", ")),
                why: format!(
                    "{why}. Matched by the VPC CNI's chain names and comments only; built-in chains are never flushed (kube-proxy and weft own rules there). One atomic restore per table"
                ),
                actions: vec![Action::run(
                    &b.backend.restore(),
                    // -w: wait for the xtables lock (kube-proxy may hold it) instead of
                    // failing at once; iptables-nft accepts and ignores it.
                    vec!["--noflush".into(), "-w".into(), "5".into()],
                    Some(payload),
                )],
                chained: false,
            });
        }
    }
}

fn plan_nft(snap: &Snapshot, tools: &Tools, live: &Live, p: &mut Plan) {
    if let (NftState::Present(_), Some(reason)) = (&snap.nft, live.any()) {
        p.kept.push(format!(
            "nftables `table ip aws-cni` kept because {reason}: its connmark sends the pods' traffic to destinations outside the VPC through the primary ENI, where it is SNATed to the primary IP"
        ));
        return;
    }
    match &snap.nft {
        NftState::NotInstalled => p.kept.push(format!(
            "nftables: {} is not installed, so there is no `table ip aws-cni` to remove",
            tools.nft
        )),
        NftState::Absent => {}
        NftState::Failed(e) => p.problems.push(e.clone()),
        NftState::Present(_) => p.steps.push(Step {
            area: Area::Nftables,
            what: "delete nftables `table ip aws-cni`".into(),
            why: "the VPC CNI (v1.23+ on nf_tables hosts) keeps its connmark rules in its own table (chains nat-prerouting and snat-mark, hook prerouting priority -90): they mark connections from eni* pod veths with 0x80 for policy routing that goes away with its ip rules".into(),
            actions: vec![Action::run(
                &tools.nft,
                ["delete", "table", "ip", "aws-cni"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                None,
            )],
            chained: false,
        }),
    }
}

fn parsed<T>(
    what: &str,
    r: &Result<String, String>,
    f: fn(&str) -> Result<T, String>,
    p: &mut Plan,
) -> Option<T> {
    match r {
        Ok(text) => match f(text) {
            Ok(v) => Some(v),
            Err(e) => {
                p.problems
                    .push(format!("cannot read the output of `{what}`: {e}"));
                None
            }
        },
        Err(e) => {
            p.problems.push(e.clone());
            None
        }
    }
}

fn plan_routing(
    snap: &Snapshot,
    r: &Routing,
    tools: &Tools,
    live: &Live,
    overlay: Option<&str>,
    p: &mut Plan,
) {
    let (rules, routes, links) = (&r.rules, &r.routes, &r.links);
    let managed: BTreeSet<u32> = snap
        .networkd
        .iter()
        .filter(|(_, text)| iproute::networkd_manages(text))
        .map(|(ix, _)| *ix)
        .collect();
    let tables = iproute::eni_tables(routes, links, &managed);
    let own_rule = overlay.map(iproute::overlay_rule);

    if let Some((restore_zero, moved)) = iproute::plan_local_rule(rules) {
        let mut actions = Vec::new();
        if restore_zero {
            actions.push(Action::run(
                &tools.ip,
                ["rule", "add", "priority", "0", "lookup", "local"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                None,
            ));
        }
        actions.push(Action::run(&tools.ip, moved.del_args(), None));
        p.steps.push(Step {
            area: Area::IpRule,
            what: if restore_zero {
                "put the local rule back at priority 0 (`0: from all lookup local`), then delete `20: from all lookup local`".into()
            } else {
                "delete the extra `20: from all lookup local` (priority 0 already has it)".into()
            },
            why: "ipamd moves the local rule from priority 0 to 20 for security groups for pods (ENABLE_POD_ENI, strict mode); left there, a rule added later below 20 would shadow delivery to the node's own addresses. It is re-added at 0 before the copy at 20 goes, so local delivery never stops".into(),
            actions,
            chained: true,
        });
    }

    // One step per priority, in priority order.
    let mut groups: BTreeMap<u32, (&'static str, Vec<&IpRule>)> = BTreeMap::new();
    for rule in rules {
        let verdict = match iproute::classify(rule, &tables) {
            RuleVerdict::Delete(why) => match live_need(rule, live) {
                Some(reason) => RuleVerdict::Keep(if Some(rule) == own_rule.as_ref() {
                    format!("weft's rule for the overlay, kept because {reason}")
                } else {
                    format!("kept because {reason}")
                }),
                None if rule.priority == 1535 && Some(rule) == own_rule.as_ref() => {
                    RuleVerdict::Delete(
                        "weft's `to <overlay> lookup main` rule for VPC-addressed pods on secondary ENIs; none is left",
                    )
                }
                None => RuleVerdict::Delete(why),
            },
            other => other,
        };
        match verdict {
            RuleVerdict::Delete(why) => groups
                .entry(rule.priority)
                .or_insert((why, Vec::new()))
                .1
                .push(rule),
            RuleVerdict::Keep(why) => p.kept.push(format!("ip rule `{}`: {why}", rule.display())),
            RuleVerdict::Unrelated => {}
        }
    }
    for (priority, (why, list)) in groups {
        let shown: Vec<String> = list.iter().map(|r| format!("`{}`", r.display())).collect();
        p.steps.push(Step {
            area: Area::IpRule,
            what: format!(
                "delete {} ip rule{} at priority {priority}: {}",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                shown.join(", ")
            ),
            why: format!(
                "{why}. Each rule is named by all of its selectors, so no other rule is hit"
            ),
            actions: list
                .iter()
                .map(|r| Action::run(&tools.ip, r.del_args(), None))
                .collect(),
            chained: false,
        });
    }

    if let (Live::Pods(_), Some(own)) = (live, &own_rule)
        && !rules.iter().any(|r| r == own)
    {
        p.steps.push(Step {
            area: Area::IpRule,
            what: format!("add ip rule `{}`", own.display()),
            why: "VPC-addressed pods on secondary ENIs leave through their ENI's table (`1536: from <pod IP> lookup <table>`), whose default route goes to the VPC, and the VPC has no route to the overlay: this rule, at the priority the VPC CNI uses for CIDRs reached through the main table (1535, AWS_EXTERNAL_SERVICE_CIDRS), sends their traffic to overlay pods through weftd's routes on flannel.1 instead. It goes with the other VPC CNI rules once the node is drained".into(),
            actions: vec![Action::run(&tools.ip, own.add_args(), None)],
            chained: false,
        });
    }

    for t in tables.values() {
        let users = live.users(|pod| pod.table == Some(t.id));
        if let (true, Some(reason)) = (t.is_cni_owned(), &users) {
            p.kept.push(format!("route table {} kept because {reason}: its replies leave through the ENI they belong to", t.id));
        } else if t.is_cni_owned() {
            p.steps.push(route_step(t, tools));
        } else if let (Some(dev), true) = (&t.eni_dev, t.networkd) {
            p.kept.push(format!(
                "route table {}: its default route goes via {dev}, which systemd-networkd manages",
                t.id
            ));
        }
    }
}

/// Why a rule the VPC CNI made must stay while pods run: the per-pod rules of a live pod, its
/// ENI table's rule, and the node-wide rules every pod's traffic goes through.
fn live_need(rule: &IpRule, live: &Live) -> Option<String> {
    if let Some(addr) = iproute::rule_pod_address(rule) {
        return live.users(|pod| pod.ip == addr);
    }
    match rule.priority {
        32765 => {
            let table = match rule.table {
                iproute::TableRef::Id(t) => Some(t),
                iproute::TableRef::Named(_) => None,
            };
            live.users(|pod| pod.table.is_some() && pod.table == table)
        }
        10 | 1024 | 1535 => live.any(),
        _ => None,
    }
}

fn route_step(t: &TableFacts, tools: &Tools) -> Step {
    let dev = t.eni_dev.as_deref().unwrap_or_default();
    let shown: Vec<String> = t
        .routes
        .iter()
        .map(|r| format!("`{}`", r.display()))
        .collect();
    Step {
        area: Area::Route,
        what: format!("flush route table {} ({})", t.id, shown.join(", ")),
        why: format!(
            "ipamd's table for the secondary ENI {dev} (table = device number + 1; 10000 + device + 100 x card on other network cards; vlanID + 100 for branch ENIs): pods on that ENI used it; the overlay does not, and its rules are going"
        ),
        actions: vec![Action::run(
            &tools.ip,
            vec![
                "route".into(),
                "flush".into(),
                "table".into(),
                t.id.to_string(),
            ],
            None,
        )],
        chained: false,
    }
}

fn plan_binaries(snap: &Snapshot, live: &Live, p: &mut Plan) {
    let bin = &snap.bin_dir;
    listing_problem(bin, p);
    let Ok(entries) = &bin.entries else { return };
    let aws: Vec<&str> = entries
        .iter()
        .filter(|e| AWS_BINARIES.contains(&e.name.as_str()) && e.kind != Kind::Dir)
        .map(|e| e.name.as_str())
        .collect();
    if let (false, Some(reason)) = (aws.is_empty(), live.any()) {
        p.kept.push(format!(
            "{} in {} kept because {reason}: a runtime that tears the pod down with its cached aws-cni config still calls them",
            aws.join(", "),
            bin.dir.display()
        ));
    } else if !aws.is_empty() {
        p.steps.push(Step {
            area: Area::CniBinary,
            what: format!("remove {} from {}", aws.join(", "), bin.dir.display()),
            why: "the VPC CNI's own programs: aws-cni and egress-cni (installed by aws-node), aws-cni-support.sh (the EKS log collector, from its init container) and aws-eks-na-cli* (the network policy agent's CLI); no config calls them once the VPC CNI's config is gone".into(),
            actions: aws
                .iter()
                .map(|n| Action::Remove {
                    path: bin.dir.join(n),
                    recursive: false,
                })
                .collect(),
            chained: false,
        });
    }
    let others: Vec<&str> = entries
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !AWS_BINARIES.contains(n))
        .collect();
    if !others.is_empty() {
        p.kept.push(format!(
            "{}: {} (upstream plugins and others: the VPC CNI's init container copied loopback, portmap, bandwidth and host-local; weft's config delegates to bridge with host-local and chains portmap, containerd runs loopback for every pod, and `weft install-cni` adds bridge and replaces older ones)",
            bin.dir.display(),
            others.join(", ")
        ));
    }
    let names: Vec<&str> = bin.names();
    let missing = missing_plugins(names.iter().copied());
    if bin.entries.is_ok() && !missing.is_empty() {
        p.warnings.push(format!(
            "{} missing from {}: weft's config delegates to bridge with host-local IPAM and chains portmap, and containerd runs loopback for every pod; install the CNI reference plugins there",
            missing.join(", "),
            bin.dir.display()
        ));
    }
}

fn plan_state(snap: &Snapshot, live: &Live, p: &mut Plan) {
    if let Some(reason) = live.any() {
        let mut held: Vec<String> = snap
            .state
            .iter()
            .filter(|s| s.kind.is_some())
            .map(|s| s.path.display().to_string())
            .collect();
        if let Ok(entries) = &snap.results_dir.entries
            && entries
                .iter()
                .any(|e| e.name.starts_with(AWS_RESULT_PREFIX))
        {
            held.push(format!(
                "the aws-cni results in {}",
                snap.results_dir.dir.display()
            ));
        }
        listing_problem(&snap.results_dir, p);
        if !held.is_empty() {
            p.kept.push(format!(
                "{} kept because {reason}: the pods' allocations, cached CNI results and logs belong to them until they are deleted",
                held.join(", ")
            ));
        }
        return;
    }
    for s in &snap.state {
        let Some(kind) = s.kind else { continue };
        let dir = kind == Kind::Dir;
        let shown = if dir && !s.entries.is_empty() {
            format!(" ({})", s.entries.join(", "))
        } else {
            String::new()
        };
        let path = s.path.display();
        let (what, why, action) = match s.role {
            StateRole::AwsNodeRun => (
                format!("remove {path}{shown}"),
                "ipamd's checkpoint ipam.json (the VPC CNI's pod IP allocations) and the ipamd.sock / npa.sock sockets: stale once aws-node is gone, and an aws-node started later would restore the old allocations from the checkpoint".to_string(),
                Action::Remove { path: s.path.clone(), recursive: dir },
            ),
            StateRole::EgressV4pd | StateRole::EgressV6pd => (
                format!("remove {path}{shown}"),
                "egress-cni's host-local IPAM state (egress-v4-ipam / egress-v6-ipam: the node-local egress addresses of aws-cni pods)".to_string(),
                Action::Remove { path: s.path.clone(), recursive: dir },
            ),
            StateRole::Bpf => (
                format!("remove {path}{shown}"),
                "the VPC CNI network policy agent's pinned eBPF maps and programs (bpffs); nothing uses them once the agent is gone".to_string(),
                Action::Remove { path: s.path.clone(), recursive: dir },
            ),
            StateRole::Logs => {
                let name = s.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let taken: Vec<&str> = s.backups.iter().map(String::as_str).collect();
                let to = s.path.with_file_name(backup_name(&name, &taken));
                (
                    format!("move the VPC CNI's logs {path}{shown} aside"),
                    format!(
                        "renamed, not deleted: ipamd.log and plugin.log explain what happened to pods that ran on aws-cni, so they stay for support cases; the move makes a second run find nothing and keeps a reinstalled aws-node from mixing its logs with these. Delete {} when no longer needed",
                        to.display()
                    ),
                    Action::Rename { from: s.path.clone(), to },
                )
            }
        };
        p.steps.push(Step {
            area: Area::State,
            what,
            why,
            actions: vec![action],
            chained: false,
        });
    }
    let results = &snap.results_dir;
    listing_problem(results, p);
    if let Ok(entries) = &results.entries {
        let aws: Vec<&str> = entries
            .iter()
            .filter(|e| e.name.starts_with(AWS_RESULT_PREFIX) && e.kind != Kind::Dir)
            .map(|e| e.name.as_str())
            .collect();
        if !aws.is_empty() {
            p.steps.push(Step {
                area: Area::State,
                what: format!(
                    "remove {} cached CNI result{} of network aws-cni from {} ({})",
                    aws.len(),
                    if aws.len() == 1 { "" } else { "s" },
                    results.dir.display(),
                    aws.join(", ")
                ),
                why: "libcni's cached ADD results of pods on the aws-cni network; no config of that name is left to use them (AL2023 clears this directory at boot with cni-cache-reset.service). Results of other networks stay".into(),
                actions: aws
                    .iter()
                    .map(|n| Action::Remove {
                        path: results.dir.join(n),
                        recursive: false,
                    })
                    .collect(),
                chained: false,
            });
        }
    }
}
