//! The lease store of weft over etcd v3, with flannel's key layout
//! (`<prefix>/config`, `<prefix>/subnets/<A.B.C.D-len>`) and lease values.
//!
//! Everything here is an effect: parsing and deciding live in `weft-core`. The store hands
//! back raw keys and values with their etcd metadata, so a hostile value is rejected by the
//! caller for that one key without disturbing the others.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    LeaseTimeToLiveOptions, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use ipnet::Ipv4Net;
use tracing::{debug, warn};
pub use weft_core::lease::MAX_LEASE_BYTES;
use weft_core::subnet::{config_key, lease_key, parse_subnet_key, subnets_key_prefix};

/// How to reach etcd: the same knobs as flanneld's `--etcd-*` flags.
#[derive(Clone, Default)]
pub struct StoreConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for StoreConfig {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A malformed `--etcd-endpoints` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error(
        "--etcd-endpoints {:?} holds no endpoint; pass e.g. --etcd-endpoints http://10.0.0.5:2379", weft_core::clip::clip(.0)
    )]
    Empty(String),
    #[error("--etcd-endpoints entry {:?} must start with http:// or https://, e.g. {}", weft_core::clip::clip(.0), scheme_example(.0))]
    Scheme(String),
}

/// A corrected example for an endpoint without an http(s) scheme: `x:2379` → `http://x:2379`,
/// `ftp://x:2379` → `http://x:2379`.
fn scheme_example(entry: &str) -> String {
    let rest = entry.split_once("://").map_or(entry, |(_, rest)| rest);
    format!("http://{}", weft_core::clip::clip(rest))
}

/// Splits flanneld's comma-separated `--etcd-endpoints` and checks each entry's scheme.
pub fn parse_endpoints(value: &str) -> Result<Vec<String>, EndpointError> {
    let endpoints: Vec<String> = value
        .split(',')
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(EndpointError::Empty(value.to_string()));
    }
    if let Some(bad) = endpoints
        .iter()
        .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
    {
        return Err(EndpointError::Scheme(bad.clone()));
    }
    Ok(endpoints)
}

/// A store failure, naming what was being done and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The causes below are written into the message (followed by what to do), so they are
    // not also returned as `source()`: printed as a chain they would appear twice.
    #[error("cannot read {what} {path}: {cause}; check --{flag}")]
    File {
        what: &'static str,
        flag: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error(
        "cannot connect to etcd at {endpoints}: {cause}; {}",
        hint.as_deref().unwrap_or("check that etcd is running and reachable and that --etcd-endpoints is right")
    )]
    Connect {
        endpoints: String,
        cause: etcd_client::Error,
        /// What the TLS setup says about the failure, if anything.
        hint: Option<String>,
    },
    #[error("etcd request failed ({what}): {cause}{}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    Request {
        what: String,
        cause: etcd_client::Error,
        /// What the TLS setup says about the failure, if anything.
        hint: Option<String>,
    },
    #[error("etcd watch on {prefix} was cancelled: {reason}")]
    WatchCancelled { prefix: String, reason: String },
    #[error("{0}")]
    BadKey(String),
}

impl StoreError {
    /// Whether etcd's answer was larger than gRPC's message limit (the watch then has to
    /// be replaced by a paged listing).
    pub fn is_too_large(&self) -> bool {
        matches!(self, StoreError::Request { cause, .. } if too_large(cause))
    }

    /// Whether the revision asked for was compacted away.
    pub fn is_compacted(&self) -> bool {
        matches!(self, StoreError::Request { cause, .. } if compacted(cause))
    }
}

/// gRPC's limit on a message weft receives: tonic's default (4 MiB), which etcd-client keeps.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Keys asked for in one page of a listing at most.
const PAGE_KEYS: i64 = 1000;

/// Bytes a page of a listing aims at: a quarter of [`MAX_MESSAGE_BYTES`], so a page stays
/// well under the limit while its values keep their size.
const PAGE_BYTES: usize = MAX_MESSAGE_BYTES / 4;

/// Whether a response was refused for exceeding gRPC's message size limit (tonic's
/// "decoded message length too large", code OutOfRange).
fn too_large(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(st) => st.message().contains("message length too large"),
        _ => false,
    }
}

/// etcd's ErrCompacted: the revision asked for is older than the last compaction.
fn compacted(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(st) => st.message().contains("has been compacted"),
        _ => false,
    }
}

/// The end of the key range holding every key that starts with `prefix` (etcd's prefix
/// range end: the last byte incremented, trailing 0xff dropped).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether a request failed below gRPC (connect, TLS, connection lost), not with an etcd status.
fn is_transport(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(st) => std::error::Error::source(st).is_some(),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Whether etcd refused a request because it is between leaders ("leader changed", "no
/// leader"): transient, and for a read, safe to send again.
fn electing(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(st) => {
            // etcd's ErrGRPCLeaderChanged / ErrGRPCNoLeader (code Unavailable); tonic is not a
            // direct dependency, so the message is what identifies them.
            st.message().contains("etcdserver: leader changed")
                || st.message().contains("etcdserver: no leader")
        }
        _ => false,
    }
}

/// Whether a request failed before any etcd member got it: the balanced channel handed it to
/// an endpoint it could not connect to (a dead member refuses, an unreachable one has no
/// route). Sending it again, which reaches another endpoint, cannot apply it twice, so this
/// is safe to retry for writes too.
fn never_sent(e: &etcd_client::Error) -> bool {
    use std::io::ErrorKind::*;
    let etcd_client::Error::GRpcStatus(st) = e else {
        return false;
    };
    let mut cur = std::error::Error::source(st);
    while let Some(x) = cur {
        if let Some(io) = x.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            )
        {
            return true;
        }
        cur = x.source();
    }
    false
}

/// The TLS files a store was built with, to explain TLS failures.
#[derive(Debug, Clone, Default)]
struct TlsFiles {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
}

impl TlsFiles {
    fn of(cfg: &StoreConfig) -> Option<TlsFiles> {
        (cfg.ca_file.is_some() || cfg.cert_file.is_some()).then(|| TlsFiles {
            ca: cfg.ca_file.clone(),
            cert: cfg.cert_file.clone(),
        })
    }

    /// Why a request over TLS failed, in terms of the flags, or None when the failure does
    /// not look like a TLS problem (etcd down, refused, an etcd error status).
    fn hint(&self, e: &etcd_client::Error) -> Option<String> {
        use rustls::{CertificateError, Error as TlsError};
        let mut transport = matches!(
            e,
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)
        );
        // etcd_client::Error has no source(): start below it.
        let mut cur: Option<&(dyn std::error::Error + 'static)> = match e {
            etcd_client::Error::GRpcStatus(st) => {
                transport |= std::error::Error::source(st).is_some();
                Some(st)
            }
            etcd_client::Error::TransportError(t) => Some(t),
            etcd_client::Error::IoError(io) => Some(io),
            other => Some(other),
        };
        let mut found: Option<TlsError> = None;
        while let Some(x) = cur {
            if let Some(r) = x.downcast_ref::<TlsError>() {
                found = Some(r.clone());
                break;
            }
            if let Some(io) = x.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                if matches!(
                    io.kind(),
                    ConnectionRefused
                        | TimedOut
                        | HostUnreachable
                        | NetworkUnreachable
                        | AddrNotAvailable
                ) {
                    return None; // reachability, not TLS
                }
                if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) {
                    found = Some(r.clone());
                    break;
                }
            }
            cur = x.source();
        }
        let ca = self
            .ca
            .as_ref()
            .map(|p| format!("the CA in --etcd-cafile {}", p.display()))
            .unwrap_or_else(|| "any CA weft was given (no --etcd-cafile)".into());
        match found {
            Some(TlsError::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            )) => Some(format!(
                "etcd's server certificate is not signed by {ca}: pass the CA that signed etcd's --cert-file (for `weft etcd ignition`, ca.crt of its --out-dir)"
            )),
            Some(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Some(
                "etcd's server certificate does not name the address in --etcd-endpoints: use an address among the certificate's SANs, or reissue it with this address".into(),
            ),
            Some(TlsError::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => Some("etcd's server certificate has expired: renew the members' certificates".into()),
            Some(other) => Some(self.rejected(&format!("TLS error: {other}"))),
            None if transport => Some(self.rejected("etcd closed the TLS connection")),
            None => None,
        }
    }

    fn rejected(&self, what: &str) -> String {
        match &self.cert {
            None => format!(
                "{what}; if this repeats, etcd runs with --client-cert-auth and needs a client certificate: pass --etcd-certfile and --etcd-keyfile"
            ),
            Some(c) => format!(
                "{what}; if this repeats, etcd rejects the client certificate --etcd-certfile {} (not signed by the CA in etcd's --trusted-ca-file, or revoked): etcd's log says why (\"rejected connection\")",
                c.display()
            ),
        }
    }
}

/// A PEM file as given on the command line: its path and its bytes.
type PemFile<'a> = (&'a Path, &'a [u8]);

/// Checks TLS material before any connection: PEM that parses, a key that belongs to the
/// cert, a client cert inside its validity period. These are mistakes in the files, so they
/// are reported as [`StoreError::Tls`] (fatal for weftd) naming the flag, the file and the fix.
fn check_tls_files(
    ca: Option<PemFile<'_>>,
    pair: Option<(PemFile<'_>, PemFile<'_>)>,
) -> Result<(), StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
    if let Some((path, pem)) = ca
        && CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .next()
            .is_none()
    {
        return Err(StoreError::Tls(format!(
            "--etcd-cafile {} holds no PEM certificate; pass the CA certificate (PEM) that signed etcd's server certificate",
            path.display()
        )));
    }
    let Some(((cert_path, cert_pem), (key_path, key_pem))) = pair else {
        return Ok(());
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    let Some(leaf) = certs.first().cloned() else {
        return Err(StoreError::Tls(format!(
            "--etcd-certfile {} holds no PEM certificate; pass the client certificate (PEM) whose key is --etcd-keyfile",
            cert_path.display()
        )));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
        StoreError::Tls(format!(
            "--etcd-keyfile {} holds no PEM private key (PKCS#8, SEC1 or PKCS#1); pass the private key of --etcd-certfile {}",
            key_path.display(),
            cert_path.display()
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider.key_provider.load_private_key(key).map_err(|e| {
        StoreError::Tls(format!(
            "--etcd-keyfile {}: unusable private key ({e}); pass the private key of --etcd-certfile {}",
            key_path.display(),
            cert_path.display()
        ))
    })?;
    if rustls::sign::CertifiedKey::new(certs, signer)
        .keys_match()
        .is_err()
    {
        return Err(StoreError::Tls(format!(
            "--etcd-keyfile {} is not the private key of --etcd-certfile {}; pass the key that was issued with that certificate (e.g. client.key with client.crt)",
            key_path.display(),
            cert_path.display()
        )));
    }
    if let Ok(ee) = webpki::EndEntityCert::try_from(&leaf) {
        match ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[],
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        ) {
            Err(webpki::Error::CertExpired { not_after, .. }) => {
                return Err(StoreError::Tls(format!(
                    "--etcd-certfile {} expired (not after {} s since 1970, UTC); issue a new client certificate from etcd's CA (`weft etcd ignition` with the same --out-dir renews it) and restart",
                    cert_path.display(),
                    not_after.as_secs()
                )));
            }
            Err(webpki::Error::CertNotValidYet { not_before, .. }) => {
                return Err(StoreError::Tls(format!(
                    "--etcd-certfile {} is not valid before {} s since 1970 (UTC); check this machine's clock",
                    cert_path.display(),
                    not_before.as_secs()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One key under `<prefix>/subnets/` as etcd holds it.
#[derive(Debug, Clone)]
pub struct RawLease {
    pub key: String,
    /// The subnet the key names, or why the key is not a subnet key.
    pub subnet: Result<Ipv4Net, String>,
    /// The value; empty when it is over [`MAX_LEASE_BYTES`] (see `oversized`).
    pub value: Vec<u8>,
    /// The size of a value over [`MAX_LEASE_BYTES`], which is not kept: such a key is
    /// refused as a lease (and still keeps its subnet from being allocated).
    pub oversized: Option<usize>,
    /// The etcd lease the key is attached to; 0 for a reservation (no TTL).
    pub lease_id: i64,
    pub mod_revision: i64,
}

impl RawLease {
    /// The key without `<prefix>/subnets/`.
    pub fn tail<'a>(&'a self, subnets_prefix: &str) -> &'a str {
        self.key.strip_prefix(subnets_prefix).unwrap_or(&self.key)
    }

    /// The value, or None when it was over the size limit and not kept.
    pub fn value(&self) -> Option<&[u8]> {
        self.oversized.is_none().then_some(self.value.as_slice())
    }
}

/// A change seen by the lease watch.
#[derive(Debug, Clone)]
pub enum LeaseEvent {
    Put(RawLease),
    Delete {
        key: String,
        subnet: Result<Ipv4Net, String>,
    },
}

/// What one read of the watch gave.
#[derive(Debug)]
pub enum WatchBatch {
    /// Events in revision order. `revision`: every event up to it has now been delivered
    /// (the last event's mod revision; for an empty progress notification, the store's
    /// revision), so a broken stream resumes from `revision + 1`.
    Events {
        events: Vec<LeaseEvent>,
        revision: i64,
    },
    /// The watch's start revision was compacted away: re-list and watch again.
    Compacted(i64),
}

/// The lease we hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    pub subnet: Ipv4Net,
    /// 0 for a reservation, which never expires.
    pub lease_id: i64,
    pub ttl: i64,
}

/// An etcd v3 client bound to one prefix.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
    tls: Option<TlsFiles>,
    /// How many endpoints the client balances over: a request that hit a dead one is retried
    /// on the others, at most this many times minus one.
    endpoints: usize,
}

fn read(path: &Path, what: &'static str, flag: &'static str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|cause| StoreError::File {
        what,
        flag,
        path: path.to_path_buf(),
        cause,
    })
}

fn key_to_subnet(key: &str, subnets_prefix: &str) -> Result<Ipv4Net, String> {
    let tail = key
        .strip_prefix(subnets_prefix)
        .ok_or_else(|| format!("key {key} is not under {subnets_prefix}"))?;
    parse_subnet_key(tail).map_err(|e| e.to_string())
}

fn raw(kv: &etcd_client::KeyValue, subnets_prefix: &str) -> RawLease {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let size = kv.value().len();
    let oversized = (size > MAX_LEASE_BYTES).then_some(size);
    RawLease {
        subnet: key_to_subnet(&key, subnets_prefix),
        key,
        value: if oversized.is_some() {
            Vec::new()
        } else {
            kv.value().to_vec()
        },
        oversized,
        lease_id: kv.lease(),
        mod_revision: kv.mod_revision(),
    }
}

/// One key of a keys-only listing: the key and the revision it was last written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRevision {
    pub key: String,
    pub mod_revision: i64,
}

impl Store {
    /// Runs one request. etcd-client's balanced channel keeps handing some requests to a dead
    /// member's endpoint; one that never reached a member ([`never_sent`]) is sent again, at
    /// most twice per endpoint, so a cluster with a member down answers every request.
    /// With a single endpoint there is nowhere else to go: the error is returned at once and
    /// the caller's back-off paces the retries (no retry storm against a bad etcd).
    async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0u64;
        loop {
            match op(self.client.clone()).await {
                Err(e)
                    if self.endpoints > 1
                        && attempt < 2 * self.endpoints as u64
                        && never_sent(&e) =>
                {
                    attempt += 1;
                    debug!(attempt, error = %e, "an etcd endpoint refused the connection; sending the request again");
                    tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                }
                r => return r,
            }
        }
    }

    fn req(&self, what: String) -> impl FnOnce(etcd_client::Error) -> StoreError + use<> {
        let tls = self.tls.clone();
        move |cause| StoreError::Request {
            what,
            hint: tls.and_then(|t| t.hint(&cause)),
            cause,
        }
    }

    /// Builds the connection options: TLS when a CA or a client cert is given (a CA alone
    /// means server-verified TLS, never a silent fallback to plain HTTP as in flanneld),
    /// username/password auth, short timeouts and HTTP/2 keep-alives so a dead etcd is
    /// noticed within seconds.
    pub fn connect_options(cfg: &StoreConfig) -> Result<ConnectOptions, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            // HTTP/2 pings find a dead etcd in about 9 s. etcd refuses pings more often than its
            // --grpc-keepalive-min-time (5 s by default) and drops the connection, so never go below.
            .with_keep_alive(Duration::from_secs(6), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        match (&cfg.cert_file, &cfg.key_file) {
            (Some(_), None) => {
                return Err(StoreError::Tls(
                    "--etcd-certfile is set but --etcd-keyfile is not; pass both (or neither)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(StoreError::Tls(
                    "--etcd-keyfile is set but --etcd-certfile is not; pass both (or neither)"
                        .into(),
                ));
            }
            _ => {}
        }
        if cfg.ca_file.is_some() || cfg.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            let ca_pem = match &cfg.ca_file {
                Some(ca) => Some((ca.as_path(), read(ca, "CA file", "etcd-cafile")?)),
                None => None,
            };
            let pair = match (&cfg.cert_file, &cfg.key_file) {
                (Some(cert), Some(key)) => Some((
                    (
                        cert.as_path(),
                        read(cert, "client certificate", "etcd-certfile")?,
                    ),
                    (key.as_path(), read(key, "client key", "etcd-keyfile")?),
                )),
                _ => None,
            };
            check_tls_files(
                ca_pem.as_ref().map(|(p, b)| (*p, b.as_slice())),
                pair.as_ref()
                    .map(|((cp, cb), (kp, kb))| ((*cp, cb.as_slice()), (*kp, kb.as_slice()))),
            )?;
            if let Some((_, pem)) = ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some(((_, cert), (_, key))) = pair {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(tls);
            if let Some(plain) = cfg.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(StoreError::Tls(format!(
                    "TLS files are given but endpoint {plain} is plain http; use https:// endpoints with --etcd-cafile/--etcd-certfile/--etcd-keyfile"
                )));
            }
        }
        if let Some(user) = &cfg.username {
            opts = opts.with_user(user.clone(), cfg.password.clone().unwrap_or_default());
        }
        Ok(opts)
    }

    /// Connects to etcd. The connection is lazy on the gRPC level; errors surface on the
    /// first request as well as here.
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let opts = Self::connect_options(cfg)?;
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(|cause| StoreError::Connect {
                endpoints: cfg.endpoints.join(","),
                hint: TlsFiles::of(cfg).and_then(|t| t.hint(&cause)),
                cause,
            })?;
        Ok(Store {
            client,
            prefix: cfg.prefix.clone(),
            tls: TlsFiles::of(cfg),
            endpoints: cfg.endpoints.len(),
        })
    }

    /// The key holding the network config.
    pub fn config_key(&self) -> String {
        config_key(&self.prefix)
    }

    /// `<prefix>/subnets/`.
    pub fn subnets_prefix(&self) -> String {
        subnets_key_prefix(&self.prefix)
    }

    /// The raw network config, or None when the key does not exist.
    pub async fn get_config(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.config_key();
        let mut c = self.client.clone();
        let mut attempt = 0;
        let resp = loop {
            match c.get(key.clone(), None).await {
                Ok(r) => break r,
                // A dead member's endpoint fails the first requests that the balanced
                // channel hands it; the live members answer the next ones.
                // With a single endpoint there is nowhere else to go: fail at once and let
                // the caller's backoff pace the retries (no retry storm against a bad etcd).
                Err(e) if attempt + 1 < self.endpoints as u64 && is_transport(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                // The cluster is electing a leader (a member died): a read is safe to send
                // again, and an election takes about a second; wait up to ~3 s in all.
                Err(e) if attempt < 5 && electing(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => return Err(self.req(format!("get {key}"))(e)),
            }
        };
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Writes the network config.
    pub async fn put_config(&self, value: &[u8]) -> Result<(), StoreError> {
        let key = self.config_key();
        self.call(|mut c| {
            let (k, v) = (key.clone(), value.to_vec());
            async move { c.put(k, v, None).await }
        })
        .await
        .map_err(self.req(format!("put {key}")))?;
        Ok(())
    }

    /// Every key under `<prefix>/subnets/` and the revision the listing was taken at.
    ///
    /// Paged, so a listing of any size works: pages of at most 1,000 keys, sized from the
    /// values seen so far to stay near 1 MiB, continuing after the last key, all at the
    /// revision of the first page (one consistent snapshot; started again if that revision
    /// is compacted meanwhile). A page over gRPC's 4 MiB limit is asked for again with fewer
    /// keys; a single key whose value alone is over it is listed without its value and
    /// refused as oversized.
    pub async fn list_leases(&self) -> Result<(Vec<RawLease>, i64), StoreError> {
        let prefix = self.subnets_prefix();
        self.list_paged(None, |kvs, out: &mut Vec<RawLease>| {
            out.extend(kvs.iter().map(|kv| raw(kv, &prefix)))
        })
        .await
    }

    /// Every key under `<prefix>/subnets/` with its mod revision, as of `revision` (the
    /// current one when None), without values: what the anti-entropy check compares with
    /// what the watch delivered (about 60 bytes per key instead of 200).
    pub async fn list_lease_revisions(
        &self,
        revision: Option<i64>,
    ) -> Result<(Vec<KeyRevision>, i64), StoreError> {
        self.list_paged(revision, |kvs, out: &mut Vec<KeyRevision>| {
            out.extend(kvs.iter().map(|kv| KeyRevision {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                mod_revision: kv.mod_revision(),
            }))
        })
        .await
        .map(|(keys, rev)| (keys, revision.unwrap_or(rev)))
    }

    /// The paging behind [`Store::list_leases`] and [`Store::list_lease_revisions`] (keys
    /// only when `T` says so), at revision `at` or the current one.
    async fn list_paged<T>(
        &self,
        at: Option<i64>,
        mut collect: impl FnMut(&[etcd_client::KeyValue], &mut Vec<T>),
    ) -> Result<(Vec<T>, i64), StoreError>
    where
        T: ListItem,
    {
        let prefix = self.subnets_prefix();
        let end = prefix_end(&prefix);
        'listing: loop {
            let mut out: Vec<T> = Vec::new();
            let mut from = prefix.as_bytes().to_vec();
            let mut rev = at.unwrap_or(0);
            let mut limit = PAGE_KEYS;
            loop {
                let mut opts = GetOptions::new().with_range(end.clone()).with_limit(limit);
                if rev > 0 {
                    opts = opts.with_revision(rev);
                }
                if T::KEYS_ONLY {
                    opts = opts.with_keys_only();
                }
                let resp = match self
                    .call(|mut c| {
                        let (k, o) = (from.clone(), opts.clone());
                        async move { c.get(k, Some(o)).await }
                    })
                    .await
                {
                    Ok(r) => r,
                    Err(e) if too_large(&e) && limit > 1 => {
                        limit = (limit / 4).max(1);
                        debug!(
                            limit,
                            "a page of {prefix} was over gRPC's message limit; asking for fewer keys"
                        );
                        continue;
                    }
                    Err(e) if too_large(&e) => {
                        // One value alone is over the limit: list that key without it.
                        let o = opts.clone().with_keys_only();
                        let r = self
                            .call(|mut c| {
                                let (k, o) = (from.clone(), o.clone());
                                async move { c.get(k, Some(o)).await }
                            })
                            .await
                            .map_err(self.req(format!("list {prefix}")))?;
                        if rev == 0 {
                            rev = r.header().map(|h| h.revision()).unwrap_or(0);
                        }
                        let Some(kv) = r.kvs().first() else {
                            break;
                        };
                        warn!(key = %String::from_utf8_lossy(kv.key()), limit = MAX_MESSAGE_BYTES, "a lease value is over gRPC's message limit; refusing that key");
                        let before = out.len();
                        collect(r.kvs(), &mut out);
                        T::mark_oversized(&mut out[before..]);
                        from = kv.key().to_vec();
                        from.push(0);
                        limit = 1;
                        if !r.more() {
                            break;
                        }
                        continue;
                    }
                    Err(e) if at.is_none() && rev > 0 && compacted(&e) => {
                        debug!(
                            "the revision of a paged listing of {prefix} was compacted; listing again"
                        );
                        continue 'listing;
                    }
                    Err(e) => return Err(self.req(format!("list {prefix}"))(e)),
                };
                if rev == 0 {
                    rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                }
                collect(resp.kvs(), &mut out);
                let Some(last) = resp.kvs().last() else {
                    break;
                };
                if !resp.more() {
                    break;
                }
                from = last.key().to_vec();
                from.push(0);
                // Size the next page from this one's bytes per key.
                let bytes: usize = resp
                    .kvs()
                    .iter()
                    .map(|kv| kv.key().len() + kv.value().len() + 32)
                    .sum();
                let per_key = (bytes / resp.kvs().len()).max(1);
                limit = ((PAGE_BYTES / per_key) as i64).clamp(1, PAGE_KEYS);
            }
            return Ok((out, rev));
        }
    }

    /// One lease key, if present.
    pub async fn get_lease(&self, subnet: Ipv4Net) -> Result<Option<RawLease>, StoreError> {
        let key = lease_key(&self.prefix, subnet);
        let prefix = self.subnets_prefix();
        let resp = self
            .call(|mut c| {
                let k = key.clone();
                async move { c.get(k, None).await }
            })
            .await
            .map_err(self.req(format!("get {key}")))?;
        Ok(resp.kvs().first().map(|kv| raw(kv, &prefix)))
    }

    /// flannel's createSubnet: grant a TTL lease, then put the key only if it does not exist
    /// (`version == 0`). Returns None when someone else holds the key (a lost race: the
    /// caller picks another subnet); the granted lease is revoked then, so nothing leaks.
    pub async fn create_lease(
        &self,
        subnet: Ipv4Net,
        value: &str,
        ttl: i64,
    ) -> Result<Option<HeldLease>, StoreError> {
        let key = lease_key(&self.prefix, subnet);
        let guard = Compare::version(key.clone(), CompareOp::Equal, 0);
        self.put_with_new_lease(subnet, &key, value, ttl, guard, "create")
            .await
    }

    /// Grants a `ttl` lease and puts `value` under `key` with it if `guard` holds. Returns
    /// None when the guard failed (someone else wrote the key); the lease is then revoked, so
    /// nothing leaks, and likewise on an error.
    async fn put_with_new_lease(
        &self,
        subnet: Ipv4Net,
        key: &str,
        value: &str,
        ttl: i64,
        guard: Compare,
        verb: &str,
    ) -> Result<Option<HeldLease>, StoreError> {
        let grant = self
            .call(|mut c| async move { c.lease_grant(ttl, None).await })
            .await
            .map_err(self.req(format!("grant a {ttl}s lease")))?;
        let id = grant.id();
        let txn = Txn::new().when([guard]).and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(id)),
        )]);
        match self
            .call(|mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await
        {
            Ok(r) if r.succeeded() => Ok(Some(HeldLease {
                subnet,
                lease_id: id,
                ttl: grant.ttl(),
            })),
            Ok(_) => {
                self.revoke_quietly(id).await;
                Ok(None)
            }
            Err(e) => {
                self.revoke_quietly(id).await;
                Err(self.req(format!("{verb} {key}"))(e))
            }
        }
    }

    /// Takes over an existing key that carries our public IP (flannel's reuse path). A
    /// reservation (a key without a lease) stays a reservation: it is rewritten without a
    /// lease only when its value changed (flannel turns it into a 24 h lease, #1329). A
    /// leased key gets a fresh lease, is rewritten only if it is still the version we read,
    /// and the old etcd lease is revoked once no key uses it, so renewals leave no orphans.
    /// Returns None when the key changed under us.
    pub async fn take_over(
        &self,
        existing: &RawLease,
        value: &str,
        ttl: i64,
    ) -> Result<Option<HeldLease>, StoreError> {
        let subnet = existing.subnet.clone().map_err(StoreError::BadKey)?;
        let key = existing.key.clone();
        if existing.lease_id == 0 {
            if existing.value != value.as_bytes() {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        existing.mod_revision,
                    )])
                    .and_then([TxnOp::put(key.clone(), value, None)]);
                let r = self
                    .call(|mut c| {
                        let t = txn.clone();
                        async move { c.txn(t).await }
                    })
                    .await
                    .map_err(self.req(format!("update reservation {key}")))?;
                if !r.succeeded() {
                    return Ok(None);
                }
            }
            return Ok(Some(HeldLease {
                subnet,
                lease_id: 0,
                ttl: 0,
            }));
        }
        // Same value and the lease still alive (a restart): renew in place, write nothing.
        if existing.value == value.as_bytes()
            && let Some(ttl) = self.renew(existing.lease_id).await?
        {
            return Ok(Some(HeldLease {
                subnet,
                lease_id: existing.lease_id,
                ttl,
            }));
        }
        let guard = Compare::mod_revision(key.clone(), CompareOp::Equal, existing.mod_revision);
        let held = self
            .put_with_new_lease(subnet, &key, value, ttl, guard, "take over")
            .await?;
        if held.is_some() {
            self.revoke_if_unused(existing.lease_id).await;
        }
        Ok(held)
    }

    /// Rewrites our own key in place, keeping the etcd lease we hold (`lease_id`, 0 for a
    /// reservation), if it is still the version we saw (`existing.mod_revision`): for a key
    /// of ours that someone overwrote with a value that is not ours (unparseable, or our IP
    /// with another VtepMAC or VNI). Returns false when the key changed again meanwhile (the
    /// watch brings that change) or our etcd lease is gone (the caller re-acquires).
    pub async fn rewrite_own(
        &self,
        existing: &RawLease,
        value: &str,
        lease_id: i64,
    ) -> Result<bool, StoreError> {
        let key = existing.key.clone();
        let opts = (lease_id != 0).then(|| PutOptions::new().with_lease(lease_id));
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                existing.mod_revision,
            )])
            .and_then([TxnOp::put(key.clone(), value, opts)]);
        match self
            .call(|mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await
        {
            Ok(r) => Ok(r.succeeded()),
            Err(etcd_client::Error::GRpcStatus(st)) if st.message().contains("lease not found") => {
                Ok(false)
            }
            Err(e) => Err(self.req(format!("rewrite {key}"))(e)),
        }
    }

    /// Renews our lease in place with one keep-alive, so the key, its value and its lease id
    /// stay the same and no orphan lease is left (flannel grants a new lease every renewal).
    /// Returns the new TTL, or None when the lease no longer exists.
    pub async fn renew(&self, lease_id: i64) -> Result<Option<i64>, StoreError> {
        let (mut keeper, mut stream) = match self
            .call(|mut c| async move { c.lease_keep_alive(lease_id).await })
            .await
        {
            Ok(k) => k,
            // etcd answers a keep-alive for an expired lease with TTL 0, which etcd-client
            // turns into this error: the lease is gone, which is an answer, not a failure.
            Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                return Ok(None);
            }
            Err(e) => return Err(self.req(format!("renew lease {lease_id:x}"))(e)),
        };
        keeper
            .keep_alive()
            .await
            .map_err(self.req(format!("renew lease {lease_id:x}")))?;
        let resp = stream
            .message()
            .await
            .map_err(self.req(format!("renew lease {lease_id:x}")))?;
        Ok(resp.map(|r| r.ttl()).filter(|ttl| *ttl > 0))
    }

    /// Seconds left on an etcd lease (None: expired or unknown; a key without a lease has no TTL).
    pub async fn ttl(&self, lease_id: i64) -> Result<Option<i64>, StoreError> {
        if lease_id == 0 {
            return Ok(None);
        }
        let r = self
            .call(|mut c| async move { c.lease_time_to_live(lease_id, None).await })
            .await
            .map_err(self.req(format!("read TTL of lease {lease_id:x}")))?;
        Ok(Some(r.ttl()).filter(|t| *t > 0))
    }

    /// Deletes a subnet key (an incompatible lease of ours, per flannel's acquire).
    pub async fn delete_lease(&self, subnet: Ipv4Net) -> Result<(), StoreError> {
        let key = lease_key(&self.prefix, subnet);
        self.call(|mut c| {
            let k = key.clone();
            async move { c.delete(k, None).await }
        })
        .await
        .map_err(self.req(format!("delete {key}")))?;
        Ok(())
    }

    /// Revokes a lease, deleting the keys attached to it.
    pub async fn revoke(&self, lease_id: i64) -> Result<(), StoreError> {
        self.call(|mut c| async move { c.lease_revoke(lease_id).await })
            .await
            .map_err(self.req(format!("revoke lease {lease_id:x}")))?;
        Ok(())
    }

    async fn revoke_quietly(&self, id: i64) {
        if let Err(e) = self.revoke(id).await {
            debug!(lease = id, error = %e, "could not revoke an unused lease; it expires by itself");
        }
    }

    async fn revoke_if_unused(&self, id: i64) {
        let opts = LeaseTimeToLiveOptions::new().with_keys();
        match self
            .call(|mut c| {
                let o = opts.clone();
                async move { c.lease_time_to_live(id, Some(o)).await }
            })
            .await
        {
            Ok(r) if r.ttl() > 0 && r.keys().is_empty() => self.revoke_quietly(id).await,
            Ok(_) => {}
            Err(e) => debug!(lease = id, error = %e, "could not inspect the previous lease"),
        }
    }

    /// Starts a watch on `<prefix>/subnets/` from `start_revision`.
    pub async fn watch_leases(&self, start_revision: i64) -> Result<LeaseWatch, StoreError> {
        let prefix = self.subnets_prefix();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision)
            .with_progress_notify();
        let stream = self
            .call(|mut c| {
                let (p, o) = (prefix.clone(), opts.clone());
                async move { c.watch(p, Some(o)).await }
            })
            .await
            .map_err(self.req(format!("watch {prefix}")))?;
        Ok(LeaseWatch { stream, prefix })
    }

    /// The underlying client, for the CLI's less common requests.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

/// The revision a watch response proves delivered: its last event's mod revision, or for a
/// response without events (a progress notification) the header's revision.
fn delivered_revision(event_revisions: impl Iterator<Item = i64>, header: i64) -> i64 {
    event_revisions.max().unwrap_or(header)
}

/// What a paged listing collects.
pub trait ListItem {
    /// Whether the pages are asked for without values.
    const KEYS_ONLY: bool;
    /// Marks items listed without their value because it alone is over gRPC's limit.
    fn mark_oversized(items: &mut [Self])
    where
        Self: Sized;
}

impl ListItem for RawLease {
    const KEYS_ONLY: bool = false;
    fn mark_oversized(items: &mut [Self]) {
        for i in items {
            i.oversized = Some(MAX_MESSAGE_BYTES);
        }
    }
}

impl ListItem for KeyRevision {
    const KEYS_ONLY: bool = true;
    fn mark_oversized(_: &mut [Self]) {}
}

/// A running watch on the subnet keys.
pub struct LeaseWatch {
    stream: WatchStream,
    prefix: String,
}

impl LeaseWatch {
    /// Asks etcd for a progress notification: once the watch has caught up, etcd answers
    /// with an empty batch carrying the current revision (see [`WatchBatch::Events`]).
    pub async fn request_progress(&mut self) -> Result<(), StoreError> {
        self.stream
            .request_progress()
            .await
            .map_err(|cause| StoreError::Request {
                what: format!("watch {} (progress request)", self.prefix),
                hint: None,
                cause,
            })
    }

    /// The next batch of events. `Ok(None)` means the stream ended (etcd went away): the
    /// caller reconnects from its last revision + 1. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<WatchBatch>, StoreError> {
        loop {
            let Some(resp) = self
                .stream
                .message()
                .await
                .map_err(|cause| StoreError::Request {
                    what: format!("watch {}", self.prefix),
                    hint: None,
                    cause,
                })?
            else {
                return Ok(None);
            };
            if resp.compact_revision() > 0 {
                return Ok(Some(WatchBatch::Compacted(resp.compact_revision())));
            }
            if resp.canceled() {
                warn!(
                    reason = resp.cancel_reason(),
                    "etcd cancelled the lease watch"
                );
                return Err(StoreError::WatchCancelled {
                    prefix: self.prefix.clone(),
                    reason: resp.cancel_reason().to_string(),
                });
            }
            if resp.created() && resp.events().is_empty() {
                continue;
            }
            // The revision everything up to which has been delivered. Not the header's while
            // events come: etcd stamps every response with its current revision, also the
            // batches (of up to 1,000 revisions) of a watch that is still catching up, so
            // resuming from the header would skip the batches not yet sent. An empty
            // response is a progress notification, which etcd sends only to a watch that has
            // caught up: then the header's revision is delivered in full.
            let revision = delivered_revision(
                resp.events()
                    .iter()
                    .filter_map(|e| e.kv())
                    .map(|kv| kv.mod_revision()),
                resp.header().map(|h| h.revision()).unwrap_or(0),
            );
            let events = resp
                .events()
                .iter()
                .filter_map(|ev| {
                    let kv = ev.kv()?;
                    Some(match ev.event_type() {
                        EventType::Put => LeaseEvent::Put(raw(kv, &self.prefix)),
                        EventType::Delete => {
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            LeaseEvent::Delete {
                                subnet: key_to_subnet(&key, &self.prefix),
                                key,
                            }
                        }
                    })
                })
                .collect();
            return Ok(Some(WatchBatch::Events { events, revision }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_split_and_checked() {
        assert_eq!(
            parse_endpoints(" http://a:2379, https://b:2379/ ,"),
            Ok(vec![
                "http://a:2379".to_string(),
                "https://b:2379".to_string()
            ])
        );
        assert_eq!(
            parse_endpoints(" , "),
            Err(EndpointError::Empty(" , ".into()))
        );
        assert_eq!(
            parse_endpoints("10.0.0.1:2379"),
            Err(EndpointError::Scheme("10.0.0.1:2379".into()))
        );
        let msg = |v: &str| parse_endpoints(v).unwrap_err().to_string();
        assert!(
            msg("10.0.0.1:2379").ends_with("e.g. http://10.0.0.1:2379"),
            "{}",
            msg("10.0.0.1:2379")
        );
        assert!(
            msg("ftp://x:2379").ends_with("e.g. http://x:2379"),
            "{}",
            msg("ftp://x:2379")
        );
        let long = msg(&format!("ftp://{}", "a".repeat(100_000)));
        assert!(
            long.len() < 400,
            "a huge value is not echoed whole: {} bytes",
            long.len()
        );
    }

    #[test]
    fn causes_are_said_once() {
        let e = read(Path::new("/nonexistent/ca.pem"), "CA file", "etcd-cafile").unwrap_err();
        // Printed as a chain (what `{:#}` of anyhow does): the message, then each source.
        let mut text = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(s) = cur {
            text.push_str(&format!(": {s}"));
            cur = s.source();
        }
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(text.contains("--etcd-cafile"), "{text}");
    }

    #[test]
    fn keys_map_to_subnets_and_strangers_are_named() {
        let p = "/coreos.com/network/subnets/";
        assert_eq!(
            key_to_subnet("/coreos.com/network/subnets/10.244.3.0-24", p),
            Ok("10.244.3.0/24".parse().unwrap())
        );
        assert!(key_to_subnet("/coreos.com/network/subnets/junk", p).is_err());
        assert!(
            key_to_subnet("/elsewhere/10.244.3.0-24", p)
                .unwrap_err()
                .contains("not under")
        );
    }

    #[test]
    fn a_watch_resumes_after_the_last_delivered_event_not_the_header() {
        // A catching-up watch gets revisions 101..=1100 stamped with the store's 5000.
        assert_eq!(delivered_revision([101, 700, 1100].into_iter(), 5000), 1100);
        // A progress notification (no events) proves the header's revision.
        assert_eq!(delivered_revision(std::iter::empty(), 5000), 5000);
    }

    #[test]
    fn prefix_ranges_end_after_the_prefix() {
        assert_eq!(prefix_end("/a/subnets/"), b"/a/subnets0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn tls_half_configured_is_refused() {
        let cfg = StoreConfig {
            endpoints: vec!["https://127.0.0.1:2379".into()],
            cert_file: Some("/x.crt".into()),
            ..Default::default()
        };
        let err = Store::connect_options(&cfg).err().unwrap().to_string();
        assert!(err.contains("--etcd-keyfile"), "{err}");
    }

    #[test]
    fn tls_with_plain_http_endpoint_is_refused() {
        let dir = std::env::temp_dir().join(format!("weft-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let cfg = StoreConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ca_file: Some(ca),
            ..Default::default()
        };
        let err = Store::connect_options(&cfg).err().unwrap().to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(err.contains("plain http"), "{err}");
    }

    #[test]
    fn missing_ca_file_names_the_file_and_flag() {
        let cfg = StoreConfig {
            endpoints: vec!["https://127.0.0.1:2379".into()],
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = Store::connect_options(&cfg).err().unwrap().to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("--etcd-cafile"),
            "{err}"
        );
    }

    #[test]
    fn password_is_redacted_in_debug() {
        let cfg = StoreConfig {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
