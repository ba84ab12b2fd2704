//! CNI spec versions: which ones weft-cni speaks and how they compare.

/// Every spec version weft-cni accepts in `cniVersion`, oldest first (the same list as
/// flannel's plugin, built with libcni's `version.All`).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest version, reported by VERSION when the caller did not ask for one and used in
/// error JSON when the config did not say.
pub const DEFAULT_VERSION: &str = "1.1.0";

/// The version a config without `cniVersion` means (the spec's original version).
pub const IMPLICIT_VERSION: &str = "0.1.0";

/// A parsed `MAJOR.MINOR.PATCH` spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecVersion(pub u32, pub u32, pub u32);

impl SpecVersion {
    /// CHECK exists from 0.4.0 on.
    pub const CHECK: SpecVersion = SpecVersion(0, 4, 0);
    /// STATUS and GC exist from 1.1.0 on.
    pub const STATUS_GC: SpecVersion = SpecVersion(1, 1, 0);

    /// Parses `"0.3.1"`; an empty string is [`IMPLICIT_VERSION`].
    pub fn parse(text: &str) -> Option<SpecVersion> {
        let text = if text.is_empty() {
            IMPLICIT_VERSION
        } else {
            text
        };
        let mut parts = text.split('.');
        let mut next = || -> Option<u32> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let v = SpecVersion(next()?, next()?, next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(v)
    }
}

/// The config's version if weft-cni supports it (empty counts as 0.1.0).
pub fn check_supported(version: &str) -> Result<SpecVersion, crate::Error> {
    let effective = if version.is_empty() {
        IMPLICIT_VERSION
    } else {
        version
    };
    if SUPPORTED_VERSIONS.contains(&effective)
        && let Some(v) = SpecVersion::parse(effective)
    {
        return Ok(v);
    }
    Err(crate::Error::UnsupportedVersion {
        version: weft_core::clip::clip(version),
    })
}

/// The VERSION answer: `{"cniVersion":"<requested or 1.1.0>","supportedVersions":[...]}`.
///
/// `stdin` is what the runtime sent (`{"cniVersion":"x"}`, possibly empty or the whole
/// config); anything unreadable just means "no version requested".
pub fn version_reply(stdin: &[u8]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Reply<'a> {
        cni_version: &'a str,
        supported_versions: &'a [&'a str],
    }
    let requested = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| !v.is_empty());
    let reply = Reply {
        cni_version: requested.as_deref().unwrap_or(DEFAULT_VERSION),
        supported_versions: SUPPORTED_VERSIONS,
    };
    let mut out = crate::json::to_vec_go(&reply);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_versions() {
        assert_eq!(SpecVersion::parse("0.3.1"), Some(SpecVersion(0, 3, 1)));
        assert_eq!(SpecVersion::parse(""), Some(SpecVersion(0, 1, 0)));
        assert_eq!(SpecVersion::parse("1.0"), None);
        assert_eq!(SpecVersion::parse("1.0.0.0"), None);
        assert_eq!(SpecVersion::parse("1.x.0"), None);
        assert_eq!(SpecVersion::parse("+1.0.0"), None);
        assert!(SpecVersion(0, 3, 1) < SpecVersion::CHECK);
        assert!(SpecVersion(1, 0, 0) > SpecVersion::CHECK);
        assert!(SpecVersion(1, 0, 0) < SpecVersion::STATUS_GC);
    }

    #[test]
    fn every_listed_version_is_supported() {
        for v in SUPPORTED_VERSIONS {
            assert!(check_supported(v).is_ok(), "{v}");
        }
        assert_eq!(check_supported("").unwrap(), SpecVersion(0, 1, 0));
    }

    #[test]
    fn unsupported_version_is_code_1_and_lists_supported() {
        for v in ["0.5.0", "2.0.0", "0.3", "banana", "1.1.0-rc1"] {
            let err = check_supported(v).unwrap_err();
            assert_eq!(err.code(), 1, "{v}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("{v:?}")), "{msg}");
            assert!(
                msg.contains("0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
                "{msg}"
            );
        }
    }

    #[test]
    fn version_reply_echoes_request_or_defaults() {
        let all =
            r#""supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#;
        assert_eq!(
            String::from_utf8(version_reply(br#"{"cniVersion":"0.3.1"}"#)).unwrap(),
            format!("{{\"cniVersion\":\"0.3.1\",{all}\n")
        );
        for stdin in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"cniVersion":""}"#,
            b"[1]",
        ] {
            assert_eq!(
                String::from_utf8(version_reply(stdin)).unwrap(),
                format!("{{\"cniVersion\":\"1.1.0\",{all}\n")
            );
        }
    }
}
