//! Decisions about the host's iptables: which backend (legacy or nf_tables) already holds the
//! node's rules, and who holds the xtables lock.
//!
//! The backend rule follows the convention of kube-proxy's image (kubernetes-sigs/
//! iptables-wrappers): a container must write its rules with the backend the host uses, and
//! the host's backend is the one that already holds rules. In order:
//! 1. kubelet (1.17+) creates `KUBE-IPTABLES-HINT` or `KUBE-KUBELET-CANARY` in the mangle
//!    table at start, before any DaemonSet pod runs: the backend that holds one of these chains
//!    is the host's (nf_tables is looked at first, as the wrapper does);
//! 2. otherwise the backend with more rule lines (`-A …`, iptables and ip6tables together);
//!    legacy only when it has strictly more;
//! 3. otherwise (no rules in either) nf_tables, the wrapper's default and the default of current
//!    distributions (AL2023, Debian 12, RHEL 9).

use std::fmt;

/// An iptables backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables-legacy (the kernel's x_tables API; e.g. Amazon Linux 2).
    Legacy,
    /// iptables-nft (nf_tables underneath; e.g. AL2023, Debian 12).
    Nft,
}

impl Backend {
    /// The suffix of the binaries: `iptables-<name>-save` etc.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why [`detect_backend`] chose its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendReason {
    /// kubelet's hint chain (named) is in this backend.
    KubeletChain(String),
    /// This backend holds more rules: (legacy rule lines, nft rule lines).
    MoreRules { legacy: usize, nft: usize },
    /// Neither backend holds a rule.
    NoRules,
}

/// The backend chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    pub backend: Backend,
    pub reason: BackendReason,
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            BackendReason::KubeletChain(chain) => write!(
                f,
                "{}: kubelet's {chain} chain is in iptables-{}",
                self.backend, self.backend
            ),
            BackendReason::MoreRules { legacy, nft } => write!(
                f,
                "{}: iptables-legacy holds {legacy} rules, iptables-nft {nft}",
                self.backend
            ),
            BackendReason::NoRules => write!(
                f,
                "{}: neither iptables-legacy nor iptables-nft holds a rule yet, so the default of kube-proxy's iptables-wrapper (nft) is used",
                self.backend
            ),
        }
    }
}

/// kubelet's chains that mark the host's backend.
const KUBELET_CHAINS: &[&str] = &["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];

/// The kubelet chain declared (`:<chain> …`) in an `iptables-save` dump, if any.
fn kubelet_chain(saved: &str) -> Option<&'static str> {
    saved.lines().find_map(|line| {
        let name = line.strip_prefix(':')?.split_whitespace().next()?;
        KUBELET_CHAINS.iter().copied().find(|c| *c == name)
    })
}

/// Rule lines (`-A …`, `-I …`) in an `iptables-save` dump.
pub fn rule_lines(saved: &str) -> usize {
    saved.lines().filter(|l| l.starts_with('-')).count()
}

/// Chooses the backend from what `iptables-legacy-save` + `ip6tables-legacy-save` (`legacy`)
/// and `iptables-nft-save` + `ip6tables-nft-save` (`nft`) printed (empty when a command failed
/// or is missing).
pub fn detect_backend(legacy: &str, nft: &str) -> BackendChoice {
    if let Some(chain) = kubelet_chain(nft) {
        return BackendChoice {
            backend: Backend::Nft,
            reason: BackendReason::KubeletChain(chain.into()),
        };
    }
    if let Some(chain) = kubelet_chain(legacy) {
        return BackendChoice {
            backend: Backend::Legacy,
            reason: BackendReason::KubeletChain(chain.into()),
        };
    }
    let (l, n) = (rule_lines(legacy), rule_lines(nft));
    if l == 0 && n == 0 {
        return BackendChoice {
            backend: Backend::Nft,
            reason: BackendReason::NoRules,
        };
    }
    BackendChoice {
        backend: if l > n { Backend::Legacy } else { Backend::Nft },
        reason: BackendReason::MoreRules { legacy: l, nft: n },
    }
}

/// The PIDs holding a lock on the file with this device (major, minor) and inode, from the
/// text of `/proc/locks`. A PID of 0 (or -1) means the holder is not visible from the reader's
/// PID namespace; it is returned as 0. Waiters (`->` lines) are not holders.
///
/// A line reads `1: FLOCK  ADVISORY  WRITE 20029 fe:00:10010634 0 EOF`: the device numbers
/// are hexadecimal, the inode decimal.
pub fn lock_holders(proc_locks: &str, major: u32, minor: u32, inode: u64) -> Vec<u32> {
    let mut out = Vec::new();
    for line in proc_locks.lines() {
        let mut f = line.split_whitespace();
        let Some(id) = f.next() else { continue };
        if !id.ends_with(':') {
            continue;
        }
        let fields: Vec<&str> = f.collect();
        // A blocked waiter: "1: -> FLOCK ADVISORY WRITE …".
        if fields.first() == Some(&"->") || fields.len() < 5 {
            continue;
        }
        let (pid, file) = (fields[3], fields[4]);
        let mut parts = file.split(':');
        let (Some(ma), Some(mi), Some(ino), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(ma), Ok(mi), Ok(ino)) = (
            u32::from_str_radix(ma, 16),
            u32::from_str_radix(mi, 16),
            ino.parse::<u64>(),
        ) else {
            continue;
        };
        if (ma, mi, ino) != (major, minor, inode) {
            continue;
        }
        let pid = pid.parse::<i64>().unwrap_or(0);
        out.push(u32::try_from(pid).unwrap_or(0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_LEGACY: &str = "# Generated by iptables-save v1.8.9 on Wed Dec  2 16:28:23 2026\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    const NFT_WARNING: &str =
        "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n";

    fn kube_rules(n: usize) -> String {
        let mut s = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n");
        for i in 0..n {
            s.push_str(&format!(
                "-A KUBE-SERVICES -d 172.20.0.{i}/32 -p tcp -j KUBE-SVC-{i}\n"
            ));
        }
        s.push_str("COMMIT\n");
        s
    }

    const HINT: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";

    #[test]
    fn kubelet_hint_decides_nft_first() {
        let c = detect_backend(&kube_rules(50), HINT);
        assert_eq!(c.backend, Backend::Nft);
        assert_eq!(
            c.reason,
            BackendReason::KubeletChain("KUBE-IPTABLES-HINT".into())
        );
        let c = detect_backend(HINT, &kube_rules(50));
        assert_eq!(c.backend, Backend::Legacy);
        assert!(c.to_string().contains("KUBE-IPTABLES-HINT"), "{c}");
        let canary = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";
        let c = detect_backend(canary, "");
        assert_eq!(
            (c.backend, c.reason),
            (
                Backend::Legacy,
                BackendReason::KubeletChain("KUBE-KUBELET-CANARY".into())
            )
        );
    }

    #[test]
    fn a_chain_only_named_in_a_rule_is_not_the_hint() {
        // Only a declaration (":CHAIN") counts; a jump or a comment naming it does not.
        let legacy = "*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m comment --comment KUBE-IPTABLES-HINT -j RETURN\nCOMMIT\n";
        let c = detect_backend(legacy, "");
        assert_eq!(c.reason, BackendReason::MoreRules { legacy: 1, nft: 0 });
    }

    #[test]
    fn more_rules_decides_and_ties_go_to_nft() {
        let c = detect_backend(&kube_rules(3), &kube_rules(2));
        assert_eq!(c.backend, Backend::Legacy);
        assert_eq!(c.reason, BackendReason::MoreRules { legacy: 3, nft: 2 });
        assert!(c.to_string().contains("legacy holds 3 rules"), "{c}");
        assert_eq!(
            detect_backend(&kube_rules(2), &kube_rules(3)).backend,
            Backend::Nft
        );
        assert_eq!(
            detect_backend(&kube_rules(2), &kube_rules(2)).backend,
            Backend::Nft
        );
        // Empty tables and nft's warning comment are not rules.
        let c = detect_backend(EMPTY_LEGACY, &format!("{NFT_WARNING}{}", kube_rules(1)));
        assert_eq!(c.reason, BackendReason::MoreRules { legacy: 0, nft: 1 });
    }

    #[test]
    fn no_rules_anywhere_is_nft_and_says_why() {
        for (l, n) in [
            ("", ""),
            (EMPTY_LEGACY, NFT_WARNING),
            (EMPTY_LEGACY, EMPTY_LEGACY),
        ] {
            let c = detect_backend(l, n);
            assert_eq!(c.backend, Backend::Nft);
            assert_eq!(c.reason, BackendReason::NoRules);
        }
        let text = detect_backend("", "").to_string();
        assert!(text.contains("neither") && text.contains("nft"), "{text}");
    }

    #[test]
    fn finds_the_holder_of_a_lock_in_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 20029 fe:00:10010634 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 20031 fe:00:10010634 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 611 00:1a:1234 0 EOF\n\
                     3: OFDLCK ADVISORY  READ  -1 fe:00:99 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 0 08:11:77 0 EOF\n";
        assert_eq!(lock_holders(locks, 0xfe, 0, 10010634), vec![20029]);
        assert_eq!(lock_holders(locks, 0, 0x1a, 1234), vec![611]);
        assert_eq!(lock_holders(locks, 0xfe, 0, 99), vec![0], "-1: not visible");
        assert_eq!(lock_holders(locks, 8, 0x11, 77), vec![0]);
        assert!(lock_holders(locks, 0xfe, 1, 10010634).is_empty());
        assert!(lock_holders("garbage\n: :\n1: FLOCK\n", 0, 0, 0).is_empty());
    }
}
