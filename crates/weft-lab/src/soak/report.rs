//! The soak's report: the figures, the verdict and its reasons, as a table or as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::figures::Summary;
use super::traffic::{FlowResult, PingResult};

/// A repair (or a churn node's propagation) slower than this is a failure.
pub const REPAIR_LIMIT_MS: f64 = 5000.0;
/// The failure an interrupted soak reports.
pub const INTERRUPTED: &str = "interrupted before the end";

/// Everything a soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The testbed id (every namespace of the run starts with it).
    pub testbed: String,
    pub nodes: usize,
    pub pods_per_node: usize,
    pub scenarios: Vec<String>,
    /// The duration asked for and the time the scenarios actually ran.
    pub duration_s: f64,
    pub ran_s: f64,
    pub outage_s: f64,
    pub interrupted: bool,
    /// Completed iterations per scenario.
    pub iterations: BTreeMap<String, u32>,
    pub pings: Vec<PingResult>,
    pub tcp_flows: Vec<FlowResult>,
    pub kernel: KernelReport,
    /// Subnet, VTEP MAC or lease value changes on the nodes that stayed.
    pub lease_changes: Vec<String>,
    pub timings: Timings,
    /// Nodes seen not ready while etcd was down (the outage was noticed), over all outages.
    pub not_ready_during_outages: u64,
    pub rss_kib: Vec<Rss>,
    /// Anything else that went wrong (a timeout, a crash, a failed step).
    pub problems: Vec<String>,
    /// Where the logs were saved, if they were.
    pub logs: Option<String>,
    pub passed: bool,
    pub failures: Vec<String>,
}

/// What the kernel watchers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelReport {
    /// Correct entries deleted and added again outside the soak's own damage.
    pub flaps: usize,
    pub flap_details: Vec<String>,
    /// Correct entries deleted (not by the soak) and never added back.
    pub still_missing: Vec<String>,
    /// Deletions the soak caused itself (drift), not counted.
    pub deletions_caused_by_soak: u64,
    /// Times the kernel dropped announcements (the counts may be short).
    pub watcher_overruns: u64,
}

/// Timings in milliseconds: count, median and maximum.
#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    /// From starting a restarted weftd to its /readyz 200.
    pub restart_ready: Summary,
    /// From etcd healthy again to each weftd's /readyz 200.
    pub etcd_reconnect: Summary,
    /// From starting the damage to the kernel or firewall being right again, every kind.
    pub repair: Summary,
    pub repair_route: Summary,
    pub repair_neigh_fdb: Summary,
    pub repair_device: Summary,
    pub repair_iptables: Summary,
    /// From starting a new node's weftd to every other node programming it.
    pub churn_join: Summary,
    /// From deleting a leaving node's lease to every node removing it.
    pub churn_leave_deleted: Summary,
    /// From killing a node with a 5 s lease TTL to every node removing it (lease expiry).
    pub churn_leave_expired: Summary,
}

/// weftd's resident memory on one node.
#[derive(Debug, Clone, Serialize)]
pub struct Rss {
    pub node: String,
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub max: Option<u64>,
}

impl Report {
    /// The reasons the soak fails (empty: it passed).
    pub fn verdict(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.interrupted {
            f.push(INTERRUPTED.to_string());
        } else {
            for (name, n) in &self.iterations {
                if *n == 0 {
                    f.push(format!("scenario {name} never completed"));
                }
            }
        }
        for p in &self.pings {
            if p.lost_unexpected > 0 {
                f.push(format!(
                    "{} of {} pings lost from {} ({}) to {} ({})",
                    p.lost_unexpected, p.sent, p.from, p.from_ip, p.to, p.to_ip
                ));
            }
            if let Some(e) = &p.error {
                f.push(format!("ping from {} to {}: {e}", p.from, p.to));
            }
        }
        for t in &self.tcp_flows {
            if t.resets > 0 {
                f.push(format!(
                    "TCP flow {} → {} broke {} time(s): {}",
                    t.from,
                    t.to,
                    t.resets,
                    t.errors.first().cloned().unwrap_or_default()
                ));
            }
        }
        if self.kernel.flaps > 0 {
            f.push(format!(
                "{} flap(s) of correct kernel entries: {}",
                self.kernel.flaps,
                self.kernel
                    .flap_details
                    .first()
                    .cloned()
                    .unwrap_or_default()
            ));
        }
        for m in &self.kernel.still_missing {
            f.push(format!("entry deleted and never restored: {m}"));
        }
        f.extend(self.lease_changes.iter().cloned());
        for (what, s) in [
            ("repair", &self.timings.repair),
            ("a new node's propagation", &self.timings.churn_join),
            (
                "a deleted node's removal",
                &self.timings.churn_leave_deleted,
            ),
        ] {
            if let Some(max) = s.max_ms
                && max > REPAIR_LIMIT_MS
            {
                f.push(format!("{what} took {max:.0} ms (limit 5 s)"));
            }
        }
        f.extend(self.problems.iter().cloned());
        f
    }

    /// The report as a table for a terminal.
    ///
    /// Durations read as people write them (`10m`, `23h59m`); the JSON keeps the seconds.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "weft-lab soak on testbed {}: {} nodes, {} pod(s) per node, scenarios {}, ran {} of {}, etcd outages of {}{}",
            self.testbed,
            self.nodes,
            self.pods_per_node,
            self.scenarios.join(","),
            people(self.ran_s),
            people(self.duration_s),
            people(self.outage_s),
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        let _ = writeln!(o);
        let _ = writeln!(o, "{:<14} {:>10}", "scenario", "iterations");
        for (name, n) in &self.iterations {
            let _ = writeln!(o, "{name:<14} {n:>10}");
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "pings every 20 ms between pods");
        let _ = writeln!(
            o,
            "{:<6} {:<6} {:>9} {:>6} {:>13} {:>11}",
            "from", "to", "sent", "lost", "during drift", "unexpected"
        );
        for p in &self.pings {
            let _ = writeln!(
                o,
                "{:<6} {:<6} {:>9} {:>6} {:>13} {:>11}{}",
                p.from,
                p.to,
                p.sent,
                p.lost,
                p.lost_during_damage,
                p.lost_unexpected,
                p.error
                    .as_deref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "TCP flows (8-byte request and echo every 20 ms)");
        let _ = writeln!(
            o,
            "{:<6} {:<6} {:>11} {:>7} {:>12}",
            "from", "to", "round trips", "resets", "max RTT ms"
        );
        for t in &self.tcp_flows {
            let _ = writeln!(
                o,
                "{:<6} {:<6} {:>11} {:>7} {:>12.1}",
                t.from, t.to, t.round_trips, t.resets, t.max_rtt_ms
            );
            for e in &t.errors {
                let _ = writeln!(o, "    {e}");
            }
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<44} {:>6} {:>10} {:>10}",
            "timing", "count", "p50 ms", "max ms"
        );
        let t = &self.timings;
        for (name, s) in [
            ("weftd restart → /readyz 200", &t.restart_ready),
            ("etcd back → /readyz 200 (reconnect)", &t.etcd_reconnect),
            ("drift repair, all kinds", &t.repair),
            ("  route deleted → back", &t.repair_route),
            ("  neigh + fdb flushed → back", &t.repair_neigh_fdb),
            ("  flannel.1 deleted → back, same MAC", &t.repair_device),
            ("  FLANNEL-POSTRTG flushed → back", &t.repair_iptables),
            ("new node started → programmed everywhere", &t.churn_join),
            (
                "lease deleted → node removed everywhere",
                &t.churn_leave_deleted,
            ),
            (
                "node killed (TTL 5 s) → removed everywhere",
                &t.churn_leave_expired,
            ),
        ] {
            let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "{name:<44} {:>6} {:>10} {:>10}",
                s.count,
                ms(s.p50_ms),
                ms(s.max_ms)
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "kernel: {} flap(s) of correct neighbour/FDB/route entries on flannel.1 ({} deletions caused by the soak's drift, {} watcher overruns)",
            self.kernel.flaps, self.kernel.deletions_caused_by_soak, self.kernel.watcher_overruns
        );
        for d in &self.kernel.flap_details {
            let _ = writeln!(o, "    {d}");
        }
        let _ = writeln!(
            o,
            "leases: {} subnet/VTEP MAC/lease change(s) on the nodes that stayed",
            self.lease_changes.len()
        );
        let _ = writeln!(
            o,
            "etcd outages: weftd noticed {} time(s) (node × outage)",
            self.not_ready_during_outages
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<6} {:>12} {:>12} {:>12}",
            "weftd", "RSS start", "RSS end", "RSS max"
        );
        for r in &self.rss_kib {
            let mib = |v: Option<u64>| {
                v.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "?".into())
            };
            let _ = writeln!(
                o,
                "{:<6} {:>12} {:>12} {:>12}",
                r.node,
                mib(r.start),
                mib(r.end),
                mib(r.max)
            );
        }
        if !self.problems.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "problems:");
            for p in &self.problems {
                let _ = writeln!(o, "  {p}");
            }
        }
        if let Some(l) = &self.logs {
            let _ = writeln!(o, "logs saved in {l}");
        }
        let _ = writeln!(o);
        if self.passed {
            let _ = writeln!(o, "PASS");
        } else {
            let _ = writeln!(o, "FAIL:");
            for f in &self.failures {
                let _ = writeln!(o, "  {f}");
            }
        }
        o
    }
}

/// Seconds (as the report's JSON keeps them) as people read them.
fn people(seconds: f64) -> String {
    weft::human::duration(std::time::Duration::try_from_secs_f64(seconds).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn empty() -> Report {
        let none = Summary::of(&[]);
        Report {
            testbed: "wt000001".into(),
            nodes: 3,
            pods_per_node: 1,
            scenarios: vec!["restart".into()],
            duration_s: 40.0,
            ran_s: 41.0,
            outage_s: 5.0,
            interrupted: false,
            iterations: BTreeMap::from([("restart".to_string(), 2)]),
            pings: vec![PingResult {
                from: "n0".into(),
                to: "n1".into(),
                from_ip: "10.244.1.2".parse().unwrap(),
                to_ip: "10.244.2.2".parse().unwrap(),
                sent: 2000,
                lost: 2,
                lost_during_damage: 2,
                lost_unexpected: 0,
                error: None,
            }],
            tcp_flows: vec![],
            kernel: KernelReport::default(),
            lease_changes: vec![],
            timings: Timings {
                restart_ready: none,
                etcd_reconnect: none,
                repair: Summary::of(&[Duration::from_millis(40)]),
                repair_route: none,
                repair_neigh_fdb: none,
                repair_device: none,
                repair_iptables: none,
                churn_join: none,
                churn_leave_deleted: none,
                churn_leave_expired: none,
            },
            not_ready_during_outages: 0,
            rss_kib: vec![],
            problems: vec![],
            logs: None,
            passed: true,
            failures: vec![],
        }
    }

    #[test]
    fn a_clean_run_passes_and_losses_during_drift_are_not_held_against_it() {
        let r = empty();
        assert_eq!(r.verdict(), Vec::<String>::new());
        assert!(r.table().contains("PASS"));
        assert!(
            r.table().contains("ran 41s of 40s, etcd outages of 5s"),
            "{}",
            r.table()
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["iterations"]["restart"], 2);
        assert_eq!(json["timings"]["repair"]["max_ms"], 40.0);
    }

    #[test]
    fn each_failure_is_named() {
        let mut r = empty();
        r.pings[0].lost_unexpected = 3;
        r.kernel.flaps = 1;
        r.kernel.flap_details = vec!["n1: route of n2 deleted and re-added".into()];
        r.lease_changes = vec!["n0: VTEP MAC changed".into()];
        r.timings.repair = Summary::of(&[Duration::from_millis(5200)]);
        r.iterations.insert("drift".into(), 0);
        let v = r.verdict();
        assert_eq!(v.len(), 5, "{v:#?}");
        assert!(v.iter().any(|f| f.contains("3 of 2000 pings lost from n0")));
        assert!(v.iter().any(|f| f.contains("route of n2")));
        assert!(v.iter().any(|f| f.contains("VTEP MAC")));
        assert!(v.iter().any(|f| f.contains("5200 ms")));
        assert!(v.iter().any(|f| f.contains("drift never completed")));
        r.interrupted = true;
        assert!(r.verdict().iter().any(|f| f.contains("interrupted")));
    }
}
