//! weft-net's batched netlink writes on a real kernel (root only): requests spanning several
//! chunks are all carried out in order, the kernel's refusals are pinned to exactly the ops it
//! refused (with its errno, as a single request would report it), deleting what is gone
//! counts as done, and an op without a link never reaches the kernel.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_core::dataplane::{Op, Owned, RouteEntry};
use weft_net::Netlink;
use weft_net::batch::CHUNK;
use weft_testbed::{Testbed, TestbedConfig};

/// A direct route to 10.244.<i / 256>.<i % 256 rounded to /28>, via `gw` on the external
/// interface.
fn route(i: usize, gw: Ipv4Addr) -> RouteEntry {
    let addr = Ipv4Addr::new(10, 244, (i / 16) as u8, ((i % 16) * 16) as u8);
    RouteEntry {
        dst: Ipv4Net::new(addr, 28).unwrap(),
        gw: Some(gw),
        onlink: false,
        underlay: true,
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn batched_requests_are_applied_in_order_and_refusals_name_their_op() {
    weft_testbed::require_root().unwrap();
    let tb = Testbed::new("nlbatch", TestbedConfig::with_nodes(1)).unwrap();
    let ns = tb.node(0).ns.clone();
    let peer_gw = Ipv4Addr::new(10, 250, 0, 77); // on eth0's link
    let off_link = Ipv4Addr::new(192, 0, 2, 1); // no route to it: the kernel refuses
    let n = 2 * CHUNK + 88;
    let report = weft_testbed::in_netns(&ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let nl = Netlink::connect().unwrap();
            let eth0 = nl.link_by_name("eth0").await.unwrap().unwrap().index;
            let owned = Owned {
                device: None,
                underlay: Some((eth0, "10.244.0.0/16".parse().unwrap())),
            };
            // 1. More requests than three chunks' worth of sends, all done.
            let adds: Vec<Op> = (0..n).map(|i| Op::SetRoute(route(i, peer_gw))).collect();
            let first = nl.apply(&owned, &adds).await;
            let failed_first = first.iter().filter(|r| r.is_some()).count();
            let state = nl.read_owned(&owned).await.unwrap();
            let programmed = state.routes.len();
            // 2. Refusals at the start, across a chunk boundary and at the very end.
            let bad = [0, CHUNK - 1, CHUNK, n - 1];
            let mixed: Vec<Op> = (0..n)
                .map(|i| {
                    let gw = if bad.contains(&i) { off_link } else { peer_gw };
                    Op::SetRoute(route(i, gw))
                })
                .collect();
            let second = nl.apply(&owned, &mixed).await;
            let refused: Vec<(usize, Option<i32>, String)> = second
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().map(|e| (i, e.errno(), e.to_string())))
                .collect();
            // 3. Deleting routes that are not there is done; so is deleting the rest.
            let gone: Vec<Op> = (n..n + 10)
                .map(|i| Op::DelRoute(route(i, peer_gw)))
                .collect();
            let third = nl.apply(&owned, &gone).await;
            let dels: Vec<Op> = (0..n).map(|i| Op::DelRoute(route(i, peer_gw))).collect();
            let fourth = nl.apply(&owned, &dels).await;
            let left = nl.read_owned(&owned).await.unwrap().routes.len();
            // 4. A device op without a device is refused here, not sent.
            let no_device = nl
                .apply(
                    &owned,
                    &[Op::SetNeigh(weft_core::dataplane::NeighEntry {
                        ip: Ipv4Addr::new(10, 244, 9, 0),
                        mac: weft_core::mac::MacAddr([2, 0, 0, 0, 0, 1]),
                    })],
                )
                .await;
            (
                failed_first,
                programmed,
                refused,
                third.iter().all(Option::is_none),
                fourth.iter().filter(|r| r.is_some()).count(),
                left,
                no_device[0].as_ref().map(|e| e.to_string()),
            )
        })
    })
    .unwrap();
    let (failed_first, programmed, refused, gone_ok, failed_dels, left, no_device) = report;
    assert_eq!(failed_first, 0, "every add of {n} is done");
    assert_eq!(programmed, n, "the kernel holds all {n} routes");
    let at: Vec<usize> = refused.iter().map(|(i, ..)| *i).collect();
    assert_eq!(at, [0, CHUNK - 1, CHUNK, n - 1], "{refused:?}");
    for (i, errno, text) in &refused {
        assert_eq!(*errno, Some(101), "ENETUNREACH for op {i}: {text}");
        let dst = route(*i, off_link).dst;
        assert!(
            text.starts_with(&format!(
                "failed to set route {dst}: Network is unreachable"
            )),
            "{text}"
        );
    }
    assert!(gone_ok, "deleting what is gone counts as done");
    // The refused replaces left the earlier routes to those subnets in place: all n go.
    assert_eq!(failed_dels, 0);
    assert_eq!(left, 0, "no route left");
    let no_device = no_device.expect("a neighbour op without a device fails");
    assert!(no_device.contains("has no link to go to"), "{no_device}");
    drop(tb);
}
