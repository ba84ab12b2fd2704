//! A bare etcd v3 client living in a testbed namespace: writes synthetic leases, and watches
//! (the floor of control-plane convergence: how fast etcd itself tells a watcher).

use std::net::Ipv4Addr;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use ipnet::Ipv4Net;
use weft_core::lease::LeaseAttrs;
use weft_core::mac::MacAddr;

use crate::ns::NsRuntime;

pub const CONFIG_KEY: &str = "/coreos.com/network/config";
pub const SUBNETS: &str = "/coreos.com/network/subnets/";

/// flannel's key for a subnet: `<prefix>/subnets/10.244.3.0-24`.
pub fn lease_key(subnet: Ipv4Net) -> String {
    format!("{SUBNETS}{}-{}", subnet.network(), subnet.prefix_len())
}

/// The value a flanneld/weftd with this public IP and VTEP MAC writes (VNI 1).
pub fn lease_value(public_ip: Ipv4Addr, mac: [u8; 6]) -> String {
    LeaseAttrs::vxlan(public_ip, 1, MacAddr(mac)).to_json()
}

/// The value a flanneld/weftd with the host-gw backend and this public IP writes:
/// `{"PublicIP":"…","PublicIPv6":null,"BackendType":"host-gw"}`.
pub fn lease_value_host_gw(public_ip: Ipv4Addr) -> String {
    LeaseAttrs::host_gw(public_ip).to_json()
}

/// A watch notification as the bare watcher saw it.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub at: Instant,
    pub key: String,
    pub put: bool,
}

/// An etcd client whose sockets live in one namespace.
pub struct Etcd {
    rt: NsRuntime,
    client: Client,
}

impl Etcd {
    /// Connects from namespace `ns` to `endpoint` and checks the connection with one read.
    pub fn connect(ns: &str, endpoint: &str) -> Result<Etcd> {
        let rt = NsRuntime::new(ns)?;
        let ep = endpoint.to_string();
        let client = rt.call(move || async move {
            let opts = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(3))
                .with_timeout(Duration::from_secs(10));
            let mut c = Client::connect([ep], Some(opts)).await?;
            c.get("/weft-bench/ping", None).await?;
            Ok::<_, etcd_client::Error>(c)
        })?;
        let client =
            client.with_context(|| format!("connecting to etcd at {endpoint} from {ns}"))?;
        Ok(Etcd { rt, client })
    }

    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        let mut c = self.client.clone();
        let (k, v) = (key.to_string(), value.to_string());
        self.rt
            .call(move || async move { c.put(k, v, None).await.map(drop) })?
            .with_context(|| format!("etcd put {key}"))
    }

    /// Deletes one key; returns how many keys went.
    pub fn delete(&self, key: &str) -> Result<i64> {
        let mut c = self.client.clone();
        let k = key.to_string();
        self.rt
            .call(move || async move { c.delete(k, None).await.map(|r| r.deleted()) })?
            .with_context(|| format!("etcd delete {key}"))
    }

    /// `etcdctl del --prefix <prefix>`; returns how many keys went.
    pub fn delete_prefix(&self, prefix: &str) -> Result<i64> {
        let mut c = self.client.clone();
        let k = prefix.to_string();
        self.rt
            .call(move || async move {
                c.delete(k, Some(etcd_client::DeleteOptions::new().with_prefix()))
                    .await
                    .map(|r| r.deleted())
            })?
            .with_context(|| format!("etcd delete --prefix {prefix}"))
    }

    /// Writes many keys, 100 per transaction (etcd allows 128 operations per txn).
    pub fn put_many(&self, kvs: Vec<(String, String)>) -> Result<()> {
        let mut c = self.client.clone();
        self.rt
            .call(move || async move {
                for chunk in kvs.chunks(100) {
                    let ops: Vec<TxnOp> = chunk
                        .iter()
                        .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
                        .collect();
                    c.txn(Txn::new().and_then(ops)).await?;
                }
                Ok::<_, etcd_client::Error>(())
            })?
            .context("etcd bulk put")
    }

    /// How many keys exist under `prefix`.
    pub fn count(&self, prefix: &str) -> Result<i64> {
        let mut c = self.client.clone();
        let k = prefix.to_string();
        self.rt
            .call(move || async move {
                c.get(k, Some(GetOptions::new().with_prefix().with_count_only()))
                    .await
                    .map(|r| r.count())
            })?
            .context("etcd count")
    }

    /// What flannel's lease acquisition costs against etcd, done by a bare client over a
    /// fresh connection: connect, list the subnets, grant a lease, create the key with a
    /// `version == 0` guard. Returns the elapsed time.
    pub fn bare_acquire(ns: &str, endpoint: &str, key: String, value: String) -> Result<Duration> {
        let rt = NsRuntime::new(ns)?;
        let ep = endpoint.to_string();
        rt.call(move || async move {
            let t0 = Instant::now();
            let mut c = Client::connect([ep], None).await?;
            c.get(SUBNETS, Some(GetOptions::new().with_prefix()))
                .await?;
            let lease = c.lease_grant(86400, None).await?;
            let txn = Txn::new()
                .when([etcd_client::Compare::version(
                    key.clone(),
                    etcd_client::CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    key,
                    value,
                    Some(etcd_client::PutOptions::new().with_lease(lease.id())),
                )]);
            c.txn(txn).await?;
            Ok::<_, etcd_client::Error>(t0.elapsed())
        })?
        .context("bare lease acquisition")
    }

    /// Watches `prefix` and returns once etcd confirmed the watch; events arrive on the
    /// receiver stamped with the moment the client read them.
    pub fn watch(&self, prefix: &str) -> Result<Receiver<WatchEvent>> {
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel::<std::result::Result<(), String>>();
        let mut c = self.client.clone();
        let p = prefix.to_string();
        self.rt.spawn(move || async move {
            let mut stream = match c
                .watch(p.as_str(), Some(WatchOptions::new().with_prefix()))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let mut created = false;
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        let at = Instant::now();
                        if !created && resp.created() {
                            created = true;
                            let _ = ready_tx.send(Ok(()));
                        }
                        for ev in resp.events() {
                            if let Some(kv) = ev.kv() {
                                let _ = tx.send(WatchEvent {
                                    at,
                                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                                    put: ev.event_type() == EventType::Put,
                                });
                            }
                        }
                    }
                    Ok(None) | Err(_) => {
                        if !created {
                            let _ = ready_tx.send(Err("the watch stream ended".into()));
                        }
                        return;
                    }
                }
            }
        })?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(rx),
            Ok(Err(e)) => bail!("etcd watch on {prefix}: {e}"),
            Err(_) => Err(anyhow!(
                "etcd watch on {prefix} was not created within 10 s"
            )),
        }
    }
}
