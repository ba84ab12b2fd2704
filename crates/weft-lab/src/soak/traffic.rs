//! The traffic a soak keeps up between pods on different nodes: 20 ms pings (iputils `ping`,
//! started and stopped by pid through the testbed) and long-lived TCP request/response flows
//! (a small echo implemented here, with its sockets opened inside the pod namespaces), whose
//! every reset, stall or corrupted echo is recorded.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tracing::{debug, warn};
use weft_testbed::{Pinger, Pod, Testbed, in_netns};

use super::figures::{LossTag, SeqTracker};

/// Interval of the pings and of the TCP requests.
pub const INTERVAL: Duration = Duration::from_millis(20);
/// A TCP reply later than this counts as a broken flow.
const TCP_STALL: Duration = Duration::from_secs(5);

/// A background ping from a pod on one node to a pod on another.
#[derive(Debug)]
pub struct PingPair {
    pub from: usize,
    pub to: usize,
    pub from_ip: Ipv4Addr,
    pub to_ip: Ipv4Addr,
    pinger: Option<Pinger>,
    log: PathBuf,
    offset: u64,
    tracker: SeqTracker,
}

/// What one ping pair saw over the whole soak.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PingResult {
    pub from: String,
    pub to: String,
    pub from_ip: Ipv4Addr,
    pub to_ip: Ipv4Addr,
    /// Echo requests sent (the one in flight when ping was stopped not counted).
    pub sent: u64,
    /// Requests without a reply.
    pub lost: u64,
    /// Of those, lost while the soak was deliberately breaking one end's data plane (drift).
    pub lost_during_damage: u64,
    /// Lost at any other time: each one is a failure.
    pub lost_unexpected: u64,
    /// Why the pinger could not be read, if it could not.
    pub error: Option<String>,
}

impl PingPair {
    pub fn start(tb: &mut Testbed, from: &Pod, to: &Pod) -> Result<PingPair> {
        let pinger = tb
            .start_pinger(&from.ns, to.ip, INTERVAL)
            .with_context(|| format!("starting a ping from {} to {}", from.ip, to.ip))?;
        Ok(PingPair {
            from: from.node,
            to: to.node,
            from_ip: from.ip,
            to_ip: to.ip,
            log: pinger.log_path().to_path_buf(),
            pinger: Some(pinger),
            offset: 0,
            tracker: SeqTracker::default(),
        })
    }

    /// Reads what ping printed since the last call; new gaps get `tag`.
    pub fn drain(&mut self, tag: LossTag) {
        use std::io::{Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.log) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_ok() {
            self.offset += buf.len() as u64;
            self.tracker.feed(&String::from_utf8_lossy(&buf), tag);
        }
    }

    /// Replies received so far.
    pub fn highest(&self) -> u64 {
        self.tracker.highest()
    }

    /// Lost requests found so far that count as failures.
    pub fn unexpected_so_far(&self) -> u64 {
        self.tracker.lost(LossTag::Unexpected)
    }

    /// Stops ping (SIGINT by pid) and returns what it saw.
    pub fn stop(&mut self, tb: &mut Testbed, names: &[String]) -> PingResult {
        self.drain(LossTag::Unexpected);
        let stats = self.pinger.take().map(|p| p.stop(tb));
        self.drain(LossTag::Unexpected);
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("n{i}"));
        let mut r = PingResult {
            from: name(self.from),
            to: name(self.to),
            from_ip: self.from_ip,
            to_ip: self.to_ip,
            sent: 0,
            lost: 0,
            lost_during_damage: self.tracker.lost(LossTag::Damage),
            lost_unexpected: self.tracker.lost(LossTag::Unexpected),
            error: None,
        };
        match stats {
            Some(Ok(st)) => {
                // Requests after the last reply: one may have been in flight when ping was
                // stopped; any more were lost.
                let trailing = u64::from(st.transmitted).saturating_sub(self.tracker.highest());
                r.lost_unexpected += trailing.saturating_sub(1);
                r.sent = u64::from(st.transmitted) - trailing.min(1);
            }
            Some(Err(e)) => r.error = Some(format!("{e}")),
            None => r.error = Some("the pinger was already stopped".into()),
        }
        r.lost = r.lost_unexpected + r.lost_during_damage;
        r
    }
}

/// Counters of one TCP flow.
#[derive(Debug, Default)]
struct FlowStats {
    round_trips: u64,
    max_rtt: Duration,
    /// When and how the flow broke (reset, stall, bad echo, failed reconnect).
    errors: Vec<(Instant, String)>,
}

/// A long-lived TCP connection from a pod on one node to a pod on another: an 8-byte request
/// and its echo every 20 ms. A broken connection is recorded and re-established.
pub struct Flow {
    pub from: usize,
    pub to: usize,
    pub from_ip: Ipv4Addr,
    pub to_ip: Ipv4Addr,
    stop: Arc<AtomicBool>,
    client: Option<JoinHandle<FlowStats>>,
    server: Option<JoinHandle<()>>,
}

/// What one TCP flow saw over the whole soak.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowResult {
    pub from: String,
    pub to: String,
    pub from_ip: Ipv4Addr,
    pub to_ip: Ipv4Addr,
    pub round_trips: u64,
    /// Times the connection broke (each one is a failure).
    pub resets: u64,
    pub max_rtt_ms: f64,
    /// When (seconds into the soak, and the scenario running then) and how it broke.
    pub errors: Vec<String>,
}

impl Flow {
    /// Listens in `server`'s namespace on `port`, connects from `client`'s, and starts the
    /// request/response loop.
    pub fn start(client: &Pod, server: &Pod, port: u16) -> Result<Flow> {
        let stop = Arc::new(AtomicBool::new(false));
        let ip = server.ip;
        let listener = in_netns(&server.ns, move || TcpListener::bind((ip, port)))?
            .with_context(|| format!("listening on {ip}:{port} in {}", server.ns))?;
        listener.set_nonblocking(true)?;
        let stop_server = stop.clone();
        let server_thread = std::thread::Builder::new()
            .name(format!("echo:{ip}:{port}"))
            .spawn(move || serve(listener, stop_server))?;
        let first = connect(&client.ns, ip, port)
            .with_context(|| format!("connecting from {} to {ip}:{port}", client.ip))?;
        let stop_client = stop.clone();
        let ns = client.ns.clone();
        let client_thread = std::thread::Builder::new()
            .name(format!("flow:{}->{ip}", client.ip))
            .spawn(move || run_client(first, &ns, ip, port, &stop_client))?;
        Ok(Flow {
            from: client.node,
            to: server.node,
            from_ip: client.ip,
            to_ip: server.ip,
            stop,
            client: Some(client_thread),
            server: Some(server_thread),
        })
    }

    /// Stops the flow; `label` names a moment of the soak (seconds and scenario).
    pub fn stop(&mut self, names: &[String], label: impl Fn(Instant) -> String) -> FlowResult {
        self.stop.store(true, Ordering::SeqCst);
        let stats = self
            .client
            .take()
            .map(|h| {
                h.join().unwrap_or_else(|_| FlowStats {
                    errors: vec![(Instant::now(), "the flow's thread panicked".into())],
                    ..FlowStats::default()
                })
            })
            .unwrap_or_default();
        if let Some(h) = self.server.take() {
            let _ = h.join();
        }
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("n{i}"));
        FlowResult {
            from: name(self.from),
            to: name(self.to),
            from_ip: self.from_ip,
            to_ip: self.to_ip,
            round_trips: stats.round_trips,
            resets: stats.errors.len() as u64,
            max_rtt_ms: (stats.max_rtt.as_secs_f64() * 1e6).round() / 1e3,
            errors: stats
                .errors
                .iter()
                .map(|(at, e)| format!("{}: {e}", label(*at)))
                .collect(),
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.client.take() {
            let _ = h.join();
        }
        if let Some(h) = self.server.take() {
            let _ = h.join();
        }
    }
}

/// A TCP connection opened from inside `ns` (the socket stays in that namespace).
fn connect(ns: &str, ip: Ipv4Addr, port: u16) -> Result<TcpStream> {
    let s = in_netns(ns, move || {
        TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2))
    })??;
    s.set_read_timeout(Some(TCP_STALL))?;
    s.set_write_timeout(Some(TCP_STALL))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn run_client(first: TcpStream, ns: &str, ip: Ipv4Addr, port: u16, stop: &AtomicBool) -> FlowStats {
    let mut st = FlowStats::default();
    let mut conn = Some(first);
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let mut s = match conn.take() {
            Some(s) => s,
            None => match connect(ns, ip, port) {
                Ok(s) => {
                    debug!(%ip, port, "flow re-connected");
                    s
                }
                Err(e) => {
                    st.errors
                        .push((Instant::now(), format!("reconnect failed: {e:#}")));
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        loop {
            if stop.load(Ordering::SeqCst) {
                return st;
            }
            let t = Instant::now();
            match round_trip(&mut s, n) {
                Ok(()) => {
                    st.round_trips += 1;
                    st.max_rtt = st.max_rtt.max(t.elapsed());
                    n += 1;
                }
                Err(e) => {
                    warn!(%ip, port, after = n, "TCP flow broke: {e:#}");
                    st.errors
                        .push((Instant::now(), format!("after {n} round trips: {e:#}")));
                    break;
                }
            }
            std::thread::sleep(INTERVAL);
        }
    }
    st
}

fn round_trip(s: &mut TcpStream, n: u64) -> Result<()> {
    s.write_all(&n.to_be_bytes()).context("write")?;
    let mut b = [0u8; 8];
    s.read_exact(&mut b).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            anyhow!("no echo within {}s (stalled)", TCP_STALL.as_secs())
        }
        _ => anyhow!("read: {e}"),
    })?;
    let got = u64::from_be_bytes(b);
    if got != n {
        return Err(anyhow!("echo {got} instead of {n}"));
    }
    Ok(())
}

/// Accepts connections and echoes every byte back until `stop`.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, peer)) => {
                debug!(%peer, "echo: accepted");
                let stop = stop.clone();
                conns.push(std::thread::spawn(move || echo(s, &stop)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(INTERVAL);
            }
            Err(e) => {
                warn!("echo server: accept: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

fn echo(mut s: TcpStream, stop: &AtomicBool) {
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(Duration::from_millis(200)))
            .is_err()
    {
        return;
    }
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}
