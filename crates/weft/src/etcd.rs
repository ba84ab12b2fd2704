//! The thin etcd v3 layer of the CLI: connect, read and write the config, list the leases
//! with their TTLs. Everything it returns is plain data for the pure modules.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use weft_store::{Store, StoreConfig};

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
        let store = Store::connect(&cfg).await.map_err(|e| match e {
            weft_store::StoreError::Connect {
                endpoints,
                cause,
                hint,
            } => anyhow!(
                "cannot connect to etcd at {endpoints}: {}; {}",
                root_cause(&cause),
                hint.unwrap_or_else(|| "is etcd running and reachable there? check --etcd-endpoints (or FLANNELD_ETCD_ENDPOINTS)".into())
            ),
            other => anyhow!("{other}"),
        })?;
        Ok(Etcd { store, cfg })
    }

    /// `http://a:2379,http://b:2379`, for messages.
    pub fn endpoints(&self) -> String {
        self.cfg.endpoints.join(",")
    }

    /// "cannot <what> (etcd at <endpoints>): <root cause>; <hint>", one line without the
    /// repeated gRPC/tonic layers.
    fn failed(&self, what: &str, e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
        anyhow!(
            "cannot {what} (etcd at {}): {}; is etcd running and reachable there? check --etcd-endpoints (or FLANNELD_ETCD_ENDPOINTS), and --etcd-cafile/--etcd-certfile/--etcd-keyfile/--etcd-username if etcd requires them",
            self.endpoints(),
            root_cause(e)
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
            .map_err(|e| self.failed(&format!("read {}", self.config_key()), &e))
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
            .map_err(|e| self.failed(&format!("list {prefix}"), &e))?;
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
                    Err(e) => Ttl::Unknown(root_cause(&e)),
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
