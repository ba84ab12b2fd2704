//! `/run/flannel/subnet.env`: what the CNI plugin reads to configure pods.

use std::fmt::Write as _;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::clip::clip;
use crate::family::PodNet;
use crate::subnet::{first_host, first_host_v6};

const FIX: &str = "weftd (or flanneld) writes this file once the node holds a lease: correct or remove the line, or delete the file and restart weftd";

const FIX_MISSING: &str = "weftd (or flanneld) writes all of them once the node holds a lease: check that weftd runs on this node and is ready, or delete the file and restart weftd";

/// The contents of subnet.env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`: the cluster IPv4 network.
    pub network: Option<Ipv4Net>,
    /// The node's IPv4 lease subnet, as a network address (`10.244.1.0/24`); written as the
    /// first host (`FLANNEL_SUBNET=10.244.1.1/24`).
    pub subnet: Option<Ipv4Net>,
    /// `FLANNEL_IPV6_NETWORK`.
    pub ipv6_network: Option<Ipv6Net>,
    /// The node's IPv6 lease subnet (network address); written as the first host.
    pub ipv6_subnet: Option<Ipv6Net>,
    /// `FLANNEL_MTU`: the MTU pods should use (VXLAN: underlay MTU - 50).
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`: whether the daemon masquerades pod traffic (the CNI plugin then tells
    /// the bridge plugin not to).
    pub ipmasq: bool,
}

/// A subnet.env that cannot be used. Messages give the line number and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetEnvError {
    /// A line is not `KEY=VALUE`.
    #[error("subnet.env line {line}: {text:?} is not KEY=VALUE; {FIX}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The line (cut if long).
        text: String,
    },
    /// A known key has an unusable value.
    #[error("subnet.env line {line}: {key}={value:?}: {reason}; {FIX}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// The key.
        key: &'static str,
        /// The value as written (without quotes, cut if long).
        value: String,
        /// What is wrong, including the expected form.
        reason: String,
    },
    /// Required keys are absent.
    #[error("subnet.env is missing {}; {FIX_MISSING}", keys.join(", "))]
    Missing {
        /// The missing keys (a `A or B` entry when either would do).
        keys: Vec<&'static str>,
    },
    /// weftd withdrew the node's subnet (`WEFT_SUBNET_LOST`): no pod may get an address until
    /// weftd holds and has programmed a new lease and rewrites the file.
    #[error(
        "this node has no subnet to give pods: {detail}. weftd rewrites subnet.env as soon as it holds and has programmed a new lease; until then no pod may get an address (it could belong to another node). Retry later, and check the weftd log of this node"
    )]
    Lost {
        /// What weftd wrote: the lost subnet and why.
        detail: String,
    },
}

/// The key weftd writes into subnet.env instead of `FLANNEL_SUBNET` when the node has lost its
/// subnet (taken by another node, expired, deleted). Readers that know it refuse the file with
/// [`SubnetEnvError::Lost`]; flannel's own plugin ignores unknown keys and refuses the file
/// for its missing `FLANNEL_SUBNET`. Either way no pod gets an address of the lost subnet.
pub const LOST_KEY: &str = "WEFT_SUBNET_LOST";

/// What [`LOST_KEY`] says, if the text has it (whatever else is in it).
pub fn lost_detail(text: &str) -> Option<String> {
    entries(text)
        .filter_map(Result::ok)
        .filter(|e| e.key == LOST_KEY)
        .last()
        .map(|e| lost_text(&e.value))
}

/// weftd's own words, kept whole up to 512 characters (what a hand-edited file may hold is
/// cut there), control characters as spaces.
fn lost_text(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(512)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if value.chars().count() > 512 {
        out.push('…');
    }
    out
}

/// The subnet.env of a node that has lost `lost`: the network, MTU and masquerade setting as
/// usual (so the file stays recognisable), no `FLANNEL_SUBNET`, and [`LOST_KEY`] with `why`.
pub fn render_lost(
    network: Option<Ipv4Net>,
    mtu: u32,
    ipmasq: bool,
    lost: Ipv4Net,
    why: &str,
) -> String {
    let mut out = SubnetEnv {
        network,
        subnet: None,
        ipv6_network: None,
        ipv6_subnet: None,
        mtu,
        ipmasq,
    }
    .render();
    let why: String = why
        .chars()
        .map(|c| if c == '"' || c.is_control() { '\'' } else { c })
        .collect();
    let _ = writeln!(out, "{LOST_KEY}=\"subnet {lost} {why}\"");
    out
}

impl SubnetEnv {
    /// The exact text flanneld writes: `KEY=VALUE\n` lines in flannel's order, only for the
    /// values present; the subnets are written as their first host address.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        if let Some(network) = self.network {
            let _ = writeln!(out, "FLANNEL_NETWORK={network}");
        }
        if let Some(subnet) = self.subnet {
            let _ = writeln!(
                out,
                "FLANNEL_SUBNET={}/{}",
                first_host(subnet),
                subnet.prefix_len()
            );
        }
        if let Some(network) = self.ipv6_network {
            let _ = writeln!(out, "FLANNEL_IPV6_NETWORK={network}");
        }
        if let Some(subnet) = self.ipv6_subnet {
            let _ = writeln!(
                out,
                "FLANNEL_IPV6_SUBNET={}/{}",
                first_host_v6(subnet),
                subnet.prefix_len()
            );
        }
        let _ = writeln!(out, "FLANNEL_MTU={}", self.mtu);
        let _ = writeln!(out, "FLANNEL_IPMASQ={}", self.ipmasq);
        out
    }

    /// Reads a subnet.env. Accepts what flanneld writes and what godotenv tolerates (blank
    /// lines, `#` comments, `export ` prefixes, quoted values, `KEY: value`); unknown keys are
    /// ignored and a repeated key takes its last value. Subnets have their host bits masked
    /// off. Requires, like the CNI plugin, a network, a subnet, `FLANNEL_MTU` and
    /// `FLANNEL_IPMASQ`.
    pub fn parse(text: &str) -> Result<SubnetEnv, SubnetEnvError> {
        let mut env = SubnetEnv {
            network: None,
            subnet: None,
            ipv6_network: None,
            ipv6_subnet: None,
            mtu: 0,
            ipmasq: false,
        };
        let mut seen_mtu = false;
        let mut seen_ipmasq = false;
        let mut lost: Option<String> = None;
        for entry in entries(text) {
            let Entry { line, key, value } = entry?;
            match key {
                LOST_KEY => lost = Some(lost_text(&value)),
                "FLANNEL_NETWORK" => {
                    env.network = Some(single_cidr(
                        line,
                        "FLANNEL_NETWORK",
                        &value,
                        "10.244.0.0/16",
                    )?)
                }
                "FLANNEL_SUBNET" => {
                    env.subnet = Some(single_cidr(
                        line,
                        "FLANNEL_SUBNET",
                        &value,
                        "10.244.1.1/24",
                    )?)
                }
                "FLANNEL_IPV6_NETWORK" => {
                    env.ipv6_network = Some(single_cidr(
                        line,
                        "FLANNEL_IPV6_NETWORK",
                        &value,
                        "fc00::/48",
                    )?)
                }
                "FLANNEL_IPV6_SUBNET" => {
                    env.ipv6_subnet = Some(single_cidr(
                        line,
                        "FLANNEL_IPV6_SUBNET",
                        &value,
                        "fc00:0:0:1::1/64",
                    )?)
                }
                "FLANNEL_MTU" => {
                    env.mtu = value.parse::<u32>().map_err(|_| SubnetEnvError::Invalid {
                        line,
                        key: "FLANNEL_MTU",
                        value: clip(&value),
                        reason: "expected a whole number such as 1450".into(),
                    })?;
                    seen_mtu = true;
                }
                "FLANNEL_IPMASQ" => {
                    env.ipmasq = parse_go_bool(&value).ok_or_else(|| SubnetEnvError::Invalid {
                        line,
                        key: "FLANNEL_IPMASQ",
                        value: clip(&value),
                        reason: "expected true or false".into(),
                    })?;
                    seen_ipmasq = true;
                }
                _ => {}
            }
        }

        if let Some(detail) = lost {
            return Err(SubnetEnvError::Lost { detail });
        }
        let mut missing = Vec::new();
        if env.network.is_none() && env.ipv6_network.is_none() {
            missing.push("FLANNEL_NETWORK (or FLANNEL_IPV6_NETWORK)");
        }
        if env.subnet.is_none() && env.ipv6_subnet.is_none() {
            missing.push("FLANNEL_SUBNET (or FLANNEL_IPV6_SUBNET)");
        }
        if !seen_mtu {
            missing.push("FLANNEL_MTU");
        }
        if !seen_ipmasq {
            missing.push("FLANNEL_IPMASQ");
        }
        if missing.is_empty() {
            Ok(env)
        } else {
            Err(SubnetEnvError::Missing { keys: missing })
        }
    }
}

/// The node's previous IPv4 subnet from a subnet.env text, masked to its network address
/// (flannel's `ReadCIDRsFromSubnetFile`): `None` unless `FLANNEL_SUBNET` holds exactly one
/// valid IPv4 CIDR. Other lines, even broken ones, do not matter.
pub fn previous_subnet(text: &str) -> Option<Ipv4Net> {
    previous_value(text, "FLANNEL_SUBNET")
}

/// The previous `FLANNEL_NETWORK`, with the same tolerance as [`previous_subnet`]; used to
/// remove masquerade rules computed from an old network.
pub fn previous_network(text: &str) -> Option<Ipv4Net> {
    previous_value(text, "FLANNEL_NETWORK")
}

/// The node's previous IPv6 subnet (`FLANNEL_IPV6_SUBNET`, masked), with the same tolerance
/// as [`previous_subnet`]: for a dual-stack node taking its IPv6 subnet back.
pub fn previous_subnet6(text: &str) -> Option<Ipv6Net> {
    previous_value(text, "FLANNEL_IPV6_SUBNET")
}

/// The previous `FLANNEL_IPV6_NETWORK`, as [`previous_network`].
pub fn previous_network6(text: &str) -> Option<Ipv6Net> {
    previous_value(text, "FLANNEL_IPV6_NETWORK")
}

fn previous_value<N: PodNet>(text: &str, wanted: &str) -> Option<N> {
    let value = entries(text)
        .filter_map(Result::ok)
        .filter(|entry| entry.key == wanted)
        .last()?
        .value;
    let mut cidrs = value.split(',');
    let first = cidrs.next()?.trim();
    if cidrs.next().is_some() {
        return None;
    }
    first.parse::<N>().ok().map(|net| net.trunc())
}

struct Entry<'a> {
    line: usize,
    key: &'a str,
    value: String,
}

/// Splits the text into `KEY=VALUE` entries (godotenv-style), skipping blanks and comments.
fn entries(text: &str) -> impl Iterator<Item = Result<Entry<'_>, SubnetEnvError>> {
    text.lines().enumerate().filter_map(|(index, raw)| {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        let body = trimmed
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(trimmed, str::trim_start);
        let split = body.split_once('=').or_else(|| body.split_once(':'));
        let Some((key, value)) = split else {
            return Some(Err(SubnetEnvError::Syntax {
                line,
                text: clip(raw),
            }));
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Some(Err(SubnetEnvError::Syntax {
                line,
                text: clip(raw),
            }));
        }
        Some(Ok(Entry {
            line,
            key,
            value: unquote(value.trim()),
        }))
    })
}

/// Removes godotenv-style quotes; unquoted values lose a trailing ` # comment`.
fn unquote(value: &str) -> String {
    if let Some(inner) = value
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
    {
        return inner.to_owned();
    }
    if let Some(inner) = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        }
        return out;
    }
    let cut = value
        .char_indices()
        .find(|&(i, c)| {
            c == '#'
                && value[..i]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_whitespace)
        })
        .map_or(value.len(), |(i, _)| i);
    value[..cut].trim_end().to_owned()
}

/// Go's `strconv.ParseBool` values.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// One CIDR, host bits masked off (`N` is Ipv4Net or Ipv6Net).
fn single_cidr<N: Cidr>(
    line: usize,
    key: &'static str,
    value: &str,
    example: &str,
) -> Result<N, SubnetEnvError> {
    let invalid = |reason: String| SubnetEnvError::Invalid {
        line,
        key,
        value: clip(value),
        reason,
    };
    if value.contains(',') {
        return Err(invalid(format!(
            "weft expects exactly one {} CIDR, such as {example}",
            N::FAMILY
        )));
    }
    N::parse_masked(value)
        .ok_or_else(|| invalid(format!("expected an {} CIDR such as {example}", N::FAMILY)))
}

trait Cidr: Sized {
    const FAMILY: &'static str;
    fn parse_masked(text: &str) -> Option<Self>;
}

impl Cidr for Ipv4Net {
    const FAMILY: &'static str = "IPv4";
    fn parse_masked(text: &str) -> Option<Self> {
        text.parse::<Ipv4Net>().ok().map(|net| net.trunc())
    }
}

impl Cidr for Ipv6Net {
    const FAMILY: &'static str = "IPv6";
    fn parse_masked(text: &str) -> Option<Self> {
        text.parse::<Ipv6Net>().ok().map(|net| net.trunc())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SubnetEnv {
        SubnetEnv {
            network: Some("10.244.0.0/16".parse().unwrap()),
            subnet: Some("10.244.1.0/24".parse().unwrap()),
            ipv6_network: None,
            ipv6_subnet: None,
            mtu: 1450,
            ipmasq: true,
        }
    }

    #[test]
    fn renders_flannel_text() {
        assert_eq!(
            sample().render(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
    }

    #[test]
    fn renders_dual_stack_in_flannel_order() {
        let env = SubnetEnv {
            ipv6_network: Some("fc00::/48".parse().unwrap()),
            ipv6_subnet: Some("fc00:0:0:1::/64".parse().unwrap()),
            ipmasq: false,
            ..sample()
        };
        assert_eq!(
            env.render(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(SubnetEnv::parse(&env.render()).unwrap(), env);
    }

    #[test]
    fn parse_round_trip_masks_subnet() {
        let env = SubnetEnv::parse(&sample().render()).unwrap();
        assert_eq!(env, sample());
        assert_eq!(
            env.subnet.map(|s| s.to_string()).as_deref(),
            Some("10.244.1.0/24")
        );
    }

    #[test]
    fn parse_tolerates_godotenv_syntax() {
        let text = "\n# written by hand\r\nexport FLANNEL_NETWORK=\"10.244.0.0/16\"\r\n  FLANNEL_SUBNET = '10.244.1.1/24'\nFLANNEL_MTU=1450 # vxlan\nFLANNEL_IPMASQ: True\nOTHER=ignored\n";
        assert_eq!(SubnetEnv::parse(text).unwrap(), sample());
    }

    #[test]
    fn last_value_wins() {
        let text = format!("{}FLANNEL_MTU=1400\n", sample().render());
        assert_eq!(SubnetEnv::parse(&text).unwrap().mtu, 1400);
    }

    #[test]
    fn parse_errors_name_line_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1\n",
                "line 2: FLANNEL_SUBNET=\"10.244.1.1\": expected an IPv4 CIDR such as 10.244.1.1/24",
            ),
            (
                "FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\n",
                "line 1: FLANNEL_NETWORK=",
            ),
            ("FLANNEL_SUBNET=fc00::1/64\n", "line 1: FLANNEL_SUBNET"),
            ("FLANNEL_IPV6_SUBNET=10.0.0.1/24\n", "expected an IPv6 CIDR"),
            (
                "\n\nFLANNEL_MTU=big\n",
                "line 3: FLANNEL_MTU=\"big\": expected a whole number",
            ),
            (
                "FLANNEL_IPMASQ=yes\n",
                "line 1: FLANNEL_IPMASQ=\"yes\": expected true or false",
            ),
            (
                "FLANNEL_NETWORK\n",
                "line 1: \"FLANNEL_NETWORK\" is not KEY=VALUE",
            ),
            ("BAD KEY=1\n", "is not KEY=VALUE"),
        ];
        for (text, needle) in cases {
            let err = SubnetEnv::parse(text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(needle), "{msg}\n  missing: {needle}");
            assert!(msg.contains("restart weftd"), "{msg}");
        }
    }

    #[test]
    fn missing_keys_are_listed() {
        let err = SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\n").unwrap_err();
        assert_eq!(
            err,
            SubnetEnvError::Missing {
                keys: vec![
                    "FLANNEL_SUBNET (or FLANNEL_IPV6_SUBNET)",
                    "FLANNEL_MTU",
                    "FLANNEL_IPMASQ"
                ]
            }
        );
        assert!(err.to_string().starts_with(
            "subnet.env is missing FLANNEL_SUBNET (or FLANNEL_IPV6_SUBNET), FLANNEL_MTU, FLANNEL_IPMASQ;"
        ));
        let err = SubnetEnv::parse("").unwrap_err();
        assert!(
            err.to_string()
                .contains("FLANNEL_NETWORK (or FLANNEL_IPV6_NETWORK)")
        );
    }

    #[test]
    fn a_lost_subnet_is_refused_with_its_reason() {
        let net: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let lost: Ipv4Net = "10.244.7.0/24".parse().unwrap();
        let text = render_lost(
            Some(net),
            1450,
            true,
            lost,
            "was taken by another node (\"10.0.0.9\")",
        );
        assert!(!text.contains("FLANNEL_SUBNET"), "{text}");
        assert!(text.contains("FLANNEL_NETWORK=10.244.0.0/16\n"), "{text}");
        let err = SubnetEnv::parse(&text).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("subnet 10.244.7.0/24 was taken by another node ('10.0.0.9')"),
            "{msg}"
        );
        assert!(msg.contains("Retry later"), "{msg}");
        assert!(
            lost_detail(&text)
                .unwrap()
                .starts_with("subnet 10.244.7.0/24 was taken")
        );
        assert_eq!(lost_detail("FLANNEL_MTU=1450\n"), None);
        // A restarted weftd finds no previous subnet in it to claim.
        assert_eq!(previous_subnet(&text), None);
        // Even a FLANNEL_SUBNET beside it does not make the file usable.
        let text = format!("{text}FLANNEL_SUBNET=10.244.7.1/24\n");
        assert!(matches!(
            SubnetEnv::parse(&text),
            Err(SubnetEnvError::Lost { .. })
        ));
    }

    #[test]
    fn previous_subnet_is_tolerant() {
        let net: Ipv4Net = "10.244.7.0/24".parse().unwrap();
        assert_eq!(previous_subnet("FLANNEL_SUBNET=10.244.7.1/24\n"), Some(net));
        assert_eq!(
            previous_subnet("garbage line\nFLANNEL_MTU=x\nFLANNEL_SUBNET=10.244.7.1/24"),
            Some(net)
        );
        assert_eq!(
            previous_subnet("FLANNEL_SUBNET=10.244.7.1/24,10.244.8.1/24\n"),
            None
        );
        assert_eq!(previous_subnet("FLANNEL_SUBNET=nope\n"), None);
        assert_eq!(previous_subnet("FLANNEL_NETWORK=10.244.0.0/16\n"), None);
        assert_eq!(previous_subnet(""), None);
        assert_eq!(
            previous_network("FLANNEL_NETWORK=10.244.0.0/16\n"),
            Some("10.244.0.0/16".parse().unwrap())
        );
    }

    #[test]
    fn inline_comment_needs_leading_space() {
        assert_eq!(unquote("a#b"), "a#b");
        assert_eq!(unquote("a #b"), "a");
        assert_eq!(unquote("\"a\\\"b\""), "a\"b");
        assert_eq!(unquote("'a #b'"), "a #b");
    }

    #[test]
    fn the_previous_ipv6_subnet_and_network_are_read_back_as_flannel_reads_them() {
        let text = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
        assert_eq!(
            previous_subnet6(text),
            Some("fc00:0:0:1::/64".parse().unwrap())
        );
        assert_eq!(previous_network6(text), Some("fc00::/48".parse().unwrap()));
        assert_eq!(
            previous_subnet(text),
            Some("10.244.1.0/24".parse().unwrap())
        );
        // Two CIDRs, an IPv4 value, or no line: none (flannel's exactly-one rule).
        assert_eq!(
            previous_subnet6("FLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64,fc00:0:0:2::1/64\n"),
            None
        );
        assert_eq!(
            previous_subnet6("FLANNEL_IPV6_SUBNET=10.244.1.1/24\n"),
            None
        );
        assert_eq!(previous_subnet6("FLANNEL_SUBNET=10.244.1.1/24\n"), None);
    }
}
