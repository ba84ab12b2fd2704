//! Golden files for every external format weft-core produces or reads. The files under
//! `tests/golden/` were written by hand from flannel's behaviour (docs/flannel-compat), so a
//! change in weft's output that would break compatibility shows up as a readable diff.

use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};
use weft_core::config::NetworkConfig;
use weft_core::lease::{LeaseAttrs, VxlanBackendData};
use weft_core::mac::MacAddr;
use weft_core::nft::{DualNftRules, NftRules, dual_transaction};
use weft_core::rules::{MASQ_CHAIN, Table, forward_rules, masq_rules, plan_remove, plan_sync};
use weft_core::subnet::{config_key, lease_key, subnets_key_prefix};
use weft_core::subnet_env::{SubnetEnv, previous_subnet};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn net6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// Compares with `tests/golden/<name>` (expect-test: a diff on failure, `UPDATE_EXPECT=1`
/// rewrites the file); `golden` is the file as the test read it, which must match too.
fn assert_golden(name: &str, golden: &str, actual: &str) {
    expect_test::expect_file![format!(
        "{}/tests/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    )]
    .assert_eq(actual);
    assert_eq!(golden, actual, "tests/golden/{name} as compiled in");
}

#[test]
fn lease_vxlan() {
    let golden = include_str!("golden/lease-vxlan.json");
    let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(192, 168, 64, 3), 1, mac("c6:d2:32:6f:8f:44"));
    assert_golden("lease-vxlan.json", golden, &attrs.to_json());
    assert_eq!(LeaseAttrs::parse(golden.as_bytes()).unwrap(), attrs);
}

#[test]
fn lease_vxlan_dual_stack() {
    let golden = include_str!("golden/lease-vxlan-dual-stack.json");
    let attrs = LeaseAttrs {
        public_ip: Ipv4Addr::new(192, 168, 1, 11),
        public_ipv6: Some("2001:db8::11".parse().unwrap()),
        backend_type: Some("vxlan".into()),
        backend_data: Some(
            VxlanBackendData {
                vni: 1,
                vtep_mac: mac("aa:bb:cc:dd:ee:01"),
            }
            .to_value(),
        ),
        backend_v6_data: Some(
            VxlanBackendData {
                vni: 1,
                vtep_mac: mac("aa:bb:cc:dd:ee:02"),
            }
            .to_value(),
        ),
    };
    assert_golden("lease-vxlan-dual-stack.json", golden, &attrs.to_json());
    assert_eq!(LeaseAttrs::parse(golden.as_bytes()).unwrap(), attrs);
}

#[test]
fn lease_host_gw() {
    let golden = include_str!("golden/lease-host-gw.json");
    let attrs = LeaseAttrs::parse(golden.as_bytes()).unwrap();
    assert_eq!(attrs.backend_type.as_deref(), Some("host-gw"));
    assert_eq!(attrs.backend_data, None);
    assert_golden("lease-host-gw.json", golden, &attrs.to_json());
}

#[test]
fn backend_data_vxlan() {
    let golden = include_str!("golden/backend-data-vxlan.json");
    let data = VxlanBackendData {
        vni: 1,
        vtep_mac: mac("aa:bb:cc:dd:ee:01"),
    };
    assert_golden("backend-data-vxlan.json", golden, &data.to_json());
    assert_eq!(VxlanBackendData::parse(golden.as_bytes()).unwrap(), data);
}

#[test]
fn subnet_env_single_stack() {
    let golden = include_str!("golden/subnet.env");
    let env = SubnetEnv {
        network: Some(net("10.244.0.0/16")),
        subnet: Some(net("10.244.1.0/24")),
        ipv6_network: None,
        ipv6_subnet: None,
        mtu: 1450,
        ipmasq: true,
    };
    assert_golden("subnet.env", golden, &env.render());
    assert_eq!(SubnetEnv::parse(golden).unwrap(), env);
    assert_eq!(previous_subnet(golden), Some(net("10.244.1.0/24")));
}

#[test]
fn subnet_env_dual_stack() {
    let golden = include_str!("golden/subnet-dual-stack.env");
    let env = SubnetEnv {
        network: Some(net("10.244.0.0/16")),
        subnet: Some(net("10.244.37.0/24")),
        ipv6_network: Some(net6("fc00::/48")),
        ipv6_subnet: Some(net6("fc00:0:0:25::/64")),
        mtu: 1450,
        ipmasq: false,
    };
    assert_golden("subnet-dual-stack.env", golden, &env.render());
    assert_eq!(SubnetEnv::parse(golden).unwrap(), env);
}

#[test]
fn iptables_restore_payloads_from_empty_tables() {
    let cluster = net("10.244.0.0/16");
    let own = net("10.244.1.0/24");
    let mut rules = masq_rules(cluster, own, true);
    rules.extend(forward_rules(cluster));

    let nat = plan_sync(Table::Nat, "", &rules).unwrap();
    assert_golden(
        "iptables-nat.restore",
        include_str!("golden/iptables-nat.restore"),
        &nat,
    );
    let filter = plan_sync(Table::Filter, "", &rules).unwrap();
    assert_golden(
        "iptables-filter.restore",
        include_str!("golden/iptables-filter.restore"),
        &filter,
    );
}

#[test]
fn ip6tables_restore_payloads_from_empty_tables() {
    let cluster = net6("fc00::/48");
    let own = net6("fc00:0:0:25::/64");
    let mut rules = masq_rules(cluster, own, true);
    rules.extend(forward_rules(cluster));

    let nat = plan_sync(Table::Nat, "", &rules).unwrap();
    assert_golden(
        "ip6tables-nat.restore",
        include_str!("golden/ip6tables-nat.restore"),
        &nat,
    );
    let filter = plan_sync(Table::Filter, "", &rules).unwrap();
    assert_golden(
        "ip6tables-filter.restore",
        include_str!("golden/ip6tables-filter.restore"),
        &filter,
    );
}

#[test]
fn nftables_dual_stack_transaction() {
    let rules = DualNftRules {
        v4: Some(NftRules {
            cluster: net("10.244.0.0/16"),
            own: net("10.244.37.0/24"),
            masq: true,
            forward: true,
            fully_random: true,
        }),
        v6: Some(NftRules {
            cluster: net6("fc00::/48"),
            own: net6("fc00:0:0:25::/64"),
            masq: true,
            forward: true,
            fully_random: true,
        }),
    };
    assert_golden(
        "nft-dual-stack.nft",
        include_str!("golden/nft-dual-stack.nft"),
        &dual_transaction(&rules),
    );
}

#[test]
fn iptables_repair_of_a_drifted_nat_table() {
    let saved = include_str!("golden/iptables-save-nat-drifted.txt");
    let rules = masq_rules(net("10.244.0.0/16"), net("10.244.1.0/24"), true);
    let payload = plan_sync(Table::Nat, saved, &rules).unwrap();
    assert_golden(
        "iptables-nat-repair.restore",
        include_str!("golden/iptables-nat-repair.restore"),
        &payload,
    );

    // After the repair the table is in sync: apply the payload to the saved text by hand
    // (drop the stale chain rules and the extra jumps, put the new chain rules last).
    let mut repaired = String::new();
    for line in saved.lines() {
        let extra_jump =
            line.starts_with("[0:0] -A POSTROUTING") && line.ends_with("-j FLANNEL-POSTRTG");
        if line.contains("-A FLANNEL-POSTRTG") || extra_jump {
            continue;
        }
        if line == "COMMIT" {
            for rule in rules.iter().filter(|r| r.chain == MASQ_CHAIN) {
                repaired.push_str(&format!("{}\n", rule.append_line()));
            }
        }
        repaired.push_str(&format!("{line}\n"));
    }
    assert_eq!(plan_sync(Table::Nat, &repaired, &rules), None, "{repaired}");
}

#[test]
fn iptables_remove_payload() {
    let saved = include_str!("golden/iptables-save-nat-drifted.txt");
    let once: String = saved
        .lines()
        .filter(|line| {
            !line.starts_with("[0:0] -A POSTROUTING -m comment --comment \"flanneld masq\"")
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let payload = plan_remove(Table::Nat, &once, &[MASQ_CHAIN]).unwrap();
    assert_golden(
        "iptables-nat-remove.restore",
        include_str!("golden/iptables-nat-remove.restore"),
        &payload,
    );
}

#[test]
fn etcd_keys() {
    let golden = include_str!("golden/etcd-keys.txt");
    let prefix = "/coreos.com/network/";
    let actual = format!(
        "{}\n{}\n{}\n",
        config_key(prefix),
        subnets_key_prefix(prefix),
        lease_key(prefix, net("10.244.37.0/24"))
    );
    assert_golden("etcd-keys.txt", golden, &actual);
}

#[test]
fn net_conf_canonical() {
    let golden = include_str!("golden/net-conf-canonical.json");
    // The manifest's net-conf.json, with other casing, renders to the canonical form.
    let cfg = NetworkConfig::parse(
        br#"{"network":"10.244.0.0/16","EnableNFTables":false,"backend":{"type":"VXLAN"}}"#,
    )
    .unwrap();
    assert_golden("net-conf-canonical.json", golden, &cfg.to_json());
    assert_eq!(NetworkConfig::parse(golden.as_bytes()).unwrap(), cfg);
}
