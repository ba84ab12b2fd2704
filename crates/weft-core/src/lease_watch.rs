//! The lease watch's decisions, apart from its I/O: where the next watch starts, when the
//! leases are re-listed and why, when the anti-entropy check runs and at which revision, and
//! how long to wait before trying etcd again. weftd's watch task is the executor: it asks
//! [`WatchCursor::next`], does the listing or opens the watch, and reports what happened.
//!
//! `rev` is the revision up to which every event has been applied to the peer table. A broken
//! stream resumes from `rev + 1`; `rev` only moves forward, to the revision a batch carries
//! (the last delivered event's mod revision, or a progress notification's revision) or to a
//! listing's. A compacted resume revision, or a response over gRPC's message limit, is
//! replaced by a paged listing; so is a failed anti-entropy check.

use std::time::Duration;

/// The first wait after a failure, and the wait after any success.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest wait before re-opening the watch: it is back within a second of etcd's return.
pub const REWATCH_MAX: Duration = Duration::from_secs(1);
/// The longest wait before retrying a failed listing.
pub const RELIST_MAX: Duration = Duration::from_secs(5);

/// Why the watch is replaced by a full listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relist {
    /// The resume revision was compacted.
    Compacted,
    /// A watch response was over gRPC's message limit.
    TooLarge,
    /// The anti-entropy check found a difference (or its revision was compacted).
    Repair,
}

impl Relist {
    /// The `reason` label of `weft_lease_relists`.
    pub fn label(self) -> &'static str {
        match self {
            Relist::Compacted => "compacted",
            Relist::TooLarge => "too_large",
            Relist::Repair => "repair",
        }
    }
}

/// What the executor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// List every lease (paged) and report [`WatchCursor::listed`] or
    /// [`WatchCursor::list_failed`].
    Relist(Relist),
    /// Open the watch from this revision and report [`WatchCursor::opened`] or
    /// [`WatchCursor::lost`].
    Watch { from: i64 },
}

/// What the anti-entropy timer's tick asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Ask etcd for a progress notification, which brings `rev` to etcd's current revision
    /// once the watch has caught up, so the check lists at a recent (never compacted)
    /// revision even when no lease changed for hours.
    RequestProgress,
    /// No notification came within a period (the watch is still catching up): check at `rev`.
    Check { at: i64 },
}

/// What a delivered batch asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Leases changed: reconcile.
    Reconcile,
    /// The progress notification the check asked for: check at `at`.
    Check { at: i64 },
    /// Nothing to do.
    Nothing,
}

/// The watch's position and pending decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchCursor {
    rev: i64,
    relist: Option<Relist>,
    check_due: bool,
    opened_before: bool,
    delay: Duration,
}

impl WatchCursor {
    /// A cursor after the start-up listing at `rev`.
    pub fn new(rev: i64) -> WatchCursor {
        WatchCursor {
            rev,
            relist: None,
            check_due: false,
            opened_before: false,
            delay: BACKOFF_START,
        }
    }

    /// The revision every event up to which is applied.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// What to do next: a pending re-list first, else the watch from `rev + 1`.
    pub fn next(&self) -> Next {
        match self.relist {
            Some(why) => Next::Relist(why),
            None => Next::Watch { from: self.rev + 1 },
        }
    }

    /// A listing at `revision` replaced the table.
    pub fn listed(&mut self, revision: i64) {
        self.rev = revision;
        self.relist = None;
    }

    /// The listing failed: how long to wait before listing again (doubling, at most
    /// [`RELIST_MAX`]).
    pub fn list_failed(&mut self) -> Duration {
        let wait = self.delay;
        self.delay = (self.delay * 2).min(RELIST_MAX);
        wait
    }

    /// The watch is open. True when this is a reconnect (any watch after the first attempt,
    /// also when that first attempt failed).
    pub fn opened(&mut self) -> bool {
        let reconnect = self.opened_before;
        self.opened_before = true;
        self.delay = BACKOFF_START;
        self.check_due = false;
        reconnect
    }

    /// The anti-entropy timer fired.
    pub fn tick(&mut self) -> Tick {
        if self.check_due {
            self.check_due = false;
            Tick::Check { at: self.rev }
        } else {
            self.check_due = true;
            Tick::RequestProgress
        }
    }

    /// A batch up to `revision` was applied; `changed` when it held events.
    pub fn batch(&mut self, revision: i64, changed: bool) -> Batch {
        self.delay = BACKOFF_START;
        self.rev = self.rev.max(revision);
        if changed {
            Batch::Reconcile
        } else if self.check_due {
            self.check_due = false;
            Batch::Check { at: self.rev }
        } else {
            Batch::Nothing
        }
    }

    /// The anti-entropy check found a difference: re-list.
    pub fn check_failed(&mut self) {
        self.relist = Some(Relist::Repair);
    }

    /// The resume revision was compacted: re-list.
    pub fn compacted(&mut self) {
        self.relist = Some(Relist::Compacted);
    }

    /// A response was over gRPC's message limit: re-list page by page.
    pub fn too_large(&mut self) {
        self.relist = Some(Relist::TooLarge);
    }

    /// The watch ended (or did not open) for any other reason: how long to wait before
    /// opening it again, or None when a re-list is due at once.
    pub fn lost(&mut self) -> Option<Duration> {
        self.opened_before = true;
        if self.relist.is_some() {
            return None;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(REWATCH_MAX);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacted_watch_is_replaced_by_a_listing_and_resumes_after_it() {
        let mut c = WatchCursor::new(100);
        assert_eq!(c.next(), Next::Watch { from: 101 });
        assert!(!c.opened());
        assert_eq!(c.batch(120, true), Batch::Reconcile);
        // The stream breaks; etcd compacted past 121 meanwhile.
        assert_eq!(c.lost(), Some(BACKOFF_START));
        assert_eq!(c.next(), Next::Watch { from: 121 });
        assert!(c.opened(), "the second watch is a reconnect");
        c.compacted();
        assert_eq!(c.lost(), None, "a re-list is due at once");
        assert_eq!(c.next(), Next::Relist(Relist::Compacted));
        // etcd is down for the listing: back off, doubling up to RELIST_MAX.
        let waits: Vec<Duration> = (0..8).map(|_| c.list_failed()).collect();
        assert_eq!(waits[0], BACKOFF_START);
        assert_eq!(waits[1], BACKOFF_START * 2);
        assert_eq!(*waits.last().unwrap(), RELIST_MAX);
        assert_eq!(c.next(), Next::Relist(Relist::Compacted), "still due");
        c.listed(500);
        assert_eq!(c.next(), Next::Watch { from: 501 });
        assert!(c.opened());
        assert_eq!(
            c.lost(),
            Some(BACKOFF_START),
            "a success resets the backoff"
        );
    }

    #[test]
    fn the_revision_only_moves_forward() {
        let mut c = WatchCursor::new(50);
        c.opened();
        assert_eq!(c.batch(60, true), Batch::Reconcile);
        assert_eq!(c.batch(55, true), Batch::Reconcile);
        assert_eq!(c.rev(), 60);
        assert_eq!(
            c.batch(70, false),
            Batch::Nothing,
            "a progress notification"
        );
        assert_eq!(c.rev(), 70);
    }

    #[test]
    fn the_check_asks_for_progress_first_and_checks_at_a_recent_revision() {
        let mut c = WatchCursor::new(10);
        c.opened();
        assert_eq!(c.tick(), Tick::RequestProgress);
        // The notification brings rev to etcd's current revision: check there.
        assert_eq!(c.batch(900, false), Batch::Check { at: 900 });
        // Events before a notification are applied, not checked.
        assert_eq!(c.tick(), Tick::RequestProgress);
        assert_eq!(c.batch(905, true), Batch::Reconcile);
        // No notification within a period: check at rev as it is.
        assert_eq!(c.tick(), Tick::Check { at: 905 });
        assert_eq!(c.tick(), Tick::RequestProgress);
        // A reconnect forgets a requested notification.
        assert_eq!(c.lost(), Some(BACKOFF_START));
        c.opened();
        assert_eq!(c.batch(906, false), Batch::Nothing);
        // A failed check re-lists at once.
        c.check_failed();
        assert_eq!(c.lost(), None);
        assert_eq!(c.next(), Next::Relist(Relist::Repair));
    }

    #[test]
    fn a_dead_etcd_is_retried_within_a_second_and_an_oversized_response_relists() {
        let mut c = WatchCursor::new(1);
        // The first attempt fails: every later watch counts as a reconnect.
        let waits: Vec<Duration> = (0..6).map(|_| c.lost().unwrap()).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        assert!(c.opened());
        c.too_large();
        assert_eq!(c.lost(), None);
        assert_eq!(c.next(), Next::Relist(Relist::TooLarge));
        assert_eq!(Relist::TooLarge.label(), "too_large");
    }
}
