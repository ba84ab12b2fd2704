//! The container image on the testbed, run exactly as the DaemonSet that `weft manifest`
//! renders runs it: the init container `install-cni` into an empty host bin dir, then weftd with
//! the manifest's command, args, env, hostPath volumes and capabilities (drop ALL, add NET_ADMIN
//! and NET_RAW), in the node's network namespace (`hostNetwork: true`). Pods are then made
//! through the plugins the image installed, and must reach each other across nodes.
//!
//! The default deployment (vxlan, iptables) and `--backend host-gw --nftables` each get their
//! own testbed; the network config written to etcd is the rendered ConfigMap's net-conf.json.
//!
//! Root. Needs `localhost/weft:dev` (`sudo scripts/image.sh --debug`; scripts/test.sh builds it
//! before the tests) and podman (scripts/deps.sh test).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_testbed::podman::{self, Container, DEV_IMAGE};
use weft_testbed::{CniSetup, Testbed, TestbedConfig, in_netns, wait_until};

/// The ConfigMap's net-conf.json of `weft manifest` with no backend flags.
const VXLAN_CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
/// ... with `--backend host-gw --nftables`.
const HOSTGW_NFT_CONFIG: &str =
    r#"{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"host-gw"}}"#;
const CONFIG_KEY: &str = "/coreos.com/network/config";
const PLUGINS: [&str; 5] = ["flannel", "bridge", "host-local", "portmap", "loopback"];

fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

/// `weft manifest --etcd-endpoints <endpoint> <flags> --output <output>`: its stdout.
fn render(endpoint: &str, flags: &[&str], output: &str) -> String {
    let out = weft()
        .args(["manifest", "--etcd-endpoints", endpoint])
        .args(flags)
        .args(["--output", output])
        .output()
        .unwrap();
    assert!(out.status.success(), "weft manifest: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `weft manifest --etcd-endpoints <endpoint> <flags> --output json`.
fn manifest(endpoint: &str, flags: &[&str]) -> Value {
    serde_json::from_str(&render(endpoint, flags, "json")).unwrap()
}

fn item<'a>(m: &'a Value, kind: &str) -> &'a Value {
    m["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// What kubelet does for one of the pod's containers, as podman options: the hostPath and
/// ConfigMap volumes it mounts (host paths under `host_root`, created as their `type` says),
/// the env (the downward API's `status.hostIP` is the node IP), the capabilities, the entrypoint.
struct Kubelet<'a> {
    pod: &'a Value,
    config_map: &'a Value,
    host_root: PathBuf,
    node_ip: String,
}

impl Kubelet<'_> {
    fn host_path(&self, p: &str) -> PathBuf {
        self.host_root.join(p.trim_start_matches('/'))
    }

    fn run_args(&self, c: &Value, netns: &str) -> (Vec<String>, Vec<String>) {
        let mut opts = vec![
            "--network".to_string(),
            format!("ns:{}", weft_testbed::netns_path(netns).display()),
        ];
        assert_eq!(self.pod["hostNetwork"], true);
        for m in c["volumeMounts"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let vol = self.pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("volume {name} not in the pod"));
            let host = if let Some(hp) = vol.get("hostPath") {
                let host = self.host_path(hp["path"].as_str().unwrap());
                match hp["type"].as_str() {
                    Some("DirectoryOrCreate") => std::fs::create_dir_all(&host).unwrap(),
                    Some("FileOrCreate") => {
                        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&host)
                            .unwrap();
                    }
                    other => panic!("hostPath type {other:?} of {name}"),
                }
                host
            } else if vol.get("configMap").is_some() {
                let dir = self.host_root.join("configmap").join(name);
                std::fs::create_dir_all(&dir).unwrap();
                for (k, v) in self.config_map["data"].as_object().unwrap() {
                    std::fs::write(dir.join(k), v.as_str().unwrap()).unwrap();
                }
                dir
            } else {
                panic!("volume {name}: only hostPath and configMap are emulated")
            };
            let ro = m["readOnly"].as_bool().unwrap_or(false);
            opts.extend(podman::volume(
                &host,
                m["mountPath"].as_str().unwrap().trim_end_matches('/'),
                ro,
            ));
        }
        let mut env = Vec::new();
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("status.hostIP") => self.node_ip.clone(),
                None => e["value"].as_str().unwrap().to_string(),
                Some(other) => panic!("env {name}: fieldRef {other} is not emulated"),
            };
            opts.extend(["-e".to_string(), format!("{name}={value}")]);
            env.push((name.to_string(), value));
        }
        let caps = &c["securityContext"]["capabilities"];
        if strings(&caps["drop"]).iter().any(|d| d == "ALL") {
            opts.push("--cap-drop=all".into());
        }
        for add in strings(&caps["add"]) {
            opts.push(format!("--cap-add={add}"));
        }
        let command = strings(&c["command"]);
        opts.extend(["--entrypoint".to_string(), command[0].clone()]);
        opts.push(c["image"].as_str().unwrap().to_string());
        // kubelet expands $(VAR) in command and args from the container's env.
        let expand = |s: &String| {
            env.iter()
                .fold(s.clone(), |s, (k, v)| s.replace(&format!("$({k})"), v))
        };
        let mut rest: Vec<String> = command[1..].iter().map(expand).collect();
        rest.extend(strings(&c["args"]).iter().map(expand));
        (opts, rest)
    }
}

/// A plain HTTP GET inside `ns` (the health server is plain HTTP).
fn http_get(ns: &str, addr: &str, path: &str) -> Option<(u16, String)> {
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let path = path.to_string();
    in_netns(ns, move || {
        weft_testbed::http::get(addr, &path, Duration::from_secs(2)).ok()
    })
    .ok()
    .flatten()
}

/// Runs `file` alone in an empty root (no libc, no loader): only a static binary starts.
fn runs_without_a_libc(file: &Path) -> Result<String, String> {
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(file, root.path().join("plugin")).unwrap();
    let out = Command::new("/usr/sbin/chroot")
        .arg(root.path())
        .arg("/plugin")
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && stdout.contains("supportedVersions") {
        Ok(stdout)
    } else {
        Err(format!(
            "{}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The node's underlay interface in the testbed (each node namespace's end of its switch port).
const UPLINK: &str = "eth0";

/// Node `n`'s subnet (`10.244.X.0/24`) from the FLANNEL_SUBNET (`10.244.X.1/24`) weftd wrote.
fn own_subnet(tb: &Testbed, n: usize) -> String {
    let env = std::fs::read_to_string(tb.subnet_file(n)).unwrap();
    let value = env
        .lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .unwrap_or_else(|| panic!("no FLANNEL_SUBNET in {env}"));
    let (ip, len) = value.split_once('/').unwrap();
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(ip) & mask))
}

/// What `nft list table ip flannel-ipv4` lacks of flannel's table for a node with `subnet`:
/// chain `forward` accepting the network both ways, chain `postrtg` with the six masquerade
/// rules in order (`fully-random` when the kernel has it). Empty when it is all there.
fn nft_problems(listing: &str, subnet: &str) -> Vec<String> {
    let net = "10.244.0.0/16";
    let chain = |name: &str| -> Option<Vec<String>> {
        let mut lines = listing.lines().map(str::trim);
        lines.find(|l| l.starts_with(&format!("chain {name} {{")))?;
        Some(
            lines
                .take_while(|l| *l != "}")
                .map(|l| l.split(" # handle").next().unwrap().trim().to_string())
                .filter(|l| !l.is_empty() && !l.starts_with("comment ") && !l.starts_with("type "))
                .collect(),
        )
    };
    let mut problems = Vec::new();
    if !listing.trim_start().starts_with("table ip flannel-ipv4 {") {
        problems.push("not table ip flannel-ipv4".to_string());
    }
    match chain("forward") {
        Some(rules) => {
            let want = [
                format!("ip saddr {net} accept"),
                format!("ip daddr {net} accept"),
            ];
            if rules != want {
                problems.push(format!("chain forward is {rules:?}, not {want:?}"));
            }
        }
        None => problems.push("no chain forward".into()),
    }
    match chain("postrtg") {
        Some(rules) => {
            let want = [
                "meta mark 0x00004000 return".to_string(),
                format!("ip saddr {subnet} ip daddr {net} return"),
                format!("ip saddr {net} ip daddr {subnet} return"),
                format!("ip saddr != {subnet} ip daddr {net} return"),
                format!("ip saddr {net} ip daddr != 224.0.0.0/4 masquerade"),
                format!("ip saddr != {net} ip daddr {net} masquerade"),
            ];
            let matches = rules.len() == want.len()
                && rules.iter().zip(&want).all(|(r, w)| {
                    r == w || (w.ends_with("masquerade") && *r == format!("{w} fully-random"))
                });
            if !matches {
                problems.push(format!("chain postrtg is {rules:?}, not {want:?}"));
            }
        }
        None => problems.push("no chain postrtg".into()),
    }
    problems
}

/// Whether `name` is an executable in a directory of PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn image_versions_and_labels_match_its_tag() {
    podman::require_image(DEV_IMAGE).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let tagged = format!("localhost/weft:{version}");
    podman::require_image(&tagged).unwrap();
    for (bin, name) in [
        ("/usr/local/bin/weftd", "weftd"),
        ("/usr/local/bin/weft", "weft"),
    ] {
        let mut args = vec![
            "run".to_string(),
            "--rm".into(),
            "--network".into(),
            "none".into(),
        ];
        args.extend(podman::run_options());
        args.extend([
            "--entrypoint".into(),
            bin.into(),
            tagged.clone(),
            "--version".into(),
        ]);
        let out = podman::podman(&args).unwrap();
        assert!(out.status.success(), "{out:?}");
        // weftd prints it on stderr, like flanneld.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.trim(), format!("{name} {version}"));
    }
    let labels = podman::podman_ok(&[
        "image".into(),
        "inspect".into(),
        "--format".into(),
        "{{json .Labels}}".into(),
        tagged.clone(),
    ])
    .unwrap();
    let labels: Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.title"], "weft");
    let entry = podman::podman_ok(&[
        "image".into(),
        "inspect".into(),
        "--format".into(),
        "{{json .Config.Entrypoint}}".into(),
        tagged,
    ])
    .unwrap();
    assert_eq!(
        entry.trim(),
        r#"["/usr/local/bin/weftd"]"#,
        "no shell entrypoint"
    );
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn daemonset_from_the_image_installs_cni_and_connects_pods_across_nodes() {
    daemonset_from_the_image("image", &[], VXLAN_CONFIG);
}

#[test]
#[ignore = "root tier: needs root (network namespaces, a real etcd); scripts/test.sh runs it"]
fn daemonset_from_the_image_host_gw_nftables_connects_pods_across_nodes() {
    daemonset_from_the_image(
        "image-host-gw-nft",
        &["--backend", "host-gw", "--nftables"],
        HOSTGW_NFT_CONFIG,
    );
}

/// The DaemonSet of `weft manifest <flags>` from the image on a two-node testbed (labelled
/// `label`), with the ConfigMap's net-conf.json (which must parse as `config`) in etcd: the
/// init container installs the plugins, weftd gets ready with only NET_ADMIN and NET_RAW,
/// pods on the two nodes ping each other. With `"EnableNFTables": true` the node has flannel's
/// nftables table and no iptables chains; with host-gw, no flannel.1 and a route via the peer.
fn daemonset_from_the_image(label: &str, flags: &[&str], config: &str) {
    weft_testbed::require_root().unwrap();
    podman::require_image(DEV_IMAGE).unwrap();
    let mut tb = Testbed::new(label, TestbedConfig::with_nodes(2)).unwrap();
    let endpoint = tb.etcd_endpoint();

    // The header's `weft network init` has the same flags.
    let yaml = render(&endpoint, flags, "yaml");
    let mut init_cmd =
        format!("weft network init --etcd-endpoints {endpoint} --network 10.244.0.0/16");
    for f in flags {
        init_cmd = format!("{init_cmd} {f}");
    }
    assert!(
        yaml.lines()
            .take_while(|l| l.starts_with('#'))
            .any(|l| l.trim_start_matches('#').trim() == init_cmd),
        "no `{init_cmd}` in the manifest's header:\n{yaml}"
    );

    let m = manifest(&endpoint, flags);
    let ds = item(&m, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let config_map = item(&m, "ConfigMap");
    let net_conf = config_map["data"]["net-conf.json"].as_str().unwrap();
    let want: Value = serde_json::from_str(config).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(net_conf).unwrap(),
        want,
        "the ConfigMap's net-conf.json"
    );
    tb.etcdctl(&["put", CONFIG_KEY, net_conf]).unwrap();
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "install-cni");
    let weftd = &pod["containers"][0];
    assert_eq!(weftd["name"], "weftd");
    // The test runs the image it built; the manifest names the same repository and tag.
    let image = format!("localhost/weft:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(weftd["image"], image.as_str(), "manifest default image");

    let mut containers: Vec<Container> = Vec::new();
    let mut started = Vec::new();
    for n in 0..2 {
        let node = tb.node(n).clone();
        let kubelet = Kubelet {
            pod,
            config_map,
            host_root: node.dir.clone(),
            node_ip: node.ip.to_string(),
        };
        // An empty host bin dir, as on an EKS node without aws-node (no bridge).
        let bin = kubelet.host_path("/opt/cni/bin");
        assert!(!bin.exists() || std::fs::read_dir(&bin).unwrap().next().is_none());

        let (opts, rest) = kubelet.run_args(init, &node.ns);
        let mut args = vec!["run".to_string(), "--rm".into()];
        args.extend(podman::run_options());
        args.extend(opts);
        args.extend(rest);
        let out = podman::podman_ok(&args).unwrap_or_else(|e| panic!("install-cni: {e}"));
        assert!(out.contains("delegate") && out.contains("bridge"), "{out}");
        let mut names: Vec<String> = std::fs::read_dir(&bin)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = PLUGINS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(names, want, "install-cni output:\n{out}");
        // Every plugin copied to the host runs without the host's libc (AL2 has glibc 2.26).
        for p in PLUGINS {
            runs_without_a_libc(&bin.join(p)).unwrap_or_else(|e| panic!("{p} is not static: {e}"));
        }

        let (opts, rest) = kubelet.run_args(weftd, &node.ns);
        let mut args = opts;
        args.extend(rest);
        let name = format!("{}-weftd-n{n}", tb.id());
        containers.push(Container::start(&name, &args).unwrap());
        started.push(Instant::now());
    }

    let health_port = weftd["ports"][0]["containerPort"].as_u64().unwrap();
    for n in 0..2 {
        let node = tb.node(n).clone();
        let addr = format!("{}:{health_port}", node.ip);
        let ready = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            http_get(&node.ns, &addr, "/readyz").filter(|(c, _)| *c == 200)
        });
        assert!(
            ready.is_some(),
            "weftd on node {n} not ready in 30 s; running={}; logs:\n{}",
            containers[n].running(),
            containers[n].logs()
        );
        eprintln!(
            "node {n}: weftd from the image ready {:?} after podman run",
            started[n].elapsed()
        );
        // Only NET_ADMIN (bit 12) and NET_RAW (bit 13) are in effect.
        let pid = containers[n].pid().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim();
        assert_eq!(
            cap_eff, "0000000000003000",
            "weftd's effective capabilities"
        );
        let subnet_env = std::fs::read_to_string(tb.subnet_file(n)).unwrap();
        assert!(subnet_env.contains("FLANNEL_SUBNET="), "{subnet_env}");
    }

    let subnets: Vec<String> = (0..2).map(|n| own_subnet(&tb, n)).collect();
    for n in 0..2 {
        let ns = tb.node(n).ns.clone();
        let logs = || format!("weftd logs:\n{}", containers[n].logs());
        // The iptables rules of every iptables backend on the host, as one text.
        let saves = || -> String {
            let mut all = String::new();
            for save in ["iptables-nft-save", "iptables-legacy-save"] {
                if !on_path(save) {
                    continue;
                }
                let out = tb.exec_output(&ns, &[save]).unwrap();
                assert!(out.status.success(), "node {n}: {save}: {out:?}");
                all.push_str(&format!(
                    "--- {save}\n{}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
            all
        };
        let nft_list = || tb.exec_output(&ns, &["nft", "list", "table", "ip", "flannel-ipv4"]);
        if want["EnableNFTables"] == true {
            let listing = || {
                let out = nft_list().unwrap();
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            };
            let table = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                listing().filter(|t| nft_problems(t, &subnets[n]).is_empty())
            });
            let table = table.unwrap_or_else(|| {
                let t = listing();
                let problems = t.as_deref().map(|t| nft_problems(t, &subnets[n]));
                panic!(
                    "node {n}: flannel-ipv4 not as flannel writes it in 10 s: {problems:?}\n{t:?}\n{}",
                    logs()
                )
            });
            eprintln!("node {n}: {}", table.trim_end().replace('\n', "\n    "));
            let rules = saves();
            assert!(
                !rules.contains("FLANNEL-"),
                "node {n}: FLANNEL- chains in nftables mode:\n{rules}\n{}",
                logs()
            );
        } else {
            // The iptables mode: the checks above would see its chains, and there is no table.
            let rules = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                Some(saves()).filter(|r| r.contains("-A FLANNEL-POSTRTG"))
            });
            assert!(
                rules.is_some(),
                "node {n}: no FLANNEL-POSTRTG rules in iptables mode in 10 s:\n{}\n{}",
                saves(),
                logs()
            );
            assert!(
                !nft_list().unwrap().status.success(),
                "node {n}: table ip flannel-ipv4 in iptables mode"
            );
        }
        let flannel_1 = tb
            .exec_output(&ns, &["ip", "link", "show", "dev", "flannel.1"])
            .unwrap()
            .status
            .success();
        if want["Backend"]["Type"] == "host-gw" {
            assert!(!flannel_1, "node {n}: host-gw made flannel.1; {}", logs());
            let other = 1 - n;
            let via = format!("via {} dev {UPLINK}", tb.node(other).ip);
            let route = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                let r = tb
                    .exec(&ns, &["ip", "-4", "route", "show", &subnets[other]])
                    .ok()?;
                r.contains(&via).then_some(r)
            });
            let route = route.unwrap_or_else(|| {
                panic!(
                    "node {n}: no route {} {via} in 10 s; routes:\n{:?}\n{}",
                    subnets[other],
                    tb.exec(&ns, &["ip", "-4", "route"]),
                    logs()
                )
            });
            eprintln!("node {n}: {}", route.trim());
        } else {
            assert!(flannel_1, "node {n}: vxlan without flannel.1; {}", logs());
        }
    }

    // Pods through what the image installed on the host, nothing from /usr/lib/cni.
    let mut pods = Vec::new();
    for n in 0..2 {
        let root = tb.node(n).dir.clone();
        let bin = root.join("opt/cni/bin");
        let setup = CniSetup {
            plugin: bin.join("flannel"),
            plugin_dirs: vec![bin.clone()],
            conflist: std::fs::read_to_string(root.join("etc/cni/net.d/10-flannel.conflist"))
                .unwrap(),
        };
        pods.push((tb.add_cni_pod(n, &setup).unwrap(), setup));
    }
    for (a, b) in [(0, 1), (1, 0)] {
        let stats = tb
            .ping(
                &pods[a].0.pod.ns,
                pods[b].0.pod.ip,
                5,
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(
            stats.received,
            5,
            "pod {} -> pod {}: {stats:?}; weftd logs:\n{}\n{}",
            pods[a].0.pod.ip,
            pods[b].0.pod.ip,
            containers[0].logs(),
            containers[1].logs()
        );
    }
    for (p, setup) in &pods {
        tb.del_cni_pod(p, setup).unwrap();
    }
    // Containers go before the namespaces they live in.
    for c in &containers {
        c.stop(Duration::from_secs(5)).unwrap();
    }
    drop(containers);
    tb.teardown().unwrap();
}
