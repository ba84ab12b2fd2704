//! The executor of weft_core's [`WatchCursor`]: one loop that asks the cursor what to do
//! next, lists the leases or opens the watch through a [`LeaseSource`] (etcd), hands what it
//! finds to a [`LeaseSink`] (the lease table, our own key's news, the reconciler, health),
//! runs the anti-entropy check on its timer, and reports every outcome back to the cursor.
//!
//! The daemon's source is `weft_store::Store`; the tests below drive the executor with a
//! scripted etcd on tokio's paused clock: a compacted watch, a dead etcd, an oversized
//! response and a failed anti-entropy check, each in milliseconds.

use std::time::Duration;

use tracing::{debug, info, warn};
use weft_core::lease_watch::{Batch, Next, Relist, Tick, WatchCursor};
use weft_store::{KeyRevision, LeaseEvent, RawLease, StoreError, WatchBatch};

/// Why an etcd request failed, as far as the watch's decisions go.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The answer was over gRPC's message limit: list page by page instead.
    TooLarge(String),
    /// The revision asked for was compacted away.
    Compacted(String),
    /// Anything else (etcd down, a timeout, a lost leader): try again.
    Other(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        if e.is_too_large() {
            Failure::TooLarge(e.to_string())
        } else if e.is_compacted() {
            Failure::Compacted(e.to_string())
        } else {
            Failure::Other(e.to_string())
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::TooLarge(e) | Failure::Compacted(e) | Failure::Other(e) => f.write_str(e),
        }
    }
}

/// etcd, as the lease watch reads it.
pub(crate) trait LeaseSource {
    type Stream: LeaseStream;
    /// Every lease (paged) and the revision of the listing.
    async fn list(&self) -> Result<(Vec<RawLease>, i64), Failure>;
    /// The lease watch from revision `from`.
    async fn watch(&self, from: i64) -> Result<Self::Stream, Failure>;
    /// The lease keys and their mod revisions at revision `at`, without values.
    async fn revisions(&self, at: i64) -> Result<Vec<KeyRevision>, Failure>;
}

/// An open lease watch.
pub(crate) trait LeaseStream {
    /// The next batch; `None` when the stream ended.
    async fn next(&mut self) -> Result<Option<WatchBatch>, Failure>;
    /// Asks etcd for a progress notification.
    async fn request_progress(&mut self) -> Result<(), Failure>;
}

/// Where the watch's findings go.
pub(crate) trait LeaseSink {
    /// A listing replaces the lease table (`why` it was made); the number of keys it changed.
    fn listed(&self, raws: &[RawLease], why: Relist) -> usize;
    /// Events, in revision order, applied to the lease table.
    fn apply(&self, events: Vec<LeaseEvent>);
    /// How many of `keys` (with their mod revisions) differ from the lease table.
    fn differences(&self, keys: &[KeyRevision]) -> usize;
    /// Leases changed: the reconciler should run.
    fn reconcile(&self);
    /// The watch is open (again, when `reconnected`).
    fn watching(&self, reconnected: bool);
    /// The watch is being replaced by a listing, because of `why`.
    fn relisting(&self, why: &str);
    /// etcd could not be read (`why`); the watch tries again.
    fn lost(&self, why: &str);
    /// What the watch is doing now, for its heartbeat (`within`: when it will next beat;
    /// zero for work that beats when it is done).
    fn busy(&self, doing: &'static str, within: Duration);
    /// The watch waits for etcd with no deadline (a quiet cluster sends nothing for hours).
    fn waiting(&self, on: &'static str);
}

/// The lease watch's executor.
pub(crate) struct WatchExecutor<S: LeaseSource, K: LeaseSink> {
    source: S,
    sink: K,
    cursor: WatchCursor,
    /// How often the anti-entropy check runs.
    period: Duration,
}

impl<S: LeaseSource, K: LeaseSink> WatchExecutor<S, K> {
    /// The executor after the start-up listing at `rev`; the anti-entropy check runs every
    /// `period`.
    pub(crate) fn new(source: S, sink: K, rev: i64, period: Duration) -> Self {
        WatchExecutor {
            source,
            sink,
            cursor: WatchCursor::new(rev),
            period,
        }
    }

    /// Runs for as long as weftd does.
    pub(crate) async fn run(mut self) {
        let start = tokio::time::Instant::now() + self.period;
        let mut check = tokio::time::interval_at(start, self.period);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            match self.cursor.next() {
                Next::Relist(why) => self.relist(why).await,
                Next::Watch { from } => {
                    self.watch(from, &mut check).await;
                    // A re-list is due at once; otherwise wait (capped at 1 s: the watch is
                    // back within a second of etcd's return).
                    if let Some(wait) = self.cursor.lost() {
                        self.sink.busy("waiting to reconnect the lease watch", wait);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    async fn relist(&mut self, why: Relist) {
        // Every etcd request has a timeout (5 s) and a page is at most about 1 MiB, so a
        // listing of tens of thousands of keys ends well within the bound.
        self.sink.busy("re-listing the leases", Duration::ZERO);
        match self.source.list().await {
            Ok((raws, rev)) => {
                let changed = self.sink.listed(&raws, why);
                info!(
                    revision = rev,
                    keys = raws.len(),
                    reason = why.label(),
                    changed,
                    "re-listed leases"
                );
                self.cursor.listed(rev);
                self.sink.reconcile();
            }
            Err(e) => {
                self.sink.lost(&e.to_string());
                let wait = self.cursor.list_failed();
                self.sink.busy("waiting to re-list the leases", wait);
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Opens the watch from `from` and follows it until it ends or a re-list is due.
    async fn watch(&mut self, from: i64, check: &mut tokio::time::Interval) {
        self.sink.busy("opening the lease watch", Duration::ZERO);
        let mut w = match self.source.watch(from).await {
            Ok(w) => w,
            Err(e) => return self.sink.lost(&e.to_string()),
        };
        let reconnected = self.cursor.opened();
        if reconnected {
            info!(from_revision = from, "lease watch re-established");
        }
        self.sink.watching(reconnected);
        loop {
            // No deadline: a quiet cluster sends nothing for hours. A dead connection ends
            // the stream within about 9 s (HTTP/2 keep-alive), which is a beat.
            self.sink.waiting("lease events from etcd");
            let next = tokio::select! {
                b = w.next() => b,
                _ = check.tick() => {
                    match self.cursor.tick() {
                        Tick::RequestProgress => {
                            if let Err(e) = w.request_progress().await {
                                debug!(error = %e, "cannot ask etcd for watch progress");
                            }
                        }
                        Tick::Check { at } => {
                            if !self.check(at).await {
                                self.cursor.check_failed();
                                return;
                            }
                        }
                    }
                    continue;
                }
            };
            self.sink.busy("applying lease events", Duration::ZERO);
            match next {
                Ok(Some(WatchBatch::Events { events, revision })) => {
                    let changed = !events.is_empty();
                    if changed {
                        self.sink.apply(events);
                    }
                    match self.cursor.batch(revision, changed) {
                        Batch::Reconcile => self.sink.reconcile(),
                        Batch::Check { at } => {
                            // The progress notification asked for by the check.
                            if !self.check(at).await {
                                self.cursor.check_failed();
                                return;
                            }
                        }
                        Batch::Nothing => {}
                    }
                }
                Ok(Some(WatchBatch::Compacted(c))) => {
                    warn!(
                        compact_revision = c,
                        "lease watch fell behind a compaction; re-listing"
                    );
                    self.sink
                        .relisting("re-listing the leases after an etcd compaction");
                    self.cursor.compacted();
                    return;
                }
                Ok(None) => return self.sink.lost("the watch stream ended"),
                Err(Failure::TooLarge(e)) => {
                    warn!(error = %e, from_revision = self.cursor.rev() + 1, "a lease watch response was over gRPC's message limit (huge values); re-listing page by page");
                    self.sink.relisting(
                        "re-listing the leases (a watch response was over gRPC's message limit)",
                    );
                    self.cursor.too_large();
                    return;
                }
                Err(e) => return self.sink.lost(&e.to_string()),
            }
        }
    }

    /// The anti-entropy check at `rev`: the keys and mod revisions (cheap, no values)
    /// compared with the table. False when a re-list must follow: they differ, or `rev` was
    /// compacted. A check that cannot be made is tried again next period.
    async fn check(&mut self, rev: i64) -> bool {
        self.sink
            .busy("checking the leases (anti-entropy)", Duration::ZERO);
        let keys = match self.source.revisions(rev).await {
            Ok(keys) => keys,
            Err(Failure::Compacted(_)) => {
                debug!(
                    revision = rev,
                    "the watch's revision was compacted; the anti-entropy check re-lists"
                );
                return false;
            }
            Err(e) => {
                warn!(error = %e, "the anti-entropy check of the leases failed; trying again next period");
                return true;
            }
        };
        let differing = self.sink.differences(&keys);
        if differing == 0 {
            debug!(
                revision = rev,
                keys = keys.len(),
                "anti-entropy check: the watch missed nothing"
            );
            return true;
        }
        warn!(
            revision = rev,
            keys = keys.len(),
            differing,
            "anti-entropy check: the lease watch missed changes; re-listing to repair"
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    use tokio::time::Instant;

    use super::*;

    /// What the fake etcd and sink saw, with the (paused) time since the start.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        List,
        Watch(i64),
        Progress,
        Revisions(i64),
        Listed(Relist),
        Applied(usize),
        Reconcile,
        Watching(bool),
        Relisting,
        Lost,
    }

    type Log = Rc<RefCell<Vec<(Duration, Seen)>>>;

    /// A listing for `why` (the fake etcd lists at revision 500), the reconcile of its
    /// result, and the watch resumed after it.
    fn relisted(why: Relist) -> [Seen; 5] {
        [
            Seen::List,
            Seen::Listed(why),
            Seen::Reconcile,
            Seen::Watch(501),
            Seen::Watching(true),
        ]
    }

    /// What one `watch` call gets: a refusal, or a stream of scripted batches, after which
    /// the stream stays quiet (a quiet cluster).
    enum Script {
        Refuse,
        Stream(Vec<Result<Option<WatchBatch>, Failure>>),
    }

    /// A scripted etcd: each `watch` takes the next script (a quiet stream when none is
    /// left), listings answer at `list_rev`, and the revisions answer holds `revisions`.
    struct Etcd {
        log: Log,
        start: Instant,
        watches: RefCell<VecDeque<Script>>,
        list_rev: i64,
        revisions: Vec<KeyRevision>,
    }

    struct Stream {
        log: Log,
        start: Instant,
        batches: VecDeque<Result<Option<WatchBatch>, Failure>>,
        /// What a progress request brings: a notification at this revision.
        progress_rev: Option<i64>,
        progressed: bool,
    }

    fn note(log: &Log, start: Instant, s: Seen) {
        log.borrow_mut().push((start.elapsed(), s));
    }

    impl LeaseSource for &Etcd {
        type Stream = Stream;
        async fn list(&self) -> Result<(Vec<RawLease>, i64), Failure> {
            note(&self.log, self.start, Seen::List);
            Ok((Vec::new(), self.list_rev))
        }
        async fn watch(&self, from: i64) -> Result<Stream, Failure> {
            note(&self.log, self.start, Seen::Watch(from));
            match self.watches.borrow_mut().pop_front() {
                Some(Script::Refuse) => Err(Failure::Other("connection refused".into())),
                Some(Script::Stream(b)) => Ok(self.stream(b)),
                None => Ok(self.stream(Vec::new())),
            }
        }
        async fn revisions(&self, at: i64) -> Result<Vec<KeyRevision>, Failure> {
            note(&self.log, self.start, Seen::Revisions(at));
            Ok(self.revisions.clone())
        }
    }

    impl Etcd {
        fn new(watches: Vec<Script>) -> Etcd {
            Etcd {
                log: Rc::new(RefCell::new(Vec::new())),
                start: Instant::now(),
                watches: RefCell::new(watches.into()),
                list_rev: 500,
                revisions: Vec::new(),
            }
        }
        fn stream(&self, batches: Vec<Result<Option<WatchBatch>, Failure>>) -> Stream {
            Stream {
                log: self.log.clone(),
                start: self.start,
                batches: batches.into(),
                progress_rev: Some(900),
                progressed: false,
            }
        }
        fn seen(&self) -> Vec<(Duration, Seen)> {
            self.log.borrow().clone()
        }
        /// What was seen, in order, without the times.
        fn kinds(&self) -> Vec<Seen> {
            self.seen().into_iter().map(|(_, s)| s).collect()
        }
        fn only(&self, f: impl Fn(&Seen) -> bool) -> Vec<(Duration, Seen)> {
            self.seen().into_iter().filter(|(_, s)| f(s)).collect()
        }
    }

    impl LeaseStream for Stream {
        async fn next(&mut self) -> Result<Option<WatchBatch>, Failure> {
            if let Some(b) = self.batches.pop_front() {
                return b;
            }
            if self.progressed {
                self.progressed = false;
                if let Some(rev) = self.progress_rev {
                    return Ok(Some(WatchBatch::Events {
                        events: Vec::new(),
                        revision: rev,
                    }));
                }
            }
            std::future::pending().await
        }
        async fn request_progress(&mut self) -> Result<(), Failure> {
            note(&self.log, self.start, Seen::Progress);
            self.progressed = true;
            Ok(())
        }
    }

    /// A sink that records; the table differs from etcd by `differing` keys.
    struct Sink {
        log: Log,
        start: Instant,
        differing: usize,
    }

    impl LeaseSink for &Sink {
        fn listed(&self, _raws: &[RawLease], why: Relist) -> usize {
            note(&self.log, self.start, Seen::Listed(why));
            0
        }
        fn apply(&self, events: Vec<LeaseEvent>) {
            note(&self.log, self.start, Seen::Applied(events.len()));
        }
        fn differences(&self, _keys: &[KeyRevision]) -> usize {
            self.differing
        }
        fn reconcile(&self) {
            note(&self.log, self.start, Seen::Reconcile);
        }
        fn watching(&self, reconnected: bool) {
            note(&self.log, self.start, Seen::Watching(reconnected));
        }
        fn relisting(&self, _why: &str) {
            note(&self.log, self.start, Seen::Relisting);
        }
        fn lost(&self, _why: &str) {
            note(&self.log, self.start, Seen::Lost);
        }
        fn busy(&self, _doing: &'static str, _within: Duration) {}
        fn waiting(&self, _on: &'static str) {}
    }

    fn sink(etcd: &Etcd, differing: usize) -> Sink {
        Sink {
            log: etcd.log.clone(),
            start: etcd.start,
            differing,
        }
    }

    fn put(key: &str, rev: i64) -> LeaseEvent {
        LeaseEvent::Put(RawLease {
            subnet6: None,
            key: key.into(),
            subnet: Err("test".into()),
            value: b"{}".to_vec(),
            oversized: None,
            lease_id: 0,
            mod_revision: rev,
        })
    }

    /// Runs the executor from revision 100 for `span` of paused time.
    async fn run(etcd: &Etcd, sink: &Sink, period: Duration, span: Duration) {
        let exec = WatchExecutor::new(etcd, sink, 100, period);
        let _ = tokio::time::timeout(span, exec.run()).await;
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn events_are_applied_and_the_watch_resumes_after_the_last_one() {
        let etcd = Etcd::new(vec![
            Script::Stream(vec![
                Ok(Some(WatchBatch::Events {
                    events: vec![put("a", 101), put("b", 102)],
                    revision: 102,
                })),
                Ok(None),
            ]),
            Script::Stream(vec![]),
        ]);
        let sink = sink(&etcd, 0);
        run(&etcd, &sink, HOUR, Duration::from_secs(10)).await;
        assert_eq!(
            etcd.kinds(),
            [
                Seen::Watch(101),
                Seen::Watching(false),
                Seen::Applied(2),
                Seen::Reconcile,
                Seen::Lost,
                Seen::Watch(103),
                Seen::Watching(true),
            ]
        );
        let again = etcd.only(|s| *s == Seen::Watch(103));
        assert_eq!(
            again[0].0,
            Duration::from_millis(100),
            "the first retry waits 100 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_compacted_watch_is_replaced_by_a_listing_and_resumes_after_it() {
        let etcd = Etcd::new(vec![Script::Stream(vec![Ok(Some(WatchBatch::Compacted(
            300,
        )))])]);
        let sink = sink(&etcd, 0);
        run(&etcd, &sink, HOUR, Duration::from_secs(10)).await;
        let mut want = vec![Seen::Watch(101), Seen::Watching(false), Seen::Relisting];
        want.extend(relisted(Relist::Compacted));
        assert_eq!(etcd.kinds(), want);
        assert!(
            etcd.seen().iter().all(|(t, _)| t.is_zero()),
            "no wait anywhere: {:?}",
            etcd.seen()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_etcd_is_retried_within_a_second_and_an_oversized_response_relists() {
        let mut scripts: Vec<Script> = (0..10).map(|_| Script::Refuse).collect();
        scripts.push(Script::Stream(vec![Err(Failure::TooLarge(
            "message length too large".into(),
        ))]));
        let etcd = Etcd::new(scripts);
        let sink = sink(&etcd, 0);
        run(&etcd, &sink, HOUR, Duration::from_secs(30)).await;
        let attempts = etcd.only(|s| matches!(s, Seen::Watch(_)));
        assert!(attempts.len() >= 12, "{:?}", etcd.seen());
        for w in attempts[..11].windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!(
                gap <= Duration::from_secs(1),
                "retried within a second: {:?}",
                attempts
            );
        }
        assert_eq!(etcd.only(|s| *s == Seen::Lost).len(), 10);
        // the 11th attempt opened, its first answer was too large: a listing, then the watch
        // from the listing's revision
        assert_eq!(
            etcd.only(|s| matches!(s, Seen::Listed(_)))[0].1,
            Seen::Listed(Relist::TooLarge)
        );
        assert_eq!(attempts[11].1, Seen::Watch(501));
    }

    #[tokio::test(start_paused = true)]
    async fn the_check_asks_for_progress_then_relists_when_the_table_differs() {
        // The table agrees with etcd: the check finds nothing, period after period.
        let etcd = Etcd::new(vec![]);
        let quiet = sink(&etcd, 0);
        let period = Duration::from_secs(60);
        run(&etcd, &quiet, period, Duration::from_secs(60 * 5 + 1)).await;
        assert_eq!(
            etcd.only(|s| *s == Seen::Progress).len(),
            5,
            "{:?}",
            etcd.seen()
        );
        // each progress notification (revision 900) brings the check, at that revision
        let checks = etcd.only(|s| matches!(s, Seen::Revisions(_)));
        assert_eq!(checks.len(), 5, "{:?}", etcd.seen());
        assert!(checks.iter().all(|(_, s)| *s == Seen::Revisions(900)));
        assert!(etcd.only(|s| *s == Seen::List).is_empty());

        // The watch missed something: the check's difference brings a listing (a repair).
        let etcd = Etcd::new(vec![]);
        let behind = sink(&etcd, 3);
        run(&etcd, &behind, period, Duration::from_secs(61)).await;
        let mut want = vec![
            Seen::Watch(101),
            Seen::Watching(false),
            Seen::Progress,
            Seen::Revisions(900),
        ];
        want.extend(relisted(Relist::Repair));
        assert_eq!(etcd.kinds(), want);
    }
}
