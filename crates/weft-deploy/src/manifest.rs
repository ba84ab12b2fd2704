//! `weft manifest`: the Kubernetes objects that run weftd on every node, printed for
//! `kubectl apply -f -`.
//!
//! Every flag is checked first, into a typed [`Spec`]; the network config goes through the
//! same builder and parser as `weft network init` (and weftd), so the manifest cannot carry a
//! config weftd would refuse. Rendering is pure and deterministic (golden-tested).

mod render;
mod yaml;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::error::{Error, Result, bail};
use clap::{Args, ValueEnum};
use weft_core::config::NetworkConfig;

use crate::netconf::{self, BackendFlag, InitSpec};
use crate::output::Outcome;

use self::yaml::{Map, Node};

/// The image repository of the default `--image` (tagged with this crate's version): what
/// `scripts/image.sh` builds. Load it on every node (`ctr -n k8s.io images import`), or push it
/// to a registry and pass `--image`.
pub const IMAGE_REPOSITORY: &str = "localhost/weft";
/// Kubernetes minor versions the manifest is rendered and validated for (1.29 to 1.35).
pub const KUBE_MINORS: std::ops::RangeInclusive<u32> = 29..=35;

fn default_image() -> String {
    format!("{IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// Output format of `weft manifest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ManifestFormat {
    /// Multi-document YAML with comments.
    #[default]
    Yaml,
    /// One JSON `List` object holding the same objects.
    Json,
}

/// `weft manifest` flags.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example: weft manifest --etcd-endpoints http://10.0.0.5:2379 | kubectl apply -f -\n\
    Then write the network config to etcd with `weft network init` (same --network etc.)."
)]
pub struct ManifestArgs {
    /// Comma-separated etcd endpoints for weftd's leases and config (http:// or https://).
    #[arg(long, value_name = "URLS")]
    pub etcd_endpoints: String,
    /// Secret in --namespace holding etcd's CA as ca.crt and a client certificate as
    /// tls.crt/tls.key (a kubernetes.io/tls Secret with ca.crt fits); mounted at
    /// /etc/weft/etcd. Needed for https:// endpoints.
    #[arg(long, value_name = "NAME")]
    pub etcd_tls_secret: Option<String>,
    /// Server-verified TLS without a client certificate: the Secret needs only ca.crt.
    #[arg(long, requires = "etcd_tls_secret")]
    pub etcd_ca_only: bool,
    /// Container image holding /usr/local/bin/weft, weftd and weft-cni.
    #[arg(long, default_value_t = default_image())]
    pub image: String,
    /// The cluster pod network (IPv4 CIDR).
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16")]
    pub network: String,
    /// Prefix length of each node's subnet (default: 24, or network prefix + 2 for small networks).
    #[arg(long, value_name = "N")]
    pub subnet_len: Option<u64>,
    /// Backend type: vxlan, or host-gw when every node is on one L2 network (the backends
    /// weftd runs; others are refused).
    #[arg(long, default_value = "vxlan")]
    pub backend: String,
    /// VXLAN network identifier (default 1).
    #[arg(long, value_name = "N")]
    pub vni: Option<u64>,
    /// VXLAN UDP port (default 0 = the kernel's 8472).
    #[arg(long, value_name = "N")]
    pub port: Option<u64>,
    /// Underlay MTU for VXLAN (the device gets MTU - 50; default: the node interface's MTU).
    #[arg(long, value_name = "N")]
    pub mtu: Option<u64>,
    /// VXLAN's DirectRouting: a peer whose PublicIP is on the node's own L2 network is routed
    /// via that IP unencapsulated, the others go through VXLAN (vxlan only).
    #[arg(long)]
    pub direct_routing: bool,
    /// flannel's nftables mode ("EnableNFTables": true in net-conf.json): weftd writes the
    /// table ip flannel-ipv4 instead of iptables chains.
    #[arg(long)]
    pub nftables: bool,
    /// weftd's --iface: the interface (name or IPv4 address) for traffic between nodes;
    /// repeatable, first match wins (default: the interface of the default route).
    #[arg(long, value_name = "NAME|IP")]
    pub iface: Vec<String>,
    /// Kubernetes version to render and validate for (1.29 to 1.35).
    #[arg(long, value_name = "X.Y", default_value = "1.33")]
    pub kubernetes_version: String,
    /// Namespace of the ServiceAccount, ConfigMap and DaemonSet.
    #[arg(long, default_value = "kube-flannel")]
    pub namespace: String,
    /// Add a first init container that removes the AWS VPC CNI's leftovers from each node
    /// (`weft node cleanup-vpc-cni --apply`).
    #[arg(long)]
    pub cleanup_vpc_cni: bool,
    /// Port of weftd's /healthz, /readyz and /metrics (the probes use it).
    #[arg(long, value_name = "PORT", default_value_t = 8081)]
    pub healthz_port: u16,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ManifestFormat::Yaml)]
    pub output: ManifestFormat,
}

/// A Kubernetes minor version of the 1.x line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeVersion {
    pub minor: u32,
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

/// How weftd authenticates to etcd over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The Secret holding ca.crt (and tls.crt/tls.key unless `ca_only`).
    pub secret: String,
    /// Verify the server only; no client certificate.
    pub ca_only: bool,
}

/// Everything the manifest is rendered from, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub image: String,
    pub namespace: String,
    pub kube: KubeVersion,
    /// net-conf.json: the network config, pretty JSON ending in a newline.
    pub net_conf: String,
    /// The `weft network init` command line that writes the same config to etcd.
    pub network_init: Vec<String>,
    /// The backend of net-conf.json.
    pub backend: BackendFlag,
    /// net-conf.json has `"DirectRouting": true`.
    pub direct_routing: bool,
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    pub ifaces: Vec<String>,
    pub healthz_port: u16,
    pub cleanup_vpc_cni: bool,
}

/// Runs `weft manifest`: validates, renders to stdout, warnings and the next step to stderr.
pub fn run(args: &ManifestArgs) -> Result<Outcome> {
    let (spec, warnings) = validate(args)?;
    let mut out = Outcome::default();
    for w in warnings {
        out.note(format!("warning: {w}"));
    }
    if let Ok(config) = NetworkConfig::parse(spec.net_conf.as_bytes()) {
        for n in netconf::backend_notes(&config) {
            out.note(n);
        }
    }
    if render::namespace_is_builtin(&spec.namespace) {
        out.note(format!(
            "namespace {} exists in every cluster: no Namespace object is printed, its labels stay as they are",
            spec.namespace
        ));
    }
    out.stdout = match args.output {
        ManifestFormat::Yaml => render::to_yaml(&spec),
        ManifestFormat::Json => render::to_json(&spec),
    };
    out.note(format!(
        "weftd reads the network config from etcd; write it once with: {}",
        spec.network_init.join(" ")
    ));
    Ok(out)
}

/// Checks every flag and builds the [`Spec`], plus warnings for things that work but are risky.
pub fn validate(args: &ManifestArgs) -> Result<(Spec, Vec<String>)> {
    let mut warnings = Vec::new();
    let kube = parse_kube_version(&args.kubernetes_version)?;
    check_dns_label("--namespace", &args.namespace)?;
    check_image(&args.image)?;
    let endpoints = parse_endpoints(&args.etcd_endpoints, &mut warnings)?;
    let tls = match &args.etcd_tls_secret {
        Some(secret) => {
            check_dns_subdomain("--etcd-tls-secret", secret)?;
            Some(EtcdTls {
                secret: secret.clone(),
                ca_only: args.etcd_ca_only,
            })
        }
        None => None,
    };
    check_tls(&endpoints, tls.as_ref(), &args.namespace, &mut warnings)?;
    for iface in &args.iface {
        check_iface(iface)?;
    }
    if args.healthz_port == 0 {
        bail!(
            "--healthz-port 0 would turn off weftd's health server, but the DaemonSet's liveness and readiness probes need it; pass a free host port, e.g. --healthz-port 8081"
        );
    }
    let (net_conf, config, backend) = net_conf(args)?;
    let network_init = network_init_command(args, &endpoints, tls.as_ref(), &config, backend);
    let spec = Spec {
        image: args.image.clone(),
        namespace: args.namespace.clone(),
        kube,
        net_conf,
        network_init,
        backend,
        direct_routing: args.direct_routing,
        endpoints,
        tls,
        ifaces: args.iface.clone(),
        healthz_port: args.healthz_port,
        cleanup_vpc_cni: args.cleanup_vpc_cni,
    };
    Ok((spec, warnings))
}

/// Accepts `1.33`, `v1.33` and `1.33.2` for 1.29 to 1.35.
fn parse_kube_version(raw: &str) -> Result<KubeVersion> {
    let range = format!("1.{} to 1.{}", KUBE_MINORS.start(), KUBE_MINORS.end());
    let s = raw.trim();
    let s = s.strip_prefix('v').unwrap_or(s);
    let mut parts = s.split('.');
    let (major, minor, patch) = (parts.next(), parts.next(), parts.next());
    let number = |p: Option<&str>| {
        p.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
    };
    let minor = match (number(major), number(minor), patch, parts.next()) {
        (Some(1), Some(minor), None, None) => minor,
        (Some(1), Some(minor), Some(p), None) if number(Some(p)).is_some() => minor,
        _ => bail!(
            "--kubernetes-version {raw:?} is not a Kubernetes version; pass MAJOR.MINOR from {range}, e.g. --kubernetes-version 1.33 (see `kubectl version`)"
        ),
    };
    if !KUBE_MINORS.contains(&minor) {
        bail!(
            "--kubernetes-version {raw:?} is not supported: weft manifest renders for Kubernetes {range}; pass the cluster's version within that range, e.g. --kubernetes-version 1.33"
        );
    }
    Ok(KubeVersion { minor })
}

/// A DNS-1123 label (namespace names).
fn check_dns_label(flag: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if !ok {
        bail!(
            "{flag} {s:?} is not a valid Kubernetes name: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit, e.g. {flag} kube-flannel"
        );
    }
    Ok(())
}

/// A DNS-1123 subdomain (Secret names).
fn check_dns_subdomain(flag: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !ok {
        bail!(
            "{flag} {s:?} is not a valid Secret name: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, e.g. {flag} weft-etcd-tls"
        );
    }
    Ok(())
}

fn check_image(image: &str) -> Result<()> {
    if image.is_empty()
        || image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
    {
        bail!(
            "--image {image:?} is not an image reference; pass e.g. --image {}",
            default_image()
        );
    }
    Ok(())
}

/// Splits and checks `--etcd-endpoints` (weft-store's parser, weftd's own), stricter than
/// weftd where a rendered manifest should be: no path, and a warning when no port is named.
fn parse_endpoints(raw: &str, warnings: &mut Vec<String>) -> Result<Vec<String>> {
    let endpoints = weft_store::parse_endpoint_list(raw)?;
    let mut checked = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        if !e.path().is_empty() {
            bail!(
                "--etcd-endpoints entry {:?} is not scheme://host:port (no path); pass e.g. --etcd-endpoints http://10.0.0.5:2379",
                e.url()
            );
        }
        if e.port().is_none() {
            warnings.push(format!(
                "--etcd-endpoints entry {:?} names no port, so weftd dials port {}; etcd's client port is usually 2379",
                e.url(),
                e.port_or_default()
            ));
        }
        checked.push(e.url().to_string());
    }
    Ok(checked)
}

/// weftd takes TLS files only with https endpoints, and has no built-in trust roots, so
/// https needs the CA from the Secret.
fn check_tls(
    endpoints: &[String],
    tls: Option<&EtcdTls>,
    namespace: &str,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let plain: Vec<&str> = endpoints
        .iter()
        .filter(|e| e.starts_with("http://"))
        .map(String::as_str)
        .collect();
    match tls {
        Some(tls) => {
            if let Some(e) = plain.first() {
                bail!(
                    "--etcd-tls-secret {} needs https:// endpoints, but --etcd-endpoints entry {e:?} is plain http (weftd refuses TLS files with http endpoints); use https:// for every endpoint, or drop --etcd-tls-secret",
                    tls.secret
                );
            }
        }
        None => {
            if let Some(e) = endpoints.iter().find(|e| e.starts_with("https://")) {
                bail!(
                    "--etcd-endpoints entry {e:?} is https, but weftd has no built-in trust roots and needs etcd's CA: pass --etcd-tls-secret NAME, a Secret in the namespace with ca.crt (plus tls.crt and tls.key for client-certificate auth, or add --etcd-ca-only when etcd does not ask for one), e.g. kubectl -n {namespace} create secret generic weft-etcd-tls --from-file=ca.crt --from-file=tls.crt --from-file=tls.key"
                );
            }
            warnings.push(format!(
                "--etcd-endpoints {} is plain http: the leases and the network config cross the network unencrypted and etcd accepts anyone who reaches it; prefer https:// endpoints with --etcd-tls-secret",
                plain.join(",")
            ));
        }
    }
    Ok(())
}

/// weftd's `--iface`: an IPv4 address or a Linux interface name.
fn check_iface(iface: &str) -> Result<()> {
    if iface.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if iface.parse::<IpAddr>().is_ok() {
        bail!(
            "--iface {iface:?} is an IPv6 address, but weftd carries traffic between nodes over IPv4; pass the interface name or its IPv4 address, e.g. --iface eth0"
        );
    }
    let ok = !iface.is_empty()
        && iface.len() <= 15
        && iface != "."
        && iface != ".."
        && !iface
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control() || c == '"');
    if !ok {
        bail!(
            "--iface {iface:?} is neither an IPv4 address nor an interface name (at most 15 characters, no '/', ':' or spaces); pass e.g. --iface eth0 or --iface 10.0.1.23"
        );
    }
    Ok(())
}

/// Builds net-conf.json from the flags with `weft network init`'s builder (validated by the
/// parser weftd uses), pretty-printed.
fn net_conf(args: &ManifestArgs) -> Result<(String, NetworkConfig, BackendFlag)> {
    let kind = netconf::check_backend_flag(&args.backend).map_err(Error::Input)?;
    let candidate = netconf::build_config(&InitSpec {
        network: args.network.clone(),
        subnet_len: args.subnet_len,
        subnet_min: None,
        subnet_max: None,
        backend: kind.type_name().into(),
        vni: args.vni,
        port: args.port,
        mtu: args.mtu,
        direct_routing: args.direct_routing,
        nftables: args.nftables,
    })
    .map_err(Error::Input)?;
    let config = candidate.config;
    if let Some(refusal) = netconf::weftd_refusals(&config).first() {
        bail!("the network config from --network and the backend flags would not run: {refusal}");
    }
    let Some(network) = config.network else {
        bail!("internal error: the network config has no Network");
    };
    let mut backend = Map::new().with("Type", kind.type_name());
    if let Some(vxlan) = config.vxlan() {
        if args.vni.is_some() {
            backend.push("VNI", i64::from(vxlan.vni));
        }
        if args.port.is_some() {
            backend.push("Port", i64::from(vxlan.port));
        }
        if let Some(mtu) = vxlan.mtu.filter(|_| args.mtu.is_some()) {
            backend.push("MTU", i64::from(mtu));
        }
        if vxlan.direct_routing {
            backend.push("DirectRouting", true);
        }
    }
    let mut doc = Map::new().with("Network", network.to_string());
    if args.subnet_len.is_some() {
        doc.push("SubnetLen", i64::from(config.subnet_len));
    }
    if config.enable_nftables {
        doc.push("EnableNFTables", true);
    }
    doc.push("Backend", backend);
    let mut text = serde_json::to_string_pretty(&Node::Map(doc)).map_err(|e| Error::Serialize {
        what: "net-conf.json",
        message: e.to_string(),
    })?;
    text.push('\n');
    // The pretty file must mean exactly what `weft network init` would store.
    match NetworkConfig::parse(text.as_bytes()) {
        Ok(parsed) if parsed == config => Ok((text, config, kind)),
        Ok(_) => {
            bail!("internal error: net-conf.json differs from the config built from the flags")
        }
        Err(e) => bail!("internal error: net-conf.json does not parse: {e}"),
    }
}

/// The `weft network init` command that stores the same config.
fn network_init_command(
    args: &ManifestArgs,
    endpoints: &[String],
    tls: Option<&EtcdTls>,
    config: &NetworkConfig,
    backend: BackendFlag,
) -> Vec<String> {
    let mut cmd: Vec<String> = ["weft", "network", "init", "--etcd-endpoints"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cmd.push(endpoints.join(","));
    if let Some(tls) = tls {
        cmd.extend(["--etcd-cafile".into(), render::CA_KEY.into()]);
        if !tls.ca_only {
            cmd.extend([
                "--etcd-certfile".into(),
                render::CERT_KEY.into(),
                "--etcd-keyfile".into(),
                render::KEY_KEY.into(),
            ]);
        }
    }
    if let Some(network) = config.network {
        cmd.extend(["--network".into(), network.to_string()]);
    }
    if backend != BackendFlag::Vxlan {
        cmd.extend(["--backend".into(), backend.type_name().into()]);
    }
    for (flag, value) in [
        ("--subnet-len", args.subnet_len),
        ("--vni", args.vni),
        ("--port", args.port),
        ("--mtu", args.mtu),
    ] {
        if let Some(v) = value {
            cmd.extend([flag.to_string(), v.to_string()]);
        }
    }
    if args.direct_routing {
        cmd.push("--direct-routing".into());
    }
    if args.nftables {
        cmd.push("--nftables".into());
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        m: ManifestArgs,
    }

    fn args(extra: &[&str]) -> ManifestArgs {
        let mut argv = vec!["weft", "--etcd-endpoints", "http://10.0.0.5:2379"];
        argv.extend_from_slice(extra);
        T::try_parse_from(argv).unwrap().m
    }

    fn https(extra: &[&str]) -> ManifestArgs {
        let mut argv = vec!["weft", "--etcd-endpoints", "https://10.0.0.5:2379"];
        argv.extend_from_slice(extra);
        T::try_parse_from(argv).unwrap().m
    }

    fn err(a: &ManifestArgs) -> String {
        format!("{:#}", validate(a).unwrap_err())
    }

    /// Each bad flag: the error names the flag and says what to pass instead.
    #[test]
    fn every_flag_error_names_the_flag_and_the_fix() {
        let cases: Vec<(ManifestArgs, &str, &str)> = vec![
            (
                args(&["--network", "10.244.0.0/33"]),
                "--network",
                "10.244.0.0/16",
            ),
            (args(&["--network", "banana"]), "--network", "10.244.0.0/16"),
            (
                args(&["--network", "10.244.1.0/16"]),
                "--network",
                "--network 10.244.0.0/16",
            ),
            (args(&["--subnet-len", "31"]), "--subnet-len", "SubnetLen"),
            (
                args(&["--backend", "udp"]),
                "--backend",
                "pass --backend vxlan or --backend host-gw",
            ),
            (
                args(&["--backend", "wireguard"]),
                "--backend",
                "neither this machine's kernel nor weft has WireGuard support",
            ),
            (
                args(&["--backend", "host-gw", "--vni", "2"]),
                "--vni",
                "drop --vni, or pass --backend vxlan",
            ),
            (
                args(&["--backend", "host-gw", "--direct-routing"]),
                "--direct-routing",
                "drop --direct-routing, or pass --backend vxlan",
            ),
            (args(&["--vni", "16777216"]), "--vni", "at most 16777215"),
            (args(&["--port", "70000"]), "--port", "4789"),
            (args(&["--mtu", "100"]), "--mtu", "1500"),
            (
                args(&["--kubernetes-version", "1.28"]),
                "--kubernetes-version",
                "1.29 to 1.35",
            ),
            (
                args(&["--kubernetes-version", "1.36.0"]),
                "--kubernetes-version",
                "--kubernetes-version 1.33",
            ),
            (
                args(&["--kubernetes-version", "latest"]),
                "--kubernetes-version",
                "--kubernetes-version 1.33",
            ),
            (
                args(&["--kubernetes-version", "2.1"]),
                "--kubernetes-version",
                "MAJOR.MINOR",
            ),
            (
                args(&["--namespace", "Kube_Flannel"]),
                "--namespace",
                "--namespace kube-flannel",
            ),
            (
                args(&["--image", "bad image"]),
                "--image",
                "--image localhost/weft:",
            ),
            (args(&["--iface", "fe80::1"]), "--iface", "--iface eth0"),
            (
                args(&["--iface", "a-very-long-interface-name"]),
                "--iface",
                "--iface eth0",
            ),
            (
                args(&["--healthz-port", "0"]),
                "--healthz-port",
                "--healthz-port 8081",
            ),
            (
                args(&["--etcd-tls-secret", "s"]),
                "--etcd-tls-secret",
                "https://",
            ),
            (
                args(&["--etcd-tls-secret", "Bad_Name"]),
                "--etcd-tls-secret",
                "weft-etcd-tls",
            ),
            (https(&[]), "--etcd-tls-secret", "--etcd-ca-only"),
        ];
        for (a, flag, fix) in cases {
            let e = err(&a);
            assert!(e.contains(flag), "error does not name {flag}: {e}");
            assert!(
                e.contains(fix),
                "error for {flag} does not say {fix:?}: {e}"
            );
        }
    }

    #[test]
    fn bad_endpoints_name_the_flag_and_the_fix() {
        for (raw, fix) in [
            ("10.0.0.5:2379", "http://10.0.0.5:2379"),
            ("tcp://10.0.0.5:2379", "http://10.0.0.5:2379"),
            (" , ", "http://10.0.0.5:2379"),
            ("http://", "http://10.0.0.5:2379"),
            ("http://a b:2379", "http://10.0.0.5:2379"),
            ("http://etcd:2379/v3", "http://10.0.0.5:2379"),
            ("http://a:2379,https://b:2379", "https://"),
        ] {
            let a = T::try_parse_from(["weft", "--etcd-endpoints", raw])
                .unwrap()
                .m;
            let e = err(&a);
            assert!(e.contains("--etcd-endpoints"), "{raw}: {e}");
            assert!(e.contains(fix), "{raw}: {e}");
        }
    }

    #[test]
    fn clap_refuses_what_its_types_cannot_hold() {
        for argv in [
            vec!["weft"],
            vec![
                "weft",
                "--etcd-endpoints",
                "http://a:2379",
                "--etcd-ca-only",
            ],
            vec![
                "weft",
                "--etcd-endpoints",
                "http://a:2379",
                "--healthz-port",
                "65536",
            ],
            vec!["weft", "--etcd-endpoints", "http://a:2379", "--vni", "-1"],
            vec![
                "weft",
                "--etcd-endpoints",
                "http://a:2379",
                "--output",
                "text",
            ],
        ] {
            assert!(T::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn kubernetes_versions_in_range_parse() {
        for (raw, minor) in [("1.29", 29), ("v1.33", 33), ("1.35.2", 35), (" 1.30 ", 30)] {
            assert_eq!(parse_kube_version(raw).unwrap().minor, minor, "{raw}");
        }
        for raw in ["1", "1.", "1.33.", "1.33.x", "1.33.1.1", "v", "", "1.3a"] {
            assert!(parse_kube_version(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn plain_http_warns_and_https_with_a_secret_does_not() {
        let (_, w) = validate(&args(&[])).unwrap();
        assert!(w.iter().any(|w| w.contains("plain http")), "{w:?}");
        let (spec, w) =
            validate(&https(&["--etcd-tls-secret", "etcd-tls", "--etcd-ca-only"])).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            spec.tls,
            Some(EtcdTls {
                secret: "etcd-tls".into(),
                ca_only: true
            })
        );
        let args = render::weftd_args(&spec);
        assert!(
            args.contains(&"--etcd-cafile=/etc/weft/etcd/ca.crt".to_string()),
            "{args:?}"
        );
        assert!(
            !args.iter().any(|a| a.starts_with("--etcd-certfile")),
            "{args:?}"
        );
        let (_, w) = validate(
            &T::try_parse_from(["weft", "--etcd-endpoints", "http://etcd"])
                .unwrap()
                .m,
        )
        .unwrap();
        assert!(w.iter().any(|w| w.contains("2379")), "{w:?}");
    }

    /// net-conf.json reads back, through weftd's parser, as the config `weft network init`
    /// builds from the same flags, and the init command shown rebuilds it too.
    #[test]
    fn net_conf_round_trips_through_the_parser() {
        for extra in [
            vec![],
            vec![
                "--network",
                "10.50.0.0/16",
                "--subnet-len",
                "25",
                "--vni",
                "4096",
                "--port",
                "4789",
                "--mtu",
                "9001",
            ],
            vec![
                "--network",
                "172.16.0.0/12",
                "--backend",
                "VXLAN",
                "--port",
                "0",
            ],
            vec!["--direct-routing", "--vni", "3"],
            vec!["--backend", "host-gw", "--subnet-len", "26"],
            vec!["--nftables", "--direct-routing"],
        ] {
            let a = args(&extra);
            let (spec, _) = validate(&a).unwrap();
            let parsed = NetworkConfig::parse(spec.net_conf.as_bytes()).unwrap();
            let built = netconf::build_config(&InitSpec {
                network: a.network.clone(),
                subnet_len: a.subnet_len,
                subnet_min: None,
                subnet_max: None,
                backend: a.backend.clone(),
                vni: a.vni,
                port: a.port,
                mtu: a.mtu,
                direct_routing: a.direct_routing,
                nftables: a.nftables,
            })
            .unwrap();
            assert_eq!(parsed, built.config, "{extra:?}");
            assert!(spec.net_conf.ends_with("}\n"));
            // That the command parses as `weft network init` is the weft CLI's test
            // (cli.rs: manifest_network_init_command_parses).
            assert_eq!(spec.network_init[..3], ["weft", "network", "init"]);
        }
        let (spec, _) = validate(&args(&["--mtu", "9001", "--vni", "7"])).unwrap();
        assert_eq!(
            spec.net_conf,
            "{\n  \"Network\": \"10.244.0.0/16\",\n  \"Backend\": {\n    \"Type\": \"vxlan\",\n    \"VNI\": 7,\n    \"MTU\": 9001\n  }\n}\n"
        );
    }

    /// host-gw and DirectRouting reach net-conf.json, the `weft network init` command, the
    /// header and the notes; the default vxlan manifest names neither.
    #[test]
    fn host_gw_and_direct_routing_are_rendered() {
        let (spec, _) = validate(&args(&["--backend", "Host-GW"])).unwrap();
        assert_eq!(
            spec.net_conf,
            "{\n  \"Network\": \"10.244.0.0/16\",\n  \"Backend\": {\n    \"Type\": \"host-gw\"\n  }\n}\n"
        );
        assert_eq!(spec.backend, BackendFlag::HostGw);
        let tail = &spec.network_init[spec.network_init.len() - 4..];
        assert_eq!(tail, ["--network", "10.244.0.0/16", "--backend", "host-gw"]);
        let yaml = render::to_yaml(&spec);
        assert!(
            yaml.starts_with("# weft: a flanneld-compatible pod network (weftd, subnet leases in etcd v3, host-gw routes) for Kubernetes 1.33."),
            "{}",
            &yaml[..200]
        );
        assert!(yaml.contains("\"Type\": \"host-gw\""));
        let out = run(&args(&["--backend", "host-gw"])).unwrap();
        assert!(
            out.stderr
                .lines()
                .any(|n| n.starts_with("weft: host-gw routes each peer's subnet")
                    && n.contains("--no-source-dest-check")),
            "{}",
            out.stderr
        );

        let (spec, _) = validate(&args(&["--direct-routing", "--mtu", "9001"])).unwrap();
        assert_eq!(
            spec.net_conf,
            "{\n  \"Network\": \"10.244.0.0/16\",\n  \"Backend\": {\n    \"Type\": \"vxlan\",\n    \"MTU\": 9001,\n    \"DirectRouting\": true\n  }\n}\n"
        );
        assert_eq!(
            spec.network_init[spec.network_init.len() - 3..],
            ["--mtu", "9001", "--direct-routing"]
        );
        assert!(render::to_yaml(&spec).contains("etcd v3, VXLAN with DirectRouting) for"));
        let out = run(&args(&["--direct-routing"])).unwrap();
        assert!(
            out.stderr
                .lines()
                .any(|n| n.starts_with("weft: DirectRouting routes a peer")),
            "{}",
            out.stderr
        );

        let (spec, _) = validate(&args(&["--nftables"])).unwrap();
        assert_eq!(
            spec.net_conf,
            "{\n  \"Network\": \"10.244.0.0/16\",\n  \"EnableNFTables\": true,\n  \"Backend\": {\n    \"Type\": \"vxlan\"\n  }\n}\n"
        );
        assert_eq!(
            spec.network_init.last().map(String::as_str),
            Some("--nftables")
        );

        let (spec, _) = validate(&args(&[])).unwrap();
        assert!(
            !spec
                .network_init
                .iter()
                .any(|a| a == "--backend" || a == "--direct-routing" || a == "--nftables")
        );
        assert!(!spec.net_conf.contains("DirectRouting"));
        assert!(!spec.net_conf.contains("EnableNFTables"));
        let out = run(&args(&[])).unwrap();
        assert!(!out.stderr.contains("unencapsulated"), "{}", out.stderr);
    }

    #[test]
    fn config_map_matches_what_install_cni_writes() {
        let conf = render::cni_conf();
        let v: serde_json::Value = serde_json::from_str(&conf).unwrap();
        assert_eq!(v["name"], "cbr0");
        assert_eq!(v["plugins"][0]["type"], "flannel");
        assert_eq!(v["plugins"][0]["delegate"]["hairpinMode"], true);
        assert_eq!(v["plugins"][0]["delegate"]["isDefaultGateway"], true);
        assert_eq!(v["plugins"][1]["type"], "portmap");
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn builtin_namespaces_are_not_relabelled() {
        let (spec, _) = validate(&args(&["--namespace", "kube-system"])).unwrap();
        let yaml = render::to_yaml(&spec);
        assert!(!yaml.contains("kind: Namespace"), "{yaml}");
        assert!(yaml.contains("namespace: kube-system"), "{yaml}");
        let (spec, _) = validate(&args(&["--namespace", "weft"])).unwrap();
        assert!(render::to_yaml(&spec).contains("kind: Namespace"));
    }

    #[test]
    fn json_is_a_list_of_the_same_objects() {
        let (spec, _) = validate(&args(&["--cleanup-vpc-cni"])).unwrap();
        let v: serde_json::Value = serde_json::from_str(&render::to_json(&spec)).unwrap();
        assert_eq!(v["kind"], "List");
        let kinds: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"]
        );
        let pod = &v["items"][3]["spec"]["template"]["spec"];
        assert_eq!(pod["initContainers"][0]["name"], "cleanup-vpc-cni");
        assert_eq!(pod["initContainers"][1]["name"], "install-cni");
        assert_eq!(
            v["items"][2]["data"]["net-conf.json"],
            serde_json::Value::String(spec.net_conf.clone())
        );
    }
}
