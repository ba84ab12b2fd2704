//! The thin etcd v3 layer of the CLI: connect, read and write the config, list the leases
//! with their TTLs. Everything it returns is plain data for the pure modules.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use weft_store::{Store, StoreConfig, StoreError};

use crate::cli::EtcdArgs;
use crate::report::{LeaseInput, Ttl};

/// A connected store and how it was reached.
pub struct Etcd {
    pub store: Store,
    pub cfg: StoreConfig,
}

impl Etcd {
    pub async fn connect(args: &EtcdArgs) -> Result<Etcd> {
        let cfg = args.store_config()?;
        let store = Store::connect(&cfg).await.map_err(|e| match &e {
            StoreError::Connect { endpoints, .. } => {
                let (cause, hint) = store_cause(&e);
                anyhow!(
                    "cannot connect to etcd at {endpoints}: {cause}; {}",
                    hint.unwrap_or_else(|| "is etcd running and reachable there? check --etcd-endpoints (or FLANNELD_ETCD_ENDPOINTS)".into())
                )
            }
            other => anyhow!("{other}"),
        })?;
        Ok(Etcd { store, cfg })
    }

    /// `http://a:2379,http://b:2379`, for messages.
    pub fn endpoints(&self) -> String {
        self.cfg.endpoints.join(",")
    }

    /// "cannot <what> (etcd at <endpoints>): <root cause>; <fix>", one line without the
    /// repeated gRPC/tonic layers (and without their debug dump of the transport error).
    fn failed(&self, what: &str, e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
        self.failed_with(what, root_cause(e), None)
    }

    /// [`Etcd::failed`] for weft-store's errors: the etcd-client error inside, and the TLS
    /// setup's hint as the fix when it has one.
    fn store_failed(&self, what: &str, e: &StoreError) -> anyhow::Error {
        let (cause, hint) = store_cause(e);
        self.failed_with(what, cause, hint)
    }

    fn failed_with(&self, what: &str, cause: String, hint: Option<String>) -> anyhow::Error {
        let fix = hint.unwrap_or_else(|| "is etcd running and reachable there? check --etcd-endpoints (or FLANNELD_ETCD_ENDPOINTS), and --etcd-cafile/--etcd-certfile/--etcd-keyfile/--etcd-username if etcd requires them".into());
        anyhow!(
            "cannot {what} (etcd at {}): {cause}; {fix}",
            self.endpoints()
        )
    }

    pub fn config_key(&self) -> String {
        self.store.config_key()
    }

    /// The stored config, None when the key does not exist.
    pub async fn get_config(&self) -> Result<Option<Vec<u8>>> {
        self.store
            .get_config()
            .await
            .map_err(|e| self.store_failed(&format!("read {}", self.config_key()), &e))
    }

    /// Writes the config only if the key still holds what was read (`stored`), so a
    /// concurrent writer is never silently overwritten.
    pub async fn write_config(&self, stored: Option<&[u8]>, raw: &str) -> Result<()> {
        let key = self.config_key();
        let cmp = match stored {
            None => Compare::version(key.clone(), CompareOp::Equal, 0),
            Some(v) => Compare::value(key.clone(), CompareOp::Equal, v.to_vec()),
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key.clone(), raw, None)]);
        let resp = self
            .store
            .client()
            .txn(txn)
            .await
            .map_err(|e| self.failed(&format!("write {key}"), &e))?;
        if !resp.succeeded() {
            bail!(
                "{key} changed while weft was writing it (someone else wrote the config at the same time); nothing was written: run the command again to compare with the new value"
            );
        }
        Ok(())
    }

    /// Every key under `<prefix>/subnets/`, with the TTL of its etcd lease.
    pub async fn leases(&self) -> Result<Vec<LeaseInput>> {
        let prefix = self.store.subnets_prefix();
        let (raw, _) = self
            .store
            .list_leases()
            .await
            .map_err(|e| self.store_failed(&format!("list {prefix}"), &e))?;
        let mut ttls: HashMap<i64, Ttl> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for lease in raw {
            let ttl = if lease.lease_id == 0 {
                Ttl::Reservation
            } else if let Some(t) = ttls.get(&lease.lease_id) {
                t.clone()
            } else {
                let t = match self.store.ttl(lease.lease_id).await {
                    Ok(Some(s)) => Ttl::Seconds(s),
                    Ok(None) => Ttl::Expired,
                    Err(e) => Ttl::Unknown(store_cause(&e).0),
                };
                ttls.insert(lease.lease_id, t.clone());
                t
            };
            out.push(LeaseInput {
                name: lease
                    .key
                    .strip_prefix(&prefix)
                    .unwrap_or(&lease.key)
                    .to_string(),
                subnet: lease.subnet,
                value: lease.value,
                oversized: lease.oversized,
                ttl,
            });
        }
        Ok(out)
    }
}

/// The cause of a weft-store error in one line (the innermost error of the etcd-client error
/// it carries; weft-store's own Display embeds that error's text, which for a gRPC status is a
/// debug dump of the whole transport chain), and the TLS setup's hint, if any.
pub fn store_cause(e: &StoreError) -> (String, Option<String>) {
    match e {
        StoreError::Connect { cause, hint, .. } | StoreError::Request { cause, hint, .. } => {
            (root_cause(cause), hint.clone())
        }
        other => (root_cause(other), None),
    }
}

/// The innermost error of a chain: for etcd-client errors the gRPC status message or the
/// socket error, without the wrappers that repeat it.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    loop {
        // etcd-client's gRPC status error has no `source()`; step into the status by hand.
        if let Some(etcd_client::Error::GRpcStatus(status)) =
            cur.downcast_ref::<etcd_client::Error>()
        {
            return match std::error::Error::source(status) {
                Some(inner) => root_cause(inner),
                None => status.message().to_string(),
            };
        }
        match cur.source() {
            Some(next) => cur = next,
            None => return cur.to_string(),
        }
    }
}
