//! Integration tests of the testbed itself. They need root (network namespaces,
//! a real etcd) and FAIL, with an explanation, when not run as root.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_testbed::{
    ETCD_IP, Pid, Signal, Testbed, TestbedConfig, TestbedError, in_netns,
    list_namespaces_with_prefix, netns_path, wait_until,
};

fn bed(label: &str, cfg: TestbedConfig) -> Testbed {
    match Testbed::new(label, cfg) {
        Ok(tb) => tb,
        Err(e) => panic!("Testbed::new({label}) failed: {e}"),
    }
}

fn no_etcd(nodes: usize) -> TestbedConfig {
    TestbedConfig {
        nodes,
        etcd: false,
        ..TestbedConfig::default()
    }
}

fn namespaces_of(id: &str) -> Vec<String> {
    list_namespaces_with_prefix(&format!("{id}-")).expect("listing namespaces")
}

/// `ip netns list` output lines mentioning `id`.
fn ip_netns_list_mentions(id: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(id))
        .map(str::to_string)
        .collect()
}

/// Alive = exists and is not a zombie.
fn pid_alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

fn mtu_of(tb: &Testbed, ns: &str, dev: &str) -> u32 {
    let out = tb
        .exec(ns, &["cat", &format!("/sys/class/net/{dev}/mtu")])
        .unwrap();
    out.trim().parse().unwrap()
}

fn assert_gone(id: &str, dir: &Path, pids: &[Pid]) {
    assert!(
        namespaces_of(id).is_empty(),
        "left: {:?}",
        namespaces_of(id)
    );
    assert!(
        ip_netns_list_mentions(id).is_empty(),
        "ip netns list still shows {:?}",
        ip_netns_list_mentions(id)
    );
    for &pid in pids {
        assert!(!pid_alive(pid), "pid {pid} still alive after teardown");
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn three_node_bed_underlay_and_etcd() {
    let host_forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok();
    let t0 = Instant::now();
    let tb = bed("three_node_bed_underlay_and_etcd", TestbedConfig::default());
    eprintln!(
        "3-node testbed with etcd up in {:.0} ms (Testbed::bring_up_time {:.0} ms), id {}",
        t0.elapsed().as_secs_f64() * 1e3,
        tb.bring_up_time().as_secs_f64() * 1e3,
        tb.id()
    );
    assert!(
        tb.id().starts_with("wt") && tb.id().len() == 8,
        "{}",
        tb.id()
    );
    assert_eq!(tb.nodes().len(), 3);
    assert_eq!(tb.etcd_endpoint(), "http://10.250.0.2:2379");
    assert_eq!(tb.etcd_ns(), format!("{}-etcd", tb.id()));
    for (i, n) in tb.nodes().iter().enumerate() {
        assert_eq!(n.index, i);
        assert_eq!(n.name, format!("n{i}"));
        assert_eq!(n.ns, format!("{}-n{i}", tb.id()));
        assert_eq!(n.ip, Ipv4Addr::new(10, 250, 1, i as u8 + 1));
        assert!(n.dir.is_dir() && n.dir.starts_with(tb.dir()));
        assert_eq!(tb.node(i), n);
        // Underlay MTU, forwarding on inside the node only.
        assert_eq!(mtu_of(&tb, &n.ns, "eth0"), 9001);
        let fwd = tb
            .exec(&n.ns, &["sysctl", "-n", "net.ipv4.ip_forward"])
            .unwrap();
        assert_eq!(fwd.trim(), "1");
        let routes = tb.exec(&n.ns, &["ip", "route", "show", "default"]).unwrap();
        assert!(routes.contains("via 10.250.0.1"), "{routes}");
    }
    assert_eq!(mtu_of(&tb, tb.switch_ns(), "br0"), 9001);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok(),
        host_forward_before,
        "host ip_forward changed"
    );

    // Every node reaches every other node, the switch and etcd over the underlay.
    for a in tb.nodes() {
        for b in tb.nodes().iter().filter(|b| b.index != a.index) {
            let s = tb.ping(&a.ns, b.ip, 2, Duration::from_secs(5)).unwrap();
            assert_eq!(s.received, 2, "{} -> {}: {s:?}", a.name, b.name);
            assert!(s.avg_rtt_ms.is_some());
        }
        let s = tb.ping(&a.ns, ETCD_IP, 1, Duration::from_secs(5)).unwrap();
        assert_eq!(s.received, 1, "{} -> etcd: {s:?}", a.name);
        // A 9000-byte unfragmented packet fits the 9001 underlay.
        let big = tb
            .exec_output(
                &a.ns,
                &[
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "2",
                    "-M",
                    "do",
                    "-s",
                    "8972",
                    "10.250.0.1",
                ],
            )
            .unwrap();
        assert!(big.status.success(), "{big:?}");
    }

    // etcd: put/get from the test, and reachable from a node at the endpoint.
    tb.etcdctl(&["put", "/weft/test", "hello"]).unwrap();
    let got = tb
        .etcdctl(&["get", "--print-value-only", "/weft/test"])
        .unwrap();
    assert_eq!(got.trim(), "hello");
    tb.etcdctl_stdin(&["put", "/weft/stdin"], "from stdin")
        .unwrap();
    let got = tb
        .etcdctl(&["get", "--print-value-only", "/weft/stdin"])
        .unwrap();
    assert_eq!(got.trim(), "from stdin");
    let endpoint = tb.etcd_endpoint();
    let from_node = tb
        .exec(
            &tb.node(1).ns,
            &[
                "env",
                "ETCDCTL_API=3",
                "etcdctl",
                "--endpoints",
                &endpoint,
                "get",
                "--print-value-only",
                "/weft/test",
            ],
        )
        .unwrap();
    assert_eq!(from_node.trim(), "hello");

    // Manifest for tooling.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tb.dir().join("testbed.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["id"], tb.id());
    assert_eq!(manifest["nodes"].as_array().unwrap().len(), 3);

    let id = tb.id().to_string();
    let dir = tb.dir().to_path_buf();
    let etcd = tb.etcd_pid().unwrap();
    tb.teardown().unwrap();
    assert_gone(&id, &dir, &[etcd]);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn bring_up_time_of_three_nodes() {
    // Measured on its own bed so the figure is printed even when other checks fail.
    let t0 = Instant::now();
    let tb = bed("bring_up_time_of_three_nodes", TestbedConfig::default());
    let up = t0.elapsed();
    let t1 = Instant::now();
    drop(tb);
    eprintln!(
        "bring-up of a 3-node testbed with etcd: {:.0} ms; teardown: {:.0} ms",
        up.as_secs_f64() * 1e3,
        t1.elapsed().as_secs_f64() * 1e3
    );
    // Well under 2 s on an idle machine; generous here because the test harness
    // builds many beds in parallel on few cores.
    assert!(up < Duration::from_secs(10), "bring-up took {up:?}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn pods_on_one_node_ping_each_other() {
    let mut tb = bed("pods_on_one_node_ping_each_other", no_etcd(1));
    let gw = Ipv4Addr::new(10, 244, 0, 1);
    let p0 = tb
        .add_pod(0, Ipv4Addr::new(10, 244, 0, 2), 24, gw, 8951)
        .unwrap();
    let p1 = tb
        .add_pod(0, Ipv4Addr::new(10, 244, 0, 3), 24, gw, 8951)
        .unwrap();
    assert_eq!(p0.ns, format!("{}-n0p0", tb.id()));
    assert_eq!(p1.ns, format!("{}-n0p1", tb.id()));
    assert_eq!((p0.node, p1.node), (0, 0));
    assert_eq!(p1.host_veth, "vethp1");
    assert_eq!(tb.pods().len(), 2);
    assert_eq!(mtu_of(&tb, &p0.ns, "eth0"), 8951);
    assert_eq!(mtu_of(&tb, &tb.node(0).ns, "cni0"), 8951);
    let cni0 = tb
        .exec(&tb.node(0).ns, &["ip", "-4", "addr", "show", "cni0"])
        .unwrap();
    assert!(cni0.contains("10.244.0.1/24"), "{cni0}");

    let s = tb.ping(&p0.ns, p1.ip, 3, Duration::from_secs(5)).unwrap();
    assert_eq!(s.received, 3, "{s:?}");
    let s = tb.ping(&p1.ns, gw, 1, Duration::from_secs(5)).unwrap();
    assert_eq!(s.received, 1, "{s:?}");
    // Pods reach the node's underlay address through their default route.
    let s = tb
        .ping(&p1.ns, tb.node(0).ip, 1, Duration::from_secs(5))
        .unwrap();
    assert_eq!(s.received, 1, "{s:?}");

    // link_set: cutting the pod's node-side veth breaks the path, restoring fixes it.
    let node_ns = tb.node(0).ns.clone();
    tb.link_set(&node_ns, &p1.host_veth, false).unwrap();
    let s = tb.ping(&p0.ns, p1.ip, 2, Duration::from_secs(1)).unwrap();
    assert_eq!(s.received, 0, "{s:?}");
    assert_eq!(s.lost(), s.transmitted);
    tb.link_set(&node_ns, &p1.host_veth, true).unwrap();
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let s = tb.ping(&p0.ns, p1.ip, 1, Duration::from_secs(1)).ok()?;
        (s.received == 1).then_some(())
    });
    assert!(ok.is_some(), "pod path did not recover after link up");
    assert!(tb.link_set(&node_ns, "nosuchdev", true).is_err());

    // Bad arguments are rejected.
    assert!(matches!(
        tb.add_pod(7, Ipv4Addr::new(10, 244, 0, 9), 24, gw, 1500),
        Err(TestbedError::Invalid(_))
    ));
    assert!(matches!(
        tb.add_pod(0, gw, 24, gw, 1500),
        Err(TestbedError::Invalid(_))
    ));

    let id = tb.id().to_string();
    let dir = tb.dir().to_path_buf();
    drop(tb);
    assert_gone(&id, &dir, &[]);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn etcd_stop_start_keeps_data() {
    let mut tb = bed("etcd_stop_start_keeps_data", with_etcd(1));
    tb.etcdctl(&[
        "put",
        "/coreos.com/network/config",
        r#"{"Network":"10.244.0.0/16"}"#,
    ])
    .unwrap();
    let old = tb.etcd_pid().unwrap();
    tb.stop_etcd().unwrap();
    assert!(!pid_alive(old));
    assert!(tb.etcd_pid().is_none());
    assert!(matches!(
        tb.etcdctl(&["get", "/coreos.com/network/config"]),
        Err(TestbedError::EtcdUnavailable(_))
    ));
    // Nothing answers on the endpoint while etcd is down.
    let node_ns = tb.node(0).ns.clone();
    let refused = in_netns(&node_ns, || {
        TcpStream::connect_timeout(&SocketAddr::from((ETCD_IP, 2379)), Duration::from_secs(1))
            .is_err()
    })
    .unwrap();
    assert!(refused);
    assert!(tb.stop_etcd().is_err());

    let t = Instant::now();
    tb.start_etcd().unwrap();
    eprintln!(
        "etcd restart healthy in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_ne!(tb.etcd_pid().unwrap(), old);
    assert!(
        tb.start_etcd().is_err(),
        "second start must fail while running"
    );
    let got = tb
        .etcdctl(&["get", "--print-value-only", "/coreos.com/network/config"])
        .unwrap();
    assert_eq!(got.trim(), r#"{"Network":"10.244.0.0/16"}"#);
    let log = std::fs::read_to_string(tb.etcd_log()).unwrap();
    assert!(log.contains("ready to serve client requests"));
}

fn with_etcd(nodes: usize) -> TestbedConfig {
    TestbedConfig {
        nodes,
        ..TestbedConfig::default()
    }
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn etcd_v2_api_can_be_enabled() {
    let tb = bed(
        "etcd_v2_api_can_be_enabled",
        TestbedConfig {
            nodes: 0,
            etcd_v2: true,
            ..TestbedConfig::default()
        },
    );
    let ns = tb.etcd_ns().to_string();
    let v2 = |args: &[&str]| {
        let mut cmd = vec![
            "env",
            "ETCDCTL_API=2",
            "etcdctl",
            "--endpoints",
            "http://127.0.0.1:2379",
        ];
        cmd.extend_from_slice(args);
        tb.exec(&ns, &cmd)
    };
    v2(&["set", "/coreos.com/network/config", "legacy"]).unwrap();
    assert_eq!(
        v2(&["get", "/coreos.com/network/config"]).unwrap().trim(),
        "legacy"
    );
    // v2 and v3 keyspaces are separate.
    let v3 = tb.etcdctl(&["get", "/coreos.com/network/config"]).unwrap();
    assert!(v3.trim().is_empty(), "{v3}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn spawn_signal_wait_exit() {
    let mut tb = bed("spawn_signal_wait_exit", no_etcd(1));
    let ns = tb.node(0).ns.clone();
    let log = tb.node(0).dir.join("sleep.log");
    let pid = tb
        .spawn(&ns, Path::new("sleep"), &["30".to_string()], &[], &log)
        .unwrap();
    assert!(tb.is_running(pid));
    // `ip netns exec` execs in place: the pid is sleep itself, inside the node's netns.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");
    let pid_ns = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    let node_ns = std::fs::metadata(netns_path(&ns)).unwrap();
    assert_eq!((pid_ns.dev(), pid_ns.ino()), (node_ns.dev(), node_ns.ino()));

    assert_eq!(tb.wait_exit(pid, Duration::from_millis(50)).unwrap(), None);
    tb.signal(pid, Signal::SIGTERM).unwrap();
    let st = tb
        .wait_exit(pid, Duration::from_secs(5))
        .unwrap()
        .expect("exited");
    assert_eq!(st.signal(), Some(Signal::SIGTERM as i32));
    assert!(!tb.is_running(pid));
    assert!(!pid_alive(pid));
    // Reaped: the status is remembered, signalling is refused.
    assert_eq!(tb.wait_exit(pid, Duration::ZERO).unwrap(), Some(st));
    assert!(matches!(
        tb.signal(pid, Signal::SIGTERM),
        Err(TestbedError::UnknownProcess { .. })
    ));

    // Arguments, environment, exit code and log (appended).
    let log2 = tb.dir().join("sh.log");
    std::fs::write(&log2, "previous\n").unwrap();
    let script = "echo out=$WEFT_X; echo err >&2; exit 3".to_string();
    let pid = tb
        .spawn(
            &ns,
            Path::new("/bin/sh"),
            &["-c".to_string(), script],
            &[("WEFT_X".to_string(), "42".to_string())],
            &log2,
        )
        .unwrap();
    let st = tb.wait_exit(pid, Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(st.code(), Some(3));
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(text.starts_with("previous\n"), "{text}");
    assert!(text.contains("out=42") && text.contains("err"), "{text}");

    // Unknown pids and foreign namespaces are refused.
    assert!(!tb.is_running(Pid::from_raw(1)));
    assert!(matches!(
        tb.signal(Pid::from_raw(1), Signal::SIGTERM),
        Err(TestbedError::UnknownProcess { .. })
    ));
    assert!(matches!(
        tb.spawn("not-ours", Path::new("true"), &[], &[], &log),
        Err(TestbedError::ForeignNamespace { .. })
    ));
    let long = tb
        .spawn(&ns, Path::new("sleep"), &["60".to_string()], &[], &log)
        .unwrap();
    let id = tb.id().to_string();
    let dir = tb.dir().to_path_buf();
    drop(tb); // SIGKILLs and reaps `long`
    assert_gone(&id, &dir, &[long]);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn exec_reports_command_and_stderr() {
    let tb = bed("exec_reports_command_and_stderr", no_etcd(1));
    let ns = tb.node(0).ns.clone();
    let out = tb.exec(&ns, &["echo", "hi"]).unwrap();
    assert_eq!(out, "hi\n");
    let err = tb
        .exec(&ns, &["ip", "link", "show", "dev", "nosuchdev"])
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("ip link show dev nosuchdev"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    let raw = tb.exec_output(&ns, &["sh", "-c", "exit 4"]).unwrap();
    assert_eq!(raw.status.code(), Some(4));
    assert!(matches!(
        tb.exec("wt000000-n0", &["true"]),
        Err(TestbedError::ForeignNamespace { .. })
    ));
    assert!(matches!(
        tb.etcdctl(&["get", "x"]),
        Err(TestbedError::EtcdUnavailable(_))
    ));
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn pinger_and_ping_stats() {
    let mut tb = bed("pinger_and_ping_stats", no_etcd(2));
    let (a, b) = (tb.node(0).clone(), tb.node(1).clone());
    let pinger = tb
        .start_pinger(&a.ns, b.ip, Duration::from_millis(20))
        .unwrap();
    assert!(tb.is_running(pinger.pid()));
    let got = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let seqs = pinger.replies_so_far().ok()?;
        (seqs.len() >= 10).then_some(seqs)
    })
    .expect("10 replies within 5 s");
    assert_eq!(got[0], 1);
    let stats = pinger.stop(&mut tb).unwrap();
    assert!(stats.transmitted >= 10, "{stats:?}");
    assert!(stats.lost() <= 1, "{stats:?}");
    assert!(stats.avg_rtt_ms.unwrap() > 0.0);

    // A silent address inside the underlay: everything is lost, no error.
    let s = tb
        .ping(
            &a.ns,
            Ipv4Addr::new(10, 250, 9, 9),
            2,
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!((s.received, s.avg_rtt_ms), (0, None));
    assert!(s.transmitted >= 1);

    // A pinger that is never stopped is killed at teardown.
    let leftover = tb
        .start_pinger(&b.ns, a.ip, Duration::from_millis(100))
        .unwrap();
    let pid = leftover.pid();
    let id = tb.id().to_string();
    let dir = tb.dir().to_path_buf();
    drop(tb);
    assert_gone(&id, &dir, &[pid]);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn add_node_joins_the_underlay() {
    let mut tb = bed("add_node_joins_the_underlay", with_etcd(1));
    let i = tb.add_node().unwrap();
    assert_eq!(i, 1);
    let n1 = tb.node(1).clone();
    assert_eq!(n1.ip, Ipv4Addr::new(10, 250, 1, 2));
    assert_eq!(n1.ns, format!("{}-n1", tb.id()));
    assert!(n1.dir.is_dir());
    assert_eq!(mtu_of(&tb, &n1.ns, "eth0"), 9001);
    let s = tb
        .ping(&n1.ns, tb.node(0).ip, 2, Duration::from_secs(5))
        .unwrap();
    assert_eq!(s.received, 2);
    let s = tb.ping(&n1.ns, ETCD_IP, 1, Duration::from_secs(5)).unwrap();
    assert_eq!(s.received, 1);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn in_netns_runs_inside_the_namespace() {
    let tb = bed(
        "in_netns_runs_inside_the_namespace",
        TestbedConfig::with_nodes(1),
    );
    let ns = tb.node(0).ns.clone();
    let (ifaces, connected) = in_netns(&ns, || {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        let ok =
            TcpStream::connect_timeout(&SocketAddr::from((ETCD_IP, 2379)), Duration::from_secs(2))
                .is_ok();
        (dev, ok)
    })
    .unwrap();
    assert!(ifaces.contains("eth0:"), "{ifaces}");
    assert!(connected, "no TCP connection to etcd from inside {ns}");
    // The caller's thread is untouched.
    let here = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
    let node = std::fs::metadata(netns_path(&ns)).unwrap();
    assert_ne!(here.ino(), node.ino());
    // Panics propagate; unknown namespaces are errors.
    let r = std::panic::catch_unwind(|| in_netns(&ns, || panic!("boom")));
    assert!(r.is_err());
    assert!(matches!(
        in_netns("wt-no-such-ns", || ()),
        Err(TestbedError::Netns { .. })
    ));
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn drop_removes_namespaces_processes_and_strays() {
    let mut tb = bed(
        "drop_removes_namespaces_processes_and_strays",
        TestbedConfig::with_nodes(2),
    );
    let gw = Ipv4Addr::new(10, 244, 1, 1);
    let pod = tb
        .add_pod(1, Ipv4Addr::new(10, 244, 1, 2), 24, gw, 1450)
        .unwrap();
    let ns = tb.node(0).ns.clone();
    let log = tb.dir().join("spawned.log");
    let sleeper = tb
        .spawn(&ns, Path::new("sleep"), &["300".to_string()], &[], &log)
        .unwrap();
    // A grandchild the testbed does not track: must be swept because it lives in our netns.
    let stray_file = tb.dir().join("stray.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", stray_file.display());
    let shell = tb
        .spawn(
            &pod.ns,
            Path::new("/bin/sh"),
            &["-c".to_string(), script],
            &[],
            &log,
        )
        .unwrap();
    let stray = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        std::fs::read_to_string(&stray_file)
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()
    })
    .map(Pid::from_raw)
    .expect("stray pid");
    let pinger = tb
        .start_pinger(&pod.ns, gw, Duration::from_millis(50))
        .unwrap();
    let etcd = tb.etcd_pid().unwrap();
    let pids = [sleeper, shell, stray, pinger.pid(), etcd];
    for p in pids {
        assert!(pid_alive(p), "{p} should be running");
    }
    let id = tb.id().to_string();
    let dir = tb.dir().to_path_buf();
    assert_eq!(namespaces_of(&id).len(), 5, "{:?}", namespaces_of(&id));
    drop(tb);
    // The stray is not our child: give its real parent a moment to reap it.
    let gone = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        (!pid_alive(stray)).then_some(())
    });
    assert!(gone.is_some(), "stray {stray} survived");
    assert_gone(&id, &dir, &pids);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn panicking_test_still_cleans_up() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let mut tb = bed("panicking_test_still_cleans_up", no_etcd(1));
        let pid = tb
            .spawn(
                &tb.node(0).ns.clone(),
                Path::new("sleep"),
                &["300".to_string()],
                &[],
                &tb.dir().join("x.log"),
            )
            .unwrap();
        tx.send((tb.id().to_string(), tb.dir().to_path_buf(), pid))
            .unwrap();
        panic!("simulated test failure");
    })
    .join();
    assert!(r.is_err());
    let (id, dir, pid): (String, PathBuf, Pid) = rx.recv().unwrap();
    assert_gone(&id, &dir, &[pid]);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn concurrent_beds_do_not_collide() {
    let handles: Vec<_> = (0..3)
        .map(|k| {
            std::thread::spawn(move || {
                let tb = bed(
                    &format!("concurrent_beds_do_not_collide#{k}"),
                    TestbedConfig::with_nodes(2),
                );
                // Same addresses and interface names in every bed, fully isolated.
                tb.etcdctl(&["put", "/who", &format!("bed{k}")]).unwrap();
                let s = tb
                    .ping(&tb.node(0).ns, tb.node(1).ip, 2, Duration::from_secs(5))
                    .unwrap();
                assert_eq!(s.received, 2);
                std::thread::sleep(Duration::from_millis(200));
                let who = tb.etcdctl(&["get", "--print-value-only", "/who"]).unwrap();
                assert_eq!(who.trim(), format!("bed{k}"));
                let id = tb.id().to_string();
                let dir = tb.dir().to_path_buf();
                tb.teardown().unwrap();
                (id, dir)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        let (id, dir) = h.join().expect("bed thread panicked");
        assert_gone(&id, &dir, &[]);
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn keep_env_is_not_set_in_tests() {
    // Guard: the assertions above on removed dirs assume WEFT_TESTBED_KEEP is unset.
    assert!(
        std::env::var("WEFT_TESTBED_KEEP")
            .map(|v| v.is_empty() || v == "0")
            .unwrap_or(true),
        "unset WEFT_TESTBED_KEEP to run these tests"
    );
    weft_testbed::require_root().unwrap_or_else(|e| panic!("{e}"));
}
