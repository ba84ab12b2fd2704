//! etcd over TLS in the testbed, and etcd clusters started from explicit command lines.
//!
//! [`Testbed::new`] runs one plain-HTTP etcd. [`Testbed::new_with_etcd`] takes an
//! [`EtcdSetup`] instead:
//!
//! - [`EtcdSetup::Tls`]: one member on `https://10.250.0.2:2379` (and `https://127.0.0.1:2379`
//!   inside `<id>-etcd`), with a CA, a server cert (SANs 10.250.0.2, 127.0.0.1, localhost) and
//!   a client cert generated with rcgen into `<bed dir>/tls/` ([`EtcdTlsFiles`]);
//!   `--client-cert-auth` when [`EtcdTls::client_cert_auth`] is set. [`Testbed::etcd_ca`]
//!   issues more certs from the same CA (expired ones, for instance).
//! - [`EtcdSetup::Members`]: any number of etcd processes, all in `<id>-etcd`, each started
//!   with the exact arguments given (e.g. the flags of a generated systemd unit). A member
//!   whose address is not 10.250.0.2 gets it added to `eth0` of `<id>-etcd` (use addresses in
//!   10.250.0.3..=10.250.0.254, which are never handed to nodes). Each member logs to
//!   `<bed dir>/etcd-<name>.log`.
//!
//! In every mode [`Testbed::etcd_endpoint`] gives the client URL(s) (comma-separated for
//! several members, as `--etcd-endpoints` takes them), and [`Testbed::etcdctl`] passes
//! `--endpoints` and, with TLS, `--cacert/--cert/--key` by itself.
//! [`Testbed::restart_etcd_with`] switches a running bed to another setup (the data dir of
//! the single-member modes is kept, so switching between plain and TLS keeps the keys).

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tracing::debug;

use crate::{
    ETCD_CLIENT_PORT, ETCD_HEALTH_TIMEOUT, ETCD_IP, Pid, Signal, Testbed, TestbedError,
    UNDERLAY_PREFIX, cmd, in_netns, log_tail,
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

/// A throw-away certificate authority (ECDSA P-256) made with rcgen.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
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

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> TestbedError + '_ {
    move |e| TestbedError::Invalid(format!("generating {what} with rcgen: {e}"))
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, common_name);
    d
}

impl TestCa {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<TestCa, TestbedError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(common_name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(gen_err("a CA key"))?;
        let cert = p.self_signed(&key).map_err(gen_err("a CA cert"))?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<(), TestbedError> {
        write_file(path, self.cert_pem.as_bytes(), false)
    }

    /// Issues a cert with a fresh key.
    pub fn issue(&self, spec: &CertSpec) -> Result<IssuedCert, TestbedError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(&spec.common_name);
        p.subject_alt_names = spec.ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for d in &spec.dns_names {
            let name = d
                .clone()
                .try_into()
                .map_err(gen_err("a DNS name for a SAN"))?;
            p.subject_alt_names.push(SanType::DnsName(name));
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if spec.expired {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2000, 12, 31);
        }
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(gen_err("a key"))?;
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(gen_err("a certificate"))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
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
    member_pids: Vec<(String, Pid)>,
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

    /// What etcdctl needs to reach etcd from inside `<id>-etcd`.
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
            EtcdSetup::Members(m) => {
                let mut v = vec!["--endpoints".into(), self.endpoints().into()];
                if let Some(c) = &m.client {
                    v.extend(c.etcdctl_args());
                }
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

    /// Starts every member of [`EtcdSetup::Members`] (adding its address first).
    pub(crate) fn spawn_etcd_members(&mut self) -> Result<(), TestbedError> {
        let EtcdSetup::Members(m) = &self.etcd_state.setup else {
            return Ok(());
        };
        let members = m.members.clone();
        if members.is_empty() {
            return Err(TestbedError::Invalid(
                "EtcdSetup::Members has no member".into(),
            ));
        }
        let ns = self.etcd_ns().to_string();
        let lines: Vec<String> = members
            .iter()
            .filter(|m| m.ip != ETCD_IP)
            .map(|m| format!("addr replace {}/{UNDERLAY_PREFIX} dev eth0", m.ip))
            .collect();
        if !lines.is_empty() {
            cmd::start_ip_batch(
                Some(&ns),
                &lines,
                "adding the etcd members' addresses to eth0 of the etcd namespace",
            )?
            .finish()?;
        }
        let etcd = std::env::var_os(crate::ETCD_ENV).unwrap_or_else(|| "etcd".into());
        self.etcd_state.member_pids.clear();
        for m in &members {
            if flag_value(&m.args, "advertise-client-urls").is_none() {
                return Err(TestbedError::Invalid(format!(
                    "etcd member {}: its args have no --advertise-client-urls",
                    m.name
                )));
            }
            let args: Vec<OsString> = m.args.iter().map(OsString::from).collect();
            let log = self.etcd_member_log(&m.name);
            let pid = self.spawn_tracked(&ns, &etcd, &args, &[], &log, true, &["ETCD"])?;
            self.etcd_state.member_pids.push((m.name.clone(), pid));
        }
        self.etcd_pid = self.etcd_state.member_pids.first().map(|(_, p)| *p);
        Ok(())
    }

    /// Waits until `etcdctl endpoint health` passes for every member.
    pub(crate) fn wait_members_healthy(&mut self) -> Result<(), TestbedError> {
        let ns = self.etcd_ns().to_string();
        let started = Instant::now();
        let first_ip = match &self.etcd_state.setup {
            EtcdSetup::Members(m) => m.members.first().map(|m| m.ip).unwrap_or(ETCD_IP),
            _ => ETCD_IP,
        };
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
            let port_open = in_netns(&ns, move || {
                let addr = SocketAddr::from((first_ip, ETCD_CLIENT_PORT));
                TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
            })
            .unwrap_or(false);
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
                    out => format!(
                        "etcdctl endpoint health: {}{}",
                        String::from_utf8_lossy(&out.stdout).trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                }
            } else {
                format!("{first_ip}:{ETCD_CLIENT_PORT} does not accept connections yet")
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

    /// SIGKILLs every member and reaps it; data dirs are kept.
    pub(crate) fn stop_etcd_members(&mut self) -> Result<(), TestbedError> {
        let pids = std::mem::take(&mut self.etcd_state.member_pids);
        for (name, pid) in pids {
            if self.tracked(pid)?.poll().is_some() {
                continue;
            }
            self.signal(pid, Signal::SIGKILL)?;
            let timeout = Duration::from_secs(10);
            if self.wait_exit(pid, timeout)?.is_none() {
                return Err(TestbedError::Timeout {
                    what: format!("etcd member {name} after SIGKILL"),
                    pid,
                    timeout,
                });
            }
        }
        self.etcd_pid = None;
        Ok(())
    }
}

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
    fn ca_issues_certs() {
        let ca = TestCa::new("t").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let c = ca.issue(&CertSpec::client("c").expired()).unwrap();
        assert!(c.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
    }
}
