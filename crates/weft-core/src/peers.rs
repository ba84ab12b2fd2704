//! The set of leases as the watch reports them, and the peers they turn into.
//!
//! Pure: events come in, peers and warnings come out. A key whose value cannot be parsed is
//! rejected for itself alone (flanneld tears down every route on one bad event, compat 1.8).
//!
//! Each lease is judged once, when it arrives, and kept as the few bytes that matter (a
//! [`Peer`], or why it is skipped), not as parsed JSON: at 5,000 peers that is the
//! difference between about 0.5 MiB and 4 MiB. Only the checks against this node's own
//! subnet, which can change, run on every pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::config::NetworkConfig;
use crate::family::PodNet;
use crate::lease::{Lease, LeaseAttrs};
use crate::mac::MacAddr;
use crate::peer::{Peer, PeerVerdict, Reach, classify_lease, classify_lease6};
use ipnet::{Ipv4Net, Ipv6Net};

/// One key of the subnets prefix after judging it.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<N: PodNet = Ipv4Net> {
    /// A VXLAN peer, unless it is (or overlaps) this node's own subnet.
    Peer(Peer<N>),
    /// Never programmed: why, and whether it deserves a warning (`reject`) or only a debug
    /// line (another backend's lease).
    Skip { why: String, reject: bool },
}

/// What a verdict change should be logged as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Rejected { key: String, why: String },
    Ignored { key: String, why: String },
}

/// All keys under `<prefix>/subnets/`, by key.
#[derive(Debug, Default, Clone)]
pub struct PeerTable {
    entries: BTreeMap<String, Entry>,
    /// Last notice text per key that has one, so each problem is logged once, not every
    /// reconcile. Keys that are plain peers have no entry here.
    last_notice: HashMap<String, String>,
    /// The mod revision of each key as last delivered, for the anti-entropy check.
    revisions: HashMap<String, i64>,
    /// The IPv6 halves of dual-stack leases (a dual-stack node only), by key.
    entries6: BTreeMap<String, Entry<Ipv6Net>>,
    /// [`Self::last_notice`] for the IPv6 halves.
    last_notice6: HashMap<String, String>,
}

/// The IPv6 half of a key for a dual-stack node (`cfg.enable_ipv6`): None on an IPv4-only
/// node, and for a key whose IPv4 half already failed to parse (its [`parse_entry`] says
/// why).
pub fn parse_entry6(
    cfg: &NetworkConfig,
    subnet: Result<Ipv4Net, String>,
    subnet6: Option<Ipv6Net>,
    value: &[u8],
) -> Option<Entry<Ipv6Net>> {
    if !cfg.enable_ipv6 {
        return None;
    }
    let lease = Lease {
        subnet: subnet.ok()?,
        subnet6,
        attrs: LeaseAttrs::parse(value).ok()?,
    };
    Some(match classify_lease6(cfg, None, &lease) {
        PeerVerdict::Peer(p) => Entry::Peer(p),
        PeerVerdict::Ignore(why) => Entry::Skip { why, reject: false },
        PeerVerdict::Reject(why) => Entry::Skip { why, reject: true },
    })
}

/// Parses and judges one key/value pair (everything but the checks against our own subnet).
pub fn parse_entry(cfg: &NetworkConfig, subnet: Result<Ipv4Net, String>, value: &[u8]) -> Entry {
    let lease = match subnet {
        Err(why) => return Entry::Skip { why, reject: true },
        Ok(subnet) => match LeaseAttrs::parse(value) {
            Ok(attrs) => Lease {
                subnet,
                subnet6: None,
                attrs,
            },
            Err(e) => {
                return Entry::Skip {
                    why: e.to_string(),
                    reject: true,
                };
            }
        },
    };
    match classify_lease(cfg, None, &lease) {
        PeerVerdict::Peer(p) => Entry::Peer(p),
        PeerVerdict::Ignore(why) => Entry::Skip { why, reject: false },
        PeerVerdict::Reject(why) => Entry::Skip { why, reject: true },
    }
}

impl PeerTable {
    /// Replaces everything (a fresh listing after start or compaction): `(key, mod
    /// revision, entry)`. Returns how many keys differed from what the table held (missing,
    /// extra, or at another revision): what a watch had missed, if anything.
    pub fn reset(&mut self, entries: impl IntoIterator<Item = (String, i64, Entry)>) -> usize {
        let old = std::mem::take(&mut self.revisions);
        self.entries.clear();
        self.entries6.clear();
        self.last_notice6.clear();
        for (key, rev, entry) in entries {
            self.revisions.insert(key.clone(), rev);
            self.entries.insert(key, entry);
        }
        self.last_notice.retain(|k, _| self.entries.contains_key(k));
        differing(&old, self.revisions.iter().map(|(k, r)| (k.as_str(), *r)))
    }

    pub fn put(&mut self, key: String, mod_revision: i64, entry: Entry) {
        self.revisions.insert(key.clone(), mod_revision);
        self.entries.insert(key, entry);
    }

    /// Sets (after [`Self::put`] or [`Self::reset`]) the IPv6 half of `key`, or removes it.
    pub fn set6(&mut self, key: &str, entry: Option<Entry<Ipv6Net>>) {
        match entry {
            Some(e) => {
                self.entries6.insert(key.to_owned(), e);
            }
            None => {
                self.entries6.remove(key);
                self.last_notice6.remove(key);
            }
        }
    }

    /// The IPv6 peers to program on `flannel-v6.<VNI>` (all through VXLAN), plus notices for
    /// verdicts that changed since last time.
    pub fn peers6(&mut self, own6: Option<Ipv6Net>) -> (Vec<Peer<Ipv6Net>>, Vec<Notice>) {
        judge_all(&self.entries6, &mut self.last_notice6, own6, Ok)
    }

    pub fn delete(&mut self, key: &str) {
        self.entries6.remove(key);
        self.last_notice6.remove(key);
        self.entries.remove(key);
        self.revisions.remove(key);
        self.last_notice.remove(key);
    }

    /// The key of a lease of another node (another public IP than `own_ip`) that publishes
    /// `mac` as its VtepMAC.
    pub fn holder_of_mac(&self, mac: MacAddr, own_ip: Ipv4Addr) -> Option<&str> {
        self.entries.iter().find_map(|(k, e)| match e {
            Entry::Peer(p) if p.vtep_mac == mac && p.public_ip != own_ip => Some(k.as_str()),
            _ => None,
        })
    }

    /// Every VtepMAC the leases publish.
    pub fn macs(&self) -> HashSet<MacAddr> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::Peer(p) => Some(p.vtep_mac),
                Entry::Skip { .. } => None,
            })
            .collect()
    }

    /// How many keys of a listing (`(key, mod revision)` of every key) differ from the
    /// table: 0 when the watch delivered everything up to the listing's revision.
    pub fn differences<'a>(&self, listed: impl IntoIterator<Item = (&'a str, i64)>) -> usize {
        differing(&self.revisions, listed)
    }

    /// The peers to program, each reached as `reach` decides, plus notices for verdicts that
    /// changed since last time.
    pub fn peers(&mut self, own: Option<Ipv4Net>, reach: &Reach) -> (Vec<Peer>, Vec<Notice>) {
        judge_all(&self.entries, &mut self.last_notice, own, |p| {
            reach.decide(p)
        })
    }
}

/// The peers of `entries` given this node's own subnet, each reached as `decide` says, and
/// the notices whose text changed since `last_notice` (which is updated).
fn judge_all<N: PodNet>(
    entries: &BTreeMap<String, Entry<N>>,
    last_notice: &mut HashMap<String, String>,
    own: Option<N>,
    decide: impl Fn(Peer<N>) -> Result<Peer<N>, String>,
) -> (Vec<Peer<N>>, Vec<Notice>) {
    let mut peers = Vec::with_capacity(entries.len());
    let mut notices = Vec::new();
    for (key, entry) in entries {
        let notice = match entry {
            Entry::Skip { why, reject: true } => Some(Notice::Rejected {
                key: key.clone(),
                why: why.clone(),
            }),
            Entry::Skip { why, reject: false } => Some(Notice::Ignored {
                key: key.clone(),
                why: why.clone(),
            }),
            Entry::Peer(p) => match own {
                Some(own) if own == p.subnet => Some(Notice::Ignored {
                    key: key.clone(),
                    why: format!("lease {} is this node's own subnet", key_tail(key)),
                }),
                Some(own) if own.contains_net(&p.subnet) || p.subnet.contains_net(&own) => {
                    Some(Notice::Rejected {
                        key: key.clone(),
                        why: format!(
                            "lease {}: subnet {} overlaps this node's subnet {own}; delete the stale lease",
                            key_tail(key),
                            p.subnet
                        ),
                    })
                }
                _ => match decide(*p) {
                    Ok(p) => {
                        peers.push(p);
                        None
                    }
                    Err(why) => Some(Notice::Rejected {
                        key: key.clone(),
                        why,
                    }),
                },
            },
        };
        match notice {
            None => {
                last_notice.remove(key);
            }
            Some(n) => {
                let text = match &n {
                    Notice::Rejected { why, .. } | Notice::Ignored { why, .. } => why,
                };
                if last_notice.get(key) != Some(text) {
                    last_notice.insert(key.clone(), text.clone());
                    notices.push(n);
                }
            }
        }
    }
    (peers, notices)
}

/// The subnet part of a full key (`…/subnets/10.244.1.0-24` → `10.244.1.0-24`).
fn key_tail(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, tail)| tail)
}

/// Keys missing from either side or at another revision.
fn differing<'a>(
    known: &HashMap<String, i64>,
    listed: impl IntoIterator<Item = (&'a str, i64)>,
) -> usize {
    let mut seen = 0usize;
    let mut diff = 0usize;
    for (key, rev) in listed {
        match known.get(key) {
            Some(r) if *r == rev => seen += 1,
            Some(_) => {
                seen += 1;
                diff += 1;
            }
            None => diff += 1,
        }
    }
    diff + (known.len() - seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetworkConfig {
        NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap()
    }

    fn lease_json(ip: &str, mac: &str) -> Vec<u8> {
        format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#).into_bytes()
    }

    fn key(s: &str) -> String {
        format!("/coreos.com/network/subnets/{s}")
    }

    #[test]
    fn one_bad_value_does_not_hide_the_others() {
        let mut t = PeerTable::default();
        t.reset([
            (
                key("10.244.1.0-24"),
                1,
                parse_entry(
                    &cfg(),
                    Ok("10.244.1.0/24".parse().unwrap()),
                    &lease_json("10.0.0.1", "02:00:00:00:00:01"),
                ),
            ),
            (
                key("10.244.2.0-24"),
                2,
                parse_entry(&cfg(), Ok("10.244.2.0/24".parse().unwrap()), b"{not json"),
            ),
            (
                key("junk"),
                3,
                parse_entry(&cfg(), Err("bad key".into()), b"{}"),
            ),
            (
                key("10.244.3.0-24"),
                4,
                parse_entry(
                    &cfg(),
                    Ok("10.244.3.0/24".parse().unwrap()),
                    &lease_json("10.0.0.3", "02:00:00:00:00:03"),
                ),
            ),
        ]);
        let (peers, notices) = t.peers(None, &Reach::vxlan());
        assert_eq!(peers.len(), 2);
        assert_eq!(notices.len(), 2);
        assert!(notices.iter().all(|n| matches!(n, Notice::Rejected { .. })));
        // the same verdicts are not reported twice
        let (_, again) = t.peers(None, &Reach::vxlan());
        assert!(again.is_empty());
    }

    #[test]
    fn listings_are_compared_by_key_and_revision() {
        let mut t = PeerTable::default();
        let e = || Entry::Skip {
            why: "x".into(),
            reject: true,
        };
        assert_eq!(t.reset([(key("a"), 5, e()), (key("b"), 6, e())]), 2);
        t.put(key("c"), 7, e());
        t.delete(&key("a"));
        let (b, c, d) = (key("b"), key("c"), key("d"));
        assert_eq!(t.differences([(b.as_str(), 6), (c.as_str(), 7)]), 0);
        // a missed put, a missed delete, a missed update: each counts once
        assert_eq!(
            t.differences([(b.as_str(), 6), (c.as_str(), 7), (d.as_str(), 8)]),
            1
        );
        assert_eq!(t.differences([(b.as_str(), 6)]), 1);
        assert_eq!(t.differences([(b.as_str(), 9), (c.as_str(), 7)]), 1);
        assert_eq!(t.differences([]), 2);
        assert_eq!(
            t.reset([(b.clone(), 9), (d.clone(), 8)].map(|(k, r)| (k, r, e()))),
            3
        );
        assert_eq!(t.differences([(b.as_str(), 9), (d.as_str(), 8)]), 0);
    }

    #[test]
    fn own_subnet_is_not_a_peer_and_deletes_remove() {
        let mut t = PeerTable::default();
        let own: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        t.put(
            key("10.244.1.0-24"),
            1,
            parse_entry(
                &cfg(),
                Ok(own),
                &lease_json("10.0.0.1", "02:00:00:00:00:01"),
            ),
        );
        t.put(
            key("10.244.2.0-24"),
            2,
            parse_entry(
                &cfg(),
                Ok("10.244.2.0/24".parse().unwrap()),
                &lease_json("10.0.0.2", "02:00:00:00:00:02"),
            ),
        );
        let (peers, _) = t.peers(Some(own), &Reach::vxlan());
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].subnet, "10.244.2.0/24".parse::<Ipv4Net>().unwrap());
        t.delete(&key("10.244.2.0-24"));
        assert!(t.peers(Some(own), &Reach::vxlan()).0.is_empty());
        assert_eq!(
            t.peers(None, &Reach::vxlan()).0.len(),
            1,
            "only our own lease is left"
        );
    }

    #[test]
    fn a_host_gw_peer_off_the_link_is_refused_once_and_taken_when_it_moves_onto_it() {
        use crate::peer::ReachMode;
        let cfg =
            NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
                .unwrap();
        let hostgw = |ip: &str| {
            format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
                .into_bytes()
        };
        let reach = Reach {
            mode: ReachMode::HostGw,
            iface: "eth0".into(),
            on_link: vec!["10.0.0.1/24".parse().unwrap()],
        };
        let sn = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let mut t = PeerTable::default();
        t.put(
            key("10.244.2.0-24"),
            1,
            parse_entry(&cfg, Ok(sn("10.244.2.0/24")), &hostgw("10.0.0.2")),
        );
        t.put(
            key("10.244.3.0-24"),
            2,
            parse_entry(&cfg, Ok(sn("10.244.3.0/24")), &hostgw("10.0.9.3")),
        );
        let (peers, notices) = t.peers(None, &reach);
        assert_eq!(peers.len(), 1);
        assert!(peers[0].direct);
        assert_eq!(peers[0].public_ip, "10.0.0.2".parse::<Ipv4Addr>().unwrap());
        match notices.as_slice() {
            [Notice::Rejected { key: k, why }] => {
                assert_eq!(k, &key("10.244.3.0-24"));
                assert!(
                    why.contains("PublicIP 10.0.9.3 is not on this node's link"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(t.peers(None, &reach).1.is_empty(), "said once");
        t.put(
            key("10.244.3.0-24"),
            3,
            parse_entry(&cfg, Ok(sn("10.244.3.0/24")), &hostgw("10.0.0.3")),
        );
        assert_eq!(t.peers(None, &reach).0.len(), 2);
    }

    fn dual_cfg() -> NetworkConfig {
        NetworkConfig::parse(
            br#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap()
    }

    /// The dual-stack value as flanneld writes it (flannel-compat.md's example).
    const FLANNEL_DUAL: &str = r#"{"PublicIP":"192.168.1.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}"#;

    fn dual(t: &mut PeerTable, cfg: &NetworkConfig, tail: &str, value: &[u8]) {
        let (v4, v6) = crate::subnet::parse_subnet_key_dual(tail).unwrap();
        t.put(key(tail), 1, parse_entry(cfg, Ok(v4), value));
        t.set6(&key(tail), parse_entry6(cfg, Ok(v4), v6, value));
    }

    #[test]
    fn a_flanneld_dual_stack_lease_is_a_peer_in_both_families() {
        let cfg = dual_cfg();
        let mut t = PeerTable::default();
        dual(
            &mut t,
            &cfg,
            "10.244.37.0-24&fc00:0:0:25::-64",
            FLANNEL_DUAL.as_bytes(),
        );
        let (v4, _) = t.peers(None, &Reach::vxlan());
        assert_eq!(v4.len(), 1);
        assert_eq!(v4[0].vtep_mac.to_string(), "aa:bb:cc:dd:ee:01");
        let (v6, notices) = t.peers6(Some("fc00:0:0:1::/64".parse().unwrap()));
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(
            v6,
            vec![Peer {
                subnet: "fc00:0:0:25::/64".parse().unwrap(),
                public_ip: "2001:db8::11".parse().unwrap(),
                vtep_mac: "aa:bb:cc:dd:ee:02".parse().unwrap(),
                direct: false,
            }]
        );
        // Our own IPv6 subnet: ignored in the v6 half; deleting the key removes both.
        let (v6, notices) = t.peers6(Some("fc00:0:0:25::/64".parse().unwrap()));
        assert!(v6.is_empty());
        assert!(
            matches!(&notices[..], [Notice::Ignored { .. }]),
            "{notices:?}"
        );
        t.delete(&key("10.244.37.0-24&fc00:0:0:25::-64"));
        assert!(t.peers6(None).0.is_empty());
        assert!(t.peers(None, &Reach::vxlan()).0.is_empty());
    }

    #[test]
    fn a_bad_ipv6_half_is_refused_alone_and_an_ipv4_only_node_stays_a_v4_peer() {
        let cfg = dual_cfg();
        let mut t = PeerTable::default();
        let cases: [(&str, String, &str); 6] = [
            (
                "10.244.2.0-24&fc00:0:0:2::-64",
                FLANNEL_DUAL.replace(r#""PublicIPv6":"2001:db8::11""#, r#""PublicIPv6":null"#),
                "PublicIPv6 is null",
            ),
            (
                "10.244.3.0-24&fc00:0:0:3::-64",
                FLANNEL_DUAL.replace("2001:db8::11", "fe80::1"),
                "link-local",
            ),
            (
                "10.244.4.0-24&fc00:0:0:4::-64",
                FLANNEL_DUAL.replace(
                    r#""VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02""#,
                    r#""VNI":2,"VtepMAC":"aa:bb:cc:dd:ee:02""#,
                ),
                "VNI mismatch",
            ),
            (
                "10.244.5.0-24&fd00:0:0:5::-64",
                FLANNEL_DUAL.to_string(),
                "outside IPv6Network",
            ),
            (
                "10.244.6.0-24&fc00:0:0:6::-80",
                FLANNEL_DUAL.to_string(),
                "IPv6SubnetLen",
            ),
            (
                "10.244.7.0-24&fc00:0:0:7::-64",
                FLANNEL_DUAL.replace(
                    r#","BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}"#,
                    "",
                ),
                "BackendV6Data",
            ),
        ];
        for (tail, value, _) in &cases {
            dual(&mut t, &cfg, tail, value.as_bytes());
        }
        // An IPv4-only lease of a node without IPv6.
        dual(
            &mut t,
            &cfg,
            "10.244.8.0-24",
            &lease_json("10.0.0.8", "02:00:00:00:00:08"),
        );
        let (v6, notices) = t.peers6(None);
        assert!(v6.is_empty(), "{v6:?}");
        for (tail, _, why) in &cases {
            assert!(
                notices.iter().any(|n| matches!(n, Notice::Rejected { key: k, why: w } if k == &key(tail) && w.contains(why))),
                "{tail}: {why} not in {notices:?}"
            );
        }
        assert!(
            notices
                .iter()
                .any(|n| matches!(n, Notice::Ignored { key: k, .. } if k == &key("10.244.8.0-24")))
        );
        // Every IPv4 half is still a peer (the MACs differ only by key here, so count).
        assert_eq!(t.peers(None, &Reach::vxlan()).0.len(), cases.len() + 1);
        // Notices are given once.
        assert!(t.peers6(None).1.is_empty());
        // An IPv4-only node ignores IPv6 halves entirely.
        assert_eq!(
            parse_entry6(
                &super::tests::cfg(),
                Ok("10.244.2.0/24".parse().unwrap()),
                Some("fc00:0:0:2::/64".parse().unwrap()),
                FLANNEL_DUAL.as_bytes()
            ),
            None
        );
    }
}
