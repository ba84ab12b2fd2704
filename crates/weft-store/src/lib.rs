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
        "--etcd-endpoints {0:?} holds no endpoint; pass e.g. --etcd-endpoints http://10.0.0.5:2379"
    )]
    Empty(String),
    #[error("--etcd-endpoints entry {0:?} must start with http:// or https://, e.g. http://{0}")]
    Scheme(String),
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
    #[error("cannot read {what} {path}: {source}; check --{flag}")]
    File {
        what: &'static str,
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error(
        "cannot connect to etcd at {endpoints}: {source}; check that etcd is running and reachable and that --etcd-endpoints is right"
    )]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd request failed ({what}): {source}")]
    Request {
        what: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd watch on {prefix} was cancelled: {reason}")]
    WatchCancelled { prefix: String, reason: String },
    #[error("{0}")]
    BadKey(String),
}

impl StoreError {
    fn req(what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Request { what, source }
    }
}

/// One key under `<prefix>/subnets/` as etcd holds it.
#[derive(Debug, Clone)]
pub struct RawLease {
    pub key: String,
    /// The subnet the key names, or why the key is not a subnet key.
    pub subnet: Result<Ipv4Net, String>,
    pub value: Vec<u8>,
    /// The etcd lease the key is attached to; 0 for a reservation (no TTL).
    pub lease_id: i64,
    pub mod_revision: i64,
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
}

fn read(path: &Path, what: &'static str, flag: &'static str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::File {
        what,
        flag,
        path: path.to_path_buf(),
        source,
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
    RawLease {
        subnet: key_to_subnet(&key, subnets_prefix),
        key,
        value: kv.value().to_vec(),
        lease_id: kv.lease(),
        mod_revision: kv.mod_revision(),
    }
}

impl Store {
    /// Builds the connection options: TLS when a CA or a client cert is given (a CA alone
    /// means server-verified TLS, never a silent fallback to plain HTTP as in flanneld),
    /// username/password auth, short timeouts and HTTP/2 keep-alives so a dead etcd is
    /// noticed within seconds.
    pub fn connect_options(cfg: &StoreConfig) -> Result<ConnectOptions, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
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
            if let Some(ca) = &cfg.ca_file {
                tls =
                    tls.ca_certificate(Certificate::from_pem(read(ca, "CA file", "etcd-cafile")?));
            }
            if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "client certificate", "etcd-certfile")?,
                    read(key, "client key", "etcd-keyfile")?,
                ));
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
            .map_err(|source| StoreError::Connect {
                endpoints: cfg.endpoints.join(","),
                source,
            })?;
        Ok(Store {
            client,
            prefix: cfg.prefix.clone(),
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
        let resp = c
            .get(key.clone(), None)
            .await
            .map_err(StoreError::req(format!("get {key}")))?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Writes the network config.
    pub async fn put_config(&self, value: &[u8]) -> Result<(), StoreError> {
        let key = self.config_key();
        let mut c = self.client.clone();
        c.put(key.clone(), value.to_vec(), None)
            .await
            .map_err(StoreError::req(format!("put {key}")))?;
        Ok(())
    }

    /// Every key under `<prefix>/subnets/` and the revision the listing was taken at.
    pub async fn list_leases(&self) -> Result<(Vec<RawLease>, i64), StoreError> {
        let prefix = self.subnets_prefix();
        let mut c = self.client.clone();
        let resp = c
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(StoreError::req(format!("list {prefix}")))?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.kvs().iter().map(|kv| raw(kv, &prefix)).collect(), rev))
    }

    /// One lease key, if present.
    pub async fn get_lease(&self, subnet: Ipv4Net) -> Result<Option<RawLease>, StoreError> {
        let key = lease_key(&self.prefix, subnet);
        let prefix = self.subnets_prefix();
        let mut c = self.client.clone();
        let resp = c
            .get(key.clone(), None)
            .await
            .map_err(StoreError::req(format!("get {key}")))?;
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
        let mut c = self.client.clone();
        let grant = c
            .lease_grant(ttl, None)
            .await
            .map_err(StoreError::req(format!("grant a {ttl}s lease")))?;
        let id = grant.id();
        let txn = Txn::new().when([guard]).and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(id)),
        )]);
        match c.txn(txn).await {
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
                Err(StoreError::Request {
                    what: format!("{verb} {key}"),
                    source: e,
                })
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
        let mut c = self.client.clone();
        if existing.lease_id == 0 {
            if existing.value != value.as_bytes() {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        existing.mod_revision,
                    )])
                    .and_then([TxnOp::put(key.clone(), value, None)]);
                let r = c
                    .txn(txn)
                    .await
                    .map_err(StoreError::req(format!("update reservation {key}")))?;
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

    /// Renews our lease in place with one keep-alive, so the key, its value and its lease id
    /// stay the same and no orphan lease is left (flannel grants a new lease every renewal).
    /// Returns the new TTL, or None when the lease no longer exists.
    pub async fn renew(&self, lease_id: i64) -> Result<Option<i64>, StoreError> {
        let mut c = self.client.clone();
        let (mut keeper, mut stream) = c
            .lease_keep_alive(lease_id)
            .await
            .map_err(StoreError::req(format!("renew lease {lease_id:x}")))?;
        keeper
            .keep_alive()
            .await
            .map_err(StoreError::req(format!("renew lease {lease_id:x}")))?;
        let resp = stream
            .message()
            .await
            .map_err(StoreError::req(format!("renew lease {lease_id:x}")))?;
        Ok(resp.map(|r| r.ttl()).filter(|ttl| *ttl > 0))
    }

    /// Seconds left on an etcd lease (None: expired or unknown; a key without a lease has no TTL).
    pub async fn ttl(&self, lease_id: i64) -> Result<Option<i64>, StoreError> {
        if lease_id == 0 {
            return Ok(None);
        }
        let mut c = self.client.clone();
        let r = c
            .lease_time_to_live(lease_id, None)
            .await
            .map_err(StoreError::req(format!("read TTL of lease {lease_id:x}")))?;
        Ok(Some(r.ttl()).filter(|t| *t > 0))
    }

    /// Deletes a subnet key (an incompatible lease of ours, per flannel's acquire).
    pub async fn delete_lease(&self, subnet: Ipv4Net) -> Result<(), StoreError> {
        let key = lease_key(&self.prefix, subnet);
        let mut c = self.client.clone();
        c.delete(key.clone(), None)
            .await
            .map_err(StoreError::req(format!("delete {key}")))?;
        Ok(())
    }

    /// Revokes a lease, deleting the keys attached to it.
    pub async fn revoke(&self, lease_id: i64) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        c.lease_revoke(lease_id)
            .await
            .map_err(StoreError::req(format!("revoke lease {lease_id:x}")))?;
        Ok(())
    }

    async fn revoke_quietly(&self, id: i64) {
        if let Err(e) = self.revoke(id).await {
            debug!(lease = id, error = %e, "could not revoke an unused lease; it expires by itself");
        }
    }

    async fn revoke_if_unused(&self, id: i64) {
        let mut c = self.client.clone();
        match c
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
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
        let mut c = self.client.clone();
        let stream = c
            .watch(
                prefix.clone(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(start_revision),
                ),
            )
            .await
            .map_err(StoreError::req(format!("watch {prefix}")))?;
        Ok(LeaseWatch { stream, prefix })
    }

    /// The underlying client, for the CLI's less common requests.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

/// A running watch on the subnet keys.
pub struct LeaseWatch {
    stream: WatchStream,
    prefix: String,
}

impl LeaseWatch {
    /// The next batch of events. `Ok(None)` means the stream ended (etcd went away): the
    /// caller reconnects from its last revision + 1.
    pub async fn next(&mut self) -> Result<Option<WatchBatch>, StoreError> {
        loop {
            let Some(resp) = self
                .stream
                .message()
                .await
                .map_err(StoreError::req(format!("watch {}", self.prefix)))?
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
            let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.created() && resp.events().is_empty() {
                continue;
            }
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
