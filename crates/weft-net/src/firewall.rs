//! iptables adapter: reads the rules with one `iptables-save`, lets
//! `weft_core::rules::plan_sync` decide, and applies the difference with one atomic
//! `iptables-restore --noflush`. A check that finds everything in place forks exactly one
//! process and changes nothing (flannel forks one `iptables -C` per rule every 5 s).
//! IPv6 is the same with `ip6tables-save`/`ip6tables-restore` of the same backend
//! ([`Iptables::ip6`]): a dual-stack node keeps two `Iptables`, one per family.
//!
//! Every child process has a deadline (it is killed when it passes), and `iptables-restore`
//! waits at most [`LOCK_WAIT`] for the xtables lock (iptables-legacy's `/run/xtables.lock`);
//! meanwhile the caller is told who holds the lock, and a busy lock is a distinct error
//! ([`FirewallError::LockBusy`]) the caller retries.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::info;
use weft_core::family::Family;
use weft_core::rules::{FORWARD_CHAIN, MASQ_CHAIN, Rule, Table, plan_remove, plan_sync};
use weft_core::xtables::{Backend, BackendChoice, detect_backend, lock_holders};

/// How long one `iptables-restore` waits for the xtables lock (`--wait`) before it gives up
/// (the caller then retries).
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// The deadline of an `iptables-save` (a node with tens of thousands of kube-proxy rules
/// dumps them in about a second).
pub const SAVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The deadline of an `iptables-restore`: the lock wait plus the time to apply.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(LOCK_WAIT.as_secs() + 30);
/// The deadline of `iptables --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// iptables' exit status for a resource problem (a busy xtables lock among them).
const RESOURCE_PROBLEM: i32 = 4;
/// The lock file iptables-legacy takes unless `XTABLES_LOCKFILE` names another.
pub const XTABLES_LOCK: &str = "/run/xtables.lock";

/// A failure to read or write the rules, naming the command.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "failed to run {cmd}: {source}; install {} (apt-get install {})",
        package_of(cmd),
        package_of(cmd)
    )]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}{}", failure_hint(stderr))]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{cmd} did not finish within {} s and was killed{}", after.as_secs(), hung_hint(lock))]
    Timeout {
        cmd: String,
        after: Duration,
        /// Who held the xtables lock when it was killed, if anyone did.
        lock: Option<LockWait>,
    },
    #[error("{cmd} gave up after {} s {wait}; retrying", LOCK_WAIT.as_secs())]
    LockBusy { cmd: String, wait: LockWait },
}

/// The Debian package that has `cmd`'s program.
fn package_of(cmd: &str) -> &'static str {
    if cmd.starts_with("nft") {
        "nftables"
    } else {
        "iptables"
    }
}

impl FirewallError {
    /// The lock wait behind a [`FirewallError::LockBusy`].
    pub fn lock_wait(&self) -> Option<&LockWait> {
        match self {
            FirewallError::LockBusy { wait, .. } => Some(wait),
            _ => None,
        }
    }
}

/// What usually lies behind an iptables failure message that does not say it.
fn failure_hint(stderr: &str) -> &'static str {
    if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") {
        "; weftd needs CAP_NET_ADMIN and CAP_NET_RAW to program iptables"
    } else if stderr.contains("unable to initialize table") || stderr.contains("can't initialize") {
        "; check that weftd has CAP_NET_RAW and CAP_NET_ADMIN (iptables-legacy needs both) and that the kernel has the table (modprobe iptable_nat iptable_filter, or nf_tables for iptables-nft)"
    } else {
        ""
    }
}

fn hung_hint(lock: &Option<LockWait>) -> String {
    match lock {
        Some(w) => format!(" ({w})"),
        None => String::new(),
    }
}

/// The process holding the xtables lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Its PID as seen from weftd (0: not visible from weftd's PID namespace).
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`), when readable.
    pub comm: Option<String>,
}

/// A wait for the xtables lock: which file, and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockWait {
    pub lock_file: PathBuf,
    pub holder: LockHolder,
    /// How long this command has waited so far.
    pub waited: Duration,
}

impl fmt::Display for LockWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.lock_file.display();
        match (self.holder.pid, &self.holder.comm) {
            (0, _) => write!(
                f,
                "waiting for the xtables lock {file}, held by a process outside weftd's PID namespace"
            )?,
            (pid, Some(comm)) => write!(
                f,
                "waiting for the xtables lock held by PID {pid} ({comm}) on {file}"
            )?,
            (pid, None) => write!(
                f,
                "waiting for the xtables lock held by PID {pid} on {file}"
            )?,
        }
        write!(f, " for {} s", self.waited.as_secs())
    }
}

/// The xtables lock file iptables-legacy uses: `$XTABLES_LOCKFILE`, else /run/xtables.lock.
pub fn xtables_lock_file() -> PathBuf {
    match std::env::var_os("XTABLES_LOCKFILE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(XTABLES_LOCK),
    }
}

/// Who holds a lock on `lock_file` (from /proc/locks), other than `except` (our own child,
/// once it got the lock). None when nobody does or it cannot be told.
pub fn lock_holder(lock_file: &Path, except: Option<u32>) -> Option<LockHolder> {
    let meta = std::fs::metadata(lock_file).ok()?;
    let (major, minor) = dev_major_minor(meta.dev());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = lock_holders(&locks, major, minor, meta.ino())
        .into_iter()
        .find(|p| Some(*p) != except)?;
    let comm = (pid != 0)
        .then(|| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
        .flatten()
        .map(|c| c.trim().to_string());
    Some(LockHolder { pid, comm })
}

/// glibc's split of a `dev_t` into major and minor numbers.
fn dev_major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// The iptables binaries to use: those of one backend (`iptables-legacy-save` …, to match
/// kube-proxy), or whatever `iptables` points to.
#[derive(Debug, Clone)]
pub struct Iptables {
    /// The family these binaries write: `iptables*` for IPv4, `ip6tables*` for IPv6.
    pub family: Family,
    pub save: String,
    pub restore: String,
    pub iptables: String,
    /// The backend these binaries are (None: unknown, whatever `iptables` is).
    pub backend: Option<Backend>,
    /// The xtables lock file (iptables-legacy's).
    pub lock_file: PathBuf,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables::for_family(Family::V4, None)
    }
}

/// Runs one command with a deadline and no lock reporting; its output, or None if it could not
/// run or failed (detection is best effort, like kube-proxy's wrapper).
async fn output_of(program: &str, args: &[&str]) -> Result<String, FirewallError> {
    Iptables::default()
        .run(program, args, None, SAVE_TIMEOUT, None)
        .await
}

/// Which backend the host uses, by what `iptables-legacy-save`, `ip6tables-legacy-save`,
/// `iptables-nft-save` and `ip6tables-nft-save` print (run at once, each with a deadline); see
/// [`weft_core::xtables`]. None when neither `iptables-legacy-save` nor `iptables-nft-save`
/// can be run at all (an iptables without the two flavours).
pub async fn detect_host_backend() -> Option<BackendChoice> {
    let (l4, l6, n4, n6) = tokio::join!(
        output_of("iptables-legacy-save", &[]),
        output_of("ip6tables-legacy-save", &[]),
        output_of("iptables-nft-save", &[]),
        output_of("ip6tables-nft-save", &[]),
    );
    let missing = |r: &Result<String, FirewallError>| matches!(r, Err(FirewallError::Spawn { source, .. }) if source.kind() == std::io::ErrorKind::NotFound);
    if missing(&l4) && missing(&n4) {
        return None;
    }
    let text = |r: Result<String, FirewallError>| r.unwrap_or_default();
    let legacy = text(l4) + &text(l6);
    let nft = text(n4) + &text(n6);
    Some(detect_backend(&legacy, &nft))
}

impl Iptables {
    /// The binaries of one backend: `iptables-<backend>`, `iptables-<backend>-save`,
    /// `iptables-<backend>-restore`.
    pub fn for_backend(backend: Backend) -> Iptables {
        Iptables::for_family(Family::V4, Some(backend))
    }

    /// The binaries of `family` (`iptables*` or `ip6tables*`) and `backend`, as Debian's
    /// iptables package ships them: `ip6tables-<backend>`, `ip6tables-<backend>-save`,
    /// `ip6tables-<backend>-restore` (with no backend the alternatives `ip6tables-save` etc.,
    /// whatever flavour they point to).
    pub fn for_family(family: Family, backend: Option<Backend>) -> Iptables {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let program = match backend {
            Some(b) => format!("{base}-{}", b.name()),
            None => base.to_string(),
        };
        Iptables {
            family,
            save: format!("{program}-save"),
            restore: format!("{program}-restore"),
            iptables: program,
            backend,
            lock_file: xtables_lock_file(),
        }
    }

    /// The same backend's binaries for `family`, with the same xtables lock file (the IPv6
    /// counterpart of the chosen iptables is `with_family(Family::V6)`).
    pub fn with_family(&self, family: Family) -> Iptables {
        Iptables {
            lock_file: self.lock_file.clone(),
            ..Iptables::for_family(family, self.backend)
        }
    }

    /// This backend's `ip6tables*` binaries: [`Iptables::with_family`] for IPv6.
    pub fn ip6(&self) -> Iptables {
        self.with_family(Family::V6)
    }

    /// Runs `program` with `timeout` as its deadline. With `on_wait`, while the child runs
    /// longer than half a second, reports every second who holds the xtables lock (if someone
    /// other than the child does).
    pub(crate) async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
        on_wait: Option<&(dyn Fn(&LockWait) + Sync)>,
    ) -> Result<String, FirewallError> {
        let cmd = format!("{program} {}", args.join(" "))
            .trim_end()
            .to_string();
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| FirewallError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let pid = child.id();
        let pipe = child.stdin.take();
        // Dropping this future (deadline passed) drops the child, which kills it.
        let work = async move {
            if let (Some(input), Some(mut pipe)) = (stdin, pipe) {
                pipe.write_all(input.as_bytes()).await?;
                drop(pipe);
            }
            child.wait_with_output().await
        };
        tokio::pin!(work);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_millis(500),
            Duration::from_secs(1),
        );
        let waiting = |lock_file: &Path| {
            lock_holder(lock_file, pid).map(|holder| LockWait {
                lock_file: lock_file.to_path_buf(),
                holder,
                waited: started.elapsed(),
            })
        };
        let out = loop {
            tokio::select! {
                out = &mut work => break out,
                _ = &mut deadline => {
                    let lock = waiting(&self.lock_file);
                    return Err(FirewallError::Timeout { cmd, after: timeout, lock });
                }
                _ = tick.tick(), if on_wait.is_some() => {
                    if let (Some(report), Some(w)) = (on_wait, waiting(&self.lock_file)) {
                        report(&w);
                    }
                }
            }
        }
        .map_err(|source| FirewallError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if out.status.code() == Some(RESOURCE_PROBLEM) && stderr.contains("xtables lock") {
                let holder =
                    lock_holder(&self.lock_file, None).unwrap_or(LockHolder { pid: 0, comm: None });
                return Err(FirewallError::LockBusy {
                    cmd,
                    wait: LockWait {
                        lock_file: self.lock_file.clone(),
                        holder,
                        waited: started.elapsed(),
                    },
                });
            }
            return Err(FirewallError::Failed {
                cmd,
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn version(&self) -> Result<String, FirewallError> {
        self.run(&self.iptables, &["--version"], None, VERSION_TIMEOUT, None)
            .await
    }

    /// Whether this iptables knows `--random-fully` (flannel: iptables ≥ 1.6.2).
    pub async fn supports_random_fully(&self) -> bool {
        match self.version().await {
            Ok(v) => version_at_least(&v, (1, 6, 2)),
            Err(_) => false,
        }
    }

    /// Whether this iptables is the nf_tables flavour (Debian 12's default), whose changes the
    /// kernel announces on netlink (see [`watch_nftables_changes`]).
    pub async fn is_nft(&self) -> bool {
        match self.backend {
            Some(b) => b == Backend::Nft,
            None => self
                .version()
                .await
                .map(|v| v.contains("nf_tables"))
                .unwrap_or(false),
        }
    }

    /// Brings every table that `desired` mentions to the desired state. Returns the tables it
    /// had to change (empty when nothing drifted).
    pub async fn sync(&self, desired: &[Rule]) -> Result<Vec<Table>, FirewallError> {
        self.sync_with(desired, &|_| {}).await
    }

    /// [`Iptables::sync`], calling `on_wait` (about every second) while `iptables-restore`
    /// waits for an xtables lock held by another process.
    pub async fn sync_with(
        &self,
        desired: &[Rule],
        on_wait: &(dyn Fn(&LockWait) + Sync),
    ) -> Result<Vec<Table>, FirewallError> {
        let saved = self.run(&self.save, &[], None, SAVE_TIMEOUT, None).await?;
        let mut changed = Vec::new();
        for table in [Table::Nat, Table::Filter] {
            let rules: Vec<Rule> = desired
                .iter()
                .filter(|r| r.table == table)
                .cloned()
                .collect();
            if rules.is_empty() {
                continue;
            }
            let section = table_section(&saved, table.name());
            if let Some(payload) = plan_sync(table, &section, &rules) {
                info!(
                    table = table.name(),
                    family = %self.family,
                    "programming weft's {} rules",
                    self.program_name()
                );
                self.restore_noflush(&payload, Some(on_wait)).await?;
                changed.push(table);
            }
        }
        Ok(changed)
    }
}

impl Iptables {
    /// `iptables-restore --noflush` of `payload`: changes only the chains the payload
    /// names, waiting (`--wait`) at most [`LOCK_WAIT`] for the xtables lock.
    async fn restore_noflush(
        &self,
        payload: &str,
        on_wait: Option<&(dyn Fn(&LockWait) + Sync)>,
    ) -> Result<String, FirewallError> {
        let wait = format!("--wait={}", LOCK_WAIT.as_secs());
        self.run(
            &self.restore,
            &["--noflush", &wait],
            Some(payload),
            RESTORE_TIMEOUT,
            on_wait,
        )
        .await
    }

    /// Removes flannel's iptables chains (`FLANNEL-POSTRTG` in nat, `FLANNEL-FWD` in filter)
    /// and the jumps to them: what the nftables mode does at start, where flanneld's clean-up
    /// of the other mode fails (it deletes FLANNEL-FWD from the wrong table and referenced
    /// chains). Returns the tables it changed.
    pub async fn remove_flannel_chains(&self) -> Result<Vec<Table>, FirewallError> {
        let saved = self.run(&self.save, &[], None, SAVE_TIMEOUT, None).await?;
        let mut changed = Vec::new();
        for (table, chain) in [(Table::Nat, MASQ_CHAIN), (Table::Filter, FORWARD_CHAIN)] {
            let section = table_section(&saved, table.name());
            if let Some(payload) = plan_remove(table, &section, &[chain]) {
                self.restore_noflush(&payload, None).await?;
                changed.push(table);
            }
        }
        Ok(changed)
    }
}

impl Iptables {
    /// `iptables` or `ip6tables`, for messages.
    pub fn program_name(&self) -> &'static str {
        match self.family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// [`Iptables::remove_flannel_chains`] with this backend's `iptables` and then its
    /// `ip6tables` (whatever family `self` is): the nftables mode's clean-up of the iptables
    /// mode on a dual-stack node. Returns the (family, table) pairs it changed; stops at the
    /// first failure (the IPv4 chains are gone by then if that was IPv6's).
    pub async fn remove_flannel_chains_both(&self) -> Result<Vec<(Family, Table)>, FirewallError> {
        let mut changed = Vec::new();
        for family in [Family::V4, Family::V6] {
            let fw = self.with_family(family);
            for table in fw.remove_flannel_chains().await? {
                changed.push((family, table));
            }
        }
        Ok(changed)
    }
}

/// The netlink multicast group on which nf_tables announces every ruleset change.
const NFNLGRP_NFTABLES: u32 = 7;
/// ENOBUFS: the kernel dropped notifications because we were slow; something changed.
const ENOBUFS: i32 = 105;

/// Calls `on_change` (from a dedicated thread) whenever the nf_tables ruleset of this network
/// namespace changes, e.g. someone flushed FLANNEL-POSTRTG with iptables-nft. Lets weftd check
/// its rules right away instead of forking `iptables-save` every few seconds. Returns an error
/// if the netlink socket cannot be opened (then the caller keeps polling).
pub fn watch_nftables_changes(on_change: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.add_membership(NFNLGRP_NFTABLES)?;
    std::thread::Builder::new()
        .name("nftables-watch".into())
        .spawn(move || {
            let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
            loop {
                buf.clear();
                match sock.recv(&mut buf, 0) {
                    Ok(_) => on_change(),
                    Err(e) if e.raw_os_error() == Some(ENOBUFS) => on_change(),
                    Err(_) => return,
                }
            }
        })?;
    Ok(())
}

/// The `*<table>` … `COMMIT` section of a full `iptables-save` dump (weft-core's reader).
pub use weft_core::saved::table_section;

fn version_at_least(text: &str, want: (u32, u32, u32)) -> bool {
    // "iptables v1.8.9 (nf_tables)"
    let Some(v) = text.split_whitespace().find_map(|w| w.strip_prefix('v')) else {
        return false;
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let got = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    got >= want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_without_a_cause_get_a_hint() {
        let failed = |stderr: &str| FirewallError::Failed {
            cmd: "iptables-restore --noflush".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        };
        let e = failed("iptables-restore: unable to initialize table 'nat'").to_string();
        assert!(e.contains("CAP_NET_RAW"), "{e}");
        let e = failed("iptables-restore v1.8.9 (legacy): Permission denied (you must be root)")
            .to_string();
        assert!(e.contains("CAP_NET_ADMIN"), "{e}");
        let e = failed("line 3 failed").to_string();
        assert!(!e.contains("CAP_"), "{e}");
    }

    #[test]
    fn splits_tables_out_of_a_full_dump() {
        let dump = "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n-A FORWARD -j X\nCOMMIT\n*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n";
        assert_eq!(
            table_section(dump, "nat"),
            "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n"
        );
        assert!(table_section(dump, "filter").contains("-A FORWARD -j X"));
        assert_eq!(table_section(dump, "mangle"), "");
    }

    #[test]
    fn splits_device_numbers_like_glibc() {
        assert_eq!(dev_major_minor(65024), (0xfe, 0));
        assert_eq!(dev_major_minor((8 << 8) | 17), (8, 17));
        // Large numbers: minor 0x12345, major 0x1234.
        let dev = (0x12345u64 & 0xff)
            | ((0x1234u64 & 0xfff) << 8)
            | ((0x12345u64 & !0xff) << 12)
            | ((0x1234u64 & !0xfff) << 32);
        assert_eq!(dev_major_minor(dev), (0x1234, 0x12345));
    }

    #[test]
    fn lock_waits_name_the_holder() {
        let w = |pid, comm: Option<&str>| LockWait {
            lock_file: "/run/xtables.lock".into(),
            holder: LockHolder {
                pid,
                comm: comm.map(str::to_string),
            },
            waited: Duration::from_millis(2500),
        };
        assert_eq!(
            w(42, Some("kube-proxy")).to_string(),
            "waiting for the xtables lock held by PID 42 (kube-proxy) on /run/xtables.lock for 2 s"
        );
        assert!(w(42, None).to_string().contains("held by PID 42 on"));
        assert!(
            w(0, None)
                .to_string()
                .contains("outside weftd's PID namespace")
        );
        let e = FirewallError::LockBusy {
            cmd: "iptables-legacy-restore --noflush --wait=5".into(),
            wait: w(42, None),
        }
        .to_string();
        assert!(
            e.contains("gave up after 5 s") && e.contains("PID 42"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_at_its_deadline() {
        let t0 = Instant::now();
        let e = Iptables::default()
            .run("sleep", &["30"], None, Duration::from_millis(300), None)
            .await
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(
            matches!(&e, FirewallError::Timeout { after, .. } if *after == Duration::from_millis(300)),
            "{e}"
        );
        assert!(
            e.to_string().contains("sleep 30 did not finish within"),
            "{e}"
        );
    }

    #[test]
    fn binaries_follow_family_and_backend() {
        let v4 = Iptables::for_backend(Backend::Legacy);
        assert_eq!(
            (
                v4.family,
                v4.save.as_str(),
                v4.restore.as_str(),
                v4.iptables.as_str()
            ),
            (
                Family::V4,
                "iptables-legacy-save",
                "iptables-legacy-restore",
                "iptables-legacy"
            )
        );
        let v6 = v4.ip6();
        assert_eq!(
            (
                v6.family,
                v6.save.as_str(),
                v6.restore.as_str(),
                v6.iptables.as_str()
            ),
            (
                Family::V6,
                "ip6tables-legacy-save",
                "ip6tables-legacy-restore",
                "ip6tables-legacy"
            )
        );
        assert_eq!(v6.backend, Some(Backend::Legacy));
        let nft6 = Iptables::for_family(Family::V6, Some(Backend::Nft));
        assert_eq!(
            (nft6.save.as_str(), nft6.restore.as_str()),
            ("ip6tables-nft-save", "ip6tables-nft-restore")
        );
        let plain = Iptables::default();
        assert_eq!(
            (plain.family, plain.save.as_str(), plain.iptables.as_str()),
            (Family::V4, "iptables-save", "iptables")
        );
        let plain6 = plain.ip6();
        assert_eq!(
            (
                plain6.save.as_str(),
                plain6.restore.as_str(),
                plain6.iptables.as_str()
            ),
            ("ip6tables-save", "ip6tables-restore", "ip6tables")
        );
        assert_eq!(plain6.with_family(Family::V4).save, "iptables-save");
        let mut custom = Iptables::for_backend(Backend::Nft);
        custom.lock_file = "/tmp/x.lock".into();
        assert_eq!(custom.ip6().lock_file, custom.lock_file);
        assert_eq!(custom.ip6().program_name(), "ip6tables");
    }

    #[test]
    fn version_parse() {
        assert!(version_at_least("iptables v1.8.9 (nf_tables)", (1, 6, 2)));
        assert!(version_at_least("iptables v1.6.2", (1, 6, 2)));
        assert!(!version_at_least("iptables v1.6.1", (1, 6, 2)));
        assert!(!version_at_least("garbage", (1, 6, 2)));
    }
}
