//! The lease store of weft over etcd v3, with flannel's key layout
//! (`<prefix>/config`, `<prefix>/subnets/<A.B.C.D-len>`) and lease values.
//!
//! Everything here is an effect: parsing and deciding live in `weft-core`. The store hands
//! back raw keys and values with their etcd metadata, so a hostile value is rejected by the
//! caller for that one key without disturbing the others.

mod config;
mod error;
mod flags;
mod store;
mod tls;
mod watch;

pub use config::*;
pub use error::*;
pub use flags::*;
pub use store::*;
pub(crate) use tls::*;
pub use watch::*;
pub use weft_core::lease::MAX_LEASE_BYTES;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn endpoint_parts() {
        let e = Endpoint::parse(" https://etcd.internal:2379/ ").unwrap();
        assert_eq!(e.url(), "https://etcd.internal:2379");
        assert!(e.is_https());
        assert_eq!(
            (e.host(), e.port(), e.path()),
            ("etcd.internal", Some(2379), "")
        );
        let e = Endpoint::parse("http://[fd00::5]:2379/v3").unwrap();
        assert_eq!(
            (e.host(), e.authority(), e.path()),
            ("fd00::5", "[fd00::5]:2379", "/v3")
        );
        let e = Endpoint::parse("http://10.0.0.5").unwrap();
        assert_eq!((e.port(), e.port_or_default()), (None, 80));
        assert_eq!(Endpoint::parse("https://h").unwrap().port_or_default(), 443);
        for bad in [
            "http://",
            "http://h:port",
            "http://h:99999",
            "http://a b:2379",
            "http://[::1",
            "http://\"x\":1",
        ] {
            assert_eq!(
                Endpoint::parse(bad),
                Err(EndpointError::Shape(bad.into())),
                "{bad}"
            );
        }
        let msg = EndpointError::Shape("http://h:port".into()).to_string();
        assert!(
            msg.contains("--etcd-endpoints http://10.0.0.5:2379"),
            "{msg}"
        );
    }

    #[test]
    fn endpoints_are_split_and_checked() {
        assert_eq!(
            parse_endpoints(" http://a:2379, https://b:2379/ ,"),
            Ok(vec![
                "http://a:2379".to_string(),
                "https://b:2379".to_string()
            ])
        );
        assert_eq!(
            parse_endpoints(" , "),
            Err(EndpointError::Empty(" , ".into()))
        );
        assert_eq!(
            parse_endpoints("10.0.0.1:2379"),
            Err(EndpointError::Scheme("10.0.0.1:2379".into()))
        );
        let msg = |v: &str| parse_endpoints(v).unwrap_err().to_string();
        assert!(
            msg("10.0.0.1:2379").ends_with("e.g. --etcd-endpoints http://10.0.0.1:2379"),
            "{}",
            msg("10.0.0.1:2379")
        );
        assert!(
            msg("ftp://x:2379").ends_with("e.g. --etcd-endpoints http://x:2379"),
            "{}",
            msg("ftp://x:2379")
        );
        let long = msg(&format!("ftp://{}", "a".repeat(100_000)));
        assert!(
            long.len() < 400,
            "a huge value is not echoed whole: {} bytes",
            long.len()
        );
    }

    #[test]
    fn causes_are_said_once() {
        let e = read(Path::new("/nonexistent/ca.pem"), "CA file", "etcd-cafile").unwrap_err();
        // Printed as a chain (what `{:#}` of anyhow does): the message, then each source.
        let mut text = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(s) = cur {
            text.push_str(&format!(": {s}"));
            cur = s.source();
        }
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(text.contains("--etcd-cafile"), "{text}");
    }

    #[test]
    fn keys_map_to_subnets_and_strangers_are_named() {
        let p = "/coreos.com/network/subnets/";
        assert_eq!(
            key_to_subnet("/coreos.com/network/subnets/10.244.3.0-24", p),
            Ok("10.244.3.0/24".parse().unwrap())
        );
        assert!(key_to_subnet("/coreos.com/network/subnets/junk", p).is_err());
        assert!(
            key_to_subnet("/elsewhere/10.244.3.0-24", p)
                .unwrap_err()
                .contains("not under")
        );
    }

    #[test]
    fn a_dual_stack_key_names_both_subnets_and_is_written_back_the_same() {
        let p = "/coreos.com/network/subnets/";
        let key = "/coreos.com/network/subnets/10.244.37.0-24&fc00:0:0:25::-64";
        assert_eq!(key_to_subnet(key, p), Ok("10.244.37.0/24".parse().unwrap()));
        let v6 = store::key_to_subnet6(key, p);
        assert_eq!(v6, Some("fc00:0:0:25::/64".parse().unwrap()));
        assert_eq!(
            store::key_to_subnet6("/coreos.com/network/subnets/10.244.37.0-24", p),
            None
        );
        let both = weft_core::subnet::Subnets {
            v4: "10.244.37.0/24".parse().unwrap(),
            v6,
        };
        assert_eq!(
            weft_core::subnet::lease_key("/coreos.com/network", both),
            key
        );
        // A non-canonical IPv6 half is not a dual-stack key.
        assert_eq!(
            store::key_to_subnet6(
                "/coreos.com/network/subnets/10.244.37.0-24&fc00:0000:0:25::-64",
                p
            ),
            None
        );
    }

    #[test]
    fn a_watch_resumes_after_the_last_delivered_event_not_the_header() {
        // A catching-up watch gets revisions 101..=1100 stamped with the store's 5000.
        assert_eq!(delivered_revision([101, 700, 1100].into_iter(), 5000), 1100);
        // A progress notification (no events) proves the header's revision.
        assert_eq!(delivered_revision(std::iter::empty(), 5000), 5000);
    }

    #[test]
    fn prefix_ranges_end_after_the_prefix() {
        assert_eq!(prefix_end("/a/subnets/"), b"/a/subnets0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn tls_half_configured_is_refused() {
        let cfg = StoreConfig {
            endpoints: vec!["https://127.0.0.1:2379".into()],
            cert_file: Some("/x.crt".into()),
            ..Default::default()
        };
        let err = Store::connect_options(&cfg).err().unwrap().to_string();
        assert!(err.contains("--etcd-keyfile"), "{err}");
    }

    #[test]
    fn tls_with_plain_http_endpoint_is_refused() {
        let dir = std::env::temp_dir().join(format!("weft-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let cfg = StoreConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ca_file: Some(ca),
            ..Default::default()
        };
        let err = Store::connect_options(&cfg).err().unwrap().to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(err.contains("plain http"), "{err}");
    }

    #[test]
    fn missing_ca_file_names_the_file_and_flag() {
        let cfg = StoreConfig {
            endpoints: vec!["https://127.0.0.1:2379".into()],
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = Store::connect_options(&cfg).err().unwrap().to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("--etcd-cafile"),
            "{err}"
        );
    }

    #[test]
    fn password_is_redacted_in_debug() {
        let cfg = StoreConfig {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
