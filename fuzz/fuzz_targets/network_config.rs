#![no_main]
//! The network config parser (`<prefix>/config` in etcd): any bytes give a config or a short
//! error, never a panic, and an accepted config renders to JSON that parses back to itself.

use libfuzzer_sys::fuzz_target;
use weft_core::config::NetworkConfig;

/// The bad-input corpus's limit on an error message (crates/weft-core/tests/bad_input.rs).
const MAX_MESSAGE_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let cfg = match NetworkConfig::parse(data) {
        Ok(cfg) => cfg,
        Err(err) => {
            let msg = err.to_string();
            assert!(msg.len() <= MAX_MESSAGE_BYTES, "{} bytes: {msg}", msg.len());
            let _ = err.key();
            return;
        }
    };
    let rendered = cfg.to_json();
    let again = NetworkConfig::parse(rendered.as_bytes())
        .unwrap_or_else(|e| panic!("the rendered config {rendered} does not parse: {e}"));
    assert_eq!(
        again, cfg,
        "{rendered} does not parse back to the same config"
    );
    let _ = cfg.subnet_count();
    if let Some(network) = cfg.network {
        let _ = cfg.contains_subnet(network);
    }
});
