//! containerd with its CRI plugin on a node, the runtime kubelet drives on an EKS node.
//!
//! [`Containerd::start`] runs Debian's `containerd` inside a node's network namespace with its
//! own root, state dir and gRPC socket under `<node dir>/containerd`, the runc shim
//! (`io.containerd.runc.v2`) with cgroupfs, the `native` snapshotter, and the CRI plugin's
//! CNI dirs set to the node's `<node dir>/cni/bin` and `<node dir>/cni/net.d`. A test then
//! talks CRI (`runtime.v1`) to [`Containerd::socket`] as kubelet would.
//!
//! containerd, its shims, runc and the CNI plugins run in a mount namespace of their own
//! (private propagation: nothing they mount is seen outside) in which the node's dirs stand
//! where a real node has them, so the CNI chain runs with its defaults, unchanged:
//!
//! | inside containerd's mount namespace | is, on the host | holds |
//! |---|---|---|
//! | `/run` | `<node dir>/run` | `flannel/subnet.env` (weftd's `--subnet-file`), `netns/cni-<uuid>` (sandbox netns), `containerd/` (shim sockets, runc state) |
//! | `/var/lib/cni` | `<node dir>/cni` | `networks/` (host-local), `flannel/` (weft-cni's saved delegate configs), `results/` (libcni's cache) |
//! | `/var/lib` | a tmpfs | only the `/var/lib/cni` mount point |
//! | `/sys/fs/cgroup` | the same hierarchies as the test's | (re-mounted, see below) |
//!
//! So no host path is written (containerd 1.6 hard-codes `/run/containerd/s` for shim
//! sockets and libcni's `/var/lib/cni` cache), and two nodes never share state.
//!
//! Environment workarounds, each needed on the sandbox this was written in and harmless on a
//! normal machine:
//! - `ip netns exec` (how the testbed enters a node) mounts a fresh sysfs for the namespace,
//!   which drops the cgroup mounts under `/sys/fs/cgroup`; runc needs them, so the launch
//!   script mounts the same hierarchies again (read from `/proc/self/mountinfo`).
//! - Without CAP_SYS_RESOURCE (this sandbox is a container that lacks it), runc cannot set the
//!   sandbox's `oom_score_adj` to CRI's -998 and RunPodSandbox fails with "runc create failed:
//!   unable to start container process: can't get final child's PID from pipe: EOF";
//!   `restrict_oom_score_adj = true` keeps it at containerd's own value (as for rootless).
//!   (The CRI sandbox spec sets no rlimits, so the hard-limit problem does not arise.)
//! - cgroup v1 "hybrid" hosts: runc with cgroupfs (`SystemdCgroup = false`) works there, so
//!   that is what the runc runtime is configured with; there is no systemd to delegate to.
//!
//! Clean-up: containerd runs as pid 1 of its own pid namespace (`unshare --pid --fork
//! --kill-child`), so when it dies (stopped, or SIGKILLed by the testbed's teardown or by
//! this guard's `Drop`) the kernel kills every shim and sandbox process it started, and its
//! mount namespace with every netns and shm mount goes with them. Sandbox cgroups go under
//! a per-node parent ([`Containerd::cgroup_parent`]), which stop/drop remove. Whatever files
//! are left are in the testbed's temp dir.

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use crate::{PingStats, Testbed, TestbedError, cmd, log_tail, parse_ping_summary, wait_until};

/// The containerd namespace the CRI plugin keeps its images and sandboxes in.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// The snapshotter the CRI plugin is configured with: plain directory copies, which work on
/// any file system (the pause image is one small layer).
pub const SNAPSHOTTER: &str = "native";

/// How long containerd may take to serve its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERMed containerd may take to exit before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Programs [`Containerd::start`] needs, with the Debian package that has each.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("mount", "mount"),
];

/// `name` in one of the dirs of a PATH-style list, if it is there.
pub fn find_in_path(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `name` on PATH, if it is there.
pub fn find_program(name: &str) -> Option<PathBuf> {
    find_in_path(name, &std::env::var_os("PATH")?)
}

/// The first of [`PROGRAMS`] missing from `path` (a PATH-style list), as the error to give.
pub fn missing_program(path: &std::ffi::OsStr) -> Option<TestbedError> {
    PROGRAMS
        .iter()
        .find(|(program, _)| find_in_path(program, path).is_none())
        .map(|(program, package)| TestbedError::MissingProgram {
            program: program.to_string(),
            needed_for: "to run containerd's CRI on a testbed node".into(),
            install: format!("Debian: apt-get install {package}"),
        })
}

/// Fails with [`TestbedError::MissingProgram`] naming the first of [`PROGRAMS`] that is not
/// on PATH (and its package).
pub fn check_programs() -> Result<(), TestbedError> {
    match missing_program(&std::env::var_os("PATH").unwrap_or_default()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What goes into containerd's config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub runc: PathBuf,
    pub sandbox_image: String,
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl ContainerdConfig {
    /// containerd's config (version 2) as TOML.
    pub fn render(&self) -> String {
        let p = |p: &Path| toml_str(&p.display().to_string());
        format!(
            r#"# Written by weft-testbed (see its containerd module).
version = 2
root = {root}
state = {state}
# Not needed here; the opt plugin would also create /opt/containerd on the host.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {socket}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {image}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # No CAP_SYS_RESOURCE in a container: keep the sandbox's oom_score_adj at containerd's.
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = {runc}
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {bin}
    conf_dir = {conf}
    max_conf_num = 1
"#,
            root = p(&self.root),
            state = p(&self.state),
            socket = p(&self.socket),
            image = toml_str(&self.sandbox_image),
            snapshotter = SNAPSHOTTER,
            runc = p(&self.runc),
            bin = p(&self.cni_bin_dir),
            conf = p(&self.cni_conf_dir),
        )
    }
}

/// One mount of the cgroup file systems, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub fstype: String,
    pub source: String,
    pub mount_point: String,
    /// The super block options (`rw,memory`, `rw,nsdelegate`, ...).
    pub options: String,
}

/// The mounts at and under `/sys/fs/cgroup` (tmpfs, cgroup, cgroup2), in mount order.
/// A mount of a sub-tree (root not `/`) cannot be recreated by mounting the hierarchy
/// again, so it is an error.
pub fn cgroup_mounts(mountinfo: &str) -> Result<Vec<CgroupMount>, String> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let (root, mount_point) = (l[3], l[4]);
        if mount_point != "/sys/fs/cgroup" && !mount_point.starts_with("/sys/fs/cgroup/") {
            continue;
        }
        let (fstype, source, options) = (r[0], r[1], r[2]);
        if !matches!(fstype, "tmpfs" | "cgroup" | "cgroup2") {
            continue;
        }
        if root != "/" || mount_point.contains('\\') {
            return Err(format!(
                "the cgroup mount {mount_point} shows {root} of its hierarchy; mounting it again would show another tree: {line}"
            ));
        }
        out.push(CgroupMount {
            fstype: fstype.to_string(),
            source: source.to_string(),
            mount_point: mount_point.to_string(),
            options: options.to_string(),
        });
    }
    Ok(out)
}

/// Where runc (cgroupfs driver) puts a container whose cgroups path is the absolute
/// `parent/<id>`: `<mount>/<parent>` in every mounted hierarchy.
pub fn cgroup_parent_dirs(mounts: &[CgroupMount], parent: &str) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.fstype != "tmpfs")
        .map(|m| Path::new(&m.mount_point).join(parent.trim_start_matches('/')))
        .collect()
}

/// Single-quotes `s` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script that prepares containerd's mount namespace (see the module docs) and execs
/// containerd.
pub fn launch_script(
    mounts: &[CgroupMount],
    node_dir: &Path,
    containerd: &Path,
    config: &Path,
) -> String {
    let q = |p: &Path| sh_quote(&p.display().to_string());
    let mut s = String::from("set -e\n");
    for m in mounts {
        s.push_str(&format!(
            "mkdir -p {mp} && mount -t {fs} -o {opts} {src} {mp}\n",
            mp = sh_quote(&m.mount_point),
            fs = sh_quote(&m.fstype),
            opts = sh_quote(&m.options),
            src = sh_quote(&m.source),
        ));
    }
    s.push_str(&format!("mount --bind {} /run\n", q(&node_dir.join("run"))));
    s.push_str("mount -t tmpfs -o mode=755 tmpfs /var/lib\nmkdir /var/lib/cni\n");
    s.push_str(&format!(
        "mount --bind {} /var/lib/cni\n",
        q(&node_dir.join("cni"))
    ));
    s.push_str(&format!("exec {} --config {}\n", q(containerd), q(config)));
    s
}

/// A containerd running on a testbed node. Stop it with [`Containerd::stop`]; dropping it
/// SIGKILLs it (and so everything it started) and removes its cgroups.
#[derive(Debug)]
pub struct Containerd {
    node: usize,
    ns: String,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// `unshare`, the process the testbed spawned and tracks.
    launcher: Pid,
    /// containerd itself, the launcher's child (pid 1 of its own pid namespace).
    pid: Pid,
    cgroup_parent: String,
    cgroup_dirs: Vec<PathBuf>,
    stopped: bool,
}

impl Containerd {
    /// Starts containerd on node `node` of `tb` with the CRI's sandbox image `sandbox_image`
    /// (import it with [`Containerd::import_image`] before the first sandbox). The node's
    /// CNI bin and conf dirs are [`crate::CniNodePaths::bin_dir`] and `<node dir>/cni/net.d`;
    /// fill them before the first sandbox. Returns once containerd serves its socket.
    pub fn start(
        tb: &mut Testbed,
        node: usize,
        sandbox_image: &str,
    ) -> Result<Containerd, TestbedError> {
        check_programs()?;
        if node >= tb.nodes().len() {
            return Err(TestbedError::Invalid(format!(
                "Containerd::start: node {node} does not exist (testbed {} has {} nodes)",
                tb.id(),
                tb.nodes().len()
            )));
        }
        let n = tb.node(node).clone();
        let dir = n.dir.join("containerd");
        let paths = tb.cni_paths(node);
        let conf_dir = cni_conf_dir(&n.dir);
        for d in [
            dir.join("root"),
            dir.join("state"),
            n.dir.join("run/flannel"),
            paths.bin_dir.clone(),
            conf_dir.clone(),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| TestbedError::Io {
                what: format!("creating {}", d.display()),
                source: e,
            })?;
        }
        let program = |name: &str| {
            find_program(name).ok_or_else(|| TestbedError::MissingProgram {
                program: name.into(),
                needed_for: "to run containerd's CRI on a testbed node".into(),
                install: "Debian: apt-get install containerd runc".into(),
            })
        };
        let socket = dir.join("containerd.sock");
        let config = ContainerdConfig {
            root: dir.join("root"),
            state: dir.join("state"),
            socket: socket.clone(),
            runc: program("runc")?,
            sandbox_image: sandbox_image.to_string(),
            cni_bin_dir: paths.bin_dir.clone(),
            cni_conf_dir: conf_dir,
        };
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config.render()).map_err(|e| TestbedError::Io {
            what: format!("writing {}", config_path.display()),
            source: e,
        })?;
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| TestbedError::Io {
                what: "reading /proc/self/mountinfo".into(),
                source: e,
            })?;
        let mounts = cgroup_mounts(&mountinfo).map_err(|why| {
            TestbedError::Invalid(format!(
                "Containerd::start: cannot give runc its cgroups: {why}"
            ))
        })?;
        let cgroup_parent = format!("/weft-{}-n{node}", tb.id());
        let cgroup_dirs = cgroup_parent_dirs(&mounts, &cgroup_parent);
        let script = launch_script(&mounts, &n.dir, &program("containerd")?, &config_path);
        std::fs::write(dir.join("launch.sh"), &script).ok();
        let log = dir.join("containerd.log");
        let args: Vec<String> = [
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let started = Instant::now();
        let launcher = tb.spawn(&n.ns, &program("unshare")?, &args, &[], &log)?;
        let mut c = Containerd {
            node,
            ns: n.ns.clone(),
            dir,
            socket,
            log,
            launcher,
            pid: launcher,
            cgroup_parent,
            cgroup_dirs,
            stopped: false,
        };
        // containerd is the launcher's only child once the script has exec'd it.
        let exe = std::fs::canonicalize(program("containerd")?).unwrap_or_default();
        let ready = wait_until(START_TIMEOUT, Duration::from_millis(20), || {
            if !tb.is_running(launcher) {
                return Some(Err("exited during start-up".to_string()));
            }
            if c.pid == launcher {
                let child = children(launcher).into_iter().find(|p| {
                    std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == exe)
                })?;
                c.pid = child;
            }
            UnixStream::connect(&c.socket).ok().map(|_| Ok(()))
        });
        let fail = |c: &Containerd, what: String| TestbedError::Containerd {
            ns: c.ns.clone(),
            what,
            log: c.log.display().to_string(),
            log_tail: log_tail(&c.log, 30),
        };
        match ready {
            Some(Ok(())) => {}
            Some(Err(why)) => return Err(fail(&c, why)),
            None => {
                return Err(fail(
                    &c,
                    format!(
                        "its socket {} did not answer within {START_TIMEOUT:?}",
                        c.socket.display()
                    ),
                ));
            }
        }
        info!(
            ns = %c.ns,
            pid = %c.pid,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            socket = %c.socket.display(),
            "containerd up"
        );
        Ok(c)
    }

    /// The node it runs on.
    pub fn node(&self) -> usize {
        self.node
    }

    /// The node's namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Its gRPC socket (CRI's RuntimeService and ImageService, and containerd's own API).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `<node dir>/containerd`: config, root, state, log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// containerd's pid (as seen from the test).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The `cgroup_parent` to give sandboxes (`LinuxPodSandboxConfig.cgroup_parent`, as kubelet
    /// gives `/kubepods/...`): `/weft-<bed id>-n<node>`, unique, so stop/drop can remove it
    /// (runc removes a sandbox's own cgroup, never the parent it created).
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// `<mount>/<cgroup parent>` in every hierarchy.
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        &self.cgroup_dirs
    }

    /// A path as containerd sees it (e.g. a sandbox's `/var/run/netns/cni-<uuid>`), reachable
    /// from the test while containerd runs: `/proc/<pid>/root/<path>`.
    pub fn view(&self, path: &str) -> PathBuf {
        // An absolute symlink met under /proc/<pid>/root resolves against the *test's* root,
        // so Debian's /var/run -> /run link is followed here, by hand.
        let path = match path.strip_prefix("/var/run/") {
            Some(rest) => format!("run/{rest}"),
            None => path.trim_start_matches('/').to_string(),
        };
        Path::new(&format!("/proc/{}/root", self.pid)).join(path)
    }

    /// Where a path under containerd's `/run` or `/var/lib/cni` is on the host (the files,
    /// not the mounts made on them inside containerd's mount namespace).
    pub fn host_path(&self, path: &str) -> Option<PathBuf> {
        let node_dir = self.dir.parent()?;
        let rel = |prefix: &str| path.strip_prefix(prefix).map(|r| r.trim_start_matches('/'));
        if let Some(r) = rel("/var/run/").or_else(|| rel("/run/")) {
            Some(node_dir.join("run").join(r))
        } else {
            rel("/var/lib/cni/").map(|r| node_dir.join("cni").join(r))
        }
    }

    /// `ctr images import` of an image archive (e.g. from [`crate::oci::build_pause_image`])
    /// into the CRI's namespace, unpacked for its snapshotter.
    pub fn import_image(&self, tb: &Testbed, archive: &Path) -> Result<String, TestbedError> {
        let sock = self.socket.display().to_string();
        let archive = archive.display().to_string();
        tb.exec(
            &self.ns,
            &[
                "ctr",
                "--address",
                &sock,
                "-n",
                K8S_NAMESPACE,
                "images",
                "import",
                "--snapshotter",
                SNAPSHOTTER,
                &archive,
            ],
        )
    }

    /// Checks that `netns` (a sandbox's network namespace path, as containerd reports it) is
    /// one of this containerd's, and returns the path to open it from the test.
    fn sandbox_netns(&self, netns: &str) -> Result<PathBuf, TestbedError> {
        let name = netns
            .strip_prefix("/var/run/netns/")
            .or_else(|| netns.strip_prefix("/run/netns/"))
            .filter(|n| n.starts_with("cni-") && !n.contains('/'));
        let Some(_) = name else {
            return Err(TestbedError::Invalid(format!(
                "{netns:?} is not a sandbox network namespace of containerd (expected /var/run/netns/cni-<uuid>)"
            )));
        };
        Ok(self.view(netns))
    }

    /// `nsenter --net=<sandbox netns> <cmd...>`: runs a command in a sandbox's network
    /// namespace (the raw output, whatever the exit status).
    pub fn exec_in_sandbox(&self, netns: &str, cmd: &[&str]) -> Result<Output, TestbedError> {
        let path = self.sandbox_netns(netns)?;
        if cmd.is_empty() {
            return Err(TestbedError::Invalid(
                "exec_in_sandbox: empty command".into(),
            ));
        }
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", path.display()))
            .arg("--")
            .args(cmd);
        cmd::output(
            &mut c,
            &format!("running a command in sandbox netns {netns}"),
        )
    }

    /// `ping -n -q -c <count> -i 0.05 -w <timeout> <to>` from a sandbox's network namespace
    /// (like [`Testbed::ping`]).
    pub fn ping(
        &self,
        netns: &str,
        to: Ipv4Addr,
        count: u32,
        timeout: Duration,
    ) -> Result<PingStats, TestbedError> {
        let secs = timeout.as_secs_f64().ceil().max(1.0).to_string();
        let (count_s, to_s) = (count.max(1).to_string(), to.to_string());
        let argv = [
            "ping", "-n", "-q", "-c", &count_s, "-i", "0.05", "-w", &secs, &to_s,
        ];
        let out = self.exec_in_sandbox(netns, &argv)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_ping_summary(&stdout).ok_or_else(|| TestbedError::PingParse {
            cmd: format!("nsenter --net={netns} {} ({})", argv.join(" "), out.status),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        })
    }

    /// Stops containerd with SIGTERM (SIGKILL after 10 s), waits for it to exit, and removes
    /// its sandboxes' cgroup parent. Sandboxes still running die with it.
    pub fn stop(mut self, tb: &mut Testbed) -> Result<(), TestbedError> {
        self.stopped = true;
        let started = Instant::now();
        self.signal_containerd(Signal::SIGTERM);
        let exited = tb.wait_exit(self.launcher, STOP_TIMEOUT)?;
        if exited.is_none() {
            warn!(ns = %self.ns, "containerd did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it");
            self.signal_containerd(Signal::SIGKILL);
            tb.wait_exit(self.launcher, STOP_TIMEOUT)?;
        }
        debug!(ns = %self.ns, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "containerd stopped");
        let left = self.remove_cgroups();
        if left.is_empty() {
            Ok(())
        } else {
            Err(TestbedError::Invalid(format!(
                "containerd in {} stopped, but its cgroups could not be removed: {}",
                self.ns,
                left.join("; ")
            )))
        }
    }

    /// Signals containerd if it is still the launcher's child (so the pid is not reused).
    fn signal_containerd(&self, sig: Signal) {
        if self.pid != self.launcher && children(self.launcher).contains(&self.pid) {
            if let Err(e) = kill(self.pid, sig) {
                debug!(pid = %self.pid, %sig, "signalling containerd: {e}");
            }
        } else if self.pid == self.launcher {
            // Never exec'd: end the launcher (and, through --kill-child, its child).
            let _ = kill(self.launcher, Signal::SIGKILL);
        }
    }

    /// Removes the sandboxes' cgroups (children first, then the parent) in every hierarchy;
    /// returns what could not be removed.
    fn remove_cgroups(&self) -> Vec<String> {
        let mut left = Vec::new();
        for dir in &self.cgroup_dirs {
            if !dir.exists() {
                continue;
            }
            let children: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default();
            for d in children.iter().chain(std::iter::once(dir)) {
                // A cgroup can be removed once its last task is gone, which may lag a kill.
                let removed = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                    match std::fs::remove_dir(d) {
                        Ok(()) => Some(Ok(())),
                        Err(e) if e.kind() == ErrorKind::NotFound => Some(Ok(())),
                        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => None,
                        Err(e) => Some(Err(e)),
                    }
                });
                match removed {
                    Some(Ok(())) => {}
                    Some(Err(e)) => left.push(format!("{}: {e}", d.display())),
                    None => left.push(format!("{}: still busy after 5 s", d.display())),
                }
            }
        }
        left
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // A test failed (or forgot to stop it): SIGKILL containerd, which takes its pid
        // namespace (shims, sandboxes) and mount namespace (netns and shm mounts) with it.
        self.signal_containerd(Signal::SIGKILL);
        let gone = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            (!children(self.launcher).contains(&self.pid)).then_some(())
        });
        if gone.is_none() {
            warn!(ns = %self.ns, pid = %self.pid, "containerd still there 5 s after SIGKILL");
        }
        for left in self.remove_cgroups() {
            warn!(ns = %self.ns, "containerd clean-up: cgroup {left}");
        }
    }
}

/// `<node dir>/cni/net.d`: the node's CNI conf dir (the CRI plugin's `conf_dir`).
pub fn cni_conf_dir(node_dir: &Path) -> PathBuf {
    node_dir.join("cni/net.d")
}

/// The children of `pid` (from `/proc/<pid>/task/*/children`).
fn children(pid: Pid) -> Vec<Pid> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,nosuid,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 22 0:40 / /run rw - tmpfs tmpfs rw
";

    #[test]
    fn a_missing_program_is_named_with_its_package() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().as_os_str();
        let e = missing_program(path).unwrap().to_string();
        assert!(
            e.contains("`containerd` is not in PATH") && e.contains("apt-get install containerd"),
            "{e}"
        );
        for (p, _) in &PROGRAMS[..3] {
            std::fs::write(dir.path().join(p), "").unwrap();
        }
        let e = missing_program(path).unwrap().to_string();
        assert!(
            e.contains("`runc` is not in PATH") && e.contains("apt-get install runc"),
            "{e}"
        );
        for (p, _) in PROGRAMS {
            std::fs::write(dir.path().join(p), "").unwrap();
        }
        assert!(missing_program(path).is_none());
    }

    #[test]
    fn reads_the_cgroup_mounts() {
        let m = cgroup_mounts(MOUNTINFO_V1).unwrap();
        let points: Vec<&str> = m.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
        );
        assert_eq!(m[3].options, "rw,nosuid,cpu,cpuacct");
        assert_eq!(m[5].fstype, "cgroup2");
        assert_eq!(m[5].options, "rw,nsdelegate");
        let v2 = "30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(cgroup_mounts(v2).unwrap().len(), 1);
        let sub = "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert!(cgroup_mounts(sub).unwrap_err().contains("/docker/abc"));
    }

    #[test]
    fn cgroup_parent_dirs_in_every_hierarchy() {
        let m = cgroup_mounts(MOUNTINFO_V1).unwrap();
        let dirs = cgroup_parent_dirs(&m, "/weft-wt1-n0");
        let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/cpu/weft-wt1-n0",
                "/sys/fs/cgroup/memory/weft-wt1-n0",
                "/sys/fs/cgroup/cpu,cpuacct/weft-wt1-n0",
                "/sys/fs/cgroup/systemd/weft-wt1-n0",
                "/sys/fs/cgroup/unified/weft-wt1-n0",
            ]
        );
    }

    #[test]
    fn launch_script_remounts_cgroups_and_shadows_node_paths() {
        let m = cgroup_mounts(MOUNTINFO_V1).unwrap();
        let s = launch_script(
            &m[..2],
            Path::new("/tmp/tb/n0"),
            Path::new("/usr/bin/containerd"),
            Path::new("/tmp/tb/n0/containerd/config.toml"),
        );
        assert_eq!(
            s,
            "set -e\n\
             mkdir -p '/sys/fs/cgroup' && mount -t 'tmpfs' -o 'rw,mode=755' 'tmpfs' '/sys/fs/cgroup'\n\
             mkdir -p '/sys/fs/cgroup/cpu' && mount -t 'cgroup' -o 'rw,cpu' 'cgroup' '/sys/fs/cgroup/cpu'\n\
             mount --bind '/tmp/tb/n0/run' /run\n\
             mount -t tmpfs -o mode=755 tmpfs /var/lib\n\
             mkdir /var/lib/cni\n\
             mount --bind '/tmp/tb/n0/cni' /var/lib/cni\n\
             exec '/usr/bin/containerd' --config '/tmp/tb/n0/containerd/config.toml'\n"
        );
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn config_points_cri_at_the_node() {
        let c = ContainerdConfig {
            root: "/tb/n0/containerd/root".into(),
            state: "/tb/n0/containerd/state".into(),
            socket: "/tb/n0/containerd/containerd.sock".into(),
            runc: "/usr/sbin/runc".into(),
            sandbox_image: "localhost/weft-test/pause:wt1".into(),
            cni_bin_dir: "/tb/n0/cni/bin".into(),
            cni_conf_dir: "/tb/n0/cni/net.d".into(),
        };
        let t = c.render();
        for want in [
            "root = \"/tb/n0/containerd/root\"",
            "state = \"/tb/n0/containerd/state\"",
            "address = \"/tb/n0/containerd/containerd.sock\"",
            "sandbox_image = \"localhost/weft-test/pause:wt1\"",
            "snapshotter = \"native\"",
            "BinaryName = \"/usr/sbin/runc\"",
            "SystemdCgroup = false",
            "restrict_oom_score_adj = true",
            "bin_dir = \"/tb/n0/cni/bin\"",
            "conf_dir = \"/tb/n0/cni/net.d\"",
            "\"io.containerd.internal.v1.opt\"",
        ] {
            assert!(t.contains(want), "{want} missing from:\n{t}");
        }
    }

    #[test]
    fn host_paths_of_containerd_paths() {
        let c = Containerd {
            node: 0,
            ns: "wt1-n0".into(),
            dir: "/tb/n0/containerd".into(),
            socket: "/tb/n0/containerd/containerd.sock".into(),
            log: "/tb/n0/containerd/containerd.log".into(),
            launcher: Pid::from_raw(1),
            pid: Pid::from_raw(1),
            cgroup_parent: String::new(),
            cgroup_dirs: Vec::new(),
            stopped: true,
        };
        assert_eq!(
            c.host_path("/var/run/netns/cni-1").unwrap(),
            Path::new("/tb/n0/run/netns/cni-1")
        );
        assert_eq!(
            c.host_path("/run/flannel/subnet.env").unwrap(),
            Path::new("/tb/n0/run/flannel/subnet.env")
        );
        assert_eq!(
            c.host_path("/var/lib/cni/networks/cbr0").unwrap(),
            Path::new("/tb/n0/cni/networks/cbr0")
        );
        assert_eq!(c.host_path("/etc/passwd"), None);
        assert_eq!(
            c.view("/var/run/netns/x"),
            Path::new("/proc/1/root/run/netns/x")
        );
        assert_eq!(c.view("/etc/hosts"), Path::new("/proc/1/root/etc/hosts"));
        assert!(c.sandbox_netns("/etc/passwd").is_err());
        assert!(c.sandbox_netns("/var/run/netns/cni-../../x").is_err());
        assert!(c.sandbox_netns("/var/run/netns/cni-1234").is_ok());
    }
}
