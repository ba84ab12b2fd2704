//! The decisions about this node's own subnet lease, as a state machine: renew it before it
//! runs out, withdraw the subnet from pods when it could not be renewed in time (and restore it
//! when etcd kept it after all), re-acquire when it expired, was deleted or was taken by another
//! node, rewrite our key when it holds a value that is not ours, adopt a lease id written by a
//! restarted weftd.
//!
//! [`LeaseAgent::on`] takes an [`Event`] (a timer, the answer to an effect, a change of our key
//! seen by the watch) and returns the [`Effect`]s to carry out. It does no I/O and reads no
//! clock: time comes in the events, so tests drive it with a paused clock in microseconds.
//! weftd's lease task is the executor: it sleeps until [`LeaseAgent::wake_at`], carries out
//! the effects against etcd and the node, and feeds the outcomes back.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

/// How long to wait before trying a failed renewal again.
pub const RENEW_RETRY: Duration = Duration::from_secs(5);

/// The shortest wait for a renewal's answer, even when the lease has already run out.
pub const MIN_RENEW_WAIT: Duration = Duration::from_secs(1);

/// The lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub subnet: Ipv4Net,
    /// etcd's lease id; 0 for a reservation, which never expires and is never renewed.
    pub lease_id: i64,
    /// The TTL etcd granted, in seconds.
    pub ttl: i64,
}

/// What the watch found in our own key, judged against this node (see [`judge_own_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnKey {
    /// Another node's public IP: our lease ran out while we were cut off and it took the subnet.
    TakenBy(Ipv4Addr),
    /// Our public IP but a value that is not ours (garbage, another backend, VNI or VTEP MAC).
    Wrong(String),
    /// Our value, attached to `lease_id` (0 when the watch could not tell).
    Ours { lease_id: i64 },
}

/// How a rewrite of our key (after [`Effect::RewriteOwnKey`]) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Our key holds our value again.
    Done,
    /// The key changed again before the rewrite; the watch brings the change.
    Raced,
    /// Our etcd lease is gone.
    LeaseGone,
    /// etcd refused the rewrite.
    Failed(String),
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The time [`LeaseAgent::wake_at`] asked for has come.
    Tick(Instant),
    /// etcd renewed the lease: `ttl` seconds from `sent`, when the request left.
    Renewed {
        sent: Instant,
        now: Instant,
        ttl: i64,
    },
    /// etcd answered that the lease does not exist any more.
    RenewalExpired,
    /// The renewal failed or got no answer before its deadline.
    RenewalFailed { now: Instant, error: String },
    /// Our key was deleted in etcd.
    OwnKeyDeleted(Ipv4Net),
    /// Our key was written.
    OwnKeyPut(Ipv4Net, OwnKey),
    /// The rewrite asked for ended.
    Rewritten(Rewrite),
    /// A new lease was acquired (after [`Effect::Reacquire`]), at `now`.
    Acquired { lease: Held, now: Instant },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Renew `lease_id`; give up waiting for the answer at `deadline`.
    Renew { lease_id: i64, deadline: Instant },
    /// The lease is what it is now (granted, re-acquired or renewed): publish it.
    Hold(Held),
    /// Our key was rewritten with another etcd lease (a restarted weftd): publish the lease
    /// with that id.
    Adopt(Held),
    /// Take `subnet` away from pods (subnet.env), saying why.
    Withdraw { subnet: Ipv4Net, why: String },
    /// etcd kept the lease after all: give `subnet` back to pods.
    Restore { subnet: Ipv4Net },
    /// Acquire a lease again: `previous` if it is still free, never `exclude`.
    Reacquire {
        previous: Option<Ipv4Net>,
        exclude: Option<Ipv4Net>,
        why: String,
    },
    /// Write our value into our key in place (guarded by its revision), because of `why`.
    RewriteOwnKey { why: String },
}

/// The state of this node's own lease.
#[derive(Debug, Clone)]
pub struct LeaseAgent {
    held: Held,
    renew_margin_minutes: i64,
    renew_at: Instant,
    /// When the lease runs out unless renewed, as far as this node can tell: measured from
    /// before the request that granted or renewed it, so never later than etcd's own expiry.
    expires_at: Instant,
    /// subnet.env was withdrawn while the lease could not be renewed in time.
    withdrawn: bool,
    /// A renewal is on its way.
    renewing: bool,
    /// Waiting for [`Event::Acquired`].
    reacquiring: bool,
}

/// When to renew: `margin` before expiry, but never later than half the TTL (so short test
/// TTLs still renew in time), and at least a second on.
pub fn renew_after(ttl: i64, margin_minutes: i64) -> Duration {
    let margin = (margin_minutes * 60).min(ttl / 2).max(1);
    Duration::from_secs((ttl - margin).max(1) as u64)
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl LeaseAgent {
    /// The agent for `held`, granted at `now`, renewed `renew_margin_minutes` before expiry
    /// (flanneld's `--subnet-lease-renew-margin`).
    pub fn new(held: Held, renew_margin_minutes: i64, now: Instant) -> LeaseAgent {
        LeaseAgent {
            held,
            renew_margin_minutes,
            renew_at: now + renew_after(held.ttl, renew_margin_minutes),
            expires_at: now + secs(held.ttl),
            withdrawn: false,
            renewing: false,
            reacquiring: false,
        }
    }

    /// The lease held now.
    pub fn held(&self) -> Held {
        self.held
    }

    /// Whether subnet.env is withdrawn because the lease could not be renewed in time.
    pub fn withdrawn(&self) -> bool {
        self.withdrawn
    }

    /// When the agent wants an [`Event::Tick`]: the next renewal. None while it waits for an
    /// answer (a renewal, a re-acquisition) or holds a reservation, which is never renewed.
    pub fn wake_at(&self) -> Option<Instant> {
        (self.held.lease_id != 0 && !self.renewing && !self.reacquiring).then_some(self.renew_at)
    }

    /// When the lease runs out unless renewed.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    fn reacquire(
        &mut self,
        previous: Option<Ipv4Net>,
        exclude: Option<Ipv4Net>,
        withdraw: Option<String>,
        why: &str,
    ) -> Vec<Effect> {
        self.reacquiring = true;
        self.renewing = false;
        let mut out = Vec::new();
        if let Some(w) = withdraw {
            out.push(Effect::Withdraw {
                subnet: self.held.subnet,
                why: w,
            });
        }
        out.push(Effect::Reacquire {
            previous,
            exclude,
            why: why.to_string(),
        });
        out
    }

    /// Takes one event, returns what to do.
    pub fn on(&mut self, event: Event) -> Vec<Effect> {
        let subnet = self.held.subnet;
        match event {
            Event::Tick(now) => {
                if self.wake_at().is_none_or(|at| now < at) {
                    return Vec::new();
                }
                self.renewing = true;
                // An answer after the lease ran out is too late to keep the subnet in
                // subnet.env: wait for one only until then (at least MIN_RENEW_WAIT).
                vec![Effect::Renew {
                    lease_id: self.held.lease_id,
                    deadline: self.expires_at.max(now + MIN_RENEW_WAIT),
                }]
            }
            Event::Renewed { sent, now, ttl } => {
                if self.reacquiring {
                    return Vec::new();
                }
                self.renewing = false;
                self.held.ttl = ttl;
                self.renew_at = now + renew_after(ttl, self.renew_margin_minutes);
                self.expires_at = sent + secs(ttl);
                let mut out = vec![Effect::Hold(self.held)];
                if std::mem::take(&mut self.withdrawn) {
                    out.push(Effect::Restore { subnet });
                }
                out
            }
            Event::RenewalExpired => {
                if self.reacquiring {
                    return Vec::new();
                }
                self.reacquire(
                    Some(subnet),
                    None,
                    Some("expired (its etcd lease ran out)".to_string()),
                    "our etcd lease expired",
                )
            }
            Event::RenewalFailed { now, error } => {
                if self.reacquiring {
                    return Vec::new();
                }
                self.renewing = false;
                let mut out = Vec::new();
                if now >= self.expires_at && !self.withdrawn {
                    self.withdrawn = true;
                    out.push(Effect::Withdraw {
                        subnet,
                        why: format!("could not be renewed before its lease ran out ({error})"),
                    });
                }
                // Try again after RENEW_RETRY, or at the expiry if that comes first.
                self.renew_at = if now < self.expires_at {
                    (now + RENEW_RETRY).min(self.expires_at)
                } else {
                    now + RENEW_RETRY
                };
                out
            }
            Event::OwnKeyDeleted(sn) | Event::OwnKeyPut(sn, _) if sn != subnet => Vec::new(),
            Event::OwnKeyDeleted(_) | Event::OwnKeyPut(..) | Event::Rewritten(_)
                if self.reacquiring =>
            {
                Vec::new()
            }
            Event::OwnKeyDeleted(_) => self.reacquire(
                Some(subnet),
                None,
                Some("lost its lease key (deleted in etcd)".to_string()),
                "our lease key was deleted",
            ),
            Event::OwnKeyPut(_, OwnKey::TakenBy(ip)) => self.reacquire(
                None,
                Some(subnet),
                Some(format!("was taken by another node (PublicIP {ip})")),
                "our subnet is now leased by another node",
            ),
            Event::OwnKeyPut(_, OwnKey::Wrong(why)) => vec![Effect::RewriteOwnKey { why }],
            Event::OwnKeyPut(_, OwnKey::Ours { lease_id }) => {
                if lease_id != self.held.lease_id && lease_id != 0 && self.held.lease_id != 0 {
                    // Our key was rewritten with another etcd lease (a restarted weftd).
                    self.held.lease_id = lease_id;
                    vec![Effect::Adopt(self.held)]
                } else {
                    Vec::new()
                }
            }
            Event::Rewritten(Rewrite::Done | Rewrite::Raced) => Vec::new(),
            Event::Rewritten(Rewrite::LeaseGone) => self.reacquire(
                Some(subnet),
                None,
                Some("lost its etcd lease".to_string()),
                "our etcd lease is gone",
            ),
            Event::Rewritten(Rewrite::Failed(e)) => self.reacquire(
                Some(subnet),
                None,
                None,
                &format!("cannot rewrite our lease key ({e})"),
            ),
            Event::Acquired { lease, now } => {
                *self = LeaseAgent::new(lease, self.renew_margin_minutes, now);
                vec![Effect::Hold(lease)]
            }
        }
    }
}

/// Judges what the watch found in our key: `public_ip` is the lease's PublicIP, `ours` whether
/// the rest of the value (backend type, VNI, VTEP MAC) is what this node publishes, `lease_id`
/// the etcd lease the key is attached to. `Err` is a value that does not parse.
pub fn judge_own_key(
    parsed: Result<(Ipv4Addr, bool), String>,
    my_public_ip: Ipv4Addr,
    lease_id: i64,
) -> OwnKey {
    match parsed {
        Ok((ip, _)) if ip != my_public_ip => OwnKey::TakenBy(ip),
        Ok((_, true)) => OwnKey::Ours { lease_id },
        Ok((_, false)) => {
            OwnKey::Wrong("our public IP with another backend, VNI or VtepMAC".to_string())
        }
        Err(e) => OwnKey::Wrong(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: i64 = 60;
    const DAY: i64 = 86_400;

    fn sn(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn held(ttl: i64) -> Held {
        Held {
            subnet: sn("10.244.1.0/24"),
            lease_id: 7,
            ttl,
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn renews_a_margin_before_expiry_and_again_after_each_renewal() {
        let t0 = Instant::now();
        let mut a = LeaseAgent::new(held(DAY), MARGIN, t0);
        // flanneld's default: 24 h TTL, renewed 60 min before, i.e. after 23 h.
        assert_eq!(a.wake_at(), Some(t0 + s(23 * 3600)));
        assert_eq!(a.on(Event::Tick(t0 + s(3600))), vec![], "too early");
        let t1 = t0 + s(23 * 3600);
        assert_eq!(
            a.on(Event::Tick(t1)),
            vec![Effect::Renew {
                lease_id: 7,
                deadline: t0 + s(DAY as u64)
            }]
        );
        assert_eq!(a.wake_at(), None, "one renewal at a time");
        assert_eq!(a.on(Event::Tick(t1)), vec![]);
        let fx = a.on(Event::Renewed {
            sent: t1,
            now: t1 + Duration::from_millis(3),
            ttl: DAY,
        });
        assert_eq!(fx, vec![Effect::Hold(held(DAY))]);
        assert_eq!(
            a.wake_at(),
            Some(t1 + Duration::from_millis(3) + s(23 * 3600))
        );
        // Expiry counts from when the request left, never later than etcd's.
        assert_eq!(a.expires_at(), t1 + s(DAY as u64));
    }

    #[test]
    fn short_ttls_renew_at_half_the_ttl() {
        assert_eq!(renew_after(20, 60), s(10));
        assert_eq!(renew_after(3, 60), s(2));
        assert_eq!(renew_after(1, 60), s(1));
        assert_eq!(renew_after(DAY, 60), s(23 * 3600));
    }

    #[test]
    fn a_dead_etcd_withdraws_the_subnet_at_expiry_and_a_late_renewal_restores_it() {
        let t0 = Instant::now();
        let mut a = LeaseAgent::new(held(20), MARGIN, t0);
        let mut now = t0 + s(10);
        assert!(matches!(a.on(Event::Tick(now))[..], [Effect::Renew { .. }]));
        // Failures before the expiry: retry every 5 s, no withdrawal.
        let fail = |a: &mut LeaseAgent, now| {
            a.on(Event::RenewalFailed {
                now,
                error: "connection refused".into(),
            })
        };
        assert_eq!(fail(&mut a, now), vec![]);
        assert_eq!(a.wake_at(), Some(now + RENEW_RETRY));
        now += RENEW_RETRY;
        a.on(Event::Tick(now));
        assert_eq!(fail(&mut a, now), vec![]);
        // The retry is due after the expiry: wake at the expiry instead.
        assert_eq!(a.wake_at(), Some(t0 + s(20)));
        now = t0 + s(20);
        let fx = a.on(Event::Tick(now));
        assert_eq!(
            fx,
            vec![Effect::Renew {
                lease_id: 7,
                deadline: now + MIN_RENEW_WAIT
            }]
        );
        let fx = fail(&mut a, now + MIN_RENEW_WAIT);
        assert!(
            matches!(&fx[..], [Effect::Withdraw { subnet, why }] if *subnet == sn("10.244.1.0/24") && why.contains("connection refused")),
            "{fx:?}"
        );
        assert!(a.withdrawn());
        // Withdrawn once only.
        now += s(6);
        a.on(Event::Tick(now));
        assert_eq!(fail(&mut a, now), vec![]);
        // etcd comes back and had kept the lease (its clock ran late): restore.
        now += s(5);
        a.on(Event::Tick(now));
        let fx = a.on(Event::Renewed {
            sent: now,
            now,
            ttl: 20,
        });
        assert_eq!(
            fx,
            vec![
                Effect::Hold(held(20)),
                Effect::Restore {
                    subnet: sn("10.244.1.0/24")
                }
            ]
        );
        assert!(!a.withdrawn());
    }

    #[test]
    fn an_expired_lease_is_reacquired_with_the_same_subnet_preferred() {
        let t0 = Instant::now();
        let mut a = LeaseAgent::new(held(20), MARGIN, t0);
        a.on(Event::Tick(t0 + s(10)));
        let fx = a.on(Event::RenewalExpired);
        assert_eq!(fx.len(), 2, "{fx:?}");
        assert!(matches!(&fx[0], Effect::Withdraw { why, .. } if why.contains("expired")));
        assert!(matches!(
            &fx[1],
            Effect::Reacquire { previous: Some(p), exclude: None, .. } if *p == sn("10.244.1.0/24")
        ));
        assert_eq!(a.wake_at(), None, "nothing to renew while re-acquiring");
        // News about the old key while re-acquiring changes nothing.
        assert_eq!(a.on(Event::OwnKeyDeleted(sn("10.244.1.0/24"))), vec![]);
        let new = Held {
            subnet: sn("10.244.1.0/24"),
            lease_id: 9,
            ttl: 20,
        };
        let t1 = t0 + s(12);
        assert_eq!(
            a.on(Event::Acquired {
                lease: new,
                now: t1
            }),
            vec![Effect::Hold(new)]
        );
        assert_eq!(a.held(), new);
        assert_eq!(a.wake_at(), Some(t1 + s(10)));
    }

    #[test]
    fn a_deleted_key_is_reacquired_and_news_about_other_subnets_is_ignored() {
        let t0 = Instant::now();
        let mut a = LeaseAgent::new(held(DAY), MARGIN, t0);
        assert_eq!(a.on(Event::OwnKeyDeleted(sn("10.244.9.0/24"))), vec![]);
        let fx = a.on(Event::OwnKeyDeleted(sn("10.244.1.0/24")));
        assert!(matches!(&fx[0], Effect::Withdraw { why, .. } if why.contains("deleted")));
        assert!(matches!(
            &fx[1],
            Effect::Reacquire {
                previous: Some(_),
                exclude: None,
                ..
            }
        ));
    }

    #[test]
    fn a_stolen_key_moves_to_another_subnet() {
        let t0 = Instant::now();
        let mut a = LeaseAgent::new(held(DAY), MARGIN, t0);
        let other: Ipv4Addr = "10.0.0.9".parse().unwrap();
        let fx = a.on(Event::OwnKeyPut(
            sn("10.244.1.0/24"),
            judge_own_key(Ok((other, true)), "10.0.0.1".parse().unwrap(), 3),
        ));
        assert!(
            matches!(&fx[0], Effect::Withdraw { why, .. } if why.contains("10.0.0.9")),
            "{fx:?}"
        );
        assert!(matches!(
            &fx[1],
            Effect::Reacquire { previous: None, exclude: Some(x), .. } if *x == sn("10.244.1.0/24")
        ));
    }

    #[test]
    fn a_hostile_value_in_our_key_is_rewritten_and_the_outcome_decides_what_next() {
        let me: Ipv4Addr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let mut a = LeaseAgent::new(held(DAY), MARGIN, t0);
        for verdict in [
            judge_own_key(Err("not JSON".into()), me, 7),
            judge_own_key(Ok((me, false)), me, 7),
        ] {
            let fx = a.on(Event::OwnKeyPut(sn("10.244.1.0/24"), verdict));
            assert!(matches!(&fx[..], [Effect::RewriteOwnKey { .. }]), "{fx:?}");
        }
        assert_eq!(a.on(Event::Rewritten(Rewrite::Done)), vec![]);
        assert_eq!(a.on(Event::Rewritten(Rewrite::Raced)), vec![]);
        let fx = a.on(Event::Rewritten(Rewrite::LeaseGone));
        assert!(matches!(
            &fx[..],
            [Effect::Withdraw { .. }, Effect::Reacquire { .. }]
        ));
        let mut b = LeaseAgent::new(held(DAY), MARGIN, t0);
        let fx = b.on(Event::Rewritten(Rewrite::Failed(
            "permission denied".into(),
        )));
        assert!(
            matches!(&fx[..], [Effect::Reacquire { why, .. }] if why.contains("permission denied")),
            "{fx:?}"
        );
    }

    #[test]
    fn a_lease_id_written_by_a_restarted_weftd_is_adopted() {
        let me: Ipv4Addr = "10.0.0.1".parse().unwrap();
        let mut a = LeaseAgent::new(held(DAY), MARGIN, Instant::now());
        assert_eq!(
            a.on(Event::OwnKeyPut(
                sn("10.244.1.0/24"),
                judge_own_key(Ok((me, true)), me, 7)
            )),
            vec![],
            "our own write, nothing to do"
        );
        let fx = a.on(Event::OwnKeyPut(
            sn("10.244.1.0/24"),
            judge_own_key(Ok((me, true)), me, 42),
        ));
        assert_eq!(
            fx,
            vec![Effect::Adopt(Held {
                lease_id: 42,
                ..held(DAY)
            })]
        );
        assert_eq!(a.held().lease_id, 42);
    }

    #[test]
    fn a_reservation_is_never_renewed() {
        let t0 = Instant::now();
        let r = Held {
            lease_id: 0,
            ..held(0)
        };
        let mut a = LeaseAgent::new(r, MARGIN, t0);
        assert_eq!(a.wake_at(), None);
        assert_eq!(a.on(Event::Tick(t0 + s(10 * DAY as u64))), vec![]);
    }
}
