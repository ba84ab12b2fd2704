//! A long-lived TCP flow between two namespaces, the proof that a connection survives a
//! change (a weftd restart, an etcd outage, a migration): the client sends a counter and
//! reads its echo every `every` until stopped. A reset, a wrong echo, or no echo within 5 s
//! ends the flow with that error; otherwise it returns the number of round trips.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{TestbedError, in_netns};

/// How long the client waits for the connection and for each echo.
const WAIT: Duration = Duration::from_secs(5);

/// Starts an echo server on `server_ip:port` in `server_ns` and, once it listens, a client
/// in `client_ns` that makes a round trip every `every` until `stop` is set. The handle
/// yields the round trips made, or the first error.
pub fn tcp_flow(
    server_ns: &str,
    server_ip: Ipv4Addr,
    client_ns: &str,
    port: u16,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<u64, String>>, TestbedError> {
    let listener =
        in_netns(server_ns, move || TcpListener::bind((server_ip, port)))?.map_err(|e| {
            TestbedError::Io {
                what: format!("listen on {server_ip}:{port} in {server_ns}"),
                source: e,
            }
        })?;
    std::thread::spawn(move || echo(listener));
    let client_ns = client_ns.to_string();
    Ok(std::thread::spawn(move || {
        in_netns(&client_ns, move || client(server_ip, port, every, &stop))
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    }))
}

/// Echoes what the one client sends until it closes the connection.
fn echo(listener: TcpListener) -> Result<(), String> {
    let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
    let mut b = [0u8; 8];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Ok(()),
            Ok(n) => s.write_all(&b[..n]).map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn client(ip: Ipv4Addr, port: u16, every: Duration, stop: &AtomicBool) -> Result<u64, String> {
    let mut s = TcpStream::connect_timeout(&(ip, port).into(), WAIT)
        .map_err(|e| format!("connect to {ip}:{port}: {e}"))?;
    s.set_read_timeout(Some(WAIT)).ok();
    let mut n = 0u64;
    let mut b = [0u8; 8];
    while !stop.load(Ordering::Relaxed) {
        s.write_all(&n.to_be_bytes())
            .map_err(|e| format!("write after {n}: {e}"))?;
        s.read_exact(&mut b)
            .map_err(|e| format!("read after {n}: {e}"))?;
        if u64::from_be_bytes(b) != n {
            return Err(format!("echo mismatch at {n}"));
        }
        n += 1;
        std::thread::sleep(every);
    }
    Ok(n)
}
