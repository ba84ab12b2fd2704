//! The set of leases as the watch reports them, and the peers they turn into.
//!
//! Pure: events come in, peers and warnings come out. A key whose value cannot be parsed is
//! rejected for itself alone (flanneld tears down every route on one bad event, compat 1.8).

use std::collections::{BTreeMap, HashMap};

use ipnet::Ipv4Net;
use weft_core::config::NetworkConfig;
use weft_core::lease::{Lease, LeaseAttrs};
use weft_core::peer::{Peer, PeerVerdict, classify_lease};

/// One key of the subnets prefix after parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Lease(Lease),
    /// A key that is not a subnet key, or a value that is not a lease: why.
    Bad(String),
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
    /// Last verdict text per key, so each problem is logged once, not every reconcile.
    last_notice: HashMap<String, String>,
}

/// Parses one key/value pair into an [`Entry`].
pub fn parse_entry(subnet: Result<Ipv4Net, String>, value: &[u8]) -> Entry {
    match subnet {
        Err(why) => Entry::Bad(why),
        Ok(subnet) => match LeaseAttrs::parse(value) {
            Ok(attrs) => Entry::Lease(Lease { subnet, attrs }),
            Err(e) => Entry::Bad(e.to_string()),
        },
    }
}

impl PeerTable {
    /// Replaces everything (a fresh listing after start or compaction).
    pub fn reset(&mut self, entries: impl IntoIterator<Item = (String, Entry)>) {
        self.entries = entries.into_iter().collect();
        self.last_notice.retain(|k, _| self.entries.contains_key(k));
    }

    pub fn put(&mut self, key: String, entry: Entry) {
        self.entries.insert(key, entry);
    }

    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
        self.last_notice.remove(key);
    }

    /// The VXLAN peers to program, plus notices for verdicts that changed since last time.
    pub fn peers(&mut self, cfg: &NetworkConfig, own: Option<Ipv4Net>) -> (Vec<Peer>, Vec<Notice>) {
        let mut peers = Vec::new();
        let mut notices = Vec::new();
        for (key, entry) in &self.entries {
            let (notice, text) = match entry {
                Entry::Bad(why) => (
                    Some(Notice::Rejected {
                        key: key.clone(),
                        why: why.clone(),
                    }),
                    why.clone(),
                ),
                Entry::Lease(lease) => match classify_lease(cfg, own, lease) {
                    PeerVerdict::Peer(p) => {
                        peers.push(p);
                        (None, String::new())
                    }
                    PeerVerdict::Ignore(why) => (
                        Some(Notice::Ignored {
                            key: key.clone(),
                            why: why.clone(),
                        }),
                        why,
                    ),
                    PeerVerdict::Reject(why) => (
                        Some(Notice::Rejected {
                            key: key.clone(),
                            why: why.clone(),
                        }),
                        why,
                    ),
                },
            };
            let changed = self.last_notice.get(key) != Some(&text);
            if changed {
                self.last_notice.insert(key.clone(), text);
                if let Some(n) = notice {
                    notices.push(n);
                }
            }
        }
        (peers, notices)
    }
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
                parse_entry(
                    Ok("10.244.1.0/24".parse().unwrap()),
                    &lease_json("10.0.0.1", "02:00:00:00:00:01"),
                ),
            ),
            (
                key("10.244.2.0-24"),
                parse_entry(Ok("10.244.2.0/24".parse().unwrap()), b"{not json"),
            ),
            (key("junk"), parse_entry(Err("bad key".into()), b"{}")),
            (
                key("10.244.3.0-24"),
                parse_entry(
                    Ok("10.244.3.0/24".parse().unwrap()),
                    &lease_json("10.0.0.3", "02:00:00:00:00:03"),
                ),
            ),
        ]);
        let (peers, notices) = t.peers(&cfg(), None);
        assert_eq!(peers.len(), 2);
        assert_eq!(notices.len(), 2);
        assert!(notices.iter().all(|n| matches!(n, Notice::Rejected { .. })));
        // the same verdicts are not reported twice
        let (_, again) = t.peers(&cfg(), None);
        assert!(again.is_empty());
    }

    #[test]
    fn own_subnet_is_not_a_peer_and_deletes_remove() {
        let mut t = PeerTable::default();
        let own: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        t.put(
            key("10.244.1.0-24"),
            parse_entry(Ok(own), &lease_json("10.0.0.1", "02:00:00:00:00:01")),
        );
        t.put(
            key("10.244.2.0-24"),
            parse_entry(
                Ok("10.244.2.0/24".parse().unwrap()),
                &lease_json("10.0.0.2", "02:00:00:00:00:02"),
            ),
        );
        let (peers, _) = t.peers(&cfg(), Some(own));
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].subnet, "10.244.2.0/24".parse::<Ipv4Net>().unwrap());
        t.delete(&key("10.244.2.0-24"));
        assert!(t.peers(&cfg(), Some(own)).0.is_empty());
        assert_eq!(
            t.peers(&cfg(), None).0.len(),
            1,
            "only our own lease is left"
        );
    }
}
