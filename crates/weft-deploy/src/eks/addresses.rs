//! The address plan: the CIDR flags parsed strictly, EKS's service CIDR default, the overlap
//! checks, and the node-subnet arithmetic (validated by the parser weftd itself uses).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_core::config::NetworkConfig;

use super::max_pods;

/// EKS's service CIDR when the VPC's primary CIDR is inside 10.0.0.0/8.
pub const EKS_SERVICE_CIDR_FOR_10_VPC: Ipv4Net = net(172, 20, 0, 0, 16);
/// EKS's service CIDR otherwise.
pub const EKS_SERVICE_CIDR_DEFAULT: Ipv4Net = net(10, 100, 0, 0, 16);

const fn net(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len) {
        Ok(n) => n,
        Err(_) => panic!("bad constant prefix length"),
    }
}

/// Ranges a pod CIDR must never cover, with why.
const RESERVED: &[(Ipv4Net, &str)] = &[
    (
        net(169, 254, 0, 0, 16),
        "link-local: EC2 instance metadata (169.254.169.254) and the Amazon DNS resolver (169.254.169.253) live there",
    ),
    (net(127, 0, 0, 0, 8), "loopback"),
    (net(0, 0, 0, 0, 8), "\"this network\" (0.0.0.0/8)"),
    (net(224, 0, 0, 0, 4), "multicast"),
    (net(240, 0, 0, 0, 4), "reserved (240.0.0.0/4)"),
];

/// Parses an IPv4 CIDR flag value; host bits must be clear.
pub fn parse_cidr(flag: &str, raw: &str) -> Result<Ipv4Net, String> {
    let text = raw.trim();
    let parsed: Ipv4Net = text.parse().map_err(|_| {
        if text.contains(':') {
            format!(
                "{flag} {text:?} is an IPv6 CIDR; weft's overlay and this plan are IPv4 only (EKS IPv6 clusters cannot move to weft)"
            )
        } else {
            format!("{flag} {text:?} is not an IPv4 CIDR; write it as address/prefix, e.g. 10.0.0.0/16")
        }
    })?;
    if parsed.addr() != parsed.network() {
        return Err(format!(
            "{flag} {text} has host bits set; the network is {}: pass {flag} {}",
            parsed.trunc(),
            parsed.trunc()
        ));
    }
    Ok(parsed)
}

/// The service CIDR EKS picks when the cluster was created without one: 172.20.0.0/16 when
/// the VPC's primary CIDR (taken to be the first `--vpc-cidr`) is inside 10.0.0.0/8,
/// 10.100.0.0/16 otherwise (so it never overlaps the VPC).
pub fn default_service_cidr(vpc: &[Ipv4Net]) -> Ipv4Net {
    let ten = net(10, 0, 0, 0, 8);
    match vpc.first() {
        Some(primary) if ten.contains(primary) => EKS_SERVICE_CIDR_FOR_10_VPC,
        _ => EKS_SERVICE_CIDR_DEFAULT,
    }
}

/// True when two networks share an address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The raw flags of the address plan.
#[derive(Debug, Clone)]
pub struct AddressFlags<'a> {
    pub pod_cidr: &'a str,
    pub subnet_len: u64,
    pub service_cidr: Option<&'a str>,
    pub vpc_cidrs: &'a [String],
    pub peered_cidrs: &'a [String],
}

/// A checked address plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPlan {
    pub pod: Ipv4Net,
    pub subnet_len: u8,
    /// Node subnets weftd can lease (SubnetMin..SubnetMax).
    pub node_subnets: u64,
    /// Pod addresses in one node subnet.
    pub pod_addresses: u32,
    pub service: Ipv4Net,
    /// True when `service` is EKS's default, not a flag.
    pub service_assumed: bool,
    pub vpc: Vec<Ipv4Net>,
    pub peered: Vec<Ipv4Net>,
    /// The network config `weft network init` will write.
    pub config_json: String,
}

/// Parses and checks the address flags. Every problem is reported, not only the first.
pub fn plan(flags: &AddressFlags<'_>) -> Result<AddressPlan, Vec<String>> {
    let mut problems = Vec::new();
    let mut parse_all = |flag: &str, raws: &[String]| -> Vec<Ipv4Net> {
        raws.iter()
            .filter_map(|r| parse_cidr(flag, r).map_err(|e| problems.push(e)).ok())
            .collect()
    };
    let vpc = parse_all("--vpc-cidr", flags.vpc_cidrs);
    let peered = parse_all("--peered-cidr", flags.peered_cidrs);
    let pod = parse_cidr("--pod-cidr", flags.pod_cidr)
        .map_err(|e| problems.push(e))
        .ok();
    let service = flags.service_cidr.map(|s| {
        parse_cidr("--service-cidr", s)
            .map_err(|e| problems.push(e))
            .ok()
    });
    let (service, service_assumed) = match service {
        Some(given) => (given, false),
        None => (Some(default_service_cidr(&vpc)), true),
    };

    let config = pod.and_then(|pod| match network_config(pod, flags.subnet_len) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(e);
            None
        }
    });

    if let (Some(pod), Some(service)) = (pod, service) {
        problems.extend(overlap_problems(
            pod,
            service,
            service_assumed,
            &vpc,
            &peered,
        ));
    }
    match (pod, service, config, problems.is_empty()) {
        (Some(pod), Some(service), Some((cfg, config_json)), true) => Ok(AddressPlan {
            pod,
            subnet_len: cfg.subnet_len,
            node_subnets: cfg.subnet_count(),
            pod_addresses: max_pods::pod_addresses(cfg.subnet_len),
            service,
            service_assumed,
            vpc,
            peered,
            config_json,
        }),
        _ => Err(problems),
    }
}

/// Validates the pod CIDR and subnet length with weftd's own config parser, so the plan never
/// proposes a config that `weft network init` would refuse.
fn network_config(pod: Ipv4Net, subnet_len: u64) -> Result<(NetworkConfig, String), String> {
    let raw = format!(
        "{{\"Network\":\"{pod}\",\"SubnetLen\":{subnet_len},\"Backend\":{{\"Type\":\"vxlan\"}}}}"
    );
    match NetworkConfig::parse(raw.as_bytes()) {
        Ok(cfg) => Ok((cfg, raw)),
        Err(e) => {
            let flag = match e.key() {
                Some("SubnetLen" | "SubnetMin" | "SubnetMax") => "--subnet-len",
                _ => "--pod-cidr",
            };
            Err(format!("{flag}: {e}"))
        }
    }
}

fn overlap_problems(
    pod: Ipv4Net,
    service: Ipv4Net,
    service_assumed: bool,
    vpc: &[Ipv4Net],
    peered: &[Ipv4Net],
) -> Vec<String> {
    let mut avoid: Vec<Ipv4Net> = vpc.iter().chain(peered).copied().collect();
    avoid.push(service);
    avoid.extend(RESERVED.iter().map(|(n, _)| *n));
    let fix = match suggest(pod.prefix_len(), &avoid) {
        Some(s) => format!(
            "pick a pod CIDR outside every VPC, service and peered range, e.g. --pod-cidr {s}"
        ),
        None => "pick a pod CIDR outside every VPC, service and peered range".to_string(),
    };
    let service_flag = if service_assumed {
        format!(
            "the service CIDR {service} (assumed: the EKS default for this VPC; pass --service-cidr with the cluster's kubernetesNetworkConfig.serviceIpv4Cidr)"
        )
    } else {
        format!("--service-cidr {service}")
    };

    let mut out = Vec::new();
    for v in vpc.iter().filter(|v| overlaps(pod, **v)) {
        out.push(format!(
            "--pod-cidr {pod} overlaps --vpc-cidr {v}: pod IPs would collide with VPC addresses (nodes, load balancers, VPC endpoints), and masquerading decides by these ranges; {fix}"
        ));
    }
    if overlaps(pod, service) {
        out.push(format!(
            "--pod-cidr {pod} overlaps {service_flag}: pod IPs would collide with Service cluster IPs; {fix}"
        ));
    }
    for p in peered.iter().filter(|p| overlaps(pod, **p)) {
        out.push(format!(
            "--pod-cidr {pod} overlaps --peered-cidr {p}: pods could not reach hosts in the peered or on-premises range; {fix}"
        ));
    }
    for (r, why) in RESERVED.iter().filter(|(r, _)| overlaps(pod, *r)) {
        out.push(format!("--pod-cidr {pod} overlaps {r} ({why}); {fix}"));
    }
    for v in vpc.iter().filter(|v| overlaps(service, **v)) {
        out.push(format!(
            "{service_flag} overlaps --vpc-cidr {v}: EKS never lets the service CIDR overlap the VPC, so one of the two is wrong; check `aws eks describe-cluster --query cluster.kubernetesNetworkConfig.serviceIpv4Cidr`"
        ));
    }
    out
}

/// The first network of prefix `len` in the private ranges (10.244.0.0 first, flannel's
/// default) that overlaps none of `avoid`.
fn suggest(len: u8, avoid: &[Ipv4Net]) -> Option<Ipv4Net> {
    let preferred = Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), len)
        .ok()?
        .trunc();
    if !avoid.iter().any(|a| overlaps(preferred, *a)) {
        return Some(preferred);
    }
    for base in [
        net(10, 0, 0, 0, 8),
        net(172, 16, 0, 0, 12),
        net(192, 168, 0, 0, 16),
    ] {
        if len < base.prefix_len() {
            continue;
        }
        let size = 1u64 << (32 - u32::from(len));
        let end = u64::from(u32::from(base.broadcast()));
        let mut addr = u64::from(u32::from(base.network()));
        while addr + size - 1 <= end {
            let candidate = Ipv4Net::new(Ipv4Addr::from(u32::try_from(addr).ok()?), len).ok()?;
            match avoid.iter().find(|a| overlaps(candidate, **a)) {
                None => return Some(candidate),
                Some(a) => {
                    // Jump past whichever of the two ends later, staying aligned.
                    let past = u64::from(u32::from(a.broadcast()))
                        .max(u64::from(u32::from(candidate.broadcast())))
                        + 1;
                    addr = past.div_ceil(size) * size;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn flags<'a>(
        pod: &'a str,
        service: Option<&'a str>,
        vpc: &'a [String],
        peered: &'a [String],
    ) -> AddressFlags<'a> {
        AddressFlags {
            pod_cidr: pod,
            subnet_len: 24,
            service_cidr: service,
            vpc_cidrs: vpc,
            peered_cidrs: peered,
        }
    }

    #[test]
    fn parse_rejects_garbage_host_bits_and_ipv6() {
        assert_eq!(
            parse_cidr("--vpc-cidr", " 10.0.0.0/16 ").unwrap(),
            n("10.0.0.0/16")
        );
        let e = parse_cidr("--vpc-cidr", "10.0.0.0").unwrap_err();
        assert!(
            e.starts_with("--vpc-cidr \"10.0.0.0\" is not an IPv4 CIDR"),
            "{e}"
        );
        let e = parse_cidr("--pod-cidr", "10.244.1.0/16").unwrap_err();
        assert!(
            e.contains("host bits") && e.contains("--pod-cidr 10.244.0.0/16"),
            "{e}"
        );
        let e = parse_cidr("--peered-cidr", "fd00::/8").unwrap_err();
        assert!(e.contains("IPv6"), "{e}");
        assert!(parse_cidr("--vpc-cidr", "10.0.0.0/33").is_err());
    }

    #[test]
    fn eks_service_cidr_default_follows_the_primary_vpc_cidr() {
        assert_eq!(
            default_service_cidr(&[n("10.0.0.0/16")]),
            n("172.20.0.0/16")
        );
        assert_eq!(
            default_service_cidr(&[n("192.168.0.0/16")]),
            n("10.100.0.0/16")
        );
        assert_eq!(
            default_service_cidr(&[n("172.31.0.0/16"), n("10.1.0.0/16")]),
            n("10.100.0.0/16")
        );
    }

    #[test]
    fn a_clean_plan_has_flannel_arithmetic() {
        let vpc = vec!["10.0.0.0/16".to_string()];
        let p = plan(&flags("10.244.0.0/16", None, &vpc, &[])).unwrap();
        assert_eq!(p.node_subnets, 255);
        assert_eq!(p.pod_addresses, 253);
        assert_eq!(p.service, n("172.20.0.0/16"));
        assert!(p.service_assumed);
        assert_eq!(
            p.config_json,
            r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#
        );
    }

    #[test]
    fn every_overlap_is_reported_with_both_cidrs() {
        let vpc = vec!["10.0.0.0/8".to_string()];
        let peered = vec!["10.244.128.0/20".to_string()];
        let e = plan(&flags(
            "10.244.0.0/16",
            Some("10.244.0.0/20"),
            &vpc,
            &peered,
        ))
        .unwrap_err();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].starts_with("--pod-cidr 10.244.0.0/16 overlaps --vpc-cidr 10.0.0.0/8"));
        assert!(e[1].starts_with("--pod-cidr 10.244.0.0/16 overlaps --service-cidr 10.244.0.0/20"));
        assert!(
            e[2].starts_with("--pod-cidr 10.244.0.0/16 overlaps --peered-cidr 10.244.128.0/20")
        );
        assert!(e[3].starts_with("--service-cidr 10.244.0.0/20 overlaps --vpc-cidr 10.0.0.0/8"));
        // 10/8 is the VPC: the suggestion leaves it.
        assert!(e[0].ends_with("e.g. --pod-cidr 172.16.0.0/16"), "{}", e[0]);
    }

    #[test]
    fn the_assumed_service_cidr_says_so() {
        let vpc = vec!["10.0.0.0/16".to_string()];
        let e = plan(&flags("172.20.0.0/16", None, &vpc, &[])).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("overlaps the service CIDR 172.20.0.0/16 (assumed"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn link_local_pod_cidr_is_refused() {
        let vpc = vec!["10.0.0.0/16".to_string()];
        let e = plan(&flags("169.254.0.0/16", None, &vpc, &[])).unwrap_err();
        assert!(e[0].contains("instance metadata"), "{e:?}");
    }

    #[test]
    fn subnet_len_is_checked_by_weftds_parser() {
        let vpc = vec!["10.0.0.0/16".to_string()];
        let mut f = flags("10.244.0.0/16", None, &vpc, &[]);
        f.subnet_len = 12;
        let e = plan(&f).unwrap_err();
        assert!(e[0].starts_with("--subnet-len: SubnetLen 12"), "{e:?}");
        f.subnet_len = 31;
        assert!(plan(&f).unwrap_err()[0].starts_with("--subnet-len"));
        f.subnet_len = 26;
        let p = plan(&f).unwrap();
        assert_eq!((p.node_subnets, p.pod_addresses), (1023, 61));
    }

    #[test]
    fn bad_cidrs_are_all_reported() {
        let vpc = vec!["10.0.0.0/16".to_string(), "nope".to_string()];
        let peered = vec!["192.168.1.1/24".to_string()];
        let e = plan(&flags("10.244.0.0/99", Some("x"), &vpc, &peered)).unwrap_err();
        assert_eq!(e.len(), 4, "{e:#?}");
    }

    #[test]
    fn suggestions_skip_what_is_taken() {
        assert_eq!(suggest(16, &[]), Some(n("10.244.0.0/16")));
        assert_eq!(
            suggest(16, &[n("10.244.0.0/14"), n("10.0.0.0/16")]),
            Some(n("10.1.0.0/16"))
        );
        assert_eq!(suggest(16, &[n("10.0.0.0/8")]), Some(n("172.16.0.0/16")));
        assert_eq!(suggest(4, &[n("0.0.0.0/8")]), None);
    }
}
