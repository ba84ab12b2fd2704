//! weft-net's IPv6 VXLAN data plane on a real kernel (root only), as flannel programs
//! `flannel-v6.<VNI>`: the device with an IPv6 local address (accept_ra off), its `/128`
//! address with every other global address removed, permanent neighbours, `self` FDB entries
//! with IPv6 destinations and on-link routes, read back as `ip -6 neigh`, `bridge fdb` and
//! `ip -6 route` show them; replaced and deleted; an IPv4 device beside it whose entries never
//! mix with the IPv6 ones; the monitor reporting an IPv6 route deleted by hand; a compatible
//! device kept with its MAC, an incompatible one re-created; the IPv6 interface helpers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use weft_core::dataplane::{KernelState, Observed, Owned, desired_state, diff};
use weft_core::family::PodNet;
use weft_core::mac::MacAddr;
use weft_core::peer::Peer;
use weft_net::netlink::{ChangeMonitor, KernelChange};
use weft_net::{Netlink, VxlanSpec};
use weft_testbed::{Testbed, TestbedConfig, Underlay};

/// A VNI of this test process alone, so device names never meet another run's.
fn vni() -> u32 {
    1000 + std::process::id() % 8000
}

fn v6(t: &str) -> Ipv6Addr {
    t.parse().unwrap()
}

/// `ip`/`bridge` with `args` inside the namespace `ns`; its stdout, or a panic with stderr.
fn run(ns: &str, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// IPv6 peer `k`: subnet fc00:0:0:k::/64, PublicIP fd00:250::k (on eth0's link).
fn peer6(k: u16, mac_last: u8) -> Peer<Ipv6Net> {
    Peer {
        subnet: format!("fc00:0:0:{k:x}::/64").parse().unwrap(),
        public_ip: Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, k),
        vtep_mac: MacAddr([0x0e, 0, 0, 0, 6, mac_last]),
        direct: false,
    }
}

/// IPv4 peer `k`: subnet 10.244.k.0/24, PublicIP 10.250.1.k.
fn peer4(k: u8) -> Peer<Ipv4Net> {
    Peer {
        subnet: format!("10.244.{k}.0/24").parse().unwrap(),
        public_ip: Ipv4Addr::new(10, 250, 1, k),
        vtep_mac: MacAddr([0x0e, 0, 0, 0, 4, k]),
        direct: false,
    }
}

fn sorted<N: PodNet>(mut s: KernelState<N>) -> KernelState<N> {
    s.neighs.sort();
    s.fdb.sort();
    s.routes.sort();
    s
}

/// Applies what takes the kernel from what `owned` holds to `peers`; panics on a failed op.
async fn converge<N: PodNet>(nl: &Netlink, owned: &Owned<N>, peers: &[Peer<N>]) {
    let actual = nl.read_owned(owned).await.unwrap();
    let ops = diff(peers, &actual);
    for (op, result) in ops.iter().zip(nl.apply(owned, &ops).await) {
        assert!(result.is_none(), "{op:?}: {result:?}");
    }
}

fn spec(name: &str, local: IpAddr, underlay_index: u32, mac: MacAddr) -> VxlanSpec {
    VxlanSpec {
        name: name.into(),
        vni: vni(),
        port: 0,
        local,
        underlay_index,
        mtu: 1400,
        learning: false,
        gbp: false,
        mac,
    }
}

/// Runs `f` with a netlink connection inside `ns`, on a runtime of its own.
fn in_ns<R, F>(ns: &str, f: impl FnOnce(Netlink) -> F + Send + 'static) -> R
where
    R: Send + 'static,
    F: std::future::Future<Output = R>,
{
    weft_testbed::in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move { f(Netlink::connect().unwrap()).await })
    })
    .unwrap()
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn the_ipv6_data_plane_is_programmed_read_back_and_kept_apart_from_the_ipv4_one() {
    weft_testbed::require_root().unwrap();
    let cfg = TestbedConfig {
        etcd: false,
        ..TestbedConfig::with_nodes(1)
    };
    let tb = Testbed::new_with_underlay("nlv6", cfg, Underlay::DUAL_STACK).unwrap();
    let ns = tb.node(0).ns.clone();
    let local6 = tb.node(0).ip6.expect("a dual-stack node");
    assert_eq!(local6, v6("fd00:250::1"));
    let dev6 = format!("flannel-v6.{}", vni());
    let dev4 = format!("flannel.{}", vni());
    let mac6 = MacAddr([0x0e, 0x66, 0, 0, 0, 1]);
    let mac4 = MacAddr([0x0e, 0x44, 0, 0, 0, 1]);
    // A default route for the IPv6 helpers to find (fd00:250::fe is on eth0's link).
    run(
        &ns,
        "ip",
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:250::fe",
            "dev",
            "eth0",
        ],
    );

    // 1. Both devices; the IPv6 one with IFLA_VXLAN_LOCAL6 and accept_ra off.
    let (d6, d4, eth0, accept_ra) = {
        let (dev6, dev4) = (dev6.clone(), dev4.clone());
        in_ns(&ns, move |nl| async move {
            let eth0 = nl.link_by_name("eth0").await.unwrap().unwrap().index;
            let d6 = nl
                .ensure_vxlan(&spec(&dev6, local6.into(), eth0, mac6))
                .await
                .unwrap();
            let d4 = nl
                .ensure_vxlan(&spec(
                    &dev4,
                    Ipv4Addr::new(10, 250, 1, 1).into(),
                    eth0,
                    mac4,
                ))
                .await
                .unwrap();
            let accept_ra =
                std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{dev6}/accept_ra"))
                    .unwrap();
            (d6, d4, eth0, accept_ra)
        })
    };
    assert!(d6.created && d4.created);
    assert_eq!((d6.mac, d4.mac), (mac6, mac4));
    assert_eq!(
        accept_ra.trim(),
        "0",
        "flannel turns off accept_ra on its IPv6 device"
    );
    let details = run(&ns, "ip", &["-d", "link", "show", &dev6]);
    assert!(
        details.contains(&format!("vxlan id {}", vni())),
        "{details}"
    );
    assert!(details.contains("local fd00:250::1"), "{details}");
    assert!(details.contains("dev eth0"), "{details}");
    assert!(details.contains("dstport 8472"), "{details}");
    assert!(details.contains("nolearning"), "{details}");

    // 2. The /128 address, and no other global one (a stale lease's, a hand-made one).
    for stale in ["fc00:0:0:7::/128", "2001:db8::5/64"] {
        run(
            &ns,
            "ip",
            &["-6", "addr", "add", stale, "dev", &dev6, "nodad"],
        );
    }
    let (i6, i4) = (d6.index, d4.index);
    in_ns(&ns, move |nl| async move {
        nl.ensure_address_and_up::<Ipv6Net>(i6, v6("fc00:0:0:1::"), "fc00::/48".parse().unwrap())
            .await
            .unwrap();
        nl.ensure_address_and_up::<Ipv4Net>(
            i4,
            Ipv4Addr::new(10, 244, 1, 0),
            "10.244.0.0/16".parse().unwrap(),
        )
        .await
        .unwrap();
        // Again: nothing to do, no error.
        nl.ensure_address_and_up::<Ipv6Net>(i6, v6("fc00:0:0:1::"), "fc00::/48".parse().unwrap())
            .await
            .unwrap();
    });
    let addrs = run(&ns, "ip", &["-6", "addr", "show", "dev", &dev6]);
    assert!(addrs.contains("inet6 fc00:0:0:1::/128"), "{addrs}");
    assert!(!addrs.contains("fc00:0:0:7::"), "{addrs}");
    assert!(!addrs.contains("2001:db8::5"), "{addrs}");
    assert!(addrs.contains("inet6 fe80::"), "link-local stays: {addrs}");
    assert!(run(&ns, "ip", &["link", "show", &dev6]).contains(",UP"));
    let addrs4 = run(&ns, "ip", &["-4", "addr", "show", "dev", &dev4]);
    assert!(addrs4.contains("inet 10.244.1.0/32"), "{addrs4}");

    // 3. Entries for three IPv6 peers over VXLAN and one direct, two IPv4 peers beside them.
    let owned6 = Owned::<Ipv6Net> {
        device: Some(i6),
        underlay: Some((eth0, "fc00::/48".parse().unwrap())),
    };
    let owned4 = Owned::<Ipv4Net> {
        device: Some(i4),
        underlay: Some((eth0, "10.244.0.0/16".parse().unwrap())),
    };
    let direct = Peer {
        direct: true,
        ..peer6(9, 9)
    };
    let peers6 = vec![peer6(2, 2), peer6(3, 3), peer6(4, 4), direct];
    let peers4 = vec![peer4(2), peer4(3)];
    let (read6, read4, cross6, cross4) = {
        let (p6, p4) = (peers6.clone(), peers4.clone());
        in_ns(&ns, move |nl| async move {
            converge(&nl, &owned6, &p6).await;
            converge(&nl, &owned4, &p4).await;
            (
                nl.read_owned(&owned6).await.unwrap(),
                nl.read_owned(&owned4).await.unwrap(),
                // Each device read in the other family: nothing of weft's.
                nl.read_owned(&Owned::<Ipv6Net>::device(i4)).await.unwrap(),
                nl.read_owned(&Owned::<Ipv4Net>::device(i6)).await.unwrap(),
            )
        })
    };
    assert_eq!(sorted(read6), sorted(desired_state(&peers6)));
    assert_eq!(sorted(read4), sorted(desired_state(&peers4)));
    assert_eq!(cross6, KernelState::default(), "IPv4 device read as IPv6");
    assert_eq!(cross4, KernelState::default(), "IPv6 device read as IPv4");

    // What the tools show is what flannel's node shows.
    let neigh = run(&ns, "ip", &["-6", "neigh", "show", "dev", &dev6]);
    for k in 2..=4 {
        let line = format!("fc00:0:0:{k}:: lladdr 0e:00:00:00:06:0{k} PERMANENT");
        assert!(neigh.contains(&line), "{line} in {neigh}");
    }
    assert!(
        !neigh.contains("fc00:0:0:9::"),
        "a direct peer has no neighbour: {neigh}"
    );
    let fdb = run(&ns, "bridge", &["fdb", "show", "dev", &dev6]);
    for k in 2..=4 {
        let line = format!("0e:00:00:00:06:0{k} dst fd00:250::{k} self permanent");
        assert!(fdb.contains(&line), "{line} in {fdb}");
    }
    assert!(
        !fdb.contains("10.250."),
        "no IPv4 VTEP on the IPv6 device: {fdb}"
    );
    let fdb4 = run(&ns, "bridge", &["fdb", "show", "dev", &dev4]);
    assert!(
        fdb4.contains("0e:00:00:00:04:02 dst 10.250.1.2 self permanent"),
        "{fdb4}"
    );
    assert!(!fdb4.contains("fd00:"), "{fdb4}");
    // (`ip route` leaves out `proto boot`: asked for by protocol, they are listed.)
    let routes = run(
        &ns,
        "ip",
        &["-6", "route", "show", "dev", &dev6, "proto", "boot"],
    );
    for k in 2..=4 {
        let want = format!("fc00:0:0:{k}::/64 via fc00:0:0:{k}:: ");
        let line = routes
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("{want} in {routes}"));
        assert!(line.contains("onlink"), "{line}");
    }
    let direct_routes = run(
        &ns,
        "ip",
        &["-6", "route", "show", "dev", "eth0", "proto", "boot"],
    );
    assert!(
        direct_routes.contains("fc00:0:0:9::/64 via fd00:250::9 "),
        "{direct_routes}"
    );
    let routes4 = run(
        &ns,
        "ip",
        &["-4", "route", "show", "dev", &dev4, "proto", "boot"],
    );
    assert!(
        routes4.contains("10.244.2.0/24 via 10.244.2.0 onlink"),
        "{routes4}"
    );

    // 4. Replace and delete: peer 2's MAC changes, peer 3 leaves, peer 4's PublicIP moves,
    // the direct peer goes over VXLAN.
    let moved = vec![
        peer6(2, 0x22),
        Peer {
            public_ip: v6("fd00:250::44"),
            ..peer6(4, 4)
        },
        peer6(9, 9),
    ];
    let (after6, after4) = {
        let m = moved.clone();
        in_ns(&ns, move |nl| async move {
            converge(&nl, &owned6, &m).await;
            (
                nl.read_owned(&owned6).await.unwrap(),
                nl.read_owned(&owned4).await.unwrap(),
            )
        })
    };
    assert_eq!(sorted(after6), sorted(desired_state(&moved)));
    assert_eq!(
        sorted(after4),
        sorted(desired_state(&peers4)),
        "the IPv4 device is untouched"
    );
    let fdb = run(&ns, "bridge", &["fdb", "show", "dev", &dev6]);
    assert!(
        fdb.contains("0e:00:00:00:06:22 dst fd00:250::2 self permanent"),
        "{fdb}"
    );
    assert!(
        fdb.contains("0e:00:00:00:06:04 dst fd00:250::44 self permanent"),
        "{fdb}"
    );
    assert!(!fdb.contains("dst fd00:250::3 "), "{fdb}");
    assert!(!fdb.contains("dst fd00:250::4 "), "{fdb}");
    let routes = run(&ns, "ip", &["-6", "route", "show", "dev", &dev6]);
    assert!(!routes.contains("fc00:0:0:3::/64"), "{routes}");
    assert!(
        routes.contains("fc00:0:0:9::/64 via fc00:0:0:9::"),
        "{routes}"
    );
    let direct_routes = run(&ns, "ip", &["-6", "route", "show", "dev", "eth0"]);
    assert!(
        !direct_routes.contains("fc00:0:0:9::/64"),
        "{direct_routes}"
    );

    // 5. The monitor reports an IPv6 route deleted by hand as the IPv6 entry it was.
    let seen = {
        let (ns2, dev6) = (ns.clone(), dev6.clone());
        in_ns(&ns, move |_nl| async move {
            let mut mon = ChangeMonitor::new().unwrap();
            run(
                &ns2,
                "ip",
                &["-6", "route", "del", "fc00:0:0:2::/64", "dev", &dev6],
            );
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while let Ok(Some(change)) = tokio::time::timeout_at(deadline, mon.next()).await {
                let found = matches!(
                    change,
                    KernelChange::Entry6(i, Observed::Route { entry, present: false })
                        if i == i6 && entry.dst == "fc00:0:0:2::/64".parse::<Ipv6Net>().unwrap()
                            && entry.gw == Some(v6("fc00:0:0:2::"))
                            && entry.onlink
                );
                seen.push(change);
                if found {
                    return Ok(seen);
                }
            }
            Err(seen)
        })
    };
    assert!(seen.is_ok(), "no Entry6 route deletion among {seen:?}");

    // 6. Re-ensuring the compatible device keeps it and its MAC; the entries stay.
    let (again, kept) = {
        let dev6 = dev6.clone();
        in_ns(&ns, move |nl| async move {
            let again = nl
                .ensure_vxlan(&spec(
                    &dev6,
                    local6.into(),
                    eth0,
                    MacAddr([0x0e, 0x66, 0, 0, 0, 0x99]),
                ))
                .await
                .unwrap();
            (again, nl.read_owned(&owned6).await.unwrap())
        })
    };
    assert!(!again.created, "a compatible device is reused");
    assert_eq!((again.index, again.mac), (i6, mac6), "with its MAC");
    assert_eq!(kept.fdb.len(), 3, "{kept:?}");

    // 7. The IPv6 interface helpers: addresses, networks, default route, lookups.
    let helpers = in_ns(&ns, move |nl| async move {
        (
            nl.ipv6_addresses().await.unwrap(),
            nl.link_networks::<Ipv6Net>(eth0).await.unwrap(),
            nl.link_networks::<Ipv4Net>(eth0).await.unwrap(),
            nl.default_route_link6().await.unwrap(),
            nl.link_with_address(v6("fd00:250::1").into())
                .await
                .unwrap(),
            nl.link_with_address(v6("fd00:250::99").into())
                .await
                .unwrap(),
            nl.route_lookup(v6("fd00:250::7").into()).await.unwrap(),
            nl.route_lookup(v6("2001:db8::1").into()).await.unwrap(),
            nl.route_get6(v6("fd00:250::7")).await.unwrap(),
        )
    });
    let (addrs, nets6, nets4, default6, holder, nobody, on_link, via_gw, get6) = helpers;
    assert!(
        addrs.contains(&(eth0, v6("fd00:250::1"), 64, true)),
        "{addrs:?}"
    );
    assert!(
        addrs.contains(&(i6, v6("fc00:0:0:1::"), 128, true)),
        "{addrs:?}"
    );
    assert!(
        addrs.iter().all(|(_, a, ..)| !a.is_unicast_link_local()),
        "{addrs:?}"
    );
    assert_eq!(nets6, vec!["fd00:250::/64".parse::<Ipv6Net>().unwrap()]);
    assert_eq!(nets4, vec!["10.250.0.0/16".parse::<Ipv4Net>().unwrap()]);
    assert_eq!(default6, Some(eth0));
    assert_eq!((holder, nobody), (Some(eth0), None));
    assert_eq!((on_link.oif, on_link.gateway), (eth0, None), "on the link");
    assert_eq!(
        (via_gw.oif, via_gw.gateway),
        (eth0, Some(v6("fd00:250::fe").into())),
        "via the default gateway"
    );
    assert_eq!(get6.0, eth0);
    let ext6 = in_ns(&ns, move |nl| async move {
        let snap = weft_net::iface::discover6(&nl).await.unwrap();
        (
            weft_net::iface::select6(Some(eth0), None, &snap),
            weft_net::iface::select6(None, None, &snap),
        )
    });
    for chosen in [ext6.0, ext6.1] {
        let e = chosen.unwrap();
        assert_eq!((e.index, e.iface_addr), (eth0, local6), "{e:?}");
    }

    // 8. Another local address makes the device incompatible: it is re-created.
    let recreated = {
        let dev6 = dev6.clone();
        in_ns(&ns, move |nl| async move {
            nl.ensure_vxlan(&spec(&dev6, v6("fd00:250::77").into(), eth0, mac6))
                .await
                .unwrap()
        })
    };
    assert!(recreated.created, "an incompatible device is re-created");
    let details = run(&ns, "ip", &["-d", "link", "show", &dev6]);
    assert!(details.contains("local fd00:250::77"), "{details}");
    drop(tb);
}
