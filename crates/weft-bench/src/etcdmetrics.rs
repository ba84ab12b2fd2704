//! etcd's own Prometheus metrics (`GET /metrics` on its client port), so the load weft puts
//! on etcd is counted by etcd itself, not by weftd.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::ns;

pub use weft_testbed::prom::Scrape;

/// Scrapes etcd at `ip:port` from a thread inside namespace `from`.
pub fn scrape(from: &str, ip: Ipv4Addr, port: u16) -> Result<Scrape> {
    let (status, body) = ns::join(ns::spawn_in(from, move || {
        weft_testbed::http::get((ip, port).into(), "/metrics", Duration::from_secs(2))
            .with_context(|| format!("scraping etcd's metrics at {ip}:{port}"))
    })?)?;
    if status != 200 {
        bail!("etcd's /metrics at {ip}:{port} answered HTTP {status}");
    }
    let scrape = Scrape::parse(&body);
    if !scrape.is_etcd() {
        bail!("the answer of {ip}:{port}/metrics has no etcd server metrics");
    }
    Ok(scrape)
}
