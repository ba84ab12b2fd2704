#![no_main]
//! Subnet keys (the tail of `<prefix>/subnets/<key>`): any text gives a subnet or a short
//! error, never a panic, and an accepted key's canonical form parses back to the same subnets.

use libfuzzer_sys::fuzz_target;
use weft_core::subnet::{parse_subnet_key_dual, subnet_key_dual};

/// The bad-input corpus's limit on an error message (crates/weft-core/tests/bad_input.rs).
const MAX_MESSAGE_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_subnet_key_dual(text) {
        Ok((net, net6)) => {
            let key = subnet_key_dual(net, net6);
            assert_eq!(
                parse_subnet_key_dual(&key).ok(),
                Some((net, net6)),
                "{text:?} -> {key:?}"
            );
        }
        Err(err) => {
            let msg = err.to_string();
            assert!(msg.len() <= MAX_MESSAGE_BYTES, "{} bytes: {msg}", msg.len());
        }
    }
});
