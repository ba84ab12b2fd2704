//! etcd's own Prometheus metrics (`GET /metrics` on its client port), so the load weft puts
//! on etcd is counted by etcd itself, not by weftd.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::ns;

pub use weft_testbed::prom::Scrape;

/// Scrapes etcd at `ip:port` from a thread inside namespace `from`.
pub fn scrape(from: &str, ip: Ipv4Addr, port: u16) -> Result<Scrape> {
    let text = ns::join(ns::spawn_in(from, move || {
        let mut s =
            std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2))
                .with_context(|| format!("connecting to etcd's metrics at {ip}:{port}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {ip}\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    })?)?;
    let Some((status, body)) = text.split_once("\r\n\r\n") else {
        bail!("etcd's /metrics answered without a header/body split");
    };
    if !status.starts_with("HTTP/1.") || !status.contains(" 200 ") {
        bail!(
            "etcd's /metrics answered {}",
            status.lines().next().unwrap_or("")
        );
    }
    let scrape = Scrape::parse(body);
    if !scrape.is_etcd() {
        bail!("the answer of {ip}:{port}/metrics has no etcd server metrics");
    }
    Ok(scrape)
}
