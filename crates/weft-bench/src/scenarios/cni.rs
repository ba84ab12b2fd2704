//! cni: ADD and DEL latency of weft-cni (type flannel) delegating to bridge + host-local,
//! beside bridge + host-local invoked directly with the equivalent config, in the same run,
//! alternating pod by pod.
//!
//! Pod namespaces come from the testbed (`add_cni_pod` with a chain that only runs the
//! `static` IPAM plugin, so the sandbox exists and is cleaned up by the bed); the timed
//! plugin runs are spawned from a thread inside the node's namespace, like a runtime execs
//! plugins, and the clock covers exactly the plugin process (start to exit).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use weft_testbed::{CniPod, CniSetup, netns_path};

use crate::cluster::{self, Bins};
use crate::ns::NsRuntime;
use crate::report::{Table, fmt_ms, met, percentile, ratio_d};

const CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const PLUGIN_DIR: &str = "/usr/lib/cni";
/// A sandbox-only chain: `static` IPAM run as a plugin creates nothing in the kernel.
const SANDBOX_CONFLIST: &str = r#"{"name":"bench-sandbox","cniVersion":"0.3.1","plugins":[{"type":"static","ipam":{"type":"static","addresses":[{"address":"192.0.2.1/32"}]}}]}"#;

struct Invoker {
    rt: NsRuntime,
}

impl Invoker {
    /// Runs one plugin for `verb`; returns its wall time and stdout, or the plugin's error.
    fn run(
        &self,
        plugin: &Path,
        verb: &'static str,
        cid: &str,
        netns: &Path,
        conf: &Value,
    ) -> Result<(Duration, Vec<u8>)> {
        let plugin = plugin.to_path_buf();
        let (cid, netns) = (cid.to_string(), netns.to_path_buf());
        let stdin = serde_json::to_vec(conf)?;
        self.rt
            .call(move || async move {
                let mut c = Command::new(&plugin);
                c.env_clear()
                    .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                    .env("CNI_COMMAND", verb)
                    .env("CNI_CONTAINERID", &cid)
                    .env("CNI_NETNS", &netns)
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_PATH", PLUGIN_DIR)
                    .env(
                        "CNI_ARGS",
                        format!(
                            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid};K8S_POD_INFRA_CONTAINER_ID={cid}"
                        ),
                    )
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let t0 = Instant::now();
                let mut child = c.spawn()?;
                if let Some(mut i) = child.stdin.take() {
                    i.write_all(&stdin)?;
                }
                let out = child.wait_with_output()?;
                let took = t0.elapsed();
                if !out.status.success() {
                    bail!(
                        "{} {verb} for {cid} failed ({}): {}{}",
                        plugin.display(),
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Ok((took, out.stdout))
            })?
    }
}

fn check_add(out: &[u8], what: &str) -> Result<()> {
    let v: Value = serde_json::from_slice(out).with_context(|| format!("{what}: ADD result"))?;
    if v["ips"].as_array().is_none_or(|a| a.is_empty()) {
        bail!("{what}: ADD result without an IP: {v}");
    }
    Ok(())
}

pub fn run(bins: &Bins, pods: usize) -> Result<Table> {
    let mut tb = cluster::bed("bench-cni", 1, 9001, CONFIG)?;
    cluster::start_weftd(&mut tb, bins, 0)?;
    let subnet = cluster::wait_ready(&tb, 0, Duration::from_secs(30))?;
    let sandbox = CniSetup {
        plugin: bins.weft_cni.clone(),
        plugin_dirs: vec![PathBuf::from(PLUGIN_DIR)],
        conflist: SANDBOX_CONFLIST.to_string(),
    };
    let mut sandboxes: Vec<CniPod> = Vec::with_capacity(2 * pods + 2);
    for _ in 0..2 * pods + 2 {
        sandboxes.push(
            tb.add_cni_pod(0, &sandbox)
                .context("creating a pod sandbox")?,
        );
    }
    let paths = tb.cni_paths(0);
    let inv = Invoker {
        rt: NsRuntime::new(&tb.node(0).ns)?,
    };
    let weft_conf = json!({
        "type": "flannel",
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "delegate": {"hairpinMode": true, "isDefaultGateway": true},
        "subnetFile": paths.subnet_file,
        "dataDir": paths.flannel_data_dir,
        "ipam": {"dataDir": paths.ipam_data_dir},
    });
    let bridge = Path::new(PLUGIN_DIR).join("bridge");
    let weft = bins.weft_cni.as_path();
    let ns_of = |p: &CniPod| netns_path(&p.pod.ns);

    // Warm-up (creates cni0 and cni1, fills caches), and the direct chain's config: exactly
    // the delegate weft-cni saved, on its own bridge and range so both chains have room.
    let (ww, wd) = (&sandboxes[0], &sandboxes[1]);
    let (_, out) = inv.run(weft, "ADD", "warm-w", &ns_of(ww), &weft_conf)?;
    check_add(&out, "weft-cni warm-up")?;
    let saved = std::fs::read(paths.flannel_data_dir.join("warm-w"))
        .context("reading the delegate config weft-cni saved")?;
    let mut direct_conf: Value = serde_json::from_slice(&saved)?;
    direct_conf["bridge"] = json!("cni1");
    direct_conf["ipam"]["ranges"] = json!([[{"subnet": "10.99.0.0/24"}]]);
    direct_conf["ipam"]["dataDir"] = json!(tb.node(0).dir.join("cni/direct-networks"));
    let (_, out) = inv.run(&bridge, "ADD", "warm-d", &ns_of(wd), &direct_conf)?;
    check_add(&out, "bridge warm-up")?;
    inv.run(weft, "DEL", "warm-w", &ns_of(ww), &weft_conf)?;
    inv.run(&bridge, "DEL", "warm-d", &ns_of(wd), &direct_conf)?;

    let (mut wadd, mut dadd, mut wdel, mut ddel) = (
        Vec::with_capacity(pods),
        Vec::with_capacity(pods),
        Vec::with_capacity(pods),
        Vec::with_capacity(pods),
    );
    for phase in ["ADD", "DEL"] {
        for j in 0..pods {
            let (ws, ds) = (&sandboxes[2 + 2 * j], &sandboxes[3 + 2 * j]);
            let (wid, did) = (format!("w{j}"), format!("d{j}"));
            let run_w = |v: &mut Vec<Duration>| -> Result<()> {
                let (t, out) = inv.run(weft, phase_verb(phase), &wid, &ns_of(ws), &weft_conf)?;
                if phase == "ADD" {
                    check_add(&out, "weft-cni")?;
                }
                v.push(t);
                Ok(())
            };
            let run_d = |v: &mut Vec<Duration>| -> Result<()> {
                let (t, out) =
                    inv.run(&bridge, phase_verb(phase), &did, &ns_of(ds), &direct_conf)?;
                if phase == "ADD" {
                    check_add(&out, "bridge")?;
                }
                v.push(t);
                Ok(())
            };
            let (wv, dv) = if phase == "ADD" {
                (&mut wadd, &mut dadd)
            } else {
                (&mut wdel, &mut ddel)
            };
            // Alternate which chain goes first, so neither always runs on a warmer cache.
            if j % 2 == 0 {
                run_w(wv)?;
                run_d(dv)?;
            } else {
                run_d(dv)?;
                run_w(wv)?;
            }
        }
    }
    // Where weft-cni's extra time may go: its own exec (VERSION does no work) beside the exec
    // of a trivial program, and its state write (write + rename) beside the durable one it
    // used to do (write + fsync + rename + directory fsync), in its data dir.
    let (mut version, mut trivial, mut plain, mut durable) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // `cat` reads the config like a plugin does (`true` could exit before we write it).
    let cat_bin = Path::new("/bin/cat");
    for k in 0..20 {
        let (t, _) = inv.run(weft, "VERSION", "v", &ns_of(&sandboxes[0]), &weft_conf)?;
        version.push(t);
        let (t, _) = inv.run(cat_bin, "VERSION", "v", &ns_of(&sandboxes[0]), &weft_conf)?;
        trivial.push(t);
        plain.push(state_write(&paths.flannel_data_dir, k, false)?);
        durable.push(state_write(&paths.flannel_data_dir, k, true)?);
    }
    for s in &sandboxes {
        tb.del_cni_pod(s, &sandbox)
            .map_err(|e| anyhow!("removing sandbox {}: {e}", s.pod.ns))?;
    }

    let mut t = Table::new(
        &format!("cni: ADD/DEL latency over {pods} pods (plugin process start → exit)"),
        "bridge + host-local invoked directly with the equivalent config (the delegate weft-cni writes, on its own bridge and range), alternating pod by pod with weft-cni in the same run",
        &["op", "metric", "weft", "floor", "ratio", "goal", "met"],
    );
    for (op, w, d) in [("ADD", &wadd, &dadd), ("DEL", &wdel, &ddel)] {
        for (name, p) in [("median", 50.0), ("p99", 99.0)] {
            let (a, b) = (percentile(w, p), percentile(d, p));
            let ok =
                matches!((a, b), (Some(a), Some(b)) if a.as_secs_f64() <= 1.15 * b.as_secs_f64());
            t.row(vec![
                op.into(),
                name.into(),
                fmt_ms(a),
                fmt_ms(b),
                ratio_d(a, b),
                "≤ 1.15×".into(),
                met(ok),
            ]);
        }
    }
    let paired = |w: &[Duration], d: &[Duration]| {
        let v: Vec<f64> = w
            .iter()
            .zip(d)
            .map(|(a, b)| (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
            .collect();
        crate::report::percentile_f(&v, 50.0)
            .map(crate::report::fmt_ms_f)
            .unwrap_or_else(|| "n/a".into())
    };
    t.note(format!(
        "Paired per pod (weft-cni minus the direct chain on the neighbouring pod), median: ADD {}, DEL {}.",
        paired(&wadd, &dadd),
        paired(&wdel, &ddel)
    ));
    t.note(format!(
        "Node subnet {subnet} (from weftd's subnet.env); the kube-flannel cbr0 delegate (hairpinMode, isDefaultGateway, ipMasq false with --ip-masq). weft-cni's time includes its own exec of bridge (which execs host-local)."
    ));
    t.note(format!(
        "Where the difference comes from, measured in the same run (median of 20): starting weft-cni itself (CNI_COMMAND=VERSION, no work) {} against {} for `/bin/cat` (a trivial C program reading the same stdin) started the same way; its state write in its data dir (write + rename, as on ADD) {}, against {} for the durable write it did before (write, fsync, rename, fsync of the directory).",
        fmt_ms(percentile(&version, 50.0)),
        fmt_ms(percentile(&trivial, 50.0)),
        fmt_ms(percentile(&plain, 50.0)),
        fmt_ms(percentile(&durable, 50.0)),
    ));
    Ok(t)
}

/// One write + rename in `dir` (with `durable`: write + fsync + rename + directory fsync),
/// then removed; its duration.
fn state_write(dir: &Path, k: usize, durable: bool) -> Result<Duration> {
    std::fs::create_dir_all(dir)?;
    let (tmp, fin) = (
        dir.join(format!(".probe-{k}.tmp")),
        dir.join(format!("probe-{k}")),
    );
    let t0 = Instant::now();
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&[b'x'; 400])?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &fin)?;
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    let took = t0.elapsed();
    std::fs::remove_file(&fin)?;
    Ok(took)
}

fn phase_verb(phase: &str) -> &'static str {
    if phase == "ADD" { "ADD" } else { "DEL" }
}
