//! Durations for people: `156 ms`, `4.2s`, `40s`, `5m3s`, `23h59m`, `2d3h`. JSON output keeps
//! plain numbers (seconds or milliseconds, as the field name says); only text uses these.

use std::time::Duration;

/// A duration as people read it: milliseconds below a second, tenths of seconds below ten
/// seconds, then seconds, minutes and seconds, hours and minutes, days and hours (each the two
/// largest units, the rest dropped).
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let secs = d.as_secs();
    if secs < 10 {
        let tenths = (ms % 1000) / 100;
        return if tenths == 0 {
            format!("{secs}s")
        } else {
            format!("{secs}.{tenths}s")
        };
    }
    let (days, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    let two = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    if days > 0 {
        two(days, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "m")
    } else if m > 0 {
        two(m, "m", s, "s")
    } else {
        format!("{s}s")
    }
}

/// A TTL in whole seconds (as etcd gives it); a negative one (never from etcd) reads as 0.
pub fn ttl(seconds: i64) -> String {
    duration(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        for (d, text) in [
            (ms(0), "0 ms"),
            (ms(156), "156 ms"),
            (ms(999), "999 ms"),
            (ms(1000), "1s"),
            (ms(4250), "4.2s"),
            (s(40), "40s"),
            (s(60), "1m"),
            (s(303), "5m3s"),
            (s(600), "10m"),
            (s(3690), "1h1m"),
            (s(86_399), "23h59m"),
            (s(86_400), "1d"),
            (s(7 * 86_400 + 3 * 3600 + 59), "7d3h"),
        ] {
            assert_eq!(duration(d), text, "{d:?}");
        }
        assert_eq!(ttl(86_395), "23h59m");
        assert_eq!(ttl(5), "5s");
        assert_eq!(ttl(-3), "0 ms");
    }
}
