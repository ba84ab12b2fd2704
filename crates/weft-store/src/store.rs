//! The store: leases, the network config, paged listings, guarded writes.

use std::path::Path;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity,
    LeaseTimeToLiveOptions, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use ipnet::{Ipv4Net, Ipv6Net};
use tracing::{debug, warn};
use weft_core::subnet::{
    Subnets, config_key, lease_key, parse_subnet_key, parse_subnet_key_dual, subnets_key_prefix,
};

use crate::*;

/// One key under `<prefix>/subnets/` as etcd holds it.
#[derive(Debug, Clone)]
pub struct RawLease {
    pub key: String,
    /// The subnet the key names, or why the key is not a subnet key.
    pub subnet: Result<Ipv4Net, String>,
    /// The IPv6 subnet a dual-stack key names (`…&fc00:0:0:1::-64`).
    pub subnet6: Option<Ipv6Net>,
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
    /// The IPv6 subnet of a dual-stack lease.
    pub subnet6: Option<Ipv6Net>,
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

pub(crate) fn read(
    path: &Path,
    what: &'static str,
    flag: &'static str,
) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|cause| StoreError::File {
        what,
        flag,
        path: path.to_path_buf(),
        cause,
    })
}

pub(crate) fn key_to_subnet(key: &str, subnets_prefix: &str) -> Result<Ipv4Net, String> {
    let tail = key
        .strip_prefix(subnets_prefix)
        .ok_or_else(|| format!("key {key} is not under {subnets_prefix}"))?;
    parse_subnet_key(tail).map_err(|e| e.to_string())
}

/// The IPv6 subnet a dual-stack lease key names, if any.
pub(crate) fn key_to_subnet6(key: &str, subnets_prefix: &str) -> Option<Ipv6Net> {
    let tail = key.strip_prefix(subnets_prefix)?;
    parse_subnet_key_dual(tail).ok()?.1
}

pub(crate) fn raw(kv: &etcd_client::KeyValue, subnets_prefix: &str) -> RawLease {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let size = kv.value().len();
    let oversized = (size > MAX_LEASE_BYTES).then_some(size);
    RawLease {
        subnet: key_to_subnet(&key, subnets_prefix),
        subnet6: key_to_subnet6(&key, subnets_prefix),
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
        let mut attempt = 0;
        let resp = loop {
            // `call` sends again what a dead member's endpoint refused (up to twice per
            // endpoint), as for every other request.
            let got = self
                .call(|mut c| {
                    let k = key.clone();
                    async move { c.get(k, None).await }
                })
                .await;
            match got {
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
    pub async fn get_lease(
        &self,
        subnet: impl Into<Subnets>,
    ) -> Result<Option<RawLease>, StoreError> {
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
        subnet: impl Into<Subnets>,
        value: &str,
        ttl: i64,
    ) -> Result<Option<HeldLease>, StoreError> {
        let subnet: Subnets = subnet.into();
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
        subnet: Subnets,
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
                subnet: subnet.v4,
                subnet6: subnet.v6,
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
        let subnet = Subnets {
            v4: existing.subnet.clone().map_err(StoreError::BadKey)?,
            v6: existing.subnet6,
        };
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
                subnet: subnet.v4,
                subnet6: subnet.v6,
                lease_id: 0,
                ttl: 0,
            }));
        }
        // Same value and the lease still alive (a restart): renew in place, write nothing.
        if existing.value == value.as_bytes()
            && let Some(ttl) = self.renew(existing.lease_id).await?
        {
            return Ok(Some(HeldLease {
                subnet: subnet.v4,
                subnet6: subnet.v6,
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
    pub async fn delete_lease(&self, subnet: impl Into<Subnets>) -> Result<(), StoreError> {
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
