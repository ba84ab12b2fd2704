//! Unit tests of every check's verdicts (OK / WARN / FAIL / SKIP) with their cause and fix
//! texts, on hand-built facts: a healthy node, then one thing broken at a time. Plus the
//! parsers and the rendering.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use weft_core::dataplane::{FdbEntry, KernelState, NeighEntry, RouteEntry};
use weft_core::lease::LeaseAttrs;
use weft_core::mac::MacAddr;
use weft_core::rules::masq_rules;
use weft_net::netlink::{LinkInfoView, VxlanAttrs};

use super::checks::{self, Finding, Status, run_all};
use super::facts::{
    BackendDumps, CniFacts, EtcdData, EtcdFacts, Facts, FileText, HealthFacts, KubeletFacts,
    NetFacts,
};
use super::{parse, render};
use crate::cleanup::plan::{Area, Plan, Step};
use crate::cleanup::snapshot::{Entry, Kind, Listing};
use crate::eks::inputs::Node;
use crate::report::{LeaseInput, Ttl};
use crate::v2::{Probe, V2Get};

const NET_CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const ENDPOINT: &str = "http://10.250.0.2:2379";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 1, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 1, 2);
const ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=8951\nFLANNEL_IPMASQ=true\n";

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn own_mac() -> MacAddr {
    mac("0a:00:00:00:00:01")
}

fn peer_mac() -> MacAddr {
    mac("0a:00:00:00:00:02")
}

fn lease_input(subnet: &str, ip: Ipv4Addr, m: MacAddr) -> LeaseInput {
    let sn = net(subnet);
    LeaseInput {
        name: format!("{}-{}", sn.network(), sn.prefix_len()),
        subnet: Ok(sn),
        value: LeaseAttrs::vxlan(ip, 1, m).to_json().into_bytes(),
        oversized: None,
        ttl: Ttl::Seconds(86_000),
    }
}

fn link(index: u32, name: &str, mtu: u32) -> LinkInfoView {
    LinkInfoView {
        index,
        name: name.into(),
        mtu,
        mac: None,
        up: true,
        kind: None,
        vxlan: None,
    }
}

fn vxlan_link() -> LinkInfoView {
    LinkInfoView {
        mac: Some(own_mac()),
        kind: Some("vxlan".into()),
        vxlan: Some(VxlanAttrs {
            vni: Some(1),
            underlay_index: Some(2),
            local: Some(NODE_IP.into()),
            port: Some(8472),
            learning: Some(false),
            gbp: false,
        }),
        ..link(3, "flannel.1", 8951)
    }
}

fn peer_state() -> KernelState {
    KernelState {
        neighs: vec![NeighEntry {
            ip: Ipv4Addr::new(10, 244, 2, 0),
            mac: peer_mac(),
        }],
        fdb: vec![FdbEntry {
            mac: peer_mac(),
            dst: PEER_IP,
        }],
        routes: vec![vxlan_route("10.244.2.0/24")],
    }
}

/// The mangle table as kubelet leaves it (its hint chain marks the host's backend).
const KUBELET_HINT: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";

/// `iptables-save` of the nat table with weftd's rules in place.
fn nat_table(random_fully: bool) -> String {
    let mut s = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n",
    );
    for r in masq_rules(net("10.244.0.0/16"), net("10.244.1.0/24"), random_fully) {
        s.push_str(&r.append_line());
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

fn listing(dir: &str, entries: Vec<Entry>) -> Listing {
    Listing {
        dir: PathBuf::from(dir),
        entries: Ok(entries),
    }
}

fn file(name: &str, content: Option<&str>) -> Entry {
    Entry {
        name: name.into(),
        kind: Kind::File,
        content: content.map(|c| c.as_bytes().to_vec()),
    }
}

fn flannel_conflist() -> String {
    String::from_utf8(weft_cni::install::render_conflist("cbr0", "0.3.1")).unwrap()
}

const AWS_CONFLIST: &str = r#"{"cniVersion":"0.4.0","name":"aws-cni","disableCheck":true,"plugins":[{"name":"aws-cni","type":"aws-cni","vethPrefix":"eni","mtu":"9001"},{"name":"egress-cni","type":"egress-cni"},{"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}"#;

fn bin_dir(names: &[&str]) -> Listing {
    listing(
        "/opt/cni/bin",
        names.iter().map(|n| file(n, None)).collect(),
    )
}

fn node(name: &str, pod_cidr: Option<&str>) -> Node {
    // Through the eks module's parser, as --nodes-json is read.
    let spec = match pod_cidr {
        Some(c) => serde_json::json!({ "podCIDR": c, "podCIDRs": [c] }),
        None => serde_json::json!({ "providerID": "aws:///us-east-1a/i-0123456789abcdef0" }),
    };
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [{
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": { "node.kubernetes.io/instance-type": "m5.large" }
            },
            "spec": spec,
            "status": { "capacity": { "pods": "29" } }
        }]
    });
    crate::eks::inputs::parse_nodes(&doc).unwrap().remove(0)
}

/// A node where every check passes.
fn healthy() -> Facts {
    Facts {
        etcd: EtcdFacts {
            endpoints: ENDPOINT.into(),
            config_key: "/coreos.com/network/config".into(),
            subnets_prefix: "/coreos.com/network/subnets/".into(),
            reach: Ok(EtcdData {
                config: Some(NET_CONFIG.as_bytes().to_vec()),
                v2: Vec::new(),
                leases: Ok(vec![
                    lease_input("10.244.1.0/24", NODE_IP, own_mac()),
                    lease_input("10.244.2.0/24", PEER_IP, peer_mac()),
                ]),
            }),
        },
        subnet_file: PathBuf::from("/run/flannel/subnet.env"),
        subnet_env: FileText::Text(ENV.into()),
        net: Ok(NetFacts {
            links: vec![link(1, "lo", 65536), link(2, "eth0", 9001), vxlan_link()],
            addrs: vec![
                (1, Ipv4Addr::LOCALHOST),
                (2, NODE_IP),
                (3, Ipv4Addr::new(10, 244, 1, 0)),
            ],
            vxlan_state: vec![(3, Ok(peer_state()))],
            networks: vec![
                (1, net("127.0.0.0/8")),
                (2, net("10.250.1.0/24")),
                (3, net("10.244.1.0/32")),
            ],
            underlay_state: Vec::new(),
        }),
        iptables_save: "iptables-save".into(),
        iptables_nat: Ok(nat_table(true)),
        iptables_backends: Some(BackendDumps {
            legacy: String::new(),
            nft: format!("{KUBELET_HINT}{}", nat_table(true)),
        }),
        nft_table: Ok(None),
        ip_forward: FileText::Text("1\n".into()),
        bridge_nf_call_iptables: FileText::Text("1\n".into()),
        cni: CniFacts {
            conf_dir: listing(
                "/etc/cni/net.d",
                vec![file("10-flannel.conflist", Some(&flannel_conflist()))],
            ),
            bin_dir: bin_dir(&["bridge", "flannel", "host-local", "loopback", "portmap"]),
            leftovers: Plan::default(),
        },
        kubelet: KubeletFacts {
            searched: vec![PathBuf::from("/etc/kubernetes/kubelet/config.json")],
            main: Some((
                PathBuf::from("/etc/kubernetes/kubelet/config.json"),
                Ok(r#"{"kind":"KubeletConfiguration","maxPods":110}"#.into()),
            )),
            dropins: Vec::new(),
        },
        flannel_args: Some(Ok(format!("--ip-masq --etcd-endpoints={ENDPOINT}"))),
        nodes: Some(Ok(vec![node("ip-10-250-1-1", None)])),
        health: Some(HealthFacts {
            url: "http://127.0.0.1:8081".into(),
            readyz: Ok((200, "weftd is ready\n".into())),
            metrics: Ok((
                200,
                "# HELP weft_ready x\nweft_ready 1\nweft_lease_held 1\nweft_peers_known 1\nweft_peers_programmed 1\n".into(),
            )),
        }),
    }
}

fn find(facts: &Facts, check: &str) -> Finding {
    run_all(facts)
        .into_iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} finding"))
}

/// `expect` on the finding of check `id`.
#[track_caller]
fn check(facts: &Facts, id: &str, status: Status, needles: &[&str]) {
    expect(&find(facts, id), status, needles);
}

/// Asserts the status and that each needle occurs in detail, cause or fix.
#[track_caller]
fn expect(f: &Finding, status: Status, needles: &[&str]) {
    assert_eq!(f.status, status, "{f:#?}");
    let all = format!("{}\n{}\n{}", f.detail, f.cause, f.fix);
    for n in needles {
        assert!(all.contains(n), "{n:?} missing from {f:#?}");
    }
    if status == Status::Warn || status == Status::Fail {
        assert!(!f.cause.is_empty() && !f.fix.is_empty(), "{f:#?}");
    }
}

#[test]
fn a_healthy_node_is_all_ok() {
    let findings = run_all(&healthy());
    assert_eq!(findings.len(), 14);
    for f in &findings {
        assert_eq!(f.status, Status::Ok, "{f:#?}");
        assert!(f.cause.is_empty() && f.fix.is_empty(), "{f:#?}");
    }
    let names: Vec<&str> = findings.iter().map(|f| f.check).collect();
    assert_eq!(
        names,
        [
            "etcd",
            "network-config",
            "lease",
            "vxlan-device",
            "peers",
            "masquerade",
            "iptables-backend",
            "ip-forward",
            "br-netfilter",
            "cni-config",
            "vpc-cni-leftovers",
            "max-pods",
            "kube-subnet-mgr",
            "weftd-health"
        ]
    );
    check(
        &healthy(),
        checks::LEASE,
        Status::Ok,
        &["10.244.1.0/24", "node IP 10.250.1.1 (eth0)", "TTL 23h53m"],
    );
    check(
        &healthy(),
        checks::VXLAN_DEVICE,
        Status::Ok,
        &["flannel.1: VNI 1, port 8472, MTU 8951 (eth0 MTU 9001 - 50), up"],
    );
    check(
        &healthy(),
        checks::PEERS,
        Status::Ok,
        &["1 peer programmed", "10.244.2.0/24 via 10.250.1.2"],
    );
}

// 1. etcd

#[test]
fn etcd_unreachable_names_the_endpoint_and_e2() {
    let mut f = healthy();
    f.etcd.reach = Err("Connection refused (os error 111)".into());
    let findings = run_all(&f);
    let etcd = &findings[0];
    expect(
        etcd,
        Status::Fail,
        &[
            "cannot read etcd v3 at http://10.250.0.2:2379: Connection refused",
            "Key not found (/coreos.com)",
            "E2",
            "advertise-client-urls",
            "TCP 2379",
            "etcdctl --endpoints http://10.250.0.2:2379 endpoint health",
        ],
    );
    expect(&findings[1], Status::Skip, &["etcd is unreachable"]);
    expect(&findings[2], Status::Warn, &["could not be checked"]);
    expect(&findings[4], Status::Skip, &[]);
}

#[test]
fn etcd_notes_other_endpoints_in_the_args() {
    let mut f = healthy();
    f.flannel_args = Some(Ok("--etcd-endpoints=http://10.0.9.9:2379".into()));
    check(
        &f,
        checks::ETCD,
        Status::Ok,
        &["--etcd-endpoints=http://10.0.9.9:2379"],
    );
}

// 2. network config

fn set_config(f: &mut Facts, config: Option<&str>, v2: Vec<Probe>) {
    let data = f.etcd.reach.as_mut().unwrap();
    data.config = config.map(|c| c.as_bytes().to_vec());
    data.v2 = v2;
}

/// `config` in etcd v3, nothing in v2.
fn set_stored_config(f: &mut Facts, config: &str) {
    set_config(f, Some(config), vec![]);
}

#[test]
fn config_missing_everywhere_says_weft_network_init() {
    let mut f = healthy();
    set_config(
        &mut f,
        None,
        vec![Probe::Answer {
            endpoint: ENDPOINT.into(),
            get: V2Get::NotFound,
        }],
    );
    let c = find(&f, checks::NETWORK_CONFIG);
    expect(
        &c,
        Status::Fail,
        &[
            "/coreos.com/network/config is missing from etcd v3",
            "not in the etcd v2 store",
            "100: Key not found (/coreos.com)",
            "E2",
            "Did you create your config using etcdv3 API?",
            "weft network init --network 10.244.0.0/16",
        ],
    );
    assert!(!c.fix.contains("migrate-v2"));
    // Without v2 API the detail says so.
    set_config(
        &mut f,
        None,
        vec![Probe::Answer {
            endpoint: ENDPOINT.into(),
            get: V2Get::Disabled,
        }],
    );
    check(
        &f,
        checks::NETWORK_CONFIG,
        Status::Fail,
        &["no --enable-v2", "weft network init"],
    );
    // Dependent checks skip.
    check(&f, checks::PEERS, Status::Skip, &["network-config"]);
}

#[test]
fn config_only_in_v2_explains_e2_e3_and_migrate_v2() {
    let mut f = healthy();
    set_config(
        &mut f,
        None,
        vec![Probe::Answer {
            endpoint: ENDPOINT.into(),
            get: V2Get::Value {
                value: NET_CONFIG.into(),
                modified_index: 4,
            },
        }],
    );
    check(
        &f,
        checks::NETWORK_CONFIG,
        Status::Fail,
        &[
            "missing from etcd v3, but the etcd v2 store at http://10.250.0.2:2379 holds it",
            NET_CONFIG,
            "ETCDCTL_API=2 etcdctl set",
            "E2",
            "100: Key not found (/coreos.com)",
            "E3",
            "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint.",
            "weft network migrate-v2",
        ],
    );
}

#[test]
fn malformed_config_gives_the_parser_message() {
    let mut f = healthy();
    set_stored_config(&mut f, r#"{"Network":"10.244.0.0/33"}"#);
    let parser = weft_core::config::NetworkConfig::parse(br#"{"Network":"10.244.0.0/33"}"#)
        .unwrap_err()
        .to_string();
    check(
        &f,
        checks::NETWORK_CONFIG,
        Status::Fail,
        &[&parser, "weft network init --force"],
    );
    set_stored_config(&mut f, "{nope");
    check(
        &f,
        checks::NETWORK_CONFIG,
        Status::Fail,
        &["not valid JSON", "{nope"],
    );
}

#[test]
fn configs_weftd_cannot_run() {
    let mut f = healthy();
    set_stored_config(
        &mut f,
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}"#,
    );
    check(
        &f,
        checks::NETWORK_CONFIG,
        Status::Fail,
        &[
            "wireguard",
            "nor weft has WireGuard support",
            "weft network init --force",
            "--backend host-gw",
        ],
    );
    check(&f, checks::VXLAN_DEVICE, Status::Skip, &["wireguard"]);
    check(
        &f,
        checks::PEERS,
        Status::Skip,
        &["\"wireguard\", which weftd does not run"],
    );
    // host-gw and DirectRouting are configs weftd runs.
    for ok in [HOSTGW_CONFIG, DIRECT_CONFIG] {
        set_stored_config(&mut f, ok);
        check(&f, checks::NETWORK_CONFIG, Status::Ok, &[]);
    }
    set_stored_config(&mut f, HOSTGW_CONFIG);
    check(&f, checks::NETWORK_CONFIG, Status::Ok, &["backend host-gw"]);
    check(&f, checks::VXLAN_DEVICE, Status::Skip, &["host-gw"]);
    set_stored_config(&mut f, r#"{"Network":"10.244.0.0/16"}"#);
    check(
        &f,
        checks::NETWORK_CONFIG,
        Status::Warn,
        &["no Backend.Type", "udp"],
    );
}

// 3. lease and subnet.env

#[test]
fn missing_subnet_env_is_the_classic_pod_error() {
    let mut f = healthy();
    f.subnet_env = FileText::Missing;
    check(
        &f,
        checks::LEASE,
        Status::Fail,
        &[
            "/run/flannel/subnet.env does not exist",
            "open /run/flannel/subnet.env: no such file",
            "ContainerCreating",
            "weftd is not running on this node, or not ready",
            "start weftd",
        ],
    );
    check(&f, checks::MASQUERADE, Status::Skip, &[]);
}

#[test]
fn unusable_subnet_env() {
    let mut f = healthy();
    f.subnet_env = FileText::Text("FLANNEL_NETWORK=10.244.0.0/16\n".into());
    check(
        &f,
        checks::LEASE,
        Status::Fail,
        &[
            "is unusable",
            "FLANNEL_SUBNET",
            "delete the file and restart weftd",
        ],
    );
    f.subnet_env = FileText::Unreadable("Permission denied (os error 13)".into());
    check(&f, checks::LEASE, Status::Fail, &["Permission denied"]);
}

#[test]
fn lease_missing_from_etcd() {
    let mut f = healthy();
    f.etcd.reach.as_mut().unwrap().leases =
        Ok(vec![lease_input("10.244.2.0/24", PEER_IP, peer_mac())]);
    check(
        &f,
        checks::LEASE,
        Status::Fail,
        &[
            "etcd holds no lease /coreos.com/network/subnets/10.244.1.0-24",
            "restart weftd",
        ],
    );
}

#[test]
fn stale_subnet_env_names_the_nodes_real_lease() {
    let mut f = healthy();
    // subnet.env says 10.244.1.0/24, which etcd gives to the peer; this node holds .7.
    f.etcd.reach.as_mut().unwrap().leases = Ok(vec![
        lease_input("10.244.1.0/24", PEER_IP, peer_mac()),
        lease_input("10.244.7.0/24", NODE_IP, own_mac()),
    ]);
    check(
        &f,
        checks::LEASE,
        Status::Fail,
        &[
            "leased to 10.250.1.2, not to this node, which holds 10.244.7.0/24",
            "stale",
        ],
    );
    // A lease whose PublicIP is no local address at all: NAT, or someone else's.
    f.etcd.reach.as_mut().unwrap().leases =
        Ok(vec![lease_input("10.244.1.0/24", PEER_IP, peer_mac())]);
    check(
        &f,
        checks::LEASE,
        Status::Warn,
        &[
            "not an address of this host",
            "10.250.1.1 (eth0)",
            "--public-ip",
        ],
    );
}

#[test]
fn expired_or_flagged_lease_and_changed_network() {
    let mut f = healthy();
    let leases = &mut f.etcd.reach.as_mut().unwrap().leases;
    leases.as_mut().unwrap()[0].ttl = Ttl::Expired;
    check(&f, checks::LEASE, Status::Fail, &["expired"]);

    let mut f = healthy();
    f.subnet_env = FileText::Text(ENV.replace("10.244.0.0/16", "10.99.0.0/16"));
    check(
        &f,
        checks::LEASE,
        Status::Fail,
        &["FLANNEL_NETWORK 10.99.0.0/16", "Network 10.244.0.0/16"],
    );
}

// 4. flannel.<VNI>

fn with_device(f: &mut Facts, edit: impl FnOnce(&mut LinkInfoView)) {
    let n = f.net.as_mut().unwrap();
    let dev = n.links.iter_mut().find(|l| l.name == "flannel.1").unwrap();
    edit(dev);
}

#[test]
fn missing_device() {
    let mut f = healthy();
    f.net
        .as_mut()
        .unwrap()
        .links
        .retain(|l| l.name != "flannel.1");
    check(
        &f,
        checks::VXLAN_DEVICE,
        Status::Fail,
        &["flannel.1 does not exist", "start weftd"],
    );
    check(&f, checks::PEERS, Status::Skip, &["does not exist"]);
}

/// A change to flannel.1 (see `with_device`).
type DeviceEdit = fn(&mut LinkInfoView);

#[test]
fn device_with_wrong_vni_port_state_or_mac() {
    let cases: [(&str, DeviceEdit, &[&str]); 4] = [
        (
            "VNI",
            |d| d.vxlan.as_mut().unwrap().vni = Some(7),
            &["VNI 7 instead of 1", "ip link del flannel.1"],
        ),
        (
            "port",
            |d| d.vxlan.as_mut().unwrap().port = Some(4789),
            &["UDP port 4789 instead of 8472"],
        ),
        ("down", |d| d.up = false, &["it is down"]),
        (
            "MAC",
            |d| d.mac = Some(mac("0a:00:00:00:00:99")),
            &["MAC 0a:00:00:00:00:99 differs from the VtepMAC 0a:00:00:00:00:01"],
        ),
    ];
    for (what, edit, needles) in cases {
        let mut f = healthy();
        with_device(&mut f, edit);
        let c = find(&f, checks::VXLAN_DEVICE);
        assert_eq!(c.status, Status::Fail, "wrong {what}: {c:#?}");
        expect(&c, Status::Fail, needles);
    }
    // The config's port counts.
    let mut f = healthy();
    with_device(&mut f, |d| d.vxlan.as_mut().unwrap().port = Some(4789));
    set_stored_config(
        &mut f,
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":4789}}"#,
    );
    assert_eq!(find(&f, checks::VXLAN_DEVICE).status, Status::Ok);
}

#[test]
fn device_mtu_against_the_underlay() {
    let mut f = healthy();
    with_device(&mut f, |d| d.mtu = 9001);
    f.subnet_env = FileText::Text(ENV.replace("8951", "9001"));
    check(
        &f,
        checks::VXLAN_DEVICE,
        Status::Fail,
        &["MTU 9001 is more than eth0 MTU 9001 - 50 = 8951"],
    );
    let mut f = healthy();
    with_device(&mut f, |d| d.mtu = 1450);
    f.subnet_env = FileText::Text(ENV.replace("8951", "1450"));
    check(
        &f,
        checks::VXLAN_DEVICE,
        Status::Warn,
        &["MTU 1450 is below 8951 (eth0 MTU 9001 - 50)"],
    );
    // Pods told a bigger MTU than the device carries.
    let mut f = healthy();
    f.subnet_env = FileText::Text(ENV.replace("8951", "9001"));
    check(
        &f,
        checks::VXLAN_DEVICE,
        Status::Fail,
        &["FLANNEL_MTU in /run/flannel/subnet.env is 9001, the device's MTU is 8951"],
    );
    // A config MTU sets the expectation.
    let mut f = healthy();
    set_stored_config(
        &mut f,
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1500}}"#,
    );
    with_device(&mut f, |d| d.mtu = 1450);
    f.subnet_env = FileText::Text(ENV.replace("8951", "1450"));
    assert_eq!(find(&f, checks::VXLAN_DEVICE).status, Status::Ok);
}

// 5. peers

fn set_state(f: &mut Facts, state: KernelState) {
    f.net.as_mut().unwrap().vxlan_state = vec![(3, Ok(state))];
}

#[test]
fn a_missing_peer_route_fails_naming_the_peer() {
    let mut f = healthy();
    let mut state = peer_state();
    state.routes.clear();
    set_state(&mut f, state);
    check(
        &f,
        checks::PEERS,
        Status::Fail,
        &[
            "1 of 1 peer not programmed on flannel.1",
            "10.244.2.0/24 (node 10.250.1.2): route missing or wrong",
            "ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
            "restart weftd",
        ],
    );
    set_state(&mut f, KernelState::default());
    check(
        &f,
        checks::PEERS,
        Status::Fail,
        &[
            "neighbour, fdb, route missing or wrong",
            "ip neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 nud permanent",
            "bridge fdb replace 0a:00:00:00:00:02 dev flannel.1 dst 10.250.1.2 self permanent",
        ],
    );
}

#[test]
fn stale_and_refused_peers_warn() {
    let mut f = healthy();
    let mut state = peer_state();
    state.routes.push(vxlan_route("10.244.9.0/24"));
    set_state(&mut f, state);
    check(
        &f,
        checks::PEERS,
        Status::Warn,
        &["stale entries: `ip route del 10.244.9.0/24 via 10.244.9.0 dev flannel.1`"],
    );
    // A lease outside the Network is refused.
    let mut f = healthy();
    f.etcd
        .reach
        .as_mut()
        .unwrap()
        .leases
        .as_mut()
        .unwrap()
        .push(lease_input(
            "10.99.3.0/24",
            Ipv4Addr::new(10, 250, 1, 3),
            mac("0a:00:00:00:00:03"),
        ));
    check(
        &f,
        checks::PEERS,
        Status::Warn,
        &["refuses to program", "outside Network"],
    );
    // No peer at all.
    let mut f = healthy();
    f.etcd.reach.as_mut().unwrap().leases =
        Ok(vec![lease_input("10.244.1.0/24", NODE_IP, own_mac())]);
    set_state(&mut f, KernelState::default());
    check(&f, checks::PEERS, Status::Ok, &["no other node"]);
}

const NFT_CONFIG: &str =
    r#"{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}"#;
const HOSTGW_CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;
const DIRECT_CONFIG: &str =
    r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#;

/// A host-gw lease as flanneld writes it (no BackendData).
fn hostgw_lease_input(subnet: &str, ip: Ipv4Addr) -> LeaseInput {
    LeaseInput {
        value: LeaseAttrs::host_gw(ip).to_json().into_bytes(),
        ..lease_input(subnet, ip, own_mac())
    }
}

/// `<subnet> via <PublicIP> dev eth0`: a direct route.
/// The route weftd programs through flannel.1 to a peer's subnet: via the subnet's address,
/// onlink.
fn vxlan_route(subnet: &str) -> RouteEntry {
    let dst = net(subnet);
    RouteEntry {
        dst,
        gw: Some(dst.network()),
        onlink: true,
        underlay: false,
    }
}

fn direct_route(subnet: &str, gw: Ipv4Addr) -> RouteEntry {
    RouteEntry {
        dst: net(subnet),
        gw: Some(gw),
        onlink: false,
        underlay: true,
    }
}

fn set_leases(f: &mut Facts, leases: Vec<LeaseInput>) {
    f.etcd.reach.as_mut().unwrap().leases = Ok(leases);
}

fn set_underlay(f: &mut Facts, state: Result<KernelState, String>) {
    f.net.as_mut().unwrap().underlay_state = vec![(2, state)];
}

fn routes(routes: Vec<RouteEntry>) -> KernelState {
    KernelState {
        routes,
        ..KernelState::default()
    }
}

/// A host-gw node: its peers are routes via their PublicIPs on eth0 (the link of its own
/// lease's PublicIP), nothing on a VXLAN device.
fn hostgw_node() -> Facts {
    let mut f = healthy();
    set_stored_config(&mut f, HOSTGW_CONFIG);
    set_leases(
        &mut f,
        vec![
            hostgw_lease_input("10.244.1.0/24", NODE_IP),
            hostgw_lease_input("10.244.2.0/24", PEER_IP),
        ],
    );
    f.net.as_mut().unwrap().vxlan_state.clear();
    set_underlay(
        &mut f,
        Ok(routes(vec![
            direct_route("10.244.2.0/24", PEER_IP),
            // Not weft's: the default route, and a route outside the Network.
            direct_route("0.0.0.0/0", Ipv4Addr::new(10, 250, 1, 254)),
            direct_route("10.99.0.0/16", Ipv4Addr::new(10, 250, 1, 254)),
        ])),
    );
    f
}

#[test]
fn a_host_gw_node_is_checked_by_its_routes_via_the_peers_public_ips() {
    let f = hostgw_node();
    for id in [checks::NETWORK_CONFIG, checks::LEASE] {
        check(&f, id, Status::Ok, &[]);
    }
    check(
        &f,
        checks::PEERS,
        Status::Ok,
        &[
            "1 peer programmed on eth0 (a route via its PublicIP each): 10.244.2.0/24 via 10.250.1.2",
        ],
    );

    let mut f = hostgw_node();
    set_underlay(&mut f, Ok(KernelState::default()));
    check(
        &f,
        checks::PEERS,
        Status::Fail,
        &[
            "1 of 1 peer not programmed on eth0: 10.244.2.0/24 (node 10.250.1.2): direct route missing or wrong",
            "each peer (host-gw) needs a route to its subnet via its PublicIP on eth0",
            "`ip route replace 10.244.2.0/24 via 10.250.1.2 dev eth0`",
        ],
    );

    // A route left by a node that is gone, and a peer off this node's link.
    let mut f = hostgw_node();
    set_underlay(
        &mut f,
        Ok(routes(vec![
            direct_route("10.244.2.0/24", PEER_IP),
            direct_route("10.244.9.0/24", Ipv4Addr::new(10, 250, 1, 9)),
        ])),
    );
    f.etcd
        .reach
        .as_mut()
        .unwrap()
        .leases
        .as_mut()
        .unwrap()
        .push(hostgw_lease_input(
            "10.244.3.0/24",
            Ipv4Addr::new(10, 251, 0, 3),
        ));
    check(
        &f,
        checks::PEERS,
        Status::Warn,
        &[
            "1 peer programmed on eth0",
            "stale entries: `ip route del 10.244.9.0/24 via 10.250.1.9 dev eth0`",
            "refuses to program",
            "PublicIP 10.251.0.3 is not on this node's link (eth0 has 10.250.1.0/24)",
        ],
    );

    let mut f = hostgw_node();
    set_underlay(&mut f, Err("permission denied".into()));
    check(
        &f,
        checks::PEERS,
        Status::Warn,
        &["cannot read the routes of eth0: permission denied"],
    );
    let mut f = hostgw_node();
    f.subnet_env = FileText::Missing;
    check(
        &f,
        checks::PEERS,
        Status::Skip,
        &["this node's lease is not known"],
    );
}

#[test]
fn direct_routing_takes_peers_on_the_link_by_a_route_and_the_others_through_vxlan() {
    let far = Ipv4Addr::new(10, 251, 0, 3);
    let far_mac = mac("0a:00:00:00:00:03");
    let mut f = healthy();
    set_stored_config(&mut f, DIRECT_CONFIG);
    let mut leases = f.etcd.reach.as_ref().unwrap().leases.clone().unwrap();
    leases.push(lease_input("10.244.3.0/24", far, far_mac));
    set_leases(&mut f, leases);
    // What weftd programs: the peer on eth0's network by a direct route, the far one on
    // flannel.1.
    let device = KernelState {
        neighs: vec![NeighEntry {
            ip: Ipv4Addr::new(10, 244, 3, 0),
            mac: far_mac,
        }],
        fdb: vec![FdbEntry {
            mac: far_mac,
            dst: far,
        }],
        routes: vec![vxlan_route("10.244.3.0/24")],
    };
    set_state(&mut f, device);
    set_underlay(
        &mut f,
        Ok(routes(vec![direct_route("10.244.2.0/24", PEER_IP)])),
    );
    check(
        &f,
        checks::PEERS,
        Status::Ok,
        &[
            "2 peers programmed on flannel.1 and eth0",
            "10.244.2.0/24 via 10.250.1.2 (direct), 10.244.3.0/24 via 10.251.0.3",
        ],
    );
    check(&f, checks::VXLAN_DEVICE, Status::Ok, &[]);

    // The kernel as without DirectRouting: the near peer on flannel.1, no direct route.
    set_state(&mut f, peer_state());
    set_underlay(&mut f, Ok(KernelState::default()));
    check(
        &f,
        checks::PEERS,
        Status::Fail,
        &[
            "10.244.2.0/24 (node 10.250.1.2): direct route missing or wrong",
            "10.244.3.0/24 (node 10.251.0.3): neighbour, fdb, route missing or wrong",
            "`ip route replace 10.244.2.0/24 via 10.250.1.2 dev eth0`",
            "a peer on eth0's network (DirectRouting) needs a route to its subnet via its PublicIP on eth0",
        ],
    );
}

// 6. masquerade

#[test]
fn iptables_backend_of_weft_against_the_hosts() {
    let mut f = healthy();
    check(
        &f,
        checks::IPTABLES_BACKEND,
        Status::Ok,
        &[
            "weft's chains are in iptables-nft, the host's backend",
            "KUBE-IPTABLES-HINT",
        ],
    );
    // AL2: kubelet and kube-proxy on legacy, weftd wrote nft (e.g. --iptables-backend=nft).
    f.iptables_backends = Some(BackendDumps {
        legacy: KUBELET_HINT.into(),
        nft: nat_table(true),
    });
    check(
        &f,
        checks::IPTABLES_BACKEND,
        Status::Fail,
        &[
            "weft's chains are in iptables-nft, but the host's rules are in iptables-legacy",
            "two separate rule sets",
            "--iptables-backend=auto (the default) or --iptables-backend=legacy",
            "iptables-nft -t nat -F FLANNEL-POSTRTG",
        ],
    );
    // Both: a stale copy in the other backend.
    f.iptables_backends = Some(BackendDumps {
        legacy: format!("{KUBELET_HINT}{}", nat_table(true)),
        nft: nat_table(true),
    });
    check(
        &f,
        checks::IPTABLES_BACKEND,
        Status::Warn,
        &["in both backends", "iptables-nft -t nat -X FLANNEL-POSTRTG"],
    );
    // No kubelet, no rules anywhere yet.
    f.iptables_backends = Some(BackendDumps {
        legacy: String::new(),
        nft: String::new(),
    });
    check(
        &f,
        checks::IPTABLES_BACKEND,
        Status::Ok,
        &["weft's chains are in neither backend yet"],
    );
    // Without kubelet's hint, the backend with weft's (and any other) rules is the host's.
    f.iptables_backends = Some(BackendDumps {
        legacy: nat_table(true),
        nft: String::new(),
    });
    check(
        &f,
        checks::IPTABLES_BACKEND,
        Status::Ok,
        &["iptables-legacy, the host's backend"],
    );
    f.iptables_backends = None;
    check(
        &f,
        checks::IPTABLES_BACKEND,
        Status::Skip,
        &["neither iptables-legacy-save nor iptables-nft-save"],
    );
}

#[test]
fn masquerade_rules() {
    let mut f = healthy();
    f.iptables_nat = Ok(nat_table(false));
    assert_eq!(find(&f, checks::MASQUERADE).status, Status::Ok);
    f.iptables_nat = Ok(nat_table(true)
        .lines()
        .filter(|l| !l.contains("MASQUERADE"))
        .map(|l| format!("{l}\n"))
        .collect());
    check(
        &f,
        checks::MASQUERADE,
        Status::Fail,
        &[
            "2 rules missing",
            "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE",
            "iptables-restore --noflush",
            "--ip-masq",
        ],
    );
    f.iptables_nat = Ok("*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n".into());
    check(&f, checks::MASQUERADE, Status::Fail, &["7 rules missing"]);
    f.iptables_nat = Err("cannot run iptables-save: No such file".into());
    check(
        &f,
        checks::MASQUERADE,
        Status::Warn,
        &["cannot read the nat table"],
    );
}

/// `nft list table ip flannel-ipv4` as nft 1.0.6 prints the table weftd writes for this
/// node (the layout crates/weftd/tests/nftables.rs checks against the kernel).
fn nft_listing(fully_random: bool) -> String {
    let mut out = String::from(
        "table ip flannel-ipv4 { # handle 9\n\tcomment \"rules for flannel-ipv4\"\n\tchain forward { # handle 1\n\t\tcomment \"chain to accept flannel traffic\"\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tip saddr 10.244.0.0/16 accept # handle 3\n\t\tip daddr 10.244.0.0/16 accept # handle 4\n\t}\n\n\tchain postrtg { # handle 2\n\t\tcomment \"chain to manage traffic masquerading by flannel\"\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n",
    );
    for (i, r) in
        weft_core::nft::listed_masq_rules(net("10.244.0.0/16"), net("10.244.1.0/24"), fully_random)
            .iter()
            .enumerate()
    {
        out.push_str(&format!("\t\t{r} # handle {}\n", i + 5));
    }
    out.push_str("\t}\n}\n");
    out
}

#[test]
fn nftables_mode_checks_the_table_and_no_iptables_chains() {
    let mut f = healthy();
    set_stored_config(&mut f, NFT_CONFIG);
    f.iptables_nat = Ok("*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n".into());
    f.iptables_backends = Some(BackendDumps {
        legacy: String::new(),
        nft: KUBELET_HINT.into(),
    });
    for fully_random in [true, false] {
        f.nft_table = Ok(Some(nft_listing(fully_random)));
        check(
            &f,
            checks::MASQUERADE,
            Status::Ok,
            &[
                "table ip flannel-ipv4, chain postrtg holds weftd's 6 rules for Network 10.244.0.0/16, subnet 10.244.1.0/24",
            ],
        );
    }
    check(
        &f,
        checks::IPTABLES_BACKEND,
        Status::Ok,
        &["nftables mode", "neither iptables backend holds"],
    );
    assert_eq!(find(&f, checks::NETWORK_CONFIG).status, Status::Ok);
    // A rule deleted by hand.
    f.nft_table = Ok(Some(
        nft_listing(true)
            .lines()
            .filter(|l| !l.contains("daddr != 224.0.0.0/4"))
            .map(|l| format!("{l}\n"))
            .collect(),
    ));
    check(
        &f,
        checks::MASQUERADE,
        Status::Fail,
        &[
            "chain postrtg: 1 rule missing: ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
            "nft -f - <<'EOF'",
            "add rule ip flannel-ipv4 postrtg ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return",
        ],
    );
    // The table deleted.
    f.nft_table = Ok(None);
    check(
        &f,
        checks::MASQUERADE,
        Status::Fail,
        &["there is no nftables table ip flannel-ipv4", "--ip-masq"],
    );
    f.nft_table = Err("cannot run nft: No such file or directory (install nftables)".into());
    check(
        &f,
        checks::MASQUERADE,
        Status::Warn,
        &["cannot list the nftables table", "install nftables"],
    );
    // The iptables mode's chains left behind beside the table.
    f.nft_table = Ok(Some(nft_listing(true)));
    f.iptables_backends = Some(BackendDumps {
        legacy: nat_table(true),
        nft: KUBELET_HINT.into(),
    });
    check(
        &f,
        checks::IPTABLES_BACKEND,
        Status::Warn,
        &[
            "EnableNFTables is set, but the iptables mode's chains (FLANNEL-POSTRTG, FLANNEL-FWD) are in iptables-legacy",
            "iptables-legacy -t nat -X FLANNEL-POSTRTG",
        ],
    );
    // And the other way round: iptables mode with the nftables table left behind.
    let mut f = healthy();
    f.nft_table = Ok(Some(nft_listing(true)));
    check(
        &f,
        checks::IPTABLES_BACKEND,
        Status::Warn,
        &[
            "EnableNFTables is false, but the nftables table ip flannel-ipv4",
            "nft delete table ip flannel-ipv4",
        ],
    );
    assert_eq!(find(&f, checks::MASQUERADE).status, Status::Ok);
}

#[test]
fn no_ip_masq_warns() {
    let mut f = healthy();
    f.subnet_env = FileText::Text(ENV.replace("FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=false"));
    f.flannel_args = Some(Ok(format!("--etcd-endpoints={ENDPOINT}")));
    check(
        &f,
        checks::MASQUERADE,
        Status::Warn,
        &[
            "FLANNEL_IPMASQ=false",
            "without --ip-masq",
            "no --ip-masq",
            "run weftd with --ip-masq",
        ],
    );
}

// 7. sysctls

#[test]
fn ip_forward_and_br_netfilter() {
    let mut f = healthy();
    f.ip_forward = FileText::Text("0\n".into());
    check(
        &f,
        checks::IP_FORWARD,
        Status::Fail,
        &["net.ipv4.ip_forward = 0", "sysctl -w net.ipv4.ip_forward=1"],
    );
    f.bridge_nf_call_iptables = FileText::Missing;
    check(
        &f,
        checks::BR_NETFILTER,
        Status::Warn,
        &[
            "not loaded",
            "Failed to check br_netfilter",
            "modprobe br_netfilter",
        ],
    );
    f.bridge_nf_call_iptables = FileText::Text("0\n".into());
    check(
        &f,
        checks::BR_NETFILTER,
        Status::Warn,
        &[
            "bridge-nf-call-iptables = 0",
            "sysctl -w net.bridge.bridge-nf-call-iptables=1",
        ],
    );
    set_stored_config(&mut f, NFT_CONFIG);
    assert_eq!(find(&f, checks::BR_NETFILTER).status, Status::Skip);
}

// 8. CNI config and VPC CNI leftovers

#[test]
fn aws_conflist_first_is_e4_with_both_error_forms() {
    let mut f = healthy();
    f.cni.conf_dir = listing(
        "/etc/cni/net.d",
        vec![
            file("10-aws.conflist", Some(AWS_CONFLIST)),
            file("10-flannel.conflist", Some(&flannel_conflist())),
        ],
    );
    let c = find(&f, checks::CNI_CONFIG);
    expect(
        &c,
        Status::Fail,
        &[
            "10-aws.conflist (plugin aws-cni)",
            "E4",
            "dial tcp 127.0.0.1:50051: connect: connection refused",
            "/var/run/aws-node/ipamd.sock",
            "v1.23",
            "weft node cleanup-vpc-cni --apply",
            "does not need to be replaced",
        ],
    );
    // Another network name but aws-cni's type counts too.
    f.cni.conf_dir = listing(
        "/etc/cni/net.d",
        vec![file("05-vpc.conflist", Some(AWS_CONFLIST))],
    );
    check(
        &f,
        checks::CNI_CONFIG,
        Status::Fail,
        &["AWS VPC CNI's 05-vpc.conflist"],
    );
}

#[test]
fn other_cni_configs() {
    let mut f = healthy();
    f.cni.conf_dir = listing(
        "/etc/cni/net.d",
        vec![
            file(
                "05-cilium.conflist",
                Some(r#"{"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni"}]}"#),
            ),
            file("10-flannel.conflist", Some(&flannel_conflist())),
            file("README", None),
        ],
    );
    check(
        &f,
        checks::CNI_CONFIG,
        Status::Fail,
        &[
            "05-cilium.conflist (plugin cilium-cni)",
            "/etc/cni/net.d/05-cilium.conflist",
        ],
    );
    f.cni.conf_dir = listing("/etc/cni/net.d", vec![file("README", None)]);
    check(
        &f,
        checks::CNI_CONFIG,
        Status::Fail,
        &["holds no network config", "weft install-cni"],
    );
    let mut f = healthy();
    f.cni.bin_dir = bin_dir(&["bridge", "host-local", "loopback", "portmap"]);
    check(
        &f,
        checks::CNI_CONFIG,
        Status::Fail,
        &[
            "no `flannel` plugin",
            "weft install-cni --bin-dir /opt/cni/bin",
        ],
    );
    f.cni.bin_dir = bin_dir(&["flannel", "loopback"]);
    check(
        &f,
        checks::CNI_CONFIG,
        Status::Warn,
        &["misses bridge, host-local, portmap"],
    );
}

fn step(area: Area, what: &str) -> Step {
    Step {
        area,
        what: what.into(),
        why: String::new(),
        actions: Vec::new(),
        chained: false,
    }
}

#[test]
fn vpc_cni_leftovers_warn_with_the_cleanup_command() {
    let mut f = healthy();
    f.cni.leftovers = Plan {
        steps: vec![
            step(
                Area::Iptables,
                "iptables-nft table nat: flush and delete AWS-SNAT-CHAIN-0",
            ),
            step(
                Area::IpRule,
                "delete ip rule 1024: fwmark 0x80/0x80 lookup main",
            ),
            step(
                Area::CniBinary,
                "remove aws-cni, egress-cni from /opt/cni/bin",
            ),
        ],
        ..Plan::default()
    };
    check(
        &f,
        checks::VPC_CNI_LEFTOVERS,
        Status::Warn,
        &[
            "[iptables] iptables-nft table nat: flush and delete AWS-SNAT-CHAIN-0",
            "[ip-rule]",
            "[cni-binary] remove aws-cni",
            "weft node cleanup-vpc-cni --apply",
            "no node replacement",
        ],
    );
    f.cni.leftovers = Plan {
        blocker: Some("ipamd is still running on this node".into()),
        ..Plan::default()
    };
    check(
        &f,
        checks::VPC_CNI_LEFTOVERS,
        Status::Warn,
        &["ipamd is still running"],
    );
}

// 9. max pods (E5)

fn kubelet(f: &mut Facts, text: &str) {
    f.kubelet.main = Some((
        PathBuf::from("/etc/kubernetes/kubelet/config.json"),
        Ok(text.into()),
    ));
}

#[test]
fn eni_derived_max_pods_is_e5_with_every_ami_setting() {
    let mut f = healthy();
    kubelet(&mut f, r#"{"kind":"KubeletConfiguration","maxPods":29}"#);
    check(
        &f,
        checks::MAX_PODS,
        Status::Warn,
        &[
            "maxPods 29 in /etc/kubernetes/kubelet/config.json",
            "m5.large",
            "3 ENIs x (10 - 1) + 2",
            "a /24 node subnet gives host-local 253 pod addresses",
            "E5",
            "Too many pods",
            "set max pods to 110",
            "--use-max-pods false --kubelet-extra-args '--max-pods=110'",
            "spec.kubelet.config.maxPods: 110",
            "maxPodsExpression",
            "settings.kubernetes.max-pods = 110",
            "apiclient set kubernetes.max-pods=110",
        ],
    );
    // Low but not from the ENI table: still a warning, without E5's story.
    kubelet(&mut f, "maxPods: 50\n");
    let c = find(&f, checks::MAX_PODS);
    expect(
        &c,
        Status::Warn,
        &["maxPods 50", "fewer than the overlay allows"],
    );
    assert!(!c.cause.contains("E5"));
}

#[test]
fn max_pods_above_the_subnet_fails_and_defaults_pass() {
    let mut f = healthy();
    kubelet(&mut f, r#"{"maxPods":300}"#);
    check(
        &f,
        checks::MAX_PODS,
        Status::Fail,
        &[
            "maxPods 300",
            "253 pod addresses",
            "no IP addresses available",
            "set max pods to 110",
        ],
    );
    // A /25 subnet holds 125: 110 fits, 126 does not.
    f.subnet_env = FileText::Text(ENV.replace("10.244.1.1/24", "10.244.1.1/25"));
    kubelet(&mut f, r#"{"maxPods":110}"#);
    assert_eq!(find(&f, checks::MAX_PODS).status, Status::Ok);
    kubelet(&mut f, r#"{"maxPods":126}"#);
    check(
        &f,
        checks::MAX_PODS,
        Status::Fail,
        &["/25", "125 pod addresses"],
    );
    // An ENI value above 110 that fits the subnet: not limiting, still the AMI's ENI setting.
    f.subnet_env = FileText::Text(ENV.into());
    kubelet(&mut f, r#"{"maxPods":234}"#);
    check(
        &f,
        checks::MAX_PODS,
        Status::Warn,
        &[
            "m5.4xlarge",
            "does not limit this node today",
            "set max pods to 234",
        ],
    );
    // No maxPods: kubelet's default.
    let mut f = healthy();
    kubelet(
        &mut f,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n",
    );
    check(&f, checks::MAX_PODS, Status::Ok, &["default 110"]);
}

#[test]
fn max_pods_drop_ins_win_and_inputs_can_be_missing() {
    let mut f = healthy();
    kubelet(&mut f, r#"{"maxPods":29}"#);
    f.kubelet.dropins = vec![(
        PathBuf::from("/etc/kubernetes/kubelet/config.json.d/40-nodeadm.conf"),
        Ok(r#"{"maxPods":110}"#.into()),
    )];
    check(&f, checks::MAX_PODS, Status::Ok, &["40-nodeadm.conf"]);
    f.kubelet.main = None;
    check(&f, checks::MAX_PODS, Status::Skip, &["--kubelet-config"]);
    kubelet(&mut f, r#"{"maxPods":"lots"}"#);
    check(&f, checks::MAX_PODS, Status::Warn, &["not a pod count"]);
}

// 10. E1

#[test]
fn kube_subnet_mgr_without_pod_cidrs_is_e1() {
    let mut f = healthy();
    f.flannel_args = Some(Ok("--ip-masq --kube-subnet-mgr --healthz-port=8081".into()));
    f.nodes = Some(Ok(vec![
        node("ip-10-0-1-10.ec2.internal", None),
        node("ip-10-0-1-11.ec2.internal", None),
    ]));
    check(
        &f,
        checks::KUBE_SUBNET_MGR,
        Status::Fail,
        &[
            "node pod cidr not assigned",
            "2 of 2 nodes have no spec.podCIDR: ip-10-0-1-10.ec2.internal",
            "E1",
            "Error registering network: failed to acquire lease: node \"ip-10-0-1-10.ec2.internal\" pod cidr not assigned",
            "EKS never assigns podCIDRs",
            "etcd mode",
            "--etcd-endpoints",
        ],
    );
    f.nodes = Some(Ok(vec![node("a", Some("10.244.1.0/24"))]));
    check(
        &f,
        checks::KUBE_SUBNET_MGR,
        Status::Warn,
        &["has a spec.podCIDR"],
    );
    f.nodes = None;
    check(
        &f,
        checks::KUBE_SUBNET_MGR,
        Status::Warn,
        &["--nodes-json", "E1"],
    );
    f.flannel_args = Some(Ok(
        "--kube-subnet-mgr=false --etcd-endpoints=http://e:2379".into()
    ));
    check(
        &f,
        checks::KUBE_SUBNET_MGR,
        Status::Ok,
        &["etcd mode (--etcd-endpoints=http://e:2379)"],
    );
    f.flannel_args = None;
    check(
        &f,
        checks::KUBE_SUBNET_MGR,
        Status::Skip,
        &["--flannel-args"],
    );
}

// 11. weftd health

#[test]
fn weftd_health() {
    let mut f = healthy();
    let h = f.health.as_mut().unwrap();
    h.readyz = Ok((
        503,
        "weftd is not ready yet: waiting for /coreos.com/network/config\n".into(),
    ));
    check(
        &f,
        checks::WEFTD_HEALTH,
        Status::Warn,
        &["answers 503: weftd is not ready yet: waiting for /coreos.com/network/config"],
    );
    let h = f.health.as_mut().unwrap();
    h.readyz = Err("cannot connect to 127.0.0.1:8081: Connection refused".into());
    check(
        &f,
        checks::WEFTD_HEALTH,
        Status::Warn,
        &["no answer", "Connection refused"],
    );
    let h = f.health.as_mut().unwrap();
    h.readyz = Ok((200, "weftd is ready\n".into()));
    h.metrics = Ok((
        200,
        "weft_peers_known 3\nweft_peers_programmed 2\nweft_errors_total{kind=\"netlink\"} 4\n"
            .into(),
    ));
    check(
        &f,
        checks::WEFTD_HEALTH,
        Status::Warn,
        &["only 2 of 3 peers are programmed", "netlink=4"],
    );
    f.health = None;
    check(&f, checks::WEFTD_HEALTH, Status::Skip, &["--healthz"]);
}

// Parsers and rendering

#[test]
fn flannel_args_forms() {
    let on = |t: &str| parse::flannel_args(t).kube_subnet_mgr;
    assert!(on("--kube-subnet-mgr"));
    assert!(on("-kube-subnet-mgr"));
    assert!(on("- --ip-masq\n- --kube-subnet-mgr\n"));
    assert!(on(r#"["--ip-masq","--kube-subnet-mgr"]"#));
    assert!(on("--kube-subnet-mgr=true"));
    assert!(on("FLANNELD_KUBE_SUBNET_MGR=1"));
    assert!(!on("--kube-subnet-mgr=false"));
    assert!(!on("--kube-subnet-mgr false"));
    assert!(!on("--kube-subnet-mgr --kube-subnet-mgr=0"));
    assert!(!on("--ip-masq --etcd-endpoints=http://a:2379"));
    let a = parse::flannel_args(r#"["--ip-masq","--etcd-endpoints=http://a:2379,http://b:2379"]"#);
    assert!(a.ip_masq);
    assert_eq!(
        a.etcd_endpoints.as_deref(),
        Some("http://a:2379,http://b:2379")
    );
    assert!(!parse::flannel_args("--ip-masq=false").ip_masq);
}

#[test]
fn kubelet_max_pods_json_and_yaml() {
    assert_eq!(parse::max_pods(r#"{"maxPods": 29}"#), Ok(Some(29)));
    assert_eq!(
        parse::max_pods(r#"{"kind":"KubeletConfiguration"}"#),
        Ok(None)
    );
    assert_eq!(
        parse::max_pods("kind: KubeletConfiguration\nmaxPods: 35 # ENI\n"),
        Ok(Some(35))
    );
    assert_eq!(parse::max_pods("maxPods: \"17\"\n"), Ok(Some(17)));
    assert_eq!(parse::max_pods("foo:\n  maxPods: 3\n"), Ok(None));
    assert_eq!(parse::max_pods(""), Ok(None));
    assert!(parse::max_pods("{").unwrap_err().contains("not valid JSON"));
    assert!(parse::max_pods(r#"{"maxPods":-1}"#).is_err());
}

#[test]
fn metrics_text() {
    let m = parse::metrics(
        "# HELP weft_ready x\n# TYPE weft_ready gauge\nweft_ready 1\nweft_peers_known 2\nweft_peers_programmed 2\nweft_errors_total{kind=\"etcd\"} 3\nweft_errors_total{kind=\"lease\"} 0\n",
    );
    assert_eq!(m.ready, Some(1.0));
    assert_eq!(m.peers_known, Some(2.0));
    assert_eq!(m.errors, vec![("etcd".to_string(), 3.0)]);
}

#[test]
fn wrapping_keeps_commands_whole() {
    let line = format!(
        "{} `weft node cleanup-vpc-cni --apply` then more words here",
        "word ".repeat(10)
    );
    let lines = render::wrap(&line, 60);
    assert!(
        lines.iter().all(|l| l.matches('`').count() % 2 == 0),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("`weft node cleanup-vpc-cni --apply`"))
    );
    assert_eq!(lines.join(" "), line);
    assert_eq!(render::wrap("short", 60), vec!["short"]);
}

#[test]
fn renders_text_and_json() {
    let mut f = healthy();
    f.ip_forward = FileText::Text("0\n".into());
    let findings = run_all(&f);
    let text = render::text(&findings);
    assert!(text.starts_with("CHECK"), "{text}");
    assert!(
        text.contains("ip-forward         FAIL    net.ipv4.ip_forward = 0"),
        "{text}"
    );
    assert!(text.contains("cause: the kernel drops"), "{text}");
    assert!(
        text.contains("fix:   `sysctl -w net.ipv4.ip_forward=1`"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("FAIL: 13 OK, 0 WARN, 1 FAIL, 0 SKIP"),
        "{text}"
    );
    let doc = render::json(&findings);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["summary"]["fail"], 1);
    let ipf = &doc["checks"][7];
    assert_eq!(ipf["check"], "ip-forward");
    assert_eq!(ipf["status"], "FAIL");
    for k in ["detail", "cause", "fix"] {
        assert!(ipf[k].as_str().is_some_and(|s| !s.is_empty()), "{k}");
    }
}

/// The text report of a node with three problems (E4, E5 and a missing peer route), kept as
/// a golden file so a change of wording or layout is a readable diff (`UPDATE_EXPECT=1`
/// rewrites it).
#[test]
fn golden_text_report() {
    let mut f = healthy();
    f.cni.conf_dir = listing(
        "/etc/cni/net.d",
        vec![
            file("10-aws.conflist", Some(AWS_CONFLIST)),
            file("10-flannel.conflist", Some(&flannel_conflist())),
        ],
    );
    let mut state = peer_state();
    state.routes.clear();
    set_state(&mut f, state);
    kubelet(&mut f, r#"{"maxPods":29}"#);
    let text = render::text(&run_all(&f));
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/doctor/report-e4-e5-peer.txt");
    expect_test::expect_file![path].assert_eq(&text);
}
