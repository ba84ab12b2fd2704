//! iptables adapter: reads the rules with one `iptables-save`, lets
//! `weft_core::rules::plan_sync` decide, and applies the difference with one atomic
//! `iptables-restore --noflush`. A check that finds everything in place forks exactly one
//! process and changes nothing (flannel forks one `iptables -C` per rule every 5 s).

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::info;
use weft_core::rules::{Rule, Table, plan_sync};

/// A failure to read or write the rules, naming the command.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("failed to run {cmd}: {source}; install iptables (apt-get install iptables)")]
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

/// The iptables binaries to use (`iptables`, or e.g. `iptables-legacy` to match kube-proxy).
#[derive(Debug, Clone)]
pub struct Iptables {
    pub save: String,
    pub restore: String,
    pub iptables: String,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables {
            save: "iptables-save".into(),
            restore: "iptables-restore".into(),
            iptables: "iptables".into(),
        }
    }
}

impl Iptables {
    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, FirewallError> {
        let cmd = format!("{program} {}", args.join(" "));
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
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .map_err(|source| FirewallError::Spawn {
                    cmd: cmd.clone(),
                    source,
                })?;
            drop(pipe);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| FirewallError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(FirewallError::Failed {
                cmd,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether this iptables knows `--random-fully` (flannel: iptables ≥ 1.6.2).
    pub async fn supports_random_fully(&self) -> bool {
        match self.run(&self.iptables, &["--version"], None).await {
            Ok(v) => version_at_least(&v, (1, 6, 2)),
            Err(_) => false,
        }
    }

    /// Whether this iptables is the nf_tables flavour (Debian 12's default), whose changes the
    /// kernel announces on netlink (see [`watch_nftables_changes`]).
    pub async fn is_nft(&self) -> bool {
        self.run(&self.iptables, &["--version"], None)
            .await
            .map(|v| v.contains("nf_tables"))
            .unwrap_or(false)
    }

    /// Brings every table that `desired` mentions to the desired state. Returns the tables it
    /// had to change (empty when nothing drifted).
    pub async fn sync(&self, desired: &[Rule]) -> Result<Vec<Table>, FirewallError> {
        let saved = self.run(&self.save, &[], None).await?;
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
                info!(table = table.name(), "programming weft's iptables rules");
                self.run(&self.restore, &["--noflush", "--wait"], Some(&payload))
                    .await?;
                changed.push(table);
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

/// The `*<table>` … `COMMIT` section of a full `iptables-save` dump (empty if absent).
pub fn table_section(saved: &str, table: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            inside = name.trim() == table;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
            if line.trim() == "COMMIT" {
                inside = false;
            }
        }
    }
    out
}

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
    fn version_parse() {
        assert!(version_at_least("iptables v1.8.9 (nf_tables)", (1, 6, 2)));
        assert!(version_at_least("iptables v1.6.2", (1, 6, 2)));
        assert!(!version_at_least("iptables v1.6.1", (1, 6, 2)));
        assert!(!version_at_least("garbage", (1, 6, 2)));
    }
}
