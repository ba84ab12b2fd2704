//! The executor of weft_core's lease agent ([`agent::LeaseAgent`]): one loop that sleeps
//! until the agent wants a tick, turns the watch's news about our own key into the agent's
//! events, carries the agent's effects out through a [`LeasePort`] and feeds their outcomes
//! back as events.
//!
//! The port is the only way out: etcd (renew, rewrite, re-acquire) and the node (subnet.env,
//! metrics). The daemon's port is [`crate::daemon`]'s; the tests below drive the executor
//! with a fake port on tokio's paused clock, so an hour of renewals or an etcd that never
//! answers takes milliseconds. Time is tokio's ([`tokio::time::Instant`]), handed to the agent
//! as std instants, so the paused clock is the agent's clock too.

use std::collections::VecDeque;

use ipnet::Ipv4Net;
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_core::agent::{self, Effect, Event, Held, LeaseAgent, Rewrite};

/// What the watch saw in our own key, with the subnet it was about (news queued before a
/// re-acquisition must not be mistaken for news about the new subnet).
#[derive(Debug)]
pub(crate) enum News<V> {
    Deleted(Ipv4Net),
    /// Our key was written with `V` (what a rewrite is guarded on).
    Put(Ipv4Net, V),
    /// A lease of another node publishes our VTEP MAC.
    MacConflict,
}

/// What carrying out the lease agent's effects needs from etcd and the node.
pub(crate) trait LeasePort {
    /// A value found in our key.
    type Value;
    /// Judges a value found in our key against this node.
    fn judge(&self, value: &Self::Value) -> agent::OwnKey;
    /// Renews `lease_id`: the TTL granted, `None` when etcd says the lease is gone.
    async fn renew(&self, lease_id: i64) -> Result<Option<i64>, String>;
    /// A renewal failed (`error`); it is retried.
    fn renewal_failed(&self, error: &str);
    /// The lease is `held` now; `adopted` when another weftd's lease id was taken over.
    fn hold(&self, held: Held, adopted: bool);
    /// Takes `subnet` away from pods, saying why.
    fn withdraw(&self, subnet: Ipv4Net, why: &str);
    /// Gives `subnet` back to pods.
    async fn restore(&self, subnet: Ipv4Net);
    /// Writes our value over `value` in our key, guarded on it, with `held`'s etcd lease.
    async fn rewrite(&self, held: Held, value: &Self::Value, why: &str) -> Rewrite;
    /// Acquires a lease again (`previous` if free, never `exclude`) and applies it to the
    /// node; returns only once it holds one: the lease and when etcd granted it (before it
    /// was applied, so the agent's idea of its expiry is never late).
    async fn reacquire(
        &self,
        held: Held,
        previous: Option<Ipv4Net>,
        exclude: Option<Ipv4Net>,
        why: &str,
    ) -> (Held, Instant);
    /// Another node publishes our VTEP MAC: take a new one if the conflict stands; the
    /// lease that now carries it (None when nothing was published).
    async fn resolve_mac_conflict(&self) -> Option<Held>;
}

/// The lease agent's executor.
pub(crate) struct LeaseExecutor<P: LeasePort> {
    port: P,
    agent: LeaseAgent,
    /// The last value the watch showed in our key (what a rewrite is guarded on).
    last: Option<P::Value>,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl<P: LeasePort> LeaseExecutor<P> {
    /// The executor for `held`, granted now, renewed `renew_margin_minutes` before expiry.
    pub(crate) fn new(port: P, held: Held, renew_margin_minutes: i64) -> Self {
        LeaseExecutor {
            port,
            agent: LeaseAgent::new(held, renew_margin_minutes, now()),
            last: None,
        }
    }

    /// Runs until the news channel closes.
    pub(crate) async fn run(mut self, mut news: mpsc::Receiver<News<P::Value>>) {
        loop {
            let wake = self.agent.wake_at();
            let sleep = async {
                match wake {
                    None => std::future::pending::<()>().await,
                    Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                }
            };
            let event = tokio::select! {
                _ = sleep => Event::Tick(now()),
                n = news.recv() => match n {
                    None => return,
                    Some(n) => match self.event_of(n).await {
                        Some(ev) => ev,
                        None => continue,
                    },
                },
            };
            self.feed(event).await;
        }
    }

    /// The agent's event for a piece of news, if it is one.
    async fn event_of(&mut self, news: News<P::Value>) -> Option<Event> {
        let current = self.agent.held().subnet;
        match news {
            News::MacConflict => {
                let held = self.port.resolve_mac_conflict().await?;
                // A new etcd lease carries the new MAC: renew that one from now on.
                Some(Event::Acquired {
                    lease: held,
                    now: now(),
                })
            }
            News::Deleted(sn) | News::Put(sn, _) if sn != current => {
                tracing::debug!(old = %sn, %current, "ignoring news about a subnet we no longer hold");
                None
            }
            News::Deleted(sn) => Some(Event::OwnKeyDeleted(sn)),
            News::Put(sn, value) => {
                let verdict = self.port.judge(&value);
                self.last = Some(value);
                Some(Event::OwnKeyPut(sn, verdict))
            }
        }
    }

    /// Feeds `event` to the agent and carries out its effects, and the effects of their
    /// outcomes, until there are none.
    async fn feed(&mut self, event: Event) {
        let mut events = VecDeque::from([event]);
        while let Some(ev) = events.pop_front() {
            for fx in self.agent.on(ev) {
                if let Some(next) = self.carry_out(fx).await {
                    events.push_back(next);
                }
            }
        }
    }

    /// Carries out one effect; returns its outcome as the agent's next event.
    async fn carry_out(&mut self, fx: Effect) -> Option<Event> {
        match fx {
            Effect::Renew { lease_id, deadline } => {
                let sent = now();
                let renewed =
                    tokio::time::timeout_at(Instant::from_std(deadline), self.port.renew(lease_id))
                        .await
                        .unwrap_or_else(|_| {
                            Err("etcd did not answer the renewal before the lease ran out"
                                .to_string())
                        });
                Some(match renewed {
                    Ok(Some(ttl)) => Event::Renewed {
                        sent,
                        now: now(),
                        ttl,
                    },
                    Ok(None) => Event::RenewalExpired,
                    Err(error) => {
                        self.port.renewal_failed(&error);
                        Event::RenewalFailed { now: now(), error }
                    }
                })
            }
            Effect::Hold(held) => {
                self.port.hold(held, false);
                None
            }
            Effect::Adopt(held) => {
                self.port.hold(held, true);
                None
            }
            Effect::Withdraw { subnet, why } => {
                self.port.withdraw(subnet, &why);
                None
            }
            Effect::Restore { subnet } => {
                self.port.restore(subnet).await;
                None
            }
            Effect::RewriteOwnKey { why } => {
                let value = self.last.as_ref()?;
                let held = self.agent.held();
                Some(Event::Rewritten(self.port.rewrite(held, value, &why).await))
            }
            Effect::Reacquire {
                previous,
                exclude,
                why,
            } => {
                let held = self.agent.held();
                let (lease, granted) = self.port.reacquire(held, previous, exclude, &why).await;
                Some(Event::Acquired {
                    lease,
                    now: granted.into_std(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::future::pending;
    use std::time::Duration;

    use super::*;

    /// What the fake port saw.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Renew(i64),
        Failed,
        Hold(Held, bool),
        Withdraw(Ipv4Net),
        Restore(Ipv4Net),
        Rewrite(&'static str),
        Reacquire {
            previous: Option<Ipv4Net>,
            exclude: Option<Ipv4Net>,
        },
    }

    /// A fake etcd and node: etcd answers a renewal after `latency` with a 60 s TTL, does not
    /// answer at all until `down_until` (a partition; the executor's deadline ends the wait),
    /// and says the leases in `gone` do not exist. Every call is recorded with the (paused)
    /// time since the start.
    struct Fake {
        latency: Duration,
        down_until: Duration,
        gone: Vec<i64>,
        start: Instant,
        calls: RefCell<Vec<(Duration, Call)>>,
        /// What a re-acquisition gets.
        next: Held,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                latency: Duration::from_millis(20),
                down_until: Duration::ZERO,
                gone: Vec::new(),
                start: Instant::now(),
                calls: RefCell::new(Vec::new()),
                next: held("10.244.9.0/24", 99),
            }
        }
        fn record(&self, c: Call) {
            self.calls.borrow_mut().push((self.start.elapsed(), c));
        }
        /// When each call matching `f` was made.
        fn times(&self, f: impl Fn(&Call) -> bool) -> Vec<Duration> {
            let calls = self.calls.borrow();
            calls
                .iter()
                .filter(|(_, c)| f(c))
                .map(|(t, _)| *t)
                .collect()
        }
        fn calls(&self) -> Vec<(Duration, Call)> {
            self.calls.borrow().clone()
        }
    }

    impl LeasePort for &Fake {
        type Value = &'static str;
        fn judge(&self, value: &&'static str) -> agent::OwnKey {
            match *value {
                "ours" => agent::OwnKey::Ours { lease_id: 7 },
                "garbage" => agent::OwnKey::Wrong("not JSON".into()),
                _ => agent::OwnKey::TakenBy("192.0.2.9".parse().unwrap()),
            }
        }
        async fn renew(&self, lease_id: i64) -> Result<Option<i64>, String> {
            self.record(Call::Renew(lease_id));
            tokio::time::sleep_until(self.start + self.down_until).await;
            tokio::time::sleep(self.latency).await;
            Ok((!self.gone.contains(&lease_id)).then_some(60))
        }
        fn renewal_failed(&self, _error: &str) {
            self.record(Call::Failed);
        }
        fn hold(&self, held: Held, adopted: bool) {
            self.record(Call::Hold(held, adopted));
        }
        fn withdraw(&self, subnet: Ipv4Net, _why: &str) {
            self.record(Call::Withdraw(subnet));
        }
        async fn restore(&self, subnet: Ipv4Net) {
            self.record(Call::Restore(subnet));
        }
        async fn rewrite(&self, _held: Held, value: &&'static str, _why: &str) -> Rewrite {
            self.record(Call::Rewrite(value));
            Rewrite::Done
        }
        async fn reacquire(
            &self,
            _held: Held,
            previous: Option<Ipv4Net>,
            exclude: Option<Ipv4Net>,
            _why: &str,
        ) -> (Held, Instant) {
            self.record(Call::Reacquire { previous, exclude });
            tokio::time::sleep(self.latency).await;
            let granted = Instant::now();
            // applying the new lease to the node takes a while
            tokio::time::sleep(self.latency).await;
            (self.next, granted)
        }
        async fn resolve_mac_conflict(&self) -> Option<Held> {
            None
        }
    }

    fn held(subnet: &str, lease_id: i64) -> Held {
        Held {
            subnet: subnet.parse().unwrap(),
            lease_id,
            ttl: 60,
        }
    }

    fn sn(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// Runs the executor for lease 7 on 10.244.1.0/24 against `fake` for `span` of paused
    /// time, sending `news`, each after its delay.
    async fn run(fake: &Fake, span: Duration, news: Vec<(Duration, News<&'static str>)>) {
        let (tx, rx) = mpsc::channel(8);
        // flanneld's default renew margin (60 minutes), capped at half the TTL: 30 s.
        let exec = LeaseExecutor::new(fake, held("10.244.1.0/24", 7), 60);
        let feeder = async move {
            for (after, n) in news {
                tokio::time::sleep(after).await;
                tx.send(n).await.unwrap();
            }
            pending::<()>().await
        };
        let _ = tokio::time::timeout(span, async {
            tokio::join!(exec.run(rx), feeder);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_hour_of_renewals_at_half_the_ttl_and_nothing_else() {
        let fake = Fake::new();
        run(&fake, Duration::from_secs(3600), vec![]).await;
        let renewals = fake.times(|c| *c == Call::Renew(7));
        // A 60 s TTL: renewed 30 s after each renewal was answered (20 ms latency), so about
        // 3600 / 30.02 times in the hour.
        assert_eq!(renewals.len(), 119, "{:?}", fake.calls());
        assert_eq!(renewals[0], Duration::from_secs(30));
        for w in renewals.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_millis(30_020), "{renewals:?}");
        }
        let calls = fake.calls();
        let steady = |c: &Call| match c {
            Call::Renew(id) => *id == 7,
            Call::Hold(h, adopted) => h.lease_id == 7 && !adopted,
            _ => false,
        };
        assert!(calls.iter().all(|(_, c)| steady(c)), "{calls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_etcd_withdraws_the_subnet_at_expiry_and_its_return_restores_it() {
        // etcd does not answer for 100 s; the lease runs out (by our clock) at 60 s.
        let fake = Fake {
            down_until: Duration::from_secs(100),
            ..Fake::new()
        };
        let own = sn("10.244.1.0/24");
        run(&fake, Duration::from_secs(200), vec![]).await;
        let calls = fake.calls();
        let withdrawn = fake.times(|c| *c == Call::Withdraw(own));
        assert_eq!(withdrawn.len(), 1, "{calls:?}");
        let at = withdrawn[0];
        assert!(
            at >= Duration::from_secs(60) && at <= Duration::from_secs(61),
            "withdrawn when the lease runs out, not before: {calls:?}"
        );
        assert!(!fake.times(|c| *c == Call::Failed).is_empty(), "{calls:?}");
        let restored = fake.times(|c| *c == Call::Restore(own));
        assert_eq!(restored.len(), 1, "{calls:?}");
        assert!(restored[0] >= Duration::from_secs(100), "{calls:?}");
        // a silent etcd is not a lost lease: nothing is re-acquired
        assert!(
            fake.times(|c| matches!(c, Call::Reacquire { .. }))
                .is_empty(),
            "{calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_is_reacquired_and_the_new_one_renewed() {
        let fake = Fake {
            gone: vec![7],
            ..Fake::new()
        };
        run(&fake, Duration::from_secs(90), vec![]).await;
        let calls = fake.calls();
        let re = fake.times(|c| {
            *c == Call::Reacquire {
                previous: Some(sn("10.244.1.0/24")),
                exclude: None,
            }
        });
        assert_eq!(re.len(), 1, "{calls:?}");
        assert!(
            calls
                .iter()
                .any(|(_, c)| *c == Call::Hold(fake.next, false)),
            "the new lease is published: {calls:?}"
        );
        let renewed = fake.times(|c| *c == Call::Renew(99));
        assert!(!renewed.is_empty(), "the new lease is renewed: {calls:?}");
        // 30 s after etcd granted it (20 ms into the re-acquisition), not after it was applied
        assert_eq!(
            renewed[0],
            re[0] + Duration::from_millis(30_020),
            "{calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stolen_key_moves_to_another_subnet_and_a_hostile_value_is_rewritten() {
        let fake = Fake::new();
        let own = sn("10.244.1.0/24");
        let news = vec![
            // garbage in our key: rewritten in place, the lease kept
            (Duration::from_secs(5), News::Put(own, "garbage")),
            // news about a subnet we do not hold: ignored
            (Duration::from_secs(1), News::Deleted(sn("10.244.2.0/24"))),
            // another node's public IP in our key: a new subnet, never this one
            (Duration::from_secs(1), News::Put(own, "theirs")),
        ];
        run(&fake, Duration::from_secs(20), news).await;
        let calls = fake.calls();
        let seen: Vec<Call> = calls.iter().map(|(_, c)| c.clone()).collect();
        assert_eq!(
            seen,
            [
                Call::Rewrite("garbage"),
                Call::Withdraw(own),
                Call::Reacquire {
                    previous: None,
                    exclude: Some(own),
                },
                Call::Hold(fake.next, false),
            ],
            "{calls:?}"
        );
        assert_eq!(
            fake.times(|c| matches!(c, Call::Reacquire { .. })),
            [Duration::from_secs(7)],
            "at once: {calls:?}"
        );
    }
}
