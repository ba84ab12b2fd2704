//! Pure helpers of `weft-lab soak`: durations on the command line, percentiles, and the ping
//! sequence tracker that tells which lost packets fell inside a deliberate-damage window.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Parses `500ms`, `40s`, `10m`, `1h`, or a sum such as `1m30s`. A bare number is refused
/// (seconds or minutes would be a guess).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. 40s, 10m or 1h30m".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}; write e.g. 40s, 10m or 1h30m"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: {n} has no unit; write {n}s or {n}m"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?}; use ms, s, m or h"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// A duration for messages and the report: the CLI's one format ([`weft::human::duration`]).
pub fn show_duration(d: Duration) -> String {
    weft::human::duration(d)
}

/// Count, median and maximum of a set of timings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Summary {
    /// The nearest-rank median and the maximum.
    pub fn of(values: &[Duration]) -> Summary {
        let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let p50 = (!ms.is_empty()).then(|| ms[(ms.len() - 1) / 2]);
        Summary {
            count: ms.len(),
            p50_ms: p50.map(round3),
            max_ms: ms.last().copied().map(round3),
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Why a lost echo request is, or is not, held against weftd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossTag {
    /// Lost while the soak was deliberately damaging the data plane on one end (drift).
    Damage,
    /// Lost at any other time: a failure.
    Unexpected,
}

/// Follows one `ping` log as it grows and notes every sequence number that never got a
/// reply, tagged with the window the gap was found in.
///
/// iputils prints one line per reply (`64 bytes from ...: icmp_seq=N ...`); a missing N is a
/// lost request. The 16-bit `icmp_seq` wraps after 65535 (22 minutes at 20 ms), so numbers are
/// unwrapped. A late reply (out of order) takes its number off the missing list.
#[derive(Debug, Default)]
pub struct SeqTracker {
    partial: String,
    last_raw: Option<u16>,
    /// The highest unwrapped sequence number replied to.
    highest: u64,
    missing: BTreeMap<u64, LossTag>,
    replies: u64,
}

impl SeqTracker {
    /// Feeds newly read log text; gaps found in it get `tag`.
    pub fn feed(&mut self, text: &str, tag: LossTag) {
        self.partial.push_str(text);
        let Some(end) = self.partial.rfind('\n') else {
            return;
        };
        let complete: String = self.partial.drain(..=end).collect();
        for seq in weft_testbed::parse_reply_seqs(&complete) {
            self.reply(seq, tag);
        }
    }

    fn reply(&mut self, raw: u32, tag: LossTag) {
        let raw = (raw & 0xffff) as u16;
        let seq = match self.last_raw {
            None => u64::from(raw),
            Some(last) => {
                let delta = i64::from(raw.wrapping_sub(last) as i16);
                (self.highest as i64 + delta).max(0) as u64
            }
        };
        if seq > self.highest || self.last_raw.is_none() {
            // ping numbers from 1: everything between the last reply and this one is lost
            let from = if self.last_raw.is_none() {
                1
            } else {
                self.highest + 1
            };
            for lost in from..seq {
                self.missing.insert(lost, tag);
            }
            self.highest = seq;
            self.last_raw = Some(raw);
            self.replies += 1;
        } else if self.missing.remove(&seq).is_some() {
            self.replies += 1; // a late reply
        }
        // else: a duplicate
    }

    /// The highest sequence number replied to so far.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Requests lost so far, by tag.
    pub fn lost(&self, tag: LossTag) -> u64 {
        self.missing.values().filter(|t| **t == tag).count() as u64
    }

    /// The lost sequence numbers with their tag.
    #[cfg(test)]
    pub fn missing(&self) -> impl Iterator<Item = (u64, LossTag)> + '_ {
        self.missing.iter().map(|(s, t)| (*s, *t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_sums() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 5s "), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        assert!(parse_duration("60").unwrap_err().contains("60s"));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").unwrap_err().contains("40s"));
        assert!(
            parse_duration("m")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn durations_show_compactly() {
        assert_eq!(show_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show_duration(Duration::from_secs(40)), "40s");
        assert_eq!(show_duration(Duration::from_secs(600)), "10m");
        assert_eq!(show_duration(Duration::from_secs(3690)), "1h1m");
    }

    #[test]
    fn summary_is_nearest_rank_median_and_max() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let s = Summary::of(&ms(&[30, 10, 20, 40]));
        assert_eq!((s.count, s.p50_ms, s.max_ms), (4, Some(20.0), Some(40.0)));
        let s = Summary::of(&ms(&[5]));
        assert_eq!((s.p50_ms, s.max_ms), (Some(5.0), Some(5.0)));
        let s = Summary::of(&[]);
        assert_eq!((s.count, s.p50_ms, s.max_ms), (0, None, None));
    }

    fn replies(seqs: &[u32]) -> String {
        seqs.iter()
            .map(|s| format!("64 bytes from 10.244.1.2: icmp_seq={s} ttl=62 time=0.1 ms\n"))
            .collect()
    }

    #[test]
    fn gaps_are_tagged_with_the_window_they_were_found_in() {
        let mut t = SeqTracker::default();
        t.feed(
            "PING 10.244.1.2 (10.244.1.2) 56(84) bytes of data.\n",
            LossTag::Unexpected,
        );
        t.feed(&replies(&[1, 2, 3]), LossTag::Unexpected);
        t.feed(&replies(&[6, 7]), LossTag::Damage);
        t.feed(&replies(&[9]), LossTag::Unexpected);
        assert_eq!(t.lost(LossTag::Damage), 2);
        assert_eq!(t.lost(LossTag::Unexpected), 1);
        assert_eq!(t.highest(), 9);
    }

    #[test]
    fn partial_lines_wait_for_their_end_and_late_replies_count() {
        let mut t = SeqTracker::default();
        let text = replies(&[1, 3]);
        let (a, b) = text.split_at(20);
        t.feed(a, LossTag::Unexpected);
        assert_eq!(t.highest(), 0);
        t.feed(b, LossTag::Unexpected);
        assert_eq!(t.lost(LossTag::Unexpected), 1);
        t.feed(&replies(&[2]), LossTag::Unexpected);
        assert_eq!(t.lost(LossTag::Unexpected), 0, "a late reply is not a loss");
        t.feed(
            "64 bytes from 10.244.1.2: icmp_seq=3 ttl=62 time=0.1 ms (DUP!)\n",
            LossTag::Unexpected,
        );
        assert_eq!(t.highest(), 3);
    }

    #[test]
    fn the_sequence_number_wraps_after_65535() {
        let mut t = SeqTracker::default();
        t.feed(&replies(&[65534, 65535, 0, 2]), LossTag::Unexpected);
        // (1..=65533 count as lost too: ping numbers from 1)
        assert_eq!(t.highest(), 65538);
        assert_eq!(
            t.missing()
                .filter(|(s, _)| *s > 65534)
                .map(|(s, _)| s)
                .collect::<Vec<_>>(),
            vec![65537]
        );
    }
}
