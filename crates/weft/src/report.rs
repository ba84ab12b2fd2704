//! The lease report behind `weft leases list` and `weft network check`: from the config and
//! the raw keys under `<prefix>/subnets/` to rows, flags and a free-subnet count. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Serialize, Serializer};
use weft_core::config::{BackendConfig, NetworkConfig};
use weft_core::lease::{Lease, LeaseAttrs};
use weft_core::peer::{PeerVerdict, classify_lease};

/// Time left on a key's etcd lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ttl {
    /// No etcd lease (lease id 0): a reservation, it never expires.
    Reservation,
    /// Seconds left.
    Seconds(i64),
    /// The etcd lease is gone (the key is about to disappear).
    Expired,
    /// The TTL could not be read.
    Unknown(String),
}

impl Ttl {
    fn text(&self) -> String {
        match self {
            Ttl::Reservation => "reservation".into(),
            Ttl::Seconds(s) => crate::human::ttl(*s),
            Ttl::Expired => "expired".into(),
            Ttl::Unknown(_) => "unknown".into(),
        }
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ttl::Seconds(n) => s.serialize_i64(*n),
            other => s.serialize_str(&other.text()),
        }
    }
}

/// One key under `<prefix>/subnets/` as read from etcd.
#[derive(Debug, Clone)]
pub struct LeaseInput {
    /// The key without `<prefix>/subnets/`, e.g. `10.244.1.0-24`.
    pub name: String,
    /// The subnet the key names, or why it does not name one.
    pub subnet: Result<Ipv4Net, String>,
    pub value: Vec<u8>,
    /// The size of a value over the 64 KiB limit, which is not read (then `value` is empty).
    pub oversized: Option<usize>,
    pub ttl: Ttl,
}

/// A problem flag on a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flag {
    DuplicateIp,
    Overlap,
    Outside,
    Bad,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::DuplicateIp => "DUPLICATE-IP",
            Flag::Overlap => "OVERLAP",
            Flag::Outside => "OUTSIDE",
            Flag::Bad => "BAD",
        }
    }
}

impl Serialize for Flag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One flagged problem, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub flag: Flag,
    pub message: String,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub key: String,
    pub subnet: Option<Ipv4Net>,
    pub public_ip: Option<Ipv4Addr>,
    pub backend_type: Option<String>,
    pub vtep_mac: Option<String>,
    pub vni: Option<u32>,
    /// Seconds left, or "reservation" / "expired" / "unknown".
    pub ttl: Ttl,
    pub flags: Vec<Flag>,
    pub problems: Vec<Problem>,
}

impl Row {
    fn flag(&mut self, flag: Flag, message: String) {
        if !self.flags.contains(&flag) {
            self.flags.push(flag);
            self.flags.sort();
        }
        self.problems.push(Problem { flag, message });
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Free subnets between SubnetMin and SubnetMax (None without a valid config).
    pub free: Option<u64>,
    /// All subnets between SubnetMin and SubnetMax (None without a valid config).
    pub total: Option<u64>,
    pub reservations: usize,
}

impl Report {
    /// Number of flagged problems over all rows.
    pub fn problem_count(&self) -> usize {
        self.rows.iter().map(|r| r.problems.len()).sum()
    }

    /// `N leases (K reservations), M free subnets of T`.
    pub fn summary(&self) -> String {
        let n = self.rows.len();
        let mut s = format!("{n} lease{}", if n == 1 { "" } else { "s" });
        if self.reservations > 0 {
            s.push_str(&format!(" ({} reservations)", self.reservations));
        }
        match (self.free, self.total) {
            (Some(free), Some(total)) => s.push_str(&format!(", {free} free subnets of {total}")),
            _ => s.push_str(", free subnets unknown (no valid network config)"),
        }
        let p = self.problem_count();
        if p > 0 {
            s.push_str(&format!(", {p} problem{}", if p == 1 { "" } else { "s" }));
        }
        s
    }

    /// The table, the problem list and the summary line.
    pub fn render_text(&self) -> String {
        let header = [
            "SUBNET",
            "PUBLIC-IP",
            "BACKEND",
            "VTEP-MAC",
            "VNI",
            "TTL",
            "FLAGS",
        ];
        let dash = || "-".to_string();
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.subnet.map_or_else(|| r.key.clone(), |s| s.to_string()),
                    r.public_ip.map_or_else(dash, |ip| ip.to_string()),
                    r.backend_type.clone().unwrap_or_else(dash),
                    r.vtep_mac.clone().unwrap_or_else(dash),
                    r.vni.map_or_else(dash, |v| v.to_string()),
                    r.ttl.text(),
                    if r.flags.is_empty() {
                        dash()
                    } else {
                        r.flags
                            .iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cols: &[String]| {
            let mut l = String::new();
            for (i, (c, w)) in cols.iter().zip(widths.iter()).enumerate() {
                if i + 1 == cols.len() {
                    l.push_str(c);
                } else {
                    let _ = write!(l, "{c:<w$}  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        if !cells.is_empty() {
            line(&header.map(String::from));
            for row in &cells {
                line(row);
            }
        }
        let problems = self.problem_lines();
        if !problems.is_empty() {
            out.push_str("\nproblems:\n");
            for p in problems {
                let _ = writeln!(out, "  {p}");
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// `<key>: FLAG: reason`, one per problem.
    pub fn problem_lines(&self) -> Vec<String> {
        self.rows
            .iter()
            .flat_map(|r| {
                r.problems
                    .iter()
                    .map(move |p| format!("{}: {}: {}", r.key, p.flag.as_str(), p.message))
            })
            .collect()
    }
}

/// Builds the report. `cfg` is None when there is no valid config: OUTSIDE and the free count
/// are then left out, everything else is still checked.
pub fn build(cfg: Option<&NetworkConfig>, inputs: Vec<LeaseInput>) -> Report {
    let mut rows: Vec<(Row, Option<LeaseAttrs>)> =
        inputs.into_iter().map(|i| base_row(cfg, i)).collect();
    rows.sort_by(|(a, _), (b, _)| {
        // Parsed subnets in address order, then unparseable keys by name.
        (a.subnet.is_none(), a.subnet, &a.key).cmp(&(b.subnet.is_none(), b.subnet, &b.key))
    });

    flag_duplicate_ips(&mut rows);
    flag_overlaps(&mut rows);

    // Every key that names a subnet takes it, as weftd's allocator sees it: also an alias
    // key (refused as a lease, BAD) and a key whose value does not parse.
    let subnets: Vec<Ipv4Net> = rows
        .iter()
        .filter_map(|(r, _)| {
            r.subnet
                .or_else(|| weft_core::subnet::claimed_subnet(&r.key))
        })
        .collect();
    let (free, total) = match cfg {
        Some(cfg) if cfg.subnet_size() > 0 => {
            let total = cfg.subnet_count();
            (Some(total - taken_count(cfg, &subnets)), Some(total))
        }
        _ => (None, None),
    };
    let reservations = rows
        .iter()
        .filter(|(r, _)| r.ttl == Ttl::Reservation)
        .count();
    Report {
        rows: rows.into_iter().map(|(r, _)| r).collect(),
        free,
        total,
        reservations,
    }
}

fn base_row(cfg: Option<&NetworkConfig>, input: LeaseInput) -> (Row, Option<LeaseAttrs>) {
    let mut row = Row {
        key: input.name.clone(),
        subnet: input.subnet.as_ref().ok().copied(),
        public_ip: None,
        backend_type: None,
        vtep_mac: None,
        vni: None,
        ttl: input.ttl.clone(),
        flags: Vec::new(),
        problems: Vec::new(),
    };
    if let Err(reason) = &input.subnet {
        row.flag(Flag::Bad, format!("the key is not a subnet key: {reason}"));
    }
    if let Ttl::Unknown(why) = &input.ttl {
        row.flag(
            Flag::Bad,
            format!("cannot read the TTL of its etcd lease: {why}"),
        );
    }
    let parsed = match input.oversized {
        Some(size) => Err(weft_core::lease::LeaseError::TooLarge {
            size,
            limit: weft_core::lease::MAX_LEASE_BYTES,
        }),
        None => LeaseAttrs::parse(&input.value),
    };
    let attrs = match parsed {
        Ok(a) => a,
        Err(e) => {
            row.flag(Flag::Bad, e.to_string());
            return (row, None);
        }
    };
    row.public_ip = Some(attrs.public_ip);
    row.backend_type = attrs.backend_type.clone();
    let is_vxlan = attrs.backend_type.as_deref() == Some("vxlan");
    // host-gw leases carry no BackendData (flanneld writes none): nothing to decode.
    let is_host_gw = attrs.backend_type.as_deref() == Some("host-gw");
    if is_vxlan {
        match attrs.vxlan_data() {
            Ok(d) => {
                row.vtep_mac = Some(d.vtep_mac.to_string());
                row.vni = Some(d.vni);
            }
            Err(e) => row.flag(Flag::Bad, e.to_string()),
        }
    }

    if let (Some(cfg), Some(subnet)) = (cfg, row.subnet) {
        let outside = outside_reasons(cfg, subnet);
        let inside = outside.is_empty();
        for reason in outside {
            row.flag(Flag::Outside, reason);
        }
        // Inside the config: ask the same code weftd uses whether it would program this peer
        // (a lease of the config's backend). Its data checks (VNI, MAC, public IP) become
        // BAD; vxlan data errors are already there.
        let of_config = match &cfg.backend {
            BackendConfig::Vxlan(_) => is_vxlan && row.vni.is_some(),
            BackendConfig::HostGw => is_host_gw,
            BackendConfig::Other { .. } => false,
        };
        if inside
            && of_config
            && let PeerVerdict::Reject(reason) = classify_lease(
                cfg,
                None,
                &Lease {
                    subnet,
                    subnet6: None,
                    attrs: attrs.clone(),
                },
            )
        {
            let reason = reason
                .strip_prefix(&format!("lease {}: ", row.key))
                .unwrap_or(&reason)
                .to_string();
            row.flag(Flag::Bad, format!("weftd would not program it: {reason}"));
        }
    } else if ((is_vxlan && row.vni.is_some()) || is_host_gw) && attrs.public_ip.is_unspecified() {
        row.flag(
            Flag::Bad,
            "PublicIP is 0.0.0.0 (missing), so no node can reach this node".into(),
        );
    }
    (row, Some(attrs))
}

/// Why `subnet` is not one this config can hand out; empty when it is.
fn outside_reasons(cfg: &NetworkConfig, subnet: Ipv4Net) -> Vec<String> {
    let mut out = Vec::new();
    let Some(network) = cfg.network.filter(|_| cfg.enable_ipv4) else {
        return vec!["the network config has no IPv4 Network".into()];
    };
    if !network.contains(&subnet) {
        out.push(format!("{subnet} is not inside Network {network}"));
    }
    if subnet.prefix_len() != cfg.subnet_len {
        out.push(format!(
            "{subnet} is a /{} but SubnetLen is {}",
            subnet.prefix_len(),
            cfg.subnet_len
        ));
    }
    if out.is_empty() && !(cfg.subnet_min <= subnet.addr() && subnet.addr() <= cfg.subnet_max) {
        out.push(format!(
            "{subnet} is outside SubnetMin {} .. SubnetMax {}",
            cfg.subnet_min, cfg.subnet_max
        ));
    }
    out
}

fn flag_duplicate_ips(rows: &mut [(Row, Option<LeaseAttrs>)]) {
    let mut by_ip: BTreeMap<Ipv4Addr, Vec<usize>> = BTreeMap::new();
    for (i, (_, attrs)) in rows.iter().enumerate() {
        if let Some(a) = attrs {
            by_ip.entry(a.public_ip).or_default().push(i);
        }
    }
    for (ip, idx) in by_ip.into_iter().filter(|(_, v)| v.len() > 1) {
        let keys: Vec<String> = idx.iter().map(|&i| rows[i].0.key.clone()).collect();
        for &i in &idx {
            let others: Vec<&str> = keys
                .iter()
                .filter(|k| **k != rows[i].0.key)
                .map(String::as_str)
                .collect();
            rows[i].0.flag(
                Flag::DuplicateIp,
                format!(
                    "PublicIP {ip} also holds {}; a node keeps one lease, so the others are stale: delete them (etcdctl del <prefix>/subnets/<key>)",
                    others.join(", ")
                ),
            );
        }
    }
}

fn range(s: Ipv4Net) -> (u32, u32) {
    (u32::from(s.network()), u32::from(s.broadcast()))
}

fn flag_overlaps(rows: &mut [(Row, Option<LeaseAttrs>)]) {
    // Rows are sorted by subnet, so a sweep compares each subnet only with earlier ones that
    // still reach into it.
    let mut active: Vec<usize> = Vec::new();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for i in 0..rows.len() {
        let Some(s) = rows[i].0.subnet else { continue };
        let (start, _) = range(s);
        active.retain(|&j| rows[j].0.subnet.is_some_and(|t| range(t).1 >= start));
        pairs.extend(active.iter().map(|&j| (j, i)));
        active.push(i);
    }
    for (a, b) in pairs {
        let (ka, kb) = (rows[a].0.key.clone(), rows[b].0.key.clone());
        rows[a].0.flag(Flag::Overlap, format!("overlaps {kb}"));
        rows[b].0.flag(Flag::Overlap, format!("overlaps {ka}"));
    }
}

/// Number of allocatable subnets (SubnetMin..=SubnetMax in SubnetLen steps) that overlap at
/// least one of `subnets`.
fn taken_count(cfg: &NetworkConfig, subnets: &[Ipv4Net]) -> u64 {
    let size = cfg.subnet_size();
    let total = cfg.subnet_count();
    if size == 0 || total == 0 {
        return 0;
    }
    let min = u64::from(u32::from(cfg.subnet_min));
    let end = min + total * size - 1;
    // Candidate index intervals covered by each subnet, then merged.
    let mut spans: Vec<(u64, u64)> = subnets
        .iter()
        .filter_map(|s| {
            let (a, b) = range(*s);
            let (a, b) = (u64::from(a).max(min), u64::from(b).min(end));
            (a <= b).then(|| ((a - min) / size, (b - min) / size))
        })
        .collect();
    spans.sort_unstable();
    let mut count = 0;
    let mut current: Option<(u64, u64)> = None;
    for (a, b) in spans {
        current = match current {
            Some((ca, cb)) if a <= cb + 1 => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                count += cb - ca + 1;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((ca, cb)) = current {
        count += cb - ca + 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetworkConfig {
        NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap()
    }

    fn vx(ip: &str, mac: &str) -> Vec<u8> {
        format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
        )
        .into_bytes()
    }

    fn input(name: &str, value: Vec<u8>, ttl: Ttl) -> LeaseInput {
        LeaseInput {
            name: name.to_string(),
            subnet: weft_core::subnet::parse_subnet_key(name).map_err(|e| e.to_string()),
            value,
            oversized: None,
            ttl,
        }
    }

    fn row<'a>(r: &'a Report, key: &str) -> &'a Row {
        r.rows.iter().find(|r| r.key == key).unwrap()
    }

    #[test]
    fn clean_leases_and_reservations() {
        let r = build(
            Some(&cfg()),
            vec![
                input(
                    "10.244.3.0-24",
                    vx("10.250.1.2", "aa:bb:cc:dd:ee:02"),
                    Ttl::Seconds(86000),
                ),
                input(
                    "10.244.1.0-24",
                    vx("10.250.1.1", "aa:bb:cc:dd:ee:01"),
                    Ttl::Reservation,
                ),
            ],
        );
        assert_eq!(r.problem_count(), 0);
        assert_eq!(r.rows[0].key, "10.244.1.0-24", "sorted by subnet");
        assert_eq!(r.rows[0].ttl, Ttl::Reservation);
        assert_eq!(r.rows[1].vtep_mac.as_deref(), Some("aa:bb:cc:dd:ee:02"));
        assert_eq!(r.rows[1].vni, Some(1));
        assert_eq!((r.free, r.total, r.reservations), (Some(253), Some(255), 1));
        assert_eq!(
            r.summary(),
            "2 leases (1 reservations), 253 free subnets of 255"
        );
        let text = r.render_text();
        assert!(text.starts_with("SUBNET"), "{text}");
        assert!(text.contains("reservation"), "{text}");
        assert!(text.contains("23h53m"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rows"][0]["ttl"], "reservation");
        assert_eq!(json["rows"][1]["ttl"], 86000);
        assert_eq!(json["rows"][1]["subnet"], "10.244.3.0/24");
    }

    /// A host-gw lease exactly as flanneld writes it: no BackendData.
    fn hostgw(ip: &str) -> Vec<u8> {
        format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#).into_bytes()
    }

    #[test]
    fn host_gw_leases_are_clean_rows_without_vxlan_data() {
        let hostgw_cfg =
            NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
                .unwrap();
        for cfg in [Some(&hostgw_cfg), Some(&cfg()), None] {
            let r = build(
                cfg,
                vec![
                    input("10.244.1.0-24", hostgw("10.0.0.1"), Ttl::Seconds(86000)),
                    input("10.244.2.0-24", hostgw("10.0.0.2"), Ttl::Seconds(86000)),
                ],
            );
            assert_eq!(r.problem_count(), 0, "{cfg:?}: {:?}", r.rows);
            let row = row(&r, "10.244.2.0-24");
            assert_eq!(row.backend_type.as_deref(), Some("host-gw"));
            assert_eq!((row.vtep_mac.as_deref(), row.vni), (None, None));
            assert_eq!(row.public_ip, Some(Ipv4Addr::new(10, 0, 0, 2)));
        }
        // With a host-gw config weftd's own judging applies to host-gw leases as to vxlan
        // ones: a loopback PublicIP, or a missing one, is BAD.
        let r = build(
            Some(&hostgw_cfg),
            vec![
                input("10.244.1.0-24", hostgw("127.0.0.1"), Ttl::Seconds(86000)),
                input("10.244.2.0-24", hostgw("0.0.0.0"), Ttl::Seconds(86000)),
            ],
        );
        for key in ["10.244.1.0-24", "10.244.2.0-24"] {
            let row = row(&r, key);
            assert!(
                row.flags.contains(&Flag::Bad)
                    && row.problems[0]
                        .message
                        .starts_with("weftd would not program it"),
                "{row:?}"
            );
        }
        let r = build(
            None,
            vec![input(
                "10.244.2.0-24",
                hostgw("0.0.0.0"),
                Ttl::Seconds(86000),
            )],
        );
        assert!(
            r.rows[0].problems[0]
                .message
                .contains("PublicIP is 0.0.0.0"),
            "{:?}",
            r.rows
        );
    }

    #[test]
    fn duplicates_overlaps_outside_and_bad() {
        let r = build(
            Some(&cfg()),
            vec![
                input(
                    "10.244.1.0-24",
                    vx("10.250.1.1", "aa:bb:cc:dd:ee:01"),
                    Ttl::Seconds(100),
                ),
                input(
                    "10.244.2.0-24",
                    vx("10.250.1.1", "aa:bb:cc:dd:ee:01"),
                    Ttl::Seconds(100),
                ),
                input(
                    "10.244.4.0-23",
                    vx("10.250.1.4", "aa:bb:cc:dd:ee:04"),
                    Ttl::Seconds(100),
                ),
                input(
                    "10.244.5.0-24",
                    vx("10.250.1.5", "aa:bb:cc:dd:ee:05"),
                    Ttl::Seconds(100),
                ),
                input(
                    "10.9.0.0-24",
                    vx("10.250.1.9", "aa:bb:cc:dd:ee:09"),
                    Ttl::Seconds(100),
                ),
                input(
                    "10.244.0.0-24",
                    vx("10.250.1.10", "aa:bb:cc:dd:ee:0a"),
                    Ttl::Seconds(100),
                ),
                input("10.244.7.0-24", b"not json".to_vec(), Ttl::Reservation),
                input("garbage", vx("10.250.1.8", "aa:bb:cc:dd:ee:08"), Ttl::Seconds(5)),
                input(
                    "10.244.8.0-24",
                    br#"{"PublicIP":"10.250.1.11","BackendType":"vxlan","BackendData":{"VNI":2,"VtepMAC":"aa:bb:cc:dd:ee:0b"}}"#.to_vec(),
                    Ttl::Seconds(100),
                ),
                input(
                    "10.244.9.0-24",
                    br#"{"PublicIP":"10.250.1.12","BackendType":"vxlan"}"#.to_vec(),
                    Ttl::Expired,
                ),
            ],
        );
        let flags = |k: &str| row(&r, k).flags.clone();
        assert_eq!(flags("10.244.1.0-24"), vec![Flag::DuplicateIp]);
        assert_eq!(flags("10.244.2.0-24"), vec![Flag::DuplicateIp]);
        assert!(
            row(&r, "10.244.1.0-24").problems[0]
                .message
                .contains("10.244.2.0-24")
        );
        assert_eq!(flags("10.244.4.0-23"), vec![Flag::Overlap, Flag::Outside]);
        assert_eq!(flags("10.244.5.0-24"), vec![Flag::Overlap]);
        assert!(
            row(&r, "10.244.5.0-24").problems[0]
                .message
                .contains("10.244.4.0-23")
        );
        assert_eq!(flags("10.9.0.0-24"), vec![Flag::Outside]);
        assert!(
            row(&r, "10.9.0.0-24").problems[0]
                .message
                .contains("not inside Network")
        );
        assert_eq!(flags("10.244.0.0-24"), vec![Flag::Outside]);
        assert!(
            row(&r, "10.244.0.0-24").problems[0]
                .message
                .contains("SubnetMin")
        );
        assert_eq!(flags("10.244.7.0-24"), vec![Flag::Bad]);
        assert!(
            row(&r, "10.244.7.0-24").problems[0]
                .message
                .contains("not valid JSON")
        );
        assert_eq!(row(&r, "10.244.7.0-24").public_ip, None);
        assert_eq!(flags("garbage"), vec![Flag::Bad]);
        assert_eq!(r.rows.last().unwrap().key, "garbage", "bad keys sort last");
        assert_eq!(flags("10.244.8.0-24"), vec![Flag::Bad]);
        assert!(
            row(&r, "10.244.8.0-24").problems[0]
                .message
                .contains("VNI mismatch")
        );
        assert_eq!(flags("10.244.9.0-24"), vec![Flag::Bad]);
        assert!(
            row(&r, "10.244.9.0-24").problems[0]
                .message
                .contains("BackendData")
        );
        assert_eq!(row(&r, "10.244.9.0-24").ttl, Ttl::Expired);

        // 10.244.0.0 and 10.9.0.0 are not allocatable; 1, 2, 4+5 (the /23), 5, 7, 8, 9 are taken.
        assert_eq!(r.free, Some(255 - 7));
        let text = r.render_text();
        assert!(text.contains("OVERLAP,OUTSIDE"), "{text}");
        assert!(
            text.contains("\nproblems:\n  10.9.0.0-24: OUTSIDE: "),
            "{text}"
        );
        assert!(text.contains("\n  10.244.1.0-24: DUPLICATE-IP: "), "{text}");
        assert!(
            text.contains("garbage: BAD: the key is not a subnet key"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert!(
            json["rows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["flags"] == serde_json::json!(["OVERLAP", "OUTSIDE"]))
        );
    }

    #[test]
    fn alias_and_garbage_keys_are_bad_but_still_take_their_subnet() {
        let r = build(
            Some(&cfg()),
            vec![
                input(
                    "10.244.1.0-024",
                    vx("10.0.0.1", "aa:bb:cc:dd:ee:01"),
                    Ttl::Seconds(9),
                ),
                input("10.244.2.0-24", b"{garbage".to_vec(), Ttl::Seconds(9)),
                input("junk", b"{}".to_vec(), Ttl::Seconds(9)),
            ],
        );
        let alias = row(&r, "10.244.1.0-024");
        assert!(alias.flags.contains(&Flag::Bad), "{alias:?}");
        assert!(
            alias
                .problems
                .iter()
                .any(|p| p.message.contains("not canonical")),
            "{alias:?}"
        );
        assert!(row(&r, "10.244.2.0-24").flags.contains(&Flag::Bad));
        assert_eq!((r.free, r.total), (Some(253), Some(255)));
    }

    #[test]
    fn without_config_outside_and_free_are_skipped() {
        let r = build(
            None,
            vec![
                input(
                    "10.9.0.0-24",
                    vx("10.250.1.1", "aa:bb:cc:dd:ee:01"),
                    Ttl::Seconds(9),
                ),
                input(
                    "10.9.1.0-24",
                    vx("0.0.0.0", "aa:bb:cc:dd:ee:02"),
                    Ttl::Unknown("boom".into()),
                ),
            ],
        );
        assert!(r.rows[0].flags.is_empty());
        assert_eq!(r.rows[1].flags, vec![Flag::Bad]);
        assert_eq!(r.rows[1].problems.len(), 2);
        assert_eq!((r.free, r.total), (None, None));
        assert!(r.summary().contains("free subnets unknown"));
    }

    #[test]
    fn free_count_handles_big_and_partial_leases() {
        let c = cfg();
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!(taken_count(&c, &[]), 0);
        assert_eq!(taken_count(&c, &[net("10.244.0.0/16")]), 255);
        assert_eq!(taken_count(&c, &[net("10.0.0.0/8")]), 255);
        assert_eq!(
            taken_count(&c, &[net("10.244.3.0/26"), net("10.244.3.128/26")]),
            1
        );
        assert_eq!(taken_count(&c, &[net("10.244.0.0/23")]), 1);
        assert_eq!(taken_count(&c, &[net("10.245.0.0/24")]), 0);
        assert_eq!(
            taken_count(&c, &[net("10.244.2.0/24"), net("10.244.3.0/24")]),
            2
        );
    }

    #[test]
    fn empty_report() {
        let r = build(Some(&cfg()), vec![]);
        assert_eq!(r.render_text(), "0 leases, 255 free subnets of 255\n");
    }
}
