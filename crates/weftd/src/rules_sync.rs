//! Keeping flannel's iptables rules in place through a [`Firewall`]: iptables (save, diff,
//! restore, in weft-net) in the daemon, a scripted fake in the tests below.
//!
//! The xtables lock is shared with kube-proxy and every other iptables user on the node: a
//! busy lock is waited for (readiness says who holds it), never an error; any other failure
//! is reported and left to the caller's retry.

use tracing::{info, warn};
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
    let waited = std::sync::atomic::AtomicBool::new(false);
    let on_wait = |w: &LockWait| {
        waited.store(true, std::sync::atomic::Ordering::Relaxed);
        health.unmet(Condition::Rules, w.to_string());
    };
    loop {
        match fw.sync(desired, &on_wait).await {
            Ok(changed) => {
                if waited.load(std::sync::atomic::Ordering::Relaxed) {
                    info!("got the xtables lock");
                }
                health.met(Condition::Rules);
                return Ok(changed);
            }
            Err(e) => match e.lock_wait() {
                Some(w) => {
                    health.metrics.iptables_lock_busy.inc();
                    on_wait(w);
                    warn!(error = %e, "the xtables lock is busy");
                }
                None => {
                    health.unmet(
                        Condition::Rules,
                        format!("cannot program the iptables rules: {e}"),
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
