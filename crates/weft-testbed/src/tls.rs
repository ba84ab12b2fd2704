//! etcd over TLS in the testbed, and etcd clusters started from explicit command lines.
//!
//! [`Testbed::new`] runs one plain-HTTP etcd. [`Testbed::new_with_etcd`] takes an
//! [`EtcdSetup`] instead:
//!
//! - [`EtcdSetup::Tls`]: one member on `https://10.250.0.2:2379` (and `https://127.0.0.1:2379`
//!   inside `<id>-etcd`), with a CA, a server cert (SANs 10.250.0.2, 127.0.0.1, localhost) and
//!   a client cert generated with weft's etcd PKI into `<bed dir>/tls/` ([`EtcdTlsFiles`]);
//!   `--client-cert-auth` when [`EtcdTls::client_cert_auth`] is set. [`Testbed::etcd_ca`]
//!   issues more certs from the same CA (expired ones, for instance).
//! - [`EtcdSetup::Members`]: any number of etcd processes, each started with the exact
//!   arguments given (e.g. the flags of a generated systemd unit), or a plain-HTTP cluster
//!   from [`EtcdMembers::plain`]. The member at 10.250.0.2 runs in `<id>-etcd`; every other
//!   member gets a namespace of its own, `<id>-etcd<k>`, whose `eth0` (its address, use
//!   10.250.0.3..=10.250.0.254, which are never handed to nodes) is a veth to switch port
//!   `etcd<k>`. A member without `--data-dir` keeps its data in `<bed dir>/etcd-<name>.data`,
//!   and each member logs to `<bed dir>/etcd-<name>.log`.
//!
//! In every mode [`Testbed::etcd_endpoint`] gives the client URL(s) (comma-separated for
//! several members, as `--etcd-endpoints` takes them), and [`Testbed::etcdctl`] passes
//! `--endpoints` and, with TLS, `--cacert/--cert/--key` by itself (for members: the ones
//! running and not partitioned, from the switch namespace).
//! [`Testbed::restart_etcd_with`] switches a running bed to another setup (the data dir of
//! the single-member modes is kept, so switching between plain and TLS keeps the keys).
//!
//! Members can be controlled one by one: [`Testbed::etcd_leader`] and
//! [`Testbed::etcd_member_status`] ask each member what it knows (`etcdctl endpoint status`),
//! [`Testbed::kill_etcd_member`] SIGKILLs one by pid, [`Testbed::start_etcd_member`] starts it
//! again on the same data dir (it rejoins as the same member), and
//! [`Testbed::partition_etcd_member`] sets the member's switch port down: its `eth0` loses
//! carrier, so it can reach neither its peers nor any client, and nobody reaches it, while
//! its process runs on ([`Testbed::heal_etcd_member`] sets the port up again). One namespace
//! per member is what makes this a real partition: members sharing a namespace talk to each
//! other over `lo`, where neither a link going down nor an iptables rule on one member's
//! address stops them (a connection between two local addresses may even use the other
//! member's address as its source).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tracing::debug;
use weft_deploy::etcd::pki;

use crate::{
    ETCD_CLIENT_PORT, ETCD_HEALTH_TIMEOUT, ETCD_IP, Pid, Testbed, TestbedError, UNDERLAY_PREFIX,
    cmd, in_netns, log_tail,
};

/// How a bed runs etcd (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EtcdSetup {
    /// One member over plain HTTP: what [`Testbed::new`] runs.
    #[default]
    Plain,
    /// One member over HTTPS with generated certs.
    Tls(EtcdTls),
    /// Members started from explicit command lines.
    Members(EtcdMembers),
}

/// Options of [`EtcdSetup::Tls`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// Start etcd with `--client-cert-auth --trusted-ca-file <ca>`: clients need a cert
    /// signed by the bed's CA.
    pub client_cert_auth: bool,
    /// More etcd flags, appended as given.
    pub extra_args: Vec<String>,
}

/// One etcd process of [`EtcdSetup::Members`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    /// Member name; only used for the log file name and messages.
    pub name: String,
    /// The address the member listens on; added to `eth0` of `<id>-etcd` when it is not
    /// [`ETCD_IP`].
    pub ip: Ipv4Addr,
    /// etcd's arguments, exactly as etcd gets them. Must include `--advertise-client-urls`
    /// (the bed's client endpoints are read from it).
    pub args: Vec<String>,
}

/// Options of [`EtcdSetup::Members`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMembers {
    pub members: Vec<EtcdMember>,
    /// What etcdctl (health checks and [`Testbed::etcdctl`]) uses against https members.
    pub client: Option<ClientTlsFiles>,
}

impl EtcdMembers {
    /// A plain-HTTP cluster of `n` members `etcd0`, `etcd1`, ... at 10.250.0.2, 10.250.0.3, ...
    /// (at most 253), with etcd's default timing (100 ms heartbeat, 1 s election timeout, as
    /// in production) and data dirs under the bed dir. `--pre-vote=true` as in etcd 3.5+ (the
    /// release `weft etcd ignition` deploys; 3.4 defaults to false): a member that was cut
    /// off does not force an election with its raised term when it comes back.
    pub fn plain(n: usize) -> EtcdMembers {
        let n = n.min(253);
        let ip = |i: usize| Ipv4Addr::new(10, 250, 0, 2 + i as u8);
        let cluster = (0..n)
            .map(|i| format!("etcd{i}=http://{}:2380", ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        let members = (0..n)
            .map(|i| {
                let (name, ip) = (format!("etcd{i}"), ip(i));
                EtcdMember {
                    args: vec![
                        format!("--name={name}"),
                        format!("--listen-client-urls=http://{ip}:{ETCD_CLIENT_PORT}"),
                        format!("--advertise-client-urls=http://{ip}:{ETCD_CLIENT_PORT}"),
                        format!("--listen-peer-urls=http://{ip}:2380"),
                        format!("--initial-advertise-peer-urls=http://{ip}:2380"),
                        format!("--initial-cluster={cluster}"),
                        "--initial-cluster-state=new".into(),
                        "--initial-cluster-token=weft-testbed".into(),
                        "--pre-vote=true".into(),
                    ],
                    name,
                    ip,
                }
            })
            .collect();
        EtcdMembers {
            members,
            client: None,
        }
    }
}

/// What one member of [`EtcdSetup::Members`] says about itself (`etcdctl endpoint status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMemberStatus {
    pub name: String,
    pub member_id: u64,
    /// The member it follows: its own id when it leads, 0 when it knows no leader.
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    /// The revision of its key-value store.
    pub revision: i64,
}

impl EtcdMemberStatus {
    /// Whether this member says it is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }

    /// Parses one entry of `etcdctl endpoint status -w json`.
    fn parse(name: &str, json: &str) -> Result<EtcdMemberStatus, String> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let st = &v[0]["Status"];
        let num = |x: &serde_json::Value, what: &str| {
            x.as_u64()
                .ok_or_else(|| format!("no {what} in endpoint status {json}"))
        };
        Ok(EtcdMemberStatus {
            name: name.to_string(),
            member_id: num(&st["header"]["member_id"], "header.member_id")?,
            leader: num(&st["leader"], "leader")?,
            raft_term: num(&st["raftTerm"], "raftTerm")?,
            raft_index: num(&st["raftIndex"], "raftIndex")?,
            revision: st["header"]["revision"].as_i64().unwrap_or(0),
        })
    }
}

/// Where one member of [`EtcdSetup::Members`] runs: its namespace and its switch port.
#[derive(Debug, Clone)]
struct MemberNet {
    ip: Ipv4Addr,
    ns: String,
    port: String,
}

/// Client-side TLS files (etcdctl's `--cacert/--cert/--key`, weftd's `--etcd-*file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub ca: PathBuf,
    /// Client cert and key, both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// `--etcd-cafile=... [--etcd-certfile=... --etcd-keyfile=...]`, the flags of weftd and weft.
    pub fn flags(&self) -> Vec<String> {
        let mut v = vec![format!("--etcd-cafile={}", self.ca.display())];
        if let Some(c) = &self.cert {
            v.push(format!("--etcd-certfile={}", c.display()));
        }
        if let Some(k) = &self.key {
            v.push(format!("--etcd-keyfile={}", k.display()));
        }
        v
    }

    fn etcdctl_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["--cacert".into(), self.ca.clone().into()];
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            v.extend([
                "--cert".into(),
                c.clone().into(),
                "--key".into(),
                k.clone().into(),
            ]);
        }
        v
    }
}

/// The files [`EtcdSetup::Tls`] generates under `<bed dir>/tls/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTlsFiles {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client cert (CN `weft`) signed by the CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdTlsFiles {
    /// The CA, client cert and key, as [`ClientTlsFiles`].
    pub fn client(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.ca_cert.clone(),
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
        }
    }
}

/// A throw-away certificate authority (ECDSA P-256): weft's own etcd PKI
/// (`weft_deploy::etcd::pki`, the one certificate builder), under another name.
pub struct TestCa {
    ca: pki::Ca,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// What to put in a certificate issued by [`TestCa::issue`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertSpec {
    pub common_name: String,
    pub ips: Vec<IpAddr>,
    pub dns_names: Vec<String>,
    /// Extended key usage serverAuth.
    pub server: bool,
    /// Extended key usage clientAuth.
    pub client: bool,
    /// Valid only during the year 2000 (an expired cert).
    pub expired: bool,
}

impl CertSpec {
    /// A server cert for `ips` (also usable as a client cert, as etcd's gateway needs).
    pub fn server(common_name: &str, ips: &[IpAddr], dns_names: &[&str]) -> CertSpec {
        CertSpec {
            common_name: common_name.into(),
            ips: ips.to_vec(),
            dns_names: dns_names.iter().map(|s| s.to_string()).collect(),
            server: true,
            client: true,
            expired: false,
        }
    }

    /// A client cert.
    pub fn client(common_name: &str) -> CertSpec {
        CertSpec {
            common_name: common_name.into(),
            client: true,
            ..CertSpec::default()
        }
    }

    /// The same cert, expired (not_before 2000-01-01, not_after 2000-12-31).
    pub fn expired(mut self) -> CertSpec {
        self.expired = true;
        self
    }
}

/// A cert and its private key, PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn pki_err(what: &str) -> impl FnOnce(weft_deploy::Error) -> TestbedError + '_ {
    move |e| TestbedError::Invalid(format!("generating {what}: {e}"))
}

impl TestCa {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<TestCa, TestbedError> {
        let ca = pki::new_ca_named(common_name, pki::Day::today()).map_err(pki_err("a CA"))?;
        Ok(TestCa { ca })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// Writes the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<(), TestbedError> {
        write_file(path, self.ca.cert_pem.as_bytes(), false)
    }

    /// Issues a cert with a fresh key.
    pub fn issue(&self, spec: &CertSpec) -> Result<IssuedCert, TestbedError> {
        let today = pki::Day::today();
        let valid = if spec.expired {
            let day = |m, d| {
                pki::Day::ymd(2000, m, d).ok_or_else(|| TestbedError::Invalid("no such day".into()))
            };
            (day(1, 1)?, day(12, 31)?)
        } else {
            (today.minus_one(), self.ca.leaf_not_after(today))
        };
        let pem = self
            .ca
            .issue_leaf(&pki::Leaf {
                common_name: &spec.common_name,
                ips: &spec.ips,
                dns_names: &spec.dns_names,
                server_auth: spec.server,
                client_auth: spec.client,
                valid,
            })
            .map_err(pki_err("a certificate"))?;
        Ok(IssuedCert {
            cert_pem: pem.cert,
            key_pem: pem.key,
        })
    }
}

impl IssuedCert {
    /// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key` (mode 0600) and returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), TestbedError> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, self.cert_pem.as_bytes(), false)?;
        write_file(&key, self.key_pem.as_bytes(), true)?;
        Ok((cert, key))
    }
}

/// Writes a file (creating its directory); `private` makes it 0600.
pub fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), TestbedError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TestbedError::Io {
            what: format!("creating {}", parent.display()),
            source: e,
        })?;
    }
    std::fs::write(path, data).map_err(|e| TestbedError::Io {
        what: format!("writing {}", path.display()),
        source: e,
    })?;
    let mode = if private { 0o600 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        TestbedError::Io {
            what: format!("chmod {mode:o} {}", path.display()),
            source: e,
        }
    })
}

/// The value of `--flag=v` or `--flag v` (also with one dash) in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let bare = a.trim_start_matches('-');
        if bare.len() + 1 > a.len() {
            continue; // no leading dash
        }
        if let Some(v) = bare.strip_prefix(flag) {
            if let Some(v) = v.strip_prefix('=') {
                return Some(v);
            }
            if v.is_empty() {
                return it.next().map(String::as_str);
            }
        }
    }
    None
}

/// The bed's etcd state beyond the plain default.
#[derive(Debug, Default)]
pub(crate) struct EtcdState {
    pub(crate) setup: EtcdSetup,
    files: Option<EtcdTlsFiles>,
    ca: Option<TestCa>,
    /// The running members, in the order of the setup.
    member_pids: Vec<(String, Pid)>,
    /// Namespaces plumbed for members, by address (kept across restarts).
    member_nets: Vec<MemberNet>,
    /// Names of the members whose switch port is down.
    partitioned: BTreeSet<String>,
}

impl EtcdState {
    pub(crate) fn new(setup: EtcdSetup) -> EtcdState {
        EtcdState {
            setup,
            ..EtcdState::default()
        }
    }

    pub(crate) fn is_members(&self) -> bool {
        matches!(self.setup, EtcdSetup::Members(_))
    }

    /// `http` or `https` for the single-member modes.
    pub(crate) fn scheme(&self) -> &'static str {
        match self.setup {
            EtcdSetup::Plain => "http",
            _ => "https",
        }
    }

    /// The client URLs, comma-separated.
    pub(crate) fn endpoints(&self) -> String {
        match &self.setup {
            EtcdSetup::Members(m) => m
                .members
                .iter()
                .filter_map(|m| flag_value(&m.args, "advertise-client-urls"))
                .collect::<Vec<_>>()
                .join(","),
            _ => format!("{}://{ETCD_IP}:{ETCD_CLIENT_PORT}", self.scheme()),
        }
    }

    fn members(&self) -> &[EtcdMember] {
        match &self.setup {
            EtcdSetup::Members(m) => &m.members,
            _ => &[],
        }
    }

    fn member(&self, name: &str) -> Result<&EtcdMember, TestbedError> {
        self.members()
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.members().iter().map(|m| m.name.as_str()).collect();
                TestbedError::Invalid(format!(
                    "no etcd member {name:?} (members: {names:?}; only EtcdSetup::Members has members)"
                ))
            })
    }

    fn net(&self, ip: Ipv4Addr) -> Option<&MemberNet> {
        self.member_nets.iter().find(|n| n.ip == ip)
    }

    /// TLS flags of etcdctl against the members.
    fn member_client_args(&self) -> Vec<OsString> {
        match &self.setup {
            EtcdSetup::Members(EtcdMembers {
                client: Some(c), ..
            }) => c.etcdctl_args(),
            _ => Vec::new(),
        }
    }

    /// Client URLs of the members that run and are not partitioned (all of them if none is).
    fn reachable_endpoints(&self) -> String {
        let up: Vec<&str> = self
            .members()
            .iter()
            .filter(|m| {
                !self.partitioned.contains(&m.name)
                    && self.member_pids.iter().any(|(n, _)| *n == m.name)
            })
            .filter_map(|m| flag_value(&m.args, "advertise-client-urls"))
            .collect();
        if up.is_empty() {
            self.endpoints()
        } else {
            up.join(",")
        }
    }

    /// What etcdctl needs to reach etcd from where it runs (`<id>-etcd`, or the switch
    /// namespace for members).
    pub(crate) fn etcdctl_args(&self) -> Vec<OsString> {
        match &self.setup {
            EtcdSetup::Plain => vec!["--endpoints".into(), "http://127.0.0.1:2379".into()],
            EtcdSetup::Tls(_) => {
                let mut v = vec!["--endpoints".into(), "https://127.0.0.1:2379".into()];
                if let Some(f) = &self.files {
                    v.extend(f.client().etcdctl_args());
                }
                v
            }
            EtcdSetup::Members(_) => {
                let mut v = vec!["--endpoints".into(), self.reachable_endpoints().into()];
                v.extend(self.member_client_args());
                v
            }
        }
    }

    /// The TLS flags of the single TLS member.
    pub(crate) fn server_tls_args(&self) -> Vec<OsString> {
        let (EtcdSetup::Tls(t), Some(f)) = (&self.setup, &self.files) else {
            return Vec::new();
        };
        let mut v: Vec<OsString> = vec![
            "--cert-file".into(),
            f.server_cert.clone().into(),
            "--key-file".into(),
            f.server_key.clone().into(),
        ];
        if t.client_cert_auth {
            v.extend([
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                f.ca_cert.clone().into(),
            ]);
        }
        v.extend(t.extra_args.iter().map(OsString::from));
        v
    }
}

impl Testbed {
    /// How this bed runs etcd.
    pub fn etcd_setup(&self) -> &EtcdSetup {
        &self.etcd_state.setup
    }

    /// The generated TLS files of [`EtcdSetup::Tls`] (None in the other modes).
    pub fn etcd_tls(&self) -> Option<&EtcdTlsFiles> {
        self.etcd_state.files.as_ref()
    }

    /// The CA that signed the generated TLS files, to issue more certs.
    pub fn etcd_ca(&self) -> Option<&TestCa> {
        self.etcd_state.ca.as_ref()
    }

    /// The TLS flags a client (weftd, weft) needs for this bed's etcd: `--etcd-cafile`,
    /// `--etcd-certfile`, `--etcd-keyfile`; empty for plain HTTP.
    pub fn etcd_client_flags(&self) -> Vec<String> {
        match &self.etcd_state.setup {
            EtcdSetup::Plain => Vec::new(),
            EtcdSetup::Tls(_) => self
                .etcd_state
                .files
                .as_ref()
                .map(|f| f.client().flags())
                .unwrap_or_default(),
            EtcdSetup::Members(m) => m.client.as_ref().map(|c| c.flags()).unwrap_or_default(),
        }
    }

    /// The log of member `name` of [`EtcdSetup::Members`].
    pub fn etcd_member_log(&self, name: &str) -> PathBuf {
        self.dir().join(format!("etcd-{name}.log"))
    }

    /// Pids of the running members of [`EtcdSetup::Members`], by name.
    pub fn etcd_member_pids(&self) -> &[(String, Pid)] {
        &self.etcd_state.member_pids
    }

    /// Stops etcd if it runs, switches to `setup` and starts etcd again, waiting until it is
    /// healthy. TLS files are generated once per bed and kept.
    pub fn restart_etcd_with(&mut self, setup: EtcdSetup) -> Result<(), TestbedError> {
        if self.etcd_pid().is_some() {
            self.stop_etcd()?;
        }
        self.etcd_state.setup = setup;
        self.prepare_etcd_tls()?;
        self.start_etcd()
    }

    /// Generates the CA and certs of [`EtcdSetup::Tls`] into `<dir>/tls/` (once).
    pub(crate) fn prepare_etcd_tls(&mut self) -> Result<(), TestbedError> {
        if !matches!(self.etcd_state.setup, EtcdSetup::Tls(_)) || self.etcd_state.files.is_some() {
            return Ok(());
        }
        let dir = self.dir().join("tls");
        let ca = TestCa::new(&format!("weft-testbed {} etcd CA", self.id()))?;
        let ca_cert = dir.join("ca.crt");
        ca.write_cert(&ca_cert)?;
        let ips = [IpAddr::V4(ETCD_IP), IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let (server_cert, server_key) = ca
            .issue(&CertSpec::server("etcd", &ips, &["localhost"]))?
            .write(&dir, "server")?;
        let (client_cert, client_key) =
            ca.issue(&CertSpec::client("weft"))?.write(&dir, "client")?;
        debug!(id = %self.id(), dir = %dir.display(), "generated etcd TLS files");
        self.etcd_state.files = Some(EtcdTlsFiles {
            dir,
            ca_cert,
            server_cert,
            server_key,
            client_cert,
            client_key,
        });
        self.etcd_state.ca = Some(ca);
        Ok(())
    }

    /// Starts every member of [`EtcdSetup::Members`] that is not running, plumbing its
    /// namespace first.
    pub(crate) fn spawn_etcd_members(&mut self) -> Result<(), TestbedError> {
        let members = self.etcd_state.members().to_vec();
        if members.is_empty() {
            return Err(TestbedError::Invalid(
                "EtcdSetup::Members has no member".into(),
            ));
        }
        if let Some(m) = members
            .iter()
            .find(|m| flag_value(&m.args, "advertise-client-urls").is_none())
        {
            return Err(TestbedError::Invalid(format!(
                "etcd member {}: its args have no --advertise-client-urls",
                m.name
            )));
        }
        self.plumb_members(&members)?;
        for m in &members {
            if !self.member_running(&m.name) {
                self.spawn_member(m)?;
            }
        }
        Ok(())
    }

    /// Gives every member not at [`ETCD_IP`] a namespace `<id>-etcd<k>` (k: the last byte of
    /// its address) wired to switch port `etcd<k>`; the member at [`ETCD_IP`] uses
    /// `<id>-etcd`. Namespaces stay until teardown, so a restarted member finds its own.
    fn plumb_members(&mut self, members: &[EtcdMember]) -> Result<(), TestbedError> {
        let id = self.id().to_string();
        let mtu = self.config().underlay_mtu;
        let mut new: Vec<MemberNet> = Vec::new();
        for m in members {
            if self.etcd_state.net(m.ip).is_some() || new.iter().any(|n| n.ip == m.ip) {
                continue;
            }
            if m.ip == ETCD_IP {
                let ns = self.etcd_ns().to_string();
                self.etcd_state.member_nets.push(MemberNet {
                    ip: m.ip,
                    ns,
                    port: "etcd".into(),
                });
                continue;
            }
            let [a, b, c, k] = m.ip.octets();
            if [a, b, c] != [10, 250, 0] || !(3..=254).contains(&k) {
                return Err(TestbedError::Invalid(format!(
                    "etcd member {} has address {}; use 10.250.0.2 ..= 10.250.0.254 (nodes use 10.250.1.1 and up)",
                    m.name, m.ip
                )));
            }
            new.push(MemberNet {
                ip: m.ip,
                ns: format!("{id}-etcd{k}"),
                port: format!("etcd{k}"),
            });
        }
        if new.is_empty() {
            return Ok(());
        }
        let hint = format!("plumbing etcd member namespaces of testbed {id}");
        // Recorded first: teardown deletes whichever of them exist.
        self.namespaces.extend(new.iter().map(|n| n.ns.clone()));
        self.etcd_state.member_nets.extend(new.iter().cloned());
        let lines: Vec<String> = new.iter().map(|n| format!("netns add {}", n.ns)).collect();
        cmd::start_ip_batch(None, &lines, &hint)?.finish()?;
        let sw_lines: Vec<String> = new
            .iter()
            .flat_map(|n| {
                [
                    format!(
                        "link add {} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {}",
                        n.port, n.ns
                    ),
                    format!("link set {} master br0", n.port),
                    format!("link set {} up", n.port),
                ]
            })
            .collect();
        let sw = self.switch_ns().to_string();
        cmd::start_ip_batch(Some(&sw), &sw_lines, &hint)?.finish()?;
        let started = new
            .iter()
            .map(|n| {
                let lines = [
                    "link set lo up".to_string(),
                    format!("addr add {}/{UNDERLAY_PREFIX} dev eth0", n.ip),
                    "link set eth0 up".to_string(),
                ];
                cmd::start_ip_batch(Some(&n.ns), &lines, &hint)
            })
            .collect();
        let done = cmd::finish_all(started);
        self.write_manifest();
        done
    }

    fn member_pid(&self, name: &str) -> Option<Pid> {
        self.etcd_state
            .member_pids
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
    }

    fn member_running(&mut self, name: &str) -> bool {
        self.member_pid(name).is_some_and(|p| self.is_running(p))
    }

    /// Starts one member in its namespace and records its pid (in the setup's order).
    fn spawn_member(&mut self, m: &EtcdMember) -> Result<Pid, TestbedError> {
        let ns = self
            .etcd_state
            .net(m.ip)
            .map(|n| n.ns.clone())
            .ok_or_else(|| {
                TestbedError::Invalid(format!("etcd member {} has no namespace yet", m.name))
            })?;
        let mut args: Vec<OsString> = m.args.iter().map(OsString::from).collect();
        if flag_value(&m.args, "data-dir").is_none() {
            args.push("--data-dir".into());
            args.push(self.dir().join(format!("etcd-{}.data", m.name)).into());
        }
        let etcd = std::env::var_os(crate::ETCD_ENV).unwrap_or_else(|| "etcd".into());
        let log = self.etcd_member_log(&m.name);
        let pid = self.spawn_tracked(&ns, &etcd, &args, &[], &log, true, &["ETCD"])?;
        let order: Vec<String> = self
            .etcd_state
            .members()
            .iter()
            .map(|x| x.name.clone())
            .collect();
        let pids = &mut self.etcd_state.member_pids;
        pids.retain(|(n, _)| *n != m.name);
        pids.push((m.name.clone(), pid));
        pids.sort_by_key(|(n, _)| order.iter().position(|x| x == n));
        self.etcd_pid = pids.first().map(|(_, p)| *p);
        Ok(pid)
    }

    /// The address of a member's client URL (`scheme://ip:port`).
    fn member_addr(&self, name: &str) -> Result<SocketAddr, TestbedError> {
        let url = self.etcd_member_endpoint(name)?;
        url.split_once("://")
            .and_then(|(_, rest)| rest.parse().ok())
            .ok_or_else(|| {
                TestbedError::Invalid(format!(
                    "etcd member {name}: --advertise-client-urls {url} is not scheme://ip:port"
                ))
            })
    }

    /// etcdctl in the switch namespace against one endpoint.
    fn member_etcdctl(&self, endpoint: &str, args: &[&str]) -> Command {
        let etcdctl = std::env::var_os(crate::ETCDCTL_ENV).unwrap_or_else(|| "etcdctl".into());
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.switch_ns()])
            .arg(etcdctl)
            .arg("--endpoints")
            .arg(endpoint)
            .args(self.etcd_state.member_client_args())
            .args(args);
        crate::strip_env(&mut c, &["ETCDCTL_"]);
        c.env("ETCDCTL_API", "3");
        c
    }

    /// Whether `addr` accepts TCP connections, seen from the switch namespace.
    fn port_open_from_switch(&self, addr: SocketAddr) -> bool {
        in_netns(self.switch_ns(), move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
        .unwrap_or(false)
    }

    /// Waits until `etcdctl endpoint health` passes for every member.
    pub(crate) fn wait_members_healthy(&mut self) -> Result<(), TestbedError> {
        let ns = self.etcd_ns().to_string();
        let started = Instant::now();
        let first = self.etcd_state.members().first().map(|m| m.name.clone());
        loop {
            for (name, pid) in self.etcd_state.member_pids.clone() {
                if let Some(status) = self.tracked(pid)?.poll() {
                    let log = self.etcd_member_log(&name);
                    return Err(TestbedError::EtcdExited {
                        ns,
                        status: format!("member {name}: {status}"),
                        log: log.display().to_string(),
                        log_tail: log_tail(&log, 30),
                    });
                }
            }
            let first_addr = match &first {
                Some(n) => Some(self.member_addr(n)?),
                None => None,
            };
            let port_open = first_addr.is_some_and(|a| self.port_open_from_switch(a));
            let last_error = if port_open {
                let mut c = self.etcdctl_command(
                    [
                        "--dial-timeout=2s",
                        "--command-timeout=3s",
                        "endpoint",
                        "health",
                    ]
                    .map(std::ffi::OsStr::new),
                );
                match cmd::output(&mut c, &self.etcd_hint())? {
                    out if out.status.success() => {
                        debug!(
                            id = %self.id(),
                            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                            "etcd members healthy"
                        );
                        return Ok(());
                    }
                    out => crate::unhealthy(&out),
                }
            } else {
                format!("{first_addr:?} does not accept connections yet")
            };
            if started.elapsed() >= ETCD_HEALTH_TIMEOUT {
                let logs: Vec<String> = self
                    .etcd_state
                    .member_pids
                    .iter()
                    .map(|(n, _)| self.etcd_member_log(n).display().to_string())
                    .collect();
                let tail = self
                    .etcd_state
                    .member_pids
                    .first()
                    .map(|(n, _)| log_tail(&self.etcd_member_log(n), 30))
                    .unwrap_or_default();
                return Err(TestbedError::EtcdUnhealthy {
                    ns,
                    waited: started.elapsed(),
                    last_error,
                    log: logs.join(", "),
                    log_tail: tail,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `etcdctl endpoint health` passes against member `name` alone (it has a
    /// leader and serves a linearizable read), e.g. after [`Testbed::heal_etcd_member`];
    /// returns how long that took.
    pub fn wait_etcd_member_healthy(&mut self, name: &str) -> Result<Duration, TestbedError> {
        let started = Instant::now();
        let endpoint = self.etcd_member_endpoint(name)?;
        let addr = self.member_addr(name)?;
        let ns = self.etcd_member_ns(name)?;
        let log = self.etcd_member_log(name);
        let pid = self.member_pid(name).ok_or_else(|| {
            TestbedError::EtcdUnavailable(format!("etcd member {name} is not running"))
        })?;
        loop {
            if let Some(status) = self.tracked(pid)?.poll() {
                return Err(TestbedError::EtcdExited {
                    ns,
                    status: format!("member {name}: {status}"),
                    log: log.display().to_string(),
                    log_tail: log_tail(&log, 30),
                });
            }
            let last_error = if self.port_open_from_switch(addr) {
                let mut c = self.member_etcdctl(
                    &endpoint,
                    &[
                        "--dial-timeout=1s",
                        "--command-timeout=2s",
                        "endpoint",
                        "health",
                    ],
                );
                let out = cmd::output(&mut c, &self.etcd_hint())?;
                if out.status.success() {
                    return Ok(started.elapsed());
                }
                crate::unhealthy(&out)
            } else {
                format!("{addr} does not accept connections yet")
            };
            if started.elapsed() >= ETCD_HEALTH_TIMEOUT {
                return Err(TestbedError::EtcdUnhealthy {
                    ns,
                    waited: started.elapsed(),
                    last_error,
                    log: log.display().to_string(),
                    log_tail: log_tail(&log, 30),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs every member and reaps it; data dirs are kept.
    pub(crate) fn stop_etcd_members(&mut self) -> Result<(), TestbedError> {
        let pids = std::mem::take(&mut self.etcd_state.member_pids);
        for (name, pid) in pids {
            if self.tracked(pid)?.poll().is_some() {
                continue;
            }
            self.kill_and_reap(pid, &format!("etcd member {name}"))?;
        }
        self.etcd_pid = None;
        Ok(())
    }

    /// Names of the members of [`EtcdSetup::Members`], in the setup's order (running or not).
    pub fn etcd_member_names(&self) -> Vec<String> {
        self.etcd_state
            .members()
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    /// The client URL of member `name` (its `--advertise-client-urls`).
    pub fn etcd_member_endpoint(&self, name: &str) -> Result<String, TestbedError> {
        let m = self.etcd_state.member(name)?;
        flag_value(&m.args, "advertise-client-urls")
            .map(String::from)
            .ok_or_else(|| {
                TestbedError::Invalid(format!(
                    "etcd member {name}: its args have no --advertise-client-urls"
                ))
            })
    }

    /// The namespace member `name` runs in.
    pub fn etcd_member_ns(&self, name: &str) -> Result<String, TestbedError> {
        let m = self.etcd_state.member(name)?;
        self.etcd_state
            .net(m.ip)
            .map(|n| n.ns.clone())
            .ok_or_else(|| {
                TestbedError::EtcdUnavailable(format!("etcd member {name} was never started"))
            })
    }

    /// What member `name` says about itself, asked from the switch namespace (1 s dial
    /// timeout, 2 s command timeout).
    pub fn etcd_member_status(&self, name: &str) -> Result<EtcdMemberStatus, TestbedError> {
        let endpoint = self.etcd_member_endpoint(name)?;
        let mut c = self.member_etcdctl(&endpoint, &STATUS_ARGS);
        let out = cmd::checked(&mut c, &self.etcd_hint())?;
        EtcdMemberStatus::parse(name, &out)
            .map_err(|e| TestbedError::Invalid(format!("etcd member {name}: {e}")))
    }

    /// [`Testbed::etcd_member_status`] of every member, asked in parallel. A member that was
    /// killed ([`Testbed::kill_etcd_member`]) or partitioned is not asked: its entry is an
    /// error saying so.
    pub fn etcd_members_status(&self) -> Vec<(String, Result<EtcdMemberStatus, TestbedError>)> {
        let mut asked = Vec::new();
        let mut answers = Vec::new();
        for name in self.etcd_member_names() {
            let skip = if self.etcd_state.partitioned.contains(&name) {
                Some("is partitioned")
            } else if self.member_pid(&name).is_none() {
                Some("is stopped")
            } else {
                None
            };
            match (skip, self.etcd_member_endpoint(&name)) {
                (Some(why), _) => answers.push((
                    name.clone(),
                    Err(TestbedError::EtcdUnavailable(format!(
                        "etcd member {name} {why}"
                    ))),
                )),
                (None, Err(e)) => answers.push((name, Err(e))),
                (None, Ok(ep)) => {
                    let c = self.member_etcdctl(&ep, &STATUS_ARGS);
                    asked.push((name, c));
                }
            }
        }
        let hint = self.etcd_hint();
        let got: Vec<(String, Result<EtcdMemberStatus, TestbedError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = asked
                .into_iter()
                .map(|(name, mut c)| {
                    let hint = &hint;
                    s.spawn(move || {
                        let r = cmd::checked(&mut c, hint).and_then(|out| {
                            EtcdMemberStatus::parse(&name, &out).map_err(|e| {
                                TestbedError::Invalid(format!("etcd member {name}: {e}"))
                            })
                        });
                        (name, r)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        answers.extend(got);
        let order = self.etcd_member_names();
        answers.sort_by_key(|(n, _)| order.iter().position(|x| x == n));
        answers
    }

    /// The member that says it leads, among the members running and not partitioned (a
    /// leader cut off from the switch may still believe it leads for an election timeout).
    /// None while there is no leader (an election, or no quorum).
    pub fn etcd_leader(&self) -> Option<String> {
        self.etcd_members_status()
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .filter(EtcdMemberStatus::is_leader)
            .max_by_key(|s| s.raft_term)
            .map(|s| s.name)
    }

    /// Polls [`Testbed::etcd_leader`] every 50 ms until a leader other than `not` is found;
    /// returns it and how long that took.
    pub fn wait_etcd_leader(
        &self,
        timeout: Duration,
        not: Option<&str>,
    ) -> Result<(String, Duration), TestbedError> {
        let started = Instant::now();
        crate::wait_until(timeout, Duration::from_millis(50), || {
            self.etcd_leader().filter(|l| Some(l.as_str()) != not)
        })
        .map(|l| (l, started.elapsed()))
        .ok_or_else(|| {
            let status: Vec<String> = self
                .etcd_members_status()
                .into_iter()
                .map(|(n, r)| match r {
                    Ok(s) => format!("{n}: leader {:x}, term {}", s.leader, s.raft_term),
                    Err(e) => format!("{n}: {e}"),
                })
                .collect();
            TestbedError::EtcdUnavailable(format!(
                "no etcd leader (other than {not:?}) within {timeout:?}; members say: {}",
                status.join("; ")
            ))
        })
    }

    /// SIGKILLs member `name` (by the pid the testbed started it with) and reaps it; its data
    /// dir is kept for [`Testbed::start_etcd_member`]. Returns the pid it had.
    pub fn kill_etcd_member(&mut self, name: &str) -> Result<Pid, TestbedError> {
        self.etcd_state.member(name)?;
        let pid = self.member_pid(name).ok_or_else(|| {
            TestbedError::EtcdUnavailable(format!("etcd member {name} is not running"))
        })?;
        if self.tracked(pid)?.poll().is_none() {
            self.kill_and_reap(pid, &format!("etcd member {name}"))?;
        }
        self.etcd_state.member_pids.retain(|(n, _)| n != name);
        self.etcd_pid = self.etcd_state.member_pids.first().map(|(_, p)| *p);
        debug!(id = %self.id(), member = name, %pid, "etcd member killed");
        Ok(pid)
    }

    /// Starts member `name` again with its arguments and data dir, so it rejoins the cluster
    /// as the same member, and waits until it answers `endpoint health` (it has caught up
    /// with a leader). Returns how long that took. A partitioned member never gets healthy:
    /// heal it first.
    pub fn start_etcd_member(&mut self, name: &str) -> Result<Duration, TestbedError> {
        let m = self.etcd_state.member(name)?.clone();
        if self.member_running(name) {
            return Err(TestbedError::Invalid(format!(
                "start_etcd_member: {name} is already running; call kill_etcd_member first"
            )));
        }
        let started = Instant::now();
        self.plumb_members(std::slice::from_ref(&m))?;
        self.spawn_member(&m)?;
        self.wait_etcd_member_healthy(name)?;
        Ok(started.elapsed())
    }

    /// Cuts member `name` off: its switch port goes down, so its `eth0` loses carrier and
    /// no packet passes between it and its peers or any node. The process keeps running.
    pub fn partition_etcd_member(&mut self, name: &str) -> Result<(), TestbedError> {
        self.set_member_port(name, false)
    }

    /// Undoes [`Testbed::partition_etcd_member`].
    pub fn heal_etcd_member(&mut self, name: &str) -> Result<(), TestbedError> {
        self.set_member_port(name, true)
    }

    fn set_member_port(&mut self, name: &str, up: bool) -> Result<(), TestbedError> {
        let ip = self.etcd_state.member(name)?.ip;
        let port = self
            .etcd_state
            .net(ip)
            .map(|n| n.port.clone())
            .ok_or_else(|| {
                TestbedError::EtcdUnavailable(format!("etcd member {name} was never started"))
            })?;
        let sw = self.switch_ns().to_string();
        self.link_set(&sw, &port, up)?;
        if up {
            self.etcd_state.partitioned.remove(name);
        } else {
            self.etcd_state.partitioned.insert(name.to_string());
        }
        debug!(id = %self.id(), member = name, port, up, "etcd member switch port");
        Ok(())
    }

    /// The Prometheus text of a plain-HTTP member's `/metrics`, fetched from the switch
    /// namespace (etcd serves it on the client port).
    pub fn etcd_member_metrics(&self, name: &str) -> Result<String, TestbedError> {
        let endpoint = self.etcd_member_endpoint(name)?;
        if !endpoint.starts_with("http://") {
            return Err(TestbedError::Invalid(format!(
                "etcd member {name} serves {endpoint}: the testbed reads /metrics over plain http only"
            )));
        }
        let addr = self.member_addr(name)?;
        let got = in_netns(self.switch_ns(), move || {
            crate::http::get(addr, "/metrics", Duration::from_secs(2))
        })?;
        let (status, body) = got.map_err(|e| TestbedError::Io {
            what: format!("GET http://{addr}/metrics of etcd member {name}"),
            source: e,
        })?;
        if status != 200 {
            return Err(TestbedError::Invalid(format!(
                "etcd member {name} answered HTTP {status} for /metrics"
            )));
        }
        Ok(body)
    }

    /// One unlabelled sample of [`Testbed::etcd_member_metrics`], e.g.
    /// `etcd_debugging_mvcc_watcher_total` (the watchers the member serves).
    pub fn etcd_member_metric(
        &self,
        name: &str,
        metric: &str,
    ) -> Result<Option<f64>, TestbedError> {
        Ok(crate::prom::Scrape::parse(&self.etcd_member_metrics(name)?).value(metric))
    }
}

const STATUS_ARGS: [&str; 6] = [
    "--dial-timeout=1s",
    "--command-timeout=2s",
    "endpoint",
    "status",
    "-w",
    "json",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values() {
        let args: Vec<String> = [
            "--name=a",
            "--advertise-client-urls",
            "https://10.250.0.3:2379",
            "-data-dir=/x",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(flag_value(&args, "name"), Some("a"));
        assert_eq!(
            flag_value(&args, "advertise-client-urls"),
            Some("https://10.250.0.3:2379")
        );
        assert_eq!(flag_value(&args, "data-dir"), Some("/x"));
        assert_eq!(flag_value(&args, "missing"), None);
    }

    #[test]
    fn endpoints_per_setup() {
        assert_eq!(EtcdState::default().endpoints(), "http://10.250.0.2:2379");
        let tls = EtcdState::new(EtcdSetup::Tls(EtcdTls::default()));
        assert_eq!(tls.endpoints(), "https://10.250.0.2:2379");
        let m = |ip: &str| EtcdMember {
            name: ip.into(),
            ip: ip.parse().unwrap(),
            args: vec![format!("--advertise-client-urls=https://{ip}:2379")],
        };
        let members = EtcdState::new(EtcdSetup::Members(EtcdMembers {
            members: vec![m("10.250.0.2"), m("10.250.0.3")],
            client: None,
        }));
        assert_eq!(
            members.endpoints(),
            "https://10.250.0.2:2379,https://10.250.0.3:2379"
        );
    }

    #[test]
    fn plain_members_form_one_cluster() {
        let m = EtcdMembers::plain(3);
        assert_eq!(m.client, None);
        let names: Vec<&str> = m.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["etcd0", "etcd1", "etcd2"]);
        assert_eq!(m.members[0].ip, ETCD_IP);
        assert_eq!(m.members[2].ip, Ipv4Addr::new(10, 250, 0, 4));
        let a = &m.members[1].args;
        assert_eq!(
            flag_value(a, "advertise-client-urls"),
            Some("http://10.250.0.3:2379")
        );
        assert_eq!(
            flag_value(a, "initial-cluster"),
            Some(
                "etcd0=http://10.250.0.2:2380,etcd1=http://10.250.0.3:2380,etcd2=http://10.250.0.4:2380"
            )
        );
        assert_eq!(
            flag_value(a, "data-dir"),
            None,
            "the bed picks the data dir"
        );
        assert_eq!(flag_value(a, "pre-vote"), Some("true"), "as etcd 3.5+ runs");
        let st = EtcdState::new(EtcdSetup::Members(m));
        assert_eq!(
            st.endpoints(),
            "http://10.250.0.2:2379,http://10.250.0.3:2379,http://10.250.0.4:2379"
        );
    }

    #[test]
    fn member_status_and_metrics_parse() {
        let json = r#"[{"Endpoint":"http://10.250.0.3:2379","Status":{"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":7,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":13668033151171901709,"raftIndex":4,"raftTerm":2,"raftAppliedIndex":4,"dbSizeInUse":16384}}]"#;
        let st = EtcdMemberStatus::parse("etcd1", json).unwrap();
        assert!(st.is_leader());
        assert_eq!((st.raft_term, st.raft_index, st.revision), (2, 4, 7));
        let follower = EtcdMemberStatus {
            leader: 1,
            ..st.clone()
        };
        assert!(!follower.is_leader());
        assert!(
            !EtcdMemberStatus {
                leader: 0,
                member_id: 0,
                ..st
            }
            .is_leader()
        );
        assert!(EtcdMemberStatus::parse("x", "[]").is_err());

        let text = "# HELP etcd_debugging_mvcc_watcher_total x\netcd_debugging_mvcc_watcher_total_x 9\netcd_debugging_mvcc_watcher_total 3\n";
        assert_eq!(
            crate::prom::Scrape::parse(text).value("etcd_debugging_mvcc_watcher_total"),
            Some(3.0)
        );
        assert_eq!(crate::prom::Scrape::parse(text).value("nope"), None);
    }

    #[test]
    fn ca_issues_certs() {
        let ca = TestCa::new("t").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let c = ca.issue(&CertSpec::client("c").expired()).unwrap();
        assert!(c.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
    }
}
