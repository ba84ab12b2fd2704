//! What the planner looks at: a read-only snapshot of the node (directory listings, saved
//! iptables tables, the nft table, ip rules, routes and links), and the code that takes it.
//! Commands run through [`Host`], so tests can hand in canned output; files are read at the
//! injected paths.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_cni::install::is_network_config_name;

/// Largest CNI config read from the conf dir (real ones are a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Every path the command reads or changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// CNI conf dir (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// CNI bin dir (`/opt/cni/bin`).
    pub bin_dir: PathBuf,
    /// ipamd's checkpoint and sockets (`/var/run/aws-node`).
    pub aws_node_run_dir: PathBuf,
    /// The VPC CNI's logs (`/var/log/aws-routed-eni`).
    pub aws_log_dir: PathBuf,
    /// egress-cni's host-local data dir holding `egress-v6-ipam` (`/run/cni/v4pd`).
    pub egress_v4pd_dir: PathBuf,
    /// egress-cni's host-local data dir holding `egress-v4-ipam` (`/run/cni/v6pd`).
    pub egress_v6pd_dir: PathBuf,
    /// libcni's result cache (`/var/lib/cni/results`).
    pub cni_results_dir: PathBuf,
    /// The network policy agent's bpffs pins (`/sys/fs/bpf/globals/aws`).
    pub aws_bpf_dir: PathBuf,
    /// systemd-networkd's per-link state files (`/run/systemd/netif/links`).
    pub networkd_links_dir: PathBuf,
    /// Where the legacy backend lists the tables that exist (`/proc/net`).
    pub proc_net: PathBuf,
    /// weftd's subnet file (`/run/flannel/subnet.env`): its FLANNEL_NETWORK is the overlay.
    pub subnet_file: PathBuf,
}

/// An iptables backend, e.g. `iptables-nft`: `<base>-save` and `<base>-restore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `iptables-legacy`, `iptables-nft`, `ip6tables-legacy` or `ip6tables-nft`.
    pub name: &'static str,
    /// The command the `-save` / `-restore` suffixes go on (a name on PATH or a path).
    pub base: String,
    /// Legacy (x_tables) rather than nf_tables.
    pub legacy: bool,
    /// ip6tables rather than iptables.
    pub v6: bool,
}

impl Backend {
    pub fn save(&self) -> String {
        format!("{}-save", self.base)
    }

    pub fn restore(&self) -> String {
        format!("{}-restore", self.base)
    }

    /// The file listing the legacy tables that exist in this network namespace.
    fn names_file(&self, proc_net: &Path) -> PathBuf {
        proc_net.join(if self.v6 {
            "ip6_tables_names"
        } else {
            "ip_tables_names"
        })
    }
}

/// The programs the command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub ip: String,
    pub nft: String,
    pub backends: Vec<Backend>,
}

/// The iptables tables the VPC CNI writes to.
pub const TABLES: &[&str] = &["nat", "mangle", "filter"];

/// A directory entry's kind (symlinks not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    /// The content (symlinks followed) of network config files in the conf dir.
    pub content: Option<Vec<u8>>,
}

#[cfg(test)]
impl Entry {
    /// An entry without content.
    pub fn new(name: &str, kind: Kind) -> Entry {
        Entry {
            name: name.to_string(),
            kind,
            content: None,
        }
    }
}

/// A directory's entries, sorted by name; a missing directory is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub dir: PathBuf,
    pub entries: Result<Vec<Entry>, String>,
}

impl Listing {
    pub fn names(&self) -> Vec<&str> {
        match &self.entries {
            Ok(e) => e.iter().map(|e| e.name.as_str()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Which VPC CNI state path this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateRole {
    AwsNodeRun,
    EgressV4pd,
    EgressV6pd,
    Bpf,
    Logs,
}

/// A state file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathState {
    pub role: StateRole,
    pub path: PathBuf,
    /// `None` when it does not exist.
    pub kind: Option<Kind>,
    /// Its entries' names (a directory), sorted.
    pub entries: Vec<String>,
    /// Names in its parent that start with `<name>.weft-bak` (taken backup names).
    pub backups: Vec<String>,
}

/// One iptables backend's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSnapshot {
    pub backend: Backend,
    /// `None`: `<base>-save` is not installed.
    pub installed: bool,
    /// (table, `-save -t <table>` text) for the tables that exist, or why they could not be read.
    pub tables: Result<Vec<(String, String)>, String>,
}

/// `nft list table ip aws-cni`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftState {
    /// nft is not installed.
    NotInstalled,
    Absent,
    /// The listing.
    Present(String),
    Failed(String),
}

/// Everything the planner looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub conf_dir: Listing,
    pub bin_dir: Listing,
    pub results_dir: Listing,
    pub state: Vec<PathState>,
    pub iptables: Vec<BackendSnapshot>,
    pub nft: NftState,
    /// `ip -j rule`.
    pub rules: Result<String, String>,
    /// `ip -4 -j route show table all`.
    pub routes: Result<String, String>,
    /// `ip -j link show`.
    pub links: Result<String, String>,
    /// systemd-networkd link state files, by ifindex.
    pub networkd: BTreeMap<u32, String>,
    /// What answered in ipamd's place, if ipamd is still running.
    pub ipamd: Option<String>,
    /// The overlay network and where it came from (`--overlay-network`, or FLANNEL_NETWORK
    /// of the subnet file); `Ok(None)` when neither says.
    pub overlay: Result<Option<(ipnet::Ipv4Net, String)>, String>,
    /// The subnet file it was looked for in.
    pub subnet_file: PathBuf,
}

/// What a command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    pub success: bool,
    /// `exit status: 1`, ...
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// The seam to the node's processes and daemons.
pub trait Host {
    /// Runs `program args` with `stdin`, capturing its output.
    fn run(&mut self, program: &str, args: &[String], stdin: Option<&str>)
    -> io::Result<CmdOutput>;
    /// Whether `program` (a path, or a name on PATH) exists.
    fn has_program(&self, program: &str) -> bool;
    /// Whether ipamd still answers (its unix socket under `run_dir`, or 127.0.0.1:50051):
    /// what answered.
    fn ipamd_answers(&self, run_dir: &Path) -> Option<String>;
}

/// The real node.
#[derive(Debug, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn run(
        &mut self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> io::Result<CmdOutput> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that exits without reading closes the pipe; its status tells why.
            let _ = pipe.write_all(input.as_bytes());
        }
        let out = child.wait_with_output()?;
        Ok(CmdOutput {
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn has_program(&self, program: &str) -> bool {
        if program.contains('/') {
            return Path::new(program).is_file();
        }
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
    }

    fn ipamd_answers(&self, run_dir: &Path) -> Option<String> {
        let sock = run_dir.join("ipamd.sock");
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            return Some(format!(
                "ipamd's socket {} accepts connections",
                sock.display()
            ));
        }
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 50051));
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
            .ok()
            .map(|_| "something listens on ipamd's gRPC port 127.0.0.1:50051".to_string())
    }
}

fn kind_of(meta: &fs::Metadata) -> Kind {
    let t = meta.file_type();
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

/// Lists `dir` (missing: empty); with `configs`, reads network config files' content.
pub fn list_dir(dir: &Path, configs: bool) -> Listing {
    let entries = (|| -> io::Result<Vec<Entry>> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue; // gone meanwhile
            };
            let kind = kind_of(&meta);
            let content = (configs
                && is_network_config_name(&name)
                && fs::metadata(entry.path())
                    .is_ok_and(|m| m.is_file() && m.len() <= MAX_CONFIG_BYTES))
            .then(|| fs::read(entry.path()).ok())
            .flatten();
            out.push(Entry {
                name,
                kind,
                content,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    })()
    .map_err(|e| format!("cannot list {}: {e}", dir.display()));
    Listing {
        dir: dir.to_path_buf(),
        entries,
    }
}

fn path_state(role: StateRole, path: &Path) -> PathState {
    let kind = fs::symlink_metadata(path).ok().map(|m| kind_of(&m));
    let mut entries: Vec<String> = if kind == Some(Kind::Dir) {
        fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    entries.sort();
    let mut backups = Vec::new();
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let prefix = format!("{}.weft-bak", name.to_string_lossy());
        if let Ok(rd) = fs::read_dir(parent) {
            backups = rd
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect();
        }
    }
    backups.sort();
    PathState {
        role,
        path: path.to_path_buf(),
        kind,
        entries,
        backups,
    }
}

fn run_text(host: &mut dyn Host, program: &str, args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let shown = format!("{program} {}", args.join(" "));
    match host.run(program, &args, None) {
        Ok(out) if out.success => Ok(out.stdout),
        Ok(out) => Err(format!(
            "`{shown}` failed ({}): {}",
            out.status,
            out.stderr.trim()
        )),
        Err(e) => Err(format!("cannot run `{shown}`: {e}")),
    }
}

fn backend_tables(
    host: &mut dyn Host,
    backend: &Backend,
    proc_net: &Path,
) -> Result<Vec<(String, String)>, String> {
    let tables: Vec<&str> = if backend.legacy {
        // `<legacy>-save -t nat` would create the legacy nat table (and its hooks) in this
        // namespace if it does not exist yet, so read only the tables the kernel lists.
        let file = backend.names_file(proc_net);
        let names = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        TABLES
            .iter()
            .copied()
            .filter(|t| names.lines().any(|l| l.trim() == *t))
            .collect()
    } else {
        TABLES.to_vec()
    };
    let save = backend.save();
    tables
        .into_iter()
        .map(|t| run_text(host, &save, &["-t", t]).map(|text| (t.to_string(), text)))
        .collect()
}

fn nft_state(host: &mut dyn Host, nft: &str) -> NftState {
    if !host.has_program(nft) {
        return NftState::NotInstalled;
    }
    let args: Vec<String> = ["list", "table", "ip", "aws-cni"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match host.run(nft, &args, None) {
        Ok(out) if out.success => NftState::Present(out.stdout),
        Ok(out) if out.stderr.contains("No such file or directory") => NftState::Absent,
        Ok(out) => NftState::Failed(format!(
            "`{nft} list table ip aws-cni` failed ({}): {}",
            out.status,
            out.stderr.trim()
        )),
        Err(e) => NftState::Failed(format!("cannot run `{nft} list table ip aws-cni`: {e}")),
    }
}

fn networkd_links(dir: &Path) -> BTreeMap<u32, String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let index: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((index, fs::read_to_string(e.path()).ok()?))
        })
        .collect()
}

/// FLANNEL_NETWORK of weftd's subnet file; `Ok(None)` when the file does not exist.
pub fn overlay_from_subnet_file(path: &Path) -> Result<Option<(ipnet::Ipv4Net, String)>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let env = weft_core::subnet_env::SubnetEnv::parse(&text)
        .map_err(|e| format!("{} is not a usable subnet file: {e}", path.display()))?;
    Ok(env
        .network
        .map(|n| (n.trunc(), format!("FLANNEL_NETWORK of {}", path.display()))))
}

/// Takes the snapshot. Changes nothing.
pub fn take(host: &mut dyn Host, paths: &Paths, tools: &Tools) -> Snapshot {
    let iptables = tools
        .backends
        .iter()
        .map(|b| {
            let installed = host.has_program(&b.save());
            BackendSnapshot {
                backend: b.clone(),
                installed,
                tables: if installed {
                    backend_tables(host, b, &paths.proc_net)
                } else {
                    Ok(Vec::new())
                },
            }
        })
        .collect();
    let state = [
        (StateRole::AwsNodeRun, &paths.aws_node_run_dir),
        (StateRole::EgressV4pd, &paths.egress_v4pd_dir),
        (StateRole::EgressV6pd, &paths.egress_v6pd_dir),
        (StateRole::Bpf, &paths.aws_bpf_dir),
        (StateRole::Logs, &paths.aws_log_dir),
    ]
    .into_iter()
    .map(|(role, p)| path_state(role, p))
    .collect();
    Snapshot {
        conf_dir: list_dir(&paths.conf_dir, true),
        bin_dir: list_dir(&paths.bin_dir, false),
        results_dir: list_dir(&paths.cni_results_dir, false),
        state,
        iptables,
        nft: nft_state(host, &tools.nft),
        rules: run_text(host, &tools.ip, &["-j", "rule"]),
        routes: run_text(
            host,
            &tools.ip,
            &["-4", "-j", "route", "show", "table", "all"],
        ),
        links: run_text(host, &tools.ip, &["-j", "link", "show"]),
        networkd: networkd_links(&paths.networkd_links_dir),
        ipamd: host.ipamd_answers(&paths.aws_node_run_dir),
        overlay: overlay_from_subnet_file(&paths.subnet_file),
        subnet_file: paths.subnet_file.clone(),
    }
}
