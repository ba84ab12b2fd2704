//! Tables (Markdown, printed to stdout) and the little statistics they need.

use std::fmt::Write as _;
use std::time::Duration;

/// One scenario's result table.
#[derive(Debug, Clone)]
pub struct Table {
    pub title: String,
    /// What the floor column is, measured in the same run.
    pub floor: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, floor: &str, headers: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            floor: floor.to_string(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "#### {}\n", self.title);
        let _ = writeln!(out, "Floor: {}\n", self.floor);
        let _ = writeln!(out, "| {} |", self.headers.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            self.headers.iter().map(|_| "---|").collect::<String>()
        );
        for r in &self.rows {
            let mut cells = r.clone();
            cells.resize(self.headers.len(), String::new());
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

/// Nearest-rank percentile of unsorted samples (`p` in 0..=100); None when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

pub fn percentile_f(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

pub fn median(samples: &[Duration]) -> Option<Duration> {
    percentile(samples, 50.0)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A duration in ms with sensible precision.
pub fn fmt_ms(d: Option<Duration>) -> String {
    match d {
        None => "n/a".into(),
        Some(d) => fmt_ms_f(ms(d)),
    }
}

pub fn fmt_ms_f(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 1000.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// Milliseconds shown in µs (latencies well under a millisecond).
pub fn fmt_us(ms: f64) -> String {
    format!("{:.0} µs", ms * 1e3)
}

/// `a / b` as `1.23×`.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

pub fn ratio_d(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a.as_secs_f64(), b.as_secs_f64()),
        _ => "n/a".into(),
    }
}

/// "yes" / "**NO**" for a goal check (printed, never asserted).
pub fn met(ok: bool) -> String {
    if ok { "yes".into() } else { "**NO**".into() }
}

pub fn gbit(bps: f64) -> String {
    format!("{:.2} Gbit/s", bps / 1e9)
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile_f(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
    }

    #[test]
    fn table_has_header_separator_and_pads_rows() {
        let mut t = Table::new("x", "y", &["metric", "weft", "floor", "ratio"]);
        t.row(vec!["a".into(), "1".into()]);
        let s = t.render();
        assert!(s.contains("| metric | weft | floor | ratio |"));
        assert!(s.contains("|---|---|---|---|"));
        assert!(s.contains("| a | 1 |  |  |"));
    }

    #[test]
    fn formats() {
        assert_eq!(ratio(3.0, 2.0), "1.50×");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(fmt_ms_f(1.234), "1.23 ms");
        assert_eq!(fmt_ms_f(12.34), "12.3 ms");
        assert_eq!(gbit(12.5e9), "12.50 Gbit/s");
    }
}
