//! The bad-input corpus of weft-core's parsers: network configs, lease values as they come out
//! of etcd (hostile ones included), subnet.env and subnet keys.
//!
//! Every case is an input and the pieces its error message must hold: what the input is (the
//! key, field, line or lease), what is wrong with it, and how to fix it. Every parser must
//! answer with an error, never a panic, and the message must stay short even when the input is
//! megabytes long (it ends up in a log line or a CNI error). Each table prints its case count.

use std::fmt::Display;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_core::config::NetworkConfig;
use weft_core::lease::{Lease, LeaseAttrs};
use weft_core::peer::{Peer, PeerVerdict, classify_lease};
use weft_core::subnet::parse_subnet_key_dual;
use weft_core::subnet_env::SubnetEnv;

/// Longest acceptable error message: long enough for the key, the problem, an example and the
/// fix, short enough that a hostile input cannot flood a log line.
const MAX_MESSAGE_BYTES: usize = 1024;

/// One bad input and what its error must say.
struct Case {
    /// Short description, printed on failure.
    label: String,
    /// The input.
    input: Vec<u8>,
    /// Substrings the error message must contain.
    needles: &'static [&'static str],
}

fn case(label: &str, input: impl Into<Vec<u8>>, needles: &'static [&'static str]) -> Case {
    Case {
        label: label.to_owned(),
        input: input.into(),
        needles,
    }
}

/// Runs every case through `parse`, which returns the error message or `None` when the input
/// was (wrongly) accepted. All failures are reported together; returns the number of cases.
fn run_table(table: &str, cases: &[Case], parse: impl Fn(&[u8]) -> Option<String>) -> usize {
    let mut failures = Vec::new();
    for c in cases {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&c.input)));
        let msg = match outcome {
            Err(_) => {
                failures.push(format!("{}: the parser panicked", c.label));
                continue;
            }
            Ok(None) => {
                failures.push(format!("{}: accepted, expected an error", c.label));
                continue;
            }
            Ok(Some(msg)) => msg,
        };
        if msg.len() > MAX_MESSAGE_BYTES {
            failures.push(format!(
                "{}: the message is {} bytes (limit {MAX_MESSAGE_BYTES}): {}...",
                c.label,
                msg.len(),
                msg.chars().take(300).collect::<String>()
            ));
            continue;
        }
        for needle in c.needles {
            if !msg.contains(needle) {
                failures.push(format!(
                    "{}:\n    message: {msg}\n    missing: {needle}",
                    c.label
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{table}: {} of {} cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
    println!("{table}: {} bad-input cases", cases.len());
    cases.len()
}

fn err_text<T>(result: Result<T, impl Display>) -> Option<String> {
    result.err().map(|e| e.to_string())
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("the table's text inputs are UTF-8")
}

// ---- network config ----

fn network_config_cases() -> Vec<Case> {
    let ten_mib = {
        let mut v = br#"{"Network":"10.244.0.0/16","Pad":""#.to_vec();
        v.resize(10 * 1024 * 1024, b'x');
        v.extend_from_slice(b"\"}");
        v
    };
    let deep = format!(
        r#"{{"Network":"10.244.0.0/16","X":{}{}}}"#,
        "[".repeat(500),
        "]".repeat(500)
    );
    let long_network = format!(r#"{{"Network":"{}"}}"#, "9".repeat(60_000));
    let long_type = format!(
        r#"{{"Network":"10.244.0.0/16","Backend":{{"Type":"{}"}}}}"#,
        "v".repeat(60_000)
    );
    vec![
        case(
            "10 MiB value",
            ten_mib,
            &[
                "10485762 bytes",
                "65536-byte limit",
                "\"Network\": \"10.244.0.0/16\"",
            ],
        ),
        case(
            "empty value",
            "",
            &["not valid JSON", "EOF", "write a JSON object"],
        ),
        case(
            "whitespace only",
            "  \n ",
            &["not valid JSON", "write a JSON object"],
        ),
        case(
            "truncated object",
            r#"{"Network":"10.244.0.0/16""#,
            &["not valid JSON", "EOF"],
        ),
        case(
            "trailing garbage",
            r#"{"Network":"10.244.0.0/16"} x"#,
            &["not valid JSON", "trailing characters"],
        ),
        case(
            "two documents",
            r#"{"Network":"10.244.0.0/16"}{"Network":"10.244.0.0/16"}"#,
            &["not valid JSON", "trailing characters"],
        ),
        case(
            "invalid UTF-8",
            b"{\"Network\":\"10.244.\xff.0/16\"}".to_vec(),
            &["not valid JSON"],
        ),
        case(
            "UTF-8 byte order mark",
            b"\xef\xbb\xbf{\"Network\":\"10.244.0.0/16\"}".to_vec(),
            &["not valid JSON", "write a JSON object"],
        ),
        case(
            "NaN",
            r#"{"Network":"10.244.0.0/16","SubnetLen":NaN}"#,
            &["not valid JSON"],
        ),
        case(
            "single quotes",
            "{'Network':'10.244.0.0/16'}",
            &["not valid JSON"],
        ),
        case(
            "nesting 500 deep",
            deep,
            &["not valid JSON", "recursion limit"],
        ),
        case(
            "a bare string",
            r#""10.244.0.0/16""#,
            &["network config must be a JSON object", "a string"],
        ),
        case("null", "null", &["must be a JSON object", "found null"]),
        case("a number", "42", &["must be a JSON object", "a number"]),
        case(
            "Network null",
            r#"{"Network":null}"#,
            &["Network is missing", "\"Network\": \"10.244.0.0/16\""],
        ),
        case(
            "Network empty",
            r#"{"Network":""}"#,
            &["Network \"\": invalid IPv4 CIDR format"],
        ),
        case(
            "Network with spaces",
            r#"{"Network":" 10.244.0.0/16 "}"#,
            &["Network \" 10.244.0.0/16 \"", "invalid IPv4 CIDR format"],
        ),
        case(
            "Network 60 KB long",
            long_network,
            &["Network", "invalid IPv4 CIDR format", "10.244.0.0/16"],
        ),
        case(
            "Network array",
            r#"{"Network":["10.244.0.0/16"]}"#,
            &["Network: expected an IPv4 CIDR string, found an array"],
        ),
        case(
            "Network object",
            r#"{"Network":{}}"#,
            &["Network: expected an IPv4 CIDR string, found an object"],
        ),
        case(
            "Network /32",
            r#"{"Network":"10.244.0.1/32"}"#,
            &["network is too small", "/28"],
        ),
        case(
            "last duplicate wins and is bad",
            r#"{"Network":"10.244.0.0/16","network":"bogus"}"#,
            &["Network \"bogus\": invalid IPv4 CIDR format"],
        ),
        case(
            "SubnetLen float exponent",
            r#"{"Network":"10.244.0.0/16","SubnetLen":2.4e1}"#,
            &["SubnetLen: expected a whole number", "\"SubnetLen\": 24"],
        ),
        case(
            "SubnetLen beyond u64",
            r#"{"Network":"10.244.0.0/16","SubnetLen":18446744073709551616}"#,
            &["SubnetLen: expected a whole number"],
        ),
        case(
            "SubnetLen true",
            r#"{"Network":"10.244.0.0/16","SubnetLen":true}"#,
            &["SubnetLen: expected a whole number", "found true"],
        ),
        case(
            "SubnetLen shorter than Network",
            r#"{"Network":"10.244.0.0/16","SubnetLen":8}"#,
            &["SubnetLen 8", "at least four subnets"],
        ),
        case(
            "SubnetMin IPv6",
            r#"{"Network":"10.244.0.0/16","SubnetMin":"fc00::"}"#,
            &[
                "SubnetMin",
                "not an IPv4 address",
                "\"SubnetMin\": \"10.244.1.0\"",
            ],
        ),
        case(
            "SubnetMax below SubnetMin",
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.200.0","SubnetMax":"10.244.100.0"}"#,
            &["SubnetMin", "above SubnetMax 10.244.100.0"],
        ),
        case(
            "EnableIPv4 as a string",
            r#"{"Network":"10.244.0.0/16","EnableIPv4":"false"}"#,
            &["EnableIPv4: expected true or false", "\"EnableIPv4\": true"],
        ),
        case(
            "EnableNFTables as a number",
            r#"{"Network":"10.244.0.0/16","EnableNFTables":1}"#,
            &["EnableNFTables: expected true or false", "the number 1"],
        ),
        case(
            "Backend true",
            r#"{"Network":"10.244.0.0/16","Backend":true}"#,
            &[
                "Backend must be a JSON object",
                "\"Backend\": {\"Type\": \"vxlan\"}",
            ],
        ),
        case(
            "Backend.Type with a trailing space",
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan "}}"#,
            &[
                "Backend.Type \"vxlan \": unknown backend type",
                "\"Type\": \"vxlan\"",
            ],
        ),
        case(
            "Backend.Type 60 KB long",
            long_type,
            &[
                "Backend.Type",
                "unknown backend type",
                "\"Type\": \"vxlan\"",
            ],
        ),
        case(
            "Backend.VNI negative",
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}"#,
            &["Backend.VNI: expected a whole number", "\"VNI\": 1"],
        ),
        case(
            "Backend.Port negative",
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":-8472}}"#,
            &["Backend.Port: expected a whole number", "\"Port\": 8472"],
        ),
        case(
            "Backend.MTU huge",
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":4294967296}}"#,
            &["Backend.MTU 4294967296", "1500"],
        ),
        case(
            "IPv6 only without IPv6Network",
            r#"{"EnableIPv4":false,"EnableIPv6":true}"#,
            &["IPv6Network is missing", "\"IPv6Network\": \"fc00::/48\""],
        ),
    ]
}

#[test]
fn network_config_corpus() {
    let cases = network_config_cases();
    run_table("network config", &cases, |b| {
        err_text(NetworkConfig::parse(b))
    });
}

// ---- lease values ----

const GOOD_LEASE: &str = r#"{"PublicIP":"192.168.1.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}"#;

/// A vxlan lease value with `BackendData` replaced.
fn with_data(data: &str) -> String {
    format!(r#"{{"PublicIP":"192.168.1.12","BackendType":"vxlan","BackendData":{data}}}"#)
}

/// What weftd does with a lease value: decode it, then its vxlan data.
fn lease_error(bytes: &[u8]) -> Option<String> {
    match LeaseAttrs::parse(bytes) {
        Err(e) => Some(e.to_string()),
        Ok(attrs) => err_text(attrs.vxlan_data()),
    }
}

fn lease_cases() -> Vec<Case> {
    let ten_mib = {
        let mut v = GOOD_LEASE.as_bytes()[..GOOD_LEASE.len() - 1].to_vec();
        v.extend_from_slice(br#","Pad":""#);
        v.resize(10 * 1024 * 1024 - 2, b'A');
        v.extend_from_slice(b"\"}");
        v
    };
    let just_over = {
        let mut v = br#"{"Pad":""#.to_vec();
        v.resize(64 * 1024 - 1, b' ');
        v.extend_from_slice(b"\"}");
        v
    };
    let deep = with_data(&format!("{}{}", "{\"a\":".repeat(300), "}".repeat(300)));
    let long_ip = format!(r#"{{"PublicIP":"{}"}}"#, "1.".repeat(30_000));
    let long_mac = with_data(&format!(
        r#"{{"VNI":1,"VtepMAC":"{}"}}"#,
        "aa:".repeat(20_000)
    ));
    vec![
        case(
            "10 MiB value",
            ten_mib,
            &[
                "lease value is 10485760 bytes",
                "65536-byte limit",
                "delete the key",
            ],
        ),
        case(
            "64 KiB + 1 value",
            just_over,
            &["65537 bytes", "65536-byte limit"],
        ),
        case(
            "empty value",
            "",
            &["lease value is not valid JSON", "EOF", "delete the key"],
        ),
        case(
            "truncated",
            &GOOD_LEASE[..40],
            &["not valid JSON", "delete the key"],
        ),
        case(
            "invalid UTF-8",
            b"{\"PublicIP\":\"\xc0\xaf\"}".to_vec(),
            &["not valid JSON"],
        ),
        case(
            "nesting 300 deep",
            deep,
            &["not valid JSON", "recursion limit"],
        ),
        case(
            "trailing garbage",
            format!("{GOOD_LEASE}]"),
            &["not valid JSON", "trailing characters"],
        ),
        case(
            "an array",
            "[1,2]",
            &[
                "lease value must be a JSON object, found an array",
                "delete the key",
            ],
        ),
        case(
            "a string",
            r#""192.168.1.12""#,
            &["must be a JSON object, found a string"],
        ),
        case("null", "null", &["must be a JSON object, found null"]),
        case("a number", "7", &["must be a JSON object, found a number"]),
        case(
            "PublicIP a number",
            r#"{"PublicIP":3232235788}"#,
            &[
                "lease field PublicIP: expected an IPv4 address string, found a number",
                "\"PublicIP\":\"192.168.1.11\"",
            ],
        ),
        case(
            "PublicIP an array",
            r#"{"PublicIP":["192.168.1.12"]}"#,
            &["lease field PublicIP", "found an array"],
        ),
        case(
            "PublicIP out of range",
            r#"{"PublicIP":"192.168.1.300"}"#,
            &["lease field PublicIP \"192.168.1.300\": not an IPv4 address"],
        ),
        case(
            "PublicIP with a port",
            r#"{"PublicIP":"192.168.1.12:8472"}"#,
            &["PublicIP \"192.168.1.12:8472\"", "not an IPv4 address"],
        ),
        case(
            "PublicIP IPv6",
            r#"{"PublicIP":"2001:db8::12"}"#,
            &["PublicIP", "an IPv6 address belongs in PublicIPv6"],
        ),
        case(
            "PublicIP 60 KB long",
            long_ip,
            &[
                "lease field PublicIP",
                "not an IPv4 address",
                "delete the key",
            ],
        ),
        case(
            "PublicIPv6 garbage",
            r#"{"PublicIP":"192.168.1.12","PublicIPv6":"fe80::1::2"}"#,
            &["lease field PublicIPv6 \"fe80::1::2\": not an IPv6 address"],
        ),
        case(
            "PublicIPv6 a boolean",
            r#"{"PublicIP":"192.168.1.12","PublicIPv6":true}"#,
            &[
                "lease field PublicIPv6",
                "found a boolean",
                "\"PublicIPv6\":null",
            ],
        ),
        case(
            "BackendType a number",
            r#"{"PublicIP":"192.168.1.12","BackendType":1}"#,
            &[
                "lease field BackendType: expected a string, found a number",
                "\"BackendType\":\"vxlan\"",
            ],
        ),
        case(
            "BackendData missing",
            r#"{"PublicIP":"192.168.1.12","BackendType":"vxlan"}"#,
            &[
                "lease field BackendData is missing",
                "restart its flanneld/weftd",
            ],
        ),
        case(
            "BackendData a string",
            with_data(r#""VNI=1""#),
            &["lease field BackendData: expected an object, found a string"],
        ),
        case(
            "BackendData empty",
            with_data("{}"),
            &["BackendData.VNI is missing"],
        ),
        case(
            "VNI a string",
            with_data(r#"{"VNI":"1","VtepMAC":"aa:bb:cc:dd:ee:02"}"#),
            &["lease field BackendData.VNI: expected a number, found a string"],
        ),
        case(
            "VNI negative",
            with_data(r#"{"VNI":-1,"VtepMAC":"aa:bb:cc:dd:ee:02"}"#),
            &[
                "BackendData.VNI \"-1\"",
                "whole number from 0 to 4294967295",
            ],
        ),
        case(
            "VNI beyond u32",
            with_data(r#"{"VNI":4294967296,"VtepMAC":"aa:bb:cc:dd:ee:02"}"#),
            &["BackendData.VNI \"4294967296\"", "whole number"],
        ),
        case(
            "VNI fractional",
            with_data(r#"{"VNI":1.5,"VtepMAC":"aa:bb:cc:dd:ee:02"}"#),
            &["BackendData.VNI \"1.5\"", "whole number"],
        ),
        case(
            "VtepMAC missing",
            with_data(r#"{"VNI":1}"#),
            &[
                "BackendData.VtepMAC is missing",
                "\"VtepMAC\":\"aa:bb:cc:dd:ee:01\"",
            ],
        ),
        case(
            "VtepMAC null",
            with_data(r#"{"VNI":1,"VtepMAC":null}"#),
            &["BackendData.VtepMAC is missing"],
        ),
        case(
            "VtepMAC a number",
            with_data(r#"{"VNI":1,"VtepMAC":12}"#),
            &["BackendData.VtepMAC: expected a MAC address string, found a number"],
        ),
        case(
            "VtepMAC non-hex",
            with_data(r#"{"VNI":1,"VtepMAC":"zz:bb:cc:dd:ee:02"}"#),
            &["BackendData.VtepMAC \"zz:bb:cc:dd:ee:02\": not a MAC address"],
        ),
        case(
            "VtepMAC too short",
            with_data(r#"{"VNI":1,"VtepMAC":"aa:bb:cc"}"#),
            &["BackendData.VtepMAC", "not a MAC address"],
        ),
        case(
            "VtepMAC 60 KB long",
            long_mac,
            &["BackendData.VtepMAC", "not a MAC address", "delete the key"],
        ),
    ]
}

#[test]
fn lease_value_corpus() {
    let cases = lease_cases();
    run_table("lease value", &cases, lease_error);
}

// ---- hostile peer leases, as weftd meets them under <prefix>/subnets/ ----

fn cfg() -> NetworkConfig {
    NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}"#)
        .expect("the test config is valid")
}

fn own() -> Ipv4Net {
    "10.244.1.0/24".parse().expect("valid CIDR")
}

fn vxlan_value(ip: &str, vni: u32, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":{vni},"VtepMAC":"{mac}"}}}}"#
    )
}

/// What weftd does with one key/value pair of the subnets prefix: parse the key tail, decode
/// the value, classify the lease. `Ok` is a peer; `Err` is why the pair is skipped.
fn peer_of(key: &str, value: &[u8]) -> Result<Peer, String> {
    let (subnet, _) = parse_subnet_key_dual(key).map_err(|e| e.to_string())?;
    let attrs = LeaseAttrs::parse(value).map_err(|e| e.to_string())?;
    match classify_lease(
        &cfg(),
        Some(own()),
        &Lease {
            subnet6: None,
            subnet,
            attrs,
        },
    ) {
        PeerVerdict::Peer(p) => Ok(p),
        PeerVerdict::Ignore(why) | PeerVerdict::Reject(why) => Err(why),
    }
}

/// (key tail, value, needles): hostile or unusable leases that must be skipped.
fn hostile_lease_cases() -> Vec<(&'static str, Vec<u8>, &'static [&'static str])> {
    let good = |ip: &str| vxlan_value(ip, 1, "aa:bb:cc:dd:ee:09").into_bytes();
    vec![
        (
            "10.245.2.0-24",
            good("192.168.1.20"),
            &[
                "lease 10.245.2.0-24",
                "outside Network 10.244.0.0/16",
                "delete the key",
            ][..],
        ),
        (
            "0.0.0.0-0",
            good("192.168.1.21"),
            &["lease 0.0.0.0-0", "outside Network 10.244.0.0/16"],
        ),
        (
            "10.244.0.0-23",
            good("192.168.1.22"),
            &[
                "lease 10.244.0.0-23",
                "overlaps this node's subnet 10.244.1.0/24",
                "delete the stale lease",
            ],
        ),
        (
            "10.244.1.128-25",
            good("192.168.1.23"),
            &["lease 10.244.1.128-25", "overlaps this node's subnet"],
        ),
        (
            "10.244.0.0-16",
            good("192.168.1.24"),
            &["lease 10.244.0.0-16", "overlaps this node's subnet"],
        ),
        (
            "10.244.1.0-24",
            good("192.168.1.25"),
            &["lease 10.244.1.0-24 is this node's own subnet"],
        ),
        (
            "10.244.20.0-26",
            good("192.168.1.26"),
            &[
                "lease 10.244.20.0-26",
                "SubnetLen is 24",
                "align the node's config",
            ],
        ),
        (
            "10.244.21.0-24",
            vxlan_value("192.168.1.27", 7, "aa:bb:cc:dd:ee:09").into_bytes(),
            &["lease 10.244.21.0-24", "VNI mismatch", "same Backend.VNI"],
        ),
        (
            "10.244.22.0-24",
            good("0.0.0.0"),
            &[
                "lease 10.244.22.0-24",
                "PublicIP 0.0.0.0 is an unspecified address",
                "--public-ip",
            ],
        ),
        (
            "10.244.23.0-24",
            br#"{"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:09"}}"#
                .to_vec(),
            &["lease 10.244.23.0-24", "PublicIP 0.0.0.0"],
        ),
        (
            "10.244.24.0-24",
            good("127.0.0.1"),
            &["PublicIP 127.0.0.1 is a loopback address"],
        ),
        (
            "10.244.25.0-24",
            good("239.1.1.1"),
            &["PublicIP 239.1.1.1 is a multicast address"],
        ),
        (
            "10.244.26.0-24",
            vxlan_value("192.168.1.28", 1, "ff:ff:ff:ff:ff:ff").into_bytes(),
            &[
                "lease 10.244.26.0-24",
                "VtepMAC ff:ff:ff:ff:ff:ff is not a unicast address",
            ],
        ),
        (
            "10.244.27.0-24",
            vxlan_value("192.168.1.29", 1, "00:00:00:00:00:00").into_bytes(),
            &["VtepMAC 00:00:00:00:00:00 is not a unicast address"],
        ),
        (
            "10.244.28.0-24",
            br#"{"PublicIP":"192.168.1.30","BackendType":"host-gw"}"#.to_vec(),
            &[
                "lease 10.244.28.0-24 has BackendType \"host-gw\"",
                "another backend",
            ],
        ),
        (
            "10.244.29.0-24",
            vec![b'{'; 10 * 1024 * 1024],
            &["lease value is 10485760 bytes", "delete the key"],
        ),
        (
            "10.244.30.0-24",
            br#"{"PublicIP":["192.168.1.31"],"BackendType":"vxlan"}"#.to_vec(),
            &["lease field PublicIP", "found an array"],
        ),
        (
            "10.244.31.7-24",
            good("192.168.1.32"),
            &[
                "subnet key \"10.244.31.7-24\" has host bits set",
                "\"10.244.31.0-24\"",
            ],
        ),
    ]
}

#[test]
fn hostile_peer_leases_are_skipped_without_touching_other_peers() {
    let good_peers = [
        ("10.244.2.0-24", "192.168.1.12", "aa:bb:cc:dd:ee:02"),
        ("10.244.3.0-24", "192.168.1.13", "aa:bb:cc:dd:ee:03"),
        ("10.244.255.0-24", "192.168.1.14", "aa:bb:cc:dd:ee:04"),
    ];
    let expected: Vec<Peer> = good_peers
        .iter()
        .map(|(key, ip, mac)| Peer {
            subnet: key.replace('-', "/").parse().expect("valid CIDR"),
            public_ip: ip.parse::<Ipv4Addr>().expect("valid IP"),
            vtep_mac: mac.parse().expect("valid MAC"),
            direct: false,
        })
        .collect();

    let hostile = hostile_lease_cases();
    // One listing holding every hostile pair between the good ones, as etcd would return them.
    let mut listing: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, (key, value, _)) in hostile.iter().enumerate() {
        if let Some((gk, ip, mac)) = good_peers.get(i) {
            listing.push((gk.to_string(), vxlan_value(ip, 1, mac).into_bytes()));
        }
        listing.push((key.to_string(), value.clone()));
    }

    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    for (key, value) in &listing {
        match peer_of(key, value) {
            Ok(p) => peers.push(p),
            Err(why) => skipped.push((key.clone(), why)),
        }
    }
    assert_eq!(
        peers, expected,
        "the good peers must all be programmed, unchanged"
    );
    assert_eq!(skipped.len(), hostile.len(), "{skipped:#?}");

    let mut failures = Vec::new();
    for ((key, _, needles), (skipped_key, why)) in hostile.iter().zip(&skipped) {
        assert_eq!(key, skipped_key);
        if why.len() > MAX_MESSAGE_BYTES {
            failures.push(format!("{key}: the message is {} bytes", why.len()));
        }
        for needle in *needles {
            if !why.contains(needle) {
                failures.push(format!("{key}:\n    message: {why}\n    missing: {needle}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "hostile leases:\n  {}",
        failures.join("\n  ")
    );
    println!("hostile peer lease: {} bad-input cases", hostile.len());
}

// ---- subnet.env ----

fn subnet_env_cases() -> Vec<Case> {
    const OK: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
    let replace = |key: &str, line: &str| -> String {
        OK.lines()
            .map(|l| {
                if l.starts_with(&format!("{key}=")) {
                    line.to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let long_line = format!("{OK}{}\n", "x".repeat(1024 * 1024));
    let long_value = replace(
        "FLANNEL_SUBNET",
        &format!("FLANNEL_SUBNET={}", "1".repeat(100_000)),
    );
    vec![
        case(
            "empty file",
            "",
            &[
                "subnet.env is missing FLANNEL_NETWORK (or FLANNEL_IPV6_NETWORK)",
                "FLANNEL_SUBNET",
                "FLANNEL_MTU",
                "FLANNEL_IPMASQ",
                "check that weftd runs",
            ],
        ),
        case(
            "only comments",
            "# nothing\n\n   # here\n",
            &["subnet.env is missing FLANNEL_NETWORK"],
        ),
        case(
            "no FLANNEL_MTU",
            replace("FLANNEL_MTU", "# FLANNEL_MTU gone"),
            &["subnet.env is missing FLANNEL_MTU"],
        ),
        case(
            "FLANNEL_SUBNET without a prefix",
            replace("FLANNEL_SUBNET", "FLANNEL_SUBNET=10.244.1.1"),
            &[
                "line 2: FLANNEL_SUBNET=\"10.244.1.1\"",
                "expected an IPv4 CIDR such as 10.244.1.1/24",
                "restart weftd",
            ],
        ),
        case(
            "FLANNEL_SUBNET /33",
            replace("FLANNEL_SUBNET", "FLANNEL_SUBNET=10.244.1.1/33"),
            &["line 2: FLANNEL_SUBNET", "expected an IPv4 CIDR"],
        ),
        case(
            "FLANNEL_SUBNET IPv6",
            replace("FLANNEL_SUBNET", "FLANNEL_SUBNET=fc00::1/64"),
            &["FLANNEL_SUBNET=\"fc00::1/64\"", "IPv4 CIDR"],
        ),
        case(
            "FLANNEL_SUBNET 100 KB long",
            long_value,
            &[
                "line 2: FLANNEL_SUBNET",
                "expected an IPv4 CIDR",
                "restart weftd",
            ],
        ),
        case(
            "FLANNEL_NETWORK list",
            replace(
                "FLANNEL_NETWORK",
                "FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16",
            ),
            &["line 1: FLANNEL_NETWORK", "exactly one IPv4 CIDR"],
        ),
        case(
            "FLANNEL_IPV6_NETWORK IPv4",
            format!("{OK}FLANNEL_IPV6_NETWORK=10.0.0.0/8\n"),
            &[
                "line 5: FLANNEL_IPV6_NETWORK",
                "expected an IPv6 CIDR such as fc00::/48",
            ],
        ),
        case(
            "FLANNEL_MTU a word",
            replace("FLANNEL_MTU", "FLANNEL_MTU=big"),
            &["line 3: FLANNEL_MTU=\"big\"", "whole number such as 1450"],
        ),
        case(
            "FLANNEL_MTU negative",
            replace("FLANNEL_MTU", "FLANNEL_MTU=-1450"),
            &["FLANNEL_MTU=\"-1450\"", "whole number"],
        ),
        case(
            "FLANNEL_MTU beyond u32",
            replace("FLANNEL_MTU", "FLANNEL_MTU=99999999999"),
            &["FLANNEL_MTU=\"99999999999\"", "whole number"],
        ),
        case(
            "FLANNEL_MTU with a NUL",
            replace("FLANNEL_MTU", "FLANNEL_MTU=14\u{0}50"),
            &["line 3: FLANNEL_MTU", "whole number"],
        ),
        case(
            "FLANNEL_IPMASQ yes",
            replace("FLANNEL_IPMASQ", "FLANNEL_IPMASQ=yes"),
            &["line 4: FLANNEL_IPMASQ=\"yes\"", "expected true or false"],
        ),
        case(
            "unterminated quote",
            replace("FLANNEL_MTU", "FLANNEL_MTU=\"1450"),
            &["line 3: FLANNEL_MTU", "whole number"],
        ),
        case(
            "line without =",
            format!("{OK}just some words\n"),
            &[
                "line 5: \"just some words\" is not KEY=VALUE",
                "restart weftd",
            ],
        ),
        case(
            "empty key",
            format!("=1\n{OK}"),
            &["line 1: \"=1\" is not KEY=VALUE"],
        ),
        case(
            "key with a space",
            format!("{OK}FLANNEL MTU=1\n"),
            &["line 5", "is not KEY=VALUE"],
        ),
        case(
            "control characters quote long",
            replace(
                "FLANNEL_SUBNET",
                &format!("FLANNEL_SUBNET={}", "\u{b}".repeat(2000)),
            ),
            &["line 2: FLANNEL_SUBNET", "expected an IPv4 CIDR"],
        ),
        case(
            "1 MiB garbage line",
            long_line,
            &["line 5", "is not KEY=VALUE", "restart weftd"],
        ),
    ]
}

#[test]
fn subnet_env_corpus() {
    let cases = subnet_env_cases();
    run_table("subnet.env", &cases, |b| {
        err_text(SubnetEnv::parse(text(b)))
    });
}

// ---- subnet keys ----

fn subnet_key_cases() -> Vec<Case> {
    const FORM: &str = "expected A.B.C.D-LEN such as \"10.244.1.0-24\"";
    let long = format!("10.244.1.0-{}", "2".repeat(100_000));
    vec![
        case(
            "empty",
            "",
            &["subnet key \"\" is malformed", "no '-'", FORM],
        ),
        case(
            "no prefix length",
            "10.244.1.0",
            &["\"10.244.1.0\" is malformed", "no '-'", FORM],
        ),
        case(
            "empty prefix length",
            "10.244.1.0-",
            &["prefix length \"\" is not a number from 0 to 32"],
        ),
        case(
            "prefix length 33",
            "10.244.1.0-33",
            &["prefix length \"33\" is not a number from 0 to 32"],
        ),
        case(
            "signed prefix length",
            "10.244.1.0-+24",
            &["prefix length \"+24\""],
        ),
        case(
            "padded prefix length",
            "10.244.1.0-0024",
            &["prefix length \"0024\""],
        ),
        case(
            "full-width digits",
            "10.244.1.0-２４",
            &["is malformed", "prefix length"],
        ),
        case(
            "CIDR slash",
            "10.244.1.0/24",
            &["\"10.244.1.0/24\" is malformed", FORM],
        ),
        case(
            "leading junk",
            "x10.244.1.0-24",
            &["\"x10.244.1.0\" is not an IPv4 address"],
        ),
        case("a path", "a/10.244.1.0-24", &["is not an IPv4 address"]),
        case(
            "double dash",
            "10.244.1.0--24",
            &["\"10.244.1.0-\" is not an IPv4 address"],
        ),
        case(
            "host bits",
            "10.244.1.5-24",
            &[
                "subnet key \"10.244.1.5-24\" has host bits set",
                "10.244.1.5/24 is not a network address",
                "\"10.244.1.0-24\"",
            ],
        ),
        case(
            "IPv6 part empty",
            "10.244.1.0-24&",
            &["no '-' between the IPv6 address and its prefix length"],
        ),
        case(
            "IPv6 part IPv4",
            "10.244.1.0-24&10.0.0.0-8",
            &["\"10.0.0.0\" is not an IPv6 address"],
        ),
        case(
            "IPv6 prefix 129",
            "10.244.1.0-24&fc00::-129",
            &["IPv6 prefix length \"129\""],
        ),
        case(
            "IPv6 host bits",
            "10.244.1.0-24&fc00:0:0:1::5-64",
            &["has host bits set", "\"10.244.1.0-24&fc00:0:0:1::-64\""],
        ),
        case("100 KB key", long, &["is malformed", "prefix length", FORM]),
    ]
}

#[test]
fn subnet_key_corpus() {
    let cases = subnet_key_cases();
    run_table("subnet key", &cases, |b| {
        err_text(parse_subnet_key_dual(text(b)))
    });
}
