//! Reading the node's subnet.env the way flannel's CNI plugin does.
//!
//! weft-core's [`SubnetEnv::parse`] does the work. It accepts a single CIDR per key, while
//! flannel's plugin accepts `FLANNEL_NETWORK` and `FLANNEL_IPV6_NETWORK` as comma lists
//! (deduplicated), so those two lists are split here and weft-core sees their first entry.

use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};
use weft_core::clip::clip;
use weft_core::subnet_env::SubnetEnv;

use crate::Error;

/// What the delegate config is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelEnv {
    /// Cluster IPv4 networks (`FLANNEL_NETWORK`), masked, deduplicated, in file order.
    pub networks: Vec<Ipv4Net>,
    /// The node's IPv4 subnet, as a network address (`FLANNEL_SUBNET` with host bits dropped).
    pub subnet: Option<Ipv4Net>,
    /// Cluster IPv6 networks (`FLANNEL_IPV6_NETWORK`).
    pub ipv6_networks: Vec<Ipv6Net>,
    /// The node's IPv6 subnet, as a network address.
    pub ipv6_subnet: Option<Ipv6Net>,
    /// `FLANNEL_MTU`.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`.
    pub ipmasq: bool,
}

const NETWORK: &str = "FLANNEL_NETWORK";
const IPV6_NETWORK: &str = "FLANNEL_IPV6_NETWORK";

/// Splits a line into key and value the way weft-core's reader does for the plain cases
/// (`KEY=VALUE`, `export KEY=VALUE`, optional quotes around the value).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let body = line.trim();
    let body = body
        .strip_prefix("export")
        .filter(|rest| rest.starts_with([' ', '\t']))
        .map_or(body, str::trim_start);
    let (key, value) = body.split_once('=')?;
    let value = value.trim();
    let value = [('"', '"'), ('\'', '\'')]
        .iter()
        .find_map(|&(open, close)| value.strip_prefix(open)?.strip_suffix(close))
        .unwrap_or(value);
    Some((key.trim(), value))
}

/// Parses a comma list of CIDRs, masking and deduplicating; `line` is 1-based.
fn cidr_list<N>(line: usize, key: &str, value: &str, family: &str) -> Result<Vec<N>, String>
where
    N: std::str::FromStr + PartialEq + Copy,
    N: Masked,
{
    let mut out: Vec<N> = Vec::new();
    for piece in value.split(',') {
        let piece = piece.trim();
        let net = piece.parse::<N>().map(Masked::masked).map_err(|_| {
            format!(
                "subnet.env line {line}: {key}={:?}: {:?} is not an {family} CIDR; expected a comma-separated list of {family} CIDRs such as 10.244.0.0/16",
                clip(value),
                clip(piece)
            )
        })?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

/// Clears host bits.
trait Masked {
    fn masked(self) -> Self;
}
impl Masked for Ipv4Net {
    fn masked(self) -> Self {
        self.trunc()
    }
}
impl Masked for Ipv6Net {
    fn masked(self) -> Self {
        self.trunc()
    }
}

/// Parses subnet.env text. The error is the reason, naming line and key.
pub fn parse(text: &str) -> Result<FlannelEnv, String> {
    let mut v4_list: Option<Vec<Ipv4Net>> = None;
    let mut v6_list: Option<Vec<Ipv6Net>> = None;
    let mut rewritten = String::with_capacity(text.len());
    for (index, line) in text.lines().enumerate() {
        match key_value(line) {
            Some((NETWORK, value)) if value.contains(',') => {
                let list = cidr_list::<Ipv4Net>(index + 1, NETWORK, value, "IPv4")?;
                rewritten.push_str(&format!("{NETWORK}={}", list[0]));
                v4_list = Some(list);
            }
            Some((IPV6_NETWORK, value)) if value.contains(',') => {
                let list = cidr_list::<Ipv6Net>(index + 1, IPV6_NETWORK, value, "IPv6")?;
                rewritten.push_str(&format!("{IPV6_NETWORK}={}", list[0]));
                v6_list = Some(list);
            }
            kv => {
                // A later single-valued line replaces an earlier list (last one wins).
                match kv {
                    Some((NETWORK, _)) => v4_list = None,
                    Some((IPV6_NETWORK, _)) => v6_list = None,
                    _ => {}
                }
                rewritten.push_str(line);
            }
        }
        rewritten.push('\n');
    }
    let env = SubnetEnv::parse(&rewritten).map_err(|e| e.to_string())?;
    Ok(FlannelEnv {
        networks: v4_list.unwrap_or_else(|| env.network.into_iter().collect()),
        subnet: env.subnet,
        ipv6_networks: v6_list.unwrap_or_else(|| env.ipv6_network.into_iter().collect()),
        ipv6_subnet: env.ipv6_subnet,
        mtu: env.mtu,
        ipmasq: env.ipmasq,
    })
}

/// Reads and parses `path`: a missing file is "try again later" (the daemon has not written
/// it yet), a malformed one is an invalid network config.
pub fn load(path: &Path) -> Result<FlannelEnv, Error> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::SubnetEnvMissing {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(Error::SubnetEnvRead {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let text = String::from_utf8(text).map_err(|_| Error::SubnetEnvInvalid {
        path: path.to_path_buf(),
        reason: "the file is not UTF-8 text".to_string(),
    })?;
    if let Some(detail) = weft_core::subnet_env::lost_detail(&text) {
        return Err(Error::SubnetLost {
            path: path.to_path_buf(),
            detail,
        });
    }
    parse(&text).map_err(|reason| Error::SubnetEnvInvalid {
        path: path.to_path_buf(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLANNELD: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn reads_what_flanneld_writes_and_masks_the_subnet() {
        let env = parse(FLANNELD).unwrap();
        assert_eq!(
            env.networks,
            vec!["10.244.0.0/16".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(env.subnet.unwrap().to_string(), "10.244.1.0/24");
        assert!(env.ipv6_networks.is_empty());
        assert_eq!(env.ipv6_subnet, None);
        assert_eq!(env.mtu, 1450);
        assert!(env.ipmasq);
    }

    #[test]
    fn dual_stack() {
        let env = parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n").unwrap();
        assert_eq!(env.ipv6_networks[0].to_string(), "fc00::/48");
        assert_eq!(env.ipv6_subnet.unwrap().to_string(), "fc00:0:0:1::/64");
        assert!(!env.ipmasq);
    }

    #[test]
    fn network_comma_lists_are_split_masked_and_deduplicated() {
        let env = parse("FLANNEL_NETWORK=10.244.0.0/16,10.245.0.1/16, 10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=\"fc00::/48,fd00::/48,fc00::/48\"\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap();
        let v4: Vec<String> = env.networks.iter().map(ToString::to_string).collect();
        assert_eq!(v4, ["10.244.0.0/16", "10.245.0.0/16"]);
        let v6: Vec<String> = env.ipv6_networks.iter().map(ToString::to_string).collect();
        assert_eq!(v6, ["fc00::/48", "fd00::/48"]);
    }

    #[test]
    fn later_single_network_replaces_earlier_list() {
        let env = parse(&format!(
            "FLANNEL_NETWORK=10.1.0.0/16,10.2.0.0/16\n{FLANNELD}"
        ))
        .unwrap();
        assert_eq!(env.networks.len(), 1);
        let env = parse(&format!(
            "{FLANNELD}FLANNEL_NETWORK=10.1.0.0/16,10.2.0.0/16\n"
        ))
        .unwrap();
        assert_eq!(env.networks.len(), 2);
    }

    #[test]
    fn bad_list_entry_names_line_and_key() {
        let err = parse("FLANNEL_MTU=1450\nFLANNEL_NETWORK=10.244.0.0/16,nope\n").unwrap_err();
        assert!(err.contains("line 2: FLANNEL_NETWORK="), "{err}");
        assert!(err.contains("\"nope\" is not an IPv4 CIDR"), "{err}");
        let err = parse("FLANNEL_NETWORK=10.244.0.0/16,\n").unwrap_err();
        assert!(err.contains("\"\" is not an IPv4 CIDR"), "{err}");
    }

    #[test]
    fn missing_keys_come_from_weft_core() {
        let err = parse("FLANNEL_NETWORK=10.244.0.0/16\n").unwrap_err();
        assert!(err.contains("FLANNEL_MTU"), "{err}");
        assert!(err.contains("FLANNEL_IPMASQ"), "{err}");
    }

    #[test]
    fn load_maps_missing_to_try_again_and_garbage_to_7() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.env");
        let err = load(&path).unwrap_err();
        assert_eq!(err.code(), 11);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not running or not ready"), "{msg}");

        std::fs::write(&path, "FLANNEL_MTU=big\n").unwrap();
        let err = load(&path).unwrap_err();
        assert_eq!(err.code(), 7);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("FLANNEL_MTU"), "{msg}");

        std::fs::write(&path, b"\xff\xfe").unwrap();
        assert_eq!(load(&path).unwrap_err().code(), 7);

        std::fs::write(&path, FLANNELD).unwrap();
        assert_eq!(load(&path).unwrap().mtu, 1450);
    }

    #[test]
    fn a_lost_subnet_is_try_again_later_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("subnet.env");
        let text = weft_core::subnet_env::render_lost(
            Some("10.244.0.0/16".parse().unwrap()),
            1450,
            true,
            "10.244.3.0/24".parse().unwrap(),
            "was taken by another node",
        );
        std::fs::write(&p, text).unwrap();
        let err = load(&p).unwrap_err();
        assert_eq!(err.code(), crate::error::code::TRY_AGAIN_LATER);
        let msg = err.to_string();
        assert!(
            msg.contains("subnet 10.244.3.0/24 was taken by another node"),
            "{msg}"
        );
        assert!(msg.contains(&p.display().to_string()), "{msg}");
    }

    #[test]
    fn unreadable_path_is_io_failure() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be read as a file.
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.code(), 5, "{err}");
    }
}
