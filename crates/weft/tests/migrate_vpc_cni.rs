//! The rolling migration from the AWS VPC CNI to weft on a 3-node testbed with EC2's rules
//! (root only): every node has a primary and a secondary ENI on the VPC switch, the switch
//! enforces the source/destination check per port and routes like the VPC, and every node
//! runs a pod the way the VPC CNI runs one (a secondary-ENI address, its /32 route, rules 512
//! and 1536, table 2) next to the VPC CNI's iptables leftovers (see weft_testbed::ec2).
//!
//! Continuous traffic (ICMP every 20 ms and a long-lived TCP flow, a request every 20 ms)
//! runs between every ordered pair of pods through the whole migration, as `weft eks plan`
//! orders it:
//!
//! 1. weftd on every node (aws-node already gone);
//! 2. the deploy step on every node: `weft node cleanup-vpc-cni --apply` (which, with a VPC
//!    pod still running, does only the safe part and says what it keeps and why) and
//!    `weft install-cni`;
//! 3. per node: the drain (the VPC pod's flows are stopped, the pod deleted), the cleanup
//!    again (the rest), and a new pod through the node's conf dir: an overlay address, with
//!    flows to and from every pod still running (VPC and overlay);
//! 4. every flow of a pod that was not drained lost no packet and was never reset;
//! 5. the negative control: on a migrated node a new VPC pod keeps working through the
//!    rolling cleanup, and `--all` (the old full cleanup) cuts it off, the switch's
//!    source/destination check counting the drops.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weft_testbed::{CniSetup, Pinger, Testbed, wait_until, weftd};

mod common;
use common::{
    AWS_CONFLIST, FAKE_AWS_CNI, NodeRoot, first_config, install_cni, masquerade_written, sibling,
    write,
};

const PING_EVERY: Duration = Duration::from_millis(20);

/// The VPC CNI's iptables rules for an IPv4 cluster in VPC 10.250.0.0/16 (network.go,
/// eks-vpc-cni.md §1.4): SNAT to the primary IP outside the VPC, connmark for the pods'
/// non-VPC traffic and for NodePorts.
fn aws_iptables(primary: Ipv4Addr) -> String {
    format!(
        r#"*nat
:AWS-SNAT-CHAIN-0 - [0:0]
:AWS-CONNMARK-CHAIN-0 - [0:0]
-A PREROUTING -i eni+ -m comment --comment "AWS, outbound connections" -j AWS-CONNMARK-CHAIN-0
-A PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark --mask 0x80
-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0
-A AWS-SNAT-CHAIN-0 -d 10.250.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j RETURN
-A AWS-SNAT-CHAIN-0 ! -o vlan+ -m comment --comment "AWS, SNAT" -m addrtype ! --dst-type LOCAL -j SNAT --to-source {primary} --random-fully
-A AWS-CONNMARK-CHAIN-0 -d 10.250.0.0/16 -m comment --comment "AWS CONNMARK CHAIN, VPC CIDR" -j RETURN
-A AWS-CONNMARK-CHAIN-0 -m comment --comment "AWS, CONNMARK" -j CONNMARK --set-xmark 0x80/0x80
COMMIT
*mangle
-A PREROUTING -i eth0 -m comment --comment "AWS, primary ENI" -m addrtype --dst-type LOCAL --limit-iface-in -j CONNMARK --set-xmark 0x80/0x80
-A PREROUTING -i eni+ -m comment --comment "AWS, primary ENI" -j CONNMARK --restore-mark --mask 0x80
COMMIT
"#
    )
}

/// One of the pods whose traffic is watched.
#[derive(Clone)]
struct P {
    name: String,
    ns: String,
    ip: Ipv4Addr,
}

/// A long-lived TCP flow: a request and its echo every 20 ms until stopped.
struct Flow {
    label: String,
    server: String,
    client: String,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<u64, String>>,
}

fn tcp_flow(server: &P, client: &P, port: u16) -> Flow {
    let stop = Arc::new(AtomicBool::new(false));
    let handle = weft_testbed::flow::tcp_flow(
        &server.ns,
        server.ip,
        &client.ns,
        port,
        PING_EVERY,
        stop.clone(),
    )
    .unwrap_or_else(|e| panic!("TCP flow {} -> {}: {e}", client.name, server.name));
    Flow {
        label: format!("{} -> {}", client.name, server.name),
        server: server.name.clone(),
        client: client.name.clone(),
        stop,
        handle,
    }
}

/// Everything measured, per ordered pair.
#[derive(Default)]
struct Figures {
    /// (from -> to, sent, received)
    pings: Vec<(String, u32, u32)>,
    /// (client -> server, round trips, error)
    flows: Vec<(String, u64, Option<String>)>,
}

struct Traffic {
    pingers: Vec<(String, String, String, Pinger)>,
    flows: Vec<Flow>,
    port: u16,
    figures: Figures,
}

impl Traffic {
    /// Pings and a TCP flow from `a` to `b` and from `b` to `a`.
    fn between(&mut self, tb: &mut Testbed, a: &P, b: &P) {
        for (from, to) in [(a, b), (b, a)] {
            let pinger = tb
                .start_pinger(&from.ns, to.ip, PING_EVERY)
                .unwrap_or_else(|e| panic!("pinger {} -> {}: {e}", from.name, to.name));
            self.pingers.push((
                format!("{} -> {}", from.name, to.name),
                from.name.clone(),
                to.name.clone(),
                pinger,
            ));
            self.port += 1;
            self.flows.push(tcp_flow(to, from, self.port));
        }
    }

    /// Stops (and records) every pinger and flow `pod` takes part in.
    fn stop_involving(&mut self, tb: &mut Testbed, pod: &str) {
        let (stop, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pingers)
            .into_iter()
            .partition(|(_, f, t, _)| f == pod || t == pod);
        self.pingers = keep;
        for (label, _, _, p) in stop {
            let st = p.stop(tb).unwrap_or_else(|e| panic!("{label}: {e}"));
            self.figures
                .pings
                .push((label, st.transmitted, st.received));
        }
        let (stop, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flows)
            .into_iter()
            .partition(|f| f.client == pod || f.server == pod);
        self.flows = keep;
        for f in &stop {
            f.stop.store(true, Ordering::Relaxed);
        }
        for f in stop {
            match f.handle.join().expect("flow thread") {
                Ok(n) => self.figures.flows.push((f.label, n, None)),
                Err(e) => self.figures.flows.push((f.label, 0, Some(e))),
            }
        }
    }

    fn stop_all(&mut self, tb: &mut Testbed) {
        let names: Vec<String> = self
            .pingers
            .iter()
            .map(|(_, f, _, _)| f.clone())
            .chain(self.flows.iter().map(|f| f.client.clone()))
            .collect();
        for n in names {
            self.stop_involving(tb, &n);
        }
    }
}

fn cleanup(tb: &Testbed, i: usize, root: &NodeRoot, extra: &[&str]) -> String {
    let mut argv: Vec<String> = vec![
        env!("CARGO_BIN_EXE_weft").into(),
        "node".into(),
        "cleanup-vpc-cni".into(),
        "--apply".into(),
    ];
    argv.extend(root.cleanup_args());
    argv.push("--subnet-file".into());
    argv.push(tb.subnet_file(i).display().to_string());
    argv.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = tb.exec_output(&tb.node(i).ns, &argv).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cleanup on node {i} failed:\n{text}");
    text
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn rolling_migration_on_ec2_rules_loses_no_packet() {
    let started = Instant::now();
    let weftd = sibling("weftd");
    let weft_cni = sibling("weft-cni");
    let n = 3;
    let mut tb = weftd::bed("migrate-vpc-cni", n, weftd::NET_CONFIG)
        .unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    tb.enable_ec2().unwrap();
    let roots: Vec<NodeRoot> = (0..n)
        .map(|i| NodeRoot(tb.node(i).dir.join("root")))
        .collect();

    // The VPC CNI's node, as aws-node left it: files, iptables, ENI, one pod per node.
    let mut vpc: Vec<P> = Vec::new();
    let mut handles: Vec<weft_testbed::VpcPod> = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        tb.add_secondary_eni(i).unwrap();
        write(&root.conf().join("10-aws.conflist"), AWS_CONFLIST, 0o644);
        for b in ["aws-cni", "egress-cni"] {
            write(&root.bin().join(b), FAKE_AWS_CNI, 0o755);
        }
        for p in ["bridge", "host-local", "portmap", "loopback"] {
            std::fs::copy(Path::new("/usr/lib/cni").join(p), root.bin().join(p)).unwrap();
        }
        write(
            &root.p("var/run/aws-node/ipam.json"),
            r#"{"version":"vpc-cni-ipam/1","allocations":[]}"#,
            0o644,
        );
        let rules = root.p("aws.rules");
        write(&rules, &aws_iptables(tb.node(i).ip), 0o644);
        let ns = tb.node(i).ns.clone();
        tb.exec(
            &ns,
            &[
                "iptables-nft-restore",
                "--noflush",
                &rules.display().to_string(),
            ],
        )
        .unwrap();
        tb.exec(
            &ns,
            &[
                "ip",
                "rule",
                "add",
                "priority",
                "1024",
                "fwmark",
                "0x80/0x80",
                "lookup",
                "main",
            ],
        )
        .unwrap();
        let pod = tb.add_vpc_pod(i, 9001).unwrap();
        handles.push(pod.clone());
        vpc.push(P {
            name: format!("vpc{i}"),
            ns: pod.ns.clone(),
            ip: pod.ip,
        });
    }
    // The emulation works as the VPC CNI's pods do: every VPC pod reaches every other.
    for a in &vpc {
        for b in &vpc {
            if a.ip != b.ip {
                // The first packet waits for the VPC's (proxy) ARP answer.
                tb.ping(&a.ns, b.ip, 1, Duration::from_secs(3)).unwrap();
                let st = tb.ping(&a.ns, b.ip, 3, Duration::from_secs(2)).unwrap();
                assert_eq!(
                    st.received, 3,
                    "{} -> {} before weft: {st:?}",
                    a.name, b.name
                );
            }
        }
    }

    // 1. weftd on every node, with flanneld's flags.
    weftd::spawn_all(&mut tb, &weftd, n, &["--healthz-port=8081", "--ip-masq"]).unwrap();
    for i in 0..n {
        let env = weftd::ready(&tb, i, Duration::from_secs(15));
        assert!(
            env.subnet.is_some(),
            "node {i}: no FLANNEL_SUBNET in {env:?}"
        );
        let ns = tb.node(i).ns.clone();
        assert!(
            masquerade_written(&tb, &ns),
            "weftd on node {i} wrote no FLANNEL-POSTRTG rules"
        );
    }
    eprintln!("VPC CNI nodes and weftd up in {:?}", started.elapsed());

    // Continuous traffic between every ordered pair of VPC pods.
    let mut traffic = Traffic {
        pingers: Vec::new(),
        flows: Vec::new(),
        port: 20000,
        figures: Figures::default(),
    };
    for a in 0..n {
        for b in a + 1..n {
            traffic.between(&mut tb, &vpc[a], &vpc[b]);
        }
    }

    // 2. The deploy step on every node: the cleanup's safe part, then weft's config.
    for (i, root) in roots.iter().enumerate() {
        let out = cleanup(&tb, i, root, &[]);
        let pod = &vpc[i];
        for want in [
            format!("VPC-addressed pods still run here: pod {} on eni", pod.ip),
            format!(
                "ip rule `1536: from {} lookup 2`: kept because pod {} on eni",
                pod.ip, pod.ip
            ),
            format!("route table 2 kept because pod {} on eni", pod.ip),
            "insert a RETURN for the overlay network 10.244.0.0/16 at the top of AWS-SNAT-CHAIN-0"
                .to_string(),
            "add ip rule `1535: from all to 10.244.0.0/16 lookup main`".to_string(),
            "done for now".to_string(),
        ] {
            assert!(out.contains(&want), "node {i}: no {want:?} in:\n{out}");
        }
        assert!(!out.contains("FAILED"), "{out}");
        let install = install_cni(&weft_cni, &root.bin(), &root.conf())
            .output()
            .unwrap();
        assert!(install.status.success(), "{install:?}");
        assert_eq!(first_config(&root.conf()).0, "10-flannel.conflist");
    }
    eprintln!("safe cleanup on every node at {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(1500));

    // 3. Node by node: drain, the rest of the cleanup, a new pod on the overlay.
    let mut overlay: Vec<P> = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        let pod = vpc[i].clone();
        traffic.stop_involving(&mut tb, &pod.name);
        tb.delete_vpc_pod(&handles[i]).unwrap();
        let out = cleanup(&tb, i, root, &[]);
        assert!(
            out.contains("done: a second look finds nothing of the VPC CNI left on this node"),
            "node {i}:\n{out}"
        );
        let ns = tb.node(i).ns.clone();
        let rules = tb.exec(&ns, &["ip", "rule"]).unwrap();
        for gone in ["512:", "1024:", "1535:", "1536:", "lookup 2"] {
            assert!(!rules.contains(gone), "node {i} still has {gone}:\n{rules}");
        }
        let nat = tb.exec(&ns, &["iptables-nft-save", "-t", "nat"]).unwrap();
        assert!(!nat.contains("AWS"), "{nat}");

        let (first, conflist) = first_config(&root.conf());
        assert_eq!(first, "10-flannel.conflist");
        let setup = CniSetup {
            plugin: weft_cni.clone(),
            plugin_dirs: vec![root.bin(), PathBuf::from("/usr/lib/cni")],
            conflist,
        };
        let new = tb
            .add_cni_pod(i, &setup)
            .unwrap_or_else(|e| panic!("overlay pod on node {i}: {e}"));
        assert!(
            new.pod.ip.octets()[..2] == [10, 244],
            "not an overlay address: {}",
            new.pod.ip
        );
        let p = P {
            name: format!("overlay{i}"),
            ns: new.pod.ns.clone(),
            ip: new.pod.ip,
        };
        // Both directions with every pod still running: VPC pods on the nodes not yet
        // migrated and overlay pods on those already migrated. First packets may wait for
        // ARP and the new routes: warm each path up before the watched traffic starts.
        let others: Vec<P> = vpc[i + 1..].iter().chain(overlay.iter()).cloned().collect();
        for o in &others {
            for (a, b) in [(&p, o), (o, &p)] {
                let ok = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
                    tb.ping(&a.ns, b.ip, 1, Duration::from_secs(1))
                        .ok()
                        .filter(|s| s.received == 1)
                });
                assert!(
                    ok.is_some(),
                    "{} -> {} ({}) never answers",
                    a.name,
                    b.name,
                    b.ip
                );
            }
            traffic.between(&mut tb, &p, o);
        }
        overlay.push(p);
        eprintln!("node {i} migrated at {:?}", started.elapsed());
        // Every pair runs a while in each phase of the migration.
        std::thread::sleep(Duration::from_millis(1500));
    }
    // Let the last pairs run a while.
    std::thread::sleep(Duration::from_secs(2));
    traffic.stop_all(&mut tb);

    // 4. The figures: no loss, no reset.
    let f = &traffic.figures;
    eprintln!("pings (every 20 ms), per ordered pair:");
    for (label, sent, got) in &f.pings {
        eprintln!(
            "  {label:<22} sent {sent:>5}  received {got:>5}  lost {}",
            sent - got
        );
    }
    eprintln!("TCP flows (a round trip every 20 ms):");
    for (label, n, err) in &f.flows {
        eprintln!(
            "  {label:<22} round trips {n:>5}  {}",
            err.as_deref().unwrap_or("no reset")
        );
    }
    let pairs_with_overlay = f
        .pings
        .iter()
        .filter(|(l, ..)| l.contains("overlay"))
        .count();
    // 3 VPC pod pairs, then 2 more pairs for each of the 3 overlay pods, both directions.
    assert_eq!(f.pings.len(), 2 * (3 + 3 * 2), "{:?}", f.pings);
    assert_eq!(pairs_with_overlay, 2 * 3 * 2);
    for (label, sent, got) in &f.pings {
        assert!(*sent >= 50, "{label}: only {sent} pings sent");
        assert_eq!(sent, got, "{label}: {} pings lost", sent - got);
    }
    for (label, n, err) in &f.flows {
        assert!(err.is_none(), "{label}: {err:?}");
        assert!(*n >= 50, "{label}: only {n} round trips");
    }

    // 5. Negative control on node 2: a VPC pod on a node whose cleanup already ran (table 2
    // written again, as ipamd had it).
    let i = 2;
    tb.program_eni_table(i).unwrap();
    let victim = tb.add_vpc_pod(i, 9001).unwrap();
    let from = overlay[0].clone();
    let answers = |tb: &Testbed| {
        tb.ping(&from.ns, victim.ip, 5, Duration::from_secs(2))
            .map(|s| s.received)
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            (answers(&tb) == 5).then_some(())
        })
        .is_some(),
        "the new VPC pod {} does not answer {}",
        victim.ip,
        from.name
    );
    // The rolling cleanup keeps what it needs, and it keeps answering.
    let out = cleanup(&tb, i, &roots[i], &[]);
    assert!(
        out.contains(&format!(
            "ip rule `1536: from {} lookup 2`: kept because pod {} on {} (ENI table 2) still uses it",
            victim.ip, victim.ip, victim.host_veth
        )),
        "{out}"
    );
    assert_eq!(answers(&tb), 5, "after the rolling cleanup");
    let drops = |tb: &Testbed| -> u64 {
        tb.ec2_drops()
            .unwrap()
            .iter()
            .filter(|(port, _)| port == "n2 ingress")
            .map(|(_, n)| n)
            .sum()
    };
    let before = drops(&tb);
    // The naive full cleanup (the old plan) cuts it off: its replies now leave through eth0
    // with an eth1 address, and the switch drops them.
    let out = cleanup(&tb, i, &roots[i], &["--all"]);
    assert!(
        out.contains(&format!("to {} lookup main", victim.ip)),
        "{out}"
    );
    let got = answers(&tb);
    let after = drops(&tb);
    eprintln!(
        "negative control: {} -> {} after --all: {got}/5 answered, source/destination check dropped {} frames from n2",
        from.name,
        victim.ip,
        after - before
    );
    assert_eq!(got, 0, "the full cleanup left the VPC pod reachable");
    assert!(
        after > before,
        "the source/destination check dropped nothing"
    );

    tb.teardown().unwrap();
    eprintln!("migration test took {:?}", started.elapsed());
}
