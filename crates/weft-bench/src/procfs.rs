//! What a process costs, from /proc, and which children it forks (the kernel's process
//! events connector: every fork is reported, however short-lived the child).

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_CONNECTOR};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

/// A `/proc/<pid>/status` field in KiB (VmHWM, VmRSS, ...).
pub fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU time of a process: (own user+system, waited-for children's user+system), in seconds.
pub fn cpu_seconds(pid: i32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and ends at the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, so index 11.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let tck = clk_tck() as f64;
    Some((
        (n(11)? + n(12)?) as f64 / tck,
        (n(13)? + n(14)?) as f64 / tck,
    ))
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
pub fn clk_tck() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_FORK: u32 = 1;
const PROC_EVENT_EXEC: u32 = 2;
const NLMSG_DONE: u16 = 3;

/// Counts the processes (not threads) a set of parents forks, with the program each child
/// exec'd, using the proc connector (needs root, and a socket in the initial network
/// namespace: the connector exists only there; it carries no traffic).
pub struct ForkCounter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Default)]
struct Seen {
    watched: Vec<i32>,
    /// child pid -> (parent pid, program, if known)
    children: BTreeMap<i32, (i32, String)>,
}

impl ForkCounter {
    pub fn start() -> Result<ForkCounter> {
        let mut sock = Socket::new(NETLINK_CONNECTOR).context("opening a connector socket")?;
        sock.bind(&SocketAddr::new(std::process::id(), CN_IDX_PROC))
            .context("binding to the proc connector (are you root?)")?;
        setsockopt(
            &sock.as_fd(),
            sockopt::ReceiveTimeout,
            &TimeVal::new(0, 100_000),
        )?;
        let _ = setsockopt(&sock.as_fd(), sockopt::RcvBufForce, &(8usize << 20));
        control(&sock, PROC_CN_MCAST_LISTEN)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (ready_tx, ready_rx) = channel::<()>();
        let (s2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::Builder::new()
            .name("forks".into())
            .spawn(move || listen(sock, &s2, &seen2, ready_tx))?;
        wait_ready(ready_rx)?;
        Ok(ForkCounter {
            stop,
            thread: Some(thread),
            seen,
        })
    }

    /// Starts counting the children of `pid` from now on.
    pub fn watch(&self, pid: i32) {
        if let Ok(mut s) = self.seen.lock() {
            s.watched.push(pid);
        }
    }

    /// Children of `pid` seen so far: (count, programs with counts).
    pub fn children_of(&self, pid: i32) -> (usize, BTreeMap<String, usize>) {
        let mut programs = BTreeMap::new();
        let mut n = 0;
        if let Ok(s) = self.seen.lock() {
            for (parent, prog) in s.children.values() {
                if *parent == pid {
                    n += 1;
                    *programs.entry(prog.clone()).or_insert(0) += 1;
                }
            }
        }
        (n, programs)
    }

    /// Forgets the children seen so far (start of a new window).
    pub fn reset(&self) {
        if let Ok(mut s) = self.seen.lock() {
            s.children.clear();
        }
    }
}

impl Drop for ForkCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_ready(rx: Receiver<()>) -> Result<()> {
    rx.recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow!("the proc connector listener did not start"))
}

fn control(sock: &Socket, op: u32) -> Result<()> {
    let mut msg = Vec::with_capacity(40);
    msg.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes()); // nlmsg_type
    msg.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
    msg.extend_from_slice(&std::process::id().to_ne_bytes()); // nlmsg_pid
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // cb_id.idx
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // cb_id.val
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
    msg.extend_from_slice(&4u16.to_ne_bytes()); // len
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&op.to_ne_bytes());
    let sent = sock
        .send_to(&msg, &SocketAddr::new(0, 0), 0)
        .context("subscribing to process events")?;
    if sent != msg.len() {
        bail!("short write to the proc connector");
    }
    Ok(())
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn listen(sock: Socket, stop: &AtomicBool, seen: &Mutex<Seen>, ready: std::sync::mpsc::Sender<()>) {
    let _ = ready.send(());
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    while !stop.load(Ordering::SeqCst) {
        buf.clear();
        match sock.recv(&mut buf, 0) {
            Ok(_) => {
                // nlmsghdr (16) + cn_msg (20) + proc_event: what, cpu, timestamp (16), data.
                let Some(what) = u32_at(&buf, 36) else {
                    continue;
                };
                let data = 52;
                let (Some(a), Some(b), Some(c), Some(d)) = (
                    u32_at(&buf, data),
                    u32_at(&buf, data + 4),
                    u32_at(&buf, data + 8),
                    u32_at(&buf, data + 12),
                ) else {
                    continue;
                };
                let Ok(mut s) = seen.lock() else {
                    return;
                };
                if what == PROC_EVENT_FORK {
                    // parent_pid a, parent_tgid b, child_pid c, child_tgid d
                    let (parent, child, child_tgid) = (b as i32, c as i32, d as i32);
                    if child == child_tgid && s.watched.contains(&parent) {
                        s.children.insert(child, (parent, String::from("?")));
                    }
                } else if what == PROC_EVENT_EXEC {
                    let pid = a as i32;
                    if let Some(entry) = s.children.get_mut(&pid) {
                        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .map(|c| c.trim().to_string())
                            .unwrap_or_else(|_| "?".into());
                        entry.1 = comm;
                    }
                }
            }
            Err(e) => {
                let code = e.raw_os_error();
                if code != Some(Errno::EAGAIN as i32)
                    && code != Some(Errno::EINTR as i32)
                    && code != Some(Errno::ENOBUFS as i32)
                {
                    break;
                }
            }
        }
    }
    let _ = control(&sock, PROC_CN_MCAST_IGNORE);
}
