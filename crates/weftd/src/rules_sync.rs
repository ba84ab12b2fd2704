//! Keeping flannel's iptables rules in place through a [`Firewall`]: iptables (save, diff,
//! restore, in weft-net) in the daemon, a scripted fake in the tests below.
//!
//! The xtables lock is shared with kube-proxy and every other iptables user on the node: a
//! busy lock is waited for (readiness says who holds it), never an error; any other failure
//! is reported and left to the caller's retry.
//!
//! A dual-stack node keeps two firewalls, `iptables` and `ip6tables` of the same backend
//! (weft_net::Iptables::ip6), each with its family's rules; [`sync_rules_dual`] brings both in
//! place and calls the rules met only when both are.

use tracing::{info, warn};
use weft_core::family::Family;
use weft_core::rules::{Rule, Table};
use weft_net::firewall::LockWait;
use weft_net::{FirewallError, Iptables};

use crate::health::{Condition, Health};

/// The node's packet filter, as weftd programs it.
pub(crate) trait Firewall {
    /// Makes the rules weftd owns exactly `desired`, telling `on_wait` while the lock is
    /// held by someone else; the tables it changed.
    async fn sync(
        &self,
        desired: &[Rule],
        on_wait: &(dyn Fn(&LockWait) + Sync),
    ) -> Result<Vec<Table>, FirewallError>;
}

impl Firewall for Iptables {
    async fn sync(
        &self,
        desired: &[Rule],
        on_wait: &(dyn Fn(&LockWait) + Sync),
    ) -> Result<Vec<Table>, FirewallError> {
        self.sync_with(desired, on_wait).await
    }
}

/// Brings `desired` in place and keeps [`Condition::Rules`] saying how that went. While
/// another process holds the xtables lock, the condition names it; each attempt waits at
/// most weft_net::firewall::LOCK_WAIT and the next one starts at once, so the rules follow
/// within moments of the lock's release. Any other failure is returned (the condition says
/// it). Returns the tables changed.
pub(crate) async fn sync_rules<F: Firewall>(
    fw: &F,
    health: &Health,
    desired: &[Rule],
) -> Result<Vec<Table>, FirewallError> {
    let changed = sync_family(fw, health, desired, Family::V4).await?;
    health.met(Condition::Rules);
    Ok(changed)
}

/// [`sync_rules`] for a dual-stack node: `desired4` with `fw4` (iptables), then `desired6`
/// with `fw6` (ip6tables), each waiting out a busy xtables lock the same way. A family whose
/// rules are empty is skipped (no process is run for it). [`Condition::Rules`] is met only
/// when both families are in place; the first other failure is returned, and the condition
/// names the family's program. Returns the (family, table) pairs changed.
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "the daemon's dual-stack firewall task calls it (daemon.rs is being rewritten)"
    )
)]
pub(crate) async fn sync_rules_dual<F4: Firewall, F6: Firewall>(
    fw4: &F4,
    desired4: &[Rule],
    fw6: &F6,
    desired6: &[Rule],
    health: &Health,
) -> Result<Vec<(Family, Table)>, FirewallError> {
    let mut changed = Vec::new();
    if !desired4.is_empty() {
        for table in sync_family(fw4, health, desired4, Family::V4).await? {
            changed.push((Family::V4, table));
        }
    }
    if !desired6.is_empty() {
        for table in sync_family(fw6, health, desired6, Family::V6).await? {
            changed.push((Family::V6, table));
        }
    }
    health.met(Condition::Rules);
    Ok(changed)
}

/// One family's sync, retried while the xtables lock is busy; a failure leaves
/// [`Condition::Rules`] unmet with the reason. Does not mark the condition met.
async fn sync_family<F: Firewall>(
    fw: &F,
    health: &Health,
    desired: &[Rule],
    family: Family,
) -> Result<Vec<Table>, FirewallError> {
    let program = match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let waited = std::sync::atomic::AtomicBool::new(false);
    let on_wait = |w: &LockWait| {
        waited.store(true, std::sync::atomic::Ordering::Relaxed);
        health.unmet(Condition::Rules, w.to_string());
    };
    loop {
        match fw.sync(desired, &on_wait).await {
            Ok(changed) => {
                if waited.load(std::sync::atomic::Ordering::Relaxed) {
                    info!(%family, "got the xtables lock");
                }
                return Ok(changed);
            }
            Err(e) => match e.lock_wait() {
                Some(w) => {
                    health.metrics.iptables_lock_busy.inc();
                    on_wait(w);
                    warn!(error = %e, %family, "the xtables lock is busy");
                }
                None => {
                    health.unmet(
                        Condition::Rules,
                        format!("cannot program the {program} rules: {e}"),
                    );
                    return Err(e);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::path::PathBuf;
    use std::time::Duration;

    use weft_net::firewall::LockHolder;

    use super::*;

    /// A firewall that answers each sync with the next scripted outcome, and records what
    /// readiness said while it was called.
    struct Scripted<'a> {
        answers: RefCell<Vec<Result<Vec<Table>, FirewallError>>>,
        health: &'a Health,
        seen: RefCell<Vec<String>>,
    }

    impl Firewall for Scripted<'_> {
        async fn sync(
            &self,
            _desired: &[Rule],
            on_wait: &(dyn Fn(&LockWait) + Sync),
        ) -> Result<Vec<Table>, FirewallError> {
            self.seen
                .borrow_mut()
                .push(self.health.readiness().render());
            let next = self.answers.borrow_mut().remove(0);
            if let Err(e) = &next
                && let Some(w) = e.lock_wait()
            {
                // iptables reports the wait while it waits, before giving up
                on_wait(w);
            }
            next
        }
    }

    fn busy() -> FirewallError {
        FirewallError::LockBusy {
            cmd: "iptables-nft-restore".into(),
            wait: LockWait {
                lock_file: PathBuf::from("/run/xtables.lock"),
                holder: LockHolder {
                    pid: 4242,
                    comm: Some("kube-proxy".into()),
                },
                waited: Duration::from_secs(5),
            },
        }
    }

    #[tokio::test]
    async fn a_busy_lock_is_waited_for_and_named_in_readiness_then_the_rules_are_met() {
        let health = Health::new();
        let fw = Scripted {
            answers: RefCell::new(vec![Err(busy()), Err(busy()), Ok(vec![Table::Nat])]),
            health: &health,
            seen: RefCell::new(Vec::new()),
        };
        let changed = sync_rules(&fw, &health, &[]).await.unwrap();
        assert_eq!(changed, [Table::Nat]);
        let seen = fw.seen.borrow();
        assert_eq!(seen.len(), 3, "tried until it got the lock");
        assert!(
            seen[1].contains("kube-proxy") && seen[1].contains("4242"),
            "readiness names the holder while waiting: {seen:?}"
        );
        assert!(health.is_met(Condition::Rules));
        assert_eq!(health.metrics.iptables_lock_busy.get(), 2);
    }

    fn scripted<'a>(
        health: &'a Health,
        answers: Vec<Result<Vec<Table>, FirewallError>>,
    ) -> Scripted<'a> {
        Scripted {
            answers: RefCell::new(answers),
            health,
            seen: RefCell::new(Vec::new()),
        }
    }

    fn rules() -> Vec<Rule> {
        weft_core::rules::masq_rules(
            "10.244.0.0/16".parse::<ipnet::Ipv4Net>().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
            true,
        )
    }

    fn rules6() -> Vec<Rule> {
        weft_core::rules::masq_rules(
            "fc00::/48".parse::<ipnet::Ipv6Net>().unwrap(),
            "fc00:0:0:1::/64".parse().unwrap(),
            true,
        )
    }

    #[tokio::test]
    async fn both_families_are_synced_and_only_then_the_rules_are_met() {
        let health = Health::new();
        let fw4 = scripted(&health, vec![Ok(vec![Table::Nat, Table::Filter])]);
        let fw6 = scripted(&health, vec![Err(busy()), Ok(vec![Table::Nat])]);
        let changed = sync_rules_dual(&fw4, &rules(), &fw6, &rules6(), &health)
            .await
            .unwrap();
        assert_eq!(
            changed,
            [
                (Family::V4, Table::Nat),
                (Family::V4, Table::Filter),
                (Family::V6, Table::Nat)
            ]
        );
        assert_eq!(fw4.seen.borrow().len(), 1);
        assert_eq!(fw6.seen.borrow().len(), 2, "ip6tables waited for the lock");
        assert!(
            fw6.seen.borrow()[1].contains("kube-proxy"),
            "{:?}",
            fw6.seen.borrow()
        );
        assert!(health.is_met(Condition::Rules));
        assert_eq!(health.metrics.iptables_lock_busy.get(), 1);
    }

    #[tokio::test]
    async fn an_ipv6_failure_leaves_the_rules_unmet_naming_ip6tables() {
        let health = Health::new();
        health.met(Condition::Rules);
        let fw4 = scripted(&health, vec![Ok(Vec::new())]);
        let fw6 = scripted(
            &health,
            vec![Err(FirewallError::Failed {
                cmd: "ip6tables-nft-restore --noflush --wait=5".into(),
                status: "exit status: 1".into(),
                stderr: "ip6tables-nft-restore: line 2 failed".into(),
            })],
        );
        let e = sync_rules_dual(&fw4, &rules(), &fw6, &rules6(), &health)
            .await
            .unwrap_err();
        assert!(matches!(e, FirewallError::Failed { .. }), "{e}");
        assert!(!health.is_met(Condition::Rules));
        let why = health.readiness().render();
        assert!(why.contains("cannot program the ip6tables rules"), "{why}");
    }

    #[tokio::test]
    async fn a_family_without_rules_is_not_asked() {
        let health = Health::new();
        // No answers: being called would panic.
        let fw4 = scripted(&health, Vec::new());
        let fw6 = scripted(&health, vec![Ok(vec![Table::Filter])]);
        let changed = sync_rules_dual(&fw4, &[], &fw6, &rules6(), &health)
            .await
            .unwrap();
        assert_eq!(changed, [(Family::V6, Table::Filter)]);
        assert!(fw4.seen.borrow().is_empty());
        assert!(health.is_met(Condition::Rules));
    }

    #[tokio::test]
    async fn any_other_failure_is_returned_and_leaves_the_rules_unmet_with_the_reason() {
        let health = Health::new();
        health.met(Condition::Rules);
        let fw = Scripted {
            answers: RefCell::new(vec![Err(FirewallError::Failed {
                cmd: "iptables-nft-restore".into(),
                status: "exit status: 4".into(),
                stderr: "iptables-nft-restore: unable to initialize table 'nat'".into(),
            })]),
            health: &health,
            seen: RefCell::new(Vec::new()),
        };
        let e = sync_rules(&fw, &health, &[]).await.unwrap_err();
        assert!(matches!(e, FirewallError::Failed { .. }), "{e}");
        assert!(!health.is_met(Condition::Rules));
        let why = health.readiness().render();
        assert!(why.contains("unable to initialize table"), "{why}");
        assert_eq!(
            fw.seen.borrow().len(),
            1,
            "not retried here: the caller retries"
        );
    }
}
