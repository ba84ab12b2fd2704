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
use crate::lease::{Lease, LeaseAttrs};
use crate::mac::MacAddr;
use crate::peer::{Peer, PeerVerdict, Reach, classify_lease};
use crate::subnet::subnet_key;
use ipnet::Ipv4Net;

/// One key of the subnets prefix after judging it.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A VXLAN peer, unless it is (or overlaps) this node's own subnet.
    Peer(Peer),
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

    pub fn delete(&mut self, key: &str) {
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
        let mut peers = Vec::with_capacity(self.entries.len());
        let mut notices = Vec::new();
        for (key, entry) in &self.entries {
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
                        why: format!("lease {} is this node's own subnet", subnet_key(p.subnet)),
                    }),
                    Some(own) if own.contains(&p.subnet) || p.subnet.contains(&own) => {
                        Some(Notice::Rejected {
                            key: key.clone(),
                            why: format!(
                                "lease {}: subnet {} overlaps this node's subnet {own}; delete the stale lease",
                                subnet_key(p.subnet),
                                p.subnet
                            ),
                        })
                    }
                    _ => match reach.decide(*p) {
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
                    self.last_notice.remove(key);
                }
                Some(n) => {
                    let text = match &n {
                        Notice::Rejected { why, .. } | Notice::Ignored { why, .. } => why,
                    };
                    if self.last_notice.get(key) != Some(text) {
                        self.last_notice.insert(key.clone(), text.clone());
                        notices.push(n);
                    }
                }
            }
        }
        (peers, notices)
    }
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
}
