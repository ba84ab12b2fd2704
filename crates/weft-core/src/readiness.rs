//! weftd's readiness: the conditions /readyz requires, each met or not with a reason in
//! words, and the /readyz body. Pure; weftd's health module holds one behind a lock and
//! exports it as `weft_ready` and `weft_ready_condition`.

/// One thing /readyz requires. Each is either met or not met with a reason in words; weftd is
/// ready when all are met. Adding a reason for a new wait (say "waiting for the xtables lock
/// held by PID 12") is one `health.unmet(Condition::Rules, "...")` where the wait begins and
/// one `health.met(Condition::Rules)` where it ends (weftd's health module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    /// This node holds a subnet lease and subnet.env describes it.
    Lease,
    /// The VXLAN device has its address and is up, and every peer is programmed.
    Dataplane,
    /// The iptables rules are in place.
    Rules,
    /// The lease watch runs, in step with etcd.
    Watch,
}

impl Condition {
    pub const ALL: [Condition; 4] = [
        Condition::Lease,
        Condition::Dataplane,
        Condition::Rules,
        Condition::Watch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Condition::Lease => "lease",
            Condition::Dataplane => "dataplane",
            Condition::Rules => "rules",
            Condition::Watch => "watch",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The readiness conditions: `None` when met, else why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    unmet: [Option<String>; 4],
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            unmet: Condition::ALL.map(|c| {
                Some(match c {
                    Condition::Lease => "starting".to_string(),
                    Condition::Dataplane => "not programmed yet".to_string(),
                    Condition::Rules => "not programmed yet".to_string(),
                    Condition::Watch => "not started yet".to_string(),
                })
            }),
        }
    }
}

impl Readiness {
    pub fn set(&mut self, c: Condition, why_not: Option<String>) {
        self.unmet[c.index()] = why_not;
    }

    pub fn is_met(&self, c: Condition) -> bool {
        self.unmet[c.index()].is_none()
    }

    pub fn is_ready(&self) -> bool {
        self.unmet.iter().all(Option::is_none)
    }

    /// The unmet conditions with their reasons, in [`Condition::ALL`] order.
    pub fn unmet(&self) -> impl Iterator<Item = (Condition, &str)> {
        Condition::ALL
            .into_iter()
            .filter_map(|c| self.unmet[c.index()].as_deref().map(|w| (c, w)))
    }

    /// The /readyz body: the first unmet reason on the first line (what to fix first), then
    /// one line per condition.
    pub fn render(&self) -> String {
        let mut out = match self.unmet().next() {
            None => "weftd is ready\n".to_string(),
            Some((_, why)) => format!("weftd is not ready yet: {why}\n"),
        };
        if !self.is_ready() {
            for c in Condition::ALL {
                match &self.unmet[c.index()] {
                    None => out.push_str(&format!("{}: ok\n", c.name())),
                    Some(why) => out.push_str(&format!("{}: {why}\n", c.name())),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_unmet_and_names_the_first_reason_first() {
        let mut r = Readiness::default();
        assert!(!r.is_ready());
        assert_eq!(r.unmet().count(), 4);
        assert!(r.render().starts_with("weftd is not ready yet: starting\n"));
        for c in Condition::ALL {
            r.set(c, None);
        }
        assert!(r.is_ready() && r.is_met(Condition::Watch));
        assert_eq!(r.render(), "weftd is ready\n");
        r.set(Condition::Watch, Some("etcd is unreachable".into()));
        assert_eq!(
            r.render(),
            "weftd is not ready yet: etcd is unreachable\nlease: ok\ndataplane: ok\nrules: ok\nwatch: etcd is unreachable\n"
        );
        assert_eq!(
            r.unmet().collect::<Vec<_>>(),
            [(Condition::Watch, "etcd is unreachable")]
        );
    }
}
