//! weft-cni with Debian's real bridge, host-local and loopback plugins, in network namespaces.
//!
//! Needs root (CI runs as root) and the `containernetworking-plugins` package (/usr/lib/cni).
//! Each test makes two namespaces of its own: a "node" in which weft-cni runs (so `cni0` and
//! the host-side veth live there, never in the host namespace) and a "pod". A guard deletes
//! them, and the temp dir holds subnet.env, weft-cni's dataDir and host-local's dataDir.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use common::spawn_with_stdin;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_weft-cni");
const PLUGINS: &str = "/usr/lib/cni";

fn require_root() {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("Uid line in /proc/self/status");
    assert_eq!(
        euid, "0",
        "the weft-cni netns tests create network namespaces and need root: run `sudo cargo test -p weft-cni` (CI runs as root)"
    );
    for p in ["bridge", "host-local", "loopback"] {
        assert!(
            Path::new(PLUGINS).join(p).is_file(),
            "{PLUGINS}/{p} is missing: apt-get install containernetworking-plugins"
        );
    }
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (install iproute2)")
}

fn ip_ok(args: &[&str]) -> String {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ip_json(args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    serde_json::from_str(&ip_ok(&full)).unwrap()
}

/// Two named namespaces, deleted on drop (also when the test panics).
struct Namespaces {
    node: String,
    pod: String,
}

impl Namespaces {
    fn new() -> Namespaces {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{:x}{:x}{}",
            std::process::id() & 0xffff,
            nanos & 0xfffff,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // The guard exists before the first `ip netns add`, so a failure in between still
        // deletes whatever was created.
        let ns = Namespaces {
            node: format!("wcni{tag}n"),
            pod: format!("wcni{tag}p"),
        };
        ip_ok(&["netns", "add", &ns.node]);
        ip_ok(&["netns", "add", &ns.pod]);
        ip_ok(&["-n", &ns.node, "link", "set", "lo", "up"]);
        ns
    }

    fn pod_path(&self) -> String {
        format!("/var/run/netns/{}", self.pod)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.node] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A temp dir with subnet.env, plus the plugin config pointing into it.
struct Setup {
    dir: tempfile::TempDir,
    ns: Namespaces,
}

impl Setup {
    fn new() -> Setup {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("subnet.env"),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        Setup {
            dir,
            ns: Namespaces::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn conf(&self, version: &str, extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"cbr0","type":"flannel","subnetFile":"{}","dataDir":"{}","ipam":{{"dataDir":"{}"}},"delegate":{{"hairpinMode":true,"isDefaultGateway":true}}{extra}}}"#,
            self.path("subnet.env").display(),
            self.path("flannel").display(),
            self.path("ipam").display()
        )
    }

    /// Runs weft-cni inside the node namespace.
    fn cni(&self, verb: &str, id: &str, conf: &str) -> Output {
        self.cni_spawn(verb, id, conf, &self.ns.pod_path())
            .wait_with_output()
            .unwrap()
    }

    /// Runs `first` (a verb and its config) for container `id` in the pod at `netns` and,
    /// `delay` after it started, `second`, both at once; returns both outputs.
    fn race(
        &self,
        id: &str,
        netns: &str,
        first: (&str, &str),
        second: (&str, &str),
        delay: std::time::Duration,
    ) -> (Output, Output) {
        std::thread::scope(|sc| {
            let a = sc.spawn(|| {
                self.cni_spawn(first.0, id, first.1, netns)
                    .wait_with_output()
                    .unwrap()
            });
            let b = sc.spawn(|| {
                std::thread::sleep(delay);
                self.cni_spawn(second.0, id, second.1, netns)
                    .wait_with_output()
                    .unwrap()
            });
            (a.join().unwrap(), b.join().unwrap())
        })
    }

    /// Starts weft-cni inside the node namespace for the pod at `netns`, with `conf` written
    /// to its stdin.
    fn cni_spawn(&self, verb: &str, id: &str, conf: &str, netns: &str) -> std::process::Child {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.node, BIN])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", PLUGINS);
        spawn_with_stdin(&mut cmd, "ip netns exec weft-cni", conf.as_bytes())
    }

    /// host-local's reservations (files named by IP) held by container `id`.
    /// Asserts that nothing of container `id` is left after its DEL: no host-local IP, no
    /// state file, no lock file (it goes with the container).
    fn assert_nothing_left(&self, id: &str, what: &str) {
        assert!(self.leases_of(id).is_empty(), "{what}: IP leaked");
        assert!(
            !self.path("flannel").join(id).exists(),
            "{what}: state left"
        );
        assert!(
            !self.path("flannel/.locks").join(id).exists(),
            "{what}: the container's lock file left after DEL"
        );
    }

    fn leases_of(&self, id: &str) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.path("ipam/cbr0")) else {
            return Vec::new();
        };
        rd.map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
            .filter(|e| {
                fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .is_some_and(|l| l.trim() == id)
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn cni_ok(&self, verb: &str, id: &str, conf: &str) -> Vec<u8> {
        let out = self.cni(verb, id, conf);
        assert!(
            out.status.success(),
            "weft-cni {verb} failed: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Whether the host namespace has a link called `name`.
fn host_has_link(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).status.success()
}

/// The pod's IPv4 addresses on `dev` as "a.b.c.d/len", and its MTU.
fn addrs_and_mtu(ns: &str, dev: &str) -> (Vec<String>, u64) {
    let v = ip_json(&["-n", ns, "addr", "show", "dev", dev]);
    let link = &v[0];
    let addrs = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    (addrs, link["mtu"].as_u64().unwrap())
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn add_and_del_with_real_bridge_and_host_local() {
    let s = Setup::new();
    let host_had_cni0 = host_has_link("cni0");
    let id = "0123456789abcdef-add-del";
    let conf = s.conf("0.3.1", "");

    let result: Value = serde_json::from_slice(&s.cni_ok("ADD", id, &conf)).unwrap();
    assert_eq!(result["cniVersion"], "0.3.1", "{result}");
    let address = result["ips"][0]["address"].as_str().unwrap().to_string();
    let ip_only = address.split('/').next().unwrap().to_string();
    assert!(
        address.starts_with("10.244.1.") && address.ends_with("/24"),
        "{result}"
    );
    assert_eq!(result["ips"][0]["gateway"], "10.244.1.1", "{result}");

    // The pod has eth0 with that address and the MTU from subnet.env, and a route to the
    // cluster network through the bridge.
    let (addrs, mtu) = addrs_and_mtu(&s.ns.pod, "eth0");
    assert_eq!(addrs, vec![address.clone()]);
    assert_eq!(mtu, 1400);
    let routes = ip_json(&["-n", &s.ns.pod, "route", "show"]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "10.244.0.0/16" && r["gateway"] == "10.244.1.1"),
        "{routes}"
    );
    // The node namespace has the bridge with the gateway address; the host does not.
    let (bridge_addrs, _) = addrs_and_mtu(&s.ns.node, "cni0");
    assert_eq!(bridge_addrs, vec!["10.244.1.1/24".to_string()]);
    assert_eq!(
        host_has_link("cni0"),
        host_had_cni0,
        "cni0 must not appear on the host"
    );

    // weft-cni's state and host-local's allocation live in the test's temp dir.
    let state = s.path("flannel").join(id);
    assert!(state.is_file());
    let lease = s.path("ipam/cbr0").join(&ip_only);
    assert!(
        lease.is_file(),
        "host-local lease {} missing",
        lease.display()
    );

    // DEL releases the IP, removes the pod interface and the state; DEL again is fine.
    assert!(s.cni_ok("DEL", id, &conf).is_empty());
    assert!(!lease.exists(), "host-local still holds {ip_only}");
    assert!(!state.exists());
    assert!(
        !ip(&["-n", &s.ns.pod, "link", "show", "dev", "eth0"])
            .status
            .success(),
        "eth0 still in the pod"
    );
    assert!(s.cni_ok("DEL", id, &conf).is_empty());
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn check_with_real_bridge_at_1_0_0() {
    let s = Setup::new();
    let id = "0123456789abcdef-check";
    let conf = s.conf("1.0.0", "");
    let result = String::from_utf8(s.cni_ok("ADD", id, &conf)).unwrap();
    let result_json: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result_json["cniVersion"], "1.0.0");

    // CHECK with the ADD result as prevResult: the bridge plugin verifies the pod.
    let check_conf = s.conf("1.0.0", &format!(r#","prevResult":{}"#, result.trim()));
    assert!(s.cni_ok("CHECK", id, &check_conf).is_empty());

    // Break the pod (remove its address): CHECK must now fail with the delegate's error.
    let address = result_json["ips"][0]["address"].as_str().unwrap();
    ip_ok(&["-n", &s.ns.pod, "addr", "del", address, "dev", "eth0"]);
    let out = s.cni("CHECK", id, &check_conf);
    assert!(
        !out.status.success(),
        "CHECK passed on a pod without its IP"
    );
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(err["code"].as_u64().is_some(), "{err}");

    assert!(s.cni_ok("DEL", id, &conf).is_empty());
    let leases: Vec<_> = fs::read_dir(s.path("ipam/cbr0"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "leases left: {leases:?}");
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn two_pods_get_different_addresses_and_share_the_bridge() {
    let s = Setup::new();
    let second_pod = format!("{}2", s.ns.pod);
    ip_ok(&["netns", "add", &second_pod]);
    // Delete the extra namespace even if an assertion fails.
    struct Extra(String);
    impl Drop for Extra {
        fn drop(&mut self) {
            let _ = ip(&["netns", "del", &self.0]);
        }
    }
    let _extra = Extra(second_pod.clone());

    let conf = s.conf("0.3.1", "");
    let first: Value = serde_json::from_slice(&s.cni_ok("ADD", "pod-one", &conf)).unwrap();
    let out = s
        .cni_spawn(
            "ADD",
            "pod-two",
            &conf,
            &format!("/var/run/netns/{second_pod}"),
        )
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(first["ips"][0]["address"], second["ips"][0]["address"]);

    // Pod two reaches pod one over cni0 inside the node namespace.
    let target = first["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &second_pod,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &target,
        ])
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping {target}: {ping:?}");

    // Deleting pod one leaves pod two alone.
    assert!(s.cni_ok("DEL", "pod-one", &conf).is_empty());
    assert!(s.path("flannel/pod-two").is_file());
    let (addrs, _) = addrs_and_mtu(&second_pod, "eth0");
    assert_eq!(addrs.len(), 1);
}

/// A namespace of its own for one pod, deleted on drop.
struct PodNs(String);

impl PodNs {
    fn new(name: String) -> PodNs {
        ip_ok(&["netns", "add", &name]);
        PodNs(name)
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
    fn has_eth0(&self) -> bool {
        ip(&["-n", &self.0, "link", "show", "dev", "eth0"])
            .status
            .success()
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

fn ok_or_panic(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A runtime can send DEL while the ADD of the same container still runs (a sandbox that
/// timed out, kubelet restarting). Whatever the interleaving, the result must be one of the
/// two orders: everything set up (state, one IP, eth0) or nothing (no state, no IP, no eth0);
/// never an IP without state, which no later DEL could release.
#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn concurrent_add_and_del_of_one_container_leave_consistent_state() {
    let s = Setup::new();
    let conf = s.conf("1.0.0", "");
    const ROUNDS: usize = 24;
    let mut orders = [0usize; 2];
    for round in 0..ROUNDS {
        let pod = PodNs::new(format!("{}r{round}", s.ns.pod));
        let id = format!("race-{round}");
        // DEL starts up to 33 ms after ADD: across the rounds it lands before ADD saved its
        // state, while its delegate runs, and after it finished.
        let delay = std::time::Duration::from_millis(3 * (round as u64 % 12));
        let (add, del) = s.race(&id, &pod.path(), ("ADD", &conf), ("DEL", &conf), delay);
        ok_or_panic(&format!("round {round}: ADD"), &add);
        ok_or_panic(&format!("round {round}: DEL"), &del);
        let state = s.path("flannel").join(&id).is_file();
        let leases = s.leases_of(&id);
        let eth0 = pod.has_eth0();
        assert!(
            (state && leases.len() == 1 && eth0) || (!state && leases.is_empty() && !eth0),
            "round {round} (DEL {delay:?} after ADD): state file {state}, host-local leases {leases:?}, eth0 in the pod {eth0}"
        );
        orders[usize::from(state)] += 1;
        // The runtime's next DEL always leaves nothing behind.
        ok_or_panic(
            &format!("round {round}: final DEL"),
            &s.cni("DEL", &id, &conf),
        );
        s.assert_nothing_left(&id, &format!("round {round}"));
    }
    eprintln!(
        "{ROUNDS} rounds: ADD then DEL {} times, DEL then ADD {} times",
        orders[0], orders[1]
    );
}

/// A runtime's CHECK can run while the DEL of the same container runs (kubelet tearing a pod
/// down while its runtime checks it). Whatever the interleaving, CHECK either verifies the
/// pod (it ran first) or says the container is gone with a CNI error; it never panics, never
/// fails DEL, and leaves nothing behind: no state, no IP, no lock file once DEL is done.
#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn concurrent_check_and_del_of_one_container_leave_nothing_behind() {
    let s = Setup::new();
    let conf = s.conf("1.0.0", "");
    const ROUNDS: usize = 24;
    let mut outcomes = [0usize; 2];
    for round in 0..ROUNDS {
        let pod = PodNs::new(format!("{}c{round}", s.ns.pod));
        let id = format!("check-race-{round}");
        let add = s
            .cni_spawn("ADD", &id, &conf, &pod.path())
            .wait_with_output()
            .unwrap();
        ok_or_panic(&format!("round {round}: ADD"), &add);
        let result = String::from_utf8(add.stdout).unwrap();
        let check_conf = s.conf("1.0.0", &format!(r#","prevResult":{}"#, result.trim()));
        // DEL starts up to 33 ms after CHECK: before, during and after it.
        let delay = std::time::Duration::from_millis(3 * (round as u64 % 12));
        let (check, del) = s.race(
            &id,
            &pod.path(),
            ("CHECK", &check_conf),
            ("DEL", &conf),
            delay,
        );
        ok_or_panic(&format!("round {round}: DEL"), &del);
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(
            !stderr.contains("panicked"),
            "round {round}: CHECK {stderr}"
        );
        if check.status.success() {
            outcomes[0] += 1;
        } else {
            // The spec's error JSON, naming the container.
            let v: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap_or_else(|e| {
                panic!("round {round}: CHECK's stdout is not JSON ({e}): {stderr}")
            });
            assert!(
                v["code"].is_u64() && v["msg"].is_string(),
                "round {round}: {v}"
            );
            outcomes[1] += 1;
        }
        let check_outcome = if check.status.success() {
            "ok"
        } else {
            "failed"
        };
        s.assert_nothing_left(&id, &format!("round {round} (CHECK {check_outcome})"));
        assert!(!pod.has_eth0(), "round {round}: eth0 left in the pod");
    }
    eprintln!(
        "{ROUNDS} rounds: CHECK verified the pod {} times, found it gone {} times",
        outcomes[0], outcomes[1]
    );
}

/// A plugin killed while it holds a container's lock leaves no stale lock: the kernel drops
/// an flock with its last holder, and the next invocation goes ahead at once.
#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn an_invocation_waits_for_the_containers_lock_and_a_killed_holder_leaves_none() {
    let s = Setup::new();
    let conf = s.conf("1.0.0", "");
    let id = "locked-pod";
    let locks = s.path("flannel/.locks");
    fs::create_dir_all(&locks).unwrap();
    // Hold the lock the way weft-cni does (flock(2), exclusive); -o: only flock(1) holds it.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = Kill(
        Command::new("flock")
            .arg("-o")
            .arg(locks.join(id))
            .args(["sleep", "30"])
            .spawn()
            .expect("flock"),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut add = s.cni_spawn("ADD", id, &conf, &s.ns.pod_path());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        add.try_wait().unwrap().is_none(),
        "ADD went ahead while another process held the container's lock"
    );
    assert!(
        !s.path("flannel").join(id).exists(),
        "no state written while waiting"
    );
    let killed = std::time::Instant::now();
    drop(holder); // SIGKILL, as a crash
    let out = add.wait_with_output().unwrap();
    let after = killed.elapsed();
    ok_or_panic("ADD after the holder died", &out);
    eprintln!("ADD finished {after:?} after the lock holder was killed");
    assert!(after < std::time::Duration::from_secs(5), "{after:?}");
    assert!(s.path("flannel").join(id).is_file());
    ok_or_panic("DEL", &s.cni("DEL", id, &conf));
    assert!(s.leases_of(id).is_empty());
}
