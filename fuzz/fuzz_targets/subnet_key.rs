#![no_main]
//! Subnet keys (the tail of `<prefix>/subnets/<key>`): any text gives a subnet or a short
//! error, never a panic, and an accepted key is its own canonical form. The allocator's
//! lenient reading ([`claimed_subnet`]) never panics and agrees with every accepted key.

use libfuzzer_sys::fuzz_target;
use weft_core::subnet::{claimed_subnet, parse_subnet_key_dual, subnet_key_dual};

/// The bad-input corpus's limit on an error message (crates/weft-core/tests/bad_input.rs).
const MAX_MESSAGE_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let claimed = claimed_subnet(text);
    match parse_subnet_key_dual(text) {
        Ok((net, net6)) => {
            let key = subnet_key_dual(net, net6);
            assert_eq!(key, text, "only canonical keys are accepted");
            assert_eq!(claimed, Some(net), "{text:?}");
        }
        Err(err) => {
            let msg = err.to_string();
            assert!(msg.len() <= MAX_MESSAGE_BYTES, "{} bytes: {msg}", msg.len());
        }
    }
});
