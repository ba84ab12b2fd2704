//! Unit tests of the cleanup planner on output saved from real tools (iptables-legacy-save,
//! iptables-nft-save, `ip -j rule`, `ip -4 -j route show table all`, `ip -j link show` in a
//! namespace holding the VPC CNI's rules next to kube-proxy's and weft's), plus the effects
//! through a recording fake [`Host`] and temp dirs. The fixtures and goldens live in
//! `tests/golden/cleanup/`; `UPDATE_EXPECT=1` rewrites the goldens.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::{Value, json};

use super::apply::{ActionResult, apply};
use super::iproute::{self, IpRule, RuleVerdict};
use super::iptables::{self, Finding};
use super::plan::{self, Action, Area, Plan, backup_name, is_aws_config};
use super::snapshot::{
    self, Backend, BackendSnapshot, CmdOutput, Entry, Host, Kind, Listing, NftState, PathState,
    Snapshot, StateRole, Tools,
};
use super::{CleanupArgs, NodeCommand, Report, cleanup_vpc_cni, render_text, report_json};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/cleanup/node/",
            $name
        ))
    };
}

const LEGACY_NAT: &str = fixture!("iptables-legacy-nat.txt");
const LEGACY_MANGLE: &str = fixture!("iptables-legacy-mangle.txt");
const LEGACY_FILTER: &str = fixture!("iptables-legacy-filter.txt");
const NFT_NAT: &str = fixture!("iptables-nft-nat.txt");
const NFT_MANGLE: &str = fixture!("iptables-nft-mangle.txt");
const NFT_FILTER: &str = fixture!("iptables-nft-filter.txt");
const IP6_EMPTY: &str = fixture!("ip6tables-nft-empty.txt");
const IP_RULE: &str = fixture!("ip-rule.json");
const IP_ROUTE: &str = fixture!("ip-route.json");
const IP_LINK: &str = fixture!("ip-link.json");
const NFT_AWS: &str = fixture!("nft-aws-cni.txt");
const NETWORKD_ETH1: &str = fixture!("networkd-5");
const NETWORKD_ETH2: &str = fixture!("networkd-7");
const AWS_CONFLIST: &str = fixture!("10-aws.conflist");

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/cleanup")
        .join(name)
}

fn check_golden(name: &str, actual: &str) {
    expect_test::expect_file![golden_path(name)].assert_eq(actual);
}

fn tools() -> Tools {
    let b = |name, legacy, v6| Backend {
        name,
        base: name.to_string(),
        legacy,
        v6,
    };
    Tools {
        ip: "ip".into(),
        nft: "nft".into(),
        backends: vec![
            b("iptables-legacy", true, false),
            b("iptables-nft", false, false),
            b("ip6tables-legacy", true, true),
            b("ip6tables-nft", false, true),
        ],
    }
}

fn entry(name: &str, kind: Kind) -> Entry {
    Entry::new(name, kind)
}

fn config(name: &str, content: &str) -> Entry {
    Entry {
        content: Some(content.as_bytes().to_vec()),
        ..Entry::new(name, Kind::File)
    }
}

fn listing(dir: &str, entries: Vec<Entry>) -> Listing {
    let mut entries = entries;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Listing {
        dir: PathBuf::from(dir),
        entries: Ok(entries),
    }
}

fn state(role: StateRole, path: &str, entries: &[&str]) -> PathState {
    PathState {
        role,
        path: PathBuf::from(path),
        kind: Some(Kind::Dir),
        entries: entries.iter().map(|s| s.to_string()).collect(),
        backups: Vec::new(),
    }
}

fn weft_conflist() -> String {
    String::from_utf8(weft_cni::install::render_conflist("cbr0", "0.3.1")).unwrap()
}

fn tables(list: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
    Ok(list
        .iter()
        .map(|(t, text)| (t.to_string(), text.to_string()))
        .collect())
}

/// The EKS node of the fixtures, with the VPC CNI's leftovers next to weft's and the host's
/// own things, at the real paths.
fn dirty_node() -> Snapshot {
    let t = tools();
    let ip6_tables = tables(&[
        ("nat", IP6_EMPTY),
        ("mangle", IP6_EMPTY),
        ("filter", IP6_EMPTY),
    ]);
    Snapshot {
        conf_dir: listing(
            "/etc/cni/net.d",
            vec![
                config("10-aws.conflist", AWS_CONFLIST),
                config("10-flannel.conflist", &weft_conflist()),
                config(
                    "99-loopback.conf",
                    r#"{"cniVersion":"0.3.1","name":"lo","type":"loopback"}"#,
                ),
            ],
        ),
        bin_dir: listing(
            "/opt/cni/bin",
            [
                "LICENSE",
                "aws-cni",
                "aws-cni-support.sh",
                "aws-eks-na-cli",
                "aws-eks-na-cli-v6",
                "bandwidth",
                "bridge",
                "egress-cni",
                "flannel",
                "host-local",
                "loopback",
                "portmap",
                "tuning",
            ]
            .iter()
            .map(|n| entry(n, Kind::File))
            .collect(),
        ),
        results_dir: listing(
            "/var/lib/cni/results",
            vec![
                entry("aws-cni-2b1e9c0a7f3d-eth0", Kind::File),
                entry("aws-cni-9f8e7d6c5b4a-eth0", Kind::File),
                entry("cbr0-5e4d3c2b1a09-eth0", Kind::File),
            ],
        ),
        state: vec![
            state(
                StateRole::AwsNodeRun,
                "/var/run/aws-node",
                &["ipam.json", "ipamd.sock", "npa.sock"],
            ),
            state(StateRole::EgressV4pd, "/run/cni/v4pd", &["egress-v6-ipam"]),
            PathState {
                kind: None,
                ..state(StateRole::EgressV6pd, "/run/cni/v6pd", &[])
            },
            state(
                StateRole::Bpf,
                "/sys/fs/bpf/globals/aws",
                &["maps", "programs"],
            ),
            state(
                StateRole::Logs,
                "/var/log/aws-routed-eni",
                &[
                    "egress-v6-plugin.log",
                    "ipamd.log",
                    "network-policy-agent.log",
                    "plugin.log",
                ],
            ),
        ],
        iptables: vec![
            BackendSnapshot {
                backend: t.backends[0].clone(),
                installed: true,
                tables: tables(&[
                    ("nat", LEGACY_NAT),
                    ("mangle", LEGACY_MANGLE),
                    ("filter", LEGACY_FILTER),
                ]),
            },
            BackendSnapshot {
                backend: t.backends[1].clone(),
                installed: true,
                tables: tables(&[
                    ("nat", NFT_NAT),
                    ("mangle", NFT_MANGLE),
                    ("filter", NFT_FILTER),
                ]),
            },
            BackendSnapshot {
                backend: t.backends[2].clone(),
                installed: false,
                tables: Ok(Vec::new()),
            },
            BackendSnapshot {
                backend: t.backends[3].clone(),
                installed: true,
                tables: ip6_tables,
            },
        ],
        nft: NftState::Present(NFT_AWS.to_string()),
        rules: Ok(IP_RULE.to_string()),
        routes: Ok(IP_ROUTE.to_string()),
        links: Ok(IP_LINK.to_string()),
        networkd: BTreeMap::from([
            (5, NETWORKD_ETH1.to_string()),
            (7, NETWORKD_ETH2.to_string()),
        ]),
        ipamd: None,
        overlay: Ok(None),
        subnet_file: PathBuf::from("/run/flannel/subnet.env"),
    }
}

// ---------------------------------------------------------------------------------------
// A model of the node's reaction to a plan, to check that the plan of a cleaned node is
// empty and that everything unrelated survives.

fn listing_apply(l: &mut Listing, action: &Action) {
    let Ok(entries) = &mut l.entries else { return };
    match action {
        Action::Rename { from, to } if from.parent() == Some(l.dir.as_path()) => {
            let from_name = from.file_name().unwrap().to_string_lossy();
            let to_name = to.file_name().unwrap().to_string_lossy().into_owned();
            for e in entries.iter_mut().filter(|e| e.name == from_name) {
                e.name = to_name.clone();
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Action::Remove { path, .. } if path.parent() == Some(l.dir.as_path()) => {
            let name = path.file_name().unwrap().to_string_lossy();
            entries.retain(|e| e.name != name);
        }
        _ => {}
    }
}

/// Applies an iptables-restore --noflush payload to saved text.
fn restore_apply(text: &str, payload: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for cmd in payload.lines() {
        if let Some(rest) = cmd.strip_prefix("-I ") {
            let (chain, rest) = rest.split_once(' ').unwrap();
            let spec = rest.strip_prefix("1 ").expect("inserted at the top");
            let decl = format!(":{chain} ");
            assert!(
                lines.iter().any(|l| l.starts_with(&decl)),
                "restore would fail: no chain {chain}"
            );
            let at = lines
                .iter()
                .position(|l| l.starts_with(&format!("-A {chain} ")))
                .unwrap_or(lines.len());
            lines.insert(at, format!("-A {chain} {spec}"));
        } else if let Some(rule) = cmd.strip_prefix("-D ") {
            let want = format!("-A {rule}");
            let at = lines
                .iter()
                .position(|l| *l == want)
                .unwrap_or_else(|| panic!("restore would fail: no rule `{want}`"));
            lines.remove(at);
        } else if let Some(chain) = cmd.strip_prefix("-F ") {
            let prefix = format!("-A {chain} ");
            lines.retain(|l| !l.starts_with(&prefix));
        } else if let Some(chain) = cmd.strip_prefix("-X ") {
            let decl = format!(":{chain} ");
            let referenced = lines
                .iter()
                .any(|l| l.starts_with("-A ") && l.ends_with(&format!(" -j {chain}")));
            assert!(
                !referenced,
                "restore would fail: {chain} is still referenced"
            );
            lines.retain(|l| !l.starts_with(&decl));
        }
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn rule_json_matches(v: &Value, del_args: &[String]) -> bool {
    IpRule::parse_one(v).is_some_and(|r| r.del_args() == del_args)
}

/// The node as it would be after `plan` was carried out.
fn simulate(snap: &Snapshot, plan: &Plan) -> Snapshot {
    let mut s = snap.clone();
    let mut rules: Vec<Value> = serde_json::from_str(s.rules.as_ref().unwrap()).unwrap();
    let mut routes: Vec<Value> = serde_json::from_str(s.routes.as_ref().unwrap()).unwrap();
    for action in plan.steps.iter().flat_map(|st| &st.actions) {
        for l in [&mut s.conf_dir, &mut s.bin_dir, &mut s.results_dir] {
            listing_apply(l, action);
        }
        match action {
            Action::Rename { from, .. } | Action::Remove { path: from, .. } => {
                for st in s.state.iter_mut().filter(|st| st.path == *from) {
                    st.kind = None;
                    st.entries.clear();
                }
            }
            Action::Run {
                program,
                args,
                stdin,
            } => {
                if program.ends_with("-restore") {
                    let payload = stdin.as_deref().unwrap();
                    let table = payload.lines().next().unwrap().trim_start_matches('*');
                    let b = s
                        .iptables
                        .iter_mut()
                        .find(|b| b.backend.restore() == *program)
                        .unwrap();
                    for (t, text) in b.tables.as_mut().unwrap().iter_mut() {
                        if t == table {
                            *text = restore_apply(text, payload);
                        }
                    }
                } else if program == "nft" {
                    assert_eq!(args, &["delete", "table", "ip", "aws-cni"]);
                    s.nft = NftState::Absent;
                } else if args[..2] == ["rule", "del"] {
                    let before = rules.len();
                    let at = rules
                        .iter()
                        .position(|r| rule_json_matches(r, args))
                        .unwrap_or_else(|| panic!("no rule matches `ip {}`", args.join(" ")));
                    rules.remove(at);
                    assert_eq!(rules.len(), before - 1);
                } else if args[..2] == ["rule", "add"] && args[3] == "1535" {
                    assert_eq!(args[4..5], ["to"]);
                    assert_eq!(args[6..], ["lookup", "main"]);
                    let (net, len) = args[5].split_once('/').unwrap();
                    let len: u32 = len.parse().unwrap();
                    rules.push(
                        json!({"priority":1535,"src":"all","dst":net,"dstlen":len,"table":"main"}),
                    );
                } else if args[..2] == ["rule", "add"] {
                    assert_eq!(args, &["rule", "add", "priority", "0", "lookup", "local"]);
                    rules.insert(0, json!({"priority":0,"src":"all","table":"local"}));
                } else if args[..2] == ["route", "flush"] {
                    let table = &args[3];
                    routes.retain(|r| r.get("table").and_then(Value::as_str) != Some(table));
                } else {
                    panic!("unexpected command {program} {args:?}");
                }
            }
        }
    }
    s.rules = Ok(Value::Array(rules).to_string());
    s.routes = Ok(Value::Array(routes).to_string());
    s
}

impl IpRule {
    fn parse_one(v: &Value) -> Option<IpRule> {
        iproute::parse_rules(&Value::Array(vec![v.clone()]).to_string())
            .ok()?
            .into_iter()
            .next()
    }
}

/// The commands of the plan's steps in `area`, in order.
fn area_commands(plan: &Plan, area: Area) -> Vec<String> {
    plan.steps
        .iter()
        .filter(|st| st.area == area)
        .flat_map(|st| st.actions.iter().map(Action::command))
        .collect()
}

fn all_commands(plan: &Plan) -> String {
    plan.steps
        .iter()
        .flat_map(|s| &s.actions)
        .map(|a| a.command() + "\n")
        .collect()
}

// ---------------------------------------------------------------------------------------
// iptables.

#[test]
fn words_are_split_like_iptables_restore() {
    assert_eq!(
        weft_core::saved::split_words(
            r#"-s 169.254.172.10/32 -m comment --comment "name: \"aws-cni\" id: \"8d7f3a\"" -j CNI-E4-x"#
        ),
        [
            "-s",
            "169.254.172.10/32",
            "-m",
            "comment",
            "--comment",
            r#"name: "aws-cni" id: "8d7f3a""#,
            "-j",
            "CNI-E4-x"
        ]
    );
    assert_eq!(
        weft_core::saved::split_words(r#"-m comment --comment "AWS, primary ENI"  -j X"#),
        ["-m", "comment", "--comment", "AWS, primary ENI", "-j", "X"]
    );
}

#[test]
fn aws_chains_are_told_from_everyone_elses() {
    for yes in [
        "AWS-SNAT-CHAIN-0",
        "AWS-SNAT-CHAIN-12",
        "AWS-CONNMARK-CHAIN-1",
        "CNI-E4-3f1c0e5a9b7d2c4e6f8a1",
        "CNI-E6-0",
    ] {
        assert!(iptables::is_aws_chain(yes), "{yes}");
    }
    for no in [
        "AWS-SNAT-CHAIN-",
        "AWS-SNAT-CHAIN-X",
        "AWS-CUSTOM",
        "CNI-e4a1b2c3d4e5f6a7b8c9d0e1",
        "CNI-DN-1a2b3c",
        "CNI-HOSTPORT-DNAT",
        "FLANNEL-POSTRTG",
        "FLANNEL-FWD",
        "KUBE-SERVICES",
        "POSTROUTING",
    ] {
        assert!(!iptables::is_aws_chain(no), "{no}");
    }
    assert!(iptables::is_aws_comment("AWS, primary ENI"));
    assert!(iptables::is_aws_comment(
        "Block Node Local Pod access via IPv6"
    ));
    assert!(!iptables::is_aws_comment("AWS, primary ENI (copy)"));
    assert!(!iptables::is_aws_comment("flanneld masq"));
}

#[test]
fn nat_payload_removes_exactly_the_aws_rules_and_chains() {
    let c = iptables::plan_table("nat", NFT_NAT);
    assert_eq!(
        c.findings,
        BTreeSet::from([Finding::Snat, Finding::Connmark, Finding::Egress])
    );
    assert_eq!(
        c.restore_payload("nat").unwrap(),
        r#"*nat
-D PREROUTING -i eni+ -m comment --comment "AWS, outbound connections" -j AWS-CONNMARK-CHAIN-0
-D PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark --nfmask 0x80 --ctmask 0x80
-D POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0
-D POSTROUTING -s 169.254.172.10/32 -m comment --comment "name: \"aws-cni\" id: \"8d7f3a\"" -j CNI-E4-3f1c0e5a9b7d2c4e6f8a1
-F AWS-CONNMARK-CHAIN-0
-F AWS-SNAT-CHAIN-0
-F AWS-SNAT-CHAIN-1
-F CNI-E4-3f1c0e5a9b7d2c4e6f8a1
-X AWS-CONNMARK-CHAIN-0
-X AWS-SNAT-CHAIN-0
-X AWS-SNAT-CHAIN-1
-X CNI-E4-3f1c0e5a9b7d2c4e6f8a1
COMMIT
"#
    );
    // The same in the legacy backend's text.
    assert_eq!(
        iptables::plan_table("nat", LEGACY_NAT).restore_payload("nat"),
        c.restore_payload("nat")
    );
}

#[test]
fn mangle_and_filter_keep_other_rules_in_the_same_chains() {
    let m = iptables::plan_table("mangle", NFT_MANGLE);
    assert_eq!(m.delete.len(), 3);
    assert!(m.chains.is_empty());
    assert!(
        m.delete
            .iter()
            .all(|(chain, spec)| chain == "PREROUTING" && spec.contains("\"AWS, primary ENI\""))
    );
    let payload = m.restore_payload("mangle").unwrap();
    assert!(!payload.contains("site policy"), "{payload}");

    let f = iptables::plan_table("filter", NFT_FILTER);
    assert_eq!(f.findings, BTreeSet::from([Finding::BlockNodeLocal]));
    assert_eq!(
        f.restore_payload("filter").unwrap(),
        "*filter\n-D FORWARD -d 169.254.172.0/22 -m conntrack --ctstate NEW -m comment --comment \"Block Node Local Pod access via IPv4\" -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n"
    );
    assert!(iptables::plan_table("nat", IP6_EMPTY).is_empty());
    assert!(iptables::plan_table("filter", IP6_EMPTY).is_empty());
}

#[test]
fn duplicate_rules_get_one_delete_each_and_text_without_header_is_the_table() {
    let text = "-A PREROUTING -m comment --comment \"AWS, CONNMARK\" -j CONNMARK --restore-mark --nfmask 0x80 --ctmask 0x80\n-A PREROUTING -m comment --comment \"AWS, CONNMARK\" -j CONNMARK --restore-mark --nfmask 0x80 --ctmask 0x80\n";
    let c = iptables::plan_table("nat", text);
    assert_eq!(c.delete.len(), 2);
    assert_eq!(c.delete[0], c.delete[1]);
}

// ---------------------------------------------------------------------------------------
// ip rules and routes.

fn fixture_tables() -> BTreeMap<u32, iproute::TableFacts> {
    let routes = iproute::parse_routes(IP_ROUTE).unwrap();
    let links = iproute::parse_links(IP_LINK).unwrap();
    let managed = BTreeSet::from([7]);
    iproute::eni_tables(&routes, &links, &managed)
}

#[test]
fn rules_at_the_vpc_cnis_priorities_are_classified() {
    let rules = iproute::parse_rules(IP_RULE).unwrap();
    let tables = fixture_tables();
    let mut deleted = Vec::new();
    let mut kept = Vec::new();
    let mut unrelated = Vec::new();
    for r in &rules {
        match iproute::classify(r, &tables) {
            RuleVerdict::Delete(_) => deleted.push(r.display()),
            RuleVerdict::Keep(why) => kept.push((r.display(), why)),
            RuleVerdict::Unrelated => unrelated.push(r.display()),
        }
    }
    assert_eq!(
        deleted,
        [
            "512: from all to 10.0.1.77 lookup main",
            "512: from all to 10.0.1.78 lookup main",
            "1024: from all fwmark 0x80/0x80 lookup main",
            "1535: from all to 172.31.0.0/16 lookup main",
            "1536: from 10.0.2.33 lookup 2",
            "1536: from 10.0.2.34 lookup 2",
            "32765: from 10.0.2.10 lookup 2",
        ]
    );
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0].0, "32765: from 10.0.3.10 lookup 3");
    assert!(kept[0].1.contains("eth2 is managed by systemd-networkd"));
    assert_eq!(kept[1].0, "32765: from 10.0.4.10 lookup 5");
    assert!(kept[1].1.contains("no default route"));
    assert_eq!(
        unrelated,
        [
            "20: from all lookup local",
            "100: from all to 192.168.0.0/16 lookup 100",
            "512: from 10.9.9.9 to 10.0.1.79 lookup main",
            "1536: from 10.0.1.90 lookup 100",
            "32000: from all iif eth0 lookup 2",
            "32766: from all lookup main",
            "32767: from all lookup default",
        ]
    );
}

#[test]
fn del_args_name_every_selector() {
    let rules = iproute::parse_rules(
        r#"[{"priority":1024,"not":null,"src":"all","dst":"10.0.0.0","dstlen":16,"table":"main"},
            {"priority":1024,"src":"all","fwmark":"0x80","fwmask":"0x80","table":"main"},
            {"priority":10,"src":"all","iif":"vlan.eth.7","table":"107"},
            {"priority":10,"src":"10.0.5.6","table":"107"},
            {"priority":1,"src":"10.0.5.7","table":"10102"},
            {"priority":1,"src":"10.0.5.8","table":"300"},
            {"priority":10,"src":"all","iif":"eth0","table":"107"}]"#,
    )
    .unwrap();
    assert_eq!(
        rules[0].del_args().join(" "),
        "rule del priority 1024 not to 10.0.0.0/16 lookup main"
    );
    assert_eq!(
        rules[1].del_args().join(" "),
        "rule del priority 1024 fwmark 0x80/0x80 lookup main"
    );
    let none = BTreeMap::new();
    let verdicts: Vec<bool> = rules
        .iter()
        .map(|r| matches!(iproute::classify(r, &none), RuleVerdict::Delete(_)))
        .collect();
    // The old `not to <VPC CIDR>` rule, the connmark rule, SGPP's VLAN rules, a multi-NIC
    // rule into a card-1 table; not a priority-1 rule into table 300, nor an iif rule into a
    // VLAN table from a non-VLAN interface.
    assert_eq!(verdicts, [true, true, true, true, true, false, false]);
}

#[test]
fn eni_tables_need_a_default_route_via_an_eni_that_networkd_leaves_alone() {
    let tables = fixture_tables();
    assert_eq!(tables.keys().copied().collect::<Vec<_>>(), [2, 3]);
    assert!(tables[&2].is_cni_owned());
    assert_eq!(tables[&2].eni_dev.as_deref(), Some("eth1"));
    assert!(!tables[&3].is_cni_owned() && tables[&3].networkd);
    assert!(iproute::is_eni_link("ens6", 2) && iproute::is_eni_link("eth10", 10101));
    assert!(iproute::is_eni_link("vlan.eth.7", 107));
    assert!(!iproute::is_eni_link("eth1", 107) && !iproute::is_eni_link("flannel.1", 2));
    assert!(!iproute::is_device_table(254) && !iproute::is_device_table(100));
    for reserved in [253, 254, 255] {
        assert!(!iproute::is_vlan_table(reserved));
    }
    assert!(iproute::networkd_manages(NETWORKD_ETH2));
    assert!(!iproute::networkd_manages(NETWORKD_ETH1));
}

#[test]
fn the_local_rule_is_put_back_at_zero_before_twenty_goes() {
    let p = plan::plan(&dirty_node(), &tools());
    let step = p
        .steps
        .iter()
        .find(|s| s.what.contains("local rule"))
        .unwrap();
    assert!(step.chained);
    let cmds: Vec<String> = step.actions.iter().map(Action::command).collect();
    assert_eq!(
        cmds,
        [
            "ip rule add priority 0 lookup local",
            "ip rule del priority 20 lookup local"
        ]
    );
    // With priority 0 still there, only the copy at 20 goes.
    let both = iproute::parse_rules(
        r#"[{"priority":0,"src":"all","table":"local"},{"priority":20,"src":"all","table":"local"}]"#,
    )
    .unwrap();
    assert_eq!(
        iproute::plan_local_rule(&both).map(|(zero, r)| (zero, r.priority)),
        Some((false, 20))
    );
    let normal = iproute::parse_rules(r#"[{"priority":0,"src":"all","table":"local"}]"#).unwrap();
    assert_eq!(iproute::plan_local_rule(&normal), None);
}

// ---------------------------------------------------------------------------------------
// Files.

#[test]
fn configs_are_the_vpc_cnis_by_file_network_name_or_first_plugin() {
    assert!(is_aws_config("10-aws.conflist", None));
    assert!(is_aws_config("10-aws.conflist", Some(b"garbage")));
    assert!(is_aws_config(
        "05-renamed.conflist",
        Some(AWS_CONFLIST.as_bytes())
    ));
    assert!(is_aws_config(
        "07-x.conf",
        Some(br#"{"cniVersion":"0.4.0","name":"pods","type":"aws-cni"}"#)
    ));
    assert!(!is_aws_config(
        "10-flannel.conflist",
        Some(weft_conflist().as_bytes())
    ));
    assert!(!is_aws_config(
        "00-aws-like.conflist",
        Some(br#"{"name":"cbr0","plugins":[{"type":"flannel"},{"type":"aws-cni"}]}"#)
    ));
    assert_eq!(
        backup_name("10-aws.conflist", &[]),
        "10-aws.conflist.weft-bak"
    );
    assert_eq!(
        backup_name(
            "10-aws.conflist",
            &["10-aws.conflist.weft-bak", "10-aws.conflist.weft-bak.2"]
        ),
        "10-aws.conflist.weft-bak.3"
    );
}

#[test]
fn conf_dir_plan_moves_every_aws_config_and_names_what_comes_first() {
    let mut s = dirty_node();
    s.conf_dir = listing(
        "/etc/cni/net.d",
        vec![
            config(
                "05-aws-copy.conf",
                r#"{"cniVersion":"0.4.0","name":"aws-cni","type":"aws-cni"}"#,
            ),
            config("10-aws.conflist", AWS_CONFLIST),
            entry("10-aws.conflist.weft-bak", Kind::File),
            entry("20-dir.conf", Kind::Dir),
            config("99-loopback.conf", r#"{"name":"lo","type":"loopback"}"#),
            entry("README", Kind::File),
        ],
    );
    let p = plan::plan(&s, &tools());
    assert_eq!(
        area_commands(&p, Area::CniConfig),
        [
            "mv -n /etc/cni/net.d/05-aws-copy.conf /etc/cni/net.d/05-aws-copy.conf.weft-bak",
            "mv -n /etc/cni/net.d/10-aws.conflist /etc/cni/net.d/10-aws.conflist.weft-bak.2",
        ]
    );
    let step = &p.steps[0];
    assert!(step.why.contains("127.0.0.1:50051") && step.why.contains("E4"));
    // Without weft's config, the loopback config would be first.
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("99-loopback.conf (plugin loopback)")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn binaries_go_and_upstream_plugins_stay() {
    let p = plan::plan(&dirty_node(), &tools());
    let step = p.steps.iter().find(|s| s.area == Area::CniBinary).unwrap();
    let removed: Vec<String> = step.actions.iter().map(Action::command).collect();
    assert_eq!(
        removed,
        [
            "rm /opt/cni/bin/aws-cni",
            "rm /opt/cni/bin/aws-cni-support.sh",
            "rm /opt/cni/bin/aws-eks-na-cli",
            "rm /opt/cni/bin/aws-eks-na-cli-v6",
            "rm /opt/cni/bin/egress-cni",
        ]
    );
    let kept = p
        .kept
        .iter()
        .find(|k| k.starts_with("/opt/cni/bin"))
        .unwrap();
    for name in [
        "bridge",
        "host-local",
        "portmap",
        "loopback",
        "flannel",
        "tuning",
    ] {
        assert!(kept.contains(name), "{kept}");
    }
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn state_goes_logs_are_moved_aside_and_other_results_stay() {
    let mut s = dirty_node();
    s.state[4].backups = vec!["aws-routed-eni.weft-bak".into()];
    let p = plan::plan(&s, &tools());
    assert_eq!(
        area_commands(&p, Area::State),
        [
            "rm -r /var/run/aws-node",
            "rm -r /run/cni/v4pd",
            "rm -r /sys/fs/bpf/globals/aws",
            "mv -n /var/log/aws-routed-eni /var/log/aws-routed-eni.weft-bak.2",
            "rm /var/lib/cni/results/aws-cni-2b1e9c0a7f3d-eth0",
            "rm /var/lib/cni/results/aws-cni-9f8e7d6c5b4a-eth0",
        ]
    );
}

// ---------------------------------------------------------------------------------------
// The whole plan.

#[test]
fn golden_dry_run() {
    let p = plan::plan(&dirty_node(), &tools());
    let report = Report {
        apply: false,
        plan: p,
        refused: false,
        results: None,
        after: None,
    };
    check_golden("dry-run.txt", &render_text(&report));
    let json = serde_json::to_string_pretty(&report_json(&report)).unwrap() + "\n";
    check_golden("dry-run.json", &json);
}

#[test]
fn unrelated_items_are_never_in_the_plan() {
    let p = plan::plan(&dirty_node(), &tools());
    let commands = all_commands(&p);
    for never in [
        "KUBE-",
        "FLANNEL-",
        "flanneld",
        "site policy",
        "kubernetes",
        "lookup 100",
        "table 100",
        "table 3",
        "lookup 3",
        "lookup 5",
        "10.9.9.9",
        "10.0.1.90",
        "32000",
        "10-flannel.conflist",
        "99-loopback.conf",
        "bin/bridge",
        "bin/host-local",
        "bin/portmap",
        "bin/loopback",
        "bin/flannel",
        "cbr0-",
        "ip6tables",
    ] {
        assert!(
            !commands.contains(never),
            "{never:?} must not be touched:\n{commands}"
        );
    }
    assert!(p.problems.is_empty() && p.blocker.is_none(), "{p:?}");
}

#[test]
fn the_plan_of_a_cleaned_node_is_empty_and_unrelated_items_survive() {
    let dirty = dirty_node();
    let p = plan::plan(&dirty, &tools());
    assert!(!p.is_empty());
    let clean = simulate(&dirty, &p);
    let again = plan::plan(&clean, &tools());
    assert!(
        again.is_empty(),
        "left: {:?}",
        again.steps.iter().map(|s| &s.what).collect::<Vec<_>>()
    );
    assert!(again.problems.is_empty());
    // What survived is the original minus the VPC CNI's lines.
    let nat = &clean.iptables[1].tables.as_ref().unwrap()[0].1;
    for line in NFT_NAT.lines() {
        let aws = line.contains("AWS") || line.contains("CNI-E4-") || line.contains("aws-cni");
        assert_eq!(!nat.lines().any(|l| l == line), aws, "{line}");
    }
    let rules = iproute::parse_rules(clean.rules.as_ref().unwrap()).unwrap();
    let shown: Vec<String> = rules.iter().map(IpRule::display).collect();
    assert_eq!(
        shown,
        [
            "0: from all lookup local",
            "100: from all to 192.168.0.0/16 lookup 100",
            "512: from 10.9.9.9 to 10.0.1.79 lookup main",
            "1536: from 10.0.1.90 lookup 100",
            "32000: from all iif eth0 lookup 2",
            "32765: from 10.0.3.10 lookup 3",
            "32765: from 10.0.4.10 lookup 5",
            "32766: from all lookup main",
            "32767: from all lookup default",
        ]
    );
    let routes = iproute::parse_routes(clean.routes.as_ref().unwrap()).unwrap();
    assert!(routes.iter().all(|r| r.table != iproute::TableRef::Id(2)));
    assert_eq!(
        routes
            .iter()
            .filter(|r| r.table == iproute::TableRef::Id(3))
            .count(),
        2
    );
    assert_eq!(
        clean.conf_dir.names(),
        [
            "10-aws.conflist.weft-bak",
            "10-flannel.conflist",
            "99-loopback.conf"
        ]
    );
    assert_eq!(clean.results_dir.names(), ["cbr0-5e4d3c2b1a09-eth0"]);
    // The kept notes stay the same: they are not work left over.
    assert_eq!(again.kept, p.kept);
}

#[test]
fn a_clean_node_renders_nothing_to_do() {
    let mut s = dirty_node();
    s.conf_dir = listing(
        "/etc/cni/net.d",
        vec![config("10-flannel.conflist", &weft_conflist())],
    );
    let p = plan::plan(&s, &tools());
    let clean = simulate(&s, &p);
    let report = Report {
        apply: true,
        plan: plan::plan(&clean, &tools()),
        refused: false,
        results: Some(Vec::new()),
        after: Some(plan::plan(&clean, &tools())),
    };
    assert!(!report.failed());
    let text = render_text(&report);
    assert!(
        text.starts_with(
            "weft node cleanup-vpc-cni: nothing to do: no VPC CNI leftovers found on this node\n"
        ),
        "{text}"
    );
    assert!(text.contains("done: a second look finds nothing"), "{text}");
}

#[test]
fn inputs_that_cannot_be_read_are_problems_not_silence() {
    let mut s = dirty_node();
    s.routes = Err("`ip -4 -j route show table all` failed (exit status: 1): boom".into());
    s.iptables[0].tables =
        Err("`iptables-legacy-save -t nat` failed: Permission denied (you must be root)".into());
    s.nft = NftState::Failed("`nft list table ip aws-cni` failed: Operation not permitted".into());
    s.bin_dir.entries = Err("cannot list /opt/cni/bin: Permission denied".into());
    s.rules = Ok("not json".into());
    let p = plan::plan(&s, &tools());
    assert_eq!(p.problems.len(), 5, "{:?}", p.problems);
    assert!(p.problems.iter().any(|e| e.contains("must be root")));
    assert!(p.problems.iter().any(|e| e.contains("ip -j rule")));
    // What could be read is still planned.
    assert!(p.steps.iter().any(|st| st.area == Area::CniConfig));
    assert!(p.steps.iter().any(|st| st.what.starts_with("iptables-nft")));
    let report = Report {
        apply: false,
        plan: p,
        refused: false,
        results: None,
        after: None,
    };
    assert!(report.failed());
    assert!(render_text(&report).contains("could not inspect:"));
}

// ---------------------------------------------------------------------------------------
// Effects, through a recording fake host and temp dirs.

#[derive(Default)]
struct FakeHost {
    programs: BTreeSet<String>,
    outputs: BTreeMap<String, CmdOutput>,
    fail: BTreeSet<String>,
    ipamd: Option<String>,
    calls: Vec<(String, Option<String>)>,
}

impl FakeHost {
    fn key(program: &str, args: &[String]) -> String {
        std::iter::once(program.to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn answer(&mut self, cmd: &str, stdout: &str) {
        self.outputs.insert(
            cmd.to_string(),
            CmdOutput {
                success: true,
                status: "exit status: 0".into(),
                stdout: stdout.into(),
                stderr: String::new(),
            },
        );
    }
}

impl Host for FakeHost {
    fn run(
        &mut self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> io::Result<CmdOutput> {
        let key = FakeHost::key(program, args);
        self.calls.push((key.clone(), stdin.map(str::to_string)));
        if self.fail.contains(&key) {
            return Ok(CmdOutput {
                success: false,
                status: "exit status: 2".into(),
                stdout: String::new(),
                stderr: "RTNETLINK answers: Operation not permitted".into(),
            });
        }
        if let Some(out) = self.outputs.get(&key) {
            return Ok(out.clone());
        }
        if key.starts_with("nft list") {
            return Ok(CmdOutput {
                success: false,
                status: "exit status: 1".into(),
                stdout: String::new(),
                stderr: "Error: No such file or directory".into(),
            });
        }
        Ok(CmdOutput {
            success: true,
            status: "exit status: 0".into(),
            stdout: String::new(),
            stderr: String::new(),
        })
    }

    fn has_program(&self, program: &str) -> bool {
        self.programs.contains(program)
    }

    fn ipamd_answers(&self, _run_dir: &Path) -> Option<String> {
        self.ipamd.clone()
    }
}

fn args_for(root: &Path, extra: &[&str]) -> CleanupArgs {
    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: NodeCommand,
    }
    let p = |rel: &str| root.join(rel).display().to_string();
    let mut argv = vec![
        "t".to_string(),
        "cleanup-vpc-cni".into(),
        "--conf-dir".into(),
        p("etc/cni/net.d"),
        "--bin-dir".into(),
        p("opt/cni/bin"),
        "--aws-node-run-dir".into(),
        p("var/run/aws-node"),
        "--aws-log-dir".into(),
        p("var/log/aws-routed-eni"),
        "--egress-v4pd-dir".into(),
        p("run/cni/v4pd"),
        "--egress-v6pd-dir".into(),
        p("run/cni/v6pd"),
        "--cni-results-dir".into(),
        p("var/lib/cni/results"),
        "--aws-bpf-dir".into(),
        p("sys/fs/bpf/globals/aws"),
        "--networkd-links-dir".into(),
        p("run/systemd/netif/links"),
        "--proc-net".into(),
        p("proc/net"),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let NodeCommand::CleanupVpcCni(args) = T::try_parse_from(argv).unwrap().cmd;
    args
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A node in a temp dir, with fixture command output, as the fake host sees it.
fn fake_node(root: &Path) -> FakeHost {
    write(root, "etc/cni/net.d/10-aws.conflist", AWS_CONFLIST);
    write(root, "etc/cni/net.d/10-flannel.conflist", &weft_conflist());
    for bin in [
        "aws-cni",
        "egress-cni",
        "bridge",
        "host-local",
        "portmap",
        "loopback",
        "flannel",
    ] {
        write(root, &format!("opt/cni/bin/{bin}"), "#!/bin/sh\n");
    }
    write(root, "var/run/aws-node/ipam.json", "{}");
    write(root, "var/log/aws-routed-eni/ipamd.log", "log");
    write(root, "var/lib/cni/results/aws-cni-1-eth0", "{}");
    write(root, "var/lib/cni/results/cbr0-2-eth0", "{}");
    // The legacy backend has only nat here: mangle and filter must not be read (reading
    // would create them).
    write(root, "proc/net/ip_tables_names", "nat\n");
    write(root, "run/systemd/netif/links/7", NETWORKD_ETH2);
    let mut host = FakeHost::default();
    for p in [
        "iptables-legacy-save",
        "iptables-nft-save",
        "ip6tables-nft-save",
        "nft",
    ] {
        host.programs.insert(p.into());
    }
    host.answer("iptables-legacy-save -t nat", LEGACY_NAT);
    host.answer("iptables-nft-save -t nat", NFT_NAT);
    host.answer("iptables-nft-save -t mangle", NFT_MANGLE);
    host.answer("iptables-nft-save -t filter", NFT_FILTER);
    for t in ["nat", "mangle", "filter"] {
        host.answer(&format!("ip6tables-nft-save -t {t}"), IP6_EMPTY);
    }
    host.answer("nft list table ip aws-cni", NFT_AWS);
    host.answer("ip -j rule", IP_RULE);
    host.answer("ip -4 -j route show table all", IP_ROUTE);
    host.answer("ip -j link show", IP_LINK);
    host
}

#[test]
fn snapshot_reads_only_existing_legacy_tables_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = fake_node(dir.path());
    let before = files(dir.path());
    let args = args_for(dir.path(), &[]);
    let out = cleanup_vpc_cni(&args, &mut host);
    assert!(!out.failed, "{}{}", out.stdout, out.stderr);
    assert_eq!(files(dir.path()), before, "a dry run changes nothing");
    let called: Vec<&str> = host.calls.iter().map(|(c, _)| c.as_str()).collect();
    assert!(called.contains(&"iptables-legacy-save -t nat"));
    assert!(
        !called.contains(&"iptables-legacy-save -t mangle"),
        "{called:?}"
    );
    assert!(!called.iter().any(|c| c.starts_with("ip6tables-legacy")));
    assert!(
        called.iter().all(|c| !c.contains("restore")
            && !c.contains(" del")
            && !c.contains("delete")
            && !c.contains("flush")),
        "{called:?}"
    );
    assert!(out.stdout.contains("dry run, nothing was changed"));
    // The networkd state file under the injected dir keeps eth2's rule and table.
    assert!(out.stdout.contains("eth2 is managed by systemd-networkd"));
}

#[test]
fn apply_carries_out_every_step_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut host = fake_node(root);
    let args = args_for(root, &["--apply", "-o", "json"]);
    let out = cleanup_vpc_cni(&args, &mut host);
    // The fake host's command output does not change, so the second look still sees the
    // rules: the run reports them as left over and fails.
    assert!(out.failed);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["mode"], "apply");
    let left = doc["left_after_apply"].as_array().unwrap();
    assert!(!left.is_empty(), "{left:?}");
    assert!(
        left.iter().all(|w| {
            let w = w.as_str().unwrap();
            !w.starts_with("move") && !w.starts_with("remove")
        }),
        "{left:?}"
    );
    // Files: done for real.
    assert_eq!(
        files(root),
        [
            "etc/cni/net.d/10-aws.conflist.weft-bak",
            "etc/cni/net.d/10-flannel.conflist",
            "opt/cni/bin/bridge",
            "opt/cni/bin/flannel",
            "opt/cni/bin/host-local",
            "opt/cni/bin/loopback",
            "opt/cni/bin/portmap",
            "proc/net/ip_tables_names",
            "run/systemd/netif/links/7",
            "var/lib/cni/results/cbr0-2-eth0",
            "var/log/aws-routed-eni.weft-bak/ipamd.log",
        ]
    );
    // Commands: restores with their payloads, then nft, then ip.
    let changes: Vec<&(String, Option<String>)> = host
        .calls
        .iter()
        .filter(|(c, _)| {
            c.contains("restore")
                || c.contains("delete")
                || c.contains(" del ")
                || c.contains(" add ")
                || c.contains("flush")
        })
        .collect();
    let shown: Vec<&str> = changes.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        shown,
        [
            "iptables-legacy-restore --noflush -w 5",
            "iptables-nft-restore --noflush -w 5",
            "iptables-nft-restore --noflush -w 5",
            "iptables-nft-restore --noflush -w 5",
            "nft delete table ip aws-cni",
            "ip rule add priority 0 lookup local",
            "ip rule del priority 20 lookup local",
            "ip rule del priority 512 to 10.0.1.77 lookup main",
            "ip rule del priority 512 to 10.0.1.78 lookup main",
            "ip rule del priority 1024 fwmark 0x80/0x80 lookup main",
            "ip rule del priority 1535 to 172.31.0.0/16 lookup main",
            "ip rule del priority 1536 from 10.0.2.33 lookup 2",
            "ip rule del priority 1536 from 10.0.2.34 lookup 2",
            "ip rule del priority 32765 from 10.0.2.10 lookup 2",
            "ip route flush table 2",
        ]
    );
    assert!(
        changes[0]
            .1
            .as_deref()
            .unwrap()
            .starts_with("*nat\n-D PREROUTING")
    );
    assert!(
        changes[3]
            .1
            .as_deref()
            .unwrap()
            .starts_with("*filter\n-D FORWARD")
    );
}

#[test]
fn a_failed_action_is_reported_and_a_chained_step_stops() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut host = fake_node(root);
    host.fail
        .insert("ip rule add priority 0 lookup local".into());
    host.fail
        .insert("ip rule del priority 512 to 10.0.1.77 lookup main".into());
    let paths = args_for(root, &[]).paths.paths();
    let tools = tools();
    let p = plan::plan(&snapshot::take(&mut host, &paths, &tools), &tools);
    let results = apply(&p, &mut host);
    let called: Vec<&str> = host.calls.iter().map(|(c, _)| c.as_str()).collect();
    // The local rule at 20 must never go while 0 could not be added.
    assert!(!called.contains(&"ip rule del priority 20 lookup local"));
    // Other steps, and the other rule of the failed group, still ran.
    assert!(called.contains(&"ip rule del priority 512 to 10.0.1.78 lookup main"));
    assert!(called.contains(&"ip route flush table 2"));
    let local = p.steps.iter().position(|s| s.chained).unwrap();
    assert!(
        matches!(results[local].actions[0], ActionResult::Failed(ref e) if e.contains("Operation not permitted"))
    );
    assert_eq!(results[local].actions[1], ActionResult::Skipped);
    let failed: Vec<&str> = p
        .steps
        .iter()
        .zip(&results)
        .filter(|(_, r)| !r.ok())
        .map(|(s, _)| s.what.as_str())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    // And the text says so.
    let report = Report {
        apply: true,
        plan: p,
        refused: false,
        results: Some(results),
        after: None,
    };
    let text = render_text(&report);
    assert!(
        text.contains("-> FAILED: `ip rule add priority 0 lookup local` failed"),
        "{text}"
    );
    assert!(text.contains("-> skipped"), "{text}");
    assert!(report.failed());
}

#[test]
fn a_running_ipamd_blocks_apply_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut host = fake_node(root);
    host.ipamd = Some("ipamd's socket /var/run/aws-node/ipamd.sock accepts connections".into());
    let before = files(root);
    let out = cleanup_vpc_cni(&args_for(root, &["--apply"]), &mut host);
    assert!(out.failed);
    assert!(out.stdout.contains("refused to apply"), "{}", out.stdout);
    assert!(
        out.stdout.contains("delete daemonset aws-node"),
        "{}",
        out.stdout
    );
    assert_eq!(files(root), before);
    assert!(!host.calls.iter().any(|(c, _)| c.contains("restore")));

    // A dry run shows the plan with the warning, and does not fail for it.
    let out = cleanup_vpc_cni(&args_for(root, &[]), &mut host);
    assert!(!out.failed && out.stdout.contains("warning: ipamd is still running"));

    let out = cleanup_vpc_cni(&args_for(root, &["--apply", "--force"]), &mut host);
    assert!(
        host.calls.iter().any(|(c, _)| c.contains("restore")),
        "{}",
        out.stdout
    );
    assert!(!root.join("etc/cni/net.d/10-aws.conflist").exists());
}

#[test]
fn file_actions_are_idempotent_and_never_clobber() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut host = FakeHost::default();
    write(root, "a", "1");
    write(root, "b", "2");
    let rename = Action::Rename {
        from: root.join("a"),
        to: root.join("b"),
    };
    let err = super::apply::apply_action(&rename, &mut host).unwrap_err();
    assert!(err.contains("the target exists"), "{err}");
    assert_eq!(std::fs::read_to_string(root.join("b")).unwrap(), "2");
    let gone = Action::Remove {
        path: root.join("missing"),
        recursive: true,
    };
    super::apply::apply_action(&gone, &mut host).unwrap();
    let moved_away = Action::Rename {
        from: root.join("missing"),
        to: root.join("c"),
    };
    super::apply::apply_action(&moved_away, &mut host).unwrap();
}

#[test]
fn cli_defaults_are_the_real_node_paths() {
    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: NodeCommand,
    }
    let NodeCommand::CleanupVpcCni(a) = T::try_parse_from(["t", "cleanup-vpc-cni"]).unwrap().cmd;
    assert!(!a.apply);
    let p = a.paths.paths();
    assert_eq!(p.conf_dir, Path::new("/etc/cni/net.d"));
    assert_eq!(p.bin_dir, Path::new("/opt/cni/bin"));
    assert_eq!(p.aws_node_run_dir, Path::new("/var/run/aws-node"));
    assert_eq!(p.egress_v4pd_dir, Path::new("/run/cni/v4pd"));
    assert_eq!(p.cni_results_dir, Path::new("/var/lib/cni/results"));
    assert_eq!(a.tools.tools(), tools());
    assert!(T::try_parse_from(["t", "cleanup-vpc-cni", "--force"]).is_err());
}

#[test]
fn commands_are_shell_quoted_when_needed() {
    let a = Action::Rename {
        from: PathBuf::from("/tmp/a b/10-aws.conflist"),
        to: PathBuf::from("/tmp/it's"),
    };
    assert_eq!(
        a.command(),
        r"mv -n '/tmp/a b/10-aws.conflist' '/tmp/it'\''s'"
    );
}

// ---------------------------------------------------------------------------------------
// A node whose VPC-addressed pods still run: only what is safe while they run.

/// Adds entries to an `ip -j` JSON list.
fn with_json(list: &str, more: &[Value]) -> String {
    let mut v: Vec<Value> = serde_json::from_str(list).unwrap();
    v.extend(more.iter().cloned());
    Value::Array(v).to_string()
}

/// The dirty node with two VPC-addressed pods still running: 10.0.2.33 on the secondary ENI
/// eth1 (its `1536: from 10.0.2.33 lookup 2` rule) and 10.0.1.78 on the primary ENI (rule
/// 512 only), each with its `eni*` veth and host route as the CNI plugin makes them. Pod
/// 10.0.2.34 (rule 1536) and 10.0.1.77 (rule 512, route via eth0) are gone, and so is the
/// veth of a route to 10.0.2.40.
fn live_node() -> Snapshot {
    let mut s = dirty_node();
    let link = |ix: u64, name: &str| json!({"ifindex":ix,"link_netnsid":0,"ifname":name,"flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":9001,"qdisc":"noqueue","operstate":"UP","linkmode":"DEFAULT","group":"default","link_type":"ether","address":"aa:bb:cc:00:00:01","broadcast":"ff:ff:ff:ff:ff:ff"});
    let route = |dst: &str, dev: &str| json!({"dst":dst,"dev":dev,"scope":"link","flags":[]});
    s.links = Ok(with_json(
        IP_LINK,
        &[link(8, "eni1a2b3c4d5e6"), link(9, "eni9f8e7d6c5b4")],
    ));
    s.routes = Ok(with_json(
        IP_ROUTE,
        &[
            route("10.0.2.33", "eni1a2b3c4d5e6"),
            route("10.0.1.78", "eni9f8e7d6c5b4"),
            route("10.0.2.40", "eni0000000dead"),
            route("10.0.5.0/24", "eni1a2b3c4d5e6"),
        ],
    ));
    s
}

fn overlay(s: &mut Snapshot) {
    s.overlay = Ok(Some((
        "10.244.0.0/16".parse().unwrap(),
        "FLANNEL_NETWORK of /run/flannel/subnet.env".into(),
    )));
}

fn whats(p: &Plan) -> Vec<&str> {
    p.steps.iter().map(|s| s.what.as_str()).collect()
}

/// Asserts that each of `wants` begins what some step of `p` does.
#[track_caller]
fn assert_steps_start_with(p: &Plan, wants: &[&str]) {
    let w = whats(p);
    for want in wants {
        assert!(
            w.iter().any(|x| x.starts_with(want)),
            "no {want:?} in {w:#?}"
        );
    }
}

#[test]
fn live_vpc_pods_are_host_routes_via_existing_eni_veths() {
    let s = live_node();
    let routes = iproute::parse_routes(s.routes.as_ref().unwrap()).unwrap();
    let links = iproute::parse_links(s.links.as_ref().unwrap()).unwrap();
    let rules = iproute::parse_rules(s.rules.as_ref().unwrap()).unwrap();
    let live = iproute::live_pods(&routes, &links, &rules);
    let shown: Vec<String> = live.iter().map(|p| p.describe()).collect();
    assert_eq!(
        shown,
        [
            "pod 10.0.1.78 on eni9f8e7d6c5b4",
            "pod 10.0.2.33 on eni1a2b3c4d5e6 (ENI table 2)"
        ]
    );
    // The fixture node of the other tests has none: its route to 10.0.1.77 goes via eth0.
    let d = dirty_node();
    let routes = iproute::parse_routes(d.routes.as_ref().unwrap()).unwrap();
    let links = iproute::parse_links(d.links.as_ref().unwrap()).unwrap();
    assert!(iproute::live_pods(&routes, &links, &rules).is_empty());
    // A /32 route is the same pod; a route via an unknown link, a gateway or a subnet is not.
    let routes = iproute::parse_routes(
        &json!([
            {"dst":"10.0.2.33/32","dev":"eni1a2b3c4d5e6","scope":"link"},
            {"dst":"10.0.2.50","gateway":"10.0.2.1","dev":"eni1a2b3c4d5e6"},
            {"dst":"10.0.2.51","dev":"eni","scope":"link"},
            {"dst":"10.0.2.52","dev":"eni1a2b3c4d5e6","table":"2","scope":"link"},
        ])
        .to_string(),
    )
    .unwrap();
    let links = BTreeMap::from([("eni1a2b3c4d5e6".to_string(), 8), ("eni".to_string(), 9)]);
    let live = iproute::live_pods(&routes, &links, &rules);
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].ip.as_str(), live[0].table), ("10.0.2.33", Some(2)));
}

#[test]
fn with_live_pods_only_what_is_safe_is_planned_and_the_rest_is_kept_with_the_pod_named() {
    let mut s = live_node();
    overlay(&mut s);
    let p = plan::plan(&s, &tools());
    assert_eq!(p.live_pods.len(), 2);
    // Safe now: the config, the overlay exclusion in the SNAT chain, the FORWARD REJECT,
    // the local rule, the rules of pods that are gone, weft's overlay rule, the unused table.
    assert_steps_start_with(
        &p,
        &[
            "move the VPC CNI's network config /etc/cni/net.d/10-aws.conflist aside",
            "iptables-legacy table nat: insert a RETURN for the overlay network 10.244.0.0/16 at the top of AWS-SNAT-CHAIN-0",
            "iptables-nft table nat: insert a RETURN for the overlay network 10.244.0.0/16 at the top of AWS-SNAT-CHAIN-0",
            "iptables-legacy table filter: delete 1 rule",
            "iptables-nft table filter: delete 1 rule",
            "put the local rule back at priority 0",
            "delete 1 ip rule at priority 512: `512: from all to 10.0.1.77 lookup main`",
            "delete 1 ip rule at priority 1536: `1536: from 10.0.2.34 lookup 2`",
            "add ip rule `1535: from all to 10.244.0.0/16 lookup main`",
        ],
    );
    // Nothing a live pod needs: no SNAT/CONNMARK removal, no nft table, no 1024/1535 or
    // live per-pod rule, no table 2, no binaries, no state.
    let commands = all_commands(&p);
    for never in [
        "-D POSTROUTING -m comment --comment \"AWS SNAT CHAIN\"",
        "-X AWS-SNAT-CHAIN-0",
        "CONNMARK",
        "nft delete table ip aws-cni",
        "rule del priority 1024",
        "rule del priority 1535",
        "to 10.0.1.78",
        "from 10.0.2.33",
        "32765 from 10.0.2.10",
        "route flush table 2",
        "rm /opt/cni/bin/aws-cni",
        "/var/run/aws-node",
        "aws-routed-eni",
        "/var/lib/cni/results/aws-cni-",
    ] {
        assert!(!commands.contains(never), "{never:?} planned:\n{commands}");
    }
    let kept = p.kept.join("\n");
    for want in [
        "ip rule `512: from all to 10.0.1.78 lookup main`: kept because pod 10.0.1.78 on eni9f8e7d6c5b4 still uses it",
        "ip rule `1536: from 10.0.2.33 lookup 2`: kept because pod 10.0.2.33 on eni1a2b3c4d5e6 (ENI table 2) still uses it",
        "ip rule `32765: from 10.0.2.10 lookup 2`: kept because pod 10.0.2.33 on eni1a2b3c4d5e6 (ENI table 2) still uses it",
        "ip rule `1024: from all fwmark 0x80/0x80 lookup main`: kept because pods 10.0.1.78 on eni9f8e7d6c5b4, 10.0.2.33 on eni1a2b3c4d5e6 still use it",
        "route table 2 kept because pod 10.0.2.33 on eni1a2b3c4d5e6 (ENI table 2) still uses it",
        "iptables-nft table nat: AWS-SNAT-CHAIN-<n> and its POSTROUTING jump, the CONNMARK rules (and AWS-CONNMARK-CHAIN-<n>), egress-cni's CNI-E4-*/CNI-E6-* chains kept because pods",
        "iptables-nft table mangle: the CONNMARK rules (and AWS-CONNMARK-CHAIN-<n>) kept because",
        "nftables `table ip aws-cni` kept because",
        "aws-cni, aws-cni-support.sh, aws-eks-na-cli, aws-eks-na-cli-v6, egress-cni in /opt/cni/bin kept because",
        "/var/run/aws-node, /run/cni/v4pd, /sys/fs/bpf/globals/aws, /var/log/aws-routed-eni, the aws-cni results in /var/lib/cni/results kept because",
    ] {
        assert!(kept.contains(want), "no {want:?} in kept:\n{kept}");
    }
    // Table 3 (networkd's) and the unrelated rules stay as before.
    assert!(kept.contains("route table 3: its default route goes via eth2"));
    assert!(p.problems.is_empty() && p.warnings.is_empty(), "{p:#?}");
}

#[test]
fn the_rolling_cleanup_converges_then_the_drained_node_is_cleaned_completely() {
    let mut s = live_node();
    overlay(&mut s);
    let first = plan::plan(&s, &tools());
    let safe = simulate(&s, &first);
    // A second look while the pods run finds nothing more to do (idempotent).
    let again = plan::plan(&safe, &tools());
    assert!(again.is_empty(), "left: {:#?}", whats(&again));
    assert_eq!(again.live_pods, first.live_pods);
    // The exclusion is in the SNAT chain, right at its top.
    let nat = &safe.iptables[1].tables.as_ref().unwrap()[0].1;
    let snat: Vec<&str> = nat
        .lines()
        .filter(|l| l.starts_with("-A AWS-SNAT-CHAIN-0 "))
        .collect();
    assert_eq!(
        snat[0],
        "-A AWS-SNAT-CHAIN-0 -d 10.244.0.0/16 -m comment --comment \"weft: overlay network, not SNATed\" -j RETURN"
    );
    // The drain deletes the pods: their veths and routes go, their rules stay behind.
    let mut drained = safe.clone();
    drained.links = Ok(IP_LINK.to_string());
    let mut routes: Vec<Value> = serde_json::from_str(drained.routes.as_ref().unwrap()).unwrap();
    routes.retain(|r| !r["dev"].as_str().unwrap_or("").starts_with("eni"));
    drained.routes = Ok(Value::Array(routes).to_string());
    let rest = plan::plan(&drained, &tools());
    assert!(rest.live_pods.is_empty());
    assert_steps_start_with(
        &rest,
        &[
            "iptables-nft table nat: delete 4 rules, flush and delete AWS-CONNMARK-CHAIN-0, AWS-SNAT-CHAIN-0",
            "delete nftables `table ip aws-cni`",
            "delete 1 ip rule at priority 512: `512: from all to 10.0.1.78 lookup main`",
            "delete 2 ip rules at priority 1535",
            "delete 1 ip rule at priority 1536: `1536: from 10.0.2.33 lookup 2`",
            "flush route table 2",
            "remove aws-cni",
            "remove /var/run/aws-node",
        ],
    );
    let clean = simulate(&drained, &rest);
    let last = plan::plan(&clean, &tools());
    assert!(last.is_empty(), "left: {:#?}", whats(&last));
    let shown: Vec<String> = iproute::parse_rules(clean.rules.as_ref().unwrap())
        .unwrap()
        .iter()
        .map(IpRule::display)
        .collect();
    assert!(
        !shown.iter().any(|r| r.starts_with("512: from all")
            || r.starts_with("1024:")
            || r.starts_with("1535:")
            || r.starts_with("1536: from 10.0.2.")),
        "{shown:#?}"
    );
    let nat = &clean.iptables[1].tables.as_ref().unwrap()[0].1;
    assert!(
        !nat.contains("AWS") && !nat.contains("weft: overlay"),
        "{nat}"
    );
}

#[test]
fn all_removes_everything_even_with_live_pods_as_before() {
    let s = live_node();
    let all = plan::plan_with(&s, &tools(), true);
    assert!(all.live_pods.is_empty());
    let commands = all_commands(&all);
    for want in [
        "ip rule del priority 512 to 10.0.1.78 lookup main",
        "ip rule del priority 1536 from 10.0.2.33 lookup 2",
        "ip route flush table 2",
        "-X AWS-SNAT-CHAIN-0",
        "nft delete table ip aws-cni",
        "rm /opt/cni/bin/aws-cni",
    ] {
        assert!(commands.contains(want), "{want:?} not in:\n{commands}");
    }
    // The same steps as the node without pods (the plan of today).
    assert_eq!(whats(&all), whats(&plan::plan(&dirty_node(), &tools())));
}

#[test]
fn live_pods_without_a_known_overlay_warn_and_unreadable_routes_keep_everything() {
    let p = plan::plan(&live_node(), &tools());
    assert!(
        p.warnings
            .iter()
            .any(|w| w.starts_with("the overlay network is not known (no --overlay-network, and no FLANNEL_NETWORK in /run/flannel/subnet.env)")),
        "{:#?}",
        p.warnings
    );
    assert!(!whats(&p).iter().any(|w| w.contains("overlay")));
    let mut s = dirty_node();
    s.routes = Err("`ip -4 -j route show table all` failed".into());
    let p = plan::plan(&s, &tools());
    assert!(p.live_unknown);
    let commands = all_commands(&p);
    for never in [
        "-X AWS-SNAT-CHAIN-0",
        "nft delete",
        "rm /opt/cni/bin/aws-cni",
    ] {
        assert!(!commands.contains(never), "{never:?}:\n{commands}");
    }
    assert!(
        p.kept
            .iter()
            .any(|k| k.contains("it is unknown whether VPC-addressed pods still use it"))
    );
}

#[test]
fn overlay_network_comes_from_the_subnet_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("subnet.env");
    assert_eq!(snapshot::overlay_from_subnet_file(&f), Ok(None));
    std::fs::write(
        &f,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=8951\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    let (net, from) = snapshot::overlay_from_subnet_file(&f).unwrap().unwrap();
    assert_eq!(net.to_string(), "10.244.0.0/16");
    assert!(from.contains("subnet.env"), "{from}");
    std::fs::write(&f, "FLANNEL_NETWORK=banana\n").unwrap();
    let e = snapshot::overlay_from_subnet_file(&f).unwrap_err();
    assert!(e.contains("is not a usable subnet file"), "{e}");
}

#[test]
fn golden_dry_run_with_live_pods() {
    let mut s = live_node();
    overlay(&mut s);
    let report = Report {
        apply: false,
        plan: plan::plan(&s, &tools()),
        refused: false,
        results: None,
        after: None,
    };
    check_golden("dry-run-live-pods.txt", &render_text(&report));
}
