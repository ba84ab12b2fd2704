//! Which VTEP MAC a node may reuse: the records of `<state-dir>/flannel.<VNI>.mac`.
//!
//! A persisted MAC keeps peers' neighbour and FDB entries right when the device is re-created
//! (flannel #533). But a state dir is not always one node's: several weftd on one host (one
//! per network namespace) share the default `/var/lib/weft`, and nodes launched from an image
//! baked after weft ran once all start with the same file. A MAC read back blindly would then
//! be published by several nodes, and every peer's FDB keeps one entry for it: traffic to all
//! but one of them goes to the wrong host. So each MAC is stored with the identity of the node
//! that made it ([`NodeIdentity`]) and reused only by that node; any other node makes its own
//! and adds its line. The file holds one line per identity:
//!
//! ```text
//! 02:5e:10:aa:bb:01 public_ip=10.0.1.7 vni=1 machine_id=8f3c... host_uuid=ec2a... netns=host
//! ```
//!
//! The format of older weft versions, a bare MAC, is still read: it is a legacy record without
//! an identity, adopted once by the first node that finds it (that is how an upgraded node keeps
//! its MAC) and then rewritten with that node's identity. A MAC that is zero, multicast or does
//! not parse is never used: the node makes a fresh one (no crash loop on a damaged file).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::mac::MacAddr;

/// At most this many identities are remembered (the newest win): a host whose public IP
/// changes over the years does not grow the file without bound.
pub const MAX_RECORDS: usize = 64;

/// What tells one node from another, for the purpose of owning a VTEP MAC.
///
/// - `public_ip` and `vni`: a lease (and so the published VtepMAC) belongs to one public IP
///   and one device; nodes cloned from one image get different IPs, and so do the namespaced
///   nodes of one host.
/// - `machine_id` (`/etc/machine-id`) and `host_uuid` (the DMI product UUID, per VM instance
///   and stable across reboots): another machine that happens to get the same IP (a replaced
///   instance, another VPC) is not this node. An image baked with a machine id still gets a
///   new product UUID per instance.
/// - `netns`: the network namespace weftd runs in, as a stable name: `host` for the host's
///   namespace, `name:<n>` for a namespace named under /run/netns (as `ip netns` names them),
///   else `inode:<n>` (only stable while the namespace lives, which is as long as its device).
///   Several weftd on one host share machine id and UUID but never the namespace.
///
/// None of these changes on a reboot (the boot id and interface indexes do, so they are not
/// used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub public_ip: Ipv4Addr,
    pub vni: u32,
    pub machine_id: String,
    pub host_uuid: String,
    pub netns: String,
}

impl NodeIdentity {
    /// The identity with every text field cleaned to one token (no spaces or `=`), as stored.
    pub fn normalized(&self) -> NodeIdentity {
        NodeIdentity {
            public_ip: self.public_ip,
            vni: self.vni,
            machine_id: token(&self.machine_id),
            host_uuid: token(&self.host_uuid),
            netns: token(&self.netns),
        }
    }

    fn render(&self) -> String {
        let n = self.normalized();
        format!(
            "public_ip={} vni={} machine_id={} host_uuid={} netns={}",
            n.public_ip, n.vni, n.machine_id, n.host_uuid, n.netns
        )
    }
}

/// A text as one whitespace-free token; empty becomes `-`.
fn token(text: &str) -> String {
    let t: String = text
        .trim()
        .chars()
        .take(256)
        .map(|c| {
            if c.is_whitespace() || c == '=' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if t.is_empty() { "-".into() } else { t }
}

/// True for a MAC that may be a VTEP MAC: not zero and not a group (multicast) address.
pub fn usable(mac: MacAddr) -> bool {
    !mac.is_zero() && !mac.is_multicast()
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacRecord {
    pub mac: MacAddr,
    /// `None` for the old format (a bare MAC).
    pub identity: Option<NodeIdentity>,
}

/// The parsed file, plus the lines that could not be used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacFile {
    pub records: Vec<MacRecord>,
    /// One message per unusable line (line number, what is wrong).
    pub problems: Vec<String>,
}

/// Why the node makes a fresh MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fresh {
    /// No file, or nothing in it.
    NoRecord,
    /// Only other nodes' MACs (a shared or copied state dir).
    OtherNodes,
    /// The node's own line, or the only line, holds a MAC that must not be used.
    Invalid(String),
}

impl Fresh {
    /// The `reason` label of `weft_vtep_mac_replaced`, if it counts as a replacement.
    pub fn metric_reason(&self) -> Option<&'static str> {
        match self {
            Fresh::NoRecord => None,
            Fresh::OtherNodes => Some("other_node"),
            Fresh::Invalid(_) => Some("invalid"),
        }
    }
}

/// What the node does with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacChoice {
    /// Its own MAC, made by this very node.
    Own(MacAddr),
    /// The old format's MAC, adopted (an upgrade): a conflict check against the leases in
    /// etcd still follows, as for any MAC.
    Legacy(MacAddr),
    /// A new MAC, and why.
    Fresh(Fresh),
}

impl MacFile {
    /// Parses the file. Never fails: lines that cannot be used are reported in `problems`.
    pub fn parse(text: &str) -> MacFile {
        let mut file = MacFile::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or_default();
            let mac = match first.parse::<MacAddr>() {
                Ok(m) if usable(m) => m,
                Ok(m) => {
                    file.problems.push(format!(
                        "line {}: {m} is {} and cannot be a VTEP MAC",
                        i + 1,
                        if m.is_zero() {
                            "the zero address"
                        } else {
                            "a multicast address"
                        }
                    ));
                    continue;
                }
                Err(e) => {
                    file.problems.push(format!("line {}: {e}", i + 1));
                    continue;
                }
            };
            let fields: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
            if fields.is_empty() {
                file.records.push(MacRecord {
                    mac,
                    identity: None,
                });
                continue;
            }
            let get = |k: &str| {
                fields
                    .iter()
                    .rev()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| *v)
            };
            let identity = match (
                get("public_ip").and_then(|v| v.parse::<Ipv4Addr>().ok()),
                get("vni").and_then(|v| v.parse::<u32>().ok()),
            ) {
                (Some(public_ip), Some(vni)) => NodeIdentity {
                    public_ip,
                    vni,
                    machine_id: get("machine_id").unwrap_or("-").to_string(),
                    host_uuid: get("host_uuid").unwrap_or("-").to_string(),
                    netns: get("netns").unwrap_or("-").to_string(),
                },
                _ => {
                    file.problems.push(format!(
                        "line {}: no valid public_ip= and vni= after the MAC",
                        i + 1
                    ));
                    continue;
                }
            };
            file.records.push(MacRecord {
                mac,
                identity: Some(identity),
            });
        }
        file
    }

    /// Which MAC the node with identity `me` uses.
    pub fn choose(&self, me: &NodeIdentity) -> MacChoice {
        let me = me.normalized();
        if let Some(r) = self
            .records
            .iter()
            .rev()
            .find(|r| r.identity.as_ref() == Some(&me))
        {
            return MacChoice::Own(r.mac);
        }
        let has_others = self.records.iter().any(|r| r.identity.is_some());
        if !has_others && let Some(r) = self.records.iter().rev().find(|r| r.identity.is_none()) {
            return MacChoice::Legacy(r.mac);
        }
        if has_others {
            MacChoice::Fresh(Fresh::OtherNodes)
        } else if !self.problems.is_empty() {
            MacChoice::Fresh(Fresh::Invalid(self.problems.join("; ")))
        } else {
            MacChoice::Fresh(Fresh::NoRecord)
        }
    }

    /// The MAC recorded for `me`, if any.
    pub fn own(&self, me: &NodeIdentity) -> Option<MacAddr> {
        match self.choose(me) {
            MacChoice::Own(m) => Some(m),
            _ => None,
        }
    }

    /// Records `mac` as `me`'s: replaces `me`'s line and the legacy line (now adopted or
    /// superseded), keeps the other nodes' lines, and at most [`MAX_RECORDS`] lines.
    pub fn remember(&mut self, me: &NodeIdentity, mac: MacAddr) {
        let me = me.normalized();
        self.records
            .retain(|r| r.identity.is_some() && r.identity.as_ref() != Some(&me));
        self.records.push(MacRecord {
            mac,
            identity: Some(me),
        });
        let extra = self.records.len().saturating_sub(MAX_RECORDS);
        self.records.drain(..extra);
        self.problems.clear();
    }

    /// The file's text.
    pub fn render(&self, device: &str) -> String {
        let mut out = format!(
            "# weftd: VTEP MACs of {device}, one line per node (public IP, VNI, machine id, host UUID, network namespace).\n\
             # A MAC is reused only by the node whose identity matches; any other node sharing this directory makes its own.\n"
        );
        for r in &self.records {
            match &r.identity {
                Some(id) => {
                    let _ = writeln!(out, "{} {}", r.mac, id.render());
                }
                None => {
                    let _ = writeln!(out, "{}", r.mac);
                }
            }
        }
        out
    }
}

/// A random VTEP MAC (unicast, locally administered) not in `taken`.
pub fn fresh_mac(rng: &mut impl rand::Rng, taken: &HashSet<MacAddr>) -> MacAddr {
    loop {
        let mac = MacAddr::random_local(rng);
        if !taken.contains(&mac) && usable(mac) {
            return mac;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn id(ip: &str, netns: &str) -> NodeIdentity {
        NodeIdentity {
            public_ip: ip.parse().unwrap(),
            vni: 1,
            machine_id: "8f3c0e".into(),
            host_uuid: "ec2a-11".into(),
            netns: netns.into(),
        }
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn old_format_is_adopted_once_then_owned() {
        let mut f = MacFile::parse("02:aa:bb:cc:dd:01\n");
        let a = id("10.0.0.1", "host");
        assert_eq!(f.choose(&a), MacChoice::Legacy(mac("02:aa:bb:cc:dd:01")));
        f.remember(&a, mac("02:aa:bb:cc:dd:01"));
        let text = f.render("flannel.1");
        let back = MacFile::parse(&text);
        assert_eq!(back.choose(&a), MacChoice::Own(mac("02:aa:bb:cc:dd:01")));
        // Another node reading the same (shared or copied) file gets nothing of a's.
        assert_eq!(
            back.choose(&id("10.0.0.2", "host")),
            MacChoice::Fresh(Fresh::OtherNodes)
        );
    }

    #[test]
    fn each_identity_keeps_its_own_line() {
        let mut f = MacFile::default();
        let nodes = [
            id("10.0.0.1", "name:n1"),
            id("10.0.0.2", "name:n2"),
            id("10.0.0.3", "name:n3"),
        ];
        let macs = [
            mac("02:00:00:00:00:01"),
            mac("02:00:00:00:00:02"),
            mac("02:00:00:00:00:03"),
        ];
        for (n, m) in nodes.iter().zip(macs) {
            assert!(matches!(f.choose(n), MacChoice::Fresh(_)));
            f.remember(n, m);
            f = MacFile::parse(&f.render("flannel.1"));
        }
        for (n, m) in nodes.iter().zip(macs) {
            assert_eq!(f.choose(n), MacChoice::Own(m));
        }
        // A restart that picks a new MAC (a conflict) replaces only its own line.
        f.remember(&nodes[1], mac("02:00:00:00:00:22"));
        assert_eq!(f.records.len(), 3);
        assert_eq!(
            f.choose(&nodes[1]),
            MacChoice::Own(mac("02:00:00:00:00:22"))
        );
        assert_eq!(f.choose(&nodes[0]), MacChoice::Own(macs[0]));
    }

    #[test]
    fn any_identity_field_that_differs_means_another_node() {
        let mut f = MacFile::default();
        let me = id("10.0.0.1", "host");
        f.remember(&me, mac("02:00:00:00:00:01"));
        let f = MacFile::parse(&f.render("flannel.1"));
        let mut others = vec![id("10.0.0.9", "host"), id("10.0.0.1", "name:x")];
        let mut o = me.clone();
        o.vni = 2;
        others.push(o);
        let mut o = me.clone();
        o.machine_id = "other".into();
        others.push(o);
        let mut o = me.clone();
        o.host_uuid = "cloned-ami-instance-2".into();
        others.push(o);
        for other in others {
            assert_eq!(
                f.choose(&other),
                MacChoice::Fresh(Fresh::OtherNodes),
                "{other:?}"
            );
        }
        assert_eq!(f.choose(&me), MacChoice::Own(mac("02:00:00:00:00:01")));
    }

    #[test]
    fn zero_multicast_and_garbage_are_replaced_not_fatal() {
        let me = id("10.0.0.1", "host");
        for text in [
            "00:00:00:00:00:00\n",
            "01:00:5e:00:00:01\n",
            "ff:ff:ff:ff:ff:ff\n",
            "garbage\n",
            "\u{0}\u{1}\u{2}",
            "03:00:00:00:00:01 public_ip=10.0.0.1 vni=1 machine_id=8f3c0e host_uuid=ec2a-11 netns=host\n",
        ] {
            let f = MacFile::parse(text);
            match f.choose(&me) {
                MacChoice::Fresh(Fresh::Invalid(why)) => assert!(why.contains("line 1"), "{why}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // Empty or comment-only: no record, not a problem.
        assert_eq!(
            MacFile::parse("").choose(&me),
            MacChoice::Fresh(Fresh::NoRecord)
        );
        assert_eq!(
            MacFile::parse("# x\n\n").choose(&me),
            MacChoice::Fresh(Fresh::NoRecord)
        );
        // A line with a MAC but no usable identity is neither legacy nor ours.
        let f = MacFile::parse("02:00:00:00:00:01 public_ip=nope vni=1\n");
        assert!(matches!(f.choose(&me), MacChoice::Fresh(Fresh::Invalid(_))));
    }

    #[test]
    fn odd_identity_text_is_stored_as_one_token() {
        let mut me = id("10.0.0.1", "name:my ns=1");
        me.machine_id = "".into();
        let mut f = MacFile::default();
        f.remember(&me, mac("02:00:00:00:00:01"));
        let text = f.render("flannel.1");
        assert!(
            text.contains("machine_id=- host_uuid=ec2a-11 netns=name:my_ns_1\n"),
            "{text}"
        );
        assert_eq!(
            MacFile::parse(&text).choose(&me),
            MacChoice::Own(mac("02:00:00:00:00:01"))
        );
    }

    #[test]
    fn the_file_stays_bounded() {
        let mut f = MacFile::default();
        for i in 0..200u32 {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            f.remember(&id(&ip.to_string(), "host"), mac("02:00:00:00:00:01"));
        }
        assert_eq!(f.records.len(), MAX_RECORDS);
        let newest = id("10.0.0.199", "host");
        assert_eq!(f.choose(&newest), MacChoice::Own(mac("02:00:00:00:00:01")));
    }

    #[test]
    fn fresh_macs_avoid_taken_ones() {
        let mut rng = StdRng::seed_from_u64(3);
        let first = fresh_mac(&mut StdRng::seed_from_u64(3), &HashSet::new());
        let taken: HashSet<MacAddr> = [first].into_iter().collect();
        let m = fresh_mac(&mut rng, &taken);
        assert_ne!(m, first);
        assert!(usable(m) && m.is_unicast_local());
    }
}
