//! `ping` result parsing and the background [`Pinger`].

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::{Testbed, TestbedError};

/// The summary of a `ping` run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// Average round-trip time; `None` when nothing was received.
    pub avg_rtt_ms: Option<f64>,
}

impl PingStats {
    /// Echo requests that got no reply.
    pub fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }

    /// Fraction of requests lost, 0.0 ..= 1.0 (0.0 when nothing was sent).
    pub fn loss_ratio(&self) -> f64 {
        if self.transmitted == 0 {
            0.0
        } else {
            f64::from(self.lost()) / f64::from(self.transmitted)
        }
    }
}

/// Parses iputils' summary: `N packets transmitted, M received, ...` and
/// `rtt min/avg/max/mdev = a/b/c/d ms`.
pub fn parse_ping_summary(output: &str) -> Option<PingStats> {
    let mut counts = None;
    let mut avg = None;
    for line in output.lines() {
        let line = line.trim();
        if line.contains("packets transmitted") {
            let mut parts = line.split(',');
            let tx = first_number(parts.next()?)?;
            let rx_part = parts.next()?;
            if !rx_part.contains("received") {
                return None;
            }
            let rx = first_number(rx_part)?;
            counts = Some((tx, rx));
        } else if line.starts_with("rtt ") || line.starts_with("round-trip ") {
            avg = line
                .split('=')
                .nth(1)
                .and_then(|v| v.trim().split('/').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok());
        }
    }
    let (transmitted, received) = counts?;
    Some(PingStats {
        transmitted,
        received,
        avg_rtt_ms: if received > 0 { avg } else { None },
    })
}

fn first_number(s: &str) -> Option<u32> {
    s.split_whitespace().next()?.parse().ok()
}

/// The `icmp_seq` of every reply line (`64 bytes from ...: icmp_seq=N ...`).
pub fn parse_reply_seqs(output: &str) -> Vec<u32> {
    output
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| {
            let rest = &l[l.find("icmp_seq=")? + "icmp_seq=".len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

/// A background `ping` started by [`Testbed::start_pinger`].
///
/// Stop it with [`Pinger::stop`] to get its statistics; if it is simply dropped,
/// the testbed kills it at teardown.
#[derive(Debug)]
pub struct Pinger {
    pub(crate) pid: Pid,
    pub(crate) log: PathBuf,
    pub(crate) from_ns: String,
    pub(crate) to: Ipv4Addr,
    pub(crate) interval: Duration,
}

impl Pinger {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The file ping's output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn from_ns(&self) -> &str {
        &self.from_ns
    }

    pub fn target(&self) -> Ipv4Addr {
        self.to
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Sequence numbers of the replies received so far (read from the log). With
    /// the interval this gives the length of an outage: the longest gap times
    /// the interval.
    pub fn replies_so_far(&self) -> Result<Vec<u32>, TestbedError> {
        Ok(parse_reply_seqs(&read_log(&self.log)?))
    }

    /// SIGINT by pid, wait (up to 5 s) for ping to exit and parse its summary.
    pub fn stop(self, tb: &mut Testbed) -> Result<PingStats, TestbedError> {
        tb.signal(self.pid, Signal::SIGINT)?;
        let timeout = Duration::from_secs(5);
        if tb.wait_exit(self.pid, timeout)?.is_none() {
            let _ = tb.signal(self.pid, Signal::SIGKILL);
            let _ = tb.wait_exit(self.pid, timeout);
            return Err(TestbedError::Timeout {
                what: format!("ping {} in {} after SIGINT", self.to, self.from_ns),
                pid: self.pid,
                timeout,
            });
        }
        let out = read_log(&self.log)?;
        parse_ping_summary(&out).ok_or_else(|| TestbedError::PingParse {
            cmd: format!("ping {} (pinger in {})", self.to, self.from_ns),
            output: out,
        })
    }
}

pub(crate) fn read_log(path: &Path) -> Result<String, TestbedError> {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| TestbedError::Io {
            what: format!("reading {}", path.display()),
            source: e,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_summary() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.055 ms\n\
                   64 bytes from 10.0.0.2: icmp_seq=3 ttl=64 time=0.052 ms\n\
                   \n--- 10.0.0.2 ping statistics ---\n\
                   13 packets transmitted, 12 received, 7.69231% packet loss, time 286ms\n\
                   rtt min/avg/max/mdev = 0.039/0.046/0.055/0.005 ms\n";
        let s = parse_ping_summary(out).unwrap();
        assert_eq!(s.transmitted, 13);
        assert_eq!(s.received, 12);
        assert_eq!(s.lost(), 1);
        assert_eq!(s.avg_rtt_ms, Some(0.046));
        assert_eq!(parse_reply_seqs(out), vec![1, 3]);
    }

    #[test]
    fn parses_total_loss_with_errors() {
        let out = "--- 10.0.0.9 ping statistics ---\n\
                   5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4004ms\n";
        let s = parse_ping_summary(out).unwrap();
        assert_eq!((s.transmitted, s.received, s.avg_rtt_ms), (5, 0, None));
        assert_eq!(s.lost(), 5);
        assert!((s.loss_ratio() - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn rejects_output_without_summary() {
        assert_eq!(
            parse_ping_summary("ping: connect: Network is unreachable\n"),
            None
        );
    }
}
