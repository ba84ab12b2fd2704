#![no_main]
//! Lease values as weftd reads them from `<prefix>/subnets/<key>`: any bytes give attributes or
//! a short error, never a panic; accepted attributes survive a write and a read; a decoded
//! lease is classified as a peer (or skipped) without a panic.

use libfuzzer_sys::fuzz_target;
use weft_core::config::NetworkConfig;
use weft_core::lease::{Lease, LeaseAttrs};
use weft_core::peer::classify_lease;

/// The bad-input corpus's limit on an error message (crates/weft-core/tests/bad_input.rs).
const MAX_MESSAGE_BYTES: usize = 1024;

fn check_message(err: impl std::fmt::Display) {
    let msg = err.to_string();
    assert!(msg.len() <= MAX_MESSAGE_BYTES, "{} bytes: {msg}", msg.len());
}

fuzz_target!(|data: &[u8]| {
    let attrs = match LeaseAttrs::parse(data) {
        Ok(attrs) => attrs,
        Err(err) => return check_message(err),
    };
    let written = attrs.to_json();
    let again = LeaseAttrs::parse(written.as_bytes())
        .unwrap_or_else(|e| panic!("the written lease {written} does not parse: {e}"));
    assert_eq!(
        again, attrs,
        "{written} does not read back to the same lease"
    );
    if let Err(err) = attrs.vxlan_data() {
        check_message(err);
    }

    let cfg = NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#)
        .expect("the fixed config is valid");
    let own = Some("10.244.1.0/24".parse().expect("valid CIDR"));
    for subnet in [
        "10.244.2.0/24",
        "10.244.1.0/24",
        "10.244.0.0/16",
        "10.245.0.0/24",
    ] {
        let lease = Lease {
            subnet: subnet.parse().expect("valid CIDR"),
            subnet6: None,
            attrs: attrs.clone(),
        };
        let _ = classify_lease(&cfg, own, &lease);
    }
});
